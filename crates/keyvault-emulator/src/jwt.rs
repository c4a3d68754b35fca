//! Compact JWTs: parsing client assertions, verifying their RS256 / PS256 signatures against a
//! registered certificate's key, and minting the emulator's own tokens.
//!
//! Access tokens the emulator mints are JWT-shaped (so clients that peek at claims work) but
//! their signature is random: the emulator recognises its tokens by lookup, never by signature.

use rsa::PublicKey;
use serde_json::Value;
use sha2::Sha256;

use crate::b64;
use crate::crypto::{CryptoError, fill_random};

/// A JWT split into its parts; nothing is verified yet.
#[derive(Debug, Clone)]
pub struct Jwt {
    /// The decoded header.
    pub header: Value,
    /// The decoded claims.
    pub claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

impl Jwt {
    /// Splits and decodes `token`; `None` if it is not a compact JWT with JSON header and claims.
    pub fn parse(token: &str) -> Option<Self> {
        let token = token.trim();
        let mut parts = token.split('.');
        let (header, claims, signature) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let decode_json = |part: &str| -> Option<Value> {
            let value: Value = serde_json::from_slice(&b64::decode_plain(part)?).ok()?;
            value.is_object().then_some(value)
        };
        Some(Self {
            header: decode_json(header)?,
            claims: decode_json(claims)?,
            signing_input: format!("{header}.{claims}"),
            signature: b64::decode_plain(signature)?,
        })
    }

    /// The `alg` header.
    pub fn alg(&self) -> Option<&str> {
        self.header.get("alg").and_then(Value::as_str)
    }

    /// A string claim.
    pub fn claim(&self, name: &str) -> Option<&str> {
        self.claims.get(name).and_then(Value::as_str)
    }

    /// A numeric date claim (seconds).
    pub fn time_claim(&self, name: &str) -> Option<i64> {
        self.claims.get(name).and_then(|v| {
            v.as_i64()
                .or_else(|| v.as_f64().map(|f| f as i64))
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        })
    }

    /// Whether `aud` (a string or an array of strings) contains `audience`.
    pub fn has_audience(&self, accept: impl Fn(&str) -> bool) -> bool {
        match self.claims.get("aud") {
            Some(Value::String(aud)) => accept(aud),
            Some(Value::Array(auds)) => auds.iter().filter_map(Value::as_str).any(accept),
            _ => false,
        }
    }

    /// Verifies the signature with `key`: RS256 (PKCS#1 v1.5) or PS256 (PSS), per `alg`.
    pub fn verify(&self, key: &PublicKey) -> bool {
        let message = self.signing_input.as_bytes();
        match self.alg() {
            Some("RS256") => key
                .pkcs1v15_verify::<Sha256>(message, &self.signature)
                .is_ok(),
            Some("PS256") => key.pss_verify::<Sha256>(message, &self.signature).is_ok(),
            _ => false,
        }
    }
}

/// Mints a JWT with the given header and claims and a random (unverifiable) signature.
pub fn mint(header: &Value, claims: &Value) -> Result<String, CryptoError> {
    let mut signature = [0u8; 32];
    fill_random(&mut signature)?;
    Ok(format!(
        "{}.{}.{}",
        b64::encode(header.to_string().as_bytes()),
        b64::encode(claims.to_string().as_bytes()),
        b64::encode(&signature)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::rngs::SysRng;
    use rsa::PrivateKey;
    use serde_json::json;

    fn signed(key: &PrivateKey, alg: &str) -> String {
        let header = b64::encode(json!({"alg": alg, "typ": "JWT"}).to_string().as_bytes());
        let claims = b64::encode(
            json!({"iss": "a", "exp": 10, "aud": ["x", "y"]})
                .to_string()
                .as_bytes(),
        );
        let input = format!("{header}.{claims}");
        let signature = match alg {
            "RS256" => key.pkcs1v15_sign::<Sha256>(input.as_bytes()).unwrap(),
            _ => key
                .pss_sign_with_rng::<Sha256, _>(&mut SysRng, input.as_bytes())
                .unwrap(),
        };
        format!("{input}.{}", b64::encode(&signature))
    }

    #[test]
    fn verifies_rs256_and_ps256_and_rejects_other_keys() {
        let key = PrivateKey::new(&mut SysRng, 2048).unwrap();
        let other = PrivateKey::new(&mut SysRng, 2048).unwrap();
        for alg in ["RS256", "PS256"] {
            let jwt = Jwt::parse(&signed(&key, alg)).unwrap();
            assert!(jwt.verify(key.as_public_key()), "{alg}");
            assert!(!jwt.verify(other.as_public_key()), "{alg}");
            assert_eq!(jwt.claim("iss"), Some("a"));
            assert_eq!(jwt.time_claim("exp"), Some(10));
            assert!(jwt.has_audience(|a| a == "y"));
        }
    }

    #[test]
    fn minted_tokens_parse_but_do_not_verify() {
        let token = mint(&json!({"alg": "RS256"}), &json!({"aud": "r"})).unwrap();
        let jwt = Jwt::parse(&token).unwrap();
        assert_eq!(jwt.claim("aud"), Some("r"));
        assert!(Jwt::parse("a.b").is_none());
        assert!(Jwt::parse("not-a-jwt").is_none());
    }
}
