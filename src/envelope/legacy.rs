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
//! Never writes this format (Encrypt always writes kube-kms's own), never takes a vault, key or
//! endpoint from a record: the key_id only selects among versions the configuration names.

use std::collections::HashMap;

use super::format::{self, FormatError};
use crate::provider::{LegacyAlgorithm, LegacyCiphertext, LegacyLayout};

/// The annotation whose presence marks a v2 record of the Go plugin; its value is "1".
pub const VERSION_ANNOTATION: &str = "version.azure.akv.io";
/// The version annotation's value in records of the Go plugin's cluster-seed mode
/// (`--encrypted-cluster-seed-file`): sealed locally with AES-GCM under keys derived from a seed
/// that Key Vault encrypted once, with key_id "1" and an `authenticated-data.azure.akv.io`
/// annotation. kube-kms does not read them.
const CLUSTER_SEED_VERSION: &[u8] = b"2";
/// Why a cluster-seed record is refused, for the operator who meets one.
const CLUSTER_SEED_REFUSAL: &str = "version.azure.akv.io \"2\" marks a record of the Azure Go \
     plugin's cluster-seed mode (--encrypted-cluster-seed-file), sealed with keys derived from \
     that seed rather than by Key Vault; kube-kms reads only the plugin's Key Vault records \
     (version \"1\"), so keep the Go plugin for these until they are rewritten";
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

/// Parses a v2 record of the Go plugin: its annotations must be exactly the Go plugin's, with
/// version "1" and RSA-OAEP-256, and its ciphertext one of the two layouts.
pub fn parse_v2(
    ciphertext: &[u8],
    key_id: &str,
    annotations: &HashMap<String, Vec<u8>>,
) -> Result<LegacyCiphertext, FormatError> {
    format::check_key_id(key_id)?;
    let malformed = |reason: &str| FormatError::MalformedAnnotations {
        reason: reason.to_owned(),
    };
    match annotations.get(VERSION_ANNOTATION).map(Vec::as_slice) {
        Some(b"1") => {}
        Some(CLUSTER_SEED_VERSION) => return Err(malformed(CLUSTER_SEED_REFUSAL)),
        _ => return Err(malformed("version.azure.akv.io must be \"1\"")),
    }
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
    let size: usize = annotations.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > format::MAX_ANNOTATIONS_LEN {
        return Err(malformed("annotations exceed 32 KiB"));
    }
    let (layout, rsa) = classify(ciphertext)?;
    Ok(LegacyCiphertext {
        key_id: Some(key_id.to_owned()),
        algorithm: LegacyAlgorithm::RsaOaep256,
        layout,
        rsa,
    })
}

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
        let record = parse_v2(&raw, "abc", &annotations).unwrap();
        assert_eq!(record.key_id.as_deref(), Some("abc"));
        assert_eq!(record.algorithm, LegacyAlgorithm::RsaOaep256);

        let mut extra = go_v2_annotations();
        for key in INFORMATIONAL_ANNOTATIONS {
            extra.insert(key.to_owned(), b"x".to_vec());
        }
        assert!(parse_v2(&raw, "abc", &extra).is_ok());

        let refusals = [
            (VERSION_ANNOTATION, b"2".to_vec()),
            (ALGORITHM_ANNOTATION, b"RSA1_5".to_vec()),
            (format::WRAPPED_KEK_ANNOTATION, b"x".to_vec()),
        ];
        for (key, value) in refusals {
            let mut annotations = go_v2_annotations();
            annotations.insert(key.to_owned(), value);
            assert!(parse_v2(&raw, "abc", &annotations).is_err(), "{key}");
        }
        let mut seeded = go_v2_annotations();
        seeded.insert(VERSION_ANNOTATION.to_owned(), b"2".to_vec());
        assert_eq!(
            parse_v2(&raw, "abc", &seeded).unwrap_err().to_string(),
            format!("malformed annotations: {CLUSTER_SEED_REFUSAL}"),
            "the cluster-seed mode is named, not just refused"
        );
        let mut missing = go_v2_annotations();
        missing.remove(ALGORITHM_ANNOTATION);
        assert!(parse_v2(&raw, "abc", &missing).is_err());
        assert!(parse_v2(&raw, "", &go_v2_annotations()).is_err());
        assert!(parse_v2(&raw[..100], "abc", &go_v2_annotations()).is_err());
    }
}
