//! The envelope's revocation state machine, driven by a provider whose answers the test
//! scripts (a stand-in for the key service's verdicts only; every crypto operation goes to a
//! real local key ring underneath). The same behaviour against the Key Vault emulator is in
//! tests/.

use std::sync::Mutex;

use async_trait::async_trait;

use super::*;
use crate::provider::local::LocalKeyRing;

/// The local key ring, except that refresh, wrap and unwrap answer "revoked" while `revoked`
/// holds a reason.
struct Revocable {
    ring: LocalKeyRing,
    revoked: Mutex<Option<String>>,
}

impl Revocable {
    fn verdict(&self) -> Result<(), ProviderError> {
        match self.revoked.lock().unwrap().clone() {
            Some(reason) => Err(ProviderError::Revoked { reason }),
            None => Ok(()),
        }
    }
}

#[async_trait]
impl KeyProvider for Revocable {
    fn kind(&self) -> &'static str {
        "revocable-local"
    }
    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        self.verdict()?;
        self.ring.refresh().await
    }
    async fn current_key(&self) -> Option<KeyVersion> {
        self.ring.current_key().await
    }
    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        self.verdict()?;
        self.ring.wrap(key, kek).await
    }
    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        self.verdict()?;
        self.ring.unwrap(version, wrapped).await
    }
    async fn health(&self) -> ProviderHealth {
        ProviderHealth::Ok
    }
}

#[tokio::test]
async fn revocation_refuses_everything_drops_the_cache_and_recovery_serves_again() {
    let temp = tempfile::tempdir().unwrap();
    let provider = Arc::new(Revocable {
        ring: LocalKeyRing::open_or_create(&temp.path().join("keys")).unwrap(),
        revoked: Mutex::new(None),
    });
    let envelope = Envelope::start(
        provider.clone(),
        RotationPolicy::DEFAULT,
        NonZeroUsize::new(8).unwrap(),
    )
    .await
    .unwrap();
    let sealed = envelope.encrypt(b"seed").await.unwrap();
    assert_eq!(envelope.snapshot().await.cached_keks, 1);

    *provider.revoked.lock().unwrap() = Some("key kms/3 is disabled".into());
    assert!(envelope.refresh().await.is_err());
    let health = envelope.health().await;
    assert_eq!(health.healthz, "key revoked: key kms/3 is disabled");
    assert_eq!(*health.key_id, *sealed.key_id, "Status still names the key");
    assert_eq!(
        envelope.snapshot().await.cached_keks,
        0,
        "cached KEKs are dropped"
    );
    let refused = envelope.encrypt(b"seed").await.unwrap_err();
    assert!(matches!(
        refused,
        EnvelopeError::Provider(ProviderError::Revoked { .. })
    ));
    let refused = envelope
        .decrypt(&sealed.ciphertext, &sealed.key_id, &sealed.annotations)
        .await;
    assert!(matches!(
        refused,
        Err(EnvelopeError::Provider(ProviderError::Revoked { .. }))
    ));

    *provider.revoked.lock().unwrap() = None;
    envelope.refresh().await.unwrap();
    assert_eq!(envelope.health().await.healthz, "ok");
    let opened = envelope
        .decrypt(&sealed.ciphertext, &sealed.key_id, &sealed.annotations)
        .await
        .unwrap();
    assert_eq!(opened.as_slice(), b"seed");
    let resealed = envelope.encrypt(b"again").await.unwrap();
    assert_eq!(resealed.key_id, sealed.key_id);
    assert_ne!(
        resealed.annotations, sealed.annotations,
        "a fresh KEK after recovery"
    );
}

#[tokio::test]
async fn a_transient_refresh_failure_keeps_serving_from_the_cache() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("keys");
    let ring = LocalKeyRing::open_or_create(&dir).unwrap();
    let envelope = Envelope::start(
        Arc::new(ring),
        RotationPolicy::DEFAULT,
        NonZeroUsize::new(8).unwrap(),
    )
    .await
    .unwrap();
    let sealed = envelope.encrypt(b"seed").await.unwrap();
    // An unreadable key ring is a failed refresh, not a revocation.
    std::fs::write(dir.join("v9.key"), b"garbage").unwrap();
    assert!(envelope.refresh().await.is_err());
    assert_eq!(envelope.health().await.healthz, "ok");
    assert_eq!(envelope.snapshot().await.refresh.consecutive_failures, 1);
    envelope
        .decrypt(&sealed.ciphertext, &sealed.key_id, &sealed.annotations)
        .await
        .unwrap();
    envelope.encrypt(b"more").await.unwrap();
}

/// The local key ring, except that refresh answers "revoked" while `expired` is set — and
/// unwrap still works, as Key Vault's does for an expired key — counting unwraps.
struct ExpiresButUnwraps {
    ring: LocalKeyRing,
    expired: std::sync::atomic::AtomicBool,
    unwraps: std::sync::atomic::AtomicU32,
}

#[async_trait]
impl KeyProvider for ExpiresButUnwraps {
    fn kind(&self) -> &'static str {
        "expiring-local"
    }
    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        if self.expired.load(Ordering::SeqCst) {
            return Err(ProviderError::Revoked {
                reason: "key kms/3 expired".into(),
            });
        }
        self.ring.refresh().await
    }
    async fn current_key(&self) -> Option<KeyVersion> {
        self.ring.current_key().await
    }
    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        self.ring.wrap(key, kek).await
    }
    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        self.unwraps.fetch_add(1, Ordering::SeqCst);
        self.ring.unwrap(version, wrapped).await
    }
    async fn health(&self) -> ProviderHealth {
        ProviderHealth::Ok
    }
}

/// Regression: a Decrypt refused for revocation still unwrapped its KEK through the provider
/// (a remote call per refused request, and the KEK cached again after the cache was dropped).
/// Found by tests/fault_matrix.rs (key expired: Key Vault still unwraps).
#[tokio::test]
async fn a_refused_decrypt_makes_no_unwrap_and_caches_nothing() {
    let temp = tempfile::tempdir().unwrap();
    let provider = Arc::new(ExpiresButUnwraps {
        ring: LocalKeyRing::open_or_create(&temp.path().join("keys")).unwrap(),
        expired: false.into(),
        unwraps: 0.into(),
    });
    let envelope = Envelope::start(
        provider.clone(),
        RotationPolicy::DEFAULT,
        NonZeroUsize::new(8).unwrap(),
    )
    .await
    .unwrap();
    let sealed = envelope.encrypt(b"seed").await.unwrap();
    let blob = envelope.encrypt_v1(b"seed").await.unwrap();
    provider.expired.store(true, Ordering::SeqCst);
    assert!(envelope.refresh().await.is_err());
    for _ in 0..3 {
        let refused = envelope
            .decrypt(&sealed.ciphertext, &sealed.key_id, &sealed.annotations)
            .await;
        assert!(matches!(
            refused,
            Err(EnvelopeError::Provider(ProviderError::Revoked { .. }))
        ));
        let refused = envelope.decrypt_v1(&blob).await;
        assert!(matches!(
            refused,
            Err(EnvelopeError::Provider(ProviderError::Revoked { .. }))
        ));
    }
    assert_eq!(provider.unwraps.load(Ordering::SeqCst), 0, "no unwrap");
    assert_eq!(envelope.snapshot().await.cached_keks, 0, "nothing cached");
}

/// Regression: when a spent KEK's rotation was refused as revoked, the Encrypts queued behind
/// that rotation sealed under a placeholder KEK that was never wrapped (annotation `revoked`):
/// they returned OK with ciphertext nobody can ever decrypt. Every Encrypt that returns OK,
/// however it interleaves with revocations and recoveries, must decrypt — here and in a fresh
/// plugin over the same key ring.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_encrypt_that_succeeds_across_revocations_decrypts() {
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("keys");
    let provider = Arc::new(Revocable {
        ring: LocalKeyRing::open_or_create(&dir).unwrap(),
        revoked: Mutex::new(None),
    });
    // Every Encrypt needs a fresh KEK, so every Encrypt meets the wrap.
    let policy = RotationPolicy {
        max_encryptions: 1,
        max_age: std::time::Duration::from_secs(3600),
    };
    let envelope = Arc::new(
        Envelope::start(provider.clone(), policy, NonZeroUsize::new(4096).unwrap())
            .await
            .unwrap(),
    );
    let stop = Arc::new(AtomicBool::new(false));
    let attempts = Arc::new(AtomicU64::new(0));
    let mut clients = Vec::new();
    for client in 0..32u32 {
        let envelope = Arc::clone(&envelope);
        let stop = Arc::clone(&stop);
        let attempts = Arc::clone(&attempts);
        clients.push(tokio::spawn(async move {
            let (mut v2, mut v1) = (Vec::new(), Vec::new());
            let mut request = 0u32;
            while !stop.load(Ordering::Acquire) {
                request += 1;
                let plaintext = format!("{client}/{request}").into_bytes();
                if request.is_multiple_of(2) {
                    if let Ok(sealed) = envelope.encrypt(&plaintext).await {
                        v2.push((plaintext, sealed));
                    }
                } else if let Ok(blob) = envelope.encrypt_v1(&plaintext).await {
                    v1.push((plaintext, blob));
                }
                attempts.fetch_add(1, Ordering::AcqRel);
                tokio::task::yield_now().await;
            }
            (v2, v1)
        }));
    }
    // Every phase lasts until the clients have made another 64 Encrypts in it.
    let phase = || async {
        let target = attempts.load(Ordering::Acquire) + 64;
        while attempts.load(Ordering::Acquire) < target {
            tokio::task::yield_now().await;
        }
    };
    for round in 0..6 {
        phase().await;
        *provider.revoked.lock().unwrap() = Some(format!("key disabled (round {round})"));
        let _ = envelope.refresh().await;
        phase().await;
        *provider.revoked.lock().unwrap() = None;
        envelope.refresh().await.unwrap();
    }
    phase().await;
    stop.store(true, Ordering::Release);
    let (mut v2, mut v1) = (Vec::new(), Vec::new());
    for client in clients {
        let (sealed, blobs) = client.await.unwrap();
        v2.extend(sealed);
        v1.extend(blobs);
    }
    assert!(
        !v2.is_empty() && !v1.is_empty(),
        "the clients encrypted throughout: {} v2, {} v1",
        v2.len(),
        v1.len()
    );

    let fresh = Envelope::start(
        Arc::new(LocalKeyRing::open_or_create(&dir).unwrap()),
        RotationPolicy::DEFAULT,
        NonZeroUsize::new(8).unwrap(),
    )
    .await
    .unwrap();
    for plugin in [envelope.as_ref(), &fresh] {
        for (plaintext, sealed) in &v2 {
            let opened = plugin
                .decrypt(&sealed.ciphertext, &sealed.key_id, &sealed.annotations)
                .await
                .unwrap_or_else(|error| panic!("a v2 Encrypt that returned OK: {error}"));
            assert_eq!(opened.as_slice(), plaintext.as_slice());
        }
        for (plaintext, blob) in &v1 {
            let opened = plugin
                .decrypt_v1(blob)
                .await
                .unwrap_or_else(|error| panic!("a v1 Encrypt that returned OK: {error}"));
            assert_eq!(opened.as_slice(), plaintext.as_slice());
        }
    }
}

/// The age limit holds without the refresher and without a clock read per Encrypt: the KEK's
/// timer marks it expired, and the next Encrypt wraps a fresh KEK.
#[tokio::test(start_paused = true)]
async fn a_kek_past_its_age_is_replaced_by_the_next_encrypt() {
    let temp = tempfile::tempdir().unwrap();
    let envelope = Envelope::start(
        Arc::new(LocalKeyRing::open_or_create(&temp.path().join("keys")).unwrap()),
        RotationPolicy {
            max_encryptions: 1000,
            max_age: std::time::Duration::from_secs(60),
        },
        NonZeroUsize::new(8).unwrap(),
    )
    .await
    .unwrap();
    let first = envelope.encrypt(b"seed").await.unwrap();
    tokio::time::advance(std::time::Duration::from_secs(59)).await;
    let same = envelope.encrypt(b"seed").await.unwrap();
    assert_eq!(same.annotations, first.annotations, "not yet");
    tokio::time::advance(std::time::Duration::from_secs(2)).await;
    tokio::task::yield_now().await;
    let fresh = envelope.encrypt(b"seed").await.unwrap();
    assert_ne!(
        fresh.annotations, first.annotations,
        "a fresh KEK after the age"
    );
    assert_eq!(envelope.snapshot().await.rotations_spent, 1);
    for sealed in [&first, &same, &fresh] {
        let opened = envelope
            .decrypt(&sealed.ciphertext, &sealed.key_id, &sealed.annotations)
            .await
            .unwrap();
        assert_eq!(opened.as_slice(), b"seed");
    }
}

/// The local key ring, plus a stand-in for Key Vault `decrypt` of Go plugin records: it
/// "decrypts" an RSA ciphertext of 256 bytes to the bytes its first byte names, knows one
/// key_id, and counts its calls.
struct LegacyReader {
    ring: LocalKeyRing,
    decrypts: std::sync::atomic::AtomicU32,
    /// Key Vault cannot be reached.
    unreachable: std::sync::atomic::AtomicBool,
}

#[async_trait]
impl KeyProvider for LegacyReader {
    fn kind(&self) -> &'static str {
        "legacy-reader"
    }
    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        self.ring.refresh().await
    }
    async fn current_key(&self) -> Option<KeyVersion> {
        self.ring.current_key().await
    }
    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        self.ring.wrap(key, kek).await
    }
    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        self.ring.unwrap(version, wrapped).await
    }
    async fn decrypt_legacy(
        &self,
        record: &LegacyCiphertext,
    ) -> Result<Zeroizing<Vec<u8>>, ProviderError> {
        self.check_legacy(record)?;
        self.decrypts.fetch_add(1, Ordering::SeqCst);
        if self.unreachable.load(Ordering::SeqCst) {
            return Err(ProviderError::Unavailable {
                operation: "decrypt".into(),
                source: Arc::new(std::io::Error::other("unreachable")),
            });
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        let dek = vec![record.rsa[0]; 32];
        let remote = match record.layout {
            crate::provider::LegacyLayout::Base64Url => Zeroizing::new(dek),
            crate::provider::LegacyLayout::Raw => {
                Zeroizing::new(legacy::encode_base64url(&dek).as_bytes().to_vec())
            }
        };
        record
            .plaintext_from(&remote)
            .ok_or(ProviderError::UnwrapFailed {
                version: "1".into(),
            })
    }
    fn check_legacy(&self, record: &LegacyCiphertext) -> Result<(), ProviderError> {
        match record.key_id.as_deref() {
            None | Some("go-key-id") => Ok(()),
            Some(other) => Err(ProviderError::UnknownKeyVersion {
                version: other.into(),
            }),
        }
    }
    async fn health(&self) -> ProviderHealth {
        ProviderHealth::Ok
    }
}

/// A [`LegacyReader`] over a fresh key ring in `dir` (Key Vault `unreachable` or not), and an
/// envelope on it.
async fn legacy_reader(dir: &std::path::Path, unreachable: bool) -> (Arc<LegacyReader>, Envelope) {
    let provider = Arc::new(LegacyReader {
        ring: LocalKeyRing::open_or_create(&dir.join("keys")).unwrap(),
        decrypts: std::sync::atomic::AtomicU32::new(0),
        unreachable: std::sync::atomic::AtomicBool::new(unreachable),
    });
    let envelope = Envelope::start(
        provider.clone(),
        RotationPolicy::DEFAULT,
        NonZeroUsize::new(8).unwrap(),
    )
    .await
    .unwrap();
    (provider, envelope)
}

fn go_annotations() -> HashMap<String, Vec<u8>> {
    HashMap::from([
        (legacy::VERSION_ANNOTATION.to_owned(), b"1".to_vec()),
        (
            legacy::ALGORITHM_ANNOTATION.to_owned(),
            b"RSA-OAEP-256".to_vec(),
        ),
    ])
}

#[tokio::test]
async fn go_plugin_records_are_read_once_and_then_from_the_cache() {
    let temp = tempfile::tempdir().unwrap();
    let (provider, envelope) = legacy_reader(temp.path(), false).await;
    let envelope = Arc::new(envelope);
    let raw = vec![0xc1; 256];
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let envelope = Arc::clone(&envelope);
        let raw = raw.clone();
        tasks.push(tokio::spawn(async move {
            envelope
                .decrypt(&raw, "go-key-id", &go_annotations())
                .await
                .map(|p| p.to_vec())
        }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap(), vec![0xc1; 32]);
    }
    assert_eq!(provider.decrypts.load(Ordering::SeqCst), 1, "single flight");
    let again = envelope
        .decrypt(&raw, "go-key-id", &go_annotations())
        .await
        .unwrap();
    assert_eq!(*again, vec![0xc1; 32]);
    assert_eq!(provider.decrypts.load(Ordering::SeqCst), 1, "cached");

    // v1, both layouts.
    let older = legacy::encode_base64url(&[0xc2; 256]);
    assert_eq!(
        *envelope.decrypt_v1(older.as_bytes()).await.unwrap(),
        vec![0xc2; 32]
    );
    assert_eq!(
        *envelope.decrypt_v1(&[0xc3; 256]).await.unwrap(),
        vec![0xc3; 32]
    );
    assert_eq!(provider.decrypts.load(Ordering::SeqCst), 3);

    // An unknown key_id: refused before any call.
    let refused = envelope
        .decrypt(&raw, "someone-else", &go_annotations())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            EnvelopeError::Provider(ProviderError::UnknownKeyVersion { .. })
        ),
        "{refused}"
    );
    assert_eq!(provider.decrypts.load(Ordering::SeqCst), 3);

    // kube-kms's own records still read, v2 and v1.
    let sealed = envelope.encrypt(b"seed").await.unwrap();
    let opened = envelope
        .decrypt(&sealed.ciphertext, &sealed.key_id, &sealed.annotations)
        .await
        .unwrap();
    assert_eq!(*opened, b"seed");
    let blob = envelope.encrypt_v1(b"dek").await.unwrap();
    assert_eq!(*envelope.decrypt_v1(&blob).await.unwrap(), b"dek");
    assert_eq!(envelope.legacy_cache_stats().unwraps, 3);

    // The same RSA bytes in the other layout are another record, checked its own way: never
    // answered from the first one's cache entry.
    assert_eq!(
        *envelope.decrypt_v1(&[0xc2; 256]).await.unwrap(),
        vec![0xc2; 32]
    );
    assert_eq!(provider.decrypts.load(Ordering::SeqCst), 4);
}

/// A v1 blob that is both kube-kms's and a Go plugin's shape, which kube-kms's reading refuses
/// while Key Vault cannot be reached: the answer is that Key Vault is unavailable (worth a
/// retry), not kube-kms's refusal.
#[tokio::test]
async fn an_ambiguous_v1_blob_reports_the_key_service_outage_over_its_own_refusal() {
    let temp = tempfile::tempdir().unwrap();
    let (provider, envelope) = legacy_reader(temp.path(), true).await;
    let overhead = envelope.encrypt_v1(b"x").await.unwrap().len() - 1;
    let mut blob = envelope.encrypt_v1(&vec![7; 256 - overhead]).await.unwrap();
    assert_eq!(blob.len(), 256, "a raw RSA-2048 ciphertext's length");
    assert!(matches!(
        legacy::classify_v1(&blob),
        Ok(legacy::V1Kind::Ambiguous(_))
    ));
    *blob.last_mut().unwrap() ^= 1;
    let error = envelope.decrypt_v1(&blob).await.unwrap_err();
    assert!(
        matches!(
            error,
            EnvelopeError::Provider(ProviderError::Unavailable { .. })
        ),
        "{error:?}"
    );
    assert_eq!(provider.decrypts.load(Ordering::SeqCst), 1);

    // Once Key Vault answers, the Go plugin's reading is taken (the stand-in decrypts any 256
    // bytes to 32 copies of the first).
    provider.unreachable.store(false, Ordering::SeqCst);
    assert_eq!(
        *envelope.decrypt_v1(&blob).await.unwrap(),
        vec![blob[0]; 32]
    );
}

#[tokio::test]
async fn providers_other_than_azure_refuse_go_plugin_records_without_a_call() {
    let temp = tempfile::tempdir().unwrap();
    let ring = Arc::new(LocalKeyRing::open_or_create(&temp.path().join("keys")).unwrap());
    let envelope = Envelope::start(ring, RotationPolicy::DEFAULT, NonZeroUsize::new(8).unwrap())
        .await
        .unwrap();
    let refused = envelope
        .decrypt(&[0xc1; 256], "go-key-id", &go_annotations())
        .await
        .unwrap_err();
    assert!(
        matches!(
            refused,
            EnvelopeError::Provider(ProviderError::Misconfigured { .. })
        ),
        "{refused}"
    );
    assert!(refused.to_string().contains("Go KMS plugin"), "{refused}");
}
