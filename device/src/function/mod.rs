//! One PCI function of the card (the PF or a VF) as a vfio-user device:
//! regions, interrupts, DMA and reset. The protocol layer calls these methods;
//! nothing here knows about sockets.
//!
//! Region layout (vfio-pci region indexes):
//!
//! ```text
//! 0  BAR0   64 KiB  64-bit MMIO register file (regs.rs); with
//!                   --doorbell-page its last page is a doorbell page
//!                   (doorbell.rs), mmappable through a sparse area
//! 1  BAR1   -       upper half of BAR0
//! 2  BAR2   16 KiB  64-bit MMIO: MSI-X table at 0, PBA at 0x2000
//! 3  BAR3   -       upper half of BAR2
//! 4,5,6,8   -       absent (no BAR4/5, no ROM, no VGA)
//! 7  CONFIG 4 KiB   PCIe configuration space
//! ```

mod config;

use config::build_config;
mod irq;
mod migration;
mod record;
mod registers;
mod traffic;

pub use migration::{DmaWriteRequest, MigrationState, RelayStats};
pub use record::{FunctionRecord, QpRecord, RestoreError};
pub use traffic::Taken;

use std::fs::File;
use std::os::fd::{FromRawFd, IntoRawFd};

use log::{debug, info, warn};
use thiserror::Error;
use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_INFO_EVENTFD, VFIO_IRQ_SET_ACTION_MASK, VFIO_IRQ_SET_ACTION_TRIGGER,
    VFIO_IRQ_SET_ACTION_TYPE_MASK, VFIO_IRQ_SET_ACTION_UNMASK, VFIO_IRQ_SET_DATA_BOOL,
    VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE, VFIO_IRQ_SET_DATA_TYPE_MASK,
    VFIO_PCI_CONFIG_REGION_INDEX, VFIO_PCI_ERR_IRQ_INDEX, VFIO_PCI_MSIX_IRQ_INDEX,
    VFIO_PCI_NUM_IRQS, VFIO_PCI_NUM_REGIONS, VFIO_PCI_REQ_IRQ_INDEX,
    VFIO_REGION_INFO_CAP_MSIX_MAPPABLE, VFIO_REGION_INFO_CAP_SPARSE_MMAP,
    VFIO_REGION_INFO_FLAG_MMAP, VFIO_REGION_INFO_FLAG_READ, VFIO_REGION_INFO_FLAG_WRITE,
};
use vmm_sys_util::eventfd::EventFd;

use crate::clientlog::{Cause, ClientLog};
use crate::dma::{DmaError, DmaSpace};
use crate::doorbell::{self, DoorbellPage, PagePolicy};
use crate::fault::{Faults, IrqFault};
use crate::model::{LinkState, Mac, RxFilter, Vlan, MAX_FILTER_ADDRS};
use crate::pci::caps::{self, exp, msix as msix_cap, CapLayout, SriovLayout};
use crate::pci::config::{
    command, hdr, status, Bar, BarKind, ConfigError, ConfigSpace, CONFIG_SIZE,
};
use crate::pci::msix::{Delivery, Msix, MsixError};
use crate::protocol::RegionCap;
use crate::queue::{QpCtrl, QpEffect, QpIrq, QpRxMode, QpVlan, QueuePair, FILTER_ENTRY_BYTES};
use crate::rate::Limiter;
use crate::regs::{
    self, dword_of, Access, AdminCmd, Bar0, Effect, FnStat, FuncReg, Identity, IrqCause, QpReg,
    QpStat, Reg, RegError, StatusReg, Target, ADMIN_ARGS, BAR0_SIZE,
};
use crate::state::Bat;
use crate::switch::Grant;

/// vfio-pci region index of BAR0 and of the MSI-X BAR.
pub const REGION_BAR0: u32 = 0;
pub const REGION_MSIX: u32 = 2;
pub const REGION_CONFIG: u32 = VFIO_PCI_CONFIG_REGION_INDEX;
/// Size of the MSI-X BAR and where the PBA starts in it.
pub const MSIX_BAR_SIZE: u64 = 16 * 1024;
pub const MSIX_TABLE_OFFSET: u64 = 0;
pub const MSIX_PBA_OFFSET: u64 = 0x2000;
/// vector 0 is the misc/admin vector; 1..=X are the queue pairs.
pub const MISC_VECTORS: u32 = 1;
/// Index of the PF's exception queue pair, when it has one (`QP_MAX` ≥ 2;
/// docs/vxlan.md): the queue pair after its one vNIC.
pub const EXC_QP: u16 = 1;

/// The memory BARs of every function (PF and VF alike).
pub const BARS: [Bar; 2] = [
    Bar {
        index: REGION_BAR0 as usize,
        size: BAR0_SIZE,
        kind: BarKind::Mem64,
        prefetchable: false,
    },
    Bar {
        index: REGION_MSIX as usize,
        size: MSIX_BAR_SIZE,
        kind: BarKind::Mem64,
        prefetchable: false,
    },
];

/// PCI identity of the card.
pub const VENDOR_ID: u16 = 0x1ffe;
pub const PF_DEVICE_ID: u16 = 0x1000;
pub const VF_DEVICE_ID: u16 = 0x1001;
pub const SUBSYS_ID: u16 = 0x0001;
pub const REVISION: u8 = 0x01;
/// Network controller, Ethernet.
pub const CLASS_ETHERNET: u32 = 0x02_0000;

/// Which function of the card.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum FunctionKind {
    Pf,
    Vf(u16),
}

impl FunctionKind {
    /// Socket and log name: `pf`, `vf0`, `vf1`...
    pub fn name(&self) -> String {
        match self {
            FunctionKind::Pf => "pf".into(),
            FunctionKind::Vf(n) => format!("vf{n}"),
        }
    }

    /// Routing-ID function number (PF 0, VF n at First VF Offset 1 + n).
    pub fn number(&self) -> u16 {
        match self {
            FunctionKind::Pf => 0,
            FunctionKind::Vf(n) => n + 1,
        }
    }
}

/// What the card decides about a function when it builds it.
#[derive(Clone, Debug)]
pub struct FunctionSpec {
    pub kind: FunctionKind,
    pub qp_max: u32,
    pub qp_num: u32,
    pub mac: [u8; 6],
    /// Default MAC of each queue pair (vNIC), for all `qp_max` of them.
    pub qp_macs: Vec<[u8; 6]>,
    pub serial: u64,
    /// ARI Next Function Number.
    pub ari_next: u8,
    /// SR-IOV capability contents (PF only).
    pub sriov: Option<SriovLayout>,
    /// The exception queue pair (PF only, docs/vxlan.md): [`EXC_QP`], the
    /// queue pair right after the `qp_num` vNICs.
    pub exception_qp: Option<u16>,
    /// The port's nominal speed, Mb/s (LINK_SPEED).
    pub link_speed: u32,
}

#[derive(Debug, Error)]
pub enum FnError {
    #[error("migration: {0}")]
    Migration(String),
    #[error("no region {0}")]
    NoRegion(u32),
    #[error("access of {count} bytes at {offset:#x} outside region {region} ({size} bytes)")]
    OutOfRegion {
        region: u32,
        offset: u64,
        count: usize,
        size: u64,
    },
    #[error("no IRQ index {0}")]
    NoIrqIndex(u32),
    #[error("SET_IRQS: {0}")]
    SetIrqs(&'static str),
    #[error("SET_IRQS range {start}+{count} exceeds {max} interrupts of index {index}")]
    IrqRange {
        index: u32,
        start: u32,
        count: u32,
        max: u32,
    },
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Dma(#[from] DmaError),
}

impl FnError {
    pub fn errno(&self) -> i32 {
        match self {
            FnError::Dma(e) => e.errno(),
            _ => libc::EINVAL,
        }
    }
}

/// Counters of one function, for logs now and statistics later.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[repr(C)]
pub struct FunctionStats {
    pub bad_mmio: u64,
    pub irqs_sent: u64,
    pub irqs_pending: u64,
    pub irqs_dropped: u64,
    pub resets: u64,
    /// Messages refused with an error (malformed, unknown, out of range).
    pub protocol_errors: u64,
    /// DMA mappings the client truncated under the card (crate::dma::guard).
    pub dma_lost: u64,
}

/// Function-wide data-path counters (BAR0 0x100, in [`FnStat`] order).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[repr(C)]
pub struct FnCounters([u64; FnStat::ALL.len()]);

impl FnCounters {
    pub fn get(&self, s: FnStat) -> u64 {
        self.0[s as usize]
    }

    pub fn add(&mut self, s: FnStat, n: u64) {
        self.0[s as usize] = self.0[s as usize].wrapping_add(n);
    }
}

/// A change to the switch a function asked for, carried out by the card
/// (which owns the switch) after the message that caused it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SwitchOp {
    Join {
        qp: u16,
        vlan: u16,
    },
    Leave {
        qp: u16,
        vlan: u16,
    },
    /// The function was reset: its vNICs leave every VLAN.
    LeaveAll,
    /// A trusted VF wrote a new MAC for a vNIC into QP_MAC_LO/HI.
    SetMac {
        qp: u16,
        mac: Mac,
    },
    /// The driver handed over vNIC `qp`'s receive filter (QP_RX_MODE).
    Filter {
        qp: u16,
    },
}

/// What management decided for one of the X possible vNICs of a function;
/// it outlives the queue pair (N may shrink and grow again).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VnicCfg {
    pub mac: Mac,
    /// Port VLAN, 0 if none.
    pub vlan: Vlan,
}

/// Management state of a function (docs/management.md). It is the card's,
/// not the guest's: resets and clients coming and going leave it alone.
#[derive(Clone, Debug)]
pub struct Policy {
    /// A VF within NumVFs (the PF always is).
    pub enabled: bool,
    /// A vfio-user client is connected.
    pub attached: bool,
    pub trust: bool,
    /// Extra unicast addresses the function's vNICs may have together
    /// unless it is trusted (docs/datapath.md, "Address filtering").
    pub max_addrs: u32,
    pub link: LinkState,
    pub tx_rate: Option<Limiter>,
    pub rx_rate: Option<Limiter>,
    /// Configuration of vNIC q for every q < X.
    pub vnics: Vec<VnicCfg>,
    /// The send queue to serve first next turn (round-robin under a TX
    /// policy, so vNICs share the budget).
    pub tx_next: usize,
}

pub struct Function {
    spec: FunctionSpec,
    name: String,
    config: ConfigSpace,
    /// Config space as built, restored on reset.
    pristine: ConfigSpace,
    bar0: Bar0,
    msix: Msix,
    err_fd: Option<EventFd>,
    req_fd: Option<EventFd>,
    dma: DmaSpace,
    stats: FunctionStats,
    /// Enabled queue pairs: the N vNICs, then the exception queue pair if
    /// the function has one (so `qps[q].index == q` for all of them).
    qps: Vec<QueuePair>,
    /// The BAT the VCT entry points at, once validated.
    bat: Option<Bat>,
    counters: FnCounters,
    switch_ops: Vec<SwitchOp>,
    policy: Policy,
    /// An admin command waiting for the card (PF only).
    admin: Option<AdminCmd>,
    /// Quiesced by management: every queue pair is paused (docs/migration.md).
    quiesced: bool,
    /// A VCT entry from management, committed once the client has mapped
    /// memory and set Bus Master Enable. A reset keeps it.
    pending_vct: Option<u64>,
    /// Faults management injected (docs/fault-injection.md).
    faults: Faults,
    /// Doorbell slots: the guest's page its BAT names, or BAR0's page
    /// (vnicd `--doorbell-page`) shared with the client.
    doorbell: DoorbellPage,
    /// Log lines its clients and their guests cause, rate-limited; kept
    /// across clients so reconnecting does not reset the counts.
    client_log: ClientLog,
    /// Changes with the mappings and eventfds ([`Function::fd_generation`]).
    fd_generation: u64,
    /// Queue pairs' vectors raised while a context was not written back
    /// yet ([`Function::raise_irq`]).
    deferred_irqs: Vec<u32>,
    /// Live migration mode (docs/migration.md).
    migration: migration::Migration,
}

/// What became of a VCT entry given by management.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum VctOutcome {
    /// Walked now: queues whose contexts say RUNNING resumed.
    Committed,
    /// Refused: VCT_STATUS holds the code; nothing was written.
    Refused(u32),
    /// Waits for guest memory and Bus Master Enable.
    Pending,
    /// Address 0: the entry is gone, queues written back and forgotten.
    Cleared,
}

impl Function {
    pub fn new(spec: FunctionSpec) -> Self {
        let vectors = spec.qp_max + MISC_VECTORS;
        let config = build_config(&spec, vectors as u16);
        assert!(
            spec.exception_qp.is_none_or(|q| {
                spec.kind == FunctionKind::Pf
                    && u32::from(q) == spec.qp_num
                    && q < spec.qp_max as u16
            }),
            "the exception queue pair follows the PF's vNICs"
        );
        let func = match spec.kind {
            FunctionKind::Pf => FuncReg::new(),
            FunctionKind::Vf(n) => FuncReg::new().with_is_vf(true).with_vf_index(n),
        };
        let bar0 = Bar0::new(Identity {
            func,
            qp_max: spec.qp_max,
            qp_num: spec.qp_num,
            mac: spec.mac,
            vectors,
            exc_qp: spec.exception_qp.map_or(0, u32::from),
            link_speed: spec.link_speed,
        });
        Function {
            name: spec.kind.name(),
            pristine: config.clone(),
            config,
            bar0,
            msix: Msix::new(vectors as u16),
            err_fd: None,
            req_fd: None,
            dma: DmaSpace::default(),
            stats: FunctionStats::default(),
            qps: (0..spec.qp_num as u16)
                .chain(spec.exception_qp)
                .map(|q| QueuePair::new(q, Mac(spec.qp_macs[q as usize])))
                .collect(),
            bat: None,
            doorbell: DoorbellPage::new(spec.qp_max as usize, PagePolicy::default()),
            counters: FnCounters::default(),
            switch_ops: Vec::new(),
            policy: Policy {
                enabled: true,
                attached: false,
                trust: false,
                max_addrs: crate::model::DEFAULT_VF_MAX_ADDRS,
                link: LinkState::Auto,
                tx_rate: None,
                rx_rate: None,
                vnics: (0..spec.qp_max as usize)
                    .map(|q| VnicCfg {
                        mac: Mac(spec.qp_macs.get(q).copied().unwrap_or(spec.mac)),
                        vlan: 0,
                    })
                    .collect(),
                tx_next: 0,
            },
            admin: None,
            quiesced: false,
            pending_vct: None,
            faults: Faults::default(),
            client_log: ClientLog::default(),
            fd_generation: 0,
            deferred_irqs: Vec::new(),
            migration: migration::Migration::default(),
            spec,
        }
        .with_exception_messages()
    }

    /// The exception queue pair's send queue takes messages: a header
    /// before frames as long as the control socket's.
    fn with_exception_messages(mut self) -> Self {
        if let Some(q) = self.spec.exception_qp {
            self.qps[usize::from(q)].make_exception(crate::vxlan::exception::MAX_MESSAGE);
        }
        self
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Writes a line a client or its guest caused, through the function's
    /// rate limit (crate::clientlog). Returns whether it was written.
    pub fn log(&mut self, cause: Cause, what: std::fmt::Arguments<'_>) -> bool {
        self.client_log.log(cause, &self.name, what)
    }

    pub fn policy_mut(&mut self) -> &mut Policy {
        &mut self.policy
    }

    /// X: queue-pair areas in BAR0.
    pub fn qp_max(&self) -> u32 {
        self.spec.qp_max
    }

    pub fn bar0(&self) -> &Bar0 {
        &self.bar0
    }

    pub fn quiesced(&self) -> bool {
        self.quiesced
    }

    /// Quiesce (docs/migration.md): every queue stops at a frame boundary
    /// and its context is written back to guest memory. Returns the number
    /// of running queues written back.
    pub fn quiesce(&mut self) -> usize {
        // Doorbells the driver stored into its page and the card has not
        // taken yet move the tails first, so the contexts hold them.
        if self.page_mode() && self.page_reachable() {
            let watched: Vec<usize> = self.doorbell.watched().collect();
            for q in watched {
                self.take_page(q);
            }
        }
        self.quiesced = true;
        let written = self.qps.iter_mut().map(|qp| qp.pause(&self.dma)).sum();
        info!(
            "{}: quiesced, {written} queue contexts written back",
            self.name
        );
        written
    }

    /// Ends a quiesce: frames that waited are delivered into the buffers
    /// posted meanwhile, send queues with posted frames are kicked.
    pub fn unquiesce(&mut self) {
        if !self.quiesced {
            return;
        }
        self.quiesced = false;
        let now = std::time::Instant::now();
        for q in 0..self.qps.len() {
            let d = self.qps[q].unpause(&self.name, &self.dma, now);
            self.counters.add(FnStat::RxPackets, d.packets);
            self.counters.add(FnStat::RxBytes, d.bytes);
            self.counters.add(FnStat::RxDrops, d.drops);
            if d.fire {
                self.raise_irq(MISC_VECTORS + q as u32);
            }
        }
        info!("{}: resumed", self.name);
    }

    /// New or reloaded queue pairs join a quiesce in progress.
    fn keep_quiesced(&mut self) {
        if self.quiesced {
            for qp in &mut self.qps {
                qp.pause(&self.dma);
            }
        }
    }

    /// Changes N. Queue pairs beyond the new count are written back to
    /// guest memory and dropped; new ones start stopped with their
    /// configured MACs. Returns the queue pairs removed. The driver learns
    /// of it from IRQ_CAUSE.CONFIG.
    pub fn set_qp_num(&mut self, n: u32) -> Vec<u16> {
        // Only VFs change N (management refuses it on the PF, whose
        // exception queue pair sits right after its one vNIC).
        if self.spec.exception_qp.is_some() {
            return Vec::new();
        }
        let n = n.min(self.spec.qp_max) as usize;
        let mut removed = Vec::new();
        while self.qps.len() > n {
            let mut qp = self.qps.pop().expect("len > n");
            qp.flush(&self.dma);
            removed.push(qp.index);
        }
        for q in self.qps.len()..n {
            let mac = self.policy.vnics[q].mac;
            self.qps.push(QueuePair::new(q as u16, mac));
        }
        self.keep_quiesced();
        self.bar0.set_qp_num(n as u32);
        info!("{}: {n} vNICs", self.name);
        self.notify(IrqCause::new().with_config(true));
        removed
    }

    /// Sets vNIC `q`'s MAC (the switch has accepted it).
    pub fn set_vnic_mac(&mut self, q: u16, mac: Mac) {
        self.policy.vnics[q as usize].mac = mac;
        if let Some(qp) = self.qps.get_mut(q as usize) {
            qp.mac = mac;
        }
        if q == 0 {
            self.bar0.set_mac(mac.0);
        }
        self.notify(IrqCause::new().with_config(true));
    }

    /// Sets the administrative link state; STATUS.LINK_UP follows and a
    /// change fires IRQ_CAUSE.LINK.
    pub fn set_link(&mut self, state: LinkState) {
        self.policy.link = state;
        let up = state != LinkState::Down;
        if self.bar0.set_link_up(up) {
            info!("{}: link {}", self.name, if up { "up" } else { "down" });
            self.notify(IrqCause::new().with_link(true));
        }
    }

    #[inline]
    pub fn link_up(&self) -> bool {
        self.bar0.link_up()
    }

    /// LINK_SPEED, Mb/s: the port's nominal speed, or the average rate of
    /// the function's TX rate policy if that is lower (rounded down, at
    /// least 1), the most the function can send.
    pub fn link_speed(&self) -> u32 {
        let port = self.bar0.read_reg(crate::regs::Reg::LinkSpeed);
        match &self.policy.tx_rate {
            Some(l) => (l.policy().avg_kbps / 1000).clamp(1, port.into()) as u32,
            None => port,
        }
    }

    /// The PF's NumVFs, shown in its NUM_VFS register and its SR-IOV
    /// capability (which a reset does not undo).
    pub fn set_num_vfs(&mut self, n: u16) {
        self.bar0.set_num_vfs(n);
        caps::set_num_vfs(&mut self.config, n);
        caps::set_num_vfs(&mut self.pristine, n);
    }

    /// The admin command written since the last call, with its arguments.
    pub fn take_admin(&mut self) -> Option<(AdminCmd, [u32; ADMIN_ARGS])> {
        self.admin.take().map(|c| (c, self.bar0.admin_args()))
    }

    pub fn admin_pending(&self) -> bool {
        self.admin.is_some()
    }

    /// Ends an admin command: ADMIN_STATUS and result arguments.
    pub fn admin_done(&mut self, status: u32, results: Option<[u32; ADMIN_ARGS]>) {
        self.bar0.admin_done(status, results);
    }

    /// The vNICs (enabled queue pairs, without the exception queue pair).
    pub fn queue_pairs(&self) -> &[QueuePair] {
        &self.qps[..self.vnic_count()]
    }

    /// N: the number of vNICs.
    pub fn vnic_count(&self) -> usize {
        self.qps.len() - usize::from(self.spec.exception_qp.is_some())
    }

    /// Every enabled queue pair: the vNICs and the exception queue pair.
    pub fn all_queue_pairs(&self) -> &[QueuePair] {
        &self.qps
    }

    /// Index of the exception queue pair (PF with `QP_MAX` ≥ 2).
    pub fn exception_index(&self) -> Option<u16> {
        self.spec.exception_qp
    }

    /// The exception queue pair, if the function has one.
    pub fn exception_qp(&self) -> Option<&QueuePair> {
        self.spec
            .exception_qp
            .and_then(|q| self.qps.get(usize::from(q)))
    }

    pub fn counters(&self) -> FnCounters {
        self.counters
    }

    pub fn faults(&self) -> &Faults {
        &self.faults
    }

    pub fn faults_mut(&mut self) -> &mut Faults {
        &mut self.faults
    }

    /// Surprise removal (docs/fault-injection.md): from now on the BARs
    /// read all-ones and drop writes, and the card neither moves its
    /// frames nor sends its interrupts. Its state stays as it is.
    pub fn remove(&mut self) {
        self.faults.set_removed(&self.name, true);
        for qp in &mut self.qps {
            qp.tx_kicked = false;
        }
    }

    /// Ends a surprise removal: the function comes back as a device
    /// inserted afresh would, reset (its queues written back to guest
    /// memory, VCT entry, registers, config space and MSI-X at their reset
    /// values), so its driver must set it up again.
    pub fn reinsert(&mut self) {
        self.faults.set_removed(&self.name, false);
        self.reset();
    }

    /// Whether the client offered the guest's memory without a descriptor
    /// (STATUS.MEM_UNSHARED).
    pub fn memory_unshared(&self) -> bool {
        self.dma.unshared()
    }

    /// Whether the guest asked for switch changes not carried out yet.
    pub fn switch_ops_pending(&self) -> bool {
        !self.switch_ops.is_empty()
    }

    /// Switch changes requested since the last call.
    pub fn take_switch_ops(&mut self) -> Vec<SwitchOp> {
        std::mem::take(&mut self.switch_ops)
    }

    /// The receive filter vNIC `qp`'s driver last handed over.
    pub fn rx_filter(&self, qp: u16) -> Option<&RxFilter> {
        self.qps.get(usize::from(qp))?.rx_filter.as_ref()
    }

    /// Records what the card granted of vNIC `qp`'s receive filter in
    /// QP_ADDR_STATUS, counts what it refused and says why, once in a
    /// while.
    pub fn filter_granted(&mut self, qp: u16, grant: &Grant) {
        let trusted = self.spec.kind == FunctionKind::Pf || self.policy.trust;
        let max = self.policy.max_addrs;
        let Some(queue_pair) = self.qps.get_mut(usize::from(qp)) else {
            return;
        };
        let status = &mut queue_pair.addr_status;
        status.set_promisc(grant.promisc);
        status.set_allmulti(grant.allmulti);
        status.set_promisc_refused(grant.promisc_refused);
        status.set_over_limit(grant.over_limit > 0);
        status.set_taken(grant.taken > 0);
        status.set_unicast(grant.unicast.min(usize::from(u16::MAX)) as u16);
        let asked = queue_pair.rx_filter.as_ref().map_or(0, |f| f.unicast.len());
        if grant.refused() > 0 {
            self.counters
                .add(FnStat::AddrRefused, grant.refused() as u64);
            let why = if grant.over_limit > 0 && !trusted {
                format!("an untrusted VF has at most {max} extra addresses (vnicctl trust)")
            } else {
                "another vNIC has them, or they are no station addresses".to_string()
            };
            let what = format_args!(
                "vNIC {qp}: {} of {asked} extra unicast addresses refused: {why}",
                grant.refused()
            );
            self.log(Cause::GuestError, what);
        }
        if grant.promisc_refused {
            self.counters.add(FnStat::PromiscRefused, 1);
            let what = format_args!(
                "vNIC {qp}: promiscuous mode refused: the VF is not trusted (vnicctl trust); \
                 it receives its own addresses only"
            );
            self.log(Cause::GuestError, what);
        }
    }

    /// The card refused the MAC vNIC `qp`'s driver wrote: another vNIC
    /// has it (QP_ADDR_STATUS.MAC_TAKEN).
    pub fn mac_taken(&mut self, qp: u16) {
        if let Some(q) = self.qps.get_mut(usize::from(qp)) {
            q.addr_status.set_mac_taken(true);
        }
    }

    /// Whether any send doorbell rang since its queue was last served.
    pub fn any_kicked(&self) -> bool {
        self.qps.iter().any(|q| q.tx_kicked)
    }

    /// Queue pairs whose send doorbell rang since they were last served.
    pub fn kicked(&self) -> Vec<u16> {
        self.qps
            .iter()
            .filter(|q| q.tx_kicked)
            .map(|q| q.index)
            .collect()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn kind(&self) -> FunctionKind {
        self.spec.kind
    }

    pub fn stats(&self) -> FunctionStats {
        self.stats
    }

    pub fn count_protocol_error(&mut self) {
        self.stats.protocol_errors += 1;
    }

    pub fn dma(&self) -> &DmaSpace {
        &self.dma
    }

    pub fn config(&self) -> &ConfigSpace {
        &self.config
    }

    /// Size of region `index`, 0 if absent.
    pub fn region_size(&self, index: u32) -> u64 {
        match index {
            REGION_BAR0 => BAR0_SIZE,
            REGION_MSIX => MSIX_BAR_SIZE,
            REGION_CONFIG => CONFIG_SIZE as u64,
            _ => 0,
        }
    }

    /// How the card polls doorbell pages, and whether the function has a
    /// BAR page (docs/registers.md, "Doorbell pages"). Without one (the
    /// default) no region is mmappable, which keeps QEMU's posted
    /// (NO_REPLY) BAR writes on; a page in guest memory needs none.
    pub fn configure_doorbells(&mut self, policy: PagePolicy, bar_page: bool) {
        self.doorbell = DoorbellPage::new(self.spec.qp_max as usize, policy);
        if bar_page {
            if let Err(e) = self.doorbell.add_bar_page() {
                warn!("{}: no doorbell page in BAR0: {e}", self.name);
            }
        }
    }

    pub fn doorbell_page(&self) -> &DoorbellPage {
        &self.doorbell
    }

    /// (flags, size) for GET_REGION_INFO. BAR0 is mmappable (in part: the
    /// sparse area of [`Function::region_caps`]) only with a doorbell
    /// page; QEMU then sends every BAR write non-posted.
    pub fn region_info(&self, index: u32) -> Result<(u32, u64), FnError> {
        if index >= VFIO_PCI_NUM_REGIONS {
            return Err(FnError::NoRegion(index));
        }
        let size = self.region_size(index);
        let mut flags = if size > 0 {
            VFIO_REGION_INFO_FLAG_READ | VFIO_REGION_INFO_FLAG_WRITE
        } else {
            0
        };
        if self.region_fd(index).is_some() {
            flags |= VFIO_REGION_INFO_FLAG_MMAP;
        }
        Ok((flags, size))
    }

    /// The file a client maps region `index` from (at file offset 0 = the
    /// region's start): BAR0's doorbell memfd, if the function has a page.
    pub fn region_fd(&self, index: u32) -> Option<&File> {
        match index {
            REGION_BAR0 => self.doorbell.file(),
            _ => None,
        }
    }

    /// Capabilities of region `index` for GET_REGION_INFO. The MSI-X BAR
    /// carries MSIX_MAPPABLE, as with kernel vfio-pci: the table may be
    /// mapped along with the rest of the BAR by a client that mmaps it (no
    /// region is mmappable yet, so today this only informs the client).
    pub fn region_caps(&self, index: u32) -> Vec<RegionCap> {
        match index {
            REGION_BAR0 if self.doorbell.has_bar_page() => vec![sparse_mmap_cap(&[(
                doorbell::PAGE_OFFSET,
                doorbell::PAGE_SIZE,
            )])],
            REGION_MSIX => {
                vec![RegionCap {
                    id: VFIO_REGION_INFO_CAP_MSIX_MAPPABLE as u16,
                    version: 1,
                    body: vec![],
                }]
            }
            _ => Vec::new(),
        }
    }

    /// Number of interrupts of an IRQ index. No INTx (interrupt pin 0) and no
    /// MSI capability, as on most modern NICs; ERR and REQ are one each.
    pub fn irq_count(&self, index: u32) -> Result<u32, FnError> {
        match index {
            VFIO_PCI_MSIX_IRQ_INDEX => Ok(self.msix.vectors()),
            VFIO_PCI_ERR_IRQ_INDEX | VFIO_PCI_REQ_IRQ_INDEX => Ok(1),
            i if i < VFIO_PCI_NUM_IRQS => Ok(0),
            i => Err(FnError::NoIrqIndex(i)),
        }
    }

    /// (flags, count) for GET_IRQ_INFO.
    pub fn irq_info(&self, index: u32) -> Result<(u32, u32), FnError> {
        let count = self.irq_count(index)?;
        Ok((if count > 0 { VFIO_IRQ_INFO_EVENTFD } else { 0 }, count))
    }

    fn check_region(&self, region: u32, offset: u64, count: usize) -> Result<(), FnError> {
        let (_, size) = self.region_info(region)?;
        let end = offset.checked_add(count as u64);
        if size == 0 || end.is_none_or(|e| e > size) {
            return Err(FnError::OutOfRegion {
                region,
                offset,
                count,
                size,
            });
        }
        Ok(())
    }

    /// REGION_READ. Bad register accesses inside a BAR behave like hardware:
    /// all-ones and a counter, not a protocol error.
    pub fn region_read(&mut self, region: u32, offset: u64, buf: &mut [u8]) -> Result<(), FnError> {
        self.check_region(region, offset, buf.len())?;
        if self.faults.removed() && region != REGION_CONFIG {
            // Surprise removal: nobody answers, the root port completes
            // with all-ones.
            self.faults.count_removed_access();
            buf.fill(0xff);
            return Ok(());
        }
        match region {
            REGION_CONFIG => self.config.read(offset, buf)?,
            REGION_BAR0 if self.page_access(offset, buf.len()) => {
                self.page_read(offset, buf);
            }
            REGION_BAR0 => {
                if let Err(e) = self.bar0_read(offset, buf) {
                    self.bad_mmio(&e.to_string());
                    buf.fill(0xff);
                }
            }
            _ => {
                if let Err(e) = self.msix_bar_read(offset, buf) {
                    self.bad_mmio(&e.to_string());
                    buf.fill(0xff);
                }
            }
        }
        Ok(())
    }

    /// REGION_WRITE.
    pub fn region_write(&mut self, region: u32, offset: u64, data: &[u8]) -> Result<(), FnError> {
        self.check_region(region, offset, data.len())?;
        if self.faults.removed() && region != REGION_CONFIG {
            self.faults.count_removed_access();
            return Ok(());
        }
        match region {
            REGION_CONFIG => self.config_write(offset, data)?,
            REGION_BAR0 if self.page_access(offset, data.len()) => {
                self.page_write(offset, data);
            }
            REGION_BAR0 => {
                if let Err(e) = self.bar0_write(offset, data) {
                    self.bad_mmio(&e.to_string());
                }
            }
            _ => {
                if let Err(e) = self.msix_bar_write(offset, data) {
                    self.bad_mmio(&e.to_string());
                }
            }
        }
        Ok(())
    }

    /// Counts and logs the DMA mappings whose memory the client truncated
    /// since the last call; the card refuses them from then on, so the
    /// queues that use them fail (docs/protocol.md, "Memory a client
    /// truncates").
    pub fn note_lost_dma(&mut self) {
        for (address, size) in self.dma.take_lost() {
            self.stats.dma_lost += 1;
            self.log(
                Cause::GuestError,
                format_args!(
                    "the client truncated its DMA memory {address:#x}+{size:#x} under the \
                     card: the card no longer uses it, and the queues that do fail"
                ),
            );
        }
    }

    /// DMA_MAP.
    pub fn dma_map(
        &mut self,
        address: u64,
        size: u64,
        offset: u64,
        flags: u32,
        file: Option<File>,
    ) -> Result<(), FnError> {
        let rom = file.is_none() && flags & crate::dma::DMA_WRITE == 0;
        let unbacked = file.is_none() && !rom;
        self.dma.map(address, size, offset, flags, file)?;
        self.fd_generation += 1;
        debug!("{}: DMA map {address:#x}+{size:#x}", self.name);
        if unbacked && !self.dma.unshared() {
            self.log(
                Cause::Setup,
                format_args!(
                    "DMA map {address:#x}+{size:#x}: writable without a descriptor beside shared \
                     RAM (another device's BAR); the card will not access it"
                ),
            );
        }
        if rom {
            // Accepted without a descriptor: read-only (dma.rs refuses a
            // writable one), as QEMU sends its ROMs.
            self.log(
                Cause::Setup,
                format_args!(
                    "DMA map {address:#x}+{size:#x}: read-only without a descriptor (a ROM); \
                     the card will not access it"
                ),
            );
        }
        self.try_pending_vct();
        Ok(())
    }

    /// DMA_UNMAP.
    pub fn dma_unmap(&mut self, address: u64, size: u64, all: bool) -> Result<usize, FnError> {
        let n = self.dma.unmap(address, size, all)?;
        self.fd_generation += 1;
        Ok(n)
    }

    /// Function reset (DEVICE_RESET, FLR, CTRL.RESET): registers, config
    /// space and interrupt state return to their reset values. DMA mappings
    /// and registered eventfds are the client's, not the function's, and stay.
    /// Other functions are not touched.
    ///
    /// Running queues are written back to guest memory as they are (still
    /// marked RUNNING there) and forgotten; the VCT entry is cleared.
    pub fn reset(&mut self) {
        for qp in &mut self.qps {
            qp.flush(&self.dma);
        }
        self.log(Cause::Reset, format_args!("reset"));
        self.quiesced = false;
        self.bat = None;
        self.counters = FnCounters::default();
        for qp in &mut self.qps {
            qp.forget_filter();
        }
        self.switch_ops.push(SwitchOp::LeaveAll);
        self.config = self.pristine.clone();
        self.bar0.reset();
        self.msix.reset();
        self.doorbell.reset();
        self.stats.resets += 1;
    }

    /// The client went away: write queue state back into its memory (so
    /// guest memory alone describes every queue), forget its memory and
    /// interrupts, then reset.
    pub fn disconnect(&mut self) {
        self.migration_client_gone();
        for qp in &mut self.qps {
            qp.flush(&self.dma);
        }
        self.dma.clear();
        self.msix.clear_eventfds();
        self.err_fd = None;
        self.req_fd = None;
        self.fd_generation += 1;
        self.reset();
    }
}

/// A sparse-mmap region capability (vfio's `vfio_region_info_cap_sparse_mmap`):
/// the (offset, size) areas of the region a client may map.
fn sparse_mmap_cap(areas: &[(u64, u64)]) -> RegionCap {
    let mut body = Vec::with_capacity(8 + 16 * areas.len());
    body.extend_from_slice(&(areas.len() as u32).to_le_bytes());
    body.extend_from_slice(&0u32.to_le_bytes());
    for &(offset, size) in areas {
        body.extend_from_slice(&offset.to_le_bytes());
        body.extend_from_slice(&size.to_le_bytes());
    }
    RegionCap {
        id: VFIO_REGION_INFO_CAP_SPARSE_MMAP as u16,
        version: 1,
        body,
    }
}

/// Value of a queue counter: the cached context's.
pub(crate) fn qp_counter(qp: &QueuePair, stat: QpStat) -> u64 {
    let (tx, rx) = (qp.tx.context(), qp.rx.context());
    match stat {
        QpStat::TxPackets => tx.packets,
        QpStat::TxBytes => tx.bytes,
        QpStat::TxDrops => tx.drops,
        QpStat::TxErrors => tx.errors,
        QpStat::RxPackets => rx.packets,
        QpStat::RxBytes => rx.bytes,
        QpStat::RxDrops => rx.drops,
        QpStat::RxErrors => rx.errors,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::regs::Reg;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn vf() -> Function {
        Function::new(FunctionSpec {
            kind: FunctionKind::Vf(0),
            qp_max: 8,
            qp_num: 2,
            mac: [2, 0x76, 0x6e, 0, 1, 0],
            qp_macs: vec![[2, 0x76, 0x6e, 0, 1, 0], [2, 0x76, 0x6e, 0, 1, 1]],
            serial: 1,
            ari_next: 0,
            sriov: None,
            exception_qp: None,
            link_speed: 10_000,
        })
    }

    fn cfg16(f: &mut Function, off: usize) -> u16 {
        let mut b = [0; 2];
        f.region_read(REGION_CONFIG, off as u64, &mut b).unwrap();
        u16::from_le_bytes(b)
    }

    fn bar0_u32(f: &mut Function, reg: Reg) -> u32 {
        let mut b = [0; 4];
        f.region_read(REGION_BAR0, reg as u64, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    fn enable_msix(f: &mut Function) -> EventFd {
        let ctl = (caps::MSIX_OFFSET + msix_cap::CONTROL) as u64;
        f.region_write(REGION_CONFIG, ctl, &msix_cap::CONTROL_ENABLE.to_le_bytes())
            .unwrap();
        let efd = EventFd::new(EFD_NONBLOCK).unwrap();
        // SAFETY: dup of a live eventfd, owned by the File we create.
        let file = unsafe { File::from_raw_fd(libc::dup(std::os::fd::AsRawFd::as_raw_fd(&efd))) };
        let flags = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD;
        f.set_irqs(flags, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, &[], vec![file])
            .unwrap();
        efd
    }

    #[test]
    fn link_speed_is_the_ports_or_the_tx_rate_limit_if_lower() {
        let mut f = vf();
        assert_eq!(bar0_u32(&mut f, Reg::LinkSpeed), 10_000, "the port's");
        let limit = |avg_kbps| {
            let policy = crate::model::RatePolicy {
                avg_kbps,
                peak_kbps: 0,
                burst_bytes: 65_536,
            };
            Some(Limiter::new(policy, std::time::Instant::now()))
        };
        f.policy_mut().tx_rate = limit(20_000);
        assert_eq!(bar0_u32(&mut f, Reg::LinkSpeed), 20, "20 Mbit/s TX policy");
        f.policy_mut().tx_rate = limit(1_500);
        assert_eq!(bar0_u32(&mut f, Reg::LinkSpeed), 1, "rounded down");
        f.policy_mut().tx_rate = limit(500);
        assert_eq!(bar0_u32(&mut f, Reg::LinkSpeed), 1, "at least 1");
        f.policy_mut().tx_rate = limit(40_000_000);
        assert_eq!(
            bar0_u32(&mut f, Reg::LinkSpeed),
            10_000,
            "never above the port"
        );
        f.policy_mut().rx_rate = limit(20_000);
        f.policy_mut().tx_rate = None;
        assert_eq!(
            bar0_u32(&mut f, Reg::LinkSpeed),
            10_000,
            "RX policing aside"
        );
        f.reset();
        assert_eq!(bar0_u32(&mut f, Reg::LinkSpeed), 10_000);
        let write = f.region_write(REGION_BAR0, Reg::LinkSpeed as u64, &[0; 4]);
        assert!(write.is_ok(), "a bad access, not a protocol error");
        assert_eq!(bar0_u32(&mut f, Reg::BadAccess), 1, "read-only");
    }

    #[test]
    fn vf_presents_vendor_and_vf_device_id() {
        let mut f = vf();
        assert_eq!(cfg16(&mut f, hdr::VENDOR_ID), VENDOR_ID);
        assert_eq!(cfg16(&mut f, hdr::DEVICE_ID), VF_DEVICE_ID);
    }

    #[test]
    fn irq_test_register_signals_msix_eventfd() {
        let mut f = vf();
        let efd = enable_msix(&mut f);
        f.region_write(REGION_BAR0, Reg::IrqTest as u64, &0u32.to_le_bytes())
            .unwrap();
        assert_eq!(efd.read().unwrap(), 1);
        assert_eq!(bar0_u32(&mut f, Reg::IrqTestCount), 1);
        assert_eq!(f.stats().irqs_sent, 1);
    }

    #[test]
    fn irq_test_with_bad_vector_is_counted_not_fatal() {
        let mut f = vf();
        f.region_write(REGION_BAR0, Reg::IrqTest as u64, &999u32.to_le_bytes())
            .unwrap();
        assert_eq!(bar0_u32(&mut f, Reg::BadAccess), 1);
    }

    #[test]
    fn flr_resets_config_and_registers() {
        let mut f = vf();
        f.region_write(
            REGION_CONFIG,
            hdr::COMMAND as u64,
            &command::MEMORY.to_le_bytes(),
        )
        .unwrap();
        f.region_write(REGION_BAR0, Reg::Scratch as u64, &7u32.to_le_bytes())
            .unwrap();
        let devctl = (caps::PCIE_OFFSET + exp::DEVCTL) as u64;
        f.region_write(REGION_CONFIG, devctl, &exp::DEVCTL_FLR.to_le_bytes())
            .unwrap();
        assert_eq!(cfg16(&mut f, hdr::COMMAND), 0);
        assert_eq!(bar0_u32(&mut f, Reg::Scratch), 0);
        assert_eq!(
            cfg16(&mut f, caps::PCIE_OFFSET + exp::DEVCTL) & exp::DEVCTL_FLR,
            0
        );
    }

    #[test]
    fn region_accesses_outside_regions_are_errors() {
        let mut f = vf();
        let mut b = [0; 4];
        assert!(f.region_read(REGION_BAR0, BAR0_SIZE - 2, &mut b).is_err());
        assert!(f.region_read(4, 0, &mut b).is_err());
        assert!(f.region_read(9, 0, &mut b).is_err());
        assert!(f.region_read(REGION_CONFIG, u64::MAX, &mut b).is_err());
        assert!(f.region_write(REGION_MSIX, MSIX_BAR_SIZE, &b).is_err());
    }

    #[test]
    fn bar0_takes_aligned_dwords_and_qwords_only() {
        let mut f = vf();
        let mut q = [0; 8];
        f.region_read(REGION_BAR0, Reg::MacLo as u64, &mut q)
            .unwrap();
        assert_eq!(
            q,
            [0x02, 0x76, 0x6e, 0x00, 0x01, 0x00, 0, 0],
            "MAC_LO, MAC_HI"
        );
        for (offset, len) in [(0, 2), (2, 4), (0, 3), (4, 8)] {
            let mut b = vec![0; len];
            f.region_read(REGION_BAR0, offset, &mut b).unwrap();
            assert!(b.iter().all(|&x| x == 0xff), "{offset:#x}+{len}: {b:x?}");
        }
        assert_eq!(f.stats().bad_mmio, 4);
        f.region_write(REGION_BAR0, 0xfffc, &[0; 4]).unwrap();
        assert_eq!(f.stats().bad_mmio, 5, "no register at 0xfffc");
        assert_eq!(bar0_u32(&mut f, Reg::BadAccess), 5);
    }

    #[test]
    fn unknown_bar0_offset_reads_all_ones() {
        let mut f = vf();
        let mut b = [0; 4];
        f.region_read(REGION_BAR0, 0x800, &mut b).unwrap();
        assert_eq!(b, [0xff; 4]);
        assert_eq!(f.stats().bad_mmio, 1);
    }

    #[test]
    fn set_irqs_validates_flags_ranges_and_fds() {
        let mut f = vf();
        let trig_none = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_NONE;
        let both = VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_NONE;
        assert!(f
            .set_irqs(both, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, &[], vec![])
            .is_err());
        assert!(f
            .set_irqs(trig_none, VFIO_PCI_MSIX_IRQ_INDEX, 8, 2, &[], vec![])
            .is_err());
        assert!(f
            .set_irqs(trig_none, VFIO_PCI_MSIX_IRQ_INDEX, u32::MAX, 2, &[], vec![])
            .is_err());
        assert!(f.set_irqs(trig_none, 7, 0, 1, &[], vec![]).is_err());
        assert!(
            f.set_irqs(trig_none, 0, 0, 1, &[], vec![]).is_err(),
            "no INTx"
        );
        assert!(f
            .set_irqs(trig_none, VFIO_PCI_MSIX_IRQ_INDEX, 0, 0, &[], vec![])
            .is_ok());
        let not_eventfd = File::open("/proc/self/stat").unwrap();
        let ev = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD;
        assert!(f
            .set_irqs(ev, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, &[], vec![not_eventfd])
            .is_err());
        let bool_ = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_BOOL;
        assert!(f
            .set_irqs(bool_, VFIO_PCI_MSIX_IRQ_INDEX, 0, 4, &[1, 0], vec![])
            .is_err());
    }

    #[test]
    fn client_mask_pends_and_unmask_delivers() {
        let mut f = vf();
        let efd = enable_msix(&mut f);
        let mask = VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_DATA_NONE;
        f.set_irqs(mask, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, &[], vec![])
            .unwrap();
        assert_eq!(f.raise_irq(0), Delivery::Pending);
        let mut pba = [0u8; 8];
        f.region_read(REGION_MSIX, MSIX_PBA_OFFSET, &mut pba)
            .unwrap();
        assert_eq!(pba[0], 1);
        let unmask = VFIO_IRQ_SET_ACTION_UNMASK | VFIO_IRQ_SET_DATA_NONE;
        f.set_irqs(unmask, VFIO_PCI_MSIX_IRQ_INDEX, 0, 1, &[], vec![])
            .unwrap();
        assert_eq!(efd.read().unwrap(), 1);
    }

    #[test]
    fn eventfd_interrupts_survive_an_flr_that_masks_the_table_again() {
        // QEMU keeps its eventfds across a guest's FLR and never writes the
        // card's table: after the FLR every entry reads Mask = 1 again, and
        // interrupts must still arrive once the guest enables MSI-X.
        let mut f = vf();
        let efd = enable_msix(&mut f);
        let devctl = (caps::PCIE_OFFSET + exp::DEVCTL) as u64;
        f.region_write(REGION_CONFIG, devctl, &exp::DEVCTL_FLR.to_le_bytes())
            .unwrap();
        let mut ctrl = [0u8; 4];
        f.region_read(REGION_MSIX, MSIX_TABLE_OFFSET + 12, &mut ctrl)
            .unwrap();
        assert_eq!(u32::from_le_bytes(ctrl), 1, "vector 0 masked after reset");
        assert_eq!(f.raise_irq(0), Delivery::Dropped, "MSI-X Enable was reset");
        let ctl = (caps::MSIX_OFFSET + msix_cap::CONTROL) as u64;
        f.region_write(REGION_CONFIG, ctl, &msix_cap::CONTROL_ENABLE.to_le_bytes())
            .unwrap();
        assert_eq!(f.raise_irq(0), Delivery::Sent);
        assert_eq!(efd.read().unwrap(), 1);
    }

    #[test]
    fn power_state_writes_of_d1_and_d2_are_discarded() {
        let mut f = vf();
        let pmcsr = caps::PM_OFFSET + caps::pm::PMCSR;
        let state = |f: &mut Function| cfg16(f, pmcsr) & caps::pm::PMCSR_STATE;
        for (write, expect) in [(1u16, 0), (2, 0), (3, 3), (1, 3), (2, 3), (0, 0)] {
            f.region_write(REGION_CONFIG, pmcsr as u64, &write.to_le_bytes())
                .unwrap();
            assert_eq!(state(&mut f), expect, "after writing D{write}");
        }
    }

    #[test]
    fn msix_disabled_drops_interrupts() {
        let mut f = vf();
        assert_eq!(f.raise_irq(0), Delivery::Dropped);
    }
}
