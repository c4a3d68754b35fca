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
//! [`KeyProvider::unwrap`] and, for a record of Azure's Go plugin,
//! [`KeyProvider::decrypt_legacy`], which resolve the key version within their own
//! configuration.

pub mod cache;
pub mod format;
pub mod kek;
pub mod legacy;

#[cfg(test)]
mod tests;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::SystemTime;

use tokio::sync::Mutex as AsyncMutex;
use zeroize::Zeroizing;

use crate::crypto::{Nonce, SecretKey};
use crate::provider::guard::REQUEST_DEADLINE;
use crate::provider::{KeyProvider, KeyVersion, LegacyCiphertext, ProviderError, ProviderHealth};
use cache::{CacheStats, KekCache};
use format::{FormatError, WrappedKekRef};
use kek::{ActiveKek, ActiveSlot, Annotations, Kek, RotationPolicy};
use legacy::V1Kind;

/// A DEK read from a Go plugin record, shared by every Decrypt of it; wiped when the last
/// holder drops it.
type LegacyPlaintext = Arc<Zeroizing<Vec<u8>>>;

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

/// AES-GCM refused to seal: only for a plaintext far over every limit the envelope checks first.
fn seal_failed(len: usize, max: usize) -> impl FnOnce(crate::crypto::SealFailed) -> EnvelopeError {
    move |_| FormatError::PlaintextTooLarge { len, max }.into()
}

/// How many times one Encrypt may replace a spent KEK before it gives up: only reachable with a
/// tiny `kek_max_encryptions` and many concurrent Encrypts.
const MAX_ROTATIONS_PER_ENCRYPT: usize = 1000;

/// What a v2 Encrypt returns. The key_id and annotations are shared with every other response
/// under the same KEK (reference-counted, never copied per Encrypt).
#[derive(Debug, Clone)]
pub struct Sealed {
    /// Format byte ‖ nonce ‖ AES-GCM output.
    pub ciphertext: Vec<u8>,
    /// The remote key version's id, from the same snapshot as the KEK that sealed.
    pub key_id: Arc<str>,
    /// The wrapped KEK and its version.
    pub annotations: Arc<Annotations>,
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

/// The active slot and its generation, changed together under one lock.
struct Active {
    /// Bumped by every change of `slot`: a rotation installs its fresh KEK only if the slot is
    /// still the one it set out to replace (compare-and-swap), so a revocation that lands while
    /// a wrap is in flight is never overwritten by the late KEK.
    generation: u64,
    slot: ActiveSlot,
}

/// The envelope: the active KEK, the cache of KEKs, and the provider behind them.
pub struct Envelope {
    provider: Arc<dyn KeyProvider>,
    policy: RotationPolicy,
    active: RwLock<Active>,
    rotation: AsyncMutex<()>,
    cache: KekCache,
    /// What the key service decrypted for Azure's Go plugin records, by (the key_id or "v1",
    /// the RSA ciphertext): kube-apiserver reuses one DEK for many objects.
    legacy: KekCache<LegacyPlaintext>,
    /// The Key Vault record of the Go plugin's cluster seed, when its records are to be read:
    /// decrypted (through `legacy`, so once) when the first one is.
    cluster_seed: Option<LegacyCiphertext>,
    refresh_state: Mutex<RefreshState>,
    rotations_key_changed: AtomicU64,
    rotations_spent: AtomicU64,
    /// Mirrors "the slot is revoked" for Decrypt's lock-free check; written only while the
    /// slot's write lock is held. Encrypt never reads it: the slot itself has no KEK then.
    revoked: AtomicBool,
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
        let (active, wrapped) = new_active_kek(provider.as_ref(), key, &policy).await?;
        cache.insert(active.key.version(), &wrapped, Arc::clone(&active.kek));
        let now = SystemTime::now();
        Ok(Self {
            provider,
            policy,
            active: RwLock::new(Active {
                generation: 0,
                slot: ActiveSlot::Serving(active),
            }),
            rotation: AsyncMutex::new(()),
            cache,
            legacy: KekCache::new(cache_capacity),
            cluster_seed: None,
            refresh_state: Mutex::new(RefreshState {
                last_success: Some(now),
                last_attempt: Some(now),
                ..RefreshState::default()
            }),
            rotations_key_changed: AtomicU64::new(0),
            rotations_spent: AtomicU64::new(0),
            revoked: AtomicBool::new(false),
        })
    }

    /// Reads the records of the Go plugin's cluster-seed mode with the seed `seed` holds (the
    /// record in its seed file, [`legacy::parse_seed_file`]); without it they are refused.
    pub fn with_cluster_seed(mut self, seed: LegacyCiphertext) -> Self {
        self.cluster_seed = Some(seed);
        self
    }

    /// v2 Encrypt: seals `plaintext` with the active KEK.
    pub async fn encrypt(&self, plaintext: &[u8]) -> Result<Sealed, EnvelopeError> {
        format::check_plaintext(plaintext, format::MAX_V2_PLAINTEXT_LEN)?;
        let (active, nonce) = self.active_for_encrypt().await?;
        let mut ciphertext = Vec::with_capacity(1 + crate::crypto::SEAL_OVERHEAD + plaintext.len());
        ciphertext.push(format::V2_CIPHERTEXT_FORMAT);
        active
            .kek
            .gcm()
            .seal_into(nonce, &active.v2_aad, plaintext, &mut ciphertext)
            .map_err(seal_failed(plaintext.len(), format::MAX_V2_PLAINTEXT_LEN))?;
        Ok(Sealed {
            ciphertext,
            key_id: Arc::clone(&active.key_id),
            annotations: Arc::clone(&active.annotations),
        })
    }

    /// v2 Decrypt: opens `ciphertext` with the KEK the annotations name, bound to `key_id`.
    pub async fn decrypt(
        &self,
        ciphertext: &[u8],
        key_id: &str,
        annotations: &HashMap<String, Vec<u8>>,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        if legacy::is_v2_record(annotations) {
            return match legacy::parse_v2(ciphertext, key_id, annotations)? {
                legacy::V2Record::KeyVault(record) => self.decrypt_legacy(record).await,
                legacy::V2Record::ClusterSeed(record) => self.decrypt_seeded(&record).await,
            };
        }
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
        let (active, nonce) = self.active_for_encrypt().await?;
        let header = &active.v1_header;
        let mut blob =
            Vec::with_capacity(header.len() + crate::crypto::SEAL_OVERHEAD + plaintext.len());
        blob.extend_from_slice(header);
        active
            .kek
            .gcm()
            .seal_into(nonce, header, plaintext, &mut blob)
            .map_err(seal_failed(plaintext.len(), format::MAX_V1_PLAINTEXT_LEN))?;
        Ok(blob)
    }

    /// v1 Decrypt: opens a blob written by [`Envelope::encrypt_v1`].
    /// Also reads a blob of Azure's Go KMS plugin (see [`legacy`]).
    pub async fn decrypt_v1(&self, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        match legacy::classify_v1(blob)? {
            V1Kind::Own => self.decrypt_own_v1(blob).await,
            V1Kind::Legacy(record) => self.decrypt_legacy(record).await,
            V1Kind::Ambiguous(record) => match self.decrypt_own_v1(blob).await {
                Ok(plaintext) => Ok(plaintext),
                Err(own) => match self.decrypt_legacy(record).await {
                    Ok(plaintext) => Ok(plaintext),
                    // The key service could not answer: say so, so that kube-apiserver
                    // retries, rather than report kube-kms's reading's refusal.
                    Err(
                        legacy @ EnvelopeError::Provider(
                            ProviderError::Unavailable { .. } | ProviderError::Throttled { .. },
                        ),
                    ) => Err(legacy),
                    Err(_) => Err(own),
                },
            },
        }
    }

    async fn decrypt_own_v1(&self, blob: &[u8]) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let parsed = format::parse_v1_blob(blob)?;
        let kek = self.kek_for(parsed.kek).await?;
        kek.gcm()
            .open(parsed.header, parsed.sealed)
            .map_err(|_| EnvelopeError::Authentication)
    }

    /// A Go plugin record's plaintext: from the cache, or decrypted once by the provider (with a
    /// key version its configuration names; refused without a remote call otherwise).
    async fn decrypt_legacy(
        &self,
        record: LegacyCiphertext,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        self.check_not_revoked()?;
        self.provider.check_legacy(&record)?;
        // The layout is part of the name: the same RSA bytes in the other layout mean another
        // record, whose plaintext is checked differently.
        let name = match &record.key_id {
            Some(key_id) => format!("v2 {:?} {key_id}", record.layout),
            None => format!("v1 {:?}", record.layout),
        };
        let rsa = record.rsa.clone();
        let plaintext = self
            .legacy
            .get_or_unwrap(&name, &rsa, || {
                let provider = Arc::clone(&self.provider);
                let deadline = REQUEST_DEADLINE.try_with(|deadline| *deadline).ok();
                async move {
                    let decrypt = provider.decrypt_legacy(&record);
                    let plaintext = match deadline {
                        Some(deadline) => REQUEST_DEADLINE.scope(deadline, decrypt).await?,
                        None => decrypt.await?,
                    };
                    Ok(Arc::new(plaintext))
                }
            })
            .await?;
        self.check_not_revoked()?;
        Ok(Zeroizing::new(plaintext.as_slice().to_vec()))
    }

    /// A record of the Go plugin's cluster-seed mode, opened with the seed (which Key Vault
    /// decrypts once, as any Go plugin record).
    async fn decrypt_seeded(
        &self,
        record: &legacy::SeededRecord,
    ) -> Result<Zeroizing<Vec<u8>>, EnvelopeError> {
        let misconfigured = |reason: &str| ProviderError::Misconfigured {
            reason: reason.to_owned(),
        };
        let seed_record = self.cluster_seed.clone().ok_or_else(|| {
            misconfigured(
                "a record of the Azure Go plugin's cluster-seed mode, and no \
                 azure.legacy_cluster_seed_file is configured to read it",
            )
        })?;
        let seed = self.decrypt_legacy(seed_record).await?;
        if seed.len() < legacy::MIN_CLUSTER_SEED_LEN {
            return Err(misconfigured(
                "azure.legacy_cluster_seed_file decrypts to fewer than 32 bytes: not a cluster seed",
            )
            .into());
        }
        legacy::open_seeded(&seed, record).ok_or(EnvelopeError::Authentication)
    }

    /// Counters of the cache of Go plugin records' plaintexts.
    pub fn legacy_cache_stats(&self) -> CacheStats {
        self.legacy.stats()
    }

    /// What Status reports: the active key_id, and "ok" unless the provider says the key is
    /// revoked. Makes no remote call.
    pub async fn health(&self) -> Health {
        let key_id = self.current_key().key_id().to_owned();
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
        match &self.read_active().slot {
            ActiveSlot::Revoked { reason, .. } => Some(reason.clone()),
            ActiveSlot::Serving(_) => None,
        }
    }

    fn check_not_revoked(&self) -> Result<(), EnvelopeError> {
        match self.revocation() {
            None => Ok(()),
            Some(reason) => Err(ProviderError::Revoked { reason }.into()),
        }
    }

    /// The key service said the key may not be used: refuse every call from now on, drop every
    /// cached KEK (each is zeroized when its last in-flight user finishes) and empty the active
    /// slot, so no Encrypt can seal until a refresh finds the key usable and wraps a fresh KEK.
    fn revoke(&self, reason: &str) {
        let newly = {
            let mut active = self.write_active();
            let key = active.slot.key().clone();
            let newly = matches!(active.slot, ActiveSlot::Serving(_));
            active.slot = ActiveSlot::Revoked {
                key,
                reason: reason.to_owned(),
            };
            active.generation += 1;
            self.revoked.store(true, Ordering::Release);
            self.cache.clear();
            self.legacy.clear();
            newly
        };
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
        let (generation, slot) = {
            let active = self.read_active();
            (active.generation, active.slot.clone())
        };
        match slot {
            ActiveSlot::Revoked { key: revoked, .. } => {
                // The key is usable again: a fresh KEK, then serve.
                let reason = if revoked == key {
                    RotationReason::Spent
                } else {
                    RotationReason::KeyChanged
                };
                if self.rotate(generation, key, reason).await? {
                    tracing::info!(provider = self.provider.kind(), "key usable again: serving");
                }
            }
            ActiveSlot::Serving(active) if active.key != key => {
                self.rotate(generation, key, RotationReason::KeyChanged)
                    .await?;
            }
            ActiveSlot::Serving(active) if active.nearly_spent(&self.policy) => {
                self.rotate(generation, key, RotationReason::Spent).await?;
            }
            ActiveSlot::Serving(_) => {}
        }
        Ok(self.current_key())
    }

    /// What the operations endpoints report. Makes no remote call.
    pub async fn snapshot(&self) -> EnvelopeSnapshot {
        let slot = self.read_active().slot.clone();
        EnvelopeSnapshot {
            key: slot.key().clone(),
            provider: self.provider.kind(),
            provider_health: self.provider.health().await,
            active_kek_encryptions: match &slot {
                ActiveSlot::Serving(active) => active.encryptions(),
                ActiveSlot::Revoked { .. } => 0,
            },
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
        self.read_active().slot.key().clone()
    }

    /// The provider's kind, for logs.
    pub fn provider_kind(&self) -> &'static str {
        self.provider.kind()
    }

    /// Cache counters.
    pub fn cache_stats(&self) -> CacheStats {
        self.cache.stats()
    }

    fn read_active(&self) -> std::sync::RwLockReadGuard<'_, Active> {
        self.active
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn write_active(&self) -> std::sync::RwLockWriteGuard<'_, Active> {
        self.active
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// A use of the active KEK for one Encrypt — the KEK and the next nonce of its own sequence,
    /// to seal with at once — replacing the KEK when it is spent. Refused while the slot is
    /// revoked: there is no KEK to seal with then, by construction.
    async fn active_for_encrypt(&self) -> Result<(Arc<ActiveKek>, Nonce), EnvelopeError> {
        // Each round either takes a use of the active KEK or replaces it once it is spent.
        // Callers that waited for a rotation may find the fresh KEK spent by the others already
        // (a small budget under concurrent Encrypts): they rotate again rather than fail. Every
        // round lets at least one Encrypt through, so the loop ends.
        for _ in 0..MAX_ROTATIONS_PER_ENCRYPT {
            let (generation, active) = {
                let active = self.read_active();
                match &active.slot {
                    ActiveSlot::Serving(kek) => (active.generation, Arc::clone(kek)),
                    ActiveSlot::Revoked { reason, .. } => {
                        return Err(ProviderError::Revoked {
                            reason: reason.clone(),
                        }
                        .into());
                    }
                }
            };
            if let Some(nonce) = active.next_nonce() {
                return Ok((active, nonce));
            }
            let key = active.key.clone();
            if let Err(error) = self.rotate(generation, key, RotationReason::Spent).await {
                if let EnvelopeError::Provider(ProviderError::Revoked { reason }) = &error {
                    self.revoke(reason);
                }
                return Err(error);
            }
        }
        Err(ProviderError::Misconfigured {
            reason: format!(
                "no fresh KEK had encryptions left after {MAX_ROTATIONS_PER_ENCRYPT} rotations; \
                 raise kek_max_encryptions"
            ),
        }
        .into())
    }

    /// Replaces the active slot of `generation` with a fresh KEK wrapped under `key`, unless the
    /// slot changed meanwhile: another caller rotated it while this one waited for the rotation
    /// lock, or a revocation (which never waits for that lock) landed while the wrap was in
    /// flight. Returns whether the fresh KEK was installed; a KEK that was not is dropped unused
    /// and never cached.
    async fn rotate(
        &self,
        generation: u64,
        key: KeyVersion,
        reason: RotationReason,
    ) -> Result<bool, EnvelopeError> {
        let _one_rotation_at_a_time = self.rotation.lock().await;
        if self.read_active().generation != generation {
            return Ok(false);
        }
        let (fresh, wrapped) = new_active_kek(self.provider.as_ref(), key, &self.policy).await?;
        let replaced = {
            let mut active = self.write_active();
            if active.generation != generation {
                return Ok(false);
            }
            self.cache
                .insert(fresh.key.version(), &wrapped, Arc::clone(&fresh.kek));
            active.generation += 1;
            self.revoked.store(false, Ordering::Release);
            std::mem::replace(&mut active.slot, ActiveSlot::Serving(Arc::clone(&fresh)))
        };
        tracing::info!(
            provider = self.provider.kind(),
            old_key_id = replaced.key().key_id(),
            new_key_id = fresh.key.key_id(),
            old_kek_encryptions = match &replaced {
                ActiveSlot::Serving(old) => old.encryptions(),
                ActiveSlot::Revoked { .. } => 0,
            },
            ?reason,
            "rotated the local KEK"
        );
        let counter = match reason {
            RotationReason::KeyChanged => &self.rotations_key_changed,
            RotationReason::Spent => &self.rotations_spent,
        };
        counter.fetch_add(1, Ordering::Relaxed);
        Ok(true)
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

/// A fresh KEK from the OS CSPRNG wrapped under `key`, with its wrapped form for the cache and
/// its own nonce sequence. Not yet active nor cached: the caller installs both at once.
async fn new_active_kek(
    provider: &dyn KeyProvider,
    key: KeyVersion,
    policy: &RotationPolicy,
) -> Result<(Arc<ActiveKek>, Vec<u8>), EnvelopeError> {
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
    let active = ActiveKek::new(key, Arc::new(Kek::new(secret)), &wrapped, policy)?;
    Ok((Arc::new(active), wrapped))
}
