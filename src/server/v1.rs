//! `/v1beta1.KeyManagementService`: the KMS v1 API on the same socket, for clusters that have
//! not moved to v2. v1 has no annotations and no key_id, so each ciphertext is a self-contained
//! blob carrying its wrapped KEK (see envelope::format).

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::deadline;
use super::errors::to_status;
use crate::envelope::Envelope;
use crate::ops::metrics::{Metrics, RequestTimer};
use crate::proto::v1beta1::key_management_service_server::KeyManagementService;
use crate::proto::v1beta1::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, VersionRequest,
    VersionResponse,
};

/// The API version kube-apiserver requires from Version.
pub const API_VERSION: &str = "v1beta1";
/// The runtime name Version reports.
pub const RUNTIME_NAME: &str = "kube-kms";

/// The KMS v1 service over an [`Envelope`].
pub struct KmsV1 {
    envelope: Arc<Envelope>,
    metrics: Arc<Metrics>,
}

impl KmsV1 {
    /// A v1 service that seals and opens with `envelope` and counts requests in `metrics`.
    pub fn new(envelope: Arc<Envelope>, metrics: Arc<Metrics>) -> Self {
        Self { envelope, metrics }
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsV1 {
    async fn version(
        &self,
        _request: Request<VersionRequest>,
    ) -> Result<Response<VersionResponse>, Status> {
        let timer = RequestTimer::start(&self.metrics, "v1beta1.Version");
        timer.finish(Ok(Response::new(VersionResponse {
            version: API_VERSION.to_owned(),
            runtime_name: RUNTIME_NAME.to_owned(),
            runtime_version: env!("CARGO_PKG_VERSION").to_owned(),
        })))
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let timer = RequestTimer::start(&self.metrics, "v1beta1.Encrypt");
        let deadline = deadline::of(&request);
        // The DEK kube-apiserver sent is wiped when the call ends.
        let plain = Zeroizing::new(request.into_inner().plain);
        let result = deadline::within(deadline, self.envelope.encrypt_v1(&plain)).await;
        timer.finish(match result {
            Ok(cipher) => Ok(Response::new(EncryptResponse { cipher })),
            Err(error) => {
                tracing::debug!(%error, "v1 encrypt refused");
                Err(to_status(&error))
            }
        })
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let timer = RequestTimer::start(&self.metrics, "v1beta1.Decrypt");
        let deadline = deadline::of(&request);
        let request = request.into_inner();
        timer.finish(
            match deadline::within(deadline, self.envelope.decrypt_v1(&request.cipher)).await {
                Ok(plain) => Ok(Response::new(DecryptResponse {
                    plain: super::v2::into_response(plain),
                })),
                Err(error) => {
                    tracing::debug!(%error, "v1 decrypt refused");
                    Err(to_status(&error))
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroUsize;
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::time::Duration;

    use async_trait::async_trait;
    use tokio::time::Instant;

    use super::*;
    use crate::crypto::SecretKey;
    use crate::envelope::kek::RotationPolicy;
    use crate::provider::guard::{GuardPolicy, Guarded};
    use crate::provider::{KeyProvider, KeyVersion, ProviderError, ProviderHealth};

    /// Wraps the first KEK, then never answers a wrap again.
    struct WrapsOnce {
        wraps: AtomicU32,
    }

    #[async_trait]
    impl KeyProvider for WrapsOnce {
        fn kind(&self) -> &'static str {
            "wraps-once"
        }
        async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
            KeyVersion::new("key-id", "1")
        }
        async fn current_key(&self) -> Option<KeyVersion> {
            KeyVersion::new("key-id", "1").ok()
        }
        async fn wrap(&self, _: &KeyVersion, _: &SecretKey) -> Result<Vec<u8>, ProviderError> {
            if self.wraps.fetch_add(1, Ordering::SeqCst) > 0 {
                std::future::pending::<()>().await;
            }
            Ok(vec![1; 40])
        }
        async fn unwrap(&self, version: &str, _: &[u8]) -> Result<SecretKey, ProviderError> {
            Err(ProviderError::UnknownKeyVersion {
                version: version.into(),
            })
        }
        async fn health(&self) -> ProviderHealth {
            ProviderHealth::Ok
        }
    }

    /// Regression: v1 Encrypt did not pass the caller's grpc-timeout to the provider guard, so a
    /// wrap stuck on the key service ran to the guard's own cap instead of ending with the call.
    #[tokio::test(start_paused = true)]
    async fn an_encrypt_whose_wrap_hangs_ends_at_its_grpc_timeout() {
        let provider = Guarded::new(
            Arc::new(WrapsOnce {
                wraps: AtomicU32::new(0),
            }),
            GuardPolicy::DEFAULT,
        );
        // One encryption per KEK: the second Encrypt has to wrap a fresh one.
        let policy = RotationPolicy {
            max_encryptions: 1,
            ..RotationPolicy::DEFAULT
        };
        let envelope = Envelope::start(Arc::new(provider), policy, NonZeroUsize::MIN)
            .await
            .unwrap();
        let service = KmsV1::new(Arc::new(envelope), Arc::new(Metrics::new()));
        let request = || {
            let mut request = Request::new(EncryptRequest {
                version: API_VERSION.into(),
                plain: b"secret".to_vec(),
            });
            request
                .metadata_mut()
                .insert("grpc-timeout", "300m".parse().unwrap());
            request
        };
        service.encrypt(request()).await.unwrap();

        let started = Instant::now();
        let refused = service.encrypt(request()).await.unwrap_err();
        assert_eq!(started.elapsed(), Duration::from_millis(300));
        assert_eq!(refused.code(), tonic::Code::Unavailable, "{refused:?}");
    }
}
