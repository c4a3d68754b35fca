//! Calls to Alibaba Cloud: KMS `GetSecretValue` and OOS `GetSecretParameter` signed with
//! ACS3-HMAC-SHA256, STS `AssumeRoleWithOIDC` (unsigned) and `AssumeRole` (RPC HMAC-SHA1), and
//! the ECS instance metadata service's RAM role credentials (IMDSv2 token first).
//!
//! The transport is azure-access's (reqwest with the provider's `--ca-file`, its test-only DNS
//! overrides, connect and per-attempt timeouts, no redirects; HTTPS only except the metadata
//! service, which is plain HTTP and never proxied). Every call is retried here within the
//! Mount's deadline: throttling (`Rejected.Throttling`, `Throttling.*`, 429) after the
//! `x-acs-retry-after` it carries (milliseconds) or a throttle backoff, outages (5xx, no answer)
//! after a capped, jittered backoff; when the wait would pass the deadline the call fails at
//! once saying when to retry. Authoritative answers (not found, no permission, refused
//! credentials) are never retried.
//!
//! Never logs or shows a value, a token, an AccessKey secret or a response body: errors carry
//! the HTTP status, the service's error code and request id (both reduced to the characters
//! they are made of) and the object's names.

use std::collections::BTreeMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use azure_access::client::{InsecureOverrides, Route, TransportOptions, http_client_with};
use azure_access::errors::SdkError;
use azure_access::retry::{RetryPolicy, cap_retry_after};
use azure_core::http::headers::HeaderName;
use azure_core::http::{HttpClient, Method, Request, Url};
use base64::Engine as _;
use futures::StreamExt as _;
use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::signing::{acs3_authorization, canonical_query, content_sha256, rpc_signature};
use super::spec::{ObjectType, RoleArn, VersionSelector};

/// KMS's API version.
pub const KMS_VERSION: &str = "2016-01-20";
/// OOS's API version.
pub const OOS_VERSION: &str = "2019-06-01";
/// STS's API version.
pub const STS_VERSION: &str = "2015-04-01";
/// Where the ECS instance metadata service is.
pub const ECS_METADATA_ORIGIN: &str = "http://100.100.100.200";
/// The largest answer read from a service, in bytes (a secret is at most 64 KiB).
const MAX_ANSWER_BYTES: usize = 1024 * 1024;
/// The longest error code or request id kept from an answer.
const MAX_CODE_LEN: usize = 100;

/// How calls are made.
#[derive(Debug, Clone)]
pub struct ClientSettings {
    /// The HTTPS transport (CA file, connect and per-attempt timeouts).
    pub transport: TransportOptions,
    /// FOR TESTS AND EMULATORS ONLY: DNS overrides (every `*.aliyuncs.com` to an emulator).
    pub insecure: InsecureOverrides,
    /// The STS endpoint host (`sts.aliyuncs.com`).
    pub sts_endpoint: String,
    /// The ECS metadata service's base URL ([`ECS_METADATA_ORIGIN`]; another only for tests and
    /// emulators).
    pub ecs_metadata_endpoint: String,
    /// The first backoff after a transient failure; doubles up to `max_backoff` (jittered).
    pub initial_backoff: Duration,
    /// The longest backoff after a transient failure other than throttling.
    pub max_backoff: Duration,
    /// The first wait after throttling without `x-acs-retry-after`; doubles up to
    /// `max_throttle_backoff`.
    pub throttle_backoff: Duration,
    /// The longest wait after throttling without `x-acs-retry-after`.
    pub max_throttle_backoff: Duration,
}

impl Default for ClientSettings {
    fn default() -> Self {
        Self {
            transport: TransportOptions::default(),
            insecure: InsecureOverrides::default(),
            sts_endpoint: "sts.aliyuncs.com".to_owned(),
            ecs_metadata_endpoint: ECS_METADATA_ORIGIN.to_owned(),
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            throttle_backoff: Duration::from_secs(1),
            max_throttle_backoff: Duration::from_secs(16),
        }
    }
}

/// An AccessKey, with its security token when it is an STS credential.
pub struct Credentials {
    /// The AccessKey id (not secret).
    pub access_key_id: String,
    /// The AccessKey secret.
    pub access_key_secret: SecretString,
    /// The STS security token, for temporary credentials.
    pub security_token: Option<SecretString>,
    /// When temporary credentials expire.
    pub expiration: Option<SystemTime>,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("access_key_id", &shortened(&self.access_key_id))
            .field(
                "security_token",
                &self.security_token.as_ref().map(|_| "[redacted]"),
            )
            .field("expiration", &self.expiration)
            .finish_non_exhaustive()
    }
}

/// The object a read is about, for errors and logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// The endpoint host.
    pub endpoint: String,
    /// KMS secret or OOS parameter.
    pub kind: ObjectType,
    /// The name or ARN, as the class gives it.
    pub name: String,
    /// Which version.
    pub version: VersionSelector,
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.kind {
            ObjectType::Kms => "KMS secret",
            ObjectType::Oos => "OOS secret parameter",
        };
        write!(f, "{what} {}", self.name)?;
        match &self.version {
            VersionSelector::Latest => {}
            VersionSelector::Kms { id, stage } => {
                if let Some(id) = id {
                    write!(f, " version {id}")?;
                }
                if let Some(stage) = stage {
                    write!(f, " stage {stage}")?;
                }
            }
            VersionSelector::Oos(version) => write!(f, " version {version}")?,
        }
        write!(f, " at {}", self.endpoint)
    }
}

/// What Alibaba Cloud answered when it refused a call: the HTTP status, the error code, the
/// request id (for a support ticket) and how long to wait, if it said. Never the message text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceAnswer {
    /// The HTTP status.
    pub status: u16,
    /// `Code` (e.g. `Forbidden.ResourceNotFound`), or empty.
    pub code: String,
    /// `RequestId`, or empty.
    pub request_id: String,
    /// `x-acs-retry-after` (milliseconds on the wire).
    pub retry_after: Option<Duration>,
}

/// What kind of refusal an answer is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// The object (or version, or role) does not exist.
    NotFound,
    /// The identity may not do it.
    Forbidden,
    /// The credentials themselves were refused (unknown, disabled or expired AccessKey, bad
    /// signature or token).
    CredentialRefused,
    /// Too many requests.
    Throttled,
    /// The service failed (5xx).
    Unavailable,
    /// Anything else the request got wrong (400).
    Rejected,
}

impl ServiceAnswer {
    /// The kind of refusal, from the code first and the status second.
    pub fn verdict(&self) -> Verdict {
        let code = self.code.as_str();
        let starts = |prefix: &str| code.starts_with(prefix);
        if starts("InvalidAccessKeyId")
            || starts("InvalidSecurityToken")
            || starts("MissingSecurityToken")
            || code == "SignatureDoesNotMatch"
            || code == "IncompleteSignature"
        {
            Verdict::CredentialRefused
        } else if starts("Throttling") || code == "Rejected.Throttling" || self.status == 429 {
            Verdict::Throttled
        } else if code == "ServiceUnavailableTemporary"
            || code == "InternalFailure"
            || code == "InternalError"
            || code == "SignatureNonceUsed"
            || self.status >= 500
        {
            Verdict::Unavailable
        } else if code == "Forbidden.ResourceNotFound"
            || code == "Forbidden.KeyNotFound"
            || starts("EntityNotExist")
            || (self.status == 404 && !starts("InvalidApi"))
        {
            Verdict::NotFound
        } else if starts("Forbidden") || code == "NoPermission" || self.status == 403 {
            Verdict::Forbidden
        } else if self.status == 401 {
            Verdict::CredentialRefused
        } else {
            Verdict::Rejected
        }
    }
}

impl fmt::Display for ServiceAnswer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {}", self.status)?;
        if !self.code.is_empty() {
            write!(f, " {}", self.code)?;
        }
        if !self.request_id.is_empty() {
            write!(f, ", request id {}", self.request_id)?;
        }
        Ok(())
    }
}

/// One call failed, before it is known what it was for.
#[derive(Debug, Clone)]
pub enum CallError {
    /// The service refused.
    Refused(ServiceAnswer),
    /// No answer: the connection failed, was dropped or timed out.
    Unreachable {
        /// The transport's error, for logs.
        source: Arc<SdkError>,
    },
    /// An answer that is not what the API sends.
    Malformed {
        /// The HTTP status.
        status: u16,
        /// What is wrong, a fixed text.
        reason: &'static str,
    },
    /// The deadline passed before an answer (or the next retry would pass it).
    DeadlineExceeded {
        /// Attempts started.
        attempts: u32,
    },
}

impl CallError {
    /// Whether trying again may help (throttling, outages, no answer).
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Refused(answer) => {
                matches!(answer.verdict(), Verdict::Throttled | Verdict::Unavailable)
            }
            Self::Unreachable { .. } | Self::DeadlineExceeded { .. } => true,
            Self::Malformed { .. } => false,
        }
    }
}

impl fmt::Display for CallError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Refused(answer) => write!(f, "refused ({answer})"),
            Self::Unreachable { .. } => f.write_str("unreachable (no answer)"),
            Self::Malformed { status, reason } => {
                write!(f, "an unusable answer (HTTP {status}): {reason}")
            }
            Self::DeadlineExceeded { attempts } => write!(
                f,
                "no answer before the mount's deadline ({attempts} attempt{})",
                if *attempts == 1 { "" } else { "s" }
            ),
        }
    }
}

impl std::error::Error for CallError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Unreachable { source } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// A KMS or OOS read failed: what was read, and how it failed. `Display` names the object,
/// the status, the service's error code and request id; never a value, a token or a response
/// body.
#[derive(Debug, Clone)]
pub struct AlibabaError {
    /// What was read.
    pub object: ObjectRef,
    /// How it failed.
    pub failure: ReadFailure,
}

/// How a KMS or OOS read failed.
#[derive(Debug, Clone)]
pub enum ReadFailure {
    /// No such secret, parameter or version (`Forbidden.ResourceNotFound`,
    /// `EntityNotExists.Parameter`).
    NotFound(ServiceAnswer),
    /// The identity may not read it (`Forbidden.NoPermission`, `Forbidden.RAM`).
    Forbidden(ServiceAnswer),
    /// The identity's credentials were refused (`InvalidAccessKeyId.*`,
    /// `InvalidSecurityToken.*`, `SignatureDoesNotMatch`).
    Unauthorized(ServiceAnswer),
    /// Throttled, and waiting as asked would pass the deadline (or it persisted until then).
    Throttled {
        /// When to retry: `x-acs-retry-after`, or the backoff the provider would have waited.
        retry_after: Option<Duration>,
        /// The answer, when there was one.
        answer: Option<ServiceAnswer>,
    },
    /// 5xx or no answer, until the deadline.
    Unavailable {
        /// The answer, when there was one.
        answer: Option<ServiceAnswer>,
        /// The transport's error, for logs.
        source: Option<Arc<SdkError>>,
    },
    /// The deadline passed while waiting (attempts started; 0 while waiting for the endpoint
    /// or a read in flight).
    DeadlineExceeded(u32),
    /// Another refusal (400): the request was wrong (e.g. a version id and stage that match
    /// no version).
    Rejected(ServiceAnswer),
    /// The answer is not what the API sends, or a binary secret is not base64 (a fixed text).
    Malformed(&'static str),
}

impl AlibabaError {
    /// The gRPC code a Mount failing this way is answered with (the table is
    /// [`crate::errors`]'s).
    pub fn code(&self) -> tonic::Code {
        crate::errors::alibaba_code(&self.failure)
    }

    /// A fixed name for metrics.
    pub fn metric_label(&self) -> &'static str {
        use ReadFailure as F;
        match &self.failure {
            F::NotFound(_) => "not_found",
            F::Forbidden(_) => "forbidden",
            F::Unauthorized(_) => "unauthorized",
            F::Throttled { .. } => "throttled",
            F::Unavailable { .. } => "unavailable",
            F::DeadlineExceeded(_) => "deadline_exceeded",
            F::Rejected(_) => "rejected",
            F::Malformed(_) => "malformed",
        }
    }

    /// When to retry, for a throttled read.
    pub fn retry_after(&self) -> Option<Duration> {
        match &self.failure {
            ReadFailure::Throttled { retry_after, .. } => *retry_after,
            _ => None,
        }
    }

    /// Whether the service answered authoritatively about the object for this identity.
    pub fn is_authoritative(&self) -> bool {
        matches!(
            self.failure,
            ReadFailure::NotFound(_) | ReadFailure::Forbidden(_)
        )
    }

    /// Whether a later read may succeed: throttling, an outage, the deadline. The client
    /// retries these until the next retry would pass its deadline, so such an answer says
    /// that the read ran out of its time.
    pub fn is_transient(&self) -> bool {
        matches!(
            self.failure,
            ReadFailure::Throttled { .. }
                | ReadFailure::Unavailable { .. }
                | ReadFailure::DeadlineExceeded(_)
        )
    }

    /// The error of a read that failed with `error`; `retry_after` is the wait the provider
    /// would have made, reported for throttling without `x-acs-retry-after`.
    fn from_call(object: &ObjectRef, error: CallError, retry_after: Option<Duration>) -> Self {
        let failure = match error {
            CallError::Refused(answer) => match answer.verdict() {
                Verdict::NotFound => ReadFailure::NotFound(answer),
                Verdict::Forbidden => ReadFailure::Forbidden(answer),
                Verdict::CredentialRefused => ReadFailure::Unauthorized(answer),
                Verdict::Throttled => ReadFailure::Throttled {
                    retry_after: answer.retry_after.or(retry_after),
                    answer: Some(answer),
                },
                Verdict::Unavailable => ReadFailure::Unavailable {
                    answer: Some(answer),
                    source: None,
                },
                Verdict::Rejected => ReadFailure::Rejected(answer),
            },
            CallError::Unreachable { source } => ReadFailure::Unavailable {
                answer: None,
                source: Some(source),
            },
            CallError::Malformed { reason, .. } => ReadFailure::Malformed(reason),
            CallError::DeadlineExceeded { attempts } => ReadFailure::DeadlineExceeded(attempts),
        };
        Self {
            object: object.clone(),
            failure,
        }
    }
}

impl fmt::Display for AlibabaError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: ", self.object)?;
        let permission = match self.object.kind {
            ObjectType::Kms => "kms:GetSecretValue",
            ObjectType::Oos => "oos:GetSecretParameter",
        };
        match &self.failure {
            ReadFailure::NotFound(answer) => write!(f, "not found ({answer})"),
            ReadFailure::Forbidden(answer) => write!(
                f,
                "the identity is not allowed to read it ({answer}); grant it {permission}"
            ),
            ReadFailure::Unauthorized(answer) => write!(
                f,
                "Alibaba Cloud did not accept the identity's credentials ({answer})"
            ),
            ReadFailure::Throttled {
                retry_after,
                answer,
            } => {
                f.write_str("Alibaba Cloud is throttling requests")?;
                if let Some(answer) = answer {
                    write!(f, " ({answer})")?;
                }
                match retry_after {
                    Some(wait) => write!(f, "; retry after {} s", seconds_up(*wait)),
                    None => f.write_str("; retry later"),
                }
            }
            ReadFailure::Unavailable {
                answer: Some(answer),
                ..
            } => write!(f, "Alibaba Cloud is unavailable ({answer})"),
            ReadFailure::Unavailable { answer: None, .. } => {
                f.write_str("the endpoint is unreachable (no answer)")
            }
            ReadFailure::DeadlineExceeded(0) => f.write_str(
                "no answer before the mount's deadline (waiting for the endpoint or for a read \
                 in flight)",
            ),
            ReadFailure::DeadlineExceeded(attempts) => write!(
                f,
                "no answer before the mount's deadline ({attempts} attempt{})",
                if *attempts == 1 { "" } else { "s" }
            ),
            ReadFailure::Rejected(answer) => {
                write!(f, "Alibaba Cloud rejected the request ({answer})")
            }
            ReadFailure::Malformed(reason) => write!(f, "the answer is unusable: {reason}"),
        }
    }
}

impl std::error::Error for AlibabaError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match &self.failure {
            ReadFailure::Unavailable {
                source: Some(source),
                ..
            } => Some(source.as_ref()),
            _ => None,
        }
    }
}

/// An AccessKey id as shown: its first 4 characters.
pub(crate) fn shortened(id: &str) -> String {
    let head: String = id.chars().take(4).collect();
    format!("{head}…")
}

/// Whole seconds, rounded up, at least 1.
pub(crate) fn seconds_up(wait: Duration) -> u64 {
    (wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1)
}

/// One object version, read: its value (a binary secret decoded) and its version (KMS
/// `VersionId`, OOS `ParameterVersion`).
pub struct Fetched {
    /// The value.
    pub value: Zeroizing<Vec<u8>>,
    /// The version.
    pub version: String,
}

impl fmt::Debug for Fetched {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Fetched")
            .field("value", &"[redacted]")
            .field("version", &self.version)
            .finish()
    }
}

/// A successful answer's body.
type Body = Zeroizing<Vec<u8>>;

/// The HTTPS (and metadata) clients and how calls are retried.
pub struct AlibabaClient {
    settings: ClientSettings,
    remote: Arc<dyn HttpClient>,
    metadata: Arc<dyn HttpClient>,
}

impl fmt::Debug for AlibabaClient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AlibabaClient")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The time format of `x-acs-date`, `Timestamp` and STS `Expiration`.
const TIME_FORMAT: &[time::format_description::BorrowedFormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]Z");

/// `now` as `yyyy-MM-ddTHH:mm:ssZ` (UTC).
fn timestamp(now: SystemTime) -> String {
    time::OffsetDateTime::from(now)
        .format(TIME_FORMAT)
        .unwrap_or_default()
}

/// An STS `Expiration` (`2026-01-02T03:04:05Z`), as a time.
fn parse_expiration(text: &str) -> Option<SystemTime> {
    time::PrimitiveDateTime::parse(text, TIME_FORMAT)
        .ok()
        .map(|at| SystemTime::from(at.assume_utc()))
}

/// 32 random hex digits.
fn nonce() -> String {
    let mut bytes = [0u8; 16];
    if openssl::rand::rand_bytes(&mut bytes).is_err() {
        // Never: the OS RNG failing. A nonce unique within this process still works.
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        bytes = now.as_nanos().to_le_bytes();
    }
    hex::encode(bytes)
}

/// Keeps only the characters codes and request ids are made of, at most [`MAX_CODE_LEN`].
fn sanitized(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
        .take(MAX_CODE_LEN)
        .collect()
}

/// An error answer's fields the provider reads.
#[derive(Deserialize)]
struct ErrorBody {
    #[serde(rename = "Code", alias = "code", default)]
    code: Option<String>,
    #[serde(rename = "RequestId", alias = "requestId", default)]
    request_id: Option<String>,
}

/// What one HTTP attempt returned.
struct Answer {
    status: u16,
    retry_after: Option<Duration>,
    body: Body,
}

impl AlibabaClient {
    /// A client with `settings`, building its HTTP clients now. No remote call.
    pub fn new(settings: ClientSettings) -> Result<Self, azure_access::Error> {
        let remote = http_client_with(&settings.transport, Route::Remote, &settings.insecure)?;
        let metadata = http_client_with(
            &settings.transport,
            Route::ManagedIdentity,
            &InsecureOverrides::default(),
        )?;
        Url::parse(&settings.ecs_metadata_endpoint)
            .ok()
            .filter(|url| url.scheme() == "http" && url.host_str().is_some())
            .ok_or_else(|| azure_access::Error::Misconfigured {
                reason: format!(
                    "the ECS metadata endpoint {:?} is not an http base URL such as {ECS_METADATA_ORIGIN}",
                    settings.ecs_metadata_endpoint
                ),
            })?;
        Ok(Self {
            settings,
            remote,
            metadata,
        })
    }

    /// The settings in effect.
    pub fn settings(&self) -> &ClientSettings {
        &self.settings
    }

    /// Reads `object` with `credentials`, retrying transient failures until `deadline`: KMS
    /// `GetSecretValue` (`VersionId` / `VersionStage` as the object names them; a `binary`
    /// secret's data decoded from strict standard base64), or OOS `GetSecretParameter` with
    /// `WithDecryption=true` (and `ParameterVersion` for a pinned version).
    pub async fn read(
        &self,
        credentials: &Credentials,
        object: &ObjectRef,
        deadline: Instant,
    ) -> Result<Fetched, AlibabaError> {
        let mut parameters = BTreeMap::new();
        let (action, version) = match object.kind {
            ObjectType::Kms => {
                parameters.insert("SecretName".to_owned(), object.name.clone());
                if let VersionSelector::Kms { id, stage } = &object.version {
                    if let Some(id) = id {
                        parameters.insert("VersionId".to_owned(), id.clone());
                    }
                    if let Some(stage) = stage {
                        parameters.insert("VersionStage".to_owned(), stage.clone());
                    }
                }
                ("GetSecretValue", KMS_VERSION)
            }
            ObjectType::Oos => {
                parameters.insert("Name".to_owned(), object.name.clone());
                parameters.insert("WithDecryption".to_owned(), "true".to_owned());
                if let VersionSelector::Oos(version) = object.version {
                    parameters.insert("ParameterVersion".to_owned(), version.to_string());
                }
                ("GetSecretParameter", OOS_VERSION)
            }
        };
        let mut waited = None;
        let body = self
            .with_retries(deadline, &mut waited, || {
                self.send(self.acs3(&object.endpoint, action, version, &parameters, credentials))
            })
            .await
            .map_err(|error| AlibabaError::from_call(object, error, waited))?;
        let malformed = |reason| AlibabaError {
            object: object.clone(),
            failure: ReadFailure::Malformed(reason),
        };
        match object.kind {
            ObjectType::Kms => parse_secret_value(&body).map_err(malformed),
            ObjectType::Oos => parse_secret_parameter(&body).map_err(malformed),
        }
    }

    /// STS `AssumeRoleWithOIDC` (unsigned): `role`'s credentials for the holder of `token`, an
    /// OIDC token `provider` issued.
    pub async fn assume_role_with_oidc(
        &self,
        role: &RoleArn,
        provider: &str,
        token: &SecretString,
        session: &str,
        duration: Duration,
        deadline: Instant,
    ) -> Result<Credentials, CallError> {
        let mut form = self.sts_parameters("AssumeRoleWithOIDC", role, session, duration);
        form.insert("OIDCProviderArn".to_owned(), provider.to_owned());
        let mut waited = None;
        let body = self
            .with_retries(deadline, &mut waited, || {
                // The token goes into the form body only (never a URL that a log could show).
                let body = Zeroizing::new(format!(
                    "{}&OIDCToken={}",
                    canonical_query(&form),
                    super::signing::percent_encode(token.expose_secret())
                ));
                self.send(self.sts_request(body))
            })
            .await?;
        parse_sts_credentials(&body)
    }

    /// STS `AssumeRole`, signed with `base` (RPC HMAC-SHA1): `role`'s credentials.
    pub async fn assume_role(
        &self,
        base: &Credentials,
        role: &RoleArn,
        session: &str,
        duration: Duration,
        deadline: Instant,
    ) -> Result<Credentials, CallError> {
        let form = self.sts_parameters("AssumeRole", role, session, duration);
        let mut waited = None;
        let body = self
            .with_retries(deadline, &mut waited, || {
                let mut form = form.clone();
                form.insert("AccessKeyId".to_owned(), base.access_key_id.clone());
                form.insert("SignatureMethod".to_owned(), "HMAC-SHA1".to_owned());
                form.insert("SignatureVersion".to_owned(), "1.0".to_owned());
                form.insert("SignatureNonce".to_owned(), nonce());
                if let Some(token) = &base.security_token {
                    form.insert("SecurityToken".to_owned(), token.expose_secret().to_owned());
                }
                let signature = rpc_signature(
                    base.access_key_secret.expose_secret().as_bytes(),
                    "POST",
                    &form,
                );
                form.insert("Signature".to_owned(), signature);
                let body = Zeroizing::new(canonical_query(&form));
                self.send(self.sts_request(body))
            })
            .await?;
        parse_sts_credentials(&body)
    }

    /// The ECS instance's RAM role and its credentials, from the metadata service: an IMDSv2
    /// token first (plain IMDSv1 when the service gives none), then the role's name, then its
    /// credentials.
    pub async fn ecs_role_credentials(
        &self,
        deadline: Instant,
    ) -> Result<(String, Credentials), CallError> {
        let base = self.settings.ecs_metadata_endpoint.trim_end_matches('/');
        let mut waited = None;
        let token = self
            .with_retries(deadline, &mut waited, || async {
                let mut request =
                    Request::new(metadata_url(base, "/latest/api/token")?, Method::Put);
                request.insert_header("x-aliyun-ecs-metadata-token-ttl-seconds", "21600");
                self.execute(&self.metadata, &request).await
            })
            .await
            .ok()
            .and_then(|body| String::from_utf8(body.to_vec()).ok())
            .map(|token| SecretString::from(token.trim().to_owned()));
        let get = |path: String| {
            let token = token.as_ref();
            async move {
                let mut request = Request::new(metadata_url(base, &path)?, Method::Get);
                if let Some(token) = token {
                    request.insert_header(
                        "x-aliyun-ecs-metadata-token",
                        token.expose_secret().to_owned(),
                    );
                }
                self.execute(&self.metadata, &request).await
            }
        };
        const ROLES: &str = "/latest/meta-data/ram/security-credentials/";
        let names = self
            .with_retries(deadline, &mut waited, || get(ROLES.to_owned()))
            .await?;
        let role = std::str::from_utf8(&names)
            .ok()
            .and_then(|names| names.lines().map(str::trim).find(|name| !name.is_empty()))
            .filter(|name| {
                name.len() <= 64
                    && name
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'))
            })
            .ok_or(CallError::Malformed {
                status: 200,
                reason: "the metadata service names no usable RAM role",
            })?
            .to_owned();
        let body = self
            .with_retries(deadline, &mut waited, || get(format!("{ROLES}{role}")))
            .await?;
        Ok((role, parse_sts_credentials(&body)?))
    }

    /// The common parameters of an STS call.
    fn sts_parameters(
        &self,
        action: &str,
        role: &RoleArn,
        session: &str,
        duration: Duration,
    ) -> BTreeMap<String, String> {
        BTreeMap::from([
            ("Action".to_owned(), action.to_owned()),
            ("Format".to_owned(), "JSON".to_owned()),
            ("Version".to_owned(), STS_VERSION.to_owned()),
            ("Timestamp".to_owned(), timestamp(SystemTime::now())),
            ("RoleArn".to_owned(), role.as_str().to_owned()),
            ("RoleSessionName".to_owned(), session.to_owned()),
            ("DurationSeconds".to_owned(), duration.as_secs().to_string()),
        ])
    }

    /// An STS call: `POST https://<sts>/` with a form body.
    fn sts_request(&self, body: Zeroizing<String>) -> Result<Request, CallError> {
        let mut request = Request::new(https_url(&self.settings.sts_endpoint, "")?, Method::Post);
        request.insert_header("content-type", "application/x-www-form-urlencoded");
        request.set_body(body.as_bytes().to_vec());
        Ok(request)
    }

    /// An ACS3-HMAC-SHA256 call to `endpoint`: `POST /` with the parameters in the query, an
    /// empty body, and fresh date, nonce and signature.
    fn acs3(
        &self,
        endpoint: &str,
        action: &str,
        version: &str,
        parameters: &BTreeMap<String, String>,
        credentials: &Credentials,
    ) -> Result<Request, CallError> {
        let mut headers = BTreeMap::from([
            ("host".to_owned(), endpoint.to_owned()),
            ("x-acs-action".to_owned(), action.to_owned()),
            ("x-acs-version".to_owned(), version.to_owned()),
            ("x-acs-date".to_owned(), timestamp(SystemTime::now())),
            ("x-acs-signature-nonce".to_owned(), nonce()),
            ("x-acs-content-sha256".to_owned(), content_sha256(b"")),
        ]);
        if let Some(token) = &credentials.security_token {
            headers.insert(
                "x-acs-security-token".to_owned(),
                token.expose_secret().to_owned(),
            );
        }
        let authorization = acs3_authorization(
            &credentials.access_key_id,
            credentials.access_key_secret.expose_secret().as_bytes(),
            "POST",
            parameters,
            &headers,
            b"",
        );
        let mut request = Request::new(
            https_url(endpoint, &canonical_query(parameters))?,
            Method::Post,
        );
        // `host` is the URL's, as reqwest sends it; the rest are sent as signed.
        for (name, value) in headers.into_iter().filter(|(name, _)| name != "host") {
            request.insert_header(HeaderName::from(name), value);
        }
        request.insert_header("authorization", authorization);
        request.insert_header("accept", "application/json");
        Ok(request)
    }

    /// Sends a built request on the remote client.
    async fn send(&self, request: Result<Request, CallError>) -> Result<Body, CallError> {
        self.execute(&self.remote, &request?).await
    }

    /// One attempt: the answer's body when it is a success, else the refusal.
    async fn execute(
        &self,
        client: &Arc<dyn HttpClient>,
        request: &Request,
    ) -> Result<Body, CallError> {
        let answer = self.attempt(client, request).await?;
        if (200..300).contains(&answer.status) {
            return Ok(answer.body);
        }
        let parsed: Option<ErrorBody> = serde_json::from_slice(&answer.body).ok();
        let (code, request_id) = parsed.map_or_else(Default::default, |body| {
            (
                body.code.as_deref().map(sanitized).unwrap_or_default(),
                body.request_id
                    .as_deref()
                    .map(sanitized)
                    .unwrap_or_default(),
            )
        });
        Err(CallError::Refused(ServiceAnswer {
            status: answer.status,
            code,
            request_id,
            retry_after: answer.retry_after,
        }))
    }

    async fn attempt(
        &self,
        client: &Arc<dyn HttpClient>,
        request: &Request,
    ) -> Result<Answer, CallError> {
        let unreachable = |error: azure_core::Error| CallError::Unreachable {
            source: Arc::new(SdkError(error)),
        };
        let response = client.execute_request(request).await.map_err(unreachable)?;
        let status = u16::from(response.status());
        let retry_after = response
            .headers()
            .get_optional_str(&HeaderName::from_static("x-acs-retry-after"))
            .and_then(|text| text.trim().parse::<u64>().ok())
            .filter(|millis| *millis > 0)
            .map(|millis| cap_retry_after(Duration::from_millis(millis)));
        let mut stream = response.into_body();
        let mut body = Zeroizing::new(Vec::new());
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(unreachable)?;
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err(CallError::Malformed {
                    status,
                    reason: "the answer is larger than 1 MiB",
                });
            }
            body.extend_from_slice(&chunk);
        }
        Ok(Answer {
            status,
            retry_after,
            body,
        })
    }

    /// Runs `attempt` until it succeeds, fails for good, or the next wait would pass
    /// `deadline`; `waited` is set to the wait the provider would have made next.
    async fn with_retries<T, F, Fut>(
        &self,
        deadline: Instant,
        waited: &mut Option<Duration>,
        mut attempt: F,
    ) -> Result<T, CallError>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = Result<T, CallError>>,
    {
        let policy = RetryPolicy {
            deadline: Duration::ZERO,
            initial_backoff: self.settings.initial_backoff,
            max_backoff: self.settings.max_backoff,
        };
        let throttle = RetryPolicy {
            deadline: Duration::ZERO,
            initial_backoff: self.settings.throttle_backoff,
            max_backoff: self.settings.max_throttle_backoff,
        };
        let mut attempts = 0u32;
        let mut throttled = 0u32;
        loop {
            attempts += 1;
            let error = match tokio::time::timeout_at(deadline, attempt()).await {
                Ok(Ok(value)) => return Ok(value),
                Ok(Err(error)) => error,
                Err(_elapsed) => return Err(CallError::DeadlineExceeded { attempts }),
            };
            if !error.is_transient() {
                return Err(error);
            }
            let wait = match &error {
                CallError::Refused(answer) if answer.verdict() == Verdict::Throttled => {
                    throttled += 1;
                    answer.retry_after.unwrap_or_else(|| {
                        throttle
                            .backoff(throttled - 1)
                            .max(policy.backoff(attempts - 1))
                    })
                }
                _ => policy.backoff(attempts - 1),
            };
            *waited = Some(wait);
            if Instant::now()
                .checked_add(wait)
                .is_none_or(|retry_at| retry_at >= deadline)
            {
                tracing::debug!(attempts, error = %error, "giving up: the next retry would pass the deadline");
                return Err(error);
            }
            tracing::debug!(attempts, wait_ms = wait.as_millis() as u64, error = %error, "retrying a transient failure");
            tokio::time::sleep(wait).await;
        }
    }
}

/// `https://<host>/?<query>`.
fn https_url(host: &str, query: &str) -> Result<Url, CallError> {
    let text = if query.is_empty() {
        format!("https://{host}/")
    } else {
        format!("https://{host}/?{query}")
    };
    Url::parse(&text).map_err(|_| CallError::Malformed {
        status: 0,
        reason: "the endpoint does not make a URL",
    })
}

/// `<metadata base><path>`.
fn metadata_url(base: &str, path: &str) -> Result<Url, CallError> {
    Url::parse(&format!("{base}{path}")).map_err(|_| CallError::Malformed {
        status: 0,
        reason: "the metadata endpoint does not make a URL",
    })
}

/// The fields of `GetSecretValue`'s answer the provider reads.
#[derive(Deserialize)]
struct SecretValue {
    #[serde(rename = "SecretData")]
    data: Option<String>,
    #[serde(rename = "SecretDataType")]
    data_type: Option<String>,
    #[serde(rename = "VersionId")]
    version_id: Option<String>,
}

/// A `GetSecretValue` answer: the value (a `binary` secret decoded from strict standard
/// base64) and its `VersionId`.
fn parse_secret_value(body: &[u8]) -> Result<Fetched, &'static str> {
    let answer: SecretValue =
        serde_json::from_slice(body).map_err(|_| "not the JSON GetSecretValue answers")?;
    let data = Zeroizing::new(answer.data.ok_or("the answer has no SecretData")?);
    let version = answer.version_id.ok_or("the answer has no VersionId")?;
    let value = match answer.data_type.as_deref() {
        None | Some("text") => Zeroizing::new(data.as_bytes().to_vec()),
        Some("binary") => Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(data.as_bytes())
                .map_err(|_| "SecretDataType is binary but SecretData is not standard base64")?,
        ),
        Some(_) => return Err("SecretDataType is neither text nor binary"),
    };
    Ok(Fetched { value, version })
}

/// The fields of `GetSecretParameter`'s answer the provider reads.
#[derive(Deserialize)]
struct SecretParameter {
    #[serde(rename = "Parameter")]
    parameter: Option<ParameterFields>,
}

#[derive(Deserialize)]
struct ParameterFields {
    #[serde(rename = "Value")]
    value: Option<String>,
    #[serde(rename = "ParameterVersion")]
    version: Option<serde_json::Value>,
}

/// A `GetSecretParameter` answer: the value and its `ParameterVersion`.
fn parse_secret_parameter(body: &[u8]) -> Result<Fetched, &'static str> {
    let answer: SecretParameter =
        serde_json::from_slice(body).map_err(|_| "not the JSON GetSecretParameter answers")?;
    let parameter = answer.parameter.ok_or("the answer has no Parameter")?;
    let value = Zeroizing::new(
        parameter
            .value
            .ok_or("the parameter has no Value (was it decrypted?)")?
            .into_bytes(),
    );
    let version = match parameter.version {
        Some(serde_json::Value::Number(number)) => number.to_string(),
        Some(serde_json::Value::String(text)) => sanitized(&text),
        _ => return Err("the parameter has no ParameterVersion"),
    };
    Ok(Fetched { value, version })
}

/// The `Credentials` of an STS (or metadata service) answer.
#[derive(Deserialize)]
struct StsAnswer {
    #[serde(rename = "Credentials")]
    credentials: Option<StsCredentials>,
}

#[derive(Deserialize)]
struct StsCredentials {
    #[serde(rename = "AccessKeyId")]
    access_key_id: String,
    #[serde(rename = "AccessKeySecret")]
    access_key_secret: String,
    #[serde(rename = "SecurityToken")]
    security_token: String,
    #[serde(rename = "Expiration")]
    expiration: String,
}

/// Temporary credentials from an STS answer (`{"Credentials": {...}}`) or the metadata
/// service's (the same fields at the top level).
fn parse_sts_credentials(body: &[u8]) -> Result<Credentials, CallError> {
    let malformed = |reason| CallError::Malformed {
        status: 200,
        reason,
    };
    let fields: StsCredentials = match serde_json::from_slice::<StsAnswer>(body) {
        Ok(StsAnswer {
            credentials: Some(credentials),
        }) => credentials,
        _ => serde_json::from_slice(body)
            .map_err(|_| malformed("not the JSON STS answers with Credentials"))?,
    };
    let StsCredentials {
        access_key_id,
        access_key_secret,
        security_token,
        expiration,
    } = fields;
    let expiration = parse_expiration(&expiration)
        .ok_or_else(|| malformed("Expiration is not a time like 2026-01-02T03:04:05Z"))?;
    Ok(Credentials {
        access_key_id: sanitized(&access_key_id),
        access_key_secret: SecretString::from(access_key_secret),
        security_token: Some(SecretString::from(security_token)),
        expiration: Some(expiration),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u16, code: &str) -> ServiceAnswer {
        ServiceAnswer {
            status,
            code: code.to_owned(),
            request_id: "req-1".to_owned(),
            retry_after: None,
        }
    }

    #[test]
    fn every_code_the_services_send_has_its_verdict() {
        let table = [
            (404, "Forbidden.ResourceNotFound", Verdict::NotFound),
            (404, "EntityNotExists.Parameter", Verdict::NotFound),
            (404, "EntityNotExist.Role", Verdict::NotFound),
            (403, "Forbidden.NoPermission", Verdict::Forbidden),
            (403, "Forbidden.RAM", Verdict::Forbidden),
            (403, "NoPermission", Verdict::Forbidden),
            (
                404,
                "InvalidAccessKeyId.NotFound",
                Verdict::CredentialRefused,
            ),
            (
                400,
                "InvalidAccessKeyId.Inactive",
                Verdict::CredentialRefused,
            ),
            (
                400,
                "InvalidSecurityToken.Expired",
                Verdict::CredentialRefused,
            ),
            (400, "MissingSecurityToken", Verdict::CredentialRefused),
            (400, "SignatureDoesNotMatch", Verdict::CredentialRefused),
            (
                401,
                "AuthenticationFail.OIDCToken.Expired",
                Verdict::CredentialRefused,
            ),
            (429, "Rejected.Throttling", Verdict::Throttled),
            (400, "Throttling.User", Verdict::Throttled),
            (500, "InternalFailure", Verdict::Unavailable),
            (503, "ServiceUnavailableTemporary", Verdict::Unavailable),
            (400, "SignatureNonceUsed", Verdict::Unavailable),
            (404, "InvalidApi.NotFound", Verdict::Rejected),
            (400, "InvalidParameter", Verdict::Rejected),
            (502, "", Verdict::Unavailable),
        ];
        for (status, code, verdict) in table {
            assert_eq!(answer(status, code).verdict(), verdict, "{status} {code}");
        }
    }

    #[test]
    fn a_secret_value_is_text_or_strict_base64() {
        let text = br#"{"RequestId":"r","SecretName":"db","SecretData":"s3cret","SecretDataType":"text","VersionId":"v1","VersionStages":{"VersionStage":["ACSCurrent"]}}"#;
        let fetched = parse_secret_value(text).unwrap();
        assert_eq!(
            (fetched.value.as_slice(), fetched.version.as_str()),
            (&b"s3cret"[..], "v1")
        );
        let binary = br#"{"SecretData":"/wD+","SecretDataType":"binary","VersionId":"v2"}"#;
        assert_eq!(
            parse_secret_value(binary).unwrap().value.as_slice(),
            [0xff, 0x00, 0xfe]
        );
        for bad in [
            &br#"{"SecretData":"/wD","SecretDataType":"binary","VersionId":"v"}"#[..],
            br#"{"SecretData":"/wD+\n","SecretDataType":"binary","VersionId":"v"}"#,
            br#"{"SecretData":"x","SecretDataType":"json","VersionId":"v"}"#,
            br#"{"SecretData":"x"}"#,
            br#"{"VersionId":"v"}"#,
            b"not json",
        ] {
            assert!(
                parse_secret_value(bad).is_err(),
                "{}",
                String::from_utf8_lossy(bad)
            );
        }
    }

    #[test]
    fn a_secret_parameter_reports_its_version() {
        let body = br#"{"RequestId":"r","Parameter":{"Name":"p","Type":"Secret","Value":"v","ParameterVersion":3}}"#;
        let fetched = parse_secret_parameter(body).unwrap();
        assert_eq!(
            (fetched.value.as_slice(), fetched.version.as_str()),
            (&b"v"[..], "3")
        );
        assert!(parse_secret_parameter(br#"{"Parameter":{"ParameterVersion":1}}"#).is_err());
    }

    #[test]
    fn sts_and_metadata_credentials_parse_and_hide_their_secrets() {
        let sts = br#"{"RequestId":"r","Credentials":{"AccessKeyId":"STS.NUa","AccessKeySecret":"SECRET-1","SecurityToken":"CAIStoken","Expiration":"2030-01-02T03:04:05Z"},"AssumedRoleUser":{}}"#;
        let credentials = parse_sts_credentials(sts).unwrap();
        assert_eq!(credentials.access_key_id, "STS.NUa");
        assert_eq!(
            credentials.expiration,
            Some(SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_553_445))
        );
        let shown = format!("{credentials:?}");
        assert!(
            !shown.contains("SECRET-1") && !shown.contains("CAIStoken"),
            "{shown}"
        );
        let metadata = br#"{"AccessKeyId":"STS.NUb","AccessKeySecret":"s","SecurityToken":"t","Expiration":"2030-01-02T03:04:05Z","LastUpdated":"x","Code":"Success"}"#;
        assert_eq!(
            parse_sts_credentials(metadata).unwrap().access_key_id,
            "STS.NUb"
        );
        let fractional = br#"{"Credentials":{"AccessKeyId":"a","AccessKeySecret":"s","SecurityToken":"t","Expiration":"2030-01-02T03:04:05.123Z"}}"#;
        assert!(parse_sts_credentials(fractional).is_err());
    }

    #[test]
    fn timestamps_are_utc_seconds() {
        let at = SystemTime::UNIX_EPOCH + Duration::from_secs(1_893_553_445);
        assert_eq!(timestamp(at), "2030-01-02T03:04:05Z");
        assert_eq!(parse_expiration("2030-01-02T03:04:05Z"), Some(at));
        assert_eq!(nonce().len(), 32);
        assert_ne!(nonce(), nonce());
    }

    #[test]
    fn errors_name_the_object_and_codes_but_never_message_text() {
        let object = ObjectRef {
            endpoint: "kms-vpc.cn-hangzhou.aliyuncs.com".into(),
            kind: ObjectType::Kms,
            name: "db".into(),
            version: VersionSelector::Kms {
                id: Some("v1".into()),
                stage: None,
            },
        };
        let error = AlibabaError::from_call(
            &object,
            CallError::Refused(answer(403, "Forbidden.NoPermission")),
            None,
        );
        assert_eq!(
            error.to_string(),
            "KMS secret db version v1 at kms-vpc.cn-hangzhou.aliyuncs.com: the identity is not \
             allowed to read it (HTTP 403 Forbidden.NoPermission, request id req-1); grant it \
             kms:GetSecretValue"
        );
        let throttled = AlibabaError::from_call(
            &object,
            CallError::Refused(ServiceAnswer {
                retry_after: Some(Duration::from_millis(1500)),
                ..answer(429, "Rejected.Throttling")
            }),
            None,
        );
        assert_eq!(throttled.retry_after(), Some(Duration::from_millis(1500)));
        assert!(
            throttled.to_string().ends_with("retry after 2 s"),
            "{throttled}"
        );
        assert_eq!(sanitized("Code<script>\n\"x\""), "Codescriptx");
    }
}
