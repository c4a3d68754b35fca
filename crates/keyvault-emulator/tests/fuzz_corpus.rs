//! Replays the committed corpus of kube-kms's `emulator_request` fuzz target
//! (fuzz/corpus/emulator_request/ at the repository root) through the same entry point, so
//! every input a fuzzer found interesting stays a regression test in the normal test run.

use std::path::Path;

#[test]
fn emulator_request_corpus() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/emulator_request");
    let mut inputs = 0;
    for file in std::fs::read_dir(&dir).expect("corpus directory exists") {
        let path = file.expect("corpus entry").path();
        keyvault_emulator::fuzzing::request(&std::fs::read(&path).expect("corpus file reads"));
        inputs += 1;
    }
    assert!(inputs > 0, "{} holds no inputs", dir.display());
}
