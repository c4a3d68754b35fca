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
    let well_formed = format::check_key_id(&request.key_id).is_ok()
        && format::parse_v2_ciphertext(&request.ciphertext).is_ok()
        && format::parse_annotations(&request.annotations).is_ok();
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
    let fixture = Fixture::get();
    let _one_input_at_a_time = fixture.serial();
    let unwraps = fixture.unwraps();
    let envelope = fixture.envelope();
    let result = fixture
        .runtime
        .block_on(envelope.decrypt_v1(&request.cipher));
    check_outcome(
        parsed.is_ok(),
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
