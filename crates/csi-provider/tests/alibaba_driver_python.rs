//! The provider as `--provider alibabacloud`, as the Secrets Store CSI driver sees it, judged by
//! a client we did not write: the driver-shaped Python client (tests/python/driver.py, stubs
//! generated from proto/v1alpha1/service.proto at run time) mounts through the real
//! `kube-kms-csi-provider` binary on temporary sockets, backed by the Alibaba Cloud emulator
//! started in process (KMS, OOS, STS and ECS metadata; both request signatures verified as the
//! gateway does). tests/python/test_alibaba_mount.py checks every object type and field,
//! `jmesPath`, every identity mode, every error and the call counts under concurrent Mounts.
//!
//! Four provider processes serve the identity modes that are the provider's own settings: the
//! default one (the pod's RRSA role, named in the class or read from its ServiceAccount's
//! annotation through a stand-in Kubernetes API; nodePublishSecretRef AccessKeys; the ECS role),
//! one with its own RRSA role, one assuming a RAM role with its AccessKey, one with a plain
//! AccessKey.
//!
//! These tests never skip: without python3, grpcio, grpcio-tools or cryptography they fail and
//! say what to install. Every wait polls with a deadline.

mod util;

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::time::Duration;

use alibaba_emulator::{
    AccessKeySpec, Emulator, Grants, Options, ParameterSpec, RunningEmulator, SecretSpec,
    SecretVersionSpec,
};
use base64::Engine as _;
use serde_json::json;
use util::{
    ALIBABA_OTHER_ACCOUNT, ALIBABA_PROVIDER_SUBJECT, FakeKubeApi, ProviderProcess, random_hex,
    register_alibaba_roles, require_python, run_python_suite_against, short_dir,
};

/// The cluster's OIDC issuer, as the driver-shaped client signs pod tokens with it.
const ISSUER: &str = "https://oidc-ack.cn-hangzhou.aliyuncs.com/c-kube-kms";
/// The pod driver.py mounts for by default.
const POD_SUBJECT: &str = "system:serviceaccount:payments:checkout";

/// The emulator, seeded, and what the suite needs to know about it.
struct Fixture {
    emulator: RunningEmulator,
    dir: tempfile::TempDir,
    /// The seed manifest the suite reads (`CSI_ALIBABA_SEED`).
    manifest: serde_json::Value,
    /// Every value and AccessKey secret seeded: none may appear in a log.
    never_logged: Vec<String>,
    oidc_provider: String,
    provider_role: String,
    ram_role: String,
    provider_key: (String, String),
}

impl Fixture {
    async fn start() -> Self {
        let emulator = Emulator::start(Options::default())
            .await
            .expect("the Alibaba Cloud emulator starts");
        let mut never_logged = Vec::new();
        let mut secret = |name: &str, value: String| {
            emulator
                .put_secret(name, SecretSpec::text(&value))
                .expect("a secret");
            never_logged.push(value.clone());
            (name.to_owned(), value)
        };
        let mut secrets = serde_json::Map::new();
        for name in ["db-password", "storm", "throttled", "cached-a"] {
            let (name, value) = secret(name, format!("{name}-{}", random_hex(8)));
            secrets.insert(name, value.into());
        }
        let config = json!({
            "username": format!("svc-{}", random_hex(4)),
            "password": format!("pw-{}", random_hex(12)),
            "port": 5432,
            "nested": {"host": "db.payments.internal"},
        });
        let (name, value) = secret("app/config", config.to_string());
        secrets.insert(name, value.into());
        never_logged.push(config["password"].as_str().expect("text").to_owned());
        let mut binary = vec![0xff, 0x00, 0xfe, 0x80];
        binary.extend(hex::decode(random_hex(28)).expect("hex"));
        emulator
            .put_secret("tls-blob", SecretSpec::binary(&binary))
            .expect("a binary secret");
        let rotated = (
            format!("old-{}", random_hex(8)),
            format!("new-{}", random_hex(8)),
        );
        emulator
            .put_secret(
                "rotated",
                SecretSpec::versions(vec![
                    SecretVersionSpec::text(&rotated.0)
                        .id("v1")
                        .stages(&["ACSPrevious"]),
                    SecretVersionSpec::text(&rotated.1).id("v2"),
                ]),
            )
            .expect("a rotated secret");
        never_logged.extend([rotated.0.clone(), rotated.1.clone()]);
        let shared = format!("shared-{}", random_hex(8));
        emulator
            .put_secret(
                "shared",
                SecretSpec::text(&shared).in_account(ALIBABA_OTHER_ACCOUNT),
            )
            .expect("another account's secret");
        never_logged.push(shared.clone());
        let parameter = [
            format!("param-1-{}", random_hex(6)),
            format!("param-2-{}", random_hex(6)),
        ];
        emulator
            .put_parameter(
                "app-param",
                ParameterSpec::versions(&[&parameter[0], &parameter[1]]),
            )
            .expect("a parameter");
        never_logged.extend(parameter.iter().cloned());

        let key = |label: &str| (format!("LTAI{label}{}", random_hex(6)), random_hex(15));
        let reader = key("reader");
        let nobody = key("nobody");
        let provider_key = key("provider");
        let throttled = key("throttled");
        emulator
            .add_access_key(AccessKeySpec::new(&reader.0, &reader.1))
            .expect("a reader key");
        emulator
            .add_access_key(AccessKeySpec::new(&nobody.0, &nobody.1).with_grants(Grants::none()))
            .expect("a key without grants");
        emulator
            .add_access_key(AccessKeySpec::new(&provider_key.0, &provider_key.1))
            .expect("the provider's key");
        emulator
            .add_access_key(AccessKeySpec::new(&throttled.0, &throttled.1))
            .expect("a key for the throttling test");
        never_logged.extend([
            reader.1.clone(),
            nobody.1.clone(),
            provider_key.1.clone(),
            throttled.1.clone(),
        ]);

        let roles = register_alibaba_roles(
            &emulator,
            ISSUER,
            POD_SUBJECT,
            Grants {
                secrets: vec!["db-password".into(), "app/config".into(), "storm".into()],
                parameters: vec!["app-param".into()],
                roles: vec!["*".into()],
            },
            Grants::secrets(&["db-password"]),
        );

        let manifest = json!({
            "account_id": emulator.account_id(),
            "region": emulator.region(),
            "issuer": ISSUER,
            "oidc_provider_arn": roles.oidc_provider,
            "pod_role_arn": roles.pod_role,
            "cross_role_arn": roles.cross_role,
            "secrets": secrets,
            "binary_b64": base64::engine::general_purpose::STANDARD.encode(&binary),
            "rotated": [rotated.0, rotated.1],
            "shared": shared,
            "parameter": parameter,
            "reader": [reader.0, reader.1],
            "nobody": [nobody.0, nobody.1],
            "throttled_key": [throttled.0, throttled.1],
        });
        Self {
            emulator,
            dir: short_dir(),
            manifest,
            never_logged,
            oidc_provider: roles.oidc_provider,
            provider_role: roles.provider_role,
            ram_role: roles.ram_role,
            provider_key,
        }
    }

    /// Starts a provider `name` with the emulator's CA and DNS override and `args`.
    async fn provider(&self, name: &str, args: &[&str], env: &[(&str, String)]) -> ProviderProcess {
        let mut all: Vec<OsString> = vec![
            "--provider".into(),
            "alibabacloud".into(),
            "--ca-file".into(),
            self.emulator.ca_pem_path().into(),
            "--insecure-resolve".into(),
            format!("aliyuncs.com={}", self.emulator.addr()).into(),
            "--insecure-ecs-metadata-endpoint".into(),
            self.emulator
                .metadata_url()
                .expect("the emulator serves ECS metadata")
                .into(),
        ];
        all.extend(args.iter().map(OsString::from));
        ProviderProcess::launch(self.dir.path(), name, &all, env).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_driver_shaped_python_client_mounts_alibaba_objects_with_every_identity_and_error() {
    require_python();
    let fixture = Fixture::start().await;
    let token_file = fixture.dir.path().join("provider-token");
    let token = fixture
        .emulator
        .oidc_token(
            &fixture.oidc_provider,
            ALIBABA_PROVIDER_SUBJECT,
            Duration::from_secs(3600),
        )
        .expect("the provider's token");
    std::fs::write(&token_file, format!("{token}\n")).expect("write the provider's token");
    let secret_env = || vec![("SECRET_ACCESS_KEY", fixture.provider_key.1.clone())];

    // RRSA (the pod's or the provider's) needs the cluster's OIDC provider; the pod's role
    // comes from its ServiceAccount's annotation (payments/checkout has one; payments/bare not).
    let kube = FakeKubeApi::start(
        fixture.dir.path(),
        BTreeMap::from([
            (
                ("payments".to_owned(), "checkout".to_owned()),
                Some(
                    fixture.manifest["pod_role_arn"]
                        .as_str()
                        .expect("an ARN")
                        .to_owned(),
                ),
            ),
            (("payments".to_owned(), "bare".to_owned()), None),
        ]),
    )
    .await;
    let main = fixture
        .provider(
            "alibabacloud",
            &[
                "--oidc-provider-arn",
                &fixture.oidc_provider,
                "--kube-api-url",
                &kube.url,
                "--kube-token-file",
                kube.token_file.to_str().expect("a UTF-8 path"),
                "--kube-ca-file",
                kube.ca_file.to_str().expect("a UTF-8 path"),
            ],
            &[],
        )
        .await;
    let rrsa = fixture
        .provider(
            "rrsa",
            &[
                "--oidc-provider-arn",
                &fixture.oidc_provider,
                "--role-arn",
                &fixture.provider_role,
                "--oidc-token-file",
                token_file.to_str().expect("a UTF-8 path"),
            ],
            &[],
        )
        .await;
    let ram_role = fixture
        .provider(
            "ramrole",
            &[
                "--role-arn",
                &fixture.ram_role,
                "--access-key-id",
                &fixture.provider_key.0,
            ],
            &secret_env(),
        )
        .await;
    let access_key = fixture
        .provider(
            "accesskey",
            &["--access-key-id", &fixture.provider_key.0],
            &secret_env(),
        )
        .await;

    let seed = fixture.dir.path().join("alibaba-seed.json");
    std::fs::write(
        &seed,
        serde_json::to_string_pretty(&fixture.manifest).expect("JSON"),
    )
    .expect("write the seed manifest");
    let path = |provider: &ProviderProcess| provider.socket.display().to_string();
    let env = vec![
        ("CSI_ALIBABA_SOCKET", path(&main)),
        ("CSI_ALIBABA_RRSA_SOCKET", path(&rrsa)),
        ("CSI_ALIBABA_RAM_ROLE_SOCKET", path(&ram_role)),
        ("CSI_ALIBABA_ACCESS_KEY_SOCKET", path(&access_key)),
        ("CSI_HEALTH_ADDRESS", main.health.to_string()),
        ("CSI_EMULATOR_URL", fixture.emulator.url()),
        (
            "CSI_CA",
            fixture.emulator.ca_pem_path().display().to_string(),
        ),
        ("CSI_ALIBABA_SEED", seed.display().to_string()),
    ];
    run_python_suite_against(&main, &["test_alibaba_mount"], &env).await;
    for provider in [main, rrsa, ram_role, access_key] {
        provider.stop_cleanly(&fixture.never_logged).await;
    }
}
