//! Fuzz target: see keyvault_emulator::fuzzing::request.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| keyvault_emulator::fuzzing::request(data));
