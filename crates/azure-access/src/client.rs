//! The HTTPS transport every Azure call goes through: our own reqwest clients (an extra CA
//! file, connect and per-attempt timeouts, no redirects) handed to the official SDK with the
//! SDK's retries turned off, so that [`crate::retry`] is the only retry policy.
//!
//! Key Vault and Entra ID are reached over HTTPS only, through HTTPS_PROXY / NO_PROXY when set.
//! The managed identity endpoints (IMDS, App Service's IDENTITY_ENDPOINT) are plain HTTP on the
//! host or its link-local network: their client never uses a proxy, so a token never crosses one
//! in clear.
//!
//! Nothing here logs a request or response body: they carry keys, secrets and tokens. The SDK's
//! own logging policy redacts headers; Authorization never reaches a log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::{ClientOptions, HttpClient, RetryOptions, Transport};

use crate::Error;
use crate::cloud::Cloud;

/// How a process reaches Azure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOptions {
    /// A PEM file of extra CA certificates trusted besides the system's (a TLS-inspecting
    /// proxy's, a private cloud's, an emulator's).
    pub ca_file: Option<PathBuf>,
    /// How long a TCP and TLS connection may take.
    pub connect_timeout: Duration,
    /// How long one HTTP attempt may take (the operation's deadline also bounds it).
    pub request_timeout: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            ca_file: None,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// Where a client sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Key Vault and Entra ID: HTTPS only, through HTTPS_PROXY / NO_PROXY as reqwest reads them.
    Remote,
    /// The host's managed identity endpoint: plain HTTP allowed, never through a proxy.
    ManagedIdentity,
}

/// A reqwest client for `route`, handed to the SDK as its transport.
pub fn http_client(options: &TransportOptions, route: Route) -> Result<Arc<dyn HttpClient>, Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .https_only(route == Route::Remote);
    if route == Route::ManagedIdentity {
        builder = builder.no_proxy();
    }
    if let Some(path) = &options.ca_file {
        builder = builder.tls_certs_merge(read_ca_file(path)?);
    }
    let client = builder.build().map_err(|error| Error::Misconfigured {
        reason: format!("cannot build the HTTPS client: {error}"),
    })?;
    Ok(Arc::new(client))
}

fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, Error> {
    let pem = std::fs::read(path).map_err(|error| Error::Misconfigured {
        reason: format!("cannot read azure.ca_file {}: {error}", path.display()),
    })?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| Error::Misconfigured {
            reason: format!(
                "azure.ca_file {} is not a PEM bundle of certificates: {error}",
                path.display()
            ),
        })?;
    if certificates.is_empty() {
        return Err(Error::Misconfigured {
            reason: format!("azure.ca_file {} holds no PEM certificate", path.display()),
        });
    }
    Ok(certificates)
}

/// SDK client options: our transport, the SDK's retries off (the caller retries within its
/// deadline, see [`crate::retry`]), and the cloud whose authority credentials use.
pub fn client_options(http: &Arc<dyn HttpClient>, cloud: &Cloud) -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::none(),
        transport: Some(Transport::new(Arc::clone(http))),
        cloud: Some(cloud.sdk_configuration()),
        ..ClientOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let options = TransportOptions {
            ca_file: Some(path.clone()),
            ..TransportOptions::default()
        };
        let error = http_client(&options, Route::Remote)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("ca.pem"), "{error}");
        let missing = TransportOptions {
            ca_file: Some(dir.path().join("missing.pem")),
            ..TransportOptions::default()
        };
        let error = http_client(&missing, Route::Remote)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("missing.pem"), "{error}");
        assert!(http_client(&TransportOptions::default(), Route::ManagedIdentity).is_ok());
    }
}
