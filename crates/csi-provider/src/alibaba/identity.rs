//! Who an Alibaba Mount acts as, in the order Alibaba's provider tries them, and the proof that
//! it may: (1) the pod's own RAM role (RRSA: `usePodServiceAccountToken`, the pod's token for
//! audience `sts.aliyuncs.com` exchanged by `AssumeRoleWithOIDC` for the role the class or the
//! ServiceAccount's `ack.alibabacloud.com/role-arn` annotation names); (2) the provider's own
//! RRSA (`ALICLOUD_ROLE_ARN` with `ALICLOUD_OIDC_PROVIDER_ARN` and its projected token file);
//! (3) a RAM role assumed with the provider's AccessKey (`ACCESS_KEY_ID`, `SECRET_ACCESS_KEY`,
//! `ALICLOUD_ROLE_ARN`); (4) an AccessKey from the nodePublishSecretRef (`access_key`,
//! `access_secret`); (5) the provider's AccessKey; (6) the ECS instance's RAM role from the
//! metadata service. An object's `crossAccountRoleArn` is then assumed with that identity.
//!
//! STS credentials are cached keyed by the identity AND a SHA-256 of the material that proved
//! it (the pod's token, the token file's content, the AccessKey secret), until shortly before
//! they expire or the pod's token does: a rotation poll of a pod whose token has not changed
//! costs no STS call, while a pod presenting another token must earn its own credentials. An
//! AccessKey is its own proof: its identity carries the digest of its secret, so objects read
//! with one secret are never served to a request presenting another. Nothing about one pod's
//! identity ever serves another pod's request unless that request proved the same identity.
//!
//! Unlike Alibaba's provider, a class that asks for the pod's identity
//! (`usePodServiceAccountToken: "true"`) never falls back to the provider's: without the pod's
//! token or role the Mount fails and says what is missing.
//!
//! Never logs or shows a token, an AccessKey secret or an STS answer (the digests stay in
//! memory and are never shown either); AccessKey ids are shown shortened.

use std::fmt;
use std::future::Future;
use std::io::Read;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use tokio::sync::OnceCell;
use tokio::time::Instant;

use super::client::{
    AlibabaClient, CallError, Credentials, ServiceAnswer, Verdict, seconds_up, shortened,
};
use super::spec::{AlibabaMountSpec, RoleArn};
use crate::lru::{Lru, lock};
use crate::request::MountInput;

/// The audience of the service-account token RRSA exchanges.
pub const RRSA_AUDIENCE: &str = "sts.aliyuncs.com";
/// The ServiceAccount annotation that names a pod's RAM role.
pub const ROLE_ARN_ANNOTATION: &str = "ack.alibabacloud.com/role-arn";
/// The session name of cross-account roles, as Alibaba's provider names them.
pub const CROSS_ACCOUNT_SESSION: &str = "csi-secrets-store-cross-account";
/// The nodePublishSecretRef keys of an AccessKey (matched case-insensitively).
pub const ACCESS_KEY: &str = "access_key";
/// See [`ACCESS_KEY`].
pub const ACCESS_SECRET: &str = "access_secret";
/// The longest token (pod or file) accepted, in bytes.
const MAX_TOKEN_BYTES: usize = 16 * 1024;
/// The longest AccessKey id or secret accepted.
const MAX_ACCESS_KEY_LEN: usize = 256;

/// Finds the RAM role a ServiceAccount's `ack.alibabacloud.com/role-arn` annotation names.
#[async_trait::async_trait]
pub trait ServiceAccountRoles: Send + Sync {
    /// The annotation's value for `service_account` in `namespace`; `Ok(None)` when the
    /// ServiceAccount has none. `Err` says why it could not be read (no secret in it).
    async fn role_arn(
        &self,
        namespace: &str,
        service_account: &str,
        deadline: Instant,
    ) -> Result<Option<String>, String>;
}

/// How identities are resolved: the provider's own settings (from its environment, with
/// Alibaba's provider's names).
#[derive(Clone)]
pub struct IdentitySettings {
    /// `ALICLOUD_ROLE_ARN`: the provider's RAM role (RRSA, or with its AccessKey).
    pub role_arn: Option<RoleArn>,
    /// `ALICLOUD_OIDC_PROVIDER_ARN` (or `acs:ram::<ALICLOUD_ACCOUNT_ID>:oidc-provider/ack-rrsa-
    /// <ALICLOUD_CLUSTER_ID>`): the cluster's OIDC provider, for both RRSA modes.
    pub oidc_provider_arn: Option<String>,
    /// `ALICLOUD_OIDC_TOKEN_FILE`: the provider's projected service-account token.
    pub oidc_token_file: PathBuf,
    /// `ACCESS_KEY_ID`.
    pub access_key_id: Option<String>,
    /// `SECRET_ACCESS_KEY`.
    pub access_key_secret: Option<SecretString>,
    /// `ALICLOUD_ROLE_SESSION_NAME`.
    pub role_session_name: String,
    /// `ALICLOUD_ROLE_SESSION_EXPIRATION`: how long assumed roles' credentials last.
    pub role_session_duration: Duration,
    /// Whether the ECS instance's RAM role is lent to pods (every pod on the node may use it).
    pub allow_ecs_ram_role: bool,
    /// Reads ServiceAccount annotations; `None`: only `podServiceAccountRoleArn` names a pod's
    /// role.
    pub service_accounts: Option<Arc<dyn ServiceAccountRoles>>,
    /// At most this many proven credentials are kept.
    pub max_cached_credentials: usize,
    /// Credentials are dropped this long before they expire, and new ones obtained.
    pub refresh_margin: Duration,
}

/// The default token file of the provider's own RRSA (Alibaba's chart projects it there).
pub const DEFAULT_OIDC_TOKEN_FILE: &str =
    "/var/run/secrets/tokens/csi-secrets-store-provider-alibabacloud";
/// The default session name of assumed roles.
pub const DEFAULT_SESSION_NAME: &str = "csi-secrets-store-provider-alibaba";

impl Default for IdentitySettings {
    fn default() -> Self {
        Self {
            role_arn: None,
            oidc_provider_arn: None,
            oidc_token_file: PathBuf::from(DEFAULT_OIDC_TOKEN_FILE),
            access_key_id: None,
            access_key_secret: None,
            role_session_name: DEFAULT_SESSION_NAME.to_owned(),
            role_session_duration: Duration::from_secs(3600),
            allow_ecs_ram_role: true,
            service_accounts: None,
            max_cached_credentials: 1024,
            refresh_margin: Duration::from_secs(5 * 60),
        }
    }
}

impl fmt::Debug for IdentitySettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySettings")
            .field("role_arn", &self.role_arn)
            .field("oidc_provider_arn", &self.oidc_provider_arn)
            .field("oidc_token_file", &self.oidc_token_file)
            .field(
                "access_key_id",
                &self.access_key_id.as_deref().map(shortened),
            )
            .field(
                "access_key_secret",
                &self.access_key_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("role_session_name", &self.role_session_name)
            .field("role_session_duration", &self.role_session_duration)
            .field("allow_ecs_ram_role", &self.allow_ecs_ram_role)
            .field("service_accounts", &self.service_accounts.is_some())
            .finish_non_exhaustive()
    }
}

/// Who a Mount acts as, without any secret. Two requests with equal keys act as the same
/// principal; the object cache is keyed by it.
#[derive(Clone, PartialEq, Eq, Hash)]
pub enum IdentityKey {
    /// The pod's RAM role, by RRSA.
    PodRole {
        /// The role.
        role: String,
        /// The OIDC provider.
        provider: String,
    },
    /// The provider's RAM role, by RRSA.
    ProviderRole {
        /// The role.
        role: String,
        /// The OIDC provider.
        provider: String,
    },
    /// A RAM role assumed with the provider's AccessKey.
    RamRole {
        /// The AccessKey's id.
        access_key_id: String,
        /// The role.
        role: String,
    },
    /// An AccessKey (nodePublishSecretRef or the provider's), with its secret's digest.
    AccessKey {
        /// Where it came from: `nodePublishSecretRef` or `provider`.
        source: &'static str,
        /// The id.
        access_key_id: String,
        /// SHA-256 of the secret (domain-separated).
        secret_digest: [u8; 32],
    },
    /// The ECS instance's RAM role.
    EcsRole,
    /// A role in another account assumed with `base`.
    CrossAccount {
        /// The role.
        role: String,
        /// Who assumed it.
        base: Box<IdentityKey>,
    },
}

impl fmt::Display for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PodRole { role, .. } => write!(f, "the pod's RAM role {role} (RRSA)"),
            Self::ProviderRole { role, .. } => write!(f, "the provider's RAM role {role} (RRSA)"),
            Self::RamRole {
                access_key_id,
                role,
            } => write!(
                f,
                "RAM role {role} assumed with AccessKey {}",
                shortened(access_key_id)
            ),
            Self::AccessKey {
                source,
                access_key_id,
                ..
            } => write!(f, "AccessKey {} from {source}", shortened(access_key_id)),
            Self::EcsRole => f.write_str("the ECS instance's RAM role"),
            Self::CrossAccount { role, base } => {
                write!(f, "cross-account role {role} assumed by {base}")
            }
        }
    }
}

impl fmt::Debug for IdentityKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Display holds no secret (the digest is never shown).
        write!(f, "IdentityKey({self})")
    }
}

/// A proven identity: its key and the credentials this request may use. Only
/// [`IdentityResolver`] makes one.
#[derive(Clone)]
pub struct ResolvedIdentity {
    key: IdentityKey,
    credentials: Arc<Credentials>,
    credential_id: u64,
}

impl ResolvedIdentity {
    /// Who this is (no secret).
    pub fn key(&self) -> &IdentityKey {
        &self.key
    }

    /// The credentials, for signing reads.
    pub fn credentials(&self) -> &Arc<Credentials> {
        &self.credentials
    }

    /// A number that is the same for requests served by the same proven credentials and never
    /// reused.
    pub fn credential_id(&self) -> u64 {
        self.credential_id
    }
}

impl fmt::Debug for ResolvedIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResolvedIdentity")
            .field("key", &self.key)
            .field("credential_id", &self.credential_id)
            .finish_non_exhaustive()
    }
}

/// The identity could not be established or proven. `Display` never shows a token, a secret or
/// an STS answer's text.
#[derive(Debug, Clone)]
pub enum IdentityError {
    /// `usePodServiceAccountToken` without the pod's token for [`RRSA_AUDIENCE`].
    PodTokenMissing,
    /// `usePodServiceAccountToken` and no role names the pod's RAM role.
    PodRoleUnknown {
        /// The pod's namespace.
        namespace: String,
        /// The pod's ServiceAccount.
        service_account: String,
        /// Why the annotation could not be read, when it could not.
        lookup: Option<String>,
    },
    /// RRSA (the pod's or the provider's) without the cluster's OIDC provider ARN.
    OidcProviderNotConfigured,
    /// The provider's RRSA token file cannot be read.
    ProviderTokenUnreadable {
        /// The file.
        path: PathBuf,
        /// Why, a fixed text.
        reason: &'static str,
    },
    /// An AccessKey or token in the request is not acceptable.
    Invalid {
        /// The field or Secret key.
        field: &'static str,
        /// What is wrong; never the value.
        reason: String,
    },
    /// No identity mode applies: no pod role, no provider RRSA or AccessKey, no
    /// nodePublishSecretRef AccessKey, and the ECS role is not lent.
    NoCredentials,
    /// STS (or the metadata service) refused the identity.
    Refused {
        /// The identity.
        identity: String,
        /// The answer.
        answer: Option<ServiceAnswer>,
    },
    /// STS or the metadata service is throttling, failing or unreachable.
    Unavailable {
        /// The identity.
        identity: String,
        /// The answer, when there was one.
        answer: Option<ServiceAnswer>,
        /// Whether it was throttling.
        throttled: bool,
    },
    /// No credentials before the Mount's deadline.
    DeadlineExceeded {
        /// The identity.
        identity: String,
    },
    /// An answer that is not what STS or the metadata service sends.
    Malformed {
        /// The identity.
        identity: String,
        /// What is wrong, a fixed text.
        reason: &'static str,
    },
}

impl IdentityError {
    /// The gRPC code a Mount failing this way is answered with (the table is
    /// [`crate::errors`]'s).
    pub fn code(&self) -> tonic::Code {
        crate::errors::alibaba_identity_code(self)
    }

    fn from_call(key: &IdentityKey, error: CallError) -> Self {
        let identity = key.to_string();
        match error {
            CallError::Refused(answer) => match answer.verdict() {
                Verdict::Throttled | Verdict::Unavailable => Self::Unavailable {
                    identity,
                    throttled: answer.verdict() == Verdict::Throttled,
                    answer: Some(answer),
                },
                _ => Self::Refused {
                    identity,
                    answer: Some(answer),
                },
            },
            CallError::Unreachable { .. } => Self::Unavailable {
                identity,
                answer: None,
                throttled: false,
            },
            CallError::Malformed { reason, .. } => Self::Malformed { identity, reason },
            CallError::DeadlineExceeded { .. } => Self::DeadlineExceeded { identity },
        }
    }
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::PodTokenMissing => write!(
                f,
                "usePodServiceAccountToken is true but the pod's service account token for \
                 audience {RRSA_AUDIENCE} is missing (the secrets-store.csi.k8s.io CSIDriver must \
                 list that audience in tokenRequests)"
            ),
            Self::PodRoleUnknown {
                namespace,
                service_account,
                lookup,
            } => {
                write!(
                    f,
                    "usePodServiceAccountToken is true but no RAM role is named for \
                     ServiceAccount {namespace}/{service_account}: annotate it with \
                     {ROLE_ARN_ANNOTATION} or set podServiceAccountRoleArn in the class"
                )?;
                match lookup {
                    Some(why) => write!(f, " (the annotation could not be read: {why})"),
                    None => Ok(()),
                }
            }
            Self::OidcProviderNotConfigured => f.write_str(
                "RRSA needs the cluster's OIDC provider ARN: set ALICLOUD_OIDC_PROVIDER_ARN (or \
                 ALICLOUD_ACCOUNT_ID and ALICLOUD_CLUSTER_ID) for the provider",
            ),
            Self::ProviderTokenUnreadable { path, reason } => write!(
                f,
                "the provider's RRSA token file {} {reason}",
                path.display()
            ),
            Self::Invalid { field, reason } => write!(f, "{field}: {reason}"),
            Self::NoCredentials => f.write_str(
                "no credentials: set usePodServiceAccountToken with a pod RAM role, configure the \
                 provider's RRSA or AccessKey, or give the class a nodePublishSecretRef with \
                 access_key and access_secret",
            ),
            Self::Refused { identity, answer } => {
                write!(f, "{identity} was refused credentials")?;
                match answer {
                    Some(answer) => write!(f, " ({answer})"),
                    None => Ok(()),
                }
            }
            Self::Unavailable {
                identity,
                answer,
                throttled,
            } => {
                write!(f, "cannot get credentials for {identity}: ")?;
                match (answer, throttled) {
                    (Some(answer), true) => {
                        write!(f, "STS is throttling requests ({answer})")?;
                        if let Some(wait) = answer.retry_after {
                            write!(f, "; retry after {} s", seconds_up(wait))?;
                        }
                        Ok(())
                    }
                    (Some(answer), false) => write!(f, "the issuer is unavailable ({answer})"),
                    (None, _) => f.write_str("the issuer is unreachable (no answer)"),
                }
            }
            Self::DeadlineExceeded { identity } => write!(
                f,
                "no credentials for {identity} before the mount's deadline"
            ),
            Self::Malformed { identity, reason } => {
                write!(f, "cannot get credentials for {identity}: {reason}")
            }
        }
    }
}

impl std::error::Error for IdentityError {}

/// A credential's cache key: who, and the digest of what proved it.
type SlotKey = (IdentityKey, [u8; 32]);

/// Credentials being proven, and once proven, until when they serve.
struct Slot {
    id: u64,
    proven: OnceCell<(Arc<Credentials>, Instant)>,
}

/// What a request proves its identity with.
enum Proof {
    /// An OIDC token (the pod's, or the provider's file's) for `AssumeRoleWithOIDC`.
    OidcToken {
        role: RoleArn,
        provider: String,
        token: SecretString,
    },
    /// An AccessKey to assume `role` with.
    AccessKeyForRole {
        role: RoleArn,
        access_key_id: String,
        secret: SecretString,
    },
    /// An AccessKey used as it is.
    AccessKey {
        access_key_id: String,
        secret: SecretString,
    },
    /// The ECS instance's role.
    Node,
}

impl Proof {
    /// A SHA-256 of the proof material with a domain separator.
    fn digest(&self) -> [u8; 32] {
        let (tag, bytes): (u8, &[u8]) = match self {
            Self::OidcToken { token, .. } => (1, token.expose_secret().as_bytes()),
            Self::AccessKeyForRole { secret, .. } => (2, secret.expose_secret().as_bytes()),
            Self::AccessKey { secret, .. } => (3, secret.expose_secret().as_bytes()),
            Self::Node => (4, &[]),
        };
        let mut hasher = Sha256::new();
        hasher.update(b"kube-kms csi-provider alibaba identity proof v1\0");
        hasher.update([tag]);
        hasher.update(bytes);
        hasher.finalize().into()
    }

    /// When a token proof expires (its unverified `exp`), as a tokio instant.
    fn expiry(&self) -> Option<Instant> {
        let Self::OidcToken { token, .. } = self else {
            return None;
        };
        let payload = token.expose_secret().split('.').nth(1)?;
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload.trim_end_matches('='))
            .ok()?;
        let exp = serde_json::from_slice::<serde_json::Value>(&claims)
            .ok()?
            .get("exp")?
            .as_u64()?;
        let at = SystemTime::UNIX_EPOCH.checked_add(Duration::from_secs(exp))?;
        let left = at.duration_since(SystemTime::now()).unwrap_or_default();
        Instant::now().checked_add(left)
    }
}

/// Resolves and proves each Mount's identity; keeps proven credentials.
pub struct IdentityResolver {
    settings: IdentitySettings,
    client: Arc<AlibabaClient>,
    slots: Mutex<Lru<SlotKey, Arc<Slot>>>,
    next_id: AtomicU64,
}

impl fmt::Debug for IdentityResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentityResolver")
            .field("settings", &self.settings)
            .field("cached_credentials", &self.cached_credentials())
            .finish_non_exhaustive()
    }
}

impl IdentityResolver {
    /// A resolver with `settings`, calling STS and the metadata service through `client`.
    pub fn new(settings: IdentitySettings, client: Arc<AlibabaClient>) -> Self {
        let capacity = settings.max_cached_credentials.max(1);
        Self {
            settings,
            client,
            slots: Mutex::new(Lru::new(capacity)),
            next_id: AtomicU64::new(1),
        }
    }

    /// How many credentials are kept (proven, or being proven).
    pub fn cached_credentials(&self) -> usize {
        lock(&self.slots).len()
    }

    /// Drops `identity`'s credentials (a read with them was refused as expired or revoked), so
    /// that the next request proves its identity afresh instead of using them until they
    /// expire.
    pub fn forget(&self, identity: &ResolvedIdentity) {
        let dropped = lock(&self.slots).drain_where(|_, slot| slot.id == identity.credential_id);
        drop(dropped);
    }

    /// The identity the chain gives the pod of `input` for `spec`, proven before this returns
    /// (STS answered with this request's material, or its digest matches credentials that
    /// did and are still fresh). Fails at `deadline` at the latest.
    pub async fn resolve(
        &self,
        spec: &AlibabaMountSpec,
        input: &MountInput,
        deadline: Instant,
    ) -> Result<ResolvedIdentity, IdentityError> {
        let (key, proof) = self.choose(spec, input, deadline).await?;
        if let Proof::AccessKey {
            access_key_id,
            secret,
        } = proof
        {
            // Its own proof: the key carries the secret's digest.
            return Ok(ResolvedIdentity {
                key,
                credentials: Arc::new(Credentials {
                    access_key_id,
                    access_key_secret: secret,
                    security_token: None,
                    expiration: None,
                }),
                credential_id: 0,
            });
        }
        let digest = proof.digest();
        self.prove((key, digest), deadline, |key| async move {
            self.obtain(key, proof, deadline).await
        })
        .await
    }

    /// `role` in another account, assumed with `base` (its credentials cached per proven base
    /// credentials and role).
    pub async fn cross_account(
        &self,
        base: &ResolvedIdentity,
        role: &RoleArn,
        deadline: Instant,
    ) -> Result<ResolvedIdentity, IdentityError> {
        let key = IdentityKey::CrossAccount {
            role: role.as_str().to_owned(),
            base: Box::new(base.key.clone()),
        };
        // The base's own proof: its credential id, or for an AccessKey its digest (in its key).
        let mut hasher = Sha256::new();
        hasher.update(b"kube-kms csi-provider alibaba cross-account v1\0");
        hasher.update(base.credential_id.to_le_bytes());
        let digest: [u8; 32] = hasher.finalize().into();
        let credentials = Arc::clone(&base.credentials);
        self.prove((key, digest), deadline, |key| async move {
            let assumed = self
                .client
                .assume_role(
                    &credentials,
                    role,
                    CROSS_ACCOUNT_SESSION,
                    Duration::from_secs(3600),
                    deadline,
                )
                .await
                .map_err(|error| IdentityError::from_call(&key, error))?;
            Ok((assumed, None))
        })
        .await
    }

    /// Proves the slot of `slot_key` with `obtain` unless it is proven and fresh; a refusal is
    /// not kept.
    async fn prove<F, Fut>(
        &self,
        slot_key: SlotKey,
        deadline: Instant,
        obtain: F,
    ) -> Result<ResolvedIdentity, IdentityError>
    where
        F: FnOnce(IdentityKey) -> Fut,
        Fut: Future<Output = Result<(Credentials, Option<Instant>), IdentityError>>,
    {
        let slot = self.slot(&slot_key);
        let key = slot_key.0.clone();
        let margin = self.settings.refresh_margin;
        let proving = slot.proven.get_or_try_init(|| async {
            let (credentials, proof_expiry) = obtain(key.clone()).await?;
            let left = credentials
                .expiration
                .and_then(|at| at.duration_since(SystemTime::now()).ok())
                .unwrap_or_default();
            let until = Instant::now() + left.saturating_sub(margin);
            let until = proof_expiry.map_or(until, |expiry| until.min(expiry));
            Ok::<_, IdentityError>((Arc::new(credentials), until))
        });
        let outcome = tokio::time::timeout_at(deadline, proving).await;
        let error = match outcome {
            Ok(Ok((credentials, _))) => {
                tracing::debug!(identity = %key, credential = slot.id, "identity proven");
                return Ok(ResolvedIdentity {
                    key,
                    credentials: Arc::clone(credentials),
                    credential_id: slot.id,
                });
            }
            Ok(Err(error)) => error,
            Err(_elapsed) => IdentityError::DeadlineExceeded {
                identity: key.to_string(),
            },
        };
        if !matches!(
            error,
            IdentityError::DeadlineExceeded { .. } | IdentityError::Unavailable { .. }
        ) {
            // A refused proof is not kept: the next request proves itself afresh. (A slow one
            // stays for the request still proving it.)
            let mut slots = lock(&self.slots);
            if slots
                .peek(&slot_key)
                .is_some_and(|cached| Arc::ptr_eq(cached, &slot) && slot.proven.get().is_none())
            {
                slots.remove(&slot_key);
            }
        }
        Err(error)
    }

    /// The cached slot for `key` if fresh (or being proven), else a new one, kept.
    fn slot(&self, key: &SlotKey) -> Arc<Slot> {
        let mut slots = lock(&self.slots);
        let now = Instant::now();
        if let Some(slot) = slots.get(key)
            && slot.proven.get().is_none_or(|(_, until)| *until > now)
        {
            return Arc::clone(slot);
        }
        let slot = Arc::new(Slot {
            id: self.next_id.fetch_add(1, Ordering::Relaxed),
            proven: OnceCell::new(),
        });
        let evicted = slots.insert(key.clone(), Arc::clone(&slot));
        drop(slots);
        drop(evicted);
        slot
    }

    /// Credentials for `proof` from STS or the metadata service, and when the proof expires.
    async fn obtain(
        &self,
        key: IdentityKey,
        proof: Proof,
        deadline: Instant,
    ) -> Result<(Credentials, Option<Instant>), IdentityError> {
        let failed = |error| IdentityError::from_call(&key, error);
        let session = &self.settings.role_session_name;
        let duration = self.settings.role_session_duration;
        let expiry = proof.expiry();
        let credentials = match proof {
            Proof::OidcToken {
                role,
                provider,
                token,
            } => self
                .client
                .assume_role_with_oidc(&role, &provider, &token, session, duration, deadline)
                .await
                .map_err(failed)?,
            Proof::AccessKeyForRole {
                role,
                access_key_id,
                secret,
            } => {
                let base = Credentials {
                    access_key_id,
                    access_key_secret: secret,
                    security_token: None,
                    expiration: None,
                };
                self.client
                    .assume_role(&base, &role, session, duration, deadline)
                    .await
                    .map_err(failed)?
            }
            Proof::Node => {
                self.client
                    .ecs_role_credentials(deadline)
                    .await
                    .map_err(failed)?
                    .1
            }
            Proof::AccessKey { .. } => {
                return Err(IdentityError::Malformed {
                    identity: key.to_string(),
                    reason: "an AccessKey needs no STS call",
                });
            }
        };
        Ok((credentials, expiry))
    }

    /// The first mode of the chain that applies, with its key and proof.
    async fn choose(
        &self,
        spec: &AlibabaMountSpec,
        input: &MountInput,
        deadline: Instant,
    ) -> Result<(IdentityKey, Proof), IdentityError> {
        let settings = &self.settings;
        if spec.use_pod_service_account_token {
            let role = self.pod_role(spec, input, deadline).await?;
            let provider = settings
                .oidc_provider_arn
                .clone()
                .ok_or(IdentityError::OidcProviderNotConfigured)?;
            let token = input
                .tokens
                .by_audience
                .get(RRSA_AUDIENCE)
                .map(|token| token.expose_secret().trim())
                .filter(|token| !token.is_empty())
                .ok_or(IdentityError::PodTokenMissing)?;
            if token.len() > MAX_TOKEN_BYTES {
                return Err(IdentityError::Invalid {
                    field: "csi.storage.k8s.io/serviceAccount.tokens",
                    reason: format!(
                        "the {RRSA_AUDIENCE} token is longer than {MAX_TOKEN_BYTES} bytes"
                    ),
                });
            }
            let key = IdentityKey::PodRole {
                role: role.as_str().to_owned(),
                provider: provider.clone(),
            };
            let token = SecretString::from(token.to_owned());
            return Ok((
                key,
                Proof::OidcToken {
                    role,
                    provider,
                    token,
                },
            ));
        }
        if let (Some(role), Some(provider)) = (&settings.role_arn, &settings.oidc_provider_arn) {
            let token = self.provider_token()?;
            let key = IdentityKey::ProviderRole {
                role: role.as_str().to_owned(),
                provider: provider.clone(),
            };
            return Ok((
                key,
                Proof::OidcToken {
                    role: role.clone(),
                    provider: provider.clone(),
                    token,
                },
            ));
        }
        let provider_key = match (&settings.access_key_id, &settings.access_key_secret) {
            (Some(id), Some(secret)) => Some((id.trim(), secret)),
            _ => None,
        };
        if let (Some(role), Some((id, secret))) = (&settings.role_arn, provider_key) {
            let key = IdentityKey::RamRole {
                access_key_id: id.to_owned(),
                role: role.as_str().to_owned(),
            };
            return Ok((
                key,
                Proof::AccessKeyForRole {
                    role: role.clone(),
                    access_key_id: id.to_owned(),
                    secret: secret.clone(),
                },
            ));
        }
        if let Some((id, secret)) = node_publish_access_key(input)? {
            return Ok(access_key("nodePublishSecretRef", id, secret));
        }
        if let Some((id, secret)) = provider_key {
            return Ok(access_key("provider", id.to_owned(), secret.clone()));
        }
        if settings.allow_ecs_ram_role {
            return Ok((IdentityKey::EcsRole, Proof::Node));
        }
        Err(IdentityError::NoCredentials)
    }

    /// The pod's role: the class's `podServiceAccountRoleArn`, else its ServiceAccount's
    /// annotation.
    async fn pod_role(
        &self,
        spec: &AlibabaMountSpec,
        input: &MountInput,
        deadline: Instant,
    ) -> Result<RoleArn, IdentityError> {
        if let Some(role) = &spec.pod_role {
            return Ok(role.clone());
        }
        let (namespace, service_account) = (&input.pod.namespace, &input.pod.service_account);
        let unknown = |lookup| IdentityError::PodRoleUnknown {
            namespace: namespace.clone(),
            service_account: service_account.clone(),
            lookup,
        };
        let Some(lookup) = &self.settings.service_accounts else {
            return Err(unknown(None));
        };
        if namespace.is_empty() || service_account.is_empty() {
            return Err(unknown(Some(
                "kubelet sent no pod namespace or ServiceAccount (podInfoOnMount)".to_owned(),
            )));
        }
        match lookup.role_arn(namespace, service_account, deadline).await {
            Ok(Some(arn)) => RoleArn::parse(arn.trim()).map_err(|reason| IdentityError::Invalid {
                field: ROLE_ARN_ANNOTATION,
                reason,
            }),
            Ok(None) => Err(unknown(None)),
            Err(why) => Err(unknown(Some(why))),
        }
    }

    /// The provider's RRSA token, read now from its file (at most [`MAX_TOKEN_BYTES`]).
    fn provider_token(&self) -> Result<SecretString, IdentityError> {
        let path = &self.settings.oidc_token_file;
        let unreadable = |reason| IdentityError::ProviderTokenUnreadable {
            path: path.clone(),
            reason,
        };
        let file = std::fs::File::open(path).map_err(|_| unreadable("cannot be opened"))?;
        let mut bytes = zeroize::Zeroizing::new(Vec::new());
        file.take(MAX_TOKEN_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(|_| unreadable("cannot be read"))?;
        if bytes.len() > MAX_TOKEN_BYTES {
            return Err(unreadable("is larger than 16 KiB"));
        }
        let text = std::str::from_utf8(&bytes).map_err(|_| unreadable("is not text"))?;
        let token = text.trim();
        if token.is_empty() {
            return Err(unreadable("is empty"));
        }
        Ok(SecretString::from(token.to_owned()))
    }
}

/// An AccessKey identity and its proof.
fn access_key(source: &'static str, id: String, secret: SecretString) -> (IdentityKey, Proof) {
    let proof = Proof::AccessKey {
        access_key_id: id.clone(),
        secret,
    };
    let key = IdentityKey::AccessKey {
        source,
        access_key_id: id,
        secret_digest: proof.digest(),
    };
    (key, proof)
}

/// `access_key` and `access_secret` from the nodePublishSecretRef (keys case-insensitive, as
/// Alibaba's provider reads them); `None` unless both are there and non-empty.
fn node_publish_access_key(
    input: &MountInput,
) -> Result<Option<(String, SecretString)>, IdentityError> {
    let find = |wanted: &str| {
        input
            .secrets
            .by_key
            .iter()
            .find(|(key, _)| key.trim().eq_ignore_ascii_case(wanted))
            .map(|(_, value)| value.expose_secret().trim())
            .filter(|value| !value.is_empty())
    };
    let (Some(id), Some(secret)) = (find(ACCESS_KEY), find(ACCESS_SECRET)) else {
        return Ok(None);
    };
    let id_ok = id.len() <= MAX_ACCESS_KEY_LEN
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !id_ok {
        return Err(IdentityError::Invalid {
            field: ACCESS_KEY,
            reason: format!(
                "expected an AccessKey id of at most {MAX_ACCESS_KEY_LEN} letters, digits, '.', \
                 '-' or '_'"
            ),
        });
    }
    if secret.len() > MAX_ACCESS_KEY_LEN {
        return Err(IdentityError::Invalid {
            field: ACCESS_SECRET,
            reason: format!("longer than {MAX_ACCESS_KEY_LEN} bytes"),
        });
    }
    Ok(Some((id.to_owned(), SecretString::from(secret.to_owned()))))
}

/// The OIDC provider ARN as Alibaba's provider finds it: the explicit ARN, else one built from
/// the account and cluster ids.
pub fn oidc_provider_arn(
    explicit: Option<&str>,
    account_id: Option<&str>,
    cluster_id: Option<&str>,
) -> Option<String> {
    fn present(value: Option<&str>) -> Option<&str> {
        value.map(str::trim).filter(|v| !v.is_empty())
    }
    present(explicit).map(str::to_owned).or_else(|| {
        let (account, cluster) = (present(account_id)?, present(cluster_id)?);
        Some(format!(
            "acs:ram::{account}:oidc-provider/ack-rrsa-{cluster}"
        ))
    })
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::request::{NodePublishSecrets, PodInfo, ServiceAccountTokens};

    fn input(secrets: &[(&str, &str)], tokens: &[(&str, &str)]) -> MountInput {
        MountInput {
            parameters: BTreeMap::new(),
            pod: PodInfo {
                name: "web-0".into(),
                namespace: "shop".into(),
                uid: "uid".into(),
                service_account: "web".into(),
            },
            tokens: ServiceAccountTokens {
                by_audience: tokens
                    .iter()
                    .map(|(aud, token)| ((*aud).to_owned(), SecretString::from(*token)))
                    .collect(),
            },
            secrets: NodePublishSecrets {
                by_key: secrets
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), SecretString::from(*v)))
                    .collect(),
            },
            default_mode: 0o644,
        }
    }

    fn spec(pairs: &[(&str, &str)]) -> AlibabaMountSpec {
        let mut parameters = BTreeMap::from([("objects".to_owned(), "- objectName: a".to_owned())]);
        for (k, v) in pairs {
            parameters.insert((*k).to_owned(), (*v).to_owned());
        }
        AlibabaMountSpec::from_parameters(&parameters, &super::super::spec::SpecSettings::default())
            .unwrap()
    }

    fn resolver(settings: IdentitySettings) -> IdentityResolver {
        let client = AlibabaClient::new(super::super::client::ClientSettings::default()).unwrap();
        IdentityResolver::new(settings, Arc::new(client))
    }

    fn soon() -> Instant {
        Instant::now() + Duration::from_secs(5)
    }

    async fn chosen(
        resolver: &IdentityResolver,
        spec: &AlibabaMountSpec,
        input: &MountInput,
    ) -> Result<IdentityKey, IdentityError> {
        resolver
            .choose(spec, input, soon())
            .await
            .map(|(key, _)| key)
    }

    const ROLE: &str = "acs:ram::1234567890123456:role/app";
    const PROVIDER: &str = "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c1";

    #[tokio::test]
    async fn the_chain_is_tried_in_alibabas_order() {
        let token_dir = tempfile::tempdir().unwrap();
        let token_file = token_dir.path().join("token");
        std::fs::write(&token_file, "provider.jwt.token\n").unwrap();
        let full = IdentitySettings {
            role_arn: Some(RoleArn::parse(ROLE).unwrap()),
            oidc_provider_arn: Some(PROVIDER.into()),
            oidc_token_file: token_file.clone(),
            access_key_id: Some("LTAIprovider".into()),
            access_key_secret: Some(SecretString::from("provider-secret")),
            ..IdentitySettings::default()
        };
        let pod = spec(&[
            ("usePodServiceAccountToken", "true"),
            (
                "podServiceAccountRoleArn",
                "acs:ram::1234567890123456:role/pod",
            ),
        ]);
        let plain = spec(&[]);
        let node_key = [("access_key", "LTAInode"), ("access_secret", "node-secret")];
        let with_everything = input(&node_key, &[(RRSA_AUDIENCE, "pod.jwt.token")]);

        let r = resolver(full.clone());
        assert!(matches!(
            chosen(&r, &pod, &with_everything).await.unwrap(),
            IdentityKey::PodRole { role, .. } if role.ends_with("role/pod")
        ));
        assert!(matches!(
            chosen(&r, &plain, &with_everything).await.unwrap(),
            IdentityKey::ProviderRole { .. }
        ));
        let r = resolver(IdentitySettings {
            oidc_provider_arn: None,
            ..full.clone()
        });
        assert!(matches!(
            chosen(&r, &plain, &with_everything).await.unwrap(),
            IdentityKey::RamRole { .. }
        ));
        let r = resolver(IdentitySettings {
            role_arn: None,
            ..full.clone()
        });
        assert!(matches!(
            chosen(&r, &plain, &with_everything).await.unwrap(),
            IdentityKey::AccessKey { source: "nodePublishSecretRef", access_key_id, .. }
                if access_key_id == "LTAInode"
        ));
        assert!(matches!(
            chosen(&r, &plain, &input(&[], &[])).await.unwrap(),
            IdentityKey::AccessKey {
                source: "provider",
                ..
            }
        ));
        let r = resolver(IdentitySettings::default());
        assert_eq!(
            chosen(&r, &plain, &input(&[], &[])).await.unwrap(),
            IdentityKey::EcsRole
        );
        let r = resolver(IdentitySettings {
            allow_ecs_ram_role: false,
            ..IdentitySettings::default()
        });
        assert!(matches!(
            chosen(&r, &plain, &input(&[], &[])).await,
            Err(IdentityError::NoCredentials)
        ));
    }

    #[tokio::test]
    async fn a_class_asking_for_the_pods_identity_never_falls_back() {
        let r = resolver(IdentitySettings {
            oidc_provider_arn: Some(PROVIDER.into()),
            access_key_id: Some("LTAIprovider".into()),
            access_key_secret: Some(SecretString::from("provider-secret")),
            ..IdentitySettings::default()
        });
        let pod = spec(&[("usePodServiceAccountToken", "true")]);
        assert!(matches!(
            chosen(&r, &pod, &input(&[], &[(RRSA_AUDIENCE, "t")])).await,
            Err(IdentityError::PodRoleUnknown { namespace, service_account, lookup: None })
                if namespace == "shop" && service_account == "web"
        ));
        let named = spec(&[
            ("usePodServiceAccountToken", "true"),
            ("podServiceAccountRoleArn", ROLE),
        ]);
        assert!(matches!(
            chosen(&r, &named, &input(&[], &[("other-audience", "t")])).await,
            Err(IdentityError::PodTokenMissing)
        ));
        let r = resolver(IdentitySettings::default());
        assert!(matches!(
            chosen(&r, &named, &input(&[], &[(RRSA_AUDIENCE, "t")])).await,
            Err(IdentityError::OidcProviderNotConfigured)
        ));
    }

    struct Annotated;

    #[async_trait::async_trait]
    impl ServiceAccountRoles for Annotated {
        async fn role_arn(
            &self,
            namespace: &str,
            service_account: &str,
            _deadline: Instant,
        ) -> Result<Option<String>, String> {
            match (namespace, service_account) {
                ("shop", "web") => Ok(Some(ROLE.to_owned())),
                ("shop", "broken") => Ok(Some("not an arn".to_owned())),
                _ => Err("forbidden".to_owned()),
            }
        }
    }

    #[tokio::test]
    async fn the_pods_role_comes_from_its_service_account_annotation() {
        let r = resolver(IdentitySettings {
            oidc_provider_arn: Some(PROVIDER.into()),
            service_accounts: Some(Arc::new(Annotated)),
            ..IdentitySettings::default()
        });
        let pod = spec(&[("usePodServiceAccountToken", "true")]);
        let mut request = input(&[], &[(RRSA_AUDIENCE, "t")]);
        assert!(matches!(
            chosen(&r, &pod, &request).await.unwrap(),
            IdentityKey::PodRole { role, .. } if role == ROLE
        ));
        request.pod.service_account = "broken".into();
        assert!(matches!(
            chosen(&r, &pod, &request).await,
            Err(IdentityError::Invalid {
                field: ROLE_ARN_ANNOTATION,
                ..
            })
        ));
        request.pod.service_account = "other".into();
        let error = chosen(&r, &pod, &request).await.unwrap_err();
        assert!(
            error.to_string().contains("could not be read: forbidden"),
            "{error}"
        );
    }

    #[tokio::test]
    async fn access_keys_are_keyed_by_their_secrets_digest_and_never_shown() {
        let r = resolver(IdentitySettings::default());
        let plain = spec(&[]);
        let a = r
            .resolve(
                &plain,
                &input(
                    &[("ACCESS_KEY", "LTAIx"), ("Access_Secret", "SECRET-ONE")],
                    &[],
                ),
                soon(),
            )
            .await
            .unwrap();
        let b = r
            .resolve(
                &plain,
                &input(
                    &[("access_key", "LTAIx"), ("access_secret", "SECRET-TWO")],
                    &[],
                ),
                soon(),
            )
            .await
            .unwrap();
        assert_ne!(a.key(), b.key(), "another secret is another identity");
        let shown = format!("{:?} {} {:?}", a, a.key(), a.credentials());
        assert!(!shown.contains("SECRET-ONE"), "{shown}");
        assert!(!shown.contains("LTAIx"), "the id is shortened: {shown}");
        assert!(matches!(
            r.resolve(
                &plain,
                &input(&[("access_key", "bad id"), ("access_secret", "s")], &[]),
                soon()
            )
            .await,
            Err(IdentityError::Invalid {
                field: ACCESS_KEY,
                ..
            })
        ));
    }

    #[test]
    fn the_oidc_provider_arn_is_explicit_or_built_from_account_and_cluster() {
        assert_eq!(
            oidc_provider_arn(Some(PROVIDER), Some("1"), Some("c")).as_deref(),
            Some(PROVIDER)
        );
        assert_eq!(
            oidc_provider_arn(None, Some("123"), Some("c9")).as_deref(),
            Some("acs:ram::123:oidc-provider/ack-rrsa-c9")
        );
        assert_eq!(oidc_provider_arn(Some(" "), Some("123"), None), None);
    }

    #[test]
    fn debug_of_the_settings_shows_no_secret() {
        let settings = IdentitySettings {
            access_key_id: Some("LTAIsecretish".into()),
            access_key_secret: Some(SecretString::from("TOPSECRET")),
            ..IdentitySettings::default()
        };
        let shown = format!("{settings:?}");
        assert!(
            !shown.contains("TOPSECRET") && !shown.contains("LTAIsecretish"),
            "{shown}"
        );
    }

    #[test]
    fn a_pod_tokens_expiry_is_read_from_its_exp_claim() {
        let exp = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_secs()
            + 600;
        let payload =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!(r#"{{"exp":{exp}}}"#));
        let proof = Proof::OidcToken {
            role: RoleArn::parse(ROLE).unwrap(),
            provider: PROVIDER.into(),
            token: SecretString::from(format!("h.{payload}.s")),
        };
        let left = proof.expiry().unwrap() - Instant::now();
        assert!(
            left > Duration::from_secs(590) && left <= Duration::from_secs(600),
            "{left:?}"
        );
    }
}
