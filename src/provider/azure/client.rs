//! The HTTP transport and the Key Vault client: our own reqwest clients (an extra CA file,
//! connect and per-attempt timeouts, no redirects) handed to the official SDK with the SDK's
//! retries turned off, and the three calls the provider makes — get a key, wrap, unwrap — each
//! one attempt, retried by [`super::retry`].
//!
//! Key Vault and Entra ID are reached over HTTPS only, through HTTPS_PROXY / NO_PROXY when set.
//! The managed identity endpoints (IMDS, App Service's IDENTITY_ENDPOINT) are plain HTTP on the
//! host or its link-local network: their client never uses a proxy, so a token never crosses one
//! in clear.
//!
//! Nothing here logs a request or response body: they carry KEKs. The SDK's own logging policy
//! redacts headers; Authorization never reaches a log.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, HttpClient, RequestContent, RetryOptions, Transport};
use azure_security_keyvault_keys::models::{
    EncryptionAlgorithm, Key, KeyClientGetKeyOptions, KeyClientWrapKeyOptions,
    KeyOperationParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use zeroize::Zeroizing;

use super::cloud::Cloud;
use crate::provider::ProviderError;

/// How the plugin reaches the network.
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
pub fn http_client(
    options: &TransportOptions,
    route: Route,
) -> Result<Arc<dyn HttpClient>, ProviderError> {
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
    let client = builder
        .build()
        .map_err(|error| ProviderError::Misconfigured {
            reason: format!("cannot build the HTTPS client: {error}"),
        })?;
    Ok(Arc::new(client))
}

fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, ProviderError> {
    let pem = std::fs::read(path).map_err(|error| ProviderError::Misconfigured {
        reason: format!("cannot read azure.ca_file {}: {error}", path.display()),
    })?;
    let certificates = reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| {
        ProviderError::Misconfigured {
            reason: format!(
                "azure.ca_file {} is not a PEM bundle of certificates: {error}",
                path.display()
            ),
        }
    })?;
    if certificates.is_empty() {
        return Err(ProviderError::Misconfigured {
            reason: format!("azure.ca_file {} holds no PEM certificate", path.display()),
        });
    }
    Ok(certificates)
}

/// SDK client options: our transport, the SDK's retries off (the plugin retries within its
/// deadline), and the cloud whose authority credentials use.
pub fn client_options(http: &Arc<dyn HttpClient>, cloud: &Cloud) -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::none(),
        transport: Some(Transport::new(Arc::clone(http))),
        cloud: Some(cloud.sdk_configuration()),
        ..ClientOptions::default()
    }
}

/// A wrapping algorithm this plugin uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WrapAlgorithm {
    /// RSA-OAEP with SHA-256, on RSA and RSA-HSM keys.
    RsaOaep256,
    /// AES key wrap (RFC 3394) with a 256-bit key, on oct-HSM keys.
    A256Kw,
    /// AES key wrap with padding (RFC 5649), on oct-HSM keys.
    CkmAesKeyWrapPad,
}

impl WrapAlgorithm {
    /// The name the service and the configuration use.
    pub fn name(self) -> &'static str {
        match self {
            Self::RsaOaep256 => "RSA-OAEP-256",
            Self::A256Kw => "A256KW",
            Self::CkmAesKeyWrapPad => "CKM_AES_KEY_WRAP_PAD",
        }
    }

    fn sdk(self) -> EncryptionAlgorithm {
        match self {
            Self::RsaOaep256 => EncryptionAlgorithm::RsaOaep256,
            Self::A256Kw => EncryptionAlgorithm::A256Kw,
            Self::CkmAesKeyWrapPad => EncryptionAlgorithm::CkmAesKeyWrapPad,
        }
    }
}

/// One vault (or Managed HSM) and the credential for it.
pub struct VaultClient {
    client: KeyClient,
}

impl VaultClient {
    /// A client for the vault at `vault_url`. `verify_challenge_resource` makes the SDK refuse
    /// an authentication challenge whose resource is not a parent domain of the vault's host.
    pub fn new(
        vault_url: &str,
        credential: Arc<dyn TokenCredential>,
        options: ClientOptions,
        verify_challenge_resource: bool,
    ) -> Result<Self, ProviderError> {
        let client = KeyClient::new(
            vault_url,
            credential,
            Some(KeyClientOptions {
                client_options: options,
                verify_challenge_resource: Some(verify_challenge_resource),
                ..KeyClientOptions::default()
            }),
        )
        .map_err(|error| ProviderError::Misconfigured {
            reason: format!("cannot make a Key Vault client for {vault_url}: {error}"),
        })?;
        Ok(Self { client })
    }

    /// Reads `version` of key `name`, or its latest version.
    pub async fn get_key(&self, name: &str, version: Option<&str>) -> azure_core::Result<Key> {
        let options = KeyClientGetKeyOptions {
            key_version: version.map(str::to_owned),
            ..Default::default()
        };
        self.client.get_key(name, Some(options)).await?.into_model()
    }

    /// Wraps `kek` with `version` of key `name`; returns the wrapped bytes and the kid the
    /// service says it used.
    pub async fn wrap(
        &self,
        name: &str,
        version: &str,
        algorithm: WrapAlgorithm,
        kek: &[u8],
    ) -> azure_core::Result<(Vec<u8>, Option<String>)> {
        let parameters = KeyOperationParameters {
            algorithm: Some(algorithm.sdk()),
            value: Some(kek.to_vec()),
            ..Default::default()
        };
        let options = KeyClientWrapKeyOptions {
            key_version: Some(version.to_owned()),
            ..Default::default()
        };
        let result = self
            .client
            .wrap_key(name, request(parameters)?, Some(options))
            .await?
            .into_model()?;
        Ok((result.result.unwrap_or_default(), result.kid))
    }

    /// Unwraps `wrapped` with `version` of key `name`.
    pub async fn unwrap(
        &self,
        name: &str,
        version: &str,
        algorithm: WrapAlgorithm,
        wrapped: &[u8],
    ) -> azure_core::Result<Zeroizing<Vec<u8>>> {
        let parameters = KeyOperationParameters {
            algorithm: Some(algorithm.sdk()),
            value: Some(wrapped.to_vec()),
            ..Default::default()
        };
        let result = self
            .client
            .unwrap_key(name, version, request(parameters)?, None)
            .await?
            .into_model()?;
        Ok(Zeroizing::new(result.result.unwrap_or_default()))
    }
}

fn request(
    parameters: KeyOperationParameters,
) -> azure_core::Result<RequestContent<KeyOperationParameters>> {
    parameters.try_into()
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
