//! An Azure Key Vault / Managed HSM emulator that speaks the real REST protocol over HTTPS,
//! with the Entra ID token endpoint, OpenID metadata and the managed identity endpoints (IMDS
//! and App Service) that the official SDKs call — for kube-kms's tests and local demos.
//!
//! Start one with [`Emulator::start`]; point an SDK at [`RunningEmulator::vault_url`], trust
//! [`RunningEmulator::ca_pem_path`], register an identity, create keys, secrets and
//! certificates, inject faults and read call counters through [`RunningEmulator`] (or the
//! admin HTTP API under `/_emulator/`, see README.md). It never logs key material, tokens or
//! secret values.

#![forbid(unsafe_code)]

pub mod admin;
pub mod api_version;
pub mod b64;
pub mod bundle;
pub mod certificates;
pub mod certs;
pub mod certs_api;
pub mod crypto;
pub mod entra;
pub mod error;
pub mod faults;
#[doc(hidden)]
pub mod fuzzing;
pub mod http;
pub mod identity;
pub mod jwt;
pub mod keys_api;
pub mod managed_identity;
pub mod model;
pub mod pki;
pub mod policy;
pub mod router;
pub mod secrets;
pub mod secrets_api;
pub mod state;
pub mod store;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use emulator_support::start::{self as start, Serving};
use tokio_rustls::TlsAcceptor;

pub use certificates::CertificateInfo;
pub use certs::{ClientCertificate, TlsSource};
pub use error::{EmulatorError, ServiceError};
pub use faults::{Fault, FaultRule, OpCounts, ReadCount, ThrottleLimits};
pub use identity::{FederatedCredential, IdentityInfo, IdentitySpec, ManagedKind};
pub use model::{Curve, KeyOp, KeyType, ObjectKind, Operation, Permission, VaultKind};
pub use secrets::{SecretInfo, SecretSpec};
pub use state::{KeyInfo, KeySpec, KeyUpdate};

use router::Listener;
use state::{Config, Shared};

/// How to start an emulator. `Options::default()` is a Key Vault on 127.0.0.1 with a
/// generated CA, a random tenant and a plain-HTTP identity listener.
#[derive(Debug, Clone)]
pub struct Options {
    /// Key Vault or Managed HSM.
    pub kind: VaultKind,
    /// Address of the HTTPS listener (port 0: any free port).
    pub bind: SocketAddr,
    /// Address of the plain-HTTP managed identity listener; `None` for none.
    pub identity_bind: Option<SocketAddr>,
    /// The server certificate.
    pub tls: TlsSource,
    /// Extra DNS names / IPs for a generated server certificate.
    pub extra_names: Vec<String>,
    /// Where to write `ca.pem`; a private temporary directory when `None`.
    pub state_dir: Option<PathBuf>,
    /// The tenant id; a random GUID when `None`.
    pub tenant_id: Option<String>,
    /// The token audience the vault accepts; the public cloud's by default.
    pub resource: Option<String>,
    /// The authority named in the challenge.
    pub challenge_authority: String,
    /// Lifetime of issued tokens.
    pub token_lifetime: Duration,
    /// Default page size of list operations (the service's is 25).
    pub page_size: usize,
    /// Soft-delete retention in days.
    pub retention_days: u32,
}

impl Default for Options {
    fn default() -> Self {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Self {
            kind: VaultKind::KeyVault,
            bind: SocketAddr::new(loopback, 0),
            identity_bind: Some(SocketAddr::new(loopback, 0)),
            tls: TlsSource::Generate,
            extra_names: Vec::new(),
            state_dir: None,
            tenant_id: None,
            resource: None,
            challenge_authority: "https://login.microsoftonline.com".to_owned(),
            token_lifetime: Duration::from_secs(3600),
            page_size: 25,
            retention_days: 90,
        }
    }
}

impl Options {
    /// A Key Vault with defaults.
    pub fn key_vault() -> Self {
        Self::default()
    }

    /// A Managed HSM with defaults.
    pub fn managed_hsm() -> Self {
        Self {
            kind: VaultKind::ManagedHsm,
            ..Self::default()
        }
    }
}

/// Starts emulators.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Binds the listeners, writes `ca.pem` and starts serving on the current tokio runtime.
    pub async fn start(options: Options) -> Result<RunningEmulator, EmulatorError> {
        let tls = certs::ServerTls::new(&options.tls, &options.extra_names)?;
        let mut serving = Serving::new(
            options.state_dir.as_deref(),
            "keyvault-emulator-",
            tls.ca_pem,
        )?;
        let (https, addr) = start::bind(options.bind).await?;
        let identity = match options.identity_bind {
            Some(bind) => Some(start::bind(bind).await?),
            None => None,
        };

        let mut identity_header = [0u8; 16];
        crypto::fill_random(&mut identity_header).map_err(|e| EmulatorError::Tls(e.to_string()))?;
        let config = Config {
            kind: options.kind,
            tenant_id: options.tenant_id.clone().unwrap_or_else(identity::new_guid),
            resource: options
                .resource
                .clone()
                .unwrap_or_else(|| options.kind.default_resource().to_owned())
                .trim_end_matches('/')
                .to_owned(),
            challenge_authority: options.challenge_authority.clone(),
            token_lifetime: options.token_lifetime,
            page_size: options.page_size.clamp(1, 25),
            retention_days: options.retention_days,
            identity_header: hex::encode(identity_header),
            default_host: start::host_port(addr),
            ca_pem_path: serving.ca_pem_path().to_owned(),
            imds_url: identity
                .as_ref()
                .map(|(_, a)| format!("http://{}:{}", a.ip(), a.port())),
        };
        let shared = Arc::new(Shared::new(config));
        let handler = |kind| {
            let shared = Arc::clone(&shared);
            move |request| router::handle(Arc::clone(&shared), kind, request)
        };
        let tls = Some(TlsAcceptor::from(tls.config));
        serving.spawn(https, tls, handler(Listener::Https));
        if let Some((listener, _)) = identity {
            serving.spawn(listener, None, handler(Listener::PlainIdentity));
        }
        tracing::info!(vault = %format!("https://{}/", shared.config.default_host), kind = ?options.kind, "keyvault-emulator listening");
        Ok(RunningEmulator {
            shared,
            addr,
            serving,
        })
    }
}

/// A running emulator. Dropping it stops the listeners.
pub struct RunningEmulator {
    shared: Arc<Shared>,
    addr: SocketAddr,
    serving: Serving,
}

impl std::fmt::Debug for RunningEmulator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunningEmulator")
            .field("vault_url", &self.vault_url())
            .field("kind", &self.kind())
            .finish_non_exhaustive()
    }
}

impl RunningEmulator {
    // ----- where it is -----

    /// Key Vault or Managed HSM.
    pub fn kind(&self) -> VaultKind {
        self.shared.config.kind
    }

    /// The HTTPS listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `localhost:{port}` — the host in kids this emulator builds for the Rust API.
    pub fn vault_host(&self) -> &str {
        &self.shared.config.default_host
    }

    /// `https://localhost:{port}/` — the vault URL for the SDKs.
    pub fn vault_url(&self) -> String {
        format!("https://{}/", self.vault_host())
    }

    /// The CA certificate (PEM) that issued the server certificate.
    pub fn ca_pem(&self) -> &str {
        self.serving.ca_pem()
    }

    /// The file holding [`RunningEmulator::ca_pem`] (SSL_CERT_FILE / REQUESTS_CA_BUNDLE).
    pub fn ca_pem_path(&self) -> &Path {
        self.serving.ca_pem_path()
    }

    /// The emulated tenant id.
    pub fn tenant_id(&self) -> &str {
        &self.shared.config.tenant_id
    }

    /// The token resource the vault accepts (`https://vault.azure.net` by default).
    pub fn resource(&self) -> &str {
        &self.shared.config.resource
    }

    /// The scope SDKs request: `{resource}/.default`.
    pub fn scope(&self) -> String {
        format!("{}/.default", self.resource())
    }

    /// The Entra authority host, `https://localhost:{port}` (AZURE_AUTHORITY_HOST); the
    /// tenant goes after it.
    pub fn authority_url(&self) -> String {
        format!("https://{}", self.vault_host())
    }

    /// `{authority}/{tenant}/oauth2/v2.0/token`.
    pub fn token_url(&self) -> String {
        format!(
            "{}/{}/oauth2/v2.0/token",
            self.authority_url(),
            self.tenant_id()
        )
    }

    /// The plain-HTTP IMDS base URL (`AZURE_POD_IDENTITY_AUTHORITY_HOST`), if that listener
    /// runs. The same path is served over HTTPS at [`RunningEmulator::authority_url`] too.
    pub fn imds_url(&self) -> Option<String> {
        self.shared.config.imds_url.clone()
    }

    /// The App Service `IDENTITY_ENDPOINT` (plain HTTP when that listener runs, else HTTPS).
    pub fn identity_endpoint(&self) -> String {
        match &self.shared.config.imds_url {
            Some(url) => format!("{url}/msi/token"),
            None => format!("{}/msi/token", self.authority_url()),
        }
    }

    /// The App Service `IDENTITY_HEADER` value. A test credential, not a production secret.
    pub fn identity_header(&self) -> &str {
        &self.shared.config.identity_header
    }

    /// Stops serving and waits for the listeners to finish.
    pub async fn shutdown(self) {
        self.serving.shutdown().await;
    }

    // ----- keys -----

    /// Creates a key (or a new version of an existing name).
    pub async fn create_key(&self, name: &str, spec: KeySpec) -> Result<KeyInfo, EmulatorError> {
        let version = self.shared.create_key(name, &spec).await?;
        Ok(KeyInfo::of(&version, self.vault_host()))
    }

    /// Rotates a key: a new version like the latest one.
    pub async fn rotate_key(&self, name: &str) -> Result<KeyInfo, EmulatorError> {
        let version = self.shared.rotate_key(name).await?;
        Ok(KeyInfo::of(&version, self.vault_host()))
    }

    /// A key version (`None`: the latest).
    pub fn key(&self, name: &str, version: Option<&str>) -> Result<KeyInfo, EmulatorError> {
        let store = self.shared.store();
        Ok(KeyInfo::of(store.get(name, version)?, self.vault_host()))
    }

    /// Every version of a key, oldest first.
    pub fn key_versions(&self, name: &str) -> Result<Vec<KeyInfo>, EmulatorError> {
        let store = self.shared.store();
        Ok(store
            .versions(name)?
            .iter()
            .map(|v| KeyInfo::of(v, self.vault_host()))
            .collect())
    }

    /// Changes a version's attributes (`None`: the latest).
    pub fn update_key(
        &self,
        name: &str,
        version: Option<&str>,
        update: KeyUpdate,
    ) -> Result<KeyInfo, EmulatorError> {
        let version = self.shared.update_key(name, version, &update)?;
        Ok(KeyInfo::of(&version, self.vault_host()))
    }

    /// Enables a version (`None`: the latest).
    pub fn enable_key(&self, name: &str, version: Option<&str>) -> Result<KeyInfo, EmulatorError> {
        self.set_enabled(name, version, true)
    }

    /// Disables a version (`None`: the latest): unwrap/decrypt then answer 403 KeyDisabled.
    pub fn disable_key(&self, name: &str, version: Option<&str>) -> Result<KeyInfo, EmulatorError> {
        self.set_enabled(name, version, false)
    }

    fn set_enabled(
        &self,
        name: &str,
        version: Option<&str>,
        enabled: bool,
    ) -> Result<KeyInfo, EmulatorError> {
        self.update_key(
            name,
            version,
            KeyUpdate {
                enabled: Some(enabled),
                ..KeyUpdate::default()
            },
        )
    }

    /// Sets not-before / expiry (unix seconds; `None` clears) of a version.
    pub fn set_key_validity(
        &self,
        name: &str,
        version: Option<&str>,
        nbf: Option<i64>,
        exp: Option<i64>,
    ) -> Result<KeyInfo, EmulatorError> {
        self.update_key(
            name,
            version,
            KeyUpdate {
                nbf: Some(nbf),
                exp: Some(exp),
                ..KeyUpdate::default()
            },
        )
    }

    /// Soft-deletes a key.
    pub fn delete_key(&self, name: &str) -> Result<(), EmulatorError> {
        let days = self.shared.config.retention_days;
        self.shared.store().delete(name, state::now_secs(), days)?;
        Ok(())
    }

    /// Recovers a soft-deleted key.
    pub fn recover_key(&self, name: &str) -> Result<KeyInfo, EmulatorError> {
        let version = self.shared.store().recover(name)?;
        Ok(KeyInfo::of(&version, self.vault_host()))
    }

    /// Purges a soft-deleted key.
    pub fn purge_key(&self, name: &str) -> Result<(), EmulatorError> {
        Ok(self.shared.store().purge(name)?)
    }

    /// Unwraps (or decrypts, for AES-GCM use the REST API) `wrapped` with a key version, as the
    /// service would but without HTTP, permissions or faults — to check what a client wrapped.
    /// Returns the plaintext key; a test helper, not a production path.
    pub fn unwrap_locally(
        &self,
        name: &str,
        version: Option<&str>,
        alg: &str,
        wrapped: &[u8],
    ) -> Result<Vec<u8>, EmulatorError> {
        let key = self.shared.store().get(name, version)?.clone();
        let alg = crypto::Algorithm::parse(alg)
            .ok_or_else(|| EmulatorError::InvalidRequest(format!("unknown algorithm {alg}")))?;
        let plain = key
            .material
            .open(
                alg,
                key.kty,
                crypto::Usage::KeyWrap,
                wrapped,
                &crypto::OpenParams::default(),
            )
            .map_err(|e| EmulatorError::Service(e.into()))?;
        Ok(plain.to_vec())
    }

    // ----- secrets -----

    /// Sets a secret (a new version), as `PUT /secrets/{name}` would.
    pub fn set_secret(&self, name: &str, spec: SecretSpec) -> Result<SecretInfo, EmulatorError> {
        let version = spec.to_version(name, state::now_secs())?;
        let mut store = self.shared.secrets();
        if store.get(name, None).is_ok_and(|latest| latest.managed) {
            return Err(ServiceError::managed_by_key_vault("set").into());
        }
        let version = store.add_version(version)?;
        Ok(SecretInfo::of(&version, self.vault_host()))
    }

    /// A secret version (`None`: the latest).
    pub fn secret(&self, name: &str, version: Option<&str>) -> Result<SecretInfo, EmulatorError> {
        let store = self.shared.secrets();
        Ok(SecretInfo::of(store.get(name, version)?, self.vault_host()))
    }

    /// The value of a secret version (`None`: the latest). Exposes the value: a test helper
    /// to check what a client stored.
    pub fn secret_value(&self, name: &str, version: Option<&str>) -> Result<String, EmulatorError> {
        let store = self.shared.secrets();
        Ok(store.get(name, version)?.value.expose().to_owned())
    }

    /// Every version of a secret, oldest first.
    pub fn secret_versions(&self, name: &str) -> Result<Vec<SecretInfo>, EmulatorError> {
        let store = self.shared.secrets();
        Ok(store
            .versions(name)?
            .iter()
            .map(|v| SecretInfo::of(v, self.vault_host()))
            .collect())
    }

    /// Enables or disables a secret version (`None`: the latest): a disabled one answers 403
    /// SecretDisabled.
    pub fn set_secret_enabled(
        &self,
        name: &str,
        version: Option<&str>,
        enabled: bool,
    ) -> Result<SecretInfo, EmulatorError> {
        let mut store = self.shared.secrets();
        let secret = store.get_mut(name, version)?;
        secret.attributes.enabled = enabled;
        secret.attributes.updated = state::now_secs();
        Ok(SecretInfo::of(secret, self.vault_host()))
    }

    /// Soft-deletes a secret.
    pub fn delete_secret(&self, name: &str) -> Result<(), EmulatorError> {
        let days = self.shared.config.retention_days;
        self.shared
            .secrets()
            .delete(name, state::now_secs(), days)?;
        Ok(())
    }

    /// Recovers a soft-deleted secret.
    pub fn recover_secret(&self, name: &str) -> Result<SecretInfo, EmulatorError> {
        let version = self.shared.secrets().recover(name)?;
        Ok(SecretInfo::of(&version, self.vault_host()))
    }

    /// Purges a soft-deleted secret.
    pub fn purge_secret(&self, name: &str) -> Result<(), EmulatorError> {
        Ok(self.shared.secrets().purge(name)?)
    }

    /// Authenticated `GET /secrets/{name}/{version}` requests: `None` sums every version,
    /// `Some("")` counts the reads of the latest, `Some(v)` the reads that named `v`.
    pub fn secret_reads(&self, name: &str, version: Option<&str>) -> u64 {
        self.shared
            .faults()
            .reads(ObjectKind::Secret, name, version)
    }

    // ----- certificates -----

    /// Creates a certificate from a policy (the REST create body's `policy`) and completes it
    /// at once when it is self-signed.
    pub async fn create_certificate(
        &self,
        name: &str,
        policy: serde_json::Value,
    ) -> Result<CertificateInfo, EmulatorError> {
        let body = serde_json::json!({ "policy": policy });
        certs_api::begin_create(&self.shared, name, &body).await?;
        certs_api::settle(&self.shared, name);
        self.certificate(name, None)
    }

    /// Imports a certificate from a REST import body (`value`: base64 PFX or PEM, `pwd`,
    /// `policy`, `attributes`, `tags`).
    pub async fn import_certificate(
        &self,
        name: &str,
        body: serde_json::Value,
    ) -> Result<CertificateInfo, EmulatorError> {
        let version = certs_api::import(&self.shared, name, &body).await?;
        Ok(CertificateInfo::of(&version, self.vault_host()))
    }

    /// A certificate version (`None`: the latest).
    pub fn certificate(
        &self,
        name: &str,
        version: Option<&str>,
    ) -> Result<CertificateInfo, EmulatorError> {
        let certs = self.shared.certificates();
        Ok(CertificateInfo::of(
            certs.versions.get(name, version)?,
            self.vault_host(),
        ))
    }

    /// Authenticated `GET /certificates/{name}/{version}` requests, counted as
    /// [`RunningEmulator::secret_reads`] counts secrets.
    pub fn certificate_reads(&self, name: &str, version: Option<&str>) -> u64 {
        self.shared
            .faults()
            .reads(ObjectKind::Certificate, name, version)
    }

    /// Every read counter (secrets and certificates, by name and requested version).
    pub fn reads(&self) -> Vec<ReadCount> {
        self.shared.faults().all_reads()
    }

    // ----- identities -----

    /// Registers an identity (client secret, certificate, federated and/or managed).
    pub fn register_identity(&self, spec: IdentitySpec) -> Result<IdentityInfo, EmulatorError> {
        self.shared.directory().register(spec)
    }

    /// Registers an application with a client secret and all permissions.
    pub fn register_client_secret(
        &self,
        client_id: &str,
        secret: &str,
    ) -> Result<IdentityInfo, EmulatorError> {
        self.register_identity(IdentitySpec {
            client_id: Some(client_id.to_owned()),
            client_secret: Some(secret.to_owned()),
            ..IdentitySpec::default()
        })
    }

    /// Registers an application with a client certificate (PEM) and all permissions.
    pub fn register_client_certificate(
        &self,
        client_id: &str,
        certificate_pem: &str,
    ) -> Result<IdentityInfo, EmulatorError> {
        self.register_identity(IdentitySpec {
            client_id: Some(client_id.to_owned()),
            certificate_pem: Some(certificate_pem.to_owned()),
            ..IdentitySpec::default()
        })
    }

    /// Registers an application with a federated credential (workload identity).
    pub fn register_federated_identity(
        &self,
        client_id: &str,
        credential: FederatedCredential,
    ) -> Result<IdentityInfo, EmulatorError> {
        self.register_identity(IdentitySpec {
            client_id: Some(client_id.to_owned()),
            federated: Some(credential),
            ..IdentitySpec::default()
        })
    }

    /// Registers a managed identity (system-assigned, or user-assigned with ids).
    pub fn register_managed_identity(
        &self,
        kind: ManagedKind,
        client_id: Option<&str>,
        resource_id: Option<&str>,
    ) -> Result<IdentityInfo, EmulatorError> {
        self.register_identity(IdentitySpec {
            client_id: client_id.map(str::to_owned),
            managed: Some(kind),
            resource_id: resource_id.map(str::to_owned),
            ..IdentitySpec::default()
        })
    }

    /// Adds a client secret to an identity.
    pub fn add_client_secret(&self, client_id: &str, secret: &str) -> Result<(), EmulatorError> {
        self.shared
            .directory()
            .add_secret(client_id, secret.to_owned())
    }

    /// Adds a client certificate to an identity.
    pub fn add_client_certificate(&self, client_id: &str, pem: &str) -> Result<(), EmulatorError> {
        self.shared.directory().add_certificate(client_id, pem)
    }

    /// Adds a federated credential to an identity.
    pub fn add_federated_credential(
        &self,
        client_id: &str,
        credential: FederatedCredential,
    ) -> Result<(), EmulatorError> {
        self.shared.directory().add_federated(client_id, credential)
    }

    /// An external token the identity's first federated credential accepts (write it to
    /// `AZURE_FEDERATED_TOKEN_FILE`).
    pub fn federated_token(
        &self,
        client_id: &str,
        lifetime: Duration,
    ) -> Result<String, EmulatorError> {
        let seconds = i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2);
        self.shared.federated_token(client_id, seconds)
    }

    /// Replaces an identity's permissions (keys, secrets and certificates).
    pub fn set_permissions(
        &self,
        client_id: &str,
        permissions: &[Permission],
    ) -> Result<IdentityInfo, EmulatorError> {
        self.shared
            .directory()
            .set_permissions(client_id, permissions)
    }

    /// Grants permissions.
    pub fn grant(
        &self,
        client_id: &str,
        permissions: &[Permission],
    ) -> Result<IdentityInfo, EmulatorError> {
        self.shared.directory().grant(client_id, permissions)
    }

    /// Revokes permissions (e.g. `unwrapKey`, `secrets/get`): calls then answer 403 Forbidden.
    pub fn revoke(
        &self,
        client_id: &str,
        permissions: &[Permission],
    ) -> Result<IdentityInfo, EmulatorError> {
        self.shared.directory().revoke(client_id, permissions)
    }

    /// Forgets every issued token: the next vault call answers 401 and clients re-authenticate.
    pub fn revoke_tokens(&self) {
        self.shared.directory().revoke_tokens();
    }

    // ----- faults and counters -----

    /// Adds a fault rule.
    pub fn inject(&self, rule: FaultRule) {
        self.shared.faults().add(rule);
    }

    /// Removes every fault rule.
    pub fn clear_faults(&self) {
        self.shared.faults().clear();
    }

    /// Enforces per-window budgets (`Some(ThrottleLimits::azure())` for the real ones) or
    /// stops enforcing them.
    pub fn set_throttle(&self, limits: Option<ThrottleLimits>) {
        self.shared.faults().set_limits(limits);
    }

    /// The counts of one operation.
    pub fn counts(&self, operation: Operation) -> OpCounts {
        self.shared.faults().counts(operation)
    }

    /// How many requests an operation received (including challenged and faulted ones).
    pub fn calls(&self, operation: Operation) -> u64 {
        self.counts(operation).requests
    }

    /// Every operation's counts.
    pub fn all_counts(&self) -> BTreeMap<Operation, OpCounts> {
        self.shared.faults().all_counts()
    }

    /// Zeroes the counters (operations and reads).
    pub fn reset_counts(&self) {
        self.shared.faults().reset_counts();
    }
}
