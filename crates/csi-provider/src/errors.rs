//! Every way a Mount fails, and the one place those failures become gRPC statuses.
//!
//! The driver shows a failed Mount to people as a kubelet event (`rpc error: code = … desc = …`),
//! so the message names the object and the field or the vault's answer, in the shape Azure's
//! provider uses (`failed to get objectType:secret, objectName:db, objectVersion:: …`) so that
//! existing runbooks and searches still match. The code says what kind of failure it is (Azure's
//! provider answers Unknown for everything), so alerts can tell a typo from a throttled vault.
//!
//! Both backends' failures are here: Azure Key Vault's and Alibaba Cloud KMS / OOS / STS's, in
//! the same shape and the same table.
//!
//! Never puts a secret's value, a token, a client secret or a raw vault response body in a
//! message: each variant's `Display` carries only names, versions, fields, error codes and
//! fixed reasons.

use std::fmt;

use tonic::{Code, Status};

use crate::alibaba::client::{AlibabaError, ReadFailure};
use crate::alibaba::identity::IdentityError as AlibabaIdentityError;
use crate::azure::content::ContentError;
use crate::azure::identity::IdentityError;
use crate::azure::spec::ObjectSpec;
use crate::azure::vault::VaultError;
use crate::class::SpecError;
use crate::jmes::JsonFieldError;
use crate::request::RequestError;

const MIB: f64 = (1 << 20) as f64;

/// A Mount failed.
#[derive(Debug)]
pub enum MountError {
    /// The request is not what a driver sends.
    Request(RequestError),
    /// A SecretProviderClass parameter or object field is wrong.
    Spec(SpecError),
    /// The pod's identity could not be established or proven.
    Identity(IdentityError),
    /// The pod's Alibaba Cloud identity could not be established or proven.
    AlibabaIdentity(AlibabaIdentityError),
    /// The answer would be larger than a driver accepts (its `--max-call-recv-msg-size`).
    TooLarge {
        /// The encoded answer's size.
        bytes: usize,
        /// The largest answer sent.
        limit: usize,
    },
    /// One object could not be fetched or turned into files.
    Object {
        /// `objectType` as the class spells it (`kms` or `oos` for Alibaba).
        kind: &'static str,
        /// `objectName`.
        name: String,
        /// `objectVersion` (empty for the latest).
        version: String,
        /// What went wrong.
        failure: ObjectFailure,
    },
}

/// Why one object failed.
#[derive(Debug)]
pub enum ObjectFailure {
    /// The vault did not give it.
    Vault(VaultError),
    /// Its contents cannot become the files asked for.
    Content(ContentError),
    /// The secret named by `pfxPasswordSecretName` could not be read.
    PfxPassword(VaultError),
    /// `pfxPasswordSecretName` names an object that is not a secret.
    PfxPasswordNotASecret,
    /// `objectVersion` is not among the enabled versions `objectVersionHistory` lists.
    VersionNotInHistory {
        /// The version asked for.
        version: String,
    },
    /// `objectVersionHistory` found no enabled version.
    NoEnabledVersion,
    /// Alibaba Cloud KMS or OOS did not give it (boxed: it is large, and rare).
    Alibaba(Box<AlibabaError>),
    /// Its `crossAccountRoleArn` could not be assumed.
    CrossAccount(AlibabaIdentityError),
    /// A `jmesPath` field of its value could not be extracted.
    JsonField(JsonFieldError),
}

impl MountError {
    /// Whether Key Vault (not Entra ID) refused the identity's token while reading an object:
    /// revoked, or expired early, so the credential must be proven again.
    pub(crate) fn is_token_refused_by_vault(&self) -> bool {
        matches!(
            self,
            Self::Object {
                failure: ObjectFailure::Vault(VaultError::Unauthorized {
                    by_entra: false,
                    ..
                }) | ObjectFailure::PfxPassword(VaultError::Unauthorized {
                    by_entra: false,
                    ..
                }),
                ..
            }
        )
    }

    /// A failure of `object`.
    pub fn object(object: &ObjectSpec, failure: ObjectFailure) -> Self {
        Self::Object {
            kind: object.kind.as_str(),
            name: object.name.clone(),
            version: object.version.clone().unwrap_or_default(),
            failure,
        }
    }

    /// The gRPC code this failure is answered with.
    pub fn code(&self) -> Code {
        match self {
            Self::Request(_) | Self::Spec(_) => Code::InvalidArgument,
            Self::Identity(error) => identity_code(error),
            Self::AlibabaIdentity(error) => alibaba_identity_code(error),
            Self::TooLarge { .. } => Code::ResourceExhausted,
            Self::Object { failure, .. } => match failure {
                ObjectFailure::Vault(error) | ObjectFailure::PfxPassword(error) => {
                    vault_code(error)
                }
                ObjectFailure::Content(_)
                | ObjectFailure::PfxPasswordNotASecret
                | ObjectFailure::VersionNotInHistory { .. } => Code::FailedPrecondition,
                ObjectFailure::NoEnabledVersion => Code::NotFound,
                ObjectFailure::Alibaba(error) => error.code(),
                ObjectFailure::CrossAccount(error) => alibaba_identity_code(error),
                ObjectFailure::JsonField(_) => Code::FailedPrecondition,
            },
        }
    }
}

impl fmt::Display for MountError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("failed to mount objects, error: ")?;
        match self {
            Self::Request(error) => write!(f, "{error}"),
            Self::Spec(error) => write!(f, "{error}"),
            Self::Identity(error) => write!(f, "{error}"),
            Self::AlibabaIdentity(error) => write!(f, "{error}"),
            Self::TooLarge { bytes, limit } => write!(
                f,
                "the files total {:.1} MiB with their paths, over the {} MiB a driver accepts \
                 (its --max-call-recv-msg-size): mount fewer or smaller objects per volume",
                *bytes as f64 / MIB,
                limit / (1 << 20)
            ),
            Self::Object {
                kind,
                name,
                version,
                failure,
            } => write!(
                f,
                "failed to get objectType:{kind}, objectName:{name}, objectVersion:{version}: {failure}"
            ),
        }
    }
}

impl fmt::Display for ObjectFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Vault(error) => write!(f, "{error}"),
            Self::Content(error) => write!(f, "{error}"),
            Self::PfxPassword(error) => {
                write!(f, "cannot read the pfxPasswordSecretName secret: {error}")
            }
            Self::PfxPasswordNotASecret => f.write_str("pfxPasswordSecretName must name a secret"),
            Self::VersionNotInHistory { version } => write!(
                f,
                "objectVersion {version} is not an enabled version of the object, so \
                 objectVersionHistory cannot start there"
            ),
            Self::NoEnabledVersion => f.write_str("the object has no enabled version"),
            Self::Alibaba(error) => write!(f, "{error}"),
            Self::CrossAccount(error) => {
                write!(f, "cannot assume its crossAccountRoleArn: {error}")
            }
            Self::JsonField(error) => write!(f, "{error}"),
        }
    }
}

impl std::error::Error for MountError {}

impl From<RequestError> for MountError {
    fn from(error: RequestError) -> Self {
        Self::Request(error)
    }
}

impl From<SpecError> for MountError {
    fn from(error: SpecError) -> Self {
        Self::Spec(error)
    }
}

impl From<IdentityError> for MountError {
    fn from(error: IdentityError) -> Self {
        Self::Identity(error)
    }
}

impl From<AlibabaIdentityError> for MountError {
    fn from(error: AlibabaIdentityError) -> Self {
        Self::AlibabaIdentity(error)
    }
}

/// The code of a failed vault read: what the vault said, so alerts can tell a missing object
/// from a refused identity from a throttled vault.
pub(crate) fn vault_code(error: &VaultError) -> Code {
    match error {
        VaultError::NotFound { .. } => Code::NotFound,
        VaultError::Forbidden { .. } => Code::PermissionDenied,
        VaultError::Disabled { .. }
        | VaultError::Rejected { .. }
        | VaultError::Misconfigured { .. } => Code::FailedPrecondition,
        VaultError::Unauthorized { .. } => Code::Unauthenticated,
        // Not UNAVAILABLE: the driver retries that at once, three times, into the throttling.
        VaultError::Throttled { .. } => Code::ResourceExhausted,
        VaultError::Unavailable { .. } => Code::Unavailable,
        VaultError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        VaultError::Malformed { .. } => Code::Internal,
        VaultError::InvalidRequest { .. } => Code::InvalidArgument,
    }
}

/// The code of an identity that could not be established or proven.
pub(crate) fn identity_code(error: &IdentityError) -> Code {
    match error {
        IdentityError::ServiceAccountTokenMissing
        | IdentityError::NodePublishSecretNotSet
        | IdentityError::SecretKeyMissing { .. }
        | IdentityError::Cloud { .. } => Code::FailedPrecondition,
        IdentityError::Invalid { .. } => Code::InvalidArgument,
        IdentityError::Unsupported { .. } => Code::Unimplemented,
        IdentityError::Refused { .. } => Code::Unauthenticated,
        // Not UNAVAILABLE: the driver retries that at once, three times, into the throttling.
        IdentityError::Unavailable {
            throttled: true, ..
        } => Code::ResourceExhausted,
        IdentityError::Unavailable { .. } => Code::Unavailable,
        IdentityError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        IdentityError::Misconfigured { .. } => Code::Internal,
    }
}

/// The code of a failed Alibaba Cloud KMS or OOS read, as [`vault_code`] for Key Vault.
pub(crate) fn alibaba_code(failure: &ReadFailure) -> Code {
    match failure {
        ReadFailure::NotFound(_) => Code::NotFound,
        ReadFailure::Forbidden(_) => Code::PermissionDenied,
        ReadFailure::Unauthorized(_) => Code::Unauthenticated,
        // Not UNAVAILABLE: the driver retries that at once, three times, into the throttling.
        ReadFailure::Throttled { .. } => Code::ResourceExhausted,
        ReadFailure::Unavailable { .. } => Code::Unavailable,
        ReadFailure::DeadlineExceeded(_) => Code::DeadlineExceeded,
        ReadFailure::Rejected(_) => Code::FailedPrecondition,
        ReadFailure::Malformed(_) => Code::Internal,
    }
}

/// The code of an Alibaba Cloud identity that could not be established or proven.
pub(crate) fn alibaba_identity_code(error: &AlibabaIdentityError) -> Code {
    use crate::alibaba::client::Verdict;
    match error {
        AlibabaIdentityError::PodTokenMissing
        | AlibabaIdentityError::PodRoleUnknown { .. }
        | AlibabaIdentityError::OidcProviderNotConfigured
        | AlibabaIdentityError::ProviderTokenUnreadable { .. }
        | AlibabaIdentityError::NoCredentials => Code::FailedPrecondition,
        AlibabaIdentityError::Invalid { .. } => Code::InvalidArgument,
        AlibabaIdentityError::Refused {
            answer: Some(answer),
            ..
        } if answer.verdict() == Verdict::Forbidden => Code::PermissionDenied,
        AlibabaIdentityError::Refused { .. } => Code::Unauthenticated,
        AlibabaIdentityError::Unavailable {
            throttled: true, ..
        } => Code::ResourceExhausted,
        AlibabaIdentityError::Unavailable { .. } => Code::Unavailable,
        AlibabaIdentityError::DeadlineExceeded { .. } => Code::DeadlineExceeded,
        AlibabaIdentityError::Malformed { .. } => Code::Internal,
    }
}

/// The status a failed Mount is answered with: its code and its message, nothing else.
pub fn to_status(error: &MountError) -> Status {
    Status::new(error.code(), error.to_string())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use azure_access::errors::SdkError;
    use azure_access::errors::testing::http_error;

    use super::*;
    use crate::azure::spec::ObjectKind;
    use crate::azure::vault::{ObjectRef, VersionRef};

    /// Text a vault answer carries that must never reach the caller.
    const BODY: &str = r#"{"error":{"code":"SecretNotFound","message":"SERVICE-TEXT"}}"#;

    fn object() -> ObjectRef {
        ObjectRef {
            vault_host: "kv.vault.azure.net".into(),
            kind: ObjectKind::Secret,
            name: "db".into(),
            version: VersionRef::Latest,
        }
    }

    fn source(status: u16) -> Option<Arc<SdkError>> {
        Some(Arc::new(SdkError(http_error(status, BODY, &[]))))
    }

    fn failed(error: VaultError) -> MountError {
        MountError::Object {
            kind: "secret",
            name: "db".into(),
            version: String::new(),
            failure: ObjectFailure::Vault(error),
        }
    }

    #[test]
    fn every_failure_has_its_code_and_no_service_text() {
        let object = object;
        let codes = String::from(" SecretNotFound");
        let table: Vec<(MountError, Code)> = vec![
            (
                MountError::Request(RequestError::Malformed {
                    field: "attributes",
                    reason: "not JSON".into(),
                }),
                Code::InvalidArgument,
            ),
            (
                MountError::Spec(SpecError::Parameter {
                    key: "keyvaultName",
                    reason: "is not provided".into(),
                }),
                Code::InvalidArgument,
            ),
            (
                MountError::Identity(IdentityError::ServiceAccountTokenMissing),
                Code::FailedPrecondition,
            ),
            (
                MountError::Identity(IdentityError::Refused {
                    identity: "client 1".into(),
                    status: Some(401),
                    source: source(401),
                }),
                Code::Unauthenticated,
            ),
            (
                MountError::Identity(IdentityError::Unsupported {
                    parameter: "usePodIdentity",
                    reason: "use workload identity",
                }),
                Code::Unimplemented,
            ),
            (
                failed(VaultError::NotFound {
                    object: object(),
                    codes: codes.clone(),
                    source: source(404),
                }),
                Code::NotFound,
            ),
            (
                failed(VaultError::Forbidden {
                    object: object(),
                    codes: codes.clone(),
                    source: source(403),
                }),
                Code::PermissionDenied,
            ),
            (
                failed(VaultError::Disabled {
                    object: object(),
                    codes: codes.clone(),
                    source: source(403),
                }),
                Code::FailedPrecondition,
            ),
            (
                failed(VaultError::Throttled {
                    object: object(),
                    retry_after: Some(Duration::from_secs(30)),
                    source: source(429),
                }),
                Code::ResourceExhausted,
            ),
            (
                failed(VaultError::Unavailable {
                    object: object(),
                    status: Some(503),
                    source: source(503),
                }),
                Code::Unavailable,
            ),
            (
                failed(VaultError::DeadlineExceeded {
                    object: object(),
                    attempts: 3,
                }),
                Code::DeadlineExceeded,
            ),
            (
                MountError::Object {
                    kind: "secret",
                    name: "db".into(),
                    version: String::new(),
                    failure: ObjectFailure::NoEnabledVersion,
                },
                Code::NotFound,
            ),
            (
                MountError::TooLarge {
                    bytes: 5 << 20,
                    limit: 4 << 20,
                },
                Code::ResourceExhausted,
            ),
        ];
        let table = table.into_iter().chain(alibaba_failures());
        for (error, code) in table {
            let status = to_status(&error);
            assert_eq!(status.code(), code, "{error}");
            assert!(
                status
                    .message()
                    .starts_with("failed to mount objects, error: "),
                "{status:?}"
            );
            assert!(!status.message().contains("SERVICE-TEXT"), "{status:?}");
        }
    }

    /// Every Alibaba Cloud failure and its code.
    fn alibaba_failures() -> Vec<(MountError, Code)> {
        use crate::alibaba::client::{ObjectRef as AlibabaObject, ServiceAnswer};
        use crate::alibaba::spec::{ObjectType, VersionSelector};
        let object = || AlibabaObject {
            endpoint: "kms-vpc.cn-hangzhou.aliyuncs.com".into(),
            kind: ObjectType::Kms,
            name: "db".into(),
            version: VersionSelector::Latest,
        };
        let answer = |status, code: &str| ServiceAnswer {
            status,
            code: code.into(),
            request_id: "4C2C0E8A-REQUEST".into(),
            retry_after: None,
        };
        let failed = |failure| MountError::Object {
            kind: "kms",
            name: "db".into(),
            version: String::new(),
            failure,
        };
        let read = |failure| {
            failed(ObjectFailure::Alibaba(Box::new(AlibabaError {
                object: object(),
                failure,
            })))
        };
        let identity = |identity: &str| identity.to_owned();
        vec![
            (
                read(ReadFailure::NotFound(answer(
                    404,
                    "Forbidden.ResourceNotFound",
                ))),
                Code::NotFound,
            ),
            (
                read(ReadFailure::Forbidden(answer(
                    403,
                    "Forbidden.NoPermission",
                ))),
                Code::PermissionDenied,
            ),
            (
                read(ReadFailure::Unauthorized(answer(
                    400,
                    "InvalidSecurityToken.Expired",
                ))),
                Code::Unauthenticated,
            ),
            (
                read(ReadFailure::Throttled {
                    retry_after: Some(Duration::from_millis(1500)),
                    answer: Some(answer(429, "Rejected.Throttling")),
                }),
                Code::ResourceExhausted,
            ),
            (
                read(ReadFailure::Unavailable {
                    answer: Some(answer(503, "ServiceUnavailableTemporary")),
                    source: None,
                }),
                Code::Unavailable,
            ),
            (
                read(ReadFailure::DeadlineExceeded(2)),
                Code::DeadlineExceeded,
            ),
            (
                read(ReadFailure::Rejected(answer(400, "InvalidParameter"))),
                Code::FailedPrecondition,
            ),
            (
                read(ReadFailure::Malformed("the answer has no SecretData")),
                Code::Internal,
            ),
            (
                failed(ObjectFailure::JsonField(JsonFieldError::NoMatch {
                    path: "password".into(),
                })),
                Code::FailedPrecondition,
            ),
            (
                failed(ObjectFailure::CrossAccount(AlibabaIdentityError::Refused {
                    identity: identity("cross-account role acs:ram::2:role/r"),
                    answer: Some(answer(403, "NoPermission")),
                })),
                Code::PermissionDenied,
            ),
            (
                MountError::AlibabaIdentity(AlibabaIdentityError::PodTokenMissing),
                Code::FailedPrecondition,
            ),
            (
                MountError::AlibabaIdentity(AlibabaIdentityError::OidcProviderNotConfigured),
                Code::FailedPrecondition,
            ),
            (
                MountError::AlibabaIdentity(AlibabaIdentityError::NoCredentials),
                Code::FailedPrecondition,
            ),
            (
                MountError::AlibabaIdentity(AlibabaIdentityError::Invalid {
                    field: "access_key",
                    reason: "expected an AccessKey id".into(),
                }),
                Code::InvalidArgument,
            ),
            (
                MountError::AlibabaIdentity(AlibabaIdentityError::Refused {
                    identity: identity("the pod's RAM role acs:ram::1:role/app (RRSA)"),
                    answer: Some(answer(401, "AuthenticationFail.OIDCToken.Expired")),
                }),
                Code::Unauthenticated,
            ),
            (
                MountError::AlibabaIdentity(AlibabaIdentityError::Unavailable {
                    identity: identity("the ECS instance's RAM role"),
                    answer: Some(answer(400, "Throttling.User")),
                    throttled: true,
                }),
                Code::ResourceExhausted,
            ),
            (
                MountError::AlibabaIdentity(AlibabaIdentityError::Unavailable {
                    identity: identity("the ECS instance's RAM role"),
                    answer: None,
                    throttled: false,
                }),
                Code::Unavailable,
            ),
            (
                MountError::AlibabaIdentity(AlibabaIdentityError::DeadlineExceeded {
                    identity: identity("the provider's RAM role"),
                }),
                Code::DeadlineExceeded,
            ),
            (
                MountError::AlibabaIdentity(AlibabaIdentityError::Malformed {
                    identity: identity("the ECS instance's RAM role"),
                    reason: "not the JSON STS answers",
                }),
                Code::Internal,
            ),
        ]
    }

    #[test]
    fn an_alibaba_object_failure_names_the_object_in_the_same_shape() {
        let (error, _) = alibaba_failures().remove(1);
        assert_eq!(
            error.to_string(),
            "failed to mount objects, error: failed to get objectType:kms, objectName:db, \
             objectVersion:: KMS secret db at kms-vpc.cn-hangzhou.aliyuncs.com: the identity is \
             not allowed to read it (HTTP 403 Forbidden.NoPermission, request id \
             4C2C0E8A-REQUEST); grant it kms:GetSecretValue"
        );
    }

    #[test]
    fn an_object_failure_names_the_object_as_azures_provider_does() {
        let error = failed(VaultError::NotFound {
            object: object(),
            codes: " SecretNotFound".into(),
            source: source(404),
        });
        let message = error.to_string();
        assert!(
            message.starts_with(
                "failed to mount objects, error: failed to get objectType:secret, objectName:db, objectVersion:: "
            ),
            "{message}"
        );
    }
}
