//! The card outlives its worker process (docs/restart.md).
//!
//! A card worker keeps, through the descriptor store ([`store`]), every
//! descriptor a guest depends on, and keeps the state record ([`record`])
//! current: management's settings (the configuration file schema), and
//! each function's state with its client ([`crate::function::FunctionRecord`]).
//! The queues are in guest memory already. A worker started with what an
//! earlier one kept ([`Restart::open`]) applies the settings, takes every
//! function's state back and serves the same connections, so neither QEMU
//! nor the guest sees the process change.
//!
//! When the record is written: after every loop turn in which a client
//! sent a message other than a doorbell or a read, a control request ran,
//! or a function's mappings or eventfds changed. The counters go into the
//! record's live block after every turn with traffic. Changed descriptors are stored under new names first, then
//! the record naming them is written, then the old names are removed, so
//! a record never names descriptors the store does not hold.

pub mod record;
pub mod store;

use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{error, info, warn};
use serde::{Deserialize, Serialize};
use thiserror::Error;

pub use record::{RecordError, RecordFile, LAYOUT};
pub use store::{names, FdStore, StoreError};

use vm_memory::{ByteValued, Bytes};

use crate::card::{Card, CardCounters};
use crate::control::api::CardFile;
use crate::function::FunctionRecord;
use crate::function::{FnCounters, FunctionStats};
use crate::uplink::UplinkCounters;
use crate::vxlan::exception::ExceptionCounters;
use crate::vxlan::table::{MacView, TunnelView};
use crate::vxlan::VxlanCounters;

/// A function's client, as the record keeps it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClientRecord {
    /// VERSION was negotiated.
    pub versioned: bool,
    /// Part of a message had been read (docs/restart.md, "A message cut
    /// by the crash"): a worker taking over cannot know the rest's place
    /// in the stream, and cuts the client.
    #[serde(default)]
    pub mid_message: bool,
}

/// One function in the record.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionEntry {
    pub state: FunctionRecord,
    /// Its client, if one was attached.
    pub client: Option<ClientRecord>,
    /// Store names of its mappings' files and of its eventfds.
    pub dma_fds: Option<String>,
    pub irq_fds: Option<String>,
}

/// "VNICLIVE": the live block holds counters.
const LIVE_MAGIC: u64 = u64::from_le_bytes(*b"VNICLIVE");

/// The live block's header.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct LiveHeader {
    magic: u64,
    /// Functions after the card's block.
    functions: u64,
}

/// The card's counters in the live block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct LiveCard {
    counters: CardCounters,
    uplink: UplinkCounters,
    vxlan: VxlanCounters,
    exception: ExceptionCounters,
}

/// One function's counters in the live block.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct LiveFunction {
    counters: FnCounters,
    stats: FunctionStats,
}

// SAFETY: repr(C) structs whose every field is a u64, an array of u64 or a
// repr(C) struct of u64s: no padding, and every bit pattern is a value.
unsafe impl ByteValued for LiveHeader {}
// SAFETY: as above.
unsafe impl ByteValued for LiveCard {}
// SAFETY: as above.
unsafe impl ByteValued for LiveFunction {}

/// The card's own counters and learned tables.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardState {
    pub counters: CardCounters,
    pub uplink: UplinkCounters,
    pub vxlan: VxlanCounters,
    pub exception: ExceptionCounters,
    /// VxLAN tunnels and MAC entries (the agents', docs/vxlan.md).
    pub tunnels: Vec<TunnelView>,
    pub macs: Vec<MacView>,
}

/// The state record (layout [`LAYOUT`]).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CardRecord {
    /// The vnicd version that wrote it.
    pub written_by: String,
    /// Management's settings, as `vnicctl export` writes them.
    pub card: CardFile,
    /// The card's counters and VxLAN tables.
    #[serde(default)]
    pub state: CardState,
    pub functions: Vec<FunctionEntry>,
}

impl CardState {
    /// `card`'s counters and tables now.
    pub fn of(card: &Card) -> Self {
        CardState {
            counters: *card.counters(),
            uplink: card.uplink().counters,
            vxlan: card.vxlan().counters,
            exception: card.vxlan().exception,
            tunnels: card.vxlan().tables.tunnels(),
            macs: card.vxlan().tables.macs(),
        }
    }

    /// Puts them back into a card taking over.
    pub fn restore(&self, card: &mut Card) {
        *card.counters_mut() = self.counters;
        card.uplink_mut().counters = self.uplink;
        let vxlan = card.vxlan_mut();
        vxlan.counters = self.vxlan;
        vxlan.exception = self.exception;
        let skipped = vxlan.tables.restore(&self.tunnels, &self.macs);
        if skipped > 0 {
            warn!("state record: {skipped} VxLAN entries do not fit this card's tables");
        }
    }
}

#[derive(Debug, Error)]
pub enum RestartError {
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("state record: {0}")]
    Parse(serde_json::Error),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("descriptor store: {0}")]
    Env(io::Error),
}

/// What the worker keeps for function f.
#[derive(Default)]
struct Kept {
    /// The function's descriptor generation when they were stored.
    generation: Option<u64>,
    dma: Option<String>,
    irq: Option<String>,
}

/// A worker's record keeping: the store, the record, and what was kept.
pub struct Restart {
    store: FdStore,
    /// None without a keeper: nothing outlives the process.
    record: Option<RecordFile>,
    kept: Vec<Kept>,
    /// Names replaced since the last record, removed once it is written.
    stale: Vec<String>,
    /// Names this worker uses (adopted or stored); [`Restart::prune`]
    /// drops the rest.
    live: Vec<String>,
    dirty: bool,
    /// Traffic since the last record: counters moved.
    active: bool,
    /// The clients as the last record has them.
    clients: Vec<Option<ClientRecord>>,
    watchdog: Option<(Duration, Instant)>,
    /// How many workers came before this one, and how the last one ended.
    pub restarts: u32,
    pub last_exit: Option<String>,
}

impl Restart {
    /// The worker's record keeping, from what whoever started it handed
    /// over: with a keeper (or systemd), the record an earlier worker left
    /// (returned, to restore from) or a new one, stored at once.
    ///
    /// # Safety
    ///
    /// Reads and changes the environment: call before any thread exists.
    pub unsafe fn open() -> Result<(Self, Option<CardRecord>), RestartError> {
        // SAFETY: the caller guarantees no other thread exists.
        let mut store = unsafe { FdStore::from_env() }.map_err(RestartError::Env)?;
        let restarts = std::env::var("VNICD_RESTARTS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let last_exit = std::env::var("VNICD_LAST_EXIT").ok();
        let (record, previous) = match store.take_one(names::RECORD) {
            Some(fd) => {
                let file = RecordFile::open(std::fs::File::from(fd))?;
                let bytes = file.read()?;
                let rec = if bytes.is_empty() {
                    None
                } else {
                    Some(serde_json::from_slice(&bytes).map_err(RestartError::Parse)?)
                };
                (Some(file), rec)
            }
            None if store.active() => {
                let file = RecordFile::create()?;
                store.store_one(names::RECORD, file.file())?;
                (Some(file), None)
            }
            None => (None, None),
        };
        let watchdog = FdStore::watchdog_interval().map(|d| (d, Instant::now()));
        let restart = Restart {
            store,
            record,
            kept: Vec::new(),
            stale: Vec::new(),
            live: vec![names::RECORD.into()],
            dirty: true,
            active: false,
            clients: Vec::new(),
            watchdog,
            restarts,
            last_exit,
        };
        Ok((restart, previous))
    }

    /// Record keeping for a worker without a keeper (tests).
    pub fn none() -> Self {
        Restart {
            store: FdStore::inactive(),
            record: None,
            kept: Vec::new(),
            stale: Vec::new(),
            live: Vec::new(),
            dirty: false,
            active: false,
            clients: Vec::new(),
            watchdog: None,
            restarts: 0,
            last_exit: None,
        }
    }

    /// Whether anything outlives this worker.
    pub fn keeping(&self) -> bool {
        self.record.is_some()
    }

    /// Whether this worker took over from an earlier one.
    pub fn restarting(&self) -> bool {
        self.store.restarting()
    }

    /// The descriptor an earlier worker stored under `name`, taken; the
    /// name stays in use.
    pub fn adopt(&mut self, name: &str) -> Option<OwnedFd> {
        let fd = self.store.take_one(name)?;
        self.use_name(name);
        Some(fd)
    }

    /// Stores `fd` under `name` (a descriptor this worker made).
    pub fn keep_one(&mut self, name: &str, fd: impl AsFd) {
        if self.record.is_none() {
            return;
        }
        match self.store.store_one(name, fd) {
            Ok(()) => self.use_name(name),
            Err(e) => warn!("{e}: it will not outlive this worker"),
        }
    }

    /// Drops `name` from the store (a client gone, a listener closed).
    pub fn forget(&mut self, name: &str) {
        self.live.retain(|n| n != name);
        self.store.remove(name);
    }

    /// The descriptor stored under `name` by an earlier worker, or `make`'s,
    /// stored now. Without a keeper, `make`'s.
    pub fn adopt_or<T: AsFd>(
        &mut self,
        name: &str,
        adopt: impl FnOnce(OwnedFd) -> T,
        make: impl FnOnce() -> io::Result<T>,
    ) -> io::Result<T> {
        if let Some(fd) = self.adopt(name) {
            return Ok(adopt(fd));
        }
        let made = make()?;
        self.keep_one(name, made.as_fd());
        Ok(made)
    }

    fn use_name(&mut self, name: &str) {
        if !self.live.iter().any(|n| n == name) {
            self.live.push(name.into());
        }
    }

    /// Something durable changed: write the record after this turn.
    pub fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    /// Traffic moved the counters: the live block is rewritten after this
    /// turn.
    pub fn mark_active(&mut self) {
        self.active = true;
    }

    /// Takes function `index`'s state back from `entry`, with the files and
    /// eventfds the store kept under the record's names. Returns whether
    /// it was restored; if not (logged), its client must be cut.
    pub fn restore_function(
        &mut self,
        card: &mut Card,
        index: usize,
        entry: &FunctionEntry,
    ) -> bool {
        let files = |store: &mut FdStore, name: &Option<String>| -> Vec<std::fs::File> {
            let fds = name.as_deref().map(|n| store.take(n)).unwrap_or_default();
            fds.into_iter().map(std::fs::File::from).collect()
        };
        let dma = files(&mut self.store, &entry.dma_fds);
        let irq = files(&mut self.store, &entry.irq_fds);
        for name in [&entry.dma_fds, &entry.irq_fds].into_iter().flatten() {
            self.use_name(name);
        }
        let name = entry.state.name.clone();
        match card.restore_function(index, &entry.state, dma, irq) {
            Ok(()) => {
                let f = &card.functions()[index];
                self.kept_mut(index).generation = Some(f.fd_generation());
                let kept = &mut self.kept[index];
                kept.dma.clone_from(&entry.dma_fds);
                kept.irq.clone_from(&entry.irq_fds);
                true
            }
            Err(e) => {
                error!("{name}: cannot take the state record back ({e}); cutting its client");
                false
            }
        }
    }

    fn kept_mut(&mut self, index: usize) -> &mut Kept {
        if self.kept.len() <= index {
            self.kept.resize_with(index + 1, Kept::default);
        }
        &mut self.kept[index]
    }

    /// After a loop turn: stores changed descriptors, writes the record if
    /// anything durable changed (or a second passed, for the counters),
    /// then drops replaced descriptors; and tells the keeper the worker is
    /// alive when due. `clients[f]` is function f's client, if attached.
    pub fn after_turn(&mut self, card: &Card, clients: &[Option<ClientRecord>], now: Instant) {
        if let Some((every, last)) = self.watchdog {
            if now.duration_since(last) >= every {
                self.store.watchdog();
                self.watchdog = Some((every, now));
            }
        }
        if self.record.is_none() {
            return;
        }
        for (i, f) in card.functions().iter().enumerate() {
            if self.kept_mut(i).generation == Some(f.fd_generation()) {
                continue;
            }
            let g = f.fd_generation();
            let dma = self.keep(names::dma(f.name(), g), f.dma_files());
            let irq = self.keep(names::irq(f.name(), g), f.irq_fds());
            let kept = &mut self.kept[i];
            self.stale.extend(kept.dma.take());
            self.stale.extend(kept.irq.take());
            *kept = Kept {
                generation: Some(g),
                dma,
                irq,
            };
            self.dirty = true;
        }
        if self.active {
            self.write_live(card);
            self.active = false;
        }
        if self.dirty || self.clients != clients {
            self.write(card, clients);
        }
    }

    /// Rewrites the live block with the counters now: plain stores into
    /// the shared mapping, so a worker killed at any moment leaves them as
    /// of its last turn with traffic (a field from the turn before at
    /// worst).
    fn write_live(&self, card: &Card) {
        let Some(record) = &self.record else {
            return;
        };
        let live = record.live();
        let header = LiveHeader {
            magic: LIVE_MAGIC,
            functions: card.functions().len() as u64,
        };
        let c = LiveCard {
            counters: *card.counters(),
            uplink: card.uplink().counters,
            vxlan: card.vxlan().counters,
            exception: card.vxlan().exception,
        };
        let mut at = std::mem::size_of::<LiveHeader>();
        let _ = live.write_obj(c, at);
        at += std::mem::size_of::<LiveCard>();
        for f in card.functions() {
            let lf = LiveFunction {
                counters: f.counters(),
                stats: f.stats(),
            };
            let _ = live.write_obj(lf, at);
            at += std::mem::size_of::<LiveFunction>();
        }
        let _ = live.write_obj(header, 0);
    }

    /// Puts the live block's counters into a card that took over (after
    /// the record: they are newer). A block for another number of
    /// functions, or none yet, changes nothing.
    pub fn restore_live(&self, card: &mut Card) {
        let Some(record) = &self.record else {
            return;
        };
        let live = record.live();
        let Ok(header) = live.read_obj::<LiveHeader>(0) else {
            return;
        };
        if header.magic != LIVE_MAGIC || header.functions != card.functions().len() as u64 {
            return;
        }
        let mut at = std::mem::size_of::<LiveHeader>();
        let Ok(c) = live.read_obj::<LiveCard>(at) else {
            return;
        };
        *card.counters_mut() = c.counters;
        card.uplink_mut().counters = c.uplink;
        card.vxlan_mut().counters = c.vxlan;
        card.vxlan_mut().exception = c.exception;
        at += std::mem::size_of::<LiveCard>();
        for f in card.functions_mut() {
            if let Ok(lf) = live.read_obj::<LiveFunction>(at) {
                f.restore_counters(lf.counters, lf.stats);
            }
            at += std::mem::size_of::<LiveFunction>();
        }
    }

    /// When [`Restart::after_turn`] has something to do next: tell the
    /// keeper the worker is alive.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.watchdog.map(|(every, last)| last + every)
    }

    /// Stores `fds` under `name`; the name if there was anything to store.
    fn keep<F: AsFd>(&mut self, name: String, fds: Vec<F>) -> Option<String> {
        if fds.is_empty() {
            return None;
        }
        let borrowed: Vec<_> = fds.iter().map(AsFd::as_fd).collect();
        match self.store.store(&name, &borrowed) {
            Ok(()) => {
                self.use_name(&name);
                Some(name)
            }
            Err(e) => {
                warn!("{e}: that function will not survive a restart of the card's worker");
                None
            }
        }
    }

    /// The record of `card` now.
    pub fn snapshot(&self, card: &Card, clients: &[Option<ClientRecord>]) -> CardRecord {
        let functions = (0..card.functions().len())
            .map(|i| {
                let kept = self.kept.get(i);
                FunctionEntry {
                    state: card.record_function(i).unwrap_or_default(),
                    client: clients.get(i).copied().flatten(),
                    dma_fds: kept.and_then(|k| k.dma.clone()),
                    irq_fds: kept.and_then(|k| k.irq.clone()),
                }
            })
            .collect();
        let mut file = card.export();
        // The functions' VCT entries are in their state; applying them as
        // management's would commit them a second time.
        for f in &mut file.functions {
            f.vct = None;
        }
        CardRecord {
            written_by: env!("CARGO_PKG_VERSION").into(),
            card: file,
            state: CardState::of(card),
            functions,
        }
    }

    fn write(&mut self, card: &Card, clients: &[Option<ClientRecord>]) {
        let rec = self.snapshot(card, clients);
        let Some(file) = self.record.as_mut() else {
            return;
        };
        let bytes = match serde_json::to_vec(&rec) {
            Ok(b) => b,
            Err(e) => {
                error!("state record: {e}");
                return;
            }
        };
        if let Err(e) = file.write(&bytes) {
            error!("{e}: a restarted worker would find the record before this change");
            return;
        }
        self.dirty = false;
        self.active = false;
        self.clients = clients.to_vec();
        for name in std::mem::take(&mut self.stale) {
            self.forget(&name);
        }
    }

    /// Drops from the store every descriptor this worker did not take
    /// over or store: what an earlier worker stored and did not live to
    /// record, a client whose function could not be restored. Their
    /// inherited copies close.
    pub fn prune(&mut self) {
        let live = &self.live;
        self.store.prune(|name| live.iter().any(|n| n == name));
    }

    /// Tells the keeper the worker serves.
    pub fn ready(&mut self, status: &str) {
        if self.restarts > 0 {
            info!(
                "card worker {} serving (restart {}{})",
                std::process::id(),
                self.restarts,
                self.last_exit
                    .as_deref()
                    .map(|e| format!("; the previous worker {e}"))
                    .unwrap_or_default()
            );
        }
        self.store.ready(status);
    }

    /// Sends the keeper a vnicd-specific field (`X_VNICD_...=...`).
    pub fn notify(&self, field: &str) {
        self.store.notify(&[sd_notify::NotifyState::Custom(field)]);
    }

    /// The worker stops on purpose (SIGTERM): the card is pulled out.
    /// Everything stored is dropped first, so that a store kept past the
    /// stop (systemd's `FileDescriptorStorePreserve=yes`) holds no guest's
    /// connection open for a card that is gone; then the keeper hears
    /// `STOPPING=1`.
    pub fn stopping(&mut self) {
        for name in std::mem::take(&mut self.live) {
            self.store.remove(&name);
        }
        self.store.stopping();
    }
}

#[cfg(test)]
mod crash_points;
