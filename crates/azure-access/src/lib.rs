//! Azure access shared by kube-kms's two products — the KMS plugin, which wraps its local KEKs
//! with a Key Vault or Managed HSM key, and the Secrets Store CSI provider, which reads Key Vault
//! secrets, keys and certificates with each pod's identity. It holds what both need to reach
//! Azure and nothing about what either does there:
//!
//! - [`cloud`]: the clouds, their Entra ID authority and vault DNS suffixes;
//! - [`auth`] (with [`azure_json`]): which credential the process itself uses, and the SDK
//!   credential that does it;
//! - [`credential`]: a ready credential, including one made from a client assertion held in
//!   memory (a pod's service-account token);
//! - [`client`]: the HTTPS transport (CA file, proxies, timeouts, no redirects) handed to the SDK;
//! - [`retry`]: the one retry policy (deadline, capped backoff with jitter, Retry-After);
//! - [`errors`]: whether an SDK failure is transient, an authoritative refusal, or a
//!   misconfiguration.
//!
//! Nothing in this crate logs or shows a token, a secret, a client assertion, or a request or
//! response body; errors carry non-secret context only.

use std::fmt;

pub mod auth;
pub mod azure_json;
pub mod client;
pub mod cloud;
pub mod credential;
pub mod errors;
pub mod retry;

pub use credential::Credential;

/// Azure access could not be set up: a setting, a file or the environment needs an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Error {
    /// What is wrong and how to fix it; never a secret's value.
    Misconfigured {
        /// The reason, for the operator.
        reason: String,
    },
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Misconfigured { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for Error {}
