//! Entry points for the fuzz targets in fuzz/: each feeds arbitrary bytes to code that reads
//! attacker-controlled input (anyone who can create a pod or a SecretProviderClass writes a Mount
//! request's attributes) and checks that it returns cleanly: never a panic, never a spec that
//! names a file the driver would refuse, and (Alibaba) never an endpoint outside Alibaba Cloud.
//! crates/csi-provider/tests/fuzz_corpus.rs replays the committed corpora through the same
//! functions.

use std::collections::{BTreeMap, BTreeSet};

use secrecy::SecretString;
use serde::Serialize;

use crate::alibaba::spec::{
    ALIBABA_CLOUD_SUFFIX, AlibabaMountSpec, SpecSettings, params as alibaba_params,
};
use crate::azure::spec::{AzureMountSpec, params};
use crate::files::{MAX_MODE, check_path};
use crate::proto::v1alpha1::MountRequest;
use crate::request::{MountInput, NodePublishSecrets, ServiceAccountTokens};

/// Runs arbitrary bytes through Mount request decoding and Azure spec validation four ways:
/// as the request's `attributes` JSON; split at NUL bytes into `attributes`, `secrets` and
/// `permission`; as the `objects` parameter of an otherwise valid class; and as one object's
/// YAML in such a class.
///
/// # Panics
/// When an invariant breaks: a decoded request whose default mode is above 0777 or whose
/// `Debug` depends on a token or Secret value, or a valid spec with no objects, an object whose
/// mode is above 0777, or output paths that the driver would refuse, that repeat, or that lie
/// inside one another.
pub fn mount_request(data: &[u8]) {
    let text = String::from_utf8_lossy(data);

    check_request(&request(&text, "null", "420"));

    if data.contains(&0) {
        let mut parts = data.splitn(3, |b| *b == 0).map(String::from_utf8_lossy);
        let attributes = parts.next().unwrap_or_default();
        let secrets = parts.next().unwrap_or_default();
        let permission = parts.next().unwrap_or_default();
        check_request(&request(&attributes, &secrets, &permission));
    }

    let mut parameters = valid_class();
    parameters.insert(params::OBJECTS.to_owned(), text.clone().into_owned());
    check_spec(&parameters);

    #[derive(Serialize)]
    struct Objects<'a> {
        array: [&'a str; 1],
    }
    if let Ok(objects) = serde_saphyr::to_string(&Objects { array: [&text] }) {
        parameters.insert(params::OBJECTS.to_owned(), objects);
        check_spec(&parameters);
    }
}

fn request(attributes: &str, secrets: &str, permission: &str) -> MountRequest {
    MountRequest {
        attributes: attributes.to_owned(),
        secrets: secrets.to_owned(),
        target_path: "/var/lib/kubelet/pods/0/volumes/kubernetes.io~csi/secrets/mount".to_owned(),
        permission: permission.to_owned(),
        current_object_version: Vec::new(),
    }
}

/// A class whose parameters other than `objects` are valid.
fn valid_class() -> BTreeMap<String, String> {
    [
        (params::KEYVAULT_NAME, "kv-fuzz"),
        (params::TENANT_ID, "72f988bf-86f1-41af-91ab-2d7cd011db47"),
        (params::CLIENT_ID, "0e3a1c4d-5b6f-4a7b-8c9d-0e1f2a3b4c5d"),
    ]
    .into_iter()
    .map(|(key, value)| (key.to_owned(), value.to_owned()))
    .collect()
}

fn check_request(request: &MountRequest) {
    let input = match MountInput::from_request(request) {
        Ok(input) => input,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    assert!(
        input.default_mode <= MAX_MODE,
        "default mode {:o}",
        input.default_mode
    );

    // `Debug` does not depend on token or Secret values: it is the same with every value
    // emptied.
    let emptied = |values: &BTreeMap<String, SecretString>| {
        values
            .keys()
            .map(|key| (key.clone(), SecretString::from("")))
            .collect()
    };
    let skeleton = MountInput {
        parameters: input.parameters.clone(),
        pod: input.pod.clone(),
        tokens: ServiceAccountTokens {
            by_audience: emptied(&input.tokens.by_audience),
        },
        secrets: NodePublishSecrets {
            by_key: emptied(&input.secrets.by_key),
        },
        default_mode: input.default_mode,
    };
    assert_eq!(
        format!("{input:?}"),
        format!("{skeleton:?}"),
        "Debug shows a token or Secret value"
    );

    check_spec(&input.parameters);
}

fn check_spec(parameters: &BTreeMap<String, String>) {
    let spec = match AzureMountSpec::from_parameters(parameters) {
        Ok(spec) => spec,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    assert!(!spec.objects.is_empty(), "a valid spec has objects");
    for object in &spec.objects {
        if let Some(mode) = object.mode {
            assert!(mode <= MAX_MODE, "mode {mode:o}");
        }
    }
    check_paths(spec.objects.iter().flat_map(|object| object.output_paths()));
}

/// The files of a valid spec: each a path the driver accepts, none twice, none inside another.
///
/// # Panics
/// When one of those breaks.
fn check_paths(written: impl Iterator<Item = String>) {
    let mut paths = BTreeSet::new();
    for path in written {
        if let Err(error) = check_path(&path) {
            panic!("a valid spec writes a path the driver refuses: {error}");
        }
        assert!(paths.insert(path), "a valid spec writes one path twice");
    }
    for path in &paths {
        for (slash, _) in path.match_indices('/') {
            assert!(
                !paths.contains(&path[..slash]),
                "a valid spec writes a file inside another: {path:?}"
            );
        }
    }
}

/// Runs arbitrary bytes through the Alibaba spec parser three ways: as the `objects` parameter
/// of an otherwise valid class; split at NUL bytes into `objects`, `pathTranslation`,
/// `region`, `usePodServiceAccountToken` and `podServiceAccountRoleArn`; and as one object's
/// YAML in a list.
///
/// # Panics
/// When a valid spec breaks an invariant: no objects, a file path the driver would refuse, one
/// path twice or inside another, a region that is not a DNS label, or an endpoint that is not a
/// host under aliyuncs.com.
pub fn alibaba_spec(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    check_alibaba(&BTreeMap::from([(
        alibaba_params::OBJECTS.to_owned(),
        text.clone().into_owned(),
    )]));

    if data.contains(&0) {
        let keys = [
            alibaba_params::OBJECTS,
            alibaba_params::PATH_TRANSLATION,
            alibaba_params::REGION,
            alibaba_params::USE_POD_SERVICE_ACCOUNT_TOKEN,
            alibaba_params::POD_SERVICE_ACCOUNT_ROLE_ARN,
        ];
        let parameters = keys
            .iter()
            .zip(data.splitn(keys.len(), |b| *b == 0))
            .map(|(key, value)| {
                (
                    (*key).to_owned(),
                    String::from_utf8_lossy(value).into_owned(),
                )
            })
            .collect();
        check_alibaba(&parameters);
    }

    let item = format!("- {}", text.replace('\n', "\n  "));
    check_alibaba(&BTreeMap::from([(
        alibaba_params::OBJECTS.to_owned(),
        item,
    )]));
}

fn check_alibaba(parameters: &BTreeMap<String, String>) {
    let spec = match AlibabaMountSpec::from_parameters(parameters, &SpecSettings::default()) {
        Ok(spec) => spec,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    assert!(!spec.objects.is_empty(), "a valid spec has objects");
    let dns_label = |label: &str| {
        !label.is_empty()
            && label.len() <= 63
            && label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
    };
    assert!(dns_label(&spec.region), "region {:?}", spec.region);
    for object in &spec.objects {
        let host = &object.endpoint;
        assert!(
            host.strip_suffix(ALIBABA_CLOUD_SUFFIX)
                .is_some_and(|rest| rest.len() > 1 && rest.ends_with('.'))
                && host.split('.').all(dns_label),
            "a valid spec reads from {host:?}"
        );
        for field in &object.json_fields {
            assert!(
                crate::jmes::check_expression(&field.path).is_ok(),
                "{:?}",
                field.path
            );
        }
    }
    check_paths(spec.objects.iter().flat_map(|object| {
        std::iter::once(object.file.clone())
            .chain(object.json_fields.iter().map(|field| field.file.clone()))
    }));
}
