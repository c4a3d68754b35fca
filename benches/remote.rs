//! The figures that involve a remote key service or a separate process, measured once per run
//! (criterion's statistics do not fit them: a cold start happens once, and peak RSS is a
//! high-water mark). Results go to target/bench-results/remote.json for `benches/summary.rs`.
//!
//! - cold start: a fresh plugin decrypts ciphertexts under N distinct wrapped KEKs with M
//!   concurrent callers while each remote call costs 20 ms: wall time against the least M
//!   sequential callers can take (⌈N/M⌉ × 20 ms), and remote calls made against N.
//! - steady state: the same Decrypts again, plus Encrypts: remote calls made (target 0).
//! - per-call-remote: 64 callers doing Encrypt+Decrypt over the socket against the pattern of
//!   Azure's Go plugin (one provider call per Encrypt and per Decrypt, same 20 ms, same
//!   provider trait, same stack): throughput ratio.
//! - memory: peak RSS (VmHWM) of `kube-kms serve` as a child process under 64 callers.
//!
//! The 20 ms comes from [`support::LatencyModel`] over a local key ring: a latency model that
//! stands in until the Key Vault emulator lands, not a model of Azure's behaviour. Under
//! `cargo test --benches` (no `--bench` argument) every figure runs at a tiny size as a smoke
//! test and nothing is written.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kube_kms::envelope::Sealed;
use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::proto::v2::{DecryptRequest, EncryptResponse};

mod support;
use support::{Call, Figure, LatencyModel, PerCallRemote, REMOTE_LATENCY, Served, Service};

/// Sizes of one run.
struct Plan {
    /// Distinct wrapped KEKs in the cold start.
    distinct_keks: usize,
    /// Concurrent callers in the cold start.
    cold_callers: usize,
    /// Cold starts measured; the median is reported.
    cold_runs: usize,
    /// Concurrent callers for throughput and memory.
    callers: usize,
    /// Encrypt+Decrypt pairs per caller for the per-call-remote pattern (20 ms × 2 each).
    remote_pairs_per_caller: u64,
    /// Encrypt+Decrypt pairs per caller for kube-kms.
    local_pairs_per_caller: u64,
    /// Encrypt+Decrypt pairs per caller against the child process, for peak RSS.
    rss_pairs_per_caller: u64,
}

const BENCH: Plan = Plan {
    distinct_keks: 64,
    cold_callers: 16,
    cold_runs: 3,
    callers: 64,
    remote_pairs_per_caller: 25,
    local_pairs_per_caller: 200,
    rss_pairs_per_caller: 300,
};

const SMOKE: Plan = Plan {
    distinct_keks: 4,
    cold_callers: 2,
    cold_runs: 1,
    callers: 4,
    remote_pairs_per_caller: 1,
    local_pairs_per_caller: 2,
    rss_pairs_per_caller: 2,
};

fn main() {
    let bench = support::bench_mode();
    let plan = if bench { &BENCH } else { &SMOKE };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let mut figures = Vec::new();
    figures.extend(runtime.block_on(cold_start(plan)));
    figures.extend(runtime.block_on(per_call_remote(plan)));
    figures.extend(runtime.block_on(memory(plan)));

    for figure in &figures {
        println!("{}", serde_json::to_string(figure).expect("json"));
    }
    if bench {
        let dir = support::target_dir().join("bench-results");
        std::fs::create_dir_all(&dir).expect("results directory");
        let path = dir.join("remote.json");
        std::fs::write(&path, serde_json::to_string_pretty(&figures).expect("json"))
            .expect("write results");
        println!("wrote {}", path.display());
    } else {
        println!("remote: smoke run passed (run `cargo bench` for figures)");
    }
}

/// Ciphertexts under `count` distinct KEKs, written by a plugin whose every KEK seals once.
async fn distinct_kek_ciphertexts(key_dir: &Path, count: usize) -> Vec<Sealed> {
    let writer = support::envelope_with(
        support::key_ring(key_dir),
        RotationPolicy {
            max_encryptions: 1,
            ..RotationPolicy::DEFAULT
        },
    )
    .await;
    let mut sealed = Vec::with_capacity(count);
    for _ in 0..count {
        sealed.push(writer.encrypt(&support::seed()).await.expect("encrypt"));
    }
    let distinct: std::collections::HashSet<_> = sealed
        .iter()
        .map(|sealed| sealed.annotations.get(support::WRAPPED_KEK).cloned())
        .collect();
    assert_eq!(distinct.len(), count, "one KEK per ciphertext");
    sealed
}

async fn cold_start(plan: &Plan) -> Vec<Figure> {
    let key_dir = support::short_tempdir();
    let sealed = Arc::new(distinct_kek_ciphertexts(key_dir.path(), plan.distinct_keks).await);
    let (n, m) = (plan.distinct_keks, plan.cold_callers);
    let mut walls = Vec::new();
    let mut cold_calls = Vec::new();
    let mut steady_calls = Vec::new();
    for _ in 0..plan.cold_runs {
        // A fresh process's view: empty cache, provider 20 ms away.
        let remote = LatencyModel::new(support::key_ring(key_dir.path()), REMOTE_LATENCY);
        let envelope = support::envelope(remote.clone()).await;
        let before = remote.remote_calls();
        let started = Instant::now();
        decrypt_all(&envelope, &sealed, m).await;
        walls.push(started.elapsed());
        cold_calls.push(remote.remote_calls() - before);

        // Steady state: every KEK cached, Encrypt under the active KEK.
        let before = remote.remote_calls();
        decrypt_all(&envelope, &sealed, m).await;
        for _ in 0..n {
            let out = envelope.encrypt(&support::seed()).await.expect("encrypt");
            std::hint::black_box(out);
        }
        steady_calls.push(remote.remote_calls() - before);
    }
    walls.sort();
    let wall = walls[walls.len() / 2].as_secs_f64() * 1e3;
    let cold = *cold_calls.iter().max().expect("a run");
    let steady = *steady_calls.iter().max().expect("a run");
    let floor = n.div_ceil(m) as f64 * REMOTE_LATENCY.as_secs_f64() * 1e3;
    let steady_ops = (n * m + n) as f64;
    vec![
        Figure::new(
            "cold_start_wall",
            &format!("cold start: {n} distinct KEKs, {m} callers, 20 ms/remote call — wall"),
            (wall, "ms"),
            (
                &format!("⌈N/M⌉ × 20 ms, the least {m} sequential callers can take"),
                floor,
            ),
        ),
        Figure::new(
            "cold_start_remote_calls",
            &format!("cold start: {n} distinct KEKs, {m} callers — remote calls"),
            (cold as f64, "calls"),
            ("distinct KEKs", n as f64),
        )
        .target("= distinct KEKs", cold as usize == n),
        Figure::new(
            "steady_state_remote_calls",
            &format!(
                "steady state: {} Decrypts + {n} Encrypts — remote calls",
                n * m
            ),
            (steady as f64, "calls"),
            (
                "per-call-remote pattern, one call per operation",
                steady_ops,
            ),
        )
        .target("0 calls", steady == 0),
    ]
}

/// Each of `callers` tasks decrypts every ciphertext, starting at its own offset.
async fn decrypt_all(
    envelope: &Arc<kube_kms::envelope::Envelope>,
    sealed: &Arc<Vec<Sealed>>,
    callers: usize,
) {
    let mut tasks = tokio::task::JoinSet::new();
    for caller in 0..callers {
        let envelope = Arc::clone(envelope);
        let sealed = Arc::clone(sealed);
        tasks.spawn(async move {
            let n = sealed.len();
            for step in 0..n {
                let one = &sealed[(caller * n / callers + step) % n];
                let plaintext = envelope
                    .decrypt(&one.ciphertext, &one.key_id, &one.annotations)
                    .await
                    .expect("decrypt");
                std::hint::black_box(plaintext);
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("caller");
    }
}

async fn per_call_remote(plan: &Plan) -> Vec<Figure> {
    let key_dir = support::short_tempdir();
    let callers = plan.callers;

    let remote = LatencyModel::new(support::key_ring(key_dir.path()), REMOTE_LATENCY);
    let theirs = Served::start(Service::PerCallRemote(
        PerCallRemote::new(remote.clone()).await,
    ));
    let pairs = plan.remote_pairs_per_caller * callers as u64;
    let call = Call::RoundTrip(support::encrypt_request(support::seed()));
    let client = theirs.client().await;
    let before = remote.remote_calls();
    let wall = support::drive(&client, callers, pairs, &call).await;
    let their_calls = remote.remote_calls() - before;
    let their_rate = pairs as f64 / wall.as_secs_f64();
    drop(theirs);

    let remote = LatencyModel::new(support::key_ring(key_dir.path()), REMOTE_LATENCY);
    let ours = Served::start(Service::KubeKms(support::envelope(remote.clone()).await));
    let client = ours.client().await;
    support::drive(&client, callers, callers as u64, &call).await;
    let pairs = plan.local_pairs_per_caller * callers as u64;
    let before = remote.remote_calls();
    let wall = support::drive(&client, callers, pairs, &call).await;
    let our_calls = remote.remote_calls() - before;
    let our_rate = pairs as f64 / wall.as_secs_f64();
    drop(ours);

    vec![
        Figure::new(
            "per_call_remote_throughput",
            &format!(
                "Encrypt+Decrypt pairs/s over the socket, {callers} callers, 20 ms/remote call"
            ),
            (our_rate, "pairs/s"),
            (
                "per-call-remote pattern (Azure's Go plugin: a remote call per Encrypt and per Decrypt)",
                their_rate,
            ),
        ),
        Figure::new(
            "per_call_remote_calls",
            "remote calls made during those pairs",
            (our_calls as f64, "calls"),
            ("per-call-remote pattern, same pairs", their_calls as f64),
        )
        .target("0 calls", our_calls == 0),
    ]
}

/// A `kube-kms serve` child process on a temporary socket, killed when dropped.
struct ServeProcess {
    child: Child,
    socket: PathBuf,
    _dir: tempfile::TempDir,
}

impl ServeProcess {
    async fn start() -> Self {
        let dir = support::short_tempdir();
        let socket = dir.path().join("run/kms.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_kube-kms"))
            .arg("serve")
            .arg("--socket")
            .arg(&socket)
            .arg("--state-dir")
            .arg(dir.path().join("state"))
            .arg("--log-level")
            .arg("error")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("kube-kms serve starts");
        let mut process = Self {
            child,
            socket,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while !process.socket.exists() {
            if let Ok(Some(status)) = process.child.try_wait() {
                panic!("kube-kms serve exited early: {status}");
            }
            assert!(Instant::now() < deadline, "kube-kms serve did not bind");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        process
    }

    /// A `VmHWM`/`VmRSS`-style line of /proc/<pid>/status, in KiB.
    fn status_kib(&self, field: &str) -> f64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()))
            .expect("/proc/<pid>/status");
        status
            .lines()
            .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
            .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or_else(|| panic!("{field} in /proc/<pid>/status"))
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn memory(plan: &Plan) -> Vec<Figure> {
    let serve = ServeProcess::start().await;
    let client = support::client(&serve.socket).await;
    let call = Call::RoundTrip(support::encrypt_request(support::seed()));
    support::drive(&client, 1, 1, &call).await;
    let idle = serve.status_kib("VmHWM");
    let pairs = plan.rss_pairs_per_caller * plan.callers as u64;
    support::drive(&client, plan.callers, pairs, &call).await;
    // Distinct ciphertexts too, so Decrypt allocates as it would for real objects.
    let more: Vec<EncryptResponse> = {
        let mut client = client.clone();
        let mut out = Vec::new();
        for _ in 0..plan.callers {
            let request = support::encrypt_request(support::seed());
            out.push(client.encrypt(request).await.expect("Encrypt").into_inner());
        }
        out
    };
    let mut tasks = tokio::task::JoinSet::new();
    for sealed in more {
        let mut client = client.clone();
        let request: DecryptRequest = support::decrypt_request(&sealed);
        tasks.spawn(async move {
            for _ in 0..10 {
                client.decrypt(request.clone()).await.expect("Decrypt");
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.expect("caller");
    }
    let peak = serve.status_kib("VmHWM");
    let mib = |kib: f64| kib / 1024.0;
    vec![
        Figure::new(
            "peak_rss",
            &format!(
                "peak RSS (VmHWM) of `kube-kms serve` under {} callers",
                plan.callers
            ),
            (mib(peak), "MiB"),
            ("the same process idle after start (VmHWM)", mib(idle)),
        )
        .target("< 32 MiB", mib(peak) < 32.0),
    ]
}
