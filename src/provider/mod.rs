//! The root of trust: a [`KeyProvider`] wraps and unwraps local KEKs with a key that stays in
//! the key service (Azure Key Vault, Managed HSM, a PKCS#11 token) or, for development, in a
//! local key ring.
//!
//! The envelope talks to this trait only, never to a concrete client. A provider never takes an
//! endpoint, vault or key name from its caller: the key version it is asked to unwrap with is
//! attacker input read from etcd, and a provider resolves it only within its own configuration.

pub mod azure;
pub mod chain;
pub mod guard;
pub mod instrumented;
pub mod local;
pub mod pkcs11;

use std::sync::Arc;

use async_trait::async_trait;

use crate::crypto::SecretKey;

/// The longest key_id kube-apiserver accepts, in bytes.
pub const MAX_KEY_ID_LEN: usize = 1024;
/// The longest key version name a provider may write into annotations, in bytes.
pub const MAX_KEY_VERSION_LEN: usize = 256;

/// One version of the remote key: the key_id kube-apiserver sees and the provider's own name for
/// the version, which travels in the annotations so Decrypt knows which version to unwrap with.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyVersion {
    key_id: Arc<str>,
    version: Arc<str>,
}

impl KeyVersion {
    /// A key version; `key_id` must be non-empty and at most 1024 bytes, `version` non-empty and
    /// at most 256 bytes of printable ASCII. Providers build these from their own configuration.
    pub fn new(key_id: &str, version: &str) -> Result<Self, ProviderError> {
        let valid_key_id = !key_id.is_empty() && key_id.len() <= MAX_KEY_ID_LEN;
        let valid_version = !version.is_empty()
            && version.len() <= MAX_KEY_VERSION_LEN
            && version.bytes().all(|b| b.is_ascii_graphic());
        if !valid_key_id || !valid_version {
            return Err(ProviderError::Misconfigured {
                reason: format!(
                    "key version {version:?} with key_id of {} bytes: a key_id must be 1..=1024 \
                     bytes and a version 1..=256 printable ASCII bytes",
                    key_id.len()
                ),
            });
        }
        Ok(Self {
            key_id: key_id.into(),
            version: version.into(),
        })
    }

    /// What kube-apiserver sees as key_id: names the remote key version, never a local KEK.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// The key_id as the shared string it is kept in, so that every Encrypt response under one
    /// KEK carries it without a copy.
    pub fn shared_key_id(&self) -> &Arc<str> {
        &self.key_id
    }

    /// The provider's name for this version, written into the annotations.
    pub fn version(&self) -> &str {
        &self.version
    }
}

/// Which key a provider unwraps with, as far as a reload is concerned: two providers with the
/// same identity unwrap the same wrapped KEKs, so a [`chain::Chain`] keeps only the newer of
/// them. Settings that do not change the key (timeouts, credentials, decrypt-only keys) are not
/// part of it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum KeyIdentity {
    /// A local key ring, by its directory.
    Local {
        /// The key directory, canonical when it can be resolved.
        dir: std::path::PathBuf,
    },
    /// A PKCS#11 key, by module, token and key label.
    Pkcs11 {
        /// The module's path.
        module: std::path::PathBuf,
        /// The token, as the configuration selects it.
        token: String,
        /// The label of the key that wraps new KEKs.
        key_label: String,
    },
    /// An Azure Key Vault or Managed HSM key, by vault host and key name (any version).
    Azure(azure::key_id::KeyRef),
}

impl std::fmt::Display for KeyIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Local { dir } => write!(f, "local key ring {}", dir.display()),
            Self::Pkcs11 {
                module,
                token,
                key_label,
            } => write!(
                f,
                "PKCS#11 key {key_label:?} on {token} of {}",
                module.display()
            ),
            Self::Azure(key) => write!(f, "Azure key {key}"),
        }
    }
}

/// Whether the provider can serve, as far as it knows without a remote call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderHealth {
    /// Serving normally.
    Ok,
    /// Still serving (from cache) but the key service is having trouble.
    Degraded {
        /// What is wrong, for Status and /readyz; never contains secrets.
        reason: String,
    },
    /// The key service said authoritatively that the key may not be used.
    Revoked {
        /// Which key and why.
        reason: String,
    },
}

/// Why a provider call failed. Cloneable so one single-flight result can reach every waiter.
#[derive(Debug, Clone)]
pub enum ProviderError {
    /// The wrapped KEK did not unwrap: not produced by that key version, or altered.
    UnwrapFailed {
        /// The key version that was tried.
        version: String,
    },
    /// The annotations name a key version this provider does not have or may not use.
    UnknownKeyVersion {
        /// The version as read from the request, already length-checked.
        version: String,
    },
    /// The key service said the key may not be used: disabled, deleted, expired, forbidden.
    Revoked {
        /// Which key and why, without secrets.
        reason: String,
    },
    /// The key service refused the call for throttling (HTTP 429); worth retrying later.
    Throttled {
        /// What was being done.
        operation: String,
        /// How long the service asked the caller to wait, if it said.
        retry_after: Option<std::time::Duration>,
    },
    /// The key service could not be reached or did not answer in time; worth retrying later.
    Unavailable {
        /// What was being done ("unwrap with version 3", "read key").
        operation: String,
        /// The underlying failure.
        source: Arc<dyn std::error::Error + Send + Sync>,
    },
    /// The provider's configuration or local state is wrong and needs an operator.
    Misconfigured {
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// The OS random number generator failed.
    Random,
}

impl std::fmt::Display for ProviderError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::UnwrapFailed { version } => {
                write!(
                    f,
                    "the wrapped KEK does not unwrap with key version {version:?}"
                )
            }
            Self::UnknownKeyVersion { version } => {
                write!(
                    f,
                    "key version {version:?} is not one this plugin is configured to use"
                )
            }
            Self::Revoked { reason } => write!(f, "key revoked: {reason}"),
            Self::Throttled {
                operation,
                retry_after,
            } => match retry_after {
                Some(wait) => write!(f, "key service throttled {operation}; retry after {wait:?}"),
                None => write!(f, "key service throttled {operation}"),
            },
            Self::Unavailable { operation, source } => {
                write!(f, "key service unavailable during {operation}: {source}")
            }
            Self::Misconfigured { reason } => write!(f, "key provider misconfigured: {reason}"),
            Self::Random => f.write_str("the operating system's random number generator failed"),
        }
    }
}

impl std::error::Error for ProviderError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unavailable { source, .. } => Some(source.as_ref()),
            _ => None,
        }
    }
}

impl From<crate::crypto::RandomUnavailable> for ProviderError {
    fn from(_: crate::crypto::RandomUnavailable) -> Self {
        Self::Random
    }
}

/// The length of the DEK kube-apiserver's KMS v1 envelope sends to Encrypt.
pub const V1_DEK_LEN: usize = 32;

/// The RSA padding Azure's Go KMS plugin encrypted a DEK with: RSA-OAEP-256 on KMS v2, RSA1_5
/// on KMS v1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyAlgorithm {
    /// RSA-OAEP with SHA-256 (the Go plugin's KMS v2).
    RsaOaep256,
    /// RSA PKCS#1 v1.5 (the Go plugin's KMS v1).
    Rsa15,
}

impl LegacyAlgorithm {
    /// The name Key Vault uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::RsaOaep256 => "RSA-OAEP-256",
            Self::Rsa15 => "RSA1_5",
        }
    }
}

/// How the Go plugin stored its RSA ciphertext, which also says what Key Vault decrypts it to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LegacyLayout {
    /// Older releases (track-1 SDK): stored as ASCII base64url; Key Vault decrypts to the DEK.
    Base64Url,
    /// Newer releases (azkeys): stored raw; Key Vault decrypts to the DEK's ASCII base64url.
    Raw,
}

/// One record of Azure's Go KMS plugin, parsed by `envelope::legacy`: attacker input, checked
/// for shape only. [`KeyProvider::decrypt_legacy`] resolves it within its own configuration.
#[derive(Clone, PartialEq, Eq)]
pub struct LegacyCiphertext {
    /// v2: the request's key_id, which must be the hash of a configured key version; v1: none,
    /// and the configured versions of the old plugin are tried.
    pub key_id: Option<String>,
    /// The padding.
    pub algorithm: LegacyAlgorithm,
    /// The layout it was stored in.
    pub layout: LegacyLayout,
    /// The RSA ciphertext (already base64url-decoded for the older layout).
    pub rsa: Vec<u8>,
}

impl std::fmt::Debug for LegacyCiphertext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LegacyCiphertext")
            .field("key_id", &self.key_id)
            .field("algorithm", &self.algorithm)
            .field("layout", &self.layout)
            .field("rsa_len", &self.rsa.len())
            .finish()
    }
}

impl LegacyCiphertext {
    /// kube-apiserver's plaintext from what Key Vault decrypted, or `None` when that is not
    /// what the Go plugin encrypted: then the key version was not the one that encrypted, or
    /// the record was altered. The newer layout must decrypt to canonical base64url. RSA1_5
    /// with a wrong key may "succeed" (a service that answers bad padding with a synthetic
    /// message, as the emulator does): an older-layout v1 record, which has nothing else to
    /// check, must then decrypt to 32 bytes, the length of every DEK kube-apiserver's KMS v1
    /// sends — a wrong version still passes with a probability near 1/245 per version tried.
    pub fn plaintext_from(&self, decrypted: &[u8]) -> Option<zeroize::Zeroizing<Vec<u8>>> {
        let plaintext = match self.layout {
            LegacyLayout::Base64Url => zeroize::Zeroizing::new(decrypted.to_vec()),
            LegacyLayout::Raw => crate::crypto::base64url::decode(decrypted)?,
        };
        let unverifiable =
            self.algorithm == LegacyAlgorithm::Rsa15 && self.layout == LegacyLayout::Base64Url;
        if plaintext.is_empty() || (unverifiable && plaintext.len() != V1_DEK_LEN) {
            return None;
        }
        Some(plaintext)
    }
}

/// What a provider other than Azure's answers for a Go plugin record.
fn legacy_unsupported(kind: &str) -> ProviderError {
    ProviderError::Misconfigured {
        reason: format!(
            "this record was written by Azure's Go KMS plugin; the {kind} provider cannot read it"
        ),
    }
}

/// A remote (or local) key that wraps the plugin's local KEKs.
///
/// Implementations are called from the envelope only: `refresh` from the background refresher,
/// `wrap` when a new local KEK is made, `unwrap` on a cache miss in Decrypt. None of them is on
/// the steady-state hot path.
#[async_trait]
pub trait KeyProvider: Send + Sync + 'static {
    /// A short name for logs and metrics: "local", "azure-keyvault", "pkcs11".
    fn kind(&self) -> &'static str;

    /// The key this provider unwraps with; `None` if it cannot say, and then no other provider
    /// is ever taken for the same key.
    fn identity(&self) -> Option<KeyIdentity> {
        None
    }

    /// Reads the key service and returns the version new KEKs must be wrapped with. Called at
    /// start-up and every refresh interval; a changed result rotates the local KEK.
    async fn refresh(&self) -> Result<KeyVersion, ProviderError>;

    /// How long one `refresh` may take in all when it makes several remote calls in turn (the
    /// guard allows it this long rather than one call's deadline); `None`: one call's deadline.
    fn refresh_budget(&self) -> Option<std::time::Duration> {
        None
    }

    /// The version the last successful `refresh` returned, without a remote call.
    async fn current_key(&self) -> Option<KeyVersion>;

    /// Wraps `kek` under `key`. The result is opaque bytes stored in the annotations.
    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError>;

    /// Unwraps `wrapped` with the key version named `version`. Both arguments come from etcd and
    /// are untrusted: a version outside this provider's configuration is `UnknownKeyVersion`,
    /// resolved without any network call.
    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError>;

    /// Refuses, without any remote call, an unwrap that `unwrap` would refuse without one: a
    /// version outside the configuration or of the wrong shape, wrapped bytes of a length no
    /// wrap produces, a refusal the provider remembers. `unwrap` makes the same checks; this
    /// lets a caller tell such a local refusal apart from the key service's answer — it proves
    /// nothing about the service, so the circuit breaker neither counts it nor spends a trial
    /// on it. The default refuses nothing.
    fn check_unwrap(&self, version: &str, wrapped: &[u8]) -> Result<(), ProviderError> {
        let _ = (version, wrapped);
        Ok(())
    }

    /// Decrypts a DEK that Azure's Go KMS plugin encrypted directly with Key Vault, on a key
    /// version this provider is configured to read (see [`LegacyCiphertext`]); returns
    /// kube-apiserver's plaintext. A key_id that names no configured version is refused by
    /// [`KeyProvider::check_legacy`] without a remote call. Only the Azure provider can.
    async fn decrypt_legacy(
        &self,
        record: &LegacyCiphertext,
    ) -> Result<zeroize::Zeroizing<Vec<u8>>, ProviderError> {
        Err(self
            .check_legacy(record)
            .err()
            .unwrap_or_else(|| legacy_unsupported(self.kind())))
    }

    /// Refuses, without a remote call, what `decrypt_legacy` would refuse without one (as
    /// `check_unwrap` does for `unwrap`). The default refuses everything: not supported.
    fn check_legacy(&self, record: &LegacyCiphertext) -> Result<(), ProviderError> {
        let _ = record;
        Err(legacy_unsupported(self.kind()))
    }

    /// The provider's health as of its last remote call; makes no remote call itself.
    async fn health(&self) -> ProviderHealth;
}
