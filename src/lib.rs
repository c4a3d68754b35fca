//! kube-kms: a KMS v2 plugin for kube-apiserver.
//!
//! A Decrypt travels through five files, in this order:
//! [`grpc_uds::socket`] (the Unix socket) → [`server::v2`] (the gRPC service) →
//! [`envelope`] (seal/open with a local KEK) → [`envelope::cache`] (the unwrapped-KEK cache) →
//! [`provider`] (the remote key that wraps local KEKs).
//!
//! Nothing in this crate logs plaintext, key bytes or wrapped-key bytes.

pub mod config;
pub mod crypto;
pub mod daemon;
pub mod envelope;
pub mod lifecycle;
pub mod ops;
pub mod probe;
pub mod proto;
pub mod provider;
pub mod server;

#[doc(hidden)]
pub mod fuzzing;
