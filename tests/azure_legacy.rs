//! Reading what Azure's Go KMS plugin wrote. The records are made here as that plugin makes
//! them — Key Vault `encrypt` through the emulator's REST API with Microsoft's Rust SDK, both
//! generations (older: the DEK encrypted, the base64url result stored as ASCII; newer: the DEK's
//! base64url encrypted, the raw result stored), RSA-OAEP-256 for v2 and RSA1_5 for v1, on several
//! key versions with the key rotated in between — and read back through kube-kms's socket on v2
//! and v1beta1. A key_id that names no configured version is refused with no remote call;
//! tampered base64 is InvalidArgument; the emulator's counts show the cache at work.

mod azure_support;
mod util;

use std::collections::HashMap;
use std::sync::Arc;

use azure_access::auth::{self, AzureEnv};
use azure_access::client::{self as transport, Route};
use azure_security_keyvault_keys::models::{
    EncryptionAlgorithm, KeyClientEncryptOptions, KeyOperationParameters,
};
use azure_security_keyvault_keys::{KeyClient, KeyClientOptions};
use azure_support::{MINIMAL_PERMISSIONS, TestVault};
use keyvault_emulator::{IdentitySpec, KeyInfo, Operation, Permission};
use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::envelope::legacy::{
    ALGORITHM_ANNOTATION, AUTHENTICATED_DATA_ANNOTATION, VERSION_ANNOTATION, encode_base64url,
};
use kube_kms::proto::{v1beta1, v2};
use kube_kms::provider::azure::{AzureConfig, AzureKeyVaultProvider, random_version};
use kube_kms::provider::guard::{GuardPolicy, Guarded};
use sha2::{Digest, Sha256};
use tonic::Code;

/// An identity with `permissions` on the emulator, as a configuration of the test vault's key.
fn identity(vault: &TestVault, name: &str, permissions: Vec<Permission>) -> AzureConfig {
    let client_id = azure_support::new_client_id();
    let secret = random_version();
    vault
        .emulator
        .register_identity(IdentitySpec {
            name: Some(name.into()),
            client_id: Some(client_id.clone()),
            client_secret: Some(secret.clone()),
            permissions: Some(permissions),
            ..IdentitySpec::default()
        })
        .expect("register the identity");
    let secret_file = vault.dir.path().join(format!("{name}-secret"));
    std::fs::write(&secret_file, format!("{secret}\n")).expect("write the secret file");
    let mut config = vault.config();
    config.auth.client_id = Some(client_id);
    config.auth.client_secret = Some(auth::SecretSource::File(secret_file));
    config
}

/// What the Go plugin holds: a Key Vault client for the one configured key, with `encrypt`.
struct GoPlugin {
    client: KeyClient,
    key_name: String,
}

impl GoPlugin {
    fn new(vault: &TestVault) -> Self {
        let config = identity(
            vault,
            "go-plugin",
            vec![Permission::Get, Permission::Encrypt],
        );
        let resolution = auth::resolve(&config.auth, &AzureEnv::from_pairs(&[])).expect("auth");
        let cloud = config.effective_cloud(Some(&resolution)).expect("cloud");
        let http = transport::http_client(&config.transport, Route::Remote).expect("http");
        let options = transport::client_options(&http, &cloud);
        let identity_http =
            transport::http_client(&config.transport, Route::ManagedIdentity).expect("http");
        let identity_options = transport::client_options(&identity_http, &cloud);
        let credential = resolution
            .auth
            .credential(&options, &identity_options)
            .expect("credential")
            .token_credential();
        let client = KeyClient::new(
            &vault.emulator.vault_url(),
            credential,
            Some(KeyClientOptions {
                client_options: options,
                verify_challenge_resource: Some(false),
                ..KeyClientOptions::default()
            }),
        )
        .expect("client");
        Self {
            client,
            key_name: vault.key_name.clone(),
        }
    }

    /// Key Vault `encrypt` of `value` with `version`: the raw RSA ciphertext.
    async fn encrypt(
        &self,
        version: &str,
        algorithm: EncryptionAlgorithm,
        value: &[u8],
    ) -> Vec<u8> {
        let parameters = KeyOperationParameters {
            algorithm: Some(algorithm),
            value: Some(value.to_vec()),
            ..Default::default()
        };
        self.client
            .encrypt(
                &self.key_name,
                parameters.try_into().expect("request"),
                Some(KeyClientEncryptOptions {
                    key_version: Some(version.to_owned()),
                    ..Default::default()
                }),
            )
            .await
            .expect("encrypt")
            .into_model()
            .expect("result")
            .result
            .expect("a value")
    }

    /// The older releases: the DEK encrypted, the base64url result stored as ASCII.
    async fn older(&self, version: &str, algorithm: EncryptionAlgorithm, dek: &[u8]) -> Vec<u8> {
        let rsa = self.encrypt(version, algorithm, dek).await;
        encode_base64url(&rsa).as_bytes().to_vec()
    }

    /// The newer releases: the DEK's ASCII base64url encrypted, the raw result stored.
    async fn newer(&self, version: &str, algorithm: EncryptionAlgorithm, dek: &[u8]) -> Vec<u8> {
        self.encrypt(version, algorithm, encode_base64url(dek).as_bytes())
            .await
    }
}

fn key_id_of(kid: &str) -> String {
    hex::encode(Sha256::digest(kid.as_bytes()))
}

fn go_annotations() -> HashMap<String, Vec<u8>> {
    HashMap::from([
        (VERSION_ANNOTATION.to_owned(), b"1".to_vec()),
        (ALGORITHM_ANNOTATION.to_owned(), b"RSA-OAEP-256".to_vec()),
        (
            "date.azure.akv.io".to_owned(),
            b"2024-01-01T00:00:00Z".to_vec(),
        ),
    ])
}

fn decrypts(vault: &TestVault) -> u64 {
    let counts = vault.emulator.counts(Operation::Decrypt);
    counts.requests - counts.challenged
}

/// kube-kms on the vault's current key version, with `decrypt` permission and `legacy` listed in
/// azure.legacy_key_versions, serving its socket.
async fn kube_kms_reading(vault: &TestVault, legacy: &[KeyInfo]) -> util::TestPlugin {
    let mut config = identity(
        vault,
        "kube-kms",
        [MINIMAL_PERMISSIONS.as_slice(), &[Permission::Decrypt]].concat(),
    );
    config.legacy_key_versions = legacy.iter().map(|k| k.version.clone()).collect();
    let provider = Arc::new(
        AzureKeyVaultProvider::open_with_env(config, &AzureEnv::from_pairs(&[]))
            .await
            .expect("the provider opens"),
    );
    let guarded = Arc::new(Guarded::new(provider, GuardPolicy::DEFAULT));
    let dir = util::short_tempdir();
    let unused = dir.path().join("unused-key-dir");
    util::TestPlugin::start_on(dir, unused, guarded, RotationPolicy::DEFAULT).await
}

struct Record {
    key_id: String,
    ciphertext: Vec<u8>,
    dek: Vec<u8>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_plugin_records_of_both_generations_read_back_on_v2_and_v1_across_rotations() {
    let vault = TestVault::key_vault(2048).await;
    let go = GoPlugin::new(&vault);
    let mut versions = vec![vault.first.clone()];
    for _ in 0..2 {
        versions.push(
            vault
                .emulator
                .rotate_key(&vault.key_name)
                .await
                .expect("rotate"),
        );
    }

    let mut v2_records = Vec::new();
    let mut v1_records = Vec::new();
    for (index, key) in versions.iter().enumerate() {
        let dek = vec![index as u8 + 1; 32];
        let key_id = key_id_of(&key.kid);
        for (older, dek) in [(true, dek.clone()), (false, vec![index as u8 + 101; 32])] {
            let (v2, v1) = if older {
                (
                    go.older(&key.version, EncryptionAlgorithm::RsaOaep256, &dek)
                        .await,
                    go.older(&key.version, EncryptionAlgorithm::Rsa1_5, &dek)
                        .await,
                )
            } else {
                (
                    go.newer(&key.version, EncryptionAlgorithm::RsaOaep256, &dek)
                        .await,
                    go.newer(&key.version, EncryptionAlgorithm::Rsa1_5, &dek)
                        .await,
                )
            };
            assert_eq!(v2.len(), if older { 342 } else { 256 });
            v2_records.push(Record {
                key_id: key_id.clone(),
                ciphertext: v2,
                dek: dek.clone(),
            });
            v1_records.push(Record {
                key_id: String::new(),
                ciphertext: v1,
                dek,
            });
        }
    }

    // kube-kms, with decrypt permission and the Go plugin's versions configured; the current
    // (latest) version is the last one, the first two only in azure.legacy_key_versions.
    let plugin = kube_kms_reading(&vault, &versions[..2]).await;
    let mut v2_client = plugin.v2().await;
    let mut v1_client = plugin.v1().await;
    vault.emulator.reset_counts();

    // v2: every record, twice; the second pass is served from the cache.
    for pass in 0..2 {
        for record in &v2_records {
            let plaintext = v2_client
                .decrypt(v2::DecryptRequest {
                    ciphertext: record.ciphertext.clone(),
                    uid: "go".into(),
                    key_id: record.key_id.clone(),
                    annotations: go_annotations(),
                })
                .await
                .unwrap_or_else(|status| panic!("pass {pass}: {status:?}"))
                .into_inner()
                .plaintext;
            assert_eq!(plaintext, record.dek);
        }
    }
    assert_eq!(
        decrypts(&vault),
        v2_records.len() as u64,
        "one remote decrypt per distinct record"
    );

    // v1: the records of the two legacy versions (v1 tries only azure.legacy_key_versions).
    vault.emulator.reset_counts();
    // Records 0 and 1 are the first version's (older, newer), 2 and 3 the second's. An older
    // v1 record of any but the first listed version is left out: RSA1_5 under a wrong key may
    // answer a synthetic message, which passes the 32-byte check with a probability near 1/245
    // (docs/runbooks/replace-azure-kms-plugin.md).
    for record in [&v1_records[0], &v1_records[1], &v1_records[3]] {
        for _ in 0..2 {
            let plain = v1_client
                .decrypt(v1beta1::DecryptRequest {
                    version: "v1beta1".into(),
                    cipher: record.ciphertext.clone(),
                })
                .await
                .expect("v1 decrypt")
                .into_inner()
                .plain;
            assert_eq!(plain, record.dek);
        }
    }
    // The first version's two records take one call each; the second version's record tries
    // the first version first: 1 + 1 + 2.
    assert_eq!(decrypts(&vault), 4);

    // Encrypt still writes kube-kms's own format, and it reads back.
    let sealed = v2_client
        .encrypt(v2::EncryptRequest {
            plaintext: vec![7; 32],
            uid: "new".into(),
        })
        .await
        .expect("encrypt")
        .into_inner();
    assert_eq!(*sealed.key_id, key_id_of(&versions[2].kid));
    assert!(!sealed.annotations.contains_key(VERSION_ANNOTATION));

    // A key_id that names no configured version: refused, no remote call.
    vault.emulator.reset_counts();
    let unknown = v2_client
        .decrypt(v2::DecryptRequest {
            ciphertext: v2_records[0].ciphertext.clone(),
            uid: "go".into(),
            key_id: key_id_of("https://elsewhere.vault.azure.net/keys/kek/0123"),
            annotations: go_annotations(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::FailedPrecondition, "{unknown:?}");
    assert_eq!(decrypts(&vault), 0);

    // Tampered base64: InvalidArgument, no remote call.
    let mut tampered = v2_records[0].ciphertext.clone();
    tampered[5] = b'+';
    let refused = v2_client
        .decrypt(v2::DecryptRequest {
            ciphertext: tampered.clone(),
            uid: "go".into(),
            key_id: v2_records[0].key_id.clone(),
            annotations: go_annotations(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    let refused = v1_client
        .decrypt(v1beta1::DecryptRequest {
            version: "v1beta1".into(),
            cipher: tampered,
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    assert_eq!(decrypts(&vault), 0);

    // An altered raw ciphertext reaches the service once and is refused as InvalidArgument.
    let mut altered = v2_records[1].ciphertext.clone();
    altered[100] ^= 1;
    let refused = v2_client
        .decrypt(v2::DecryptRequest {
            ciphertext: altered,
            uid: "go".into(),
            key_id: v2_records[1].key_id.clone(),
            annotations: go_annotations(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument, "{refused:?}");
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_decrypts_of_one_record_make_one_remote_call() {
    let vault = TestVault::key_vault(2048).await;
    let go = GoPlugin::new(&vault);
    let record = go
        .newer(
            &vault.first.version,
            EncryptionAlgorithm::RsaOaep256,
            &[5; 32],
        )
        .await;
    let mut config = identity(
        &vault,
        "kube-kms",
        [MINIMAL_PERMISSIONS.as_slice(), &[Permission::Decrypt]].concat(),
    );
    config.legacy_key_versions = vec![vault.first.version.clone()];
    let provider = Arc::new(
        AzureKeyVaultProvider::open_with_env(config, &AzureEnv::from_pairs(&[]))
            .await
            .expect("the provider opens"),
    );
    let dir = util::short_tempdir();
    let unused = dir.path().join("unused-key-dir");
    let plugin = util::TestPlugin::start_on(
        dir,
        unused,
        Arc::new(Guarded::new(provider, GuardPolicy::DEFAULT)),
        RotationPolicy::DEFAULT,
    )
    .await;
    vault.emulator.reset_counts();
    let key_id = key_id_of(&vault.first.kid);
    let mut calls = Vec::new();
    for _ in 0..16 {
        let mut client = plugin.v2().await;
        let request = v2::DecryptRequest {
            ciphertext: record.clone(),
            uid: "go".into(),
            key_id: key_id.clone(),
            annotations: go_annotations(),
        };
        calls.push(tokio::spawn(async move { client.decrypt(request).await }));
    }
    for call in calls {
        let plaintext = call
            .await
            .expect("task")
            .expect("decrypt")
            .into_inner()
            .plaintext;
        assert_eq!(plaintext, vec![5; 32]);
    }
    assert_eq!(decrypts(&vault), 1);
    plugin.stop().await;
}

/// The same records made by another implementation: Microsoft's Python SDK, as the Go plugin
/// made them (tests/python/go_plugin_records.py; its CryptographyClient encrypts with Python's
/// `cryptography` when it can read the public key). kube-kms reads every one: v2 records of the
/// current and an earlier version, v1 records of the version the Go plugin was configured with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_microsofts_python_sdk_makes_as_the_go_plugin_did_read_back() {
    let vault = TestVault::key_vault(2048).await;
    let earlier = vault.first.clone();
    let current = vault
        .emulator
        .rotate_key(&vault.key_name)
        .await
        .expect("rotate");
    let writer = identity(
        &vault,
        "go-plugin-python",
        vec![Permission::Get, Permission::Encrypt],
    );
    let Some(auth::SecretSource::File(secret_file)) = &writer.auth.client_secret else {
        unreachable!("identity() writes the secret to a file");
    };
    let secret = std::fs::read_to_string(secret_file).expect("the secret file");

    // (key version, generation, algorithm, DEK); v1 only on the Go plugin's configured version.
    let mut wanted = Vec::new();
    for (key, algorithms) in [
        (&earlier, &["RSA-OAEP-256", "RSA1_5"][..]),
        (&current, &["RSA-OAEP-256"][..]),
    ] {
        for generation in ["older", "newer"] {
            for algorithm in algorithms {
                let dek = vec![wanted.len() as u8 + 1; 32];
                wanted.push((key, generation, *algorithm, dek));
            }
        }
    }
    let spec = serde_json::json!({
        "vault_url": vault.emulator.vault_url(),
        "tenant_id": vault.emulator.tenant_id(),
        "client_id": writer.auth.client_id,
        "client_secret": secret.trim_end(),
        "key_name": vault.key_name,
        "records": wanted.iter().map(|(key, generation, algorithm, dek)| serde_json::json!({
            "version": key.version,
            "generation": generation,
            "algorithm": algorithm,
            "dek": hex::encode(dek),
        })).collect::<Vec<_>>(),
    });
    let stdout = azure_support::python::run_sdk_script(
        "go_plugin_records.py",
        &spec,
        vault.emulator.ca_pem_path(),
    )
    .await;
    let stored: Vec<Vec<u8>> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("record "))
        .map(|record| hex::decode(record).expect("hex"))
        .collect();
    assert_eq!(stored.len(), wanted.len(), "{stdout}");

    let plugin = kube_kms_reading(&vault, std::slice::from_ref(&earlier)).await;
    let mut v2_client = plugin.v2().await;
    let mut v1_client = plugin.v1().await;
    for ((key, generation, algorithm, dek), ciphertext) in wanted.iter().zip(stored) {
        let case = format!("{generation} {algorithm} record of version {}", key.version);
        assert_eq!(
            ciphertext.len(),
            if *generation == "older" { 342 } else { 256 },
            "{case}"
        );
        let plaintext = if *algorithm == "RSA1_5" {
            v1_client
                .decrypt(v1beta1::DecryptRequest {
                    version: "v1beta1".into(),
                    cipher: ciphertext,
                })
                .await
                .unwrap_or_else(|status| panic!("{case}: {status:?}"))
                .into_inner()
                .plain
        } else {
            v2_client
                .decrypt(v2::DecryptRequest {
                    ciphertext,
                    uid: "python".into(),
                    key_id: key_id_of(&key.kid),
                    annotations: go_annotations(),
                })
                .await
                .unwrap_or_else(|status| panic!("{case}: {status:?}"))
                .into_inner()
                .plaintext
        };
        assert_eq!(&plaintext, dek, "{case}");
    }
    plugin.stop().await;
}

/// A record of the Go plugin's cluster-seed mode, sealed as Kubernetes' extended-nonce
/// transformer seals it — written here with `hmac` and `aes-gcm` directly, not with kube-kms's
/// code: info ‖ nonce ‖ AES-256-GCM(HKDF-Expand-SHA256(seed, info), nonce, dek, uid) ‖ tag.
fn seal_as_the_go_plugin(
    seed: &[u8],
    info: [u8; 32],
    nonce: [u8; 12],
    dek: &[u8],
    uid: &[u8],
) -> Vec<u8> {
    use aes_gcm::aead::{AeadInOut, KeyInit as _};
    use hmac::Mac;
    let mut mac = hmac::Hmac::<Sha256>::new_from_slice(seed).expect("any key length");
    mac.update(&info);
    mac.update(&[1]);
    let key = mac.finalize().into_bytes();
    let gcm = aes_gcm::Aes256Gcm::new(key.as_slice().try_into().expect("32 bytes"));
    let mut sealed = dek.to_vec();
    let tag = gcm
        .encrypt_inout_detached(&nonce.into(), uid, sealed.as_mut_slice().into())
        .expect("seal");
    [&info[..], &nonce, &sealed, &tag].concat()
}

/// The Go plugin's cluster-seed mode, through the real binary and its config file: the seed
/// file made as `--generate-encrypted-cluster-seed-file` makes it (64 random bytes, Key Vault
/// `encrypt` RSA-OAEP-256 of their base64url, the JSON of k8s.io/kms's EncryptResponse), records
/// sealed under it, then read over the socket with `azure.legacy_cluster_seed_file`. Every record
/// opens; one moved to another uid does not; the seed costs one Key Vault decrypt.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_seed_records_read_back_through_the_binary_given_the_seed_file() {
    use azure_support::serve::ServedPlugin;
    use base64::Engine as _;

    let vault = TestVault::key_vault(2048).await;
    let go_version = vault.first.clone();
    vault
        .emulator
        .rotate_key(&vault.key_name)
        .await
        .expect("rotate");
    vault
        .emulator
        .grant(&vault.client_id, &[Permission::Decrypt])
        .expect("grant decrypt");
    let go = GoPlugin::new(&vault);
    let seed: Vec<u8> = (0..64u8).map(|i| i.wrapping_mul(37) ^ 0x5c).collect();
    let encrypted_seed = go
        .newer(&go_version.version, EncryptionAlgorithm::RsaOaep256, &seed)
        .await;
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    let seed_file = vault.dir.path().join("cluster-seed.json");
    let json = serde_json::json!({
        "Ciphertext": b64(&encrypted_seed),
        "KeyID": key_id_of(&go_version.kid),
        "Annotations": {
            "version.azure.akv.io": b64(b"1"),
            "algorithm.azure.akv.io": b64(b"RSA-OAEP-256"),
            "created-at.azure.akv.io": b64(b"2025-12-01T10:00:00Z"),
            "vault-name.azure.akv.io": b64(b"kv"),
            "key-name.azure.akv.io": b64(vault.key_name.as_bytes()),
            "key-version.azure.akv.io": b64(go_version.version.as_bytes()),
        },
    });
    std::fs::write(&seed_file, serde_json::to_vec_pretty(&json).expect("JSON"))
        .expect("write the seed file");

    let records: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = (0..3u8)
        .map(|i| {
            let uid = format!("5f0c-uid-{i}").into_bytes();
            let dek = vec![i + 50; 32];
            let sealed = seal_as_the_go_plugin(&seed, [i; 32], [i + 10; 12], &dek, &uid);
            (sealed, uid, dek)
        })
        .collect();
    let annotations = |uid: &[u8]| {
        HashMap::from([
            (VERSION_ANNOTATION.to_owned(), b"2".to_vec()),
            (AUTHENTICATED_DATA_ANNOTATION.to_owned(), uid.to_vec()),
        ])
    };

    let url = vault.emulator.vault_url();
    let authority = vault.emulator.authority_url();
    let extra = format!(
        "  legacy_key_versions: [{}]\n  legacy_cluster_seed_file: {}\n",
        go_version.version,
        seed_file.display()
    );
    let plugin = ServedPlugin::start(&vault.azure_yaml(&url, &authority, &extra), &[]).await;
    let mut client = plugin.connect().await;
    vault.emulator.reset_counts();
    for _pass in 0..2 {
        for (ciphertext, uid, dek) in &records {
            let plaintext = client
                .decrypt(v2::DecryptRequest {
                    ciphertext: ciphertext.clone(),
                    uid: "apiserver".into(),
                    key_id: "1".into(),
                    annotations: annotations(uid),
                })
                .await
                .unwrap_or_else(|status| panic!("{status:?}\n{}", plugin.log_text()))
                .into_inner()
                .plaintext;
            assert_eq!(&plaintext, dek);
        }
    }
    assert_eq!(decrypts(&vault), 1, "the seed is decrypted once");

    let moved = client
        .decrypt(v2::DecryptRequest {
            ciphertext: records[0].0.clone(),
            uid: "apiserver".into(),
            key_id: "1".into(),
            annotations: annotations(&records[1].1),
        })
        .await
        .unwrap_err();
    assert_eq!(moved.code(), Code::InvalidArgument, "{moved:?}");
}
