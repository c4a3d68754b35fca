//! The one mapping from envelope errors to gRPC status codes.
//!
//! Bad input is InvalidArgument; a key the plugin may not use is FailedPrecondition; a key
//! service that does not answer is Unavailable. Messages say what failed without backend text,
//! key bytes or plaintext.

use tonic::{Code, Status};

use crate::envelope::EnvelopeError;
use crate::provider::ProviderError;

/// The gRPC status for `error`.
pub fn to_status(error: &EnvelopeError) -> Status {
    let code = code_for(error);
    let message = match error {
        EnvelopeError::Provider(ProviderError::Unavailable { operation, .. }) => {
            format!("key service unavailable during {operation}; retry later")
        }
        other => other.to_string(),
    };
    Status::new(code, message)
}

fn code_for(error: &EnvelopeError) -> Code {
    match error {
        EnvelopeError::Format(_) | EnvelopeError::Authentication => Code::InvalidArgument,
        EnvelopeError::Provider(provider) => match provider {
            ProviderError::UnwrapFailed { .. } => Code::InvalidArgument,
            ProviderError::UnknownKeyVersion { .. }
            | ProviderError::Revoked { .. }
            | ProviderError::Misconfigured { .. } => Code::FailedPrecondition,
            ProviderError::Throttled { .. }
            | ProviderError::Unavailable { .. }
            | ProviderError::Random => Code::Unavailable,
        },
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::envelope::format::FormatError;

    #[test]
    fn every_error_maps_to_its_code_and_never_to_unknown_or_internal() {
        let backend = Arc::new(std::io::Error::other("backend said: token abc123"));
        let table: Vec<(EnvelopeError, Code)> = vec![
            (FormatError::EmptyPlaintext.into(), Code::InvalidArgument),
            (
                FormatError::InvalidKeyId { len: 0 }.into(),
                Code::InvalidArgument,
            ),
            (
                FormatError::MalformedCiphertext { reason: "empty" }.into(),
                Code::InvalidArgument,
            ),
            (
                FormatError::MalformedAnnotations { reason: "x".into() }.into(),
                Code::InvalidArgument,
            ),
            (EnvelopeError::Authentication, Code::InvalidArgument),
            (
                ProviderError::UnwrapFailed {
                    version: "1".into(),
                }
                .into(),
                Code::InvalidArgument,
            ),
            (
                ProviderError::UnknownKeyVersion {
                    version: "9".into(),
                }
                .into(),
                Code::FailedPrecondition,
            ),
            (
                ProviderError::Revoked {
                    reason: "disabled".into(),
                }
                .into(),
                Code::FailedPrecondition,
            ),
            (
                ProviderError::Misconfigured { reason: "x".into() }.into(),
                Code::FailedPrecondition,
            ),
            (
                ProviderError::Unavailable {
                    operation: "unwrap".into(),
                    source: backend,
                }
                .into(),
                Code::Unavailable,
            ),
            (ProviderError::Random.into(), Code::Unavailable),
            (
                ProviderError::Throttled {
                    operation: "unwrap".into(),
                    retry_after: None,
                }
                .into(),
                Code::Unavailable,
            ),
        ];
        for (error, code) in table {
            let status = to_status(&error);
            assert_eq!(status.code(), code, "{error}");
            assert!(!status.message().contains("abc123"), "{}", status.message());
        }
    }
}
