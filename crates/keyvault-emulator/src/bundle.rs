//! The JSON shapes of the Keys REST API: KeyBundle, KeyItem, DeletedKeyBundle, DeletedKeyItem;
//! the attributes and deleted-object fields every object kind shares; and the pages of list
//! operations (keys, secrets and certificates alike). `kid`, `recoveryId` and `nextLink` are built from the
//! request's Host header (port included), as the service does.
//!
//! Only public key parts (n, e; crv, x, y) are ever rendered.

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::{Value, json};

use crate::b64;
use crate::error::ServiceError;
use crate::http::{Req, Resp, json as json_response};
use crate::store::{Attributes, Deleted, DeletedKey, KeyVersion, Versioned};

/// The attributes object of any vault object.
pub fn attributes(attributes: &Attributes, retention_days: u32) -> Value {
    let mut value = json!({
        "enabled": attributes.enabled,
        "created": attributes.created,
        "updated": attributes.updated,
        "recoveryLevel": "Recoverable+Purgeable",
        "recoverableDays": retention_days,
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
    if let Some((crv, x, y)) = version.material.ec_public_parts() {
        key["crv"] = json!(crv.as_str());
        key["x"] = json!(b64::encode(&x));
        key["y"] = json!(b64::encode(&y));
    }
    key
}

/// A KeyBundle.
pub fn key_bundle(base: &str, version: &KeyVersion, retention_days: u32) -> Value {
    let mut bundle = json!({
        "key": jwk(base, version),
        "attributes": key_attributes(&version.attributes, retention_days),
    });
    if !version.tags.is_empty() {
        bundle["tags"] = json!(version.tags);
    }
    if version.managed {
        bundle["managed"] = json!(true);
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
        "attributes": key_attributes(&version.attributes, retention_days),
    });
    if !version.tags.is_empty() {
        item["tags"] = json!(version.tags);
    }
    item
}

fn key_attributes(attributes: &Attributes, retention_days: u32) -> Value {
    let mut value = self::attributes(attributes, retention_days);
    value["exportable"] = json!(false);
    value
}

/// A deleted object's JSON: its latest version rendered by `render`, plus `recoveryId`,
/// `deletedDate` and `scheduledPurgeDate`.
pub fn deleted<T: Versioned>(
    base: &str,
    deleted: &Deleted<T>,
    render: impl FnOnce(&T) -> Value,
) -> Value {
    let Some(latest) = deleted.latest() else {
        return json!({});
    };
    let mut value = render(latest);
    value["recoveryId"] = json!(format!(
        "{base}/{}/{}",
        T::KIND.deleted_collection(),
        latest.name()
    ));
    value["deletedDate"] = json!(deleted.deleted_date);
    value["scheduledPurgeDate"] = json!(deleted.scheduled_purge_date);
    value
}

/// A DeletedKeyBundle (the latest version).
pub fn deleted_bundle(base: &str, deleted: &DeletedKey, retention_days: u32) -> Value {
    self::deleted(base, deleted, |latest| {
        key_bundle(base, latest, retention_days)
    })
}

/// A DeletedKeyItem.
pub fn deleted_item(base: &str, deleted: &DeletedKey, retention_days: u32) -> Value {
    self::deleted(base, deleted, |latest| {
        key_item(base, latest, false, retention_days)
    })
}

/// The attribute changes a request body's `attributes` carries; `Some(None)` clears nbf/exp.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AttributeUpdate {
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New not-before.
    pub nbf: Option<Option<i64>>,
    /// New expiry.
    pub exp: Option<Option<i64>>,
}

fn time_field(attributes: &Value, name: &str) -> Result<Option<Option<i64>>, ServiceError> {
    match attributes.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(value) => value.as_i64().map(|t| Some(Some(t))).ok_or_else(|| {
            ServiceError::bad_parameter(format!("Attribute '{name}' must be a unix time."))
        }),
    }
}

/// Reads `attributes.{enabled,nbf,exp}` of a request body.
pub fn parse_attributes(body: &Value) -> Result<AttributeUpdate, ServiceError> {
    let attributes = body.get("attributes").cloned().unwrap_or(Value::Null);
    let enabled = match attributes.get("enabled") {
        None | Some(Value::Null) => None,
        Some(Value::Bool(b)) => Some(*b),
        Some(_) => {
            return Err(ServiceError::bad_parameter(
                "Attribute 'enabled' must be a boolean.",
            ));
        }
    };
    Ok(AttributeUpdate {
        enabled,
        nbf: time_field(&attributes, "nbf")?,
        exp: time_field(&attributes, "exp")?,
    })
}

/// Reads `tags` of a request body.
pub fn parse_tags(body: &Value) -> Result<Option<BTreeMap<String, String>>, ServiceError> {
    match body.get("tags") {
        None | Some(Value::Null) => Ok(None),
        Some(value) => serde_json::from_value(value.clone())
            .map(Some)
            .map_err(|_| {
                ServiceError::bad_parameter("Property 'tags' must map strings to strings.")
            }),
    }
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

/// Answers a list request: reads `maxresults` (1..=25; `default_max` when absent) and
/// `$skiptoken` from the request and renders that page of `items` (a certificates list's
/// `includePending` is kept in the next link).
pub fn paged(
    req: &Req,
    default_max: usize,
    path: &str,
    items: Vec<Value>,
) -> Result<Resp, ServiceError> {
    let max = match req.query("maxresults") {
        Some(text) => match text.parse::<usize>() {
            Ok(n @ 1..=25) => n,
            _ => {
                return Err(ServiceError::bad_parameter(
                    "maxresults must be an integer between 1 and 25.",
                ));
            }
        },
        None => default_max,
    };
    let skip = match req.query("$skiptoken") {
        Some(token) => parse_skiptoken(token)
            .ok_or_else(|| ServiceError::bad_parameter("The $skiptoken is not valid."))?,
        None => 0,
    };
    let api_version = req.query("api-version").unwrap_or_default();
    let mut page = page(&req.base(), path, api_version, items, skip, max);
    // The next page must list the same items: carry the filter along.
    if let (Some(include), Some(link)) = (req.query("includePending"), page["nextLink"].as_str()) {
        page["nextLink"] = json!(format!("{link}&includePending={include}"));
    }
    Ok(json_response(StatusCode::OK, &page))
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
