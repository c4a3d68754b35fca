//! Proves that docs/format.md is right: the test vectors are read out of the document itself,
//! recomputed with independent AES-256-GCM (the `aes-gcm` crate used directly, not through
//! kube-kms) and SHA-256 code, decrypted by the real plugin — in process and over its Unix
//! socket — and every number in the document's limit tables is compared with the constant it
//! names. A vector or limit changed on one side only fails here, so the two cannot drift.
//!
//! Never writes outside its temporary directories, and never sleeps to wait for the plugin: the
//! binary is ready when it has printed its EncryptionConfiguration.

mod util;

use std::cell::RefCell;
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs;
use std::io::Write;
use std::num::NonZeroUsize;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aes_gcm::Aes256Gcm;
use aes_gcm::aead::{Aead, KeyInit, Payload};
use prost::Message;
use sha2::{Digest, Sha256};
use tonic::Code;

use kube_kms::envelope::format::{self, KEY_VERSION_ANNOTATION, WRAPPED_KEK_ANNOTATION};
use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::envelope::{Envelope, EnvelopeError};
use kube_kms::proto::v1beta1::key_management_service_client::KeyManagementServiceClient as V1Client;
use kube_kms::proto::v2::key_management_service_client::KeyManagementServiceClient as V2Client;
use kube_kms::proto::v2::{DecryptRequest, DecryptResponse};
use kube_kms::provider::local::{self, LocalKeyRing};
use kube_kms::provider::{self as provider, KeyProvider, ProviderError};
use kube_kms::server::{self, errors::to_status};
use util::ServedBinary;

/// The document under test, compiled in so that editing it re-runs these checks.
const DOC: &str = include_str!("../docs/format.md");

const KEY_FILE_MAGIC: &[u8] = b"KKMS-LK1";
const KEY_ID_LABEL: &[u8] = b"kube-kms/local-key/v1\0";
const WRAP_AAD_LABEL: &[u8] = b"kube-kms/local-wrap/v1\0";

// ---------------------------------------------------------------------------------------------
// Reading the document
// ---------------------------------------------------------------------------------------------

/// One `name: value` line (plus indented continuation lines) from a ```vectors block.
#[derive(Debug, Clone)]
enum Value {
    Hex(Vec<u8>),
    Text(String),
}

/// Every vector in the document, recording which ones a test has read.
struct Vectors {
    values: BTreeMap<String, Value>,
    used: RefCell<BTreeSet<String>>,
}

impl Vectors {
    fn from_doc() -> Self {
        let mut values = BTreeMap::new();
        let mut in_block = false;
        let mut pending: Option<(String, String, usize)> = None;
        let mut flush = |pending: &mut Option<(String, String, usize)>| {
            if let Some((name, raw, line)) = pending.take() {
                let value = match raw.strip_prefix('"') {
                    Some(text) => Value::Text(
                        text.strip_suffix('"')
                            .unwrap_or_else(|| panic!("line {line}: unterminated text"))
                            .to_owned(),
                    ),
                    None => {
                        let digits: String = raw.chars().filter(|c| !c.is_whitespace()).collect();
                        Value::Hex(hex::decode(&digits).unwrap_or_else(|error| {
                            panic!("line {line}: {name} is not hex: {error}")
                        }))
                    }
                };
                let previous = values.insert(name.clone(), value);
                assert!(previous.is_none(), "line {line}: {name} defined twice");
            }
        };
        for (index, line) in DOC.lines().enumerate() {
            let number = index + 1;
            let trimmed = line.trim_end();
            if !in_block {
                in_block = trimmed == "```vectors";
                continue;
            }
            if trimmed == "```" {
                flush(&mut pending);
                in_block = false;
            } else if trimmed.is_empty() || trimmed.trim_start().starts_with('#') {
                continue;
            } else if line.starts_with(char::is_whitespace) {
                let (name, raw, _) = pending
                    .as_mut()
                    .unwrap_or_else(|| panic!("line {number}: continuation without a name"));
                assert!(
                    !raw.starts_with('"'),
                    "line {number}: {name} is text and cannot continue"
                );
                raw.push_str(trimmed.trim_start());
            } else {
                flush(&mut pending);
                let (name, raw) = trimmed
                    .split_once(": ")
                    .unwrap_or_else(|| panic!("line {number}: expected `name: value`"));
                pending = Some((name.to_owned(), raw.trim().to_owned(), number));
            }
        }
        assert!(!in_block, "a ```vectors block is not closed");
        assert!(!values.is_empty(), "docs/format.md has no ```vectors block");
        Self {
            values,
            used: RefCell::new(BTreeSet::new()),
        }
    }

    fn get(&self, name: &str) -> &Value {
        self.used.borrow_mut().insert(name.to_owned());
        self.values
            .get(name)
            .unwrap_or_else(|| panic!("docs/format.md has no vector {name}"))
    }

    fn hex(&self, name: &str) -> Vec<u8> {
        match self.get(name) {
            Value::Hex(bytes) => bytes.clone(),
            Value::Text(_) => panic!("{name} is text in docs/format.md; expected hex"),
        }
    }

    fn text(&self, name: &str) -> String {
        match self.get(name) {
            Value::Text(text) => text.clone(),
            Value::Hex(_) => panic!("{name} is hex in docs/format.md; expected quoted text"),
        }
    }

    /// Asserts that the vector `name` is `computed`, showing both in hex when they differ.
    fn expect_hex(&self, name: &str, computed: &[u8]) {
        assert_eq!(
            hex::encode(self.hex(name)),
            hex::encode(computed),
            "{name} in docs/format.md (left) differs from the value recomputed here (right)"
        );
    }

    fn unused(&self) -> Vec<String> {
        let used = self.used.borrow();
        self.values
            .keys()
            .filter(|name| !used.contains(*name))
            .cloned()
            .collect()
    }
}

/// A row of a limit table: the number in the second column and, in the limits-and-errors
/// table, the gRPC code in the fourth.
#[derive(Debug)]
struct Limit {
    value: u64,
    code: Option<String>,
}

/// Every row of every table whose third column is headed `constant`.
fn documented_limits() -> BTreeMap<String, Limit> {
    let mut limits = BTreeMap::new();
    let mut in_table = false;
    let mut limit_table = false;
    for line in DOC.lines() {
        if !line.starts_with('|') {
            in_table = false;
            continue;
        }
        // cells[0] is the empty string before the first '|'.
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if !in_table {
            in_table = true;
            limit_table = cells.get(3) == Some(&"constant");
            continue;
        }
        if !limit_table || cells.get(1).is_some_and(|cell| cell.starts_with("---")) {
            continue;
        }
        let constant = cells
            .get(3)
            .and_then(|cell| cell.strip_prefix('`')?.strip_suffix('`'))
            .unwrap_or_else(|| panic!("a limit row without a `constant`: {line}"));
        let digits: String = cells[2].chars().take_while(char::is_ascii_digit).collect();
        let value = digits
            .parse()
            .unwrap_or_else(|_| panic!("the limit of `{constant}` does not start with a number"));
        let code = cells
            .get(4)
            .filter(|cell| cell.chars().all(|c| c.is_ascii_alphabetic()) && !cell.is_empty())
            .map(|cell| (*cell).to_owned());
        let previous = limits.insert(constant.to_owned(), Limit { value, code });
        assert!(previous.is_none(), "`{constant}` is documented twice");
    }
    limits
}

// ---------------------------------------------------------------------------------------------
// Independent implementations of the documented format
// ---------------------------------------------------------------------------------------------

fn gcm_seal(key: &[u8], nonce: &[u8], aad: &[u8], plaintext: &[u8]) -> Vec<u8> {
    let cipher = Aes256Gcm::new_from_slice(key).expect("a 32-byte key");
    let nonce = aes_gcm::Nonce::try_from(nonce).expect("a 12-byte nonce");
    cipher
        .encrypt(
            &nonce,
            Payload {
                msg: plaintext,
                aad,
            },
        )
        .expect("AES-GCM encryption of a short message")
}

/// Opens `nonce(12) ‖ ciphertext ‖ tag(16)`.
fn gcm_open(key: &[u8], aad: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
    let cipher = Aes256Gcm::new_from_slice(key).ok()?;
    let (nonce, rest) = sealed.split_at_checked(12)?;
    let nonce = aes_gcm::Nonce::try_from(nonce).ok()?;
    cipher.decrypt(&nonce, Payload { msg: rest, aad }).ok()
}

fn sha256(parts: &[&[u8]]) -> Vec<u8> {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update(part);
    }
    hasher.finalize().to_vec()
}

fn u16be(len: usize) -> [u8; 2] {
    u16::try_from(len)
        .expect("a field under 64 KiB")
        .to_be_bytes()
}

/// A protobuf length-delimited field.
fn proto_field(out: &mut Vec<u8>, field: u8, bytes: &[u8]) {
    out.push(field << 3 | 2);
    let mut len = bytes.len();
    while len >= 0x80 {
        out.push(u8::try_from(len & 0x7f).expect("seven bits") | 0x80);
        len >>= 7;
    }
    out.push(u8::try_from(len).expect("seven bits"));
    out.extend_from_slice(bytes);
}

/// A v2 DecryptRequest whose key_id is bytes, to send what a well-behaved client cannot.
#[derive(Clone, PartialEq, prost::Message)]
struct RawDecryptRequest {
    #[prost(bytes = "vec", tag = "1")]
    ciphertext: Vec<u8>,
    #[prost(bytes = "vec", tag = "3")]
    key_id: Vec<u8>,
}

fn annotations(version: &[u8], wrapped: &[u8]) -> HashMap<String, Vec<u8>> {
    HashMap::from([
        (WRAPPED_KEK_ANNOTATION.to_owned(), wrapped.to_vec()),
        (KEY_VERSION_ANNOTATION.to_owned(), version.to_vec()),
    ])
}

// ---------------------------------------------------------------------------------------------
// The real plugin over the vector key ring
// ---------------------------------------------------------------------------------------------

/// Writes `b.key_file` as `v1.key` (0600) into a fresh key ring directory (0700).
fn write_vector_key_ring(vectors: &Vectors, parent: &Path) -> PathBuf {
    let dir = parent.join("keys");
    fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .expect("create the key ring directory");
    fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(dir.join("v1.key"))
        .and_then(|mut file| file.write_all(&vectors.hex("b.key_file")))
        .expect("write v1.key");
    dir
}

async fn vector_envelope(dir: &Path) -> Envelope {
    let ring = LocalKeyRing::open_or_create(dir).expect("open the vector key ring");
    Envelope::start(
        Arc::new(ring),
        RotationPolicy::DEFAULT,
        NonZeroUsize::new(16).expect("non-zero"),
    )
    .await
    .expect("start the envelope over the vector key ring")
}

/// `kube-kms serve` over the vector key ring, as an operator runs it; killed when dropped.
fn serve_vector_key_ring(state_dir: &Path, key_dir: &Path, socket: &Path) -> ServedBinary {
    let mut command = std::process::Command::new(util::BIN);
    command
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state_dir)
        .arg("--local-key-dir")
        .arg(key_dir)
        .args(["--log-level", "error"])
        .env_remove("KUBE_KMS_CONFIG")
        // No operations listener: a fixed TCP port would collide with other plugins.
        .env("KUBE_KMS_HEALTH_ADDRESS", "off");
    let plugin = ServedBinary::start(command, &state_dir.join("serve.log"));
    assert_eq!(
        plugin.socket, socket,
        "the EncryptionConfiguration names the socket"
    );
    plugin
}

fn code_of<T>(result: Result<T, EnvelopeError>) -> Code {
    match result {
        Ok(_) => Code::Ok,
        Err(error) => to_status(&error).code(),
    }
}

// ---------------------------------------------------------------------------------------------
// Tests
// ---------------------------------------------------------------------------------------------

#[test]
fn every_vector_recomputes_with_independent_aes_gcm_and_sha256() {
    let v = Vectors::from_doc();

    // (b) The key file, its key_id, the wrapped KEK and the cache key.
    let root_key = v.hex("b.root_key");
    let id = v.hex("b.id");
    let version = v.text("b.version");
    assert_eq!((root_key.len(), id.len()), (32, 16));
    v.expect_hex("b.key_file", &[KEY_FILE_MAGIC, &id, &root_key].concat());
    assert_eq!(v.hex("b.key_file").len(), 56);
    let key_id_input = [KEY_ID_LABEL, version.as_bytes(), b"\0", &id].concat();
    v.expect_hex("b.key_id_input", &key_id_input);
    let key_id = hex::encode(sha256(&[&key_id_input]));
    assert_eq!(v.text("b.key_id"), key_id);
    let kek = v.hex("a.kek");
    let wrap_nonce = v.hex("b.wrap_nonce");
    let wrap_aad = [WRAP_AAD_LABEL, version.as_bytes()].concat();
    v.expect_hex("b.wrap_aad", &wrap_aad);
    let wrapped = [
        wrap_nonce.clone(),
        gcm_seal(&root_key, &wrap_nonce, &wrap_aad, &kek),
    ]
    .concat();
    v.expect_hex("b.wrapped", &wrapped);
    assert_eq!(wrapped.len(), 60);
    assert_eq!(
        gcm_open(&root_key, &wrap_aad, &wrapped).as_deref(),
        Some(kek.as_slice())
    );
    let version_len = u64::try_from(version.len()).expect("short").to_be_bytes();
    v.expect_hex(
        "b.cache_key",
        &sha256(&[&version_len, version.as_bytes(), &wrapped]),
    );

    // (a) The v2 ciphertext under that key_id, with the KEK's first counter nonce.
    assert_eq!(v.text("a.key_id"), key_id);
    let nonce = v.hex("a.nonce");
    let fixed = v.hex("a.nonce_fixed");
    assert_eq!(fixed.len(), 4);
    v.expect_hex(
        "a.nonce",
        &[fixed.as_slice(), &v.hex("a.nonce_invocation")].concat(),
    );
    assert_eq!(v.hex("a.nonce_invocation"), 0u64.to_be_bytes());
    let plaintext = v.hex("a.plaintext");
    let aad = [&[0x01], key_id.as_bytes()].concat();
    v.expect_hex("a.aad", &aad);
    let ciphertext = [
        vec![0x01],
        nonce.clone(),
        gcm_seal(&kek, &nonce, &aad, &plaintext),
    ]
    .concat();
    v.expect_hex("a.ciphertext", &ciphertext);
    assert_eq!(ciphertext.len(), 1 + 12 + plaintext.len() + 16);
    assert_eq!(
        gcm_open(&kek, &aad, &ciphertext[1..]).as_deref(),
        Some(plaintext.as_slice())
    );

    // (c) The Decrypt request, encoded by hand and decoded by the generated protobuf code.
    let mut expected = Vec::new();
    proto_field(&mut expected, 1, &ciphertext);
    proto_field(&mut expected, 2, b"test-vector-c");
    proto_field(&mut expected, 3, key_id.as_bytes());
    for (key, value) in [
        (WRAPPED_KEK_ANNOTATION.as_bytes(), wrapped.as_slice()),
        (KEY_VERSION_ANNOTATION.as_bytes(), version.as_bytes()),
    ] {
        let mut entry = Vec::new();
        proto_field(&mut entry, 1, key);
        proto_field(&mut entry, 2, value);
        proto_field(&mut expected, 4, &entry);
    }
    v.expect_hex("c.request", &expected);
    let request = v.hex("c.request");
    let decoded = DecryptRequest::decode(request.as_slice()).unwrap();
    assert_eq!(decoded.ciphertext, ciphertext);
    assert_eq!(decoded.uid, "test-vector-c");
    assert_eq!(decoded.key_id, key_id);
    assert_eq!(
        decoded.annotations,
        annotations(version.as_bytes(), &wrapped)
    );

    // (d) The v1 blob: header ‖ nonce ‖ GCM(KEK, aad = header).
    let header = [
        &[0x02][..],
        &u16be(version.len()),
        version.as_bytes(),
        &u16be(wrapped.len()),
        &wrapped,
    ]
    .concat();
    v.expect_hex("d.header", &header);
    let v1_nonce = v.hex("d.nonce");
    v.expect_hex(
        "d.nonce",
        &[fixed.as_slice(), &v.hex("d.nonce_invocation")].concat(),
    );
    assert_eq!(v.hex("d.nonce_invocation"), 1u64.to_be_bytes());
    let v1_plaintext = v.hex("d.plaintext");
    let blob = [
        header.clone(),
        v1_nonce.clone(),
        gcm_seal(&kek, &v1_nonce, &header, &v1_plaintext),
    ]
    .concat();
    v.expect_hex("d.blob", &blob);
    assert_eq!(
        gcm_open(&kek, &header, &blob[header.len()..]).as_deref(),
        Some(v1_plaintext.as_slice())
    );

    // (e) The same seed under the same KEK and key_id, with a random nonce: the same format.
    let random_nonce = v.hex("e.nonce");
    assert_eq!(random_nonce.len(), 12);
    v.expect_hex(
        "e.ciphertext",
        &[
            vec![0x01],
            random_nonce.clone(),
            gcm_seal(&kek, &random_nonce, &aad, &plaintext),
        ]
        .concat(),
    );

    assert_eq!(
        v.unused(),
        Vec::<String>::new(),
        "every vector in docs/format.md must be recomputed here"
    );
}

#[tokio::test]
async fn the_plugin_reads_the_vector_key_ring_and_decrypts_the_vectors() {
    let v = Vectors::from_doc();
    let temp = tempfile::tempdir().unwrap();
    let dir = write_vector_key_ring(&v, temp.path());
    let key_id = v.text("b.key_id");
    let version = v.text("b.version");
    let wrapped = v.hex("b.wrapped");
    let kek = v.hex("a.kek");

    // The key file gives the documented key_id, and the provider unwraps the documented wrap.
    let listed = local::list(&dir).unwrap();
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].version, listed[0].key_id.as_str()),
        (1, &*key_id)
    );
    let ring = LocalKeyRing::open_or_create(&dir).unwrap();
    let current = ring.current_key().await.unwrap();
    assert_eq!((current.key_id(), current.version()), (&*key_id, &*version));
    assert_eq!(
        ring.unwrap(&version, &wrapped).await.unwrap().expose(),
        kek.as_slice()
    );
    drop(ring);

    // The code builds the same associated data, header and cache key as the document.
    assert_eq!(format::v2_aad(&key_id), v.hex("a.aad"));
    assert_eq!(format::v1_header(&version, &wrapped), v.hex("d.header"));
    let blob = v.hex("d.blob");
    let parsed = format::parse_v1_blob(&blob).unwrap();
    assert_eq!(parsed.header, v.hex("d.header"));
    assert_eq!(
        (parsed.kek.version, parsed.kek.wrapped),
        (&*version, &*wrapped)
    );
    let cache_key = kube_kms::envelope::cache::CacheKey::new(&version, &wrapped);
    let shown = format!("{cache_key:?}");
    assert_eq!(
        shown,
        format!("CacheKey({})", hex::encode(&v.hex("b.cache_key")[..6]))
    );

    // The envelope decrypts (a) under the annotations of (b), then (d) from the same cache entry.
    let envelope = vector_envelope(&dir).await;
    assert_eq!(envelope.current_key().key_id(), key_id);
    let ciphertext = v.hex("a.ciphertext");
    let good = annotations(version.as_bytes(), &wrapped);
    let plaintext = envelope.decrypt(&ciphertext, &key_id, &good).await.unwrap();
    assert_eq!(plaintext.as_slice(), v.hex("a.plaintext"));
    assert_eq!(envelope.cache_stats().unwraps, 1);
    // What an earlier kube-kms wrote with a random nonce decrypts the same way.
    let random_nonce = envelope
        .decrypt(&v.hex("e.ciphertext"), &key_id, &good)
        .await
        .unwrap();
    assert_eq!(random_nonce.as_slice(), v.hex("a.plaintext"));
    let v1_plaintext = envelope.decrypt_v1(&blob).await.unwrap();
    assert_eq!(v1_plaintext.as_slice(), v.hex("d.plaintext"));
    assert_eq!(
        envelope.cache_stats().unwraps,
        1,
        "v1 and v2 share the cache key"
    );

    // Other well-formed annotations are ignored; a malformed key is refused.
    let mut extra = good.clone();
    extra.insert("future.kube-kms.io".into(), b"anything".to_vec());
    assert!(envelope.decrypt(&ciphertext, &key_id, &extra).await.is_ok());
    extra.insert("Not.A.Dns.Name".into(), Vec::new());
    assert_eq!(
        code_of(envelope.decrypt(&ciphertext, &key_id, &extra).await),
        Code::InvalidArgument
    );

    // Any flipped bit of the ciphertext fails, and fails as bad input.
    for bit in 0..ciphertext.len() * 8 {
        let mut flipped = ciphertext.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let result = envelope.decrypt(&flipped, &key_id, &good).await;
        if bit >= 8 {
            assert!(
                matches!(result, Err(EnvelopeError::Authentication)),
                "bit {bit}"
            );
        }
        assert_eq!(code_of(result), Code::InvalidArgument, "bit {bit}");
    }

    // The key_id is bound as associated data: any other key_id fails authentication.
    let mut other_key_id = key_id.clone().into_bytes();
    other_key_id[63] = if other_key_id[63] == b'0' { b'1' } else { b'0' };
    let other_key_id = String::from_utf8(other_key_id).unwrap();
    assert!(matches!(
        envelope.decrypt(&ciphertext, &other_key_id, &good).await,
        Err(EnvelopeError::Authentication)
    ));

    // Any flipped bit of the wrapped KEK fails to unwrap.
    for bit in 0..wrapped.len() * 8 {
        let mut flipped = wrapped.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let result = envelope
            .decrypt(
                &ciphertext,
                &key_id,
                &annotations(version.as_bytes(), &flipped),
            )
            .await;
        assert!(
            matches!(
                result,
                Err(EnvelopeError::Provider(ProviderError::UnwrapFailed { .. }))
            ),
            "bit {bit}"
        );
    }

    // A version the key ring does not hold is a precondition failure, found without any key.
    assert_eq!(
        code_of(
            envelope
                .decrypt(&ciphertext, &key_id, &annotations(b"2", &wrapped))
                .await
        ),
        Code::FailedPrecondition
    );

    // Any flipped bit of the v1 blob fails; in the sealed part, as an authentication failure.
    let header_len = v.hex("d.header").len();
    for bit in 0..blob.len() * 8 {
        let mut flipped = blob.clone();
        flipped[bit / 8] ^= 1 << (bit % 8);
        let result = envelope.decrypt_v1(&flipped).await;
        assert!(result.is_err(), "bit {bit}");
        if bit / 8 >= header_len {
            assert!(
                matches!(result, Err(EnvelopeError::Authentication)),
                "bit {bit}"
            );
        }
    }

    // The vectors still decrypt after all that.
    assert!(envelope.decrypt(&ciphertext, &key_id, &good).await.is_ok());
}

#[tokio::test]
async fn the_kube_kms_binary_decrypts_request_c_over_its_socket() {
    let v = Vectors::from_doc();
    let temp = tempfile::tempdir().unwrap();
    let dir = write_vector_key_ring(&v, temp.path());
    let path = temp.path().join("kms.sock");
    let plugin = serve_vector_key_ring(temp.path(), &dir, &path);

    let channel = kube_kms::probe::connect(&path).await.unwrap();
    let mut v2 = V2Client::new(channel.clone());
    let request = DecryptRequest::decode(v.hex("c.request").as_slice()).unwrap();
    let response = v2.decrypt(request).await.unwrap().into_inner();
    assert_eq!(response.plaintext, v.hex("a.plaintext"));

    let mut v1 = V1Client::new(channel.clone());
    let response = v1
        .decrypt(kube_kms::proto::v1beta1::DecryptRequest {
            version: "v1beta1".into(),
            cipher: v.hex("d.blob"),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.plain, v.hex("d.plaintext"));

    // A request over the documented message limit gets the documented code.
    let limits = documented_limits();
    let limit = &limits["MAX_MESSAGE_BYTES"];
    let oversize = DecryptRequest {
        ciphertext: vec![0x01; usize::try_from(limit.value).unwrap() + 1],
        uid: "oversize".into(),
        key_id: v.text("b.key_id"),
        annotations: HashMap::new(),
    };
    let status = v2.decrypt(oversize).await.unwrap_err();
    assert_eq!(
        Some(format!("{:?}", status.code())),
        limit.code,
        "{status:?}"
    );

    // A key_id that is not UTF-8 never reaches the plugin: the protobuf layer refuses it.
    let mut raw = tonic::client::Grpc::new(channel);
    raw.ready().await.unwrap();
    let request = RawDecryptRequest {
        ciphertext: v.hex("a.ciphertext"),
        key_id: vec![0xff, 0xfe],
    };
    let status = raw
        .unary(
            tonic::Request::new(request),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/v2.KeyManagementService/Decrypt",
            ),
            tonic_prost::ProstCodec::<RawDecryptRequest, DecryptResponse>::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Internal, "{status:?}");
    assert!(
        status
            .message()
            .starts_with("failed to decode Protobuf message"),
        "{status:?}"
    );

    drop(plugin);
}

#[tokio::test]
async fn what_the_plugin_writes_opens_with_the_documented_format_alone() {
    let v = Vectors::from_doc();
    let temp = tempfile::tempdir().unwrap();
    let dir = write_vector_key_ring(&v, temp.path());
    let envelope = vector_envelope(&dir).await;
    let root_key = v.hex("b.root_key");
    let version = v.text("b.version");
    let wrap_aad = [WRAP_AAD_LABEL, version.as_bytes()].concat();
    let plaintext = b"a DEK seed written by the plugin";

    // v2: unwrap the annotation with the root key, then open the ciphertext, by the document.
    let sealed = envelope.encrypt(plaintext).await.unwrap();
    assert_eq!(*sealed.key_id, v.text("b.key_id"));
    assert_eq!(sealed.ciphertext[0], 0x01);
    assert_eq!(sealed.ciphertext.len(), 1 + 12 + plaintext.len() + 16);
    let keys: BTreeSet<&str> = sealed.annotations.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        BTreeSet::from([WRAPPED_KEK_ANNOTATION, KEY_VERSION_ANNOTATION])
    );
    assert_eq!(
        sealed.annotations[KEY_VERSION_ANNOTATION],
        version.as_bytes()
    );
    let wrapped = &sealed.annotations[WRAPPED_KEK_ANNOTATION];
    assert_eq!(wrapped.len(), 60);
    let kek = gcm_open(&root_key, &wrap_aad, wrapped).expect("the wrap opens with the root key");
    assert_eq!(kek.len(), 32);
    let aad = [&[0x01], sealed.key_id.as_bytes()].concat();
    assert_eq!(
        gcm_open(&kek, &aad, &sealed.ciphertext[1..]).as_deref(),
        Some(&plaintext[..])
    );

    // v1: parse the header field by field, then open with the header as associated data.
    let blob = envelope.encrypt_v1(plaintext).await.unwrap();
    assert_eq!(blob[0], 0x02);
    let version_len = usize::from(u16::from_be_bytes([blob[1], blob[2]]));
    assert_eq!(&blob[3..3 + version_len], version.as_bytes());
    let at = 3 + version_len;
    let wrapped_len = usize::from(u16::from_be_bytes([blob[at], blob[at + 1]]));
    let header_len = at + 2 + wrapped_len;
    assert_eq!(
        &blob[at + 2..header_len],
        wrapped.as_slice(),
        "one active KEK"
    );
    assert_eq!(blob.len(), header_len + 12 + plaintext.len() + 16);
    assert_eq!(
        gcm_open(&kek, &blob[..header_len], &blob[header_len..]).as_deref(),
        Some(&plaintext[..])
    );

    // The nonces are the documented counter: one fixed field per KEK, then the invocation, v1
    // and v2 from one sequence. The first seal of this KEK was the v2 one above.
    let v2_nonce = &sealed.ciphertext[1..13];
    let v1_nonce = &blob[header_len..header_len + 12];
    let again = envelope.encrypt(plaintext).await.unwrap();
    let next_nonce = &again.ciphertext[1..13];
    assert_eq!(again.annotations, sealed.annotations, "the same KEK");
    for nonce in [v1_nonce, next_nonce] {
        assert_eq!(nonce[..4], v2_nonce[..4], "one fixed field per KEK");
    }
    let invocation = |nonce: &[u8]| u64::from_be_bytes(nonce[4..].try_into().unwrap());
    assert_eq!(
        (
            invocation(v2_nonce),
            invocation(v1_nonce),
            invocation(next_nonce)
        ),
        (0, 1, 2)
    );
}

#[tokio::test]
async fn documented_limits_match_the_code_and_their_errors() {
    let limits = documented_limits();
    let in_code: BTreeMap<&str, u64> = BTreeMap::from([
        ("MAX_V2_PLAINTEXT_LEN", format::MAX_V2_PLAINTEXT_LEN as u64),
        (
            "MAX_V2_CIPHERTEXT_LEN",
            format::MAX_V2_CIPHERTEXT_LEN as u64,
        ),
        ("MAX_V1_PLAINTEXT_LEN", format::MAX_V1_PLAINTEXT_LEN as u64),
        ("MAX_KEY_ID_LEN", provider::MAX_KEY_ID_LEN as u64),
        ("MAX_KEY_VERSION_LEN", provider::MAX_KEY_VERSION_LEN as u64),
        ("MAX_WRAPPED_KEK_LEN", format::MAX_WRAPPED_KEK_LEN as u64),
        ("MAX_ANNOTATIONS_LEN", format::MAX_ANNOTATIONS_LEN as u64),
        ("MAX_MESSAGE_BYTES", server::MAX_MESSAGE_BYTES as u64),
        ("CALL_TIMEOUT", server::CALL_TIMEOUT.as_secs()),
        (
            "RotationPolicy::DEFAULT.max_encryptions",
            RotationPolicy::DEFAULT.max_encryptions,
        ),
        (
            "RotationPolicy::MAX_ENCRYPTIONS_LIMIT",
            RotationPolicy::MAX_ENCRYPTIONS_LIMIT,
        ),
        (
            "RotationPolicy::DEFAULT.max_age",
            RotationPolicy::DEFAULT.max_age.as_secs(),
        ),
    ]);
    let documented: BTreeMap<&str, u64> = limits
        .iter()
        .map(|(name, limit)| (name.as_str(), limit.value))
        .collect();
    assert_eq!(documented, in_code);
    assert_eq!(RotationPolicy::DEFAULT.max_encryptions, 1 << 21);
    assert_eq!(format::MAX_V2_PLAINTEXT_LEN, 1024 - 1 - 12 - 16);

    // Each envelope-level limit: the largest value passes the check, one more gets the
    // documented code.
    let v = Vectors::from_doc();
    let temp = tempfile::tempdir().unwrap();
    let dir = write_vector_key_ring(&v, temp.path());
    let envelope = vector_envelope(&dir).await;
    let key_id = v.text("b.key_id");
    let version = v.text("b.version");
    let wrapped = v.hex("b.wrapped");
    let ciphertext = v.hex("a.ciphertext");
    let good = annotations(version.as_bytes(), &wrapped);
    let mut checked = BTreeMap::new();

    let max = format::MAX_V2_PLAINTEXT_LEN;
    let sealed = envelope.encrypt(&vec![7; max]).await.unwrap();
    assert_eq!(sealed.ciphertext.len(), format::MAX_V2_CIPHERTEXT_LEN);
    assert_eq!(code_of(envelope.encrypt(&[]).await), Code::InvalidArgument);
    checked.insert(
        "MAX_V2_PLAINTEXT_LEN",
        code_of(envelope.encrypt(&vec![7; max + 1]).await),
    );

    let mut long = sealed.ciphertext.clone();
    long.push(0);
    assert_eq!(
        code_of(envelope.decrypt(&ciphertext[..29], &key_id, &good).await),
        Code::InvalidArgument
    );
    checked.insert(
        "MAX_V2_CIPHERTEXT_LEN",
        code_of(envelope.decrypt(&long, &key_id, &good).await),
    );

    let max = format::MAX_V1_PLAINTEXT_LEN;
    assert!(envelope.encrypt_v1(&vec![7; max]).await.is_ok());
    checked.insert(
        "MAX_V1_PLAINTEXT_LEN",
        code_of(envelope.encrypt_v1(&vec![7; max + 1]).await),
    );

    let too_long_key_id = "k".repeat(provider::MAX_KEY_ID_LEN + 1);
    assert!(matches!(
        envelope
            .decrypt(&ciphertext, &"k".repeat(provider::MAX_KEY_ID_LEN), &good)
            .await,
        Err(EnvelopeError::Authentication)
    ));
    checked.insert(
        "MAX_KEY_ID_LEN",
        code_of(envelope.decrypt(&ciphertext, &too_long_key_id, &good).await),
    );

    // 256 bytes pass the format check and reach the provider, which has no such version.
    let longest = "1".repeat(provider::MAX_KEY_VERSION_LEN);
    assert!(matches!(
        envelope
            .decrypt(
                &ciphertext,
                &key_id,
                &annotations(longest.as_bytes(), &wrapped)
            )
            .await,
        Err(EnvelopeError::Provider(
            ProviderError::UnknownKeyVersion { .. }
        ))
    ));
    let too_long = format!("{longest}1");
    checked.insert(
        "MAX_KEY_VERSION_LEN",
        code_of(
            envelope
                .decrypt(
                    &ciphertext,
                    &key_id,
                    &annotations(too_long.as_bytes(), &wrapped),
                )
                .await,
        ),
    );
    let mut v1_too_long = format::v1_header(&too_long, &wrapped);
    v1_too_long.extend_from_slice(&[0; 12 + 1 + 16]);
    assert!(matches!(
        envelope.decrypt_v1(&v1_too_long).await,
        Err(EnvelopeError::Format(_))
    ));

    let max = format::MAX_WRAPPED_KEK_LEN;
    assert!(matches!(
        envelope
            .decrypt(
                &ciphertext,
                &key_id,
                &annotations(version.as_bytes(), &vec![1; max])
            )
            .await,
        Err(EnvelopeError::Provider(ProviderError::UnwrapFailed { .. }))
    ));
    checked.insert(
        "MAX_WRAPPED_KEK_LEN",
        code_of(
            envelope
                .decrypt(
                    &ciphertext,
                    &key_id,
                    &annotations(version.as_bytes(), &vec![1; max + 1]),
                )
                .await,
        ),
    );

    let used: usize = good
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    let pad_key = "pad.example.com";
    let mut full = good.clone();
    full.insert(
        pad_key.into(),
        vec![0; format::MAX_ANNOTATIONS_LEN - used - pad_key.len()],
    );
    assert!(envelope.decrypt(&ciphertext, &key_id, &full).await.is_ok());
    if let Some(pad) = full.get_mut(pad_key) {
        pad.push(0);
    }
    checked.insert(
        "MAX_ANNOTATIONS_LEN",
        code_of(envelope.decrypt(&ciphertext, &key_id, &full).await),
    );

    for (name, code) in checked {
        assert_eq!(
            Some(format!("{code:?}")),
            limits[name].code,
            "the documented gRPC code for `{name}`"
        );
    }
}
