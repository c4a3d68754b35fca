//! The CSI provider's backend conformance suite: one list of behaviours, written once, run
//! against every secret store the provider serves — Azure Key Vault on the in-process
//! `keyvault_emulator` and Alibaba Cloud KMS on the in-process `alibaba_emulator` — through the
//! entry point the gRPC service calls, [`Backend::mount`], on a backend built by the production
//! wiring ([`wiring::backend`]). It proves that a SecretProviderClass means the same thing to
//! both: the files a secret becomes (alias, pinned version, `jmesPath` fields), that a failed
//! Mount is all or nothing with one gRPC code per kind of failure (the one table in
//! `errors.rs`, through [`to_status`]), that a bad class costs no store call, that concurrent
//! Mounts are coalesced into one read per object, that one identity's cached value is never
//! served to another, and that throttling and deadlines are honoured.
//!
//! A store joins the suite by implementing [`Store`] (start it, describe a class to it, read
//! its counters, inject its faults) and one line in `conformance!`; every check then runs as
//! `<store>::<check>`. Where the providers genuinely differ (the id an object version is
//! reported under), the store supplies the expectation; the checks assert the shared contract.
//! Counters are the emulators' own, so "one read" means one request the store served.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::time::Duration;

use csi_provider::class::SpecError;
use csi_provider::errors::{MountError, to_status};
use csi_provider::files::Mounted;
use csi_provider::metrics::Metrics;
use csi_provider::request::{MountInput, NodePublishSecrets, PodInfo, ServiceAccountTokens};
use csi_provider::service::Backend;
use csi_provider::wiring::{self, AlibabaSettings, Provider, Settings};
use secrecy::SecretString;
use tokio::time::Instant;
use tonic::Code;

// ---------------------------------------------------------------------------------------------
// What a store brings to the suite.

/// Whose Mount it is: both identities are proven by the store; only the reader may read
/// secrets.
#[derive(Debug, Clone, Copy)]
enum Who {
    /// May read every secret.
    Reader,
    /// Proven, but refused every secret.
    Outsider,
}

/// A secret store under test, freshly started with both identities registered, and the levers
/// a test pulls on it.
trait Store: Sized {
    /// Starts the emulator and builds the backend with the production wiring.
    async fn start() -> Self;
    /// The backend under test.
    fn backend(&self) -> &Backend;
    /// Stores `values` as successive versions of text secret `name` (the last is the latest);
    /// returns their version ids, oldest first.
    fn put(&self, name: &str, values: &[&str]) -> Vec<String>;
    /// A Mount by `who` of a class naming `objects`.
    fn mounting(&self, who: Who, objects: &[Obj]) -> MountInput;
    /// The id this provider reports the version of object `name`, written at `file`, under.
    fn version_id(name: &str, file: &str) -> String;
    /// Secret reads the store has served (authenticated requests, refused ones included).
    fn reads(&self) -> u64;
    /// Every request the store received: identity, token and read calls.
    fn calls(&self) -> u64;
    /// The next `times` secret reads are throttled, asking the caller to retry after `hint`.
    fn throttle_next(&self, times: u32, hint: Duration);
    /// Every secret read from now on is answered `by` later.
    fn slow_reads(&self, by: Duration);
}

/// One object of a class, as a SecretProviderClass names it.
#[derive(Debug, Clone, Default)]
struct Obj {
    name: &'static str,
    alias: Option<&'static str>,
    version: Option<String>,
    /// `jmesPath` entries: (path, objectAlias).
    fields: Vec<(&'static str, &'static str)>,
}

impl Obj {
    fn named(name: &'static str) -> Self {
        Self {
            name,
            ..Self::default()
        }
    }

    fn alias(self, alias: &'static str) -> Self {
        Self {
            alias: Some(alias),
            ..self
        }
    }

    fn version(self, version: &str) -> Self {
        Self {
            version: Some(version.to_owned()),
            ..self
        }
    }

    fn field(mut self, path: &'static str, alias: &'static str) -> Self {
        self.fields.push((path, alias));
        self
    }

    /// The file the object itself is written at.
    fn file(&self) -> &'static str {
        self.alias.unwrap_or(self.name)
    }

    /// Its fields as YAML lines, `prefix` first and the rest indented by `indent`.
    fn yaml(&self, prefix: &str, indent: &str, extra: &str) -> String {
        let mut lines = vec![format!("objectName: {}", self.name)];
        lines.extend(extra.lines().map(str::to_owned));
        lines.extend(self.alias.map(|alias| format!("objectAlias: {alias}")));
        lines.extend(
            self.version
                .as_ref()
                .map(|version| format!("objectVersion: \"{version}\"")),
        );
        if !self.fields.is_empty() {
            lines.push("jmesPath:".to_owned());
        }
        for (path, alias) in &self.fields {
            lines.push(format!("  - path: {path}"));
            lines.push(format!("    objectAlias: {alias}"));
        }
        let mut text = String::new();
        for (index, line) in lines.iter().enumerate() {
            let lead = if index == 0 { prefix } else { indent };
            writeln!(text, "{lead}{line}").expect("writing to a String");
        }
        text
    }
}

/// A Mount request from pod apps/web-0 with `parameters` and the nodePublishSecretRef `secrets`.
fn mount_input(parameters: BTreeMap<String, String>, secrets: &[(&str, &str)]) -> MountInput {
    MountInput {
        parameters,
        pod: PodInfo {
            name: "web-0".into(),
            namespace: "apps".into(),
            uid: "5f0c3c52-0000-4000-8000-0000000000c0".into(),
            service_account: "web".into(),
        },
        tokens: ServiceAccountTokens::default(),
        secrets: NodePublishSecrets {
            by_key: secrets
                .iter()
                .map(|(key, value)| ((*key).to_owned(), SecretString::from(*value)))
                .collect(),
        },
        default_mode: 0o644,
    }
}

fn parameters(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(key, value)| ((*key).to_owned(), (*value).to_owned()))
        .collect()
}

fn within(budget: Duration) -> Instant {
    Instant::now() + budget
}

// ---------------------------------------------------------------------------------------------
// Azure Key Vault on the keyvault emulator.

mod key_vault {
    use keyvault_emulator::{
        Emulator, Fault, FaultRule, IdentitySpec, ObjectKind, Operation, Options, Permission,
        RunningEmulator, SecretSpec,
    };

    use super::*;

    /// Vaults are `<keyvaultName>.vault.emu.test`, resolved to the emulator, in a custom cloud
    /// whose Entra ID is the emulator's.
    const SUFFIX: &str = "vault.emu.test";
    const CLOUD_FILE: &str = "emu-cloud.json";
    const READER: (&str, &str) = ("5a1c0000-0000-4000-8000-00000000c001", "reader-secret");
    const OUTSIDER: (&str, &str) = ("5a1c0000-0000-4000-8000-00000000c002", "outsider-secret");

    pub struct AzureStore {
        emulator: RunningEmulator,
        backend: Backend,
        /// Holds the cloud file the class names.
        _clouds: tempfile::TempDir,
    }

    impl Store for AzureStore {
        async fn start() -> Self {
            let emulator = Emulator::start(Options {
                extra_names: vec![format!("*.{SUFFIX}")],
                resource: Some(format!("https://{SUFFIX}")),
                ..Options::key_vault()
            })
            .await
            .expect("the Key Vault emulator starts");
            emulator
                .register_client_secret(READER.0, READER.1)
                .expect("the reader");
            emulator
                .register_identity(IdentitySpec {
                    client_id: Some(OUTSIDER.0.to_owned()),
                    client_secret: Some(OUTSIDER.1.to_owned()),
                    // Keys only: secrets/get is refused.
                    permissions: Some(vec![Permission::Get]),
                    ..IdentitySpec::default()
                })
                .expect("the outsider");
            let clouds = tempfile::tempdir().expect("a temporary directory");
            let cloud = serde_json::json!({
                "name": "AzureStackCloud",
                "activeDirectoryEndpoint": format!("{}/", emulator.authority_url()),
                "keyVaultEndpoint": format!("https://{SUFFIX}/"),
                "keyVaultDNSSuffix": SUFFIX,
                "resourceManagerEndpoint": "https://management.emu.test/",
            });
            std::fs::write(clouds.path().join(CLOUD_FILE), cloud.to_string())
                .expect("write the cloud file");
            let settings = Settings {
                cloud_env_dir: clouds.path().to_owned(),
                ca_file: Some(emulator.ca_pem_path().to_owned()),
                insecure_resolve: vec![format!("{SUFFIX}={}", emulator.addr())],
                ..Settings::default()
            };
            let backend = wiring::backend(
                Provider::Azure,
                &settings,
                &AlibabaSettings::default(),
                Arc::new(Metrics::default()),
            )
            .expect("the Azure backend");
            Self {
                emulator,
                backend,
                _clouds: clouds,
            }
        }

        fn backend(&self) -> &Backend {
            &self.backend
        }

        fn put(&self, name: &str, values: &[&str]) -> Vec<String> {
            values
                .iter()
                .map(|value| {
                    self.emulator
                        .set_secret(name, SecretSpec::value(value))
                        .expect("the emulator takes the secret")
                        .version
                })
                .collect()
        }

        fn mounting(&self, who: Who, objects: &[Obj]) -> MountInput {
            let mut text = String::from("array:\n");
            for object in objects {
                text.push_str("  - |\n");
                text.push_str(&object.yaml("    ", "    ", "objectType: secret"));
            }
            let (client, secret) = match who {
                Who::Reader => READER,
                Who::Outsider => OUTSIDER,
            };
            mount_input(
                parameters(&[
                    ("keyvaultName", "kv-conformance"),
                    ("tenantId", self.emulator.tenant_id()),
                    ("cloudName", "AzureStackCloud"),
                    ("cloudEnvFileName", CLOUD_FILE),
                    ("objects", &text),
                ]),
                &[("clientid", client), ("clientsecret", secret)],
            )
        }

        fn version_id(name: &str, _file: &str) -> String {
            format!("secret/{name}")
        }

        fn reads(&self) -> u64 {
            let reads = self.emulator.reads();
            let secrets = reads.iter().filter(|read| read.kind == ObjectKind::Secret);
            secrets.map(|read| read.requests).sum()
        }

        fn calls(&self) -> u64 {
            let counts = self.emulator.all_counts();
            counts.values().map(|counts| counts.requests).sum()
        }

        fn throttle_next(&self, times: u32, hint: Duration) {
            assert_eq!(hint.subsec_nanos(), 0, "Retry-After is whole seconds");
            let retry_after = Some(hint.as_secs());
            let rule = FaultRule::on(Operation::GetSecret, Fault::Throttle { retry_after });
            self.emulator.inject(rule.times(times));
        }

        fn slow_reads(&self, by: Duration) {
            let millis = u64::try_from(by.as_millis()).expect("a short delay");
            let rule = FaultRule::on(Operation::GetSecret, Fault::Latency { millis });
            self.emulator.inject(rule);
        }
    }

    /// Azure only (Alibaba's backend has the same rule, tested in
    /// `alibaba_access::expired_sts_credentials_and_outages_have_their_codes`): when Key Vault refuses
    /// a proven credential's token (revoked, or expired early), the credential is dropped and
    /// the next Mount proves the identity again, instead of presenting the refused token until
    /// its expiry.
    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn a_token_key_vault_refuses_is_proven_again_by_the_next_mount() {
        let store = AzureStore::start().await;
        store.put("db", &["one"]);
        store.put("other", &["two"]);
        let budget = Duration::from_secs(20);
        mount(&store, Who::Reader, &[Obj::named("db")], budget).await;
        let tokens = || store.emulator.counts(Operation::EntraToken).succeeded;
        assert_eq!(tokens(), 1);

        store.emulator.revoke_tokens();
        let (status, _) = refused(&store, Who::Reader, &[Obj::named("other")], budget).await;
        assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");

        let mounted = mount(&store, Who::Reader, &[Obj::named("other")], budget).await;
        assert_eq!(files(&mounted), expected(&[("other", "two")]));
        assert_eq!(tokens(), 2, "proven again with Entra ID");
    }
}

// ---------------------------------------------------------------------------------------------
// Alibaba Cloud KMS on the Alibaba emulator.

mod alibaba_kms {
    use alibaba_emulator::{
        AccessKeySpec, Emulator, Fault, FaultRule, Grants, Options, RunningEmulator, SecretSpec,
        SecretVersionSpec,
    };

    use super::*;

    /// AccessKeys from the nodePublishSecretRef: the reader's grants are the default (every
    /// secret), the outsider's none.
    const READER: (&str, &str) = ("LTAIconfreader01", "reader-secret-value");
    const OUTSIDER: (&str, &str) = ("LTAIconfoutside1", "outsider-secret-value");
    const READ: &str = "GetSecretValue";

    pub struct AlibabaStore {
        emulator: RunningEmulator,
        backend: Backend,
    }

    impl Store for AlibabaStore {
        async fn start() -> Self {
            let emulator = Emulator::start(Options::default())
                .await
                .expect("the Alibaba emulator starts");
            emulator
                .add_access_key(AccessKeySpec::new(READER.0, READER.1))
                .expect("the reader");
            emulator
                .add_access_key(
                    AccessKeySpec::new(OUTSIDER.0, OUTSIDER.1).with_grants(Grants::none()),
                )
                .expect("the outsider");
            let settings = Settings {
                ca_file: Some(emulator.ca_pem_path().to_owned()),
                insecure_resolve: vec![format!("aliyuncs.com={}", emulator.addr())],
                ..Settings::default()
            };
            // No identity but the Mount's own AccessKey: nothing to fall back to.
            let alibaba = AlibabaSettings {
                ecs_ram_role: false,
                ..AlibabaSettings::default()
            };
            let backend = wiring::backend(
                Provider::Alibabacloud,
                &settings,
                &alibaba,
                Arc::new(Metrics::default()),
            )
            .expect("the Alibaba backend");
            Self { emulator, backend }
        }

        fn backend(&self) -> &Backend {
            &self.backend
        }

        fn put(&self, name: &str, values: &[&str]) -> Vec<String> {
            let (first, rest) = values.split_first().expect("at least one value");
            let mut info = self.emulator.put_secret(name, SecretSpec::text(first));
            for value in rest {
                info = self
                    .emulator
                    .add_secret_version(name, SecretVersionSpec::text(value));
            }
            let info = info.expect("the emulator takes the secret");
            info.versions.into_iter().map(|v| v.version_id).collect()
        }

        fn mounting(&self, who: Who, objects: &[Obj]) -> MountInput {
            let text: String = objects
                .iter()
                .map(|object| object.yaml("- ", "  ", ""))
                .collect();
            let (id, secret) = match who {
                Who::Reader => READER,
                Who::Outsider => OUTSIDER,
            };
            mount_input(
                parameters(&[("objects", &text)]),
                &[("access_key", id), ("access_secret", secret)],
            )
        }

        fn version_id(_name: &str, file: &str) -> String {
            file.to_owned()
        }

        fn reads(&self) -> u64 {
            let reads = self.emulator.all_reads();
            let secrets = reads.iter().filter(|read| read.action == READ);
            secrets.map(|read| read.requests).sum()
        }

        fn calls(&self) -> u64 {
            let counts = self.emulator.all_counts();
            counts.values().map(|counts| counts.requests).sum()
        }

        fn throttle_next(&self, times: u32, hint: Duration) {
            let retry_after_millis = Some(u64::try_from(hint.as_millis()).expect("a short hint"));
            let rule = FaultRule::on(READ, Fault::Throttle { retry_after_millis });
            self.emulator.inject(rule.times(times));
        }

        fn slow_reads(&self, by: Duration) {
            let millis = u64::try_from(by.as_millis()).expect("a short delay");
            self.emulator
                .inject(FaultRule::on(READ, Fault::Latency { millis }));
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The checks: the contract every store meets.

/// Every check, run against every store as `<store>::<check>`.
macro_rules! conformance {
    ($($store:ident: $adapter:ty),+ $(,)?) => {$(
        mod $store {
            conformance!(@checks $adapter;
                a_text_secret_mounts_as_one_file_at_its_alias_with_its_value_and_version,
                a_pinned_object_version_mounts_that_version_not_the_latest,
                jmes_path_fields_of_a_json_secret_become_their_own_files,
                a_missing_object_fails_the_whole_mount_as_not_found_naming_it,
                an_invalid_class_is_invalid_argument_naming_the_field_and_calls_no_store,
                fifty_concurrent_mounts_cost_one_read_per_object,
                another_identity_is_refused_never_served_a_cached_value,
                a_throttled_read_is_retried_after_its_hint_within_the_deadline,
                a_retry_hint_past_the_deadline_fails_at_once_as_resource_exhausted,
                a_mount_past_its_deadline_fails_as_deadline_exceeded,
            );
        }
    )+};
    (@checks $adapter:ty; $($check:ident),+ $(,)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
        async fn $check() {
            super::$check::<$adapter>().await;
        }
    )+};
}

conformance!(azure: super::key_vault::AzureStore, alibaba: super::alibaba_kms::AlibabaStore);

/// The files a Mount returned, by path.
fn files(mounted: &Mounted) -> BTreeMap<String, Vec<u8>> {
    let files = mounted.files.iter();
    files
        .map(|file| (file.path.clone(), file.contents.to_vec()))
        .collect()
}

/// The object versions a Mount returned, as (id, version).
fn versions(mounted: &Mounted) -> Vec<(String, String)> {
    let versions = mounted.versions.iter();
    versions
        .map(|v| (v.id.clone(), v.version.clone()))
        .collect()
}

fn expected(pairs: &[(&str, &str)]) -> BTreeMap<String, Vec<u8>> {
    let pairs = pairs.iter();
    pairs
        .map(|(path, value)| ((*path).to_owned(), value.as_bytes().to_vec()))
        .collect()
}

/// Mounts `objects` as `who`, by `budget`, expecting success.
async fn mount<S: Store>(store: &S, who: Who, objects: &[Obj], budget: Duration) -> Mounted {
    let input = store.mounting(who, objects);
    let result = store.backend().mount(&input, within(budget)).await;
    result.unwrap_or_else(|error| panic!("the Mount failed: {error}"))
}

/// Mounts `objects` as `who`, by `budget`, expecting failure: the status the driver is
/// answered with (all or nothing: a failed Mount holds no file), and the error.
async fn refused<S: Store>(
    store: &S,
    who: Who,
    objects: &[Obj],
    budget: Duration,
) -> (tonic::Status, MountError) {
    let input = store.mounting(who, objects);
    match store.backend().mount(&input, within(budget)).await {
        Ok(mounted) => panic!("mounted {:?}", files(&mounted).keys()),
        Err(error) => (to_status(&error), error),
    }
}

async fn a_text_secret_mounts_as_one_file_at_its_alias_with_its_value_and_version<S: Store>() {
    let store = S::start().await;
    let db = store.put("db", &["db-password"]);
    let api = store.put("api", &["api-token"]);
    let objects = [Obj::named("db"), Obj::named("api").alias("api-token.txt")];
    let mounted = mount(&store, Who::Reader, &objects, Duration::from_secs(10)).await;
    assert_eq!(
        files(&mounted),
        expected(&[("db", "db-password"), ("api-token.txt", "api-token")])
    );
    assert!(mounted.files.iter().all(|file| file.mode == 0o644));
    assert_eq!(
        versions(&mounted),
        [
            (S::version_id("db", objects[0].file()), db[0].clone()),
            (S::version_id("api", objects[1].file()), api[0].clone()),
        ]
    );
    assert_eq!(store.reads(), 2);
}

async fn a_pinned_object_version_mounts_that_version_not_the_latest<S: Store>() {
    let store = S::start().await;
    let ids = store.put("rotated", &["first-value", "second-value"]);
    assert_ne!(ids[0], ids[1]);
    let objects = [
        Obj::named("rotated").alias("pinned").version(&ids[0]),
        Obj::named("rotated").alias("latest"),
    ];
    let mounted = mount(&store, Who::Reader, &objects, Duration::from_secs(10)).await;
    assert_eq!(
        files(&mounted),
        expected(&[("pinned", "first-value"), ("latest", "second-value")])
    );
    let reported: Vec<String> = versions(&mounted).into_iter().map(|(_, v)| v).collect();
    assert_eq!(reported, ids);
}

async fn jmes_path_fields_of_a_json_secret_become_their_own_files<S: Store>() {
    let store = S::start().await;
    let json = r#"{"username":"app","password":"pw-1","port":5432,"db":{"host":"db.internal"}}"#;
    store.put("config", &[json]);
    let object = Obj::named("config")
        .field("username", "user")
        .field("db.host", "host")
        .field("port", "port");
    let mounted = mount(&store, Who::Reader, &[object], Duration::from_secs(10)).await;
    assert_eq!(
        files(&mounted),
        expected(&[
            ("config", json),
            ("user", "app"),
            ("host", "db.internal"),
            ("port", "5432"),
        ])
    );
    assert_eq!(store.reads(), 1, "the fields come from the one read");
}

async fn a_missing_object_fails_the_whole_mount_as_not_found_naming_it<S: Store>() {
    let store = S::start().await;
    store.put("present", &["here"]);
    let objects = [Obj::named("present"), Obj::named("absent")];
    let (status, _) = refused(&store, Who::Reader, &objects, Duration::from_secs(10)).await;
    assert_eq!(status.code(), Code::NotFound, "{}", status.message());
    assert!(
        status.message().contains("objectName:absent"),
        "{}",
        status.message()
    );
    assert!(!status.message().contains("here"), "{}", status.message());
}

async fn an_invalid_class_is_invalid_argument_naming_the_field_and_calls_no_store<S: Store>() {
    let store = S::start().await;
    store.put("a", &["a-value"]);
    store.put("b", &["b-value"]);
    let calls = store.calls();
    let cases = [
        (
            vec![
                Obj::named("a").alias("shared"),
                Obj::named("b").alias("shared"),
            ],
            "objectAlias",
            "\"shared\"",
        ),
        (
            vec![Obj::named("a"), Obj::named("a")],
            "objectName",
            "\"a\"",
        ),
    ];
    for (objects, field, file) in cases {
        let (status, error) = refused(&store, Who::Reader, &objects, Duration::from_secs(10)).await;
        let message = status.message();
        assert_eq!(status.code(), Code::InvalidArgument, "{message}");
        assert!(
            matches!(&error, MountError::Spec(SpecError::Object { index: 1, field: named, .. }) if *named == field),
            "{error:?}"
        );
        assert!(
            message.contains(file) && message.contains("also written by object 0"),
            "{message}"
        );
    }
    assert_eq!(
        store.calls(),
        calls,
        "no identity or store call for a bad class"
    );
}

async fn fifty_concurrent_mounts_cost_one_read_per_object<S: Store>() {
    let store = S::start().await;
    store.put("one", &["one-value"]);
    store.put("two", &["two-value"]);
    // Answered slowly, so that the Mounts overlap.
    store.slow_reads(Duration::from_millis(300));
    let objects = [Obj::named("one"), Obj::named("two")];
    let inputs: Vec<MountInput> = (0..50)
        .map(|_| store.mounting(Who::Reader, &objects))
        .collect();
    let deadline = within(Duration::from_secs(20));
    let mounts = inputs
        .iter()
        .map(|input| store.backend().mount(input, deadline));
    for result in futures::future::join_all(mounts).await {
        let mounted = result.unwrap_or_else(|error| panic!("a Mount failed: {error}"));
        assert_eq!(
            files(&mounted),
            expected(&[("one", "one-value"), ("two", "two-value")])
        );
    }
    assert_eq!(store.reads(), 2, "one read per object for fifty Mounts");
}

async fn another_identity_is_refused_never_served_a_cached_value<S: Store>() {
    let store = S::start().await;
    store.put("db", &["owners-value"]);
    let objects = [Obj::named("db")];
    let mounted = mount(&store, Who::Reader, &objects, Duration::from_secs(10)).await;
    assert_eq!(files(&mounted), expected(&[("db", "owners-value")]));
    assert_eq!(store.reads(), 1);

    let (status, _) = refused(&store, Who::Outsider, &objects, Duration::from_secs(10)).await;
    let message = status.message();
    assert_eq!(status.code(), Code::PermissionDenied, "{message}");
    assert!(message.contains("objectName:db"), "{message}");
    assert!(!message.contains("owners-value"), "{message}");
    assert_eq!(store.reads(), 2, "the store refused it, not the cache");

    // The refusal did not disturb the reader's entry: served from the cache.
    let mounted = mount(&store, Who::Reader, &objects, Duration::from_secs(10)).await;
    assert_eq!(files(&mounted), expected(&[("db", "owners-value")]));
    assert_eq!(store.reads(), 2);
}

async fn a_throttled_read_is_retried_after_its_hint_within_the_deadline<S: Store>() {
    let store = S::start().await;
    store.put("hot", &["hot-value"]);
    let hint = Duration::from_secs(1);
    store.throttle_next(1, hint);
    let started = Instant::now();
    let objects = [Obj::named("hot")];
    let mounted = mount(&store, Who::Reader, &objects, Duration::from_secs(10)).await;
    let took = started.elapsed();
    assert_eq!(files(&mounted), expected(&[("hot", "hot-value")]));
    assert_eq!(store.reads(), 2, "throttled once, then read");
    // It waited the hint out; the Mount's own deadline bounds the rest.
    assert!(took >= hint, "waited only {took:?}");
}

async fn a_retry_hint_past_the_deadline_fails_at_once_as_resource_exhausted<S: Store>() {
    let store = S::start().await;
    store.put("cold", &["cold-value"]);
    store.throttle_next(1, Duration::from_secs(30));
    let started = Instant::now();
    let objects = [Obj::named("cold")];
    let (status, _) = refused(&store, Who::Reader, &objects, Duration::from_secs(5)).await;
    let took = started.elapsed();
    let message = status.message();
    assert_eq!(status.code(), Code::ResourceExhausted, "{message}");
    assert!(message.contains("objectName:cold"), "{message}");
    // Not after waiting for the 30 s hint (a bound on waiting, not on speed).
    assert!(took < Duration::from_secs(15), "failed after {took:?}");
    assert_eq!(store.reads(), 1, "not retried into the throttling");
}

async fn a_mount_past_its_deadline_fails_as_deadline_exceeded<S: Store>() {
    let store = S::start().await;
    store.put("warm", &["warm-value"]);
    store.put("slow", &["slow-value"]);
    // The identity is proven and the vault known: only the read is left to be late.
    mount(
        &store,
        Who::Reader,
        &[Obj::named("warm")],
        Duration::from_secs(10),
    )
    .await;
    store.slow_reads(Duration::from_secs(5));
    let budget = Duration::from_secs(1);
    let started = Instant::now();
    let objects = [Obj::named("slow")];
    let (status, _) = refused(&store, Who::Reader, &objects, budget).await;
    let took = started.elapsed();
    let message = status.message();
    assert_eq!(status.code(), Code::DeadlineExceeded, "{message}");
    assert!(message.contains("objectName:slow"), "{message}");
    // At its deadline, not before, and without waiting for the 5 s read.
    assert!(
        took >= budget - Duration::from_millis(100) && took < Duration::from_secs(4),
        "failed after {took:?}"
    );
}
