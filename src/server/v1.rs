//! `/v1beta1.KeyManagementService`: the KMS v1 API on the same socket, for clusters that have
//! not moved to v2. v1 has no annotations and no key_id, so each ciphertext is a self-contained
//! blob carrying its wrapped KEK (see envelope::format).

use std::sync::Arc;

use tonic::{Request, Response, Status};

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
        let request = request.into_inner();
        timer.finish(match self.envelope.encrypt_v1(&request.plain).await {
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
                    plain: plain.to_vec(),
                })),
                Err(error) => {
                    tracing::debug!(%error, "v1 decrypt refused");
                    Err(to_status(&error))
                }
            },
        )
    }
}
