//! Fuzz target: see csi_provider::fuzzing::alibaba_spec.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| csi_provider::fuzzing::alibaba_spec(data));
