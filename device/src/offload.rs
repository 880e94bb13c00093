//! Checksum offload and TSO/GSO done in software: what the card must do
//! for a frame a driver sent with offload requests when the frame goes
//! somewhere that cannot take them (the uplink, or a receiving vNIC that
//! did not negotiate offloads). Pure functions on byte slices; nothing on
//! the data path calls them yet (see docs/datapath.md, "Offloads").
//!
//! The per-frame offload header is Linux's `struct virtio_net_hdr`
//! (include/uapi/linux/virtio_net.h, virtio 1.0 little-endian layout), not
//! a format of our own: the guest driver can then fill and read it with
//! the kernel's own `virtio_net_hdr_from_skb()` / `virtio_net_hdr_to_skb()`,
//! and TAP devices opened with `IFF_VNET_HDR` use the very same 10 bytes.
//! Its checksum semantics are those of `CHECKSUM_PARTIAL`: the stack has
//! put the pseudo-header sum in the checksum field, and whoever completes
//! the checksum sums from `csum_start` to the end of the frame.
//!
//! Like `vxlan::wire`, every parser checks each length before it reads: a
//! truncated, inconsistent or hostile header or frame is an
//! [`OffloadError`], never a panic. Segmentation checks the whole frame
//! before it emits anything, so a caller gets all segments or none.

use bitfield_struct::bitfield;
use thiserror::Error;

use crate::checksum;

/// Size of `struct virtio_net_hdr` (without `num_buffers`).
pub const HDR_LEN: usize = 10;

const ETH_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const ETHERTYPE_VLAN: u16 = 0x8100;
const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPV4_MIN_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_MIN_LEN: usize = 20;
const IPPROTO_TCP: u8 = 6;
/// More Fragments and the fragment offset: a fragment cannot be segmented.
const FRAGMENT_MASK: u16 = 0x3fff;
/// Where the checksum is in a TCP header: the only `csum_offset` a TSO
/// frame can carry.
const TCP_CSUM_OFFSET: usize = 16;
const TCP_FIN: u8 = 0x01;
const TCP_PSH: u8 = 0x08;
const TCP_CWR: u8 = 0x80;

/// `virtio_net_hdr.flags`.
#[bitfield(u8)]
#[derive(PartialEq, Eq)]
pub struct HdrFlags {
    /// `VIRTIO_NET_HDR_F_NEEDS_CSUM`: the checksum from `csum_start` on is
    /// still to be completed (`CHECKSUM_PARTIAL`).
    pub needs_csum: bool,
    /// `VIRTIO_NET_HDR_F_DATA_VALID`: the checksum was verified already
    /// (`CHECKSUM_UNNECESSARY`); meaningful toward a receiver.
    pub data_valid: bool,
    /// `VIRTIO_NET_HDR_F_RSC_INFO` and undefined bits: refused.
    #[bits(6)]
    pub reserved: u8,
}

/// `virtio_net_hdr.gso_type` as a byte: the type and the ECN bit.
#[bitfield(u8)]
struct GsoByte {
    #[bits(7)]
    kind: u8,
    /// `VIRTIO_NET_HDR_GSO_ECN`: the frame may carry CWR.
    ecn: bool,
}

/// The segmentation a frame asks for. `VIRTIO_NET_HDR_GSO_UDP` (3, UFO)
/// is refused: Linux dropped UFO and it would need IP fragmentation.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(u8)]
pub enum GsoType {
    /// `VIRTIO_NET_HDR_GSO_NONE`.
    #[default]
    None = 0,
    /// `VIRTIO_NET_HDR_GSO_TCPV4`.
    TcpV4 = 1,
    /// `VIRTIO_NET_HDR_GSO_TCPV6`.
    TcpV6 = 4,
}

const GSO_UDP: u8 = 3;

/// Linux's `struct virtio_net_hdr`, parsed: the per-frame offload request.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct VirtioNetHdr {
    pub flags: HdrFlags,
    pub gso_type: GsoType,
    /// The ECN bit of `gso_type`.
    pub ecn: bool,
    /// Length of the headers in front of the payload. A hint only (Linux
    /// puts the linear head length there): segmentation finds the headers
    /// itself.
    pub hdr_len: u16,
    /// Payload bytes per segment (the MSS).
    pub gso_size: u16,
    /// Where the checksummed region starts (the L4 header).
    pub csum_start: u16,
    /// Where the checksum field is, from `csum_start`.
    pub csum_offset: u16,
}

/// Why a header or frame was refused.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum OffloadError {
    #[error("offload header of {0} bytes, {HDR_LEN} needed")]
    ShortHeader(usize),
    #[error("unknown offload flags {0:#04x}")]
    UnknownFlags(u8),
    #[error("NEEDS_CSUM and DATA_VALID both set")]
    CsumConflict,
    #[error("unknown gso_type {0:#04x}")]
    UnknownGsoType(u8),
    #[error("UDP fragmentation offload (gso_type 3) is not supported")]
    UdpGso,
    #[error("segmentation requested without NEEDS_CSUM")]
    GsoWithoutCsum,
    #[error("segmentation requested with gso_size 0")]
    ZeroGsoSize,
    #[error("gso_size {0} or the ECN bit without segmentation")]
    GsoFieldsWithoutGso(u16),
    #[error("csum_start {start}/csum_offset {offset} set without NEEDS_CSUM")]
    CsumFieldsWithoutCsum { start: u16, offset: u16 },
    #[error("csum_start {start} beyond the {len}-byte frame")]
    CsumStartBeyondFrame { start: u16, len: usize },
    #[error("checksum field at {start}+{offset} beyond the {len}-byte frame")]
    CsumFieldBeyondFrame { start: u16, offset: u16, len: usize },
    #[error("hdr_len {hdr_len} beyond the {len}-byte frame")]
    HdrLenBeyondFrame { hdr_len: u16, len: usize },
    #[error("frame ends inside its {0} header")]
    Truncated(&'static str),
    #[error("ethertype {0:#06x} is neither IPv4 nor IPv6")]
    UnsupportedEthertype(u16),
    #[error("IP version {0} where the ethertype says otherwise")]
    BadIpVersion(u8),
    #[error("IPv4 header length {0} below 20")]
    BadIhl(usize),
    #[error("IP length says {claimed} bytes, the frame has {actual}")]
    IpLength { claimed: usize, actual: usize },
    #[error("IPv4 fragment")]
    Fragment,
    #[error("next protocol {0} is not TCP (IPv6 extension headers are not supported)")]
    NotTcp(u8),
    #[error("TCP data offset {0} below 20")]
    BadDataOffset(usize),
    #[error("gso_type {gso:?} for an IPv{version} frame")]
    GsoTypeMismatch { gso: GsoType, version: u8 },
    #[error("checksum at {start}+{offset} is not the TCP checksum")]
    CsumNotTcp { start: u16, offset: u16 },
    #[error("segmentation requested without a gso_type")]
    NotGso,
}

impl VirtioNetHdr {
    /// Parses the first [`HDR_LEN`] bytes of `bytes` as the header of a
    /// frame of `frame_len` bytes, refusing anything a well-behaved driver
    /// cannot have sent (see [`Self::check`]).
    pub fn parse(bytes: &[u8], frame_len: usize) -> Result<Self, OffloadError> {
        let b: &[u8; HDR_LEN] = bytes
            .get(..HDR_LEN)
            .and_then(|b| b.try_into().ok())
            .ok_or(OffloadError::ShortHeader(bytes.len()))?;
        let le16 = |at: usize| u16::from_le_bytes([b[at], b[at + 1]]);
        let gso = GsoByte::from_bits(b[1]);
        let gso_type = match gso.kind() {
            0 => GsoType::None,
            1 => GsoType::TcpV4,
            4 => GsoType::TcpV6,
            GSO_UDP => return Err(OffloadError::UdpGso),
            _ => return Err(OffloadError::UnknownGsoType(b[1])),
        };
        let hdr = Self {
            flags: HdrFlags::from_bits(b[0]),
            gso_type,
            ecn: gso.ecn(),
            hdr_len: le16(2),
            gso_size: le16(4),
            csum_start: le16(6),
            csum_offset: le16(8),
        };
        hdr.check(frame_len)?;
        Ok(hdr)
    }

    /// Checks that the header is consistent in itself and with a frame of
    /// `frame_len` bytes: known flags, not both NEEDS_CSUM and DATA_VALID
    /// (Linux sets one or the other), segmentation only with NEEDS_CSUM
    /// (TSO always implies `CHECKSUM_PARTIAL`) and a non-zero `gso_size`,
    /// GSO fields and checksum fields zero when unused (as
    /// `virtio_net_hdr_from_skb()` leaves them), and every offset inside
    /// the frame, so completing the checksum cannot write past it.
    pub fn check(&self, frame_len: usize) -> Result<(), OffloadError> {
        let f = self.flags;
        if f.reserved() != 0 {
            return Err(OffloadError::UnknownFlags(f.into_bits()));
        }
        if f.needs_csum() && f.data_valid() {
            return Err(OffloadError::CsumConflict);
        }
        if self.gso_type == GsoType::None {
            if self.gso_size != 0 || self.ecn {
                return Err(OffloadError::GsoFieldsWithoutGso(self.gso_size));
            }
        } else if !f.needs_csum() {
            return Err(OffloadError::GsoWithoutCsum);
        } else if self.gso_size == 0 {
            return Err(OffloadError::ZeroGsoSize);
        }
        let (start, offset) = (self.csum_start, self.csum_offset);
        if f.needs_csum() {
            if usize::from(start) >= frame_len {
                return Err(OffloadError::CsumStartBeyondFrame {
                    start,
                    len: frame_len,
                });
            }
            if usize::from(start) + usize::from(offset) + 2 > frame_len {
                return Err(OffloadError::CsumFieldBeyondFrame {
                    start,
                    offset,
                    len: frame_len,
                });
            }
        } else if start != 0 || offset != 0 {
            return Err(OffloadError::CsumFieldsWithoutCsum { start, offset });
        }
        if usize::from(self.hdr_len) > frame_len {
            return Err(OffloadError::HdrLenBeyondFrame {
                hdr_len: self.hdr_len,
                len: frame_len,
            });
        }
        Ok(())
    }

    /// The header's 10 bytes, as the card writes them in front of a frame
    /// it hands to a receiver that takes offloads.
    pub fn to_bytes(&self) -> [u8; HDR_LEN] {
        let gso = GsoByte::new()
            .with_kind(self.gso_type as u8)
            .with_ecn(self.ecn);
        let mut b = [0; HDR_LEN];
        b[0] = self.flags.into_bits();
        b[1] = gso.into_bits();
        b[2..4].copy_from_slice(&self.hdr_len.to_le_bytes());
        b[4..6].copy_from_slice(&self.gso_size.to_le_bytes());
        b[6..8].copy_from_slice(&self.csum_start.to_le_bytes());
        b[8..10].copy_from_slice(&self.csum_offset.to_le_bytes());
        b
    }
}

/// Completes a `CHECKSUM_PARTIAL` checksum in place, as Linux's
/// `skb_checksum_help()` does: the ones'-complement sum from `csum_start`
/// to the end of the frame (the field holds the pseudo-header sum, so it
/// is summed too), complemented, at `csum_start + csum_offset`. A result of
/// 0 is stored as 0xffff (`CSUM_MANGLED_0`), which verifies the same but
/// does not mean "no checksum" to UDP. Without NEEDS_CSUM the frame is left
/// alone. The frame must end where the packet ends (no Ethernet padding),
/// which is how drivers send.
pub fn complete_checksum(frame: &mut [u8], hdr: &VirtioNetHdr) -> Result<(), OffloadError> {
    hdr.check(frame.len())?;
    if !hdr.flags.needs_csum() {
        return Ok(());
    }
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    let sum = match checksum::checksum(&frame[start..]) {
        0 => 0xffff,
        s => s,
    };
    frame[field..field + 2].copy_from_slice(&sum.to_be_bytes());
    Ok(())
}

/// The IP header of a TCP frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ip {
    /// IPv4 with a header of `ihl` bytes (options allowed).
    V4 { ihl: usize },
    /// IPv6 without extension headers.
    V6,
}

/// Where the headers of an Ethernet[/802.1Q] + IPv4/IPv6 + TCP frame are,
/// found from the frame itself rather than trusted from `hdr_len` and
/// `csum_start`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpFrame {
    /// Offset of the IP header (14, or 18 behind one VLAN tag).
    pub l3: usize,
    pub ip: Ip,
    /// Offset of the TCP header.
    pub l4: usize,
    /// Offset of the TCP payload: the end of the headers every segment
    /// copies.
    pub payload: usize,
}

fn be16(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_be_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_be_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

fn put16(b: &mut [u8], at: usize, v: u16) {
    b[at..at + 2].copy_from_slice(&v.to_be_bytes());
}

/// Finds the headers of a TCP frame and checks them: IPv4 with IHL >= 5,
/// not a fragment, and a total length that is exactly the rest of the
/// frame (a TSO frame has no padding, and a length that disagrees means
/// the driver and the card would cut the payload differently); IPv6 whose
/// next header is TCP and whose payload length is the rest of the frame;
/// TCP with a data offset >= 5 that fits.
pub fn parse_tcp(frame: &[u8]) -> Result<TcpFrame, OffloadError> {
    use OffloadError::*;
    let mut ethertype = be16(frame, 12).ok_or(Truncated("Ethernet"))?;
    let mut l3 = ETH_LEN;
    if ethertype == ETHERTYPE_VLAN {
        ethertype = be16(frame, 16).ok_or(Truncated("802.1Q"))?;
        l3 += VLAN_TAG_LEN;
    }
    let (ip, l4) = match ethertype {
        ETHERTYPE_IPV4 => {
            if frame.len() < l3 + IPV4_MIN_LEN {
                return Err(Truncated("IPv4"));
            }
            let version = frame[l3] >> 4;
            if version != 4 {
                return Err(BadIpVersion(version));
            }
            let ihl = usize::from(frame[l3] & 0x0f) * 4;
            if ihl < IPV4_MIN_LEN {
                return Err(BadIhl(ihl));
            }
            if frame.len() < l3 + ihl {
                return Err(Truncated("IPv4"));
            }
            let claimed = usize::from(be16(frame, l3 + 2).ok_or(Truncated("IPv4"))?);
            let actual = frame.len() - l3;
            if claimed != actual {
                return Err(IpLength { claimed, actual });
            }
            if be16(frame, l3 + 6).ok_or(Truncated("IPv4"))? & FRAGMENT_MASK != 0 {
                return Err(Fragment);
            }
            if frame[l3 + 9] != IPPROTO_TCP {
                return Err(NotTcp(frame[l3 + 9]));
            }
            (Ip::V4 { ihl }, l3 + ihl)
        }
        ETHERTYPE_IPV6 => {
            if frame.len() < l3 + IPV6_LEN {
                return Err(Truncated("IPv6"));
            }
            let version = frame[l3] >> 4;
            if version != 6 {
                return Err(BadIpVersion(version));
            }
            let claimed = usize::from(be16(frame, l3 + 4).ok_or(Truncated("IPv6"))?);
            let actual = frame.len() - l3 - IPV6_LEN;
            if claimed != actual {
                return Err(IpLength { claimed, actual });
            }
            if frame[l3 + 6] != IPPROTO_TCP {
                return Err(NotTcp(frame[l3 + 6]));
            }
            (Ip::V6, l3 + IPV6_LEN)
        }
        other => return Err(UnsupportedEthertype(other)),
    };
    if frame.len() < l4 + TCP_MIN_LEN {
        return Err(Truncated("TCP"));
    }
    let doff = usize::from(frame[l4 + 12] >> 4) * 4;
    if doff < TCP_MIN_LEN {
        return Err(BadDataOffset(doff));
    }
    if frame.len() < l4 + doff {
        return Err(Truncated("TCP"));
    }
    Ok(TcpFrame {
        l3,
        ip,
        l4,
        payload: l4 + doff,
    })
}

/// The unfolded sum of the TCP pseudo-header of `seg` (RFC 793 / RFC
/// 8200 section 8.1) for a TCP segment of `l4_len` bytes.
fn pseudo_header_sum(seg: &[u8], t: &TcpFrame, l4_len: usize) -> u64 {
    let addrs = match t.ip {
        Ip::V4 { .. } => &seg[t.l3 + 12..t.l3 + 20],
        Ip::V6 => &seg[t.l3 + 8..t.l3 + 40],
    };
    // IPv4 has a 16-bit length, IPv6 a 32-bit one: as 16-bit words both
    // are the length's two halves.
    let len = l4_len as u64;
    checksum::partial(addrs, u64::from(IPPROTO_TCP) + (len >> 16) + (len & 0xffff))
}

/// Segments a TSO frame the way Linux's software GSO does
/// (`tcp_gso_segment()` / `inet_gso_segment()`): the payload behind the
/// frame's own headers in chunks of `gso_size` bytes, each behind a copy
/// of the headers with the IPv4 total length, identification (+1 per
/// segment) and header checksum, or the IPv6 payload length, rewritten;
/// the TCP sequence number advanced by the payload before it; FIN and PSH
/// only on the last segment, CWR only on the first; and the TCP checksum
/// computed in full over the pseudo-header.
///
/// Each segment is built in `scratch` (reused, so after the first frame
/// nothing is allocated) and handed to `emit`; the count is returned. A
/// frame whose payload fits `gso_size` gives one segment. The header must
/// ask for TCPv4 or TCPv6 matching the frame, with the checksum at the
/// TCP checksum; everything is checked before the first `emit`.
pub fn segment(
    frame: &[u8],
    hdr: &VirtioNetHdr,
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    hdr.check(frame.len())?;
    let t = parse_tcp(frame)?;
    match (hdr.gso_type, t.ip) {
        (GsoType::None, _) => return Err(OffloadError::NotGso),
        (GsoType::TcpV4, Ip::V4 { .. }) | (GsoType::TcpV6, Ip::V6) => {}
        (gso, Ip::V4 { .. }) => return Err(OffloadError::GsoTypeMismatch { gso, version: 4 }),
        (gso, Ip::V6) => return Err(OffloadError::GsoTypeMismatch { gso, version: 6 }),
    }
    if usize::from(hdr.csum_start) != t.l4 || usize::from(hdr.csum_offset) != TCP_CSUM_OFFSET {
        return Err(OffloadError::CsumNotTcp {
            start: hdr.csum_start,
            offset: hdr.csum_offset,
        });
    }
    // parse_tcp checked that the TCP header is in the frame.
    let seq0 = be32(frame, t.l4 + 4).ok_or(OffloadError::Truncated("TCP"))?;
    let ident0 = be16(frame, t.l3 + 4).ok_or(OffloadError::Truncated("IP"))?;
    let flags0 = frame[t.l4 + 13];
    let mss = usize::from(hdr.gso_size);
    let payload = &frame[t.payload..];
    let count = payload.len().div_ceil(mss).max(1);
    let tcp_hlen = t.payload - t.l4;
    for i in 0..count {
        let start = i * mss;
        let chunk = &payload[start..(start + mss).min(payload.len())];
        scratch.clear();
        scratch.extend_from_slice(&frame[..t.payload]);
        scratch.extend_from_slice(chunk);
        let l4_len = tcp_hlen + chunk.len();
        // Segments are shorter than the frame, whose IP length fit 16 bits.
        match t.ip {
            Ip::V4 { ihl } => {
                put16(scratch, t.l3 + 2, (ihl + l4_len) as u16);
                put16(scratch, t.l3 + 4, ident0.wrapping_add(i as u16));
                put16(scratch, t.l3 + 10, 0);
                let sum = checksum::checksum(&scratch[t.l3..t.l3 + ihl]);
                put16(scratch, t.l3 + 10, sum);
            }
            Ip::V6 => put16(scratch, t.l3 + 4, l4_len as u16),
        }
        scratch[t.l4 + 4..t.l4 + 8].copy_from_slice(&seq0.wrapping_add(start as u32).to_be_bytes());
        let mut flags = flags0;
        if i + 1 < count {
            flags &= !(TCP_FIN | TCP_PSH);
        }
        if i > 0 {
            flags &= !TCP_CWR;
        }
        scratch[t.l4 + 13] = flags;
        put16(scratch, t.l4 + TCP_CSUM_OFFSET, 0);
        let pseudo = pseudo_header_sum(scratch, &t, l4_len);
        let sum = !checksum::fold(checksum::partial(&scratch[t.l4..], pseudo));
        put16(scratch, t.l4 + TCP_CSUM_OFFSET, sum);
        emit(scratch);
    }
    Ok(count)
}

/// Everything the card owes a frame sent with `hdr` before it leaves for a
/// destination without offloads: segmentation if the header asks for it
/// (each segment complete), else checksum completion in place if it asks
/// for that, else nothing. Emits the resulting frames and returns how many.
pub fn resolve(
    frame: &mut [u8],
    hdr: &VirtioNetHdr,
    scratch: &mut Vec<u8>,
    mut emit: impl FnMut(&[u8]),
) -> Result<usize, OffloadError> {
    if hdr.gso_type != GsoType::None {
        return segment(frame, hdr, scratch, emit);
    }
    complete_checksum(frame, hdr)?;
    emit(frame);
    Ok(1)
}
