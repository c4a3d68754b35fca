//! `/v2.KeyManagementService`: Status, Encrypt and Decrypt as kube-apiserver calls them.
//!
//! Each handler validates nothing itself; the envelope owns the format and its limits. Logs
//! carry the request uid and key_id at debug level, never plaintext or annotation bytes.

use std::sync::Arc;

use tonic::{Request, Response, Status};

use super::errors::to_status;
use crate::envelope::Envelope;
use crate::proto::v2::key_management_service_server::KeyManagementService;
use crate::proto::v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};

/// The API version Status reports; kube-apiserver requires it never to change.
pub const API_VERSION: &str = "v2";

/// The KMS v2 service over an [`Envelope`].
pub struct KmsV2 {
    envelope: Arc<Envelope>,
}

impl KmsV2 {
    /// A v2 service that seals and opens with `envelope`.
    pub fn new(envelope: Arc<Envelope>) -> Self {
        Self { envelope }
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsV2 {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let health = self.envelope.health().await;
        Ok(Response::new(StatusResponse {
            version: API_VERSION.to_owned(),
            healthz: health.healthz,
            key_id: health.key_id,
        }))
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let request = request.into_inner();
        match self.envelope.encrypt(&request.plaintext).await {
            Ok(sealed) => {
                tracing::debug!(uid = %request.uid, key_id = %sealed.key_id, "encrypt");
                Ok(Response::new(EncryptResponse {
                    ciphertext: sealed.ciphertext,
                    key_id: sealed.key_id,
                    annotations: sealed.annotations,
                }))
            }
            Err(error) => {
                tracing::debug!(uid = %request.uid, %error, "encrypt refused");
                Err(to_status(&error))
            }
        }
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let request = request.into_inner();
        let key_id = request.key_id.get(..64).unwrap_or(&request.key_id);
        match self
            .envelope
            .decrypt(&request.ciphertext, &request.key_id, &request.annotations)
            .await
        {
            Ok(plaintext) => {
                tracing::debug!(uid = %request.uid, key_id, "decrypt");
                Ok(Response::new(DecryptResponse {
                    plaintext: plaintext.to_vec(),
                }))
            }
            Err(error) => {
                tracing::debug!(uid = %request.uid, key_id, %error, "decrypt refused");
                Err(to_status(&error))
            }
        }
    }
}
