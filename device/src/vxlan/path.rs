//! The card's VxLAN data path (docs/vxlan.md, "TX" and "RX"): a VxLAN VF's
//! frame that is not for a local vNIC of its VNI is looked up in the
//! tables and encapsulated out of the uplink, or handed to the host as a
//! `vxlan-miss` request; a VxLAN frame from the uplink is decapsulated and
//! delivered if the tables vouch for its source, or punted to the host.
//!
//! Everything here works on the card's `scratch` frame, as the rest of the
//! data path does: the sender's frame on TX, the inner frame on RX.

use std::time::Instant;

use log::debug;

use super::table::{Check, Remote};
use super::wire::{self, Decapsulated, Outer};
use super::Vni;
use crate::card::Card;
use crate::control::api::{Event, Frame, PuntReason, Vtep};
use crate::regs::FnStat;
use crate::switch::{FrameInfo, Mac, Port};

/// The destination MAC of the frame in `frame` (callers have parsed it).
fn dst_mac(frame: &[u8]) -> Option<Mac> {
    FrameInfo::parse(frame).map(|i| i.dst)
}

impl Card {
    /// Sends the frame in `scratch`, from vNIC `from` of a VF of segment
    /// `vni`, to the VNI's remote side: encapsulated through the tunnel its
    /// (VNI, destination MAC) entry names, or, on a miss, as a request to
    /// the host.
    pub(crate) fn vxlan_out(&mut self, from: Port, vni: Vni) {
        let Some(vtep) = self.vxlan.vtep else {
            self.vxlan.counters.no_vtep += 1;
            return;
        };
        let Some(dst) = dst_mac(&self.scratch) else {
            return;
        };
        match self.vxlan.tables.use_entry(vni, dst) {
            Some(remote) => {
                self.send_encapsulated(vtep, vni, remote);
                self.functions[from.function]
                    .lanes()
                    .counters
                    .add(FnStat::ToUplink, 1);
            }
            None => {
                self.vxlan.counters.requests += 1;
                let function = self.functions[from.function].name().to_string();
                debug!("{function}: VNI {vni} {dst}: miss, asking the host");
                self.events.push(Event::VxlanMiss {
                    vni: vni.get(),
                    function,
                    vnic: from.qp,
                    frame: Frame(self.scratch.clone()),
                });
            }
        }
    }

    /// Encapsulates `scratch` for `remote` and sends it out of the uplink.
    fn send_encapsulated(&mut self, vtep: Vtep, vni: Vni, remote: Remote) {
        let outer = Outer {
            dst_mac: remote.mac,
            src_mac: vtep.mac,
            src_ip: vtep.ip,
            dst_ip: remote.ip,
            ident: self.vxlan.next_ident(),
            vni: vni.get(),
        };
        wire::encapsulate(&outer, &self.scratch, &mut self.vxlan.outer);
        self.uplink.send(&self.vxlan.outer, self.capture.as_mut());
        self.vxlan.counters.encapsulated += 1;
    }

    /// `vxlan-send`: the host returns a frame that missed; the card looks
    /// it up again. A second miss is dropped and counted, without a new
    /// request. Returns whether the frame was sent.
    pub fn vxlan_send(&mut self, vni: Vni, frame: &[u8]) -> bool {
        self.scratch.clear();
        self.scratch.extend_from_slice(frame);
        let Some(vtep) = self.vxlan.vtep else {
            self.vxlan.counters.no_vtep += 1;
            return false;
        };
        let remote = dst_mac(frame).and_then(|dst| self.vxlan.tables.use_entry(vni, dst));
        let Some(remote) = remote else {
            self.vxlan.counters.send_misses += 1;
            return false;
        };
        self.send_encapsulated(vtep, vni, remote);
        self.finish_turn();
        true
    }

    /// `vxlan-deliver`: the host returns a punted (inner) frame, delivered
    /// to the local vNICs of `vni`. Returns to how many.
    pub fn vxlan_deliver(&mut self, vni: Vni, frame: &[u8]) -> u32 {
        self.scratch.clear();
        self.scratch.extend_from_slice(frame);
        let n = self.deliver_in_segment(vni, Instant::now());
        self.finish_turn();
        n
    }

    /// `uplink-send`: a frame the host built whole, out of the uplink.
    pub fn uplink_send(&mut self, frame: &[u8]) {
        self.uplink.send(frame, self.capture.as_mut());
        self.finish_turn();
    }

    /// A VxLAN frame for our VTEP arrived in `scratch` (`d` says where its
    /// parts are): delivered if the tables know its inner source at the
    /// tunnel it came through, else punted to the host.
    pub(crate) fn vxlan_in(&mut self, d: Decapsulated, now: Instant) {
        let vni = match Vni::new(d.vni) {
            Ok(v) if self.vxlan.segments.has_vni(v) => v,
            _ => {
                self.vxlan.counters.unknown_vni += 1;
                return;
            }
        };
        let len = d.inner.len();
        self.scratch.copy_within(d.inner, 0);
        self.scratch.truncate(len);
        let Some(info) = FrameInfo::parse(&self.scratch) else {
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
                self.deliver_in_segment(vni, now);
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
        self.events.push(Event::VxlanPunt {
            vni: vni.get(),
            outer_src_ip: from.ip,
            outer_src_mac: from.mac,
            reason,
            frame: Frame(self.scratch.clone()),
        });
    }

    /// Delivers the inner frame in `scratch` to the local vNICs of `vni`
    /// by its destination MAC: all of them (whose receive queue runs) for
    /// broadcast and multicast, the owner for unicast; unknown unicast is
    /// dropped and counted. Returns to how many vNICs it went.
    fn deliver_in_segment(&mut self, vni: Vni, now: Instant) -> u32 {
        let Some(dst) = dst_mac(&self.scratch) else {
            self.uplink.counters.rx_dropped += 1;
            return 0;
        };
        if dst.is_multicast() {
            let mut n = 0;
            for port in self.vxlan.segments.members(vni) {
                if self.rx_running(port) {
                    self.deliver(port, now);
                    n += 1;
                }
            }
            return n;
        }
        match self.vxlan.segments.lookup(vni, dst) {
            Some(port) => {
                self.deliver(port, now);
                1
            }
            None => {
                self.uplink.counters.rx_dropped += 1;
                0
            }
        }
    }
}
