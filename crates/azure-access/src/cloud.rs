//! Azure clouds: where Entra ID issues tokens and which DNS suffixes Key Vault and Managed HSM
//! use in each one — the public cloud, Azure China, Azure US Government, or a custom cloud
//! (Azure Stack, an air-gapped cloud, an emulator) whose authority and suffixes are configured.
//!
//! This module never infers a cloud from a vault URL or from anything read at run time: the cloud
//! is configuration, and the authority it names is where credentials are sent.

use std::sync::Arc;

use azure_core::cloud::{CloudConfiguration, CustomConfiguration};

/// The clouds kube-kms knows by name, plus a custom one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloudName {
    /// Azure public cloud.
    Public,
    /// Azure operated by 21Vianet (China).
    China,
    /// Azure US Government.
    UsGovernment,
    /// A cloud whose authority host and vault suffixes are configured.
    Custom,
}

impl CloudName {
    /// Parses a cloud name as kube-kms's configuration writes it (`public`, `china`,
    /// `usgovernment`, `custom`) or as AKS's azure.json does (`AzurePublicCloud`,
    /// `AzureChinaCloud`, `AzureUSGovernmentCloud`), ignoring case.
    pub fn parse(name: &str) -> Option<Self> {
        match name.trim().to_ascii_lowercase().as_str() {
            "public" | "azurepublic" | "azurepubliccloud" | "azurecloud" => Some(Self::Public),
            "china" | "azurechina" | "azurechinacloud" => Some(Self::China),
            "usgovernment" | "usgov" | "azureusgovernment" | "azureusgovernmentcloud" => {
                Some(Self::UsGovernment)
            }
            "custom" => Some(Self::Custom),
            _ => None,
        }
    }

    /// The names [`CloudName::parse`] accepts, for error messages.
    pub const ACCEPTED: &'static str = "public, china, usgovernment or custom (or AKS's \
         AzurePublicCloud, AzureChinaCloud, AzureUSGovernmentCloud)";
}

/// A cloud's endpoints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cloud {
    name: CloudName,
    authority_host: String,
    vault_suffix: String,
    managed_hsm_suffix: String,
}

impl Cloud {
    /// A named cloud with its well-known endpoints; `None` for [`CloudName::Custom`], which has
    /// none (use [`Cloud::custom`]).
    pub fn known(name: CloudName) -> Option<Self> {
        let (authority, vault, hsm) = match name {
            CloudName::Public => (
                "https://login.microsoftonline.com",
                "vault.azure.net",
                "managedhsm.azure.net",
            ),
            CloudName::China => (
                "https://login.chinacloudapi.cn",
                "vault.azure.cn",
                "managedhsm.azure.cn",
            ),
            CloudName::UsGovernment => (
                "https://login.microsoftonline.us",
                "vault.usgovcloudapi.net",
                "managedhsm.usgovcloudapi.net",
            ),
            CloudName::Custom => return None,
        };
        Some(Self {
            name,
            authority_host: authority.to_owned(),
            vault_suffix: vault.to_owned(),
            managed_hsm_suffix: hsm.to_owned(),
        })
    }

    /// A custom cloud. `authority_host` is an https URL without a path; the suffixes are DNS
    /// names without a leading dot.
    pub fn custom(authority_host: &str, vault_suffix: &str, managed_hsm_suffix: &str) -> Self {
        Self {
            name: CloudName::Custom,
            authority_host: authority_host.trim_end_matches('/').to_owned(),
            vault_suffix: vault_suffix.trim_start_matches('.').to_ascii_lowercase(),
            managed_hsm_suffix: managed_hsm_suffix
                .trim_start_matches('.')
                .to_ascii_lowercase(),
        }
    }

    /// The same cloud with tokens requested from `authority_host` instead (a private link, a
    /// sovereign deployment's login endpoint, or an emulator).
    pub fn with_authority_host(mut self, authority_host: &str) -> Self {
        self.authority_host = authority_host.trim_end_matches('/').to_owned();
        self
    }

    /// Which cloud this is.
    pub fn name(&self) -> CloudName {
        self.name
    }

    /// Entra ID's authority, e.g. `https://login.microsoftonline.com`.
    pub fn authority_host(&self) -> &str {
        &self.authority_host
    }

    /// The DNS suffix of Key Vault vaults, e.g. `vault.azure.net`.
    pub fn vault_suffix(&self) -> &str {
        &self.vault_suffix
    }

    /// The DNS suffix of Managed HSM pools, e.g. `managedhsm.azure.net`.
    pub fn managed_hsm_suffix(&self) -> &str {
        &self.managed_hsm_suffix
    }

    /// Whether `host` (lowercase, without a port) is a vault or Managed HSM of this cloud.
    pub fn owns_host(&self, host: &str) -> bool {
        [&self.vault_suffix, &self.managed_hsm_suffix]
            .iter()
            .any(|suffix| !suffix.is_empty() && host.ends_with(&format!(".{suffix}")))
    }

    /// The configuration the SDK's credentials take: always a custom cloud carrying this cloud's
    /// authority, so that an authority override applies and no credential falls back to
    /// AZURE_AUTHORITY_HOST or the public cloud.
    pub fn sdk_configuration(&self) -> Arc<CloudConfiguration> {
        let mut custom = CustomConfiguration::default();
        custom.authority_host = self.authority_host.clone();
        Arc::new(CloudConfiguration::Custom(custom))
    }
}

/// Whether `name` is a DNS host name (RFC 1123): at most 253 bytes, dot-separated labels of 1 to
/// 63 ASCII letters, digits and hyphens, none starting or ending with a hyphen. No trailing
/// dot, no port, no scheme: what a vault's, an endpoint's or a DNS override's host may be.
pub fn is_dns_name(name: &str) -> bool {
    (1..=253).contains(&name.len())
        && name.split('.').all(|label| {
            (1..=63).contains(&label.len())
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names_are_labels_of_letters_digits_and_inner_hyphens() {
        for good in [
            "vault.azure.net",
            "kv-1.vault.azure.cn",
            "a",
            "xn--bcher-kva.example",
        ] {
            assert!(is_dns_name(good), "{good}");
        }
        let long_label = format!("{}.net", "a".repeat(64));
        let long_name = vec!["a".repeat(63); 5].join(".");
        for bad in [
            "",
            ".",
            "a..b",
            "a.",
            ".a",
            "-a.net",
            "a-.net",
            "a_b.net",
            "a.net:443",
            "https://a.net",
            "a b.net",
            &long_label,
            &long_name,
        ] {
            assert!(!is_dns_name(bad), "{bad:?}");
        }
    }

    #[test]
    fn the_china_cloud_resolves_to_the_china_hosts() {
        let china = Cloud::known(CloudName::parse("china").unwrap()).unwrap();
        assert_eq!(china.authority_host(), "https://login.chinacloudapi.cn");
        assert_eq!(china.vault_suffix(), "vault.azure.cn");
        assert_eq!(china.managed_hsm_suffix(), "managedhsm.azure.cn");
        assert!(china.owns_host("kek.vault.azure.cn"));
        assert!(china.owns_host("pool.managedhsm.azure.cn"));
        assert!(!china.owns_host("kek.vault.azure.net"));
        match china.sdk_configuration().as_ref() {
            CloudConfiguration::Custom(custom) => {
                assert_eq!(custom.authority_host, "https://login.chinacloudapi.cn");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(CloudName::parse("AzureChinaCloud"), Some(CloudName::China));
    }

    #[test]
    fn every_named_cloud_has_its_hosts() {
        let public = Cloud::known(CloudName::Public).unwrap();
        assert_eq!(public.authority_host(), "https://login.microsoftonline.com");
        assert!(
            public.owns_host("a.vault.azure.net") && public.owns_host("b.managedhsm.azure.net")
        );
        assert!(!public.owns_host("vault.azure.net") && !public.owns_host("evilvault.azure.net"));
        let gov = Cloud::known(CloudName::parse("AzureUSGovernmentCloud").unwrap()).unwrap();
        assert_eq!(gov.authority_host(), "https://login.microsoftonline.us");
        assert_eq!(gov.vault_suffix(), "vault.usgovcloudapi.net");
        assert_eq!(gov.managed_hsm_suffix(), "managedhsm.usgovcloudapi.net");
        assert_eq!(Cloud::known(CloudName::Custom), None);
        assert_eq!(CloudName::parse("AzureStackCloud"), None);
    }

    #[test]
    fn a_custom_cloud_and_an_authority_override() {
        let custom = Cloud::custom("https://login.example/", ".vault.example", "hsm.example");
        assert_eq!(custom.authority_host(), "https://login.example");
        assert!(custom.owns_host("kek.vault.example") && custom.owns_host("p.hsm.example"));
        let public = Cloud::known(CloudName::Public)
            .unwrap()
            .with_authority_host("https://localhost:8443/");
        assert_eq!(public.authority_host(), "https://localhost:8443");
        assert_eq!(public.vault_suffix(), "vault.azure.net");
    }
}
