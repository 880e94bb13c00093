//! vnicctl: the command-line client of vnicd's control socket
//! (docs/management.md, "vnicctl").
//!
//! One command is one request: connect, write one JSON line
//! ([`api::Request`]), read one JSON line ([`api::Response`]), print the
//! result. `events` keeps its connection and prints the card's events until
//! vnicd closes it. The request and answer types are vnicd's own
//! ([`vnic::control::api`]), so the two cannot drift apart.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};
use serde::de::DeserializeOwned;
use serde_json::Value;

use vnic::control::api::{
    self, CaptureInfo, CardFile, FdbEntry, FilterInfo, FunctionInfo, MigrateAction, MigrationInfo,
    MigrationState, QuiesceInfo, Request, Response, StatsInfo, VctInfo, VnicInfo, VxlanAddInfo,
    VxlanListInfo,
};
use vnic::model::{self, Event, GuestAddr, Mac, RatePolicy, SuccessionInfo, WorkerInfo};

/// How long connecting, and then an ordinary request's answer, may take
/// unless `--timeout` says otherwise. The card answers between two turns of
/// its data path, so this only bounds a vnicd that has stopped serving, or
/// a socket that is not vnicd's control socket; `events` waits without a
/// bound once subscribed.
const DEFAULT_TIMEOUT_SECS: f64 = 10.0;

/// Longest answer line read: an export or stats of a big card is far
/// smaller, and a broken peer must not make vnicctl grow without bound.
const MAX_ANSWER_BYTES: u64 = 64 * 1024 * 1024;

/// Manage a vnicd card through its control socket.
#[derive(Parser, Debug)]
#[command(
    name = "vnicctl",
    version,
    after_help = "FUNCTION is pf, vf0, vf1, ...; VNIC is a queue-pair number of \
                  that function; MAC is like 02:76:6e:00:01:00; VLAN 0 means \
                  untagged.\n\n\
                  Exit status: 0 success, 1 the card refused the request, \
                  2 usage error or bad local file, 3 control socket \
                  unreachable or protocol error."
)]
struct Cli {
    /// vnicd's control socket [default: $VNICCTL_CONTROL].
    #[arg(long, global = true, value_name = "PATH")]
    control: Option<PathBuf>,
    /// Print the card's answer (its `result`) as JSON instead of text.
    #[arg(long, global = true)]
    json: bool,
    /// Seconds to wait for the connection, and then for the answer,
    /// before giving up (exit status 3).
    #[arg(long, global = true, value_name = "SECONDS", default_value_t = DEFAULT_TIMEOUT_SECS,
          value_parser = parse_timeout)]
    timeout: f64,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Every function: enabled, attached, vNICs, link, policies.
    List,
    /// One function in detail, with its vNICs' queue states.
    Show { function: String },
    /// Enables VFs 0..COUNT and disables the others (SR-IOV NumVFs).
    Vfs { count: u16 },
    /// Sets the number of vNICs (queue pairs) of a VF.
    Vnics { function: String, count: u32 },
    /// Sets a vNIC's MAC address and/or port VLAN (0: none).
    #[command(group(ArgGroup::new("change").required(true).multiple(true).args(["mac", "vlan"])))]
    Vnic {
        function: String,
        vnic: u16,
        #[arg(long)]
        mac: Option<Mac>,
        #[arg(long)]
        vlan: Option<u16>,
    },
    /// Static forwarding entries.
    #[command(subcommand)]
    Fdb(FdbCommand),
    /// Sets or clears a function's rate policy in one direction.
    Rate(RateArgs),
    /// Turns a function's spoof check on or off.
    SpoofCheck { function: String, state: OnOff },
    /// Lets a function's driver change its MACs (on) or not (off).
    Trust { function: String, state: OnOff },
    /// Sets a function's administrative link state.
    Link { function: String, state: LinkArg },
    /// Card, function and vNIC counters (one function if given).
    Stats { function: Option<String> },
    /// pcap capture of the frames entering the switch (or crossing the
    /// uplink).
    #[command(subcommand)]
    Capture(CaptureCommand),
    /// Writes the card's configuration as JSON to FILE (or stdout).
    Export { file: Option<PathBuf> },
    /// Applies a configuration file (the schema `export` writes).
    Apply { file: PathBuf },
    /// Prints the card's events as they happen, until vnicd closes.
    Events,
    /// Stops a function's queues (all functions if none is given) at a
    /// frame boundary and writes their contexts to guest memory.
    Quiesce { function: Option<String> },
    /// Ends a quiesce.
    Resume { function: Option<String> },
    /// Hands the card over to a new worker from the same binary, under
    /// running guests, and waits until it serves (docs/restart.md).
    Restart,
    /// Hands the card over to a new worker from the vnicd binary at PATH
    /// (an upgrade), and waits until it serves; if it fails to start, the
    /// old worker serves on and this exits 1.
    Upgrade { path: PathBuf },
    /// VCT entries (function -> BAT address in guest memory).
    #[command(subcommand)]
    Vct(VctCommand),
    /// Live migration of a function's guest (docs/migration.md, "Live
    /// migration").
    #[command(subcommand)]
    Migrate(MigrateCommand),
    /// Sets a VF's attribute: VxLAN with a VNI, or VLAN (docs/vxlan.md).
    Attr {
        function: String,
        #[command(subcommand)]
        attr: AttrCommand,
    },
    /// Sets the card's VTEP: outer source MAC and IPv4 address.
    Vtep {
        #[arg(long)]
        mac: Mac,
        #[arg(long)]
        ip: Ipv4Addr,
    },
    /// The card's VxLAN tables.
    #[command(subcommand)]
    Vxlan(VxlanCommand),
    /// Injects a fault into a function, clears them or shows them
    /// (docs/fault-injection.md).
    Fault {
        function: String,
        #[command(subcommand)]
        fault: FaultCommand,
    },
    /// Runs the host agent until SIGTERM/SIGINT: answers the card's
    /// vxlan-miss and vxlan-punt events (docs/vxlan.md), logs each
    /// decision on stderr, prints a summary on stdout when it stops.
    /// With --pf-netdev, over the PF's exception queue pair instead of the
    /// control socket.
    VxlanAgent {
        /// Static FDB entry: inner MAC -> remote VTEP IP; MAC
        /// 00:00:00:00:00:00 is the default (broadcast, multicast, unknown).
        #[arg(long, value_name = "MAC=IP")]
        fdb: Vec<vnic::agent::FdbArg>,
        /// Static neighbour: IP -> next-hop MAC.
        #[arg(long, value_name = "IP=MAC")]
        neigh: Vec<vnic::agent::NeighArg>,
        /// a: the card encapsulates a missed frame (vxlan-send); b: the
        /// agent does and sends it with uplink-send.
        #[arg(long, default_value = "a")]
        variant: vnic::agent::Variant,
        /// Serve the card's requests over the PF's exception queue pair:
        /// NAME is its netdev (vnic.ko's, up), in the guest that has the
        /// PF; no control socket is used.
        #[arg(long, value_name = "NAME")]
        pf_netdev: Option<String>,
    },
    /// Prints configuration FILE with the functions of each pair swapped
    /// (e.g. vf0=vf2), for restoring a guest onto another VF. Local: needs
    /// no socket.
    Remap {
        file: PathBuf,
        #[arg(required = true, value_name = "VFa=VFb")]
        pairs: Vec<String>,
    },
}

#[derive(Subcommand, Debug)]
enum AttrCommand {
    /// VxLAN: the VF's vNICs join VNI's segment (1..=16777215).
    Vxlan { vni: u32 },
    /// VLAN (the default attribute); ID, if given, becomes the port VLAN
    /// of all the VF's vNICs (0: untagged).
    Vlan { id: Option<u16> },
}

#[derive(Subcommand, Debug)]
enum VxlanCommand {
    /// The VTEP, the tunnels and the MAC entries, with usage counters.
    List,
    /// Installs VNI+MAC -> tunnel to REMOTE_IP via next hop REMOTE_MAC.
    Add {
        vni: u32,
        mac: Mac,
        remote_ip: Ipv4Addr,
        remote_mac: Mac,
    },
    /// Removes the entry for VNI+MAC.
    Del { vni: u32, mac: Mac },
}

#[derive(Subcommand, Debug)]
enum VctCommand {
    /// Gives FUNCTION the VCT entry ADDRESS (hex with 0x, or decimal; 0
    /// clears it). It is committed when the guest has mapped memory and
    /// enabled bus mastering.
    Set {
        function: String,
        address: GuestAddr,
    },
}

#[derive(Subcommand, Debug)]
enum MigrateCommand {
    /// Puts FUNCTION in migration mode: every write the card makes into
    /// its guest's memory goes through QEMU (vfio-user DMA_WRITE), whose
    /// dirty log then sees it.
    Begin { function: String },
    /// The switchover (QEMU paused in pre-switchover): quiesces FUNCTION,
    /// writes its queue contexts back through QEMU and waits (up to
    /// --timeout) until QEMU has made every write. The mode then ends and
    /// FUNCTION's addresses leave this card's switch.
    Switchover { function: String },
    /// Leaves migration mode (a cancelled migration); FUNCTION runs on.
    End { function: String },
    /// FUNCTION's migration state and counters.
    Status { function: String },
}

#[derive(Subcommand, Debug)]
enum FdbCommand {
    /// Adds a static entry: frames to MAC in VLAN go to FUNCTION's VNIC.
    Add {
        mac: Mac,
        #[arg(long, default_value_t = 0)]
        vlan: u16,
        function: String,
        vnic: u16,
    },
    /// Removes a static entry.
    Del {
        mac: Mac,
        #[arg(long, default_value_t = 0)]
        vlan: u16,
    },
    /// Every forwarding entry.
    List,
}

#[derive(Subcommand, Debug)]
enum CaptureCommand {
    /// Starts capturing to PATH (created by vnicd, so on its host).
    Start {
        path: PathBuf,
        /// Only the frames this function sends; `uplink`: only the
        /// frames leaving and entering the uplink.
        #[arg(long)]
        function: Option<String>,
    },
    /// Stops the capture.
    Stop,
}

#[derive(Args, Debug)]
struct RateArgs {
    function: String,
    direction: DirectionArg,
    /// Average rate, bits/s with k, M, G (powers of 1000), e.g. 20M.
    #[arg(long, value_name = "RATE", value_parser = parse_rate,
          required_unless_present = "clear")]
    avg: Option<u64>,
    /// Peak rate, like --avg (default: no peak limit).
    #[arg(long, value_name = "RATE", value_parser = parse_rate)]
    peak: Option<u64>,
    /// Burst, bytes with K, M (powers of 1024), e.g. 64K.
    #[arg(long, value_name = "SIZE", value_parser = parse_size,
          required_unless_present = "clear")]
    burst: Option<u64>,
    /// Removes the policy: no limit in this direction.
    #[arg(long, conflicts_with_all = ["avg", "peak", "burst"])]
    clear: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum OnOff {
    On,
    Off,
}

/// The command line's spelling of [`model::Direction`] (clap needs its own
/// enum; the wire type stays vnicd's).
#[derive(Clone, Copy, Debug, ValueEnum)]
enum DirectionArg {
    Tx,
    Rx,
}

/// `vnicctl fault FUNCTION ...`: one per [`api::Fault`], and clear/status.
#[derive(Subcommand, Debug)]
enum FaultCommand {
    /// The link goes down (STATUS.LINK_UP clear, IRQ_CAUSE.LINK).
    LinkDown,
    /// The link comes back (administrative state auto).
    LinkUp,
    /// The next COUNT frames sent (tx) or received (rx) are lost.
    DropFrames { direction: DirectionArg, count: u32 },
    /// The next COUNT frames in that direction get a byte flipped.
    CorruptFrames { direction: DirectionArg, count: u32 },
    /// The next COUNT send frames are never completed (no DONE).
    DropCompletions { count: u32 },
    /// Each of the next COUNT send frames is completed US µs late.
    DelayCompletions {
        #[arg(long)]
        us: u32,
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// The next COUNT MSI-X messages are not sent.
    DropIrqs { count: u32 },
    /// The next COUNT MSI-X messages are sent US µs late.
    DelayIrqs {
        #[arg(long)]
        us: u32,
        #[arg(long, default_value_t = 1)]
        count: u32,
    },
    /// The next COUNT buffer accesses in that direction fail (queue error
    /// DMA).
    FailDma {
        direction: DirectionArg,
        #[arg(default_value_t = 1)]
        count: u32,
    },
    /// Surprise removal: the function stops answering.
    Remove,
    /// The removed function answers again, reset.
    Reinsert,
    /// Disarms the counted faults.
    Clear,
    /// What is armed and what was injected so far.
    Status,
}

/// The command line's spelling of [`model::LinkState`].
#[derive(Clone, Copy, Debug, ValueEnum)]
enum LinkArg {
    Auto,
    Up,
    Down,
}

impl From<DirectionArg> for model::Direction {
    fn from(d: DirectionArg) -> Self {
        match d {
            DirectionArg::Tx => model::Direction::Tx,
            DirectionArg::Rx => model::Direction::Rx,
        }
    }
}

impl From<LinkArg> for model::LinkState {
    fn from(l: LinkArg) -> Self {
        match l {
            LinkArg::Auto => model::LinkState::Auto,
            LinkArg::Up => model::LinkState::Up,
            LinkArg::Down => model::LinkState::Down,
        }
    }
}

/// Why a command did not succeed; each kind has its exit status.
#[derive(Debug, thiserror::Error)]
enum Failure {
    /// The card refused the request (its message).
    #[error("{0}")]
    Refused(String),
    /// Bad input found before anything was sent, or a local file that
    /// cannot be read or written.
    #[error("{0}")]
    Local(String),
    /// The control socket cannot be reached, or its answer makes no sense.
    #[error("{0}")]
    Socket(String),
    /// Whoever reads our output has gone (`vnicctl events | head`): not
    /// worth a message.
    #[error("output closed")]
    OutputClosed,
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Refused(_) => 1,
            Failure::Local(_) => 2,
            Failure::Socket(_) => 3,
            Failure::OutputClosed => 0,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli, &mut io::stdout().lock()) {
        Ok(()) | Err(Failure::OutputClosed) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("vnicctl: {f}");
            ExitCode::from(f.exit_code())
        }
    }
}

/// Runs one command: everything local (arguments, files) is checked before
/// connecting, so bad input never reaches the card.
fn run(cli: &Cli, out: &mut dyn Write) -> Result<(), Failure> {
    if let Command::Remap { file, pairs } = &cli.command {
        return write_out(out, &remap(file, pairs)?);
    }
    if let Command::VxlanAgent {
        fdb,
        neigh,
        variant,
        pf_netdev: Some(netdev),
    } = &cli.command
    {
        return run_agent(Transport::PfNetdev(netdev), fdb, neigh, *variant, out);
    }
    let socket = control_path(cli.control.as_deref(), std::env::var_os("VNICCTL_CONTROL"))?;
    if let Command::VxlanAgent {
        fdb,
        neigh,
        variant,
        pf_netdev: None,
    } = &cli.command
    {
        return run_agent(Transport::Control(&socket), fdb, neigh, *variant, out);
    }
    let request = build_request(&cli.command)?;
    let mut conn = ControlConnection::open(&socket, Duration::from_secs_f64(cli.timeout))?;
    let result = conn.call(&request)?;
    if let Command::Events = cli.command {
        return print_events(&mut conn, cli.json, out);
    }
    if matches!(cli.command, Command::Restart | Command::Upgrade { .. }) {
        let timeout = Duration::from_secs_f64(cli.timeout);
        return wait_for_successor(&socket, result, timeout, out);
    }
    if let Command::Migrate(MigrateCommand::Switchover { function }) = &cli.command {
        let timeout = Duration::from_secs_f64(cli.timeout);
        let info = wait_for_switchover(&socket, function, result, timeout)?;
        let text = if cli.json {
            pretty(&serde_json::to_value(&info).unwrap_or_default())
        } else {
            migration_text(&info)
        };
        return write_out(out, &text);
    }
    let mut text = render(&cli.command, result, cli.json)?;
    if matches!(cli.command, Command::List) && !cli.json {
        // Under the table: the process serving the card (one request
        // per connection).
        let timeout = Duration::from_secs_f64(cli.timeout);
        let stats = ControlConnection::open(&socket, timeout)
            .and_then(|mut c| c.call(&Request::Stats { function: None }));
        if let Ok(StatsInfo {
            worker: Some(w), ..
        }) = stats.and_then(|s| typed::<StatsInfo>(s, "stats"))
        {
            text += &worker_text(&w);
        }
    }
    if let Command::Export { file: Some(file) } = &cli.command {
        return std::fs::write(file, text)
            .map_err(|e| Failure::Local(format!("cannot write {}: {e}", file.display())));
    }
    write_out(out, &text)
}

/// After `restart`/`upgrade`: asks the card (a new connection each time:
/// the old worker answers nothing while it waits) until another worker
/// serves it, or the old one reports the hand-over failed.
fn wait_for_successor(
    socket: &Path,
    reply: Value,
    timeout: Duration,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let info: SuccessionInfo = typed(reply, "restart")?;
    let started = Instant::now();
    let deadline = started + timeout;
    loop {
        std::thread::sleep(Duration::from_millis(20));
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Socket(format!(
                "no worker answered within {:.1} s; see vnicd's log",
                timeout.as_secs_f64()
            )));
        }
        let stats = ControlConnection::open(socket, left)
            .and_then(|mut c| c.call(&Request::Stats { function: None }));
        let Ok(stats) = stats else { continue };
        let Some(w) = typed::<StatsInfo>(stats, "stats")?.worker else {
            continue;
        };
        if w.pid != info.pid {
            return write_out(
                out,
                &format!(
                    "card worker {} handed over to {} ({}) in {} ms\n",
                    info.pid,
                    w.pid,
                    info.successor.display(),
                    started.elapsed().as_millis()
                ),
            );
        }
        if let Some(why) = w.succession_failed {
            return Err(Failure::Refused(format!(
                "hand-over to {} failed: {why}; worker {} serves on",
                info.successor.display(),
                info.pid
            )));
        }
    }
}

/// Where `vxlan-agent` takes the card's requests from.
enum Transport<'a> {
    /// vnicd's control socket.
    Control(&'a Path),
    /// The PF's exception queue pair, through its netdev.
    PfNetdev(&'a str),
}

/// `vxlan-agent`: the agent's loop until SIGTERM/SIGINT, then its summary.
fn run_agent(
    transport: Transport,
    fdb: &[vnic::agent::FdbArg],
    neigh: &[vnic::agent::NeighArg],
    variant: vnic::agent::Variant,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    let config = vnic::agent::Config {
        fdb: fdb.to_vec(),
        neigh: neigh.to_vec(),
        variant,
    };
    let stop = vnic::agent::stop_on_signals()
        .map_err(|e| Failure::Local(format!("cannot handle SIGTERM: {e}")))?;
    let mut agent = vnic::agent::Agent::new(&config);
    let ended = match transport {
        Transport::Control(socket) => vnic::agent::run(&mut agent, socket, stop, &mut io::stderr()),
        Transport::PfNetdev(netdev) => {
            vnic::agent::run_pf(&mut agent, netdev, stop, &mut io::stderr())
        }
    };
    write_out(out, &format!("{}\n", agent.summary()))?;
    match ended {
        Ok(()) => Ok(()),
        Err(vnic::agent::AgentError::Refused(e)) => Err(Failure::Refused(e)),
        Err(e) => Err(Failure::Socket(e.to_string())),
    }
}

/// `--control`, else `$VNICCTL_CONTROL` (an empty value counts as unset).
fn control_path(
    option: Option<&Path>,
    env: Option<std::ffi::OsString>,
) -> Result<PathBuf, Failure> {
    if let Some(p) = option {
        return Ok(p.to_path_buf());
    }
    match env {
        Some(v) if !v.is_empty() => Ok(PathBuf::from(v)),
        _ => Err(Failure::Local(
            "no control socket: give --control PATH or set VNICCTL_CONTROL".into(),
        )),
    }
}

// ------------------------------------------------------------ requests

/// The request a command sends.
fn build_request(command: &Command) -> Result<Request, Failure> {
    Ok(match command {
        Command::List => Request::List {},
        Command::Show { function } => Request::Show {
            function: function.clone(),
        },
        Command::Vfs { count } => Request::SetNumVfs { count: *count },
        Command::Vnics { function, count } => Request::SetVnics {
            function: function.clone(),
            count: *count,
        },
        Command::Vnic {
            function,
            vnic,
            mac,
            vlan,
        } => Request::SetVnic {
            function: function.clone(),
            vnic: *vnic,
            mac: *mac,
            vlan: *vlan,
        },
        Command::Fdb(fdb) => fdb_request(fdb),
        Command::Rate(rate) => rate_request(rate),
        Command::SpoofCheck { function, state } => Request::SetSpoofCheck {
            function: function.clone(),
            on: matches!(state, OnOff::On),
        },
        Command::Trust { function, state } => Request::SetTrust {
            function: function.clone(),
            on: matches!(state, OnOff::On),
        },
        Command::Link { function, state } => Request::SetLink {
            function: function.clone(),
            state: (*state).into(),
        },
        Command::Stats { function } => Request::Stats {
            function: function.clone(),
        },
        Command::Capture(capture) => capture_request(capture)?,
        Command::Export { .. } => Request::Export {},
        Command::Apply { file } => Request::Apply {
            config: Box::new(read_card_file(file)?),
        },
        Command::Events => Request::Subscribe {},
        Command::Quiesce { function } => Request::Quiesce {
            function: function.clone(),
        },
        Command::Resume { function } => Request::Resume {
            function: function.clone(),
        },
        Command::Restart => Request::Restart {},
        Command::Upgrade { path } => Request::Upgrade {
            path: std::path::absolute(path)
                .map_err(|e| Failure::Local(format!("{}: {e}", path.display())))?,
        },
        Command::Migrate(m) => {
            let (function, action) = match m {
                MigrateCommand::Begin { function } => (function, MigrateAction::Begin),
                MigrateCommand::Switchover { function } => (function, MigrateAction::Switchover),
                MigrateCommand::End { function } => (function, MigrateAction::End),
                MigrateCommand::Status { function } => (function, MigrateAction::Status),
            };
            Request::Migrate {
                function: function.clone(),
                action,
            }
        }
        Command::Vct(VctCommand::Set { function, address }) => Request::VctSet {
            function: function.clone(),
            address: *address,
        },
        Command::Attr { function, attr } => {
            let (vni, vlan) = match attr {
                AttrCommand::Vxlan { vni } => (Some(*vni), None),
                AttrCommand::Vlan { id } => (None, *id),
            };
            Request::SetAttr {
                function: function.clone(),
                vni,
                vlan,
            }
        }
        Command::Vtep { mac, ip } => Request::SetVtep { mac: *mac, ip: *ip },
        Command::Vxlan(v) => vxlan_request(v),
        Command::Fault { function, fault } => fault_request(function, fault),
        Command::Remap { .. } => unreachable!("remap is local"),
        Command::VxlanAgent { .. } => unreachable!("the agent is a loop, not a request"),
    })
}

fn fault_request(function: &str, command: &FaultCommand) -> Request {
    let function = function.to_string();
    let fault = match *command {
        FaultCommand::Clear => return Request::FaultClear { function },
        FaultCommand::Status => return Request::FaultStatus { function },
        FaultCommand::LinkDown => api::Fault::LinkDown {},
        FaultCommand::LinkUp => api::Fault::LinkUp {},
        FaultCommand::DropFrames { direction, count } => api::Fault::DropFrames {
            direction: direction.into(),
            count,
        },
        FaultCommand::CorruptFrames { direction, count } => api::Fault::CorruptFrames {
            direction: direction.into(),
            count,
        },
        FaultCommand::DropCompletions { count } => api::Fault::DropCompletions { count },
        FaultCommand::DelayCompletions { us, count } => api::Fault::DelayCompletions { us, count },
        FaultCommand::DropIrqs { count } => api::Fault::DropIrqs { count },
        FaultCommand::DelayIrqs { us, count } => api::Fault::DelayIrqs { us, count },
        FaultCommand::FailDma { direction, count } => api::Fault::FailDma {
            direction: direction.into(),
            count,
        },
        FaultCommand::Remove => api::Fault::Remove {},
        FaultCommand::Reinsert => api::Fault::Reinsert {},
    };
    Request::FaultInject { function, fault }
}

fn vxlan_request(v: &VxlanCommand) -> Request {
    match v {
        VxlanCommand::List => Request::VxlanList {},
        VxlanCommand::Add {
            vni,
            mac,
            remote_ip,
            remote_mac,
        } => Request::VxlanAdd {
            vni: *vni,
            mac: *mac,
            remote_ip: *remote_ip,
            remote_mac: *remote_mac,
        },
        VxlanCommand::Del { vni, mac } => Request::VxlanDel {
            vni: *vni,
            mac: *mac,
        },
    }
}

/// `remap`: the file with the pairs' functions swapped, as JSON.
fn remap(file: &Path, pairs: &[String]) -> Result<String, Failure> {
    let pairs = pairs
        .iter()
        .map(|p| match p.split_once('=') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => Err(Failure::Local(format!("{p}: want VFa=VFb, e.g. vf0=vf2"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    let mut config = read_card_file(file)?;
    config.remap(&pairs).map_err(Failure::Local)?;
    Ok(pretty(
        &serde_json::to_value(config).expect("config serialises"),
    ))
}

fn fdb_request(fdb: &FdbCommand) -> Request {
    match fdb {
        FdbCommand::Add {
            mac,
            vlan,
            function,
            vnic,
        } => Request::FdbAdd {
            mac: *mac,
            vlan: *vlan,
            function: function.clone(),
            vnic: *vnic,
        },
        FdbCommand::Del { mac, vlan } => Request::FdbDel {
            mac: *mac,
            vlan: *vlan,
        },
        FdbCommand::List => Request::FdbList {},
    }
}

/// clap has already made sure that `--clear` comes alone and that
/// `--avg` and `--burst` come without it.
fn rate_request(rate: &RateArgs) -> Request {
    let policy = match (rate.avg, rate.burst) {
        (Some(avg_kbps), Some(burst_bytes)) if !rate.clear => Some(RatePolicy {
            avg_kbps,
            peak_kbps: rate.peak.unwrap_or(0),
            burst_bytes,
        }),
        _ => None,
    };
    Request::SetRate {
        function: rate.function.clone(),
        direction: rate.direction.into(),
        policy,
    }
}

/// vnicd creates the file from its own working directory, so a relative
/// path is made absolute here, where the user meant it.
fn capture_request(capture: &CaptureCommand) -> Result<Request, Failure> {
    Ok(match capture {
        CaptureCommand::Start { path, function } => Request::CaptureStart {
            path: std::path::absolute(path)
                .map_err(|e| Failure::Local(format!("{}: {e}", path.display())))?,
            function: function.clone(),
        },
        CaptureCommand::Stop => Request::CaptureStop {},
    })
}

/// Reads and checks a configuration file here, so a typo is reported with
/// its line and column instead of as the card's refusal of the request.
fn read_card_file(path: &Path) -> Result<CardFile, Failure> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| Failure::Local(format!("cannot read {}: {e}", path.display())))?;
    parse_card_file(&text).map_err(|e| Failure::Local(format!("{}: {e}", path.display())))
}

/// A configuration file, or why not as "line L, column C: what".
fn parse_card_file(text: &str) -> Result<CardFile, String> {
    serde_json::from_str(text).map_err(|e| {
        // serde_json appends " at line L column C"; say it first instead.
        let what = e.to_string();
        let what = what.split(" at line ").next().unwrap_or(&what).to_string();
        format!("line {}, column {}: {what}", e.line(), e.column())
    })
}

// ------------------------------------------------------------ suffixes

/// A rate in bits/s with an optional suffix k, M or G (powers of 1000),
/// as kbit/s, the unit of [`RatePolicy`]; decimals are fine ("1.5M") as long
/// as the result is a whole number of kbit/s.
fn parse_rate(text: &str) -> Result<u64, String> {
    const UNITS: &[(char, u64)] = &[
        ('k', 1_000),
        ('K', 1_000),
        ('M', 1_000_000),
        ('G', 1_000_000_000),
    ];
    parse_scaled(text, UNITS, 1_000, "kbit/s", "k, M or G")
}

/// A size in bytes with an optional suffix K or M (powers of 1024).
fn parse_size(text: &str) -> Result<u64, String> {
    const UNITS: &[(char, u64)] = &[('K', 1 << 10), ('k', 1 << 10), ('M', 1 << 20)];
    parse_scaled(text, UNITS, 1, "bytes", "K or M")
}

/// `text` is a decimal number and an optional suffix from `units`; returns
/// its value divided by `per`, which must leave no remainder. Integer
/// arithmetic throughout, so "1.5M" is exact.
fn parse_scaled(
    text: &str,
    units: &[(char, u64)],
    per: u64,
    unit_name: &str,
    suffixes: &str,
) -> Result<u64, String> {
    let (number, scale) = match text.chars().last() {
        Some(c) if c.is_ascii_alphabetic() => {
            let scale = units.iter().find(|(u, _)| *u == c).map(|(_, s)| *s);
            let scale = scale
                .ok_or_else(|| format!("unknown suffix '{c}' in '{text}' (use {suffixes})"))?;
            (&text[..text.len() - 1], scale)
        }
        _ => (text, 1),
    };
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !digits(whole) || (number.contains('.') && !digits(fraction)) {
        return Err(format!(
            "'{text}' is not a number with an optional suffix {suffixes}"
        ));
    }
    let too_big = || format!("'{text}' is too large");
    let denominator = 10u128
        .checked_pow(fraction.len() as u32)
        .ok_or_else(too_big)?;
    let mantissa: u128 = format!("{whole}{fraction}")
        .parse()
        .map_err(|_| too_big())?;
    let scaled = mantissa.checked_mul(scale as u128).ok_or_else(too_big)?;
    let divisor = denominator * per as u128;
    if scaled % divisor != 0 {
        return Err(format!("'{text}' is not a whole number of {unit_name}"));
    }
    u64::try_from(scaled / divisor).map_err(|_| too_big())
}

// ------------------------------------------------------------ socket

/// One connection to the control socket.
struct ControlConnection {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    /// The socket, for messages.
    path: PathBuf,
    /// How long an answer may take.
    timeout: Duration,
}

/// Connects to the UNIX socket at `path`, giving up after `timeout`. A
/// connect only waits when the listener's backlog is full (a vnicd that is
/// stopped, not serving); the attempt then goes on in a thread of its own,
/// which ends with the process.
fn connect_within(path: &Path, timeout: Duration) -> Result<UnixStream, Failure> {
    let (tx, rx) = std::sync::mpsc::channel();
    let target = path.to_path_buf();
    std::thread::spawn(move || {
        let _ = tx.send(UnixStream::connect(target));
    });
    match rx.recv_timeout(timeout) {
        Ok(Ok(stream)) => Ok(stream),
        Ok(Err(e)) => Err(Failure::Socket(format!(
            "cannot connect to {}: {e}",
            path.display()
        ))),
        Err(_) => Err(Failure::Socket(format!(
            "cannot connect to {}: no connection within {} (is vnicd stopped?)",
            path.display(),
            seconds(timeout)
        ))),
    }
}

/// `d` for a message: "10 s", "0.5 s".
fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

/// Parses `--timeout`: positive seconds, fractions allowed.
fn parse_timeout(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(s) if s > 0.0 && s <= 86_400.0 => Ok(s),
        _ => Err(format!("'{text}' is not a number of seconds in (0, 86400]")),
    }
}

impl ControlConnection {
    /// Connects to `path`, waiting at most `timeout` for the connection
    /// and then for each answer.
    fn open(path: &Path, timeout: Duration) -> Result<ControlConnection, Failure> {
        let stream = connect_within(path, timeout)?;
        let io_error = |e: io::Error| Failure::Socket(format!("control socket: {e}"));
        stream.set_read_timeout(Some(timeout)).map_err(io_error)?;
        stream.set_write_timeout(Some(timeout)).map_err(io_error)?;
        let writer = stream.try_clone().map_err(io_error)?;
        Ok(ControlConnection {
            reader: BufReader::new(stream),
            writer,
            path: path.to_path_buf(),
            timeout,
        })
    }

    /// Sends `request` and returns its result (`null` if it has none).
    fn call(&mut self, request: &Request) -> Result<Value, Failure> {
        let mut line = serde_json::to_string(request).expect("requests serialize");
        line.push('\n');
        if let Err(e) = self.writer.write_all(line.as_bytes()) {
            // vnicd may have turned the connection away (no free slot) and
            // said why before closing: that beats "Broken pipe".
            return Err(
                match self.read_line().ok().flatten().map(|l| answer_result(&l)) {
                    Some(Err(refused @ Failure::Refused(_))) => refused,
                    _ => Failure::Socket(format!("cannot send the request: {e}")),
                },
            );
        }
        let answer = self.read_line()?.ok_or_else(|| {
            Failure::Socket("vnicd closed the connection without answering".into())
        })?;
        answer_result(&answer)
    }

    /// The next line without its newline; `None` at a clean end.
    fn read_line(&mut self) -> Result<Option<String>, Failure> {
        let mut line = String::new();
        let n = (&mut self.reader)
            .take(MAX_ANSWER_BYTES)
            .read_line(&mut line)
            .map_err(|e| match e.kind() {
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Failure::Socket(format!(
                    "no answer from {} within {}: is it vnicd's control socket (control.sock \
                     in vnicd's socket directory, or its --control path)? (--timeout changes \
                     the wait)",
                    self.path.display(),
                    seconds(self.timeout)
                )),
                io::ErrorKind::InvalidData => Failure::Socket(format!(
                    "{} is not vnicd's control socket: its answer is not text",
                    self.path.display()
                )),
                _ => Failure::Socket(format!("reading the answer: {e}")),
            })?;
        if n == 0 {
            return Ok(None);
        }
        if !line.ends_with('\n') {
            return Err(Failure::Socket(
                "protocol error: the answer ended in the middle of a line".into(),
            ));
        }
        line.pop();
        Ok(Some(line))
    }
}

/// An answer line's result, or the card's refusal.
fn answer_result(line: &str) -> Result<Value, Failure> {
    let answer: Response = serde_json::from_str(line).map_err(|e| {
        Failure::Socket(format!(
            "protocol error: not an answer of vnicd's control socket ({e}): {line}"
        ))
    })?;
    match answer {
        Response {
            ok: true, result, ..
        } => Ok(result.unwrap_or(Value::Null)),
        Response {
            error: Some(error), ..
        } => Err(Failure::Refused(error)),
        Response { error: None, .. } => Err(Failure::Refused(
            "the card refused the request without saying why".into(),
        )),
    }
}

/// After the `subscribe` answer: each event line as it comes, until EOF.
/// The wait is unbounded: events come when something happens.
fn print_events(
    conn: &mut ControlConnection,
    json: bool,
    out: &mut dyn Write,
) -> Result<(), Failure> {
    conn.reader
        .get_ref()
        .set_read_timeout(None)
        .map_err(|e| Failure::Socket(format!("control socket: {e}")))?;
    while let Some(line) = conn.read_line()? {
        let text = if json { line } else { event_line(&line) };
        write_out(out, &format!("{text}\n"))?;
        out.flush().map_err(output_error)?;
    }
    Ok(())
}

fn write_out(out: &mut dyn Write, text: &str) -> Result<(), Failure> {
    out.write_all(text.as_bytes()).map_err(output_error)
}

fn output_error(e: io::Error) -> Failure {
    if e.kind() == io::ErrorKind::BrokenPipe {
        Failure::OutputClosed
    } else {
        Failure::Local(format!("cannot write the output: {e}"))
    }
}

// ------------------------------------------------------------ output

/// What a command prints for `result`. `export` is JSON either way (it is
/// a configuration file).
fn render(command: &Command, result: Value, json: bool) -> Result<String, Failure> {
    if json || matches!(command, Command::Export { .. }) {
        return Ok(pretty(&result));
    }
    Ok(match command {
        Command::List => list_text(&typed::<Vec<FunctionInfo>>(result, "list")?),
        Command::Show { .. } => show_text(&typed(result, "show")?),
        Command::Fdb(FdbCommand::List) => fdb_text(&typed::<Vec<FdbEntry>>(result, "fdb list")?),
        Command::Stats { .. } => stats_text(&typed(result, "stats")?),
        Command::Capture(CaptureCommand::Stop) => capture_stopped_text(result),
        Command::Vct(_) => vct_set_text(&typed(result, "vct set")?),
        Command::Migrate(_) => migration_text(&typed(result, "migrate")?),
        Command::Vxlan(VxlanCommand::List) => vxlan_list_text(&typed(result, "vxlan list")?),
        Command::Vxlan(VxlanCommand::Add { .. }) => vxlan_add_text(&typed(result, "vxlan add")?),
        Command::Quiesce { .. } => typed::<Vec<QuiesceInfo>>(result, "quiesce")?
            .iter()
            .map(|q| {
                format!(
                    "{} quiesced, {} queue contexts written back\n",
                    q.function, q.contexts_written
                )
            })
            .collect(),
        Command::Fault { .. } => fault_text(&typed(result, "fault")?),
        Command::Resume { .. } => typed::<Vec<String>>(result, "resume")?
            .iter()
            .map(|f| format!("{f} resumed\n"))
            .collect(),
        _ if result.is_null() => String::new(),
        _ => pretty(&result),
    })
}

/// A function's faults: what is armed (non-zero only), then what was
/// injected, one `name value` per line.
fn fault_text(f: &api::FaultInfo) -> String {
    let mut s = format!("{} faults\n", f.function);
    let fields = |v: Value| -> Vec<(String, Value)> {
        match v {
            Value::Object(m) => m.into_iter().collect(),
            _ => Vec::new(),
        }
    };
    for (k, v) in fields(serde_json::to_value(f.armed).expect("serialises")) {
        let flat = match &v {
            Value::Object(_) => fields(v.clone())
                .into_iter()
                .map(|(sub, x)| (format!("{k}.{sub}"), x))
                .collect(),
            _ => vec![(k.clone(), v.clone())],
        };
        for (name, x) in flat {
            if x != 0 && x != false {
                s += &format!("  armed {name} {x}\n");
            }
        }
    }
    for (k, v) in fields(serde_json::to_value(f.counters).expect("serialises")) {
        s += &format!("  {k} {v}\n");
    }
    s
}

/// After `migrate switchover`: asks until the function's last writes are
/// answered (state `switched`), each time on a new connection.
fn wait_for_switchover(
    socket: &Path,
    function: &str,
    reply: Value,
    timeout: Duration,
) -> Result<MigrationInfo, Failure> {
    let mut info: MigrationInfo = typed(reply, "migrate switchover")?;
    let deadline = Instant::now() + timeout;
    let status = Request::Migrate {
        function: function.to_string(),
        action: MigrateAction::Status,
    };
    let written = info.contexts_written;
    while info.state == MigrationState::Flushing {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(Failure::Socket(format!(
                "{function}: QEMU has not answered the switchover's writes \
                 ({} batches) within the timeout",
                info.unanswered
            )));
        }
        std::thread::sleep(Duration::from_millis(5).min(left));
        let mut conn = ControlConnection::open(socket, left)?;
        info = typed(conn.call(&status)?, "migrate status")?;
    }
    info.contexts_written = written;
    Ok(info)
}

fn migration_text(m: &MigrationInfo) -> String {
    let mut s = format!("{} migration {}", m.function, m.state.name());
    if let Some(n) = m.contexts_written {
        s += &format!(", {n} queue contexts written back");
    }
    if m.addresses_released {
        s += ", addresses released";
    }
    let r = &m.relay;
    s += &format!(
        "\n  dma_writes={} bytes={} batches_answered={} unanswered={} errors={} irqs_held={}\n",
        r.writes, r.bytes, r.acked, m.unanswered, r.errors, r.irqs_held
    );
    s
}

fn vct_set_text(v: &VctInfo) -> String {
    let mut s = format!("{} vct {} {}", v.function, v.address, enum_name(&v.state));
    if v.vct_status != 0 {
        s += &format!(" (VCT_STATUS {})", v.vct_status);
    }
    s + "\n"
}

/// The JSON name of a unit enum variant.
fn enum_name<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_value(v)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_else(|| "?".into())
}

fn pretty(v: &Value) -> String {
    let mut s = serde_json::to_string_pretty(v).expect("JSON values serialize");
    s.push('\n');
    s
}

/// `result` as the type the contract gives for `what`'s answer.
fn typed<T: DeserializeOwned>(result: Value, what: &str) -> Result<T, Failure> {
    serde_json::from_value(result)
        .map_err(|e| Failure::Socket(format!("protocol error: unexpected answer to {what}: {e}")))
}

/// Rows of cells as aligned columns, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.len()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut s = String::new();
        for (cell, w) in cells.zip(&widths) {
            s += &format!("{cell:<w$}  ");
        }
        s.truncate(s.trim_end().len());
        s + "\n"
    };
    let mut s = line(&mut header.iter().copied());
    for row in rows {
        s += &line(&mut row.iter().map(String::as_str));
    }
    s
}

fn yes_no(b: bool) -> String {
    if b { "yes" } else { "no" }.to_string()
}

fn on_off(b: bool) -> String {
    if b { "on" } else { "off" }.to_string()
}

/// The administrative state and, in brackets, what the link is.
fn link_text(f: &FunctionInfo) -> String {
    let up = if f.link_up { "up" } else { "down" };
    format!("{} ({up})", f.link)
}

/// A rate in kbit/s with the largest suffix that keeps it whole.
fn kbps_text(kbps: u64) -> String {
    match kbps {
        0 => "0".into(),
        k if k % 1_000_000 == 0 => format!("{}G", k / 1_000_000),
        k if k % 1_000 == 0 => format!("{}M", k / 1_000),
        k => format!("{k}k"),
    }
}

/// A size in bytes with the largest suffix that keeps it whole.
fn bytes_text(bytes: u64) -> String {
    match bytes {
        0 => "0".into(),
        b if b % (1 << 20) == 0 => format!("{}M", b >> 20),
        b if b % (1 << 10) == 0 => format!("{}K", b >> 10),
        b => b.to_string(),
    }
}

/// A rate policy in the command line's own units; "-" for none.
fn rate_text(policy: &Option<RatePolicy>) -> String {
    let Some(p) = policy else {
        return "-".into();
    };
    let peak = if p.peak_kbps == 0 {
        String::new()
    } else {
        format!(" peak {}", kbps_text(p.peak_kbps))
    };
    format!(
        "{}{peak} burst {}",
        kbps_text(p.avg_kbps),
        bytes_text(p.burst_bytes)
    )
}

fn queue_text(running: bool, error: &Option<String>) -> String {
    match error {
        Some(e) => format!("error: {e}"),
        None if running => "running".into(),
        None => "stopped".into(),
    }
}

fn vlans_text(vlans: &[u16]) -> String {
    if vlans.is_empty() {
        return "-".into();
    }
    let v: Vec<String> = vlans.iter().map(u16::to_string).collect();
    v.join(",")
}

fn vnic_row(function: &str, v: &VnicInfo) -> Vec<String> {
    vec![
        function.to_string(),
        v.vnic.to_string(),
        v.mac.to_string(),
        if v.vlan == 0 {
            "-".into()
        } else {
            v.vlan.to_string()
        },
        vlans_text(&v.joined),
        queue_text(v.tx_running, &v.tx_error),
        queue_text(v.rx_running, &v.rx_error),
    ]
}

const VNIC_HEADER: [&str; 7] = ["FUNCTION", "VNIC", "MAC", "VLAN", "JOINED", "TX", "RX"];

fn vnic_table(functions: &[FunctionInfo]) -> String {
    let rows: Vec<Vec<String>> = functions
        .iter()
        .flat_map(|f| f.vnics.iter().map(|v| vnic_row(&f.name, v)))
        .collect();
    table(&VNIC_HEADER, &rows)
}

/// A function's attribute: "vlan" or "vni N".
fn attr_text(f: &FunctionInfo) -> String {
    match f.vni {
        Some(vni) => format!("vni {vni}"),
        None => "vlan".into(),
    }
}

/// `vxlan list`: the VTEP, then the tunnels, then the MAC entries.
fn vxlan_list_text(v: &VxlanListInfo) -> String {
    let vtep = v
        .vtep
        .map_or("none".into(), |t| format!("{} {}", t.mac, t.ip));
    let mut s = format!(
        "vtep: {vtep}\ncapacity: {} tunnels ({} used), {} MAC entries ({} used)\n\n",
        v.capacity,
        v.tunnels.len(),
        v.capacity,
        v.macs.len()
    );
    let rows: Vec<Vec<String>> = v
        .tunnels
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                t.remote_ip.to_string(),
                t.remote_mac.to_string(),
                t.uses.to_string(),
            ]
        })
        .collect();
    s += &table(&["TUNNEL", "REMOTE IP", "NEXT HOP", "USES"], &rows);
    let rows: Vec<Vec<String>> = v
        .macs
        .iter()
        .map(|m| {
            vec![
                m.vni.to_string(),
                m.mac.to_string(),
                m.tunnel.to_string(),
                m.uses.to_string(),
            ]
        })
        .collect();
    s + "\n" + &table(&["VNI", "MAC", "TUNNEL", "USES"], &rows)
}

/// `vxlan add`: the tunnel the entry uses and what it pushed out.
fn vxlan_add_text(a: &VxlanAddInfo) -> String {
    let mut s = format!("tunnel {}\n", a.tunnel);
    for e in &a.evicted {
        s += &format!("evicted: VNI {} {} (tunnel {})\n", e.vni, e.mac, e.tunnel);
    }
    s
}

/// `list`: one line per function, then one per vNIC.
fn list_text(functions: &[FunctionInfo]) -> String {
    let header = [
        "FUNCTION", "ENABLED", "ATTACHED", "VNICS", "LINK", "SPOOF", "TRUST", "TX RATE", "RX RATE",
        "ATTR",
    ];
    let rows: Vec<Vec<String>> = functions
        .iter()
        .map(|f| {
            vec![
                f.name.clone(),
                yes_no(f.enabled),
                yes_no(f.attached),
                format!("{}/{}", f.vnics.len(), f.max_vnics),
                link_text(f),
                on_off(f.spoof_check),
                on_off(f.trust),
                rate_text(&f.tx_rate),
                rate_text(&f.rx_rate),
                attr_text(f),
            ]
        })
        .collect();
    format!("{}\n{}", table(&header, &rows), vnic_table(functions))
}

/// `show`: one field per line, then the vNICs.
fn show_text(f: &FunctionInfo) -> String {
    let fields = [
        ("function", f.name.clone()),
        ("enabled", yes_no(f.enabled)),
        ("attached", attached_text(f)),
        ("vnics", format!("{} of {}", f.vnics.len(), f.max_vnics)),
        ("link", link_text(f)),
        ("spoof check", on_off(f.spoof_check)),
        ("trust", on_off(f.trust)),
        ("addresses", addresses_text(f)),
        ("tx rate", rate_text(&f.tx_rate)),
        ("rx rate", rate_text(&f.rx_rate)),
        ("vct", vct_text(f)),
        ("quiesced", yes_no(f.quiesced)),
        ("attribute", attr_text(f)),
    ];
    let mut s = String::new();
    for (name, value) in fields {
        s += &format!("{:<13}{value}\n", format!("{name}:"));
    }
    s += "\n";
    s += &vnic_table(std::slice::from_ref(f));
    for v in &f.vnics {
        if let Some(filter) = &v.filter {
            s += &format!("vNIC {} filter: {}\n", v.vnic, filter_text(filter));
        }
    }
    s
}

/// Whether a client is attached, and whether the card can reach its
/// guest's memory.
fn attached_text(f: &FunctionInfo) -> String {
    if f.memory_unshared {
        "yes, but its guest memory is not shared: the card cannot reach it \
         (QEMU needs -object memory-backend-memfd,...,share=on)"
            .into()
    } else {
        yes_no(f.attached)
    }
}

/// Extra unicast addresses in use, and the limit if it applies.
fn addresses_text(f: &FunctionInfo) -> String {
    if f.trust || f.name == "pf" {
        format!("{} extra (no limit: trusted)", f.addresses)
    } else {
        format!("{} extra of {} (untrusted)", f.addresses, f.max_addrs)
    }
}

/// A vNIC's receive filter in one line.
fn filter_text(filter: &FilterInfo) -> String {
    let mut s = format!(
        "promisc {}, allmulti {}",
        on_off(filter.promisc),
        on_off(filter.allmulti)
    );
    let macs = |list: &[Mac]| {
        let v: Vec<String> = list.iter().map(Mac::to_string).collect();
        if v.is_empty() {
            "-".to_string()
        } else {
            v.join(" ")
        }
    };
    s += &format!(
        "; unicast {}; multicast {}",
        macs(&filter.unicast),
        macs(&filter.multicast)
    );
    s
}

/// The VCT entry, with a pending one and a refusal code if any.
fn vct_text(f: &FunctionInfo) -> String {
    let mut s = format!("{:#x}", f.vct);
    if let Some(p) = f.vct_pending {
        s += &format!(" (pending {p})");
    }
    if f.vct_status != 0 {
        s += &format!(" (VCT_STATUS {})", f.vct_status);
    }
    s
}

fn fdb_text(entries: &[FdbEntry]) -> String {
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            let kind = serde_json::to_value(e.kind).expect("kinds serialize");
            vec![
                e.mac.to_string(),
                e.vlan.to_string(),
                e.function.clone(),
                e.vnic.to_string(),
                kind.as_str().unwrap_or("?").to_string(),
            ]
        })
        .collect();
    table(&["MAC", "VLAN", "FUNCTION", "VNIC", "KIND"], &rows)
}

/// `title:` then `name=value` pairs, wrapped at 80 columns.
fn counters_text(title: &str, indent: usize, counters: &BTreeMap<String, u64>) -> String {
    let pad = " ".repeat(indent);
    let mut s = format!("{pad}{title}:");
    let mut column = s.len();
    for (name, value) in counters {
        let pair = format!("{name}={value}");
        if column + 1 + pair.len() > 80 && column > indent + title.len() + 1 {
            s += &format!("\n{pad}   ");
            column = indent + 3;
        } else {
            s.push(' ');
            column += 1;
        }
        column += pair.len();
        s += &pair;
    }
    s + "\n"
}

fn capture_text(c: &CaptureInfo) -> String {
    let only = c
        .function
        .as_ref()
        .map_or(String::new(), |f| format!(" ({f})"));
    format!("{}{only}, {} frames", c.path.display(), c.frames)
}

/// `stats`: the card's counters, the capture, then per function and vNIC.
/// One line about the card's worker process.
fn worker_text(w: &WorkerInfo) -> String {
    let kept = if w.kept {
        ""
    } else {
        "; nothing outlives it (no keeper)"
    };
    let last = w
        .last_exit
        .as_deref()
        .map(|e| format!(", the last one {e}"))
        .unwrap_or_default();
    format!(
        "card worker: pid {}, {} restart{}{last}{kept}\n",
        w.pid,
        w.restarts,
        if w.restarts == 1 { "" } else { "s" }
    )
}

fn stats_text(stats: &StatsInfo) -> String {
    let mut s = counters_text("card", 0, &stats.card);
    if let Some(w) = &stats.worker {
        s += &worker_text(w);
    }
    let capture = stats.capture.as_ref().map_or("none".into(), capture_text);
    s += &format!("capture: {capture}\n");
    for f in &stats.functions {
        s += &counters_text(&f.name, 0, &f.counters);
        for v in &f.vnics {
            s += &counters_text(&format!("vnic {}", v.vnic), 2, &v.counters);
        }
    }
    s
}

/// The answer to `capture stop` is the frame count; a summary object or
/// nothing at all is shown too, so any of them reads well.
fn capture_stopped_text(result: Value) -> String {
    if let Some(frames) = result.as_u64() {
        return format!("capture stopped: {frames} frames\n");
    }
    if result.is_null() {
        return "capture stopped\n".into();
    }
    match serde_json::from_value::<CaptureInfo>(result.clone()) {
        Ok(c) => format!("capture stopped: {}\n", capture_text(&c)),
        Err(_) => pretty(&result),
    }
}

/// One event as text; a line that is not a known event (a newer vnicd)
/// is shown as it came.
fn event_line(line: &str) -> String {
    match serde_json::from_str::<Event>(line) {
        Ok(e) => event_text(&e),
        Err(_) => line.to_string(),
    }
}

fn event_text(e: &Event) -> String {
    match e {
        Event::ClientConnected { function } => format!("client-connected {function}"),
        Event::ClientDisconnected { function } => format!("client-disconnected {function}"),
        Event::VfsChanged { num_vfs } => format!("vfs-changed num_vfs={num_vfs}"),
        Event::VnicsChanged { function, count } => {
            format!("vnics-changed {function} count={count}")
        }
        Event::VnicChanged {
            function,
            vnic,
            mac,
            vlan,
        } => format!("vnic-changed {function} vnic={vnic} mac={mac} vlan={vlan}"),
        Event::LinkChanged { function, up } => {
            format!(
                "link-changed {function} {}",
                if *up { "up" } else { "down" }
            )
        }
        Event::PolicyChanged { function } => format!("policy-changed {function}"),
        Event::CaptureStarted { path } => format!("capture-started {}", path.display()),
        Event::CaptureStopped { path, frames } => {
            format!("capture-stopped {} frames={frames}", path.display())
        }
        Event::Quiesced { function } => format!("quiesced {function}"),
        Event::Migration { function, state } => {
            format!("migration {function}: {}", state.name())
        }
        Event::Resumed { function } => format!("resumed {function}"),
        Event::VctChanged {
            function,
            address,
            state,
        } => format!("vct-changed {function} {address} {}", enum_name(state)),
        Event::VxlanMiss {
            vni,
            function,
            vnic,
            frame,
        } => format!(
            "vxlan-miss vni={vni} {function} vnic={vnic} {} bytes",
            frame.0.len()
        ),
        Event::VxlanPunt {
            vni,
            outer_src_ip,
            outer_src_mac,
            reason,
            frame,
        } => format!(
            "vxlan-punt vni={vni} from {outer_src_ip} {outer_src_mac} {} {} bytes",
            enum_name(reason),
            frame.0.len()
        ),
        Event::VxlanEvicted { vni, mac, tunnel } => {
            format!("vxlan-evicted vni={vni} {mac} tunnel={tunnel}")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cli(args: &[&str]) -> Result<Cli, clap::Error> {
        Cli::try_parse_from(std::iter::once("vnicctl").chain(args.iter().copied()))
    }

    /// The JSON request line the command line `args` sends.
    fn request_json(args: &[&str]) -> Value {
        let cli = cli(args).unwrap_or_else(|e| panic!("{args:?}: {e}"));
        serde_json::to_value(build_request(&cli.command).unwrap()).unwrap()
    }

    #[test]
    fn timeouts_are_positive_seconds_ten_by_default() {
        assert_eq!(cli(&["list"]).unwrap().timeout, 10.0);
        assert_eq!(cli(&["--timeout", "0.5", "list"]).unwrap().timeout, 0.5);
        assert_eq!(cli(&["list", "--timeout", "3"]).unwrap().timeout, 3.0);
        for bad in ["0", "-1", "x", "NaN", "1e9"] {
            assert!(cli(&["--timeout", bad, "list"]).is_err(), "{bad}");
        }
    }

    #[test]
    fn rates_are_bits_per_second_in_powers_of_1000() {
        assert_eq!(parse_rate("20M"), Ok(20_000));
        assert_eq!(parse_rate("500k"), Ok(500));
        assert_eq!(parse_rate("500K"), Ok(500));
        assert_eq!(parse_rate("1G"), Ok(1_000_000));
        assert_eq!(parse_rate("1.5M"), Ok(1_500));
        assert_eq!(parse_rate("64000"), Ok(64));
        assert_eq!(parse_rate("0"), Ok(0));
    }

    #[test]
    fn bad_rates_say_why() {
        for (bad, why) in [
            ("1500", "whole number of kbit/s"),
            ("1.0005M", "whole number"),
            ("20m", "unknown suffix 'm'"),
            ("20X", "unknown suffix"),
            ("", "not a number"),
            ("M", "not a number"),
            ("-1M", "not a number"),
            ("1.M", "not a number"),
            (".5M", "not a number"),
            ("1 M", "not a number"),
            ("99999999999999999999G", "too large"),
            ("1.0000000000000000000000000000000000000001G", "too large"),
        ] {
            let e = parse_rate(bad).expect_err(bad);
            assert!(e.contains(why), "{bad}: {e}");
        }
    }

    #[test]
    fn sizes_are_bytes_in_powers_of_1024() {
        assert_eq!(parse_size("64K"), Ok(65_536));
        assert_eq!(parse_size("64k"), Ok(65_536));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("9216"), Ok(9216));
        assert_eq!(parse_size("1.5K"), Ok(1536));
        assert!(parse_size("0.3K")
            .unwrap_err()
            .contains("whole number of bytes"));
        assert!(parse_size("1G").unwrap_err().contains("use K or M"));
    }

    #[test]
    fn rates_and_sizes_print_in_the_units_they_are_typed_in() {
        assert_eq!(kbps_text(20_000), "20M");
        assert_eq!(kbps_text(1_000_000), "1G");
        assert_eq!(kbps_text(1_500), "1500k");
        assert_eq!(bytes_text(65_536), "64K");
        assert_eq!(bytes_text(9216), "9K");
        assert_eq!(bytes_text(1000), "1000");
        let p = RatePolicy {
            avg_kbps: 20_000,
            peak_kbps: 40_000,
            burst_bytes: 65_536,
        };
        assert_eq!(rate_text(&Some(p)), "20M peak 40M burst 64K");
        assert_eq!(rate_text(&None), "-");
    }

    #[test]
    fn commands_send_the_contracts_requests() {
        let cases = [
            ("list", r#"{"op":"list"}"#),
            ("show vf0", r#"{"op":"show","function":"vf0"}"#),
            ("vfs 2", r#"{"op":"set-num-vfs","count":2}"#),
            (
                "vnics vf0 3",
                r#"{"op":"set-vnics","function":"vf0","count":3}"#,
            ),
            (
                "vnic vf0 1 --mac 02:00:00:00:00:01 --vlan 10",
                r#"{"op":"set-vnic","function":"vf0","vnic":1,"mac":"02:00:00:00:00:01","vlan":10}"#,
            ),
            (
                "vnic vf0 1 --vlan 0",
                r#"{"op":"set-vnic","function":"vf0","vnic":1,"vlan":0}"#,
            ),
            (
                "fdb add 02:00:00:00:00:09 --vlan 5 vf1 0",
                r#"{"op":"fdb-add","mac":"02:00:00:00:00:09","vlan":5,"function":"vf1","vnic":0}"#,
            ),
            (
                "fdb del 02:00:00:00:00:09",
                r#"{"op":"fdb-del","mac":"02:00:00:00:00:09","vlan":0}"#,
            ),
            ("fdb list", r#"{"op":"fdb-list"}"#),
            (
                "rate vf1 tx --avg 20M --peak 40M --burst 64K",
                r#"{"op":"set-rate","function":"vf1","direction":"tx",
                    "policy":{"avg_kbps":20000,"peak_kbps":40000,"burst_bytes":65536}}"#,
            ),
            (
                "rate vf1 rx --avg 1G --burst 1M",
                r#"{"op":"set-rate","function":"vf1","direction":"rx",
                    "policy":{"avg_kbps":1000000,"peak_kbps":0,"burst_bytes":1048576}}"#,
            ),
            (
                "rate vf1 tx --clear",
                r#"{"op":"set-rate","function":"vf1","direction":"tx","policy":null}"#,
            ),
            (
                "spoof-check vf1 off",
                r#"{"op":"set-spoof-check","function":"vf1","on":false}"#,
            ),
            (
                "trust vf1 on",
                r#"{"op":"set-trust","function":"vf1","on":true}"#,
            ),
            (
                "link vf1 down",
                r#"{"op":"set-link","function":"vf1","state":"down"}"#,
            ),
            ("stats", r#"{"op":"stats"}"#),
            ("stats vf1", r#"{"op":"stats","function":"vf1"}"#),
            (
                "capture start /tmp/s.pcap --function vf1",
                r#"{"op":"capture-start","path":"/tmp/s.pcap","function":"vf1"}"#,
            ),
            ("capture stop", r#"{"op":"capture-stop"}"#),
            ("export", r#"{"op":"export"}"#),
            ("export /tmp/card.json", r#"{"op":"export"}"#),
            ("events", r#"{"op":"subscribe"}"#),
            (
                "fault vf1 drop-frames rx 3",
                r#"{"op":"fault-inject","function":"vf1","fault":{"type":"drop-frames","direction":"rx","count":3}}"#,
            ),
            (
                "fault vf1 delay-irqs --us 500",
                r#"{"op":"fault-inject","function":"vf1","fault":{"type":"delay-irqs","us":500,"count":1}}"#,
            ),
            (
                "fault vf0 fail-dma tx",
                r#"{"op":"fault-inject","function":"vf0","fault":{"type":"fail-dma","direction":"tx","count":1}}"#,
            ),
            (
                "fault vf0 remove",
                r#"{"op":"fault-inject","function":"vf0","fault":{"type":"remove"}}"#,
            ),
            (
                "fault vf0 link-down",
                r#"{"op":"fault-inject","function":"vf0","fault":{"type":"link-down"}}"#,
            ),
            (
                "fault vf0 clear",
                r#"{"op":"fault-clear","function":"vf0"}"#,
            ),
            (
                "fault vf0 status",
                r#"{"op":"fault-status","function":"vf0"}"#,
            ),
            ("--json list", r#"{"op":"list"}"#),
            ("list --control /x.sock", r#"{"op":"list"}"#),
        ];
        for (args, want) in cases {
            let args: Vec<&str> = args.split_whitespace().collect();
            let want: Value = serde_json::from_str(want).unwrap();
            assert_eq!(request_json(&args), want, "{args:?}");
        }
    }

    #[test]
    fn a_relative_capture_path_is_made_absolute_here() {
        let got = request_json(&["capture", "start", "s.pcap"]);
        let want = std::env::current_dir().unwrap().join("s.pcap");
        assert_eq!(got["path"], json!(want));
    }

    #[test]
    fn usage_errors_are_caught_before_anything_is_sent() {
        for args in [
            "vnic vf0 1",
            "vnic vf0 1 --mac 02:00:00:00:00",
            "rate vf1 tx --avg 20M",
            "rate vf1 tx --burst 64K",
            "rate vf1 tx --clear --avg 20M",
            "rate vf1 tx --avg 20X --burst 64K",
            "rate vf1 up --clear",
            "link vf1 sideways",
            "spoof-check vf1 yes",
            "vfs -1",
            "capture",
            "fdb add 02:00:00:00:00:09",
            "fault vf0 drop-frames sideways 3",
            "fault vf0 drop-irqs -1",
            "fault vf0 delay-irqs 5",
            "fault vf0 explode",
            "frobnicate",
        ] {
            let argv: Vec<&str> = args.split_whitespace().collect();
            let e = cli(&argv).expect_err(args);
            assert_eq!(e.exit_code(), 2, "{args}");
        }
    }

    #[test]
    fn the_control_socket_comes_from_the_option_then_the_environment() {
        let p = control_path(Some(Path::new("/a.sock")), Some("/b.sock".into()));
        assert_eq!(p.unwrap(), Path::new("/a.sock"));
        let p = control_path(None, Some("/b.sock".into()));
        assert_eq!(p.unwrap(), Path::new("/b.sock"));
        for env in [None, Some("".into())] {
            let e = control_path(None, env).unwrap_err();
            assert_eq!(e.exit_code(), 2);
            assert!(e.to_string().contains("VNICCTL_CONTROL"), "{e}");
        }
    }

    #[test]
    fn config_file_errors_name_line_and_column() {
        let text = "{\n  \"num_vfs\": 2,\n  \"functions\": [ { \"name\": \"vf0\", \"trusted\": true } ]\n}\n";
        let e = parse_card_file(text).unwrap_err();
        assert!(e.starts_with("line 3, column "), "{e}");
        assert!(e.contains("unknown field `trusted`"), "{e}");
        assert!(!e.contains(" at line "), "{e}");
        let e = parse_card_file("{\"num_vfs\": 2,}").unwrap_err();
        assert!(e.starts_with("line 1, column 15"), "{e}");
        let f = parse_card_file("{\"num_vfs\": 2}").unwrap();
        assert_eq!(f.num_vfs, Some(2));
    }

    #[test]
    fn apply_sends_the_file_as_its_config() {
        let path = std::env::temp_dir().join(format!("vnicctl-apply-{}.json", std::process::id()));
        let config = json!({"num_vfs": 2,
            "functions": [{"name": "vf1", "trust": true, "tx_rate": null}]});
        std::fs::write(&path, config.to_string()).unwrap();
        let got = request_json(&["apply", path.to_str().unwrap()]);
        std::fs::remove_file(&path).unwrap();
        assert_eq!(got, json!({"op": "apply", "config": config}));
        let e =
            build_request(&cli(&["apply", "/nonexistent/c.json"]).unwrap().command).unwrap_err();
        assert_eq!(e.exit_code(), 2);
        assert!(
            e.to_string().contains("cannot read /nonexistent/c.json"),
            "{e}"
        );
    }

    #[test]
    fn answers_give_the_result_or_the_refusal() {
        assert_eq!(
            answer_result(r#"{"ok":true,"result":[1]}"#).unwrap(),
            json!([1])
        );
        assert_eq!(
            answer_result(r#"{"ok":true,"result":null}"#).unwrap(),
            Value::Null
        );
        assert_eq!(answer_result(r#"{"ok":true}"#).unwrap(), Value::Null);
        let e = answer_result(r#"{"ok":false,"error":"vf0: 99 vNICs outside 1..=8"}"#);
        let e = e.unwrap_err();
        assert_eq!(
            (e.exit_code(), e.to_string().as_str()),
            (1, "vf0: 99 vNICs outside 1..=8")
        );
        for bad in ["", "hello", "{}", r#"{"result":1}"#] {
            assert_eq!(answer_result(bad).unwrap_err().exit_code(), 3, "{bad:?}");
        }
    }

    fn function(name: &str) -> FunctionInfo {
        FunctionInfo {
            name: name.into(),
            enabled: true,
            attached: false,
            memory_unshared: false,
            max_vnics: 8,
            vnics: vec![VnicInfo {
                vnic: 0,
                mac: "02:76:6e:00:01:00".parse().unwrap(),
                vlan: 10,
                joined: vec![20, 30],
                tx_running: true,
                rx_running: false,
                tx_error: None,
                rx_error: Some("bad descriptor".into()),
                filter: Some(FilterInfo {
                    promisc: false,
                    allmulti: true,
                    unicast: vec!["02:00:00:00:00:09".parse().unwrap()],
                    multicast: vec![],
                }),
            }],
            link: model::LinkState::Auto,
            link_up: true,
            spoof_check: true,
            trust: false,
            addresses: 1,
            max_addrs: 16,
            tx_rate: Some(RatePolicy {
                avg_kbps: 20_000,
                peak_kbps: 0,
                burst_bytes: 65_536,
            }),
            rx_rate: None,
            vct: 0x1000,
            vct_status: 0,
            vct_pending: None,
            quiesced: false,
            vni: None,
        }
    }

    #[test]
    fn migration_commands_send_their_requests_and_remap_is_local() {
        assert_eq!(request_json(&["quiesce"]), json!({"op": "quiesce"}));
        assert_eq!(
            request_json(&["resume", "vf1"]),
            json!({"op": "resume", "function": "vf1"})
        );
        assert_eq!(
            request_json(&["vct", "set", "vf2", "0x3e8a000"]),
            json!({"op": "vct-set", "function": "vf2", "address": "0x3e8a000"})
        );
        assert!(cli(&["vct", "set", "vf2", "nowhere"]).is_err());
        let dir = std::env::temp_dir().join(format!("vnicctl-remap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("card.json");
        std::fs::write(
            &file,
            r#"{"functions":[{"name":"vf0","vct":"0x5000"},{"name":"vf2","trust":true}],
                "fdb":[{"mac":"02:00:00:00:00:99","function":"vf0","vnic":0}]}"#,
        )
        .unwrap();
        let out = remap(&file, &["vf0=vf2".into()]).unwrap();
        let v: Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["functions"][0]["name"], "vf2");
        assert_eq!(v["functions"][0]["vct"], "0x5000");
        assert_eq!(v["functions"][1]["name"], "vf0");
        assert_eq!(v["fdb"][0]["function"], "vf2");
        assert_eq!(remap(&file, &["vf0".into()]).unwrap_err().exit_code(), 2);
        assert_eq!(remap(&file, &["pf=vf1".into()]).unwrap_err().exit_code(), 2);
        let mut f = function("vf0");
        f.vct_pending = Some(GuestAddr(0x5000));
        f.quiesced = true;
        let text = show_text(&f);
        assert!(
            text.contains("vct:         0x1000 (pending 0x5000)"),
            "{text}"
        );
        assert!(text.contains("quiesced:    yes"), "{text}");
        assert!(
            text.contains("addresses:   1 extra of 16 (untrusted)"),
            "{text}"
        );
        assert!(
            text.contains(
                "vNIC 0 filter: promisc off, allmulti on; unicast 02:00:00:00:00:09; multicast -"
            ),
            "{text}"
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn vxlan_commands_send_their_requests() {
        assert_eq!(
            request_json(&["attr", "vf0", "vxlan", "100"]),
            json!({"op": "set-attr", "function": "vf0", "vni": 100})
        );
        assert_eq!(
            request_json(&["attr", "vf0", "vlan"]),
            json!({"op": "set-attr", "function": "vf0", "vni": null})
        );
        assert_eq!(
            request_json(&["attr", "vf1", "vlan", "10"]),
            json!({"op": "set-attr", "function": "vf1", "vni": null, "vlan": 10})
        );
        assert_eq!(
            request_json(&["vtep", "--mac", "02:76:6e:ff:00:01", "--ip", "10.1.0.1"]),
            json!({"op": "set-vtep", "mac": "02:76:6e:ff:00:01", "ip": "10.1.0.1"})
        );
        assert_eq!(
            request_json(&["vxlan", "list"]),
            json!({"op": "vxlan-list"})
        );
        assert_eq!(
            request_json(&[
                "vxlan",
                "add",
                "7",
                "ff:ff:ff:ff:ff:ff",
                "10.1.0.2",
                "02:76:6e:ff:00:02"
            ]),
            json!({"op": "vxlan-add", "vni": 7, "mac": "ff:ff:ff:ff:ff:ff",
                   "remote_ip": "10.1.0.2", "remote_mac": "02:76:6e:ff:00:02"})
        );
        assert_eq!(
            request_json(&["vxlan", "del", "7", "02:00:00:00:00:01"]),
            json!({"op": "vxlan-del", "vni": 7, "mac": "02:00:00:00:00:01"})
        );
        assert!(cli(&["vtep", "--mac", "02:76:6e:ff:00:01", "--ip", "10.1.0"]).is_err());
        assert!(cli(&["attr", "vf0", "vxlan"]).is_err());
    }

    #[test]
    fn vxlan_answers_read_as_tables() {
        let list = json!({
            "vtep": {"mac": "02:76:6e:ff:00:01", "ip": "10.1.0.1"},
            "capacity": 1024,
            "tunnels": [{"id": 0, "remote_ip": "10.1.0.2",
                         "remote_mac": "02:76:6e:ff:00:02", "uses": 5}],
            "macs": [{"vni": 100, "mac": "02:76:6e:01:01:00", "tunnel": 0, "uses": 5}]
        });
        let command = cli(&["vxlan", "list"]).unwrap().command;
        let text = render(&command, list, false).unwrap();
        assert!(
            text.starts_with("vtep: 02:76:6e:ff:00:01 10.1.0.1\n"),
            "{text}"
        );
        assert!(
            text.contains("0       10.1.0.2   02:76:6e:ff:00:02  5"),
            "{text}"
        );
        assert!(text.contains("100  02:76:6e:01:01:00  0       5"), "{text}");
        let command = cli(&[
            "vxlan",
            "add",
            "1",
            "02:00:00:00:00:01",
            "10.0.0.1",
            "02:00:00:00:00:02",
        ])
        .unwrap()
        .command;
        let added =
            json!({"tunnel": 3, "evicted": [{"vni": 1, "mac": "02:00:00:00:00:09", "tunnel": 2}]});
        let text = render(&command, added, false).unwrap();
        assert_eq!(
            text,
            "tunnel 3\nevicted: VNI 1 02:00:00:00:00:09 (tunnel 2)\n"
        );
        let mut f = function("vf0");
        f.vni = Some(100);
        assert!(
            show_text(&f).contains("attribute:   vni 100"),
            "{}",
            show_text(&f)
        );
        assert!(list_text(&[f]).lines().next().unwrap().ends_with("ATTR"));
    }

    #[test]
    fn list_shows_a_line_per_function_then_per_vnic() {
        let text = list_text(&[function("pf"), function("vf0")]);
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].starts_with("FUNCTION  ENABLED  ATTACHED  VNICS"),
            "{text}"
        );
        assert!(
            lines[2].starts_with("vf0       yes      no        1/8    auto (up)"),
            "{text}"
        );
        assert!(lines[2].contains("20M burst 64K"), "{text}");
        assert!(lines[4].starts_with("FUNCTION  VNIC  MAC"), "{text}");
        assert!(
            lines[6].contains("02:76:6e:00:01:00  10    20,30   running  error: bad descriptor"),
            "{text}"
        );
        assert!(
            lines.iter().all(|l| l.trim_end() == *l),
            "trailing blanks:\n{text}"
        );
    }

    #[test]
    fn human_output_checks_the_answers_shape() {
        let cli = cli(&["list"]).unwrap();
        let e = render(&cli.command, json!({"functions": 3}), false).unwrap_err();
        assert_eq!(e.exit_code(), 3);
        let out = render(&cli.command, json!({"functions": 3}), true).unwrap();
        assert_eq!(out, "{\n  \"functions\": 3\n}\n");
        let cli = self::cli(&["vfs", "2"]).unwrap();
        assert_eq!(render(&cli.command, Value::Null, false).unwrap(), "");
    }

    #[test]
    fn stats_group_counters_per_function_and_vnic() {
        let stats: StatsInfo = serde_json::from_value(json!({
            "card": {"switched": 10, "flooded": 1},
            "functions": [{"name": "vf0", "counters": {"spoof_drops": 2},
                           "vnics": [{"vnic": 0, "counters": {"tx_packets": 5}}]}]
        }))
        .unwrap();
        assert_eq!(
            stats_text(&stats),
            "card: flooded=1 switched=10\ncapture: none\nvf0: spoof_drops=2\n  vnic 0: tx_packets=5\n"
        );
        let many: BTreeMap<String, u64> = (0..20)
            .map(|i| (format!("counter_{i:02}"), 1_000_000))
            .collect();
        let text = counters_text("vf1", 0, &many);
        assert!(text.lines().count() > 1);
        assert!(text.lines().all(|l| l.len() <= 80), "{text}");
        assert_eq!(text.matches('=').count(), 20);
    }

    #[test]
    fn capture_stop_reads_well_whatever_the_answer() {
        assert_eq!(
            capture_stopped_text(json!(12)),
            "capture stopped: 12 frames\n"
        );
        assert_eq!(
            capture_stopped_text(json!({"path": "/tmp/s.pcap", "frames": 3})),
            "capture stopped: /tmp/s.pcap, 3 frames\n"
        );
    }

    #[test]
    fn events_print_one_line_each() {
        assert_eq!(
            event_line(r#"{"event":"vnics-changed","function":"vf0","count":3}"#),
            "vnics-changed vf0 count=3"
        );
        assert_eq!(
            event_line(r#"{"event":"link-changed","function":"vf1","up":false}"#),
            "link-changed vf1 down"
        );
        assert_eq!(
            event_line(r#"{"event":"from-the-future","x":1}"#),
            r#"{"event":"from-the-future","x":1}"#
        );
    }

    #[test]
    fn fdb_list_is_a_table() {
        let entries: Vec<FdbEntry> = serde_json::from_value(json!([
            {"mac": "02:00:00:00:00:09", "vlan": 0, "function": "vf1", "vnic": 0, "kind": "static"}
        ]))
        .unwrap();
        assert_eq!(
            fdb_text(&entries),
            "MAC                VLAN  FUNCTION  VNIC  KIND\n02:00:00:00:00:09  0     vf1       0     static\n"
        );
    }
}
