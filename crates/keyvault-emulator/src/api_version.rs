//! The `api-version` query parameter: the versions the emulator accepts and the check every
//! routed Key Vault call passes. Read by the router (which checks) and by the admin API's
//! `info` (which lists them); it depends on neither.

use crate::error::ServiceError;

/// api-versions the emulator accepts (2026-04-01 is the default of the 4.12 Python SDKs).
pub const API_VERSIONS: [&str; 5] = ["2026-04-01", "2025-07-01", "7.6", "7.5", "7.4"];

/// Accepts `requested` (the `api-version` query value, if any) when it is one of
/// [`API_VERSIONS`]; otherwise the service's 400 for a missing or unrecognized version.
pub fn check(requested: Option<&str>) -> Result<(), ServiceError> {
    match requested {
        None | Some("") => Err(ServiceError::bad_parameter(
            "The api-version query parameter is missing or empty.",
        )),
        Some(version) if API_VERSIONS.contains(&version) => Ok(()),
        Some(version) => Err(ServiceError::bad_parameter(format!(
            "The specified version ({version}) is not recognized. Consider using the latest \
             supported version (2025-07-01)."
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_listed_versions_pass() {
        for version in API_VERSIONS {
            assert!(check(Some(version)).is_ok(), "{version}");
        }
        for requested in [
            None,
            Some(""),
            Some("7.3"),
            Some("2016-10-01"),
            Some("7.6 "),
        ] {
            assert!(check(requested).is_err(), "{requested:?}");
        }
    }
}
