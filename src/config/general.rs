//! The settings every provider shares: the state directory, refusing root, how often the key is
//! refreshed, when local KEKs rotate, the KEK cache, the guard around the key service, logging
//! and the operations endpoints' address. Each reads its value through the one precedence in
//! `settings.rs` and falls back to its documented default. Never widens a default: the health
//! endpoints default to loopback, and a non-loopback address is a warning, not a silent choice.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use super::settings::{
    CACHE_SIZE, HEALTH_ADDRESS, KEK_MAX_AGE, KEK_MAX_ENCRYPTIONS, LOG_FORMAT, LOG_LEVEL,
    MAX_CONCURRENT_UNWRAPS, REFRESH_INTERVAL, REFUSE_ROOT, REMOTE_TIMEOUT, STATE_DIR, Sources,
    duration_in, number_in, parse_bool, parse_path,
};
use super::{ConfigError, DEFAULT_HEALTH_ADDRESS, DefaultsEnv, LogFormat};
use crate::envelope::kek::RotationPolicy;
use crate::provider::guard::GuardPolicy;

/// `state_dir`, by default under `$XDG_STATE_HOME` or `~/.local/state`.
pub(super) fn state_dir(sources: Sources<'_>, env: &DefaultsEnv) -> Result<PathBuf, ConfigError> {
    Ok(STATE_DIR
        .parse(sources, parse_path)?
        .unwrap_or_else(|| env.default_state_dir()))
}

/// `refuse_root`, false by default.
pub(super) fn refuse_root(sources: Sources<'_>) -> Result<bool, ConfigError> {
    Ok(REFUSE_ROOT.parse(sources, parse_bool)?.unwrap_or(false))
}

/// `refresh_interval`, from 10ms to a day, a minute by default.
pub(super) fn refresh_interval(sources: Sources<'_>) -> Result<Duration, ConfigError> {
    Ok(REFRESH_INTERVAL
        .parse(
            sources,
            duration_in(Duration::from_millis(10), Duration::from_secs(24 * 3600)),
        )?
        .unwrap_or(Duration::from_secs(60)))
}

/// `kek_max_encryptions` and `kek_max_age`.
pub(super) fn rotation(sources: Sources<'_>) -> Result<RotationPolicy, ConfigError> {
    let max_encryptions = KEK_MAX_ENCRYPTIONS
        .parse(sources, number_in(1, RotationPolicy::MAX_ENCRYPTIONS_LIMIT))?
        .unwrap_or(RotationPolicy::DEFAULT.max_encryptions);
    let max_age = KEK_MAX_AGE
        .parse(
            sources,
            duration_in(Duration::from_secs(1), Duration::from_secs(90 * 24 * 3600)),
        )?
        .unwrap_or(RotationPolicy::DEFAULT.max_age);
    Ok(RotationPolicy {
        max_encryptions,
        max_age,
    })
}

/// `cache_size`, from 1 to a million, 1000 by default.
pub(super) fn cache_size(sources: Sources<'_>) -> Result<u64, ConfigError> {
    Ok(CACHE_SIZE
        .parse(sources, number_in(1, 1_000_000))?
        .unwrap_or(1000))
}

/// `remote_timeout` and `max_concurrent_unwraps`, on top of the guard's defaults.
pub(super) fn guard(sources: Sources<'_>) -> Result<GuardPolicy, ConfigError> {
    let call_deadline = REMOTE_TIMEOUT
        .parse(
            sources,
            duration_in(Duration::from_millis(100), Duration::from_secs(10)),
        )?
        .unwrap_or(GuardPolicy::DEFAULT.call_deadline);
    let max_concurrent_unwraps = MAX_CONCURRENT_UNWRAPS
        .parse(sources, number_in(1, 256))?
        .unwrap_or(GuardPolicy::DEFAULT.max_concurrent_unwraps as u64);
    Ok(GuardPolicy {
        call_deadline,
        max_concurrent_unwraps: usize::try_from(max_concurrent_unwraps).unwrap_or(8),
        ..GuardPolicy::DEFAULT
    })
}

/// `log_format`: text (the default) or json.
pub(super) fn log_format(sources: Sources<'_>) -> Result<LogFormat, ConfigError> {
    match LOG_FORMAT.raw(sources) {
        None | Some("text") => Ok(LogFormat::Text),
        Some("json") => Ok(LogFormat::Json),
        Some(other) => Err(LOG_FORMAT.invalid(other, "\"text\" or \"json\"")),
    }
}

/// `log_level`: a tracing level name, info by default.
pub(super) fn log_level(sources: Sources<'_>) -> Result<String, ConfigError> {
    match LOG_LEVEL.raw(sources) {
        None => Ok("info".to_owned()),
        Some(level) if ["error", "warn", "info", "debug", "trace"].contains(&level) => {
            Ok(level.to_owned())
        }
        Some(other) => Err(LOG_LEVEL.invalid(other, "error, warn, info, debug or trace")),
    }
}

/// `health_address`: an IP address and port, or off; loopback by default.
pub(super) fn health_address(sources: Sources<'_>) -> Result<Option<SocketAddr>, ConfigError> {
    match HEALTH_ADDRESS.raw(sources) {
        // YAML 1.1 reads an unquoted `off` (or `no`) as the boolean false.
        Some(value) if ["off", "false"].contains(&value.to_ascii_lowercase().as_str()) => Ok(None),
        Some(value) => Ok(Some(value.parse().map_err(|_| {
            HEALTH_ADDRESS.invalid(
                value,
                "an IP address and port such as 127.0.0.1:8790, or \"off\"",
            )
        })?)),
        None => Ok(DEFAULT_HEALTH_ADDRESS.parse().ok()),
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{env, error_of};
    use super::super::{Config, ConfigArgs};

    /// Regression: YAML 1.1 reads an unquoted `off` as the boolean false, and `health_address:
    /// off` in a config file was refused as "false".
    #[test]
    fn health_address_off_in_a_file_turns_the_listener_off_quoted_or_not() {
        let dir = tempfile::tempdir().unwrap();
        for line in [
            "health_address: off",
            "health_address: \"off\"",
            "health_address: 'off'",
            "health_address: false",
            "health_address: Off",
            "health_address: OFF",
        ] {
            let file = dir.path().join("kube-kms.yaml");
            std::fs::write(&file, format!("{line}\n")).unwrap();
            let args = ConfigArgs {
                config: Some(file),
                ..Default::default()
            };
            let config =
                Config::load(&args, &env()).unwrap_or_else(|error| panic!("{line}: {error}"));
            assert_eq!(config.health_address, None, "{line}");
        }
        for refused in ["health_address: on", "health_address: true"] {
            let error = error_of(refused, &ConfigArgs::default());
            assert!(error.contains("health_address"), "{refused}: {error}");
        }
        let flag = ConfigArgs {
            health_address: Some("false".into()),
            ..Default::default()
        };
        assert_eq!(
            Config::from_yaml("", &flag, &env()).unwrap().health_address,
            None
        );
    }

    #[test]
    fn every_bad_value_names_its_setting_and_what_is_allowed() {
        let cases = [
            (
                "refresh_interval: soon",
                "refresh_interval (--refresh-interval / KUBE_KMS_REFRESH_INTERVAL)",
            ),
            ("refresh_interval: 0s", "a duration from 10ms to 1d"),
            ("kek_max_encryptions: 0", "kek_max_encryptions"),
            ("kek_max_encryptions: 4294967297", "from 1 to 4294967296"),
            ("kek_max_age: 100d", "kek_max_age"),
            ("cache_size: -1", "cache_size"),
            ("remote_timeout: 20s", "a duration from 100ms to 10s"),
            ("max_concurrent_unwraps: 0", "max_concurrent_unwraps"),
            ("provider: aws", "provider (--provider / KUBE_KMS_PROVIDER)"),
            ("socket_mode: \"0666\"", "\"0600\" or \"0660\""),
            ("log_format: xml", "\"text\" or \"json\""),
            ("log_level: loud", "error, warn, info, debug or trace"),
            ("socket: \"@abstract\"", "abstract sockets"),
            ("health_address: localhost", "an IP address and port"),
        ];
        for (yaml, expected) in cases {
            let error = error_of(yaml, &ConfigArgs::default());
            assert!(error.contains(expected), "{yaml}: {error}");
        }
        let long = format!("socket: /{}", "a".repeat(120));
        assert!(error_of(&long, &ConfigArgs::default()).contains("at most 107 bytes"));
    }

    #[test]
    fn refuse_root_is_a_boolean_from_any_source() {
        let config = Config::load(&ConfigArgs::default(), &env()).unwrap();
        assert!(!config.refuse_root);
        let config = Config::from_yaml("refuse_root: true", &ConfigArgs::default(), &env());
        assert!(config.unwrap().refuse_root);
        let args = ConfigArgs {
            refuse_root: Some("false".into()),
            ..Default::default()
        };
        assert!(
            !Config::from_yaml("refuse_root: true", &args, &env())
                .unwrap()
                .refuse_root
        );
        let error = error_of("refuse_root: maybe", &ConfigArgs::default());
        assert!(
            error.contains("refuse_root (--refuse-root / KUBE_KMS_REFUSE_ROOT)"),
            "{error}"
        );
    }
}
