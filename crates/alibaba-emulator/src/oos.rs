//! OOS secret parameters, API version 2019-06-01: `GetSecretParameter` (by name, or by ARN for
//! another account's parameter; `ParameterVersion` 1-100, latest when absent; the value only
//! with `WithDecryption=true`). Permission is checked before existence.

use http::StatusCode;
use serde_json::{Value, json};

use crate::auth::ApiRequest;
use crate::clock;
use crate::error::ApiError;
use crate::identity::{Caller, allows};
use crate::kms::parse_bool;
use crate::state::Shared;
use crate::store;

/// 404 `EntityNotExists.Parameter`.
pub fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "EntityNotExists.Parameter",
        "The specified parameter does not exist.",
    )
}

/// 403 `Forbidden.RAM` (the gateway's RAM denial; OOS's own code is not documented).
pub fn no_permission() -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "Forbidden.RAM",
        "User not authorized to operate on the specified resource.",
    )
}

fn target(name: &str, caller_account: &str) -> Result<(String, String), ApiError> {
    store::designated(name, "oos", "secretparameter", caller_account).ok_or_else(|| {
        ApiError::invalid_parameter(
            "Name",
            "The ARN must be acs:oos:<region>:<account>:secretparameter/<name>.",
        )
    })
}

/// The parameter name a request reads (an ARN's name part).
pub fn read_name(request: &ApiRequest) -> Option<String> {
    let name = request.param("Name")?;
    Some(
        store::designated(name, "oos", "secretparameter", "")
            .map_or_else(|| name.to_owned(), |(_, n)| n),
    )
}

/// `GetSecretParameter`.
pub fn get_secret_parameter(
    shared: &Shared,
    caller: &Caller,
    request: &ApiRequest,
) -> Result<Value, ApiError> {
    let requested = request
        .param("Name")
        .filter(|n| !n.is_empty())
        .ok_or_else(|| ApiError::missing_parameter("Name"))?;
    let decrypt = parse_bool(request, "WithDecryption")?;
    let version = match request.param("ParameterVersion").filter(|v| !v.is_empty()) {
        None => None,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=100).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::invalid_parameter(
                    "ParameterVersion",
                    "Expected an integer from 1 to 100.",
                ));
            }
        },
    };
    let (account, name) = target(requested, &caller.account_id)?;
    let arn = store::parameter_arn(&shared.config.region, &account, &name);
    if !allows(
        &caller.grants.parameters,
        &caller.account_id,
        &account,
        &name,
        &arn,
    ) {
        return Err(no_permission());
    }
    let store = shared.store();
    let parameter = store.parameter(&account, &name).ok_or_else(not_found)?;
    let number = version.unwrap_or(parameter.versions.len());
    let value = parameter
        .versions
        .get(number.wrapping_sub(1))
        .ok_or_else(not_found)?;
    let mut body = json!({
        "Name": parameter.name,
        "Id": parameter.id,
        "Type": "Secret",
        "ParameterVersion": number,
        "KeyId": parameter.key_id,
        "Description": parameter.description,
        "CreatedDate": clock::format_utc(parameter.created),
        "UpdatedDate": clock::format_utc(parameter.updated),
        "CreatedBy": format!("root({})", parameter.account_id),
        "UpdatedBy": format!("root({})", parameter.account_id),
        "Constraints": "{}",
        "ShareType": "Private",
        "Tags": {},
        "ResourceGroupId": format!("rg-acfm{}", &parameter.id[2..12.min(parameter.id.len())]),
    });
    if decrypt {
        body["Value"] = json!(value.as_str());
    }
    Ok(json!({ "Parameter": body }))
}
