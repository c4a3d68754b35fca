//! A serving Unix socket's lifecycle: a private directory, a socket that appears with its final
//! mode only once the caller can serve, a stale socket from a crash replaced, a live one left
//! alone, and the socket removed when its [`BoundSocket`] is dropped.
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
/// accepts on is not. The socket is bound in a private 0700 directory beside the path, given its
/// group and mode there, then renamed into place, so no other user can reach it before it has
/// its final mode.
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

    let (listener, private) = bind_privately(dir)?;
    let temporary = private.join(PRIVATE_SOCKET_NAME);
    let placed = std::os::unix::fs::chown(&temporary, None, group)
        .map_err(io("set the group of", &temporary))
        .and_then(|()| {
            fs::set_permissions(&temporary, fs::Permissions::from_mode(mode))
                .map_err(io("set the mode of", &temporary))
        })
        .and_then(|()| fs::rename(&temporary, path).map_err(io("move into place", path)));
    if placed.is_err() {
        let _ = fs::remove_file(&temporary);
    }
    let _ = fs::remove_dir(&private);
    placed?;
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

/// The name of the socket inside its private directory: short, as the kernel allows socket
/// paths of at most 107 bytes and the directory's own name adds 15.
const PRIVATE_SOCKET_NAME: &str = "s";

/// Binds a socket inside a new directory next to the target that only this user can enter
/// (created 0700, whatever the umask), so no other user can connect in the moment between
/// bind — which creates the socket with the umask's mode — and the chmod that follows. The
/// process umask is left alone: it is shared with every other thread. Returns the listener and
/// the private directory, which the caller removes once the socket is renamed out of it.
fn bind_privately(dir: &Path) -> Result<(StdUnixListener, PathBuf), SocketError> {
    let mut random = [0u8; 4];
    let filled = rustix::rand::getrandom(&mut random, rustix::rand::GetRandomFlags::empty())
        .map_err(io::Error::from);
    if !matches!(filled, Ok(4)) {
        return Err(SocketError::Io {
            action: "name a private directory in",
            path: dir.into(),
            source: filled
                .err()
                .unwrap_or_else(|| io::Error::other("short read of randomness")),
        });
    }
    let private = dir.join(format!(".bind-{:08x}", u32::from_ne_bytes(random)));
    // mkdir never follows or reuses what is already there: a name another user planted fails.
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(|source| SocketError::Io {
            action: "create a private directory",
            path: private.clone(),
            source,
        })?;
    let socket = private.join(PRIVATE_SOCKET_NAME);
    // A umask can only take bits away from 0700; put back any it took from the owner.
    let bound = fs::set_permissions(&private, fs::Permissions::from_mode(0o700))
        .map_err(|source| SocketError::Io {
            action: "set the mode of",
            path: private.clone(),
            source,
        })
        .and_then(|()| {
            StdUnixListener::bind(&socket).map_err(|source| SocketError::Io {
                action: "bind",
                path: socket.clone(),
                source,
            })
        });
    match bound {
        Ok(listener) => {
            #[cfg(test)]
            tests::at_bind(&socket);
            Ok((listener, private))
        }
        Err(error) => {
            let _ = fs::remove_dir(&private);
            Err(error)
        }
    }
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
/// once the process is non-dumpable (see [`crate::hardening`]) /proc/self belongs to root.
pub fn current_uid() -> Option<u32> {
    Some(crate::hardening::effective_uid())
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::process::Command;

    use super::*;

    type Hook = Box<dyn FnMut(&Path)>;

    thread_local! {
        /// Called with the socket's path the moment `bind` returns, before any chmod.
        static AT_BIND: RefCell<Option<Hook>> = RefCell::new(None);
    }

    pub(super) fn at_bind(socket: &Path) {
        AT_BIND.with(|hook| {
            if let Some(hook) = hook.borrow_mut().as_mut() {
                hook(socket);
            }
        });
    }

    /// Whether another user could connect to `socket`: it must grant write to group or others,
    /// and every directory above it up to `top` must let them search.
    fn reachable_by_others(socket: &Path, top: &Path) -> bool {
        let mode = |path: &Path| fs::symlink_metadata(path).unwrap().permissions().mode();
        if mode(socket) & 0o022 == 0 {
            return false;
        }
        let mut dir = socket.parent().unwrap();
        loop {
            if mode(dir) & 0o011 == 0 {
                return false;
            }
            if dir == top {
                return true;
            }
            dir = dir.parent().unwrap();
        }
    }

    const UMASK_CHILD: &str = "GRPC_UDS_TEST_UMASK_000";

    /// Regression: the socket was bound under a temporary name in the socket's own directory
    /// with the umask's mode, and only then chmodded, so under a permissive umask another user
    /// could connect in between. Run in a child process whose umask is 000 (the umask is
    /// process-wide, so the test does not change this process's).
    #[test]
    fn no_other_user_can_reach_the_socket_before_it_has_its_mode() {
        if std::env::var_os(UMASK_CHILD).is_none() {
            let test = "socket::tests::no_other_user_can_reach_the_socket_before_it_has_its_mode";
            let status = Command::new("sh")
                .args(["-c", "umask 000 && exec \"$0\" \"$@\""])
                .arg(std::env::current_exe().unwrap())
                .args(["--exact", test, "--test-threads=1", "--nocapture"])
                .env(UMASK_CHILD, "1")
                .status()
                .unwrap();
            assert!(
                status.success(),
                "the child with umask 000 failed: {status}"
            );
            return;
        }
        let top = tempfile::tempdir().unwrap();
        fs::set_permissions(top.path(), fs::Permissions::from_mode(0o755)).unwrap();
        // A directory others may search (not write): allowed, and the case that matters.
        let dir = top.path().join("run");
        fs::DirBuilder::new().mode(0o755).create(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o755)).unwrap();
        let seen = std::rc::Rc::new(RefCell::new(Vec::new()));
        let record = std::rc::Rc::clone(&seen);
        let top_path = top.path().to_owned();
        AT_BIND.with(|hook| {
            *hook.borrow_mut() = Some(Box::new(move |socket: &Path| {
                record
                    .borrow_mut()
                    .push((socket.to_owned(), reachable_by_others(socket, &top_path)));
            }));
        });
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let path = dir.join("kms.sock");
        let bound = runtime.block_on(async { bind(&path, 0o600).map(|(_, bound)| bound) });
        AT_BIND.with(|hook| hook.borrow_mut().take());
        let bound = bound.unwrap();
        let seen = seen.borrow();
        assert_eq!(seen.len(), 1, "{seen:?}");
        assert!(
            !seen[0].1,
            "{} was reachable by other users at bind",
            seen[0].0.display()
        );
        let mode = fs::symlink_metadata(bound.path())
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        // Nothing is left behind in the directory but the socket.
        let names: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        assert_eq!(names, ["kms.sock"]);
    }

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
