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

mod traffic;

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
use crate::model::{LinkState, Mac, Vlan};
use crate::pci::caps::{self, exp, msix as msix_cap, CapLayout, SriovLayout};
use crate::pci::config::{
    command, hdr, status, Bar, BarKind, ConfigError, ConfigSpace, CONFIG_SIZE,
};
use crate::pci::msix::{Delivery, Msix, MsixError};
use crate::protocol::RegionCap;
use crate::queue::{QpCtrl, QpEffect, QpIrq, QpVlan, QueuePair};
use crate::rate::Limiter;
use crate::regs::{
    self, dword_of, Access, AdminCmd, Bar0, Effect, FnStat, FuncReg, Identity, IrqCause, QpReg,
    QpStat, Reg, RegError, Target, ADMIN_ARGS, BAR0_SIZE,
};
use crate::state::Bat;

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
}

#[derive(Debug, Error)]
pub enum FnError {
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
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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
    pub link: LinkState,
    pub tx_rate: Option<Limiter>,
    pub rx_rate: Option<Limiter>,
    /// Configuration of vNIC q for every q < X.
    pub vnics: Vec<VnicCfg>,
    /// The send queue to serve first next turn (round-robin under a TX
    /// policy, so vNICs share the budget).
    pub tx_next: usize,
}

/// A receive doorbell with `tail`, counting what it moved out of the packet
/// buffer. Returns whether to fire the queue pair's vector.
fn rx_doorbell(
    counters: &mut FnCounters,
    qp: &mut QueuePair,
    name: &str,
    dma: &DmaSpace,
    tail: u32,
    now: std::time::Instant,
) -> bool {
    let d = qp.rx_doorbell(name, dma, tail, now);
    counters.add(FnStat::RxPackets, d.packets);
    counters.add(FnStat::RxBytes, d.bytes);
    counters.add(FnStat::RxDrops, d.drops);
    d.fire
}

/// Whether the send and receive queue of `qp` are in the error state.
fn queues_in_error(qp: &QueuePair) -> [bool; 2] {
    let s = qp.status();
    [s.tx_error(), s.rx_error()]
}

fn fire_if(fire: bool) -> QpEffect {
    if fire {
        QpEffect::Interrupt
    } else {
        QpEffect::None
    }
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

    /// The committed VCT entry (BAT address), 0 if none.
    pub fn vct(&self) -> u64 {
        self.bar0.vct()
    }

    /// A VCT entry from management that waits to be committed.
    pub fn pending_vct(&self) -> Option<u64> {
        self.pending_vct
    }

    /// VCT_STATUS: why the last entry was refused, 0 if it was not.
    pub fn vct_status(&self) -> u32 {
        self.bar0.read_reg(Reg::VctStatus)
    }

    pub fn quiesced(&self) -> bool {
        self.quiesced
    }

    /// Management gives the function a VCT entry (`vnicctl vct set`, a
    /// configuration file). It is committed at once if the guest can be
    /// read (memory mapped, Bus Master Enable set), else when it can: at
    /// -incoming or -loadvm QEMU maps guest memory before loading it, and
    /// only the guest's driver, running again, sets Bus Master Enable.
    pub fn set_vct(&mut self, address: u64) -> VctOutcome {
        if address == 0 {
            self.pending_vct = None;
            self.commit_vct(0);
            self.bar0.set_vct(0);
            return VctOutcome::Cleared;
        }
        self.pending_vct = Some(address);
        self.try_pending_vct().unwrap_or(VctOutcome::Pending)
    }

    /// Whether the card may read and write the guest's memory now.
    fn may_dma(&self) -> bool {
        !self.dma.is_empty() && self.config.u16(hdr::COMMAND) & command::BUS_MASTER != 0
    }

    /// Commits management's pending VCT entry if the guest can be read;
    /// a successful walk tells the driver through IRQ_CAUSE.RESUMED.
    fn try_pending_vct(&mut self) -> Option<VctOutcome> {
        let address = self.pending_vct.filter(|_| self.may_dma())?;
        self.pending_vct = None;
        self.bar0.set_vct(address);
        self.commit_vct(address);
        let status = self.vct_status();
        if status != 0 {
            return Some(VctOutcome::Refused(status));
        }
        let running = self
            .qps
            .iter()
            .filter(|qp| qp.tx.running() || qp.rx.running())
            .count();
        info!(
            "{}: VCT entry {address:#x} from management committed, {running} queue pairs resumed",
            self.name
        );
        self.notify(IrqCause::new().with_resumed(true));
        Some(VctOutcome::Committed)
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

    /// Sets IRQ_CAUSE bits and fires the misc vector.
    pub fn notify(&mut self, cause: IrqCause) {
        self.bar0.raise_cause(cause);
        self.raise_irq(0);
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

    pub fn link_up(&self) -> bool {
        self.bar0.link_up()
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

    /// Switch changes requested since the last call.
    pub fn take_switch_ops(&mut self) -> Vec<SwitchOp> {
        std::mem::take(&mut self.switch_ops)
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

    /// A socket access inside the doorbell page (a client that does not
    /// map it, or a test): it reads and writes the page's memory.
    fn page_access(&self, offset: u64, len: usize) -> bool {
        self.doorbell.has_bar_page() && doorbell::in_page(offset, len)
    }

    fn page_read(&mut self, offset: u64, buf: &mut [u8]) {
        if !regs::dword_or_qword(offset, buf.len()) {
            self.bad_mmio("doorbell page: not an aligned dword or qword");
            buf.fill(0xff);
            return;
        }
        for (i, chunk) in buf.chunks_mut(4).enumerate() {
            let rel = offset - doorbell::PAGE_OFFSET + 4 * i as u64;
            chunk.copy_from_slice(&self.doorbell.read_dword(rel).to_le_bytes());
        }
    }

    fn page_write(&mut self, offset: u64, data: &[u8]) {
        let page = &self.doorbell;
        let ok = regs::dword_or_qword(offset, data.len())
            && data.chunks(4).enumerate().all(|(i, chunk)| {
                let rel = offset - doorbell::PAGE_OFFSET + 4 * i as u64;
                let v = u32::from_le_bytes(chunk.try_into().expect("dword chunks"));
                page.write_dword(rel, v)
            });
        if !ok {
            self.bad_mmio("doorbell page: bad write");
        }
    }

    /// Whether the doorbells go through a page (the driver enabled one): a
    /// doorbell register write is then a kick.
    fn page_mode(&self) -> bool {
        self.doorbell.enabled()
    }

    /// Whether the page in use can still be reached; a guest page that
    /// cannot (unmapped since) is turned off, logged and flagged in
    /// DB_PAGE.REFUSED: doorbells are register writes from then on.
    fn page_reachable(&mut self) -> bool {
        if self.doorbell.reachable(&self.dma) {
            return true;
        }
        if let Some(address) = self.doorbell.guest_page() {
            self.log(
                Cause::GuestError,
                format_args!(
                    "doorbell page {address:#x} no longer reachable: doorbells are register writes"
                ),
            );
            self.doorbell.lost();
        }
        false
    }

    /// A doorbell register (QP_TX_TAIL, QP_RX_TAIL, QP_IRQ) rang while the
    /// driver uses the page: the page holds the values (the register's is
    /// ignored, so a kick overtaken by a later store into the page cannot
    /// move a tail back); poll the slot from now on, then take what it has.
    fn page_kick(&mut self, q: usize, now: std::time::Instant) {
        self.doorbell.watch(&self.dma, q, now);
        self.take_page(q);
    }

    /// Applies the doorbells in queue pair `q`'s slot as the register
    /// writes they stand for (same checks, same effects). Returns whether
    /// there were any.
    fn take_page(&mut self, q: usize) -> bool {
        let change = self.doorbell.take(&self.dma, q);
        if q >= self.qps.len() {
            return false;
        }
        if let Some(v) = change.tx_tail {
            self.qp_write(q, QpReg::TxTail, v);
        }
        if let Some(v) = change.rx_tail {
            self.qp_write(q, QpReg::RxTail, v);
        }
        if change.rearm {
            self.qp_write(q, QpReg::Irq, QpIrq::new().with_rearm(true).into_bits());
        }
        change.any()
    }

    /// One poll of the doorbell page: every watched slot is taken; a slot
    /// quiet for the idle window is no longer watched (after one last look,
    /// see crate::doorbell). Returns whether any slot is still watched.
    pub fn poll_doorbells(&mut self, now: std::time::Instant) -> bool {
        if !self.page_mode() || !self.page_reachable() {
            return false;
        }
        let watched: Vec<usize> = self.doorbell.watched().collect();
        let mut found = false;
        for q in watched {
            let busy =
                self.take_page(q) || (self.doorbell.quiet(&self.dma, q, now) && self.take_page(q));
            if busy {
                self.doorbell.watch(&self.dma, q, now);
                found = true;
            }
        }
        if !found {
            self.doorbell.slow_down();
        }
        self.doorbell.watched().next().is_some()
    }

    /// Whether the card polls any of this function's doorbell slots.
    pub fn doorbells_watched(&self) -> bool {
        self.doorbell.enabled() && self.doorbell.watched().next().is_some()
    }

    /// The queue pair's tails as they are now (for a slot starting afresh).
    fn tails(qps: &[QueuePair], q: usize) -> (u32, u32) {
        qps.get(q).map_or((0, 0), |qp| {
            (u32::from(qp.tx.tail()), u32::from(qp.rx.tail()))
        })
    }

    fn qp_index(&self, qp: u16, offset: u64) -> Result<usize, RegError> {
        // Areas of queue pairs that are not enabled hold no registers.
        (usize::from(qp) < self.qps.len())
            .then_some(usize::from(qp))
            .ok_or(RegError::NoRegister(offset))
    }

    fn bar0_dword(&self, offset: u64) -> Result<u32, RegError> {
        let target = regs::decode(offset).ok_or(RegError::NoRegister(offset))?;
        Ok(match target {
            Target::Reg(spec) if spec.reg == Reg::DbPage => self.doorbell.register().into_bits(),
            Target::Reg(spec) => self.bar0.read_reg(spec.reg),
            Target::FnStat { stat, high } => dword_of(self.counters.get(stat), high),
            Target::Qp { qp, reg } => {
                let qp = &self.qps[self.qp_index(qp, offset)?];
                qp_register(qp, reg.reg)
            }
            Target::QpStat { qp, stat, high } => {
                let qp = &self.qps[self.qp_index(qp, offset)?];
                dword_of(qp_counter(qp, stat), high)
            }
        })
    }

    fn bar0_read(&self, offset: u64, buf: &mut [u8]) -> Result<(), RegError> {
        Bar0::check(offset, buf.len())?;
        for (i, chunk) in buf.chunks_mut(4).enumerate() {
            let v = self.bar0_dword(offset + 4 * i as u64)?;
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    fn bar0_write(&mut self, offset: u64, data: &[u8]) -> Result<(), RegError> {
        Bar0::check(offset, data.len())?;
        for (i, chunk) in data.chunks(4).enumerate() {
            let off = offset + 4 * i as u64;
            let v = u32::from_le_bytes(chunk.try_into().expect("dword chunks"));
            match regs::decode(off).ok_or(RegError::NoRegister(off))? {
                Target::Reg(spec) => {
                    let effect = self.bar0.write_reg(spec, v)?;
                    self.apply(effect);
                }
                Target::Qp { qp, reg } => {
                    let q = self.qp_index(qp, off)?;
                    if reg.access == Access::ReadOnly {
                        return Err(RegError::ReadOnly(off));
                    }
                    // Not a port of the switch: no MAC to change, no VLAN
                    // to join.
                    if self.spec.exception_qp == Some(qp)
                        && matches!(reg.reg, QpReg::MacLo | QpReg::MacHi | QpReg::Vlan)
                    {
                        return Err(RegError::ExceptionQp(off));
                    }
                    if matches!(reg.reg, QpReg::MacLo | QpReg::MacHi) && !self.policy.trust {
                        return Err(RegError::Untrusted(off));
                    }
                    let doorbell = matches!(reg.reg, QpReg::TxTail | QpReg::RxTail | QpReg::Irq);
                    if doorbell && self.page_mode() && self.page_reachable() {
                        self.page_kick(q, std::time::Instant::now());
                        continue;
                    }
                    self.qp_write(q, reg.reg, v);
                    if reg.reg == QpReg::Ctrl {
                        let tails = Self::tails(&self.qps, q);
                        self.doorbell.restart(&self.dma, q, tails);
                    }
                }
                Target::FnStat { .. } | Target::QpStat { .. } => {
                    return Err(RegError::ReadOnly(off));
                }
            }
        }
        Ok(())
    }

    /// A queue-pair register write. Whatever the register, a queue it puts
    /// into the error state (QP_CTRL loading a bad context, a doorbell
    /// beyond the ring, a receive doorbell whose waiting frames meet a bad
    /// buffer) counts in QUEUE_ERRORS: the queues' error states before and
    /// after tell. Not the contexts' error counters: a start loads them
    /// from guest memory, where they may hold anything (found by the
    /// `rings` fuzz target, docs/fuzzing.md).
    fn qp_write(&mut self, q: usize, reg: QpReg, v: u32) {
        let before = queues_in_error(&self.qps[q]);
        self.qp_write_inner(q, reg, v);
        let failed = queues_in_error(&self.qps[q])
            .into_iter()
            .zip(before)
            .filter(|&(now, was)| now && !was)
            .count();
        self.counters.add(FnStat::QueueErrors, failed as u64);
    }

    fn qp_write_inner(&mut self, q: usize, reg: QpReg, v: u32) {
        let (name, dma, bat) = (&self.name, &self.dma, self.bat.as_ref());
        let qp = &mut self.qps[q];
        let effect = match reg {
            QpReg::Ctrl => {
                qp.set_ctrl(name, dma, bat, QpCtrl::from_bits(v));
                QpEffect::None
            }
            QpReg::TxTail => qp.tx_doorbell(name, dma, v),
            QpReg::RxTail => {
                let now = std::time::Instant::now();
                fire_if(rx_doorbell(&mut self.counters, qp, name, dma, v, now))
            }
            QpReg::Irq => {
                // The receive doorbell a 1.1 driver's rearm carries goes
                // first: the rearm then covers what it delivered.
                let irq = QpIrq::from_bits(v);
                let now = std::time::Instant::now();
                let tail = u32::from(irq.tail());
                let drained =
                    irq.rx_tail() && rx_doorbell(&mut self.counters, qp, name, dma, tail, now);
                let rearmed = irq.rearm() && qp.irq.rearm(now);
                fire_if(drained || rearmed)
            }
            QpReg::Itr => {
                qp.irq.set_itr(crate::queue::QpItr::from_bits(v));
                QpEffect::None
            }
            QpReg::Vlan => QpEffect::Vlan(QpVlan::from_bits(v)),
            QpReg::MacLo => {
                qp.staged_mac_lo = Some(v);
                QpEffect::None
            }
            QpReg::MacHi => {
                let lo = qp.staged_mac_lo.take().unwrap_or_else(|| {
                    u32::from_le_bytes(qp.mac.0[..4].try_into().expect("4 bytes"))
                });
                let (l, h) = (lo.to_le_bytes(), v.to_le_bytes());
                let mac = Mac([l[0], l[1], l[2], l[3], h[0], h[1]]);
                self.switch_ops.push(SwitchOp::SetMac { qp: q as u16, mac });
                QpEffect::None
            }
            _ => QpEffect::None,
        };
        match effect {
            QpEffect::Interrupt => {
                self.raise_irq(MISC_VECTORS + q as u32);
            }
            QpEffect::Vlan(v) => {
                let (qp, vlan) = (q as u16, v.vid());
                self.switch_ops.push(if v.leave() {
                    SwitchOp::Leave { qp, vlan }
                } else {
                    SwitchOp::Join { qp, vlan }
                });
            }
            QpEffect::None | QpEffect::Kick => {}
        }
    }

    /// VCT_HI was written: flush what the old BAT described, then find the
    /// new BAT and resume every queue its contexts say was running.
    fn commit_vct(&mut self, address: u64) {
        for qp in &mut self.qps {
            qp.flush(&self.dma);
        }
        self.bat = None;
        self.bar0.set_vct_status(0);
        self.doorbell.forget_guest_page();
        if address == 0 {
            self.log(Cause::Setup, format_args!("VCT entry cleared"));
            return;
        }
        match Bat::read(&self.dma, address) {
            Ok(bat) => {
                self.log(Cause::Setup, format_args!("VCT entry {address:#x}"));
                for qp in &mut self.qps {
                    qp.resume(&self.name, &self.dma, &bat);
                }
                self.bat = Some(bat);
                if bat.doorbells != 0 {
                    self.use_guest_page(bat.doorbells);
                }
            }
            Err(e) => {
                self.log(
                    Cause::GuestError,
                    format_args!("VCT entry {address:#x} refused: {e}"),
                );
                self.bar0.set_vct_status(e.vct_code());
            }
        }
        self.keep_quiesced();
    }

    /// The BAT names a doorbell page in guest memory: the slots are there
    /// from now on, if the card may write it (else DB_PAGE.REFUSED, a log
    /// line, and register doorbells).
    fn use_guest_page(&mut self, address: u64) {
        let qps = &self.qps;
        match self
            .doorbell
            .use_guest_page(&self.dma, address, |q| Self::tails(qps, q))
        {
            Ok(()) => self.log(Cause::Setup, format_args!("doorbell page at {address:#x}")),
            Err(e) => self.log(
                Cause::GuestError,
                format_args!("{e}: doorbells are register writes"),
            ),
        };
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

    fn bad_mmio(&mut self, what: &str) {
        self.bar0.count_bad_access();
        self.stats.bad_mmio += 1;
        self.log(Cause::BadAccess, format_args!("bad MMIO access: {what}"));
    }

    fn msix_bar_read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MsixError> {
        if offset < MSIX_PBA_OFFSET {
            self.msix.table_read(offset - MSIX_TABLE_OFFSET, buf)
        } else {
            let rel = offset - MSIX_PBA_OFFSET;
            if rel + buf.len() as u64 > self.msix.pba_size() {
                return Err(MsixError::Unaligned {
                    offset,
                    len: buf.len(),
                });
            }
            self.msix.pba_read(rel, buf)
        }
    }

    fn msix_bar_write(&mut self, offset: u64, data: &[u8]) -> Result<(), MsixError> {
        if offset >= MSIX_PBA_OFFSET {
            // The PBA is read-only.
            return Err(MsixError::Unaligned {
                offset,
                len: data.len(),
            });
        }
        let unmasked = self.msix.table_write(offset - MSIX_TABLE_OFFSET, data)?;
        if !unmasked.is_empty() {
            self.deliver_pending();
        }
        Ok(())
    }

    fn msix_control(&self) -> (bool, bool) {
        let ctl = self.config.u16(caps::MSIX_OFFSET + msix_cap::CONTROL);
        (
            ctl & msix_cap::CONTROL_ENABLE != 0,
            ctl & msix_cap::CONTROL_FUNCTION_MASK != 0,
        )
    }

    fn deliver_pending(&mut self) {
        let (enabled, fmask) = self.msix_control();
        let n = self.msix.deliver_unmasked_pending(enabled, fmask);
        self.stats.irqs_sent += n as u64;
    }

    /// Raises MSI-X `vector`, honouring injected faults (a dropped or
    /// delayed message, a removed function), enable and masks.
    pub fn raise_irq(&mut self, vector: u32) -> Delivery {
        match self
            .faults
            .irq(&self.name, vector, std::time::Instant::now())
        {
            IrqFault::Send => self.send_irq(vector),
            IrqFault::Drop => Delivery::Dropped,
            IrqFault::Held => Delivery::Pending,
        }
    }

    /// Sends the interrupts a `delay-irqs` fault held whose time has come.
    pub fn send_delayed_irqs(&mut self, now: std::time::Instant) {
        for vector in self.faults.due_irqs(now) {
            if !self.faults.removed() {
                self.send_irq(vector);
            }
        }
    }

    /// Sends MSI-X `vector`, honouring enable and masks.
    fn send_irq(&mut self, vector: u32) -> Delivery {
        let (enabled, fmask) = self.msix_control();
        let d = match self.msix.trigger(vector, enabled, fmask) {
            Ok(d) => d,
            Err(e) => {
                self.bad_mmio(&e.to_string());
                return Delivery::Dropped;
            }
        };
        match d {
            Delivery::Sent => self.stats.irqs_sent += 1,
            Delivery::Pending => self.stats.irqs_pending += 1,
            Delivery::Dropped => self.stats.irqs_dropped += 1,
        }
        debug!("{}: vector {vector}: {d:?}", self.name);
        d
    }

    fn apply(&mut self, effect: Effect) {
        match effect {
            Effect::None => {}
            Effect::Reset => {
                self.log(Cause::Reset, format_args!("reset through CTRL.RESET"));
                self.reset();
            }
            Effect::RaiseIrq(vector) => {
                self.bar0.count_test_irq();
                self.raise_irq(vector);
            }
            Effect::VctCommit(address) => self.commit_vct(address),
            Effect::DbPage(on) => {
                let qps = &self.qps;
                let was = self.doorbell.enabled();
                self.doorbell.set_bar_enabled(on, |q| Self::tails(qps, q));
                if self.doorbell.enabled() != was {
                    let state = if was { "off" } else { "on" };
                    self.log(Cause::Setup, format_args!("doorbell page {state}"));
                }
            }
            Effect::Admin(cmd) => {
                if self.spec.kind == FunctionKind::Pf {
                    self.admin = Some(cmd);
                } else {
                    debug!("{}: admin command on a VF refused", self.name);
                    self.bar0.admin_done(libc::EPERM as u32, None);
                }
            }
        }
    }

    fn config_write(&mut self, offset: u64, data: &[u8]) -> Result<(), FnError> {
        let mut data = data.to_vec();
        caps::discard_unsupported_power_state(&self.config, offset, &mut data);
        self.config.write(offset, &data)?;
        // Initiate FLR is bit 15 of Device Control: write-only, never stored.
        let flr_byte = (caps::PCIE_OFFSET + exp::DEVCTL + 1) as u64;
        let flr = flr_byte
            .checked_sub(offset)
            .and_then(|i| data.get(i as usize))
            .is_some_and(|b| b & (exp::DEVCTL_FLR >> 8) as u8 != 0);
        if flr {
            self.log(Cause::Reset, format_args!("function level reset"));
            self.reset();
            return Ok(());
        }
        let msix_ctl = (caps::MSIX_OFFSET + msix_cap::CONTROL) as u64;
        if offset < msix_ctl + 2 && msix_ctl < offset + data.len() as u64 {
            self.deliver_pending();
        }
        self.try_pending_vct();
        Ok(())
    }

    /// SET_IRQS, with the vfio semantics: exactly one action (mask, unmask,
    /// trigger) and one data type (none, bool array, eventfds).
    pub fn set_irqs(
        &mut self,
        flags: u32,
        index: u32,
        start: u32,
        count: u32,
        data: &[u8],
        fds: Vec<File>,
    ) -> Result<(), FnError> {
        let action = flags & VFIO_IRQ_SET_ACTION_TYPE_MASK;
        let dtype = flags & VFIO_IRQ_SET_DATA_TYPE_MASK;
        if flags & !(VFIO_IRQ_SET_ACTION_TYPE_MASK | VFIO_IRQ_SET_DATA_TYPE_MASK) != 0 {
            return Err(FnError::SetIrqs("unknown flags"));
        }
        if action.count_ones() != 1 || dtype.count_ones() != 1 {
            return Err(FnError::SetIrqs(
                "need exactly one action and one data type",
            ));
        }
        let max = self.irq_count(index)?;
        if dtype != VFIO_IRQ_SET_DATA_EVENTFD && !fds.is_empty() {
            return Err(FnError::SetIrqs("file descriptors without DATA_EVENTFD"));
        }
        // DATA_NONE + TRIGGER with count 0 disables the whole index.
        if count == 0 {
            if action == VFIO_IRQ_SET_ACTION_TRIGGER && dtype == VFIO_IRQ_SET_DATA_NONE {
                self.disable_irq_index(index);
                return Ok(());
            }
            return Err(FnError::SetIrqs(
                "count 0 is only valid to disable an index",
            ));
        }
        if start.checked_add(count).is_none_or(|end| end > max) {
            return Err(FnError::IrqRange {
                index,
                start,
                count,
                max,
            });
        }
        let selected: Vec<bool> = match dtype {
            VFIO_IRQ_SET_DATA_BOOL => {
                let b = data
                    .get(..count as usize)
                    .ok_or(FnError::SetIrqs("short bool array"))?;
                b.iter().map(|&x| x != 0).collect()
            }
            _ => vec![true; count as usize],
        };
        match (action, dtype) {
            (VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD) => {
                self.set_eventfds(index, start, count, fds)
            }
            (VFIO_IRQ_SET_ACTION_TRIGGER, _) => {
                self.trigger_irqs(index, start, &selected);
                Ok(())
            }
            (_, VFIO_IRQ_SET_DATA_EVENTFD) => Err(FnError::SetIrqs("mask/unmask take no eventfd")),
            (VFIO_IRQ_SET_ACTION_MASK | VFIO_IRQ_SET_ACTION_UNMASK, _)
                if index == VFIO_PCI_MSIX_IRQ_INDEX =>
            {
                let mask = action == VFIO_IRQ_SET_ACTION_MASK;
                for (i, _) in selected.iter().enumerate().filter(|(_, s)| **s) {
                    self.msix
                        .set_client_mask(start + i as u32, &[mask])
                        .map_err(|_| FnError::SetIrqs("vector out of range"))?;
                }
                if !mask {
                    self.deliver_pending();
                }
                Ok(())
            }
            _ => Err(FnError::SetIrqs("index is not maskable")),
        }
    }

    fn disable_irq_index(&mut self, index: u32) {
        match index {
            VFIO_PCI_MSIX_IRQ_INDEX => self.msix.clear_eventfds(),
            VFIO_PCI_ERR_IRQ_INDEX => self.err_fd = None,
            VFIO_PCI_REQ_IRQ_INDEX => self.req_fd = None,
            _ => {}
        }
    }

    fn set_eventfds(
        &mut self,
        index: u32,
        start: u32,
        count: u32,
        fds: Vec<File>,
    ) -> Result<(), FnError> {
        if !fds.is_empty() && fds.len() != count as usize {
            return Err(FnError::SetIrqs("number of eventfds differs from count"));
        }
        let mut fds: Vec<Option<EventFd>> = if fds.is_empty() {
            // QEMU sends no descriptors to de-assign a range (all -1).
            (0..count).map(|_| None).collect()
        } else {
            fds.into_iter()
                .map(into_eventfd)
                .collect::<Result<_, _>>()?
        };
        match index {
            VFIO_PCI_MSIX_IRQ_INDEX => {
                for (i, fd) in fds.drain(..).enumerate() {
                    self.msix
                        .set_eventfd(start + i as u32, fd)
                        .map_err(|_| FnError::SetIrqs("vector out of range"))?;
                }
                self.deliver_pending();
            }
            VFIO_PCI_ERR_IRQ_INDEX => self.err_fd = fds.pop().flatten(),
            VFIO_PCI_REQ_IRQ_INDEX => self.req_fd = fds.pop().flatten(),
            _ => return Err(FnError::SetIrqs("index has no interrupts")),
        }
        Ok(())
    }

    fn trigger_irqs(&mut self, index: u32, start: u32, selected: &[bool]) {
        for (i, _) in selected.iter().enumerate().filter(|(_, s)| **s) {
            let n = start + i as u32;
            match index {
                VFIO_PCI_MSIX_IRQ_INDEX => {
                    self.raise_irq(n);
                }
                VFIO_PCI_ERR_IRQ_INDEX => signal(&self.err_fd),
                VFIO_PCI_REQ_IRQ_INDEX => signal(&self.req_fd),
                _ => {}
            }
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
        let rom = file.is_none();
        self.dma.map(address, size, offset, flags, file)?;
        debug!("{}: DMA map {address:#x}+{size:#x}", self.name);
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
        Ok(self.dma.unmap(address, size, all)?)
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
        for qp in &mut self.qps {
            qp.flush(&self.dma);
        }
        self.dma.clear();
        self.msix.clear_eventfds();
        self.err_fd = None;
        self.req_fd = None;
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

/// Value of a queue-pair register.
fn qp_register(qp: &QueuePair, reg: QpReg) -> u32 {
    let mac = qp.mac.0;
    match reg {
        QpReg::MacLo => u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
        QpReg::MacHi => u32::from_le_bytes([mac[4], mac[5], 0, 0]),
        QpReg::Ctrl => qp.ctrl().into_bits(),
        QpReg::Status => qp.status().into_bits(),
        QpReg::Itr => qp.irq.itr().into_bits(),
        QpReg::TxHead => qp.tx.head() as u32,
        QpReg::RxHead => qp.rx.head() as u32,
        QpReg::TxTail | QpReg::RxTail | QpReg::Irq | QpReg::Vlan => 0,
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

fn signal(fd: &Option<EventFd>) {
    if let Some(fd) = fd {
        if let Err(e) = fd.write(1) {
            warn!("eventfd write failed: {e}");
        }
    }
}

/// Accepts only real eventfds: anything else (a regular file, a pipe) would
/// have the card write into it.
fn into_eventfd(file: File) -> Result<Option<EventFd>, FnError> {
    use std::os::fd::AsRawFd;
    let link = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()));
    if !link.is_ok_and(|l| l.to_string_lossy() == "anon_inode:[eventfd]") {
        return Err(FnError::SetIrqs("descriptor is not an eventfd"));
    }
    // SAFETY: the descriptor is an eventfd we own; ownership moves from the
    // File into the EventFd.
    Ok(Some(unsafe { EventFd::from_raw_fd(file.into_raw_fd()) }))
}

/// Builds a function's configuration space.
fn build_config(spec: &FunctionSpec, vectors: u16) -> ConfigSpace {
    let mut c = ConfigSpace::default();
    let device = match spec.kind {
        FunctionKind::Pf => PF_DEVICE_ID,
        FunctionKind::Vf(_) => VF_DEVICE_ID,
    };
    c.set_u16(hdr::VENDOR_ID, VENDOR_ID);
    c.set_u16(hdr::DEVICE_ID, device);
    c.set_u16(hdr::COMMAND, 0);
    c.set_wmask_u16(hdr::COMMAND, command::WRITABLE);
    c.set_u16(hdr::STATUS, status::CAP_LIST);
    c.set_w1c_u16(hdr::STATUS, status::RW1C);
    c.set_u8(hdr::REVISION, REVISION);
    c.set_ro(hdr::CLASS_PROG, &CLASS_ETHERNET.to_le_bytes()[..3]);
    c.set_rw(hdr::CACHE_LINE, &[0], &[0xff]);
    c.set_u8(hdr::HEADER_TYPE, 0);
    for bar in BARS {
        c.add_bar(bar);
    }
    c.set_u16(hdr::SUBSYS_VENDOR, VENDOR_ID);
    c.set_u16(hdr::SUBSYS_ID, SUBSYS_ID);
    c.set_rw(hdr::INT_LINE, &[0], &[0xff]);
    c.set_u8(hdr::INT_PIN, 0);
    caps::build(
        &mut c,
        &CapLayout {
            msix_vectors: vectors,
            msix_bar: REGION_MSIX as u8,
            msix_table_offset: MSIX_TABLE_OFFSET as u32,
            msix_pba_offset: MSIX_PBA_OFFSET as u32,
            sriov: spec.sriov.clone(),
            ari_next_function: spec.ari_next,
            serial: spec.serial,
        },
    );
    c
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
