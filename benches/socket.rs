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

use criterion::{BenchmarkId, Criterion, Throughput};
use std::time::Duration;

mod support;
use support::{Call, NoopKms, Paired, Served, Service};

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
    let floor = Served::start(Service::Noop(NoopKms::mirroring(sealed, plaintext)));
    let floor_client = client_runtime.block_on(floor.client());

    let mut paired = Vec::new();
    for (name, call) in [
        ("encrypt", Call::Encrypt(encrypt)),
        ("decrypt", Call::Decrypt(decrypt)),
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
    if support::bench_mode() {
        Paired::write_all("socket-paired", &paired);
    }
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
