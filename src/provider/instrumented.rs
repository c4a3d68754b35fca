//! A [`KeyProvider`] wrapper that times and counts every call into the plugin's metrics, so
//! every provider — local, Azure, PKCS#11 — reports remote calls the same way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{KeyIdentity, KeyProvider, KeyVersion, ProviderError, ProviderHealth};
use crate::crypto::SecretKey;
use crate::ops::metrics::Metrics;

/// Wraps `inner`, recording each refresh, wrap and unwrap in `metrics`.
pub struct Instrumented {
    inner: Arc<dyn KeyProvider>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    /// Instruments `inner`.
    pub fn new(inner: Arc<dyn KeyProvider>, metrics: Arc<Metrics>) -> Self {
        Self { inner, metrics }
    }

    fn record<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: &Result<T, ProviderError>,
    ) {
        self.metrics
            .record_remote(operation, result.as_ref().map(|_| ()), started.elapsed());
    }
}

#[async_trait]
impl KeyProvider for Instrumented {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    fn identity(&self) -> Option<KeyIdentity> {
        self.inner.identity()
    }

    fn refresh_budget(&self) -> Option<Duration> {
        self.inner.refresh_budget()
    }

    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        let started = Instant::now();
        let result = self.inner.refresh().await;
        self.record("refresh", started, &result);
        result
    }

    async fn current_key(&self) -> Option<KeyVersion> {
        self.inner.current_key().await
    }

    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        let started = Instant::now();
        let result = self.inner.wrap(key, kek).await;
        self.record("wrap", started, &result);
        result
    }

    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        let started = Instant::now();
        let result = self.inner.unwrap(version, wrapped).await;
        self.record("unwrap", started, &result);
        result
    }

    fn check_unwrap(&self, version: &str, wrapped: &[u8]) -> Result<(), ProviderError> {
        // A local refusal is no remote call: not counted.
        self.inner.check_unwrap(version, wrapped)
    }

    async fn health(&self) -> ProviderHealth {
        self.inner.health().await
    }
}
