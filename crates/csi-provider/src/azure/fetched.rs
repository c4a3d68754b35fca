//! What a Key Vault read returns, in the shape the file renderer needs: a secret's value with
//! its content type and `kid`, a key's public JWK, a certificate's DER, and version listings.
//! The vault client fills these; [`super::content`] turns them into files.
//!
//! A secret's value is secret: it lives in a zeroizing buffer and no `Debug` shows it.

use std::fmt;

use zeroize::Zeroizing;

/// A secret version (`GET /secrets/{name}/{version}`).
pub struct FetchedSecret {
    /// The versioned id, `https://{vault}/secrets/{name}/{version}`.
    pub id: String,
    /// The value, as stored.
    pub value: Zeroizing<String>,
    /// `contentType` (`application/x-pkcs12` or `application/x-pem-file` on a certificate's
    /// backing secret).
    pub content_type: Option<String>,
    /// `kid`: set only on a certificate's backing secret.
    pub kid: Option<String>,
}

impl fmt::Debug for FetchedSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FetchedSecret")
            .field("id", &self.id)
            .field("value", &"[redacted]")
            .field("content_type", &self.content_type)
            .field("kid", &self.kid)
            .finish()
    }
}

/// A key version's public half (`GET /keys/{name}/{version}`): the JWK's fields, base64url
/// decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedKey {
    /// The versioned kid.
    pub id: String,
    /// `kty`: RSA, RSA-HSM, EC, EC-HSM, oct, oct-HSM.
    pub kty: String,
    /// RSA modulus.
    pub n: Option<Vec<u8>>,
    /// RSA public exponent.
    pub e: Option<Vec<u8>>,
    /// EC curve: P-256, P-384, P-521, P-256K.
    pub crv: Option<String>,
    /// EC x coordinate.
    pub x: Option<Vec<u8>>,
    /// EC y coordinate.
    pub y: Option<Vec<u8>>,
}

/// A certificate version (`GET /certificates/{name}/{version}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FetchedCert {
    /// The versioned id.
    pub id: String,
    /// `cer`: the leaf certificate, DER.
    pub cer: Vec<u8>,
}

/// One object version, fetched.
#[derive(Debug)]
pub enum Fetched {
    /// A secret.
    Secret(FetchedSecret),
    /// A key.
    Key(FetchedKey),
    /// A certificate.
    Cert(FetchedCert),
}

impl Fetched {
    /// The versioned id.
    pub fn id(&self) -> &str {
        match self {
            Self::Secret(secret) => &secret.id,
            Self::Key(key) => &key.id,
            Self::Cert(cert) => &cert.id,
        }
    }

    /// The version: the last segment of the versioned id (32 hex on Key Vault).
    pub fn version(&self) -> &str {
        let id = self.id().trim_end_matches('/');
        id.rsplit('/').next().unwrap_or(id)
    }
}

/// One entry of a version listing (`GET /{secrets|keys|certificates}/{name}/versions`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VersionItem {
    /// The version (last segment of the versioned id).
    pub version: String,
    /// `attributes.enabled`.
    pub enabled: bool,
    /// `attributes.created`, unix seconds.
    pub created: i64,
}
