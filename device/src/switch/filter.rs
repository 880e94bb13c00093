//! Address filtering: what each vNIC receives besides frames to its own MAC
//! and broadcasts, as its driver asked (QP_RX_MODE) and as far as the card
//! grants it: extra unicast addresses (forwarded to the vNIC, and allowed
//! as its source addresses by the spoof check), the multicast groups it
//! joined, all-multicast and promiscuous mode (docs/datapath.md, "Address
//! filtering").
//!
//! The switch and each VNI segment keep one of these for their ports; a
//! vNIC whose driver never asked for anything has no entry here and gets
//! every multicast frame, as before drivers could ask.
//!
//! Trust follows Intel's SR-IOV NICs: an untrusted VF gets at most a
//! limited number of extra unicast addresses over all its vNICs (ice: 16
//! besides its own and broadcast) and no promiscuous mode (i40e and ice
//! refuse it and log on the host; the VF keeps receiving its own traffic);
//! all-multicast is granted to every VF, as ixgbe does, since it only
//! widens which groups a vNIC hears, not whose unicast.

use std::collections::BTreeSet;

use rustc_hash::{FxHashMap, FxHashSet};

use super::Port;
use crate::model::{Mac, RxFilter};

/// What a function may be granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Allowance {
    /// Management trusts the function (the PF always is).
    pub trusted: bool,
    /// Extra unicast addresses an untrusted function may have over all
    /// its vNICs.
    pub max_unicast: usize,
}

/// What the card granted of a request, and what it refused.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Grant {
    pub promisc: bool,
    pub allmulti: bool,
    /// Promiscuous mode was asked for by an untrusted function.
    pub promisc_refused: bool,
    /// Extra unicast addresses now in effect.
    pub unicast: usize,
    /// Unicast addresses refused: beyond the function's limit.
    pub over_limit: usize,
    /// Unicast addresses refused: another vNIC's (own, static or extra),
    /// or not a station address (all zeros).
    pub taken: usize,
}

impl Grant {
    /// Addresses refused, for whatever reason.
    pub fn refused(&self) -> usize {
        self.over_limit + self.taken
    }
}

/// What the card keeps for one vNIC.
#[derive(Clone, Debug, Default)]
struct PortFilter {
    promisc: bool,
    allmulti: bool,
    unicast: Vec<Mac>,
    multicast: FxHashSet<Mac>,
}

/// A vNIC's filter as management shows it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct FilterView {
    pub promisc: bool,
    pub allmulti: bool,
    pub unicast: Vec<Mac>,
    pub multicast: Vec<Mac>,
}

/// The filters of the ports of one switch (or of the VNI segments).
#[derive(Debug, Default)]
pub struct AddrFilters {
    ports: FxHashMap<Port, PortFilter>,
    /// The vNIC each extra unicast address belongs to.
    owners: FxHashMap<Mac, Port>,
    /// vNICs granted promiscuous mode.
    promisc: BTreeSet<Port>,
}

impl AddrFilters {
    /// Replaces `port`'s filter by what the card grants of `request`.
    /// `owner(mac)` tells which port the rest of the switch gives `mac` to
    /// in the port's VLANs (or segment), if any.
    pub fn set(
        &mut self,
        port: Port,
        request: &RxFilter,
        allow: Allowance,
        owner: impl Fn(Mac) -> Option<Port>,
    ) -> Grant {
        self.remove(port);
        let mut grant = Grant::default();
        let mut used = self.unicast_of_function(port.function);
        let mut filter = PortFilter::default();
        for &mac in &request.unicast {
            if filter.unicast.contains(&mac) || owner(mac) == Some(port) {
                continue;
            }
            let other = owner(mac).or_else(|| self.owner(mac));
            if mac.is_multicast() || mac == Mac::default() || other.is_some() {
                grant.taken += 1;
            } else if !allow.trusted && used >= allow.max_unicast {
                grant.over_limit += 1;
            } else {
                filter.unicast.push(mac);
                used += 1;
            }
        }
        filter.multicast = request
            .multicast
            .iter()
            .copied()
            .filter(|m| m.is_multicast() && *m != Mac::BROADCAST)
            .collect();
        filter.allmulti = request.allmulti;
        filter.promisc = request.promisc && allow.trusted;
        grant.promisc_refused = request.promisc && !allow.trusted;
        grant.promisc = filter.promisc;
        grant.allmulti = filter.allmulti;
        grant.unicast = filter.unicast.len();
        for &mac in &filter.unicast {
            self.owners.insert(mac, port);
        }
        if filter.promisc {
            self.promisc.insert(port);
        }
        self.ports.insert(port, filter);
        grant
    }

    /// Forgets `port`'s filter: it gets every multicast frame again.
    pub fn remove(&mut self, port: Port) {
        if let Some(old) = self.ports.remove(&port) {
            for mac in old.unicast {
                self.owners.remove(&mac);
            }
            self.promisc.remove(&port);
        }
    }

    /// Forgets the filters of every vNIC of function `f`.
    pub fn remove_function(&mut self, f: usize) {
        let ports: Vec<Port> = self
            .ports
            .keys()
            .copied()
            .filter(|p| p.function == f)
            .collect();
        for p in ports {
            self.remove(p);
        }
    }

    /// The vNIC an extra unicast address belongs to.
    #[inline]
    pub fn owner(&self, mac: Mac) -> Option<Port> {
        if self.owners.is_empty() {
            return None;
        }
        self.owners.get(&mac).copied()
    }

    /// Whether `mac` is one of `port`'s extra unicast addresses.
    #[inline]
    pub fn owns(&self, port: Port, mac: Mac) -> bool {
        self.owner(mac) == Some(port)
    }

    /// Whether `port` receives a frame to group address `dst`.
    pub fn wants_multicast(&self, port: Port, dst: Mac) -> bool {
        self.ports.get(&port).is_none_or(|f| {
            f.promisc || f.allmulti || dst == Mac::BROADCAST || f.multicast.contains(&dst)
        })
    }

    /// Whether any vNIC is in promiscuous mode.
    #[inline]
    pub fn any_promiscuous(&self) -> bool {
        !self.promisc.is_empty()
    }

    /// The vNICs in promiscuous mode, in order.
    pub fn promiscuous(&self) -> impl Iterator<Item = Port> + '_ {
        self.promisc.iter().copied()
    }

    /// Extra unicast addresses of function `f`, over all its vNICs.
    pub fn unicast_of_function(&self, f: usize) -> usize {
        self.ports
            .iter()
            .filter(|(p, _)| p.function == f)
            .map(|(_, filter)| filter.unicast.len())
            .sum()
    }

    /// `port`'s filter as management shows it; None if its driver never
    /// asked for one.
    pub fn view(&self, port: Port) -> Option<FilterView> {
        let f = self.ports.get(&port)?;
        let mut multicast: Vec<Mac> = f.multicast.iter().copied().collect();
        multicast.sort();
        Some(FilterView {
            promisc: f.promisc,
            allmulti: f.allmulti,
            unicast: f.unicast.clone(),
            multicast,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mac(n: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, n])
    }
    fn group(n: u8) -> Mac {
        Mac([1, 0, 0x5e, 0, 0, n])
    }
    fn port(function: usize, qp: u16) -> Port {
        Port { function, qp }
    }
    const UNTRUSTED: Allowance = Allowance {
        trusted: false,
        max_unicast: 3,
    };
    const TRUSTED: Allowance = Allowance {
        trusted: true,
        max_unicast: 3,
    };
    fn unicast(macs: &[Mac]) -> RxFilter {
        RxFilter {
            unicast: macs.to_vec(),
            ..RxFilter::default()
        }
    }

    #[test]
    fn untrusted_function_gets_its_limit_over_all_its_vnics() {
        let mut f = AddrFilters::default();
        let g = f.set(port(1, 0), &unicast(&[mac(1), mac(2)]), UNTRUSTED, |_| None);
        assert_eq!((g.unicast, g.refused()), (2, 0));
        let g = f.set(port(1, 1), &unicast(&[mac(3), mac(4)]), UNTRUSTED, |_| None);
        assert_eq!((g.unicast, g.over_limit), (1, 1));
        assert_eq!(f.owner(mac(3)), Some(port(1, 1)));
        assert_eq!(f.owner(mac(4)), None);
        // Another function has its own budget; a trusted one has none.
        let g = f.set(
            port(2, 0),
            &unicast(&[mac(5), mac(6), mac(7)]),
            UNTRUSTED,
            |_| None,
        );
        assert_eq!(g.unicast, 3);
        let many: Vec<Mac> = (10..30).map(mac).collect();
        let g = f.set(port(3, 0), &unicast(&many), TRUSTED, |_| None);
        assert_eq!((g.unicast, g.refused()), (20, 0));
        // Replacing a vNIC's list frees what it had.
        f.set(port(1, 0), &RxFilter::default(), UNTRUSTED, |_| None);
        let g = f.set(port(1, 1), &unicast(&[mac(3), mac(4)]), UNTRUSTED, |_| None);
        assert_eq!((g.unicast, g.over_limit), (2, 0));
    }

    #[test]
    fn an_address_another_vnic_has_is_refused_and_the_own_one_skipped() {
        let mut f = AddrFilters::default();
        f.set(port(1, 0), &unicast(&[mac(1)]), TRUSTED, |_| None);
        let table = |m: Mac| (m == mac(9)).then_some(port(2, 0));
        let g = f.set(
            port(2, 0),
            &unicast(&[mac(1), mac(9), Mac::default(), group(1), mac(2), mac(2)]),
            UNTRUSTED,
            table,
        );
        // mac(1) is vNIC (1,0)'s, mac(9) its own, zero and a group are no
        // station addresses, mac(2) is taken once.
        assert_eq!((g.unicast, g.taken, g.over_limit), (1, 3, 0));
        assert_eq!(f.view(port(2, 0)).unwrap().unicast, vec![mac(2)]);
    }

    #[test]
    fn promiscuous_only_when_trusted_allmulti_always() {
        let mut f = AddrFilters::default();
        let ask = RxFilter {
            promisc: true,
            allmulti: true,
            ..RxFilter::default()
        };
        let g = f.set(port(1, 0), &ask, UNTRUSTED, |_| None);
        assert!(g.promisc_refused && !g.promisc && g.allmulti);
        assert!(!f.any_promiscuous());
        let g = f.set(port(1, 0), &ask, TRUSTED, |_| None);
        assert!(g.promisc && !g.promisc_refused);
        assert_eq!(f.promiscuous().collect::<Vec<_>>(), vec![port(1, 0)]);
        f.remove_function(1);
        assert!(!f.any_promiscuous() && f.view(port(1, 0)).is_none());
    }

    #[test]
    fn multicast_reaches_members_and_everyone_without_a_filter() {
        let mut f = AddrFilters::default();
        let joined = RxFilter {
            multicast: vec![group(1), Mac::BROADCAST],
            ..RxFilter::default()
        };
        f.set(port(1, 0), &joined, UNTRUSTED, |_| None);
        f.set(port(1, 1), &RxFilter::default(), UNTRUSTED, |_| None);
        assert!(f.wants_multicast(port(1, 0), group(1)));
        assert!(!f.wants_multicast(port(1, 0), group(2)));
        assert!(!f.wants_multicast(port(1, 1), group(1)));
        assert!(f.wants_multicast(port(1, 1), Mac::BROADCAST));
        // No filter asked for: every group, as before drivers could ask.
        assert!(f.wants_multicast(port(2, 0), group(2)));
        let all = RxFilter {
            allmulti: true,
            ..RxFilter::default()
        };
        f.set(port(1, 1), &all, UNTRUSTED, |_| None);
        assert!(f.wants_multicast(port(1, 1), group(7)));
    }
}
