//! The Alibaba backend against the in-process Alibaba Cloud emulator, through the stack
//! production runs (`wiring::alibaba_backend`): a class's parameters → the credential chain
//! proven with STS (AssumeRoleWithOIDC, AssumeRole) or the ECS metadata service → the
//! coalescing cache → KMS GetSecretValue and OOS GetSecretParameter signed with
//! ACS3-HMAC-SHA256. The emulator verifies both signatures as the gateway does, so every read
//! that succeeds here proves the signing compatible.
//!
//! Endpoints are the real names (`kms-vpc.cn-hangzhou.aliyuncs.com`, `sts.aliyuncs.com`),
//! resolved to the emulator by the test-only DNS override and trusted through its CA; the
//! metadata service is the emulator's plain-HTTP listener.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

mod util;

use alibaba_emulator::{
    AccessKeySpec, Emulator, Fault, FaultRule, Grants, Options, ParameterSpec, RoleSpec,
    RunningEmulator, SecretSpec, SecretVersionSpec,
};
use csi_provider::alibaba::mount::AlibabaBackend;
use csi_provider::errors::MountError;
use csi_provider::files::Mounted;
use csi_provider::metrics::Metrics;
use csi_provider::request::{MountInput, NodePublishSecrets, PodInfo, ServiceAccountTokens};
use csi_provider::wiring::{self, AlibabaSettings, Settings};
use secrecy::SecretString;
use tokio::time::Instant;
use tonic::Code;
use util::{ALIBABA_OTHER_ACCOUNT, ALIBABA_PROVIDER_SUBJECT, FakeKubeApi, register_alibaba_roles};

const ISSUER: &str = "https://oidc-ack.cn-hangzhou.aliyuncs.com/c1";
const POD_SUBJECT: &str = "system:serviceaccount:shop:web";
const DB: &str = "db-password-value";
const READER: (&str, &str) = ("LTAIreader0001", "reader-secret-value");
const NOBODY: (&str, &str) = ("LTAInobody0001", "nobody-secret-value");
const PROVIDER_KEY: (&str, &str) = ("LTAIprovider01", "provider-secret-value");

/// The emulator, seeded, with an identity for every mode.
struct Fixture {
    emulator: RunningEmulator,
    dir: tempfile::TempDir,
    oidc_provider: String,
    pod_role: String,
    provider_role: String,
    ram_role: String,
    cross_role: String,
    token_file: PathBuf,
}

impl Fixture {
    async fn start() -> Self {
        let emulator = Emulator::start(Options::default())
            .await
            .expect("the emulator starts");
        emulator
            .put_secret("db", SecretSpec::text(DB))
            .expect("the emulator takes it");
        emulator
            .put_secret("blob", SecretSpec::binary(&[0xff, 0x00, 0xfe, 0x80, 0x7f]))
            .expect("the emulator takes it");
        emulator
            .put_secret(
                "rot",
                SecretSpec::versions(vec![
                    SecretVersionSpec::text("old-value")
                        .id("v1")
                        .stages(&["ACSPrevious"]),
                    SecretVersionSpec::text("new-value").id("v2"),
                ]),
            )
            .expect("the emulator takes it");
        emulator
            .put_secret(
                "app/config",
                SecretSpec::text(r#"{"username":"app","password":"pw-1","port":5432}"#),
            )
            .expect("the emulator takes it");
        for name in ["hot", "cold", "storm"] {
            emulator
                .put_secret(name, SecretSpec::text(&format!("{name}-value")))
                .expect("the emulator takes it");
        }
        emulator
            .put_secret(
                "shared",
                SecretSpec::text("shared-value").in_account(ALIBABA_OTHER_ACCOUNT),
            )
            .expect("the emulator takes it");
        emulator
            .put_parameter("p", ParameterSpec::versions(&["param-1", "param-2"]))
            .expect("the emulator takes it");

        emulator
            .add_access_key(AccessKeySpec::new(READER.0, READER.1))
            .expect("the emulator takes it");
        emulator
            .add_access_key(AccessKeySpec::new(NOBODY.0, NOBODY.1).with_grants(Grants::none()))
            .expect("the emulator takes it");
        emulator
            .add_access_key(AccessKeySpec::new(PROVIDER_KEY.0, PROVIDER_KEY.1))
            .expect("the emulator takes it");
        let roles = register_alibaba_roles(
            &emulator,
            ISSUER,
            POD_SUBJECT,
            Grants {
                secrets: vec!["db".into(), "app/config".into(), "storm".into()],
                parameters: vec!["p".into()],
                roles: vec!["*".into()],
            },
            Grants::all(),
        );
        let dir = tempfile::tempdir().expect("the emulator takes it");
        let token_file = dir.path().join("provider-token");
        let token = emulator
            .oidc_token(
                &roles.oidc_provider,
                ALIBABA_PROVIDER_SUBJECT,
                Duration::from_secs(3600),
            )
            .expect("the emulator takes it");
        std::fs::write(&token_file, format!("{token}\n")).expect("the emulator takes it");
        Self {
            emulator,
            dir,
            oidc_provider: roles.oidc_provider,
            pod_role: roles.pod_role,
            provider_role: roles.provider_role,
            ram_role: roles.ram_role,
            cross_role: roles.cross_role,
            token_file,
        }
    }

    /// The shared settings: the emulator's CA, every `*.aliyuncs.com` to the emulator.
    fn settings(&self) -> Settings {
        Settings {
            ca_file: Some(self.emulator.ca_pem_path().to_owned()),
            insecure_resolve: vec![format!("aliyuncs.com={}", self.emulator.addr())],
            ..Settings::default()
        }
    }

    /// Alibaba settings with no provider identity but the ECS metadata service.
    fn alibaba(&self) -> AlibabaSettings {
        AlibabaSettings {
            insecure_ecs_metadata_endpoint: self.emulator.metadata_url(),
            ..AlibabaSettings::default()
        }
    }

    fn backend(&self, alibaba: AlibabaSettings) -> AlibabaBackend {
        wiring::alibaba_backend(&self.settings(), &alibaba, Arc::new(Metrics::default()))
            .expect("the Alibaba backend")
    }

    fn pod_token(&self, subject: &str) -> String {
        self.emulator
            .oidc_token(&self.oidc_provider, subject, Duration::from_secs(3600))
            .expect("the emulator takes it")
    }
}

fn deadline(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

/// A Mount request for a class with `objects` and `parameters`, from pod shop/web.
fn input(
    objects: &str,
    parameters: &[(&str, &str)],
    secrets: &[(&str, &str)],
    token: Option<&str>,
) -> MountInput {
    let mut map = BTreeMap::from([("objects".to_owned(), objects.to_owned())]);
    for (key, value) in parameters {
        map.insert((*key).to_owned(), (*value).to_owned());
    }
    MountInput {
        parameters: map,
        pod: PodInfo {
            name: "web-0".into(),
            namespace: "shop".into(),
            uid: "4e3c2a1b-0000-4000-8000-000000000001".into(),
            service_account: "web".into(),
        },
        tokens: ServiceAccountTokens {
            by_audience: token
                .map(|token| ("sts.aliyuncs.com".to_owned(), SecretString::from(token)))
                .into_iter()
                .collect(),
        },
        secrets: NodePublishSecrets {
            by_key: secrets
                .iter()
                .map(|(k, v)| ((*k).to_owned(), SecretString::from(*v)))
                .collect(),
        },
        default_mode: 0o644,
    }
}

fn access_key((id, secret): (&'static str, &'static str)) -> [(&'static str, &'static str); 2] {
    [("access_key", id), ("access_secret", secret)]
}

/// The mounted files by path, as text (lossy) and bytes.
fn files(mounted: &Mounted) -> BTreeMap<String, Vec<u8>> {
    mounted
        .files
        .iter()
        .map(|file| (file.path.clone(), file.contents.to_vec()))
        .collect()
}

fn versions(mounted: &Mounted) -> BTreeMap<String, String> {
    mounted
        .versions
        .iter()
        .map(|version| (version.id.clone(), version.version.clone()))
        .collect()
}

fn code(result: Result<Mounted, MountError>) -> (Code, String) {
    match result {
        Ok(mounted) => panic!("mounted {:?}", files(&mounted).keys()),
        Err(error) => (error.code(), error.to_string()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_identity_mode_is_proven_in_alibabas_chain_order() {
    let fx = Fixture::start().await;
    let objects = "- objectName: db";
    let pod_token = fx.pod_token(POD_SUBJECT);
    let read = |mounted: Result<Mounted, MountError>| match mounted {
        Ok(mounted) => String::from_utf8(files(&mounted)["db"].clone()).expect("text"),
        Err(error) => panic!("{error}"),
    };

    // The pod's own role, named in the class.
    let backend = fx.backend(AlibabaSettings {
        oidc_provider_arn: Some(fx.oidc_provider.clone()),
        ..fx.alibaba()
    });
    let class = [
        ("usePodServiceAccountToken", "true"),
        ("podServiceAccountRoleArn", fx.pod_role.as_str()),
    ];
    let mounted = backend
        .mount(&input(objects, &class, &[], Some(&pod_token)), deadline(10))
        .await;
    assert_eq!(read(mounted), DB);
    assert_eq!(fx.emulator.counts("AssumeRoleWithOIDC").succeeded, 1);

    // The provider's own RRSA, from its token file (a trailing newline, as kubelet writes it).
    let backend = fx.backend(AlibabaSettings {
        role_arn: Some(fx.provider_role.clone()),
        oidc_provider_arn: Some(fx.oidc_provider.clone()),
        oidc_token_file: fx.token_file.clone(),
        access_key_id: Some(PROVIDER_KEY.0.into()),
        access_key_secret: Some(SecretString::from(PROVIDER_KEY.1)),
        ..fx.alibaba()
    });
    let node_keys = access_key(READER);
    let mounted = backend
        .mount(&input(objects, &[], &node_keys, None), deadline(10))
        .await;
    assert_eq!(
        read(mounted),
        DB,
        "the provider's RRSA comes before the node key"
    );
    assert_eq!(fx.emulator.counts("AssumeRoleWithOIDC").succeeded, 2);

    // A RAM role assumed with the provider's AccessKey.
    let backend = fx.backend(AlibabaSettings {
        role_arn: Some(fx.ram_role.clone()),
        access_key_id: Some(PROVIDER_KEY.0.into()),
        access_key_secret: Some(SecretString::from(PROVIDER_KEY.1)),
        ..fx.alibaba()
    });
    let mounted = backend
        .mount(&input(objects, &[], &node_keys, None), deadline(10))
        .await;
    assert_eq!(read(mounted), DB);
    assert_eq!(fx.emulator.counts("AssumeRole").succeeded, 1);

    // The nodePublishSecretRef's AccessKey, then the provider's, then the ECS role.
    let backend = fx.backend(AlibabaSettings {
        access_key_id: Some(PROVIDER_KEY.0.into()),
        access_key_secret: Some(SecretString::from(PROVIDER_KEY.1)),
        ..fx.alibaba()
    });
    let nobody = access_key(NOBODY);
    let (refused, message) = code(
        backend
            .mount(&input(objects, &[], &nobody, None), deadline(10))
            .await,
    );
    assert_eq!(
        refused,
        Code::PermissionDenied,
        "the node key is used: {message}"
    );
    let mounted = backend
        .mount(&input(objects, &[], &[], None), deadline(10))
        .await;
    assert_eq!(read(mounted), DB, "the provider's AccessKey");
    let backend = fx.backend(fx.alibaba());
    let before = fx.emulator.counts("EcsMetadata").requests;
    let mounted = backend
        .mount(&input(objects, &[], &[], None), deadline(10))
        .await;
    assert_eq!(read(mounted), DB, "the ECS instance's role");
    assert!(fx.emulator.counts("EcsMetadata").requests > before);
    fx.emulator.require_metadata_token(true);
    let backend = fx.backend(fx.alibaba());
    let mounted = backend
        .mount(&input(objects, &[], &[], None), deadline(10))
        .await;
    assert_eq!(read(mounted), DB, "an IMDSv2 token is asked for first");
    let backend = fx.backend(AlibabaSettings {
        ecs_ram_role: false,
        ..fx.alibaba()
    });
    let (refused, _) = code(
        backend
            .mount(&input(objects, &[], &[], None), deadline(10))
            .await,
    );
    assert_eq!(refused, Code::FailedPrecondition, "no identity at all");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn kms_and_oos_objects_mount_as_alibabas_provider_writes_them() {
    let fx = Fixture::start().await;
    let backend = fx.backend(fx.alibaba());
    let objects = "\
- objectName: db
- objectName: blob
  objectAlias: blob.bin
- objectName: rot
  objectVersionLabel: ACSPrevious
  objectAlias: rot-previous
- objectName: rot
  objectVersion: v2
  objectAlias: rot-v2
- objectName: app/config
  jmesPath:
    - path: username
      objectAlias: app/user
    - path: port
      objectAlias: port
- objectName: p
  objectType: oos
- objectName: p
  objectType: oos
  objectVersion: \"1\"
  objectAlias: p-first
";
    let keys = access_key(READER);
    let mounted = backend
        .mount(&input(objects, &[], &keys, None), deadline(10))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    let files = files(&mounted);
    let expected: BTreeMap<String, Vec<u8>> = [
        ("db", DB.as_bytes().to_vec()),
        ("blob.bin", vec![0xff, 0x00, 0xfe, 0x80, 0x7f]),
        ("rot-previous", b"old-value".to_vec()),
        ("rot-v2", b"new-value".to_vec()),
        (
            "app_config",
            br#"{"username":"app","password":"pw-1","port":5432}"#.to_vec(),
        ),
        ("app_user", b"app".to_vec()),
        ("port", b"5432".to_vec()),
        ("p", b"param-2".to_vec()),
        ("p-first", b"param-1".to_vec()),
    ]
    .into_iter()
    .map(|(path, contents)| (path.to_owned(), contents))
    .collect();
    assert_eq!(files, expected);
    assert!(mounted.files.iter().all(|file| file.mode == 0o644));
    let versions = versions(&mounted);
    assert_eq!(versions["rot-previous"], "v1");
    assert_eq!(versions["rot-v2"], "v2");
    assert_eq!(versions["app_user"], versions["app_config"]);
    assert_eq!(versions["p"], "2");
    assert_eq!(versions["p-first"], "1");
    assert_eq!(versions.len(), 9);

    // pathTranslation off keeps directories; another character replaces `/`.
    let mounted = backend
        .mount(
            &input(
                "- objectName: app/config",
                &[("pathTranslation", "False")],
                &keys,
                None,
            ),
            deadline(10),
        )
        .await
        .unwrap();
    assert_eq!(mounted.files[0].path, "app/config");

    // A missing object, a missing version, a jmesPath matching nothing: errors naming it.
    for (objects, expected, needle) in [
        (
            "- objectName: missing",
            Code::NotFound,
            "Forbidden.ResourceNotFound",
        ),
        (
            "- objectName: missing\n  objectType: oos",
            Code::NotFound,
            "EntityNotExists.Parameter",
        ),
        (
            "- objectName: rot\n  objectVersion: v9",
            Code::NotFound,
            "version v9",
        ),
        (
            "- objectName: app/config\n  jmesPath:\n    - {path: nothing, objectAlias: x}",
            Code::FailedPrecondition,
            "matched nothing",
        ),
        (
            "- objectName: db\n  jmesPath:\n    - {path: a, objectAlias: x}",
            Code::FailedPrecondition,
            "not a JSON document",
        ),
    ] {
        let (found, message) = code(
            backend
                .mount(&input(objects, &[], &keys, None), deadline(10))
                .await,
        );
        assert_eq!(found, expected, "{objects}: {message}");
        assert!(message.contains(needle), "{objects}: {message}");
        assert!(message.contains("objectType:"), "{message}");
        assert!(
            !message.contains(DB) && !message.contains("pw-1"),
            "{message}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cross_account_role_is_assumed_with_the_mounts_identity() {
    let fx = Fixture::start().await;
    let backend = fx.backend(fx.alibaba());
    let objects = format!(
        "- objectName: shared\n  crossAccountRoleArn: {}\n- objectName: db",
        fx.cross_role
    );
    let keys = access_key(READER);
    let mounted = backend
        .mount(&input(&objects, &[], &keys, None), deadline(10))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(files(&mounted)["shared"], b"shared-value");
    assert_eq!(files(&mounted)["db"], DB.as_bytes());
    // Once per proven base identity and role.
    backend
        .mount(&input(&objects, &[], &keys, None), deadline(10))
        .await
        .unwrap();
    assert_eq!(fx.emulator.counts("AssumeRole").succeeded, 1);
    // Without it, the other account's secret is not this account's.
    let (found, _) = code(
        backend
            .mount(
                &input("- objectName: shared", &[], &keys, None),
                deadline(10),
            )
            .await,
    );
    assert_eq!(found, Code::NotFound);
    // An identity the role does not trust is refused, naming the role.
    let untrusting = fx
        .emulator
        .add_role(RoleSpec::new("closed").in_account(ALIBABA_OTHER_ACCOUNT))
        .unwrap();
    let (found, message) = code(
        backend
            .mount(
                &input(
                    &format!("- objectName: shared\n  crossAccountRoleArn: {untrusting}"),
                    &[],
                    &keys,
                    None,
                ),
                deadline(10),
            )
            .await,
    );
    assert_eq!(found, Code::PermissionDenied, "{message}");
    assert!(message.contains("crossAccountRoleArn"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn a_hundred_concurrent_mounts_cost_one_sts_call_and_one_read() {
    let fx = Fixture::start().await;
    let backend = Arc::new(fx.backend(AlibabaSettings {
        oidc_provider_arn: Some(fx.oidc_provider.clone()),
        ..fx.alibaba()
    }));
    let token = fx.pod_token(POD_SUBJECT);
    let class = [
        ("usePodServiceAccountToken", "true"),
        ("podServiceAccountRoleArn", fx.pod_role.as_str()),
    ];
    // The emulator answers slowly, so that the mounts overlap.
    fx.emulator.inject(FaultRule::on(
        "GetSecretValue",
        Fault::Latency { millis: 200 },
    ));
    let mounts = (0..100).map(|_| {
        let backend = Arc::clone(&backend);
        let input = input("- objectName: storm", &class, &[], Some(&token));
        tokio::spawn(async move { backend.mount(&input, deadline(20)).await })
    });
    for mounted in futures::future::join_all(mounts).await {
        let mounted = mounted.unwrap().unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(files(&mounted)["storm"], b"storm-value");
    }
    assert_eq!(fx.emulator.reads("GetSecretValue", "storm"), 1);
    assert_eq!(fx.emulator.counts("AssumeRoleWithOIDC").requests, 1);
    let stats = backend.cache().stats();
    assert_eq!((stats.misses, stats.coalesced + stats.hits), (1, 99));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn throttling_is_waited_out_within_the_deadline_and_refused_past_it() {
    let fx = Fixture::start().await;
    let backend = fx.backend(fx.alibaba());
    let keys = access_key(READER);
    // x-acs-retry-after is milliseconds: 700 ms, once.
    fx.emulator.inject(
        FaultRule::on(
            "GetSecretValue",
            Fault::Throttle {
                retry_after_millis: Some(700),
            },
        )
        .named("hot")
        .times(1),
    );
    let started = Instant::now();
    let mounted = backend
        .mount(&input("- objectName: hot", &[], &keys, None), deadline(10))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(files(&mounted)["hot"], b"hot-value");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(700) && took < Duration::from_secs(5),
        "waited {took:?}"
    );
    assert_eq!(fx.emulator.reads("GetSecretValue", "hot"), 2);

    // A retry-after past the deadline fails at once, saying when to retry; the endpoint is
    // then not called again until it passes.
    fx.emulator.inject(
        FaultRule::on(
            "GetSecretValue",
            Fault::Throttle {
                retry_after_millis: Some(30_000),
            },
        )
        .named("cold"),
    );
    let started = Instant::now();
    let (found, message) = code(
        backend
            .mount(&input("- objectName: cold", &[], &keys, None), deadline(8))
            .await,
    );
    assert_eq!(found, Code::ResourceExhausted, "{message}");
    assert!(
        message.contains("Rejected.Throttling") && message.contains("retry after 30 s"),
        "{message}"
    );
    // At once: well before the 8 s deadline a wait would have run into.
    assert!(started.elapsed() < Duration::from_secs(5), "failed at once");
    let (found, message) = code(
        backend
            .mount(&input("- objectName: db", &[], &keys, None), deadline(3))
            .await,
    );
    assert_eq!(found, Code::ResourceExhausted, "{message}");
    assert_eq!(fx.emulator.reads("GetSecretValue", "db"), 0, "not sent");
    assert_eq!(fx.emulator.reads("GetSecretValue", "cold"), 1);
    // Another identity (another account, as far as the cache knows) is not held back.
    let mounted = backend
        .mount(&input("- objectName: db", &[], &[], None), deadline(3))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(files(&mounted)["db"], DB.as_bytes());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn identities_never_share_what_they_read() {
    let fx = Fixture::start().await;
    let backend = fx.backend(AlibabaSettings {
        oidc_provider_arn: Some(fx.oidc_provider.clone()),
        ..fx.alibaba()
    });
    let objects = "- objectName: db";
    let reader = access_key(READER);
    backend
        .mount(&input(objects, &[], &reader, None), deadline(10))
        .await
        .unwrap();
    // Another AccessKey without the grant, and the reader's id with a wrong secret: refused
    // by KMS, not served from the cache.
    let (found, _) = code(
        backend
            .mount(
                &input(objects, &[], &access_key(NOBODY), None),
                deadline(10),
            )
            .await,
    );
    assert_eq!(found, Code::PermissionDenied);
    let forged = [("access_key", READER.0), ("access_secret", "guessed")];
    let (found, message) = code(
        backend
            .mount(&input(objects, &[], &forged, None), deadline(10))
            .await,
    );
    assert_eq!(found, Code::Unauthenticated, "{message}");
    assert!(message.contains("SignatureDoesNotMatch"), "{message}");
    assert!(
        !message.contains(READER.0),
        "the id is shortened: {message}"
    );
    // The emulator counts reads whose signature verified: the reader's and the refused one.
    assert_eq!(fx.emulator.reads("GetSecretValue", "db"), 2);

    // A pod whose token STS refuses (its ServiceAccount is not trusted) gets nothing, even
    // though the role's value is cached for a pod it trusts.
    let class = [
        ("usePodServiceAccountToken", "true"),
        ("podServiceAccountRoleArn", fx.pod_role.as_str()),
    ];
    backend
        .mount(
            &input(objects, &class, &[], Some(&fx.pod_token(POD_SUBJECT))),
            deadline(10),
        )
        .await
        .unwrap();
    let intruder = fx.pod_token("system:serviceaccount:shop:intruder");
    let (found, message) = code(
        backend
            .mount(&input(objects, &class, &[], Some(&intruder)), deadline(10))
            .await,
    );
    assert_eq!(found, Code::Unauthenticated, "{message}");
    assert!(message.contains("AuthenticationFail"), "{message}");
    assert!(!message.contains("eyJ"), "{message}");
    // Without the token the class asked for, no fallback to another identity.
    let (found, message) = code(
        backend
            .mount(&input(objects, &class, &reader, None), deadline(10))
            .await,
    );
    assert_eq!(found, Code::FailedPrecondition, "{message}");
    assert!(message.contains("sts.aliyuncs.com"), "{message}");

    // The pod role may not read `blob`: its refusal is its own.
    let (found, _) = code(
        backend
            .mount(
                &input(
                    "- objectName: blob",
                    &class,
                    &[],
                    Some(&fx.pod_token(POD_SUBJECT)),
                ),
                deadline(10),
            )
            .await,
    );
    assert_eq!(found, Code::PermissionDenied);
    backend
        .mount(
            &input("- objectName: blob", &[], &reader, None),
            deadline(10),
        )
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn expired_sts_credentials_and_outages_have_their_codes() {
    let fx = Fixture::start().await;
    let backend = fx.backend(fx.alibaba());
    let objects = "- objectName: db";
    backend
        .mount(&input(objects, &[], &[], None), deadline(10))
        .await
        .unwrap();
    // The ECS role's credentials are revoked while cached: KMS says so.
    fx.emulator.expire_sts_credentials();
    let (found, message) = code(
        backend
            .mount(&input("- objectName: rot", &[], &[], None), deadline(10))
            .await,
    );
    assert_eq!(found, Code::Unauthenticated, "{message}");
    assert!(
        message.contains("InvalidSecurityToken.Expired"),
        "{message}"
    );

    // Credentials refused as expired are not used again: the next Mount proves its identity
    // afresh (a RAM role: a new AssumeRole).
    let backend = fx.backend(AlibabaSettings {
        role_arn: Some(fx.ram_role.clone()),
        access_key_id: Some(PROVIDER_KEY.0.into()),
        access_key_secret: Some(SecretString::from(PROVIDER_KEY.1)),
        ..fx.alibaba()
    });
    backend
        .mount(&input(objects, &[], &[], None), deadline(10))
        .await
        .unwrap();
    fx.emulator.expire_sts_credentials();
    let (found, _) = code(
        backend
            .mount(&input("- objectName: rot", &[], &[], None), deadline(10))
            .await,
    );
    assert_eq!(found, Code::Unauthenticated);
    let before = fx.emulator.counts("AssumeRole").succeeded;
    backend
        .mount(&input("- objectName: rot", &[], &[], None), deadline(10))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    assert_eq!(fx.emulator.counts("AssumeRole").succeeded, before + 1);

    // A 503 is retried; one that persists is UNAVAILABLE at the deadline.
    let keys = access_key(READER);
    fx.emulator.inject(
        FaultRule::on("GetSecretValue", Fault::Status { status: 503 })
            .named("hot")
            .times(1),
    );
    backend
        .mount(&input("- objectName: hot", &[], &keys, None), deadline(10))
        .await
        .unwrap_or_else(|error| panic!("{error}"));
    fx.emulator.inject(FaultRule::on(
        "GetSecretParameter",
        Fault::Status { status: 503 },
    ));
    let (found, message) = code(
        backend
            .mount(
                &input("- objectName: p\n  objectType: oos", &[], &keys, None),
                deadline(2),
            )
            .await,
    );
    assert!(
        matches!(found, Code::Unavailable | Code::DeadlineExceeded),
        "{found:?}: {message}"
    );
    assert!(message.contains("OOS secret parameter p"), "{message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_provider_rrsa_token_file_and_settings_are_checked() {
    let fx = Fixture::start().await;
    let backend = fx.backend(AlibabaSettings {
        role_arn: Some(fx.provider_role.clone()),
        oidc_provider_arn: Some(fx.oidc_provider.clone()),
        oidc_token_file: fx.dir.path().join("missing"),
        ..fx.alibaba()
    });
    let (found, message) = code(
        backend
            .mount(&input("- objectName: db", &[], &[], None), deadline(10))
            .await,
    );
    assert_eq!(found, Code::FailedPrecondition, "{message}");
    assert!(message.contains("token file"), "{message}");
    for bad in [
        AlibabaSettings {
            role_arn: Some("not-an-arn".into()),
            ..fx.alibaba()
        },
        AlibabaSettings {
            region: "Not A Region".into(),
            ..fx.alibaba()
        },
        AlibabaSettings {
            kms_endpoint_suffixes: vec!["com".into()],
            ..fx.alibaba()
        },
    ] {
        assert!(
            wiring::alibaba_backend(&fx.settings(), &bad, Arc::new(Metrics::default())).is_err(),
            "{bad:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_pods_role_comes_from_its_service_account_annotation() {
    let fx = Fixture::start().await;
    let kube = FakeKubeApi::start(
        fx.dir.path(),
        BTreeMap::from([
            (
                ("shop".to_owned(), "web".to_owned()),
                Some(fx.pod_role.clone()),
            ),
            (("shop".to_owned(), "plain".to_owned()), None),
        ]),
    )
    .await;
    let backend = fx.backend(AlibabaSettings {
        oidc_provider_arn: Some(fx.oidc_provider.clone()),
        kube_api_url: Some(kube.url.clone()),
        kube_token_file: kube.token_file.clone(),
        kube_ca_file: Some(kube.ca_file.clone()),
        ..fx.alibaba()
    });
    let class = [("usePodServiceAccountToken", "true")];
    let token = fx.pod_token(POD_SUBJECT);
    for _ in 0..3 {
        let mounted = backend
            .mount(
                &input("- objectName: db", &class, &[], Some(&token)),
                deadline(10),
            )
            .await
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(files(&mounted)["db"], DB.as_bytes());
    }
    assert_eq!(
        kube.reads.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "the annotation is reused"
    );
    // A ServiceAccount without the annotation: refused, naming it; no fallback.
    let mut plain = input(
        "- objectName: db",
        &class,
        &access_key(READER),
        Some(&token),
    );
    plain.pod.service_account = "plain".into();
    let (found, message) = code(backend.mount(&plain, deadline(10)).await);
    assert_eq!(found, Code::FailedPrecondition, "{message}");
    assert!(
        message.contains("shop/plain") && message.contains("ack.alibabacloud.com/role-arn"),
        "{message}"
    );
    // The provider's token is wrong: the API's refusal is named.
    std::fs::write(&kube.token_file, "another-token").expect("rewrite the token");
    let mut other = input("- objectName: db", &class, &[], Some(&token));
    other.pod.service_account = "other".into();
    let (found, message) = code(backend.mount(&other, deadline(10)).await);
    assert_eq!(found, Code::FailedPrecondition, "{message}");
    assert!(message.contains("HTTP 401"), "{message}");
    assert!(!message.contains("another-token"), "{message}");
}
