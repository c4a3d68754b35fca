//! Every authentication mode of the Azure provider obtains a token from the emulator's Entra ID
//! or managed identity endpoint and then uses the key: client secret (file or named variable),
//! client certificate (PEM, and PFX with a password), workload identity detected from AZURE_*
//! variables, AKS's azure.json, a managed identity through the App Service endpoint
//! (IDENTITY_ENDPOINT, system- and user-assigned), and the Azure CLI.
//!
//! The managed identity and CLI modes read the process environment inside azure_identity, so
//! they run the real `kube-kms serve` binary with that environment and probe its socket; so does
//! the check that HTTPS_PROXY is honoured (through a CONNECT proxy on loopback). The VM
//! (IMDS) form of managed identity cannot be tested here: azure_identity 1.0 always sends it to
//! http://169.254.169.254 and cannot be pointed elsewhere; only its selection is checked.

mod azure_support;
mod util;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use azure_access::auth::{AuthMode, AzureEnv, SecretSource};
use azure_support::{MINIMAL_PERMISSIONS, TestVault, new_client_id};
use keyvault_emulator::{
    ClientCertificate, FederatedCredential, IdentitySpec, ManagedKind, Operation,
};
use kube_kms::crypto::SecretKey;
use kube_kms::provider::KeyProvider;
use kube_kms::provider::azure::AzureKeyVaultProvider;
use util::{BIN, ServedBinary};

/// Opens a provider on `config` with `env`, wraps and unwraps a KEK, and checks that a token
/// was issued by `issued_by` in the meantime. Returns how the provider authenticated.
async fn uses_the_key(
    vault: &TestVault,
    config: kube_kms::provider::azure::AzureConfig,
    env: &AzureEnv,
    issued_by: Operation,
) -> String {
    let tokens_before = vault.emulator.counts(issued_by).succeeded;
    let provider = AzureKeyVaultProvider::open_with_env(config, env)
        .await
        .expect("the provider authenticates and reads the key");
    let key = provider.current_key().await.expect("key");
    let kek = SecretKey::generate().expect("RNG");
    let wrapped = provider.wrap(&key, &kek).await.expect("wrap");
    let unwrapped = provider
        .unwrap(key.version(), &wrapped)
        .await
        .expect("unwrap");
    assert_eq!(unwrapped.expose(), kek.expose());
    assert!(
        vault.emulator.counts(issued_by).succeeded > tokens_before,
        "no token from {issued_by:?}"
    );
    provider.authentication().to_owned()
}

fn register(vault: &TestVault, spec: IdentitySpec) -> String {
    let client_id = spec.client_id.clone().expect("client id");
    vault
        .emulator
        .register_identity(IdentitySpec {
            permissions: Some(MINIMAL_PERMISSIONS.to_vec()),
            ..spec
        })
        .expect("register the identity");
    client_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_secret_from_a_file_or_a_named_variable() {
    let vault = TestVault::key_vault(2048).await;
    let how = uses_the_key(
        &vault,
        vault.config(),
        &AzureEnv::from_pairs(&[]),
        Operation::EntraToken,
    )
    .await;
    assert!(how.starts_with("client secret"), "{how}");

    let secret = std::fs::read_to_string(&vault.secret_file).expect("secret");
    let mut config = vault.config();
    config.auth.client_secret = Some(SecretSource::Env("KMS_TEST_SECRET".into()));
    let env = AzureEnv::from_pairs(&[("KMS_TEST_SECRET", secret.trim_end())]);
    let how = uses_the_key(&vault, config, &env, Operation::EntraToken).await;
    assert!(how.contains("client secret"), "{how}");

    // Detected from the SDK's conventional variables, with no azure.auth.
    let mut config = vault.config();
    config.auth.mode = AuthMode::Auto;
    config.auth.client_secret = None;
    config.auth.client_id = None;
    config.auth.tenant_id = None;
    let env = AzureEnv::from_pairs(&[
        ("AZURE_CLIENT_ID", vault.client_id.as_str()),
        ("AZURE_TENANT_ID", vault.emulator.tenant_id()),
        ("AZURE_CLIENT_SECRET", secret.trim_end()),
    ]);
    let how = uses_the_key(&vault, config, &env, Operation::EntraToken).await;
    assert!(
        how.contains("detected environment variable AZURE_CLIENT_SECRET"),
        "{how}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn client_certificate_as_pem_and_as_pfx_with_a_password() {
    let vault = TestVault::key_vault(2048).await;
    let certificate = ClientCertificate::generate("kube-kms").expect("certificate");
    let client_id = register(
        &vault,
        IdentitySpec {
            client_id: Some(new_client_id()),
            certificate_pem: Some(certificate.cert_pem.clone()),
            ..IdentitySpec::default()
        },
    );
    let pem = vault.dir.path().join("client.pem");
    std::fs::write(&pem, certificate.combined_pem().as_bytes()).expect("PEM");
    let mut config = vault.config();
    config.auth.mode = AuthMode::Auto;
    config.auth.client_secret = None;
    config.auth.client_id = Some(client_id.clone());
    config.auth.client_certificate_file = Some(pem);
    let how = uses_the_key(
        &vault,
        config.clone(),
        &AzureEnv::from_pairs(&[]),
        Operation::EntraToken,
    )
    .await;
    assert!(how.starts_with("client certificate"), "{how}");

    let key =
        openssl::pkey::PKey::private_key_from_pem(certificate.key_pem().as_bytes()).expect("key");
    let cert = openssl::x509::X509::from_pem(certificate.cert_pem.as_bytes()).expect("cert");
    let pfx = openssl::pkcs12::Pkcs12::builder()
        .name("kube-kms")
        .pkey(&key)
        .cert(&cert)
        .build2("pfx-password")
        .and_then(|pfx| pfx.to_der())
        .expect("PFX");
    let pfx_file = vault.dir.path().join("client.pfx");
    std::fs::write(&pfx_file, pfx).expect("PFX file");
    let password = vault.dir.path().join("pfx-password");
    std::fs::write(&password, "pfx-password\n").expect("password file");
    config.auth.mode = AuthMode::ClientCertificate;
    config.auth.client_certificate_file = Some(pfx_file);
    config.auth.client_certificate_password = Some(SecretSource::File(password));
    let how = uses_the_key(
        &vault,
        config,
        &AzureEnv::from_pairs(&[]),
        Operation::EntraToken,
    )
    .await;
    assert!(how.starts_with("client certificate"), "{how}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workload_identity_is_detected_from_the_webhooks_variables() {
    let vault = TestVault::key_vault(2048).await;
    let client_id = register(
        &vault,
        IdentitySpec {
            client_id: Some(new_client_id()),
            federated: Some(FederatedCredential {
                issuer: "https://oidc.cluster.example/".into(),
                subject: "system:serviceaccount:kube-system:kube-kms".into(),
                audience: "api://AzureADTokenExchange".into(),
            }),
            ..IdentitySpec::default()
        },
    );
    let token = vault
        .emulator
        .federated_token(&client_id, Duration::from_secs(3600))
        .expect("federated token");
    let token_file = vault.dir.path().join("azure-identity-token");
    std::fs::write(&token_file, token).expect("token file");

    let mut config = vault.config();
    config.auth.mode = AuthMode::Auto;
    config.auth.client_secret = None;
    config.auth.client_id = None;
    config.auth.tenant_id = None;
    // The webhook's AZURE_AUTHORITY_HOST is where the token is requested.
    config.authority_host = None;
    let env = AzureEnv::from_pairs(&[
        ("AZURE_CLIENT_ID", client_id.as_str()),
        ("AZURE_TENANT_ID", vault.emulator.tenant_id()),
        (
            "AZURE_FEDERATED_TOKEN_FILE",
            token_file.to_str().expect("UTF-8 path"),
        ),
        (
            "AZURE_AUTHORITY_HOST",
            vault.emulator.authority_url().as_str(),
        ),
        // Also present, but workload identity comes first.
        ("AZURE_CLIENT_SECRET", "ignored"),
    ]);
    let how = uses_the_key(&vault, config, &env, Operation::EntraToken).await;
    assert!(
        how.starts_with("workload identity") && how.contains("AZURE_FEDERATED_TOKEN_FILE"),
        "{how}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aks_azure_json_with_a_secret_or_workload_identity() {
    let vault = TestVault::key_vault(2048).await;
    let secret = std::fs::read_to_string(&vault.secret_file).expect("secret");
    let azure_json = vault.dir.path().join("azure.json");
    std::fs::write(
        &azure_json,
        format!(
            r#"{{"cloud": "AzurePublicCloud", "tenantId": "{}", "aadClientId": "{}",
                "aadClientSecret": "{}", "vmType": "vmss", "useInstanceMetadata": true}}"#,
            vault.emulator.tenant_id(),
            vault.client_id,
            secret.trim_end()
        ),
    )
    .expect("azure.json");
    let mut config = vault.config();
    config.auth = azure_access::auth::AuthSettings {
        azure_json: azure_json.clone(),
        ..Default::default()
    };
    // Detected last: nothing else is configured or in the (empty) environment.
    let how = uses_the_key(
        &vault,
        config.clone(),
        &AzureEnv::from_pairs(&[]),
        Operation::EntraToken,
    )
    .await;
    assert!(
        how.starts_with("client secret") && how.contains("azure.json"),
        "{how}"
    );

    let client_id = register(
        &vault,
        IdentitySpec {
            client_id: Some(new_client_id()),
            federated: Some(FederatedCredential {
                issuer: "https://oidc.aks.example/".into(),
                subject: "system:serviceaccount:kube-system:kube-kms".into(),
                audience: "api://AzureADTokenExchange".into(),
            }),
            ..IdentitySpec::default()
        },
    );
    let token_file = vault.dir.path().join("aks-token");
    std::fs::write(
        &token_file,
        vault
            .emulator
            .federated_token(&client_id, Duration::from_secs(600))
            .expect("token"),
    )
    .expect("token file");
    std::fs::write(
        &azure_json,
        format!(
            r#"{{"tenantId": "{}", "aadClientId": "{client_id}",
                "useFederatedWorkloadIdentityExtension": true,
                "aadFederatedTokenFile": "{}"}}"#,
            vault.emulator.tenant_id(),
            token_file.display()
        ),
    )
    .expect("azure.json");
    config.auth.mode = AuthMode::AzureJson;
    let how = uses_the_key(
        &vault,
        config,
        &AzureEnv::from_pairs(&[]),
        Operation::EntraToken,
    )
    .await;
    assert!(how.starts_with("workload identity"), "{how}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vm_managed_identity_is_selected_but_imds_cannot_be_redirected() {
    let vault = TestVault::key_vault(2048).await;
    let mut config = vault.config();
    config.auth = azure_access::auth::AuthSettings {
        mode: AuthMode::ManagedIdentity,
        azure_json: vault.dir.path().join("none.json"),
        ..Default::default()
    };
    // No remote call here: the first one would go to 169.254.169.254.
    let provider = AzureKeyVaultProvider::new_with_env(config.clone(), &AzureEnv::from_pairs(&[]))
        .expect("built without a remote call");
    assert!(
        provider
            .authentication()
            .starts_with("system-assigned managed identity"),
        "{}",
        provider.authentication()
    );
    config.auth.managed_identity = Some(azure_access::auth::ManagedId::ResourceId(
        "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kms".into(),
    ));
    config.auth.mode = AuthMode::Auto;
    let provider = AzureKeyVaultProvider::new_with_env(config, &AzureEnv::from_pairs(&[]))
        .expect("built without a remote call");
    assert!(
        provider
            .authentication()
            .contains("userAssignedIdentities/kms"),
        "{}",
        provider.authentication()
    );
}

// ---------------------------------------------------------------------------------------------
// Modes that azure_identity configures from the process environment: the real binary.

/// Starts `kube-kms serve` with the emulator's configuration and exactly `env` (plus PATH and
/// HOME), and waits until it prints its endpoint — that is, until it authenticated, read the
/// key and wrapped a first KEK.
async fn serve(
    vault: &TestVault,
    dir: &Path,
    extra_yaml: &str,
    env: &[(&str, String)],
) -> ServedBinary {
    let socket = dir.join("kms.sock");
    let config = dir.join("kube-kms.yaml");
    std::fs::write(
        &config,
        format!(
            "socket: {}\nstate_dir: {}\nhealth_address: \"off\"\nprovider: azure\nazure:\n  \
             vault_url: {}\n  key_name: {}\n  ca_file: {}\n  \
             insecure_skip_challenge_resource_check: true\n  azure_json: {}\n{extra_yaml}",
            socket.display(),
            dir.join("state").display(),
            vault.emulator.vault_url(),
            vault.key_name,
            vault.emulator.ca_pem_path().display(),
            dir.join("no-azure.json").display(),
        ),
    )
    .expect("config file");
    let mut command = Command::new(BIN);
    command
        .env_clear()
        .env("HOME", dir)
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .arg("serve")
        .arg("--config")
        .arg(&config);
    for (name, value) in env {
        command.env(name, value);
    }
    ServedBinary::start_async(command, &dir.join("stderr.log")).await
}

async fn probe(serve: &ServedBinary) {
    let report = kube_kms::probe::probe(&serve.socket, Duration::from_secs(10)).await;
    assert!(report.passed(), "{report}\n{}", serve.logs());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn managed_identity_through_the_app_service_endpoint_system_and_user_assigned() {
    let vault = TestVault::key_vault(2048).await;
    vault
        .emulator
        .register_identity(IdentitySpec {
            managed: Some(ManagedKind::SystemAssigned),
            permissions: Some(MINIMAL_PERMISSIONS.to_vec()),
            ..IdentitySpec::default()
        })
        .expect("system-assigned identity");
    let user = register(
        &vault,
        IdentitySpec {
            client_id: Some(new_client_id()),
            managed: Some(ManagedKind::UserAssigned),
            resource_id: Some(
                "/subscriptions/s/resourceGroups/g/providers/Microsoft.ManagedIdentity/userAssignedIdentities/kms".into(),
            ),
            ..IdentitySpec::default()
        },
    );
    let env = vec![
        ("IDENTITY_ENDPOINT", vault.emulator.identity_endpoint()),
        (
            "IDENTITY_HEADER",
            vault.emulator.identity_header().to_owned(),
        ),
        // Proxies that answer nothing: the managed identity endpoint must not go through them.
        ("HTTP_PROXY", "http://127.0.0.1:9".to_owned()),
        ("http_proxy", "http://127.0.0.1:9".to_owned()),
    ];

    let dir = azure_support::short_dir();
    let before = vault.emulator.counts(Operation::AppServiceToken).succeeded;
    let system = serve(&vault, dir.path(), "", &env).await;
    probe(&system).await;
    let log = system.logs();
    assert!(log.contains("system-assigned managed identity"), "{log}");
    drop(system);
    assert!(vault.emulator.counts(Operation::AppServiceToken).succeeded > before);

    let dir = azure_support::short_dir();
    let before = vault.emulator.counts(Operation::AppServiceToken).succeeded;
    let assigned = serve(
        &vault,
        dir.path(),
        &format!("  managed_identity_client_id: {user}\n"),
        &env,
    )
    .await;
    probe(&assigned).await;
    let log = assigned.logs();
    assert!(
        log.contains(&format!(
            "user-assigned managed identity (client id {user})"
        )),
        "{log}"
    );
    assert!(vault.emulator.counts(Operation::AppServiceToken).succeeded > before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_azure_cli_login_is_used_when_az_is_on_path() {
    let vault = TestVault::key_vault(2048).await;
    let dir = azure_support::short_dir();
    let bin = dir.path().join("bin");
    std::fs::create_dir(&bin).expect("bin");
    // A stand-in for `az account get-access-token`: it gets a token from the emulator's Entra
    // endpoint with the test identity and answers in the CLI's JSON.
    let az = bin.join("az");
    std::fs::write(
        &az,
        r#"#!/usr/bin/env python3
import json, os, sys, time
import requests
args = sys.argv[1:]
assert args[:2] == ["account", "get-access-token"], args
scope = args[args.index("--scope") + 1]
with open(os.environ["FAKE_AZ_SECRET_FILE"]) as f:
    secret = f.read().strip()
answer = requests.post(
    os.environ["FAKE_AZ_TOKEN_URL"],
    data={"grant_type": "client_credentials", "client_id": os.environ["FAKE_AZ_CLIENT_ID"],
          "client_secret": secret, "scope": scope},
    verify=os.environ["FAKE_AZ_CA"], timeout=10)
answer.raise_for_status()
token = answer.json()
print(json.dumps({"accessToken": token["access_token"], "expiresOn": "2099-01-01 00:00:00.000000",
                  "expires_on": int(time.time()) + int(token["expires_in"]), "tokenType": "Bearer"}))
"#,
    )
    .expect("az");
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&az, std::fs::Permissions::from_mode(0o755)).expect("chmod");
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let env = vec![
        ("PATH", path),
        (
            "FAKE_AZ_SECRET_FILE",
            vault.secret_file.display().to_string(),
        ),
        ("FAKE_AZ_TOKEN_URL", vault.emulator.token_url()),
        ("FAKE_AZ_CLIENT_ID", vault.client_id.clone()),
        (
            "FAKE_AZ_CA",
            vault.emulator.ca_pem_path().display().to_string(),
        ),
        ("NO_PROXY", "localhost,127.0.0.1".to_owned()),
    ];
    let before = vault.emulator.counts(Operation::EntraToken).succeeded;
    // A real `az` can take a second to answer; the stand-in starts Python.
    let cli = serve(&vault, dir.path(), "  call_deadline: 10s\n", &env).await;
    probe(&cli).await;
    let log = cli.logs();
    assert!(log.contains("the Azure CLI's login"), "{log}");
    assert!(vault.emulator.counts(Operation::EntraToken).succeeded > before);
}

/// A CONNECT proxy on loopback that only ever connects to 127.0.0.1, counting tunnels.
fn loopback_connect_proxy() -> (u16, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").expect("proxy binds");
    let port = listener.local_addr().expect("address").port();
    let tunnels = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = std::sync::Arc::clone(&tunnels);
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(mut client) = client else { return };
            let counted = std::sync::Arc::clone(&counted);
            std::thread::spawn(move || {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && head.len() < 8192 {
                    if client.read_exact(&mut byte).is_err() {
                        return;
                    }
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head);
                let mut words = head.split_whitespace();
                let (Some("CONNECT"), Some(target)) = (words.next(), words.next()) else {
                    return;
                };
                // Loopback only, whatever the request names.
                let Some(port) = target
                    .rsplit(':')
                    .next()
                    .and_then(|p| p.parse::<u16>().ok())
                else {
                    return;
                };
                let Ok(upstream) = TcpStream::connect(("127.0.0.1", port)) else {
                    return;
                };
                counted.fetch_add(1, Ordering::SeqCst);
                if client
                    .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
                    .is_err()
                {
                    return;
                }
                let (Ok(mut client_read), Ok(mut upstream_write)) =
                    (client.try_clone(), upstream.try_clone())
                else {
                    return;
                };
                let mut upstream_read = upstream;
                std::thread::spawn(move || {
                    let _ = std::io::copy(&mut client_read, &mut upstream_write);
                    let _ = upstream_write.shutdown(std::net::Shutdown::Write);
                });
                let _ = std::io::copy(&mut upstream_read, &mut client);
                let _ = client.shutdown(std::net::Shutdown::Write);
            });
        }
    });
    (port, tunnels)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn https_proxy_is_honoured_for_key_vault_and_entra_id() {
    let vault = TestVault::key_vault(2048).await;
    let (port, tunnels) = loopback_connect_proxy();
    let dir = azure_support::short_dir();
    let extra = format!(
        "  auth: client-secret\n  tenant_id: {}\n  client_id: {}\n  client_secret_file: {}\n  \
         authority_host: {}\n",
        vault.emulator.tenant_id(),
        vault.client_id,
        vault.secret_file.display(),
        vault.emulator.authority_url()
    );
    let env = vec![("HTTPS_PROXY", format!("http://127.0.0.1:{port}"))];
    let proxied = serve(&vault, dir.path(), &extra, &env).await;
    probe(&proxied).await;
    assert!(
        tunnels.load(std::sync::atomic::Ordering::SeqCst) >= 1,
        "no request went through HTTPS_PROXY"
    );
}

#[test]
fn keys_commands_point_at_key_vault() {
    let output = Command::new(BIN)
        .args([
            "keys",
            "rotate",
            "--provider",
            "azure",
            "--azure-vault-url",
            "https://kv.vault.azure.net/",
            "--azure-key-name",
            "kek",
        ])
        .env_remove("KUBE_KMS_CONFIG")
        .output()
        .expect("kube-kms runs");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("az keyvault key rotate --id https://kv.vault.azure.net/keys/kek"),
        "{stderr}"
    );
}
