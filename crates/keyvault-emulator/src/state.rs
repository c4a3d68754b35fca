//! The emulator's shared state and the control operations on it — the single implementation
//! behind the REST API, the admin HTTP API and the Rust API, so all three behave alike.
//!
//! Locks are plain mutexes held for short, synchronous sections only; key generation and
//! cryptography run after the lock is released. Code that holds several takes them in one
//! order — certificates, keys (`store`), secrets — and the directory and faults alone.

use std::collections::BTreeMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::b64;
use crate::certificates::Certificates;
use crate::crypto::KeyMaterial;
use crate::error::{EmulatorError, ServiceError};
use crate::faults::Faults;
use crate::identity::{Directory, Grant};
use crate::jwt;
use crate::model::{Curve, KeyOp, KeyType, VaultKind};
use crate::secrets::Secrets;
use crate::store::{KeyVersion, Store, valid_name};

/// Settings fixed at start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Key Vault or Managed HSM.
    pub kind: VaultKind,
    /// The emulated tenant.
    pub tenant_id: String,
    /// The token audience the vault accepts (no trailing slash).
    pub resource: String,
    /// The authority named in the challenge (`https://login.microsoftonline.com`).
    pub challenge_authority: String,
    /// Lifetime of issued tokens.
    pub token_lifetime: Duration,
    /// Page size of list operations when the client names none.
    pub page_size: usize,
    /// Soft-delete retention.
    pub retention_days: u32,
    /// The App Service `X-IDENTITY-HEADER` value.
    pub identity_header: String,
    /// `host:port` used when a request has no Host header, and by the Rust API.
    pub default_host: String,
    /// Where the CA certificate was written.
    pub ca_pem_path: std::path::PathBuf,
    /// `http://127.0.0.1:{port}` of the plain-HTTP identity listener, if one runs.
    pub imds_url: Option<String>,
}

/// Everything the listeners share.
pub struct Shared {
    /// Fixed settings.
    pub config: Config,
    store: Mutex<Store>,
    secrets: Mutex<Secrets>,
    certificates: Mutex<Certificates>,
    directory: Mutex<Directory>,
    faults: Mutex<Faults>,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Now, in unix seconds.
pub fn now_secs() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// What a new key looks like (admin API, Rust API and, parsed from the REST body, create).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySpec {
    /// The key type.
    pub kty: KeyType,
    /// Size in bits; the type's default when absent. For EC keys the curve's size (256, 384,
    /// 521) may stand for `crv`.
    #[serde(default)]
    pub size: Option<u32>,
    /// The curve of an EC key; P-256 when neither it nor `size` is given.
    #[serde(default)]
    pub crv: Option<Curve>,
    /// Key operations; the type's default when absent.
    #[serde(default)]
    pub key_ops: Option<Vec<KeyOp>>,
    /// Enabled (default true).
    #[serde(default)]
    pub enabled: Option<bool>,
    /// Not-before, unix seconds.
    #[serde(default)]
    pub nbf: Option<i64>,
    /// Expiry, unix seconds.
    #[serde(default)]
    pub exp: Option<i64>,
    /// Tags.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl KeySpec {
    /// An RSA key (software in Key Vault) of `bits`.
    pub fn rsa(bits: u32) -> Self {
        Self::of(KeyType::Rsa, bits)
    }

    /// An RSA-HSM key of `bits`.
    pub fn rsa_hsm(bits: u32) -> Self {
        Self::of(KeyType::RsaHsm, bits)
    }

    /// An oct-HSM (AES) key of `bits` (Managed HSM).
    pub fn oct_hsm(bits: u32) -> Self {
        Self::of(KeyType::OctHsm, bits)
    }

    /// A software EC key on `curve` (Key Vault).
    pub fn ec(curve: Curve) -> Self {
        Self {
            crv: Some(curve),
            ..Self::of(KeyType::Ec, u32::try_from(curve.bits()).unwrap_or(256))
        }
    }

    /// An EC-HSM key on `curve`.
    pub fn ec_hsm(curve: Curve) -> Self {
        Self::ec(curve).with_kty(KeyType::EcHsm)
    }

    /// The same spec with another key type.
    pub fn with_kty(mut self, kty: KeyType) -> Self {
        self.kty = kty;
        self
    }

    fn of(kty: KeyType, bits: u32) -> Self {
        Self {
            kty,
            size: Some(bits),
            crv: None,
            key_ops: None,
            enabled: None,
            nbf: None,
            exp: None,
            tags: BTreeMap::new(),
        }
    }
}

/// The curve of an EC spec: `crv`, else the curve of `size`, else P-256.
fn ec_curve(spec: &KeySpec) -> Result<Curve, ServiceError> {
    match (spec.crv, spec.size) {
        (Some(curve), _) => Ok(curve),
        (None, None) => Ok(Curve::P256),
        (None, Some(bits)) => Curve::of_size(bits).ok_or_else(|| {
            ServiceError::bad_parameter(format!(
                "The key size {bits} is not supported for key type {}.",
                spec.kty
            ))
        }),
    }
}

/// A change of a key version's attributes. `Some(None)` clears nbf / exp.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyUpdate {
    /// Enable or disable.
    pub enabled: Option<bool>,
    /// New not-before.
    pub nbf: Option<Option<i64>>,
    /// New expiry.
    pub exp: Option<Option<i64>>,
    /// New key operations.
    pub key_ops: Option<Vec<KeyOp>>,
    /// New tags.
    pub tags: Option<BTreeMap<String, String>>,
}

/// A public view of a key version, as tests read it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeyInfo {
    /// The name.
    pub name: String,
    /// The version.
    pub version: String,
    /// `https://{host}/keys/{name}/{version}`.
    pub kid: String,
    /// The key type.
    pub kty: KeyType,
    /// Size in bits.
    pub size: usize,
    /// Key operations.
    pub key_ops: Vec<KeyOp>,
    /// Enabled.
    pub enabled: bool,
    /// Not-before.
    pub nbf: Option<i64>,
    /// Expiry.
    pub exp: Option<i64>,
    /// RSA modulus, base64url.
    pub n: Option<String>,
    /// RSA public exponent, base64url.
    pub e: Option<String>,
    /// EC curve.
    pub crv: Option<Curve>,
    /// EC public x, base64url.
    pub x: Option<String>,
    /// EC public y, base64url.
    pub y: Option<String>,
}

impl KeyInfo {
    /// The view of `version` with kids on `host`.
    pub fn of(version: &KeyVersion, host: &str) -> Self {
        let (n, e) = version
            .material
            .rsa_public_parts()
            .map(|(n, e)| (Some(b64::encode(&n)), Some(b64::encode(&e))))
            .unwrap_or_default();
        let (crv, x, y) = version
            .material
            .ec_public_parts()
            .map(|(crv, x, y)| (Some(crv), Some(b64::encode(&x)), Some(b64::encode(&y))))
            .unwrap_or_default();
        Self {
            crv,
            x,
            y,
            name: version.name.clone(),
            version: version.version.clone(),
            kid: format!("https://{host}/keys/{}/{}", version.name, version.version),
            kty: version.kty,
            size: version.bits(),
            key_ops: version.key_ops.clone(),
            enabled: version.attributes.enabled,
            nbf: version.attributes.nbf,
            exp: version.attributes.exp,
            n,
            e,
        }
    }
}

/// A token handed out by Entra, IMDS or App Service.
pub struct IssuedToken {
    /// The bearer token.
    pub access_token: String,
    /// Seconds until expiry.
    pub expires_in: i64,
    /// Expiry, unix seconds.
    pub expires_on: i64,
    /// The resource it is for.
    pub resource: String,
}

impl Shared {
    /// New state with an empty vault and directory.
    pub fn new(config: Config) -> Self {
        Self {
            config,
            store: Mutex::new(Store::default()),
            secrets: Mutex::new(Secrets::default()),
            certificates: Mutex::new(Certificates::default()),
            directory: Mutex::new(Directory::default()),
            faults: Mutex::new(Faults::default()),
        }
    }

    /// The key store (take after [`Shared::certificates`], before [`Shared::secrets`]).
    pub fn store(&self) -> MutexGuard<'_, Store> {
        lock(&self.store)
    }

    /// The secrets (take after [`Shared::certificates`] and [`Shared::store`]).
    pub fn secrets(&self) -> MutexGuard<'_, Secrets> {
        lock(&self.secrets)
    }

    /// The certificates (take before [`Shared::store`] and [`Shared::secrets`]).
    pub fn certificates(&self) -> MutexGuard<'_, Certificates> {
        lock(&self.certificates)
    }

    /// The identity directory.
    pub fn directory(&self) -> MutexGuard<'_, Directory> {
        lock(&self.directory)
    }

    /// Faults and counters.
    pub fn faults(&self) -> MutexGuard<'_, Faults> {
        lock(&self.faults)
    }

    /// Validates a spec against the vault kind and generates its material (off the runtime).
    pub async fn generate(&self, name: &str, spec: &KeySpec) -> Result<KeyVersion, ServiceError> {
        if !valid_name(name) {
            return Err(ServiceError::bad_parameter(format!(
                "The key name '{name}' is invalid: use 1-127 characters 0-9, a-z, A-Z and -."
            )));
        }
        if !spec.kty.allowed_in(self.config.kind) {
            return Err(ServiceError::bad_parameter(format!(
                "Key type {} is not supported by this {}.",
                spec.kty,
                self.config.kind.noun()
            )));
        }
        let curve = if spec.kty.is_ec() {
            Some(ec_curve(spec)?)
        } else {
            None
        };
        let bits = match curve {
            Some(curve) => u32::try_from(curve.bits()).unwrap_or(256),
            None => spec.size.unwrap_or_else(|| spec.kty.default_size()),
        };
        if !spec.kty.sizes().contains(&bits) {
            return Err(ServiceError::bad_parameter(format!(
                "The key size {bits} is not supported for key type {}.",
                spec.kty
            )));
        }
        // Refuse a soft-deleted name before spending seconds on an RSA key.
        if self.store().get_deleted(name).is_ok() {
            return Err(ServiceError::deleted_but_recoverable(
                crate::model::ObjectKind::Key,
                name,
            ));
        }
        let kty = spec.kty;
        let material = tokio::task::spawn_blocking(move || match curve {
            Some(curve) => KeyMaterial::generate_ec(curve),
            None if kty.is_rsa() => KeyMaterial::generate_rsa(bits as usize),
            None => KeyMaterial::generate_oct(bits as usize),
        })
        .await
        .map_err(|_| ServiceError::bad_parameter("Key generation was interrupted."))??;
        let mut version = KeyVersion::new(
            name,
            spec.kty,
            material,
            spec.key_ops
                .clone()
                .unwrap_or_else(|| spec.kty.default_ops()),
            now_secs(),
        )?;
        version.attributes.enabled = spec.enabled.unwrap_or(true);
        version.attributes.nbf = spec.nbf;
        version.attributes.exp = spec.exp;
        version.tags = spec.tags.clone();
        Ok(version)
    }

    /// Creates a key (or a new version of an existing name).
    pub async fn create_key(&self, name: &str, spec: &KeySpec) -> Result<KeyVersion, ServiceError> {
        let version = self.generate(name, spec).await?;
        self.store().add_version(version)
    }

    /// Adds a new version with the latest version's type, size, operations and tags.
    pub async fn rotate_key(&self, name: &str) -> Result<KeyVersion, ServiceError> {
        let spec = {
            let store = self.store();
            let latest = store.get(name, None)?;
            KeySpec {
                kty: latest.kty,
                size: u32::try_from(latest.bits()).ok(),
                crv: latest.material.ec_public_parts().map(|(crv, _, _)| crv),
                key_ops: Some(latest.key_ops.clone()),
                enabled: None,
                nbf: None,
                exp: None,
                tags: latest.tags.clone(),
            }
        };
        self.create_key(name, &spec).await
    }

    /// Changes a version's attributes (`version` None or empty: the latest).
    pub fn update_key(
        &self,
        name: &str,
        version: Option<&str>,
        update: &KeyUpdate,
    ) -> Result<KeyVersion, ServiceError> {
        let mut store = self.store();
        let key = store.get_mut(name, version)?;
        if let Some(enabled) = update.enabled {
            key.attributes.enabled = enabled;
        }
        if let Some(nbf) = update.nbf {
            key.attributes.nbf = nbf;
        }
        if let Some(exp) = update.exp {
            key.attributes.exp = exp;
        }
        if let Some(ops) = &update.key_ops {
            key.key_ops = ops.clone();
        }
        if let Some(tags) = &update.tags {
            key.tags = tags.clone();
        }
        key.attributes.updated = now_secs();
        Ok(key.clone())
    }

    /// Issues a token to an identity for `resource`. Takes the directory's lock itself: call it
    /// without holding [`Shared::directory`].
    pub fn issue_token(
        &self,
        client_id: &str,
        object_id: &str,
        resource: &str,
    ) -> Result<IssuedToken, ServiceError> {
        let now = now_secs();
        let lifetime = i64::try_from(self.config.token_lifetime.as_secs()).unwrap_or(3600);
        let resource = resource.trim_end_matches('/').to_owned();
        let tenant = &self.config.tenant_id;
        let claims = json!({
            "aud": resource,
            "iss": format!("https://sts.windows.net/{tenant}/"),
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "appid": client_id,
            "oid": object_id,
            "sub": object_id,
            "tid": tenant,
            "ver": "1.0",
        });
        let access_token = jwt::mint(
            &json!({"typ": "JWT", "alg": "RS256", "kid": "emulator"}),
            &claims,
        )?;
        self.directory().record_token(
            access_token.clone(),
            Grant {
                client_id: client_id.to_owned(),
                resource: resource.clone(),
                expires_on: now + lifetime,
            },
        );
        Ok(IssuedToken {
            access_token,
            expires_in: lifetime,
            expires_on: now + lifetime,
            resource,
        })
    }

    /// Mints an external (federated) token for the identity's first federated credential:
    /// what a test writes to `AZURE_FEDERATED_TOKEN_FILE`.
    pub fn federated_token(&self, client_id: &str, lifetime: i64) -> Result<String, EmulatorError> {
        let directory = self.directory();
        let identity = directory
            .get(client_id)
            .ok_or_else(|| EmulatorError::UnknownIdentity(client_id.to_owned()))?;
        let credential = identity.federated.first().ok_or_else(|| {
            EmulatorError::InvalidRequest(format!(
                "identity {client_id} has no federated credential"
            ))
        })?;
        let now = now_secs();
        let claims = json!({
            "iss": credential.issuer,
            "sub": credential.subject,
            "aud": [credential.audience],
            "iat": now,
            "nbf": now,
            "exp": now + lifetime,
            "jti": crate::identity::new_guid(),
        });
        jwt::mint(
            &json!({"alg": "RS256", "typ": "JWT", "kid": "emulator-oidc"}),
            &claims,
        )
        .map_err(|e| EmulatorError::InvalidRequest(e.to_string()))
    }
}
