//! Elliptic curve key material (P-256, P-384, P-521) through OpenSSL: generation, import from
//! JWK components (`crv`, `x`, `y`, `d`), the public coordinates a JWK shows, and PKCS#8 for
//! certificates.
//!
//! The private scalar never leaves this module except as PKCS#8 for a certificate's backing
//! secret or PFX, which the service hands out too.

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::nid::Nid;
use openssl::pkey::{PKey, Private};
use zeroize::Zeroizing;

use super::CryptoError;
use crate::model::Curve;

/// An EC private key on one of the service's curves.
pub struct EcMaterial {
    curve: Curve,
    key: EcKey<Private>,
}

fn nid(curve: Curve) -> Nid {
    match curve {
        Curve::P256 => Nid::X9_62_PRIME256V1,
        Curve::P384 => Nid::SECP384R1,
        Curve::P521 => Nid::SECP521R1,
    }
}

fn group(curve: Curve) -> Result<EcGroup, CryptoError> {
    EcGroup::from_curve_name(nid(curve)).map_err(|_| CryptoError::InvalidKey("unknown curve"))
}

fn bn(bytes: &[u8]) -> Result<BigNum, CryptoError> {
    BigNum::from_slice(bytes).map_err(|_| CryptoError::InvalidKey("malformed EC component"))
}

impl EcMaterial {
    /// Generates a key on `curve`.
    pub fn generate(curve: Curve) -> Result<Self, CryptoError> {
        let group = group(curve)?;
        let key = EcKey::generate(&group)
            .map_err(|_| CryptoError::InvalidKey("EC key generation failed"))?;
        Ok(Self { curve, key })
    }

    /// Builds a key from big-endian JWK components; the point must be on the curve and match
    /// the private scalar.
    pub fn from_components(
        curve: Curve,
        x: &[u8],
        y: &[u8],
        d: &[u8],
    ) -> Result<Self, CryptoError> {
        let len = curve.coordinate_len();
        if x.len() > len || y.len() > len || d.len() > len {
            return Err(CryptoError::InvalidKey(
                "an EC component is longer than the curve's field",
            ));
        }
        let group = group(curve)?;
        let public = EcKey::from_public_key_affine_coordinates(&group, &*bn(x)?, &*bn(y)?)
            .map_err(|_| CryptoError::InvalidKey("the EC point is not on the curve"))?;
        let key = EcKey::from_private_components(&group, &*bn(d)?, public.public_key())
            .map_err(|_| CryptoError::InvalidKey("the EC components are inconsistent"))?;
        key.check_key()
            .map_err(|_| CryptoError::InvalidKey("the EC components are inconsistent"))?;
        Ok(Self { curve, key })
    }

    /// Takes an OpenSSL EC key (from a PFX or PEM) if it is on one of the service's curves.
    pub fn from_openssl(key: EcKey<Private>) -> Result<Self, CryptoError> {
        let curve = [Curve::P256, Curve::P384, Curve::P521]
            .into_iter()
            .find(|curve| key.group().curve_name() == Some(nid(*curve)))
            .ok_or(CryptoError::InvalidKey(
                "EC keys must be on P-256, P-384 or P-521",
            ))?;
        Ok(Self { curve, key })
    }

    /// The curve.
    pub fn curve(&self) -> Curve {
        self.curve
    }

    /// The public point's JWK `x` and `y`, each left-padded to the field length.
    pub fn public_coordinates(&self) -> Option<(Vec<u8>, Vec<u8>)> {
        let mut ctx = BigNumContext::new().ok()?;
        let (mut x, mut y) = (BigNum::new().ok()?, BigNum::new().ok()?);
        self.key
            .public_key()
            .affine_coordinates(self.key.group(), &mut x, &mut y, &mut ctx)
            .ok()?;
        let len = i32::try_from(self.curve.coordinate_len()).ok()?;
        Some((x.to_vec_padded(len).ok()?, y.to_vec_padded(len).ok()?))
    }

    /// The key as an OpenSSL `PKey`, for certificates and PFX files.
    pub fn to_pkey(&self) -> Result<PKey<Private>, CryptoError> {
        PKey::from_ec_key(self.key.clone())
            .map_err(|_| CryptoError::InvalidKey("EC key conversion failed"))
    }

    /// Unencrypted PKCS#8 DER of the private key.
    pub fn to_pkcs8_der(&self) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
        self.to_pkey()?
            .private_key_to_pkcs8()
            .map(Zeroizing::new)
            .map_err(|_| CryptoError::InvalidKey("EC key encoding failed"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_round_trip_on_every_curve() {
        for curve in [Curve::P256, Curve::P384, Curve::P521] {
            let key = EcMaterial::generate(curve).unwrap();
            let (x, y) = key.public_coordinates().unwrap();
            assert_eq!(
                (x.len(), y.len()),
                (curve.coordinate_len(), curve.coordinate_len())
            );
            let d = key
                .key
                .private_key()
                .to_vec_padded(i32::try_from(curve.coordinate_len()).unwrap())
                .unwrap();
            let again = EcMaterial::from_components(curve, &x, &y, &d).unwrap();
            assert_eq!(again.public_coordinates().unwrap(), (x.clone(), y.clone()));
            let mut bad_y = y.clone();
            bad_y[0] ^= 1;
            assert!(EcMaterial::from_components(curve, &x, &bad_y, &d).is_err());
        }
    }
}
