//! The entry point of kube-kms's `emulator_request` fuzz target: arbitrary bytes read as one
//! HTTP request and served by the emulator's whole request pipeline — routing, the bearer
//! token, the api-version, JSON and form bodies, base64url fields, JWT client assertions, key
//! operations — on a fresh vault holding one known key, with no network. The request must be
//! answered (never a panic, never a dropped connection, since no fault is injected) and never
//! with a server error.
//!
//! Input: a request line `METHOD TARGET [hsm|imds]`, header lines `Name: value`, an empty
//! line, then the body. `hsm` serves it as a Managed HSM (an oct-HSM key) instead of a Key
//! Vault (an RSA key); `imds` on the plain-HTTP identity listener. The token `fuzz-token` is
//! valid for the vault, and the key `kek` has version `00000000000000000000000000000001`.
//! The admin API (`/_emulator/...`) is out of scope: it is the tests' control plane, not
//! something an SDK sends.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;

use crate::crypto::KeyMaterial;
use crate::http::Req;
use crate::identity::{Grant, IdentitySpec};
use crate::model::{KeyType, VaultKind};
use crate::router::{self, Listener};
use crate::state::{Config, Shared, now_secs};
use crate::store::KeyVersion;

/// The bearer token every fuzzed request may use.
pub const TOKEN: &str = "fuzz-token";
/// The version of the key `kek`.
pub const KEY_VERSION: &str = "00000000000000000000000000000001";

struct Fixture {
    runtime: tokio::runtime::Runtime,
    rsa: KeyVersion,
    oct: KeyVersion,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|error| panic!("fuzzing runtime: {error}"));
        let key = |kty: KeyType, material: Result<KeyMaterial, crate::crypto::CryptoError>| {
            let material = material.unwrap_or_else(|error| panic!("fuzzing key: {error}"));
            let mut key = KeyVersion::new("kek", kty, material, kty.default_ops(), now_secs())
                .unwrap_or_else(|error| panic!("fuzzing key: {error}"));
            KEY_VERSION.clone_into(&mut key.version);
            key
        };
        Fixture {
            rsa: key(KeyType::Rsa, KeyMaterial::generate_rsa(2048)),
            oct: key(KeyType::OctHsm, KeyMaterial::generate_oct(256)),
            runtime,
        }
    })
}

fn vault(kind: VaultKind, key: &KeyVersion) -> Arc<Shared> {
    let shared = Arc::new(Shared::new(Config {
        kind,
        tenant_id: "72f988bf-86f1-41af-91ab-2d7cd011db47".to_owned(),
        resource: kind.default_resource().trim_end_matches('/').to_owned(),
        challenge_authority: "https://login.microsoftonline.com".to_owned(),
        token_lifetime: Duration::from_secs(3600),
        page_size: 25,
        retention_days: 90,
        identity_header: "fuzz-identity-header".to_owned(),
        default_host: "localhost:8443".to_owned(),
        ca_pem_path: "/nonexistent/ca.pem".into(),
        imds_url: None,
    }));
    let _ = shared.store().add_version(key.clone());
    let _ = shared.directory().register(IdentitySpec {
        client_id: Some("fuzz-client".to_owned()),
        client_secret: Some("fuzz-secret".to_owned()),
        ..IdentitySpec::default()
    });
    shared.directory().record_token(
        TOKEN.to_owned(),
        Grant {
            client_id: "fuzz-client".to_owned(),
            resource: shared.config.resource.clone(),
            expires_on: now_secs() + 3600,
        },
    );
    shared
}

/// Parses `data` as described in the module documentation; `None` when it is not a request
/// the `http` crate would build (hyper refuses those before the emulator sees them).
fn parse(data: &[u8]) -> Option<(http::Request<Bytes>, VaultKind, Listener)> {
    let split = data.windows(2).position(|w| w == b"\n\n");
    let (head, body) = match split {
        Some(at) => (&data[..at], &data[at + 2..]),
        None => (data, &[][..]),
    };
    let head = std::str::from_utf8(head).ok()?;
    let mut lines = head.lines();
    let mut request_line = lines.next()?.split(' ');
    let method = http::Method::from_bytes(request_line.next()?.as_bytes()).ok()?;
    let target = request_line.next()?;
    let (kind, listener) = match request_line.next() {
        Some("hsm") => (VaultKind::ManagedHsm, Listener::Https),
        Some("imds") => (VaultKind::KeyVault, Listener::PlainIdentity),
        _ => (VaultKind::KeyVault, Listener::Https),
    };
    let mut builder = http::Request::builder().method(method).uri(target);
    for line in lines {
        let (name, value) = line.split_once(':')?;
        let name = http::HeaderName::from_bytes(name.trim().as_bytes()).ok()?;
        let value = http::HeaderValue::from_str(value.trim()).ok()?;
        builder = builder.header(name, value);
    }
    let request = builder.body(Bytes::copy_from_slice(body)).ok()?;
    Some((request, kind, listener))
}

/// Serves `data` as one request; see the module documentation.
///
/// # Panics
/// When the emulator panics, drops the connection or answers with a 5xx status.
pub fn request(data: &[u8]) {
    let Some((request, kind, listener)) = parse(data) else {
        return;
    };
    if request.uri().path().starts_with("/_emulator") {
        return;
    }
    let fixture = fixture();
    let key = match kind {
        VaultKind::KeyVault => &fixture.rsa,
        VaultKind::ManagedHsm => &fixture.oct,
    };
    let shared = vault(kind, key);
    let req = Req::buffered(request, &shared.config.default_host);
    let response = fixture
        .runtime
        .block_on(router::dispatch(shared, listener, req));
    let Ok(response) = response else {
        panic!("the connection was dropped without an injected fault");
    };
    assert!(
        !response.status().is_server_error(),
        "answered {}",
        response.status()
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrap_request_with_the_fuzz_token_is_served() {
        let body =
            br#"{"alg":"RSA-OAEP-256","value":"AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8"}"#;
        let mut data = format!(
            "POST /keys/kek/{KEY_VERSION}/wrapkey?api-version=7.6\nAuthorization: Bearer \
             {TOKEN}\nContent-Type: application/json\n\n"
        )
        .into_bytes();
        data.extend_from_slice(body);
        let (parsed, kind, _) = parse(&data).unwrap();
        assert_eq!(kind, VaultKind::KeyVault);
        let shared = vault(kind, &fixture().rsa);
        let req = Req::buffered(parsed, &shared.config.default_host);
        let response = fixture()
            .runtime
            .block_on(router::dispatch(shared, Listener::Https, req))
            .unwrap();
        assert_eq!(response.status(), http::StatusCode::OK);
        request(&data);
        request(b"GET /keys?api-version=7.6\n\n");
        request(b"\xff\xfe");
    }

    #[test]
    fn malformed_secret_and_certificate_requests_answer_4xx() {
        let auth = format!("Authorization: Bearer {TOKEN}");
        let inputs = [
            ("PUT /secrets/s?api-version=7.6", r#"{"value":7}"#),
            (
                "PUT /secrets/s?api-version=7.6",
                r#"{"value":"v","attributes":{"exp":"x"}}"#,
            ),
            (
                "GET /secrets/s/?api-version=2025-07-01&outContentType=text/x",
                "",
            ),
            ("GET /secrets?api-version=7.6&maxresults=0", ""),
            (
                "POST /certificates/c/create?api-version=7.6",
                r#"{"policy":[]}"#,
            ),
            (
                "POST /certificates/c/create?api-version=7.6",
                r#"{"policy":{"x509_props":{"subject":"CN=c","validity_months":-1}}}"#,
            ),
            (
                "POST /certificates/c/create?api-version=7.6",
                r#"{"policy":{"x509_props":{"subject":"CN=c","ekus":["not an oid"]},"issuer":{"name":"Self"}}}"#,
            ),
            (
                "POST /certificates/c/import?api-version=7.6",
                r#"{"value":"AAAA"}"#,
            ),
            (
                "POST /certificates/c/import?api-version=7.6",
                r#"{"value":"-----BEGIN CERTIFICATE-----","policy":{"secret_props":{"contentType":"application/x-pem-file"}}}"#,
            ),
            (
                "POST /certificates/c/pending/merge?api-version=7.6",
                r#"{"x5c":["AAAA"]}"#,
            ),
            (
                "PATCH /certificates/c/pending?api-version=7.6",
                r#"{"cancellation_requested":1}"#,
            ),
            (
                "PATCH /certificates/c/policy?api-version=7.6",
                r#"{"key_props":{"kty":"oct"}}"#,
            ),
            ("GET /deletedcertificates/c?api-version=7.6", ""),
        ];
        for (line, body) in inputs {
            request(format!("{line}\n{auth}\n\n{body}").as_bytes());
        }
    }
}
