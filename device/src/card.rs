//! The card: one PF and its VFs, built from card-wide settings.

use thiserror::Error;

use std::time::Instant;

use crate::capture::Capture;
use crate::datapath::{self, CardParts, Datapath, DatapathCounters};
use crate::doorbell::PagePolicy;
use crate::function::{
    Function, FunctionKind, FunctionRecord, FunctionSpec, RestoreError, BARS, EXC_QP, VF_DEVICE_ID,
};
use crate::model::{
    ControlCounters, Event, Mac, WorkerInfo, DEFAULT_VF_MAX_ADDRS, DEFAULT_VXLAN_CAPACITY,
};
use crate::pci::caps::SriovLayout;
use crate::switch::{Port, Switch};
use crate::uplink::Uplink;
use crate::vxlan::{Vni, Vxlan};

/// Most VFs one card offers (MAC addresses and FUNC encode the VF number in
/// one byte; 128 leaves room for the PF and growth).
pub const MAX_VFS: u16 = 128;
/// Most queue pairs per function (vectors = X + 1 must fit the MSI-X table
/// in its 8 KiB half of the MSI-X BAR: 512 entries).
pub const MAX_QUEUE_PAIRS: u32 = 256;
/// Most VxLAN tunnel IDs (and MAC entries): the tables are hash maps, and
/// an install into a full table scans for the least-used entry.
pub const MAX_VXLAN_CAPACITY: u32 = 1 << 20;
/// The port's nominal speed unless `--link-speed` says otherwise, Mb/s.
pub const DEFAULT_LINK_SPEED: u32 = 10_000;
/// The fastest nominal speed, Mb/s (800 Gb/s; ethtool's field is 32 bits).
pub const MAX_LINK_SPEED: u32 = 800_000;

/// Card-wide settings (vnicd's command line).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardConfig {
    /// Number of VFs (TotalVFs = NumVFs).
    pub vfs: u16,
    /// X: queue-pair control areas per function.
    pub queue_pairs: u32,
    /// N: queue pairs enabled on each VF at start.
    pub vnics_per_vf: u32,
    /// Distinguishes cards (MAC byte 3), e.g. two vnicd "hosts".
    pub card_id: u8,
    /// VxLAN tunnel IDs, and as many MAC entries (docs/vxlan.md).
    pub vxlan_capacity: u32,
    /// A doorbell page in BAR0 per function (`--doorbell-page`;
    /// crate::doorbell). Off: no region is mappable and QEMU posts
    /// register writes; drivers may still name a page in guest memory.
    pub doorbell_page: bool,
    /// How the card polls doorbell pages, in BAR0 or in guest memory
    /// (`--doorbell-poll-us`, `--doorbell-idle-us`).
    pub doorbell_policy: PagePolicy,
    /// Extra unicast addresses an untrusted VF may have over all its
    /// vNICs (`--vf-max-addrs`; docs/datapath.md, "Address filtering").
    pub vf_max_addrs: u32,
    /// The port's nominal speed in Mb/s, every function's LINK_SPEED
    /// unless its TX rate policy is lower (`--link-speed`).
    pub link_speed: u32,
}

impl Default for CardConfig {
    fn default() -> Self {
        CardConfig {
            vfs: 4,
            queue_pairs: 8,
            vnics_per_vf: 2,
            card_id: 0,
            vxlan_capacity: DEFAULT_VXLAN_CAPACITY,
            doorbell_page: false,
            doorbell_policy: PagePolicy::default(),
            vf_max_addrs: DEFAULT_VF_MAX_ADDRS,
            link_speed: DEFAULT_LINK_SPEED,
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CardError {
    #[error("--vfs {0} exceeds {MAX_VFS}")]
    TooManyVfs(u16),
    #[error("--queue-pairs {0} outside 1..={MAX_QUEUE_PAIRS}")]
    QueuePairs(u32),
    #[error("--vnics-per-vf {n} outside 1..={x} (the queue-pair maximum)")]
    VnicsPerVf { n: u32, x: u32 },
    #[error("--vxlan-capacity {0} outside 1..={MAX_VXLAN_CAPACITY}")]
    VxlanCapacity(u32),
    #[error("--link-speed {0} outside 1..={MAX_LINK_SPEED} (Mb/s)")]
    LinkSpeed(u32),
}

impl CardConfig {
    pub fn validate(&self) -> Result<(), CardError> {
        if self.vfs > MAX_VFS {
            return Err(CardError::TooManyVfs(self.vfs));
        }
        if !(1..=MAX_QUEUE_PAIRS).contains(&self.queue_pairs) {
            return Err(CardError::QueuePairs(self.queue_pairs));
        }
        if !(1..=self.queue_pairs).contains(&self.vnics_per_vf) {
            return Err(CardError::VnicsPerVf {
                n: self.vnics_per_vf,
                x: self.queue_pairs,
            });
        }
        if !(1..=MAX_VXLAN_CAPACITY).contains(&self.vxlan_capacity) {
            return Err(CardError::VxlanCapacity(self.vxlan_capacity));
        }
        if !(1..=MAX_LINK_SPEED).contains(&self.link_speed) {
            return Err(CardError::LinkSpeed(self.link_speed));
        }
        Ok(())
    }

    /// Default MAC of queue pair `qp` of a function: locally administered,
    /// `02:76:6e` ("vn"), card id, function number, queue index.
    pub fn mac(&self, kind: FunctionKind, qp: u8) -> [u8; 6] {
        [0x02, 0x76, 0x6e, self.card_id, kind.number() as u8, qp]
    }
}

/// Card-wide counters (`vnicctl stats`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct CardCounters {
    /// The data path's: frames switched, flooded, ...
    pub datapath: DatapathCounters,
    /// Control clients closed or refused by the card.
    pub control: ControlCounters,
}

/// The functions of the card, PF first, and the switch between them.
pub struct Card {
    config: CardConfig,
    functions: Vec<Function>,
    switch: Switch,
    capture: Option<Capture>,
    counters: CardCounters,
    /// Events for control-socket subscribers, oldest first.
    events: Vec<Event>,
    /// SR-IOV NumVFs: VFs 0..num_vfs are enabled.
    num_vfs: u16,
    /// The physical port.
    uplink: Uplink,
    vxlan: Vxlan,
    /// Switches the frames (crate::datapath).
    datapath: Datapath,
    /// DMA mappings lost to truncation, process-wide, when the card last
    /// looked (crate::dma::guard::lost_total).
    dma_lost_seen: u64,
    /// The process serving the card.
    worker: WorkerInfo,
    /// Management asked for a new worker from this binary.
    succession: Option<std::path::PathBuf>,
}

impl Card {
    pub fn new(config: CardConfig) -> Result<Self, CardError> {
        config.validate()?;
        let mut functions = vec![Function::new(Self::pf_spec(&config))];
        for n in 0..config.vfs {
            functions.push(Function::new(Self::vf_spec(&config, n)));
        }
        for f in &mut functions {
            f.configure_doorbells(config.doorbell_policy, config.doorbell_page);
            f.policy_mut().max_addrs = config.vf_max_addrs;
        }
        let mut switch = Switch::default();
        for (function, f) in functions.iter().enumerate() {
            // The vNICs only: the PF's exception queue pair is no port.
            for qp in f.queue_pairs() {
                let port = Port {
                    function,
                    qp: qp.index,
                };
                // MACs are distinct by construction (function and queue
                // number are part of them).
                switch
                    .add_port(port, qp.mac)
                    .expect("default MACs are unique");
            }
        }
        Ok(Card {
            functions,
            switch,
            capture: None,
            counters: CardCounters::default(),
            events: Vec::new(),
            num_vfs: config.vfs,
            uplink: Uplink::none(),
            vxlan: Vxlan::new(config.vxlan_capacity as usize),
            datapath: Datapath::default(),
            dma_lost_seen: crate::dma::guard::lost_total(),
            worker: WorkerInfo::default(),
            succession: None,
            config,
        })
        .map(|mut card: Card| {
            let n = card.num_vfs;
            card.functions[0].set_num_vfs(n);
            card
        })
    }

    /// Reports memory clients truncated under the card since the last
    /// call: each function with a lost mapping logs and counts it
    /// ([`Function::note_lost_dma`]). One atomic load when nothing was lost.
    pub fn reap_lost_dma(&mut self) {
        let total = crate::dma::guard::lost_total();
        if total == self.dma_lost_seen {
            return;
        }
        self.dma_lost_seen = total;
        for f in &mut self.functions {
            f.note_lost_dma();
        }
    }

    /// The card's parts the data path works on, lent to `datapath` for
    /// one call.
    pub(crate) fn with_datapath<R>(
        &mut self,
        run: impl FnOnce(&mut Datapath, CardParts) -> R,
    ) -> R {
        let parts = CardParts {
            functions: &mut self.functions,
            switch: &mut self.switch,
            vxlan: &mut self.vxlan,
            uplink: &mut self.uplink,
            capture: &mut self.capture,
            counters: &mut self.counters.datapath,
            events: &mut self.events,
        };
        run(&mut self.datapath, parts)
    }

    /// Carries out what a function's client asked for in its last messages:
    /// switch changes, then switching its waiting frames.
    pub fn after_io(&mut self, f: usize) {
        self.with_datapath(|d, parts| d.after_io(parts, f));
    }

    /// Writes back every context that changed and sends the interrupts
    /// that waited for it, whatever changed them (the event loop's last
    /// step of a turn): no interrupt waits past one turn.
    pub fn settle(&mut self) {
        for f in 0..self.functions.len() {
            let func = &mut self.functions[f];
            if func.unsettled() {
                func.sync_contexts();
            }
            if func.claims_addresses() == func.addresses_released() {
                self.with_datapath(|d, parts| d.sync_claims(parts, f));
            }
            if let Some(state) = self.functions[f].take_migration_change() {
                let function = self.functions[f].name().to_string();
                self.push_event(Event::Migration { function, state });
            }
        }
    }

    /// Carries out the switch changes function `f`'s guest asked for (or
    /// its reset did), without switching frames.
    pub(crate) fn apply_switch_ops(&mut self, f: usize) {
        self.with_datapath(|d, parts| d.apply_switch_ops(parts, f));
    }

    /// Puts function `f` on the data path's list if its send doorbells
    /// rang, unless its TX policy holds it back.
    pub(crate) fn queue_tx(&mut self, f: usize) {
        self.with_datapath(|d, parts| d.queue_tx(parts, f));
    }

    /// Polls the doorbell pages being watched (crate::doorbell).
    pub fn poll_doorbells(&mut self, now: Instant) {
        self.with_datapath(|d, parts| d.poll_doorbells(parts, now));
    }

    /// Whether frames are waiting for another turn.
    pub fn busy(&self) -> bool {
        self.datapath.busy()
    }

    /// Whether frames may still wait on the uplink.
    pub fn uplink_pending(&self) -> bool {
        self.datapath.uplink_pending()
    }

    /// Serves every function with rung send doorbells, once, within budget.
    pub fn run_pending(&mut self) {
        self.with_datapath(|d, parts| d.run_pending(parts));
    }

    /// Switches what waits on the uplink, within budget.
    pub fn run_uplink(&mut self) {
        self.with_datapath(|d, parts| d.run_uplink(parts));
    }

    /// The earliest moment a held-back interrupt is due, or a function
    /// held by its TX policy may send again.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.datapath.next_deadline(&self.functions)
    }

    /// Fires the interrupts whose moderation interval has passed and lets
    /// functions whose TX tokens refilled send again.
    pub fn run_timers(&mut self, now: Instant) {
        self.with_datapath(|d, parts| d.run_timers(parts, now));
    }

    /// `vxlan-send`: a frame that missed, returned by the host.
    pub fn vxlan_send(&mut self, vni: Vni, frame: &[u8]) -> bool {
        self.with_datapath(|d, parts| d.vxlan_send(parts, vni, frame))
    }

    /// `vxlan-deliver`: a punted frame, returned by the host.
    pub fn vxlan_deliver(&mut self, vni: Vni, frame: &[u8]) -> u32 {
        self.with_datapath(|d, parts| d.vxlan_deliver(parts, vni, frame))
    }

    /// `uplink-send`: a frame the host built whole, out of the uplink.
    pub fn uplink_send(&mut self, frame: &[u8]) {
        self.with_datapath(|d, parts| d.uplink_send(parts, frame));
    }

    /// The PF's exception queue pair, if requests go to it now.
    pub fn exception_port(&self) -> Option<Port> {
        datapath::exception_port(&self.functions)
    }

    /// vNIC `port`'s MAC becomes `mac` ([`datapath::move_vnic_mac`]).
    pub fn move_vnic_mac(&mut self, port: Port, mac: Mac) -> Result<(), datapath::MacMoveError> {
        let func = self
            .functions
            .get_mut(port.function)
            .expect("management checked the function");
        datapath::move_vnic_mac(&mut self.switch, &mut self.vxlan, func, port, mac)
    }

    /// Applies vNIC `port`'s receive filter again
    /// ([`datapath::apply_filter`]): its function's trust changed, or the
    /// vNIC came back onto the switch.
    pub fn reapply_filter(&mut self, port: Port) {
        let Some(func) = self.functions.get_mut(port.function) else {
            return;
        };
        if let Err(e) = datapath::apply_filter(&mut self.switch, &mut self.vxlan, func, port) {
            log::warn!("{}: vNIC {} receive filter: {e}", func.name(), port.qp);
        }
    }

    /// Events produced since the last call.
    pub fn take_events(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.events)
    }

    /// A client connected to function `index`.
    pub fn connect(&mut self, index: usize) {
        if let Some(f) = self.functions.get_mut(index) {
            f.policy_mut().attached = true;
            let function = f.name().to_string();
            self.events.push(Event::ClientConnected { function });
        }
    }

    pub fn switch(&self) -> &Switch {
        &self.switch
    }

    /// Connects the card's physical port.
    pub fn set_uplink(&mut self, uplink: Uplink) {
        self.uplink = uplink;
    }

    pub fn uplink(&self) -> &Uplink {
        &self.uplink
    }

    /// The physical port (management's `uplink` requests; out-of-crate
    /// drivers of an in-memory uplink, [`Uplink::memory`], inject and
    /// collect frames through it).
    pub fn uplink_mut(&mut self) -> &mut Uplink {
        &mut self.uplink
    }

    pub fn switch_mut(&mut self) -> &mut Switch {
        &mut self.switch
    }

    pub fn vxlan(&self) -> &Vxlan {
        &self.vxlan
    }

    pub fn vxlan_mut(&mut self) -> &mut Vxlan {
        &mut self.vxlan
    }

    pub fn capture(&self) -> Option<&Capture> {
        self.capture.as_ref()
    }

    pub fn capture_mut(&mut self) -> &mut Option<Capture> {
        &mut self.capture
    }

    pub fn counters(&self) -> &CardCounters {
        &self.counters
    }

    pub fn counters_mut(&mut self) -> &mut CardCounters {
        &mut self.counters
    }

    /// Queues an event for management's subscribers.
    pub fn push_event(&mut self, event: Event) {
        self.events.push(event);
    }

    /// SR-IOV NumVFs: VFs 0..num_vfs are enabled.
    pub fn num_vfs(&self) -> u16 {
        self.num_vfs
    }

    /// Records NumVFs (management enabling or disabling VFs does the
    /// rest: crate::control).
    pub(crate) fn record_num_vfs(&mut self, n: u16) {
        self.num_vfs = n;
    }

    /// The data path, for management's changes between turns (functions
    /// it must forget or release).
    pub(crate) fn datapath_mut(&mut self) -> &mut Datapath {
        &mut self.datapath
    }

    /// A function's client went away: flush its queues to guest memory and
    /// drop what the client set up.
    pub fn disconnect(&mut self, index: usize) {
        if let Some(f) = self.functions.get_mut(index) {
            f.disconnect();
            if std::mem::replace(&mut f.policy_mut().attached, false) {
                let function = f.name().to_string();
                self.events.push(Event::ClientDisconnected { function });
            }
        }
        self.datapath.forget(index);
        self.after_io(index);
    }

    fn serial(config: &CardConfig, kind: FunctionKind) -> u64 {
        0x766e_6963_0000_0000 | (u64::from(config.card_id) << 16) | u64::from(kind.number())
    }

    fn pf_spec(config: &CardConfig) -> FunctionSpec {
        let kind = FunctionKind::Pf;
        FunctionSpec {
            kind,
            qp_max: config.queue_pairs,
            qp_num: 1,
            mac: config.mac(kind, 0),
            qp_macs: (0..config.queue_pairs)
                .map(|q| config.mac(kind, q as u8))
                .collect(),
            serial: Self::serial(config, kind),
            ari_next: if config.vfs > 0 { 1 } else { 0 },
            link_speed: config.link_speed,
            sriov: Some(SriovLayout {
                total_vfs: config.vfs,
                num_vfs: config.vfs,
                vf_device_id: VF_DEVICE_ID,
                first_vf_offset: 1,
                vf_stride: 1,
                vf_bars: BARS.to_vec(),
            }),
            // Queue pair 0 is the PF's vNIC; the next one, if there is
            // one, serves the host's exceptions (docs/vxlan.md).
            exception_qp: (config.queue_pairs > u32::from(EXC_QP)).then_some(EXC_QP),
        }
    }

    fn vf_spec(config: &CardConfig, n: u16) -> FunctionSpec {
        let kind = FunctionKind::Vf(n);
        let last = n + 1 == config.vfs;
        FunctionSpec {
            kind,
            qp_max: config.queue_pairs,
            qp_num: config.vnics_per_vf,
            mac: config.mac(kind, 0),
            qp_macs: (0..config.queue_pairs)
                .map(|q| config.mac(kind, q as u8))
                .collect(),
            serial: Self::serial(config, kind),
            ari_next: if last { 0 } else { (kind.number() + 1) as u8 },
            sriov: None,
            exception_qp: None,
            link_speed: config.link_speed,
        }
    }

    pub fn config(&self) -> &CardConfig {
        &self.config
    }

    /// The process serving the card (vnicd tells it at start).
    pub fn set_worker(&mut self, worker: WorkerInfo) {
        self.worker = worker;
    }

    pub fn worker(&self) -> &WorkerInfo {
        &self.worker
    }

    pub fn worker_mut(&mut self) -> &mut WorkerInfo {
        &mut self.worker
    }

    /// Asks the process serving the card to hand it over to a worker
    /// started from `binary` (the server does, after the reply).
    pub fn request_succession(&mut self, binary: std::path::PathBuf) {
        self.worker.succession_failed = None;
        self.succession = Some(binary);
    }

    /// A hand-over management asked for, taken.
    pub fn take_succession(&mut self) -> Option<std::path::PathBuf> {
        self.succession.take()
    }

    pub fn functions(&self) -> &[Function] {
        &self.functions
    }

    pub fn functions_mut(&mut self) -> &mut [Function] {
        &mut self.functions
    }

    pub fn function_mut(&mut self, index: usize) -> Option<&mut Function> {
        self.functions.get_mut(index)
    }

    /// Function `index`'s state for the state record, with the VLANs its
    /// vNICs joined (docs/restart.md).
    pub fn record_function(&self, index: usize) -> Option<FunctionRecord> {
        let f = self.functions.get(index)?;
        let vlans = |qp| {
            let port = Port {
                function: index,
                qp,
            };
            self.switch.joined(port)
        };
        Some(f.record(vlans))
    }

    /// Takes function `index`'s record back (see [`Function::restore`]),
    /// then carries out the switch changes that asks for (filters, VLAN
    /// joins) and marks the function attached. The caller restores the
    /// function's client connection.
    pub fn restore_function(
        &mut self,
        index: usize,
        rec: &FunctionRecord,
        dma_files: Vec<std::fs::File>,
        irq_files: Vec<std::fs::File>,
    ) -> Result<(), RestoreError> {
        let Some(f) = self.functions.get_mut(index) else {
            return Err(RestoreError::OtherFunction(rec.name.clone()));
        };
        f.restore(rec, dma_files, irq_files)?;
        f.policy_mut().attached = true;
        self.apply_switch_ops(index);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::caps::{sriov, walk_ext, EXT_CAP_ID_SRIOV};

    #[test]
    fn card_has_pf_then_vfs_with_names() {
        let card = Card::new(CardConfig::default()).unwrap();
        let names: Vec<&str> = card.functions().iter().map(|f| f.name()).collect();
        assert_eq!(names, ["pf", "vf0", "vf1", "vf2", "vf3"]);
    }

    #[test]
    fn pf_sriov_total_vfs_follows_config() {
        let card = Card::new(CardConfig {
            vfs: 7,
            ..Default::default()
        })
        .unwrap();
        let c = card.functions()[0].config();
        let (_, off) = walk_ext(c.bytes())
            .into_iter()
            .find(|(id, _)| *id == EXT_CAP_ID_SRIOV)
            .unwrap();
        assert_eq!(c.u16(off + sriov::TOTAL_VFS), 7);
        assert_eq!(c.u16(off + sriov::NUM_VFS), 7);
        assert_eq!(c.u16(off + sriov::VF_DID), VF_DEVICE_ID);
        assert_eq!(c.u16(off + sriov::VF_OFFSET), 1);
        assert_eq!(c.u16(off + sriov::VF_STRIDE), 1);
    }

    #[test]
    fn pf_reset_keeps_vf_enable_num_vfs_and_the_vfs() {
        use crate::function::{REGION_BAR0, REGION_CONFIG};
        use crate::pci::caps::{exp, PCIE_OFFSET};
        use crate::regs::Reg;
        let mut card = Card::new(CardConfig::default()).unwrap();
        card.set_num_vfs(3).unwrap();
        let vf0 = card.function_mut(1).unwrap();
        vf0.region_write(REGION_BAR0, Reg::Scratch as u64, &7u32.to_le_bytes())
            .unwrap();
        let sriov_of = |card: &Card| {
            let c = card.functions()[0].config();
            let (_, off) = walk_ext(c.bytes())
                .into_iter()
                .find(|(id, _)| *id == EXT_CAP_ID_SRIOV)
                .unwrap();
            (c.u16(off + sriov::CTRL), c.u16(off + sriov::NUM_VFS))
        };
        let devctl = (PCIE_OFFSET + exp::DEVCTL) as u64;
        let pf = card.function_mut(0).unwrap();
        pf.region_write(REGION_CONFIG, devctl, &exp::DEVCTL_FLR.to_le_bytes())
            .unwrap();
        assert_eq!(pf.stats().resets, 1, "the PF was reset");
        let (ctrl, num_vfs) = sriov_of(&card);
        assert_ne!(ctrl & sriov::CTRL_VFE, 0, "VF Enable survives the FLR");
        assert_eq!(num_vfs, 3, "NumVFs survives the FLR");
        card.function_mut(0).unwrap().reset();
        assert_eq!(sriov_of(&card).1, 3, "and DEVICE_RESET");
        let enabled: Vec<bool> = card
            .functions()
            .iter()
            .map(|f| f.policy().enabled)
            .collect();
        assert_eq!(enabled, [true, true, true, true, false]);
        let mut scratch = [0u8; 4];
        card.function_mut(1)
            .unwrap()
            .region_read(REGION_BAR0, Reg::Scratch as u64, &mut scratch)
            .unwrap();
        assert_eq!(u32::from_le_bytes(scratch), 7, "vf0 untouched");
    }

    #[test]
    fn macs_are_locally_administered_and_distinct() {
        let c = CardConfig::default();
        let a = c.mac(FunctionKind::Pf, 0);
        let b = c.mac(FunctionKind::Vf(0), 0);
        let q = c.mac(FunctionKind::Vf(0), 1);
        assert_eq!(a[0] & 0x03, 0x02, "locally administered unicast");
        assert!(a != b && b != q);
    }

    #[test]
    fn invalid_settings_are_refused() {
        assert!(Card::new(CardConfig {
            vfs: 500,
            ..Default::default()
        })
        .is_err());
        assert!(Card::new(CardConfig {
            queue_pairs: 0,
            ..Default::default()
        })
        .is_err());
        let e = CardConfig {
            queue_pairs: 2,
            vnics_per_vf: 3,
            ..Default::default()
        }
        .validate();
        assert_eq!(e, Err(CardError::VnicsPerVf { n: 3, x: 2 }));
        let e = CardConfig {
            vxlan_capacity: 0,
            ..Default::default()
        }
        .validate();
        assert_eq!(e, Err(CardError::VxlanCapacity(0)));
    }
}
