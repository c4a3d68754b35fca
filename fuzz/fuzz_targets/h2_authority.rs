//! Fuzz target: see grpc_uds::fuzzing::client_stream.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| grpc_uds::fuzzing::client_stream(data));
