//! The Azure Key Vault and Managed HSM provider: local KEKs wrapped by a key that never leaves
//! the vault — RSA-OAEP-256 on RSA / RSA-HSM keys, A256KW or CKM_AES_KEY_WRAP_PAD on Managed HSM
//! oct-HSM keys — through Microsoft's official Rust SDK (azure_security_keyvault_keys) over the
//! shared Azure access of [`azure_access`]: its clouds, credentials and HTTPS client.
//!
//! The configuration names one vault and key, followed at its latest version (a new version
//! rotates the envelope's KEK) or pinned to one, plus decrypt-only keys kept after moving to
//! another key or vault. The version written into the annotations is Key Vault's 32-hex version;
//! the key_id is the SHA-256 of the version's URL ([`key_id`]), as Azure's Go plugin reports it.
//!
//! An annotation's version is attacker input: it is checked for shape and only ever joined to a
//! vault and key name from the configuration — no host or key name is ever taken from etcd, and
//! a malformed version or wrapped KEK is refused without a remote call. Every remote operation
//! runs under the shared retry policy ([`retry`]) with the SDK's own retries off, and its
//! failure is classified and mapped ([`errors`]) so that the envelope can tell a revoked key from
//! an outage. Nothing here logs a KEK, a wrapped KEK or a token.

pub mod client;
pub mod errors;
pub mod key_id;

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use azure_core::time::OffsetDateTime;
use azure_security_keyvault_keys::models::{Key, KeyType};

use super::{
    KeyIdentity, KeyProvider, KeyVersion, LegacyCiphertext, ProviderError, ProviderHealth,
};
use crate::crypto::{SecretKey, fill_random};
use azure_access::auth::{self, AuthSettings, AzureEnv, Resolution};
use azure_access::client::{self as transport, TransportOptions};
use azure_access::cloud::{Cloud, CloudName};
use azure_access::retry::{self, RetryPolicy};
use client::{VaultClient, WrapAlgorithm};
use errors::{Call, Failure};
use key_id::{KeyRef, is_valid_version};
use zeroize::Zeroizing;

/// The smallest RSA key accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;
/// Versions remembered as belonging to one configured key (beyond that, the map starts over).
const MAX_LEARNED_VERSIONS: usize = 4096;
/// How long a configured key's "no such version" (404) answer is remembered, so that a made-up
/// version read from etcd costs one round of remote calls, not one per Decrypt.
const MISSING_VERSION_TTL: std::time::Duration = std::time::Duration::from_secs(60);
/// The length of a 32-byte KEK wrapped with A256KW or CKM_AES_KEY_WRAP_PAD.
const AES_WRAPPED_LEN: usize = 40;
/// The remote operations one refresh makes in turn at most: read the key, then — when the
/// self-test is due — wrap and unwrap a test KEK. The refresh's budget is this many call
/// deadlines, shared by them (see `refresh_budget`).
const REFRESH_CALLS: u32 = 3;

/// Which version of the configured key wraps new KEKs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyVersionChoice {
    /// The newest version, read at every refresh.
    Latest,
    /// This version (32 lowercase hex digits).
    Pinned(String),
}

/// A key kept to unwrap what it wrapped before the configuration moved to another key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecryptOnlyKey {
    /// The vault and key.
    pub key: KeyRef,
    /// Only this version, or any version of the key.
    pub version: Option<String>,
}

/// The Azure provider's validated configuration (built by `config.rs`). No secrets: only where
/// they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AzureConfig {
    /// The vault and key that wrap new KEKs.
    pub key: KeyRef,
    /// Its latest version, or a pinned one.
    pub key_version: KeyVersionChoice,
    /// Keys (or key versions) kept to decrypt only.
    pub decrypt_only_keys: Vec<DecryptOnlyKey>,
    /// Versions of `key` that Azure's Go KMS plugin encrypted DEKs with directly; read with
    /// Key Vault `decrypt` (see `envelope::legacy`).
    pub legacy_key_versions: Vec<String>,
    /// The algorithm for oct-HSM keys (A256KW or CKM_AES_KEY_WRAP_PAD); RSA keys always use
    /// RSA-OAEP-256.
    pub oct_wrap_algorithm: WrapAlgorithm,
    /// How to authenticate.
    pub auth: AuthSettings,
    /// The cloud, if configured (otherwise azure.json's, or the public cloud).
    pub cloud: Option<CloudName>,
    /// Where tokens are requested, overriding the cloud's authority.
    pub authority_host: Option<String>,
    /// A custom cloud's Key Vault DNS suffix (or an override of a named cloud's).
    pub vault_suffix: Option<String>,
    /// A custom cloud's Managed HSM DNS suffix (or an override of a named cloud's).
    pub managed_hsm_suffix: Option<String>,
    /// The HTTPS client's CA file and timeouts.
    pub transport: TransportOptions,
    /// The per-operation deadline and backoff.
    pub retry: RetryPolicy,
    /// How often a refresh also runs the wrap/unwrap self-test; other refreshes only read the
    /// key. The self-test also runs at once after any failure and on a new key version.
    pub self_test_interval: std::time::Duration,
    /// Accept an authentication challenge whose resource is not a parent domain of the vault's
    /// host (an emulator, a private DNS name). Weakens the check that tokens go to Key Vault.
    pub insecure_skip_challenge_resource_check: bool,
}

impl AzureConfig {
    /// The default `self_test_interval`: 10 minutes, against the 1-minute refresh.
    pub const DEFAULT_SELF_TEST_INTERVAL: std::time::Duration = std::time::Duration::from_secs(600);

    /// A configuration for `key` with every other setting at its default.
    pub fn new(key: KeyRef) -> Self {
        Self {
            key,
            key_version: KeyVersionChoice::Latest,
            decrypt_only_keys: Vec::new(),
            legacy_key_versions: Vec::new(),
            oct_wrap_algorithm: WrapAlgorithm::A256Kw,
            auth: AuthSettings::default(),
            cloud: None,
            authority_host: None,
            vault_suffix: None,
            managed_hsm_suffix: None,
            transport: TransportOptions::default(),
            retry: RetryPolicy::DEFAULT,
            self_test_interval: Self::DEFAULT_SELF_TEST_INTERVAL,
            insecure_skip_challenge_resource_check: false,
        }
    }

    /// The cloud in effect: the configured one, else azure.json's (`from_auth`), else public;
    /// with the configured authority (or, for workload identity, AZURE_AUTHORITY_HOST) and
    /// suffix overrides applied.
    pub fn effective_cloud(&self, resolution: Option<&Resolution>) -> Result<Cloud, ProviderError> {
        let name = self
            .cloud
            .or_else(|| resolution.and_then(|r| r.cloud))
            .unwrap_or(CloudName::Public);
        let authority = self
            .authority_host
            .clone()
            .or_else(|| resolution.and_then(|r| r.authority_host.clone()));
        let mut cloud = match Cloud::known(name) {
            Some(known) => known,
            None => {
                let (Some(authority), Some(vault)) = (&authority, &self.vault_suffix) else {
                    return Err(ProviderError::Misconfigured {
                        reason: "azure.cloud is custom but azure.authority_host or \
                                 azure.vault_suffix is not set"
                            .to_owned(),
                    });
                };
                Cloud::custom(
                    authority,
                    vault,
                    self.managed_hsm_suffix.as_deref().unwrap_or(""),
                )
            }
        };
        if let Some(authority) = &authority {
            cloud = cloud.with_authority_host(authority);
        }
        if name != CloudName::Custom
            && (self.vault_suffix.is_some() || self.managed_hsm_suffix.is_some())
        {
            cloud = Cloud::custom(
                cloud.authority_host(),
                self.vault_suffix.as_deref().unwrap_or(cloud.vault_suffix()),
                self.managed_hsm_suffix
                    .as_deref()
                    .unwrap_or(cloud.managed_hsm_suffix()),
            );
        }
        Ok(cloud)
    }

    /// Every configured key, the current one first.
    fn targets(&self) -> Vec<Target> {
        std::iter::once(Target {
            key: self.key.clone(),
            only_version: None,
        })
        .chain(self.decrypt_only_keys.iter().map(|old| Target {
            key: old.key.clone(),
            only_version: old.version.clone(),
        }))
        .collect()
    }
}

/// A configured key that may unwrap: the current key (any version) or a decrypt-only one.
#[derive(Debug, Clone)]
struct Target {
    key: KeyRef,
    only_version: Option<String>,
}

/// The current key version as of the last refresh.
#[derive(Debug, Clone)]
struct Current {
    version: KeyVersion,
    algorithm: WrapAlgorithm,
    wrapped_len: usize,
    created: Option<OffsetDateTime>,
}

/// What the provider knows without a remote call.
#[derive(Default)]
struct State {
    current: Option<Current>,
    /// Why the last refresh failed, and whether the answer was authoritative.
    refresh_failure: Option<(String, bool)>,
    /// The last wrap/unwrap/self-test failure that was transient, cleared by a success.
    call_fault: Option<String>,
    /// The last authoritative refusal concerning the current key, cleared by a refresh.
    call_revoked: Option<String>,
    /// Versions already unwrapped, by the index of the target that holds them.
    learned: HashMap<String, usize>,
    /// (target index, version) pairs the vault said it does not have, and when.
    missing: HashMap<(usize, String), std::time::Instant>,
    /// When the wrap/unwrap self-test last passed, for the key version it passed with.
    self_test_passed: Option<(tokio::time::Instant, KeyVersion)>,
}

impl State {
    /// Whether a refresh that read `current` must run the self-test too: at start (it never
    /// passed), for a new key version, when the interval has passed, and at once after any
    /// failure — of the last refresh, or of a wrap or unwrap since (an authoritative refusal or
    /// a transient fault not cleared by a later success).
    fn self_test_due(&self, current: &KeyVersion, interval: std::time::Duration) -> bool {
        let passed_for_this_version = match &self.self_test_passed {
            Some((at, version)) if version == current => Some(at),
            _ => None,
        };
        passed_for_this_version.is_none_or(|at| at.elapsed() >= interval)
            || self.refresh_failure.is_some()
            || self.call_fault.is_some()
            || self.call_revoked.is_some()
    }
}

/// The Azure Key Vault / Managed HSM key provider.
pub struct AzureKeyVaultProvider {
    inner: Arc<Inner>,
}

struct Inner {
    config: AzureConfig,
    targets: Vec<Target>,
    /// One client per vault host.
    clients: HashMap<String, VaultClient>,
    auth: String,
    state: Mutex<State>,
}

impl AzureKeyVaultProvider {
    /// Authenticates with the detected (or configured) credentials, reads the key and checks
    /// that it can wrap: exists, is enabled and within nbf/exp, is RSA (≥ 2048 bits) or
    /// oct-HSM, and permits wrapKey and unwrapKey. The error says exactly what is wrong.
    pub async fn open(config: AzureConfig) -> Result<Self, ProviderError> {
        Self::open_with_env(config, &AzureEnv::process()).await
    }

    /// [`AzureKeyVaultProvider::open`] with the environment given.
    pub async fn open_with_env(config: AzureConfig, env: &AzureEnv) -> Result<Self, ProviderError> {
        let provider = Self::new_with_env(config, env)?;
        provider.refresh().await?;
        Ok(provider)
    }

    /// A provider that has made no remote call yet: credentials are resolved and read (files,
    /// variables), clients built. The first `refresh` reads the key.
    pub fn new_with_env(config: AzureConfig, env: &AzureEnv) -> Result<Self, ProviderError> {
        let resolution = auth::resolve(&config.auth, env)?;
        let cloud = config.effective_cloud(Some(&resolution))?;
        let targets = config.targets();
        if !config.insecure_skip_challenge_resource_check {
            for target in &targets {
                let host = target.key.host().split(':').next().unwrap_or_default();
                if !cloud.owns_host(host) {
                    return Err(ProviderError::Misconfigured {
                        reason: format!(
                            "the vault host {} is not a Key Vault ({}) or Managed HSM ({}) host \
                             of the configured cloud; fix azure.vault_url / azure.cloud, or set \
                             azure.vault_suffix for a custom cloud",
                            target.key.host(),
                            cloud.vault_suffix(),
                            cloud.managed_hsm_suffix()
                        ),
                    });
                }
            }
        }
        let http = transport::http_client(&config.transport, transport::Route::Remote)?;
        let options = transport::client_options(&http, &cloud);
        let identity_http =
            transport::http_client(&config.transport, transport::Route::ManagedIdentity)?;
        let identity_options = transport::client_options(&identity_http, &cloud);
        let credential = resolution
            .auth
            .credential(&options, &identity_options)?
            .token_credential();
        let mut clients = HashMap::new();
        for target in &targets {
            if !clients.contains_key(target.key.host()) {
                let vault = VaultClient::new(
                    &target.key.vault_url(),
                    Arc::clone(&credential),
                    options.clone(),
                    !config.insecure_skip_challenge_resource_check,
                )?;
                clients.insert(target.key.host().to_owned(), vault);
            }
        }
        let auth = format!("{}, {}", resolution.auth.describe(), resolution.chosen_by);
        tracing::info!(
            key = %config.key,
            authentication = %auth,
            authority = cloud.authority_host(),
            deadline_ms = config.retry.deadline.as_millis() as u64,
            "Azure Key Vault provider configured"
        );
        Ok(Self {
            inner: Arc::new(Inner {
                targets,
                clients,
                auth,
                config,
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The configuration this provider was opened with.
    pub fn config(&self) -> &AzureConfig {
        &self.inner.config
    }

    /// How it authenticates, and why that mode was chosen.
    pub fn authentication(&self) -> &str {
        &self.inner.auth
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn client(&self, key: &KeyRef) -> Result<&VaultClient, ProviderError> {
        self.inner
            .clients
            .get(key.host())
            .ok_or_else(|| ProviderError::Misconfigured {
                reason: format!("no client for vault {}", key.host()),
            })
    }

    /// The retry policy for a refresh's next call: the configured one, with whatever is left of
    /// the refresh's budget (ending at `give_up`) as its deadline. A Retry-After that fits in
    /// what is left is waited out even when it is longer than one call's deadline: the refresh
    /// runs in the background, where nobody's gRPC deadline is waiting on it.
    fn refresh_policy(&self, give_up: tokio::time::Instant) -> RetryPolicy {
        RetryPolicy {
            deadline: give_up.saturating_duration_since(tokio::time::Instant::now()),
            ..self.inner.config.retry
        }
    }

    async fn get_key(
        &self,
        version: Option<&str>,
        policy: &RetryPolicy,
    ) -> Result<Key, ProviderError> {
        let key = &self.inner.config.key;
        let client = self.client(key)?;
        let operation = errors::describe(Call::GetKey, key, version);
        retry::run(policy, &operation, || async {
            client.get_key(key.name(), version).await.map_err(|error| {
                errors::classify(error, Call::GetKey, key, version).into_classified()
            })
        })
        .await
    }

    async fn wrap_remote(
        &self,
        key: &KeyRef,
        version: &str,
        algorithm: WrapAlgorithm,
        kek: &[u8],
        policy: &RetryPolicy,
    ) -> Result<Vec<u8>, ProviderError> {
        let client = self.client(key)?;
        let operation = errors::describe(Call::Wrap, key, Some(version));
        let (wrapped, kid) = retry::run(policy, &operation, || async {
            client
                .wrap(key.name(), version, algorithm, kek)
                .await
                .map_err(|error| {
                    errors::classify(error, Call::Wrap, key, Some(version)).into_classified()
                })
        })
        .await?;
        if let Some(kid) = kid
            && !key.matches_kid(&kid, version)
        {
            return Err(ProviderError::Misconfigured {
                reason: format!("the vault wrapped with {kid:?} when asked for {operation}"),
            });
        }
        Ok(wrapped)
    }

    /// One unwrap, retried; `Err(None)` when the key has no such version (404).
    async fn unwrap_remote(
        &self,
        key: &KeyRef,
        version: &str,
        algorithm: WrapAlgorithm,
        wrapped: &[u8],
        policy: &RetryPolicy,
    ) -> Result<SecretKey, Option<ProviderError>> {
        let client = self.client(key).map_err(Some)?;
        let operation = errors::describe(Call::Unwrap, key, Some(version));
        let result = retry::run(policy, &operation, || async {
            client
                .unwrap(key.name(), version, algorithm, wrapped)
                .await
                .map_err(
                    |error| match errors::classify(error, Call::Unwrap, key, Some(version)) {
                        // Marked so that the loop below can tell "no such version" from the rest.
                        Failure::NotFound(mut classified) => {
                            classified.error = ProviderError::UnknownKeyVersion {
                                version: version.to_owned(),
                            };
                            classified
                        }
                        Failure::Other(classified) => classified,
                    },
                )
        })
        .await;
        match result {
            Ok(bytes) => SecretKey::from_slice(&bytes).ok_or_else(|| {
                Some(ProviderError::UnwrapFailed {
                    version: version.to_owned(),
                })
            }),
            Err(ProviderError::UnknownKeyVersion { .. }) => Err(None),
            Err(other) => Err(Some(other)),
        }
    }

    /// Reads the configured key version and checks it can wrap; gives up at `give_up`.
    async fn read_current(&self, give_up: tokio::time::Instant) -> Result<Current, ProviderError> {
        let config = &self.inner.config;
        let pinned = match &config.key_version {
            KeyVersionChoice::Latest => None,
            KeyVersionChoice::Pinned(version) => Some(version.as_str()),
        };
        let key = self.get_key(pinned, &self.refresh_policy(give_up)).await?;
        let described = match pinned {
            Some(version) => format!("version {version} of {}", config.key),
            None => format!("the latest version of {}", config.key),
        };
        let jwk = key
            .key
            .as_ref()
            .ok_or_else(|| ProviderError::Misconfigured {
                reason: format!("the vault returned {described} without its public key"),
            })?;
        let kid = jwk.kid.as_deref().unwrap_or_default();
        let version = config
            .key
            .version_of_kid(kid)
            .filter(|version| pinned.is_none_or(|pinned| pinned == version))
            .ok_or_else(|| ProviderError::Misconfigured {
                reason: format!("the vault answered with kid {kid:?} for {described}"),
            })?;
        let subject = format!("version {version} of {}", config.key);
        let attributes = key.attributes.as_ref();
        if attributes.and_then(|a| a.enabled) == Some(false) {
            return Err(ProviderError::Revoked {
                reason: format!("{subject} is disabled"),
            });
        }
        let now = OffsetDateTime::now_utc();
        if let Some(expires) = attributes.and_then(|a| a.expires)
            && expires <= now
        {
            return Err(ProviderError::Revoked {
                reason: format!("{subject} expired at {expires}"),
            });
        }
        if let Some(not_before) = attributes.and_then(|a| a.not_before)
            && not_before > now
        {
            return Err(ProviderError::Revoked {
                reason: format!("{subject} is not valid before {not_before}"),
            });
        }
        let (algorithm, wrapped_len) = match &jwk.kty {
            Some(KeyType::Rsa | KeyType::RsaHsm) => {
                let modulus = jwk.n.as_deref().unwrap_or_default();
                let modulus = modulus
                    .iter()
                    .position(|b| *b != 0)
                    .map_or(&[][..], |start| &modulus[start..]);
                let bits = modulus.len() * 8;
                if bits < MIN_RSA_BITS {
                    return Err(ProviderError::Misconfigured {
                        reason: format!(
                            "{subject} is RSA with a {bits}-bit modulus; at least \
                             {MIN_RSA_BITS} bits are needed"
                        ),
                    });
                }
                (WrapAlgorithm::RsaOaep256, modulus.len())
            }
            Some(KeyType::Oct | KeyType::OctHsm) => (config.oct_wrap_algorithm, AES_WRAPPED_LEN),
            other => {
                let kty = other
                    .as_ref()
                    .map_or_else(|| "of no type".to_owned(), |kty| format!("{kty:?}"));
                return Err(ProviderError::Misconfigured {
                    reason: format!(
                        "{subject} is {kty}; kube-kms needs an RSA or RSA-HSM key (Key Vault, \
                         wrapped with RSA-OAEP-256) or an oct-HSM key (Managed HSM, wrapped with \
                         {})",
                        config.oct_wrap_algorithm.name()
                    ),
                });
            }
        };
        if let Some(ops) = &jwk.key_ops {
            let permits = |op: &str| ops.iter().any(|have| have.eq_ignore_ascii_case(op));
            let missing: Vec<&str> = ["wrapKey", "unwrapKey"]
                .into_iter()
                .filter(|op| !permits(op))
                .collect();
            if !missing.is_empty() {
                return Err(ProviderError::Revoked {
                    reason: format!(
                        "{subject} does not permit {} (its key_ops are {})",
                        missing.join(" and "),
                        ops.join(", ")
                    ),
                });
            }
        }
        let key_version = KeyVersion::new(&config.key.key_id(&version), &version)?;
        Ok(Current {
            version: key_version,
            algorithm,
            wrapped_len,
            created: attributes.and_then(|a| a.created),
        })
    }

    /// Wraps and unwraps a random value with `current`: proves that the identity still holds
    /// wrapKey and unwrapKey and that the key still unwraps (a disabled key refuses unwrap).
    /// Gives up at `give_up`.
    async fn self_test(
        &self,
        current: &Current,
        give_up: tokio::time::Instant,
    ) -> Result<(), ProviderError> {
        let probe = SecretKey::generate()?;
        let key = &self.inner.config.key;
        let wrapped = self
            .wrap_remote(
                key,
                current.version.version(),
                current.algorithm,
                probe.expose(),
                &self.refresh_policy(give_up),
            )
            .await?;
        let unwrapped = self
            .unwrap_remote(
                key,
                current.version.version(),
                current.algorithm,
                &wrapped,
                &self.refresh_policy(give_up),
            )
            .await
            .map_err(|error| {
                error.unwrap_or_else(|| ProviderError::Revoked {
                    reason: format!(
                        "version {} of {key} was not found",
                        current.version.version()
                    ),
                })
            })?;
        if unwrapped.expose() != probe.expose() {
            return Err(ProviderError::Misconfigured {
                reason: format!(
                    "version {} of {key} unwrapped a test KEK to other bytes",
                    current.version.version()
                ),
            });
        }
        Ok(())
    }

    /// Notes a wrap or unwrap outcome for `health`: a transient failure degrades it until the
    /// next success; an authoritative refusal about the current key revokes it until the next
    /// successful refresh. Bad input (UnwrapFailed, UnknownKeyVersion) changes nothing.
    fn record_call<T>(&self, result: &Result<T, ProviderError>, about_current_key: bool) {
        let mut state = self.lock();
        match result {
            Ok(_) => state.call_fault = None,
            Err(error @ (ProviderError::Unavailable { .. } | ProviderError::Throttled { .. })) => {
                state.call_fault = Some(error.to_string());
            }
            Err(ProviderError::Revoked { reason }) if about_current_key => {
                state.call_revoked = Some(reason.clone());
            }
            Err(_) => {}
        }
    }

    /// The configured key versions that may read `record`, without a remote call. v2: the one
    /// whose key_id (SHA-256 of its versioned URL) is the record's — among the current version,
    /// `azure.legacy_key_versions` and the versions named in `azure.decrypt_only_keys`. v1:
    /// every version in `azure.legacy_key_versions`, in order. None: refused.
    fn legacy_candidates(
        &self,
        record: &LegacyCiphertext,
    ) -> Result<Vec<(KeyRef, String)>, ProviderError> {
        let config = &self.inner.config;
        let legacy = config
            .legacy_key_versions
            .iter()
            .map(|version| (config.key.clone(), version.clone()));
        let candidates: Vec<(KeyRef, String)> = match &record.key_id {
            None => legacy.collect(),
            Some(key_id) => {
                let current = self
                    .lock()
                    .current
                    .as_ref()
                    .map(|current| (config.key.clone(), current.version.version().to_owned()));
                let pinned_old = config.decrypt_only_keys.iter().filter_map(|old| {
                    old.version
                        .as_ref()
                        .map(|version| (old.key.clone(), version.clone()))
                });
                current
                    .into_iter()
                    .chain(legacy)
                    .chain(pinned_old)
                    .filter(|(key, version)| key.key_id(version) == *key_id)
                    .take(1)
                    .collect()
            }
        };
        if candidates.is_empty() {
            return Err(no_legacy_version(record));
        }
        Ok(candidates)
    }

    /// One Key Vault `decrypt` of a Go plugin record, retried; `Ok(None)` when the version is
    /// not the one that encrypted it (the service refused the padding, or the result is not
    /// what the Go plugin encrypted).
    async fn decrypt_remote(
        &self,
        key: &KeyRef,
        version: &str,
        record: &LegacyCiphertext,
    ) -> Result<Option<Zeroizing<Vec<u8>>>, ProviderError> {
        let client = self.client(key)?;
        let operation = errors::describe(Call::Decrypt, key, Some(version));
        let result = retry::run(&self.inner.config.retry, &operation, || async {
            client
                .decrypt(key.name(), version, record.algorithm, &record.rsa)
                .await
                .map_err(
                    |error| match errors::classify(error, Call::Decrypt, key, Some(version)) {
                        Failure::NotFound(mut classified) => {
                            classified.error = ProviderError::UnknownKeyVersion {
                                version: version.to_owned(),
                            };
                            classified
                        }
                        Failure::Other(classified) => classified,
                    },
                )
        })
        .await;
        match result {
            Ok(decrypted) => Ok(record.plaintext_from(&decrypted)),
            Err(ProviderError::UnwrapFailed { .. }) => Ok(None),
            Err(other) => Err(other),
        }
    }

    /// The order in which configured keys are asked to unwrap `version`.
    fn candidates(&self, version: &str) -> Vec<usize> {
        let learned = self.lock().learned.get(version).copied();
        let targets = &self.inner.targets;
        let mut order: Vec<usize> = learned.into_iter().collect();
        let exact =
            (0..targets.len()).filter(|&i| targets[i].only_version.as_deref() == Some(version));
        let any = (0..targets.len()).filter(|&i| targets[i].only_version.is_none());
        for index in exact.chain(any) {
            if !order.contains(&index) {
                order.push(index);
            }
        }
        order
    }

    /// Whether `target` said recently that it has no `version`.
    fn known_missing(&self, target: usize, version: &str) -> bool {
        let mut state = self.lock();
        let key = (target, version.to_owned());
        match state.missing.get(&key) {
            Some(since) if since.elapsed() < MISSING_VERSION_TTL => true,
            Some(_) => {
                state.missing.remove(&key);
                false
            }
            None => false,
        }
    }

    fn remember_missing(&self, target: usize, version: &str) {
        let mut state = self.lock();
        if state.missing.len() >= MAX_LEARNED_VERSIONS {
            state.missing.clear();
        }
        state
            .missing
            .insert((target, version.to_owned()), std::time::Instant::now());
    }

    fn learn(&self, version: &str, target: usize) {
        let mut state = self.lock();
        if state.learned.len() >= MAX_LEARNED_VERSIONS {
            state.learned.clear();
        }
        state.learned.insert(version.to_owned(), target);
    }
}

/// The refusal of a Go plugin record that no configured key version may read.
fn no_legacy_version(record: &LegacyCiphertext) -> ProviderError {
    ProviderError::UnknownKeyVersion {
        version: match &record.key_id {
            // Attacker input of up to 1 KiB: only a prefix, cut at a character boundary.
            Some(key_id) => format!("key_id {}", key_id.chars().take(64).collect::<String>()),
            None => "none listed in azure.legacy_key_versions".to_owned(),
        },
    }
}

/// The algorithms a wrapped KEK of `len` bytes may have been wrapped with, the configured one
/// first; none for a length no supported wrap produces.
fn algorithms_for(len: usize, oct: WrapAlgorithm) -> Vec<WrapAlgorithm> {
    match len {
        AES_WRAPPED_LEN => {
            let other = if oct == WrapAlgorithm::A256Kw {
                WrapAlgorithm::CkmAesKeyWrapPad
            } else {
                WrapAlgorithm::A256Kw
            };
            vec![oct, other]
        }
        256 | 384 | 512 => vec![WrapAlgorithm::RsaOaep256],
        _ => Vec::new(),
    }
}

#[async_trait]
impl KeyProvider for AzureKeyVaultProvider {
    fn kind(&self) -> &'static str {
        "azure-keyvault"
    }

    fn identity(&self) -> Option<KeyIdentity> {
        Some(KeyIdentity::Azure(self.inner.config.key.clone()))
    }

    fn refresh_budget(&self) -> Option<std::time::Duration> {
        Some(
            self.inner
                .config
                .retry
                .deadline
                .saturating_mul(REFRESH_CALLS),
        )
    }

    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        // One budget for the refresh's calls together, which the guard allows as a whole.
        let give_up = tokio::time::Instant::now()
            + self
                .refresh_budget()
                .unwrap_or(self.inner.config.retry.deadline);
        let result = async {
            let current = self.read_current(give_up).await?;
            let previous = self.lock().current.clone();
            if let Some(previous) = &previous
                && previous.version != current.version
                && let (Some(old), Some(new)) = (previous.created, current.created)
                && new < old
            {
                // A key_id never flips back: an older "latest" is a stale replica's answer.
                return Err(ProviderError::Unavailable {
                    operation: format!("refresh {}", self.inner.config.key),
                    source: Arc::new(std::io::Error::other(format!(
                        "the vault answered with version {}, created before the current version \
                         {}; keeping the current one",
                        current.version.version(),
                        previous.version.version()
                    ))),
                });
            }
            Ok(current)
        }
        .await;
        let due = result.as_ref().is_ok_and(|current| {
            self.lock()
                .self_test_due(&current.version, self.inner.config.self_test_interval)
        });
        let result = match result {
            // The routine refresh: one key read. A disabled, deleted or expired key, a key whose
            // key_ops no longer allow wrapping, and an identity without keys/get are all refused
            // by that read, at every refresh.
            Ok(current) if !due => Ok(current),
            Ok(current) => match self.self_test(&current, give_up).await {
                Ok(()) => {
                    // Wrap and unwrap both work again: a transient failure an earlier call left
                    // must not keep health Degraded (no other remote call may come for hours).
                    let mut state = self.lock();
                    state.call_fault = None;
                    state.self_test_passed =
                        Some((tokio::time::Instant::now(), current.version.clone()));
                    Ok(current)
                }
                Err(
                    error @ (ProviderError::Unavailable { .. } | ProviderError::Throttled { .. }),
                ) => {
                    // The key was read: serve it, but say the vault is struggling.
                    tracing::warn!(%error, "the refresh's wrap/unwrap self-test failed transiently");
                    self.lock().call_fault = Some(error.to_string());
                    Ok(current)
                }
                Err(error) => Err(error),
            },
            Err(error) => Err(error),
        };
        let mut state = self.lock();
        match result {
            Ok(current) => {
                if state
                    .current
                    .as_ref()
                    .is_some_and(|old| old.version != current.version)
                {
                    tracing::info!(
                        key = %self.inner.config.key,
                        version = current.version.version(),
                        key_id = current.version.key_id(),
                        "the key has a new version"
                    );
                }
                let version = current.version.clone();
                if state.refresh_failure.is_some() {
                    // The key may have been recovered: forget what it said it did not have.
                    state.missing.clear();
                }
                state.current = Some(current);
                state.refresh_failure = None;
                state.call_revoked = None;
                Ok(version)
            }
            Err(error) => {
                // A revocation's reason alone, as `call_revoked` holds it: Status and /readyz
                // add their own "key revoked" / "revoked" prefix.
                state.refresh_failure = Some(match &error {
                    ProviderError::Revoked { reason } => (reason.clone(), true),
                    other => (other.to_string(), false),
                });
                Err(error)
            }
        }
    }

    async fn current_key(&self) -> Option<KeyVersion> {
        self.lock()
            .current
            .as_ref()
            .map(|current| current.version.clone())
    }

    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        let current = self
            .lock()
            .current
            .clone()
            .filter(|current| current.version == *key)
            .ok_or_else(|| ProviderError::UnknownKeyVersion {
                version: key.version().to_owned(),
            })?;
        let result = self
            .wrap_remote(
                &self.inner.config.key,
                key.version(),
                current.algorithm,
                kek.expose(),
                &self.inner.config.retry,
            )
            .await
            .and_then(|wrapped| {
                if wrapped.len() == current.wrapped_len {
                    Ok(wrapped)
                } else {
                    Err(ProviderError::Misconfigured {
                        reason: format!(
                            "the vault wrapped a KEK into {} bytes with {}; expected {}",
                            wrapped.len(),
                            current.algorithm.name(),
                            current.wrapped_len
                        ),
                    })
                }
            });
        self.record_call(&result, true);
        result
    }

    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        self.check_unwrap(version, wrapped)?;
        let algorithms = algorithms_for(wrapped.len(), self.inner.config.oct_wrap_algorithm);
        for index in self.candidates(version) {
            if self.known_missing(index, version) {
                continue;
            }
            let target = &self.inner.targets[index];
            let mut last = None;
            for algorithm in &algorithms {
                match self
                    .unwrap_remote(
                        &target.key,
                        version,
                        *algorithm,
                        wrapped,
                        &self.inner.config.retry,
                    )
                    .await
                {
                    Ok(kek) => {
                        self.learn(version, index);
                        self.record_call::<()>(&Ok(()), index == 0);
                        return Ok(kek);
                    }
                    Err(None) => {
                        self.remember_missing(index, version);
                        last = None;
                        break;
                    }
                    Err(Some(error @ ProviderError::UnwrapFailed { .. })) => last = Some(error),
                    Err(Some(error)) => {
                        let about_current = index == 0
                            && self
                                .lock()
                                .current
                                .as_ref()
                                .is_some_and(|current| current.version.version() == version);
                        let failed = Err(error);
                        self.record_call::<SecretKey>(&failed, about_current);
                        return failed;
                    }
                }
            }
            if let Some(error) = last {
                return Err(error);
            }
        }
        Err(ProviderError::UnknownKeyVersion {
            version: version.to_owned(),
        })
    }

    async fn decrypt_legacy(
        &self,
        record: &LegacyCiphertext,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        let versions = self.legacy_candidates(record)?;
        let mut last = None;
        for (key, version) in &versions {
            match self.decrypt_remote(key, version, record).await {
                Ok(Some(plaintext)) => {
                    self.record_call::<()>(&Ok(()), false);
                    return Ok(plaintext);
                }
                // Not this version (the padding or the content did not check): the next one.
                Ok(None) => {
                    last = Some(ProviderError::UnwrapFailed {
                        version: version.clone(),
                    });
                }
                Err(error @ ProviderError::UnknownKeyVersion { .. }) => {
                    last.get_or_insert(error);
                }
                Err(error) => {
                    self.record_call::<()>(&Err(error.clone()), false);
                    return Err(error);
                }
            }
        }
        Err(last.unwrap_or_else(|| no_legacy_version(record)))
    }

    fn check_legacy(&self, record: &LegacyCiphertext) -> Result<(), ProviderError> {
        self.legacy_candidates(record).map(drop)
    }

    fn check_unwrap(&self, version: &str, wrapped: &[u8]) -> Result<(), ProviderError> {
        // Attacker input: only a well-formed version, joined to configured keys only.
        if !is_valid_version(version) {
            return Err(ProviderError::UnknownKeyVersion {
                version: version.to_owned(),
            });
        }
        if algorithms_for(wrapped.len(), self.inner.config.oct_wrap_algorithm).is_empty() {
            return Err(ProviderError::UnwrapFailed {
                version: version.to_owned(),
            });
        }
        let candidates = self.candidates(version);
        if candidates
            .iter()
            .all(|&index| self.known_missing(index, version))
        {
            return Err(ProviderError::UnknownKeyVersion {
                version: version.to_owned(),
            });
        }
        Ok(())
    }

    async fn health(&self) -> ProviderHealth {
        let state = self.lock();
        if let Some((reason, true)) = &state.refresh_failure {
            return ProviderHealth::Revoked {
                reason: reason.clone(),
            };
        }
        if let Some(reason) = &state.call_revoked {
            return ProviderHealth::Revoked {
                reason: reason.clone(),
            };
        }
        match (&state.refresh_failure, &state.call_fault) {
            (Some((reason, _)), _) | (None, Some(reason)) => ProviderHealth::Degraded {
                reason: reason.clone(),
            },
            (None, None) => ProviderHealth::Ok,
        }
    }
}

impl fmt::Debug for AzureKeyVaultProvider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureKeyVaultProvider")
            .field("config", &self.inner.config)
            .field("authentication", &self.inner.auth)
            .finish_non_exhaustive()
    }
}

/// A random 32-hex string in the shape of a key version (tests and examples).
#[doc(hidden)]
pub fn random_version() -> String {
    let mut bytes = [0u8; 16];
    let _ = fill_random(&mut bytes);
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_lengths_select_algorithms_without_a_remote_call() {
        assert_eq!(
            algorithms_for(40, WrapAlgorithm::A256Kw),
            [WrapAlgorithm::A256Kw, WrapAlgorithm::CkmAesKeyWrapPad]
        );
        assert_eq!(
            algorithms_for(40, WrapAlgorithm::CkmAesKeyWrapPad),
            [WrapAlgorithm::CkmAesKeyWrapPad, WrapAlgorithm::A256Kw]
        );
        for len in [256, 384, 512] {
            assert_eq!(
                algorithms_for(len, WrapAlgorithm::A256Kw),
                [WrapAlgorithm::RsaOaep256]
            );
        }
        for len in [0, 1, 39, 41, 255, 257, 2048] {
            assert!(
                algorithms_for(len, WrapAlgorithm::A256Kw).is_empty(),
                "{len}"
            );
        }
    }

    #[test]
    fn the_cloud_comes_from_the_configuration_then_azure_json_then_public() {
        let key = KeyRef::new("https://kv.vault.azure.cn", "kek").unwrap();
        let mut config = AzureConfig::new(key);
        assert_eq!(
            config.effective_cloud(None).unwrap().authority_host(),
            "https://login.microsoftonline.com"
        );
        config.cloud = Some(CloudName::China);
        let china = config.effective_cloud(None).unwrap();
        assert_eq!(china.authority_host(), "https://login.chinacloudapi.cn");
        assert!(china.owns_host("kv.vault.azure.cn"));
        config.authority_host = Some("https://localhost:8443".into());
        assert_eq!(
            config.effective_cloud(None).unwrap().authority_host(),
            "https://localhost:8443"
        );
        config.cloud = Some(CloudName::Custom);
        assert!(config.effective_cloud(None).is_err());
        config.vault_suffix = Some("vault.example".into());
        let custom = config.effective_cloud(None).unwrap();
        assert!(custom.owns_host("kv.vault.example"));
    }

    #[test]
    fn the_provider_refuses_a_vault_outside_the_cloud() {
        let key = KeyRef::new("https://kv.vault.azure.net", "kek").unwrap();
        let mut config = AzureConfig::new(key);
        config.cloud = Some(CloudName::China);
        config.auth.mode = auth::AuthMode::ManagedIdentity;
        let error = AzureKeyVaultProvider::new_with_env(config, &AzureEnv::from_pairs(&[]))
            .err()
            .unwrap()
            .to_string();
        assert!(
            error.contains("kv.vault.azure.net") && error.contains("vault.azure.cn"),
            "{error}"
        );
    }
}
