//! The card's domain types: what the data path, the functions and
//! management all speak of (MAC addresses, VLANs, directions, link states,
//! rate policies, the VTEP, frames, guest addresses, and the events the
//! card reports). They live here, below everything that uses them, so that
//! the management API (`control::api`, the JSON schema) and the data path
//! both depend on them and not on each other. Their JSON forms (serde) are
//! part of the type, since management shows them as they are.

use std::fmt;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A MAC address.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Mac(pub [u8; 6]);

impl Mac {
    pub const BROADCAST: Mac = Mac([0xff; 6]);

    /// Group bit: broadcast and multicast.
    pub fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
}

impl fmt::Display for Mac {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

/// VLAN ID; 0 = untagged.
pub type Vlan = u16;
/// Largest VLAN ID (4095 is reserved by 802.1Q).
pub const MAX_VLAN: Vlan = 4094;
/// Largest frame a control message carries: a jumbo inner frame plus the
/// outer headers VxLAN adds.
pub const MAX_FRAME_BYTES: usize = 9216 + 64;

/// Addresses one vNIC's receive filter list holds at most (QP_RX_MODE's
/// COUNT): unicast and multicast together.
pub const MAX_FILTER_ADDRS: usize = 256;
/// Extra unicast addresses an untrusted VF may have, over all its vNICs,
/// unless the card was configured otherwise (Intel's ice driver allows
/// untrusted VFs 16 filters besides their own address and broadcast).
pub const DEFAULT_VF_MAX_ADDRS: u32 = 16;

/// What a vNIC's driver asked the card to receive besides frames to its
/// own MAC and broadcasts (QP_RX_MODE, docs/datapath.md "Address
/// filtering"). The card decides how much of it to grant.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RxFilter {
    /// Every frame of the vNIC's VLANs (only for a trusted function).
    pub promisc: bool,
    /// Every multicast frame.
    pub allmulti: bool,
    /// Extra unicast addresses (a macvlan's, a second MAC).
    pub unicast: Vec<Mac>,
    /// Multicast groups the vNIC joined.
    pub multicast: Vec<Mac>,
}

/// An Ethernet frame in a control message: lowercase hex in JSON, so a
/// request stays one line of text.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Frame(pub Vec<u8>);

/// Why a hex frame was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadFrame {
    #[error("frame hex has an odd number of digits")]
    OddLength,
    #[error("frame hex has a character that is not a hex digit")]
    NotHex,
    #[error("frame of {0} bytes is longer than {MAX_FRAME_BYTES}")]
    TooLong(usize),
}

impl Frame {
    /// Hex digit value, without allocating per digit.
    fn nibble(c: u8) -> Result<u8, BadFrame> {
        match c {
            b'0'..=b'9' => Ok(c - b'0'),
            b'a'..=b'f' => Ok(c - b'a' + 10),
            b'A'..=b'F' => Ok(c - b'A' + 10),
            _ => Err(BadFrame::NotHex),
        }
    }

    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut s = String::with_capacity(self.0.len() * 2);
        for &b in &self.0 {
            s.push(DIGITS[(b >> 4) as usize] as char);
            s.push(DIGITS[(b & 15) as usize] as char);
        }
        s
    }
}

impl FromStr for Frame {
    type Err = BadFrame;

    /// Checks the length before decoding, so a huge string costs nothing.
    fn from_str(s: &str) -> Result<Self, BadFrame> {
        let b = s.as_bytes();
        if b.len() % 2 != 0 {
            return Err(BadFrame::OddLength);
        }
        if b.len() / 2 > MAX_FRAME_BYTES {
            return Err(BadFrame::TooLong(b.len() / 2));
        }
        b.chunks_exact(2)
            .map(|p| Ok(Frame::nibble(p[0])? << 4 | Frame::nibble(p[1])?))
            .collect::<Result<Vec<u8>, BadFrame>>()
            .map(Frame)
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Frame({})", self.to_hex())
    }
}

impl Serialize for Frame {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Frame {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// The card's VTEP (docs/vxlan.md): outer source MAC and IPv4 address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Vtep {
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// Why a VxLAN frame from the uplink went to the host.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PuntReason {
    /// (VNI, inner source MAC) is not in the MAC table.
    Unknown,
    /// It is, but the outer source IP or MAC differ from its tunnel's.
    Moved,
}

/// A guest physical address: `"0x3e8a000"` in JSON (a plain number is
/// accepted too), since BAT addresses are read and compared in hex.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GuestAddr(pub u64);

/// Why a guest address string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad address {0:?}: want a number, 0x-prefixed for hex")]
pub struct BadAddr(pub String);

impl FromStr for GuestAddr {
    type Err = BadAddr;

    fn from_str(s: &str) -> Result<Self, BadAddr> {
        let t = s.trim();
        let v = match t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => t.parse(),
        };
        v.map(GuestAddr).map_err(|_| BadAddr(s.to_string()))
    }
}

impl fmt::Display for GuestAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#x}", self.0)
    }
}

impl Serialize for GuestAddr {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for GuestAddr {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Wire {
            Number(u64),
            Text(String),
        }
        match Wire::deserialize(d)? {
            Wire::Number(n) => Ok(GuestAddr(n)),
            Wire::Text(t) => t.parse().map_err(serde::de::Error::custom),
        }
    }
}

/// What became of a VCT entry given by management.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum VctState {
    /// Walked: queues whose contexts say RUNNING resumed.
    Committed,
    /// Waits for the guest's memory and Bus Master Enable.
    Pending,
    /// The BAT was refused (VCT_STATUS); nothing was written.
    Refused,
    /// Address 0: the entry is gone.
    Cleared,
}

/// Which way traffic flows, seen from the function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Direction {
    /// The function sending (its send queues).
    Tx,
    /// Frames switched to the function (its receive queues).
    Rx,
}

/// Administrative link state of a function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LinkState {
    /// Follows the card's port (up).
    #[default]
    Auto,
    Up,
    Down,
}

/// A rate policy (docs/management.md, "Rate limiting").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RatePolicy {
    /// Average rate (CIR), kbit/s.
    pub avg_kbps: u64,
    /// Peak rate (PIR), kbit/s; 0: no peak limit.
    #[serde(default)]
    pub peak_kbps: u64,
    /// Burst size (committed bucket depth), bytes.
    pub burst_bytes: u64,
}

/// Something that happened, sent to subscribers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "kebab-case")]
pub enum Event {
    ClientConnected {
        function: String,
    },
    ClientDisconnected {
        function: String,
    },
    VfsChanged {
        num_vfs: u16,
    },
    VnicsChanged {
        function: String,
        count: u32,
    },
    VnicChanged {
        function: String,
        vnic: u16,
        mac: Mac,
        vlan: u16,
    },
    LinkChanged {
        function: String,
        up: bool,
    },
    PolicyChanged {
        function: String,
    },
    CaptureStarted {
        path: PathBuf,
    },
    CaptureStopped {
        path: PathBuf,
        frames: u64,
    },
    Quiesced {
        function: String,
    },
    /// A function's live-migration mode changed (docs/migration.md).
    Migration {
        function: String,
        state: MigrationState,
    },
    Resumed {
        function: String,
    },
    VctChanged {
        function: String,
        address: GuestAddr,
        state: VctState,
    },
    /// TX of a VxLAN VF missed the tables: the host should resolve the
    /// destination and answer with the frame (docs/vxlan.md).
    VxlanMiss {
        vni: u32,
        function: String,
        vnic: u16,
        frame: Frame,
    },
    /// A VxLAN frame from the uplink the tables do not vouch for; `frame`
    /// is the decapsulated inner frame.
    VxlanPunt {
        vni: u32,
        outer_src_ip: Ipv4Addr,
        outer_src_mac: Mac,
        reason: PuntReason,
        frame: Frame,
    },
    /// A MAC entry left a full table.
    VxlanEvicted {
        vni: u32,
        mac: Mac,
        tunnel: u32,
    },
}

/// `vnicd --vxlan-capacity` when not given (docs/vxlan.md).
pub const DEFAULT_VXLAN_CAPACITY: u32 = 1024;

/// Why a MAC address string was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("bad MAC address {0:?}: want six hex bytes like 02:76:6e:00:01:00")]
pub struct BadMac(pub String);

impl FromStr for Mac {
    type Err = BadMac;

    fn from_str(s: &str) -> Result<Self, BadMac> {
        let bad = || BadMac(s.to_string());
        let mut m = [0u8; 6];
        let mut parts = s.split([':', '-']);
        for b in &mut m {
            let p = parts.next().ok_or_else(bad)?;
            if p.len() != 2 {
                return Err(bad());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
        }
        if parts.next().is_some() {
            return Err(bad());
        }
        Ok(Mac(m))
    }
}

impl Serialize for Mac {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Mac {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl fmt::Display for Direction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Direction::Tx => "tx",
            Direction::Rx => "rx",
        })
    }
}

impl fmt::Display for LinkState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            LinkState::Auto => "auto",
            LinkState::Up => "up",
            LinkState::Down => "down",
        })
    }
}

/// The process serving the card (docs/restart.md): `stats` shows it, and
/// `vnicctl list` under its table.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// The card worker's PID (vnicd's keeper, the PID a user started, is
    /// its parent).
    pub pid: u32,
    /// Workers that served before this one since vnicd started.
    pub restarts: u32,
    /// How the last one ended ("killed by signal 9 (SIGKILL)", "handed
    /// over to ...").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_exit: Option<String>,
    /// Its descriptors and state outlive it (a keeper or systemd keeps
    /// them).
    pub kept: bool,
    /// vnicd's keeper runs it: it can start a successor while this worker
    /// waits (`vnicctl restart`, `upgrade`).
    #[serde(default)]
    pub keeper: bool,
    /// Why the last hand-over this worker tried did not happen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub succession_failed: Option<String>,
}

/// The answer to `restart` and `upgrade`: the worker hands the card over
/// after this reply (docs/restart.md, "Planned restart and upgrade").
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SuccessionInfo {
    /// The worker handing over.
    pub pid: u32,
    /// The binary of the new worker.
    pub successor: std::path::PathBuf,
}

/// Control clients the card closed or turned away, by reason (card-wide
/// `stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[repr(C)]
pub struct ControlCounters {
    /// Newcomers refused: every slot held by a subscriber or a client with
    /// work in progress.
    pub refused: u64,
    /// Idle clients closed to make room for a newcomer.
    pub displaced: u64,
    /// Clients closed for completing no request within the timeout.
    pub timed_out: u64,
    /// Clients closed for not reading: answers or events waiting untaken
    /// for the timeout, or more than the control socket's bound
    /// (`control::socket::MAX_PENDING_BYTES`) of events.
    pub not_reading: u64,
}

impl ControlCounters {
    /// Name and value of each, as `stats` shows them.
    pub fn named(&self) -> [(&'static str, u64); 4] {
        [
            ("control_refused", self.refused),
            ("control_displaced", self.displaced),
            ("control_timed_out", self.timed_out),
            ("control_not_reading", self.not_reading),
        ]
    }
}

/// Where a function is in a live migration.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MigrationState {
    /// Writes go straight into guest memory.
    #[default]
    Off,
    /// Writes go through the client.
    Relaying,
    /// Quiesced for the switchover; its last writes wait for QEMU's
    /// answer.
    Flushing,
    /// Management ended the mode; the writes in flight wait for QEMU's
    /// answer.
    Ending,
    /// The switchover's flush was acknowledged: the function is quiesced
    /// and its addresses are released until a VCT entry is committed again.
    Switched,
}

impl MigrationState {
    /// The name the control API uses.
    pub fn name(self) -> &'static str {
        match self {
            MigrationState::Off => "off",
            MigrationState::Relaying => "relaying",
            MigrationState::Flushing => "flushing",
            MigrationState::Ending => "ending",
            MigrationState::Switched => "switched",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_and_print() {
        let m: Mac = "02:76:6E:00:01:0a".parse().unwrap();
        assert_eq!(m, Mac([2, 0x76, 0x6e, 0, 1, 10]));
        assert_eq!(m.to_string(), "02:76:6e:00:01:0a");
        for bad in [
            "",
            "02:76:6e:00:01",
            "02:76:6e:00:01:0a:00",
            "0g:00:00:00:00:00",
            "2:76:6e:0:1:a",
        ] {
            assert!(bad.parse::<Mac>().is_err(), "{bad}");
        }
    }
}
