//! Doorbell pages (docs/registers.md "Doorbell pages", docs/performance.md
//! steps G4 and G6).
//!
//! Every doorbell through BAR0 is a vfio-user message: a `sendmsg` in the
//! guest's vCPU thread and a wake-up of vnicd. A doorbell page lets the
//! driver store its tails into memory the card reads on its own: while a
//! queue pair is busy the card polls the page's slots (paced by a timer,
//! never a busy loop); when the queue pair has been quiet for an idle
//! window it clears `WATCH`, and the driver, which reads `WATCH` after each
//! store, rings the BAR0 doorbell register instead (notification
//! suppression, as virtio's event index).
//!
//! Two places for the page, one protocol:
//!
//! - **in guest memory** (interface 1.4, every function): the driver names
//!   a page of its own RAM in its BAT header ([`crate::state::Bat`]); the
//!   card reaches it through the function's DMA mappings as it reaches the
//!   rings. No region becomes mappable, so QEMU keeps sending register
//!   writes posted, and the page travels with the guest's memory.
//! - **in BAR0** (`vnicd --doorbell-page`, interface 1.2): the last page of
//!   BAR0, a memfd QEMU maps. QEMU then makes every other register write of
//!   the device non-posted (measured in docs/performance.md, step G4).
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

use crate::dma::DmaSpace;
use crate::regs::{DbPageReg, BAR0_SIZE};

/// Where the BAR page lies in BAR0 (after the 256 queue-pair areas, which
/// end at 0x9000; page-aligned, as mmap needs).
pub const PAGE_OFFSET: u64 = 0xf000;
/// Size of a doorbell page, in BAR0 or in guest memory.
pub const PAGE_SIZE: u64 = 0x1000;
/// Bytes per queue pair.
pub const SLOT_SIZE: u64 = 16;
/// `WATCH` while the card polls the slot.
pub const WATCHING: u32 = 1;

/// The page in use: its memory, for loads, and where the card's stores
/// go ([`DoorbellPage::store`]).
#[derive(Clone, Copy)]
struct Page<'a> {
    mem: VolatileSlice<'a>,
    /// A guest page: the function's DMA space and the page's address.
    guest: Option<(&'a DmaSpace, u64)>,
}

impl<'a> Page<'a> {
    fn bar(mem: VolatileSlice<'a>) -> Self {
        Page { mem, guest: None }
    }
}

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
    /// register.
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

/// Why a guest page was turned off (DB_PAGE.REFUSED).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PageError {
    #[error("doorbell page {0:#x} is not 4 KiB-aligned")]
    Unaligned(u64),
    #[error("doorbell page {0:#x} is not guest memory the card may write")]
    Unreachable(u64),
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

/// BAR0's page: the memfd QEMU maps (BAR0's size, the page at
/// [`PAGE_OFFSET`]; the rest is never touched, so tmpfs allocates nothing
/// for it) and vnicd's own mapping of the page.
struct BarPage {
    file: File,
    map: MmapRegion,
}

/// Which page the slots are in while the function's doorbells go through
/// one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Active {
    /// BAR0's page (DB_PAGE.ENABLE written with a BAR page present).
    Bar,
    /// The page at this guest address (named by the BAT header).
    Guest(u64),
}

/// One function's doorbell slots: which page holds them, and the card's
/// watch over each queue pair's slot.
pub struct DoorbellPage {
    bar: Option<BarPage>,
    /// None: doorbells are register writes only.
    active: Option<Active>,
    /// The last guest page was refused or became unreachable
    /// (DB_PAGE.REFUSED), until the next try.
    refused: bool,
    watch: Vec<Watch>,
    policy: PagePolicy,
    /// Time to the next poll: the policy's interval while polls find
    /// doorbells, doubled by every poll that finds none, up to a quarter
    /// of the idle window. Sparse traffic (a ping) then costs vnicd a few
    /// wake-ups per idle window instead of one per interval, CPU time the
    /// guest's vCPUs need on a small host; a stream keeps the short one.
    interval: Duration,
}

impl std::fmt::Debug for DoorbellPage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DoorbellPage")
            .field("bar", &self.bar.is_some())
            .field("active", &self.active)
            .field("policy", &self.policy)
            .finish()
    }
}

/// Whether BAR0 `offset` (of an access of `len` bytes) lies in the BAR
/// page.
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

impl BarPage {
    fn new() -> io::Result<Self> {
        Self::with_file(memfd()?)
    }

    /// The page in `file`: a fresh memfd, or the one an earlier worker
    /// created and QEMU still maps (docs/restart.md).
    fn with_file(file: File) -> io::Result<Self> {
        if file.metadata()?.len() < BAR0_SIZE {
            return Err(io::Error::other("doorbell page file shorter than BAR0"));
        }
        let map = MmapRegion::build(
            Some(FileOffset::new(file.try_clone()?, PAGE_OFFSET)),
            PAGE_SIZE as usize,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
        )
        .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(BarPage { file, map })
    }

    fn slice(&self) -> VolatileSlice<'_> {
        self.map.as_volatile_slice()
    }
}

impl DoorbellPage {
    /// Slots for `qps` queue pairs (at most one page's worth), no page in
    /// use.
    pub fn new(qps: usize, policy: PagePolicy) -> Self {
        DoorbellPage {
            bar: None,
            active: None,
            refused: false,
            watch: vec![Watch::default(); qps.min((PAGE_SIZE / SLOT_SIZE) as usize)],
            policy,
            interval: policy.poll,
        }
    }

    /// Gives the function BAR0's page (`--doorbell-page`), zeroed.
    pub fn add_bar_page(&mut self) -> io::Result<()> {
        self.bar = Some(BarPage::new()?);
        Ok(())
    }

    /// Gives the function BAR0's page in `file`, as it is: the memfd an
    /// earlier worker made and its client maps (docs/restart.md).
    pub fn adopt_bar_page(&mut self, file: File) -> io::Result<()> {
        self.bar = Some(BarPage::with_file(file)?);
        Ok(())
    }

    /// DB_PAGE.ENABLE with BAR0's page: the driver stores its doorbells
    /// there.
    pub fn bar_enabled(&self) -> bool {
        self.active == Some(Active::Bar)
    }

    /// The BAR page's memfd to send with GET_REGION_INFO.
    pub fn file(&self) -> Option<&File> {
        self.bar.as_ref().map(|b| &b.file)
    }

    pub fn has_bar_page(&self) -> bool {
        self.bar.is_some()
    }

    pub fn policy(&self) -> PagePolicy {
        self.policy
    }

    /// Time from this poll to the next one.
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// A poll found no doorbell in any watched slot: wait longer for the
    /// next (see [`DoorbellPage::interval`]'s field).
    pub fn slow_down(&mut self) {
        let longest = self.policy.poll.max(self.policy.idle / 4);
        self.interval = (self.interval * 2).min(longest);
    }

    /// A poll found no doorbell, but a completion waits for the driver's
    /// rearm, which may come through the page: poll again after the
    /// shortest interval (a rearm noticed a backed-off interval late holds
    /// the completion's interrupt that long, docs/performance.md "Latency").
    pub fn hurry(&mut self) {
        self.interval = self.policy.poll;
    }

    /// Whether the driver's doorbells go through a page.
    pub fn enabled(&self) -> bool {
        self.active.is_some()
    }

    /// The guest page in use, if the slots are in guest memory.
    pub fn guest_page(&self) -> Option<u64> {
        match self.active {
            Some(Active::Guest(a)) => Some(a),
            _ => None,
        }
    }

    /// DB_PAGE as the driver reads it.
    pub fn register(&self) -> DbPageReg {
        DbPageReg::new()
            .with_enable(self.enabled())
            .with_present(self.bar.is_some())
            .with_guest(self.guest_page().is_some())
            .with_refused(self.refused)
    }

    /// The page in use, through `dma` for a guest page. None if there is
    /// none, or the guest page is not (or no longer) reachable.
    fn mem<'a>(&'a self, dma: &'a DmaSpace) -> Option<Page<'a>> {
        Self::page_mem(&self.bar, self.active, dma)
    }

    /// [`DoorbellPage::mem`] borrowing only the BAR page, so the watch
    /// list can be updated meanwhile.
    fn page_mem<'a>(
        bar: &'a Option<BarPage>,
        active: Option<Active>,
        dma: &'a DmaSpace,
    ) -> Option<Page<'a>> {
        match active? {
            Active::Bar => bar.as_ref().map(|b| Page::bar(b.slice())),
            Active::Guest(a) => {
                let t = dma.target(a, PAGE_SIZE as usize).ok().flatten()?;
                Some(Page {
                    mem: t.as_source().volatile(),
                    guest: Some((dma, a)),
                })
            }
        }
    }

    fn at(q: usize, word: Word) -> usize {
        q * SLOT_SIZE as usize + word as usize
    }

    fn load(page: Page, q: usize, word: Word) -> u32 {
        // In bounds by construction (q < watch.len() ≤ slots per page).
        page.mem
            .load::<u32>(Self::at(q, word), Ordering::Acquire)
            .map_or(u32::MAX, u32::from_le)
    }

    /// A store of the card's into the page: a guest page's goes through
    /// the function's DMA space, which keeps it for the client in
    /// migration mode (crate::dma::relay).
    fn store(page: Page, q: usize, word: Word, v: u32) {
        let at = Self::at(q, word);
        match page.guest {
            Some((dma, base)) => {
                let _ = dma.store_u32(base + at as u64, v);
            }
            None => {
                let _ = page.mem.store(v.to_le(), at, Ordering::Release);
            }
        }
    }

    fn read_slot(mem: Page, q: usize) -> Slot {
        Slot {
            tx_tail: Self::load(mem, q, Word::TxTail),
            rx_tail: Self::load(mem, q, Word::RxTail),
            irq_seq: Self::load(mem, q, Word::IrqSeq),
        }
    }

    /// What the driver wrote into queue pair `q`'s slot (zeros without a
    /// page in use).
    pub fn slot(&self, dma: &DmaSpace, q: usize) -> Slot {
        self.mem(dma)
            .map_or_else(Slot::default, |m| Self::read_slot(m, q))
    }

    /// Whether the page in use can be reached (a guest page may have been
    /// unmapped since it was accepted).
    pub fn reachable(&self, dma: &DmaSpace) -> bool {
        self.mem(dma).is_some()
    }

    /// Stops using any page and forgets what was polled: function reset,
    /// client gone, VCT entry cleared. The BAR page is zeroed, so a driver
    /// that still stores into it reads WATCH 0 and rings the registers. A
    /// guest page is the driver's memory and is not written: the driver
    /// that reset the function sets it up again.
    pub fn reset(&mut self) {
        if let Some(bar) = &self.bar {
            let _ = bar.slice().write_slice(&[0; PAGE_SIZE as usize], 0);
        }
        self.watch.fill(Watch::default());
        self.active = None;
        self.refused = false;
    }

    /// DB_PAGE.ENABLE written with the BAR page (`on` and a BAR page
    /// present) or off. Turning it on starts every slot from the queues'
    /// current tails (`tails(q)`), so a stale slot is never taken for a
    /// doorbell; the driver stores into the page only after this.
    pub fn set_bar_enabled(&mut self, on: bool, tails: impl Fn(usize) -> (u32, u32)) {
        let unchanged = match self.active {
            None => !on || self.bar.is_none(),
            Some(Active::Bar) => on,
            // ENABLE written as 1 again leaves the guest page in use; 0
            // turns it off.
            Some(Active::Guest(_)) => on,
        };
        if unchanged {
            return;
        }
        self.reset();
        if let Some(mem) = self
            .bar
            .as_ref()
            .map(|b| Page::bar(b.slice()))
            .filter(|_| on)
        {
            for (q, w) in self.watch.iter_mut().enumerate() {
                *w = Self::restart_slot(mem, q, tails(q));
            }
            self.active = Some(Active::Bar);
        }
    }

    /// Writes a slot that starts from tails `(tx, rx)`, unwatched; returns
    /// the card's view of it.
    fn restart_slot(mem: Page, q: usize, (tx, rx): (u32, u32)) -> Watch {
        Self::store(mem, q, Word::Watch, 0);
        Self::store(mem, q, Word::TxTail, tx);
        Self::store(mem, q, Word::RxTail, rx);
        Watch {
            last: Self::read_slot(mem, q),
            ..Watch::default()
        }
    }

    /// The BAT names a guest page at `address` (a VCT entry was
    /// committed): the slots are there from now on, if the card may write
    /// the whole page. Nothing is polled yet, and the driver's tails stay
    /// as they are: the card starts each slot from the queue's tails
    /// (`tails(q)`, after a resume what the contexts hold), so a tail the
    /// driver stored that the queue has not taken is taken at the next
    /// kick; IRQ_SEQ counts from what the slot holds. WATCH is cleared, so
    /// the driver's next doorbell rings the register.
    pub fn use_guest_page(
        &mut self,
        dma: &DmaSpace,
        address: u64,
        tails: impl Fn(usize) -> (u32, u32),
    ) -> Result<(), PageError> {
        self.reset();
        if address % PAGE_SIZE != 0 {
            self.lost();
            return Err(PageError::Unaligned(address));
        }
        self.active = Some(Active::Guest(address));
        let Some(mem) = Self::page_mem(&self.bar, self.active, dma) else {
            self.lost();
            return Err(PageError::Unreachable(address));
        };
        for (q, w) in self.watch.iter_mut().enumerate() {
            let (tx_tail, rx_tail) = tails(q);
            Self::store(mem, q, Word::Watch, 0);
            *w = Watch {
                last: Slot {
                    tx_tail,
                    rx_tail,
                    irq_seq: Self::load(mem, q, Word::IrqSeq),
                },
                ..Watch::default()
            };
        }
        Ok(())
    }

    /// A VCT entry is committed or cleared: a guest page in use, or the
    /// refusal of the last one, belongs to the BAT before it. The BAR
    /// page, turned on by a register, stays.
    pub fn forget_guest_page(&mut self) {
        if self.guest_page().is_some() {
            self.active = None;
            self.watch.fill(Watch::default());
        }
        self.refused = false;
    }

    /// The guest page is refused, or can no longer be reached: doorbells
    /// are register writes from now on (DB_PAGE.REFUSED). The driver, which reads WATCH
    /// from the unreachable page, may still believe the card polls; its
    /// transmit watchdog recovers the function.
    pub fn lost(&mut self) {
        self.reset();
        self.refused = true;
    }

    /// Queue pair `q` (re)started or stopped: its slot starts from these
    /// tails, and the card stops polling it until the next register kick.
    pub fn restart(&mut self, dma: &DmaSpace, q: usize, tails: (u32, u32)) {
        if q >= self.watch.len() {
            return;
        }
        if let Some(mem) = self.mem(dma) {
            self.watch[q] = Self::restart_slot(mem, q, tails);
        }
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
    pub fn watch(&mut self, dma: &DmaSpace, q: usize, now: Instant) {
        let Some(mem) = Self::page_mem(&self.bar, self.active, dma) else {
            return;
        };
        let Some(w) = self.watch.get_mut(q) else {
            return;
        };
        w.last_active = Some(now);
        self.interval = self.policy.poll;
        if w.since.is_none() {
            w.since = Some(now);
            Self::store(mem, q, Word::Watch, WATCHING);
        }
    }

    /// The doorbells in queue pair `q`'s slot since the last call.
    pub fn take(&mut self, dma: &DmaSpace, q: usize) -> Change {
        let Some(mem) = self.mem(dma).filter(|_| q < self.watch.len()) else {
            return Change::default();
        };
        let now = Self::read_slot(mem, q);
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
    pub fn quiet(&mut self, dma: &DmaSpace, q: usize, now: Instant) -> bool {
        // In migration mode the clear of WATCH reaches the page only when
        // the client has made the write, after the card read the slot
        // again: a tail stored in between would be lost. The card keeps
        // polling until the mode ends.
        if dma.relaying() && matches!(self.active, Some(Active::Guest(_))) {
            return false;
        }
        let idle = self.policy.idle;
        let Some(mem) = Self::page_mem(&self.bar, self.active, dma) else {
            return false;
        };
        let Some(w) = self.watch.get_mut(q) else {
            return false;
        };
        let quiet_since = w.last_active.or(w.since).unwrap_or(now);
        if now.saturating_duration_since(quiet_since) < idle {
            return false;
        }
        w.since = None;
        Self::store(mem, q, Word::Watch, 0);
        // Pairs with the driver's barrier between its tail store and its
        // WATCH load.
        fence(Ordering::SeqCst);
        true
    }

    /// A dword of the BAR page read through the socket (a client that does
    /// not map the page). `rel` is the offset in the page, dword-aligned.
    pub fn read_dword(&self, rel: u64) -> u32 {
        self.bar.as_ref().map_or(u32::MAX, |b| {
            b.slice()
                .load::<u32>(rel as usize, Ordering::Acquire)
                .map_or(u32::MAX, u32::from_le)
        })
    }

    /// A dword write to the BAR page through the socket: the driver's
    /// words only (WATCH is the card's). Returns false for a write the
    /// page refuses.
    pub fn write_dword(&self, rel: u64, v: u32) -> bool {
        if rel % SLOT_SIZE == Word::Watch as u64 {
            return false;
        }
        self.bar.as_ref().is_some_and(|b| {
            b.slice()
                .store(v.to_le(), rel as usize, Ordering::Release)
                .is_ok()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page() -> DoorbellPage {
        let mut p = DoorbellPage::new(8, PagePolicy::default());
        p.add_bar_page().unwrap();
        p
    }

    /// The BAR page needs no guest memory.
    fn d() -> DmaSpace {
        DmaSpace::default()
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
            p.file().unwrap(),
            &mut b,
            PAGE_OFFSET + SLOT_SIZE + Word::TxTail as u64,
        )
        .unwrap();
        assert_eq!(u32::from_le_bytes(b), 0x1234);
        assert_eq!(p.file().unwrap().metadata().unwrap().len(), BAR0_SIZE);
    }

    #[test]
    fn enabling_starts_slots_from_the_queue_tails_and_not_watched() {
        let mut p = page();
        drive(&p, 2, Word::TxTail, 99);
        p.set_bar_enabled(true, |q| (q as u32, 10 + q as u32));
        assert_eq!(
            p.slot(&d(), 2),
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
        p.set_bar_enabled(true, |_| (0, 0));
        let t0 = Instant::now();
        p.watch(&d(), 3, t0);
        let watch = 3 * SLOT_SIZE + Word::Watch as u64;
        assert_eq!(p.read_dword(watch), WATCHING);
        assert_eq!(p.watched().collect::<Vec<_>>(), vec![3]);
        assert!(!p.quiet(&d(), 3, t0 + p.policy().idle / 2));
        assert!(p.watching(3));
        assert!(p.quiet(&d(), 3, t0 + p.policy().idle));
        assert!(!p.watching(3));
        assert_eq!(p.read_dword(watch), 0);
    }

    #[test]
    fn a_doorbell_in_the_slot_extends_the_idle_window() {
        let mut p = page();
        p.set_bar_enabled(true, |_| (0, 0));
        let t0 = Instant::now();
        let idle = p.policy().idle;
        p.watch(&d(), 0, t0);
        p.watch(&d(), 0, t0 + idle / 2);
        assert!(!p.quiet(&d(), 0, t0 + idle));
        assert!(p.quiet(&d(), 0, t0 + idle / 2 + idle));
    }

    #[test]
    fn empty_polls_space_out_up_to_a_quarter_of_the_idle_window() {
        let mut p = page();
        p.set_bar_enabled(true, |_| (0, 0));
        let policy = p.policy();
        assert_eq!(p.interval(), policy.poll);
        p.slow_down();
        assert_eq!(p.interval(), policy.poll * 2);
        for _ in 0..20 {
            p.slow_down();
        }
        assert_eq!(p.interval(), policy.idle / 4);
        p.watch(&d(), 0, Instant::now());
        assert_eq!(p.interval(), policy.poll, "a doorbell: poll often again");
        for _ in 0..20 {
            p.slow_down();
        }
        p.hurry();
        assert_eq!(p.interval(), policy.poll, "a held completion: poll often");
    }

    #[test]
    fn take_reports_each_doorbell_once() {
        let mut p = page();
        p.set_bar_enabled(true, |_| (4, 7));
        assert_eq!(
            p.take(&d(), 1),
            Change::default(),
            "the tails it started from"
        );
        drive(&p, 1, Word::TxTail, 5);
        drive(&p, 1, Word::IrqSeq, 1);
        let c = p.take(&d(), 1);
        assert_eq!(
            c,
            Change {
                tx_tail: Some(5),
                rx_tail: None,
                rearm: true
            }
        );
        assert!(c.any());
        assert!(!p.take(&d(), 1).any(), "the same doorbells twice");
        drive(&p, 1, Word::RxTail, 9);
        assert_eq!(p.take(&d(), 1).rx_tail, Some(9));
        assert!(!p.take(&d(), 300).any(), "no slot");
    }

    #[test]
    fn a_restart_takes_the_queue_tails_as_seen() {
        let mut p = page();
        p.set_bar_enabled(true, |_| (0, 0));
        drive(&p, 0, Word::TxTail, 37);
        p.restart(&d(), 0, (0, 0));
        drive(&p, 0, Word::TxTail, 37);
        assert_eq!(
            p.take(&d(), 0).tx_tail,
            Some(37),
            "the same value after a restart"
        );
    }

    #[test]
    fn the_driver_cannot_write_watch_and_reset_zeroes_everything() {
        let mut p = page();
        p.set_bar_enabled(true, |_| (5, 6));
        assert!(!p.write_dword(Word::Watch as u64, WATCHING));
        p.watch(&d(), 0, Instant::now());
        p.reset();
        assert!(!p.enabled());
        assert!(!p.watching(0));
        assert_eq!(p.slot(&d(), 0), Slot::default());
        assert_eq!(p.read_dword(Word::Watch as u64), 0);
    }

    #[test]
    fn slots_past_the_function_queue_pairs_are_ignored() {
        let mut p = page();
        p.watch(&d(), 200, Instant::now());
        assert!(!p.watching(200));
        p.restart(&d(), 200, (1, 1));
        assert!(!p.quiet(&d(), 200, Instant::now()));
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
            doorbell_page: true,
            ..CardConfig::default()
        })
        .unwrap()
    }

    fn slot(q: u16, word: Word) -> u64 {
        PAGE_OFFSET + u64::from(q) * SLOT_SIZE + word as u64
    }

    /// The driver's store into the page (no message in a real guest).
    fn store(c: &mut Card, f: usize, q: u16, word: Word, v: u32) {
        c.functions_mut()[f]
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
            let s = c.functions()[2].stats();
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
    fn a_completion_held_for_the_rearm_keeps_the_polls_short() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let mut b = Vm::attach(&mut c, 2, 0);
        enable(&mut c, 2);
        let rx = b.rings[0].1;
        b.rx_tail[0] = b.drv.post_rx(rx, RING, 0, 4, crate::test_utils::guest::BUF);
        store(&mut c, 2, 0, Word::RxTail, b.rx_tail[0].into());
        wr(&mut c, 2, qp_reg(0, 0x14), 0);
        let poll = PagePolicy::default().poll;
        let empty_polls = |c: &mut Card, t: &mut Instant| {
            for _ in 0..6 {
                *t += poll;
                c.poll_doorbells(*t);
            }
        };
        let mut t = Instant::now();
        // Nothing held: empty polls space out.
        empty_polls(&mut c, &mut t);
        assert!(c.next_deadline().unwrap() > t + poll, "backed off");
        // The first frame fires B's vector, the second waits for the rearm.
        for len in [60, 61] {
            let fr = frame(&c, len);
            a.send(&mut c, 0, &[fr]);
        }
        assert!(c.functions()[2].awaits_rearm());
        empty_polls(&mut c, &mut t);
        assert!(
            c.next_deadline().unwrap() <= t + poll,
            "a held completion: the rearm is looked for after the shortest interval"
        );
        // The rearm through the page fires it; then polls space out again.
        store(&mut c, 2, 0, Word::IrqSeq, 1);
        t += poll;
        c.poll_doorbells(t);
        c.run_timers(t);
        assert!(!c.functions()[2].awaits_rearm());
        empty_polls(&mut c, &mut t);
        assert!(c.next_deadline().unwrap() > t + poll, "backed off again");
    }

    #[test]
    fn reset_turns_the_page_off_and_registers_count_again() {
        let (mut c, _a, b) = one_frame_through_the_page();
        c.functions_mut()[1].reset();
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
        let (f1, f2) = (&c.functions()[1], &c.functions()[2]);
        let (p1, p2) = (
            f1.doorbell_page().file().unwrap(),
            f2.doorbell_page().file().unwrap(),
        );
        use std::os::fd::AsRawFd;
        assert_ne!(p1.as_raw_fd(), p2.as_raw_fd());
    }

    #[test]
    fn without_the_option_there_is_no_page() {
        let mut c = crate::test_utils::guest::card();
        let _a = Vm::attach(&mut c, 1, 8);
        wr(&mut c, 1, Reg::DbPage as u64, 1);
        assert_eq!(rd(&mut c, 1, Reg::DbPage as u64), 0);
        assert_eq!(rd(&mut c, 1, slot(0, Word::Watch)), u32::MAX, "bad access");
        let f = &c.functions()[1];
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
        let f = &c.functions()[1];
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
        let f = &mut c.functions_mut()[1];
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

/// The page in guest memory (interface 1.4): the fake driver names a page
/// of its own memory in its BAT header and stores into it directly, as
/// vnic.ko does; the card reaches it through the function's DMA mappings.
#[cfg(test)]
mod guest_page_tests {
    use super::*;
    use crate::card::Card;
    use crate::function::{VctOutcome, REGION_CONFIG};
    use crate::regs::{DbPageReg, FnStat, Reg};
    use crate::state::ServiceType;
    use crate::test_utils::guest::{card, eth, fn_stat, mac, qp_reg, rd, wr, Vm, RING};

    const TX: u64 = 0x10;
    /// QueueContext.tail.
    const CTX_TAIL: u64 = 14;

    fn db_page(c: &mut Card, f: usize) -> DbPageReg {
        DbPageReg::from_bits(rd(c, f, Reg::DbPage as u64))
    }

    /// Names `page` in the VM's BAT header and commits the VCT entry
    /// again (what vnic.ko's probe does in one step; here the queues are
    /// already running, as on a destination card after migration).
    fn name_page(c: &mut Card, vm: &Vm, page: u64) {
        vm.drv.write_u64(vm.tables.bat + 8, page);
        wr(c, vm.f, Reg::VctLo as u64, vm.tables.bat as u32);
        wr(c, vm.f, Reg::VctHi as u64, (vm.tables.bat >> 32) as u32);
        assert_eq!(rd(c, vm.f, Reg::VctStatus as u64), 0);
    }

    /// VM A (VF0) and B (VF1); A's doorbells go through a page of its own
    /// memory. Returns the page's guest address.
    fn setup() -> (Card, Vm, Vm, u64) {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        let page = a.drv.alloc(PAGE_SIZE, PAGE_SIZE);
        name_page(&mut c, &a, page);
        (c, a, b, page)
    }

    fn word(page: u64, q: u16, w: Word) -> u64 {
        page + u64::from(q) * SLOT_SIZE + w as u64
    }

    fn watched(vm: &Vm, page: u64) -> bool {
        vm.drv.read_u32(word(page, 0, Word::Watch)) == WATCHING
    }

    /// vnic.ko's send doorbell: the tail into the page, then the register
    /// (with a value the card must ignore) only if the card does not
    /// watch. Returns whether it rang.
    fn send(c: &mut Card, vm: &mut Vm, page: u64, frames: &[Vec<u8>]) -> bool {
        let tx = vm.rings[0].0;
        vm.tx_tail[0] = vm.drv.queue_tx(tx, RING, vm.tx_tail[0], frames);
        vm.drv
            .write_u32(word(page, 0, Word::TxTail), vm.tx_tail[0].into());
        let ring = !watched(vm, page);
        if ring {
            wr(c, vm.f, qp_reg(0, TX), 0xdead);
        }
        ring
    }

    fn frame(c: &Card, len: usize) -> Vec<u8> {
        eth(mac(c, 2, 0), mac(c, 1, 0), None, len)
    }

    #[test]
    fn the_page_the_bat_names_takes_doorbells_without_registers() {
        let (mut c, mut a, b, page) = setup();
        let r = db_page(&mut c, 1);
        assert!(r.enable() && r.guest() && !r.present() && !r.refused());
        assert!(!watched(&a, page), "idle: ring the register");
        let f1 = frame(&c, 60);
        assert!(
            send(&mut c, &mut a, page, std::slice::from_ref(&f1)),
            "kick"
        );
        assert_eq!(
            b.received(0),
            vec![f1.clone()],
            "the page's tail, not 0xdead"
        );
        assert!(watched(&a, page), "WATCH written into guest memory");

        let f2 = frame(&c, 70);
        assert!(!send(&mut c, &mut a, page, std::slice::from_ref(&f2)));
        c.poll_doorbells(Instant::now());
        c.run_pending();
        assert_eq!(b.received(0), vec![f1, f2]);
        assert_eq!(fn_stat(&c, 1, FnStat::TxPackets), 2);

        let idle = PagePolicy::default().idle;
        c.poll_doorbells(Instant::now() + idle * 2);
        assert!(!watched(&a, page), "idle: the driver rings again");
        assert_eq!(c.next_deadline(), None, "no timer while idle");
        assert_eq!(
            db_page(&mut c, 2).into_bits(),
            0,
            "B named no page: register doorbells"
        );
    }

    #[test]
    fn a_page_the_card_may_not_write_is_refused_and_registers_still_work() {
        let mut c = card();
        let mut a = Vm::attach(&mut c, 1, 8);
        let b = Vm::attach(&mut c, 2, 8);
        let (base, size, _) = a.drv.memory();
        for bad in [base + 8, base + size, 0x1000, !0xfff] {
            name_page(&mut c, &a, bad);
            let r = db_page(&mut c, 1);
            assert!(!r.enable() && r.refused(), "{bad:#x}: {r:?}");
            assert_eq!(rd(&mut c, 1, Reg::VctStatus as u64), 0, "the BAT is fine");
        }
        let fr = frame(&c, 60);
        a.send(&mut c, 0, std::slice::from_ref(&fr));
        assert_eq!(b.received(0), vec![fr], "register doorbells");
        assert_eq!(fn_stat(&c, 1, FnStat::QueueErrors), 0);
        name_page(&mut c, &a, 0);
        assert_eq!(
            db_page(&mut c, 1).into_bits(),
            0,
            "the next commit clears REFUSED"
        );
    }

    #[test]
    fn a_page_unmapped_later_is_dropped_without_harm() {
        let (mut c, mut a, _b, page) = setup();
        let fr = frame(&c, 60);
        send(&mut c, &mut a, page, &[fr]);
        assert!(c.next_deadline().is_some(), "polling");
        let (base, size, _) = a.drv.memory();
        c.functions_mut()[1].dma_unmap(base, size, false).unwrap();
        c.poll_doorbells(Instant::now());
        let r = db_page(&mut c, 1);
        assert!(!r.enable() && r.refused(), "{r:?}");
        c.poll_doorbells(Instant::now());
        assert_eq!(c.next_deadline(), None, "nothing polled");
        wr(&mut c, 1, qp_reg(0, TX), 5);
        assert_eq!(c.functions()[2].counters().get(FnStat::RxPackets), 1);
    }

    #[test]
    fn quiesce_takes_stored_tails_and_a_new_card_takes_them_at_the_kick() {
        let (mut c, mut a, b, page) = setup();
        let fr = frame(&c, 60);
        send(&mut c, &mut a, page, &[fr]);
        let fr = frame(&c, 61);
        assert!(!send(&mut c, &mut a, page, &[fr]), "watched");
        // The VM stops; management quiesces: the stored tail reaches the
        // context in guest memory, the frame stays for the next card.
        c.functions_mut()[1].quiesce();
        let ctx = a.tables.context(ServiceType::SendQueue, 0);
        assert_eq!(a.drv.read_u16(ctx + CTX_TAIL), a.tx_tail[0]);
        assert_eq!(b.received(0).len(), 1);

        // A new card after migration: the same memory, the same BAT,
        // given by management once the guest set Bus Master Enable.
        let mut c2 = card();
        let rdwr = crate::dma::DMA_READ | crate::dma::DMA_WRITE;
        for vm in [&a, &b] {
            let (base, size, file) = vm.drv.memory();
            let f = &mut c2.functions_mut()[vm.f];
            f.dma_map(base, size, 0, rdwr, Some(file)).unwrap();
            f.region_write(REGION_CONFIG, 4, &[6, 0]).unwrap();
            assert_eq!(f.set_vct(vm.tables.bat), VctOutcome::Committed);
        }
        assert!(db_page(&mut c2, 1).guest());
        assert!(!watched(&a, page), "the new card cleared WATCH");
        // The driver re-rings on RESUMED: a store and a kick; the frame
        // the first card left and this one arrive.
        assert!(send(&mut c2, &mut a, page, &[frame(&c, 62)]));
        assert_eq!(b.received(0).len(), 3);
    }

    #[test]
    fn reset_turns_the_page_off_and_leaves_guest_memory_alone() {
        let (mut c, mut a, _b, page) = setup();
        let fr = frame(&c, 60);
        send(&mut c, &mut a, page, &[fr]);
        assert!(watched(&a, page));
        c.functions_mut()[1].reset();
        c.after_io(1);
        assert_eq!(db_page(&mut c, 1).into_bits(), 0);
        assert!(watched(&a, page), "not written after the reset");
        c.poll_doorbells(Instant::now());
        assert_eq!(c.next_deadline(), None);
    }

    #[test]
    fn writing_enable_0_turns_the_page_off_and_1_does_not_swap_it_for_none() {
        let (mut c, _a, _b, _page) = setup();
        wr(&mut c, 1, Reg::DbPage as u64, 1);
        assert!(db_page(&mut c, 1).guest(), "ENABLE again: unchanged");
        wr(&mut c, 1, Reg::DbPage as u64, 0);
        assert_eq!(db_page(&mut c, 1).into_bits(), 0);
    }
}
