//! Guards the layering of the library's top-level modules: reads every `crate::…` path in
//! src/**/*.rs (outside comments), maps each file to its top-level module (src/config/ is one
//! node, like src/config.rs would be) and checks every edge against [`LAYERS`], the spec that
//! ARCHITECTURE.md copies. [`LAYERS`] itself must be acyclic, so an edge can only be allowed in
//! one direction and no import cycle between top-level modules can come back.
//!
//! Reads source text only: it never builds or runs anything. `super::` paths are not followed;
//! they stay inside a top-level module everywhere in src/ (cross-module paths use `crate::`).

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Which top-level module may use which, lowest layer first. A module not listed on the right
/// of its own row may not be named from it, directly or through a re-export.
const LAYERS: &[(&str, &[&str])] = &[
    // Generated gRPC types of the KMS v1 and v2 APIs.
    ("proto", &[]),
    // AEAD, secret-key newtypes, randomness.
    ("crypto", &[]),
    // KeyProvider and its backends (local, Azure, PKCS#11) and wrappers (chain, guard,
    // instrumented). Reports calls through a trait; never reads metrics or the envelope.
    ("provider", &["crypto"]),
    // Seal/open with local KEKs, the KEK cache, the wire format.
    ("envelope", &["crypto", "provider"]),
    // Flags, environment and file parsed into a typed Config of provider and envelope options.
    ("config", &["crypto", "provider", "envelope"]),
    // /healthz, /readyz, /metrics: reads the envelope, implements provider's CallRecorder.
    ("ops", &["crypto", "provider", "envelope"]),
    // The gRPC services (v1, v2), error mapping, deadlines, the refresher.
    (
        "server",
        &["crypto", "proto", "provider", "envelope", "ops"],
    ),
    // The health probe client (`kube-kms probe`): speaks gRPC to a running plugin.
    ("probe", &["crypto", "proto"]),
    // `census` and `migrate`: etcd's stored values classified, key_ids named from the config,
    // objects rewritten through kube-apiserver. Never serves, never contacts the key service.
    ("lifecycle", &["proto", "provider", "envelope", "config"]),
    // The wiring of a running plugin, used by main.rs and the tests.
    (
        "daemon",
        &[
            "crypto", "proto", "provider", "envelope", "config", "ops", "server",
        ],
    ),
    // Fuzz entry points: may reach anything but the daemon.
    (
        "fuzzing",
        &[
            "crypto",
            "proto",
            "provider",
            "envelope",
            "config",
            "ops",
            "server",
            "probe",
            "lifecycle",
        ],
    ),
];

fn src_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("src")
}

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .unwrap_or_else(|error| panic!("reading {}: {error}", dir.display()))
        .map(|entry| entry.expect("directory entry").path())
        .collect();
    entries.sort();
    for path in entries {
        if path.is_dir() {
            rust_files(&path, found);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            found.push(path);
        }
    }
}

/// The top-level module a file under src/ belongs to; `None` for the crate roots.
fn top_level_module(relative: &Path) -> Option<String> {
    let first = relative.components().next()?.as_os_str().to_str()?;
    let name = first.strip_suffix(".rs").unwrap_or(first);
    (!matches!(name, "lib" | "main")).then(|| name.to_owned())
}

/// The code of `source` without `//` comments (line, doc and trailing ones). A `//` inside a
/// string literal also ends the line here; that can only hide a path, never invent one.
fn without_comments(source: &str) -> String {
    source
        .lines()
        .map(|line| line.split("//").next().unwrap_or(""))
        .collect::<Vec<_>>()
        .join("\n")
}

fn leading_ident(text: &str) -> &str {
    let text = text.trim_start();
    let end = text
        .find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(text.len());
    &text[..end]
}

/// The top-level modules named by `crate::` paths in `code`, including grouped imports such as
/// `use crate::{envelope::Envelope, provider::{KeyProvider, ProviderError}};`.
fn crate_modules(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = code;
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident = rest[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == '$');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue;
        }
        if let Some(group) = rest.strip_prefix('{') {
            let mut depth = 0usize;
            let mut item_start = 0;
            for (index, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.insert(leading_ident(&group[item_start..index]).to_owned());
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(leading_ident(&group[item_start..index]).to_owned());
                        item_start = index + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(leading_ident(rest).to_owned());
        }
    }
    found.remove("");
    found
}

/// Every edge between distinct top-level modules, with the files that make it.
fn module_graph() -> BTreeMap<(String, String), BTreeSet<String>> {
    let root = src_dir();
    let mut files = Vec::new();
    rust_files(&root, &mut files);
    let mut edges: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for path in files {
        let relative = path.strip_prefix(&root).expect("under src/");
        let Some(from) = top_level_module(relative) else {
            continue;
        };
        let source = std::fs::read_to_string(&path)
            .unwrap_or_else(|error| panic!("reading {}: {error}", path.display()));
        for to in crate_modules(&without_comments(&source)) {
            if to != from {
                edges
                    .entry((from.clone(), to))
                    .or_default()
                    .insert(relative.display().to_string());
            }
        }
    }
    edges
}

/// The top-level modules src/lib.rs declares.
fn declared_modules() -> BTreeSet<String> {
    let lib = std::fs::read_to_string(src_dir().join("lib.rs")).expect("src/lib.rs");
    without_comments(&lib)
        .lines()
        .filter_map(|line| {
            let line = line.trim();
            let rest = line
                .strip_prefix("pub mod ")
                .or_else(|| line.strip_prefix("mod "))?;
            rest.strip_suffix(';').map(str::to_owned)
        })
        .collect()
}

fn allowed() -> BTreeMap<&'static str, BTreeSet<&'static str>> {
    LAYERS
        .iter()
        .map(|(module, uses)| (*module, uses.iter().copied().collect()))
        .collect()
}

#[test]
fn every_top_level_module_has_a_row_in_the_layering() {
    let declared = declared_modules();
    let listed: BTreeSet<String> = LAYERS.iter().map(|(m, _)| (*m).to_owned()).collect();
    assert_eq!(
        declared, listed,
        "src/lib.rs declares these top-level modules, LAYERS lists those; give every module a \
         row (and ARCHITECTURE.md with it)"
    );
    for (module, uses) in LAYERS {
        for used in *uses {
            assert!(
                listed.contains(*used),
                "LAYERS row {module} names {used}, which has no row"
            );
        }
    }
}

#[test]
fn the_layering_itself_has_no_cycle() {
    // Kahn's algorithm: repeatedly remove modules whose allowed uses are all removed already.
    let allowed = allowed();
    let mut placed: BTreeSet<&str> = BTreeSet::new();
    loop {
        let ready: Vec<&str> = allowed
            .iter()
            .filter(|(module, uses)| !placed.contains(*module) && uses.is_subset(&placed))
            .map(|(module, _)| *module)
            .collect();
        if ready.is_empty() {
            break;
        }
        placed.extend(ready);
    }
    let cyclic: Vec<&str> = allowed
        .keys()
        .copied()
        .filter(|module| !placed.contains(module))
        .collect();
    assert!(cyclic.is_empty(), "LAYERS allows a cycle among {cyclic:?}");
}

#[test]
fn modules_use_only_what_the_layering_allows() {
    let allowed = allowed();
    let graph = module_graph();
    // The parser must see the data path, or this test would pass on nothing.
    for (from, to) in [
        ("server", "envelope"),
        ("envelope", "provider"),
        ("ops", "envelope"),
    ] {
        assert!(
            graph.contains_key(&(from.to_owned(), to.to_owned())),
            "expected {from} → {to} in the module graph; is the parser still reading src/?"
        );
    }
    let violations: Vec<String> = graph
        .iter()
        .filter(|((from, to), _)| {
            !allowed
                .get(from.as_str())
                .is_some_and(|uses| uses.contains(to.as_str()))
        })
        .map(|((from, to), files)| {
            let files: Vec<&str> = files.iter().map(String::as_str).collect();
            format!("{from} → {to} (in {})", files.join(", "))
        })
        .collect();
    assert!(
        violations.is_empty(),
        "imports against the layering in tests/module_layering.rs (LAYERS):\n  {}\nmove the \
         shared piece down to a module both may use rather than allowing the edge",
        violations.join("\n  ")
    );
}

#[test]
fn the_parser_reads_grouped_and_nested_imports_and_skips_comments() {
    let code = without_comments(
        "use crate::{envelope::Envelope, provider::{KeyProvider, chain::Chain}};\n\
         use crate::crypto::SecretKey; // crate::daemon in a comment\n\
         /// [`crate::server`] in a doc comment\n\
         let x = crate::ops::metrics::Metrics::new();\n\
         let y = $crate::proto::x; let z = other_crate::config::x;\n",
    );
    let found: Vec<String> = crate_modules(&code).into_iter().collect();
    assert_eq!(found, ["crypto", "envelope", "ops", "provider"]);
}
