//! How an Azure SDK error becomes a [`ProviderError`]: which answers are authoritative (the key
//! is disabled, deleted, expired, or the identity may not use it → `Revoked`), which are
//! transient (429 → `Throttled`, 408/5xx/timeouts/connection failures → `Unavailable`, both
//! retried within the deadline), which mean the wrapped KEK is bad (400 on unwrap →
//! `UnwrapFailed`), and which need an operator (`Misconfigured`).
//!
//! Reasons are composed here from the HTTP status and the service's error codes — never from the
//! service's free-text message, which stays in the kept source error for logs only — so nothing a
//! remote party wrote reaches kube-apiserver. Tokens never appear: the SDK's errors carry none.

use std::error::Error as _;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use azure_core::error::{Error as AzureError, ErrorKind};
use azure_core::http::{RawResponse, StatusCode};

use super::key_id::KeyRef;
use super::retry::{Classified, cap_retry_after};
use crate::provider::ProviderError;

/// What a remote call was doing, for error messages and the choice of variant.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Call {
    /// Reading the key (refresh, start-up validation).
    GetKey,
    /// Wrapping a new local KEK.
    Wrap,
    /// Unwrapping a KEK read from etcd.
    Unwrap,
}

impl Call {
    fn permission(self) -> &'static str {
        match self {
            Self::GetKey => "get",
            Self::Wrap => "wrapKey",
            Self::Unwrap => "unwrapKey",
        }
    }
}

/// A failed call, classified.
#[derive(Debug)]
pub enum Failure {
    /// The vault has no such key, or no such version of it (404).
    NotFound(Classified),
    /// Anything else.
    Other(Classified),
}

impl Failure {
    /// The classified failure, whatever its kind.
    pub fn into_classified(self) -> Classified {
        match self {
            Self::NotFound(classified) | Self::Other(classified) => classified,
        }
    }
}

/// The SDK's error, kept as the source of `Unavailable` with its whole chain in `Display`.
pub struct SdkError(AzureError);

impl fmt::Debug for SdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The SDK's own Debug carries a captured backtrace; its message chain is what helps.
        write!(f, "SdkError({self})")
    }
}

impl fmt::Display for SdkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)?;
        let mut source = self.0.source();
        while let Some(cause) = source {
            write!(f, ": {cause}")?;
            source = cause.source();
        }
        Ok(())
    }
}

impl std::error::Error for SdkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.0)
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
    let (status, codes, retry_after) = match http_failure(&error) {
        Some(found) => found,
        None => {
            return Failure::Other(match error.kind() {
                ErrorKind::Connection | ErrorKind::Io => {
                    Classified::transient(unavailable(error), None)
                }
                ErrorKind::Credential => Classified::transient(unavailable(error), None),
                ErrorKind::DataConversion => Classified::fatal(unavailable(error)),
                _ => {
                    // The SDK's text is for the operator's log, not for kube-apiserver.
                    tracing::warn!(operation, error = %SdkError(error), "the Azure SDK refused a call");
                    Classified::fatal(ProviderError::Misconfigured {
                        reason: format!(
                            "{operation} failed in the Azure SDK before an answer from the vault \
                             (the plugin's log has the SDK's error)"
                        ),
                    })
                }
            });
        }
    };
    let from_entra = matches!(error.kind(), ErrorKind::Credential);
    let code = codes.join("/");
    let status_u16 = u16::from(status);
    if status_u16 == 429 {
        return Failure::Other(Classified::transient(
            ProviderError::Throttled {
                operation,
                retry_after,
            },
            retry_after,
        ));
    }
    if status_u16 == 408 || status_u16 >= 500 {
        return Failure::Other(Classified::transient(unavailable(error), retry_after));
    }
    if from_entra {
        return Failure::Other(Classified::fatal(ProviderError::Revoked {
            reason: format!(
                "Entra ID refused the identity's credentials for {key} (HTTP {status_u16}{}); \
                 check the client id, tenant and secret, certificate or federated credential",
                error_codes(&code)
            ),
        }));
    }
    let has = |wanted: &str| codes.iter().any(|code| code.eq_ignore_ascii_case(wanted));
    let revoked =
        |reason: String| Failure::Other(Classified::fatal(ProviderError::Revoked { reason }));
    match status_u16 {
        401 => revoked(format!(
            "the vault {} refused the identity's token (HTTP 401{}) for {subject}",
            key.host(),
            error_codes(&code)
        )),
        403 if has("KeyDisabled") => revoked(format!("{subject} is disabled")),
        403 if has("KeyExpired") => revoked(format!("{subject} has expired")),
        403 if has("KeyNotYetValid") => revoked(format!("{subject} is not yet valid")),
        403 if has("KeyOperationForbidden") => revoked(format!(
            "{subject} does not permit {} (its key_ops)",
            call.permission()
        )),
        403 => revoked(format!(
            "the identity may not {} {subject} (HTTP 403{}); grant it the keys/{} permission",
            call.permission(),
            error_codes(&code),
            call.permission()
        )),
        404 => Failure::NotFound(Classified::fatal(ProviderError::Revoked {
            reason: format!(
                "{subject} was not found (HTTP 404{}): deleted, or never created",
                error_codes(&code)
            ),
        })),
        400 if call == Call::Unwrap => {
            Failure::Other(Classified::fatal(ProviderError::UnwrapFailed {
                version: version.unwrap_or_default().to_owned(),
            }))
        }
        _ => Failure::Other(Classified::fatal(ProviderError::Misconfigured {
            reason: format!(
                "the vault {} refused {operation} with HTTP {status_u16}{}",
                key.host(),
                error_codes(&code)
            ),
        })),
    }
}

/// What `call` on `key` is, for messages: "unwrap with version … of key "kek" in host".
pub fn describe(call: Call, key: &KeyRef, version: Option<&str>) -> String {
    let what = match call {
        Call::GetKey => "read",
        Call::Wrap => "wrap with",
        Call::Unwrap => "unwrap with",
    };
    match version {
        Some(version) => format!("{what} version {version} of {key}"),
        None => format!("{what} the latest version of {key}"),
    }
}

fn error_codes(code: &str) -> String {
    if code.is_empty() {
        String::new()
    } else {
        format!(" {code}")
    }
}

/// The first HTTP answer in `error`'s chain (the vault's, or Entra's behind a credential
/// error): its status, its error codes (outer and inner, at most 64 printable bytes each) and
/// its Retry-After.
fn http_failure(error: &AzureError) -> Option<(StatusCode, Vec<String>, Option<Duration>)> {
    let mut current: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(candidate) = current {
        if let Some(azure) = candidate.downcast_ref::<AzureError>()
            && let ErrorKind::HttpResponse {
                status,
                error_code,
                raw_response,
            } = azure.kind()
        {
            let mut codes: Vec<String> = error_code.iter().cloned().collect();
            let mut retry_after = None;
            if let Some(raw) = raw_response {
                codes.extend(inner_codes(raw));
                retry_after = parse_retry_after(raw);
            }
            codes.retain(|code| {
                !code.is_empty()
                    && code.len() <= 64
                    && code.bytes().all(|b| b.is_ascii_alphanumeric() || b == b',')
            });
            codes.dedup();
            return Some((*status, codes, retry_after));
        }
        current = candidate.source();
    }
    None
}

/// The `error.code` and nested `innererror.code`s of a Key Vault error body.
fn inner_codes(raw: &RawResponse) -> Vec<String> {
    let Ok(body) = serde_json_value(raw.body().as_ref()) else {
        return Vec::new();
    };
    let mut codes = Vec::new();
    let mut node = body.get("error");
    while let Some(object) = node {
        if let Some(code) = object.get("code").and_then(|code| code.as_str()) {
            codes.push(code.to_owned());
        }
        node = object.get("innererror");
    }
    codes
}

fn serde_json_value(bytes: &[u8]) -> Result<azure_core::Value, AzureError> {
    azure_core::json::from_json(bytes)
}

/// Retry-After as seconds (or `retry-after-ms` / `x-ms-retry-after-ms` in milliseconds), at most
/// [`MAX_RETRY_AFTER`](super::retry::MAX_RETRY_AFTER). An HTTP-date is not honoured: Key Vault does not send one.
fn parse_retry_after(raw: &RawResponse) -> Option<Duration> {
    parse_retry_after_uncapped(raw).map(cap_retry_after)
}

fn parse_retry_after_uncapped(raw: &RawResponse) -> Option<Duration> {
    let headers = raw.headers();
    for name in ["retry-after-ms", "x-ms-retry-after-ms"] {
        if let Some(ms) = headers
            .get_optional_str(&azure_core::http::headers::HeaderName::from_static(name))
            .and_then(|value| value.trim().parse::<u64>().ok())
        {
            return Some(Duration::from_millis(ms));
        }
    }
    headers
        .get_optional_str(&azure_core::http::headers::RETRY_AFTER)
        .and_then(|value| value.trim().parse::<u64>().ok())
        .map(Duration::from_secs)
}

#[cfg(test)]
mod tests {
    use azure_core::http::headers::Headers;

    use super::*;

    use crate::provider::azure::retry::MAX_RETRY_AFTER;

    const VERSION: &str = "0123456789abcdef0123456789abcdef";

    fn key() -> KeyRef {
        KeyRef::new("https://kv.vault.azure.net", "kek").unwrap()
    }

    fn http(status: u16, body: &str, headers: &[(&'static str, &str)]) -> AzureError {
        let mut map = Headers::new();
        for (name, value) in headers {
            map.insert(*name, value.to_string());
        }
        let raw = RawResponse::from_bytes(StatusCode::from(status), map, body.to_owned());
        let code = azure_core::json::from_json::<_, azure_core::Value>(body.as_bytes())
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
        AzureError::with_message(
            ErrorKind::HttpResponse {
                status: StatusCode::from(status),
                error_code: code,
                raw_response: Some(Box::new(raw)),
            },
            "service said: sensitive free text",
        )
    }

    fn body(code: &str, inner: Option<&str>) -> String {
        match inner {
            Some(inner) => format!(
                r#"{{"error":{{"code":"{code}","message":"m","innererror":{{"code":"{inner}"}}}}}}"#
            ),
            None => format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#),
        }
    }

    fn other(failure: Failure) -> Classified {
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
    fn the_sdk_errors_whole_chain_is_kept_for_logs() {
        let error = AzureError::with_error(
            ErrorKind::Credential,
            AzureError::with_error(
                ErrorKind::Io,
                std::io::Error::other("connection refused"),
                "failed to execute `reqwest` request",
            ),
            "ManagedIdentityCredential authentication failed",
        );
        let shown = SdkError(error).to_string();
        assert!(shown.contains("connection refused"), "{shown}");
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
    fn retry_after_is_read_in_seconds_or_milliseconds() {
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

    /// Regression: a Retry-After of 10^14 seconds (or one past i64 seconds) was kept as it
    /// came, and one too large for the clock panicked when the retry loop added it to now.
    #[test]
    fn a_huge_retry_after_is_capped() {
        for huge in ["99999999999999", "18446744073709551615"] {
            for header in ["retry-after", "retry-after-ms"] {
                let classified = other(classify(
                    http(429, &body("Throttled", None), &[(header, huge)]),
                    Call::Unwrap,
                    &key(),
                    Some(VERSION),
                ));
                assert_eq!(
                    classified.retry_after,
                    Some(MAX_RETRY_AFTER),
                    "{header}: {huge}"
                );
                assert!(matches!(
                    classified.error,
                    ProviderError::Throttled { retry_after: Some(wait), .. } if wait == MAX_RETRY_AFTER
                ));
            }
        }
    }

    #[test]
    fn entra_refusals_behind_a_credential_error_are_revocations_and_outages_are_transient() {
        let refused = AzureError::with_error(
            ErrorKind::Credential,
            http(
                401,
                r#"{"error":"invalid_client","error_codes":[7000215]}"#,
                &[],
            ),
            "ClientSecretCredential authentication failed",
        );
        let classified = other(classify(refused, Call::GetKey, &key(), None));
        assert!(matches!(classified.error, ProviderError::Revoked { .. }));
        assert!(classified.error.to_string().contains("Entra ID refused"));

        let down = AzureError::with_error(
            ErrorKind::Credential,
            http(503, "", &[]),
            "ClientSecretCredential authentication failed",
        );
        let classified = other(classify(down, Call::GetKey, &key(), None));
        assert!(classified.retryable);
        assert!(matches!(
            classified.error,
            ProviderError::Unavailable { .. }
        ));
    }
}
