//! The pod's RAM role as Alibaba's provider finds it: the `ack.alibabacloud.com/role-arn`
//! annotation of the pod's ServiceAccount, read from the Kubernetes API with the provider's own
//! service-account token (RBAC: `get` on `serviceaccounts`). Answers are kept for a short TTL,
//! so a mass pod start costs one API call per ServiceAccount, not one per pod.
//!
//! Namespaces and names come from kubelet's pod attributes; they are checked to be Kubernetes
//! names before they go into a URL. Never logs or shows the provider's token, and never an API
//! answer beyond the one annotation it reads.

use std::fmt;
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use azure_access::client::{InsecureOverrides, Route, TransportOptions, http_client_with};
use azure_core::http::{HttpClient, Method, Request, Url};
use futures::StreamExt as _;
use secrecy::{ExposeSecret, SecretString};
use tokio::time::Instant;
use zeroize::Zeroizing;

use super::identity::{ROLE_ARN_ANNOTATION, ServiceAccountRoles};
use crate::lru::{Lru, lock};

/// Where the provider's own service-account token and the cluster's CA are, in a pod.
pub const IN_CLUSTER_TOKEN_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// See [`IN_CLUSTER_TOKEN_FILE`].
pub const IN_CLUSTER_CA_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/ca.crt";
/// The largest ServiceAccount answer read.
const MAX_ANSWER_BYTES: usize = 256 * 1024;
/// The largest token file read.
const MAX_TOKEN_BYTES: u64 = 16 * 1024;

/// A ServiceAccount's annotation (or its absence), and until when it is reused.
type Answer = (Option<String>, Instant);

/// How the Kubernetes API is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KubeSettings {
    /// The API server's base URL (`https://10.96.0.1:443`).
    pub api_url: String,
    /// The provider's service-account token (re-read on each call, as kubelet rotates it).
    pub token_file: PathBuf,
    /// The cluster's CA, trusted besides the system's.
    pub ca_file: Option<PathBuf>,
    /// How long an annotation (or its absence) is reused.
    pub ttl: Duration,
}

/// ServiceAccount annotations from the Kubernetes API.
pub struct KubernetesServiceAccounts {
    settings: KubeSettings,
    base: Url,
    http: Arc<dyn HttpClient>,
    answers: Mutex<Lru<(String, String), Answer>>,
}

impl fmt::Debug for KubernetesServiceAccounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KubernetesServiceAccounts")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl KubernetesServiceAccounts {
    /// A reader with `settings`, building its HTTPS client now. No call.
    pub fn new(settings: KubeSettings) -> Result<Self, azure_access::Error> {
        let base = Url::parse(&settings.api_url)
            .ok()
            .filter(|url| url.scheme() == "https" && url.host_str().is_some())
            .ok_or_else(|| azure_access::Error::Misconfigured {
                reason: format!(
                    "the Kubernetes API {:?} is not an https URL such as https://10.96.0.1:443",
                    settings.api_url
                ),
            })?;
        let transport = TransportOptions {
            ca_file: settings.ca_file.clone(),
            ..TransportOptions::default()
        };
        let http = http_client_with(&transport, Route::Remote, &InsecureOverrides::default())?;
        Ok(Self {
            settings,
            base,
            http,
            answers: Mutex::new(Lru::new(4096)),
        })
    }

    fn token(&self) -> Result<SecretString, String> {
        let unreadable = || {
            format!(
                "the provider's service account token {} cannot be read",
                self.settings.token_file.display()
            )
        };
        let file = std::fs::File::open(&self.settings.token_file).map_err(|_| unreadable())?;
        let mut bytes = Zeroizing::new(Vec::new());
        file.take(MAX_TOKEN_BYTES)
            .read_to_end(&mut bytes)
            .map_err(|_| unreadable())?;
        let text = std::str::from_utf8(&bytes).map_err(|_| unreadable())?;
        Ok(SecretString::from(text.trim().to_owned()))
    }

    async fn fetch(&self, namespace: &str, name: &str) -> Result<Option<String>, String> {
        let mut url = self.base.clone();
        url.set_path(&format!(
            "/api/v1/namespaces/{namespace}/serviceaccounts/{name}"
        ));
        let mut request = Request::new(url, Method::Get);
        request.insert_header(
            "authorization",
            format!("Bearer {}", self.token()?.expose_secret()),
        );
        request.insert_header("accept", "application/json");
        let response = self
            .http
            .execute_request(&request)
            .await
            .map_err(|_| "the Kubernetes API is unreachable".to_owned())?;
        let status = u16::from(response.status());
        let mut stream = response.into_body();
        let mut body = Vec::new();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|_| "the Kubernetes API's answer broke off".to_owned())?;
            if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                return Err("the Kubernetes API's answer is too large".to_owned());
            }
            body.extend_from_slice(&chunk);
        }
        match status {
            200 => {
                let account: serde_json::Value = serde_json::from_slice(&body)
                    .map_err(|_| "the Kubernetes API's answer is not JSON".to_owned())?;
                Ok(account["metadata"]["annotations"][ROLE_ARN_ANNOTATION]
                    .as_str()
                    .map(str::to_owned))
            }
            404 => Ok(None),
            401 | 403 => Err(format!(
                "the Kubernetes API refused the provider (HTTP {status}): it needs get on \
                 serviceaccounts"
            )),
            status => Err(format!("the Kubernetes API answered HTTP {status}")),
        }
    }
}

/// A DNS-1123 label (a namespace) or subdomain (a ServiceAccount name).
fn is_kubernetes_name(name: &str, max: usize) -> bool {
    (1..=max).contains(&name.len())
        && name.split('.').all(|label| {
            !label.is_empty()
                && label
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        })
}

#[async_trait::async_trait]
impl ServiceAccountRoles for KubernetesServiceAccounts {
    async fn role_arn(
        &self,
        namespace: &str,
        service_account: &str,
        deadline: Instant,
    ) -> Result<Option<String>, String> {
        if !is_kubernetes_name(namespace, 63)
            || namespace.contains('.')
            || !is_kubernetes_name(service_account, 253)
        {
            return Err(
                "the pod's namespace or ServiceAccount is not a Kubernetes name".to_owned(),
            );
        }
        let key = (namespace.to_owned(), service_account.to_owned());
        let now = Instant::now();
        if let Some((answer, until)) = lock(&self.answers).get(&key)
            && *until > now
        {
            return Ok(answer.clone());
        }
        let answer = tokio::time::timeout_at(deadline, self.fetch(namespace, service_account))
            .await
            .map_err(|_| "no answer from the Kubernetes API before the mount's deadline")??;
        let until = Instant::now() + self.settings.ttl;
        let evicted = lock(&self.answers).insert(key, (answer.clone(), until));
        drop(evicted);
        Ok(answer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_kubernetes_names_go_into_the_url() {
        for good in ["payments", "kube-system", "a1"] {
            assert!(is_kubernetes_name(good, 63), "{good}");
        }
        for bad in ["", "Payments", "a/b", "..", "a..b", "-a", "a b", "%2e"] {
            assert!(!is_kubernetes_name(bad, 63), "{bad}");
        }
        assert!(is_kubernetes_name("web.v2", 253));
    }

    #[test]
    fn only_an_https_api_is_accepted() {
        let settings = |url: &str| KubeSettings {
            api_url: url.to_owned(),
            token_file: PathBuf::from(IN_CLUSTER_TOKEN_FILE),
            ca_file: None,
            ttl: Duration::from_secs(30),
        };
        assert!(KubernetesServiceAccounts::new(settings("https://10.96.0.1:443")).is_ok());
        for bad in ["http://10.96.0.1", "10.96.0.1:443", ""] {
            assert!(
                KubernetesServiceAccounts::new(settings(bad)).is_err(),
                "{bad}"
            );
        }
    }
}
