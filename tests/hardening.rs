//! Process and socket hardening, observed from outside a running `kube-kms serve`: not dumpable,
//! RLIMIT_CORE 0, memory locked (or a warning saying why not), the warning for root and
//! `--refuse-root`, and a socket given to a group with mode 0660 in a 0710 directory.

mod util;

use std::io::{BufRead, BufReader};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const BIN: &str = env!("CARGO_BIN_EXE_kube-kms");

/// The conventional uid and gid of `nobody` / `nogroup`, used to run the plugin unprivileged
/// when the tests run as root.
const NOBODY: u32 = 65534;

/// A running `kube-kms serve` whose stderr is collected; killed when dropped.
struct Plugin {
    child: Child,
    stderr: Arc<Mutex<String>>,
}

impl Drop for Plugin {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Plugin {
    /// Starts `serve` with HOME and XDG_RUNTIME_DIR in `root`, as `uid` when given, and waits
    /// until it serves (it prints its EncryptionConfiguration once the socket is open).
    fn start(root: &Path, uid: Option<u32>, args: &[&str]) -> Self {
        let mut command = serve_command(root, args);
        if let Some(uid) = uid {
            // The build directory may sit under a path `uid` cannot traverse (e.g. /root):
            // run a copy of the binary from the test's own directory.
            let binary = root.join("kube-kms");
            if std::fs::hard_link(BIN, &binary).is_err() {
                std::fs::copy(BIN, &binary).expect("copy the binary");
            }
            command = Command::new(&binary);
            command.args(serve_command(root, args).get_args());
            apply_env(&mut command, root);
            command.uid(uid).gid(uid);
        }
        let mut child = command.spawn().expect("kube-kms starts");
        let stderr = collect(child.stderr.take().expect("stderr is piped"));
        let stdout = child.stdout.take().expect("stdout is piped");
        let mut plugin = Self { child, stderr };
        let mut lines = BufReader::new(stdout).lines();
        let serving = lines
            .by_ref()
            .map_while(Result::ok)
            .any(|line| line.trim().starts_with("endpoint: "));
        std::thread::spawn(move || lines.for_each(drop));
        if !serving {
            let _ = plugin.child.wait();
            panic!("kube-kms did not serve:\n{}", plugin.logs());
        }
        plugin
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn logs(&self) -> String {
        self.stderr.lock().expect("stderr buffer").clone()
    }

    /// Waits until the logs contain `needle` (logging may trail the stdout line a little).
    fn wait_for_log(&self, needle: &str) -> String {
        let give_up = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            if logs.contains(needle) {
                return logs;
            }
            assert!(
                Instant::now() < give_up,
                "no {needle:?} in the logs:\n{logs}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn proc_file(&self, name: &str) -> String {
        std::fs::read_to_string(format!("/proc/{}/{name}", self.pid())).expect("/proc is readable")
    }

    /// A field of /proc/<pid>/status, e.g. "VmLck".
    fn status_field(&self, field: &str) -> String {
        self.proc_file("status")
            .lines()
            .find_map(|line| line.strip_prefix(&format!("{field}:")))
            .unwrap_or_else(|| panic!("/proc/<pid>/status has {field}"))
            .trim()
            .to_owned()
    }
}

fn serve_command(root: &Path, args: &[&str]) -> Command {
    let mut command = Command::new(BIN);
    command.arg("serve").args(args);
    apply_env(&mut command, root);
    command
}

/// A clean environment (HOME and XDG_RUNTIME_DIR in `root`, no health endpoints) and pipes.
fn apply_env(command: &mut Command, root: &Path) {
    command
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", root.join("home"))
        .env("XDG_RUNTIME_DIR", root.join("run"))
        .env("KUBE_KMS_HEALTH_ADDRESS", "off")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
}

fn collect(stderr: std::process::ChildStderr) -> Arc<Mutex<String>> {
    let buffer = Arc::new(Mutex::new(String::new()));
    let sink = Arc::clone(&buffer);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let mut sink = sink.lock().expect("stderr buffer");
            sink.push_str(&line);
            sink.push('\n');
        }
    });
    buffer
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
    let plugin = Plugin::start(root.path(), (my_uid() == 0).then_some(uid), &[]);

    let status_uids = plugin.status_field("Uid");
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
        core_limit(&plugin.proc_file("limits")),
        ("0".to_owned(), "0".to_owned())
    );
    let logs = plugin.wait_for_log("core dumps off (RLIMIT_CORE 0)");
    assert!(logs.contains("process is not dumpable"), "{logs}");
}

#[test]
fn memory_is_locked_where_allowed_and_a_warning_says_why_not_elsewhere() {
    let root = root_for(my_uid());
    let plugin = Plugin::start(root.path(), None, &[]);
    let logs = plugin.wait_for_log("memory ");
    let locked_kib: u64 = plugin
        .status_field("VmLck")
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
    let caps = plugin.proc_file("status");
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
    let plugin = Plugin::start(root.path(), Some(NOBODY), &[]);
    let logs = plugin.wait_for_log("memory ");
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
    let plugin = Plugin::start(root.path(), None, &[]);
    plugin.wait_for_log("RUNNING AS ROOT");
    drop(plugin);

    for (flag, env) in [(Some("--refuse-root"), None), (None, Some("true"))] {
        let mut command = serve_command(root.path(), flag.as_slice());
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

/// A provider whose unwrap never answers in time: a Decrypt that misses the cache hangs on it.
struct StuckProvider;

#[async_trait::async_trait]
impl kube_kms::provider::KeyProvider for StuckProvider {
    fn kind(&self) -> &'static str {
        "stuck"
    }

    async fn refresh(
        &self,
    ) -> Result<kube_kms::provider::KeyVersion, kube_kms::provider::ProviderError> {
        kube_kms::provider::KeyVersion::new("stuck-key-id", "1")
    }

    async fn current_key(&self) -> Option<kube_kms::provider::KeyVersion> {
        self.refresh().await.ok()
    }

    async fn wrap(
        &self,
        _key: &kube_kms::provider::KeyVersion,
        _kek: &kube_kms::crypto::SecretKey,
    ) -> Result<Vec<u8>, kube_kms::provider::ProviderError> {
        Ok(vec![1; 40])
    }

    async fn unwrap(
        &self,
        _version: &str,
        _wrapped: &[u8],
    ) -> Result<kube_kms::crypto::SecretKey, kube_kms::provider::ProviderError> {
        tokio::time::sleep(Duration::from_secs(60)).await;
        Err(kube_kms::provider::ProviderError::Misconfigured {
            reason: "stuck".into(),
        })
    }

    async fn health(&self) -> kube_kms::provider::ProviderHealth {
        kube_kms::provider::ProviderHealth::Ok
    }
}

/// A Decrypt whose KEK is not cached, so it waits on the stuck provider.
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
    let key_dir = dir.path().join("unused");
    let plugin = util::TestPlugin::start_on(
        dir,
        key_dir,
        Arc::new(StuckProvider),
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
