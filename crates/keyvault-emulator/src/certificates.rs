//! The vault's certificates: stored versions, the current policy of each name, the pending
//! operation of a certificate being created, and the JSON shapes the Certificates REST API
//! answers with (CertificateBundle, CertificateItem, CertificateOperation, the deleted forms).
//!
//! A certificate version shares its name and version with a key (`kid`) and a backing secret
//! (`sid`) in the other stores; this module holds only the certificate side. A version that is
//! still pending shows `enabled: false` and no `cer`, as the service shows one being created.

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::bundle;
use crate::model::ObjectKind;
use crate::pki;
use crate::policy::Policy;
use crate::store::{Attributes, Collection, Deleted};

/// One version of a certificate.
#[derive(Debug, Clone)]
pub struct CertificateVersion {
    /// The name as created.
    pub name: String,
    /// 32 lowercase hex digits (also the key's and the secret's version).
    pub version: String,
    /// The DER certificate; `None` until issued (a CSR waiting for a merge).
    pub cer: Option<Vec<u8>>,
    /// Whether the creation has not completed yet.
    pub pending: bool,
    /// Attributes (nbf/exp are the certificate's validity).
    pub attributes: Attributes,
    /// Tags.
    pub tags: BTreeMap<String, String>,
}

crate::store::versioned!(CertificateVersion, ObjectKind::Certificate);

/// The state of a certificate operation, as the service spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OperationStatus {
    /// Being created (`inProgress`).
    InProgress,
    /// Issued (`completed`).
    Completed,
    /// Cancelled by the client (`cancelled`).
    Cancelled,
}

impl OperationStatus {
    /// The wire spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InProgress => "inProgress",
            Self::Completed => "completed",
            Self::Cancelled => "cancelled",
        }
    }
}

/// The operation of the latest create request of a name (`/certificates/{n}/pending`).
#[derive(Debug, Clone)]
pub struct PendingOperation {
    /// The certificate name.
    pub name: String,
    /// The version being created.
    pub version: String,
    /// The issuer name of the policy (`Self`, `Unknown`).
    pub issuer: String,
    /// The PKCS#10 request (DER).
    pub csr: Vec<u8>,
    /// The status.
    pub status: OperationStatus,
    /// Whether the client asked to cancel.
    pub cancellation_requested: bool,
    /// Whether the version is enabled once issued.
    pub enable_when_issued: bool,
    /// The request id (a GUID).
    pub request_id: String,
}

/// All certificates of one vault.
#[derive(Debug, Default)]
pub struct Certificates {
    /// The versions, live and soft-deleted.
    pub versions: Collection<CertificateVersion>,
    /// The current policy of each name (folded), kept through soft delete until purged.
    pub policies: BTreeMap<String, Policy>,
    /// The operation of each name (folded) that has one.
    pub operations: BTreeMap<String, PendingOperation>,
}

impl Certificates {
    /// The current policy of a name.
    pub fn policy(&self, name: &str) -> Option<&Policy> {
        self.policies.get(&name.to_ascii_lowercase())
    }

    /// The operation of a name.
    pub fn operation(&self, name: &str) -> Option<&PendingOperation> {
        self.operations.get(&name.to_ascii_lowercase())
    }

    /// The operation of a name, mutable.
    pub fn operation_mut(&mut self, name: &str) -> Option<&mut PendingOperation> {
        self.operations.get_mut(&name.to_ascii_lowercase())
    }
}

/// A public view of a certificate version, as tests read it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CertificateInfo {
    /// The name.
    pub name: String,
    /// The version (also the key's and the backing secret's).
    pub version: String,
    /// `https://{host}/certificates/{name}/{version}`.
    pub id: String,
    /// The key's id.
    pub kid: String,
    /// The backing secret's id.
    pub sid: String,
    /// base64url SHA-1 thumbprint, once issued.
    pub x5t: Option<String>,
    /// Standard base64 DER, once issued.
    pub cer: Option<String>,
    /// Enabled.
    pub enabled: bool,
    /// Not-before (the certificate's).
    pub nbf: Option<i64>,
    /// Expiry (the certificate's).
    pub exp: Option<i64>,
    /// Whether the creation has not completed.
    pub pending: bool,
}

impl CertificateInfo {
    /// The view of `version` with ids on `host`.
    pub fn of(version: &CertificateVersion, host: &str) -> Self {
        let base = format!("https://{host}");
        let issued = version.cer.as_deref().filter(|_| !version.pending);
        Self {
            name: version.name.clone(),
            version: version.version.clone(),
            id: id(&base, "certificates", version),
            kid: id(&base, "keys", version),
            sid: id(&base, "secrets", version),
            x5t: issued.map(pki::x5t),
            cer: issued.map(pki::encode_base64),
            enabled: version.attributes.enabled && !version.pending,
            nbf: version.attributes.nbf,
            exp: version.attributes.exp,
            pending: version.pending,
        }
    }
}

fn id(base: &str, collection: &str, version: &CertificateVersion) -> String {
    format!("{base}/{collection}/{}/{}", version.name, version.version)
}

fn attributes(version: &CertificateVersion, retention_days: u32) -> Value {
    let mut value = bundle::attributes(&version.attributes, retention_days);
    if version.pending {
        value["enabled"] = json!(false);
    }
    value
}

/// A CertificateBundle: ids, `x5t`, `cer`, attributes, the name's policy and tags.
pub fn bundle(
    base: &str,
    version: &CertificateVersion,
    policy: Option<&Policy>,
    retention_days: u32,
) -> Value {
    let mut value = json!({
        "id": id(base, "certificates", version),
        "kid": id(base, "keys", version),
        "sid": id(base, "secrets", version),
        "attributes": attributes(version, retention_days),
    });
    if let Some(cer) = version.cer.as_deref().filter(|_| !version.pending) {
        value["x5t"] = json!(pki::x5t(cer));
        value["cer"] = json!(pki::encode_base64(cer));
    }
    if let Some(policy) = policy {
        value["policy"] = policy.render(base, &version.name);
    }
    if !version.tags.is_empty() {
        value["tags"] = json!(version.tags);
    }
    if version.pending {
        value["pending"] = json!({ "id": format!("{base}/certificates/{}/pending", version.name) });
    }
    value
}

/// A CertificateItem: base id in `GET /certificates`, versioned in `.../versions`.
pub fn item(
    base: &str,
    version: &CertificateVersion,
    with_version: bool,
    retention_days: u32,
) -> Value {
    let id = if with_version {
        id(base, "certificates", version)
    } else {
        format!("{base}/certificates/{}", version.name)
    };
    let mut value = json!({ "id": id, "attributes": attributes(version, retention_days) });
    if let Some(cer) = version.cer.as_deref().filter(|_| !version.pending) {
        value["x5t"] = json!(pki::x5t(cer));
    }
    if !version.tags.is_empty() {
        value["tags"] = json!(version.tags);
    }
    value
}

/// A DeletedCertificateBundle (the latest version).
pub fn deleted_bundle(
    base: &str,
    deleted: &Deleted<CertificateVersion>,
    policy: Option<&Policy>,
    retention_days: u32,
) -> Value {
    bundle::deleted(base, deleted, |latest| {
        bundle(base, latest, policy, retention_days)
    })
}

/// A DeletedCertificateItem.
pub fn deleted_item(
    base: &str,
    deleted: &Deleted<CertificateVersion>,
    retention_days: u32,
) -> Value {
    bundle::deleted(base, deleted, |latest| {
        item(base, latest, false, retention_days)
    })
}

/// A CertificateOperation. A completed one names its `target` (the certificate's base id).
pub fn operation(base: &str, op: &PendingOperation) -> Value {
    let mut value = json!({
        "id": format!("{base}/certificates/{}/pending", op.name),
        "issuer": { "name": op.issuer },
        "csr": pki::encode_base64(&op.csr),
        "cancellation_requested": op.cancellation_requested,
        "status": op.status.as_str(),
        "request_id": op.request_id,
    });
    match op.status {
        OperationStatus::InProgress if op.issuer.eq_ignore_ascii_case("Unknown") => {
            value["status_details"] =
                json!("Pending certificate created. Please Perform Merge to complete the request.");
        }
        OperationStatus::InProgress => {
            value["status_details"] = json!(
                "Pending certificate created. Certificate request is in progress. This may take some time based on the issuer provider. Please check again later."
            );
        }
        OperationStatus::Completed => {
            value["target"] = json!(format!("{base}/certificates/{}", op.name));
        }
        OperationStatus::Cancelled => {
            value["status_details"] = json!("Certificate creation was cancelled.");
        }
    }
    value
}

#[cfg(test)]
mod tests {
    use super::*;

    fn version(pending: bool) -> CertificateVersion {
        CertificateVersion {
            name: "tls".to_owned(),
            version: "ab".repeat(16),
            cer: Some(vec![0x30, 0x03, 0x02, 0x01, 0x01]),
            pending,
            attributes: Attributes {
                enabled: true,
                nbf: Some(1),
                exp: Some(2),
                created: 3,
                updated: 3,
            },
            tags: BTreeMap::new(),
        }
    }

    #[test]
    fn a_bundle_names_its_key_and_secret_by_the_same_version() {
        let v = version(false);
        let b = bundle("https://h:1", &v, None, 90);
        let suffix = format!("/tls/{}", v.version);
        assert_eq!(b["id"], format!("https://h:1/certificates{suffix}"));
        assert_eq!(b["kid"], format!("https://h:1/keys{suffix}"));
        assert_eq!(b["sid"], format!("https://h:1/secrets{suffix}"));
        assert_eq!(b["cer"], "MAMCAQE=");
        assert_eq!(b["x5t"].as_str().map(str::len), Some(27));
        assert!(b.get("pending").is_none());
    }

    #[test]
    fn a_pending_version_is_disabled_without_cer() {
        let b = bundle("https://h:1", &version(true), None, 90);
        assert_eq!(b["attributes"]["enabled"], false);
        assert!(b.get("cer").is_none() && b.get("x5t").is_none());
        assert_eq!(b["pending"]["id"], "https://h:1/certificates/tls/pending");
    }
}
