//! The Rust control API of a started emulator, without an SDK: what a CSI provider test sets
//! up (secrets, rotation, identities, tokens, the ECS role) reads back as stored, refuses what
//! the services would, and never shows a secret in `Debug` output.

use std::time::Duration;

use alibaba_emulator::{
    AccessKeySpec, DataType, Emulator, EmulatorError, Grants, OidcProviderSpec, Options,
    ParameterSpec, RoleSpec, SecretSpec, SecretVersionSpec,
};

#[tokio::test]
async fn control_calls_store_and_refuse_like_the_services() {
    let emulator = Emulator::start(Options {
        metadata_bind: None,
        ..Options::default()
    })
    .await
    .expect("start the emulator");
    assert_eq!(emulator.metadata_url(), None);
    assert!(emulator.endpoint().starts_with("localhost:"));
    assert_eq!(
        emulator.endpoint_for("kms-vpc.cn-hangzhou.aliyuncs.com"),
        format!(
            "kms-vpc.cn-hangzhou.aliyuncs.com:{}",
            emulator.addr().port()
        )
    );
    assert!(emulator.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert!(emulator.ca_pem_path().exists());

    let info = emulator.put_secret("db", SecretSpec::text("one")).unwrap();
    assert_eq!(info.arn, "acs:kms:cn-hangzhou:1234567890123456:secret/db");
    let info = emulator
        .add_secret_version("db", SecretVersionSpec::binary(b"\x00two"))
        .unwrap();
    let stages: Vec<(&str, Vec<String>, DataType)> = info
        .versions
        .iter()
        .map(|v| (v.version_id.as_str(), v.stages.clone(), v.data_type))
        .collect();
    assert_eq!(
        stages,
        vec![
            ("v1", vec!["ACSPrevious".to_owned()], DataType::Text),
            ("v2", vec!["ACSCurrent".to_owned()], DataType::Binary),
        ]
    );
    assert!(matches!(
        emulator.add_secret_version("missing", SecretVersionSpec::text("x")),
        Err(EmulatorError::NotFound(_))
    ));
    assert!(emulator.delete_secret("db"));
    assert!(emulator.secret("db").is_none());

    let parameter = emulator
        .put_parameter("app-db", ParameterSpec::versions(&["a", "b"]))
        .unwrap();
    assert_eq!(parameter.latest_version, 2);
    assert!(
        emulator
            .put_parameter("ALIYUN-x", ParameterSpec::value("v"))
            .is_err()
    );

    let key = AccessKeySpec::new("LTAIrust", "hunter2").with_grants(Grants::secrets(&["db"]));
    assert!(!format!("{key:?}").contains("hunter2"));
    emulator.add_access_key(key).unwrap();
    assert!(
        emulator
            .add_access_key(AccessKeySpec::new("STS.x", "s"))
            .is_err()
    );

    let provider = emulator
        .add_oidc_provider(OidcProviderSpec::new(
            "ack-rrsa-c1",
            "https://issuer.example",
        ))
        .unwrap();
    assert_eq!(
        provider,
        "acs:ram::1234567890123456:oidc-provider/ack-rrsa-c1"
    );
    let role = emulator
        .add_role(RoleSpec::new("CSI-Reader").trust_oidc(&provider, &["system:serviceaccount:*"]))
        .unwrap();
    assert_eq!(role, "acs:ram::1234567890123456:role/csi-reader");
    let token = emulator
        .oidc_token(
            &provider,
            "system:serviceaccount:ns:sa",
            Duration::from_secs(600),
        )
        .unwrap();
    let claims = alibaba_emulator::sts::read_claims(&token).unwrap();
    assert_eq!(claims.issuer, "https://issuer.example");
    assert_eq!(claims.audiences, ["sts.aliyuncs.com"]);
    assert!(
        emulator
            .oidc_token("acs:ram::1:oidc-provider/none", "s", Duration::from_secs(1))
            .is_err()
    );

    emulator.set_ecs_role(Some("csi-reader")).unwrap();
    assert!(matches!(
        emulator.set_ecs_role(Some("nobody")),
        Err(EmulatorError::NotFound(_))
    ));
    emulator.set_ecs_role(None).unwrap();
    assert_eq!(emulator.reads("GetSecretValue", "db"), 0);
    assert!(emulator.all_counts().is_empty());
    emulator.shutdown().await;
}
