//! The one place kube-kms touches AES-256-GCM and the OS random number generator.
//!
//! [`SecretKey`] holds 32 bytes of key material and zeroizes them when dropped; [`GcmKey`] is a
//! key schedule ready to seal and open `nonce ‖ ciphertext ‖ tag` records. Every nonce comes from
//! the OS CSPRNG here; no caller can supply one. Opening fails with one opaque error whatever
//! went wrong (wrong key, bad tag, truncation), so the failure says nothing about the key.

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce, Tag};
use rand::TryRng;
use rand::rngs::SysRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Bytes of an AES-256 key.
pub const KEY_LEN: usize = 32;
/// Bytes of an AES-GCM nonce (96 bits, as NIST SP 800-38D recommends for random nonces).
pub const NONCE_LEN: usize = 12;
/// Bytes of an AES-GCM authentication tag.
pub const TAG_LEN: usize = 16;
/// What [`GcmKey::seal_into`] adds to a plaintext: the nonce before it and the tag after it.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;

/// The OS random number generator failed; nothing can be encrypted safely until it works.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RandomUnavailable;

impl std::fmt::Display for RandomUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the operating system's random number generator failed")
    }
}

impl std::error::Error for RandomUnavailable {}

/// A sealed record did not open: wrong key, altered bytes, wrong associated data or truncated.
/// Deliberately carries no detail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OpenFailed;

impl std::fmt::Display for OpenFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("authenticated decryption failed")
    }
}

impl std::error::Error for OpenFailed {}

/// Fills `buf` from the OS CSPRNG (getrandom).
pub fn fill_random(buf: &mut [u8]) -> Result<(), RandomUnavailable> {
    SysRng.try_fill_bytes(buf).map_err(|_| RandomUnavailable)
}

/// 32 bytes of key material. Zeroized on drop; its `Debug` never shows the bytes.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(Box<[u8; KEY_LEN]>);

impl SecretKey {
    /// A fresh key from the OS CSPRNG.
    pub fn generate() -> Result<Self, RandomUnavailable> {
        let mut key = Self(Box::new([0; KEY_LEN]));
        fill_random(key.0.as_mut_slice())?;
        Ok(key)
    }

    /// Takes key bytes from a buffer that is itself zeroized; `None` unless exactly 32 bytes.
    pub fn from_slice(bytes: &[u8]) -> Option<Self> {
        let array: [u8; KEY_LEN] = bytes.try_into().ok()?;
        let mut array = Zeroizing::new(array);
        let key = Self(Box::new(*array));
        array.zeroize();
        Some(key)
    }

    /// The raw bytes. Exposed only to wrap them under a provider key or to write a key file.
    pub fn expose(&self) -> &[u8; KEY_LEN] {
        &self.0
    }

    /// A key schedule for sealing and opening with this key.
    pub fn gcm(&self) -> GcmKey {
        GcmKey(Aes256Gcm::new(self.0.as_ref().into()))
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}

/// An expanded AES-256-GCM key (the `aes-gcm` crate zeroizes the schedule on drop).
pub struct GcmKey(Aes256Gcm);

impl GcmKey {
    /// Appends `nonce ‖ ciphertext ‖ tag` for `plaintext` to `out`, with a fresh random nonce
    /// and `aad` authenticated alongside.
    pub fn seal_into(
        &self,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), RandomUnavailable> {
        let mut nonce = [0u8; NONCE_LEN];
        fill_random(&mut nonce)?;
        out.reserve(SEAL_OVERHEAD + plaintext.len());
        out.extend_from_slice(&nonce);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let tag = self
            .0
            .encrypt_inout_detached(&Nonce::from(nonce), aad, out[start..].as_mut().into())
            .map_err(|_| RandomUnavailable)?;
        out.extend_from_slice(&tag);
        Ok(())
    }

    /// Opens a `nonce ‖ ciphertext ‖ tag` record sealed with the same key and `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenFailed> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenFailed);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = Nonce::try_from(nonce).map_err(|_| OpenFailed)?;
        let tag = Tag::try_from(tag).map_err(|_| OpenFailed)?;
        let mut plaintext = Zeroizing::new(ciphertext.to_vec());
        self.0
            .decrypt_inout_detached(&nonce, aad, plaintext.as_mut_slice().into(), &tag)
            .map_err(|_| OpenFailed)?;
        Ok(plaintext)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sealed_record_opens_with_the_same_key_and_aad_only() {
        let key = SecretKey::generate().unwrap().gcm();
        let other = SecretKey::generate().unwrap().gcm();
        let mut sealed = Vec::new();
        key.seal_into(b"aad", b"secret", &mut sealed).unwrap();
        assert_eq!(sealed.len(), 6 + SEAL_OVERHEAD);
        assert_eq!(key.open(b"aad", &sealed).unwrap().as_slice(), b"secret");
        assert_eq!(key.open(b"other aad", &sealed), Err(OpenFailed));
        assert_eq!(other.open(b"aad", &sealed), Err(OpenFailed));
        assert_eq!(
            key.open(b"aad", &sealed[..sealed.len() - 1]),
            Err(OpenFailed)
        );
        assert_eq!(key.open(b"aad", &sealed[..5]), Err(OpenFailed));
    }

    #[test]
    fn every_bit_flip_is_detected() {
        let key = SecretKey::generate().unwrap().gcm();
        let mut sealed = Vec::new();
        key.seal_into(b"", b"0123456789", &mut sealed).unwrap();
        for bit in 0..sealed.len() * 8 {
            let mut copy = sealed.clone();
            copy[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(key.open(b"", &copy), Err(OpenFailed), "bit {bit}");
        }
    }

    #[test]
    fn debug_never_shows_key_bytes() {
        let key = SecretKey::from_slice(&[0xAB; 32]).unwrap();
        let shown = format!("{key:?}");
        assert!(
            !shown.contains("171") && !shown.to_lowercase().contains("ab"),
            "{shown}"
        );
        assert!(SecretKey::from_slice(&[0; 31]).is_none());
    }
}
