//! Managed identity endpoints: IMDS (`GET /metadata/identity/oauth2/token`, header
//! `Metadata: true`, api-version 2018-02-01) and App Service (`IDENTITY_ENDPOINT`, header
//! `X-IDENTITY-HEADER`, api-version 2019-08-01). Both select the system-assigned identity, or a
//! user-assigned one by client_id, object_id or msi_res_id / mi_res_id, and answer
//! `expires_in` / `expires_on` as strings, as the real endpoints do.

use std::sync::Arc;

use http::StatusCode;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::http::{Req, Resp, json as json_response};
use crate::identity::ManagedSelector;
use crate::state::Shared;

/// Which form of endpoint was called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// The VM metadata service.
    Imds,
    /// App Service / Functions `IDENTITY_ENDPOINT`.
    AppService,
}

fn error(status: StatusCode, error: &str, description: &str) -> Resp {
    json_response(
        status,
        &json!({ "error": error, "error_description": description }),
    )
}

fn selector(req: &Req) -> Result<ManagedSelector, &'static str> {
    let mut found = Vec::new();
    if let Some(id) = req.query("client_id").or_else(|| req.query("clientid")) {
        found.push(ManagedSelector::ClientId(id.to_owned()));
    }
    if let Some(id) = req.query("object_id").or_else(|| req.query("principal_id")) {
        found.push(ManagedSelector::ObjectId(id.to_owned()));
    }
    if let Some(id) = req.query("msi_res_id").or_else(|| req.query("mi_res_id")) {
        found.push(ManagedSelector::ResourceId(id.to_owned()));
    }
    match found.len() {
        0 => Ok(ManagedSelector::System),
        1 => Ok(found.remove(0)),
        _ => Err("Only one of client_id, object_id and msi_res_id may be given."),
    }
}

/// Serves a token request of either flavor.
pub fn token(shared: &Arc<Shared>, flavor: Flavor, req: &Req) -> Resp {
    match flavor {
        Flavor::Imds => {
            if !req
                .header("metadata")
                .is_some_and(|v| v.eq_ignore_ascii_case("true"))
            {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_request",
                    "Required metadata header not specified",
                );
            }
        }
        Flavor::AppService => {
            let expected = shared.config.identity_header.as_bytes();
            let given = req.header("x-identity-header").unwrap_or_default();
            if !bool::from(given.as_bytes().ct_eq(expected)) {
                return json_response(
                    StatusCode::UNAUTHORIZED,
                    &json!({ "statusCode": 401, "message": "Unauthorized: missing or wrong X-IDENTITY-HEADER." }),
                );
            }
        }
    }
    if req.query("api-version").is_none() {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'api-version' is missing",
        );
    }
    let Some(resource) = req.query("resource").filter(|r| !r.is_empty()) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Required query variable 'resource' is missing",
        );
    };
    let selector = match selector(req) {
        Ok(selector) => selector,
        Err(message) => return error(StatusCode::BAD_REQUEST, "invalid_request", message),
    };
    let directory = shared.directory();
    let Some(identity) = directory.managed(&selector) else {
        return error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "Identity not found",
        );
    };
    let (client_id, object_id) = (identity.client_id.clone(), identity.object_id.clone());
    drop(directory);
    let issued = match shared.issue_token(&client_id, &object_id, resource) {
        Ok(issued) => issued,
        Err(e) => {
            return error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                e.message(),
            );
        }
    };
    json_response(
        StatusCode::OK,
        &json!({
            "access_token": issued.access_token,
            "client_id": client_id,
            "expires_in": issued.expires_in.to_string(),
            "expires_on": issued.expires_on.to_string(),
            "ext_expires_in": issued.expires_in.to_string(),
            "not_before": (issued.expires_on - issued.expires_in).to_string(),
            "resource": issued.resource,
            "token_type": "Bearer",
        }),
    )
}
