//! The Azure backend's vault access against the in-process Key Vault emulator, through the
//! same code a Mount runs: a SecretProviderClass's parameters (`AzureMountSpec::from_parameters`)
//! → `IdentityResolver::resolve` (each identity mode that can run here) → `ObjectCache` →
//! `VaultReader` (the official SDK clients, challenge resource verified).
//!
//! Vaults are named as classes name them, `<keyvaultName>.vault.emu.test`: a custom cloud whose
//! vault suffix resolves to the emulator (the transport's test-only DNS override) and whose
//! server certificate covers `*.vault.emu.test`; the emulator answers any Host, so `alpha` and
//! `beta` are two vaults with the same contents but distinct hosts, ids and cache entries. The
//! emulator's challenge names `https://vault.emu.test`, so the SDK's challenge check stays on.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use azure_access::client::{InsecureOverrides, ResolveOverride, TransportOptions};
use azure_access::cloud::Cloud;
use csi_provider::azure::cache::{CacheObserver, CacheSettings, Lookup, ObjectCache};
use csi_provider::azure::fetched::Fetched;
use csi_provider::azure::identity::{
    IdentityError, IdentityKind, IdentityResolver, IdentitySettings, ResolvedIdentity,
};
use csi_provider::azure::spec::{AzureMountSpec, ObjectKind};
use csi_provider::azure::vault::{VaultError, VaultReader, VaultSettings};
use csi_provider::request::{MountInput, NodePublishSecrets, PodInfo, ServiceAccountTokens};
use keyvault_emulator::{
    Emulator, Fault, FaultRule, FederatedCredential, IdentitySpec, KeySpec, ManagedKind, Operation,
    Options, Permission, RunningEmulator, SecretSpec, ThrottleLimits,
};
use secrecy::SecretString;
use tokio::time::Instant;

const SUFFIX: &str = "vault.emu.test";
const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
const ISSUER: &str = "https://oidc.cluster.example/";
const AUDIENCE: &str = "api://AzureADTokenExchange";
const SP: &str = "5a1c0000-0000-4000-8000-00000000a001";
const SP_SECRET: &str = "sp-secret-value";
const WI: &str = "5a1c0000-0000-4000-8000-00000000a002";
const OTHER_WI: &str = "5a1c0000-0000-4000-8000-00000000a003";
const NO_SECRETS: &str = "5a1c0000-0000-4000-8000-00000000a004";
const USER_MI: &str = "5a1c0000-0000-4000-8000-00000000a005";
const DB_VALUE: &str = "db-password-v2";

/// The emulator, a resolver and a cache pointed at it, and the objects the tests read.
struct Fixture {
    emulator: RunningEmulator,
    resolver: IdentityResolver,
    cache: ObjectCache,
    /// The first and second versions of secret `db`.
    db_versions: [String; 2],
}

fn transport(emulator: &RunningEmulator) -> TransportOptions {
    TransportOptions {
        ca_file: Some(emulator.ca_pem_path().to_owned()),
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_secs(5),
    }
}

fn insecure(emulator: &RunningEmulator) -> InsecureOverrides {
    InsecureOverrides {
        resolve: vec![ResolveOverride {
            domain_suffix: SUFFIX.to_owned(),
            addr: emulator.addr(),
        }],
        imds_endpoint: emulator.imds_url(),
    }
}

fn identity_settings(emulator: &RunningEmulator) -> IdentitySettings {
    IdentitySettings {
        transport: transport(emulator),
        insecure: insecure(emulator),
        ..IdentitySettings::new(Cloud::custom(&emulator.authority_url(), SUFFIX, ""))
    }
}

fn cache_for(emulator: &RunningEmulator, settings: CacheSettings) -> ObjectCache {
    let reader = VaultReader::new(VaultSettings {
        transport: transport(emulator),
        insecure: insecure(emulator),
        ..VaultSettings::default()
    })
    .expect("the vault reader");
    ObjectCache::new(reader, settings)
}

impl Fixture {
    async fn start() -> Self {
        Self::start_with(CacheSettings::default()).await
    }

    async fn start_with(cache: CacheSettings) -> Self {
        let emulator = Emulator::start(Options {
            extra_names: vec![format!("*.{SUFFIX}")],
            resource: Some(format!("https://{SUFFIX}")),
            tenant_id: Some(TENANT.to_owned()),
            ..Options::key_vault()
        })
        .await
        .expect("the emulator starts");
        emulator
            .register_client_secret(SP, SP_SECRET)
            .expect("the service principal");
        emulator
            .register_federated_identity(WI, federated("system:serviceaccount:apps:web"))
            .expect("the workload identity");
        emulator
            .register_federated_identity(OTHER_WI, federated("system:serviceaccount:apps:other"))
            .expect("another workload identity");
        emulator
            .register_identity(IdentitySpec {
                client_id: Some(NO_SECRETS.to_owned()),
                client_secret: Some("no-secrets-secret".to_owned()),
                permissions: Some(vec![Permission::Get]),
                ..IdentitySpec::default()
            })
            .expect("an identity that may read keys only");
        let first = emulator
            .set_secret("db", SecretSpec::value("db-password-v1"))
            .expect("db v1");
        let second = emulator
            .set_secret("db", SecretSpec::value(DB_VALUE))
            .expect("db v2");
        let resolver = IdentityResolver::new(identity_settings(&emulator)).expect("the resolver");
        let cache = cache_for(&emulator, cache);
        Self {
            emulator,
            resolver,
            cache,
            db_versions: [first.version, second.version],
        }
    }

    /// Proves the identity `parameters` and `input` name.
    async fn resolve(
        &self,
        parameters: &BTreeMap<String, String>,
        input: &MountInput,
    ) -> Result<ResolvedIdentity, IdentityError> {
        let spec = AzureMountSpec::from_parameters(parameters).expect("a valid class");
        self.resolver.resolve(&spec, input, deadline(10)).await
    }

    async fn read_db(
        &self,
        identity: &ResolvedIdentity,
        vault: &str,
    ) -> Result<Arc<Fetched>, VaultError> {
        let spec = AzureMountSpec::from_parameters(&service_principal(vault)).expect("a class");
        self.cache
            .get(
                identity,
                &spec.vault,
                ObjectKind::Secret,
                "db",
                None,
                deadline(10),
            )
            .await
    }

    fn db_reads(&self) -> u64 {
        self.emulator.secret_reads("db", Some(""))
    }

    fn tokens_issued(&self) -> u64 {
        self.emulator.counts(Operation::EntraToken).succeeded
    }
}

fn federated(subject: &str) -> FederatedCredential {
    FederatedCredential {
        issuer: ISSUER.to_owned(),
        subject: subject.to_owned(),
        audience: AUDIENCE.to_owned(),
    }
}

fn deadline(seconds: u64) -> Instant {
    Instant::now() + Duration::from_secs(seconds)
}

/// A class for vault `vault` reading `db`, with `extra` parameters.
fn class(vault: &str, extra: &[(&str, &str)]) -> BTreeMap<String, String> {
    let mut parameters: BTreeMap<String, String> = [
        ("keyvaultName", vault),
        ("tenantId", TENANT),
        (
            "objects",
            "array:\n  - |\n    objectName: db\n    objectType: secret\n",
        ),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect();
    for (key, value) in extra {
        parameters.insert((*key).to_owned(), (*value).to_owned());
    }
    parameters
}

fn service_principal(vault: &str) -> BTreeMap<String, String> {
    class(vault, &[])
}

fn input(secrets: &[(&str, &str)], tokens: &[(&str, &str)]) -> MountInput {
    MountInput {
        parameters: BTreeMap::new(),
        pod: PodInfo {
            name: "web-0".into(),
            namespace: "apps".into(),
            uid: "5f0c3c52-0000-4000-8000-000000000001".into(),
            service_account: "web".into(),
        },
        tokens: ServiceAccountTokens {
            by_audience: tokens
                .iter()
                .map(|(audience, token)| {
                    (
                        (*audience).to_owned(),
                        SecretString::from((*token).to_owned()),
                    )
                })
                .collect(),
        },
        secrets: NodePublishSecrets {
            by_key: secrets
                .iter()
                .map(|(key, value)| ((*key).to_owned(), SecretString::from((*value).to_owned())))
                .collect(),
        },
        default_mode: 0o644,
    }
}

fn sp_input(client: &str, secret: &str) -> MountInput {
    // Azure's provider matches the keys ignoring case; so must we.
    input(&[("ClientID", client), ("clientSecret", secret)], &[])
}

fn secret_value(fetched: &Fetched) -> &str {
    match fetched {
        Fetched::Secret(secret) => secret.value.as_str(),
        other => panic!("not a secret: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_service_principal_reads_a_secret_a_key_a_certificate_and_version_listings() {
    let fx = Fixture::start().await;
    let key = fx
        .emulator
        .create_key("signing", KeySpec::rsa(2048))
        .await
        .expect("a key");
    let certificate = fx
        .emulator
        .create_certificate(
            "tls",
            serde_json::json!({"x509_props": {"subject": "CN=tls"}, "issuer": {"name": "Self"}}),
        )
        .await
        .expect("a certificate");
    let identity = fx
        .resolve(&service_principal("alpha"), &sp_input(SP, SP_SECRET))
        .await
        .expect("the service principal is proven");
    assert_eq!(identity.key().kind(), IdentityKind::ServicePrincipal);
    assert_eq!(identity.key().client_id(), SP);
    let vault = AzureMountSpec::from_parameters(&service_principal("alpha"))
        .unwrap()
        .vault;
    let within = deadline(10);

    let latest = fx
        .cache
        .get(&identity, &vault, ObjectKind::Secret, "db", None, within)
        .await
        .expect("the latest secret");
    assert_eq!(secret_value(&latest), DB_VALUE);
    assert_eq!(
        latest.id(),
        format!("https://alpha.{SUFFIX}/secrets/db/{}", fx.db_versions[1])
    );
    assert!(!format!("{latest:?}").contains(DB_VALUE));
    let pinned = fx
        .cache
        .get(
            &identity,
            &vault,
            ObjectKind::Secret,
            "db",
            Some(&fx.db_versions[0]),
            within,
        )
        .await
        .expect("the first version");
    assert_eq!(secret_value(&pinned), "db-password-v1");

    let fetched_key = fx
        .cache
        .get(&identity, &vault, ObjectKind::Key, "signing", None, within)
        .await
        .expect("the key");
    match fetched_key.as_ref() {
        Fetched::Key(jwk) => {
            assert_eq!(jwk.kty, "RSA");
            assert_eq!(jwk.n.as_ref().map(Vec::len), Some(256));
            assert_eq!(jwk.e.as_deref(), Some(&[1u8, 0, 1][..]));
            assert!(jwk.id.ends_with(&format!("/keys/signing/{}", key.version)));
        }
        other => panic!("{other:?}"),
    }

    let fetched_cert = fx
        .cache
        .get(&identity, &vault, ObjectKind::Cert, "tls", None, within)
        .await
        .expect("the certificate");
    match fetched_cert.as_ref() {
        Fetched::Cert(cert) => {
            use base64::Engine;
            let expected = base64::engine::general_purpose::STANDARD
                .decode(certificate.cer.as_deref().expect("issued"))
                .unwrap();
            assert_eq!(cert.cer, expected);
            assert!(openssl::x509::X509::from_der(&cert.cer).is_ok());
            assert!(cert.id.contains("/certificates/tls/"));
        }
        other => panic!("{other:?}"),
    }

    let versions = fx
        .cache
        .versions(&identity, &vault, ObjectKind::Secret, "db", within)
        .await
        .expect("the versions");
    let mut listed: Vec<&str> = versions.iter().map(|item| item.version.as_str()).collect();
    listed.sort_unstable();
    let mut expected: Vec<&str> = fx.db_versions.iter().map(String::as_str).collect();
    expected.sort_unstable();
    assert_eq!(listed, expected);
    assert!(versions.iter().all(|item| item.enabled && item.created > 0));
    let key_versions = fx
        .cache
        .versions(&identity, &vault, ObjectKind::Key, "signing", within)
        .await
        .expect("the key's versions");
    assert_eq!(key_versions.len(), 1);
    let cert_versions = fx
        .cache
        .versions(&identity, &vault, ObjectKind::Cert, "tls", within)
        .await
        .expect("the certificate's versions");
    assert_eq!(cert_versions[0].version, certificate.version);

    // A missing object is a NotFound naming the vault, type, name and version.
    let missing = fx
        .cache
        .get(&identity, &vault, ObjectKind::Secret, "nope", None, within)
        .await
        .expect_err("no such secret");
    assert!(matches!(missing, VaultError::NotFound { .. }), "{missing}");
    let text = missing.to_string();
    assert!(
        text.contains("secret nope")
            && text.contains(&format!("alpha.{SUFFIX}"))
            && text.contains("404"),
        "{text}"
    );
    assert_eq!(missing.code(), tonic::Code::NotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn workload_identity_exchanges_the_pods_token_once_per_token() {
    let fx = Fixture::start().await;
    let token = fx
        .emulator
        .federated_token(WI, Duration::from_secs(600))
        .expect("the pod's token");
    let parameters = class("alpha", &[("clientID", WI)]);
    let pod = input(&[], &[(AUDIENCE, &token)]);
    let before = fx.tokens_issued();
    let identity = fx
        .resolve(&parameters, &pod)
        .await
        .expect("the workload identity is proven");
    assert_eq!(identity.key().kind(), IdentityKind::WorkloadIdentity);
    assert_eq!(
        secret_value(&fx.read_db(&identity, "alpha").await.unwrap()),
        DB_VALUE
    );
    // A rotation poll with the same token: no new Entra ID call, the same credential.
    let again = fx.resolve(&parameters, &pod).await.expect("proven again");
    assert_eq!(again.credential_id(), identity.credential_id());
    assert_eq!(fx.tokens_issued() - before, 1);
    // kubelet refreshed the pod's token: proven again with it, one more Entra ID call.
    let refreshed = fx
        .emulator
        .federated_token(WI, Duration::from_secs(900))
        .unwrap();
    let renewed = fx
        .resolve(&parameters, &input(&[], &[(AUDIENCE, &refreshed)]))
        .await
        .expect("proven with the new token");
    assert_ne!(renewed.credential_id(), identity.credential_id());
    assert_eq!(renewed.key(), identity.key());
    assert_eq!(fx.tokens_issued() - before, 2);

    let missing = fx
        .resolve(&parameters, &input(&[], &[("other-audience", &token)]))
        .await
        .expect_err("no token for the exchange audience");
    assert!(matches!(missing, IdentityError::ServiceAccountTokenMissing));
    assert!(
        missing
            .to_string()
            .contains("service account tokens not found"),
        "{missing}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn service_principal_errors_say_what_the_secret_lacks() {
    let fx = Fixture::start().await;
    let parameters = service_principal("alpha");
    let cases: [(MountInput, &str); 3] = [
        (input(&[], &[]), "nodePublishSecretRef secret is not set"),
        (
            input(&[("clientsecret", SP_SECRET)], &[]),
            "could not find clientid in secrets",
        ),
        (
            input(&[("clientid", SP)], &[]),
            "could not find clientsecret in secrets",
        ),
    ];
    for (pod, expected) in cases {
        let error = fx.resolve(&parameters, &pod).await.expect_err(expected);
        assert!(error.to_string().contains(expected), "{error}");
        assert!(!error.to_string().contains(SP_SECRET), "{error}");
    }
    let unsupported = fx
        .resolve(
            &class("alpha", &[("usePodIdentity", "true")]),
            &input(&[], &[]),
        )
        .await
        .expect_err("pod identity is not served");
    assert_eq!(unsupported.code(), tonic::Code::Unimplemented);
    assert!(
        unsupported.to_string().contains("use workload identity"),
        "{unsupported}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_nodes_managed_identity_comes_from_imds_and_can_be_turned_off() {
    let fx = Fixture::start().await;
    fx.emulator
        .register_managed_identity(ManagedKind::SystemAssigned, None, None)
        .expect("system-assigned");
    fx.emulator
        .register_managed_identity(ManagedKind::UserAssigned, Some(USER_MI), None)
        .expect("user-assigned");
    let system = fx
        .resolve(
            &class("alpha", &[("useVMManagedIdentity", "true")]),
            &input(&[], &[]),
        )
        .await
        .expect("the system-assigned identity");
    assert_eq!(system.key().kind(), IdentityKind::VmManagedIdentity);
    assert_eq!(
        secret_value(&fx.read_db(&system, "alpha").await.unwrap()),
        DB_VALUE
    );
    let user = fx
        .resolve(
            &class(
                "alpha",
                &[
                    ("useVMManagedIdentity", "true"),
                    ("userAssignedIdentityID", USER_MI),
                ],
            ),
            &input(&[], &[]),
        )
        .await
        .expect("the user-assigned identity");
    assert_eq!(user.key().client_id(), USER_MI);
    assert_ne!(user.key(), system.key());
    assert_eq!(
        secret_value(&fx.read_db(&user, "alpha").await.unwrap()),
        DB_VALUE
    );
    assert!(fx.emulator.counts(Operation::ImdsToken).succeeded >= 2);

    let unknown = fx
        .resolve(
            &class(
                "alpha",
                &[
                    ("useVMManagedIdentity", "true"),
                    (
                        "userAssignedIdentityID",
                        "5a1c0000-0000-4000-8000-0000000000ff",
                    ),
                ],
            ),
            &input(&[], &[]),
        )
        .await
        .expect_err("the node has no such identity");
    assert_eq!(unknown.code(), tonic::Code::Unauthenticated, "{unknown}");

    let closed = IdentityResolver::new(IdentitySettings {
        allow_vm_managed_identity: false,
        ..identity_settings(&fx.emulator)
    })
    .unwrap();
    let spec =
        AzureMountSpec::from_parameters(&class("alpha", &[("useVMManagedIdentity", "true")]))
            .unwrap();
    let refused = closed
        .resolve(&spec, &input(&[], &[]), deadline(5))
        .await
        .expect_err("turned off");
    assert!(
        refused.to_string().contains("useVMManagedIdentity"),
        "{refused}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_vaults_are_reached_by_name_and_cached_apart() {
    let fx = Fixture::start().await;
    let identity = fx
        .resolve(&service_principal("alpha"), &sp_input(SP, SP_SECRET))
        .await
        .unwrap();
    let alpha = fx.read_db(&identity, "alpha").await.expect("alpha");
    let beta = fx.read_db(&identity, "beta").await.expect("beta");
    assert!(
        alpha.id().starts_with(&format!("https://alpha.{SUFFIX}/")),
        "{}",
        alpha.id()
    );
    assert!(
        beta.id().starts_with(&format!("https://beta.{SUFFIX}/")),
        "{}",
        beta.id()
    );
    assert_eq!(fx.db_reads(), 2, "one read per vault");
    fx.read_db(&identity, "alpha").await.unwrap();
    fx.read_db(&identity, "beta").await.unwrap();
    assert_eq!(fx.db_reads(), 2, "then both from the cache");
    let stats = fx.cache.stats();
    assert_eq!((stats.misses, stats.hits, stats.vault_calls), (2, 2, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_hundred_concurrent_mounts_cost_one_token_and_one_get() {
    let fx = Arc::new(Fixture::start().await);
    let tokens_before = fx.tokens_issued();
    let mut mounts = tokio::task::JoinSet::new();
    for _ in 0..100 {
        let fx = Arc::clone(&fx);
        mounts.spawn(async move {
            let identity = fx
                .resolve(&service_principal("alpha"), &sp_input(SP, SP_SECRET))
                .await
                .expect("proven");
            let fetched = fx.read_db(&identity, "alpha").await.expect("read");
            secret_value(&fetched).to_owned()
        });
    }
    while let Some(value) = mounts.join_next().await {
        assert_eq!(value.expect("a mount"), DB_VALUE);
    }
    assert!(fx.db_reads() <= 2, "{} GETs", fx.db_reads());
    assert_eq!(fx.tokens_issued() - tokens_before, 1);
    let stats = fx.cache.stats();
    assert_eq!(
        stats.hits + stats.coalesced + stats.misses,
        100,
        "{stats:?}"
    );
    assert!(stats.vault_calls <= 2, "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_storm_is_waited_out_as_retry_after_asks() {
    let fx = Fixture::start().await;
    let names: Vec<String> = (0..12).map(|n| format!("storm-{n}")).collect();
    for name in &names {
        fx.emulator
            .set_secret(name, SecretSpec::value("v"))
            .expect("a secret");
    }
    let identity = fx
        .resolve(&service_principal("alpha"), &sp_input(SP, SP_SECRET))
        .await
        .unwrap();
    let vault = AzureMountSpec::from_parameters(&service_principal("alpha"))
        .unwrap()
        .vault;
    // Three reads per 1-second window: 12 objects need four windows.
    fx.emulator.set_throttle(Some(ThrottleLimits {
        secret_get: 3,
        window_seconds: 1,
        ..ThrottleLimits::azure()
    }));
    let started = Instant::now();
    let within = deadline(30);
    let reads = names.iter().map(|name| {
        fx.cache
            .get(&identity, &vault, ObjectKind::Secret, name, None, within)
    });
    for result in futures::future::join_all(reads).await {
        result.expect("every read succeeds within the deadline");
    }
    let took = started.elapsed();
    let requests: u64 = fx
        .emulator
        .reads()
        .iter()
        .filter(|read| read.name.starts_with("storm-"))
        .map(|read| read.requests)
        .sum();
    assert!(took >= Duration::from_secs(2), "{took:?}");
    // At most the per-vault concurrency (8) in each window: retries waited for Retry-After
    // instead of hammering the vault every backoff of 100 ms.
    let windows = took.as_secs() + 2;
    assert!(
        requests <= 12 + 8 * windows,
        "{requests} requests in {took:?}"
    );
    assert_eq!(fx.cache.stats().vault_failures, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_retry_after_past_the_deadline_fails_at_once_for_every_waiter() {
    let fx = Fixture::start().await;
    fx.emulator
        .set_secret("other", SecretSpec::value("o"))
        .expect("another secret");
    let identity = fx
        .resolve(&service_principal("alpha"), &sp_input(SP, SP_SECRET))
        .await
        .unwrap();
    let vault = AzureMountSpec::from_parameters(&service_principal("alpha"))
        .unwrap()
        .vault;
    fx.emulator.inject(
        FaultRule::on(
            Operation::GetSecret,
            Fault::Throttle {
                retry_after: Some(30),
            },
        )
        .named("db"),
    );
    let started = Instant::now();
    let within = deadline(5);
    let waiters = (0..10).map(|_| {
        fx.cache
            .get(&identity, &vault, ObjectKind::Secret, "db", None, within)
    });
    for result in futures::future::join_all(waiters).await {
        let error = result.expect_err("throttled past the deadline");
        assert!(
            matches!(&error, VaultError::Throttled { retry_after: Some(wait), .. } if *wait >= Duration::from_secs(29)),
            "{error:?}"
        );
        assert!(error.to_string().contains("retry after 30 s"), "{error}");
        assert_eq!(error.code(), tonic::Code::ResourceExhausted);
    }
    // At once: well before the 5 s deadline a wait would have run into (a bound on waiting,
    // not on speed).
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(fx.db_reads(), 1, "one request for ten waiters, not retried");
    // Until the Retry-After passes, another read of that vault is refused without a call.
    let other = fx
        .cache
        .get(
            &identity,
            &vault,
            ObjectKind::Secret,
            "other",
            None,
            deadline(5),
        )
        .await
        .expect_err("the vault asked to wait");
    assert!(matches!(other, VaultError::Throttled { .. }), "{other}");
    assert_eq!(fx.emulator.secret_reads("other", Some("")), 0);
    assert_eq!(fx.cache.stats().throttled_without_call, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_429_without_retry_after_is_retried_after_a_throttle_backoff() {
    let fx = Fixture::start().await;
    let identity = fx
        .resolve(&service_principal("alpha"), &sp_input(SP, SP_SECRET))
        .await
        .unwrap();
    // Key Vault's own 429s carry no Retry-After.
    fx.emulator.inject(
        FaultRule::on(Operation::GetSecret, Fault::Throttle { retry_after: None })
            .named("db")
            .times(2),
    );
    let started = Instant::now();
    let fetched = fx
        .read_db(&identity, "alpha")
        .await
        .expect("read after two 429s");
    assert_eq!(secret_value(&fetched), DB_VALUE);
    assert_eq!(fx.db_reads(), 3);
    // At least half a second after the first 429 and one after the second (jittered halves).
    assert!(
        started.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        started.elapsed()
    );
}

/// Entra ID throttling token requests fails the Mount as ResourceExhausted, as a throttled vault
/// does: UNAVAILABLE would make the driver retry at once, three times, into the throttling.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_throttled_token_request_is_resource_exhausted_not_unavailable() {
    let fx = Fixture::start().await;
    fx.emulator.inject(FaultRule::on(
        Operation::EntraToken,
        Fault::Throttle { retry_after: None },
    ));
    let error = fx
        .resolve(&service_principal("alpha"), &sp_input(SP, SP_SECRET))
        .await
        .expect_err("Entra ID is throttling");
    assert!(
        matches!(
            error,
            IdentityError::Unavailable {
                throttled: true,
                status: Some(429),
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(error.code(), tonic::Code::ResourceExhausted, "{error}");

    fx.emulator.clear_faults();
    let error = fx
        .resolve(&service_principal("alpha"), &sp_input(SP, SP_SECRET))
        .await
        .err();
    assert!(error.is_none(), "proven once Entra ID answers: {error:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn another_identity_is_never_served_a_cached_value() {
    let fx = Fixture::start().await;
    let owner = fx
        .resolve(&service_principal("alpha"), &sp_input(SP, SP_SECRET))
        .await
        .expect("A is proven");
    assert_eq!(
        secret_value(&fx.read_db(&owner, "alpha").await.unwrap()),
        DB_VALUE
    );
    assert_eq!(fx.db_reads(), 1);

    // B may not read secrets: its read reaches the vault and is refused.
    let reader = fx
        .resolve(
            &service_principal("alpha"),
            &sp_input(NO_SECRETS, "no-secrets-secret"),
        )
        .await
        .expect("B is proven");
    let refused = fx
        .read_db(&reader, "alpha")
        .await
        .expect_err("B has no secrets/get permission");
    assert!(matches!(refused, VaultError::Forbidden { .. }), "{refused}");
    assert_eq!(refused.code(), tonic::Code::PermissionDenied);
    assert_eq!(fx.db_reads(), 2, "B's read was not served from A's entry");

    // A's client id with a wrong secret: refused by Entra ID although A's credential is cached.
    let impostor = fx
        .resolve(&service_principal("alpha"), &sp_input(SP, "not-the-secret"))
        .await
        .expect_err("a wrong client secret");
    assert!(
        matches!(impostor, IdentityError::Refused { .. }),
        "{impostor}"
    );
    assert_eq!(impostor.code(), tonic::Code::Unauthenticated);
    assert!(
        !impostor.to_string().contains("not-the-secret"),
        "{impostor}"
    );

    // Workload identity: a pod federated with WI reads and caches; a token of another service
    // account presented for WI's client id is refused.
    let parameters = class("alpha", &[("clientID", WI)]);
    let token = fx
        .emulator
        .federated_token(WI, Duration::from_secs(600))
        .unwrap();
    let web = fx
        .resolve(&parameters, &input(&[], &[(AUDIENCE, &token)]))
        .await
        .expect("the web pod is proven");
    fx.read_db(&web, "alpha").await.expect("the web pod reads");
    let reads = fx.db_reads();
    let unfederated = fx
        .emulator
        .federated_token(OTHER_WI, Duration::from_secs(600))
        .unwrap();
    let error = fx
        .resolve(&parameters, &input(&[], &[(AUDIENCE, &unfederated)]))
        .await
        .expect_err("a token WI is not federated with");
    assert!(matches!(error, IdentityError::Refused { .. }), "{error}");
    assert!(!error.to_string().contains(&unfederated));
    assert_eq!(fx.db_reads(), reads);

    // A is still served from its entry.
    fx.read_db(&owner, "alpha").await.unwrap();
    assert_eq!(fx.db_reads(), reads);

    // Nothing formatted for logs shows a secret, a token or a value.
    let shown = format!(
        "{owner:?} {web:?} {:?} {impostor:?} {error:?} {refused:?} {:?}",
        fx.resolver, fx.cache
    );
    for secret in [SP_SECRET, "not-the-secret", &token, &unfederated, DB_VALUE] {
        assert!(!shown.contains(secret), "{shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_azure_stack_class_reads_its_cloud_from_the_allowed_directory() {
    let fx = Fixture::start().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("stack.json"),
        serde_json::json!({
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": format!("{}/", fx.emulator.authority_url()),
            "keyVaultEndpoint": format!("https://{SUFFIX}/"),
            "keyVaultDNSSuffix": SUFFIX,
            "resourceManagerEndpoint": "https://management.local.azurestack.external/",
        })
        .to_string(),
    )
    .unwrap();
    let public = IdentitySettings::default().default_cloud;
    let resolver = IdentityResolver::new(IdentitySettings {
        cloud_env_dir: Some(dir.path().to_owned()),
        ..IdentitySettings {
            default_cloud: public,
            ..identity_settings(&fx.emulator)
        }
    })
    .unwrap();
    let stack = |file: &str| {
        class(
            "alpha",
            &[("cloudName", "AzureStackCloud"), ("cloudEnvFileName", file)],
        )
    };
    let spec = AzureMountSpec::from_parameters(&stack("stack.json")).unwrap();
    let identity = resolver
        .resolve(&spec, &sp_input(SP, SP_SECRET), deadline(10))
        .await
        .expect("proven in the stack cloud");
    assert_eq!(identity.cloud().vault_suffix(), SUFFIX);
    assert_eq!(
        secret_value(&fx.read_db(&identity, "alpha").await.unwrap()),
        DB_VALUE
    );

    let outside = AzureMountSpec::from_parameters(&stack("../stack.json")).unwrap();
    let error = resolver
        .resolve(&outside, &sp_input(SP, SP_SECRET), deadline(10))
        .await
        .expect_err("outside the directory");
    assert!(error.to_string().contains("'..'"), "{error}");
}

/// Counts what the cache reports, as the metrics adapter would.
#[derive(Default)]
struct Recorder {
    events: std::sync::Mutex<Vec<String>>,
}

impl Recorder {
    fn push(&self, event: String) {
        self.events.lock().expect("not poisoned").push(event);
    }
}

impl CacheObserver for Recorder {
    fn lookup(&self, outcome: Lookup) {
        self.push(outcome.as_str().to_owned());
    }

    fn vault_call(&self, kind: ObjectKind, result: &'static str, _took: Duration) {
        self.push(format!("{}:{result}", kind.as_str()));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn latest_reads_and_refusals_expire_and_a_rotation_is_seen() {
    let fx = Fixture::start().await;
    let recorder = Arc::new(Recorder::default());
    let reader = VaultReader::new(VaultSettings {
        transport: transport(&fx.emulator),
        insecure: insecure(&fx.emulator),
        ..VaultSettings::default()
    })
    .unwrap();
    let cache = ObjectCache::with_observer(
        reader,
        CacheSettings {
            latest_ttl: Duration::from_secs(1),
            negative_ttl: Duration::from_secs(1),
            ..CacheSettings::default()
        },
        Arc::clone(&recorder) as Arc<dyn CacheObserver>,
    );
    let identity = fx
        .resolve(&service_principal("alpha"), &sp_input(SP, SP_SECRET))
        .await
        .unwrap();
    let vault = AzureMountSpec::from_parameters(&service_principal("alpha"))
        .unwrap()
        .vault;
    let get = |name: &'static str, version: Option<String>| {
        let cache = cache.clone();
        let identity = identity.clone();
        let vault = vault.clone();
        async move {
            cache
                .get(
                    &identity,
                    &vault,
                    ObjectKind::Secret,
                    name,
                    version.as_deref(),
                    deadline(10),
                )
                .await
        }
    };

    // A missing object: one read, then the refusal from the cache, then a read again.
    assert!(get("later", None).await.is_err());
    assert!(matches!(
        get("later", None).await,
        Err(VaultError::NotFound { .. })
    ));
    assert_eq!(fx.emulator.secret_reads("later", Some("")), 1);
    fx.emulator
        .set_secret("later", SecretSpec::value("now here"))
        .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        secret_value(&get("later", None).await.expect("created since")),
        "now here"
    );

    // The latest version, then a new one after the TTL; the version a latest read returned
    // stays cached as a pinned version.
    let first = get("db", None).await.unwrap();
    assert_eq!(first.version(), fx.db_versions[1]);
    let rotated = fx
        .emulator
        .set_secret("db", SecretSpec::value("db-password-v3"))
        .unwrap();
    assert_eq!(secret_value(&get("db", None).await.unwrap()), DB_VALUE);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let after = get("db", None).await.unwrap();
    assert_eq!(after.version(), rotated.version);
    assert_eq!(secret_value(&after), "db-password-v3");
    let pinned = get("db", Some(fx.db_versions[1].to_uppercase()))
        .await
        .unwrap();
    assert_eq!(secret_value(&pinned), DB_VALUE);
    assert_eq!(
        fx.emulator.secret_reads("db", Some(&fx.db_versions[1])),
        0,
        "served from the latest read's entry"
    );
    assert_eq!(fx.db_reads(), 2);

    let events = recorder.events.lock().unwrap().clone();
    assert_eq!(
        events,
        [
            "miss",
            "secret:not_found",
            "hit",
            "miss",
            "secret:ok",
            "miss",
            "secret:ok",
            "hit",
            "miss",
            "secret:ok",
            "hit",
        ]
    );
}
