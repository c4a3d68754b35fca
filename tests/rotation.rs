//! Rotating the local key ring: Status and Encrypt move to the new key_id without a restart, and
//! data written under older versions keeps decrypting.

mod util;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use kube_kms::proto::v2::{DecryptRequest, EncryptRequest, EncryptResponse, StatusRequest};
use kube_kms::provider::local::LocalKeyRing;
use kube_kms::server::refresher::{self, RefreshTrigger};
use util::{TestPlugin, wait_until};

async fn encrypt(plugin: &TestPlugin) -> EncryptResponse {
    let request = EncryptRequest {
        plaintext: b"seed".to_vec(),
        uid: "rotation".into(),
    };
    plugin
        .v2()
        .await
        .encrypt(request)
        .await
        .expect("Encrypt succeeds")
        .into_inner()
}

async fn status_key_id(plugin: &TestPlugin) -> String {
    plugin
        .v2()
        .await
        .status(StatusRequest {})
        .await
        .expect("Status answers")
        .into_inner()
        .key_id
}

async fn decrypts(plugin: &TestPlugin, encrypted: &EncryptResponse) -> bool {
    let request = DecryptRequest {
        ciphertext: encrypted.ciphertext.clone(),
        uid: "rotation".into(),
        key_id: encrypted.key_id.to_string(),
        annotations: (*encrypted.annotations).clone(),
    };
    plugin
        .v2()
        .await
        .decrypt(request)
        .await
        .map(|r| r.into_inner().plaintext == b"seed")
        .unwrap_or(false)
}

#[tokio::test]
async fn a_new_key_version_moves_status_and_encrypt_and_old_data_still_decrypts() {
    let plugin = TestPlugin::start().await;
    let mut written = vec![encrypt(&plugin).await];
    let mut key_ids = vec![status_key_id(&plugin).await];
    assert_eq!(*written[0].key_id, key_ids[0]);

    for expected_version in 2..=4u32 {
        let entry = LocalKeyRing::rotate(&plugin.key_dir).unwrap();
        assert_eq!(entry.version, expected_version);
        // Until the plugin refreshes, it keeps reporting the key it encrypts with.
        assert_eq!(status_key_id(&plugin).await, *key_ids.last().unwrap());
        plugin.envelope.refresh().await.unwrap();
        let key_id = status_key_id(&plugin).await;
        assert_eq!(key_id, entry.key_id);
        let encrypted = encrypt(&plugin).await;
        assert_eq!(*encrypted.key_id, key_id);
        key_ids.push(key_id);
        written.push(encrypted);
    }
    assert_eq!(
        key_ids.iter().collect::<HashSet<_>>().len(),
        4,
        "key_ids are never reused"
    );
    for encrypted in &written {
        assert!(decrypts(&plugin, encrypted).await);
    }

    // A freshly started plugin (empty cache) decrypts every version by unwrapping.
    let restarted = TestPlugin::start_on(
        util::short_tempdir(),
        plugin.key_dir.clone(),
        util::key_ring(&plugin.key_dir),
        Default::default(),
    )
    .await;
    assert_eq!(status_key_id(&restarted).await, *key_ids.last().unwrap());
    for encrypted in &written {
        assert!(decrypts(&restarted, encrypted).await);
    }
    assert_eq!(restarted.envelope.cache_stats().unwraps, 4);
    restarted.stop().await;
    plugin.stop().await;
}

#[tokio::test]
async fn the_refresher_picks_up_a_new_version_when_triggered() {
    let plugin = TestPlugin::start().await;
    let before = status_key_id(&plugin).await;
    let trigger = RefreshTrigger::default();
    let refresher = tokio::spawn(refresher::run(
        Arc::clone(&plugin.envelope),
        Duration::from_secs(3600),
        trigger.clone(),
    ));
    let rotated = LocalKeyRing::rotate(&plugin.key_dir).unwrap();
    trigger.fire();
    wait_until(
        "Status reports the rotated key",
        Duration::from_secs(10),
        || async { status_key_id(&plugin).await == rotated.key_id },
    )
    .await;
    assert_ne!(before, rotated.key_id);
    refresher.abort();
    plugin.stop().await;
}

#[tokio::test]
async fn the_refresher_polls_on_its_interval() {
    let plugin = TestPlugin::start().await;
    let refresher = tokio::spawn(refresher::run(
        Arc::clone(&plugin.envelope),
        Duration::from_millis(20),
        RefreshTrigger::default(),
    ));
    let rotated = LocalKeyRing::rotate(&plugin.key_dir).unwrap();
    wait_until(
        "Status reports the rotated key",
        Duration::from_secs(10),
        || async { status_key_id(&plugin).await == rotated.key_id },
    )
    .await;
    refresher.abort();
    plugin.stop().await;
}
