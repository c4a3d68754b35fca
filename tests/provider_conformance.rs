//! The key-provider conformance suite: one list of checks, written once, run against every
//! provider — the local key ring, PKCS#11 on SoftHSM with an AES key and with an RSA key, and
//! Azure Key Vault (RSA) and Managed HSM (oct-HSM) on the keyvault-emulator.
//!
//! A provider joins the suite by implementing [`Backend`] (how to make a fresh one) and
//! [`Fixture`] (what an operator does to it: restart, rotate, revoke…) and adding one line to
//! [`backends`]; every check in [`checks!`] then runs against it as `<backend>::<check>`.
//!
//! The binary has its own harness (libtest-mimic) because SoftHSM reads SOFTHSM2_CONF when the
//! module loads and a test cannot safely set an environment variable: it first runs itself again
//! with SOFTHSM2_CONF pointing at a configuration in a temporary directory, with its own token
//! directory, so no test touches the machine's tokens. The PKCS#11 checks fail — they do not
//! skip — when SoftHSM is not installed.

mod azure_support;
mod util;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::{Command, ExitCode, Output};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as CryptokiError, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::object::Attribute;
use cryptoki::session::UserType;
use cryptoki::slot::Slot;
use cryptoki::types::AuthPin;
use kube_kms::crypto::SecretKey;
use kube_kms::envelope::EnvelopeError;
use kube_kms::envelope::format::{
    KEY_VERSION_ANNOTATION, MAX_WRAPPED_KEK_LEN, WRAPPED_KEK_ANNOTATION,
};
use kube_kms::envelope::kek::RotationPolicy;
use kube_kms::proto::v2::{DecryptRequest, EncryptRequest, StatusRequest};
use kube_kms::provider::azure::AzureKeyVaultProvider;
use kube_kms::provider::local::LocalKeyRing;
use kube_kms::provider::pkcs11::{
    NewKeyType, PinSource, Pkcs11Config, Pkcs11Provider, TokenSelector, create_key,
};
use kube_kms::provider::{KeyProvider, KeyVersion, ProviderError, ProviderHealth};
use kube_kms::server::errors::to_status;
use libtest_mimic::{Arguments, Trial};
use tonic::Code;
use util::{BIN, ServedBinary};

const SOFTHSM_MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
/// Set (to the sandbox directory) in the inner run.
const SANDBOX: &str = "KUBE_KMS_CONFORMANCE_SANDBOX";
const SO_PIN: &str = "so-pin-1234";
const USER_PIN: &str = "user-pin-5678";

// ---------------------------------------------------------------------------------------------
// What a provider brings to the suite.

/// A provider under test and the operator's levers on it.
#[async_trait]
trait Fixture: Send + Sync {
    /// The provider under test, opened on its configuration.
    fn provider(&self) -> Arc<dyn KeyProvider>;
    /// A second instance on the same configuration, as after a restart or on another replica.
    async fn reopen(&self) -> Arc<dyn KeyProvider>;
    /// Rotates the way an operator does; the provider returned serves the new key and keeps
    /// the old one for decryption.
    async fn rotate(&mut self) -> Arc<dyn KeyProvider>;
    /// An independent provider of the same kind whose current version has the same name as
    /// this one's, over other key material.
    async fn stranger(&self) -> Arc<dyn KeyProvider>;
    /// Versions that exist in the key store but lie outside this provider's configuration,
    /// each with a KEK that a provider configured for it wrapped.
    async fn outside_versions(&self) -> Vec<(String, Vec<u8>)>;
    /// Operations that reached the key store so far, if the provider counts them.
    fn key_store_operations(&self) -> Option<u64>;
    /// Takes the current key away in the key store (deletes or disables it); false if the
    /// store has no such notion.
    async fn revoke(&self) -> bool;
}

/// A kind of provider: makes a fresh, independent fixture for each check.
#[async_trait]
trait Backend: Send + Sync {
    fn name(&self) -> &'static str;
    async fn open(&self) -> Box<dyn Fixture>;
}

/// Every provider the suite runs against. Adding one is one line here.
fn backends() -> Vec<Arc<dyn Backend>> {
    vec![
        Arc::new(LocalBackend),
        Arc::new(SoftHsmBackend {
            name: "pkcs11-aes",
            key_type: NewKeyType::Aes256,
        }),
        Arc::new(SoftHsmBackend {
            name: "pkcs11-rsa",
            key_type: NewKeyType::Rsa(2048),
        }),
        Arc::new(AzureBackend {
            name: "azure-keyvault-rsa",
            managed_hsm: false,
        }),
        Arc::new(AzureBackend {
            name: "azure-managed-hsm",
            managed_hsm: true,
        }),
    ]
}

// ---------------------------------------------------------------------------------------------
// The checks: the specification every provider meets.

type CheckFuture = Pin<Box<dyn Future<Output = ()> + Send>>;
type Check = fn(Box<dyn Fixture>) -> CheckFuture;

macro_rules! checks {
    ($($check:ident),* $(,)?) => {
        /// Every check, by name.
        fn checks() -> Vec<(&'static str, Check)> {
            vec![$((
                stringify!($check),
                (|fixture: Box<dyn Fixture>| -> CheckFuture { Box::pin($check(fixture)) }) as Check,
            )),*]
        }
    };
}

checks![
    wraps_and_unwraps_a_kek,
    rejects_a_kek_wrapped_by_another_key,
    rejects_tampered_wrapped_keks_cleanly,
    resolves_versions_only_within_its_configuration,
    keeps_its_key_id_across_refreshes_and_restarts,
    changes_key_id_on_rotation_and_still_unwraps_old_keks,
    serves_64_concurrent_callers,
    reports_health,
    maps_its_errors_to_grpc_codes,
    round_trips_through_the_plugin_socket,
];

fn new_kek() -> SecretKey {
    SecretKey::generate().expect("the OS RNG works")
}

fn assert_sha256_hex(key: &KeyVersion) {
    let id = key.key_id();
    assert!(
        id.len() == 64 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "key_id {id:?} is not lowercase hex SHA-256"
    );
}

#[track_caller]
fn assert_unwrap_failed(result: Result<SecretKey, ProviderError>, version: &str, what: &str) {
    match result {
        Err(ProviderError::UnwrapFailed { version: named }) => assert_eq!(named, version, "{what}"),
        Err(other) => panic!("{what}: expected UnwrapFailed, got {other:?}"),
        Ok(_) => panic!("{what}: unwrapped"),
    }
}

#[track_caller]
fn assert_unknown_version(result: Result<SecretKey, ProviderError>, version: &str) {
    match result {
        Err(ProviderError::UnknownKeyVersion { version: named }) => assert_eq!(named, version),
        Err(other) => panic!("version {version:?}: expected UnknownKeyVersion, got {other:?}"),
        Ok(_) => panic!("version {version:?} unwrapped"),
    }
}

fn code_of(error: ProviderError) -> Code {
    to_status(&EnvelopeError::Provider(error)).code()
}

async fn wraps_and_unwraps_a_kek(fixture: Box<dyn Fixture>) {
    let provider = fixture.provider();
    let key = provider.refresh().await.expect("refresh");
    assert_eq!(provider.current_key().await, Some(key.clone()));
    let kek = new_kek();
    let wrapped = provider.wrap(&key, &kek).await.expect("wrap");
    assert!(
        !wrapped.is_empty() && wrapped.len() <= MAX_WRAPPED_KEK_LEN,
        "{} bytes",
        wrapped.len()
    );
    assert!(
        !wrapped
            .windows(8)
            .any(|w| kek.expose().windows(8).any(|k| k == w)),
        "the wrapped KEK shows KEK bytes"
    );
    let unwrapped = provider
        .unwrap(key.version(), &wrapped)
        .await
        .expect("unwrap");
    assert_eq!(unwrapped.expose(), kek.expose());

    // No per-process state: another instance (a restart, another replica) unwraps it too.
    let reopened = fixture.reopen().await;
    let unwrapped = reopened.unwrap(key.version(), &wrapped).await;
    assert_eq!(
        unwrapped.expect("unwrap after reopen").expose(),
        kek.expose()
    );
}

async fn rejects_a_kek_wrapped_by_another_key(fixture: Box<dyn Fixture>) {
    let provider = fixture.provider();
    let key = provider.refresh().await.expect("refresh");
    let stranger = fixture.stranger().await;
    let theirs = stranger.refresh().await.expect("stranger refreshes");
    assert_eq!(theirs.version(), key.version(), "same version name");
    assert_ne!(
        theirs.key_id(),
        key.key_id(),
        "other key material, other key_id"
    );

    let kek = new_kek();
    let wrapped = stranger.wrap(&theirs, &kek).await.expect("stranger wraps");
    let result = provider.unwrap(key.version(), &wrapped).await;
    assert_unwrap_failed(result, key.version(), "a KEK wrapped by another key");

    // Nor does it wrap under a key version it did not hand out.
    let refused = provider.wrap(&theirs, &kek).await;
    assert!(
        matches!(refused, Err(ProviderError::UnknownKeyVersion { .. })),
        "{refused:?}"
    );
}

async fn rejects_tampered_wrapped_keks_cleanly(fixture: Box<dyn Fixture>) {
    let provider = fixture.provider();
    let key = provider.refresh().await.expect("refresh");
    let wrapped = provider.wrap(&key, &new_kek()).await.expect("wrap");
    let version = key.version();

    let mut mutants: Vec<(String, Vec<u8>)> = Vec::new();
    for index in 0..wrapped.len() {
        let mut flipped = wrapped.clone();
        flipped[index] ^= 0x01;
        mutants.push((format!("bit 0 of byte {index} flipped"), flipped));
    }
    for len in [0, 1, wrapped.len() / 2, wrapped.len() - 1] {
        mutants.push((format!("truncated to {len}"), wrapped[..len].to_vec()));
    }
    let mut extended = wrapped.clone();
    extended.push(0);
    mutants.push(("one byte appended".into(), extended));
    mutants.push(("all zeros".into(), vec![0; wrapped.len()]));
    mutants.push(("maximum size".into(), vec![0xff; MAX_WRAPPED_KEK_LEN]));
    for (what, mutant) in mutants {
        assert_unwrap_failed(provider.unwrap(version, &mutant).await, version, &what);
    }
    // And the genuine one still unwraps: nothing above poisoned the provider.
    provider.unwrap(version, &wrapped).await.expect("unwrap");
}

async fn resolves_versions_only_within_its_configuration(fixture: Box<dyn Fixture>) {
    let provider = fixture.provider();
    let key = provider.refresh().await.expect("refresh");
    let wrapped = provider.wrap(&key, &new_kek()).await.expect("wrap");
    let outside = fixture.outside_versions().await;
    let before = fixture.key_store_operations();

    let current = key.version();
    let mut versions: Vec<String> = [
        "", "0", "01", "-1", " ", "*", "..", "../1", "%2e%2e", "\0", "v1", "latest",
    ]
    .into_iter()
    .map(String::from)
    .collect();
    versions.extend([
        format!("{current} "),
        format!(" {current}"),
        format!("{current}0"),
        format!("{current}/../{current}"),
        current.to_uppercase(),
        "x".repeat(256),
        "x".repeat(4096),
    ]);
    versions.retain(|version| version != current);
    for version in &versions {
        assert_unknown_version(provider.unwrap(version, &wrapped).await, version);
    }
    for (version, wrapped) in &outside {
        assert_unknown_version(provider.unwrap(version, wrapped).await, version);
    }
    assert_eq!(
        fixture.key_store_operations(),
        before,
        "a version outside the configuration must not reach the key store"
    );
}

async fn keeps_its_key_id_across_refreshes_and_restarts(fixture: Box<dyn Fixture>) {
    let provider = fixture.provider();
    let first = provider.refresh().await.expect("refresh");
    assert_sha256_hex(&first);
    for _ in 0..3 {
        assert_eq!(provider.refresh().await.expect("refresh"), first);
    }
    let reopened = fixture.reopen().await;
    assert_eq!(reopened.refresh().await.expect("refresh"), first);
    assert_eq!(reopened.current_key().await, Some(first));
}

async fn changes_key_id_on_rotation_and_still_unwraps_old_keks(mut fixture: Box<dyn Fixture>) {
    let provider = fixture.provider();
    let old = provider.refresh().await.expect("refresh");
    let old_kek = new_kek();
    let old_wrapped = provider.wrap(&old, &old_kek).await.expect("wrap");

    let rotated = fixture.rotate().await;
    let new = rotated.refresh().await.expect("refresh after rotation");
    assert_sha256_hex(&new);
    assert_ne!(new.key_id(), old.key_id());
    assert_ne!(new.version(), old.version());
    assert_eq!(rotated.current_key().await, Some(new.clone()));

    let unwrapped = rotated.unwrap(old.version(), &old_wrapped).await;
    assert_eq!(unwrapped.expect("old KEK").expose(), old_kek.expose());

    let new_kek = new_kek();
    let new_wrapped = rotated.wrap(&new, &new_kek).await.expect("wrap");
    let unwrapped = rotated.unwrap(new.version(), &new_wrapped).await;
    assert_eq!(unwrapped.expect("new KEK").expose(), new_kek.expose());
    let crossed = rotated.unwrap(old.version(), &new_wrapped).await;
    assert_unwrap_failed(crossed, old.version(), "new KEK under the old version");

    // A key_id never flips back.
    assert_eq!(rotated.refresh().await.expect("refresh"), new);
    let restarted = fixture.reopen().await;
    assert_eq!(restarted.refresh().await.expect("refresh"), new);
}

async fn serves_64_concurrent_callers(fixture: Box<dyn Fixture>) {
    let provider = fixture.provider();
    let key = provider.refresh().await.expect("refresh");
    let shared_kek = new_kek();
    let shared = provider.wrap(&key, &shared_kek).await.expect("wrap");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..64 {
        let provider = Arc::clone(&provider);
        let key = key.clone();
        let shared = shared.clone();
        tasks.spawn(async move {
            let kek = new_kek();
            let wrapped = provider.wrap(&key, &kek).await.expect("concurrent wrap");
            let unwrapped = provider.unwrap(key.version(), &wrapped).await;
            assert_eq!(unwrapped.expect("concurrent unwrap").expose(), kek.expose());
            let unwrapped = provider.unwrap(key.version(), &shared).await;
            unwrapped
                .expect("concurrent unwrap of a shared KEK")
                .expose()
                .to_vec()
        });
    }
    let mut finished = 0;
    while let Some(result) = tasks.join_next().await {
        assert_eq!(result.expect("task"), shared_kek.expose());
        finished += 1;
    }
    assert_eq!(finished, 64);
}

async fn reports_health(fixture: Box<dyn Fixture>) {
    let provider = fixture.provider();
    let key = provider.refresh().await.expect("refresh");
    assert_eq!(provider.health().await, ProviderHealth::Ok);

    // Bad input is the caller's problem, not the provider's health.
    let wrapped = provider.wrap(&key, &new_kek()).await.expect("wrap");
    let _ = provider.unwrap(key.version(), &wrapped[1..]).await;
    let _ = provider.unwrap("not-configured", &wrapped).await;
    assert_eq!(provider.health().await, ProviderHealth::Ok);

    if fixture.revoke().await {
        let error = provider.refresh().await.expect_err("the key is gone");
        assert!(matches!(error, ProviderError::Revoked { .. }), "{error:?}");
        let health = provider.health().await;
        assert!(
            matches!(health, ProviderHealth::Revoked { .. }),
            "{health:?}"
        );
        assert_eq!(code_of(error), Code::FailedPrecondition);
    }
}

async fn maps_its_errors_to_grpc_codes(fixture: Box<dyn Fixture>) {
    let provider = fixture.provider();
    let key = provider.refresh().await.expect("refresh");
    let wrapped = provider.wrap(&key, &new_kek()).await.expect("wrap");
    let mut tampered = wrapped.clone();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 0x80;

    let unknown = provider.unwrap("not-configured", &wrapped).await;
    let status = to_status(&EnvelopeError::Provider(unknown.expect_err("unknown")));
    assert_eq!(
        status.code(),
        Code::FailedPrecondition,
        "{}",
        status.message()
    );
    assert!(
        status.message().contains("not-configured"),
        "{}",
        status.message()
    );

    let failed = provider.unwrap(key.version(), &tampered).await;
    let status = to_status(&EnvelopeError::Provider(failed.expect_err("tampered")));
    assert_eq!(status.code(), Code::InvalidArgument, "{}", status.message());
    assert!(
        !status.message().contains(&hex::encode(&tampered[..8])),
        "the status echoes wrapped-key bytes: {}",
        status.message()
    );
}

async fn round_trips_through_the_plugin_socket(fixture: Box<dyn Fixture>) {
    let provider = fixture.provider();
    let key = provider.refresh().await.expect("refresh");
    let dir = util::short_tempdir();
    let unused = dir.path().join("unused-key-dir");
    let plugin = util::TestPlugin::start_on(dir, unused, provider, RotationPolicy::DEFAULT).await;
    let mut client = plugin.v2().await;

    let status = client.status(StatusRequest {}).await.expect("status");
    let status = status.into_inner();
    assert_eq!(
        (status.healthz.as_str(), status.key_id.as_str()),
        ("ok", key.key_id())
    );

    let encrypted = client
        .encrypt(EncryptRequest {
            plaintext: b"a DEK seed".to_vec(),
            uid: "conformance".into(),
        })
        .await
        .expect("encrypt")
        .into_inner();
    assert_eq!(&*encrypted.key_id, key.key_id());
    assert_eq!(
        encrypted
            .annotations
            .get(KEY_VERSION_ANNOTATION)
            .map(Vec::as_slice),
        Some(key.version().as_bytes())
    );
    let request = DecryptRequest {
        ciphertext: encrypted.ciphertext.clone(),
        uid: "conformance".into(),
        key_id: encrypted.key_id.to_string(),
        annotations: (*encrypted.annotations).clone(),
    };
    let decrypted = client.decrypt(request.clone()).await.expect("decrypt");
    assert_eq!(decrypted.into_inner().plaintext, b"a DEK seed");

    // Another replica, with an empty cache, unwraps through its own provider.
    let replica_dir = util::short_tempdir();
    let unused = replica_dir.path().join("unused-key-dir");
    let replica = util::TestPlugin::start_on(
        replica_dir,
        unused,
        fixture.reopen().await,
        RotationPolicy::DEFAULT,
    )
    .await;
    let decrypted = replica.v2().await.decrypt(request.clone()).await;
    assert_eq!(
        decrypted.expect("replica decrypts").into_inner().plaintext,
        b"a DEK seed"
    );

    let mut tampered = request.clone();
    let wrapped = tampered
        .annotations
        .get_mut(WRAPPED_KEK_ANNOTATION)
        .expect("wrapped KEK annotation");
    let middle = wrapped.len() / 2;
    wrapped[middle] ^= 0x01;
    let refused = client.decrypt(tampered).await.expect_err("tampered KEK");
    assert_eq!(
        refused.code(),
        Code::InvalidArgument,
        "{}",
        refused.message()
    );

    let mut unknown = request;
    unknown
        .annotations
        .insert(KEY_VERSION_ANNOTATION.into(), b"not-configured".to_vec());
    let refused = client.decrypt(unknown).await.expect_err("unknown version");
    assert_eq!(
        refused.code(),
        Code::FailedPrecondition,
        "{}",
        refused.message()
    );

    replica.stop().await;
    plugin.stop().await;
}

// ---------------------------------------------------------------------------------------------
// The local key ring.

struct LocalBackend;

struct LocalFixture {
    dir: tempfile::TempDir,
    provider: Arc<LocalKeyRing>,
}

impl LocalFixture {
    fn key_dir(&self) -> PathBuf {
        self.dir.path().join("keys")
    }
}

#[async_trait]
impl Backend for LocalBackend {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn open(&self) -> Box<dyn Fixture> {
        let dir = tempfile::tempdir().expect("temporary directory");
        let ring = LocalKeyRing::open_or_create(&dir.path().join("keys")).expect("key ring");
        Box::new(LocalFixture {
            dir,
            provider: Arc::new(ring),
        })
    }
}

#[async_trait]
impl Fixture for LocalFixture {
    fn provider(&self) -> Arc<dyn KeyProvider> {
        Arc::clone(&self.provider) as Arc<dyn KeyProvider>
    }

    async fn reopen(&self) -> Arc<dyn KeyProvider> {
        Arc::new(LocalKeyRing::open_or_create(&self.key_dir()).expect("key ring reopens"))
    }

    async fn rotate(&mut self) -> Arc<dyn KeyProvider> {
        LocalKeyRing::rotate(&self.key_dir()).expect("kube-kms keys rotate");
        self.provider()
    }

    async fn stranger(&self) -> Arc<dyn KeyProvider> {
        let dir = self.dir.path().join("stranger");
        Arc::new(LocalKeyRing::open_or_create(&dir).expect("another key ring"))
    }

    async fn outside_versions(&self) -> Vec<(String, Vec<u8>)> {
        // The configuration is the whole key ring directory: nothing on disk lies outside it.
        Vec::new()
    }

    fn key_store_operations(&self) -> Option<u64> {
        None
    }

    async fn revoke(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------------------------------------
// PKCS#11 on SoftHSM.

struct SoftHsmBackend {
    name: &'static str,
    key_type: NewKeyType,
}

struct SoftHsmFixture {
    name: &'static str,
    key_type: NewKeyType,
    pin_dir: tempfile::TempDir,
    token: String,
    config: Pkcs11Config,
    provider: Arc<Pkcs11Provider>,
}

/// The SoftHSM module; fails the check with the fix when it is not installed.
fn softhsm_module() -> PathBuf {
    let module = PathBuf::from(SOFTHSM_MODULE);
    assert!(
        module.exists(),
        "SoftHSM is not installed ({SOFTHSM_MODULE} is missing): install Debian's softhsm2 \
         package (apt-get install softhsm2) to run the PKCS#11 checks"
    );
    module
}

/// Serialises token creation (SoftHSM has one free slot at a time) and numbers the tokens.
static TOKENS: Mutex<u32> = Mutex::new(0);

fn initialised(module: &Path) -> Pkcs11 {
    let pkcs11 = Pkcs11::new(module).expect("the PKCS#11 module loads");
    match pkcs11.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => pkcs11,
        Err(error) => panic!("C_Initialize: {error}"),
    }
}

fn slot_of(pkcs11: &Pkcs11, token: &str) -> Slot {
    pkcs11
        .get_slots_with_token()
        .expect("slots")
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| info.label() == token)
        })
        .expect("the token is present")
}

/// Initialises a new token in the sandbox's token directory, as `softhsm2-util --init-token
/// --free` does, and sets its user PIN. Returns its label.
fn new_token(prefix: &str) -> String {
    let pkcs11 = initialised(&softhsm_module());
    let mut count = TOKENS
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    *count += 1;
    let label = format!("{prefix}-{count}");
    let free = pkcs11
        .get_all_slots()
        .expect("slots")
        .into_iter()
        .find(|slot| {
            pkcs11
                .get_token_info(*slot)
                .is_ok_and(|info| !info.token_initialized())
        })
        .expect("SoftHSM offers a free slot");
    pkcs11
        .init_token(free, &AuthPin::from(SO_PIN), &label)
        .expect("C_InitToken");
    let session = pkcs11
        .open_rw_session(slot_of(&pkcs11, &label))
        .expect("session");
    session
        .login(UserType::So, Some(&AuthPin::from(SO_PIN)))
        .expect("SO login");
    session
        .init_pin(&AuthPin::from(USER_PIN))
        .expect("C_InitPIN");
    label
}

fn write_pin(dir: &Path, pin: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("user-pin");
    std::fs::write(&path, format!("{pin}\n")).expect("PIN file");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    path
}

fn pkcs11_config(module: PathBuf, token: &str, pin: &Path, key_label: &str) -> Pkcs11Config {
    Pkcs11Config {
        module,
        token: TokenSelector::Label(token.into()),
        pin: PinSource::File(pin.into()),
        key_label: key_label.into(),
        decrypt_only_key_labels: Vec::new(),
    }
}

async fn open_pkcs11(config: &Pkcs11Config) -> Arc<Pkcs11Provider> {
    Arc::new(
        Pkcs11Provider::open(config.clone())
            .await
            .expect("the PKCS#11 provider opens"),
    )
}

/// A token with one key of `key_type` labelled `key_label`, and a provider on it.
async fn token_with_key(
    prefix: &str,
    key_type: NewKeyType,
    key_label: &str,
) -> (tempfile::TempDir, String, Pkcs11Config, Arc<Pkcs11Provider>) {
    let token = new_token(prefix);
    let pin_dir = tempfile::tempdir().expect("temporary directory");
    let pin = write_pin(pin_dir.path(), USER_PIN);
    let config = pkcs11_config(softhsm_module(), &token, &pin, key_label);
    create_key(&config, key_type)
        .await
        .expect("kube-kms keys create");
    let provider = open_pkcs11(&config).await;
    (pin_dir, token, config, provider)
}

/// Destroys every object labelled `label` on `token`, as an operator deleting a key would.
fn delete_key(token: &str, label: &str) {
    let pkcs11 = initialised(&softhsm_module());
    let session = pkcs11
        .open_rw_session(slot_of(&pkcs11, token))
        .expect("session");
    match session.login(UserType::User, Some(&AuthPin::from(USER_PIN))) {
        Ok(()) | Err(CryptokiError::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => {}
        Err(error) => panic!("login: {error}"),
    }
    let objects = session
        .find_objects(&[Attribute::Label(label.as_bytes().to_vec())])
        .expect("find");
    assert!(!objects.is_empty(), "no key labelled {label:?} to delete");
    for object in objects {
        session.destroy_object(object).expect("destroy");
    }
}

#[async_trait]
impl Backend for SoftHsmBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn open(&self) -> Box<dyn Fixture> {
        let (pin_dir, token, config, provider) =
            token_with_key(self.name, self.key_type, "kek-1").await;
        Box::new(SoftHsmFixture {
            name: self.name,
            key_type: self.key_type,
            pin_dir,
            token,
            config,
            provider,
        })
    }
}

#[async_trait]
impl Fixture for SoftHsmFixture {
    fn provider(&self) -> Arc<dyn KeyProvider> {
        Arc::clone(&self.provider) as Arc<dyn KeyProvider>
    }

    async fn reopen(&self) -> Arc<dyn KeyProvider> {
        open_pkcs11(&self.config).await
    }

    async fn rotate(&mut self) -> Arc<dyn KeyProvider> {
        // The operator's rotation: a key under a new label, the old label decrypt-only.
        let mut config = self.config.clone();
        let next = 2 + config.decrypt_only_key_labels.len();
        config.decrypt_only_key_labels.insert(
            0,
            std::mem::replace(&mut config.key_label, format!("kek-{next}")),
        );
        create_key(&config, self.key_type)
            .await
            .expect("kube-kms keys create");
        self.provider = open_pkcs11(&config).await;
        self.config = config;
        self.provider()
    }

    async fn stranger(&self) -> Arc<dyn KeyProvider> {
        let (_pin_dir, _token, _config, provider) =
            token_with_key(self.name, self.key_type, &self.config.key_label).await;
        provider
    }

    async fn outside_versions(&self) -> Vec<(String, Vec<u8>)> {
        // A key on the same token, under a label this provider is not configured with.
        let mut stray = self.config.clone();
        stray.key_label = "stray-key".into();
        stray.decrypt_only_key_labels.clear();
        create_key(&stray, self.key_type)
            .await
            .expect("kube-kms keys create");
        let provider = open_pkcs11(&stray).await;
        let key = provider.refresh().await.expect("refresh");
        let wrapped = provider.wrap(&key, &new_kek()).await.expect("wrap");
        let _ = &self.pin_dir;
        vec![("stray-key".into(), wrapped)]
    }

    fn key_store_operations(&self) -> Option<u64> {
        Some(self.provider.counters().operations)
    }

    async fn revoke(&self) -> bool {
        delete_key(&self.token, &self.config.key_label);
        true
    }
}

// ---------------------------------------------------------------------------------------------
// PKCS#11 behaviour beyond the common contract.

async fn pkcs11_a_refused_pin_is_never_presented_twice() {
    // A token of its own: login state is per process and token, so no other provider may be
    // logged in to it when the wrong PIN is presented.
    let token = new_token("pin");
    let pin_dir = tempfile::tempdir().expect("temporary directory");
    let pin = write_pin(pin_dir.path(), "not-the-pin");
    let config = pkcs11_config(softhsm_module(), &token, &pin, "kek-1");
    let provider = Pkcs11Provider::new(config.clone());

    for attempt in 0..3 {
        let error = provider.refresh().await.expect_err("wrong PIN");
        let message = error.to_string();
        assert!(
            matches!(error, ProviderError::Misconfigured { .. }),
            "{error:?}"
        );
        assert!(message.contains("refused the PIN"), "{message}");
        assert!(
            !message.contains("not-the-pin"),
            "the PIN leaked: {message}"
        );
        assert_eq!(code_of(error), Code::FailedPrecondition);
        assert_eq!(
            provider.counters().logins,
            1,
            "attempt {attempt} logged in again"
        );
    }
    assert!(matches!(
        provider.health().await,
        ProviderHealth::Degraded { .. }
    ));

    // The operator corrects the PIN file; the next refresh logs in, with no restart.
    write_pin(pin_dir.path(), USER_PIN);
    create_key(&config, NewKeyType::Aes256)
        .await
        .expect("kube-kms keys create");
    provider
        .refresh()
        .await
        .expect("logs in with the corrected PIN");
    assert_eq!(provider.counters().logins, 2);
    assert_eq!(provider.health().await, ProviderHealth::Ok);
}

async fn pkcs11_a_token_reset_is_survived_by_reconnecting() {
    // A private copy of the module is a separate SoftHSM instance, so finalising it resets only
    // this check's sessions, exactly as a token reset does.
    let sandbox = PathBuf::from(std::env::var_os(SANDBOX).expect("inside the sandbox"));
    let copy = sandbox.join("libsofthsm2-reset.so");
    std::fs::copy(softhsm_module(), &copy).expect("copy the module");

    let token = new_token("reset");
    let pin_dir = tempfile::tempdir().expect("temporary directory");
    let pin = write_pin(pin_dir.path(), USER_PIN);
    let config = pkcs11_config(copy.clone(), &token, &pin, "kek-1");
    create_key(&config, NewKeyType::Aes256)
        .await
        .expect("kube-kms keys create");
    let provider = open_pkcs11(&config).await;
    let key = provider.refresh().await.expect("refresh");
    let kek = new_kek();
    let wrapped = provider.wrap(&key, &kek).await.expect("wrap");
    let before = provider.counters();

    Pkcs11::new(&copy)
        .expect("the module copy loads")
        .finalize()
        .expect("C_Finalize");

    let unwrapped = provider.unwrap(key.version(), &wrapped).await;
    assert_eq!(
        unwrapped.expect("unwrap after the reset").expose(),
        kek.expose()
    );
    let after = provider.counters();
    assert_eq!(after.reconnects, before.reconnects + 1);
    assert_eq!(after.logins, before.logins + 1);
    assert_eq!(
        provider.refresh().await.expect("refresh"),
        key,
        "same key_id after a reset"
    );
    assert_eq!(provider.health().await, ProviderHealth::Ok);
}

async fn pkcs11_wrapped_keks_name_their_mechanism() {
    // AES with CKA_WRAP: CKM_AES_KEY_WRAP_PAD (0x01).
    let (_dir, _token, _config, provider) =
        token_with_key("mech-kwp", NewKeyType::Aes256, "kek-1").await;
    // A refresh may log in and look keys up: the guard gives it 20 s, not one call's 2.5 s.
    assert_eq!(
        provider.refresh_budget(),
        Some(std::time::Duration::from_secs(20))
    );
    let key = provider.refresh().await.expect("refresh");
    assert_eq!(
        provider.wrap(&key, &new_kek()).await.expect("wrap")[0],
        0x01
    );

    // RSA: CKM_RSA_PKCS_OAEP, SHA-256 (0x03) where the token takes it, else SHA-1 (0x04).
    let (_dir, _token, _config, provider) =
        token_with_key("mech-rsa", NewKeyType::Rsa(2048), "kek-1").await;
    let key = provider.refresh().await.expect("refresh");
    let wrapped = provider.wrap(&key, &new_kek()).await.expect("wrap");
    assert!(matches!(wrapped[0], 0x03 | 0x04), "{:#04x}", wrapped[0]);
    assert_eq!(wrapped.len(), 1 + 256);

    // An AES key that may encrypt but not wrap: AES-GCM (0x02).
    let token = new_token("mech-gcm");
    let pkcs11 = initialised(&softhsm_module());
    let session = pkcs11
        .open_rw_session(slot_of(&pkcs11, &token))
        .expect("session");
    session
        .login(UserType::User, Some(&AuthPin::from(USER_PIN)))
        .expect("login");
    session
        .generate_key(
            &Mechanism::AesKeyGen,
            &[
                Attribute::Token(true),
                Attribute::Label(b"kek-gcm".to_vec()),
                Attribute::ValueLen(32.into()),
                Attribute::Sensitive(true),
                Attribute::Extractable(false),
                Attribute::Wrap(false),
                Attribute::Unwrap(false),
                Attribute::Encrypt(true),
                Attribute::Decrypt(true),
            ],
        )
        .expect("C_GenerateKey");
    drop(session);
    let pin_dir = tempfile::tempdir().expect("temporary directory");
    let pin = write_pin(pin_dir.path(), USER_PIN);
    let provider = open_pkcs11(&pkcs11_config(softhsm_module(), &token, &pin, "kek-gcm")).await;
    let key = provider.refresh().await.expect("refresh");
    let kek = new_kek();
    let wrapped = provider.wrap(&key, &kek).await.expect("wrap");
    assert_eq!((wrapped[0], wrapped.len()), (0x02, 1 + 12 + 32 + 16));
    let unwrapped = provider.unwrap("kek-gcm", &wrapped).await;
    assert_eq!(unwrapped.expect("unwrap").expose(), kek.expose());
}

async fn pkcs11_debug_output_never_shows_the_pin() {
    let (_dir, _token, config, provider) =
        token_with_key("debug", NewKeyType::Aes256, "kek-1").await;
    for shown in [format!("{provider:?}"), format!("{config:?}")] {
        assert!(!shown.contains(USER_PIN), "{shown}");
        assert!(shown.contains("kek-1"), "{shown}");
    }
}

// ---------------------------------------------------------------------------------------------
// The kube-kms binary on SoftHSM, as an operator uses it.

fn kube_kms(root: &Path, token: &str, pin: &str) -> Command {
    let mut command = Command::new(BIN);
    command
        .env_remove("KUBE_KMS_CONFIG")
        .env("HOME", root.join("home"))
        .env("XDG_RUNTIME_DIR", root.join("run"))
        .env("KUBE_KMS_HEALTH_ADDRESS", "off")
        .env("KUBE_KMS_PROVIDER", "pkcs11")
        .env("KUBE_KMS_PKCS11_MODULE", SOFTHSM_MODULE)
        .env("KUBE_KMS_PKCS11_TOKEN_LABEL", token)
        .env("KUBE_KMS_PKCS11_PIN_ENV", "KUBE_KMS_TEST_PIN")
        .env("KUBE_KMS_TEST_PIN", pin)
        .env("KUBE_KMS_PKCS11_KEY_LABEL", "kek-1");
    command
}

fn run(command: &mut Command) -> Output {
    command.output().expect("kube-kms runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

async fn pkcs11_the_binary_creates_lists_and_serves_a_key() {
    softhsm_module();
    let token = new_token("cli");
    let root = util::short_tempdir();

    let created = run(kube_kms(root.path(), &token, USER_PIN).args(["keys", "create"]));
    assert!(created.status.success(), "{}", text(&created.stderr));
    let stdout = text(&created.stdout);
    let key_id = stdout
        .lines()
        .find_map(|line| line.strip_prefix("key_id "))
        .expect("keys create prints the key_id")
        .to_owned();

    let again = run(kube_kms(root.path(), &token, USER_PIN).args(["keys", "create"]));
    assert!(!again.status.success());
    assert!(
        text(&again.stderr).contains("already holds"),
        "{}",
        text(&again.stderr)
    );

    let listed = run(kube_kms(root.path(), &token, USER_PIN).args(["keys", "list"]));
    let stdout = text(&listed.stdout);
    assert!(listed.status.success(), "{}", text(&listed.stderr));
    assert!(
        stdout.contains("kek-1") && stdout.contains("current") && stdout.contains(&key_id),
        "{stdout}"
    );
    assert!(stdout.contains("CKM_AES_KEY_WRAP_PAD"), "{stdout}");

    // A wrong PIN stops `serve` at start, saying so without showing it.
    let refused = run(kube_kms(root.path(), &token, "wrong-pin-0000").arg("serve"));
    assert!(!refused.status.success());
    let stderr = text(&refused.stderr);
    assert!(stderr.contains("refused the PIN"), "{stderr}");
    assert!(!stderr.contains("wrong-pin-0000"), "{stderr}");

    let socket = root.path().join("kms.sock");
    let mut serve = kube_kms(root.path(), &token, USER_PIN);
    serve.args(["serve", "--socket"]).arg(&socket);
    // Fails the test unless serve prints its EncryptionConfiguration.
    let served = ServedBinary::start_async(serve, &root.path().join("serve.log")).await;

    let probed = run(Command::new(BIN)
        .args(["probe", "--socket"])
        .arg(&socket)
        .env_remove("KUBE_KMS_CONFIG"));
    let stdout = text(&probed.stdout);
    assert!(probed.status.success(), "{stdout}{}", text(&probed.stderr));
    assert!(
        stdout.contains(&key_id),
        "Status reports the key's key_id: {stdout}"
    );
    drop(served);
}

fn pkcs11_checks() -> Vec<(&'static str, CheckFuture)> {
    vec![
        (
            "a_refused_pin_is_never_presented_twice",
            Box::pin(pkcs11_a_refused_pin_is_never_presented_twice()),
        ),
        (
            "a_token_reset_is_survived_by_reconnecting",
            Box::pin(pkcs11_a_token_reset_is_survived_by_reconnecting()),
        ),
        (
            "wrapped_keks_name_their_mechanism",
            Box::pin(pkcs11_wrapped_keks_name_their_mechanism()),
        ),
        (
            "debug_output_never_shows_the_pin",
            Box::pin(pkcs11_debug_output_never_shows_the_pin()),
        ),
        (
            "the_binary_creates_lists_and_serves_a_key",
            Box::pin(pkcs11_the_binary_creates_lists_and_serves_a_key()),
        ),
    ]
}

// ---------------------------------------------------------------------------------------------
// Azure Key Vault and Managed HSM, on the keyvault-emulator over HTTPS through the official SDK.

struct AzureBackend {
    name: &'static str,
    managed_hsm: bool,
}

struct AzureFixture {
    managed_hsm: bool,
    vault: azure_support::TestVault,
    provider: Arc<AzureKeyVaultProvider>,
}

/// The emulator's configuration with a long deadline: the suite checks behaviour, and 64
/// concurrent callers queue for RSA private-key operations in a debug-build emulator on two
/// cores. Deadlines are checked in tests/azure_provider.rs.
fn patient(vault: &azure_support::TestVault) -> kube_kms::provider::azure::AzureConfig {
    let mut config = vault.config();
    config.retry.deadline = std::time::Duration::from_secs(30);
    config.transport.request_timeout = std::time::Duration::from_secs(30);
    config
}

async fn azure_vault(managed_hsm: bool) -> azure_support::TestVault {
    if managed_hsm {
        azure_support::TestVault::managed_hsm().await
    } else {
        azure_support::TestVault::key_vault(2048).await
    }
}

#[async_trait]
impl Backend for AzureBackend {
    fn name(&self) -> &'static str {
        self.name
    }

    async fn open(&self) -> Box<dyn Fixture> {
        let vault = azure_vault(self.managed_hsm).await;
        let provider = vault.open(patient(&vault)).await;
        Box::new(AzureFixture {
            managed_hsm: self.managed_hsm,
            vault,
            provider,
        })
    }
}

/// Key Vault versions are random and unique, so no other key has a version of the same name:
/// the stranger is another vault's key presented under this key's current version name (its
/// own key_id), wrapping with its own key material.
struct RenamedStranger {
    _vault: azure_support::TestVault,
    inner: Arc<AzureKeyVaultProvider>,
    real: KeyVersion,
    shown: KeyVersion,
}

#[async_trait]
impl KeyProvider for RenamedStranger {
    fn kind(&self) -> &'static str {
        self.inner.kind()
    }

    async fn refresh(&self) -> Result<KeyVersion, ProviderError> {
        self.inner.refresh().await?;
        Ok(self.shown.clone())
    }

    async fn current_key(&self) -> Option<KeyVersion> {
        Some(self.shown.clone())
    }

    async fn wrap(&self, key: &KeyVersion, kek: &SecretKey) -> Result<Vec<u8>, ProviderError> {
        if *key != self.shown {
            return Err(ProviderError::UnknownKeyVersion {
                version: key.version().into(),
            });
        }
        self.inner.wrap(&self.real, kek).await
    }

    async fn unwrap(&self, version: &str, wrapped: &[u8]) -> Result<SecretKey, ProviderError> {
        let version = if version == self.shown.version() {
            self.real.version()
        } else {
            version
        };
        self.inner.unwrap(version, wrapped).await
    }

    async fn health(&self) -> ProviderHealth {
        self.inner.health().await
    }
}

#[async_trait]
impl Fixture for AzureFixture {
    fn provider(&self) -> Arc<dyn KeyProvider> {
        Arc::clone(&self.provider) as Arc<dyn KeyProvider>
    }

    async fn reopen(&self) -> Arc<dyn KeyProvider> {
        self.vault.open(patient(&self.vault)).await
    }

    async fn rotate(&mut self) -> Arc<dyn KeyProvider> {
        // key_version latest: the vault's new version is the rotation; refresh picks it up.
        self.vault
            .emulator
            .rotate_key(&self.vault.key_name)
            .await
            .expect("rotate the key in the vault");
        self.provider()
    }

    async fn stranger(&self) -> Arc<dyn KeyProvider> {
        let ours = self.provider.current_key().await.expect("current key");
        let vault = azure_vault(self.managed_hsm).await;
        let inner = vault.open(patient(&vault)).await;
        let real = inner.current_key().await.expect("the stranger's key");
        let shown = KeyVersion::new(real.key_id(), ours.version()).expect("key version");
        Arc::new(RenamedStranger {
            _vault: vault,
            inner,
            real,
            shown,
        })
    }

    async fn outside_versions(&self) -> Vec<(String, Vec<u8>)> {
        // The configuration is every version of one key. A well-formed version of another key
        // is asked of the configured key only (which has no such version, so it is unknown);
        // tests/azure_provider.rs shows it never reaches the other key.
        Vec::new()
    }

    fn key_store_operations(&self) -> Option<u64> {
        Some(self.vault.key_operations())
    }

    async fn revoke(&self) -> bool {
        self.vault
            .emulator
            .disable_key(&self.vault.key_name, None)
            .expect("disable the key");
        true
    }
}

// ---------------------------------------------------------------------------------------------
// The harness.

fn block_on<F: Future<Output = ()>>(future: F) {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
        .block_on(future);
}

/// Held by every trial that touches SoftHSM: several SoftHSM instances (this process, the
/// token-reset copy of the module, the `kube-kms` child processes) share one token directory,
/// and SoftHSM does not make creating a token in one instance and finding it from another
/// safe under concurrency (seen as a missing token on a loaded machine). The checks' own
/// concurrency (64 tasks against one provider) is inside a trial and unaffected.
static SOFTHSM: Mutex<()> = Mutex::new(());

fn softhsm_turn(name: &str) -> Option<std::sync::MutexGuard<'static, ()>> {
    name.starts_with("pkcs11").then(|| {
        SOFTHSM
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    })
}

fn trials() -> Vec<Trial> {
    let mut trials = Vec::new();
    for backend in backends() {
        for (name, check) in checks() {
            let backend = Arc::clone(&backend);
            trials.push(Trial::test(
                format!("{}::{name}", backend.name()),
                move || {
                    let _turn = softhsm_turn(backend.name());
                    block_on(async move { check(backend.open().await).await });
                    Ok(())
                },
            ));
        }
    }
    for (name, check) in pkcs11_checks() {
        trials.push(Trial::test(format!("pkcs11::{name}"), move || {
            let _turn = softhsm_turn("pkcs11");
            block_on(check);
            Ok(())
        }));
    }
    trials
}

fn main() -> ExitCode {
    if std::env::var_os(SANDBOX).is_some() {
        return libtest_mimic::run(&Arguments::from_args(), trials()).exit_code();
    }
    // Outside the sandbox: make one, with a SoftHSM configuration of its own, and run this
    // binary again inside it.
    let sandbox = tempfile::Builder::new()
        .prefix("kube-kms-softhsm")
        .tempdir()
        .expect("temporary directory");
    let tokens = sandbox.path().join("tokens");
    std::fs::create_dir(&tokens).expect("token directory");
    let conf = sandbox.path().join("softhsm2.conf");
    std::fs::write(
        &conf,
        format!(
            "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\n\
             slots.removable = false\n",
            tokens.display()
        ),
    )
    .expect("SoftHSM configuration");
    let status = Command::new(std::env::current_exe().expect("this test binary"))
        .args(std::env::args_os().skip(1))
        .env("SOFTHSM2_CONF", &conf)
        .env(SANDBOX, sandbox.path())
        .status()
        .expect("the suite runs in its sandbox");
    match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        None => ExitCode::FAILURE,
    }
}
