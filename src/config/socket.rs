//! The socket kube-apiserver connects to: its path, its permission bits and its group, checked
//! together (a group implies mode 0660; 0600 with a group is refused). Never accepts an
//! abstract socket (it has no permissions), a path the kernel would truncate, or a mode that
//! opens the socket to every user.

use std::path::{Path, PathBuf};

use super::ConfigError;
use super::DefaultsEnv;
use super::settings::{SOCKET, SOCKET_GROUP, SOCKET_MODE, Sources, parse_path};

/// Longest socket path the kernel accepts (`sun_path` is 108 bytes including the NUL).
const MAX_SOCKET_PATH_LEN: usize = 107;

/// The socket's settings, resolved.
pub(super) struct SocketSettings {
    pub(super) path: PathBuf,
    pub(super) mode: u32,
    pub(super) group: Option<u32>,
}

/// The `socket`, `socket_group` and `socket_mode` settings, in that order.
pub(super) fn resolve(
    sources: Sources<'_>,
    env: &DefaultsEnv,
) -> Result<SocketSettings, ConfigError> {
    let path = SOCKET
        .parse(sources, |_, value| parse_socket_path(value))?
        .unwrap_or_else(|| env.default_socket());
    let group = SOCKET_GROUP.parse(sources, |_, value| {
        parse_socket_group(value, Path::new(GROUP_FILE))
    })?;
    let mode = match (SOCKET_MODE.raw(sources), group) {
        (Some(mode), group) => match parse_socket_mode(mode)? {
            0o600 if group.is_some() => {
                return Err(SOCKET_MODE.invalid(
                    mode,
                    "\"0660\" with socket_group (0600 would shut the group out)",
                ));
            }
            mode => mode,
        },
        (None, Some(_)) => 0o660,
        (None, None) => 0o600,
    };
    Ok(SocketSettings { path, mode, group })
}

pub(super) fn parse_socket_path(value: &str) -> Result<PathBuf, ConfigError> {
    let value = value.strip_prefix("unix://").unwrap_or(value);
    let path = parse_path(&SOCKET, value)?;
    if value.len() > MAX_SOCKET_PATH_LEN {
        return Err(SOCKET.invalid(
            value,
            format!("a path of at most {MAX_SOCKET_PATH_LEN} bytes (a kernel limit)"),
        ));
    }
    if value.starts_with('@') {
        return Err(SOCKET.invalid(
            value,
            "a file system path (abstract sockets have no permissions)",
        ));
    }
    Ok(path)
}

pub(super) fn parse_socket_mode(value: &str) -> Result<u32, ConfigError> {
    match value.trim_start_matches("0o") {
        "0600" | "600" => Ok(0o600),
        "0660" | "660" => Ok(0o660),
        _ => Err(SOCKET_MODE.invalid(value, "\"0600\" or \"0660\" (quote it in YAML)")),
    }
}

/// Where group names are looked up (NSS sources other than this file are not consulted; give a
/// numeric gid for a group that lives only in LDAP or similar).
const GROUP_FILE: &str = "/etc/group";

/// A group name from `group_file` or a numeric gid.
pub(super) fn parse_socket_group(value: &str, group_file: &Path) -> Result<u32, ConfigError> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        return value
            .parse()
            .map_err(|_| SOCKET_GROUP.invalid(value, "a gid below 2^32"));
    }
    let valid_name = !value.is_empty()
        && value.len() <= 32
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b));
    if !valid_name {
        return Err(SOCKET_GROUP.invalid(value, "a group name or a numeric gid"));
    }
    let groups = std::fs::read_to_string(group_file).unwrap_or_default();
    groups
        .lines()
        .filter_map(|line| {
            let mut fields = line.split(':');
            let name = fields.next()?;
            let gid = fields.nth(1)?.parse::<u32>().ok()?;
            Some((name, gid))
        })
        .find_map(|(name, gid)| (name == value).then_some(gid))
        .ok_or_else(|| {
            SOCKET_GROUP.invalid(
                value,
                format!(
                    "a group listed in {} (or a numeric gid)",
                    group_file.display()
                ),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{env, error_of};
    use super::super::{Config, ConfigArgs};
    use super::*;

    #[test]
    fn socket_group_takes_a_name_or_gid_and_implies_0660() {
        let groups = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(groups.path(), "root:x:0:\nkube-kms:x:993:apiserver\nbad\n").unwrap();
        assert_eq!(parse_socket_group("kube-kms", groups.path()), Ok(993));
        assert_eq!(parse_socket_group("root", groups.path()), Ok(0));
        assert_eq!(parse_socket_group(" 4242 ", groups.path()), Ok(4242));
        for bad in ["", "nosuchgroup", "a b", "x:y", "99999999999"] {
            let error = parse_socket_group(bad, groups.path())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains("socket_group (--socket-group"),
                "{bad}: {error}"
            );
        }

        let config = Config::from_yaml("socket_group: 4242", &ConfigArgs::default(), &env());
        let config = config.unwrap();
        assert_eq!(
            (config.socket_group, config.socket_mode),
            (Some(4242), 0o660)
        );
        let error = error_of(
            "socket_group: 4242\nsocket_mode: \"0600\"",
            &ConfigArgs::default(),
        );
        assert!(error.contains("0600 would shut the group out"), "{error}");
        let config = Config::load(&ConfigArgs::default(), &env()).unwrap();
        assert_eq!((config.socket_group, config.socket_mode), (None, 0o600));
    }
}
