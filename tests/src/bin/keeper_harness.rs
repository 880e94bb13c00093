//! `keeper-harness PROGRAM [ARGS...]`: vnicd's keeper (`vnic::keeper`)
//! keeping any program as its worker, for tests/control/keeper.rs. Options
//! come from the environment as in vnicd (`VNICD_WATCHDOG_USEC`,
//! `XDG_RUNTIME_DIR`, ...).

use std::ffi::OsString;
use std::path::PathBuf;

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let mut args = std::env::args_os().skip(1);
    let Some(program) = args.next() else {
        eprintln!("usage: keeper-harness PROGRAM [ARGS...]");
        std::process::exit(2);
    };
    let rest: Vec<OsString> = args.collect();
    std::process::exit(vnic::keeper::run(&PathBuf::from(program), &rest));
}
