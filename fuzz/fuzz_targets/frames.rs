//! The `frames` fuzz target; the harness is `vnic_fuzz::frames` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vnic_fuzz::frames::run(data));
