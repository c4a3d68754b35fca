//! The production stack in process: `Daemon::start` from a `Config`, exactly as `kube-kms serve`
//! starts it (Guarded → Instrumented → Chain → provider, health listener, socket, refresher), on
//! a temporary socket, with an Encrypt/Decrypt round trip through the socket.

#![expect(
    clippy::unwrap_used,
    reason = "test helpers fail the test loudly on any error"
)]

mod util;

use kube_kms::config::{Config, ConfigArgs, DefaultsEnv};
use kube_kms::daemon::{Daemon, Reload};
use kube_kms::probe::connect;
use kube_kms::proto::v2::key_management_service_client::KeyManagementServiceClient as V2Client;
use kube_kms::proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// GET `path`; returns the status code and the body.
async fn get(address: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let code = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (code, body)
}

#[tokio::test]
async fn the_production_stack_round_trips_encrypt_and_decrypt_in_process() {
    let dir = util::short_tempdir();
    let path = |name: &str| Some(dir.path().join(name).display().to_string());
    let args = ConfigArgs {
        socket: path("run/kms.sock"),
        state_dir: path("state"),
        local_key_dir: path("keys"),
        health_address: Some("127.0.0.1:0".to_owned()),
        ..ConfigArgs::default()
    };
    let config = Config::load(&args, &DefaultsEnv::default()).unwrap();
    let socket = config.socket.clone();

    let daemon = Daemon::start(config, Reload::Never, std::future::pending())
        .await
        .unwrap()
        .expect("the local key ring makes a first KEK at once");
    assert_eq!(daemon.socket(), socket);
    assert!(socket.exists(), "the socket is up when start returns");

    let mut client = V2Client::new(connect(daemon.socket()).await.unwrap());
    let status = client.status(StatusRequest {}).await.unwrap().into_inner();
    assert_eq!(
        (status.version.as_str(), status.healthz.as_str()),
        ("v2", "ok")
    );
    let encrypted = client
        .encrypt(EncryptRequest {
            plaintext: b"a data encryption key".to_vec(),
            uid: "daemon-1".to_owned(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        *encrypted.key_id, *status.key_id,
        "Encrypt's key_id is Status's"
    );
    let decrypted = client
        .decrypt(DecryptRequest {
            ciphertext: encrypted.ciphertext,
            uid: "daemon-2".to_owned(),
            key_id: encrypted.key_id.to_string(),
            annotations: (*encrypted.annotations).clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(decrypted.plaintext, b"a data encryption key");

    // The health listener is the daemon's, and the provider is instrumented as in production:
    // the first KEK's refresh and wrap were counted as remote calls.
    let health = daemon.health_address().expect("health listener on");
    assert_eq!(get(health, "/readyz").await.0, 200);
    let (code, metrics) = get(health, "/metrics").await;
    assert_eq!(code, 200);
    assert!(
        metrics.contains("kube_kms_remote_calls_total{operation=\"wrap\",result=\"ok\"} 1"),
        "{metrics}"
    );

    daemon.stop();
    daemon.wait().await.unwrap();
    assert!(!socket.exists(), "the socket is removed on stop");
}
