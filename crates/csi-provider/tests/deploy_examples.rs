//! Everything in deploy/csi-provider/ and every SecretProviderClass in docs/csi-provider.md is
//! checked against the provider itself, so that a copied manifest works:
//!
//! - each class is `provider: azure` or `provider: alibabacloud` and its `spec.parameters` pass
//!   that backend's own parser (`AzureMountSpec::from_parameters`,
//!   `AlibabaMountSpec::from_parameters`); each synced Secret names a file the class writes;
//! - each example pod names a class, a service account and credentials defined beside it, with
//!   the identity mode its class implies (for Alibaba: the pod's RAM role from its class or its
//!   ServiceAccount's annotation, or a nodePublishSecretRef with an AccessKey);
//! - the DaemonSets, rendered by `kubectl kustomize` as `kubectl apply -k` renders them, run the
//!   image and binary docs/release.md names, with flags the built binary has, on the socket the
//!   driver dials, with probes and a metrics port that reach the health listener, and hardened.
//!
//! Needs kubectl (any release from 1.20, whose kustomize v2 the kustomizations are kept
//! compatible with): the rendering tests fail, never skip, without it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use csi_provider::alibaba::spec::{
    AlibabaMountSpec, ObjectType, RoleArn, SpecSettings, VersionSelector,
};
use csi_provider::azure::spec::{
    AzureMountSpec, CloudChoice, IdentityMode, ObjectFormat, ObjectKind,
};
use serde_json::Value;

/// The driver's name in a pod's `csi` volume.
const DRIVER: &str = "secrets-store.csi.k8s.io";
/// The label a nodePublishSecretRef Secret needs for the driver's rotation to read it.
const USED_LABEL: &str = "secrets-store.csi.k8s.io/used";
/// The annotation Azure's workload identity webhook reads on a service account.
const CLIENT_ID_ANNOTATION: &str = "azure.workload.identity/client-id";
/// The annotation Alibaba's provider (and kube-kms's) reads a pod's RAM role from.
const ROLE_ARN_ANNOTATION: &str = "ack.alibabacloud.com/role-arn";
/// The directory the driver searches for providers on Linux nodes (its --provider-volume).
const LINUX_PROVIDERS_DIR: &str = "/var/run/secrets-store-csi-providers";
/// The same on Windows nodes.
const WINDOWS_PROVIDERS_DIR: &str = r"C:\k\secrets-store-csi-providers";

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every non-empty document of a YAML stream.
fn documents(text: &str, origin: &str) -> Vec<Value> {
    serde_saphyr::from_multiple::<Value>(text)
        .unwrap_or_else(|e| panic!("{origin}: not YAML: {e}"))
        .into_iter()
        .filter(|document| !document.is_null())
        .collect()
}

fn kind(document: &Value) -> &str {
    document["kind"].as_str().unwrap_or("")
}

fn name(document: &Value) -> &str {
    document["metadata"]["name"]
        .as_str()
        .unwrap_or_else(|| panic!("a {} without metadata.name", kind(document)))
}

/// The `.yaml` files under `dir`, recursively, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_owned()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|ext| ext == "yaml") {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// One YAML file of deploy/csi-provider/ (or one `yaml` block of the doc) and its documents.
struct Source {
    origin: String,
    documents: Vec<Value>,
}

impl Source {
    fn classes(&self) -> impl Iterator<Item = &Value> {
        self.documents
            .iter()
            .filter(|document| kind(document) == "SecretProviderClass")
    }

    fn named(&self, wanted_kind: &str, wanted_name: &str) -> Option<&Value> {
        self.documents
            .iter()
            .find(|document| kind(document) == wanted_kind && name(document) == wanted_name)
    }
}

fn deploy_sources() -> Vec<Source> {
    let root = repository().join("deploy/csi-provider");
    yaml_files(&root)
        .into_iter()
        .map(|path| {
            let origin = path
                .strip_prefix(repository())
                .unwrap_or(&path)
                .display()
                .to_string();
            let documents = documents(&read(&path), &origin);
            Source { origin, documents }
        })
        .collect()
}

fn example_sources() -> Vec<Source> {
    let examples: Vec<Source> = deploy_sources()
        .into_iter()
        .filter(|source| source.origin.contains("/examples/"))
        .collect();
    assert!(
        examples.len() >= 8,
        "deploy/csi-provider/examples/ holds the examples docs/csi-provider.md lists"
    );
    examples
}

/// Every ```yaml block of docs/csi-provider.md, named by the line it starts on.
fn doc_sources() -> Vec<Source> {
    let path = repository().join("docs/csi-provider.md");
    let text = read(&path);
    let mut sources = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (number, line) in text.lines().enumerate() {
        match (&mut block, line.trim()) {
            (None, "```yaml") => block = Some((number + 1, String::new())),
            (Some((start, body)), "```") => {
                let origin = format!("docs/csi-provider.md, the yaml block at line {start}");
                let documents = documents(body, &origin);
                sources.push(Source { origin, documents });
                block = None;
            }
            (Some((_, body)), _) => {
                body.push_str(line);
                body.push('\n');
            }
            (None, _) => {}
        }
    }
    assert!(
        block.is_none(),
        "docs/csi-provider.md: a yaml block is not closed"
    );
    sources
}

/// A class's `spec.parameters`, which Kubernetes holds as a string map: a value YAML reads as a
/// boolean or a number (`usePodIdentity: true`) is refused by the API server, so here too.
fn parameters(class: &Value, origin: &str) -> BTreeMap<String, String> {
    let object = class["spec"]["parameters"]
        .as_object()
        .unwrap_or_else(|| panic!("{origin}: class {} has no spec.parameters", name(class)));
    object
        .iter()
        .map(|(key, value)| {
            let text = value.as_str().unwrap_or_else(|| {
                panic!(
                    "{origin}: class {}: parameter {key} is {value}, not a string; quote it",
                    name(class)
                )
            });
            (key.clone(), text.to_owned())
        })
        .collect()
}

/// A class as its provider reads it.
enum Class {
    /// `provider: azure`.
    Azure(AzureMountSpec),
    /// `provider: alibabacloud`.
    Alibaba(AlibabaMountSpec),
}

/// Checks a SecretProviderClass the way the driver and the provider it names will, and returns
/// that provider's reading of it.
fn check_class(class: &Value, origin: &str) -> Class {
    let class_name = name(class);
    assert_eq!(
        class["apiVersion"], "secrets-store.csi.x-k8s.io/v1",
        "{origin}: class {class_name}"
    );
    let parameters = parameters(class, origin);
    let refused = |e: &dyn std::fmt::Display| -> ! {
        panic!("{origin}: class {class_name}: the provider refuses it: {e}")
    };
    match class["spec"]["provider"].as_str() {
        Some("azure") => {
            let spec = AzureMountSpec::from_parameters(&parameters).unwrap_or_else(|e| refused(&e));
            let holds_a_key = |file: &str| {
                spec.objects.iter().any(|object| {
                    object.kind == ObjectKind::Secret
                        && match object.format {
                            ObjectFormat::Pem => object.file_name() == file,
                            ObjectFormat::Tls => format!("{}/tls.key", object.file_name()) == file,
                            ObjectFormat::Pfx => false,
                        }
                })
            };
            check_secret_objects(class, &written_files(&spec), &holds_a_key, origin);
            Class::Azure(spec)
        }
        Some("alibabacloud") => {
            let spec = AlibabaMountSpec::from_parameters(&parameters, &SpecSettings::default())
                .unwrap_or_else(|e| refused(&e));
            let files: BTreeSet<String> = spec
                .objects
                .iter()
                .flat_map(|object| {
                    std::iter::once(object.file.clone())
                        .chain(object.json_fields.iter().map(|field| field.file.clone()))
                })
                .collect();
            // A KMS secret may hold a PEM key and chain: the driver cuts them out.
            let whole_objects = |file: &str| spec.objects.iter().any(|object| object.file == file);
            check_secret_objects(class, &files, &whole_objects, origin);
            Class::Alibaba(spec)
        }
        other => panic!(
            "{origin}: class {class_name} must name the provider `azure` (the socket azure.sock) \
             or `alibabacloud` (alibabacloud.sock), not {other:?}"
        ),
    }
}

/// The files a Mount of `spec` writes, relative to the volume, as far as the class decides
/// them (`--write-cert-and-key-in-separate-files`, off in the DaemonSet, would add more).
fn written_files(spec: &AzureMountSpec) -> BTreeSet<String> {
    spec.objects
        .iter()
        .flat_map(|object| object.output_paths())
        .collect()
}

/// `secretObjects`: what the driver's sync needs (a name, a type, data), every `objectName` one
/// of the class's `files`, and a kubernetes.io/tls Secret only with the two keys the driver can
/// cut out of a certificate's file, its key from a file that `holds_a_key`.
fn check_secret_objects(
    class: &Value,
    files: &BTreeSet<String>,
    holds_a_key: &dyn Fn(&str) -> bool,
    origin: &str,
) {
    let Some(secret_objects) = class["spec"].get("secretObjects") else {
        return;
    };
    let class_name = name(class);
    for secret in secret_objects.as_array().expect("secretObjects is a list") {
        let secret_name = secret["secretName"]
            .as_str()
            .unwrap_or_else(|| panic!("{origin}: class {class_name}: a secretObject has no name"));
        let where_ = format!("{origin}: class {class_name}, secretObject {secret_name}");
        let secret_type = secret["type"]
            .as_str()
            .unwrap_or_else(|| panic!("{where_}: no type (the driver refuses it)"));
        let data = secret["data"]
            .as_array()
            .filter(|data| !data.is_empty())
            .unwrap_or_else(|| panic!("{where_}: no data (the driver refuses it)"));
        for entry in data {
            let object_name = entry["objectName"].as_str().expect("data objectName");
            let key = entry["key"].as_str().expect("data key");
            assert!(
                files.contains(object_name),
                "{where_}: objectName {object_name} is not a file the class writes: {files:?}"
            );
            if secret_type == "kubernetes.io/tls" {
                assert!(
                    key == "tls.crt" || key == "tls.key",
                    "{where_}: the driver fills a kubernetes.io/tls Secret's tls.crt and tls.key only, not {key}"
                );
                assert!(
                    key != "tls.key" || holds_a_key(object_name),
                    "{where_}: tls.key from {object_name}, which holds no private key (a \
                     certificate's key comes with objectType secret, in pem or tls format)"
                );
            }
        }
    }
}

#[test]
fn every_class_in_deploy_is_one_the_provider_accepts() {
    let mut specs = Vec::new();
    let mut alibaba = Vec::new();
    for source in deploy_sources() {
        for class in source.classes() {
            match check_class(class, &source.origin) {
                Class::Azure(spec) => specs.push(spec),
                Class::Alibaba(spec) => alibaba.push(spec),
            }
        }
    }
    // The Alibaba examples docs/csi-provider.md points to are all there.
    let alibaba_objects = || alibaba.iter().flat_map(|spec| spec.objects.iter());
    let uses = |present: bool, what: &str| assert!(present, "no Alibaba example uses {what}");
    uses(
        alibaba
            .iter()
            .any(|spec| spec.use_pod_service_account_token && spec.pod_role.is_none()),
        "the pod's role from its ServiceAccount's annotation",
    );
    uses(
        alibaba.iter().any(|spec| spec.pod_role.is_some()),
        "podServiceAccountRoleArn",
    );
    uses(
        alibaba
            .iter()
            .any(|spec| !spec.use_pod_service_account_token),
        "an identity other than the pod's",
    );
    uses(
        alibaba.iter().any(|spec| spec.path_translation.is_none()),
        "pathTranslation False",
    );
    uses(
        alibaba_objects().any(|o| o.kind == ObjectType::Oos),
        "an OOS parameter",
    );
    uses(
        alibaba_objects().any(|o| matches!(o.version, VersionSelector::Oos(_))),
        "an OOS ParameterVersion",
    );
    uses(
        alibaba_objects().any(|o| matches!(&o.version, VersionSelector::Kms { id: Some(_), .. })),
        "a KMS VersionId",
    );
    uses(
        alibaba_objects()
            .any(|o| matches!(&o.version, VersionSelector::Kms { stage: Some(_), .. })),
        "a KMS VersionStage",
    );
    uses(
        alibaba_objects().any(|o| !o.json_fields.is_empty()),
        "jmesPath",
    );
    uses(
        alibaba_objects().any(|o| o.cross_account_role.is_some()),
        "crossAccountRoleArn",
    );
    uses(
        alibaba_objects().any(|o| o.endpoint.ends_with(".cryptoservice.kms.aliyuncs.com")),
        "a KMS instance's kmsEndpoint",
    );
    // The examples docs/csi-provider.md points to are all there.
    let identity = |wanted: &dyn Fn(&IdentityMode) -> bool, what: &str| {
        assert!(
            specs.iter().any(|spec| wanted(&spec.identity)),
            "no example class uses {what}"
        );
    };
    identity(
        &|mode| matches!(mode, IdentityMode::WorkloadIdentity { .. }),
        "workload identity",
    );
    identity(
        &|mode| matches!(mode, IdentityMode::ServicePrincipal),
        "a service principal",
    );
    identity(
        &|mode| {
            matches!(
                mode,
                IdentityMode::VmManagedIdentity {
                    user_assigned_client_id: None
                }
            )
        },
        "a system-assigned VM identity",
    );
    identity(
        &|mode| {
            matches!(
                mode,
                IdentityMode::VmManagedIdentity {
                    user_assigned_client_id: Some(_)
                }
            )
        },
        "a user-assigned VM identity",
    );
    let china = CloudChoice::Named(azure_access::cloud::CloudName::China);
    assert!(
        specs.iter().any(|spec| spec.cloud == china),
        "no example class is in Azure China"
    );
    let objects = || specs.iter().flat_map(|spec| spec.objects.iter());
    let feature = |present: bool, what: &str| assert!(present, "no example object uses {what}");
    feature(
        objects().any(|o| o.format == ObjectFormat::Tls),
        "objectFormat tls",
    );
    feature(
        objects().any(|o| o.format == ObjectFormat::Pfx && o.pfx_password_secret.is_some()),
        "pfxPasswordSecretName",
    );
    feature(objects().any(|o| !o.json_fields.is_empty()), "jmesPath");
    feature(objects().any(|o| o.vault.is_some()), "its own keyvaultName");
    feature(
        objects().any(|o| o.version_history > 1),
        "objectVersionHistory",
    );
    feature(
        objects().any(|o| o.version.is_some()),
        "a pinned objectVersion",
    );
    feature(
        objects().any(|o| o.kind == ObjectKind::Key),
        "objectType key",
    );
    feature(
        objects().any(|o| o.kind == ObjectKind::Cert),
        "objectType cert",
    );
}

#[test]
fn every_class_in_the_doc_is_one_the_provider_accepts() {
    let sources = doc_sources();
    assert!(
        sources.len() >= 3,
        "docs/csi-provider.md has its yaml examples"
    );
    let mut classes = 0;
    for source in &sources {
        for class in source.classes() {
            check_class(class, &source.origin);
            classes += 1;
        }
    }
    assert!(
        classes >= 3,
        "docs/csi-provider.md shows SecretProviderClasses"
    );
}

/// The pod spec of a workload (a Pod, or the template of a Deployment, DaemonSet, …).
fn pod_spec(document: &Value) -> Option<&Value> {
    match kind(document) {
        "Pod" => Some(&document["spec"]),
        "Deployment" | "DaemonSet" | "StatefulSet" | "ReplicaSet" | "Job" => {
            Some(&document["spec"]["template"]["spec"])
        }
        _ => None,
    }
}

#[test]
fn every_example_pod_mounts_a_class_with_what_its_identity_needs() {
    for source in example_sources() {
        let origin = &source.origin;
        let mut mounts = 0;
        for workload in &source.documents {
            let Some(pod) = pod_spec(workload) else {
                continue;
            };
            let workload_name = name(workload);
            let volumes = pod["volumes"].as_array().map_or(&[][..], Vec::as_slice);
            for volume in volumes.iter().filter(|volume| volume.get("csi").is_some()) {
                let csi = &volume["csi"];
                let volume_name = volume["name"].as_str().expect("a volume name");
                let where_ = format!("{origin}: {workload_name}, volume {volume_name}");
                assert_eq!(csi["driver"], DRIVER, "{where_}");
                assert_eq!(
                    csi["readOnly"], true,
                    "{where_}: the driver refuses a volume that is not readOnly"
                );
                for container in pod["containers"].as_array().expect("containers") {
                    for mount in container["volumeMounts"]
                        .as_array()
                        .map_or(&[][..], Vec::as_slice)
                    {
                        if mount["name"] == volume_name {
                            assert_eq!(mount["readOnly"], true, "{where_}: its volumeMount");
                        }
                    }
                }
                let class_name = csi["volumeAttributes"]["secretProviderClass"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{where_}: no secretProviderClass"));
                let class = source
                    .named("SecretProviderClass", class_name)
                    .unwrap_or_else(|| panic!("{where_}: no class {class_name} in the file"));
                let secret_ref = csi["nodePublishSecretRef"]["name"].as_str();
                let spec = match check_class(class, origin) {
                    Class::Azure(spec) => spec,
                    Class::Alibaba(spec) => {
                        check_alibaba_identity(&source, pod, &spec, secret_ref, &where_);
                        mounts += 1;
                        continue;
                    }
                };
                match &spec.identity {
                    IdentityMode::WorkloadIdentity { client_id } => {
                        let account = pod["serviceAccountName"].as_str().unwrap_or_else(|| {
                            panic!(
                                "{where_}: workload identity needs the pod's own service account"
                            )
                        });
                        let account =
                            source.named("ServiceAccount", account).unwrap_or_else(|| {
                                panic!("{where_}: no ServiceAccount {account} in the file")
                            });
                        if let Some(annotated) =
                            account["metadata"]["annotations"][CLIENT_ID_ANNOTATION].as_str()
                        {
                            assert_eq!(
                                annotated, client_id,
                                "{where_}: the service account's client-id annotation and the class's clientID"
                            );
                        }
                        assert!(
                            secret_ref.is_none(),
                            "{where_}: credentials it does not use"
                        );
                    }
                    IdentityMode::ServicePrincipal => {
                        let secret_name = secret_ref.unwrap_or_else(|| {
                            panic!("{where_}: a service principal class needs nodePublishSecretRef")
                        });
                        check_credentials_secret(
                            &source,
                            secret_name,
                            &["clientid", "clientsecret"],
                            &where_,
                        );
                    }
                    IdentityMode::VmManagedIdentity { .. } => {
                        assert!(
                            secret_ref.is_none(),
                            "{where_}: credentials it does not use"
                        );
                    }
                    IdentityMode::PodIdentity | IdentityMode::TokenProxy { .. } => {}
                }
                mounts += 1;
            }
        }
        assert!(mounts > 0, "{origin}: no pod mounts its classes");
    }
}

/// What an Alibaba class's pod needs: for the pod's own role, its ServiceAccount (annotated
/// with the role unless the class names it) and no credentials; otherwise, a
/// nodePublishSecretRef, when there is one, with an AccessKey and the label the driver wants.
fn check_alibaba_identity(
    source: &Source,
    pod: &Value,
    spec: &AlibabaMountSpec,
    secret_ref: Option<&str>,
    where_: &str,
) {
    if spec.use_pod_service_account_token {
        let account = pod["serviceAccountName"].as_str().unwrap_or_else(|| {
            panic!("{where_}: the pod's RAM role needs the pod's own ServiceAccount")
        });
        let account = source
            .named("ServiceAccount", account)
            .unwrap_or_else(|| panic!("{where_}: no ServiceAccount {account} in the file"));
        let annotated = account["metadata"]["annotations"][ROLE_ARN_ANNOTATION].as_str();
        match (&spec.pod_role, annotated) {
            (None, None) => panic!(
                "{where_}: neither podServiceAccountRoleArn nor the ServiceAccount's \
                 {ROLE_ARN_ANNOTATION} names the pod's role"
            ),
            (_, Some(arn)) => {
                RoleArn::parse(arn)
                    .unwrap_or_else(|e| panic!("{where_}: {ROLE_ARN_ANNOTATION}: {e}"));
            }
            (Some(_), None) => {}
        }
        assert!(
            secret_ref.is_none(),
            "{where_}: credentials it does not use"
        );
        return;
    }
    if let Some(secret_name) = secret_ref {
        check_credentials_secret(
            source,
            secret_name,
            &["access_key", "access_secret"],
            where_,
        );
    }
}

/// A nodePublishSecretRef Secret: in the file, labelled as the driver wants, with `keys` (the
/// providers read them in any case).
fn check_credentials_secret(source: &Source, secret_name: &str, keys: &[&str], where_: &str) {
    let secret = source
        .named("Secret", secret_name)
        .unwrap_or_else(|| panic!("{where_}: no Secret {secret_name} in the file"));
    assert_eq!(
        secret["metadata"]["labels"][USED_LABEL], "true",
        "{where_}: Secret {secret_name} needs the label {USED_LABEL}: \"true\""
    );
    let present: BTreeSet<String> = ["data", "stringData"]
        .iter()
        .filter_map(|field| secret[*field].as_object())
        .flat_map(|map| map.keys())
        .map(|key| key.to_ascii_lowercase())
        .collect();
    for key in keys {
        assert!(
            present.contains(*key),
            "{where_}: Secret {secret_name} has no {key}"
        );
    }
}

/// Runs `kubectl kustomize <dir>` (deploy/csi-provider/<dir>) and returns the documents.
fn kustomize(dir: &str) -> Vec<Value> {
    let kubectl = std::env::var("KUBECTL").unwrap_or_else(|_| "kubectl".to_owned());
    let path = repository().join("deploy/csi-provider").join(dir);
    let output = Command::new(&kubectl)
        .arg("kustomize")
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{kubectl} kustomize` ({e}): these tests render deploy/csi-provider as \
                 `kubectl apply -k` does. Install kubectl 1.20 or newer (Debian: `apt-get install \
                 kubernetes-client`), or set KUBECTL to its path"
            )
        });
    assert!(
        output.status.success(),
        "`{kubectl} kustomize {}` failed: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
    let text = String::from_utf8(output.stdout).expect("kustomize prints UTF-8");
    documents(
        &text,
        &format!("kubectl kustomize deploy/csi-provider/{dir}"),
    )
}

/// `kube-kms-csi-provider --help`.
fn help() -> String {
    let output = Command::new(env!("CARGO_BIN_EXE_kube-kms-csi-provider"))
        .arg("--help")
        .output()
        .expect("the provider binary runs");
    assert!(output.status.success(), "--help fails");
    String::from_utf8(output.stdout).expect("UTF-8 help")
}

/// Each long option `--help` lists, with its `[default: …]` if it shows one.
fn binary_options() -> BTreeMap<String, Option<String>> {
    let mut options = BTreeMap::new();
    let mut current: Option<String> = None;
    for line in help().lines().map(str::trim) {
        let flag = line
            .split(|c: char| c.is_whitespace() || c == ',' || c == '=')
            .find(|word| word.starts_with("--") && word.len() > 2);
        if line.starts_with('-')
            && let Some(flag) = flag
        {
            options.insert(flag.to_owned(), None);
            current = Some(flag.to_owned());
        } else if let (Some(flag), Some(start)) = (&current, line.find("[default: ")) {
            let rest = &line[start + "[default: ".len()..];
            let default = rest.split(']').next().unwrap_or(rest);
            options.insert(flag.clone(), Some(default.to_owned()));
        }
    }
    assert!(options.contains_key("--socket"), "--help lists the flags");
    options
}

/// The long options `kube-kms-csi-provider --help` lists.
fn binary_flags() -> BTreeSet<String> {
    binary_options().into_keys().collect()
}

/// The image and binary docs/release.md publishes for the provider.
fn released_image() -> (String, String) {
    let text = read(&repository().join("docs/release.md"));
    let row = text
        .lines()
        .find(|line| line.starts_with('|') && line.contains("`crates/csi-provider/Containerfile`"))
        .expect("docs/release.md lists the CSI provider's image");
    let cells: Vec<&str> = row
        .trim()
        .trim_matches('|')
        .split('|')
        .map(|cell| cell.trim().trim_matches('`'))
        .collect();
    let [image, _, package, binary] = cells[..] else {
        panic!("docs/release.md: an image row has four cells: {row}");
    };
    assert_eq!(package, env!("CARGO_PKG_NAME"));
    (image.to_owned(), binary.to_owned())
}

/// The ports crates/csi-provider/Containerfile exposes.
fn exposed_ports() -> Vec<u16> {
    let text = read(&repository().join("crates/csi-provider/Containerfile"));
    text.lines()
        .filter_map(|line| line.trim().strip_prefix("EXPOSE "))
        .flat_map(str::split_whitespace)
        .map(|port| {
            port.trim_end_matches("/tcp")
                .parse::<u16>()
                .unwrap_or_else(|e| panic!("Containerfile: EXPOSE {port}: {e}"))
        })
        .collect()
}

/// A container's `--flag=value` arguments. Every argument has that one form, so that a value is
/// never mistaken for a flag or the other way round; each flag must be one the binary has.
fn arguments(
    container: &Value,
    flags: &BTreeSet<String>,
    origin: &str,
) -> BTreeMap<String, String> {
    let mut found = BTreeMap::new();
    for arg in container["args"].as_array().expect("args") {
        let arg = arg.as_str().expect("string args");
        let (flag, value) = arg
            .split_once('=')
            .unwrap_or_else(|| panic!("{origin}: write {arg} as --flag=value"));
        assert!(
            flags.contains(flag),
            "{origin}: kube-kms-csi-provider has no flag {flag}; it has {flags:?}"
        );
        let previous = found.insert(flag.to_owned(), value.to_owned());
        assert!(previous.is_none(), "{origin}: {flag} given twice");
    }
    found
}

fn only<'a>(documents: &'a [Value], wanted: &str, origin: &str) -> &'a Value {
    let found: Vec<&Value> = documents.iter().filter(|d| kind(d) == wanted).collect();
    assert_eq!(found.len(), 1, "{origin}: one {wanted}");
    found[0]
}

/// Where the DaemonSet's health listener is reached from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Network {
    /// The pod's own network: listen on the pod's address; kubelet probes the pod IP.
    Pod,
    /// The node's network: listen on the node's loopback; kubelet probes 127.0.0.1.
    Host,
}

/// Checks a Linux DaemonSet serving `provider` (`azure`, `alibabacloud`) as rendered, with its
/// service account.
fn check_linux_daemonset(documents: &[Value], network: Network, provider: &str, origin: &str) {
    let flags = binary_flags();
    let (image, binary) = released_image();
    let daemonset = only(documents, "DaemonSet", origin);
    assert_eq!(
        daemonset["metadata"]["namespace"], "kube-system",
        "{origin}"
    );
    let pod = &daemonset["spec"]["template"]["spec"];
    let account = pod["serviceAccountName"]
        .as_str()
        .expect("serviceAccountName");
    let service_account = only(documents, "ServiceAccount", origin);
    assert_eq!(
        name(service_account),
        account,
        "{origin}: the pod's service account"
    );
    // Only the Alibaba backend calls the Kubernetes API (ServiceAccount annotations).
    assert_eq!(
        pod["automountServiceAccountToken"],
        provider == "alibabacloud",
        "{origin}: an API token only for provider alibabacloud"
    );
    assert_eq!(
        service_account["automountServiceAccountToken"],
        provider == "alibabacloud",
        "{origin}: the service account agrees with the pod"
    );
    assert_eq!(pod["nodeSelector"]["kubernetes.io/os"], "linux", "{origin}");
    let tolerates_all = pod["tolerations"]
        .as_array()
        .expect("tolerations")
        .iter()
        .any(|toleration| toleration["operator"] == "Exists" && toleration.get("key").is_none());
    assert!(
        tolerates_all,
        "{origin}: the provider runs on every node, whatever its taints"
    );
    let grace = pod["terminationGracePeriodSeconds"]
        .as_u64()
        .expect("terminationGracePeriodSeconds");
    assert!(
        grace > csi_provider::LIMITS.drain_limit.as_secs(),
        "{origin}: the grace period outlasts the provider's drain"
    );

    let containers = pod["containers"].as_array().expect("containers");
    assert_eq!(containers.len(), 1, "{origin}");
    let container = &containers[0];
    let ours = format!("{image}:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(
        container["image"].as_str(),
        Some(ours.as_str()),
        "{origin}: this version's image"
    );
    assert_eq!(
        container["command"],
        serde_json::json!([binary]),
        "{origin}: the image's ENTRYPOINT (it has no shell)"
    );

    let security = &container["securityContext"];
    assert_eq!(
        security["runAsUser"], 0,
        "{origin}: root, for the shared providers directory"
    );
    assert_eq!(security["allowPrivilegeEscalation"], false, "{origin}");
    assert_eq!(security["readOnlyRootFilesystem"], true, "{origin}");
    assert_eq!(
        security["capabilities"]["drop"],
        serde_json::json!(["ALL"]),
        "{origin}"
    );
    assert!(
        security["capabilities"].get("add").is_none(),
        "{origin}: no capability added"
    );
    assert!(
        security.get("privileged").is_none_or(|p| p == false),
        "{origin}"
    );
    assert_eq!(container["resources"]["requests"]["cpu"], "50m", "{origin}");
    assert_eq!(
        container["resources"]["requests"]["memory"], "100Mi",
        "{origin}"
    );
    assert!(
        container["resources"]["limits"]["memory"].is_string(),
        "{origin}: a memory limit"
    );

    let args = arguments(container, &flags, origin);
    assert_eq!(
        args.get("--provider").map_or("azure", String::as_str),
        provider,
        "{origin}: --provider"
    );
    let socket = args
        .get("--socket")
        .map_or(csi_provider::DEFAULT_SOCKET, String::as_str);
    assert_eq!(
        socket,
        format!("{LINUX_PROVIDERS_DIR}/{provider}.sock"),
        "{origin}: the socket the driver dials for provider {provider}"
    );
    let mounted = container["volumeMounts"]
        .as_array()
        .expect("volumeMounts")
        .iter()
        .find(|mount| mount["mountPath"] == LINUX_PROVIDERS_DIR)
        .unwrap_or_else(|| panic!("{origin}: {LINUX_PROVIDERS_DIR} is not mounted"));
    let volume = pod["volumes"]
        .as_array()
        .expect("volumes")
        .iter()
        .find(|volume| volume["name"] == mounted["name"])
        .expect("the mounted volume");
    assert_eq!(
        volume["hostPath"]["path"], LINUX_PROVIDERS_DIR,
        "{origin}: the host's providers directory, where the driver looks"
    );

    let health: SocketAddr = args
        .get("--health-address")
        .unwrap_or_else(|| panic!("{origin}: the probes need --health-address"))
        .parse()
        .unwrap_or_else(|e| panic!("{origin}: --health-address: {e}"));
    let host_network = pod["hostNetwork"].as_bool().unwrap_or(false);
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        let get = &container[probe]["httpGet"];
        assert_eq!(get["path"], path, "{origin}: {probe}");
        assert_eq!(
            get["port"].as_u64(),
            Some(u64::from(health.port())),
            "{origin}: {probe}"
        );
        assert!(
            container[probe]["timeoutSeconds"]
                .as_u64()
                .is_some_and(|t| t <= 5),
            "{origin}: {probe} has a short timeout"
        );
        match network {
            // kubelet dials the pod's IP: the listener must be on it, not on loopback.
            Network::Pod => {
                assert!(
                    get.get("host").is_none(),
                    "{origin}: {probe} dials the pod IP"
                );
                assert!(
                    health.ip().is_unspecified(),
                    "{origin}: {probe} reaches the pod IP, so --health-address must listen there, not on {health}"
                );
            }
            // The node's network: kubelet shares it, and the listener stays off the node's
            // addresses.
            Network::Host => {
                assert_eq!(get["host"], "127.0.0.1", "{origin}: {probe}");
                assert!(
                    health.ip().is_loopback(),
                    "{origin}: the node's loopback only"
                );
            }
        }
    }
    assert_eq!(
        host_network,
        network == Network::Host,
        "{origin}: hostNetwork"
    );
    let metrics_port = container["ports"]
        .as_array()
        .expect("ports")
        .iter()
        .find(|port| port["name"] == "metrics")
        .unwrap_or_else(|| panic!("{origin}: a port named metrics"));
    assert_eq!(
        metrics_port["containerPort"].as_u64(),
        Some(u64::from(health.port())),
        "{origin}"
    );
    assert!(
        exposed_ports().contains(&health.port()),
        "{origin}: crates/csi-provider/Containerfile exposes the health port {}",
        health.port()
    );
}

#[test]
fn the_install_renders_the_daemonset_as_the_binary_and_image_expect_it() {
    let rendered = kustomize(".");
    assert_eq!(
        rendered,
        kustomize("base"),
        "deploy/csi-provider lists the same files as deploy/csi-provider/base"
    );
    let kinds: BTreeSet<&str> = rendered.iter().map(kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from(["DaemonSet", "ServiceAccount"]),
        "the install holds the provider only (no examples, no Windows DaemonSet)"
    );
    check_linux_daemonset(&rendered, Network::Pod, "azure", "deploy/csi-provider");
    let daemonset = only(&rendered, "DaemonSet", "deploy/csi-provider");
    let annotations = &daemonset["spec"]["template"]["metadata"]["annotations"];
    let pod = &daemonset["spec"]["template"]["spec"];
    let args = arguments(
        &pod["containers"][0],
        &binary_flags(),
        "deploy/csi-provider",
    );
    let health: SocketAddr = args["--health-address"].parse().expect("an address");
    assert_eq!(annotations["prometheus.io/port"], health.port().to_string());
}

#[test]
fn the_host_network_variant_keeps_the_health_listener_on_the_nodes_loopback() {
    let rendered = kustomize("host-network");
    check_linux_daemonset(
        &rendered,
        Network::Host,
        "azure",
        "deploy/csi-provider/host-network",
    );
    let daemonset = only(&rendered, "DaemonSet", "host-network");
    assert_eq!(
        daemonset["spec"]["template"]["spec"]["dnsPolicy"], "ClusterFirstWithHostNet",
        "cluster DNS from the node's network"
    );
}

#[test]
fn the_alibabacloud_variant_serves_its_own_socket_and_may_read_only_service_accounts() {
    let origin = "deploy/csi-provider/alibabacloud";
    let rendered = kustomize("alibabacloud");
    check_linux_daemonset(&rendered, Network::Pod, "alibabacloud", origin);

    // Beside the `azure` install on the same cluster: no name and no pod selector in common.
    let base = kustomize(".");
    let alibaba = only(&rendered, "DaemonSet", origin);
    let azure = only(&base, "DaemonSet", "deploy/csi-provider");
    assert_ne!(name(alibaba), name(azure), "{origin}: its own DaemonSet");
    let selector = |daemonset: &Value| daemonset["spec"]["selector"]["matchLabels"].clone();
    assert_ne!(selector(alibaba), selector(azure), "{origin}: its own pods");
    let template_labels = &alibaba["spec"]["template"]["metadata"]["labels"];
    for (key, value) in selector(alibaba).as_object().expect("matchLabels") {
        assert_eq!(
            &template_labels[key], value,
            "{origin}: the selector matches its pods"
        );
    }

    // `get` on ServiceAccounts, bound to the pod's own service account, and nothing more.
    let account = only(&rendered, "ServiceAccount", origin);
    let role = only(&rendered, "ClusterRole", origin);
    assert_eq!(
        role["rules"],
        serde_json::json!([{"apiGroups": [""], "resources": ["serviceaccounts"], "verbs": ["get"]}]),
        "{origin}: read ServiceAccounts only"
    );
    let binding = only(&rendered, "ClusterRoleBinding", origin);
    assert_eq!(binding["roleRef"]["kind"], "ClusterRole", "{origin}");
    assert_eq!(
        binding["roleRef"]["name"].as_str(),
        Some(name(role)),
        "{origin}"
    );
    assert_eq!(
        binding["subjects"],
        serde_json::json!([{
            "kind": "ServiceAccount",
            "name": name(account),
            "namespace": account["metadata"]["namespace"],
        }]),
        "{origin}: bound to the provider's own service account"
    );
    let kinds: BTreeSet<&str> = rendered.iter().map(kind).collect();
    assert_eq!(
        kinds,
        BTreeSet::from([
            "ClusterRole",
            "ClusterRoleBinding",
            "DaemonSet",
            "ServiceAccount"
        ]),
        "{origin}"
    );
}

#[test]
fn the_windows_daemonset_uses_the_drivers_windows_directory() {
    let origin = "deploy/csi-provider/windows";
    let rendered = kustomize("windows");
    let daemonset = only(&rendered, "DaemonSet", origin);
    let pod = &daemonset["spec"]["template"]["spec"];
    assert_eq!(
        pod["nodeSelector"]["kubernetes.io/os"], "windows",
        "{origin}"
    );
    let base = kustomize(".");
    assert_eq!(
        pod["serviceAccountName"].as_str(),
        Some(name(only(&base, "ServiceAccount", "deploy/csi-provider"))),
        "{origin}: the base's service account"
    );
    let container = &pod["containers"][0];
    let (image, _) = released_image();
    let ours = format!("{image}:{}", env!("CARGO_PKG_VERSION"));
    assert_eq!(container["image"].as_str(), Some(ours.as_str()), "{origin}");
    let args = arguments(container, &binary_flags(), origin);
    assert_eq!(
        args["--socket"],
        format!(r"{WINDOWS_PROVIDERS_DIR}\azure.sock"),
        "{origin}: the socket the Windows driver dials"
    );
    let mount = &container["volumeMounts"][0];
    assert_eq!(mount["mountPath"], WINDOWS_PROVIDERS_DIR, "{origin}");
    let volume = &pod["volumes"][0];
    assert_eq!(volume["name"], mount["name"], "{origin}");
    assert_eq!(
        volume["hostPath"]["path"], WINDOWS_PROVIDERS_DIR,
        "{origin}"
    );
    let health: SocketAddr = args["--health-address"].parse().expect("an address");
    assert!(
        health.ip().is_unspecified(),
        "{origin}: probes dial the pod IP"
    );
    for probe in ["livenessProbe", "readinessProbe"] {
        assert_eq!(
            container[probe]["httpGet"]["port"].as_u64(),
            Some(u64::from(health.port())),
            "{origin}: {probe}"
        );
    }
}

#[test]
fn the_docs_flags_table_lists_every_flag_with_the_binarys_default() {
    let text = read(&repository().join("docs/csi-provider.md"));
    let rows: Vec<Vec<String>> = text
        .lines()
        .skip_while(|line| *line != "## The provider's flags")
        .skip_while(|line| !line.starts_with("| flag |"))
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            line.trim()
                .trim_matches('|')
                .split(" | ")
                .map(|cell| cell.trim().to_owned())
                .collect()
        })
        .collect();
    assert!(!rows.is_empty(), "docs/csi-provider.md has the flags table");
    let options = binary_options();
    let mut documented = BTreeSet::new();
    for row in &rows {
        let flag = row[0]
            .trim_start_matches('`')
            .split(|c: char| c == '`' || c.is_whitespace())
            .next()
            .expect("a flag")
            .to_owned();
        let default = options.get(&flag).unwrap_or_else(|| {
            panic!("docs/csi-provider.md lists {flag}, which the binary does not have")
        });
        if let Some(default) = default {
            assert_eq!(
                row[1].trim_matches('`'),
                default,
                "docs/csi-provider.md: the default of {flag}"
            );
        }
        documented.insert(flag);
    }
    let undocumented: Vec<&String> = options
        .keys()
        .filter(|flag| !documented.contains(*flag) && *flag != "--help" && *flag != "--version")
        .collect();
    assert!(
        undocumented.is_empty(),
        "docs/csi-provider.md's flags table lacks {undocumented:?}"
    );
}
