//! VxLAN offload (docs/vxlan.md, SPEC section 5): the per-VF attribute, the
//! VTEP, the VNI segments, the tables and the card's TX and RX paths for
//! VxLAN VFs.
//!
//! - `wire`: the outer headers, built and parsed;
//! - `table`: (VNI, MAC) → tunnel → remote, with usage counters and
//!   eviction;
//! - `segment`: the vNICs of VxLAN VFs, switched by (VNI, MAC) apart from
//!   the VLAN switch;
//! - `path`: what the card does with a VxLAN VF's frame and with a VxLAN
//!   frame from the uplink;
//! - `exception`: the PF's exception queue pair, where a PF driver serves
//!   the card's requests (the messages, and the card's side of them).

pub mod exception;
pub mod path;
pub mod segment;
pub mod table;
pub mod wire;

use std::fmt;

use crate::model::Vtep;

pub use exception::ExceptionCounters;
pub use segment::Segments;
pub use table::Tables;

/// A VxLAN network identifier of a VF: 1..=16777215 (24 bits; 0 is left
/// unused, as Linux's vxlan does for "no VNI").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    /// The outer frame being built.
    outer: Vec<u8>,
    /// The request being written to the exception queue pair.
    message: Vec<u8>,
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
            outer: Vec::new(),
            message: Vec::new(),
        }
    }

    /// The next IPv4 identification (wraps).
    fn next_ident(&mut self) -> u16 {
        let id = self.ident;
        self.ident = self.ident.wrapping_add(1);
        id
    }
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
