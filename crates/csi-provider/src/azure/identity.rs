//! Who a Mount acts as, and the proof that it may: the class's identity mode (workload
//! identity, service principal, VM managed identity) turned into an Entra ID credential, and a
//! token for the vault's scope obtained with THIS request's material (the pod's service-account
//! token or the nodePublishSecretRef's client secret) before [`IdentityResolver::resolve`]
//! returns. Also the class's cloud, including an Azure Stack Hub environment file read from the
//! one directory the provider allows.
//!
//! Credentials are cached keyed by the identity AND a SHA-256 of the proof material, until
//! shortly before their token expires or the pod's token does (bounded, least recently used
//! first out; a refused credential is never kept): a rotation poll of a pod whose token has not
//! changed costs no Entra ID call, while a pod with a wrong secret or an unfederated token is
//! refused even when another pod's credential for the same client id is cached — its material
//! has another digest, so it must earn its own token. The VM managed
//! identity has no per-pod material: any pod on the node may use it, as with Azure's provider
//! (it can be turned off with [`IdentitySettings::allow_vm_managed_identity`]).
//!
//! Never logs or shows a token, an assertion or a client secret (the digests stay in memory and
//! are never shown either); errors name the mode, client and tenant ids and the HTTP status
//! only, never an Entra ID or IMDS answer's text. Never reads a file outside the cloud
//! environment directory, and never echoes a file's content.

use std::fmt;
use std::hash::Hash;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_access::Credential;
use azure_access::client::{InsecureOverrides, Route, TransportOptions, http_client_with};
use azure_access::cloud::{Cloud, CloudName};
use azure_access::errors::{SdkError, Verdict, classify};
use azure_core::credentials::TokenCredential;
use azure_core::http::{HttpClient, Url};
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::spec::{AzureMountSpec, CloudChoice, IdentityMode};
use crate::lru::{Lru, lock};
use crate::request::MountInput;

/// The audience of the service-account token workload identity exchanges.
pub const WORKLOAD_IDENTITY_AUDIENCE: &str = "api://AzureADTokenExchange";
/// The largest cloud environment file read, in bytes.
pub const MAX_CLOUD_ENV_FILE_BYTES: u64 = 64 * 1024;
/// The longest client id, tenant id or user-assigned identity id accepted.
const MAX_ID_LEN: usize = 256;
/// The longest client secret accepted, in bytes.
const MAX_CLIENT_SECRET_LEN: usize = 4096;
/// The longest service-account token accepted, in bytes.
const MAX_ASSERTION_LEN: usize = 16 * 1024;

/// The next proven credential's id.
static NEXT_CREDENTIAL_ID: AtomicU64 = AtomicU64::new(1);

/// How the provider resolves identities. Built once from the provider's flags.
#[derive(Debug, Clone)]
pub struct IdentitySettings {
    /// The cloud of classes without `cloudName` (the provider's `--cloud-name`).
    pub default_cloud: Cloud,
    /// The directory `cloudEnvFileName` files must be in (`--cloud-env-dir`); `None` refuses
    /// every Azure Stack Hub class.
    pub cloud_env_dir: Option<PathBuf>,
    /// The HTTPS transport (CA file, timeouts) for Entra ID and the managed identity endpoint.
    pub transport: TransportOptions,
    /// FOR TESTS AND EMULATORS ONLY: DNS and IMDS overrides.
    pub insecure: InsecureOverrides,
    /// FOR TESTS AND EMULATORS ONLY: where every cloud's tokens are requested.
    pub insecure_authority_host: Option<String>,
    /// Whether `useVMManagedIdentity` classes are served. Any pod on the node may use the
    /// node's managed identity (as with Azure's provider); `false` refuses the mode.
    pub allow_vm_managed_identity: bool,
    /// At most this many proven credentials are kept (least recently used first out).
    pub max_cached_credentials: usize,
    /// A credential is dropped this long before its token expires, and a new one proven with
    /// the next request's material. Longer than the SDK's own 5-minute refresh, so a cached
    /// credential never refreshes with material a later request did not present.
    pub refresh_margin: Duration,
}

impl IdentitySettings {
    /// Settings for `default_cloud` with every other setting at its default.
    pub fn new(default_cloud: Cloud) -> Self {
        Self {
            default_cloud,
            cloud_env_dir: None,
            transport: TransportOptions::default(),
            insecure: InsecureOverrides::default(),
            insecure_authority_host: None,
            allow_vm_managed_identity: true,
            max_cached_credentials: 1024,
            refresh_margin: Duration::from_secs(10 * 60),
        }
    }
}

impl Default for IdentitySettings {
    /// The public cloud.
    fn default() -> Self {
        let public = Cloud::known(CloudName::Public).unwrap_or_else(|| {
            Cloud::custom(
                "https://login.microsoftonline.com",
                "vault.azure.net",
                "managedhsm.azure.net",
            )
        });
        Self::new(public)
    }
}

/// The kind of identity a Mount acts as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IdentityKind {
    /// An application (or user-assigned identity) federated with the pod's service account.
    WorkloadIdentity,
    /// An application proving itself with a client secret from nodePublishSecretRef.
    ServicePrincipal,
    /// The node's managed identity.
    VmManagedIdentity,
}

impl IdentityKind {
    fn as_str(self) -> &'static str {
        match self {
            Self::WorkloadIdentity => "workload identity",
            Self::ServicePrincipal => "service principal",
            Self::VmManagedIdentity => "VM managed identity",
        }
    }
}

/// Who a Mount acts as, without any secret: the kind, tenant, client id (or user-assigned id,
/// or `system`), and the cloud's authority and vault resource. Two requests with equal keys act
/// as the same principal in the same cloud; the object cache is keyed by it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IdentityKey {
    kind: IdentityKind,
    tenant: String,
    client: String,
    authority: String,
    resource: String,
}

impl IdentityKey {
    /// The kind of identity.
    pub fn kind(&self) -> IdentityKind {
        self.kind
    }

    /// The client id (lowercase), the user-assigned identity's id, or `system`.
    pub fn client_id(&self) -> &str {
        &self.client
    }

    /// The tenant id (lowercase); empty for a managed identity.
    pub fn tenant_id(&self) -> &str {
        &self.tenant
    }
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            IdentityKind::VmManagedIdentity if self.client == "system" => {
                f.write_str("the node's system-assigned managed identity")
            }
            IdentityKind::VmManagedIdentity => write!(
                f,
                "the node's user-assigned managed identity {}",
                self.client
            ),
            kind => write!(
                f,
                "{} (client {}, tenant {})",
                kind.as_str(),
                self.client,
                self.tenant
            ),
        }
    }
}

/// A proven identity: the cloud, the non-secret key, and the credential that obtained a token
/// for the vault's scope for this request. Only [`IdentityResolver::resolve`] makes one.
#[derive(Clone)]
pub struct ResolvedIdentity {
    cloud: Cloud,
    resource: String,
    key: IdentityKey,
    credential: Arc<dyn TokenCredential>,
    credential_id: u64,
}

impl ResolvedIdentity {
    /// The cloud the class names: its authority and vault DNS suffix.
    pub fn cloud(&self) -> &Cloud {
        &self.cloud
    }

    /// Who this is (no secret).
    pub fn key(&self) -> &IdentityKey {
        &self.key
    }

    /// The vault token scope the identity was proven for (`https://vault.azure.net/.default`).
    pub fn vault_scope(&self) -> String {
        format!("{}/.default", self.resource)
    }

    /// The SDK credential, for vault clients. Its token for [`ResolvedIdentity::vault_scope`]
    /// is cached.
    pub fn credential(&self) -> Arc<dyn TokenCredential> {
        Arc::clone(&self.credential)
    }

    /// A number that is the same for requests served by the same proven credential and never
    /// reused: vault clients (which hold the credential) are kept per credential.
    pub fn credential_id(&self) -> u64 {
        self.credential_id
    }
}

impl fmt::Debug for ResolvedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedIdentity")
            .field("key", &self.key)
            .field("vault_suffix", &self.cloud.vault_suffix())
            .field("credential_id", &self.credential_id)
            .finish_non_exhaustive()
    }
}

/// The pod's identity could not be established or proven. `Display` never shows a token, a
/// secret or an Entra ID answer's text; the SDK's error is kept as the source, for logs.
#[derive(Debug, Clone)]
pub enum IdentityError {
    /// Workload identity without the pod's token for [`WORKLOAD_IDENTITY_AUDIENCE`].
    ServiceAccountTokenMissing,
    /// Service principal mode without a nodePublishSecretRef.
    NodePublishSecretNotSet,
    /// The nodePublishSecretRef Secret lacks `clientid` or `clientsecret`.
    SecretKeyMissing {
        /// `clientid` or `clientsecret`.
        key: &'static str,
    },
    /// A mode kube-kms does not implement (pod identity, identity binding).
    Unsupported {
        /// The class parameter that chose it.
        parameter: &'static str,
        /// Why, and what to use instead.
        reason: &'static str,
    },
    /// The class's cloud cannot be used (unknown name, a bad or refused environment file).
    Cloud {
        /// What is wrong; never the file's content.
        reason: String,
    },
    /// An id or a credential in the request is not acceptable.
    Invalid {
        /// The parameter or Secret key.
        field: &'static str,
        /// What is wrong; never the value of a secret.
        reason: String,
    },
    /// Entra ID (or the managed identity endpoint) refused the identity's credentials.
    Refused {
        /// The identity, as [`IdentityKey`] shows it.
        identity: String,
        /// The HTTP status of the refusal, when there was one.
        status: Option<u16>,
        /// The SDK's error, for logs.
        source: Option<Arc<SdkError>>,
    },
    /// Entra ID or the managed identity endpoint is unreachable, throttling or failing.
    Unavailable {
        /// The identity.
        identity: String,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// Whether the issuer was throttling (429) rather than failing or unreachable.
        throttled: bool,
        /// How long the issuer asked to wait, if it said.
        retry_after: Option<Duration>,
        /// The SDK's error, for logs.
        source: Option<Arc<SdkError>>,
    },
    /// No token before the Mount's deadline.
    DeadlineExceeded {
        /// The identity.
        identity: String,
    },
    /// The provider cannot build a credential (its transport or the SDK refused the setup).
    Misconfigured {
        /// What is wrong.
        reason: String,
    },
}

impl IdentityError {
    /// The gRPC code a Mount failing this way is answered with (the table is
    /// [`crate::errors`]'s).
    pub fn code(&self) -> tonic::Code {
        crate::errors::identity_code(self)
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::ServiceAccountTokenMissing => write!(
                f,
                "failed to get the pod's service account token for audience \
                 {WORKLOAD_IDENTITY_AUDIENCE}: service account tokens not found (the \
                 secrets-store.csi.k8s.io CSIDriver must list that audience in tokenRequests)"
            ),
            Self::NodePublishSecretNotSet => f.write_str(
                "failed to get credentials, nodePublishSecretRef secret is not set (set clientID \
                 for workload identity, or a nodePublishSecretRef with clientid and clientsecret)",
            ),
            Self::SecretKeyMissing { key } => write!(
                f,
                "could not find {key} in secrets (the nodePublishSecretRef Secret needs keys \
                 clientid and clientsecret)"
            ),
            Self::Unsupported { parameter, reason } => {
                write!(f, "{parameter} is not supported by kube-kms: {reason}")
            }
            Self::Cloud { reason } => f.write_str(reason),
            Self::Invalid { field, reason } => write!(f, "{field}: {reason}"),
            Self::Refused {
                identity, status, ..
            } => {
                write!(f, "{identity} was refused a token for Key Vault")?;
                match status {
                    Some(status) => write!(f, " (HTTP {status})"),
                    None => Ok(()),
                }
            }
            Self::Unavailable {
                identity,
                status,
                retry_after,
                ..
            } => {
                write!(f, "cannot get a Key Vault token for {identity}: ")?;
                match status {
                    Some(status) => write!(f, "the token issuer answered HTTP {status}")?,
                    None => f.write_str("the token issuer is unreachable")?,
                }
                match retry_after {
                    Some(wait) => write!(f, "; retry after {} s", wait.as_secs().max(1)),
                    None => Ok(()),
                }
            }
            Self::DeadlineExceeded { identity } => write!(
                f,
                "no Key Vault token for {identity} before the mount's deadline"
            ),
            Self::Misconfigured { reason } => f.write_str(reason),
        }
    }
}

impl std::error::Error for IdentityError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Refused {
                source: Some(source),
                ..
            }
            | Self::Unavailable {
                source: Some(source),
                ..
            } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// Resolves and proves each Mount's identity; keeps proven credentials.
pub struct IdentityResolver {
    settings: IdentitySettings,
    remote: Arc<dyn HttpClient>,
    managed_identity: Arc<dyn HttpClient>,
    credentials: Mutex<Lru<CredentialKey, Arc<Slot>>>,
}

impl fmt::Debug for IdentityResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityResolver")
            .field("settings", &self.settings)
            .field("cached_credentials", &self.cached_credentials())
            .finish_non_exhaustive()
    }
}

/// A credential's cache key: who, and the digest of what proved it.
type CredentialKey = (IdentityKey, [u8; 32]);

/// A credential, and once proven, until when it may serve without new proof.
struct Slot {
    id: u64,
    credential: Arc<dyn TokenCredential>,
    proven_until: OnceCell<Instant>,
}

/// What a request proves its identity with.
enum Material {
    /// The pod's service-account token, a client assertion.
    Assertion(SecretString),
    /// The nodePublishSecretRef's client secret.
    ClientSecret(SecretString),
    /// Nothing: the node's managed identity.
    Node,
}

impl Material {
    /// When an assertion expires (its unverified `exp` claim), as a tokio instant; `None` for
    /// other material or an assertion without a readable `exp`.
    fn expiry(&self) -> Option<Instant> {
        let Self::Assertion(token) = self else {
            return None;
        };
        use base64::Engine;
        let payload = token.expose_secret().split('.').nth(1)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let claims: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        let exp = claims.get("exp")?.as_i64()?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()?
            .as_secs();
        let left = u64::try_from(exp).ok()?.saturating_sub(now);
        Instant::now().checked_add(Duration::from_secs(left))
    }

    /// A SHA-256 of the material with a domain separator: the same material gives the same
    /// digest, nothing is learned about the material from it in memory.
    fn digest(&self) -> [u8; 32] {
        let (tag, bytes): (u8, &[u8]) = match self {
            Self::Assertion(token) => (1, token.expose_secret().as_bytes()),
            Self::ClientSecret(secret) => (2, secret.expose_secret().as_bytes()),
            Self::Node => (3, &[]),
        };
        let mut hasher = Sha256::new();
        hasher.update(b"kube-kms csi-provider identity proof v1\0");
        hasher.update([tag]);
        hasher.update(bytes);
        hasher.finalize().into()
    }
}

/// The cloud of one request.
struct ResolvedCloud {
    cloud: Cloud,
    /// The Key Vault token resource, `https://vault.azure.net`.
    resource: String,
}

impl IdentityResolver {
    /// A resolver with `settings`, building its HTTPS clients (Entra ID; the managed identity
    /// endpoint) now. No remote call.
    pub fn new(settings: IdentitySettings) -> Result<Self, IdentityError> {
        let build = |route| {
            http_client_with(&settings.transport, route, &settings.insecure).map_err(|error| {
                IdentityError::Misconfigured {
                    reason: error.to_string(),
                }
            })
        };
        let remote = build(Route::Remote)?;
        let managed_identity = build(Route::ManagedIdentity)?;
        let capacity = settings.max_cached_credentials.max(1);
        Ok(Self {
            settings,
            remote,
            managed_identity,
            credentials: Mutex::new(Lru::new(capacity)),
        })
    }

    /// The settings in effect.
    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    /// How many credentials are kept (proven, or being proven).
    pub fn cached_credentials(&self) -> usize {
        lock(&self.credentials).len()
    }

    /// The identity `spec` names for the pod of `input`, proven: a token for the vault's scope
    /// was obtained with this request's material (or its digest matches a credential that did,
    /// whose token is still fresh) before this returns. Fails at `deadline` at the latest.
    pub async fn resolve(
        &self,
        spec: &AzureMountSpec,
        input: &MountInput,
        deadline: Instant,
    ) -> Result<ResolvedIdentity, IdentityError> {
        let resolved_cloud = self.cloud(&spec.cloud)?;
        let (kind, tenant, client, material) = self.material(spec, input)?;
        let key = IdentityKey {
            kind,
            tenant: tenant.to_ascii_lowercase(),
            client: client.to_ascii_lowercase(),
            authority: resolved_cloud.cloud.authority_host().to_ascii_lowercase(),
            resource: resolved_cloud.resource.to_ascii_lowercase(),
        };
        let credential_key = (key.clone(), material.digest());
        // A credential proven with an assertion serves no longer than the assertion is valid.
        let material_expiry = material.expiry();
        let slot = self.slot(&credential_key, || {
            self.credential(kind, &tenant, &client, material, &resolved_cloud.cloud)
        })?;
        let scope = format!("{}/.default", resolved_cloud.resource);
        let proving = slot.proven_until.get_or_try_init(|| async {
            let token = slot
                .credential
                .get_token(&[scope.as_str()], None)
                .await
                .map_err(|error| token_error(&key, error))?;
            let left = token.expires_on - azure_core::time::OffsetDateTime::now_utc();
            let left = Duration::from_secs(u64::try_from(left.whole_seconds()).unwrap_or(0));
            let now = Instant::now();
            let until = now + left.saturating_sub(self.settings.refresh_margin);
            Ok(material_expiry.map_or(until, |expiry| until.min(expiry)))
        });
        let outcome = match tokio::time::timeout_at(deadline, proving).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(error)) => Err(error),
            Err(_elapsed) => Err(IdentityError::DeadlineExceeded {
                identity: key.to_string(),
            }),
        };
        if let Err(error) = outcome {
            if matches!(
                error,
                IdentityError::DeadlineExceeded { .. } | IdentityError::Unavailable { .. }
            ) {
                // Another request may be proving the same credential: keep it for that one.
                return Err(error);
            }
            // A refused credential is not kept: the next request proves itself afresh.
            let mut cache = lock(&self.credentials);
            if cache.peek(&credential_key).is_some_and(|cached| {
                Arc::ptr_eq(cached, &slot) && slot.proven_until.get().is_none()
            }) {
                cache.remove(&credential_key);
            }
            return Err(error);
        }
        tracing::debug!(identity = %key, credential = slot.id, "identity proven");
        Ok(ResolvedIdentity {
            cloud: resolved_cloud.cloud,
            resource: resolved_cloud.resource,
            key,
            credential: Arc::clone(&slot.credential),
            credential_id: slot.id,
        })
    }

    /// Drops the credential `identity` was resolved with, so that the next request with the
    /// same material proves itself again: for a token Key Vault refused.
    pub fn forget(&self, identity: &ResolvedIdentity) {
        let dropped =
            lock(&self.credentials).drain_where(|_, slot| slot.id == identity.credential_id);
        // Dropped outside the lock: whatever a dropped credential holds is released there.
        drop(dropped);
    }

    /// The cached slot for `key` if its proof is still fresh (or being made), else a new one
    /// built by `build` and kept.
    fn slot(
        &self,
        key: &CredentialKey,
        build: impl FnOnce() -> Result<Arc<dyn TokenCredential>, IdentityError>,
    ) -> Result<Arc<Slot>, IdentityError> {
        let mut cache = lock(&self.credentials);
        let now = Instant::now();
        if let Some(slot) = cache.get(key) {
            let fresh = slot.proven_until.get().is_none_or(|until| *until > now);
            if fresh {
                return Ok(Arc::clone(slot));
            }
        }
        let slot = Arc::new(Slot {
            // Process-wide, so two resolvers' credentials never share an id (the vault reader
            // keys its SDK clients by it).
            id: NEXT_CREDENTIAL_ID.fetch_add(1, Ordering::Relaxed),
            credential: build()?,
            proven_until: OnceCell::new(),
        });
        // Dropped outside the lock: whatever a dropped credential holds is released there.
        let evicted = cache.insert(key.clone(), Arc::clone(&slot));
        drop(cache);
        drop(evicted);
        Ok(slot)
    }

    /// The SDK credential for an identity and its material.
    fn credential(
        &self,
        kind: IdentityKind,
        tenant: &str,
        client: &str,
        material: Material,
        cloud: &Cloud,
    ) -> Result<Arc<dyn TokenCredential>, IdentityError> {
        let misconfigured = |error: azure_access::Error| IdentityError::Misconfigured {
            reason: error.to_string(),
        };
        let credential = match (kind, material) {
            (IdentityKind::WorkloadIdentity, Material::Assertion(token)) => {
                Credential::from_client_assertion(tenant, client, token, cloud, &self.remote)
            }
            (IdentityKind::ServicePrincipal, Material::ClientSecret(secret)) => {
                Credential::from_client_secret(tenant, client, secret, cloud, &self.remote)
            }
            (IdentityKind::VmManagedIdentity, Material::Node) => Credential::managed_identity(
                (client != "system").then_some(client),
                cloud,
                &self.managed_identity,
            ),
            _ => {
                return Err(IdentityError::Misconfigured {
                    reason: "identity mode and material do not match".to_owned(),
                });
            }
        }
        .map_err(misconfigured)?;
        Ok(credential.token_credential())
    }

    /// The mode, tenant, client id and proof material of a request.
    fn material(
        &self,
        spec: &AzureMountSpec,
        input: &MountInput,
    ) -> Result<(IdentityKind, String, String, Material), IdentityError> {
        let tenant = spec.tenant_id.trim();
        match &spec.identity {
            IdentityMode::WorkloadIdentity { client_id } => {
                check_tenant(tenant)?;
                let client = check_id("clientID", client_id)?;
                let token = input
                    .tokens
                    .by_audience
                    .get(WORKLOAD_IDENTITY_AUDIENCE)
                    .filter(|token| !token.expose_secret().trim().is_empty())
                    .ok_or(IdentityError::ServiceAccountTokenMissing)?;
                if token.expose_secret().len() > MAX_ASSERTION_LEN {
                    return Err(IdentityError::Invalid {
                        field: "csi.storage.k8s.io/serviceAccount.tokens",
                        reason: format!(
                            "the {WORKLOAD_IDENTITY_AUDIENCE} token is longer than \
                             {MAX_ASSERTION_LEN} bytes"
                        ),
                    });
                }
                let token = SecretString::from(token.expose_secret().trim().to_owned());
                Ok((
                    IdentityKind::WorkloadIdentity,
                    tenant.to_owned(),
                    client,
                    Material::Assertion(token),
                ))
            }
            IdentityMode::ServicePrincipal => {
                check_tenant(tenant)?;
                if input.secrets.by_key.is_empty() {
                    return Err(IdentityError::NodePublishSecretNotSet);
                }
                let find = |wanted: &'static str| {
                    input
                        .secrets
                        .by_key
                        .iter()
                        .find(|(key, value)| {
                            key.trim().eq_ignore_ascii_case(wanted)
                                && !value.expose_secret().trim().is_empty()
                        })
                        .map(|(_, value)| value)
                        .ok_or(IdentityError::SecretKeyMissing { key: wanted })
                };
                let client = check_id("clientid", find("clientid")?.expose_secret())?;
                let secret = find("clientsecret")?.expose_secret().trim();
                if secret.len() > MAX_CLIENT_SECRET_LEN {
                    return Err(IdentityError::Invalid {
                        field: "clientsecret",
                        reason: format!("longer than {MAX_CLIENT_SECRET_LEN} bytes"),
                    });
                }
                Ok((
                    IdentityKind::ServicePrincipal,
                    tenant.to_owned(),
                    client,
                    Material::ClientSecret(SecretString::from(secret.to_owned())),
                ))
            }
            IdentityMode::VmManagedIdentity {
                user_assigned_client_id,
            } => {
                if !self.settings.allow_vm_managed_identity {
                    return Err(IdentityError::Unsupported {
                        parameter: "useVMManagedIdentity",
                        reason: "this provider is set not to lend the node's managed identity to \
                                 pods; use workload identity (clientID with the pod's service \
                                 account token)",
                    });
                }
                let client = match user_assigned_client_id {
                    Some(id) => check_id("userAssignedIdentityID", id)?,
                    None => "system".to_owned(),
                };
                Ok((
                    IdentityKind::VmManagedIdentity,
                    String::new(),
                    client,
                    Material::Node,
                ))
            }
            IdentityMode::PodIdentity => Err(IdentityError::Unsupported {
                parameter: "usePodIdentity",
                reason: "AAD Pod Identity is deprecated and its NMI is not called; use workload \
                         identity (clientID with the pod's service account token)",
            }),
            IdentityMode::TokenProxy { .. } => Err(IdentityError::Unsupported {
                parameter: "useAzureTokenProxy",
                reason: "AKS identity binding's token proxy is not called; use workload identity \
                         (clientID with the pod's service account token)",
            }),
        }
    }

    /// The cloud a class names.
    fn cloud(&self, choice: &CloudChoice) -> Result<ResolvedCloud, IdentityError> {
        let mut resolved = match choice {
            CloudChoice::ProviderDefault => vault_cloud(self.settings.default_cloud.clone()),
            CloudChoice::Named(name) => {
                let cloud = Cloud::known(*name).ok_or_else(|| IdentityError::Cloud {
                    reason: "cloudName names no known cloud: use AzurePublicCloud, \
                             AzureUSGovernmentCloud, AzureChinaCloud, or AzureStackCloud with \
                             cloudEnvFileName"
                        .to_owned(),
                })?;
                vault_cloud(cloud)
            }
            CloudChoice::EnvironmentFile(path) => {
                read_cloud_env_file(self.settings.cloud_env_dir.as_deref(), path)?
            }
        };
        if let Some(authority) = &self.settings.insecure_authority_host {
            resolved.cloud = resolved.cloud.with_authority_host(authority);
        }
        Ok(resolved)
    }
}

/// A cloud and its Key Vault token resource, `https://<vault suffix>`.
fn vault_cloud(cloud: Cloud) -> ResolvedCloud {
    let resource = format!("https://{}", cloud.vault_suffix());
    ResolvedCloud { cloud, resource }
}

fn check_tenant(tenant: &str) -> Result<(), IdentityError> {
    if tenant.eq_ignore_ascii_case("adfs") {
        return Err(IdentityError::Unsupported {
            parameter: "tenantID",
            reason: "Azure Stack Hub with AD FS (tenantID adfs) is not supported; use an Entra ID \
                     tenant",
        });
    }
    check_id("tenantID", tenant).map(drop)
}

/// An id (client, tenant, user-assigned identity): non-empty, short, of the characters ids and
/// domain names use. Returned trimmed.
fn check_id(field: &'static str, id: &str) -> Result<String, IdentityError> {
    let id = id.trim();
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'));
    if ok {
        Ok(id.to_owned())
    } else {
        Err(IdentityError::Invalid {
            field,
            reason: format!(
                "expected an id of at most {MAX_ID_LEN} letters, digits, '-', '.' or '_'"
            ),
        })
    }
}

/// Maps a failed token request to an error naming the identity.
fn token_error(key: &IdentityKey, error: azure_core::Error) -> IdentityError {
    let identity = key.to_string();
    let verdict = classify(&error);
    let status = verdict.answer().map(|answer| answer.status);
    let source = Some(Arc::new(SdkError(error)));
    match verdict {
        Verdict::Throttled(_) | Verdict::Unavailable(_) | Verdict::Unreachable => {
            IdentityError::Unavailable {
                identity,
                status,
                throttled: matches!(verdict, Verdict::Throttled(_)),
                retry_after: verdict.retry_after(),
                source,
            }
        }
        // The managed identity endpoint answers 400 for an identity the node does not have.
        Verdict::CredentialRefused(_) | Verdict::Refused(_) | Verdict::Rejected(_) => {
            IdentityError::Refused {
                identity,
                status,
                source,
            }
        }
        Verdict::Unreadable | Verdict::Sdk => IdentityError::Refused {
            identity,
            status: None,
            source,
        },
    }
}

/// Reads an Azure Stack Hub environment file: `requested` (the class's `cloudEnvFileName`,
/// attacker input) must name a regular file inside `dir` — relative to it, or absolute under
/// it — with no `..` and no symbolic link leading out, at most [`MAX_CLOUD_ENV_FILE_BYTES`].
/// Errors name the requested path, never the file's content.
fn read_cloud_env_file(
    dir: Option<&Path>,
    requested: &str,
) -> Result<ResolvedCloud, IdentityError> {
    let refuse = |why: &str| IdentityError::Cloud {
        reason: format!("cloudEnvFileName {requested:?}: {why}"),
    };
    let dir = dir.ok_or_else(|| {
        refuse("this provider reads no cloud environment file (it has no --cloud-env-dir)")
    })?;
    let path = Path::new(requested.trim());
    if requested.trim().is_empty() || requested.len() > 4096 || requested.contains('\0') {
        return Err(refuse("not a file name"));
    }
    if path.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(refuse("must not contain '..'"));
    }
    let root = dir
        .canonicalize()
        .map_err(|_| refuse("the provider's cloud environment directory cannot be opened"))?;
    let candidate = if path.is_absolute() {
        if !path.starts_with(dir) && !path.starts_with(&root) {
            return Err(refuse(&format!(
                "must be inside the cloud environment directory {}",
                dir.display()
            )));
        }
        path.to_path_buf()
    } else {
        root.join(path)
    };
    let real = candidate
        .canonicalize()
        .map_err(|_| refuse("no such file in the cloud environment directory"))?;
    if !real.starts_with(&root) || real == root {
        return Err(refuse(
            "leads out of the cloud environment directory (through a symbolic link)",
        ));
    }
    let file = std::fs::File::open(&real).map_err(|_| refuse("cannot be opened"))?;
    let metadata = file.metadata().map_err(|_| refuse("cannot be opened"))?;
    if !metadata.is_file() {
        return Err(refuse("is not a regular file"));
    }
    let mut bytes = Vec::new();
    file.take(MAX_CLOUD_ENV_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|_| refuse("cannot be read"))?;
    if bytes.len() as u64 > MAX_CLOUD_ENV_FILE_BYTES {
        return Err(refuse(&format!(
            "is larger than {MAX_CLOUD_ENV_FILE_BYTES} bytes"
        )));
    }
    parse_cloud_env(&bytes).map_err(|why| refuse(&why))
}

/// The fields of an Azure environment file the provider uses (the file has many more).
#[derive(serde::Deserialize)]
struct CloudEnvFile {
    #[serde(rename = "activeDirectoryEndpoint")]
    active_directory_endpoint: Option<String>,
    #[serde(rename = "keyVaultEndpoint")]
    key_vault_endpoint: Option<String>,
    #[serde(rename = "keyVaultDNSSuffix")]
    key_vault_dns_suffix: Option<String>,
}

/// Parses and checks an environment file. The error is a fixed description with a position,
/// never the content (serde's messages quote values).
fn parse_cloud_env(bytes: &[u8]) -> Result<ResolvedCloud, String> {
    let file: CloudEnvFile = serde_json::from_slice(bytes).map_err(|error| {
        format!(
            "is not a JSON object of strings (line {}, column {})",
            error.line(),
            error.column()
        )
    })?;
    let authority = https_base(file.active_directory_endpoint.as_deref()).ok_or(
        "activeDirectoryEndpoint must be an https URL without a path (AD FS is not supported)",
    )?;
    let resource = https_base(file.key_vault_endpoint.as_deref())
        .ok_or("keyVaultEndpoint must be an https URL without a path")?;
    let suffix = file
        .key_vault_dns_suffix
        .as_deref()
        .map(|suffix| suffix.trim().trim_matches('.').to_ascii_lowercase())
        .filter(|suffix| azure_access::cloud::is_dns_name(suffix))
        .ok_or("keyVaultDNSSuffix must be a DNS name")?;
    Ok(ResolvedCloud {
        cloud: Cloud::custom(&authority, &suffix, ""),
        resource,
    })
}

/// `https://host[:port]` from an https URL with no path beyond `/`, no query, no credentials.
fn https_base(url: Option<&str>) -> Option<String> {
    let url = Url::parse(url?.trim()).ok()?;
    let plain = url.scheme() == "https"
        && url.username().is_empty()
        && url.password().is_none()
        && url.query().is_none()
        && url.fragment().is_none()
        && url.path() == "/";
    let host = url.host_str().filter(|_| plain)?;
    Some(match url.port() {
        Some(port) => format!("https://{host}:{port}"),
        None => format!("https://{host}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_json(authority: &str) -> String {
        serde_json::json!({
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": authority,
            "keyVaultEndpoint": "https://vault.local.azurestack.external/",
            "keyVaultDNSSuffix": "vault.local.azurestack.external",
            "resourceManagerEndpoint": "https://management.local.azurestack.external/",
        })
        .to_string()
    }

    #[test]
    fn a_cloud_environment_file_is_read_from_inside_its_directory_only() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("clouds");
        std::fs::create_dir(&dir).unwrap();
        std::fs::create_dir(dir.join("nested")).unwrap();
        std::fs::write(
            dir.join("stack.json"),
            env_json("https://login.microsoftonline.com/"),
        )
        .unwrap();
        std::fs::write(
            dir.join("nested/stack.json"),
            env_json("https://login.example/"),
        )
        .unwrap();
        let secret = root.path().join("outside.json");
        std::fs::write(&secret, env_json("https://login.example/")).unwrap();
        std::os::unix::fs::symlink(&secret, dir.join("escape.json")).unwrap();
        std::os::unix::fs::symlink(dir.join("stack.json"), dir.join("inside.json")).unwrap();

        let read = |path: &str| read_cloud_env_file(Some(&dir), path);
        let stack = read("stack.json").expect("a file in the directory");
        assert_eq!(
            stack.cloud.authority_host(),
            "https://login.microsoftonline.com"
        );
        assert_eq!(
            stack.cloud.vault_suffix(),
            "vault.local.azurestack.external"
        );
        assert_eq!(stack.resource, "https://vault.local.azurestack.external");
        assert_eq!(
            read("nested/stack.json").unwrap().cloud.authority_host(),
            "https://login.example"
        );
        let absolute = dir.join("stack.json").display().to_string();
        assert!(
            read(&absolute).is_ok(),
            "an absolute path inside the directory"
        );
        assert!(read("inside.json").is_ok(), "a link that stays inside");

        for (path, expected) in [
            ("../outside.json", "'..'"),
            ("nested/../../outside.json", "'..'"),
            (secret.to_str().unwrap(), "must be inside"),
            ("/etc/passwd", "must be inside"),
            ("escape.json", "symbolic link"),
            ("missing.json", "no such file"),
            ("nested", "not a regular file"),
            ("", "not a file name"),
        ] {
            let error = read(path)
                .err()
                .unwrap_or_else(|| panic!("{path:?} was read"));
            assert_eq!(error.code(), tonic::Code::FailedPrecondition);
            assert!(error.to_string().contains(expected), "{path:?}: {error}");
        }
        let error = read_cloud_env_file(None, "stack.json").err().unwrap();
        assert!(error.to_string().contains("--cloud-env-dir"), "{error}");
    }

    #[test]
    fn a_bad_or_large_cloud_environment_file_is_refused_without_echoing_it() {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, content: &str| {
            std::fs::write(dir.path().join(name), content).unwrap();
        };
        write("secret.txt", "hunter2-top-secret");
        write(
            "wrong-type.json",
            r#"{"keyVaultDNSSuffix": ["hunter2-top-secret"]}"#,
        );
        write(
            "large.json",
            &format!(
                "{{\"x\": \"{}\"}}",
                "a".repeat(MAX_CLOUD_ENV_FILE_BYTES as usize)
            ),
        );
        write("http.json", &env_json("http://login.example/"));
        write(
            "adfs.json",
            &env_json("https://adfs.local.azurestack.external/adfs/"),
        );
        write(
            "no-suffix.json",
            r#"{"activeDirectoryEndpoint": "https://login.example/", "keyVaultEndpoint": "https://v.example/"}"#,
        );
        for (name, expected) in [
            ("secret.txt", "not a JSON object"),
            ("wrong-type.json", "not a JSON object"),
            ("large.json", "larger than"),
            ("http.json", "activeDirectoryEndpoint"),
            ("adfs.json", "AD FS"),
            ("no-suffix.json", "keyVaultDNSSuffix"),
        ] {
            let error = read_cloud_env_file(Some(dir.path()), name)
                .err()
                .unwrap_or_else(|| panic!("{name} was accepted"))
                .to_string();
            assert!(error.contains(expected), "{name}: {error}");
            assert!(!error.contains("hunter2"), "{name}: {error}");
        }
    }

    #[test]
    fn an_assertions_expiry_is_read_from_its_exp_claim() {
        use base64::Engine;
        let encode = |json: &str| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let token = |claims: &str| {
            Material::Assertion(SecretString::from(format!(
                "{}.{}.sig",
                encode(r#"{"alg":"RS256"}"#),
                encode(claims)
            )))
        };
        let started = Instant::now();
        let expiry = token(&format!(r#"{{"exp":{}}}"#, now + 600))
            .expiry()
            .unwrap();
        let left = expiry - started;
        assert!(
            left > Duration::from_secs(590) && left <= Duration::from_secs(601),
            "{left:?}"
        );
        let past = token(&format!(r#"{{"exp":{}}}"#, now - 10))
            .expiry()
            .unwrap();
        assert!(past <= Instant::now());
        assert!(token(r#"{"sub":"x"}"#).expiry().is_none());
        assert!(
            Material::Assertion(SecretString::from("garbage".to_owned()))
                .expiry()
                .is_none()
        );
        assert!(Material::Node.expiry().is_none());
    }

    #[test]
    fn proof_digests_differ_by_material_and_kind() {
        let assertion = Material::Assertion(SecretString::from("same".to_owned()));
        let secret = Material::ClientSecret(SecretString::from("same".to_owned()));
        let other = Material::ClientSecret(SecretString::from("other".to_owned()));
        let again = Material::ClientSecret(SecretString::from("same".to_owned()));
        assert_ne!(assertion.digest(), secret.digest());
        assert_ne!(secret.digest(), other.digest());
        assert_eq!(secret.digest(), again.digest());
        assert_ne!(Material::Node.digest(), secret.digest());
    }

    #[test]
    fn ids_are_checked_and_adfs_is_named() {
        assert_eq!(
            check_id("clientID", " abc-DEF.1_2 ").unwrap(),
            "abc-DEF.1_2"
        );
        for bad in ["", "a/b", "a b", "x?y=1", &"a".repeat(MAX_ID_LEN + 1)] {
            let error = check_id("clientID", bad).unwrap_err();
            assert_eq!(error.code(), tonic::Code::InvalidArgument, "{bad:?}");
        }
        let error = check_tenant("ADFS").unwrap_err();
        assert_eq!(error.code(), tonic::Code::Unimplemented);
        assert!(error.to_string().contains("AD FS"), "{error}");
    }

    #[test]
    fn every_error_has_its_code_and_names_no_secret() {
        let identity = "service principal (client c, tenant t)".to_owned();
        let table = [
            (
                IdentityError::ServiceAccountTokenMissing,
                tonic::Code::FailedPrecondition,
            ),
            (
                IdentityError::NodePublishSecretNotSet,
                tonic::Code::FailedPrecondition,
            ),
            (
                IdentityError::SecretKeyMissing { key: "clientid" },
                tonic::Code::FailedPrecondition,
            ),
            (
                IdentityError::Refused {
                    identity: identity.clone(),
                    status: Some(401),
                    source: None,
                },
                tonic::Code::Unauthenticated,
            ),
            (
                IdentityError::Unavailable {
                    identity: identity.clone(),
                    status: Some(503),
                    throttled: false,
                    retry_after: Some(Duration::from_secs(3)),
                    source: None,
                },
                tonic::Code::Unavailable,
            ),
            (
                IdentityError::Unavailable {
                    identity: identity.clone(),
                    status: Some(429),
                    throttled: true,
                    retry_after: None,
                    source: None,
                },
                tonic::Code::ResourceExhausted,
            ),
            (
                IdentityError::DeadlineExceeded { identity },
                tonic::Code::DeadlineExceeded,
            ),
        ];
        for (error, code) in table {
            assert_eq!(error.code(), code, "{error}");
        }
        let entra = azure_access::errors::testing::entra_error(401);
        let key = IdentityKey {
            kind: IdentityKind::ServicePrincipal,
            tenant: "t".into(),
            client: "c".into(),
            authority: "https://login.example".into(),
            resource: "https://vault.azure.net".into(),
        };
        let error = token_error(&key, entra);
        assert!(
            matches!(
                error,
                IdentityError::Refused {
                    status: Some(401),
                    ..
                }
            ),
            "{error:?}"
        );
        assert_eq!(
            error.to_string(),
            "service principal (client c, tenant t) was refused a token for Key Vault (HTTP 401)"
        );
        assert!(std::error::Error::source(&error).is_some());
    }
}
