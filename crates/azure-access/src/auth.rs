//! Credential selection for a process's own identity: which way to authenticate to Entra ID,
//! and the SDK credential that does it. The KMS plugin takes the mode from its configuration
//! (`azure.auth`, and the other `azure.*` settings named below) or detects it, in this order,
//! from what the host provides —
//!
//! 1. workload identity: a federated token file (`azure.federated_token_file` or
//!    AZURE_FEDERATED_TOKEN_FILE, with AZURE_CLIENT_ID / AZURE_TENANT_ID as the webhook sets them);
//! 2. managed identity: a user-assigned identity configured by client id, object id or resource
//!    id, or a managed identity endpoint announced by the platform (IDENTITY_ENDPOINT and
//!    IDENTITY_HEADER). A system-assigned identity on a VM (IMDS) cannot be detected without
//!    a network probe, so it needs `azure.auth: managed-identity`;
//! 3. client secret: `azure.client_secret_file`, `azure.client_secret_env`, or AZURE_CLIENT_SECRET;
//! 4. client certificate (PEM with its key, or PFX): `azure.client_certificate_file` or
//!    AZURE_CLIENT_CERTIFICATE_PATH;
//! 5. the Azure CLI's login, for development: `az` on PATH;
//! 6. AKS's /etc/kubernetes/azure.json (`azure.azure_json`), whose fields pick one of the above.
//!
//! A credential for someone else's identity (a pod's service-account token exchanged as a
//! client assertion) is [`Credential::from_client_assertion`]'s, not this module's.
//!
//! Secrets (client secret, certificate password, private key) are read from files or named
//! environment variables, never from flags; they live in zeroizing buffers until handed to the
//! SDK, and no `Debug` or log line shows them. Standard AZURE_* and IDENTITY_* variable names are
//! the SDK's conventions and are read only here, through [`AzureEnv`], so tests supply their own.

use std::collections::HashMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use azure_core::credentials::{Secret, SecretBytes, TokenCredential};
use azure_core::http::ClientOptions;
use azure_identity::{
    AzureCliCredential, AzureCliCredentialOptions, ClientAssertionCredentialOptions,
    ClientCertificateCredential, ClientCertificateCredentialOptions, ClientSecretCredential,
    ClientSecretCredentialOptions, ManagedIdentityCredential, ManagedIdentityCredentialOptions,
    UserAssignedId, WorkloadIdentityCredential, WorkloadIdentityCredentialOptions,
};
use zeroize::Zeroizing;

use crate::Error;
use crate::azure_json::AzureJson;
use crate::cloud::CloudName;
use crate::credential::Credential;

/// The longest secret (client secret, password) read from a file or variable, in bytes.
pub const MAX_SECRET_LEN: usize = 4096;
/// The largest certificate file read.
const MAX_CERTIFICATE_LEN: usize = 256 * 1024;
/// Where AKS keeps its cloud-provider file.
pub const DEFAULT_AZURE_JSON: &str = "/etc/kubernetes/azure.json";

const AZURE_CLIENT_ID: &str = "AZURE_CLIENT_ID";
const AZURE_TENANT_ID: &str = "AZURE_TENANT_ID";
const AZURE_FEDERATED_TOKEN_FILE: &str = "AZURE_FEDERATED_TOKEN_FILE";
const AZURE_AUTHORITY_HOST: &str = "AZURE_AUTHORITY_HOST";
const AZURE_CLIENT_SECRET: &str = "AZURE_CLIENT_SECRET";
const AZURE_CLIENT_CERTIFICATE_PATH: &str = "AZURE_CLIENT_CERTIFICATE_PATH";
const AZURE_CLIENT_CERTIFICATE_PASSWORD: &str = "AZURE_CLIENT_CERTIFICATE_PASSWORD";
const IDENTITY_ENDPOINT: &str = "IDENTITY_ENDPOINT";
const IDENTITY_HEADER: &str = "IDENTITY_HEADER";

/// An authentication mode, as `azure.auth` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthMode {
    /// Detect (the default).
    Auto,
    /// Workload identity (a federated token file).
    WorkloadIdentity,
    /// A managed identity.
    ManagedIdentity,
    /// A client secret.
    ClientSecret,
    /// A client certificate.
    ClientCertificate,
    /// The Azure CLI's login (development).
    AzureCli,
    /// AKS's azure.json.
    AzureJson,
}

impl AuthMode {
    /// Parses `auto`, `workload-identity`, `managed-identity`, `client-secret`,
    /// `client-certificate`, `azure-cli` or `azure-json`.
    pub fn parse(text: &str) -> Option<Self> {
        Some(match text {
            "auto" => Self::Auto,
            "workload-identity" => Self::WorkloadIdentity,
            "managed-identity" => Self::ManagedIdentity,
            "client-secret" => Self::ClientSecret,
            "client-certificate" => Self::ClientCertificate,
            "azure-cli" => Self::AzureCli,
            "azure-json" => Self::AzureJson,
            _ => return None,
        })
    }

    /// The names [`AuthMode::parse`] accepts.
    pub const ACCEPTED: &'static str = "auto, workload-identity, managed-identity, \
         client-secret, client-certificate, azure-cli or azure-json";
}

/// Which managed identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedId {
    /// The host's system-assigned identity.
    System,
    /// A user-assigned identity by client id.
    ClientId(String),
    /// A user-assigned identity by object (principal) id.
    ObjectId(String),
    /// A user-assigned identity by ARM resource id.
    ResourceId(String),
}

/// Where a secret is read from. Holds a path or a variable name, never the secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    /// A file; one trailing newline is ignored.
    File(PathBuf),
    /// The name of an environment variable.
    Env(String),
}

impl fmt::Display for SecretSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::File(path) => write!(f, "file {}", path.display()),
            Self::Env(name) => write!(f, "environment variable {name}"),
        }
    }
}

/// The authentication settings, as the KMS plugin's configuration validates them. No secrets,
/// only where they are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthSettings {
    /// The mode, or `Auto`.
    pub mode: AuthMode,
    /// The tenant (directory) id.
    pub tenant_id: Option<String>,
    /// The application's (or user-assigned identity's) client id.
    pub client_id: Option<String>,
    /// A user-assigned managed identity (by object or resource id; by client id through
    /// `client_id` with mode managed-identity).
    pub managed_identity: Option<ManagedId>,
    /// The federated token file of workload identity.
    pub federated_token_file: Option<PathBuf>,
    /// Where the client secret is.
    pub client_secret: Option<SecretSource>,
    /// A PEM (certificate and private key) or PFX file.
    pub client_certificate_file: Option<PathBuf>,
    /// Where the certificate's password is, if it has one.
    pub client_certificate_password: Option<SecretSource>,
    /// AKS's azure.json.
    pub azure_json: PathBuf,
}

impl Default for AuthSettings {
    fn default() -> Self {
        Self {
            mode: AuthMode::Auto,
            tenant_id: None,
            client_id: None,
            managed_identity: None,
            federated_token_file: None,
            client_secret: None,
            client_certificate_file: None,
            client_certificate_password: None,
            azure_json: PathBuf::from(DEFAULT_AZURE_JSON),
        }
    }
}

/// The environment authentication reads: the process's, or a fixed set for tests.
#[derive(Clone, Default)]
pub struct AzureEnv {
    fixed: Option<Arc<HashMap<String, String>>>,
}

impl AzureEnv {
    /// The process environment, read when asked.
    pub fn process() -> Self {
        Self { fixed: None }
    }

    /// Exactly these variables and no others (PATH included: without it `az` is not found).
    pub fn from_pairs(pairs: &[(&str, &str)]) -> Self {
        Self {
            fixed: Some(Arc::new(
                pairs
                    .iter()
                    .map(|(name, value)| ((*name).to_owned(), (*value).to_owned()))
                    .collect(),
            )),
        }
    }

    /// A variable's value, if set and not empty.
    pub fn var(&self, name: &str) -> Option<String> {
        match &self.fixed {
            Some(vars) => vars.get(name).cloned(),
            None => std::env::var(name).ok(),
        }
        .filter(|value| !value.is_empty())
    }

    fn var_secret(&self, name: &str) -> Option<Zeroizing<String>> {
        self.var(name).map(Zeroizing::new)
    }

    /// Whether an executable `program` is on PATH.
    fn on_path(&self, program: &str) -> bool {
        use std::os::unix::fs::PermissionsExt;
        self.var("PATH").is_some_and(|path| {
            std::env::split_paths(&path).any(|dir| {
                std::fs::metadata(dir.join(program))
                    .is_ok_and(|meta| meta.is_file() && meta.permissions().mode() & 0o111 != 0)
            })
        })
    }
}

impl fmt::Debug for AzureEnv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.fixed {
            None => f.write_str("AzureEnv(process)"),
            Some(vars) => f
                .debug_tuple("AzureEnv")
                .field(&vars.keys().collect::<Vec<_>>())
                .finish(),
        }
    }
}

/// An authentication mode with everything it needs, secrets included.
pub enum ResolvedAuth {
    /// Workload identity.
    WorkloadIdentity {
        /// Tenant.
        tenant_id: String,
        /// Client id.
        client_id: String,
        /// The projected service account token, re-read by the SDK on every token request.
        token_file: PathBuf,
    },
    /// A managed identity.
    ManagedIdentity {
        /// Which.
        id: ManagedId,
    },
    /// A client secret.
    ClientSecret {
        /// Tenant.
        tenant_id: String,
        /// Client id.
        client_id: String,
        /// The secret.
        secret: Zeroizing<String>,
    },
    /// A client certificate, as PKCS#12.
    ClientCertificate {
        /// Tenant.
        tenant_id: String,
        /// Client id.
        client_id: String,
        /// The PKCS#12 bundle (certificate and private key).
        pkcs12: Zeroizing<Vec<u8>>,
        /// Its password.
        password: Zeroizing<String>,
    },
    /// The Azure CLI's login.
    AzureCli {
        /// A tenant to ask for, if configured.
        tenant_id: Option<String>,
    },
}

impl fmt::Debug for ResolvedAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// The result of resolution: the mode, why it was chosen, and what it implies for the cloud.
#[derive(Debug)]
pub struct Resolution {
    /// The credential to build.
    pub auth: ResolvedAuth,
    /// How it was chosen, for the start-up log: "azure.auth", "detected AZURE_FEDERATED_TOKEN_FILE"…
    pub chosen_by: String,
    /// The cloud azure.json names, when azure.json was used.
    pub cloud: Option<CloudName>,
    /// The authority AZURE_AUTHORITY_HOST names, for workload identity.
    pub authority_host: Option<String>,
}

impl ResolvedAuth {
    /// The mode and its non-secret parameters, for logs.
    pub fn describe(&self) -> String {
        match self {
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => format!(
                "workload identity (client {client_id}, tenant {tenant_id}, token file {})",
                token_file.display()
            ),
            Self::ManagedIdentity { id } => match id {
                ManagedId::System => "system-assigned managed identity".to_owned(),
                ManagedId::ClientId(id) => {
                    format!("user-assigned managed identity (client id {id})")
                }
                ManagedId::ObjectId(id) => {
                    format!("user-assigned managed identity (object id {id})")
                }
                ManagedId::ResourceId(id) => format!("user-assigned managed identity ({id})"),
            },
            Self::ClientSecret {
                tenant_id,
                client_id,
                ..
            } => format!("client secret (client {client_id}, tenant {tenant_id})"),
            Self::ClientCertificate {
                tenant_id,
                client_id,
                ..
            } => format!("client certificate (client {client_id}, tenant {tenant_id})"),
            Self::AzureCli { .. } => "the Azure CLI's login (development only)".to_owned(),
        }
    }

    /// The SDK credential, sending through `options` (our transport, no SDK retries, the
    /// cloud's authority), or through `identity_options` (no proxy, plain HTTP allowed) for a
    /// managed identity.
    pub fn credential(
        &self,
        options: &ClientOptions,
        identity_options: &ClientOptions,
    ) -> Result<Credential, Error> {
        let failed = |error: azure_core::Error| Error::Misconfigured {
            reason: format!("cannot set up {}: {error}", self.describe()),
        };
        let credential: Arc<dyn TokenCredential> = match self {
            Self::WorkloadIdentity {
                tenant_id,
                client_id,
                token_file,
            } => WorkloadIdentityCredential::new(Some(WorkloadIdentityCredentialOptions {
                credential_options: ClientAssertionCredentialOptions {
                    client_options: options.clone(),
                },
                client_id: Some(client_id.clone()),
                tenant_id: Some(tenant_id.clone()),
                token_file_path: Some(token_file.clone()),
            }))
            .map_err(failed)?,
            Self::ManagedIdentity { id } => {
                let user_assigned_id = match id {
                    ManagedId::System => None,
                    ManagedId::ClientId(id) => Some(UserAssignedId::ClientId(id.clone())),
                    ManagedId::ObjectId(id) => Some(UserAssignedId::ObjectId(id.clone())),
                    ManagedId::ResourceId(id) => Some(UserAssignedId::ResourceId(id.clone())),
                };
                ManagedIdentityCredential::new(Some(ManagedIdentityCredentialOptions {
                    user_assigned_id,
                    client_options: identity_options.clone(),
                }))
                .map_err(failed)?
            }
            Self::ClientSecret {
                tenant_id,
                client_id,
                secret,
            } => ClientSecretCredential::new(
                tenant_id,
                client_id.clone(),
                Secret::new(secret.as_str().to_owned()),
                Some(ClientSecretCredentialOptions {
                    client_options: options.clone(),
                }),
            )
            .map_err(failed)?,
            Self::ClientCertificate {
                tenant_id,
                client_id,
                pkcs12,
                password,
            } => ClientCertificateCredential::new(
                tenant_id.clone(),
                client_id.clone(),
                SecretBytes::new(pkcs12.to_vec()),
                Some(ClientCertificateCredentialOptions {
                    client_options: options.clone(),
                    password: Some(Secret::new(password.as_str().to_owned())),
                }),
            )
            .map_err(failed)?,
            Self::AzureCli { tenant_id } => {
                AzureCliCredential::new(Some(AzureCliCredentialOptions {
                    tenant_id: tenant_id.clone(),
                    ..Default::default()
                }))
                .map_err(failed)?
            }
        };
        Ok(Credential::new(credential, self.describe()))
    }
}

fn misconfigured(reason: String) -> Error {
    Error::Misconfigured { reason }
}

/// Chooses the authentication mode from `settings` and `env` (see the module documentation for
/// the detection order) and reads the secrets it needs.
pub fn resolve(settings: &AuthSettings, env: &AzureEnv) -> Result<Resolution, Error> {
    let explicit = |auth: ResolvedAuth| Resolution {
        auth,
        chosen_by: "azure.auth".to_owned(),
        cloud: None,
        authority_host: None,
    };
    match settings.mode {
        AuthMode::WorkloadIdentity => {
            let token_file = federated_token_file(settings, env).ok_or_else(|| {
                misconfigured(
                    "azure.auth is workload-identity but no token file is given: set \
                     azure.federated_token_file or AZURE_FEDERATED_TOKEN_FILE"
                        .to_owned(),
                )
            })?;
            Ok(Resolution {
                authority_host: env.var(AZURE_AUTHORITY_HOST),
                ..explicit(workload_identity(settings, env, token_file)?)
            })
        }
        AuthMode::ManagedIdentity => Ok(explicit(ResolvedAuth::ManagedIdentity {
            id: managed_id(settings).unwrap_or(ManagedId::System),
        })),
        AuthMode::ClientSecret => {
            let source = secret_source(settings, env).ok_or_else(|| {
                misconfigured(
                    "azure.auth is client-secret but no secret is given: set \
                     azure.client_secret_file or azure.client_secret_env"
                        .to_owned(),
                )
            })?;
            Ok(explicit(client_secret(settings, env, &source)?))
        }
        AuthMode::ClientCertificate => {
            let path = certificate_file(settings, env).ok_or_else(|| {
                misconfigured(
                    "azure.auth is client-certificate but no certificate is given: set \
                     azure.client_certificate_file"
                        .to_owned(),
                )
            })?;
            Ok(explicit(client_certificate(settings, env, &path)?))
        }
        AuthMode::AzureCli => Ok(explicit(ResolvedAuth::AzureCli {
            tenant_id: settings.tenant_id.clone(),
        })),
        AuthMode::AzureJson => from_azure_json(settings, env, "azure.auth".to_owned()),
        AuthMode::Auto => detect(settings, env),
    }
}

fn detect(settings: &AuthSettings, env: &AzureEnv) -> Result<Resolution, Error> {
    let detected = |auth: ResolvedAuth, why: &str| Resolution {
        auth,
        chosen_by: format!("detected {why}"),
        cloud: None,
        authority_host: None,
    };
    if let Some(token_file) = federated_token_file(settings, env) {
        let why = if settings.federated_token_file.is_some() {
            "azure.federated_token_file"
        } else {
            AZURE_FEDERATED_TOKEN_FILE
        };
        return Ok(Resolution {
            authority_host: env.var(AZURE_AUTHORITY_HOST),
            ..detected(workload_identity(settings, env, token_file)?, why)
        });
    }
    if let Some(id) = managed_id(settings) {
        return Ok(detected(
            ResolvedAuth::ManagedIdentity { id },
            "azure.managed_identity_*",
        ));
    }
    if env.var(IDENTITY_ENDPOINT).is_some() && env.var(IDENTITY_HEADER).is_some() {
        let id = match &settings.client_id {
            Some(client_id) => ManagedId::ClientId(client_id.clone()),
            None => ManagedId::System,
        };
        return Ok(detected(
            ResolvedAuth::ManagedIdentity { id },
            "IDENTITY_ENDPOINT (a managed identity endpoint)",
        ));
    }
    if let Some(source) = secret_source(settings, env) {
        let why = source.to_string();
        return Ok(detected(client_secret(settings, env, &source)?, &why));
    }
    if let Some(path) = certificate_file(settings, env) {
        let why = format!("client certificate {}", path.display());
        return Ok(detected(client_certificate(settings, env, &path)?, &why));
    }
    if env.on_path("az") {
        return Ok(detected(
            ResolvedAuth::AzureCli {
                tenant_id: settings.tenant_id.clone(),
            },
            "the Azure CLI on PATH",
        ));
    }
    if settings.azure_json.exists() {
        return from_azure_json(
            settings,
            env,
            format!("detected {}", settings.azure_json.display()),
        );
    }
    Err(misconfigured(format!(
        "no Azure credentials found. Set azure.auth ({}) or provide one of: a federated token \
         file (AZURE_FEDERATED_TOKEN_FILE), a managed identity (azure.auth: managed-identity, \
         or azure.managed_identity_object_id / _resource_id), a client secret \
         (azure.client_secret_file), a client certificate (azure.client_certificate_file), an \
         Azure CLI login, or {}",
        AuthMode::ACCEPTED,
        settings.azure_json.display()
    )))
}

fn federated_token_file(settings: &AuthSettings, env: &AzureEnv) -> Option<PathBuf> {
    settings
        .federated_token_file
        .clone()
        .or_else(|| env.var(AZURE_FEDERATED_TOKEN_FILE).map(PathBuf::from))
}

fn managed_id(settings: &AuthSettings) -> Option<ManagedId> {
    settings.managed_identity.clone().or_else(|| {
        (settings.mode == AuthMode::ManagedIdentity)
            .then(|| settings.client_id.clone().map(ManagedId::ClientId))
            .flatten()
    })
}

fn secret_source(settings: &AuthSettings, env: &AzureEnv) -> Option<SecretSource> {
    settings.client_secret.clone().or_else(|| {
        env.var(AZURE_CLIENT_SECRET)
            .map(|_| SecretSource::Env(AZURE_CLIENT_SECRET.to_owned()))
    })
}

fn certificate_file(settings: &AuthSettings, env: &AzureEnv) -> Option<PathBuf> {
    settings
        .client_certificate_file
        .clone()
        .or_else(|| env.var(AZURE_CLIENT_CERTIFICATE_PATH).map(PathBuf::from))
}

/// The tenant and client ids: from the settings, else AZURE_TENANT_ID / AZURE_CLIENT_ID.
fn identity(
    settings: &AuthSettings,
    env: &AzureEnv,
    mode: &str,
) -> Result<(String, String), Error> {
    let tenant_id = settings
        .tenant_id
        .clone()
        .or_else(|| env.var(AZURE_TENANT_ID))
        .ok_or_else(|| {
            misconfigured(format!(
                "{mode} needs a tenant id: set azure.tenant_id or {AZURE_TENANT_ID}"
            ))
        })?;
    let client_id = settings
        .client_id
        .clone()
        .or_else(|| env.var(AZURE_CLIENT_ID))
        .ok_or_else(|| {
            misconfigured(format!(
                "{mode} needs a client id: set azure.client_id or {AZURE_CLIENT_ID}"
            ))
        })?;
    Ok((tenant_id, client_id))
}

fn workload_identity(
    settings: &AuthSettings,
    env: &AzureEnv,
    token_file: PathBuf,
) -> Result<ResolvedAuth, Error> {
    let (tenant_id, client_id) = identity(settings, env, "workload identity")?;
    Ok(ResolvedAuth::WorkloadIdentity {
        tenant_id,
        client_id,
        token_file,
    })
}

fn client_secret(
    settings: &AuthSettings,
    env: &AzureEnv,
    source: &SecretSource,
) -> Result<ResolvedAuth, Error> {
    let (tenant_id, client_id) = identity(settings, env, "a client secret")?;
    Ok(ResolvedAuth::ClientSecret {
        tenant_id,
        client_id,
        secret: read_secret(source, env, "client secret")?,
    })
}

fn client_certificate(
    settings: &AuthSettings,
    env: &AzureEnv,
    path: &Path,
) -> Result<ResolvedAuth, Error> {
    let (tenant_id, client_id) = identity(settings, env, "a client certificate")?;
    let password = match &settings.client_certificate_password {
        Some(source) => Some(read_secret(source, env, "certificate password")?),
        None => env.var_secret(AZURE_CLIENT_CERTIFICATE_PASSWORD),
    };
    let (pkcs12, password) = load_certificate(path, password)?;
    Ok(ResolvedAuth::ClientCertificate {
        tenant_id,
        client_id,
        pkcs12,
        password,
    })
}

fn from_azure_json(
    settings: &AuthSettings,
    env: &AzureEnv,
    chosen_by: String,
) -> Result<Resolution, Error> {
    let path = &settings.azure_json;
    let file = AzureJson::read(path).map_err(misconfigured)?;
    let cloud = match AzureJson::text(&file.cloud) {
        None => None,
        Some(name) => Some(CloudName::parse(name).ok_or_else(|| {
            misconfigured(format!(
                "{} names cloud {name:?}; kube-kms knows {}",
                path.display(),
                CloudName::ACCEPTED
            ))
        })?),
    };
    let field = |name: &str| {
        misconfigured(format!(
            "{} chooses this authentication but has no {name}",
            path.display()
        ))
    };
    let tenant_id = || {
        AzureJson::text(&file.tenant_id)
            .map(str::to_owned)
            .or_else(|| settings.tenant_id.clone())
            .ok_or_else(|| field("tenantId"))
    };
    let client_id = AzureJson::text(&file.aad_client_id)
        .filter(|id| !id.eq_ignore_ascii_case("msi"))
        .map(str::to_owned);
    let mut authority_host = None;
    let auth = if file.use_federated_workload_identity_extension == Some(true) {
        let token_file = file
            .aad_federated_token_file
            .clone()
            .filter(|path| !path.as_os_str().is_empty())
            .or_else(|| federated_token_file(settings, env))
            .ok_or_else(|| field("aadFederatedTokenFile"))?;
        authority_host = env.var(AZURE_AUTHORITY_HOST);
        ResolvedAuth::WorkloadIdentity {
            tenant_id: tenant_id()?,
            client_id: client_id.ok_or_else(|| field("aadClientId"))?,
            token_file,
        }
    } else if file.use_managed_identity_extension == Some(true) {
        let id = match AzureJson::text(&file.user_assigned_identity_id) {
            None => ManagedId::System,
            Some(id) if id.starts_with('/') => ManagedId::ResourceId(id.to_owned()),
            Some(id) => ManagedId::ClientId(id.to_owned()),
        };
        ResolvedAuth::ManagedIdentity { id }
    } else if let Some(secret) = &file.aad_client_secret {
        ResolvedAuth::ClientSecret {
            tenant_id: tenant_id()?,
            client_id: client_id.ok_or_else(|| field("aadClientId"))?,
            secret: secret.clone(),
        }
    } else if let Some(cert) = file
        .aad_client_cert_path
        .as_ref()
        .filter(|path| !path.as_os_str().is_empty())
    {
        let (pkcs12, password) = load_certificate(cert, file.aad_client_cert_password.clone())?;
        ResolvedAuth::ClientCertificate {
            tenant_id: tenant_id()?,
            client_id: client_id.ok_or_else(|| field("aadClientId"))?,
            pkcs12,
            password,
        }
    } else {
        return Err(misconfigured(format!(
            "{} sets none of useFederatedWorkloadIdentityExtension, \
             useManagedIdentityExtension, aadClientSecret or aadClientCertPath",
            path.display()
        )));
    };
    Ok(Resolution {
        auth,
        chosen_by: format!("{chosen_by} ({})", path.display()),
        cloud,
        authority_host,
    })
}

/// Reads a secret from a file (one trailing newline ignored) or a variable. Errors name the
/// source, never the contents. A file is read into one buffer sized up front, which becomes the
/// returned String: no reallocation or second copy leaves the secret behind in freed memory.
pub fn read_secret(
    source: &SecretSource,
    env: &AzureEnv,
    what: &str,
) -> Result<Zeroizing<String>, Error> {
    let text = match source {
        SecretSource::File(path) => {
            let file = std::fs::File::open(path).map_err(|error| {
                misconfigured(format!("cannot open the {what} {source}: {error}"))
            })?;
            // Two bytes over the limit: room for a CRLF, and enough to tell a longer file.
            let mut bytes = read_at_most(file, MAX_SECRET_LEN + 2).map_err(|error| {
                misconfigured(format!("cannot read the {what} {source}: {error}"))
            })?;
            let trimmed = bytes
                .strip_suffix(b"\r\n")
                .or_else(|| bytes.strip_suffix(b"\n"))
                .map_or(bytes.len(), <[u8]>::len);
            bytes.truncate(trimmed);
            // from_utf8 keeps the buffer; on failure the buffer comes back to be zeroized.
            match String::from_utf8(std::mem::take(&mut *bytes)) {
                Ok(text) => Zeroizing::new(text),
                Err(error) => {
                    drop(Zeroizing::new(error.into_bytes()));
                    return Err(misconfigured(format!(
                        "the {what} {source} is not UTF-8 text"
                    )));
                }
            }
        }
        SecretSource::Env(name) => env
            .var_secret(name)
            .ok_or_else(|| misconfigured(format!("the {what} {source} is not set or empty")))?,
    };
    if text.is_empty() || text.len() > MAX_SECRET_LEN {
        return Err(misconfigured(format!(
            "the {what} {source} holds {} bytes; expected 1 to {MAX_SECRET_LEN}",
            text.len()
        )));
    }
    Ok(text)
}

/// Reads at most `limit` bytes of `file` into a zeroizing buffer allocated once at that size and
/// never grown (`read_to_end` would reallocate as it goes, leaving unwiped copies behind).
fn read_at_most(mut file: std::fs::File, limit: usize) -> std::io::Result<Zeroizing<Vec<u8>>> {
    use std::io::Read;
    let mut buffer = Zeroizing::new(vec![0u8; limit]);
    let mut filled = 0;
    while filled < limit {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(read) => filled += read,
            Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    buffer.truncate(filled);
    Ok(buffer)
}

/// Loads a client certificate as the PKCS#12 bundle the SDK takes: a PFX file as it is
/// (checked to open with `password`), or a PEM file with the certificate (and any chain) and
/// its RSA private key, possibly encrypted with `password`, repacked in memory.
pub fn load_certificate(
    path: &Path,
    password: Option<Zeroizing<String>>,
) -> Result<(Zeroizing<Vec<u8>>, Zeroizing<String>), Error> {
    use openssl::pkcs12::Pkcs12;
    use openssl::pkey::PKey;
    use openssl::stack::Stack;
    use openssl::x509::X509;

    let name = path.display();
    let file = std::fs::File::open(path).map_err(|error| {
        misconfigured(format!("cannot open client certificate {name}: {error}"))
    })?;
    let bytes = read_at_most(file, MAX_CERTIFICATE_LEN).map_err(|error| {
        misconfigured(format!("cannot read client certificate {name}: {error}"))
    })?;
    let password = password.unwrap_or_default();
    if !bytes.windows(11).any(|window| window == b"-----BEGIN ") {
        let parsed = Pkcs12::from_der(&bytes)
            .and_then(|pfx| pfx.parse2(&password))
            .map_err(|_| {
                misconfigured(format!(
                    "client certificate {name} is neither PEM nor a PFX/PKCS#12 file that opens \
                     with the configured password"
                ))
            })?;
        if parsed.pkey.is_none() || parsed.cert.is_none() {
            return Err(misconfigured(format!(
                "PFX file {name} must hold a certificate and its private key"
            )));
        }
        return Ok((bytes, password));
    }
    let mut certificates = X509::stack_from_pem(&bytes)
        .map_err(|_| {
            misconfigured(format!(
                "client certificate {name} holds no PEM certificate"
            ))
        })?
        .into_iter();
    let certificate = certificates.next().ok_or_else(|| {
        misconfigured(format!(
            "client certificate {name} holds no PEM certificate"
        ))
    })?;
    let key = if password.is_empty() {
        PKey::private_key_from_pem(&bytes)
    } else {
        PKey::private_key_from_pem_passphrase(&bytes, password.as_bytes())
    }
    .map_err(|_| {
        misconfigured(format!(
            "client certificate {name} holds no PEM private key (or the password does not \
             open it)"
        ))
    })?;
    if key.rsa().is_err() {
        return Err(misconfigured(format!(
            "the private key in {name} is not RSA; Entra ID certificate credentials need RSA"
        )));
    }
    let key_matches = certificate
        .public_key()
        .map(|public| public.public_eq(&key))
        .unwrap_or(false);
    if !key_matches {
        return Err(misconfigured(format!(
            "the private key in {name} does not belong to its first certificate"
        )));
    }
    let mut chain = Stack::new().map_err(|_| misconfigured("OpenSSL failed".to_owned()))?;
    for ca in certificates {
        chain
            .push(ca)
            .map_err(|_| misconfigured("OpenSSL failed".to_owned()))?;
    }
    let bundle = Pkcs12::builder()
        .name("kube-kms")
        .pkey(&key)
        .cert(&certificate)
        .ca(chain)
        .build2(&password)
        .and_then(|pfx| pfx.to_der())
        .map_err(|_| misconfigured(format!("cannot repack client certificate {name}")))?;
    Ok((Zeroizing::new(bundle), password))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TENANT: &str = "72f988bf-86f1-41af-91ab-2d7cd011db47";
    const CLIENT: &str = "0b3c4e1a-0000-4000-8000-000000000001";

    fn settings() -> AuthSettings {
        AuthSettings {
            azure_json: PathBuf::from("/nonexistent/azure.json"),
            ..AuthSettings::default()
        }
    }

    fn kind(resolution: &Resolution) -> &'static str {
        match resolution.auth {
            ResolvedAuth::WorkloadIdentity { .. } => "workload-identity",
            ResolvedAuth::ManagedIdentity { .. } => "managed-identity",
            ResolvedAuth::ClientSecret { .. } => "client-secret",
            ResolvedAuth::ClientCertificate { .. } => "client-certificate",
            ResolvedAuth::AzureCli { .. } => "azure-cli",
        }
    }

    /// Regression: the file was read into a Vec that grew while reading (each reallocation left
    /// an unwiped copy of what had been read so far) and was then copied once more into the
    /// String returned. Now it is read into one buffer sized up front, which is the String
    /// returned.
    #[test]
    fn read_secret_returns_the_file_trimmed_in_the_buffer_it_was_read_into() {
        let dir = tempfile::tempdir().unwrap();
        let env = AzureEnv::from_pairs(&[]);
        let read = |contents: &[u8]| {
            let path = dir.path().join("secret");
            std::fs::write(&path, contents).unwrap();
            read_secret(&SecretSource::File(path), &env, "client secret")
        };
        let long = "x".repeat(MAX_SECRET_LEN);
        for (contents, expected) in [
            ("s3cret\n", "s3cret"),
            ("s3cret\r\n", "s3cret"),
            ("s3cret", "s3cret"),
            ("two\n\n", "two\n"),
            (" spaced ", " spaced "),
            (long.as_str(), long.as_str()),
        ] {
            let secret = read(contents.as_bytes()).unwrap();
            assert_eq!(secret.as_str(), expected, "{contents:?}");
            assert_eq!(secret.capacity(), MAX_SECRET_LEN + 2, "{contents:?}");
        }
        for refused in [&b""[..], b"\n", &[b'x'; MAX_SECRET_LEN + 1], &[0xff, 0xfe]] {
            assert!(read(refused).is_err(), "{} bytes", refused.len());
        }
        let large = format!("{}\n{}", "x".repeat(MAX_SECRET_LEN), "y".repeat(100_000));
        let error = read(large.as_bytes()).unwrap_err().to_string();
        assert!(!error.contains("xxx"), "{error}");
    }

    #[test]
    fn detection_follows_the_documented_order() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "s3cret\n").unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        let az = bin.join("az");
        std::fs::write(&az, "#!/bin/sh\n").unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = bin.display().to_string();

        let everything = [
            (
                AZURE_FEDERATED_TOKEN_FILE,
                "/var/run/secrets/azure/tokens/token",
            ),
            (AZURE_CLIENT_ID, CLIENT),
            (AZURE_TENANT_ID, TENANT),
            (AZURE_AUTHORITY_HOST, "https://login.example"),
            (IDENTITY_ENDPOINT, "http://127.0.0.1:1/msi/token"),
            (IDENTITY_HEADER, "h"),
            (AZURE_CLIENT_SECRET, "from-env"),
            ("PATH", path.as_str()),
        ];
        let mut env: Vec<(&str, &str)> = everything.to_vec();
        let resolved = resolve(&settings(), &AzureEnv::from_pairs(&env)).unwrap();
        assert_eq!(kind(&resolved), "workload-identity");
        assert_eq!(
            resolved.authority_host.as_deref(),
            Some("https://login.example")
        );

        env.retain(|(name, _)| *name != AZURE_FEDERATED_TOKEN_FILE);
        let resolved = resolve(&settings(), &AzureEnv::from_pairs(&env)).unwrap();
        assert_eq!(kind(&resolved), "managed-identity");

        env.retain(|(name, _)| *name != IDENTITY_ENDPOINT);
        let resolved = resolve(&settings(), &AzureEnv::from_pairs(&env)).unwrap();
        assert_eq!(kind(&resolved), "client-secret");
        match &resolved.auth {
            ResolvedAuth::ClientSecret { secret, .. } => assert_eq!(secret.as_str(), "from-env"),
            _ => unreachable!(),
        }
        // A configured secret file wins over the variable; the file's newline is dropped.
        let with_file = AuthSettings {
            client_secret: Some(SecretSource::File(secret.clone())),
            ..settings()
        };
        match resolve(&with_file, &AzureEnv::from_pairs(&env))
            .unwrap()
            .auth
        {
            ResolvedAuth::ClientSecret { secret, .. } => assert_eq!(secret.as_str(), "s3cret"),
            other => panic!("{other:?}"),
        }

        env.retain(|(name, _)| *name != AZURE_CLIENT_SECRET);
        let resolved = resolve(&settings(), &AzureEnv::from_pairs(&env)).unwrap();
        assert_eq!(kind(&resolved), "azure-cli");

        let no_path: Vec<_> = env.iter().copied().filter(|(n, _)| *n != "PATH").collect();
        let error = resolve(&settings(), &AzureEnv::from_pairs(&no_path))
            .unwrap_err()
            .to_string();
        assert!(error.contains("no Azure credentials found"), "{error}");

        let json = dir.path().join("azure.json");
        std::fs::write(
            &json,
            format!(
                r#"{{"cloud":"AzureUSGovernmentCloud","tenantId":"{TENANT}","aadClientId":"{CLIENT}","aadClientSecret":"json-secret"}}"#
            ),
        )
        .unwrap();
        let aks = AuthSettings {
            azure_json: json,
            ..settings()
        };
        let resolved = resolve(&aks, &AzureEnv::from_pairs(&no_path)).unwrap();
        assert_eq!(kind(&resolved), "client-secret");
        assert_eq!(resolved.cloud, Some(CloudName::UsGovernment));
        assert!(
            resolved.chosen_by.contains("azure.json"),
            "{}",
            resolved.chosen_by
        );
        assert!(!format!("{resolved:?}").contains("json-secret"));
    }

    #[test]
    fn azure_json_picks_managed_identity_and_workload_identity() {
        let dir = tempfile::tempdir().unwrap();
        let json = dir.path().join("azure.json");
        let aks = AuthSettings {
            mode: AuthMode::AzureJson,
            azure_json: json.clone(),
            ..settings()
        };
        let env = AzureEnv::from_pairs(&[]);
        for (text, expected) in [
            (
                r#"{"useManagedIdentityExtension": true, "aadClientId": "msi"}"#.to_owned(),
                ManagedId::System,
            ),
            (
                format!(r#"{{"useManagedIdentityExtension": true, "userAssignedIdentityID": "{CLIENT}"}}"#),
                ManagedId::ClientId(CLIENT.into()),
            ),
            (
                r#"{"useManagedIdentityExtension": true, "userAssignedIdentityID": "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kms"}"#.to_owned(),
                ManagedId::ResourceId("/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kms".into()),
            ),
        ] {
            std::fs::write(&json, text).unwrap();
            match resolve(&aks, &env).unwrap().auth {
                ResolvedAuth::ManagedIdentity { id } => assert_eq!(id, expected),
                other => panic!("{other:?}"),
            }
        }
        std::fs::write(
            &json,
            format!(
                r#"{{"useFederatedWorkloadIdentityExtension": true, "aadFederatedTokenFile": "/t", "tenantId": "{TENANT}", "aadClientId": "{CLIENT}"}}"#
            ),
        )
        .unwrap();
        match resolve(&aks, &env).unwrap().auth {
            ResolvedAuth::WorkloadIdentity { token_file, .. } => {
                assert_eq!(token_file, PathBuf::from("/t"));
            }
            other => panic!("{other:?}"),
        }
        std::fs::write(&json, r#"{"tenantId": "t"}"#).unwrap();
        let error = resolve(&aks, &env).unwrap_err().to_string();
        assert!(error.contains("useManagedIdentityExtension"), "{error}");
    }

    #[test]
    fn explicit_modes_say_what_is_missing() {
        let env = AzureEnv::from_pairs(&[]);
        for (mode, expected) in [
            (AuthMode::WorkloadIdentity, "AZURE_FEDERATED_TOKEN_FILE"),
            (AuthMode::ClientSecret, "azure.client_secret_file"),
            (AuthMode::ClientCertificate, "azure.client_certificate_file"),
        ] {
            let settings = AuthSettings { mode, ..settings() };
            let error = resolve(&settings, &env).unwrap_err().to_string();
            assert!(error.contains(expected), "{mode:?}: {error}");
        }
        let settings = AuthSettings {
            mode: AuthMode::ClientSecret,
            client_secret: Some(SecretSource::Env("KUBE_KMS_TEST_SECRET".into())),
            tenant_id: Some(TENANT.into()),
            ..settings()
        };
        let error = resolve(
            &settings,
            &AzureEnv::from_pairs(&[("KUBE_KMS_TEST_SECRET", "x")]),
        )
        .unwrap_err()
        .to_string();
        assert!(error.contains("azure.client_id"), "{error}");
        let settings = AuthSettings {
            mode: AuthMode::ManagedIdentity,
            ..settings
        };
        match resolve(&settings, &env).unwrap().auth {
            ResolvedAuth::ManagedIdentity { id } => assert_eq!(id, ManagedId::System),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pem_and_pfx_certificates_load_and_a_wrong_password_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let rsa = openssl::rsa::Rsa::generate(2048).unwrap();
        let key = openssl::pkey::PKey::from_rsa(rsa).unwrap();
        let mut name = openssl::x509::X509NameBuilder::new().unwrap();
        name.append_entry_by_text("CN", "kube-kms").unwrap();
        let name = name.build();
        let mut builder = openssl::x509::X509::builder().unwrap();
        builder.set_subject_name(&name).unwrap();
        builder.set_issuer_name(&name).unwrap();
        builder.set_pubkey(&key).unwrap();
        builder
            .set_not_before(&openssl::asn1::Asn1Time::days_from_now(0).unwrap())
            .unwrap();
        builder
            .set_not_after(&openssl::asn1::Asn1Time::days_from_now(1).unwrap())
            .unwrap();
        builder
            .sign(&key, openssl::hash::MessageDigest::sha256())
            .unwrap();
        let cert = builder.build();

        let pem = dir.path().join("client.pem");
        let mut text = cert.to_pem().unwrap();
        text.extend(key.private_key_to_pem_pkcs8().unwrap());
        std::fs::write(&pem, &text).unwrap();
        let (bundle, password) = load_certificate(&pem, None).unwrap();
        let parsed = openssl::pkcs12::Pkcs12::from_der(&bundle)
            .unwrap()
            .parse2(&password)
            .unwrap();
        assert!(parsed.pkey.unwrap().public_eq(&key));

        let pfx = dir.path().join("client.pfx");
        let der = openssl::pkcs12::Pkcs12::builder()
            .name("x")
            .pkey(&key)
            .cert(&cert)
            .build2("pfx-pass")
            .unwrap()
            .to_der()
            .unwrap();
        std::fs::write(&pfx, der).unwrap();
        assert!(load_certificate(&pfx, Some(Zeroizing::new("pfx-pass".into()))).is_ok());
        let error = load_certificate(&pfx, Some(Zeroizing::new("wrong".into())))
            .unwrap_err()
            .to_string();
        assert!(
            error.contains("client.pfx") && !error.contains("wrong"),
            "{error}"
        );

        std::fs::write(&pem, cert.to_pem().unwrap()).unwrap();
        let error = load_certificate(&pem, None).unwrap_err().to_string();
        assert!(error.contains("no PEM private key"), "{error}");
    }
}
