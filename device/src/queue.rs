//! Queue pairs: one vNIC's send and receive queues, their cached contexts,
//! their BAR0 control area and their interrupt moderation.
//!
//! A queue's state lives in guest memory (see [`crate::state`]); the card
//! keeps a cached copy while the queue runs and writes it back after every
//! batch, on stop, on reset and when the client goes away.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use bitfield_struct::bitfield;

use crate::clientlog::{Cause, ClientLog};
use crate::dma::DmaSpace;
use crate::model::{Mac, RxFilter};
use crate::offload::HDR_LEN;
use crate::ring::{
    self, Ahead, Desc, Features, QueueError, Ring, RxBytes, RxOutcome, TxFrame, MAX_BURST,
};
use crate::state::{ctx_state, Bat, Context, ServiceType};

/// Default interrupt moderation interval (QP_ITR reset value), µs.
pub const DEFAULT_ITR_US: u16 = 20;
/// The card's receive packet buffer per queue: frames that arrive while the
/// driver has no buffer posted wait here (as in a NIC's on-chip packet
/// buffer) and go out with the next receive doorbell. Only when it is full
/// are frames dropped.
pub const RX_BUFFER_BYTES: usize = 1024 * 1024;

/// QP_CTRL.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct QpCtrl {
    pub tx_enable: bool,
    pub rx_enable: bool,
    #[bits(30)]
    __: u32,
}

/// QP_STATUS.
#[bitfield(u32)]
pub struct QpStatus {
    pub tx_running: bool,
    pub rx_running: bool,
    pub tx_error: bool,
    pub rx_error: bool,
    #[bits(4)]
    __: u8,
    pub tx_code: u8,
    pub rx_code: u8,
    __: u8,
}

/// QP_VLAN.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct QpVlan {
    #[bits(12)]
    pub vid: u16,
    #[bits(19)]
    __: u32,
    pub leave: bool,
}

/// QP_RX_MODE (interface 1.5): writing it hands the card the vNIC's
/// receive filter, COUNT 8-byte entries at QP_FILTER_HI:LO.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct QpRxMode {
    pub promisc: bool,
    pub allmulti: bool,
    #[bits(14)]
    __: u16,
    pub count: u16,
}

/// QP_ADDR_STATUS (interface 1.5): what the card made of the last
/// QP_RX_MODE and of the last QP_MAC write.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct AddrStatus {
    /// Promiscuous mode granted.
    pub promisc: bool,
    /// All-multicast granted.
    pub allmulti: bool,
    /// Promiscuous mode refused: the VF is not trusted.
    pub promisc_refused: bool,
    /// Unicast addresses refused: beyond the VF's limit.
    pub over_limit: bool,
    /// Unicast addresses refused: another vNIC's.
    pub taken: bool,
    /// The list was unreadable or too long: nothing changed.
    pub list_error: bool,
    #[bits(2)]
    __: u8,
    /// The last QP_MAC write was refused: the VF is not trusted.
    pub mac_untrusted: bool,
    /// The last QP_MAC write was refused: another vNIC has the address.
    pub mac_taken: bool,
    #[bits(6)]
    __: u8,
    /// Extra unicast addresses in effect.
    pub unicast: u16,
}

/// One entry of a receive filter list in guest memory: a MAC address and
/// two reserved bytes.
pub const FILTER_ENTRY_BYTES: usize = 8;

/// One queue (send or receive) of a queue pair.
#[derive(Debug)]
pub struct Queue {
    ty: ServiceType,
    /// Guest address of the context, once found.
    ctx_addr: Option<u64>,
    /// Cached context; its counters stay readable after the queue stops.
    ctx: Context,
    /// Some while the queue runs.
    ring: Option<Ring>,
    error: Option<QueueError>,
    /// The cache differs from guest memory.
    dirty: bool,
    /// Offloads the running queue uses (from its context).
    features: Features,
    /// A receive queue's longest frame (from its context's `max_frame`);
    /// 0: no limit but the buffers'. 0 on a send queue.
    max_frame: u16,
    /// Only these features may be asked for (the PF's exception queue
    /// pair allows fewer).
    exception: bool,
}

impl Queue {
    fn new(ty: ServiceType) -> Self {
        Queue {
            ty,
            ctx_addr: None,
            ctx: Context::default(),
            ring: None,
            error: None,
            dirty: false,
            features: Features::new(),
            max_frame: 0,
            exception: false,
        }
    }

    pub fn features(&self) -> Features {
        self.features
    }

    pub fn running(&self) -> bool {
        self.ring.is_some()
    }

    pub fn error(&self) -> Option<QueueError> {
        self.error
    }

    pub fn context(&self) -> &Context {
        &self.ctx
    }

    pub fn head(&self) -> u16 {
        self.ring.map_or(self.ctx.head, |r| r.head)
    }

    pub fn tail(&self) -> u16 {
        self.ring.map_or(self.ctx.tail, |r| r.tail)
    }

    /// Finds and loads the context of queue `q` and starts the ring it
    /// describes from its stored indices.
    fn start(&mut self, dma: &DmaSpace, bat: Option<&Bat>, q: u16) -> Result<(), QueueError> {
        self.error = None;
        let bat = bat.ok_or(QueueError::Context)?;
        let addr = bat
            .context_address(dma, self.ty, q)
            .map_err(|_| QueueError::Context)?;
        self.ctx_addr = Some(addr);
        self.ctx = Context::load(dma, addr).map_err(|_| QueueError::Context)?;
        let c = &self.ctx;
        let features = Features::from_bits(c.features);
        let receive = self.ty == ServiceType::ReceiveQueue;
        if !features.valid(receive, self.exception) {
            return Err(QueueError::Features(c.features));
        }
        self.ring = Some(Ring::new(dma, c.ring, c.size, c.head, c.tail)?);
        self.features = features;
        // The PF's exception queue pair carries messages, not frames of a
        // netdev with an MTU.
        self.max_frame = if receive && !self.exception {
            c.max_frame
        } else {
            0
        };
        self.ctx.state = ctx_state::RUNNING;
        self.ctx.error = 0;
        self.store(dma);
        Ok(())
    }

    /// Copies the ring's indices into the cached context.
    fn capture(&mut self) {
        if let Some(r) = self.ring {
            self.ctx.head = r.head;
            self.ctx.tail = r.tail;
        }
    }

    /// Writes the cached context back to guest memory.
    fn store(&mut self, dma: &DmaSpace) {
        self.capture();
        self.dirty = false;
        if let Some(addr) = self.ctx_addr {
            // The context was readable when it was found; if the guest
            // unmapped it since, there is nothing left to update.
            let _ = self.ctx.store(dma, addr);
        }
    }

    /// Stops the queue at the driver's request: RUNNING is cleared.
    fn stop(&mut self, dma: &DmaSpace) {
        if self.ring.is_some() {
            self.capture();
            self.ctx.state &= !ctx_state::RUNNING;
            self.store(dma);
            self.ring = None;
        }
        self.error = None;
    }

    /// Writes the context back as it is (a RUNNING queue stays RUNNING in
    /// guest memory, so a card given the VCT later resumes it) and forgets it.
    fn flush(&mut self, dma: &DmaSpace) {
        if self.ring.is_some() || self.dirty {
            self.store(dma);
        }
        let exception = self.exception;
        *self = Queue::new(self.ty);
        self.exception = exception;
    }

    /// The queue broke a rule: error state, counted, logged by the caller.
    fn fail(&mut self, dma: &DmaSpace, e: QueueError) {
        self.capture();
        self.error = Some(e);
        self.ctx.count_error();
        self.ctx.state = ctx_state::ERROR;
        self.ctx.error = e.code();
        self.store(dma);
        self.ring = None;
    }

    fn doorbell(&mut self, value: u32) -> Result<bool, QueueError> {
        match self.ring.as_mut() {
            Some(r) => r.set_tail(value).map(|_| true),
            // A doorbell for a stopped queue is ignored (a driver racing
            // its own stop), as on most NICs.
            None => Ok(false),
        }
    }
}

/// QP_IRQ.
#[bitfield(u32)]
pub struct QpIrq {
    /// Re-enable the queue pair's self-masking vector.
    pub rearm: bool,
    /// Interface 1.1: the write is a receive doorbell for `tail` too,
    /// handled before the rearm (one message per NAPI poll, not two).
    pub rx_tail: bool,
    #[bits(14)]
    __: u16,
    #[bits(12)]
    pub tail: u16,
    #[bits(4)]
    __: u8,
}

/// QP_ITR.
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct QpItr {
    /// Fixed interval, µs (0 = off); while `adaptive`, reads back the
    /// interval the card chose last.
    pub usecs: u16,
    /// Interface 1.3: how long a send completion may wait for its
    /// interrupt, µs (`ethtool -C tx-usecs`); 0: as long as a receive
    /// completion (the 1.2 behaviour). See [`Moderation`].
    #[bits(15)]
    pub tx_usecs: u16,
    /// The card picks the interval from the queue pair's load.
    pub adaptive: bool,
}

/// Adaptive moderation: below this many completions per second, interrupt
/// at once (a ping, a request/response: latency matters).
pub const ADAPTIVE_LOW_RATE: u64 = 10_000;
/// Adaptive moderation aims at this many completions per interrupt...
pub const ADAPTIVE_FRAMES: u64 = 4;
/// ...with an interval of at most this, µs.
pub const ADAPTIVE_MAX_US: u64 = 128;

/// Self-masking interrupt with a minimum interval (docs/datapath.md),
/// fixed or adapted to the load.
///
/// Send completions may wait longer than received frames (`tx_interval`):
/// a sender only needs them to reuse its ring and free its buffers, and
/// in a TCG guest each interrupt costs the sender an exit, a NAPI poll and
/// a rearm message, which is what limits a small-datagram sender. A
/// received frame or a full `tx_interval` fires the vector; either
/// covers everything completed.
#[derive(Debug)]
pub struct Moderation {
    interval: Duration,
    /// How long a send completion may wait (0: as a receive).
    tx_interval: Duration,
    adaptive: bool,
    armed: bool,
    /// Something completed since the last interrupt that fires on the
    /// normal interval (a received frame, or any completion when
    /// `tx_interval` is 0).
    pending: bool,
    /// The oldest send completion the last interrupt did not cover.
    tx_since: Option<Instant>,
    last: Option<Instant>,
    /// When the timer must fire a held-back interrupt.
    pub deadline: Option<Instant>,
    /// Completions since the last interrupt.
    completions: u64,
    /// Smoothed completions per second (adaptive).
    rate: u64,
}

impl Moderation {
    fn new() -> Self {
        Moderation {
            interval: Duration::from_micros(DEFAULT_ITR_US as u64),
            tx_interval: Duration::ZERO,
            adaptive: false,
            armed: true,
            pending: false,
            tx_since: None,
            last: None,
            deadline: None,
            completions: 0,
            rate: 0,
        }
    }

    /// QP_ITR as the driver reads it back.
    pub fn itr(&self) -> QpItr {
        QpItr::new()
            .with_usecs(self.interval.as_micros().min(u16::MAX.into()) as u16)
            .with_tx_usecs(self.tx_interval.as_micros() as u16)
            .with_adaptive(self.adaptive)
    }

    /// A QP_ITR write.
    pub fn set_itr(&mut self, v: QpItr) {
        self.adaptive = v.adaptive();
        self.interval = Duration::from_micros(if self.adaptive { 0 } else { v.usecs().into() });
        self.tx_interval = Duration::from_micros(v.tx_usecs().into());
        if self.tx_interval.is_zero() && self.tx_since.take().is_some() {
            self.pending = true;
        }
        self.rate = 0;
    }

    pub fn interval_us(&self) -> u32 {
        self.interval.as_micros() as u32
    }

    /// Adaptive: from the completions since the last interrupt, the
    /// interval that gathers about [`ADAPTIVE_FRAMES`] of them per
    /// interrupt under load, and none at a low rate. Fewer interrupts per
    /// frame is what a guest whose CPU is the bottleneck needs (each one
    /// costs an exit, a NAPI poll, a doorbell and a rearm).
    fn adapt(&mut self, now: Instant) {
        let Some(last) = self.last else {
            return;
        };
        let elapsed = now.saturating_duration_since(last).as_micros().max(1) as u64;
        let rate = self.completions.saturating_mul(1_000_000) / elapsed;
        self.rate = (self.rate * 3 + rate) / 4;
        let us = if self.rate < ADAPTIVE_LOW_RATE {
            0
        } else {
            (ADAPTIVE_FRAMES * 1_000_000 / self.rate).min(ADAPTIVE_MAX_US)
        };
        self.interval = Duration::from_micros(us);
    }

    /// When the vector may fire for what is pending (`None`: nothing is;
    /// `now` when nothing holds it back).
    fn due(&self, now: Instant) -> Option<Instant> {
        let spaced = self.last.map_or(now, |l| l + self.interval);
        let normal = self.pending.then_some(spaced);
        let send = self
            .tx_since
            .map(|since| (since + self.tx_interval).max(spaced));
        normal.into_iter().chain(send).min()
    }

    /// Whether the vector should fire now.
    pub fn poll(&mut self, now: Instant) -> bool {
        let due = if self.armed { self.due(now) } else { None };
        let Some(due) = due else {
            self.deadline = None;
            return false;
        };
        if now < due {
            self.deadline = Some(due);
            return false;
        }
        if self.adaptive {
            self.adapt(now);
        }
        self.armed = false;
        self.pending = false;
        self.tx_since = None;
        self.last = Some(now);
        self.deadline = None;
        self.completions = 0;
        true
    }

    /// A completion was written (a received frame; any completion before
    /// interface 1.3).
    pub fn event(&mut self, now: Instant) -> bool {
        self.pending = true;
        self.completions += 1;
        self.poll(now)
    }

    /// A send completion was written: fires no sooner than `tx_interval`
    /// after the oldest one pending, unless something else fires first.
    pub fn tx_event(&mut self, now: Instant) -> bool {
        if self.tx_interval.is_zero() {
            return self.event(now);
        }
        self.tx_since.get_or_insert(now);
        self.completions += 1;
        self.poll(now)
    }

    /// `n` send completions written at the same instant: as
    /// [`Moderation::events`] for [`Moderation::tx_event`].
    pub fn tx_events(&mut self, now: Instant, n: usize) -> bool {
        if self.tx_interval.is_zero() {
            return self.events(now, n);
        }
        if n == 0 {
            return false;
        }
        let fire = self.tx_event(now);
        if n > 1 {
            self.tx_event(now);
            self.completions += n as u64 - 2;
        }
        fire
    }

    /// `n` completions written at the same instant: the state and the
    /// result of `n` calls of [`Moderation::event`] with `now` (the first
    /// may fire; the second, after a fire, leaves one pending; more change
    /// nothing), in at most two.
    pub fn events(&mut self, now: Instant, n: usize) -> bool {
        if n == 0 {
            return false;
        }
        let fire = self.event(now);
        if n > 1 {
            self.event(now);
        }
        fire
    }

    /// Whether a completion waits for the driver to re-enable the vector
    /// (it fired, and something completed since).
    pub fn held(&self) -> bool {
        !self.armed && (self.pending || self.tx_since.is_some())
    }

    /// The driver re-enabled the interrupt.
    pub fn rearm(&mut self, now: Instant) -> bool {
        self.armed = true;
        self.poll(now)
    }
}

/// One vNIC: queue pair `index` of a function.
#[derive(Debug)]
pub struct QueuePair {
    pub index: u16,
    pub mac: Mac,
    ctrl: QpCtrl,
    pub tx: Queue,
    pub rx: Queue,
    pub irq: Moderation,
    /// The send doorbell rang; the card has frames to switch.
    pub tx_kicked: bool,
    /// QP_MAC_LO written by a trusted VF, waiting for QP_MAC_HI.
    pub staged_mac_lo: Option<u32>,
    /// QP_FILTER_LO, QP_FILTER_HI: the guest address of the filter list.
    pub filter_lo: u32,
    pub filter_hi: u32,
    /// The receive filter the driver last handed over, None if it never did.
    pub rx_filter: Option<RxFilter>,
    /// QP_ADDR_STATUS.
    pub addr_status: AddrStatus,
    /// Frames waiting for receive buffers, oldest first.
    rx_backlog: VecDeque<Vec<u8>>,
    rx_backlog_bytes: usize,
    /// Quiesced by management (docs/migration.md): no descriptor fetched,
    /// nothing written into the guest's buffers; doorbells only move the
    /// tails, which go straight to the contexts in guest memory.
    paused: bool,
    /// Longest frame the send queue takes ([`ring::MAX_FRAME`], more on
    /// the PF's exception queue pair).
    max_tx_frame: usize,
    /// When the fast path tries this send queue next.
    pub(crate) fast_backoff: Backoff,
    /// Its queue errors and starts, rate-limited: a driver can repeat them
    /// (counted here, not by the contexts' counters, which the guest can
    /// rewrite).
    client_log: ClientLog,
}

/// What became of a frame offered to a receive queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arrival {
    /// In a receive buffer; `fire`: raise the queue pair's interrupt.
    Delivered { fire: bool },
    /// Held in the card's receive packet buffer.
    Buffered,
    /// Lost (queue stopped, packet buffer full, frame longer than the
    /// posted buffer) and counted.
    Dropped,
}

/// Frames moved from the packet buffer into receive buffers.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Drained {
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    pub fire: bool,
}

/// What a queue-pair register write asks of the rest of the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QpEffect {
    None,
    /// Send frames are waiting.
    Kick,
    /// Fire the queue pair's vector.
    Interrupt,
    Vlan(QpVlan),
    /// QP_RX_MODE was written: take the filter list.
    RxMode(QpRxMode),
}

impl QueuePair {
    /// Back to no receive filter (a reset): QP_FILTER, QP_RX_MODE and
    /// QP_ADDR_STATUS read 0 again.
    pub fn forget_filter(&mut self) {
        self.filter_lo = 0;
        self.filter_hi = 0;
        self.rx_filter = None;
        self.addr_status = AddrStatus::new();
    }

    pub fn new(index: u16, mac: Mac) -> Self {
        QueuePair {
            index,
            mac,
            ctrl: QpCtrl::new(),
            tx: Queue::new(ServiceType::SendQueue),
            rx: Queue::new(ServiceType::ReceiveQueue),
            irq: Moderation::new(),
            tx_kicked: false,
            staged_mac_lo: None,
            filter_lo: 0,
            filter_hi: 0,
            rx_filter: None,
            addr_status: AddrStatus::new(),
            rx_backlog: VecDeque::new(),
            rx_backlog_bytes: 0,
            paused: false,
            max_tx_frame: ring::MAX_FRAME,
            fast_backoff: Backoff::default(),
            client_log: ClientLog::default(),
        }
    }

    /// Makes this the PF's exception queue pair: its send queue takes
    /// messages of up to `max_message` bytes (a frame of up to
    /// [`ring::MAX_FRAME`] and more), and its queues no offloads but
    /// multi-buffer receive.
    pub fn make_exception(&mut self, max_message: usize) {
        self.max_tx_frame = max_message;
        self.tx.exception = true;
        self.rx.exception = true;
    }

    pub fn paused(&self) -> bool {
        self.paused
    }

    /// Quiesce: stops at this frame boundary and writes both contexts back
    /// (RUNNING stays set), so guest memory alone describes the queues.
    /// Returns how many running queues were written back.
    pub fn pause(&mut self, dma: &DmaSpace) -> usize {
        self.paused = true;
        self.tx_kicked = false;
        let mut written = 0;
        for q in [&mut self.tx, &mut self.rx] {
            if q.running() {
                q.store(dma);
                written += 1;
            }
        }
        written
    }

    /// Ends a quiesce: frames that waited in the packet buffer go into the
    /// buffers posted meanwhile, and posted send frames are to be switched.
    pub fn unpause(&mut self, who: &str, dma: &DmaSpace, now: Instant) -> Drained {
        if !self.paused {
            return Drained::default();
        }
        self.paused = false;
        self.tx_kicked = self.tx.ring.is_some_and(|r| r.pending() > 0);
        self.rx_drain(who, dma, now).unwrap_or_default()
    }

    /// Bytes held in the receive packet buffer.
    pub fn rx_buffered(&self) -> usize {
        self.rx_backlog_bytes
    }

    pub fn ctrl(&self) -> QpCtrl {
        self.ctrl
    }

    pub fn status(&self) -> QpStatus {
        QpStatus::new()
            .with_tx_running(self.tx.running())
            .with_rx_running(self.rx.running())
            .with_tx_error(self.tx.error.is_some())
            .with_rx_error(self.rx.error.is_some())
            .with_tx_code(self.tx.error.map_or(0, |e| e.code()))
            .with_rx_code(self.rx.error.map_or(0, |e| e.code()))
    }

    fn report(&mut self, who: &str, what: &str, e: QueueError) {
        let q = self.index;
        self.client_log.log(
            Cause::GuestError,
            who,
            format_args!("queue pair {q} {what} queue error: {e}"),
        );
    }

    /// QP_CTRL write: starts and stops the queues whose bit changed.
    /// Returns whether send frames are waiting (a resumed queue).
    pub fn set_ctrl(&mut self, who: &str, dma: &DmaSpace, bat: Option<&Bat>, v: QpCtrl) -> bool {
        let old = self.ctrl;
        self.ctrl = v;
        let q = self.index;
        if v.rx_enable() && !old.rx_enable() {
            if let Err(e) = self.rx.start(dma, bat, q) {
                self.report(who, "receive", e);
                self.rx.fail(dma, e);
            }
        } else if !v.rx_enable() && old.rx_enable() {
            self.rx.stop(dma);
            self.rx_backlog.clear();
            self.rx_backlog_bytes = 0;
        }
        if v.tx_enable() && !old.tx_enable() {
            if let Err(e) = self.tx.start(dma, bat, q) {
                self.report(who, "send", e);
                self.tx.fail(dma, e);
            }
            self.tx_kicked = !self.paused && self.tx.ring.is_some_and(|r| r.pending() > 0);
        } else if !v.tx_enable() && old.tx_enable() {
            self.tx.stop(dma);
        }
        if self.tx.running() || self.rx.running() {
            let status = self.status();
            self.client_log.log(
                Cause::Setup,
                who,
                format_args!("queue pair {q} started ({status:?})"),
            );
        }
        self.tx_kicked
    }

    /// Reloads contexts after a VCT change: queues whose context says
    /// RUNNING resume from their stored indices and counters.
    pub fn resume(&mut self, who: &str, dma: &DmaSpace, bat: &Bat) -> bool {
        let q = self.index;
        let running = |ty| {
            bat.context_address(dma, ty, q)
                .ok()
                .and_then(|a| Context::load(dma, a).ok())
                .is_some_and(|c| c.running())
        };
        let ctrl = QpCtrl::new()
            .with_tx_enable(running(ServiceType::SendQueue))
            .with_rx_enable(running(ServiceType::ReceiveQueue));
        self.ctrl = QpCtrl::new();
        if ctrl.tx_enable() || ctrl.rx_enable() {
            self.client_log.log(
                Cause::Setup,
                who,
                format_args!("queue pair {q} resumes from guest memory"),
            );
        }
        self.set_ctrl(who, dma, Some(bat), ctrl)
    }

    /// Writes both contexts back and forgets them (reset, client gone, VCT
    /// change). Registers return to their reset values.
    pub fn flush(&mut self, dma: &DmaSpace) {
        self.tx.flush(dma);
        self.rx.flush(dma);
        let (index, mac, max) = (self.index, self.mac, self.max_tx_frame);
        let exception = self.tx.exception;
        *self = QueuePair::new(index, mac);
        if exception {
            self.make_exception(max);
        }
    }

    /// Writes back contexts changed since the last batch.
    pub fn sync(&mut self, dma: &DmaSpace) {
        self.sync_rx(dma);
        self.sync_tx(dma);
    }

    /// Writes the receive context back if it changed.
    pub fn sync_rx(&mut self, dma: &DmaSpace) {
        if self.rx.dirty {
            self.rx.store(dma);
        }
    }

    /// Writes the send context back if it changed.
    pub fn sync_tx(&mut self, dma: &DmaSpace) {
        if self.tx.dirty {
            self.tx.store(dma);
        }
    }

    /// A context differs from guest memory: a completion may not be
    /// recorded there yet.
    pub fn dirty(&self) -> bool {
        self.tx.dirty || self.rx.dirty
    }

    pub fn tx_doorbell(&mut self, who: &str, dma: &DmaSpace, v: u32) -> QpEffect {
        match self.tx.doorbell(v) {
            Ok(true) if self.paused => {
                self.tx.store(dma);
                QpEffect::None
            }
            Ok(true) => {
                self.tx.dirty = true;
                self.tx_kicked = true;
                QpEffect::Kick
            }
            Ok(false) => QpEffect::None,
            Err(e) => {
                self.report(who, "send", e);
                self.tx.fail(dma, e);
                QpEffect::None
            }
        }
    }

    /// A receive doorbell: new buffers, which frames waiting in the packet
    /// buffer fill first.
    pub fn rx_doorbell(&mut self, who: &str, dma: &DmaSpace, v: u32, now: Instant) -> Drained {
        match self.rx.doorbell(v) {
            Ok(true) if self.paused => {
                self.rx.store(dma);
                Drained::default()
            }
            Ok(true) => {
                self.rx.dirty = true;
                self.rx_drain(who, dma, now).unwrap_or_default()
            }
            Ok(false) => Drained::default(),
            Err(e) => {
                self.rx_failed(who, dma, e);
                Drained::default()
            }
        }
    }

    /// Takes the next send frame into `buf`, and its offload header into
    /// `header` if the queue has [`Features::vnet_hdr`], with the
    /// descriptors read ahead in `ahead` (cleared before this queue's
    /// turn). A hostile ring fails the send queue (returned so the caller
    /// can count it).
    pub fn tx_next(
        &mut self,
        who: &str,
        dma: &DmaSpace,
        header: &mut [u8; HDR_LEN],
        buf: &mut Vec<u8>,
        ahead: &mut Ahead,
    ) -> Result<Option<TxFrame>, QueueError> {
        let Some(ring) = self.tx.ring.as_ref().filter(|_| !self.paused) else {
            return Ok(None);
        };
        let features = self.tx.features;
        let max = if features.gso() {
            ring::MAX_GSO_FRAME
        } else {
            self.max_tx_frame
        };
        let header = &mut header[..features.header_len()];
        match ring::tx_take(ring, dma, header, buf, max, ahead) {
            Ok(f) => Ok(f),
            Err(e) => {
                let at = ring.head;
                ring::mark_error(ring, dma, at, e);
                self.report(who, "send", e);
                self.tx.fail(dma, e);
                Err(e)
            }
        }
    }

    /// Completes a send frame and counts it. Returns whether to interrupt.
    pub fn tx_done(
        &mut self,
        who: &str,
        dma: &DmaSpace,
        frame: TxFrame,
        dropped: bool,
        now: Instant,
    ) -> Result<bool, QueueError> {
        let Some(ring) = self.tx.ring.as_mut() else {
            return Ok(false);
        };
        if let Err(e) = ring::tx_complete(ring, dma, frame, dropped) {
            self.report(who, "send", e);
            self.tx.fail(dma, e);
            return Err(e);
        }
        let c = &mut self.tx.ctx;
        if dropped {
            c.count_drops(1);
        } else {
            c.count(1, frame.len as u64);
        }
        self.tx.dirty = true;
        Ok(self.irq.tx_event(now))
    }

    /// Takes a switched send frame off the ring without completing it: an
    /// injected lost completion. Counted as sent; no interrupt.
    pub fn tx_lost(&mut self, frame: TxFrame) {
        if let Some(ring) = self.tx.ring.as_mut() {
            ring::tx_skip(ring, frame);
            self.tx.ctx.count(1, frame.len as u64);
            self.tx.dirty = true;
        }
    }

    /// An injected DMA failure on the send queue (`send`) or the receive
    /// queue, at its head descriptor: the queue fails with error `DMA` as
    /// for a buffer outside guest memory. Returns whether a running queue
    /// failed.
    pub fn fail_injected(&mut self, who: &str, dma: &DmaSpace, send: bool) -> bool {
        let queue = if send { &self.tx } else { &self.rx };
        let Some(e) = queue
            .ring
            .as_ref()
            .map(|r| ring::injected_dma_error(r, dma))
        else {
            return false;
        };
        if send {
            if let Some(ring) = self.tx.ring.as_ref() {
                ring::mark_error(ring, dma, ring.head, e);
            }
            self.report(who, "send", e);
            self.tx.fail(dma, e);
            self.tx_kicked = false;
        } else {
            self.rx_failed(who, dma, e);
        }
        true
    }

    /// The send ring and its offload features, if the fast path
    /// (`crate::datapath`, fast.rs) may take frames from it: running, not paused,
    /// not the PF's exception queue.
    pub fn fast_tx(&self) -> Option<(Ring, Features)> {
        let ok = !self.tx.exception && !self.paused;
        self.tx.ring.filter(|_| ok).map(|r| (r, self.tx.features))
    }

    /// The receive ring and its offload features, if the fast path may
    /// write frames into it: running, not paused, nothing waiting in the
    /// packet buffer (frames keep their order).
    /// The receive queue's `max_frame` (0: no limit but the buffers').
    pub fn rx_max_frame(&self) -> u16 {
        self.rx.max_frame
    }

    pub fn fast_rx(&self) -> Option<(Ring, Features)> {
        let ok = self.rx_backlog.is_empty() && !self.paused;
        self.rx.ring.filter(|_| ok).map(|r| (r, self.rx.features))
    }

    /// Completes `done`, the descriptors of single-buffer frames (`bytes`
    /// in all) the fast path took from the head of the send ring, with one
    /// write: as [`QueuePair::tx_done`] for each. Returns whether to
    /// interrupt.
    pub fn tx_burst_done(
        &mut self,
        who: &str,
        dma: &DmaSpace,
        done: &[Desc],
        bytes: u64,
        now: Instant,
    ) -> Result<bool, QueueError> {
        let Some(ring) = self.tx.ring.as_mut() else {
            return Ok(false);
        };
        if !ring.slots(dma).is_some_and(|s| s.complete_tx(done)) {
            let e = QueueError::Ring {
                base: ring.base(),
                size: ring.size(),
            };
            self.report(who, "send", e);
            self.tx.fail(dma, e);
            return Err(e);
        }
        ring.advance(done.len() as u16);
        let c = &mut self.tx.ctx;
        c.count(done.len() as u64, bytes);
        self.tx.dirty = true;
        Ok(self.irq.tx_events(now, done.len()))
    }

    /// Counts `n` frames (`bytes` in all) the fast path wrote into the
    /// receive ring, whose head is now `head`: as [`QueuePair::rx_put`]
    /// for each. Returns whether to interrupt.
    pub fn rx_burst_done(&mut self, head: u16, n: usize, bytes: u64, now: Instant) -> bool {
        let Some(ring) = self.rx.ring.as_mut() else {
            return false;
        };
        ring.head = head;
        let c = &mut self.rx.ctx;
        c.count(n as u64, bytes);
        self.rx.dirty = true;
        self.irq.events(now, n)
    }

    /// Offers a frame to the receive queue: into the next posted buffer(s),
    /// or the packet buffer if the driver has none posted (or frames
    /// already wait there, to keep the order). A queue with
    /// [`Features::vnet_hdr`] gets `header` in front of it (zeros if None);
    /// the caller hands a header only to such a queue.
    pub fn rx_put(
        &mut self,
        who: &str,
        dma: &DmaSpace,
        header: Option<&[u8; HDR_LEN]>,
        frame: &[u8],
        now: Instant,
    ) -> Result<Arrival, QueueError> {
        let Some(ring) = self.rx.ring.as_mut() else {
            self.rx.ctx.count_drops(1);
            return Ok(Arrival::Dropped);
        };
        if self.rx.max_frame != 0 && wire_len(header, frame) > usize::from(self.rx.max_frame) {
            // Longer than the receiver's MTU: dropped, as a NIC whose
            // receive limit is set from the MTU drops it.
            self.rx.ctx.count_drops(1);
            self.rx.dirty = true;
            return Ok(Arrival::Dropped);
        }
        let features = self.rx.features;
        let header: &[u8] = match (features.vnet_hdr(), header) {
            (false, _) => &[],
            (true, Some(h)) => h,
            (true, None) => &[0; HDR_LEN],
        };
        let bytes = RxBytes { header, frame };
        if self.paused || !self.rx_backlog.is_empty() {
            return Ok(self.buffer(bytes));
        }
        let outcome = match ring::rx_put(ring, dma, bytes, features.multi_buf()) {
            Ok(o) => o,
            Err(e) => {
                self.rx_failed(who, dma, e);
                return Err(e);
            }
        };
        self.rx.dirty = true;
        Ok(match outcome {
            RxOutcome::Delivered => {
                self.rx.ctx.count(1, frame.len() as u64);
                Arrival::Delivered {
                    fire: self.irq.event(now),
                }
            }
            RxOutcome::NoBuffer => self.buffer(bytes),
            RxOutcome::TooLong => {
                self.rx.ctx.count_drops(1);
                Arrival::Dropped
            }
        })
    }

    /// Keeps a frame (with its header) in the packet buffer, if it fits.
    fn buffer(&mut self, bytes: RxBytes) -> Arrival {
        if self.rx_backlog_bytes + bytes.len() > RX_BUFFER_BYTES {
            self.rx.ctx.count_drops(1);
            self.rx.dirty = true;
            return Arrival::Dropped;
        }
        self.rx_backlog_bytes += bytes.len();
        self.rx_backlog
            .push_back([bytes.header, bytes.frame].concat());
        Arrival::Buffered
    }

    fn rx_failed(&mut self, who: &str, dma: &DmaSpace, e: QueueError) {
        if let Some(ring) = self.rx.ring.as_ref() {
            ring::mark_error(ring, dma, ring.head, e);
        }
        self.report(who, "receive", e);
        self.rx.fail(dma, e);
        self.rx_backlog.clear();
        self.rx_backlog_bytes = 0;
    }

    /// After a receive doorbell: moves waiting frames into the buffers the
    /// driver just posted.
    pub fn rx_drain(
        &mut self,
        who: &str,
        dma: &DmaSpace,
        now: Instant,
    ) -> Result<Drained, QueueError> {
        let mut d = Drained::default();
        let features = self.rx.features;
        while let Some(held) = self.rx_backlog.front() {
            let Some(ring) = self.rx.ring.as_mut() else {
                break;
            };
            let bytes = RxBytes {
                header: &[],
                frame: held,
            };
            match ring::rx_put(ring, dma, bytes, features.multi_buf()) {
                Ok(RxOutcome::NoBuffer) => break,
                Ok(RxOutcome::Delivered) => {
                    d.packets += 1;
                    d.bytes += (held.len() - features.header_len()) as u64;
                }
                Ok(RxOutcome::TooLong) => d.drops += 1,
                Err(e) => {
                    self.rx_failed(who, dma, e);
                    return Err(e);
                }
            }
            let len = held.len();
            self.rx_backlog.pop_front();
            self.rx_backlog_bytes -= len;
        }
        if d.packets + d.drops > 0 {
            let c = &mut self.rx.ctx;
            c.count(d.packets, d.bytes);
            c.count_drops(d.drops);
            self.rx.dirty = true;
        }
        if d.packets > 0 {
            d.fire = self.irq.event(now);
        }
        Ok(d)
    }
}

/// The longest frame on the wire that `frame` stands for: itself, or for
/// a GSO frame handed over unsegmented (its `header` asks for
/// segmentation) its headers and one `gso_size` of payload, the segments
/// it would be on a wire. A GSO frame whose headers do not parse counts
/// whole.
pub fn wire_len(header: Option<&[u8; HDR_LEN]>, frame: &[u8]) -> usize {
    let Some(h) = header.filter(|h| h[1] & !GSO_ECN != 0) else {
        return frame.len();
    };
    let gso_size = usize::from(u16::from_le_bytes([h[4], h[5]]));
    match crate::offload::parse_tcp(frame) {
        Ok(t) => frame.len().min(t.payload + gso_size),
        Err(_) => frame.len(),
    }
}

/// The ECN bit of a `virtio_net_hdr`'s `gso_type`.
const GSO_ECN: u8 = 0x80;

/// When the fast path (`crate::datapath`) tries a send queue again after
/// declining a frame: it sits out as many frames as it declined tries in
/// a row (doubling, up to a burst), so traffic it never takes (to the
/// uplink, floods) pays for a try about once per [`MAX_BURST`] frames
/// rather than once per frame.
/// Kept per queue pair: each turn of the event loop starts with a try
/// (the receiver may have posted buffers since), without starting the
/// doubling over.
#[derive(Clone, Copy, Debug, Default)]
pub struct Backoff {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{FakeDriver, StateTables};

    struct Setup {
        drv: FakeDriver,
        tables: StateTables,
        bat: Bat,
        tx: u64,
        rx: u64,
    }

    fn setup(levels: u32) -> Setup {
        let mut drv = FakeDriver::new();
        let tables = StateTables::build(&mut drv, levels, 64, 8);
        let tx = drv.ring(64);
        let rx = drv.ring(64);
        tables.set_rings(&drv, 1, (tx, 64), (rx, 64));
        let bat = Bat::read(drv.dma(), tables.bat).unwrap();
        Setup {
            drv,
            tables,
            bat,
            tx,
            rx,
        }
    }

    fn both() -> QpCtrl {
        QpCtrl::new().with_tx_enable(true).with_rx_enable(true)
    }

    fn frame(len: usize) -> Vec<u8> {
        let mut f = vec![0x5a; len];
        f[..12].copy_from_slice(&[2, 0, 0, 0, 0, 2, 2, 0, 0, 0, 0, 1]);
        f
    }

    #[test]
    fn enable_loads_context_marks_running_and_writes_back() {
        for levels in [1, 2] {
            let s = setup(levels);
            let mut qp = QueuePair::new(1, Mac::default());
            qp.set_ctrl("t", s.drv.dma(), Some(&s.bat), both());
            assert!(qp.status().tx_running() && qp.status().rx_running());
            let at = s.tables.context(ServiceType::SendQueue, 1);
            assert_eq!(s.drv.read_u16(at + 10), ctx_state::RUNNING);
            qp.set_ctrl("t", s.drv.dma(), Some(&s.bat), QpCtrl::new());
            assert_eq!(s.drv.read_u16(at + 10), 0, "stopped");
        }
    }

    #[test]
    fn enable_without_vct_or_with_bad_ring_is_a_context_or_ring_error() {
        let s = setup(1);
        let mut qp = QueuePair::new(1, Mac::default());
        qp.set_ctrl("t", s.drv.dma(), None, both());
        assert_eq!(qp.status().tx_code(), QueueError::Context.code());
        // Ring size 7: the queue fails with RING, the context records it.
        let at = s.tables.context(ServiceType::ReceiveQueue, 2);
        s.drv.write_u64(at, s.rx);
        s.drv.write_u16(at + 8, 7);
        let mut qp2 = QueuePair::new(2, Mac::default());
        qp2.set_ctrl(
            "t",
            s.drv.dma(),
            Some(&s.bat),
            QpCtrl::new().with_rx_enable(true),
        );
        assert!(qp2.status().rx_error());
        assert_eq!(qp2.status().rx_code(), 1);
        assert_eq!(s.drv.read_u16(at + 10), ctx_state::ERROR);
        assert_eq!(s.drv.read_u64(at + 48), 1, "errors counter");
    }

    /// Offsets of the counters in a queue context (docs/datapath.md).
    const CTX_PACKETS: u64 = 24;
    const CTX_BYTES: u64 = 32;
    const CTX_ERRORS: u64 = 48;

    // Found by the `rings` fuzz target (docs/fuzzing.md): the counters are
    // loaded from guest memory, and adding to u64::MAX overflowed (a panic
    // in a debug build of vnicd) when a start failed or a frame arrived.
    #[test]
    fn context_counters_at_their_maximum_wrap_instead_of_overflowing() {
        let s = setup(1);
        for ty in [ServiceType::SendQueue, ServiceType::ReceiveQueue] {
            let at = s.tables.context(ty, 2);
            s.drv.write_u64(at, s.rx);
            s.drv.write_u16(at + 8, 7);
            s.drv.write_u64(at + CTX_ERRORS, u64::MAX);
        }
        let mut qp = QueuePair::new(2, Mac::default());
        qp.set_ctrl("t", s.drv.dma(), Some(&s.bat), both());
        assert!(qp.status().tx_error() && qp.status().rx_error());
        let at = s.tables.context(ServiceType::ReceiveQueue, 2);
        assert_eq!(s.drv.read_u64(at + CTX_ERRORS), 0, "wrapped");

        let mut s = setup(1);
        let at = s.tables.context(ServiceType::ReceiveQueue, 1);
        s.drv.write_u64(at + CTX_PACKETS, u64::MAX);
        s.drv.write_u64(at + CTX_BYTES, u64::MAX);
        let mut qp = QueuePair::new(1, Mac::default());
        qp.set_ctrl("t", s.drv.dma(), Some(&s.bat), both());
        s.drv.post_rx(s.rx, 64, 0, 1, 2048);
        qp.rx_doorbell("t", s.drv.dma(), 1, Instant::now());
        let arrival = qp.rx_put("t", s.drv.dma(), None, &frame(60), Instant::now());
        assert!(matches!(arrival, Ok(Arrival::Delivered { .. })));
        qp.set_ctrl("t", s.drv.dma(), Some(&s.bat), QpCtrl::new());
        assert_eq!(s.drv.read_u64(at + CTX_PACKETS), 0);
        assert_eq!(s.drv.read_u64(at + CTX_BYTES), 59);
    }

    #[test]
    fn counters_and_indices_are_written_back_after_each_batch() {
        let mut s = setup(1);
        let mut qp = QueuePair::new(1, Mac::default());
        qp.set_ctrl("t", s.drv.dma(), Some(&s.bat), both());
        let f = frame(100);
        for i in 0..3 {
            let b = s.drv.buffer(&f);
            s.drv.put_tx(s.tx, i, b, 100, true);
        }
        assert_eq!(qp.tx_doorbell("t", s.drv.dma(), 3), QpEffect::Kick);
        let now = Instant::now();
        let mut buf = Vec::new();
        while let Some(fr) = qp
            .tx_next(
                "t",
                s.drv.dma(),
                &mut [0; HDR_LEN],
                &mut buf,
                &mut Ahead::default(),
            )
            .unwrap()
        {
            qp.tx_done("t", s.drv.dma(), fr, false, now).unwrap();
        }
        qp.sync(s.drv.dma());
        let at = s.tables.context(ServiceType::SendQueue, 1);
        assert_eq!(s.drv.read_u16(at + 12), 3, "head");
        assert_eq!(s.drv.read_u16(at + 14), 3, "tail");
        assert_eq!(s.drv.read_u64(at + 24), 3, "packets");
        assert_eq!(s.drv.read_u64(at + 32), 300, "bytes");
    }

    #[test]
    fn a_reloaded_context_resumes_indices_and_counters() {
        let mut s = setup(2);
        let mut qp = QueuePair::new(1, Mac::default());
        qp.set_ctrl("t", s.drv.dma(), Some(&s.bat), both());
        for i in 0..4 {
            let b = s.drv.alloc(2048, 64);
            s.drv.put_rx(s.rx, i, b, 2048);
        }
        qp.rx_doorbell("t", s.drv.dma(), 4, Instant::now());
        let now = Instant::now();
        assert!(matches!(
            qp.rx_put("t", s.drv.dma(), None, &frame(80), now),
            Ok(Arrival::Delivered { .. })
        ));
        qp.flush(s.drv.dma());
        // A second card (or the same after a VCT write) given only the BAT.
        let mut again = QueuePair::new(1, Mac::default());
        again.resume("t", s.drv.dma(), &s.bat);
        assert!(again.rx.running());
        assert_eq!(again.rx.head(), 1);
        assert_eq!(again.rx.context().packets, 1);
        assert_eq!(again.rx.context().bytes, 80);
        again
            .rx_put("t", s.drv.dma(), None, &frame(90), now)
            .unwrap();
        assert_eq!(s.drv.rx_len(s.rx, 1), 90, "continued at the stored head");
        assert_eq!(again.rx.context().packets, 2);
    }

    #[test]
    fn hostile_doorbell_fails_only_that_queue() {
        let s = setup(1);
        let mut qp = QueuePair::new(1, Mac::default());
        qp.set_ctrl("t", s.drv.dma(), Some(&s.bat), both());
        qp.tx_doorbell("t", s.drv.dma(), 64);
        assert!(qp.status().tx_error());
        assert_eq!(qp.status().tx_code(), 4);
        assert!(qp.rx.running(), "the receive queue carries on");
        // Disable and enable clears the error.
        qp.set_ctrl(
            "t",
            s.drv.dma(),
            Some(&s.bat),
            QpCtrl::new().with_rx_enable(true),
        );
        qp.set_ctrl("t", s.drv.dma(), Some(&s.bat), both());
        assert!(qp.tx.running());
    }

    #[test]
    fn events_at_one_instant_equal_as_many_single_events() {
        let t0 = Instant::now();
        let later = t0 + Duration::from_micros(5);
        let state = |m: &Moderation| (m.armed, m.pending, m.last, m.deadline);
        for n in 0..5 {
            for (armed, last) in [(true, None), (true, Some(t0)), (false, Some(t0))] {
                let (mut one, mut many) = (Moderation::new(), Moderation::new());
                for m in [&mut one, &mut many] {
                    m.armed = armed;
                    m.last = last;
                }
                let fired = (0..n).fold(false, |f, _| one.event(later) | f);
                assert_eq!(many.events(later, n), fired, "n {n} armed {armed}");
                assert_eq!(state(&many), state(&one), "n {n} armed {armed}");
            }
        }
    }

    #[test]
    fn moderation_masks_after_firing_and_rearm_catches_up() {
        let t0 = Instant::now();
        let mut m = Moderation::new();
        assert!(m.event(t0), "first completion fires");
        assert!(!m.event(t0), "masked until rearmed");
        // Rearm within the interval: held back until the deadline.
        assert!(!m.rearm(t0 + Duration::from_micros(5)));
        assert_eq!(m.deadline, Some(t0 + Duration::from_micros(20)));
        assert!(m.poll(t0 + Duration::from_micros(20)));
        // Rearm with nothing new: no interrupt.
        assert!(!m.rearm(t0 + Duration::from_millis(1)));
        assert!(m.event(t0 + Duration::from_millis(2)));
    }

    #[test]
    fn a_completion_after_the_fire_is_held_until_the_rearm() {
        let t0 = Instant::now();
        let mut m = Moderation::new();
        m.set_itr(QpItr::new().with_usecs(20).with_tx_usecs(200));
        assert!(!m.held(), "armed, nothing pending");
        assert!(m.event(t0));
        assert!(!m.held(), "masked, but nothing waits");
        assert!(!m.tx_event(t0 + Duration::from_micros(1)));
        assert!(m.held(), "a send completion waits for the rearm");
        assert!(!m.event(t0 + Duration::from_micros(2)));
        assert!(m.held(), "a received frame waits for the rearm");
        assert!(m.rearm(t0 + Duration::from_micros(50)));
        assert!(!m.held(), "the rearm fired it");
        // Rearmed with a completion held back by the interval: not held
        // by the driver, the card's timer fires it.
        assert!(!m.rearm(t0 + Duration::from_micros(52)));
        assert!(!m.event(t0 + Duration::from_micros(55)));
        assert!(!m.held());
    }

    #[test]
    fn send_completions_wait_for_tx_usecs_unless_a_receive_fires_first() {
        let us = |n| Duration::from_micros(n);
        let t0 = Instant::now();
        let mut m = Moderation::new();
        m.set_itr(QpItr::new().with_usecs(20).with_tx_usecs(200));
        assert_eq!(m.itr(), QpItr::new().with_usecs(20).with_tx_usecs(200));

        // A lone send completion waits the full 200 us, however many follow.
        assert!(!m.tx_event(t0));
        assert_eq!(m.deadline, Some(t0 + us(200)));
        assert!(!m.tx_events(t0 + us(50), 3));
        assert_eq!(m.deadline, Some(t0 + us(200)), "the oldest one counts");
        assert!(!m.poll(t0 + us(199)));
        assert!(m.poll(t0 + us(200)));
        assert!(!m.tx_event(t0 + us(300)), "masked");
        assert!(!m.rearm(t0 + us(310)), "held: 200 us from its completion");
        assert_eq!(m.deadline, Some(t0 + us(500)));

        // A received frame fires on the normal interval and covers the
        // send completions pending.
        assert!(m.event(t0 + us(330)));
        assert!(!m.rearm(t0 + us(400)), "nothing left");
        assert_eq!(m.deadline, None);

        // A receive interval longer than tx_usecs still spaces interrupts.
        m.set_itr(QpItr::new().with_usecs(500).with_tx_usecs(100));
        assert!(!m.tx_event(t0 + us(500)));
        assert_eq!(m.deadline, Some(t0 + us(330 + 500)));
    }

    #[test]
    fn tx_usecs_zero_is_the_one_interval_of_interface_1_2() {
        let t0 = Instant::now();
        let (mut old, mut new) = (Moderation::new(), Moderation::new());
        new.set_itr(QpItr::new().with_usecs(20));
        for (i, n) in [1, 3, 0, 2].into_iter().enumerate() {
            let t = t0 + Duration::from_micros(7 * i as u64);
            assert_eq!(new.tx_events(t, n), old.events(t, n));
            assert_eq!(new.rearm(t), old.rearm(t));
            assert_eq!(new.deadline, old.deadline);
        }
        // Turning tx_usecs off releases a held send completion at once.
        new.set_itr(QpItr::new().with_usecs(0).with_tx_usecs(1000));
        assert!(new.poll(t0 + Duration::from_millis(1)));
        new.rearm(t0 + Duration::from_millis(1));
        assert!(!new.tx_event(t0 + Duration::from_millis(2)));
        new.set_itr(QpItr::new().with_usecs(0));
        assert!(new.poll(t0 + Duration::from_millis(2)));
    }

    #[test]
    fn adaptive_moderation_follows_the_completion_rate() {
        let t0 = Instant::now();
        let mut m = Moderation::new();
        m.set_itr(QpItr::new().with_adaptive(true).with_usecs(20));
        assert_eq!(m.itr(), QpItr::new().with_adaptive(true), "starts at 0");
        // A ping every 200 ms: every interrupt at once.
        for i in 0..5 {
            let t = t0 + Duration::from_millis(200 * i);
            assert!(m.event(t), "echo {i} interrupts at once");
            assert!(!m.rearm(t + Duration::from_micros(50)));
        }
        assert_eq!(m.interval_us(), 0);
        // A stream of one completion every 10 us (100 k/s): the interval
        // grows towards 4 completions per interrupt (40 us).
        let mut t = t0 + Duration::from_secs(2);
        let mut fired = 0;
        for _ in 0..2000 {
            t += Duration::from_micros(10);
            if m.event(t) {
                fired += 1;
                m.rearm(t);
            }
            if m.deadline.is_some_and(|d| d <= t) && m.poll(t) {
                fired += 1;
            }
        }
        assert!((35..=45).contains(&m.interval_us()), "{}", m.interval_us());
        assert!(fired < 700, "{fired} interrupts for 2000 completions");
        // A fixed interval again.
        m.set_itr(QpItr::new().with_usecs(50));
        assert_eq!(m.itr(), QpItr::new().with_usecs(50));
    }
}
