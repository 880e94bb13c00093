//! The `protocol` fuzz target; the harness is `vnic_fuzz::protocol` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vnic_fuzz::protocol::run(data));
