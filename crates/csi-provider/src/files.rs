//! What a Mount returns: files (a relative path, a mode, the contents) and object versions, and
//! the driver's rules for them, checked here so that a bad path or mode is the provider's clear
//! error rather than the driver's refusal after every vault call was made.
//!
//! The provider never writes a file itself: the driver writes what [`OutputFile`]s say into the
//! pod's volume. Contents are secret: they are zeroized on drop and no `Debug` shows them.

use std::fmt;

use zeroize::Zeroizing;

/// What a successful Mount returns, whichever backend served it.
#[derive(Debug, Default)]
pub struct Mounted {
    /// Every file, in the class's object order.
    pub files: Vec<OutputFile>,
    /// Every object's version, in the same order.
    pub versions: Vec<ObjectVersion>,
}

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

/// The longest path the driver writes (its `maxPathLength`), in bytes.
pub const MAX_PATH_BYTES: usize = 4096;

/// The longest element of a path the driver writes (its `maxFileNameLength`), in bytes.
pub const MAX_ELEMENT_BYTES: usize = 255;

/// The highest file mode a file may have: permission bits only.
pub const MAX_MODE: u32 = 0o777;

/// Checks `path` against the driver's rules for a file path in a Mount response (its
/// `fileutil.Validate` and the atomic writer's `validatePath`): non-empty, relative, at most
/// [`MAX_PATH_BYTES`] bytes, no element longer than [`MAX_ELEMENT_BYTES`] bytes, no `..` element,
/// a first element not starting with `..`, and already in Go's `filepath.Clean` form (no empty
/// or `.` elements, no trailing `/`: `./a`, `a/`, `a//b` are refused). Also refuses a NUL byte,
/// which no file name can hold, and `.` alone, which names the volume itself.
///
/// Lengths are in bytes, as Go's `len` counts them. A backslash is an ordinary character (the
/// driver writes on Linux).
pub fn check_path(path: &str) -> Result<(), FileError> {
    let bad = |reason| {
        Err(FileError::BadPath {
            path: path.to_owned(),
            reason,
        })
    };
    if path.is_empty() {
        return bad("must not be empty");
    }
    if path.contains('\0') {
        return bad("must not contain a NUL byte");
    }
    if path.starts_with('/') {
        return bad("must be a relative path");
    }
    if path.len() > MAX_PATH_BYTES {
        return bad("must be at most 4096 bytes long");
    }
    for element in path.split('/') {
        if element == ".." {
            return bad("must not contain '..' as an element");
        }
        if element.len() > MAX_ELEMENT_BYTES {
            return bad("must not have an element longer than 255 bytes");
        }
    }
    if path.starts_with("..") {
        return bad("must not start with '..'");
    }
    if path == "." {
        return bad("must name a file, not the volume itself ('.')");
    }
    if path
        .split('/')
        .any(|element| element.is_empty() || element == ".")
    {
        return bad("must be in clean form: no empty or '.' elements and no trailing '/'");
    }
    Ok(())
}

/// Parses a `filePermission` as Go's `strconv.ParseUint(text, 8, 32)` does (octal digits only,
/// leading zeros allowed: `"0644"`, `"644"`, `"0000644"`; no sign, no `0o`, no underscores), and
/// refuses anything above [`MAX_MODE`]. Azure's provider gives an unparsable mode 0 (an
/// unreadable file); kube-kms refuses it.
pub fn parse_mode(text: &str) -> Result<u32, FileError> {
    let bad = || FileError::BadMode {
        text: text.to_owned(),
    };
    if text.is_empty() || !text.bytes().all(|digit| (b'0'..=b'7').contains(&digit)) {
        return Err(bad());
    }
    let significant = text.trim_start_matches('0');
    // At most three octal digits remain for a mode up to 0777; longer would overflow or exceed.
    if significant.len() > 3 {
        return Err(bad());
    }
    let mode = significant
        .bytes()
        .fold(0, |mode, digit| mode * 8 + u32::from(digit - b'0'));
    if mode > MAX_MODE {
        return Err(bad());
    }
    Ok(mode)
}

/// Quotes `text` for an error message: escaped like Rust's `{:?}` and cut after 100
/// characters, so that a pasted blob does not become a kilobyte of error text.
pub(crate) fn quoted(text: &str) -> String {
    const LIMIT: usize = 100;
    match text.char_indices().nth(LIMIT) {
        None => format!("{text:?}"),
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::BadPath { path, reason } => {
                write!(f, "invalid file path {}: {reason}", quoted(path))
            }
            Self::BadMode { text } => write!(
                f,
                "filePermission {} is not an octal file mode of at most 0777, e.g. \"0644\"",
                quoted(text)
            ),
        }
    }
}

impl std::error::Error for FileError {}

#[cfg(test)]
mod tests {
    use super::*;

    fn reason(path: &str) -> Option<&'static str> {
        match check_path(path) {
            Ok(()) => None,
            Err(FileError::BadPath { reason, .. }) => Some(reason),
            Err(other) => panic!("{path:?}: {other:?}"),
        }
    }

    #[test]
    fn paths_the_driver_accepts_pass() {
        let longest_element = "e".repeat(MAX_ELEMENT_BYTES);
        let longest_path = vec!["p".repeat(200); 20].join("/") + "/" + &"q".repeat(76);
        assert_eq!(longest_path.len(), MAX_PATH_BYTES);
        for path in [
            "db-password",
            "certs/web/tls.crt",
            "a/b/c",
            ".hidden",
            "a/..b",
            "a/b..",
            "dir\\file",
            "a b",
            "ünïcode",
            &longest_element,
            &longest_path,
        ] {
            assert_eq!(reason(path), None, "{path:?}");
        }
    }

    #[test]
    fn each_driver_rule_refuses_its_paths() {
        let long_element = "e".repeat(MAX_ELEMENT_BYTES + 1);
        let long_path = vec!["p".repeat(200); 21].join("/");
        let table: &[(&str, &str)] = &[
            ("", "must not be empty"),
            ("a\0b", "must not contain a NUL byte"),
            ("/etc/passwd", "must be a relative path"),
            ("/", "must be a relative path"),
            (&long_path, "must be at most 4096 bytes long"),
            ("..", "must not contain '..' as an element"),
            ("../a", "must not contain '..' as an element"),
            ("a/../b", "must not contain '..' as an element"),
            ("a/..", "must not contain '..' as an element"),
            (
                &long_element,
                "must not have an element longer than 255 bytes",
            ),
            ("..a", "must not start with '..'"),
            ("...", "must not start with '..'"),
            ("..data/x", "must not start with '..'"),
            (".", "must name a file, not the volume itself ('.')"),
            (
                "./a",
                "must be in clean form: no empty or '.' elements and no trailing '/'",
            ),
            (
                "a/",
                "must be in clean form: no empty or '.' elements and no trailing '/'",
            ),
            (
                "a//b",
                "must be in clean form: no empty or '.' elements and no trailing '/'",
            ),
            (
                "a/./b",
                "must be in clean form: no empty or '.' elements and no trailing '/'",
            ),
            (
                "a/.",
                "must be in clean form: no empty or '.' elements and no trailing '/'",
            ),
        ];
        for (path, expected) in table {
            assert_eq!(reason(path), Some(*expected), "{path:?}");
        }
    }

    #[test]
    fn a_multibyte_element_is_measured_in_bytes_as_the_driver_does() {
        // 128 two-byte characters: 128 characters, 256 bytes.
        let element = "é".repeat(128);
        assert_eq!(
            reason(&element),
            Some("must not have an element longer than 255 bytes")
        );
    }

    #[test]
    fn modes_parse_as_go_parse_uint_base_8() {
        let table: &[(&str, Option<u32>)] = &[
            ("0644", Some(0o644)),
            ("644", Some(0o644)),
            ("0755", Some(0o755)),
            ("0000000000000400", Some(0o400)),
            ("777", Some(0o777)),
            ("0", Some(0)),
            ("000", Some(0)),
            ("", None),
            ("1000", None),
            ("0o644", None),
            ("0x1a4", None),
            ("+644", None),
            ("-644", None),
            ("64_4", None),
            ("648", None),
            ("9", None),
            (" 644", None),
            ("644 ", None),
            ("rw-r--r--", None),
            ("77777777777777777777777777777777", None),
        ];
        for (text, expected) in table {
            let parsed = parse_mode(text);
            match expected {
                Some(mode) => assert_eq!(parsed, Ok(*mode), "{text:?}"),
                None => assert_eq!(
                    parsed,
                    Err(FileError::BadMode {
                        text: (*text).to_owned()
                    }),
                    "{text:?}"
                ),
            }
        }
    }

    #[test]
    fn errors_say_what_was_expected() {
        assert_eq!(
            check_path("a//b").unwrap_err().to_string(),
            "invalid file path \"a//b\": must be in clean form: no empty or '.' elements and no \
             trailing '/'"
        );
        assert_eq!(
            parse_mode("rw").unwrap_err().to_string(),
            "filePermission \"rw\" is not an octal file mode of at most 0777, e.g. \"0644\""
        );
    }

    #[test]
    fn a_long_value_is_cut_in_error_messages() {
        let message = parse_mode(&"9".repeat(5000)).unwrap_err().to_string();
        assert!(message.len() < 200, "{message}");
        assert!(message.contains('…'));
    }
}
