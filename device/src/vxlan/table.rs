//! The card's VxLAN tables (docs/vxlan.md, "Tables"): the MAC table
//! (VNI, inner MAC) → tunnel ID and the tunnel table tunnel ID → (next-hop
//! MAC, remote VTEP IP), with usage counters and least-used eviction.
//!
//! Entries with the same remote share one tunnel ID; a tunnel lives while a
//! MAC entry uses it. Installing into a full table evicts the entry with the
//! lowest usage counter, the oldest among equals. The scan for the victim
//! is linear, but it only runs when an install finds the table full; the
//! data path's lookups are hash-map hits.

use rustc_hash::FxHashMap;
use std::net::Ipv4Addr;

use super::Vni;
use crate::model::Mac;

/// A tunnel's number, `0..capacity`.
pub type TunnelId = u32;

/// Where a tunnel leads: the outer destination of its frames.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
pub struct Remote {
    /// The remote VTEP.
    pub ip: Ipv4Addr,
    /// The next hop towards it.
    pub mac: Mac,
}

#[derive(Clone, Copy, Debug)]
struct Tunnel {
    remote: Remote,
    uses: u64,
    /// Install order, for ties between equal counters.
    born: u64,
    /// MAC entries using the tunnel.
    refs: u32,
}

#[derive(Clone, Copy, Debug)]
struct MacEntry {
    tunnel: TunnelId,
    uses: u64,
    born: u64,
}

/// A MAC entry that left the table to make room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Evicted {
    pub vni: Vni,
    pub mac: Mac,
    pub tunnel: TunnelId,
}

/// What an install did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub tunnel: TunnelId,
    pub evicted: Vec<Evicted>,
}

/// A tunnel as `vxlan-list` shows it (and the state record keeps it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TunnelView {
    pub id: TunnelId,
    pub remote: Remote,
    pub uses: u64,
}

/// A MAC entry as `vxlan-list` shows it (and the state record keeps it).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MacView {
    pub vni: Vni,
    pub mac: Mac,
    pub tunnel: TunnelId,
    pub uses: u64,
}

/// How a (VNI, MAC) entry compares with the outer source of a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Check {
    /// Known, and from its tunnel's remote: the use was counted.
    Known,
    /// Not in the MAC table.
    Unknown,
    /// Known, from another remote.
    Moved,
}

#[derive(Debug)]
pub struct Tables {
    mac_capacity: usize,
    /// Slot i is tunnel ID i.
    tunnels: Vec<Option<Tunnel>>,
    tunnel_count: usize,
    by_remote: FxHashMap<Remote, TunnelId>,
    macs: FxHashMap<(Vni, Mac), MacEntry>,
    /// Install counter: "born" stamps.
    clock: u64,
}

impl Tables {
    /// Tables of `capacity` tunnel IDs and as many MAC entries.
    pub fn new(capacity: usize) -> Self {
        Self::with_capacities(capacity, capacity)
    }

    /// Separate capacities (tests use fewer tunnels than MAC entries to
    /// reach tunnel eviction, which equal capacities never need).
    pub fn with_capacities(macs: usize, tunnels: usize) -> Self {
        Tables {
            mac_capacity: macs.max(1),
            tunnels: vec![None; tunnels.max(1)],
            tunnel_count: 0,
            by_remote: FxHashMap::default(),
            macs: FxHashMap::default(),
            clock: 0,
        }
    }

    /// Tunnel IDs (the setting `--vxlan-capacity`).
    pub fn capacity(&self) -> usize {
        self.tunnels.len()
    }

    pub fn len(&self) -> usize {
        self.macs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.macs.is_empty()
    }

    pub fn tunnel_count(&self) -> usize {
        self.tunnel_count
    }

    fn tick(&mut self) -> u64 {
        self.clock += 1;
        self.clock
    }

    /// Installs (vni, mac) → a tunnel to `remote`, evicting what it must.
    /// An entry already pointing there is left as it is (counters kept);
    /// one pointing elsewhere is replaced.
    pub fn install(&mut self, vni: Vni, mac: Mac, remote: Remote) -> Installed {
        if let Some(e) = self.macs.get(&(vni, mac)) {
            if self.tunnel(e.tunnel).is_some_and(|t| t.remote == remote) {
                return Installed {
                    tunnel: e.tunnel,
                    evicted: Vec::new(),
                };
            }
            self.remove(vni, mac);
        }
        let mut evicted = Vec::new();
        // MAC entries first: an eviction here may free a tunnel, and must
        // not free the one the new entry is about to use.
        if self.macs.len() >= self.mac_capacity {
            evicted.extend(self.evict_mac());
        }
        let tunnel = match self.by_remote.get(&remote) {
            Some(&id) => id,
            None => {
                if self.tunnel_count >= self.tunnels.len() {
                    evicted.extend(self.evict_tunnel());
                }
                self.new_tunnel(remote)
            }
        };
        let born = self.tick();
        self.macs.insert(
            (vni, mac),
            MacEntry {
                tunnel,
                uses: 0,
                born,
            },
        );
        if let Some(t) = self.tunnel_mut(tunnel) {
            t.refs += 1;
        }
        Installed { tunnel, evicted }
    }

    fn tunnel(&self, id: TunnelId) -> Option<&Tunnel> {
        self.tunnels.get(id as usize).and_then(Option::as_ref)
    }

    fn tunnel_mut(&mut self, id: TunnelId) -> Option<&mut Tunnel> {
        self.tunnels.get_mut(id as usize).and_then(Option::as_mut)
    }

    /// Takes the lowest free tunnel ID for `remote` (the caller made room).
    fn new_tunnel(&mut self, remote: Remote) -> TunnelId {
        let born = self.tick();
        let slot = self
            .tunnels
            .iter()
            .position(Option::is_none)
            .expect("the caller made room");
        self.tunnels[slot] = Some(Tunnel {
            remote,
            uses: 0,
            born,
            refs: 0,
        });
        self.tunnel_count += 1;
        let id = slot as TunnelId;
        self.by_remote.insert(remote, id);
        id
    }

    fn free_tunnel(&mut self, id: TunnelId) {
        if let Some(t) = self.tunnels.get_mut(id as usize).and_then(Option::take) {
            self.by_remote.remove(&t.remote);
            self.tunnel_count -= 1;
        }
    }

    /// Removes (vni, mac); its tunnel goes too if nothing else uses it.
    /// Returns the tunnel it used.
    pub fn remove(&mut self, vni: Vni, mac: Mac) -> Option<TunnelId> {
        let e = self.macs.remove(&(vni, mac))?;
        let t = self.tunnel_mut(e.tunnel)?;
        t.refs = t.refs.saturating_sub(1);
        if t.refs == 0 {
            self.free_tunnel(e.tunnel);
        }
        Some(e.tunnel)
    }

    /// Evicts the least-used MAC entry (the oldest among equals).
    fn evict_mac(&mut self) -> Option<Evicted> {
        let (&(vni, mac), e) = self.macs.iter().min_by_key(|(_, e)| (e.uses, e.born))?;
        let tunnel = e.tunnel;
        self.remove(vni, mac);
        Some(Evicted { vni, mac, tunnel })
    }

    /// Evicts the least-used tunnel and every MAC entry using it.
    fn evict_tunnel(&mut self) -> Vec<Evicted> {
        let Some(id) = self
            .tunnels
            .iter()
            .enumerate()
            .filter_map(|(i, t)| t.map(|t| (i as TunnelId, t)))
            .min_by_key(|(_, t)| (t.uses, t.born))
            .map(|(i, _)| i)
        else {
            return Vec::new();
        };
        let mut gone: Vec<Evicted> = self
            .macs
            .iter()
            .filter(|(_, e)| e.tunnel == id)
            .map(|(&(vni, mac), _)| Evicted {
                vni,
                mac,
                tunnel: id,
            })
            .collect();
        gone.sort_by_key(|e| (e.vni, e.mac));
        for e in &gone {
            self.macs.remove(&(e.vni, e.mac));
        }
        self.free_tunnel(id);
        gone
    }

    /// The remote of (vni, mac), counting one use of the entry and its
    /// tunnel (a TX hit).
    pub fn use_entry(&mut self, vni: Vni, mac: Mac) -> Option<Remote> {
        let e = self.macs.get_mut(&(vni, mac))?;
        e.uses += 1;
        let id = e.tunnel;
        let t = self.tunnel_mut(id)?;
        t.uses += 1;
        Some(t.remote)
    }

    /// Checks a frame from `from` with inner source (vni, mac) against the
    /// tables (RX); a [`Check::Known`] frame's use is counted.
    pub fn check_source(&mut self, vni: Vni, mac: Mac, from: Remote) -> Check {
        let Some(e) = self.macs.get(&(vni, mac)) else {
            return Check::Unknown;
        };
        if self.tunnel(e.tunnel).map(|t| t.remote) != Some(from) {
            return Check::Moved;
        }
        self.use_entry(vni, mac);
        Check::Known
    }

    /// Every tunnel, by ID.
    pub fn tunnels(&self) -> Vec<TunnelView> {
        self.tunnels
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                t.map(|t| TunnelView {
                    id: i as TunnelId,
                    remote: t.remote,
                    uses: t.uses,
                })
            })
            .collect()
    }

    /// Takes back what a state record kept (docs/restart.md): the same
    /// tunnel IDs, MAC entries and use counts. Entries beyond this table's
    /// capacity, a tunnel ID past it, or a MAC entry naming no tunnel are
    /// left out; the number left out is returned.
    pub fn restore(&mut self, tunnels: &[TunnelView], macs: &[MacView]) -> usize {
        *self = Self::with_capacities(self.mac_capacity, self.tunnels.len());
        let mut skipped = 0;
        for t in tunnels {
            let slot = self.tunnels.get_mut(t.id as usize);
            match slot {
                Some(slot @ None) if !self.by_remote.contains_key(&t.remote) => {
                    self.clock += 1;
                    *slot = Some(Tunnel {
                        remote: t.remote,
                        uses: t.uses,
                        born: self.clock,
                        refs: 0,
                    });
                    self.by_remote.insert(t.remote, t.id);
                    self.tunnel_count += 1;
                }
                _ => skipped += 1,
            }
        }
        for m in macs {
            let tunnel = self
                .tunnels
                .get_mut(m.tunnel as usize)
                .and_then(Option::as_mut);
            match tunnel {
                Some(t) if self.macs.len() < self.mac_capacity => {
                    t.refs += 1;
                    self.clock += 1;
                    let entry = MacEntry {
                        tunnel: m.tunnel,
                        uses: m.uses,
                        born: self.clock,
                    };
                    self.macs.insert((m.vni, m.mac), entry);
                }
                _ => skipped += 1,
            }
        }
        skipped
    }

    /// Every MAC entry, sorted by (VNI, MAC).
    pub fn macs(&self) -> Vec<MacView> {
        let mut v: Vec<MacView> = self
            .macs
            .iter()
            .map(|(&(vni, mac), e)| MacView {
                vni,
                mac,
                tunnel: e.tunnel,
                uses: e.uses,
            })
            .collect();
        v.sort_by_key(|m| (m.vni, m.mac));
        v
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
    fn remote(n: u8) -> Remote {
        Remote {
            ip: Ipv4Addr::new(10, 1, 0, n),
            mac: Mac([2, 0xee, 0, 0, 0, n]),
        }
    }

    #[test]
    fn miss_then_hit_counts_the_entry_and_its_tunnel() {
        let mut t = Tables::new(8);
        assert_eq!(t.use_entry(vni(1), mac(1)), None, "miss");
        let i = t.install(vni(1), mac(1), remote(2));
        assert_eq!(
            i,
            Installed {
                tunnel: 0,
                evicted: vec![]
            }
        );
        assert_eq!(t.use_entry(vni(1), mac(1)), Some(remote(2)));
        assert_eq!(t.use_entry(vni(1), mac(1)), Some(remote(2)));
        assert_eq!(t.use_entry(vni(2), mac(1)), None, "other VNI");
        assert_eq!(t.macs()[0].uses, 2);
        assert_eq!(t.tunnels()[0].uses, 2);
    }

    #[test]
    fn entries_with_the_same_remote_share_a_tunnel_id() {
        let mut t = Tables::new(8);
        let a = t.install(vni(1), mac(1), remote(2)).tunnel;
        let b = t.install(vni(7), mac(9), remote(2)).tunnel;
        let c = t.install(vni(1), mac(3), remote(3)).tunnel;
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(t.tunnels().len(), 2);
        t.use_entry(vni(1), mac(1));
        t.use_entry(vni(7), mac(9));
        assert_eq!(t.tunnels()[a as usize].uses, 2, "shared counter");
        // The tunnel stays while an entry uses it, and goes with the last.
        assert_eq!(t.remove(vni(1), mac(1)), Some(a));
        assert_eq!(t.tunnels().len(), 2);
        t.remove(vni(7), mac(9));
        assert_eq!(t.tunnels().len(), 1);
        assert_eq!(t.remove(vni(7), mac(9)), None);
        // Its ID is free for the next remote.
        assert_eq!(t.install(vni(1), mac(4), remote(4)).tunnel, a);
    }

    #[test]
    fn a_full_table_evicts_the_least_used_entry_oldest_first() {
        let mut t = Tables::new(3);
        for n in 1..=3 {
            t.install(vni(1), mac(n), remote(n));
        }
        for _ in 0..5 {
            t.use_entry(vni(1), mac(1));
        }
        t.use_entry(vni(1), mac(3));
        // mac(2) has 0 uses: it goes.
        let i = t.install(vni(1), mac(4), remote(4));
        assert_eq!(
            i.evicted,
            vec![Evicted {
                vni: vni(1),
                mac: mac(2),
                tunnel: 1
            }]
        );
        assert_eq!(i.tunnel, 1, "the freed tunnel ID is reused");
        // mac(3) (1 use) and mac(4) (0 uses): mac(4) goes.
        let i = t.install(vni(1), mac(5), remote(1));
        assert_eq!(i.evicted[0].mac, mac(4));
        assert_eq!(i.tunnel, 0, "shares mac(1)'s tunnel");
        // mac(5) used once: it and mac(3) have 1 use each, and equal
        // counters are broken by age.
        t.use_entry(vni(1), mac(5));
        let i = t.install(vni(1), mac(6), remote(6));
        assert_eq!(i.evicted[0].mac, mac(3), "1 use each: the oldest goes");
        assert_eq!(t.len(), 3);
        assert_eq!(t.tunnels().len(), 2);
    }

    #[test]
    fn evicting_a_tunnel_takes_its_mac_entries() {
        let mut t = Tables::with_capacities(8, 2);
        t.install(vni(1), mac(1), remote(1));
        t.install(vni(1), mac(2), remote(1));
        t.install(vni(1), mac(3), remote(2));
        t.use_entry(vni(1), mac(3));
        let i = t.install(vni(2), mac(4), remote(3));
        let gone: Vec<Mac> = i.evicted.iter().map(|e| e.mac).collect();
        assert_eq!(gone, vec![mac(1), mac(2)]);
        assert_eq!(i.tunnel, 0);
        assert_eq!(t.use_entry(vni(1), mac(1)), None);
        assert_eq!(t.use_entry(vni(2), mac(4)), Some(remote(3)));
    }

    #[test]
    fn reinstalling_keeps_counters_and_moving_replaces_the_entry() {
        let mut t = Tables::new(4);
        t.install(vni(1), mac(1), remote(1));
        t.use_entry(vni(1), mac(1));
        let again = t.install(vni(1), mac(1), remote(1));
        assert_eq!(again.evicted, vec![]);
        assert_eq!(t.macs()[0].uses, 1);
        let moved = t.install(vni(1), mac(1), remote(2));
        assert_eq!(moved.evicted, vec![], "a replacement is no eviction");
        assert_eq!(t.tunnels().len(), 1, "the old tunnel went");
        assert_eq!(t.macs()[0].uses, 0);
        assert_eq!(t.use_entry(vni(1), mac(1)), Some(remote(2)));
    }

    #[test]
    fn source_checks_tell_known_unknown_and_moved() {
        let mut t = Tables::new(4);
        t.install(vni(1), mac(1), remote(1));
        assert_eq!(t.check_source(vni(1), mac(2), remote(1)), Check::Unknown);
        assert_eq!(t.check_source(vni(2), mac(1), remote(1)), Check::Unknown);
        assert_eq!(t.check_source(vni(1), mac(1), remote(2)), Check::Moved);
        let other_mac = Remote {
            mac: Mac([2, 0, 0, 0, 0, 0x77]),
            ..remote(1)
        };
        assert_eq!(t.check_source(vni(1), mac(1), other_mac), Check::Moved);
        assert_eq!(t.macs()[0].uses, 0, "no use counted for those");
        assert_eq!(t.check_source(vni(1), mac(1), remote(1)), Check::Known);
        assert_eq!(t.macs()[0].uses, 1);
        assert_eq!(t.tunnels()[0].uses, 1);
    }
}
