//! The embedded switch: forwarding table (MAC, VLAN) → (function, queue
//! pair), VLAN membership, spoof check and the forwarding decision for each
//! frame (docs/datapath.md).
//!
//! The switch only decides; the card moves the bytes. Lookups are hash-map
//! hits, so the cost per frame does not grow with the number of entries.

use std::collections::{BTreeSet, HashMap};
use std::fmt;

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
/// VLANs one vNIC may join.
pub const MAX_VLANS_PER_PORT: usize = 64;
/// 802.1Q tag protocol identifier.
pub const TPID_8021Q: u16 = 0x8100;

/// A switch port: one queue pair of one function.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Port {
    pub function: usize,
    pub qp: u16,
}

/// The addressing of an Ethernet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub dst: Mac,
    pub src: Mac,
    pub vlan: Vlan,
}

impl FrameInfo {
    /// Parses the Ethernet header and an outer 802.1Q tag. None if the frame
    /// is shorter than its header.
    pub fn parse(frame: &[u8]) -> Option<FrameInfo> {
        let hdr = frame.get(..14)?;
        let mac = |at: usize| Mac(hdr[at..at + 6].try_into().expect("6 bytes"));
        let ethertype = u16::from_be_bytes([hdr[12], hdr[13]]);
        let vlan = if ethertype == TPID_8021Q {
            let tci = frame.get(14..16)?;
            u16::from_be_bytes([tci[0], tci[1]]) & 0x0fff
        } else {
            0
        };
        Some(FrameInfo {
            dst: mac(0),
            src: mac(6),
            vlan,
        })
    }
}

/// Why the switch dropped a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DropReason {
    /// Source MAC is not the sending vNIC's.
    Spoofed,
    /// The sending vNIC does not belong to the frame's VLAN.
    VlanNotJoined,
    /// Shorter than an Ethernet header.
    Malformed,
    /// Addressed to the sender itself.
    Hairpin,
}

/// Where a frame goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Decision {
    Drop(DropReason),
    /// Known unicast destination.
    Unicast(Port),
    /// Broadcast/multicast: these ports (never the sender), and the uplink.
    Flood(Vec<Port>),
    /// Unknown unicast: towards the uplink.
    Uplink,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwitchError {
    #[error("VLAN {0} outside 1..={MAX_VLAN}")]
    BadVlan(Vlan),
    #[error("port already in {MAX_VLANS_PER_PORT} VLANs")]
    TooManyVlans,
    #[error("{mac} VLAN {vlan} already belongs to another port")]
    Taken { mac: Mac, vlan: Vlan },
    #[error("no such port")]
    NoPort,
}

/// What the switch knows of one port.
#[derive(Clone, Debug)]
struct PortInfo {
    mac: Mac,
    /// VLANs joined besides untagged.
    vlans: BTreeSet<Vlan>,
}

#[derive(Debug)]
pub struct Switch {
    table: HashMap<(Mac, Vlan), Port>,
    /// Ports that belong to each VLAN (0: untagged), for floods.
    members: HashMap<Vlan, BTreeSet<Port>>,
    ports: HashMap<Port, PortInfo>,
    pub spoof_check: bool,
}

impl Default for Switch {
    fn default() -> Self {
        Switch {
            table: HashMap::new(),
            members: HashMap::new(),
            ports: HashMap::new(),
            spoof_check: true,
        }
    }
}

impl Switch {
    /// Adds a vNIC with its own MAC (untagged entry and membership).
    pub fn add_port(&mut self, port: Port, mac: Mac) -> Result<(), SwitchError> {
        if self.table.get(&(mac, 0)).is_some_and(|p| *p != port) {
            return Err(SwitchError::Taken { mac, vlan: 0 });
        }
        self.remove_port(port);
        self.table.insert((mac, 0), port);
        self.members.entry(0).or_default().insert(port);
        self.ports.insert(
            port,
            PortInfo {
                mac,
                vlans: BTreeSet::new(),
            },
        );
        Ok(())
    }

    /// Removes a vNIC and every entry pointing at it.
    pub fn remove_port(&mut self, port: Port) {
        if self.ports.remove(&port).is_none() {
            return;
        }
        self.table.retain(|_, p| *p != port);
        for set in self.members.values_mut() {
            set.remove(&port);
        }
    }

    /// Joins `port` to `vlan`: adds (own MAC, vlan).
    pub fn join(&mut self, port: Port, vlan: Vlan) -> Result<(), SwitchError> {
        if vlan == 0 || vlan > MAX_VLAN {
            return Err(SwitchError::BadVlan(vlan));
        }
        let info = self.ports.get(&port).ok_or(SwitchError::NoPort)?;
        if info.vlans.contains(&vlan) {
            return Ok(());
        }
        if info.vlans.len() >= MAX_VLANS_PER_PORT {
            return Err(SwitchError::TooManyVlans);
        }
        let mac = info.mac;
        if self.table.get(&(mac, vlan)).is_some_and(|p| *p != port) {
            return Err(SwitchError::Taken { mac, vlan });
        }
        self.table.insert((mac, vlan), port);
        self.members.entry(vlan).or_default().insert(port);
        self.ports
            .get_mut(&port)
            .expect("checked")
            .vlans
            .insert(vlan);
        Ok(())
    }

    /// Leaves `vlan`; leaving one not joined is not an error.
    pub fn leave(&mut self, port: Port, vlan: Vlan) -> Result<(), SwitchError> {
        let info = self.ports.get_mut(&port).ok_or(SwitchError::NoPort)?;
        if vlan == 0 || !info.vlans.remove(&vlan) {
            return Ok(());
        }
        let mac = info.mac;
        self.table.remove(&(mac, vlan));
        if let Some(set) = self.members.get_mut(&vlan) {
            set.remove(&port);
        }
        Ok(())
    }

    /// Leaves every VLAN (the function was reset).
    pub fn leave_all(&mut self, port: Port) {
        let vlans: Vec<Vlan> = self
            .ports
            .get(&port)
            .map(|i| i.vlans.iter().copied().collect())
            .unwrap_or_default();
        for v in vlans {
            let _ = self.leave(port, v);
        }
    }

    pub fn lookup(&self, mac: Mac, vlan: Vlan) -> Option<Port> {
        self.table.get(&(mac, vlan)).copied()
    }

    fn belongs(&self, port: Port, vlan: Vlan) -> bool {
        self.members.get(&vlan).is_some_and(|s| s.contains(&port))
    }

    /// Decides what happens to `frame` sent by `from`.
    pub fn forward(&self, from: Port, frame: &[u8]) -> Decision {
        let Some(info) = FrameInfo::parse(frame) else {
            return Decision::Drop(DropReason::Malformed);
        };
        if self.spoof_check {
            let own = self.ports.get(&from).map(|p| p.mac);
            if own != Some(info.src) {
                return Decision::Drop(DropReason::Spoofed);
            }
            if !self.belongs(from, info.vlan) {
                return Decision::Drop(DropReason::VlanNotJoined);
            }
        }
        if info.dst.is_multicast() {
            let ports = self
                .members
                .get(&info.vlan)
                .map(|s| s.iter().copied().filter(|p| *p != from).collect())
                .unwrap_or_default();
            return Decision::Flood(ports);
        }
        match self.lookup(info.dst, info.vlan) {
            Some(p) if p == from => Decision::Drop(DropReason::Hairpin),
            Some(p) => Decision::Unicast(p),
            None => Decision::Uplink,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        Mac([2, 0x76, 0x6e, 0, n, 0])
    }
    fn port(function: usize, qp: u16) -> Port {
        Port { function, qp }
    }

    fn eth(dst: Mac, src: Mac, vlan: Option<Vlan>) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        if let Some(v) = vlan {
            f.extend_from_slice(&TPID_8021Q.to_be_bytes());
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&0x0800u16.to_be_bytes());
        f.resize(60, 0);
        f
    }

    /// Four vNICs: A (1,0), B (1,1), C (2,0), D (2,1).
    fn switch() -> Switch {
        let mut s = Switch::default();
        for (f, q, m) in [(1, 0, 1), (1, 1, 2), (2, 0, 3), (2, 1, 4)] {
            s.add_port(port(f, q), mac(m)).unwrap();
        }
        s
    }

    #[test]
    fn parse_reads_addresses_and_outer_vlan() {
        let f = eth(mac(1), mac(2), Some(0x2005));
        let i = FrameInfo::parse(&f).unwrap();
        assert_eq!(
            (i.dst, i.src, i.vlan),
            (mac(1), mac(2), 5),
            "PCP bits ignored"
        );
        assert_eq!(
            FrameInfo::parse(&eth(mac(1), mac(2), None)).unwrap().vlan,
            0
        );
        assert_eq!(FrameInfo::parse(&f[..13]), None);
        assert_eq!(FrameInfo::parse(&f[..15]), None, "tag cut short");
    }

    #[test]
    fn unicast_goes_to_the_owner_of_mac_and_vlan() {
        let s = switch();
        let f = eth(mac(3), mac(1), None);
        assert_eq!(s.forward(port(1, 0), &f), Decision::Unicast(port(2, 0)));
        // Queue numbers are local to a function: (1,1) and (2,1) differ.
        let f = eth(mac(4), mac(2), None);
        assert_eq!(s.forward(port(1, 1), &f), Decision::Unicast(port(2, 1)));
    }

    #[test]
    fn unknown_unicast_goes_to_the_uplink() {
        let s = switch();
        let f = eth(Mac([2, 9, 9, 9, 9, 9]), mac(1), None);
        assert_eq!(s.forward(port(1, 0), &f), Decision::Uplink);
    }

    #[test]
    fn broadcast_floods_the_vlan_except_the_sender() {
        let s = switch();
        let f = eth(Mac::BROADCAST, mac(1), None);
        assert_eq!(
            s.forward(port(1, 0), &f),
            Decision::Flood(vec![port(1, 1), port(2, 0), port(2, 1)])
        );
        let mcast = Mac([0x33, 0x33, 0, 0, 0, 1]);
        let Decision::Flood(p) = s.forward(port(2, 1), &eth(mcast, mac(4), None)) else {
            panic!("multicast floods");
        };
        assert_eq!(p.len(), 3);
        assert!(!p.contains(&port(2, 1)));
    }

    #[test]
    fn no_frame_crosses_vlans() {
        let mut s = switch();
        s.join(port(1, 0), 10).unwrap();
        s.join(port(2, 0), 10).unwrap();
        s.join(port(2, 1), 20).unwrap();
        // A on VLAN 10 reaches C on VLAN 10 ...
        let f = eth(mac(3), mac(1), Some(10));
        assert_eq!(s.forward(port(1, 0), &f), Decision::Unicast(port(2, 0)));
        // ... but not D, which is only on VLAN 20 (nor untagged C).
        let f = eth(mac(4), mac(1), Some(10));
        assert_eq!(s.forward(port(1, 0), &f), Decision::Uplink);
        // Floods on VLAN 10 reach VLAN 10 members only.
        let f = eth(Mac::BROADCAST, mac(1), Some(10));
        assert_eq!(s.forward(port(1, 0), &f), Decision::Flood(vec![port(2, 0)]));
        // D is alone on VLAN 20: its broadcast reaches nobody.
        let f = eth(Mac::BROADCAST, mac(4), Some(20));
        assert_eq!(s.forward(port(2, 1), &f), Decision::Flood(vec![]));
    }

    #[test]
    fn spoofed_source_or_unjoined_vlan_is_dropped() {
        let mut s = switch();
        let f = eth(mac(3), mac(2), None);
        assert_eq!(
            s.forward(port(1, 0), &f),
            Decision::Drop(DropReason::Spoofed),
            "A sending as B"
        );
        let f = eth(mac(3), mac(1), Some(30));
        assert_eq!(
            s.forward(port(1, 0), &f),
            Decision::Drop(DropReason::VlanNotJoined)
        );
        s.spoof_check = false;
        let f = eth(mac(3), mac(2), None);
        assert_eq!(s.forward(port(1, 0), &f), Decision::Unicast(port(2, 0)));
    }

    #[test]
    fn hairpin_and_runts_are_dropped() {
        let s = switch();
        let f = eth(mac(1), mac(1), None);
        assert_eq!(
            s.forward(port(1, 0), &f),
            Decision::Drop(DropReason::Hairpin)
        );
        assert_eq!(
            s.forward(port(1, 0), &f[..10]),
            Decision::Drop(DropReason::Malformed)
        );
    }

    #[test]
    fn join_and_leave_validate_and_clean_up() {
        let mut s = switch();
        assert_eq!(s.join(port(1, 0), 0), Err(SwitchError::BadVlan(0)));
        assert_eq!(s.join(port(1, 0), 4095), Err(SwitchError::BadVlan(4095)));
        assert_eq!(s.join(port(9, 0), 5), Err(SwitchError::NoPort));
        for v in 1..=MAX_VLANS_PER_PORT as u16 {
            s.join(port(1, 0), v).unwrap();
        }
        assert_eq!(s.join(port(1, 0), 100), Err(SwitchError::TooManyVlans));
        assert_eq!(s.lookup(mac(1), 7), Some(port(1, 0)));
        s.leave(port(1, 0), 7).unwrap();
        assert_eq!(s.lookup(mac(1), 7), None);
        s.leave_all(port(1, 0));
        assert_eq!(s.lookup(mac(1), 8), None);
        assert_eq!(s.lookup(mac(1), 0), Some(port(1, 0)), "own entry stays");
        s.remove_port(port(1, 0));
        assert_eq!(s.lookup(mac(1), 0), None);
        let f = eth(Mac::BROADCAST, mac(2), None);
        assert_eq!(
            s.forward(port(1, 1), &f),
            Decision::Flood(vec![port(2, 0), port(2, 1)])
        );
    }

    #[test]
    fn a_mac_vlan_pair_has_one_owner() {
        let mut s = switch();
        assert_eq!(
            s.add_port(port(3, 0), mac(1)),
            Err(SwitchError::Taken {
                mac: mac(1),
                vlan: 0
            })
        );
    }
}
