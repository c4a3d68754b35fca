//! Fuzz target: see csi_provider::fuzzing::mount_request.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| csi_provider::fuzzing::mount_request(data));
