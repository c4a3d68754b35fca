//! The Entra ID side: OpenID metadata and the v2.0 token endpoint for the client-credentials
//! grant with a client secret, a certificate assertion (RS256/PS256 JWT signed by a registered
//! certificate: aud = the token URL, iss = sub = client_id, exp/nbf checked) or a federated
//! assertion (workload identity: iss/sub/aud must match a registered federated credential).
//!
//! Errors use Entra's OAuth error body. Federated assertions are matched on their claims only:
//! the emulator has no key of the external issuer, so it does not verify their signature.

use std::sync::Arc;

use http::StatusCode;
use serde_json::{Value, json};

use crate::http::{Req, Resp, json as json_response};
use crate::identity::new_guid;
use crate::jwt::Jwt;
use crate::state::{Shared, now_secs};

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Clock skew tolerated on assertion times.
const SKEW: i64 = 300;

/// An OAuth error answer of the token endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EntraError {
    status: StatusCode,
    error: &'static str,
    code: u32,
    description: String,
}

impl EntraError {
    fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        description: impl Into<String>,
    ) -> Self {
        Self {
            status,
            error,
            code,
            description: description.into(),
        }
    }

    fn bad(error: &'static str, code: u32, description: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, error, code, description)
    }

    fn client(code: u32, description: impl Into<String>) -> Self {
        Self::new(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            code,
            description,
        )
    }

    /// The response.
    pub fn response(&self) -> Resp {
        json_response(
            self.status,
            &json!({
                "error": self.error,
                "error_description": format!("AADSTS{}: {}", self.code, self.description),
                "error_codes": [self.code],
                "timestamp": now_secs().to_string(),
                "trace_id": new_guid(),
                "correlation_id": new_guid(),
            }),
        )
    }
}

fn check_tenant(shared: &Shared, tenant: &str) -> Result<(), EntraError> {
    if tenant.eq_ignore_ascii_case(&shared.config.tenant_id) {
        Ok(())
    } else {
        Err(EntraError::bad(
            "invalid_request",
            90002,
            format!("Tenant '{tenant}' not found."),
        ))
    }
}

/// `GET /{tenant}/v2.0/.well-known/openid-configuration`.
pub fn openid_configuration(shared: &Shared, tenant: &str, req: &Req) -> Resp {
    if let Err(error) = check_tenant(shared, tenant) {
        return error.response();
    }
    let base = req.base();
    let tenant = &shared.config.tenant_id;
    json_response(
        StatusCode::OK,
        &json!({
            "token_endpoint": format!("{base}/{tenant}/oauth2/v2.0/token"),
            "token_endpoint_auth_methods_supported": ["client_secret_post", "private_key_jwt", "client_secret_basic"],
            "jwks_uri": format!("{base}/{tenant}/discovery/v2.0/keys"),
            "response_modes_supported": ["query", "fragment", "form_post"],
            "subject_types_supported": ["pairwise"],
            "id_token_signing_alg_values_supported": ["RS256"],
            "response_types_supported": ["code", "id_token", "code id_token", "id_token token"],
            "scopes_supported": ["openid", "profile", "email", "offline_access"],
            "issuer": format!("{base}/{tenant}/v2.0"),
            "request_uri_parameter_supported": false,
            "authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/authorize"),
            "device_authorization_endpoint": format!("{base}/{tenant}/oauth2/v2.0/devicecode"),
            "end_session_endpoint": format!("{base}/{tenant}/oauth2/v2.0/logout"),
            "tenant_region_scope": null,
            "cloud_instance_name": "microsoftonline.com",
            "cloud_graph_host_name": "graph.windows.net",
            "msgraph_host": "graph.microsoft.com",
        }),
    )
}

fn field<'a>(form: &'a [(String, String)], name: &str) -> Option<&'a str> {
    form.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
        .filter(|v| !v.is_empty())
}

/// `POST /{tenant}/oauth2/v2.0/token`.
pub async fn token(shared: &Arc<Shared>, tenant: &str, req: &mut Req) -> Resp {
    match token_inner(shared, tenant, req).await {
        Ok(response) => response,
        Err(error) => error.response(),
    }
}

async fn token_inner(
    shared: &Arc<Shared>,
    tenant: &str,
    req: &mut Req,
) -> Result<Resp, EntraError> {
    check_tenant(shared, tenant)?;
    let form = req.form().await.map_err(|_| {
        EntraError::bad(
            "invalid_request",
            900144,
            "The request body could not be read.",
        )
    })?;
    match field(&form, "grant_type") {
        Some("client_credentials") => {}
        Some(other) => {
            return Err(EntraError::bad(
                "unsupported_grant_type",
                70003,
                format!("The app requested an unsupported grant type '{other}'."),
            ));
        }
        None => {
            return Err(EntraError::bad(
                "invalid_request",
                900144,
                "The request body must contain the following parameter: 'grant_type'.",
            ));
        }
    }
    let client_id = field(&form, "client_id").ok_or_else(|| {
        EntraError::bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'client_id'.",
        )
    })?;
    let scope = field(&form, "scope").ok_or_else(|| {
        EntraError::bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'scope'.",
        )
    })?;
    let resource = match scope.split_whitespace().collect::<Vec<_>>().as_slice() {
        [single] if single.ends_with("/.default") => {
            single.trim_end_matches("/.default").to_owned()
        }
        _ => {
            return Err(EntraError::bad(
                "invalid_scope",
                1002012,
                format!(
                    "The provided value for scope {scope} is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier (application ID URI)."
                ),
            ));
        }
    };
    let token_url = format!("{}/{}/oauth2/v2.0/token", req.base(), tenant);

    let directory = shared.directory();
    let identity = directory.get(client_id).ok_or_else(|| {
        EntraError::bad(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory '{}'.",
                shared.config.tenant_id
            ),
        )
    })?;
    if let Some(secret) = field(&form, "client_secret") {
        if !identity.secret_matches(secret) {
            return Err(EntraError::client(
                7000215,
                "Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID.",
            ));
        }
    } else if let Some(assertion) = field(&form, "client_assertion") {
        if field(&form, "client_assertion_type") != Some(ASSERTION_TYPE) {
            return Err(EntraError::bad(
                "invalid_request",
                50027,
                "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer.",
            ));
        }
        let jwt = Jwt::parse(assertion)
            .ok_or_else(|| EntraError::client(50027, "The client assertion is not a valid JWT."))?;
        check_times(&jwt)?;
        let iss = jwt.claim("iss").unwrap_or_default();
        let sub = jwt.claim("sub").unwrap_or_default();
        if iss == client_id && sub == client_id {
            check_certificate_assertion(identity, &jwt, &token_url)?;
        } else {
            let matched = identity.federated.iter().any(|credential| {
                credential.issuer == iss
                    && credential.subject == sub
                    && jwt.has_audience(|aud| aud == credential.audience)
            });
            if !matched {
                return Err(EntraError::bad(
                    "invalid_client",
                    70021,
                    format!(
                        "No matching federated identity record found for presented assertion issuer '{iss}' and subject '{sub}'."
                    ),
                ));
            }
        }
    } else {
        return Err(EntraError::client(
            7000216,
            "'client_assertion', 'client_secret' or 'request' is required for the 'client_credentials' grant type.",
        ));
    }
    let (client_id, object_id) = (identity.client_id.clone(), identity.object_id.clone());
    drop(directory);
    let issued = shared
        .issue_token(&client_id, &object_id, &resource)
        .map_err(|e| {
            EntraError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "server_error",
                90000,
                e.message().to_owned(),
            )
        })?;
    Ok(json_response(
        StatusCode::OK,
        &json!({
            "token_type": "Bearer",
            "expires_in": issued.expires_in,
            "ext_expires_in": issued.expires_in,
            "access_token": issued.access_token,
        }),
    ))
}

fn check_times(jwt: &Jwt) -> Result<(), EntraError> {
    let now = now_secs();
    let exp = jwt
        .time_claim("exp")
        .ok_or_else(|| EntraError::client(700024, "Client assertion has no exp claim."))?;
    if exp + SKEW < now {
        return Err(EntraError::client(
            700024,
            "Client assertion is not within its valid time range: it has expired.",
        ));
    }
    if jwt.time_claim("nbf").is_some_and(|nbf| nbf - SKEW > now) {
        return Err(EntraError::client(
            700024,
            "Client assertion is not within its valid time range: not yet valid.",
        ));
    }
    Ok(())
}

fn check_certificate_assertion(
    identity: &crate::identity::Identity,
    jwt: &Jwt,
    token_url: &str,
) -> Result<(), EntraError> {
    if !jwt.has_audience(|aud| aud.trim_end_matches('/').eq_ignore_ascii_case(token_url)) {
        return Err(EntraError::client(
            700016,
            format!("The client assertion's audience must be the token endpoint {token_url}."),
        ));
    }
    let header = |name: &str| {
        jwt.header
            .get(name)
            .and_then(Value::as_str)
            .and_then(crate::b64::decode_thumbprint)
    };
    let sha1 = header("x5t");
    let sha256 = header("x5t#S256");
    let certificate = identity.certificates.iter().find(|c| {
        sha1.as_deref() == Some(c.sha1.as_slice()) || sha256.as_deref() == Some(c.sha256.as_slice())
    });
    let Some(certificate) = certificate else {
        return Err(EntraError::client(
            700027,
            "The certificate with identifier used to sign the client assertion is not registered on application.",
        ));
    };
    if !jwt.verify(&certificate.public_key) {
        return Err(EntraError::client(
            700027,
            "Client assertion failed signature validation.",
        ));
    }
    Ok(())
}
