//! The ECS instance metadata service's RAM role endpoints, on a plain-HTTP listener like the real
//! `100.100.100.200`: `PUT /latest/api/token` (IMDSv2 token, TTL from
//! `X-aliyun-ecs-metadata-token-ttl-seconds`, 1-21600), `GET
//! /latest/meta-data/ram/security-credentials/` (the instance's role name) and `GET
//! …/security-credentials/<role>` (STS credentials of that role, JSON with `Code: Success`).
//!
//! The credentials SDKs always address `100.100.100.200`; pointing one here means using this
//! listener as its HTTP proxy (absolute-form request targets are served like origin-form ones).
//! A token, when sent, must be valid; without one the request is served unless a test made
//! tokens mandatory (hardened IMDSv2 mode).

use http::StatusCode;
use serde_json::json;

use crate::clock::{self, now_secs};
use crate::respond::{Resp, text};
use crate::state::Shared;

/// The action name metadata requests are counted and faulted under.
pub const ACTION: &str = "EcsMetadata";

/// The session name of ECS role credentials.
const SESSION: &str = "i-emulator";

const TOKEN_TTL_HEADER: &str = "x-aliyun-ecs-metadata-token-ttl-seconds";
const TOKEN_HEADER: &str = "x-aliyun-ecs-metadata-token";
const CREDENTIALS_PATH: [&str; 4] = ["latest", "meta-data", "ram", "security-credentials"];

/// Serves one metadata request.
pub fn handle(
    shared: &Shared,
    method: &http::Method,
    segments: &[String],
    headers: &http::HeaderMap,
) -> Resp {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let s: Vec<&str> = segments.iter().map(String::as_str).collect();
    let now = now_secs();
    if s == ["latest", "api", "token"] {
        if method != http::Method::PUT {
            return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
        }
        let ttl = header(TOKEN_TTL_HEADER).and_then(|v| v.trim().parse::<i64>().ok());
        let Some(ttl) = ttl.filter(|t| (1..=21_600).contains(t)) else {
            return text(StatusCode::BAD_REQUEST, "Bad Request");
        };
        return match shared.directory().metadata_token(ttl, now) {
            Ok(token) => text(StatusCode::OK, &token),
            Err(_) => text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        };
    }
    if s.len() < 4 || s[..4] != CREDENTIALS_PATH || s.len() > 5 {
        return text(StatusCode::NOT_FOUND, "Not Found");
    }
    if method != http::Method::GET {
        return text(StatusCode::METHOD_NOT_ALLOWED, "Method Not Allowed");
    }
    let mut directory = shared.directory();
    match header(TOKEN_HEADER) {
        Some(token) if !directory.metadata_token_valid(token, now) => {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        None if directory.require_metadata_token => {
            return text(StatusCode::UNAUTHORIZED, "Unauthorized");
        }
        _ => {}
    }
    let Some((account, role_name)) = directory.ecs_role.clone() else {
        return text(StatusCode::NOT_FOUND, "Not Found");
    };
    let Some(role) = directory.role(&account, &role_name).cloned() else {
        return text(StatusCode::NOT_FOUND, "Not Found");
    };
    let asked = match s.get(4) {
        None | Some(&"") => return text(StatusCode::OK, &role.name),
        Some(asked) => *asked,
    };
    if asked != role.name {
        return text(StatusCode::NOT_FOUND, "Not Found");
    }
    let lifetime = shared.config.ecs_credentials_lifetime.as_secs().max(60);
    let lifetime_secs = i64::try_from(lifetime).unwrap_or(i64::MAX);
    // Hand out the same credentials until half their life is gone, as the service refreshes
    // them ahead of expiry.
    let current = directory
        .ecs_session
        .as_deref()
        .and_then(|id| directory.credentials_of(id))
        .filter(|c| c.expiration - now > lifetime_secs / 2);
    let issued = match current {
        Some(issued) => issued,
        None => match directory.issue(&account, &role.name, SESSION, lifetime, now) {
            Ok(issued) => {
                directory.ecs_session = Some(issued.access_key_id.clone());
                issued
            }
            Err(_) => return text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        },
    };
    let body = json!({
        "AccessKeyId": issued.access_key_id,
        "AccessKeySecret": issued.access_key_secret.as_str(),
        "SecurityToken": issued.security_token.as_str(),
        "Expiration": clock::format_utc(issued.expiration),
        "LastUpdated": clock::format_utc(now),
        "Code": "Success",
    });
    text(StatusCode::OK, &body.to_string())
}
