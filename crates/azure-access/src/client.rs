//! The HTTPS transport every Azure call goes through: our own reqwest clients (an extra CA
//! file, connect and per-attempt timeouts, no redirects) handed to the official SDK with the
//! SDK's retries turned off, so that [`crate::retry`] is the only retry policy.
//!
//! Key Vault and Entra ID are reached over HTTPS only, through HTTPS_PROXY / NO_PROXY when set.
//! The managed identity endpoints (IMDS, App Service's IDENTITY_ENDPOINT) are plain HTTP on the
//! host or its link-local network: their client never uses a proxy, so a token never crosses one
//! in clear.
//!
//! Nothing here logs a request or response body: they carry keys, secrets and tokens. The SDK's
//! own logging policy redacts headers; Authorization never reaches a log.
//!
//! [`InsecureOverrides`] exist for tests and emulators only (the products expose them as
//! `insecure_*` / `--insecure-*` settings): they send requests for real Azure names to other
//! addresses, which is what an attacker with those settings would want.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use azure_core::http::{
    AsyncRawResponse, ClientOptions, HttpClient, Request, RetryOptions, Transport, Url,
};

use crate::Error;
use crate::cloud::Cloud;

/// How a process reaches Azure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportOptions {
    /// A PEM file of extra CA certificates trusted besides the system's (a TLS-inspecting
    /// proxy's, a private cloud's, an emulator's).
    pub ca_file: Option<PathBuf>,
    /// How long a TCP and TLS connection may take.
    pub connect_timeout: Duration,
    /// How long one HTTP attempt may take (the operation's deadline also bounds it).
    pub request_timeout: Duration,
}

impl Default for TransportOptions {
    fn default() -> Self {
        Self {
            ca_file: None,
            connect_timeout: Duration::from_secs(1),
            request_timeout: Duration::from_secs(2),
        }
    }
}

/// Where a client sends its requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Key Vault and Entra ID: HTTPS only, through HTTPS_PROXY / NO_PROXY as reqwest reads them.
    Remote,
    /// The host's managed identity endpoint: plain HTTP allowed, never through a proxy.
    ManagedIdentity,
}

/// Where the VM managed identity endpoint (IMDS) is; the SDK's managed identity credential
/// always sends there.
pub const IMDS_ORIGIN: &str = "http://169.254.169.254";

/// FOR TESTS AND EMULATORS ONLY: requests for real Azure names sent elsewhere. Empty (the
/// default) changes nothing.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InsecureOverrides {
    /// Hosts under a DNS suffix connect to a fixed address instead of what DNS answers (every
    /// vault of an emulated cloud, `<vault>.vault.emu.test`, reaches one emulator). The TLS
    /// certificate is still verified against the host name.
    pub resolve: Vec<ResolveOverride>,
    /// A base URL (`http://127.0.0.1:8080`) that requests for the VM managed identity endpoint
    /// ([`IMDS_ORIGIN`]) go to instead, on the [`Route::ManagedIdentity`] client only.
    pub imds_endpoint: Option<String>,
}

/// One DNS override: `domain_suffix` itself and every host under it resolve to `addr`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolveOverride {
    /// A DNS name without a leading dot, lowercase (`vault.emu.test`).
    pub domain_suffix: String,
    /// Where those hosts connect. A port of 0 keeps the URL's port (443 for https).
    pub addr: SocketAddr,
}

impl ResolveOverride {
    /// Parses `SUFFIX=ADDRESS`, e.g. `vault.emu.test=127.0.0.1:8443`.
    pub fn parse(text: &str) -> Result<Self, Error> {
        let wrong = || Error::Misconfigured {
            reason: format!(
                "{text:?} is not a DNS override: expected SUFFIX=IP:PORT, e.g. \
                 vault.emu.test=127.0.0.1:8443"
            ),
        };
        let (suffix, addr) = text.trim().split_once('=').ok_or_else(wrong)?;
        let domain_suffix = suffix.trim().trim_matches('.').to_ascii_lowercase();
        let valid_name = crate::cloud::is_dns_name(&domain_suffix);
        let addr = addr.trim().parse::<SocketAddr>().map_err(|_| wrong())?;
        if !valid_name {
            return Err(wrong());
        }
        Ok(Self {
            domain_suffix,
            addr,
        })
    }

    fn matches(&self, host: &str) -> bool {
        host == self.domain_suffix
            || host
                .strip_suffix(self.domain_suffix.as_str())
                .is_some_and(|rest| rest.ends_with('.'))
    }
}

/// A reqwest client for `route`, handed to the SDK as its transport.
pub fn http_client(options: &TransportOptions, route: Route) -> Result<Arc<dyn HttpClient>, Error> {
    http_client_with(options, route, &InsecureOverrides::default())
}

/// [`http_client`] with test and emulator overrides applied (none when `overrides` is empty).
pub fn http_client_with(
    options: &TransportOptions,
    route: Route,
    overrides: &InsecureOverrides,
) -> Result<Arc<dyn HttpClient>, Error> {
    let mut builder = reqwest::Client::builder()
        .connect_timeout(options.connect_timeout)
        .timeout(options.request_timeout)
        .redirect(reqwest::redirect::Policy::none())
        .https_only(route == Route::Remote);
    if route == Route::ManagedIdentity {
        builder = builder.no_proxy();
    }
    if let Some(path) = &options.ca_file {
        builder = builder.tls_certs_merge(read_ca_file(path)?);
    }
    if !overrides.resolve.is_empty() {
        builder = builder.dns_resolver(Arc::new(SuffixResolver {
            overrides: overrides.resolve.clone(),
        }));
    }
    let client = builder.build().map_err(|error| Error::Misconfigured {
        reason: format!("cannot build the HTTPS client: {error}"),
    })?;
    match (&overrides.imds_endpoint, route) {
        (Some(endpoint), Route::ManagedIdentity) => {
            let to = Url::parse(endpoint)
                .ok()
                .filter(|url| {
                    matches!(url.scheme(), "http" | "https")
                        && url.host_str().is_some()
                        && url.path() == "/"
                        && url.query().is_none()
                })
                .ok_or_else(|| Error::Misconfigured {
                    reason: format!(
                        "the managed identity endpoint override {endpoint:?} is not an http(s) \
                         base URL such as http://127.0.0.1:8080"
                    ),
                })?;
            Ok(Arc::new(Redirected {
                inner: client,
                from: Url::parse(IMDS_ORIGIN).map_err(|_| Error::Misconfigured {
                    reason: "the IMDS origin does not parse".to_owned(),
                })?,
                to,
            }))
        }
        _ => Ok(Arc::new(client)),
    }
}

/// Resolves hosts under an overridden suffix to its address, and every other host as the
/// system resolver does.
struct SuffixResolver {
    overrides: Vec<ResolveOverride>,
}

impl reqwest::dns::Resolve for SuffixResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().trim_end_matches('.').to_ascii_lowercase();
        if let Some(found) = self.overrides.iter().find(|o| o.matches(&host)) {
            let addr = found.addr;
            return Box::pin(
                async move { Ok(Box::new(std::iter::once(addr)) as reqwest::dns::Addrs) },
            );
        }
        Box::pin(async move {
            let addrs: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

/// Sends requests for one origin to another (the IMDS override); others pass unchanged.
struct Redirected {
    inner: reqwest::Client,
    from: Url,
    to: Url,
}

impl fmt::Debug for Redirected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Redirected({} -> {})", self.from, self.to)
    }
}

#[async_trait::async_trait]
impl HttpClient for Redirected {
    async fn execute_request(&self, request: &Request) -> azure_core::Result<AsyncRawResponse> {
        if request.url().origin() != self.from.origin() {
            return self.inner.execute_request(request).await;
        }
        let mut redirected = request.clone();
        let url = redirected.url_mut();
        let rebased = url.set_scheme(self.to.scheme()).is_ok()
            && url.set_host(self.to.host_str()).is_ok()
            && url.set_port(self.to.port()).is_ok();
        if !rebased {
            return Err(azure_core::Error::with_message(
                azure_core::error::ErrorKind::Other,
                "cannot redirect the managed identity request",
            ));
        }
        self.inner.execute_request(&redirected).await
    }
}

fn read_ca_file(path: &Path) -> Result<Vec<reqwest::Certificate>, Error> {
    let pem = std::fs::read(path).map_err(|error| Error::Misconfigured {
        reason: format!("cannot read azure.ca_file {}: {error}", path.display()),
    })?;
    let certificates =
        reqwest::Certificate::from_pem_bundle(&pem).map_err(|error| Error::Misconfigured {
            reason: format!(
                "azure.ca_file {} is not a PEM bundle of certificates: {error}",
                path.display()
            ),
        })?;
    if certificates.is_empty() {
        return Err(Error::Misconfigured {
            reason: format!("azure.ca_file {} holds no PEM certificate", path.display()),
        });
    }
    Ok(certificates)
}

/// SDK client options: our transport, the SDK's retries off (the caller retries within its
/// deadline, see [`crate::retry`]), and the cloud whose authority credentials use.
pub fn client_options(http: &Arc<dyn HttpClient>, cloud: &Cloud) -> ClientOptions {
    ClientOptions {
        retry: RetryOptions::none(),
        transport: Some(Transport::new(Arc::clone(http))),
        cloud: Some(cloud.sdk_configuration()),
        ..ClientOptions::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_must_hold_certificates() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.pem");
        std::fs::write(&path, "not a certificate").unwrap();
        let options = TransportOptions {
            ca_file: Some(path.clone()),
            ..TransportOptions::default()
        };
        let error = http_client(&options, Route::Remote)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("ca.pem"), "{error}");
        let missing = TransportOptions {
            ca_file: Some(dir.path().join("missing.pem")),
            ..TransportOptions::default()
        };
        let error = http_client(&missing, Route::Remote)
            .err()
            .unwrap()
            .to_string();
        assert!(error.contains("missing.pem"), "{error}");
        assert!(http_client(&TransportOptions::default(), Route::ManagedIdentity).is_ok());
    }

    #[test]
    fn a_resolve_override_covers_its_suffix_and_nothing_else() {
        let parsed = ResolveOverride::parse(" .Vault.Emu.Test.=127.0.0.1:8443 ").unwrap();
        assert_eq!(parsed.domain_suffix, "vault.emu.test");
        assert_eq!(parsed.addr, "127.0.0.1:8443".parse().unwrap());
        assert!(parsed.matches("vault.emu.test"));
        assert!(parsed.matches("alpha.vault.emu.test"));
        assert!(parsed.matches("a.b.vault.emu.test"));
        assert!(!parsed.matches("evilvault.emu.test"));
        assert!(!parsed.matches("vault.emu.test.evil"));
        for wrong in [
            "vault.emu.test",
            "vault.emu.test=localhost:1",
            "=127.0.0.1:1",
            "a_b.test=127.0.0.1:1",
            "a..b=127.0.0.1:1",
        ] {
            let error = ResolveOverride::parse(wrong).unwrap_err().to_string();
            assert!(error.contains("SUFFIX=IP:PORT"), "{wrong}: {error}");
        }
    }

    #[test]
    fn an_imds_override_must_be_a_base_url() {
        for wrong in [
            "169.254.169.254",
            "ftp://127.0.0.1:1",
            "http://127.0.0.1:1/x",
        ] {
            let overrides = InsecureOverrides {
                imds_endpoint: Some(wrong.to_owned()),
                ..InsecureOverrides::default()
            };
            let error = http_client_with(
                &TransportOptions::default(),
                Route::ManagedIdentity,
                &overrides,
            )
            .err()
            .unwrap()
            .to_string();
            assert!(error.contains("base URL"), "{wrong}: {error}");
            // The Remote client never talks to IMDS: the override does not apply to it.
            assert!(
                http_client_with(&TransportOptions::default(), Route::Remote, &overrides).is_ok()
            );
        }
    }
}
