//! Fuzz harnesses of vnicd (docs/fuzzing.md).
//!
//! Each module is one target: `run` takes the fuzzer's bytes through the
//! code vnicd runs (a real [`vnic::card::Card`], fake guest memory from
//! [`vnic::test_utils`]) and checks invariants after the input, and
//! `seeds` makes valid inputs for the seed corpus (`gen-seeds`). The
//! targets in `fuzz_targets/` are one line each, so the harnesses also run
//! on stable, without libFuzzer (`cargo run --example gen-seeds -- --check`).

pub mod control;
pub mod frames;
pub mod input;
pub mod protocol;
pub mod rings;

/// A named seed input of one target.
pub type Seed = (&'static str, Vec<u8>);

/// A fuzz target: its name (as in `fuzz_targets/`), its harness and its
/// seed generator.
pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
    pub seeds: fn() -> Vec<Seed>,
}

/// Every target.
pub const TARGETS: [Target; 4] = [
    Target {
        name: "protocol",
        run: protocol::run,
        seeds: protocol::seeds,
    },
    Target {
        name: "rings",
        run: rings::run,
        seeds: rings::seeds,
    },
    Target {
        name: "frames",
        run: frames::run,
        seeds: frames::seeds,
    },
    Target {
        name: "control",
        run: control::run,
        seeds: control::seeds,
    },
];
