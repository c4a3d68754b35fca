//! Shared helpers for the provider's end-to-end tests: the Key Vault emulator started in process
//! and seeded with every kind of object a SecretProviderClass can name (secrets in every
//! encoding and with a version history, RSA and EC keys, certificates created and imported with
//! a CA → intermediate → leaf chain), an identity for every mode, a custom cloud file; the
//! `kube-kms-csi-provider` binary started against them and waited for; and the Python suites run
//! against it.
//!
//! Every wait polls with a deadline; nothing sleeps in place of a condition. Nothing here skips:
//! a missing python3 or package fails with an install hint.

#![allow(
    dead_code,
    reason = "each test crate uses a different subset of these helpers"
)]

use std::ffi::OsString;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use keyvault_emulator::identity::new_guid;
use keyvault_emulator::{
    Curve, Emulator, FederatedCredential, IdentitySpec, KeySpec, ManagedKind, Options, Permission,
    RunningEmulator, SecretSpec,
};
use openssl::asn1::Asn1Time;
use openssl::bn::{BigNum, MsbOption};
use openssl::ec::{EcGroup, EcKey};
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkcs12::Pkcs12;
use openssl::pkey::{PKey, Private};
use openssl::rsa::Rsa;
use openssl::stack::Stack;
use openssl::x509::extension::{
    AuthorityKeyIdentifier, BasicConstraints, ExtendedKeyUsage, KeyUsage, SubjectAlternativeName,
    SubjectKeyIdentifier,
};
use openssl::x509::{X509, X509NameBuilder};
use serde_json::{Value, json};

/// The provider binary under test.
pub const PROVIDER_BIN: &str = env!("CARGO_BIN_EXE_kube-kms-csi-provider");
/// The Python suites, run with this directory as the working directory.
pub const SUITE_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/python");
/// How to get what the suites import.
pub const INSTALL_HINT: &str = "install Python 3.11+ and the packages with \
     `python3 -m pip install -r tests/python/requirements.txt` (from the repository root)";

/// The DNS suffix of the emulated cloud's vaults: `<keyvaultName>.vault.emu.test`, resolved to
/// the emulator by the provider's `--insecure-resolve`.
pub const VAULT_SUFFIX: &str = "vault.emu.test";
/// The vault a class names (`keyvaultName`).
pub const VAULT: &str = "kv-main";
/// A second vault name, for objects that name their own `keyvaultName`.
pub const OTHER_VAULT: &str = "kv-other";
/// The cloud file's name, in the `clouds` directory the provider reads (`--cloud-env-dir`).
pub const CLOUD_FILE: &str = "emu-cloud.json";

/// The workload identity's cluster: its OIDC issuer and the pod's service account.
pub const WI_ISSUER: &str = "https://oidc.emu.test/cluster-1";
/// The namespace of the pod whose service account is federated.
pub const WI_NAMESPACE: &str = "payments";
/// The service account federated with the workload identity.
pub const WI_SERVICE_ACCOUNT: &str = "checkout";

/// How long the provider may take to serve after it starts.
const START_DEADLINE: Duration = Duration::from_secs(60);
/// How long the provider may take to exit after SIGTERM.
const STOP_DEADLINE: Duration = Duration::from_secs(15);
/// How long one Python suite may take; it normally needs well under a minute.
const PYTHON_DEADLINE: Duration = Duration::from_secs(600);
const POLL: Duration = Duration::from_millis(20);
/// sun_path holds 108 bytes including the terminating NUL.
const MAX_SOCKET_PATH: usize = 107;

/// Environment variables that would steer a credential, a proxy or TLS trust away from what a
/// test chose; removed from every child.
const SCRUBBED: &[&str] = &[
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_SECRET",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "AZURE_ENVIRONMENT_FILEPATH",
    "AZURE_POD_IDENTITY_AUTHORITY_HOST",
    "IDENTITY_ENDPOINT",
    "IDENTITY_HEADER",
    "IMDS_ENDPOINT",
    "MSI_ENDPOINT",
    "MSI_SECRET",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "ALL_PROXY",
    "all_proxy",
    "RUST_LOG",
];

/// A temporary directory with a short path (socket paths are limited to 107 bytes).
pub fn short_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("csi")
        .tempdir_in("/tmp")
        .expect("temporary directory")
}

/// Fails with an install hint unless python3 (3.11+) can import what the suites use.
pub fn require_python() {
    let output = Command::new("python3")
        .args([
            "-c",
            "import sys, grpc, grpc_tools.protoc, cryptography; \
             from cryptography.hazmat.primitives.serialization import pkcs12; \
             from cryptography import x509; x509.load_pem_x509_certificates; \
             assert sys.version_info >= (3, 11), sys.version",
        ])
        .output()
        .unwrap_or_else(|error| panic!("cannot run python3 ({error}): {INSTALL_HINT}"));
    assert!(
        output.status.success(),
        "python3 cannot import grpc, grpc_tools and cryptography: {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

/// A client registered with the emulator's Entra ID: its id and client secret.
#[derive(Debug, Clone)]
pub struct ClientSecretIdentity {
    /// The application (client) id.
    pub client_id: String,
    /// The client secret.
    pub secret: String,
}

/// The identities every mode uses.
#[derive(Debug, Clone)]
pub struct Identities {
    /// A service principal with every permission (nodePublishSecretRef `clientid`/`clientsecret`).
    pub service_principal: ClientSecretIdentity,
    /// A service principal that may read keys and certificates but not secrets.
    pub no_secrets_get: ClientSecretIdentity,
    /// An application federated with the pod's service account (workload identity).
    pub workload_client_id: String,
    /// The node's user-assigned managed identity (`userAssignedIdentityID`).
    pub user_assigned_client_id: String,
    /// Its ARM resource id.
    pub user_assigned_resource_id: String,
    /// The node's system-assigned managed identity's object id (it may read keys and
    /// certificates, not secrets).
    pub system_assigned_object_id: String,
}

/// The emulator, seeded, with identities and a custom cloud file, in a short temporary
/// directory that also holds the provider's socket and log.
pub struct VaultFixture {
    /// The emulator serving every vault name under [`VAULT_SUFFIX`].
    pub emulator: RunningEmulator,
    /// Sockets, logs, the seed manifest and the `clouds` directory.
    pub dir: tempfile::TempDir,
    /// The provider's `--cloud-env-dir`.
    pub cloud_dir: PathBuf,
    /// The AzureStackCloud file in it.
    pub cloud_file: PathBuf,
    /// What was seeded, as JSON for the Python suite (`CSI_SEED`): names, versions, values,
    /// public keys and certificates, to compare mounted files with.
    pub manifest: PathBuf,
    /// The identities.
    pub identities: Identities,
    /// Every secret value, client secret and password seeded: none may appear in a log.
    pub never_logged: Vec<String>,
}

impl VaultFixture {
    /// Starts the emulator (its certificate also valid for `*.vault.emu.test`, its tokens for
    /// the resource `https://vault.emu.test`, the emulated cloud's vault endpoint), seeds it and
    /// writes the cloud file and the manifest.
    pub async fn start() -> Self {
        let emulator = Emulator::start(Options {
            extra_names: vec![VAULT_SUFFIX.to_owned(), format!("*.{VAULT_SUFFIX}")],
            resource: Some(format!("https://{VAULT_SUFFIX}")),
            ..Options::key_vault()
        })
        .await
        .expect("the Key Vault emulator starts");
        let dir = short_dir();
        let cloud_dir = dir.path().join("clouds");
        std::fs::create_dir(&cloud_dir).expect("create the cloud directory");
        let cloud_file = cloud_dir.join(CLOUD_FILE);
        std::fs::write(
            &cloud_file,
            serde_json::to_string_pretty(&cloud_environment(&emulator)).expect("JSON"),
        )
        .expect("write the cloud file");

        let mut never_logged = Vec::new();
        let seeded = seed(&emulator, &mut never_logged).await;
        let identities = register_identities(&emulator, &mut never_logged);
        let manifest = dir.path().join("seed.json");
        std::fs::write(
            &manifest,
            serde_json::to_string_pretty(&seeded).expect("JSON"),
        )
        .expect("write the seed manifest");
        Self {
            emulator,
            dir,
            cloud_dir,
            cloud_file,
            manifest,
            identities,
            never_logged,
        }
    }

    /// The environment the Python suites read (see the docstring of test_mount.py).
    pub fn python_env(&self, provider: &ProviderProcess) -> Vec<(&'static str, String)> {
        let ids = &self.identities;
        let path = |p: &Path| p.display().to_string();
        vec![
            ("CSI_SOCKET", path(&provider.socket)),
            ("CSI_HEALTH_ADDRESS", provider.health.to_string()),
            ("CSI_PROVIDER_LOG", path(&provider.log)),
            ("CSI_EMULATOR_URL", self.emulator.authority_url()),
            ("CSI_CA", path(self.emulator.ca_pem_path())),
            ("CSI_TENANT", self.emulator.tenant_id().to_owned()),
            ("CSI_VAULT", VAULT.to_owned()),
            ("CSI_OTHER_VAULT", OTHER_VAULT.to_owned()),
            ("CSI_CLOUD_ENV_FILE", path(&self.cloud_file)),
            ("CSI_SEED", path(&self.manifest)),
            ("CSI_SP_CLIENT_ID", ids.service_principal.client_id.clone()),
            ("CSI_SP_CLIENT_SECRET", ids.service_principal.secret.clone()),
            ("CSI_NOPERM_CLIENT_ID", ids.no_secrets_get.client_id.clone()),
            (
                "CSI_NOPERM_CLIENT_SECRET",
                ids.no_secrets_get.secret.clone(),
            ),
            ("CSI_WI_CLIENT_ID", ids.workload_client_id.clone()),
            ("CSI_WI_ISSUER", WI_ISSUER.to_owned()),
            ("CSI_WI_NAMESPACE", WI_NAMESPACE.to_owned()),
            ("CSI_WI_SERVICE_ACCOUNT", WI_SERVICE_ACCOUNT.to_owned()),
            ("CSI_MI_CLIENT_ID", ids.user_assigned_client_id.clone()),
        ]
    }

    /// The emulator's IMDS base URL, for the provider's `--insecure-imds-endpoint`: where VM
    /// managed identity tokens are requested instead of 169.254.169.254. No App Service
    /// `IDENTITY_ENDPOINT`: a node has none, and with it the SDK would skip IMDS.
    pub fn imds_endpoint(&self) -> String {
        self.emulator
            .imds_url()
            .expect("the emulator serves IMDS on plain HTTP")
    }

    /// Fails the test, quoting the line, if the provider's log holds anything that must never
    /// be logged: a seeded secret value, a client secret, a password, a private key, a JWT.
    pub fn assert_log_holds_no_secret(&self, provider: &ProviderProcess) {
        provider.assert_log_holds_none_of(&self.never_logged);
    }
}

/// The AzureStackCloud file a node would hold (go-autorest's Environment JSON, with fields the
/// provider does not use, as real files have): Entra ID at the emulator, vaults under
/// [`VAULT_SUFFIX`].
fn cloud_environment(emulator: &RunningEmulator) -> Value {
    json!({
        "name": "AzureStackCloud",
        "managementPortalURL": "https://portal.emu.test/",
        "resourceManagerEndpoint": "https://management.emu.test/",
        "activeDirectoryEndpoint": format!("{}/", emulator.authority_url()),
        "keyVaultEndpoint": format!("https://{VAULT_SUFFIX}/"),
        "keyVaultDNSSuffix": VAULT_SUFFIX,
        "storageEndpointSuffix": "storage.emu.test",
        "resourceIdentifiers": {"keyVault": format!("https://{VAULT_SUFFIX}")},
    })
}

/// A random lowercase hex string of `bytes` bytes.
pub fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0; bytes];
    openssl::rand::rand_bytes(&mut buf).expect("random bytes");
    hex::encode(buf)
}

/// Adds a secret version and returns its manifest entry (the value, so the suite can check
/// what was mounted).
fn put_secret(
    emulator: &RunningEmulator,
    name: &str,
    value: &str,
    never_logged: &mut Vec<String>,
) -> Value {
    let info = emulator
        .set_secret(name, SecretSpec::value(value))
        .unwrap_or_else(|error| panic!("set secret {name}: {error}"));
    never_logged.push(value.to_owned());
    json!({"name": name, "version": info.version, "value": value, "enabled": true,
           "created": info.created})
}

/// Seeds every object the suites mount, returning the manifest.
async fn seed(emulator: &RunningEmulator, never_logged: &mut Vec<String>) -> Value {
    let mut secrets = serde_json::Map::new();
    let mut plain = |name: &str, value: String, never_logged: &mut Vec<String>| {
        let entry = put_secret(emulator, name, &value, never_logged);
        secrets.insert(name.to_owned(), json!({"versions": [entry]}));
    };
    plain(
        "app-password",
        format!("plain-{}", random_hex(12)),
        never_logged,
    );
    // Bytes that are not UTF-8, so only a real decode reproduces them.
    let mut blob = vec![0xff, 0x00, 0xfe, 0x80];
    blob.extend(hex::decode(random_hex(44)).expect("hex"));
    plain("app-blob-b64", STANDARD.encode(&blob), never_logged);
    plain("app-blob-hex", hex::encode(&blob), never_logged);
    let config = json!({
        "username": format!("svc-{}", random_hex(4)),
        "password": format!("pw-{}", random_hex(12)),
        "database": {"host": "db.payments.internal", "name": "orders"},
    });
    never_logged.push(config["password"].as_str().expect("a string").to_owned());
    plain("app-config-json", config.to_string(), never_logged);
    plain(
        "pfx-password",
        format!("pfx-pw-{}", random_hex(8)),
        never_logged,
    );
    for name in [
        "identity-check",
        "coalesce-a",
        "coalesce-b",
        "storm-a",
        "storm-b",
        "storm-c",
        "storm-hard",
        "split-plain",
        "slow-secret",
    ] {
        plain(name, format!("{name}-{}", random_hex(12)), never_logged);
    }
    // Near the service's 25 KB limit: 200 files of it exceed the driver's 4 MiB answer.
    plain(
        "big-blob",
        format!("big-{}", "x".repeat(24_000)),
        never_logged,
    );

    // Four versions; the second is disabled, so a history lists 4, 3, 1.
    let mut rotating = Vec::new();
    for n in 1..=4 {
        let value = format!("rotating-v{n}-{}", random_hex(8));
        let mut entry = put_secret(emulator, "rotating", &value, never_logged);
        if n == 2 {
            let version = entry["version"].as_str().expect("a version").to_owned();
            emulator
                .set_secret_enabled("rotating", Some(&version), false)
                .expect("disable a version");
            entry["enabled"] = json!(false);
        }
        rotating.push(entry);
    }
    secrets.insert("rotating".to_owned(), json!({"versions": rotating}));

    let mut keys = serde_json::Map::new();
    for (name, spec) in [
        ("rsa-key", KeySpec::rsa(2048)),
        ("ec-p256", KeySpec::ec(Curve::P256)),
        ("ec-p384", KeySpec::ec(Curve::P384)),
        ("ec-p521", KeySpec::ec(Curve::P521)),
    ] {
        let info = emulator
            .create_key(name, spec)
            .await
            .unwrap_or_else(|error| panic!("create key {name}: {error}"));
        keys.insert(name.to_owned(), serde_json::to_value(info).expect("JSON"));
    }

    let mut certificates = serde_json::Map::new();
    for name in ["web-selfsigned", "coalesce-cert"] {
        let info = emulator
            .create_certificate(
                name,
                json!({
                    "x509_props": {"subject": format!("CN={name}.emu.test"),
                                   "sans": {"dns_names": [format!("{name}.emu.test")]}},
                    "issuer": {"name": "Self"},
                }),
            )
            .await
            .unwrap_or_else(|error| panic!("create certificate {name}: {error}"));
        certificates.insert(
            name.to_owned(),
            json!({"version": info.version, "cer": info.cer, "content_type": "application/x-pkcs12",
                   "chain": []}),
        );
    }

    // A PFX with an RSA leaf under an intermediate, encrypted with a password on import.
    let rsa_leaf = PKey::from_rsa(Rsa::generate(2048).expect("RSA key")).expect("PKey");
    let chain = Chain::issue(&rsa_leaf, "web-chain-pfx.emu.test");
    let password = format!("import-{}", random_hex(8));
    never_logged.push(password.clone());
    let mut cas = Stack::new().expect("stack");
    cas.push(chain.intermediate.clone()).expect("push");
    cas.push(chain.root.clone()).expect("push");
    let pfx = Pkcs12::builder()
        .name("web-chain-pfx")
        .pkey(&rsa_leaf)
        .cert(&chain.leaf)
        .ca(cas)
        .build2(&password)
        .expect("build the PFX")
        .to_der()
        .expect("PFX DER");
    let info = emulator
        .import_certificate(
            "web-chain-pfx",
            json!({"value": STANDARD.encode(&pfx), "pwd": password}),
        )
        .await
        .expect("import the PFX");
    certificates.insert(
        "web-chain-pfx".to_owned(),
        json!({"version": info.version, "cer": info.cer, "content_type": "application/x-pkcs12",
               "chain": chain.pems()}),
    );

    // A PEM file (PKCS#8 EC key, leaf, intermediate, root) imported as application/x-pem-file.
    let ec_leaf = PKey::from_ec_key(
        EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256"))
            .expect("EC key"),
    )
    .expect("PKey");
    let chain = Chain::issue(&ec_leaf, "web-chain-pem.emu.test");
    let mut pem = String::from_utf8(ec_leaf.private_key_to_pem_pkcs8().expect("PKCS#8"))
        .expect("PEM is ASCII");
    for cert in chain.pems() {
        pem.push_str(&cert);
    }
    let info = emulator
        .import_certificate(
            "web-chain-pem",
            json!({"value": STANDARD.encode(pem.as_bytes()),
                   "policy": {"secret_props": {"contentType": "application/x-pem-file"}}}),
        )
        .await
        .expect("import the PEM file");
    certificates.insert(
        "web-chain-pem".to_owned(),
        json!({"version": info.version, "cer": info.cer, "content_type": "application/x-pem-file",
               "chain": chain.pems()}),
    );

    json!({
        "vault": VAULT,
        "other_vault": OTHER_VAULT,
        "secrets": secrets,
        "json_secret": {"name": "app-config-json", "fields": config},
        "keys": keys,
        "certificates": certificates,
    })
}

/// Registers an identity for every mode the suite exercises.
fn register_identities(emulator: &RunningEmulator, never_logged: &mut Vec<String>) -> Identities {
    let mut client_secret = |permissions: Option<Vec<Permission>>| {
        let identity = ClientSecretIdentity {
            client_id: new_guid(),
            secret: format!("sp-secret-{}", random_hex(16)),
        };
        never_logged.push(identity.secret.clone());
        emulator
            .register_identity(IdentitySpec {
                client_id: Some(identity.client_id.clone()),
                client_secret: Some(identity.secret.clone()),
                permissions,
                ..IdentitySpec::default()
            })
            .expect("register a service principal");
        identity
    };
    let service_principal = client_secret(None);
    let no_secrets_get = client_secret(Some(vec![Permission::Get, Permission::CertificateGet]));

    let workload_client_id = new_guid();
    emulator
        .register_federated_identity(
            &workload_client_id,
            FederatedCredential {
                issuer: WI_ISSUER.to_owned(),
                subject: format!("system:serviceaccount:{WI_NAMESPACE}:{WI_SERVICE_ACCOUNT}"),
                audience: "api://AzureADTokenExchange".to_owned(),
            },
        )
        .expect("register the workload identity");

    // The node's own identity may read keys and certificates, not secrets: a Mount that reads
    // a secret with it fails, so a test tells it apart from the user-assigned one.
    let system = emulator
        .register_identity(IdentitySpec {
            managed: Some(ManagedKind::SystemAssigned),
            permissions: Some(vec![Permission::Get, Permission::CertificateGet]),
            ..IdentitySpec::default()
        })
        .expect("register the system-assigned identity");
    let user_assigned_client_id = new_guid();
    let user_assigned_resource_id = "/subscriptions/00000000-0000-0000-0000-000000000000/\
        resourceGroups/nodes/providers/Microsoft.ManagedIdentity/userAssignedIdentities/csi"
        .to_owned();
    emulator
        .register_managed_identity(
            ManagedKind::UserAssigned,
            Some(&user_assigned_client_id),
            Some(&user_assigned_resource_id),
        )
        .expect("register the user-assigned identity");
    Identities {
        service_principal,
        no_secrets_get,
        workload_client_id,
        user_assigned_client_id,
        user_assigned_resource_id,
        system_assigned_object_id: system.object_id,
    }
}

/// A root CA, an intermediate CA and a leaf it issued.
struct Chain {
    root: X509,
    intermediate: X509,
    leaf: X509,
}

impl Chain {
    /// Issues a chain whose leaf certifies `leaf_key` for `dns_name`.
    fn issue(leaf_key: &PKey<Private>, dns_name: &str) -> Self {
        let root_key = ec_key();
        let root = certificate(
            "kube-kms test root CA",
            &root_key,
            None,
            &root_key,
            Role::Ca { path_len: 1 },
        );
        let intermediate_key = ec_key();
        let intermediate = certificate(
            "kube-kms test intermediate CA",
            &intermediate_key,
            Some(&root),
            &root_key,
            Role::Ca { path_len: 0 },
        );
        let leaf = certificate(
            dns_name,
            leaf_key,
            Some(&intermediate),
            &intermediate_key,
            Role::Leaf,
        );
        Self {
            root,
            intermediate,
            leaf,
        }
    }

    /// Leaf, intermediate, root, as PEM.
    fn pems(&self) -> Vec<String> {
        [&self.leaf, &self.intermediate, &self.root]
            .iter()
            .map(|cert| String::from_utf8(cert.to_pem().expect("PEM")).expect("ASCII"))
            .collect()
    }
}

fn ec_key() -> PKey<Private> {
    let group = EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).expect("P-256");
    PKey::from_ec_key(EcKey::generate(&group).expect("EC key")).expect("PKey")
}

enum Role {
    Ca { path_len: u32 },
    Leaf,
}

/// A certificate for `subject_key` named `common_name`, signed by `issuer_key` (self-signed
/// when `issuer` is `None`).
fn certificate(
    common_name: &str,
    subject_key: &PKey<Private>,
    issuer: Option<&X509>,
    issuer_key: &PKey<Private>,
    role: Role,
) -> X509 {
    let mut name = X509NameBuilder::new().expect("name");
    name.append_entry_by_nid(Nid::COMMONNAME, common_name)
        .expect("CN");
    name.append_entry_by_nid(Nid::ORGANIZATIONNAME, "kube-kms tests")
        .expect("O");
    let name = name.build();
    let mut builder = X509::builder().expect("builder");
    builder.set_version(2).expect("v3");
    let mut serial = BigNum::new().expect("bignum");
    serial
        .rand(127, MsbOption::MAYBE_ZERO, false)
        .expect("serial");
    builder
        .set_serial_number(&serial.to_asn1_integer().expect("serial"))
        .expect("serial");
    builder.set_subject_name(&name).expect("subject");
    builder
        .set_issuer_name(issuer.map_or(&*name, |issuer| issuer.subject_name()))
        .expect("issuer");
    builder.set_pubkey(subject_key).expect("public key");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("after 1970")
        .as_secs();
    let now = i64::try_from(now).expect("fits");
    builder
        .set_not_before(&Asn1Time::from_unix(now - 3600).expect("time"))
        .expect("not before");
    builder
        .set_not_after(&Asn1Time::from_unix(now + 365 * 24 * 3600).expect("time"))
        .expect("not after");
    match role {
        Role::Ca { path_len } => {
            builder
                .append_extension(
                    BasicConstraints::new()
                        .critical()
                        .ca()
                        .pathlen(path_len)
                        .build()
                        .expect("basic constraints"),
                )
                .expect("extension");
            builder
                .append_extension(
                    KeyUsage::new()
                        .critical()
                        .key_cert_sign()
                        .crl_sign()
                        .build()
                        .expect("key usage"),
                )
                .expect("extension");
        }
        Role::Leaf => {
            builder
                .append_extension(
                    BasicConstraints::new()
                        .critical()
                        .build()
                        .expect("basic constraints"),
                )
                .expect("extension");
            builder
                .append_extension(
                    KeyUsage::new()
                        .critical()
                        .digital_signature()
                        .key_encipherment()
                        .build()
                        .expect("key usage"),
                )
                .expect("extension");
            builder
                .append_extension(
                    ExtendedKeyUsage::new()
                        .server_auth()
                        .build()
                        .expect("extended key usage"),
                )
                .expect("extension");
            let san = SubjectAlternativeName::new()
                .dns(common_name)
                .build(&builder.x509v3_context(issuer.map(|i| &**i), None))
                .expect("subject alternative name");
            builder.append_extension(san).expect("extension");
        }
    }
    let ski = SubjectKeyIdentifier::new()
        .build(&builder.x509v3_context(issuer.map(|i| &**i), None))
        .expect("subject key identifier");
    builder.append_extension(ski).expect("extension");
    if issuer.is_some() {
        let aki = AuthorityKeyIdentifier::new()
            .keyid(true)
            .build(&builder.x509v3_context(issuer.map(|i| &**i), None))
            .expect("authority key identifier");
        builder.append_extension(aki).expect("extension");
    }
    builder
        .sign(issuer_key, MessageDigest::sha256())
        .expect("sign");
    builder.build()
}

/// The Alibaba Cloud identities the Alibaba suites register in the emulator: the cluster's
/// OIDC provider; a pod role and the provider's own role trusted for their ServiceAccounts'
/// tokens; a RAM role for AccessKeys of its account; the ECS instance's role; a role in
/// [`ALIBABA_OTHER_ACCOUNT`] trusted by the emulator's account and reading its secret `shared`.
#[derive(Debug, Clone)]
pub struct AlibabaRoles {
    /// The OIDC provider's ARN.
    pub oidc_provider: String,
    /// The pod's role.
    pub pod_role: String,
    /// The provider's own role.
    pub provider_role: String,
    /// The RAM role assumed with an AccessKey.
    pub ram_role: String,
    /// The other account's role.
    pub cross_role: String,
}

/// The other account of cross-account reads.
pub const ALIBABA_OTHER_ACCOUNT: &str = "2222222222222222";
/// The ServiceAccount subject of the provider's own RRSA token.
pub const ALIBABA_PROVIDER_SUBJECT: &str =
    "system:serviceaccount:kube-system:csi-secrets-store-provider-alibabacloud";

/// Registers [`AlibabaRoles`]: the OIDC provider for `issuer`, the pod role trusted for
/// `pod_subject` with `pod_grants`, the ECS instance's role with `ecs_grants`.
pub fn register_alibaba_roles(
    emulator: &alibaba_emulator::RunningEmulator,
    issuer: &str,
    pod_subject: &str,
    pod_grants: alibaba_emulator::Grants,
    ecs_grants: alibaba_emulator::Grants,
) -> AlibabaRoles {
    use alibaba_emulator::{Grants, OidcProviderSpec, RoleSpec};
    let role = |spec: RoleSpec| {
        emulator
            .add_role(spec)
            .expect("the emulator takes the role")
    };
    let oidc_provider = emulator
        .add_oidc_provider(OidcProviderSpec::new("ack-rrsa-cluster", issuer))
        .expect("the emulator takes the OIDC provider");
    let roles = AlibabaRoles {
        pod_role: role(
            RoleSpec::new("pod-reader")
                .trust_oidc(&oidc_provider, &[pod_subject])
                .with_grants(pod_grants),
        ),
        provider_role: role(
            RoleSpec::new("csi-provider").trust_oidc(&oidc_provider, &[ALIBABA_PROVIDER_SUBJECT]),
        ),
        ram_role: role(RoleSpec::new("ram-reader")),
        cross_role: role(
            RoleSpec::new("cross-reader")
                .in_account(ALIBABA_OTHER_ACCOUNT)
                .trust_account(emulator.account_id())
                .with_grants(Grants::secrets(&["shared"])),
        ),
        oidc_provider,
    };
    role(RoleSpec::new("ecs-node").with_grants(ecs_grants));
    emulator
        .set_ecs_role(Some("ecs-node"))
        .expect("the ECS instance's role");
    roles
}

/// A stand-in for the Kubernetes API that answers `GET
/// /api/v1/namespaces/<namespace>/serviceaccounts/<name>` over TLS for the provider's lookup of
/// `ack.alibabacloud.com/role-arn`, checking the bearer token; stopped when dropped.
pub struct FakeKubeApi {
    /// `https://127.0.0.1:<port>`.
    pub url: String,
    /// The CA to trust for it.
    pub ca_file: PathBuf,
    /// The token the provider must present.
    pub token_file: PathBuf,
    /// ServiceAccount reads answered so far.
    pub reads: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FakeKubeApi {
    /// Serves `accounts` ((namespace, name) → role annotation, if any) with files in `dir`.
    pub async fn start(
        dir: &Path,
        accounts: std::collections::BTreeMap<(String, String), Option<String>>,
    ) -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let tls =
            keyvault_emulator::certs::ServerTls::new(&keyvault_emulator::TlsSource::Generate, &[])
                .expect("a TLS certificate for the fake Kubernetes API");
        let ca_file = dir.join("kube-ca.pem");
        std::fs::write(&ca_file, &tls.ca_pem).expect("write the Kubernetes CA");
        let token = format!("kube-token-{}", random_hex(16));
        let token_file = dir.join("kube-token");
        std::fs::write(&token_file, format!("{token}\n")).expect("write the provider's token");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the fake Kubernetes API");
        let url = format!("https://{}", listener.local_addr().expect("an address"));
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.config);
        let reads = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counted = Arc::clone(&reads);
        let task = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let acceptor = acceptor.clone();
                let accounts = accounts.clone();
                let token = token.clone();
                let counted = Arc::clone(&counted);
                tokio::spawn(async move {
                    let Ok(mut stream) = acceptor.accept(stream).await else {
                        return;
                    };
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
                        if stream.read_exact(&mut byte).await.is_err() {
                            return;
                        }
                        head.push(byte[0]);
                    }
                    let head = String::from_utf8_lossy(&head).into_owned();
                    let path = head.split_whitespace().nth(1).unwrap_or("").to_owned();
                    let authorized = head.lines().any(|line| {
                        line.to_ascii_lowercase().starts_with("authorization:")
                            && line.trim_end().ends_with(&format!("Bearer {token}"))
                    });
                    let parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
                    let (status, body) = match parts.as_slice() {
                        _ if !authorized => ("401 Unauthorized", String::new()),
                        [
                            "api",
                            "v1",
                            "namespaces",
                            namespace,
                            "serviceaccounts",
                            name,
                        ] => {
                            counted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                            match accounts.get(&((*namespace).to_owned(), (*name).to_owned())) {
                                Some(role) => {
                                    let annotations = role.as_ref().map_or_else(
                                        || json!({}),
                                        |arn| json!({"ack.alibabacloud.com/role-arn": arn}),
                                    );
                                    let account = json!({
                                        "kind": "ServiceAccount",
                                        "apiVersion": "v1",
                                        "metadata": {"name": name, "namespace": namespace,
                                                     "annotations": annotations},
                                    });
                                    ("200 OK", account.to_string())
                                }
                                None => ("404 Not Found", json!({"kind": "Status"}).to_string()),
                            }
                        }
                        _ => ("404 Not Found", String::new()),
                    };
                    let answer = format!(
                        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: \
                         {}\r\nConnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = stream.write_all(answer.as_bytes()).await;
                    let _ = stream.shutdown().await;
                });
            }
        });
        Self {
            url,
            ca_file,
            token_file,
            reads,
            task,
        }
    }
}

impl Drop for FakeKubeApi {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// `kube-kms-csi-provider` running as a child process against a [`VaultFixture`], killed when
/// dropped.
pub struct ProviderProcess {
    child: Child,
    /// Its socket.
    pub socket: PathBuf,
    /// Its health endpoint's address, read from its log.
    pub health: SocketAddr,
    /// Its log file (stderr).
    pub log: PathBuf,
}

impl ProviderProcess {
    /// Starts the provider on `<fixture dir>/<name>.sock`, configured for the emulated cloud,
    /// with `extra_args` after the common flags; returns once the socket accepts connections
    /// and the health endpoint's address is logged. Fails the test, showing the log, if the
    /// provider exits first or is not serving within a minute.
    pub async fn start(fixture: &VaultFixture, name: &str, extra_args: &[&str]) -> Self {
        let mut args: Vec<OsString> = vec![
            "--cloud-env-dir".into(),
            fixture.cloud_dir.clone().into(),
            "--ca-file".into(),
            fixture.emulator.ca_pem_path().into(),
            "--insecure-resolve".into(),
            format!("{VAULT_SUFFIX}={}", fixture.emulator.addr()).into(),
            "--insecure-imds-endpoint".into(),
            fixture.imds_endpoint().into(),
            "--insecure-skip-challenge-resource-check".into(),
        ];
        args.extend(extra_args.iter().map(OsString::from));
        Self::launch(fixture.dir.path(), name, &args, &[]).await
    }

    /// Starts the provider on `<dir>/<name>.sock` with its log in `<dir>/<name>.log`, the
    /// health listener on a free loopback port and debug logging, then `args`; its environment
    /// is only HOME, PATH and `env`. Returns once the socket accepts connections and the health
    /// endpoint's address is logged; fails the test, showing the log, if the provider exits
    /// first or is not serving within a minute.
    pub async fn launch(dir: &Path, name: &str, args: &[OsString], env: &[(&str, String)]) -> Self {
        let socket = dir.join(format!("{name}.sock"));
        assert!(
            socket.as_os_str().len() <= MAX_SOCKET_PATH,
            "socket path {} is longer than {MAX_SOCKET_PATH} bytes",
            socket.display()
        );
        let log = dir.join(format!("{name}.log"));
        let mut command = Command::new(PROVIDER_BIN);
        command
            .env_clear()
            .env("HOME", dir)
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .envs(env.iter().map(|(name, value)| (name, value)))
            .arg("--socket")
            .arg(&socket)
            .args(["--health-address", "127.0.0.1:0", "--log-level", "debug"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("create the provider's log"));
        let child = command.spawn().expect("kube-kms-csi-provider starts");
        let mut provider = Self {
            child,
            socket,
            health: SocketAddr::from(([127, 0, 0, 1], 0)),
            log,
        };
        let give_up = Instant::now() + START_DEADLINE;
        loop {
            if let Some(status) = provider.child.try_wait().expect("wait for the provider") {
                panic!(
                    "kube-kms-csi-provider exited with {status} before serving:\n{}",
                    provider.logs()
                );
            }
            let serving = tokio::net::UnixStream::connect(&provider.socket)
                .await
                .is_ok();
            if serving && let Some(health) = health_address(&provider.logs()) {
                provider.health = health;
                return provider;
            }
            assert!(
                Instant::now() < give_up,
                "kube-kms-csi-provider was not serving (socket {} accepting: {serving}, health \
                 address logged: no) within {START_DEADLINE:?}:\n{}",
                provider.socket.display(),
                provider.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }

    /// Everything the provider logged so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Fails the test, quoting the line, if the provider's log holds one of `secrets`, a
    /// private key or a JWT.
    pub fn assert_log_holds_none_of(&self, secrets: &[String]) {
        for line in self.logs().lines() {
            let leaked = secrets
                .iter()
                .find(|secret| line.contains(secret.as_str()))
                .map(|_| "a seeded secret, client secret or password")
                .or_else(|| line.contains("PRIVATE KEY").then_some("a private key"))
                // Every JWT (service-account token, access token) starts with base64 of `{"`.
                .or_else(|| line.contains("eyJ").then_some("a JWT"));
            if let Some(what) = leaked {
                panic!("the provider logged {what}:\n{line}");
            }
        }
    }

    /// Stops the provider with SIGTERM (as the DaemonSet's pod is stopped) and checks that it
    /// exited cleanly, removed its socket, and logged none of `secrets` on the way.
    pub async fn stop_cleanly(self, secrets: &[String]) {
        self.assert_log_holds_none_of(secrets);
        let socket = self.socket.clone();
        let log = self.log.clone();
        let status = self.stop().await;
        assert_eq!(
            status.code(),
            Some(0),
            "kube-kms-csi-provider exited with {status} after SIGTERM:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        assert!(
            std::fs::symlink_metadata(&socket).is_err(),
            "the provider left its socket {} behind",
            socket.display()
        );
    }

    /// Sends SIGTERM and waits for the provider to exit.
    pub async fn stop(mut self) -> ExitStatus {
        let status = Command::new("kill")
            .args(["-s", "TERM", &self.child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(
            status.success(),
            "kill -s TERM {}: {status}",
            self.child.id()
        );
        let give_up = Instant::now() + STOP_DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait for the provider") {
                return status;
            }
            assert!(
                Instant::now() < give_up,
                "kube-kms-csi-provider did not exit within {STOP_DEADLINE:?} of SIGTERM:\n{}",
                self.logs()
            );
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for ProviderProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The health endpoint's address from the provider's log: the first `127.0.0.1:<port>` on a
/// line that mentions `healthz` (text or JSON log format).
fn health_address(log: &str) -> Option<SocketAddr> {
    log.lines()
        .filter(|line| line.contains("healthz"))
        .find_map(|line| {
            let at = line.find("127.0.0.1:")?;
            let rest = &line[at + "127.0.0.1:".len()..];
            let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
            let port: u16 = digits.parse().ok().filter(|port| *port != 0)?;
            Some(SocketAddr::from(([127, 0, 0, 1], port)))
        })
}

/// Runs the Python unittest `modules` against `provider` with `env`, failing the test with the
/// suite's and the provider's logs unless every test ran and passed.
pub async fn run_python_suite_against(
    provider: &ProviderProcess,
    modules: &[&str],
    env: &[(&'static str, String)],
) {
    let started = std::time::Instant::now();
    let (passed, report) = run_python_suite(modules, env).await;
    let elapsed = started.elapsed();
    assert!(
        passed,
        "the driver-shaped Python client failed after {elapsed:.2?}:\n{report}\n\
         --- provider log ---\n{}",
        provider.logs()
    );
    eprintln!("{report}\nthe Python suite took {elapsed:.2?}");
}

/// Runs the Python unittest `modules` (in [`SUITE_DIR`]) with `env`; returns whether every test
/// ran and passed, and the suite's output.
pub async fn run_python_suite(modules: &[&str], env: &[(&'static str, String)]) -> (bool, String) {
    let mut command = tokio::process::Command::new("python3");
    command
        .args(["-m", "unittest", "-v"])
        .args(modules)
        .current_dir(SUITE_DIR)
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .env("PYTHONUNBUFFERED", "1")
        .env("NO_PROXY", "localhost,127.0.0.1")
        .stdin(Stdio::null())
        .kill_on_drop(true);
    for name in SCRUBBED {
        command.env_remove(name);
    }
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("CSI_") {
            command.env_remove(name);
        }
    }
    command.envs(env.iter().map(|(name, value)| (name, value)));
    let output = match tokio::time::timeout(PYTHON_DEADLINE, command.output()).await {
        Ok(output) => {
            output.unwrap_or_else(|error| panic!("cannot run python3 ({error}): {INSTALL_HINT}"))
        }
        Err(_) => {
            return (
                false,
                format!("the Python suite did not finish within {PYTHON_DEADLINE:?}"),
            );
        }
    };
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!(
        "--- python stdout ---\n{}\n--- python stderr ---\n{stderr}",
        String::from_utf8_lossy(&output.stdout),
    );
    let complete = stderr.contains("\nOK") && !stderr.contains("skipped");
    (output.status.success() && complete, report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_health_address_is_read_from_text_and_json_logs() {
        let text = "2026-01-01T00:00:00Z  INFO serving /healthz address=127.0.0.1:40123\n";
        assert_eq!(
            health_address(text),
            Some(SocketAddr::from(([127, 0, 0, 1], 40123)))
        );
        let json = r#"{"fields":{"message":"serving /healthz","address":"127.0.0.1:8989"}}"#;
        assert_eq!(
            health_address(json),
            Some(SocketAddr::from(([127, 0, 0, 1], 8989)))
        );
        assert_eq!(
            health_address("resolving vault.emu.test to 127.0.0.1:443"),
            None
        );
        assert_eq!(health_address("healthz on 127.0.0.1:0"), None);
    }
}
