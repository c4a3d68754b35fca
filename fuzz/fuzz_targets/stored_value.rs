//! Fuzz target: see kube_kms::fuzzing::stored_value.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kube_kms::fuzzing::stored_value(data));
