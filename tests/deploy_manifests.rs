//! Everything in deploy/ is checked against the plugin's own configuration schema: each example
//! config resolves, and the static pod, the systemd unit and the EncryptionConfigurations agree
//! with each other on the socket path and the health port — so a copied manifest works.

use std::path::{Path, PathBuf};

use clap::Parser;
use kube_kms::config::{Config, ConfigArgs, DefaultsEnv};
use serde_json::Value;

/// `kube-kms serve`'s flags, as clap parses them from a manifest's argument list.
#[derive(Debug, Parser)]
struct Serve {
    #[command(flatten)]
    args: ConfigArgs,
}

fn deploy(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("deploy")
        .join(path)
}

fn yaml(path: &Path) -> Value {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn example_configs() -> Vec<PathBuf> {
    let mut configs: Vec<PathBuf> = std::fs::read_dir(deploy("config"))
        .expect("deploy/config exists")
        .map(|entry| entry.expect("directory entry").path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "yaml"))
        .collect();
    configs.sort();
    assert!(
        configs.len() >= 2,
        "deploy/config holds the example configs"
    );
    configs
}

/// Resolves `serve` arguments from a manifest with `config` standing in for the mounted file.
fn resolve(arguments: &[String], config: &Path) -> Config {
    let mut serve =
        Serve::try_parse_from(std::iter::once("serve").chain(arguments.iter().map(String::as_str)))
            .unwrap_or_else(|e| panic!("manifest arguments {arguments:?}: {e}"));
    assert!(
        serve.args.config.is_some(),
        "the manifest names a config file"
    );
    serve.args.config = Some(config.to_owned());
    Config::load(&serve.args, &DefaultsEnv::default())
        .unwrap_or_else(|e| panic!("{} with {arguments:?}: {e}", config.display()))
}

fn encryption_config_endpoint(file: &str, api_version: Option<&str>) -> String {
    let config = yaml(&deploy(file));
    assert_eq!(config["apiVersion"], "apiserver.config.k8s.io/v1");
    assert_eq!(config["kind"], "EncryptionConfiguration");
    let kms = &config["resources"][0]["providers"][0]["kms"];
    assert_eq!(kms["apiVersion"].as_str(), api_version, "{file}");
    assert!(!kms["name"].as_str().expect("a name").contains(':'));
    assert_eq!(config["resources"][0]["resources"][0], "secrets");
    kms["endpoint"].as_str().expect("an endpoint").to_owned()
}

#[test]
fn every_example_config_resolves() {
    for path in example_configs() {
        let text = std::fs::read_to_string(&path).unwrap();
        Config::from_yaml(&text, &ConfigArgs::default(), &DefaultsEnv::default())
            .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }
}

#[test]
fn the_static_pod_is_hardened_and_agrees_with_the_encryption_configuration() {
    let pod = yaml(&deploy("kube-kms.static-pod.yaml"));
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["metadata"]["namespace"], "kube-system");
    let container = &pod["spec"]["containers"][0];
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["readOnlyRootFilesystem"], true);
    assert_eq!(security["allowPrivilegeEscalation"], false);
    assert_eq!(security["capabilities"]["drop"][0], "ALL");
    assert!(security["capabilities"].get("add").is_none());
    assert!(container["resources"]["requests"]["memory"].is_string());
    assert!(container["resources"]["limits"]["memory"].is_string());

    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|arg| arg.as_str().expect("string args").to_owned())
        .collect();
    assert_eq!(args[0], "serve");
    let endpoint = encryption_config_endpoint("encryption-config-v2.yaml", Some("v2"));
    let v1_endpoint = encryption_config_endpoint("encryption-config-v1.yaml", None);
    assert_eq!(endpoint, v1_endpoint, "one socket serves both APIs");

    for config_file in example_configs() {
        let config = resolve(&args[1..], &config_file);
        assert_eq!(format!("unix://{}", config.socket.display()), endpoint);
        let health = config
            .health_address
            .expect("the probes need the health endpoints");
        assert!(health.ip().is_loopback());
        for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
            let get = &container[probe]["httpGet"];
            assert_eq!(get["path"], path);
            assert_eq!(
                get["port"].as_u64(),
                Some(u64::from(health.port())),
                "{probe}"
            );
            assert!(
                container[probe]["timeoutSeconds"]
                    .as_u64()
                    .expect("a timeout")
                    <= 3
            );
        }
        let socket_dir = config.socket.parent().expect("socket directory");
        let mounted = container["volumeMounts"]
            .as_array()
            .expect("volume mounts")
            .iter()
            .any(|mount| mount["mountPath"].as_str() == socket_dir.to_str());
        assert!(
            mounted,
            "the socket directory {} is a shared hostPath mount",
            socket_dir.display()
        );
    }
}

#[test]
fn the_systemd_unit_runs_the_same_configuration() {
    let unit = std::fs::read_to_string(deploy("systemd/kube-kms.service")).unwrap();
    let exec_start: String = unit
        .split("ExecStart=")
        .nth(1)
        .expect("an ExecStart line")
        .lines()
        .scan(true, |continues, line| {
            let keep = *continues;
            *continues = line.trim_end().ends_with('\\');
            keep.then(|| line.trim_end().trim_end_matches('\\').to_owned())
        })
        .collect::<Vec<_>>()
        .join(" ");
    let words: Vec<String> = exec_start.split_whitespace().map(str::to_owned).collect();
    assert!(
        words[0].ends_with("/kube-kms") && words[1] == "serve",
        "{words:?}"
    );
    let endpoint = encryption_config_endpoint("encryption-config-v2.yaml", Some("v2"));
    for config_file in example_configs() {
        let config = resolve(&words[2..], &config_file);
        assert_eq!(format!("unix://{}", config.socket.display()), endpoint);
    }
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("NoNewPrivileges=yes") && unit.contains("LimitCORE=0"));
}
