//! The Keys REST API: routing of `/keys` and `/deletedkeys` paths (empty version = latest,
//! case-insensitive operation segments, trailing slashes tolerated) and the handlers.
//!
//! Handlers run after the router has authenticated the caller, applied faults and checked the
//! api-version and the caller's permission. Cryptography runs off the async runtime on a
//! shared handle to the key material, never under the store's lock.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::b64;
use crate::bundle;
use crate::crypto::{Algorithm, CryptoError, KeyMaterial, OpenParams, Usage};
use crate::error::ServiceError;
use crate::faults::BudgetClass;
use crate::http::{Req, Resp, empty, json as json_response};
use crate::model::{Curve, KeyOp, KeyType, Operation, VaultKind};
use crate::state::{KeySpec, KeyUpdate, Shared, now_secs};
use crate::store::{KeyVersion, valid_name};
use zeroize::Zeroizing;

/// A recognised Keys REST route.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `POST /keys/{n}/create`
    Create(String),
    /// `PUT /keys/{n}`
    Import(String),
    /// `GET /keys/{n}/{v?}`
    Get(String, String),
    /// `PATCH /keys/{n}/{v?}`
    Update(String, String),
    /// `GET /keys`
    List,
    /// `GET /keys/{n}/versions`
    ListVersions(String),
    /// `POST /keys/{n}/rotate`
    Rotate(String),
    /// `DELETE /keys/{n}`
    Delete(String),
    /// `GET /deletedkeys/{n}`
    GetDeleted(String),
    /// `GET /deletedkeys`
    ListDeleted,
    /// `POST /deletedkeys/{n}/recover`
    Recover(String),
    /// `DELETE /deletedkeys/{n}`
    Purge(String),
    /// `POST /keys/{n}/{v?}/{wrapkey|unwrapkey|encrypt|decrypt}`
    Crypto(String, String, Operation),
}

impl Route {
    /// The operation the route performs.
    pub fn operation(&self) -> Operation {
        match self {
            Self::Create(_) => Operation::CreateKey,
            Self::Import(_) => Operation::ImportKey,
            Self::Get(..) => Operation::GetKey,
            Self::Update(..) => Operation::UpdateKey,
            Self::List => Operation::ListKeys,
            Self::ListVersions(_) => Operation::ListKeyVersions,
            Self::Rotate(_) => Operation::RotateKey,
            Self::Delete(_) => Operation::DeleteKey,
            Self::GetDeleted(_) => Operation::GetDeletedKey,
            Self::ListDeleted => Operation::ListDeletedKeys,
            Self::Recover(_) => Operation::RecoverKey,
            Self::Purge(_) => Operation::PurgeKey,
            Self::Crypto(_, _, op) => *op,
        }
    }

    /// The key the route names, if any.
    pub fn name(&self) -> Option<&str> {
        match self {
            Self::Create(name)
            | Self::Import(name)
            | Self::Get(name, _)
            | Self::Update(name, _)
            | Self::ListVersions(name)
            | Self::Rotate(name)
            | Self::Delete(name)
            | Self::GetDeleted(name)
            | Self::Recover(name)
            | Self::Purge(name)
            | Self::Crypto(name, _, _) => Some(name),
            Self::List | Self::ListDeleted => None,
        }
    }
}

fn crypto_op(segment: &str) -> Option<Operation> {
    match segment.to_ascii_lowercase().as_str() {
        "wrapkey" => Some(Operation::WrapKey),
        "unwrapkey" => Some(Operation::UnwrapKey),
        "encrypt" => Some(Operation::Encrypt),
        "decrypt" => Some(Operation::Decrypt),
        _ => None,
    }
}

/// Matches a path under `/keys` or `/deletedkeys`. `None`: not a keys path at all;
/// `Some(Err)`: a keys path with a method it does not serve.
pub fn route(method: &Method, segments: &[String]) -> Option<Result<Route, ServiceError>> {
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let first = s.first()?.to_ascii_lowercase();
    let not_allowed = || Some(Err(ServiceError::method_not_allowed()));
    let name = |i: usize| s[i].to_owned();
    if first == "keys" {
        let route = match (s.len(), method) {
            (1, &Method::GET) => Route::List,
            (1, _) => return not_allowed(),
            (2, &Method::GET) => Route::Get(name(1), String::new()),
            (2, &Method::PUT) => Route::Import(name(1)),
            (2, &Method::DELETE) => Route::Delete(name(1)),
            (2, &Method::PATCH) => Route::Update(name(1), String::new()),
            (2, _) => return not_allowed(),
            (3, _) => {
                let third = s[2].to_ascii_lowercase();
                match (third.as_str(), method) {
                    ("create", &Method::POST) => Route::Create(name(1)),
                    ("rotate", &Method::POST) => Route::Rotate(name(1)),
                    ("versions", &Method::GET) => Route::ListVersions(name(1)),
                    (op, &Method::POST) if crypto_op(op).is_some() => {
                        Route::Crypto(name(1), String::new(), crypto_op(op)?)
                    }
                    (_, &Method::GET) => Route::Get(name(1), name(2)),
                    (_, &Method::PATCH) => Route::Update(name(1), name(2)),
                    _ => return not_allowed(),
                }
            }
            (4, &Method::POST) => match crypto_op(s[3]) {
                Some(op) => Route::Crypto(name(1), name(2), op),
                None => return Some(Err(ServiceError::no_route(&segments.join("/")))),
            },
            (4, _) => return not_allowed(),
            _ => return Some(Err(ServiceError::no_route(&segments.join("/")))),
        };
        return Some(Ok(route));
    }
    if first == "deletedkeys" {
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

/// The budget a request on `version` draws from.
fn key_class(kind: VaultKind, version: &KeyVersion, crypto: bool) -> BudgetClass {
    match (kind, version.kty.is_rsa()) {
        (VaultKind::ManagedHsm, _) if crypto => BudgetClass::Unthrottled,
        (VaultKind::KeyVault, true) => BudgetClass::Rsa {
            bits: version.bits(),
            hsm: version.kty.is_hsm(),
        },
        _ => BudgetClass::Other,
    }
}

fn charge(shared: &Shared, class: BudgetClass) -> Result<(), ServiceError> {
    shared.faults().charge(class, Instant::now())
}

fn retention(shared: &Shared) -> u32 {
    shared.config.retention_days
}

/// Serves a routed, authenticated, authorised request.
pub async fn handle(
    shared: &Arc<Shared>,
    route: Route,
    req: &mut Req,
) -> Result<Resp, ServiceError> {
    let base = req.base();
    let days = retention(shared);
    match route {
        Route::Create(name) => {
            let body = req.json().await?;
            let spec = create_spec(&body)?;
            charge(
                shared,
                BudgetClass::Create {
                    hsm: spec.kty.is_hsm(),
                },
            )?;
            let version = shared.create_key(&name, &spec).await?;
            Ok(json_response(
                StatusCode::OK,
                &bundle::key_bundle(&base, &version, days),
            ))
        }
        Route::Import(name) => {
            let body = req.json().await?;
            let version = import(shared, &name, &body)?;
            charge(
                shared,
                BudgetClass::Create {
                    hsm: version.kty.is_hsm(),
                },
            )?;
            let version = shared.store().add_version(version)?;
            Ok(json_response(
                StatusCode::OK,
                &bundle::key_bundle(&base, &version, days),
            ))
        }
        Route::Get(name, version) => {
            let key = shared.store().get(&name, Some(&version))?.clone();
            charge(shared, key_class(shared.config.kind, &key, false))?;
            Ok(json_response(
                StatusCode::OK,
                &bundle::key_bundle(&base, &key, days),
            ))
        }
        Route::Update(name, version) => {
            let body = req.json().await?;
            let update = parse_update(&body)?;
            charge(shared, BudgetClass::Other)?;
            let key = shared.update_key(&name, Some(&version), &update)?;
            Ok(json_response(
                StatusCode::OK,
                &bundle::key_bundle(&base, &key, days),
            ))
        }
        Route::List | Route::ListVersions(_) | Route::ListDeleted => {
            charge(shared, BudgetClass::Other)?;
            list(shared, &route, req, &base)
        }
        Route::Rotate(name) => {
            let hsm = shared.store().get(&name, None)?.kty.is_hsm();
            charge(shared, BudgetClass::Create { hsm })?;
            let version = shared.rotate_key(&name).await?;
            Ok(json_response(
                StatusCode::OK,
                &bundle::key_bundle(&base, &version, days),
            ))
        }
        Route::Delete(name) => {
            charge(shared, BudgetClass::Other)?;
            let deleted = shared.store().delete(&name, now_secs(), days)?;
            Ok(json_response(
                StatusCode::OK,
                &bundle::deleted_bundle(&base, &deleted, days),
            ))
        }
        Route::GetDeleted(name) => {
            charge(shared, BudgetClass::Other)?;
            let store = shared.store();
            let deleted = store.get_deleted(&name)?;
            Ok(json_response(
                StatusCode::OK,
                &bundle::deleted_bundle(&base, deleted, days),
            ))
        }
        Route::Recover(name) => {
            charge(shared, BudgetClass::Other)?;
            let version = shared.store().recover(&name)?;
            Ok(json_response(
                StatusCode::OK,
                &bundle::key_bundle(&base, &version, days),
            ))
        }
        Route::Purge(name) => {
            charge(shared, BudgetClass::Other)?;
            shared.store().purge(&name)?;
            Ok(empty(StatusCode::NO_CONTENT))
        }
        Route::Crypto(name, version, op) => {
            let body = req.json().await?;
            crypto(shared, &name, &version, op, &body, &base).await
        }
    }
}

fn list(shared: &Shared, route: &Route, req: &Req, base: &str) -> Result<Resp, ServiceError> {
    let days = retention(shared);
    let store = shared.store();
    let (items, path) = match route {
        Route::List => (
            store
                .latest_versions()
                .into_iter()
                .map(|v| bundle::key_item(base, v, false, days))
                .collect(),
            "/keys".to_owned(),
        ),
        Route::ListVersions(name) => {
            let versions = store.versions(name)?;
            let path = format!(
                "/keys/{}/versions",
                versions.first().map_or(name.as_str(), |v| &v.name)
            );
            (
                versions
                    .iter()
                    .map(|v| bundle::key_item(base, v, true, days))
                    .collect(),
                path,
            )
        }
        _ => (
            store
                .all_deleted()
                .into_iter()
                .map(|d| bundle::deleted_item(base, d, days))
                .collect(),
            "/deletedkeys".to_owned(),
        ),
    };
    bundle::paged(req, shared.config.page_size, &path, items)
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

fn key_ops(body: &Value) -> Result<Option<Vec<KeyOp>>, ServiceError> {
    match body.get("key_ops") {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(ops)) => ops
            .iter()
            .map(|op| {
                op.as_str().and_then(KeyOp::parse).ok_or_else(|| {
                    ServiceError::bad_parameter(format!("Invalid key operation {op}."))
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(Some),
        Some(_) => Err(ServiceError::bad_parameter(
            "Property 'key_ops' must be an array.",
        )),
    }
}

fn parse_update(body: &Value) -> Result<KeyUpdate, ServiceError> {
    let attributes = bundle::parse_attributes(body)?;
    Ok(KeyUpdate {
        enabled: attributes.enabled,
        nbf: attributes.nbf,
        exp: attributes.exp,
        key_ops: key_ops(body)?,
        tags: bundle::parse_tags(body)?,
    })
}

fn parse_kty(text: &str) -> Result<KeyType, ServiceError> {
    KeyType::parse(text).ok_or_else(|| {
        ServiceError::bad_parameter(format!(
            "The key type '{text}' is not supported by the emulator (RSA, RSA-HSM, EC, EC-HSM, \
             oct-HSM)."
        ))
    })
}

fn parse_curve(text: &str) -> Result<Curve, ServiceError> {
    Curve::parse(text).ok_or_else(|| {
        ServiceError::bad_parameter(format!(
            "The curve '{text}' is not supported by the emulator (P-256, P-384, P-521)."
        ))
    })
}

fn create_spec(body: &Value) -> Result<KeySpec, ServiceError> {
    let kty = string_field(body, "kty")?
        .ok_or_else(|| ServiceError::bad_parameter("Property 'kty' is required."))?;
    let size = match body.get("key_size") {
        None | Some(Value::Null) => None,
        Some(value) => Some(
            value
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .ok_or_else(|| {
                    ServiceError::bad_parameter("Property 'key_size' must be an integer.")
                })?,
        ),
    };
    if let Some(exponent) = body.get("public_exponent").and_then(Value::as_u64)
        && exponent != 65537
    {
        return Err(ServiceError::bad_parameter(
            "The emulator supports the public exponent 65537 only.",
        ));
    }
    let crv = string_field(body, "crv")?.map(parse_curve).transpose()?;
    let update = parse_update(body)?;
    Ok(KeySpec {
        kty: parse_kty(kty)?,
        size,
        crv,
        key_ops: update.key_ops,
        enabled: update.enabled,
        nbf: update.nbf.flatten(),
        exp: update.exp.flatten(),
        tags: update.tags.unwrap_or_default(),
    })
}

fn import(shared: &Shared, name: &str, body: &Value) -> Result<KeyVersion, ServiceError> {
    if !valid_name(name) {
        return Err(ServiceError::bad_parameter(format!(
            "The key name '{name}' is invalid."
        )));
    }
    let jwk = body
        .get("key")
        .filter(|k| k.is_object())
        .ok_or_else(|| ServiceError::bad_parameter("Property 'key' is required."))?;
    let hsm = body.get("Hsm").and_then(Value::as_bool).unwrap_or(false);
    let kty_text = string_field(jwk, "kty")?
        .ok_or_else(|| ServiceError::bad_parameter("Property 'key.kty' is required."))?;
    let part = |field: &str| -> Result<Zeroizing<Vec<u8>>, ServiceError> {
        let text = string_field(jwk, field)?.ok_or_else(|| {
            ServiceError::bad_parameter(format!("Property 'key.{field}' is required."))
        })?;
        b64::decode(field, text).map(Zeroizing::new)
    };
    let (kty, material) = match kty_text {
        "RSA" | "RSA-HSM" => {
            let material = KeyMaterial::rsa_from_components(
                &part("n")?,
                &part("e")?,
                &part("d")?,
                &part("p")?,
                &part("q")?,
            )?;
            let kty = if hsm || kty_text == "RSA-HSM" || shared.config.kind == VaultKind::ManagedHsm
            {
                KeyType::RsaHsm
            } else {
                KeyType::Rsa
            };
            (kty, material)
        }
        "oct" | "oct-HSM" => (KeyType::OctHsm, KeyMaterial::oct(part("k")?)?),
        "EC" | "EC-HSM" => {
            let curve = string_field(jwk, "crv")?
                .ok_or_else(|| ServiceError::bad_parameter("Property 'key.crv' is required."))
                .and_then(parse_curve)?;
            let material =
                KeyMaterial::ec_from_components(curve, &part("x")?, &part("y")?, &part("d")?)?;
            let kty = if hsm || kty_text == "EC-HSM" || shared.config.kind == VaultKind::ManagedHsm
            {
                KeyType::EcHsm
            } else {
                KeyType::Ec
            };
            (kty, material)
        }
        other => {
            return Err(parse_kty(other)
                .err()
                .unwrap_or_else(|| ServiceError::bad_parameter("Unsupported key type.")));
        }
    };
    if !kty.allowed_in(shared.config.kind) {
        return Err(ServiceError::bad_parameter(format!(
            "Key type {kty} is not supported by this {}.",
            shared.config.kind.noun()
        )));
    }
    let update = parse_update(body)?;
    let ops = key_ops(jwk)?.unwrap_or_else(|| kty.default_ops());
    let mut version = KeyVersion::new(name, kty, material, ops, now_secs())?;
    version.attributes.enabled = update.enabled.unwrap_or(true);
    version.attributes.nbf = update.nbf.flatten();
    version.attributes.exp = update.exp.flatten();
    version.tags = update.tags.unwrap_or_default();
    Ok(version)
}

fn optional_bytes(body: &Value, field: &str) -> Result<Option<Vec<u8>>, ServiceError> {
    string_field(body, field)?
        .map(|text| b64::decode(field, text))
        .transpose()
}

async fn crypto(
    shared: &Arc<Shared>,
    name: &str,
    version: &str,
    op: Operation,
    body: &Value,
    base: &str,
) -> Result<Resp, ServiceError> {
    let alg_text = string_field(body, "alg")?
        .ok_or_else(|| ServiceError::bad_parameter("Property 'alg' is required."))?;
    let value = string_field(body, "value")?
        .ok_or_else(|| ServiceError::bad_parameter("Property 'value' is required."))?;
    let value = b64::decode("value", value)?;
    let iv = optional_bytes(body, "iv")?;
    let tag = optional_bytes(body, "tag")?;
    let aad = optional_bytes(body, "aad")?;

    let key = shared.store().get(name, Some(version))?.clone();
    charge(shared, key_class(shared.config.kind, &key, true))?;

    let (key_op, opening, usage, op_name) = match op {
        Operation::WrapKey => (KeyOp::WrapKey, false, Usage::KeyWrap, "wrapKey"),
        Operation::UnwrapKey => (KeyOp::UnwrapKey, true, Usage::KeyWrap, "unwrapKey"),
        Operation::Encrypt => (KeyOp::Encrypt, false, Usage::Encryption, "encrypt"),
        _ => (KeyOp::Decrypt, true, Usage::Encryption, "decrypt"),
    };
    if opening && !key.attributes.enabled {
        return Err(ServiceError::key_disabled(op_name));
    }
    if !opening {
        let now = now_secs();
        if key.attributes.exp.is_some_and(|exp| now >= exp) {
            return Err(ServiceError::key_not_valid_now(op_name, true));
        }
        if key.attributes.nbf.is_some_and(|nbf| now < nbf) {
            return Err(ServiceError::key_not_valid_now(op_name, false));
        }
    }
    if !key.key_ops.contains(&key_op) {
        return Err(ServiceError::operation_not_permitted(op_name));
    }
    let alg = Algorithm::parse(alg_text)
        .ok_or_else(|| ServiceError::from(CryptoError::UnknownAlgorithm(alg_text.to_owned())))?;

    let material = Arc::clone(&key.material);
    let kty = key.kty;
    let outcome = tokio::task::spawn_blocking(move || {
        if opening {
            let params = OpenParams {
                iv: iv.as_deref(),
                tag: tag.as_deref(),
                aad: aad.as_deref(),
            };
            material
                .open(alg, kty, usage, &value, &params)
                .map(|plain| (b64::encode(&plain), None, None))
        } else {
            material
                .seal(alg, kty, usage, &value, aad.as_deref())
                .map(|sealed| (b64::encode(&sealed.value), sealed.iv, sealed.tag))
        }
    })
    .await
    .map_err(|_| ServiceError::bad_parameter("The operation was interrupted."))?;
    let (value, iv, tag) = outcome?;
    let mut result = json!({ "kid": bundle::kid(base, &key), "value": value });
    if let Some(iv) = iv {
        result["iv"] = json!(b64::encode(&iv));
    }
    if let Some(tag) = tag {
        result["tag"] = json!(b64::encode(&tag));
    }
    Ok(json_response(StatusCode::OK, &result))
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
            r(Method::GET, "/keys/k/"),
            Route::Get("k".into(), String::new())
        );
        assert_eq!(
            r(Method::GET, "/keys/k/abc"),
            Route::Get("k".into(), "abc".into())
        );
        assert_eq!(
            r(Method::POST, "/keys/k//wrapkey"),
            Route::Crypto("k".into(), String::new(), Operation::WrapKey)
        );
        assert_eq!(
            r(Method::POST, "/keys/k/v1/unwrapKey/"),
            Route::Crypto("k".into(), "v1".into(), Operation::UnwrapKey)
        );
        assert_eq!(r(Method::POST, "/keys/k/Create"), Route::Create("k".into()));
        assert_eq!(
            r(Method::GET, "/keys/k/versions"),
            Route::ListVersions("k".into())
        );
        assert_eq!(r(Method::GET, "/keys/"), Route::List);
        assert_eq!(
            r(Method::POST, "/deletedkeys/k/recover"),
            Route::Recover("k".into())
        );
        assert_eq!(
            r(Method::DELETE, "/deletedkeys/k"),
            Route::Purge("k".into())
        );
        assert_eq!(
            r(Method::PATCH, "/keys/k/"),
            Route::Update("k".into(), String::new())
        );
        assert!(route(&Method::GET, &segments("/secrets/x")).is_none());
        assert!(matches!(
            route(&Method::POST, &segments("/keys")),
            Some(Err(_))
        ));
    }
}
