//! Request dispatch. On the HTTPS listener, `/_emulator/…` is the admin API and everything else
//! is an API call routed by its action and version (`x-acs-action`/`x-acs-version` headers or
//! the `Action`/`Version` parameters), whatever the host name — `kms-vpc.<region>`,
//! `oos-vpc.<region>`, `sts.aliyuncs.com` all reach the same handlers. The pipeline follows the
//! gateway's order: count the request, verify the signature (not for `AssumeRoleWithOIDC`),
//! count the read, apply injected faults and the throttling budget, then the product's
//! handler. The plain-HTTP listener serves only the ECS metadata paths.

use std::sync::Arc;

use http::StatusCode;
use hyper::body::Incoming;
use keyvault_emulator::http::{Dropped, Req};
use serde_json::Value;

use crate::auth::{self, ApiRequest};
use crate::clock::{self, now_secs};
use crate::error::ApiError;
use crate::faults::{Outcome, Verdict};
use crate::identity::Caller;
use crate::respond::{self, Resp};
use crate::state::Shared;
use crate::{admin, kms, metadata, oos, sts};

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Listener {
    /// HTTPS: the APIs and the admin API.
    Https,
    /// Plain HTTP: the ECS metadata service.
    Metadata,
}

/// The products served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Product {
    /// KMS 2016-01-20.
    Kms,
    /// OOS 2019-06-01.
    Oos,
    /// STS 2015-04-01.
    Sts,
}

/// The API operations served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Api {
    /// KMS `GetSecretValue`.
    GetSecretValue,
    /// KMS `ListSecretVersionIds`.
    ListSecretVersionIds,
    /// OOS `GetSecretParameter`.
    GetSecretParameter,
    /// STS `AssumeRoleWithOIDC` (unsigned).
    AssumeRoleWithOidc,
    /// STS `AssumeRole`.
    AssumeRole,
    /// STS `GetCallerIdentity`.
    GetCallerIdentity,
}

impl Api {
    /// The operation an action and version name.
    pub fn of(action: &str, version: &str) -> Option<Self> {
        Some(match (action, version) {
            ("GetSecretValue", "2016-01-20") => Self::GetSecretValue,
            ("ListSecretVersionIds", "2016-01-20") => Self::ListSecretVersionIds,
            ("GetSecretParameter", "2019-06-01") => Self::GetSecretParameter,
            ("AssumeRoleWithOIDC", "2015-04-01") => Self::AssumeRoleWithOidc,
            ("AssumeRole", "2015-04-01") => Self::AssumeRole,
            ("GetCallerIdentity", "2015-04-01") => Self::GetCallerIdentity,
            _ => return None,
        })
    }

    /// The action name.
    pub fn action(self) -> &'static str {
        match self {
            Self::GetSecretValue => "GetSecretValue",
            Self::ListSecretVersionIds => "ListSecretVersionIds",
            Self::GetSecretParameter => "GetSecretParameter",
            Self::AssumeRoleWithOidc => "AssumeRoleWithOIDC",
            Self::AssumeRole => "AssumeRole",
            Self::GetCallerIdentity => "GetCallerIdentity",
        }
    }

    /// The product.
    pub fn product(self) -> Product {
        match self {
            Self::GetSecretValue | Self::ListSecretVersionIds => Product::Kms,
            Self::GetSecretParameter => Product::Oos,
            Self::AssumeRoleWithOidc | Self::AssumeRole | Self::GetCallerIdentity => Product::Sts,
        }
    }

    fn read_name(self, request: &ApiRequest) -> Option<String> {
        match self {
            Self::GetSecretValue | Self::ListSecretVersionIds => kms::read_name(request),
            Self::GetSecretParameter => oos::read_name(request),
            _ => None,
        }
    }
}

impl Product {
    fn throttled(self, retry_after_millis: Option<u64>) -> ApiError {
        match self {
            Self::Kms => kms::throttled(),
            Self::Oos | Self::Sts => sts::throttled(),
        }
        .with_retry_after_millis(retry_after_millis)
    }
}

/// Serves one request. `Err(Dropped)` closes the connection without an answer.
pub async fn handle(
    shared: Arc<Shared>,
    listener: Listener,
    request: http::Request<Incoming>,
) -> Result<Resp, Dropped> {
    let mut req = Req::new(request, &shared.config.default_host);
    match listener {
        Listener::Metadata => {
            let (latency, verdict) = {
                let mut faults = shared.faults();
                faults.count_request(metadata::ACTION);
                faults.plan(metadata::ACTION, None)
            };
            pause(latency).await;
            let response = match verdict {
                Verdict::Drop => {
                    shared
                        .faults()
                        .count_outcome(metadata::ACTION, Outcome::Dropped);
                    return Err(Dropped);
                }
                Verdict::Throttle { .. } => {
                    respond::text(StatusCode::TOO_MANY_REQUESTS, "Too Many Requests")
                }
                Verdict::Error(error) => respond::text(error.status(), error.message()),
                Verdict::Proceed => {
                    metadata::handle(&shared, &req.method, &req.segments, &req.headers)
                }
            };
            shared
                .faults()
                .count_outcome(metadata::ACTION, outcome_of(&response));
            Ok(response)
        }
        Listener::Https if req.segments.first().is_some_and(|s| s == "_emulator") => {
            Ok(admin::handle(&shared, &mut req).await)
        }
        Listener::Https => api(&shared, &mut req).await,
    }
}

async fn pause(latency: std::time::Duration) {
    if !latency.is_zero() {
        tokio::time::sleep(latency).await;
    }
}

fn outcome_of(response: &Resp) -> Outcome {
    if response.status().is_success() {
        Outcome::Succeeded
    } else {
        Outcome::Failed
    }
}

/// Reads the body and parameters of an API request.
async fn read(req: &mut Req) -> Result<ApiRequest, ApiError> {
    let body = req
        .body()
        .await
        .map_err(|_| ApiError::invalid_parameter("body", "The request body could not be read."))?;
    let is_form = req
        .headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            v.trim()
                .to_ascii_lowercase()
                .starts_with("application/x-www-form-urlencoded")
        });
    let form = if is_form {
        form_urlencoded::parse(&body).into_owned().collect()
    } else {
        Vec::new()
    };
    Ok(ApiRequest {
        method: req.method.as_str().to_owned(),
        path: req.path.clone(),
        query: req.query.clone(),
        form,
        headers: req.headers.clone(),
        body,
        host: req.host.clone(),
    })
}

async fn api(shared: &Arc<Shared>, req: &mut Req) -> Result<Resp, Dropped> {
    let request_id = clock::request_id();
    let host = req.host.clone();
    let request = match read(req).await {
        Ok(request) => request,
        Err(error) => return Ok(respond::api_error(&error, &request_id, &host)),
    };
    let Some(action) = request.action().map(str::to_owned) else {
        return Ok(respond::api_error(
            &ApiError::missing_parameter("Action"),
            &request_id,
            &host,
        ));
    };
    let version = request.version().unwrap_or_default();
    let Some(api) = Api::of(&action, version) else {
        shared.faults().count_request(&action);
        shared.faults().count_outcome(&action, Outcome::Failed);
        return Ok(respond::api_error(
            &ApiError::api_not_found(),
            &request_id,
            &host,
        ));
    };
    shared.faults().count_request(api.action());
    let result = pipeline(shared, api, &request).await;
    let response = match result {
        Err(Dropped) => {
            shared
                .faults()
                .count_outcome(api.action(), Outcome::Dropped);
            return Err(Dropped);
        }
        Ok(Ok(value)) => respond::api_ok(value, &request_id),
        Ok(Err(error)) => respond::api_error(&error, &request_id, &host),
    };
    shared
        .faults()
        .count_outcome(api.action(), outcome_of(&response));
    tracing::debug!(
        action = api.action(),
        status = response.status().as_u16(),
        "api request"
    );
    Ok(response)
}

async fn pipeline(
    shared: &Arc<Shared>,
    api: Api,
    request: &ApiRequest,
) -> Result<Result<Value, ApiError>, Dropped> {
    let now = now_secs();
    let caller: Option<Caller> = if api == Api::AssumeRoleWithOidc {
        None
    } else {
        let verified = auth::authenticate(&mut shared.directory(), request, now);
        match verified {
            Ok(caller) => Some(caller),
            Err(error) => return Ok(Err(error)),
        }
    };
    let name = api.read_name(request);
    let (latency, verdict) = {
        let mut faults = shared.faults();
        if let Some(name) = &name {
            faults.count_read(api.action(), name);
        }
        faults.plan(api.action(), name.as_deref())
    };
    pause(latency).await;
    match verdict {
        Verdict::Drop => return Err(Dropped),
        Verdict::Throttle { retry_after_millis } => {
            return Ok(Err(api.product().throttled(retry_after_millis)));
        }
        Verdict::Error(error) => return Ok(Err(error)),
        Verdict::Proceed => {}
    }
    Ok(match (api, caller) {
        (Api::AssumeRoleWithOidc, _) => sts::assume_role_with_oidc(shared, request, now),
        (_, None) => Err(ApiError::internal_failure()),
        (Api::GetSecretValue, Some(caller)) => kms::get_secret_value(shared, &caller, request),
        (Api::ListSecretVersionIds, Some(caller)) => {
            kms::list_secret_version_ids(shared, &caller, request)
        }
        (Api::GetSecretParameter, Some(caller)) => {
            oos::get_secret_parameter(shared, &caller, request)
        }
        (Api::AssumeRole, Some(caller)) => sts::assume_role(shared, &caller, request, now),
        (Api::GetCallerIdentity, Some(caller)) => Ok(sts::get_caller_identity(&caller)),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn actions_route_by_name_and_version() {
        assert_eq!(
            Api::of("GetSecretValue", "2016-01-20"),
            Some(Api::GetSecretValue)
        );
        assert_eq!(Api::of("GetSecretValue", "2019-06-01"), None);
        assert_eq!(
            Api::of("AssumeRoleWithOIDC", "2015-04-01").map(Api::product),
            Some(Product::Sts)
        );
        assert_eq!(Api::of("getsecretvalue", "2016-01-20"), None);
    }

    #[test]
    fn throttling_codes_follow_the_product() {
        let kms = Product::Kms.throttled(Some(10));
        assert_eq!(
            (kms.status(), kms.code()),
            (StatusCode::TOO_MANY_REQUESTS, "Rejected.Throttling")
        );
        assert_eq!(kms.retry_after_millis(), Some(10));
        let oos = Product::Oos.throttled(None);
        assert_eq!(
            (oos.status(), oos.code()),
            (StatusCode::BAD_REQUEST, "Throttling.User")
        );
    }
}
