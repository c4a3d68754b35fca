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

#[test]
fn decrypt_v2_proto_corpus() {
    run_corpus("decrypt_v2_proto", kube_kms::fuzzing::decrypt_v2_proto);
}

#[test]
fn decrypt_v1_proto_corpus() {
    run_corpus("decrypt_v1_proto", kube_kms::fuzzing::decrypt_v1_proto);
}

#[test]
fn stored_value_corpus() {
    run_corpus("stored_value", kube_kms::fuzzing::stored_value);
}

#[test]
fn h2_authority_corpus() {
    run_corpus("h2_authority", grpc_uds::fuzzing::client_stream);
}

/// The committed v2 and v1 requests open: the corpora reach the decryption itself, not only
/// the parsers. Rewrite them with `cargo test --test fuzz_corpus -- --ignored write_seeds`.
#[test]
fn the_seed_requests_decrypt() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (target, name) in [("decrypt_v2_proto", "v2"), ("decrypt_v1_proto", "v1")] {
        let seed = std::fs::read(dir.join(target).join(name)).expect("seed exists");
        assert!(
            kube_kms::fuzzing::opens(&seed, name == "v2"),
            "{target}/{name}"
        );
    }
}

#[test]
#[ignore = "writes the stored-value seeds into fuzz/corpus; run by hand"]
fn write_stored_value_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/stored_value");
    std::fs::create_dir_all(&dir).expect("corpus directory");
    for (name, bytes) in kube_kms::fuzzing::stored_value_seeds() {
        std::fs::write(dir.join(name), bytes).expect("seed written");
    }
}

#[test]
#[ignore = "writes the seed requests into fuzz/corpus; run by hand"]
fn write_seeds() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus");
    for (name, bytes) in kube_kms::fuzzing::seed_requests() {
        let target = format!("decrypt_{name}_proto");
        std::fs::create_dir_all(dir.join(&target)).expect("corpus directory");
        std::fs::write(dir.join(&target).join(name), bytes).expect("seed written");
    }
}
