//! kube-apiserver's side of the socket, spoken by an independent client: Python grpcio with
//! stubs generated from proto/ (tests/python/test_kms_socket.py), against the real `kube-kms
//! serve` binary on a temporary Unix socket.
//!
//! This test never skips: without python3 or grpcio-tools it fails and says what to install.
//! It never sleeps in place of a condition: every wait polls with a deadline.

mod util;

use std::fs::{self, File};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use util::{BIN, ServedBinary};

const PYTHON_TEST: &str = "tests/python/test_kms_socket.py";
const INSTALL_HINT: &str = "install Python 3.11+ and the client's packages with \
     `python3 -m pip install -r tests/python/requirements.txt`";

/// How long the whole Python suite may take; it normally needs a few seconds.
const PYTHON_DEADLINE: Duration = Duration::from_secs(300);
/// How long the server may take to drain and exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(10);
/// sun_path holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Starts `kube-kms serve` on `socket` with its stderr in `logs`/serve.err, and returns once it
/// serves.
fn start_server(socket: &Path, state_dir: &Path, logs: &Path) -> ServedBinary {
    let mut command = Command::new(BIN);
    command
        .arg("serve")
        .arg("--socket")
        .arg(socket)
        .arg("--state-dir")
        .arg(state_dir)
        .args(["--refresh-interval", "100ms", "--log-level", "debug"])
        .args(["--health-address", "127.0.0.1:0"]);
    remove_kube_kms_settings(&mut command);
    ServedBinary::start(command, &logs.join("serve.err"))
}

/// Keeps a developer's KUBE_KMS_* settings (config file, socket, …) out of the child, so the
/// test runs the same everywhere.
fn remove_kube_kms_settings(command: &mut Command) {
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("KUBE_KMS_") {
            command.env_remove(name);
        }
    }
}

/// Fails with an install hint unless python3 can import grpc and grpc_tools.
fn require_python_client() {
    let output = Command::new("python3")
        .args([
            "-c",
            "import sys, grpc, grpc_tools.protoc; \
             assert sys.version_info >= (3, 11), sys.version; print(grpc.__version__)",
        ])
        .output()
        .unwrap_or_else(|error| panic!("cannot run python3 ({error}): {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "python3 cannot import grpc and grpc_tools: {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs the Python suite against the server; returns its exit status and combined output.
fn run_python_suite(socket: &Path, state_dir: &Path, pid: u32, logs: &Path) -> (bool, String) {
    let log = logs.join("python.log");
    let out = File::create(&log).expect("create python.log");
    let err = out.try_clone().expect("clone python.log");
    let mut command = Command::new("python3");
    command
        .args(["-m", "unittest", "-v", PYTHON_TEST])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err);
    remove_kube_kms_settings(&mut command);
    command
        .env("KUBE_KMS_BIN", BIN)
        .env("KUBE_KMS_SOCKET", socket)
        .env("KUBE_KMS_STATE_DIR", state_dir)
        .env("KUBE_KMS_PID", pid.to_string())
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1");
    let mut child = command
        .spawn()
        .unwrap_or_else(|error| panic!("cannot run python3 ({error}): {INSTALL_HINT}"));
    let deadline = Instant::now() + PYTHON_DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for python3") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(POLL);
    };
    let output = fs::read_to_string(&log).unwrap_or_default();
    match status {
        Some(status) => (status.success(), output),
        None => (
            false,
            format!("python3 killed after {PYTHON_DEADLINE:?}\n{output}"),
        ),
    }
}

#[test]
fn python_grpcio_client_speaks_the_kms_contract() {
    require_python_client();
    let dir = tempfile::Builder::new()
        .prefix("kk")
        .tempdir()
        .expect("temporary directory");
    let socket = dir.path().join("kms.sock");
    let state_dir = dir.path().join("state");
    assert!(
        socket.as_os_str().len() <= MAX_SOCKET_PATH,
        "socket path {} is longer than {MAX_SOCKET_PATH} bytes; set TMPDIR to a shorter directory",
        socket.display()
    );

    let mut server = start_server(&socket, &state_dir, dir.path());

    let started = Instant::now();
    let (passed, output) = run_python_suite(&socket, &state_dir, server.pid(), dir.path());
    let elapsed = started.elapsed();
    println!("{output}\npython suite took {elapsed:.2?}");
    assert!(
        passed,
        "the Python grpcio client failed after {elapsed:.2?}:\n{output}\n{}",
        server.logs()
    );

    server.signal("TERM");
    let status = server.wait_for_exit(STOP_DEADLINE);
    assert_eq!(
        status.code(),
        Some(0),
        "kube-kms serve exited with {status} after SIGTERM\n{}",
        server.logs()
    );
    assert!(
        fs::symlink_metadata(&socket).is_err(),
        "kube-kms serve left its socket {} behind after SIGTERM",
        socket.display()
    );
}
