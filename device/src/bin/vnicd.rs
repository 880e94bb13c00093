//! vnicd: the card. Serves a PF and VFs over vfio-user, one socket each.
//!
//! Started by a user, vnicd is a keeper (`vnic::keeper`) that runs the
//! card in a worker child, the same binary with the same arguments, and
//! restarts it if it dies; started by a keeper or by systemd (with
//! `NOTIFY_SOCKET`), or with `--no-keeper`, it is the card itself
//! (docs/restart.md).

use std::ffi::OsString;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Parser;
use log::error;

use vnic::card::{Card, CardConfig};
use vnic::control::api::CardFile;
use vnic::doorbell::PagePolicy;
use vnic::keeper;
use vnic::model::WorkerInfo;
use vnic::restart::{names, Restart};
use vnic::server::sockets::{parse_group, parse_mode};
use vnic::server::{Ended, Server, SocketAccess};
use vnic::uplink::{Uplink, UplinkSpec};

/// An emulated PCIe SR-IOV network card served over vfio-user.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    /// Directory for the function sockets (pf.sock, vf0.sock, ...). Created
    /// mode 0700 if missing (0710 if the sockets' group may connect); an
    /// existing directory keeps its permissions.
    #[arg(long)]
    socket_dir: PathBuf,
    /// Mode of the function sockets, in octal; connecting needs write
    /// permission [default: 0600, only vnicd's user; 0660 with
    /// --socket-group]. The control socket is always 0600.
    #[arg(long, value_name = "MODE", value_parser = parse_mode)]
    socket_mode: Option<u32>,
    /// Group (name or number) of the function sockets and of the socket
    /// directory vnicd creates, e.g. the group QEMU runs as under libvirt.
    /// vnicd's user must be a member (or root).
    #[arg(long, value_name = "GROUP", value_parser = parse_group)]
    socket_group: Option<u32>,
    /// Number of VFs (SR-IOV TotalVFs and NumVFs) [default: 4, or the
    /// configuration file's].
    #[arg(long)]
    vfs: Option<u16>,
    /// X: maximum queue pairs per function [default: 8, or the
    /// configuration file's].
    #[arg(long)]
    queue_pairs: Option<u32>,
    /// N: queue pairs (vNICs) enabled on each VF at start (a configuration
    /// file may then change it per VF).
    #[arg(long, default_value_t = 2)]
    vnics_per_vf: u32,
    /// Card number, used in default MAC addresses (two vnicd "hosts")
    /// [default: 0, or the configuration file's].
    #[arg(long)]
    card_id: Option<u8>,
    /// Control socket [default: SOCKET_DIR/control.sock].
    #[arg(long)]
    control: Option<PathBuf>,
    /// Configuration file (JSON, docs/management.md) applied at start.
    #[arg(long)]
    config: Option<PathBuf>,
    /// The card's physical port: none, tap:NAME (a TAP device) or
    /// udp:LOCAL_IP:PORT,REMOTE_IP:PORT (a wire to another vnicd)
    /// (docs/vxlan.md).
    #[arg(long, default_value = "none", value_name = "BACKEND")]
    uplink: UplinkSpec,
    /// VxLAN tunnel IDs, and as many MAC entries [default: 1024, or the
    /// configuration file's].
    #[arg(long, value_name = "N")]
    vxlan_capacity: Option<u32>,
    /// Extra unicast addresses (a macvlan's, a second MAC) an untrusted
    /// VF's driver may add over all its vNICs; trusted VFs and the PF have
    /// no limit but the card's 256 per vNIC [default: 16, or the
    /// configuration file's].
    #[arg(long, value_name = "N")]
    vf_max_addrs: Option<u32>,
    /// Give every function a doorbell page in BAR0: its last page, mmapped
    /// by QEMU, where a driver stores its doorbells without a message
    /// (docs/registers.md, "Doorbell pages"). QEMU then sends every other
    /// BAR write non-posted. Without it a driver may still name a page of
    /// its own memory (interface 1.4), which needs nothing from QEMU.
    #[arg(long)]
    doorbell_page: bool,
    /// The port's nominal speed in Mb/s: what `ethtool DEV` shows in the
    /// guest (LINK_SPEED), or a function's TX rate limit if that is lower.
    #[arg(long, value_name = "MBPS", default_value_t = vnic::card::DEFAULT_LINK_SPEED)]
    link_speed: u32,
    /// µs between two polls of a busy queue pair's doorbell slot.
    #[arg(long, value_name = "US", default_value_t = 20)]
    doorbell_poll_us: u64,
    /// µs without a doorbell after which the card stops polling a queue
    /// pair's slot and the driver rings the register again.
    #[arg(long, value_name = "US", default_value_t = 1000)]
    doorbell_idle_us: u64,
    /// ms a control client may go without completing its first request,
    /// or without taking any of its waiting answers, before it is closed
    /// [default: 30000]. For tests.
    #[arg(long, value_name = "MS", hide = true)]
    control_timeout_ms: Option<u64>,
    /// Serve the card in this process, without a keeper to restart it
    /// (what a worker is; for debugging).
    #[arg(long, hide = true)]
    no_keeper: bool,
}

/// A `vnicd: ...` line on stdout. A restarted worker prints them again,
/// possibly to a stdout nobody reads any more (a script that waited for
/// the first ready line and closed the pipe): that is no reason to fail.
fn say(what: std::fmt::Arguments<'_>) {
    use std::io::Write;
    let _ = writeln!(io::stdout(), "vnicd: {what}");
}

/// Reads and parses a configuration file.
fn read_config(path: &std::path::Path) -> Result<CardFile, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

/// SIGINT and SIGTERM (stop), SIGUSR1 and SIGUSR2 (a keeper's answers to
/// a hand-over, docs/restart.md), blocked and read from a signalfd by the
/// event loop.
fn stop_signals() -> io::Result<OwnedFd> {
    keeper::signal_fd(&[libc::SIGINT, libc::SIGTERM, libc::SIGUSR1, libc::SIGUSR2])
}

fn main() -> ExitCode {
    let start = Instant::now();
    let program = std::env::current_exe();
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    // Parsed in the keeper too, so that --help, --version and bad options
    // answer at once and never start a worker.
    let args = Args::parse();
    if args.no_keeper || keeper::is_worker() {
        return serve(args, start);
    }
    let program = match program {
        Ok(p) => p,
        Err(e) => {
            error!("cannot find vnicd's own binary: {e}");
            return ExitCode::FAILURE;
        }
    };
    let args: Vec<OsString> = std::env::args_os().skip(1).collect();
    let code = keeper::run(&program, &args);
    ExitCode::from(u8::try_from(code).unwrap_or(1))
}

/// The worker: builds the card from `args` and serves it until SIGINT or
/// SIGTERM.
fn serve(args: Args, start: Instant) -> ExitCode {
    // SAFETY: no other thread exists yet.
    let (mut restart, previous) = match unsafe { Restart::open() } {
        Ok(r) => r,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    // A worker taking over applies the record's settings, which are newer
    // than the file's (docs/restart.md).
    let file = match &previous {
        Some(rec) => Ok(Some(rec.card.clone())),
        None => args.config.as_deref().map(read_config).transpose(),
    };
    let file = match file {
        Ok(f) => f,
        Err(e) => {
            error!("configuration {e}");
            return ExitCode::from(2);
        }
    };
    let settings = file.as_ref().and_then(|f| f.card);
    let defaults = CardConfig::default();
    let config = CardConfig {
        vfs: args.vfs.or(settings.map(|s| s.vfs)).unwrap_or(defaults.vfs),
        queue_pairs: args
            .queue_pairs
            .or(settings.map(|s| s.queue_pairs))
            .unwrap_or(defaults.queue_pairs),
        vnics_per_vf: args.vnics_per_vf,
        card_id: args
            .card_id
            .or(settings.map(|s| s.card_id))
            .unwrap_or(defaults.card_id),
        vxlan_capacity: args
            .vxlan_capacity
            .or(settings.map(|s| s.vxlan_capacity))
            .unwrap_or(defaults.vxlan_capacity),
        vf_max_addrs: args
            .vf_max_addrs
            .or(settings.map(|s| s.vf_max_addrs))
            .unwrap_or(defaults.vf_max_addrs),
        doorbell_page: args.doorbell_page,
        doorbell_policy: PagePolicy {
            poll: Duration::from_micros(args.doorbell_poll_us.max(1)),
            idle: Duration::from_micros(args.doorbell_idle_us),
        },
        link_speed: args.link_speed,
    };
    let mut card = match Card::new(config) {
        Ok(c) => c,
        Err(e) => {
            error!("{e}");
            return ExitCode::from(2);
        }
    };
    card.set_worker(WorkerInfo {
        pid: std::process::id(),
        restarts: restart.restarts,
        last_exit: restart.last_exit.clone(),
        kept: restart.keeping(),
        keeper: restart.keeping() && std::env::var_os("VNICD_KEEPER").is_some(),
        succession_failed: None,
    });
    let uplink = match restart.adopt(names::UPLINK) {
        Some(fd) => Uplink::adopt(&args.uplink, fd),
        None => Uplink::open(&args.uplink).inspect(|u| {
            if let Some(fd) = u.descriptor() {
                restart.keep_one(names::UPLINK, fd);
            }
        }),
    };
    match uplink {
        Ok(uplink) => card.set_uplink(uplink),
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(mut file) = file {
        // Command-line options win over the file's card settings; a
        // record's must be this card's.
        if previous.is_none() {
            file.card = None;
        }
        if let Err(e) = card.apply(&file) {
            let what = if previous.is_some() {
                "the state record's settings"
            } else {
                "configuration"
            };
            error!("{what} refused: {e}");
            return ExitCode::from(2);
        }
        card.take_events();
    }
    if let Some(rec) = &previous {
        // The counters and the VxLAN tables the last worker had.
        rec.state.restore(&mut card);
    }
    let stop = match stop_signals() {
        Ok(fd) => fd,
        Err(e) => {
            error!("cannot set up signal handling: {e}");
            return ExitCode::FAILURE;
        }
    };
    let vfs = card.config().vfs;
    let queue_pairs = card.config().queue_pairs;
    let access = SocketAccess::new(args.socket_mode, args.socket_group);
    let control = args.control.as_deref();
    let mut server = match Server::start(card, &args.socket_dir, control, access, restart, previous)
    {
        Ok(s) => s,
        Err(e) => {
            error!("{e}");
            return ExitCode::FAILURE;
        }
    };
    if let Some(ms) = args.control_timeout_ms {
        server.set_control_timeout(Duration::from_millis(ms));
    }
    for (name, path) in server.sockets() {
        say(format_args!("{name} {}", path.display()));
    }
    say(format_args!("control {}", server.control_path().display()));
    say(format_args!("uplink {}", args.uplink));
    let ready = format!(
        "ready (1 PF, {vfs} VFs, {queue_pairs} queue pairs max) in {} ms",
        start.elapsed().as_millis()
    );
    say(format_args!("{ready}"));
    server.ready(&ready);
    match server.run(stop.as_raw_fd()) {
        // The successor serves the sockets and the clients: leave without
        // tearing anything down.
        Ok(Ended::HandedOver) => std::process::exit(0),
        Ok(Ended::Stopped) => ExitCode::SUCCESS,
        Err(e) => {
            error!("{e}");
            ExitCode::FAILURE
        }
    }
}
