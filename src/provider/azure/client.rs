//! The Key Vault keys client and the calls the provider makes — get a key, wrap, unwrap, and
//! decrypt for the records of Azure's Go KMS plugin — each one attempt, retried by
//! [`azure_access::retry`]. It runs over the shared HTTPS transport
//! ([`azure_access::client`]: CA file, timeouts, no redirects, the SDK's retries off).
//!
//! Nothing here logs a request or response body: they carry KEKs. The SDK's own logging policy
//! redacts headers; Authorization never reaches a log.

use std::sync::Arc;

use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, RequestContent};
use azure_security_keyvault_keys::models::{
    EncryptionAlgorithm, Key, KeyClientGetKeyOptions, KeyClientWrapKeyOptions,
    KeyOperationParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use zeroize::Zeroizing;

use crate::provider::{LegacyAlgorithm, ProviderError};

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

impl VaultClient {
    /// Decrypts `ciphertext` with `version` of key `name` (Key Vault `decrypt`): only for what
    /// Azure's Go KMS plugin encrypted directly with the key. The result may hold a DEK.
    pub async fn decrypt(
        &self,
        name: &str,
        version: &str,
        algorithm: LegacyAlgorithm,
        ciphertext: &[u8],
    ) -> azure_core::Result<Zeroizing<Vec<u8>>> {
        let algorithm = match algorithm {
            LegacyAlgorithm::RsaOaep256 => EncryptionAlgorithm::RsaOaep256,
            LegacyAlgorithm::Rsa15 => EncryptionAlgorithm::Rsa1_5,
        };
        let parameters = KeyOperationParameters {
            algorithm: Some(algorithm),
            value: Some(ciphertext.to_vec()),
            ..Default::default()
        };
        let result = self
            .client
            .decrypt(name, version, request(parameters)?, None)
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
