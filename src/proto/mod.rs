//! The generated gRPC code for the two KMS APIs kube-apiserver speaks (v2 and v1beta1), and for
//! the one etcd call `kube-kms census` makes (KV.Range).
//!
//! Generated at build time from proto/ (see build.rs), except `v2.EncryptResponse`
//! (`encrypt_response.rs`), written by hand so that what every Encrypt under one KEK repeats is
//! shared rather than copied; the generated v2 code uses it in place of its own.

mod encrypt_response;

/// `/v2.KeyManagementService`: the KMS v2 API.
#[expect(missing_docs, reason = "generated code")]
pub mod v2 {
    tonic::include_proto!("v2");

    pub use super::encrypt_response::EncryptResponse;
}

/// `/v1beta1.KeyManagementService`: the KMS v1 API, for clusters not yet on v2.
#[expect(missing_docs, reason = "generated code")]
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// `/etcdserverpb.KV/Range`: the read-only slice of etcd's v3 API that `census` uses.
#[expect(missing_docs, reason = "generated code")]
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
