//! kube-kms's Secrets Store CSI driver provider: the `/v1alpha1.CSIDriverProvider` service the
//! driver calls over a Unix socket when a pod mounts a `secrets-store.csi.k8s.io` volume.
//!
//! The socket, the serving loop and process hardening are the shared [`grpc_uds`] crate's; this
//! crate holds what is the provider's: the proto and the service ([`service`]), the request
//! and class parsing ([`request`], [`class`]), the two backends ([`azure`] for Key Vault,
//! [`alibaba`] for Alibaba Cloud KMS and OOS) over one coalescing cache ([`cache`]), the files
//! a Mount answers with ([`files`], [`jmes`]), errors, metrics and the production wiring
//! ([`wiring`]). It never writes to a pod's volume (the driver does) and never logs secret
//! content.

pub mod alibaba;
pub mod azure;
pub mod cache;
pub mod class;
pub mod errors;
pub mod files;
#[doc(hidden)]
pub mod fuzzing;
pub mod jmes;
mod lru;
pub mod metrics;
pub mod proto;
pub mod request;
pub mod service;
pub mod wiring;

use std::future::Future;
use std::time::Duration;

use tokio::net::UnixListener;
use tonic::service::Routes;

use proto::v1alpha1::csi_driver_provider_server::CsiDriverProviderServer;

/// Where the driver looks for providers' sockets (its `--provider-volume`); the Azure and
/// Alibaba providers' manifests mount that host directory for the same purpose.
pub const PROVIDERS_DIR: &str = "/var/run/secrets-store-csi-providers";

/// Where the driver looks for the `azure` provider's socket.
pub const DEFAULT_SOCKET: &str = "/var/run/secrets-store-csi-providers/azure.sock";

/// Where the driver looks for provider `name`'s socket: `<PROVIDERS_DIR>/<name>.sock`.
pub fn default_socket(name: &str) -> std::path::PathBuf {
    std::path::Path::new(PROVIDERS_DIR).join(format!("{name}.sock"))
}

/// The limits the provider is served under.
pub const LIMITS: grpc_uds::Limits = grpc_uds::Limits {
    // The driver's own receive limit (`--max-call-recv-msg-size`, 4 MiB).
    max_message_bytes: 4 * 1024 * 1024,
    // A Mount inherits kubelet's NodePublishVolume deadline (2 minutes) and rotation calls from
    // driver v1.5 carry none, so the server bounds every call at the same 2 minutes.
    call_timeout: Duration::from_secs(120),
    // How long shutdown waits for in-flight Mounts before it stops anyway.
    drain_limit: Duration::from_secs(10),
    // Per connection (the driver keeps one), and the HTTP/2 stream limit.
    max_concurrent_requests: 64,
    // Over all connections: with the message limit, bounds what requests in progress can hold.
    max_in_flight_requests: 128,
};

/// Serves `provider` on `listener`, with `grpc.health.v1.Health` answering SERVING for the
/// provider and the server, until `shutdown` completes; then drains in-flight calls for at most
/// the drain limit in [`LIMITS`]. Drivers before v1.6, which send the socket path as the HTTP/2
/// `:authority`, are served too.
pub async fn serve(
    listener: UnixListener,
    provider: service::CsiProvider,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), tonic::transport::Error> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    health_reporter
        .set_serving::<CsiDriverProviderServer<service::CsiProvider>>()
        .await;
    let provider = grpc_uds::limit_messages!(CsiDriverProviderServer::new(provider), LIMITS);
    let routes = Routes::new(provider).add_service(health);
    grpc_uds::serve(listener, routes, LIMITS, shutdown).await
}
