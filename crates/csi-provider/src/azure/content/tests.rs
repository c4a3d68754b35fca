//! What [`super::render`] writes for each kind of object, checked against Go's own output
//! (fixtures from a Go program making Azure's calls) where Azure defines the bytes, and against
//! OpenSSL where it defines the key encodings.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, BigNumContext, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, KeyUsage, SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509Builder, X509NameBuilder};
use secrecy::SecretString;
use zeroize::Zeroizing;

use super::*;
use crate::azure::fetched::{Fetched, FetchedCert, FetchedKey, FetchedSecret};
use crate::azure::spec::{JsonField, ObjectEncoding, ObjectFormat, ObjectKind, ObjectSpec};
use crate::files::OutputFile;

// ---- helpers ------------------------------------------------------------------------------

const VERSION: &str = "0123456789abcdef0123456789abcdef";

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/content/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|error| panic!("{path}: {error}"))
}

fn object(kind: ObjectKind) -> ObjectSpec {
    ObjectSpec {
        name: "obj".to_owned(),
        kind,
        alias: None,
        version: None,
        version_history: 0,
        format: ObjectFormat::Pem,
        encoding: ObjectEncoding::Utf8,
        mode: None,
        vault: None,
        json_fields: Vec::new(),
        pfx_password_secret: None,
    }
}

fn secret_object() -> ObjectSpec {
    object(ObjectKind::Secret)
}

fn with_format(mut spec: ObjectSpec, format: ObjectFormat) -> ObjectSpec {
    spec.format = format;
    spec
}

fn with_encoding(mut spec: ObjectSpec, encoding: ObjectEncoding) -> ObjectSpec {
    spec.encoding = encoding;
    spec
}

fn plain_secret(value: &str) -> Fetched {
    Fetched::Secret(FetchedSecret {
        id: format!("https://vault.vault.azure.net/secrets/obj/{VERSION}"),
        value: Zeroizing::new(value.to_owned()),
        content_type: None,
        kid: None,
    })
}

/// A certificate's backing secret (it has a `kid`).
fn cert_secret(value: &str, content_type: Option<&str>) -> Fetched {
    Fetched::Secret(FetchedSecret {
        id: format!("https://vault.vault.azure.net/secrets/obj/{VERSION}"),
        value: Zeroizing::new(value.to_owned()),
        content_type: content_type.map(str::to_owned),
        kid: Some(format!("https://vault.vault.azure.net/keys/obj/{VERSION}")),
    })
}

fn pfx_secret(value: &str) -> Fetched {
    cert_secret(value, Some(CONTENT_TYPE_PFX))
}

fn render_with(
    spec: &ObjectSpec,
    fetched: &Fetched,
    options: RenderOptions,
) -> Result<Vec<OutputFile>, ContentError> {
    render(spec, fetched, spec.file_name(), 0o640, &options, None)
}

fn render_default(spec: &ObjectSpec, fetched: &Fetched) -> Result<Vec<OutputFile>, ContentError> {
    render_with(spec, fetched, RenderOptions::default())
}

fn text(file: &OutputFile) -> &str {
    std::str::from_utf8(&file.contents).expect("UTF-8 file")
}

/// The one file, which must be at the object's name.
fn only(files: &[OutputFile]) -> &OutputFile {
    assert_eq!(paths(files), ["obj"], "expected one file");
    &files[0]
}

fn paths(files: &[OutputFile]) -> Vec<&str> {
    files.iter().map(|file| file.path.as_str()).collect()
}

fn file<'a>(files: &'a [OutputFile], path: &str) -> &'a OutputFile {
    files
        .iter()
        .find(|file| file.path == path)
        .unwrap_or_else(|| panic!("no file {path} in {:?}", paths(files)))
}

fn separate_files() -> RenderOptions {
    RenderOptions {
        separate_cert_and_key_files: true,
        ..RenderOptions::default()
    }
}

fn no_chain() -> RenderOptions {
    RenderOptions {
        construct_pem_chain: false,
        ..RenderOptions::default()
    }
}

// ---- a PKI made with OpenSSL --------------------------------------------------------------

#[derive(Clone, Copy)]
enum Alg {
    Rsa,
    P256,
    P384,
}

fn new_key(alg: Alg) -> PKey<Private> {
    match alg {
        Alg::Rsa => PKey::from_rsa(Rsa::generate(2048).unwrap()).unwrap(),
        Alg::P256 | Alg::P384 => {
            let nid = if matches!(alg, Alg::P256) {
                Nid::X9_62_PRIME256V1
            } else {
                Nid::SECP384R1
            };
            let group = EcGroup::from_curve_name(nid).unwrap();
            PKey::from_ec_key(EcKey::generate(&group).unwrap()).unwrap()
        }
    }
}

struct Issued {
    key: PKey<Private>,
    cert: X509,
}

/// A certificate for `cn` signed by `issuer` (self-signed without one), with subject and
/// authority key ids when `key_ids`.
fn issue(cn: &str, alg: Alg, issuer: Option<&Issued>, ca: bool, key_ids: bool) -> Issued {
    let key = new_key(alg);
    let mut name = X509NameBuilder::new().unwrap();
    name.append_entry_by_text("CN", cn).unwrap();
    let name = name.build();
    let mut builder = X509Builder::new().unwrap();
    builder.set_version(2).unwrap();
    let mut serial = BigNum::new().unwrap();
    serial.rand(64, MsbOption::MAYBE_ZERO, false).unwrap();
    builder
        .set_serial_number(&serial.to_asn1_integer().unwrap())
        .unwrap();
    builder.set_subject_name(&name).unwrap();
    match issuer {
        Some(issuer) => builder.set_issuer_name(issuer.cert.subject_name()).unwrap(),
        None => builder.set_issuer_name(&name).unwrap(),
    }
    builder.set_pubkey(&key).unwrap();
    builder
        .set_not_before(&Asn1Time::days_from_now(0).unwrap())
        .unwrap();
    builder
        .set_not_after(&Asn1Time::days_from_now(30).unwrap())
        .unwrap();
    let mut constraints = BasicConstraints::new();
    constraints.critical();
    if ca {
        constraints.ca();
    }
    builder
        .append_extension(constraints.build().unwrap())
        .unwrap();
    let mut usage = KeyUsage::new();
    usage.critical();
    if ca {
        usage.key_cert_sign().crl_sign();
    } else {
        usage.digital_signature();
    }
    builder.append_extension(usage.build().unwrap()).unwrap();
    if key_ids {
        let ski = SubjectKeyIdentifier::new()
            .build(&builder.x509v3_context(None, None))
            .unwrap();
        builder.append_extension(ski).unwrap();
        if let Some(issuer) = issuer {
            let aki = AuthorityKeyIdentifier::new()
                .keyid(true)
                .build(&builder.x509v3_context(Some(&issuer.cert), None))
                .unwrap();
            builder.append_extension(aki).unwrap();
        }
    }
    let signer = issuer.map_or(&key, |issuer| &issuer.key);
    builder.sign(signer, MessageDigest::sha256()).unwrap();
    Issued {
        cert: builder.build(),
        key,
    }
}

struct Chain {
    root: Issued,
    intermediate: Issued,
    leaf: Issued,
}

fn chain(alg: Alg, key_ids: bool) -> Chain {
    let root = issue("Test Root CA", alg, None, true, key_ids);
    let intermediate = issue("Test Intermediate CA", alg, Some(&root), true, key_ids);
    let leaf = issue("app.example.com", alg, Some(&intermediate), false, key_ids);
    Chain {
        root,
        intermediate,
        leaf,
    }
}

/// A PFX as Go's decoder reads it (3DES, SHA-1 MAC, empty password) holding `key` and `certs`
/// in exactly this order, as a backing secret's base64 value.
fn go_readable_pfx(key: &PKey<Private>, certs: &[&X509]) -> String {
    let mut stack = Stack::new().unwrap();
    for cert in certs {
        stack.push((*cert).clone()).unwrap();
    }
    let mut builder = Pkcs12::builder();
    builder
        .pkey(key)
        .ca(stack)
        .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .mac_md(MessageDigest::sha1());
    STANDARD.encode(builder.build2("").unwrap().to_der().unwrap())
}

fn cert_pems(certs: &[&X509]) -> String {
    certs
        .iter()
        .map(|cert| String::from_utf8(cert.to_pem().unwrap()).unwrap())
        .collect()
}

/// The certificates of a PEM file, in order.
fn certs_in(pem: &str) -> Vec<X509> {
    X509::stack_from_pem(pem.as_bytes()).unwrap()
}

fn same_certs(actual: &[X509], expected: &[&X509]) -> bool {
    actual.len() == expected.len()
        && actual
            .iter()
            .zip(expected)
            .all(|(a, b)| a.to_der().unwrap() == b.to_der().unwrap())
}

// ---- secrets ------------------------------------------------------------------------------

#[test]
fn a_secret_is_written_as_stored_by_default() {
    let files = render_default(&secret_object(), &plain_secret("p@ss word\n")).unwrap();
    let file = only(&files);
    assert_eq!(text(file), "p@ss word\n");
    assert_eq!(file.mode, 0o640);
}

#[test]
fn object_encoding_base64_is_gos_standard_decoding() {
    let spec = with_encoding(secret_object(), ObjectEncoding::Base64);
    let files = render_default(&spec, &plain_secret("aGVsbG8g\r\nd29ybGQ=")).unwrap();
    assert_eq!(&only(&files).contents[..], b"hello world");
    // Padding is required, as in Go's StdEncoding; URL-safe characters are not base64.
    for bad in ["aGVsbG8", "aGVsbG8-", "!!"] {
        let error = render_default(&spec, &plain_secret(bad)).unwrap_err();
        assert!(
            matches!(
                error,
                ContentError::Decode {
                    encoding: ObjectEncoding::Base64
                }
            ),
            "{error:?}"
        );
    }
}

#[test]
fn object_encoding_hex_decodes_either_case() {
    let spec = with_encoding(secret_object(), ObjectEncoding::Hex);
    let files = render_default(&spec, &plain_secret("00FFab")).unwrap();
    assert_eq!(&only(&files).contents[..], &[0x00, 0xff, 0xab]);
    for bad in ["abc", "zz"] {
        let error = render_default(&spec, &plain_secret(bad)).unwrap_err();
        assert!(
            matches!(
                error,
                ContentError::Decode {
                    encoding: ObjectEncoding::Hex
                }
            ),
            "{error:?}"
        );
    }
}

#[test]
fn a_decode_error_names_the_encoding_and_never_the_value() {
    let spec = with_encoding(secret_object(), ObjectEncoding::Base64);
    let error = render_default(&spec, &plain_secret("hunter2-is-not-base64")).unwrap_err();
    let message = error.to_string();
    assert!(message.contains("base64"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
    assert!(!format!("{error:?}").contains("hunter2"));
}

#[test]
fn an_empty_kid_is_a_plain_secret() {
    let fetched = Fetched::Secret(FetchedSecret {
        id: format!("https://vault.vault.azure.net/secrets/obj/{VERSION}"),
        value: Zeroizing::new("not a certificate".to_owned()),
        content_type: Some("weird/type".to_owned()),
        kid: Some(String::new()),
    });
    let files = render_default(&secret_object(), &fetched).unwrap();
    assert_eq!(text(only(&files)), "not a certificate");
}

// ---- certificates' backing secrets -------------------------------------------------------

#[test]
fn a_pem_backing_secret_is_written_as_stored_whatever_the_format() {
    let stored = "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\nnot normalized";
    for format in [ObjectFormat::Pem, ObjectFormat::Pfx] {
        let spec = with_format(secret_object(), format);
        let files = render_default(&spec, &cert_secret(stored, Some(CONTENT_TYPE_PEM))).unwrap();
        assert_eq!(text(only(&files)), stored);
    }
}

#[test]
fn a_backing_secret_of_another_content_type_is_refused() {
    for content_type in [Some("text/plain"), Some(""), None] {
        let error = render_default(&secret_object(), &cert_secret("x", content_type)).unwrap_err();
        match &error {
            ContentError::UnknownContentType { content_type: got } => {
                assert_eq!(got.as_deref(), content_type)
            }
            other => panic!("{other:?}"),
        }
        assert!(
            error.to_string().contains("unknown content type"),
            "{error}"
        );
    }
}

#[test]
fn a_key_vault_pfx_with_rc2_and_3des_is_written_exactly_as_azure_writes_it() {
    for name in ["rsa-chain-legacy", "ec-chain-legacy"] {
        let value = fixture(&format!("{name}.pfx.b64"));
        let files = render_default(&secret_object(), &pfx_secret(value.trim())).unwrap();
        assert_eq!(
            text(only(&files)),
            fixture(&format!("{name}.chain.pem")),
            "{name}: key first, then leaf, intermediate, root"
        );

        let files = render_with(&secret_object(), &pfx_secret(value.trim()), no_chain()).unwrap();
        assert_eq!(
            text(only(&files)),
            fixture(&format!("{name}.original.pem")),
            "{name}: without --construct-pem-chain, the PFX's order"
        );
    }
}

#[test]
fn separate_files_are_the_certificates_and_the_key_before_the_whole() {
    let value = fixture("rsa-chain-legacy.pfx.b64");
    let files = render_with(
        &secret_object(),
        &pfx_secret(value.trim()),
        separate_files(),
    )
    .unwrap();
    assert_eq!(paths(&files), ["obj.crt", "obj.key", "obj"]);
    assert_eq!(text(&files[0]), fixture("rsa-chain-legacy.chain.crt"));
    assert_eq!(text(&files[1]), fixture("rsa-chain-legacy.chain.key"));
    assert_eq!(text(&files[2]), fixture("rsa-chain-legacy.chain.pem"));
    assert!(files.iter().all(|file| file.mode == 0o640));
}

#[test]
fn separate_files_of_a_pem_backing_secret_split_its_blocks() {
    let chain = chain(Alg::P256, true);
    let key = String::from_utf8(chain.leaf.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
    let certs = cert_pems(&[&chain.leaf.cert, &chain.intermediate.cert]);
    let stored = format!("{key}{certs}");
    let files = render_with(
        &secret_object(),
        &cert_secret(&stored, Some(CONTENT_TYPE_PEM)),
        separate_files(),
    )
    .unwrap();
    assert_eq!(paths(&files), ["obj.crt", "obj.key", "obj"]);
    assert_eq!(text(&files[0]), certs);
    assert_eq!(text(&files[1]), key);
    assert_eq!(text(&files[2]), stored);
}

#[test]
fn separate_files_of_a_pfx_kept_as_pfx_are_empty_as_in_azure() {
    let value = fixture("ec-chain-legacy.pfx.b64");
    let spec = with_format(secret_object(), ObjectFormat::Pfx);
    let files = render_with(&spec, &pfx_secret(value.trim()), separate_files()).unwrap();
    assert_eq!(paths(&files), ["obj.crt", "obj.key", "obj"]);
    assert!(files[0].contents.is_empty() && files[1].contents.is_empty());
    assert_eq!(text(&files[2]), value.trim());
}

#[test]
fn separate_files_are_never_written_for_plain_secrets() {
    let files = render_with(&secret_object(), &plain_secret("v"), separate_files()).unwrap();
    assert_eq!(paths(&files), ["obj"]);
}

#[test]
fn object_format_pfx_passes_the_base64_text_through_and_base64_makes_it_binary() {
    let value = fixture("rsa-chain-legacy.pfx.b64");
    let value = value.trim();
    let spec = with_format(secret_object(), ObjectFormat::Pfx);
    let files = render_default(&spec, &pfx_secret(value)).unwrap();
    assert_eq!(text(only(&files)), value);

    let spec = with_encoding(spec, ObjectEncoding::Base64);
    let files = render_default(&spec, &pfx_secret(value)).unwrap();
    assert_eq!(
        &only(&files).contents[..],
        &STANDARD.decode(value).unwrap()[..]
    );
}

#[test]
fn object_encoding_applies_to_the_converted_pem_as_in_azure() {
    // Azure decodes the PEM text it made from the PFX: base64 of PEM text fails.
    let value = fixture("rsa-chain-legacy.pfx.b64");
    let spec = with_encoding(secret_object(), ObjectEncoding::Base64);
    let error = render_default(&spec, &pfx_secret(value.trim())).unwrap_err();
    assert!(
        matches!(
            error,
            ContentError::Decode {
                encoding: ObjectEncoding::Base64
            }
        ),
        "{error:?}"
    );
}

#[test]
fn a_shuffled_pfx_comes_out_key_then_leaf_intermediate_root() {
    for alg in [Alg::Rsa, Alg::P256, Alg::P384] {
        let chain = chain(alg, true);
        let value = go_readable_pfx(
            &chain.leaf.key,
            &[&chain.root.cert, &chain.leaf.cert, &chain.intermediate.cert],
        );
        let files = render_default(&secret_object(), &pfx_secret(&value)).unwrap();
        let pem = text(only(&files));
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        let key = PKey::private_key_from_pem(pem.as_bytes()).unwrap();
        assert!(key.public_eq(&chain.leaf.key));
        assert!(same_certs(
            &certs_in(pem),
            &[&chain.leaf.cert, &chain.intermediate.cert, &chain.root.cert]
        ));

        let files = render_with(&secret_object(), &pfx_secret(&value), no_chain()).unwrap();
        assert!(same_certs(
            &certs_in(text(only(&files))),
            &[&chain.root.cert, &chain.leaf.cert, &chain.intermediate.cert]
        ));
    }
}

#[test]
fn the_private_key_is_written_as_go_marshals_pkcs8() {
    // OpenSSL's and Go's PKCS#8 agree for well-formed keys (Go's own output is in the
    // fixtures); the key in the file is the PFX's key.
    for alg in [Alg::Rsa, Alg::P256, Alg::P384] {
        let issued = issue("self.example.com", alg, None, false, true);
        let value = go_readable_pfx(&issued.key, &[&issued.cert]);
        let files = render_default(&secret_object(), &pfx_secret(&value)).unwrap();
        let expected = String::from_utf8(issued.key.private_key_to_pem_pkcs8().unwrap()).unwrap();
        assert!(text(only(&files)).starts_with(&expected));
    }
}

#[test]
fn an_incomplete_chain_keeps_the_pfx_order() {
    let value = fixture("rsa-incomplete-legacy.pfx.b64");
    let files = render_default(&secret_object(), &pfx_secret(value.trim())).unwrap();
    let ours = text(only(&files));
    assert_eq!(ours, fixture("rsa-incomplete-legacy.original.pem"));
    // Azure would have dropped the root: its file holds one certificate fewer.
    let azure = fixture("rsa-incomplete-legacy.azure-chain.pem");
    assert_eq!(certs_in(ours).len(), 2);
    assert_eq!(certs_in(&azure).len(), 1);

    // Root first, leaf after, intermediate missing: Azure would write only the root.
    let chain = chain(Alg::P256, true);
    let value = go_readable_pfx(&chain.leaf.key, &[&chain.root.cert, &chain.leaf.cert]);
    let files = render_default(&secret_object(), &pfx_secret(&value)).unwrap();
    assert!(same_certs(
        &certs_in(text(only(&files))),
        &[&chain.root.cert, &chain.leaf.cert]
    ));
}

#[test]
fn certificates_without_key_ids_are_ordered_by_subject_and_issuer() {
    let chain = chain(Alg::P256, false);
    assert!(chain.leaf.cert.subject_key_id().is_none());
    let value = go_readable_pfx(
        &chain.leaf.key,
        &[&chain.intermediate.cert, &chain.root.cert, &chain.leaf.cert],
    );
    let files = render_default(&secret_object(), &pfx_secret(&value)).unwrap();
    assert!(same_certs(
        &certs_in(text(only(&files))),
        &[&chain.leaf.cert, &chain.intermediate.cert, &chain.root.cert]
    ));
}

#[test]
fn a_certificate_with_trailing_data_is_not_x509_as_go_reads_it() {
    let issued = issue("self.example.com", Alg::P256, None, false, true);
    let der = issued.cert.to_der().unwrap();
    assert!(Cert::parse(&der).is_some());
    let mut trailing = der;
    trailing.push(0);
    assert!(Cert::parse(&trailing).is_none());
}

// ---- PFX files Go's decoder refuses -------------------------------------------------------

fn pfx_error(value: &str) -> PfxError {
    match render_default(&secret_object(), &pfx_secret(value)).unwrap_err() {
        ContentError::Pfx(error) => error,
        other => panic!("expected a PFX error, got {other:?}"),
    }
}

#[test]
fn a_modern_pfx_with_aes_is_refused_like_azure_refuses_it() {
    let issued = issue("self.example.com", Alg::P256, None, false, true);
    let mut builder = Pkcs12::builder();
    builder
        .pkey(&issued.key)
        .cert(&issued.cert)
        .key_algorithm(Nid::AES_256_CBC)
        .cert_algorithm(Nid::AES_256_CBC)
        .mac_md(MessageDigest::sha1());
    let value = STANDARD.encode(builder.build2("").unwrap().to_der().unwrap());
    let error = pfx_error(&value);
    assert!(
        matches!(&error, PfxError::UnsupportedAlgorithm { oid } if oid == "1.2.840.113549.1.5.13"),
        "{error:?}"
    );
}

#[test]
fn a_sha256_mac_is_refused() {
    let issued = issue("self.example.com", Alg::P256, None, false, true);
    let mut builder = Pkcs12::builder();
    builder
        .pkey(&issued.key)
        .cert(&issued.cert)
        .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .mac_md(MessageDigest::sha256());
    let value = STANDARD.encode(builder.build2("").unwrap().to_der().unwrap());
    let error = pfx_error(&value);
    assert!(
        matches!(&error, PfxError::UnsupportedMacDigest { oid } if oid == "2.16.840.1.101.3.4.2.1"),
        "{error:?}"
    );
}

#[test]
fn a_pfx_under_another_password_fails_its_mac() {
    let issued = issue("self.example.com", Alg::P256, None, false, true);
    let mut builder = Pkcs12::builder();
    builder
        .pkey(&issued.key)
        .cert(&issued.cert)
        .key_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .cert_algorithm(Nid::PBE_WITHSHA1AND3_KEY_TRIPLEDES_CBC)
        .mac_md(MessageDigest::sha1());
    let value = STANDARD.encode(builder.build2("hunter2").unwrap().to_der().unwrap());
    let error = pfx_error(&value);
    assert!(matches!(error, PfxError::MacMismatch), "{error:?}");
    assert!(!error.to_string().contains("hunter2"));
}

#[test]
fn a_pfx_that_is_not_base64_or_not_der_is_refused() {
    assert!(matches!(pfx_error("not base64!"), PfxError::NotBase64));
    let error = pfx_error(&STANDARD.encode(b"\x30\x80garbage"));
    assert!(matches!(error, PfxError::Malformed { .. }), "{error:?}");
    let error = pfx_error("");
    assert!(matches!(error, PfxError::Malformed { .. }), "{error:?}");
}

/// A PFX whose structure is written here element by element.
fn handmade_pfx(version: u8, mac_iterations: &[u8], safes: &[&[u8]]) -> String {
    let sha1 = der::algorithm(der::oid::SHA1, &der::tlv(der::NULL, &[]));
    let digest_info = der::constructed(
        der::SEQUENCE,
        &[&sha1, &der::tlv(der::OCTET_STRING, &[0; 20])],
    );
    let mac_data = der::constructed(
        der::SEQUENCE,
        &[
            &digest_info,
            &der::tlv(der::OCTET_STRING, &[1; 8]),
            &der::unsigned(mac_iterations),
        ],
    );
    let safe_sequence = der::constructed(der::SEQUENCE, safes);
    let auth_safe = der::constructed(
        der::SEQUENCE,
        &[
            &der::tlv(der::OID, der::oid::DATA),
            &der::constructed(
                der::EXPLICIT_0,
                &[&der::tlv(der::OCTET_STRING, &safe_sequence)],
            ),
        ],
    );
    let pfx = der::constructed(
        der::SEQUENCE,
        &[&der::small_unsigned(version), &auth_safe, &mac_data],
    );
    STANDARD.encode(&pfx[..])
}

#[test]
fn a_pfx_of_another_version_is_refused() {
    let error = pfx_error(&handmade_pfx(2, &[1], &[]));
    assert!(matches!(error, PfxError::UnsupportedVersion), "{error:?}");
}

#[test]
fn an_absurd_iteration_count_is_refused_before_any_work() {
    let error = pfx_error(&handmade_pfx(3, &[0x7f, 0xff, 0xff, 0xff], &[]));
    assert!(
        matches!(
            error,
            PfxError::TooManyIterations {
                iterations: 0x7fff_ffff
            }
        ),
        "{error:?}"
    );
    assert!(error.to_string().contains(&MAX_ITERATIONS.to_string()));
}

#[test]
fn a_wrong_mac_is_refused() {
    let error = pfx_error(&handmade_pfx(3, &[1], &[]));
    assert!(matches!(error, PfxError::MacMismatch), "{error:?}");
}

// ---- objectFormat: tls (kube-kms) ---------------------------------------------------------

fn tls_object() -> ObjectSpec {
    with_format(secret_object(), ObjectFormat::Tls)
}

#[test]
fn tls_writes_the_leaf_and_intermediates_the_key_and_the_ca_certificates() {
    let chain = chain(Alg::Rsa, true);
    let value = go_readable_pfx(
        &chain.leaf.key,
        &[&chain.root.cert, &chain.intermediate.cert, &chain.leaf.cert],
    );
    // The leaf is the key's certificate whatever --construct-pem-chain says.
    for options in [RenderOptions::default(), no_chain()] {
        let files = render_with(&tls_object(), &pfx_secret(&value), options).unwrap();
        assert_eq!(paths(&files), ["obj/tls.crt", "obj/tls.key", "obj/ca.crt"]);
        assert!(same_certs(
            &certs_in(text(&files[0])),
            &[&chain.leaf.cert, &chain.intermediate.cert]
        ));
        let key = text(&files[1]);
        assert!(key.starts_with("-----BEGIN PRIVATE KEY-----\n"));
        assert!(
            PKey::private_key_from_pem(key.as_bytes())
                .unwrap()
                .public_eq(&chain.leaf.key)
        );
        assert!(same_certs(
            &certs_in(text(&files[2])),
            &[&chain.intermediate.cert, &chain.root.cert]
        ));
    }
}

#[test]
fn tls_of_a_self_signed_certificate_has_an_empty_ca_file() {
    let issued = issue("self.example.com", Alg::P256, None, false, true);
    let stored = format!(
        "{}{}",
        String::from_utf8(issued.key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        cert_pems(&[&issued.cert])
    );
    let files =
        render_default(&tls_object(), &cert_secret(&stored, Some(CONTENT_TYPE_PEM))).unwrap();
    assert!(same_certs(&certs_in(text(&files[0])), &[&issued.cert]));
    assert!(file(&files, "obj/ca.crt").contents.is_empty());
}

#[test]
fn tls_reads_a_pem_backing_secret_with_a_pkcs1_key() {
    let chain = chain(Alg::Rsa, true);
    let pkcs1 =
        String::from_utf8(chain.leaf.key.rsa().unwrap().private_key_to_pem().unwrap()).unwrap();
    assert!(pkcs1.starts_with("-----BEGIN RSA PRIVATE KEY-----"));
    let stored = format!(
        "{pkcs1}{}",
        cert_pems(&[&chain.intermediate.cert, &chain.leaf.cert])
    );
    let files =
        render_default(&tls_object(), &cert_secret(&stored, Some(CONTENT_TYPE_PEM))).unwrap();
    assert!(same_certs(
        &certs_in(text(&files[0])),
        &[&chain.leaf.cert, &chain.intermediate.cert]
    ));
    assert!(text(&files[1]).starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(same_certs(
        &certs_in(text(&files[2])),
        &[&chain.intermediate.cert]
    ));
}

#[test]
fn tls_needs_a_certificate_one_key_and_its_certificate() {
    let error = render_default(&tls_object(), &plain_secret("x")).unwrap_err();
    assert!(
        matches!(error, ContentError::NotACertificate { .. }),
        "{error:?}"
    );

    let chain = chain(Alg::P256, true);
    let certs_only = cert_pems(&[&chain.leaf.cert]);
    let error = render_default(
        &tls_object(),
        &cert_secret(&certs_only, Some(CONTENT_TYPE_PEM)),
    )
    .unwrap_err();
    assert!(
        matches!(error, ContentError::PrivateKeyCount { found: 0 }),
        "{error:?}"
    );

    let value = go_readable_pfx(&chain.root.key, &[&chain.leaf.cert]);
    let error = render_default(&tls_object(), &pfx_secret(&value)).unwrap_err();
    assert!(
        matches!(error, ContentError::NoCertificateForKey),
        "{error:?}"
    );
}

// ---- a PFX re-encrypted under a password (kube-kms) --------------------------------------

fn pfx_with_password(
    encoding: ObjectEncoding,
    fetched: &Fetched,
    password: &str,
) -> Result<Vec<OutputFile>, ContentError> {
    let spec = with_encoding(with_format(secret_object(), ObjectFormat::Pfx), encoding);
    let password = SecretString::from(password.to_owned());
    render(
        &spec,
        fetched,
        "obj",
        0o600,
        &RenderOptions::default(),
        Some(&password),
    )
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

#[test]
fn a_pfx_password_reencrypts_key_and_chain_with_aes_and_a_sha256_mac() {
    let value = fixture("rsa-chain-legacy.pfx.b64");
    let files =
        pfx_with_password(ObjectEncoding::Utf8, &pfx_secret(value.trim()), "s3cret").unwrap();
    let file = only(&files);
    assert_eq!(file.mode, 0o600);
    // Base64 text by default, like Azure's pfx output.
    let der = STANDARD.decode(&file.contents[..]).unwrap();
    let parsed = Pkcs12::from_der(&der).unwrap().parse2("s3cret").unwrap();
    let leaf = parsed.cert.unwrap();
    assert!(leaf.public_key().unwrap().public_eq(&parsed.pkey.unwrap()));
    assert_eq!(parsed.ca.map(|ca| ca.len()), Some(2));
    assert!(Pkcs12::from_der(&der).unwrap().parse2("").is_err());
    // PBES2 with AES-256-CBC, and an HMAC-SHA-256 MAC.
    let pbes2 = der::tlv(
        der::OID,
        &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x05, 0x0d],
    );
    let aes256cbc = der::tlv(
        der::OID,
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x01, 0x2a],
    );
    let sha256 = der::tlv(
        der::OID,
        &[0x60, 0x86, 0x48, 0x01, 0x65, 0x03, 0x04, 0x02, 0x01],
    );
    assert!(contains(&der, &pbes2) && contains(&der, &aes256cbc) && contains(&der, &sha256));
    assert!(!contains(
        &der,
        &der::tlv(der::OID, der::oid::PBE_SHA1_RC2_40)
    ));

    // objectEncoding: base64 makes the file the binary PFX.
    let files =
        pfx_with_password(ObjectEncoding::Base64, &pfx_secret(value.trim()), "s3cret").unwrap();
    assert!(
        Pkcs12::from_der(&only(&files).contents)
            .unwrap()
            .parse2("s3cret")
            .is_ok()
    );
}

#[test]
fn a_pfx_password_also_works_for_a_pem_backing_secret() {
    let chain = chain(Alg::P256, true);
    let stored = format!(
        "{}{}",
        String::from_utf8(chain.leaf.key.private_key_to_pem_pkcs8().unwrap()).unwrap(),
        cert_pems(&[&chain.root.cert, &chain.leaf.cert, &chain.intermediate.cert])
    );
    let files = pfx_with_password(
        ObjectEncoding::Base64,
        &cert_secret(&stored, Some(CONTENT_TYPE_PEM)),
        "pw",
    )
    .unwrap();
    let parsed = Pkcs12::from_der(&only(&files).contents)
        .unwrap()
        .parse2("pw")
        .unwrap();
    assert_eq!(
        parsed.cert.unwrap().to_der().unwrap(),
        chain.leaf.cert.to_der().unwrap()
    );
}

#[test]
fn a_pfx_password_needs_a_certificate() {
    let error = pfx_with_password(ObjectEncoding::Utf8, &plain_secret("x"), "pw").unwrap_err();
    assert!(
        matches!(error, ContentError::NotACertificate { .. }),
        "{error:?}"
    );
}

// ---- keys ---------------------------------------------------------------------------------

fn key_object() -> ObjectSpec {
    object(ObjectKind::Key)
}

fn fetched_key(kty: &str, fields: [(&str, Option<Vec<u8>>); 5]) -> Fetched {
    let [(_, n), (_, e), (_, crv), (_, x), (_, y)] = fields;
    Fetched::Key(FetchedKey {
        id: format!("https://vault.vault.azure.net/keys/obj/{VERSION}"),
        kty: kty.to_owned(),
        n,
        e,
        crv: crv.map(|crv| String::from_utf8(crv).unwrap()),
        x,
        y,
    })
}

fn rsa_jwk(kty: &str, n: Vec<u8>, e: Vec<u8>) -> Fetched {
    fetched_key(
        kty,
        [
            ("n", Some(n)),
            ("e", Some(e)),
            ("crv", None),
            ("x", None),
            ("y", None),
        ],
    )
}

fn ec_jwk(kty: &str, crv: &str, x: Vec<u8>, y: Vec<u8>) -> Fetched {
    fetched_key(
        kty,
        [
            ("n", None),
            ("e", None),
            ("crv", Some(crv.as_bytes().to_vec())),
            ("x", Some(x)),
            ("y", Some(y)),
        ],
    )
}

#[test]
fn a_key_is_written_as_go_marshals_its_public_key() {
    let keys: serde_json::Value = serde_json::from_str(&fixture("keys.json")).unwrap();
    let field = |key: &serde_json::Value, name: &str| -> Vec<u8> {
        URL_SAFE_NO_PAD.decode(key[name].as_str().unwrap()).unwrap()
    };
    let keys = keys.as_array().unwrap();
    assert_eq!(keys.len(), 8);
    for key in keys {
        let fetched = match key["kty"].as_str().unwrap() {
            "RSA" => rsa_jwk("RSA", field(key, "n"), field(key, "e")),
            _ => ec_jwk(
                "EC",
                key["crv"].as_str().unwrap(),
                field(key, "x"),
                field(key, "y"),
            ),
        };
        let files = render_default(&key_object(), &fetched).unwrap();
        assert_eq!(text(only(&files)), key["pem"].as_str().unwrap(), "{key}");
    }
}

#[test]
fn rsa_and_ec_keys_match_openssls_public_key_pem() {
    let rsa = Rsa::generate(3072).unwrap();
    let pkey = PKey::from_rsa(rsa.clone()).unwrap();
    for kty in ["RSA", "RSA-HSM"] {
        let files = render_default(
            &key_object(),
            &rsa_jwk(kty, rsa.n().to_vec(), rsa.e().to_vec()),
        )
        .unwrap();
        assert_eq!(
            &only(&files).contents[..],
            &pkey.public_key_to_pem().unwrap()[..]
        );
    }

    let mut ctx = BigNumContext::new().unwrap();
    for (crv, nid) in [
        ("P-256", Nid::X9_62_PRIME256V1),
        ("P-384", Nid::SECP384R1),
        ("P-521", Nid::SECP521R1),
    ] {
        let group = EcGroup::from_curve_name(nid).unwrap();
        let size = i32::try_from(group.degree().div_ceil(8)).unwrap();
        let key = EcKey::generate(&group).unwrap();
        let (mut x, mut y) = (BigNum::new().unwrap(), BigNum::new().unwrap());
        key.public_key()
            .affine_coordinates(&group, &mut x, &mut y, &mut ctx)
            .unwrap();
        let pkey = PKey::from_ec_key(key).unwrap();
        for kty in ["EC", "EC-HSM"] {
            let fetched = ec_jwk(
                kty,
                crv,
                x.to_vec_padded(size).unwrap(),
                y.to_vec_padded(size).unwrap(),
            );
            let files = render_default(&key_object(), &fetched).unwrap();
            assert_eq!(
                &only(&files).contents[..],
                &pkey.public_key_to_pem().unwrap()[..],
                "{crv}"
            );
        }
    }
}

#[test]
fn symmetric_keys_and_secp256k1_are_refused() {
    for kty in ["oct", "oct-HSM", "rsa"] {
        let error = render_default(&key_object(), &rsa_jwk(kty, vec![1], vec![1])).unwrap_err();
        assert!(
            matches!(&error, ContentError::UnsupportedKeyType { kty: got } if got == kty),
            "{error:?}"
        );
    }
    let error =
        render_default(&key_object(), &ec_jwk("EC", "P-256K", vec![1], vec![2])).unwrap_err();
    assert!(
        matches!(&error, ContentError::UnsupportedCurve { crv: Some(crv) } if crv == "P-256K"),
        "{error:?}"
    );
}

#[test]
fn a_key_with_missing_or_impossible_fields_is_refused() {
    let missing = fetched_key(
        "RSA",
        [
            ("n", Some(vec![0xc3; 256])),
            ("e", None),
            ("crv", None),
            ("x", None),
            ("y", None),
        ],
    );
    let error = render_default(&key_object(), &missing).unwrap_err();
    assert!(
        matches!(error, ContentError::MissingKeyField { field: "e" }),
        "{error:?}"
    );

    let error = render_default(
        &key_object(),
        &ec_jwk("EC", "P-256", vec![1; 32], vec![2; 32]),
    )
    .unwrap_err();
    assert!(
        matches!(error, ContentError::InvalidPublicKey { .. }),
        "{error:?}"
    );
    let error = render_default(
        &key_object(),
        &ec_jwk("EC", "P-256", vec![1; 33], vec![2; 32]),
    )
    .unwrap_err();
    assert!(
        matches!(error, ContentError::InvalidPublicKey { .. }),
        "{error:?}"
    );
    let error =
        render_default(&key_object(), &rsa_jwk("RSA", vec![0xc3; 256], vec![1; 9])).unwrap_err();
    assert!(
        matches!(error, ContentError::InvalidPublicKey { .. }),
        "{error:?}"
    );
}

// ---- certificates -------------------------------------------------------------------------

#[test]
fn a_cert_is_its_der_as_one_certificate_block() {
    let issued = issue("app.example.com", Alg::P256, None, false, true);
    let fetched = Fetched::Cert(FetchedCert {
        id: format!("https://vault.vault.azure.net/certificates/obj/{VERSION}"),
        cer: issued.cert.to_der().unwrap(),
    });
    let files = render_default(&object(ObjectKind::Cert), &fetched).unwrap();
    assert_eq!(
        &only(&files).contents[..],
        &issued.cert.to_pem().unwrap()[..]
    );
}

// ---- jmesPath fields (kube-kms) -----------------------------------------------------------

fn json_object() -> ObjectSpec {
    let mut spec = secret_object();
    spec.alias = Some("db/credentials.json".to_owned());
    spec.json_fields = vec![
        JsonField {
            path: "username".to_owned(),
            alias: "db/username".to_owned(),
        },
        JsonField {
            path: "port".to_owned(),
            alias: "db/port".to_owned(),
        },
        JsonField {
            path: "hosts".to_owned(),
            alias: "db/hosts".to_owned(),
        },
    ];
    spec
}

const JSON_SECRET: &str = r#"{"username": "app", "port": 5432, "hosts": ["a", "b"]}"#;

#[test]
fn json_fields_are_written_besides_the_secret_strings_raw_and_the_rest_compact() {
    let spec = json_object();
    let files = render(
        &spec,
        &plain_secret(JSON_SECRET),
        spec.file_name(),
        0o400,
        &RenderOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(
        paths(&files),
        ["db/credentials.json", "db/username", "db/port", "db/hosts"]
    );
    assert_eq!(text(&files[0]), JSON_SECRET);
    assert_eq!(text(&files[1]), "app");
    assert_eq!(text(&files[2]), "5432");
    assert_eq!(text(&files[3]), r#"["a","b"]"#);
    assert!(files.iter().all(|file| file.mode == 0o400));
}

#[test]
fn json_fields_read_the_decoded_value() {
    let spec = with_encoding(json_object(), ObjectEncoding::Base64);
    let files = render_default(&spec, &plain_secret(&STANDARD.encode(JSON_SECRET))).unwrap();
    assert_eq!(text(file(&files, "db/username")), "app");
}

#[test]
fn json_fields_in_version_history_follow_the_entry_index() {
    let spec = json_object();
    let files = render(
        &spec,
        &plain_secret(JSON_SECRET),
        "db/credentials.json/1",
        0o644,
        &RenderOptions::default(),
        None,
    )
    .unwrap();
    assert_eq!(
        paths(&files),
        [
            "db/credentials.json/1",
            "db/username/1",
            "db/port/1",
            "db/hosts/1"
        ]
    );
}

#[test]
fn a_json_field_that_matches_nothing_names_the_path_and_the_secret() {
    let mut spec = json_object();
    spec.json_fields[1].path = "password".to_owned();
    let error = render_default(&spec, &plain_secret(JSON_SECRET)).unwrap_err();
    assert_eq!(
        error.to_string(),
        "jmesPath path \"password\" matched nothing in secret obj"
    );
}

#[test]
fn json_fields_of_a_secret_that_is_not_json_fail_without_showing_it() {
    let error = render_default(&json_object(), &plain_secret("hunter2")).unwrap_err();
    assert!(
        matches!(
            error,
            ContentError::JsonField {
                source: JsonFieldError::NotJson { .. },
                ..
            }
        ),
        "{error:?}"
    );
    assert!(!error.to_string().contains("hunter2"));
}

// ---- object versions ----------------------------------------------------------------------

#[test]
fn object_version_ids_are_azures() {
    let fetched = plain_secret("v");
    let version = object_version(&secret_object(), &fetched, None, None);
    assert_eq!(version.id, "secret/obj");
    assert_eq!(version.version, VERSION);

    let version = object_version(&object(ObjectKind::Cert), &fetched, Some(2), None);
    assert_eq!(version.id, "cert/obj/2");

    let other = crate::azure::spec::VaultName("other-vault".to_owned());
    let version = object_version(&object(ObjectKind::Key), &fetched, Some(0), Some(&other));
    assert_eq!(version.id, "other-vault/key/obj/0");
}

// ---- secrets stay out of errors and debug output ------------------------------------------

#[test]
fn no_error_shows_secret_bytes() {
    let secret = "hunter2-hunter2";
    let errors = [
        render_default(
            &with_encoding(secret_object(), ObjectEncoding::Hex),
            &plain_secret(secret),
        )
        .unwrap_err(),
        render_default(&secret_object(), &pfx_secret(secret)).unwrap_err(),
        render_default(
            &secret_object(),
            &pfx_secret(&STANDARD.encode(secret.as_bytes())),
        )
        .unwrap_err(),
        render_default(&json_object(), &plain_secret(secret)).unwrap_err(),
        render_default(&tls_object(), &cert_secret(secret, Some(CONTENT_TYPE_PEM))).unwrap_err(),
    ];
    for error in errors {
        for shown in [error.to_string(), format!("{error:?}")] {
            assert!(!shown.contains("hunter2"), "{shown}");
        }
    }
    let files = render_default(&secret_object(), &plain_secret(secret)).unwrap();
    assert!(!format!("{files:?}").contains("hunter2"));
}
