//! Fuzz target: see kube_kms::fuzzing::decrypt_request.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kube_kms::fuzzing::decrypt_request(data));
