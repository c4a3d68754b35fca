//! STS, API version 2015-04-01: `AssumeRoleWithOIDC` (unsigned; the OIDC token's `iss`, `aud`,
//! `sub` and `exp` are checked against the registered provider and the role's trust policy),
//! `AssumeRole` (signed by an AccessKey or STS credentials whose account the role trusts and
//! whose grants name the role) and `GetCallerIdentity`. Issued credentials are accepted by
//! KMS and OOS until they expire.
//!
//! The OIDC token's signature is NOT verified: the emulator holds no key of the external
//! issuer (a Kubernetes cluster's service-account signer), so any token with the right claims
//! passes. Session policies (`Policy`) are accepted but do not narrow the grants.

use base64::Engine;
use http::StatusCode;
use serde_json::{Value, json};

use crate::auth::ApiRequest;
use crate::clock;
use crate::error::{ApiError, EmulatorError};
use crate::identity::{self, Caller, Directory, IssuedCredentials, Role, glob_match};
use crate::state::Shared;

fn error(status: StatusCode, code: &str, message: &str) -> ApiError {
    ApiError::new(status, code, message)
}

/// 400 `Throttling.User`: the gateway's throttling answer for OOS and STS.
pub fn throttled() -> ApiError {
    error(
        StatusCode::BAD_REQUEST,
        "Throttling.User",
        "Request was denied due to user flow control.",
    )
}

fn invalid_token(message: &str) -> ApiError {
    error(
        StatusCode::UNAUTHORIZED,
        "AuthenticationFail.OIDCToken.Invalid",
        message,
    )
}

/// The claims the emulator reads from an OIDC token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OidcClaims {
    /// `iss`.
    pub issuer: String,
    /// `sub`.
    pub subject: String,
    /// `aud` (a string or a list).
    pub audiences: Vec<String>,
    /// `exp`.
    pub expires: i64,
    /// `iat`, when present.
    pub issued_at: Option<i64>,
}

/// Reads the claims of a JWT without verifying its signature. Surrounding whitespace (a token
/// file's trailing newline) is ignored.
pub fn read_claims(token: &str) -> Result<OidcClaims, ApiError> {
    let token = token.trim();
    if token.is_empty() {
        return Err(invalid_token("The OIDCToken can not empty."));
    }
    let parts: Vec<&str> = token.split('.').collect();
    if parts.len() != 3 {
        return Err(invalid_token(
            "The number of Jwt field should be divided into 3 parts with '.' .",
        ));
    }
    let payload = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(parts[1].trim_end_matches('='))
        .map_err(|_| invalid_token("Cannot decode base64 encoded response(format invalided)."))?;
    let claims: Value = serde_json::from_slice(&payload)
        .map_err(|_| invalid_token("The Jwt content is invalid that cannot be recognized."))?;
    let text = |name: &str| claims.get(name).and_then(Value::as_str).map(str::to_owned);
    let audiences = match claims.get("aud") {
        Some(Value::String(aud)) => vec![aud.clone()],
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|a| a.as_str().map(str::to_owned))
            .collect(),
        _ => Vec::new(),
    };
    let (Some(issuer), Some(subject), Some(expires)) = (
        text("iss"),
        text("sub"),
        claims.get("exp").and_then(Value::as_i64),
    ) else {
        return Err(invalid_token(
            "The Jwt content is invalid that cannot be recognized.",
        ));
    };
    Ok(OidcClaims {
        issuer,
        subject,
        audiences,
        expires,
        issued_at: claims.get("iat").and_then(Value::as_i64),
    })
}

/// Mints a JWT-shaped token with these claims and a random signature (for tests: the
/// emulator's STS reads claims only).
pub fn mint_token(
    issuer: &str,
    subject: &str,
    audience: &str,
    lifetime_seconds: i64,
    now: i64,
) -> Result<String, EmulatorError> {
    let b64 = |value: &Value| {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(value.to_string().as_bytes())
    };
    let header = json!({ "alg": "RS256", "kid": "alibaba-emulator", "typ": "JWT" });
    let claims = json!({
        "iss": issuer,
        "sub": subject,
        "aud": [audience],
        "iat": now,
        "nbf": now,
        "exp": now + lifetime_seconds,
    });
    let signature =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(clock::random_bytes::<256>()?);
    Ok(format!("{}.{}.{signature}", b64(&header), b64(&claims)))
}

fn required<'a>(request: &'a ApiRequest, name: &str) -> Result<&'a str, ApiError> {
    request
        .param(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| ApiError::missing_parameter(name))
}

fn find_role<'a>(directory: &'a Directory, arn: &str) -> Result<&'a Role, ApiError> {
    let (account, name) = identity::parse_ram_arn(arn, "role").ok_or_else(|| {
        error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter.RoleArn",
            "The parameter RoleArn is wrongly formed.",
        )
    })?;
    directory.role(account, name).ok_or_else(|| {
        error(
            StatusCode::NOT_FOUND,
            "EntityNotExist.Role",
            "The role not exists.",
        )
    })
}

fn duration(request: &ApiRequest, role: &Role) -> Result<u64, ApiError> {
    let seconds = match request.param("DurationSeconds").filter(|v| !v.is_empty()) {
        None => 3600.min(role.max_session_seconds),
        Some(text) => text.parse::<u64>().map_err(|_| {
            error(
                StatusCode::BAD_REQUEST,
                "InvalidParameter.DurationSeconds",
                "The parameter DurationSeconds is wrongly formed.",
            )
        })?,
    };
    if !(900..=role.max_session_seconds).contains(&seconds) {
        return Err(error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter.DurationSeconds",
            &format!(
                "The Min/Max value of DurationSeconds is 15min/{}s.",
                role.max_session_seconds
            ),
        ));
    }
    Ok(seconds)
}

fn session_name(request: &ApiRequest, fallback: Option<&str>) -> Result<String, ApiError> {
    let name = match (
        request.param("RoleSessionName").filter(|v| !v.is_empty()),
        fallback,
    ) {
        (Some(name), _) => name.to_owned(),
        (None, Some(fallback)) => fallback.to_owned(),
        (None, None) => return Err(ApiError::missing_parameter("RoleSessionName")),
    };
    let valid = (2..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'@' | b'-'));
    if valid {
        Ok(name)
    } else {
        Err(error(
            StatusCode::BAD_REQUEST,
            "InvalidParameter.RoleSessionName",
            "The parameter RoleSessionName is wrongly formed.",
        ))
    }
}

fn credentials_body(role: &Role, session: &str, issued: &IssuedCredentials) -> Value {
    json!({
        "Credentials": {
            "AccessKeyId": issued.access_key_id,
            "AccessKeySecret": issued.access_key_secret.as_str(),
            "SecurityToken": issued.security_token.as_str(),
            "Expiration": clock::format_utc(issued.expiration),
        },
        "AssumedRoleUser": {
            "Arn": format!("{}/{session}", role.arn()),
            "AssumedRoleId": format!("{}:{session}", role.role_id),
        },
    })
}

fn issue(
    directory: &mut Directory,
    role: &Role,
    session: &str,
    seconds: u64,
    now: i64,
) -> Result<IssuedCredentials, ApiError> {
    directory
        .issue(&role.account_id, &role.name, session, seconds, now)
        .map_err(|_| ApiError::internal_failure())
}

/// `AssumeRoleWithOIDC`.
pub fn assume_role_with_oidc(
    shared: &Shared,
    request: &ApiRequest,
    now: i64,
) -> Result<Value, ApiError> {
    let role_arn = required(request, "RoleArn")?;
    let provider_arn = required(request, "OIDCProviderArn")?;
    let token = request.param("OIDCToken").unwrap_or_default();
    let claims = read_claims(token)?;
    let mut directory = shared.directory();
    let provider = directory.provider(provider_arn).cloned().ok_or_else(|| {
        error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFail.NoPermission",
            "No such OIDC Provider registered.",
        )
    })?;
    if claims.issuer.trim_end_matches('/') != provider.issuer.trim_end_matches('/') {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFail.OIDCToken.IssuerNotMatch",
            "Invalid issuer.",
        ));
    }
    if !claims
        .audiences
        .iter()
        .any(|aud| provider.client_ids.contains(aud))
    {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFail.OIDCToken.AudienceNotMatch",
            "Invalid audience.",
        ));
    }
    if claims.expires <= now {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFail.OIDCToken.Expired",
            "This JsonWebToken is expired.",
        ));
    }
    let role = find_role(&directory, role_arn)?.clone();
    let trusted = role.oidc.iter().any(|trust| {
        trust.provider_arn == provider.arn
            && (trust.subjects.is_empty()
                || trust
                    .subjects
                    .iter()
                    .any(|s| glob_match(s, &claims.subject)))
    });
    if !trusted {
        return Err(error(
            StatusCode::UNAUTHORIZED,
            "AuthenticationFail.NoPermission",
            "There is no permission",
        ));
    }
    let seconds = duration(request, &role)?;
    let session = session_name(request, None)?;
    let issued = issue(&mut directory, &role, &session, seconds, now)?;
    let mut body = credentials_body(&role, &session, &issued);
    body["OIDCTokenInfo"] = json!({
        "Subject": claims.subject,
        "Issuer": claims.issuer,
        "ClientIds": claims.audiences.join(","),
        "ExpirationTime": clock::format_utc(claims.expires),
        "IssuanceTime": claims.issued_at.map(clock::format_utc),
    });
    Ok(body)
}

/// `AssumeRole`.
pub fn assume_role(
    shared: &Shared,
    caller: &Caller,
    request: &ApiRequest,
    now: i64,
) -> Result<Value, ApiError> {
    let role_arn = required(request, "RoleArn")?;
    let session = session_name(request, None)?;
    let mut directory = shared.directory();
    let role = find_role(&directory, role_arn)?.clone();
    let granted = caller
        .grants
        .roles
        .iter()
        .any(|pattern| glob_match(pattern, &role.arn()));
    if !granted || !role.trusted_accounts.contains(&caller.account_id) {
        return Err(error(
            StatusCode::FORBIDDEN,
            "NoPermission",
            "You are not authorized to do this action. You should be authorized by RAM.",
        ));
    }
    let seconds = duration(request, &role)?;
    let issued = issue(&mut directory, &role, &session, seconds, now)?;
    Ok(credentials_body(&role, &session, &issued))
}

/// `GetCallerIdentity`.
pub fn get_caller_identity(caller: &Caller) -> Value {
    json!({
        "AccountId": caller.account_id,
        "Arn": caller.arn,
        "IdentityType": caller.identity_type,
        "AccessKeyId": caller.access_key_id,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minted_tokens_read_back() {
        let token = mint_token(
            "https://issuer",
            "system:serviceaccount:ns:sa",
            "sts.aliyuncs.com",
            600,
            1000,
        )
        .unwrap();
        let claims = read_claims(&format!("{token}\n")).unwrap();
        assert_eq!(claims.issuer, "https://issuer");
        assert_eq!(claims.subject, "system:serviceaccount:ns:sa");
        assert_eq!(claims.audiences, ["sts.aliyuncs.com"]);
        assert_eq!(claims.expires, 1600);
        assert_eq!(claims.issued_at, Some(1000));
    }

    #[test]
    fn malformed_tokens_are_refused() {
        for token in ["", "a.b", "a.!!!.c", "a.e30.c"] {
            let error = read_claims(token).unwrap_err();
            assert_eq!(
                error.code(),
                "AuthenticationFail.OIDCToken.Invalid",
                "{token}"
            );
            assert_eq!(error.status(), StatusCode::UNAUTHORIZED);
        }
    }
}
