//! The card's data path: switching frames from send queues into receive
//! queues, across functions (and so across QEMU processes), with counters
//! and interrupts (docs/datapath.md).
//!
//! It runs on the event loop's thread, after the messages that rang the
//! doorbells: each send queue gets at most [`TX_BUDGET`] frames per turn so
//! that one busy queue cannot hold up the protocol; the loop comes back for
//! the rest without blocking.
//!
//! [`Datapath`] owns what the data path keeps between calls: the buffers of
//! the frame being switched ([`Frame`]) and the turn lists (functions with
//! send work, functions held by their TX policy, contexts to write back,
//! doorbell pages to poll). It works on the card's functions, switch, VxLAN
//! tables, uplink and capture, which the card lends it for each call
//! ([`CardParts`]). Inside, the frame is an argument of every step that
//! reads it, from the send queue to the receive queues or the uplink:
//!
//! - this module: the general path (one frame at a time, every rule), the
//!   uplink's frames, timers and doorbell pages;
//! - [`fast`]: bursts between two vNICs that need none of the general
//!   path's rules;
//! - [`offload`]: frames whose offload header asks for a checksum or
//!   segmentation the receiver cannot do itself;
//! - [`vxlan`]: frames of VxLAN VFs out through the tunnels, VxLAN frames
//!   from the uplink in;
//! - [`exception`]: the PF's exception queue pair, which carries the host's
//!   side of VxLAN as messages.

mod exception;
mod fast;
mod filter;
mod offload;
mod vxlan;

pub use filter::apply_filter;

use std::time::Instant;

use log::{debug, warn};

use crate::capture::Capture;
use crate::clientlog::Cause;
use crate::fault::FrameFault;
use crate::function::{Function, SwitchOp, MISC_VECTORS};
use crate::model::{Event, Mac};
use crate::offload::request::OffloadRequest;
use crate::offload::HDR_LEN;
use crate::regs::FnStat;
use crate::ring::{Ahead, MAX_FRAME};
use crate::switch::{strip_tag, Decision, DropReason, Port, Sender, Switch, SwitchError};
use crate::uplink::{RecvOutcome, Uplink};
use crate::vxlan::segment::SegmentError;
use crate::vxlan::{wire, Vni, Vxlan};

/// Frames one send queue may switch per turn of the event loop.
pub const TX_BUDGET: usize = 256;

/// Frames read from the uplink per turn of the event loop, so that a busy
/// wire cannot starve the vfio-user clients; the loop comes back for the
/// rest without blocking.
pub const UPLINK_BUDGET: usize = 256;

/// The data path's card-wide counters (`vnicctl stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct DatapathCounters {
    /// Frames that entered the switch from send queues.
    pub switched: u64,
    /// Broadcast and multicast frames flooded.
    pub flooded: u64,
    /// Unknown unicast frames (towards the uplink).
    pub unknown_unicast: u64,
    /// Of the frames switched, those the fast path moved
    /// (docs/datapath.md, "The fast path").
    pub fast_path: u64,
}

/// What the data path works on, lent by the card for one call: its
/// functions (PF first), the switch, the VxLAN state, the uplink, the
/// capture, the counters and the events for management.
pub struct CardParts<'a> {
    pub functions: &'a mut [Function],
    pub switch: &'a mut Switch,
    pub vxlan: &'a mut Vxlan,
    pub uplink: &'a mut Uplink,
    pub capture: &'a mut Option<Capture>,
    pub counters: &'a mut DatapathCounters,
    pub events: &'a mut Vec<Event>,
}

/// The frame being switched, and the buffers the data path reuses for it
/// from frame to frame.
#[derive(Default)]
pub(crate) struct Frame {
    /// Its bytes (Ethernet header first).
    pub bytes: Vec<u8>,
    /// The offload header read with it from its send queue.
    pub header: [u8; HDR_LEN],
    /// What its offload header asks of the card (a checksum,
    /// segmentation), while it is being switched; None for other frames.
    pub offload: Option<OffloadRequest>,
    /// It, without its tag, for a port with a port VLAN.
    egress: Vec<u8>,
    /// Segments (or it checksummed) for destinations that cannot take it
    /// as it is.
    resolved: Vec<Vec<u8>>,
    /// Where segmentation builds each segment.
    segment_buf: Vec<u8>,
    /// It encapsulated, for the uplink (VxLAN).
    outer: Vec<u8>,
    /// A request to the PF's exception queue pair that carries it.
    message: Vec<u8>,
}

impl Frame {
    /// A frame of `bytes` (a host's, or one from the uplink) with nothing
    /// asked of the card.
    fn load(&mut self, bytes: &[u8]) {
        self.bytes.clear();
        self.bytes.extend_from_slice(bytes);
        self.offload = None;
    }
}

/// The data path's state between turns of the event loop.
#[derive(Default)]
struct Turns {
    /// Functions with send queues still to serve.
    pending_tx: Vec<usize>,
    /// Functions whose queue contexts changed in this turn.
    touched: Vec<usize>,
    /// Functions waiting for TX tokens, and until when.
    held: Vec<(usize, Instant)>,
    /// Functions whose doorbell page the card polls.
    page_fns: Vec<usize>,
    /// When the next poll of their pages is due.
    page_due: Option<Instant>,
    /// When they were last polled.
    page_polled: Option<Instant>,
    /// Frames may still wait on the uplink (the last turn used its whole
    /// budget).
    uplink_more: bool,
    /// Send descriptors read ahead for the queue being served.
    ahead: Ahead,
}

impl Turns {
    /// Whether function `f` waits for its TX policy's tokens.
    fn is_held(&self, f: usize) -> bool {
        self.held.iter().any(|&(h, _)| h == f)
    }
}

/// The card's data path (see the module's documentation).
pub struct Datapath {
    frame: Frame,
    turns: Turns,
    /// Whether the fast path ([`fast`]) may take frames; tests turn it off
    /// to compare it with the general path.
    fast_path: bool,
}

impl Default for Datapath {
    fn default() -> Self {
        Datapath {
            frame: Frame {
                bytes: Vec::with_capacity(MAX_FRAME),
                egress: Vec::with_capacity(MAX_FRAME),
                ..Frame::default()
            },
            turns: Turns::default(),
            fast_path: true,
        }
    }
}

impl Datapath {
    /// Turns the fast path on or off (tests compare it with the general
    /// path).
    #[cfg(test)]
    pub fn set_fast_path(&mut self, on: bool) {
        self.fast_path = on;
    }

    /// A turn of switching on the card's `parts`.
    fn switching<'a>(&'a mut self, parts: CardParts<'a>) -> (Switching<'a>, &'a mut Frame) {
        let CardParts {
            functions,
            switch,
            vxlan,
            uplink,
            capture,
            counters,
            events,
        } = parts;
        let run = Switching {
            functions,
            switch,
            vxlan,
            uplink,
            capture,
            counters,
            events,
            turns: &mut self.turns,
            fast_path: self.fast_path,
        };
        (run, &mut self.frame)
    }

    /// Carries out what a function's client asked for in its last messages:
    /// switch changes, then switching its waiting frames.
    pub fn after_io(&mut self, parts: CardParts, f: usize) {
        let (mut run, frame) = self.switching(parts);
        // Its messages may have moved its queues (a receive doorbell
        // taking frames from the packet buffer): written back this turn.
        run.touch(f);
        run.apply_switch_ops(f);
        run.watch_pages(f);
        run.queue_tx(f);
        run.run_pending(frame);
    }

    /// Carries out the switch changes function `f`'s guest asked for (or
    /// its reset did), without switching frames.
    pub fn apply_switch_ops(&mut self, parts: CardParts, f: usize) {
        self.switching(parts).0.apply_switch_ops(f);
    }

    /// Puts function `f`'s vNICs' addresses into the switch, or takes
    /// them out, as [`Function::claims_addresses`] now says.
    pub fn sync_claims(&mut self, parts: CardParts, f: usize) {
        self.switching(parts).0.sync_claims(f);
    }

    /// Puts function `f` on the list of functions to serve if its send
    /// doorbells rang, unless its TX policy holds it back for now.
    pub fn queue_tx(&mut self, parts: CardParts, f: usize) {
        self.switching(parts).0.queue_tx(f);
    }

    /// Function `f` sends nothing more for now (quiesced, disabled, its
    /// client gone): off the list of functions to serve, and no longer
    /// held by its TX policy.
    pub fn forget(&mut self, f: usize) {
        self.turns.pending_tx.retain(|&p| p != f);
        self.turns.held.retain(|&(h, _)| h != f);
    }

    /// Function `f` is off the list of functions to serve (quiesced,
    /// removed, or left without kicked queues); it stays held by its TX
    /// policy if it was.
    pub fn unqueue(&mut self, f: usize) {
        self.turns.pending_tx.retain(|&p| p != f);
    }

    /// Function `f`'s TX policy changed: it no longer waits for the old
    /// one's tokens.
    pub fn release(&mut self, f: usize) {
        self.turns.held.retain(|&(h, _)| h != f);
    }

    /// Polls the doorbell pages being watched (crate::doorbell): on every
    /// turn of the loop while any is, and at least every poll interval
    /// (the loop's timer); never when none is, so an idle card sleeps.
    pub fn poll_doorbells(&mut self, parts: CardParts, now: Instant) {
        self.switching(parts).0.poll_doorbells(now);
    }

    /// Whether frames are waiting for another turn.
    pub fn busy(&self) -> bool {
        !self.turns.pending_tx.is_empty() || self.turns.uplink_more
    }

    /// Whether frames may still wait on the uplink.
    pub fn uplink_pending(&self) -> bool {
        self.turns.uplink_more
    }

    /// Serves every function with rung send doorbells, once, within budget.
    pub fn run_pending(&mut self, parts: CardParts) {
        let (mut run, frame) = self.switching(parts);
        run.run_pending(frame);
    }

    /// Reads up to [`UPLINK_BUDGET`] frames from the uplink and switches
    /// them; if the budget ran out, [`Datapath::busy`] says so and the
    /// event loop comes back without blocking.
    pub fn run_uplink(&mut self, parts: CardParts) {
        let (mut run, frame) = self.switching(parts);
        run.run_uplink(frame);
    }

    /// The earliest moment a held-back interrupt is due, or a function
    /// held by its TX policy may send again.
    pub fn next_deadline(&self, functions: &[Function]) -> Option<Instant> {
        let irqs = functions
            .iter()
            .flat_map(|f| f.all_queue_pairs())
            .filter_map(|qp| qp.irq.deadline);
        let delayed = functions.iter().filter_map(|f| f.faults().deadline());
        // A completion waiting for a rearm the driver may store into the
        // page: the next poll after the shortest interval, whatever the
        // backed-off one says (crate::doorbell::DoorbellPage::hurry).
        let hurried = self.turns.page_polled.into_iter().flat_map(|polled| {
            self.turns
                .page_fns
                .iter()
                .filter_map(|&f| functions.get(f))
                .filter(|f| f.awaits_rearm())
                .map(move |f| polled + f.doorbell_page().policy().poll)
        });
        irqs.chain(delayed)
            .chain(self.turns.held.iter().map(|&(_, t)| t))
            .chain(self.turns.page_due)
            .chain(hurried)
            .min()
    }

    /// Fires the interrupts whose moderation interval has passed and lets
    /// functions whose TX tokens refilled send again.
    pub fn run_timers(&mut self, parts: CardParts, now: Instant) {
        self.switching(parts).0.run_timers(now);
    }

    /// `vxlan-send`: the host returns a frame that missed; the card looks
    /// it up again. A second miss is dropped and counted, without a new
    /// request. Returns whether the frame was sent.
    pub fn vxlan_send(&mut self, parts: CardParts, vni: Vni, bytes: &[u8]) -> bool {
        let (mut run, frame) = self.switching(parts);
        frame.load(bytes);
        let sent = run.send_returned(vni, frame).is_ok();
        run.finish_turn();
        sent
    }

    /// `vxlan-deliver`: the host returns a punted (inner) frame, delivered
    /// to the local vNICs of `vni`. Returns to how many.
    pub fn vxlan_deliver(&mut self, parts: CardParts, vni: Vni, bytes: &[u8]) -> u32 {
        let (mut run, frame) = self.switching(parts);
        frame.load(bytes);
        let n = run.deliver_in_segment(vni, frame, Instant::now());
        run.finish_turn();
        n
    }

    /// `uplink-send`: a frame the host built whole, out of the uplink.
    pub fn uplink_send(&mut self, parts: CardParts, bytes: &[u8]) {
        let (mut run, _) = self.switching(parts);
        run.uplink.send(bytes, run.capture.as_mut());
        run.finish_turn();
    }
}

/// Why a vNIC's MAC could not move.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MacMoveError {
    #[error(transparent)]
    Switch(#[from] SwitchError),
    #[error(transparent)]
    Segment(#[from] SegmentError),
}

/// vNIC `port`'s MAC becomes `mac` (a trusted VF's driver, or
/// management): its forwarding entries move with it, in the switch or, for
/// a VxLAN VF, in its VNI segment, and its function `func` records it. The
/// one place a vNIC's MAC changes; the caller announces it.
pub fn move_vnic_mac(
    switch: &mut Switch,
    vxlan: &mut Vxlan,
    func: &mut Function,
    port: Port,
    mac: Mac,
) -> Result<(), MacMoveError> {
    if vxlan.is_vxlan_vf(port.function) {
        if vxlan.segments.has_port(port) {
            vxlan.segments.set_mac(port, mac)?;
        }
    } else {
        switch.set_mac(port, mac)?;
    }
    func.set_vnic_mac(port.qp, mac);
    Ok(())
}

/// The PF's exception queue pair, if requests go to it now: its receive
/// queue runs (enabled, no error) and the PF's link is up.
pub fn exception_port(functions: &[Function]) -> Option<Port> {
    let qp = functions.first()?.exception_index()?;
    let port = Port { function: 0, qp };
    rx_running(functions, port).then_some(port)
}

/// Whether queue pair `port` (a vNIC, or the PF's exception queue
/// pair) can receive now: its receive queue runs and its function's
/// link is up.
fn rx_running(functions: &[Function], port: Port) -> bool {
    functions
        .get(port.function)
        .filter(|f| f.link_up() && !f.faults().removed())
        .and_then(|f| f.all_queue_pairs().get(port.qp as usize))
        .is_some_and(|qp| qp.rx.running())
}

/// What the card needs to know of a send queue for one turn, looked up
/// once: nothing on the data path changes it meanwhile (switch and VxLAN
/// changes are carried out between turns).
pub(crate) struct SendingQueue {
    pub from: Port,
    /// The PF's exception queue pair: it sends messages to the card, not
    /// frames to the switch.
    pub exception: bool,
    /// The switch's view of the sending vNIC.
    pub sender: Sender,
    /// The function is in a VNI segment (docs/vxlan.md).
    pub vxlan: bool,
}

/// What became of one frame of a send queue on the general path.
enum Step {
    /// Switched (or dropped); `fire`: interrupt the sender.
    Sent { fire: bool },
    /// Nothing pending, or the queue failed.
    Stop,
    /// The function's TX policy ran out of tokens.
    Held,
}

/// A call of the data path at work: the card's parts it borrowed and its
/// own turn state. The frame being switched is not here: every step that
/// reads it takes it as an argument.
struct Switching<'a> {
    functions: &'a mut [Function],
    switch: &'a mut Switch,
    vxlan: &'a mut Vxlan,
    uplink: &'a mut Uplink,
    capture: &'a mut Option<Capture>,
    counters: &'a mut DatapathCounters,
    events: &'a mut Vec<Event>,
    turns: &'a mut Turns,
    fast_path: bool,
}

impl Switching<'_> {
    /// Starts polling function `f`'s doorbell page if a kick asked for it.
    fn watch_pages(&mut self, f: usize) {
        let Some(func) = self.functions.get(f) else {
            return;
        };
        if func.doorbells_watched() && !self.turns.page_fns.contains(&f) {
            self.turns.page_fns.push(f);
            let due = Instant::now() + func.doorbell_page().interval();
            self.turns.page_due = Some(self.turns.page_due.map_or(due, |d| d.min(due)));
        }
    }

    fn poll_doorbells(&mut self, now: Instant) {
        if self.turns.page_fns.is_empty() {
            self.turns.page_due = None;
            return;
        }
        self.turns.page_polled = Some(now);
        let mut interval = None;
        for f in std::mem::take(&mut self.turns.page_fns) {
            let Some(func) = self.functions.get_mut(f) else {
                continue;
            };
            let watched = func.poll_doorbells(now);
            let poll = Some(func.doorbell_page().interval());
            self.apply_switch_ops(f);
            self.queue_tx(f);
            if watched {
                self.turns.page_fns.push(f);
                interval = interval.min(poll).or(poll);
            }
        }
        self.turns.page_due = interval.map(|i| now + i);
    }

    fn queue_tx(&mut self, f: usize) {
        if self.functions.get(f).is_some_and(|func| func.any_kicked())
            && !self.turns.pending_tx.contains(&f)
            && !self.turns.is_held(f)
        {
            self.turns.pending_tx.push(f);
        }
    }

    fn run_pending(&mut self, frame: &mut Frame) {
        let now = Instant::now();
        for f in std::mem::take(&mut self.turns.pending_tx) {
            if self.functions[f].faults().removed() {
                // Surprise removal: the card takes nothing from its rings.
                continue;
            }
            for q in self.tx_order(f) {
                if !self.transmit(f, q, frame, now) {
                    break;
                }
            }
            if self.functions[f].any_kicked() && !self.turns.is_held(f) {
                self.turns.pending_tx.push(f);
            }
        }
        self.finish_turn();
    }

    /// Ends a batch of frames: the capture's buffer goes to its file and
    /// the contexts that changed are written back, once: every receive
    /// context first, then every send context, then the interrupts. So a
    /// frame is recorded as received before its sender's completion is,
    /// and a driver interrupted finds both (docs/restart.md, "Crash
    /// consistency").
    fn finish_turn(&mut self) {
        if let Some(c) = self.capture {
            c.flush();
        }
        let touched = std::mem::take(&mut self.turns.touched);
        for &f in &touched {
            self.functions[f].sync_rx_contexts();
        }
        for &f in &touched {
            self.functions[f].sync_tx_contexts();
        }
        for &f in &touched {
            self.functions[f].sync_contexts();
        }
    }

    /// See [`Datapath::sync_claims`]. A released vNIC keeps its port
    /// (VLAN memberships, static entries): only its own and joined
    /// entries leave, so frames for its addresses go to the uplink.
    fn sync_claims(&mut self, f: usize) {
        let Some(func) = self.functions.get_mut(f) else {
            return;
        };
        let claim = func.claims_addresses();
        if claim != func.addresses_released() {
            return;
        }
        let ports = (0..func.qp_max() as u16)
            .map(|qp| Port { function: f, qp })
            .filter(|p| self.switch.has_port(*p));
        let ports: Vec<Port> = ports.collect();
        for &port in &ports {
            if !claim {
                self.switch.release(port);
            } else if let Err(e) = self.switch.reclaim(port) {
                let what = format_args!("vNIC {}'s address not taken back: {e}", port.qp);
                func.log(Cause::GuestError, what);
            }
        }
        func.set_addresses_released(!claim);
        let n = ports.len();
        let what = if claim {
            format_args!("its {n} vNICs' addresses are in the switch again")
        } else {
            format_args!(
                "its {n} vNICs' addresses left the switch (a pending VCT entry or a \
                 switchover: frames for them go to the uplink)"
            )
        };
        func.log(Cause::Setup, what);
    }

    fn apply_switch_ops(&mut self, f: usize) {
        let Some(func) = self.functions.get_mut(f) else {
            return;
        };
        let ops = func.take_switch_ops();
        let nqp = func.queue_pairs().len() as u16;
        // In a VNI segment the guest's VLANs are its own business: its tags
        // travel inside the VxLAN payload, so joins change nothing.
        let vxlan = self.vxlan.is_vxlan_vf(f);
        for op in ops {
            let result = match op {
                SwitchOp::Join { .. } | SwitchOp::Leave { .. } | SwitchOp::LeaveAll if vxlan => {
                    Ok(())
                }
                SwitchOp::Join { qp, vlan } if vlan != 0 => self
                    .switch
                    .join(Port { function: f, qp }, vlan)
                    .map_err(|e| e.to_string()),
                SwitchOp::Leave { qp, vlan } => self
                    .switch
                    .leave(Port { function: f, qp }, vlan)
                    .map_err(|e| e.to_string()),
                SwitchOp::Join { .. } => Ok(()),
                SwitchOp::LeaveAll => {
                    self.switch.clear_filters(f);
                    self.vxlan.segments.clear_filters(f);
                    for qp in 0..nqp {
                        self.switch.leave_all(Port { function: f, qp });
                    }
                    Ok(())
                }
                SwitchOp::SetMac { qp, mac } => {
                    let result = self.guest_set_mac(f, qp, mac);
                    if result.is_err() {
                        self.functions[f].mac_taken(qp);
                    }
                    result
                }
                SwitchOp::Filter { qp } => apply_filter(
                    self.switch,
                    self.vxlan,
                    &mut self.functions[f],
                    Port { function: f, qp },
                ),
            };
            if let Err(e) = result {
                let what = format_args!("{op:?} refused: {e}");
                self.functions[f].log(Cause::GuestError, what);
            }
        }
    }

    /// A trusted VF's driver writes vNIC `qp`'s MAC: its entries move
    /// with it ([`move_vnic_mac`]), and management hears of it.
    fn guest_set_mac(&mut self, f: usize, qp: u16, mac: Mac) -> Result<(), String> {
        let port = Port { function: f, qp };
        let func = &mut self.functions[f];
        move_vnic_mac(self.switch, self.vxlan, func, port, mac).map_err(|e| e.to_string())?;
        let what = format_args!("the trusted VF set vNIC {qp}'s MAC to {mac}");
        func.log(Cause::Setup, what);
        let vlan = func.policy().vnics[usize::from(qp)].vlan;
        self.events.push(Event::VnicChanged {
            function: func.name().to_string(),
            vnic: qp,
            mac,
            vlan,
        });
        Ok(())
    }

    /// The kicked send queues of function `f`, starting with the one whose
    /// turn it is (round-robin, so vNICs sharing a TX policy share it).
    fn tx_order(&mut self, f: usize) -> Vec<u16> {
        let mut qs = self.functions[f].kicked();
        if qs.len() > 1 {
            let policy = self.functions[f].policy_mut();
            let start = policy.tx_next % qs.len();
            policy.tx_next = policy.tx_next.wrapping_add(1);
            qs.rotate_left(start);
        }
        qs
    }

    /// Switches up to [`TX_BUDGET`] frames of send queue `q` of function
    /// `f`: bursts on the fast path where it takes them, the others one by
    /// one. Returns false if the function's TX policy ran out of tokens
    /// (the function is then held until they refill).
    fn transmit(&mut self, f: usize, q: u16, frame: &mut Frame, now: Instant) -> bool {
        let from = Port { function: f, qp: q };
        let turn = SendingQueue {
            from,
            exception: self.functions[f].exception_index() == Some(q),
            sender: self.switch.sender(from),
            vxlan: self.vxlan.is_vxlan_vf(f),
        };
        let fast = !turn.exception && self.fast_sender(&turn);
        self.turns.ahead.clear();
        let mut backoff = self.functions[f].fast_backoff(q);
        backoff.new_turn();
        let (mut fire, mut allowed, mut left) = (false, true, TX_BUDGET);
        while left > 0 {
            if fast && backoff.due() {
                let burst = self.fast_burst(&turn, left, now);
                fire |= burst.fire;
                if burst.failed {
                    break;
                }
                backoff.tried(burst.frames);
                if burst.frames > 0 {
                    left -= burst.frames;
                    continue;
                }
            }
            match self.transmit_one(&turn, frame, now) {
                Step::Sent { fire: irq } => fire |= irq,
                Step::Stop => break,
                Step::Held => {
                    allowed = false;
                    break;
                }
            }
            backoff.general();
            left -= 1;
        }
        self.functions[f].set_fast_backoff(q, backoff);
        self.touch(f);
        if fire {
            self.functions[f].raise_irq(MISC_VECTORS + q as u32);
        }
        allowed
    }

    /// Takes the next frame of the send queue whose turn it is into
    /// `frame` and switches it on the general path.
    fn transmit_one(&mut self, turn: &SendingQueue, frame: &mut Frame, now: Instant) -> Step {
        let (from, exception) = (turn.from, turn.exception);
        let (f, q) = (from.function, from.qp);
        let func = &mut self.functions[f];
        if let Some(until) = func.tx_wait(exception, now) {
            self.turns.held.push((f, until));
            return Step::Held;
        }
        let link_up = func.link_up();
        let Some(taken) = func.tx_take(
            q,
            exception,
            &mut frame.header,
            &mut frame.bytes,
            &mut self.turns.ahead,
        ) else {
            return Step::Stop;
        };
        let len = taken.sent.len;
        let dropped = if taken.fault == FrameFault::Drop {
            // Lost on the wire: the sender sees a frame sent.
            false
        } else if link_up && exception {
            self.exception_from_pf(from, frame, now)
        } else if !link_up {
            self.functions[f].count(FnStat::LinkDrops, 1);
            true
        } else if self.take_offload(from, taken.features, frame, len) {
            let gso = frame.offload.is_some_and(|r| r.gso);
            let dropped = self.switch_frame(turn, frame, now);
            frame.offload = None;
            if gso && !dropped {
                self.functions[f].count(FnStat::TxGso, 1);
            }
            dropped
        } else {
            true
        };
        match self.functions[f].tx_complete(q, exception, taken.sent, dropped, now) {
            Some(fire) => Step::Sent { fire },
            None => Step::Stop,
        }
    }

    /// Captures `frame`, lets it into the switch (or the VNI segment of a
    /// VxLAN VF) and carries out the forwarding decision. Returns whether
    /// it was dropped.
    fn switch_frame(&mut self, turn: &SendingQueue, frame: &mut Frame, now: Instant) -> bool {
        let (from, sender) = (turn.from, &turn.sender);
        if let Some(c) = self.capture.as_mut().filter(|c| c.wants(from.function)) {
            c.record(&frame.bytes);
        }
        self.counters.switched += 1;
        let decision = if turn.vxlan {
            self.vxlan
                .segments
                .forward(from, &frame.bytes, sender.spoof_check)
        } else {
            match self.switch.ingress_as(sender, &mut frame.bytes) {
                Ok(()) => {
                    if sender.pvid != 0 {
                        // The port VLAN tag went in behind the addresses.
                        frame.offload = frame.offload.map(|r| r.moved(4));
                    }
                    self.switch.forward_as(sender, &frame.bytes)
                }
                Err(reason) => Decision::Drop(reason),
            }
        };
        self.route(from, decision, frame, now)
    }

    /// Sends `frame` from vNIC `from` beyond the card: through the VxLAN
    /// tables for a VxLAN VF, else out of the uplink as it is (tagged with
    /// its VLAN, as switched).
    fn beyond(&mut self, from: Port, frame: &mut Frame, now: Instant) {
        if let Some(vni) = self.vxlan.segments.vni_of(from.function) {
            self.vxlan_out(from, vni, frame, now);
            return;
        }
        self.uplink.send(&frame.bytes, self.capture.as_mut());
        self.functions[from.function].count(FnStat::ToUplink, 1);
    }

    /// Carries out a forwarding decision for `frame`, sent by vNIC `from`.
    /// Returns whether the frame was dropped.
    fn route(&mut self, from: Port, decision: Decision, frame: &mut Frame, now: Instant) -> bool {
        if let Some(request) = frame.offload {
            match decision {
                Decision::Drop(_) => {}
                Decision::Unicast(port) if self.takes_offload(port, &request) => {}
                _ => return self.route_resolved(from, decision, request, frame, now),
            }
        }
        let f = from.function;
        match decision {
            Decision::Drop(reason) => {
                debug!("{}: frame dropped: {reason:?}", self.functions[f].name());
                let stat = match reason {
                    DropReason::Spoofed => FnStat::SpoofDrops,
                    DropReason::VlanNotJoined => FnStat::VlanDrops,
                    DropReason::Malformed => FnStat::MalformedDrops,
                    DropReason::Hairpin => FnStat::HairpinDrops,
                };
                self.functions[f].count(stat, 1);
                true
            }
            Decision::Unicast(port) => {
                self.deliver(port, frame, now);
                false
            }
            Decision::Flood(ports) => {
                self.counters.flooded += 1;
                self.copies(&ports, frame, now);
                self.beyond(from, frame, now);
                false
            }
            Decision::Uplink => {
                self.counters.unknown_unicast += 1;
                self.beyond(from, frame, now);
                false
            }
            Decision::Unknown(ports) => {
                self.counters.unknown_unicast += 1;
                self.copies(&ports, frame, now);
                self.beyond(from, frame, now);
                false
            }
        }
    }

    /// A copy of `frame` to each of `ports` that is up: one whose receive
    /// queue is stopped is like a switch port with its link down, not a
    /// drop.
    fn copies(&mut self, ports: &[Port], frame: &mut Frame, now: Instant) {
        for &port in ports {
            if rx_running(self.functions, port) {
                self.deliver(port, frame, now);
            }
        }
    }

    fn run_uplink(&mut self, frame: &mut Frame) {
        let now = Instant::now();
        self.turns.uplink_more = false;
        for n in 1..=UPLINK_BUDGET {
            match self.uplink.recv(&mut frame.bytes) {
                Ok(RecvOutcome::Frame) => {
                    frame.offload = None;
                    self.switch_uplink_frame(frame, now);
                }
                Ok(RecvOutcome::Skipped) => {}
                Ok(RecvOutcome::Empty) => break,
                Err(e) => {
                    warn!("uplink {}: {e}", self.uplink.spec());
                    break;
                }
            }
            self.turns.uplink_more = n == UPLINK_BUDGET;
        }
        self.finish_turn();
    }

    /// A frame from the uplink: VxLAN for our VTEP goes to the VxLAN path;
    /// anything else is switched from the uplink port (no spoof check;
    /// floods reach every vNIC of its VLAN; unknown unicast is dropped,
    /// never sent back out).
    fn switch_uplink_frame(&mut self, frame: &mut Frame, now: Instant) {
        if let Some(c) = self.capture.as_mut().filter(|c| c.wants_uplink_rx()) {
            c.record(&frame.bytes);
        }
        let vxlan = self
            .vxlan
            .vtep
            .and_then(|vtep| wire::decapsulate(&frame.bytes, vtep.ip));
        if let Some(d) = vxlan {
            self.vxlan_in(d, frame, now);
            return;
        }
        match self.switch.forward_from_uplink(&frame.bytes) {
            Decision::Unicast(port) => {
                self.deliver(port, frame, now);
            }
            Decision::Flood(ports) => {
                self.counters.flooded += 1;
                self.copies(&ports, frame, now);
            }
            Decision::Unknown(ports) => self.copies(&ports, frame, now),
            Decision::Drop(_) | Decision::Uplink => self.uplink.counters.rx_dropped += 1,
        }
    }

    /// Notes that function `f`'s contexts changed: written back at the end
    /// of the turn, once.
    fn touch(&mut self, f: usize) {
        if !self.turns.touched.contains(&f) {
            self.turns.touched.push(f);
        }
    }

    /// Copies `frame` into the next receive buffer of `port` (without its
    /// tag if the port has a port VLAN), if the port's link is up and its
    /// function's RX policy lets it in. Returns whether the receive queue
    /// took it (into a buffer or its packet buffer).
    fn deliver(&mut self, port: Port, frame: &mut Frame, now: Instant) -> bool {
        let mut offload = frame.offload;
        let bytes = if self.switch.pvid(port) != 0 {
            strip_tag(&frame.bytes, &mut frame.egress);
            if frame.egress.len() < frame.bytes.len() {
                offload = offload.map(|r| r.moved(-4));
            }
            &frame.egress
        } else {
            &frame.bytes
        };
        let header = offload.map(|r| r.hdr.to_bytes());
        let Some(func) = self.functions.get_mut(port.function) else {
            return false;
        };
        let taken = func.receive(port.qp, header.as_ref(), bytes, now);
        self.touch(port.function);
        taken
    }

    fn run_timers(&mut self, now: Instant) {
        let (due, held): (Vec<_>, Vec<_>) = self.turns.held.drain(..).partition(|&(_, t)| t <= now);
        self.turns.held = held;
        for (f, _) in due {
            self.queue_tx(f);
        }
        for func in self.functions.iter_mut() {
            func.run_timers(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::Card;
    use crate::dma::{DMA_READ, DMA_WRITE};
    use crate::model::Mac;
    use crate::regs::Reg;
    use crate::state::ServiceType;
    use crate::test_utils::guest::{card, eth, fn_stat, mac, qp_reg, rd, wr, Vm, BUF, RING};

    #[test]
    fn a_rearm_carries_a_receive_doorbell() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 0);
        let f = eth(mac(&c, 2, 0), mac(&c, 1, 0), None, 80);
        a.send(&mut c, 0, std::slice::from_ref(&f));
        assert!(b.received(0).is_empty(), "waits in the packet buffer");
        // Four buffers posted, handed over by QP_IRQ = REARM | RX_TAIL | 4.
        let rx = b.rings[0].1;
        b.rx_tail[0] = b.drv.post_rx(rx, RING, 0, 4, BUF);
        wr(&mut c, 2, qp_reg(0, 0x18), 1 | 2 | 4 << 16);
        assert_eq!(b.received(0), vec![f]);
        assert_eq!(rd(&mut c, 2, qp_reg(0, 0x28)), 1, "RX head");
        // A plain rearm (a 1.0 driver's) moves no tail.
        wr(&mut c, 2, qp_reg(0, 0x18), 1 | 7 << 16);
        let g = eth(mac(&c, 2, 0), mac(&c, 1, 0), None, 90);
        a.send(&mut c, 0, &[g]);
        assert_eq!(b.received(0).len(), 2, "within the 4 posted");
        assert_eq!(fn_stat(&c, 2, FnStat::RxPackets), 2);
    }

    #[test]
    fn unicast_crosses_from_one_vms_memory_into_anothers() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        let frames: Vec<Vec<u8>> = (0..5)
            .map(|i| eth(mac(&c, 2, 1), mac(&c, 1, 0), None, 60 + 300 * i))
            .collect();
        a.send(&mut c, 0, &frames);
        assert_eq!(b.received(1), frames, "all five, in order, byte-identical");
        assert!(b.received(0).is_empty(), "queue numbers are per function");
        assert_eq!(fn_stat(&c, 1, FnStat::TxPackets), 5);
        assert_eq!(fn_stat(&c, 2, FnStat::RxPackets), 5);
        // The sender's descriptors are complete and the contexts written back.
        let tx = a.rings[0].0;
        assert!((0..5).all(|i| a.drv.status(tx, i) == 1));
        assert_eq!(
            rd(&mut c, 2, qp_reg(1, 0x50)),
            5,
            "RX_PACKETS of queue pair 1"
        );
    }

    #[test]
    fn a_frame_longer_than_the_receivers_max_frame_is_dropped_and_counted() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 16);
        // As vnic.ko runs it: frames may span buffers (MULTI_BUF).
        assert_eq!(b.set_features(&mut c, 0, 0, 0b1000) & 3, 3);
        let (a0, b0) = (mac(&c, 1, 0), mac(&c, 2, 0));
        let jumbo = eth(b0, a0, None, 4028);
        // Without max_frame (a driver older than it) only the buffers
        // bound a frame: 4028 bytes span two of 2 KiB.
        a.send(&mut c, 0, std::slice::from_ref(&jumbo));
        assert_eq!(b.received_chained(0), vec![jumbo.clone()]);
        // MTU 1500: max_frame 1518 (with one VLAN tag).
        assert_eq!(b.set_max_frame(&mut c, 0, 1518) & 3, 3);
        let drops = fn_stat(&c, 2, FnStat::RxDrops);
        let fits = eth(b0, a0, None, 1514);
        let tagged = eth(b0, a0, Some(10), 1518);
        wr(&mut c, 2, qp_reg(0, 0x20), 10); // joins VLAN 10
        wr(&mut c, 1, qp_reg(0, 0x20), 10);
        let one_more = eth(b0, a0, Some(10), 1519);
        a.send(
            &mut c,
            0,
            &[fits.clone(), jumbo.clone(), tagged.clone(), one_more],
        );
        let got = b.received_chained(0);
        assert_eq!(got[1..], [fits, tagged], "the two that fit, in order");
        assert_eq!(fn_stat(&c, 2, FnStat::RxDrops), drops + 2);
        assert_eq!(rd(&mut c, 2, qp_reg(0, 0x60)), 2, "the queue's RX_DROPS");
        assert_eq!(fn_stat(&c, 1, FnStat::TxDrops), 0, "the sender's are sent");
        // The limit is the receiver's: VF1's queue pair 1 has none.
        let b1 = mac(&c, 2, 1);
        let to_b1 = eth(b1, a0, None, 1900);
        a.send(&mut c, 0, std::slice::from_ref(&to_b1));
        assert_eq!(b.received(1), vec![to_b1]);
        // It stays in the context when the queue is written back.
        let rx = b.tables.context(ServiceType::ReceiveQueue, 0);
        assert_eq!(b.drv.read_u16(rx + 20), 1518);
    }

    #[test]
    fn broadcast_floods_every_vnic_but_the_sender() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        let f = eth(Mac::BROADCAST, mac(&c, 1, 0), None, 60);
        a.send(&mut c, 0, std::slice::from_ref(&f));
        assert!(a.received(0).is_empty(), "not back to the sender");
        assert_eq!(a.received(1), vec![f.clone()]);
        assert_eq!(b.received(0), vec![f.clone()]);
        assert_eq!(b.received(1), vec![f]);
        // The PF and other VFs have no receive queue running: not reached,
        // and not counted as drops either.
        assert_eq!(fn_stat(&c, 0, FnStat::RxDrops), 0);
    }

    #[test]
    fn vlans_isolate_and_unjoined_vlans_are_dropped() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        wr(&mut c, 1, qp_reg(0, 0x20), 10);
        wr(&mut c, 2, qp_reg(0, 0x20), 10);
        wr(&mut c, 2, qp_reg(1, 0x20), 20);
        let (sa, b0, b1) = (mac(&c, 1, 0), mac(&c, 2, 0), mac(&c, 2, 1));
        a.send(&mut c, 0, &[eth(b0, sa, Some(10), 80)]);
        assert_eq!(b.received(0).len(), 1, "same VLAN");
        a.send(&mut c, 0, &[eth(b1, sa, Some(10), 80)]);
        a.send(&mut c, 0, &[eth(Mac::BROADCAST, sa, Some(10), 80)]);
        assert!(
            b.received(1).is_empty(),
            "VLAN 20 member sees nothing of VLAN 10"
        );
        assert_eq!(b.received(0).len(), 2, "the broadcast reached VLAN 10");
        a.send(&mut c, 0, &[eth(b1, sa, Some(20), 80)]);
        assert_eq!(fn_stat(&c, 1, FnStat::VlanDrops), 1);
        assert!(b.received(1).is_empty());
        // Leaving the VLAN stops delivery.
        wr(&mut c, 2, qp_reg(0, 0x20), 0x8000_000a);
        a.send(&mut c, 0, &[eth(b0, sa, Some(10), 80)]);
        assert_eq!(b.received(0).len(), 2);
    }

    #[test]
    fn spoofed_source_is_dropped_and_counted() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        let f = eth(mac(&c, 2, 0), mac(&c, 1, 1), None, 60);
        a.send(&mut c, 0, &[f]);
        assert!(b.received(0).is_empty());
        assert_eq!(fn_stat(&c, 1, FnStat::SpoofDrops), 1);
        assert_eq!(a.drv.status(a.rings[0].0, 0), 0b11, "DONE | DROPPED");
        assert_eq!(rd(&mut c, 1, qp_reg(0, 0x40)), 1, "TX_DROPS");
    }

    #[test]
    fn empty_receive_ring_buffers_then_drops_and_recovers() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 2);
        let f = eth(mac(&c, 2, 0), mac(&c, 1, 0), None, 1500);
        // 2 buffers posted: 2 delivered, the rest wait in the card's
        // packet buffer ...
        a.send(&mut c, 0, &vec![f.clone(); 10]);
        assert_eq!(b.received(0).len(), 2);
        assert_eq!(fn_stat(&c, 2, FnStat::RxDrops), 0);
        // ... until it is full: then frames are dropped and counted.
        let per_buffer = crate::queue::RX_BUFFER_BYTES / 1500;
        for _ in 0..(per_buffer / 50 + 1) {
            a.send(&mut c, 0, &vec![f.clone(); 50]);
        }
        let sent = 10 + 50 * (per_buffer / 50 + 1);
        let dropped = (sent - 2 - per_buffer) as u64;
        assert_eq!(fn_stat(&c, 2, FnStat::RxDrops), dropped);
        assert_eq!(rd(&mut c, 2, qp_reg(0, 0x60)) as u64, dropped, "RX_DROPS");
        // Posting buffers drains the packet buffer in order; no stall.
        b.post(&mut c, 0, 40);
        assert_eq!(b.received(0).len(), 42);
        assert_eq!(fn_stat(&c, 2, FnStat::RxPackets), 42);
        assert!(b.received(0).iter().all(|r| *r == f));
    }

    #[test]
    fn unknown_unicast_goes_to_the_uplink_counter() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let f = eth(Mac([2, 1, 2, 3, 4, 5]), mac(&c, 1, 0), None, 60);
        a.send(&mut c, 0, &[f]);
        assert_eq!(fn_stat(&c, 1, FnStat::ToUplink), 1);
        assert_eq!(fn_stat(&c, 1, FnStat::TxPackets), 1);
    }

    #[test]
    fn the_uplink_carries_unknown_unicast_and_floods_tagged_as_switched() {
        let mut c = card();
        c.set_uplink(crate::uplink::Uplink::memory());
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        c.set_vnic(1, 0, None, Some(10)).unwrap();
        let far = Mac([2, 1, 2, 3, 4, 5]);
        let sa = mac(&c, 1, 0);
        a.send(&mut c, 0, &[eth(far, sa, None, 80)]);
        a.send(&mut c, 0, &[eth(Mac::BROADCAST, sa, None, 80)]);
        let sent = c.uplink_mut().take_sent();
        assert_eq!(
            sent,
            vec![
                eth(far, sa, Some(10), 84),
                eth(Mac::BROADCAST, sa, Some(10), 84)
            ],
            "802.1Q trunk: tagged with the port VLAN"
        );
        // A frame to a local vNIC does not leave.
        let f = eth(mac(&c, 2, 0), mac(&c, 1, 1), None, 60);
        a.send(&mut c, 1, std::slice::from_ref(&f));
        assert_eq!(b.received(0), vec![f]);
        assert!(c.uplink_mut().take_sent().is_empty());
        assert_eq!(c.uplink().counters.tx_frames, 2);
        assert_eq!(fn_stat(&c, 1, FnStat::ToUplink), 2);
    }

    #[test]
    fn frames_from_the_uplink_are_switched_by_vlan_and_unknown_ones_dropped() {
        let mut c = card();
        c.set_uplink(crate::uplink::Uplink::memory());
        let a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        c.set_vnic(1, 0, None, Some(10)).unwrap();
        let far = Mac([2, 1, 2, 3, 4, 5]);
        // Tagged for VLAN 10: to the access port, untagged there.
        let tagged = eth(mac(&c, 1, 0), far, Some(10), 84);
        c.uplink_mut().inject(tagged);
        // Untagged broadcast: every untagged vNIC, not the VLAN 10 one.
        c.uplink_mut().inject(eth(Mac::BROADCAST, far, None, 60));
        // Unknown unicast, a runt.
        c.uplink_mut()
            .inject(eth(Mac([2, 9, 9, 9, 9, 9]), far, None, 60));
        c.uplink_mut().inject(vec![1, 2, 3]);
        c.run_uplink();
        assert_eq!(a.received(0), vec![eth(mac(&c, 1, 0), far, None, 80)]);
        assert_eq!(a.received(1).len(), 1);
        assert_eq!(b.received(0).len(), 1);
        assert_eq!(b.received(1).len(), 1);
        assert_eq!(c.uplink().counters.rx_frames, 4);
        assert_eq!(c.uplink().counters.rx_dropped, 2);
        assert!(c.uplink_mut().take_sent().is_empty(), "never sent back out");
        assert!(!c.busy());
    }

    /// Regression: a queue put into the error state by a doorbell (a tail
    /// beyond the ring, or waiting frames meeting a receive buffer outside
    /// guest memory) was not counted in QUEUE_ERRORS.
    #[test]
    fn queues_failed_by_a_doorbell_count_as_queue_errors() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 0);
        let b = Vm::attach(&mut c, 2, 0);
        wr(&mut c, 1, qp_reg(0, 0x10), u32::from(RING) + 5);
        assert_eq!(rd(&mut c, 1, qp_reg(0, 0x0c)) & 0b0100, 0b0100);
        assert_eq!(fn_stat(&c, 1, FnStat::QueueErrors), 1);
        wr(&mut c, 1, qp_reg(1, 0x14), u32::from(RING) + 5);
        assert_eq!(rd(&mut c, 1, qp_reg(1, 0x0c)) & 0b1000, 0b1000);
        assert_eq!(fn_stat(&c, 1, FnStat::QueueErrors), 2);
        // A frame waits for B's first buffer, which lies outside memory.
        let f = eth(mac(&c, 2, 0), mac(&c, 1, 1), None, 80);
        a.send(&mut c, 1, &[f]);
        b.drv.put_rx(b.rings[0].1, 0, 0xdead_0000, BUF);
        wr(&mut c, 2, qp_reg(0, 0x14), 1);
        assert_eq!(rd(&mut c, 2, qp_reg(0, 0x0c)) & 0b1000, 0b1000);
        assert_eq!(fn_stat(&c, 2, FnStat::QueueErrors), 1);
    }

    // Found with the `rings` fuzz target (docs/fuzzing.md): QUEUE_ERRORS
    // counts the queues a QP_CTRL write failed, not the change of the
    // contexts' error counters, which a start loads from guest memory.
    #[test]
    fn queue_errors_count_failed_starts_whatever_the_contexts_say() {
        let mut c = card();
        let a = Vm::attach(&mut c, 1, 0);
        wr(&mut c, 1, qp_reg(0, 0x08), 0);
        for ty in [ServiceType::SendQueue, ServiceType::ReceiveQueue] {
            let at = a.tables.context(ty, 0);
            a.drv.write_u16(at + 8, 7);
            a.drv.write_u64(at + 48, u64::MAX - 1);
        }
        wr(&mut c, 1, qp_reg(0, 0x08), 3);
        assert_eq!(
            rd(&mut c, 1, qp_reg(0, 0x0c)) & 0b1111,
            0b1100,
            "both failed"
        );
        assert_eq!(fn_stat(&c, 1, FnStat::QueueErrors), 2);
        wr(&mut c, 1, qp_reg(0, 0x08), 0);
        a.drv
            .write_u64(a.tables.context(ServiceType::SendQueue, 0) + 48, 0);
        wr(&mut c, 1, qp_reg(0, 0x08), 1);
        assert_eq!(fn_stat(&c, 1, FnStat::QueueErrors), 3, "never less");
    }

    #[test]
    fn hostile_send_ring_fails_one_queue_and_nothing_else() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        // Queue pair 1 of VF0 hands over a descriptor pointing outside memory.
        let tx1 = a.rings[1].0;
        a.drv.put_tx(tx1, 0, 0xdead_0000, 100, true);
        wr(&mut c, 1, qp_reg(1, 0x10), 1);
        let status = rd(&mut c, 1, qp_reg(1, 0x0c));
        assert_eq!(status & 0b0101, 0b0100, "TX error, not running");
        assert_eq!((status >> 8) & 0xff, 2, "DMA error code");
        assert_eq!(a.drv.status(tx1, 0) >> 8, 2, "descriptor marked");
        assert_eq!(fn_stat(&c, 1, FnStat::QueueErrors), 1);
        // Queue pair 0 of the same function still switches frames.
        let f = eth(mac(&c, 2, 0), mac(&c, 1, 0), None, 60);
        a.send(&mut c, 0, &[f]);
        assert_eq!(b.received(0).len(), 1);
        // A doorbell beyond the ring: INDEX error on that queue only.
        wr(&mut c, 2, qp_reg(1, 0x10), 1000);
        assert_eq!((rd(&mut c, 2, qp_reg(1, 0x0c)) >> 8) & 0xff, 4);
        assert_eq!(rd(&mut c, 2, qp_reg(0, 0x0c)) & 3, 3);
        // The driver stops the queue, resets its ring and starts it again:
        // the error is gone.
        wr(&mut c, 1, qp_reg(1, 0x08), 2);
        let (tx, rx) = a.rings[1];
        a.tables.set_rings(&a.drv, 1, (tx, RING), (rx, RING));
        wr(&mut c, 1, qp_reg(1, 0x08), 3);
        assert_eq!(rd(&mut c, 1, qp_reg(1, 0x0c)) & 0b0101, 0b0001);
    }

    #[test]
    fn disconnect_writes_contexts_back_and_a_new_card_resumes_them() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let _b = Vm::attach(&mut c, 2, 8);
        let f = eth(mac(&c, 2, 0), mac(&c, 1, 0), None, 100);
        a.send(&mut c, 0, &vec![f.clone(); 3]);
        c.disconnect(1);
        // Guest memory alone now describes VF0's queues: a second card, given
        // only the BAT address, restores them onto another VF (vf1).
        let mut c2 = card();
        let (base, size, file) = a.drv.memory();
        c2.functions_mut()[2]
            .dma_map(base, size, 0, DMA_READ | DMA_WRITE, Some(file))
            .unwrap();
        let bat = a.tables.bat;
        wr(&mut c2, 2, Reg::VctLo as u64, bat as u32);
        wr(&mut c2, 2, Reg::VctHi as u64, (bat >> 32) as u32);
        assert_eq!(rd(&mut c2, 2, qp_reg(0, 0x0c)) & 3, 3, "resumed");
        assert_eq!(
            rd(&mut c2, 2, qp_reg(0, 0x30)),
            3,
            "TX_PACKETS carried over"
        );
        assert_eq!(rd(&mut c2, 2, qp_reg(0, 0x24)), 3, "TX head carried over");
        let ctx = a.tables.context(ServiceType::SendQueue, 0);
        assert_eq!(a.drv.read_u64(ctx + 24), 3, "packets in guest memory");
    }

    use crate::model::{Direction, LinkState, RatePolicy};
    use crate::regs::IrqCause;
    use std::time::Duration;

    fn policy(avg_kbps: u64, burst_bytes: u64) -> RatePolicy {
        RatePolicy {
            avg_kbps,
            peak_kbps: 0,
            burst_bytes,
        }
    }

    #[test]
    fn tx_policy_holds_the_vf_back_then_lets_it_send_as_tokens_refill() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 60);
        // 8 Mbit/s = 1 MB/s, burst 10 000 bytes: about ten 1000-byte frames
        // at once, then one per millisecond.
        c.set_rate(1, Direction::Tx, Some(policy(8_000, 10_000)))
            .unwrap();
        let f = eth(mac(&c, 2, 0), mac(&c, 1, 0), None, 1000);
        a.send(&mut c, 0, &vec![f; 40]);
        let first = b.received(0).len();
        assert!((10..=12).contains(&first), "burst: {first}");
        assert!(fn_stat(&c, 1, FnStat::TxShaped) >= 1);
        assert!(!c.busy(), "a held VF is not busy work: no spinning");
        let due = c.next_deadline().expect("a deadline for the refill");
        assert!(due <= Instant::now() + Duration::from_millis(2));
        std::thread::sleep(Duration::from_millis(10));
        c.run_timers(Instant::now());
        c.run_pending();
        let later = b.received(0).len();
        assert!(later > first, "more frames after the refill: {later}");
        assert!(later < 40, "not all at once: {later}");
        assert_eq!(fn_stat(&c, 1, FnStat::TxDrops), 0, "shaping drops nothing");
        // Removing the policy lets the rest through at once.
        c.set_rate(1, Direction::Tx, None).unwrap();
        c.run_pending();
        assert_eq!(b.received(0).len(), 40);
    }

    #[test]
    fn vnics_of_a_vf_share_its_tx_budget_round_robin() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 60);
        c.set_rate(1, Direction::Tx, Some(policy(8_000, 9_216)))
            .unwrap();
        let (d0, d1) = (mac(&c, 2, 0), mac(&c, 2, 1));
        let f0 = eth(d0, mac(&c, 1, 0), None, 1000);
        let f1 = eth(d1, mac(&c, 1, 1), None, 1000);
        let start = Instant::now();
        a.send(&mut c, 0, &vec![f0.clone(); 30]);
        a.send(&mut c, 1, &vec![f1; 30]);
        for _ in 0..20 {
            std::thread::sleep(Duration::from_millis(2));
            c.run_timers(Instant::now());
            c.run_pending();
        }
        // What 8 Mb/s and a 9216-byte burst allow in the time it took (a
        // loaded machine sleeps longer than asked).
        let allowed = (start.elapsed().as_secs_f64() * 1e6 + 9216.0) / f0.len() as f64;
        let (n0, n1) = (b.received(0).len(), b.received(1).len());
        assert!(n0 > 0 && n1 > 0, "both vNICs get turns: {n0} {n1}");
        assert!(
            (n0 + n1) as f64 <= allowed.ceil() + 1.0,
            "together within one budget: {n0} + {n1}, {allowed:.1} allowed"
        );
    }

    #[test]
    fn rx_policy_drops_and_counts_what_exceeds_it() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 60);
        c.set_rate(2, Direction::Rx, Some(policy(1_000, 10_000)))
            .unwrap();
        let f = eth(mac(&c, 2, 0), mac(&c, 1, 0), None, 1000);
        a.send(&mut c, 0, &vec![f; 30]);
        let got = b.received(0).len() as u64;
        assert!((10..=12).contains(&got), "{got}");
        assert_eq!(fn_stat(&c, 2, FnStat::RxRateDrops), 30 - got);
        assert_eq!(
            fn_stat(&c, 1, FnStat::TxPackets),
            30,
            "the sender is not held"
        );
    }

    #[test]
    fn link_down_stops_frames_both_ways_and_interrupts_the_driver() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 8);
        let (ab, ba) = (
            eth(mac(&c, 2, 0), mac(&c, 1, 0), None, 60),
            eth(mac(&c, 1, 0), mac(&c, 2, 0), None, 60),
        );
        c.set_link(2, LinkState::Down);
        let cause = IrqCause::from_bits(rd(&mut c, 2, Reg::IrqCause as u64));
        assert!(cause.link());
        assert_eq!(rd(&mut c, 2, Reg::Status as u64) & 1, 0);
        a.send(&mut c, 0, std::slice::from_ref(&ab));
        assert!(b.received(0).is_empty());
        assert_eq!(fn_stat(&c, 2, FnStat::LinkDrops), 1);
        b.send(&mut c, 0, std::slice::from_ref(&ba));
        assert!(a.received(0).is_empty());
        assert_eq!(fn_stat(&c, 2, FnStat::LinkDrops), 2);
        assert_eq!(b.drv.status(b.rings[0].0, 0), 0b11, "completed as dropped");
        c.set_link(2, LinkState::Up);
        a.send(&mut c, 0, std::slice::from_ref(&ab));
        assert_eq!(b.received(0).len(), 1);
    }

    #[test]
    fn port_vlan_tags_what_the_vnic_sends_and_strips_what_it_gets() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 8);
        c.set_vnic(1, 0, None, Some(10)).unwrap();
        wr(&mut c, 2, qp_reg(0, 0x20), 10); // B's guest joins VLAN 10
        let (sa, sb) = (mac(&c, 1, 0), mac(&c, 2, 0));
        a.send(&mut c, 0, &[eth(sb, sa, None, 80)]);
        assert_eq!(b.received(0), vec![eth(sb, sa, Some(10), 84)]);
        b.send(&mut c, 0, &[eth(sa, sb, Some(10), 84)]);
        assert_eq!(a.received(0), vec![eth(sa, sb, None, 80)]);
        // Untagged traffic from B no longer reaches A.
        b.send(&mut c, 0, &[eth(sa, sb, None, 80)]);
        assert_eq!(a.received(0).len(), 1);
        // A guest-tagged frame from the access port is dropped.
        a.send(&mut c, 0, &[eth(sb, sa, Some(10), 84)]);
        assert_eq!(fn_stat(&c, 1, FnStat::VlanDrops), 1);
    }

    #[test]
    fn capture_records_every_frame_entering_the_switch() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let _b = Vm::attach(&mut c, 2, 8);
        let dir = std::env::temp_dir().join(format!("vnic-dp-cap-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("s.pcap");
        c.capture_start(path.clone(), crate::capture::Scope::All)
            .unwrap();
        let good = eth(mac(&c, 2, 0), mac(&c, 1, 0), None, 98);
        let spoofed = eth(mac(&c, 2, 0), Mac([2, 9, 9, 9, 9, 9]), None, 60);
        a.send(&mut c, 0, &[good.clone(), spoofed.clone(), good.clone()]);
        let info = c.capture_stop().unwrap();
        assert_eq!(info.frames, 3, "dropped frames are captured too");
        let mut r = pcap_file::pcap::PcapReader::new(std::fs::File::open(&path).unwrap()).unwrap();
        let frames: Vec<Vec<u8>> =
            std::iter::from_fn(|| r.next_packet().map(|p| p.unwrap().data.to_vec())).collect();
        assert_eq!(frames, vec![good.clone(), spoofed, good]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn only_a_trusted_vf_may_write_its_vnic_mac() {
        let mut c = card();
        let _a = Vm::attach(&mut c, 1, 8);
        let new = Mac([2, 0x11, 0x22, 0x33, 0x44, 0x55]);
        let lo = u32::from_le_bytes([2, 0x11, 0x22, 0x33]);
        let hi = u32::from_le_bytes([0x44, 0x55, 0, 0]);
        let bad = rd(&mut c, 1, Reg::BadAccess as u64);
        wr(&mut c, 1, qp_reg(1, 0x00), lo);
        wr(&mut c, 1, qp_reg(1, 0x04), hi);
        assert_eq!(rd(&mut c, 1, Reg::BadAccess as u64), bad + 2);
        assert_ne!(mac(&c, 1, 1), new);
        c.set_trust(1, true);
        wr(&mut c, 1, qp_reg(1, 0x00), lo);
        wr(&mut c, 1, qp_reg(1, 0x04), hi);
        assert_eq!(mac(&c, 1, 1), new);
        assert_eq!(rd(&mut c, 1, qp_reg(1, 0x04)), hi);
        assert_eq!(c.switch().lookup(new, 0), Some(Port { function: 1, qp: 1 }));
        // A MAC another vNIC owns is refused; the vNIC keeps its own.
        let taken = mac(&c, 2, 0).0;
        wr(
            &mut c,
            1,
            qp_reg(1, 0x00),
            u32::from_le_bytes(taken[..4].try_into().unwrap()),
        );
        wr(
            &mut c,
            1,
            qp_reg(1, 0x04),
            u32::from_le_bytes([taken[4], taken[5], 0, 0]),
        );
        assert_eq!(mac(&c, 1, 1), new);
    }

    /// A VF, trusted or not, cannot reach its own policy: every admin
    /// operation on its own mailbox ends with EPERM and changes nothing;
    /// with a port VLAN it can neither join another VLAN nor send into one.
    #[test]
    fn a_vf_cannot_change_its_own_policy_mac_or_vlan_through_its_bar() {
        use crate::regs::AdminCmd;
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        c.set_vnic(1, 0, None, Some(10)).unwrap();
        let before = (
            c.export(),
            c.switch().pvid(Port { function: 1, qp: 0 }),
            mac(&c, 1, 0),
        );
        for trusted in [false, true] {
            c.set_trust(1, trusted);
            for op in 1..=7u8 {
                for (i, v) in [1u32, 0x2000, 1, 1, 0, 0].iter().enumerate() {
                    wr(&mut c, 1, Reg::AdminArg0 as u64 + 4 * i as u64, *v);
                }
                let cmd = AdminCmd::new().with_op(op).with_vf(0);
                wr(&mut c, 1, Reg::AdminCmd as u64, cmd.into_bits());
                c.run_admin(1);
                let status = rd(&mut c, 1, Reg::AdminStatus as u64);
                assert_eq!(status, libc::EPERM as u32, "op {op}, trusted {trusted}");
            }
            c.set_trust(1, false);
            // Joining VLAN 20 behind port VLAN 10: refused.
            wr(&mut c, 1, qp_reg(0, 0x20), 20);
            assert!(c.switch().joined(Port { function: 1, qp: 0 }).is_empty());
        }
        assert_eq!(
            (
                c.export(),
                c.switch().pvid(Port { function: 1, qp: 0 }),
                mac(&c, 1, 0)
            ),
            before
        );
        // A frame tagged for VLAN 20 does not reach a vNIC on VLAN 20.
        wr(&mut c, 2, qp_reg(0, 0x20), 20);
        let (sa, sb) = (mac(&c, 1, 0), mac(&c, 2, 0));
        a.send(&mut c, 0, &[eth(sb, sa, Some(20), 84)]);
        assert!(b.received(0).is_empty());
    }

    #[test]
    fn pf_admin_mailbox_reaches_the_card_operations() {
        use crate::regs::AdminCmd;
        let mut c = card();
        let admin = |c: &mut Card, op: u8, vf: u16, args: &[u32]| -> u32 {
            for (i, a) in args.iter().enumerate() {
                wr(c, 0, Reg::AdminArg0 as u64 + 4 * i as u64, *a);
            }
            let cmd = AdminCmd::new().with_op(op).with_vf(vf);
            wr(c, 0, Reg::AdminCmd as u64, cmd.into_bits());
            c.run_admin(0);
            rd(c, 0, Reg::AdminStatus as u64)
        };
        let m = [2u8, 0xaa, 0xbb, 0xcc, 0xdd, 0xee];
        let (lo, hi) = (
            u32::from_le_bytes([m[0], m[1], m[2], m[3]]),
            u32::from_le_bytes([m[4], m[5], 0, 0]),
        );
        assert_eq!(admin(&mut c, 1, 1, &[lo, hi]), 0, "SET_MAC vf1");
        assert_eq!(mac(&c, 2, 0), Mac(m));
        assert_eq!(admin(&mut c, 2, 1, &[10, 0x8100]), 0, "SET_VLAN");
        assert_eq!(c.switch().pvid(Port { function: 2, qp: 1 }), 10);
        assert_eq!(
            admin(&mut c, 2, 1, &[10, 0x88a8]),
            libc::EPROTONOSUPPORT as u32
        );
        assert_eq!(admin(&mut c, 3, 1, &[0, 20]), 0, "SET_RATE max 20");
        let p = c.functions()[2].policy().tx_rate.as_ref().unwrap().policy();
        assert_eq!((p.avg_kbps, p.peak_kbps), (20_000, 20_000));
        assert_eq!(admin(&mut c, 3, 1, &[5, 20]), libc::EOPNOTSUPP as u32);
        assert_eq!(admin(&mut c, 4, 1, &[0]), 0, "SET_SPOOFCHK off");
        assert!(!c.switch().spoof_check(2));
        assert_eq!(admin(&mut c, 5, 1, &[1]), 0, "SET_TRUST on");
        assert_eq!(admin(&mut c, 6, 1, &[2]), 0, "SET_LINK disable");
        assert!(!c.functions()[2].link_up());
        assert_eq!(admin(&mut c, 7, 1, &[]), 0, "GET_CONFIG");
        let got: Vec<u32> = (0..6)
            .map(|i| rd(&mut c, 0, Reg::AdminArg0 as u64 + 4 * i))
            .collect();
        assert_eq!(got, vec![lo, hi, 10, 20, 0, 0b10 | 2 << 2]);
        assert_eq!(
            admin(&mut c, 1, 9, &[lo, hi]),
            libc::ENODEV as u32,
            "a VF beyond TotalVFs"
        );
        c.set_num_vfs(2).unwrap();
        assert_eq!(
            admin(&mut c, 4, 3, &[1]),
            libc::ENODEV as u32,
            "a VF that is disabled"
        );
        assert_eq!(admin(&mut c, 4, 1, &[1]), 0, "VF1 still there");
        assert_eq!(admin(&mut c, 99, 1, &[]), libc::EOPNOTSUPP as u32);
        // Back to untagged, where VF0's vNIC 0 owns its MAC.
        assert_eq!(admin(&mut c, 2, 1, &[0, 0x8100]), 0);
        let taken = mac(&c, 1, 0).0;
        let t = [
            u32::from_le_bytes([taken[0], taken[1], taken[2], taken[3]]),
            u32::from_le_bytes([taken[4], taken[5], 0, 0]),
        ];
        assert_eq!(admin(&mut c, 1, 1, &t), libc::EADDRINUSE as u32);
        // A VF's own mailbox refuses.
        let cmd = AdminCmd::new().with_op(1).with_vf(0);
        wr(&mut c, 2, Reg::AdminCmd as u64, cmd.into_bits());
        assert_eq!(rd(&mut c, 2, Reg::AdminStatus as u64), libc::EPERM as u32);
    }
}
