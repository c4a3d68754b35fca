//! Process and socket hardening, observed from outside a running `kube-kms serve`: not dumpable,
//! RLIMIT_CORE 0, memory locked (or a warning saying why not), the warning for root and
//! `--refuse-root`, and a socket given to a group with mode 0660 in a 0710 directory.

mod util;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use util::{BIN, ServedBinary};

/// The conventional uid and gid of `nobody` / `nogroup`, used to run the plugin unprivileged
/// when the tests run as root.
const NOBODY: u32 = 65534;

/// How long the hardening log lines may trail the printed EncryptionConfiguration.
const LOG_DEADLINE: Duration = Duration::from_secs(10);

/// Starts `serve` with HOME and XDG_RUNTIME_DIR in `root`, as `uid` when given, and waits
/// until it serves; its stderr goes to `root`/serve.log.
fn start(root: &Path, uid: Option<u32>, args: &[&str]) -> ServedBinary {
    ServedBinary::start(serve_command(root, uid, args), &root.join("serve.log"))
}

fn proc_file(plugin: &ServedBinary, name: &str) -> String {
    std::fs::read_to_string(format!("/proc/{}/{name}", plugin.pid())).expect("/proc is readable")
}

/// A field of /proc/<pid>/status, e.g. "VmLck".
fn status_field(plugin: &ServedBinary, field: &str) -> String {
    proc_file(plugin, "status")
        .lines()
        .find_map(|line| line.strip_prefix(&format!("{field}:")))
        .unwrap_or_else(|| panic!("/proc/<pid>/status has {field}"))
        .trim()
        .to_owned()
}

/// `kube-kms serve` with `args` in a clean environment (HOME and XDG_RUNTIME_DIR in `root`, no
/// health endpoints), as `uid` when given.
fn serve_command(root: &Path, uid: Option<u32>, args: &[&str]) -> Command {
    let mut command = match uid {
        Some(uid) => util::command_as(uid, root),
        None => Command::new(BIN),
    };
    command
        .arg("serve")
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root.join("home"))
        .env("XDG_RUNTIME_DIR", root.join("run"))
        .env("KUBE_KMS_HEALTH_ADDRESS", "off");
    command
}

fn my_uid() -> u32 {
    grpc_uds::hardening::effective_uid()
}

/// A temporary directory that `uid` owns (the plugin's HOME and runtime directory live in it).
fn root_for(uid: u32) -> tempfile::TempDir {
    let dir = util::short_tempdir();
    std::os::unix::fs::chown(dir.path(), Some(uid), Some(uid)).expect("chown the test directory");
    dir
}

/// /proc/<pid>/limits' "Max core file size" soft and hard values.
fn core_limit(limits: &str) -> (String, String) {
    let line = limits
        .lines()
        .find(|line| line.starts_with("Max core file size"))
        .expect("/proc/<pid>/limits lists the core file size");
    let mut fields = line["Max core file size".len()..].split_whitespace();
    (
        fields.next().unwrap_or_default().to_owned(),
        fields.next().unwrap_or_default().to_owned(),
    )
}

#[test]
fn the_running_plugin_is_not_dumpable_and_writes_no_core_dumps() {
    // Non-dumpable shows from outside as /proc/<pid>/* belonging to root although the process
    // runs as someone else. As root, run the plugin as nobody to see it.
    let uid = if my_uid() == 0 { NOBODY } else { my_uid() };
    let root = root_for(uid);
    let plugin = start(root.path(), (my_uid() == 0).then_some(uid), &[]);

    let status_uids = status_field(&plugin, "Uid");
    assert!(
        status_uids
            .split_whitespace()
            .all(|id| id == uid.to_string()),
        "runs as {uid}: {status_uids}"
    );
    // The kernel gives the files of a non-dumpable process's /proc/<pid>/ to root.
    for file in ["status", "environ", "mem"] {
        let meta = std::fs::metadata(format!("/proc/{}/{file}", plugin.pid())).expect("/proc");
        assert_eq!(
            meta.uid(),
            0,
            "/proc/<pid>/{file} belongs to uid {}: the process is dumpable",
            meta.uid()
        );
    }
    assert_eq!(
        core_limit(&proc_file(&plugin, "limits")),
        ("0".to_owned(), "0".to_owned())
    );
    let logs = plugin.wait_for_log("core dumps off (RLIMIT_CORE 0)", LOG_DEADLINE);
    assert!(logs.contains("process is not dumpable"), "{logs}");
}

#[test]
fn memory_is_locked_where_allowed_and_a_warning_says_why_not_elsewhere() {
    let root = root_for(my_uid());
    let plugin = start(root.path(), None, &[]);
    let logs = plugin.wait_for_log("memory ", LOG_DEADLINE);
    let locked_kib: u64 = status_field(&plugin, "VmLck")
        .trim_end_matches("kB")
        .trim()
        .parse()
        .expect("VmLck is a number of kB");
    if logs.contains("memory locked") {
        assert!(locked_kib > 0, "logs say locked but VmLck is 0:\n{logs}");
    } else {
        assert!(logs.contains("memory NOT locked"), "{logs}");
        assert_eq!(locked_kib, 0);
    }
    // As root (with CAP_IPC_LOCK, as on CI) locking must have happened.
    let caps = proc_file(&plugin, "status");
    let cap_eff = caps
        .lines()
        .find_map(|line| line.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    if cap_eff & (1 << 14) != 0 {
        assert!(logs.contains("memory locked"), "{logs}");
    }
}

#[test]
fn an_unprivileged_plugin_without_a_memlock_allowance_serves_with_a_warning() {
    if my_uid() != 0 {
        return; // needs root to start the plugin as nobody
    }
    let root = root_for(NOBODY);
    let plugin = start(root.path(), Some(NOBODY), &[]);
    let logs = plugin.wait_for_log("memory ", LOG_DEADLINE);
    // nobody has no CAP_IPC_LOCK; unless the hard limit is unlimited, locking is skipped.
    if !logs.contains("memory locked") {
        assert!(logs.contains("memory NOT locked"), "{logs}");
        assert!(logs.contains("RLIMIT_MEMLOCK"), "{logs}");
    }
    assert!(!logs.contains("RUNNING AS ROOT"), "{logs}");
}

#[test]
fn root_gets_a_loud_warning_and_refuse_root_stops_it() {
    if my_uid() != 0 {
        return; // the behaviour under test is root's
    }
    let root = root_for(0);
    let plugin = start(root.path(), None, &[]);
    plugin.wait_for_log("RUNNING AS ROOT", LOG_DEADLINE);
    drop(plugin);

    for (flag, env) in [(Some("--refuse-root"), None), (None, Some("true"))] {
        let mut command = serve_command(root.path(), None, flag.as_slice());
        if let Some(value) = env {
            command.env("KUBE_KMS_REFUSE_ROOT", value);
        }
        let output = command.output().expect("kube-kms runs");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{stderr}");
        assert!(stderr.contains("refusing to run as root"), "{stderr}");
    }
}

#[tokio::test]
async fn a_socket_group_gets_mode_0660_in_a_0710_directory() {
    let root = util::short_tempdir();
    // A group this process may give files: any group as root, its own group otherwise.
    let gid = if my_uid() == 0 {
        NOBODY
    } else {
        std::fs::metadata(root.path()).expect("tempdir").gid()
    };
    let socket = root.path().join("run/kube-kms/kms.sock");
    let (_listener, bound) =
        grpc_uds::socket::bind_with_group(&socket, 0o660, Some(gid)).expect("binds");
    let meta = std::fs::symlink_metadata(bound.path()).expect("socket exists");
    assert_eq!(
        (meta.gid(), meta.permissions().mode() & 0o7777),
        (gid, 0o660)
    );
    let dir = std::fs::metadata(socket.parent().expect("parent")).expect("socket dir");
    assert_eq!((dir.gid(), dir.permissions().mode() & 0o7777), (gid, 0o710));
}

/// A Decrypt whose KEK is not cached, so it waits on the stuck unwrap.
fn uncached_decrypt() -> kube_kms::proto::v2::DecryptRequest {
    kube_kms::proto::v2::DecryptRequest {
        ciphertext: vec![1; 1 + 12 + 32 + 16],
        uid: "deadline".into(),
        key_id: "stuck-key-id".into(),
        annotations: kube_kms::envelope::format::annotations("1", &[2; 40]),
    }
}

/// Request deadlines are enforced by the server: a call ends at the client's `grpc-timeout` when
/// that is shorter, and at the server's own 3 s limit when the client sends none — whatever the
/// key service does.
#[tokio::test]
async fn a_call_ends_at_its_grpc_timeout_or_the_server_limit() {
    let dir = util::short_tempdir();
    let key_dir = dir.path().join("keys");
    // The local key ring, with an unwrap that never answers in time: a Decrypt that misses
    // the cache hangs on it.
    let stuck = util::UnwrapHook::new(util::key_ring(&key_dir), |_| {
        tokio::time::sleep(Duration::from_secs(60))
    });
    let plugin = util::TestPlugin::start_on(
        dir,
        key_dir,
        Arc::new(stuck),
        kube_kms::envelope::kek::RotationPolicy::DEFAULT,
    )
    .await;
    let mut client = plugin.v2().await;
    let ended = |code: tonic::Code| {
        matches!(
            code,
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded | tonic::Code::Unavailable
        )
    };

    let mut request = tonic::Request::new(uncached_decrypt());
    request.set_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let status = client
        .decrypt(request)
        .await
        .expect_err("the call must end");
    assert!(ended(status.code()), "{status:?}");
    assert!(
        started.elapsed() < Duration::from_millis(1500),
        "{:?}",
        started.elapsed()
    );

    // No grpc-timeout at all: the server's limit (CALL_TIMEOUT) still ends the call.
    let started = Instant::now();
    let status = client
        .decrypt(tonic::Request::new(uncached_decrypt()))
        .await
        .expect_err("the call must end");
    let elapsed = started.elapsed();
    assert!(ended(status.code()), "{status:?}");
    assert!(
        elapsed >= kube_kms::server::CALL_TIMEOUT - Duration::from_millis(100)
            && elapsed < kube_kms::server::CALL_TIMEOUT + Duration::from_secs(1),
        "{elapsed:?}"
    );
    plugin.stop().await;
}
