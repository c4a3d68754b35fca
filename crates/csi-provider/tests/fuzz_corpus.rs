//! Runs the fuzz targets' entry points over their committed corpora
//! (fuzz/corpus/csi_mount_request/, fuzz/corpus/csi_alibaba_spec/), so each input the fuzzer
//! ever found interesting stays a regression test in the normal test run; and checks that the
//! realistic seeds are valid classes, so the fuzzer starts from inputs that reach every check
//! rather than the first one.

use std::path::{Path, PathBuf};

use std::collections::BTreeMap;

use csi_provider::alibaba::spec::{AlibabaMountSpec, SpecSettings};
use csi_provider::azure::spec::AzureMountSpec;
use csi_provider::proto::v1alpha1::MountRequest;
use csi_provider::request::MountInput;

fn corpus(target: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../fuzz/corpus")
        .join(target)
}

fn run_corpus(target: &str, entry: fn(&[u8])) {
    let dir = corpus(target);
    let mut inputs = 0;
    for file in std::fs::read_dir(&dir).expect("corpus directory exists") {
        let path = file.expect("corpus entry").path();
        entry(&std::fs::read(&path).expect("corpus file reads"));
        inputs += 1;
    }
    assert!(inputs > 0, "{} holds no inputs", dir.display());
}

#[test]
fn csi_mount_request_corpus() {
    run_corpus("csi_mount_request", csi_provider::fuzzing::mount_request);
}

fn spec_of_seed(name: &str) -> Result<AzureMountSpec, String> {
    let attributes =
        std::fs::read_to_string(corpus("csi_mount_request").join(name)).expect("seed exists");
    let request = MountRequest {
        attributes,
        secrets: "null".to_owned(),
        target_path: String::new(),
        permission: "420".to_owned(),
        current_object_version: Vec::new(),
    };
    let input = MountInput::from_request(&request).map_err(|error| error.to_string())?;
    AzureMountSpec::from_parameters(&input.parameters).map_err(|error| error.to_string())
}

#[test]
fn the_realistic_seeds_are_valid_classes() {
    for seed in [
        "azure-stack.json",
        "jmespath-several-vaults.json",
        "pod-identity-history.json",
        "service-principal-pfx.json",
        "tls-china-cloud.json",
        "token-proxy.json",
        "vm-managed-identity.json",
        "workload-identity.json",
    ] {
        if let Err(error) = spec_of_seed(seed) {
            panic!("{seed}: {error}");
        }
    }
    let read = |name: &str| {
        std::fs::read_to_string(corpus("csi_mount_request").join(name)).expect("seed exists")
    };
    let object = read("object.yaml").replace('\n', "\n    ");
    for objects in [read("objects.yaml"), format!("array:\n  - |\n    {object}")] {
        let parameters = [
            ("keyvaultName", "kv-fuzz"),
            ("tenantID", "72f988bf-86f1-41af-91ab-2d7cd011db47"),
            ("objects", &objects),
        ]
        .into_iter()
        .map(|(key, value)| (key.to_owned(), value.to_owned()))
        .collect();
        if let Err(error) = AzureMountSpec::from_parameters(&parameters) {
            panic!("{objects}: {error}");
        }
    }
}

#[test]
fn the_mistaken_seeds_fail_as_intended() {
    assert_eq!(
        spec_of_seed("bare-list.json").unwrap_err(),
        "failed to yaml unmarshal objects, error: objects is a bare YAML list; write it as a \
         mapping whose `array:` lists one YAML string per object"
    );
    assert_eq!(
        spec_of_seed("colliding-aliases.json").unwrap_err(),
        "object 1 (\"b\"): objectAlias: \"conf/b\" would be inside \"conf\", a file object 0 \
         (\"a\") writes"
    );
}

#[test]
fn csi_alibaba_spec_corpus() {
    run_corpus("csi_alibaba_spec", csi_provider::fuzzing::alibaba_spec);
}

/// An Alibaba seed read as the fuzz entry reads it: `objects` alone, or (with NUL bytes) split
/// into `objects`, `pathTranslation`, `region`, `usePodServiceAccountToken` and
/// `podServiceAccountRoleArn`.
fn alibaba_spec_of_seed(name: &str) -> Result<AlibabaMountSpec, String> {
    let text = std::fs::read_to_string(corpus("csi_alibaba_spec").join(name)).expect("seed exists");
    let keys = [
        "objects",
        "pathTranslation",
        "region",
        "usePodServiceAccountToken",
        "podServiceAccountRoleArn",
    ];
    let parameters: BTreeMap<String, String> = keys
        .iter()
        .zip(text.splitn(keys.len(), '\0'))
        .map(|(key, value)| ((*key).to_owned(), value.to_owned()))
        .collect();
    AlibabaMountSpec::from_parameters(&parameters, &SpecSettings::default())
        .map_err(|error| error.to_string())
}

#[test]
fn the_realistic_alibaba_seeds_are_valid_classes() {
    for seed in [
        "readme-example.yaml",
        "versions-and-endpoints.yaml",
        "parameters-split",
    ] {
        if let Err(error) = alibaba_spec_of_seed(seed) {
            panic!("{seed}: {error}");
        }
    }
    let split = alibaba_spec_of_seed("parameters-split").expect("valid");
    assert_eq!(
        (split.region.as_str(), split.path_translation),
        ("cn-hongkong", None)
    );
    assert!(split.use_pod_service_account_token);
    let object = std::fs::read_to_string(corpus("csi_alibaba_spec").join("one-object"))
        .expect("seed exists");
    let item = format!("- {}", object.replace('\n', "\n  "));
    let parameters = BTreeMap::from([("objects".to_owned(), item)]);
    if let Err(error) = AlibabaMountSpec::from_parameters(&parameters, &SpecSettings::default()) {
        panic!("one-object: {error}");
    }
}

#[test]
fn the_mistaken_alibaba_seeds_fail_as_intended() {
    let error = alibaba_spec_of_seed("azure-array.yaml").unwrap_err();
    assert!(error.contains("plain YAML list"), "{error}");
    let error = alibaba_spec_of_seed("colliding-files.yaml").unwrap_err();
    assert!(error.contains("duplicate object name"), "{error}");
}
