//! The gRPC side of kube-kms: the v2 and v1beta1 services on one Unix socket, the mapping from
//! envelope errors to gRPC codes, and the background refresher.
//!
//! [`serve`] takes its listener, envelope and shutdown signal from the caller, so tests bind a
//! temporary socket and stop the server when they choose.

pub mod errors;
pub mod refresher;
pub mod socket;
pub mod v1;
pub mod v2;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio_stream::wrappers::UnixListenerStream;

use crate::envelope::Envelope;
use crate::proto::v1beta1::key_management_service_server::KeyManagementServiceServer as V1Server;
use crate::proto::v2::key_management_service_server::{
    KeyManagementService as V2Api, KeyManagementServiceServer as V2Server,
};

/// The largest gRPC message accepted: a Decrypt request holds at most 1 KiB of ciphertext,
/// 1 KiB of key_id and 32 KiB of annotations, so 64 KiB leaves room and refuses megabytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How long one call may take on the server before it is answered DeadlineExceeded, unless the
/// client's grpc-timeout is shorter. kube-apiserver's default call timeout is 3 s.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// Concurrent requests handled per connection; kube-apiserver uses one connection.
pub const MAX_CONCURRENT_REQUESTS: usize = 1024;

/// Serves both KMS APIs on `listener` until `shutdown` completes, then stops accepting and
/// waits for in-flight calls to finish.
pub async fn serve(
    listener: UnixListener,
    envelope: Arc<Envelope>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let v2 = v2::KmsV2::new(Arc::clone(&envelope));
    serve_with(listener, v2, Some(v1::KmsV1::new(envelope)), shutdown).await
}

/// Serves `v2` alone on `listener` with exactly the transport, layers and limits [`serve`] uses.
/// Exists for the benchmarks: their no-op transport floor and per-call-remote baseline are
/// served by the same stack as the real service, so the ratios measure only the envelope.
#[doc(hidden)]
pub async fn serve_v2_only<S: V2Api>(
    listener: UnixListener,
    v2: S,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    serve_with(listener, v2, None, shutdown).await
}

async fn serve_with<S: V2Api>(
    listener: UnixListener,
    v2: S,
    v1: Option<v1::KmsV1>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let v2 = V2Server::new(v2)
        .max_decoding_message_size(MAX_MESSAGE_BYTES)
        .max_encoding_message_size(MAX_MESSAGE_BYTES);
    let v1 = v1.map(|v1| {
        V1Server::new(v1)
            .max_decoding_message_size(MAX_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_MESSAGE_BYTES)
    });
    tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(
            oversize_is_resource_exhausted,
        ))
        .timeout(CALL_TIMEOUT)
        .concurrency_limit_per_connection(MAX_CONCURRENT_REQUESTS)
        .add_service(v2)
        .add_optional_service(v1)
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
}

/// tonic refuses a message over [`MAX_MESSAGE_BYTES`] (on its length prefix, before buffering
/// it) with OUT_OF_RANGE; the gRPC specification, and every other gRPC implementation, say
/// RESOURCE_EXHAUSTED. kube-kms itself never returns OUT_OF_RANGE, so the rewrite is exact.
fn oversize_is_resource_exhausted<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    let headers = response.headers_mut();
    let out_of_range = (tonic::Code::OutOfRange as i32).to_string();
    if headers
        .get("grpc-status")
        .is_some_and(|status| status.as_bytes() == out_of_range.as_bytes())
    {
        let exhausted = (tonic::Code::ResourceExhausted as i32).to_string();
        if let Ok(value) = tonic::codegen::http::HeaderValue::from_str(&exhausted) {
            headers.insert("grpc-status", value);
        }
    }
    response
}
