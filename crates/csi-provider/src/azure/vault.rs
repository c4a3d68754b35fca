//! Key Vault reads with a proven identity: a secret's value, a key's public JWK, a
//! certificate's DER, and version listings, through Microsoft's SDK clients
//! (azure_security_keyvault_secrets / _keys / _certificates) over our transport with the SDK's
//! retries off. Each read is retried here within the Mount's deadline: transient failures
//! (429, 408, 5xx, timeouts, dropped connections) after a capped, jittered backoff, a 429 at
//! least as long as its Retry-After (or, as Key Vault sends none, after a throttle backoff from
//! 1 s); when the wait would pass the deadline the read fails at once with
//! [`VaultError::Throttled`] saying when to retry. Authoritative answers (401, 403, 404, 400)
//! are never retried.
//!
//! The vault is `https://<keyvaultName>.<the cloud's vault suffix>/`; nothing else names a
//! host, object names and versions are checked before they go into a URL, and a listing's
//! next page is followed only on the same vault. Never logs or shows a secret's value, a token
//! or a response body: [`VaultError`]'s `Display` names the vault, object type, name, version,
//! HTTP status and the service's error codes only; the SDK's error is kept as its source.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_access::client::{
    InsecureOverrides, Route, TransportOptions, client_options, http_client_with,
};
use azure_access::errors::{SdkError, Verdict, classify};
use azure_access::retry::RetryPolicy;
use azure_core::http::{HttpClient, Url};
use azure_security_keyvault_certificates::models::{
    CertificateClientGetCertificateOptions, ListCertificatePropertiesResult,
};
use azure_security_keyvault_certificates::{CertificateClient, CertificateClientOptions};
use azure_security_keyvault_keys::models::{KeyClientGetKeyOptions, ListKeyPropertiesResult};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_security_keyvault_secrets::models::{
    ListSecretPropertiesResult, SecretClientGetSecretOptions,
};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use futures::TryStreamExt;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::fetched::{FetchedCert, FetchedKey, FetchedSecret, VersionItem};
use super::identity::ResolvedIdentity;
use super::spec::{ObjectKind, VaultName};
use crate::azure::fetched::Fetched;
use crate::lru::{Lru, lock};

/// How vault reads are made.
#[derive(Debug, Clone)]
pub struct VaultSettings {
    /// The HTTPS transport (CA file, connect and per-attempt timeouts).
    pub transport: TransportOptions,
    /// FOR TESTS AND EMULATORS ONLY: DNS overrides (every `<vault>.<suffix>` to an emulator).
    pub insecure: InsecureOverrides,
    /// FOR TESTS AND EMULATORS ONLY: accept an authentication challenge whose resource is not a
    /// parent domain of the vault's host. Weakens the check that tokens go to Key Vault only.
    pub insecure_skip_challenge_resource_check: bool,
    /// The first backoff after a transient failure; doubles up to `max_backoff` (jittered).
    pub initial_backoff: Duration,
    /// The longest backoff after a transient failure other than a 429.
    pub max_backoff: Duration,
    /// The first wait after a 429 without Retry-After (Key Vault sends none); doubles up to
    /// `max_throttle_backoff`.
    pub throttle_backoff: Duration,
    /// The longest wait after a 429 without Retry-After.
    pub max_throttle_backoff: Duration,
    /// At most this many sets of SDK clients are kept (one per proven credential and vault).
    pub max_clients: usize,
    /// A version listing longer than this many pages (25 versions each) is refused.
    pub max_version_pages: usize,
}

impl Default for VaultSettings {
    fn default() -> Self {
        Self {
            transport: TransportOptions::default(),
            insecure: InsecureOverrides::default(),
            insecure_skip_challenge_resource_check: false,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            throttle_backoff: Duration::from_secs(1),
            max_throttle_backoff: Duration::from_secs(16),
            max_clients: 1024,
            max_version_pages: 200,
        }
    }
}

/// Which version a read is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum VersionRef {
    /// The newest version.
    Latest,
    /// One version.
    Pinned(String),
    /// The version listing.
    Listing,
}

/// The object a read is about, for errors and logs: vault host, type, name and version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// `<vault>.<suffix>`.
    pub vault_host: String,
    /// Secret, key or certificate.
    pub kind: ObjectKind,
    /// The object's name.
    pub name: String,
    /// Which version.
    pub version: VersionRef,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = self.kind.as_str();
        let (name, vault) = (&self.name, &self.vault_host);
        match &self.version {
            VersionRef::Latest => write!(f, "{kind} {name} (latest version) in Key Vault {vault}"),
            VersionRef::Pinned(version) => {
                write!(f, "{kind} {name} version {version} in Key Vault {vault}")
            }
            VersionRef::Listing => write!(f, "the versions of {kind} {name} in Key Vault {vault}"),
        }
    }
}

/// A vault read failed. `Display` names the vault, object type, name and version, the HTTP
/// status and the service's error codes; never a value, a token or a response body.
#[derive(Debug, Clone)]
pub enum VaultError {
    /// 404: no such object or version.
    NotFound {
        /// What was read.
        object: ObjectRef,
        /// The service's error codes (` SecretNotFound`), or empty.
        codes: String,
        /// The SDK's error, for logs.
        source: Option<Arc<SdkError>>,
    },
    /// 403: the identity may not read the object (a missing `get` permission or role).
    Forbidden {
        /// What was read.
        object: ObjectRef,
        /// The service's error codes.
        codes: String,
        /// The SDK's error, for logs.
        source: Option<Arc<SdkError>>,
    },
    /// 403 with a `…Disabled` code: the object (or version) is disabled.
    Disabled {
        /// What was read.
        object: ObjectRef,
        /// The service's error codes.
        codes: String,
        /// The SDK's error, for logs.
        source: Option<Arc<SdkError>>,
    },
    /// The identity was refused: Entra ID refused its credentials, or the vault its token
    /// (401).
    Unauthorized {
        /// What was read.
        object: ObjectRef,
        /// Whether Entra ID (not the vault) refused.
        by_entra: bool,
        /// The SDK's error, for logs.
        source: Option<Arc<SdkError>>,
    },
    /// 429, and waiting as asked would pass the deadline (or it persisted until then).
    Throttled {
        /// What was read.
        object: ObjectRef,
        /// When to retry: the Retry-After, or the backoff the provider would have waited.
        retry_after: Option<Duration>,
        /// The SDK's error, for logs.
        source: Option<Arc<SdkError>>,
    },
    /// 408, 5xx, or no answer (refused or dropped connection, timeout), until the deadline.
    Unavailable {
        /// What was read.
        object: ObjectRef,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// The SDK's error, for logs.
        source: Option<Arc<SdkError>>,
    },
    /// The deadline passed while waiting for an answer.
    DeadlineExceeded {
        /// What was read.
        object: ObjectRef,
        /// Attempts started.
        attempts: u32,
    },
    /// Another answer (400, 409, …): the request was wrong.
    Rejected {
        /// What was read.
        object: ObjectRef,
        /// The HTTP status.
        status: u16,
        /// The service's error codes.
        codes: String,
        /// The SDK's error, for logs.
        source: Option<Arc<SdkError>>,
    },
    /// The answer is not what Key Vault sends (unreadable, or missing a field the read needs).
    Malformed {
        /// What was read.
        object: ObjectRef,
        /// What is wrong, a fixed text.
        reason: &'static str,
        /// The SDK's error, for logs.
        source: Option<Arc<SdkError>>,
    },
    /// The vault name, object name or version cannot be read: no call was made.
    InvalidRequest {
        /// What was asked for.
        object: ObjectRef,
        /// What is wrong, a fixed text.
        reason: &'static str,
    },
    /// The SDK refused the call or its setup (e.g. a challenge naming another resource).
    Misconfigured {
        /// What was read.
        object: ObjectRef,
        /// What is wrong.
        reason: String,
        /// The SDK's error, for logs.
        source: Option<Arc<SdkError>>,
    },
}

impl VaultError {
    /// What was read.
    pub fn object(&self) -> &ObjectRef {
        match self {
            Self::NotFound { object, .. }
            | Self::Forbidden { object, .. }
            | Self::Disabled { object, .. }
            | Self::Unauthorized { object, .. }
            | Self::Throttled { object, .. }
            | Self::Unavailable { object, .. }
            | Self::DeadlineExceeded { object, .. }
            | Self::Rejected { object, .. }
            | Self::Malformed { object, .. }
            | Self::InvalidRequest { object, .. }
            | Self::Misconfigured { object, .. } => object,
        }
    }

    /// The gRPC code a Mount failing this way is answered with (the table is
    /// [`crate::errors`]'s).
    pub fn code(&self) -> tonic::Code {
        crate::errors::vault_code(self)
    }

    /// A fixed name for metrics (`not_found`, `throttled`, …).
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::NotFound { .. } => "not_found",
            Self::Forbidden { .. } => "forbidden",
            Self::Disabled { .. } => "disabled",
            Self::Unauthorized { .. } => "unauthorized",
            Self::Throttled { .. } => "throttled",
            Self::Unavailable { .. } => "unavailable",
            Self::DeadlineExceeded { .. } => "deadline_exceeded",
            Self::Rejected { .. } => "rejected",
            Self::Malformed { .. } => "malformed",
            Self::InvalidRequest { .. } => "invalid_request",
            Self::Misconfigured { .. } => "misconfigured",
        }
    }

    /// When to retry, for a throttled read.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether trying again later may succeed (throttling, an outage, the deadline). The
    /// reader retries these until the next retry would pass its deadline, so such an answer
    /// says that the read ran out of its time.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Throttled { .. } | Self::Unavailable { .. } | Self::DeadlineExceeded { .. }
        )
    }

    /// Whether the vault answered authoritatively about the object for this identity (missing,
    /// forbidden, disabled): the same read gives the same answer until someone changes the
    /// vault.
    pub fn is_authoritative(&self) -> bool {
        matches!(
            self,
            Self::NotFound { .. } | Self::Forbidden { .. } | Self::Disabled { .. }
        )
    }
}

impl fmt::Display for VaultError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.object())?;
        match self {
            Self::NotFound { codes, .. } => write!(f, "not found (HTTP 404{codes})"),
            Self::Forbidden { codes, .. } => write!(
                f,
                "the identity is not allowed to read it (HTTP 403{codes}); grant it get \
                 permission on the vault"
            ),
            Self::Disabled { codes, .. } => write!(f, "it is disabled (HTTP 403{codes})"),
            Self::Unauthorized { by_entra: true, .. } => {
                f.write_str("Entra ID refused the identity's credentials")
            }
            Self::Unauthorized { .. } => {
                f.write_str("Key Vault did not accept the identity's token (HTTP 401)")
            }
            Self::Throttled { retry_after, .. } => {
                f.write_str("Key Vault is throttling requests (HTTP 429); ")?;
                match retry_after {
                    Some(wait) => write!(f, "retry after {} s", seconds_up(*wait)),
                    None => f.write_str("retry later"),
                }
            }
            Self::Unavailable {
                status: Some(status),
                ..
            } => write!(f, "Key Vault is unavailable (HTTP {status})"),
            Self::Unavailable { status: None, .. } => {
                f.write_str("Key Vault is unreachable (no answer)")
            }
            Self::DeadlineExceeded { attempts: 0, .. } => f.write_str(
                "no answer before the mount's deadline (waiting for the vault or for a read in \
                 flight)",
            ),
            Self::DeadlineExceeded { attempts, .. } => write!(
                f,
                "no answer before the mount's deadline ({attempts} attempt{})",
                if *attempts == 1 { "" } else { "s" }
            ),
            Self::Rejected { status, codes, .. } => {
                write!(f, "Key Vault rejected the request (HTTP {status}{codes})")
            }
            Self::Malformed { reason, .. } => write!(f, "Key Vault's answer is unusable: {reason}"),
            Self::InvalidRequest { reason, .. } => f.write_str(reason),
            Self::Misconfigured { reason, .. } => f.write_str(reason),
        }
    }
}

impl std::error::Error for VaultError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::NotFound { source, .. }
            | Self::Forbidden { source, .. }
            | Self::Disabled { source, .. }
            | Self::Unauthorized { source, .. }
            | Self::Throttled { source, .. }
            | Self::Unavailable { source, .. }
            | Self::Rejected { source, .. }
            | Self::Malformed { source, .. }
            | Self::Misconfigured { source, .. } => source
                .as_deref()
                .map(|error| error as &(dyn std::error::Error + 'static)),
            Self::DeadlineExceeded { .. } | Self::InvalidRequest { .. } => None,
        }
    }
}

/// Whole seconds, rounded up, at least 1.
fn seconds_up(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// The SDK clients of one vault for one proven credential.
struct Clients {
    host: String,
    secrets: SecretClient,
    keys: KeyClient,
    certificates: CertificateClient,
}

/// Reads objects from vaults; keeps SDK clients per credential and vault (each client learns
/// its vault's authentication challenge once).
pub struct VaultReader {
    settings: VaultSettings,
    http: Arc<dyn HttpClient>,
    clients: Mutex<Lru<(u64, String), Arc<Clients>>>,
}

impl fmt::Debug for VaultReader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("VaultReader")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl VaultReader {
    /// A reader with `settings`, building its HTTPS client now. No remote call.
    pub fn new(settings: VaultSettings) -> Result<Self, azure_access::Error> {
        let http = http_client_with(&settings.transport, Route::Remote, &settings.insecure)?;
        let clients = Mutex::new(Lru::new(settings.max_clients));
        Ok(Self {
            settings,
            http,
            clients,
        })
    }

    /// The settings in effect.
    pub fn settings(&self) -> &VaultSettings {
        &self.settings
    }

    /// `<vault>.<the identity's cloud's vault suffix>`.
    pub fn vault_host(identity: &ResolvedIdentity, vault: &VaultName) -> String {
        format!(
            "{}.{}",
            vault.as_str().to_ascii_lowercase(),
            identity.cloud().vault_suffix()
        )
    }

    /// Reads `version` (the latest when `None`) of object `name` of `kind` in `vault` as
    /// `identity`, retrying transient failures until `deadline`.
    pub async fn get(
        &self,
        identity: &ResolvedIdentity,
        vault: &VaultName,
        kind: ObjectKind,
        name: &str,
        version: Option<&str>,
        deadline: Instant,
    ) -> Result<Fetched, VaultError> {
        let object = ObjectRef {
            vault_host: Self::vault_host(identity, vault),
            kind,
            name: name.to_owned(),
            version: version.map_or(VersionRef::Latest, |v| VersionRef::Pinned(v.to_owned())),
        };
        check_request(vault, &object)?;
        let clients = self.clients(identity, &object)?;
        let version = version.map(str::to_owned);
        self.with_retries(&object, deadline, || {
            read(&clients, kind, name, version.clone(), &object)
        })
        .await
    }

    /// Every version of object `name` of `kind` in `vault` (all pages), retrying transient
    /// failures until `deadline`.
    pub async fn versions(
        &self,
        identity: &ResolvedIdentity,
        vault: &VaultName,
        kind: ObjectKind,
        name: &str,
        deadline: Instant,
    ) -> Result<Vec<VersionItem>, VaultError> {
        let object = ObjectRef {
            vault_host: Self::vault_host(identity, vault),
            kind,
            name: name.to_owned(),
            version: VersionRef::Listing,
        };
        check_request(vault, &object)?;
        let clients = self.clients(identity, &object)?;
        let pages = self.settings.max_version_pages.max(1);
        self.with_retries(&object, deadline, || {
            list(&clients, kind, name, pages, &object)
        })
        .await
    }

    /// The clients for `identity`'s credential and `object`'s vault, made on first use.
    fn clients(
        &self,
        identity: &ResolvedIdentity,
        object: &ObjectRef,
    ) -> Result<Arc<Clients>, VaultError> {
        let key = (identity.credential_id(), object.vault_host.clone());
        let mut cache = lock(&self.clients);
        if let Some(clients) = cache.get(&key) {
            return Ok(Arc::clone(clients));
        }
        let url = format!("https://{}/", object.vault_host);
        let options = client_options(&self.http, identity.cloud());
        let verify = Some(!self.settings.insecure_skip_challenge_resource_check);
        let failed = |error: azure_core::Error| VaultError::Misconfigured {
            object: object.clone(),
            reason: format!("cannot make a Key Vault client for {url}"),
            source: Some(Arc::new(SdkError(error))),
        };
        let credential = identity.credential();
        let clients = Arc::new(Clients {
            host: object.vault_host.clone(),
            secrets: SecretClient::new(
                &url,
                Arc::clone(&credential),
                Some(SecretClientOptions {
                    client_options: options.clone(),
                    verify_challenge_resource: verify,
                    ..SecretClientOptions::default()
                }),
            )
            .map_err(failed)?,
            keys: KeyClient::new(
                &url,
                Arc::clone(&credential),
                Some(KeyClientOptions {
                    client_options: options.clone(),
                    verify_challenge_resource: verify,
                    ..KeyClientOptions::default()
                }),
            )
            .map_err(failed)?,
            certificates: CertificateClient::new(
                &url,
                credential,
                Some(CertificateClientOptions {
                    client_options: options,
                    verify_challenge_resource: verify,
                    ..CertificateClientOptions::default()
                }),
            )
            .map_err(failed)?,
        });
        let evicted = cache.insert(key, Arc::clone(&clients));
        drop(cache);
        drop(evicted);
        Ok(clients)
    }

    /// Runs `attempt` until it succeeds, fails for good, or the next wait would pass
    /// `deadline`.
    async fn with_retries<T, F, Fut>(
        &self,
        object: &ObjectRef,
        deadline: Instant,
        mut attempt: F,
    ) -> Result<T, VaultError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, Failure>>,
    {
        let policy = RetryPolicy {
            deadline: Duration::ZERO,
            initial_backoff: self.settings.initial_backoff,
            max_backoff: self.settings.max_backoff,
        };
        let mut attempts = 0u32;
        let mut throttled = 0u32;
        loop {
            attempts += 1;
            let failure = match tokio::time::timeout_at(deadline, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(failure)) => failure,
                Err(_elapsed) => {
                    return Err(VaultError::DeadlineExceeded {
                        object: object.clone(),
                        attempts,
                    });
                }
            };
            let (error, wait) = match failure {
                Failure::Final(error) => return Err(error),
                Failure::Sdk(error) => {
                    let verdict = classify(&error);
                    let wait = match &verdict {
                        _ if !verdict.is_transient() => None,
                        Verdict::Throttled(answer) => {
                            throttled += 1;
                            Some(answer.retry_after.unwrap_or_else(|| {
                                self.throttle_backoff(throttled - 1)
                                    .max(policy.backoff(attempts - 1))
                            }))
                        }
                        _ => Some(
                            policy
                                .backoff(attempts - 1)
                                .max(verdict.retry_after().unwrap_or_default()),
                        ),
                    };
                    (map_error(object, verdict, error, wait), wait)
                }
            };
            let Some(wait) = wait else {
                return Err(error);
            };
            let now = Instant::now();
            if now
                .checked_add(wait)
                .is_none_or(|retry_at| retry_at >= deadline)
            {
                tracing::debug!(%object, attempts, error = %error, "giving up: the next retry would pass the deadline");
                return Err(error);
            }
            tracing::debug!(%object, attempts, wait_ms = wait.as_millis() as u64, error = %error, "retrying a transient failure");
            tokio::time::sleep(wait).await;
        }
    }

    /// The wait after the `n`th 429 without Retry-After (from 0): doubling, capped, jittered
    /// in its upper half.
    fn throttle_backoff(&self, n: u32) -> Duration {
        RetryPolicy {
            deadline: Duration::ZERO,
            initial_backoff: self.settings.throttle_backoff,
            max_backoff: self.settings.max_throttle_backoff,
        }
        .backoff(n)
    }
}

/// How one attempt failed: with an SDK error to classify, or with a final verdict.
enum Failure {
    Sdk(azure_core::Error),
    Final(VaultError),
}

impl From<azure_core::Error> for Failure {
    fn from(error: azure_core::Error) -> Self {
        Self::Sdk(error)
    }
}

/// The error for a classified SDK failure; `wait` is the retry's wait, reported as when to
/// retry if the read is throttled.
fn map_error(
    object: &ObjectRef,
    verdict: Verdict,
    error: azure_core::Error,
    wait: Option<Duration>,
) -> VaultError {
    let object = object.clone();
    let source = Some(Arc::new(SdkError(error)));
    match verdict {
        Verdict::Throttled(answer) => VaultError::Throttled {
            object,
            retry_after: answer.retry_after.or(wait),
            source,
        },
        Verdict::Unavailable(answer) => VaultError::Unavailable {
            object,
            status: Some(answer.status),
            source,
        },
        Verdict::Unreachable => VaultError::Unavailable {
            object,
            status: None,
            source,
        },
        Verdict::CredentialRefused(_) => VaultError::Unauthorized {
            object,
            by_entra: true,
            source,
        },
        Verdict::Refused(answer) => {
            let codes = answer.code_suffix();
            match answer.status {
                401 => VaultError::Unauthorized {
                    object,
                    by_entra: false,
                    source,
                },
                404 => VaultError::NotFound {
                    object,
                    codes,
                    source,
                },
                _ if answer
                    .codes
                    .iter()
                    .any(|code| code.to_ascii_lowercase().ends_with("disabled")) =>
                {
                    VaultError::Disabled {
                        object,
                        codes,
                        source,
                    }
                }
                _ => VaultError::Forbidden {
                    object,
                    codes,
                    source,
                },
            }
        }
        Verdict::Rejected(answer) => VaultError::Rejected {
            object,
            status: answer.status,
            codes: answer.code_suffix(),
            source,
        },
        Verdict::Unreadable => VaultError::Malformed {
            object,
            reason: "not the JSON Key Vault sends",
            source,
        },
        Verdict::Sdk => VaultError::Misconfigured {
            object,
            reason: "the Azure SDK refused the call (for example an authentication challenge \
                     naming a resource that is not a parent domain of the vault)"
                .to_owned(),
            source,
        },
    }
}

/// Checks the vault name, object name and version before any of them goes into a URL.
fn check_request(vault: &VaultName, object: &ObjectRef) -> Result<(), VaultError> {
    let invalid = |reason| {
        Err(VaultError::InvalidRequest {
            object: object.clone(),
            reason,
        })
    };
    let vault = vault.as_str();
    if !(3..=24).contains(&vault.len())
        || !vault
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return invalid("a vault name is 3 to 24 letters, digits and '-'");
    }
    let name = &object.name;
    if !(1..=127).contains(&name.len())
        || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return invalid("an object name is 1 to 127 letters, digits and '-'");
    }
    if let VersionRef::Pinned(version) = &object.version
        && (!(1..=64).contains(&version.len())
            || !version.bytes().all(|b| b.is_ascii_alphanumeric()))
    {
        return invalid("an object version is 1 to 64 letters and digits (32 hex on Key Vault)");
    }
    Ok(())
}

fn malformed(object: &ObjectRef, reason: &'static str) -> Failure {
    Failure::Final(VaultError::Malformed {
        object: object.clone(),
        reason,
        source: None,
    })
}

/// One read of one object version.
async fn read(
    clients: &Clients,
    kind: ObjectKind,
    name: &str,
    version: Option<String>,
    object: &ObjectRef,
) -> Result<Fetched, Failure> {
    match kind {
        ObjectKind::Secret => {
            let options = SecretClientGetSecretOptions {
                secret_version: version,
                ..Default::default()
            };
            let secret = clients
                .secrets
                .get_secret(name, Some(options))
                .await?
                .into_model()?;
            // The value moves into a zeroizing buffer first, so it is wiped even if the
            // answer is refused below.
            let value = Zeroizing::new(secret.value.unwrap_or_default());
            let id = secret
                .id
                .ok_or_else(|| malformed(object, "the secret has no id"))?;
            Ok(Fetched::Secret(FetchedSecret {
                id,
                value,
                content_type: secret.content_type,
                kid: secret.kid,
            }))
        }
        ObjectKind::Key => {
            let options = KeyClientGetKeyOptions {
                key_version: version,
                ..Default::default()
            };
            let key = clients
                .keys
                .get_key(name, Some(options))
                .await?
                .into_model()?;
            let jwk = key
                .key
                .ok_or_else(|| malformed(object, "the key has no JWK"))?;
            let id = jwk
                .kid
                .ok_or_else(|| malformed(object, "the key has no kid"))?;
            let kty = jwk
                .kty
                .ok_or_else(|| malformed(object, "the key has no kty"))?;
            Ok(Fetched::Key(FetchedKey {
                id,
                kty: kty.as_ref().to_owned(),
                n: jwk.n,
                e: jwk.e,
                crv: jwk.crv.map(|crv| crv.as_ref().to_owned()),
                x: jwk.x,
                y: jwk.y,
            }))
        }
        ObjectKind::Cert => {
            let options = CertificateClientGetCertificateOptions {
                certificate_version: version,
                ..Default::default()
            };
            let certificate = clients
                .certificates
                .get_certificate(name, Some(options))
                .await?
                .into_model()?;
            let id = certificate
                .id
                .ok_or_else(|| malformed(object, "the certificate has no id"))?;
            let cer = certificate
                .cer
                .filter(|cer| !cer.is_empty())
                .ok_or_else(|| {
                    malformed(
                        object,
                        "the certificate has no cer (it may not be issued yet)",
                    )
                })?;
            Ok(Fetched::Cert(FetchedCert { id, cer }))
        }
    }
}

/// One listing of an object's versions, every page, following next links on the same vault
/// only.
async fn list(
    clients: &Clients,
    kind: ObjectKind,
    name: &str,
    max_pages: usize,
    object: &ObjectRef,
) -> Result<Vec<VersionItem>, Failure> {
    let mut items = Vec::new();
    let mut pages = 0usize;
    // Each arm pulls pages until the last; a next link that leaves the vault ends the listing
    // with an error before it is followed (the pager fetches a page only when asked).
    macro_rules! pages {
        ($pager:expr, $result:ty, |$item:ident| $id:expr) => {{
            let mut pager = $pager.into_pages();
            while let Some(page) = pager.try_next().await? {
                let page: $result = page.into_model()?;
                for $item in page.value {
                    let id: Option<String> = $id;
                    let attributes = $item.attributes;
                    items.push(version_item(
                        id,
                        attributes.as_ref().and_then(|a| a.enabled),
                        attributes.as_ref().and_then(|a| a.created),
                        object,
                    )?);
                }
                pages += 1;
                match page.next_link.as_deref().filter(|link| !link.is_empty()) {
                    None => break,
                    Some(_) if pages >= max_pages => {
                        return Err(malformed(object, "the version listing has too many pages"));
                    }
                    Some(link) if !same_vault(link, &clients.host) => {
                        return Err(malformed(
                            object,
                            "the version listing's next page is on another host",
                        ));
                    }
                    Some(_) => {}
                }
            }
        }};
    }
    match kind {
        ObjectKind::Secret => pages!(
            clients
                .secrets
                .list_secret_properties_versions(name, None)?,
            ListSecretPropertiesResult,
            |item| item.id
        ),
        ObjectKind::Key => pages!(
            clients.keys.list_key_properties_versions(name, None)?,
            ListKeyPropertiesResult,
            |item| item.kid
        ),
        ObjectKind::Cert => pages!(
            clients
                .certificates
                .list_certificate_properties_versions(name, None)?,
            ListCertificatePropertiesResult,
            |item| item.id
        ),
    }
    Ok(items)
}

/// A listing entry: its version (the id's last segment), enabled flag (false when absent) and
/// creation time.
fn version_item(
    id: Option<String>,
    enabled: Option<bool>,
    created: Option<azure_core::time::OffsetDateTime>,
    object: &ObjectRef,
) -> Result<VersionItem, Failure> {
    let id = id.ok_or_else(|| malformed(object, "a listed version has no id"))?;
    let version = id
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .filter(|version| !version.is_empty())
        .ok_or_else(|| malformed(object, "a listed version's id has no version"))?;
    Ok(VersionItem {
        version: version.to_owned(),
        enabled: enabled.unwrap_or(false),
        created: created.map_or(0, |created| created.unix_timestamp()),
    })
}

/// Whether `link` is an https URL on `host` (port 443 or none).
fn same_vault(link: &str, host: &str) -> bool {
    Url::parse(link).is_ok_and(|url| {
        url.scheme() == "https"
            && url.port_or_known_default() == Some(443)
            && url
                .host_str()
                .is_some_and(|link_host| link_host.eq_ignore_ascii_case(host))
    })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU32, Ordering};

    use azure_access::errors::testing::{error_body, http_error};

    use super::*;

    fn object(version: VersionRef) -> ObjectRef {
        ObjectRef {
            vault_host: "alpha.vault.azure.net".to_owned(),
            kind: ObjectKind::Secret,
            name: "db".to_owned(),
            version,
        }
    }

    fn vault(name: &str) -> VaultName {
        VaultName(name.to_owned())
    }

    #[test]
    fn names_and_versions_are_checked_before_they_reach_a_url() {
        let ok = object(VersionRef::Pinned(
            "0123456789abcdef0123456789abcdef".into(),
        ));
        assert!(check_request(&vault("alpha"), &ok).is_ok());
        assert!(check_request(&vault("alpha"), &object(VersionRef::Listing)).is_ok());
        let bad_names = ["", "a/b", "../keys/x", "db?x=1", "db%2F", "ünïcode"];
        for name in bad_names {
            let request = ObjectRef {
                name: name.to_owned(),
                ..object(VersionRef::Latest)
            };
            let error = check_request(&vault("alpha"), &request).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{name:?}");
        }
        for version in ["", "../x", "v/1", "a b", &"a".repeat(65)] {
            let error = check_request(&vault("alpha"), &object(VersionRef::Pinned(version.into())))
                .unwrap_err();
            assert_eq!(error.metric_label(), "invalid_request", "{version:?}");
        }
        for name in ["ab", "a.b", "a_b", &"a".repeat(25)] {
            assert!(check_request(&vault(name), &ok).is_err(), "{name:?}");
        }
    }

    #[test]
    fn a_next_link_must_stay_on_the_vault() {
        let host = "alpha.vault.azure.net";
        assert!(same_vault(
            "https://alpha.vault.azure.net/secrets/db/versions?$skiptoken=x",
            host
        ));
        assert!(same_vault(
            "https://ALPHA.vault.azure.net:443/secrets/db/versions",
            host
        ));
        for link in [
            "https://evil.example/secrets/db/versions",
            "http://alpha.vault.azure.net/secrets/db/versions",
            "https://alpha.vault.azure.net:8443/secrets/db/versions",
            "https://alpha.vault.azure.net.evil.example/",
            "/secrets/db/versions",
        ] {
            assert!(!same_vault(link, host), "{link}");
        }
    }

    #[test]
    fn every_answer_becomes_its_error_and_none_shows_the_service_text() {
        type Expect = fn(&VaultError) -> bool;
        let table: Vec<(azure_core::Error, Expect, tonic::Code)> = vec![
            (
                http_error(404, &error_body("SecretNotFound", None), &[]),
                |e| matches!(e, VaultError::NotFound { codes, .. } if codes == " SecretNotFound"),
                tonic::Code::NotFound,
            ),
            (
                http_error(403, &error_body("Forbidden", None), &[]),
                |e| matches!(e, VaultError::Forbidden { .. }),
                tonic::Code::PermissionDenied,
            ),
            (
                http_error(403, &error_body("Forbidden", Some("SecretDisabled")), &[]),
                |e| matches!(e, VaultError::Disabled { .. }),
                tonic::Code::FailedPrecondition,
            ),
            (
                http_error(401, &error_body("Unauthorized", None), &[]),
                |e| {
                    matches!(
                        e,
                        VaultError::Unauthorized {
                            by_entra: false,
                            ..
                        }
                    )
                },
                tonic::Code::Unauthenticated,
            ),
            (
                azure_access::errors::testing::entra_error(401),
                |e| matches!(e, VaultError::Unauthorized { by_entra: true, .. }),
                tonic::Code::Unauthenticated,
            ),
            (
                http_error(429, &error_body("Throttled", None), &[("retry-after", "7")]),
                |e| e.retry_after() == Some(Duration::from_secs(7)),
                tonic::Code::ResourceExhausted,
            ),
            (
                http_error(503, "", &[]),
                |e| {
                    matches!(
                        e,
                        VaultError::Unavailable {
                            status: Some(503),
                            ..
                        }
                    )
                },
                tonic::Code::Unavailable,
            ),
            (
                http_error(400, &error_body("BadParameter", None), &[]),
                |e| matches!(e, VaultError::Rejected { status: 400, .. }),
                tonic::Code::FailedPrecondition,
            ),
            (
                azure_core::Error::with_message(
                    azure_core::error::ErrorKind::DataConversion,
                    "sensitive free text",
                ),
                |e| matches!(e, VaultError::Malformed { .. }),
                tonic::Code::Internal,
            ),
        ];
        for (error, expected, code) in table {
            let verdict = classify(&error);
            let mapped = map_error(&object(VersionRef::Latest), verdict, error, None);
            assert!(expected(&mapped), "{mapped:?}");
            assert_eq!(mapped.code(), code, "{mapped}");
            let text = mapped.to_string();
            assert!(
                text.starts_with("secret db (latest version) in Key Vault alpha.vault.azure.net: "),
                "{text}"
            );
            assert!(!text.contains("sensitive"), "{text}");
        }
        let pinned = VaultError::DeadlineExceeded {
            object: object(VersionRef::Pinned("abc".into())),
            attempts: 3,
        };
        assert_eq!(
            pinned.to_string(),
            "secret db version abc in Key Vault alpha.vault.azure.net: no answer before the \
             mount's deadline (3 attempts)"
        );
    }

    fn reader() -> VaultReader {
        VaultReader::new(VaultSettings::default()).expect("a reader")
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_within_the_deadline_is_waited_for() {
        let reader = reader();
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let answer = reader
            .with_retries(
                &object(VersionRef::Latest),
                started + Duration::from_secs(10),
                || {
                    let n = calls.fetch_add(1, Ordering::SeqCst);
                    async move {
                        match n {
                            0 => Err(Failure::Sdk(http_error(429, "", &[("retry-after", "3")]))),
                            _ => Ok(n),
                        }
                    }
                },
            )
            .await;
        assert_eq!(answer.unwrap(), 1);
        assert!(started.elapsed() >= Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_past_the_deadline_fails_at_once() {
        let reader = reader();
        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let error = reader
            .with_retries(
                &object(VersionRef::Latest),
                started + Duration::from_secs(10),
                || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async {
                        Err::<(), _>(Failure::Sdk(http_error(429, "", &[("retry-after", "30")])))
                    }
                },
            )
            .await
            .unwrap_err();
        assert_eq!(error.retry_after(), Some(Duration::from_secs(30)));
        assert_eq!(started.elapsed(), Duration::ZERO);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refusals_are_not_retried_and_outages_are_until_the_deadline() {
        let reader = reader();
        let calls = AtomicU32::new(0);
        let error = reader
            .with_retries(
                &object(VersionRef::Latest),
                Instant::now() + Duration::from_secs(5),
                || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async {
                        Err::<(), _>(Failure::Sdk(http_error(
                            403,
                            &error_body("Forbidden", None),
                            &[],
                        )))
                    }
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(error, VaultError::Forbidden { .. }));
        assert_eq!(calls.load(Ordering::SeqCst), 1);

        let calls = AtomicU32::new(0);
        let started = Instant::now();
        let error = reader
            .with_retries(
                &object(VersionRef::Latest),
                started + Duration::from_secs(5),
                || {
                    calls.fetch_add(1, Ordering::SeqCst);
                    async { Err::<(), _>(Failure::Sdk(http_error(503, "", &[]))) }
                },
            )
            .await
            .unwrap_err();
        assert!(matches!(error, VaultError::Unavailable { .. }), "{error}");
        assert!(started.elapsed() <= Duration::from_secs(5));
        // 100 ms doubling to 2 s (jittered) within 5 s: several tries, not hundreds.
        let tries = calls.load(Ordering::SeqCst);
        assert!((3..=12).contains(&tries), "{tries}");

        let started = Instant::now();
        let error = reader
            .with_retries(
                &object(VersionRef::Latest),
                started + Duration::from_secs(2),
                std::future::pending::<Result<(), Failure>>,
            )
            .await
            .unwrap_err();
        assert!(
            matches!(error, VaultError::DeadlineExceeded { attempts: 1, .. }),
            "{error}"
        );
        assert_eq!(started.elapsed(), Duration::from_secs(2));
    }
}
