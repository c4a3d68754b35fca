//! One value from etcd, classified by how kube-apiserver stored it: which transformer prefix
//! it carries (`k8s:enc:kms:v2:<name>:`, `k8s:enc:kms:v1:<name>:`, `k8s:enc:aescbc:v1:<key>:`,
//! `…aesgcm…`, `…secretbox…`) or none (the identity provider: plaintext protobuf or JSON), and
//! for KMS v2 the key_id, annotations and DEK source type of its `EncryptedObject`.
//!
//! Every value is attacker input (etcd content is untrusted in the threat model): nothing here
//! panics, every length is bounded, and a value that does not parse is [`StoredValue::Corrupt`]
//! with a reason, never an error that stops a census. Nothing here decrypts, and nothing here
//! keeps or shows the ciphertext, the wrapped KEK or the plaintext of an object: only prefixes,
//! key_ids and annotation names and short, checked values.
//!
//! The formats (from kube-apiserver's storage transformers):
//! ```text
//! KMS v2    "k8s:enc:kms:v2:" name ":" EncryptedObject (protobuf)
//! KMS v1    "k8s:enc:kms:v1:" name ":" u16be(len(DEK)) DEK data     (DEK = the plugin's v1 cipher)
//! AES-CBC   "k8s:enc:aescbc:v1:" key-name ":" data
//! AES-GCM   "k8s:enc:aesgcm:v1:" key-name ":" data
//! secretbox "k8s:enc:secretbox:v1:" key-name ":" data
//! identity  the object itself: "k8s\0" + protobuf, or JSON (custom resources)
//! ```

use std::collections::HashMap;

use prost::Message;

use crate::envelope::format::{self, KEY_VERSION_ANNOTATION, WRAPPED_KEK_ANNOTATION};

/// Every encrypted value starts with this.
pub const ENCRYPTED_PREFIX: &[u8] = b"k8s:enc:";
/// A KMS v2 value.
pub const KMS_V2_PREFIX: &[u8] = b"k8s:enc:kms:v2:";
/// A KMS v1 value.
pub const KMS_V1_PREFIX: &[u8] = b"k8s:enc:kms:v1:";
/// An AES-CBC value.
pub const AESCBC_PREFIX: &[u8] = b"k8s:enc:aescbc:v1:";
/// An AES-GCM value.
pub const AESGCM_PREFIX: &[u8] = b"k8s:enc:aesgcm:v1:";
/// A secretbox value.
pub const SECRETBOX_PREFIX: &[u8] = b"k8s:enc:secretbox:v1:";
/// kube-apiserver's protobuf encoding of an object starts with this magic.
pub const PROTOBUF_MAGIC: &[u8] = b"k8s\0";
/// The annotation Azure's Go KMS plugin puts on every v2 response (its format version, "1").
pub const AZURE_PLUGIN_VERSION_ANNOTATION: &str = "version.azure.akv.io";

/// The longest provider or key name read from a prefix; kube-apiserver's names are far shorter.
pub const MAX_NAME_LEN: usize = 256;
/// kube-apiserver's limit on a key_id.
pub const MAX_KEY_ID_LEN: usize = 1024;
/// kube-apiserver's limit on a KMS v2 `encryptedDEKSource`.
pub const MAX_DEK_SOURCE_LEN: usize = 1024;
/// kube-apiserver's limit on the sum of annotation key and value lengths.
pub const MAX_ANNOTATIONS_LEN: usize = 32 * 1024;

/// kube-apiserver's `EncryptedObject` (k8s.io/apiserver/pkg/storage/value/encrypt/envelope/
/// kmsv2/v2/api.proto), the protobuf after a KMS v2 prefix. Field numbers are kube-apiserver's.
#[derive(Clone, PartialEq, prost::Message)]
pub struct EncryptedObject {
    /// The object, sealed with the DEK.
    #[prost(bytes = "vec", tag = "1")]
    pub encrypted_data: Vec<u8>,
    /// The plugin's key_id from the Encrypt response.
    #[prost(string, tag = "2")]
    pub key_id: String,
    /// The plugin's ciphertext: the DEK, or the DEK seed, encrypted by the plugin.
    #[prost(bytes = "vec", tag = "3")]
    pub encrypted_dek_source: Vec<u8>,
    /// The plugin's annotations from the Encrypt response.
    #[prost(map = "string, bytes", tag = "4")]
    pub annotations: HashMap<String, Vec<u8>>,
    /// What `encrypted_dek_source` holds (see [`DekSourceType`]).
    #[prost(int32, tag = "5")]
    pub encrypted_dek_source_type: i32,
}

/// `EncryptedObject.encryptedDEKSourceType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DekSourceType {
    /// `AES_GCM_KEY` (0): the plugin encrypted the DEK itself (kube-apiserver before 1.29).
    AesGcmKey,
    /// `HKDF_SHA256_XNONCE_AES_GCM_SEED` (1): the plugin encrypted a seed the DEKs derive from.
    HkdfSha256XnonceAesGcmSeed,
}

impl DekSourceType {
    /// `None` for a value kube-apiserver does not define (it refuses to decrypt such a record).
    fn from_wire(value: i32) -> Option<Self> {
        match value {
            0 => Some(Self::AesGcmKey),
            1 => Some(Self::HkdfSha256XnonceAesGcmSeed),
            _ => None,
        }
    }

    /// The name kube-apiserver's proto gives it.
    pub fn name(self) -> String {
        match self {
            Self::AesGcmKey => "AES_GCM_KEY".to_owned(),
            Self::HkdfSha256XnonceAesGcmSeed => "HKDF_SHA256_XNONCE_AES_GCM_SEED".to_owned(),
        }
    }
}

/// Whose annotations a KMS v2 record carries: which plugin wrote it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RecordStyle {
    /// kube-kms's: `kek.kube-kms.io` and `version.kube-kms.io` (the key version that wrapped
    /// the KEK, checked to be 1–256 bytes of printable ASCII).
    KubeKms {
        /// `version.kube-kms.io`.
        key_version: String,
    },
    /// Azure's Go KMS plugin's: `version.azure.akv.io`.
    AzurePlugin,
    /// Any other plugin's (or none).
    Other,
}

impl RecordStyle {
    /// The style's name in reports: `kube-kms`, `azure-plugin` or `other`.
    pub fn name(&self) -> &'static str {
        match self {
            Self::KubeKms { .. } => "kube-kms",
            Self::AzurePlugin => "azure-plugin",
            Self::Other => "other",
        }
    }
}

/// A KMS v2 value's facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsV2Record {
    /// The provider name from the prefix (the EncryptionConfiguration's `kms.name`).
    pub provider: String,
    /// The key_id the plugin returned (1–1024 bytes).
    pub key_id: String,
    /// Which plugin's annotations it carries.
    pub style: RecordStyle,
    /// What the plugin's ciphertext holds.
    pub dek_source_type: DekSourceType,
}

/// How a plaintext (identity) value is encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum PlainEncoding {
    /// kube-apiserver's protobuf (`k8s\0` magic).
    Protobuf,
    /// JSON (custom resources, and any resource stored as JSON).
    Json,
    /// Neither: some other unencrypted bytes.
    Other,
}

impl PlainEncoding {
    /// The encoding's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Self::Protobuf => "protobuf",
            Self::Json => "json",
            Self::Other => "other",
        }
    }
}

/// One stored value, classified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoredValue {
    /// `k8s:enc:kms:v2:`.
    KmsV2(KmsV2Record),
    /// `k8s:enc:kms:v1:`.
    KmsV1 {
        /// The provider name from the prefix.
        provider: String,
        /// The key version named inside the DEK when kube-kms wrote it (its v1 blob carries
        /// one); `None` for another plugin's DEK.
        kube_kms_version: Option<String>,
    },
    /// `k8s:enc:aescbc:v1:`.
    AesCbc {
        /// The key's name in the EncryptionConfiguration.
        key: String,
    },
    /// `k8s:enc:aesgcm:v1:`.
    AesGcm {
        /// The key's name in the EncryptionConfiguration.
        key: String,
    },
    /// `k8s:enc:secretbox:v1:`.
    Secretbox {
        /// The key's name in the EncryptionConfiguration.
        key: String,
    },
    /// No prefix: stored in plaintext by the identity provider.
    Identity(PlainEncoding),
    /// A value that claims a format it does not hold, or one no transformer writes.
    Corrupt {
        /// What is wrong, without any of the value's bytes.
        reason: String,
    },
}

impl StoredValue {
    /// The format's name in reports: `kms-v2`, `kms-v1`, `aescbc`, `aesgcm`, `secretbox`,
    /// `identity` or `corrupt`.
    pub fn format_name(&self) -> &'static str {
        match self {
            Self::KmsV2(_) => "kms-v2",
            Self::KmsV1 { .. } => "kms-v1",
            Self::AesCbc { .. } => "aescbc",
            Self::AesGcm { .. } => "aesgcm",
            Self::Secretbox { .. } => "secretbox",
            Self::Identity(_) => "identity",
            Self::Corrupt { .. } => "corrupt",
        }
    }
}

fn corrupt(reason: impl Into<String>) -> StoredValue {
    StoredValue::Corrupt {
        reason: reason.into(),
    }
}

/// Splits `name ":" rest` after a prefix: the name must be 1–256 bytes of UTF-8 without ':'.
fn split_name<'a>(after_prefix: &'a [u8], what: &str) -> Result<(String, &'a [u8]), String> {
    let window = &after_prefix[..after_prefix.len().min(MAX_NAME_LEN + 1)];
    let Some(colon) = window.iter().position(|b| *b == b':') else {
        return Err(format!(
            "the {what} name is not followed by ':' within {MAX_NAME_LEN} bytes"
        ));
    };
    if colon == 0 {
        return Err(format!("the {what} name is empty"));
    }
    let name = std::str::from_utf8(&after_prefix[..colon])
        .map_err(|_| format!("the {what} name is not UTF-8"))?;
    if name.chars().any(char::is_control) {
        return Err(format!("the {what} name holds control characters"));
    }
    Ok((name.to_owned(), &after_prefix[colon + 1..]))
}

/// Classifies one stored value.
pub fn classify(value: &[u8]) -> StoredValue {
    if let Some(rest) = value.strip_prefix(KMS_V2_PREFIX) {
        return match split_name(rest, "KMS provider") {
            Ok((provider, object)) => kms_v2(provider, object),
            Err(reason) => corrupt(reason),
        };
    }
    if let Some(rest) = value.strip_prefix(KMS_V1_PREFIX) {
        return match split_name(rest, "KMS provider") {
            Ok((provider, data)) => kms_v1(provider, data),
            Err(reason) => corrupt(reason),
        };
    }
    for (prefix, make) in [
        (
            AESCBC_PREFIX,
            (|key| StoredValue::AesCbc { key }) as fn(String) -> StoredValue,
        ),
        (AESGCM_PREFIX, |key| StoredValue::AesGcm { key }),
        (SECRETBOX_PREFIX, |key| StoredValue::Secretbox { key }),
    ] {
        if let Some(rest) = value.strip_prefix(prefix) {
            return match split_name(rest, "key") {
                Ok((_, [])) => corrupt("nothing follows the key name"),
                Ok((key, _)) => make(key),
                Err(reason) => corrupt(reason),
            };
        }
    }
    if value.starts_with(ENCRYPTED_PREFIX) {
        return corrupt("a k8s:enc: prefix no kube-apiserver transformer writes");
    }
    if value.starts_with(PROTOBUF_MAGIC) {
        StoredValue::Identity(PlainEncoding::Protobuf)
    } else if value
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{')
    {
        StoredValue::Identity(PlainEncoding::Json)
    } else {
        StoredValue::Identity(PlainEncoding::Other)
    }
}

/// The `EncryptedObject` after a KMS v2 prefix, checked as kube-apiserver checks it before a
/// Decrypt (non-empty data, a key_id of 1–1024 bytes, a DEK source of 1–1024 bytes, annotation
/// keys that are DNS subdomains within 32 KiB in all).
fn kms_v2(provider: String, object: &[u8]) -> StoredValue {
    let Ok(object) = EncryptedObject::decode(object) else {
        return corrupt("the KMS v2 EncryptedObject is not valid protobuf");
    };
    let Some(dek_source_type) = DekSourceType::from_wire(object.encrypted_dek_source_type) else {
        return corrupt(format!(
            "the KMS v2 encryptedDEKSourceType {} is not one kube-apiserver defines",
            object.encrypted_dek_source_type
        ));
    };
    if object.encrypted_data.is_empty() {
        return corrupt("the KMS v2 EncryptedObject holds no encrypted data");
    }
    if object.key_id.is_empty() || object.key_id.len() > MAX_KEY_ID_LEN {
        return corrupt(format!(
            "the KMS v2 key_id is {} bytes; 1 to {MAX_KEY_ID_LEN} are valid",
            object.key_id.len()
        ));
    }
    if object.encrypted_dek_source.is_empty()
        || object.encrypted_dek_source.len() > MAX_DEK_SOURCE_LEN
    {
        return corrupt(format!(
            "the KMS v2 encryptedDEKSource is {} bytes; 1 to {MAX_DEK_SOURCE_LEN} are valid",
            object.encrypted_dek_source.len()
        ));
    }
    let total: usize = object
        .annotations
        .iter()
        .map(|(key, value)| key.len() + value.len())
        .sum();
    if total > MAX_ANNOTATIONS_LEN {
        return corrupt(format!(
            "the KMS v2 annotations are {total} bytes; at most {MAX_ANNOTATIONS_LEN} are valid"
        ));
    }
    if let Some(bad) = object
        .annotations
        .keys()
        .find(|key| !format::is_annotation_key(key))
    {
        return corrupt(format!(
            "the KMS v2 annotation key {:?} is not a lowercase DNS subdomain of two or more labels",
            bad.chars().take(64).collect::<String>()
        ));
    }
    StoredValue::KmsV2(KmsV2Record {
        provider,
        style: style(&object.annotations),
        dek_source_type,
        key_id: object.key_id,
    })
}

/// Which plugin wrote the annotations. kube-kms's version annotation is used only when it has
/// the shape kube-kms writes (both annotations, the version printable ASCII of 1–256 bytes).
fn style(annotations: &HashMap<String, Vec<u8>>) -> RecordStyle {
    if let Ok(kek) = format::parse_annotations(annotations) {
        return RecordStyle::KubeKms {
            key_version: kek.version.to_owned(),
        };
    }
    if annotations.contains_key(WRAPPED_KEK_ANNOTATION)
        || annotations.contains_key(KEY_VERSION_ANNOTATION)
    {
        // kube-kms's names without kube-kms's shape: not a record kube-kms could open.
        return RecordStyle::Other;
    }
    if annotations.contains_key(AZURE_PLUGIN_VERSION_ANNOTATION) {
        return RecordStyle::AzurePlugin;
    }
    RecordStyle::Other
}

/// The data after a KMS v1 prefix: `u16be(len(DEK)) ‖ DEK ‖ data`.
fn kms_v1(provider: String, data: &[u8]) -> StoredValue {
    let Some((length, rest)) = data.split_first_chunk::<2>() else {
        return corrupt("the KMS v1 value is shorter than its 2-byte DEK length");
    };
    let length = usize::from(u16::from_be_bytes(*length));
    if length == 0 || rest.len() <= length {
        return corrupt(format!(
            "the KMS v1 DEK length {length} does not fit the {} bytes that follow it, with data after it",
            rest.len()
        ));
    }
    let kube_kms_version = format::parse_v1_blob(&rest[..length])
        .ok()
        .map(|blob| blob.kek.version.to_owned());
    StoredValue::KmsV1 {
        provider,
        kube_kms_version,
    }
}

/// The group and resource of an object from its etcd key, with kube-apiserver's storage
/// prefix (e.g. `/registry`) already removed: `secrets/ns/name` → ("", "secrets"),
/// `apps.example.com/widgets/name` → ("apps.example.com", "widgets"). Built-in resources are
/// stored without their group; the ones an EncryptionConfiguration names by group are mapped
/// back (`deployments` → `deployments.apps`), as are kube-apiserver's historical paths
/// (`minions` → nodes, `services/specs` → services, `services/endpoints` → endpoints,
/// `controllers` → replicationcontrollers, `ingress` → ingresses.networking.k8s.io). Any other
/// first segment without a dot is taken as a core resource of that name.
pub fn group_resource(path: &[u8]) -> Option<(String, String)> {
    let path = std::str::from_utf8(path).ok()?;
    let mut segments = path.trim_start_matches('/').split('/');
    let first = segments.next().filter(|s| !s.is_empty())?;
    let second = segments.next();
    if first.contains('.') {
        let resource = second.filter(|s| !s.is_empty())?;
        return Some((first.to_owned(), resource.to_owned()));
    }
    let (group, resource) = match (first, second) {
        ("minions", _) => ("", "nodes"),
        ("services", Some("specs")) => ("", "services"),
        ("services", Some("endpoints")) => ("", "endpoints"),
        ("controllers", _) => ("", "replicationcontrollers"),
        ("ingress", _) => ("networking.k8s.io", "ingresses"),
        (resource, _) => (builtin_group(resource), resource),
    };
    Some((group.to_owned(), resource.to_owned()))
}

/// The API group of a built-in resource stored under `/registry/<resource>/`.
fn builtin_group(resource: &str) -> &'static str {
    match resource {
        "deployments" | "replicasets" | "daemonsets" | "statefulsets" | "controllerrevisions" => {
            "apps"
        }
        "jobs" | "cronjobs" => "batch",
        "horizontalpodautoscalers" => "autoscaling",
        "networkpolicies" | "ingressclasses" | "ipaddresses" | "servicecidrs" => {
            "networking.k8s.io"
        }
        "clusterroles" | "clusterrolebindings" | "roles" | "rolebindings" => {
            "rbac.authorization.k8s.io"
        }
        "storageclasses"
        | "volumeattachments"
        | "csidrivers"
        | "csinodes"
        | "csistoragecapacities"
        | "volumeattributesclasses" => "storage.k8s.io",
        "poddisruptionbudgets" => "policy",
        "priorityclasses" => "scheduling.k8s.io",
        "leases" => "coordination.k8s.io",
        "endpointslices" => "discovery.k8s.io",
        "mutatingwebhookconfigurations"
        | "validatingwebhookconfigurations"
        | "validatingadmissionpolicies"
        | "validatingadmissionpolicybindings"
        | "mutatingadmissionpolicies"
        | "mutatingadmissionpolicybindings" => "admissionregistration.k8s.io",
        "certificatesigningrequests" | "clustertrustbundles" | "podcertificaterequests" => {
            "certificates.k8s.io"
        }
        "runtimeclasses" => "node.k8s.io",
        "leasecandidates" => "coordination.k8s.io",
        "storageversionmigrations" => "storagemigration.k8s.io",
        "storageversions" => "internal.apiserver.k8s.io",
        "flowschemas" | "prioritylevelconfigurations" => "flowcontrol.apiserver.k8s.io",
        "resourceclaims"
        | "resourceclaimtemplates"
        | "deviceclasses"
        | "resourceslices"
        | "devicetaintrules" => "resource.k8s.io",
        _ => "",
    }
}

/// `resource` or `resource.group`, as an EncryptionConfiguration names it.
pub fn resource_name(group: &str, resource: &str) -> String {
    if group.is_empty() {
        resource.to_owned()
    } else {
        format!("{resource}.{group}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2_value(provider: &str, object: &EncryptedObject) -> Vec<u8> {
        [
            KMS_V2_PREFIX,
            provider.as_bytes(),
            b":",
            &object.encode_to_vec(),
        ]
        .concat()
    }

    fn kube_kms_object(key_id: &str) -> EncryptedObject {
        EncryptedObject {
            encrypted_data: vec![7; 40],
            key_id: key_id.to_owned(),
            encrypted_dek_source: vec![1; 61],
            annotations: format::annotations("3", &[9; 60]),
            encrypted_dek_source_type: 1,
        }
    }

    #[test]
    fn a_kube_kms_v2_record_names_its_key_id_version_and_seed_type() {
        let value = v2_value("kube-kms", &kube_kms_object("abc"));
        assert_eq!(
            classify(&value),
            StoredValue::KmsV2(KmsV2Record {
                provider: "kube-kms".into(),
                key_id: "abc".into(),
                style: RecordStyle::KubeKms {
                    key_version: "3".into()
                },
                dek_source_type: DekSourceType::HkdfSha256XnonceAesGcmSeed,
            })
        );
    }

    #[test]
    fn an_azure_plugin_record_is_told_apart() {
        let mut object = kube_kms_object("k");
        object.annotations = HashMap::from([
            (AZURE_PLUGIN_VERSION_ANNOTATION.to_owned(), b"1".to_vec()),
            (
                "algorithm.azure.akv.io".to_owned(),
                b"RSA-OAEP-256".to_vec(),
            ),
        ]);
        object.encrypted_dek_source_type = 0;
        let StoredValue::KmsV2(record) = classify(&v2_value("azurekmsprovider", &object)) else {
            panic!("a v2 record");
        };
        assert_eq!(record.style, RecordStyle::AzurePlugin);
        assert_eq!(record.dek_source_type, DekSourceType::AesGcmKey);
    }

    #[test]
    fn broken_v2_records_are_corrupt_with_a_reason() {
        let mut no_key_id = kube_kms_object("");
        no_key_id.key_id.clear();
        let long_key_id = kube_kms_object(&"k".repeat(1025));
        let mut bad_annotation = kube_kms_object("k");
        bad_annotation
            .annotations
            .insert("Not/A/Key".into(), vec![]);
        let mut no_data = kube_kms_object("k");
        no_data.encrypted_data.clear();
        // kube-apiserver refuses to decrypt a source type it does not define.
        let mut unknown_source_type = kube_kms_object("k");
        unknown_source_type.encrypted_dek_source_type = 7;
        let StoredValue::Corrupt { reason } = classify(&v2_value("p", &unknown_source_type)) else {
            panic!("an undefined encryptedDEKSourceType is corrupt");
        };
        assert!(reason.contains("encryptedDEKSourceType 7"), "{reason}");
        for value in [
            v2_value("p", &no_key_id),
            v2_value("p", &long_key_id),
            v2_value("p", &bad_annotation),
            v2_value("p", &no_data),
            b"k8s:enc:kms:v2:p:\xff\xff\xff".to_vec(),
            b"k8s:enc:kms:v2::x".to_vec(),
            b"k8s:enc:kms:v2:no-colon".to_vec(),
            [KMS_V2_PREFIX, &[b'n'; 300][..], b":x"].concat(),
        ] {
            assert!(
                matches!(classify(&value), StoredValue::Corrupt { .. }),
                "{:?}",
                String::from_utf8_lossy(&value)
            );
        }
    }

    #[test]
    fn v1_values_name_kube_kms_versions() {
        let blob = [format::v1_header("2", &[5; 60]).as_slice(), &[0; 40]].concat();
        let length = u16::try_from(blob.len()).unwrap().to_be_bytes();
        let value = [KMS_V1_PREFIX, b"kube-kms:", &length, &blob, b"data"].concat();
        assert_eq!(
            classify(&value),
            StoredValue::KmsV1 {
                provider: "kube-kms".into(),
                kube_kms_version: Some("2".into())
            }
        );
        let other = [KMS_V1_PREFIX, b"other:", &[0, 3], b"dekdata"].concat();
        assert_eq!(
            classify(&other),
            StoredValue::KmsV1 {
                provider: "other".into(),
                kube_kms_version: None
            }
        );
        for bad in [
            [KMS_V1_PREFIX, b"p:", &[0]].concat(),
            [KMS_V1_PREFIX, b"p:", &[0, 9], b"short"].concat(),
            [KMS_V1_PREFIX, b"p:", &[0, 0], b"x"].concat(),
        ] {
            assert!(matches!(classify(&bad), StoredValue::Corrupt { .. }));
        }
    }

    #[test]
    fn aes_and_secretbox_values_name_their_key() {
        assert_eq!(
            classify(b"k8s:enc:aescbc:v1:key1:\x00\x01"),
            StoredValue::AesCbc { key: "key1".into() }
        );
        assert_eq!(
            classify(b"k8s:enc:aesgcm:v1:k2:\x00"),
            StoredValue::AesGcm { key: "k2".into() }
        );
        assert_eq!(
            classify(b"k8s:enc:secretbox:v1:s:\x00"),
            StoredValue::Secretbox { key: "s".into() }
        );
        assert!(matches!(
            classify(b"k8s:enc:aescbc:v1:key1:"),
            StoredValue::Corrupt { .. }
        ));
        assert!(matches!(
            classify(b"k8s:enc:rot13:v1:k:x"),
            StoredValue::Corrupt { .. }
        ));
    }

    #[test]
    fn plaintext_is_identity_by_encoding() {
        assert_eq!(
            classify(b"k8s\0\n\x0c\n\x02v1"),
            StoredValue::Identity(PlainEncoding::Protobuf)
        );
        assert_eq!(
            classify(b" {\"kind\":\"Widget\"}"),
            StoredValue::Identity(PlainEncoding::Json)
        );
        assert_eq!(
            classify(b"10.0.0.1"),
            StoredValue::Identity(PlainEncoding::Other)
        );
        assert_eq!(classify(b""), StoredValue::Identity(PlainEncoding::Other));
    }

    #[test]
    fn paths_name_group_and_resource() {
        let cases: &[(&str, (&str, &str))] = &[
            ("secrets/default/s1", ("", "secrets")),
            ("/configmaps/kube-system/c", ("", "configmaps")),
            ("minions/node-1", ("", "nodes")),
            ("services/specs/default/kubernetes", ("", "services")),
            ("services/endpoints/default/kubernetes", ("", "endpoints")),
            ("controllers/default/rc", ("", "replicationcontrollers")),
            ("deployments/default/d", ("apps", "deployments")),
            ("ingress/default/i", ("networking.k8s.io", "ingresses")),
            (
                "leasecandidates/kube-system/l",
                ("coordination.k8s.io", "leasecandidates"),
            ),
            (
                "podcertificaterequests/default/p",
                ("certificates.k8s.io", "podcertificaterequests"),
            ),
            (
                "apiextensions.k8s.io/customresourcedefinitions/w.example.com",
                ("apiextensions.k8s.io", "customresourcedefinitions"),
            ),
            ("example.com/widgets/ns/w", ("example.com", "widgets")),
        ];
        for (path, (group, resource)) in cases {
            assert_eq!(
                group_resource(path.as_bytes()),
                Some(((*group).to_owned(), (*resource).to_owned())),
                "{path}"
            );
        }
        assert_eq!(group_resource(b""), None);
        assert_eq!(group_resource(b"example.com"), None);
        assert_eq!(group_resource(b"\xff/x"), None);
        assert_eq!(resource_name("apps", "deployments"), "deployments.apps");
        assert_eq!(resource_name("", "secrets"), "secrets");
    }
}
