//! The messages of the PF's exception queue pair (docs/vxlan.md, "Message
//! format"): one Ethernet frame of ethertype 0x88B5 each, a 32-byte header
//! after the Ethernet header, then the frame it carries. All fields in
//! network byte order.
//!
//! This is the agent's side of the format: [`parse`] takes what the card
//! wrote (`MISS`, `PUNT`; any type, so a test can read its own messages
//! back), [`build`] writes what the agent answers (`ADD`, `SEND`,
//! `DELIVER`, `UPLINK`).

use std::fmt;
use std::net::Ipv4Addr;

use crate::switch::Mac;

/// IEEE 802 local experimental ethertype 1.
pub const ETHERTYPE: u16 = 0x88b5;
/// The only version of the format.
pub const VERSION: u8 = 1;
/// Where the header starts: after the Ethernet header.
pub const HEADER_OFFSET: usize = 14;
/// Header bytes (offsets 14..46).
pub const HEADER_LEN: usize = 32;
/// Where the carried frame starts.
pub const FRAME_OFFSET: usize = HEADER_OFFSET + HEADER_LEN;
/// `function` of every message but `MISS`.
pub const NO_FUNCTION: u16 = 0xffff;

/// The message types.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Card → PF: a VxLAN VF's frame missed the tables (`vxlan-miss`).
    Miss,
    /// Card → PF: a VxLAN frame from the uplink the tables do not vouch
    /// for (`vxlan-punt`).
    Punt,
    /// PF → card: `vxlan-add`.
    Add,
    /// PF → card: `vxlan-send` (variant A).
    Send,
    /// PF → card: `vxlan-deliver`.
    Deliver,
    /// PF → card: `uplink-send` (variant B).
    Uplink,
}

impl Kind {
    /// The type byte (offset 15).
    pub fn code(self) -> u8 {
        match self {
            Kind::Miss => 0x01,
            Kind::Punt => 0x02,
            Kind::Add => 0x81,
            Kind::Send => 0x82,
            Kind::Deliver => 0x83,
            Kind::Uplink => 0x84,
        }
    }

    pub fn from_code(code: u8) -> Option<Kind> {
        Some(match code {
            0x01 => Kind::Miss,
            0x02 => Kind::Punt,
            0x81 => Kind::Add,
            0x82 => Kind::Send,
            0x83 => Kind::Deliver,
            0x84 => Kind::Uplink,
            _ => return None,
        })
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Miss => "MISS",
            Kind::Punt => "PUNT",
            Kind::Add => "ADD",
            Kind::Send => "SEND",
            Kind::Deliver => "DELIVER",
            Kind::Uplink => "UPLINK",
        })
    }
}

/// `PUNT` reason byte: (VNI, inner source MAC) unknown.
pub const REASON_UNKNOWN: u8 = 1;
/// `PUNT` reason byte: known, but the outer source differs.
pub const REASON_MOVED: u8 = 2;

/// The header fields (offsets 14..46; `len` is the carried frame's).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Header {
    pub kind: Kind,
    /// VNI, bits 23:0.
    pub vni: u32,
    /// `MISS`: the VF number; otherwise [`NO_FUNCTION`].
    pub function: u16,
    /// `MISS`: the sender's queue pair; otherwise 0.
    pub vnic: u16,
    /// `MISS`: the VTEP IP; `PUNT`: outer source IP; `ADD`: remote VTEP IP.
    pub ip: Ipv4Addr,
    /// `MISS`: the VTEP MAC; `PUNT`: outer source MAC; `ADD`: next hop.
    pub mac: Mac,
    /// `ADD`: the inner MAC of the entry.
    pub inner_mac: Mac,
    /// `PUNT`: [`REASON_UNKNOWN`] or [`REASON_MOVED`].
    pub reason: u8,
}

impl Header {
    /// A header of `kind` for `vni` with every other field zero (and
    /// `function` [`NO_FUNCTION`]), as the PF → card messages want.
    pub fn new(kind: Kind, vni: u32) -> Header {
        Header {
            kind,
            vni,
            function: NO_FUNCTION,
            vnic: 0,
            ip: Ipv4Addr::UNSPECIFIED,
            mac: Mac::default(),
            inner_mac: Mac::default(),
            reason: 0,
        }
    }
}

/// Why a frame is not a message.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BadMessage {
    #[error("{0} bytes, shorter than the 46 of a message")]
    Short(usize),
    #[error("ethertype {0:#06x}, not 0x88b5")]
    Ethertype(u16),
    #[error("version {0}, not 1")]
    Version(u8),
    #[error("unknown type {0:#04x}")]
    Type(u8),
    #[error("len {len} beyond the {left} bytes after the header")]
    Length { len: usize, left: usize },
}

fn mac_at(b: &[u8], at: usize) -> Mac {
    let mut m = [0; 6];
    m.copy_from_slice(&b[at..at + 6]);
    Mac(m)
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Takes a message apart: its header and the frame it carries (`len`
/// bytes; padding after them is ignored).
pub fn parse(msg: &[u8]) -> Result<(Header, &[u8]), BadMessage> {
    if msg.len() < FRAME_OFFSET {
        return Err(BadMessage::Short(msg.len()));
    }
    let ethertype = u16_at(msg, 12);
    if ethertype != ETHERTYPE {
        return Err(BadMessage::Ethertype(ethertype));
    }
    if msg[14] != VERSION {
        return Err(BadMessage::Version(msg[14]));
    }
    let kind = Kind::from_code(msg[15]).ok_or(BadMessage::Type(msg[15]))?;
    let len = usize::from(u16_at(msg, 16));
    let left = msg.len() - FRAME_OFFSET;
    if len > left {
        return Err(BadMessage::Length { len, left });
    }
    let ip = u32_at(msg, 26);
    let header = Header {
        kind,
        vni: u32_at(msg, 18),
        function: u16_at(msg, 22),
        vnic: u16_at(msg, 24),
        ip: Ipv4Addr::from(ip),
        mac: mac_at(msg, 30),
        inner_mac: mac_at(msg, 36),
        reason: msg[42],
    };
    Ok((header, &msg[FRAME_OFFSET..FRAME_OFFSET + len]))
}

/// Writes the message: Ethernet header (`dst`, `src`, 0x88B5), `header`,
/// then `frame` (at most 65535 bytes: `len` is 16 bits).
pub fn build(dst: Mac, src: Mac, header: &Header, frame: &[u8]) -> Vec<u8> {
    let len = u16::try_from(frame.len()).expect("a frame fits len's 16 bits");
    let mut m = Vec::with_capacity(FRAME_OFFSET + frame.len());
    m.extend_from_slice(&dst.0);
    m.extend_from_slice(&src.0);
    m.extend_from_slice(&ETHERTYPE.to_be_bytes());
    m.push(VERSION);
    m.push(header.kind.code());
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(&(header.vni & 0x00ff_ffff).to_be_bytes());
    m.extend_from_slice(&header.function.to_be_bytes());
    m.extend_from_slice(&header.vnic.to_be_bytes());
    m.extend_from_slice(&header.ip.octets());
    m.extend_from_slice(&header.mac.0);
    m.extend_from_slice(&header.inner_mac.0);
    m.push(header.reason);
    m.extend_from_slice(&[0; 3]);
    debug_assert_eq!(m.len(), FRAME_OFFSET);
    m.extend_from_slice(frame);
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    const EXC: Mac = Mac([0x02, 0x76, 0x6e, 0x00, 0x00, 0x01]);

    /// The contract's table, field by field: an `ADD` for VNI 100,
    /// inner MAC 02:76:6e:02:01:00 at 10.1.0.2 via 02:aa:00:00:00:02.
    #[test]
    fn an_add_is_the_table_byte_for_byte() {
        let mut h = Header::new(Kind::Add, 100);
        h.ip = Ipv4Addr::new(10, 1, 0, 2);
        h.mac = Mac([0x02, 0xaa, 0, 0, 0, 0x02]);
        h.inner_mac = Mac([0x02, 0x76, 0x6e, 0x02, 0x01, 0x00]);
        let m = build(EXC, EXC, &h, &[]);
        #[rustfmt::skip]
        let want: [u8; 46] = [
            0x02, 0x76, 0x6e, 0x00, 0x00, 0x01, // 0: destination MAC
            0x02, 0x76, 0x6e, 0x00, 0x00, 0x01, // 6: source MAC
            0x88, 0xb5,                         // 12: ethertype
            0x01,                               // 14: version
            0x81,                               // 15: type ADD
            0x00, 0x00,                         // 16: len
            0x00, 0x00, 0x00, 0x64,             // 18: VNI 100
            0xff, 0xff,                         // 22: function: none
            0x00, 0x00,                         // 24: vNIC
            10, 1, 0, 2,                        // 26: remote VTEP IP
            0x02, 0xaa, 0x00, 0x00, 0x00, 0x02, // 30: next-hop MAC
            0x02, 0x76, 0x6e, 0x02, 0x01, 0x00, // 36: inner MAC
            0x00,                               // 42: reason
            0x00, 0x00, 0x00,                   // 43: reserved
        ];
        assert_eq!(m, want);
        assert_eq!(parse(&m), Ok((h, &[][..])));
    }

    #[test]
    fn a_miss_from_the_card_parses_and_padding_is_ignored() {
        #[rustfmt::skip]
        let mut m = vec![
            0x02, 0x76, 0x6e, 0x00, 0x00, 0x01,
            0x02, 0x76, 0x6e, 0x00, 0x00, 0x01,
            0x88, 0xb5,
            0x01, 0x01,                         // version 1, MISS
            0x00, 0x10,                         // len 16
            0x00, 0xff, 0xff, 0xff,             // VNI 16777215
            0x00, 0x03,                         // VF 3
            0x00, 0x01,                         // its queue pair 1
            10, 1, 0, 1,                        // VTEP IP
            0x02, 0x76, 0x6e, 0xff, 0x00, 0x01, // VTEP MAC
            0, 0, 0, 0, 0, 0,
            0,
            0, 0, 0,
        ];
        let inner: Vec<u8> = (0..16).collect();
        m.extend_from_slice(&inner);
        m.extend_from_slice(&[0xee; 4]); // padding
        let (h, frame) = parse(&m).unwrap();
        assert_eq!(
            h,
            Header {
                kind: Kind::Miss,
                vni: 0x00ff_ffff,
                function: 3,
                vnic: 1,
                ip: Ipv4Addr::new(10, 1, 0, 1),
                mac: Mac([0x02, 0x76, 0x6e, 0xff, 0x00, 0x01]),
                inner_mac: Mac::default(),
                reason: 0,
            }
        );
        assert_eq!(frame, &inner[..]);
    }

    #[test]
    fn a_punt_carries_its_reason_and_outer_source() {
        let mut h = Header::new(Kind::Punt, 7);
        h.ip = Ipv4Addr::new(10, 1, 0, 2);
        h.mac = Mac([2, 0, 0, 0, 0, 2]);
        h.reason = REASON_MOVED;
        let inner = [0x5a; 60];
        let m = build(EXC, EXC, &h, &inner);
        assert_eq!(m.len(), 46 + 60);
        assert_eq!(&m[15..18], &[0x02, 0x00, 60]);
        assert_eq!(&m[18..22], &[0, 0, 0, 7]);
        assert_eq!(&m[26..36], &[10, 1, 0, 2, 2, 0, 0, 0, 0, 2]);
        assert_eq!(&m[42..46], &[2, 0, 0, 0]);
        assert_eq!(parse(&m), Ok((h, &inner[..])));
    }

    #[test]
    fn answers_carry_their_frames_after_the_header() {
        let inner: Vec<u8> = (0..64).collect();
        for (kind, code) in [
            (Kind::Send, 0x82),
            (Kind::Deliver, 0x83),
            (Kind::Uplink, 0x84),
        ] {
            let m = build(EXC, EXC, &Header::new(kind, 100), &inner);
            assert_eq!(&m[12..18], &[0x88, 0xb5, 0x01, code, 0x00, 64]);
            assert_eq!(&m[22..26], &[0xff, 0xff, 0, 0], "{kind}");
            assert!(m[26..46].iter().all(|&b| b == 0), "{kind}");
            assert_eq!(&m[46..], &inner[..]);
        }
    }

    #[test]
    fn frames_that_are_not_messages_are_refused() {
        let good = build(EXC, EXC, &Header::new(Kind::Send, 1), &[1; 20]);
        assert_eq!(parse(&good[..45]), Err(BadMessage::Short(45)));
        let mut m = good.clone();
        m[12..14].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(parse(&m), Err(BadMessage::Ethertype(0x0800)));
        let mut m = good.clone();
        m[14] = 2;
        assert_eq!(parse(&m), Err(BadMessage::Version(2)));
        let mut m = good.clone();
        m[15] = 0x03;
        assert_eq!(parse(&m), Err(BadMessage::Type(3)));
        let mut m = good.clone();
        m[17] = 21;
        assert_eq!(parse(&m), Err(BadMessage::Length { len: 21, left: 20 }));
        for code in [0x01, 0x02, 0x81, 0x82, 0x83, 0x84] {
            assert_eq!(Kind::from_code(code).map(Kind::code), Some(code));
        }
    }
}
