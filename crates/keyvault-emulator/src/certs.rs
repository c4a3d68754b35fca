//! Certificates: the emulator's own CA and server leaf (CA:FALSE, SAN DNS:localhost and
//! IP:127.0.0.1, EKU serverAuth — what both SDKs' verifiers accept), loading a given
//! certificate and key instead, and RSA client certificates for the certificate credential.
//!
//! Private keys stay in memory; only the CA certificate (public) is written to disk.

use std::fmt;
use std::path::Path;
use std::sync::Arc;

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
};
use rsa::pkcs8::EncodePrivateKey;
use rustls::ServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use zeroize::Zeroizing;

use crate::error::EmulatorError;

pub use emulator_support::TlsSource;

/// The server side of TLS and the CA certificate clients trust.
pub struct ServerTls {
    /// The rustls configuration (HTTP/1.1 over TLS 1.2/1.3).
    pub config: Arc<ServerConfig>,
    /// The CA certificate, PEM.
    pub ca_pem: String,
}

fn tls_error(context: &str, error: impl fmt::Display) -> EmulatorError {
    EmulatorError::Tls(format!("{context}: {error}"))
}

fn read(path: &Path) -> Result<Vec<u8>, EmulatorError> {
    std::fs::read(path).map_err(|source| EmulatorError::Io {
        path: path.to_owned(),
        source,
    })
}

impl ServerTls {
    /// Builds the server's TLS from `source`; `extra_names` are added to a generated leaf's SAN.
    pub fn new(source: &TlsSource, extra_names: &[String]) -> Result<Self, EmulatorError> {
        match source {
            TlsSource::Generate => Self::generate(extra_names),
            TlsSource::Files {
                cert_chain,
                key,
                ca,
            } => {
                let chain = CertificateDer::pem_slice_iter(&read(cert_chain)?)
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| tls_error("reading the certificate chain", e))?;
                let key = PrivateKeyDer::from_pem_slice(&read(key)?)
                    .map_err(|e| tls_error("reading the private key", e))?;
                let ca_pem = String::from_utf8(read(ca)?)
                    .map_err(|e| tls_error("reading the CA certificate", e))?;
                Ok(Self {
                    config: server_config(chain, key)?,
                    ca_pem,
                })
            }
        }
    }

    fn generate(extra_names: &[String]) -> Result<Self, EmulatorError> {
        let ca_key = KeyPair::generate().map_err(|e| tls_error("CA key", e))?;
        let mut ca_params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| tls_error("CA parameters", e))?;
        let mut ca_name = DistinguishedName::new();
        ca_name.push(DnType::CommonName, "keyvault-emulator test CA");
        ca_name.push(DnType::OrganizationName, "kube-kms");
        ca_params.distinguished_name = ca_name;
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
        ca_params.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_cert = ca_params
            .self_signed(&ca_key)
            .map_err(|e| tls_error("CA certificate", e))?;
        let issuer = Issuer::new(ca_params, ca_key);

        let mut names = vec!["localhost".to_owned(), "127.0.0.1".to_owned()];
        names.extend(extra_names.iter().cloned());
        let leaf_key = KeyPair::generate().map_err(|e| tls_error("server key", e))?;
        let mut leaf_params =
            CertificateParams::new(names).map_err(|e| tls_error("server parameters", e))?;
        let mut leaf_name = DistinguishedName::new();
        leaf_name.push(DnType::CommonName, "localhost");
        leaf_params.distinguished_name = leaf_name;
        leaf_params.is_ca = IsCa::ExplicitNoCa;
        leaf_params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        leaf_params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        leaf_params.use_authority_key_identifier_extension = true;
        let leaf_cert = leaf_params
            .signed_by(&leaf_key, &issuer)
            .map_err(|e| tls_error("server certificate", e))?;

        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        Ok(Self {
            config: server_config(vec![leaf_cert.der().clone()], key)?,
            ca_pem: ca_cert.pem(),
        })
    }
}

fn server_config(
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<ServerConfig>, EmulatorError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| tls_error("protocol versions", e))?
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| tls_error("server certificate and key", e))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// An RSA client certificate and its key, for Entra's certificate credential.
#[derive(Clone)]
pub struct ClientCertificate {
    /// The self-signed certificate, PEM (register this with the emulator).
    pub cert_pem: String,
    key_pem: Zeroizing<String>,
}

impl fmt::Debug for ClientCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientCertificate")
            .field("cert_pem", &self.cert_pem)
            .field("key_pem", &"[redacted]")
            .finish()
    }
}

impl ClientCertificate {
    /// Generates an RSA-2048 key and a self-signed certificate for `common_name`.
    pub fn generate(common_name: &str) -> Result<Self, EmulatorError> {
        let key = rsa::PrivateKey::new(&mut rand::rngs::SysRng, 2048)
            .map_err(|e| tls_error("client key", e))?;
        let der = key
            .to_pkcs8_der()
            .map_err(|e| tls_error("client key encoding", e))?;
        let der = PrivatePkcs8KeyDer::from(der.as_bytes().to_vec());
        let key_pair = KeyPair::from_pkcs8_der_and_sign_algo(&der, &rcgen::PKCS_RSA_SHA256)
            .map_err(|e| tls_error("client key", e))?;
        let mut params = CertificateParams::new(Vec::<String>::new())
            .map_err(|e| tls_error("client certificate parameters", e))?;
        let mut name = DistinguishedName::new();
        name.push(DnType::CommonName, common_name);
        params.distinguished_name = name;
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .self_signed(&key_pair)
            .map_err(|e| tls_error("client certificate", e))?;
        Ok(Self {
            cert_pem: cert.pem(),
            key_pem: Zeroizing::new(key_pair.serialize_pem()),
        })
    }

    /// The private key, PKCS#8 PEM. Exposed so a test can hand it to an SDK credential.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// The key followed by the certificate, the single-file PEM form the SDKs accept.
    pub fn combined_pem(&self) -> Zeroizing<String> {
        Zeroizing::new(format!("{}{}", self.key_pem.as_str(), self.cert_pem))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::RegisteredCertificate;

    #[test]
    fn generated_server_tls_has_a_ca_pem() {
        let tls = ServerTls::new(&TlsSource::Generate, &[]).unwrap();
        assert!(tls.ca_pem.starts_with("-----BEGIN CERTIFICATE-----"));
        assert_eq!(tls.config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[test]
    fn client_certificates_register_and_hide_their_key() {
        let cert = ClientCertificate::generate("kube-kms test").unwrap();
        assert!(cert.key_pem().contains("PRIVATE KEY"));
        assert!(!format!("{cert:?}").contains("PRIVATE KEY"));
        let registered = RegisteredCertificate::from_pem(&cert.cert_pem).unwrap();
        assert_eq!(registered.sha1.len(), 20);
    }
}
