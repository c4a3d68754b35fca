//! The `local:` settings: where the local provider keeps its key ring (for development and
//! tests only). Never reads the key ring here: only its directory is configured.

use std::path::{Path, PathBuf};

use super::ConfigError;
use super::settings::{LOCAL_KEY_DIR, Sources, parse_path};

/// `local.key_dir`, by default `local-keys` in the state directory.
pub(super) fn key_dir(sources: Sources<'_>, state_dir: &Path) -> Result<PathBuf, ConfigError> {
    Ok(LOCAL_KEY_DIR
        .parse(sources, parse_path)?
        .unwrap_or_else(|| state_dir.join("local-keys")))
}
