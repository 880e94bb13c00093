//! `frames`: arbitrary frames through the card's parsers and its switch.
//!
//! A card with a VTEP, an in-memory uplink and three guests: the PF (a
//! plain port, with its exception queue pair running), VF0 with the VxLAN
//! attribute (VNI [`VNI`], one tunnel installed) and VF1 with a port VLAN,
//! whose second queue pair sends and receives behind offload headers. Each
//! input frame is sent from one of those queues, arrives from the uplink,
//! or goes to the card as a host's `vxlan-send` / `vxlan-deliver`; the data
//! path then runs. Every frame also goes through the parsers directly:
//! Ethernet/VLAN ([`FrameInfo::parse`], [`strip_tag`]), VxLAN
//! ([`wire::decapsulate`]), the offload header ([`VirtioNetHdr::parse`],
//! [`offload::parse_tcp`]) and the exception messages
//! ([`exception::ExceptionHeader::parse`]).
//!
//! Invariants: nothing panics; parsed ranges lie inside the frame;
//! re-encoding what a parser accepted parses back to the same thing
//! (VxLAN encapsulation, offload headers, exception messages); stripping
//! a tag removes exactly 4 bytes or none.

use std::net::Ipv4Addr;
use std::time::Instant;

use vnic::card::Card;
use vnic::model::{Mac, Vtep};
use vnic::offload::{self, VirtioNetHdr, HDR_LEN};
use vnic::switch::{strip_tag, FrameInfo};
use vnic::test_utils::guest::{self, Vm};
use vnic::uplink::Uplink;
use vnic::vxlan::exception;
use vnic::vxlan::table::Remote;
use vnic::vxlan::wire::{self, Outer, ETH_LEN, OUTER_LEN};
use vnic::vxlan::Vni;

use crate::input::{Input, Output};
use crate::protocol::small_card;
use crate::Seed;

/// VF0's VNI.
pub const VNI: u32 = 100;
/// VF1's port VLAN.
const PVID: u16 = 5;
/// The card's VTEP.
const VTEP_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const VTEP_MAC: Mac = Mac([0x02, 0x76, 0x6e, 0xff, 0x00, 0x01]);
/// The remote VTEP of the installed tunnel, its next hop, and the inner
/// MAC behind it.
const REMOTE_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
const REMOTE_MAC: Mac = Mac([0x02, 0xaa, 0, 0, 0, 0x02]);
const INNER_MAC: Mac = Mac([0x02, 0xbb, 0, 0, 0, 0x02]);
/// Receive buffers each queue starts with.
const POSTED: u16 = 16;
/// Send features of VF1's second queue: VNET_HDR | CSUM | GSO; receive
/// features: those and MULTI_BUF (docs/datapath.md, "Offloads").
const TX_FEATURES: u16 = 0b0111;
const RX_FEATURES: u16 = 0b1111;
/// The PF's exception queue pair (docs/vxlan.md).
const EXC_QP: u16 = vnic::function::EXC_QP;
/// Largest inner frame whose encapsulation fits IPv4's 16-bit length.
const MAX_INNER: usize = u16::MAX as usize - (OUTER_LEN - ETH_LEN);

/// Where a frame of the input goes: the first byte of each frame, modulo
/// the number of sources.
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Source {
    /// The PF's vNIC (queue pair 0).
    Pf = 0,
    /// The PF's exception queue pair: a host agent's message.
    PfException,
    /// VF0, a VxLAN VF: encapsulated towards the uplink or switched in its
    /// segment.
    Vxlan,
    /// VF1's first queue pair, with a port VLAN.
    PortVlan,
    /// VF1's second queue pair: the frame starts with an offload header.
    Offload,
    /// From the uplink (VxLAN for our VTEP or a plain frame).
    Uplink,
    /// A host's `vxlan-send` for VF0's VNI.
    HostSend,
    /// A host's `vxlan-deliver` for VF0's VNI.
    HostDeliver,
}

const SOURCES: u8 = Source::HostDeliver as u8 + 1;

struct Setup {
    card: Card,
    /// PF, VF0, VF1.
    vms: [Vm; 3],
}

fn setup() -> Setup {
    let mut card = small_card();
    card.set_uplink(Uplink::memory());
    let vni = Vni::new(VNI).expect("a valid VNI");
    card.set_vtep(Vtep {
        mac: VTEP_MAC,
        ip: VTEP_IP,
    })
    .expect("a usable VTEP");
    card.set_attr(1, Some(vni), None).expect("VF0 is VxLAN");
    card.set_attr(2, None, Some(PVID))
        .expect("VF1 has a port VLAN");
    let remote = Remote {
        ip: REMOTE_IP,
        mac: REMOTE_MAC,
    };
    card.vxlan_add(vni, INNER_MAC, remote).expect("a tunnel");
    let mut pf = Vm::attach(&mut card, 0, POSTED);
    pf.start_qp(&mut card, EXC_QP, POSTED);
    let vf0 = Vm::attach(&mut card, 1, POSTED);
    let mut vf1 = Vm::attach(&mut card, 2, POSTED);
    vf1.set_features(&mut card, 1, TX_FEATURES, RX_FEATURES);
    Setup {
        card,
        vms: [pf, vf0, vf1],
    }
}

impl Setup {
    fn send(&mut self, vm: usize, q: u16, frame: &[u8]) {
        self.vms[vm].send(&mut self.card, q, &[frame.to_vec()]);
    }

    fn take(&mut self, source: u8, frame: &[u8]) {
        let vni = Vni::new(VNI).expect("a valid VNI");
        match source % SOURCES {
            s if s == Source::Pf as u8 => self.send(0, 0, frame),
            s if s == Source::PfException as u8 => self.send(0, EXC_QP, frame),
            s if s == Source::Vxlan as u8 => self.send(1, 0, frame),
            s if s == Source::PortVlan as u8 => self.send(2, 0, frame),
            s if s == Source::Offload as u8 => self.send(2, 1, frame),
            s if s == Source::Uplink as u8 => {
                self.card.uplink_mut().inject(frame.to_vec());
                self.card.run_uplink();
            }
            s if s == Source::HostSend as u8 => {
                self.card.vxlan_send(vni, frame);
            }
            _ => {
                self.card.vxlan_deliver(vni, frame);
            }
        }
        self.card.run_pending();
        self.card.run_timers(Instant::now());
        self.card.take_events();
        self.card.uplink_mut().take_sent();
    }
}

/// The `frames` target: input is `source: u8, len: u16, bytes` repeated.
pub fn run(data: &[u8]) {
    let mut s = setup();
    let mut input = Input::new(data);
    while !input.is_empty() {
        let source = input.u8();
        let len = input.u16();
        let frame = input.bytes(usize::from(len));
        check_parsers(frame);
        s.take(source, frame);
    }
}

/// The parsers on `frame`, and the invariants of what they accept.
pub fn check_parsers(frame: &[u8]) {
    if let Some(info) = FrameInfo::parse(frame) {
        assert!(frame.len() >= 14 && (!info.tagged || frame.len() >= 16));
    }
    let mut out = Vec::new();
    strip_tag(frame, &mut out);
    assert!(out.len() == frame.len() || out.len() + 4 == frame.len());
    check_vxlan(frame);
    check_offload_header(frame);
    let _ = offload::parse_tcp(frame);
    if let Ok((h, range)) = exception::ExceptionHeader::parse(frame) {
        let inner = frame.get(range.clone()).expect("frame range inside");
        let (dst, src) = (Mac([0xff; 6]), VTEP_MAC);
        let mut again = Vec::new();
        h.write(dst, src, inner, &mut again);
        let (h2, r2) = exception::ExceptionHeader::parse(&again).expect("re-encoded message");
        assert_eq!((h2, &again[r2]), (h, inner));
    }
}

/// Decapsulation stays inside the frame, and encapsulating what came out
/// gives it back.
fn check_vxlan(frame: &[u8]) {
    if let Some(d) = wire::decapsulate(frame, VTEP_IP) {
        let inner = frame.get(d.inner.clone()).expect("inner range inside");
        roundtrip(d.vni, d.outer_src_ip, inner);
    }
    if frame.len() <= MAX_INNER {
        roundtrip(VNI, REMOTE_IP, frame);
    }
}

fn roundtrip(vni: u32, src_ip: Ipv4Addr, inner: &[u8]) {
    let outer = Outer {
        dst_mac: VTEP_MAC,
        src_mac: REMOTE_MAC,
        src_ip,
        dst_ip: VTEP_IP,
        ident: inner.len() as u16,
        vni,
    };
    let mut out = Vec::new();
    wire::encapsulate(&outer, inner, &mut out);
    let d = wire::decapsulate(&out, VTEP_IP).expect("our own encapsulation");
    assert_eq!((d.vni, d.outer_src_ip), (vni & 0x00ff_ffff, src_ip));
    assert_eq!(&out[d.inner], inner);
}

/// An offload header the card accepts encodes back to bytes it accepts
/// the same way.
fn check_offload_header(frame: &[u8]) {
    let len = frame.len().saturating_sub(HDR_LEN);
    if let Ok(h) = VirtioNetHdr::parse(frame, len) {
        assert_eq!(VirtioNetHdr::parse(&h.to_bytes(), len), Ok(h));
    }
}

/// Seeds: frames between the guests and to the uplink, VLAN-tagged (which
/// a port with a port VLAN may not send) and not; a VxLAN frame
/// for our VTEP from the uplink; VF0's frame to the tunnel's inner MAC; a
/// frame behind a checksum request; an exception message from the PF.
pub fn seeds() -> Vec<Seed> {
    let s = setup();
    let card = &s.card;
    let pf = guest::mac(card, 0, 0);
    let vf0 = guest::mac(card, 1, 0);
    let vf1 = guest::mac(card, 2, 0);
    let vf1_offload = guest::mac(card, 2, 1);
    let frame = |src: u8, f: Vec<u8>| {
        let mut o = Output::default();
        o.u8(src).chunk(&f);
        o.0
    };
    let plain = guest::eth(vf1, pf, None, 64);
    let tagged = guest::eth(pf, vf1, Some(PVID), 128);
    let to_tunnel = guest::eth(INNER_MAC, vf0, None, 100);
    let mut vxlan = Vec::new();
    let outer = Outer {
        dst_mac: VTEP_MAC,
        src_mac: REMOTE_MAC,
        src_ip: REMOTE_IP,
        dst_ip: VTEP_IP,
        ident: 1,
        vni: VNI,
    };
    wire::encapsulate(&outer, &guest::eth(vf0, INNER_MAC, None, 90), &mut vxlan);
    let mut csum = VirtioNetHdr::default();
    csum.flags.set_needs_csum(true);
    csum.csum_start = 34;
    csum.csum_offset = 6;
    let mut offloaded = csum.to_bytes().to_vec();
    offloaded.extend(udp_frame(REMOTE_MAC, vf1_offload));
    let mut exc = Vec::new();
    exception::ExceptionHeader::add(
        VNI,
        INNER_MAC,
        Remote {
            ip: REMOTE_IP,
            mac: REMOTE_MAC,
        },
    )
    .write(VTEP_MAC, pf, &[], &mut exc);
    vec![
        ("pf-to-vf1", frame(Source::Pf as u8, plain.clone())),
        ("vf1-tagged", frame(Source::PortVlan as u8, tagged)),
        (
            "vf1-to-uplink",
            frame(
                Source::PortVlan as u8,
                guest::eth(REMOTE_MAC, vf1, None, 60),
            ),
        ),
        ("uplink-plain", frame(Source::Uplink as u8, plain)),
        ("uplink-vxlan", frame(Source::Uplink as u8, vxlan)),
        (
            "vf0-to-tunnel",
            frame(Source::Vxlan as u8, to_tunnel.clone()),
        ),
        ("host-send", frame(Source::HostSend as u8, to_tunnel)),
        ("offload-csum", frame(Source::Offload as u8, offloaded)),
        ("pf-exception-add", frame(Source::PfException as u8, exc)),
    ]
}

/// An IPv4/UDP frame of 60 bytes from `src` to `dst`.
fn udp_frame(dst: Mac, src: Mac) -> Vec<u8> {
    let mut f = guest::eth(dst, src, None, 14);
    let ip_len: u16 = 20 + 8 + 18;
    f.extend_from_slice(&[0x45, 0, (ip_len >> 8) as u8, ip_len as u8, 0, 1, 0x40, 0]);
    f.extend_from_slice(&[64, 17, 0, 0, 10, 0, 0, 1, 10, 0, 0, 2]);
    let sum = wire::ipv4_checksum(&f[14..34]);
    f[24..26].copy_from_slice(&sum.to_be_bytes());
    f.extend_from_slice(&[0x30, 0x39, 0x30, 0x3a, 0, 26, 0, 0]);
    f.extend((0..18).map(|i| i as u8));
    f
}
