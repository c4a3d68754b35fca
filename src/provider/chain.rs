//! The configured provider plus the ones configured before it, so that a configuration reload
//! that moves to another key (or vault, or token) keeps decrypting what the previous key wrapped
//! without a restart and without a second plugin process.
//!
//! New KEKs are always wrapped by the current provider. An unwrap tries the current provider,
//! then earlier ones, only when the current one does not know the version or cannot unwrap the
//! bytes; each provider still resolves versions within its own configuration only.

use std::sync::{Arc, RwLock};

use async_trait::async_trait;

use super::{KeyProvider, KeyVersion, ProviderError, ProviderHealth};
use crate::crypto::SecretKey;

/// The current provider and its predecessors (newest first), decrypt-only.
pub struct Chain {
    providers: RwLock<Arc<Vec<Arc<dyn KeyProvider>>>>,
}

impl Chain {
    /// A chain with `current` alone.
    pub fn new(current: Arc<dyn KeyProvider>) -> Self {
        Self {
            providers: RwLock::new(Arc::new(vec![current])),
        }
    }

    /// Makes `next` the provider that wraps new KEKs; the current one becomes decrypt-only.
    pub fn replace(&self, next: Arc<dyn KeyProvider>) {
        let mut providers = self
            .providers
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        let mut list = Vec::with_capacity(providers.len() + 1);
        list.push(next);
        list.extend(providers.iter().cloned());
        *providers = Arc::new(list);
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
}

#[async_trait]
impl KeyProvider for Chain {
    fn kind(&self) -> &'static str {
        self.current().kind()
    }

    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        self.current().refresh().await
    }

    async fn current_key(&self) -> Option<KeyVersion> {
        self.current().current_key().await
    }

    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        self.current().wrap(key, kek).await
    }

    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
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
    use super::*;
    use crate::provider::local::LocalKeyRing;

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
