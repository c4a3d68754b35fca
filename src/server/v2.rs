//! `/v2.KeyManagementService`: Status, Encrypt and Decrypt as kube-apiserver calls them.
//!
//! Each handler validates nothing itself; the envelope owns the format and its limits. Logs
//! carry the request uid and key_id at debug level, never plaintext or annotation bytes.

use std::sync::Arc;

use tonic::{Request, Response, Status};
use zeroize::Zeroizing;

use super::deadline;
use super::errors::to_status;
use crate::envelope::Envelope;
use crate::ops::metrics::{Metrics, RequestTimer};
use crate::proto::v2::key_management_service_server::KeyManagementService;
use crate::proto::v2::{
    DecryptRequest, DecryptResponse, EncryptRequest, EncryptResponse, StatusRequest, StatusResponse,
};

/// The API version Status reports; kube-apiserver requires it never to change.
pub const API_VERSION: &str = "v2";

/// The KMS v2 service over an [`Envelope`].
pub struct KmsV2 {
    envelope: Arc<Envelope>,
    metrics: Arc<Metrics>,
}

impl KmsV2 {
    /// A v2 service that seals and opens with `envelope` and counts requests in `metrics`.
    pub fn new(envelope: Arc<Envelope>, metrics: Arc<Metrics>) -> Self {
        Self { envelope, metrics }
    }
}

#[tonic::async_trait]
impl KeyManagementService for KmsV2 {
    async fn status(
        &self,
        _request: Request<StatusRequest>,
    ) -> Result<Response<StatusResponse>, Status> {
        let timer = RequestTimer::start(&self.metrics, "v2.Status");
        let health = self.envelope.health().await;
        timer.finish(Ok(Response::new(StatusResponse {
            version: API_VERSION.to_owned(),
            healthz: health.healthz,
            key_id: health.key_id,
        })))
    }

    async fn encrypt(
        &self,
        request: Request<EncryptRequest>,
    ) -> Result<Response<EncryptResponse>, Status> {
        let timer = RequestTimer::start(&self.metrics, "v2.Encrypt");
        let deadline = deadline::of(&request);
        let mut request = request.into_inner();
        // The DEK kube-apiserver sent is wiped when the call ends.
        let plaintext = Zeroizing::new(std::mem::take(&mut request.plaintext));
        let result = deadline::within(deadline, self.envelope.encrypt(&plaintext)).await;
        timer.finish(match result {
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
        })
    }

    async fn decrypt(
        &self,
        request: Request<DecryptRequest>,
    ) -> Result<Response<DecryptResponse>, Status> {
        let timer = RequestTimer::start(&self.metrics, "v2.Decrypt");
        let deadline = deadline::of(&request);
        let request = request.into_inner();
        let key_id = log_prefix(&request.key_id);
        let decrypt =
            self.envelope
                .decrypt(&request.ciphertext, &request.key_id, &request.annotations);
        timer.finish(match deadline::within(deadline, decrypt).await {
            Ok(plaintext) => {
                tracing::debug!(uid = %request.uid, key_id, "decrypt");
                Ok(Response::new(DecryptResponse {
                    plaintext: into_response(plaintext),
                }))
            }
            Err(error) => {
                tracing::debug!(uid = %request.uid, key_id, %error, "decrypt refused");
                Err(to_status(&error))
            }
        })
    }
}

/// The opened plaintext as the response's field, moved rather than copied: the response then
/// holds the only copy, which no handler outlives (tonic encodes and drops it; its buffers are
/// beyond our reach). A copy would leave the original to be wiped and the copy not.
pub(super) fn into_response(mut plaintext: Zeroizing<Vec<u8>>) -> Vec<u8> {
    std::mem::take(&mut *plaintext)
}

/// At most the first 64 bytes of `text`, cut at a character boundary: key_ids come from etcd and
/// may be up to 1 KiB of anything, so logs carry only enough to recognise one.
fn log_prefix(text: &str) -> &str {
    let mut end = text.len().min(64);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use zeroize::Zeroizing;

    use super::{into_response, log_prefix};

    /// Regression: Decrypt copied the plaintext into the response (`to_vec`), so besides the
    /// wiped original there was a second copy nobody wiped.
    #[test]
    fn a_decrypted_plaintext_moves_into_the_response_without_a_copy() {
        let plaintext = Zeroizing::new(b"a data key".to_vec());
        let at = plaintext.as_ptr();
        let field = into_response(plaintext);
        assert_eq!(field, b"a data key");
        assert_eq!(field.as_ptr(), at, "the response holds a copy");
    }

    #[test]
    fn logged_key_ids_are_cut_at_64_bytes_on_a_character_boundary() {
        assert_eq!(log_prefix("abc"), "abc");
        assert_eq!(log_prefix(&"a".repeat(100)), "a".repeat(64));
        let multibyte = format!("{}é{}", "a".repeat(63), "b".repeat(100));
        assert_eq!(log_prefix(&multibyte), "a".repeat(63));
    }
}
