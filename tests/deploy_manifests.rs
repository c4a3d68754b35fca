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

/// One image docs/release.md says we publish: a row of its table.
#[derive(Debug)]
struct Release {
    image: String,
    containerfile: String,
    package: String,
    binary: String,
}

/// The table of images in docs/release.md, the place the image names are written down.
fn releases() -> Vec<Release> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/release.md");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let releases: Vec<Release> = text
        .lines()
        .skip_while(|line| *line != "| image | Containerfile | package | binary |")
        .skip(2)
        .take_while(|line| line.starts_with('|'))
        .map(|line| {
            let cells: Vec<&str> = line
                .trim()
                .trim_matches('|')
                .split('|')
                .map(|cell| cell.trim().trim_matches('`'))
                .collect();
            let [image, containerfile, package, binary] = cells[..] else {
                panic!("docs/release.md: an image row has four cells: {line}");
            };
            Release {
                image: image.to_owned(),
                containerfile: containerfile.to_owned(),
                package: package.to_owned(),
                binary: binary.to_owned(),
            }
        })
        .collect();
    assert!(
        releases.len() >= 2,
        "docs/release.md lists the plugin's and the CSI provider's images: {releases:?}"
    );
    releases
}

/// One build stage of a Containerfile: its base image and its instructions, continuations joined.
#[derive(Debug)]
struct Stage {
    from: String,
    instructions: Vec<(String, String)>,
}

impl Stage {
    fn all(&self, keyword: &str) -> Vec<&str> {
        self.instructions
            .iter()
            .filter(|(word, _)| word == keyword)
            .map(|(_, rest)| rest.as_str())
            .collect()
    }

    /// The only `keyword` instruction of the stage.
    fn one(&self, keyword: &str) -> &str {
        let found = self.all(keyword);
        assert_eq!(
            found.len(),
            1,
            "one {keyword} in the stage FROM {}: {found:?}",
            self.from
        );
        found[0]
    }
}

/// Reads a Containerfile line by line into its stages. Instructions must be upper case.
fn stages(containerfile: &str) -> Vec<Stage> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(containerfile);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut instructions: Vec<String> = Vec::new();
    let mut continues = false;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (part, next) = match line.strip_suffix('\\') {
            Some(part) => (part.trim_end(), true),
            None => (line, false),
        };
        if continues {
            let last = instructions
                .last_mut()
                .expect("the line continues an instruction");
            last.push(' ');
            last.push_str(part);
        } else {
            instructions.push(part.to_owned());
        }
        continues = next;
    }
    let mut stages: Vec<Stage> = Vec::new();
    for instruction in instructions {
        let (keyword, rest) = instruction
            .split_once(' ')
            .unwrap_or_else(|| panic!("{containerfile}: {instruction}"));
        assert_eq!(
            keyword,
            keyword.to_ascii_uppercase(),
            "{containerfile}: {instruction}"
        );
        if keyword == "FROM" {
            let image = rest
                .split_whitespace()
                .find(|word| !word.starts_with("--"))
                .expect("FROM names an image");
            stages.push(Stage {
                from: image.to_owned(),
                instructions: Vec::new(),
            });
        } else {
            stages
                .last_mut()
                .unwrap_or_else(|| panic!("{containerfile}: {keyword} before FROM"))
                .instructions
                .push((keyword.to_owned(), rest.trim().to_owned()));
        }
    }
    assert_eq!(
        stages.len(),
        2,
        "{containerfile}: a build stage and a runtime stage"
    );
    stages
}

/// The numeric uid and gid of a `USER uid:gid` instruction.
fn numeric_user(user: &str) -> (u64, u64) {
    let (uid, gid) = user
        .split_once(':')
        .unwrap_or_else(|| panic!("USER {user}: give uid:gid"));
    let number = |id: &str| {
        id.parse::<u64>().unwrap_or_else(|e| {
            panic!("USER {user}: numeric ids, so runAsNonRoot can check them: {e}")
        })
    };
    (number(uid), number(gid))
}

/// The `major.minor` of a Rust version such as `1.95` or `1.88.0`.
fn major_minor(version: &str) -> (u32, u32) {
    let mut parts = version.split(|c: char| !c.is_ascii_digit()).map(|part| {
        part.parse::<u32>()
            .unwrap_or_else(|e| panic!("version {version}: {e}"))
    });
    (
        parts.next().expect("a major version"),
        parts.next().expect("a minor version"),
    )
}

#[test]
fn every_released_image_is_built_the_same_way() {
    let mut bases = Vec::new();
    for release in releases() {
        let file = &release.containerfile;
        let parsed = stages(file);
        let [build, runtime] = &parsed[..] else {
            unreachable!("stages() checks there are two");
        };

        let (rust, debian) = build
            .from
            .strip_prefix("docker.io/library/rust:")
            .and_then(|tag| tag.split_once('-'))
            .unwrap_or_else(|| {
                panic!(
                    "{file}: built in the official rust image, not {}",
                    build.from
                )
            });
        assert!(
            major_minor(rust) >= major_minor(env!("CARGO_PKG_RUST_VERSION")),
            "{file}: Rust {rust} is older than the workspace's rust-version"
        );
        // The binary links the build stage's glibc: the runtime must be the same Debian release.
        let runtime_debian = [("bookworm", "debian12"), ("trixie", "debian13")]
            .iter()
            .find(|(codename, _)| *codename == debian)
            .unwrap_or_else(|| panic!("{file}: which Debian release is {debian}?"))
            .1;
        assert_eq!(
            runtime.from,
            format!("gcr.io/distroless/cc-{runtime_debian}:nonroot"),
            "{file}: a distroless runtime of the build stage's Debian release"
        );

        let cargo: Vec<&str> = build
            .all("RUN")
            .into_iter()
            .filter(|run| run.contains("cargo build"))
            .flat_map(str::split_whitespace)
            .collect();
        assert!(
            cargo.contains(&"--release") && cargo.contains(&"--locked"),
            "{file}: {cargo:?}"
        );
        assert!(
            cargo
                .windows(2)
                .any(|pair| pair == ["-p", release.package.as_str()]),
            "{file} builds package {}: {cargo:?}",
            release.package
        );

        // The runtime has no shell: nothing runs there but the binary, in exec form.
        assert!(
            runtime.all("RUN").is_empty(),
            "{file}: RUN in a shell-less stage"
        );
        let name = Path::new(&release.binary)
            .file_name()
            .and_then(|name| name.to_str())
            .expect("a binary file name");
        let copy: Vec<&str> = runtime.one("COPY").split_whitespace().collect();
        let source = format!("/src/target/release/{name}");
        assert_eq!(
            copy,
            ["--from=build", source.as_str(), release.binary.as_str()],
            "{file}"
        );
        let entrypoint: Vec<String> = serde_json::from_str(runtime.one("ENTRYPOINT"))
            .unwrap_or_else(|e| panic!("{file}: ENTRYPOINT in exec form: {e}"));
        assert_eq!(entrypoint, std::slice::from_ref(&release.binary), "{file}");
        let (uid, gid) = numeric_user(runtime.one("USER"));
        assert!(uid != 0 && gid != 0, "{file}: runs as root");
        for label in [
            "org.opencontainers.image.title",
            "org.opencontainers.image.description",
            "org.opencontainers.image.source=\"https://github.com/kube-kms/kube-kms\"",
            "org.opencontainers.image.licenses=\"Apache-2.0\"",
        ] {
            assert!(runtime.one("LABEL").contains(label), "{file}: {label}");
        }
        assert!(
            release.image.starts_with("ghcr.io/kube-kms/"),
            "{release:?}"
        );
        bases.push((build.from.clone(), runtime.from.clone(), (uid, gid)));
    }
    bases.dedup();
    assert_eq!(
        bases.len(),
        1,
        "every image has the same bases and user: {bases:?}"
    );
}

#[test]
fn the_static_pod_runs_what_the_containerfile_builds() {
    let release = releases()
        .into_iter()
        .find(|release| release.package == env!("CARGO_PKG_NAME"))
        .expect("docs/release.md lists the plugin's image");
    let parsed = stages(&release.containerfile);
    let [_, runtime] = &parsed[..] else {
        unreachable!("stages() checks there are two");
    };
    let binary = Path::new(&release.binary);
    assert_eq!(
        binary.file_name(),
        Path::new(env!("CARGO_BIN_EXE_kube-kms")).file_name(),
        "the image holds the kube-kms binary"
    );
    let (uid, gid) = numeric_user(runtime.one("USER"));
    let exposed: Vec<u16> = runtime
        .one("EXPOSE")
        .split_whitespace()
        .map(|port| {
            port.trim_end_matches("/tcp")
                .parse::<u16>()
                .unwrap_or_else(|e| panic!("EXPOSE {port}: {e}"))
        })
        .collect();
    let default_health: std::net::SocketAddr = kube_kms::config::DEFAULT_HEALTH_ADDRESS
        .parse()
        .expect("the default health address");
    assert_eq!(
        exposed,
        [default_health.port()],
        "the image exposes the health port"
    );

    let pod = yaml(&deploy("kube-kms.static-pod.yaml"));
    let ours = format!("{}:{}", release.image, env!("CARGO_PKG_VERSION"));
    let container = &pod["spec"]["containers"][0];
    assert_eq!(
        container["image"].as_str(),
        Some(ours.as_str()),
        "the image of this version"
    );
    let security = &container["securityContext"];
    assert_eq!(security["runAsNonRoot"], true);
    assert_eq!(security["runAsUser"].as_u64(), Some(uid));
    assert_eq!(security["runAsGroup"].as_u64(), Some(gid));

    // Every container of the pod that runs our image runs the binary: the image has no shell.
    let runs_ours = ["initContainers", "containers"]
        .iter()
        .filter_map(|list| pod["spec"][*list].as_array())
        .flatten()
        .filter(|each| {
            each["image"]
                .as_str()
                .is_some_and(|image| image.starts_with(&release.image))
        });
    for each in runs_ours {
        assert_eq!(each["image"].as_str(), Some(ours.as_str()));
        assert_eq!(
            each["command"],
            serde_json::json!([release.binary]),
            "{} runs the ENTRYPOINT",
            each["name"]
        );
    }

    let args: Vec<String> = container["args"]
        .as_array()
        .expect("args")
        .iter()
        .map(|arg| arg.as_str().expect("string args").to_owned())
        .collect();
    for config_file in example_configs() {
        let health = resolve(&args[1..], &config_file)
            .health_address
            .expect("the probes need the health endpoints");
        assert!(
            exposed.contains(&health.port()),
            "{}",
            config_file.display()
        );
        for probe in ["livenessProbe", "readinessProbe", "startupProbe"] {
            assert_eq!(
                container[probe]["httpGet"]["port"].as_u64(),
                Some(u64::from(health.port())),
                "{probe}"
            );
        }
    }
}
