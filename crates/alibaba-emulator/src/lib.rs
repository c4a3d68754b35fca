//! An Alibaba Cloud emulator for kube-kms's CSI provider tests and local demos: KMS Secrets
//! Manager (`GetSecretValue`, `ListSecretVersionIds`), OOS secret parameters
//! (`GetSecretParameter`) and STS (`AssumeRoleWithOIDC`, `AssumeRole`, `GetCallerIdentity`)
//! on one HTTPS listener, with both request signatures (ACS3-HMAC-SHA256 and RPC HMAC-SHA1)
//! verified as the gateway does, plus the ECS instance metadata RAM-role endpoints on a
//! plain-HTTP listener.
//!
//! Start one with [`Emulator::start`]; point an SDK at [`RunningEmulator::endpoint`], trust
//! [`RunningEmulator::ca_pem_path`], register AccessKeys, roles and OIDC providers, store
//! secrets and parameters, inject faults and read counters through [`RunningEmulator`] (or the
//! admin HTTP API under `/_emulator/`, see README.md). It never logs secret values, AccessKey
//! secrets or security tokens.

#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod clock;
pub mod error;
pub mod faults;
pub mod identity;
pub mod kms;
pub mod metadata;
pub mod oos;
pub mod respond;
pub mod router;
pub mod sign;
pub mod state;
pub mod store;
pub mod sts;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use emulator_support::start::{self as start, Serving};
use tokio_rustls::TlsAcceptor;

pub use emulator_support::TlsSource;
pub use error::{ApiError, EmulatorError};
pub use faults::{Fault, FaultRule, OpCounts, ReadCount, ThrottleBudget};
pub use identity::{AccessKeySpec, Grants, OidcProviderSpec, OidcTrust, RoleSpec};
pub use store::{
    DataType, ParameterInfo, ParameterSpec, SecretInfo, SecretSpec, SecretVersionInfo,
    SecretVersionSpec,
};

use router::Listener;
use state::{Config, Shared};

/// Regions whose `*.<region>.aliyuncs.com` names a generated certificate carries by default.
pub const DEFAULT_REGIONS: &[&str] = &[
    "cn-hangzhou",
    "cn-shanghai",
    "cn-beijing",
    "cn-shenzhen",
    "cn-hongkong",
    "ap-southeast-1",
    "us-west-1",
    "eu-central-1",
];

/// How to start an emulator. `Options::default()` listens on 127.0.0.1 (any free ports), with
/// a generated CA, region `cn-hangzhou` and account `1234567890123456`.
#[derive(Debug, Clone)]
pub struct Options {
    /// The HTTPS listener (port 0: any free port).
    pub bind: SocketAddr,
    /// The plain-HTTP ECS metadata listener; `None` for none.
    pub metadata_bind: Option<SocketAddr>,
    /// The server certificate.
    pub tls: TlsSource,
    /// Regions for `*.<region>.aliyuncs.com` names in a generated certificate (which always
    /// carries localhost, 127.0.0.1, `*.aliyuncs.com` and
    /// `*.cryptoservice.kms.aliyuncs.com`).
    pub regions: Vec<String>,
    /// More DNS names / IPs for a generated certificate.
    pub extra_names: Vec<String>,
    /// The region written in ARNs.
    pub region: String,
    /// The default account: of identities, secrets and parameters registered without one.
    pub account_id: String,
    /// Where to write `ca.pem`; a private temporary directory when `None`.
    pub state_dir: Option<PathBuf>,
    /// Lifetime of the credentials the metadata service hands out.
    pub ecs_credentials_lifetime: Duration,
}

impl Default for Options {
    fn default() -> Self {
        let loopback = IpAddr::V4(Ipv4Addr::LOCALHOST);
        Self {
            bind: SocketAddr::new(loopback, 0),
            metadata_bind: Some(SocketAddr::new(loopback, 0)),
            tls: TlsSource::Generate,
            regions: DEFAULT_REGIONS.iter().map(|r| (*r).to_owned()).collect(),
            extra_names: Vec::new(),
            region: "cn-hangzhou".to_owned(),
            account_id: "1234567890123456".to_owned(),
            state_dir: None,
            ecs_credentials_lifetime: Duration::from_secs(6 * 3600),
        }
    }
}

impl Options {
    /// The DNS names a generated server certificate carries.
    pub fn certificate_names(&self) -> Vec<String> {
        let mut names = vec![
            "*.aliyuncs.com".to_owned(),
            "*.cryptoservice.kms.aliyuncs.com".to_owned(),
        ];
        names.extend(self.regions.iter().map(|r| format!("*.{r}.aliyuncs.com")));
        if !self.regions.contains(&self.region) {
            names.push(format!("*.{}.aliyuncs.com", self.region));
        }
        names.extend(self.extra_names.iter().cloned());
        names
    }
}

/// Starts emulators.
#[derive(Debug)]
pub struct Emulator;

impl Emulator {
    /// Binds the listeners, writes `ca.pem` and starts serving on the current tokio runtime.
    pub async fn start(options: Options) -> Result<RunningEmulator, EmulatorError> {
        let tls =
            keyvault_emulator::certs::ServerTls::new(&options.tls, &options.certificate_names())
                .map_err(EmulatorError::Tls)?;
        let mut serving = Serving::new(
            options.state_dir.as_deref(),
            "alibaba-emulator-",
            tls.ca_pem,
        )?;
        let (https, addr) = start::bind(options.bind).await?;
        let metadata = match options.metadata_bind {
            Some(bind) => Some(start::bind(bind).await?),
            None => None,
        };
        let config = Config {
            region: options.region.clone(),
            account_id: options.account_id.clone(),
            default_host: start::host_port(addr),
            ca_pem_path: serving.ca_pem_path().to_owned(),
            metadata_url: metadata
                .as_ref()
                .map(|(_, a)| format!("http://{}:{}", a.ip(), a.port())),
            ecs_credentials_lifetime: options.ecs_credentials_lifetime,
        };
        let shared = Arc::new(Shared::new(config));
        let handler = |kind| {
            let shared = Arc::clone(&shared);
            move |request| router::handle(Arc::clone(&shared), kind, request)
        };
        let tls = Some(TlsAcceptor::from(tls.config));
        serving.spawn(https, tls, handler(Listener::Https));
        if let Some((listener, _)) = metadata {
            serving.spawn(listener, None, handler(Listener::Metadata));
        }
        tracing::info!(endpoint = %shared.config.default_host, "alibaba-emulator listening");
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
            .field("endpoint", &self.endpoint())
            .field("metadata_url", &self.metadata_url())
            .finish_non_exhaustive()
    }
}

impl RunningEmulator {
    // ----- where it is -----

    /// The HTTPS listener's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `localhost:PORT`: an SDK `endpoint`.
    pub fn endpoint(&self) -> &str {
        &self.shared.config.default_host
    }

    /// `https://localhost:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.endpoint())
    }

    /// `<host>:PORT` for a real service host name, e.g.
    /// `endpoint_for("kms-vpc.cn-hangzhou.aliyuncs.com")`; the client must resolve that host to
    /// [`RunningEmulator::addr`] (the certificate carries the name).
    pub fn endpoint_for(&self, host: &str) -> String {
        format!("{host}:{}", self.addr.port())
    }

    /// The CA certificate (PEM) that issued the server certificate.
    pub fn ca_pem(&self) -> &str {
        self.serving.ca_pem()
    }

    /// The file holding [`RunningEmulator::ca_pem`] (`SSL_CERT_FILE`, `Config.ca`).
    pub fn ca_pem_path(&self) -> &Path {
        self.serving.ca_pem_path()
    }

    /// The plain-HTTP metadata listener, `http://127.0.0.1:PORT`, if it runs (an HTTP proxy
    /// for `100.100.100.200`).
    pub fn metadata_url(&self) -> Option<String> {
        self.shared.config.metadata_url.clone()
    }

    /// The region in ARNs.
    pub fn region(&self) -> &str {
        &self.shared.config.region
    }

    /// The default account.
    pub fn account_id(&self) -> &str {
        &self.shared.config.account_id
    }

    /// Stops serving and waits for the listeners to finish.
    pub async fn shutdown(self) {
        self.serving.shutdown().await;
    }

    fn owner(&self, account: Option<&String>) -> String {
        account
            .cloned()
            .unwrap_or_else(|| self.account_id().to_owned())
    }

    // ----- secrets and parameters -----

    /// Stores a secret (replacing one of that name in its account).
    pub fn put_secret(&self, name: &str, spec: SecretSpec) -> Result<SecretInfo, EmulatorError> {
        let owner = self.owner(spec.account_id.as_ref());
        self.shared
            .store()
            .put_secret(&owner, name, &spec, self.region())
    }

    /// Adds a version to a secret of the default account, as PutSecretValue does (stages
    /// default to `ACSCurrent`; the old current version becomes `ACSPrevious`).
    pub fn add_secret_version(
        &self,
        name: &str,
        version: SecretVersionSpec,
    ) -> Result<SecretInfo, EmulatorError> {
        self.shared
            .store()
            .add_secret_version(self.account_id(), name, &version, self.region())
    }

    /// A secret of the default account (no data).
    pub fn secret(&self, name: &str) -> Option<SecretInfo> {
        self.shared
            .store()
            .secret_info(self.account_id(), name, self.region())
    }

    /// Deletes a secret of the default account; whether it existed.
    pub fn delete_secret(&self, name: &str) -> bool {
        self.shared.store().delete_secret(self.account_id(), name)
    }

    /// Stores a secret parameter (replacing one of that name in its account).
    pub fn put_parameter(
        &self,
        name: &str,
        spec: ParameterSpec,
    ) -> Result<ParameterInfo, EmulatorError> {
        let owner = self.owner(spec.account_id.as_ref());
        self.shared.store().put_parameter(&owner, name, &spec)
    }

    /// Adds a version to a parameter of the default account.
    pub fn add_parameter_version(
        &self,
        name: &str,
        value: &str,
    ) -> Result<ParameterInfo, EmulatorError> {
        self.shared
            .store()
            .add_parameter_version(self.account_id(), name, value)
    }

    /// Deletes a parameter of the default account; whether it existed.
    pub fn delete_parameter(&self, name: &str) -> bool {
        self.shared
            .store()
            .delete_parameter(self.account_id(), name)
    }

    // ----- identities -----

    /// Registers (or replaces) an AccessKey.
    pub fn add_access_key(&self, spec: AccessKeySpec) -> Result<(), EmulatorError> {
        self.shared.directory().add_key(&spec, self.account_id())
    }

    /// Enables or disables an AccessKey (disabled: `InvalidAccessKeyId.Inactive`).
    pub fn set_access_key_enabled(&self, id: &str, enabled: bool) -> Result<(), EmulatorError> {
        self.shared.directory().set_key_enabled(id, enabled)
    }

    /// Removes an AccessKey; whether it existed.
    pub fn remove_access_key(&self, id: &str) -> bool {
        self.shared.directory().remove_key(id)
    }

    /// Registers (or replaces) a RAM role; returns its ARN.
    pub fn add_role(&self, spec: RoleSpec) -> Result<String, EmulatorError> {
        self.shared.directory().add_role(&spec, self.account_id())
    }

    /// Registers (or replaces) an OIDC provider; returns its ARN.
    pub fn add_oidc_provider(&self, spec: OidcProviderSpec) -> Result<String, EmulatorError> {
        self.shared
            .directory()
            .add_provider(&spec, self.account_id())
    }

    /// A JWT-shaped OIDC token from a registered provider's issuer, for `subject` and the
    /// audience `sts.aliyuncs.com` (the content of an RRSA token file). Its signature is
    /// random: the emulator's STS does not verify it.
    pub fn oidc_token(
        &self,
        provider_arn: &str,
        subject: &str,
        lifetime: Duration,
    ) -> Result<String, EmulatorError> {
        let issuer = self
            .shared
            .directory()
            .provider(provider_arn)
            .map(|p| p.issuer.clone())
            .ok_or_else(|| EmulatorError::NotFound(format!("OIDC provider {provider_arn}")))?;
        sts::mint_token(
            &issuer,
            subject,
            identity::DEFAULT_AUDIENCE,
            i64::try_from(lifetime.as_secs()).unwrap_or(i64::MAX / 2),
            clock::now_secs(),
        )
    }

    /// Attaches a role of the default account to the emulated ECS instance (`None` detaches):
    /// the metadata service then hands out its credentials.
    pub fn set_ecs_role(&self, role_name: Option<&str>) -> Result<(), EmulatorError> {
        let mut directory = self.shared.directory();
        if let Some(name) = role_name
            && directory.role(self.account_id(), name).is_none()
        {
            return Err(EmulatorError::NotFound(format!("role {name}")));
        }
        directory.ecs_role = role_name.map(|n| (self.account_id().to_owned(), n.to_owned()));
        directory.ecs_session = None;
        Ok(())
    }

    /// Makes metadata reads need an IMDSv2 token (hardened mode) or not.
    pub fn require_metadata_token(&self, required: bool) {
        self.shared.directory().require_metadata_token = required;
    }

    /// Expires every STS credential issued so far: the next call with one answers
    /// `InvalidSecurityToken.Expired`.
    pub fn expire_sts_credentials(&self) {
        self.shared.directory().expire_sessions(clock::now_secs());
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

    /// Sets (or removes) the throttling budget.
    pub fn set_throttle(&self, budget: Option<ThrottleBudget>) {
        self.shared.faults().set_budget(budget);
    }

    /// The counts of one action.
    pub fn counts(&self, action: &str) -> OpCounts {
        self.shared.faults().counts(action)
    }

    /// Every action's counts.
    pub fn all_counts(&self) -> BTreeMap<String, OpCounts> {
        self.shared.faults().all_counts()
    }

    /// Authenticated reads of a secret or parameter name by an action (`GetSecretValue`,
    /// `ListSecretVersionIds`, `GetSecretParameter`), including throttled and faulted ones.
    pub fn reads(&self, action: &str, name: &str) -> u64 {
        self.shared.faults().reads(action, name)
    }

    /// Every read counter.
    pub fn all_reads(&self) -> Vec<ReadCount> {
        self.shared.faults().all_reads()
    }

    /// Zeroes the counters.
    pub fn reset_counts(&self) {
        self.shared.faults().reset_counts();
    }
}
