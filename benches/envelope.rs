//! Envelope seal+open through kube-kms's envelope API against raw AES-256-GCM on the same input.
//!
//! kube-kms: `Envelope::encrypt` then `Envelope::decrypt` (v2), steady state: the active KEK
//! seals, the cached KEK opens, no provider call. Baselines: one seal and one open, same
//! plaintext, same associated data (0x01 ‖ key_id for v2, the blob header for v1), key schedule
//! expanded once —
//! - `aes-gcm`: the `aes-gcm` crate kube-kms itself uses, a fresh random 96-bit nonce from the
//!   OS (getrandom), `Aead::encrypt`/`decrypt` as its documentation shows (the target's
//!   baseline);
//! - `aes-gcm-counter`: the same with a counter nonce (4 fixed bytes ‖ a 64-bit counter, no
//!   system call), the nonce kube-kms itself now uses: what is left is the envelope's own cost;
//! - `aws-lc-rs`: `RandomizedNonceKey` (AWS-LC's assembly; nonce from AWS-LC's own DRBG).
//!
//! Sizes: 32 B (the DEK seed kube-apiserver sends), 995 B (the largest plaintext whose v2
//! ciphertext fits kube-apiserver's 1024-byte limit) and 1 KiB through the v1 API, which has no
//! such limit. The target is kube-kms ≤ 1.15 × aes-gcm at 32 B.

use std::cell::Cell;
use std::hint::black_box;
use std::time::{Duration, Instant};

use aes_gcm::aead::{Aead, Generate, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use aws_lc_rs::aead::{AES_256_GCM, Aad, RandomizedNonceKey};
use criterion::{BenchmarkId, Criterion, Throughput};

mod support;
use support::Paired;

/// The associated data kube-kms used for a ciphertext, so baselines authenticate as much.
#[derive(Clone, Copy)]
enum Api {
    V2,
    V1,
}

fn envelope(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let key_dir = support::short_tempdir();
    let envelope = runtime.block_on(support::envelope(support::key_ring(key_dir.path())));
    let key = support::seed();
    let aes_gcm = Aes256Gcm::new(key.as_slice().try_into().expect("32 bytes"));
    let aws_lc = RandomizedNonceKey::new(&AES_256_GCM, &key).expect("aws-lc-rs key");

    let mut paired = Vec::new();
    for (label, len, api) in [
        ("32B", 32, Api::V2),
        ("995B", 995, Api::V2),
        ("1KiB-v1", 1024, Api::V1),
    ] {
        let mut plaintext = vec![0u8; len];
        kube_kms::crypto::fill_random(&mut plaintext).expect("random");
        let aad = runtime.block_on(async {
            match api {
                Api::V2 => {
                    let sealed = envelope.encrypt(&plaintext).await.expect("encrypt");
                    [&[1u8][..], sealed.key_id.as_bytes()].concat()
                }
                Api::V1 => {
                    let blob = envelope.encrypt_v1(&plaintext).await.expect("encrypt");
                    blob[..blob.len() - (12 + len + 16)].to_vec()
                }
            }
        });

        let ours = || async {
            match api {
                Api::V2 => {
                    let sealed = envelope
                        .encrypt(black_box(&plaintext))
                        .await
                        .expect("encrypt");
                    let opened = envelope
                        .decrypt(&sealed.ciphertext, &sealed.key_id, &sealed.annotations)
                        .await
                        .expect("decrypt");
                    black_box(opened);
                }
                Api::V1 => {
                    let blob = envelope
                        .encrypt_v1(black_box(&plaintext))
                        .await
                        .expect("encrypt");
                    black_box(envelope.decrypt_v1(&blob).await.expect("decrypt"));
                }
            }
        };
        let raw_aes_gcm = || {
            let nonce = Nonce::generate();
            let msg = black_box(plaintext.as_slice());
            let sealed = aes_gcm
                .encrypt(&nonce, Payload { msg, aad: &aad })
                .expect("seal");
            let opened = aes_gcm
                .decrypt(
                    &nonce,
                    Payload {
                        msg: &sealed,
                        aad: &aad,
                    },
                )
                .expect("open");
            black_box(opened);
        };
        let counter = Cell::new(0u64);
        let raw_aes_gcm_counter = || {
            let invocation = counter.get();
            counter.set(invocation + 1);
            let mut nonce = Nonce::default();
            nonce[..4].copy_from_slice(&[0xc0, 0xc1, 0xc2, 0xc3]);
            nonce[4..].copy_from_slice(&invocation.to_be_bytes());
            let msg = black_box(plaintext.as_slice());
            let sealed = aes_gcm
                .encrypt(&nonce, Payload { msg, aad: &aad })
                .expect("seal");
            let opened = aes_gcm
                .decrypt(
                    &nonce,
                    Payload {
                        msg: &sealed,
                        aad: &aad,
                    },
                )
                .expect("open");
            black_box(opened);
        };
        let raw_aws_lc = || {
            let mut in_out = Vec::with_capacity(plaintext.len() + 16);
            in_out.extend_from_slice(black_box(&plaintext));
            let nonce = aws_lc
                .seal_in_place_append_tag(Aad::from(&aad), &mut in_out)
                .expect("seal");
            let opened = aws_lc
                .open_in_place(nonce, Aad::from(&aad), &mut in_out)
                .expect("open");
            black_box(opened);
        };

        let mut group = c.benchmark_group("envelope/seal_open");
        group.throughput(Throughput::Bytes(len as u64));
        group.bench_function(BenchmarkId::new("kube-kms", label), |b| {
            b.to_async(&runtime).iter(ours);
        });
        group.bench_function(BenchmarkId::new("aes-gcm", label), |b| b.iter(raw_aes_gcm));
        group.bench_function(BenchmarkId::new("aes-gcm-counter", label), |b| {
            b.iter(raw_aes_gcm_counter)
        });
        group.bench_function(BenchmarkId::new("aws-lc-rs", label), |b| b.iter(raw_aws_lc));
        group.finish();

        // The same three, paired in alternating rounds for the summary's ratios.
        let (rounds, batch) = if support::bench_mode() {
            (21, 10_000)
        } else {
            (1, 2)
        };
        let ours_batch = |n: u64| {
            runtime.block_on(async {
                let start = Instant::now();
                for _ in 0..n {
                    ours().await;
                }
                start.elapsed()
            })
        };
        let ours_id = format!("envelope_seal_open/kube-kms/{label}");
        paired.push(Paired::measure(
            (&ours_id, &format!("envelope_seal_open/aes-gcm/{label}")),
            rounds,
            batch,
            ours_batch,
            timed(&raw_aes_gcm),
        ));
        paired.push(Paired::measure(
            (
                &ours_id,
                &format!("envelope_seal_open/aes-gcm-counter/{label}"),
            ),
            rounds,
            batch,
            ours_batch,
            timed(&raw_aes_gcm_counter),
        ));
        paired.push(Paired::measure(
            (&ours_id, &format!("envelope_seal_open/aws-lc-rs/{label}")),
            rounds,
            batch,
            ours_batch,
            timed(&raw_aws_lc),
        ));
    }
    if support::bench_mode() {
        Paired::write_all("envelope-paired", &paired);
    }
}

/// `f` repeated `n` times, timed.
fn timed(f: impl Fn()) -> impl FnMut(u64) -> Duration {
    move |n| {
        let start = Instant::now();
        for _ in 0..n {
            f();
        }
        start.elapsed()
    }
}

fn main() {
    let mut criterion = Criterion::default()
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();
    envelope(&mut criterion);
    criterion.final_summary();
}
