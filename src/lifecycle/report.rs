//! The census report: the counts turned into a verdict per key and an outcome with an exit code
//! a script can use, rendered as text for a person or as JSON (schema `kube-kms/census/v1`,
//! documented field by field in docs/census.md, which tests/census.rs checks against this).
//!
//! Exit codes: 0 nothing pending; 3 objects remain under keys other than the current one, or
//! not under the EncryptionConfiguration's first provider (plaintext included); 4 objects this
//! configuration cannot read (corrupt values, kube-kms records under key_ids it does not name,
//! providers no longer in the EncryptionConfiguration); 5 no verdict — objects are under a
//! version of the configured key and the current version is not known. The worst applies:
//! 4 over 3 over 5. (1 is a census that could not run, 2 a usage error.)

use std::fmt::Write as _;

use serde::Serialize;

use super::census::Census;
use super::counted;
use super::encryption_config::Placement;
use super::known_keys::{KeyRole, KnownKeys};

/// The schema name in every JSON report.
pub const SCHEMA: &str = "kube-kms/census/v1";

/// What the census concludes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Status {
    /// Every object is under the current key and, given an EncryptionConfiguration, written
    /// by its first provider.
    NothingPending,
    /// Objects remain to re-encrypt.
    Pending,
    /// Objects cannot be read with this configuration.
    Unreadable,
    /// The current key version is not known, so the census cannot tell.
    Undecided,
}

impl Status {
    /// The process exit code for this status.
    pub fn exit_code(self) -> u8 {
        match self {
            Self::NothingPending => 0,
            Self::Pending => 3,
            Self::Unreadable => 4,
            Self::Undecided => 5,
        }
    }

    /// The status's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::NothingPending => "nothing-pending",
            Self::Pending => "pending",
            Self::Unreadable => "unreadable",
            Self::Undecided => "undecided",
        }
    }
}

/// Where the census read.
#[derive(Debug, Clone, Serialize)]
pub struct EtcdSection {
    /// The endpoint.
    pub endpoint: String,
    /// The prefix.
    pub prefix: String,
    /// etcd's revision at the start.
    pub revision: i64,
}

/// What kube-kms's configuration says.
#[derive(Debug, Clone, Serialize)]
pub struct ConfigurationSection {
    /// `local`, `azure` or `pkcs11`.
    pub provider: String,
    /// The current key_id, if known.
    pub current_key_id: Option<String>,
    /// `configuration`, `flag` or `unknown`.
    pub current_key_source: String,
    /// How keys were named, and what could not be.
    pub notes: Vec<String>,
}

/// One row: objects of a resource stored one way.
#[derive(Debug, Clone, Serialize)]
pub struct Row {
    /// `resource[.group]`.
    pub resource: String,
    /// The stored format.
    pub format: String,
    /// KMS provider name, or the aescbc/aesgcm/secretbox key name; empty otherwise.
    pub provider: String,
    /// key_id (KMS v2; KMS v1 when known), `version <v>` (a kube-kms v1 record whose key_id is
    /// not known), the plaintext encoding (identity), or empty.
    pub key: String,
    /// `kube-kms`, `azure-plugin`, `other` for KMS records; empty otherwise.
    pub record: String,
    /// The key's role for KMS records with a key; `None` otherwise.
    pub role: Option<String>,
    /// How many objects.
    pub objects: u64,
}

/// One key seen in etcd.
#[derive(Debug, Clone, Serialize)]
pub struct Key {
    /// The key_id, when known.
    pub key_id: Option<String>,
    /// kube-kms's key version annotation, when the records carry one.
    pub version: Option<String>,
    /// `current`, `earlier-version`, `configured-key`, `decrypt-only`, `unknown`.
    pub role: String,
    /// What the key is.
    pub description: String,
    /// Objects under it.
    pub objects: u64,
    /// Of those, kube-kms's records.
    pub kube_kms_records: u64,
    /// Of those, Azure's Go plugin's records.
    pub azure_plugin_records: u64,
    /// Of those, any other plugin's records.
    pub other_records: u64,
}

/// The verdict on one key kube-kms could stop decrypting with.
#[derive(Debug, Clone, Serialize)]
pub struct Verdict {
    /// What the key is.
    pub key: String,
    /// Its key_id, when known.
    pub key_id: Option<String>,
    /// `decrypt-only`, `earlier-version` or `configured-key`.
    pub role: String,
    /// Objects it still encrypts.
    pub objects: u64,
    /// Whether no object uses it.
    pub safe_to_remove: bool,
    /// What to do, in a sentence.
    pub advice: String,
}

/// Objects of a resource against the EncryptionConfiguration.
#[derive(Debug, Clone, Serialize)]
pub struct Placed {
    /// `resource[.group]`.
    pub resource: String,
    /// The provider the objects are under, e.g. `kms v2 "kube-kms"`, `identity (plaintext)`.
    pub provider: String,
    /// How many objects.
    pub objects: u64,
}

/// The findings against an EncryptionConfiguration.
#[derive(Debug, Clone, Serialize)]
pub struct EncryptionSection {
    /// The file.
    pub path: String,
    /// Plaintext objects of resources the file encrypts.
    pub plaintext_should_be_encrypted: Vec<Placed>,
    /// Objects under a provider the file lists, but not the first (and not plaintext).
    pub not_first_provider: Vec<Placed>,
    /// Objects under a provider the file no longer lists for their resource: unreadable.
    pub provider_not_in_file: Vec<Placed>,
}

/// A corrupt value.
#[derive(Debug, Clone, Serialize)]
pub struct CorruptValue {
    /// Its etcd key.
    pub key: String,
    /// Why it is corrupt.
    pub reason: String,
}

/// The corrupt values.
#[derive(Debug, Clone, Serialize)]
pub struct CorruptSection {
    /// How many.
    pub objects: u64,
    /// The first few.
    pub samples: Vec<CorruptValue>,
}

/// The outcome.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// The status.
    pub status: Status,
    /// The process's exit code.
    pub exit_code: u8,
    /// Objects to re-encrypt.
    pub pending_objects: u64,
    /// Objects this configuration cannot read.
    pub unreadable_objects: u64,
    /// Objects under a version of the configured key when the current one is unknown.
    pub undecided_objects: u64,
    /// One sentence.
    pub summary: String,
}

/// The whole report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// [`SCHEMA`].
    pub schema: String,
    /// Where the census read.
    pub etcd: EtcdSection,
    /// Objects read.
    pub objects: u64,
    /// kube-kms's configuration.
    pub configuration: ConfigurationSection,
    /// Per resource × format × provider × key.
    pub rows: Vec<Row>,
    /// Per key.
    pub keys: Vec<Key>,
    /// Per key kube-kms could stop decrypting with.
    pub verdicts: Vec<Verdict>,
    /// With `--encryption-config`.
    pub encryption_config: Option<EncryptionSection>,
    /// Corrupt values.
    pub corrupt: CorruptSection,
    /// The outcome.
    pub outcome: Outcome,
}

fn placed(census: &Census, wanted: impl Fn(&str, Placement) -> bool) -> Vec<Placed> {
    census
        .tally
        .placements
        .iter()
        .filter(|((_, provider, placement), _)| wanted(provider, *placement))
        .map(|((resource, provider, _), objects)| Placed {
            resource: resource.clone(),
            provider: provider.clone(),
            objects: *objects,
        })
        .collect()
}

const PLAINTEXT: &str = "identity (plaintext)";

impl Report {
    /// Builds the report. `encryption_config` names the file given with `--encryption-config`.
    pub fn new(census: &Census, known: &KnownKeys, encryption_config: Option<&str>) -> Self {
        let tally = &census.tally;
        let rows = tally
            .rows
            .iter()
            .map(|(row, objects)| Row {
                resource: row.resource.clone(),
                format: row.format.to_owned(),
                provider: row.provider.clone(),
                key: row.key.clone(),
                record: row.style.to_owned(),
                role: tally
                    .keys
                    .get(&row.key)
                    .filter(|_| row.format.starts_with("kms"))
                    .map(|key| key.naming.role.name().to_owned()),
                objects: *objects,
            })
            .collect();
        let mut keys: Vec<Key> = tally
            .keys
            .values()
            .map(|key| Key {
                key_id: key.key_id.clone(),
                version: key.version.clone(),
                role: key.naming.role.name().to_owned(),
                description: key.naming.description.clone(),
                objects: key.objects,
                kube_kms_records: key.by_style.get("kube-kms").copied().unwrap_or(0),
                azure_plugin_records: key.by_style.get("azure-plugin").copied().unwrap_or(0),
                other_records: key.by_style.get("other").copied().unwrap_or(0),
            })
            .collect();
        keys.sort_by(|a, b| {
            (role_order(&a.role), &a.description, &a.key_id).cmp(&(
                role_order(&b.role),
                &b.description,
                &b.key_id,
            ))
        });
        let verdicts = verdicts(census, known);
        let encryption_config = encryption_config.map(|path| EncryptionSection {
            path: path.to_owned(),
            plaintext_should_be_encrypted: placed(census, |provider, placement| {
                placement == Placement::Readable && provider == PLAINTEXT
            }),
            not_first_provider: placed(census, |provider, placement| {
                placement == Placement::Readable && provider != PLAINTEXT
            }),
            provider_not_in_file: placed(census, |_, placement| placement == Placement::Unreadable),
        });
        let status = if tally.unreadable > 0 {
            Status::Unreadable
        } else if tally.pending > 0 {
            Status::Pending
        } else if tally.undecided > 0 {
            Status::Undecided
        } else {
            Status::NothingPending
        };
        let summary = match status {
            Status::NothingPending => {
                if encryption_config.is_some() {
                    "every object is under the current key and written by the \
                     EncryptionConfiguration's first provider"
                        .to_owned()
                } else {
                    "every kube-kms object is under the current key".to_owned()
                }
            }
            Status::Pending => format!(
                "{} to re-encrypt: run `kube-kms migrate`, then the census again",
                counted(tally.pending, "object")
            ),
            Status::Unreadable => format!(
                "{} cannot be read with this configuration (corrupt, under key_ids it does \
                 not name, or under providers no longer in the EncryptionConfiguration); {} more \
                 to re-encrypt",
                counted(tally.unreadable, "object"),
                tally.pending
            ),
            Status::Undecided => format!(
                "{} under versions of the configured key and the current version is not \
                 known: pass --current-key-id",
                counted(tally.undecided, "object")
            ),
        };
        Self {
            schema: SCHEMA.to_owned(),
            etcd: EtcdSection {
                endpoint: census.endpoint.clone(),
                prefix: census.prefix.clone(),
                revision: census.revision,
            },
            objects: tally.scanned,
            configuration: ConfigurationSection {
                provider: known.provider_kind().to_owned(),
                current_key_id: known.current_key_id().map(str::to_owned),
                current_key_source: known.current_source().name().to_owned(),
                notes: known.notes().to_vec(),
            },
            rows,
            keys,
            verdicts,
            encryption_config,
            corrupt: CorruptSection {
                objects: tally.corrupt,
                samples: tally
                    .corrupt_samples
                    .iter()
                    .map(|sample| CorruptValue {
                        key: sample.key.clone(),
                        reason: sample.reason.clone(),
                    })
                    .collect(),
            },
            outcome: Outcome {
                status,
                exit_code: status.exit_code(),
                pending_objects: tally.pending,
                unreadable_objects: tally.unreadable,
                undecided_objects: tally.undecided,
                summary,
            },
        }
    }

    /// The report as pretty-printed JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self)
            .unwrap_or_else(|error| format!("{{\"schema\":\"{SCHEMA}\",\"error\":\"{error}\"}}"))
    }

    /// The report as text for a person.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "kube-kms census of etcd {} under {} (revision {}): {}",
            self.etcd.endpoint,
            self.etcd.prefix,
            self.etcd.revision,
            counted(self.objects, "object")
        );
        let _ = writeln!(out);
        let headers = [
            "RESOURCE", "FORMAT", "PROVIDER", "KEY", "ROLE", "RECORD", "OBJECTS",
        ];
        let cells: Vec<[String; 7]> = self
            .rows
            .iter()
            .map(|row| {
                [
                    row.resource.clone(),
                    row.format.clone(),
                    row.provider.clone(),
                    short(&row.key),
                    row.role.clone().unwrap_or_default(),
                    row.record.clone(),
                    row.objects.to_string(),
                ]
            })
            .collect();
        table(&mut out, &headers, &cells);

        let _ = writeln!(
            out,
            "\nKeys (kube-kms provider {}; current key_id {}):",
            self.configuration.provider,
            match (
                &self.configuration.current_key_id,
                self.configuration.current_key_source.as_str()
            ) {
                (Some(key_id), "flag") => format!("{key_id}, from --current-key-id"),
                (Some(key_id), _) => format!("{key_id}, from the configuration"),
                (None, _) => "not known".to_owned(),
            }
        );
        if self.keys.is_empty() {
            let _ = writeln!(out, "  no KMS-encrypted object");
        }
        for key in &self.keys {
            let mut styles = Vec::new();
            for (count, name) in [
                (key.kube_kms_records, "kube-kms"),
                (key.azure_plugin_records, "azure-plugin format"),
                (key.other_records, "other plugin"),
            ] {
                if count > 0 {
                    styles.push(format!("{count} {name}"));
                }
            }
            let _ = writeln!(
                out,
                "  {:<15} {:<64} {} — {} ({})",
                key.role,
                key.key_id
                    .clone()
                    .or_else(|| key.version.as_ref().map(|v| format!("version {v}")))
                    .unwrap_or_default(),
                key.description,
                counted(key.objects, "object"),
                styles.join(", ")
            );
        }
        for note in &self.configuration.notes {
            let _ = writeln!(out, "  note: {note}");
        }

        if let Some(encryption) = &self.encryption_config {
            let _ = writeln!(
                out,
                "\nAgainst the EncryptionConfiguration {}:",
                encryption.path
            );
            for (title, list) in [
                (
                    "plaintext in resources it encrypts",
                    &encryption.plaintext_should_be_encrypted,
                ),
                (
                    "readable, but not written by the first provider",
                    &encryption.not_first_provider,
                ),
                (
                    "under providers no longer in the file (cannot be read)",
                    &encryption.provider_not_in_file,
                ),
            ] {
                if list.is_empty() {
                    let _ = writeln!(out, "  {title}: none");
                } else {
                    let _ = writeln!(out, "  {title}:");
                    for item in list {
                        let _ = writeln!(
                            out,
                            "    {} under {}: {}",
                            item.resource,
                            item.provider,
                            counted(item.objects, "object")
                        );
                    }
                }
            }
        }

        if self.corrupt.objects > 0 {
            let _ = writeln!(
                out,
                "\nCorrupt values: {} (reported, not read):",
                self.corrupt.objects
            );
            for sample in &self.corrupt.samples {
                let _ = writeln!(out, "  {}: {}", sample.key, sample.reason);
            }
        }

        let _ = writeln!(out, "\nVerdict:");
        if self.verdicts.is_empty() {
            let _ = writeln!(
                out,
                "  the configuration keeps no key to decrypt only, and no earlier key version \
                 encrypts anything"
            );
        }
        for verdict in &self.verdicts {
            let _ = writeln!(
                out,
                "  {} ({}{}): {}",
                verdict.key,
                verdict.role,
                verdict
                    .key_id
                    .as_ref()
                    .map(|id| format!(", key_id {}", short(id)))
                    .unwrap_or_default(),
                verdict.advice
            );
        }
        let _ = writeln!(
            out,
            "\nOutcome: {} (exit {}): {}",
            self.outcome.status.name(),
            self.outcome.exit_code,
            self.outcome.summary
        );
        out
    }
}

fn role_order(role: &str) -> u8 {
    match role {
        "current" => 0,
        "configured-key" => 1,
        "earlier-version" => 2,
        "decrypt-only" => 3,
        _ => 4,
    }
}

/// A key_id shortened for a table: 64 hex digits would crowd out every other column.
fn short(key: &str) -> String {
    if key.len() > 16 && key.is_ascii() {
        format!("{}…", &key[..12])
    } else {
        key.to_owned()
    }
}

fn table<const N: usize>(out: &mut String, headers: &[&str; N], rows: &[[String; N]]) {
    let mut widths = headers.map(|h| h.chars().count());
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |out: &mut String, cells: Vec<&str>| {
        let mut text = String::new();
        for (index, (cell, width)) in cells.iter().zip(widths).enumerate() {
            if index + 1 == N {
                let _ = write!(text, "{cell:>width$}");
            } else {
                let _ = write!(text, "{cell:<width$}  ");
            }
        }
        let _ = writeln!(out, "{}", text.trim_end());
    };
    line(out, headers.to_vec());
    for row in rows {
        line(out, row.iter().map(String::as_str).collect());
    }
}

/// A verdict for each decrypt-only key in the configuration, and for each earlier (or
/// undecided) version of the configured key that still encrypts objects.
fn verdicts(census: &Census, known: &KnownKeys) -> Vec<Verdict> {
    let tally = &census.tally;
    let mut verdicts = Vec::new();
    for (index, key) in known.configured().iter().enumerate() {
        if key.role != KeyRole::DecryptOnly {
            continue;
        }
        // Every record credited to the key counts, whatever its role: a --current-key-id can
        // name a decrypt-only key as current, and its records are still under it.
        let objects: u64 = tally
            .keys
            .values()
            .filter(|k| k.naming.configured == Some(index))
            .map(|k| k.objects)
            .sum();
        let possibly = tally.possibly_under.get(&index).copied().unwrap_or(0);
        let advice = if objects > 0 {
            format!(
                "still encrypts {}: run `kube-kms migrate` before removing it",
                counted(objects, "object")
            )
        } else if possibly > 0 {
            format!(
                "{} in kube-kms's KMS v1 format may be under it (a v1 record names only a key \
                 version, which Key Vault alone can place): run `kube-kms migrate` before \
                 removing it",
                counted(possibly, "object")
            )
        } else {
            format!(
                "no object uses it: safe to remove from the configuration, then from the vault \
                 ({})",
                key.retire
            )
        };
        verdicts.push(Verdict {
            key: key.description.clone(),
            key_id: key.key_id.clone(),
            role: KeyRole::DecryptOnly.name().to_owned(),
            objects,
            safe_to_remove: objects == 0 && possibly == 0,
            advice,
        });
    }
    for key in tally.keys.values() {
        let advice = match key.naming.role {
            KeyRole::EarlierVersion => format!(
                "still encrypts {}: run `kube-kms migrate`; disable this version in the key \
                 service only once it encrypts none",
                counted(key.objects, "object")
            ),
            KeyRole::ConfiguredKey => format!(
                "encrypts {}; whether it is the current version is not known without \
                 --current-key-id",
                counted(key.objects, "object")
            ),
            _ => continue,
        };
        verdicts.push(Verdict {
            key: key.naming.description.clone(),
            key_id: key.key_id.clone(),
            role: key.naming.role.name().to_owned(),
            objects: key.objects,
            safe_to_remove: false,
            advice,
        });
    }
    verdicts
}
