//! The Rust API for secrets, certificates and EC keys, as other crates' tests use it to set a
//! vault up: what it creates is what the REST API then serves (the Python suites check that
//! side), and a certificate's key, backing secret and soft-delete state move together.

use base64::Engine;
use keyvault_emulator::{Curve, Emulator, KeySpec, KeyType, Options, SecretSpec};
use openssl::pkcs12::Pkcs12;
use openssl::pkey::PKey;
use serde_json::json;

fn standard_base64(text: &str) -> Vec<u8> {
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .expect("standard base64")
}

#[tokio::test]
async fn secrets_keep_versions_values_and_soft_delete_state() {
    let vault = Emulator::start(Options::key_vault()).await.expect("start");
    let first = vault
        .set_secret("db", SecretSpec::value("one"))
        .expect("set");
    let second = vault
        .set_secret(
            "DB",
            SecretSpec {
                content_type: Some("text/plain".to_owned()),
                ..SecretSpec::value("two")
            },
        )
        .expect("set again");
    assert_eq!(second.name, "db", "a new version keeps the first spelling");
    assert!(second.created > first.created, "distinct creation times");
    assert_eq!(
        second.id,
        format!(
            "https://{}/secrets/db/{}",
            vault.vault_host(),
            second.version
        )
    );
    assert_eq!(vault.secret_value("db", None).expect("latest"), "two");
    assert_eq!(
        vault
            .secret_value("db", Some(&first.version))
            .expect("by version"),
        "one"
    );
    assert_eq!(vault.secret_versions("db").expect("versions").len(), 2);
    assert!(
        !vault
            .set_secret_enabled("db", None, false)
            .expect("disable")
            .enabled
    );

    vault.delete_secret("db").expect("delete");
    assert!(vault.secret("db", None).is_err());
    assert!(vault.set_secret("db", SecretSpec::value("x")).is_err());
    vault.recover_secret("db").expect("recover");
    vault.delete_secret("db").expect("delete again");
    vault.purge_secret("db").expect("purge");
    vault
        .set_secret("db", SecretSpec::value("fresh"))
        .expect("the name is free after a purge");
    assert_eq!(
        vault.secret_reads("db", None),
        0,
        "the Rust API reads nothing"
    );
}

#[tokio::test]
async fn a_created_certificate_has_its_key_and_backing_secret() {
    let vault = Emulator::start(Options::key_vault()).await.expect("start");
    let cert = vault
        .create_certificate(
            "tls",
            json!({"x509_props": {"subject": "CN=tls", "sans": {"dns_names": ["tls.test"]}},
                   "issuer": {"name": "Self"}}),
        )
        .await
        .expect("create");
    assert!(!cert.pending && cert.enabled);
    assert_eq!(cert.x5t.as_deref().map(str::len), Some(27));
    let secret = vault.secret("tls", Some(&cert.version)).expect("secret");
    assert!(secret.managed);
    assert_eq!(secret.content_type.as_deref(), Some("application/x-pkcs12"));
    assert!(
        vault
            .set_secret("tls", SecretSpec::value("overwrite"))
            .is_err(),
        "the certificate owns its secret"
    );
    let pfx = standard_base64(&vault.secret_value("tls", None).expect("value"));
    let parsed = Pkcs12::from_der(&pfx)
        .and_then(|pfx| pfx.parse2(""))
        .expect("a PFX with an empty password");
    let leaf = parsed.cert.expect("leaf");
    assert_eq!(
        leaf.to_der().expect("der"),
        standard_base64(cert.cer.as_deref().expect("cer"))
    );
    let key = vault.key("tls", Some(&cert.version)).expect("backing key");
    assert_eq!(key.kty, KeyType::Rsa);
    assert_eq!(key.kid, cert.kid);
    let public = leaf.public_key().expect("public key");
    assert!(parsed.pkey.expect("private key").public_eq(&public));
}

#[tokio::test]
async fn imported_pem_certificates_keep_their_chain_and_ec_key() {
    let vault = Emulator::start(Options::key_vault()).await.expect("start");
    let source = vault
        .create_certificate(
            "source",
            json!({"key_props": {"kty": "EC", "crv": "P-521"},
                   "secret_props": {"contentType": "application/x-pem-file"},
                   "x509_props": {"subject": "CN=source"}, "issuer": {"name": "Self"}}),
        )
        .await
        .expect("create an EC certificate");
    let pem = vault.secret_value("source", None).expect("pem");
    assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    let key = PKey::private_key_from_pem(pem.as_bytes()).expect("PKCS#8 key");
    assert_eq!(key.bits(), 521);

    let imported = vault
        .import_certificate(
            "copy",
            json!({"value": base64::engine::general_purpose::STANDARD.encode(&pem),
                   "policy": {"secret_props": {"contentType": "application/x-pem-file"}}}),
        )
        .await
        .expect("import the PEM");
    assert_eq!(imported.cer, source.cer);
    let copy = vault.key("copy", None).expect("backing key");
    assert_eq!((copy.kty, copy.crv), (KeyType::Ec, Some(Curve::P521)));
    assert_eq!(copy.x, vault.key("source", None).expect("source key").x);
}

#[tokio::test]
async fn ec_keys_are_created_on_each_curve() {
    let vault = Emulator::start(Options::key_vault()).await.expect("start");
    for (curve, len) in [(Curve::P256, 43), (Curve::P384, 64), (Curve::P521, 88)] {
        let key = vault
            .create_key(&format!("ec-{}", curve.bits()), KeySpec::ec(curve))
            .await
            .expect("create");
        assert_eq!(
            (key.kty, key.crv, key.size),
            (KeyType::Ec, Some(curve), curve.bits())
        );
        assert_eq!(
            key.x.as_deref().map(str::len),
            Some(len),
            "{curve}: padded x"
        );
        assert!(key.n.is_none());
    }
    let hsm = Emulator::start(Options::managed_hsm())
        .await
        .expect("start HSM");
    assert!(
        hsm.create_key("ec", KeySpec::ec(Curve::P256))
            .await
            .is_err()
    );
    let key = hsm
        .create_key("ec", KeySpec::ec_hsm(Curve::P384))
        .await
        .expect("EC-HSM on a Managed HSM");
    assert_eq!(key.kty, KeyType::EcHsm);
}
