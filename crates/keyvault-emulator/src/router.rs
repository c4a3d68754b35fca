//! Request dispatch and the pipeline every Key Vault call goes through, in the service's
//! order: the 401 challenge before anything is parsed, the bearer token (issued by this
//! emulator, for this vault's resource, not expired), injected faults, the api-version, the
//! caller's permission, then the keys, secrets or certificates handler. Every routed call is
//! counted, and every authenticated read of a secret or certificate is counted by name and
//! version.

use std::sync::Arc;

use http::Method;
use hyper::body::Incoming;

use crate::entra;
use crate::error::ServiceError;
use crate::faults::{Outcome, Verdict};
use crate::http::{Dropped, Req, Resp, service_error};
use crate::managed_identity::{self, Flavor};
use crate::model::{ObjectKind, Operation};
use crate::state::{Shared, now_secs};
use crate::{admin, api_version};
use crate::{certs_api, keys_api, secrets_api};

/// A routed vault request: keys, secrets or certificates.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// `/keys…`, `/deletedkeys…`
    Keys(keys_api::Route),
    /// `/secrets…`, `/deletedsecrets…`
    Secrets(secrets_api::Route),
    /// `/certificates…`, `/deletedcertificates…`
    Certificates(certs_api::Route),
}

impl Route {
    /// The operation the route performs.
    pub fn operation(&self) -> Operation {
        match self {
            Self::Keys(route) => route.operation(),
            Self::Secrets(route) => route.operation(),
            Self::Certificates(route) => route.operation(),
        }
    }

    /// The object the route names, if any (for name-scoped fault rules).
    pub fn object_name(&self) -> Option<&str> {
        match self {
            Self::Keys(route) => route.name(),
            Self::Secrets(route) => route.name(),
            Self::Certificates(route) => route.name(),
        }
    }

    /// The object version a read asks for, to count it: kind, name, version (`""`: latest).
    fn read(&self) -> Option<(ObjectKind, &str, &str)> {
        match self {
            Self::Secrets(secrets_api::Route::Get(name, version)) => {
                Some((ObjectKind::Secret, name, version))
            }
            Self::Certificates(certs_api::Route::Get(name, version)) => {
                Some((ObjectKind::Certificate, name, version))
            }
            _ => None,
        }
    }
}

/// Matches a vault path: `None` when it is no vault path at all.
fn route(req: &Req) -> Option<Result<Route, ServiceError>> {
    if let Some(keys) = keys_api::route(&req.method, &req.segments) {
        return Some(keys.map(Route::Keys));
    }
    if let Some(secrets) = secrets_api::route(&req.method, &req.segments) {
        return Some(secrets.map(Route::Secrets));
    }
    certs_api::route(&req.method, &req.segments).map(|certs| certs.map(Route::Certificates))
}

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// The HTTPS listener: everything.
    Https,
    /// The plain-HTTP listener: managed identity endpoints only, like the real IMDS.
    PlainIdentity,
}

enum Target {
    Vault(Route),
    VaultError(ServiceError),
    OpenId(String),
    Token(String),
    ManagedIdentity(Flavor),
    Admin,
    NotFound,
}

fn target(req: &Req, listener: Listener) -> Target {
    let s: Vec<&str> = req.segments.iter().map(String::as_str).collect();
    let identity_path = s.len() == 4
        && s[0].eq_ignore_ascii_case("metadata")
        && s[1].eq_ignore_ascii_case("identity")
        && s[2].eq_ignore_ascii_case("oauth2")
        && s[3].eq_ignore_ascii_case("token");
    if identity_path {
        return if req.header("x-identity-header").is_some() {
            Target::ManagedIdentity(Flavor::AppService)
        } else {
            Target::ManagedIdentity(Flavor::Imds)
        };
    }
    if s.len() == 2 && s[0].eq_ignore_ascii_case("msi") && s[1].eq_ignore_ascii_case("token") {
        return Target::ManagedIdentity(Flavor::AppService);
    }
    if listener == Listener::PlainIdentity {
        return Target::NotFound;
    }
    if s.first() == Some(&"_emulator") {
        return Target::Admin;
    }
    if s.len() == 4 && s[1] == "v2.0" && s[2] == ".well-known" && s[3] == "openid-configuration" {
        return Target::OpenId(s[0].to_owned());
    }
    if s.len() == 4
        && s[1] == "oauth2"
        && s[2] == "v2.0"
        && s[3] == "token"
        && req.method == Method::POST
    {
        return Target::Token(s[0].to_owned());
    }
    match route(req) {
        Some(Ok(route)) => Target::Vault(route),
        Some(Err(error)) => Target::VaultError(error),
        None => Target::NotFound,
    }
}

/// Serves one request. `Err(Dropped)` closes the connection without an answer.
pub async fn handle(
    shared: Arc<Shared>,
    listener: Listener,
    request: http::Request<Incoming>,
) -> Result<Resp, Dropped> {
    let req = Req::new(request, &shared.config.default_host);
    dispatch(shared, listener, req).await
}

/// Serves one parsed request (the fuzz entry point enters here with a buffered body).
pub(crate) async fn dispatch(
    shared: Arc<Shared>,
    listener: Listener,
    mut req: Req,
) -> Result<Resp, Dropped> {
    match target(&req, listener) {
        Target::Vault(route) => vault(&shared, route, &mut req).await,
        Target::VaultError(error) => Ok(service_error(&error, &shared.config)),
        Target::OpenId(tenant) => {
            counted(&shared, Operation::OpenIdConfiguration, async {
                entra::openid_configuration(&shared, &tenant, &req)
            })
            .await
        }
        Target::Token(tenant) => {
            counted(
                &shared,
                Operation::EntraToken,
                entra::token(&shared, &tenant, &mut req),
            )
            .await
        }
        Target::ManagedIdentity(flavor) => {
            let op = match flavor {
                Flavor::Imds => Operation::ImdsToken,
                Flavor::AppService => Operation::AppServiceToken,
            };
            counted(&shared, op, async {
                managed_identity::token(&shared, flavor, &req)
            })
            .await
        }
        Target::Admin => Ok(admin::handle(&shared, &mut req).await),
        Target::NotFound => Ok(service_error(
            &ServiceError::no_route(&req.path),
            &shared.config,
        )),
    }
}

fn outcome_of(response: &Resp) -> Outcome {
    if response.status().is_success() {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    }
}

/// Applies faults to an identity endpoint and counts it.
async fn counted(
    shared: &Shared,
    op: Operation,
    serve: impl Future<Output = Resp>,
) -> Result<Resp, Dropped> {
    shared.faults().count_request(op);
    let (latency, verdict) = shared.faults().plan(op, None);
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    let response = match verdict {
        Verdict::Drop => {
            shared.faults().count_outcome(op, Outcome::Dropped);
            return Err(Dropped);
        }
        Verdict::Respond(error) => service_error(&error, &shared.config),
        Verdict::Proceed => serve.await,
    };
    shared.faults().count_outcome(op, outcome_of(&response));
    Ok(response)
}

async fn vault(shared: &Arc<Shared>, route: Route, req: &mut Req) -> Result<Resp, Dropped> {
    let op = route.operation();
    shared.faults().count_request(op);
    let result = vault_pipeline(shared, route, req).await;
    let (outcome, response) = match result {
        Err(Dropped) => {
            shared.faults().count_outcome(op, Outcome::Dropped);
            return Err(Dropped);
        }
        Ok(Ok(response)) => (outcome_of(&response), response),
        Ok(Err(error)) => {
            let outcome = if error.is_challenge() && req.header("authorization").is_none() {
                Outcome::Challenged
            } else {
                Outcome::Failed
            };
            (outcome, service_error(&error, &shared.config))
        }
    };
    shared.faults().count_outcome(op, outcome);
    tracing::debug!(operation = %op, status = response.status().as_u16(), "vault request");
    Ok(response)
}

async fn vault_pipeline(
    shared: &Arc<Shared>,
    route: Route,
    req: &mut Req,
) -> Result<Result<Resp, ServiceError>, Dropped> {
    let op = route.operation();
    let client_id = match authenticate(shared, req) {
        Ok(client_id) => client_id,
        Err(error) => return Ok(Err(error)),
    };
    if let Some((kind, name, version)) = route.read() {
        shared.faults().count_read(kind, name, version);
    }
    let (latency, verdict) = shared.faults().plan(op, route.object_name());
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
    match verdict {
        Verdict::Drop => return Err(Dropped),
        Verdict::Respond(error) => return Ok(Err(error)),
        Verdict::Proceed => {}
    }
    if let Err(error) = api_version::check(req.query("api-version")) {
        return Ok(Err(error));
    }
    if let Err(error) = authorize(shared, &client_id, op) {
        return Ok(Err(error));
    }
    Ok(match route {
        Route::Keys(route) => keys_api::handle(shared, route, req).await,
        Route::Secrets(route) => secrets_api::handle(shared, route, req).await,
        Route::Certificates(route) => certs_api::handle(shared, route, req).await,
    })
}

/// The caller's client id, from a bearer token this emulator issued for this vault.
fn authenticate(shared: &Shared, req: &Req) -> Result<String, ServiceError> {
    let Some(header) = req.header("authorization") else {
        return Err(ServiceError::unauthorized(
            "AKV10000: Request is missing a Bearer or PoP token.",
        ));
    };
    let token = header
        .strip_prefix("Bearer ")
        .or_else(|| header.strip_prefix("bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            ServiceError::unauthorized("AKV10000: Request is missing a Bearer or PoP token.")
        })?;
    let directory = shared.directory();
    let grant = directory.grant_of(token).ok_or_else(|| {
        ServiceError::unauthorized(
            "AKV10032: Invalid issuer: the token was not issued by this tenant.",
        )
    })?;
    if grant.expires_on <= now_secs() {
        return Err(ServiceError::unauthorized(
            "AKV10013: The access token has expired.",
        ));
    }
    if !grant.resource.eq_ignore_ascii_case(&shared.config.resource) {
        return Err(ServiceError::unauthorized(format!(
            "AKV10022: Invalid audience. Expected {}, found: {}.",
            shared.config.resource, grant.resource
        )));
    }
    if directory.get(&grant.client_id).is_none() {
        return Err(ServiceError::unauthorized(
            "AKV10032: The token's application is no longer registered.",
        ));
    }
    Ok(grant.client_id.clone())
}

fn authorize(shared: &Shared, client_id: &str, op: Operation) -> Result<(), ServiceError> {
    let Some(permission) = op.permission() else {
        return Ok(());
    };
    let directory = shared.directory();
    let Some(identity) = directory.get(client_id) else {
        return Err(ServiceError::unauthorized(
            "AKV10032: The token's application is no longer registered.",
        ));
    };
    if identity.permissions.contains(&permission) {
        Ok(())
    } else {
        Err(ServiceError::permission_denied(
            &identity.display(&shared.config.tenant_id),
            permission,
            &format!("{};location=emulator", shared.config.default_host),
        ))
    }
}
