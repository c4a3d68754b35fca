//! Fuzz target: see kube_kms::fuzzing::decrypt_v2_proto.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| kube_kms::fuzzing::decrypt_v2_proto(data));
