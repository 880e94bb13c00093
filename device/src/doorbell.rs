//! The doorbell page (opt-in, `vnicd --doorbell-page`; docs/registers.md
//! "Doorbell page", docs/performance.md step G4).
//!
//! Every doorbell through BAR0 is a vfio-user message: a `sendmsg` in the
//! guest's vCPU thread and a wake-up of vnicd. The page is one 4 KiB page
//! of BAR0 (at [`PAGE_OFFSET`]) backed by a memfd that vnicd shares with
//! QEMU (GET_REGION_INFO: `MMAP` flag, sparse-mmap capability, the fd), so
//! a driver's store into it stays inside QEMU. The card reads the page on
//! its own: while a queue pair is busy it polls the page's tails (paced by
//! a timer, never a busy loop); when the queue pair has been quiet for an
//! idle window it clears `WATCH`, and the driver, which reads `WATCH` after
//! each store into the page, rings the BAR0 doorbell register instead
//! (notification suppression, as virtio's event index).
//!
//! Lost wake-ups: the driver stores its tail, then (after a full barrier)
//! reads `WATCH`; the card clears `WATCH`, then (after a full barrier)
//! reads the tails again. Whichever store comes second, its side sees the
//! other's: either the card sees the new tail or the driver rings.
//!
//! Everything in the page is guest input: a tail from the page goes
//! through the same checks as one from the doorbell register.
//!
//! One slot of [`SLOT_SIZE`] bytes per queue pair (up to
//! [`crate::card::MAX_QUEUE_PAIRS`], which fill the page):
//!
//! ```text
//!  +0x0  TX_TAIL   driver: the send tail it would write to QP_TX_TAIL
//!  +0x4  RX_TAIL   driver: the receive tail (QP_RX_TAIL)
//!  +0x8  IRQ_SEQ   driver: adds 1 for every rearm (QP_IRQ.REARM)
//!  +0xc  WATCH     card:   1 while the card polls this slot; anything
//!                          else (0, all-ones) means "ring the register"
//! ```

use std::fs::File;
use std::io;
use std::sync::atomic::{fence, Ordering};
use std::time::{Duration, Instant};

use vm_memory::{Bytes, FileOffset, MmapRegion, VolatileMemory, VolatileSlice};

use crate::regs::BAR0_SIZE;

/// Where the page lies in BAR0 (after the 256 queue-pair areas, which end
/// at 0x9000; page-aligned, as mmap needs).
pub const PAGE_OFFSET: u64 = 0xf000;
/// Size of the page.
pub const PAGE_SIZE: u64 = 0x1000;
/// Bytes per queue pair.
pub const SLOT_SIZE: u64 = 16;
/// `WATCH` while the card polls the slot.
pub const WATCHING: u32 = 1;

/// The words of a slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Word {
    TxTail = 0x0,
    RxTail = 0x4,
    IrqSeq = 0x8,
    Watch = 0xc,
}

/// How the card polls (vnicd `--doorbell-poll-us`, `--doorbell-idle-us`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PagePolicy {
    /// Time between two polls of a watched queue pair.
    pub poll: Duration,
    /// A watched queue pair with no new doorbell for this long is no
    /// longer polled: the driver rings the register again.
    pub idle: Duration,
}

impl Default for PagePolicy {
    /// 20 µs is the default interrupt moderation interval: a sender's
    /// doorbell waits at most about as long as its completion interrupt
    /// does. 1 ms outlasts the gaps between frames of a busy sender in a
    /// TCG guest (tens of µs), so a stream does not fall back to the
    /// register, which with the page is a non-posted message.
    fn default() -> Self {
        PagePolicy {
            poll: Duration::from_micros(20),
            idle: Duration::from_millis(1),
        }
    }
}

/// What the driver wrote into a slot.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Slot {
    pub tx_tail: u32,
    pub rx_tail: u32,
    pub irq_seq: u32,
}

/// Doorbells found in a slot since the card last looked.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Change {
    /// A new send tail, to be taken as a QP_TX_TAIL write.
    pub tx_tail: Option<u32>,
    /// A new receive tail (QP_RX_TAIL).
    pub rx_tail: Option<u32>,
    /// IRQ_SEQ moved: a rearm (QP_IRQ.REARM), after the receive tail.
    pub rearm: bool,
}

impl Change {
    pub fn any(&self) -> bool {
        self.tx_tail.is_some() || self.rx_tail.is_some() || self.rearm
    }
}

/// The card's view of one queue pair's slot.
#[derive(Clone, Copy, Debug, Default)]
struct Watch {
    /// Since when the card polls the slot (None: not polled).
    since: Option<Instant>,
    /// The last doorbell seen in the slot.
    last_active: Option<Instant>,
    /// The slot as the card last took it: a word is a doorbell when it
    /// differs (so a tail the register path already moved the queue to,
    /// or a rejected one, is not taken twice).
    last: Slot,
}

/// One function's doorbell page.
pub struct DoorbellPage {
    /// The memfd QEMU maps: BAR0's size, the page at [`PAGE_OFFSET`] (the
    /// rest is never touched, so tmpfs allocates nothing for it).
    file: File,
    map: MmapRegion,
    watch: Vec<Watch>,
    /// DB_PAGE.ENABLE: the driver uses the page.
    enabled: bool,
    policy: PagePolicy,
}

impl std::fmt::Debug for DoorbellPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoorbellPage")
            .field("enabled", &self.enabled)
            .field("policy", &self.policy)
            .finish()
    }
}

/// Whether BAR0 `offset` (of an access of `len` bytes) lies in the page.
pub fn in_page(offset: u64, len: usize) -> bool {
    offset >= PAGE_OFFSET && offset.saturating_add(len as u64) <= PAGE_OFFSET + PAGE_SIZE
}

fn memfd() -> io::Result<File> {
    let name = c"vnic-doorbell";
    // SAFETY: memfd_create with a valid NUL-terminated name; the result is
    // checked before use.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just created and nothing else owns it.
    let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
    file.set_len(BAR0_SIZE)?;
    Ok(file)
}

impl DoorbellPage {
    /// A zeroed page for `qps` queue pairs (at most one page's worth).
    pub fn new(qps: usize, policy: PagePolicy) -> io::Result<Self> {
        let qps = qps.min((PAGE_SIZE / SLOT_SIZE) as usize);
        let file = memfd()?;
        let map = MmapRegion::build(
            Some(FileOffset::new(file.try_clone()?, PAGE_OFFSET)),
            PAGE_SIZE as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(DoorbellPage {
            file,
            map,
            watch: vec![Watch::default(); qps],
            enabled: false,
            policy,
        })
    }

    /// The memfd to send with GET_REGION_INFO.
    pub fn file(&self) -> &File {
        &self.file
    }

    pub fn policy(&self) -> PagePolicy {
        self.policy
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    fn slice(&self) -> VolatileSlice<'_> {
        self.map.as_volatile_slice()
    }

    fn at(q: usize, word: Word) -> usize {
        q * SLOT_SIZE as usize + word as usize
    }

    fn load(&self, q: usize, word: Word) -> u32 {
        // In bounds by construction (q < watch.len() ≤ slots per page).
        self.slice()
            .load(Self::at(q, word), Ordering::Acquire)
            .unwrap_or(u32::MAX)
    }

    fn store(&self, q: usize, word: Word, v: u32) {
        let _ = self.slice().store(v, Self::at(q, word), Ordering::Release);
    }

    /// What the driver wrote into queue pair `q`'s slot.
    pub fn slot(&self, q: usize) -> Slot {
        Slot {
            tx_tail: self.load(q, Word::TxTail),
            rx_tail: self.load(q, Word::RxTail),
            irq_seq: self.load(q, Word::IrqSeq),
        }
    }

    /// Zeroes the page and forgets what was polled: function reset, client
    /// gone. A driver that still stores into the page reads WATCH 0 and
    /// rings the registers, which the card then takes at their value.
    pub fn reset(&mut self) {
        let _ = self.slice().write_slice(&[0; PAGE_SIZE as usize], 0);
        self.watch.fill(Watch::default());
        self.enabled = false;
    }

    /// DB_PAGE.ENABLE written. Turning it on starts every slot from the
    /// queues' current tails (`tails(q)`), so a stale slot is never taken
    /// for a doorbell; the driver stores into the page only after this.
    pub fn set_enabled(&mut self, on: bool, tails: impl Fn(usize) -> (u32, u32)) {
        if on == self.enabled {
            return;
        }
        self.reset();
        self.enabled = on;
        if on {
            for q in 0..self.watch.len() {
                self.restart(q, tails(q));
            }
        }
    }

    /// Queue pair `q` (re)started or stopped: its slot starts from these
    /// tails, and the card stops polling it until the next register kick.
    pub fn restart(&mut self, q: usize, (tx, rx): (u32, u32)) {
        if q >= self.watch.len() {
            return;
        }
        self.store(q, Word::Watch, 0);
        self.store(q, Word::TxTail, tx);
        self.store(q, Word::RxTail, rx);
        self.watch[q] = Watch {
            last: self.slot(q),
            ..Watch::default()
        };
    }

    /// Whether the card polls queue pair `q`'s slot.
    pub fn watching(&self, q: usize) -> bool {
        self.watch.get(q).is_some_and(|w| w.since.is_some())
    }

    /// Queue pairs polled now.
    pub fn watched(&self) -> impl Iterator<Item = usize> + '_ {
        self.watch
            .iter()
            .enumerate()
            .filter(|(_, w)| w.since.is_some())
            .map(|(q, _)| q)
    }

    /// A doorbell register of queue pair `q` rang (or the slot showed a
    /// doorbell): poll the slot from now on.
    pub fn watch(&mut self, q: usize, now: Instant) {
        let Some(w) = self.watch.get_mut(q) else {
            return;
        };
        w.last_active = Some(now);
        if w.since.is_none() {
            w.since = Some(now);
            self.store(q, Word::Watch, WATCHING);
        }
    }

    /// The doorbells in queue pair `q`'s slot since the last call.
    pub fn take(&mut self, q: usize) -> Change {
        if q >= self.watch.len() {
            return Change::default();
        }
        let now = self.slot(q);
        let last = std::mem::replace(&mut self.watch[q].last, now);
        Change {
            tx_tail: (now.tx_tail != last.tx_tail).then_some(now.tx_tail),
            rx_tail: (now.rx_tail != last.rx_tail).then_some(now.rx_tail),
            rearm: now.irq_seq != last.irq_seq,
        }
    }

    /// Queue pair `q` saw no doorbell in the slot at `now`: if it has been
    /// quiet for the idle window, stop polling it. Returns true when the
    /// card stopped and must read the slot once more (the driver may have
    /// stored a tail just before it read WATCH).
    pub fn quiet(&mut self, q: usize, now: Instant) -> bool {
        let idle = self.policy.idle;
        let Some(w) = self.watch.get_mut(q) else {
            return false;
        };
        let quiet_since = w.last_active.or(w.since).unwrap_or(now);
        if now.saturating_duration_since(quiet_since) < idle {
            return false;
        }
        w.since = None;
        self.store(q, Word::Watch, 0);
        // Pairs with the driver's barrier between its tail store and its
        // WATCH load.
        fence(Ordering::SeqCst);
        true
    }

    /// A dword read through the socket (a client that does not map the
    /// page). `rel` is the offset in the page, dword-aligned.
    pub fn read_dword(&self, rel: u64) -> u32 {
        self.slice()
            .load(rel as usize, Ordering::Acquire)
            .unwrap_or(u32::MAX)
    }

    /// A dword write through the socket: the driver's words only (WATCH is
    /// the card's). Returns false for a write the page refuses.
    pub fn write_dword(&self, rel: u64, v: u32) -> bool {
        if rel % SLOT_SIZE == Word::Watch as u64 {
            return false;
        }
        self.slice()
            .store(v, rel as usize, Ordering::Release)
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> DoorbellPage {
        DoorbellPage::new(8, PagePolicy::default()).unwrap()
    }

    /// The driver's side: stores through the socket path, as a test client.
    fn drive(p: &DoorbellPage, q: usize, word: Word, v: u32) {
        assert!(p.write_dword(q as u64 * SLOT_SIZE + word as u64, v));
    }

    #[test]
    fn page_is_the_last_page_of_bar0_after_every_queue_pair_area() {
        let areas_end = crate::regs::QP_AREA_BASE
            + crate::regs::QP_AREA_SIZE * crate::card::MAX_QUEUE_PAIRS as u64;
        assert!(PAGE_OFFSET >= areas_end);
        assert_eq!(PAGE_OFFSET + PAGE_SIZE, BAR0_SIZE);
        assert_eq!(
            crate::card::MAX_QUEUE_PAIRS as u64 * SLOT_SIZE,
            PAGE_SIZE,
            "a slot for every queue pair"
        );
    }

    #[test]
    fn in_page_checks_both_ends_without_overflow() {
        assert!(in_page(PAGE_OFFSET, 4));
        assert!(in_page(BAR0_SIZE - 8, 8));
        assert!(!in_page(PAGE_OFFSET - 4, 8));
        assert!(!in_page(BAR0_SIZE - 4, 8));
        assert!(!in_page(u64::MAX - 2, 4));
    }

    #[test]
    fn the_memfd_maps_the_page_at_its_bar0_offset() {
        let p = page();
        drive(&p, 1, Word::TxTail, 0x1234);
        let mut b = [0; 4];
        std::os::unix::fs::FileExt::read_exact_at(
            p.file(),
            &mut b,
            PAGE_OFFSET + SLOT_SIZE + Word::TxTail as u64,
        )
        .unwrap();
        assert_eq!(u32::from_le_bytes(b), 0x1234);
        assert_eq!(p.file().metadata().unwrap().len(), BAR0_SIZE);
    }

    #[test]
    fn enabling_starts_slots_from_the_queue_tails_and_not_watched() {
        let mut p = page();
        drive(&p, 2, Word::TxTail, 99);
        p.set_enabled(true, |q| (q as u32, 10 + q as u32));
        assert_eq!(
            p.slot(2),
            Slot {
                tx_tail: 2,
                rx_tail: 12,
                irq_seq: 0
            }
        );
        assert!(!p.watching(2));
        assert_eq!(p.read_dword(2 * SLOT_SIZE + Word::Watch as u64), 0);
    }

    #[test]
    fn watch_publishes_watching_and_quiet_clears_it_after_the_idle_window() {
        let mut p = page();
        p.set_enabled(true, |_| (0, 0));
        let t0 = Instant::now();
        p.watch(3, t0);
        let watch = 3 * SLOT_SIZE + Word::Watch as u64;
        assert_eq!(p.read_dword(watch), WATCHING);
        assert_eq!(p.watched().collect::<Vec<_>>(), vec![3]);
        assert!(!p.quiet(3, t0 + p.policy().idle / 2));
        assert!(p.watching(3));
        assert!(p.quiet(3, t0 + p.policy().idle));
        assert!(!p.watching(3));
        assert_eq!(p.read_dword(watch), 0);
    }

    #[test]
    fn a_doorbell_in_the_slot_extends_the_idle_window() {
        let mut p = page();
        p.set_enabled(true, |_| (0, 0));
        let t0 = Instant::now();
        let idle = p.policy().idle;
        p.watch(0, t0);
        p.watch(0, t0 + idle / 2);
        assert!(!p.quiet(0, t0 + idle));
        assert!(p.quiet(0, t0 + idle / 2 + idle));
    }

    #[test]
    fn take_reports_each_doorbell_once() {
        let mut p = page();
        p.set_enabled(true, |_| (4, 7));
        assert_eq!(p.take(1), Change::default(), "the tails it started from");
        drive(&p, 1, Word::TxTail, 5);
        drive(&p, 1, Word::IrqSeq, 1);
        let c = p.take(1);
        assert_eq!(
            c,
            Change {
                tx_tail: Some(5),
                rx_tail: None,
                rearm: true
            }
        );
        assert!(c.any());
        assert!(!p.take(1).any(), "the same doorbells twice");
        drive(&p, 1, Word::RxTail, 9);
        assert_eq!(p.take(1).rx_tail, Some(9));
        assert!(!p.take(300).any(), "no slot");
    }

    #[test]
    fn a_restart_takes_the_queue_tails_as_seen() {
        let mut p = page();
        p.set_enabled(true, |_| (0, 0));
        drive(&p, 0, Word::TxTail, 37);
        p.restart(0, (0, 0));
        drive(&p, 0, Word::TxTail, 37);
        assert_eq!(
            p.take(0).tx_tail,
            Some(37),
            "the same value after a restart"
        );
    }

    #[test]
    fn the_driver_cannot_write_watch_and_reset_zeroes_everything() {
        let mut p = page();
        p.set_enabled(true, |_| (5, 6));
        assert!(!p.write_dword(Word::Watch as u64, WATCHING));
        p.watch(0, Instant::now());
        p.reset();
        assert!(!p.enabled());
        assert!(!p.watching(0));
        assert_eq!(p.slot(0), Slot::default());
        assert_eq!(p.read_dword(Word::Watch as u64), 0);
    }

    #[test]
    fn slots_past_the_function_queue_pairs_are_ignored() {
        let mut p = page();
        p.watch(200, Instant::now());
        assert!(!p.watching(200));
        p.restart(200, (1, 1));
        assert!(!p.quiet(200, Instant::now()));
    }
}

/// The page protocol on a whole card: fake guests (crate::test_utils) store
/// into the page through the function's BAR0, which is the same memory
/// QEMU maps for a guest.
#[cfg(test)]
mod card_tests {
    use super::*;
    use crate::card::{Card, CardConfig};
    use crate::function::REGION_BAR0;
    use crate::regs::{FnStat, Reg};
    use crate::test_utils::guest::{eth, fn_stat, mac, qp_reg, rd, wr, Vm, RING};

    const TX: u64 = 0x10;

    fn card() -> Card {
        Card::new(CardConfig {
            doorbell_page: Some(PagePolicy::default()),
            ..CardConfig::default()
        })
        .unwrap()
    }

    fn slot(q: u16, word: Word) -> u64 {
        PAGE_OFFSET + u64::from(q) * SLOT_SIZE + word as u64
    }

    /// The driver's store into the page (no message in a real guest).
    fn store(c: &mut Card, f: usize, q: u16, word: Word, v: u32) {
        c.functions[f]
            .region_write(REGION_BAR0, slot(q, word), &v.to_le_bytes())
            .unwrap();
    }

    fn watched(c: &mut Card, f: usize, q: u16) -> bool {
        rd(c, f, slot(q, Word::Watch)) == WATCHING
    }

    /// Queues frames on VM `vm`'s send queue 0 and stores the tail in the
    /// page; rings the register (with a value the card must ignore) only if
    /// the card does not watch, as vnic.ko does.
    fn send(c: &mut Card, vm: &mut Vm, frames: &[Vec<u8>]) -> bool {
        let tx = vm.rings[0].0;
        vm.tx_tail[0] = vm.drv.queue_tx(tx, RING, vm.tx_tail[0], frames);
        store(c, vm.f, 0, Word::TxTail, vm.tx_tail[0].into());
        let ring = !watched(c, vm.f, 0);
        if ring {
            wr(c, vm.f, qp_reg(0, TX), 0xdead);
        }
        ring
    }

    fn enable(c: &mut Card, f: usize) {
        wr(c, f, Reg::DbPage as u64, 1);
        assert_eq!(rd(c, f, Reg::DbPage as u64), 3, "ENABLE | PRESENT");
    }

    fn frame(c: &Card, len: usize) -> Vec<u8> {
        eth(mac(c, 2, 0), mac(c, 1, 0), None, len)
    }

    /// VM A (VF0) and B (VF1) attached, A's page on, and one frame A -> B
    /// sent with the kick that starts the card polling A's slot.
    fn one_frame_through_the_page() -> (Card, Vm, Vm) {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        enable(&mut c, 1);
        let fr = frame(&c, 60);
        send(&mut c, &mut a, &[fr]);
        (c, a, b)
    }

    #[test]
    fn a_kick_starts_polling_and_later_doorbells_need_no_register() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        enable(&mut c, 1);
        assert!(!watched(&mut c, 1, 0), "idle: ring the register");
        let f1 = frame(&c, 60);
        assert!(send(&mut c, &mut a, std::slice::from_ref(&f1)), "kick");
        assert_eq!(
            b.received(0),
            vec![f1.clone()],
            "the page's tail, not 0xdead"
        );
        assert!(watched(&mut c, 1, 0));
        assert!(c.next_deadline().is_some(), "a poll is due");

        let f2 = frame(&c, 70);
        assert!(
            !send(&mut c, &mut a, std::slice::from_ref(&f2)),
            "no register"
        );
        assert_eq!(b.received(0).len(), 1, "not before the card polls");
        c.poll_doorbells(Instant::now());
        c.run_pending();
        assert_eq!(b.received(0), vec![f1, f2]);
        assert_eq!(fn_stat(&c, 1, FnStat::TxPackets), 2);
        assert_eq!(fn_stat(&c, 1, FnStat::QueueErrors), 0);
    }

    #[test]
    fn an_idle_queue_pair_is_no_longer_polled_and_the_card_sleeps() {
        let (mut c, _a, _b) = one_frame_through_the_page();
        let idle = PagePolicy::default().idle;
        c.poll_doorbells(Instant::now() + idle / 2);
        assert!(watched(&mut c, 1, 0));
        c.poll_doorbells(Instant::now() + idle * 2);
        assert!(!watched(&mut c, 1, 0), "the driver rings again");
        assert_eq!(c.next_deadline(), None, "no timer while idle");
        c.poll_doorbells(Instant::now() + idle * 3);
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn a_doorbell_stored_as_the_card_goes_idle_is_not_lost() {
        let (mut c, mut a, b) = one_frame_through_the_page();
        // The driver stored a tail and read WATCH = 1 just before the card
        // found the queue pair idle: the card's last look takes it.
        let tx = a.rings[0].0;
        a.tx_tail[0] = a.drv.queue_tx(tx, RING, a.tx_tail[0], &[frame(&c, 61)]);
        store(&mut c, 1, 0, Word::TxTail, a.tx_tail[0].into());
        c.poll_doorbells(Instant::now() + PagePolicy::default().idle * 2);
        c.run_pending();
        assert_eq!(b.received(0).len(), 2);
        assert!(watched(&mut c, 1, 0), "busy again");
    }

    #[test]
    fn a_tail_from_the_page_is_checked_as_a_register_tail() {
        let (mut c, _a, _b) = one_frame_through_the_page();
        store(&mut c, 1, 0, Word::TxTail, u32::from(RING) + 5);
        c.poll_doorbells(Instant::now());
        assert_eq!(
            rd(&mut c, 1, qp_reg(0, 0x0c)) & 4,
            4,
            "TX_ERROR, as QP_TX_TAIL"
        );
        assert_eq!(rd(&mut c, 1, qp_reg(0, 0x48)), 1, "TX_ERRORS");
        c.poll_doorbells(Instant::now());
        assert_eq!(rd(&mut c, 1, qp_reg(0, 0x48)), 1, "taken once");
        assert_eq!(
            rd(&mut c, 2, qp_reg(0, 0x0c)) & 0xc,
            0,
            "the other VM's fine"
        );
    }

    #[test]
    fn receive_tails_and_rearms_go_through_the_page() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 0);
        enable(&mut c, 2);
        let irqs = |c: &Card| {
            let s = c.functions[2].stats();
            s.irqs_sent + s.irqs_pending + s.irqs_dropped
        };
        // B posts 4 buffers: tail into the page, then the kick.
        let rx = b.rings[0].1;
        b.rx_tail[0] = b.drv.post_rx(rx, RING, 0, 4, crate::test_utils::guest::BUF);
        store(&mut c, 2, 0, Word::RxTail, b.rx_tail[0].into());
        wr(&mut c, 2, qp_reg(0, 0x14), 0);
        assert!(watched(&mut c, 2, 0));
        let fr = frame(&c, 60);
        a.send(&mut c, 0, &[fr]);
        assert_eq!(b.received(0).len(), 1);
        let fired = irqs(&c);
        let fr = frame(&c, 61);
        a.send(&mut c, 0, &[fr]);
        assert_eq!(irqs(&c), fired, "masked until rearmed");
        store(&mut c, 2, 0, Word::IrqSeq, 1);
        c.poll_doorbells(Instant::now() + std::time::Duration::from_millis(1) / 2);
        c.run_timers(Instant::now() + std::time::Duration::from_millis(1));
        assert_eq!(irqs(&c), fired + 1, "the rearm fired the held interrupt");
    }

    #[test]
    fn reset_turns_the_page_off_and_registers_count_again() {
        let (mut c, _a, b) = one_frame_through_the_page();
        c.functions[1].reset();
        c.after_io(1);
        assert_eq!(rd(&mut c, 1, Reg::DbPage as u64), 2, "PRESENT, not ENABLE");
        assert_eq!(rd(&mut c, 1, slot(0, Word::TxTail)), 0, "zeroed");
        assert!(!watched(&mut c, 1, 0));
        assert_eq!(b.received(0).len(), 1);
        c.poll_doorbells(Instant::now());
        assert_eq!(c.next_deadline(), None, "nothing polled");
    }

    #[test]
    fn pages_are_per_function() {
        let mut c = card();
        let _a = Vm::attach(&mut c, 1, 8);
        let _b = Vm::attach(&mut c, 2, 8);
        enable(&mut c, 1);
        enable(&mut c, 2);
        store(&mut c, 1, 0, Word::TxTail, 3);
        assert_eq!(rd(&mut c, 2, slot(0, Word::TxTail)), 0);
        wr(&mut c, 1, qp_reg(0, TX), 0);
        assert!(watched(&mut c, 1, 0));
        assert!(!watched(&mut c, 2, 0));
        let (f1, f2) = (&c.functions[1], &c.functions[2]);
        let (p1, p2) = (f1.doorbell_page().unwrap(), f2.doorbell_page().unwrap());
        use std::os::fd::AsRawFd;
        assert_ne!(p1.file().as_raw_fd(), p2.file().as_raw_fd());
    }

    #[test]
    fn without_the_option_there_is_no_page() {
        let mut c = crate::test_utils::guest::card();
        let _a = Vm::attach(&mut c, 1, 8);
        wr(&mut c, 1, Reg::DbPage as u64, 1);
        assert_eq!(rd(&mut c, 1, Reg::DbPage as u64), 0);
        assert_eq!(rd(&mut c, 1, slot(0, Word::Watch)), u32::MAX, "bad access");
        let f = &c.functions[1];
        assert!(f.region_fd(REGION_BAR0).is_none());
        assert!(f.region_caps(REGION_BAR0).is_empty());
        let (flags, _) = f.region_info(REGION_BAR0).unwrap();
        assert_eq!(
            flags & vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_MMAP,
            0
        );
    }

    #[test]
    fn bar0_offers_the_page_as_its_one_sparse_mmap_area() {
        let c = card();
        let f = &c.functions[1];
        let (flags, size) = f.region_info(REGION_BAR0).unwrap();
        assert_eq!(size, BAR0_SIZE);
        assert_ne!(
            flags & vfio_bindings::bindings::vfio::VFIO_REGION_INFO_FLAG_MMAP,
            0
        );
        let caps = f.region_caps(REGION_BAR0);
        assert_eq!(caps.len(), 1);
        let body = &caps[0].body;
        assert_eq!(caps[0].id, 1, "SPARSE_MMAP");
        assert_eq!(
            u32::from_le_bytes(body[0..4].try_into().unwrap()),
            1,
            "nr_areas"
        );
        assert_eq!(
            u64::from_le_bytes(body[8..16].try_into().unwrap()),
            PAGE_OFFSET
        );
        assert_eq!(
            u64::from_le_bytes(body[16..24].try_into().unwrap()),
            PAGE_SIZE
        );
        assert!(f.region_fd(REGION_BAR0).is_some());
        assert!(f.region_fd(2).is_none(), "the MSI-X BAR is not mappable");
    }

    #[test]
    fn bad_page_accesses_are_counted_not_fatal() {
        let mut c = card();
        let f = &mut c.functions[1];
        let mut b = [0u8; 2];
        f.region_read(REGION_BAR0, PAGE_OFFSET + 1, &mut b).unwrap();
        assert_eq!(b, [0xff; 2]);
        f.region_write(REGION_BAR0, slot(0, Word::Watch), &1u32.to_le_bytes())
            .unwrap();
        assert_eq!(
            rd(&mut c, 1, slot(0, Word::Watch)),
            0,
            "WATCH is the card's"
        );
        assert_eq!(rd(&mut c, 1, Reg::BadAccess as u64), 2);
    }
}
