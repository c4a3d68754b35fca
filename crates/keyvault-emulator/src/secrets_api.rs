//! The Secrets REST API: routing of `/secrets` and `/deletedsecrets` paths (empty version =
//! latest, trailing slashes tolerated) and the handlers — set, get, update, list, list
//! versions, soft delete, get/list deleted, recover, purge.
//!
//! Handlers run after the router has authenticated the caller, applied faults and checked the
//! api-version and the caller's permission. A disabled secret answers 403 SecretDisabled; an
//! expired or not-yet-valid one is still returned, as the service does. A certificate's backing
//! secret cannot be set or deleted directly (403 SecretManagedByKeyVault).

use std::collections::BTreeMap;
use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::Value;
use tokio::time::Instant;

use crate::bundle;
use crate::error::ServiceError;
use crate::faults::BudgetClass;
use crate::http::{Req, Resp, empty, json as json_response};
use crate::model::Operation;
use crate::pki;
use crate::secrets::{self, MAX_CONTENT_TYPE_CHARS, MAX_VALUE_BYTES, SecretVersion};
use crate::state::{Shared, now_secs};
use crate::store::valid_name;

/// A recognised Secrets REST route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `PUT /secrets/{n}`
    Set(String),
    /// `GET /secrets/{n}/{v?}`
    Get(String, String),
    /// `PATCH /secrets/{n}/{v?}`
    Update(String, String),
    /// `GET /secrets`
    List,
    /// `GET /secrets/{n}/versions`
    ListVersions(String),
    /// `DELETE /secrets/{n}`
    Delete(String),
    /// `GET /deletedsecrets/{n}`
    GetDeleted(String),
    /// `GET /deletedsecrets`
    ListDeleted,
    /// `POST /deletedsecrets/{n}/recover`
    Recover(String),
    /// `DELETE /deletedsecrets/{n}`
    Purge(String),
}

impl Route {
    /// The operation the route performs.
    pub fn operation(&self) -> Operation {
        match self {
            Self::Set(_) => Operation::SetSecret,
            Self::Get(..) => Operation::GetSecret,
            Self::Update(..) => Operation::UpdateSecret,
            Self::List => Operation::ListSecrets,
            Self::ListVersions(_) => Operation::ListSecretVersions,
            Self::Delete(_) => Operation::DeleteSecret,
            Self::GetDeleted(_) => Operation::GetDeletedSecret,
            Self::ListDeleted => Operation::ListDeletedSecrets,
            Self::Recover(_) => Operation::RecoverSecret,
            Self::Purge(_) => Operation::PurgeSecret,
        }
    }

    /// The secret the route names, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Set(name)
            | Self::Get(name, _)
            | Self::Update(name, _)
            | Self::ListVersions(name)
            | Self::Delete(name)
            | Self::GetDeleted(name)
            | Self::Recover(name)
            | Self::Purge(name) => Some(name),
            Self::List | Self::ListDeleted => None,
        }
    }
}

/// Matches a path under `/secrets` or `/deletedsecrets`. `None`: not a secrets path;
/// `Some(Err)`: a secrets path with a method or shape it does not serve.
pub fn route(method: &Method, segments: &[String]) -> Option<Result<Route, ServiceError>> {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let first = s.first()?.to_ascii_lowercase();
    let not_allowed = || Some(Err(ServiceError::method_not_allowed()));
    let name = |i: usize| s[i].to_owned();
    if first == "secrets" {
        let route = match (s.len(), method) {
            (1, &Method::GET) => Route::List,
            (2, &Method::GET) => Route::Get(name(1), String::new()),
            (2, &Method::PUT) => Route::Set(name(1)),
            (2, &Method::DELETE) => Route::Delete(name(1)),
            (2, &Method::PATCH) => Route::Update(name(1), String::new()),
            (3, &Method::GET) if s[2].eq_ignore_ascii_case("versions") => {
                Route::ListVersions(name(1))
            }
            (3, &Method::GET) => Route::Get(name(1), name(2)),
            (3, &Method::PATCH) => Route::Update(name(1), name(2)),
            (1..=3, _) => return not_allowed(),
            _ => return Some(Err(ServiceError::no_route(&segments.join("/")))),
        };
        return Some(Ok(route));
    }
    if first == "deletedsecrets" {
        let route = match (s.len(), method) {
            (1, &Method::GET) => Route::ListDeleted,
            (2, &Method::GET) => Route::GetDeleted(name(1)),
            (2, &Method::DELETE) => Route::Purge(name(1)),
            (3, &Method::POST) if s[2].eq_ignore_ascii_case("recover") => Route::Recover(name(1)),
            _ => return not_allowed(),
        };
        return Some(Ok(route));
    }
    None
}

fn charge(shared: &Shared, class: BudgetClass) -> Result<(), ServiceError> {
    shared.faults().charge(class, Instant::now())
}

/// Serves a routed, authenticated, authorised request.
pub async fn handle(
    shared: &Arc<Shared>,
    route: Route,
    req: &mut Req,
) -> Result<Resp, ServiceError> {
    let base = req.base();
    let days = shared.config.retention_days;
    let ok = |value: Value| Ok(json_response(StatusCode::OK, &value));
    match route {
        Route::Set(name) => {
            let body = req.json().await?;
            let version = parse_set(&name, &body)?;
            charge(shared, BudgetClass::SecretSet)?;
            let mut store = shared.secrets();
            if store.get(&name, None).is_ok_and(|latest| latest.managed) {
                return Err(ServiceError::managed_by_key_vault("set"));
            }
            let version = store.add_version(version)?;
            ok(secrets::bundle(
                &base,
                &version,
                version.value.expose(),
                days,
            ))
        }
        Route::Get(name, version) => {
            let out = out_content_type(req)?;
            charge(shared, BudgetClass::SecretGet)?;
            crate::certs_api::settle(shared, &name);
            let secret = shared.secrets().get(&name, Some(&version))?.clone();
            if !secret.attributes.enabled {
                return Err(ServiceError::secret_disabled());
            }
            let value = converted_value(&secret, out)?;
            ok(secrets::bundle(&base, &secret, &value, days))
        }
        Route::Update(name, version) => {
            let body = req.json().await?;
            let update = SecretUpdate::parse(&body)?;
            charge(shared, BudgetClass::Other)?;
            let mut store = shared.secrets();
            let secret = store.get_mut(&name, Some(&version))?;
            update.apply(secret);
            ok(secrets::bundle_without_value(&base, secret, days))
        }
        Route::List => {
            charge(shared, BudgetClass::Other)?;
            let items = shared
                .secrets()
                .latest_versions()
                .into_iter()
                .map(|v| secrets::item(&base, v, false, days))
                .collect();
            bundle::paged(req, shared.config.page_size, "/secrets", items)
        }
        Route::ListVersions(name) => {
            charge(shared, BudgetClass::Other)?;
            let store = shared.secrets();
            let mut versions: Vec<&SecretVersion> = store.versions(&name)?.iter().collect();
            versions.sort_by(|a, b| a.version.cmp(&b.version));
            let path = format!("/secrets/{}/versions", versions[0].name);
            let items = versions
                .into_iter()
                .map(|v| secrets::item(&base, v, true, days))
                .collect();
            bundle::paged(req, shared.config.page_size, &path, items)
        }
        Route::Delete(name) => {
            charge(shared, BudgetClass::Other)?;
            let mut store = shared.secrets();
            if store.get(&name, None)?.managed {
                return Err(ServiceError::managed_by_key_vault("delete"));
            }
            let deleted = store.delete(&name, now_secs(), days)?;
            ok(secrets::deleted_bundle(&base, &deleted, days))
        }
        Route::GetDeleted(name) => {
            charge(shared, BudgetClass::Other)?;
            let store = shared.secrets();
            ok(secrets::deleted_bundle(
                &base,
                store.get_deleted(&name)?,
                days,
            ))
        }
        Route::ListDeleted => {
            charge(shared, BudgetClass::Other)?;
            let items = shared
                .secrets()
                .all_deleted()
                .into_iter()
                .map(|d| secrets::deleted_item(&base, d, days))
                .collect();
            bundle::paged(req, shared.config.page_size, "/deletedsecrets", items)
        }
        Route::Recover(name) => {
            charge(shared, BudgetClass::Other)?;
            let version = shared.secrets().recover(&name)?;
            ok(secrets::bundle_without_value(&base, &version, days))
        }
        Route::Purge(name) => {
            charge(shared, BudgetClass::Other)?;
            shared.secrets().purge(&name)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
    }
}

/// The `outContentType` a GET asks for (2025-07-01+): only a PFX → PEM conversion exists.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum OutContentType {
    Pem,
    Pkcs12,
}

fn out_content_type(req: &Req) -> Result<Option<OutContentType>, ServiceError> {
    match req.query("outContentType") {
        None | Some("") => Ok(None),
        Some(text) if text.eq_ignore_ascii_case(secrets::PEM) => Ok(Some(OutContentType::Pem)),
        Some(text) if text.eq_ignore_ascii_case(secrets::PKCS12) => {
            Ok(Some(OutContentType::Pkcs12))
        }
        Some(text) => Err(ServiceError::bad_parameter(format!(
            "The outContentType '{text}' is not supported; use application/x-pem-file or \
             application/x-pkcs12."
        ))),
    }
}

fn converted_value(
    secret: &SecretVersion,
    out: Option<OutContentType>,
) -> Result<String, ServiceError> {
    let stored = secret.content_type.as_deref().unwrap_or_default();
    let is_pfx = stored.eq_ignore_ascii_case(secrets::PKCS12);
    let is_pem = stored.eq_ignore_ascii_case(secrets::PEM);
    match out {
        None => Ok(secret.value.expose().to_owned()),
        Some(OutContentType::Pkcs12) if is_pfx => Ok(secret.value.expose().to_owned()),
        Some(OutContentType::Pem) if is_pem => Ok(secret.value.expose().to_owned()),
        Some(OutContentType::Pem) if is_pfx => pki::pfx_base64_to_pem(secret.value.expose())
            .map(|pem| pem.to_string())
            .map_err(|e| ServiceError::bad_parameter(e.to_string())),
        Some(_) => Err(ServiceError::bad_parameter(
            "outContentType converts a certificate's application/x-pkcs12 secret to \
             application/x-pem-file only.",
        )),
    }
}

fn string_field<'a>(body: &'a Value, name: &str) -> Result<Option<&'a str>, ServiceError> {
    match body.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(text)) => Ok(Some(text)),
        Some(_) => Err(ServiceError::bad_parameter(format!(
            "Property '{name}' must be a string."
        ))),
    }
}

/// The attributes, content type and tags a PUT or PATCH carries.
#[derive(Debug, Default)]
struct SecretUpdate {
    content_type: Option<String>,
    enabled: Option<bool>,
    nbf: Option<Option<i64>>,
    exp: Option<Option<i64>>,
    tags: Option<BTreeMap<String, String>>,
}

impl SecretUpdate {
    fn parse(body: &Value) -> Result<Self, ServiceError> {
        let content_type = string_field(body, "contentType")?.map(str::to_owned);
        if content_type
            .as_ref()
            .is_some_and(|c| c.chars().count() > MAX_CONTENT_TYPE_CHARS)
        {
            return Err(ServiceError::bad_parameter(
                "The contentType exceeds 255 characters.",
            ));
        }
        let attributes = bundle::parse_attributes(body)?;
        Ok(Self {
            content_type,
            enabled: attributes.enabled,
            nbf: attributes.nbf,
            exp: attributes.exp,
            tags: bundle::parse_tags(body)?,
        })
    }

    fn apply(self, secret: &mut SecretVersion) {
        if let Some(content_type) = self.content_type {
            secret.content_type = Some(content_type);
        }
        if let Some(enabled) = self.enabled {
            secret.attributes.enabled = enabled;
        }
        if let Some(nbf) = self.nbf {
            secret.attributes.nbf = nbf;
        }
        if let Some(exp) = self.exp {
            secret.attributes.exp = exp;
        }
        if let Some(tags) = self.tags {
            secret.tags = tags;
        }
        secret.attributes.updated = now_secs();
    }
}

fn parse_set(name: &str, body: &Value) -> Result<SecretVersion, ServiceError> {
    if !valid_name(name) {
        return Err(ServiceError::bad_parameter(format!(
            "The secret name '{name}' is invalid: use 1-127 characters 0-9, a-z, A-Z and -."
        )));
    }
    let value = string_field(body, "value")?
        .ok_or_else(|| ServiceError::bad_parameter("Property 'value' is required."))?;
    if value.len() > MAX_VALUE_BYTES {
        return Err(ServiceError::bad_parameter(
            "The secret value exceeds the maximum size of 25 KB.",
        ));
    }
    let update = SecretUpdate::parse(body)?;
    let mut version = SecretVersion::new(name, value.to_owned(), now_secs())?;
    update.apply(&mut version);
    version.attributes.updated = version.attributes.created;
    Ok(version)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::segments;

    fn r(method: Method, path: &str) -> Route {
        route(&method, &segments(path)).unwrap().unwrap()
    }

    #[test]
    fn sdk_path_forms_route_as_the_service_does() {
        assert_eq!(
            r(Method::GET, "/secrets/db/"),
            Route::Get("db".into(), String::new())
        );
        assert_eq!(
            r(Method::GET, "/secrets/db/abc"),
            Route::Get("db".into(), "abc".into())
        );
        assert_eq!(
            r(Method::GET, "/secrets/db/versions"),
            Route::ListVersions("db".into())
        );
        assert_eq!(r(Method::PUT, "/secrets/db"), Route::Set("db".into()));
        assert_eq!(
            r(Method::PATCH, "/secrets/db/"),
            Route::Update("db".into(), String::new())
        );
        assert_eq!(r(Method::GET, "/secrets/"), Route::List);
        assert_eq!(r(Method::GET, "/deletedsecrets"), Route::ListDeleted);
        assert_eq!(
            r(Method::POST, "/deletedsecrets/db/recover"),
            Route::Recover("db".into())
        );
        assert_eq!(
            r(Method::DELETE, "/deletedsecrets/db"),
            Route::Purge("db".into())
        );
        assert!(route(&Method::GET, &segments("/keys/x")).is_none());
        assert!(matches!(
            route(&Method::POST, &segments("/secrets/db")),
            Some(Err(_))
        ));
    }

    #[test]
    fn set_validates_the_service_limits() {
        let body = |value: &str| serde_json::json!({ "value": value });
        assert!(parse_set("db", &body("x")).is_ok());
        assert_eq!(
            parse_set("db", &serde_json::json!({})).unwrap_err().code(),
            "BadParameter"
        );
        assert!(parse_set("db", &body(&"x".repeat(MAX_VALUE_BYTES))).is_ok());
        assert!(parse_set("db", &body(&"x".repeat(MAX_VALUE_BYTES + 1))).is_err());
        assert!(parse_set("a_b", &body("x")).is_err());
        let long_type = serde_json::json!({ "value": "x", "contentType": "t".repeat(256) });
        assert!(parse_set("db", &long_type).is_err());
        let set = parse_set(
            "db",
            &serde_json::json!({
                "value": "x", "contentType": "text/plain", "tags": {"a": "b"},
                "attributes": {"enabled": false, "nbf": 10, "exp": 20}
            }),
        )
        .unwrap();
        assert_eq!(set.content_type.as_deref(), Some("text/plain"));
        assert!(!set.attributes.enabled);
        assert_eq!(
            (set.attributes.nbf, set.attributes.exp),
            (Some(10), Some(20))
        );
        assert_eq!(set.tags.get("a").map(String::as_str), Some("b"));
    }
}
