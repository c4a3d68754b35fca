//! Serving gRPC with tonic on a Unix socket for the clients that really dial one: kube-apiserver's
//! KMS clients and the Secrets Store CSI driver. Shared by the KMS plugin and the CSI provider.
//!
//! [`socket`] binds the socket safely (private directory, stale/live detection, mode, group);
//! [`serve`] runs the tonic server with its limits and a bounded drain; [`authority`] lets h2
//! accept the socket path that grpc-go, grpc-java, grpcio and older CSI drivers send as the
//! HTTP/2 `:authority`; [`hardening`] makes the process non-dumpable and locks its memory;
//! [`ops`] serves `/healthz`, `/readyz` and `/metrics` over HTTP from the caller's probe.
//! Nothing here reads or logs a request's payload.

pub mod authority;
#[doc(hidden)]
pub mod fuzzing;
pub mod hardening;
pub mod ops;
mod serving;
pub mod socket;

pub use authority::{AuthorityAdapter, Incoming, incoming};
#[doc(hidden)]
pub use serving::serve_without_authority_adapter;
pub use serving::{Limits, serve};
