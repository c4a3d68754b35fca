//! KMS Secrets Manager, API version 2016-01-20: `GetSecretValue` (by name or by ARN for another
//! account's secret; by `VersionId`, by `VersionStage`, or `ACSCurrent`; text or binary data)
//! and `ListSecretVersionIds` (paged). Permission is checked before existence, as RAM does, so a
//! caller without a grant learns nothing about the secret.
//!
//! The answer carries the secret's data — that is the API — but nothing here logs it.

use http::StatusCode;
use serde_json::{Value, json};

use crate::auth::ApiRequest;
use crate::clock;
use crate::error::ApiError;
use crate::identity::{Caller, allows};
use crate::state::Shared;
use crate::store::{self, ACS_CURRENT, Secret};

/// 404 `Forbidden.ResourceNotFound` (callers match the text "Resource not found").
pub fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "Forbidden.ResourceNotFound",
        "Resource not found",
    )
}

/// 403 `Forbidden.NoPermission`.
pub fn no_permission() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden.NoPermission",
        "This operation is forbidden by permission system.",
    )
}

/// 429 `Rejected.Throttling`.
pub fn throttled() -> ApiError {
    ApiError::new(
        StatusCode::TOO_MANY_REQUESTS,
        "Rejected.Throttling",
        "QPS Limit Exceeded",
    )
}

/// The account and name a `SecretName` parameter designates: an ARN names both, a plain name
/// is in the caller's account.
pub fn target(secret_name: &str, caller_account: &str) -> Result<(String, String), ApiError> {
    store::designated(secret_name, "kms", "secret", caller_account).ok_or_else(|| {
        ApiError::invalid_parameter(
            "SecretName",
            "The ARN must be acs:kms:<region>:<account>:secret/<name>.",
        )
    })
}

/// The secret name a request reads (an ARN's name part), for counters and fault rules.
pub fn read_name(request: &ApiRequest) -> Option<String> {
    let name = request.param("SecretName")?;
    Some(store::designated(name, "kms", "secret", "").map_or_else(|| name.to_owned(), |(_, n)| n))
}

/// Parses a boolean parameter as the SDKs send it (`true`, `True`, `false`, `False`).
pub fn parse_bool(request: &ApiRequest, name: &str) -> Result<bool, ApiError> {
    match request.param(name) {
        None | Some("") => Ok(false),
        Some(v) if v.eq_ignore_ascii_case("true") => Ok(true),
        Some(v) if v.eq_ignore_ascii_case("false") => Ok(false),
        Some(_) => Err(ApiError::invalid_parameter(name, "Expected true or false.")),
    }
}

fn readable<'a>(
    shared: &Shared,
    store: &'a store::Store,
    caller: &Caller,
    request: &ApiRequest,
) -> Result<&'a Secret, ApiError> {
    let secret_name = request
        .param("SecretName")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::missing_parameter("SecretName"))?;
    let (account, name) = target(secret_name, &caller.account_id)?;
    let arn = store::secret_arn(&shared.config.region, &account, &name);
    if !allows(
        &caller.grants.secrets,
        &caller.account_id,
        &account,
        &name,
        &arn,
    ) {
        return Err(no_permission());
    }
    store.secret(&account, &name).ok_or_else(not_found)
}

fn stages_object(stages: &[String]) -> Value {
    json!({ "VersionStage": stages })
}

/// `GetSecretValue`.
pub fn get_secret_value(
    shared: &Shared,
    caller: &Caller,
    request: &ApiRequest,
) -> Result<Value, ApiError> {
    parse_bool(request, "DryRun")?;
    let extended = parse_bool(request, "FetchExtendedConfig")?;
    let store = shared.store();
    let secret = readable(shared, &store, caller, request)?;
    let version_id = request.param("VersionId").filter(|v| !v.is_empty());
    let stage = request.param("VersionStage").filter(|v| !v.is_empty());
    let version = match (version_id, stage) {
        (Some(id), stage) => {
            let version = secret.by_id(id).ok_or_else(not_found)?;
            if let Some(stage) = stage
                && !version.stages.iter().any(|s| s == stage)
            {
                return Err(ApiError::invalid_parameter(
                    "VersionStage",
                    "No version matches both VersionId and VersionStage.",
                ));
            }
            version
        }
        (None, Some(stage)) => secret.by_stage(stage).ok_or_else(not_found)?,
        (None, None) => secret.by_stage(ACS_CURRENT).ok_or_else(not_found)?,
    };
    let mut body = json!({
        "SecretName": secret.name,
        "SecretType": secret.secret_type,
        "SecretData": version.data.as_str(),
        "SecretDataType": version.data_type.as_str(),
        "VersionId": version.version_id,
        "VersionStages": stages_object(&version.stages),
        "CreateTime": clock::format_utc(version.created),
    });
    if extended {
        body["AutomaticRotation"] = json!("Disabled");
    }
    Ok(body)
}

fn page_param(
    request: &ApiRequest,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, ApiError> {
    match request.param(name) {
        None | Some("") => Ok(default),
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(ApiError::invalid_parameter(
                name,
                &format!("Expected an integer from 1 to {max}."),
            )),
        },
    }
}

/// `ListSecretVersionIds`.
pub fn list_secret_version_ids(
    shared: &Shared,
    caller: &Caller,
    request: &ApiRequest,
) -> Result<Value, ApiError> {
    let include_deprecated = parse_bool(request, "IncludeDeprecated")?;
    let page_number = page_param(request, "PageNumber", 1, usize::MAX)?;
    let page_size = page_param(request, "PageSize", 20, 100)?;
    let store = shared.store();
    let secret = readable(shared, &store, caller, request)?;
    let versions: Vec<Value> = secret
        .versions
        .iter()
        .filter(|v| include_deprecated || !v.stages.is_empty())
        .map(|v| {
            json!({
                "VersionId": v.version_id,
                "CreateTime": clock::format_utc(v.created),
                "VersionStages": stages_object(&v.stages),
            })
        })
        .collect();
    let total = versions.len();
    let page: Vec<Value> = versions
        .into_iter()
        .skip(page_number.saturating_sub(1).saturating_mul(page_size))
        .take(page_size)
        .collect();
    Ok(json!({
        "SecretName": secret.name,
        "TotalCount": total,
        "PageNumber": page_number,
        "PageSize": page_size,
        "VersionIds": { "VersionId": page },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secret_names_and_arns_designate_account_and_name() {
        assert_eq!(
            target("db", "111").unwrap(),
            ("111".to_owned(), "db".to_owned())
        );
        assert_eq!(
            target("acs:kms:cn-hangzhou:222:secret/db", "111").unwrap(),
            ("222".to_owned(), "db".to_owned())
        );
        assert_eq!(
            target("acs:kms:cn-hangzhou:222:key/db", "111")
                .unwrap_err()
                .code(),
            "InvalidParameter"
        );
    }
}
