//! Checksum offload and TSO/GSO done in software: what the card must do
//! for a frame a driver sent with offload requests when the frame goes
//! somewhere that cannot take them (the uplink, or a receiving vNIC that
//! did not negotiate offloads). Pure functions on byte slices; [`request`]
//! says what a sent frame's header asks of the card, and
//! `crate::datapath` acts on it (see docs/datapath.md, "Offloads").
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

pub mod request;

/// Size of `struct virtio_net_hdr` (without `num_buffers`).
pub const HDR_LEN: usize = 10;

const ETH_LEN: usize = 14;
const VLAN_TAG_LEN: usize = 4;
const ETHERTYPE_VLAN: u16 = 0x8100;
pub(crate) const ETHERTYPE_IPV4: u16 = 0x0800;
const ETHERTYPE_IPV6: u16 = 0x86dd;
const IPV4_MIN_LEN: usize = 20;
const IPV6_LEN: usize = 40;
const TCP_MIN_LEN: usize = 20;
pub(crate) const IPPROTO_TCP: u8 = 6;
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

    /// The header of the same frame after the switch inserted (`by` = 4)
    /// or removed (`by` = -4) an 802.1Q tag behind the MAC addresses: the
    /// offsets that count from the start of the frame move with it.
    pub fn moved(self, by: i16) -> Self {
        let shift = |v: u16| {
            if v == 0 {
                0
            } else {
                v.saturating_add_signed(by)
            }
        };
        Self {
            csum_start: if self.flags.needs_csum() {
                shift(self.csum_start)
            } else {
                self.csum_start
            },
            hdr_len: shift(self.hdr_len),
            ..self
        }
    }

    /// Whether the frame asks the card for anything (a checksum or
    /// segmentation); `DATA_VALID` on a sent frame asks for nothing.
    pub fn requests(&self) -> bool {
        self.flags.needs_csum() || self.gso_type != GsoType::None
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

/// Checks for the tests of this module and of the data path's offloads.
#[cfg(test)]
pub(crate) mod testing {
    /// The ones'-complement sum of the pieces one after the other, folded
    /// after every word: a second, naive implementation, so the tests do
    /// not check `crate::checksum` against itself. Data carrying a correct
    /// checksum sums to 0xffff.
    pub fn ref_sum(pieces: &[&[u8]]) -> u16 {
        let all = pieces.concat();
        let mut s: u32 = 0;
        for i in (0..all.len()).step_by(2) {
            let lo = all.get(i + 1).copied().unwrap_or(0);
            s += u32::from(all[i]) << 8 | u32::from(lo);
            s = (s & 0xffff) + (s >> 16);
        }
        s as u16
    }
}

#[cfg(test)]
mod tests {
    use super::testing::ref_sum;
    use super::*;

    const MSS: u16 = 1448;
    const CWR_PSH_FIN_ACK: u8 = 0x80 | 0x08 | 0x01 | 0x10;
    const ACK: u8 = 0x10;

    fn ethernet(vlan: Option<u16>, ethertype: u16) -> Vec<u8> {
        let mut f = vec![
            0x02, 0x76, 0x6e, 0x01, 0x01, 0x00, // dst
            0x02, 0x76, 0x6e, 0x00, 0x01, 0x00, // src
        ];
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ethertype.to_be_bytes());
        f
    }

    fn payload(n: usize) -> Vec<u8> {
        (0..n).map(|i| (i * 7 % 251) as u8).collect()
    }

    /// A TCP header with 12 bytes of options (NOP, NOP, timestamps): data
    /// offset 8. The checksum field holds junk, which segmentation must
    /// overwrite.
    fn tcp_header(seq: u32, flags: u8) -> Vec<u8> {
        let mut h = vec![0x12, 0x34, 0x00, 0x50];
        h.extend_from_slice(&seq.to_be_bytes());
        h.extend_from_slice(&[0x01, 0x02, 0x03, 0x04, 0x80, flags, 0xff, 0xff]);
        h.extend_from_slice(&[0xde, 0xad, 0x00, 0x00]);
        h.extend_from_slice(&[1, 1, 8, 10, 0, 0, 0, 1, 0, 0, 0, 2]);
        h
    }

    struct Built {
        frame: Vec<u8>,
        l3: usize,
        l4: usize,
        payload: Vec<u8>,
    }

    /// IPv4 (identification `ident`, DF, `ip_options`) + TCP.
    fn tcp4(
        vlan: Option<u16>,
        ip_options: &[u8],
        ident: u16,
        seq: u32,
        flags: u8,
        n: usize,
    ) -> Built {
        let mut f = ethernet(vlan, ETHERTYPE_IPV4);
        let l3 = f.len();
        let ihl = 20 + ip_options.len();
        let tcp = tcp_header(seq, flags);
        let data = payload(n);
        let total = (ihl + tcp.len() + n) as u16;
        f.push(0x40 | (ihl / 4) as u8);
        f.push(0);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&ident.to_be_bytes());
        f.extend_from_slice(&[0x40, 0x00, 64, IPPROTO_TCP, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
        f.extend_from_slice(ip_options);
        let sum = !ref_sum(&[&f[l3..]]);
        f[l3 + 10..l3 + 12].copy_from_slice(&sum.to_be_bytes());
        let l4 = f.len();
        f.extend_from_slice(&tcp);
        f.extend_from_slice(&data);
        Built {
            frame: f,
            l3,
            l4,
            payload: data,
        }
    }

    fn tcp6(vlan: Option<u16>, seq: u32, flags: u8, n: usize) -> Built {
        let mut f = ethernet(vlan, ETHERTYPE_IPV6);
        let l3 = f.len();
        let tcp = tcp_header(seq, flags);
        let data = payload(n);
        f.extend_from_slice(&[0x60, 0x01, 0x23, 0x45]);
        f.extend_from_slice(&((tcp.len() + n) as u16).to_be_bytes());
        f.extend_from_slice(&[IPPROTO_TCP, 64]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&[0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2]);
        let l4 = f.len();
        f.extend_from_slice(&tcp);
        f.extend_from_slice(&data);
        Built {
            frame: f,
            l3,
            l4,
            payload: data,
        }
    }

    fn tso(gso_type: GsoType, l4: usize, gso_size: u16) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: HdrFlags::new().with_needs_csum(true),
            gso_type,
            ecn: false,
            hdr_len: (l4 + 32) as u16,
            gso_size,
            csum_start: l4 as u16,
            csum_offset: 16,
        }
    }

    fn segments(frame: &[u8], hdr: &VirtioNetHdr) -> Result<Vec<Vec<u8>>, OffloadError> {
        let mut out = Vec::new();
        let mut scratch = Vec::new();
        let n = segment(frame, hdr, &mut scratch, |s| out.push(s.to_vec()))?;
        assert_eq!(n, out.len());
        Ok(out)
    }

    /// The pseudo-header of a TCP/UDP packet in `seg` (`proto`, L4 from `l4`).
    fn pseudo(seg: &[u8], l3: usize, l4: usize, v6: bool, proto: u8) -> Vec<u8> {
        let len = seg.len() - l4;
        let mut p = Vec::new();
        if v6 {
            p.extend_from_slice(&seg[l3 + 8..l3 + 40]);
            p.extend_from_slice(&(len as u32).to_be_bytes());
            p.extend_from_slice(&[0, 0, 0, proto]);
        } else {
            p.extend_from_slice(&seg[l3 + 12..l3 + 20]);
            p.extend_from_slice(&[0, proto]);
            p.extend_from_slice(&(len as u16).to_be_bytes());
        }
        p
    }

    /// Checks one segment independently of the code under test: IP
    /// lengths and header checksum, TCP checksum over the pseudo-header.
    fn verify(seg: &[u8], b: &Built, v6: bool) {
        if v6 {
            assert_eq!(usize::from(be16(seg, b.l3 + 4).unwrap()), seg.len() - b.l4);
        } else {
            assert_eq!(usize::from(be16(seg, b.l3 + 2).unwrap()), seg.len() - b.l3);
            assert_eq!(ref_sum(&[&seg[b.l3..b.l4]]), 0xffff, "IPv4 header checksum");
        }
        let p = pseudo(seg, b.l3, b.l4, v6, IPPROTO_TCP);
        assert_eq!(ref_sum(&[&p, &seg[b.l4..]]), 0xffff, "TCP checksum");
    }

    fn seq(seg: &[u8], b: &Built) -> u32 {
        be32(seg, b.l4 + 4).unwrap()
    }

    // --- The header ---

    /// NEEDS_CSUM, TCPV4|ECN, hdr_len 66, gso_size 1448, csum_start 34,
    /// csum_offset 16, little-endian.
    const TSO_BYTES: [u8; HDR_LEN] = [0x01, 0x81, 0x42, 0x00, 0xa8, 0x05, 0x22, 0x00, 0x10, 0x00];

    #[test]
    fn header_parses_and_writes_byte_for_byte() {
        let h = VirtioNetHdr::parse(&TSO_BYTES, 3000).unwrap();
        assert_eq!(
            h,
            VirtioNetHdr {
                flags: HdrFlags::new().with_needs_csum(true),
                gso_type: GsoType::TcpV4,
                ecn: true,
                hdr_len: 66,
                gso_size: 1448,
                csum_start: 34,
                csum_offset: 16,
            }
        );
        assert_eq!(h.to_bytes(), TSO_BYTES);
        // Longer input: only the first 10 bytes are the header.
        let mut longer = TSO_BYTES.to_vec();
        longer.extend_from_slice(&[0xff; 4]);
        assert_eq!(VirtioNetHdr::parse(&longer, 3000), Ok(h));
        // TCPV6 without ECN.
        let v6 = [0x01, 0x04, 0x56, 0x00, 0xa0, 0x05, 0x36, 0x00, 0x10, 0x00];
        let h = VirtioNetHdr::parse(&v6, 3000).unwrap();
        assert_eq!(
            (h.gso_type, h.ecn, h.gso_size, h.csum_start),
            (GsoType::TcpV6, false, 1440, 54)
        );
        assert_eq!(h.to_bytes(), v6);
        // DATA_VALID alone, and the all-zero header.
        let dv = [0x02, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let h = VirtioNetHdr::parse(&dv, 60).unwrap();
        assert!(h.flags.data_valid() && !h.flags.needs_csum());
        assert_eq!(h.to_bytes(), dv);
        assert_eq!(
            VirtioNetHdr::parse(&[0; HDR_LEN], 60),
            Ok(VirtioNetHdr::default())
        );
        assert_eq!(VirtioNetHdr::default().to_bytes(), [0; HDR_LEN]);
    }

    #[test]
    fn inconsistent_headers_are_refused() {
        use OffloadError::*;
        let with = |at: usize, v: &[u8]| {
            let mut b = TSO_BYTES;
            b[at..at + v.len()].copy_from_slice(v);
            b
        };
        // No GSO, no checksum fields: a header that only offloads nothing.
        let plain = [0u8; HDR_LEN];
        let cases: Vec<([u8; HDR_LEN], usize, OffloadError)> = vec![
            (with(0, &[0x05]), 3000, UnknownFlags(0x05)),
            (with(0, &[0x03]), 3000, CsumConflict),
            (with(1, &[0x03]), 3000, UdpGso),
            (with(1, &[0x83]), 3000, UdpGso),
            (with(1, &[0x02]), 3000, UnknownGsoType(0x02)),
            (with(1, &[0x85]), 3000, UnknownGsoType(0x85)),
            (with(0, &[0x00]), 3000, GsoWithoutCsum),
            (with(4, &[0, 0]), 3000, ZeroGsoSize),
            (
                {
                    let mut b = plain;
                    b[4..6].copy_from_slice(&1448u16.to_le_bytes());
                    b
                },
                3000,
                GsoFieldsWithoutGso(1448),
            ),
            (
                {
                    let mut b = plain;
                    b[1] = 0x80;
                    b
                },
                3000,
                GsoFieldsWithoutGso(0),
            ),
            (
                {
                    let mut b = plain;
                    b[6] = 34;
                    b
                },
                3000,
                CsumFieldsWithoutCsum {
                    start: 34,
                    offset: 0,
                },
            ),
            (TSO_BYTES, 34, CsumStartBeyondFrame { start: 34, len: 34 }),
            (
                TSO_BYTES,
                51,
                CsumFieldBeyondFrame {
                    start: 34,
                    offset: 16,
                    len: 51,
                },
            ),
            (
                with(8, &[0xff, 0xff]),
                3000,
                CsumFieldBeyondFrame {
                    start: 34,
                    offset: 0xffff,
                    len: 3000,
                },
            ),
            (
                with(2, &[0xb9, 0x0b]),
                3000,
                HdrLenBeyondFrame {
                    hdr_len: 3001,
                    len: 3000,
                },
            ),
        ];
        for (bytes, len, want) in cases {
            assert_eq!(
                VirtioNetHdr::parse(&bytes, len),
                Err(want),
                "{bytes:02x?} len {len}"
            );
        }
        assert_eq!(
            VirtioNetHdr::parse(&TSO_BYTES[..9], 3000),
            Err(ShortHeader(9))
        );
        assert_eq!(VirtioNetHdr::parse(&[], 3000), Err(ShortHeader(0)));
        // The checksum field exactly at the end of the frame is fine
        // (hdr_len 34 so that it fits too).
        assert!(VirtioNetHdr::parse(&with(2, &[34, 0]), 52).is_ok());
    }

    // --- Checksum completion ---

    #[test]
    fn checksum_completion_of_udp_over_ipv4() {
        let mut f = ethernet(None, ETHERTYPE_IPV4);
        let l3 = f.len();
        let data = payload(37); // odd: the last byte is padded
        let udp_len = (8 + data.len()) as u16;
        f.extend_from_slice(&[0x45, 0, 0, 0, 0, 1, 0x40, 0, 64, 17, 0, 0]);
        f.extend_from_slice(&[192, 168, 0, 1, 192, 168, 0, 2]);
        put16(&mut f, l3 + 2, 20 + udp_len);
        let l4 = f.len();
        f.extend_from_slice(&[0x30, 0x39, 0x00, 0x35]);
        f.extend_from_slice(&udp_len.to_be_bytes());
        f.extend_from_slice(&[0, 0]);
        f.extend_from_slice(&data);
        // What the stack leaves in the field: the pseudo-header sum.
        let p = pseudo(&f, l3, l4, false, 17);
        let partial = ref_sum(&[&p]);
        let want = !ref_sum(&[&p, &f[l4..]]);
        put16(&mut f, l4 + 6, partial);
        let hdr = VirtioNetHdr {
            flags: HdrFlags::new().with_needs_csum(true),
            csum_start: l4 as u16,
            csum_offset: 6,
            ..Default::default()
        };
        complete_checksum(&mut f, &hdr).unwrap();
        assert_eq!(be16(&f, l4 + 6), Some(want));
        assert_eq!(ref_sum(&[&p, &f[l4..]]), 0xffff);
    }

    #[test]
    fn checksum_completion_of_tcp_over_ipv6() {
        let b = tcp6(None, 1000, ACK, 100);
        let mut f = b.frame.clone();
        put16(&mut f, b.l4 + 16, 0);
        let p = pseudo(&f, b.l3, b.l4, true, IPPROTO_TCP);
        let want = !ref_sum(&[&p, &f[b.l4..]]);
        put16(&mut f, b.l4 + 16, ref_sum(&[&p]));
        let hdr = VirtioNetHdr {
            flags: HdrFlags::new().with_needs_csum(true),
            csum_start: b.l4 as u16,
            csum_offset: 16,
            ..Default::default()
        };
        complete_checksum(&mut f, &hdr).unwrap();
        assert_eq!(be16(&f, b.l4 + 16), Some(want));
        assert_eq!(ref_sum(&[&p, &f[b.l4..]]), 0xffff);
        // Only the checksum changed.
        let mut g = f.clone();
        g[b.l4 + 16..b.l4 + 18].copy_from_slice(&b.frame[b.l4 + 16..b.l4 + 18]);
        assert_eq!(g, b.frame);
    }

    #[test]
    fn a_zero_checksum_is_stored_as_ffff_and_no_request_changes_nothing() {
        // Data summing to 0xffff with the field 0 gives checksum 0.
        let mut f = vec![0xff, 0xff, 0, 0];
        let hdr = VirtioNetHdr {
            flags: HdrFlags::new().with_needs_csum(true),
            csum_start: 0,
            csum_offset: 2,
            ..Default::default()
        };
        complete_checksum(&mut f, &hdr).unwrap();
        assert_eq!(f, [0xff, 0xff, 0xff, 0xff]);
        let mut g = vec![1, 2, 3];
        complete_checksum(&mut g, &VirtioNetHdr::default()).unwrap();
        assert_eq!(g, [1, 2, 3]);
        // A header that does not fit the frame is refused, nothing written.
        let mut short = vec![0xff, 0xff, 0];
        assert!(complete_checksum(&mut short, &hdr).is_err());
        assert_eq!(short, [0xff, 0xff, 0]);
    }

    // --- Segmentation ---

    #[test]
    fn tcpv4_frame_of_three_segments() {
        // IPv4 options (NOP x3, End) and an identification that wraps.
        let b = tcp4(
            None,
            &[1, 1, 1, 0],
            0xfffe,
            0xffff_f800,
            CWR_PSH_FIN_ACK,
            2 * 1448 + 100,
        );
        let hdr = tso(GsoType::TcpV4, b.l4, MSS);
        let segs = segments(&b.frame, &hdr).unwrap();
        assert_eq!(segs.len(), 3);
        let hl = b.l4 + 32;
        assert_eq!(
            segs.iter().map(Vec::len).collect::<Vec<_>>(),
            [hl + 1448, hl + 1448, hl + 100]
        );
        assert_eq!(
            segs.iter().map(|s| seq(s, &b)).collect::<Vec<_>>(),
            [0xffff_f800, 0xffff_fda8, 0x0000_0350]
        );
        assert_eq!(
            segs.iter().map(|s| s[b.l4 + 13]).collect::<Vec<_>>(),
            [0x80 | ACK, ACK, 0x08 | 0x01 | ACK]
        );
        assert_eq!(
            segs.iter()
                .map(|s| be16(s, b.l3 + 4).unwrap())
                .collect::<Vec<_>>(),
            [0xfffe, 0xffff, 0x0000]
        );
        for s in &segs {
            verify(s, &b, false);
            // Ethernet header and IP options copied; ports, ack, TCP
            // options too.
            assert_eq!(s[..b.l3], b.frame[..b.l3]);
            assert_eq!(s[b.l3 + 20..b.l4], [1, 1, 1, 0]);
            assert_eq!(s[b.l4..b.l4 + 4], b.frame[b.l4..b.l4 + 4]);
            assert_eq!(s[b.l4 + 8..b.l4 + 13], b.frame[b.l4 + 8..b.l4 + 13]);
            assert_eq!(s[b.l4 + 20..hl], b.frame[b.l4 + 20..hl]);
        }
        let joined: Vec<u8> = segs.iter().flat_map(|s| s[hl..].iter().copied()).collect();
        assert_eq!(joined, b.payload);
    }

    #[test]
    fn tcpv6_frame_is_segmented() {
        let b = tcp6(None, 7, CWR_PSH_FIN_ACK, 2500);
        let hdr = tso(GsoType::TcpV6, b.l4, 1000);
        let segs = segments(&b.frame, &hdr).unwrap();
        let hl = b.l4 + 32;
        assert_eq!(
            segs.iter().map(Vec::len).collect::<Vec<_>>(),
            [hl + 1000, hl + 1000, hl + 500]
        );
        assert_eq!(
            segs.iter().map(|s| seq(s, &b)).collect::<Vec<_>>(),
            [7, 1007, 2007]
        );
        assert_eq!(
            segs.iter().map(|s| s[b.l4 + 13]).collect::<Vec<_>>(),
            [0x80 | ACK, ACK, 0x08 | 0x01 | ACK]
        );
        for s in &segs {
            verify(s, &b, true);
            // Everything in the IPv6 header but the payload length copied.
            assert_eq!(s[..b.l3 + 4], b.frame[..b.l3 + 4]);
            assert_eq!(s[b.l3 + 6..b.l4], b.frame[b.l3 + 6..b.l4]);
        }
        let joined: Vec<u8> = segs.iter().flat_map(|s| s[hl..].iter().copied()).collect();
        assert_eq!(joined, b.payload);
    }

    #[test]
    fn vlan_tagged_frames_keep_their_tag_in_every_segment() {
        for (b, gso, v6) in [
            (
                tcp4(Some(5), &[], 0x100, 1, ACK, 3000),
                GsoType::TcpV4,
                false,
            ),
            (tcp6(Some(0x2005), 1, ACK, 3000), GsoType::TcpV6, true),
        ] {
            assert_eq!(b.l3, 18);
            let segs = segments(&b.frame, &tso(gso, b.l4, MSS)).unwrap();
            assert_eq!(segs.len(), 3);
            for s in &segs {
                assert_eq!(s[12..18], b.frame[12..18], "802.1Q tag and ethertype");
                verify(s, &b, v6);
            }
        }
    }

    #[test]
    fn a_payload_within_gso_size_gives_one_segment() {
        let b = tcp4(None, &[], 42, 1000, CWR_PSH_FIN_ACK, 2996);
        let segs = segments(&b.frame, &tso(GsoType::TcpV4, b.l4, 4000)).unwrap();
        assert_eq!(segs.len(), 1);
        let s = &segs[0];
        verify(s, &b, false);
        // The same frame with its TCP checksum computed; flags all kept.
        assert_eq!(s[b.l4 + 13], CWR_PSH_FIN_ACK);
        let mut g = s.clone();
        g[b.l4 + 16..b.l4 + 18].copy_from_slice(&b.frame[b.l4 + 16..b.l4 + 18]);
        assert_eq!(g, b.frame);
        // Exactly gso_size, and an empty payload: one segment each.
        let b = tcp4(None, &[], 42, 1000, ACK, 1448);
        assert_eq!(
            segments(&b.frame, &tso(GsoType::TcpV4, b.l4, MSS))
                .unwrap()
                .len(),
            1
        );
        let b = tcp6(None, 1000, ACK, 0);
        let segs = segments(&b.frame, &tso(GsoType::TcpV6, b.l4, MSS)).unwrap();
        assert_eq!(segs.len(), 1);
        verify(&segs[0], &b, true);
    }

    #[test]
    fn resolve_segments_completes_or_passes_through() {
        let mut scratch = Vec::new();
        let b = tcp4(None, &[], 1, 1, ACK, 3000);
        let mut f = b.frame.clone();
        let mut n = 0;
        let hdr = tso(GsoType::TcpV4, b.l4, MSS);
        assert_eq!(resolve(&mut f, &hdr, &mut scratch, |_| n += 1), Ok(3));
        assert_eq!(n, 3);
        // Checksum only: the frame itself, completed.
        let csum = VirtioNetHdr {
            gso_type: GsoType::None,
            gso_size: 0,
            ..hdr
        };
        let mut out = Vec::new();
        assert_eq!(
            resolve(&mut f, &csum, &mut scratch, |s| out.push(s.to_vec())),
            Ok(1)
        );
        let p = pseudo(&out[0], b.l3, b.l4, false, IPPROTO_TCP);
        // The junk in the field counted as the pseudo-header sum; with the
        // real one it verifies.
        assert_ne!(ref_sum(&[&p, &out[0][b.l4..]]), 0xffff);
        let mut g = b.frame.clone();
        put16(&mut g, b.l4 + 16, ref_sum(&[&p]));
        out.clear();
        resolve(&mut g, &csum, &mut scratch, |s| out.push(s.to_vec())).unwrap();
        assert_eq!(ref_sum(&[&p, &out[0][b.l4..]]), 0xffff);
        // No request: passed through untouched.
        let mut h = b.frame.clone();
        out.clear();
        resolve(&mut h, &VirtioNetHdr::default(), &mut scratch, |s| {
            out.push(s.to_vec())
        })
        .unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(out[0], b.frame);
    }

    #[test]
    fn hostile_frames_are_errors_and_nothing_is_emitted() {
        use OffloadError::*;
        let b = tcp4(None, &[], 1, 1, ACK, 3000);
        let hdr = tso(GsoType::TcpV4, b.l4, MSS);
        let try_seg = |f: &[u8], h: &VirtioNetHdr| {
            let mut emitted = 0;
            let r = segment(f, h, &mut Vec::new(), |_| emitted += 1);
            if r.is_err() {
                assert_eq!(emitted, 0, "{r:?}");
            }
            r
        };
        let patched = |at: usize, v: u8| {
            let mut f = b.frame.clone();
            f[at] = v;
            f
        };
        assert_eq!(
            try_seg(&patched(b.l4 + 12, 0x40), &hdr),
            Err(BadDataOffset(16))
        );
        assert_eq!(try_seg(&patched(b.l3, 0x44), &hdr), Err(BadIhl(16)));
        assert_eq!(try_seg(&patched(b.l3, 0x65), &hdr), Err(BadIpVersion(6)));
        let actual = b.frame.len() - b.l3;
        for claimed in [actual - 1, actual + 1, 0, 0xffff] {
            let mut f = b.frame.clone();
            put16(&mut f, b.l3 + 2, claimed as u16);
            assert_eq!(try_seg(&f, &hdr), Err(IpLength { claimed, actual }));
        }
        assert_eq!(try_seg(&patched(b.l3 + 6, 0x60), &hdr), Err(Fragment));
        assert_eq!(try_seg(&patched(b.l3 + 9, 17), &hdr), Err(NotTcp(17)));
        assert_eq!(
            try_seg(&patched(12, 0x88), &hdr),
            Err(UnsupportedEthertype(0x8800))
        );
        // TCP options longer than the frame.
        let tiny = tcp4(None, &[], 1, 1, ACK, 0);
        let mut f = tiny.frame.clone();
        f[tiny.l4 + 12] = 0xf0;
        assert_eq!(
            try_seg(&f, &tso(GsoType::TcpV4, tiny.l4, MSS)),
            Err(Truncated("TCP"))
        );
        // Header disagreeing with the frame.
        let v6 = tso(GsoType::TcpV6, b.l4, MSS);
        assert_eq!(
            try_seg(&b.frame, &v6),
            Err(GsoTypeMismatch {
                gso: GsoType::TcpV6,
                version: 4
            })
        );
        let off = VirtioNetHdr {
            csum_offset: 6,
            ..hdr
        };
        assert_eq!(
            try_seg(&b.frame, &off),
            Err(CsumNotTcp {
                start: b.l4 as u16,
                offset: 6
            })
        );
        let none = VirtioNetHdr {
            gso_type: GsoType::None,
            gso_size: 0,
            ..hdr
        };
        assert_eq!(try_seg(&b.frame, &none), Err(NotGso));
        // IPv6 with a hop-by-hop extension header.
        let b6 = tcp6(None, 1, ACK, 3000);
        let mut f = b6.frame.clone();
        f[b6.l3 + 6] = 0;
        assert_eq!(
            try_seg(&f, &tso(GsoType::TcpV6, b6.l4, MSS)),
            Err(NotTcp(0))
        );
        // Every truncation, VLAN-tagged and not, v4 and v6.
        for (b, gso) in [
            (tcp4(Some(5), &[1, 1, 1, 1], 1, 1, ACK, 200), GsoType::TcpV4),
            (tcp6(None, 1, ACK, 200), GsoType::TcpV6),
        ] {
            let h = tso(gso, b.l4, 100);
            assert!(try_seg(&b.frame, &h).is_ok());
            for n in 0..b.frame.len() {
                assert!(try_seg(&b.frame[..n], &h).is_err(), "cut at {n}");
                assert!(parse_tcp(&b.frame[..n]).is_err(), "cut at {n}");
            }
        }
    }

    #[test]
    fn corrupted_headers_never_panic() {
        for (b, gso) in [
            (tcp4(Some(5), &[1, 1, 1, 1], 1, 1, ACK, 300), GsoType::TcpV4),
            (tcp6(None, 1, ACK, 300), GsoType::TcpV6),
        ] {
            let hl = b.l4 + 32;
            for gso_size in [1, 100, 0xffff] {
                let h = tso(gso, b.l4, gso_size);
                for at in 0..hl {
                    for v in [0u8, 1, 0x0f, 0x7f, 0x80, 0xf0, 0xff] {
                        let mut f = b.frame.clone();
                        f[at] = v;
                        if let Ok(segs) = segments(&f, &h) {
                            let t = parse_tcp(&f).unwrap();
                            let joined: usize = segs.iter().map(|s| s.len() - t.payload).sum();
                            assert_eq!(joined, f.len() - t.payload);
                        }
                        let _ = complete_checksum(&mut f, &h);
                    }
                }
            }
        }
    }
}
