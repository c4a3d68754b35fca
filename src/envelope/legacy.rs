//! Recognising what Azure's Go KMS plugin (Azure/kubernetes-kms) stored, so that kube-kms can take
//! over its socket and provider name and still read every object it wrote.
//!
//! The Go plugin encrypted each DEK directly with Key Vault's `encrypt` on its one configured key
//! version, in one of two layouts:
//!
//! ```text
//! older (track-1 SDK)  stored  = ASCII base64url (no padding) of the RSA ciphertext
//!                      Key Vault decrypts it to the DEK itself
//! newer (azkeys)       stored  = the raw RSA ciphertext (exactly the modulus length)
//!                      Key Vault decrypts it to the ASCII base64url (no padding) of the DEK
//! v2  annotations      "version.azure.akv.io" = "1", "algorithm.azure.akv.io" = "RSA-OAEP-256"
//!                      (and optionally date., x-ms-request-id., x-ms-keyvault-region.azure.akv.io)
//!     key_id           lowercase hex SHA-256 of https://{vault}/keys/{name}/{version}
//! v1  padding          RSA1_5; v2: RSA-OAEP-256
//! ```
//!
//! Telling the formats apart on v1, where nothing but the bytes is given:
//! - a blob that starts with kube-kms's v1 format byte and parses as kube-kms's layout is
//!   kube-kms's own; if it also has the length of a raw RSA ciphertext it is
//!   [`V1Kind::Ambiguous`] and the caller tries kube-kms's reading first, the Go plugin's second;
//! - a blob of 342, 512 or 683 bytes (the unpadded base64url length of a 256-, 384- or 512-byte
//!   RSA ciphertext) made only of base64url characters is the older layout;
//! - a blob of 256, 384 or 512 bytes is the newer layout (a 512-byte blob made only of
//!   base64url characters is read as the older one: for a raw RSA-4096 ciphertext that has a
//!   probability of 2^-1024);
//! - anything else is refused as malformed, with no remote call.
//!
//! The Go plugin's opt-in cluster-seed mode (`--encrypted-cluster-seed-file`, v2 only) is read
//! too, given that seed's file (`azure.legacy_cluster_seed_file`):
//!
//! ```text
//! seed file  JSON of k8s.io/kms's EncryptResponse {Ciphertext, KeyID, Annotations}: a v2 record
//!            of the seed (64 random bytes) as above, plus created-at., vault-name., key-name.,
//!            key-version.azure.akv.io annotations
//! record     key_id "1"; annotations version.azure.akv.io = "2" and
//!            authenticated-data.azure.akv.io = the associated data (the request's uid)
//!            ciphertext = info (32 random bytes) ‖ nonce (12) ‖ AES-256-GCM ciphertext ‖ tag,
//!            key = HKDF-Expand-SHA256(seed, info), 32 bytes (Kubernetes' extended-nonce
//!            transformer)
//! ```
//!
//! Never writes these formats (Encrypt always writes kube-kms's own), never takes a vault, key or
//! endpoint from a record: the key_id only selects among versions the configuration names.

use std::collections::HashMap;

use zeroize::Zeroizing;

use super::format::{self, FormatError};
use crate::crypto::SecretKey;
use crate::provider::{LegacyAlgorithm, LegacyCiphertext, LegacyLayout};

/// The annotation whose presence marks a v2 record of the Go plugin; its value is "1".
pub const VERSION_ANNOTATION: &str = "version.azure.akv.io";
/// The version annotation's value in records of the Go plugin's cluster-seed mode.
pub const CLUSTER_SEED_VERSION: &[u8] = b"2";
/// The annotation of a cluster-seed record holding its AES-GCM associated data.
pub const AUTHENTICATED_DATA_ANNOTATION: &str = "authenticated-data.azure.akv.io";
/// The key_id of every cluster-seed record.
pub const CLUSTER_SEED_KEY_ID: &str = "1";
/// Bytes of a cluster-seed record's HKDF info, which opens it.
pub const CLUSTER_SEED_INFO_LEN: usize = 32;
/// The shortest seed the Go plugin accepts (it makes 64 bytes).
pub const MIN_CLUSTER_SEED_LEN: usize = 32;
/// The seed file annotation naming the key version that encrypted the seed.
pub const SEED_KEY_VERSION_ANNOTATION: &str = "key-version.azure.akv.io";
/// The seed file's own annotations, informational beside the record's.
pub const SEED_FILE_ANNOTATIONS: [&str; 4] = [
    "created-at.azure.akv.io",
    "vault-name.azure.akv.io",
    "key-name.azure.akv.io",
    SEED_KEY_VERSION_ANNOTATION,
];
/// The longest seed file read, in bytes (the Go plugin's is under 2 KiB).
pub const MAX_SEED_FILE_LEN: usize = 64 * 1024;

/// The annotation naming the RSA padding; the Go plugin writes "RSA-OAEP-256".
pub const ALGORITHM_ANNOTATION: &str = "algorithm.azure.akv.io";
/// Annotations some Go plugin releases add, informational only.
pub const INFORMATIONAL_ANNOTATIONS: [&str; 3] = [
    "date.azure.akv.io",
    "x-ms-request-id.azure.akv.io",
    "x-ms-keyvault-region.azure.akv.io",
];
/// The RSA modulus lengths in bytes (RSA-2048, -3072, -4096) Key Vault offers.
pub const RSA_LENGTHS: [usize; 3] = [256, 384, 512];

/// Whether a v2 Decrypt's annotations are the Go plugin's.
pub fn is_v2_record(annotations: &HashMap<String, Vec<u8>>) -> bool {
    annotations.contains_key(VERSION_ANNOTATION)
}

/// A v2 record of the Go plugin, by mode.
#[derive(Debug, PartialEq, Eq)]
pub enum V2Record {
    /// Its DEK encrypted by Key Vault.
    KeyVault(LegacyCiphertext),
    /// Sealed locally under the cluster seed.
    ClusterSeed(SeededRecord),
}

/// A record of the Go plugin's cluster-seed mode, parsed.
#[derive(Debug, PartialEq, Eq)]
pub struct SeededRecord {
    /// The HKDF info the record's key is derived with.
    pub info: [u8; CLUSTER_SEED_INFO_LEN],
    /// `nonce ‖ ciphertext ‖ tag`.
    pub sealed: Vec<u8>,
    /// The AES-GCM associated data.
    pub associated_data: Vec<u8>,
}

/// Parses a v2 record of the Go plugin: its annotations must be exactly the Go plugin's —
/// version "1" and RSA-OAEP-256 with a ciphertext in one of the two layouts, or version "2" (the
/// cluster-seed mode) with key_id "1" and its associated data.
pub fn parse_v2(
    ciphertext: &[u8],
    key_id: &str,
    annotations: &HashMap<String, Vec<u8>>,
) -> Result<V2Record, FormatError> {
    let malformed = |reason: &str| FormatError::MalformedAnnotations {
        reason: reason.to_owned(),
    };
    let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > format::MAX_ANNOTATIONS_LEN {
        return Err(malformed("annotations exceed 32 KiB"));
    }
    match annotations.get(VERSION_ANNOTATION).map(Vec::as_slice) {
        Some(b"1") => parse_key_vault_v2(ciphertext, key_id, annotations).map(V2Record::KeyVault),
        Some(CLUSTER_SEED_VERSION) => {
            parse_seeded(ciphertext, key_id, annotations).map(V2Record::ClusterSeed)
        }
        _ => Err(malformed("version.azure.akv.io must be \"1\" or \"2\"")),
    }
}

fn parse_key_vault_v2(
    ciphertext: &[u8],
    key_id: &str,
    annotations: &HashMap<String, Vec<u8>>,
) -> Result<LegacyCiphertext, FormatError> {
    format::check_key_id(key_id)?;
    let malformed = |reason: &str| FormatError::MalformedAnnotations {
        reason: reason.to_owned(),
    };
    match annotations.get(ALGORITHM_ANNOTATION).map(Vec::as_slice) {
        Some(b"RSA-OAEP-256") => {}
        _ => return Err(malformed("algorithm.azure.akv.io must be \"RSA-OAEP-256\"")),
    }
    let known = |key: &str| {
        key == VERSION_ANNOTATION
            || key == ALGORITHM_ANNOTATION
            || INFORMATIONAL_ANNOTATIONS.contains(&key)
    };
    if annotations.keys().any(|key| !known(key)) {
        return Err(malformed(
            "an Azure Go plugin record carries only *.azure.akv.io annotations",
        ));
    }
    let (layout, rsa) = classify(ciphertext)?;
    Ok(LegacyCiphertext {
        key_id: Some(key_id.to_owned()),
        algorithm: LegacyAlgorithm::RsaOaep256,
        layout,
        rsa,
    })
}

fn parse_seeded(
    ciphertext: &[u8],
    key_id: &str,
    annotations: &HashMap<String, Vec<u8>>,
) -> Result<SeededRecord, FormatError> {
    let malformed = |reason: &str| FormatError::MalformedAnnotations {
        reason: reason.to_owned(),
    };
    if key_id != CLUSTER_SEED_KEY_ID {
        return Err(malformed(
            "a cluster-seed record (version.azure.akv.io \"2\") has key_id \"1\"",
        ));
    }
    if annotations
        .keys()
        .any(|key| key != VERSION_ANNOTATION && key != AUTHENTICATED_DATA_ANNOTATION)
    {
        return Err(malformed(
            "a cluster-seed record carries only version. and authenticated-data.azure.akv.io",
        ));
    }
    let associated_data = match annotations.get(AUTHENTICATED_DATA_ANNOTATION) {
        Some(data) if !data.is_empty() => data.clone(),
        _ => {
            return Err(malformed(
                "authenticated-data.azure.akv.io is missing or empty",
            ));
        }
    };
    if ciphertext.len() < CLUSTER_SEED_INFO_LEN + crate::crypto::SEAL_OVERHEAD {
        return Err(FormatError::MalformedCiphertext {
            reason: "a cluster-seed record is shorter than its info, nonce and tag",
        });
    }
    let (info, sealed) = ciphertext.split_at(CLUSTER_SEED_INFO_LEN);
    Ok(SeededRecord {
        info: info
            .try_into()
            .unwrap_or_else(|_| unreachable!("split at its length")),
        sealed: sealed.to_vec(),
        associated_data,
    })
}

/// Opens a cluster-seed record with the seed: AES-256-GCM under HKDF-Expand-SHA256(seed, info).
/// `None` when it does not open (another seed, altered bytes or associated data).
pub fn open_seeded(seed: &[u8], record: &SeededRecord) -> Option<Zeroizing<Vec<u8>>> {
    SecretKey::hkdf_sha256_expand(seed, &record.info)
        .gcm()
        .open(&record.associated_data, &record.sealed)
        .ok()
}

/// The seed file of the Go plugin's cluster-seed mode, as `--generate-encrypted-cluster-seed-file`
/// writes it: JSON of k8s.io/kms's `EncryptResponse` (Go field names, matched without case as
/// Go's decoder matches them; bytes in standard base64). Returns the seed's Key Vault record and
/// the key version its annotations name.
pub fn parse_seed_file(json: &[u8]) -> Result<(LegacyCiphertext, String), SeedFileError> {
    use base64::Engine as _;
    let bad = |reason: String| SeedFileError { reason };
    if json.len() > MAX_SEED_FILE_LEN {
        return Err(bad(format!("larger than {MAX_SEED_FILE_LEN} bytes")));
    }
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|error| bad(format!("not JSON ({error})")))?;
    let object = value
        .as_object()
        .ok_or_else(|| bad("not a JSON object".to_owned()))?;
    let field = |name: &str| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    };
    let base64 = |what: &str, value: &serde_json::Value| {
        value
            .as_str()
            .and_then(|text| base64::engine::general_purpose::STANDARD.decode(text).ok())
            .ok_or_else(|| bad(format!("{what} is not standard base64")))
    };
    let ciphertext = base64(
        "Ciphertext",
        field("Ciphertext").ok_or_else(|| bad("no Ciphertext".to_owned()))?,
    )?;
    let key_id = field("KeyID")
        .and_then(serde_json::Value::as_str)
        .ok_or_else(|| bad("no KeyID string".to_owned()))?;
    let mut annotations = HashMap::new();
    let listed = field("Annotations")
        .and_then(serde_json::Value::as_object)
        .ok_or_else(|| bad("no Annotations object".to_owned()))?;
    for (key, value) in listed {
        annotations.insert(key.clone(), base64(&format!("annotation {key}"), value)?);
    }
    let version = annotations
        .get(SEED_KEY_VERSION_ANNOTATION)
        .and_then(|version| String::from_utf8(version.clone()).ok())
        .ok_or_else(|| bad(format!("no {SEED_KEY_VERSION_ANNOTATION} annotation")))?;
    annotations.retain(|key, _| !SEED_FILE_ANNOTATIONS.contains(&key.as_str()));
    match parse_v2(&ciphertext, key_id, &annotations) {
        Ok(V2Record::KeyVault(record)) => Ok((record, version)),
        Ok(V2Record::ClusterSeed(_)) => {
            Err(bad("holds a cluster-seed record, not the seed".to_owned()))
        }
        Err(error) => Err(bad(format!("the seed's record: {error}"))),
    }
}

/// A cluster seed file that is not what the Go plugin writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeedFileError {
    /// What is wrong (never a byte of the file).
    pub reason: String,
}

impl std::fmt::Display for SeedFileError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "not a cluster seed file of the Azure Go KMS plugin: {}",
            self.reason
        )
    }
}

impl std::error::Error for SeedFileError {}

/// What a v1 blob is.
#[derive(Debug, PartialEq, Eq)]
pub enum V1Kind {
    /// kube-kms's own blob.
    Own,
    /// A Go plugin record.
    Legacy(LegacyCiphertext),
    /// Parses as kube-kms's own blob and has a raw RSA ciphertext's length: read as kube-kms's
    /// first, as the Go plugin's if that fails.
    Ambiguous(LegacyCiphertext),
}

/// Tells a v1 blob's format, without any remote call.
pub fn classify_v1(blob: &[u8]) -> Result<V1Kind, FormatError> {
    let own = format::parse_v1_blob(blob);
    let legacy = classify(blob).map(|(layout, rsa)| LegacyCiphertext {
        key_id: None,
        algorithm: LegacyAlgorithm::Rsa15,
        layout,
        rsa,
    });
    match (own, legacy) {
        (Ok(_), Ok(record)) => Ok(V1Kind::Ambiguous(record)),
        (Ok(_), Err(_)) => Ok(V1Kind::Own),
        (Err(_), Ok(record)) => Ok(V1Kind::Legacy(record)),
        // A blob in kube-kms's format that is broken says so; anything else says what was
        // expected of a Go plugin record.
        (Err(own), Err(_)) if blob.first() == Some(&format::V1_BLOB_FORMAT) => Err(own),
        (Err(_), Err(legacy)) => Err(legacy),
    }
}

/// The layout of a Go plugin ciphertext and its raw RSA bytes.
pub fn classify(ciphertext: &[u8]) -> Result<(LegacyLayout, Vec<u8>), FormatError> {
    let len = ciphertext.len();
    if RSA_LENGTHS.iter().any(|&n| base64url_len(n) == len)
        && ciphertext.iter().all(|&b| is_base64url(b))
    {
        let rsa = decode_base64url(ciphertext).ok_or(FormatError::MalformedCiphertext {
            reason: "Azure Go plugin ciphertext is not canonical base64url",
        })?;
        return Ok((LegacyLayout::Base64Url, rsa.to_vec()));
    }
    if RSA_LENGTHS.contains(&len) {
        return Ok((LegacyLayout::Raw, ciphertext.to_vec()));
    }
    Err(FormatError::MalformedCiphertext {
        reason: "neither kube-kms's format nor an Azure Go plugin record (base64url of 342, 512 \
                 or 683 characters, or a raw RSA ciphertext of 256, 384 or 512 bytes)",
    })
}

fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

pub use crate::crypto::base64url::{
    decode as decode_base64url, encode as encode_base64url, encoded_len as base64url_len,
};

/// Seed files for tests elsewhere in the crate.
#[cfg(test)]
pub(crate) mod tests_support {
    /// The seed file as the Go plugin writes it (encoding/json of k8s.io/kms's EncryptResponse:
    /// Go field names, standard base64).
    pub(crate) fn seed_file_with(version: &str, ciphertext: &[u8]) -> String {
        use base64::Engine as _;
        let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
        serde_json::json!({
            "Ciphertext": b64(ciphertext),
            "KeyID": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
            "Annotations": {
                "version.azure.akv.io": b64(b"1"),
                "algorithm.azure.akv.io": b64(b"RSA-OAEP-256"),
                "date.azure.akv.io": b64(b"Mon, 01 Dec 2025 10:00:00 GMT"),
                "x-ms-request-id.azure.akv.io": b64(b"0a1b"),
                "x-ms-keyvault-region.azure.akv.io": b64(b"westeurope"),
                "created-at.azure.akv.io": b64(b"2025-12-01T10:00:00Z"),
                "vault-name.azure.akv.io": b64(b"kv-prod"),
                "key-name.azure.akv.io": b64(b"kms"),
                "key-version.azure.akv.io": b64(version.as_bytes()),
            },
        })
        .to_string()
    }

    /// A seed file naming `version`, with a 256-byte raw RSA ciphertext.
    pub(crate) fn seed_file(version: &str) -> String {
        seed_file_with(version, &[0xa5; 256])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn go_v2_annotations() -> HashMap<String, Vec<u8>> {
        HashMap::from([
            (VERSION_ANNOTATION.to_owned(), b"1".to_vec()),
            (ALGORITHM_ANNOTATION.to_owned(), b"RSA-OAEP-256".to_vec()),
        ])
    }

    #[test]
    fn base64url_round_trips_and_refuses_every_non_canonical_form() {
        for len in 0..40 {
            let bytes: Vec<u8> = (0..len).map(|i| (i * 37 + 11) as u8).collect();
            let text = encode_base64url(&bytes);
            assert_eq!(text.len(), base64url_len(len));
            assert_eq!(*decode_base64url(text.as_bytes()).unwrap(), bytes);
        }
        assert_eq!(*decode_base64url(b"_-8").unwrap(), [0xff, 0xef]);
        for bad in [&b"A"[..], b"AB==", b"AB+/", b"A B", b"AB\n", b"AF", b"AAB"] {
            assert!(decode_base64url(bad).is_none(), "{bad:?}");
        }
    }

    #[test]
    fn both_layouts_are_told_apart_by_length_and_alphabet() {
        for n in RSA_LENGTHS {
            let rsa: Vec<u8> = (0..n).map(|i| (i % 251) as u8 | 0x80).collect();
            assert_eq!(classify(&rsa).unwrap(), (LegacyLayout::Raw, rsa.clone()));
            let text = encode_base64url(&rsa);
            assert_eq!(
                classify(text.as_bytes()).unwrap(),
                (LegacyLayout::Base64Url, rsa.clone())
            );
        }
        assert_eq!(base64url_len(256), 342);
        assert_eq!(base64url_len(384), 512);
        assert_eq!(base64url_len(512), 683);
    }

    #[test]
    fn tampered_or_truncated_records_are_malformed() {
        let text = encode_base64url(&[0xa5; 256]);
        let mut tampered = text.as_bytes().to_vec();
        tampered[10] = b'+';
        assert!(classify(&tampered).is_err());
        assert!(classify(&text.as_bytes()[1..]).is_err());
        // The last character carries unused bits: a flipped unused bit is not canonical.
        let mut unused = text.as_bytes().to_vec();
        *unused.last_mut().unwrap() = b'B';
        assert!(classify(&unused).is_err());
        assert!(classify(&[0x80; 255]).is_err());
        assert!(classify(&[]).is_err());
    }

    #[test]
    fn v1_blobs_of_kube_kms_and_of_the_go_plugin_are_told_apart() {
        let own = {
            let mut blob = format::v1_header("0123abcd", &[9; 40]);
            blob.extend_from_slice(&[7; 12 + 32 + 16]);
            blob
        };
        assert_eq!(classify_v1(&own).unwrap(), V1Kind::Own);
        let raw = vec![0xc3; 256];
        assert!(matches!(
            classify_v1(&raw).unwrap(),
            V1Kind::Legacy(LegacyCiphertext {
                layout: LegacyLayout::Raw,
                algorithm: LegacyAlgorithm::Rsa15,
                key_id: None,
                ..
            })
        ));
        let text = encode_base64url(&raw);
        assert!(matches!(
            classify_v1(text.as_bytes()).unwrap(),
            V1Kind::Legacy(LegacyCiphertext {
                layout: LegacyLayout::Base64Url,
                ..
            })
        ));
        // kube-kms's own blob padded to 256 bytes: both readings are possible.
        let mut padded = format::v1_header("0123abcd", &[9; 40]);
        padded.resize(256, 7);
        assert!(matches!(
            classify_v1(&padded).unwrap(),
            V1Kind::Ambiguous(_)
        ));
        // A truncated blob of kube-kms says what is wrong with kube-kms's format.
        let refused = classify_v1(&own[..20]).unwrap_err();
        assert!(refused.to_string().contains("wrapped KEK"), "{refused}");
        assert!(classify_v1(b"ping").is_err());
    }

    #[test]
    fn v2_records_need_the_go_plugin_annotations_exactly() {
        let raw = vec![0xc3; 256];
        let annotations = go_v2_annotations();
        assert!(is_v2_record(&annotations));
        let Ok(V2Record::KeyVault(record)) = parse_v2(&raw, "abc", &annotations) else {
            panic!("a Key Vault record");
        };
        assert_eq!(record.key_id.as_deref(), Some("abc"));
        assert_eq!(record.algorithm, LegacyAlgorithm::RsaOaep256);

        let mut extra = go_v2_annotations();
        for key in INFORMATIONAL_ANNOTATIONS {
            extra.insert(key.to_owned(), b"x".to_vec());
        }
        assert!(parse_v2(&raw, "abc", &extra).is_ok());

        let refusals = [
            (VERSION_ANNOTATION, b"3".to_vec()),
            (ALGORITHM_ANNOTATION, b"RSA1_5".to_vec()),
            (format::WRAPPED_KEK_ANNOTATION, b"x".to_vec()),
        ];
        for (key, value) in refusals {
            let mut annotations = go_v2_annotations();
            annotations.insert(key.to_owned(), value);
            assert!(parse_v2(&raw, "abc", &annotations).is_err(), "{key}");
        }
        let mut missing = go_v2_annotations();
        missing.remove(ALGORITHM_ANNOTATION);
        assert!(parse_v2(&raw, "abc", &missing).is_err());
        assert!(parse_v2(&raw, "", &go_v2_annotations()).is_err());
        assert!(parse_v2(&raw[..100], "abc", &go_v2_annotations()).is_err());
    }

    /// A record the Go plugin's cluster-seed mode writes, computed independently with Python's
    /// `cryptography` (HKDFExpand SHA-256, AESGCM): seed 0..64, info (7i+3), nonce (11i+5),
    /// associated data "0f6d3a52-uid", plaintext 32 × 0x42.
    const SEEDED_RECORD: &str = "030a11181f262d343b424950575e656c737a81888f969da4abb2b9c0c7ced5dc\
        05101b26313c47525d68737e22256d040c92899e6521306f37621946deef6037e2b98975c0a42d9b099d\
        0092d4f9774d781d99c41a0e4d1d621f4fba";
    const SEEDED_AAD: &[u8] = b"0f6d3a52-uid";

    fn seeded_annotations(aad: &[u8]) -> HashMap<String, Vec<u8>> {
        HashMap::from([
            (VERSION_ANNOTATION.to_owned(), b"2".to_vec()),
            (AUTHENTICATED_DATA_ANNOTATION.to_owned(), aad.to_vec()),
        ])
    }

    #[test]
    fn a_cluster_seed_record_opens_with_the_seed_as_kubernetes_transformer_sealed_it() {
        let seed: Vec<u8> = (0..64).collect();
        let ciphertext = hex::decode(SEEDED_RECORD).unwrap();
        let Ok(V2Record::ClusterSeed(record)) =
            parse_v2(&ciphertext, "1", &seeded_annotations(SEEDED_AAD))
        else {
            panic!("a cluster-seed record");
        };
        assert_eq!(*open_seeded(&seed, &record).unwrap(), [0x42; 32]);

        // Another seed, other associated data, or one altered bit: it does not open.
        let mut other_seed = seed.clone();
        other_seed[63] ^= 1;
        assert!(open_seeded(&other_seed, &record).is_none());
        let Ok(V2Record::ClusterSeed(moved)) =
            parse_v2(&ciphertext, "1", &seeded_annotations(b"another-uid"))
        else {
            panic!("a cluster-seed record");
        };
        assert!(open_seeded(&seed, &moved).is_none());
        for index in [0, 31, 32, 43, 44, ciphertext.len() - 1] {
            let mut altered = ciphertext.clone();
            altered[index] ^= 0x10;
            let Ok(V2Record::ClusterSeed(altered)) =
                parse_v2(&altered, "1", &seeded_annotations(SEEDED_AAD))
            else {
                panic!("still parses");
            };
            assert!(open_seeded(&seed, &altered).is_none(), "byte {index}");
        }
    }

    #[test]
    fn cluster_seed_records_need_their_key_id_annotations_and_length() {
        let ciphertext = hex::decode(SEEDED_RECORD).unwrap();
        let annotations = seeded_annotations(SEEDED_AAD);
        assert!(
            parse_v2(&ciphertext, "abc", &annotations).is_err(),
            "key_id 1 only"
        );
        assert!(parse_v2(&ciphertext, "1", &seeded_annotations(b"")).is_err());
        let mut extra = seeded_annotations(SEEDED_AAD);
        extra.insert(ALGORITHM_ANNOTATION.to_owned(), b"RSA-OAEP-256".to_vec());
        assert!(parse_v2(&ciphertext, "1", &extra).is_err());
        assert!(parse_v2(&ciphertext[..59], "1", &annotations).is_err());
        assert!(parse_v2(&ciphertext[..60], "1", &annotations).is_ok());
    }

    #[test]
    fn the_seed_file_is_read_as_the_go_plugin_writes_it() {
        use super::tests_support::seed_file_with;
        let version = "0123456789abcdef0123456789abcdef";
        let raw = vec![0xa5; 256];
        let (record, named) = parse_seed_file(seed_file_with(version, &raw).as_bytes()).unwrap();
        assert_eq!(named, version);
        assert_eq!(
            record.key_id.as_deref(),
            Some("9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08")
        );
        assert_eq!(
            (record.layout, record.rsa),
            (LegacyLayout::Raw, raw.clone())
        );

        // Go's decoder matches field names without case; so does this one.
        let lower = seed_file_with(version, &raw)
            .replace("\"Ciphertext\"", "\"ciphertext\"")
            .replace("\"KeyID\"", "\"keyId\"");
        assert!(parse_seed_file(lower.as_bytes()).is_ok());

        for (bad, why) in [
            ("{}".to_owned(), "no Ciphertext"),
            ("[1]".to_owned(), "not a JSON object"),
            ("not json".to_owned(), "not JSON"),
            (seed_file_with(version, &raw[..100]), "the seed's record"),
            (
                seed_file_with(version, &raw)
                    .replace("key-version.azure.akv.io", "other.azure.akv.io"),
                "no key-version.azure.akv.io",
            ),
        ] {
            let error = parse_seed_file(bad.as_bytes()).unwrap_err().to_string();
            assert!(error.contains(why), "{why}: {error}");
            assert!(error.starts_with("not a cluster seed file"), "{error}");
        }
    }
}
