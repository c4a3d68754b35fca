//! A [`KeyProvider`] wrapper that times every call and reports it to a [`CallRecorder`], so
//! every provider — local, Azure, PKCS#11 — reports remote calls the same way.
//!
//! The recorder is a trait so that the provider layer never depends on the metrics that
//! implement it (`ops::metrics::Metrics`, which reads the envelope, which uses providers). It
//! records only the operation, the outcome and the time: never a key version or wrapped bytes.
//!
//! A call whose future is dropped before it ends — cut off at its deadline by the guard
//! outside, or abandoned with its gRPC request — may already have reached the key service, so
//! it is recorded too, as `Unavailable`: what the guard answers for it.

use std::future::Future;
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

    /// Runs `call` as `operation`, recording its outcome, or `Unavailable` if it is dropped first.
    async fn recorded<T>(
        &self,
        operation: &'static str,
        call: impl Future<Output = Result<T, ProviderError>>,
    ) -> Result<T, ProviderError> {
        let mut pending = PendingCall {
            recorder: &*self.recorder,
            operation,
            started: Instant::now(),
            ended: false,
        };
        let result = call.await;
        pending.end(result.as_ref().map(|_| ()));
        result
    }
}

/// One call on its way; dropped before [`PendingCall::end`], it records itself as abandoned.
struct PendingCall<'a> {
    recorder: &'a dyn CallRecorder,
    operation: &'static str,
    started: Instant,
    ended: bool,
}

impl PendingCall<'_> {
    fn end(&mut self, result: Result<(), &ProviderError>) {
        self.ended = true;
        self.recorder
            .record_call(self.operation, result, self.started.elapsed());
    }
}

impl Drop for PendingCall<'_> {
    fn drop(&mut self) {
        if !self.ended {
            let abandoned = ProviderError::Unavailable {
                operation: self.operation.to_owned(),
                source: Arc::new(std::io::Error::new(
                    std::io::ErrorKind::TimedOut,
                    "the call was abandoned before the key service answered",
                )),
            };
            self.end(Err(&abandoned));
        }
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
        self.recorded("refresh", self.inner.refresh()).await
    }

    async fn current_key(&self) -> Option<KeyVersion> {
        self.inner.current_key().await
    }

    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        self.recorded("wrap", self.inner.wrap(key, kek)).await
    }

    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        self.recorded("unwrap", self.inner.unwrap(version, wrapped))
            .await
    }

    async fn decrypt_legacy(
        &self,
        record: &LegacyCiphertext,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.recorded("decrypt", self.inner.decrypt_legacy(record))
            .await
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A service that answers every unwrap at once, or never.
    struct Service {
        hangs: bool,
    }

    #[async_trait]
    impl KeyProvider for Service {
        fn kind(&self) -> &'static str {
            "service"
        }
        async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
            unreachable!("not used")
        }
        async fn current_key(&self) -> Option<KeyVersion> {
            None
        }
        async fn wrap(&self, _: &KeyVersion, _: &SecretKey) -> Result<Vec<u8>, ProviderError> {
            unreachable!("not used")
        }
        async fn unwrap(&self, _: &str, _: &[u8]) -> Result<SecretKey, ProviderError> {
            if self.hangs {
                std::future::pending::<()>().await;
            }
            Ok(SecretKey::from_slice(&[7; 32]).unwrap())
        }
        async fn health(&self) -> ProviderHealth {
            ProviderHealth::Ok
        }
    }

    /// Every call recorded, as (operation, error kind or "ok").
    #[derive(Default)]
    struct Recorded(std::sync::Mutex<Vec<(&'static str, String)>>);

    impl CallRecorder for Recorded {
        fn record_call(
            &self,
            operation: &'static str,
            result: Result<(), &ProviderError>,
            _: Duration,
        ) {
            let outcome = match result {
                Ok(()) => "ok".to_owned(),
                Err(ProviderError::Unavailable { .. }) => "unavailable".to_owned(),
                Err(other) => format!("{other:?}"),
            };
            self.0.lock().unwrap().push((operation, outcome));
        }
    }

    fn instrumented(hangs: bool) -> (Instrumented, Arc<Recorded>) {
        let recorder = Arc::new(Recorded::default());
        let provider = Instrumented::new(Arc::new(Service { hangs }), Arc::clone(&recorder));
        (provider, recorder)
    }

    #[tokio::test]
    async fn a_call_that_ends_is_recorded_once_with_its_outcome() {
        let (provider, recorder) = instrumented(false);
        provider.unwrap("1", b"w").await.expect("unwrap");
        assert_eq!(*recorder.0.lock().unwrap(), [("unwrap", "ok".to_owned())]);
    }

    /// Regression: the guard outside cuts a call off at its deadline by dropping it, and such
    /// calls — every one of them during a slow outage — never reached the metrics.
    #[tokio::test(start_paused = true)]
    async fn a_call_cut_off_at_its_deadline_is_recorded_as_unavailable() {
        let (provider, recorder) = instrumented(true);
        let cut = tokio::time::timeout(Duration::from_secs(1), provider.unwrap("1", b"w")).await;
        assert!(cut.is_err(), "the service never answers");
        assert_eq!(
            *recorder.0.lock().unwrap(),
            [("unwrap", "unavailable".to_owned())]
        );
    }
}
