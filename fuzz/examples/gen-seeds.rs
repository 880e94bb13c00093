//! Writes the seed corpus, or checks it (docs/fuzzing.md).
//!
//! `cargo run --example gen-seeds` writes every target's seeds to `fuzz/seeds/<target>/<name>`.
//! `cargo run --example gen-seeds -- --check` writes nothing: it runs every seed and every saved
//! crash input (`fuzz/regressions/<target>/*`) through its harness, on
//! stable and without libFuzzer, and fails if a committed seed differs from
//! what the generator makes now (the wire format changed: regenerate).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use vnic_fuzz::{Target, TARGETS};

fn fuzz_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn write_seeds() -> std::io::Result<()> {
    for Target { name, seeds, .. } in TARGETS {
        let dir = fuzz_dir().join("seeds").join(name);
        std::fs::create_dir_all(&dir)?;
        for (name, bytes) in seeds() {
            std::fs::write(dir.join(name), bytes)?;
        }
        println!("{name}: seeds in {}", dir.display());
    }
    Ok(())
}

/// Runs every file of `dir` through `run`; the number run.
fn replay(dir: &Path, run: fn(&[u8])) -> std::io::Result<usize> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Ok(0);
    };
    let mut n = 0;
    for entry in entries {
        let path = entry?.path();
        run(&std::fs::read(&path)?);
        n += 1;
    }
    Ok(n)
}

fn check() -> std::io::Result<bool> {
    let mut fresh = true;
    for Target {
        name: target,
        run,
        seeds,
    } in TARGETS
    {
        let dir = fuzz_dir().join("seeds").join(target);
        for (name, bytes) in seeds() {
            if std::fs::read(dir.join(name)).ok().as_ref() != Some(&bytes) {
                eprintln!("{target}/{name}: seed is stale; run gen-seeds");
                fresh = false;
            }
        }
        let ran = replay(&dir, run)?;
        let crashes = replay(&fuzz_dir().join("regressions").join(target), run)?;
        println!("{target}: {ran} seeds and {crashes} saved crash inputs run clean");
    }
    Ok(fresh)
}

fn main() -> ExitCode {
    let checking = std::env::args().any(|a| a == "--check");
    let result = if checking {
        check()
    } else {
        write_seeds().map(|()| true)
    };
    match result {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("gen-seeds: {e}");
            ExitCode::FAILURE
        }
    }
}
