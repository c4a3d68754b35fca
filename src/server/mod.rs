//! The gRPC side of kube-kms: the v2 and v1beta1 services, the mapping from envelope errors to
//! gRPC codes, the request deadline, the background refresher, and the limits the KMS services
//! are served under. The socket, the serving loop and its limits' enforcement are the shared
//! [`grpc_uds`] crate's; nothing here binds a socket or builds a transport.
//!
//! [`serve`] takes its listener, envelope and shutdown signal from the caller, so tests bind a
//! temporary socket and stop the server when they choose.

pub mod deadline;
pub mod errors;
pub mod refresher;
pub mod v1;
pub mod v2;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tonic::service::Routes;

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

/// The limits above, as [`grpc_uds::serve`] takes them.
pub const LIMITS: grpc_uds::Limits = grpc_uds::Limits {
    max_message_bytes: MAX_MESSAGE_BYTES,
    call_timeout: CALL_TIMEOUT,
    drain_limit: DRAIN_LIMIT,
    max_concurrent_requests: MAX_CONCURRENT_REQUESTS,
    max_in_flight_requests: MAX_IN_FLIGHT_REQUESTS,
};

/// Serves both KMS APIs on `listener` until `shutdown` completes, then stops accepting and
/// waits for in-flight calls to finish, under [`LIMITS`]. Every request is counted in
/// `metrics`. Clients that send the socket path as the HTTP/2 `:authority` (kube-apiserver's
/// KMS v1 client) are served too (see [`grpc_uds::authority`]).
pub async fn serve(
    listener: UnixListener,
    envelope: Arc<Envelope>,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let v2 = v2::KmsV2::new(Arc::clone(&envelope), Arc::clone(&metrics));
    let v1 = v1::KmsV1::new(envelope, metrics);
    let routes = Routes::new(grpc_uds::limit_messages!(V2Server::new(v2), LIMITS))
        .add_service(grpc_uds::limit_messages!(V1Server::new(v1), LIMITS));
    grpc_uds::serve(listener, routes, LIMITS, shutdown).await
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
    let routes = Routes::new(grpc_uds::limit_messages!(V2Server::new(v2), LIMITS));
    grpc_uds::serve(listener, routes, LIMITS, shutdown).await
}
