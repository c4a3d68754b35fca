//! The socket's lifecycle: private permissions, stale sockets replaced, live ones left alone,
//! in-flight calls drained on shutdown and the socket removed afterwards.

mod util;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixListener as StdUnixListener;
use std::sync::Arc;
use std::time::Duration;

use grpc_uds::socket::{self, SocketError};
use kube_kms::proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use tokio::sync::watch;
use util::{TestPlugin, UnwrapHook, short_tempdir, wait_until};

fn mode(path: &std::path::Path) -> u32 {
    fs::metadata(path)
        .expect("path exists")
        .permissions()
        .mode()
        & 0o7777
}

#[tokio::test]
async fn the_socket_is_0600_in_a_0700_directory_by_default() {
    let dir = short_tempdir();
    let path = dir.path().join("new/kms.sock");
    let (_listener, bound) = socket::bind(&path, 0o600).unwrap();
    assert_eq!(mode(&path), 0o600);
    assert_eq!(mode(path.parent().unwrap()), 0o700);
    assert_eq!(
        fs::read_dir(path.parent().unwrap()).unwrap().count(),
        1,
        "no temporary left"
    );
    drop(bound);
    assert!(
        !path.exists(),
        "the socket is removed when the plugin stops"
    );
}

#[tokio::test]
async fn a_group_mode_can_be_chosen() {
    let dir = short_tempdir();
    let path = dir.path().join("kms.sock");
    let (_listener, _bound) = socket::bind(&path, 0o660).unwrap();
    assert_eq!(mode(&path), 0o660);
}

#[tokio::test]
async fn a_stale_socket_from_a_crash_is_replaced() {
    let dir = short_tempdir();
    let path = dir.path().join("kms.sock");
    drop(StdUnixListener::bind(&path).unwrap()); // the file stays; nobody listens.
    assert!(path.exists());
    let (_listener, _bound) = socket::bind(&path, 0o600).unwrap();
    assert_eq!(mode(&path), 0o600);
}

#[tokio::test]
async fn a_socket_another_process_serves_is_left_alone() {
    let plugin = TestPlugin::start().await;
    let error = socket::bind(&plugin.socket, 0o600).unwrap_err();
    assert!(
        matches!(error, SocketError::AlreadyServing { .. }),
        "{error}"
    );
    assert!(error.to_string().contains("another process is serving"));
    // The first plugin is untouched and still answers.
    let status = plugin
        .v2()
        .await
        .status(StatusRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status.healthz, "ok");
    plugin.stop().await;
}

#[tokio::test]
async fn a_file_that_is_not_a_socket_is_never_deleted() {
    let dir = short_tempdir();
    let path = dir.path().join("kms.sock");
    fs::write(&path, b"precious").unwrap();
    let error = socket::bind(&path, 0o600).unwrap_err();
    assert!(matches!(error, SocketError::NotASocket { .. }), "{error}");
    assert_eq!(fs::read(&path).unwrap(), b"precious");
}

#[tokio::test]
async fn a_directory_other_users_can_write_is_refused() {
    let dir = short_tempdir();
    let shared = dir.path().join("shared");
    fs::create_dir(&shared).unwrap();
    fs::set_permissions(&shared, fs::Permissions::from_mode(0o777)).unwrap();
    let error = socket::bind(&shared.join("kms.sock"), 0o600).unwrap_err();
    assert!(error.to_string().contains("chmod 700"), "{error}");
    assert_eq!(
        mode(&shared),
        0o777,
        "never changes a directory it did not make"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_drains_in_flight_calls_then_removes_the_socket() {
    let writer = TestPlugin::start().await;
    let encrypted = writer
        .v2()
        .await
        .encrypt(EncryptRequest {
            plaintext: vec![4; 32],
            uid: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    let (release, released) = watch::channel(false);
    let (started, mut unwraps_started) = watch::channel(0);
    // The local key ring, with unwrap held until the test releases it, so a Decrypt can be in
    // flight when shutdown begins.
    let held = UnwrapHook::new(util::key_ring(&writer.key_dir), move |_| {
        started.send_modify(|count| *count += 1);
        let mut released = released.clone();
        async move {
            let _ = released.wait_for(|released| *released).await;
        }
    });
    let mut reader = TestPlugin::start_on(
        short_tempdir(),
        writer.key_dir.clone(),
        Arc::new(held),
        Default::default(),
    )
    .await;
    let mut client = reader.v2().await;
    let in_flight = tokio::spawn(async move {
        client
            .decrypt(DecryptRequest {
                ciphertext: encrypted.ciphertext,
                uid: String::new(),
                key_id: encrypted.key_id.to_string(),
                annotations: (*encrypted.annotations).clone(),
            })
            .await
    });
    unwraps_started.wait_for(|count| *count == 1).await.unwrap();

    reader.begin_stop();
    let socket = reader.socket.clone();
    wait_until(
        "the plugin stops accepting connections",
        Duration::from_secs(10),
        || {
            let socket = socket.clone();
            async move { tokio::net::UnixStream::connect(&socket).await.is_err() }
        },
    )
    .await;
    assert!(
        !in_flight.is_finished(),
        "the in-flight Decrypt is still being served"
    );

    release.send(true).unwrap();
    let decrypted = in_flight
        .await
        .unwrap()
        .expect("the in-flight call completes");
    assert_eq!(decrypted.into_inner().plaintext, vec![4; 32]);
    reader.finish_stop().await;
    assert!(
        !reader.socket.exists(),
        "the socket is removed after draining"
    );
    writer.stop().await;
}
