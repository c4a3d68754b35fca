//! Local KEKs: the AES-256-GCM keys that seal kube-apiserver's DEK seeds in process, and the
//! one KEK Encrypt currently uses together with the rules that retire it.
//!
//! A KEK is born here from the OS CSPRNG, is wrapped by the provider once, and lives only in
//! memory; its key schedule is zeroized when the last reference drops. Only this process seals
//! with it, and only while it is the active KEK, so its nonces are a counter
//! ([`NonceSequence`]) made with it and kept beside it: never a nonce from anywhere else. The
//! active KEK, its key_id and its annotations are one immutable snapshot, so an Encrypt response
//! can never pair a ciphertext with another KEK's key_id.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use super::format;
use crate::crypto::{GcmKey, Nonce, NonceSequence, RandomUnavailable, SecretKey};
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

/// When an active KEK must be replaced. Its nonces are a counter, unique whatever the count;
/// the count is still bounded (at most 2^32, by default 2^21) so that one KEK protects a bounded
/// number of seeds, and the age bounds how long one KEK stays in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RotationPolicy {
    /// Encryptions after which the KEK is replaced.
    pub max_encryptions: u64,
    /// Age after which the KEK is replaced.
    pub max_age: Duration,
}

impl RotationPolicy {
    /// The largest `max_encryptions` accepted: 2^32, NIST SP 800-38D's bound on invocations of
    /// one key with random nonces, kept for counter nonces ([`crate::crypto::MAX_SEALS_PER_KEY`]).
    pub const MAX_ENCRYPTIONS_LIMIT: u64 = crate::crypto::MAX_SEALS_PER_KEY;

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

/// The annotations of an Encrypt response, shared by every response under one KEK.
pub type Annotations = HashMap<String, Vec<u8>>;

/// The KEK Encrypt uses now, with everything an Encrypt response needs precomputed and shared:
/// an Encrypt allocates nothing for its key_id and annotations, and reads no clock.
pub struct ActiveKek {
    /// The remote key version that wrapped this KEK; its key_id is what Status reports.
    pub key: KeyVersion,
    /// The KEK itself, shared with the decrypt cache.
    pub kek: Arc<Kek>,
    /// The key_id every v2 Encrypt response under this KEK carries (the key version's own).
    pub key_id: Arc<str>,
    /// The annotations every v2 Encrypt response under this KEK carries.
    pub annotations: Arc<Annotations>,
    /// The v1 blob header (format byte, version, wrapped KEK) for v1 Encrypt responses.
    pub v1_header: Vec<u8>,
    /// The associated data of every v2 ciphertext under this KEK.
    pub v2_aad: Vec<u8>,
    /// The KEK's nonces, v1 and v2 alike; its limit is the encryption budget.
    nonces: NonceSequence,
    /// Set when the KEK reaches its maximum age, by a timer rather than a clock read per Encrypt.
    expired: Arc<AtomicBool>,
    /// The timer, stopped when the KEK is dropped; `None` outside a Tokio runtime, where the
    /// age is checked against the clock instead.
    timer: Option<tokio::task::AbortHandle>,
    created: Instant,
    max_age: Duration,
}

impl ActiveKek {
    /// Assembles the active KEK for `key` from a KEK made just now and its wrapped form, with a
    /// fresh nonce sequence limited to the policy's encryption budget, and starts the timer that
    /// retires it at the policy's maximum age.
    pub fn new(
        key: KeyVersion,
        kek: Arc<Kek>,
        wrapped: &[u8],
        policy: &RotationPolicy,
    ) -> Result<Self, RandomUnavailable> {
        let created = Instant::now();
        let expired = Arc::new(AtomicBool::new(false));
        let timer = tokio::runtime::Handle::try_current().ok().map(|runtime| {
            let expired = Arc::clone(&expired);
            // From the KEK's creation, not from when the task first runs.
            let deadline = created + policy.max_age;
            runtime
                .spawn(async move {
                    tokio::time::sleep_until(deadline).await;
                    expired.store(true, Ordering::Relaxed);
                })
                .abort_handle()
        });
        Ok(Self {
            annotations: Arc::new(format::annotations(key.version(), wrapped)),
            v1_header: format::v1_header(key.version(), wrapped),
            v2_aad: format::v2_aad(key.key_id()),
            key_id: Arc::clone(key.shared_key_id()),
            key,
            kek,
            nonces: NonceSequence::new(policy.max_encryptions)?,
            expired,
            timer,
            created,
            max_age: policy.max_age,
        })
    }

    /// The nonce for one more encryption, or `None` when the KEK has spent its budget or
    /// reached its age. One atomic load and one `fetch_add`: no clock, no system call.
    pub fn next_nonce(&self) -> Option<Nonce> {
        if self.expired() {
            return None;
        }
        self.nonces.next()
    }

    fn expired(&self) -> bool {
        if self.expired.load(Ordering::Relaxed) {
            return true;
        }
        if self.timer.is_none() && self.created.elapsed() >= self.max_age {
            self.expired.store(true, Ordering::Relaxed);
            return true;
        }
        false
    }

    /// Whether the KEK has used three quarters of its budget or of its age, so the refresher
    /// should replace it before Encrypt has to wait for a wrap.
    pub fn nearly_spent(&self, policy: &RotationPolicy) -> bool {
        let used = u128::from(self.nonces.used());
        used * 4 >= u128::from(policy.max_encryptions) * 3
            || self.created.elapsed() >= policy.max_age / 4 * 3
            || self.expired()
    }

    /// Encryptions performed so far.
    pub fn encryptions(&self) -> u64 {
        self.nonces.used()
    }
}

impl Drop for ActiveKek {
    fn drop(&mut self) {
        if let Some(timer) = &self.timer {
            timer.abort();
        }
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

    fn active(policy: &RotationPolicy) -> ActiveKek {
        let key = KeyVersion::new("id", "1").unwrap();
        ActiveKek::new(
            key,
            Arc::new(Kek::new(SecretKey::generate().unwrap())),
            &[1],
            policy,
        )
        .unwrap()
    }

    #[tokio::test]
    async fn a_kek_is_refused_after_its_encryption_budget() {
        let policy = RotationPolicy {
            max_encryptions: 4,
            max_age: Duration::from_secs(60),
        };
        let active = active(&policy);
        assert!((0..4).all(|_| active.next_nonce().is_some()));
        assert!(active.nearly_spent(&policy));
        assert!(active.next_nonce().is_none());
        assert_eq!(active.encryptions(), 4);
    }

    #[tokio::test]
    async fn a_tiny_budget_is_not_nearly_spent_before_use() {
        // Regression: 2 / 4 * 3 == 0 made every refresh rotate a fresh KEK.
        let policy = RotationPolicy {
            max_encryptions: 2,
            max_age: Duration::from_secs(60),
        };
        let active = active(&policy);
        assert!(!active.nearly_spent(&policy));
        assert!(active.next_nonce().is_some());
        assert!(!active.nearly_spent(&policy));
        assert!(active.next_nonce().is_some());
        assert!(active.nearly_spent(&policy));
    }

    #[tokio::test(start_paused = true)]
    async fn a_kek_is_refused_after_its_age_without_a_clock_read_per_encrypt() {
        let policy = RotationPolicy {
            max_encryptions: 1000,
            max_age: Duration::from_secs(60),
        };
        let active = active(&policy);
        assert!(active.next_nonce().is_some() && !active.nearly_spent(&policy));
        tokio::time::advance(Duration::from_secs(46)).await;
        assert!(active.nearly_spent(&policy));
        assert!(active.next_nonce().is_some());
        tokio::time::advance(Duration::from_secs(15)).await;
        // The timer task runs once this task yields; Encrypt itself never looks at the clock.
        tokio::task::yield_now().await;
        assert!(active.expired.load(Ordering::Relaxed), "the timer fired");
        assert!(active.next_nonce().is_none());
    }

    #[test]
    fn outside_a_runtime_the_age_is_checked_against_the_clock() {
        let policy = RotationPolicy {
            max_encryptions: 1000,
            max_age: Duration::from_millis(1),
        };
        let active = active(&policy);
        assert!(active.timer.is_none());
        std::thread::sleep(Duration::from_millis(5));
        assert!(active.next_nonce().is_none());
    }

    #[tokio::test]
    async fn v1_and_v2_share_one_sequence_and_responses_share_one_allocation() {
        let policy = RotationPolicy::DEFAULT;
        let active = active(&policy);
        let first = active.next_nonce().unwrap();
        let second = active.next_nonce().unwrap();
        assert_eq!(first.bytes()[..4], second.bytes()[..4]);
        assert_eq!(first.bytes()[4..], 0u64.to_be_bytes());
        assert_eq!(second.bytes()[4..], 1u64.to_be_bytes());
        assert!(Arc::ptr_eq(&active.key_id, active.key.shared_key_id()));
    }
}
