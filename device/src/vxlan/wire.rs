//! VxLAN on the wire (RFC 7348, docs/vxlan.md "TX" and "RX"): the 50 bytes
//! the card puts in front of a VxLAN VF's frame, and taking them off again.
//!
//! Outer Ethernet (14) + IPv4 without options (20) + UDP (8) + VxLAN (8),
//! then the inner frame byte for byte, an inner 802.1Q tag included.

use std::net::Ipv4Addr;

use crate::switch::Mac;

/// The IANA VxLAN port.
pub const VXLAN_PORT: u16 = 4789;
/// Bytes the encapsulation adds.
pub const OVERHEAD: usize = ETH_LEN + IPV4_LEN + UDP_LEN + VXLAN_LEN;
/// Largest VNI (24 bits).
pub const MAX_VNI: u32 = (1 << 24) - 1;

const ETH_LEN: usize = 14;
const IPV4_LEN: usize = 20;
const UDP_LEN: usize = 8;
const VXLAN_LEN: usize = 8;
const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
/// Version 4, header length 5 words.
const IPV4_VERSION_IHL: u8 = 0x45;
/// Don't Fragment.
const IPV4_DF: u16 = 0x4000;
/// More Fragments and the fragment offset.
const IPV4_FRAGMENT: u16 = 0x3fff;
const TTL: u8 = 64;
/// VxLAN flags: I (the VNI is valid).
const VXLAN_FLAG_I: u8 = 0x08;
/// UDP source ports are drawn from the dynamic range, 49152..=65535, so
/// that routers spreading flows by 5-tuple keep each inner flow on one path.
const SRC_PORT_BASE: u16 = 49152;
const SRC_PORT_SPAN: u32 = 16384;

/// The local end of the tunnels: the card's VTEP.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Vtep {
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// The far end of a tunnel: next-hop MAC and remote VTEP address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Remote {
    pub mac: Mac,
    pub ip: Ipv4Addr,
}

/// The UDP source port of an inner frame: a hash (FNV-1a) of its
/// destination and source MACs and ethertype, so one inner flow always
/// gets the same port and different flows spread.
pub fn source_port(inner: &[u8]) -> u16 {
    let key = &inner[..inner.len().min(ETH_LEN)];
    let mut h: u32 = 0x811c_9dc5;
    for &b in key {
        h = (h ^ b as u32).wrapping_mul(0x0100_0193);
    }
    SRC_PORT_BASE + (h % SRC_PORT_SPAN) as u16
}

/// The Internet checksum of an IPv4 header.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    let mut sum: u32 = header
        .chunks(2)
        .map(|w| u16::from_be_bytes([w[0], *w.get(1).unwrap_or(&0)]) as u32)
        .sum();
    while sum > 0xffff {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

/// Writes the encapsulated `inner` frame into `out` (cleared first).
/// `ident` is the IPv4 identification (a per-card counter).
pub fn encapsulate(
    inner: &[u8],
    vni: u32,
    vtep: &Vtep,
    remote: &Remote,
    ident: u16,
    out: &mut Vec<u8>,
) {
    out.clear();
    out.extend_from_slice(&remote.mac.0);
    out.extend_from_slice(&vtep.mac.0);
    out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip_start = out.len();
    let total = (IPV4_LEN + UDP_LEN + VXLAN_LEN + inner.len()) as u16;
    out.extend_from_slice(&[IPV4_VERSION_IHL, 0]);
    out.extend_from_slice(&total.to_be_bytes());
    out.extend_from_slice(&ident.to_be_bytes());
    out.extend_from_slice(&IPV4_DF.to_be_bytes());
    out.extend_from_slice(&[TTL, IPPROTO_UDP, 0, 0]);
    out.extend_from_slice(&vtep.ip.octets());
    out.extend_from_slice(&remote.ip.octets());
    let sum = ipv4_checksum(&out[ip_start..]);
    out[ip_start + 10..ip_start + 12].copy_from_slice(&sum.to_be_bytes());
    let udp_len = (UDP_LEN + VXLAN_LEN + inner.len()) as u16;
    out.extend_from_slice(&source_port(inner).to_be_bytes());
    out.extend_from_slice(&VXLAN_PORT.to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    // UDP checksum 0: allowed for VxLAN over IPv4 (RFC 7348, 5).
    out.extend_from_slice(&[0, 0]);
    out.extend_from_slice(&[VXLAN_FLAG_I, 0, 0, 0]);
    out.extend_from_slice(&(vni << 8).to_be_bytes());
    out.extend_from_slice(inner);
}

/// A VxLAN frame taken apart.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Decapsulated<'a> {
    pub vni: u32,
    pub outer_src_mac: Mac,
    pub outer_src_ip: Ipv4Addr,
    pub inner: &'a [u8],
}

/// Takes a frame from the uplink apart if it is VxLAN for this VTEP:
/// untagged IPv4 without fragmentation, UDP to port 4789, destination
/// `vtep_ip`, a VxLAN header with the I flag and a whole inner Ethernet
/// header. Anything else is None: not VxLAN, switched as it is. Lengths
/// are checked against the frame, never trusted.
pub fn decapsulate(frame: &[u8], vtep_ip: Ipv4Addr) -> Option<Decapsulated<'_>> {
    let be16 = |at: usize| Some(u16::from_be_bytes([*frame.get(at)?, *frame.get(at + 1)?]));
    if be16(12)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = ETH_LEN;
    let ihl = (*frame.get(ip)? & 0x0f) as usize * 4;
    if frame[ip] >> 4 != 4 || ihl < IPV4_LEN || *frame.get(ip + 9)? != IPPROTO_UDP {
        return None;
    }
    if be16(ip + 6)? & IPV4_FRAGMENT != 0 {
        return None;
    }
    let dst = Ipv4Addr::from(<[u8; 4]>::try_from(frame.get(ip + 16..ip + 20)?).ok()?);
    let src = Ipv4Addr::from(<[u8; 4]>::try_from(frame.get(ip + 12..ip + 16)?).ok()?);
    let total = be16(ip + 2)? as usize;
    if dst != vtep_ip || total < ihl + UDP_LEN || ip + total > frame.len() {
        return None;
    }
    let udp = ip + ihl;
    if be16(udp + 2)? != VXLAN_PORT {
        return None;
    }
    let end = ip + total;
    let vx = udp + UDP_LEN;
    let inner = frame.get(vx + VXLAN_LEN..end)?;
    if frame[vx] & VXLAN_FLAG_I == 0 || inner.len() < ETH_LEN {
        return None;
    }
    let vni = u32::from_be_bytes(frame.get(vx + 4..vx + 8)?.try_into().ok()?) >> 8;
    let outer_src_mac = Mac(frame.get(6..12)?.try_into().ok()?);
    Some(Decapsulated {
        vni,
        outer_src_mac,
        outer_src_ip: src,
        inner,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VTEP: Vtep = Vtep {
        mac: Mac([0x02, 0x76, 0x6e, 0xff, 0x00, 0x01]),
        ip: Ipv4Addr::new(10, 1, 0, 1),
    };
    const REMOTE: Remote = Remote {
        mac: Mac([0x02, 0x00, 0x00, 0x00, 0x00, 0x02]),
        ip: Ipv4Addr::new(10, 1, 0, 2),
    };

    /// An inner frame with an 802.1Q tag: dst, src, 8100 0064, 0800, data.
    fn inner() -> Vec<u8> {
        let mut f = vec![
            0x02, 0x76, 0x6e, 0x01, 0x01, 0x00, // dst
            0x02, 0x76, 0x6e, 0x00, 0x01, 0x00, // src
            0x81, 0x00, 0x00, 0x64, // 802.1Q, VLAN 100
            0x08, 0x00,
        ];
        f.extend(0..30u8);
        f
    }

    #[test]
    fn encapsulation_matches_a_frame_built_by_hand() {
        let inner = inner();
        let mut out = Vec::new();
        encapsulate(&inner, 100, &VTEP, &REMOTE, 7, &mut out);
        let port = source_port(&inner).to_be_bytes();
        // Total length 20 + 8 + 8 + 48 = 84 = 0x54; UDP length 64 = 0x40.
        // IPv4 checksum by hand: 4500 + 0054 + 0007 + 4000 + 4011 + 0a01 +
        // 0001 + 0a01 + 0002 = 0xd971, no carry; !0xd971 = 0x268e.
        let mut want = vec![
            0x02, 0x00, 0x00, 0x00, 0x00, 0x02, // outer dst: next hop
            0x02, 0x76, 0x6e, 0xff, 0x00, 0x01, // outer src: VTEP
            0x08, 0x00, // IPv4
            0x45, 0x00, 0x00, 0x54, // version, IHL, TOS, total length
            0x00, 0x07, 0x40, 0x00, // identification, DF
            0x40, 0x11, 0x26, 0x8e, // TTL 64, UDP, checksum
            10, 1, 0, 1, // src VTEP
            10, 1, 0, 2, // dst VTEP
            port[0], port[1], 0x12, 0xb5, // UDP src port, dst 4789
            0x00, 0x40, 0x00, 0x00, // UDP length, checksum 0
            0x08, 0x00, 0x00, 0x00, // VxLAN flags: I
            0x00, 0x00, 0x64, 0x00, // VNI 100
        ];
        want.extend_from_slice(&inner);
        assert_eq!(out, want);
        assert_eq!(ipv4_checksum(&out[14..34]), 0, "checksum verifies");
        assert_eq!(out.len(), inner.len() + OVERHEAD);
        let p = u16::from_be_bytes(port);
        assert!((49152..=65535).contains(&p));
    }

    #[test]
    fn decapsulation_returns_the_inner_frame_byte_for_byte() {
        let inner = inner();
        let mut out = Vec::new();
        encapsulate(&inner, 0xabcdef, &VTEP, &REMOTE, 1, &mut out);
        // As the far end sees it: swap the outer addresses.
        let back = {
            let mut f = Vec::new();
            let far = Vtep {
                mac: REMOTE.mac,
                ip: REMOTE.ip,
            };
            let near = Remote {
                mac: VTEP.mac,
                ip: VTEP.ip,
            };
            encapsulate(&inner, 0xabcdef, &far, &near, 1, &mut f);
            f
        };
        let d = decapsulate(&back, VTEP.ip).unwrap();
        assert_eq!(d.vni, 0xabcdef);
        assert_eq!((d.outer_src_mac, d.outer_src_ip), (REMOTE.mac, REMOTE.ip));
        assert_eq!(d.inner, &inner[..]);
        assert_eq!(decapsulate(&out, VTEP.ip), None, "not for this VTEP");
    }

    #[test]
    fn other_udp_and_other_frames_are_never_vxlan() {
        let mut f = Vec::new();
        encapsulate(&inner(), 5, &VTEP, &REMOTE, 1, &mut f);
        let mine = Ipv4Addr::new(10, 1, 0, 2);
        assert!(decapsulate(&f, mine).is_some());
        let mut other_port = f.clone();
        other_port[36..38].copy_from_slice(&4790u16.to_be_bytes());
        assert_eq!(decapsulate(&other_port, mine), None);
        let mut no_i = f.clone();
        no_i[42] = 0;
        assert_eq!(decapsulate(&no_i, mine), None);
        let mut fragment = f.clone();
        fragment[20] = 0x20; // More Fragments
        assert_eq!(decapsulate(&fragment, mine), None);
        let mut tcp = f.clone();
        tcp[23] = 6;
        assert_eq!(decapsulate(&tcp, mine), None);
        // Every truncation, and a length field pointing past the end.
        for n in 0..f.len() {
            let _ = decapsulate(&f[..n], mine);
        }
        let mut long = f.clone();
        long[16..18].copy_from_slice(&0xffffu16.to_be_bytes());
        assert_eq!(decapsulate(&long, mine), None);
    }

    #[test]
    fn one_inner_flow_keeps_its_source_port() {
        let a = inner();
        let mut b = inner();
        b[5] ^= 1;
        assert_eq!(source_port(&a), source_port(&a.clone()));
        assert_ne!(source_port(&a), source_port(&b));
    }
}
