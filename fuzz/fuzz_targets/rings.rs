//! The `rings` fuzz target; the harness is `vnic_fuzz::rings` (docs/fuzzing.md).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| vnic_fuzz::rings::run(data));
