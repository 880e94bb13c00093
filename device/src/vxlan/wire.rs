//! VxLAN on the wire (RFC 7348, with the choices docs/vxlan.md pins down):
//! building the outer headers in front of an inner frame, and recognising
//! and taking apart a VxLAN frame from the uplink.
//!
//! Both directions work on byte slices with explicit offsets; parsing
//! checks every length before it reads, so a truncated or hostile frame is
//! "not VxLAN", never a panic.

use std::net::Ipv4Addr;
use std::ops::Range;

use crate::model::Mac;

/// UDP destination port of VxLAN (IANA).
pub const VXLAN_PORT: u16 = 4789;
/// Outer Ethernet header (untagged).
pub const ETH_LEN: usize = 14;
/// Outer IPv4 header (no options).
pub const IPV4_LEN: usize = 20;
pub const UDP_LEN: usize = 8;
pub const VXLAN_LEN: usize = 8;
/// Bytes the card puts in front of an inner frame.
pub const OUTER_LEN: usize = ETH_LEN + IPV4_LEN + UDP_LEN + VXLAN_LEN;

const ETHERTYPE_IPV4: u16 = 0x0800;
const IPPROTO_UDP: u8 = 17;
const TTL: u8 = 64;
/// IPv4 flags/fragment offset with Don't Fragment set.
const DONT_FRAGMENT: u16 = 0x4000;
/// More Fragments flag and the fragment offset: any bit set is a fragment.
const FRAGMENT_MASK: u16 = 0x3fff;
/// VxLAN flags byte: I (the VNI is valid).
const FLAG_I: u8 = 0x08;
/// UDP source ports come from the dynamic range, 49152 + hash mod 16384,
/// so that ECMP in the underlay spreads flows but keeps each in order.
pub const SRC_PORT_BASE: u16 = 49152;
pub const SRC_PORT_SPAN: u16 = 16384;

/// What the card writes in front of an inner frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Outer {
    /// The tunnel's next hop.
    pub dst_mac: Mac,
    /// The VTEP's MAC.
    pub src_mac: Mac,
    /// The VTEP's address.
    pub src_ip: Ipv4Addr,
    /// The remote VTEP.
    pub dst_ip: Ipv4Addr,
    /// IPv4 identification (a per-card counter).
    pub ident: u16,
    /// 24-bit VNI.
    pub vni: u32,
}

/// The IPv4 header checksum (RFC 1071) of `header` with its checksum field
/// 0; a header that carries its correct checksum gives 0. The sum itself is
/// [`crate::checksum`], shared with the offloads.
pub fn ipv4_checksum(header: &[u8]) -> u16 {
    crate::checksum::checksum(header)
}

/// FNV-1a (32 bit): cheap, well spread, and the same on every host, so an
/// agent building outer frames itself (variant B) picks the same ports.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5u32, |h, &b| {
        (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

/// UDP source port for `inner`: 49152 + FNV-1a of its destination MAC,
/// source MAC and ethertype (its first 14 bytes) mod 16384.
pub fn source_port(inner: &[u8]) -> u16 {
    let key = &inner[..inner.len().min(ETH_LEN)];
    SRC_PORT_BASE + (fnv1a(key) % u32::from(SRC_PORT_SPAN)) as u16
}

/// Writes `outer` headers and then `inner`, byte for byte, into `out`
/// (cleared first).
pub fn encapsulate(outer: &Outer, inner: &[u8], out: &mut Vec<u8>) {
    out.clear();
    out.reserve(OUTER_LEN + inner.len());
    out.extend_from_slice(&outer.dst_mac.0);
    out.extend_from_slice(&outer.src_mac.0);
    out.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
    let ip_len = (IPV4_LEN + UDP_LEN + VXLAN_LEN + inner.len()) as u16;
    let ip_start = out.len();
    out.extend_from_slice(&[0x45, 0x00]);
    out.extend_from_slice(&ip_len.to_be_bytes());
    out.extend_from_slice(&outer.ident.to_be_bytes());
    out.extend_from_slice(&DONT_FRAGMENT.to_be_bytes());
    out.extend_from_slice(&[TTL, IPPROTO_UDP, 0, 0]);
    out.extend_from_slice(&outer.src_ip.octets());
    out.extend_from_slice(&outer.dst_ip.octets());
    let sum = ipv4_checksum(&out[ip_start..]);
    out[ip_start + 10..ip_start + 12].copy_from_slice(&sum.to_be_bytes());
    let udp_len = (UDP_LEN + VXLAN_LEN + inner.len()) as u16;
    out.extend_from_slice(&source_port(inner).to_be_bytes());
    out.extend_from_slice(&VXLAN_PORT.to_be_bytes());
    out.extend_from_slice(&udp_len.to_be_bytes());
    out.extend_from_slice(&[0, 0]);
    let vni = (outer.vni & 0x00ff_ffff) << 8;
    out.extend_from_slice(&[FLAG_I, 0, 0, 0]);
    out.extend_from_slice(&vni.to_be_bytes());
    out.extend_from_slice(inner);
}

/// A VxLAN frame from the uplink, taken apart.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Decapsulated {
    /// The 24-bit VNI as received (0 is possible and belongs to no VF).
    pub vni: u32,
    pub outer_src_mac: Mac,
    pub outer_src_ip: Ipv4Addr,
    /// Where the inner frame is in the outer one (it may be shorter than
    /// an Ethernet header: the receive path counts that as malformed). A
    /// range rather than a slice, so the card can turn its buffer into the
    /// inner frame in place.
    pub inner: Range<usize>,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn ip_at(b: &[u8], at: usize) -> Option<Ipv4Addr> {
    let o: [u8; 4] = b.get(at..at + 4)?.try_into().ok()?;
    Some(Ipv4Addr::from(o))
}

/// The frame's VxLAN content if it is VxLAN for `vtep_ip`: untagged IPv4
/// with a correct header checksum, not a fragment, UDP to port 4789,
/// addressed to `vtep_ip`, with a VxLAN header whose I flag is set.
/// Anything else (other UDP included) is `None`: not VxLAN. Ethernet
/// padding after the IPv4 packet is ignored.
pub fn decapsulate(frame: &[u8], vtep_ip: Ipv4Addr) -> Option<Decapsulated> {
    if be16(frame, 12)? != ETHERTYPE_IPV4 {
        return None;
    }
    let ip = frame.get(ETH_LEN..)?;
    let ihl = usize::from(*ip.first()? & 0x0f) * 4;
    if ip[0] >> 4 != 4 || ihl < IPV4_LEN || ip.len() < ihl {
        return None;
    }
    let total = usize::from(be16(ip, 2)?);
    if total < ihl || total > ip.len() || ipv4_checksum(&ip[..ihl]) != 0 {
        return None;
    }
    if be16(ip, 6)? & FRAGMENT_MASK != 0 || ip[9] != IPPROTO_UDP || ip_at(ip, 16)? != vtep_ip {
        return None;
    }
    let udp = &ip[ihl..total];
    let udp_len = usize::from(be16(udp, 4)?);
    if be16(udp, 2)? != VXLAN_PORT || udp_len < UDP_LEN + VXLAN_LEN || udp_len > udp.len() {
        return None;
    }
    let vx = &udp[UDP_LEN..udp_len];
    if vx[0] & FLAG_I == 0 {
        return None;
    }
    let vni = u32::from_be_bytes([0, vx[4], vx[5], vx[6]]);
    let start = ETH_LEN + ihl + UDP_LEN + VXLAN_LEN;
    Some(Decapsulated {
        vni,
        outer_src_mac: Mac(frame[6..12].try_into().ok()?),
        outer_src_ip: ip_at(ip, 12)?,
        inner: start..ETH_LEN + ihl + udp_len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const VTEP_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);

    fn outer() -> Outer {
        Outer {
            dst_mac: Mac([0x02, 0x76, 0x6e, 0xff, 0x00, 0x02]),
            src_mac: Mac([0x02, 0x76, 0x6e, 0xff, 0x00, 0x01]),
            src_ip: VTEP_IP,
            dst_ip: REMOTE_IP,
            ident: 0x1234,
            vni: 100,
        }
    }

    /// A 64-byte inner frame with an 802.1Q tag (VLAN 5): the tag must
    /// travel inside the tunnel untouched.
    fn inner() -> Vec<u8> {
        let mut f = vec![
            0x02, 0x76, 0x6e, 0x01, 0x01, 0x00, // dst
            0x02, 0x76, 0x6e, 0x00, 0x01, 0x00, // src
            0x81, 0x00, 0x00, 0x05, // 802.1Q, VLAN 5
            0x08, 0x00, // IPv4
        ];
        f.extend((0..46u8).map(|i| i.wrapping_mul(3)));
        f
    }

    #[test]
    fn encapsulation_matches_a_hand_built_frame() {
        let inner = inner();
        let mut out = Vec::new();
        encapsulate(&outer(), &inner, &mut out);
        // The source port: FNV-1a over the inner frame's first 14 bytes,
        // computed independently of `source_port`.
        let mut h: u32 = 0x811c9dc5;
        for b in &inner[..14] {
            h ^= u32::from(*b);
            h = h.wrapping_mul(16777619);
        }
        let sport = 49152 + (h % 16384) as u16;
        assert_eq!(source_port(&inner), sport);
        let [sp_hi, sp_lo] = sport.to_be_bytes();
        // IPv4 total length 20 + 8 + 8 + 64 = 100 = 0x64. The checksum by
        // hand, summing the header's 16-bit words with the checksum 0:
        //   4500 + 0064 + 1234 + 4000 + 4011 + 0000
        //   + 0a01 + 0001 + 0a01 + 0002          = 0xebae (no carry)
        //   ~0xebae = 0x1451
        #[rustfmt::skip]
        let mut want: Vec<u8> = vec![
            // Ethernet: next hop, VTEP MAC, IPv4.
            0x02, 0x76, 0x6e, 0xff, 0x00, 0x02,
            0x02, 0x76, 0x6e, 0xff, 0x00, 0x01,
            0x08, 0x00,
            // IPv4: v4 IHL 5, DSCP/ECN 0, length 100, id 0x1234, DF,
            // TTL 64, UDP, checksum, 10.1.0.1 -> 10.1.0.2.
            0x45, 0x00, 0x00, 0x64,
            0x12, 0x34, 0x40, 0x00,
            0x40, 0x11, 0x14, 0x51,
            0x0a, 0x01, 0x00, 0x01,
            0x0a, 0x01, 0x00, 0x02,
            // UDP: source port from the hash, 4789, length 80, checksum 0.
            sp_hi, sp_lo, 0x12, 0xb5,
            0x00, 0x50, 0x00, 0x00,
            // VxLAN: I flag, reserved, VNI 100, reserved.
            0x08, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x64, 0x00,
        ];
        want.extend_from_slice(&inner);
        assert_eq!(out, want);
        assert_eq!(out.len(), OUTER_LEN + inner.len());
        assert!((49152..=65535).contains(&sport));
    }

    #[test]
    fn decapsulation_gives_back_the_inner_frame_and_the_outer_source() {
        let inner = inner();
        let mut out = Vec::new();
        let o = Outer {
            src_ip: REMOTE_IP,
            dst_ip: VTEP_IP,
            vni: 0xabcdef,
            ..outer()
        };
        encapsulate(&o, &inner, &mut out);
        let d = decapsulate(&out, VTEP_IP).expect("VxLAN");
        assert_eq!(d.vni, 0xabcdef);
        assert_eq!(d.outer_src_ip, REMOTE_IP);
        assert_eq!(d.outer_src_mac, o.src_mac);
        assert_eq!(&out[d.inner], &inner[..]);
        // Ethernet padding after the packet is not part of the inner frame.
        out.extend_from_slice(&[0; 10]);
        let d = decapsulate(&out, VTEP_IP).unwrap();
        assert_eq!(&out[d.inner], &inner[..]);
        // For another VTEP it is not VxLAN.
        assert_eq!(decapsulate(&out, REMOTE_IP), None);
    }

    /// A valid frame with one byte at `at` replaced.
    fn patched(at: usize, v: u8) -> Vec<u8> {
        let mut out = Vec::new();
        let o = Outer {
            dst_ip: VTEP_IP,
            ..outer()
        };
        encapsulate(&o, &inner(), &mut out);
        out[at] = v;
        out
    }

    #[test]
    fn other_udp_ports_fragments_and_missing_i_flags_are_not_vxlan() {
        // UDP destination port 4790.
        assert_eq!(decapsulate(&patched(37, 0xb6), VTEP_IP), None);
        // I flag cleared.
        assert_eq!(decapsulate(&patched(42, 0), VTEP_IP), None);
        // TCP, with the checksum fixed up, is not VxLAN either.
        let mut tcp = patched(23, 6);
        tcp[24..26].copy_from_slice(&[0, 0]);
        let sum = ipv4_checksum(&tcp[14..34]);
        tcp[24..26].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(decapsulate(&tcp, VTEP_IP), None);
        // More Fragments set (checksum fixed up).
        let mut frag = patched(20, 0x60);
        frag[24..26].copy_from_slice(&[0, 0]);
        let sum = ipv4_checksum(&frag[14..34]);
        frag[24..26].copy_from_slice(&sum.to_be_bytes());
        assert_eq!(decapsulate(&frag, VTEP_IP), None);
        // A bad header checksum.
        assert_eq!(decapsulate(&patched(25, 0), VTEP_IP), None);
        // IPv6 ethertype.
        assert_eq!(decapsulate(&patched(12, 0x86), VTEP_IP), None);
    }

    /// Decapsulates `f`; a result must point inside `f`.
    fn survives(f: &[u8]) {
        if let Some(d) = decapsulate(f, VTEP_IP) {
            assert!(
                d.inner.start <= d.inner.end && d.inner.end <= f.len(),
                "{d:?}"
            );
        }
    }

    #[test]
    fn every_truncation_and_garbage_is_handled_without_panicking() {
        let mut out = Vec::new();
        let o = Outer {
            dst_ip: VTEP_IP,
            ..outer()
        };
        encapsulate(&o, &inner(), &mut out);
        for n in 0..out.len() {
            // A cut frame whose IPv4 length no longer fits is refused.
            assert_eq!(decapsulate(&out[..n], VTEP_IP), None, "cut at {n}");
        }
        // Lengths claiming more than there is, or too little.
        for (at, v) in [
            (16, 0xff),
            (16, 0),
            (17, 0x10),
            (38, 0),
            (39, 0x07),
            (38, 0xff),
        ] {
            let mut f = out.clone();
            f[at] = v;
            f[24..26].copy_from_slice(&[0, 0]);
            let sum = ipv4_checksum(&f[14..34]);
            f[24..26].copy_from_slice(&sum.to_be_bytes());
            survives(&f);
        }
        // IHL values from 0 to 15 (some longer than the frame's header).
        for ihl in 0..16u8 {
            let mut f = out.clone();
            f[14] = 0x40 | ihl;
            survives(&f);
            for n in 0..f.len() {
                survives(&f[..n]);
            }
        }
        // Every single-byte corruption of the outer headers.
        for at in 0..OUTER_LEN {
            for v in [0u8, 1, 0x7f, 0x80, 0xff] {
                let mut f = out.clone();
                f[at] = v;
                survives(&f);
            }
        }
    }

    #[test]
    fn source_ports_stay_in_the_dynamic_range_and_follow_the_flow() {
        let a = inner();
        let mut b = a.clone();
        b[5] ^= 1;
        assert_ne!(source_port(&a), source_port(&b), "another flow");
        let mut c = a.clone();
        c[40] ^= 0xff;
        assert_eq!(source_port(&a), source_port(&c), "payload does not count");
        for n in 0..20 {
            assert!(source_port(&a[..n.min(a.len())]) >= SRC_PORT_BASE);
        }
    }

    #[test]
    fn checksum_of_a_known_header() {
        // The header of the hand-built frame above.
        let h = [
            0x45, 0x00, 0x00, 0x64, 0x12, 0x34, 0x40, 0x00, 0x40, 0x11, 0x00, 0x00, 0x0a, 0x01,
            0x00, 0x01, 0x0a, 0x01, 0x00, 0x02,
        ];
        assert_eq!(ipv4_checksum(&h), 0x1451);
        let mut with = h;
        with[10..12].copy_from_slice(&0x1451u16.to_be_bytes());
        assert_eq!(ipv4_checksum(&with), 0);
    }
}
