//! The checkpoint file of `kube-kms migrate`: how far a run got, so an interrupted one resumes
//! where it stopped instead of rewriting the cluster again.
//!
//! It records, for the run's API server and resource list: the resources finished, the page
//! being worked on (its continue token, and the last object done in list order, so that an
//! expired token costs a re-list but no second write), running counts, and the objects that
//! failed (retried first by the next run). It is JSON, written to a temporary file in the same
//! directory and renamed into place (mode 0600), so a crash leaves the old or the new one, never
//! half of either. It holds object names and error messages, never object contents.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The format name in every checkpoint.
pub const FORMAT: &str = "kube-kms/migrate-checkpoint/v1";

/// Where a resource's listing stands.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// The resource being rewritten.
    pub resource: String,
    /// The continue token of the page being worked on (`None`: the first page).
    pub continue_token: Option<String>,
    /// The last object done, in list order (`namespace/name`, or `name`): every object up to it
    /// is done, so a re-list from the start (an expired token) skips them.
    pub after: Option<String>,
}

/// Running counts for one resource.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Objects rewritten.
    pub rewritten: u64,
    /// Objects deleted before they could be rewritten.
    pub skipped: u64,
    /// Conflicts met and retried.
    pub conflicts: u64,
}

/// An object that could not be rewritten.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedObject {
    /// Its resource.
    pub resource: String,
    /// Its namespace, for a namespaced resource.
    pub namespace: Option<String>,
    /// Its name.
    pub name: String,
    /// Why, as the API server said it.
    pub reason: String,
}

impl FailedObject {
    /// `namespace/name` or `name`: the object's place in list order.
    pub fn list_key(&self) -> String {
        list_key(self.namespace.as_deref(), &self.name)
    }
}

/// `namespace/name`, or `name` for a cluster-scoped object: the order kube-apiserver lists in.
pub fn list_key(namespace: Option<&str>, name: &str) -> String {
    match namespace {
        Some(namespace) => format!("{namespace}/{name}"),
        None => name.to_owned(),
    }
}

/// The checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checkpoint {
    /// [`FORMAT`].
    pub format: String,
    /// The API server the run talks to.
    pub server: String,
    /// The run's resources, in order.
    pub resources: Vec<String>,
    /// Resources finished.
    pub done: Vec<String>,
    /// The resource in progress.
    pub current: Option<Position>,
    /// Counts per resource, over every run that used this checkpoint.
    pub counts: BTreeMap<String, Counts>,
    /// Objects that failed; the next run retries them first.
    pub failed: Vec<FailedObject>,
}

/// A checkpoint that cannot be used.
#[derive(Debug)]
pub enum CheckpointError {
    /// It could not be read, written or removed.
    Io {
        /// The file.
        path: PathBuf,
        /// What was being done.
        action: &'static str,
        /// Why.
        source: std::io::Error,
    },
    /// It is not a checkpoint this version wrote, or belongs to another run.
    Mismatch {
        /// The file.
        path: PathBuf,
        /// What differs.
        reason: String,
    },
}

impl std::fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Io {
                path,
                action,
                source,
            } => write!(f, "cannot {action} checkpoint {}: {source}", path.display()),
            Self::Mismatch { path, reason } => write!(
                f,
                "checkpoint {}: {reason}; delete it to start afresh, or pass --checkpoint with \
                 another file",
                path.display()
            ),
        }
    }
}

impl std::error::Error for CheckpointError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io { source, .. } => Some(source),
            Self::Mismatch { .. } => None,
        }
    }
}

impl Checkpoint {
    /// A fresh checkpoint for a run against `server` over `resources`.
    pub fn new(server: &str, resources: &[String]) -> Self {
        Self {
            format: FORMAT.to_owned(),
            server: server.to_owned(),
            resources: resources.to_vec(),
            done: Vec::new(),
            current: None,
            counts: BTreeMap::new(),
            failed: Vec::new(),
        }
    }

    /// The checkpoint at `path`, if there is one, checked to belong to a run against `server`
    /// over `resources`.
    pub fn load(
        path: &Path,
        server: &str,
        resources: &[String],
    ) -> Result<Option<Self>, CheckpointError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CheckpointError::Io {
                    path: path.to_owned(),
                    action: "read",
                    source,
                });
            }
        };
        let mismatch = |reason: String| CheckpointError::Mismatch {
            path: path.to_owned(),
            reason,
        };
        let checkpoint: Self = serde_json::from_str(&text)
            .map_err(|error| mismatch(format!("not a migrate checkpoint ({error})")))?;
        if checkpoint.format != FORMAT {
            return Err(mismatch(format!(
                "format {:?}, expected {FORMAT:?}",
                checkpoint.format
            )));
        }
        if checkpoint.server != server {
            return Err(mismatch(format!(
                "it is from a run against {}, not {server}",
                checkpoint.server
            )));
        }
        let same = |a: &[String], b: &[String]| {
            a.iter().collect::<BTreeSet<_>>() == b.iter().collect::<BTreeSet<_>>()
        };
        if !same(&checkpoint.resources, resources) {
            return Err(mismatch(format!(
                "it is from a run over [{}], not [{}]",
                checkpoint.resources.join(", "),
                resources.join(", ")
            )));
        }
        Ok(Some(checkpoint))
    }

    /// Writes the checkpoint to `path` atomically, mode 0600.
    pub fn save(&self, path: &Path) -> Result<(), CheckpointError> {
        let io = |action, source| CheckpointError::Io {
            path: path.to_owned(),
            action,
            source,
        };
        let dir = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir).map_err(|e| io("create the directory of", e))?;
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| io("encode", std::io::Error::other(e)))?;
        let mut name = path.as_os_str().to_owned();
        name.push(".tmp");
        let temporary = PathBuf::from(name);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)
            .map_err(|e| io("write", e))?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.sync_all())
            .map_err(|e| io("write", e))?;
        std::fs::rename(&temporary, path).map_err(|e| io("replace", e))?;
        Ok(())
    }

    /// Removes the checkpoint at `path` (a finished run leaves none behind).
    pub fn remove(path: &Path) -> Result<(), CheckpointError> {
        match std::fs::remove_file(path) {
            Err(error) if error.kind() != std::io::ErrorKind::NotFound => {
                Err(CheckpointError::Io {
                    path: path.to_owned(),
                    action: "remove",
                    source: error,
                })
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_saved_checkpoint_loads_only_for_the_same_run() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state/migrate.json");
        let resources = vec!["secrets".to_owned(), "configmaps".to_owned()];
        let mut checkpoint = Checkpoint::new("https://api:6443", &resources);
        checkpoint.done.push("secrets".into());
        checkpoint.current = Some(Position {
            resource: "configmaps".into(),
            continue_token: Some("token".into()),
            after: Some("ns/cm-3".into()),
        });
        checkpoint.save(&path).unwrap();
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let loaded = Checkpoint::load(&path, "https://api:6443", &resources)
            .unwrap()
            .unwrap();
        assert_eq!(loaded, checkpoint);
        let other = Checkpoint::load(&path, "https://other:6443", &resources).unwrap_err();
        assert!(other.to_string().contains("https://api:6443"), "{other}");
        assert!(Checkpoint::load(&path, "https://api:6443", &resources[..1]).is_err());
        Checkpoint::remove(&path).unwrap();
        assert_eq!(
            Checkpoint::load(&path, "https://api:6443", &resources).unwrap(),
            None
        );
        Checkpoint::remove(&path).unwrap();
    }
}
