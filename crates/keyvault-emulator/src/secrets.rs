//! The vault's secrets: one stored version ([`SecretVersion`]) and the JSON shapes the Secrets
//! REST API answers with (SecretBundle, SecretItem, DeletedSecretBundle, DeletedSecretItem).
//!
//! A secret's value is held in a zeroizing string whose `Debug` is redacted; it is rendered in
//! a SecretBundle only, never in list items, deleted bundles or logs. A certificate's backing
//! secret is an ordinary version marked `managed`, which adds `kid` and `managed: true`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use serde_json::{Value, json};
use zeroize::Zeroizing;

use crate::bundle;
use crate::error::ServiceError;
use crate::model::ObjectKind;
use crate::store::{Attributes, Collection, Deleted, new_version};

/// The most a secret value may hold: 25 KB, as the service allows.
pub const MAX_VALUE_BYTES: usize = 25 * 1024;

/// The most a content type may hold.
pub const MAX_CONTENT_TYPE_CHARS: usize = 255;

/// `application/x-pkcs12`: a base64 PFX (a certificate's backing secret).
pub const PKCS12: &str = "application/x-pkcs12";

/// `application/x-pem-file`: a PEM private key and certificate chain.
pub const PEM: &str = "application/x-pem-file";

/// A secret value: zeroized on drop, shared between versions' clones, never shown by `Debug`.
#[derive(Clone)]
pub struct SecretValue(Arc<Zeroizing<String>>);

impl SecretValue {
    /// Wraps a value.
    pub fn new(value: String) -> Self {
        Self(Arc::new(Zeroizing::new(value)))
    }

    /// The value, for a SecretBundle (the one place the service returns it).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for SecretValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SecretValue([redacted])")
    }
}

/// One version of a secret.
#[derive(Debug, Clone)]
pub struct SecretVersion {
    /// The name as created.
    pub name: String,
    /// 32 lowercase hex digits.
    pub version: String,
    /// The value.
    pub value: SecretValue,
    /// The content type, as stored.
    pub content_type: Option<String>,
    /// Attributes.
    pub attributes: Attributes,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Whether the secret backs a certificate (same name and version as its key).
    pub managed: bool,
}

impl SecretVersion {
    /// A new enabled version with a fresh version id.
    pub fn new(name: &str, value: String, now: i64) -> Result<Self, ServiceError> {
        Ok(Self {
            name: name.to_owned(),
            version: new_version()?,
            value: SecretValue::new(value),
            content_type: None,
            attributes: Attributes::created_at(now),
            tags: BTreeMap::new(),
            managed: false,
        })
    }
}

crate::store::versioned!(SecretVersion, ObjectKind::Secret);

/// A public view of a secret version, as tests read it (no value: see
/// `RunningEmulator::secret_value`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SecretInfo {
    /// The name.
    pub name: String,
    /// The version.
    pub version: String,
    /// `https://{host}/secrets/{name}/{version}`.
    pub id: String,
    /// The content type.
    pub content_type: Option<String>,
    /// Enabled.
    pub enabled: bool,
    /// Not-before.
    pub nbf: Option<i64>,
    /// Expiry.
    pub exp: Option<i64>,
    /// Created.
    pub created: i64,
    /// Tags.
    pub tags: BTreeMap<String, String>,
    /// Whether it backs a certificate.
    pub managed: bool,
}

impl SecretInfo {
    /// The view of `version` with ids on `host`.
    pub fn of(version: &SecretVersion, host: &str) -> Self {
        Self {
            name: version.name.clone(),
            version: version.version.clone(),
            id: id(&format!("https://{host}"), version),
            content_type: version.content_type.clone(),
            enabled: version.attributes.enabled,
            nbf: version.attributes.nbf,
            exp: version.attributes.exp,
            created: version.attributes.created,
            tags: version.tags.clone(),
            managed: version.managed,
        }
    }
}

/// What a test sets: the value and, optionally, content type, attributes and tags.
#[derive(Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SecretSpec {
    /// The value.
    pub value: String,
    /// The content type.
    #[serde(default)]
    pub content_type: Option<String>,
    /// Enabled (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Not-before, unix seconds.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// Expiry, unix seconds.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl fmt::Debug for SecretSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretSpec")
            .field("value", &"[redacted]")
            .field("content_type", &self.content_type)
            .field("enabled", &self.enabled)
            .field("nbf", &self.nbf)
            .field("exp", &self.exp)
            .field("tags", &self.tags)
            .finish()
    }
}

impl SecretSpec {
    /// A plain value.
    pub fn value(value: &str) -> Self {
        Self {
            value: value.to_owned(),
            ..Self::default()
        }
    }

    /// The version it describes, named `name`, created `now`.
    pub fn to_version(&self, name: &str, now: i64) -> Result<SecretVersion, ServiceError> {
        if !crate::store::valid_name(name) {
            return Err(ServiceError::bad_parameter(format!(
                "The secret name '{name}' is invalid."
            )));
        }
        let mut version = SecretVersion::new(name, self.value.clone(), now)?;
        version.content_type.clone_from(&self.content_type);
        version.attributes.enabled = self.enabled.unwrap_or(true);
        version.attributes.nbf = self.nbf;
        version.attributes.exp = self.exp;
        version.tags.clone_from(&self.tags);
        Ok(version)
    }
}

/// All secrets of one vault.
pub type Secrets = Collection<SecretVersion>;

/// The versioned id `https://{host}/secrets/{name}/{version}`.
pub fn id(base: &str, version: &SecretVersion) -> String {
    format!("{base}/secrets/{}/{}", version.name, version.version)
}

/// A bundle's fields besides the value: an item's, plus `kid` on a managed secret.
fn properties(base: &str, version: &SecretVersion, id: String, retention_days: u32) -> Value {
    let mut value = item_properties(version, id, retention_days);
    if version.managed {
        value["kid"] = json!(format!("{base}/keys/{}/{}", version.name, version.version));
    }
    value
}

/// What bundles and items share (a SecretItem has no `kid`).
fn item_properties(version: &SecretVersion, id: String, retention_days: u32) -> Value {
    let mut value = json!({
        "id": id,
        "attributes": bundle::attributes(&version.attributes, retention_days),
    });
    if let Some(content_type) = &version.content_type {
        value["contentType"] = json!(content_type);
    }
    if !version.tags.is_empty() {
        value["tags"] = json!(version.tags);
    }
    if version.managed {
        value["managed"] = json!(true);
    }
    value
}

/// A SecretBundle with `value` (already converted, for `outContentType`).
pub fn bundle(base: &str, version: &SecretVersion, value: &str, retention_days: u32) -> Value {
    let mut bundle = properties(base, version, id(base, version), retention_days);
    bundle["value"] = json!(value);
    bundle
}

/// A SecretBundle without the value (recover answers, delete answers).
pub fn bundle_without_value(base: &str, version: &SecretVersion, retention_days: u32) -> Value {
    properties(base, version, id(base, version), retention_days)
}

/// A SecretItem: base id in `GET /secrets`, versioned id in `GET /secrets/{n}/versions`.
pub fn item(base: &str, version: &SecretVersion, with_version: bool, retention_days: u32) -> Value {
    let id = if with_version {
        id(base, version)
    } else {
        format!("{base}/secrets/{}", version.name)
    };
    item_properties(version, id, retention_days)
}

/// A DeletedSecretBundle (the latest version, no value).
pub fn deleted_bundle(base: &str, deleted: &Deleted<SecretVersion>, retention_days: u32) -> Value {
    bundle::deleted(base, deleted, |latest| {
        bundle_without_value(base, latest, retention_days)
    })
}

/// A DeletedSecretItem.
pub fn deleted_item(base: &str, deleted: &Deleted<SecretVersion>, retention_days: u32) -> Value {
    bundle::deleted(base, deleted, |latest| {
        item(base, latest, false, retention_days)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_value_never_shows_in_debug_or_items() {
        let mut version = SecretVersion::new("db", "hunter2".to_owned(), 10).unwrap();
        version.content_type = Some("text/plain".to_owned());
        assert!(!format!("{version:?}").contains("hunter2"));
        let item = item("https://h:1", &version, false, 90);
        assert_eq!(item["id"], "https://h:1/secrets/db");
        assert!(item.get("value").is_none());
        assert_eq!(item["contentType"], "text/plain");
        let full = bundle("https://h:1", &version, version.value.expose(), 90);
        assert_eq!(full["value"], "hunter2");
        assert_eq!(
            full["id"],
            format!("https://h:1/secrets/db/{}", version.version)
        );
        assert!(full.get("kid").is_none() && full.get("managed").is_none());
    }

    #[test]
    fn a_spec_never_shows_its_value_in_debug() {
        let spec = SecretSpec::value("hunter2");
        assert!(!format!("{spec:?}").contains("hunter2"));
        let version = spec.to_version("db", 5).unwrap();
        let info = SecretInfo::of(&version, "h:1");
        assert!(!format!("{info:?}").contains("hunter2"));
        assert_eq!(
            info.id,
            format!("https://h:1/secrets/db/{}", version.version)
        );
    }

    #[test]
    fn a_managed_secret_names_its_key() {
        let mut version = SecretVersion::new("tls", "pfx".to_owned(), 10).unwrap();
        version.managed = true;
        let full = bundle_without_value("https://h:1", &version, 90);
        assert_eq!(full["managed"], true);
        let listed = item("https://h:1", &version, true, 90);
        assert_eq!(listed["managed"], true);
        assert!(listed.get("kid").is_none() && listed.get("value").is_none());
        assert_eq!(
            full["kid"],
            format!("https://h:1/keys/tls/{}", version.version)
        );
    }
}
