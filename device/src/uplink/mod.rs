//! The card's uplink, the "physical port" (docs/vxlan.md, "Uplink
//! backends"): where unknown unicast, floods of VLAN-attribute VFs and
//! VxLAN-encapsulated frames leave the card, and where frames from the
//! outside come in.
//!
//! Backends: `none` (frames are counted and dropped), `tap:NAME` (a TAP
//! device on the host) and `udp:LOCAL,REMOTE` (one datagram per frame,
//! so two vnicd processes are two hosts joined by a wire). Every backend is
//! non-blocking: a frame that cannot be written now is dropped and counted,
//! as a real port with a full transmit FIFO would, and never stalls the
//! event loop.

mod tap;
mod udp;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::str::FromStr;

use log::warn;

use crate::capture::Capture;

/// Longest frame read from the uplink: a UDP datagram's or a TAP read's
/// maximum, far above any frame the card switches (those are dropped later,
/// where they are too long for a receive buffer).
pub const MAX_UPLINK_FRAME: usize = 65535;

/// Longest TAP interface name (IFNAMSIZ without its NUL).
const MAX_IFNAME: usize = 15;

/// `vnicd --uplink`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UplinkSpec {
    #[default]
    None,
    Tap(String),
    Udp {
        local: SocketAddr,
        remote: SocketAddr,
    },
}

/// Why an `--uplink` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadUplink {
    #[error("{0:?}: want none, tap:NAME or udp:LOCAL_IP:PORT,REMOTE_IP:PORT")]
    Kind(String),
    #[error(
        "tap:{0:?}: an interface name is 1 to {MAX_IFNAME} characters without '/', ':' or spaces"
    )]
    TapName(String),
    #[error("udp:{0:?}: want LOCAL_IP:PORT,REMOTE_IP:PORT")]
    UdpPair(String),
    #[error("udp: {0:?} is not an IP:PORT address")]
    UdpAddress(String),
}

impl FromStr for UplinkSpec {
    type Err = BadUplink;

    fn from_str(s: &str) -> Result<Self, BadUplink> {
        if s == "none" {
            return Ok(UplinkSpec::None);
        }
        if let Some(name) = s.strip_prefix("tap:") {
            let ok = (1..=MAX_IFNAME).contains(&name.len())
                && name != "."
                && name != ".."
                && name
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'/' && b != b':');
            return if ok {
                Ok(UplinkSpec::Tap(name.to_string()))
            } else {
                Err(BadUplink::TapName(name.to_string()))
            };
        }
        if let Some(pair) = s.strip_prefix("udp:") {
            let (local, remote) = pair
                .split_once(',')
                .ok_or_else(|| BadUplink::UdpPair(pair.to_string()))?;
            let addr = |a: &str| {
                a.trim()
                    .parse::<SocketAddr>()
                    .map_err(|_| BadUplink::UdpAddress(a.to_string()))
            };
            return Ok(UplinkSpec::Udp {
                local: addr(local)?,
                remote: addr(remote)?,
            });
        }
        Err(BadUplink::Kind(s.to_string()))
    }
}

impl fmt::Display for UplinkSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UplinkSpec::None => f.write_str("none"),
            UplinkSpec::Tap(name) => write!(f, "tap:{name}"),
            UplinkSpec::Udp { local, remote } => write!(f, "udp:{local},{remote}"),
        }
    }
}

/// Why an uplink could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum UplinkError {
    #[error("uplink tap:{0}: {1}")]
    Tap(String, io::Error),
    #[error("uplink udp:{0}: {1}")]
    Udp(SocketAddr, io::Error),
}

/// Uplink counters (`stats`, card section).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct UplinkCounters {
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames that could not be written (EAGAIN, ENOBUFS, ...): dropped.
    pub tx_errors: u64,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Malformed frames, unknown unicast, datagrams from a stranger.
    pub rx_dropped: u64,
}

impl UplinkCounters {
    /// Name and value of each, as `stats` shows them.
    pub fn named(&self) -> [(&'static str, u64); 6] {
        [
            ("uplink_tx_frames", self.tx_frames),
            ("uplink_tx_bytes", self.tx_bytes),
            ("uplink_tx_errors", self.tx_errors),
            ("uplink_rx_frames", self.rx_frames),
            ("uplink_rx_bytes", self.rx_bytes),
            ("uplink_rx_dropped", self.rx_dropped),
        ]
    }
}

/// What one read from the backend gave.
enum Received {
    /// A frame of this many bytes is in the buffer.
    Frame(usize),
    /// Something that is not a frame of our wire (a datagram from another
    /// sender): counted and skipped.
    Stranger,
    /// A transient error (an ICMP error queued on the socket): skipped.
    Transient,
    /// Nothing waiting.
    Empty,
}

/// What [`Uplink::recv`] got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RecvOutcome {
    /// A frame, now in the caller's buffer.
    Frame,
    /// Something that was not a frame for the card (counted if it came from
    /// a stranger); more may wait.
    Skipped,
    /// Nothing is waiting.
    Empty,
}

enum Backend {
    None,
    Tap(tap::Tap),
    Udp(udp::Udp),
    /// Frames kept in memory, for the card's unit tests and fuzzers.
    #[cfg(any(test, feature = "test-utils"))]
    Memory {
        sent: Vec<Vec<u8>>,
        incoming: std::collections::VecDeque<Vec<u8>>,
    },
}

/// The uplink port: a backend and its counters.
pub struct Uplink {
    spec: UplinkSpec,
    backend: Backend,
    pub counters: UplinkCounters,
    /// Read buffer, allocated once.
    buf: Vec<u8>,
}

impl Uplink {
    /// The `none` uplink.
    pub fn none() -> Self {
        Uplink {
            spec: UplinkSpec::None,
            backend: Backend::None,
            counters: UplinkCounters::default(),
            buf: Vec::new(),
        }
    }

    /// Opens the backend `spec` names.
    pub fn open(spec: &UplinkSpec) -> Result<Self, UplinkError> {
        let backend = match spec {
            UplinkSpec::None => Backend::None,
            UplinkSpec::Tap(name) => {
                Backend::Tap(tap::Tap::open(name).map_err(|e| UplinkError::Tap(name.clone(), e))?)
            }
            UplinkSpec::Udp { local, remote } => Backend::Udp(
                udp::Udp::open(*local, *remote).map_err(|e| UplinkError::Udp(*local, e))?,
            ),
        };
        Ok(Uplink {
            spec: spec.clone(),
            backend,
            counters: UplinkCounters::default(),
            buf: vec![0; MAX_UPLINK_FRAME],
        })
    }

    /// The backend `spec` names, on the descriptor an earlier worker
    /// opened for it (docs/restart.md): a TAP device cannot be attached
    /// twice, nor a UDP port bound twice, while the keeper holds them.
    pub fn adopt(spec: &UplinkSpec, fd: std::os::fd::OwnedFd) -> Result<Self, UplinkError> {
        let backend = match spec {
            UplinkSpec::None => Backend::None,
            UplinkSpec::Tap(_) => Backend::Tap(tap::Tap::adopt(fd.into())),
            UplinkSpec::Udp { local, remote } => Backend::Udp(
                udp::Udp::adopt(fd.into(), *remote).map_err(|e| UplinkError::Udp(*local, e))?,
            ),
        };
        Ok(Uplink {
            spec: spec.clone(),
            backend,
            counters: UplinkCounters::default(),
            buf: vec![0; MAX_UPLINK_FRAME],
        })
    }

    /// The backend's descriptor, to keep for the next worker.
    pub fn descriptor(&self) -> Option<std::os::fd::BorrowedFd<'_>> {
        // SAFETY: the backend owns the descriptor and outlives the borrow,
        // which is tied to `self`.
        self.fd()
            .map(|fd| unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) })
    }

    pub fn spec(&self) -> &UplinkSpec {
        &self.spec
    }

    /// The descriptor the event loop watches for frames coming in.
    pub fn fd(&self) -> Option<RawFd> {
        match &self.backend {
            Backend::None => None,
            Backend::Tap(t) => Some(t.fd()),
            Backend::Udp(u) => Some(u.fd()),
            #[cfg(any(test, feature = "test-utils"))]
            Backend::Memory { .. } => None,
        }
    }

    /// Sends one frame out of the port (recording it in `capture` if that
    /// captures the uplink). Failures are counted, never returned: the
    /// sender's frame has left the card either way.
    pub fn send(&mut self, frame: &[u8], capture: Option<&mut Capture>) {
        if let Some(c) = capture.filter(|c| c.wants_uplink_tx()) {
            c.record(frame);
        }
        let result = match &mut self.backend {
            Backend::None => Ok(()),
            Backend::Tap(t) => t.send(frame),
            Backend::Udp(u) => u.send(frame),
            #[cfg(any(test, feature = "test-utils"))]
            Backend::Memory { sent, .. } => {
                sent.push(frame.to_vec());
                Ok(())
            }
        };
        match result {
            Ok(()) => {
                self.counters.tx_frames += 1;
                self.counters.tx_bytes += frame.len() as u64;
            }
            Err(e) => {
                self.counters.tx_errors += 1;
                if e.kind() != io::ErrorKind::WouldBlock && e.raw_os_error() != Some(libc::ENOBUFS)
                {
                    warn!("uplink {}: frame dropped: {e}", self.spec);
                }
            }
        }
    }

    /// Reads one thing from the port: a frame goes into `out` (replacing
    /// its contents). The caller bounds how many it reads per turn,
    /// skipped ones included.
    pub fn recv(&mut self, out: &mut Vec<u8>) -> io::Result<RecvOutcome> {
        let got = match &mut self.backend {
            Backend::None => Received::Empty,
            Backend::Tap(t) => t.recv(&mut self.buf)?,
            Backend::Udp(u) => u.recv(&mut self.buf)?,
            #[cfg(any(test, feature = "test-utils"))]
            Backend::Memory { incoming, .. } => match incoming.pop_front() {
                Some(f) => {
                    self.buf.clear();
                    self.buf.extend_from_slice(&f);
                    Received::Frame(f.len())
                }
                None => Received::Empty,
            },
        };
        Ok(match got {
            Received::Empty => RecvOutcome::Empty,
            Received::Transient => RecvOutcome::Skipped,
            Received::Stranger => {
                self.counters.rx_dropped += 1;
                RecvOutcome::Skipped
            }
            Received::Frame(n) => {
                out.clear();
                out.extend_from_slice(&self.buf[..n]);
                self.counters.rx_frames += 1;
                self.counters.rx_bytes += n as u64;
                RecvOutcome::Frame
            }
        })
    }
}

#[cfg(any(test, feature = "test-utils"))]
impl Uplink {
    /// An uplink whose frames stay in memory.
    pub fn memory() -> Self {
        Uplink {
            spec: UplinkSpec::None,
            backend: Backend::Memory {
                sent: Vec::new(),
                incoming: Default::default(),
            },
            counters: UplinkCounters::default(),
            buf: Vec::new(),
        }
    }

    /// Frames sent since the last call.
    pub fn take_sent(&mut self) -> Vec<Vec<u8>> {
        match &mut self.backend {
            Backend::Memory { sent, .. } => std::mem::take(sent),
            _ => Vec::new(),
        }
    }

    /// A frame arriving from the wire.
    pub fn inject(&mut self, frame: Vec<u8>) {
        if let Backend::Memory { incoming, .. } = &mut self.backend {
            incoming.push_back(frame);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print_back() {
        for s in [
            "none",
            "tap:vx0",
            "udp:127.0.0.1:4000,127.0.0.1:4001",
            "udp:[::1]:1,[::1]:2",
        ] {
            assert_eq!(s.parse::<UplinkSpec>().unwrap().to_string(), s);
        }
        assert_eq!("tap:vnic-up".parse(), Ok(UplinkSpec::Tap("vnic-up".into())));
    }

    #[test]
    fn bad_specs_say_what_is_wrong() {
        for (bad, why) in [
            ("", "want none, tap:NAME"),
            ("eth0", "want none, tap:NAME"),
            ("tap:", "interface name"),
            ("tap:a/b", "interface name"),
            ("tap:0123456789abcdef", "interface name"),
            ("tap:a b", "interface name"),
            ("udp:127.0.0.1:4000", "want LOCAL_IP:PORT,REMOTE_IP:PORT"),
            (
                "udp:127.0.0.1,127.0.0.1:1",
                "\"127.0.0.1\" is not an IP:PORT",
            ),
            ("udp:1.2.3.4:1,host:2", "\"host:2\" is not"),
        ] {
            let e = bad.parse::<UplinkSpec>().unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
    }

    #[test]
    fn none_counts_and_drops_and_receives_nothing() {
        let mut u = Uplink::open(&UplinkSpec::None).unwrap();
        assert_eq!(u.fd(), None);
        u.send(&[0; 60], None);
        assert_eq!(u.counters.tx_frames, 1);
        assert_eq!(u.counters.tx_bytes, 60);
        let mut out = Vec::new();
        assert_eq!(u.recv(&mut out).unwrap(), RecvOutcome::Empty);
    }

    #[test]
    fn two_udp_uplinks_are_a_wire() {
        let a_addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Bind to free ports first, then cross the addresses.
        let probe_a = std::net::UdpSocket::bind(a_addr).unwrap();
        let probe_b = std::net::UdpSocket::bind(a_addr).unwrap();
        let (pa, pb) = (probe_a.local_addr().unwrap(), probe_b.local_addr().unwrap());
        drop((probe_a, probe_b));
        let mut a = Uplink::open(&UplinkSpec::Udp {
            local: pa,
            remote: pb,
        })
        .unwrap();
        let mut b = Uplink::open(&UplinkSpec::Udp {
            local: pb,
            remote: pa,
        })
        .unwrap();
        assert!(a.fd().is_some());
        let frame: Vec<u8> = (0..100u8).collect();
        a.send(&frame, None);
        let mut out = Vec::new();
        let mut got = false;
        for _ in 0..100 {
            if b.recv(&mut out).unwrap() == RecvOutcome::Frame {
                got = true;
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(got, "the datagram arrived");
        assert_eq!(out, frame);
        assert_eq!(b.counters.rx_frames, 1);
        // A datagram from anyone else is counted and skipped.
        let stranger = std::net::UdpSocket::bind(a_addr).unwrap();
        stranger.send_to(&frame, pb).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(b.recv(&mut out).unwrap(), RecvOutcome::Skipped);
        assert_eq!(b.recv(&mut out).unwrap(), RecvOutcome::Empty);
        assert_eq!(b.counters.rx_dropped, 1);
    }
}
