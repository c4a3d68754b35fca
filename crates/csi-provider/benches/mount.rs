//! What pod starts and rotation polls cost Key Vault and Entra ID: the provider's production
//! Azure stack ([`wiring::azure_backend`]: an identity proven once per credential, objects read
//! through the per-identity coalescing cache) against the pattern of Azure's own provider, in
//! the same run, against the same Key Vault emulator in this process, with 20 ms added to every
//! Entra ID and vault request by the emulator's latency fault.
//!
//! The baseline is built from Microsoft's SDK directly, as Azure's Go provider uses its own: per
//! Mount a new client-secret credential (one Entra ID token request) and a new `SecretClient`
//! (so one 401 challenge), then one GET per object, one after the other; no cache, nothing
//! coalesced. Only the HTTPS connection pool is shared between Mounts, as Go's default transport
//! is. Its retries are azcore's defaults (3 retries, Retry-After when the answer has one, else
//! (2^n − 1) × 800 ms, jittered).
//!
//! Scenarios, each the same SecretProviderClass (3 secrets, a service principal from
//! nodePublishSecretRef) and N Mounts issued at once:
//! - pod starts: a fresh provider (empty caches, no connection);
//! - rotation poll within the cache's "latest" TTL: the N Mounts again;
//! - rotation poll after that TTL: the N Mounts once the entries expired (the driver polls
//!   every 2 minutes and the TTL is 30 s by default, so every real poll is this case);
//! - 429: a fresh provider against a vault whose secret-read budget is set low.
//!
//! Counts are the emulator's own counters (authenticated secret GETs, 401 challenges, 429
//! answers, Entra ID token requests), per scenario. Times are per Mount (p50, p99) and for the
//! whole round (wall); ratios are kube-kms / baseline, paired per iteration. Results go to
//! target/bench-results/csi-mount.json and target/bench-summary-csi.md, and the table is printed.
//!
//! Under `cargo test --benches` (no `--bench` argument) every scenario runs once with 5 pods,
//! nothing is written and nothing is asserted about time; only that Mounts return the seeded
//! values, and that none fails while the vault is not throttling. Never prints a secret value,
//! a client secret or a token.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_access::Credential;
use azure_access::client::{
    InsecureOverrides, ResolveOverride, Route, TransportOptions, client_options, http_client_with,
};
use azure_access::cloud::Cloud;
use azure_core::http::headers::RETRY_AFTER;
use azure_core::http::policies::{RetryHeaders, RetryPolicy};
use azure_core::http::{HttpClient, RetryOptions, StatusCode};
use azure_security_keyvault_secrets::{SecretClient, SecretClientOptions};
use csi_provider::azure::mount::AzureBackend;
use csi_provider::azure::spec::AzureMountSpec;
use csi_provider::metrics::Metrics;
use csi_provider::request::{MountInput, NodePublishSecrets, PodInfo, ServiceAccountTokens};
use csi_provider::wiring::{self, Settings};
use keyvault_emulator::{
    Emulator, Fault, FaultRule, OpCounts, Operation, Options, RunningEmulator, SecretSpec,
    ThrottleLimits,
};
use secrecy::{ExposeSecret, SecretString};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant;

/// The emulated cloud's vault suffix: `<keyvaultName>.vault.emu.test` reaches the emulator.
const SUFFIX: &str = "vault.emu.test";
/// The class's `keyvaultName`.
const VAULT: &str = "kv-bench";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
/// The service principal whose client id and secret the pods' nodePublishSecretRef holds.
const CLIENT_ID: &str = "5a1c0000-0000-4000-8000-0000000be7c1";
/// The cloud environment file, in the provider's `--cloud-env-dir`.
const CLOUD_FILE: &str = "bench-cloud.json";
/// The class's objects: three secrets.
const OBJECTS: [&str; 3] = ["db-password", "api-token", "session-key"];
/// Added by the emulator to every Entra ID and vault request (not to 401 challenges).
const LATENCY: Duration = Duration::from_millis(20);
/// A Mount's deadline: the provider's 2-minute call limit less its 0.5 s margin.
const MOUNT_BUDGET: Duration = Duration::from_millis(119_500);
/// The throttle budgets' window.
const THROTTLE_WINDOW_SECONDS: u64 = 1;

/// Sizes of one run.
struct Plan {
    /// Mounts issued at once per round.
    pods: usize,
    /// Iterations of the three ordinary scenarios (fresh provider and baseline each time).
    iterations: usize,
    /// The provider's `--cache-latest-ttl`: short, so the "after the TTL" poll comes soon.
    latest_ttl: Duration,
    /// Secret GETs per [`THROTTLE_WINDOW_SECONDS`] the vault allows, one 429 scenario each.
    throttle_budgets: &'static [u32],
}

const BENCH: Plan = Plan {
    pods: 100,
    iterations: 3,
    latest_ttl: Duration::from_secs(5),
    throttle_budgets: &[10, 2],
};

const SMOKE: Plan = Plan {
    pods: 5,
    iterations: 1,
    latest_ttl: Duration::from_secs(1),
    throttle_budgets: &[2],
};

fn main() {
    // `cargo bench` passes `--bench`; `cargo test --benches` does not.
    let bench = std::env::args().any(|arg| arg == "--bench");
    let plan = if bench { &BENCH } else { &SMOKE };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-mounts")
        .enable_all()
        .build()
        .expect("the Mounts' runtime");
    let load_before = load_average();
    let (scenarios, fixture) = runtime.block_on(async {
        let fixture = Fixture::start().await;
        let scenarios = run(plan, &fixture).await;
        (scenarios, fixture)
    });
    drop(fixture);
    let load_after = load_average();

    let table = markdown(plan, &scenarios);
    println!("{table}");
    if !bench {
        // A smoke run checks the bench still measures what it says: with the vault not
        // throttling, every Mount of either side succeeds (with the seeded values, checked in
        // `round`).
        for scenario in scenarios.iter().filter(|s| !s.id.starts_with("throttled")) {
            for (side, rounds) in &scenario.rounds {
                for round in rounds {
                    assert_eq!(
                        round.failed_mounts, 0,
                        "{side} in {}: {:?}",
                        scenario.id, round.first_error
                    );
                }
            }
        }
        println!("mount: smoke run passed (run `cargo bench -p csi-provider --bench mount`)");
        return;
    }
    let results = json!({
        "bench": "csi-mount",
        "unix_time": std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| since.as_secs()),
        "cpus": std::thread::available_parallelism().map_or(0, usize::from),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "pods": plan.pods,
        "objects": OBJECTS.len(),
        "latency_ms_per_request": LATENCY.as_millis() as u64,
        "iterations": plan.iterations,
        "cache_latest_ttl_s": plan.latest_ttl.as_secs_f64(),
        "throttle_window_s": THROTTLE_WINDOW_SECONDS,
        "scenarios": scenarios,
    });
    let target = target_dir();
    let dir = target.join("bench-results");
    std::fs::create_dir_all(&dir).expect("the results directory");
    let json_path = dir.join("csi-mount.json");
    std::fs::write(
        &json_path,
        serde_json::to_string_pretty(&results).expect("JSON"),
    )
    .expect("write the results");
    let md_path = target.join("bench-summary-csi.md");
    std::fs::write(&md_path, &table).expect("write the summary");
    println!("wrote {} and {}", json_path.display(), md_path.display());
}

/// Every scenario, in order.
async fn run(plan: &Plan, fixture: &Fixture) -> Vec<Scenario> {
    let inputs = Arc::new(
        (0..plan.pods)
            .map(|pod| fixture.mount_input(pod))
            .collect::<Vec<_>>(),
    );
    // One Mount per side first, unmeasured: what a process pays once (loading the CA file,
    // the emulator's first connections) would otherwise fall on whichever side goes first.
    for side in [
        Side::Ours(Arc::new(fixture.backend(plan.latest_ttl))),
        Side::Baseline(Arc::new(Baseline::new(fixture))),
    ] {
        round(fixture, &side, &Arc::new(vec![fixture.mount_input(0)])).await;
    }
    let mut starts = Pairs::default();
    let mut within = Pairs::default();
    let mut after = Pairs::default();
    for iteration in 0..plan.iterations {
        let ours = Side::Ours(Arc::new(fixture.backend(plan.latest_ttl)));
        let theirs = Side::Baseline(Arc::new(Baseline::new(fixture)));
        // Who goes first alternates, so load that drifts during a run favours neither.
        let ours_first = iteration % 2 == 0;
        let mut ours_cold_end = Instant::now();
        for turn in 0..2 {
            if (turn == 0) == ours_first {
                starts.ours.push(round(fixture, &ours, &inputs).await);
                ours_cold_end = Instant::now();
                // At once, well within the TTL.
                within.ours.push(round(fixture, &ours, &inputs).await);
            } else {
                starts.baseline.push(round(fixture, &theirs, &inputs).await);
                within.baseline.push(round(fixture, &theirs, &inputs).await);
            }
        }
        // Every "latest" entry was cached before the cold round ended.
        tokio::time::sleep_until(ours_cold_end + plan.latest_ttl + Duration::from_millis(100))
            .await;
        for turn in 0..2 {
            if (turn == 0) == ours_first {
                after.ours.push(round(fixture, &ours, &inputs).await);
            } else {
                after.baseline.push(round(fixture, &theirs, &inputs).await);
            }
        }
    }
    let pods = plan.pods;
    let mut scenarios = vec![
        starts.summarize(
            "pod_starts",
            &format!("{pods} pod starts: a fresh provider, {pods} Mounts at once"),
        ),
        within.summarize(
            "rotation_poll_within_ttl",
            &format!("rotation poll within the cache TTL: the {pods} Mounts again at once"),
        ),
        after.summarize(
            "rotation_poll_after_ttl",
            &format!(
                "rotation poll after the cache TTL ({} s here, 30 s by default): the {pods} \
                 Mounts again at once",
                plan.latest_ttl.as_secs()
            ),
        ),
    ];

    for &budget in plan.throttle_budgets {
        let limits = ThrottleLimits {
            secret_get: budget,
            window_seconds: THROTTLE_WINDOW_SECONDS,
            ..ThrottleLimits::azure()
        };
        let mut pairs = Pairs::default();
        let ours = Side::Ours(Arc::new(fixture.backend(plan.latest_ttl)));
        let theirs = Side::Baseline(Arc::new(Baseline::new(fixture)));
        // Each side starts with a fresh budget window.
        fixture.emulator().set_throttle(Some(limits));
        pairs.ours.push(round(fixture, &ours, &inputs).await);
        fixture.emulator().set_throttle(None);
        fixture.emulator().set_throttle(Some(limits));
        pairs.baseline.push(round(fixture, &theirs, &inputs).await);
        fixture.emulator().set_throttle(None);
        scenarios.push(pairs.summarize(
            &format!("throttled_{budget}_per_s"),
            &format!(
                "429: the vault allows {budget} secret GETs per second; {pods} pod starts at once"
            ),
        ));
    }
    scenarios
}

/// The emulator on its own runtime (as a separate service would be), seeded with the class's
/// secrets and the service principal, and the cloud file the provider reads.
struct Fixture {
    emulator: Option<RunningEmulator>,
    runtime: Option<tokio::runtime::Runtime>,
    dir: tempfile::TempDir,
    client_secret: String,
    /// The seeded values, in [`OBJECTS`] order.
    values: Vec<String>,
}

impl Fixture {
    async fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("bench-vault")
            .enable_all()
            .build()
            .expect("the emulator's runtime");
        // Emulator::start serves on the runtime it is called on.
        let emulator = runtime
            .spawn(Emulator::start(Options {
                extra_names: vec![format!("*.{SUFFIX}")],
                resource: Some(format!("https://{SUFFIX}")),
                tenant_id: Some(TENANT.to_owned()),
                ..Options::key_vault()
            }))
            .await
            .expect("the emulator task")
            .expect("the emulator starts");
        let client_secret = format!("bench-{}", random_hex(16));
        emulator
            .register_client_secret(CLIENT_ID, &client_secret)
            .expect("the service principal");
        let values: Vec<String> = OBJECTS
            .iter()
            .map(|name| {
                let value = format!("{name}-{}", random_hex(16));
                emulator
                    .set_secret(name, SecretSpec::value(&value))
                    .expect("a secret");
                value
            })
            .collect();
        let dir = tempfile::Builder::new()
            .prefix("csi-bench")
            .tempdir()
            .expect("a temporary directory");
        let cloud = json!({
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": format!("{}/", emulator.authority_url()),
            "keyVaultEndpoint": format!("https://{SUFFIX}/"),
            "keyVaultDNSSuffix": SUFFIX,
            "resourceManagerEndpoint": "https://management.emu.test/",
            "resourceIdentifiers": {"keyVault": format!("https://{SUFFIX}")},
        });
        std::fs::write(dir.path().join(CLOUD_FILE), cloud.to_string()).expect("the cloud file");
        // Set-up ran at the emulator's own speed; from here every request costs 20 ms more.
        let millis = u64::try_from(LATENCY.as_millis()).expect("a sane latency");
        emulator.inject(FaultRule::always(Fault::Latency { millis }));
        Self {
            emulator: Some(emulator),
            runtime: Some(runtime),
            dir,
            client_secret,
            values,
        }
    }

    fn emulator(&self) -> &RunningEmulator {
        self.emulator.as_ref().expect("running until dropped")
    }

    /// `<suffix>=<the emulator's address>`, as `--insecure-resolve` takes it.
    fn resolve(&self) -> String {
        format!("{SUFFIX}={}", self.emulator().addr())
    }

    /// The provider as `main` builds it, with these flags.
    fn backend(&self, latest_ttl: Duration) -> AzureBackend {
        let settings = Settings {
            cloud_env_dir: self.dir.path().to_owned(),
            ca_file: Some(self.emulator().ca_pem_path().to_owned()),
            insecure_resolve: vec![self.resolve()],
            cache_latest_ttl: latest_ttl,
            ..Settings::default()
        };
        wiring::azure_backend(&settings, Arc::new(Metrics::default()))
            .expect("the production wiring accepts the settings")
    }

    /// Pod `pod`'s Mount: the class's parameters, the pod, the nodePublishSecretRef.
    fn mount_input(&self, pod: usize) -> MountInput {
        let objects: String = OBJECTS
            .iter()
            .map(|name| format!("  - |\n    objectName: {name}\n    objectType: secret\n"))
            .collect();
        let parameters = [
            ("keyvaultName", VAULT.to_owned()),
            ("tenantID", TENANT.to_owned()),
            ("cloudName", "AzureStackCloud".to_owned()),
            ("cloudEnvFileName", CLOUD_FILE.to_owned()),
            ("objects", format!("array:\n{objects}")),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value))
        .collect();
        let secrets = [
            ("clientid", CLIENT_ID),
            ("clientsecret", &self.client_secret),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), SecretString::from(value.to_owned())))
        .collect();
        MountInput {
            parameters,
            pod: PodInfo {
                name: format!("web-{pod}"),
                namespace: "apps".to_owned(),
                uid: format!("5f0c3c52-0000-4000-8000-{pod:012}"),
                service_account: "web".to_owned(),
            },
            tokens: ServiceAccountTokens::default(),
            secrets: NodePublishSecrets { by_key: secrets },
            default_mode: 0o644,
        }
    }

    /// The emulator's counters now.
    fn counts(&self) -> Counts {
        let all = self.emulator().all_counts();
        let of = |operation| all.get(&operation).copied().unwrap_or_default();
        let gets: OpCounts = of(Operation::GetSecret);
        Counts {
            vault_gets: gets.requests - gets.challenged,
            challenges: gets.challenged,
            refused: gets.failed,
            entra_tokens: of(Operation::EntraToken).requests
                + of(Operation::OpenIdConfiguration).requests,
        }
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        drop(self.emulator.take());
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// Azure's provider's pattern: per Mount, a fresh credential and client, one GET per object in
/// turn. Only the connection pool is shared.
struct Baseline {
    http: Arc<dyn HttpClient>,
    cloud: Cloud,
    vault_url: String,
}

impl Baseline {
    /// A fresh connection pool, with the transport settings the provider's wiring uses.
    fn new(fixture: &Fixture) -> Self {
        let transport = TransportOptions {
            ca_file: Some(fixture.emulator().ca_pem_path().to_owned()),
            ..TransportOptions::default()
        };
        let insecure = InsecureOverrides {
            resolve: vec![ResolveOverride::parse(&fixture.resolve()).expect("an override")],
            imds_endpoint: None,
        };
        let http = http_client_with(&transport, Route::Remote, &insecure).expect("an HTTP client");
        Self {
            http,
            cloud: Cloud::custom(&fixture.emulator().authority_url(), SUFFIX, ""),
            vault_url: format!("https://{VAULT}.{SUFFIX}/"),
        }
    }

    async fn mount(&self, input: &MountInput) -> Result<Vec<Vec<u8>>, String> {
        let spec = AzureMountSpec::from_parameters(&input.parameters).map_err(|e| e.to_string())?;
        let secret = |key: &str| {
            input
                .secrets
                .by_key
                .get(key)
                .cloned()
                .ok_or_else(|| format!("no {key} in nodePublishSecretRef"))
        };
        let client_id = secret("clientid")?;
        let credential = Credential::from_client_secret(
            TENANT,
            client_id.expose_secret(),
            secret("clientsecret")?,
            &self.cloud,
            &self.http,
        )
        .map_err(|e| e.to_string())?
        .token_credential();
        let mut options = client_options(&self.http, &self.cloud);
        options.retry = RetryOptions::custom(Arc::new(AzcoreRetry::default()));
        let client = SecretClient::new(
            &self.vault_url,
            credential,
            Some(SecretClientOptions {
                client_options: options,
                verify_challenge_resource: Some(true),
                ..SecretClientOptions::default()
            }),
        )
        .map_err(|e| e.to_string())?;
        let mut values = Vec::with_capacity(spec.objects.len());
        for object in &spec.objects {
            let secret = client
                .get_secret(&object.name, None)
                .await
                .map_err(|e| e.to_string())?
                .into_model()
                .map_err(|e| e.to_string())?;
            values.push(secret.value.unwrap_or_default().into_bytes());
        }
        Ok(values)
    }
}

/// azcore's (the Go SDK's) default retry policy, which Azure's provider keeps: 3 retries of
/// 408, 429, 500, 502, 503, 504 and transport errors; the wait is the answer's Retry-After when
/// it has one, else (2^n − 1) × 800 ms jittered ×0.8–1.3, at most 60 s.
#[derive(Debug)]
struct AzcoreRetry {
    headers: RetryHeaders,
}

impl Default for AzcoreRetry {
    fn default() -> Self {
        Self {
            headers: RetryHeaders {
                retry_headers: vec![RETRY_AFTER],
            },
        }
    }
}

#[async_trait]
impl RetryPolicy for AzcoreRetry {
    fn is_expired(&self, _since_start: azure_core::time::Duration, retries: u32) -> bool {
        retries >= 3
    }

    fn retry_headers(&self) -> Option<&RetryHeaders> {
        Some(&self.headers)
    }

    fn retry_status_codes(&self) -> &[StatusCode] {
        // Empty: the SDK's defaults, the same six as azcore's.
        &[]
    }

    fn sleep_duration(&self, retry: u32) -> azure_core::time::Duration {
        let mut byte = [0u8; 1];
        openssl::rand::rand_bytes(&mut byte).expect("random bytes");
        let jitter = 0.8 + 0.5 * f64::from(byte[0]) / 255.0;
        let base = ((1u64 << retry.min(16)) - 1) as f64 * 800.0;
        let millis = (base * jitter).min(60_000.0);
        azure_core::time::Duration::milliseconds(millis as i64)
    }

    async fn wait(&self, retry: u32, retry_after: Option<azure_core::time::Duration>) {
        let wait = retry_after
            .filter(|after| after.is_positive())
            .unwrap_or_else(|| self.sleep_duration(retry));
        tokio::time::sleep(Duration::try_from(wait).unwrap_or_default()).await;
    }
}

/// kube-kms or the baseline.
#[derive(Clone)]
enum Side {
    Ours(Arc<AzureBackend>),
    Baseline(Arc<Baseline>),
}

impl Side {
    /// One Mount: every object's contents in class order, or what failed.
    async fn mount(&self, input: &MountInput, deadline: Instant) -> Result<Vec<Vec<u8>>, String> {
        match self {
            Self::Ours(backend) => backend
                .mount(input, deadline)
                .await
                .map(|mounted| {
                    mounted
                        .files
                        .iter()
                        .map(|file| file.contents.to_vec())
                        .collect()
                })
                .map_err(|error| error.to_string()),
            Self::Baseline(baseline) => {
                match tokio::time::timeout_at(deadline, baseline.mount(input)).await {
                    Ok(result) => result,
                    Err(_elapsed) => Err("the Mount's deadline passed".to_owned()),
                }
            }
        }
    }
}

/// What the emulator counted.
#[derive(Debug, Clone, Copy, Default, Serialize)]
struct Counts {
    /// Authenticated secret GETs (including those answered 429).
    vault_gets: u64,
    /// Secret GETs answered 401 with the challenge (no token sent: a new SDK client's first).
    challenges: u64,
    /// Authenticated secret GETs answered with an error (429 in the throttled scenarios).
    refused: u64,
    /// Entra ID token (and OpenID metadata) requests.
    entra_tokens: u64,
}

impl std::ops::Sub for Counts {
    type Output = Self;

    fn sub(self, earlier: Self) -> Self {
        Self {
            vault_gets: self.vault_gets - earlier.vault_gets,
            challenges: self.challenges - earlier.challenges,
            refused: self.refused - earlier.refused,
            entra_tokens: self.entra_tokens - earlier.entra_tokens,
        }
    }
}

/// One round: every pod's Mount issued at once.
#[derive(Debug, Serialize)]
struct Round {
    counts: Counts,
    failed_mounts: usize,
    p50_ms: f64,
    p99_ms: f64,
    wall_ms: f64,
    /// The first failure's message, if any Mount failed (no secret is in one).
    first_error: Option<String>,
}

async fn round(fixture: &Fixture, side: &Side, inputs: &Arc<Vec<MountInput>>) -> Round {
    let before = fixture.counts();
    let started = Instant::now();
    let deadline = started + MOUNT_BUDGET;
    let mut mounts = tokio::task::JoinSet::new();
    for pod in 0..inputs.len() {
        let side = side.clone();
        let inputs = Arc::clone(inputs);
        mounts.spawn(async move {
            let result = side.mount(&inputs[pod], deadline).await;
            // From when the round issued every Mount: what the pod waits, queueing included.
            (started.elapsed(), result)
        });
    }
    let mut took = Vec::with_capacity(inputs.len());
    let mut failed_mounts = 0;
    let mut first_error = None;
    while let Some(done) = mounts.join_next().await {
        let (elapsed, result) = done.expect("a Mount task");
        took.push(elapsed);
        match result {
            Ok(contents) => {
                // Correctness, not speed: every Mount gets the seeded values.
                let expected: Vec<&[u8]> = fixture.values.iter().map(|v| v.as_bytes()).collect();
                let got: Vec<&[u8]> = contents.iter().map(Vec::as_slice).collect();
                assert!(got == expected, "a Mount returned other contents");
            }
            Err(error) => {
                failed_mounts += 1;
                first_error.get_or_insert_with(|| error.chars().take(300).collect());
            }
        }
    }
    let wall = started.elapsed();
    took.sort();
    Round {
        counts: fixture.counts() - before,
        failed_mounts,
        p50_ms: millis(percentile(&took, 0.50)),
        p99_ms: millis(percentile(&took, 0.99)),
        wall_ms: millis(wall),
        first_error,
    }
}

/// The nearest-rank percentile of sorted `values`.
fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).copied().unwrap_or_default()
}

fn millis(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1e3
}

/// The rounds of one scenario, per side, one per iteration.
#[derive(Default)]
struct Pairs {
    ours: Vec<Round>,
    baseline: Vec<Round>,
}

/// One scenario's results: medians over iterations, and ratios kube-kms / baseline (counts:
/// of the medians; times: the median of the per-iteration ratios).
#[derive(Debug, Serialize)]
struct Scenario {
    id: String,
    title: String,
    ours: Summary,
    baseline: Summary,
    ratio: Ratios,
    rounds: BTreeMap<&'static str, Vec<Round>>,
}

#[derive(Debug, Serialize)]
struct Summary {
    vault_gets: f64,
    challenges: f64,
    refused: f64,
    entra_tokens: f64,
    failed_mounts: f64,
    p50_ms: f64,
    p99_ms: f64,
    wall_ms: f64,
}

#[derive(Debug, Serialize)]
struct Ratios {
    vault_gets: Option<f64>,
    entra_tokens: Option<f64>,
    p50: f64,
    p99: f64,
    wall: f64,
}

impl Pairs {
    fn summarize(self, id: &str, title: &str) -> Scenario {
        let summary = |rounds: &[Round]| {
            let of = |field: fn(&Round) -> f64| median(rounds.iter().map(field).collect());
            Summary {
                vault_gets: of(|r| r.counts.vault_gets as f64),
                challenges: of(|r| r.counts.challenges as f64),
                refused: of(|r| r.counts.refused as f64),
                entra_tokens: of(|r| r.counts.entra_tokens as f64),
                failed_mounts: of(|r| r.failed_mounts as f64),
                p50_ms: of(|r| r.p50_ms),
                p99_ms: of(|r| r.p99_ms),
                wall_ms: of(|r| r.wall_ms),
            }
        };
        let ours = summary(&self.ours);
        let baseline = summary(&self.baseline);
        let paired = |field: fn(&Round) -> f64| {
            median(
                self.ours
                    .iter()
                    .zip(&self.baseline)
                    .map(|(o, b)| field(o) / field(b))
                    .collect(),
            )
        };
        let count_ratio = |o: f64, b: f64| (b > 0.0).then(|| o / b);
        let ratio = Ratios {
            vault_gets: count_ratio(ours.vault_gets, baseline.vault_gets),
            entra_tokens: count_ratio(ours.entra_tokens, baseline.entra_tokens),
            p50: paired(|r| r.p50_ms),
            p99: paired(|r| r.p99_ms),
            wall: paired(|r| r.wall_ms),
        };
        Scenario {
            id: id.to_owned(),
            title: title.to_owned(),
            ours,
            baseline,
            ratio,
            rounds: BTreeMap::from([("kube_kms", self.ours), ("baseline", self.baseline)]),
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The table: per scenario, kube-kms, the baseline and their ratio.
fn markdown(plan: &Plan, scenarios: &[Scenario]) -> String {
    let mut out = format!(
        "Secrets Store CSI provider, {} pods × {} secrets, Key Vault emulator +{} ms per Entra \
         ID and vault request; medians of {} iteration(s); ratio = kube-kms / baseline \
         (times: median of paired ratios).\n\n\
         | scenario | | vault GETs | 401 challenges | 429 answers | Entra ID tokens | failed \
         Mounts | Mount p50 | Mount p99 | wall |\n\
         |---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n",
        plan.pods,
        OBJECTS.len(),
        LATENCY.as_millis(),
        plan.iterations,
    );
    let count = |value: f64| format!("{value:.0}");
    let ms = |value: f64| format!("{value:.0} ms");
    let ratio = |value: Option<f64>| value.map_or("–".to_owned(), |v| format!("{v:.2}"));
    for scenario in scenarios {
        for (name, who, side) in [
            (scenario.title.as_str(), "kube-kms", &scenario.ours),
            ("", "baseline", &scenario.baseline),
        ] {
            out.push_str(&format!(
                "| {name} | {who} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                count(side.vault_gets),
                count(side.challenges),
                count(side.refused),
                count(side.entra_tokens),
                count(side.failed_mounts),
                ms(side.p50_ms),
                ms(side.p99_ms),
                ms(side.wall_ms),
            ));
        }
        let r = &scenario.ratio;
        out.push_str(&format!(
            "| | ratio | {} | | | {} | | {} | {} | {} |\n",
            ratio(r.vault_gets),
            ratio(r.entra_tokens),
            ratio(Some(r.p50)),
            ratio(Some(r.p99)),
            ratio(Some(r.wall)),
        ));
    }
    out
}

/// The workspace's target directory.
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
                .ancestors()
                .nth(2)
                .expect("crates/csi-provider is two levels below the workspace")
                .join("target")
        })
}

/// The 1, 5 and 15-minute load averages, as /proc/loadavg gives them.
fn load_average() -> Option<String> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    Some(
        text.split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0; bytes];
    openssl::rand::rand_bytes(&mut buf).expect("random bytes");
    hex::encode(buf)
}
