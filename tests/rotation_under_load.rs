//! Rotation under load: 64 concurrent clients encrypt and decrypt continuously through
//! the real `kube-kms serve` binary while the key is rotated three times in the Key Vault
//! emulator (`key_version: latest`), then pinned by editing the config file, rotated in the vault
//! once more (the pinned plugin stays put) and re-pinned to the new version by another edit.
//!
//! Asserted: zero failed calls; every ciphertext written decrypts afterwards, in the same
//! process and in a fresh one that has to unwrap every KEK through the vault; the key_ids seen by
//! Encrypt and Status are strictly new each time — never reused, never flipping back — in every
//! client's own order as well as overall. Every wait polls a condition with a deadline.

mod azure_support;
mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use azure_support::TestVault;
use azure_support::serve::{ServedPlugin, decrypt_with, encrypt_with};
use kube_kms::proto::v2::EncryptResponse;
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;
use util::wait_until;

const CLIENTS: usize = 64;
/// How long a rotation may take to show before the test fails (a bound on hangs, not speed).
const SHOWS_WITHIN: Duration = Duration::from_secs(20);
/// Encryptions under each new key_id the load must have made before the next step.
const UNDER_EACH_KEY: usize = 64;

/// What the clients have written, in order, and what went wrong.
#[derive(Default)]
struct Log {
    /// (client, plaintext, response) in the order each client received them.
    written: Vec<(usize, Vec<u8>, EncryptResponse)>,
    failures: Vec<String>,
}

impl Log {
    fn under(&self, key_id: &str) -> usize {
        self.written
            .iter()
            .filter(|(_, _, sealed)| *sealed.key_id == *key_id)
            .count()
    }
}

fn key_id_of(vault_url: &str, name: &str, version: &str) -> String {
    hex::encode(Sha256::digest(
        format!("{vault_url}keys/{name}/{version}").as_bytes(),
    ))
}

/// One client: Encrypt, then Decrypt what came back, until `stop`.
async fn client(
    plugin: Arc<ServedPlugin>,
    index: usize,
    stop: Arc<AtomicBool>,
    log: Arc<Mutex<Log>>,
) {
    let mut connection = plugin.connect().await;
    let mut call = 0u64;
    while !stop.load(Ordering::Acquire) {
        call += 1;
        let plaintext = format!("client {index} call {call}").into_bytes();
        let sealed = match encrypt_with(&mut connection, &plaintext).await {
            Ok(sealed) => sealed,
            Err(status) => {
                log.lock()
                    .await
                    .failures
                    .push(format!("client {index} Encrypt: {status:?}"));
                continue;
            }
        };
        match decrypt_with(&mut connection, &sealed).await {
            Ok(opened) if opened == plaintext => {}
            Ok(_) => log
                .lock()
                .await
                .failures
                .push(format!("client {index} Decrypt: other plaintext")),
            Err(status) => log
                .lock()
                .await
                .failures
                .push(format!("client {index} Decrypt: {status:?}")),
        }
        log.lock().await.written.push((index, plaintext, sealed));
    }
}

/// Polls Status until `stop`, recording each key_id it reports in order.
async fn status_watcher(
    plugin: Arc<ServedPlugin>,
    stop: Arc<AtomicBool>,
    seen: Arc<Mutex<Vec<String>>>,
) {
    while !stop.load(Ordering::Acquire) {
        match plugin.status().await {
            Ok(status) => {
                assert_eq!(status.healthz, "ok", "Status stays ok through rotations");
                let mut seen = seen.lock().await;
                if seen.last() != Some(&status.key_id) {
                    seen.push(status.key_id);
                }
            }
            Err(status) => panic!("Status failed: {status:?}"),
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until Status reports `key_id` and the load has encrypted under it.
async fn moved_to(plugin: &ServedPlugin, log: &Mutex<Log>, key_id: &str, what: &str) {
    wait_until(&format!("Status reports {what}"), SHOWS_WITHIN, || async {
        plugin
            .status()
            .await
            .is_ok_and(|status| status.key_id == key_id)
    })
    .await;
    wait_until(
        &format!("the load encrypts under {what}"),
        SHOWS_WITHIN,
        || async { log.lock().await.under(key_id) >= UNDER_EACH_KEY },
    )
    .await;
}

/// Asserts `ids` is a sequence of distinct key_ids, each a later entry of `order`.
fn strictly_new(ids: &[String], order: &[String], whose: &str) {
    let positions: Vec<usize> = ids
        .iter()
        .map(|id| {
            order
                .iter()
                .position(|known| known == id)
                .unwrap_or_else(|| panic!("{whose}: unknown key_id {id}"))
        })
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "{whose}: key_ids went {positions:?} (indices into the rotation order); each must be new"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_clients_see_no_failure_through_three_rotations_and_two_config_reloads() {
    tokio::time::timeout(Duration::from_secs(180), rotation_under_load())
        .await
        .expect("the test finished in time");
}

async fn rotation_under_load() {
    let vault = TestVault::key_vault(2048).await;
    let url = vault.emulator.vault_url();
    let authority = vault.emulator.authority_url();
    let name = vault.key_name.clone();
    let args = ["--refresh-interval", "200ms"];
    let plugin =
        Arc::new(ServedPlugin::start(&vault.azure_yaml(&url, &authority, ""), &args).await);
    let mut order = vec![key_id_of(&url, &name, &vault.first.version)];
    assert_eq!(plugin.status().await.expect("Status").key_id, order[0]);

    let stop = Arc::new(AtomicBool::new(false));
    let log = Arc::new(Mutex::new(Log::default()));
    let statuses = Arc::new(Mutex::new(Vec::new()));
    let mut load = tokio::task::JoinSet::new();
    for index in 0..CLIENTS {
        load.spawn(client(
            Arc::clone(&plugin),
            index,
            Arc::clone(&stop),
            Arc::clone(&log),
        ));
    }
    load.spawn(status_watcher(
        Arc::clone(&plugin),
        Arc::clone(&stop),
        Arc::clone(&statuses),
    ));
    wait_until(
        "the load runs under the first key",
        SHOWS_WITHIN,
        || async { log.lock().await.under(&order[0]) >= UNDER_EACH_KEY },
    )
    .await;

    // Three rotations in the vault, followed by the refresher.
    for round in 1..=3 {
        let rotated = vault.emulator.rotate_key(&name).await.expect("rotate");
        order.push(key_id_of(&url, &name, &rotated.version));
        moved_to(&plugin, &log, &order[round], &format!("rotation {round}")).await;
    }

    // Pin the current version by editing the config file: nothing moves.
    let current = vault.emulator.key(&name, None).expect("key").version;
    let pinned =
        |version: &str| vault.azure_yaml(&url, &authority, &format!("  key_version: {version}\n"));
    std::fs::write(&plugin.config, pinned(&current)).expect("edit the config file");
    wait_until("the edited config is loaded", SHOWS_WITHIN, || async {
        plugin.log_text().contains("new key provider configuration")
    })
    .await;
    // A fourth version in the vault: the pinned plugin stays on its version, refresh after
    // refresh.
    let fourth = vault.emulator.rotate_key(&name).await.expect("rotate");
    let refreshes = plugin.remote_calls("refresh").await;
    wait_until("five more refreshes", SHOWS_WITHIN, || async {
        plugin.remote_calls("refresh").await >= refreshes + 5.0
    })
    .await;
    assert_eq!(
        plugin.status().await.expect("Status").key_id,
        order[3],
        "pinned"
    );

    // Re-pinned to the fourth version by another edit.
    std::fs::write(&plugin.config, pinned(&fourth.version)).expect("edit the config file");
    order.push(key_id_of(&url, &name, &fourth.version));
    moved_to(&plugin, &log, &order[4], "the re-pinned version").await;

    stop.store(true, Ordering::Release);
    while let Some(done) = load.join_next().await {
        done.expect("a client or the Status watcher");
    }
    let log = Arc::into_inner(log).expect("clients stopped").into_inner();
    assert!(
        log.failures.is_empty(),
        "{} failed calls of {}, e.g. {:?}\n{}",
        log.failures.len(),
        log.written.len() * 2,
        &log.failures[..log.failures.len().min(5)],
        plugin.log_text()
    );

    // key_ids: all distinct, and never flipping back — overall (Status) and per client.
    let distinct: std::collections::HashSet<&String> = order.iter().collect();
    assert_eq!(
        distinct.len(),
        order.len(),
        "a key_id was reused: {order:?}"
    );
    strictly_new(&statuses.lock().await, &order, "Status");
    for index in 0..CLIENTS {
        let mut seen: Vec<String> = Vec::new();
        for (_, _, sealed) in log.written.iter().filter(|(client, _, _)| *client == index) {
            if seen.last().map(String::as_str) != Some(&*sealed.key_id) {
                seen.push(sealed.key_id.to_string());
            }
        }
        strictly_new(&seen, &order, &format!("client {index}"));
    }

    // Every ciphertext decrypts afterwards: here, and in a fresh plugin that unwraps every KEK
    // (one per key version, plus any spent ones) through the vault.
    let fresh = Arc::new(ServedPlugin::start(&pinned(&fourth.version), &args).await);
    let written = Arc::new(log.written);
    for reader in [Arc::clone(&plugin), fresh] {
        let mut readers = tokio::task::JoinSet::new();
        for part in 0..8 {
            let reader = Arc::clone(&reader);
            let written = Arc::clone(&written);
            readers.spawn(async move {
                let mut connection = reader.connect().await;
                for (_, plaintext, sealed) in written.iter().skip(part).step_by(8) {
                    let opened = decrypt_with(&mut connection, sealed)
                        .await
                        .expect("every ciphertext decrypts afterwards");
                    assert_eq!(&opened, plaintext);
                }
            });
        }
        while let Some(done) = readers.join_next().await {
            done.expect("a reader");
        }
    }
    println!(
        "{} Encrypt+Decrypt pairs by {CLIENTS} clients under {} key_ids, no failure",
        written.len(),
        order.len()
    );
}
