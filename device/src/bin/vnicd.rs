//! vnicd: the card. Serves a PF and VFs over vfio-user, one socket each.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::Parser;
use log::error;

use vnic::card::{Card, CardConfig};
use vnic::server::Server;

/// An emulated PCIe SR-IOV network card served over vfio-user.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory for the function sockets (pf.sock, vf0.sock, ...).
    #[arg(long)]
    socket_dir: PathBuf,
    /// Number of VFs (SR-IOV TotalVFs and NumVFs).
    #[arg(long, default_value_t = 4)]
    vfs: u16,
    /// X: maximum queue pairs per function.
    #[arg(long, default_value_t = 8)]
    queue_pairs: u32,
    /// N: queue pairs (vNICs) enabled on each VF at start.
    #[arg(long, default_value_t = 2)]
    vnics_per_vf: u32,
    /// Card number, used in default MAC addresses (two vnicd "hosts").
    #[arg(long, default_value_t = 0)]
    card_id: u8,
}

/// Blocks SIGINT and SIGTERM and returns a signalfd that becomes readable
/// when one arrives, so the event loop handles shutdown like any other event.
fn stop_signals() -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it,
    // sigprocmask and signalfd only read it. Called before any thread exists.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args = Args::parse();
    let start = Instant::now();
    let config = CardConfig {
        vfs: args.vfs,
        queue_pairs: args.queue_pairs,
        vnics_per_vf: args.vnics_per_vf,
        card_id: args.card_id,
    };
    let card = match Card::new(config) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    let stop = match stop_signals() {
        Ok(fd) => fd,
        Err(e) => {
            error!("cannot set up signal handling: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut server = match Server::new(card, &args.socket_dir) {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    for (name, path) in server.sockets() {
        println!("vnicd: {name} {}", path.display());
    }
    println!(
        "vnicd: ready (1 PF, {} VFs, {} queue pairs max) in {} ms",
        args.vfs,
        args.queue_pairs,
        start.elapsed().as_millis()
    );
    match server.run(stop.as_raw_fd()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
