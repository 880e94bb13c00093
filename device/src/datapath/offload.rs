//! Offloads on the card's data path (docs/datapath.md, "Offloads"): the
//! header of a sent frame is checked against what its queue negotiated
//! (`crate::offload::request`), and a frame that asks for a checksum or
//! segmentation either reaches a receiver that takes it as it is, or is
//! resolved in software first.

use log::warn;

use super::{Frame, Switching};
use crate::clientlog::rate_limited;
use crate::offload::request::{check, takes, OffloadRequest, Refusal};
use crate::offload::resolve;
use crate::regs::FnStat;
use crate::ring::Features;
use crate::switch::{Decision, Port};

impl Switching<'_> {
    /// Reads the offload header that came with `frame` (`len` bytes), sent
    /// by `from` on a send queue with `features`, into its
    /// [`Frame::offload`] (None when it asks for nothing). A refused header
    /// is logged and counted (`OFFLOAD_DROPS`), and the frame is to be
    /// dropped: returns false.
    pub(super) fn take_offload(
        &mut self,
        from: Port,
        features: Features,
        frame: &mut Frame,
        len: usize,
    ) -> bool {
        frame.offload = None;
        if !features.vnet_hdr() {
            return true;
        }
        match check(features, &frame.header, len) {
            Ok(request) => {
                frame.offload = request;
                true
            }
            Err(e) => {
                self.take_refusal(from, e);
                false
            }
        }
    }

    /// Whether vNIC `port`'s receive queue takes the frame with `request`
    /// as it is.
    pub(super) fn takes_offload(&self, port: Port, request: &OffloadRequest) -> bool {
        let Some(qp) = self
            .functions
            .get(port.function)
            .and_then(|f| f.all_queue_pairs().get(usize::from(port.qp)))
        else {
            return false;
        };
        takes(qp.rx.features(), request)
    }

    /// Carries out `decision` for `frame` after resolving its offload
    /// `request` in software (segments, or a completed checksum): for
    /// destinations that cannot take the frame as it is. Each piece is
    /// then routed as a frame of its own. Returns whether the frame was
    /// dropped.
    pub(super) fn route_resolved(
        &mut self,
        from: Port,
        decision: Decision,
        request: OffloadRequest,
        frame: &mut Frame,
        now: std::time::Instant,
    ) -> bool {
        frame.offload = None;
        let mut pieces = std::mem::take(&mut frame.resolved);
        let mut n = 0;
        let result = resolve(
            &mut frame.bytes,
            &request.hdr,
            &mut frame.segment_buf,
            |piece| {
                if pieces.len() == n {
                    pieces.push(Vec::new());
                }
                pieces[n].clear();
                pieces[n].extend_from_slice(piece);
                n += 1;
            },
        );
        let func = &mut self.functions[from.function];
        match result {
            Ok(count) if request.gso => func.count(FnStat::SwSegments, count as u64),
            Ok(_) => func.count(FnStat::SwCsum, 1),
            Err(e) => {
                frame.resolved = pieces;
                self.take_refusal(from, Refusal::Header(e));
                return true;
            }
        }
        for piece in pieces.iter_mut().take(n) {
            std::mem::swap(&mut frame.bytes, piece);
            self.route(from, decision.clone(), frame, now);
            std::mem::swap(&mut frame.bytes, piece);
        }
        frame.resolved = pieces;
        false
    }

    /// Counts (`OFFLOAD_DROPS`) and logs a refused frame.
    fn take_refusal(&mut self, from: Port, e: Refusal) {
        let func = &mut self.functions[from.function];
        func.count(FnStat::OffloadDrops, 1);
        if rate_limited(func.counters().get(FnStat::OffloadDrops)) {
            warn!("{}: vNIC {} frame dropped: {e}", func.name(), from.qp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Mac;
    use crate::offload::testing::ref_sum;
    use crate::offload::{GsoType, HdrFlags, VirtioNetHdr, ETHERTYPE_IPV4, HDR_LEN, IPPROTO_TCP};
    use crate::ring::MAX_FRAME;
    use crate::test_utils::guest::{card, fn_stat, mac, qp_reg, rd, Vm};

    /// VNET_HDR | CSUM | GSO on a send queue; the same and MULTI_BUF on a
    /// receive queue.
    const TX_ALL: u16 = 0b0111;
    const RX_ALL: u16 = 0b1111;
    const MSS: u16 = 1448;

    /// A TCPv4 frame from `src` to `dst` (tagged with `vlan`) with `n`
    /// payload bytes, its TCP checksum field holding the pseudo-header sum
    /// as Linux leaves it for CHECKSUM_PARTIAL; and where its L4 starts.
    fn tcp4(dst: Mac, src: Mac, vlan: Option<u16>, n: usize) -> (Vec<u8>, usize) {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0x00]);
            f.extend_from_slice(&v.to_be_bytes());
        }
        f.extend_from_slice(&ETHERTYPE_IPV4.to_be_bytes());
        let l3 = f.len();
        let total = (20 + 20 + n) as u16;
        f.extend_from_slice(&[0x45, 0]);
        f.extend_from_slice(&total.to_be_bytes());
        f.extend_from_slice(&[0, 1, 0x40, 0, 64, IPPROTO_TCP, 0, 0]);
        f.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2]);
        let ip_sum = !ref_sum(&[&f[l3..]]);
        f[l3 + 10..l3 + 12].copy_from_slice(&ip_sum.to_be_bytes());
        let l4 = f.len();
        f.extend_from_slice(&[0x12, 0x34, 0x00, 0x50, 0, 0, 0, 1, 0, 0, 0, 0]);
        f.extend_from_slice(&[0x50, 0x18, 0xff, 0xff, 0, 0, 0, 0]);
        f.extend((0..n).map(|i| (i * 7 % 251) as u8));
        let pseudo = ref_sum(&[&pseudo_header(&f[l3..l4], (20 + n) as u16)]);
        f[l4 + 16..l4 + 18].copy_from_slice(&pseudo.to_be_bytes());
        (f, l4)
    }

    /// The TCP pseudo-header of an IPv4 header `ip` and `l4_len` bytes of TCP.
    fn pseudo_header(ip: &[u8], l4_len: u16) -> Vec<u8> {
        let len = l4_len.to_be_bytes();
        [&ip[12..20], &[0, IPPROTO_TCP], &len[..]].concat()
    }

    /// Whether a TCPv4 frame's IP and TCP checksums verify.
    fn checksums_ok(frame: &[u8], l3: usize) -> bool {
        let ihl = usize::from(frame[l3] & 0xf) * 4;
        let l4 = l3 + ihl;
        let pseudo = pseudo_header(&frame[l3..l4], (frame.len() - l4) as u16);
        ref_sum(&[&frame[l3..l4]]) == 0xffff && ref_sum(&[&pseudo, &frame[l4..]]) == 0xffff
    }

    fn request(l4: usize, gso: bool) -> VirtioNetHdr {
        VirtioNetHdr {
            flags: HdrFlags::new().with_needs_csum(true),
            gso_type: if gso { GsoType::TcpV4 } else { GsoType::None },
            ecn: false,
            hdr_len: if gso { (l4 + 20) as u16 } else { 0 },
            gso_size: if gso { MSS } else { 0 },
            csum_start: l4 as u16,
            csum_offset: 16,
        }
    }

    fn with_header(hdr: &VirtioNetHdr, frame: &[u8]) -> Vec<u8> {
        [&hdr.to_bytes()[..], frame].concat()
    }

    /// A card with VF0 (function 1) and VF1 (function 2) attached, 40
    /// receive buffers of 2 KiB posted on each.
    fn two_vfs() -> (crate::card::Card, Vm, Vm) {
        let mut c = card();
        let a = Vm::attach(&mut c, 1, 40);
        let b = Vm::attach(&mut c, 2, 40);
        (c, a, b)
    }

    #[test]
    fn gso_frame_reaches_a_vnic_that_takes_it_unsegmented() {
        let (mut c, mut a, mut b) = two_vfs();
        assert_eq!(a.set_features(&mut c, 0, TX_ALL, RX_ALL) & 3, 3);
        assert_eq!(b.set_features(&mut c, 0, TX_ALL, RX_ALL) & 3, 3);
        let (frame, l4) = tcp4(mac(&c, 2, 0), mac(&c, 1, 0), None, 20_000);
        let hdr = request(l4, true);
        a.send(&mut c, 0, &[with_header(&hdr, &frame)]);
        assert_eq!(b.received_chained(0), vec![with_header(&hdr, &frame)]);
        assert_eq!(b.received(0).len(), 10, "20 KiB in 2 KiB buffers");
        assert_eq!(fn_stat(&c, 1, FnStat::TxGso), 1);
        assert_eq!(fn_stat(&c, 1, FnStat::SwSegments), 0);
        assert_eq!(fn_stat(&c, 1, FnStat::TxBytes), frame.len() as u64);
        assert_eq!(fn_stat(&c, 2, FnStat::RxBytes), frame.len() as u64);
    }

    #[test]
    fn a_gso_frame_is_judged_by_its_segments_against_the_receivers_max_frame() {
        let (mut c, mut a, mut b) = two_vfs();
        a.set_features(&mut c, 0, TX_ALL, RX_ALL);
        b.set_features(&mut c, 0, TX_ALL, RX_ALL);
        let (frame, l4) = tcp4(mac(&c, 2, 0), mac(&c, 1, 0), None, 20_000);
        let gso = with_header(&request(l4, true), &frame);
        // Segments of 14 + 20 + 20 + 1448 = 1502 bytes: an MTU of 1500
        // takes them, unsegmented as the queue asks.
        assert_eq!(b.set_max_frame(&mut c, 0, 1518) & 3, 3);
        a.send(&mut c, 0, std::slice::from_ref(&gso));
        assert_eq!(b.received_chained(0), vec![gso.clone()]);
        // An MTU of 1400 does not: dropped whole, and counted.
        assert_eq!(b.set_max_frame(&mut c, 0, 1418) & 3, 3);
        a.send(&mut c, 0, std::slice::from_ref(&gso));
        assert_eq!(b.received_chained(0).len(), 1);
        assert_eq!(fn_stat(&c, 2, FnStat::RxDrops), 1);
        // The same frame segmented for a vNIC without offloads: each
        // segment is a frame of its own, and fits.
        let (frame, l4) = tcp4(mac(&c, 2, 1), mac(&c, 1, 0), None, 5_000);
        assert_eq!(b.set_max_frame(&mut c, 1, 1518) & 3, 3);
        a.send(&mut c, 0, &[with_header(&request(l4, true), &frame)]);
        assert_eq!(b.received(1).len(), 4, "5000 bytes in 1448-byte segments");
    }

    #[test]
    fn gso_frame_is_segmented_for_a_vnic_without_offloads() {
        let (mut c, mut a, b) = two_vfs();
        a.set_features(&mut c, 0, TX_ALL, RX_ALL);
        let (frame, l4) = tcp4(mac(&c, 2, 0), mac(&c, 1, 0), None, 10_000);
        a.send(&mut c, 0, &[with_header(&request(l4, true), &frame)]);
        let got = b.received(0);
        assert_eq!(got.len(), 7, "10000 bytes in 1448-byte segments");
        let mut payload = Vec::new();
        for seg in &got {
            assert!(seg.len() <= l4 + 20 + usize::from(MSS));
            assert!(checksums_ok(seg, 14), "segment checksums verify");
            payload.extend_from_slice(&seg[l4 + 20..]);
        }
        assert_eq!(payload, frame[l4 + 20..]);
        assert_eq!(fn_stat(&c, 1, FnStat::SwSegments), 7);
        assert_eq!(fn_stat(&c, 1, FnStat::TxGso), 1);
    }

    #[test]
    fn checksum_request_is_completed_for_a_vnic_that_cannot_take_it() {
        let (mut c, mut a, mut b) = two_vfs();
        a.set_features(&mut c, 0, TX_ALL, RX_ALL);
        // B has the header but not CSUM: completed, behind a zero header.
        b.set_features(&mut c, 0, 0, 0b1001);
        let (frame, l4) = tcp4(mac(&c, 2, 0), mac(&c, 1, 0), None, 300);
        a.send(&mut c, 0, &[with_header(&request(l4, false), &frame)]);
        let got = b.received(0);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0][..HDR_LEN], [0; HDR_LEN]);
        assert!(checksums_ok(&got[0][HDR_LEN..], 14));
        assert_eq!(fn_stat(&c, 1, FnStat::SwCsum), 1);
    }

    #[test]
    fn gso_frame_leaves_through_the_uplink_as_segments() {
        let (mut c, mut a, _b) = two_vfs();
        c.set_uplink(crate::uplink::Uplink::memory());
        a.set_features(&mut c, 0, TX_ALL, RX_ALL);
        let far = Mac([2, 1, 2, 3, 4, 5]);
        let (frame, l4) = tcp4(far, mac(&c, 1, 0), None, 3000);
        a.send(&mut c, 0, &[with_header(&request(l4, true), &frame)]);
        let sent = c.uplink_mut().take_sent();
        assert_eq!(sent.len(), 3);
        assert!(sent.iter().all(|s| checksums_ok(s, 14)));
        assert_eq!(fn_stat(&c, 1, FnStat::ToUplink), 3);
    }

    #[test]
    fn port_vlan_tag_moves_the_offsets_of_the_request() {
        let (mut c, mut a, mut b) = two_vfs();
        c.set_vnic(1, 0, None, Some(10)).unwrap();
        crate::test_utils::guest::wr(&mut c, 2, qp_reg(0, 0x20), 10);
        a.set_features(&mut c, 0, TX_ALL, RX_ALL);
        let (frame, l4) = tcp4(mac(&c, 2, 0), mac(&c, 1, 0), None, 3000);
        let hdr = request(l4, true);
        // B without offloads: segments, tagged, whose checksums verify.
        a.send(&mut c, 0, &[with_header(&hdr, &frame)]);
        let got = b.received(0);
        assert_eq!(got.len(), 3);
        assert!(got
            .iter()
            .all(|s| s[12..14] == [0x81, 0] && checksums_ok(s, 18)));
        // B with offloads: the tagged frame, offsets 4 bytes further.
        b.set_features(&mut c, 0, TX_ALL, RX_ALL);
        a.send(&mut c, 0, &[with_header(&hdr, &frame)]);
        let frames = b.received_chained(0);
        let last = frames.last().unwrap();
        let moved = VirtioNetHdr::parse(last, last.len() - HDR_LEN).unwrap();
        assert_eq!(moved.csum_start, hdr.csum_start + 4);
        assert_eq!(moved.hdr_len, hdr.hdr_len + 4);
        assert_eq!(last[HDR_LEN + 12..HDR_LEN + 16], [0x81, 0, 0, 10]);
    }

    #[test]
    fn refused_headers_drop_the_frame_and_the_queue_goes_on() {
        let (mut c, mut a, mut b) = two_vfs();
        a.set_features(&mut c, 0, 0b0011, RX_ALL); // VNET_HDR | CSUM, no GSO
        b.set_features(&mut c, 0, TX_ALL, RX_ALL);
        let (frame, l4) = tcp4(mac(&c, 2, 0), mac(&c, 1, 0), None, 3000);
        let mut ufo = request(l4, true).to_bytes();
        ufo[1] = 3;
        let frames = [
            [&ufo[..], &frame].concat(),                    // UDP GSO
            with_header(&request(l4, true), &frame),        // GSO not negotiated
            [&[0xff; HDR_LEN][..], &frame].concat(),        // garbage
            with_header(&request(l4, false), &frame[..40]), // checksum past the end
        ];
        a.send(&mut c, 0, &frames);
        assert_eq!(fn_stat(&c, 1, FnStat::OffloadDrops), 4);
        // With GSO, a frame over 9216 bytes must ask for it.
        a.set_features(&mut c, 0, TX_ALL, RX_ALL);
        let big = tcp4(mac(&c, 2, 0), mac(&c, 1, 0), None, 9500).0;
        a.send(&mut c, 0, &[with_header(&VirtioNetHdr::default(), &big)]);
        assert_eq!(fn_stat(&c, 1, FnStat::OffloadDrops), 5);
        assert_eq!(fn_stat(&c, 1, FnStat::TxDrops), 5);
        assert!(b.received(0).is_empty());
        assert_eq!(rd(&mut c, 1, qp_reg(0, 0x0c)) & 0xf, 3, "still running");
        // A good frame still goes through.
        a.send(&mut c, 0, &[with_header(&request(l4, false), &frame)]);
        assert_eq!(b.received_chained(0).len(), 1);
    }

    #[test]
    fn a_zero_header_asks_nothing_as_parsing_it_finds() {
        let zero = [0u8; HDR_LEN];
        for features in [0b0001, 0b0011, 0b0111].map(Features::from_bits) {
            for len in [14, 1500, MAX_FRAME, MAX_FRAME + 1] {
                let parsed = VirtioNetHdr::parse(&zero, len).map(|h| h.requests());
                let checked = check(features, &zero, len);
                assert_eq!(parsed, Ok(false));
                assert_eq!(checked.is_ok(), len <= MAX_FRAME, "{len}");
                assert!(checked.is_ok_and(|r| r.is_none()) || len > MAX_FRAME);
            }
        }
    }

    /// Offload headers on the fast path: frames whose request the receiver
    /// takes as it is (or that ask nothing) go from guest to guest with
    /// their header; the others, and refused headers, take the general
    /// path; both paths leave the same.
    #[test]
    fn the_fast_path_passes_requests_the_receiver_takes_and_leaves_the_rest() {
        use crate::datapath::fast::tests::{rearm, same_as_general_path};
        let moved = same_as_general_path(|c, a, b| {
            // A0 sends with every offload, A1 with the header only; B0
            // takes every offload, B1 the header only, A1 nothing.
            a.set_features(c, 0, TX_ALL, RX_ALL);
            a.set_features(c, 1, 0b0001, 0);
            b.set_features(c, 0, TX_ALL, RX_ALL);
            b.set_features(c, 1, 0, 0b0001);
            let (a0, a1, b0, b1) = (mac(c, 1, 0), mac(c, 1, 1), mac(c, 2, 0), mac(c, 2, 1));
            let none = VirtioNetHdr::default();
            let (csum, l4) = tcp4(b0, a0, None, 300);
            let (gso, gl4) = tcp4(b0, a0, None, 1700);
            let to_b0 = [
                with_header(&none, &tcp4(b0, a0, None, 100).0),
                with_header(&request(l4, false), &csum),
                with_header(&request(gl4, true), &gso), // fits one buffer
                with_header(&none, &tcp4(b0, a0, None, 200).0),
                with_header(&request(l4, true), &tcp4(b0, a0, None, 3000).0), // two buffers
                with_header(&request(l4, false), &csum),
            ];
            a.send(c, 0, &to_b0);
            rearm(c);
            let (csum1, l4) = tcp4(b1, a0, None, 300);
            let to_b1 = [
                with_header(&none, &tcp4(b1, a0, None, 120).0),
                with_header(&none, &tcp4(b1, a0, None, 130).0),
                with_header(&request(l4, false), &csum1), // completed by the card
                with_header(&none, &tcp4(b1, a0, None, 140).0),
            ];
            a.send(c, 0, &to_b1);
            rearm(c);
            let to_a1: Vec<Vec<u8>> = (0..3)
                .map(|i| with_header(&none, &tcp4(a1, a0, None, 150 + i).0))
                .collect();
            a.send(c, 0, &to_a1);
            rearm(c);
            // A header-only sender: a checksum request is refused.
            let (f, l4) = tcp4(b0, a1, None, 90);
            let from_a1 = [
                with_header(&none, &f),
                with_header(&request(l4, false), &f),
                with_header(&none, &f),
            ];
            a.send(c, 1, &from_a1);
            rearm(c);
        });
        assert!(moved >= 10, "{moved}");
    }

    #[test]
    fn features_outside_the_rules_fail_the_queue_with_code_7() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        for (tx, rx) in [
            (0b1000, 0), // MULTI_BUF on a send queue
            (0b0010, 0), // CSUM without VNET_HDR
            (0b0101, 0), // GSO without CSUM
            (0x20, 0),   // unknown bit
            (0, 0b0111), // receive GSO without MULTI_BUF
        ] {
            let status = a.set_features(&mut c, 0, tx, rx);
            let (code, running) = if tx != 0 {
                ((status >> 8) & 0xff, status & 1)
            } else {
                ((status >> 16) & 0xff, status & 2)
            };
            assert_eq!((code, running), (7, 0), "tx {tx:#x} rx {rx:#x}");
        }
        assert_eq!(a.set_features(&mut c, 0, TX_ALL, RX_ALL) & 0xf, 3);
    }

    #[test]
    fn the_exception_queue_pair_takes_multi_buffer_receive_only() {
        let mut c = card();
        let mut pf = Vm::attach(&mut c, 0, 8);
        pf.start_qp(&mut c, 1, 8);
        assert_eq!(pf.set_features(&mut c, 1, 0, 0b1000) & 0xf, 3);
        let status = pf.set_features(&mut c, 1, 0, 0b1001);
        assert_eq!(((status >> 16) & 0xff, status & 2), (7, 0));
        let status = pf.set_features(&mut c, 1, 0b0001, 0b1000);
        assert_eq!(((status >> 8) & 0xff, status & 1), (7, 0));
    }
}
