//! The generated gRPC code for the two KMS APIs kube-apiserver speaks (v2 and v1beta1), and for
//! the one etcd call `kube-kms census` makes (KV.Range).
//!
//! Generated at build time from proto/ (see build.rs); nothing here is written by hand.

#![expect(missing_docs, reason = "generated code")]

/// `/v2.KeyManagementService`: the KMS v2 API.
pub mod v2 {
    tonic::include_proto!("v2");
}

/// `/v1beta1.KeyManagementService`: the KMS v1 API, for clusters not yet on v2.
pub mod v1beta1 {
    tonic::include_proto!("v1beta1");
}

/// `/etcdserverpb.KV/Range`: the read-only slice of etcd's v3 API that `census` uses.
pub mod etcd {
    tonic::include_proto!("etcdserverpb");
}
