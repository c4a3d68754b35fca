//! Fuzz target: see kube_kms::fuzzing::config.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kube_kms::fuzzing::config(data));
