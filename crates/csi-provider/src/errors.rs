//! Every way a Mount fails, and the one place those failures become gRPC statuses.
//!
//! The driver shows a failed Mount to people as a kubelet event (`rpc error: code = … desc = …`),
//! so the message names the object and the field or the vault's answer, in the shape Azure's
//! provider uses (`failed to get objectType:secret, objectName:db, objectVersion:: …`) so that
//! existing runbooks and searches still match. The code says what kind of failure it is (Azure's
//! provider answers Unknown for everything), so alerts can tell a typo from a throttled vault.
//!
//! Never puts a secret's value, a token, a client secret or a raw vault response body in a
//! message: each variant's `Display` carries only names, versions, fields and fixed reasons.

use std::fmt;

use tonic::{Code, Status};

use crate::azure::content::ContentError;
use crate::azure::identity::IdentityError;
use crate::azure::spec::{ObjectSpec, SpecError};
use crate::azure::vault::VaultError;
use crate::request::RequestError;

/// A Mount failed.
#[derive(Debug)]
pub enum MountError {
    /// The request is not what a driver sends.
    Request(RequestError),
    /// A SecretProviderClass parameter or object field is wrong.
    Spec(SpecError),
    /// The pod's identity could not be established or proven.
    Identity(IdentityError),
    /// One object could not be fetched or turned into files.
    Object {
        /// `objectType` as the class spells it.
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
}

impl MountError {
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
            Self::Identity(error) => error.code(),
            Self::Object { failure, .. } => match failure {
                ObjectFailure::Vault(error) | ObjectFailure::PfxPassword(error) => error.code(),
                ObjectFailure::Content(_)
                | ObjectFailure::PfxPasswordNotASecret
                | ObjectFailure::VersionNotInHistory { .. } => Code::FailedPrecondition,
                ObjectFailure::NoEnabledVersion => Code::NotFound,
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

/// The status a failed Mount is answered with: its code and its message, nothing else.
pub fn to_status(error: &MountError) -> Status {
    Status::new(error.code(), error.to_string())
}
