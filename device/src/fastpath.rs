//! The fast path (docs/datapath.md, "The fast path"): bursts of plain
//! unicast frames from one vNIC to another, each copied once, from the
//! sending guest's buffer straight into the receiving guest's buffer.
//!
//! It takes a frame only where the general path (`crate::datapath`) would
//! do nothing with it but put it into the next receive buffer of one vNIC:
//! one send descriptor, no offload header on either queue, no capture of
//! the sender's frames, no VxLAN segment, no port VLAN on either vNIC, no
//! rate policy on either function, both links up, the receive queue
//! running with nothing waiting in its packet buffer and a posted buffer
//! the frame fits. Everything is checked before a frame's first byte
//! moves; the first frame it declines, and those after it, are left to the
//! general path, which checks them again and reports what is wrong. Guest
//! memory, counters, contexts and interrupts end up as the general path
//! leaves them.
//!
//! What makes it fast is doing per burst what the general path does per
//! frame: the sender's and receiver's state is looked up once, the send
//! and receive descriptors are read with one DMA read each and the send
//! descriptors written back with one DMA write, and the switch decides once
//! for all frames of the burst that share the first frame's addressing.

use std::time::Instant;

use crate::card::Card;
use crate::datapath::Turn;
use crate::dma::{DmaSpace, DmaWindow, GuestBytes};
use crate::function::{Function, Lanes, MISC_VECTORS};
use crate::regs::FnStat;
use crate::ring::{Desc, RxStatus, MAX_BURST};
use crate::switch::{Decision, FrameInfo, Port, DECISION_BYTES};

/// What a burst did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Burst {
    /// Frames switched.
    pub frames: usize,
    /// Interrupt the sender.
    pub fire: bool,
    /// The send queue failed writing its completions back.
    pub failed: bool,
}

/// Frames a burst copied into a receive queue.
#[derive(Clone, Copy, Debug, Default)]
struct Moved {
    frames: usize,
    bytes: u64,
}

/// When the fast path tries a send queue again after declining a frame:
/// it sits out as many frames as it declined tries in a row (doubling, up
/// to a burst), so traffic it never takes (to the uplink, floods) pays for
/// a try about once per [`MAX_BURST`] frames rather than once per frame.
/// Kept per queue pair: each turn of the event loop starts with a try
/// (the receiver may have posted buffers since), without starting the
/// doubling over.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Backoff {
    /// Frames still to leave to the general path.
    wait: usize,
    /// The next wait after a decline.
    next: usize,
}

impl Backoff {
    /// A new turn: try at the next frame.
    pub fn new_turn(&mut self) {
        self.wait = 0;
    }

    /// Whether to try the fast path for the next frame.
    pub fn due(&self) -> bool {
        self.wait == 0
    }

    /// A try took `frames` frames (0: it declined the first).
    pub fn tried(&mut self, frames: usize) {
        if frames > 0 {
            self.next = 0;
        } else {
            self.next = (self.next * 2).clamp(1, MAX_BURST);
            self.wait = self.next;
        }
    }

    /// The general path switched a frame.
    pub fn general(&mut self) {
        self.wait = self.wait.saturating_sub(1);
    }
}

impl Card {
    /// Whether the fast path may take frames of the vNIC whose turn it is
    /// at all: nothing about the sender needs the general path (its link is
    /// up, no TX rate policy, no capture of its frames, no VxLAN segment,
    /// no port VLAN). Its send queue is checked with each burst.
    pub(crate) fn fast_sender(&self, turn: &Turn) -> bool {
        let from = turn.from;
        let Some(func) = self.functions.get(from.function) else {
            return false;
        };
        let captured = self
            .capture
            .as_ref()
            .is_some_and(|c| c.wants(from.function));
        self.fast_path
            && func.link_up()
            && func.policy().tx_rate.is_none()
            && !captured
            && !turn.vxlan
            && turn.sender.pvid == 0
    }

    /// Whether the fast path may deliver into vNIC `to`: its link is up,
    /// no RX rate policy, no port VLAN, and its receive queue takes frames
    /// plainly ([`crate::queue::QueuePair::fast_rx`]).
    fn fast_receiver(&self, to: Port) -> bool {
        let Some(func) = self.functions.get(to.function) else {
            return false;
        };
        let rx_ok = func
            .all_queue_pairs()
            .get(usize::from(to.qp))
            .is_some_and(|qp| qp.fast_rx().is_some());
        func.link_up() && func.policy().rx_rate.is_none() && self.switch.pvid(to) == 0 && rx_ok
    }

    /// Switches a burst of at most `budget` frames from the head of the
    /// send queue whose turn it is (a sender [`Card::fast_sender`]
    /// accepted), all to the destination of the first: as many as take
    /// the fast path, possibly none.
    pub(crate) fn fast_burst(&mut self, turn: &Turn, budget: usize, now: Instant) -> Burst {
        let from = turn.from;
        let mut descs = [Desc::default(); MAX_BURST];
        let descs = &mut descs[..budget.min(MAX_BURST)];
        let Some((n, info, to)) = self.fast_start(turn, descs) else {
            return Burst::default();
        };
        let moved = self.fast_copy(from.function, to, &descs[..n], &info, now);
        if moved.frames == 0 {
            return Burst::default();
        }
        self.fast_complete(from, &descs[..moved.frames], moved.bytes, now)
    }

    /// Decides where the first pending frame of the queue goes and, if it is
    /// one for the fast path, reads the pending send descriptors into
    /// `descs` (one read; the first alone before, so that a try the fast
    /// path declines costs little). Returns how many were read, the first
    /// frame's addressing and its destination.
    fn fast_start(&self, turn: &Turn, descs: &mut [Desc]) -> Option<(usize, FrameInfo, Port)> {
        let from = turn.from;
        let func = self.functions.get(from.function)?;
        let ring = func
            .all_queue_pairs()
            .get(usize::from(from.qp))?
            .fast_tx()?;
        let slots = ring.slots(func.dma())?;
        let first = descs.first_mut()?;
        if slots.read_pending(std::slice::from_mut(first)) == 0 {
            return None;
        }
        let (addr, len) = first.plain_tx()?;
        let src = func.dma().source(addr, len).ok()??;
        let (head, k) = frame_head(&src);
        let info = FrameInfo::parse(&head[..k])?;
        match self.switch.forward_as(&turn.sender, &head[..k]) {
            Decision::Unicast(to) if self.fast_receiver(to) => {
                Some((slots.read_pending(descs), info, to))
            }
            _ => None,
        }
    }

    /// Copies the frames of `descs` (send descriptors of function `src`)
    /// into receive queue `to`, from the first, while they take the fast
    /// path with the addressing `info`; counts them there and raises its
    /// interrupt as the general path would.
    fn fast_copy(
        &mut self,
        src: usize,
        to: Port,
        descs: &[Desc],
        info: &FrameInfo,
        now: Instant,
    ) -> Moved {
        let Some((lanes, src_dma)) = lanes_and_source(&mut self.functions, to.function, src) else {
            return Moved::default();
        };
        let (moved, fire) = copy_burst(src_dma, lanes, to.qp, descs, info, now);
        if fire {
            self.functions[to.function].raise_irq(MISC_VECTORS + u32::from(to.qp));
        }
        if moved.frames > 0 {
            self.touch(to.function);
        }
        moved
    }

    /// Completes the send descriptors `done` of `from` (the frames the
    /// burst switched, `bytes` in all) and counts them, as the general
    /// path does frame by frame.
    fn fast_complete(&mut self, from: Port, done: &[Desc], bytes: u64, now: Instant) -> Burst {
        let frames = done.len();
        self.counters.switched += frames as u64;
        self.counters.fast_path += frames as u64;
        let lanes = self.functions[from.function].lanes();
        let qp = &mut lanes.qps[usize::from(from.qp)];
        match qp.tx_burst_done(lanes.name, lanes.dma, done, bytes, now) {
            Ok(fire) => {
                lanes.counters.add(FnStat::TxPackets, frames as u64);
                lanes.counters.add(FnStat::TxBytes, bytes);
                Burst {
                    frames,
                    fire,
                    failed: false,
                }
            }
            Err(_) => {
                qp.tx_kicked = false;
                lanes.counters.add(FnStat::QueueErrors, 1);
                Burst {
                    frames,
                    fire: false,
                    failed: true,
                }
            }
        }
    }
}

/// The first bytes of a frame in guest memory, as many as the switch's
/// decision reads (fewer for a shorter frame), and how many there are.
fn frame_head(src: &GuestBytes) -> ([u8; DECISION_BYTES], usize) {
    let mut head = [0u8; DECISION_BYTES];
    let n = src.read_head(&mut head);
    (head, n)
}

/// The lanes of function `dst`, to deliver into, and the guest memory of
/// function `src`, to copy from: borrowed together, whether they are one
/// function (a frame between two vNICs of a VF) or two.
fn lanes_and_source(
    functions: &mut [Function],
    dst: usize,
    src: usize,
) -> Option<(Lanes<'_>, &DmaSpace)> {
    if dst == src {
        let lanes = functions.get_mut(dst)?.lanes();
        let dma = lanes.dma;
        return Some((lanes, dma));
    }
    let split = dst.max(src);
    if split >= functions.len() {
        return None;
    }
    let (low, high) = functions.split_at_mut(split);
    let (d, s) = if dst < src {
        (&mut low[dst], &high[0])
    } else {
        (&mut high[0], &low[src])
    };
    Some((d.lanes(), s.dma()))
}

/// Copies the frames of `descs` from `src` into receive queue `q` of
/// `dst`, one posted buffer each, from the first while each takes the
/// fast path ([`copy_frame`]), and counts them as delivered. Returns what
/// it moved and whether to fire the queue pair's vector.
fn copy_burst(
    src: &DmaSpace,
    dst: Lanes,
    q: u16,
    descs: &[Desc],
    info: &FrameInfo,
    now: Instant,
) -> (Moved, bool) {
    let mut moved = Moved::default();
    let Some(qp) = dst.qps.get_mut(usize::from(q)) else {
        return (moved, false);
    };
    let Some(mut ring) = qp.fast_rx() else {
        return (moved, false);
    };
    let Some(slots) = ring.slots(dst.dma) else {
        return (moved, false);
    };
    let mut posted = [Desc::default(); MAX_BURST];
    let k = slots.read_pending(&mut posted[..descs.len()]);
    let status = RxStatus::new().with_done(true).with_eop(true);
    let (mut src, mut to) = (DmaWindow::new(src), DmaWindow::new(dst.dma));
    for (d, r) in descs.iter().zip(&posted[..k]) {
        let Some(len) = copy_frame(&mut src, &mut to, d, r, info) else {
            break;
        };
        // The length and DONE after the data, with one 8-byte store.
        if !slots.complete_rx(ring.head, r, len as u16, status) {
            break;
        }
        ring.advance(1);
        moved.frames += 1;
        moved.bytes += len as u64;
    }
    let fire = qp.rx_burst_done(ring.head, moved.frames, moved.bytes, now);
    dst.counters.add(FnStat::RxPackets, moved.frames as u64);
    dst.counters.add(FnStat::RxBytes, moved.bytes);
    (moved, fire)
}

/// Copies the frame of send descriptor `d` (memory `src`) into the buffer
/// of receive descriptor `r` (memory `dst`), if it takes the fast path: one
/// buffer of a length the general path takes, inside one mapping, the
/// addressing `info` (so the switch decides as for the first frame of the
/// burst), and a posted buffer it fits, inside one writable mapping.
/// Returns its length; None and nothing written otherwise.
fn copy_frame(
    src: &mut DmaWindow,
    dst: &mut DmaWindow,
    d: &Desc,
    r: &Desc,
    info: &FrameInfo,
) -> Option<usize> {
    let (addr, len) = d.plain_tx()?;
    let from = src.source(addr, len)?;
    let (head, k) = frame_head(&from);
    if FrameInfo::parse(&head[..k]).as_ref() != Some(info) {
        return None;
    }
    let to = dst.target(r.rx_fits(len)?, len)?;
    to.copy_from(from).then_some(len)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::api::StatsInfo;
    use crate::function::FunctionStats;
    use crate::switch::Mac;
    use crate::test_utils::guest::{card, eth, fn_stat, mac, qp_reg, rd, wr, Vm, BUF, RING};
    use crate::test_utils::{FAKE_BASE, FAKE_SIZE};

    /// Everything a run leaves behind that the fast path must not change:
    /// the card's statistics (without its own counter), every function's
    /// interrupt and error counts, both guests' whole memory (rings,
    /// buffers, contexts) and the queue-pair status registers.
    #[derive(Debug, PartialEq, Eq)]
    struct Outcome {
        stats: StatsInfo,
        functions: Vec<FunctionStats>,
        memory: Vec<Vec<u8>>,
        status: Vec<u32>,
    }

    fn outcome(c: &mut Card, vms: &[&Vm]) -> Outcome {
        let mut stats = c.stats(None);
        stats.card.remove("fast_path");
        let memory = vms
            .iter()
            .map(|vm| {
                let mut m = vec![0; FAKE_SIZE as usize];
                vm.drv.dma().read(FAKE_BASE, &mut m).unwrap();
                m
            })
            .collect();
        let status = vms
            .iter()
            .flat_map(|vm| (0..2).map(|q| (vm.f, q)))
            .map(|(f, q)| rd(c, f, qp_reg(q, 0x0c)))
            .collect();
        Outcome {
            stats,
            functions: c.functions.iter().map(|f| f.stats()).collect(),
            memory,
            status,
        }
    }

    /// Unicast streams between two VFs with one of every frame the fast
    /// path declines among them, a receiver that runs out of buffers, a
    /// frame in two descriptors, and hostile send and receive descriptors;
    /// with the fast path on or off. Returns what it left and how many
    /// frames the fast path moved.
    fn mixed_traffic(fast: bool) -> (Outcome, u64) {
        let mut c = card();
        c.fast_path = fast;
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 8);
        let (a0, a1, b0, b1) = (mac(&c, 1, 0), mac(&c, 1, 1), mac(&c, 2, 0), mac(&c, 2, 1));
        // No moderation interval: which completion fires depends on the
        // order of events alone, not on the clock.
        for (f, q) in [(1, 0), (1, 1), (2, 0), (2, 1)] {
            wr(&mut c, f, qp_reg(q, 0x1c), 0);
        }
        wr(&mut c, 1, qp_reg(0, 0x20), 10);
        wr(&mut c, 2, qp_reg(0, 0x20), 10);
        let mut frames: Vec<Vec<u8>> = (0..24).map(|i| eth(b0, a0, None, 60 + 83 * i)).collect();
        let odd = [
            eth(Mac::BROADCAST, a0, None, 60),
            eth(b0, a1, None, 70),                      // spoofed
            eth(a0, a0, None, 80),                      // hairpin
            eth(Mac([2, 9, 9, 9, 9, 9]), a0, None, 90), // unknown: uplink
            eth(b0, a0, Some(10), 100),                 // tagged, joined
            eth(a1, a0, None, 110),                     // the same VF
            eth(b0, a0, None, 2100),                    // longer than a buffer
            eth(b1, a0, None, 120),
        ];
        for (k, f) in odd.into_iter().enumerate() {
            frames.insert(3 * k + 1, f);
        }
        a.send(&mut c, 0, &frames);
        rearm(&mut c);
        b.post(&mut c, 0, 40);
        rearm(&mut c);
        a.send(&mut c, 0, &frames[..20]);
        rearm(&mut c);
        // A frame in two descriptors, then a stream again.
        let f = eth(b0, a0, None, 600);
        let tx = a.rings[0].0;
        let t = a.tx_tail[0];
        for (i, part) in [&f[..100], &f[100..]].into_iter().enumerate() {
            let addr = a.drv.buffer(part);
            a.drv
                .put_tx(tx, (t + i as u16) % RING, addr, part.len() as u16, i == 1);
        }
        a.tx_tail[0] = (t + 2) % RING;
        a.send(&mut c, 0, &frames[..5]);
        rearm(&mut c);
        // A send descriptor outside memory after three good frames.
        let t = a.drv.queue_tx(a.rings[1].0, RING, 0, &frames[..3]);
        a.drv.put_tx(a.rings[1].0, t, 0xdead_0000, 100, true);
        wr(&mut c, 1, qp_reg(1, 0x10), u32::from(t + 1));
        rearm(&mut c);
        // A receive descriptor outside memory after two good buffers.
        let rx = b.rings[1].1;
        b.drv.put_rx(rx, 10, 0xdead_0000, BUF);
        wr(&mut c, 2, qp_reg(1, 0x14), 11);
        let to_b1: Vec<Vec<u8>> = (0..4).map(|i| eth(b1, a0, None, 200 + i)).collect();
        a.send(&mut c, 0, &to_b1);
        rearm(&mut c);
        let moved = c.counters.fast_path;
        (outcome(&mut c, &[&a, &b]), moved)
    }

    /// Both guests' drivers re-enable every queue pair's interrupt, as
    /// at the end of a NAPI poll.
    fn rearm(c: &mut Card) {
        for (f, q) in [(1, 0), (1, 1), (2, 0), (2, 1)] {
            wr(c, f, qp_reg(q, 0x18), 1);
        }
    }

    #[test]
    fn the_fast_path_leaves_what_the_general_path_leaves() {
        let (fast, moved) = mixed_traffic(true);
        let (general, none) = mixed_traffic(false);
        assert!(
            moved >= 25,
            "the fast path took most unicast frames: {moved}"
        );
        assert_eq!(none, 0);
        assert_eq!(fast.stats, general.stats);
        assert_eq!(fast.functions, general.functions);
        assert_eq!(fast.status, general.status);
        for (i, (f, g)) in fast.memory.iter().zip(&general.memory).enumerate() {
            let first = f.iter().zip(g).position(|(x, y)| x != y);
            assert_eq!(first, None, "guest {i}: first difference");
        }
    }

    #[test]
    fn unicast_frames_are_copied_once_from_guest_to_guest() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        let frames: Vec<Vec<u8>> = (0..6)
            .map(|i| eth(mac(&c, 2, 1), mac(&c, 1, 0), None, 60 + 290 * i))
            .collect();
        a.send(&mut c, 0, &frames);
        assert_eq!(b.received(1), frames);
        assert_eq!(c.counters.fast_path, 6);
        assert_eq!(c.counters.switched, 6);
        let bytes: u64 = frames.iter().map(|f| f.len() as u64).sum();
        assert_eq!(fn_stat(&c, 1, FnStat::TxBytes), bytes);
        assert_eq!(fn_stat(&c, 2, FnStat::RxBytes), bytes);
        let tx = a.rings[0].0;
        assert!((0..6).all(|i| a.drv.status(tx, i) == 1), "DONE");
        assert_eq!(rd(&mut c, 2, qp_reg(1, 0x50)), 6, "RX_PACKETS");
    }

    #[test]
    fn frames_it_declines_take_the_general_path_in_order() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 4);
        let (a0, b0) = (mac(&c, 1, 0), mac(&c, 2, 0));
        let mut frames: Vec<Vec<u8>> = (0..8).map(|i| eth(b0, a0, None, 100 + i)).collect();
        frames.insert(2, eth(Mac::BROADCAST, a0, None, 60));
        a.send(&mut c, 0, &frames);
        // Two frames fast, the broadcast flooded (into the third buffer),
        // one fast into the fourth, the rest wait in the packet buffer.
        assert_eq!(c.counters.fast_path, 3);
        assert_eq!(c.counters.flooded, 1);
        assert_eq!(b.received(0), frames[..4]);
        assert_eq!(b.received(1), frames[2..3]);
        // New buffers: the packet buffer drains first, in order, and while
        // it holds frames the fast path leaves the queue alone.
        b.post(&mut c, 0, 20);
        a.send(&mut c, 0, &frames[..2]);
        let want = [&frames[..], &frames[..2]].concat();
        assert_eq!(b.received(0), want);
        assert_eq!(c.counters.fast_path, 5);
    }

    #[test]
    fn hostile_descriptors_fail_the_queue_as_on_the_general_path() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 8);
        let (a1, b0, b1) = (mac(&c, 1, 1), mac(&c, 2, 0), mac(&c, 2, 1));
        // A send descriptor outside memory after three good frames: DMA.
        let f = eth(b0, mac(&c, 1, 0), None, 100);
        let tx = a.rings[0].0;
        let t = a.drv.queue_tx(tx, RING, 0, &vec![f; 3]);
        a.drv.put_tx(tx, t, 0xdead_0000, 100, true);
        wr(&mut c, 1, qp_reg(0, 0x10), u32::from(t + 1));
        assert_eq!(b.received(0).len(), 3);
        assert_eq!(c.counters.fast_path, 3);
        let status = rd(&mut c, 1, qp_reg(0, 0x0c));
        assert_eq!((status & 1, (status >> 8) & 0xff), (0, 2), "TX DMA error");
        assert_eq!(a.drv.status(tx, 3) >> 8, 2, "the descriptor is marked");
        assert_eq!(fn_stat(&c, 1, FnStat::QueueErrors), 1);
        // A posted receive buffer of a bad size after eight good ones:
        // LENGTH on the receiver, the eight filled first.
        let rx = b.rings[1].1;
        let buf = b.drv.alloc(64, 64);
        b.drv.put_rx(rx, 8, buf, 20);
        wr(&mut c, 2, qp_reg(1, 0x14), 9);
        let to_b1: Vec<Vec<u8>> = (0..9).map(|i| eth(b1, a1, None, 64 + i)).collect();
        a.send(&mut c, 1, &to_b1);
        assert_eq!(b.received(1), to_b1[..8]);
        assert_eq!(c.counters.fast_path, 11);
        let status = rd(&mut c, 2, qp_reg(1, 0x0c));
        assert_eq!(
            (status & 2, (status >> 16) & 0xff),
            (0, 3),
            "RX LENGTH error"
        );
        assert_eq!(fn_stat(&c, 2, FnStat::QueueErrors), 1);
        assert_eq!(fn_stat(&c, 2, FnStat::RxDrops), 1);
    }

    #[test]
    fn backoff_doubles_up_to_a_burst_and_resets_on_a_take() {
        let mut b = Backoff::default();
        let mut waits = Vec::new();
        for _ in 0..9 {
            assert!(b.due());
            b.tried(0);
            let mut n = 0;
            while !b.due() {
                b.general();
                n += 1;
            }
            waits.push(n);
        }
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 64, 64]);
        b.tried(0);
        b.new_turn();
        assert!(b.due(), "a new turn tries at once");
        b.tried(0);
        b.general();
        assert!(!b.due(), "and keeps the doubling");
        b.tried(5);
        b.tried(0);
        b.general();
        assert!(b.due(), "back to one frame after a take");
    }
}
