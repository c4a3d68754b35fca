//! Reading kube-apiserver's keys from etcd, page by page, over etcd's v3 gRPC API with TLS
//! client authentication: the one call is `KV.Range` (proto/etcd/rpc.proto).
//!
//! Read-only by construction: the generated client holds no call that writes. A page is a
//! bounded number of keys (`limit`), so a census never holds the keyspace in memory; a page
//! too large for one gRPC message is fetched again at half the size. Plain `http://` is
//! accepted only for loopback endpoints (test clusters); anything else needs `https://` with a
//! CA and a client certificate, as etcd on a control-plane host requires.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::proto::etcd::RangeRequest;
use crate::proto::etcd::kv_client::KvClient;

/// kubeadm's etcd CA.
pub const DEFAULT_CACERT: &str = "/etc/kubernetes/pki/etcd/ca.crt";
/// kubeadm's client certificate for kube-apiserver, which can read everything it stored.
pub const DEFAULT_CERT: &str = "/etc/kubernetes/pki/apiserver-etcd-client.crt";
/// Its key.
pub const DEFAULT_KEY: &str = "/etc/kubernetes/pki/apiserver-etcd-client.key";
/// etcd on the local control-plane host.
pub const DEFAULT_ENDPOINT: &str = "https://127.0.0.1:2379";
/// The largest response accepted: a page of large objects (etcd stores values up to 1.5 MiB).
const MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;
/// Time for one connection attempt.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Time for one Range call.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where etcd is and how to authenticate to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdOptions {
    /// `http(s)://host:port`, tried in order until one connects.
    pub endpoints: Vec<String>,
    /// The CA that signed etcd's serving certificate.
    pub cacert: PathBuf,
    /// The client certificate.
    pub cert: PathBuf,
    /// Its private key (read to connect, never logged).
    pub key: PathBuf,
}

/// Why etcd could not be read.
#[derive(Debug)]
pub enum EtcdError {
    /// An endpoint or file option cannot be used.
    Options(String),
    /// No endpoint could be connected to.
    Connect {
        /// Each endpoint and why it failed.
        attempts: Vec<(String, tonic::transport::Error)>,
    },
    /// A Range call failed.
    Range(tonic::Status),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Options(reason) => f.write_str(reason),
            Self::Connect { attempts } => {
                f.write_str("cannot connect to etcd:")?;
                for (endpoint, error) in attempts {
                    write!(f, " {endpoint}: {error}")?;
                    let mut source = std::error::Error::source(error);
                    while let Some(cause) = source {
                        write!(f, ": {cause}")?;
                        source = cause.source();
                    }
                    f.write_str(";")?;
                }
                Ok(())
            }
            Self::Range(status) => write!(
                f,
                "etcd refused a range read: {:?}: {}",
                status.code(),
                status.message()
            ),
        }
    }
}

impl std::error::Error for EtcdError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Range(status) => Some(status),
            _ => None,
        }
    }
}

/// One key and its value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The etcd key.
    pub key: Vec<u8>,
    /// The stored value.
    pub value: Vec<u8>,
}

/// A connection to etcd.
pub struct Etcd {
    client: KvClient<Channel>,
    endpoint: String,
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn read(path: &Path, what: &str, flag: &str) -> Result<Vec<u8>, EtcdError> {
    std::fs::read(path).map_err(|error| {
        EtcdError::Options(format!(
            "cannot read the etcd {what} {} ({error}); give it with {flag}",
            path.display()
        ))
    })
}

impl Etcd {
    /// Connects to the first endpoint that answers.
    pub async fn connect(options: &EtcdOptions) -> Result<Self, EtcdError> {
        if options.endpoints.is_empty() {
            return Err(EtcdError::Options(
                "no etcd endpoint given (--etcd-endpoints)".to_owned(),
            ));
        }
        let mut tls = None;
        let mut attempts = Vec::new();
        for url in &options.endpoints {
            let uri: tonic::codegen::http::Uri = url.parse().map_err(|_| {
                EtcdError::Options(format!(
                    "{url:?} is not an etcd endpoint; expected https://host:port"
                ))
            })?;
            let host = uri.host().unwrap_or_default();
            let mut endpoint = Endpoint::from(uri.clone())
                .connect_timeout(CONNECT_TIMEOUT)
                .timeout(CALL_TIMEOUT);
            match uri.scheme_str() {
                Some("https") => {
                    let config = match &tls {
                        Some(config) => ClientTlsConfig::clone(config),
                        None => {
                            let ca = read(&options.cacert, "CA certificate", "--etcd-cacert")?;
                            let cert = read(&options.cert, "client certificate", "--etcd-cert")?;
                            let key = read(&options.key, "client key", "--etcd-key")?;
                            let config = ClientTlsConfig::new()
                                .ca_certificate(Certificate::from_pem(ca))
                                .identity(Identity::from_pem(cert, key));
                            tls = Some(config.clone());
                            config
                        }
                    };
                    endpoint = endpoint.tls_config(config).map_err(|error| {
                        EtcdError::Options(format!("TLS settings for {url}: {error}"))
                    })?;
                }
                Some("http") if is_loopback(host) => {}
                Some("http") => {
                    return Err(EtcdError::Options(format!(
                        "{url}: plain http is accepted only on loopback; use https with \
                         --etcd-cacert, --etcd-cert and --etcd-key"
                    )));
                }
                _ => {
                    return Err(EtcdError::Options(format!(
                        "{url:?} is not an etcd endpoint; expected https://host:port"
                    )));
                }
            }
            match endpoint.connect().await {
                Ok(channel) => {
                    let client =
                        KvClient::new(channel).max_decoding_message_size(MAX_RESPONSE_BYTES);
                    return Ok(Self {
                        client,
                        endpoint: url.clone(),
                    });
                }
                Err(error) => attempts.push((url.clone(), error)),
            }
        }
        Err(EtcdError::Connect { attempts })
    }

    /// Accepts responses of at most `bytes` rather than 256 MiB: a smaller page is then asked
    /// for sooner. Lets a test reach that path without storing 256 MiB.
    #[must_use]
    pub fn with_max_response_bytes(mut self, bytes: usize) -> Self {
        self.client = self.client.max_decoding_message_size(bytes);
        self
    }

    /// The endpoint connected to.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// How many keys start with `prefix`, and etcd's current revision.
    pub async fn count(&mut self, prefix: &[u8]) -> Result<(u64, i64), EtcdError> {
        let response = self
            .client
            .range(RangeRequest {
                key: prefix.to_vec(),
                range_end: prefix_end(prefix),
                count_only: true,
                ..RangeRequest::default()
            })
            .await
            .map_err(EtcdError::Range)?
            .into_inner();
        let revision = response.header.map_or(0, |header| header.revision);
        Ok((u64::try_from(response.count).unwrap_or(0), revision))
    }

    /// Up to `limit` keys with `prefix`, from `start` (inclusive; the prefix itself for the
    /// first page), in key order, and whether more follow. A page too large for one message
    /// is asked again with a smaller limit.
    pub async fn page(
        &mut self,
        prefix: &[u8],
        start: &[u8],
        limit: u32,
    ) -> Result<(Vec<Entry>, bool), EtcdError> {
        let mut limit = limit.max(1);
        loop {
            let request = RangeRequest {
                key: start.to_vec(),
                range_end: prefix_end(prefix),
                limit: i64::from(limit),
                ..RangeRequest::default()
            };
            match self.client.range(request).await {
                Ok(response) => {
                    let response = response.into_inner();
                    let entries = response
                        .kvs
                        .into_iter()
                        .map(|kv| Entry {
                            key: kv.key,
                            value: kv.value,
                        })
                        .collect();
                    return Ok((entries, response.more));
                }
                // A page over the response limit: tonic reports it as OUT_OF_RANGE when
                // decoding, a server or proxy as RESOURCE_EXHAUSTED.
                Err(status)
                    if matches!(
                        status.code(),
                        tonic::Code::ResourceExhausted | tonic::Code::OutOfRange
                    ) && limit > 1 =>
                {
                    limit /= 2;
                }
                Err(status) => return Err(EtcdError::Range(status)),
            }
        }
    }
}

/// The key right after `last`: where the next page starts.
pub fn next_key(last: &[u8]) -> Vec<u8> {
    let mut next = last.to_vec();
    next.push(0);
    next
}

/// The end of the range of keys that start with `prefix` (etcd's `GetPrefixRangeEnd`): the
/// prefix with its last byte below 0xff incremented and what follows dropped.
pub fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    // Every byte was 0xff (or the prefix was empty): the range runs to the end of the keyspace.
    vec![0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"/registry/"), b"/registry0");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
        assert_eq!(next_key(b"/registry/a"), b"/registry/a\0");
    }

    #[tokio::test]
    async fn plain_http_is_for_loopback_only() {
        assert!(is_loopback("127.0.0.1") && is_loopback("[::1]") && is_loopback("localhost"));
        let options = EtcdOptions {
            endpoints: vec!["http://10.0.0.1:2379".into()],
            cacert: PathBuf::new(),
            cert: PathBuf::new(),
            key: PathBuf::new(),
        };
        let Err(error) = Etcd::connect(&options).await else {
            panic!("connected")
        };
        assert!(error.to_string().contains("loopback"), "{error}");
        let https = EtcdOptions {
            endpoints: vec!["https://127.0.0.1:1".into()],
            cacert: "/nonexistent/ca.crt".into(),
            ..options
        };
        let Err(error) = Etcd::connect(&https).await else {
            panic!("connected")
        };
        let error = error.to_string();
        assert!(
            error.contains("/nonexistent/ca.crt") && error.contains("--etcd-cacert"),
            "{error}"
        );
    }
}
