//! The card's VxLAN tables (docs/vxlan.md, "Tables"): (VNI, inner MAC) →
//! tunnel ID → remote (next-hop MAC, remote VTEP IP).
//!
//! Both tables have a fixed capacity, as on a NIC whose tables live in
//! on-chip memory. Every entry counts its uses; installing into a full
//! table evicts the least-used entry (ties: the oldest), so the entries
//! that carry traffic stay and the host re-resolves the rest on demand.
//! MAC entries with the same remote share one tunnel ID.

use std::collections::HashMap;

use super::wire::Remote;
use crate::switch::Mac;

pub type TunnelId = u32;

/// Default capacity: tunnel IDs, and as many MAC entries.
pub const DEFAULT_CAPACITY: usize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Counted<T> {
    value: T,
    uses: u64,
    /// Installation order, for ties.
    seq: u64,
}

/// What an RX frame's outer source says about its inner source.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxCheck {
    /// The entry exists and the outer addresses match it.
    Known,
    /// No entry for (VNI, inner source MAC).
    Unknown,
    /// The entry names another remote (the MAC moved).
    Moved,
}

/// One MAC entry, for listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MacEntry {
    pub vni: u32,
    pub mac: Mac,
    pub tunnel: TunnelId,
    pub uses: u64,
}

/// One tunnel, for listings.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TunnelEntry {
    pub id: TunnelId,
    pub remote: Remote,
    pub uses: u64,
}

/// The result of an installation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Installed {
    pub tunnel: TunnelId,
    /// MAC entries evicted to make room.
    pub evicted: Vec<(u32, Mac)>,
}

#[derive(Debug)]
pub struct Tables {
    capacity: usize,
    macs: HashMap<(u32, Mac), Counted<TunnelId>>,
    tunnels: HashMap<TunnelId, Counted<Remote>>,
    by_remote: HashMap<Remote, TunnelId>,
    next_id: TunnelId,
    seq: u64,
    /// Entries evicted so far.
    pub evictions: u64,
}

impl Default for Tables {
    fn default() -> Self {
        Tables::new(DEFAULT_CAPACITY)
    }
}

impl Tables {
    pub fn new(capacity: usize) -> Self {
        Tables {
            capacity: capacity.max(1),
            macs: HashMap::new(),
            tunnels: HashMap::new(),
            by_remote: HashMap::new(),
            next_id: 1,
            seq: 0,
            evictions: 0,
        }
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Installs (VNI, MAC) → `remote`, sharing the tunnel of an entry with
    /// the same remote; evicts the least-used entries if a table is full.
    pub fn install(&mut self, vni: u32, mac: Mac, remote: Remote) -> Installed {
        let mut evicted = Vec::new();
        let tunnel = match self.by_remote.get(&remote) {
            Some(&id) => id,
            None => {
                if self.tunnels.len() >= self.capacity {
                    evicted.extend(self.evict_tunnel());
                }
                self.new_tunnel(remote)
            }
        };
        let seq = self.next_seq();
        if let Some(e) = self.macs.get_mut(&(vni, mac)) {
            let old = std::mem::replace(&mut e.value, tunnel);
            self.release_if_unused(old);
        } else {
            if self.macs.len() >= self.capacity {
                evicted.extend(self.evict_mac());
            }
            self.macs.insert(
                (vni, mac),
                Counted {
                    value: tunnel,
                    uses: 0,
                    seq,
                },
            );
        }
        Installed { tunnel, evicted }
    }

    fn new_tunnel(&mut self, remote: Remote) -> TunnelId {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1).max(1);
        let seq = self.next_seq();
        self.tunnels.insert(
            id,
            Counted {
                value: remote,
                uses: 0,
                seq,
            },
        );
        self.by_remote.insert(remote, id);
        id
    }

    /// Evicts the least-used tunnel and the MAC entries that use it.
    fn evict_tunnel(&mut self) -> Vec<(u32, Mac)> {
        let Some((&id, _)) = self.tunnels.iter().min_by_key(|(_, t)| (t.uses, t.seq)) else {
            return Vec::new();
        };
        let gone: Vec<(u32, Mac)> = self
            .macs
            .iter()
            .filter(|(_, e)| e.value == id)
            .map(|(k, _)| *k)
            .collect();
        for k in &gone {
            self.macs.remove(k);
        }
        self.drop_tunnel(id);
        self.evictions += 1 + gone.len() as u64;
        gone
    }

    /// Evicts the least-used MAC entry.
    fn evict_mac(&mut self) -> Option<(u32, Mac)> {
        let (&key, _) = self.macs.iter().min_by_key(|(_, e)| (e.uses, e.seq))?;
        let e = self.macs.remove(&key)?;
        self.release_if_unused(e.value);
        self.evictions += 1;
        Some(key)
    }

    fn release_if_unused(&mut self, id: TunnelId) {
        if !self.macs.values().any(|e| e.value == id) {
            self.drop_tunnel(id);
        }
    }

    fn drop_tunnel(&mut self, id: TunnelId) {
        if let Some(t) = self.tunnels.remove(&id) {
            self.by_remote.remove(&t.value);
        }
    }

    /// Removes (VNI, MAC); whether it was there.
    pub fn remove(&mut self, vni: u32, mac: Mac) -> bool {
        match self.macs.remove(&(vni, mac)) {
            Some(e) => {
                self.release_if_unused(e.value);
                true
            }
            None => false,
        }
    }

    /// TX: the remote for (VNI, destination MAC), counting the use.
    pub fn lookup(&mut self, vni: u32, mac: Mac) -> Option<Remote> {
        let e = self.macs.get_mut(&(vni, mac))?;
        e.uses += 1;
        let t = self.tunnels.get_mut(&e.value)?;
        t.uses += 1;
        Some(t.value)
    }

    /// RX: whether (VNI, inner source MAC) is known from this remote,
    /// counting the use when it is.
    pub fn check_rx(&mut self, vni: u32, src: Mac, from: Remote) -> RxCheck {
        let Some(e) = self.macs.get_mut(&(vni, src)) else {
            return RxCheck::Unknown;
        };
        let Some(t) = self.tunnels.get_mut(&e.value) else {
            return RxCheck::Unknown;
        };
        if t.value != from {
            return RxCheck::Moved;
        }
        e.uses += 1;
        t.uses += 1;
        RxCheck::Known
    }

    /// Every MAC entry, sorted by (VNI, MAC).
    pub fn macs(&self) -> Vec<MacEntry> {
        let mut v: Vec<MacEntry> = self
            .macs
            .iter()
            .map(|(&(vni, mac), e)| MacEntry {
                vni,
                mac,
                tunnel: e.value,
                uses: e.uses,
            })
            .collect();
        v.sort_by_key(|e| (e.vni, e.mac.0));
        v
    }

    /// Every tunnel, sorted by ID.
    pub fn tunnels(&self) -> Vec<TunnelEntry> {
        let mut v: Vec<TunnelEntry> = self
            .tunnels
            .iter()
            .map(|(&id, t)| TunnelEntry {
                id,
                remote: t.value,
                uses: t.uses,
            })
            .collect();
        v.sort_by_key(|t| t.id);
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn mac(n: u8) -> Mac {
        Mac([2, 0, 0, 0, 0, n])
    }

    fn remote(n: u8) -> Remote {
        Remote {
            mac: Mac([2, 0xee, 0, 0, 0, n]),
            ip: Ipv4Addr::new(10, 1, 0, n),
        }
    }

    #[test]
    fn miss_then_hit_with_usage_counters() {
        let mut t = Tables::default();
        assert_eq!(t.lookup(100, mac(1)), None);
        t.install(100, mac(1), remote(2));
        assert_eq!(t.lookup(100, mac(1)), Some(remote(2)));
        assert_eq!(t.lookup(100, mac(1)), Some(remote(2)));
        assert_eq!(t.lookup(200, mac(1)), None, "another VNI");
        assert_eq!(t.macs()[0].uses, 2);
        assert_eq!(t.tunnels()[0].uses, 2);
        assert_eq!(t.check_rx(100, mac(1), remote(2)), RxCheck::Known);
        assert_eq!(t.check_rx(100, mac(1), remote(3)), RxCheck::Moved);
        assert_eq!(t.check_rx(100, mac(9), remote(2)), RxCheck::Unknown);
        assert_eq!(t.macs()[0].uses, 3);
    }

    #[test]
    fn entries_with_one_remote_share_a_tunnel_id() {
        let mut t = Tables::default();
        let a = t.install(100, mac(1), remote(2)).tunnel;
        let b = t.install(100, mac(2), remote(2)).tunnel;
        let c = t.install(200, mac(3), remote(2)).tunnel;
        let d = t.install(100, mac(4), remote(3)).tunnel;
        assert_eq!((a, a), (b, c));
        assert_ne!(a, d);
        assert_eq!(t.tunnels().len(), 2);
        // The last user of a tunnel gone, the tunnel goes too.
        assert!(t.remove(100, mac(4)));
        assert_eq!(t.tunnels().len(), 1);
        // A moved MAC takes the new remote's tunnel.
        let e = t.install(100, mac(1), remote(5)).tunnel;
        assert_ne!(e, a);
        assert_eq!(t.lookup(100, mac(1)), Some(remote(5)));
    }

    #[test]
    fn a_full_table_evicts_the_least_used_entry() {
        let mut t = Tables::new(3);
        for n in 1..=3 {
            t.install(100, mac(n), remote(n));
        }
        // mac 1 and 3 are used; mac 2 is the least used.
        t.lookup(100, mac(1));
        t.lookup(100, mac(3));
        t.lookup(100, mac(3));
        let i = t.install(100, mac(4), remote(4));
        assert_eq!(i.evicted, vec![(100, mac(2))]);
        assert_eq!(t.lookup(100, mac(2)), None);
        assert!(t.lookup(100, mac(1)).is_some());
        assert_eq!(t.macs().len(), 3);
        assert_eq!(t.tunnels().len(), 3);
        assert_eq!(t.evictions, 1 + 1, "the tunnel and its MAC");
        // Ties go to the oldest: mac 4 (0 uses) is evicted before a newer
        // entry with 0 uses can be.
        let i = t.install(100, mac(5), remote(1));
        assert_eq!(i.evicted, vec![(100, mac(4))]);
        assert_eq!(i.tunnel, t.install(100, mac(1), remote(1)).tunnel);
    }
}
