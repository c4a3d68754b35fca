//! Key material and the cryptographic operations the service performs with it: RSA-OAEP-256,
//! RSA-OAEP and RSA1_5 on RSA keys; AES key wrap (RFC 3394, A*KW and CKM_AES_KEY_WRAP), AES key
//! wrap with padding (RFC 5649, CKM_AES_KEY_WRAP_PAD) and AES-GCM on oct-HSM keys. EC keys
//! ([`ec`]) are held for their public JWK and for certificates; no operation here applies to
//! them (sign/verify is not emulated).
//!
//! Private key bytes never leave this module except as the public JWK parts (n, e). Material
//! zeroizes on drop and its `Debug` is redacted. Errors say which rule was broken, never what
//! the bytes were.

use std::fmt;

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes128Gcm, Aes256Gcm, AesGcm, Nonce, Tag};
use aes_kw::{KwAes128, KwAes192, KwAes256, KwpAes128, KwpAes192, KwpAes256};
use rand::TryRng;
use rand::rngs::SysRng;
use rsa::traits::PublicKeyParts;
use rsa::{BoxedUint, PrivateKey, PublicKey};
use sha1::Sha1;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::error::ServiceError;
use crate::model::{Curve, KeyType};

pub mod ec;

use ec::EcMaterial;

type Aes192Gcm = AesGcm<aes_kw::aes::Aes192, aes_gcm::aead::consts::U12>;

/// The AES-GCM nonce length the service uses (96 bits).
const GCM_IV_LEN: usize = 12;

/// An algorithm (`alg`) of the key operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Algorithm {
    /// RSAES-OAEP with SHA-256 and MGF1-SHA-256.
    RsaOaep256,
    /// RSAES-OAEP with SHA-1 and MGF1-SHA-1.
    RsaOaep,
    /// RSAES-PKCS1-v1_5.
    Rsa15,
    /// RFC 3394 with a 128-bit key.
    A128Kw,
    /// RFC 3394 with a 192-bit key.
    A192Kw,
    /// RFC 3394 with a 256-bit key.
    A256Kw,
    /// RFC 3394 with any AES key size.
    CkmAesKeyWrap,
    /// RFC 5649 with any AES key size.
    CkmAesKeyWrapPad,
    /// AES-GCM with a 128-bit key.
    A128Gcm,
    /// AES-GCM with a 192-bit key.
    A192Gcm,
    /// AES-GCM with a 256-bit key.
    A256Gcm,
}

impl Algorithm {
    /// Parses `alg` as the service spells it (case-sensitive, like the service).
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "RSA-OAEP-256" => Self::RsaOaep256,
            "RSA-OAEP" => Self::RsaOaep,
            "RSA1_5" => Self::Rsa15,
            "A128KW" => Self::A128Kw,
            "A192KW" => Self::A192Kw,
            "A256KW" => Self::A256Kw,
            "CKM_AES_KEY_WRAP" => Self::CkmAesKeyWrap,
            "CKM_AES_KEY_WRAP_PAD" => Self::CkmAesKeyWrapPad,
            "A128GCM" => Self::A128Gcm,
            "A192GCM" => Self::A192Gcm,
            "A256GCM" => Self::A256Gcm,
            _ => return None,
        })
    }

    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::RsaOaep256 => "RSA-OAEP-256",
            Self::RsaOaep => "RSA-OAEP",
            Self::Rsa15 => "RSA1_5",
            Self::A128Kw => "A128KW",
            Self::A192Kw => "A192KW",
            Self::A256Kw => "A256KW",
            Self::CkmAesKeyWrap => "CKM_AES_KEY_WRAP",
            Self::CkmAesKeyWrapPad => "CKM_AES_KEY_WRAP_PAD",
            Self::A128Gcm => "A128GCM",
            Self::A192Gcm => "A192GCM",
            Self::A256Gcm => "A256GCM",
        }
    }

    fn is_rsa(self) -> bool {
        matches!(self, Self::RsaOaep256 | Self::RsaOaep | Self::Rsa15)
    }

    fn is_key_wrap(self) -> bool {
        matches!(
            self,
            Self::A128Kw
                | Self::A192Kw
                | Self::A256Kw
                | Self::CkmAesKeyWrap
                | Self::CkmAesKeyWrapPad
        )
    }

    fn is_gcm(self) -> bool {
        matches!(self, Self::A128Gcm | Self::A192Gcm | Self::A256Gcm)
    }

    /// The AES key length in bytes the algorithm is bound to, if it is bound to one.
    fn aes_key_len(self) -> Option<usize> {
        match self {
            Self::A128Kw | Self::A128Gcm => Some(16),
            Self::A192Kw | Self::A192Gcm => Some(24),
            Self::A256Kw | Self::A256Gcm => Some(32),
            _ => None,
        }
    }
}

/// Which family of REST operation is asked for: the wrap pair or the encrypt pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Usage {
    /// wrapkey / unwrapkey
    KeyWrap,
    /// encrypt / decrypt
    Encryption,
}

/// What a cryptographic operation refused; each maps to the service's 400 answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptoError {
    /// `alg` is not an algorithm the service knows.
    UnknownAlgorithm(String),
    /// `alg` does not apply to this key type or operation.
    AlgorithmNotApplicable {
        /// The algorithm.
        alg: &'static str,
        /// The key type.
        kty: KeyType,
    },
    /// `alg` names an AES key size other than the key's.
    KeySizeMismatch {
        /// The algorithm.
        alg: &'static str,
        /// The key's size in bits.
        key_bits: usize,
    },
    /// The plaintext is too long (RSA) or of a length the algorithm cannot take (AES-KW).
    InvalidPlaintextLength,
    /// The ciphertext does not have the length the key and algorithm produce.
    InvalidCiphertextLength,
    /// RSA-OAEP decoding failed (wrong key, wrong version, tampered value).
    OaepDecoding,
    /// PKCS#1 v1.5 decoding failed.
    Pkcs1Decoding,
    /// The AES key unwrap integrity check failed.
    UnwrapIntegrity,
    /// AES-GCM needs `iv` and `tag` to decrypt, of the right lengths.
    MissingGcmParameters,
    /// AES-GCM authentication failed.
    GcmAuthentication,
    /// An imported key was malformed.
    InvalidKey(&'static str),
    /// The system random source failed.
    RandomUnavailable,
}

impl fmt::Display for CryptoError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::UnknownAlgorithm(alg) => write!(f, "Invalid algorithm '{alg}'."),
            Self::AlgorithmNotApplicable { alg, kty } => {
                write!(
                    f,
                    "Algorithm {alg} is not supported for key type {kty} and this operation."
                )
            }
            Self::KeySizeMismatch { alg, key_bits } => {
                write!(
                    f,
                    "Algorithm {alg} cannot be used with a {key_bits}-bit key."
                )
            }
            Self::InvalidPlaintextLength => {
                f.write_str("The length of 'value' is not valid for the key and algorithm.")
            }
            Self::InvalidCiphertextLength => {
                f.write_str("The length of 'value' does not match the key size.")
            }
            Self::OaepDecoding => f.write_str("Error occurred while decoding OAEP padding."),
            Self::Pkcs1Decoding => f.write_str("Error occurred while decoding PKCS1 padding."),
            Self::UnwrapIntegrity => f.write_str("Key unwrap failed: integrity check failed."),
            Self::MissingGcmParameters => {
                f.write_str("AES-GCM decryption requires 'iv' (12 bytes) and 'tag' (16 bytes).")
            }
            Self::GcmAuthentication => f.write_str("AES-GCM authentication tag mismatch."),
            Self::InvalidKey(reason) => write!(f, "The key is not valid: {reason}."),
            Self::RandomUnavailable => f.write_str("The random source is unavailable."),
        }
    }
}

impl std::error::Error for CryptoError {}

impl From<CryptoError> for ServiceError {
    fn from(error: CryptoError) -> Self {
        ServiceError::bad_parameter(error.to_string())
    }
}

/// The result of encrypt / wrapkey.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// The ciphertext or wrapped key.
    pub value: Vec<u8>,
    /// The AES-GCM IV the HSM chose.
    pub iv: Option<Vec<u8>>,
    /// The AES-GCM authentication tag.
    pub tag: Option<Vec<u8>>,
}

/// The inputs of decrypt / unwrapkey besides the value.
#[derive(Debug, Clone, Default)]
pub struct OpenParams<'a> {
    /// AES-GCM IV.
    pub iv: Option<&'a [u8]>,
    /// AES-GCM tag.
    pub tag: Option<&'a [u8]>,
    /// AES-GCM additional authenticated data.
    pub aad: Option<&'a [u8]>,
}

/// Private key material of one key version.
pub enum KeyMaterial {
    /// An RSA private key.
    Rsa(Box<PrivateKey>),
    /// An AES key of 16, 24 or 32 bytes.
    Oct(Zeroizing<Vec<u8>>),
    /// An elliptic curve private key.
    Ec(Box<EcMaterial>),
}

impl fmt::Debug for KeyMaterial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Rsa(key) => write!(f, "KeyMaterial::Rsa({} bits, [redacted])", key.size() * 8),
            Self::Oct(key) => write!(f, "KeyMaterial::Oct({} bits, [redacted])", key.len() * 8),
            Self::Ec(key) => write!(f, "KeyMaterial::Ec({}, [redacted])", key.curve()),
        }
    }
}

/// Fills `buf` from the operating system's random source.
pub fn fill_random(buf: &mut [u8]) -> Result<(), CryptoError> {
    SysRng
        .try_fill_bytes(buf)
        .map_err(|_| CryptoError::RandomUnavailable)
}

impl KeyMaterial {
    /// Generates an RSA key of `bits` (2048, 3072 or 4096) with e = 65537. CPU-heavy: call it
    /// off the async runtime.
    /// OpenSSL generates the primes: the pure-Rust generator takes seconds in debug builds.
    pub fn generate_rsa(bits: usize) -> Result<Self, CryptoError> {
        let failed = |_| CryptoError::InvalidKey("RSA key generation failed");
        let bits = u32::try_from(bits).map_err(|_| CryptoError::InvalidKey("RSA key size"))?;
        let key = openssl::rsa::Rsa::generate(bits).map_err(failed)?;
        Self::from_openssl(openssl::pkey::PKey::from_rsa(key).map_err(failed)?)
    }

    /// Generates an EC key on `curve`.
    pub fn generate_ec(curve: Curve) -> Result<Self, CryptoError> {
        Ok(Self::Ec(Box::new(EcMaterial::generate(curve)?)))
    }

    /// Builds an EC private key from big-endian JWK components (x, y, d).
    pub fn ec_from_components(
        curve: Curve,
        x: &[u8],
        y: &[u8],
        d: &[u8],
    ) -> Result<Self, CryptoError> {
        Ok(Self::Ec(Box::new(EcMaterial::from_components(
            curve, x, y, d,
        )?)))
    }

    /// Takes an RSA or EC private key parsed by OpenSSL (from a PFX or PEM file).
    pub fn from_openssl(
        key: openssl::pkey::PKey<openssl::pkey::Private>,
    ) -> Result<Self, CryptoError> {
        if let Ok(rsa) = key.rsa() {
            let part = |n: Option<&openssl::bn::BigNumRef>| {
                n.map(|n| Zeroizing::new(n.to_vec()))
                    .ok_or(CryptoError::InvalidKey("the RSA key lacks its primes"))
            };
            return Self::rsa_from_components(
                &rsa.n().to_vec(),
                &rsa.e().to_vec(),
                &Zeroizing::new(rsa.d().to_vec()),
                &part(rsa.p())?,
                &part(rsa.q())?,
            );
        }
        if let Ok(ec) = key.ec_key() {
            return Ok(Self::Ec(Box::new(EcMaterial::from_openssl(ec)?)));
        }
        Err(CryptoError::InvalidKey(
            "only RSA and EC keys are supported",
        ))
    }

    /// The key as an OpenSSL `PKey`, to sign a certificate or build a PFX with.
    pub fn to_openssl(&self) -> Result<openssl::pkey::PKey<openssl::pkey::Private>, CryptoError> {
        match self {
            Self::Rsa(key) => {
                use rsa::pkcs8::EncodePrivateKey;
                let der = key
                    .to_pkcs8_der()
                    .map_err(|_| CryptoError::InvalidKey("RSA key encoding failed"))?;
                openssl::pkey::PKey::private_key_from_pkcs8(der.as_bytes())
                    .map_err(|_| CryptoError::InvalidKey("RSA key conversion failed"))
            }
            Self::Ec(key) => key.to_pkey(),
            Self::Oct(_) => Err(CryptoError::InvalidKey(
                "an AES key has no certificate form",
            )),
        }
    }

    /// The curve and JWK `x`, `y` of an EC key.
    pub fn ec_public_parts(&self) -> Option<(Curve, Vec<u8>, Vec<u8>)> {
        match self {
            Self::Ec(key) => key.public_coordinates().map(|(x, y)| (key.curve(), x, y)),
            _ => None,
        }
    }

    /// Generates an AES key of `bits` (128, 192 or 256).
    pub fn generate_oct(bits: usize) -> Result<Self, CryptoError> {
        let mut key = Zeroizing::new(vec![0u8; bits / 8]);
        fill_random(&mut key)?;
        Self::oct(key)
    }

    /// Takes an AES key of 16, 24 or 32 bytes.
    pub fn oct(key: Zeroizing<Vec<u8>>) -> Result<Self, CryptoError> {
        if ![16, 24, 32].contains(&key.len()) {
            return Err(CryptoError::InvalidKey(
                "an AES key has 128, 192 or 256 bits",
            ));
        }
        Ok(Self::Oct(key))
    }

    /// Builds an RSA private key from big-endian JWK components (n, e, d, p, q).
    pub fn rsa_from_components(
        n: &[u8],
        e: &[u8],
        d: &[u8],
        p: &[u8],
        q: &[u8],
    ) -> Result<Self, CryptoError> {
        let key = PrivateKey::from_components(
            BoxedUint::from_be_slice_vartime(n),
            BoxedUint::from_be_slice_vartime(e),
            BoxedUint::from_be_slice_vartime(d),
            vec![
                BoxedUint::from_be_slice_vartime(p),
                BoxedUint::from_be_slice_vartime(q),
            ],
        )
        .map_err(|_| CryptoError::InvalidKey("the RSA components are inconsistent"))?;
        let bits = key.size() * 8;
        if ![2048, 3072, 4096].contains(&bits) {
            return Err(CryptoError::InvalidKey(
                "an RSA key has 2048, 3072 or 4096 bits",
            ));
        }
        Ok(Self::Rsa(Box::new(key)))
    }

    /// The key size in bits.
    pub fn bits(&self) -> usize {
        match self {
            Self::Rsa(key) => key.size() * 8,
            Self::Oct(key) => key.len() * 8,
            Self::Ec(key) => key.curve().bits(),
        }
    }

    /// The RSA public key, if this is an RSA key.
    pub fn rsa_public(&self) -> Option<PublicKey> {
        match self {
            Self::Rsa(key) => Some(key.to_public_key()),
            Self::Oct(_) | Self::Ec(_) => None,
        }
    }

    /// The JWK `n` (big-endian, no leading zero) and `e` of an RSA key.
    pub fn rsa_public_parts(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        match self {
            Self::Rsa(key) => Some((key.n_bytes().into_vec(), key.e_bytes().into_vec())),
            Self::Oct(_) | Self::Ec(_) => None,
        }
    }

    fn check(&self, alg: Algorithm, kty: KeyType, usage: Usage) -> Result<(), CryptoError> {
        let applicable = match (self, usage) {
            (Self::Rsa(_), _) => alg.is_rsa(),
            (Self::Oct(_), Usage::KeyWrap) => alg.is_key_wrap(),
            (Self::Oct(_), Usage::Encryption) => alg.is_gcm(),
            (Self::Ec(_), _) => false,
        };
        if !applicable {
            return Err(CryptoError::AlgorithmNotApplicable {
                alg: alg.as_str(),
                kty,
            });
        }
        if let (Self::Oct(key), Some(len)) = (self, alg.aes_key_len())
            && key.len() != len
        {
            return Err(CryptoError::KeySizeMismatch {
                alg: alg.as_str(),
                key_bits: key.len() * 8,
            });
        }
        Ok(())
    }

    /// encrypt / wrapkey. `aad` is used by AES-GCM only.
    pub fn seal(
        &self,
        alg: Algorithm,
        kty: KeyType,
        usage: Usage,
        plaintext: &[u8],
        aad: Option<&[u8]>,
    ) -> Result<Sealed, CryptoError> {
        self.check(alg, kty, usage)?;
        match self {
            Self::Rsa(key) => {
                let public = key.as_public_key();
                let value = match alg {
                    Algorithm::RsaOaep256 => public.oaep_encrypt::<Sha256>(plaintext),
                    Algorithm::RsaOaep => public.oaep_encrypt::<Sha1>(plaintext),
                    _ => public.pkcs1v15_encrypt(plaintext),
                }
                .map_err(|_| CryptoError::InvalidPlaintextLength)?;
                Ok(Sealed {
                    value,
                    iv: None,
                    tag: None,
                })
            }
            Self::Oct(key) if alg.is_gcm() => gcm_seal(key, plaintext, aad.unwrap_or_default()),
            Self::Ec(_) => Err(CryptoError::AlgorithmNotApplicable {
                alg: alg.as_str(),
                kty,
            }),
            Self::Oct(key) => {
                let value = if alg == Algorithm::CkmAesKeyWrapPad {
                    kwp_wrap(key, plaintext)?
                } else {
                    kw_wrap(key, plaintext)?
                };
                Ok(Sealed {
                    value,
                    iv: None,
                    tag: None,
                })
            }
        }
    }

    /// decrypt / unwrapkey.
    pub fn open(
        &self,
        alg: Algorithm,
        kty: KeyType,
        usage: Usage,
        ciphertext: &[u8],
        params: &OpenParams<'_>,
    ) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.check(alg, kty, usage)?;
        match self {
            Self::Rsa(key) => {
                if ciphertext.len() != key.size() {
                    return Err(CryptoError::InvalidCiphertextLength);
                }
                let result = match alg {
                    Algorithm::RsaOaep256 => key
                        .oaep_decrypt::<Sha256>(ciphertext)
                        .map_err(|_| CryptoError::OaepDecoding),
                    Algorithm::RsaOaep => key
                        .oaep_decrypt::<Sha1>(ciphertext)
                        .map_err(|_| CryptoError::OaepDecoding),
                    _ => key
                        .pkcs1v15_decrypt(ciphertext)
                        .map_err(|_| CryptoError::Pkcs1Decoding),
                };
                result.map(Zeroizing::new)
            }
            Self::Oct(key) if alg.is_gcm() => gcm_open(key, ciphertext, params),
            Self::Ec(_) => Err(CryptoError::AlgorithmNotApplicable {
                alg: alg.as_str(),
                kty,
            }),
            Self::Oct(key) => {
                if alg == Algorithm::CkmAesKeyWrapPad {
                    kwp_unwrap(key, ciphertext)
                } else {
                    kw_unwrap(key, ciphertext)
                }
            }
        }
    }
}

macro_rules! with_aes {
    ($key:expr, $kw128:ty, $kw192:ty, $kw256:ty, |$cipher:ident| $body:expr) => {
        match $key.len() {
            16 => {
                let $cipher = <$kw128>::new_from_slice($key)
                    .map_err(|_| CryptoError::InvalidKey("AES key length"))?;
                $body
            }
            24 => {
                let $cipher = <$kw192>::new_from_slice($key)
                    .map_err(|_| CryptoError::InvalidKey("AES key length"))?;
                $body
            }
            _ => {
                let $cipher = <$kw256>::new_from_slice($key)
                    .map_err(|_| CryptoError::InvalidKey("AES key length"))?;
                $body
            }
        }
    };
}

fn kw_wrap(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if plaintext.len() < 16 || !plaintext.len().is_multiple_of(8) {
        return Err(CryptoError::InvalidPlaintextLength);
    }
    let mut out = vec![0u8; plaintext.len() + 8];
    with_aes!(key, KwAes128, KwAes192, KwAes256, |kw| {
        kw.wrap_key(plaintext, &mut out)
            .map_err(|_| CryptoError::InvalidPlaintextLength)?;
    });
    Ok(out)
}

fn kw_unwrap(key: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if wrapped.len() < 24 || !wrapped.len().is_multiple_of(8) {
        return Err(CryptoError::InvalidCiphertextLength);
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len() - 8]);
    with_aes!(key, KwAes128, KwAes192, KwAes256, |kw| {
        kw.unwrap_key(wrapped, &mut out)
            .map_err(|_| CryptoError::UnwrapIntegrity)?;
    });
    Ok(out)
}

fn kwp_wrap(key: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if plaintext.is_empty() {
        return Err(CryptoError::InvalidPlaintextLength);
    }
    let mut out = vec![0u8; plaintext.len().div_ceil(8) * 8 + 8];
    let len = with_aes!(key, KwpAes128, KwpAes192, KwpAes256, |kwp| {
        kwp.wrap_key(plaintext, &mut out)
            .map_err(|_| CryptoError::InvalidPlaintextLength)?
            .len()
    });
    out.truncate(len);
    Ok(out)
}

fn kwp_unwrap(key: &[u8], wrapped: &[u8]) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    if wrapped.len() < 16 || !wrapped.len().is_multiple_of(8) {
        return Err(CryptoError::InvalidCiphertextLength);
    }
    let mut out = Zeroizing::new(vec![0u8; wrapped.len()]);
    let len = with_aes!(key, KwpAes128, KwpAes192, KwpAes256, |kwp| {
        kwp.unwrap_key(wrapped, &mut out)
            .map_err(|_| CryptoError::UnwrapIntegrity)?
            .len()
    });
    out.truncate(len);
    Ok(out)
}

fn gcm_seal(key: &[u8], plaintext: &[u8], aad: &[u8]) -> Result<Sealed, CryptoError> {
    let mut iv = [0u8; GCM_IV_LEN];
    fill_random(&mut iv)?;
    let nonce = Nonce::from(iv);
    let mut value = plaintext.to_vec();
    let tag = with_aes!(key, Aes128Gcm, Aes192Gcm, Aes256Gcm, |gcm| {
        gcm.encrypt_inout_detached(&nonce, aad, value.as_mut_slice().into())
            .map_err(|_| CryptoError::InvalidPlaintextLength)?
    });
    Ok(Sealed {
        value,
        iv: Some(iv.to_vec()),
        tag: Some(tag.to_vec()),
    })
}

fn gcm_open(
    key: &[u8],
    ciphertext: &[u8],
    params: &OpenParams<'_>,
) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let (Some(iv), Some(tag)) = (params.iv, params.tag) else {
        return Err(CryptoError::MissingGcmParameters);
    };
    let nonce = Nonce::try_from(iv).map_err(|_| CryptoError::MissingGcmParameters)?;
    let tag = Tag::try_from(tag).map_err(|_| CryptoError::MissingGcmParameters)?;
    let aad = params.aad.unwrap_or_default();
    let mut plaintext = Zeroizing::new(ciphertext.to_vec());
    with_aes!(key, Aes128Gcm, Aes192Gcm, Aes256Gcm, |gcm| {
        gcm.decrypt_inout_detached(&nonce, aad, plaintext.as_mut_slice().into(), &tag)
            .map_err(|_| CryptoError::GcmAuthentication)?
    });
    Ok(plaintext)
}

#[cfg(test)]
mod tests;
