//! The plugin's logs, at every level and in both formats, never contain plaintext, key bytes or
//! wrapped-KEK bytes — in any of the encodings a careless log line would use (raw text, hex,
//! base64, a Rust byte-array Debug).

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on any error"
)]

mod util;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use kube_kms::probe::connect;
use kube_kms::proto::v1beta1;
use kube_kms::proto::v2::key_management_service_client::KeyManagementServiceClient;
use kube_kms::proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use util::{BIN, ServedBinary};

const PLAINTEXT: &[u8] = b"CANARY-plaintext-0123456789abcdef";

/// Every way `bytes` might be written into a log line.
fn renderings(bytes: &[u8]) -> Vec<String> {
    use std::fmt::Write;
    let mut standard = String::new();
    let mut url_safe = String::new();
    base64(bytes, &mut standard, b"+/");
    base64(bytes, &mut url_safe, b"-_");
    let mut renderings = vec![
        hex::encode(bytes),
        hex::encode_upper(bytes),
        standard.trim_end_matches('=').to_owned(),
        url_safe.trim_end_matches('=').to_owned(),
        format!("{bytes:?}").trim_end_matches(']').to_owned(),
    ];
    if let Ok(text) = std::str::from_utf8(bytes) {
        renderings.push(text.to_owned());
    }
    let mut escaped = String::new();
    for byte in bytes {
        let _ = write!(escaped, "\\x{byte:02x}");
    }
    renderings.push(escaped);
    renderings.retain(|r| r.len() >= 16);
    renderings
}

fn base64(bytes: &[u8], out: &mut String, extra: &[u8; 2]) {
    let alphabet: Vec<u8> = (b'A'..=b'Z')
        .chain(b'a'..=b'z')
        .chain(b'0'..=b'9')
        .chain(extra.iter().copied())
        .collect();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(alphabet[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
}

fn assert_absent(logs: &str, what: &str, bytes: &[u8]) {
    for rendering in renderings(bytes) {
        assert!(
            !logs.contains(&rendering),
            "{what} appears in the logs as {rendering:?}"
        );
    }
}

async fn exercise(socket: &Path) -> (Vec<u8>, Vec<u8>) {
    let channel = connect(socket).await.expect("connects");
    let mut v2 = KeyManagementServiceClient::new(channel.clone());
    v2.status(StatusRequest {}).await.unwrap();
    let encrypted = v2
        .encrypt(EncryptRequest {
            plaintext: PLAINTEXT.to_vec(),
            uid: "log-test".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let wrapped = encrypted.annotations["kek.kube-kms.io"].clone();
    let mut request = DecryptRequest {
        ciphertext: encrypted.ciphertext.clone(),
        uid: "log-test".into(),
        key_id: encrypted.key_id.to_string(),
        annotations: (*encrypted.annotations).clone(),
    };
    v2.decrypt(request.clone()).await.unwrap();
    request.ciphertext[5] ^= 1;
    v2.decrypt(request.clone()).await.unwrap_err();
    request
        .annotations
        .insert("kek.kube-kms.io".into(), PLAINTEXT.to_vec());
    v2.decrypt(request).await.unwrap_err();

    let mut v1 = v1beta1::key_management_service_client::KeyManagementServiceClient::new(channel);
    let cipher = v1
        .encrypt(v1beta1::EncryptRequest {
            version: "v1beta1".into(),
            plain: PLAINTEXT.to_vec(),
        })
        .await
        .unwrap()
        .into_inner()
        .cipher;
    v1.decrypt(v1beta1::DecryptRequest {
        version: "v1beta1".into(),
        cipher: cipher.clone(),
    })
    .await
    .unwrap();
    (wrapped, encrypted.ciphertext)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_plaintext_key_or_wrapped_kek_reaches_the_logs_at_any_level() {
    for (level, format) in [
        ("trace", "json"),
        ("trace", "text"),
        ("debug", "text"),
        ("info", "json"),
    ] {
        let root = util::short_tempdir();
        let socket = root.path().join("kms.sock");
        let key_dir = root.path().join("keys");
        // Logs go to a file: a pipe nobody drains would fill and stall the plugin.
        let log_path = root.path().join("serve.log");
        let mut command = Command::new(BIN);
        command
            .args(["serve", "--socket", socket.to_str().unwrap()])
            .args(["--local-key-dir", key_dir.to_str().unwrap()])
            .args(["--log-level", level, "--log-format", format])
            .args([
                "--health-address",
                "127.0.0.1:0",
                "--kek-max-encryptions",
                "2",
            ])
            .env_remove("KUBE_KMS_CONFIG");
        let mut plugin = ServedBinary::start(command, &log_path);
        let (wrapped, ciphertext) = exercise(&socket).await;
        let rotated = Command::new(BIN)
            .args([
                "keys",
                "rotate",
                "--local-key-dir",
                key_dir.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(rotated.status.success());
        plugin.signal("HUP");
        exercise(&socket).await;
        plugin.signal("TERM");
        assert!(plugin.wait_for_exit(Duration::from_secs(20)).success());
        let logs = std::fs::read_to_string(&log_path).unwrap();

        assert!(
            logs.contains("serving KMS v2 and v1beta1"),
            "{level}/{format}: {logs}"
        );
        if level != "info" {
            assert!(
                logs.contains("log-test"),
                "debug logs carry the request uid: {logs}"
            );
        }
        assert_absent(&logs, "the plaintext", PLAINTEXT);
        assert_absent(&logs, "the wrapped KEK", &wrapped);
        assert_absent(&logs, "the ciphertext", &ciphertext);
        // The root keys are the v*.key files (the ring also keeps a newest-version mark).
        for file in std::fs::read_dir(&key_dir).unwrap() {
            let path = file.unwrap().path();
            if path.extension().is_some_and(|ext| ext == "key") {
                let contents = std::fs::read(path).unwrap();
                assert_absent(&logs, "a root key", &contents[24..]);
            }
        }
    }
}
