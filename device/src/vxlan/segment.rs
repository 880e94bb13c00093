//! VNI segments: the vNICs of VFs whose attribute is VxLAN. They are not in
//! the VLAN switch at all, so VLAN and VNI segments cannot see each other's
//! frames; within a segment, frames are switched by (VNI, destination MAC),
//! whatever 802.1Q tag the guest put inside (docs/vxlan.md).

use std::collections::BTreeSet;

use rustc_hash::FxHashMap;

use super::Vni;
use crate::model::{Mac, RxFilter};
use crate::switch::{
    AddrFilters, Allowance, Decision, DropReason, FilterView, FrameInfo, Grant, Port,
};

/// Why a vNIC cannot join a segment or take an address there.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SegmentError {
    #[error("{mac} already belongs to another vNIC in VNI {vni}")]
    Taken { mac: Mac, vni: Vni },
    #[error("{0} is a multicast address")]
    Multicast(Mac),
    #[error("the vNIC is in no VNI segment")]
    NoPort,
    #[error("{mac} is an extra address of vNIC {} of function {}", port.qp, port.function)]
    Extra { mac: Mac, port: Port },
}

#[derive(Debug, Default)]
pub struct Segments {
    /// The VNI of each VF (function index) whose attribute is VxLAN.
    attrs: FxHashMap<usize, Vni>,
    /// Each vNIC of those VFs: its segment and its MAC.
    ports: FxHashMap<Port, (Vni, Mac)>,
    table: FxHashMap<(Vni, Mac), Port>,
    members: FxHashMap<Vni, BTreeSet<Port>>,
    /// What the vNICs receive besides their own addresses.
    filters: AddrFilters,
}

impl Segments {
    /// The VNI of function `f`, if its attribute is VxLAN.
    pub fn vni_of(&self, f: usize) -> Option<Vni> {
        self.attrs.get(&f).copied()
    }

    /// The function whose attribute is `vni` (VNIs are unique per VF).
    pub fn function_with(&self, vni: Vni) -> Option<usize> {
        self.attrs.iter().find(|(_, &v)| v == vni).map(|(&f, _)| f)
    }

    /// Records function `f`'s attribute. Its vNICs move separately
    /// ([`Segments::add_port`], [`Segments::remove_port`]).
    pub fn set_attr(&mut self, f: usize, vni: Option<Vni>) {
        match vni {
            Some(v) => self.attrs.insert(f, v),
            None => self.attrs.remove(&f),
        };
    }

    /// Whether a local vNIC is in segment `vni`.
    pub fn has_vni(&self, vni: Vni) -> bool {
        self.members.get(&vni).is_some_and(|m| !m.is_empty())
    }

    pub fn has_port(&self, port: Port) -> bool {
        self.ports.contains_key(&port)
    }

    /// The vNICs of segment `vni`.
    pub fn members(&self, vni: Vni) -> Vec<Port> {
        self.members
            .get(&vni)
            .map(|m| m.iter().copied().collect())
            .unwrap_or_default()
    }

    /// The local vNIC that has `mac` in segment `vni`: as its own address,
    /// or as an extra one its driver asked for.
    pub fn lookup(&self, vni: Vni, mac: Mac) -> Option<Port> {
        self.table.get(&(vni, mac)).copied().or_else(|| {
            self.filters
                .owner(mac)
                .filter(|p| self.ports.get(p).is_some_and(|(v, _)| *v == vni))
        })
    }

    /// The vNICs of segment `vni` that receive a frame to group address
    /// `dst`.
    pub fn receivers(&self, vni: Vni, dst: Mac) -> Vec<Port> {
        let mut ports = self.members(vni);
        ports.retain(|&p| self.filters.wants_multicast(p, dst));
        ports
    }

    /// The vNICs of segment `vni` in promiscuous mode.
    pub fn promiscuous(&self, vni: Vni) -> Vec<Port> {
        if !self.filters.any_promiscuous() {
            return Vec::new();
        }
        self.filters
            .promiscuous()
            .filter(|p| self.ports.get(p).is_some_and(|(v, _)| *v == vni))
            .collect()
    }

    /// Gives `port` what the card grants of its driver's `request`
    /// (docs/datapath.md, "Address filtering").
    pub fn set_filter(
        &mut self,
        port: Port,
        request: &RxFilter,
        allow: Allowance,
    ) -> Result<Grant, SegmentError> {
        let (vni, _) = *self.ports.get(&port).ok_or(SegmentError::NoPort)?;
        let table = &self.table;
        let owner = |mac: Mac| table.get(&(vni, mac)).copied();
        Ok(self.filters.set(port, request, allow, owner))
    }

    /// Forgets the filters of function `f`'s vNICs.
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

    /// Whether `port` could have `mac` in segment `vni`.
    pub fn check(&self, vni: Vni, port: Port, mac: Mac) -> Result<(), SegmentError> {
        if mac.is_multicast() {
            return Err(SegmentError::Multicast(mac));
        }
        if self.table.get(&(vni, mac)).is_some_and(|p| *p != port) {
            return Err(SegmentError::Taken { mac, vni });
        }
        match self.filters.owner(mac) {
            Some(owner) if owner != port => Err(SegmentError::Extra { mac, port: owner }),
            _ => Ok(()),
        }
    }

    /// Puts `port` into segment `vni` with `mac` (moving it if it was in
    /// another).
    pub fn add_port(&mut self, vni: Vni, port: Port, mac: Mac) -> Result<(), SegmentError> {
        self.check(vni, port, mac)?;
        self.remove_port(port);
        self.ports.insert(port, (vni, mac));
        self.table.insert((vni, mac), port);
        self.members.entry(vni).or_default().insert(port);
        Ok(())
    }

    pub fn remove_port(&mut self, port: Port) {
        let Some((vni, mac)) = self.ports.remove(&port) else {
            return;
        };
        self.filters.remove(port);
        self.table.remove(&(vni, mac));
        if let Some(m) = self.members.get_mut(&vni) {
            m.remove(&port);
            if m.is_empty() {
                self.members.remove(&vni);
            }
        }
    }

    /// Gives `port` a new MAC in its segment.
    pub fn set_mac(&mut self, port: Port, mac: Mac) -> Result<(), SegmentError> {
        let (vni, old) = *self.ports.get(&port).ok_or(SegmentError::NoPort)?;
        self.check(vni, port, mac)?;
        // In place: the vNIC keeps its membership and its filter.
        self.table.remove(&(vni, old));
        self.table.insert((vni, mac), port);
        self.ports.insert(port, (vni, mac));
        Ok(())
    }

    /// Decides what happens to `frame` from `from` in its segment:
    /// [`Decision::Unicast`] to a local vNIC, [`Decision::Flood`] to the
    /// local vNICs (and beyond, through the tables), [`Decision::Uplink`]
    /// for a destination that is not local (the tables decide). With
    /// `spoof_check`, the source MAC must be the vNIC's own.
    pub fn forward(&self, from: Port, frame: &[u8], spoof_check: bool) -> Decision {
        let Some(info) = FrameInfo::parse(frame) else {
            return Decision::Drop(DropReason::Malformed);
        };
        let Some(&(vni, own)) = self.ports.get(&from) else {
            return Decision::Drop(DropReason::VlanNotJoined);
        };
        if spoof_check && own != info.src && !self.filters.owns(from, info.src) {
            return Decision::Drop(DropReason::Spoofed);
        }
        if info.dst.is_multicast() {
            let mut ports = self.receivers(vni, info.dst);
            ports.retain(|&p| p != from);
            return Decision::Flood(ports);
        }
        match self.lookup(vni, info.dst) {
            Some(p) if p == from => Decision::Drop(DropReason::Hairpin),
            Some(p) => Decision::Unicast(p),
            None => {
                let mut ports = self.promiscuous(vni);
                ports.retain(|&p| p != from);
                if ports.is_empty() {
                    Decision::Uplink
                } else {
                    Decision::Unknown(ports)
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vni(n: u32) -> Vni {
        Vni::new(n).unwrap()
    }
    fn mac(n: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, n])
    }
    fn port(function: usize, qp: u16) -> Port {
        Port { function, qp }
    }
    fn eth(dst: Mac, src: Mac, tag: Option<u16>) -> Vec<u8> {
        let mut f = dst.0.to_vec();
        f.extend_from_slice(&src.0);
        if let Some(v) = tag {
            f.extend_from_slice(&[0x81, 0, (v >> 8) as u8, v as u8]);
        }
        f.extend_from_slice(&[0x08, 0]);
        f.resize(60, 0);
        f
    }

    /// VNI 5: (1,0) mac 1, (1,1) mac 2, (2,0) mac 3; VNI 6: (3,0) mac 4.
    fn segments() -> Segments {
        let mut s = Segments::default();
        s.set_attr(1, Some(vni(5)));
        s.set_attr(2, Some(vni(5)));
        s.set_attr(3, Some(vni(6)));
        s.add_port(vni(5), port(1, 0), mac(1)).unwrap();
        s.add_port(vni(5), port(1, 1), mac(2)).unwrap();
        s.add_port(vni(5), port(2, 0), mac(3)).unwrap();
        s.add_port(vni(6), port(3, 0), mac(4)).unwrap();
        s
    }

    #[test]
    fn frames_stay_in_their_vni_whatever_their_inner_tag() {
        let s = segments();
        let f = eth(mac(3), mac(1), Some(77));
        assert_eq!(
            s.forward(port(1, 0), &f, true),
            Decision::Unicast(port(2, 0))
        );
        // mac(4) is in VNI 6: not local for VNI 5, so the tables decide.
        let f = eth(mac(4), mac(1), None);
        assert_eq!(s.forward(port(1, 0), &f, true), Decision::Uplink);
        let f = eth(Mac::BROADCAST, mac(1), None);
        assert_eq!(
            s.forward(port(1, 0), &f, true),
            Decision::Flood(vec![port(1, 1), port(2, 0)])
        );
        let f = eth(Mac::BROADCAST, mac(4), None);
        assert_eq!(s.forward(port(3, 0), &f, true), Decision::Flood(vec![]));
    }

    #[test]
    fn spoofing_hairpins_and_runts_are_dropped() {
        let s = segments();
        let f = eth(mac(3), mac(9), None);
        assert_eq!(
            s.forward(port(1, 0), &f, true),
            Decision::Drop(DropReason::Spoofed)
        );
        assert_eq!(
            s.forward(port(1, 0), &f, false),
            Decision::Unicast(port(2, 0))
        );
        let f = eth(mac(1), mac(1), None);
        assert_eq!(
            s.forward(port(1, 0), &f, true),
            Decision::Drop(DropReason::Hairpin)
        );
        assert_eq!(
            s.forward(port(1, 0), &f[..13], true),
            Decision::Drop(DropReason::Malformed)
        );
    }

    #[test]
    fn a_mac_is_unique_in_a_vni_and_ports_move_and_leave() {
        let mut s = segments();
        assert_eq!(
            s.add_port(vni(5), port(4, 0), mac(1)),
            Err(SegmentError::Taken {
                mac: mac(1),
                vni: vni(5)
            })
        );
        s.add_port(vni(6), port(4, 0), mac(1)).unwrap();
        assert_eq!(
            s.add_port(vni(6), port(4, 1), Mac::BROADCAST),
            Err(SegmentError::Multicast(Mac::BROADCAST))
        );
        s.set_mac(port(1, 0), mac(8)).unwrap();
        assert_eq!(s.lookup(vni(5), mac(8)), Some(port(1, 0)));
        assert_eq!(s.lookup(vni(5), mac(1)), None);
        assert_eq!(
            s.set_mac(port(1, 0), mac(3)).unwrap_err().to_string(),
            "02:00:00:00:00:03 already belongs to another vNIC in VNI 5"
        );
        s.remove_port(port(3, 0));
        s.remove_port(port(4, 0));
        assert!(!s.has_vni(vni(6)));
        assert_eq!(s.function_with(vni(6)), Some(3), "the attribute stays");
        s.set_attr(3, None);
        assert_eq!(s.function_with(vni(6)), None);
    }
}
