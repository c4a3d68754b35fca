//! The generated gRPC code for the Secrets Store CSI driver's provider API.
//!
//! Generated at build time from proto/ (see build.rs); nothing here is written by hand.

#![expect(missing_docs, reason = "generated code")]

/// `/v1alpha1.CSIDriverProvider`: the API the driver calls on its providers.
pub mod v1alpha1 {
    tonic::include_proto!("v1alpha1");
}
