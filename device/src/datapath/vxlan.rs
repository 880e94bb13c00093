//! The card's VxLAN data path (docs/vxlan.md, "TX" and "RX"): a VxLAN VF's
//! frame that is not for a local vNIC of its VNI is looked up in the
//! tables and encapsulated out of the uplink, or handed to the host as a
//! `vxlan-miss` request; a VxLAN frame from the uplink is decapsulated and
//! delivered if the tables vouch for its source, or punted to the host.
//!
//! The frame is the sender's on TX and the inner frame on RX.
//!
//! Requests go to the PF's exception queue pair while its receive queue
//! runs, else to control subscribers as events (`super::exception`).

use std::time::Instant;

use log::debug;

use super::{rx_running, Frame, Switching};
use crate::function::FunctionKind;
use crate::model::{Event, Frame as HexFrame, Mac, PuntReason, Vtep};
use crate::regs::FnStat;
use crate::switch::{FrameInfo, Port};
use crate::vxlan::exception::{self, ExceptionHeader};
use crate::vxlan::table::{Check, Remote};
use crate::vxlan::wire::{self, Decapsulated, Outer};
use crate::vxlan::{NotSent, Vni};

/// The destination MAC of the frame in `frame` (callers have parsed it).
fn dst_mac(frame: &[u8]) -> Option<Mac> {
    FrameInfo::parse(frame).map(|i| i.dst)
}

impl Switching<'_> {
    /// Sends `frame`, from vNIC `from` of a VF of segment `vni`, to the
    /// VNI's remote side: encapsulated through the tunnel its (VNI,
    /// destination MAC) entry names, or, on a miss, as a request to the
    /// host.
    pub(super) fn vxlan_out(&mut self, from: Port, vni: Vni, frame: &mut Frame, now: Instant) {
        let Some(vtep) = self.vxlan.vtep else {
            self.vxlan.counters.no_vtep += 1;
            return;
        };
        let Some(dst) = dst_mac(&frame.bytes) else {
            return;
        };
        match self.vxlan.tables.use_entry(vni, dst) {
            Some(remote) => {
                self.send_encapsulated(vtep, vni, remote, frame);
                self.functions[from.function].count(FnStat::ToUplink, 1);
            }
            None => {
                self.vxlan.counters.requests += 1;
                let function = self.functions[from.function].name().to_string();
                debug!("{function}: VNI {vni} {dst}: miss, asking the host");
                let vf = match self.functions[from.function].kind() {
                    FunctionKind::Vf(n) => n,
                    // Never: the PF's attribute is VLAN.
                    FunctionKind::Pf => exception::NO_FUNCTION,
                };
                if self.request_to_pf(&ExceptionHeader::miss(vni, vf, from.qp, vtep), frame, now) {
                    return;
                }
                self.events.push(Event::VxlanMiss {
                    vni: vni.get(),
                    function,
                    vnic: from.qp,
                    frame: HexFrame(frame.bytes.clone()),
                });
            }
        }
    }

    /// Encapsulates `frame` for `remote` and sends it out of the uplink.
    fn send_encapsulated(&mut self, vtep: Vtep, vni: Vni, remote: Remote, frame: &mut Frame) {
        let outer = Outer {
            dst_mac: remote.mac,
            src_mac: vtep.mac,
            src_ip: vtep.ip,
            dst_ip: remote.ip,
            ident: self.vxlan.next_ident(),
            vni: vni.get(),
        };
        wire::encapsulate(&outer, &frame.bytes, &mut frame.outer);
        self.uplink.send(&frame.outer, self.capture.as_mut());
        self.vxlan.counters.encapsulated += 1;
    }

    /// A missed frame the host returned, looked up again and encapsulated
    /// (`vxlan-send`, a `SEND` message).
    pub(super) fn send_returned(&mut self, vni: Vni, frame: &mut Frame) -> Result<(), NotSent> {
        let Some(vtep) = self.vxlan.vtep else {
            self.vxlan.counters.no_vtep += 1;
            return Err(NotSent::NoVtep);
        };
        let remote = dst_mac(&frame.bytes).and_then(|dst| self.vxlan.tables.use_entry(vni, dst));
        let Some(remote) = remote else {
            self.vxlan.counters.send_misses += 1;
            return Err(NotSent::Miss);
        };
        self.send_encapsulated(vtep, vni, remote, frame);
        Ok(())
    }

    /// A VxLAN frame for our VTEP arrived in `frame` (`d` says where its
    /// parts are): delivered if the tables know its inner source at the
    /// tunnel it came through, else punted to the host. `frame` is left
    /// holding the inner frame.
    pub(super) fn vxlan_in(&mut self, d: Decapsulated, frame: &mut Frame, now: Instant) {
        let vni = match Vni::new(d.vni) {
            Ok(v) if self.vxlan.segments.has_vni(v) => v,
            _ => {
                self.vxlan.counters.unknown_vni += 1;
                return;
            }
        };
        let len = d.inner.len();
        frame.bytes.copy_within(d.inner, 0);
        frame.bytes.truncate(len);
        let Some(info) = FrameInfo::parse(&frame.bytes) else {
            self.uplink.counters.rx_dropped += 1;
            return;
        };
        let from = Remote {
            ip: d.outer_src_ip,
            mac: d.outer_src_mac,
        };
        let reason = match self.vxlan.tables.check_source(vni, info.src, from) {
            Check::Known => {
                self.vxlan.counters.decapsulated += 1;
                self.deliver_in_segment(vni, frame, now);
                return;
            }
            Check::Unknown => PuntReason::Unknown,
            Check::Moved => PuntReason::Moved,
        };
        self.vxlan.counters.punts += 1;
        debug!(
            "VNI {vni} {} from {}: punted ({reason:?})",
            info.src, from.ip
        );
        if self.request_to_pf(&ExceptionHeader::punt(vni, from, reason), frame, now) {
            return;
        }
        self.events.push(Event::VxlanPunt {
            vni: vni.get(),
            outer_src_ip: from.ip,
            outer_src_mac: from.mac,
            reason,
            frame: HexFrame(frame.bytes.clone()),
        });
    }

    /// Delivers the inner frame `frame` to the local vNICs of `vni` by its
    /// destination MAC: those that receive the group (whose receive queue
    /// runs) for broadcast and multicast, the owner (own or extra address)
    /// for unicast; unknown unicast goes to the segment's promiscuous vNICs,
    /// or is dropped and counted. Returns to how many vNICs it went.
    pub(super) fn deliver_in_segment(&mut self, vni: Vni, frame: &mut Frame, now: Instant) -> u32 {
        let Some(dst) = dst_mac(&frame.bytes) else {
            self.uplink.counters.rx_dropped += 1;
            return 0;
        };
        let receivers = if dst.is_multicast() {
            self.vxlan.segments.receivers(vni, dst)
        } else if let Some(port) = self.vxlan.segments.lookup(vni, dst) {
            self.deliver(port, frame, now);
            return 1;
        } else {
            self.vxlan.segments.promiscuous(vni)
        };
        if receivers.is_empty() && !dst.is_multicast() {
            self.uplink.counters.rx_dropped += 1;
        }
        let mut n = 0;
        for port in receivers {
            if rx_running(self.functions, port) {
                self.deliver(port, frame, now);
                n += 1;
            }
        }
        n
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use super::*;
    use crate::capture::Scope;
    use crate::card::Card;
    use crate::control::api::Request;
    use crate::test_utils::guest::{card, eth, fn_stat, mac, Vm};
    use crate::uplink::Uplink;

    const VNI: u32 = 100;
    const VTEP_MAC: Mac = Mac([2, 0x76, 0x6e, 0xff, 0, 1]);
    const VTEP_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
    const PEER_MAC: Mac = Mac([2, 0x76, 0x6e, 0xff, 0, 2]);
    const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    /// A vNIC behind the peer VTEP.
    const FAR: Mac = Mac([2, 0x76, 0x6e, 0x01, 0x01, 0x00]);

    fn vni() -> Vni {
        Vni::new(VNI).unwrap()
    }

    /// A card with a memory uplink, a VTEP, vf0 (function 1) in VNI 100
    /// and vf1 (function 2) on VLANs; both attached.
    fn vxlan_card() -> (Card, Vm, Vm) {
        let mut c = card();
        c.set_uplink(Uplink::memory());
        c.set_vtep(Vtep {
            mac: VTEP_MAC,
            ip: VTEP_IP,
        })
        .unwrap();
        c.set_attr(1, Some(vni()), None).unwrap();
        let a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        c.take_events();
        (c, a, b)
    }

    fn install(c: &mut Card, mac: Mac) {
        let remote = Remote {
            ip: PEER_IP,
            mac: PEER_MAC,
        };
        c.vxlan_add(vni(), mac, remote).unwrap();
    }

    /// `inner` as the peer VTEP sends it to us.
    fn from_peer(vni: u32, inner: &[u8], src_ip: Ipv4Addr, dst_port_4789: bool) -> Vec<u8> {
        let outer = Outer {
            dst_mac: VTEP_MAC,
            src_mac: PEER_MAC,
            src_ip,
            dst_ip: VTEP_IP,
            ident: 7,
            vni,
        };
        let mut f = Vec::new();
        wire::encapsulate(&outer, inner, &mut f);
        if !dst_port_4789 {
            f[37] = 0xb6; // 4790
        }
        f
    }

    fn misses(c: &mut Card) -> Vec<Event> {
        c.take_events()
            .into_iter()
            .filter(|e| matches!(e, Event::VxlanMiss { .. } | Event::VxlanPunt { .. }))
            .collect()
    }

    #[test]
    fn a_miss_asks_the_host_and_sends_nothing_then_hits_are_encapsulated() {
        let (mut c, mut a, _b) = vxlan_card();
        let f = eth(FAR, mac(&c, 1, 0), Some(5), 100);
        a.send(&mut c, 0, std::slice::from_ref(&f));
        assert!(
            c.uplink_mut().take_sent().is_empty(),
            "nothing leaves on a miss"
        );
        assert_eq!(
            misses(&mut c),
            vec![Event::VxlanMiss {
                vni: VNI,
                function: "vf0".into(),
                vnic: 0,
                frame: HexFrame(f.clone()),
            }]
        );
        assert_eq!(c.vxlan().counters.requests, 1);
        // The host installs the entry and returns the frame (variant A).
        install(&mut c, FAR);
        assert!(c.vxlan_send(vni(), &f));
        let sent = c.uplink_mut().take_sent();
        assert_eq!(sent.len(), 1);
        let d = wire::decapsulate(&sent[0], PEER_IP).expect("VxLAN for the peer");
        assert_eq!(d.vni, VNI);
        assert_eq!(&sent[0][d.inner], &f[..], "inner frame and its tag intact");
        assert_eq!(&sent[0][..12], &[PEER_MAC.0, VTEP_MAC.0].concat()[..]);
        // Later frames need no host.
        a.send(&mut c, 0, &[f.clone(), f.clone()]);
        assert_eq!(c.uplink_mut().take_sent().len(), 2);
        assert!(misses(&mut c).is_empty());
        assert_eq!(c.vxlan().tables.macs()[0].uses, 3);
        assert_eq!(c.vxlan().counters.encapsulated, 3);
        assert_eq!(fn_stat(&c, 1, FnStat::ToUplink), 2);
        assert_eq!(fn_stat(&c, 1, FnStat::TxDrops), 0);
    }

    #[test]
    fn vxlan_send_that_misses_again_is_dropped_without_a_new_request() {
        let (mut c, _a, _b) = vxlan_card();
        let f = eth(FAR, mac(&c, 1, 0), None, 60);
        assert!(!c.vxlan_send(vni(), &f));
        assert_eq!(c.vxlan().counters.send_misses, 1);
        assert_eq!(c.vxlan().counters.requests, 0);
        assert!(c.take_events().is_empty());
        assert!(c.uplink_mut().take_sent().is_empty());
    }

    #[test]
    fn same_vni_vnics_switch_locally_and_floods_also_go_remote() {
        let (mut c, mut a, _b) = vxlan_card();
        let (a0, a1) = (mac(&c, 1, 0), mac(&c, 1, 1));
        let f = eth(a1, a0, None, 80);
        a.send(&mut c, 0, std::slice::from_ref(&f));
        assert_eq!(a.received(1), vec![f.clone()], "local, never encapsulated");
        assert!(c.uplink_mut().take_sent().is_empty());
        assert!(misses(&mut c).is_empty());
        // A broadcast reaches the local vNIC and asks for the remote side.
        let bc = eth(Mac::BROADCAST, a0, None, 80);
        a.send(&mut c, 0, std::slice::from_ref(&bc));
        assert_eq!(a.received(1).len(), 2);
        assert_eq!(misses(&mut c).len(), 1);
        install(&mut c, Mac::BROADCAST);
        a.send(&mut c, 0, std::slice::from_ref(&bc));
        assert_eq!(a.received(1).len(), 3);
        assert_eq!(
            c.uplink_mut().take_sent().len(),
            1,
            "flooded to the remote VTEP"
        );
    }

    #[test]
    fn vlan_and_vni_segments_never_see_each_others_frames() {
        let (mut c, mut a, mut b) = vxlan_card();
        install(&mut c, Mac::BROADCAST);
        let bc = eth(Mac::BROADCAST, mac(&c, 2, 0), None, 80);
        b.send(&mut c, 0, std::slice::from_ref(&bc));
        assert!(a.received(0).is_empty() && a.received(1).is_empty());
        assert_eq!(b.received(1), vec![bc.clone()]);
        let sent = c.uplink_mut().take_sent();
        assert_eq!(sent, vec![bc], "VLAN floods go out as they are");
        // A VLAN VF's frame to a MAC the VxLAN tables know is never
        // encapsulated.
        install(&mut c, FAR);
        let f = eth(FAR, mac(&c, 2, 0), None, 80);
        b.send(&mut c, 0, std::slice::from_ref(&f));
        assert_eq!(c.uplink_mut().take_sent(), vec![f]);
        assert_eq!(c.vxlan().counters.encapsulated, 0);
        // And the VxLAN VF's broadcast does not reach the VLAN VF.
        let bc = eth(Mac::BROADCAST, mac(&c, 1, 0), None, 80);
        a.send(&mut c, 0, &[bc]);
        assert_eq!(b.received(0).len(), 0);
        assert_eq!(b.received(1).len(), 1);
        // A VLAN VF's frame to a VxLAN vNIC's MAC does not reach it either.
        let f = eth(mac(&c, 1, 0), mac(&c, 2, 0), None, 80);
        b.send(&mut c, 0, &[f]);
        assert!(a.received(0).is_empty());
    }

    #[test]
    fn two_vnis_never_see_each_others_frames_either_way() {
        let (mut c, mut a, mut b) = vxlan_card();
        let other = Vni::new(VNI + 1).unwrap();
        c.set_attr(2, Some(other), None).unwrap();
        install(&mut c, Mac::BROADCAST);
        let (a0, b0) = (mac(&c, 1, 0), mac(&c, 2, 0));
        // Unicast to the other VNI's vNIC: a miss in the sender's own VNI.
        a.send(&mut c, 0, &[eth(b0, a0, None, 80)]);
        // Broadcasts: flooded in the sender's VNI only.
        a.send(&mut c, 0, &[eth(Mac::BROADCAST, a0, None, 80)]);
        b.send(&mut c, 0, &[eth(Mac::BROADCAST, b0, None, 80)]);
        // Each broadcast reached the sender's other vNIC, in its own VNI.
        assert_eq!(a.received(1).len(), 1);
        assert_eq!(b.received(1).len(), 1);
        assert!(b.received(0).is_empty(), "VNI 100 reached VNI 101");
        assert!(a.received(0).is_empty(), "VNI 101 reached VNI 100");
        assert!(a.received(1).iter().all(|f| f[6..12] == a0.0));
        let missed: Vec<u32> = misses(&mut c)
            .into_iter()
            .filter_map(|e| match e {
                Event::VxlanMiss { vni, .. } => Some(vni),
                _ => None,
            })
            .collect();
        assert!(missed.contains(&VNI), "{missed:?}");
        // From the wire: VNI 100 frames for the other VNI's vNIC, from a
        // known source, are not delivered to it.
        install(&mut c, FAR);
        let inner = eth(b0, FAR, None, 90);
        c.uplink_mut().inject(from_peer(VNI, &inner, PEER_IP, true));
        c.run_uplink();
        assert!(b.received(0).is_empty());
        assert_eq!(b.received(1).len(), 1, "only its own VNI's broadcast");
        assert!(a.received(0).is_empty());
    }

    #[test]
    fn known_sources_are_decapsulated_and_delivered_others_are_punted() {
        let (mut c, a, _b) = vxlan_card();
        let a0 = mac(&c, 1, 0);
        let inner = eth(a0, FAR, Some(9), 90);
        c.uplink_mut().inject(from_peer(VNI, &inner, PEER_IP, true));
        c.run_uplink();
        assert!(a.received(0).is_empty(), "nothing until the host says so");
        assert_eq!(
            misses(&mut c),
            vec![Event::VxlanPunt {
                vni: VNI,
                outer_src_ip: PEER_IP,
                outer_src_mac: PEER_MAC,
                reason: PuntReason::Unknown,
                frame: HexFrame(inner.clone()),
            }]
        );
        // The host learns and returns the frame.
        install(&mut c, FAR);
        assert_eq!(c.vxlan_deliver(vni(), &inner), 1);
        assert_eq!(a.received(0), vec![inner.clone()]);
        // From now on the card delivers by itself.
        c.uplink_mut().inject(from_peer(VNI, &inner, PEER_IP, true));
        c.run_uplink();
        assert_eq!(a.received(0).len(), 2);
        assert_eq!(c.vxlan().counters.decapsulated, 1);
        assert_eq!(c.vxlan().tables.macs()[0].uses, 1);
        // The same MAC behind another VTEP has moved: punted.
        let elsewhere = Ipv4Addr::new(10, 1, 0, 3);
        c.uplink_mut()
            .inject(from_peer(VNI, &inner, elsewhere, true));
        c.run_uplink();
        let e = misses(&mut c);
        assert!(
            matches!(&e[..], [Event::VxlanPunt { reason: PuntReason::Moved, outer_src_ip, .. }] if *outer_src_ip == elsewhere),
            "{e:?}"
        );
        assert_eq!(a.received(0).len(), 2);
        assert_eq!(c.vxlan().counters.punts, 2);
    }

    #[test]
    fn unknown_vnis_other_udp_and_unknown_inner_unicast_are_dropped() {
        let (mut c, a, b) = vxlan_card();
        install(&mut c, FAR);
        let a0 = mac(&c, 1, 0);
        let inner = eth(a0, FAR, None, 90);
        c.uplink_mut()
            .inject(from_peer(VNI + 1, &inner, PEER_IP, true));
        c.run_uplink();
        assert_eq!(c.vxlan().counters.unknown_vni, 1);
        // UDP to port 4790 is not VxLAN: switched as any frame, and the
        // VTEP's MAC is nobody's here.
        c.uplink_mut()
            .inject(from_peer(VNI, &inner, PEER_IP, false));
        c.run_uplink();
        assert_eq!(c.uplink().counters.rx_dropped, 1);
        assert_eq!(c.vxlan().counters.decapsulated, 0);
        assert_eq!(c.vxlan().counters.punts, 0);
        // Known source, unknown inner destination.
        let stray = eth(Mac([2, 0, 0, 0, 0, 0x42]), FAR, None, 90);
        c.uplink_mut().inject(from_peer(VNI, &stray, PEER_IP, true));
        c.run_uplink();
        assert_eq!(c.vxlan().counters.decapsulated, 1);
        assert_eq!(c.uplink().counters.rx_dropped, 2);
        assert!(a.received(0).is_empty() && b.received(0).is_empty());
        assert_eq!(c.uplink().counters.rx_frames, 3);
        assert!(
            c.uplink_mut().take_sent().is_empty(),
            "nothing goes back out"
        );
    }

    #[test]
    fn without_a_vtep_nothing_goes_out_and_nothing_is_vxlan() {
        let mut c = card();
        c.set_uplink(Uplink::memory());
        c.set_attr(1, Some(vni()), None).unwrap();
        let mut a = Vm::attach(&mut c, 1, 8);
        let f = eth(FAR, mac(&c, 1, 0), None, 60);
        a.send(&mut c, 0, &[f]);
        assert_eq!(c.vxlan().counters.no_vtep, 1);
        assert_eq!(c.vxlan().counters.requests, 0);
        assert!(c.uplink_mut().take_sent().is_empty());
    }

    #[test]
    fn every_truncated_or_garbled_outer_frame_is_survived() {
        let (mut c, a, _b) = vxlan_card();
        install(&mut c, FAR);
        // 250 bytes, so the 500 frames below take two turns.
        let inner = eth(mac(&c, 1, 0), FAR, None, 200);
        let good = from_peer(VNI, &inner, PEER_IP, true);
        for n in 0..good.len() {
            c.uplink_mut().inject(good[..n].to_vec());
        }
        for at in 0..good.len() {
            let mut f = good.clone();
            f[at] ^= 0xff;
            c.uplink_mut().inject(f);
        }
        // More than one turn's budget: the card says it has more to do.
        c.run_uplink();
        assert!(c.busy());
        while c.busy() {
            c.run_uplink();
        }
        assert_eq!(
            c.uplink().counters.rx_frames,
            2 * good.len() as u64,
            "every frame read"
        );
        // Corrupting bytes of the inner frame (after the outer headers)
        // leaves valid VxLAN: some of those are delivered or punted.
        assert!(a.received(0).len() <= good.len());
    }

    #[test]
    fn an_uplink_capture_records_outer_frames_both_ways() {
        let (mut c, mut a, _b) = vxlan_card();
        install(&mut c, FAR);
        let dir = std::env::temp_dir().join(format!("vnic-vx-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("u.pcap");
        c.capture_start(path.clone(), Scope::Uplink).unwrap();
        let out = eth(FAR, mac(&c, 1, 0), None, 70);
        a.send(&mut c, 0, std::slice::from_ref(&out));
        let incoming = from_peer(VNI, &eth(mac(&c, 1, 0), FAR, None, 70), PEER_IP, true);
        c.uplink_mut().inject(incoming.clone());
        c.run_uplink();
        assert_eq!(c.capture_stop().unwrap().frames, 2);
        let sent = c.uplink_mut().take_sent();
        let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let frames: Vec<Vec<u8>> =
            std::iter::from_fn(|| r.next_packet().map(|p| p.unwrap().data.to_vec())).collect();
        assert_eq!(frames, vec![sent[0].clone(), incoming]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn req(c: &mut Card, json: &str) -> Result<serde_json::Value, String> {
        let r: Request = serde_json::from_str(json).expect("request parses");
        c.handle(r).map_err(|e| e.to_string())
    }

    #[test]
    fn attributes_move_vnics_and_vnis_are_unique_per_vf() {
        let mut c = card();
        let p = Port { function: 1, qp: 0 };
        let m = mac(&c, 1, 0);
        req(&mut c, r#"{"op":"set-attr","function":"vf0","vni":100}"#).unwrap();
        assert_eq!(c.switch().lookup(m, 0), None, "off the VLAN switch");
        assert_eq!(c.vxlan().segments.lookup(vni(), m), Some(p));
        assert_eq!(c.function_info(1).vni, Some(100));
        for (bad, why) in [
            (r#""function":"vf1","vni":100"#, "already vf0's"),
            (r#""function":"vf1","vni":0"#, "VNI 0 outside"),
            (r#""function":"vf1","vni":16777216"#, "outside 1..=16777215"),
            (r#""function":"pf","vni":5"#, "the PF's attribute is VLAN"),
            (
                r#""function":"vf1","vni":5,"vlan":3"#,
                "port VLAN goes with",
            ),
            (r#""function":"vf1","vni":null,"vlan":4095"#, "VLAN 4095"),
        ] {
            let e = req(&mut c, &format!(r#"{{"op":"set-attr",{bad}}}"#)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        // The same VNI again changes nothing.
        req(&mut c, r#"{"op":"set-attr","function":"vf0","vni":100}"#).unwrap();
        // More vNICs join the segment; a MAC change moves there.
        req(&mut c, r#"{"op":"set-vnics","function":"vf0","count":3}"#).unwrap();
        assert_eq!(c.vxlan().segments.members(vni()).len(), 3);
        req(
            &mut c,
            r#"{"op":"set-vnic","function":"vf0","vnic":2,"mac":"02:00:00:00:00:33","vlan":7}"#,
        )
        .unwrap();
        let new = Mac([2, 0, 0, 0, 0, 0x33]);
        assert!(c.vxlan().segments.lookup(vni(), new).is_some());
        assert_eq!(c.switch().lookup(new, 7), None);
        // Back to VLAN with a port VLAN for every vNIC.
        req(
            &mut c,
            r#"{"op":"set-attr","function":"vf0","vni":null,"vlan":12}"#,
        )
        .unwrap();
        assert_eq!(c.switch().lookup(m, 12), Some(p));
        assert_eq!(
            c.switch().lookup(new, 12),
            Some(Port { function: 1, qp: 2 })
        );
        assert!(!c.vxlan().segments.has_vni(vni()));
        assert_eq!(c.function_info(1).vni, None);
        // VLAN -> VLAN with an ID sets the port VLANs only.
        req(
            &mut c,
            r#"{"op":"set-attr","function":"vf0","vni":null,"vlan":0}"#,
        )
        .unwrap();
        assert_eq!(c.switch().lookup(m, 0), Some(p));
    }

    #[test]
    fn a_disabled_vf_given_a_vni_joins_the_segment_when_enabled() {
        let mut c = card();
        c.set_num_vfs(1).unwrap();
        c.set_attr(2, Some(vni()), None).unwrap();
        assert!(!c.vxlan().segments.has_vni(vni()));
        c.set_num_vfs(4).unwrap();
        let m = mac(&c, 2, 1);
        assert_eq!(
            c.vxlan().segments.lookup(vni(), m),
            Some(Port { function: 2, qp: 1 })
        );
        assert_eq!(c.switch().lookup(m, 0), None);
        c.set_num_vfs(1).unwrap();
        assert!(!c.vxlan().segments.has_vni(vni()), "disabled VFs leave it");
    }

    #[test]
    fn going_back_to_vlan_is_refused_while_an_address_is_taken_there() {
        let mut c = card();
        req(&mut c, r#"{"op":"set-attr","function":"vf0","vni":100}"#).unwrap();
        let m = mac(&c, 1, 0);
        req(
            &mut c,
            &format!(r#"{{"op":"fdb-add","mac":"{m}","function":"vf1","vnic":0}}"#),
        )
        .unwrap();
        let e = req(&mut c, r#"{"op":"set-attr","function":"vf0","vni":null}"#).unwrap_err();
        assert!(e.contains("already belongs"), "{e}");
        assert_eq!(c.vxlan().segments.vni_of(1), Some(vni()), "unchanged");
    }

    #[test]
    fn vxlan_ops_list_add_delete_and_evict_with_events() {
        let mut c = Card::new(crate::card::CardConfig {
            vxlan_capacity: 2,
            ..Default::default()
        })
        .unwrap();
        let e = req(&mut c, r#"{"op":"vxlan-list"}"#).unwrap();
        assert_eq!(
            e,
            serde_json::json!({"vtep": null, "capacity": 2, "tunnels": [], "macs": []})
        );
        let add = |c: &mut Card, n: u8, ip: u8| {
            req(
                c,
                &format!(
                    r#"{{"op":"vxlan-add","vni":5,"mac":"02:00:00:00:00:0{n}","remote_ip":"10.0.0.{ip}","remote_mac":"02:ee:00:00:00:0{ip}"}}"#
                ),
            )
        };
        assert_eq!(
            add(&mut c, 1, 1).unwrap(),
            serde_json::json!({"tunnel": 0, "evicted": []})
        );
        assert_eq!(add(&mut c, 2, 1).unwrap()["tunnel"], 0, "shared");
        c.vxlan_mut()
            .tables
            .use_entry(vni5(), Mac([2, 0, 0, 0, 0, 1]));
        let r = add(&mut c, 3, 2).unwrap();
        assert_eq!(
            r,
            serde_json::json!({"tunnel": 1, "evicted": [{"vni": 5, "mac": "02:00:00:00:00:02", "tunnel": 0}]})
        );
        assert!(c.take_events().contains(&Event::VxlanEvicted {
            vni: 5,
            mac: Mac([2, 0, 0, 0, 0, 2]),
            tunnel: 0
        }));
        assert_eq!(c.stats(None).card["vxlan_evictions"], 1);
        assert_eq!(c.stats(None).card["vxlan_macs"], 2);
        req(
            &mut c,
            r#"{"op":"vxlan-del","vni":5,"mac":"02:00:00:00:00:03"}"#,
        )
        .unwrap();
        let e = req(
            &mut c,
            r#"{"op":"vxlan-del","vni":5,"mac":"02:00:00:00:00:03"}"#,
        )
        .unwrap_err();
        assert!(e.contains("no VxLAN entry"), "{e}");
        for (bad, why) in [
            (
                r#""vni":5,"mac":"02:00:00:00:00:04","remote_ip":"0.0.0.0","remote_mac":"02:ee:00:00:00:01""#,
                "not a unicast IPv4",
            ),
            (
                r#""vni":5,"mac":"02:00:00:00:00:04","remote_ip":"10.0.0.1","remote_mac":"ff:ff:ff:ff:ff:ff""#,
                "usable unicast MAC",
            ),
            (
                r#""vni":0,"mac":"02:00:00:00:00:04","remote_ip":"10.0.0.1","remote_mac":"02:ee:00:00:00:01""#,
                "VNI 0",
            ),
        ] {
            let e = req(&mut c, &format!(r#"{{"op":"vxlan-add",{bad}}}"#)).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
        let e = req(
            &mut c,
            r#"{"op":"set-vtep","mac":"02:00:00:00:00:01","ip":"224.0.0.1"}"#,
        )
        .unwrap_err();
        assert!(e.contains("not a unicast"), "{e}");
        let e = req(&mut c, r#"{"op":"uplink-send","frame":"0011"}"#).unwrap_err();
        assert!(e.contains("shorter than an Ethernet header"), "{e}");
        let e = req(&mut c, r#"{"op":"vxlan-send","vni":5,"frame":"00"}"#).unwrap_err();
        assert!(e.contains("shorter"), "{e}");
        let frame = "ff".repeat(14);
        let r = req(
            &mut c,
            &format!(r#"{{"op":"vxlan-send","vni":5,"frame":"{frame}"}}"#),
        )
        .unwrap();
        assert_eq!(r, serde_json::json!({"sent": false}), "no VTEP");
        let r = req(
            &mut c,
            &format!(r#"{{"op":"vxlan-deliver","vni":5,"frame":"{frame}"}}"#),
        )
        .unwrap();
        assert_eq!(r, serde_json::json!({"delivered": 0}));
        req(
            &mut c,
            &format!(r#"{{"op":"uplink-send","frame":"{frame}"}}"#),
        )
        .unwrap();
        assert_eq!(c.stats(None).card["uplink_tx_frames"], 1);
    }

    fn vni5() -> Vni {
        Vni::new(5).unwrap()
    }

    #[test]
    fn vtep_and_vnis_are_exported_and_applied() {
        let mut c = card();
        c.set_vtep(Vtep {
            mac: VTEP_MAC,
            ip: VTEP_IP,
        })
        .unwrap();
        c.set_attr(2, Some(vni()), None).unwrap();
        let file = c.export();
        let text = serde_json::to_string(&file).unwrap();
        assert!(
            text.contains(r#""vtep":{"mac":"02:76:6e:ff:00:01","ip":"10.1.0.1"}"#),
            "{text}"
        );
        assert!(text.contains(r#""name":"vf1","#), "{text}");
        assert_eq!(file.functions[2].vni, Some(Some(VNI)));
        assert_eq!(file.functions[1].vni, Some(None), "VLAN VFs say null");
        assert_eq!(file.functions[0].vni, None, "the PF says nothing");
        // A fresh card takes it all.
        let mut d = card();
        d.apply(&file).unwrap();
        assert_eq!(d.vxlan().vtep, c.vxlan().vtep);
        assert_eq!(d.vxlan().segments.vni_of(2), Some(vni()));
        // Swapped between VFs in one file (a remap), it still applies.
        let mut swapped = file.clone();
        swapped.functions[1].vni = Some(Some(VNI));
        swapped.functions[2].vni = Some(None);
        d.apply(&swapped).unwrap();
        assert_eq!(d.vxlan().segments.vni_of(1), Some(vni()));
        assert_eq!(d.vxlan().segments.vni_of(2), None);
        // Two VFs with one VNI, or the PF with one, are refused whole.
        let mut twice = file.clone();
        twice.functions[1].vni = Some(Some(VNI));
        let e = d.apply(&twice).unwrap_err().to_string();
        assert!(e.contains("VNI 100 is given to vf0 and vf1"), "{e}");
        let mut pf = file;
        pf.functions[0].vni = Some(Some(7));
        assert!(d.apply(&pf).is_err());
    }
}
