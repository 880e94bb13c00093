//! The exception queue on the PF (docs/vxlan.md, "The exception queue on
//! the PF"): a PF driver serves the card's requests (misses and punts) on
//! a queue pair of the PF, the exception queue pair, instead of a host
//! agent on the control socket.
//!
//! Here: [`ExceptionHeader`], the 32-byte message header after an Ethernet header
//! of ethertype [`ETHERTYPE`], built and parsed (all fields in network
//! byte order), and the exception queue pair's counters. The card's side
//! (requests written into the exception queue pair's receive queue, the
//! PF's messages carried out) is the data path's
//! (`crate::datapath`).
//!
//! The exception queue pair is not a port of the switch: nothing is
//! switched to it or from it.

use std::net::Ipv4Addr;
use std::ops::Range;

use super::table::Remote;
use super::{BadEntry, BadVni, NotSent, Vni};
use crate::model::{Mac, PuntReason, Vtep, MAX_FRAME_BYTES};

/// Ethertype of every message: IEEE 802 local experimental 1.
pub const ETHERTYPE: u16 = 0x88b5;
/// The message format's version.
pub const VERSION: u8 = 1;
/// Bytes of the Ethernet header before the message header.
pub const ETH_HEADER_LEN: usize = 14;
/// Bytes of the message header.
pub const HEADER_LEN: usize = 32;
/// Where the frame a message carries starts; also the shortest message.
pub const FRAME_OFFSET: usize = ETH_HEADER_LEN + HEADER_LEN;
/// The `function` field of every message but `MISS`.
pub const NO_FUNCTION: u16 = 0xffff;
/// Shortest frame a `SEND`, `DELIVER` or `UPLINK` may carry: an Ethernet
/// header.
pub const MIN_FRAME: usize = 14;
/// Longest message the exception send queue takes: a header before a
/// frame as long as the control socket accepts (an `UPLINK` carries an
/// outer frame, longer than the guest's).
pub const MAX_MESSAGE: usize = FRAME_OFFSET + MAX_FRAME_BYTES;

/// Field offsets in a message (from the start of the Ethernet frame).
mod at {
    pub const ETHERTYPE: usize = 12;
    pub const VERSION: usize = 14;
    pub const TYPE: usize = 15;
    pub const LEN: usize = 16;
    pub const VNI: usize = 18;
    pub const FUNCTION: usize = 22;
    pub const VNIC: usize = 24;
    pub const IP: usize = 26;
    pub const MAC: usize = 30;
    pub const INNER_MAC: usize = 36;
    pub const REASON: usize = 42;
}

/// What a message is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum MsgType {
    /// Card → PF: a VxLAN VF's frame missed the tables (`vxlan-miss`).
    Miss = 0x01,
    /// Card → PF: a VxLAN frame from an unknown or moved source
    /// (`vxlan-punt`).
    Punt = 0x02,
    /// PF → card: install a table entry (`vxlan-add`).
    Add = 0x81,
    /// PF → card: a missed frame returned (`vxlan-send`, variant A).
    Send = 0x82,
    /// PF → card: a punted frame returned (`vxlan-deliver`).
    Deliver = 0x83,
    /// PF → card: an outer frame for the uplink as is (`uplink-send`,
    /// variant B).
    Uplink = 0x84,
}

impl MsgType {
    pub const ALL: [MsgType; 6] = [
        MsgType::Miss,
        MsgType::Punt,
        MsgType::Add,
        MsgType::Send,
        MsgType::Deliver,
        MsgType::Uplink,
    ];

    pub fn code(self) -> u8 {
        self as u8
    }

    pub fn from_code(code: u8) -> Option<MsgType> {
        MsgType::ALL.into_iter().find(|t| t.code() == code)
    }

    /// Whether the card sends it (a request) rather than takes it.
    pub fn to_pf(self) -> bool {
        matches!(self, MsgType::Miss | MsgType::Punt)
    }
}

/// A `PUNT`'s reason on the wire (0 in other messages).
fn reason_code(reason: Option<PuntReason>) -> u8 {
    match reason {
        None => 0,
        Some(PuntReason::Unknown) => 1,
        Some(PuntReason::Moved) => 2,
    }
}

fn reason_of(code: u8) -> Option<PuntReason> {
    match code {
        1 => Some(PuntReason::Unknown),
        2 => Some(PuntReason::Moved),
        _ => None,
    }
}

/// Why a frame from the exception send queue was not carried out.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum Refusal {
    /// Not a message at all: ignored (`exception_ignored`), not refused.
    #[error("ethertype {0:#06x} is not a message's")]
    Ethertype(u16),
    #[error("a message of {0} bytes is shorter than its header ({FRAME_OFFSET})")]
    Short(usize),
    #[error("version {0}, not {VERSION}")]
    Version(u8),
    #[error("unknown type {0:#04x}")]
    Type(u8),
    #[error("{0:?} goes from the card to the PF")]
    Direction(MsgType),
    #[error("len {len} is beyond the frame ({room} bytes after the header)")]
    Length { len: u16, room: usize },
    #[error(transparent)]
    Vni(#[from] BadVni),
    #[error("ADD refused: {0}")]
    Add(#[from] BadEntry),
    #[error("a frame of {0} bytes is shorter than an Ethernet header ({MIN_FRAME})")]
    ShortFrame(usize),
    #[error("SEND without a VTEP")]
    NoVtep,
    #[error("SEND missed again")]
    SendMiss,
}

impl From<NotSent> for Refusal {
    fn from(n: NotSent) -> Refusal {
        match n {
            NotSent::NoVtep => Refusal::NoVtep,
            NotSent::Miss => Refusal::SendMiss,
        }
    }
}

/// A message header (offsets 14..46 of the frame). `len` is not kept: it
/// is the length of the frame the message carries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ExceptionHeader {
    pub ty: MsgType,
    /// The VNI field as it is on the wire (bits 31:24 should be 0).
    pub vni: u32,
    /// `MISS`: the VF number; otherwise [`NO_FUNCTION`].
    pub function: u16,
    /// `MISS`: the sender's queue pair; otherwise 0.
    pub vnic: u16,
    /// `MISS`: the VTEP IP; `PUNT`: the outer source IP; `ADD`: the remote
    /// VTEP IP; otherwise 0.0.0.0.
    pub ip: Ipv4Addr,
    /// `MISS`: the VTEP MAC; `PUNT`: the outer source MAC; `ADD`: the next
    /// hop; otherwise zero.
    pub mac: Mac,
    /// `ADD`: the inner MAC of the entry; otherwise zero.
    pub inner_mac: Mac,
    /// `PUNT`: why; otherwise none (0 on the wire).
    pub reason: Option<PuntReason>,
}

impl ExceptionHeader {
    fn new(ty: MsgType, vni: u32) -> ExceptionHeader {
        ExceptionHeader {
            ty,
            vni,
            function: NO_FUNCTION,
            vnic: 0,
            ip: Ipv4Addr::UNSPECIFIED,
            mac: Mac::default(),
            inner_mac: Mac::default(),
            reason: None,
        }
    }

    /// `MISS` of vNIC `vnic` of VF `vf` in segment `vni`.
    pub fn miss(vni: Vni, vf: u16, vnic: u16, vtep: Vtep) -> ExceptionHeader {
        ExceptionHeader {
            function: vf,
            vnic,
            ip: vtep.ip,
            mac: vtep.mac,
            ..ExceptionHeader::new(MsgType::Miss, vni.get())
        }
    }

    /// `PUNT` of a frame of segment `vni` that came from `from`.
    pub fn punt(vni: Vni, from: Remote, reason: PuntReason) -> ExceptionHeader {
        ExceptionHeader {
            ip: from.ip,
            mac: from.mac,
            reason: Some(reason),
            ..ExceptionHeader::new(MsgType::Punt, vni.get())
        }
    }

    /// `ADD` of (`vni`, `inner_mac`) → `remote`.
    pub fn add(vni: u32, inner_mac: Mac, remote: Remote) -> ExceptionHeader {
        ExceptionHeader {
            ip: remote.ip,
            mac: remote.mac,
            inner_mac,
            ..ExceptionHeader::new(MsgType::Add, vni)
        }
    }

    /// `SEND`, `DELIVER` or `UPLINK` (whose VNI the card ignores).
    pub fn answer(ty: MsgType, vni: u32) -> ExceptionHeader {
        ExceptionHeader::new(ty, vni)
    }

    /// Writes the whole message into `out` (cleared first): Ethernet
    /// header from `src` to `dst`, this header with `len` = the length of
    /// `frame` (at most 65535 bytes of it), then `frame`.
    pub fn write(&self, dst: Mac, src: Mac, frame: &[u8], out: &mut Vec<u8>) {
        let frame = &frame[..frame.len().min(usize::from(u16::MAX))];
        out.clear();
        out.extend_from_slice(&dst.0);
        out.extend_from_slice(&src.0);
        out.extend_from_slice(&ETHERTYPE.to_be_bytes());
        out.push(VERSION);
        out.push(self.ty.code());
        out.extend_from_slice(&(frame.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.vni.to_be_bytes());
        out.extend_from_slice(&self.function.to_be_bytes());
        out.extend_from_slice(&self.vnic.to_be_bytes());
        out.extend_from_slice(&self.ip.octets());
        out.extend_from_slice(&self.mac.0);
        out.extend_from_slice(&self.inner_mac.0);
        out.push(reason_code(self.reason));
        out.extend_from_slice(&[0; 3]);
        debug_assert_eq!(out.len(), FRAME_OFFSET);
        out.extend_from_slice(frame);
    }

    /// Parses a message: its header and where its frame is. Bytes after
    /// the frame are padding. The VNI is not checked here.
    pub fn parse(msg: &[u8]) -> Result<(ExceptionHeader, Range<usize>), Refusal> {
        let ethertype = ethertype(msg);
        if ethertype != Some(ETHERTYPE) {
            return Err(Refusal::Ethertype(ethertype.unwrap_or(0)));
        }
        if msg.len() < FRAME_OFFSET {
            return Err(Refusal::Short(msg.len()));
        }
        let u16_at = |i: usize| u16::from_be_bytes([msg[i], msg[i + 1]]);
        let mac_at = |i: usize| Mac(msg[i..i + 6].try_into().expect("6 bytes"));
        if msg[at::VERSION] != VERSION {
            return Err(Refusal::Version(msg[at::VERSION]));
        }
        let ty = MsgType::from_code(msg[at::TYPE]).ok_or(Refusal::Type(msg[at::TYPE]))?;
        let len = u16_at(at::LEN);
        let room = msg.len() - FRAME_OFFSET;
        if usize::from(len) > room {
            return Err(Refusal::Length { len, room });
        }
        let header = ExceptionHeader {
            ty,
            vni: u32::from_be_bytes(msg[at::VNI..at::VNI + 4].try_into().expect("4 bytes")),
            function: u16_at(at::FUNCTION),
            vnic: u16_at(at::VNIC),
            ip: Ipv4Addr::from(<[u8; 4]>::try_from(&msg[at::IP..at::IP + 4]).expect("4 bytes")),
            mac: mac_at(at::MAC),
            inner_mac: mac_at(at::INNER_MAC),
            reason: reason_of(msg[at::REASON]),
        };
        Ok((header, FRAME_OFFSET..FRAME_OFFSET + usize::from(len)))
    }
}

/// The ethertype of an Ethernet frame (as it is on the wire: 0x8100 for a
/// tagged one).
pub fn ethertype(frame: &[u8]) -> Option<u16> {
    frame
        .get(at::ETHERTYPE..at::ETHERTYPE + 2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]))
}

/// Card counters of the exception queue pair (`stats`, docs/vxlan.md).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct ExceptionCounters {
    /// Requests written into the exception queue pair's receive queue.
    pub to_pf: u64,
    /// Messages from the PF carried out.
    pub from_pf: u64,
    /// Messages from the PF refused.
    pub refused: u64,
    /// Frames of other ethertypes on the exception send queue.
    pub ignored: u64,
    /// Requests the receive queue could not take.
    pub lost: u64,
}

impl ExceptionCounters {
    /// Name and value of each, as `stats` shows them.
    pub fn named(&self) -> [(&'static str, u64); 5] {
        [
            ("exception_to_pf", self.to_pf),
            ("exception_from_pf", self.from_pf),
            ("exception_refused", self.refused),
            ("exception_ignored", self.ignored),
            ("exception_lost", self.lost),
        ]
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// The VNI, VTEPs and MACs of these tests and of the data path's
    /// (crate::datapath's exception tests).
    pub(crate) const VNI: u32 = 100;
    pub(crate) const VTEP: Vtep = Vtep {
        mac: Mac([2, 0x76, 0x6e, 0xff, 0, 1]),
        ip: Ipv4Addr::new(10, 1, 0, 1),
    };
    pub(crate) const PEER: Remote = Remote {
        ip: Ipv4Addr::new(10, 1, 0, 2),
        mac: Mac([2, 0x76, 0x6e, 0xff, 0, 2]),
    };
    /// A vNIC behind the peer VTEP.
    pub(crate) const FAR: Mac = Mac([2, 0x76, 0x6e, 0x01, 0x01, 0x00]);
    /// The PF's exception queue pair's MAC on card 0.
    pub(crate) const EXC_MAC: Mac = Mac([2, 0x76, 0x6e, 0, 0, 1]);

    pub(crate) fn vni() -> Vni {
        Vni::new(VNI).unwrap()
    }

    #[test]
    fn a_miss_header_is_built_and_parsed_byte_for_byte() {
        let frame: Vec<u8> = (0..14).map(|i| 0xa0 + i).collect();
        let h = ExceptionHeader::miss(Vni::new(0x12_3456).unwrap(), 3, 0x0102, VTEP);
        let mut out = Vec::new();
        h.write(EXC_MAC, EXC_MAC, &frame, &mut out);
        #[rustfmt::skip]
        let expected: Vec<u8> = [
            &[0x02, 0x76, 0x6e, 0x00, 0x00, 0x01][..], // destination MAC
            &[0x02, 0x76, 0x6e, 0x00, 0x00, 0x01],     // source MAC
            &[0x88, 0xb5],                             // ethertype
            &[0x01],                                   // version
            &[0x01],                                   // type MISS
            &[0x00, 0x0e],                             // len 14
            &[0x00, 0x12, 0x34, 0x56],                 // VNI
            &[0x00, 0x03],                             // function: vf3
            &[0x01, 0x02],                             // vNIC
            &[10, 1, 0, 1],                            // VTEP IP
            &[0x02, 0x76, 0x6e, 0xff, 0x00, 0x01],     // VTEP MAC
            &[0, 0, 0, 0, 0, 0],                       // inner MAC
            &[0x00],                                   // reason
            &[0, 0, 0],                                // reserved
            &frame,
        ]
        .concat();
        assert_eq!(out, expected);
        assert_eq!(ExceptionHeader::parse(&out), Ok((h, 46..60)));
    }

    #[test]
    fn punt_and_add_headers_are_built_and_parsed_byte_for_byte() {
        let mut out = Vec::new();
        let punt = ExceptionHeader::punt(vni(), PEER, PuntReason::Moved);
        punt.write(EXC_MAC, EXC_MAC, &[0x55; 20], &mut out);
        #[rustfmt::skip]
        let header: [u8; 32] = [
            0x01, 0x02, 0x00, 0x14,       // version, PUNT, len 20
            0x00, 0x00, 0x00, 0x64,       // VNI 100
            0xff, 0xff, 0x00, 0x00,       // function none, vNIC 0
            10, 1, 0, 2,                  // outer source IP
            0x02, 0x76, 0x6e, 0xff, 0x00, 0x02, // outer source MAC
            0, 0, 0, 0, 0, 0,             // inner MAC
            0x02, 0, 0, 0,                // reason moved, reserved
        ];
        assert_eq!(&out[14..46], &header);
        assert_eq!(ExceptionHeader::parse(&out), Ok((punt, 46..66)));

        let add = ExceptionHeader::add(VNI, FAR, PEER);
        let (dst, src) = (Mac([0xff; 6]), Mac([2, 0, 0, 0, 0, 9]));
        add.write(dst, src, &[], &mut out);
        #[rustfmt::skip]
        let expected: [u8; 46] = [
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0x02, 0x00, 0x00, 0x00, 0x00, 0x09,
            0x88, 0xb5,
            0x01, 0x81, 0x00, 0x00,       // version, ADD, len 0
            0x00, 0x00, 0x00, 0x64,       // VNI 100
            0xff, 0xff, 0x00, 0x00,
            10, 1, 0, 2,                  // remote VTEP
            0x02, 0x76, 0x6e, 0xff, 0x00, 0x02, // next hop
            0x02, 0x76, 0x6e, 0x01, 0x01, 0x00, // inner MAC
            0, 0, 0, 0,
        ];
        assert_eq!(out, expected);
        // Padding after the frame is not part of it.
        out.resize(60, 0);
        assert_eq!(ExceptionHeader::parse(&out), Ok((add, 46..46)));
        for t in MsgType::ALL {
            assert_eq!(MsgType::from_code(t.code()), Some(t));
        }
        assert_eq!(MsgType::from_code(0x03), None);
    }
}
