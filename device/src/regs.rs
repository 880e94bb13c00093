//! BAR0: the function's register file.
//!
//! Registers are data: [`REGISTERS`] lists every register with its offset,
//! access type and meaning, and docs/registers.md is the same table in prose.
//! Structured registers are `bitfield-struct` types. Accesses must be aligned
//! dwords (or qwords, handled as two dwords); anything else, and any offset not
//! in the table, is a bad access: reads return all-ones, writes are dropped,
//! and the BAD_ACCESS counter goes up.

use bitfield_struct::bitfield;

/// Size of BAR0. Registers for queues and doorbells come after 0x1000.
pub const BAR0_SIZE: u64 = 64 * 1024;
/// "VNIC" in ASCII, read from ID.
pub const ID_MAGIC: u32 = 0x564e_4943;
pub const VERSION_MAJOR: u16 = 1;
pub const VERSION_MINOR: u16 = 8;

/// Register offsets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum Reg {
    Id = 0x000,
    Version = 0x004,
    Func = 0x008,
    QpMax = 0x00c,
    QpNum = 0x010,
    Status = 0x014,
    Ctrl = 0x018,
    Scratch = 0x01c,
    MacLo = 0x020,
    MacHi = 0x024,
    IrqTest = 0x028,
    IrqTestCount = 0x02c,
    NumVectors = 0x030,
    BadAccess = 0x034,
    LinkSpeed = 0x038,
    VctLo = 0x040,
    VctHi = 0x044,
    VctStatus = 0x048,
    IrqCause = 0x04c,
    NumVfs = 0x050,
    ExcQp = 0x054,
    Features = 0x058,
    DbPage = 0x05c,
    AdminCmd = 0x060,
    AdminStatus = 0x064,
    AdminArg0 = 0x068,
    AdminArg1 = 0x06c,
    AdminArg2 = 0x070,
    AdminArg3 = 0x074,
    AdminArg4 = 0x078,
    AdminArg5 = 0x07c,
}

/// Number of admin mailbox argument registers.
pub const ADMIN_ARGS: usize = 6;

/// How software may access a register.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    ReadOnly,
    ReadWrite,
    /// Writes act; reads return 0.
    WriteOnly,
}

/// One row of the register table.
#[derive(Clone, Copy, Debug)]
pub struct RegSpec {
    pub reg: Reg,
    pub name: &'static str,
    pub access: Access,
}

/// Every BAR0 register.
pub const REGISTERS: &[RegSpec] = &[
    RegSpec {
        reg: Reg::Id,
        name: "ID",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::Version,
        name: "VERSION",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::Func,
        name: "FUNC",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::QpMax,
        name: "QP_MAX",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::QpNum,
        name: "QP_NUM",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::Status,
        name: "STATUS",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::Ctrl,
        name: "CTRL",
        access: Access::ReadWrite,
    },
    RegSpec {
        reg: Reg::Scratch,
        name: "SCRATCH",
        access: Access::ReadWrite,
    },
    RegSpec {
        reg: Reg::MacLo,
        name: "MAC_LO",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::MacHi,
        name: "MAC_HI",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::IrqTest,
        name: "IRQ_TEST",
        access: Access::WriteOnly,
    },
    RegSpec {
        reg: Reg::IrqTestCount,
        name: "IRQ_TEST_COUNT",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::NumVectors,
        name: "NUM_VECTORS",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::BadAccess,
        name: "BAD_ACCESS",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::LinkSpeed,
        name: "LINK_SPEED",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::VctLo,
        name: "VCT_LO",
        access: Access::ReadWrite,
    },
    RegSpec {
        reg: Reg::VctHi,
        name: "VCT_HI",
        access: Access::ReadWrite,
    },
    RegSpec {
        reg: Reg::VctStatus,
        name: "VCT_STATUS",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::IrqCause,
        name: "IRQ_CAUSE",
        access: Access::ReadWrite,
    },
    RegSpec {
        reg: Reg::NumVfs,
        name: "NUM_VFS",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::ExcQp,
        name: "EXC_QP",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::Features,
        name: "FEATURES",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::DbPage,
        name: "DB_PAGE",
        access: Access::ReadWrite,
    },
    RegSpec {
        reg: Reg::AdminCmd,
        name: "ADMIN_CMD",
        access: Access::WriteOnly,
    },
    RegSpec {
        reg: Reg::AdminStatus,
        name: "ADMIN_STATUS",
        access: Access::ReadOnly,
    },
    RegSpec {
        reg: Reg::AdminArg0,
        name: "ADMIN_ARG0",
        access: Access::ReadWrite,
    },
    RegSpec {
        reg: Reg::AdminArg1,
        name: "ADMIN_ARG1",
        access: Access::ReadWrite,
    },
    RegSpec {
        reg: Reg::AdminArg2,
        name: "ADMIN_ARG2",
        access: Access::ReadWrite,
    },
    RegSpec {
        reg: Reg::AdminArg3,
        name: "ADMIN_ARG3",
        access: Access::ReadWrite,
    },
    RegSpec {
        reg: Reg::AdminArg4,
        name: "ADMIN_ARG4",
        access: Access::ReadWrite,
    },
    RegSpec {
        reg: Reg::AdminArg5,
        name: "ADMIN_ARG5",
        access: Access::ReadWrite,
    },
];

impl Reg {
    pub fn from_offset(offset: u64) -> Option<RegSpec> {
        REGISTERS.iter().copied().find(|s| s.reg as u64 == offset)
    }
}

/// DB_PAGE (interface 1.2): the doorbell page (crate::doorbell).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct DbPageReg {
    /// RW: the driver stores its doorbells into the page. Reads back 0 on
    /// a function without a page; a reset clears it.
    pub enable: bool,
    /// RO: the function has a page (vnicd `--doorbell-page`), mmappable at
    /// BAR0 [`crate::doorbell::PAGE_OFFSET`].
    pub present: bool,
    /// RO (interface 1.4): the slots in use are the guest page the BAT
    /// header names.
    pub guest: bool,
    /// RO (interface 1.4): the guest page the BAT header named was
    /// refused (not 4 KiB-aligned, not writable guest memory) or became
    /// unreachable; doorbells are register writes. Cleared by the next
    /// VCT commit or reset.
    pub refused: bool,
    #[bits(28)]
    __: u32,
}

/// VERSION: interface version the driver checks.
#[bitfield(u32)]
pub struct VersionReg {
    #[bits(16)]
    pub minor: u16,
    #[bits(16)]
    pub major: u16,
}

/// FUNC: which function of the card this is.
#[bitfield(u32)]
pub struct FuncReg {
    /// VF number (0 on the PF).
    #[bits(16)]
    pub vf_index: u16,
    #[bits(15)]
    __: u16,
    pub is_vf: bool,
}

/// STATUS.
#[bitfield(u32)]
pub struct StatusReg {
    pub link_up: bool,
    /// The client offered the guest's memory without a descriptor (QEMU
    /// without `share=on`): the card cannot reach it (interface 1.5).
    pub mem_unshared: bool,
    /// The function is in live-migration mode (interface 1.8,
    /// docs/migration.md): the driver checks its configuration often, so
    /// that on the destination it finds it lost at once.
    pub migrating: bool,
    #[bits(29)]
    __: u32,
}

/// CTRL.
#[bitfield(u32)]
pub struct CtrlReg {
    /// Write 1: reset this function's registers and interrupt state; reads 0.
    pub reset: bool,
    #[bits(31)]
    __: u32,
}

/// IRQ_CAUSE: why the misc vector fired (write 1 to clear).
#[bitfield(u32)]
pub struct IrqCause {
    /// QP_NUM or a vNIC's MAC changed.
    pub config: bool,
    /// STATUS.LINK_UP changed.
    pub link: bool,
    /// The card resumed the function's queues from a VCT entry written by
    /// management (docs/migration.md): the driver re-rings its doorbells.
    pub resumed: bool,
    /// STATUS.MIGRATING changed (interface 1.8).
    pub migration: bool,
    #[bits(28)]
    __: u32,
}

/// ADMIN_CMD: a PF admin mailbox command (docs/management.md).
#[bitfield(u32)]
#[derive(PartialEq, Eq)]
pub struct AdminCmd {
    #[bits(8)]
    pub op: u8,
    #[bits(8)]
    __: u8,
    #[bits(16)]
    pub vf: u16,
}

/// FEATURES: what a queue context's `features` may ask for, all of it
/// (`crate::ring::Features`): the offloads VNET_HDR, CSUM, GSO, MULTI_BUF
/// (bits 0-3) and, from interface 1.7, HEAD_WB (bit 4).
pub const FEATURES_OFFERED: u16 = 0b1_1111;

/// Function statistics: 64-bit read-only counters from this offset, in
/// [`FnStat`] order.
pub const FN_STATS_BASE: u64 = 0x100;

/// Function-wide counters (docs/registers.md).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FnStat {
    TxPackets,
    TxBytes,
    RxPackets,
    RxBytes,
    TxDrops,
    RxDrops,
    SpoofDrops,
    VlanDrops,
    ToUplink,
    QueueErrors,
    MalformedDrops,
    HairpinDrops,
    LinkDrops,
    RxRateDrops,
    TxShaped,
    OffloadDrops,
    TxGso,
    SwSegments,
    SwCsum,
    AddrRefused,
    PromiscRefused,
}

impl FnStat {
    pub const ALL: [FnStat; 21] = [
        FnStat::TxPackets,
        FnStat::TxBytes,
        FnStat::RxPackets,
        FnStat::RxBytes,
        FnStat::TxDrops,
        FnStat::RxDrops,
        FnStat::SpoofDrops,
        FnStat::VlanDrops,
        FnStat::ToUplink,
        FnStat::QueueErrors,
        FnStat::MalformedDrops,
        FnStat::HairpinDrops,
        FnStat::LinkDrops,
        FnStat::RxRateDrops,
        FnStat::TxShaped,
        FnStat::OffloadDrops,
        FnStat::TxGso,
        FnStat::SwSegments,
        FnStat::SwCsum,
        FnStat::AddrRefused,
        FnStat::PromiscRefused,
    ];

    /// Name in statistics (`vnicctl stats`, docs/registers.md).
    pub fn name(self) -> &'static str {
        match self {
            FnStat::TxPackets => "tx_packets",
            FnStat::TxBytes => "tx_bytes",
            FnStat::RxPackets => "rx_packets",
            FnStat::RxBytes => "rx_bytes",
            FnStat::TxDrops => "tx_drops",
            FnStat::RxDrops => "rx_drops",
            FnStat::SpoofDrops => "spoof_drops",
            FnStat::VlanDrops => "vlan_drops",
            FnStat::ToUplink => "to_uplink",
            FnStat::QueueErrors => "queue_errors",
            FnStat::MalformedDrops => "malformed_drops",
            FnStat::HairpinDrops => "hairpin_drops",
            FnStat::LinkDrops => "link_drops",
            FnStat::RxRateDrops => "rx_rate_drops",
            FnStat::TxShaped => "tx_shaped",
            FnStat::OffloadDrops => "offload_drops",
            FnStat::TxGso => "tx_gso",
            FnStat::SwSegments => "sw_segments",
            FnStat::SwCsum => "sw_csum",
            FnStat::AddrRefused => "addr_refused",
            FnStat::PromiscRefused => "promisc_refused",
        }
    }
}

/// Queue pair q's control area is at `QP_AREA_BASE + q * QP_AREA_SIZE`.
pub const QP_AREA_BASE: u64 = 0x1000;
pub const QP_AREA_SIZE: u64 = 0x80;

/// Registers of a queue-pair area (offsets inside the area).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u64)]
pub enum QpReg {
    MacLo = 0x00,
    MacHi = 0x04,
    Ctrl = 0x08,
    Status = 0x0c,
    TxTail = 0x10,
    RxTail = 0x14,
    Irq = 0x18,
    Itr = 0x1c,
    Vlan = 0x20,
    TxHead = 0x24,
    RxHead = 0x28,
    AddrStatus = 0x2c,
    FilterLo = 0x70,
    FilterHi = 0x74,
    RxMode = 0x78,
}

/// One row of the queue-pair register table.
#[derive(Clone, Copy, Debug)]
pub struct QpRegSpec {
    pub reg: QpReg,
    pub name: &'static str,
    pub access: Access,
}

const fn qp_reg(reg: QpReg, name: &'static str, access: Access) -> QpRegSpec {
    QpRegSpec { reg, name, access }
}

/// Every queue-pair register.
pub const QP_REGISTERS: &[QpRegSpec] = &[
    // Writable by a trusted VF only (the function checks).
    qp_reg(QpReg::MacLo, "QP_MAC_LO", Access::ReadWrite),
    qp_reg(QpReg::MacHi, "QP_MAC_HI", Access::ReadWrite),
    qp_reg(QpReg::Ctrl, "QP_CTRL", Access::ReadWrite),
    qp_reg(QpReg::Status, "QP_STATUS", Access::ReadOnly),
    qp_reg(QpReg::TxTail, "QP_TX_TAIL", Access::WriteOnly),
    qp_reg(QpReg::RxTail, "QP_RX_TAIL", Access::WriteOnly),
    qp_reg(QpReg::Irq, "QP_IRQ", Access::WriteOnly),
    qp_reg(QpReg::Itr, "QP_ITR", Access::ReadWrite),
    qp_reg(QpReg::Vlan, "QP_VLAN", Access::WriteOnly),
    qp_reg(QpReg::TxHead, "QP_TX_HEAD", Access::ReadOnly),
    qp_reg(QpReg::RxHead, "QP_RX_HEAD", Access::ReadOnly),
    // Interface 1.5: address filtering (docs/datapath.md).
    qp_reg(QpReg::AddrStatus, "QP_ADDR_STATUS", Access::ReadOnly),
    qp_reg(QpReg::FilterLo, "QP_FILTER_LO", Access::ReadWrite),
    qp_reg(QpReg::FilterHi, "QP_FILTER_HI", Access::ReadWrite),
    qp_reg(QpReg::RxMode, "QP_RX_MODE", Access::ReadWrite),
];

/// Queue statistics: 64-bit read-only counters from this offset inside a
/// queue-pair area, in [`QpStat`] order.
pub const QP_STATS_BASE: u64 = 0x30;
/// The end of the queue statistics; registers again after it.
pub const QP_STATS_END: u64 = QP_STATS_BASE + 8 * QpStat::ALL.len() as u64;

/// Per-queue counters: the send and receive contexts' counters.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum QpStat {
    TxPackets,
    TxBytes,
    TxDrops,
    TxErrors,
    RxPackets,
    RxBytes,
    RxDrops,
    RxErrors,
}

impl QpStat {
    pub const ALL: [QpStat; 8] = [
        QpStat::TxPackets,
        QpStat::TxBytes,
        QpStat::TxDrops,
        QpStat::TxErrors,
        QpStat::RxPackets,
        QpStat::RxBytes,
        QpStat::RxDrops,
        QpStat::RxErrors,
    ];

    /// Name in statistics.
    pub fn name(self) -> &'static str {
        match self {
            QpStat::TxPackets => "tx_packets",
            QpStat::TxBytes => "tx_bytes",
            QpStat::TxDrops => "tx_drops",
            QpStat::TxErrors => "tx_errors",
            QpStat::RxPackets => "rx_packets",
            QpStat::RxBytes => "rx_bytes",
            QpStat::RxDrops => "rx_drops",
            QpStat::RxErrors => "rx_errors",
        }
    }
}

/// What a dword offset of BAR0 addresses. Counters are 64 bits: `high`
/// selects their upper dword.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    Reg(RegSpec),
    FnStat { stat: FnStat, high: bool },
    Qp { qp: u16, reg: QpRegSpec },
    QpStat { qp: u16, stat: QpStat, high: bool },
}

fn counter<T: Copy>(table: &[T], rel: u64) -> Option<(T, bool)> {
    let stat = *table.get((rel / 8) as usize)?;
    Some((stat, rel % 8 == 4))
}

/// Decodes an aligned dword offset of BAR0. None: no register there.
/// Whether a write at BAR0 `offset` is a doorbell: a queue pair's send or
/// receive tail, or its interrupt rearm. Such writes move the data path,
/// not the function's configuration (the state record skips them).
pub fn is_doorbell(offset: u64) -> bool {
    matches!(
        decode(offset),
        Some(Target::Qp { reg, .. }) if matches!(reg.reg, QpReg::TxTail | QpReg::RxTail | QpReg::Irq)
    )
}

pub fn decode(offset: u64) -> Option<Target> {
    if offset < FN_STATS_BASE {
        return Reg::from_offset(offset).map(Target::Reg);
    }
    if offset < QP_AREA_BASE {
        let (stat, high) = counter(&FnStat::ALL, offset - FN_STATS_BASE)?;
        return Some(Target::FnStat { stat, high });
    }
    let qp = u16::try_from((offset - QP_AREA_BASE) / QP_AREA_SIZE).ok()?;
    let rel = (offset - QP_AREA_BASE) % QP_AREA_SIZE;
    if (QP_STATS_BASE..QP_STATS_END).contains(&rel) {
        let (stat, high) = counter(&QpStat::ALL, rel - QP_STATS_BASE)?;
        return Some(Target::QpStat { qp, stat, high });
    }
    let reg = QP_REGISTERS.iter().copied().find(|s| s.reg as u64 == rel)?;
    Some(Target::Qp { qp, reg })
}

/// The low or high dword of a 64-bit counter.
pub fn dword_of(v: u64, high: bool) -> u32 {
    if high {
        (v >> 32) as u32
    } else {
        v as u32
    }
}

/// The accesses register files accept (BAR0 and the MSI-X table/PBA): an
/// aligned dword or an aligned qword.
pub fn dword_or_qword(offset: u64, len: usize) -> bool {
    matches!(len, 4 | 8) && offset % len as u64 == 0
}

/// What the function must do after a register write.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    None,
    /// CTRL.RESET was written.
    Reset,
    /// IRQ_TEST was written with this vector.
    RaiseIrq(u32),
    /// VCT_HI was written: the VCT entry is now this BAT address.
    VctCommit(u64),
    /// ADMIN_CMD was written.
    Admin(AdminCmd),
    /// DB_PAGE was written: whether the driver asks for the BAR page.
    DbPage(bool),
}

/// Why an access was refused (it is then counted and logged by the caller).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RegError {
    #[error("BAR0 access of {len} bytes at {offset:#x} is not an aligned dword or qword")]
    Unaligned { offset: u64, len: usize },
    #[error("no register at BAR0 offset {0:#x}")]
    NoRegister(u64),
    #[error("register at BAR0 offset {0:#x} is read-only")]
    ReadOnly(u64),
    #[error("QP_MAC at BAR0 offset {0:#x} is writable by a trusted VF only")]
    Untrusted(u64),
    #[error("BAR0 offset {0:#x}: the exception queue pair has no MAC or VLANs to write")]
    ExceptionQp(u64),
}

/// Identity the card gives a function; fixed while it is in use.
#[derive(Clone, Copy, Debug)]
pub struct Identity {
    pub func: FuncReg,
    pub qp_max: u32,
    pub qp_num: u32,
    pub mac: [u8; 6],
    pub vectors: u32,
    /// EXC_QP: index of the PF's exception queue pair, 0 if none
    /// (docs/vxlan.md).
    pub exc_qp: u32,
    /// The port's nominal speed in Mb/s (`vnicd --link-speed`), what
    /// LINK_SPEED reads unless the function's TX rate policy is slower
    /// (the function answers that, `Function::link_speed`).
    pub link_speed: u32,
}

/// The BAR0 registers a state record keeps (docs/restart.md): those a
/// driver or the card wrote. The identity registers are the card's and
/// are rebuilt; MAC and QP_NUM follow management's settings.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Bar0Record {
    pub status: u32,
    pub scratch: u32,
    pub irq_test_count: u32,
    pub bad_access: u32,
    pub vct_lo: u32,
    pub vct_hi: u32,
    pub vct_status: u32,
    pub irq_cause: u32,
    pub num_vfs: u32,
    pub admin_status: u32,
    pub admin_args: Vec<u32>,
}

/// BAR0 state of one function.
#[derive(Clone, Debug)]
pub struct Bar0 {
    id: Identity,
    status: StatusReg,
    scratch: u32,
    irq_test_count: u32,
    bad_access: u32,
    vct_lo: u32,
    vct_hi: u32,
    vct_status: u32,
    irq_cause: IrqCause,
    num_vfs: u32,
    admin_status: u32,
    admin_args: [u32; ADMIN_ARGS],
}

impl Bar0 {
    pub fn new(id: Identity) -> Self {
        Bar0 {
            id,
            status: StatusReg::new().with_link_up(true),
            scratch: 0,
            irq_test_count: 0,
            bad_access: 0,
            vct_lo: 0,
            vct_hi: 0,
            vct_status: 0,
            irq_cause: IrqCause::new(),
            num_vfs: 0,
            admin_status: 0,
            admin_args: [0; ADMIN_ARGS],
        }
    }

    /// Back to reset values. The identity, the link and NUM_VFS are the
    /// card's state, not the function's registers, and stay.
    pub fn reset(&mut self) {
        let (status, num_vfs) = (self.status, self.num_vfs);
        *self = Bar0::new(self.id);
        self.status = status;
        self.num_vfs = num_vfs;
    }

    /// The registers a state record keeps.
    pub fn save(&self) -> Bar0Record {
        Bar0Record {
            status: self.status.into_bits(),
            scratch: self.scratch,
            irq_test_count: self.irq_test_count,
            bad_access: self.bad_access,
            vct_lo: self.vct_lo,
            vct_hi: self.vct_hi,
            vct_status: self.vct_status,
            irq_cause: self.irq_cause.into_bits(),
            num_vfs: self.num_vfs,
            admin_status: self.admin_status,
            admin_args: self.admin_args.to_vec(),
        }
    }

    /// Takes a record's registers back, as they were (no write's side
    /// effects). Admin arguments beyond this card's are ignored.
    pub fn restore(&mut self, rec: &Bar0Record) {
        self.status = StatusReg::from_bits(rec.status);
        self.scratch = rec.scratch;
        self.irq_test_count = rec.irq_test_count;
        self.bad_access = rec.bad_access;
        self.vct_lo = rec.vct_lo;
        self.vct_hi = rec.vct_hi;
        self.vct_status = rec.vct_status;
        self.irq_cause = IrqCause::from_bits(rec.irq_cause);
        self.num_vfs = rec.num_vfs;
        self.admin_status = rec.admin_status;
        for (arg, &v) in self.admin_args.iter_mut().zip(&rec.admin_args) {
            *arg = v;
        }
    }

    /// The function's MAC (vNIC 0's), changed by management.
    pub fn set_mac(&mut self, mac: [u8; 6]) {
        self.id.mac = mac;
    }

    /// QP_NUM, changed by management.
    pub fn set_qp_num(&mut self, n: u32) {
        self.id.qp_num = n;
    }

    /// STATUS.LINK_UP; returns whether it changed.
    pub fn set_link_up(&mut self, up: bool) -> bool {
        let changed = self.status.link_up() != up;
        self.status.set_link_up(up);
        changed
    }

    pub fn link_up(&self) -> bool {
        self.status.link_up()
    }

    pub fn set_num_vfs(&mut self, n: u16) {
        self.num_vfs = n.into();
    }

    /// Sets cause bits (before the misc vector fires).
    pub fn raise_cause(&mut self, cause: IrqCause) {
        self.irq_cause = IrqCause::from_bits(self.irq_cause.into_bits() | cause.into_bits());
    }

    pub fn irq_cause(&self) -> IrqCause {
        self.irq_cause
    }

    pub fn admin_args(&self) -> [u32; ADMIN_ARGS] {
        self.admin_args
    }

    /// The result of an admin command: status and result arguments.
    pub fn admin_done(&mut self, status: u32, results: Option<[u32; ADMIN_ARGS]>) {
        self.admin_status = status;
        if let Some(r) = results {
            self.admin_args = r;
        }
    }

    pub fn bad_accesses(&self) -> u32 {
        self.bad_access
    }

    /// Counts a rejected access (BAD_ACCESS saturates rather than wraps).
    pub fn count_bad_access(&mut self) {
        self.bad_access = self.bad_access.saturating_add(1);
    }

    /// The committed VCT entry (BAT address), 0 if none.
    pub fn vct(&self) -> u64 {
        (self.vct_hi as u64) << 32 | self.vct_lo as u64
    }

    /// Sets the VCT entry as the management side would (and as a commit
    /// leaves it).
    pub fn set_vct(&mut self, bat: u64) {
        self.vct_lo = bat as u32;
        self.vct_hi = (bat >> 32) as u32;
    }

    pub fn set_vct_status(&mut self, code: u32) {
        self.vct_status = code;
    }

    pub fn count_test_irq(&mut self) {
        self.irq_test_count = self.irq_test_count.wrapping_add(1);
    }

    pub fn read_reg(&self, reg: Reg) -> u32 {
        let mac = self.id.mac;
        match reg {
            Reg::Id => ID_MAGIC,
            Reg::Version => VersionReg::new()
                .with_major(VERSION_MAJOR)
                .with_minor(VERSION_MINOR)
                .into_bits(),
            Reg::Func => self.id.func.into_bits(),
            Reg::QpMax => self.id.qp_max,
            Reg::QpNum => self.id.qp_num,
            Reg::Status => self.status.into_bits(),
            Reg::Ctrl | Reg::IrqTest => 0,
            Reg::Scratch => self.scratch,
            Reg::MacLo => u32::from_le_bytes([mac[0], mac[1], mac[2], mac[3]]),
            Reg::MacHi => u32::from_le_bytes([mac[4], mac[5], 0, 0]),
            Reg::IrqTestCount => self.irq_test_count,
            Reg::NumVectors => self.id.vectors,
            Reg::BadAccess => self.bad_access,
            Reg::LinkSpeed => self.id.link_speed,
            Reg::VctLo => self.vct_lo,
            Reg::VctHi => self.vct_hi,
            Reg::VctStatus => self.vct_status,
            Reg::IrqCause => self.irq_cause.into_bits(),
            Reg::NumVfs => self.num_vfs,
            Reg::ExcQp => self.id.exc_qp,
            Reg::Features => FEATURES_OFFERED.into(),
            // The function answers from its doorbell slots
            // (crate::doorbell::DoorbellPage::register).
            Reg::DbPage => 0,
            Reg::AdminCmd => 0,
            Reg::AdminStatus => self.admin_status,
            Reg::AdminArg0
            | Reg::AdminArg1
            | Reg::AdminArg2
            | Reg::AdminArg3
            | Reg::AdminArg4
            | Reg::AdminArg5 => self.admin_args[Self::arg_index(reg)],
        }
    }

    pub fn write_reg(&mut self, spec: RegSpec, v: u32) -> Result<Effect, RegError> {
        if spec.access == Access::ReadOnly {
            return Err(RegError::ReadOnly(spec.reg as u64));
        }
        Ok(match spec.reg {
            Reg::Ctrl if CtrlReg::from_bits(v).reset() => Effect::Reset,
            Reg::Scratch => {
                self.scratch = v;
                Effect::None
            }
            Reg::IrqTest => Effect::RaiseIrq(v),
            Reg::VctLo => {
                self.vct_lo = v;
                Effect::None
            }
            Reg::VctHi => {
                self.vct_hi = v;
                Effect::VctCommit(self.vct())
            }
            Reg::IrqCause => {
                self.irq_cause = IrqCause::from_bits(self.irq_cause.into_bits() & !v);
                Effect::None
            }
            Reg::AdminCmd => Effect::Admin(AdminCmd::from_bits(v)),
            Reg::DbPage => {
                // The function decides and updates the register.
                Effect::DbPage(DbPageReg::from_bits(v).enable())
            }
            Reg::AdminArg0
            | Reg::AdminArg1
            | Reg::AdminArg2
            | Reg::AdminArg3
            | Reg::AdminArg4
            | Reg::AdminArg5 => {
                self.admin_args[Self::arg_index(spec.reg)] = v;
                Effect::None
            }
            _ => Effect::None,
        })
    }

    fn arg_index(reg: Reg) -> usize {
        ((reg as u64 - Reg::AdminArg0 as u64) / 4) as usize
    }

    pub fn check(offset: u64, len: usize) -> Result<(), RegError> {
        dword_or_qword(offset, len)
            .then_some(())
            .ok_or(RegError::Unaligned { offset, len })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bar() -> Bar0 {
        Bar0::new(Identity {
            func: FuncReg::new().with_is_vf(true).with_vf_index(3),
            qp_max: 8,
            qp_num: 2,
            mac: [0x02, 0x76, 0x6e, 0x00, 0x04, 0x00],
            vectors: 9,
            exc_qp: 0,
            link_speed: 10_000,
        })
    }

    fn r(b: &Bar0, reg: Reg) -> u32 {
        b.read_reg(reg)
    }

    /// A write of `v` to `reg`, as the function's BAR0 decoding hands it
    /// over (crate::function).
    fn w(b: &mut Bar0, reg: Reg, v: u32) -> Result<Effect, RegError> {
        b.write_reg(Reg::from_offset(reg as u64).expect("a register"), v)
    }

    #[test]
    fn identification_registers_read_back() {
        let mut b = bar();
        assert_eq!(r(&b, Reg::Id), ID_MAGIC);
        assert_eq!(r(&b, Reg::Version), 0x0001_0008);
        assert_eq!(r(&b, Reg::LinkSpeed), 10_000, "the port's nominal speed");
        assert_eq!(r(&b, Reg::Features), 0x1f, "every offload, HEAD_WB");
        assert_eq!(r(&b, Reg::Func), 0x8000_0003);
        assert_eq!(r(&b, Reg::QpMax), 8);
        assert_eq!(r(&b, Reg::QpNum), 2);
        assert_eq!(r(&b, Reg::MacLo), 0x006e_7602);
        assert_eq!(r(&b, Reg::MacHi), 0x0000_0004);
        assert_eq!(r(&b, Reg::NumVectors), 9);
        assert_eq!(r(&b, Reg::Status), 1);
        assert_eq!(r(&b, Reg::ExcQp), 0, "a VF has no exception queue pair");
        assert_eq!(w(&mut b, Reg::ExcQp, 1), Err(RegError::ReadOnly(0x54)));
    }

    #[test]
    fn scratch_is_read_write_and_reset_clears_it() {
        let mut b = bar();
        assert_eq!(w(&mut b, Reg::Scratch, 0xdead_beefu32), Ok(Effect::None));
        assert_eq!(r(&b, Reg::Scratch), 0xdead_beef);
        b.reset();
        assert_eq!(r(&b, Reg::Scratch), 0);
    }

    #[test]
    fn read_only_registers_reject_writes() {
        let mut b = bar();
        assert_eq!(w(&mut b, Reg::Id, 0), Err(RegError::ReadOnly(0)));
        assert_eq!(r(&b, Reg::Id), ID_MAGIC);
    }

    #[test]
    fn irq_test_and_ctrl_reset_produce_effects() {
        let mut b = bar();
        assert_eq!(w(&mut b, Reg::IrqTest, 5u32), Ok(Effect::RaiseIrq(5)));
        assert_eq!(r(&b, Reg::IrqTest), 0, "write-only reads zero");
        assert_eq!(w(&mut b, Reg::Ctrl, 1u32), Ok(Effect::Reset));
        assert_eq!(w(&mut b, Reg::Ctrl, 0u32), Ok(Effect::None));
    }

    #[test]
    fn bad_access_counter_counts() {
        let mut b = bar();
        b.count_bad_access();
        assert_eq!(r(&b, Reg::BadAccess), 1);
    }

    #[test]
    fn decode_finds_counters_and_queue_pair_registers() {
        assert!(matches!(
            decode(0x108),
            Some(Target::FnStat {
                stat: FnStat::TxBytes,
                high: false
            })
        ));
        assert!(matches!(
            decode(0x14c),
            Some(Target::FnStat {
                stat: FnStat::QueueErrors,
                high: true
            })
        ));
        assert!(matches!(
            decode(0x190),
            Some(Target::FnStat {
                stat: FnStat::SwCsum,
                high: false
            })
        ));
        assert!(decode(0x1a8).is_none(), "past the last function counter");
        let Some(Target::Qp { qp, reg }) = decode(0x1000 + 3 * 0x80 + 0x10) else {
            panic!("queue pair 3 TX_TAIL");
        };
        assert_eq!((qp, reg.reg), (3, QpReg::TxTail));
        assert!(matches!(
            decode(0x1000 + 0x80 + 0x6c),
            Some(Target::QpStat {
                qp: 1,
                stat: QpStat::RxErrors,
                high: true
            })
        ));
        // Interface 1.5's registers around the queue counters.
        for (rel, want) in [
            (0x2c, QpReg::AddrStatus),
            (0x70, QpReg::FilterLo),
            (0x74, QpReg::FilterHi),
            (0x78, QpReg::RxMode),
        ] {
            let Some(Target::Qp { qp: 1, reg }) = decode(0x1000 + 0x80 + rel) else {
                panic!("queue pair 1 register at {rel:#x}");
            };
            assert_eq!(reg.reg, want);
        }
        assert!(decode(0x1000 + 0x7c).is_none(), "no register at +0x7c");
        assert!(decode(0x800).is_none());
    }

    #[test]
    fn vct_hi_write_commits_the_entry() {
        let mut b = bar();
        assert_eq!(w(&mut b, Reg::VctLo, 0x1000u32), Ok(Effect::None));
        assert_eq!(
            w(&mut b, Reg::VctHi, 2u32),
            Ok(Effect::VctCommit(0x2_0000_1000))
        );
        let vct = u64::from(r(&b, Reg::VctHi)) << 32 | u64::from(r(&b, Reg::VctLo));
        assert_eq!(vct, 0x2_0000_1000);
    }

    #[test]
    fn irq_cause_is_write_one_to_clear() {
        let mut b = bar();
        b.raise_cause(IrqCause::new().with_config(true).with_link(true));
        assert_eq!(r(&b, Reg::IrqCause), 3);
        w(&mut b, Reg::IrqCause, 1u32).unwrap();
        assert_eq!(r(&b, Reg::IrqCause), 2);
        w(&mut b, Reg::IrqCause, 0u32).unwrap();
        assert_eq!(r(&b, Reg::IrqCause), 2, "zeros leave bits alone");
    }

    #[test]
    fn admin_cmd_write_is_an_effect_and_args_read_back() {
        let mut b = bar();
        w(&mut b, Reg::AdminArg2, 7u32).unwrap();
        assert_eq!(r(&b, Reg::AdminArg2), 7);
        let cmd = AdminCmd::new().with_op(3).with_vf(2);
        assert_eq!(
            w(&mut b, Reg::AdminCmd, cmd.into_bits()),
            Ok(Effect::Admin(cmd))
        );
        b.admin_done(22, None);
        assert_eq!(r(&b, Reg::AdminStatus), 22);
        assert_eq!(r(&b, Reg::AdminArg2), 7);
    }

    #[test]
    fn register_table_has_unique_aligned_offsets() {
        for (i, a) in REGISTERS.iter().enumerate() {
            assert_eq!(a.reg as u64 % 4, 0);
            for b in &REGISTERS[i + 1..] {
                assert_ne!(a.reg as u64, b.reg as u64, "{} and {}", a.name, b.name);
            }
        }
    }
}
