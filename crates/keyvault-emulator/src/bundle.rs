//! The JSON shapes of the Keys REST API: KeyBundle, KeyItem, DeletedKeyBundle, DeletedKeyItem,
//! and the pages of list operations. `kid`, `recoveryId` and `nextLink` are built from the
//! request's Host header (port included), as the service does.
//!
//! Only public key parts (n, e) are ever rendered.

use serde_json::{Value, json};

use crate::b64;
use crate::store::{Attributes, DeletedKey, KeyVersion};

/// The attributes object.
pub fn attributes(attributes: &Attributes, retention_days: u32) -> Value {
    let mut value = json!({
        "enabled": attributes.enabled,
        "created": attributes.created,
        "updated": attributes.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": retention_days,
        "exportable": false,
    });
    if let Some(nbf) = attributes.nbf {
        value["nbf"] = json!(nbf);
    }
    if let Some(exp) = attributes.exp {
        value["exp"] = json!(exp);
    }
    value
}

/// The versioned kid.
pub fn kid(base: &str, version: &KeyVersion) -> String {
    format!("{base}/keys/{}/{}", version.name, version.version)
}

/// The JSON web key (public parts only).
pub fn jwk(base: &str, version: &KeyVersion) -> Value {
    let mut key = json!({
        "kid": kid(base, version),
        "kty": version.kty.as_str(),
        "key_ops": version.key_ops.iter().map(|op| op.as_str()).collect::<Vec<_>>(),
    });
    if let Some((n, e)) = version.material.rsa_public_parts() {
        key["n"] = json!(b64::encode(&n));
        key["e"] = json!(b64::encode(&e));
    }
    key
}

/// A KeyBundle.
pub fn key_bundle(base: &str, version: &KeyVersion, retention_days: u32) -> Value {
    let mut bundle = json!({
        "key": jwk(base, version),
        "attributes": attributes(&version.attributes, retention_days),
    });
    if !version.tags.is_empty() {
        bundle["tags"] = json!(version.tags);
    }
    bundle
}

/// A KeyItem: kid without version in `GET /keys`, with version in `GET /keys/{n}/versions`.
pub fn key_item(
    base: &str,
    version: &KeyVersion,
    with_version: bool,
    retention_days: u32,
) -> Value {
    let kid = if with_version {
        kid(base, version)
    } else {
        format!("{base}/keys/{}", version.name)
    };
    let mut item = json!({
        "kid": kid,
        "attributes": attributes(&version.attributes, retention_days),
    });
    if !version.tags.is_empty() {
        item["tags"] = json!(version.tags);
    }
    item
}

fn add_deleted_fields(value: &mut Value, base: &str, name: &str, deleted: &DeletedKey) {
    value["recoveryId"] = json!(format!("{base}/deletedkeys/{name}"));
    value["deletedDate"] = json!(deleted.deleted_date);
    value["scheduledPurgeDate"] = json!(deleted.scheduled_purge_date);
}

/// A DeletedKeyBundle (the latest version).
pub fn deleted_bundle(base: &str, deleted: &DeletedKey, retention_days: u32) -> Value {
    let Some(latest) = deleted.latest() else {
        return json!({});
    };
    let mut value = key_bundle(base, latest, retention_days);
    add_deleted_fields(&mut value, base, &latest.name, deleted);
    value
}

/// A DeletedKeyItem.
pub fn deleted_item(base: &str, deleted: &DeletedKey, retention_days: u32) -> Value {
    let Some(latest) = deleted.latest() else {
        return json!({});
    };
    let mut value = key_item(base, latest, false, retention_days);
    add_deleted_fields(&mut value, base, &latest.name, deleted);
    value
}

/// One page of a list: `value` and `nextLink` (null on the last page). `skip` is the offset
/// this page starts at; `path` the list's path for the next link.
pub fn page(
    base: &str,
    path: &str,
    api_version: &str,
    items: Vec<Value>,
    skip: usize,
    max: usize,
) -> Value {
    let total = items.len();
    let value: Vec<Value> = items.into_iter().skip(skip).take(max).collect();
    let next = skip + value.len();
    let next_link = if next < total {
        json!(format!(
            "{base}{path}?api-version={api_version}&$skiptoken={}&maxresults={max}",
            b64::encode(format!("offset:{next}").as_bytes())
        ))
    } else {
        Value::Null
    };
    json!({ "value": value, "nextLink": next_link })
}

/// Parses a `$skiptoken` made by [`page`].
pub fn parse_skiptoken(token: &str) -> Option<usize> {
    let text = String::from_utf8(b64::decode_plain(token)?).ok()?;
    text.strip_prefix("offset:")?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_link_to_the_next_offset_and_end_with_null() {
        let items: Vec<Value> = (0..5).map(|i| json!(i)).collect();
        let first = page("https://h:1", "/keys", "7.5", items.clone(), 0, 2);
        assert_eq!(first["value"], json!([0, 1]));
        let link = first["nextLink"].as_str().unwrap();
        assert!(link.starts_with("https://h:1/keys?api-version=7.5&$skiptoken="));
        let token = link
            .split("$skiptoken=")
            .nth(1)
            .unwrap()
            .split('&')
            .next()
            .unwrap();
        assert_eq!(parse_skiptoken(token), Some(2));
        let last = page("https://h:1", "/keys", "7.5", items, 4, 2);
        assert_eq!(last["value"], json!([4]));
        assert!(last["nextLink"].is_null());
    }
}
