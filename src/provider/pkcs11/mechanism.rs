//! The wrapping mechanisms of the PKCS#11 provider: which PKCS#11 mechanism wrapped a KEK, the
//! byte that names it at the front of every wrapped KEK, and its OAEP parameters.
//!
//! Vocabulary only, shared by the token (which mechanisms a key can use) and the wrapping (the
//! bytes in the annotations, see `wrapping.rs`): it never calls the token and never sees a key.

use cryptoki::mechanism::MechanismType;
use cryptoki::mechanism::rsa::{PkcsMgfType, PkcsOaepParams, PkcsOaepSource};

/// How a KEK was wrapped; the first byte of every wrapped KEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapMechanism {
    /// CKM_AES_KEY_WRAP_PAD with an AES key.
    AesKeyWrapPad,
    /// CKM_AES_GCM with an AES key, for tokens without key wrap with padding.
    AesGcm,
    /// CKM_RSA_PKCS_OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaepSha256,
    /// CKM_RSA_PKCS_OAEP with SHA-1 and MGF1-SHA-1, for tokens that reject SHA-256 (SoftHSM 2.6).
    RsaOaepSha1,
}

impl WrapMechanism {
    /// The byte that names this mechanism at the front of a wrapped KEK.
    pub(super) fn tag(self) -> u8 {
        match self {
            Self::AesKeyWrapPad => 0x01,
            Self::AesGcm => 0x02,
            Self::RsaOaepSha256 => 0x03,
            Self::RsaOaepSha1 => 0x04,
        }
    }

    /// The mechanism a wrapped KEK's first byte names, if any.
    pub(super) fn from_tag(tag: u8) -> Option<Self> {
        [
            Self::AesKeyWrapPad,
            Self::AesGcm,
            Self::RsaOaepSha256,
            Self::RsaOaepSha1,
        ]
        .into_iter()
        .find(|mechanism| mechanism.tag() == tag)
    }

    /// The PKCS#11 name, for logs and `kube-kms keys list`.
    pub fn name(self) -> &'static str {
        match self {
            Self::AesKeyWrapPad => "CKM_AES_KEY_WRAP_PAD",
            Self::AesGcm => "CKM_AES_GCM",
            Self::RsaOaepSha256 => "CKM_RSA_PKCS_OAEP (SHA-256)",
            Self::RsaOaepSha1 => "CKM_RSA_PKCS_OAEP (SHA-1)",
        }
    }

    /// The OAEP parameters of an RSA mechanism: SHA-1 for [`Self::RsaOaepSha1`], else SHA-256;
    /// always without a label.
    pub(super) fn oaep_params(self) -> PkcsOaepParams<'static> {
        let (hash, mgf) = match self {
            Self::RsaOaepSha1 => (MechanismType::SHA1, PkcsMgfType::MGF1_SHA1),
            _ => (MechanismType::SHA256, PkcsMgfType::MGF1_SHA256),
        };
        PkcsOaepParams::new(hash, mgf, PkcsOaepSource::empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mechanism_bytes_round_trip_and_unknown_ones_are_refused() {
        for mechanism in [
            WrapMechanism::AesKeyWrapPad,
            WrapMechanism::AesGcm,
            WrapMechanism::RsaOaepSha256,
            WrapMechanism::RsaOaepSha1,
        ] {
            assert_eq!(WrapMechanism::from_tag(mechanism.tag()), Some(mechanism));
        }
        for tag in [0x00, 0x05, 0xff] {
            assert_eq!(WrapMechanism::from_tag(tag), None);
        }
    }
}
