//! The fault matrix: the real `kube-kms serve` binary (Guarded → Instrumented →
//! Chain → Azure, exactly as in production) against the Key Vault emulator, one row per fault.
//! For every row the test asserts what the socket returns for Encrypt, for a Decrypt of a cached
//! KEK and for a Decrypt that needs an unwrap (a ciphertext written by another plugin instance on
//! the same vault), what Status says, what /readyz says, how many remote calls were made, and
//! that the plugin recovers by itself — no restart — when the fault is lifted.
//!
//! Transient faults (outage, latency past the deadline, 429 with and without Retry-After, 5xx,
//! connection resets, token endpoint down) keep Encrypt and cached Decrypts working and Status
//! "ok" (kube-apiserver stops writes 3 minutes after a failing Status); /readyz stays 200 but
//! says "degraded"; an unwrap fails with Unavailable and, once the breaker is open, without a
//! remote call. Authoritative answers (key disabled, deleted, expired, permission revoked) drop
//! the cached KEKs within a refresh interval — the key read every refresh makes notices all but
//! a lost unwrapKey, which the self-test notices on its own period — and refuse everything with
//! FailedPrecondition;
//! Status says "key revoked: …" naming the key; /readyz answers 503.
//!
//! The vault (and its token endpoint) is reached through a TCP proxy in the test so that an
//! outage can be a real one: connections refused and open ones cut. Every wait polls a condition
//! with a deadline; nothing asserts speed.

mod azure_support;
mod util;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_access::auth::AzureEnv;
use azure_support::TestVault;
use azure_support::serve::ServedPlugin;
use keyvault_emulator::{Fault, FaultRule, KeySpec, OpCounts, Operation, Options, Permission};
use kube_kms::envelope::Envelope;
use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::proto::v2::EncryptResponse;
use kube_kms::provider::azure::AzureKeyVaultProvider;
use kube_kms::provider::azure::key_id::KeyRef;
use kube_kms::provider::guard::{BreakerState, GuardPolicy, Guarded};
use kube_kms::provider::{KeyProvider, ProviderHealth};
use sha2::{Digest, Sha256};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tonic::Code;
use util::wait_until;

/// The refresh interval the plugin runs with: revocation must show within about one of these.
const REFRESH: &str = "200ms";
/// The plugin's deadline for one remote operation (remote_timeout and azure.call_deadline).
const DEADLINE: &str = "600ms";
/// The self-test period of the row only the self-test can notice; every other row runs with the
/// default (10 minutes), so what they notice, a key read at every refresh notices.
const SELF_TEST: &str = "1s";
/// How long a condition may take to show before the test fails (a bound on hangs, not speed).
const SHOWS_WITHIN: Duration = Duration::from_secs(20);

/// One row of the matrix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Row {
    /// The vault and its token endpoint are down: connections refused, open ones cut.
    Outage,
    /// Every answer takes 3 s, well past the 600 ms deadline.
    LatencyPastDeadline,
    /// 429 on everything, no Retry-After (as Key Vault answers).
    Throttled,
    /// 429 with a Retry-After past the deadline: not waited for, not retried.
    ThrottledWithRetryAfter,
    /// 503 on everything.
    ServerErrors,
    /// Every connection dropped without an answer.
    ConnectionResets,
    /// The Entra token endpoint answers 503 once the token has expired.
    TokenEndpointDown,
    /// The key is disabled, then re-enabled.
    KeyDisabled,
    /// The key is (soft-)deleted, then recovered.
    KeyDeleted,
    /// The identity loses keys/unwrapKey (get and wrapKey still allowed), then gets it back.
    /// A key read still succeeds: the wrap/unwrap self-test notices, on its own period (1 s
    /// here, [`SELF_TEST`]) rather than at every refresh.
    UnwrapPermissionRevoked,
    /// The identity loses keys/get, then gets it back.
    GetPermissionRevoked,
    /// The key's exp is in the past, then cleared.
    KeyExpired,
}

/// What the plugin must conclude.
#[derive(Debug, Clone, Copy)]
enum Verdict {
    /// Keep serving from memory.
    Transient,
    /// Refuse everything; Status and the socket's errors contain this.
    Revoked(&'static str),
}

const MATRIX: [(Row, Verdict); 12] = [
    (Row::Outage, Verdict::Transient),
    (Row::LatencyPastDeadline, Verdict::Transient),
    (Row::Throttled, Verdict::Transient),
    (Row::ThrottledWithRetryAfter, Verdict::Transient),
    (Row::ServerErrors, Verdict::Transient),
    (Row::ConnectionResets, Verdict::Transient),
    (Row::TokenEndpointDown, Verdict::Transient),
    (Row::KeyDisabled, Verdict::Revoked("is disabled")),
    (Row::KeyDeleted, Verdict::Revoked("not found")),
    (Row::UnwrapPermissionRevoked, Verdict::Revoked("unwrapKey")),
    (Row::GetPermissionRevoked, Verdict::Revoked("keys/get")),
    (Row::KeyExpired, Verdict::Revoked("expired")),
];

// ---------------------------------------------------------------------------------------------
// A TCP proxy that can go down for real.

/// Forwards 127.0.0.1:port to the emulator until taken down; down means the port refuses
/// connections and every open connection is cut.
struct Proxy {
    port: u16,
    target: SocketAddr,
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy binds");
        let port = listener.local_addr().expect("proxy address").port();
        let proxy = Self {
            port,
            target,
            accepting: Mutex::new(None),
        };
        proxy.serve(listener);
        proxy
    }

    fn serve(&self, listener: TcpListener) {
        let target = self.target;
        let task = tokio::spawn(async move {
            // Dropping the set (when this task is aborted) cuts every open connection.
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut inbound, _)) = listener.accept().await {
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
            }
        });
        *self.accepting.lock().expect("proxy lock") = Some(task);
    }

    fn url(&self) -> String {
        format!("https://localhost:{}/", self.port)
    }

    fn authority(&self) -> String {
        format!("https://localhost:{}", self.port)
    }

    async fn down(&self) {
        let accepting = self.accepting.lock().expect("proxy lock").take();
        if let Some(task) = accepting {
            task.abort();
            let _ = task.await;
        }
    }

    async fn up(&self) {
        let listener = TcpListener::bind(("127.0.0.1", self.port))
            .await
            .expect("the proxy's port binds again");
        self.serve(listener);
    }
}

// ---------------------------------------------------------------------------------------------
// One row's set-up: a vault, the proxy, the served plugin, a cached and an uncached ciphertext.

struct Bench {
    vault: TestVault,
    proxy: Proxy,
    plugin: ServedPlugin,
    key_id: String,
    /// Written through the plugin: its KEK is in the plugin's cache.
    cached: EncryptResponse,
    /// Written by another plugin instance on the same vault: the plugin must unwrap its KEK.
    foreign: EncryptResponse,
}

impl Bench {
    async fn start(row: Row) -> Self {
        let options = if row == Row::TokenEndpointDown {
            // Short-lived tokens, so that the plugin needs a new one while the endpoint is down
            // (a token still valid is rightly kept when a renewal fails).
            Options {
                token_lifetime: Duration::from_secs(3),
                ..Options::key_vault()
            }
        } else {
            Options::key_vault()
        };
        let vault = TestVault::start(options, KeySpec::rsa(2048)).await;
        let proxy = Proxy::start(vault.emulator.addr()).await;
        let yaml = vault.azure_yaml(
            &proxy.url(),
            &proxy.authority(),
            &format!("  call_deadline: {DEADLINE}\n"),
        );
        let mut args = vec!["--refresh-interval", REFRESH, "--remote-timeout", DEADLINE];
        if row == Row::UnwrapPermissionRevoked {
            args.extend(["--azure-self-test-interval", SELF_TEST]);
        }
        let plugin = ServedPlugin::start(&yaml, &args).await;
        let key_id = hex::encode(Sha256::digest(
            format!(
                "{}keys/{}/{}",
                proxy.url(),
                vault.key_name,
                vault.first.version
            )
            .as_bytes(),
        ));
        let status = plugin.status().await.expect("Status");
        assert_eq!(
            (status.healthz.as_str(), status.key_id.as_str()),
            ("ok", key_id.as_str())
        );
        let cached = plugin.encrypt(b"cached").await.expect("Encrypt");
        assert_eq!(*cached.key_id, key_id);
        assert_eq!(plugin.decrypt(&cached).await.expect("Decrypt"), b"cached");

        // Another plugin instance on the same vault writes with its own KEK.
        let mut config = vault.config();
        config.key = KeyRef::new(&proxy.url(), &vault.key_name).expect("key ref");
        config.authority_host = Some(proxy.authority());
        let writer = AzureKeyVaultProvider::new_with_env(config, &AzureEnv::from_pairs(&[]))
            .expect("the writer's provider");
        let writer = Envelope::start(
            Arc::new(writer),
            RotationPolicy::DEFAULT,
            NonZeroUsize::new(4).expect("non-zero"),
        )
        .await
        .expect("the writer starts");
        let sealed = writer
            .encrypt(b"foreign")
            .await
            .expect("the writer encrypts");
        let foreign = EncryptResponse {
            ciphertext: sealed.ciphertext,
            key_id: sealed.key_id,
            annotations: sealed.annotations,
        };
        assert_eq!(*foreign.key_id, key_id);
        assert_ne!(foreign.annotations, cached.annotations, "another KEK");
        Self {
            vault,
            proxy,
            plugin,
            key_id,
            cached,
            foreign,
        }
    }

    fn now() -> i64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("clock")
            .as_secs() as i64
    }

    async fn inject(&self, row: Row) {
        let emulator = &self.vault.emulator;
        let name = &self.vault.key_name;
        let always = |fault| emulator.inject(FaultRule::always(fault));
        match row {
            Row::Outage => self.proxy.down().await,
            Row::LatencyPastDeadline => always(Fault::Latency { millis: 3_000 }),
            Row::Throttled => always(Fault::Throttle { retry_after: None }),
            Row::ThrottledWithRetryAfter => always(Fault::Throttle {
                retry_after: Some(30),
            }),
            Row::ServerErrors => always(Fault::Status { status: 503 }),
            Row::ConnectionResets => always(Fault::DropConnection),
            Row::TokenEndpointDown => emulator.inject(FaultRule::on(
                Operation::EntraToken,
                Fault::Status { status: 503 },
            )),
            Row::KeyDisabled => {
                emulator.disable_key(name, None).expect("disable");
            }
            Row::KeyDeleted => emulator.delete_key(name).expect("delete"),
            Row::UnwrapPermissionRevoked => {
                emulator
                    .revoke(&self.vault.client_id, &[Permission::UnwrapKey])
                    .expect("revoke unwrapKey");
            }
            Row::GetPermissionRevoked => {
                emulator
                    .revoke(&self.vault.client_id, &[Permission::Get])
                    .expect("revoke get");
            }
            Row::KeyExpired => {
                emulator
                    .set_key_validity(name, None, None, Some(Self::now() - 60))
                    .expect("expire");
            }
        }
    }

    async fn restore(&self, row: Row) {
        let emulator = &self.vault.emulator;
        let name = &self.vault.key_name;
        match row {
            Row::Outage => self.proxy.up().await,
            Row::LatencyPastDeadline
            | Row::Throttled
            | Row::ThrottledWithRetryAfter
            | Row::ServerErrors
            | Row::ConnectionResets
            | Row::TokenEndpointDown => emulator.clear_faults(),
            Row::KeyDisabled => {
                emulator.enable_key(name, None).expect("enable");
            }
            Row::KeyDeleted => {
                emulator.recover_key(name).expect("recover");
            }
            Row::UnwrapPermissionRevoked => {
                emulator
                    .grant(&self.vault.client_id, &[Permission::UnwrapKey])
                    .expect("grant unwrapKey");
            }
            Row::GetPermissionRevoked => {
                emulator
                    .grant(&self.vault.client_id, &[Permission::Get])
                    .expect("grant get");
            }
            Row::KeyExpired => {
                emulator
                    .set_key_validity(name, None, None, None)
                    .expect("clear exp");
            }
        }
    }

    /// Requests the emulator received per operation since the last reset, challenges excluded.
    fn wire_calls(&self) -> BTreeMap<Operation, u64> {
        self.vault
            .emulator
            .all_counts()
            .into_iter()
            .map(
                |(
                    op,
                    OpCounts {
                        requests,
                        challenged,
                        ..
                    },
                )| (op, requests - challenged),
            )
            .filter(|(_, n)| *n > 0)
            .collect()
    }

    fn wire(&self, operation: Operation) -> u64 {
        let counts = self.vault.emulator.counts(operation);
        counts.requests - counts.challenged
    }

    fn log(&self) -> String {
        self.plugin.log_text()
    }
}

/// What one row showed, printed as the matrix's line (run with --nocapture to see it).
struct Observed {
    encrypt: String,
    cached: String,
    unwrap: String,
    status: String,
    readyz: String,
    calls: String,
}

/// The value of the unlabelled sample `name` in Prometheus text.
fn sample(metrics: &str, name: &str) -> f64 {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or_else(|| panic!("no sample {name} in:\n{metrics}"))
}

fn outcome<T>(result: &Result<T, tonic::Status>) -> String {
    match result {
        Ok(_) => "OK".to_owned(),
        Err(status) => format!("{:?}", status.code()),
    }
}

async fn run(row: Row, verdict: Verdict) {
    let bench = Bench::start(row).await;
    let observed = match verdict {
        Verdict::Transient => transient(&bench, row).await,
        Verdict::Revoked(reason) => revoked(&bench, row, reason).await,
    };
    println!(
        "| {row:?} | {} | {} | {} | {} | {} | {} |",
        observed.encrypt,
        observed.cached,
        observed.unwrap,
        observed.status,
        observed.readyz,
        observed.calls
    );
}

/// A transient fault: serve from memory, Status "ok", /readyz degraded, unwraps fail with
/// Unavailable and stop reaching the vault once the breaker opens; recover by itself.
async fn transient(bench: &Bench, row: Row) -> Observed {
    let plugin = &bench.plugin;
    bench.vault.emulator.reset_counts();
    bench.inject(row).await;

    wait_until("/readyz says degraded", SHOWS_WITHIN, || async {
        plugin.readyz().await.1.starts_with("status: degraded")
    })
    .await;

    // The uncached Decrypt fails with Unavailable, through the deadline at first, then at once
    // without a remote call once the breaker is open.
    let give_up = tokio::time::Instant::now() + SHOWS_WITHIN;
    loop {
        let before = plugin.remote_calls("unwrap").await;
        let refused = plugin.decrypt(&bench.foreign).await;
        assert_eq!(
            refused.as_ref().map_err(tonic::Status::code).err(),
            Some(Code::Unavailable),
            "{row:?}: uncached Decrypt {refused:?}\n{}",
            bench.log()
        );
        if plugin.remote_calls("unwrap").await == before {
            break;
        }
        assert!(
            tokio::time::Instant::now() < give_up,
            "{row:?}: the circuit breaker never opened\n{}",
            bench.log()
        );
    }
    let wire_unwraps = bench.wire(Operation::UnwrapKey);
    let envelope_unwraps = plugin.remote_calls("unwrap").await;
    for _ in 0..5 {
        let refused = plugin.decrypt(&bench.foreign).await;
        let status = refused.expect_err("the breaker is open");
        assert_eq!(status.code(), Code::Unavailable, "{row:?}: {status:?}");
        assert!(
            status.message().contains("key service unavailable"),
            "{row:?}: {status:?}"
        );
    }
    assert_eq!(
        (
            bench.wire(Operation::UnwrapKey),
            plugin.remote_calls("unwrap").await
        ),
        (wire_unwraps, envelope_unwraps),
        "{row:?}: an open breaker makes no unwrap call"
    );

    // Encrypt and cached Decrypts keep working; Status stays "ok" with the same key_id.
    let encrypt = plugin.encrypt(b"during the fault").await;
    let during = encrypt.as_ref().expect("Encrypt keeps working").clone();
    assert_eq!(*during.key_id, bench.key_id);
    let cached = plugin.decrypt(&bench.cached).await;
    assert_eq!(
        cached.as_deref().expect("a cached Decrypt keeps working"),
        b"cached"
    );
    assert_eq!(
        plugin.decrypt(&during).await.expect("and so does its own"),
        b"during the fault"
    );
    let status = plugin.status().await.expect("Status");
    assert_eq!(
        (status.healthz.as_str(), status.key_id.as_str()),
        ("ok", bench.key_id.as_str()),
        "{row:?}: a transient fault never fails Status"
    );
    let (code, readyz) = plugin.readyz().await;
    assert_eq!(code, 200, "{row:?}: {readyz}");
    assert!(
        readyz.starts_with("status: degraded: "),
        "{row:?}: {readyz}"
    );
    let calls = format!(
        "{:?}; envelope unwraps {envelope_unwraps}",
        bench.wire_calls()
    );

    // Lifted: the refresher reaches the vault, the breaker closes, /readyz is ok again — all
    // before any request needs the vault.
    bench.restore(row).await;
    wait_until("/readyz is ok again", SHOWS_WITHIN, || async {
        plugin.readyz().await == (200, "status: ok".to_owned())
    })
    .await;
    assert_eq!(
        plugin
            .decrypt(&bench.foreign)
            .await
            .expect("the uncached Decrypt works again"),
        b"foreign"
    );
    assert_eq!(plugin.status().await.expect("Status").healthz, "ok");
    assert_eq!(
        *plugin.encrypt(b"after").await.expect("Encrypt").key_id,
        bench.key_id
    );

    Observed {
        encrypt: outcome(&encrypt),
        cached: outcome(&cached),
        unwrap: "Unavailable; breaker open: no call".to_owned(),
        status: format!("{:?}", status.healthz),
        readyz: format!("{code} {readyz:?}"),
        calls,
    }
}

/// An authoritative answer: within a refresh interval the cached KEKs are dropped and every
/// call is refused with FailedPrecondition, without a remote call; Status says which key and
/// why; /readyz answers 503; restored, it serves again by itself.
async fn revoked(bench: &Bench, row: Row, reason: &str) -> Observed {
    let plugin = &bench.plugin;
    bench.vault.emulator.reset_counts();
    bench.inject(row).await;

    wait_until("Status says the key is revoked", SHOWS_WITHIN, || async {
        plugin
            .status()
            .await
            .is_ok_and(|status| status.healthz.starts_with("key revoked: "))
    })
    .await;
    let status = plugin.status().await.expect("Status");
    assert!(
        status.healthz.contains(reason) && status.healthz.contains("\"kek\""),
        "{row:?}: Status names the key and why: {:?}",
        status.healthz
    );
    assert_eq!(status.key_id, bench.key_id, "Status still names the key");

    let (_, metrics) = plugin.get("/metrics").await;
    assert_eq!(
        (
            sample(&metrics, "kube_kms_kek_cache_entries"),
            sample(&metrics, "kube_kms_key_revoked")
        ),
        (0.0, 1.0),
        "{row:?}: the cached KEKs are dropped"
    );

    let envelope_calls = (
        plugin.remote_calls("wrap").await,
        plugin.remote_calls("unwrap").await,
    );
    let encrypt = plugin.encrypt(b"refused").await;
    let cached = plugin.decrypt(&bench.cached).await;
    let unwrap = plugin.decrypt(&bench.foreign).await;
    for (what, result) in [
        ("Encrypt", encrypt.as_ref().map(|_| ())),
        ("cached Decrypt", cached.as_ref().map(|_| ())),
        ("uncached Decrypt", unwrap.as_ref().map(|_| ())),
    ] {
        let refused = result.expect_err(what);
        assert_eq!(
            refused.code(),
            Code::FailedPrecondition,
            "{row:?}: {what}: {refused:?}"
        );
        assert!(
            refused.message().starts_with("key revoked: ") && refused.message().contains(reason),
            "{row:?}: {what}: {refused:?}"
        );
    }
    assert_eq!(
        (
            plugin.remote_calls("wrap").await,
            plugin.remote_calls("unwrap").await
        ),
        envelope_calls,
        "{row:?}: refused calls make no remote call"
    );
    let (code, readyz) = plugin.readyz().await;
    assert_eq!(code, 503, "{row:?}: {readyz}");
    assert_eq!(
        Some(readyz.as_str()),
        status
            .healthz
            .strip_prefix("key revoked: ")
            .map(|why| format!("status: revoked: {why}"))
            .as_deref(),
        "{row:?}: /readyz says the same as Status, once"
    );
    let calls = format!(
        "{:?}; envelope wrap+unwrap while refused: 0",
        bench.wire_calls()
    );

    // Restored: the next refresh serves again, with a fresh KEK; what the dropped KEKs sealed
    // is unwrapped again through the vault.
    bench.restore(row).await;
    wait_until("Status is ok again", SHOWS_WITHIN, || async {
        plugin
            .status()
            .await
            .is_ok_and(|status| status.healthz == "ok")
    })
    .await;
    assert_eq!(plugin.readyz().await, (200, "status: ok".to_owned()));
    let after = plugin
        .encrypt(b"after")
        .await
        .expect("Encrypt serves again");
    assert_eq!(*after.key_id, bench.key_id);
    assert_ne!(after.annotations, bench.cached.annotations, "a fresh KEK");
    let unwraps = plugin.remote_calls("unwrap").await;
    assert_eq!(
        plugin.decrypt(&bench.cached).await.expect("cached before"),
        b"cached"
    );
    assert_eq!(
        plugin.remote_calls("unwrap").await,
        unwraps + 1.0,
        "the dropped KEK is unwrapped again"
    );
    assert_eq!(
        plugin.decrypt(&bench.foreign).await.expect("foreign"),
        b"foreign"
    );
    assert_eq!(plugin.decrypt(&after).await.expect("after"), b"after");

    Observed {
        encrypt: outcome(&encrypt),
        cached: outcome(&cached),
        unwrap: outcome(&unwrap),
        status: format!("{:?}", status.healthz),
        readyz: format!("{code} {readyz:?}"),
        calls,
    }
}

/// One test per row, so that a failure names its row and rows run in parallel.
macro_rules! rows {
    ($($test:ident => $index:expr),* $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $test() {
            let (row, verdict) = MATRIX[$index];
            tokio::time::timeout(Duration::from_secs(120), run(row, verdict))
                .await
                .unwrap_or_else(|_| panic!("{row:?} hung"));
        }
    )*};
}

rows! {
    outage => 0,
    latency_past_the_deadline => 1,
    throttled_without_retry_after => 2,
    throttled_with_retry_after => 3,
    server_errors => 4,
    connection_resets => 5,
    token_endpoint_down => 6,
    key_disabled_then_enabled => 7,
    key_deleted_then_recovered => 8,
    unwrap_permission_revoked_then_restored => 9,
    get_permission_revoked_then_restored => 10,
    key_expired_then_valid => 11,
}

/// Regression: after a transient unwrap failure, a refresh whose wrap/unwrap self-test passed
/// left the provider's health Degraded until some later wrap or unwrap succeeded — in steady
/// state there may be none for hours, so /readyz said "degraded" long after the vault was back.
/// Found by the transient rows above (they wait for /readyz "ok" before any call needs the vault).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_passing_refresh_self_test_clears_an_earlier_transient_failure() {
    let vault = TestVault::key_vault(2048).await;
    let provider = vault.provider().await;
    let key = provider.current_key().await.expect("key");
    let kek = kube_kms::crypto::SecretKey::generate().expect("the OS RNG works");
    let wrapped = provider.wrap(&key, &kek).await.expect("wrap");
    vault.emulator.inject(FaultRule::on(
        Operation::UnwrapKey,
        Fault::Status { status: 503 },
    ));
    assert!(provider.unwrap(key.version(), &wrapped).await.is_err());
    assert!(matches!(
        provider.health().await,
        ProviderHealth::Degraded { .. }
    ));
    vault.emulator.clear_faults();
    provider.refresh().await.expect("refresh");
    assert_eq!(provider.health().await, ProviderHealth::Ok);
}

/// Regression: a refusal the Azure provider makes without reaching the vault — a malformed key
/// version or a wrapped KEK of a length no wrap produces, both read from etcd — reset the circuit
/// breaker's failure count and closed an open breaker, as if the vault had answered. Only an
/// answer from the vault proves it is up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_that_never_reach_the_vault_leave_the_breaker_alone() {
    let vault = TestVault::key_vault(2048).await;
    let mut config = vault.config();
    config.retry.deadline = Duration::from_millis(200);
    let provider = vault.open(config).await;
    let key = provider.current_key().await.expect("key");
    let kek = kube_kms::crypto::SecretKey::generate().expect("the OS RNG works");
    let wrapped = provider.wrap(&key, &kek).await.expect("wrap");
    let policy = GuardPolicy {
        open_for: Duration::from_millis(300),
        ..GuardPolicy::DEFAULT
    };
    let guard = Guarded::new(provider, policy);
    vault.emulator.inject(FaultRule::on(
        Operation::UnwrapKey,
        Fault::Status { status: 503 },
    ));

    // Closed: local refusals between transient failures do not reset the count.
    for _ in 0..policy.failure_threshold - 1 {
        assert!(guard.unwrap(key.version(), &wrapped).await.is_err());
    }
    vault.emulator.reset_counts();
    assert!(guard.unwrap("not-a-version", &wrapped).await.is_err());
    assert!(guard.unwrap(key.version(), &[0; 17]).await.is_err());
    assert_eq!(
        vault.emulator.counts(Operation::UnwrapKey).requests,
        0,
        "refused locally"
    );
    assert!(guard.unwrap(key.version(), &wrapped).await.is_err());
    assert_eq!(guard.breaker_state(), BreakerState::Open);

    // Half-open: a local refusal is no trial; the breaker stays half-open until the vault answers.
    tokio::time::sleep(policy.open_for).await;
    assert_eq!(guard.breaker_state(), BreakerState::HalfOpen);
    assert!(guard.unwrap("not-a-version", &wrapped).await.is_err());
    assert!(guard.unwrap(key.version(), &[0; 17]).await.is_err());
    assert_eq!(guard.breaker_state(), BreakerState::HalfOpen);
    vault.emulator.clear_faults();
    let unwrapped = guard.unwrap(key.version(), &wrapped).await.expect("unwrap");
    assert_eq!(unwrapped.expose(), kek.expose());
    assert_eq!(guard.breaker_state(), BreakerState::Closed);
}

/// Regression: a refresh (get the key, then wrap and unwrap a test KEK) ran under one call's
/// deadline, so a single 429 whose Retry-After the vault asked to be waited out failed it even
/// though the refresh runs in the background with time to spare. A refresh has its own budget
/// covering its calls: the 429 is waited out, retried, and health stays ok.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refresh_waits_out_one_429_with_retry_after_within_its_budget() {
    let vault = TestVault::key_vault(2048).await;
    let mut config = vault.config();
    config.retry.deadline = Duration::from_millis(800);
    let provider = vault.open(config).await;
    let guard = Guarded::new(
        provider,
        GuardPolicy {
            call_deadline: Duration::from_millis(800),
            ..GuardPolicy::DEFAULT
        },
    );
    vault.emulator.reset_counts();
    vault.emulator.inject(
        FaultRule::on(
            Operation::GetKey,
            Fault::Throttle {
                retry_after: Some(1),
            },
        )
        .times(1),
    );
    let key = guard
        .refresh()
        .await
        .expect("the refresh waits out the 429");
    assert_eq!(key.version(), vault.first.version);
    let gets = vault.emulator.counts(Operation::GetKey);
    assert_eq!(gets.requests - gets.challenged, 2, "one 429, one retry");
    assert_eq!(guard.health().await, ProviderHealth::Ok);
    assert_eq!(guard.breaker_state(), BreakerState::Closed);
}
