//! The configured provider plus the ones configured before it, so that a configuration reload
//! that moves to another key (or vault, or token) keeps decrypting what the previous key wrapped
//! without a restart and without a second plugin process.
//!
//! New KEKs are always wrapped by the current provider. An unwrap tries the current provider,
//! then earlier ones, only when the current one does not know the version or cannot unwrap the
//! bytes; each provider still resolves versions within its own configuration only.
//!
//! Earlier providers are kept by the key they unwrap with ([`KeyIdentity`]): a reload that
//! changes anything but the key (a timeout, a credential) replaces the provider for that key
//! instead of adding one more to try, and at most [`MAX_DECRYPT_ONLY_PROVIDERS`] earlier keys are
//! kept, the oldest dropped with a warning. An unwrap every provider refused authoritatively
//! (these bytes are not this key's KEK, the key has no such version) is remembered for
//! [`REFUSAL_TTL`], so that a bad annotation read again and again costs remote calls once per
//! TTL rather than once per provider per read; a transient fault is never remembered. The chain
//! never holds unwrapped key bytes, and remembers refusals by a hash of what was refused.

use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use lru::LruCache;
use sha2::{Digest, Sha256};
use tokio::time::Instant;

use super::{
    KeyIdentity, KeyProvider, KeyVersion, LegacyCiphertext, ProviderError, ProviderHealth,
};
use crate::crypto::SecretKey;
use zeroize::Zeroizing;

/// The most earlier keys kept to decrypt after reloads; the oldest is dropped beyond this.
pub const MAX_DECRYPT_ONLY_PROVIDERS: usize = 8;
/// How long an authoritative unwrap refusal is remembered.
pub const REFUSAL_TTL: Duration = Duration::from_secs(30);
/// How many distinct refusals are remembered at once (least recently used dropped first).
const MAX_REMEMBERED_REFUSALS: NonZeroUsize = NonZeroUsize::new(1024).expect("non-zero");

/// The current provider and its predecessors (newest first), decrypt-only.
pub struct Chain {
    providers: RwLock<Arc<Vec<Arc<dyn KeyProvider>>>>,
    refusals: Mutex<Refusals>,
}

/// Unwraps refused by every provider, by a hash of (version, wrapped KEK).
struct Refusals {
    entries: LruCache<[u8; 32], (Instant, ProviderError)>,
    /// Bumped whenever the providers or their keys change: a refusal found before is stale.
    generation: u64,
}

impl Chain {
    /// A chain with `current` alone.
    pub fn new(current: Arc<dyn KeyProvider>) -> Self {
        Self {
            providers: RwLock::new(Arc::new(vec![current])),
            refusals: Mutex::new(Refusals {
                entries: LruCache::new(MAX_REMEMBERED_REFUSALS),
                generation: 0,
            }),
        }
    }

    /// Makes `next` the provider that wraps new KEKs; the current one becomes decrypt-only,
    /// unless it unwraps with the same key as `next` (then `next` takes its place). Beyond
    /// [`MAX_DECRYPT_ONLY_PROVIDERS`] earlier keys, the oldest is dropped.
    pub fn replace(&self, next: Arc<dyn KeyProvider>) {
        let identity = next.identity();
        let mut providers = self
            .providers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut list = Vec::with_capacity(providers.len() + 1);
        list.push(next);
        for earlier in providers.iter() {
            if identity.is_some() && earlier.identity() == identity {
                continue;
            }
            list.push(Arc::clone(earlier));
        }
        while list.len() > MAX_DECRYPT_ONLY_PROVIDERS + 1 {
            let Some(dropped) = list.pop() else { break };
            tracing::warn!(
                provider = dropped.kind(),
                key = %dropped
                    .identity()
                    .map_or_else(|| "unnamed".to_owned(), |identity| identity.to_string()),
                max = MAX_DECRYPT_ONLY_PROVIDERS,
                "too many earlier keys kept to decrypt; the oldest is dropped and what only it \
                 wrapped no longer decrypts"
            );
        }
        *providers = Arc::new(list);
        drop(providers);
        self.forget_refusals();
    }

    /// How many providers are kept for decryption, the current one included.
    pub fn len(&self) -> usize {
        self.list().len()
    }

    /// Whether the chain is empty (never: it always has a current provider).
    pub fn is_empty(&self) -> bool {
        self.list().is_empty()
    }

    fn list(&self) -> Arc<Vec<Arc<dyn KeyProvider>>> {
        self.providers
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .clone()
    }

    fn current(&self) -> Arc<dyn KeyProvider> {
        // The list always holds at least the provider it was created with.
        Arc::clone(&self.list()[0])
    }

    fn lock_refusals(&self) -> std::sync::MutexGuard<'_, Refusals> {
        self.refusals
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget_refusals(&self) {
        let mut refusals = self.lock_refusals();
        refusals.entries.clear();
        refusals.generation += 1;
    }

    /// The refusal remembered for (`version`, `wrapped`), if it has not expired.
    fn remembered(&self, fingerprint: &[u8; 32]) -> Option<ProviderError> {
        let mut refusals = self.lock_refusals();
        match refusals.entries.get(fingerprint) {
            Some((until, error)) if Instant::now() < *until => Some(error.clone()),
            Some(_) => {
                refusals.entries.pop(fingerprint);
                None
            }
            None => None,
        }
    }
}

/// What a refusal is remembered by: a hash of the version and the wrapped KEK, each
/// length-prefixed, so that the chain keeps no wrapped-key bytes.
fn fingerprint(version: &str, wrapped: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for part in [version.as_bytes(), wrapped] {
        hash.update((part.len() as u64).to_be_bytes());
        hash.update(part);
    }
    hash.finalize().into()
}

#[async_trait]
impl KeyProvider for Chain {
    fn kind(&self) -> &'static str {
        self.current().kind()
    }

    fn identity(&self) -> Option<KeyIdentity> {
        self.current().identity()
    }

    fn refresh_budget(&self) -> Option<Duration> {
        self.current().refresh_budget()
    }

    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        let current = self.current();
        let before = current.current_key().await;
        let result = current.refresh().await;
        if let Ok(key) = &result
            && before.as_ref() != Some(key)
        {
            // A new key version may unwrap what the previous state could not.
            self.forget_refusals();
        }
        result
    }

    async fn current_key(&self) -> Option<KeyVersion> {
        self.current().current_key().await
    }

    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        self.current().wrap(key, kek).await
    }

    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        self.check_unwrap(version, wrapped)?;
        let generation = self.lock_refusals().generation;
        let mut first_error = None;
        for provider in self.list().iter() {
            match provider.unwrap(version, wrapped).await {
                Ok(kek) => return Ok(kek),
                Err(
                    error @ (ProviderError::UnknownKeyVersion { .. }
                    | ProviderError::UnwrapFailed { .. }),
                ) => {
                    first_error.get_or_insert(error);
                }
                Err(error) => return Err(error),
            }
        }
        let error = first_error.unwrap_or(ProviderError::UnknownKeyVersion {
            version: version.into(),
        });
        // Every provider refused for good. Unless the chain changed meanwhile (a provider
        // that was not asked), remember it.
        let mut refusals = self.lock_refusals();
        if refusals.generation == generation {
            refusals.entries.put(
                fingerprint(version, wrapped),
                (Instant::now() + REFUSAL_TTL, error.clone()),
            );
        }
        Err(error)
    }

    async fn decrypt_legacy(
        &self,
        record: &LegacyCiphertext,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.check_legacy(record)?;
        let mut first_error = None;
        for provider in self.list().iter() {
            if let Err(error) = provider.check_legacy(record) {
                first_error.get_or_insert(error);
                continue;
            }
            match provider.decrypt_legacy(record).await {
                Ok(plaintext) => return Ok(plaintext),
                Err(
                    error @ (ProviderError::UnknownKeyVersion { .. }
                    | ProviderError::UnwrapFailed { .. }),
                ) => {
                    first_error.get_or_insert(error);
                }
                Err(error) => return Err(error),
            }
        }
        Err(
            first_error.unwrap_or_else(|| ProviderError::UnknownKeyVersion {
                version: record.key_id.clone().unwrap_or_default(),
            }),
        )
    }

    fn check_legacy(&self, record: &LegacyCiphertext) -> Result<(), ProviderError> {
        let mut first_error = None;
        for provider in self.list().iter() {
            match provider.check_legacy(record) {
                Ok(()) => return Ok(()),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(
            first_error.unwrap_or_else(|| ProviderError::UnknownKeyVersion {
                version: record.key_id.clone().unwrap_or_default(),
            }),
        )
    }

    fn check_unwrap(&self, version: &str, wrapped: &[u8]) -> Result<(), ProviderError> {
        if let Some(error) = self.remembered(&fingerprint(version, wrapped)) {
            return Err(error);
        }
        let mut first_error = None;
        for provider in self.list().iter() {
            match provider.check_unwrap(version, wrapped) {
                Ok(()) => return Ok(()),
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        Err(first_error.unwrap_or(ProviderError::UnknownKeyVersion {
            version: version.into(),
        }))
    }

    async fn health(&self) -> ProviderHealth {
        self.current().health().await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use super::*;
    use crate::provider::azure::AzureKeyVaultProvider;
    use crate::provider::azure::key_id::KeyRef;
    use crate::provider::local::LocalKeyRing;
    use azure_access::auth::{AuthMode, AzureEnv};

    /// Counts the unwraps that reach `inner`; when `down`, answers them as an outage would.
    struct Counting {
        inner: Arc<dyn KeyProvider>,
        unwraps: AtomicU32,
        down: bool,
    }

    impl Counting {
        fn new(inner: Arc<dyn KeyProvider>, down: bool) -> Arc<Self> {
            Arc::new(Self {
                inner,
                unwraps: AtomicU32::new(0),
                down,
            })
        }
        fn unwraps(&self) -> u32 {
            self.unwraps.load(Ordering::SeqCst)
        }
    }

    #[async_trait]
    impl KeyProvider for Counting {
        fn kind(&self) -> &'static str {
            "counting"
        }
        async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
            self.inner.refresh().await
        }
        async fn current_key(&self) -> Option<KeyVersion> {
            self.inner.current_key().await
        }
        async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
            self.inner.wrap(key, kek).await
        }
        async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
            self.unwraps.fetch_add(1, Ordering::SeqCst);
            if self.down {
                return Err(ProviderError::Unavailable {
                    operation: "unwrap".into(),
                    source: Arc::new(std::io::Error::other("connection refused")),
                });
            }
            self.inner.unwrap(version, wrapped).await
        }
        async fn health(&self) -> ProviderHealth {
            ProviderHealth::Ok
        }
    }

    fn ring(dir: &std::path::Path) -> Arc<dyn KeyProvider> {
        Arc::new(LocalKeyRing::open_or_create(dir).unwrap())
    }

    /// An Azure provider for `key_name` with `deadline_ms` as its call deadline; makes no call.
    fn azure(key_name: &str, deadline_ms: u64) -> Arc<dyn KeyProvider> {
        let key = KeyRef::new("https://kv.vault.azure.net", key_name).unwrap();
        let mut config = crate::provider::azure::AzureConfig::new(key);
        config.auth.mode = AuthMode::ManagedIdentity;
        config.retry.deadline = Duration::from_millis(deadline_ms);
        Arc::new(AzureKeyVaultProvider::new_with_env(config, &AzureEnv::from_pairs(&[])).unwrap())
    }

    /// Regression: every reload whose provider settings differed at all appended a provider,
    /// so a timeout tweaked N times left N copies of the same vault and key, each asked again
    /// for every wrapped KEK none of them could unwrap.
    #[tokio::test]
    async fn reloads_that_only_tweak_a_timeout_keep_one_provider_per_key() {
        let chain = Chain::new(azure("kek", 2000));
        for deadline_ms in 1000..1005 {
            chain.replace(azure("kek", deadline_ms));
        }
        assert_eq!(chain.len(), 1);
        chain.replace(azure("other", 2000));
        assert_eq!(chain.len(), 2);
        // Back to the first key: it replaces its earlier provider, the other key stays.
        chain.replace(azure("kek", 900));
        assert_eq!(chain.len(), 2);
        let key = KeyRef::new("https://kv.vault.azure.net", "kek").unwrap();
        assert_eq!(chain.identity(), Some(KeyIdentity::Azure(key)));

        let temp = tempfile::tempdir().unwrap();
        let chain = Chain::new(ring(&temp.path().join("a")));
        for _ in 0..3 {
            chain.replace(ring(&temp.path().join("a")));
        }
        assert_eq!(chain.len(), 1);
    }

    #[tokio::test]
    async fn at_most_the_documented_number_of_earlier_keys_is_kept_the_oldest_dropped() {
        let temp = tempfile::tempdir().unwrap();
        let kek = SecretKey::generate().unwrap();
        let chain = Chain::new(ring(&temp.path().join("0")));
        let mut wrapped = vec![
            chain
                .wrap(&chain.refresh().await.unwrap(), &kek)
                .await
                .unwrap(),
        ];
        for n in 1..=MAX_DECRYPT_ONLY_PROVIDERS + 1 {
            chain.replace(ring(&temp.path().join(n.to_string())));
            let key = chain.refresh().await.unwrap();
            wrapped.push(chain.wrap(&key, &kek).await.unwrap());
        }
        assert_eq!(chain.len(), MAX_DECRYPT_ONLY_PROVIDERS + 1);
        assert!(
            chain.unwrap("1", &wrapped[0]).await.is_err(),
            "the oldest is gone"
        );
        for kept in &wrapped[1..] {
            assert_eq!(
                chain.unwrap("1", kept).await.unwrap().expose(),
                kek.expose()
            );
        }
    }

    /// Regression: a wrapped KEK no configured key can unwrap cost a remote unwrap per provider
    /// on every read, however often the same bad annotation came back.
    #[tokio::test(start_paused = true)]
    async fn a_refused_unwrap_costs_remote_calls_once_until_its_ttl_ends() {
        let temp = tempfile::tempdir().unwrap();
        let old = Counting::new(ring(&temp.path().join("old")), false);
        let new = Counting::new(ring(&temp.path().join("new")), false);
        let chain = Chain::new(old.clone());
        chain.replace(new.clone());
        let bad = [7u8; 60];
        for _ in 0..2 {
            assert!(matches!(
                chain.unwrap("1", &bad).await,
                Err(ProviderError::UnwrapFailed { .. })
            ));
        }
        assert_eq!((new.unwraps(), old.unwraps()), (1, 1));
        assert!(chain.check_unwrap("1", &bad).is_err(), "refused locally");

        tokio::time::advance(REFUSAL_TTL).await;
        assert!(chain.unwrap("1", &bad).await.is_err());
        assert_eq!((new.unwraps(), old.unwraps()), (2, 2));
        // A reload forgets every refusal: the new provider may unwrap it.
        chain.replace(Counting::new(ring(&temp.path().join("newer")), false));
        assert!(chain.check_unwrap("1", &bad).is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn transient_faults_are_never_remembered() {
        let temp = tempfile::tempdir().unwrap();
        let down = Counting::new(ring(&temp.path().join("down")), true);
        let chain = Chain::new(down.clone());
        for _ in 0..2 {
            assert!(matches!(
                chain.unwrap("1", &[7u8; 60]).await,
                Err(ProviderError::Unavailable { .. })
            ));
        }
        assert_eq!(down.unwraps(), 2);
    }

    #[tokio::test]
    async fn after_a_replacement_new_kek_use_the_new_key_and_old_ones_still_unwrap() {
        let temp = tempfile::tempdir().unwrap();
        let old: Arc<dyn KeyProvider> =
            Arc::new(LocalKeyRing::open_or_create(&temp.path().join("old")).unwrap());
        let new: Arc<dyn KeyProvider> =
            Arc::new(LocalKeyRing::open_or_create(&temp.path().join("new")).unwrap());
        let chain = Chain::new(Arc::clone(&old));
        let old_key = chain.refresh().await.unwrap();
        let kek = SecretKey::generate().unwrap();
        let wrapped_by_old = chain.wrap(&old_key, &kek).await.unwrap();

        chain.replace(Arc::clone(&new));
        assert_eq!(chain.len(), 2);
        let new_key = chain.refresh().await.unwrap();
        assert_ne!(new_key.key_id(), old_key.key_id());
        let wrapped_by_new = chain.wrap(&new_key, &kek).await.unwrap();
        assert!(
            old.unwrap("1", &wrapped_by_new).await.is_err(),
            "the new key wraps"
        );
        for wrapped in [&wrapped_by_old, &wrapped_by_new] {
            assert_eq!(
                chain.unwrap("1", wrapped).await.unwrap().expose(),
                kek.expose()
            );
        }
        assert!(matches!(
            chain.unwrap("1", b"not a wrapped key").await,
            Err(ProviderError::UnwrapFailed { .. })
        ));
        assert!(matches!(
            chain.unwrap("9", &wrapped_by_old).await,
            Err(ProviderError::UnknownKeyVersion { .. })
        ));
    }
}
