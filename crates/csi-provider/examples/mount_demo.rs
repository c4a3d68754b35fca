//! A Mount end to end on one machine, with nothing to install: the Key Vault emulator (Key Vault
//! and Entra ID over HTTPS) in this process, the provider serving its Unix socket as in
//! production (`wiring::azure_backend`), and a tonic client calling Mount as the Secrets Store
//! CSI driver does — then 20 more pods with the same class, to show what reaches the vault.
//!
//! `cargo run -p csi-provider --example mount_demo`. docs/csi-provider.md shows its output. Never
//! prints file contents beyond a certificate's first PEM line: the demo's secret is printed only
//! as its length.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use csi_provider::metrics::Metrics;
use csi_provider::proto::v1alpha1::MountRequest;
use csi_provider::proto::v1alpha1::csi_driver_provider_client::CsiDriverProviderClient;
use csi_provider::service::CsiProvider;
use csi_provider::wiring;
use keyvault_emulator::{Emulator, IdentitySpec, Options, SecretSpec};
use serde_json::json;
use tonic::transport::{Endpoint, Uri};

const SUFFIX: &str = "vault.emu.test";

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let emulator = Emulator::start(Options {
        extra_names: vec![SUFFIX.to_owned(), format!("*.{SUFFIX}")],
        resource: Some(format!("https://{SUFFIX}")),
        ..Options::key_vault()
    })
    .await?;
    emulator.set_secret("db-password", SecretSpec::value("s3cr3t-value"))?;
    emulator
        .create_certificate(
            "web",
            json!({"x509_props": {"subject": "CN=web.example"}, "issuer": {"name": "Self"}}),
        )
        .await?;
    let client_id = "11111111-2222-3333-4444-555555555555";
    let client_secret = "demo-client-secret";
    emulator.register_identity(IdentitySpec {
        client_id: Some(client_id.to_owned()),
        client_secret: Some(client_secret.to_owned()),
        ..IdentitySpec::default()
    })?;

    // The node's view: a custom cloud file (Entra ID at the emulator, vaults under SUFFIX).
    let dir = tempfile::Builder::new().prefix("csi").tempdir_in("/tmp")?;
    std::fs::write(
        dir.path().join("cloud.json"),
        json!({
            "name": "AzureStackCloud",
            "activeDirectoryEndpoint": format!("{}/", emulator.authority_url()),
            "keyVaultEndpoint": format!("https://{SUFFIX}/"),
            "keyVaultDNSSuffix": SUFFIX,
        })
        .to_string(),
    )?;
    let settings = wiring::Settings {
        cloud_env_dir: dir.path().to_owned(),
        ca_file: Some(emulator.ca_pem_path().to_owned()),
        insecure_resolve: vec![format!("{SUFFIX}={}", emulator.addr())],
        ..wiring::Settings::default()
    };
    let metrics = Arc::new(Metrics::default());
    let backend = wiring::azure_backend(&settings, Arc::clone(&metrics))?;
    let provider = CsiProvider::new(Arc::new(backend), metrics, Duration::from_secs(60));
    let socket = dir.path().join("azure.sock");
    let (listener, _bound) = grpc_uds::socket::bind(&socket, 0o600)?;
    tokio::spawn(csi_provider::serve(
        listener,
        provider,
        std::future::pending(),
    ));
    println!("provider serving on {}", socket.display());

    // The class, as a SecretProviderClass's spec.parameters, and the pod keys kubelet adds.
    let objects = "array:\n  - |\n    objectName: db-password\n    objectType: secret\n    filePermission: \"0440\"\n  - |\n    objectName: web\n    objectType: secret\n    objectAlias: tls/web.pem\n";
    let mount = |pod: usize| {
        let mut attributes: BTreeMap<&str, String> = BTreeMap::new();
        attributes.insert("keyvaultName", "kv-demo".into());
        attributes.insert("tenantID", emulator.tenant_id().into());
        attributes.insert("cloudName", "AzureStackCloud".into());
        attributes.insert("cloudEnvFileName", "cloud.json".into());
        attributes.insert("objects", objects.into());
        attributes.insert("secretProviderClass", "demo".into());
        attributes.insert("csi.storage.k8s.io/pod.name", format!("web-{pod}"));
        attributes.insert("csi.storage.k8s.io/pod.namespace", "default".into());
        attributes.insert("csi.storage.k8s.io/pod.uid", format!("uid-{pod}"));
        attributes.insert("csi.storage.k8s.io/serviceAccount.name", "default".into());
        MountRequest {
            attributes: serde_json::to_string(&attributes).unwrap_or_default(),
            secrets: json!({"clientid": client_id, "clientsecret": client_secret}).to_string(),
            target_path: format!(
                "/var/lib/kubelet/pods/uid-{pod}/volumes/kubernetes.io~csi/secrets/mount"
            ),
            permission: "420".into(),
            current_object_version: Vec::new(),
        }
    };
    let path = socket.clone();
    let channel = Endpoint::try_from("http://localhost")?
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let path = path.clone();
            async move {
                Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(
                    tokio::net::UnixStream::connect(path).await?,
                ))
            }
        }))
        .await?;
    let client = CsiDriverProviderClient::new(channel);

    let response = client.clone().mount(mount(0)).await?.into_inner();
    println!("\nMount for pod web-0:");
    for file in &response.files {
        let first_line = String::from_utf8_lossy(&file.contents);
        let shown = if file.path.starts_with("tls/") {
            first_line.lines().next().unwrap_or_default().to_owned()
        } else {
            format!("({} bytes)", file.contents.len())
        };
        println!("  file {:<14} mode {:04o}  {shown}", file.path, file.mode);
    }
    for version in &response.object_version {
        println!("  object_version {:<18} {}", version.id, version.version);
    }

    let reads_before: u64 = emulator.reads().iter().map(|read| read.requests).sum();
    println!("  vault reads so far: {reads_before}");
    let pods = (1..=20).map(|pod| {
        let mut client = client.clone();
        let request = mount(pod);
        async move { client.mount(request).await }
    });
    let answers = futures::future::join_all(pods).await;
    let ok = answers.iter().filter(|answer| answer.is_ok()).count();
    let reads_after: u64 = emulator.reads().iter().map(|read| read.requests).sum();
    println!(
        "\n20 more pods with the same class at once: {ok} mounted, {} vault reads \
         (Azure's provider: 40, one per object per pod)",
        reads_after - reads_before
    );

    let mut bad = mount(99);
    bad.attributes = bad.attributes.replace("db-password", "db-pasword");
    let status = client
        .clone()
        .mount(bad)
        .await
        .expect_err("a missing secret fails the Mount");
    println!(
        "\nA class naming a missing secret:\n  {:?}: {}",
        status.code(),
        status.message()
    );
    Ok(())
}
