//! The two error types of the emulator: [`ServiceError`], an error *answer* of the Key Vault
//! service (status, code, message, innererror, as the SDKs parse them), and [`EmulatorError`],
//! a failure of the emulator itself or of a control call made by a test.
//!
//! Messages never contain key material, tokens or client secrets.

use std::fmt;
use std::path::PathBuf;

use http::StatusCode;
use serde_json::json;

use crate::model::{ObjectKind, Permission};

/// An error answer of the Key Vault / Managed HSM REST API:
/// `{"error":{"code","message","innererror"?:{"code"}}}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServiceError {
    status: StatusCode,
    code: &'static str,
    message: String,
    inner: Option<&'static str>,
    retry_after: Option<u64>,
    challenge: bool,
}

impl ServiceError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            inner: None,
            retry_after: None,
            challenge: false,
        }
    }

    /// 400 BadParameter.
    pub fn bad_parameter(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "BadParameter", message)
    }

    /// 404 KeyNotFound for a key name (and version, when one was named).
    pub fn key_not_found(name: &str, version: Option<&str>) -> Self {
        Self::not_found(ObjectKind::Key, name, version)
    }

    /// 404 `KeyNotFound` / `SecretNotFound` / `CertificateNotFound` for a name (and version,
    /// when one was named), in the service's words.
    pub fn not_found(kind: ObjectKind, name: &str, version: Option<&str>) -> Self {
        let noun = kind.noun();
        let id = match version {
            Some(version) => format!("{name}/{version}"),
            None => name.to_owned(),
        };
        Self::new(
            StatusCode::NOT_FOUND,
            kind.not_found_code(),
            format!(
                "A {noun} with (name/id) {id} was not found in this key vault. If you recently \
                 deleted this {noun} you may be able to recover it using the correct recovery \
                 command."
            ),
        )
    }

    /// 404 KeyNotFound for a name that is not in the soft-deleted state.
    pub fn deleted_key_not_found(name: &str) -> Self {
        Self::deleted_not_found(ObjectKind::Key, name)
    }

    /// 404 for a name that is not in the soft-deleted state.
    pub fn deleted_not_found(kind: ObjectKind, name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            kind.not_found_code(),
            format!("Deleted {} not found: {name}", kind.title()),
        )
    }

    /// 404 PendingCertificateNotFound: no certificate operation for the name.
    pub fn pending_not_found(name: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "PendingCertificateNotFound",
            format!("Pending certificate not found: {name}"),
        )
    }

    /// 403 Forbidden: the identity lacks a permission (`keys unwrapKey`, `secrets get`).
    pub fn permission_denied(identity: &str, permission: Permission, vault: &str) -> Self {
        let mut error = Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "The user, group or application '{identity}' does not have {} {} \
                 permission on key vault '{vault}'. For help resolving this issue, please see \
                 https://go.microsoft.com/fwlink/?linkid=2125287",
                permission.list_name(),
                permission.verb()
            ),
        );
        error.inner = Some("ForbiddenByPolicy");
        error
    }

    /// 403 Forbidden / innererror SecretDisabled: reading a disabled secret (or the backing
    /// secret of a certificate still being created).
    pub fn secret_disabled() -> Self {
        let mut error = Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            "Operation get is not allowed on a disabled secret.",
        );
        error.inner = Some("SecretDisabled");
        error
    }

    /// 403 Forbidden / innererror SecretManagedByKeyVault: changing a certificate's backing
    /// secret directly.
    pub fn managed_by_key_vault(operation: &str) -> Self {
        let mut error = Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!(
                "Operation \"{operation}\" is not allowed as this object's lifetime is managed \
                 by Key Vault."
            ),
        );
        error.inner = Some("SecretManagedByKeyVault");
        error
    }

    /// 403 Forbidden / innererror KeyDisabled: a private-key operation on a disabled key.
    pub fn key_disabled(operation: &str) -> Self {
        let mut error = Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("Operation {operation} is not allowed on a disabled key."),
        );
        error.inner = Some("KeyDisabled");
        error
    }

    /// 403 Forbidden: an operation outside the key's nbf/exp window.
    pub fn key_not_valid_now(operation: &str, expired: bool) -> Self {
        let (inner, state) = if expired {
            ("KeyExpired", "an expired")
        } else {
            ("KeyNotYetValid", "a not yet valid")
        };
        let mut error = Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("Operation {operation} is not allowed on {state} key."),
        );
        error.inner = Some(inner);
        error
    }

    /// 403 Forbidden: the key's key_ops do not include the operation.
    pub fn operation_not_permitted(operation: &str) -> Self {
        let mut error = Self::new(
            StatusCode::FORBIDDEN,
            "Forbidden",
            format!("Operation {operation} is not permitted on this key."),
        );
        error.inner = Some("KeyOperationForbidden");
        error
    }

    /// 409 Conflict / ObjectIsDeletedButRecoverable: the name is held by a soft-deleted object.
    pub fn deleted_but_recoverable(kind: ObjectKind, name: &str) -> Self {
        let mut error = Self::new(
            StatusCode::CONFLICT,
            "Conflict",
            format!(
                "{} {name} is currently in a deleted but recoverable state, and its name cannot \
                 be reused; in this state, the {} can only be recovered or purged.",
                kind.title(),
                kind.noun()
            ),
        );
        error.inner = Some("ObjectIsDeletedButRecoverable");
        error
    }

    /// 409 Conflict: a key name already exists (recover onto a live key).
    pub fn conflict(message: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, "Conflict", message)
    }

    /// 429 Throttled, with `Retry-After` only when `retry_after` is given (the real service
    /// sends none).
    pub fn throttled(retry_after: Option<u64>) -> Self {
        let mut error = Self::new(
            StatusCode::TOO_MANY_REQUESTS,
            "Throttled",
            "Request was not processed because too many requests were received. Reason: \
             VaultRequestTypeLimitReached",
        );
        error.retry_after = retry_after;
        error
    }

    /// 401 Unauthorized, carrying the `WWW-Authenticate` challenge.
    pub fn unauthorized(message: impl Into<String>) -> Self {
        let mut error = Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", message);
        error.challenge = true;
        error
    }

    /// A 5xx answer injected by a test.
    pub fn server_error(status: StatusCode) -> Self {
        let code = match status {
            StatusCode::SERVICE_UNAVAILABLE => "ServiceUnavailable",
            StatusCode::BAD_GATEWAY => "BadGateway",
            StatusCode::GATEWAY_TIMEOUT => "GatewayTimeout",
            _ => "InternalServerError",
        };
        Self::new(
            status,
            code,
            "The service encountered an internal error (injected by the emulator).",
        )
    }

    /// 405 for a method the route does not serve.
    pub fn method_not_allowed() -> Self {
        Self::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "MethodNotAllowed",
            "The requested resource does not support this HTTP method.",
        )
    }

    /// 404 for a path the service does not serve.
    pub fn no_route(path: &str) -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "NotFound",
            format!("No route matches the request path '{path}'."),
        )
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `error.code` field.
    pub fn code(&self) -> &'static str {
        self.code
    }

    /// The `error.message` field.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `error.innererror.code` field, if any.
    pub fn inner_code(&self) -> Option<&'static str> {
        self.inner
    }

    /// Seconds for a `Retry-After` header, if one is sent.
    pub fn retry_after(&self) -> Option<u64> {
        self.retry_after
    }

    /// Whether the answer carries the `WWW-Authenticate` challenge.
    pub fn is_challenge(&self) -> bool {
        self.challenge
    }

    /// The JSON body.
    pub fn body(&self) -> serde_json::Value {
        let mut error = json!({ "code": self.code, "message": self.message });
        if let Some(inner) = self.inner {
            error["innererror"] = json!({ "code": inner });
        }
        json!({ "error": error })
    }
}

impl fmt::Display for ServiceError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )?;
        if let Some(inner) = self.inner {
            write!(f, " ({inner})")?;
        }
        Ok(())
    }
}

impl std::error::Error for ServiceError {}

/// A failure of the emulator or of a control call (Rust API or admin HTTP API).
#[derive(Debug)]
pub enum EmulatorError {
    /// Binding a listener failed.
    Bind {
        /// The address that could not be bound.
        addr: std::net::SocketAddr,
        /// The socket error.
        source: std::io::Error,
    },
    /// Reading or writing a file (certificates, key files) failed.
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Generating or loading the TLS certificates failed.
    Tls(String),
    /// A control call was refused the way the service would refuse it.
    Service(ServiceError),
    /// A control call named an identity that is not registered.
    UnknownIdentity(String),
    /// A control call was malformed (bad key type, bad permission name, ...).
    InvalidRequest(String),
}

impl fmt::Display for EmulatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bind { addr, source } => write!(f, "cannot listen on {addr}: {source}"),
            Self::Io { path, source } => write!(f, "cannot access {}: {source}", path.display()),
            Self::Tls(reason) => write!(f, "TLS setup failed: {reason}"),
            Self::Service(error) => write!(f, "refused: {error}"),
            Self::UnknownIdentity(id) => write!(f, "no identity with client id {id} is registered"),
            Self::InvalidRequest(reason) => write!(f, "invalid control request: {reason}"),
        }
    }
}

impl std::error::Error for EmulatorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind { source, .. } | Self::Io { source, .. } => Some(source),
            Self::Service(error) => Some(error),
            _ => None,
        }
    }
}

impl From<emulator_support::StartError> for EmulatorError {
    fn from(error: emulator_support::StartError) -> Self {
        match error {
            emulator_support::StartError::Bind { addr, source } => Self::Bind { addr, source },
            emulator_support::StartError::Io { path, source } => Self::Io { path, source },
        }
    }
}

impl From<ServiceError> for EmulatorError {
    fn from(error: ServiceError) -> Self {
        Self::Service(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disabled_key_body_has_the_inner_code() {
        let body = ServiceError::key_disabled("unwrapKey").body();
        assert_eq!(body["error"]["code"], "Forbidden");
        assert_eq!(body["error"]["innererror"]["code"], "KeyDisabled");
    }

    #[test]
    fn throttled_has_no_retry_after_unless_asked() {
        assert_eq!(ServiceError::throttled(None).retry_after(), None);
        assert_eq!(ServiceError::throttled(Some(3)).retry_after(), Some(3));
        assert_eq!(ServiceError::throttled(None).status().as_u16(), 429);
    }

    #[test]
    fn each_object_kind_has_its_not_found_code_and_words() {
        let secret = ServiceError::not_found(ObjectKind::Secret, "db", Some("abc"));
        assert_eq!(
            (secret.status().as_u16(), secret.code()),
            (404, "SecretNotFound")
        );
        assert!(
            secret
                .message()
                .starts_with("A secret with (name/id) db/abc was not found")
        );
        let cert = ServiceError::deleted_but_recoverable(ObjectKind::Certificate, "tls");
        assert_eq!(cert.inner_code(), Some("ObjectIsDeletedButRecoverable"));
        assert!(
            cert.message()
                .starts_with("Certificate tls is currently in a deleted")
        );
        let denied = ServiceError::permission_denied("app", Permission::SecretGet, "v");
        assert!(
            denied
                .message()
                .contains("does not have secrets get permission")
        );
        let disabled = ServiceError::secret_disabled().body();
        assert_eq!(disabled["error"]["innererror"]["code"], "SecretDisabled");
        assert_eq!(
            disabled["error"]["message"],
            "Operation get is not allowed on a disabled secret."
        );
        let managed = ServiceError::managed_by_key_vault("set");
        assert_eq!(
            managed.message(),
            "Operation \"set\" is not allowed as this object's lifetime is managed by Key Vault."
        );
    }
}
