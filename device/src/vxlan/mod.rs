//! VxLAN offload (docs/vxlan.md, SPEC section 5): the per-VF attribute, the
//! VTEP, the VNI segments and the tables. Pure state and formats: what the
//! card does with frames through them is the data path's
//! (`crate::datapath`).
//!
//! - `wire`: the outer headers, built and parsed;
//! - `table`: (VNI, MAC) → tunnel → remote, with usage counters and
//!   eviction;
//! - `segment`: the vNICs of VxLAN VFs, switched by (VNI, MAC) apart from
//!   the VLAN switch;
//! - `exception`: the messages of the PF's exception queue pair, where a
//!   PF driver serves the card's requests.

pub mod exception;
pub mod segment;
pub mod table;
pub mod wire;

use std::fmt;
use std::net::Ipv4Addr;

use log::info;

use crate::model::{Mac, Vtep};

use table::{Installed, Remote};

pub use exception::ExceptionCounters;
pub use segment::Segments;
pub use table::Tables;

/// A VxLAN network identifier of a VF: 1..=16777215 (24 bits; 0 is left
/// unused, as Linux's vxlan does for "no VNI").
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
pub struct Vni(u32);

/// Why a VNI was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("VNI {0} outside 1..={max}", max = Vni::MAX)]
pub struct BadVni(pub u32);

impl Vni {
    pub const MAX: u32 = 0x00ff_ffff;

    pub fn new(v: u32) -> Result<Vni, BadVni> {
        if (1..=Vni::MAX).contains(&v) {
            Ok(Vni(v))
        } else {
            Err(BadVni(v))
        }
    }

    pub fn get(self) -> u32 {
        self.0
    }
}

impl fmt::Display for Vni {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Card counters of VxLAN (`stats`, docs/vxlan.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct VxlanCounters {
    /// Frames encapsulated and sent to the uplink.
    pub encapsulated: u64,
    /// TX misses turned into `vxlan-miss` requests to the host.
    pub requests: u64,
    /// Frames of VxLAN VFs while no VTEP is set.
    pub no_vtep: u64,
    /// MAC entries evicted from a full table.
    pub evictions: u64,
    /// Frames from the uplink decapsulated and delivered.
    pub decapsulated: u64,
    /// Frames from the uplink handed to the host (`vxlan-punt`).
    pub punts: u64,
    /// VxLAN frames for a VNI no local VF has.
    pub unknown_vni: u64,
    /// Frames the host returned with `vxlan-send` that missed again.
    pub send_misses: u64,
}

impl VxlanCounters {
    /// Name and value of each, as `stats` shows them.
    pub fn named(&self) -> [(&'static str, u64); 8] {
        [
            ("vxlan_encapsulated", self.encapsulated),
            ("vxlan_requests", self.requests),
            ("vxlan_no_vtep", self.no_vtep),
            ("vxlan_evictions", self.evictions),
            ("vxlan_decapsulated", self.decapsulated),
            ("vxlan_punts", self.punts),
            ("vxlan_unknown_vni", self.unknown_vni),
            ("vxlan_send_misses", self.send_misses),
        ]
    }
}

/// The card's VxLAN state.
#[derive(Debug)]
pub struct Vxlan {
    /// Outer source MAC and IPv4 address; none: VxLAN VFs reach only
    /// their local segment.
    pub vtep: Option<Vtep>,
    pub segments: Segments,
    pub tables: Tables,
    pub counters: VxlanCounters,
    /// Counters of the PF's exception queue pair.
    pub exception: ExceptionCounters,
    /// IPv4 identification of the next outer header.
    ident: u16,
}

impl Vxlan {
    /// State for tables of `capacity` tunnel IDs (and MAC entries).
    pub fn new(capacity: usize) -> Self {
        Vxlan {
            vtep: None,
            segments: Segments::default(),
            tables: Tables::new(capacity),
            counters: VxlanCounters::default(),
            exception: ExceptionCounters::default(),
            ident: 0,
        }
    }

    /// The next IPv4 identification (wraps).
    pub fn next_ident(&mut self) -> u16 {
        let id = self.ident;
        self.ident = self.ident.wrapping_add(1);
        id
    }

    /// Whether function `f` is a VxLAN VF: its vNICs are in a VNI
    /// segment, not in the VLAN switch (docs/vxlan.md). The one place the
    /// card asks.
    #[inline]
    pub fn is_vxlan_vf(&self, f: usize) -> bool {
        self.segments.vni_of(f).is_some()
    }

    /// Installs (vni, mac) → a tunnel to `remote` (`vxlan-add`, an `ADD`
    /// message): the inner MAC must be set, the remote a unicast MAC and
    /// IPv4 address. Entries evicted to make room are counted and logged,
    /// and returned for the caller to announce.
    pub fn add(&mut self, vni: Vni, mac: Mac, remote: Remote) -> Result<Installed, BadEntry> {
        if mac == Mac::default() {
            return Err(BadEntry::Mac(mac));
        }
        usable_mac(remote.mac)?;
        usable_ip(remote.ip)?;
        let installed = self.tables.install(vni, mac, remote);
        for e in &installed.evicted {
            self.counters.evictions += 1;
            info!(
                "VxLAN VNI {} {} (tunnel {}) evicted",
                e.vni, e.mac, e.tunnel
            );
        }
        Ok(installed)
    }
}

/// Why a VxLAN entry or VTEP was refused.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum BadEntry {
    #[error("{0} is not a usable unicast MAC address")]
    Mac(Mac),
    #[error("{0} is not a unicast IPv4 address")]
    Ip(Ipv4Addr),
}

/// A MAC a tunnel or the VTEP may use: unicast and set.
pub fn usable_mac(mac: Mac) -> Result<(), BadEntry> {
    if mac.is_multicast() || mac == Mac::default() {
        return Err(BadEntry::Mac(mac));
    }
    Ok(())
}

/// An IPv4 address a tunnel or the VTEP may use: unicast.
pub fn usable_ip(ip: Ipv4Addr) -> Result<(), BadEntry> {
    if ip.is_unspecified() || ip.is_broadcast() || ip.is_multicast() {
        return Err(BadEntry::Ip(ip));
    }
    Ok(())
}

/// Why a frame the host returned (`vxlan-send`, a `SEND` message) did
/// not leave.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NotSent {
    /// No VTEP is set (`vxlan_no_vtep`).
    NoVtep,
    /// It missed again (`vxlan_send_misses`).
    Miss,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vnis_are_24_bit_and_not_zero() {
        assert_eq!(Vni::new(0), Err(BadVni(0)));
        assert_eq!(Vni::new(1).map(Vni::get), Ok(1));
        assert_eq!(Vni::new(0xff_ffff).map(Vni::get), Ok(0xff_ffff));
        let e = Vni::new(0x100_0000).unwrap_err();
        assert_eq!(e.to_string(), "VNI 16777216 outside 1..=16777215");
    }
}
