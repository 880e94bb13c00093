//! A function's side of the data path: what happens inside one function
//! when the card takes a frame from one of its send queues, completes it,
//! or offers it a frame to receive — its TX and RX policies, its injected
//! faults, its counters and its queue pairs' interrupts, applied in one
//! place. The data path (`crate::datapath`) decides where frames go and
//! calls these; it never reaches into a function's queue pairs itself.

use std::time::Instant;

use crate::dma::DmaSpace;
use crate::fault::{self, FrameFault};
use crate::model::Direction;
use crate::offload::HDR_LEN;
use crate::queue::{Arrival, Backoff};
use crate::regs::FnStat;
use crate::ring::{Ahead, Desc, Features, Ring, Slots, TxFrame};

use super::{Function, MISC_VECTORS};

/// A frame [`Function::tx_take`] took from a send queue.
#[derive(Clone, Copy, Debug)]
pub struct Taken {
    /// The frame's place in its send ring, for its completion.
    pub sent: TxFrame,
    /// What an injected fault does to it (docs/fault-injection.md).
    pub fault: FrameFault,
    /// The send queue's offload features.
    pub features: Features,
}

impl Function {
    /// Counts `n` on the function counter `stat`.
    #[inline]
    pub fn count(&mut self, stat: FnStat, n: u64) {
        self.counters.add(stat, n);
    }

    /// Writes the contexts of its queues back to guest memory (once per
    /// turn of the data path, for the functions it touched), receive
    /// queues first, then fires the interrupts that waited for them.
    pub fn sync_contexts(&mut self) {
        self.sync_rx_contexts();
        self.sync_tx_contexts();
        self.send_deferred_irqs();
    }

    /// Writes back the receive contexts that changed.
    pub fn sync_rx_contexts(&mut self) {
        for qp in &mut self.qps {
            qp.sync_rx(&self.dma);
        }
    }

    /// Writes back the send contexts that changed.
    pub fn sync_tx_contexts(&mut self) {
        for qp in &mut self.qps {
            qp.sync_tx(&self.dma);
        }
    }

    /// Whether anything waits for [`Function::sync_contexts`]: a context
    /// to write back, or an interrupt held until it is.
    pub fn unsettled(&self) -> bool {
        !self.deferred_irqs.is_empty() || self.qps.iter().any(crate::queue::QueuePair::dirty)
    }

    /// When the fast path tries send queue `q` again
    /// ([`crate::queue::Backoff`]).
    pub fn fast_backoff(&self, q: u16) -> Backoff {
        self.qps
            .get(usize::from(q))
            .map_or_else(Backoff::default, |qp| qp.fast_backoff)
    }

    pub fn set_fast_backoff(&mut self, q: u16, backoff: Backoff) {
        if let Some(qp) = self.qps.get_mut(usize::from(q)) {
            qp.fast_backoff = backoff;
        }
    }

    /// Whether [`Function::tx_take`] and [`Function::tx_complete`] would
    /// leave a frame as it is: the link is up, no fault is armed on the
    /// send side and no TX policy meters it. Only then may the fast path
    /// move its frames without them.
    #[inline]
    pub fn tx_plain(&self) -> bool {
        self.link_up() && !self.faults.tx_active() && self.policy.tx_rate.is_none()
    }

    /// Whether [`Function::receive`] would take a frame as it is: the link
    /// is up, no fault is armed on the receive side and no RX policy
    /// meters it. Only then may the fast path deliver without it.
    #[inline]
    pub fn rx_plain(&self) -> bool {
        self.link_up() && !self.faults.rx_active() && self.policy.rx_rate.is_none()
    }

    /// Whether the function's send queues must wait before their next
    /// frame, and until when: an injected completion hold (not for the
    /// exception queue pair), or the TX policy out of tokens (counted in
    /// TX_SHAPED).
    #[inline]
    pub fn tx_wait(&mut self, exception: bool, now: Instant) -> Option<Instant> {
        if !exception && self.faults.tx_active() {
            if let Some(until) = self.faults.completion_hold(&self.name, now) {
                return Some(until);
            }
        }
        let wait = self.policy.tx_rate.as_mut().and_then(|l| l.wait(now))?;
        self.counters.add(FnStat::TxShaped, 1);
        Some(now + wait)
    }

    /// Takes the next frame of send queue `q` into `bytes` (its offload
    /// header into `header`; `ahead`: descriptors read ahead for the
    /// queue), spends its bytes from the TX policy, and says what an
    /// injected fault does to it. None when the queue has nothing, or
    /// failed (the queue's kick is then cleared; a failure is counted in
    /// QUEUE_ERRORS).
    #[inline]
    pub fn tx_take(
        &mut self,
        q: u16,
        exception: bool,
        header: &mut [u8; HDR_LEN],
        bytes: &mut Vec<u8>,
        ahead: &mut Ahead,
    ) -> Option<Taken> {
        let qp = self.qps.get_mut(usize::from(q))?;
        let features = qp.tx.features();
        let sent = match qp.tx_next(&self.name, &self.dma, header, bytes, ahead) {
            Ok(Some(sent)) => sent,
            Ok(None) => {
                qp.tx_kicked = false;
                return None;
            }
            Err(_) => {
                qp.tx_kicked = false;
                self.counters.add(FnStat::QueueErrors, 1);
                return None;
            }
        };
        // Faults armed on the send side (rarely): each check, in order.
        let faulty = !exception && self.faults.tx_active();
        if faulty && self.faults.fail_dma(&self.name, Direction::Tx) {
            qp.fail_injected(&self.name, &self.dma, true);
            self.counters.add(FnStat::QueueErrors, 1);
            return None;
        }
        let fault = if faulty {
            self.faults.frame(&self.name, Direction::Tx)
        } else {
            FrameFault::Pass
        };
        if let Some(l) = self.policy.tx_rate.as_mut() {
            l.take(sent.len);
        }
        if fault == FrameFault::Corrupt {
            fault::corrupt(bytes);
        }
        Some(Taken {
            sent,
            fault,
            features,
        })
    }

    /// Completes a frame [`Function::tx_take`] took from send queue `q`:
    /// `dropped` by the card or not. Returns whether to fire the queue
    /// pair's vector, or None if writing the completion failed (counted
    /// in QUEUE_ERRORS). An injected lost completion leaves the
    /// descriptor as it was.
    #[inline]
    pub fn tx_complete(
        &mut self,
        q: u16,
        exception: bool,
        sent: TxFrame,
        dropped: bool,
        now: Instant,
    ) -> Option<bool> {
        let qp = self.qps.get_mut(usize::from(q))?;
        let faulty = !exception && self.faults.tx_active();
        if faulty && self.faults.drop_completion(&self.name) {
            qp.tx_lost(sent);
            self.counters.add(FnStat::TxPackets, 1);
            self.counters.add(FnStat::TxBytes, sent.len as u64);
            return Some(false);
        }
        let Ok(fire) = qp.tx_done(&self.name, &self.dma, sent, dropped, now) else {
            self.counters.add(FnStat::QueueErrors, 1);
            return None;
        };
        if dropped {
            self.counters.add(FnStat::TxDrops, 1);
        } else {
            self.counters.add(FnStat::TxPackets, 1);
            self.counters.add(FnStat::TxBytes, sent.len as u64);
        }
        Some(fire)
    }

    /// Completes the send descriptors `done` of send queue `q` the fast
    /// path moved (`bytes` of frames, `gso` of them GSO frames). Returns
    /// whether to fire the queue pair's vector, or None if writing the
    /// completions failed (the queue's kick is cleared, the failure
    /// counted).
    pub fn tx_burst_complete(
        &mut self,
        q: u16,
        done: &[Desc],
        bytes: u64,
        gso: u64,
        now: Instant,
    ) -> Option<bool> {
        let qp = self.qps.get_mut(usize::from(q))?;
        match qp.tx_burst_done(&self.name, &self.dma, done, bytes, now) {
            Ok(fire) => {
                self.counters.add(FnStat::TxPackets, done.len() as u64);
                self.counters.add(FnStat::TxBytes, bytes);
                self.counters.add(FnStat::TxGso, gso);
                Some(fire)
            }
            Err(_) => {
                qp.tx_kicked = false;
                self.counters.add(FnStat::QueueErrors, 1);
                None
            }
        }
    }

    /// Offers `frame` to receive queue `q`, if the function's link is up
    /// and its RX policy lets it in, with counters and the queue pair's
    /// (moderated) interrupt; `header` is its offload header, for a queue
    /// that takes offloads. Returns whether the queue took the frame (into
    /// a buffer or its packet buffer).
    pub fn receive(
        &mut self,
        q: u16,
        header: Option<&[u8; HDR_LEN]>,
        frame: &[u8],
        now: Instant,
    ) -> bool {
        if self.faults.removed() {
            self.faults.count_removed_drop();
            return false;
        }
        if !self.link_up() {
            self.counters.add(FnStat::LinkDrops, 1);
            return false;
        }
        if let Some(l) = self.policy.rx_rate.as_mut() {
            if !l.admit(frame.len(), now) {
                self.counters.add(FnStat::RxRateDrops, 1);
                return false;
            }
        }
        let Some(qp) = self.qps.get_mut(usize::from(q)) else {
            return false;
        };
        let mut corrupted = Vec::new();
        let mut frame = frame;
        if qp.rx.running() && self.faults.rx_active() {
            if self.faults.fail_dma(&self.name, Direction::Rx) {
                qp.fail_injected(&self.name, &self.dma, false);
                self.counters.add(FnStat::RxDrops, 1);
                self.counters.add(FnStat::QueueErrors, 1);
                return false;
            }
            match self.faults.frame(&self.name, Direction::Rx) {
                FrameFault::Pass => {}
                FrameFault::Drop => return false,
                FrameFault::Corrupt => {
                    corrupted.extend_from_slice(frame);
                    fault::corrupt(&mut corrupted);
                    frame = &corrupted;
                }
            }
        }
        let (taken, fire) = match qp.rx_put(&self.name, &self.dma, header, frame, now) {
            Ok(Arrival::Delivered { fire }) => {
                self.counters.add(FnStat::RxPackets, 1);
                self.counters.add(FnStat::RxBytes, frame.len() as u64);
                (true, fire)
            }
            Ok(Arrival::Buffered) => (true, false),
            Ok(Arrival::Dropped) => {
                self.counters.add(FnStat::RxDrops, 1);
                (false, false)
            }
            Err(_) => {
                self.counters.add(FnStat::RxDrops, 1);
                self.counters.add(FnStat::QueueErrors, 1);
                (false, false)
            }
        };
        if fire {
            self.raise_irq(MISC_VECTORS + u32::from(q));
        }
        taken
    }

    /// The fast path's receive side: lets `copy` write frames into the
    /// posted buffers of receive queue `q` (through this function's guest
    /// memory, the ring's slots and the ring, whose head it moves), then
    /// completes what it moved, counts it and raises the queue pair's
    /// interrupt as the general path would. `copy` returns its own result
    /// with the frames and bytes it moved. None if the queue does not take
    /// frames on the fast path now.
    pub fn fast_receive<R>(
        &mut self,
        q: u16,
        now: Instant,
        copy: impl FnOnce(&DmaSpace, &Slots, &mut Ring) -> (R, usize, u64),
    ) -> Option<R> {
        let qp = self.qps.get_mut(usize::from(q))?;
        let (mut ring, _) = qp.fast_rx()?;
        let slots = ring.slots(&self.dma)?;
        let (result, frames, bytes) = copy(&self.dma, &slots, &mut ring);
        let fire = qp.rx_burst_done(ring.head, frames, bytes, now);
        self.counters.add(FnStat::RxPackets, frames as u64);
        self.counters.add(FnStat::RxBytes, bytes);
        if fire {
            self.raise_irq(MISC_VECTORS + u32::from(q));
        }
        Some(result)
    }

    /// Fires the interrupts whose moderation interval has passed, and
    /// those an injected fault delayed.
    pub fn run_timers(&mut self, now: Instant) {
        self.send_delayed_irqs(now);
        let due: Vec<u16> = self
            .qps
            .iter_mut()
            .filter(|qp| qp.irq.deadline.is_some_and(|d| d <= now))
            .filter_map(|qp| qp.irq.poll(now).then_some(qp.index))
            .collect();
        for q in due {
            self.raise_irq(MISC_VECTORS + u32::from(q));
        }
    }
}
