//! The KMS v2 API over a real Unix socket with a tonic client, as kube-apiserver uses it.

mod util;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use kube_kms::envelope::format::{
    KEY_VERSION_ANNOTATION, MAX_ANNOTATIONS_LEN, WRAPPED_KEK_ANNOTATION, is_annotation_key,
};
use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::proto::v2::{DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest};
use tonic::Code;
use util::TestPlugin;

fn encrypt_request(plaintext: &[u8]) -> EncryptRequest {
    EncryptRequest {
        plaintext: plaintext.to_vec(),
        uid: "test-uid".into(),
    }
}

fn decrypt_request(encrypted: &EncryptResponse) -> DecryptRequest {
    DecryptRequest {
        ciphertext: encrypted.ciphertext.clone(),
        uid: "test-uid".into(),
        key_id: encrypted.key_id.to_string(),
        annotations: (*encrypted.annotations).clone(),
    }
}

fn assert_invalid_argument<T: std::fmt::Debug>(result: Result<tonic::Response<T>, tonic::Status>) {
    let status = result.expect_err("the request must be refused");
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
}

/// Codes a malformed or tampered request may get; never Unknown or Internal.
fn assert_refused_cleanly(result: Result<tonic::Response<impl std::fmt::Debug>, tonic::Status>) {
    let status = result.expect_err("the request must be refused");
    assert!(
        matches!(
            status.code(),
            Code::InvalidArgument | Code::FailedPrecondition
        ),
        "refused with {:?}: {}",
        status.code(),
        status.message()
    );
}

#[tokio::test]
async fn status_reports_v2_ok_and_the_current_key_id() {
    let plugin = TestPlugin::start().await;
    let status = plugin
        .v2()
        .await
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.version, "v2");
    assert_eq!(status.healthz, "ok");
    assert_eq!(status.key_id, plugin.envelope.current_key().key_id());
    assert!(!status.key_id.is_empty() && status.key_id.len() <= 1024);
    plugin.stop().await;
}

#[tokio::test]
async fn encrypt_then_decrypt_returns_the_plaintext_within_the_contract_limits() {
    let plugin = TestPlugin::start().await;
    let mut client = plugin.v2().await;
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    for len in [1, 32, 995] {
        let plaintext: Vec<u8> = (0..len).map(|i| i as u8).collect();
        let encrypted = client
            .encrypt(encrypt_request(&plaintext))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(*encrypted.key_id, *status.key_id);
        assert!(encrypted.ciphertext.len() <= 1024, "{len}");
        let total: usize = encrypted
            .annotations
            .iter()
            .map(|(k, v)| k.len() + v.len())
            .sum();
        assert!(total <= MAX_ANNOTATIONS_LEN);
        assert!(
            encrypted
                .annotations
                .keys()
                .all(|key| is_annotation_key(key))
        );
        let decrypted = client
            .decrypt(decrypt_request(&encrypted))
            .await
            .unwrap()
            .into_inner();
        assert_eq!(decrypted.plaintext, plaintext);
    }
    plugin.stop().await;
}

#[tokio::test]
async fn a_thousand_encryptions_of_one_plaintext_are_all_distinct() {
    let plugin = TestPlugin::start().await;
    let mut client = plugin.v2().await;
    let mut seen = HashSet::new();
    for _ in 0..1000 {
        let encrypted = client
            .encrypt(encrypt_request(&[7; 32]))
            .await
            .unwrap()
            .into_inner();
        assert!(seen.insert(encrypted.ciphertext));
    }
    assert_eq!(seen.len(), 1000);
    plugin.stop().await;
}

#[tokio::test]
async fn any_flipped_bit_in_ciphertext_or_annotations_is_refused_cleanly() {
    let plugin = TestPlugin::start().await;
    let mut client = plugin.v2().await;
    let encrypted = client
        .encrypt(encrypt_request(&[1; 32]))
        .await
        .unwrap()
        .into_inner();
    for bit in 0..encrypted.ciphertext.len() * 8 {
        let mut request = decrypt_request(&encrypted);
        request.ciphertext[bit / 8] ^= 1 << (bit % 8);
        assert_refused_cleanly(client.decrypt(request).await);
    }
    for annotation in [WRAPPED_KEK_ANNOTATION, KEY_VERSION_ANNOTATION] {
        let len = encrypted.annotations[annotation].len();
        for bit in 0..len * 8 {
            let mut request = decrypt_request(&encrypted);
            request.annotations.get_mut(annotation).unwrap()[bit / 8] ^= 1 << (bit % 8);
            assert_refused_cleanly(client.decrypt(request).await);
        }
    }
    plugin.stop().await;
}

#[tokio::test]
async fn wrong_key_id_missing_annotations_and_bad_sizes_are_invalid_argument() {
    let plugin = TestPlugin::start().await;
    let mut client = plugin.v2().await;
    let encrypted = client
        .encrypt(encrypt_request(&[1; 32]))
        .await
        .unwrap()
        .into_inner();

    let mut wrong_key_id = decrypt_request(&encrypted);
    wrong_key_id.key_id = "0".repeat(64);
    assert_invalid_argument(client.decrypt(wrong_key_id).await);

    let mut no_key_id = decrypt_request(&encrypted);
    no_key_id.key_id.clear();
    assert_invalid_argument(client.decrypt(no_key_id).await);

    let mut long_key_id = decrypt_request(&encrypted);
    long_key_id.key_id = "a".repeat(1025);
    assert_invalid_argument(client.decrypt(long_key_id).await);

    let mut no_annotations = decrypt_request(&encrypted);
    no_annotations.annotations = HashMap::new();
    assert_invalid_argument(client.decrypt(no_annotations).await);

    let mut empty = decrypt_request(&encrypted);
    empty.ciphertext.clear();
    assert_invalid_argument(client.decrypt(empty).await);

    let mut oversize = decrypt_request(&encrypted);
    oversize.ciphertext.resize(1025, 0);
    assert_invalid_argument(client.decrypt(oversize).await);

    let mut bad_annotation_key = decrypt_request(&encrypted);
    bad_annotation_key
        .annotations
        .insert("Not_A_Domain".into(), vec![1]);
    assert_invalid_argument(client.decrypt(bad_annotation_key).await);

    assert_invalid_argument(client.encrypt(encrypt_request(&[])).await);
    assert_invalid_argument(client.encrypt(encrypt_request(&[0; 996])).await);
    plugin.stop().await;
}

#[tokio::test]
async fn a_request_of_megabytes_is_refused_and_the_plugin_keeps_serving() {
    let plugin = TestPlugin::start().await;
    let mut client = plugin.v2().await;
    let status = client
        .encrypt(encrypt_request(&vec![0; 4 << 20]))
        .await
        .unwrap_err();
    assert_eq!(
        status.code(),
        Code::ResourceExhausted,
        "{}",
        status.message()
    );
    let encrypted = client
        .encrypt(encrypt_request(&[1; 32]))
        .await
        .unwrap()
        .into_inner();
    client.decrypt(decrypt_request(&encrypted)).await.unwrap();
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_clients_encrypt_and_decrypt_without_error() {
    let plugin = TestPlugin::start().await;
    let mut tasks = Vec::new();
    for client_number in 0..64u8 {
        let mut client = plugin.v2().await;
        tasks.push(tokio::spawn(async move {
            for round in 0..20u8 {
                let plaintext = [client_number, round, 42];
                let encrypted = client
                    .encrypt(encrypt_request(&plaintext))
                    .await
                    .unwrap()
                    .into_inner();
                let decrypted = client
                    .decrypt(decrypt_request(&encrypted))
                    .await
                    .unwrap()
                    .into_inner();
                assert_eq!(decrypted.plaintext, plaintext);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    assert_eq!(
        plugin.envelope.cache_stats().unwraps,
        0,
        "own KEKs never need an unwrap"
    );
    plugin.stop().await;
}

#[tokio::test]
async fn a_kek_is_replaced_after_its_encryption_budget_and_the_key_id_stays() {
    let policy = RotationPolicy {
        max_encryptions: 10,
        max_age: Duration::from_secs(3600),
    };
    let plugin = TestPlugin::start_with(policy).await;
    let mut client = plugin.v2().await;
    let mut written = Vec::new();
    for _ in 0..35 {
        written.push(
            client
                .encrypt(encrypt_request(&[5; 32]))
                .await
                .unwrap()
                .into_inner(),
        );
    }
    let keks: HashSet<_> = written
        .iter()
        .map(|e| e.annotations[WRAPPED_KEK_ANNOTATION].clone())
        .collect();
    assert_eq!(keks.len(), 4, "35 encryptions at 10 per KEK use 4 KEKs");
    assert_eq!(
        written
            .iter()
            .map(|e| &e.key_id)
            .collect::<HashSet<_>>()
            .len(),
        1
    );
    for encrypted in &written {
        client.decrypt(decrypt_request(encrypted)).await.unwrap();
    }
    plugin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_replica_decrypts_with_one_unwrap_however_many_calls_miss_at_once() {
    let writer = TestPlugin::start().await;
    let encrypted = writer
        .v2()
        .await
        .encrypt(encrypt_request(&[3; 32]))
        .await
        .unwrap()
        .into_inner();

    // A second plugin on the same key ring has never seen the writer's KEK.
    let dir = util::short_tempdir();
    let reader = TestPlugin::start_on(
        dir,
        writer.key_dir.clone(),
        util::key_ring(&writer.key_dir),
        RotationPolicy::DEFAULT,
    )
    .await;
    let mut tasks = Vec::new();
    for _ in 0..50 {
        let mut client = reader.v2().await;
        let request = decrypt_request(&encrypted);
        tasks.push(tokio::spawn(async move { client.decrypt(request).await }));
    }
    for task in tasks {
        assert_eq!(task.await.unwrap().unwrap().into_inner().plaintext, [3; 32]);
    }
    assert_eq!(reader.envelope.cache_stats().unwraps, 1);
    reader.stop().await;
    writer.stop().await;
}
