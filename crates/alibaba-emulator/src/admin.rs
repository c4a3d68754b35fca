//! The admin HTTP API under the reserved path `/_emulator/`: the same controls as the Rust API
//! (secrets, parameters, AccessKeys, roles, OIDC providers, the ECS role, faults, throttling,
//! counters) for the Python suites and the binary. It needs no signature — the emulator is a
//! test fixture bound to loopback — and is never counted or faulted. Answers are JSON; errors
//! are `{"error": "..."}`. Names may contain `/` (the rest of the path is the name; `%XX`
//! escapes are decoded); `?account_id=` picks another account than the default.

use std::sync::Arc;

use http::{Method, StatusCode};
use keyvault_emulator::http::Req;
use serde::Deserialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::clock::now_secs;
use crate::error::EmulatorError;
use crate::faults::{FaultRule, ThrottleBudget};
use crate::identity::{AccessKeySpec, OidcProviderSpec, RoleSpec};
use crate::respond::{Resp, json as json_response};
use crate::state::Shared;
use crate::store::{ParameterSpec, SecretSpec, SecretVersionSpec};
use crate::sts;

fn ok(value: Value) -> Resp {
    json_response(StatusCode::OK, &value)
}

fn fail(status: StatusCode, message: impl std::fmt::Display) -> Resp {
    json_response(status, &json!({ "error": message.to_string() }))
}

fn from_emulator(error: &EmulatorError) -> Resp {
    match error {
        EmulatorError::NotFound(_) => fail(StatusCode::NOT_FOUND, error),
        _ => fail(StatusCode::BAD_REQUEST, error),
    }
}

fn to_json<T: serde::Serialize>(value: &T) -> Value {
    serde_json::to_value(value).unwrap_or(Value::Null)
}

async fn body<T: DeserializeOwned>(req: &mut Req) -> Result<T, Resp> {
    let value = req
        .json()
        .await
        .map_err(|_| fail(StatusCode::BAD_REQUEST, "the body must be a JSON object"))?;
    serde_json::from_value(value)
        .map_err(|e| fail(StatusCode::BAD_REQUEST, format!("bad request body: {e}")))
}

/// Decodes `%XX` escapes of a path segment.
fn percent_decode(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ValueBody {
    value: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnabledBody {
    enabled: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EcsRoleBody {
    role_name: String,
    #[serde(default)]
    account_id: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MetadataBody {
    require_token: bool,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OidcTokenBody {
    provider_arn: String,
    subject: String,
    #[serde(default)]
    audience: Option<String>,
    #[serde(default)]
    lifetime_seconds: Option<i64>,
}

/// Serves `/_emulator/...`.
pub async fn handle(shared: &Arc<Shared>, req: &mut Req) -> Resp {
    match serve(shared, req).await {
        Ok(response) | Err(response) => response,
    }
}

/// The account a control call addresses: `?account_id=`, else the default.
fn account(shared: &Shared, req: &Req) -> String {
    req.query("account_id")
        .map(str::to_owned)
        .unwrap_or_else(|| shared.config.account_id.clone())
}

async fn serve(shared: &Arc<Shared>, req: &mut Req) -> Result<Resp, Resp> {
    let segments: Vec<String> = req
        .segments
        .iter()
        .skip(1)
        .map(|s| percent_decode(s))
        .collect();
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let method = req.method.clone();
    let region = shared.config.region.clone();
    let account_id = account(shared, req);
    match (&method, s.as_slice()) {
        (&Method::GET, ["info"]) => Ok(ok(json!({
            "url": format!("https://{}", shared.config.default_host),
            "endpoint": shared.config.default_host,
            "ca_pem_path": shared.config.ca_pem_path,
            "metadata_url": shared.config.metadata_url,
            "region": region,
            "account_id": shared.config.account_id,
        }))),

        (_, ["secrets", rest @ ..]) if !rest.is_empty() => {
            let name = rest.join("/");
            match method {
                Method::PUT => {
                    let spec: SecretSpec = body(req).await?;
                    let owner = spec.account_id.clone().unwrap_or(account_id);
                    let info = shared.store().put_secret(&owner, &name, &spec, &region);
                    info.map(|i| ok(to_json(&i))).map_err(|e| from_emulator(&e))
                }
                Method::POST => {
                    let spec: SecretVersionSpec = body(req).await?;
                    let info =
                        shared
                            .store()
                            .add_secret_version(&account_id, &name, &spec, &region);
                    info.map(|i| ok(to_json(&i))).map_err(|e| from_emulator(&e))
                }
                Method::GET => shared
                    .store()
                    .secret_info(&account_id, &name, &region)
                    .map(|i| ok(to_json(&i)))
                    .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("no secret {name}"))),
                Method::DELETE => {
                    if shared.store().delete_secret(&account_id, &name) {
                        Ok(ok(json!({})))
                    } else {
                        Err(fail(StatusCode::NOT_FOUND, format!("no secret {name}")))
                    }
                }
                _ => Err(fail(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")),
            }
        }

        (_, ["parameters", rest @ ..]) if !rest.is_empty() => {
            let name = rest.join("/");
            match method {
                Method::PUT => {
                    let spec: ParameterSpec = body(req).await?;
                    let owner = spec.account_id.clone().unwrap_or(account_id);
                    let info = shared.store().put_parameter(&owner, &name, &spec);
                    info.map(|i| ok(to_json(&i))).map_err(|e| from_emulator(&e))
                }
                Method::POST => {
                    let ValueBody { value } = body(req).await?;
                    let info = shared
                        .store()
                        .add_parameter_version(&account_id, &name, &value);
                    info.map(|i| ok(to_json(&i))).map_err(|e| from_emulator(&e))
                }
                Method::GET => shared
                    .store()
                    .parameter_info(&account_id, &name)
                    .map(|i| ok(to_json(&i)))
                    .ok_or_else(|| fail(StatusCode::NOT_FOUND, format!("no parameter {name}"))),
                Method::DELETE => {
                    if shared.store().delete_parameter(&account_id, &name) {
                        Ok(ok(json!({})))
                    } else {
                        Err(fail(StatusCode::NOT_FOUND, format!("no parameter {name}")))
                    }
                }
                _ => Err(fail(StatusCode::METHOD_NOT_ALLOWED, "method not allowed")),
            }
        }

        (&Method::POST, ["access-keys"]) => {
            let spec: AccessKeySpec = body(req).await?;
            shared
                .directory()
                .add_key(&spec, &shared.config.account_id)
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(json!({ "id": spec.id })))
        }
        (&Method::PATCH, ["access-keys", id]) => {
            let EnabledBody { enabled } = body(req).await?;
            shared
                .directory()
                .set_key_enabled(id, enabled)
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(json!({})))
        }
        (&Method::DELETE, ["access-keys", id]) => {
            if shared.directory().remove_key(id) {
                Ok(ok(json!({})))
            } else {
                Err(fail(StatusCode::NOT_FOUND, format!("no AccessKey {id}")))
            }
        }
        (&Method::POST, ["roles"]) => {
            let spec: RoleSpec = body(req).await?;
            let arn = shared
                .directory()
                .add_role(&spec, &shared.config.account_id)
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(json!({ "arn": arn })))
        }
        (&Method::POST, ["oidc-providers"]) => {
            let spec: OidcProviderSpec = body(req).await?;
            let arn = shared
                .directory()
                .add_provider(&spec, &shared.config.account_id)
                .map_err(|e| from_emulator(&e))?;
            Ok(ok(json!({ "arn": arn })))
        }
        (&Method::POST, ["oidc-tokens"]) => {
            let request: OidcTokenBody = body(req).await?;
            let issuer = shared
                .directory()
                .provider(&request.provider_arn)
                .map(|p| p.issuer.clone())
                .ok_or_else(|| fail(StatusCode::NOT_FOUND, "no such OIDC provider"))?;
            let token = sts::mint_token(
                &issuer,
                &request.subject,
                request
                    .audience
                    .as_deref()
                    .unwrap_or(crate::identity::DEFAULT_AUDIENCE),
                request.lifetime_seconds.unwrap_or(3600),
                now_secs(),
            )
            .map_err(|e| from_emulator(&e))?;
            Ok(ok(json!({ "token": token })))
        }
        (&Method::GET, ["identities"]) => Ok(ok(shared.directory().summary())),
        (&Method::PUT, ["ecs-role"]) => {
            let EcsRoleBody {
                role_name,
                account_id,
            } = body(req).await?;
            let account = account_id.unwrap_or_else(|| shared.config.account_id.clone());
            let mut directory = shared.directory();
            if directory.role(&account, &role_name).is_none() {
                return Err(fail(StatusCode::NOT_FOUND, format!("no role {role_name}")));
            }
            directory.ecs_role = Some((account, role_name));
            directory.ecs_session = None;
            Ok(ok(json!({})))
        }
        (&Method::DELETE, ["ecs-role"]) => {
            let mut directory = shared.directory();
            directory.ecs_role = None;
            directory.ecs_session = None;
            Ok(ok(json!({})))
        }
        (&Method::PUT, ["metadata"]) => {
            let MetadataBody { require_token } = body(req).await?;
            shared.directory().require_metadata_token = require_token;
            Ok(ok(json!({})))
        }
        (&Method::POST, ["sts", "expire"]) => {
            shared.directory().expire_sessions(now_secs());
            Ok(ok(json!({})))
        }

        (&Method::POST, ["faults"]) => {
            let rule: FaultRule = body(req).await?;
            let mut faults = shared.faults();
            faults.add(rule);
            Ok(ok(to_json(&faults.rules())))
        }
        (&Method::GET, ["faults"]) => Ok(ok(to_json(&shared.faults().rules()))),
        (&Method::DELETE, ["faults"]) => {
            shared.faults().clear();
            Ok(ok(json!([])))
        }
        (&Method::PUT, ["throttle"]) => {
            let budget: ThrottleBudget = body(req).await?;
            shared.faults().set_budget(Some(budget.clone()));
            Ok(ok(to_json(&budget)))
        }
        (&Method::GET, ["throttle"]) => Ok(ok(to_json(&shared.faults().budget()))),
        (&Method::DELETE, ["throttle"]) => {
            shared.faults().set_budget(None);
            Ok(ok(Value::Null))
        }
        (&Method::GET, ["counters"]) => Ok(ok(to_json(&shared.faults().all_counts()))),
        (&Method::DELETE, ["counters"]) => {
            shared.faults().reset_counts();
            Ok(ok(json!({})))
        }
        (&Method::GET, ["counters", "reads"]) => Ok(ok(to_json(&shared.faults().all_reads()))),
        _ => Err(fail(
            StatusCode::NOT_FOUND,
            format!("no admin route {} {}", req.method, req.path),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_percent_decoded() {
        assert_eq!(percent_decode("a%2Fb%20c"), "a/b c");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
    }
}
