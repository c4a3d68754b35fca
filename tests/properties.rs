//! Properties of the envelope, checked on generated inputs: every plaintext round-trips, and
//! any mutation of ciphertext, annotations or key_id fails cleanly (an error, never a panic,
//! never a wrong plaintext).

mod util;

use std::collections::HashMap;
use std::num::NonZeroUsize;
use std::sync::OnceLock;

use kube_kms::crypto::SEAL_OVERHEAD;
use kube_kms::envelope::format::{
    self, KEY_VERSION_ANNOTATION, MAX_V2_CIPHERTEXT_LEN, MAX_WRAPPED_KEK_LEN, V2_CIPHERTEXT_FORMAT,
    WRAPPED_KEK_ANNOTATION,
};
use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::envelope::{Envelope, EnvelopeError};
use kube_kms::provider::{MAX_KEY_ID_LEN, MAX_KEY_VERSION_LEN, ProviderError};
use proptest::prelude::*;

struct Fixture {
    runtime: tokio::runtime::Runtime,
    envelope: Envelope,
    _dir: tempfile::TempDir,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let dir = util::short_tempdir();
        let provider = util::key_ring(&dir.path().join("keys"));
        let envelope = runtime
            .block_on(Envelope::start(
                provider,
                RotationPolicy::DEFAULT,
                NonZeroUsize::new(16).expect("non-zero"),
            ))
            .expect("envelope");
        Fixture {
            runtime,
            envelope,
            _dir: dir,
        }
    })
}

/// One mutation of a Decrypt request.
#[derive(Debug, Clone)]
enum Mutation {
    FlipCiphertextBit(usize),
    TruncateCiphertext(usize),
    ExtendCiphertext(Vec<u8>),
    FlipWrappedBit(usize),
    ReplaceVersion(String),
    ReplaceKeyId(String),
    DropAnnotation(bool),
    AddAnnotation(String, Vec<u8>),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        any::<usize>().prop_map(Mutation::FlipCiphertextBit),
        any::<usize>().prop_map(Mutation::TruncateCiphertext),
        proptest::collection::vec(any::<u8>(), 1..64).prop_map(Mutation::ExtendCiphertext),
        any::<usize>().prop_map(Mutation::FlipWrappedBit),
        "[ -~]{0,300}".prop_map(Mutation::ReplaceVersion),
        "[ -~]{0,1100}".prop_map(Mutation::ReplaceKeyId),
        any::<bool>().prop_map(Mutation::DropAnnotation),
        (
            "[a-zA-Z0-9./_-]{0,80}",
            proptest::collection::vec(any::<u8>(), 0..64)
        )
            .prop_map(|(k, v)| Mutation::AddAnnotation(k, v)),
    ]
}

struct Request {
    ciphertext: Vec<u8>,
    key_id: String,
    annotations: HashMap<String, Vec<u8>>,
}

/// Applies `mutation`; returns false when it happens to change nothing that matters.
fn apply(mutation: &Mutation, request: &mut Request) -> bool {
    match mutation {
        Mutation::FlipCiphertextBit(bit) => {
            let bit = bit % (request.ciphertext.len() * 8);
            request.ciphertext[bit / 8] ^= 1 << (bit % 8);
        }
        Mutation::TruncateCiphertext(len) => {
            request.ciphertext.truncate(len % request.ciphertext.len());
        }
        Mutation::ExtendCiphertext(extra) => request.ciphertext.extend_from_slice(extra),
        Mutation::FlipWrappedBit(bit) => {
            let wrapped = request
                .annotations
                .get_mut(WRAPPED_KEK_ANNOTATION)
                .expect("present");
            let bit = bit % (wrapped.len() * 8);
            wrapped[bit / 8] ^= 1 << (bit % 8);
        }
        Mutation::ReplaceVersion(version) => {
            let old = request
                .annotations
                .insert(KEY_VERSION_ANNOTATION.into(), version.clone().into_bytes());
            return old.as_deref() != Some(version.as_bytes());
        }
        Mutation::ReplaceKeyId(key_id) => {
            return std::mem::replace(&mut request.key_id, key_id.clone()) != *key_id;
        }
        Mutation::DropAnnotation(wrapped) => {
            let key = if *wrapped {
                WRAPPED_KEK_ANNOTATION
            } else {
                KEY_VERSION_ANNOTATION
            };
            request.annotations.remove(key);
        }
        Mutation::AddAnnotation(key, value) => {
            // An extra annotation changes nothing that matters if it is well formed.
            let old = request.annotations.insert(key.clone(), value.clone());
            return (key == WRAPPED_KEK_ANNOTATION || key == KEY_VERSION_ANNOTATION)
                && old.as_ref() != Some(value);
        }
    }
    true
}

/// How a Decrypt of a mutated request must be refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Refusal {
    /// The bytes break the format (InvalidArgument), found before any KEK is looked up.
    Format,
    /// The KEK the annotations name cannot be unwrapped: the wrapped bytes or the version were
    /// changed, so the provider refuses (UnwrapFailed) or does not know the version.
    Unwrap,
    /// Everything parses and the KEK unwraps, but the AEAD open fails.
    Authentication,
}

/// The refusal `mutation` must cause, from the rules of docs/format.md written out here rather
/// than by calling the parser under test: key_id 1..=1024 bytes; ciphertext ≤ 1024 bytes,
/// format byte 0x01 and room for nonce and tag; both annotations present, the version 1..=256
/// printable ASCII bytes, the wrapped KEK 1..=2048 bytes.
fn expected_refusal(mutation: &Mutation, request: &Request) -> Refusal {
    let key_id_ok = (1..=MAX_KEY_ID_LEN).contains(&request.key_id.len());
    let ciphertext_ok = request.ciphertext.len() <= MAX_V2_CIPHERTEXT_LEN
        && request.ciphertext.len() > 1 + SEAL_OVERHEAD
        && request.ciphertext[0] == V2_CIPHERTEXT_FORMAT;
    let version_ok = request
        .annotations
        .get(KEY_VERSION_ANNOTATION)
        .is_some_and(|version| {
            (1..=MAX_KEY_VERSION_LEN).contains(&version.len())
                && version.iter().all(u8::is_ascii_graphic)
        });
    let wrapped_ok = request
        .annotations
        .get(WRAPPED_KEK_ANNOTATION)
        .is_some_and(|wrapped| (1..=MAX_WRAPPED_KEK_LEN).contains(&wrapped.len()));
    if !(key_id_ok && ciphertext_ok && version_ok && wrapped_ok) {
        return Refusal::Format;
    }
    match mutation {
        Mutation::FlipWrappedBit(_) | Mutation::ReplaceVersion(_) | Mutation::AddAnnotation(..) => {
            Refusal::Unwrap
        }
        _ => Refusal::Authentication,
    }
}

/// Which [`Refusal`] `error` is, if it is one of them.
fn refusal_of(error: &EnvelopeError) -> Option<Refusal> {
    match error {
        EnvelopeError::Format(_) => Some(Refusal::Format),
        EnvelopeError::Provider(
            ProviderError::UnwrapFailed { .. } | ProviderError::UnknownKeyVersion { .. },
        ) => Some(Refusal::Unwrap),
        EnvelopeError::Authentication => Some(Refusal::Authentication),
        EnvelopeError::Provider(_) => None,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn every_plaintext_round_trips(plaintext in proptest::collection::vec(any::<u8>(), 1..=995)) {
        let fixture = fixture();
        let sealed = fixture.runtime.block_on(fixture.envelope.encrypt(&plaintext)).unwrap();
        prop_assert!(sealed.ciphertext.len() <= 1024);
        let opened = fixture
            .runtime
            .block_on(fixture.envelope.decrypt(&sealed.ciphertext, &sealed.key_id, &sealed.annotations))
            .unwrap();
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());

        let blob = fixture.runtime.block_on(fixture.envelope.encrypt_v1(&plaintext)).unwrap();
        let opened = fixture.runtime.block_on(fixture.envelope.decrypt_v1(&blob)).unwrap();
        prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
    }

    #[test]
    fn any_mutation_fails_cleanly(plaintext in proptest::collection::vec(any::<u8>(), 1..64), mutation in mutation()) {
        let fixture = fixture();
        let sealed = fixture.runtime.block_on(fixture.envelope.encrypt(&plaintext)).unwrap();
        let mut request = Request {
            ciphertext: sealed.ciphertext,
            key_id: sealed.key_id.to_string(),
            annotations: (*sealed.annotations).clone(),
        };
        let matters = apply(&mutation, &mut request);
        let result = fixture.runtime.block_on(fixture.envelope.decrypt(
            &request.ciphertext,
            &request.key_id,
            &request.annotations,
        ));
        if matters {
            let error = result.expect_err("a mutated request must not decrypt");
            let expected = expected_refusal(&mutation, &request);
            prop_assert_eq!(refusal_of(&error), Some(expected), "{}", error);
        } else if let Ok(opened) = result {
            prop_assert_eq!(opened.as_slice(), plaintext.as_slice());
        }
    }

    #[test]
    fn any_mutation_of_a_v1_blob_fails_cleanly(
        plaintext in proptest::collection::vec(any::<u8>(), 1..64),
        bit in any::<usize>(),
        cut in any::<usize>(),
    ) {
        let fixture = fixture();
        let blob = fixture.runtime.block_on(fixture.envelope.encrypt_v1(&plaintext)).unwrap();
        let mut flipped = blob.clone();
        let bit = bit % (flipped.len() * 8);
        flipped[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(fixture.runtime.block_on(fixture.envelope.decrypt_v1(&flipped)).is_err());
        let truncated = &blob[..cut % blob.len()];
        prop_assert!(fixture.runtime.block_on(fixture.envelope.decrypt_v1(truncated)).is_err());
    }
}

/// Seals `count` plaintexts at once, v2 and v1 Encrypts in turn, on an envelope whose KEKs may
/// seal `budget` times each, and returns how many ciphertexts each KEK (named by its wrapped
/// form: a v2 ciphertext's annotation, or the header of a v1 blob) sealed. Checks on the way
/// that each KEK's nonces are one fixed field followed by the invocations 0, 1, … each once.
fn seals_per_kek(budget: u64, count: usize) -> HashMap<Vec<u8>, u64> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let dir = util::short_tempdir();
    let provider = util::key_ring(&dir.path().join("keys"));
    let policy = RotationPolicy {
        max_encryptions: budget,
        ..RotationPolicy::DEFAULT
    };
    runtime.block_on(async {
        let envelope = std::sync::Arc::new(
            Envelope::start(provider, policy, NonZeroUsize::new(16).expect("non-zero"))
                .await
                .expect("envelope"),
        );
        let tasks: Vec<_> = (0..count)
            .map(|i| {
                let envelope = std::sync::Arc::clone(&envelope);
                tokio::spawn(async move {
                    if i % 2 == 0 {
                        let sealed = envelope.encrypt(&[1; 32]).await.expect("v2 encrypt");
                        let nonce: [u8; 12] = sealed.ciphertext[1..13].try_into().expect("12");
                        (sealed.annotations[WRAPPED_KEK_ANNOTATION].clone(), nonce)
                    } else {
                        let blob = envelope.encrypt_v1(&[1; 32]).await.expect("v1 encrypt");
                        let parsed = format::parse_v1_blob(&blob).expect("a v1 blob");
                        let nonce: [u8; 12] = parsed.sealed[..12].try_into().expect("12");
                        (parsed.kek.wrapped.to_vec(), nonce)
                    }
                })
            })
            .collect();
        let mut nonces: HashMap<Vec<u8>, Vec<[u8; 12]>> = HashMap::new();
        for task in tasks {
            let (kek, nonce) = task.await.expect("task");
            nonces.entry(kek).or_default().push(nonce);
        }
        for sealed in nonces.values_mut() {
            sealed.sort();
            let fixed = &sealed[0][..4];
            for (invocation, nonce) in sealed.iter().enumerate() {
                assert_eq!(&nonce[..4], fixed, "one fixed field per KEK");
                assert_eq!(
                    nonce[4..],
                    (invocation as u64).to_be_bytes(),
                    "0, 1, … each once"
                );
            }
        }
        nonces
            .into_iter()
            .map(|(kek, sealed)| (kek, sealed.len() as u64))
            .collect()
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The encryption budget is enforced, not advisory: however Encrypts interleave on worker
    /// threads, no KEK seals more than its budget (v1 and v2 together).
    #[test]
    fn no_kek_seals_more_than_its_budget(budget in 1u64..8, count in 1usize..64) {
        let per_kek = seals_per_kek(budget, count);
        for (kek, seals) in &per_kek {
            prop_assert!(*seals <= budget, "a KEK ({} bytes wrapped) sealed {seals} > {budget}", kek.len());
        }
        prop_assert_eq!(per_kek.values().sum::<u64>(), count as u64);
    }
}

#[test]
fn the_budget_holds_across_threads_on_one_kek_and_no_nonce_repeats() {
    use kube_kms::crypto::SecretKey;
    use kube_kms::envelope::kek::{ActiveKek, Kek};
    use kube_kms::provider::KeyVersion;
    let policy = RotationPolicy {
        max_encryptions: 1000,
        ..RotationPolicy::DEFAULT
    };
    let active = ActiveKek::new(
        KeyVersion::new("id", "1").expect("key version"),
        std::sync::Arc::new(Kek::new(SecretKey::generate().expect("key"))),
        &[1],
        &policy,
    )
    .expect("the OS RNG works");
    let granted = std::sync::Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..8 {
            scope.spawn(|| {
                for _ in 0..500 {
                    if let Some(nonce) = active.next_nonce() {
                        granted.lock().expect("lock").push(*nonce.bytes());
                    }
                }
            });
        }
    });
    let granted = granted.into_inner().expect("lock");
    assert_eq!(granted.len(), 1000, "exactly the budget, never more");
    let distinct: std::collections::HashSet<_> = granted.iter().collect();
    assert_eq!(distinct.len(), 1000, "a nonce was handed out twice");
}

/// Regression: with a tiny budget, Encrypts that waited for a rotation found the fresh KEK spent
/// by the others and failed ("a fresh KEK was refused by the rotation policy") instead of
/// rotating again. Found by `no_kek_seals_more_than_its_budget` (budget 2, 24 Encrypts).
#[test]
fn concurrent_encrypts_on_a_spent_kek_rotate_again_instead_of_failing() {
    for (budget, count) in [(1, 64), (2, 24), (3, 63)] {
        let per_kek = seals_per_kek(budget, count);
        assert!(per_kek.values().all(|seals| *seals <= budget));
        assert_eq!(per_kek.values().sum::<u64>(), count as u64);
    }
}
