//! What a Mount returns: files (a relative path, a mode, the contents) and object versions, and
//! the driver's rules for them, checked here so that a bad path or mode is the provider's clear
//! error rather than the driver's refusal after every vault call was made.
//!
//! The provider never writes a file itself: the driver writes what [`OutputFile`]s say into the
//! pod's volume. Contents are secret: they are zeroized on drop and no `Debug` shows them.

use std::fmt;

use zeroize::Zeroizing;

/// One file for the driver to write.
pub struct OutputFile {
    /// The path relative to the volume, as the driver requires it (see [`check_path`]).
    pub path: String,
    /// The file's mode (0–0o777).
    pub mode: u32,
    /// The contents.
    pub contents: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for OutputFile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OutputFile")
            .field("path", &self.path)
            .field("mode", &format_args!("{:o}", self.mode))
            .field("bytes", &self.contents.len())
            .finish()
    }
}

/// One object's version, as the driver records it in SecretProviderClassPodStatus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Which object (e.g. `secret/db-password`, `cert/web/1` in version history).
    pub id: String,
    /// Its version (for Key Vault: the last segment of the object's versioned id).
    pub version: String,
}

/// A path the driver would refuse, or a mode it cannot set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileError {
    /// The path breaks one of the driver's rules; `reason` says which.
    BadPath {
        /// The path as given.
        path: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// A `filePermission` that is not an octal mode of at most 0777.
    BadMode {
        /// The text as given.
        text: String,
    },
}
