//! Names of keys and key versions in a vault, the key_id derived from them, and the shape checks
//! that keep an annotation (attacker input from etcd) from naming anything outside the
//! configuration.
//!
//! A key_id is the lowercase hex SHA-256 of `https://{vault-host}/keys/{name}/{version}`, the
//! value Azure's Go KMS plugin reports for the same key version, so a cluster can move between
//! the two plugins without re-encrypting. A version is Key Vault's 32 lowercase hex digits; a
//! version read from etcd is only ever checked against this shape and joined to a vault and key
//! name from the configuration — never used to build a host or a name.

use sha2::{Digest, Sha256};

/// Length of a Key Vault / Managed HSM key version.
pub const VERSION_LEN: usize = 32;
/// Longest key name Key Vault accepts.
pub const MAX_KEY_NAME_LEN: usize = 127;

/// Whether `version` has the shape of a key version: 32 lowercase hex digits.
pub fn is_valid_version(version: &str) -> bool {
    version.len() == VERSION_LEN
        && version
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Whether `name` can be a key name: 1..=127 ASCII letters, digits and dashes.
pub fn is_valid_key_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_KEY_NAME_LEN
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

/// A key in a vault: the vault's host (lowercase, with a port only when not 443) and the key's
/// name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct KeyRef {
    host: String,
    name: String,
}

impl KeyRef {
    /// A key named `name` in the vault at `vault_url` (`https://host[:port][/]`).
    pub fn new(vault_url: &str, name: &str) -> Result<Self, String> {
        let host = parse_vault_url(vault_url)?;
        if !is_valid_key_name(name) {
            return Err(format!(
                "{name:?} is not a key name: 1 to {MAX_KEY_NAME_LEN} letters, digits and dashes"
            ));
        }
        Ok(Self {
            host,
            name: name.to_owned(),
        })
    }

    /// Parses `https://{host}/keys/{name}` or `https://{host}/keys/{name}/{version}` (the
    /// form of a key's kid).
    pub fn parse_key_url(url: &str) -> Result<(Self, Option<String>), String> {
        let expected =
            "https://{vault-host}/keys/{name} or https://{vault-host}/keys/{name}/{version}";
        let rest = url
            .strip_prefix("https://")
            .ok_or_else(|| format!("{url:?} is not {expected}"))?;
        let mut parts = rest.trim_end_matches('/').split('/');
        let (Some(host), Some("keys"), Some(name)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(format!("{url:?} is not {expected}"));
        };
        let version = parts.next().map(str::to_owned);
        if parts.next().is_some() {
            return Err(format!("{url:?} is not {expected}"));
        }
        if let Some(version) = &version
            && !is_valid_version(version)
        {
            return Err(format!(
                "{url:?} names version {version:?}; a version is 32 lowercase hex digits"
            ));
        }
        Ok((Self::new(&format!("https://{host}"), name)?, version))
    }

    /// The vault's host as it appears in kids: lowercase, with a port only when not 443.
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The vault's URL, `https://{host}/`.
    pub fn vault_url(&self) -> String {
        format!("https://{}/", self.host)
    }

    /// `https://{host}/keys/{name}/{version}`: the key version's identifier (its kid).
    pub fn version_url(&self, version: &str) -> String {
        format!("https://{}/keys/{}/{version}", self.host, self.name)
    }

    /// The key_id of `version` of this key: lowercase hex SHA-256 of [`KeyRef::version_url`].
    pub fn key_id(&self, version: &str) -> String {
        hex::encode(Sha256::digest(self.version_url(version).as_bytes()))
    }

    /// Whether a kid returned by the service names `version` of this key (hosts and names
    /// compare without case, as Key Vault treats them).
    pub fn matches_kid(&self, kid: &str, version: &str) -> bool {
        kid.trim_end_matches('/')
            .eq_ignore_ascii_case(&self.version_url(version))
    }

    /// The version named by a kid of this key, if it is one.
    pub fn version_of_kid(&self, kid: &str) -> Option<String> {
        let prefix = format!("https://{}/keys/{}/", self.host, self.name);
        let head = kid.get(..prefix.len())?;
        let version = kid.get(prefix.len()..)?.trim_end_matches('/');
        (head.eq_ignore_ascii_case(&prefix) && is_valid_version(version))
            .then(|| version.to_owned())
    }
}

impl std::fmt::Display for KeyRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key {:?} in {}", self.name, self.host)
    }
}

/// Checks a vault URL and returns its host as kids carry it. Only `https://host[:port][/]` is
/// accepted: no user info, path, query or fragment.
pub fn parse_vault_url(url: &str) -> Result<String, String> {
    let expected = "an https URL of a vault or Managed HSM, e.g. https://myvault.vault.azure.net/";
    let authority = url
        .strip_prefix("https://")
        .map(|rest| rest.strip_suffix('/').unwrap_or(rest))
        .filter(|authority| !authority.is_empty())
        .ok_or_else(|| format!("{url:?} is not {expected}"))?;
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (host, Some(port)),
        None => (authority, None),
    };
    let host_ok = !host.is_empty()
        && host.len() <= 253
        && host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
    let port = match port {
        None => None,
        Some(port) => match port.parse::<u16>() {
            Ok(443) => None,
            Ok(number) if number > 0 && !port.starts_with('0') => Some(number),
            _ => return Err(format!("{url:?} is not {expected}")),
        },
    };
    if !host_ok {
        return Err(format!("{url:?} is not {expected}"));
    }
    let host = host.to_ascii_lowercase();
    Ok(match port {
        Some(port) => format!("{host}:{port}"),
        None => host,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VERSION: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn key_id_is_the_sha256_of_the_version_url() {
        let key = KeyRef::new("https://MyVault.vault.azure.net/", "kek").unwrap();
        assert_eq!(
            key.version_url(VERSION),
            format!("https://myvault.vault.azure.net/keys/kek/{VERSION}")
        );
        // Independently: printf '%s' https://myvault.vault.azure.net/keys/kek/0123…ef | sha256sum
        assert_eq!(
            key.key_id(VERSION),
            "6c0fa652efc19c97d66a8c70e71224d33a53ab4340ebbfb07d7d3e549db9560e"
        );
        assert_ne!(key.key_id(VERSION), key.key_id(&"f".repeat(32)));
    }

    #[test]
    fn versions_must_be_32_lowercase_hex_digits() {
        assert!(is_valid_version(VERSION));
        for bad in [
            "",
            "1",
            &VERSION.to_uppercase(),
            &format!("{VERSION}0"),
            &VERSION[1..],
            "0123456789abcdef0123456789abcdeg",
            "../../../../../../../../../../x",
            "0123456789abcdef/123456789abcdef",
        ] {
            assert!(!is_valid_version(bad), "{bad:?}");
        }
    }

    #[test]
    fn vault_urls_are_https_hosts_only() {
        assert_eq!(
            parse_vault_url("https://kv.vault.azure.net").unwrap(),
            "kv.vault.azure.net"
        );
        assert_eq!(
            parse_vault_url("https://kv.vault.azure.net:443/").unwrap(),
            "kv.vault.azure.net"
        );
        assert_eq!(
            parse_vault_url("https://localhost:8443/").unwrap(),
            "localhost:8443"
        );
        for bad in [
            "http://kv.vault.azure.net/",
            "https://",
            "https://kv.vault.azure.net/keys",
            "https://user@kv.vault.azure.net/",
            "https://kv.vault.azure.net:0/",
            "https://kv.vault.azure.net:99999/",
            "https://kv.vault.azure.net/?x=1",
            "kv.vault.azure.net",
        ] {
            assert!(parse_vault_url(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn key_urls_and_kids_parse_within_the_key() {
        let (key, version) = KeyRef::parse_key_url(&format!(
            "https://kv.vault.azure.net/keys/old-kek/{VERSION}"
        ))
        .unwrap();
        assert_eq!((key.host(), key.name()), ("kv.vault.azure.net", "old-kek"));
        assert_eq!(version.as_deref(), Some(VERSION));
        let (_, none) = KeyRef::parse_key_url("https://kv.vault.azure.net/keys/kek/").unwrap();
        assert_eq!(none, None);
        for bad in [
            "https://kv.vault.azure.net/secrets/kek",
            "https://kv.vault.azure.net/keys/kek/v1",
            "https://kv.vault.azure.net/keys/k_e_k",
            &format!("https://kv.vault.azure.net/keys/kek/{VERSION}/wrapkey"),
        ] {
            assert!(KeyRef::parse_key_url(bad).is_err(), "{bad:?}");
        }
        let kid = format!("https://KV.vault.azure.net/keys/kek/{VERSION}");
        let kek = KeyRef::new("https://kv.vault.azure.net", "kek").unwrap();
        assert!(kek.matches_kid(&kid, VERSION));
        assert_eq!(kek.version_of_kid(&kid).as_deref(), Some(VERSION));
        assert_eq!(
            kek.version_of_kid("https://kv.vault.azure.net/keys/other/0123"),
            None
        );
    }
}
