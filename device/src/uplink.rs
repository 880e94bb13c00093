//! The card's physical port (docs/vxlan.md, "Uplink backends"): where
//! unknown unicast and floods leave the switch and where frames from the
//! outside world come in.
//!
//! Backends: none (frames counted and dropped), a TAP device on the host,
//! or a UDP socket to another vnicd (one datagram per frame: two vnicd
//! instances with crossed addresses are two hosts joined by a wire). The
//! descriptor is non-blocking and served by vnicd's event loop; a frame the
//! backend cannot take right now is dropped and counted, as a port whose
//! transmit FIFO is full drops.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::str::FromStr;

use log::warn;

/// Largest frame the uplink carries: the card's 9216-byte frames plus a
/// VxLAN encapsulation (50 bytes) and an outer tag, rounded up.
pub const MAX_UPLINK_FRAME: usize = 9216 + 128;
/// Frames read from the uplink in one turn of the event loop, so that a
/// flood from outside cannot starve the vfio-user clients.
pub const RX_BATCH: usize = 64;

/// Which backend `--uplink` names.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum UplinkSpec {
    #[default]
    None,
    /// A TAP device of this name (created if missing).
    Tap(String),
    /// A UDP socket bound to `local` that sends to `remote`.
    Udp {
        local: SocketAddr,
        remote: SocketAddr,
    },
}

/// Why an `--uplink` value was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error(
    "bad uplink {0:?}: want none, tap:NAME (1 to 15 characters) or udp:LOCAL,REMOTE (IP:PORT each)"
)]
pub struct BadUplink(pub String);

impl FromStr for UplinkSpec {
    type Err = BadUplink;

    fn from_str(s: &str) -> Result<Self, BadUplink> {
        let bad = || BadUplink(s.to_string());
        if s == "none" {
            return Ok(UplinkSpec::None);
        }
        if let Some(name) = s.strip_prefix("tap:") {
            // IFNAMSIZ is 16 with the terminating NUL.
            let ok = (1..=15).contains(&name.len())
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
            return ok.then(|| UplinkSpec::Tap(name.into())).ok_or_else(bad);
        }
        let (local, remote) = s
            .strip_prefix("udp:")
            .and_then(|r| r.split_once(','))
            .ok_or_else(bad)?;
        Ok(UplinkSpec::Udp {
            local: local.parse().map_err(|_| bad())?,
            remote: remote.parse().map_err(|_| bad())?,
        })
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

/// Uplink counters (card counters `uplink_*` in `vnicctl stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UplinkStats {
    pub tx_frames: u64,
    pub tx_bytes: u64,
    /// Frames the backend refused (full, gone); with `none`, every frame.
    pub tx_errors: u64,
    pub rx_frames: u64,
    pub rx_bytes: u64,
    /// Frames from outside the switch could not take (malformed, unknown
    /// unicast), counted by the data path.
    pub rx_dropped: u64,
}

enum Backend {
    None,
    Tap(File),
    Udp(UdpSocket),
}

/// The card's uplink.
pub struct Uplink {
    spec: UplinkSpec,
    backend: Backend,
    pub stats: UplinkStats,
}

impl Default for Uplink {
    fn default() -> Self {
        Uplink {
            spec: UplinkSpec::None,
            backend: Backend::None,
            stats: UplinkStats::default(),
        }
    }
}

impl fmt::Debug for Uplink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Uplink({})", self.spec)
    }
}

impl Uplink {
    /// Opens the backend `spec` names.
    pub fn open(spec: &UplinkSpec) -> io::Result<Uplink> {
        let backend = match spec {
            UplinkSpec::None => Backend::None,
            UplinkSpec::Tap(name) => Backend::Tap(open_tap(name)?),
            UplinkSpec::Udp { local, remote } => {
                let s = UdpSocket::bind(local)?;
                s.connect(remote)?;
                s.set_nonblocking(true)?;
                Backend::Udp(s)
            }
        };
        Ok(Uplink {
            spec: spec.clone(),
            backend,
            stats: UplinkStats::default(),
        })
    }

    pub fn spec(&self) -> &UplinkSpec {
        &self.spec
    }

    /// The descriptor the event loop watches, if there is one.
    pub fn fd(&self) -> Option<RawFd> {
        match &self.backend {
            Backend::None => None,
            Backend::Tap(f) => Some(f.as_raw_fd()),
            Backend::Udp(s) => Some(s.as_raw_fd()),
        }
    }

    /// Sends one frame out of the port.
    pub fn send(&mut self, frame: &[u8]) {
        let r = match &mut self.backend {
            Backend::None => Err(io::ErrorKind::NotConnected.into()),
            Backend::Tap(f) => f.write(frame),
            Backend::Udp(s) => s.send(frame),
        };
        match r {
            Ok(n) if n == frame.len() => {
                self.stats.tx_frames += 1;
                self.stats.tx_bytes += n as u64;
            }
            Ok(_) | Err(_) => {
                self.stats.tx_errors += 1;
                if let (Err(e), false) = (r, matches!(self.backend, Backend::None)) {
                    if self.stats.tx_errors <= 10 || self.stats.tx_errors % 1000 == 0 {
                        warn!(
                            "uplink {}: frame dropped ({} so far): {e}",
                            self.spec, self.stats.tx_errors
                        );
                    }
                }
            }
        }
    }

    /// Reads the next frame into `buf`; None when nothing is waiting.
    pub fn recv(&mut self, buf: &mut [u8]) -> Option<usize> {
        let r = match &mut self.backend {
            Backend::None => return None,
            Backend::Tap(f) => f.read(buf),
            Backend::Udp(s) => s.recv(buf),
        };
        match r {
            Ok(n) => {
                self.stats.rx_frames += 1;
                self.stats.rx_bytes += n as u64;
                Some(n)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => {
                // A UDP peer that is not there yet reports ECONNREFUSED
                // on the next read: nothing to read, and not a failure.
                if e.kind() != io::ErrorKind::ConnectionRefused {
                    warn!("uplink {}: read: {e}", self.spec);
                }
                None
            }
        }
    }
}

/// Opens (creating if needed) TAP device `name`, without packet
/// information headers: one read or write is one Ethernet frame.
fn open_tap(name: &str) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads an ifreq, which `req` is, from a valid fd.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(file)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse_and_print() {
        for s in ["none", "tap:vnicup0", "udp:127.0.0.1:5001,127.0.0.1:5002"] {
            let spec: UplinkSpec = s.parse().unwrap();
            assert_eq!(spec.to_string(), s);
        }
        for bad in [
            "",
            "tap:",
            "tap:a-name-that-is-too-long",
            "tap:a/b",
            "udp:127.0.0.1:5001",
            "udp:127.0.0.1,127.0.0.1:2",
            "eth0",
        ] {
            assert!(bad.parse::<UplinkSpec>().is_err(), "{bad}");
        }
    }

    #[test]
    fn none_counts_and_drops_and_never_reads() {
        let mut u = Uplink::default();
        u.send(&[0; 60]);
        assert_eq!((u.stats.tx_frames, u.stats.tx_errors), (0, 1));
        assert_eq!(u.recv(&mut [0; 64]), None);
        assert_eq!(u.fd(), None);
    }

    #[test]
    fn two_udp_uplinks_are_a_wire() {
        let a_addr: SocketAddr = "127.0.0.1:0".parse().unwrap();
        // Ports picked by the kernel: bind, read back, then cross.
        let pa = UdpSocket::bind(a_addr).unwrap();
        let pb = UdpSocket::bind(a_addr).unwrap();
        let (la, lb) = (pa.local_addr().unwrap(), pb.local_addr().unwrap());
        drop((pa, pb));
        let mut a = Uplink::open(&UplinkSpec::Udp {
            local: la,
            remote: lb,
        })
        .unwrap();
        let mut b = Uplink::open(&UplinkSpec::Udp {
            local: lb,
            remote: la,
        })
        .unwrap();
        let frame: Vec<u8> = (0..1514).map(|i| i as u8).collect();
        a.send(&frame);
        let mut buf = vec![0; MAX_UPLINK_FRAME];
        let mut got = None;
        for _ in 0..100 {
            got = b.recv(&mut buf);
            if got.is_some() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert_eq!(got, Some(1514));
        assert_eq!(&buf[..1514], &frame[..]);
        assert_eq!((a.stats.tx_frames, b.stats.rx_bytes), (1, 1514));
    }
}
