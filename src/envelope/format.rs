//! The bytes kube-kms puts on the wire and reads back: the v2 ciphertext, its annotations, and
//! the v1 blob. docs/format.md is the prose version of this file, with test vectors.
//!
//! Everything parsed here arrives from etcd through kube-apiserver and is attacker input: every
//! length is checked before it is used, and a parse never panics and never allocates more than
//! the input's size.
//!
//! ```text
//! v2 ciphertext     = 0x01 ‖ nonce(12) ‖ AES-256-GCM(KEK, plaintext) ‖ tag(16)
//!     AAD           = 0x01 ‖ key_id
//!     annotations   = "kek.kube-kms.io"     → wrapped KEK (provider-specific bytes)
//!                     "version.kube-kms.io" → the remote key version that wrapped it (ASCII)
//! v1 blob           = 0x02 ‖ u16be len ‖ version ‖ u16be len ‖ wrapped KEK ‖ nonce ‖ ct ‖ tag
//!     AAD           = every byte before the nonce
//! ```

use std::collections::HashMap;

use crate::crypto::{NONCE_LEN, SEAL_OVERHEAD, TAG_LEN};
use crate::provider::{MAX_KEY_ID_LEN, MAX_KEY_VERSION_LEN};

/// First byte of every v2 ciphertext kube-kms writes.
pub const V2_CIPHERTEXT_FORMAT: u8 = 0x01;
/// First byte of every v1 blob kube-kms writes.
pub const V1_BLOB_FORMAT: u8 = 0x02;
/// Annotation holding the wrapped local KEK.
pub const WRAPPED_KEK_ANNOTATION: &str = "kek.kube-kms.io";
/// Annotation holding the remote key version that wrapped the KEK.
pub const KEY_VERSION_ANNOTATION: &str = "version.kube-kms.io";
/// kube-apiserver's limit on a v2 ciphertext.
pub const MAX_V2_CIPHERTEXT_LEN: usize = 1024;
/// The largest plaintext whose v2 ciphertext fits in 1024 bytes.
pub const MAX_V2_PLAINTEXT_LEN: usize = MAX_V2_CIPHERTEXT_LEN - 1 - SEAL_OVERHEAD;
/// The largest plaintext accepted on the v1 API (kube-apiserver sends a 32-byte DEK).
pub const MAX_V1_PLAINTEXT_LEN: usize = 16 * 1024;
/// kube-apiserver's limit on the sum of annotation key and value lengths.
pub const MAX_ANNOTATIONS_LEN: usize = 32 * 1024;
/// The largest wrapped KEK accepted (an RSA-4096 wrap is 512 bytes).
pub const MAX_WRAPPED_KEK_LEN: usize = 2048;

/// What is wrong with a request's bytes. Each variant maps to InvalidArgument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FormatError {
    /// The plaintext is empty.
    EmptyPlaintext,
    /// The plaintext is larger than the API allows.
    PlaintextTooLarge {
        /// Its length.
        len: usize,
        /// The limit.
        max: usize,
    },
    /// The key_id is empty or longer than 1024 bytes.
    InvalidKeyId {
        /// Its length.
        len: usize,
    },
    /// The ciphertext is not one kube-kms wrote: wrong length or unknown format byte.
    MalformedCiphertext {
        /// What is wrong.
        reason: &'static str,
    },
    /// The annotations break kube-apiserver's rules or lack what kube-kms needs.
    MalformedAnnotations {
        /// What is wrong.
        reason: String,
    },
}

impl std::fmt::Display for FormatError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::EmptyPlaintext => f.write_str("plaintext is empty"),
            Self::PlaintextTooLarge { len, max } => {
                write!(f, "plaintext is {len} bytes; at most {max} are accepted")
            }
            Self::InvalidKeyId { len } => {
                write!(
                    f,
                    "key_id is {len} bytes; it must be 1..={MAX_KEY_ID_LEN} bytes"
                )
            }
            Self::MalformedCiphertext { reason } => write!(f, "malformed ciphertext: {reason}"),
            Self::MalformedAnnotations { reason } => write!(f, "malformed annotations: {reason}"),
        }
    }
}

impl std::error::Error for FormatError {}

/// A wrapped KEK and the key version that wrapped it, as read from a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WrappedKekRef<'a> {
    /// The provider's name for the key version (checked: printable ASCII, ≤ 256 bytes).
    pub version: &'a str,
    /// The wrapped KEK (checked: 1..=2048 bytes).
    pub wrapped: &'a [u8],
}

/// A parsed v2 ciphertext: the sealed part (`nonce ‖ ct ‖ tag`) after the format byte.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V2Ciphertext<'a> {
    /// `nonce ‖ ct ‖ tag`.
    pub sealed: &'a [u8],
}

/// A parsed v1 blob.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct V1Blob<'a> {
    /// The wrapped KEK and its version.
    pub kek: WrappedKekRef<'a>,
    /// Every byte before the nonce: the associated data.
    pub header: &'a [u8],
    /// `nonce ‖ ct ‖ tag`.
    pub sealed: &'a [u8],
}

/// Checks a plaintext against `max` bytes.
pub fn check_plaintext(plaintext: &[u8], max: usize) -> Result<(), FormatError> {
    match plaintext.len() {
        0 => Err(FormatError::EmptyPlaintext),
        len if len > max => Err(FormatError::PlaintextTooLarge { len, max }),
        _ => Ok(()),
    }
}

/// Checks a key_id from a Decrypt request.
pub fn check_key_id(key_id: &str) -> Result<(), FormatError> {
    if key_id.is_empty() || key_id.len() > MAX_KEY_ID_LEN {
        return Err(FormatError::InvalidKeyId { len: key_id.len() });
    }
    Ok(())
}

/// The associated data of a v2 ciphertext: the format byte and the key_id.
pub fn v2_aad(key_id: &str) -> Vec<u8> {
    let mut aad = Vec::with_capacity(1 + key_id.len());
    aad.push(V2_CIPHERTEXT_FORMAT);
    aad.extend_from_slice(key_id.as_bytes());
    aad
}

/// Calls `f` with [`v2_aad`] of `key_id`, built on the stack when the key_id is short (every
/// key_id kube-kms's providers make is 64 hex digits), so a Decrypt allocates nothing for it.
pub fn with_v2_aad<T>(key_id: &str, f: impl FnOnce(&[u8]) -> T) -> T {
    let mut stack = [0u8; 128];
    match stack.get_mut(..1 + key_id.len()) {
        Some(aad) => {
            aad[0] = V2_CIPHERTEXT_FORMAT;
            aad[1..].copy_from_slice(key_id.as_bytes());
            f(aad)
        }
        None => f(&v2_aad(key_id)),
    }
}

/// Parses a v2 ciphertext.
pub fn parse_v2_ciphertext(ciphertext: &[u8]) -> Result<V2Ciphertext<'_>, FormatError> {
    if ciphertext.len() > MAX_V2_CIPHERTEXT_LEN {
        return Err(FormatError::MalformedCiphertext {
            reason: "longer than 1024 bytes",
        });
    }
    match ciphertext.split_first() {
        None => Err(FormatError::MalformedCiphertext { reason: "empty" }),
        Some((&V2_CIPHERTEXT_FORMAT, sealed)) if sealed.len() > SEAL_OVERHEAD => {
            Ok(V2Ciphertext { sealed })
        }
        Some((&V2_CIPHERTEXT_FORMAT, _)) => Err(FormatError::MalformedCiphertext {
            reason: "too short to hold nonce and tag",
        }),
        Some(_) => Err(FormatError::MalformedCiphertext {
            reason: "unknown format byte",
        }),
    }
}

/// The annotations an Encrypt response carries for a KEK wrapped under `version`.
pub fn annotations(version: &str, wrapped: &[u8]) -> HashMap<String, Vec<u8>> {
    HashMap::from([
        (WRAPPED_KEK_ANNOTATION.to_owned(), wrapped.to_vec()),
        (
            KEY_VERSION_ANNOTATION.to_owned(),
            version.as_bytes().to_vec(),
        ),
    ])
}

/// Validates a Decrypt request's annotations against kube-apiserver's rules and extracts the
/// wrapped KEK. Annotations with other keys are allowed (and ignored) if well formed.
pub fn parse_annotations(
    annotations: &HashMap<String, Vec<u8>>,
) -> Result<WrappedKekRef<'_>, FormatError> {
    let malformed = |reason: String| FormatError::MalformedAnnotations { reason };
    let mut total = 0usize;
    let (mut wrapped, mut version) = (None, None);
    for (key, value) in annotations {
        total = total.saturating_add(key.len()).saturating_add(value.len());
        // Picked up in the same pass that validates, rather than by two more hash lookups.
        match key.as_str() {
            WRAPPED_KEK_ANNOTATION => wrapped = Some(value),
            KEY_VERSION_ANNOTATION => version = Some(value),
            _ if !is_annotation_key(key) => {
                let shown: String = key.chars().take(64).collect();
                return Err(malformed(format!(
                    "key {shown:?} is not a lowercase DNS subdomain with at least two labels"
                )));
            }
            _ => {}
        }
    }
    if total > MAX_ANNOTATIONS_LEN {
        return Err(malformed(format!(
            "{total} bytes in total; at most {MAX_ANNOTATIONS_LEN}"
        )));
    }
    let wrapped =
        wrapped.ok_or_else(|| malformed(format!("{WRAPPED_KEK_ANNOTATION} is missing")))?;
    let version =
        version.ok_or_else(|| malformed(format!("{KEY_VERSION_ANNOTATION} is missing")))?;
    let version = std::str::from_utf8(version)
        .ok()
        .filter(|v| is_key_version(v))
        .ok_or_else(|| {
            malformed(format!(
                "{KEY_VERSION_ANNOTATION} must be 1..={MAX_KEY_VERSION_LEN} printable ASCII bytes"
            ))
        })?;
    if wrapped.is_empty() || wrapped.len() > MAX_WRAPPED_KEK_LEN {
        return Err(malformed(format!(
            "{WRAPPED_KEK_ANNOTATION} is {} bytes; it must be 1..={MAX_WRAPPED_KEK_LEN}",
            wrapped.len()
        )));
    }
    Ok(WrappedKekRef { version, wrapped })
}

/// Writes the header of a v1 blob (everything before the nonce).
pub fn v1_header(version: &str, wrapped: &[u8]) -> Vec<u8> {
    let mut header = Vec::with_capacity(5 + version.len() + wrapped.len());
    header.push(V1_BLOB_FORMAT);
    for field in [version.as_bytes(), wrapped] {
        let len = u16::try_from(field.len()).unwrap_or(u16::MAX);
        header.extend_from_slice(&len.to_be_bytes());
        header.extend_from_slice(field);
    }
    header
}

/// Parses a v1 blob.
pub fn parse_v1_blob(blob: &[u8]) -> Result<V1Blob<'_>, FormatError> {
    let malformed = |reason| FormatError::MalformedCiphertext { reason };
    let rest = match blob.split_first() {
        Some((&V1_BLOB_FORMAT, rest)) => rest,
        Some(_) => return Err(malformed("unknown format byte")),
        None => return Err(malformed("empty")),
    };
    let (version, rest) = take_field(rest, MAX_KEY_VERSION_LEN).ok_or(malformed("bad version"))?;
    let (wrapped, sealed) =
        take_field(rest, MAX_WRAPPED_KEK_LEN).ok_or(malformed("bad wrapped KEK"))?;
    let version = std::str::from_utf8(version)
        .ok()
        .filter(|v| is_key_version(v))
        .ok_or(malformed("key version is not printable ASCII"))?;
    if wrapped.is_empty() {
        return Err(malformed("bad wrapped KEK"));
    }
    if sealed.len() <= NONCE_LEN + TAG_LEN {
        return Err(malformed("too short to hold nonce and tag"));
    }
    let header = &blob[..blob.len() - sealed.len()];
    Ok(V1Blob {
        kek: WrappedKekRef { version, wrapped },
        header,
        sealed,
    })
}

fn take_field(input: &[u8], max: usize) -> Option<(&[u8], &[u8])> {
    let (len, rest) = input.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if len > max || len > rest.len() {
        return None;
    }
    Some(rest.split_at(len))
}

fn is_key_version(version: &str) -> bool {
    !version.is_empty()
        && version.len() <= MAX_KEY_VERSION_LEN
        && version.bytes().all(|b| b.is_ascii_graphic())
}

/// A lowercase RFC 1123 DNS subdomain with at least two labels and no '/', as kube-apiserver
/// requires of annotation keys.
pub fn is_annotation_key(key: &str) -> bool {
    if key.is_empty() || key.len() > 253 {
        return false;
    }
    let mut labels = 0;
    for label in key.as_bytes().split(|b| *b == b'.') {
        labels += 1;
        let valid = !label.is_empty()
            && label.len() <= 63
            && label.first() != Some(&b'-')
            && label.last() != Some(&b'-')
            && label
                .iter()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-');
        if !valid {
            return false;
        }
    }
    labels >= 2
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn annotation_keys_follow_kube_apiserver_rules() {
        for good in [
            WRAPPED_KEK_ANNOTATION,
            KEY_VERSION_ANNOTATION,
            "a.b",
            "x-1.example.com",
        ] {
            assert!(is_annotation_key(good), "{good}");
        }
        for bad in [
            "",
            "single",
            "Upper.case",
            "a/b.c",
            "a..b",
            "-a.b",
            "a-.b",
            "a.b.",
            ".a.b",
        ] {
            assert!(!is_annotation_key(bad), "{bad}");
        }
        assert!(!is_annotation_key(&format!("{}.io", "a".repeat(64))));
    }

    #[test]
    fn our_annotations_parse_back() {
        let annotations = annotations("7", &[9; 60]);
        let parsed = parse_annotations(&annotations).unwrap();
        assert_eq!(
            parsed,
            WrappedKekRef {
                version: "7",
                wrapped: &[9; 60]
            }
        );
    }

    #[test]
    fn missing_oversize_or_foreign_annotations_are_refused() {
        let mut missing = annotations("7", &[9; 60]);
        missing.remove(KEY_VERSION_ANNOTATION);
        assert!(parse_annotations(&missing).is_err());

        let mut oversize = annotations("7", &[9; 60]);
        oversize.insert("pad.example.com".into(), vec![0; MAX_ANNOTATIONS_LEN]);
        assert!(parse_annotations(&oversize).is_err());

        let mut bad_key = annotations("7", &[9; 60]);
        bad_key.insert("nodots".into(), vec![]);
        assert!(parse_annotations(&bad_key).is_err());

        let mut extra = annotations("7", &[9; 60]);
        extra.insert("future.kube-kms.io".into(), vec![1]);
        assert!(parse_annotations(&extra).is_ok());

        assert!(parse_annotations(&annotations("bad version", &[9; 60])).is_err());
        assert!(parse_annotations(&annotations("7", &[])).is_err());
        assert!(parse_annotations(&annotations("7", &[9; MAX_WRAPPED_KEK_LEN + 1])).is_err());
    }

    #[test]
    fn v2_aad_is_the_same_on_the_stack_and_on_the_heap() {
        for len in [1, 64, 126, 127, 128, 1024] {
            let key_id = "k".repeat(len);
            with_v2_aad(&key_id, |aad| assert_eq!(aad, v2_aad(&key_id), "{len}"));
        }
    }

    #[test]
    fn v2_ciphertext_limits() {
        assert!(parse_v2_ciphertext(&[]).is_err());
        assert!(parse_v2_ciphertext(&[V2_CIPHERTEXT_FORMAT; 29]).is_err());
        assert!(parse_v2_ciphertext(&[V2_CIPHERTEXT_FORMAT; 30]).is_ok());
        assert!(parse_v2_ciphertext(&[V1_BLOB_FORMAT; 30]).is_err());
        assert!(parse_v2_ciphertext(&[V2_CIPHERTEXT_FORMAT; 1025]).is_err());
        assert_eq!(MAX_V2_PLAINTEXT_LEN, 995);
    }

    #[test]
    fn v1_blob_round_trips_and_rejects_truncation() {
        let mut blob = v1_header("12", &[7; 40]);
        let header_len = blob.len();
        blob.extend_from_slice(&[5; 12 + 32 + 16]);
        let parsed = parse_v1_blob(&blob).unwrap();
        assert_eq!(
            parsed.kek,
            WrappedKekRef {
                version: "12",
                wrapped: &[7; 40]
            }
        );
        assert_eq!(parsed.header.len(), header_len);
        assert_eq!(parsed.sealed.len(), 60);
        for len in 0..header_len + 29 {
            assert!(parse_v1_blob(&blob[..len]).is_err(), "truncated to {len}");
        }
    }
}
