//! What a failed Azure call means, in terms every caller shares: worth retrying (a transient
//! fault: 429, 408, 5xx, a dropped connection, a timeout), an authoritative refusal (401, 403,
//! 404 from the service, or Entra ID refusing the identity's credentials), or a misconfiguration
//! (any other answer, an unreadable answer, or the SDK refusing a call before sending it). What
//! each product makes of a verdict — the KMS plugin's `ProviderError`, the CSI provider's mount
//! errors — is the product's own mapping.
//!
//! A verdict is built from the HTTP status, the service's error codes (outer and inner, at most
//! 64 printable bytes each) and Retry-After — never from the service's free-text message, which
//! stays in the SDK error (kept whole in [`SdkError`] for logs) — so nothing a remote party wrote
//! needs to reach a caller. Tokens never appear: the SDK's errors carry none.

use std::error::Error as _;
use std::fmt;
use std::time::Duration;

use azure_core::error::{Error as AzureError, ErrorKind};
use azure_core::http::RawResponse;

use crate::retry::cap_retry_after;

/// The three things a failure can mean.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Trying again later may succeed; a cache of earlier answers stays valid.
    Transient,
    /// The service (or Entra ID) answered that this may not be done: the object is disabled,
    /// deleted or missing, or the identity may not use it.
    Refusal,
    /// The request, the endpoint or the setup is wrong and needs an operator.
    Misconfiguration,
}

/// An HTTP answer found in a failure: the vault's, or Entra ID's behind a credential error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    /// The HTTP status.
    pub status: u16,
    /// The error codes, outer first (`Forbidden`, then `KeyDisabled`), printable ASCII only.
    pub codes: Vec<String>,
    /// How long the service asked the caller to wait, capped at
    /// [`MAX_RETRY_AFTER`](crate::retry::MAX_RETRY_AFTER).
    pub retry_after: Option<Duration>,
    /// Whether Entra ID gave it (the failure was the credential's), not the service called.
    pub from_entra: bool,
}

impl Answer {
    /// Whether the answer carries error code `wanted` (ignoring case).
    pub fn has_code(&self, wanted: &str) -> bool {
        self.codes
            .iter()
            .any(|code| code.eq_ignore_ascii_case(wanted))
    }

    /// The codes for a message: `" Forbidden/KeyDisabled"`, or nothing when there are none.
    pub fn code_suffix(&self) -> String {
        if self.codes.is_empty() {
            String::new()
        } else {
            format!(" {}", self.codes.join("/"))
        }
    }
}

/// What a failure was.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// 429: throttled (transient).
    Throttled(Answer),
    /// 408 or a 5xx, from the service or from Entra ID (transient).
    Unavailable(Answer),
    /// No answer: a refused or dropped connection, a timeout, an I/O error, or a credential
    /// that could not get a token without an HTTP refusal (transient).
    Unreachable,
    /// Entra ID refused the identity's credentials (a refusal).
    CredentialRefused(Answer),
    /// The service answered 401, 403 or 404 (a refusal).
    Refused(Answer),
    /// Any other answer, such as a 400 or a 409: the request was wrong (a misconfiguration,
    /// unless the caller knows better).
    Rejected(Answer),
    /// An answer came that could not be read (a misconfiguration: a proxy or a wrong endpoint).
    Unreadable,
    /// The SDK refused the call before sending it (a misconfiguration).
    Sdk,
}

impl Verdict {
    /// Transient, refusal or misconfiguration.
    pub fn class(&self) -> Class {
        match self {
            Self::Throttled(_) | Self::Unavailable(_) | Self::Unreachable => Class::Transient,
            Self::CredentialRefused(_) | Self::Refused(_) => Class::Refusal,
            Self::Rejected(_) | Self::Unreadable | Self::Sdk => Class::Misconfiguration,
        }
    }

    /// Whether trying again may help.
    pub fn is_transient(&self) -> bool {
        self.class() == Class::Transient
    }

    /// The HTTP answer, if there was one.
    pub fn answer(&self) -> Option<&Answer> {
        match self {
            Self::Throttled(answer)
            | Self::Unavailable(answer)
            | Self::CredentialRefused(answer)
            | Self::Refused(answer)
            | Self::Rejected(answer) => Some(answer),
            Self::Unreachable | Self::Unreadable | Self::Sdk => None,
        }
    }

    /// The Retry-After of a transient answer.
    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::Throttled(answer) | Self::Unavailable(answer) => answer.retry_after,
            _ => None,
        }
    }
}

/// Classifies `error`, an Azure SDK error from a service call or a token request.
pub fn classify(error: &AzureError) -> Verdict {
    let Some(mut answer) = http_answer(error) else {
        return match error.kind() {
            ErrorKind::Connection | ErrorKind::Io | ErrorKind::Credential => Verdict::Unreachable,
            ErrorKind::DataConversion => Verdict::Unreadable,
            _ => Verdict::Sdk,
        };
    };
    answer.from_entra = matches!(error.kind(), ErrorKind::Credential);
    match answer.status {
        429 => Verdict::Throttled(answer),
        408 | 500.. => Verdict::Unavailable(answer),
        _ if answer.from_entra => Verdict::CredentialRefused(answer),
        401 | 403 | 404 => Verdict::Refused(answer),
        _ => Verdict::Rejected(answer),
    }
}

/// The SDK's error with its whole chain in `Display`, kept as the source of a caller's error.
pub struct SdkError(pub AzureError);

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

/// The first HTTP answer in `error`'s chain (the vault's, or Entra's behind a credential
/// error): its status, its error codes and its Retry-After. `from_entra` is left false.
fn http_answer(error: &AzureError) -> Option<Answer> {
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
            return Some(Answer {
                status: u16::from(*status),
                codes,
                retry_after,
                from_entra: false,
            });
        }
        current = candidate.source();
    }
    None
}

/// The `error.code` and nested `innererror.code`s of a Key Vault error body.
fn inner_codes(raw: &RawResponse) -> Vec<String> {
    let Ok(body) = azure_core::json::from_json::<_, azure_core::Value>(raw.body().as_ref()) else {
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

/// Retry-After as seconds (or `retry-after-ms` / `x-ms-retry-after-ms` in milliseconds), at most
/// [`MAX_RETRY_AFTER`](crate::retry::MAX_RETRY_AFTER). An HTTP-date is not honoured: Key Vault
/// does not send one.
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

/// Builders of SDK errors as the SDK makes them from an HTTP answer, for tests here and in the
/// products' mappings.
#[doc(hidden)]
pub mod testing {
    use azure_core::error::{Error as AzureError, ErrorKind};
    use azure_core::http::headers::Headers;
    use azure_core::http::{RawResponse, StatusCode};

    /// An HTTP error answer with `body` and `headers`, its outer error code read from the body,
    /// and a free-text message that must never reach a caller.
    pub fn http_error(status: u16, body: &str, headers: &[(&'static str, &str)]) -> AzureError {
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

    /// A credential's failure behind which Entra ID answered `status` (401: `invalid_client`).
    pub fn entra_error(status: u16) -> AzureError {
        let body = if status == 401 {
            r#"{"error":"invalid_client","error_codes":[7000215]}"#
        } else {
            ""
        };
        AzureError::with_error(
            ErrorKind::Credential,
            http_error(status, body, &[]),
            "ClientSecretCredential authentication failed",
        )
    }

    /// A Key Vault error body with `code` and, if given, an inner code.
    pub fn error_body(code: &str, inner: Option<&str>) -> String {
        match inner {
            Some(inner) => format!(
                r#"{{"error":{{"code":"{code}","message":"m","innererror":{{"code":"{inner}"}}}}}}"#
            ),
            None => format!(r#"{{"error":{{"code":"{code}","message":"m"}}}}"#),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{entra_error, error_body as body, http_error as http};
    use super::*;
    use crate::retry::MAX_RETRY_AFTER;

    #[test]
    fn every_answer_has_its_verdict_and_class() {
        type Expect = fn(&Verdict) -> bool;
        let table: Vec<(AzureError, Expect, Class)> = vec![
            (
                http(429, &body("Throttled", None), &[]),
                |v| matches!(v, Verdict::Throttled(_)),
                Class::Transient,
            ),
            (
                http(503, &body("ServiceUnavailable", None), &[]),
                |v| matches!(v, Verdict::Unavailable(_)),
                Class::Transient,
            ),
            (
                http(408, "", &[]),
                |v| matches!(v, Verdict::Unavailable(_)),
                Class::Transient,
            ),
            (
                http(403, &body("Forbidden", Some("KeyDisabled")), &[]),
                |v| matches!(v, Verdict::Refused(a) if a.has_code("keydisabled")),
                Class::Refusal,
            ),
            (
                http(404, &body("SecretNotFound", None), &[]),
                |v| matches!(v, Verdict::Refused(a) if a.status == 404),
                Class::Refusal,
            ),
            (
                http(401, &body("Unauthorized", None), &[]),
                |v| matches!(v, Verdict::Refused(_)),
                Class::Refusal,
            ),
            (
                http(400, &body("BadParameter", None), &[]),
                |v| matches!(v, Verdict::Rejected(a) if a.code_suffix() == " BadParameter"),
                Class::Misconfiguration,
            ),
            (
                AzureError::with_message(ErrorKind::Other, "sensitive free text"),
                |v| matches!(v, Verdict::Sdk),
                Class::Misconfiguration,
            ),
            (
                AzureError::with_message(ErrorKind::DataConversion, "not JSON"),
                |v| matches!(v, Verdict::Unreadable),
                Class::Misconfiguration,
            ),
            (
                AzureError::with_message(ErrorKind::Connection, "connection refused"),
                |v| matches!(v, Verdict::Unreachable),
                Class::Transient,
            ),
            (
                AzureError::with_message(ErrorKind::Io, "timed out"),
                |v| matches!(v, Verdict::Unreachable),
                Class::Transient,
            ),
        ];
        for (error, expected, class) in table {
            let verdict = classify(&error);
            assert!(expected(&verdict), "{error}: {verdict:?}");
            assert_eq!(verdict.class(), class, "{verdict:?}");
            assert_eq!(verdict.is_transient(), class == Class::Transient);
            if let Some(answer) = verdict.answer() {
                assert!(
                    answer.codes.iter().all(|code| !code.contains("sensitive")),
                    "{answer:?}"
                );
            }
        }
        let inner = classify(&http(403, &body("Forbidden", Some("KeyDisabled")), &[]));
        assert_eq!(
            inner.answer().map(Answer::code_suffix).as_deref(),
            Some(" Forbidden/KeyDisabled")
        );
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
    fn retry_after_is_read_in_seconds_or_milliseconds() {
        let verdict = classify(&http(
            429,
            &body("Throttled", None),
            &[("retry-after", "3")],
        ));
        assert_eq!(verdict.retry_after(), Some(Duration::from_secs(3)));
        let verdict = classify(&http(503, "", &[("retry-after-ms", "250")]));
        assert_eq!(verdict.retry_after(), Some(Duration::from_millis(250)));
        let verdict = classify(&http(503, "", &[("x-ms-retry-after-ms", "40")]));
        assert_eq!(verdict.retry_after(), Some(Duration::from_millis(40)));
        assert_eq!(classify(&http(429, "", &[])).retry_after(), None);
    }

    /// Regression: a Retry-After of 10^14 seconds (or one past i64 seconds) was kept as it
    /// came, and one too large for the clock panicked when the retry loop added it to now.
    #[test]
    fn a_huge_retry_after_is_capped() {
        for huge in ["99999999999999", "18446744073709551615"] {
            for header in ["retry-after", "retry-after-ms"] {
                let verdict = classify(&http(429, &body("Throttled", None), &[(header, huge)]));
                assert_eq!(
                    verdict.retry_after(),
                    Some(MAX_RETRY_AFTER),
                    "{header}: {huge}"
                );
            }
        }
    }

    #[test]
    fn entra_refusals_behind_a_credential_error_are_refusals_and_outages_are_transient() {
        let verdict = classify(&entra_error(401));
        assert!(
            matches!(&verdict, Verdict::CredentialRefused(a) if a.from_entra && a.status == 401)
        );
        assert_eq!(verdict.class(), Class::Refusal);

        let verdict = classify(&entra_error(503));
        assert!(matches!(&verdict, Verdict::Unavailable(a) if a.from_entra));
        assert!(verdict.is_transient());
    }
}
