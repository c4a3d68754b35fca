//! How an Azure failure becomes a [`ProviderError`]: the shared classification
//! ([`azure_access::errors`]) says transient, refusal or misconfiguration; this mapping says what
//! that means for a key — authoritative answers (the key is disabled, deleted, expired, or the
//! identity may not use it) → `Revoked`; transient ones (429 → `Throttled`, 408/5xx/timeouts/
//! connection failures → `Unavailable`, both retried within the deadline); a 400 on unwrap →
//! `UnwrapFailed` (the wrapped KEK is bad); anything else → `Misconfigured`. Set-up errors of the
//! shared crate and its retry deadline convert here too.
//!
//! Reasons are composed here from the HTTP status and the service's error codes — never from the
//! service's free-text message, which stays in the kept source error for logs only — so nothing a
//! remote party wrote reaches kube-apiserver. Tokens never appear: the SDK's errors carry none.

use std::sync::Arc;

use azure_access::errors::{SdkError, Verdict};
use azure_access::retry::{Classified, DeadlineExceeded};
use azure_core::error::Error as AzureError;

use super::key_id::KeyRef;
use crate::provider::ProviderError;

impl From<azure_access::Error> for ProviderError {
    fn from(error: azure_access::Error) -> Self {
        Self::Misconfigured {
            reason: error.to_string(),
        }
    }
}

impl From<DeadlineExceeded> for ProviderError {
    fn from(deadline: DeadlineExceeded) -> Self {
        Self::Unavailable {
            operation: deadline.operation.clone(),
            source: Arc::new(deadline),
        }
    }
}

/// What a remote call was doing, for error messages and the choice of variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Reading the key (refresh, start-up validation).
    GetKey,
    /// Wrapping a new local KEK.
    Wrap,
    /// Unwrapping a KEK read from etcd.
    Unwrap,
    /// Decrypting a DEK that Azure's Go KMS plugin encrypted (read from etcd).
    Decrypt,
}

impl Call {
    fn permission(self) -> &'static str {
        match self {
            Self::GetKey => "get",
            Self::Wrap => "wrapKey",
            Self::Unwrap => "unwrapKey",
            Self::Decrypt => "decrypt",
        }
    }
}

/// A failed call, classified.
#[derive(Debug)]
pub enum Failure {
    /// The vault has no such key, or no such version of it (404).
    NotFound(Classified<ProviderError>),
    /// Anything else.
    Other(Classified<ProviderError>),
}

impl Failure {
    /// The classified failure, whatever its kind.
    pub fn into_classified(self) -> Classified<ProviderError> {
        match self {
            Self::NotFound(classified) | Self::Other(classified) => classified,
        }
    }
}

/// Classifies `error` from `call` on `version` of `key` (`None`: the latest version).
pub fn classify(error: AzureError, call: Call, key: &KeyRef, version: Option<&str>) -> Failure {
    let operation = describe(call, key, version);
    let subject = match version {
        Some(version) => format!("version {version} of {key}"),
        None => key.to_string(),
    };
    let unavailable = |error: AzureError| ProviderError::Unavailable {
        operation: operation.clone(),
        source: Arc::new(SdkError(error)),
    };
    let revoked = |reason: String| Classified::fatal(ProviderError::Revoked { reason });
    let classified = match azure_access::errors::classify(&error) {
        Verdict::Throttled(answer) => Classified::transient(
            ProviderError::Throttled {
                operation,
                retry_after: answer.retry_after,
            },
            answer.retry_after,
        ),
        Verdict::Unavailable(answer) => {
            Classified::transient(unavailable(error), answer.retry_after)
        }
        Verdict::Unreachable => Classified::transient(unavailable(error), None),
        Verdict::Unreadable => Classified::fatal(unavailable(error)),
        Verdict::Sdk => {
            // The SDK's text is for the operator's log, not for kube-apiserver.
            tracing::warn!(operation, error = %SdkError(error), "the Azure SDK refused a call");
            Classified::fatal(ProviderError::Misconfigured {
                reason: format!(
                    "{operation} failed in the Azure SDK before an answer from the vault \
                     (the plugin's log has the SDK's error)"
                ),
            })
        }
        Verdict::CredentialRefused(answer) => revoked(format!(
            "Entra ID refused the identity's credentials for {key} (HTTP {}{}); \
             check the client id, tenant and secret, certificate or federated credential",
            answer.status,
            answer.code_suffix()
        )),
        Verdict::Refused(answer) => match answer.status {
            401 => revoked(format!(
                "the vault {} refused the identity's token (HTTP 401{}) for {subject}",
                key.host(),
                answer.code_suffix()
            )),
            404 => {
                return Failure::NotFound(revoked(format!(
                    "{subject} was not found (HTTP 404{}): deleted, or never created",
                    answer.code_suffix()
                )));
            }
            _ if answer.has_code("KeyDisabled") => revoked(format!("{subject} is disabled")),
            _ if answer.has_code("KeyExpired") => revoked(format!("{subject} has expired")),
            _ if answer.has_code("KeyNotYetValid") => {
                revoked(format!("{subject} is not yet valid"))
            }
            _ if answer.has_code("KeyOperationForbidden") => revoked(format!(
                "{subject} does not permit {} (its key_ops)",
                call.permission()
            )),
            status => revoked(format!(
                "the identity may not {} {subject} (HTTP {status}{}); grant it the keys/{} \
                 permission",
                call.permission(),
                answer.code_suffix(),
                call.permission()
            )),
        },
        Verdict::Rejected(answer)
            if answer.status == 400 && matches!(call, Call::Unwrap | Call::Decrypt) =>
        {
            Classified::fatal(ProviderError::UnwrapFailed {
                version: version.unwrap_or_default().to_owned(),
            })
        }
        Verdict::Rejected(answer) => Classified::fatal(ProviderError::Misconfigured {
            reason: format!(
                "the vault {} refused {operation} with HTTP {}{}",
                key.host(),
                answer.status,
                answer.code_suffix()
            ),
        }),
    };
    Failure::Other(classified)
}

/// What `call` on `key` is, for messages: "unwrap with version … of key "kek" in host".
pub fn describe(call: Call, key: &KeyRef, version: Option<&str>) -> String {
    let what = match call {
        Call::GetKey => "read",
        Call::Wrap => "wrap with",
        Call::Unwrap => "unwrap with",
        Call::Decrypt => "decrypt with",
    };
    match version {
        Some(version) => format!("{what} version {version} of {key}"),
        None => format!("{what} the latest version of {key}"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use azure_access::errors::testing::{entra_error, error_body as body, http_error as http};
    use azure_core::error::ErrorKind;

    use super::*;

    const VERSION: &str = "0123456789abcdef0123456789abcdef";

    fn key() -> KeyRef {
        KeyRef::new("https://kv.vault.azure.net", "kek").unwrap()
    }

    fn other(failure: Failure) -> Classified<ProviderError> {
        match failure {
            Failure::Other(classified) => classified,
            Failure::NotFound(_) => panic!("not found"),
        }
    }

    #[test]
    fn every_answer_maps_to_its_variant() {
        let key = key();
        let v = Some(VERSION);
        type Expect = fn(&ProviderError) -> bool;
        let table: Vec<(AzureError, Call, bool, Expect, &str)> = vec![
            (
                http(429, &body("Throttled", None), &[]),
                Call::Unwrap,
                true,
                |e| {
                    matches!(
                        e,
                        ProviderError::Throttled {
                            retry_after: None,
                            ..
                        }
                    )
                },
                "throttled",
            ),
            (
                http(503, &body("ServiceUnavailable", None), &[]),
                Call::Wrap,
                true,
                |e| matches!(e, ProviderError::Unavailable { .. }),
                "unavailable",
            ),
            (
                http(500, "", &[]),
                Call::GetKey,
                true,
                |e| matches!(e, ProviderError::Unavailable { .. }),
                "unavailable",
            ),
            (
                http(408, "", &[]),
                Call::GetKey,
                true,
                |e| matches!(e, ProviderError::Unavailable { .. }),
                "unavailable",
            ),
            (
                http(403, &body("Forbidden", Some("KeyDisabled")), &[]),
                Call::Unwrap,
                false,
                |e| matches!(e, ProviderError::Revoked { .. }),
                "is disabled",
            ),
            (
                http(403, &body("Forbidden", Some("KeyExpired")), &[]),
                Call::Wrap,
                false,
                |e| matches!(e, ProviderError::Revoked { .. }),
                "has expired",
            ),
            (
                http(403, &body("Forbidden", Some("KeyNotYetValid")), &[]),
                Call::Wrap,
                false,
                |e| matches!(e, ProviderError::Revoked { .. }),
                "not yet valid",
            ),
            (
                http(403, &body("Forbidden", None), &[]),
                Call::Unwrap,
                false,
                |e| matches!(e, ProviderError::Revoked { .. }),
                "keys/unwrapKey permission",
            ),
            (
                http(401, &body("Unauthorized", None), &[]),
                Call::GetKey,
                false,
                |e| matches!(e, ProviderError::Revoked { .. }),
                "refused the identity's token",
            ),
            (
                http(400, &body("BadParameter", None), &[]),
                Call::Unwrap,
                false,
                |e| matches!(e, ProviderError::UnwrapFailed { version } if version == VERSION),
                "does not unwrap",
            ),
            (
                http(400, &body("BadParameter", None), &[]),
                Call::Wrap,
                false,
                |e| matches!(e, ProviderError::Misconfigured { .. }),
                "HTTP 400 BadParameter",
            ),
            (
                // An SDK refusal before any answer: its text stays out of the reason.
                AzureError::with_message(ErrorKind::Other, "sensitive free text"),
                Call::GetKey,
                false,
                |e| matches!(e, ProviderError::Misconfigured { .. }),
                "failed in the Azure SDK",
            ),
            (
                AzureError::with_message(ErrorKind::Connection, "connection refused"),
                Call::Unwrap,
                true,
                |e| matches!(e, ProviderError::Unavailable { .. }),
                "connection refused",
            ),
            (
                AzureError::with_message(ErrorKind::Io, "timed out"),
                Call::Unwrap,
                true,
                |e| matches!(e, ProviderError::Unavailable { .. }),
                "timed out",
            ),
        ];
        for (error, call, retryable, expected, text) in table {
            let classified = other(classify(error, call, &key, v));
            assert!(expected(&classified.error), "{:?}", classified.error);
            assert_eq!(classified.retryable, retryable, "{}", classified.error);
            let shown = classified.error.to_string();
            assert!(shown.contains(text), "{shown}");
            if !matches!(classified.error, ProviderError::Unavailable { .. }) {
                assert!(!shown.contains("sensitive free text"), "{shown}");
            }
        }
    }

    #[test]
    fn not_found_is_its_own_kind_and_names_the_key() {
        match classify(
            http(404, &body("KeyNotFound", None), &[]),
            Call::GetKey,
            &key(),
            None,
        ) {
            Failure::NotFound(classified) => {
                let shown = classified.error.to_string();
                assert!(
                    shown.contains("\"kek\"") && shown.contains("KeyNotFound"),
                    "{shown}"
                );
            }
            Failure::Other(other) => panic!("{:?}", other.error),
        }
    }

    #[test]
    fn a_retry_after_reaches_the_retry_loop_and_the_throttled_error() {
        let classified = other(classify(
            http(429, &body("Throttled", None), &[("retry-after", "3")]),
            Call::Unwrap,
            &key(),
            Some(VERSION),
        ));
        assert_eq!(classified.retry_after, Some(Duration::from_secs(3)));
        assert!(matches!(
            classified.error,
            ProviderError::Throttled { retry_after: Some(wait), .. } if wait == Duration::from_secs(3)
        ));
        let classified = other(classify(
            http(503, "", &[("retry-after-ms", "250")]),
            Call::Unwrap,
            &key(),
            Some(VERSION),
        ));
        assert_eq!(classified.retry_after, Some(Duration::from_millis(250)));
    }

    #[test]
    fn entra_refusals_behind_a_credential_error_are_revocations_and_outages_are_transient() {
        let classified = other(classify(entra_error(401), Call::GetKey, &key(), None));
        assert!(matches!(classified.error, ProviderError::Revoked { .. }));
        assert!(classified.error.to_string().contains("Entra ID refused"));

        let classified = other(classify(entra_error(503), Call::GetKey, &key(), None));
        assert!(classified.retryable);
        assert!(matches!(
            classified.error,
            ProviderError::Unavailable { .. }
        ));
    }
}
