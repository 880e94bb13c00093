//! The `control` fuzz target; the harness is `vnic_fuzz::control` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vnic_fuzz::control::run(data));
