//! What a Mount request carries, decoded once: the SecretProviderClass parameters overlaid with
//! the pod's volume attributes (the driver merges them; volume keys win), the pod's identity and
//! service-account tokens, the nodePublishSecretRef Secret's data, and the default file mode.
//!
//! Everything here is attacker-influenced input (anyone who can create a pod or a
//! SecretProviderClass writes it): parsing has size limits, never panics, and every failure is a
//! [`RequestError`] naming the field. Tokens and Secret data live in zeroizing [`SecretString`]s
//! and no `Debug` shows them. Backend-independent: the Azure and Alibaba backends both read a
//! [`MountInput`].

use std::collections::BTreeMap;
use std::fmt;

use secrecy::SecretString;

/// The pod keys kubelet adds to the attributes (`podInfoOnMount: true`).
pub mod keys {
    /// The pod's name.
    pub const POD_NAME: &str = "csi.storage.k8s.io/pod.name";
    /// The pod's namespace.
    pub const POD_NAMESPACE: &str = "csi.storage.k8s.io/pod.namespace";
    /// The pod's UID.
    pub const POD_UID: &str = "csi.storage.k8s.io/pod.uid";
    /// The pod's service account.
    pub const SERVICE_ACCOUNT_NAME: &str = "csi.storage.k8s.io/serviceAccount.name";
    /// The service-account tokens kubelet requested for the CSIDriver's `tokenRequests`.
    pub const SERVICE_ACCOUNT_TOKENS: &str = "csi.storage.k8s.io/serviceAccount.tokens";
    /// The SecretProviderClass's name (from the volume attributes).
    pub const SECRET_PROVIDER_CLASS: &str = "secretProviderClass";
}

/// A decoded Mount request.
pub struct MountInput {
    /// Every attribute (class parameters and volume attributes, merged by the driver) except
    /// the service-account tokens, which are in [`MountInput::tokens`].
    pub parameters: BTreeMap<String, String>,
    /// The pod the volume is for (empty strings when kubelet sent none).
    pub pod: PodInfo,
    /// The pod's service-account tokens by audience.
    pub tokens: ServiceAccountTokens,
    /// The nodePublishSecretRef Secret's data (empty when the class has no ref: the driver sends
    /// the literal `null`).
    pub secrets: NodePublishSecrets,
    /// The mode of files whose object names none (the request's `permission`, 0644 from every
    /// driver release).
    pub default_mode: u32,
}

impl fmt::Debug for MountInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MountInput")
            .field("parameters", &self.parameters)
            .field("pod", &self.pod)
            .field("tokens", &self.tokens)
            .field("secrets", &self.secrets)
            .field("default_mode", &format_args!("{:o}", self.default_mode))
            .finish()
    }
}

/// The pod a Mount is for, as kubelet names it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodInfo {
    /// `csi.storage.k8s.io/pod.name`
    pub name: String,
    /// `csi.storage.k8s.io/pod.namespace`
    pub namespace: String,
    /// `csi.storage.k8s.io/pod.uid`
    pub uid: String,
    /// `csi.storage.k8s.io/serviceAccount.name`
    pub service_account: String,
}

/// The pod's service-account tokens (`csi.storage.k8s.io/serviceAccount.tokens`), by audience.
#[derive(Default)]
pub struct ServiceAccountTokens {
    /// Audience → token.
    pub by_audience: BTreeMap<String, SecretString>,
}

impl fmt::Debug for ServiceAccountTokens {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Audiences are not secret; tokens are.
        f.debug_struct("ServiceAccountTokens")
            .field("audiences", &self.by_audience.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// The nodePublishSecretRef Secret's data: key → decoded string value.
#[derive(Default)]
pub struct NodePublishSecrets {
    /// Key → value.
    pub by_key: BTreeMap<String, SecretString>,
}

impl fmt::Debug for NodePublishSecrets {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NodePublishSecrets")
            .field("keys", &self.by_key.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// A Mount request the provider cannot decode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RequestError {
    /// `field` is not what the driver sends; `reason` says what was expected (never echoes a
    /// secret).
    Malformed {
        /// The request field or attribute key.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
}
