//! The `pkcs11:` settings, checked together: an absolute module path, one token selector (label
//! or slot), one PIN source (file or variable name), valid and distinct key labels. Never takes
//! or echoes the PIN: only where to read it, and a value given where a variable name belongs
//! is refused without being shown.

use std::path::Path;

use super::ConfigError;
use super::settings::{
    PKCS11_DECRYPT_ONLY_KEY_LABELS, PKCS11_KEY_LABEL, PKCS11_MODULE, PKCS11_PIN_ENV,
    PKCS11_PIN_FILE, PKCS11_SLOT, PKCS11_TOKEN_LABEL, Setting, Sources, parse_env_name, parse_path,
};
use crate::provider::pkcs11::{PinSource, Pkcs11Config, TokenSelector, is_valid_key_label};

/// What a key label may be, as errors say it.
const LABEL_RULE: &str = "printable ASCII without spaces, 1 to 128 bytes";

/// A required setting that no source gives.
fn required(setting: &Setting, what: &str) -> ConfigError {
    setting.invalid("", format!("{what} (required by provider pkcs11)"))
}

/// Every `pkcs11:` setting.
pub(super) fn resolve(sources: Sources<'_>) -> Result<Pkcs11Config, ConfigError> {
    let module = module(sources)?;
    let token = token(sources)?;
    let pin = pin(sources)?;
    let key_label = key_label(sources)?;
    let decrypt_only_key_labels = decrypt_only_key_labels(sources, &key_label)?;
    Ok(Pkcs11Config {
        module,
        token,
        pin,
        key_label,
        decrypt_only_key_labels,
    })
}

/// `pkcs11.module`: an absolute path.
fn module(sources: Sources<'_>) -> Result<std::path::PathBuf, ConfigError> {
    match PKCS11_MODULE.raw(sources) {
        Some(path) if Path::new(path).is_absolute() => parse_path(&PKCS11_MODULE, path),
        Some(path) => Err(PKCS11_MODULE.invalid(
            path,
            "an absolute path to the module, e.g. /usr/lib/softhsm/libsofthsm2.so",
        )),
        None => Err(required(
            &PKCS11_MODULE,
            "the PKCS#11 module's absolute path",
        )),
    }
}

/// `pkcs11.token_label` or `pkcs11.slot`, exactly one.
fn token(sources: Sources<'_>) -> Result<TokenSelector, ConfigError> {
    match (PKCS11_TOKEN_LABEL.raw(sources), PKCS11_SLOT.raw(sources)) {
        (Some(label), None) if !label.is_empty() && label.len() <= 32 => {
            Ok(TokenSelector::Label(label.to_owned()))
        }
        (Some(label), None) => {
            Err(PKCS11_TOKEN_LABEL.invalid(label, "a token label of 1 to 32 bytes"))
        }
        (None, Some(slot)) => {
            Ok(TokenSelector::Slot(slot.trim().parse().map_err(|_| {
                PKCS11_SLOT.invalid(slot, "a slot id (a whole number)")
            })?))
        }
        (Some(label), Some(_)) => {
            Err(PKCS11_TOKEN_LABEL.invalid(label, "either a token label or pkcs11.slot, not both"))
        }
        (None, None) => Err(required(
            &PKCS11_TOKEN_LABEL,
            "a token label, or pkcs11.slot",
        )),
    }
}

/// `pkcs11.pin_file` or `pkcs11.pin_env`, exactly one.
fn pin(sources: Sources<'_>) -> Result<PinSource, ConfigError> {
    match (PKCS11_PIN_FILE.raw(sources), PKCS11_PIN_ENV.raw(sources)) {
        (Some(path), None) => Ok(PinSource::File(parse_path(&PKCS11_PIN_FILE, path)?)),
        (None, Some(name)) => Ok(PinSource::Env(parse_env_name(
            &PKCS11_PIN_ENV,
            name,
            "PIN",
        )?)),
        (Some(path), Some(_)) => {
            Err(PKCS11_PIN_FILE.invalid(path, "either a PIN file or pkcs11.pin_env, not both"))
        }
        (None, None) => Err(required(&PKCS11_PIN_FILE, "a PIN file, or pkcs11.pin_env")),
    }
}

/// `pkcs11.key_label`: the key that wraps new KEKs.
fn key_label(sources: Sources<'_>) -> Result<String, ConfigError> {
    match PKCS11_KEY_LABEL.raw(sources) {
        Some(label) if is_valid_key_label(label) => Ok(label.to_owned()),
        Some(label) => Err(PKCS11_KEY_LABEL.invalid(label, LABEL_RULE)),
        None => Err(required(
            &PKCS11_KEY_LABEL,
            "the label of the key that wraps new KEKs",
        )),
    }
}

/// `pkcs11.decrypt_only_key_labels`: each once, none equal to `key_label`.
fn decrypt_only_key_labels(
    sources: Sources<'_>,
    key_label: &str,
) -> Result<Vec<String>, ConfigError> {
    let listed = PKCS11_DECRYPT_ONLY_KEY_LABELS
        .raw(sources)
        .unwrap_or_default();
    let mut labels: Vec<String> = Vec::new();
    for label in listed
        .split(',')
        .map(str::trim)
        .filter(|label| !label.is_empty())
    {
        if !is_valid_key_label(label) {
            return Err(PKCS11_DECRYPT_ONLY_KEY_LABELS.invalid(label, LABEL_RULE));
        }
        if label == key_label || labels.iter().any(|seen| seen == label) {
            return Err(PKCS11_DECRYPT_ONLY_KEY_LABELS.invalid(
                label,
                "labels that appear once and differ from pkcs11.key_label",
            ));
        }
        labels.push(label.to_owned());
    }
    Ok(labels)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{env, error_of};
    use super::super::{Config, ConfigArgs, ProviderConfig};
    use super::*;

    const PKCS11_YAML: &str = "provider: pkcs11\npkcs11:\n  \
        module: /usr/lib/softhsm/libsofthsm2.so\n  token_label: kube-kms\n  \
        pin_file: /etc/kube-kms/pin\n  key_label: kek-2\n  \
        decrypt_only_key_labels: [kek-1, kek-0]\n";

    #[test]
    fn pkcs11_settings_come_from_the_file_flags_and_environment() {
        let config = Config::from_yaml(PKCS11_YAML, &ConfigArgs::default(), &env()).unwrap();
        let expected = Pkcs11Config {
            module: "/usr/lib/softhsm/libsofthsm2.so".into(),
            token: TokenSelector::Label("kube-kms".into()),
            pin: PinSource::File("/etc/kube-kms/pin".into()),
            key_label: "kek-2".into(),
            decrypt_only_key_labels: vec!["kek-1".into(), "kek-0".into()],
        };
        assert_eq!(config.provider, ProviderConfig::Pkcs11(expected.clone()));

        // Rotation by flags: a new current label, the old ones decrypt-only; the PIN from a
        // variable whose name is given; the token by slot.
        let yaml = PKCS11_YAML
            .replace("  pin_file: /etc/kube-kms/pin\n", "")
            .replace("  token_label: kube-kms\n", "");
        let args = ConfigArgs {
            pkcs11_key_label: Some("kek-3".into()),
            pkcs11_decrypt_only_key_labels: Some("kek-2, kek-1".into()),
            pkcs11_pin_env: Some("KUBE_KMS_PKCS11_PIN".into()),
            pkcs11_slot: Some("7".into()),
            ..Default::default()
        };
        let config = Config::from_yaml(&yaml, &args, &env()).unwrap();
        assert_eq!(
            config.provider,
            ProviderConfig::Pkcs11(Pkcs11Config {
                token: TokenSelector::Slot(7),
                pin: PinSource::Env("KUBE_KMS_PKCS11_PIN".into()),
                key_label: "kek-3".into(),
                decrypt_only_key_labels: vec!["kek-2".into(), "kek-1".into()],
                ..expected
            })
        );
    }

    #[test]
    fn every_bad_pkcs11_value_names_its_setting() {
        let without = |line: &str| PKCS11_YAML.replace(line, "");
        let with = |from: &str, to: &str| PKCS11_YAML.replace(from, to);
        let cases = [
            (
                without("  module: /usr/lib/softhsm/libsofthsm2.so\n"),
                "pkcs11.module (--pkcs11-module / KUBE_KMS_PKCS11_MODULE)",
            ),
            (
                with("/usr/lib/softhsm/libsofthsm2.so", "libsofthsm2.so"),
                "an absolute path",
            ),
            (without("  token_label: kube-kms\n"), "pkcs11.token_label"),
            (
                with("token_label: kube-kms", "token_label: kube-kms\n  slot: 1"),
                "not both",
            ),
            (
                with(
                    "token_label: kube-kms",
                    &format!("token_label: {}", "t".repeat(33)),
                ),
                "1 to 32 bytes",
            ),
            (with("token_label: kube-kms", "slot: first"), "pkcs11.slot"),
            (
                without("  pin_file: /etc/kube-kms/pin\n"),
                "pkcs11.pin_file",
            ),
            (
                with(
                    "pin_file: /etc/kube-kms/pin",
                    "pin_file: /p\n  pin_env: PIN",
                ),
                "not both",
            ),
            (
                with("key_label: kek-2", "key_label: kek two"),
                "pkcs11.key_label",
            ),
            (without("  key_label: kek-2\n"), "pkcs11.key_label"),
            (
                with("[kek-1, kek-0]", "[kek-1, kek-2]"),
                "differ from pkcs11.key_label",
            ),
            (with("[kek-1, kek-0]", "[kek-1, kek-1]"), "appear once"),
            (
                with("provider: pkcs11", "provider: hsm"),
                "\"local\", \"pkcs11\" or \"azure\"",
            ),
            (
                with("key_label: kek-2", "key_label: kek-2\n  pin: 1234"),
                "pin",
            ),
        ];
        for (yaml, expected) in cases {
            let error = error_of(&yaml, &ConfigArgs::default());
            assert!(error.contains(expected), "{yaml}: {error}");
        }
    }

    #[test]
    fn a_pin_given_where_a_variable_name_belongs_is_not_echoed() {
        let yaml = PKCS11_YAML.replace("pin_file: /etc/kube-kms/pin", "pin_env: \"123456\"");
        let error = error_of(&yaml, &ConfigArgs::default());
        assert!(error.contains("pkcs11.pin_env"), "{error}");
        assert!(!error.contains("123456"), "{error}");
    }
}
