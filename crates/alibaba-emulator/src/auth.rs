//! Request authentication as Alibaba Cloud's API gateway does it, before any product code runs:
//! an `Authorization: ACS3-HMAC-SHA256 …` header is verified over every header it names (the
//! common `x-acs-*` headers and `host` must be among them, and `x-acs-security-token` when
//! sent), the body hash and the query; otherwise the RPC parameters `AccessKeyId`,
//! `SignatureMethod=HMAC-SHA1`, `SignatureVersion=1.0`, `Timestamp`, `SignatureNonce` and
//! `Signature` are verified over every query and form parameter. Both refuse timestamps more
//! than 15 minutes off and replayed nonces; STS AccessKeys need their matching, unexpired
//! security token.
//!
//! The order of checks follows the gateway's error precedence as far as it is documented;
//! a nonce is only recorded once the signature is good, so a forged request cannot burn it.

use bytes::Bytes;
use http::HeaderMap;

use crate::clock;
use crate::error::ApiError;
use crate::identity::{Caller, Directory, Signer};
use crate::sign;

/// An API request with its body read: what signatures cover.
#[derive(Debug, Clone)]
pub struct ApiRequest {
    /// The HTTP method.
    pub method: String,
    /// The path.
    pub path: String,
    /// Decoded query parameters, in order.
    pub query: Vec<(String, String)>,
    /// Decoded `application/x-www-form-urlencoded` body parameters.
    pub form: Vec<(String, String)>,
    /// Headers.
    pub headers: HeaderMap,
    /// The raw body.
    pub body: Bytes,
    /// The Host header.
    pub host: String,
}

impl ApiRequest {
    /// A parameter from the query, else the form body (names are case-sensitive, as the API's).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .chain(self.form.iter())
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The action: `x-acs-action`, else the `Action` parameter.
    pub fn action(&self) -> Option<&str> {
        self.header("x-acs-action").or_else(|| self.param("Action"))
    }

    /// The API version: `x-acs-version`, else the `Version` parameter.
    pub fn version(&self) -> Option<&str> {
        self.header("x-acs-version")
            .or_else(|| self.param("Version"))
    }

    fn all_params(&self) -> Vec<(String, String)> {
        self.query.iter().chain(self.form.iter()).cloned().collect()
    }
}

/// Headers that must be signed whenever they are sent.
const MUST_SIGN: &[&str] = &[
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
    "x-acs-security-token",
];

/// Headers an ACS3 request must carry.
const REQUIRED: &[&str] = &[
    "host",
    "x-acs-action",
    "x-acs-version",
    "x-acs-date",
    "x-acs-signature-nonce",
    "x-acs-content-sha256",
];

/// Verifies the request's signature and returns the caller.
pub fn authenticate(
    directory: &mut Directory,
    request: &ApiRequest,
    now: i64,
) -> Result<Caller, ApiError> {
    match request.header("authorization") {
        Some(header) if header.trim_start().starts_with("ACS3-") => {
            acs3(directory, request, header, now)
        }
        Some(_) => Err(ApiError::incomplete_signature(
            "The Authorization header is not of the ACS3 form.",
        )),
        None if request.param("Signature").is_some() || request.param("AccessKeyId").is_some() => {
            rpc(directory, request, now)
        }
        None => Err(ApiError::incomplete_signature(
            "The request carries neither an Authorization header nor a Signature.",
        )),
    }
}

fn check_time(text: Option<&str>, now: i64) -> Result<(), ApiError> {
    let time = text
        .and_then(clock::parse_utc)
        .ok_or_else(ApiError::timestamp_format)?;
    if clock::within_tolerance(time, now) {
        Ok(())
    } else {
        Err(ApiError::timestamp_expired())
    }
}

fn acs3(
    directory: &mut Directory,
    request: &ApiRequest,
    header: &str,
    now: i64,
) -> Result<Caller, ApiError> {
    let authorization = sign::parse_acs3_authorization(header).ok_or_else(|| {
        ApiError::incomplete_signature(
            "Authorization needs Credential, SignedHeaders and Signature.",
        )
    })?;
    if authorization.algorithm != sign::ACS3_ALGORITHM {
        return Err(ApiError::invalid_signature_method());
    }
    for name in REQUIRED {
        if request.header(name).is_none() {
            return Err(ApiError::incomplete_signature(&format!(
                "The header {name} is missing."
            )));
        }
    }
    for name in MUST_SIGN {
        if request.headers.contains_key(*name)
            && !authorization.signed_headers.iter().any(|h| h == name)
        {
            return Err(ApiError::incomplete_signature(&format!(
                "The header {name} must be signed."
            )));
        }
    }
    let mut signed_headers = Vec::with_capacity(authorization.signed_headers.len());
    for name in &authorization.signed_headers {
        let values: Vec<String> = request
            .headers
            .get_all(name.as_str())
            .iter()
            .filter_map(|v| v.to_str().ok().map(str::to_owned))
            .collect();
        if values.is_empty() {
            return Err(ApiError::incomplete_signature(&format!(
                "The signed header {name} is missing."
            )));
        }
        signed_headers.push((name.clone(), values));
    }
    check_time(request.header("x-acs-date"), now)?;
    let payload_hash = request.header("x-acs-content-sha256").unwrap_or_default();
    let signer = resolve(directory, &authorization.access_key_id)?;
    let computed = sign::acs3_signature(
        signer.secret(),
        &sign::Acs3Request {
            method: &request.method,
            path: &request.path,
            query: &request.query,
            headers: &signed_headers,
            payload_hash,
        },
    );
    if !sign::signatures_match(&authorization.signature.to_ascii_lowercase(), &computed) {
        return Err(ApiError::signature_mismatch());
    }
    if !payload_hash.eq_ignore_ascii_case(&sign::sha256_hex(&request.body)) {
        // The signature covered the stated hash; the body is not what was signed.
        return Err(ApiError::signature_mismatch());
    }
    let caller = signer.accept(request.header("x-acs-security-token"), now)?;
    let nonce = request.header("x-acs-signature-nonce").unwrap_or_default();
    if !directory.use_nonce(&authorization.access_key_id, nonce, now) {
        return Err(ApiError::nonce_used());
    }
    Ok(caller)
}

fn rpc(directory: &mut Directory, request: &ApiRequest, now: i64) -> Result<Caller, ApiError> {
    let required = |name: &str| {
        request
            .param(name)
            .filter(|v| !v.is_empty())
            .ok_or_else(|| ApiError::missing_parameter(name))
    };
    let access_key_id = required("AccessKeyId")?;
    let signature = required("Signature")?;
    let nonce = required("SignatureNonce")?;
    let timestamp = required("Timestamp")?;
    if request.param("SignatureMethod") != Some("HMAC-SHA1") {
        return Err(ApiError::invalid_signature_method());
    }
    if request.param("SignatureVersion") != Some("1.0") {
        return Err(ApiError::invalid_parameter(
            "SignatureVersion",
            "Only 1.0 is supported.",
        ));
    }
    check_time(Some(timestamp), now)?;
    let signer = resolve(directory, access_key_id)?;
    let computed = sign::rpc_signature(signer.secret(), &request.method, &request.all_params());
    if !sign::signatures_match(signature, &computed) {
        return Err(ApiError::signature_mismatch());
    }
    let caller = signer.accept(request.param("SecurityToken"), now)?;
    if !directory.use_nonce(access_key_id, nonce, now) {
        return Err(ApiError::nonce_used());
    }
    Ok(caller)
}

fn resolve(directory: &Directory, access_key_id: &str) -> Result<Signer, ApiError> {
    directory
        .signer(access_key_id)
        .ok_or_else(ApiError::access_key_not_found)
}

impl Signer {
    fn secret(&self) -> &str {
        match self {
            Self::Key { secret, .. } | Self::Session { secret, .. } => secret,
        }
    }

    /// The caller, once the signature is good: keys must be enabled; STS credentials need
    /// their own, unexpired token.
    fn accept(self, token: Option<&str>, now: i64) -> Result<Caller, ApiError> {
        match self {
            Self::Key {
                caller, enabled, ..
            } => {
                if enabled {
                    Ok(caller)
                } else {
                    Err(ApiError::access_key_inactive())
                }
            }
            Self::Session {
                token: issued,
                expiration,
                caller,
                ..
            } => {
                let token = token
                    .filter(|t| !t.is_empty())
                    .ok_or_else(ApiError::missing_security_token)?;
                if !token.starts_with("CAIS") {
                    return Err(ApiError::security_token_malformed());
                }
                if !sign::signatures_match(token, &issued) {
                    return Err(ApiError::security_token_mismatch());
                }
                if expiration <= now {
                    return Err(ApiError::security_token_expired());
                }
                caller.ok_or_else(ApiError::security_token_expired)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::{AccessKeySpec, RoleSpec};
    use http::HeaderValue;

    const NOW: i64 = 1_767_323_045; // 2026-01-02T03:04:05Z

    fn directory() -> Directory {
        let mut directory = Directory::default();
        directory
            .add_key(
                &AccessKeySpec::new("LTAI5tExampleKey", "ExampleSecret0123456789"),
                "111",
            )
            .unwrap();
        directory
    }

    fn rpc_request(params: &[(&str, &str)], secret: &str) -> ApiRequest {
        let mut query: Vec<(String, String)> = params
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        let signature = sign::rpc_signature(secret, "POST", &query);
        query.push(("Signature".to_owned(), signature));
        ApiRequest {
            method: "POST".to_owned(),
            path: "/".to_owned(),
            query,
            form: Vec::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            host: "localhost".to_owned(),
        }
    }

    fn common(nonce: &'static str) -> Vec<(&'static str, &'static str)> {
        vec![
            ("Action", "GetSecretParameter"),
            ("Version", "2019-06-01"),
            ("AccessKeyId", "LTAI5tExampleKey"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", nonce),
            ("Timestamp", "2026-01-02T03:04:05Z"),
            ("Name", "p"),
        ]
    }

    #[test]
    fn rpc_requests_verify_and_refuse_replays() {
        let mut directory = directory();
        let request = rpc_request(&common("n1"), "ExampleSecret0123456789");
        let caller = authenticate(&mut directory, &request, NOW).unwrap();
        assert_eq!(caller.arn, "acs:ram::111:user/LTAI5tExampleKey");
        let error = authenticate(&mut directory, &request, NOW).unwrap_err();
        assert_eq!(error.code(), "SignatureNonceUsed");
    }

    #[test]
    fn rpc_failures_have_the_gateway_codes() {
        let mut directory = directory();
        let cases: Vec<(ApiRequest, i64, &str)> = vec![
            (
                rpc_request(&common("a"), "wrong"),
                NOW,
                "SignatureDoesNotMatch",
            ),
            (
                rpc_request(&common("b"), "ExampleSecret0123456789"),
                NOW + 901,
                "InvalidTimeStamp.Expired",
            ),
            (unknown_key("c"), NOW, "InvalidAccessKeyId.NotFound"),
        ];
        for (request, now, code) in cases {
            assert_eq!(
                authenticate(&mut directory, &request, now)
                    .unwrap_err()
                    .code(),
                code
            );
        }
        let mut no_nonce = rpc_request(&common("d"), "ExampleSecret0123456789");
        no_nonce.query.retain(|(k, _)| k != "SignatureNonce");
        assert_eq!(
            authenticate(&mut directory, &no_nonce, NOW)
                .unwrap_err()
                .code(),
            "MissingSignatureNonce"
        );
    }

    fn unknown_key(nonce: &'static str) -> ApiRequest {
        let params: Vec<(&str, &str)> = common(nonce)
            .into_iter()
            .map(|(k, v)| {
                if k == "AccessKeyId" {
                    (k, "LTAIunknown")
                } else {
                    (k, v)
                }
            })
            .collect();
        rpc_request(&params, "x")
    }

    fn acs3_request(secret: &str, nonce: &str, token: Option<&str>, key_id: &str) -> ApiRequest {
        let mut headers = HeaderMap::new();
        let body_hash = sign::sha256_hex(b"");
        let mut pairs = vec![
            ("host", "localhost:8443".to_owned()),
            ("x-acs-action", "GetSecretValue".to_owned()),
            ("x-acs-version", "2016-01-20".to_owned()),
            ("x-acs-date", "2026-01-02T03:04:05Z".to_owned()),
            ("x-acs-signature-nonce", nonce.to_owned()),
            ("x-acs-content-sha256", body_hash.clone()),
        ];
        if let Some(token) = token {
            pairs.push(("x-acs-security-token", token.to_owned()));
        }
        for (name, value) in &pairs {
            headers.insert(*name, HeaderValue::from_str(value).unwrap());
        }
        let query = vec![("SecretName".to_owned(), "db".to_owned())];
        let signed: Vec<(String, Vec<String>)> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), vec![v.clone()]))
            .collect();
        let signature = sign::acs3_signature(
            secret,
            &sign::Acs3Request {
                method: "POST",
                path: "/",
                query: &query,
                headers: &signed,
                payload_hash: &body_hash,
            },
        );
        let names: Vec<&str> = pairs.iter().map(|(k, _)| *k).collect();
        let authorization = format!(
            "ACS3-HMAC-SHA256 Credential={key_id},SignedHeaders={},Signature={signature}",
            names.join(";")
        );
        headers.insert(
            "authorization",
            HeaderValue::from_str(&authorization).unwrap(),
        );
        ApiRequest {
            method: "POST".to_owned(),
            path: "/".to_owned(),
            query,
            form: Vec::new(),
            headers,
            body: Bytes::new(),
            host: "localhost:8443".to_owned(),
        }
    }

    #[test]
    fn acs3_requests_verify_and_refuse_tampering() {
        let mut directory = directory();
        let request = acs3_request("ExampleSecret0123456789", "n1", None, "LTAI5tExampleKey");
        assert!(authenticate(&mut directory, &request, NOW).is_ok());
        assert_eq!(
            authenticate(&mut directory, &request, NOW)
                .unwrap_err()
                .code(),
            "SignatureNonceUsed"
        );
        let mut tampered = acs3_request("ExampleSecret0123456789", "n2", None, "LTAI5tExampleKey");
        tampered.query[0].1 = "other".to_owned();
        assert_eq!(
            authenticate(&mut directory, &tampered, NOW)
                .unwrap_err()
                .code(),
            "SignatureDoesNotMatch"
        );
        let mut body = acs3_request("ExampleSecret0123456789", "n3", None, "LTAI5tExampleKey");
        body.body = Bytes::from_static(b"x");
        assert_eq!(
            authenticate(&mut directory, &body, NOW).unwrap_err().code(),
            "SignatureDoesNotMatch"
        );
        let wrong = acs3_request("wrong", "n4", None, "LTAI5tExampleKey");
        assert_eq!(
            authenticate(&mut directory, &wrong, NOW)
                .unwrap_err()
                .code(),
            "SignatureDoesNotMatch"
        );
        let late = acs3_request("ExampleSecret0123456789", "n5", None, "LTAI5tExampleKey");
        assert_eq!(
            authenticate(&mut directory, &late, NOW - 901)
                .unwrap_err()
                .code(),
            "InvalidTimeStamp.Expired"
        );
    }

    #[test]
    fn sts_credentials_need_their_token_until_they_expire() {
        let mut directory = directory();
        directory.add_role(&RoleSpec::new("reader"), "111").unwrap();
        let issued = directory.issue("111", "reader", "s", 900, NOW).unwrap();
        let id = issued.access_key_id.as_str();
        let secret = issued.access_key_secret.as_str();
        let token = issued.security_token.as_str();
        let ok = acs3_request(secret, "t1", Some(token), id);
        let caller = authenticate(&mut directory, &ok, NOW).unwrap();
        assert_eq!(caller.identity_type, "AssumedRoleUser");
        let cases = [
            (acs3_request(secret, "t2", None, id), "MissingSecurityToken"),
            (
                acs3_request(secret, "t3", Some("CAISother"), id),
                "InvalidSecurityToken.MismatchWithAccessKey",
            ),
            (
                acs3_request(secret, "t4", Some("garbage"), id),
                "InvalidSecurityToken.Malformed",
            ),
        ];
        for (request, code) in cases {
            assert_eq!(
                authenticate(&mut directory, &request, NOW)
                    .unwrap_err()
                    .code(),
                code
            );
        }
        directory.expire_sessions(NOW);
        let expired = acs3_request(secret, "t5", Some(token), id);
        assert_eq!(
            authenticate(&mut directory, &expired, NOW)
                .unwrap_err()
                .code(),
            "InvalidSecurityToken.Expired"
        );
    }

    #[test]
    fn unsigned_security_tokens_are_refused() {
        let mut directory = directory();
        let mut request = acs3_request("ExampleSecret0123456789", "u1", None, "LTAI5tExampleKey");
        request
            .headers
            .insert("x-acs-security-token", HeaderValue::from_static("CAISx"));
        assert_eq!(
            authenticate(&mut directory, &request, NOW)
                .unwrap_err()
                .code(),
            "IncompleteSignature"
        );
    }
}
