//! The host agent (`vnicctl vxlan-agent`, docs/vxlan.md "The host
//! agent"): the "host CPU" that resolves what the card's VxLAN tables do
//! not know.
//!
//! [`Agent`] is the decision logic alone, without sockets: a forwarding
//! database (inner MAC → remote VTEP IP) and a neighbour table (IP →
//! next-hop MAC), and what to ask of the card for a `vxlan-miss` or a
//! `vxlan-punt` event ([`Decision`]). [`run`] is the loop around it: one
//! control connection subscribed to the card's events, a second one for the
//! requests, until a stop flag (SIGTERM/SIGINT, [`stop_on_signals`]) is
//! set. [`run_pf`] is the other loop: the same decisions over the PF's
//! exception queue pair, from a guest that has the PF ([`pf`]; the
//! messages are the card's own [`crate::vxlan::exception::Header`]).
//!
//! Static entries (`--fdb`, `--neigh`) are never replaced by learning, as
//! in Linux's vxlan: a punted frame whose inner source MAC has a static FDB
//! entry for another VTEP is dropped.

use std::collections::HashMap;
use std::fmt;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::Ipv4Addr;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use serde_json::Value;

use crate::control::api::{Request, Response, VxlanListInfo};
use crate::model::{Event, Frame, Mac, PuntReason, Vtep};
use crate::vxlan::wire::{encapsulate, Outer};

pub mod pf;

pub use pf::run_pf;

/// The FDB key of the default entry: broadcast, multicast and unknown
/// MACs go to its VTEP (as `00:00:00:00:00:00` in Linux's vxlan).
pub const DEFAULT_MAC: Mac = Mac([0; 6]);

/// How the agent returns a missed frame to the card.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Variant {
    /// `vxlan-send`: the card looks the frame up again and encapsulates it.
    #[default]
    A,
    /// The agent builds the outer frame itself and sends it with
    /// `uplink-send`.
    B,
}

impl FromStr for Variant {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "a" | "A" => Ok(Variant::A),
            "b" | "B" => Ok(Variant::B),
            _ => Err(format!("variant {s:?}: want a or b")),
        }
    }
}

impl fmt::Display for Variant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Variant::A => "a",
            Variant::B => "b",
        })
    }
}

/// `--fdb MAC=IP`: frames to inner MAC go to the VTEP at IP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FdbArg {
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

impl FromStr for FdbArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (mac, ip) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: want MAC=IP, e.g. 00:00:00:00:00:00=10.1.0.2"))?;
        let mac: Mac = mac.parse().map_err(|e| format!("{e}"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{ip:?}: {e}"))?;
        usable_remote(ip)?;
        Ok(FdbArg { mac, ip })
    }
}

/// `--neigh IP=MAC`: the next hop towards IP has MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NeighArg {
    pub ip: Ipv4Addr,
    pub mac: Mac,
}

impl FromStr for NeighArg {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        let (ip, mac) = s
            .split_once('=')
            .ok_or_else(|| format!("{s:?}: want IP=MAC, e.g. 10.1.0.2=02:76:6e:ff:00:02"))?;
        let ip: Ipv4Addr = ip.parse().map_err(|e| format!("{ip:?}: {e}"))?;
        usable_remote(ip)?;
        let mac: Mac = mac.parse().map_err(|e| format!("{e}"))?;
        if mac.is_multicast() || mac == DEFAULT_MAC {
            return Err(format!("{mac} is not a unicast MAC address"));
        }
        Ok(NeighArg { ip, mac })
    }
}

/// A remote VTEP must be a unicast address (the card refuses others).
fn usable_remote(ip: Ipv4Addr) -> Result<(), String> {
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(format!("{ip} is not a unicast IPv4 address"));
    }
    Ok(())
}

/// The agent's settings (the command line).
#[derive(Clone, Debug, Default)]
pub struct Config {
    pub fdb: Vec<FdbArg>,
    pub neigh: Vec<NeighArg>,
    pub variant: Variant,
}

/// Where a table entry came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Origin {
    /// From the command line; learning never replaces it.
    Static,
    /// From a punt.
    Learned,
}

/// What the agent did, for its summary.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counters {
    /// `vxlan-miss` events handled.
    pub requests: u64,
    /// `vxlan-punt` events handled.
    pub punts: u64,
    /// `vxlan-add` requests sent.
    pub installs: u64,
    /// Frames dropped: unresolvable, refused by the card, or missed again.
    pub drops: u64,
    /// Missed frames returned (`vxlan-send` answered `sent`, or
    /// `uplink-send` accepted).
    pub sent: u64,
    /// Punted frames returned (`vxlan-deliver` accepted).
    pub delivered: u64,
    /// FDB and neighbour entries learned or changed by punts.
    pub learned: u64,
    /// Requests the card refused.
    pub refused: u64,
}

impl fmt::Display for Counters {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "requests={} punts={} installs={} drops={} sent={} delivered={} learned={} refused={}",
            self.requests,
            self.punts,
            self.installs,
            self.drops,
            self.sent,
            self.delivered,
            self.learned,
            self.refused
        )
    }
}

/// What to do about one event: the requests to send, in order, and one
/// log line saying why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decision {
    pub requests: Vec<Request>,
    pub log: String,
}

impl Decision {
    fn drop(log: String) -> Self {
        Decision {
            requests: Vec::new(),
            log,
        }
    }
}

/// The agent's tables and counters.
#[derive(Debug, Default)]
pub struct Agent {
    fdb: HashMap<Mac, (Ipv4Addr, Origin)>,
    neigh: HashMap<Ipv4Addr, (Mac, Origin)>,
    variant: Variant,
    /// The card's VTEP, needed to build outer frames (variant B).
    vtep: Option<Vtep>,
    /// IPv4 identification of the next outer frame built here.
    ident: u16,
    pub counters: Counters,
}

/// The destination and source MACs of an Ethernet frame.
fn macs(frame: &[u8]) -> Option<(Mac, Mac)> {
    if frame.len() < 14 {
        return None;
    }
    let dst = Mac(frame[0..6].try_into().ok()?);
    let src = Mac(frame[6..12].try_into().ok()?);
    Some((dst, src))
}

impl Agent {
    pub fn new(config: &Config) -> Agent {
        let mut a = Agent {
            variant: config.variant,
            ..Agent::default()
        };
        for e in &config.fdb {
            a.fdb.insert(e.mac, (e.ip, Origin::Static));
        }
        for e in &config.neigh {
            a.neigh.insert(e.ip, (e.mac, Origin::Static));
        }
        a
    }

    pub fn variant(&self) -> Variant {
        self.variant
    }

    pub fn vtep(&self) -> Option<Vtep> {
        self.vtep
    }

    pub fn set_vtep(&mut self, vtep: Option<Vtep>) {
        self.vtep = vtep;
    }

    /// The FDB entry for `mac`, if any (not the default).
    pub fn fdb(&self, mac: Mac) -> Option<(Ipv4Addr, Origin)> {
        self.fdb.get(&mac).copied()
    }

    pub fn neighbour(&self, ip: Ipv4Addr) -> Option<(Mac, Origin)> {
        self.neigh.get(&ip).copied()
    }

    /// Where frames to `mac` go: the remote VTEP (its FDB entry, else the
    /// default entry) and the next hop's MAC; or why not.
    pub fn resolve(&self, mac: Mac) -> Result<(Ipv4Addr, Mac), String> {
        let ip = match self.fdb.get(&mac).or_else(|| self.fdb.get(&DEFAULT_MAC)) {
            Some(&(ip, _)) => ip,
            None => return Err(format!("no FDB entry for {mac} and no default")),
        };
        match self.neigh.get(&ip) {
            Some(&(next_hop, _)) => Ok((ip, next_hop)),
            None => Err(format!("no neighbour entry for {ip}")),
        }
    }

    /// What to do about an event; `None` for events that are not requests.
    /// Evictions need nothing: the next frame misses and is resolved again.
    pub fn on_event(&mut self, event: &Event) -> Option<Decision> {
        match event {
            Event::VxlanMiss {
                vni,
                function,
                vnic,
                frame,
            } => Some(self.on_miss(*vni, function, *vnic, &frame.0)),
            Event::VxlanPunt {
                vni,
                outer_src_ip,
                outer_src_mac,
                reason,
                frame,
            } => Some(self.on_punt(*vni, *outer_src_ip, *outer_src_mac, *reason, &frame.0)),
            _ => None,
        }
    }

    /// A VxLAN VF's frame missed the card's tables: resolve its
    /// destination, install the entry, and return the frame.
    pub fn on_miss(&mut self, vni: u32, function: &str, vnic: u16, frame: &[u8]) -> Decision {
        self.counters.requests += 1;
        let what = format!("miss vni {vni} {function}/{vnic}");
        let Some((dst, _)) = macs(frame) else {
            self.counters.drops += 1;
            return Decision::drop(format!(
                "{what}: {} bytes, no Ethernet header: dropped",
                frame.len()
            ));
        };
        let (ip, next_hop) = match self.resolve(dst) {
            Ok(r) => r,
            Err(why) => {
                self.counters.drops += 1;
                return Decision::drop(format!("{what} to {dst}: {why}: dropped"));
            }
        };
        let mut requests = vec![Request::VxlanAdd {
            vni,
            mac: dst,
            remote_ip: ip,
            remote_mac: next_hop,
        }];
        self.counters.installs += 1;
        let how = match self.variant {
            Variant::A => {
                requests.push(Request::VxlanSend {
                    vni,
                    frame: Frame(frame.to_vec()),
                });
                "vxlan-send".to_string()
            }
            Variant::B => match self.vtep {
                Some(vtep) => {
                    let outer = Outer {
                        dst_mac: next_hop,
                        src_mac: vtep.mac,
                        src_ip: vtep.ip,
                        dst_ip: ip,
                        ident: self.ident,
                        vni,
                    };
                    self.ident = self.ident.wrapping_add(1);
                    let mut out = Vec::new();
                    encapsulate(&outer, frame, &mut out);
                    requests.push(Request::UplinkSend { frame: Frame(out) });
                    "uplink-send (encapsulated here)".to_string()
                }
                None => {
                    self.counters.drops += 1;
                    "no VTEP known to encapsulate with: frame dropped".to_string()
                }
            },
        };
        Decision {
            requests,
            log: format!("{what} to {dst}: {ip} via {next_hop}: vxlan-add, {how}"),
        }
    }

    /// A VxLAN frame from the uplink the card does not vouch for: learn
    /// where its sender is, install that, and deliver the frame.
    pub fn on_punt(
        &mut self,
        vni: u32,
        src_ip: Ipv4Addr,
        src_mac: Mac,
        reason: PuntReason,
        frame: &[u8],
    ) -> Decision {
        self.counters.punts += 1;
        let reason = match reason {
            PuntReason::Unknown => "unknown",
            PuntReason::Moved => "moved",
        };
        let what = format!("punt vni {vni} ({reason}) from {src_ip} {src_mac}");
        let Some((_, inner_src)) = macs(frame) else {
            self.counters.drops += 1;
            return Decision::drop(format!(
                "{what}: {} bytes, no Ethernet header: dropped",
                frame.len()
            ));
        };
        let what = format!("{what} inner {inner_src}");
        if inner_src.is_multicast() || inner_src == DEFAULT_MAC {
            self.counters.drops += 1;
            return Decision::drop(format!("{what}: not a unicast source: dropped"));
        }
        if usable_remote(src_ip).is_err() || src_mac.is_multicast() || src_mac == DEFAULT_MAC {
            self.counters.drops += 1;
            return Decision::drop(format!("{what}: unusable outer source: dropped"));
        }
        let mut notes = Vec::new();
        match self.fdb.get(&inner_src) {
            Some(&(ip, Origin::Static)) if ip != src_ip => {
                self.counters.drops += 1;
                return Decision::drop(format!("{what}: static FDB entry says {ip}: dropped"));
            }
            Some(&(ip, _)) if ip == src_ip => {}
            old => {
                if let Some(&(ip, _)) = old {
                    notes.push(format!("fdb {inner_src} moved from {ip}"));
                } else {
                    notes.push(format!("fdb {inner_src} learned"));
                }
                self.fdb.insert(inner_src, (src_ip, Origin::Learned));
                self.counters.learned += 1;
            }
        }
        match self.neigh.get(&src_ip) {
            Some(&(mac, _)) if mac == src_mac => {}
            Some(&(mac, Origin::Static)) => {
                notes.push(format!("neigh {src_ip} stays static {mac}"));
            }
            old => {
                if let Some(&(mac, _)) = old {
                    notes.push(format!("neigh {src_ip} moved from {mac}"));
                } else {
                    notes.push(format!("neigh {src_ip} learned"));
                }
                self.neigh.insert(src_ip, (src_mac, Origin::Learned));
                self.counters.learned += 1;
            }
        }
        self.counters.installs += 1;
        let mut log = format!("{what}: vxlan-add, vxlan-deliver");
        if !notes.is_empty() {
            log += &format!(" ({})", notes.join(", "));
        }
        Decision {
            requests: vec![
                Request::VxlanAdd {
                    vni,
                    mac: inner_src,
                    remote_ip: src_ip,
                    remote_mac: src_mac,
                },
                Request::VxlanDeliver {
                    vni,
                    frame: Frame(frame.to_vec()),
                },
            ],
            log,
        }
    }

    /// Takes the card's answer to one of a decision's requests into the
    /// counters; returns a line to log if it is worth one.
    pub fn answered(&mut self, request: &Request, answer: Result<&Value, &str>) -> Option<String> {
        let name = request_name(request);
        let answer = match answer {
            Ok(v) => v,
            Err(e) => {
                self.counters.refused += 1;
                if matches!(
                    request,
                    Request::VxlanSend { .. }
                        | Request::UplinkSend { .. }
                        | Request::VxlanDeliver { .. }
                ) {
                    self.counters.drops += 1;
                }
                return Some(format!("  {name} refused: {e}"));
            }
        };
        match request {
            Request::VxlanSend { .. } => {
                if answer["sent"] == Value::Bool(true) {
                    self.counters.sent += 1;
                    None
                } else {
                    self.counters.drops += 1;
                    Some(format!("  {name}: the card missed again; frame dropped"))
                }
            }
            Request::UplinkSend { .. } => {
                self.counters.sent += 1;
                None
            }
            Request::VxlanDeliver { .. } => {
                self.counters.delivered += 1;
                match answer["delivered"].as_u64() {
                    Some(0) => Some(format!("  {name}: no local vNIC took it")),
                    _ => None,
                }
            }
            Request::VxlanAdd { .. } => match answer["evicted"].as_array() {
                Some(ev) if !ev.is_empty() => {
                    Some(format!("  {name} evicted {}", Value::Array(ev.clone())))
                }
                _ => None,
            },
            _ => None,
        }
    }

    /// Takes a request written to the card where no answer comes back
    /// (the PF's exception queue pair) into the counters: a frame written
    /// counts as sent or delivered, one that could not be written as a
    /// drop. Returns a line to log if it is worth one.
    pub fn written(&mut self, request: &Request, result: Result<(), &str>) -> Option<String> {
        let frame = matches!(
            request,
            Request::VxlanSend { .. } | Request::UplinkSend { .. } | Request::VxlanDeliver { .. }
        );
        match result {
            Ok(()) => {
                match request {
                    Request::VxlanSend { .. } | Request::UplinkSend { .. } => {
                        self.counters.sent += 1
                    }
                    Request::VxlanDeliver { .. } => self.counters.delivered += 1,
                    _ => {}
                }
                None
            }
            Err(e) => {
                if frame {
                    self.counters.drops += 1;
                }
                Some(format!("  {} not written: {e}", request_name(request)))
            }
        }
    }

    /// The summary printed when the agent stops.
    pub fn summary(&self) -> String {
        format!(
            "vxlan-agent: summary: {} fdb_entries={} neigh_entries={}",
            self.counters,
            self.fdb.len(),
            self.neigh.len()
        )
    }
}

/// The `op` of a request, for logs.
fn request_name(r: &Request) -> String {
    serde_json::to_value(r)
        .ok()
        .and_then(|v| v["op"].as_str().map(str::to_string))
        .unwrap_or_else(|| "request".into())
}

// ------------------------------------------------------------ the loop

/// Why the agent's loop ended other than by its stop flag.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("control socket {path}: {error}")]
    Connect { path: String, error: io::Error },
    #[error("control socket: {0}")]
    Io(#[from] io::Error),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the card refused {0}")]
    Refused(String),
    #[error("vnicd closed the control connection")]
    Closed,
    #[error("netdev {name}: {error}")]
    Netdev { name: String, error: io::Error },
    #[error("netdev {0} went away")]
    NetdevGone(String),
}

/// How long a request may wait for its answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(30);
/// How often the event loop looks at the stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// Longest line read from the card.
const MAX_LINE: usize = 16 * 1024 * 1024;

/// One control connection, line by line. Reads keep partial lines across
/// timeouts, so a short read timeout is safe.
struct Line {
    reader: BufReader<UnixStream>,
    writer: UnixStream,
    partial: Vec<u8>,
}

impl Line {
    fn open(path: &Path) -> Result<Line, AgentError> {
        let s = UnixStream::connect(path).map_err(|error| AgentError::Connect {
            path: path.display().to_string(),
            error,
        })?;
        s.set_read_timeout(Some(ANSWER_TIMEOUT))?;
        s.set_write_timeout(Some(ANSWER_TIMEOUT))?;
        Ok(Line {
            writer: s.try_clone()?,
            reader: BufReader::new(s),
            partial: Vec::new(),
        })
    }

    /// The next whole line; `Ok(None)` if none came before the read
    /// timeout. EOF is [`AgentError::Closed`].
    fn next(&mut self) -> Result<Option<String>, AgentError> {
        loop {
            let limit = (MAX_LINE + 1).saturating_sub(self.partial.len()) as u64;
            match (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut self.partial)
            {
                Ok(0) => return Err(AgentError::Closed),
                Ok(_) if self.partial.ends_with(b"\n") => {
                    let mut line = std::mem::take(&mut self.partial);
                    line.pop();
                    return String::from_utf8(line)
                        .map(Some)
                        .map_err(|_| AgentError::Protocol("a line that is not UTF-8".into()));
                }
                Ok(_) if self.partial.len() > MAX_LINE => {
                    return Err(AgentError::Protocol(format!(
                        "a line longer than {MAX_LINE} bytes"
                    )))
                }
                Ok(_) => {}
                Err(e)
                    if matches!(
                        e.kind(),
                        io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                    ) =>
                {
                    return Ok(None)
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Sends `request`; the card's answer: its result, or its refusal.
    fn call(&mut self, request: &Request) -> Result<Result<Value, String>, AgentError> {
        let mut line = serde_json::to_string(request).expect("requests serialise");
        line.push('\n');
        if let Err(e) = self.writer.write_all(line.as_bytes()) {
            // vnicd may have closed the connection after saying why in an
            // error answer (no free slot, or displaced by a newcomer): take
            // that as the answer.
            let refusal = (self.next().ok().flatten())
                .and_then(|a| serde_json::from_str::<Response>(&a).ok())
                .filter(|r| !r.ok);
            return match refusal {
                Some(r) => Ok(Err(r
                    .error
                    .unwrap_or_else(|| "refused without a reason".into()))),
                None => Err(e.into()),
            };
        }
        let answer = self
            .next()?
            .ok_or_else(|| AgentError::Protocol("no answer within 30 s".into()))?;
        let r: Response = serde_json::from_str(&answer)
            .map_err(|e| AgentError::Protocol(format!("not an answer ({e}): {answer}")))?;
        Ok(if r.ok {
            Ok(r.result.unwrap_or(Value::Null))
        } else {
            Err(r.error.unwrap_or_else(|| "refused without a reason".into()))
        })
    }
}

/// The card's VTEP, from `vxlan-list`.
fn read_vtep(conn: &mut Line) -> Result<Option<Vtep>, AgentError> {
    match conn.call(&Request::VxlanList {})? {
        Ok(v) => serde_json::from_value::<VxlanListInfo>(v)
            .map(|l| l.vtep)
            .map_err(|e| AgentError::Protocol(format!("vxlan-list answer: {e}"))),
        Err(e) => Err(AgentError::Refused(format!("vxlan-list: {e}"))),
    }
}

/// Runs `agent` against the card at `control` until `stop` is set:
/// subscribes on one connection, sends requests on another, and logs one
/// line per decision to `log`. Writes `vxlan-agent: ready ...` to `log`
/// once subscribed. Returns when stopped (`Ok`), or with an error if the
/// card goes away or breaks the protocol; `agent` keeps its counters
/// either way.
pub fn run(
    agent: &mut Agent,
    control: &Path,
    stop: &AtomicBool,
    log: &mut dyn Write,
) -> Result<(), AgentError> {
    serve(agent, control, stop, log)
}

fn serve(
    agent: &mut Agent,
    control: &Path,
    stop: &AtomicBool,
    log: &mut dyn Write,
) -> Result<(), AgentError> {
    let mut requests = Line::open(control)?;
    let mut events = Line::open(control)?;
    match events.call(&Request::Subscribe {})? {
        Ok(_) => {}
        Err(e) => return Err(AgentError::Refused(format!("subscribe: {e}"))),
    }
    agent.set_vtep(read_vtep(&mut requests)?);
    events.reader.get_ref().set_read_timeout(Some(STOP_POLL))?;
    let vtep = agent
        .vtep
        .map_or("none".to_string(), |v| format!("{} {}", v.mac, v.ip));
    let _ = writeln!(
        log,
        "vxlan-agent: ready: variant {}, vtep {vtep}, fdb {}, neigh {}",
        agent.variant,
        describe_fdb(agent),
        describe_neigh(agent)
    );
    while !stop.load(Ordering::Relaxed) {
        let Some(line) = events.next()? else {
            continue;
        };
        let event = match serde_json::from_str::<Event>(&line) {
            Ok(e) => e,
            // An event of a newer vnicd: not ours to handle.
            Err(_) => continue,
        };
        if matches!(event, Event::VxlanMiss { .. })
            && agent.variant == Variant::B
            && agent.vtep.is_none()
        {
            // The VTEP may have been set since the agent started.
            agent.set_vtep(read_vtep(&mut requests)?);
        }
        if let Event::VxlanEvicted { vni, mac, tunnel } = &event {
            let _ = writeln!(
                log,
                "vxlan-agent: evicted vni {vni} {mac} (tunnel {tunnel})"
            );
        }
        let Some(decision) = agent.on_event(&event) else {
            continue;
        };
        let _ = writeln!(log, "vxlan-agent: {}", decision.log);
        for request in &decision.requests {
            let answer = requests.call(request)?;
            let note = agent.answered(request, answer.as_ref().map_err(String::as_str));
            if let Some(note) = note {
                let _ = writeln!(log, "vxlan-agent: {note}");
            }
        }
    }
    Ok(())
}

pub(crate) fn describe_fdb(agent: &Agent) -> String {
    let mut v: Vec<String> = agent
        .fdb
        .iter()
        .map(|(m, (ip, _))| format!("{m}={ip}"))
        .collect();
    v.sort();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

pub(crate) fn describe_neigh(agent: &Agent) -> String {
    let mut v: Vec<String> = agent
        .neigh
        .iter()
        .map(|(ip, (m, _))| format!("{ip}={m}"))
        .collect();
    v.sort();
    if v.is_empty() {
        "-".into()
    } else {
        v.join(",")
    }
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Sets the returned flag on SIGTERM and SIGINT (instead of dying), so
/// [`run`] can stop between events and the summary can be printed.
pub fn stop_on_signals() -> io::Result<&'static AtomicBool> {
    for sig in [libc::SIGTERM, libc::SIGINT] {
        // SAFETY: a zeroed sigaction is a valid start; the handler only
        // stores to an atomic, which is async-signal-safe.
        let rc = unsafe {
            let mut sa: libc::sigaction = std::mem::zeroed();
            sa.sa_sigaction = on_stop_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
            libc::sigemptyset(&mut sa.sa_mask);
            libc::sigaction(sig, &sa, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(&STOP)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vxlan::wire::{decapsulate, ipv4_checksum, source_port, OUTER_LEN, VXLAN_PORT};

    const VNI: u32 = 100;
    const IP_B: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const IP_C: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 3);
    const VTEP_B: Mac = Mac([2, 0x76, 0x6e, 0xff, 0, 2]);
    const VTEP_C: Mac = Mac([2, 0x76, 0x6e, 0xff, 0, 3]);
    const GUEST_A: Mac = Mac([2, 0x76, 0x6e, 1, 1, 0]);
    const GUEST_B: Mac = Mac([2, 0x76, 0x6e, 2, 1, 0]);

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = dst.0.to_vec();
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend(0..46u8);
        f
    }

    fn config(fdb: &[&str], neigh: &[&str], variant: Variant) -> Config {
        Config {
            fdb: fdb.iter().map(|s| s.parse().unwrap()).collect(),
            neigh: neigh.iter().map(|s| s.parse().unwrap()).collect(),
            variant,
        }
    }

    fn default_agent(variant: Variant) -> Agent {
        Agent::new(&config(
            &["00:00:00:00:00:00=10.1.0.2"],
            &["10.1.0.2=02:76:6e:ff:00:02"],
            variant,
        ))
    }

    #[test]
    fn arguments_parse_and_bad_ones_are_refused() {
        let f: FdbArg = "00:00:00:00:00:00=10.1.0.2".parse().unwrap();
        assert_eq!((f.mac, f.ip), (DEFAULT_MAC, IP_B));
        let n: NeighArg = "10.1.0.2=02:76:6E:ff:00:02".parse().unwrap();
        assert_eq!((n.ip, n.mac), (IP_B, VTEP_B));
        for bad in [
            "00:00:00:00:00:00",
            "00:00:00:00:00=10.1.0.2",
            "00:00:00:00:00:00=10.1.0",
            "02:00:00:00:00:01=0.0.0.0",
            "02:00:00:00:00:01=224.0.0.1",
        ] {
            assert!(bad.parse::<FdbArg>().is_err(), "{bad}");
        }
        for bad in [
            "10.1.0.2",
            "10.1.0.2=ff:ff:ff:ff:ff:ff",
            "10.1.0.2=00:00:00:00:00:00",
            "x=02:00:00:00:00:01",
            "255.255.255.255=02:00:00:00:00:01",
        ] {
            assert!(bad.parse::<NeighArg>().is_err(), "{bad}");
        }
        assert_eq!("b".parse::<Variant>(), Ok(Variant::B));
        assert!("c".parse::<Variant>().is_err());
    }

    #[test]
    fn a_broadcast_miss_uses_the_default_entry_and_variant_a_returns_the_frame() {
        let mut a = default_agent(Variant::A);
        let f = frame(Mac::BROADCAST, GUEST_A);
        let d = a.on_miss(VNI, "vf0", 0, &f);
        assert_eq!(
            d.requests,
            vec![
                Request::VxlanAdd {
                    vni: VNI,
                    mac: Mac::BROADCAST,
                    remote_ip: IP_B,
                    remote_mac: VTEP_B
                },
                Request::VxlanSend {
                    vni: VNI,
                    frame: Frame(f.clone())
                },
            ]
        );
        assert!(
            d.log
                .contains("ff:ff:ff:ff:ff:ff: 10.1.0.2 via 02:76:6e:ff:00:02"),
            "{}",
            d.log
        );
        assert_eq!(a.counters.requests, 1);
        assert_eq!(a.counters.installs, 1);
        assert_eq!(
            a.answered(&d.requests[1], Ok(&serde_json::json!({"sent": true}))),
            None
        );
        assert_eq!(a.counters.sent, 1);
        // The card missed again (the entry was deleted meanwhile): a drop.
        assert!(a
            .answered(&d.requests[1], Ok(&serde_json::json!({"sent": false})))
            .is_some());
        assert_eq!(a.counters.drops, 1);
    }

    #[test]
    fn a_specific_fdb_entry_wins_over_the_default() {
        let mut a = Agent::new(&config(
            &["00:00:00:00:00:00=10.1.0.2", "02:76:6e:02:01:00=10.1.0.3"],
            &["10.1.0.2=02:76:6e:ff:00:02", "10.1.0.3=02:76:6e:ff:00:03"],
            Variant::A,
        ));
        assert_eq!(a.resolve(GUEST_B), Ok((IP_C, VTEP_C)));
        assert_eq!(a.resolve(Mac([2, 0, 0, 0, 0, 9])), Ok((IP_B, VTEP_B)));
        let d = a.on_miss(VNI, "vf0", 1, &frame(GUEST_B, GUEST_A));
        assert!(
            matches!(d.requests[0], Request::VxlanAdd { remote_ip, remote_mac, .. }
            if remote_ip == IP_C && remote_mac == VTEP_C)
        );
    }

    #[test]
    fn unresolvable_misses_are_dropped_and_logged() {
        // No FDB at all.
        let mut a = Agent::new(&Config::default());
        let d = a.on_miss(VNI, "vf0", 0, &frame(Mac::BROADCAST, GUEST_A));
        assert!(d.requests.is_empty());
        assert!(
            d.log.contains("no FDB entry") && d.log.ends_with("dropped"),
            "{}",
            d.log
        );
        // An FDB entry but no neighbour for its VTEP.
        let mut a = Agent::new(&config(&["00:00:00:00:00:00=10.1.0.2"], &[], Variant::A));
        let d = a.on_miss(VNI, "vf0", 0, &frame(Mac::BROADCAST, GUEST_A));
        assert!(d.requests.is_empty());
        assert!(
            d.log.contains("no neighbour entry for 10.1.0.2"),
            "{}",
            d.log
        );
        // A runt.
        let d = a.on_miss(VNI, "vf0", 0, &[1, 2, 3]);
        assert!(d.requests.is_empty());
        assert_eq!(a.counters.requests, 2);
        assert_eq!(a.counters.drops, 2);
        assert_eq!(a.counters.installs, 0);
    }

    #[test]
    fn variant_b_builds_the_outer_frame_like_the_card() {
        let mut a = default_agent(Variant::B);
        let f = frame(GUEST_B, GUEST_A);
        // Without a VTEP it installs but cannot encapsulate.
        let d = a.on_miss(VNI, "vf0", 0, &f);
        assert_eq!(d.requests.len(), 1);
        assert!(d.log.contains("no VTEP"), "{}", d.log);
        assert_eq!(a.counters.drops, 1);

        let vtep = Vtep {
            mac: Mac([2, 0x76, 0x6e, 0xff, 0, 1]),
            ip: Ipv4Addr::new(10, 1, 0, 1),
        };
        a.set_vtep(Some(vtep));
        let mut sent = Vec::new();
        for _ in 0..2 {
            let d = a.on_miss(VNI, "vf0", 0, &f);
            assert_eq!(d.requests.len(), 2);
            let Request::UplinkSend { frame: Frame(out) } = &d.requests[1] else {
                panic!("{:?}", d.requests[1]);
            };
            sent.push(out.clone());
        }
        let out = &sent[0];
        assert_eq!(out.len(), OUTER_LEN + f.len());
        assert_eq!(&out[0..6], &VTEP_B.0, "next hop");
        assert_eq!(&out[6..12], &vtep.mac.0, "VTEP MAC");
        assert_eq!(&out[12..14], &[0x08, 0x00]);
        let ip = &out[14..34];
        assert_eq!(ip[0], 0x45);
        assert_eq!(ipv4_checksum(ip), 0, "header checksum");
        assert_eq!(&ip[12..16], &[10, 1, 0, 1]);
        assert_eq!(&ip[16..20], &[10, 1, 0, 2]);
        let udp = &out[34..42];
        assert_eq!(u16::from_be_bytes([udp[0], udp[1]]), source_port(&f));
        assert_eq!(u16::from_be_bytes([udp[2], udp[3]]), VXLAN_PORT);
        assert_eq!(&out[42..50], &[0x08, 0, 0, 0, 0, 0, 100, 0]);
        // The card at 10.1.0.2 would take it apart into the same frame.
        let d = decapsulate(out, IP_B).expect("VxLAN for 10.1.0.2");
        assert_eq!(
            (d.vni, d.outer_src_ip, d.outer_src_mac),
            (VNI, vtep.ip, vtep.mac)
        );
        assert_eq!(&out[d.inner], &f[..]);
        // Each outer frame gets the next identification.
        let id = |o: &Vec<u8>| u16::from_be_bytes([o[18], o[19]]);
        assert_eq!(id(&sent[1]), id(&sent[0]).wrapping_add(1));
    }

    #[test]
    fn a_punt_teaches_the_sender_then_delivers() {
        let mut a = default_agent(Variant::A);
        let f = frame(GUEST_A, GUEST_B);
        let d = a.on_punt(VNI, IP_C, VTEP_C, PuntReason::Unknown, &f);
        assert_eq!(
            d.requests,
            vec![
                Request::VxlanAdd {
                    vni: VNI,
                    mac: GUEST_B,
                    remote_ip: IP_C,
                    remote_mac: VTEP_C
                },
                Request::VxlanDeliver {
                    vni: VNI,
                    frame: Frame(f.clone())
                },
            ]
        );
        assert_eq!(a.fdb(GUEST_B), Some((IP_C, Origin::Learned)));
        assert_eq!(a.neighbour(IP_C), Some((VTEP_C, Origin::Learned)));
        assert_eq!(a.counters.learned, 2);
        assert!(d.log.contains("fdb 02:76:6e:02:01:00 learned"), "{}", d.log);
        // What was learned now resolves misses without the default.
        assert_eq!(a.resolve(GUEST_B), Ok((IP_C, VTEP_C)));
        // The sender moves to 10.1.0.2: the learned entry follows it.
        let d = a.on_punt(VNI, IP_B, VTEP_B, PuntReason::Moved, &f);
        assert_eq!(d.requests.len(), 2);
        assert!(d.log.contains("moved from 10.1.0.3"), "{}", d.log);
        assert_eq!(a.fdb(GUEST_B), Some((IP_B, Origin::Learned)));
        assert_eq!(a.counters.punts, 2);
        assert_eq!(a.counters.installs, 2);
        assert_eq!(
            a.answered(&d.requests[1], Ok(&serde_json::json!({"delivered": 1}))),
            None
        );
        assert_eq!(a.counters.delivered, 1);
    }

    #[test]
    fn static_entries_are_not_replaced_by_learning() {
        let mut a = Agent::new(&config(
            &["02:76:6e:02:01:00=10.1.0.2"],
            &["10.1.0.2=02:76:6e:ff:00:02"],
            Variant::A,
        ));
        // GUEST_B is statically at 10.1.0.2: a frame from it via 10.1.0.3
        // is dropped, as Linux's vxlan does.
        let d = a.on_punt(
            VNI,
            IP_C,
            VTEP_C,
            PuntReason::Moved,
            &frame(GUEST_A, GUEST_B),
        );
        assert!(d.requests.is_empty(), "{d:?}");
        assert!(
            d.log.contains("static FDB entry says 10.1.0.2"),
            "{}",
            d.log
        );
        assert_eq!(a.counters.drops, 1);
        // The static neighbour stays; the tunnel still gets the MAC the
        // frame came from, which the card checks on receive.
        let other = Mac([2, 0, 0, 0, 0, 0x42]);
        let d = a.on_punt(
            VNI,
            IP_B,
            other,
            PuntReason::Unknown,
            &frame(GUEST_A, GUEST_B),
        );
        assert!(
            matches!(d.requests[0], Request::VxlanAdd { remote_mac, .. } if remote_mac == other)
        );
        assert_eq!(a.neighbour(IP_B), Some((VTEP_B, Origin::Static)));
        assert!(d.log.contains("stays static"), "{}", d.log);
    }

    #[test]
    fn punts_with_bad_sources_are_dropped() {
        let mut a = default_agent(Variant::A);
        let d = a.on_punt(
            VNI,
            IP_B,
            VTEP_B,
            PuntReason::Unknown,
            &frame(GUEST_A, Mac::BROADCAST),
        );
        assert!(d.requests.is_empty());
        let d = a.on_punt(VNI, IP_B, VTEP_B, PuntReason::Unknown, &[0; 10]);
        assert!(d.requests.is_empty());
        let d = a.on_punt(
            VNI,
            Ipv4Addr::UNSPECIFIED,
            VTEP_B,
            PuntReason::Unknown,
            &frame(GUEST_A, GUEST_B),
        );
        assert!(d.requests.is_empty());
        assert_eq!(a.counters.drops, 3);
        assert_eq!(a.fdb(GUEST_B), None);
    }

    #[test]
    fn other_events_need_nothing_and_refusals_count() {
        let mut a = default_agent(Variant::A);
        let e = Event::LinkChanged {
            function: "vf0".into(),
            up: true,
        };
        assert_eq!(a.on_event(&e), None);
        let e = Event::VxlanMiss {
            vni: VNI,
            function: "vf0".into(),
            vnic: 0,
            frame: Frame(frame(Mac::BROADCAST, GUEST_A)),
        };
        let d = a.on_event(&e).expect("a decision");
        assert_eq!(d.requests.len(), 2);
        let note = a.answered(&d.requests[1], Err("VNI 100 has no VF"));
        assert!(note
            .unwrap()
            .contains("vxlan-send refused: VNI 100 has no VF"));
        assert_eq!((a.counters.refused, a.counters.drops), (1, 1));
        assert!(
            a.summary()
                .contains("requests=1 punts=0 installs=1 drops=1"),
            "{}",
            a.summary()
        );
    }
}
