//! A restarting kube-apiserver's storm: 1,000 concurrent Decrypts over 20 distinct wrapped KEKs
//! reach a plugin that has never seen them. Single-flight makes it at most 20 unwraps, and the
//! guard keeps at most `max_concurrent_unwraps` of them in flight at once.

mod util;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::proto::v2::{DecryptRequest, EncryptRequest, EncryptResponse};
use kube_kms::provider::guard::{GuardPolicy, Guarded};
use util::{TestPlugin, UnwrapHook};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_decrypts_over_twenty_keks_cost_at_most_twenty_bounded_unwraps() {
    // One KEK per Encrypt, so 20 Encrypts leave 20 distinct wrapped KEKs.
    let one_per_kek = RotationPolicy {
        max_encryptions: 1,
        ..RotationPolicy::DEFAULT
    };
    let writer = TestPlugin::start_with(one_per_kek).await;
    let mut client = writer.v2().await;
    let mut written: Vec<EncryptResponse> = Vec::new();
    for i in 0..20u8 {
        let request = EncryptRequest {
            plaintext: vec![i; 32],
            uid: String::new(),
        };
        written.push(client.encrypt(request).await.unwrap().into_inner());
    }

    // The real local key ring, with each unwrap taking 20 ms (a latency model of a remote key
    // service) and the most unwraps ever in flight recorded.
    let in_flight = Arc::new(AtomicU32::new(0));
    let most_in_flight = Arc::new(AtomicU32::new(0));
    let slow = Arc::new(UnwrapHook::new(util::key_ring(&writer.key_dir), {
        let in_flight = Arc::clone(&in_flight);
        let most_in_flight = Arc::clone(&most_in_flight);
        move |_| {
            let in_flight = Arc::clone(&in_flight);
            let most_in_flight = Arc::clone(&most_in_flight);
            async move {
                let now = in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                most_in_flight.fetch_max(now, Ordering::SeqCst);
                tokio::time::sleep(Duration::from_millis(20)).await;
                in_flight.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }));
    let policy = GuardPolicy {
        max_concurrent_unwraps: 4,
        ..GuardPolicy::DEFAULT
    };
    let guarded = Arc::new(Guarded::new(slow.clone(), policy));
    let reader = TestPlugin::start_on(
        util::short_tempdir(),
        writer.key_dir.clone(),
        guarded,
        RotationPolicy::DEFAULT,
    )
    .await;
    let channels: Vec<_> = futures_channels(&reader).await;
    let mut calls = Vec::new();
    for call in 0..1000usize {
        let sealed = &written[call % 20];
        let request = DecryptRequest {
            ciphertext: sealed.ciphertext.clone(),
            uid: format!("storm-{call}"),
            key_id: sealed.key_id.to_string(),
            annotations: (*sealed.annotations).clone(),
        };
        let mut client = channels[call % channels.len()].clone();
        let expected = vec![u8::try_from(call % 20).unwrap(); 32];
        calls.push(tokio::spawn(async move {
            let plaintext = client
                .decrypt(request)
                .await
                .unwrap()
                .into_inner()
                .plaintext;
            assert_eq!(plaintext, expected);
        }));
    }
    for call in calls {
        call.await.unwrap();
    }
    assert_eq!(slow.unwraps(), 20, "one unwrap per distinct KEK");
    assert!(
        most_in_flight.load(Ordering::SeqCst) <= 4,
        "unwraps are bounded"
    );
    assert_eq!(reader.envelope.cache_stats().unwraps, 20);
    reader.stop().await;
    writer.stop().await;
}

/// A few connections, as several kube-apiservers (or one with many streams) would use.
async fn futures_channels(
    plugin: &TestPlugin,
) -> Vec<
    kube_kms::proto::v2::key_management_service_client::KeyManagementServiceClient<
        tonic::transport::Channel,
    >,
> {
    let mut clients = Vec::new();
    for _ in 0..8 {
        clients.push(plugin.v2().await);
    }
    clients
}
