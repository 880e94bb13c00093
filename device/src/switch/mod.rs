//! The embedded switch: forwarding table (MAC, VLAN) → (function, queue
//! pair), VLAN membership, spoof check and the forwarding decision for each
//! frame (docs/datapath.md).
//!
//! The switch only decides; the card moves the bytes. Lookups are hash-map
//! hits, so the cost per frame does not grow with the number of entries.
//! The maps use FxHash, not std's SipHash: SipHash's resistance to chosen
//! keys cost half of the card's work per frame (docs/performance.md), and
//! the keys here are MACs and ports that management or each guest's own
//! vNICs put in, not a stream an attacker fills.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use crate::model::{Mac, RxFilter, Vlan, MAX_VLAN};

mod filter;

pub use filter::{AddrFilters, Allowance, FilterView, Grant};

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

/// Bytes of a frame's start that [`FrameInfo::parse`] (and so every
/// forwarding decision) reads: the Ethernet header and the TCI of an outer
/// 802.1Q tag.
pub const DECISION_BYTES: usize = 16;

/// The addressing of an Ethernet frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FrameInfo {
    pub dst: Mac,
    pub src: Mac,
    pub vlan: Vlan,
    /// Whether the frame carries an 802.1Q tag (VLAN 0 may be tagged).
    pub tagged: bool,
}

impl FrameInfo {
    /// Parses the Ethernet header and an outer 802.1Q tag. None if the frame
    /// is shorter than its header.
    pub fn parse(frame: &[u8]) -> Option<FrameInfo> {
        let hdr = frame.get(..14)?;
        let mac = |at: usize| Mac(hdr[at..at + 6].try_into().expect("6 bytes"));
        let ethertype = u16::from_be_bytes([hdr[12], hdr[13]]);
        let tagged = ethertype == TPID_8021Q;
        let vlan = if tagged {
            let tci = frame.get(14..16)?;
            u16::from_be_bytes([tci[0], tci[1]]) & 0x0fff
        } else {
            0
        };
        Some(FrameInfo {
            dst: mac(0),
            src: mac(6),
            vlan,
            tagged,
        })
    }
}

/// A sending port as the switch sees it ([`Switch::sender`]), for a turn
/// of its send queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Sender {
    pub port: Port,
    /// Management has not turned its function's spoof check off.
    pub spoof_check: bool,
    /// Its MAC (None: not a port of the switch).
    pub mac: Option<Mac>,
    /// Its port VLAN, 0 if none.
    pub pvid: Vlan,
    /// It belongs to its home VLAN (`pvid`, or untagged).
    in_home: bool,
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
    /// Unknown unicast that vNICs in promiscuous mode also receive: these
    /// ports (never the sender), and the uplink.
    Unknown(Vec<Port>),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SwitchError {
    #[error("VLAN {0} outside 1..={MAX_VLAN}")]
    BadVlan(Vlan),
    #[error("port already in {MAX_VLANS_PER_PORT} VLANs")]
    TooManyVlans,
    #[error("{mac} VLAN {vlan} already belongs to another vNIC or entry")]
    Taken { mac: Mac, vlan: Vlan },
    #[error("no such port")]
    NoPort,
    #[error("{0} is a multicast address")]
    Multicast(Mac),
    #[error("the vNIC has port VLAN {0}; the guest cannot join VLANs")]
    PortVlan(Vlan),
    #[error("no static entry for {mac} VLAN {vlan}")]
    NoEntry { mac: Mac, vlan: Vlan },
    #[error("{mac} VLAN {vlan} is a vNIC's own address; change the vNIC instead")]
    NotStatic { mac: Mac, vlan: Vlan },
    #[error("{mac} is an extra address of vNIC {} of function {}", port.qp, port.function)]
    Extra { mac: Mac, port: Port },
}

/// Who made a forwarding entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EntryKind {
    /// A vNIC's own address, untagged or in its port VLAN.
    Own,
    /// A vNIC's own address in a VLAN the guest joined.
    Joined,
    /// Added by management.
    Static,
}

/// A forwarding-table entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Entry {
    pub port: Port,
    pub kind: EntryKind,
}

/// What the switch knows of one port.
#[derive(Clone, Debug)]
struct PortInfo {
    mac: Mac,
    /// Port VLAN (access port), 0 if none.
    pvid: Vlan,
    /// VLANs the guest joined besides its home VLAN.
    vlans: BTreeSet<Vlan>,
}

impl PortInfo {
    /// The VLAN of the port's untagged traffic.
    fn home(&self) -> Vlan {
        self.pvid
    }
}

#[derive(Debug, Default)]
pub struct Switch {
    table: FxHashMap<(Mac, Vlan), Entry>,
    /// Ports that belong to each VLAN (0: untagged), for floods.
    members: FxHashMap<Vlan, BTreeSet<Port>>,
    ports: FxHashMap<Port, PortInfo>,
    /// Functions whose spoof check management turned off.
    spoof_off: FxHashSet<usize>,
    /// What the vNICs receive besides their own addresses.
    filters: AddrFilters,
}

impl Switch {
    fn taken_by_other(&self, mac: Mac, vlan: Vlan, port: Port) -> bool {
        self.table.get(&(mac, vlan)).is_some_and(|e| e.port != port)
    }

    /// Adds a vNIC with its own MAC (untagged entry and membership).
    pub fn add_port(&mut self, port: Port, mac: Mac) -> Result<(), SwitchError> {
        if mac.is_multicast() {
            return Err(SwitchError::Multicast(mac));
        }
        if self.taken_by_other(mac, 0, port) {
            return Err(SwitchError::Taken { mac, vlan: 0 });
        }
        self.remove_port(port);
        self.table.insert(
            (mac, 0),
            Entry {
                port,
                kind: EntryKind::Own,
            },
        );
        self.members.entry(0).or_default().insert(port);
        self.ports.insert(
            port,
            PortInfo {
                mac,
                pvid: 0,
                vlans: BTreeSet::new(),
            },
        );
        Ok(())
    }

    /// Removes a vNIC and every entry pointing at it, static ones included.
    pub fn remove_port(&mut self, port: Port) {
        if self.ports.remove(&port).is_none() {
            return;
        }
        self.filters.remove(port);
        self.table.retain(|_, e| e.port != port);
        for set in self.members.values_mut() {
            set.remove(&port);
        }
    }

    /// Takes `port`'s own and joined entries out of the table, keeping the
    /// port: a configuration that swaps addresses between vNICs releases
    /// them all first, changes them, then [`Switch::reclaim`]s them.
    pub fn release(&mut self, port: Port) {
        self.table
            .retain(|_, e| e.port != port || e.kind == EntryKind::Static);
    }

    /// Puts back the entries of a released port, at its address now.
    pub fn reclaim(&mut self, port: Port) -> Result<(), SwitchError> {
        let info = self.ports.get(&port).ok_or(SwitchError::NoPort)?;
        let (mac, home) = (info.mac, info.home());
        let joined: Vec<Vlan> = info.vlans.iter().copied().collect();
        let wanted = std::iter::once((home, EntryKind::Own))
            .chain(joined.into_iter().map(|v| (v, EntryKind::Joined)));
        let wanted: Vec<_> = wanted.collect();
        if let Some(&(vlan, _)) = wanted
            .iter()
            .find(|(v, _)| self.taken_by_other(mac, *v, port))
        {
            return Err(SwitchError::Taken { mac, vlan });
        }
        for (vlan, kind) in wanted {
            self.table.insert((mac, vlan), Entry { port, kind });
        }
        Ok(())
    }

    pub fn has_port(&self, port: Port) -> bool {
        self.ports.contains_key(&port)
    }

    /// Whether `mac` could become `port`'s address: its home VLAN and every
    /// VLAN it joined must be free.
    pub fn check_mac(&self, port: Port, mac: Mac) -> Result<(), SwitchError> {
        if mac.is_multicast() {
            return Err(SwitchError::Multicast(mac));
        }
        let info = self.ports.get(&port).ok_or(SwitchError::NoPort)?;
        for vlan in std::iter::once(info.home()).chain(info.vlans.iter().copied()) {
            if self.taken_by_other(mac, vlan, port) {
                return Err(SwitchError::Taken { mac, vlan });
            }
        }
        self.check_extra(mac, Some(port))
    }

    /// Refuses `mac` if it is an extra address of a vNIC other than `port`.
    fn check_extra(&self, mac: Mac, port: Option<Port>) -> Result<(), SwitchError> {
        match self.filters.owner(mac) {
            Some(owner) if Some(owner) != port => Err(SwitchError::Extra { mac, port: owner }),
            _ => Ok(()),
        }
    }

    /// Gives `port` a new MAC: its entries move with it.
    pub fn set_mac(&mut self, port: Port, mac: Mac) -> Result<(), SwitchError> {
        self.check_mac(port, mac)?;
        let info = self.ports.get_mut(&port).expect("checked");
        let old = std::mem::replace(&mut info.mac, mac);
        let vlans: Vec<Vlan> = std::iter::once(info.home())
            .chain(info.vlans.iter().copied())
            .collect();
        for vlan in vlans {
            if let Some(e) = self.table.remove(&(old, vlan)) {
                self.table.insert((mac, vlan), e);
            }
        }
        Ok(())
    }

    /// Whether `vlan` could become `port`'s port VLAN.
    pub fn check_pvid(&self, port: Port, vlan: Vlan) -> Result<(), SwitchError> {
        if vlan > MAX_VLAN {
            return Err(SwitchError::BadVlan(vlan));
        }
        let info = self.ports.get(&port).ok_or(SwitchError::NoPort)?;
        if self.taken_by_other(info.mac, vlan, port) {
            return Err(SwitchError::Taken {
                mac: info.mac,
                vlan,
            });
        }
        Ok(())
    }

    /// Makes `port` an access port of `vlan` (0: none). The VLANs the guest
    /// joined are left: with a port VLAN the guest sees no tags.
    pub fn set_pvid(&mut self, port: Port, vlan: Vlan) -> Result<(), SwitchError> {
        self.check_pvid(port, vlan)?;
        self.leave_all(port);
        let info = self.ports.get_mut(&port).expect("checked");
        let (mac, old) = (info.mac, info.home());
        info.pvid = vlan;
        if let Some(e) = self.table.remove(&(mac, old)) {
            self.table.insert((mac, vlan), e);
        }
        if let Some(set) = self.members.get_mut(&old) {
            set.remove(&port);
        }
        self.members.entry(vlan).or_default().insert(port);
        Ok(())
    }

    /// The port VLAN of `port`, 0 if none.
    pub fn pvid(&self, port: Port) -> Vlan {
        self.ports.get(&port).map_or(0, |i| i.pvid)
    }

    /// VLANs the guest joined on `port`.
    pub fn joined(&self, port: Port) -> Vec<Vlan> {
        self.ports
            .get(&port)
            .map(|i| i.vlans.iter().copied().collect())
            .unwrap_or_default()
    }

    /// Joins `port` to `vlan`: adds (own MAC, vlan).
    pub fn join(&mut self, port: Port, vlan: Vlan) -> Result<(), SwitchError> {
        if vlan == 0 || vlan > MAX_VLAN {
            return Err(SwitchError::BadVlan(vlan));
        }
        let info = self.ports.get(&port).ok_or(SwitchError::NoPort)?;
        if info.pvid != 0 {
            return Err(SwitchError::PortVlan(info.pvid));
        }
        if info.vlans.contains(&vlan) {
            return Ok(());
        }
        if info.vlans.len() >= MAX_VLANS_PER_PORT {
            return Err(SwitchError::TooManyVlans);
        }
        let mac = info.mac;
        if self.taken_by_other(mac, vlan, port) {
            return Err(SwitchError::Taken { mac, vlan });
        }
        self.table.insert(
            (mac, vlan),
            Entry {
                port,
                kind: EntryKind::Joined,
            },
        );
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

    /// Leaves every VLAN the guest joined (the function was reset).
    pub fn leave_all(&mut self, port: Port) {
        for v in self.joined(port) {
            let _ = self.leave(port, v);
        }
    }

    /// Adds a static entry (MAC, VLAN) → `port`.
    pub fn add_static(&mut self, mac: Mac, vlan: Vlan, port: Port) -> Result<(), SwitchError> {
        if mac.is_multicast() {
            return Err(SwitchError::Multicast(mac));
        }
        if vlan > MAX_VLAN {
            return Err(SwitchError::BadVlan(vlan));
        }
        if !self.ports.contains_key(&port) {
            return Err(SwitchError::NoPort);
        }
        if self.table.contains_key(&(mac, vlan)) {
            return Err(SwitchError::Taken { mac, vlan });
        }
        self.check_extra(mac, Some(port))?;
        let kind = EntryKind::Static;
        self.table.insert((mac, vlan), Entry { port, kind });
        Ok(())
    }

    /// Removes a static entry.
    pub fn remove_static(&mut self, mac: Mac, vlan: Vlan) -> Result<(), SwitchError> {
        match self.table.get(&(mac, vlan)) {
            None => Err(SwitchError::NoEntry { mac, vlan }),
            Some(e) if e.kind != EntryKind::Static => Err(SwitchError::NotStatic { mac, vlan }),
            Some(_) => {
                self.table.remove(&(mac, vlan));
                Ok(())
            }
        }
    }

    /// Every entry, sorted by (MAC, VLAN).
    pub fn entries(&self) -> Vec<(Mac, Vlan, Entry)> {
        let mut v: Vec<_> = self.table.iter().map(|(&(m, vl), &e)| (m, vl, e)).collect();
        v.sort_by_key(|&(m, vl, _)| (m, vl));
        v
    }

    pub fn len(&self) -> usize {
        self.table.len()
    }

    pub fn is_empty(&self) -> bool {
        self.table.is_empty()
    }

    /// The entry for (MAC, VLAN), if any.
    pub fn entries_for(&self, mac: Mac, vlan: Vlan) -> Option<Entry> {
        self.table.get(&(mac, vlan)).copied()
    }

    pub fn lookup(&self, mac: Mac, vlan: Vlan) -> Option<Port> {
        self.table.get(&(mac, vlan)).map(|e| e.port)
    }

    /// Gives `port` what the card grants of its driver's `request`
    /// (docs/datapath.md, "Address filtering"). An extra unicast address
    /// must be no other vNIC's in any of the port's VLANs.
    pub fn set_filter(
        &mut self,
        port: Port,
        request: &RxFilter,
        allow: Allowance,
    ) -> Result<Grant, SwitchError> {
        let info = self.ports.get(&port).ok_or(SwitchError::NoPort)?;
        let vlans: Vec<Vlan> = std::iter::once(info.home())
            .chain(info.vlans.iter().copied())
            .collect();
        let table = &self.table;
        let owner = |mac: Mac| {
            let mut found = vlans.iter().filter_map(|v| table.get(&(mac, *v)));
            let first = found.next().map(|e| e.port);
            // Another vNIC's entry in any of the VLANs wins over our own.
            found.map(|e| e.port).find(|p| *p != port).or(first)
        };
        Ok(self.filters.set(port, request, allow, owner))
    }

    /// Forgets the filters of function `f`'s vNICs (its driver reset it).
    pub fn clear_filters(&mut self, f: usize) {
        self.filters.remove_function(f);
    }

    /// `port`'s filter, if its driver asked for one.
    pub fn filter(&self, port: Port) -> Option<FilterView> {
        self.filters.view(port)
    }

    /// Extra unicast addresses function `f` has over all its vNICs.
    pub fn extra_addresses(&self, f: usize) -> usize {
        self.filters.unicast_of_function(f)
    }

    /// Spoof check of function `f` (on unless management turned it off).
    pub fn spoof_check(&self, f: usize) -> bool {
        !self.spoof_off.contains(&f)
    }

    pub fn set_spoof_check(&mut self, f: usize, on: bool) {
        if on {
            self.spoof_off.remove(&f);
        } else {
            self.spoof_off.insert(f);
        }
    }

    fn belongs(&self, port: Port, vlan: Vlan) -> bool {
        self.members.get(&vlan).is_some_and(|s| s.contains(&port))
    }

    /// What the switch's decisions need to know of sending port `from`,
    /// looked up once for a turn of its send queue (nothing changes the
    /// switch while a queue is served) instead of once or twice per frame.
    pub fn sender(&self, from: Port) -> Sender {
        let info = self.ports.get(&from);
        let pvid = info.map_or(0, |i| i.pvid);
        Sender {
            port: from,
            spoof_check: self.spoof_check(from.function),
            mac: info.map(|i| i.mac),
            pvid,
            in_home: self.belongs(from, pvid),
        }
    }

    /// Whether the sender belongs to `vlan`.
    fn sender_belongs(&self, s: &Sender, vlan: Vlan) -> bool {
        if vlan == s.pvid {
            s.in_home
        } else {
            self.belongs(s.port, vlan)
        }
    }

    /// Frames from a port with a port VLAN enter that VLAN: an untagged
    /// frame gets the tag (so the rest of the switch sees the VLAN in the
    /// frame); a frame the guest tagged itself is refused.
    pub fn ingress(&self, from: Port, frame: &mut Vec<u8>) -> Result<(), DropReason> {
        self.ingress_as(&self.sender(from), frame)
    }

    /// [`Switch::ingress`] for a sender looked up before.
    pub fn ingress_as(&self, s: &Sender, frame: &mut Vec<u8>) -> Result<(), DropReason> {
        let pvid = s.pvid;
        if pvid == 0 {
            return Ok(());
        }
        let Some(info) = FrameInfo::parse(frame) else {
            return Err(DropReason::Malformed);
        };
        if info.tagged {
            return Err(DropReason::VlanNotJoined);
        }
        let mut tag = [0u8; 4];
        tag[..2].copy_from_slice(&TPID_8021Q.to_be_bytes());
        tag[2..].copy_from_slice(&pvid.to_be_bytes());
        frame.splice(12..12, tag);
        Ok(())
    }

    /// Decides what happens to `frame` sent by `from` (after
    /// [`Switch::ingress`]).
    pub fn forward(&self, from: Port, frame: &[u8]) -> Decision {
        self.forward_as(&self.sender(from), frame)
    }

    /// [`Switch::forward`] for a sender looked up before.
    pub fn forward_as(&self, s: &Sender, frame: &[u8]) -> Decision {
        let from = s.port;
        let Some(info) = FrameInfo::parse(frame) else {
            return Decision::Drop(DropReason::Malformed);
        };
        if s.spoof_check {
            if s.mac != Some(info.src) && !self.filters.owns(from, info.src) {
                return Decision::Drop(DropReason::Spoofed);
            }
            if !self.sender_belongs(s, info.vlan) {
                return Decision::Drop(DropReason::VlanNotJoined);
            }
        }
        if info.dst.is_multicast() {
            return Decision::Flood(self.flood_ports(Some(from), &info));
        }
        match self.lookup(info.dst, info.vlan) {
            Some(p) if p == from => Decision::Drop(DropReason::Hairpin),
            Some(p) => Decision::Unicast(p),
            None => self.unknown(Some(from), &info),
        }
    }

    /// The vNICs of the frame's VLAN that receive its group address,
    /// without the sender.
    fn flood_ports(&self, from: Option<Port>, info: &FrameInfo) -> Vec<Port> {
        self.members
            .get(&info.vlan)
            .map(|s| {
                s.iter()
                    .copied()
                    .filter(|p| Some(*p) != from && self.filters.wants_multicast(*p, info.dst))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// A unicast destination the table does not know: a vNIC's extra
    /// address in the frame's VLAN, else the uplink (and the vNICs of the
    /// VLAN in promiscuous mode).
    fn unknown(&self, from: Option<Port>, info: &FrameInfo) -> Decision {
        let vlan = info.vlan;
        if let Some(p) = self
            .filters
            .owner(info.dst)
            .filter(|p| self.belongs(*p, vlan))
        {
            return if Some(p) == from {
                Decision::Drop(DropReason::Hairpin)
            } else {
                Decision::Unicast(p)
            };
        }
        if self.filters.any_promiscuous() {
            let ports: Vec<Port> = self
                .filters
                .promiscuous()
                .filter(|p| Some(*p) != from && self.belongs(*p, vlan))
                .collect();
            if !ports.is_empty() {
                return Decision::Unknown(ports);
            }
        }
        Decision::Uplink
    }

    /// Decides what happens to a frame from the uplink port: no spoof
    /// check (the outside has every address), a flood reaches the vNICs of
    /// the frame's VLAN that receive its group, and unknown unicast reaches
    /// the promiscuous vNICs of the VLAN ([`Decision::Unknown`]) or is
    /// [`Decision::Uplink`], which the caller drops: it never goes back
    /// out.
    pub fn forward_from_uplink(&self, frame: &[u8]) -> Decision {
        let Some(info) = FrameInfo::parse(frame) else {
            return Decision::Drop(DropReason::Malformed);
        };
        if info.dst.is_multicast() {
            return Decision::Flood(self.flood_ports(None, &info));
        }
        match self.lookup(info.dst, info.vlan) {
            Some(p) => Decision::Unicast(p),
            None => self.unknown(None, &info),
        }
    }
}

/// Copies `frame` without its outer 802.1Q tag into `out` (delivery to a
/// port with a port VLAN: the guest sees untagged frames).
pub fn strip_tag(frame: &[u8], out: &mut Vec<u8>) {
    out.clear();
    if frame.len() >= 18 && frame[12..14] == TPID_8021Q.to_be_bytes() {
        out.extend_from_slice(&frame[..12]);
        out.extend_from_slice(&frame[16..]);
    } else {
        out.extend_from_slice(frame);
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
        s.set_spoof_check(1, false);
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

    #[test]
    fn port_vlan_tags_on_ingress_and_classifies_into_the_vlan() {
        let mut s = switch();
        s.set_pvid(port(1, 0), 10).unwrap();
        s.join(port(2, 0), 10).unwrap();
        assert_eq!(s.lookup(mac(1), 10), Some(port(1, 0)));
        assert_eq!(s.lookup(mac(1), 0), None, "no longer untagged");
        // A's untagged frame enters VLAN 10 and reaches C's VLAN 10.
        let mut f = eth(mac(3), mac(1), None);
        s.ingress(port(1, 0), &mut f).unwrap();
        assert_eq!(FrameInfo::parse(&f).unwrap().vlan, 10);
        assert_eq!(s.forward(port(1, 0), &f), Decision::Unicast(port(2, 0)));
        // A guest-tagged frame from an access port is refused.
        let mut tagged = eth(mac(3), mac(1), Some(10));
        assert_eq!(
            s.ingress(port(1, 0), &mut tagged),
            Err(DropReason::VlanNotJoined)
        );
        // The guest cannot join VLANs on an access port.
        assert_eq!(s.join(port(1, 0), 20), Err(SwitchError::PortVlan(10)));
        // Delivery strips the tag.
        let mut out = Vec::new();
        strip_tag(&f, &mut out);
        assert_eq!(out, eth(mac(3), mac(1), None));
        // Back to untagged.
        s.set_pvid(port(1, 0), 0).unwrap();
        assert_eq!(s.lookup(mac(1), 0), Some(port(1, 0)));
        assert_eq!(s.lookup(mac(1), 10), None);
    }

    #[test]
    fn a_sender_looked_up_once_decides_every_frame_of_a_turn() {
        let mut s = switch();
        s.join(port(1, 0), 5).unwrap();
        s.join(port(2, 0), 5).unwrap();
        let sender = s.sender(port(1, 0));
        assert_eq!(
            (sender.mac, sender.pvid, sender.spoof_check),
            (Some(mac(1)), 0, true)
        );
        let cases = [
            (eth(mac(3), mac(1), None), Decision::Unicast(port(2, 0))),
            (eth(mac(3), mac(1), Some(5)), Decision::Unicast(port(2, 0))),
            (
                eth(mac(3), mac(1), Some(6)),
                Decision::Drop(DropReason::VlanNotJoined),
            ),
            (
                eth(mac(3), mac(9), None),
                Decision::Drop(DropReason::Spoofed),
            ),
            (
                eth(mac(1), mac(1), None),
                Decision::Drop(DropReason::Hairpin),
            ),
            (eth(mac(8), mac(1), None), Decision::Uplink),
        ];
        for (f, want) in cases {
            assert_eq!(s.forward_as(&sender, &f), want);
        }
        // An access port: the tag goes in, its VLAN is its home.
        s.set_pvid(port(2, 1), 10).unwrap();
        let sender = s.sender(port(2, 1));
        let mut f = eth(mac(1), mac(4), None);
        s.ingress_as(&sender, &mut f).unwrap();
        assert_eq!(
            s.forward_as(&sender, &f),
            Decision::Uplink,
            "(mac 1, VLAN 10) unknown"
        );
        // Not a port of the switch: every frame is spoofed.
        let stranger = s.sender(port(7, 0));
        assert_eq!(
            s.forward_as(&stranger, &eth(mac(3), mac(1), None)),
            Decision::Drop(DropReason::Spoofed)
        );
    }

    #[test]
    fn set_mac_moves_entries_and_refuses_taken_addresses() {
        let mut s = switch();
        s.join(port(1, 0), 5).unwrap();
        let new = Mac([2, 0, 0, 0, 0, 9]);
        s.set_mac(port(1, 0), new).unwrap();
        assert_eq!(s.lookup(new, 0), Some(port(1, 0)));
        assert_eq!(s.lookup(new, 5), Some(port(1, 0)));
        assert_eq!(s.lookup(mac(1), 0), None);
        assert_eq!(
            s.set_mac(port(1, 0), mac(3)),
            Err(SwitchError::Taken {
                mac: mac(3),
                vlan: 0
            })
        );
        assert_eq!(
            s.set_mac(port(1, 0), Mac::BROADCAST),
            Err(SwitchError::Multicast(Mac::BROADCAST))
        );
        assert_eq!(s.lookup(new, 0), Some(port(1, 0)), "unchanged");
    }

    #[test]
    fn static_entries_add_list_delete_and_leave_with_their_port() {
        let mut s = switch();
        let extra = Mac([2, 0, 0, 0, 0, 7]);
        s.add_static(extra, 0, port(2, 1)).unwrap();
        assert_eq!(
            s.add_static(extra, 0, port(1, 0)),
            Err(SwitchError::Taken {
                mac: extra,
                vlan: 0
            }),
            "duplicate"
        );
        assert_eq!(s.add_static(extra, 0, port(9, 0)), Err(SwitchError::NoPort));
        let f = eth(extra, mac(1), None);
        assert_eq!(s.forward(port(1, 0), &f), Decision::Unicast(port(2, 1)));
        let kinds: Vec<EntryKind> = s.entries().iter().map(|e| e.2.kind).collect();
        assert_eq!(kinds.iter().filter(|k| **k == EntryKind::Static).count(), 1);
        assert_eq!(
            s.remove_static(mac(1), 0),
            Err(SwitchError::NotStatic {
                mac: mac(1),
                vlan: 0
            })
        );
        assert_eq!(
            s.remove_static(extra, 3),
            Err(SwitchError::NoEntry {
                mac: extra,
                vlan: 3
            })
        );
        s.remove_port(port(2, 1));
        assert_eq!(s.lookup(extra, 0), None, "left with its port");
    }

    #[test]
    fn frames_from_the_uplink_follow_their_vlan_without_spoof_checks() {
        let mut s = switch();
        s.join(port(2, 0), 10).unwrap();
        // Any source is fine from the outside.
        let f = eth(mac(3), Mac([2, 9, 9, 9, 9, 9]), Some(10));
        assert_eq!(s.forward_from_uplink(&f), Decision::Unicast(port(2, 0)));
        // A broadcast reaches the whole VLAN, nobody is "the sender".
        let f = eth(Mac::BROADCAST, Mac([2, 9, 9, 9, 9, 9]), None);
        assert_eq!(
            s.forward_from_uplink(&f),
            Decision::Flood(vec![port(1, 0), port(1, 1), port(2, 0), port(2, 1)])
        );
        let f = eth(Mac::BROADCAST, Mac([2, 9, 9, 9, 9, 9]), Some(10));
        assert_eq!(s.forward_from_uplink(&f), Decision::Flood(vec![port(2, 0)]));
        let f = eth(mac(1), Mac([2, 9, 9, 9, 9, 9]), Some(10));
        assert_eq!(s.forward_from_uplink(&f), Decision::Uplink, "unknown");
        assert_eq!(
            s.forward_from_uplink(&f[..12]),
            Decision::Drop(DropReason::Malformed)
        );
    }

    #[test]
    fn spoof_check_is_per_function() {
        let mut s = switch();
        s.set_spoof_check(2, false);
        assert!(!s.spoof_check(2) && s.spoof_check(1));
        let f = eth(mac(1), Mac([2, 0, 0, 0, 0, 8]), Some(33));
        assert_eq!(s.forward(port(2, 0), &f), Decision::Uplink);
        let f = eth(mac(3), Mac([2, 0, 0, 0, 0, 8]), None);
        assert_eq!(
            s.forward(port(1, 0), &f),
            Decision::Drop(DropReason::Spoofed)
        );
    }
}
