//! /healthz, /readyz and /metrics as a platform team's probes and Prometheus see them: over
//! real HTTP on a loopback port, reporting what the plugin's socket has been doing.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on any error"
)]

mod util;

use std::sync::Arc;

use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::ops;
use kube_kms::ops::metrics::Metrics;
use kube_kms::proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use kube_kms::provider::instrumented::Instrumented;
use kube_kms::provider::local::LocalKeyRing;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use util::TestPlugin;

/// A plugin whose provider is instrumented with the same metrics its socket records into, and
/// its operations endpoints on a free loopback port.
async fn plugin_with_ops() -> (TestPlugin, std::net::SocketAddr) {
    let dir = util::short_tempdir();
    let key_dir = dir.path().join("keys");
    let metrics = Arc::new(Metrics::new());
    let provider = Arc::new(Instrumented::new(
        util::key_ring(&key_dir),
        Arc::clone(&metrics),
    ));
    let plugin =
        TestPlugin::start_on_with_metrics(dir, key_dir, provider, RotationPolicy::DEFAULT, metrics)
            .await;
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    tokio::spawn(ops::serve(
        listener,
        ops::Target::started(Arc::clone(&plugin.envelope)),
        Arc::clone(&plugin.metrics),
        std::future::pending(),
    ));
    (plugin, address)
}

/// GET `path`; returns the status code and the body.
async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.expect("connects");
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.expect("writes");
    let mut response = String::new();
    stream.read_to_string(&mut response).await.expect("reads");
    let code = response[9..12].parse().expect("status code");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (code, body)
}

/// The value of the sample `series` (name with labels, exactly as exposed).
fn sample(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {series} in:\n{metrics}"))
}

#[tokio::test]
async fn healthz_and_readyz_answer_without_remote_calls() {
    let (plugin, address) = plugin_with_ops().await;
    let (code, body) = get(address, "/healthz").await;
    assert_eq!((code, body.as_str()), (200, "ok\n"));

    let (code, body) = get(address, "/readyz").await;
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("status: ok\n"), "{body}");
    assert!(body.contains(&format!(
        "key_id: {}\n",
        plugin.envelope.current_key().key_id()
    )));
    assert!(body.contains("provider: local\n"));

    let before = get(address, "/metrics").await.1;
    let refreshes = sample(
        &before,
        "kube_kms_remote_calls_total{operation=\"refresh\",result=\"ok\"}",
    );
    for _ in 0..5 {
        get(address, "/readyz").await;
        get(address, "/healthz").await;
    }
    let after = get(address, "/metrics").await.1;
    assert_eq!(
        sample(
            &after,
            "kube_kms_remote_calls_total{operation=\"refresh\",result=\"ok\"}"
        ),
        refreshes,
        "probes must not call the key provider"
    );
    plugin.stop().await;
}

#[tokio::test]
async fn metrics_count_requests_codes_cache_and_rotations() {
    let (plugin, address) = plugin_with_ops().await;
    let mut client = plugin.v2().await;
    client.status(StatusRequest {}).await.unwrap();
    let mut written = Vec::new();
    for _ in 0..3 {
        let request = EncryptRequest {
            plaintext: vec![1; 32],
            uid: "m".into(),
        };
        written.push(client.encrypt(request).await.unwrap().into_inner());
    }
    for encrypted in &written {
        let request = DecryptRequest {
            ciphertext: encrypted.ciphertext.clone(),
            uid: "m".into(),
            key_id: encrypted.key_id.to_string(),
            annotations: (*encrypted.annotations).clone(),
        };
        client.decrypt(request).await.unwrap();
    }
    let bad = DecryptRequest {
        ciphertext: vec![],
        ..Default::default()
    };
    client.decrypt(bad).await.unwrap_err();

    LocalKeyRing::rotate(&plugin.key_dir).unwrap();
    plugin.envelope.refresh().await.unwrap();

    let (code, text) = get(address, "/metrics").await;
    assert_eq!(code, 200);
    assert_eq!(
        sample(
            &text,
            "kube_kms_requests_total{method=\"v2.Status\",code=\"OK\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "kube_kms_requests_total{method=\"v2.Encrypt\",code=\"OK\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "kube_kms_requests_total{method=\"v2.Decrypt\",code=\"OK\"}"
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            "kube_kms_requests_total{method=\"v2.Decrypt\",code=\"InvalidArgument\"}"
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "kube_kms_request_duration_seconds_count{method=\"v2.Encrypt\"}"
        ),
        3.0
    );
    assert_eq!(sample(&text, "kube_kms_kek_cache_hits_total"), 3.0);
    assert_eq!(sample(&text, "kube_kms_kek_unwraps_total"), 0.0);
    assert_eq!(
        sample(&text, "kube_kms_local_kek_rotations_key_changed_total"),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            "kube_kms_remote_calls_total{operation=\"wrap\",result=\"ok\"}"
        ),
        2.0
    );
    let key = plugin.envelope.current_key();
    let info = format!(
        "kube_kms_key_info{{provider=\"local\",key_id=\"{}\",version=\"{}\"}}",
        key.key_id(),
        key.version()
    );
    assert_eq!(sample(&text, &info), 1.0);
    assert!(sample(&text, "kube_kms_last_refresh_success_timestamp_seconds") > 1.7e9);
    assert!(text.ends_with("# EOF\n"));
    plugin.stop().await;
}
