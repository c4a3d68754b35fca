//! Serving gRPC with tonic on a Unix socket for the clients that really dial one: kube-apiserver's
//! KMS clients today, the Secrets Store CSI driver tomorrow.
//!
//! [`authority`] lets h2 accept the socket path that grpc-go, grpc-java, grpcio and older CSI
//! drivers send as the HTTP/2 `:authority`. Nothing here reads or logs a request's payload.

pub mod authority;
#[doc(hidden)]
pub mod fuzzing;

pub use authority::{AuthorityAdapter, Incoming, incoming};
