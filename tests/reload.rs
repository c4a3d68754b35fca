//! Rotation by configuration, with no restart of kube-apiserver and no second plugin process:
//! editing the config file (or SIGHUP) moves the plugin to a new key; data written under the
//! previous key still decrypts; a bad new configuration is refused and the old one keeps serving.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on any error"
)]

mod util;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kube_kms::probe::connect;
use kube_kms::proto::v2::key_management_service_client::KeyManagementServiceClient;
use kube_kms::proto::v2::{DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest};
use tonic::transport::Channel;
use util::{BIN, ServedBinary, wait_until};

fn write_config(path: &Path, key_dir: &Path, extra: &str) {
    let text = format!("local:\n  key_dir: {}\n{extra}", key_dir.display());
    std::fs::write(path, text).unwrap();
}

async fn key_id(client: &mut KeyManagementServiceClient<Channel>) -> String {
    client
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner()
        .key_id
}

async fn encrypt(client: &mut KeyManagementServiceClient<Channel>) -> EncryptResponse {
    let request = EncryptRequest {
        plaintext: b"seed".to_vec(),
        uid: "reload".into(),
    };
    client.encrypt(request).await.unwrap().into_inner()
}

async fn decrypts(
    client: &mut KeyManagementServiceClient<Channel>,
    sealed: &EncryptResponse,
) -> bool {
    let request = DecryptRequest {
        ciphertext: sealed.ciphertext.clone(),
        uid: "reload".into(),
        key_id: sealed.key_id.to_string(),
        annotations: (*sealed.annotations).clone(),
    };
    client
        .decrypt(request)
        .await
        .is_ok_and(|r| r.into_inner().plaintext == b"seed")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_config_file_or_sighup_moves_to_the_new_key_and_old_data_still_decrypts() {
    let root = util::short_tempdir();
    let config = root.path().join("kube-kms.yaml");
    let socket = root.path().join("kms.sock");
    let log = root.path().join("serve.log");
    write_config(&config, &root.path().join("keys-a"), "");
    let mut command = Command::new(BIN);
    command
        .args(["serve", "--config", config.to_str().unwrap()])
        .args([
            "--socket",
            socket.to_str().unwrap(),
            "--health-address",
            "off",
        ])
        .env_remove("KUBE_KMS_CONFIG");
    let plugin = ServedBinary::start(command, &log);
    let mut client = KeyManagementServiceClient::new(connect(&socket).await.unwrap());
    let under_a = encrypt(&mut client).await;
    let key_a = key_id(&mut client).await;

    // 1. The config file changes: the plugin notices by itself.
    write_config(&config, &root.path().join("keys-b"), "");
    wait_until("Status moves to key B", Duration::from_secs(20), || {
        let mut client = client.clone();
        let key_a = key_a.clone();
        async move { key_id(&mut client).await != key_a }
    })
    .await;
    let under_b = encrypt(&mut client).await;
    let key_b = key_id(&mut client).await;
    assert_eq!(*under_b.key_id, key_b);
    assert!(
        decrypts(&mut client, &under_a).await,
        "data under the previous key still decrypts"
    );

    // 2. A bad new configuration is refused; key B keeps serving.
    write_config(
        &config,
        &root.path().join("keys-c"),
        "refresh_interval: soon\n",
    );
    wait_until(
        "the bad configuration is refused",
        Duration::from_secs(20),
        || async {
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("new configuration refused")
        },
    )
    .await;
    assert_eq!(key_id(&mut client).await, key_b);
    assert!(decrypts(&mut client, &under_b).await);

    // 3. SIGHUP reloads at once.
    write_config(&config, &root.path().join("keys-d"), "");
    plugin.signal("HUP");
    wait_until("Status moves to key D", Duration::from_secs(20), || {
        let mut client = client.clone();
        let key_b = key_b.clone();
        async move { key_id(&mut client).await != key_b }
    })
    .await;
    let key_d = key_id(&mut client).await;
    assert_ne!(key_d, key_a);
    for sealed in [&under_a, &under_b] {
        assert!(decrypts(&mut client, sealed).await);
    }
    assert_eq!(*encrypt(&mut client).await.key_id, key_d);
}
