//! Runs every fuzz target's entry point over its committed corpus (fuzz/corpus/<target>/), so
//! each input a fuzzer ever found interesting stays a regression test in the normal test run.

use std::path::Path;

fn run_corpus(target: &str, entry: fn(&[u8])) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut inputs = 0;
    for file in std::fs::read_dir(&dir).expect("corpus directory exists") {
        let path = file.expect("corpus entry").path();
        entry(&std::fs::read(&path).expect("corpus file reads"));
        inputs += 1;
    }
    assert!(inputs > 0, "{} holds no inputs", dir.display());
}

#[test]
fn ciphertext_corpus() {
    run_corpus("ciphertext", kube_kms::fuzzing::ciphertext);
}

#[test]
fn decrypt_request_corpus() {
    run_corpus("decrypt_request", kube_kms::fuzzing::decrypt_request);
}

#[test]
fn config_corpus() {
    run_corpus("config", kube_kms::fuzzing::config);
}
