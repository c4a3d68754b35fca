//! A provider whose unwrap panics costs the Decrypts waiting on it an error, not a hang, and does
//! not leave the KEK stuck: the next Decrypt of the same KEK unwraps again.

mod util;

use std::num::NonZeroUsize;
use std::sync::Arc;
use std::time::Duration;

use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::envelope::{Envelope, EnvelopeError};
use kube_kms::provider::ProviderError;

/// Regression: the unwrap task panicked (as on a Retry-After too large for the clock) and its
/// in-flight entry stayed, so every later Decrypt of that KEK failed without trying again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_unwrap_fails_the_decrypt_and_the_next_decrypt_tries_again() {
    let dir = util::short_tempdir();
    let key_dir = dir.path().join("keys");
    let capacity = NonZeroUsize::new(16).expect("non-zero");
    let writer = Envelope::start(util::key_ring(&key_dir), RotationPolicy::DEFAULT, capacity)
        .await
        .expect("envelope");
    let sealed = writer.encrypt(b"a data key").await.expect("encrypt");
    let blob = writer.encrypt_v1(b"a data key").await.expect("encrypt v1");

    // A second replica, whose cache has never seen the writer's KEK, so Decrypt must unwrap; its
    // first two unwraps panic.
    let provider = Arc::new(util::UnwrapHook::new(
        util::key_ring(&key_dir),
        |earlier| async move { assert!(earlier >= 2, "the provider panicked (a test)") },
    ));
    let reader = Envelope::start(provider.clone(), RotationPolicy::DEFAULT, capacity)
        .await
        .expect("envelope");
    let decrypt = || reader.decrypt(&sealed.ciphertext, &sealed.key_id, &sealed.annotations);
    let within = Duration::from_secs(10);

    let failed = tokio::time::timeout(within, decrypt())
        .await
        .expect("the Decrypt hung");
    assert!(
        matches!(
            failed,
            Err(EnvelopeError::Provider(ProviderError::Unavailable { .. }))
        ),
        "{failed:?}"
    );
    let failed_v1 = tokio::time::timeout(within, reader.decrypt_v1(&blob))
        .await
        .expect("the v1 Decrypt hung");
    assert!(failed_v1.is_err());
    assert_eq!(provider.unwraps(), 2);

    let opened = tokio::time::timeout(within, decrypt())
        .await
        .expect("the Decrypt hung")
        .expect("the next Decrypt unwraps again and succeeds");
    assert_eq!(opened.as_slice(), b"a data key");
    let opened = reader
        .decrypt_v1(&blob)
        .await
        .expect("v1 decrypt, from the cache");
    assert_eq!(opened.as_slice(), b"a data key");
    assert_eq!(provider.unwraps(), 3);
}
