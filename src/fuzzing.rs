//! Entry points for the fuzz targets in fuzz/: each feeds arbitrary bytes to code that reads
//! attacker-controlled input — a Decrypt request as kube-apiserver would send it, a v1 blob, a
//! config file — and checks that it returns cleanly: never a panic, never a plaintext that did
//! not authenticate, and never a call to the key provider for input the envelope's own parser
//! refuses. tests/fuzz_corpus.rs replays the committed corpora through the same functions.

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use async_trait::async_trait;
use prost::Message;

use crate::crypto::{GcmKey, SecretKey};
use crate::envelope::format;
use crate::envelope::kek::RotationPolicy;
use crate::envelope::{Envelope, EnvelopeError};
use crate::provider::{KeyProvider, KeyVersion, ProviderError, ProviderHealth};

/// Parses arbitrary bytes as a v2 ciphertext and as a v1 blob.
pub fn ciphertext(data: &[u8]) {
    let _ = format::parse_v2_ciphertext(data);
    let _ = format::parse_v1_blob(data);
}

/// Splits arbitrary bytes into annotations and a key_id, and parses them as a Decrypt would.
pub fn decrypt_request(data: &[u8]) {
    let mut annotations = HashMap::new();
    let mut fields = data.split(|b| *b == 0);
    let key_id = String::from_utf8_lossy(fields.next().unwrap_or_default()).into_owned();
    while let (Some(key), Some(value)) = (fields.next(), fields.next()) {
        annotations.insert(String::from_utf8_lossy(key).into_owned(), value.to_vec());
    }
    let _ = format::check_key_id(&key_id);
    let _ = format::parse_annotations(&annotations);
}

/// Parses arbitrary bytes as a YAML config file and resolves it.
pub fn config(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let env = crate::config::DefaultsEnv::default();
        let _ = crate::config::Config::from_yaml(text, &crate::config::ConfigArgs::default(), &env);
    }
}

/// What the census is checked against: a pinned Azure key with a decrypt-only key of any
/// version, and an EncryptionConfiguration with a kms, an aescbc and an identity provider.
fn census_fixture() -> &'static (
    crate::lifecycle::known_keys::KnownKeys,
    crate::lifecycle::encryption_config::EncryptionConfig,
) {
    static FIXTURE: OnceLock<(
        crate::lifecycle::known_keys::KnownKeys,
        crate::lifecycle::encryption_config::EncryptionConfig,
    )> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let config = crate::config::Config::from_yaml(
            "provider: azure\nazure:\n  vault_url: https://kv.vault.azure.net/\n  key_name: kek\n  \
             key_version: 0123456789abcdef0123456789abcdef\n  \
             decrypt_only_keys: https://old.vault.azure.net/keys/old\n",
            &crate::config::ConfigArgs::default(),
            &crate::config::DefaultsEnv::default(),
        )
        .unwrap_or_else(|error| panic!("fuzzing census config: {error}"));
        let encryption = crate::lifecycle::encryption_config::EncryptionConfig::parse(
            "apiVersion: apiserver.config.k8s.io/v1\nkind: EncryptionConfiguration\nresources:\n\
             - resources: [secrets, '*.apps']\n  providers:\n  - kms: {apiVersion: v2, name: kube-kms}\n\
             \x20 - aescbc: {keys: [{name: key1}]}\n  - identity: {}\n",
            "<fuzzing>",
        )
        .unwrap_or_else(|error| panic!("fuzzing EncryptionConfiguration: {error}"));
        (
            crate::lifecycle::known_keys::KnownKeys::from_config(&config, None),
            encryption,
        )
    })
}

/// Splits arbitrary bytes at the first zero byte into an etcd key path and a stored value, and
/// counts them as the census does: classified, named against a configuration and placed against
/// an EncryptionConfiguration.
///
/// # Panics
/// When an invariant breaks: the value is not counted exactly once, in exactly one row, or a
/// KMS v2 record's key_id is outside kube-apiserver's 1–1024 bytes.
pub fn stored_value(data: &[u8]) {
    use crate::lifecycle::census::Tally;
    use crate::lifecycle::stored_value::{StoredValue, classify, group_resource};

    let (path, value) = match data.iter().position(|b| *b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (&b"secrets/ns/name"[..], data),
    };
    let _ = group_resource(path);
    if let StoredValue::KmsV2(record) = classify(value) {
        assert!(
            (1..=1024).contains(&record.key_id.len()),
            "a KMS v2 key_id of {} bytes was accepted",
            record.key_id.len()
        );
    }
    let (known, encryption) = census_fixture();
    let mut tally = Tally::default();
    tally.add(data, path, value, known, Some(encryption));
    assert_eq!(tally.scanned, 1);
    assert_eq!(tally.rows.values().sum::<u64>(), 1, "one value, one row");
    assert!(tally.unreadable + tally.pending + tally.undecided <= 1);
    assert!(tally.keys.values().map(|key| key.objects).sum::<u64>() <= 1);
}

/// Seeds for the `stored_value` corpus: one value of every stored format, behind its path.
pub fn stored_value_seeds() -> Vec<(&'static str, Vec<u8>)> {
    use crate::lifecycle::stored_value::EncryptedObject;

    let with_path = |path: &str, value: &[u8]| [path.as_bytes(), &[0], value].concat();
    let kube_kms = EncryptedObject {
        encrypted_data: vec![0x5a; 48],
        key_id: "6c0fa652efc19c97d66a8c70e71224d33a53ab4340ebbfb07d7d3e549db9560e".to_owned(),
        encrypted_dek_source: vec![1; 61],
        annotations: format::annotations("0123456789abcdef0123456789abcdef", &[9; 256]),
        encrypted_dek_source_type: 1,
    };
    let azure = EncryptedObject {
        annotations: HashMap::from([("version.azure.akv.io".to_owned(), b"1".to_vec())]),
        encrypted_dek_source_type: 0,
        ..kube_kms.clone()
    };
    let v1_blob = [
        format::v1_header("0123456789abcdef0123456789abcdef", &[9; 256]).as_slice(),
        &[0; 45],
    ]
    .concat();
    let v1_len = u16::try_from(v1_blob.len())
        .unwrap_or(u16::MAX)
        .to_be_bytes();
    vec![
        (
            "kms-v2-kube-kms",
            with_path(
                "secrets/default/s",
                &[
                    b"k8s:enc:kms:v2:kube-kms:".as_slice(),
                    &kube_kms.encode_to_vec(),
                ]
                .concat(),
            ),
        ),
        (
            "kms-v2-azure-plugin",
            with_path(
                "secrets/default/a",
                &[
                    b"k8s:enc:kms:v2:azurekms:".as_slice(),
                    &azure.encode_to_vec(),
                ]
                .concat(),
            ),
        ),
        (
            "kms-v1",
            with_path(
                "deployments/default/d",
                &[
                    b"k8s:enc:kms:v1:kube-kms:".as_slice(),
                    &v1_len,
                    &v1_blob,
                    b"data",
                ]
                .concat(),
            ),
        ),
        (
            "aescbc",
            with_path("secrets/default/c", b"k8s:enc:aescbc:v1:key1:\x01\x02\x03"),
        ),
        (
            "identity-protobuf",
            with_path(
                "configmaps/default/cm",
                b"k8s\0\n\x0f\n\x02v1\x12\tConfigMap",
            ),
        ),
        (
            "identity-json",
            with_path("example.com/widgets/ns/w", b"{\"kind\":\"Widget\"}"),
        ),
        (
            "corrupt-v2",
            with_path("secrets/x/y", b"k8s:enc:kms:v2:p:\x0a\xff"),
        ),
    ]
}

/// Decodes arbitrary bytes as a protobuf `v2.DecryptRequest` (what tonic hands the service) and
/// runs it through a whole [`Envelope::decrypt`] with a fuzzing provider.
///
/// # Panics
/// When an invariant breaks: the provider was asked to unwrap for a request the format parser
/// refuses, a plaintext came back that is not exactly the ciphertext's length minus the format
/// byte, nonce and tag, or an error maps to a gRPC code other than InvalidArgument.
pub fn decrypt_v2_proto(data: &[u8]) {
    let Ok(request) = crate::proto::v2::DecryptRequest::decode(data) else {
        return; // tonic answers InvalidArgument (see grpc_uds's bad_input_codes) before us
    };
    // Well formed: kube-kms's own record, or a record of Azure's Go plugin (either mode), which
    // the fixture's provider refuses as misconfigured (it is not Azure) without a remote call.
    let well_formed = if crate::envelope::legacy::is_v2_record(&request.annotations) {
        crate::envelope::legacy::parse_v2(
            &request.ciphertext,
            &request.key_id,
            &request.annotations,
        )
        .is_ok()
    } else {
        format::check_key_id(&request.key_id).is_ok()
            && format::parse_v2_ciphertext(&request.ciphertext).is_ok()
            && format::parse_annotations(&request.annotations).is_ok()
    };
    let fixture = Fixture::get();
    let _one_input_at_a_time = fixture.serial();
    let unwraps = fixture.unwraps();
    let envelope = fixture.envelope();
    let result = fixture.runtime.block_on(envelope.decrypt(
        &request.ciphertext,
        &request.key_id,
        &request.annotations,
    ));
    check_outcome(
        well_formed,
        fixture.unwraps() - unwraps,
        request.ciphertext.len(),
        1,
        result,
    );
}

/// Decodes arbitrary bytes as a protobuf `v1beta1.DecryptRequest` and runs its blob through a
/// whole [`Envelope::decrypt_v1`] with a fuzzing provider; the invariants of
/// [`decrypt_v2_proto`].
pub fn decrypt_v1_proto(data: &[u8]) {
    let Ok(request) = crate::proto::v1beta1::DecryptRequest::decode(data) else {
        return;
    };
    let parsed = format::parse_v1_blob(&request.cipher);
    let header_len = parsed.as_ref().map_or(0, |blob| blob.header.len());
    // Well formed: kube-kms's own blob, or one in a layout of Azure's Go plugin, which the
    // fixture's provider refuses as misconfigured (it is not Azure) without a remote call.
    let well_formed =
        parsed.is_ok() || crate::envelope::legacy::classify_v1(&request.cipher).is_ok();
    let fixture = Fixture::get();
    let _one_input_at_a_time = fixture.serial();
    let unwraps = fixture.unwraps();
    let envelope = fixture.envelope();
    let result = fixture
        .runtime
        .block_on(envelope.decrypt_v1(&request.cipher));
    check_outcome(
        well_formed,
        fixture.unwraps() - unwraps,
        request.cipher.len(),
        header_len,
        result,
    );
}

fn check_outcome(
    well_formed: bool,
    unwraps: u64,
    input_len: usize,
    header_len: usize,
    result: Result<zeroize::Zeroizing<Vec<u8>>, EnvelopeError>,
) {
    assert!(
        well_formed || unwraps == 0,
        "the provider was called for a request the parser refuses"
    );
    assert!(unwraps <= 1, "one Decrypt unwrapped {unwraps} times");
    match result {
        Ok(plaintext) => {
            assert!(well_formed, "a malformed request decrypted");
            assert_eq!(
                plaintext.len() + header_len + crate::crypto::SEAL_OVERHEAD,
                input_len,
                "plaintext length does not match the ciphertext"
            );
        }
        Err(error) => {
            if !well_formed {
                assert!(
                    matches!(error, EnvelopeError::Format(_)),
                    "a malformed request failed with {error:?}, not a format error"
                );
            }
            let code = crate::server::errors::to_status(&error).code();
            assert!(
                matches!(
                    code,
                    tonic::Code::InvalidArgument | tonic::Code::FailedPrecondition
                ),
                "{error:?} maps to {code:?}"
            );
        }
    }
}

/// Whether `data`, a protobuf v2 (`v2` true) or v1beta1 DecryptRequest, decrypts with the
/// fuzzing provider: lets tests check that committed seeds reach the decryption.
pub fn opens(data: &[u8], v2: bool) -> bool {
    let fixture = Fixture::get();
    // Its unwraps must not land in another input's count (the corpus tests run in parallel).
    let _one_input_at_a_time = fixture.serial();
    let envelope = fixture.envelope();
    if v2 {
        let Ok(request) = crate::proto::v2::DecryptRequest::decode(data) else {
            return false;
        };
        let decrypt = envelope.decrypt(&request.ciphertext, &request.key_id, &request.annotations);
        fixture.runtime.block_on(decrypt).is_ok()
    } else {
        let Ok(request) = crate::proto::v1beta1::DecryptRequest::decode(data) else {
            return false;
        };
        fixture
            .runtime
            .block_on(envelope.decrypt_v1(&request.cipher))
            .is_ok()
    }
}

/// A v2 Decrypt request the fuzzing provider can open, as protobuf bytes, and a v1 one: seeds
/// for the corpora (written by `cargo test --test fuzz_corpus -- --ignored write_seeds`).
pub fn seed_requests() -> Vec<(&'static str, Vec<u8>)> {
    let fixture = Fixture::get();
    let _one_input_at_a_time = fixture.serial();
    let envelope = fixture.envelope();
    let plaintext = [7u8; 32];
    let sealed = fixture
        .runtime
        .block_on(envelope.encrypt(&plaintext))
        .unwrap_or_else(|error| panic!("fuzzing envelope encrypts: {error}"));
    let v2 = crate::proto::v2::DecryptRequest {
        ciphertext: sealed.ciphertext,
        uid: "fuzz".to_owned(),
        key_id: sealed.key_id.to_string(),
        annotations: (*sealed.annotations).clone(),
    };
    let blob = fixture
        .runtime
        .block_on(envelope.encrypt_v1(&plaintext))
        .unwrap_or_else(|error| panic!("fuzzing envelope encrypts: {error}"));
    let v1 = crate::proto::v1beta1::DecryptRequest {
        version: "v1beta1".to_owned(),
        cipher: blob,
    };
    vec![("v2", v2.encode_to_vec()), ("v1", v1.encode_to_vec())]
}

/// One runtime and one envelope for the whole fuzzing run; each input gets a fresh envelope (so
/// the cache never makes the outcome depend on earlier inputs) over the same provider.
struct Fixture {
    runtime: tokio::runtime::Runtime,
    provider: Arc<FuzzProvider>,
    /// Held for one whole input: the unwrap counter is shared, and the corpus replay in
    /// `cargo test` runs targets on parallel threads.
    serial: std::sync::Mutex<()>,
}

impl Fixture {
    fn get() -> &'static Self {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(|| {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap_or_else(|error| panic!("fuzzing runtime: {error}"));
            Self {
                runtime,
                provider: Arc::new(FuzzProvider::new()),
                serial: std::sync::Mutex::new(()),
            }
        })
    }

    fn envelope(&self) -> Envelope {
        let provider: Arc<dyn KeyProvider> = self.provider.clone();
        self.runtime
            .block_on(Envelope::start(
                provider,
                RotationPolicy::DEFAULT,
                NonZeroUsize::MIN,
            ))
            .unwrap_or_else(|error| panic!("fuzzing envelope starts: {error}"))
    }

    fn serial(&self) -> std::sync::MutexGuard<'_, ()> {
        self.serial
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn unwraps(&self) -> u64 {
        self.provider.unwraps.load(Ordering::Relaxed)
    }
}

/// The key_id of the fuzzing provider's only key version.
const FUZZ_KEY_ID: &str = "fuzz-key-id-0000000000000000000000000000000000000000000000000000";

/// A provider with one fixed, publicly known root key (so committed seeds stay decryptable),
/// version "1", that wraps with AES-256-GCM and counts unwraps.
struct FuzzProvider {
    root: GcmKey,
    unwraps: AtomicU64,
}

impl FuzzProvider {
    fn new() -> Self {
        let root = SecretKey::from_slice(&[0x42; crate::crypto::KEY_LEN])
            .unwrap_or_else(|| panic!("32 bytes make a key"));
        Self {
            root: root.gcm(),
            unwraps: AtomicU64::new(0),
        }
    }

    fn key() -> Result<KeyVersion, ProviderError> {
        KeyVersion::new(FUZZ_KEY_ID, "1")
    }
}

#[async_trait]
impl KeyProvider for FuzzProvider {
    fn kind(&self) -> &'static str {
        "fuzz"
    }

    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        Self::key()
    }

    async fn current_key(&self) -> Option<KeyVersion> {
        Self::key().ok()
    }

    async fn wrap(&self, _key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        let mut wrapped = Vec::new();
        self.root
            .seal_into(
                crate::crypto::Nonce::random()?,
                b"fuzz",
                kek.expose(),
                &mut wrapped,
            )
            .map_err(|error| ProviderError::Misconfigured {
                reason: error.to_string(),
            })?;
        Ok(wrapped)
    }

    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        self.unwraps.fetch_add(1, Ordering::Relaxed);
        // The envelope must have checked what it hands over.
        assert!(
            format::check_key_id(version).is_ok() && !wrapped.is_empty(),
            "unwrap called with unchecked input"
        );
        if version != "1" {
            return Err(ProviderError::UnknownKeyVersion {
                version: version.to_owned(),
            });
        }
        let unwrapped =
            self.root
                .open(b"fuzz", wrapped)
                .map_err(|_| ProviderError::UnwrapFailed {
                    version: version.to_owned(),
                })?;
        SecretKey::from_slice(&unwrapped).ok_or_else(|| ProviderError::UnwrapFailed {
            version: version.to_owned(),
        })
    }

    async fn health(&self) -> ProviderHealth {
        ProviderHealth::Ok
    }
}
