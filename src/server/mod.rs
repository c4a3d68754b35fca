//! The gRPC side of kube-kms: the v2 and v1beta1 services on one Unix socket, the mapping from
//! envelope errors to gRPC codes, and the background refresher.
//!
//! [`serve`] takes its listener, envelope and shutdown signal from the caller, so tests bind a
//! temporary socket and stop the server when they choose.

pub mod deadline;
pub mod errors;
pub mod refresher;
pub mod socket;
pub mod v1;
pub mod v2;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;

use crate::envelope::Envelope;
use crate::ops::metrics::Metrics;
use crate::proto::v1beta1::key_management_service_server::KeyManagementServiceServer as V1Server;
use crate::proto::v2::key_management_service_server::{
    KeyManagementService as V2Api, KeyManagementServiceServer as V2Server,
};

/// The largest gRPC message accepted: a Decrypt request holds at most 1 KiB of ciphertext,
/// 1 KiB of key_id and 32 KiB of annotations, so 64 KiB leaves room and refuses megabytes.
pub const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// How long one call may take on the server, unless the client's grpc-timeout is shorter; tonic
/// then answers CANCELLED ("Timeout expired"). kube-apiserver's default call timeout is 3 s.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(3);

/// How long shutdown waits for in-flight calls before it stops anyway: a call never runs longer
/// than [`CALL_TIMEOUT`], but a client that never closes its connection must not hold the
/// plugin (and its socket) up for ever.
pub const DRAIN_LIMIT: Duration = Duration::from_secs(5);

/// Concurrent requests handled per connection; kube-apiserver uses one connection. Also the
/// HTTP/2 stream limit the server advertises, so a client queues further calls on its side
/// instead of opening streams the server would only hold.
pub const MAX_CONCURRENT_REQUESTS: usize = 1024;

/// Concurrent requests handled over all connections together: however many connections a
/// local client opens, at most this many calls (each ≤ [`MAX_MESSAGE_BYTES`]) are in progress;
/// the rest wait, within their deadline, for a slot.
pub const MAX_IN_FLIGHT_REQUESTS: usize = 4096;

/// Serves both KMS APIs on `listener` until `shutdown` completes, then stops accepting and
/// waits for in-flight calls to finish. Every request is counted in `metrics`. Each connection
/// goes through [`grpc_uds::AuthorityAdapter`], so clients that send the socket path as the
/// HTTP/2 `:authority` (kube-apiserver's KMS v1 client) are served too.
pub async fn serve(
    listener: UnixListener,
    envelope: Arc<Envelope>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let v2 = v2::KmsV2::new(Arc::clone(&envelope), Arc::clone(&metrics));
    serve_with(
        listener,
        v2,
        Some(v1::KmsV1::new(envelope, metrics)),
        shutdown,
    )
    .await
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
    let (shutdown_began, began) = tokio::sync::oneshot::channel::<()>();
    let shutdown = async move {
        shutdown.await;
        let _ = shutdown_began.send(());
    };
    let drain_limit = async move {
        match began.await {
            Ok(()) => tokio::time::sleep(DRAIN_LIMIT).await,
            Err(_) => std::future::pending().await,
        }
    };
    let serving = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(bad_input_codes))
        .layer(tower::limit::GlobalConcurrencyLimitLayer::new(
            MAX_IN_FLIGHT_REQUESTS,
        ))
        .timeout(CALL_TIMEOUT)
        .concurrency_limit_per_connection(MAX_CONCURRENT_REQUESTS)
        .max_concurrent_streams(u32::try_from(MAX_CONCURRENT_REQUESTS).ok())
        .add_service(v2)
        .add_optional_service(v1)
        .serve_with_incoming_shutdown(grpc_uds::incoming(listener), shutdown);
    tokio::select! {
        result = serving => result,
        () = drain_limit => {
            tracing::warn!(
                limit = ?DRAIN_LIMIT,
                "connections still open after the drain limit; stopping anyway"
            );
            Ok(())
        }
    }
}

/// Corrects the codes tonic gives two kinds of bad input before a handler ever runs, so that a
/// malformed request is never answered with a server-fault code:
/// - a message over [`MAX_MESSAGE_BYTES`] is refused on its length prefix, before it is
///   buffered, with OUT_OF_RANGE; gRPC (and every other implementation) says RESOURCE_EXHAUSTED;
/// - a message that does not decode (e.g. a key_id that is not UTF-8) is INTERNAL ("failed to
///   decode Protobuf message"); it is the caller's input, so INVALID_ARGUMENT.
///
/// kube-kms's handlers never return OUT_OF_RANGE or INTERNAL themselves, so neither rewrite
/// can hide a real server fault.
fn bad_input_codes<B>(
    mut response: tonic::codegen::http::Response<B>,
) -> tonic::codegen::http::Response<B> {
    use tonic::codegen::http::HeaderValue;
    let headers = response.headers_mut();
    let status = headers
        .get("grpc-status")
        .and_then(|status| status.to_str().ok());
    let corrected = match status
        .and_then(|status| status.parse::<i32>().ok())
        .map(tonic::Code::from)
    {
        Some(tonic::Code::OutOfRange) => Some(tonic::Code::ResourceExhausted),
        Some(tonic::Code::Internal)
            if headers
                .get("grpc-message")
                .is_some_and(|message| message.as_bytes().starts_with(b"failed to decode")) =>
        {
            Some(tonic::Code::InvalidArgument)
        }
        _ => None,
    };
    if let Some(code) = corrected {
        headers.insert("grpc-status", HeaderValue::from(code as i32));
    }
    response
}
