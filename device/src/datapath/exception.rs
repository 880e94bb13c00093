//! The card's side of the PF's exception queue pair (docs/vxlan.md, "The
//! exception queue on the PF"): requests (misses and punts) written into
//! its receive queue while it runs (else they stay control-socket events),
//! and the PF's messages taken from its send queue and carried out as the
//! operations they stand for (`vxlan-add`, `vxlan-send`, `vxlan-deliver`,
//! `uplink-send`), with the same checks. The message format is
//! `crate::vxlan::exception`'s.
//!
//! The exception queue pair is not a port of the switch: nothing is
//! switched to it or from it.

use std::time::Instant;

use log::{debug, warn};

use super::{exception_port, Frame, Switching};
use crate::clientlog::rate_limited;
use crate::model::Event;
use crate::switch::Port;
use crate::vxlan::exception::{ExceptionHeader, MsgType, Refusal, MIN_FRAME};
use crate::vxlan::table::Remote;
use crate::vxlan::Vni;

impl Switching<'_> {
    /// Hands the request `header`, with `frame`, to the PF's exception
    /// queue pair if it can receive now (through the normal receive path:
    /// packet buffer, interrupt moderation). Returns false if it cannot:
    /// the request is then the caller's control-socket event.
    pub(super) fn request_to_pf(
        &mut self,
        header: &ExceptionHeader,
        frame: &mut Frame,
        now: Instant,
    ) -> bool {
        let Some(port) = exception_port(self.functions) else {
            return false;
        };
        let mac = self.functions[0].all_queue_pairs()[usize::from(port.qp)].mac;
        header.write(mac, mac, &frame.bytes, &mut frame.message);
        let taken = self.functions[0].receive(port.qp, None, &frame.message, now);
        self.touch(0);
        let c = &mut self.vxlan.exception;
        if taken {
            c.to_pf += 1;
        } else {
            c.lost += 1;
            if rate_limited(c.lost) {
                warn!(
                    "pf: exception queue pair {}: {:?} request lost, the receive queue is full ({} so far)",
                    port.qp, header.ty, c.lost
                );
            }
        }
        true
    }

    /// `frame`, sent by the PF on its exception queue pair: carried out as
    /// a message. Returns whether it was dropped (refused, or not a
    /// message): its descriptor then says `DROPPED`.
    pub(super) fn exception_from_pf(
        &mut self,
        from: Port,
        frame: &mut Frame,
        now: Instant,
    ) -> bool {
        if let Some(c) = self.capture.as_mut().filter(|c| c.wants(from.function)) {
            c.record(&frame.bytes);
        }
        let outcome = self.exception_message(frame, now);
        let c = &mut self.vxlan.exception;
        match outcome {
            Ok(ty) => {
                c.from_pf += 1;
                debug!("pf: exception queue pair {}: {ty:?} done", from.qp);
                false
            }
            Err(Refusal::Ethertype(t)) => {
                c.ignored += 1;
                debug!(
                    "pf: exception queue pair {}: ethertype {t:#06x} ignored",
                    from.qp
                );
                true
            }
            Err(e) => {
                c.refused += 1;
                if rate_limited(c.refused) {
                    warn!(
                        "pf: exception queue pair {}: message refused ({} so far): {e}",
                        from.qp, c.refused
                    );
                }
                true
            }
        }
    }

    /// Carries out the message in `frame` as the operation it stands for,
    /// with the same checks; a refused one changes nothing. `frame` is
    /// left holding the frame the message carried.
    fn exception_message(&mut self, frame: &mut Frame, now: Instant) -> Result<MsgType, Refusal> {
        let (h, carried) = ExceptionHeader::parse(&frame.bytes)?;
        match h.ty {
            MsgType::Miss | MsgType::Punt => return Err(Refusal::Direction(h.ty)),
            MsgType::Add => {
                let remote = Remote {
                    ip: h.ip,
                    mac: h.mac,
                };
                let installed = self.vxlan.add(Vni::new(h.vni)?, h.inner_mac, remote)?;
                for e in installed.evicted {
                    self.events.push(Event::VxlanEvicted {
                        vni: e.vni.get(),
                        mac: e.mac,
                        tunnel: e.tunnel,
                    });
                }
            }
            MsgType::Send | MsgType::Deliver | MsgType::Uplink => {
                // `uplink-send` has no VNI: UPLINK's is not looked at.
                let vni = match h.ty {
                    MsgType::Uplink => None,
                    _ => Some(Vni::new(h.vni)?),
                };
                if carried.len() < MIN_FRAME {
                    return Err(Refusal::ShortFrame(carried.len()));
                }
                let len = carried.len();
                frame.bytes.copy_within(carried, 0);
                frame.bytes.truncate(len);
                match (h.ty, vni) {
                    (MsgType::Send, Some(vni)) => self.send_returned(vni, frame)?,
                    (MsgType::Deliver, Some(vni)) => {
                        self.deliver_in_segment(vni, frame, now);
                    }
                    _ => self.uplink.send(&frame.bytes, self.capture.as_mut()),
                }
            }
        }
        Ok(h.ty)
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::card::{Card, CardConfig};
    use crate::model::{Mac, PuntReason, MAX_FRAME_BYTES};
    use crate::regs::{FnStat, Reg};
    use crate::vxlan::exception::{FRAME_OFFSET, MAX_MESSAGE};
    use crate::vxlan::{BadEntry, BadVni};

    /// Carries out message `m` as if the PF had sent it, without a queue.
    fn exception_message(c: &mut Card, m: &[u8]) -> Result<MsgType, Refusal> {
        c.with_datapath(|d, parts| {
            let (mut run, frame) = d.switching(parts);
            frame.load(m);
            run.exception_message(frame, Instant::now())
        })
    }
    use crate::test_utils::guest::{card, eth, fn_stat, mac, qp_reg, rd, wr, Vm};
    use crate::uplink::Uplink;
    use crate::vxlan::wire::{self, Outer};

    use crate::vxlan::exception::tests::{vni, EXC_MAC, FAR, PEER, VNI, VTEP};

    #[test]
    fn the_card_names_its_counters() {
        let c = card();
        let stats = c.stats(None).card;
        for name in [
            "exception_to_pf",
            "exception_from_pf",
            "exception_refused",
            "exception_ignored",
            "exception_lost",
        ] {
            assert_eq!(stats.get(name), Some(&0), "{name}");
        }
    }

    /// A card with a memory uplink, a VTEP, vf0 (function 1) in VNI 100,
    /// vf1 (function 2) on VLANs, the PF with its exception queue pair
    /// started; all attached.
    fn exc_card() -> (Card, Vm, Vm, Vm) {
        let mut c = card();
        c.set_uplink(Uplink::memory());
        c.set_vtep(VTEP).unwrap();
        c.set_attr(1, Some(vni()), None).unwrap();
        let mut pf = Vm::attach(&mut c, 0, 8);
        pf.start_qp(&mut c, 1, 32);
        let a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        c.take_events();
        (c, pf, a, b)
    }

    fn requests(c: &mut Card) -> Vec<Event> {
        c.take_events()
            .into_iter()
            .filter(|e| matches!(e, Event::VxlanMiss { .. } | Event::VxlanPunt { .. }))
            .collect()
    }

    fn message(h: ExceptionHeader, frame: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        h.write(EXC_MAC, Mac([2, 0x76, 0x6e, 0, 0, 0x77]), frame, &mut out);
        out
    }

    /// `inner` as the peer VTEP sends it to us.
    fn from_peer(inner: &[u8]) -> Vec<u8> {
        let outer = Outer {
            dst_mac: VTEP.mac,
            src_mac: PEER.mac,
            src_ip: PEER.ip,
            dst_ip: VTEP.ip,
            ident: 7,
            vni: VNI,
        };
        let mut f = Vec::new();
        wire::encapsulate(&outer, inner, &mut f);
        f
    }

    /// Status words of the last `n` descriptors sent on the PF's
    /// exception send queue.
    fn exc_status(pf: &Vm, n: u16) -> Vec<u16> {
        let (tx, tail) = (pf.rings[1].0, pf.tx_tail[1]);
        (tail - n..tail).map(|i| pf.drv.status(tx, i)).collect()
    }

    #[test]
    fn exc_qp_reads_1_on_the_pf_and_0_on_a_vf_and_without_room() {
        let mut c = card();
        assert_eq!(rd(&mut c, 0, Reg::ExcQp as u64), 1);
        assert_eq!(rd(&mut c, 1, Reg::ExcQp as u64), 0);
        assert_eq!(rd(&mut c, 0, Reg::QpNum as u64), 1, "not a vNIC");
        let mut one = Card::new(CardConfig {
            queue_pairs: 1,
            vnics_per_vf: 1,
            ..Default::default()
        })
        .unwrap();
        assert_eq!(rd(&mut one, 0, Reg::ExcQp as u64), 0);
        assert_eq!(one.functions()[0].all_queue_pairs().len(), 1);
        assert_eq!(rd(&mut one, 0, qp_reg(1, 0x0c)), u32::MAX, "no area");
    }

    #[test]
    fn the_exception_queue_pair_is_no_port_of_the_switch() {
        let (mut c, pf, _a, mut b) = exc_card();
        // Its MAC reads as the default of PF queue pair 1; it is nowhere
        // in the switch, and no vNIC of the PF's.
        let lo = rd(&mut c, 0, qp_reg(1, 0x00));
        let hi = rd(&mut c, 0, qp_reg(1, 0x04));
        assert_eq!((lo, hi), (0x006e_7602, 0x0000_0100));
        assert_eq!(c.switch().lookup(EXC_MAC, 0), None);
        assert!(c.fdb_list().iter().all(|e| e.mac != EXC_MAC));
        assert_eq!(c.function_info(0).vnics.len(), 1);
        assert_eq!(c.stats(Some(0)).functions[0].vnics.len(), 1);
        assert!(c
            .set_vnic(0, 1, Some(Mac([2, 0, 0, 0, 0, 5])), None)
            .is_err());
        assert!(c.fdb_add(Mac([2, 0, 0, 0, 0, 5]), 0, 0, 1).is_err());
        // A broadcast from a vNIC on the PF's VLAN (untagged) reaches the
        // PF's vNIC, not the exception queue pair.
        let bc = eth(Mac::BROADCAST, mac(&c, 2, 0), None, 60);
        b.send(&mut c, 0, std::slice::from_ref(&bc));
        assert_eq!(pf.received(0), vec![bc]);
        assert!(pf.received(1).is_empty());
        // Nor does unicast to its MAC (unknown unicast goes to the uplink).
        let to_exc = eth(EXC_MAC, mac(&c, 2, 0), None, 60);
        b.send(&mut c, 0, &[to_exc]);
        assert!(pf.received(1).is_empty());
        assert_eq!(c.uplink_mut().take_sent().len(), 2);
        // QP_VLAN and QP_MAC writes to it are bad accesses, even trusted.
        c.set_trust(0, true);
        let bad = rd(&mut c, 0, Reg::BadAccess as u64);
        for rel in [0x20, 0x00, 0x04] {
            wr(&mut c, 0, qp_reg(1, rel), 10);
        }
        assert_eq!(rd(&mut c, 0, Reg::BadAccess as u64), bad + 3);
        assert!(c.switch().lookup(EXC_MAC, 10).is_none());
        assert_eq!(rd(&mut c, 0, qp_reg(1, 0x00)), lo);
        // Queue pair 2 of the PF is still no queue pair.
        assert_eq!(rd(&mut c, 0, qp_reg(2, 0x0c)), u32::MAX);
    }

    #[test]
    fn requests_go_to_the_running_queue_and_else_are_events() {
        let (mut c, pf, mut a, _b) = exc_card();
        let f = eth(FAR, mac(&c, 1, 1), Some(5), 100);
        a.send(&mut c, 1, std::slice::from_ref(&f));
        assert!(requests(&mut c).is_empty(), "not an event as well");
        let got = pf.received(1);
        assert_eq!(got.len(), 1);
        // The MISS carries the VTEP, the VF and vNIC, and the frame.
        let (h, frame) = ExceptionHeader::parse(&got[0]).unwrap();
        assert_eq!(h, ExceptionHeader::miss(vni(), 0, 1, VTEP));
        assert_eq!(&got[0][frame], &f[..]);
        assert_eq!(&got[0][..12], &[EXC_MAC.0, EXC_MAC.0].concat()[..]);
        assert_eq!(c.vxlan().counters.requests, 1);
        assert_eq!(c.vxlan().exception.to_pf, 1);
        assert_eq!(fn_stat(&c, 0, FnStat::RxPackets), 1, "counted as a frame");
        assert_eq!(
            a.drv.status(a.rings[1].0, 0),
            1,
            "the sender's frame completed, not dropped"
        );
        // A punt too.
        let inner = eth(mac(&c, 1, 0), FAR, None, 80);
        c.uplink_mut().inject(from_peer(&inner));
        c.run_uplink();
        let got = pf.received(1);
        assert_eq!(got.len(), 2);
        let (h, frame) = ExceptionHeader::parse(&got[1]).unwrap();
        assert_eq!(h, ExceptionHeader::punt(vni(), PEER, PuntReason::Unknown));
        assert_eq!(&got[1][frame], &inner[..]);
        assert_eq!(c.vxlan().counters.punts, 1);
        assert!(requests(&mut c).is_empty());
        // RX stopped (TX still running): events again, counted as before.
        wr(&mut c, 0, qp_reg(1, 0x08), 1);
        assert_eq!(c.exception_port(), None);
        a.send(&mut c, 1, std::slice::from_ref(&f));
        c.uplink_mut().inject(from_peer(&inner));
        c.run_uplink();
        assert_eq!(requests(&mut c).len(), 2);
        assert_eq!(pf.received(1).len(), 2);
        assert_eq!(c.vxlan().counters.requests, 2);
        assert_eq!(c.vxlan().counters.punts, 2);
        assert_eq!(c.vxlan().exception.to_pf, 2);
        // Running again: the queue again.
        wr(&mut c, 0, qp_reg(1, 0x08), 3);
        a.send(&mut c, 1, std::slice::from_ref(&f));
        assert!(requests(&mut c).is_empty());
        assert_eq!(c.vxlan().exception.to_pf, 3);
    }

    #[test]
    fn add_and_send_in_one_batch_hit_and_later_frames_need_no_host() {
        let (mut c, mut pf, mut a, _b) = exc_card();
        let f = eth(FAR, mac(&c, 1, 0), None, 300);
        a.send(&mut c, 0, std::slice::from_ref(&f));
        let miss = pf.received(1).remove(0);
        let (h, range) = ExceptionHeader::parse(&miss).unwrap();
        let add = message(ExceptionHeader::add(h.vni, FAR, PEER), &[]);
        let send = message(ExceptionHeader::answer(MsgType::Send, h.vni), &miss[range]);
        pf.send(&mut c, 1, &[add, send]);
        assert_eq!(exc_status(&pf, 2), vec![1, 1], "DONE, not DROPPED");
        let sent = c.uplink_mut().take_sent();
        assert_eq!(sent.len(), 1);
        let d = wire::decapsulate(&sent[0], PEER.ip).expect("VxLAN for the peer");
        assert_eq!(d.vni, VNI);
        assert_eq!(&sent[0][d.inner], &f[..]);
        assert_eq!(c.vxlan().exception.from_pf, 2);
        assert_eq!(c.vxlan().tables.macs()[0].uses, 1);
        assert_eq!(fn_stat(&c, 0, FnStat::TxPackets), 2);
        a.send(&mut c, 0, std::slice::from_ref(&f));
        assert_eq!(c.uplink_mut().take_sent().len(), 1);
        assert_eq!(pf.received(1).len(), 1, "no second request");
    }

    #[test]
    fn deliver_reaches_the_vnis_vnic_and_uplink_leaves_as_is() {
        let (mut c, mut pf, a, b) = exc_card();
        let inner = eth(mac(&c, 1, 1), FAR, None, 120);
        c.uplink_mut().inject(from_peer(&inner));
        c.run_uplink();
        let punt = pf.received(1).remove(0);
        let (h, range) = ExceptionHeader::parse(&punt).unwrap();
        assert_eq!(h.ty, MsgType::Punt);
        assert!(a.received(1).is_empty(), "nothing before the host answers");
        let add = message(
            ExceptionHeader::add(
                h.vni,
                FAR,
                Remote {
                    ip: h.ip,
                    mac: h.mac,
                },
            ),
            &[],
        );
        let deliver = message(
            ExceptionHeader::answer(MsgType::Deliver, h.vni),
            &punt[range],
        );
        // Padded to 60 bytes and more, as a driver may.
        let mut deliver_padded = deliver.clone();
        deliver_padded.extend_from_slice(&[0; 30]);
        pf.send(&mut c, 1, &[add, deliver_padded]);
        assert_eq!(a.received(1), vec![inner.clone()]);
        assert!(b.received(0).is_empty() && b.received(1).is_empty());
        // From now on the card vouches for FAR itself.
        c.uplink_mut().inject(from_peer(&inner));
        c.run_uplink();
        assert_eq!(a.received(1).len(), 2);
        assert_eq!(pf.received(1).len(), 1);
        // UPLINK: a whole frame out of the uplink as it is (VNI ignored).
        let outer = from_peer(&inner);
        pf.send(
            &mut c,
            1,
            &[message(ExceptionHeader::answer(MsgType::Uplink, 0), &outer)],
        );
        assert_eq!(c.uplink_mut().take_sent(), vec![outer]);
        assert_eq!(c.vxlan().exception.from_pf, 3);
        assert_eq!(exc_status(&pf, 1), vec![1]);
    }

    #[test]
    fn a_message_carries_frames_as_long_as_the_control_socket_takes() {
        let (mut c, mut pf, _a, _b) = exc_card();
        let longest = vec![0x5a; MAX_FRAME_BYTES];
        let m = message(ExceptionHeader::answer(MsgType::Uplink, 0), &longest);
        assert_eq!(m.len(), MAX_MESSAGE);
        pf.send(&mut c, 1, &[m]);
        assert_eq!(exc_status(&pf, 1), vec![1]);
        assert_eq!(c.uplink_mut().take_sent(), vec![longest]);
        // One byte more is a LENGTH error of the send queue, as a frame
        // over 9216 bytes is on any other.
        let mut m = message(
            ExceptionHeader::answer(MsgType::Uplink, 0),
            &[0x5a; MAX_FRAME_BYTES],
        );
        m.push(0);
        pf.send(&mut c, 1, &[m]);
        assert_eq!((rd(&mut c, 0, qp_reg(1, 0x0c)) >> 8) & 0xff, 3);
    }

    #[test]
    fn every_refusal_is_dropped_counted_and_changes_nothing() {
        let (mut c, mut pf, _a, _b) = exc_card();
        let frame = eth(FAR, mac(&c, 1, 0), None, 60);
        let good = message(ExceptionHeader::answer(MsgType::Send, VNI), &frame);
        let with = |f: &dyn Fn(&mut Vec<u8>)| {
            let mut m = good.clone();
            f(&mut m);
            m
        };
        let add = |vni: u32, inner: Mac, remote: Remote| {
            message(ExceptionHeader::add(vni, inner, remote), &[])
        };
        let zero = Mac::default();
        let cases: Vec<(Vec<u8>, Refusal)> = vec![
            (good[..45].to_vec(), Refusal::Short(45)),
            (good[..14].to_vec(), Refusal::Short(14)),
            (with(&|m| m[14] = 2), Refusal::Version(2)),
            (with(&|m| m[15] = 0x85), Refusal::Type(0x85)),
            (with(&|m| m[15] = 0x00), Refusal::Type(0)),
            (with(&|m| m[15] = 0x01), Refusal::Direction(MsgType::Miss)),
            (with(&|m| m[15] = 0x02), Refusal::Direction(MsgType::Punt)),
            (
                with(&|m| m[16..18].copy_from_slice(&[0, 61])),
                Refusal::Length { len: 61, room: 60 },
            ),
            (
                with(&|m| m[16..18].copy_from_slice(&[0xff, 0xff])),
                Refusal::Length {
                    len: 0xffff,
                    room: 60,
                },
            ),
            (with(&|m| m[18..22].fill(0)), Refusal::Vni(BadVni(0))),
            (with(&|m| m[18] = 1), Refusal::Vni(BadVni(0x0100_0064))),
            (
                message(ExceptionHeader::answer(MsgType::Deliver, 0), &frame),
                Refusal::Vni(BadVni(0)),
            ),
            (add(0, FAR, PEER), Refusal::Vni(BadVni(0))),
            (add(VNI, zero, PEER), Refusal::Add(BadEntry::Mac(zero))),
            (
                add(
                    VNI,
                    FAR,
                    Remote {
                        ip: PEER.ip,
                        mac: Mac::BROADCAST,
                    },
                ),
                Refusal::Add(BadEntry::Mac(Mac::BROADCAST)),
            ),
            (
                add(
                    VNI,
                    FAR,
                    Remote {
                        ip: PEER.ip,
                        mac: zero,
                    },
                ),
                Refusal::Add(BadEntry::Mac(zero)),
            ),
            (
                add(
                    VNI,
                    FAR,
                    Remote {
                        ip: Ipv4Addr::new(224, 0, 0, 1),
                        mac: PEER.mac,
                    },
                ),
                Refusal::Add(BadEntry::Ip(Ipv4Addr::new(224, 0, 0, 1))),
            ),
            (
                add(
                    VNI,
                    FAR,
                    Remote {
                        ip: Ipv4Addr::UNSPECIFIED,
                        mac: PEER.mac,
                    },
                ),
                Refusal::Add(BadEntry::Ip(Ipv4Addr::UNSPECIFIED)),
            ),
            (
                message(ExceptionHeader::answer(MsgType::Send, VNI), &frame[..13]),
                Refusal::ShortFrame(13),
            ),
            (
                message(ExceptionHeader::answer(MsgType::Deliver, VNI), &[]),
                Refusal::ShortFrame(0),
            ),
            (
                message(ExceptionHeader::answer(MsgType::Uplink, VNI), &frame[..10]),
                Refusal::ShortFrame(10),
            ),
            (good.clone(), Refusal::SendMiss),
        ];
        // Each refusal, checked where the card decides it.
        for (m, why) in &cases {
            assert_eq!(exception_message(&mut c, m).as_ref(), Err(why));
        }
        // Without a VTEP, SEND is refused too.
        let vtep = c.vxlan_mut().vtep.take();
        assert_eq!(exception_message(&mut c, &good), Err(Refusal::NoVtep));
        c.vxlan_mut().vtep = vtep;
        assert!(c.vxlan().tables.macs().is_empty(), "nothing installed");
        // The same through the send queue: every descriptor DONE|DROPPED,
        // counted once each; nothing left the card.
        let n = cases.len() as u16;
        let before = c.vxlan().exception.refused;
        let ring: Vec<Vec<u8>> = cases
            .into_iter()
            .map(|(m, _)| m)
            .map(|mut m| {
                // A ring frame is an Ethernet frame: at least 14 bytes.
                m.resize(m.len().max(14), 0);
                m
            })
            .collect();
        pf.send(&mut c, 1, &ring);
        assert_eq!(exc_status(&pf, n), vec![0b11; n as usize]);
        assert_eq!(c.vxlan().exception.refused - before, n as u64);
        assert_eq!(fn_stat(&c, 0, FnStat::TxDrops), n as u64);
        assert_eq!(c.vxlan().exception.from_pf, 0);
        assert!(c.uplink_mut().take_sent().is_empty());
        assert_eq!(c.vxlan().tables.macs().len(), 0);
        // A valid message still works afterwards.
        let add = message(ExceptionHeader::add(VNI, FAR, PEER), &[]);
        pf.send(&mut c, 1, &[add, good]);
        assert_eq!(exc_status(&pf, 2), vec![1, 1]);
        assert_eq!(c.uplink_mut().take_sent().len(), 1);
        assert_eq!(c.vxlan().exception.from_pf, 2);
    }

    #[test]
    fn frames_of_other_ethertypes_are_ignored_and_counted() {
        let (mut c, mut pf, _a, _b) = exc_card();
        let mut ipv6 = eth(Mac([0x33, 0x33, 0, 0, 0, 1]), EXC_MAC, None, 90);
        ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
        let mut lldp = eth(Mac([1, 0x80, 0xc2, 0, 0, 0xe]), EXC_MAC, None, 60);
        lldp[12..14].copy_from_slice(&[0x88, 0xcc]);
        // A tagged message is not a message either.
        let mut tagged = message(ExceptionHeader::add(VNI, FAR, PEER), &[]);
        tagged.splice(12..12, [0x81, 0x00, 0x00, 0x05]);
        pf.send(&mut c, 1, &[ipv6, lldp, tagged]);
        assert_eq!(exc_status(&pf, 3), vec![0b11; 3]);
        assert_eq!(c.vxlan().exception.ignored, 3);
        assert_eq!(c.vxlan().exception.refused, 0);
        assert_eq!(c.stats(None).card["exception_ignored"], 3);
        assert!(c.uplink_mut().take_sent().is_empty(), "never switched");
        assert!(c.vxlan().tables.macs().is_empty());
        assert_eq!(c.counters().datapath.switched, 0);
    }

    #[test]
    fn a_request_the_queue_cannot_take_is_lost_and_counted() {
        let mut c = card();
        c.set_uplink(Uplink::memory());
        c.set_vtep(VTEP).unwrap();
        c.set_attr(1, Some(vni()), None).unwrap();
        let mut pf = Vm::attach(&mut c, 0, 8);
        pf.start_qp(&mut c, 1, 0);
        let mut a = Vm::attach(&mut c, 1, 8);
        // No receive buffer: requests wait in the packet buffer until it
        // is full, then they are lost.
        let f = eth(FAR, mac(&c, 1, 0), None, 1500);
        const SENT: u64 = 12 * 60;
        for _ in 0..12 {
            a.send(&mut c, 0, &vec![f.clone(); 60]);
        }
        let per_buffer = (crate::queue::RX_BUFFER_BYTES / (f.len() + FRAME_OFFSET)) as u64;
        assert!(per_buffer < SENT);
        let ex = c.vxlan().exception;
        assert_eq!(ex.to_pf, per_buffer);
        assert_eq!(ex.lost, SENT - per_buffer);
        assert_eq!(c.vxlan().counters.requests, SENT);
        assert_eq!(fn_stat(&c, 0, FnStat::RxDrops), SENT - per_buffer);
        assert_eq!(rd(&mut c, 0, qp_reg(1, 0x60)), (SENT - per_buffer) as u32);
        assert!(requests(&mut c).is_empty(), "one host: lost, not an event");
        // Buffers posted: what waited arrives, in order.
        pf.post(&mut c, 1, 63);
        let got = pf.received(1);
        assert_eq!(got.len(), 63);
        assert!(got
            .iter()
            .all(|m| ExceptionHeader::parse(m).unwrap().0.ty == MsgType::Miss));
    }

    #[test]
    fn the_exception_queue_pair_is_quiesced_and_resumed_as_any() {
        let (mut c, mut pf, mut a, _b) = exc_card();
        let q = c.quiesce(Some("pf")).unwrap();
        assert_eq!(q[0].contexts_written, 4, "both queue pairs of the PF");
        let f = eth(FAR, mac(&c, 1, 0), None, 100);
        a.send(&mut c, 0, std::slice::from_ref(&f));
        assert!(pf.received(1).is_empty(), "nothing written while quiesced");
        assert_eq!(c.vxlan().exception.to_pf, 1, "held in the packet buffer");
        let msg = message(ExceptionHeader::add(VNI, FAR, PEER), &[]);
        pf.send(&mut c, 1, std::slice::from_ref(&msg));
        assert!(
            c.vxlan().tables.macs().is_empty(),
            "not taken while quiesced"
        );
        c.resume(Some("pf")).unwrap();
        assert_eq!(pf.received(1).len(), 1);
        assert_eq!(c.vxlan().tables.macs().len(), 1);
        // A reset of the PF stops it: requests are events again.
        wr(&mut c, 0, Reg::Ctrl as u64, 1);
        assert_eq!(c.exception_port(), None);
        let g = eth(Mac([2, 0, 0, 0, 0, 0x42]), mac(&c, 1, 0), None, 60);
        a.send(&mut c, 0, &[g]);
        assert_eq!(requests(&mut c).len(), 1);
    }
}
