//! Encrypt and Decrypt over a Unix socket at 1, 16 and 64 concurrent callers on one connection
//! (kube-apiserver uses one), against the transport floor: a no-op v2 service with responses of
//! the same size, served by the same tonic stack (`server::serve_v2_only`) on the same kind of
//! socket and called by the same client. The ratio floor/kube-kms is the share of the
//! transport's throughput kube-kms keeps; the target for Decrypt at 64 callers is ≥ 0.85.
//!
//! Each server runs on its own 2-worker runtime, the client on another, as two processes would.
//! Criterion's time per iteration here is wall time per call at that concurrency: the inverse
//! of throughput. After criterion, each pair is measured again in alternating rounds
//! ([`Paired`]) so that the summary's ratios do not depend on load that drifted between two
//! criterion benchmarks.
//!
//! Then the `:authority` adapter alone ([`authority`]): the same no-op service served through
//! `grpc_uds` without the adapter (the baseline), with it and clients sending `localhost`
//! (passthrough), and with it and clients sending the socket path (every header block
//! re-encoded), Decrypt at 64 callers, paired against the baseline; and the baseline against a
//! second connection to itself, which shows how far two identical setups drift in this run.

use criterion::{BenchmarkId, Criterion, Throughput};
use kube_kms::proto::v2::DecryptRequest;
use kube_kms::proto::v2::key_management_service_client::KeyManagementServiceClient;
use std::time::Duration;
use tonic::transport::Channel;

mod support;
use support::{Adapter, Call, NoopKms, Paired, SentAuthority, Served, Service};

const CALLERS: [usize; 3] = [1, 16, 64];

fn socket(c: &mut Criterion) {
    let client_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("bench-client")
        .enable_all()
        .build()
        .expect("client runtime");
    let key_dir = support::short_tempdir();
    let envelope = client_runtime.block_on(support::envelope(support::key_ring(key_dir.path())));
    let ours = Served::start(Service::KubeKms(envelope));
    let plaintext = support::seed();
    let encrypt = support::encrypt_request(plaintext.clone());
    let (ours_client, sealed) = client_runtime.block_on(async {
        let mut client = ours.client().await;
        let sealed = client
            .encrypt(encrypt.clone())
            .await
            .expect("Encrypt")
            .into_inner();
        (client, sealed)
    });
    let decrypt = support::decrypt_request(&sealed);
    let noop = NoopKms::mirroring(sealed, plaintext);
    let floor = Served::start(Service::Noop(noop.clone()));
    let floor_client = client_runtime.block_on(floor.client());

    let mut paired = Vec::new();
    for (name, call) in [
        ("encrypt", Call::Encrypt(encrypt)),
        ("decrypt", Call::Decrypt(decrypt.clone())),
    ] {
        let mut group = c.benchmark_group(format!("socket/{name}"));
        group.throughput(Throughput::Elements(1));
        for callers in CALLERS {
            for (label, client) in [("kube-kms", &ours_client), ("noop-floor", &floor_client)] {
                group.bench_with_input(BenchmarkId::new(label, callers), &callers, |b, &n| {
                    b.to_async(&client_runtime)
                        .iter_custom(|calls| support::drive(client, n, calls, &call));
                });
            }
        }
        group.finish();

        // The same pairs in alternating rounds (about 0.1 s per batch) for the summary's ratios.
        for callers in CALLERS {
            let (rounds, batch) = match (support::bench_mode(), callers) {
                (false, _) => (1, 2),
                (true, 1) => (11, 1_000),
                (true, _) => (11, 5_000),
            };
            let on = |client| {
                let (runtime, call) = (&client_runtime, &call);
                move |calls| runtime.block_on(support::drive(client, callers, calls, call))
            };
            paired.push(Paired::measure(
                (
                    &format!("socket_{name}/kube-kms/{callers}"),
                    &format!("socket_{name}/noop-floor/{callers}"),
                ),
                rounds,
                batch,
                on(&ours_client),
                on(&floor_client),
            ));
        }
    }
    paired.extend(authority(c, &client_runtime, noop, decrypt));
    if support::bench_mode() {
        Paired::write_all("socket-paired", &paired);
    }
}

/// The callers of the adapter comparison: the requirement's concurrency.
const AUTHORITY_CALLERS: usize = 64;

/// What the `:authority` adapter costs, each server the no-op service `noop` on its own
/// runtime, each client one connection: criterion's group `socket/authority`, then the paired
/// rounds the summary reads (each against `no-adapter`).
fn authority(
    c: &mut Criterion,
    client_runtime: &tokio::runtime::Runtime,
    noop: NoopKms,
    decrypt: DecryptRequest,
) -> Vec<Paired> {
    let call = &Call::Decrypt(decrypt.clone());
    let plain = Served::start(Service::Transport(noop.clone(), Adapter::Without));
    let adapted = Served::start(Service::Transport(noop, Adapter::With));
    let (baseline, again, passthrough, rewrite) = client_runtime.block_on(async {
        // The path-authority client really sends what h2 refuses: without the adapter its call
        // fails, with it the call succeeds (so the adapter rewrote it).
        let mut refused = plain
            .client_sending(SentAuthority::SocketPath)
            .await
            .expect("connects");
        assert!(
            refused.decrypt(decrypt.clone()).await.is_err(),
            "without the adapter h2 must refuse the socket path as :authority"
        );
        (
            connect(&plain, SentAuthority::Localhost, &decrypt).await,
            connect(&plain, SentAuthority::Localhost, &decrypt).await,
            connect(&adapted, SentAuthority::Localhost, &decrypt).await,
            connect(&adapted, SentAuthority::SocketPath, &decrypt).await,
        )
    });
    let cases = [
        ("no-adapter-again", &again),
        ("adapter-localhost", &passthrough),
        ("adapter-socket-path", &rewrite),
    ];

    let mut group = c.benchmark_group("socket/authority");
    group.throughput(Throughput::Elements(1));
    for (label, client) in [("no-adapter", &baseline)].into_iter().chain(cases) {
        group.bench_with_input(
            BenchmarkId::new(label, AUTHORITY_CALLERS),
            &AUTHORITY_CALLERS,
            |b, &n| {
                b.to_async(client_runtime)
                    .iter_custom(|calls| support::drive(client, n, calls, call));
            },
        );
    }
    group.finish();

    let (rounds, batch) = if support::bench_mode() {
        (21, 5_000)
    } else {
        (1, 2)
    };
    let on = |client| {
        move |calls| client_runtime.block_on(support::drive(client, AUTHORITY_CALLERS, calls, call))
    };
    cases
        .into_iter()
        .map(|(label, client)| {
            Paired::measure(
                (
                    &format!("socket_authority/{label}/{AUTHORITY_CALLERS}"),
                    &format!("socket_authority/no-adapter/{AUTHORITY_CALLERS}"),
                ),
                rounds,
                batch,
                on(client),
                on(&baseline),
            )
        })
        .collect()
}

/// A client on a new connection to `served` sending `authority`, after one Decrypt.
async fn connect(
    served: &Served,
    authority: SentAuthority,
    decrypt: &DecryptRequest,
) -> KeyManagementServiceClient<Channel> {
    let mut client = served.client_sending(authority).await.expect("connects");
    client.decrypt(decrypt.clone()).await.expect("Decrypt");
    client
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    socket(&mut criterion);
    criterion.final_summary();
}
