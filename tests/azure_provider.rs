//! The Azure Key Vault / Managed HSM provider against the keyvault-emulator, through
//! Microsoft's Rust SDK over HTTPS (the emulator's CA given with `azure.ca_file`): round trips
//! through the plugin's socket on RSA 2048/3072/4096 and Managed HSM keys, read back by
//! Microsoft's Python SDK; remote calls only when a local KEK is made; rotation in the vault;
//! the deadline and retries under throttling, 5xx, dropped connections and latency; revocation
//! and recovery; start-up checks that say what is wrong.
//!
//! Elapsed-time assertions bound a hang (deadline + slack), they are not speed tests. The Python
//! check fails — never skips — when python3 or the SDK is missing.

mod azure_support;
mod util;

use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use azure_access::auth::AzureEnv;
use azure_support::TestVault;
use keyvault_emulator::{Fault, FaultRule, KeyOp, KeySpec, Operation, Permission};
use kube_kms::crypto::SecretKey;
use kube_kms::envelope::EnvelopeError;
use kube_kms::envelope::format::{KEY_VERSION_ANNOTATION, WRAPPED_KEK_ANNOTATION};
use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::proto::v2::{DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest};
use kube_kms::provider::azure::key_id::KeyRef;
use kube_kms::provider::azure::{
    AzureKeyVaultProvider, DecryptOnlyKey, KeyVersionChoice, random_version,
};
use kube_kms::provider::{KeyProvider, ProviderError, ProviderHealth};
use kube_kms::server::errors::to_status;
use sha2::{Digest, Sha256};
use tonic::Code;

/// How far past the deadline a failed call may end: scheduling and a TLS teardown, not a retry.
const SLACK: Duration = Duration::from_millis(750);

fn kek() -> SecretKey {
    SecretKey::generate().expect("the OS RNG works")
}

/// The key_id kube-apiserver must see for `kid`, computed here independently.
fn expected_key_id(kid: &str) -> String {
    hex::encode(Sha256::digest(kid.as_bytes()))
}

async fn plugin_on(
    provider: Arc<AzureKeyVaultProvider>,
    policy: RotationPolicy,
) -> util::TestPlugin {
    let dir = util::short_tempdir();
    let unused = dir.path().join("unused-key-dir");
    util::TestPlugin::start_on(dir, unused, provider, policy).await
}

async fn encrypt(plugin: &util::TestPlugin, plaintext: &[u8]) -> EncryptResponse {
    plugin
        .v2()
        .await
        .encrypt(EncryptRequest {
            plaintext: plaintext.to_vec(),
            uid: "azure".into(),
        })
        .await
        .expect("encrypt")
        .into_inner()
}

fn decrypt_request(encrypted: &EncryptResponse) -> DecryptRequest {
    DecryptRequest {
        ciphertext: encrypted.ciphertext.clone(),
        uid: "azure".into(),
        key_id: encrypted.key_id.to_string(),
        annotations: (*encrypted.annotations).clone(),
    }
}

async fn decrypt(plugin: &util::TestPlugin, encrypted: &EncryptResponse) -> Vec<u8> {
    plugin
        .v2()
        .await
        .decrypt(decrypt_request(encrypted))
        .await
        .expect("decrypt")
        .into_inner()
        .plaintext
}

/// Asks Microsoft's Python SDK to unwrap each case's wrapped KEK at the emulator and open the
/// ciphertext with it (tests/python/unwrap_with_sdk.py).
async fn python_reads(cases: &[serde_json::Value], ca_bundle: &Path) {
    let stdout =
        azure_support::python::run_sdk_script("unwrap_with_sdk.py", &cases.into(), ca_bundle).await;
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count(),
        cases.len(),
        "{stdout}"
    );
}

/// A round trip through the socket, checked against the vault's kid; returns the case for the
/// Python check.
async fn round_trip(vault: &TestVault, algorithm: &str) -> serde_json::Value {
    let provider = vault.provider().await;
    let plugin = plugin_on(provider, RotationPolicy::DEFAULT).await;
    let expected = expected_key_id(&vault.first.kid);

    let status = plugin
        .v2()
        .await
        .status(StatusRequest {})
        .await
        .expect("status");
    let status = status.into_inner();
    assert_eq!(
        (status.healthz.as_str(), status.key_id.as_str()),
        ("ok", expected.as_str())
    );

    let plaintext = b"a DEK seed from kube-apiserver".to_vec();
    let encrypted = encrypt(&plugin, &plaintext).await;
    assert_eq!(*encrypted.key_id, expected);
    assert_eq!(
        encrypted
            .annotations
            .get(KEY_VERSION_ANNOTATION)
            .map(Vec::as_slice),
        Some(vault.first.version.as_bytes()),
        "the annotation names Key Vault's version"
    );
    assert_eq!(decrypt(&plugin, &encrypted).await, plaintext);

    // Another replica with an empty cache unwraps through the vault.
    let replica = plugin_on(vault.provider().await, RotationPolicy::DEFAULT).await;
    let (_, unwraps_before) = vault.crypto_operations();
    assert_eq!(decrypt(&replica, &encrypted).await, plaintext);
    assert_eq!(vault.crypto_operations().1, unwraps_before + 1);

    let secret = std::fs::read_to_string(&vault.secret_file).expect("secret file");
    let case = serde_json::json!({
        "vault_url": vault.emulator.vault_url(),
        "tenant_id": vault.emulator.tenant_id(),
        "client_id": vault.client_id,
        "client_secret": secret.trim_end(),
        "key_name": vault.key_name,
        "version": vault.first.version,
        "algorithm": algorithm,
        "key_id": &*encrypted.key_id,
        "wrapped_kek": hex::encode(&encrypted.annotations[WRAPPED_KEK_ANNOTATION]),
        "ciphertext": hex::encode(&encrypted.ciphertext),
        "plaintext": hex::encode(&plaintext),
    });
    replica.stop().await;
    plugin.stop().await;
    case
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rsa_2048_3072_4096_round_trip_through_the_socket_and_the_python_sdk_reads_them() {
    let mut vaults = Vec::new();
    let mut cases = Vec::new();
    for bits in [2048, 3072, 4096] {
        let vault = TestVault::key_vault(bits).await;
        cases.push(round_trip(&vault, "RSA-OAEP-256").await);
        vaults.push(vault);
    }
    let dir = tempfile::tempdir().expect("temporary directory");
    let bundle = dir.path().join("ca-bundle.pem");
    let pems: String = vaults
        .iter()
        .map(|v| v.emulator.ca_pem().to_owned())
        .collect();
    std::fs::write(&bundle, pems).expect("CA bundle");
    python_reads(&cases, &bundle).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_hsm_round_trips_with_a256kw_and_ckm_aes_key_wrap_pad() {
    let vault = TestVault::managed_hsm().await;
    let mut cases = vec![round_trip(&vault, "A256KW").await];

    // The padded key wrap, configured; KEKs wrapped with A256KW before still unwrap.
    let mut config = vault.config();
    config.oct_wrap_algorithm = kube_kms::provider::azure::client::WrapAlgorithm::CkmAesKeyWrapPad;
    let padded = vault.open(config).await;
    let key = padded.current_key().await.expect("current key");
    let new = kek();
    let wrapped = padded
        .wrap(&key, &new)
        .await
        .expect("wrap with CKM_AES_KEY_WRAP_PAD");
    let raw = vault
        .emulator
        .unwrap_locally(
            &vault.key_name,
            Some(key.version()),
            "CKM_AES_KEY_WRAP_PAD",
            &wrapped,
        )
        .expect("the emulator unwraps it with CKM_AES_KEY_WRAP_PAD");
    assert_eq!(raw.as_slice(), new.expose());
    let old_provider = vault.provider().await;
    let old = kek();
    let old_wrapped = old_provider
        .wrap(&key, &old)
        .await
        .expect("wrap with A256KW");
    let unwrapped = padded.unwrap(key.version(), &old_wrapped).await;
    assert_eq!(unwrapped.expect("A256KW KEK").expose(), old.expose());

    let plugin = plugin_on(padded, RotationPolicy::DEFAULT).await;
    let plaintext = b"managed hsm".to_vec();
    let encrypted = encrypt(&plugin, &plaintext).await;
    let secret = std::fs::read_to_string(&vault.secret_file).expect("secret file");
    let mut case = cases[0].clone();
    case["algorithm"] = "CKM_AES_KEY_WRAP_PAD".into();
    case["client_secret"] = secret.trim_end().into();
    case["wrapped_kek"] = hex::encode(&encrypted.annotations[WRAPPED_KEK_ANNOTATION]).into();
    case["ciphertext"] = hex::encode(&encrypted.ciphertext).into();
    case["plaintext"] = hex::encode(&plaintext).into();
    cases.push(case);
    plugin.stop().await;
    python_reads(&cases, vault.emulator.ca_pem_path()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_calls_make_no_more_remote_calls_than_keks_were_created() {
    let vault = TestVault::key_vault(2048).await;
    let policy = RotationPolicy {
        max_encryptions: 2_500,
        ..RotationPolicy::DEFAULT
    };
    let plugin = Arc::new(plugin_on(vault.provider().await, policy).await);
    let before = plugin.envelope.snapshot().await;
    let remote_before = vault.key_operations();

    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8u32 {
        let plugin = Arc::clone(&plugin);
        tasks.spawn(async move {
            let mut client = plugin.v2().await;
            for i in 0..1_250u32 {
                let plaintext = format!("worker {worker} call {i}").into_bytes();
                let encrypted = client
                    .encrypt(EncryptRequest {
                        plaintext: plaintext.clone(),
                        uid: "load".into(),
                    })
                    .await
                    .expect("encrypt")
                    .into_inner();
                let decrypted = client
                    .decrypt(decrypt_request(&encrypted))
                    .await
                    .expect("decrypt")
                    .into_inner();
                assert_eq!(decrypted.plaintext, plaintext);
            }
        });
    }
    while let Some(result) = tasks.join_next().await {
        result.expect("worker");
    }
    let after = plugin.envelope.snapshot().await;
    let keks_created = (after.rotations_spent - before.rotations_spent)
        + (after.rotations_key_changed - before.rotations_key_changed);
    let remote = vault.key_operations() - remote_before;
    assert!(
        keks_created >= 3,
        "10,000 encryptions at 2,500 per KEK: {keks_created} KEKs"
    );
    assert!(
        remote <= keks_created,
        "{remote} remote calls for {keks_created} new KEKs over 10,000 Encrypt+Decrypt calls"
    );
    Arc::into_inner(plugin)
        .expect("workers finished")
        .stop()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_version_in_the_vault_moves_status_and_encrypt_and_old_data_still_decrypts() {
    let vault = TestVault::key_vault(2048).await;
    let plugin = plugin_on(vault.provider().await, RotationPolicy::DEFAULT).await;
    let first_id = expected_key_id(&vault.first.kid);
    let old = encrypt(&plugin, b"written before the rotation").await;
    assert_eq!(*old.key_id, first_id);

    let mut seen = HashSet::from([first_id.clone()]);
    let mut written = vec![(old, b"written before the rotation".to_vec())];
    for round in 0..3 {
        let rotated = vault
            .emulator
            .rotate_key(&vault.key_name)
            .await
            .expect("rotate");
        let new_id = expected_key_id(&rotated.kid);
        plugin.envelope.refresh().await.expect("refresh");
        let status = plugin
            .v2()
            .await
            .status(StatusRequest {})
            .await
            .expect("status");
        assert_eq!(status.into_inner().key_id, new_id, "round {round}: Status");
        let plaintext = format!("written in round {round}").into_bytes();
        let encrypted = encrypt(&plugin, &plaintext).await;
        assert_eq!(*encrypted.key_id, new_id, "round {round}: Encrypt");
        assert_eq!(
            encrypted.annotations[KEY_VERSION_ANNOTATION],
            rotated.version.as_bytes()
        );
        assert!(seen.insert(new_id.clone()), "a key_id was reused");
        written.push((encrypted, plaintext));
        // Refreshing again never flips back.
        assert_eq!(
            plugin.envelope.refresh().await.expect("refresh").key_id(),
            new_id
        );
    }
    for (encrypted, plaintext) in &written {
        assert_eq!(&decrypt(&plugin, encrypted).await, plaintext);
    }
    // A replica that never saw the old versions unwraps them through the vault.
    let replica = plugin_on(vault.provider().await, RotationPolicy::DEFAULT).await;
    for (encrypted, plaintext) in &written {
        assert_eq!(&decrypt(&replica, encrypted).await, plaintext);
    }
    replica.stop().await;
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pinned_version_stays_put_when_the_vault_rotates() {
    let vault = TestVault::key_vault(2048).await;
    let mut config = vault.config();
    config.key_version = KeyVersionChoice::Pinned(vault.first.version.clone());
    let provider = vault.open(config).await;
    vault
        .emulator
        .rotate_key(&vault.key_name)
        .await
        .expect("rotate");
    let key = provider.refresh().await.expect("refresh");
    assert_eq!(key.version(), vault.first.version);
    assert_eq!(key.key_id(), expected_key_id(&vault.first.kid));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decrypt_only_keys_unwrap_and_a_version_is_never_sent_to_an_unconfigured_key() {
    let vault = TestVault::key_vault(2048).await;
    let old_provider = vault.provider().await;
    let old_key = old_provider.current_key().await.expect("key");
    let old_kek = kek();
    let old_wrapped = old_provider.wrap(&old_key, &old_kek).await.expect("wrap");

    // The operator moves to a new key and keeps the old one decrypt-only.
    let new_key = vault
        .emulator
        .create_key("kek-2026", KeySpec::rsa(2048))
        .await
        .expect("create");
    let url = vault.emulator.vault_url();
    let mut config = vault.config();
    config.key = KeyRef::new(&url, "kek-2026").expect("key ref");
    config.decrypt_only_keys = vec![DecryptOnlyKey {
        key: vault.key_ref(),
        version: None,
    }];
    let moved = vault.open(config.clone()).await;
    assert_eq!(
        moved.current_key().await.expect("key").key_id(),
        expected_key_id(&new_key.kid)
    );
    let unwrapped = moved.unwrap(old_key.version(), &old_wrapped).await;
    assert_eq!(
        unwrapped.expect("decrypt-only key").expose(),
        old_kek.expose()
    );

    // Without the old key in the configuration, its version is unknown: the provider asked only
    // the configured key (which has no such version), never "kek", which would have unwrapped it.
    config.decrypt_only_keys.clear();
    let strict = vault.open(config.clone()).await;
    let refused = strict.unwrap(old_key.version(), &old_wrapped).await;
    assert!(
        matches!(&refused, Err(ProviderError::UnknownKeyVersion { version }) if version == old_key.version()),
        "{refused:?}"
    );
    // The vault's "no such version" is remembered: a made-up version read from etcd again and
    // again costs one remote call, not one per Decrypt.
    let before = vault.key_operations();
    for _ in 0..5 {
        let refused = strict.unwrap(old_key.version(), &old_wrapped).await;
        assert!(
            matches!(refused, Err(ProviderError::UnknownKeyVersion { .. })),
            "{refused:?}"
        );
    }
    assert_eq!(vault.key_operations(), before);
    // A decrypt-only entry pinned to another version does not open this one either.
    config.decrypt_only_keys = vec![DecryptOnlyKey {
        key: vault.key_ref(),
        version: Some(random_version()),
    }];
    let pinned = vault.open(config).await;
    let refused = pinned.unwrap(old_key.version(), &old_wrapped).await;
    assert!(
        matches!(refused, Err(ProviderError::UnknownKeyVersion { .. })),
        "{refused:?}"
    );

    // Malformed versions and wrapped KEKs never reach the vault.
    let before = vault.key_operations();
    for version in ["", "latest", "../kek", &old_key.version().to_uppercase()] {
        let refused = moved.unwrap(version, &old_wrapped).await;
        assert!(
            matches!(refused, Err(ProviderError::UnknownKeyVersion { .. })),
            "{version:?}"
        );
    }
    for len in [0, 1, 39, 41, 255, 2048] {
        let refused = moved.unwrap(old_key.version(), &vec![7; len]).await;
        assert!(
            matches!(refused, Err(ProviderError::UnwrapFailed { .. })),
            "{len}"
        );
    }
    assert_eq!(vault.key_operations(), before);
}

// ---------------------------------------------------------------------------------------------
// Deadlines, retries and classification under the emulator's faults.

async fn timed_unwrap(
    provider: &AzureKeyVaultProvider,
    version: &str,
    wrapped: &[u8],
) -> (Result<SecretKey, ProviderError>, Duration) {
    let started = Instant::now();
    let result = provider.unwrap(version, wrapped).await;
    (result, started.elapsed())
}

async fn wrapped_kek(provider: &AzureKeyVaultProvider) -> (String, Vec<u8>, SecretKey) {
    let key = provider.current_key().await.expect("key");
    let secret = kek();
    let wrapped = provider.wrap(&key, &secret).await.expect("wrap");
    (key.version().to_owned(), wrapped, secret)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttling_and_dropped_connections_are_retried_within_the_deadline() {
    let vault = TestVault::key_vault(2048).await;
    let provider = vault.provider().await;
    let deadline = provider.config().retry.deadline;
    let (version, wrapped, secret) = wrapped_kek(&provider).await;

    vault.emulator.reset_counts();
    vault.emulator.inject(
        FaultRule::on(Operation::UnwrapKey, Fault::Throttle { retry_after: None }).times(2),
    );
    let (result, elapsed) = timed_unwrap(&provider, &version, &wrapped).await;
    assert_eq!(
        result.expect("succeeds on the third try").expose(),
        secret.expose()
    );
    assert!(elapsed <= deadline + SLACK, "{elapsed:?}");
    assert_eq!(vault.emulator.counts(Operation::UnwrapKey).failed, 2);
    assert_eq!(vault.emulator.counts(Operation::UnwrapKey).succeeded, 1);

    vault
        .emulator
        .inject(FaultRule::on(Operation::UnwrapKey, Fault::DropConnection).times(1));
    let (result, elapsed) = timed_unwrap(&provider, &version, &wrapped).await;
    assert_eq!(
        result
            .expect("succeeds after a dropped connection")
            .expose(),
        secret.expose()
    );
    assert!(elapsed <= deadline + SLACK, "{elapsed:?}");

    // 503 then success.
    vault
        .emulator
        .inject(FaultRule::on(Operation::UnwrapKey, Fault::Status { status: 503 }).times(1));
    let (result, _) = timed_unwrap(&provider, &version, &wrapped).await;
    assert_eq!(
        result.expect("succeeds after a 503").expose(),
        secret.expose()
    );
    assert_eq!(provider.health().await, ProviderHealth::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured_within_the_deadline_and_not_past_it() {
    let vault = TestVault::key_vault(2048).await;
    let provider = vault.provider().await;
    let deadline = provider.config().retry.deadline;
    let (version, wrapped, secret) = wrapped_kek(&provider).await;

    vault.emulator.inject(
        FaultRule::on(
            Operation::UnwrapKey,
            Fault::Throttle {
                retry_after: Some(1),
            },
        )
        .times(1),
    );
    let (result, elapsed) = timed_unwrap(&provider, &version, &wrapped).await;
    assert_eq!(
        result.expect("succeeds after waiting").expose(),
        secret.expose()
    );
    assert!(
        elapsed >= Duration::from_secs(1),
        "Retry-After was not honoured: {elapsed:?}"
    );
    assert!(elapsed <= deadline + SLACK, "{elapsed:?}");

    // A Retry-After beyond the deadline: no wait, the caller learns it at once.
    vault.emulator.inject(
        FaultRule::on(
            Operation::UnwrapKey,
            Fault::Throttle {
                retry_after: Some(5),
            },
        )
        .times(1),
    );
    let (result, elapsed) = timed_unwrap(&provider, &version, &wrapped).await;
    match result {
        Err(
            error @ ProviderError::Throttled {
                retry_after: Some(wait),
                ..
            },
        ) => {
            assert_eq!(wait, Duration::from_secs(5));
            assert_eq!(
                to_status(&EnvelopeError::Provider(error)).code(),
                Code::Unavailable
            );
        }
        other => panic!("expected Throttled with Retry-After, got {other:?}"),
    }
    assert!(elapsed < deadline, "{elapsed:?}");
    assert!(matches!(
        provider.health().await,
        ProviderHealth::Degraded { .. }
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_5xx_throttling_or_latency_fail_with_unavailable_by_the_deadline() {
    let vault = TestVault::key_vault(2048).await;
    let mut config = vault.config();
    config.retry.deadline = Duration::from_millis(1200);
    let provider = vault.open(config).await;
    let deadline = provider.config().retry.deadline;
    let (version, wrapped, secret) = wrapped_kek(&provider).await;

    for (fault, what) in [
        (Fault::Status { status: 503 }, "503"),
        (Fault::Status { status: 500 }, "500"),
        (Fault::Throttle { retry_after: None }, "429"),
        (Fault::Latency { millis: 5_000 }, "latency"),
        (Fault::DropConnection, "dropped connections"),
    ] {
        vault.emulator.clear_faults();
        vault.emulator.reset_counts();
        vault
            .emulator
            .inject(FaultRule::on(Operation::UnwrapKey, fault));
        let (result, elapsed) = timed_unwrap(&provider, &version, &wrapped).await;
        let error = result.expect_err(what);
        assert!(
            matches!(
                error,
                ProviderError::Unavailable { .. } | ProviderError::Throttled { .. }
            ),
            "{what}: {error:?}"
        );
        assert_eq!(
            to_status(&EnvelopeError::Provider(error)).code(),
            Code::Unavailable,
            "{what}"
        );
        assert!(
            elapsed <= deadline + SLACK,
            "{what}: {elapsed:?} past the {deadline:?} deadline"
        );
        if what != "latency" {
            assert!(
                vault.emulator.counts(Operation::UnwrapKey).requests >= 2,
                "{what}: retried"
            );
        }
        let health = provider.health().await;
        assert!(
            matches!(health, ProviderHealth::Degraded { .. }),
            "{what}: {health:?}"
        );
    }
    vault.emulator.clear_faults();
    let (result, _) = timed_unwrap(&provider, &version, &wrapped).await;
    assert_eq!(result.expect("the vault is back").expose(), secret.expose());
    assert_eq!(provider.health().await, ProviderHealth::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_token_endpoint_is_inside_the_deadline_too() {
    let vault = TestVault::key_vault(2048).await;
    let mut config = vault.config();
    config.retry.deadline = Duration::from_millis(1000);
    let provider =
        AzureKeyVaultProvider::new_with_env(config, &AzureEnv::from_pairs(&[])).expect("provider");
    vault.emulator.inject(FaultRule::on(
        Operation::EntraToken,
        Fault::Latency { millis: 5_000 },
    ));
    let started = Instant::now();
    let error = provider.refresh().await.expect_err("no token in time");
    assert!(
        matches!(error, ProviderError::Unavailable { .. }),
        "{error:?}"
    );
    // A refresh's calls share its own budget, a few call deadlines, and never outlive it.
    let budget = provider.refresh_budget().expect("a refresh budget");
    assert!(
        started.elapsed() <= budget + SLACK,
        "{:?} past the {budget:?} budget",
        started.elapsed()
    );
    vault.emulator.clear_faults();
    provider
        .refresh()
        .await
        .expect("the token endpoint is back");
}

// ---------------------------------------------------------------------------------------------
// Authoritative answers: revocation and recovery.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_expired_deleted_or_forbidden_keys_are_revoked_and_recover() {
    let vault = TestVault::key_vault(2048).await;
    let provider = vault.provider().await;
    let (version, wrapped, secret) = wrapped_kek(&provider).await;
    let name = &vault.key_name;

    let revoked = |error: ProviderError, expected: &str| {
        match &error {
            ProviderError::Revoked { reason } => {
                assert!(
                    reason.contains(expected) && reason.contains("\"kek\""),
                    "{reason}"
                );
            }
            other => panic!("expected Revoked ({expected}), got {other:?}"),
        }
        assert_eq!(
            to_status(&EnvelopeError::Provider(error)).code(),
            Code::FailedPrecondition
        );
    };
    let assert_revoked_health = |health: ProviderHealth, expected: &str| match health {
        ProviderHealth::Revoked { reason } => assert!(reason.contains(expected), "{reason}"),
        other => panic!("expected Revoked health, got {other:?}"),
    };

    // Disabled: unwrap refused (403 KeyDisabled), refresh says so, health says so.
    vault.emulator.disable_key(name, None).expect("disable");
    revoked(
        provider
            .unwrap(&version, &wrapped)
            .await
            .expect_err("disabled"),
        "disabled",
    );
    revoked(provider.refresh().await.expect_err("disabled"), "disabled");
    assert_revoked_health(provider.health().await, "disabled");
    vault.emulator.enable_key(name, None).expect("enable");
    provider.refresh().await.expect("re-enabled");
    assert_eq!(provider.health().await, ProviderHealth::Ok);
    assert_eq!(
        provider
            .unwrap(&version, &wrapped)
            .await
            .expect("unwraps again")
            .expose(),
        secret.expose()
    );

    // Expired, and not yet valid.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    vault
        .emulator
        .set_key_validity(name, None, None, Some(now - 60))
        .expect("expire");
    revoked(provider.refresh().await.expect_err("expired"), "expired");
    vault
        .emulator
        .set_key_validity(name, None, Some(now + 3600), None)
        .expect("not yet");
    revoked(
        provider.refresh().await.expect_err("not yet valid"),
        "not valid before",
    );
    vault
        .emulator
        .set_key_validity(name, None, None, None)
        .expect("clear");
    provider.refresh().await.expect("valid again");

    // The identity loses unwrapKey but keeps get: the routine refresh (one key read) cannot
    // tell, the self-test not being due; the first unwrap refused says so at once, and the next
    // refresh runs the self-test, which confirms it.
    vault
        .emulator
        .revoke(&vault.client_id, &[Permission::UnwrapKey])
        .expect("revoke");
    provider
        .refresh()
        .await
        .expect("a key read needs no unwrapKey");
    revoked(
        provider
            .unwrap(&version, &wrapped)
            .await
            .expect_err("no unwrapKey"),
        "keys/unwrapKey",
    );
    assert_revoked_health(provider.health().await, "unwrapKey");
    revoked(
        provider.refresh().await.expect_err("no unwrapKey"),
        "keys/unwrapKey",
    );
    assert_revoked_health(provider.health().await, "unwrapKey");
    vault
        .emulator
        .grant(&vault.client_id, &[Permission::UnwrapKey])
        .expect("grant");
    provider.refresh().await.expect("permission restored");
    assert_eq!(provider.health().await, ProviderHealth::Ok);

    // Deleted, then recovered.
    vault.emulator.delete_key(name).expect("delete");
    revoked(provider.refresh().await.expect_err("deleted"), "not found");
    vault.emulator.recover_key(name).expect("recover");
    provider.refresh().await.expect("recovered");
    assert_eq!(
        provider
            .unwrap(&version, &wrapped)
            .await
            .expect("unwraps again")
            .expose(),
        secret.expose()
    );
}

/// The routine refresh costs the vault one key read; the wrap/unwrap self-test runs on its own
/// period, at once after any failure and for a new key version; and a key disabled, deleted or
/// expired is still refused by the very next refresh, without the self-test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_routine_refresh_is_one_key_read_and_the_self_test_keeps_its_own_period() {
    const PERIOD: Duration = Duration::from_secs(3);
    let vault = TestVault::key_vault(2048).await;
    let mut config = vault.config();
    config.self_test_interval = PERIOD;
    config.retry.deadline = Duration::from_millis(300);
    let opening = Instant::now();
    let provider = vault.open(config).await;
    // The self-test passed between these two instants.
    let tested = Instant::now();
    // (key reads, wraps, unwraps) reaching the key since the last call, challenges excluded.
    let calls = || {
        let gets = vault.emulator.counts(Operation::GetKey);
        let (wraps, unwraps) = vault.crypto_operations();
        let calls = (gets.requests - gets.challenged, wraps, unwraps);
        vault.emulator.reset_counts();
        calls
    };
    assert_eq!(calls(), (1, 1, 1), "opening reads the key and self-tests");

    // Healthy: one key read per refresh, nothing else, until the period is over.
    for _ in 0..3 {
        provider.refresh().await.expect("refresh");
    }
    assert!(
        opening.elapsed() < PERIOD,
        "the refreshes took the whole period"
    );
    assert_eq!(calls(), (3, 0, 0), "a routine refresh is one key read");

    // The period: the next refresh self-tests, the one after does not.
    tokio::time::sleep_until((tested + PERIOD).into()).await;
    provider.refresh().await.expect("refresh");
    provider.refresh().await.expect("refresh");
    assert_eq!(calls(), (2, 1, 1), "the self-test on its own period, once");

    // At once after a failed refresh.
    vault.emulator.inject(FaultRule::on(
        Operation::GetKey,
        Fault::Status { status: 503 },
    ));
    provider.refresh().await.expect_err("the key read fails");
    vault.emulator.clear_faults();
    calls();
    provider.refresh().await.expect("refresh");
    provider.refresh().await.expect("refresh");
    assert_eq!(
        calls(),
        (2, 1, 1),
        "the self-test at once after a failed refresh"
    );

    // At once after a failed unwrap (a transient one here; a refused one too, see
    // disabled_expired_deleted_or_forbidden_keys_are_revoked_and_recover).
    let (version, wrapped, _) = wrapped_kek(&provider).await;
    vault.emulator.inject(FaultRule::on(
        Operation::UnwrapKey,
        Fault::Status { status: 503 },
    ));
    provider
        .unwrap(&version, &wrapped)
        .await
        .expect_err("the unwrap fails");
    vault.emulator.clear_faults();
    calls();
    provider.refresh().await.expect("refresh");
    assert_eq!(
        calls(),
        (1, 1, 1),
        "the self-test at once after a failed unwrap"
    );
    assert_eq!(provider.health().await, ProviderHealth::Ok);

    // For a new key version.
    vault
        .emulator
        .rotate_key(&vault.key_name)
        .await
        .expect("rotate");
    calls();
    provider.refresh().await.expect("refresh");
    provider.refresh().await.expect("refresh");
    assert_eq!(calls(), (2, 1, 1), "the self-test for a new version, once");

    // Disabled, deleted or expired: the next routine refresh — one key read, no self-test due —
    // says so.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    type Change<'a> = (&'a str, Box<dyn Fn() + 'a>, Box<dyn Fn() + 'a>);
    let emulator = &vault.emulator;
    let name = vault.key_name.as_str();
    let changes: [Change; 3] = [
        (
            "disabled",
            Box::new(|| {
                emulator.disable_key(name, None).expect("disable");
            }),
            Box::new(|| {
                emulator.enable_key(name, None).expect("enable");
            }),
        ),
        (
            "not found",
            Box::new(|| emulator.delete_key(name).expect("delete")),
            Box::new(|| {
                emulator.recover_key(name).expect("recover");
            }),
        ),
        (
            "expired",
            Box::new(move || {
                emulator
                    .set_key_validity(name, None, None, Some(now - 60))
                    .expect("expire");
            }),
            Box::new(|| {
                emulator
                    .set_key_validity(name, None, None, None)
                    .expect("clear");
            }),
        ),
    ];
    for (reason, change, undo) in changes {
        provider.refresh().await.expect("refresh");
        calls();
        change();
        match provider.refresh().await {
            Err(ProviderError::Revoked { reason: why }) => {
                assert!(why.contains(reason), "{reason}: {why}");
            }
            other => panic!("{reason}: the next refresh says {other:?}"),
        }
        assert_eq!(
            calls(),
            (1, 0, 0),
            "{reason}: noticed by the key read alone"
        );
        undo();
        provider.refresh().await.expect("usable again");
        assert_eq!(
            calls(),
            (1, 1, 1),
            "{reason}: the self-test once usable again"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_says_exactly_what_is_wrong() {
    let vault = TestVault::key_vault(2048).await;
    let open = |config| async {
        let started = Instant::now();
        let result = AzureKeyVaultProvider::open_with_env(config, &AzureEnv::from_pairs(&[])).await;
        (
            result.err().map(|e| e.to_string()).unwrap_or_default(),
            started.elapsed(),
        )
    };

    let mut missing = vault.config();
    missing.key = KeyRef::new(&vault.emulator.vault_url(), "no-such-key").expect("key ref");
    let (error, _) = open(missing).await;
    assert!(
        error.contains("\"no-such-key\"") && error.contains("not found"),
        "{error}"
    );

    let mut pinned = vault.config();
    pinned.key_version = KeyVersionChoice::Pinned(random_version());
    let (error, _) = open(pinned).await;
    assert!(error.contains("not found"), "{error}");

    vault
        .emulator
        .create_key(
            "encrypt-only",
            KeySpec {
                key_ops: Some(vec![KeyOp::Encrypt, KeyOp::Decrypt]),
                ..KeySpec::rsa(2048)
            },
        )
        .await
        .expect("create");
    let mut ops = vault.config();
    ops.key = KeyRef::new(&vault.emulator.vault_url(), "encrypt-only").expect("key ref");
    let (error, _) = open(ops).await;
    assert!(
        error.contains("does not permit wrapKey and unwrapKey"),
        "{error}"
    );

    vault
        .emulator
        .disable_key(&vault.key_name, None)
        .expect("disable");
    let (error, _) = open(vault.config()).await;
    assert!(error.contains("is disabled"), "{error}");
    vault
        .emulator
        .enable_key(&vault.key_name, None)
        .expect("enable");

    vault
        .emulator
        .revoke(&vault.client_id, &[Permission::Get])
        .expect("revoke get");
    let (error, _) = open(vault.config()).await;
    assert!(error.contains("keys/get permission"), "{error}");
    vault
        .emulator
        .grant(&vault.client_id, &[Permission::Get])
        .expect("grant get");

    let wrong_secret = vault.dir.path().join("wrong-secret");
    std::fs::write(&wrong_secret, "not-the-secret").expect("write");
    let mut config = vault.config();
    config.auth.client_secret = Some(azure_access::auth::SecretSource::File(wrong_secret));
    let (error, _) = open(config).await;
    assert!(
        error.contains("Entra ID refused the identity's credentials"),
        "{error}"
    );
    assert!(!error.contains("not-the-secret"), "{error}");

    // Without the emulator's CA the TLS handshake fails — within the refresh's budget (the SDK's
    // own retries would take about 80 s), with the reason.
    let mut untrusted = vault.config();
    untrusted.transport.ca_file = None;
    let budget = AzureKeyVaultProvider::new_with_env(untrusted.clone(), &AzureEnv::from_pairs(&[]))
        .expect("provider")
        .refresh_budget()
        .expect("a refresh budget");
    let (error, elapsed) = open(untrusted).await;
    assert!(
        error.contains("unavailable") && error.to_lowercase().contains("certificate"),
        "{error}"
    );
    assert!(
        elapsed <= budget + SLACK,
        "{elapsed:?} past the {budget:?} budget"
    );

    vault.emulator.shutdown().await;
}
