//! The README's settings table and the CLI cannot drift apart: every row of the table (YAML key |
//! flag | environment | default | allowed) is a setting `serve` accepts, under the same flag and
//! environment variable, and every setting `serve` accepts has its row. Each YAML key is checked
//! against the config file parser too: a file holding only that key is not refused as unknown.

use std::collections::BTreeMap;

use clap::Args;
use kube_kms::config::{Config, ConfigArgs, ConfigError, DefaultsEnv};

/// The header of the README's settings table.
const HEADER: &str = "| YAML key | flag | environment | default | allowed |";

/// One row of the table: the setting's three names.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Row {
    key: String,
    flag: String,
    env: String,
}

/// The settings table, by flag.
fn readme_rows() -> BTreeMap<String, Row> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md"))
        .expect("README.md is readable");
    let mut lines = readme
        .lines()
        .skip_while(|line| line.trim() != HEADER)
        .skip(2);
    let mut rows = BTreeMap::new();
    for line in lines.by_ref().take_while(|line| line.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split(" | ").map(str::trim).collect();
        assert_eq!(cells.len(), 5, "a settings row has five cells: {line}");
        let name = |cell: &str| {
            let inner = cell
                .strip_prefix('`')
                .and_then(|cell| cell.strip_suffix('`'))
                .unwrap_or_else(|| panic!("{cell:?} is one `code` name, in row: {line}"));
            assert!(!inner.contains('`'), "one setting per row: {line}");
            inner.to_owned()
        };
        let row = Row {
            key: name(cells[0]),
            flag: name(cells[1]),
            env: name(cells[2]),
        };
        assert!(
            rows.insert(row.flag.clone(), row).is_none(),
            "a flag has two rows: {line}"
        );
    }
    assert!(
        !rows.is_empty(),
        "README.md has a settings table under {HEADER:?}"
    );
    rows
}

/// `serve`'s settings as clap defines them: long flag → environment variable.
fn cli_settings() -> BTreeMap<String, String> {
    ConfigArgs::augment_args(clap::Command::new("serve"))
        .get_arguments()
        .map(|arg| {
            let flag = arg
                .get_long()
                .unwrap_or_else(|| panic!("{} has a long flag", arg.get_id()));
            let env = arg
                .get_env()
                .unwrap_or_else(|| panic!("--{flag} has an environment variable"));
            (
                format!("--{flag}"),
                env.to_str().expect("UTF-8 env name").to_owned(),
            )
        })
        .collect()
}

#[test]
fn every_cli_setting_has_its_readme_row_with_the_same_flag_and_environment_variable() {
    let rows = readme_rows();
    let mut cli = cli_settings();
    // The config file itself is not a YAML key: the paragraph above the table names it.
    assert_eq!(cli.remove("--config").as_deref(), Some("KUBE_KMS_CONFIG"));
    for (flag, env) in &cli {
        let row = rows
            .get(flag)
            .unwrap_or_else(|| panic!("README.md's settings table has no row for {flag}"));
        assert_eq!(&row.env, env, "{flag}'s environment variable in README.md");
    }
    for flag in rows.keys() {
        assert!(
            cli.contains_key(flag),
            "README.md lists {flag}, which `kube-kms serve` does not accept"
        );
    }
}

#[test]
fn every_readme_yaml_key_is_a_config_file_key() {
    let dir = tempfile::tempdir().expect("temporary directory");
    let file = dir.path().join("kube-kms.yaml");
    for row in readme_rows().values() {
        let yaml = match row.key.split_once('.') {
            Some((section, key)) => format!("{section}:\n  {key}: readme-check\n"),
            None => format!("{}: readme-check\n", row.key),
        };
        std::fs::write(&file, yaml).expect("write the config file");
        let args = ConfigArgs {
            config: Some(file.clone()),
            ..ConfigArgs::default()
        };
        match Config::load(&args, &DefaultsEnv::default()) {
            Err(ConfigError::File { reason, .. }) if reason.contains("unknown field") => {
                panic!(
                    "README.md's YAML key {} is not a config file key: {reason}",
                    row.key
                )
            }
            // An error about this key names it as the README does.
            Err(ConfigError::Invalid { setting, .. })
                if setting.starts_with(&format!("{} (", row.key)) =>
            {
                assert_eq!(setting, format!("{} ({} / {})", row.key, row.flag, row.env));
            }
            _ => {}
        }
    }
}

#[test]
fn the_table_names_each_setting_consistently() {
    // A setting's flag and environment variable are its YAML key's words: `azure.key_name` is
    // --azure-key-name and KUBE_KMS_AZURE_KEY_NAME (the AKS file, `azure.azure_json`, is
    // --azure-json: its section and name share the word).
    for row in readme_rows().values() {
        let words = row
            .key
            .replace(['.', '_'], "-")
            .replace("azure-azure-", "azure-");
        assert_eq!(row.flag, format!("--{words}"), "{}'s flag", row.key);
        assert_eq!(
            row.env,
            format!("KUBE_KMS_{}", words.replace('-', "_").to_uppercase()),
            "{}'s environment variable",
            row.key
        );
    }
}
