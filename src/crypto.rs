//! The one place kube-kms touches AES-256-GCM and the OS random number generator.
//!
//! [`SecretKey`] holds 32 bytes of key material and zeroizes them when dropped; [`GcmKey`] is a
//! key schedule ready to seal and open `nonce ‖ ciphertext ‖ tag` records. Every nonce is made
//! here, in one of two ways, and no caller can supply nonce bytes: a key that lives in one
//! process only (a local KEK) seals with the next nonce of its [`NonceSequence`] — NIST SP
//! 800-38D's deterministic construction, unique by construction and without a system call — and
//! a key that outlives the process (a root key in the local key ring) seals with
//! [`Nonce::random`], 96 bits from the OS CSPRNG. A [`Nonce`] can be used for one seal only.
//! Opening fails with one opaque error whatever went wrong (wrong key, bad tag, truncation), so
//! the failure says nothing about the key.

pub mod base64url;

use std::sync::atomic::{AtomicU64, Ordering};

use aes_gcm::aead::{AeadInOut, KeyInit};
use aes_gcm::{Aes256Gcm, Tag};
use rand::TryRng;
use rand::rngs::SysRng;
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

/// Bytes of an AES-256 key.
pub const KEY_LEN: usize = 32;
/// Bytes of an AES-GCM nonce (96 bits, as NIST SP 800-38D recommends).
pub const NONCE_LEN: usize = 12;
/// Bytes of a [`NonceSequence`]'s fixed field, the nonce's first 32 bits; the other 64 bits are
/// the invocation counter, big-endian.
pub const NONCE_FIXED_LEN: usize = 4;
/// The most nonces one [`NonceSequence`] hands out, whatever limit it is given: 2^32, NIST SP
/// 800-38D's bound on invocations of one key with random nonces, kept for counter nonces too.
/// The 64-bit invocation counter therefore never comes near its end.
pub const MAX_SEALS_PER_KEY: u64 = 1 << 32;
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

/// AES-GCM refused to seal: it does so only for a plaintext longer than 2^36 − 32 bytes, which
/// no caller passes (every plaintext is checked against a limit of at most 16 KiB first).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealFailed;

impl std::fmt::Display for SealFailed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AES-GCM refused to seal a plaintext of that length")
    }
}

impl std::error::Error for SealFailed {}

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

/// A 96-bit AES-GCM nonce for one seal. Made only here — drawn from the OS CSPRNG, or the next
/// of a [`NonceSequence`] — and neither `Clone` nor `Copy`: [`GcmKey::seal_into`] consumes it,
/// so one nonce seals one record.
pub struct Nonce([u8; NONCE_LEN]);

impl Nonce {
    /// 96 random bits from the OS CSPRNG: for keys that outlive this process (a root key in the
    /// local key ring seals across restarts, so no counter of ours could cover all its nonces).
    pub fn random() -> Result<Self, RandomUnavailable> {
        let mut nonce = [0; NONCE_LEN];
        fill_random(&mut nonce)?;
        Ok(Self(nonce))
    }

    /// The nonce's bytes, as they will be written before the ciphertext.
    pub fn bytes(&self) -> &[u8; NONCE_LEN] {
        &self.0
    }
}

/// The nonces of one key that only this process ever seals with (a local KEK): NIST SP 800-38D
/// §8.2.1's deterministic construction, a 32-bit fixed field drawn once from the OS CSPRNG when
/// the sequence is made, followed by a 64-bit invocation counter, big-endian.
///
/// Each [`NonceSequence::next`] takes its invocation with one atomic `fetch_add`, so concurrent
/// sealers never get the same one, and refuses once `limit` nonces (at most
/// [`MAX_SEALS_PER_KEY`]) were handed out; a refused call does not advance the counter past the
/// limit by more than the callers racing it, so the counter can never wrap. Uniqueness therefore
/// rests on the counter, not on chance — provided a key is paired with one sequence only, which
/// is why a sequence is made together with the key it serves and kept beside it.
pub struct NonceSequence {
    fixed: [u8; NONCE_FIXED_LEN],
    invocations: AtomicU64,
    limit: u64,
}

impl NonceSequence {
    /// A fresh sequence of at most `limit` nonces (capped at [`MAX_SEALS_PER_KEY`]).
    pub fn new(limit: u64) -> Result<Self, RandomUnavailable> {
        let mut fixed = [0; NONCE_FIXED_LEN];
        fill_random(&mut fixed)?;
        Ok(Self {
            fixed,
            invocations: AtomicU64::new(0),
            limit: limit.min(MAX_SEALS_PER_KEY),
        })
    }

    /// The next nonce, or `None` once `limit` nonces were handed out.
    pub fn next(&self) -> Option<Nonce> {
        // The load keeps a spent sequence's counter where it is: only callers racing past it
        // between this load and their fetch_add can take it beyond the limit, a handful at most.
        if self.invocations.load(Ordering::Relaxed) >= self.limit {
            return None;
        }
        let invocation = self.invocations.fetch_add(1, Ordering::Relaxed);
        if invocation >= self.limit {
            return None;
        }
        let mut nonce = [0; NONCE_LEN];
        nonce[..NONCE_FIXED_LEN].copy_from_slice(&self.fixed);
        nonce[NONCE_FIXED_LEN..].copy_from_slice(&invocation.to_be_bytes());
        Some(Nonce(nonce))
    }

    /// Nonces handed out so far.
    pub fn used(&self) -> u64 {
        self.invocations.load(Ordering::Relaxed).min(self.limit)
    }

    /// The most nonces this sequence hands out.
    pub fn limit(&self) -> u64 {
        self.limit
    }
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

    /// The key HKDF-Expand (RFC 5869, SHA-256) derives from the pseudorandom key `prk` and
    /// `info`: the first 32 bytes of T(1) = HMAC-SHA256(prk, info ‖ 0x01). Expand only, no
    /// Extract, as Kubernetes' extended-nonce AES-GCM transformer derives its per-record keys
    /// (which the Azure Go plugin's cluster-seed mode uses); only for opening such records.
    pub fn hkdf_sha256_expand(prk: &[u8], info: &[u8]) -> Self {
        use hmac::{KeyInit as _, Mac};
        // HMAC takes a key of any length: this cannot fail.
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(prk)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(info);
        mac.update(&[1]);
        let mut block = Zeroizing::new([0u8; KEY_LEN]);
        block.copy_from_slice(&mac.finalize().into_bytes());
        Self(Box::new(*block))
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
    /// Appends `nonce ‖ ciphertext ‖ tag` for `plaintext` to `out`, with `aad` authenticated
    /// alongside. The nonce is consumed: it seals this one record and no other. On failure `out`
    /// is left as it was.
    pub fn seal_into(
        &self,
        nonce: Nonce,
        aad: &[u8],
        plaintext: &[u8],
        out: &mut Vec<u8>,
    ) -> Result<(), SealFailed> {
        let before = out.len();
        out.reserve(SEAL_OVERHEAD + plaintext.len());
        out.extend_from_slice(&nonce.0);
        let start = out.len();
        out.extend_from_slice(plaintext);
        let sealed = self.0.encrypt_inout_detached(
            &aes_gcm::Nonce::from(nonce.0),
            aad,
            out[start..].as_mut().into(),
        );
        match sealed {
            Ok(tag) => {
                out.extend_from_slice(&tag);
                Ok(())
            }
            Err(_) => {
                out.truncate(before);
                Err(SealFailed)
            }
        }
    }

    /// Opens a `nonce ‖ ciphertext ‖ tag` record sealed with the same key and `aad`.
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, OpenFailed> {
        if sealed.len() < SEAL_OVERHEAD {
            return Err(OpenFailed);
        }
        let (nonce, rest) = sealed.split_at(NONCE_LEN);
        let (ciphertext, tag) = rest.split_at(rest.len() - TAG_LEN);
        let nonce = aes_gcm::Nonce::try_from(nonce).map_err(|_| OpenFailed)?;
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

    /// RFC 5869, test case 1: the first 32 bytes of OKM are T(1).
    #[test]
    fn hkdf_expand_matches_rfc_5869() {
        let prk = hex::decode("077709362c2e32df0ddc3f0dc47bba6390b6c73bb50f9c3122ec844ad7c2b3e5")
            .unwrap();
        let info = hex::decode("f0f1f2f3f4f5f6f7f8f9").unwrap();
        assert_eq!(
            hex::encode(SecretKey::hkdf_sha256_expand(&prk, &info).expose()),
            "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf"
        );
    }

    fn seal(key: &GcmKey, aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
        let mut sealed = Vec::new();
        key.seal_into(Nonce::random().unwrap(), aad, plaintext, &mut sealed)
            .unwrap();
        sealed
    }

    #[test]
    fn sealed_record_opens_with_the_same_key_and_aad_only() {
        let key = SecretKey::generate().unwrap().gcm();
        let other = SecretKey::generate().unwrap().gcm();
        let sealed = seal(&key, b"aad", b"secret");
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
        let sealed = seal(&key, b"", b"0123456789");
        for bit in 0..sealed.len() * 8 {
            let mut copy = sealed.clone();
            copy[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(key.open(b"", &copy), Err(OpenFailed), "bit {bit}");
        }
    }

    #[test]
    fn a_sequence_is_its_fixed_field_then_a_big_endian_counter_from_zero() {
        let key = SecretKey::generate().unwrap().gcm();
        let nonces = NonceSequence::new(3).unwrap();
        let mut records = Vec::new();
        while let Some(nonce) = nonces.next() {
            let mut sealed = Vec::new();
            key.seal_into(nonce, b"aad", b"seed", &mut sealed).unwrap();
            records.push(sealed);
        }
        assert_eq!(records.len(), 3, "the limit");
        assert_eq!(nonces.used(), 3);
        for (invocation, sealed) in records.iter().enumerate() {
            assert_eq!(sealed[..NONCE_FIXED_LEN], nonces.fixed);
            assert_eq!(
                sealed[NONCE_FIXED_LEN..NONCE_LEN],
                (invocation as u64).to_be_bytes()
            );
            assert_eq!(key.open(b"aad", sealed).unwrap().as_slice(), b"seed");
        }
        // Refused calls leave the counter at the limit.
        for _ in 0..10 {
            assert!(nonces.next().is_none());
        }
        assert_eq!(nonces.invocations.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_sequence_never_exceeds_the_bound_for_one_key() {
        let nonces = NonceSequence::new(u64::MAX).unwrap();
        assert_eq!(nonces.limit(), MAX_SEALS_PER_KEY);
        nonces
            .invocations
            .store(MAX_SEALS_PER_KEY - 1, Ordering::Relaxed);
        let last = nonces.next().unwrap();
        assert_eq!(
            last.bytes()[NONCE_FIXED_LEN..],
            (MAX_SEALS_PER_KEY - 1).to_be_bytes()
        );
        assert!(nonces.next().is_none());
    }

    #[test]
    fn concurrent_sealers_never_share_a_nonce() {
        let nonces = NonceSequence::new(40_000).unwrap();
        let taken: Vec<Vec<[u8; NONCE_LEN]>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..4)
                .map(|_| {
                    scope.spawn(|| {
                        std::iter::from_fn(|| nonces.next())
                            .map(|nonce| nonce.0)
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            workers.into_iter().map(|w| w.join().unwrap()).collect()
        });
        let all: std::collections::HashSet<[u8; NONCE_LEN]> =
            taken.iter().flatten().copied().collect();
        assert_eq!(taken.iter().map(Vec::len).sum::<usize>(), 40_000);
        assert_eq!(all.len(), 40_000, "a nonce was handed out twice");
        assert!(nonces.invocations.load(Ordering::Relaxed) <= 40_000 + 4);
    }

    #[test]
    fn two_sequences_draw_their_fixed_fields_independently() {
        // 2^-32 odds of a false failure per run, and the sequences would still not collide
        // within one key: each key has its own sequence.
        let fixed: std::collections::HashSet<_> = (0..4)
            .map(|_| NonceSequence::new(1).unwrap().fixed)
            .collect();
        assert!(fixed.len() > 1);
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
