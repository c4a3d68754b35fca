//! The directory of identities: who may obtain tokens (client secret, client certificate,
//! federated credential, managed identity), what each may do with keys, secrets and
//! certificates (per-identity permissions), and the access tokens issued to them.
//!
//! Client secrets are stored in zeroizing strings and compared in constant time; no `Debug`
//! output shows a secret or a token.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;

use rsa::PublicKey;
use rsa::pkcs8::DecodePublicKey;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};
use sha1::Sha1;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use x509_cert::der::{Decode, Encode};
use zeroize::Zeroizing;

use crate::crypto::fill_random;
use crate::error::EmulatorError;
use crate::model::Permission;

/// How a managed identity is attached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ManagedKind {
    /// The system-assigned identity: answers IMDS requests that name no identity.
    SystemAssigned,
    /// A user-assigned identity: selected by client_id, object_id or msi_res_id / mi_res_id.
    UserAssigned,
}

/// A federated identity credential: which external tokens may be exchanged (workload identity).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FederatedCredential {
    /// The external token's `iss` (e.g. the cluster's OIDC issuer URL).
    pub issuer: String,
    /// The external token's `sub` (e.g. `system:serviceaccount:kube-system:kube-kms`).
    pub subject: String,
    /// The external token's `aud`; default `api://AzureADTokenExchange`.
    #[serde(default = "default_federated_audience")]
    pub audience: String,
}

fn default_federated_audience() -> String {
    "api://AzureADTokenExchange".to_owned()
}

/// What a test registers. Every field is optional; ids default to fresh GUIDs and permissions
/// to all key permissions.
#[derive(Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IdentitySpec {
    /// A label for messages.
    #[serde(default)]
    pub name: Option<String>,
    /// The application (client) id.
    #[serde(default)]
    pub client_id: Option<String>,
    /// The object (principal) id.
    #[serde(default)]
    pub object_id: Option<String>,
    /// A client secret the identity authenticates with.
    #[serde(default)]
    pub client_secret: Option<String>,
    /// A PEM certificate (RSA key) the identity authenticates with.
    #[serde(default)]
    pub certificate_pem: Option<String>,
    /// A federated credential (workload identity).
    #[serde(default)]
    pub federated: Option<FederatedCredential>,
    /// Makes the identity a managed identity served by IMDS / App Service.
    #[serde(default)]
    pub managed: Option<ManagedKind>,
    /// The ARM resource id of a user-assigned managed identity.
    #[serde(default)]
    pub resource_id: Option<String>,
    /// Key permissions; all when absent.
    #[serde(default)]
    pub permissions: Option<Vec<Permission>>,
}

impl fmt::Debug for IdentitySpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IdentitySpec")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("object_id", &self.object_id)
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("certificate_pem", &self.certificate_pem.is_some())
            .field("federated", &self.federated)
            .field("managed", &self.managed)
            .field("resource_id", &self.resource_id)
            .field("permissions", &self.permissions)
            .finish()
    }
}

/// A public view of a registered identity (no secrets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct IdentityInfo {
    /// The label.
    pub name: String,
    /// The application (client) id.
    pub client_id: String,
    /// The object (principal) id.
    pub object_id: String,
    /// The ARM resource id (managed identities).
    pub resource_id: Option<String>,
    /// Managed identity kind, if any.
    pub managed: Option<ManagedKind>,
    /// Key permissions.
    pub permissions: Vec<Permission>,
    /// How many client secrets are registered.
    pub secrets: usize,
    /// SHA-1 thumbprints (hex) of registered certificates.
    pub certificates: Vec<String>,
    /// Federated credentials.
    pub federated: Vec<FederatedCredential>,
}

/// A registered client certificate: thumbprints and the RSA public key that verifies
/// assertions.
#[derive(Clone)]
pub struct RegisteredCertificate {
    /// SHA-1 of the DER certificate (the `x5t` header).
    pub sha1: Vec<u8>,
    /// SHA-256 of the DER certificate (the `x5t#S256` header).
    pub sha256: Vec<u8>,
    /// The certificate's public key.
    pub public_key: PublicKey,
}

impl RegisteredCertificate {
    /// Parses the first certificate of a PEM text; its key must be RSA.
    pub fn from_pem(pem: &str) -> Result<Self, EmulatorError> {
        let der = CertificateDer::pem_slice_iter(pem.as_bytes())
            .next()
            .ok_or_else(|| EmulatorError::InvalidRequest("no PEM certificate found".into()))?
            .map_err(|e| EmulatorError::InvalidRequest(format!("bad PEM certificate: {e}")))?;
        let certificate = x509_cert::Certificate::from_der(der.as_ref())
            .map_err(|e| EmulatorError::InvalidRequest(format!("bad X.509 certificate: {e}")))?;
        let spki = certificate
            .tbs_certificate()
            .subject_public_key_info()
            .to_der()
            .map_err(|e| EmulatorError::InvalidRequest(format!("bad public key: {e}")))?;
        let public_key = PublicKey::from_public_key_der(&spki).map_err(|_| {
            EmulatorError::InvalidRequest("the certificate's key is not an RSA key".into())
        })?;
        Ok(Self {
            sha1: Sha1::digest(der.as_ref()).to_vec(),
            sha256: Sha256::digest(der.as_ref()).to_vec(),
            public_key,
        })
    }
}

/// A registered identity.
pub struct Identity {
    /// The label.
    pub name: String,
    /// The application (client) id.
    pub client_id: String,
    /// The object (principal) id.
    pub object_id: String,
    /// The ARM resource id.
    pub resource_id: Option<String>,
    /// Managed identity kind.
    pub managed: Option<ManagedKind>,
    /// Key permissions.
    pub permissions: BTreeSet<Permission>,
    secrets: Vec<Zeroizing<String>>,
    /// Registered certificates.
    pub certificates: Vec<RegisteredCertificate>,
    /// Registered federated credentials.
    pub federated: Vec<FederatedCredential>,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("name", &self.name)
            .field("client_id", &self.client_id)
            .field("secrets", &"[redacted]")
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// Whether `secret` equals one of the registered secrets (constant time per secret).
    pub fn secret_matches(&self, secret: &str) -> bool {
        self.secrets
            .iter()
            .any(|s| bool::from(s.as_bytes().ct_eq(secret.as_bytes())))
    }

    /// The string the service shows for the caller in 403 messages.
    pub fn display(&self, tenant: &str) -> String {
        format!(
            "appid={};oid={};iss=https://sts.windows.net/{tenant}/",
            self.client_id, self.object_id
        )
    }

    /// The public view.
    pub fn info(&self) -> IdentityInfo {
        IdentityInfo {
            name: self.name.clone(),
            client_id: self.client_id.clone(),
            object_id: self.object_id.clone(),
            resource_id: self.resource_id.clone(),
            managed: self.managed,
            permissions: self.permissions.iter().copied().collect(),
            secrets: self.secrets.len(),
            certificates: self
                .certificates
                .iter()
                .map(|c| hex::encode(&c.sha1))
                .collect(),
            federated: self.federated.clone(),
        }
    }
}

/// A token the emulator issued.
#[derive(Debug, Clone)]
pub struct Grant {
    /// To whom.
    pub client_id: String,
    /// For which resource (audience), without a trailing slash.
    pub resource: String,
    /// Expiry, unix seconds.
    pub expires_on: i64,
}

/// How an IMDS / App Service request selects a managed identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ManagedSelector {
    /// No selector: the system-assigned identity.
    System,
    /// `client_id=`
    ClientId(String),
    /// `object_id=` / `principal_id=`
    ObjectId(String),
    /// `msi_res_id=` / `mi_res_id=`
    ResourceId(String),
}

/// All identities and tokens of the emulated tenant.
#[derive(Default)]
pub struct Directory {
    identities: BTreeMap<String, Identity>,
    tokens: HashMap<String, Grant>,
}

/// A fresh random GUID (version 4 layout).
pub fn new_guid() -> String {
    let mut b = [0u8; 16];
    // A failing random source only makes the id less random; the tests still get unique ids
    // from the counter-free fallback below.
    if fill_random(&mut b).is_err() {
        b = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos().to_le_bytes())
            .unwrap_or_default();
    }
    b[6] = (b[6] & 0x0f) | 0x40;
    b[8] = (b[8] & 0x3f) | 0x80;
    let h = hex::encode(b);
    format!(
        "{}-{}-{}-{}-{}",
        &h[0..8],
        &h[8..12],
        &h[12..16],
        &h[16..20],
        &h[20..32]
    )
}

impl Directory {
    /// Registers an identity; a client id that exists already is refused.
    pub fn register(&mut self, spec: IdentitySpec) -> Result<IdentityInfo, EmulatorError> {
        let client_id = spec.client_id.clone().unwrap_or_else(new_guid);
        if self.identities.contains_key(&client_id) {
            return Err(EmulatorError::InvalidRequest(format!(
                "an identity with client id {client_id} is already registered"
            )));
        }
        if spec.managed == Some(ManagedKind::SystemAssigned)
            && self
                .identities
                .values()
                .any(|i| i.managed == Some(ManagedKind::SystemAssigned))
        {
            return Err(EmulatorError::InvalidRequest(
                "a system-assigned identity is already registered".into(),
            ));
        }
        let certificates = match &spec.certificate_pem {
            Some(pem) => vec![RegisteredCertificate::from_pem(pem)?],
            None => Vec::new(),
        };
        let identity = Identity {
            name: spec.name.unwrap_or_else(|| client_id.clone()),
            object_id: spec.object_id.unwrap_or_else(new_guid),
            resource_id: spec.resource_id,
            managed: spec.managed,
            permissions: spec
                .permissions
                .map(|p| p.into_iter().collect())
                .unwrap_or_else(|| Permission::ALL.into_iter().collect()),
            secrets: spec.client_secret.map(Zeroizing::new).into_iter().collect(),
            certificates,
            federated: spec.federated.into_iter().collect(),
            client_id: client_id.clone(),
        };
        let info = identity.info();
        self.identities.insert(client_id, identity);
        Ok(info)
    }

    /// The identity with this client id.
    pub fn get(&self, client_id: &str) -> Option<&Identity> {
        self.identities.get(client_id)
    }

    fn get_mut(&mut self, client_id: &str) -> Result<&mut Identity, EmulatorError> {
        self.identities
            .get_mut(client_id)
            .ok_or_else(|| EmulatorError::UnknownIdentity(client_id.to_owned()))
    }

    /// All identities.
    pub fn list(&self) -> Vec<IdentityInfo> {
        self.identities.values().map(Identity::info).collect()
    }

    /// Adds a client secret.
    pub fn add_secret(&mut self, client_id: &str, secret: String) -> Result<(), EmulatorError> {
        self.get_mut(client_id)?
            .secrets
            .push(Zeroizing::new(secret));
        Ok(())
    }

    /// Adds a client certificate (PEM).
    pub fn add_certificate(&mut self, client_id: &str, pem: &str) -> Result<(), EmulatorError> {
        let certificate = RegisteredCertificate::from_pem(pem)?;
        self.get_mut(client_id)?.certificates.push(certificate);
        Ok(())
    }

    /// Adds a federated credential.
    pub fn add_federated(
        &mut self,
        client_id: &str,
        credential: FederatedCredential,
    ) -> Result<(), EmulatorError> {
        self.get_mut(client_id)?.federated.push(credential);
        Ok(())
    }

    /// Replaces the identity's permissions.
    pub fn set_permissions(
        &mut self,
        client_id: &str,
        permissions: &[Permission],
    ) -> Result<IdentityInfo, EmulatorError> {
        let identity = self.get_mut(client_id)?;
        identity.permissions = permissions.iter().copied().collect();
        Ok(identity.info())
    }

    /// Adds permissions.
    pub fn grant(
        &mut self,
        client_id: &str,
        permissions: &[Permission],
    ) -> Result<IdentityInfo, EmulatorError> {
        let identity = self.get_mut(client_id)?;
        identity.permissions.extend(permissions.iter().copied());
        Ok(identity.info())
    }

    /// Removes permissions.
    pub fn revoke(
        &mut self,
        client_id: &str,
        permissions: &[Permission],
    ) -> Result<IdentityInfo, EmulatorError> {
        let identity = self.get_mut(client_id)?;
        for permission in permissions {
            identity.permissions.remove(permission);
        }
        Ok(identity.info())
    }

    /// Finds the managed identity a request selects.
    pub fn managed(&self, selector: &ManagedSelector) -> Option<&Identity> {
        self.identities
            .values()
            .find(|i| match (i.managed, selector) {
                (Some(ManagedKind::SystemAssigned), ManagedSelector::System) => true,
                (Some(ManagedKind::UserAssigned), ManagedSelector::ClientId(id)) => {
                    i.client_id.eq_ignore_ascii_case(id)
                }
                (Some(ManagedKind::UserAssigned), ManagedSelector::ObjectId(id)) => {
                    i.object_id.eq_ignore_ascii_case(id)
                }
                (Some(ManagedKind::UserAssigned), ManagedSelector::ResourceId(id)) => i
                    .resource_id
                    .as_deref()
                    .is_some_and(|r| r.eq_ignore_ascii_case(id)),
                _ => false,
            })
    }

    /// Records an issued token.
    pub fn record_token(&mut self, token: String, grant: Grant) {
        self.tokens.insert(token, grant);
    }

    /// The grant of a token, if the emulator issued it.
    pub fn grant_of(&self, token: &str) -> Option<&Grant> {
        self.tokens.get(token)
    }

    /// Forgets every issued token (clients must authenticate again).
    pub fn revoke_tokens(&mut self) {
        self.tokens.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guids_have_the_v4_layout() {
        let guid = new_guid();
        assert_eq!(guid.len(), 36);
        assert_eq!(&guid[14..15], "4");
        assert_ne!(new_guid(), guid);
    }

    #[test]
    fn secrets_are_checked_and_never_shown() {
        let mut directory = Directory::default();
        let info = directory
            .register(IdentitySpec {
                client_secret: Some("s3cr3t-value".into()),
                ..IdentitySpec::default()
            })
            .unwrap();
        let identity = directory.get(&info.client_id).unwrap();
        assert!(identity.secret_matches("s3cr3t-value"));
        assert!(!identity.secret_matches("s3cr3t-valuf"));
        assert!(!format!("{identity:?}").contains("s3cr3t"));
        let spec = IdentitySpec {
            client_secret: Some("s3cr3t-value".into()),
            ..IdentitySpec::default()
        };
        assert!(!format!("{spec:?}").contains("s3cr3t"));
    }

    #[test]
    fn permissions_default_to_all_and_can_be_revoked() {
        let mut directory = Directory::default();
        let info = directory.register(IdentitySpec::default()).unwrap();
        assert_eq!(info.permissions.len(), Permission::ALL.len());
        let info = directory
            .revoke(&info.client_id, &[Permission::UnwrapKey])
            .unwrap();
        assert!(!info.permissions.contains(&Permission::UnwrapKey));
        assert!(matches!(
            directory.grant("nope", &[Permission::Get]),
            Err(EmulatorError::UnknownIdentity(_))
        ));
    }

    #[test]
    fn managed_identities_are_selected_like_imds_does() {
        let mut directory = Directory::default();
        let system = directory
            .register(IdentitySpec {
                managed: Some(ManagedKind::SystemAssigned),
                ..IdentitySpec::default()
            })
            .unwrap();
        let user = directory
            .register(IdentitySpec {
                managed: Some(ManagedKind::UserAssigned),
                resource_id: Some("/subscriptions/s/rg/id".into()),
                ..IdentitySpec::default()
            })
            .unwrap();
        let found = |s: ManagedSelector| directory.managed(&s).map(|i| i.client_id.clone());
        assert_eq!(found(ManagedSelector::System), Some(system.client_id));
        assert_eq!(
            found(ManagedSelector::ObjectId(user.object_id.clone())),
            Some(user.client_id.clone())
        );
        assert_eq!(
            found(ManagedSelector::ResourceId("/subscriptions/s/rg/id".into())),
            Some(user.client_id)
        );
        assert_eq!(found(ManagedSelector::ClientId("x".into())), None);
    }
}
