//! The summary of a `cargo bench` run: one table of every figure, its baseline measured in the
//! same run, and their ratio, written to target/bench-summary.md and target/bench-summary.json.
//!
//! For the envelope and socket benches it reads target/bench-results/{envelope,socket}-paired.json
//! (kube-kms and its baseline timed in alternating rounds: medians, and the median of per-round
//! ratios), falling back to criterion's target/criterion/**/new/estimates.json medians; and
//! target/bench-results/remote.json for the rest. cargo runs
//! bench targets in name order, so `summary` runs last in a plain `cargo bench`; run it alone
//! with `cargo bench --bench summary` to rebuild the table from the last results. Under
//! `cargo test --benches` it prints the table it can build but writes nothing.

use std::path::Path;

use serde_json::Value;

mod support;
use support::{Figure, Paired};

/// A criterion comparison: `ours` and `baseline` are benchmark directories under
/// target/criterion (criterion writes group "a/b" as directory "a_b").
struct Comparison {
    id: String,
    figure: String,
    ours: String,
    baseline_name: String,
    baseline: String,
    /// How the ratio is read: time ratio, or throughput ratio (baseline time / our time).
    kind: Kind,
    /// The largest (time) or smallest (throughput) ratio the target allows.
    target: Option<f64>,
}

#[derive(Clone, Copy)]
enum Kind {
    /// value and baseline are ns per operation; ratio = ours / baseline (lower is better).
    Time,
    /// value and baseline are calls per second; ratio = ours / baseline (higher is better).
    Throughput,
}

const ENVELOPE: &[(&str, &str)] = &[
    ("32B", "32 B DEK seed (v2)"),
    ("995B", "995 B, the largest v2 plaintext"),
    ("1KiB-v1", "1 KiB (v1 API)"),
];

fn comparisons() -> Vec<Comparison> {
    let mut all = Vec::new();
    for (size, label) in ENVELOPE {
        for (lib, baseline_name) in [
            (
                "aes-gcm",
                "raw aes-gcm seal+open, random nonce from the OS, same input",
            ),
            (
                "aes-gcm-counter",
                "raw aes-gcm seal+open, counter nonce (no system call), same input",
            ),
            (
                "aws-lc-rs",
                "raw aws-lc-rs seal+open, random nonce, same input",
            ),
        ] {
            all.push(Comparison {
                id: format!("envelope_{size}_vs_{lib}"),
                figure: format!("envelope seal+open, {label}"),
                ours: format!("envelope_seal_open/kube-kms/{size}"),
                baseline_name: baseline_name.into(),
                baseline: format!("envelope_seal_open/{lib}/{size}"),
                kind: Kind::Time,
                target: (*size == "32B" && lib == "aes-gcm").then_some(1.15),
            });
        }
    }
    for op in ["encrypt", "decrypt"] {
        for callers in [1, 16, 64] {
            all.push(Comparison {
                id: format!("socket_{op}_{callers}"),
                figure: format!(
                    "{} over the socket, {callers} concurrent caller{}",
                    if op == "encrypt" {
                        "Encrypt"
                    } else {
                        "Decrypt"
                    },
                    if callers == 1 { "" } else { "s" }
                ),
                ours: format!("socket_{op}/kube-kms/{callers}"),
                baseline_name: "no-op RPC, same stack, socket and client (transport floor)".into(),
                baseline: format!("socket_{op}/noop-floor/{callers}"),
                kind: Kind::Throughput,
                target: (op == "decrypt" && callers == 64).then_some(0.85),
            });
        }
    }
    for (label, figure) in [
        (
            "no-adapter-again",
            "Decrypt over the socket, 64 callers, no adapter (a second connection: the run's noise)",
        ),
        (
            "adapter-localhost",
            "Decrypt over the socket, 64 callers, through the :authority adapter, authority localhost (passthrough)",
        ),
        (
            "adapter-socket-path",
            "Decrypt over the socket, 64 callers, through the :authority adapter, authority the socket path (every header block re-encoded)",
        ),
    ] {
        all.push(Comparison {
            id: format!("socket_authority_{label}_64"),
            figure: figure.into(),
            ours: format!("socket_authority/{label}/64"),
            baseline_name: "no-op RPC, same tonic stack, served without the adapter".into(),
            baseline: "socket_authority/no-adapter/64".into(),
            kind: Kind::Throughput,
            target: None,
        });
    }
    all
}

/// The median time per iteration, in ns, criterion recorded for `id` in its last run.
fn criterion_median_ns(criterion: &Path, id: &str) -> Option<f64> {
    let path = criterion.join(id).join("new/estimates.json");
    let estimates: Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    estimates["median"]["point_estimate"].as_f64()
}

/// The figure for `comparison`: from its paired rounds when the run recorded them (medians
/// over alternating rounds, the ratio the median of per-round ratios), else from criterion's
/// medians of the two benchmarks.
fn measured(criterion: &Path, paired: &[Paired], comparison: &Comparison) -> Option<Figure> {
    let pair = paired
        .iter()
        .find(|pair| pair.ours == comparison.ours && pair.baseline == comparison.baseline);
    let (ours, baseline, time_ratio) = match pair {
        Some(pair) => (pair.ours_ns, pair.baseline_ns, pair.time_ratio),
        None => {
            let ours = criterion_median_ns(criterion, &comparison.ours)?;
            let baseline = criterion_median_ns(criterion, &comparison.baseline)?;
            (ours, baseline, ours / baseline)
        }
    };
    let mut figure = match comparison.kind {
        Kind::Time => Figure::new(
            &comparison.id,
            &comparison.figure,
            (ours, "ns/op"),
            (&comparison.baseline_name, baseline),
        ),
        Kind::Throughput => Figure::new(
            &comparison.id,
            &comparison.figure,
            (1e9 / ours, "calls/s"),
            (&comparison.baseline_name, 1e9 / baseline),
        ),
    };
    let ratio = match comparison.kind {
        Kind::Time => time_ratio,
        Kind::Throughput => 1.0 / time_ratio,
    };
    figure.ratio = Some(ratio);
    Some(match (comparison.kind, comparison.target) {
        (_, None) => figure,
        (Kind::Time, Some(max)) => figure.target(&format!("ratio ≤ {max:.2}"), ratio <= max),
        (Kind::Throughput, Some(min)) => figure.target(&format!("ratio ≥ {min:.2}"), ratio >= min),
    })
}

fn number(value: f64) -> String {
    match value.abs() {
        v if v >= 100.0 || v.fract() == 0.0 => format!("{value:.0}"),
        v if v >= 10.0 => format!("{value:.1}"),
        _ => format!("{value:.2}"),
    }
}

fn markdown(figures: &[Figure], machine: &str) -> String {
    let mut out = String::new();
    out.push_str(&format!("Machine: {machine}\n\n"));
    out.push_str("| figure | value | baseline | baseline value | ratio | target | met |\n");
    out.push_str("|---|---:|---|---:|---:|---|---|\n");
    for figure in figures {
        let ratio = figure
            .ratio
            .map(|ratio| format!("{ratio:.2}"))
            .unwrap_or_else(|| "—".into());
        let met = match figure.met {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "",
        };
        out.push_str(&format!(
            "| {} | {} {} | {} | {} {} | {} | {} | {} |\n",
            figure.figure,
            number(figure.value),
            figure.unit,
            figure.baseline,
            number(figure.baseline_value),
            figure.unit,
            ratio,
            figure.target,
            met,
        ));
    }
    out
}

/// `nproc` and the CPU model, as the table's header names the machine.
fn machine() -> String {
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("model name")?.split_once(':'))
                .map(|(_, model)| model.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown CPU".into());
    format!("{cpus} CPUs (nproc), {model}")
}

fn main() {
    let target = support::target_dir();
    let criterion = target.join("criterion");
    let mut figures = Vec::new();
    let mut missing = Vec::new();
    let paired: Vec<Paired> = ["envelope-paired.json", "socket-paired.json"]
        .iter()
        .filter_map(|name| std::fs::read_to_string(target.join("bench-results").join(name)).ok())
        .filter_map(|text| serde_json::from_str::<Vec<Paired>>(&text).ok())
        .flatten()
        .collect();
    for comparison in comparisons() {
        match measured(&criterion, &paired, &comparison) {
            Some(figure) => figures.push(figure),
            None => missing.push(comparison.id),
        }
    }
    let remote = target.join("bench-results/remote.json");
    match std::fs::read_to_string(&remote)
        .ok()
        .and_then(|text| serde_json::from_str::<Vec<Figure>>(&text).ok())
    {
        Some(rows) => figures.extend(rows),
        None => missing.push("remote (target/bench-results/remote.json)".into()),
    }

    let machine = machine();
    let table = markdown(&figures, &machine);
    print!("{table}");
    if !missing.is_empty() {
        println!("not measured yet: {}", missing.join(", "));
    }
    if support::bench_mode() {
        let json = serde_json::json!({ "machine": machine, "figures": figures });
        let md = target.join("bench-summary.md");
        let js = target.join("bench-summary.json");
        std::fs::write(&md, &table).expect("write bench-summary.md");
        std::fs::write(&js, serde_json::to_string_pretty(&json).expect("json"))
            .expect("write bench-summary.json");
        println!("wrote {} and {}", md.display(), js.display());
    }
}
