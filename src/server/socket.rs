//! The Unix socket's lifecycle: a private directory, a socket that appears with its final mode
//! only once the plugin can serve, a stale socket from a crash replaced, a live one left alone,
//! and the socket removed on shutdown.
//!
//! Never deletes anything at the socket path that is not a socket, never deletes a socket
//! another process still answers on, and never loosens the mode of a directory it did not make.

use std::fs;
use std::io;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener as StdUnixListener, UnixStream};
use std::path::{Path, PathBuf};

use tokio::net::UnixListener;

/// Why the socket could not be opened.
#[derive(Debug)]
pub enum SocketError {
    /// Another process answers on the socket path.
    AlreadyServing {
        /// The socket path.
        path: PathBuf,
    },
    /// Something that is not a socket sits at the socket path.
    NotASocket {
        /// The socket path.
        path: PathBuf,
    },
    /// The socket's directory is open to other users.
    UnsafeDirectory {
        /// The directory.
        dir: PathBuf,
        /// What is wrong and how to fix it.
        reason: String,
    },
    /// A file system call failed.
    Io {
        /// What was being done.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The OS error.
        source: io::Error,
    },
}

impl std::fmt::Display for SocketError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::AlreadyServing { path } => write!(
                f,
                "another process is serving on {}; stop it first or choose another --socket",
                path.display()
            ),
            Self::NotASocket { path } => write!(
                f,
                "{} exists and is not a socket; refusing to delete it (remove it yourself or \
                 choose another --socket)",
                path.display()
            ),
            Self::UnsafeDirectory { dir, reason } => {
                write!(f, "socket directory {}: {reason}", dir.display())
            }
            Self::Io {
                action,
                path,
                source,
            } => {
                write!(f, "cannot {action} {}: {source}", path.display())
            }
        }
    }
}

impl std::error::Error for SocketError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            _ => None,
        }
    }
}

/// The bound socket. Dropping it removes the socket file if it is still the one bound here.
#[derive(Debug)]
pub struct BoundSocket {
    path: PathBuf,
    inode: (u64, u64),
}

impl BoundSocket {
    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for BoundSocket {
    fn drop(&mut self) {
        let ours = fs::symlink_metadata(&self.path)
            .map(|meta| (meta.dev(), meta.ino()) == self.inode)
            .unwrap_or(false);
        if ours {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Binds a listening socket at `path` with permission bits `mode` (0600 by default).
///
/// The parent directory is created 0700 if missing; an existing one must not be writable by
/// other users. A socket left by a crashed process is replaced; a socket some process still
/// accepts on is not. The socket is bound under a temporary name, given its mode, then renamed
/// into place, so it never appears with the wrong mode.
pub fn bind(path: &Path, mode: u32) -> Result<(UnixListener, BoundSocket), SocketError> {
    bind_with_group(path, mode, None)
}

/// [`bind`], and with `group` the socket is given that group before it appears at its path, and
/// a directory created for it is made 0710 with that group, so the group's members can reach
/// the socket but not list or write the directory.
pub fn bind_with_group(
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> Result<(UnixListener, BoundSocket), SocketError> {
    let io = |action, path: &Path| {
        let path = path.to_owned();
        move |source| SocketError::Io {
            action,
            path,
            source,
        }
    };
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_socket_dir(dir, group)?;
    remove_if_stale(path)?;

    let file_name = path
        .file_name()
        .ok_or_else(|| SocketError::NotASocket { path: path.into() })?;
    let temporary = dir.join(format!(
        ".{}.{}.tmp",
        file_name.to_string_lossy(),
        std::process::id()
    ));
    let _ = fs::remove_file(&temporary);
    let listener = StdUnixListener::bind(&temporary).map_err(io("bind", &temporary))?;
    let placed = std::os::unix::fs::chown(&temporary, None, group)
        .map_err(io("set the group of", &temporary))
        .and_then(|()| {
            fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))
                .map_err(io("set the mode of", &temporary))
        })
        .and_then(|()| fs::rename(&temporary, path).map_err(io("move into place", path)));
    if let Err(error) = placed {
        let _ = fs::remove_file(&temporary);
        return Err(error);
    }
    let meta = fs::symlink_metadata(path).map_err(io("inspect", path))?;
    let bound = BoundSocket {
        path: path.to_owned(),
        inode: (meta.dev(), meta.ino()),
    };
    listener
        .set_nonblocking(true)
        .map_err(io("configure", path))?;
    let listener = UnixListener::from_std(listener).map_err(io("listen on", path))?;
    Ok((listener, bound))
}

fn ensure_socket_dir(dir: &Path, group: Option<u32>) -> Result<(), SocketError> {
    let failed = |action| {
        move |source| SocketError::Io {
            action,
            path: dir.into(),
            source,
        }
    };
    match fs::metadata(dir) {
        Ok(meta) => {
            check_socket_dir(dir, &meta)?;
            if let Some(gid) = group
                && !group_can_enter(&meta, gid)
            {
                tracing::warn!(
                    dir = %dir.display(),
                    gid,
                    mode = format!("{:04o}", meta.permissions().mode() & 0o7777),
                    "the socket's group cannot enter the socket directory, so its members \
                     cannot connect; give the directory that group and mode 0710"
                );
            }
            Ok(())
        }
        Err(error) if error.kind() == io::ErrorKind::NotFound => {
            fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(failed("create"))?;
            if group.is_some() {
                // Group search only (0710): its members can connect to the socket by name.
                std::os::unix::fs::chown(dir, None, group).map_err(failed("set the group of"))?;
                fs::set_permissions(dir, fs::Permissions::from_mode(0o710))
                    .map_err(failed("set the mode of"))?;
            }
            Ok(())
        }
        Err(source) => Err(SocketError::Io {
            action: "inspect",
            path: dir.into(),
            source,
        }),
    }
}

/// Whether members of group `gid` may search (enter) a directory with this metadata.
fn group_can_enter(meta: &fs::Metadata, gid: u32) -> bool {
    let mode = meta.permissions().mode();
    mode & 0o001 != 0 || (meta.gid() == gid && mode & 0o010 != 0)
}

fn check_socket_dir(dir: &Path, meta: &fs::Metadata) -> Result<(), SocketError> {
    let unsafe_dir = |reason: String| SocketError::UnsafeDirectory {
        dir: dir.into(),
        reason,
    };
    if !meta.is_dir() {
        return Err(unsafe_dir("exists and is not a directory".into()));
    }
    let mode = meta.permissions().mode();
    let sticky = mode & 0o1000 != 0;
    if mode & 0o022 != 0 && !sticky {
        return Err(unsafe_dir(format!(
            "has mode {:04o}, so other users could replace the socket; use a directory only its \
             owner can write (chmod 700 {})",
            mode & 0o7777,
            dir.display()
        )));
    }
    if let Some(uid) = current_uid().filter(|uid| meta.uid() != *uid && meta.uid() != 0) {
        return Err(unsafe_dir(format!(
            "is owned by uid {}, not by this process (uid {uid}) or root",
            meta.uid()
        )));
    }
    Ok(())
}

fn remove_if_stale(path: &Path) -> Result<(), SocketError> {
    let meta = match fs::symlink_metadata(path) {
        Ok(meta) => meta,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(SocketError::Io {
                action: "inspect",
                path: path.into(),
                source,
            });
        }
    };
    if !meta.file_type().is_socket() {
        return Err(SocketError::NotASocket { path: path.into() });
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(SocketError::AlreadyServing { path: path.into() }),
        Err(error) if error.kind() == io::ErrorKind::ConnectionRefused => {
            tracing::info!(socket = %path.display(), "replacing a stale socket left by a previous run");
            fs::remove_file(path).map_err(|source| SocketError::Io {
                action: "remove stale",
                path: path.into(),
                source,
            })
        }
        Err(source) => Err(SocketError::Io {
            action: "probe existing",
            path: path.into(),
            source,
        }),
    }
}

/// The effective user id of this process (geteuid). Not read from the owner of /proc/self:
/// once the process is non-dumpable (see `crate::hardening`) /proc/self belongs to root.
pub fn current_uid() -> Option<u32> {
    Some(crate::hardening::effective_uid())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_enters_a_directory_through_its_group_bit_or_the_others_bit() {
        let dir = tempfile::tempdir().unwrap();
        let gid = fs::metadata(dir.path()).unwrap().gid();
        let with_mode = |mode| {
            fs::set_permissions(dir.path(), fs::Permissions::from_mode(mode)).unwrap();
            fs::metadata(dir.path()).unwrap()
        };
        assert!(!group_can_enter(&with_mode(0o700), gid));
        assert!(group_can_enter(&with_mode(0o710), gid));
        assert!(!group_can_enter(&with_mode(0o710), gid.wrapping_add(1)));
        assert!(group_can_enter(&with_mode(0o701), gid.wrapping_add(1)));
    }
}
