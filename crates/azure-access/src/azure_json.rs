//! AKS's cloud-provider file, /etc/kubernetes/azure.json: the fields kube-kms reads from it to
//! authenticate the way the node's other Azure components do — the cloud, the tenant, and one
//! of a federated token file, a managed identity (system, or user-assigned by client id or
//! resource id), a client secret, or a PFX client certificate.
//!
//! The file is JSON, read as YAML (a superset) with unknown fields ignored: it carries many
//! settings for other components. The secret and certificate password it may hold are kept in
//! zeroizing strings that no `Debug` shows, and never logged.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use zeroize::Zeroizing;

/// The largest azure.json read.
const MAX_LEN: u64 = 1024 * 1024;

/// The fields of azure.json kube-kms uses.
#[derive(Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AzureJson {
    /// AzurePublicCloud, AzureChinaCloud, AzureUSGovernmentCloud.
    pub cloud: Option<String>,
    /// The tenant.
    pub tenant_id: Option<String>,
    /// The service principal's (or user-assigned identity's) client id; "msi" with a managed
    /// identity.
    pub aad_client_id: Option<String>,
    /// The service principal's secret.
    #[serde(deserialize_with = "secret")]
    pub aad_client_secret: Option<Zeroizing<String>>,
    /// Use the node's managed identity.
    #[serde(deserialize_with = "flexible_bool")]
    pub use_managed_identity_extension: Option<bool>,
    /// A user-assigned identity: a client id, or an ARM resource id.
    #[serde(rename = "userAssignedIdentityID")]
    pub user_assigned_identity_id: Option<String>,
    /// A PFX client certificate.
    pub aad_client_cert_path: Option<PathBuf>,
    /// Its password.
    #[serde(deserialize_with = "secret")]
    pub aad_client_cert_password: Option<Zeroizing<String>>,
    /// A federated (workload identity) token file.
    pub aad_federated_token_file: Option<PathBuf>,
    /// Use workload identity.
    #[serde(deserialize_with = "flexible_bool")]
    pub use_federated_workload_identity_extension: Option<bool>,
}

impl fmt::Debug for AzureJson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AzureJson")
            .field("cloud", &self.cloud)
            .field("tenant_id", &self.tenant_id)
            .field("aad_client_id", &self.aad_client_id)
            .field(
                "aad_client_secret",
                &self.aad_client_secret.as_ref().map(|_| "[redacted]"),
            )
            .field(
                "use_managed_identity_extension",
                &self.use_managed_identity_extension,
            )
            .field("user_assigned_identity_id", &self.user_assigned_identity_id)
            .field("aad_client_cert_path", &self.aad_client_cert_path)
            .field(
                "aad_client_cert_password",
                &self.aad_client_cert_password.as_ref().map(|_| "[redacted]"),
            )
            .field("aad_federated_token_file", &self.aad_federated_token_file)
            .field(
                "use_federated_workload_identity_extension",
                &self.use_federated_workload_identity_extension,
            )
            .finish()
    }
}

impl AzureJson {
    /// Reads and parses the file at `path`. Errors name the file, never its contents.
    pub fn read(path: &Path) -> Result<Self, String> {
        use std::io::Read;
        let file = std::fs::File::open(path)
            .map_err(|error| format!("cannot open {}: {error}", path.display()))?;
        let mut text = Zeroizing::new(String::new());
        file.take(MAX_LEN)
            .read_to_string(&mut text)
            .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
        Self::parse(&text).map_err(|reason| format!("{}: {reason}", path.display()))
    }

    /// Parses azure.json text.
    pub fn parse(text: &str) -> Result<Self, String> {
        serde_saphyr::from_str(text).map_err(|error| {
            // The parser's message can quote the offending value, which may be the secret.
            let text = error.to_string();
            let line = text
                .split_whitespace()
                .skip_while(|word| *word != "line")
                .nth(1)
                .map(|n| {
                    format!(
                        " near line {}",
                        n.trim_matches(|c: char| !c.is_ascii_digit())
                    )
                })
                .unwrap_or_default();
            format!("not valid JSON/YAML{line}")
        })
    }

    /// A non-empty string field.
    pub fn text(value: &Option<String>) -> Option<&str> {
        value.as_deref().map(str::trim).filter(|v| !v.is_empty())
    }
}

fn secret<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<Zeroizing<String>>, D::Error> {
    let value: Option<String> = Option::deserialize(deserializer)?;
    Ok(value.filter(|v| !v.is_empty()).map(Zeroizing::new))
}

fn flexible_bool<'de, D: serde::Deserializer<'de>>(
    deserializer: D,
) -> Result<Option<bool>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Flexible {
        Bool(bool),
        Text(String),
    }
    Ok(match Option::<Flexible>::deserialize(deserializer)? {
        None => None,
        Some(Flexible::Bool(value)) => Some(value),
        Some(Flexible::Text(text)) => Some(text.trim().eq_ignore_ascii_case("true")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_fields_aks_writes_and_ignores_the_rest() {
        let json = r#"{
            "cloud": "AzureChinaCloud",
            "tenantId": "72f988bf-86f1-41af-91ab-2d7cd011db47",
            "subscriptionId": "ignored",
            "aadClientId": "msi",
            "aadClientSecret": "s3cret-value",
            "useManagedIdentityExtension": true,
            "userAssignedIdentityID": "0b3c4e1a-0000-4000-8000-000000000001",
            "aadClientCertPath": "/etc/kubernetes/sp.pfx",
            "aadClientCertPassword": "pfx-password",
            "useFederatedWorkloadIdentityExtension": "false",
            "vmType": "vmss",
            "loadBalancerSku": "standard"
        }"#;
        let parsed = AzureJson::parse(json).unwrap();
        assert_eq!(parsed.cloud.as_deref(), Some("AzureChinaCloud"));
        assert_eq!(AzureJson::text(&parsed.aad_client_id), Some("msi"));
        assert_eq!(
            parsed.aad_client_secret.as_deref().map(String::as_str),
            Some("s3cret-value")
        );
        assert_eq!(parsed.use_managed_identity_extension, Some(true));
        assert_eq!(
            parsed.use_federated_workload_identity_extension,
            Some(false)
        );
        assert_eq!(
            parsed.aad_client_cert_path.as_deref(),
            Some(Path::new("/etc/kubernetes/sp.pfx"))
        );
        let shown = format!("{parsed:?}");
        assert!(
            !shown.contains("s3cret") && !shown.contains("pfx-password"),
            "{shown}"
        );
    }

    #[test]
    fn a_broken_file_is_refused_without_echoing_it() {
        let error = AzureJson::parse(
            "{\"aadClientSecret\": \"s3cret\", \"useManagedIdentityExtension\": [}",
        )
        .unwrap_err();
        assert!(!error.contains("s3cret"), "{error}");
        let error = AzureJson::read(Path::new("/nonexistent/azure.json")).unwrap_err();
        assert!(error.contains("/nonexistent/azure.json"), "{error}");
    }
}
