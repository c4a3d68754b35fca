//! Local KEKs: the AES-256-GCM keys that seal kube-apiserver's DEK seeds in process, and the
//! one KEK Encrypt currently uses together with the rules that retire it.
//!
//! A KEK is born here from the OS CSPRNG, is wrapped by the provider once, and lives only in
//! memory; its key schedule is zeroized when the last reference drops. The active KEK, its
//! key_id and its annotations are one immutable snapshot, so an Encrypt response can never
//! pair a ciphertext with another KEK's key_id.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::format;
use crate::crypto::{GcmKey, SecretKey};
use crate::provider::KeyVersion;

/// A local KEK ready to seal and open. Zeroized when dropped.
pub struct Kek {
    gcm: GcmKey,
}

impl Kek {
    /// Expands `key` into a ready-to-use key schedule; `key` itself is dropped (and zeroized).
    pub fn new(key: SecretKey) -> Self {
        Self { gcm: key.gcm() }
    }

    /// The key schedule.
    pub fn gcm(&self) -> &GcmKey {
        &self.gcm
    }
}

/// When an active KEK must be replaced. Random 96-bit nonces stay safe for 2^32 messages per
/// key; the defaults stay far below that.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Encryptions after which the KEK is replaced.
    pub max_encryptions: u64,
    /// Age after which the KEK is replaced.
    pub max_age: Duration,
}

impl RotationPolicy {
    /// The largest `max_encryptions` accepted: 2^32 random nonces is NIST's bound per key.
    pub const MAX_ENCRYPTIONS_LIMIT: u64 = 1 << 32;

    /// Default: 2^21 encryptions (the limit kube-apiserver's own KEK hierarchy prototype used)
    /// or 7 days, whichever comes first.
    pub const DEFAULT: Self = Self {
        max_encryptions: 1 << 21,
        max_age: Duration::from_secs(7 * 24 * 3600),
    };
}

impl Default for RotationPolicy {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// The KEK Encrypt uses now, with everything an Encrypt response needs precomputed.
pub struct ActiveKek {
    /// The remote key version that wrapped this KEK; its key_id is what Status reports.
    pub key: KeyVersion,
    /// The KEK itself, shared with the decrypt cache.
    pub kek: std::sync::Arc<Kek>,
    /// The annotations every v2 Encrypt response under this KEK carries.
    pub annotations: HashMap<String, Vec<u8>>,
    /// The v1 blob header (format byte, version, wrapped KEK) for v1 Encrypt responses.
    pub v1_header: Vec<u8>,
    /// The associated data of every v2 ciphertext under this KEK.
    pub v2_aad: Vec<u8>,
    encryptions: AtomicU64,
    created: Instant,
}

impl ActiveKek {
    /// Assembles the active KEK for `key` from a KEK and its wrapped form.
    pub fn new(key: KeyVersion, kek: std::sync::Arc<Kek>, wrapped: &[u8]) -> Self {
        Self {
            annotations: format::annotations(key.version(), wrapped),
            v1_header: format::v1_header(key.version(), wrapped),
            v2_aad: format::v2_aad(key.key_id()),
            key,
            kek,
            encryptions: AtomicU64::new(0),
            created: Instant::now(),
        }
    }

    /// Counts one encryption and says whether the KEK may perform it under `policy`.
    pub fn try_use(&self, policy: &RotationPolicy) -> bool {
        let used = self.encryptions.fetch_add(1, Ordering::Relaxed);
        used < policy.max_encryptions && self.created.elapsed() < policy.max_age
    }

    /// Whether the KEK has used three quarters of its budget, so the refresher should replace it
    /// before Encrypt has to wait for a wrap.
    pub fn nearly_spent(&self, policy: &RotationPolicy) -> bool {
        let used = u128::from(self.encryptions.load(Ordering::Relaxed));
        used * 4 >= u128::from(policy.max_encryptions) * 3
            || self.created.elapsed() >= policy.max_age / 4 * 3
    }

    /// Encryptions performed so far (or refused for being over budget).
    pub fn encryptions(&self) -> u64 {
        self.encryptions.load(Ordering::Relaxed)
    }
}

/// What Encrypt may seal with: the active KEK, or — while the key service refuses the key —
/// nothing. A revoked slot holds no KEK at all, so no Encrypt can seal while the key is
/// revoked, whatever it raced with.
#[derive(Clone)]
pub enum ActiveSlot {
    /// Encrypt seals with this KEK.
    Serving(std::sync::Arc<ActiveKek>),
    /// The key service refused the key; Status still names it.
    Revoked {
        /// The key version that was active when the key was refused.
        key: KeyVersion,
        /// Why, as the provider said it.
        reason: String,
    },
}

impl ActiveSlot {
    /// The key version Status reports.
    pub fn key(&self) -> &KeyVersion {
        match self {
            Self::Serving(active) => &active.key,
            Self::Revoked { key, .. } => key,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn active() -> ActiveKek {
        let key = KeyVersion::new("id", "1").unwrap();
        ActiveKek::new(
            key,
            std::sync::Arc::new(Kek::new(SecretKey::generate().unwrap())),
            &[1],
        )
    }

    #[test]
    fn a_kek_is_refused_after_its_encryption_budget() {
        let policy = RotationPolicy {
            max_encryptions: 4,
            max_age: Duration::from_secs(60),
        };
        let active = active();
        assert!((0..4).all(|_| active.try_use(&policy)));
        assert!(active.nearly_spent(&policy));
        assert!(!active.try_use(&policy));
    }

    #[test]
    fn a_tiny_budget_is_not_nearly_spent_before_use() {
        // Regression: 2 / 4 * 3 == 0 made every refresh rotate a fresh KEK.
        let policy = RotationPolicy {
            max_encryptions: 2,
            max_age: Duration::from_secs(60),
        };
        let active = active();
        assert!(!active.nearly_spent(&policy));
        assert!(active.try_use(&policy));
        assert!(!active.nearly_spent(&policy));
        assert!(active.try_use(&policy));
        assert!(active.nearly_spent(&policy));
    }

    #[tokio::test(start_paused = true)]
    async fn a_kek_is_refused_after_its_age() {
        let policy = RotationPolicy {
            max_encryptions: 1000,
            max_age: Duration::from_secs(60),
        };
        let active = active();
        assert!(active.try_use(&policy) && !active.nearly_spent(&policy));
        tokio::time::advance(Duration::from_secs(46)).await;
        assert!(active.nearly_spent(&policy));
        tokio::time::advance(Duration::from_secs(15)).await;
        assert!(!active.try_use(&policy));
    }
}
