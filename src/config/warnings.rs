//! What `serve` warns about at start: the settings that are allowed but weaken security (a
//! health address open to the network, a refresh faster than once a second, the Azure challenge
//! check turned off, secret files others can read). Reads the mode of secret files, never their
//! contents, and never puts a secret in a warning.

use std::time::Duration;

use azure_access::auth::SecretSource;

use super::duration::format_duration;
use super::settings::{
    AZURE_CLIENT_CERTIFICATE_FILE, AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE,
    AZURE_CLIENT_SECRET_FILE, AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK, HEALTH_ADDRESS,
    PKCS11_PIN_FILE, REFRESH_INTERVAL,
};
use super::{Config, ProviderConfig};
use crate::provider::pkcs11::PinSource;

impl Config {
    /// The settings that weaken security, one sentence each naming the setting, the danger and
    /// the fix; `serve` logs each at warn when it starts. Refused settings are errors in
    /// [`Config::resolve`]; these are allowed because a test rig or a special deployment may
    /// need them. Reads the mode of secret files, never their contents (a file that cannot be
    /// inspected is left to the provider that reads it to report).
    pub fn warnings(&self) -> Vec<String> {
        let mut warnings = Vec::new();
        if let Some(address) = self.health_address
            && !address.ip().is_loopback()
        {
            warnings.push(format!(
                "{}: {address} is not a loopback address, so /healthz, /readyz and /metrics \
                 (key ids, refresh state, request counts) are open to the network; use \
                 127.0.0.1:PORT unless something off this host must scrape them",
                HEALTH_ADDRESS.names()
            ));
        }
        if self.refresh_interval < Duration::from_secs(1) {
            warnings.push(format!(
                "{}: {} reads the key service more than once a second, which costs quota and \
                 invites throttling; a minute is usual",
                REFRESH_INTERVAL.names(),
                format_duration(self.refresh_interval)
            ));
        }
        let mut secret_files = Vec::new();
        match &self.provider {
            ProviderConfig::Local { .. } => {}
            ProviderConfig::Pkcs11(pkcs11) => {
                if let PinSource::File(path) = &pkcs11.pin {
                    secret_files.push((&PKCS11_PIN_FILE, path.as_path()));
                }
            }
            ProviderConfig::Azure(azure) => {
                if azure.insecure_skip_challenge_resource_check {
                    warnings.push(format!(
                        "{} is on: the plugin sends its Entra ID token to whatever resource the \
                         vault's authentication challenge names, so a spoofed vault can obtain \
                         a token for another service; turn it off outside emulators and tests",
                        AZURE_INSECURE_SKIP_CHALLENGE_RESOURCE_CHECK.names()
                    ));
                }
                if let Some(SecretSource::File(path)) = &azure.auth.client_secret {
                    secret_files.push((&AZURE_CLIENT_SECRET_FILE, path.as_path()));
                }
                if let Some(path) = &azure.auth.client_certificate_file {
                    secret_files.push((&AZURE_CLIENT_CERTIFICATE_FILE, path.as_path()));
                }
                if let Some(SecretSource::File(path)) = &azure.auth.client_certificate_password {
                    secret_files.push((&AZURE_CLIENT_CERTIFICATE_PASSWORD_FILE, path.as_path()));
                }
            }
        }
        for (setting, path) in secret_files {
            use std::os::unix::fs::PermissionsExt;
            let Ok(meta) = std::fs::metadata(path) else {
                continue;
            };
            let mode = meta.permissions().mode();
            if mode & 0o044 != 0 {
                let who = if mode & 0o004 != 0 {
                    "every user"
                } else {
                    "its group"
                };
                warnings.push(format!(
                    "{}: {} has mode {:04o}, so {who} can read the secret in it; chmod 600 it \
                     (or 400; in Kubernetes, set the volume's defaultMode)",
                    setting.names(),
                    path.display(),
                    mode & 0o7777
                ));
            }
        }
        warnings
    }
}

#[cfg(test)]
mod tests {
    use super::super::ConfigArgs;
    use super::super::test_support::env;
    use super::*;

    /// Each dangerous setting is warned about, and none of the defaults is.
    #[test]
    fn dangerous_settings_are_warned_about_and_safe_defaults_are_not() {
        use std::os::unix::fs::PermissionsExt;
        let warnings = |yaml: &str| {
            Config::from_yaml(yaml, &ConfigArgs::default(), &env())
                .unwrap()
                .warnings()
        };
        let one = |yaml: &str, names: &str| {
            let found = warnings(yaml);
            assert_eq!(found.len(), 1, "{yaml}: {found:#?}");
            assert!(found[0].contains(names), "{yaml}: {found:#?}");
            found.into_iter().next().unwrap()
        };
        assert_eq!(warnings(""), Vec::<String>::new());
        let dir = tempfile::tempdir().unwrap();
        let file = |name: &str, mode: u32| {
            let path = dir.path().join(name);
            std::fs::write(&path, "s3cret\n").unwrap();
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            path.display().to_string()
        };
        let (private, group, world) = (
            file("private", 0o600),
            file("group", 0o640),
            file("world", 0o644),
        );
        let azure = |extra: &str| {
            format!(
                "provider: azure\nazure:\n  vault_url: https://kv.vault.azure.net\n  \
                 key_name: kek\n{extra}"
            )
        };
        let pkcs11 = |pin: &str| {
            format!(
                "provider: pkcs11\npkcs11:\n  module: /usr/lib/softhsm/libsofthsm2.so\n  \
                 token_label: t\n  pin_file: {pin}\n  key_label: kek\n"
            )
        };
        assert_eq!(warnings(&azure("")), Vec::<String>::new());
        assert_eq!(
            warnings(&azure(&format!("  client_secret_file: {private}\n"))),
            Vec::<String>::new()
        );
        assert_eq!(warnings(&pkcs11(&private)), Vec::<String>::new());
        for safe in [
            "health_address: 127.0.0.1:9000",
            "health_address: \"[::1]:9000\"",
            "health_address: off",
            "refresh_interval: 1s",
        ] {
            assert_eq!(warnings(safe), Vec::<String>::new(), "{safe}");
        }

        assert!(one("health_address: 0.0.0.0:8790", "health_address").contains("0.0.0.0:8790"));
        one("health_address: 10.1.2.3:8790", "health_address");
        assert!(one("refresh_interval: 999ms", "refresh_interval").contains("999ms"));
        one(
            &azure("  insecure_skip_challenge_resource_check: true\n"),
            "azure.insecure_skip_challenge_resource_check",
        );
        let shown = one(
            &azure(&format!("  client_secret_file: {world}\n")),
            "azure.client_secret_file",
        );
        assert!(
            shown.contains("0644") && shown.contains("every user") && !shown.contains("s3cret"),
            "{shown}"
        );
        let shown = one(
            &azure(&format!("  client_secret_file: {group}\n")),
            "azure.client_secret_file",
        );
        assert!(
            shown.contains("0640") && shown.contains("its group"),
            "{shown}"
        );
        one(
            &azure(&format!("  client_certificate_file: {world}\n")),
            "azure.client_certificate_file",
        );
        one(&pkcs11(&world), "pkcs11.pin_file");
        one(&pkcs11(&group), "pkcs11.pin_file");
        // Settings that do not name a file, or name one that is missing, warn about nothing.
        assert_eq!(warnings(&pkcs11("/nonexistent/pin")), Vec::<String>::new());
    }
}
