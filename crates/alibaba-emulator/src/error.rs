//! The emulator's two error types: [`ApiError`], an error *answer* of an Alibaba Cloud API
//! (HTTP status, `Code`, `Message`, and `x-acs-retry-after` for throttling) in the JSON body the
//! SDKs parse, and [`EmulatorError`], a failure of the emulator itself or of a control call made
//! by a test.
//!
//! Messages never contain AccessKey secrets, security tokens or secret values.

use std::fmt;
use std::path::PathBuf;

use http::StatusCode;
use serde_json::{Value, json};

/// An error answer: `{"RequestId","HostId","Code","Message","Recommend"}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    status: StatusCode,
    code: String,
    message: String,
    retry_after_millis: Option<u64>,
}

impl ApiError {
    /// An answer with any status, code and message.
    pub fn new(status: StatusCode, code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.into(),
            message: message.into(),
            retry_after_millis: None,
        }
    }

    /// Adds `x-acs-retry-after` (milliseconds, as the SDKs read it).
    pub fn with_retry_after_millis(mut self, millis: Option<u64>) -> Self {
        self.retry_after_millis = millis.filter(|m| *m > 0);
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// The `Code`.
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The `Message`.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The `x-acs-retry-after` value, if any.
    pub fn retry_after_millis(&self) -> Option<u64> {
        self.retry_after_millis
    }

    /// The JSON body.
    pub fn body(&self, request_id: &str, host: &str) -> Value {
        json!({
            "RequestId": request_id,
            "HostId": host,
            "Code": self.code,
            "Message": self.message,
            "Recommend": format!(
                "https://api.aliyun.com/troubleshoot?q={}&requestId={request_id}",
                self.code
            ),
        })
    }

    // ----- gateway (signature and credentials) errors, shared by every product -----

    /// 400 `Missing{Name}`.
    pub fn missing_parameter(name: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            format!("Missing{name}"),
            format!("{name} is mandatory for this action."),
        )
    }

    /// 400 `InvalidParameter` about one parameter.
    pub fn invalid_parameter(name: &str, detail: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidParameter",
            format!("The specified parameter {name} is not valid. {detail}"),
        )
    }

    /// 404 `InvalidApi.NotFound`: no such action and version.
    pub fn api_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "InvalidApi.NotFound",
            "Specified api is not found, please check your url and method.",
        )
    }

    /// 400 `IncompleteSignature`.
    pub fn incomplete_signature(detail: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "IncompleteSignature",
            format!("The request signature does not conform to Aliyun standards. {detail}"),
        )
    }

    /// 400 `InvalidSignatureMethod`.
    pub fn invalid_signature_method() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidSignatureMethod",
            "Specified signature method is not valid.",
        )
    }

    /// 400 `SignatureDoesNotMatch` (the common gateway code table gives 400).
    pub fn signature_mismatch() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "SignatureDoesNotMatch",
            "Specified signature is not matched with our calculation.",
        )
    }

    /// 404 `InvalidAccessKeyId.NotFound`.
    pub fn access_key_not_found() -> Self {
        Self::new(
            StatusCode::NOT_FOUND,
            "InvalidAccessKeyId.NotFound",
            "Specified access key is not found.",
        )
    }

    /// 400 `InvalidAccessKeyId.Inactive`.
    pub fn access_key_inactive() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidAccessKeyId.Inactive",
            "Specified access key is disabled.",
        )
    }

    /// 400 `InvalidTimeStamp.Format`.
    pub fn timestamp_format() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
        )
    }

    /// 400 `InvalidTimeStamp.Expired`: more than 15 minutes from the server's clock.
    pub fn timestamp_expired() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidTimeStamp.Expired",
            "Specified time stamp or date value is expired.",
        )
    }

    /// 400 `SignatureNonceUsed`: a replayed nonce.
    pub fn nonce_used() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "SignatureNonceUsed",
            "Specified signature nonce was used already.",
        )
    }

    /// 400 `MissingSecurityToken`: an STS AccessKey id without its token.
    pub fn missing_security_token() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "MissingSecurityToken",
            "SecurityToken is mandatory for this action.",
        )
    }

    /// 400 `InvalidSecurityToken.Expired`.
    pub fn security_token_expired() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidSecurityToken.Expired",
            "Specified SecurityToken is expired.",
        )
    }

    /// 400 `InvalidSecurityToken.MismatchWithAccessKey`.
    pub fn security_token_mismatch() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidSecurityToken.MismatchWithAccessKey",
            "Specified SecurityToken mismatch with the AccessKey.",
        )
    }

    /// 400 `InvalidSecurityToken.Malformed`.
    pub fn security_token_malformed() -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidSecurityToken.Malformed",
            "Specified SecurityToken is malformed.",
        )
    }

    // ----- injected server errors -----

    /// 500 `InternalFailure`.
    pub fn internal_failure() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "InternalFailure",
            "The request processing has failed due to some unknown error.",
        )
    }

    /// 503 `ServiceUnavailableTemporary`.
    pub fn service_unavailable() -> Self {
        Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ServiceUnavailableTemporary",
            "The service is temporarily unavailable. Please try again later.",
        )
    }
}

impl fmt::Display for ApiError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl std::error::Error for ApiError {}

/// A failure of the emulator or of a control call.
#[derive(Debug)]
pub enum EmulatorError {
    /// A listener could not be bound.
    Bind {
        /// The address.
        addr: std::net::SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
    /// A file could not be read or written.
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// The TLS configuration could not be built.
    Tls(keyvault_emulator::EmulatorError),
    /// The operating system's random source failed.
    Random,
    /// A control call named something that does not exist (a role, a provider, a secret...).
    NotFound(String),
    /// A control call's input was invalid.
    Invalid(String),
}

impl fmt::Display for EmulatorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Bind { addr, .. } => write!(f, "cannot listen on {addr}"),
            Self::Io { path, .. } => write!(f, "cannot access {}", path.display()),
            Self::Tls(_) => f.write_str("cannot build the server's TLS configuration"),
            Self::Random => f.write_str("the operating system's random source failed"),
            Self::NotFound(what) => write!(f, "not found: {what}"),
            Self::Invalid(what) => write!(f, "invalid: {what}"),
        }
    }
}

impl std::error::Error for EmulatorError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Bind { source, .. } | Self::Io { source, .. } => Some(source),
            Self::Tls(source) => Some(source),
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_bodies_carry_code_message_and_request_id() {
        let error = ApiError::access_key_not_found();
        let body = error.body("RID", "kms.cn-hangzhou.aliyuncs.com");
        assert_eq!(body["Code"], "InvalidAccessKeyId.NotFound");
        assert_eq!(body["RequestId"], "RID");
        assert_eq!(body["HostId"], "kms.cn-hangzhou.aliyuncs.com");
        assert_eq!(error.status(), StatusCode::NOT_FOUND);
    }

    #[test]
    fn retry_after_is_only_kept_when_positive() {
        let error = ApiError::internal_failure();
        assert_eq!(
            error
                .clone()
                .with_retry_after_millis(Some(0))
                .retry_after_millis(),
            None
        );
        assert_eq!(
            error
                .with_retry_after_millis(Some(1500))
                .retry_after_millis(),
            Some(1500)
        );
    }
}
