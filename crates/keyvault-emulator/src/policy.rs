//! Certificate policies: what a request sends, completed with the service's defaults, checked,
//! merged on update and rendered back with its id.
//!
//! The policy is kept as the JSON the service speaks (`key_props`, `secret_props`,
//! `x509_props`, `lifetime_actions`, `issuer`, `attributes`), so fields the emulator does not
//! act on (lifetime actions, certificate transparency) round-trip unchanged. Accessors read
//! the parts the emulator acts on.

use serde_json::{Map, Value, json};

use crate::error::ServiceError;
use crate::model::{Curve, KeyType};
use crate::pki::{self, CertificateRequest};
use crate::secrets;

/// The issuer name of self-signed certificates.
pub const SELF_ISSUER: &str = "Self";

/// The issuer name of certificates issued outside the vault (CSR, then merge).
pub const UNKNOWN_ISSUER: &str = "Unknown";

/// A certificate policy with the service's defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Policy(Value);

fn bad(message: impl Into<String>) -> ServiceError {
    ServiceError::bad_parameter(message)
}

/// Sets `object[field] = default` when it is absent or null.
fn default_field(object: &mut Map<String, Value>, field: &str, default: Value) {
    if object.get(field).is_none_or(Value::is_null) {
        object.insert(field.to_owned(), default);
    }
}

fn section<'a>(
    policy: &'a mut Map<String, Value>,
    name: &str,
) -> Result<&'a mut Map<String, Value>, ServiceError> {
    default_field(policy, name, json!({}));
    policy
        .get_mut(name)
        .and_then(Value::as_object_mut)
        .ok_or_else(|| bad(format!("Property 'policy.{name}' must be an object.")))
}

/// Merges `patch` into `target`: objects field by field, everything else replaced; nulls in
/// the patch are ignored.
fn merge(target: &mut Value, patch: &Value) {
    match (target, patch) {
        (Value::Object(target), Value::Object(patch)) => {
            for (key, value) in patch {
                if value.is_null() {
                    continue;
                }
                match target.get_mut(key) {
                    Some(existing) if existing.is_object() && value.is_object() => {
                        merge(existing, value);
                    }
                    _ => {
                        target.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (target, patch) if !patch.is_null() => *target = patch.clone(),
        _ => {}
    }
}

fn strings(value: Option<&Value>) -> Vec<String> {
    value
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

impl Policy {
    /// A policy from a request's `policy` (absent: every default), completed and checked.
    /// `issuer` is the issuer name used when the request names none.
    pub fn complete(
        given: Option<&Value>,
        default_issuer: &str,
        now: i64,
    ) -> Result<Self, ServiceError> {
        let mut value = match given {
            None | Some(Value::Null) => json!({}),
            Some(value @ Value::Object(_)) => value.clone(),
            Some(_) => return Err(bad("Property 'policy' must be an object.")),
        };
        let policy = value
            .as_object_mut()
            .ok_or_else(|| bad("Property 'policy' must be an object."))?;
        policy.remove("id");

        let key_props = section(policy, "key_props")?;
        default_field(key_props, "exportable", json!(true));
        default_field(key_props, "kty", json!("RSA"));
        default_field(key_props, "reuse_key", json!(false));
        let kty_text = key_props
            .get("kty")
            .and_then(Value::as_str)
            .unwrap_or("RSA");
        let kty = KeyType::parse(kty_text)
            .filter(|kty| kty.is_rsa() || kty.is_ec())
            .ok_or_else(|| {
                bad(format!(
                    "The key type '{kty_text}' is not supported for certificates (RSA, RSA-HSM, \
                     EC, EC-HSM)."
                ))
            })?;
        if kty.is_rsa() {
            default_field(key_props, "key_size", json!(2048));
            let size = key_props.get("key_size").and_then(Value::as_u64);
            if !size.is_some_and(|s| [2048, 3072, 4096].contains(&s)) {
                return Err(bad("The key size must be 2048, 3072 or 4096 for RSA keys."));
            }
        } else {
            let curve = match key_props.get("crv").and_then(Value::as_str) {
                Some(text) => Curve::parse(text)
                    .ok_or_else(|| bad(format!("The curve '{text}' is not supported.")))?,
                None => key_props
                    .get("key_size")
                    .and_then(Value::as_u64)
                    .and_then(|bits| u32::try_from(bits).ok())
                    .and_then(Curve::of_size)
                    .unwrap_or(Curve::P256),
            };
            key_props.insert("crv".to_owned(), json!(curve.as_str()));
            key_props.insert("key_size".to_owned(), json!(curve.bits()));
        }

        let secret_props = section(policy, "secret_props")?;
        default_field(secret_props, "contentType", json!(secrets::PKCS12));
        let content_type = secret_props
            .get("contentType")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if !content_type.eq_ignore_ascii_case(secrets::PKCS12)
            && !content_type.eq_ignore_ascii_case(secrets::PEM)
        {
            return Err(bad(format!(
                "The content type '{content_type}' is not supported; use application/x-pkcs12 \
                 or application/x-pem-file."
            )));
        }

        let x509 = section(policy, "x509_props")?;
        let default_usage = if kty.is_ec() {
            json!(["digitalSignature"])
        } else {
            json!(["digitalSignature", "keyEncipherment"])
        };
        default_field(x509, "key_usage", default_usage);
        default_field(
            x509,
            "ekus",
            json!(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]),
        );
        default_field(x509, "validity_months", json!(12));
        if !x509
            .get("validity_months")
            .and_then(Value::as_u64)
            .is_some_and(|m| (1..=1200).contains(&m))
        {
            return Err(bad(
                "validity_months must be an integer between 1 and 1200.",
            ));
        }
        if x509.get("sans").is_some_and(|sans| {
            sans.as_object().is_some_and(|s| {
                s.values()
                    .all(|v| v.is_null() || v.as_array().is_some_and(Vec::is_empty))
            })
        }) {
            x509.remove("sans");
        }

        default_field(
            policy,
            "lifetime_actions",
            json!([{ "trigger": { "lifetime_percentage": 80 }, "action": { "action_type": "AutoRenew" } }]),
        );
        let issuer = section(policy, "issuer")?;
        default_field(issuer, "name", json!(default_issuer));
        let attributes = section(policy, "attributes")?;
        default_field(attributes, "enabled", json!(true));
        attributes.insert("created".to_owned(), json!(now));
        attributes.insert("updated".to_owned(), json!(now));

        let policy = Self(value);
        pki::validate(&policy.request()).map_err(|e| bad(e.to_string()))?;
        Ok(policy)
    }

    /// Applies a `PATCH .../policy` body and checks the result again.
    pub fn updated(&self, patch: &Value, now: i64) -> Result<Self, ServiceError> {
        let mut value = self.0.clone();
        merge(&mut value, patch);
        let created = self.0["attributes"]["created"].clone();
        let mut policy = Self::complete(Some(&value), self.issuer(), now)?;
        policy.0["attributes"]["created"] = created;
        Ok(policy)
    }

    /// Says what an imported certificate is: its key's type and size or curve, its subject and
    /// DNS names and its validity, as the service derives them.
    pub fn describe_import(
        &mut self,
        kty: KeyType,
        bits: usize,
        subject: &str,
        dns_names: &[String],
        validity_months: u32,
    ) {
        let key_props = &mut self.0["key_props"];
        key_props["kty"] = json!(kty.as_str());
        key_props["key_size"] = json!(bits);
        if let Some(curve) =
            Curve::of_size(u32::try_from(bits).unwrap_or(0)).filter(|_| kty.is_ec())
        {
            key_props["crv"] = json!(curve.as_str());
        } else if let Some(map) = key_props.as_object_mut() {
            map.remove("crv");
        }
        let x509 = &mut self.0["x509_props"];
        x509["subject"] = json!(subject);
        x509["validity_months"] = json!(validity_months.max(1));
        if !dns_names.is_empty() {
            x509["sans"] = json!({ "dns_names": dns_names });
        }
    }

    /// The policy JSON with its `id`.
    pub fn render(&self, base: &str, name: &str) -> Value {
        let mut value = self.0.clone();
        value["id"] = json!(format!("{base}/certificates/{name}/policy"));
        value
    }

    /// Whether the policy names a subject or at least one SAN (the service needs one of them
    /// to issue).
    pub fn has_subject_or_sans(&self) -> bool {
        let request = self.request();
        !request.subject.trim().is_empty()
            || !request.dns_names.is_empty()
            || !request.emails.is_empty()
            || !request.ip_addresses.is_empty()
            || !request.uris.is_empty()
            || !strings(self.0["x509_props"]["sans"].get("upns")).is_empty()
    }

    /// The key type.
    pub fn key_type(&self) -> KeyType {
        self.0["key_props"]["kty"]
            .as_str()
            .and_then(KeyType::parse)
            .unwrap_or(KeyType::Rsa)
    }

    /// The key size in bits (for EC: the curve's).
    pub fn key_size(&self) -> u32 {
        self.0["key_props"]["key_size"]
            .as_u64()
            .and_then(|s| u32::try_from(s).ok())
            .unwrap_or(2048)
    }

    /// The curve of an EC key.
    pub fn curve(&self) -> Option<Curve> {
        self.0["key_props"]["crv"].as_str().and_then(Curve::parse)
    }

    /// The backing secret's content type.
    pub fn content_type(&self) -> &str {
        self.0["secret_props"]["contentType"]
            .as_str()
            .unwrap_or(secrets::PKCS12)
    }

    /// Whether the backing secret holds a PEM file (else a PFX).
    pub fn is_pem(&self) -> bool {
        self.content_type().eq_ignore_ascii_case(secrets::PEM)
    }

    /// The issuer name (`Self`, `Unknown`, ...).
    pub fn issuer(&self) -> &str {
        self.0["issuer"]["name"].as_str().unwrap_or(UNKNOWN_ISSUER)
    }

    /// Validity in months.
    pub fn validity_months(&self) -> u32 {
        self.0["x509_props"]["validity_months"]
            .as_u64()
            .and_then(|m| u32::try_from(m).ok())
            .unwrap_or(12)
    }

    /// Whether new versions are enabled (`policy.attributes.enabled`).
    pub fn enabled(&self) -> bool {
        self.0["attributes"]["enabled"].as_bool().unwrap_or(true)
    }

    /// What a new certificate or CSR says.
    pub fn request(&self) -> CertificateRequest {
        let x509 = &self.0["x509_props"];
        CertificateRequest {
            subject: x509["subject"].as_str().unwrap_or_default().to_owned(),
            dns_names: strings(x509["sans"].get("dns_names")),
            emails: strings(x509["sans"].get("emails")),
            ip_addresses: strings(x509["sans"].get("ipAddresses")),
            uris: strings(x509["sans"].get("uris")),
            ekus: strings(x509.get("ekus")),
            key_usage: strings(x509.get("key_usage")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_python_default_policy_gets_the_service_defaults() {
        let given = json!({"x509_props": {"subject": "CN=DefaultPolicy", "sans": {}}, "issuer": {"name": "Self"}});
        let policy = Policy::complete(Some(&given), UNKNOWN_ISSUER, 100).unwrap();
        let v = policy.render("https://h:1", "c");
        assert_eq!(v["id"], "https://h:1/certificates/c/policy");
        assert_eq!(
            v["key_props"],
            json!({"exportable": true, "kty": "RSA", "key_size": 2048, "reuse_key": false})
        );
        assert_eq!(v["secret_props"]["contentType"], "application/x-pkcs12");
        assert_eq!(v["x509_props"]["validity_months"], 12);
        assert_eq!(
            v["x509_props"]["key_usage"],
            json!(["digitalSignature", "keyEncipherment"])
        );
        assert_eq!(
            v["x509_props"]["ekus"],
            json!(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"])
        );
        assert!(v["x509_props"].get("sans").is_none());
        assert_eq!(
            v["lifetime_actions"][0]["action"]["action_type"],
            "AutoRenew"
        );
        assert_eq!(policy.issuer(), "Self");
        assert!(policy.has_subject_or_sans());
    }

    #[test]
    fn ec_policies_name_their_curve_and_bad_ones_are_refused() {
        let ec =
            json!({"key_props": {"kty": "EC", "crv": "P-384"}, "x509_props": {"subject": "CN=x"}});
        let policy = Policy::complete(Some(&ec), SELF_ISSUER, 1).unwrap();
        assert_eq!(
            (policy.curve(), policy.key_size()),
            (Some(Curve::P384), 384)
        );
        for bad in [
            json!({"key_props": {"kty": "oct"}}),
            json!({"key_props": {"kty": "RSA", "key_size": 1024}}),
            json!({"key_props": {"kty": "EC", "crv": "P-192"}}),
            json!({"secret_props": {"contentType": "text/plain"}}),
            json!({"x509_props": {"subject": "NOPE"}}),
            json!({"x509_props": {"validity_months": 0}}),
        ] {
            assert!(
                Policy::complete(Some(&bad), SELF_ISSUER, 1).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn updates_merge_sections_and_keep_the_rest() {
        let given = json!({"x509_props": {"subject": "CN=a", "validity_months": 6}, "issuer": {"name": "Self"}});
        let policy = Policy::complete(Some(&given), SELF_ISSUER, 1).unwrap();
        let patch = json!({"x509_props": {"validity_months": 24}, "secret_props": {"contentType": "application/x-pem-file"}});
        let updated = policy.updated(&patch, 5).unwrap();
        assert_eq!(updated.validity_months(), 24);
        assert_eq!(updated.request().subject, "CN=a");
        assert!(updated.is_pem());
        let v = updated.render("https://h", "c");
        assert_eq!(
            (
                v["attributes"]["created"].as_i64(),
                v["attributes"]["updated"].as_i64()
            ),
            (Some(1), Some(5))
        );
    }
}
