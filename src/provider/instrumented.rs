//! A [`KeyProvider`] wrapper that times every call and reports it to a [`CallRecorder`], so
//! every provider — local, Azure, PKCS#11 — reports remote calls the same way.
//!
//! The recorder is a trait so that the provider layer never depends on the metrics that
//! implement it (`ops::metrics::Metrics`, which reads the envelope, which uses providers). It
//! records only the operation, the outcome and the time: never a key version or wrapped bytes.

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::{
    KeyIdentity, KeyProvider, KeyVersion, LegacyCiphertext, ProviderError, ProviderHealth,
};
use crate::crypto::SecretKey;
use zeroize::Zeroizing;

/// Where [`Instrumented`] reports each call to the provider it wraps.
pub trait CallRecorder: Send + Sync {
    /// Records one call: `operation` is "refresh", "wrap", "unwrap" or "decrypt", `result` its outcome
    /// and `elapsed` how long it took.
    fn record_call(
        &self,
        operation: &'static str,
        result: Result<(), &ProviderError>,
        elapsed: Duration,
    );
}

/// Wraps `inner`, reporting each refresh, wrap and unwrap to `recorder`.
pub struct Instrumented {
    inner: Arc<dyn KeyProvider>,
    recorder: Arc<dyn CallRecorder>,
}

impl Instrumented {
    /// Instruments `inner`; the plugin passes its `ops::metrics::Metrics` as `recorder`.
    pub fn new(inner: Arc<dyn KeyProvider>, recorder: Arc<impl CallRecorder + 'static>) -> Self {
        Self { inner, recorder }
    }

    fn record<T>(
        &self,
        operation: &'static str,
        started: Instant,
        result: &Result<T, ProviderError>,
    ) {
        self.recorder
            .record_call(operation, result.as_ref().map(|_| ()), started.elapsed());
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

    async fn decrypt_legacy(
        &self,
        record: &LegacyCiphertext,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        let started = Instant::now();
        let result = self.inner.decrypt_legacy(record).await;
        self.record("decrypt", started, &result);
        result
    }

    fn check_legacy(&self, record: &LegacyCiphertext) -> Result<(), ProviderError> {
        self.inner.check_legacy(record)
    }

    fn check_unwrap(&self, version: &str, wrapped: &[u8]) -> Result<(), ProviderError> {
        // A local refusal is no remote call: not counted.
        self.inner.check_unwrap(version, wrapped)
    }

    async fn health(&self) -> ProviderHealth {
        self.inner.health().await
    }
}
