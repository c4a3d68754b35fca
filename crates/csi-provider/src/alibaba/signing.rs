//! Alibaba Cloud request signatures, as the gateway verifies them: ACS3-HMAC-SHA256 for KMS and
//! OOS (the signature V3 the current SDKs send, with an STS security token as a signed header),
//! and the RPC HMAC-SHA1 signature (V1 parameters) for STS `AssumeRole`.
//!
//! Pure functions over the request's parts: no clock, no randomness, no I/O (the caller passes
//! the date and nonce), so the unit tests hold vectors computed by Alibaba Cloud's own Python
//! SDK (alibabacloud-tea-openapi 0.4.6, `Utils.get_authorization` and `Utils.get_rpcsignature`).
//! An AccessKey secret is taken as bytes only to key the HMAC; nothing here keeps, logs or
//! returns it.

use std::collections::BTreeMap;

use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
use sha1::Sha1;
use sha2::{Digest, Sha256};

/// The ACS3 algorithm's name, as it opens the `Authorization` header.
pub const ACS3_HMAC_SHA256: &str = "ACS3-HMAC-SHA256";

/// `value`, percent-encoded as RFC 3986 (and every Alibaba Cloud signature) wants: `A-Z a-z
/// 0-9 - _ . ~` as they are, every other byte of its UTF-8 as `%XX` (uppercase hex).
pub fn percent_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len() * 3);
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.' | b'~') {
            encoded.push(char::from(byte));
        } else {
            encoded.push('%');
            encoded.push_str(&format!("{byte:02X}"));
        }
    }
    encoded
}

/// The query string a request is sent with and signed over: parameters sorted by name (a
/// `BTreeMap` is), `name=value` with both percent-encoded, joined by `&`.
pub fn canonical_query(parameters: &BTreeMap<String, String>) -> String {
    parameters
        .iter()
        .map(|(name, value)| format!("{}={}", percent_encode(name), percent_encode(value)))
        .collect::<Vec<_>>()
        .join("&")
}

/// The hex SHA-256 of a request body (`x-acs-content-sha256`).
pub fn content_sha256(body: &[u8]) -> String {
    hex::encode(Sha256::digest(body))
}

/// The `Authorization` header of an ACS3-HMAC-SHA256 request: `method` and path `/`, the query
/// `parameters`, every header in `headers` signed (names lowercase; the caller includes `host`,
/// `x-acs-action`, `x-acs-version`, `x-acs-date`, `x-acs-signature-nonce`,
/// `x-acs-content-sha256` and, with STS credentials, `x-acs-security-token`), and `body`.
pub fn acs3_authorization(
    access_key_id: &str,
    access_key_secret: &[u8],
    method: &str,
    parameters: &BTreeMap<String, String>,
    headers: &BTreeMap<String, String>,
    body: &[u8],
) -> String {
    let canonical_headers: String = headers
        .iter()
        .map(|(name, value)| format!("{}:{}\n", name.to_ascii_lowercase(), value.trim()))
        .collect();
    let signed_headers = headers
        .keys()
        .map(|name| name.to_ascii_lowercase())
        .collect::<Vec<_>>()
        .join(";");
    let canonical_request = format!(
        "{method}\n/\n{}\n{canonical_headers}\n{signed_headers}\n{}",
        canonical_query(parameters),
        content_sha256(body)
    );
    let string_to_sign = format!(
        "{ACS3_HMAC_SHA256}\n{}",
        hex::encode(Sha256::digest(canonical_request.as_bytes()))
    );
    let mut mac = <Hmac<Sha256> as KeyInit>::new_from_slice(access_key_secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(string_to_sign.as_bytes());
    let signature = hex::encode(mac.finalize().into_bytes());
    format!(
        "{ACS3_HMAC_SHA256} Credential={access_key_id},SignedHeaders={signed_headers},\
         Signature={signature}"
    )
}

/// The RPC `Signature` parameter (HMAC-SHA1, signature version 1.0) of a request with `method`
/// and every parameter in `parameters` (query and form alike, `Signature` itself excluded):
/// base64 of HMAC-SHA1, keyed by the secret and `&`, over `METHOD&%2F&` and the encoded
/// canonical query.
pub fn rpc_signature(
    access_key_secret: &[u8],
    method: &str,
    parameters: &BTreeMap<String, String>,
) -> String {
    let string_to_sign = format!(
        "{method}&{}&{}",
        percent_encode("/"),
        percent_encode(&canonical_query(parameters))
    );
    let mut key = Vec::with_capacity(access_key_secret.len() + 1);
    key.extend_from_slice(access_key_secret);
    key.push(b'&');
    let mut mac = <Hmac<Sha1> as KeyInit>::new_from_slice(&key)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    zeroize::Zeroize::zeroize(&mut key);
    mac.update(string_to_sign.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn percent_encoding_keeps_only_unreserved_characters() {
        assert_eq!(percent_encode("aZ09-_.~"), "aZ09-_.~");
        assert_eq!(percent_encode("a b/c+d=e&f*"), "a%20b%2Fc%2Bd%3De%26f%2A");
        assert_eq!(percent_encode("ü"), "%C3%BC");
        assert_eq!(
            canonical_query(&map(&[("b", "2 3"), ("a", "/")])),
            "a=%2F&b=2%203"
        );
    }

    /// Computed with alibabacloud-tea-openapi 0.4.6: `Utils.get_authorization(request,
    /// 'ACS3-HMAC-SHA256', sha256(b'').hexdigest(), 'STS.NUexample', 'secret+/=value')` for
    /// `POST /` with these query parameters and headers.
    #[test]
    fn acs3_matches_the_sdk() {
        let headers = map(&[
            ("host", "kms-vpc.cn-hangzhou.aliyuncs.com"),
            ("x-acs-action", "GetSecretValue"),
            ("x-acs-version", "2016-01-20"),
            ("x-acs-date", "2026-01-02T03:04:05Z"),
            ("x-acs-signature-nonce", "0123456789abcdef0123456789abcdef"),
            ("x-acs-content-sha256", &content_sha256(b"")),
            ("x-acs-security-token", "CAIS+token/with=chars"),
        ]);
        let query = map(&[
            ("SecretName", "db/pass word~ü"),
            ("VersionStage", "ACSCurrent"),
        ]);
        assert_eq!(
            acs3_authorization(
                "STS.NUexample",
                b"secret+/=value",
                "POST",
                &query,
                &headers,
                b""
            ),
            "ACS3-HMAC-SHA256 Credential=STS.NUexample,SignedHeaders=host;x-acs-action;\
             x-acs-content-sha256;x-acs-date;x-acs-security-token;x-acs-signature-nonce;\
             x-acs-version,Signature=\
             1d7318fb023f1c0573d168c63ccb54b8a8ab392129083512cc97ca43cf87c0a6"
        );
        assert_eq!(
            content_sha256(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    /// Computed with alibabacloud-tea-openapi 0.4.6: `Utils.get_rpcsignature(params, 'POST',
    /// 'ak secret&x')`.
    #[test]
    fn rpc_hmac_sha1_matches_the_sdk() {
        let parameters = map(&[
            ("Action", "AssumeRole"),
            ("Format", "JSON"),
            ("Version", "2015-04-01"),
            ("AccessKeyId", "LTAIexample"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", "nonce-1"),
            ("Timestamp", "2026-01-02T03:04:05Z"),
            ("RoleArn", "acs:ram::1234567890123456:role/reader"),
            ("RoleSessionName", "csi secrets~x"),
            ("DurationSeconds", "3600"),
        ]);
        assert_eq!(
            rpc_signature(b"ak secret&x", "POST", &parameters),
            "EXgcpfpT63a8UJTA7MzgK4gX9GY="
        );
    }

    #[test]
    fn any_change_changes_the_signature() {
        let headers = map(&[("host", "h"), ("x-acs-action", "A")]);
        let base = acs3_authorization("id", b"k", "POST", &map(&[]), &headers, b"");
        assert_ne!(
            base,
            acs3_authorization("id", b"k2", "POST", &map(&[]), &headers, b"")
        );
        assert_ne!(
            base,
            acs3_authorization("id", b"k", "GET", &map(&[]), &headers, b"")
        );
        assert_ne!(
            base,
            acs3_authorization("id", b"k", "POST", &map(&[("a", "b")]), &headers, b"")
        );
        assert_ne!(
            base,
            acs3_authorization("id", b"k", "POST", &map(&[]), &headers, b"x")
        );
    }
}
