//! Envelope encryption with local KEKs: what Encrypt and Decrypt do between the gRPC service and
//! the key provider.
//!
//! Encrypt seals kube-apiserver's plaintext (a DEK seed) with the active local KEK, in process,
//! and returns the key_id and annotations from the same snapshot. Decrypt finds the KEK named by
//! the annotations in the cache or unwraps it once through the provider. The remote key is used
//! only to wrap a new KEK (at start, on rotation) and to unwrap one this process has not seen.
//!
//! Never logs plaintext, KEK bytes or wrapped-KEK bytes; never takes a nonce from the caller;
//! never sends anything derived from a request to the network except through
//! [`KeyProvider::unwrap`], which resolves the key version within its own configuration.

pub mod cache;
pub mod format;
pub mod kek;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio::sync::Mutex as AsyncMutex;
use zeroize::Zeroizing;

use crate::crypto::SecretKey;
use crate::provider::guard::REQUEST_DEADLINE;
use crate::provider::{KeyProvider, KeyVersion, ProviderError, ProviderHealth};
use cache::{CacheStats, KekCache};
use format::{FormatError, WrappedKekRef};
use kek::{ActiveKek, Kek, RotationPolicy};

/// Why an envelope operation failed.
#[derive(Debug, Clone)]
pub enum EnvelopeError {
    /// The request's bytes break the format or the API's limits.
    Format(FormatError),
    /// The ciphertext did not authenticate under the KEK and key_id it names: altered bytes,
    /// a wrong key_id, or annotations from another object. Deliberately says no more.
    Authentication,
    /// The provider failed.
    Provider(ProviderError),
}

impl std::fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Format(error) => error.fmt(f),
            Self::Authentication => f.write_str(
                "ciphertext does not authenticate with the key_id and annotations given",
            ),
            Self::Provider(error) => error.fmt(f),
        }
    }
}

impl std::error::Error for EnvelopeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Format(error) => Some(error),
            Self::Authentication => None,
            Self::Provider(error) => Some(error),
        }
    }
}

impl From<FormatError> for EnvelopeError {
    fn from(error: FormatError) -> Self {
        Self::Format(error)
    }
}

impl From<ProviderError> for EnvelopeError {
    fn from(error: ProviderError) -> Self {
        Self::Provider(error)
    }
}

impl From<crate::crypto::RandomUnavailable> for EnvelopeError {
    fn from(_: crate::crypto::RandomUnavailable) -> Self {
        Self::Provider(ProviderError::Random)
    }
}

/// How many times one Encrypt may replace a spent KEK before it gives up: only reachable with a
/// tiny `kek_max_encryptions` and many concurrent Encrypts.
const MAX_ROTATIONS_PER_ENCRYPT: usize = 1000;

/// What a v2 Encrypt returns.
#[derive(Debug)]
pub struct Sealed {
    /// Format byte ‖ nonce ‖ AES-GCM output.
    pub ciphertext: Vec<u8>,
    /// The remote key version's id, from the same snapshot as the KEK that sealed.
    pub key_id: String,
    /// The wrapped KEK and its version.
    pub annotations: HashMap<String, Vec<u8>>,
}

/// What Status reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Health {
    /// "ok", or why the plugin cannot serve.
    pub healthz: String,
    /// The current remote key version's id.
    pub key_id: String,
}

/// Why a local KEK was replaced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationReason {
    /// The provider's current key version changed.
    KeyChanged,
    /// The KEK reached (or neared) its encryption budget or its maximum age.
    Spent,
}

/// The outcome of the most recent refreshes, for /readyz and /metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RefreshState {
    /// When a refresh last succeeded (start-up counts as one).
    pub last_success: Option<SystemTime>,
    /// When a refresh was last attempted.
    pub last_attempt: Option<SystemTime>,
    /// The last failure's message, cleared by a success.
    pub last_error: Option<String>,
    /// Failures since the last success.
    pub consecutive_failures: u64,
}

/// Everything the operations endpoints report about the envelope; read without remote calls.
#[derive(Debug, Clone)]
pub struct EnvelopeSnapshot {
    /// The active key version.
    pub key: KeyVersion,
    /// The provider's kind.
    pub provider: &'static str,
    /// The provider's health as of its last call.
    pub provider_health: ProviderHealth,
    /// Encryptions by the active KEK.
    pub active_kek_encryptions: u64,
    /// Refresh outcomes.
    pub refresh: RefreshState,
    /// Cache counters.
    pub cache: CacheStats,
    /// KEKs cached now.
    pub cached_keks: usize,
    /// Local KEK rotations because the key version changed.
    pub rotations_key_changed: u64,
    /// Local KEK rotations because a KEK was spent.
    pub rotations_spent: u64,
}

/// The envelope: the active KEK, the cache of KEKs, and the provider behind them.
pub struct Envelope {
    provider: Arc<dyn KeyProvider>,
    policy: RotationPolicy,
    active: RwLock<Arc<ActiveKek>>,
    rotation: AsyncMutex<()>,
    cache: KekCache,
    refresh_state: Mutex<RefreshState>,
    rotations_key_changed: AtomicU64,
    rotations_spent: AtomicU64,
    /// Set while the key service says the key may not be used; checked on every call.
    revoked: AtomicBool,
    /// Why, while `revoked` is set.
    revocation: Mutex<Option<String>>,
}

impl Envelope {
    /// Reads the provider's current key and wraps a first KEK under it. Until this succeeds
    /// there is nothing to serve, so the socket is not opened before it.
    pub async fn start(
        provider: Arc<dyn KeyProvider>,
        policy: RotationPolicy,
        cache_capacity: NonZeroUsize,
    ) -> Result<Self, EnvelopeError> {
        let key = provider.refresh().await?;
        let cache = KekCache::new(cache_capacity);
        let active = new_active_kek(provider.as_ref(), &cache, key).await?;
        let now = SystemTime::now();
        Ok(Self {
            provider,
            policy,
            active: RwLock::new(active),
            rotation: AsyncMutex::new(()),
            cache,
            refresh_state: Mutex::new(RefreshState {
                last_success: Some(now),
                last_attempt: Some(now),
                ..RefreshState::default()
            }),
            rotations_key_changed: AtomicU64::new(0),
            rotations_spent: AtomicU64::new(0),
            revoked: AtomicBool::new(false),
            revocation: Mutex::new(None),
        })
    }

    /// v2 Encrypt: seals `plaintext` with the active KEK.
    pub async fn encrypt(&self, plaintext: &[u8]) -> Result<Sealed, EnvelopeError> {
        format::check_plaintext(plaintext, format::MAX_V2_PLAINTEXT_LEN)?;
        self.check_not_revoked()?;
        let active = self.active_for_encrypt().await?;
        let mut ciphertext = Vec::with_capacity(1 + crate::crypto::SEAL_OVERHEAD + plaintext.len());
        ciphertext.push(format::V2_CIPHERTEXT_FORMAT);
        active
            .kek
            .gcm()
            .seal_into(&active.v2_aad, plaintext, &mut ciphertext)?;
        Ok(Sealed {
            ciphertext,
            key_id: active.key.key_id().to_owned(),
            annotations: active.annotations.clone(),
        })
    }

    /// v2 Decrypt: opens `ciphertext` with the KEK the annotations name, bound to `key_id`.
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        key_id: &str,
        annotations: &HashMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        format::check_key_id(key_id)?;
        let parsed = format::parse_v2_ciphertext(ciphertext)?;
        let wrapped = format::parse_annotations(annotations)?;
        let kek = self.kek_for(wrapped).await?;
        format::with_v2_aad(key_id, |aad| kek.gcm().open(aad, parsed.sealed))
            .map_err(|_| EnvelopeError::Authentication)
    }

    /// v1 Encrypt: seals `plaintext` into a self-contained blob (v1 has no annotations).
    pub async fn encrypt_v1(&self, plaintext: &[u8]) -> Result<Vec<u8>, EnvelopeError> {
        format::check_plaintext(plaintext, format::MAX_V1_PLAINTEXT_LEN)?;
        self.check_not_revoked()?;
        let active = self.active_for_encrypt().await?;
        let header = &active.v1_header;
        let mut blob =
            Vec::with_capacity(header.len() + crate::crypto::SEAL_OVERHEAD + plaintext.len());
        blob.extend_from_slice(header);
        active.kek.gcm().seal_into(header, plaintext, &mut blob)?;
        Ok(blob)
    }

    /// v1 Decrypt: opens a blob written by [`Envelope::encrypt_v1`].
    pub async fn decrypt_v1(&self, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let parsed = format::parse_v1_blob(blob)?;
        let kek = self.kek_for(parsed.kek).await?;
        kek.gcm()
            .open(parsed.header, parsed.sealed)
            .map_err(|_| EnvelopeError::Authentication)
    }

    /// What Status reports: the active key_id, and "ok" unless the provider says the key is
    /// revoked. Makes no remote call.
    pub async fn health(&self) -> Health {
        let key_id = self.active().key.key_id().to_owned();
        if let Some(reason) = self.revocation() {
            return Health {
                healthz: format!("key revoked: {reason}"),
                key_id,
            };
        }
        let healthz = match self.provider.health().await {
            ProviderHealth::Ok | ProviderHealth::Degraded { .. } => "ok".to_owned(),
            ProviderHealth::Revoked { reason } => format!("key revoked: {reason}"),
        };
        Health { healthz, key_id }
    }

    /// Why the key may not be used, while the key service says so.
    pub fn revocation(&self) -> Option<String> {
        if !self.revoked.load(Ordering::Acquire) {
            return None;
        }
        self.revocation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn check_not_revoked(&self) -> Result<(), EnvelopeError> {
        match self.revocation() {
            None => Ok(()),
            Some(reason) => Err(ProviderError::Revoked { reason }.into()),
        }
    }

    /// The key service said the key may not be used: refuse every call from now on, drop every
    /// cached KEK (each is zeroized when its last in-flight user finishes) and replace the
    /// active KEK by one that was never wrapped and is never used.
    fn revoke(&self, reason: &str) {
        *self
            .revocation
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(reason.to_owned());
        let newly = !self.revoked.swap(true, Ordering::AcqRel);
        self.cache.clear();
        let key = self.active().key.clone();
        if let Ok(placeholder) = SecretKey::generate() {
            *self
                .active
                .write()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Arc::new(ActiveKek::new(
                key,
                Arc::new(Kek::new(placeholder)),
                b"revoked",
            ));
        }
        if newly {
            tracing::error!(
                provider = self.provider.kind(),
                %reason,
                "key revoked by the key service: refusing Encrypt and Decrypt, cached KEKs dropped"
            );
        }
    }

    /// Asks the provider for its current key and rotates the local KEK if the key changed or
    /// the KEK is nearly spent. Returns the key now active. Called by the background refresher.
    pub async fn refresh(&self) -> Result<KeyVersion, EnvelopeError> {
        let result = self.refresh_and_rotate().await;
        let mut state = self
            .refresh_state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let now = SystemTime::now();
        state.last_attempt = Some(now);
        match &result {
            Ok(_) => {
                state.last_success = Some(now);
                state.last_error = None;
                state.consecutive_failures = 0;
            }
            Err(error) => {
                state.last_error = Some(error.to_string());
                state.consecutive_failures += 1;
            }
        }
        result
    }

    async fn refresh_and_rotate(&self) -> Result<KeyVersion, EnvelopeError> {
        let result = self.refresh_and_rotate_once().await;
        if let Err(EnvelopeError::Provider(ProviderError::Revoked { reason })) = &result {
            self.revoke(reason);
        }
        result
    }

    async fn refresh_and_rotate_once(&self) -> Result<KeyVersion, EnvelopeError> {
        let key = self.provider.refresh().await?;
        let active = self.active();
        if self.revoked.load(Ordering::Acquire) {
            // The key is usable again: a fresh KEK, then serve.
            let reason = if active.key == key {
                RotationReason::Spent
            } else {
                RotationReason::KeyChanged
            };
            self.rotate(&active, key, reason).await?;
            self.revoked.store(false, Ordering::Release);
            *self
                .revocation
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = None;
            tracing::info!(provider = self.provider.kind(), "key usable again: serving");
        } else if active.key != key {
            self.rotate(&active, key, RotationReason::KeyChanged)
                .await?;
        } else if active.nearly_spent(&self.policy) {
            self.rotate(&active, key, RotationReason::Spent).await?;
        }
        Ok(self.active().key.clone())
    }

    /// What the operations endpoints report. Makes no remote call.
    pub async fn snapshot(&self) -> EnvelopeSnapshot {
        let active = self.active();
        EnvelopeSnapshot {
            key: active.key.clone(),
            provider: self.provider.kind(),
            provider_health: self.provider.health().await,
            active_kek_encryptions: active.encryptions(),
            refresh: self
                .refresh_state
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner())
                .clone(),
            cache: self.cache.stats(),
            cached_keks: self.cache.len(),
            rotations_key_changed: self.rotations_key_changed.load(Ordering::Relaxed),
            rotations_spent: self.rotations_spent.load(Ordering::Relaxed),
        }
    }

    /// The active key version (what Status and Encrypt report).
    pub fn current_key(&self) -> KeyVersion {
        self.active().key.clone()
    }

    /// The provider's kind, for logs.
    pub fn provider_kind(&self) -> &'static str {
        self.provider.kind()
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn active(&self) -> Arc<ActiveKek> {
        self.active
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    async fn active_for_encrypt(&self) -> Result<Arc<ActiveKek>, EnvelopeError> {
        let mut active = self.active();
        // Each round either takes a use of the active KEK or replaces it once it is spent.
        // Callers that waited for a rotation may find the fresh KEK spent by the others already
        // (a small budget under concurrent Encrypts): they rotate again rather than fail. Every
        // round lets at least one Encrypt through, so the loop ends.
        for _ in 0..MAX_ROTATIONS_PER_ENCRYPT {
            if active.try_use(&self.policy) {
                return Ok(active);
            }
            let key = active.key.clone();
            if let Err(error) = self.rotate(&active, key, RotationReason::Spent).await {
                if let EnvelopeError::Provider(ProviderError::Revoked { reason }) = &error {
                    self.revoke(reason);
                }
                return Err(error);
            }
            active = self.active();
        }
        Err(ProviderError::Misconfigured {
            reason: format!(
                "no fresh KEK had encryptions left after {MAX_ROTATIONS_PER_ENCRYPT} rotations; \
                 raise kek_max_encryptions"
            ),
        }
        .into())
    }

    /// Replaces `replaced` with a fresh KEK wrapped under `key`, unless another caller already
    /// replaced it while this one waited.
    async fn rotate(
        &self,
        replaced: &Arc<ActiveKek>,
        key: KeyVersion,
        reason: RotationReason,
    ) -> Result<(), EnvelopeError> {
        let _one_rotation_at_a_time = self.rotation.lock().await;
        if !Arc::ptr_eq(&self.active(), replaced) {
            return Ok(());
        }
        let fresh = new_active_kek(self.provider.as_ref(), &self.cache, key).await?;
        tracing::info!(
            provider = self.provider.kind(),
            old_key_id = replaced.key.key_id(),
            new_key_id = fresh.key.key_id(),
            old_kek_encryptions = replaced.encryptions(),
            ?reason,
            "rotated the local KEK"
        );
        let counter = match reason {
            RotationReason::KeyChanged => &self.rotations_key_changed,
            RotationReason::Spent => &self.rotations_spent,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        *self
            .active
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner()) = fresh;
        Ok(())
    }

    /// The KEK `wrapped` names, from the cache or unwrapped once. Refused while the key is
    /// revoked — before the lookup, so a revoked key makes no remote unwrap and re-caches no
    /// KEK, and after it, so an unwrap that finished across a revocation is not used.
    async fn kek_for(&self, wrapped: WrappedKekRef<'_>) -> Result<Arc<Kek>, EnvelopeError> {
        self.check_not_revoked()?;
        // The owned copies the unwrap task needs are made only on a miss, not on every hit.
        let kek = self
            .cache
            .get_or_unwrap(wrapped.version, wrapped.wrapped, || {
                let provider = Arc::clone(&self.provider);
                let version = wrapped.version.to_owned();
                let wrapped = wrapped.wrapped.to_vec();
                // The unwrap runs in its own task: carry the caller's gRPC deadline into it.
                let deadline = REQUEST_DEADLINE.try_with(|deadline| *deadline).ok();
                async move {
                    let unwrap = provider.unwrap(&version, &wrapped);
                    let secret = match deadline {
                        Some(deadline) => REQUEST_DEADLINE.scope(deadline, unwrap).await?,
                        None => unwrap.await?,
                    };
                    Ok(Arc::new(Kek::new(secret)))
                }
            })
            .await?;
        self.check_not_revoked()?;
        Ok(kek)
    }
}

async fn new_active_kek(
    provider: &dyn KeyProvider,
    cache: &KekCache,
    key: KeyVersion,
) -> Result<Arc<ActiveKek>, EnvelopeError> {
    let secret = SecretKey::generate()?;
    let wrapped = provider.wrap(&key, &secret).await?;
    if wrapped.is_empty() || wrapped.len() > format::MAX_WRAPPED_KEK_LEN {
        // Decrypt would refuse such annotations; never write what cannot be read back.
        return Err(ProviderError::Misconfigured {
            reason: format!(
                "the {} provider wrapped a KEK into {} bytes; at most {} fit the format",
                provider.kind(),
                wrapped.len(),
                format::MAX_WRAPPED_KEK_LEN
            ),
        }
        .into());
    }
    let active = ActiveKek::new(key, Arc::new(Kek::new(secret)), &wrapped);
    cache.insert(active.key.version(), &wrapped, Arc::clone(&active.kek));
    Ok(Arc::new(active))
}
