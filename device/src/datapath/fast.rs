//! The fast path (docs/datapath.md, "The fast path"): bursts of plain
//! unicast frames from one vNIC to another, each copied once, from the
//! sending guest's buffer straight into the receiving guest's buffer.
//!
//! It takes a frame only where the general path (`crate::datapath`) would
//! do nothing with it but put it into the next receive buffer of one vNIC:
//! one send descriptor, an offload header (if the queue has them) that
//! asks nothing or asks what the receiving queue takes as it is (nothing
//! for the card to compute), no capture of the sender's frames, no VxLAN
//! segment, no port VLAN on either vNIC, no rate policy on either
//! function, both links up, the receive queue running with nothing
//! waiting in its packet buffer and a posted buffer the frame (and the
//! receive queue's header) fits. Everything is checked before a frame's
//! first byte moves; the first frame it declines, and those after it, are
//! left to the general path, which checks them again and reports what is
//! wrong. Guest memory, counters, contexts and interrupts end up as the
//! general path leaves them.
//!
//! What makes it fast is doing per burst what the general path does per
//! frame: the sender's and receiver's state is looked up once, the send
//! and receive descriptors are read with one DMA read each and the send
//! descriptors written back with one DMA write, and the switch decides once
//! for all frames of the burst that share the first frame's addressing.

use std::time::Instant;

use super::{SendingQueue, Switching};
use crate::dma::{DmaSpace, DmaWindow, GuestBytes};
use crate::function::Function;
use crate::offload::request::{check, takes, OffloadRequest};
use crate::offload::HDR_LEN;
use crate::ring::{Desc, Features, Ring, RxStatus, Slots, MAX_BURST};
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
    /// Bytes of the frames (without offload headers).
    bytes: u64,
    /// Of the frames, GSO frames.
    gso: u64,
}

impl Switching<'_> {
    /// Whether the fast path may take frames of the vNIC whose turn it is
    /// at all: nothing about the sender needs the general path (its link is
    /// up, no TX rate policy, no capture of its frames, no VxLAN segment,
    /// no port VLAN). Its send queue is checked with each burst.
    pub(crate) fn fast_sender(&self, turn: &SendingQueue) -> bool {
        let from = turn.from;
        let Some(func) = self.functions.get(from.function) else {
            return false;
        };
        let captured = self
            .capture
            .as_ref()
            .is_some_and(|c| c.wants(from.function));
        self.fast_path && func.tx_plain() && !captured && !turn.vxlan && turn.sender.pvid == 0
    }

    /// The offload features and `max_frame` of vNIC `to`'s receive
    /// queue, if the fast path may deliver into it: its link is up, no RX
    /// rate policy, no port VLAN, and its receive queue takes frames
    /// ([`crate::queue::QueuePair::fast_rx`]).
    fn fast_receiver(&self, to: Port) -> Option<(Features, u16)> {
        let func = self.functions.get(to.function)?;
        let ok = func.rx_plain() && self.switch.pvid(to) == 0;
        let qp = func.all_queue_pairs().get(usize::from(to.qp))?;
        let max_frame = qp.rx_max_frame();
        qp.fast_rx()
            .filter(|_| ok)
            .map(|(_, features)| (features, max_frame))
    }

    /// Switches a burst of at most `budget` frames from the head of the
    /// send queue whose turn it is (a sender [`Switching::fast_sender`]
    /// accepted), all to the destination of the first: as many as take
    /// the fast path, possibly none.
    pub(crate) fn fast_burst(&mut self, turn: &SendingQueue, budget: usize, now: Instant) -> Burst {
        let from = turn.from;
        let mut descs = [Desc::default(); MAX_BURST];
        let descs = &mut descs[..budget.min(MAX_BURST)];
        let Some((n, plan)) = self.fast_start(turn, descs) else {
            return Burst::default();
        };
        let moved = self.fast_copy(from.function, &descs[..n], &plan, now);
        if moved.frames == 0 {
            return Burst::default();
        }
        self.fast_complete(from, &descs[..moved.frames], &moved, now)
    }

    /// Decides where the first pending frame of the queue goes and, if it is
    /// one for the fast path, reads the pending send descriptors into
    /// `descs` (one read; the first alone before, so that a try the fast
    /// path declines costs little). Returns how many were read and the
    /// burst's plan.
    fn fast_start(&self, turn: &SendingQueue, descs: &mut [Desc]) -> Option<(usize, Plan)> {
        let from = turn.from;
        let func = self.functions.get(from.function)?;
        let (ring, tx) = func
            .all_queue_pairs()
            .get(usize::from(from.qp))?
            .fast_tx()?;
        let slots = ring.slots(func.dma())?;
        let first = descs.first_mut()?;
        if slots.read_pending(std::slice::from_mut(first)) == 0 {
            return None;
        }
        let sent = Sent::read::<true>(&mut DmaWindow::new(func.dma()), first, tx)?;
        let (head, n) = frame_head(&sent.frame);
        let Decision::Unicast(to) = self.switch.forward_as(&turn.sender, &head[..n]) else {
            return None;
        };
        let (rx, rx_max) = self.fast_receiver(to)?;
        let plan = Plan {
            info: sent.info,
            to,
            tx,
            rx,
            rx_max,
        };
        plan.takes(&sent).then(|| (slots.read_pending(descs), plan))
    }

    /// Copies the frames of `descs` (send descriptors of function `src`)
    /// into the receive queue of `plan`, from the first, while they take
    /// the fast path; counts them there and raises its interrupt as the
    /// general path would.
    fn fast_copy(&mut self, src: usize, descs: &[Desc], plan: &Plan, now: Instant) -> Moved {
        let to = plan.to;
        let moved = if to.function == src {
            self.functions.get_mut(src).and_then(|f| {
                f.fast_receive(to.qp, now, |dst, slots, ring| {
                    copy_burst(dst, dst, slots, ring, descs, plan)
                })
            })
        } else {
            receiver_and_sender(self.functions, to.function, src).and_then(|(dst, sender)| {
                let src_dma = sender.dma();
                dst.fast_receive(to.qp, now, |dst, slots, ring| {
                    copy_burst(src_dma, dst, slots, ring, descs, plan)
                })
            })
        };
        let moved = moved.unwrap_or_default();
        if moved.frames > 0 {
            self.touch(to.function);
        }
        moved
    }

    /// Completes the send descriptors `done` of `from` (the frames the
    /// burst switched, `moved`) and counts them, as the general path does
    /// frame by frame.
    fn fast_complete(&mut self, from: Port, done: &[Desc], moved: &Moved, now: Instant) -> Burst {
        let frames = done.len();
        self.counters.switched += frames as u64;
        self.counters.fast_path += frames as u64;
        let func = &mut self.functions[from.function];
        match func.tx_burst_complete(from.qp, done, moved.bytes, moved.gso, now) {
            Some(fire) => Burst {
                frames,
                fire,
                failed: false,
            },
            None => Burst {
                frames,
                fire: false,
                failed: true,
            },
        }
    }
}

/// Where a burst goes and how: the first frame's addressing (every frame
/// of the burst has the same, so the switch decides the same), the
/// receiving vNIC, and the offload features of the two queues.
#[derive(Clone, Copy, Debug)]
struct Plan {
    info: FrameInfo,
    to: Port,
    tx: Features,
    rx: Features,
    /// The receive queue's `max_frame` (0: none).
    rx_max: u16,
}

impl Plan {
    /// Whether `sent` goes with the burst: the same addressing, a request
    /// (if any) that the receive queue takes as it is, so that no checksum
    /// or segmentation is left for the card to do, and no more bytes than
    /// the receive queue's `max_frame` (a longer frame, a GSO frame whose
    /// segments may fit included, is the general path's to judge).
    fn takes(&self, sent: &Sent) -> bool {
        sent.info == self.info
            && sent.request.as_ref().is_none_or(|r| takes(self.rx, r))
            && (self.rx_max == 0 || sent.frame.len() <= usize::from(self.rx_max))
    }

    /// The offload header the receive queue gets in front of `sent`: the
    /// request as the sender made it, or zeros (a queue without
    /// `VNET_HDR` gets none).
    fn rx_header(&self, sent: &Sent) -> [u8; HDR_LEN] {
        sent.request.map_or([0; HDR_LEN], |r| r.hdr.to_bytes())
    }
}

/// A sent frame the fast path takes: its bytes in guest memory (behind
/// the offload header), what the header asks of the card, and its
/// addressing.
struct Sent<'a> {
    frame: GuestBytes<'a>,
    request: Option<OffloadRequest>,
    info: FrameInfo,
}

impl<'a> Sent<'a> {
    /// Reads the frame of send descriptor `d` through `src` (its offload
    /// header first, on a queue with `VNET_HDR` in `tx`), if the fast path
    /// takes it: one buffer, of a length the general path takes, inside
    /// one mapping, behind a header the card accepts (as
    /// [`crate::offload::request::check`] does on the general path).
    /// `OFFLOAD`: the queue may have offload headers (else it has none).
    fn read<const OFFLOAD: bool>(
        src: &mut DmaWindow<'a>,
        d: &Desc,
        tx: Features,
    ) -> Option<Sent<'a>> {
        let hdr_len = if OFFLOAD { tx.header_len() } else { 0 };
        let (addr, len) = d.plain_tx(hdr_len)?;
        let buf = src.source(addr, len)?;
        let (frame, request) = if hdr_len == 0 {
            (buf, None)
        } else {
            let (hdr, frame) = buf.split_at(hdr_len)?;
            let mut h = [0u8; HDR_LEN];
            hdr.read_head(&mut h);
            (frame, check(tx, &h, frame.len()).ok()?)
        };
        let (head, n) = frame_head(&frame);
        let info = FrameInfo::parse(&head[..n])?;
        Some(Sent {
            frame,
            request,
            info,
        })
    }

    fn gso(&self) -> bool {
        self.request.is_some_and(|r| r.gso)
    }
}

/// The first bytes of a frame in guest memory, as many as the switch's
/// decision reads (fewer for a shorter frame), and how many there are.
fn frame_head(frame: &GuestBytes) -> ([u8; DECISION_BYTES], usize) {
    let mut head = [0u8; DECISION_BYTES];
    let n = frame.read_head(&mut head);
    (head, n)
}

/// Function `dst`, to deliver into, and function `src`, to copy from
/// (two different functions), borrowed together.
fn receiver_and_sender(
    functions: &mut [Function],
    dst: usize,
    src: usize,
) -> Option<(&mut Function, &Function)> {
    let split = dst.max(src);
    if dst == src || split >= functions.len() {
        return None;
    }
    let (low, high) = functions.split_at_mut(split);
    Some(if dst < src {
        (&mut low[dst], &high[0])
    } else {
        (&mut high[0], &low[src])
    })
}

/// Copies the frames of `descs` from `src` into the posted buffers of the
/// receive ring `ring` (memory `dst`, through `slots`), one buffer each,
/// from the first while each takes the fast path ([`copy_frame`]).
/// Returns what it moved, with its frames and bytes (for the receiving
/// function's completion and counters).
fn copy_burst(
    src: &DmaSpace,
    dst: &DmaSpace,
    slots: &Slots,
    ring: &mut Ring,
    descs: &[Desc],
    plan: &Plan,
) -> (Moved, usize, u64) {
    let mut posted = [Desc::default(); MAX_BURST];
    let k = slots.read_pending(&mut posted[..descs.len()]);
    let pairs = descs.iter().zip(&posted[..k]);
    let mut src = DmaWindow::new(src);
    // Queues with offload headers in their own loop: the header work left
    // in the loop of plain frames cost them 15-25 % (measured).
    let moved = if plan.tx.vnet_hdr() || plan.rx.vnet_hdr() {
        copy_frames::<true>(&mut src, dst, slots, ring, pairs, plan)
    } else {
        copy_frames::<false>(&mut src, dst, slots, ring, pairs, plan)
    };
    (moved, moved.frames, moved.bytes)
}

/// Copies the frames of the send and receive descriptor pairs `pairs`
/// (the receive ring `ring`, in `dst` through `slots`) while each takes
/// the fast path ([`copy_frame`]), writing each receive descriptor back
/// after its frame and moving the ring's head. `OFFLOAD`: either queue
/// has offload headers.
fn copy_frames<'d, const OFFLOAD: bool>(
    src: &mut DmaWindow,
    dst: &DmaSpace,
    slots: &Slots,
    ring: &mut Ring,
    pairs: impl Iterator<Item = (&'d Desc, &'d Desc)>,
    plan: &Plan,
) -> Moved {
    let mut moved = Moved::default();
    let status = RxStatus::new().with_done(true).with_eop(true);
    let mut to = DmaWindow::new(dst);
    for (d, r) in pairs {
        let Some(copied) = copy_frame::<OFFLOAD>(src, &mut to, d, r, plan) else {
            break;
        };
        // The length and DONE after the data, with one 8-byte store.
        if !slots.complete_rx(ring.head, r, copied.written as u16, status) {
            break;
        }
        ring.advance(1);
        moved.frames += 1;
        moved.bytes += copied.len as u64;
        moved.gso += u64::from(copied.gso);
    }
    moved
}

/// A frame [`copy_frame`] copied.
struct Copied {
    /// Bytes of the frame.
    len: usize,
    /// Bytes written into the receive buffer (with its offload header).
    written: usize,
    /// A GSO frame (sent unsegmented).
    gso: bool,
}

/// Copies the frame of send descriptor `d` (memory `src`) into the buffer
/// of receive descriptor `r` (memory `dst`), behind the receive queue's
/// offload header if it has one, if it goes with the burst of `plan`
/// ([`Sent::read`], [`Plan::takes`]) and fits the posted buffer, inside
/// one writable mapping. None, and nothing written, otherwise.
fn copy_frame<const OFFLOAD: bool>(
    src: &mut DmaWindow,
    dst: &mut DmaWindow,
    d: &Desc,
    r: &Desc,
    plan: &Plan,
) -> Option<Copied> {
    let sent = Sent::read::<OFFLOAD>(src, d, plan.tx)?;
    if !plan.takes(&sent) {
        return None;
    }
    let hdr_len = if OFFLOAD { plan.rx.header_len() } else { 0 };
    let written = hdr_len + sent.frame.len();
    let mut to = dst.target(r.rx_fits(written)?, written)?;
    if hdr_len > 0 {
        let (hdr, body) = to.split_at(hdr_len)?;
        if !hdr.write(0, &plan.rx_header(&sent)) {
            return None;
        }
        to = body;
    }
    to.copy_from(sent.frame).then_some(Copied {
        len: sent.frame.len(),
        written,
        gso: sent.gso(),
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use crate::card::Card;
    use crate::control::api::StatsInfo;
    use crate::function::FunctionStats;
    use crate::model::Mac;
    use crate::queue::Backoff;
    use crate::regs::FnStat;
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
            functions: c.functions().iter().map(|f| f.stats()).collect(),
            memory,
            status,
        }
    }

    /// Runs `scenario` on a card with VF0 and VF1 attached (8 buffers
    /// posted on each vNIC, no interrupt moderation, so that which
    /// completion fires depends on the order of events alone, not on the
    /// clock) twice, with the fast path on and off, and checks that both
    /// runs leave the same. Returns how many frames the fast path moved.
    pub(crate) fn same_as_general_path(scenario: impl Fn(&mut Card, &mut Vm, &mut Vm)) -> u64 {
        let run = |fast: bool| {
            let mut c = card();
            c.datapath_mut().set_fast_path(fast);
            let mut a = Vm::attach(&mut c, 1, 8);
            let mut b = Vm::attach(&mut c, 2, 8);
            for (f, q) in [(1, 0), (1, 1), (2, 0), (2, 1)] {
                wr(&mut c, f, qp_reg(q, 0x1c), 0);
            }
            scenario(&mut c, &mut a, &mut b);
            (outcome(&mut c, &[&a, &b]), c.counters().datapath.fast_path)
        };
        let ((fast, moved), (general, none)) = (run(true), run(false));
        assert_eq!(none, 0);
        assert_eq!(fast.stats, general.stats);
        assert_eq!(fast.functions, general.functions);
        assert_eq!(fast.status, general.status);
        for (i, (f, g)) in fast.memory.iter().zip(&general.memory).enumerate() {
            let first = f.iter().zip(g).position(|(x, y)| x != y);
            assert_eq!(first, None, "guest {i}: first difference");
        }
        moved
    }

    /// Both guests' drivers re-enable every queue pair's interrupt, as
    /// at the end of a NAPI poll.
    pub(crate) fn rearm(c: &mut Card) {
        for (f, q) in [(1, 0), (1, 1), (2, 0), (2, 1)] {
            wr(c, f, qp_reg(q, 0x18), 1);
        }
    }

    /// Unicast streams between two VFs with one of every frame the fast
    /// path declines among them, a receiver that runs out of buffers, a
    /// frame in two descriptors, and hostile send and receive descriptors.
    fn mixed_traffic(c: &mut Card, a: &mut Vm, b: &mut Vm) {
        let (a0, a1, b0, b1) = (mac(c, 1, 0), mac(c, 1, 1), mac(c, 2, 0), mac(c, 2, 1));
        wr(c, 1, qp_reg(0, 0x20), 10);
        wr(c, 2, qp_reg(0, 0x20), 10);
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
        a.send(c, 0, &frames);
        rearm(c);
        b.post(c, 0, 40);
        rearm(c);
        a.send(c, 0, &frames[..20]);
        rearm(c);
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
        a.send(c, 0, &frames[..5]);
        rearm(c);
        // A send descriptor outside memory after three good frames.
        let t = a.drv.queue_tx(a.rings[1].0, RING, 0, &frames[..3]);
        a.drv.put_tx(a.rings[1].0, t, 0xdead_0000, 100, true);
        wr(c, 1, qp_reg(1, 0x10), u32::from(t + 1));
        rearm(c);
        // A receive descriptor outside memory after two good buffers.
        let rx = b.rings[1].1;
        b.drv.put_rx(rx, 10, 0xdead_0000, BUF);
        wr(c, 2, qp_reg(1, 0x14), 11);
        let to_b1: Vec<Vec<u8>> = (0..4).map(|i| eth(b1, a0, None, 200 + i)).collect();
        a.send(c, 0, &to_b1);
        rearm(c);
    }

    #[test]
    fn the_fast_path_leaves_what_the_general_path_leaves() {
        let moved = same_as_general_path(mixed_traffic);
        assert!(
            moved >= 25,
            "the fast path took most unicast frames: {moved}"
        );
    }

    #[test]
    fn frames_over_the_receivers_max_frame_are_left_to_the_general_path() {
        let moved = same_as_general_path(|c, a, b| {
            assert_eq!(b.set_max_frame(c, 0, 1518) & 3, 3);
            let (a0, b0) = (mac(c, 1, 0), mac(c, 2, 0));
            // 1600 bytes fit a 2 KiB buffer, but not the MTU.
            let frames: Vec<Vec<u8>> = [100, 1514, 1600, 200, 1518, 1519, 60]
                .into_iter()
                .map(|n| eth(b0, a0, None, n))
                .collect();
            a.send(c, 0, &frames);
            let got: Vec<usize> = b.received(0).iter().map(Vec::len).collect();
            assert_eq!(got, [100, 1514, 200, 1518, 60]);
            assert_eq!(fn_stat(c, 2, FnStat::RxDrops), 2);
        });
        assert!(
            moved >= 3,
            "the frames that fit took the fast path: {moved}"
        );
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
        assert_eq!(c.counters().datapath.fast_path, 6);
        assert_eq!(c.counters().datapath.switched, 6);
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
        assert_eq!(c.counters().datapath.fast_path, 3);
        assert_eq!(c.counters().datapath.flooded, 1);
        assert_eq!(b.received(0), frames[..4]);
        assert_eq!(b.received(1), frames[2..3]);
        // New buffers: the packet buffer drains first, in order, and while
        // it holds frames the fast path leaves the queue alone.
        b.post(&mut c, 0, 20);
        a.send(&mut c, 0, &frames[..2]);
        let want = [&frames[..], &frames[..2]].concat();
        assert_eq!(b.received(0), want);
        assert_eq!(c.counters().datapath.fast_path, 5);
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
        assert_eq!(c.counters().datapath.fast_path, 3);
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
        assert_eq!(c.counters().datapath.fast_path, 11);
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
