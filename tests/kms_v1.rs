//! The KMS v1 API (v1beta1) on the same socket, for clusters not yet on v2.

mod util;

use kube_kms::proto::v1beta1::{DecryptRequest, EncryptRequest, VersionRequest};
use kube_kms::proto::v2;
use tonic::Code;
use util::TestPlugin;

#[tokio::test]
async fn version_reports_v1beta1_and_a_semver_runtime() {
    let plugin = TestPlugin::start().await;
    let version = plugin
        .v1()
        .await
        .version(VersionRequest {
            version: "v1beta1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(version.version, "v1beta1");
    assert_eq!(version.runtime_name, "kube-kms");
    let parts: Vec<_> = version.runtime_version.split('.').collect();
    assert_eq!(parts.len(), 3, "{}", version.runtime_version);
    assert!(parts.iter().all(|part| part.parse::<u64>().is_ok()));
    plugin.stop().await;
}

#[tokio::test]
async fn v1_encrypt_decrypt_round_trip_and_distinct_blobs() {
    let plugin = TestPlugin::start().await;
    let mut client = plugin.v1().await;
    let request = || EncryptRequest {
        version: "v1beta1".into(),
        plain: vec![9; 32],
    };
    let first = client.encrypt(request()).await.unwrap().into_inner().cipher;
    let second = client.encrypt(request()).await.unwrap().into_inner().cipher;
    assert_ne!(first, second);
    for cipher in [first, second] {
        let plain = client
            .decrypt(DecryptRequest {
                version: "v1beta1".into(),
                cipher,
            })
            .await
            .unwrap()
            .into_inner()
            .plain;
        assert_eq!(plain, vec![9; 32]);
    }
    plugin.stop().await;
}

#[tokio::test]
async fn a_tampered_or_foreign_v1_blob_is_invalid_argument() {
    let plugin = TestPlugin::start().await;
    let mut client = plugin.v1().await;
    let cipher = client
        .encrypt(EncryptRequest {
            version: "v1beta1".into(),
            plain: vec![9; 32],
        })
        .await
        .unwrap()
        .into_inner()
        .cipher;
    for byte in 0..cipher.len() {
        let mut tampered = cipher.clone();
        tampered[byte] ^= 0x10;
        let status = client
            .decrypt(DecryptRequest {
                version: "v1beta1".into(),
                cipher: tampered,
            })
            .await
            .unwrap_err();
        assert!(
            matches!(
                status.code(),
                Code::InvalidArgument | Code::FailedPrecondition
            ),
            "byte {byte}: {:?} {}",
            status.code(),
            status.message()
        );
    }

    // A v2 ciphertext is not a v1 blob, and a v1 blob is not a v2 ciphertext.
    let mut v2_client =
        v2::key_management_service_client::KeyManagementServiceClient::new(plugin.channel().await);
    let v2_sealed = v2_client
        .encrypt(v2::EncryptRequest {
            plaintext: vec![9; 32],
            uid: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let status = client
        .decrypt(DecryptRequest {
            version: "v1beta1".into(),
            cipher: v2_sealed.ciphertext.clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = v2_client
        .decrypt(v2::DecryptRequest {
            ciphertext: cipher,
            uid: String::new(),
            key_id: v2_sealed.key_id.to_string(),
            annotations: (*v2_sealed.annotations).clone(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);

    let status = client
        .encrypt(EncryptRequest {
            version: "v1beta1".into(),
            plain: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
    plugin.stop().await;
}
