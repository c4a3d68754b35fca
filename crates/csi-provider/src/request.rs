//! What a Mount request carries, decoded once: the SecretProviderClass parameters overlaid with
//! the pod's volume attributes (the driver merges them; volume keys win), the pod's identity and
//! service-account tokens, the nodePublishSecretRef Secret's data, and the default file mode.
//!
//! Everything here is attacker-influenced input (anyone who can create a pod or a
//! SecretProviderClass writes it): parsing has size limits, never panics, and every failure is a
//! [`RequestError`] naming the field. Tokens and Secret data live in zeroizing [`SecretString`]s
//! and no `Debug` shows them. Backend-independent: the Azure and Alibaba backends both read a
//! [`MountInput`].

use std::collections::BTreeMap;
use std::fmt;

use secrecy::{ExposeSecret, SecretString};
use serde::Deserialize;
use serde::de::{self, MapAccess, Visitor};
use zeroize::{Zeroize, Zeroizing};

use crate::proto::v1alpha1::MountRequest;

/// The most `attributes` JSON a request may carry, in bytes. Kubernetes caps an object (the
/// SecretProviderClass whose parameters make up nearly all of it) at about 1.5 MiB in etcd; a
/// class of a thousand objects is far below 1 MiB.
pub const MAX_ATTRIBUTES_BYTES: usize = 1024 * 1024;

/// The most `secrets` JSON a request may carry, in bytes: a Secret's data is at most 1 MiB, and
/// JSON escaping of text grows it little.
pub const MAX_SECRETS_BYTES: usize = 2 * 1024 * 1024;

/// The highest default file mode a request may carry: permission bits only.
pub const MAX_PERMISSION: u32 = 0o777;

/// The pod keys kubelet adds to the attributes (`podInfoOnMount: true`).
pub mod keys {
    /// The pod's name.
    pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
    /// The pod's UID.
    pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
    /// The pod's service account.
    pub const SERVICE_ACCOUNT_NAME: &str = "csi.storage.k8s.io/serviceAccount.name";
    /// The service-account tokens kubelet requested for the CSIDriver's `tokenRequests`.
    pub const SERVICE_ACCOUNT_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
    /// The SecretProviderClass's name (from the volume attributes).
    pub const SECRET_PROVIDER_CLASS: &str = "secretProviderClass";
}

/// A decoded Mount request.
pub struct MountInput {
    /// Every attribute (class parameters and volume attributes, merged by the driver) except
    /// the service-account tokens, which are in [`MountInput::tokens`].
    pub parameters: BTreeMap<String, String>,
    /// The pod the volume is for (empty strings when kubelet sent none).
    pub pod: PodInfo,
    /// The pod's service-account tokens by audience.
    pub tokens: ServiceAccountTokens,
    /// The nodePublishSecretRef Secret's data (empty when the class has no ref: the driver sends
    /// the literal `null`).
    pub secrets: NodePublishSecrets,
    /// The mode of files whose object names none (the request's `permission`, 0644 from every
    /// driver release).
    pub default_mode: u32,
}

impl fmt::Debug for MountInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountInput")
            .field("parameters", &self.parameters)
            .field("pod", &self.pod)
            .field("tokens", &self.tokens)
            .field("secrets", &self.secrets)
            .field("default_mode", &format_args!("{:o}", self.default_mode))
            .finish()
    }
}

/// The pod a Mount is for, as kubelet names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `csi.storage.k8s.io/pod.name`
    pub name: String,
    /// `csi.storage.k8s.io/pod.namespace`
    pub namespace: String,
    /// `csi.storage.k8s.io/pod.uid`
    pub uid: String,
    /// `csi.storage.k8s.io/serviceAccount.name`
    pub service_account: String,
}

/// The pod's service-account tokens (`csi.storage.k8s.io/serviceAccount.tokens`), by audience.
#[derive(Default)]
pub struct ServiceAccountTokens {
    /// Audience → token.
    pub by_audience: BTreeMap<String, SecretString>,
}

impl fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Audiences are not secret; tokens are.
        f.debug_struct("ServiceAccountTokens")
            .field("audiences", &self.by_audience.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The nodePublishSecretRef Secret's data: key → decoded string value.
#[derive(Default)]
pub struct NodePublishSecrets {
    /// Key → value.
    pub by_key: BTreeMap<String, SecretString>,
}

impl fmt::Debug for NodePublishSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodePublishSecrets")
            .field("keys", &self.by_key.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A Mount request the provider cannot decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// `field` is not what the driver sends; `reason` says what was expected (never echoes a
    /// secret).
    Malformed {
        /// The request field or attribute key.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}

impl MountInput {
    /// Decodes a Mount request as the driver sends it: `attributes` a JSON object of strings,
    /// `secrets` a JSON object of strings or `null` (also `{}` or empty: no Secret),
    /// `permission` the default mode as a JSON number (`"420"` = 0644).
    ///
    /// The service-account tokens (`csi.storage.k8s.io/serviceAccount.tokens`, a JSON string
    /// of `{"<audience>": {"token": "<JWT>", "expirationTimestamp": "<RFC 3339>"}}`) are taken
    /// out of the attributes into [`MountInput::tokens`]; when the driver passes them in
    /// `secrets` instead (Kubernetes 1.35+ with `serviceAccountTokenInSecrets`) they are taken
    /// from there. `target_path` and `current_object_version` are not used: the driver writes the
    /// files, and v1.6 drivers never fill the versions.
    ///
    /// The request's own strings are the caller's: this copies what it keeps and cannot zeroize
    /// them.
    pub fn from_request(request: &MountRequest) -> Result<MountInput, RequestError> {
        let (parameters, attribute_tokens) = decode_attributes(&request.attributes)?;
        let mut secrets = decode_secrets(&request.secrets)?;
        let secret_tokens = secrets.by_key.remove(keys::SERVICE_ACCOUNT_TOKENS);
        let tokens = match (attribute_tokens, secret_tokens) {
            (Some(text), _) => decode_tokens(&text)?,
            (None, Some(text)) => decode_tokens(text.expose_secret())?,
            (None, None) => ServiceAccountTokens::default(),
        };
        let pod_key = |key: &str| {
            parameters
                .get(key)
                .map_or_else(String::new, |value| value.trim().to_owned())
        };
        let pod = PodInfo {
            name: pod_key(keys::POD_NAME),
            namespace: pod_key(keys::POD_NAMESPACE),
            uid: pod_key(keys::POD_UID),
            service_account: pod_key(keys::SERVICE_ACCOUNT_NAME),
        };
        let default_mode = decode_permission(&request.permission)?;
        Ok(MountInput {
            parameters,
            pod,
            tokens,
            secrets,
            default_mode,
        })
    }
}

/// What a JSON decoding error says without quoting the input: its category and position.
fn json_position(error: &serde_json::Error) -> String {
    let category = match error.classify() {
        serde_json::error::Category::Io => "read error",
        serde_json::error::Category::Syntax => "syntax error",
        serde_json::error::Category::Data => "wrong type",
        serde_json::error::Category::Eof => "unexpected end",
    };
    format!(
        "{category} at line {}, column {}",
        error.line(),
        error.column()
    )
}

fn malformed(field: &'static str, reason: impl Into<String>) -> RequestError {
    RequestError::Malformed {
        field,
        reason: reason.into(),
    }
}

/// Moves a string into a [`SecretString`] without leaving a copy behind: the secret gets an
/// exact-size copy (no reallocation when it is boxed) and the original is zeroized.
fn into_secret(mut text: String) -> SecretString {
    let secret = SecretString::from(text.as_str());
    text.zeroize();
    secret
}

/// The attributes, with the service-account tokens' JSON taken out.
type Attributes = (BTreeMap<String, String>, Option<Zeroizing<String>>);

fn decode_attributes(text: &str) -> Result<Attributes, RequestError> {
    const FIELD: &str = "attributes";
    if text.len() > MAX_ATTRIBUTES_BYTES {
        return Err(malformed(
            FIELD,
            format!(
                "{} bytes is more than the {MAX_ATTRIBUTES_BYTES} bytes allowed",
                text.len()
            ),
        ));
    }
    let decoded: Option<AttributeMap> = serde_json::from_str(text).map_err(|error| {
        malformed(
            FIELD,
            format!(
                "expected a JSON object of string values ({})",
                json_position(&error)
            ),
        )
    })?;
    // `null` (a Go nil map) is no attributes: the class's checks then say what is missing.
    Ok(decoded.map_or_else(Default::default, |map| (map.parameters, map.tokens)))
}

/// The attributes object, the tokens' value kept apart (and zeroized on drop) as it is read.
struct AttributeMap {
    parameters: BTreeMap<String, String>,
    tokens: Option<Zeroizing<String>>,
}

impl<'de> Deserialize<'de> for AttributeMap {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct AttributeVisitor;
        impl<'de> Visitor<'de> for AttributeVisitor {
            type Value = AttributeMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<AttributeMap, A::Error> {
                let mut parameters = BTreeMap::new();
                let mut tokens = None;
                while let Some(key) = map.next_key::<String>()? {
                    let value = map.next_value::<String>()?;
                    if key == keys::SERVICE_ACCOUNT_TOKENS {
                        tokens = Some(Zeroizing::new(value));
                    } else {
                        parameters.insert(key, value);
                    }
                }
                Ok(AttributeMap { parameters, tokens })
            }
        }
        deserializer.deserialize_map(AttributeVisitor)
    }
}

/// A JSON object of strings whose values go straight into [`SecretString`]s as they are read,
/// so that an error part-way leaves nothing unzeroized behind but the parser's scratch space.
struct SecretMap(BTreeMap<String, SecretString>);

impl<'de> Deserialize<'de> for SecretMap {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SecretMapVisitor;
        impl<'de> Visitor<'de> for SecretMapVisitor {
            type Value = SecretMap;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object of string values")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<SecretMap, A::Error> {
                let mut values = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    let value = into_secret(map.next_value::<String>()?);
                    values.insert(key, value);
                }
                Ok(SecretMap(values))
            }
        }
        deserializer.deserialize_map(SecretMapVisitor)
    }
}

fn decode_secrets(text: &str) -> Result<NodePublishSecrets, RequestError> {
    const FIELD: &str = "secrets";
    if text.len() > MAX_SECRETS_BYTES {
        return Err(malformed(
            FIELD,
            format!(
                "{} bytes is more than the {MAX_SECRETS_BYTES} bytes allowed",
                text.len()
            ),
        ));
    }
    if text.trim().is_empty() {
        return Ok(NodePublishSecrets::default());
    }
    // `null` is the driver's "no nodePublishSecretRef" (a Go nil map); `{}` its v1.5 rotation's.
    let decoded: Option<SecretMap> = serde_json::from_str(text).map_err(|error| {
        malformed(
            FIELD,
            format!(
                "expected null or a JSON object of string values ({})",
                json_position(&error)
            ),
        )
    })?;
    Ok(NodePublishSecrets {
        by_key: decoded.map(|map| map.0).unwrap_or_default(),
    })
}

/// One audience's entry in the service-account tokens JSON.
struct TokenEntry {
    token: SecretString,
}

impl<'de> Deserialize<'de> for TokenEntry {
    fn deserialize<D: de::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct TokenVisitor;
        impl<'de> Visitor<'de> for TokenVisitor {
            type Value = TokenEntry;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object with a string \"token\"")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<TokenEntry, A::Error> {
                let mut token = None;
                while let Some(key) = map.next_key::<String>()? {
                    if key == "token" {
                        token = Some(into_secret(map.next_value::<String>()?));
                    } else {
                        // `expirationTimestamp` and anything kubelet adds later: not needed,
                        // and not checked (a mount must not fail on a field it does not use).
                        map.next_value::<de::IgnoredAny>()?;
                    }
                }
                let token = token.ok_or_else(|| de::Error::missing_field("token"))?;
                Ok(TokenEntry { token })
            }
        }
        deserializer.deserialize_map(TokenVisitor)
    }
}

fn decode_tokens(text: &str) -> Result<ServiceAccountTokens, RequestError> {
    const FIELD: &str = keys::SERVICE_ACCOUNT_TOKENS;
    if text.trim().is_empty() {
        return Ok(ServiceAccountTokens::default());
    }
    let decoded: BTreeMap<String, TokenEntry> = serde_json::from_str(text).map_err(|error| {
        malformed(
            FIELD,
            format!(
                "expected a JSON object of {{\"<audience>\": {{\"token\": \"<JWT>\", \
                 \"expirationTimestamp\": \"<RFC 3339>\"}}}} ({})",
                json_position(&error)
            ),
        )
    })?;
    Ok(ServiceAccountTokens {
        by_audience: decoded
            .into_iter()
            .map(|(audience, entry)| (audience, entry.token))
            .collect(),
    })
}

fn decode_permission(text: &str) -> Result<u32, RequestError> {
    const FIELD: &str = "permission";
    let expected = "expected the default file mode as a JSON number of at most 511 (0777), \
                    e.g. \"420\" for 0644";
    match serde_json::from_str::<u32>(text) {
        Ok(mode) if mode <= MAX_PERMISSION => Ok(mode),
        _ => Err(malformed(FIELD, expected)),
    }
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Malformed { field, reason } => {
                write!(f, "malformed Mount request: {field}: {reason}")
            }
        }
    }
}

impl std::error::Error for RequestError {}

#[cfg(test)]
mod tests {
    use super::*;

    const TOKEN: &str = "eyJhbGciOiJSUzI1NiJ9.c2VjcmV0LXRva2VuLWJvZHk.c2lnbmF0dXJl";

    fn tokens_json() -> String {
        serde_json::json!({
            "api://AzureADTokenExchange": {
                "token": TOKEN,
                "expirationTimestamp": "2026-01-01T00:00:00Z",
            },
            "api://AKSIdentityBinding": {"token": "second-token", "expirationTimestamp": ""},
        })
        .to_string()
    }

    fn attributes() -> serde_json::Value {
        serde_json::json!({
            "keyvaultName": "kv",
            "tenantID": "tenant",
            "objects": "array:\n  - |\n    objectName: s\n    objectType: secret\n",
            "secretProviderClass": "azure-kv",
            "csi.storage.k8s.io/pod.name": "web-0",
            "csi.storage.k8s.io/pod.namespace": "shop",
            "csi.storage.k8s.io/pod.uid": " 4e3c2a1b-0000-4000-8000-000000000001 ",
            "csi.storage.k8s.io/serviceAccount.name": "web",
            "csi.storage.k8s.io/ephemeral": "true",
            "csi.storage.k8s.io/serviceAccount.tokens": tokens_json(),
        })
    }

    fn request(attributes: &str, secrets: &str, permission: &str) -> MountRequest {
        MountRequest {
            attributes: attributes.to_owned(),
            secrets: secrets.to_owned(),
            target_path: "/var/lib/kubelet/pods/uid/volumes/kubernetes.io~csi/v/mount".to_owned(),
            permission: permission.to_owned(),
            current_object_version: Vec::new(),
        }
    }

    fn decode(
        attributes: &str,
        secrets: &str,
        permission: &str,
    ) -> Result<MountInput, RequestError> {
        MountInput::from_request(&request(attributes, secrets, permission))
    }

    fn field_of(result: Result<MountInput, RequestError>) -> &'static str {
        match result {
            Ok(input) => panic!("decoded: {input:?}"),
            Err(RequestError::Malformed { field, .. }) => field,
        }
    }

    #[test]
    fn a_request_as_the_driver_sends_it_decodes() {
        let input = decode(&attributes().to_string(), "null", "420").unwrap();
        assert_eq!(input.parameters["keyvaultName"], "kv");
        assert_eq!(input.parameters["secretProviderClass"], "azure-kv");
        assert_eq!(
            input.pod,
            PodInfo {
                name: "web-0".to_owned(),
                namespace: "shop".to_owned(),
                uid: "4e3c2a1b-0000-4000-8000-000000000001".to_owned(),
                service_account: "web".to_owned(),
            }
        );
        assert_eq!(input.default_mode, 0o644);
        assert!(input.secrets.by_key.is_empty());
        let audiences: Vec<_> = input.tokens.by_audience.keys().collect();
        assert_eq!(
            audiences,
            ["api://AKSIdentityBinding", "api://AzureADTokenExchange"]
        );
        assert_eq!(
            input.tokens.by_audience["api://AzureADTokenExchange"].expose_secret(),
            TOKEN
        );
    }

    #[test]
    fn the_tokens_are_taken_out_of_the_parameters() {
        let input = decode(&attributes().to_string(), "null", "420").unwrap();
        assert!(!input.parameters.contains_key(keys::SERVICE_ACCOUNT_TOKENS));
        // The pod keys stay: a backend may read any attribute.
        assert!(input.parameters.contains_key(keys::POD_NAME));
    }

    #[test]
    fn no_secrets_is_null_empty_object_or_empty_string() {
        for secrets in ["null", "{}", "", "  ", " null "] {
            let input = decode(&attributes().to_string(), secrets, "420").unwrap();
            assert!(input.secrets.by_key.is_empty(), "{secrets:?}");
        }
    }

    #[test]
    fn node_publish_secrets_decode_into_secret_strings() {
        let secrets = r#"{"clientid":"app","clientsecret":"s3cr3t-value"}"#;
        let input = decode(&attributes().to_string(), secrets, "420").unwrap();
        assert_eq!(input.secrets.by_key["clientid"].expose_secret(), "app");
        assert_eq!(
            input.secrets.by_key["clientsecret"].expose_secret(),
            "s3cr3t-value"
        );
    }

    #[test]
    fn tokens_passed_in_secrets_are_taken_from_there() {
        let mut attributes = attributes();
        attributes
            .as_object_mut()
            .unwrap()
            .remove(keys::SERVICE_ACCOUNT_TOKENS);
        let secrets = serde_json::json!({
            "clientid": "app",
            keys::SERVICE_ACCOUNT_TOKENS: tokens_json(),
        });
        let input = decode(&attributes.to_string(), &secrets.to_string(), "420").unwrap();
        assert_eq!(
            input.tokens.by_audience["api://AzureADTokenExchange"].expose_secret(),
            TOKEN
        );
        let keys: Vec<_> = input.secrets.by_key.keys().collect();
        assert_eq!(keys, ["clientid"]);
    }

    #[test]
    fn no_tokens_key_or_an_empty_one_is_no_tokens() {
        let mut attributes = attributes();
        let map = attributes.as_object_mut().unwrap();
        map.remove(keys::SERVICE_ACCOUNT_TOKENS);
        let input = decode(&attributes.to_string(), "null", "420").unwrap();
        assert!(input.tokens.by_audience.is_empty());

        attributes[keys::SERVICE_ACCOUNT_TOKENS] = " ".into();
        let input = decode(&attributes.to_string(), "null", "420").unwrap();
        assert!(input.tokens.by_audience.is_empty());
    }

    #[test]
    fn null_attributes_are_no_parameters() {
        let input = decode("null", "null", "420").unwrap();
        assert!(input.parameters.is_empty());
        assert_eq!(input.pod, PodInfo::default());
    }

    #[test]
    fn permission_is_a_json_number_of_at_most_0777() {
        let attributes = attributes().to_string();
        for (permission, mode) in [("420", 0o644), ("0", 0), ("511", 0o777), (" 256 ", 0o400)] {
            let input = decode(&attributes, "null", permission).unwrap();
            assert_eq!(input.default_mode, mode, "{permission:?}");
        }
        for permission in [
            "", "512", "-1", "420.0", "4.2e2", "\"420\"", "0644x", "null", "0o644",
        ] {
            assert_eq!(
                field_of(decode(&attributes, "null", permission)),
                "permission",
                "{permission:?}"
            );
        }
    }

    #[test]
    fn each_malformed_field_is_named() {
        let good = attributes().to_string();
        let mut bad_token = attributes();
        bad_token[keys::SERVICE_ACCOUNT_TOKENS] =
            serde_json::json!({"aud": {"expirationTimestamp": "x"}})
                .to_string()
                .into();
        let mut token_not_json = attributes();
        token_not_json[keys::SERVICE_ACCOUNT_TOKENS] = TOKEN.into();
        let table: Vec<(String, &str, &str)> = vec![
            (String::new(), "null", "attributes"),
            ("[]".to_owned(), "null", "attributes"),
            (r#"{"keyvaultName": 3}"#.to_owned(), "null", "attributes"),
            (r#"{"keyvaultName": "kv""#.to_owned(), "null", "attributes"),
            (r#"{"a": {"b": "c"}}"#.to_owned(), "null", "attributes"),
            (good.clone(), "[]", "secrets"),
            (good.clone(), r#"{"clientsecret": 1}"#, "secrets"),
            (good.clone(), "nul", "secrets"),
            (bad_token.to_string(), "null", keys::SERVICE_ACCOUNT_TOKENS),
            (
                token_not_json.to_string(),
                "null",
                keys::SERVICE_ACCOUNT_TOKENS,
            ),
        ];
        for (attributes, secrets, field) in table {
            assert_eq!(
                field_of(decode(&attributes, secrets, "420")),
                field,
                "{attributes} / {secrets}"
            );
        }
    }

    #[test]
    fn attributes_over_the_limit_are_refused_before_parsing() {
        let big = format!(r#"{{"a": "{}"}}"#, "x".repeat(MAX_ATTRIBUTES_BYTES));
        let error = decode(&big, "null", "420").unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "malformed Mount request: attributes: {} bytes is more than the 1048576 bytes \
                 allowed",
                big.len()
            )
        );
        let secrets = format!(r#"{{"a": "{}"}}"#, "x".repeat(MAX_SECRETS_BYTES));
        assert_eq!(
            field_of(decode(&attributes().to_string(), &secrets, "420")),
            "secrets"
        );
    }

    #[test]
    fn malformed_errors_never_echo_values() {
        let secret = "TOPSECRET-credential-value";
        let cases = [
            (format!(r#"{{"k": "{secret}", "n": 1}}"#), "null".to_owned()),
            (format!(r#"{{"k": "{secret}"#), "null".to_owned()),
            (
                attributes().to_string(),
                format!(r#"{{"clientsecret": "{secret}", "x": ["{secret}"]}}"#),
            ),
            (
                serde_json::json!({
                    keys::SERVICE_ACCOUNT_TOKENS: format!(r#"{{"aud": {{"token": ["{secret}"]}}}}"#)
                })
                .to_string(),
                "null".to_owned(),
            ),
            (
                serde_json::json!({ keys::SERVICE_ACCOUNT_TOKENS: secret }).to_string(),
                "null".to_owned(),
            ),
        ];
        for (attributes, secrets) in cases {
            let error = decode(&attributes, &secrets, "420").unwrap_err();
            let shown = format!("{error} {error:?}");
            assert!(!shown.contains("TOPSECRET"), "{shown}");
        }
    }

    #[test]
    fn debug_shows_no_token_or_secret_value() {
        let input = decode(
            &attributes().to_string(),
            r#"{"clientsecret": "s3cr3t-value"}"#,
            "420",
        )
        .unwrap();
        let shown = format!("{input:?}");
        assert!(!shown.contains(TOKEN), "{shown}");
        assert!(!shown.contains("second-token"), "{shown}");
        assert!(!shown.contains("s3cr3t-value"), "{shown}");
        assert!(shown.contains("api://AzureADTokenExchange"), "{shown}");
        assert!(shown.contains("clientsecret"), "{shown}");
        assert!(shown.contains("default_mode: 644"), "{shown}");
    }

    #[test]
    fn a_repeated_key_keeps_the_last_value_as_go_does() {
        let input = decode(
            r#"{"keyvaultName": "first", "keyvaultName": "last"}"#,
            "null",
            "420",
        )
        .unwrap();
        assert_eq!(input.parameters["keyvaultName"], "last");
    }
}
