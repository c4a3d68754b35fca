//! The admin HTTP API under the reserved path `/_emulator/`: the same controls as the Rust API
//! (keys, secrets, certificates, identities, permissions, faults, throttling, counters) for the Python suite and the
//! binary. It needs no token — the emulator is a test fixture bound to loopback — and is never
//! counted or faulted. Answers are JSON; errors are `{"error": "..."}`.

use std::sync::Arc;

use http::{Method, StatusCode};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::api_version::API_VERSIONS;
use crate::certificates::CertificateInfo;
use crate::certs_api;
use crate::error::{EmulatorError, ServiceError};
use crate::faults::{FaultRule, ThrottleLimits};
use crate::http::{Req, Resp, json as json_response};
use crate::identity::{FederatedCredential, IdentitySpec};
use crate::model::{Operation, Permission};
use crate::secrets::{SecretInfo, SecretSpec};
use crate::state::{KeyInfo, KeySpec, KeyUpdate, Shared, now_secs};

fn ok(value: Value) -> Resp {
    json_response(StatusCode::OK, &value)
}

fn fail(status: StatusCode, message: impl std::fmt::Display) -> Resp {
    json_response(status, &json!({ "error": message.to_string() }))
}

fn from_service(error: &ServiceError) -> Resp {
    json_response(
        error.status(),
        &json!({ "error": error.to_string(), "service_error": error.body() }),
    )
}

fn from_emulator(error: &EmulatorError) -> Resp {
    match error {
        EmulatorError::Service(service) => from_service(service),
        EmulatorError::UnknownIdentity(_) => fail(StatusCode::NOT_FOUND, error),
        _ => fail(StatusCode::BAD_REQUEST, error),
    }
}

async fn body<T: for<'de> Deserialize<'de>>(req: &mut Req) -> Result<T, Resp> {
    let value = req.json().await.map_err(|e| from_service(&e))?;
    serde_json::from_value(value)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttributesBody {
    #[serde(default)]
    enabled: Option<bool>,
    #[serde(default, with = "double_option")]
    nbf: Option<Option<i64>>,
    #[serde(default, with = "double_option")]
    exp: Option<Option<i64>>,
}

mod double_option {
    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Option<i64>>, D::Error> {
        Option::<i64>::deserialize(d).map(Some)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PermissionsBody {
    permissions: Vec<Permission>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    secret: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CertificateBody {
    certificate_pem: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FederatedTokenBody {
    #[serde(default)]
    lifetime_seconds: Option<i64>,
}

/// Serves `/_emulator/...`.
pub async fn handle(shared: &Arc<Shared>, req: &mut Req) -> Resp {
    match serve(shared, req).await {
        Ok(response) | Err(response) => response,
    }
}

async fn serve(shared: &Arc<Shared>, req: &mut Req) -> Result<Resp, Resp> {
    let segments: Vec<String> = req.segments.iter().skip(1).cloned().collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let host = shared.config.default_host.clone();
    let method = req.method.clone();
    let info = |v: &crate::store::KeyVersion| ok(to_json(&KeyInfo::of(v, &host)));
    match (&method, s.as_slice()) {
        (&Method::GET, ["info"]) => Ok(ok(json!({
            "kind": shared.config.kind,
            "vault_url": format!("https://{host}/"),
            "authority_url": format!("https://{host}"),
            "tenant_id": shared.config.tenant_id,
            "resource": shared.config.resource,
            "token_url": format!("https://{host}/{}/oauth2/v2.0/token", shared.config.tenant_id),
            "imds_url": shared.config.imds_url,
            "app_service_url": shared.config.imds_url.as_ref().map(|u| format!("{u}/msi/token")),
            "identity_header": shared.config.identity_header,
            "ca_pem_path": shared.config.ca_pem_path,
            "api_versions": API_VERSIONS,
        }))),
        (&Method::POST, ["keys", name]) => {
            let spec: KeySpec = body(req).await?;
            let version = shared
                .create_key(name, &spec)
                .await
                .map_err(|e| from_service(&e))?;
            Ok(info(&version))
        }
        (&Method::GET, ["keys", name, "versions"]) => {
            let store = shared.store();
            let versions = store.versions(name).map_err(|e| from_service(&e))?;
            Ok(ok(Value::Array(
                versions
                    .iter()
                    .map(|v| to_json(&KeyInfo::of(v, &host)))
                    .collect(),
            )))
        }
        (&Method::GET, ["keys", name]) | (&Method::GET, ["keys", name, _]) => {
            let version = s.get(2).copied();
            let store = shared.store();
            let key = store.get(name, version).map_err(|e| from_service(&e))?;
            Ok(info(key))
        }
        (&Method::POST, ["keys", name, "rotate"]) => {
            let version = shared
                .rotate_key(name)
                .await
                .map_err(|e| from_service(&e))?;
            Ok(info(&version))
        }
        (&Method::PATCH, ["keys", name]) | (&Method::PATCH, ["keys", name, _]) => {
            let version = s.get(2).copied();
            let attrs: AttributesBody = body(req).await?;
            let update = KeyUpdate {
                enabled: attrs.enabled,
                nbf: attrs.nbf,
                exp: attrs.exp,
                ..KeyUpdate::default()
            };
            let key = shared
                .update_key(name, version, &update)
                .map_err(|e| from_service(&e))?;
            Ok(info(&key))
        }
        (&Method::DELETE, ["keys", name]) => {
            let days = shared.config.retention_days;
            shared
                .store()
                .delete(name, crate::state::now_secs(), days)
                .map_err(|e| from_service(&e))?;
            Ok(ok(json!({ "deleted": name })))
        }
        (&Method::POST, ["deletedkeys", name, "recover"]) => {
            let version = shared.store().recover(name).map_err(|e| from_service(&e))?;
            Ok(info(&version))
        }
        (&Method::DELETE, ["deletedkeys", name]) => {
            shared.store().purge(name).map_err(|e| from_service(&e))?;
            Ok(ok(json!({ "purged": name })))
        }
        (&Method::POST, ["secrets", name]) => {
            let spec: SecretSpec = body(req).await?;
            let version = spec
                .to_version(name, now_secs())
                .map_err(|e| from_service(&e))?;
            let mut store = shared.secrets();
            if store.get(name, None).is_ok_and(|latest| latest.managed) {
                return Err(from_service(&ServiceError::managed_by_key_vault("set")));
            }
            let version = store.add_version(version).map_err(|e| from_service(&e))?;
            Ok(ok(to_json(&SecretInfo::of(&version, &host))))
        }
        (&Method::GET, ["secrets", name, "versions"]) => {
            let store = shared.secrets();
            let versions = store.versions(name).map_err(|e| from_service(&e))?;
            Ok(ok(Value::Array(
                versions
                    .iter()
                    .map(|v| to_json(&SecretInfo::of(v, &host)))
                    .collect(),
            )))
        }
        (&Method::GET, ["secrets", name]) | (&Method::GET, ["secrets", name, _]) => {
            let store = shared.secrets();
            let secret = store
                .get(name, s.get(2).copied())
                .map_err(|e| from_service(&e))?;
            Ok(ok(to_json(&SecretInfo::of(secret, &host))))
        }
        (&Method::PATCH, ["secrets", name]) | (&Method::PATCH, ["secrets", name, _]) => {
            let attrs: AttributesBody = body(req).await?;
            let mut store = shared.secrets();
            let secret = store
                .get_mut(name, s.get(2).copied())
                .map_err(|e| from_service(&e))?;
            if let Some(enabled) = attrs.enabled {
                secret.attributes.enabled = enabled;
            }
            if let Some(nbf) = attrs.nbf {
                secret.attributes.nbf = nbf;
            }
            if let Some(exp) = attrs.exp {
                secret.attributes.exp = exp;
            }
            secret.attributes.updated = now_secs();
            Ok(ok(to_json(&SecretInfo::of(secret, &host))))
        }
        (&Method::DELETE, ["secrets", name]) => {
            let days = shared.config.retention_days;
            shared
                .secrets()
                .delete(name, now_secs(), days)
                .map_err(|e| from_service(&e))?;
            Ok(ok(json!({ "deleted": name })))
        }
        (&Method::POST, ["deletedsecrets", name, "recover"]) => {
            let version = shared
                .secrets()
                .recover(name)
                .map_err(|e| from_service(&e))?;
            Ok(ok(to_json(&SecretInfo::of(&version, &host))))
        }
        (&Method::DELETE, ["deletedsecrets", name]) => {
            shared.secrets().purge(name).map_err(|e| from_service(&e))?;
            Ok(ok(json!({ "purged": name })))
        }
        (&Method::POST, ["certificates", name]) => {
            let request = req.json().await.map_err(|e| from_service(&e))?;
            certs_api::begin_create(shared, name, &request)
                .await
                .map_err(|e| from_service(&e))?;
            certs_api::settle(shared, name);
            let certs = shared.certificates();
            let cert = certs
                .versions
                .get(name, None)
                .map_err(|e| from_service(&e))?;
            Ok(ok(to_json(&CertificateInfo::of(cert, &host))))
        }
        (&Method::POST, ["certificates", name, "import"]) => {
            let request = req.json().await.map_err(|e| from_service(&e))?;
            let cert = certs_api::import(shared, name, &request)
                .await
                .map_err(|e| from_service(&e))?;
            Ok(ok(to_json(&CertificateInfo::of(&cert, &host))))
        }
        (&Method::GET, ["certificates", name]) | (&Method::GET, ["certificates", name, _]) => {
            let certs = shared.certificates();
            let cert = certs
                .versions
                .get(name, s.get(2).copied())
                .map_err(|e| from_service(&e))?;
            Ok(ok(to_json(&CertificateInfo::of(cert, &host))))
        }
        (&Method::GET, ["identities"]) => Ok(ok(to_json(&shared.directory().list()))),
        (&Method::POST, ["identities"]) => {
            let spec: IdentitySpec = body(req).await?;
            let info = shared
                .directory()
                .register(spec)
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(to_json(&info)))
        }
        (&Method::POST, ["identities", id, "secrets"]) => {
            let secret: SecretBody = body(req).await?;
            shared
                .directory()
                .add_secret(id, secret.secret)
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(json!({ "client_id": id })))
        }
        (&Method::POST, ["identities", id, "certificates"]) => {
            let cert: CertificateBody = body(req).await?;
            shared
                .directory()
                .add_certificate(id, &cert.certificate_pem)
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(json!({ "client_id": id })))
        }
        (&Method::POST, ["identities", id, "federated"]) => {
            let credential: FederatedCredential = body(req).await?;
            shared
                .directory()
                .add_federated(id, credential)
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(json!({ "client_id": id })))
        }
        (&Method::POST, ["identities", id, "federated-token"]) => {
            let request: FederatedTokenBody = body(req).await?;
            let token = shared
                .federated_token(id, request.lifetime_seconds.unwrap_or(3600))
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(json!({ "token": token })))
        }
        (&Method::PUT, ["identities", id, "permissions"]) => {
            let p: PermissionsBody = body(req).await?;
            let info = shared
                .directory()
                .set_permissions(id, &p.permissions)
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(to_json(&info)))
        }
        (&Method::POST, ["identities", id, "grant"]) => {
            let p: PermissionsBody = body(req).await?;
            let info = shared
                .directory()
                .grant(id, &p.permissions)
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(to_json(&info)))
        }
        (&Method::POST, ["identities", id, "revoke"]) => {
            let p: PermissionsBody = body(req).await?;
            let info = shared
                .directory()
                .revoke(id, &p.permissions)
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(to_json(&info)))
        }
        (&Method::POST, ["tokens", "revoke"]) => {
            shared.directory().revoke_tokens();
            Ok(ok(json!({ "revoked": true })))
        }
        (&Method::GET, ["faults"]) => Ok(ok(to_json(&shared.faults().rules()))),
        (&Method::POST, ["faults"]) => {
            let rule: FaultRule = body(req).await?;
            shared.faults().add(rule);
            Ok(ok(to_json(&shared.faults().rules())))
        }
        (&Method::DELETE, ["faults"]) => {
            shared.faults().clear();
            Ok(ok(json!([])))
        }
        (&Method::GET, ["throttle"]) => Ok(ok(to_json(&shared.faults().limits()))),
        (&Method::PUT, ["throttle"]) => {
            let limits: ThrottleLimits = body(req).await?;
            shared.faults().set_limits(Some(limits));
            Ok(ok(to_json(&limits)))
        }
        (&Method::DELETE, ["throttle"]) => {
            shared.faults().set_limits(None);
            Ok(ok(Value::Null))
        }
        (&Method::GET, ["counters"]) => {
            let counts = shared.faults().all_counts();
            let map: serde_json::Map<String, Value> = Operation::ALL
                .into_iter()
                .map(|op| {
                    (
                        op.as_str().to_owned(),
                        to_json(&counts.get(&op).copied().unwrap_or_default()),
                    )
                })
                .collect();
            Ok(ok(Value::Object(map)))
        }
        (&Method::GET, ["counters", "reads"]) => Ok(ok(to_json(&shared.faults().all_reads()))),
        (&Method::DELETE, ["counters"]) => {
            shared.faults().reset_counts();
            Ok(ok(json!({})))
        }
        _ => Err(fail(
            StatusCode::NOT_FOUND,
            format!("no admin route {} {}", method, req.path),
        )),
    }
}
