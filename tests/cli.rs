//! The `kube-kms` binary as an operator uses it: `serve` with no arguments, `probe`, `keys`,
//! signals, and configuration errors that name the setting.

mod util;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use util::{BIN, ServedBinary};

/// A command with a clean environment: HOME and XDG_RUNTIME_DIR in `root`, no KUBE_KMS_*.
fn kube_kms(root: &Path) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root.join("home"))
        .env("XDG_RUNTIME_DIR", root.join("run"))
        // Tests run plugins in parallel: each takes a free port for its health endpoints.
        .env("KUBE_KMS_HEALTH_ADDRESS", "127.0.0.1:0");
    command
}

/// Starts `serve` with `args` in a clean environment; returns it and the endpoint its
/// EncryptionConfiguration names.
fn start_serve(root: &Path, args: &[&str]) -> (ServedBinary, String) {
    let mut command = kube_kms(root);
    command.arg("serve").args(args);
    start_command(command, root)
}

/// Starts `command` and waits for it to serve; returns it and the endpoint it printed.
fn start_command(command: Command, root: &Path) -> (ServedBinary, String) {
    let server = ServedBinary::start(command, &root.join("serve.log"));
    let endpoint = format!("unix://{}", server.socket.display());
    (server, endpoint)
}

fn run(root: &Path, args: &[&str]) -> Output {
    kube_kms(root).args(args).output().expect("kube-kms runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn serve_with_no_arguments_works_and_probe_round_trips() {
    let root = util::short_tempdir();
    let (mut server, endpoint) = start_serve(root.path(), &[]);
    let socket: PathBuf = root.path().join("run/kube-kms/kms.sock");
    assert_eq!(endpoint, format!("unix://{}", socket.display()));
    assert!(
        root.path()
            .join("home/.local/state/kube-kms/local-keys/v1.key")
            .exists()
    );

    let probe = run(root.path(), &["probe"]);
    assert!(
        probe.status.success(),
        "{}{}",
        text(&probe.stdout),
        text(&probe.stderr)
    );
    assert!(
        text(&probe.stdout).contains("verdict: OK"),
        "{}",
        text(&probe.stdout)
    );

    server.signal("TERM");
    assert!(server.wait_for_exit(Duration::from_secs(10)).success());
    assert!(!socket.exists(), "SIGTERM removes the socket");
}

#[test]
fn keys_rotate_then_sighup_moves_the_plugin_to_the_new_key_id() {
    let root = util::short_tempdir();
    let (server, _endpoint) = start_serve(root.path(), &["--refresh-interval", "1h"]);
    let before = text(&run(root.path(), &["probe"]).stdout);

    let rotated = run(root.path(), &["keys", "rotate"]);
    assert!(rotated.status.success(), "{}", text(&rotated.stderr));
    let rotated = text(&rotated.stdout);
    let new_key_id = rotated
        .split("key_id ")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    assert!(!before.contains(new_key_id));

    let listed = text(&run(root.path(), &["keys", "list"]).stdout);
    assert!(
        listed
            .lines()
            .any(|line| line.starts_with('2') && line.contains(new_key_id) && line.ends_with('*')),
        "{listed}"
    );

    server.signal("HUP");
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let probe = text(&run(root.path(), &["probe"]).stdout);
        if probe.contains(new_key_id) && probe.contains("verdict: OK") {
            break;
        }
        assert!(Instant::now() < give_up, "SIGHUP did not rotate: {probe}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn probe_without_a_plugin_fails_with_a_clear_verdict() {
    let root = util::short_tempdir();
    let probe = run(
        root.path(),
        &[
            "probe",
            "--socket",
            "/nonexistent/kms.sock",
            "--timeout",
            "1s",
        ],
    );
    assert!(!probe.status.success());
    assert!(
        text(&probe.stdout).contains("verdict: FAILED — cannot connect"),
        "{}",
        text(&probe.stdout)
    );
}

#[test]
fn every_bad_setting_is_refused_at_start_naming_the_setting() {
    let root = util::short_tempdir();
    let config = root.path().join("kube-kms.yaml");
    std::fs::write(&config, "refresh_interval: 1m\nkek_max_age: forever\n").unwrap();
    let typo = root.path().join("typo.yaml");
    std::fs::write(&typo, "socket_path: /x.sock\n").unwrap();

    type Case<'a> = (Vec<&'a str>, Vec<(&'a str, &'a str)>, &'a str);
    let cases: Vec<Case> = vec![
        (
            vec!["--refresh-interval", "soon"],
            vec![],
            "refresh_interval (--refresh-interval / KUBE_KMS_REFRESH_INTERVAL)",
        ),
        (vec![], vec![("KUBE_KMS_CACHE_SIZE", "0")], "cache_size"),
        (vec![], vec![("KUBE_KMS_PROVIDER", "vault")], "provider"),
        (
            vec!["--config", config.to_str().unwrap()],
            vec![],
            "kek_max_age",
        ),
        (
            vec!["--config", typo.to_str().unwrap()],
            vec![],
            "socket_path",
        ),
        (
            vec!["--socket-mode", "0666"],
            vec![],
            "\"0600\" or \"0660\"",
        ),
    ];
    for (args, env, expected) in cases {
        let mut command = kube_kms(root.path());
        command.arg("serve").args(&args).envs(env.iter().copied());
        let output = command.output().unwrap();
        let stderr = text(&output.stderr);
        assert!(!output.status.success(), "{args:?} {env:?} should fail");
        assert!(stderr.contains(expected), "{args:?} {env:?}: {stderr}");
    }
    assert!(
        !root.path().join("run/kube-kms/kms.sock").exists(),
        "no socket on a bad config"
    );
}

#[test]
fn a_flag_overrides_the_environment_which_overrides_the_file() {
    let root = util::short_tempdir();
    let config = root.path().join("kube-kms.yaml");
    std::fs::write(
        &config,
        format!("socket: {}/file.sock\n", root.path().display()),
    )
    .unwrap();
    let env_socket = format!("{}/env.sock", root.path().display());
    let flag_socket = format!("{}/flag.sock", root.path().display());

    let mut with_env = kube_kms(root.path());
    with_env
        .args(["serve", "--config", config.to_str().unwrap()])
        .env("KUBE_KMS_SOCKET", &env_socket);
    let (server, endpoint) = start_command(with_env, root.path());
    assert_eq!(endpoint, format!("unix://{env_socket}"));
    drop(server);

    let mut with_flag = kube_kms(root.path());
    with_flag
        .args([
            "serve",
            "--config",
            config.to_str().unwrap(),
            "--socket",
            &flag_socket,
        ])
        .env("KUBE_KMS_SOCKET", &env_socket);
    let (server, endpoint) = start_command(with_flag, root.path());
    assert_eq!(endpoint, format!("unix://{flag_socket}"));
    drop(server);

    let (server, endpoint) = start_serve(root.path(), &["--config", config.to_str().unwrap()]);
    assert_eq!(
        endpoint,
        format!("unix://{}/file.sock", root.path().display())
    );
    drop(server);
}
