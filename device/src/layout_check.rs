//! The guest driver's copies of the card's definitions must match the
//! card's, and these tests read the C headers to check them:
//!
//! - the wire structures (guest-driver/vnic_desc.h), byte for byte: the C
//!   header asserts every size and field offset at compile time; the test
//!   reads those assertions and checks each one against the Rust layout;
//! - the register interface (guest-driver/vnic_regs.h): every offset it
//!   defines against the register tables of `crate::regs` and the doorbell
//!   page of `crate::doorbell`.

use std::collections::HashMap;
use std::mem::{offset_of, size_of};

use crate::doorbell::{self, Word};
use crate::regs::{
    FnStat, QpReg, QpStat, Reg, ADMIN_ARGS, BAR0_SIZE, FN_STATS_BASE, ID_MAGIC, QP_AREA_BASE,
    QP_AREA_SIZE, QP_REGISTERS, QP_STATS_BASE, REGISTERS, VERSION_MAJOR,
};
use crate::ring::Desc;
use crate::state::{BatEntry, BatHeader, QueueContext};

/// (C struct, C field or "" for sizeof) → the Rust value.
fn rust_layout(strukt: &str, field: &str) -> Option<usize> {
    Some(match (strukt, field) {
        ("vnic_tx_desc" | "vnic_rx_desc", "") => size_of::<Desc>(),
        ("vnic_tx_desc" | "vnic_rx_desc", "addr") => offset_of!(Desc, addr),
        ("vnic_tx_desc", "len") | ("vnic_rx_desc", "buf_len") => offset_of!(Desc, len),
        ("vnic_tx_desc", "flags") | ("vnic_rx_desc", "len") => offset_of!(Desc, word),
        ("vnic_tx_desc" | "vnic_rx_desc", "status") => offset_of!(Desc, status),
        ("vnic_tx_desc" | "vnic_rx_desc", "reserved") => offset_of!(Desc, reserved),
        ("vnic_queue_ctx", "") => size_of::<QueueContext>(),
        ("vnic_queue_ctx", "ring") => offset_of!(QueueContext, ring),
        ("vnic_queue_ctx", "size") => offset_of!(QueueContext, size),
        ("vnic_queue_ctx", "state") => offset_of!(QueueContext, state),
        ("vnic_queue_ctx", "head") => offset_of!(QueueContext, head),
        ("vnic_queue_ctx", "tail") => offset_of!(QueueContext, tail),
        ("vnic_queue_ctx", "error") => offset_of!(QueueContext, error),
        ("vnic_queue_ctx", "reserved0") => offset_of!(QueueContext, reserved0),
        ("vnic_queue_ctx", "features") => offset_of!(QueueContext, features),
        ("vnic_queue_ctx", "max_frame") => offset_of!(QueueContext, max_frame),
        ("vnic_queue_ctx", "reserved2") => offset_of!(QueueContext, reserved2),
        ("vnic_queue_ctx", "packets") => offset_of!(QueueContext, packets),
        ("vnic_queue_ctx", "bytes") => offset_of!(QueueContext, bytes),
        ("vnic_queue_ctx", "drops") => offset_of!(QueueContext, drops),
        ("vnic_queue_ctx", "errors") => offset_of!(QueueContext, errors),
        ("vnic_queue_ctx", "reserved1") => offset_of!(QueueContext, reserved1),
        ("vnic_bat_hdr", "") => size_of::<BatHeader>(),
        ("vnic_bat_hdr", "magic") => offset_of!(BatHeader, magic),
        ("vnic_bat_hdr", "types") => offset_of!(BatHeader, types),
        ("vnic_bat_hdr", "doorbells") => offset_of!(BatHeader, doorbells),
        ("vnic_bat_entry", "") => size_of::<BatEntry>(),
        ("vnic_bat_entry", "clat") => offset_of!(BatEntry, clat),
        ("vnic_bat_entry", "entry_size") => offset_of!(BatEntry, entry_size),
        ("vnic_bat_entry", "block_size") => offset_of!(BatEntry, block_size),
        ("vnic_bat_entry", "levels") => offset_of!(BatEntry, levels),
        ("vnic_bat_entry", "services") => offset_of!(BatEntry, services),
        ("vnic_bat_entry", "reserved") => offset_of!(BatEntry, reserved),
        ("vnic_bat", "entry[1]") => {
            (crate::state::BAT_HEADER_SIZE + crate::state::BAT_ENTRY_SIZE) as usize
        }
        _ => return None,
    })
}

/// Parses `static_assert(sizeof(struct S) == N);` and
/// `static_assert(offsetof(struct S, f) == N);` (N may be a sum).
fn parse(line: &str) -> Option<(String, String, usize)> {
    let inner = line
        .trim()
        .strip_prefix("static_assert(")?
        .strip_suffix(");")?;
    let (lhs, rhs) = inner.split_once("==")?;
    let value = rhs
        .split('+')
        .map(|t| t.trim().parse::<usize>().ok())
        .sum::<Option<usize>>()?;
    let lhs = lhs.trim();
    if let Some(s) = lhs.strip_prefix("sizeof(struct ") {
        return Some((s.strip_suffix(')')?.to_string(), String::new(), value));
    }
    let args = lhs.strip_prefix("offsetof(struct ")?.strip_suffix(')')?;
    let (s, f) = args.split_once(',')?;
    Some((s.trim().to_string(), f.trim().to_string(), value))
}

#[test]
fn driver_header_layouts_match_the_card() {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-driver/vnic_desc.h");
    let header = std::fs::read_to_string(path).expect("guest-driver/vnic_desc.h");
    let mut checked = 0;
    for line in header.lines().filter(|l| l.starts_with("static_assert(")) {
        let (s, f, c_value) = parse(line).unwrap_or_else(|| panic!("cannot parse {line}"));
        let rust = rust_layout(&s, &f).unwrap_or_else(|| panic!("no Rust twin for {line}"));
        assert_eq!(rust, c_value, "{line}");
        checked += 1;
    }
    assert!(checked >= 30, "only {checked} assertions found");
}

/// One `#define` of a C header: its name, its parameters if it is
/// function-like, and its body without comments.
struct Define {
    name: String,
    params: Option<Vec<String>>,
    body: String,
}

/// The `#define`s of a header, continuation lines joined.
fn defines(header: &str) -> Vec<Define> {
    let mut out = Vec::new();
    let mut lines = header.lines();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix("#define ") else {
            continue;
        };
        let mut text = rest.trim_start().to_string();
        while text.ends_with('\\') {
            text.pop();
            text.push(' ');
            text.push_str(lines.next().unwrap_or_default());
        }
        while let Some(start) = text.find("/*") {
            let end = text[start..]
                .find("*/")
                .map_or(text.len(), |e| start + e + 2);
            text.replace_range(start..end, "");
        }
        let name_end = text
            .find(|c: char| c.is_whitespace() || c == '(')
            .unwrap_or(text.len());
        let (name, rest) = text.split_at(name_end);
        let (params, body) = match rest.strip_prefix('(') {
            Some(r) => {
                let (p, body) = r.split_once(')').expect("parameter list");
                let params = p.split(',').map(|s| s.trim().to_string()).collect();
                (Some(params), body)
            }
            None => (None, rest),
        };
        out.push(Define {
            name: name.to_string(),
            params,
            body: body.trim().to_string(),
        });
    }
    out
}

/// Evaluates a define's body made of integers, names, `+`, `*` and
/// parentheses: names are the arguments, then the header's object-like
/// defines. None for anything else.
fn eval(expr: &str, args: &HashMap<&str, u64>, defs: &Defs) -> Option<u64> {
    let mut tokens = Vec::new();
    let mut rest = expr.trim_start();
    while let Some(c) = rest.chars().next() {
        let len = if c.is_ascii_alphanumeric() || c == '_' {
            rest.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len())
        } else {
            1
        };
        tokens.push(&rest[..len]);
        rest = rest[len..].trim_start();
    }
    let mut e = Expr {
        tokens,
        pos: 0,
        args,
        defs,
    };
    let v = e.sum()?;
    (e.pos == e.tokens.len()).then_some(v)
}

type Defs<'a> = HashMap<&'a str, &'a Define>;

/// A recursive-descent evaluation in progress.
struct Expr<'a> {
    tokens: Vec<&'a str>,
    pos: usize,
    args: &'a HashMap<&'a str, u64>,
    defs: &'a Defs<'a>,
}

impl Expr<'_> {
    fn eat(&mut self, tok: &str) -> bool {
        let found = self.tokens.get(self.pos) == Some(&tok);
        self.pos += usize::from(found);
        found
    }

    fn sum(&mut self) -> Option<u64> {
        let mut v = self.product()?;
        while self.eat("+") {
            v = v.checked_add(self.product()?)?;
        }
        Some(v)
    }

    fn product(&mut self) -> Option<u64> {
        let mut v = self.atom()?;
        while self.eat("*") {
            v = v.checked_mul(self.atom()?)?;
        }
        Some(v)
    }

    fn atom(&mut self) -> Option<u64> {
        if self.eat("(") {
            let v = self.sum()?;
            return self.eat(")").then_some(v);
        }
        let tok = *self.tokens.get(self.pos)?;
        self.pos += 1;
        if let Some(hex) = tok.strip_prefix("0x") {
            return u64::from_str_radix(hex, 16).ok();
        }
        if let Ok(n) = tok.parse() {
            return Some(n);
        }
        if let Some(&v) = self.args.get(tok) {
            return Some(v);
        }
        let d = self.defs.get(tok).filter(|d| d.params.is_none())?;
        eval(&d.body, &HashMap::new(), self.defs)
    }
}

/// What a define of vnic_regs.h mirrors on the card.
enum Twin {
    /// The card's value: the define must evaluate to it.
    Card(u64),
    /// A function-like define: (arguments, the card's value) pairs.
    Formula(Vec<(Vec<u64>, u64)>),
    /// Not an offset: left unchecked, for the reason given.
    NotChecked(&'static str),
}

fn fn_stat(s: FnStat) -> Twin {
    let i = FnStat::ALL.iter().position(|&x| x == s).expect("in ALL");
    Twin::Card(FN_STATS_BASE + 8 * i as u64)
}

fn qp_stat(s: QpStat) -> Twin {
    let i = QpStat::ALL.iter().position(|&x| x == s).expect("in ALL");
    Twin::Card(QP_STATS_BASE + 8 * i as u64)
}

/// vnic_regs.h's define → what it mirrors. Bit masks (`BIT()`,
/// `GENMASK()`) are not offsets and are not asked about.
fn register_twin(name: &str) -> Option<Twin> {
    use Twin::{Card, Formula, NotChecked};
    let reg = |r: Reg| Card(r as u64);
    let qp = |r: QpReg| Card(r as u64);
    const PCI: &str = "PCI identity, in configuration space (function.rs)";
    const VERSION: &str = "the interface version that brought a feature";
    const VCT: &str = "a VCT_STATUS code (StateError::vct_code)";
    const ADMIN: &str = "an ADMIN_CMD operation (control::admin::AdminOp)";
    Some(match name {
        "PCI_VENDOR_ID_VNIC"
        | "PCI_DEVICE_ID_VNIC_PF"
        | "PCI_DEVICE_ID_VNIC_VF"
        | "VNIC_SUBSYS_VENDOR_ID"
        | "VNIC_SUBSYS_ID" => NotChecked(PCI),
        "VNIC_BAR_REGS" | "VNIC_BAR_MSIX" => NotChecked("a BAR number"),
        "VNIC_BAR_REGS_LEN" => Card(BAR0_SIZE),
        "VNIC_MAX_VECTORS" => NotChecked("the PCI spec's MSI-X table limit"),
        "VNIC_MISC_VECTOR" | "VNIC_QP_VECTOR" => NotChecked("an MSI-X vector number"),
        "VNIC_REG_ID" => reg(Reg::Id),
        "VNIC_ID_MAGIC" => Card(ID_MAGIC.into()),
        "VNIC_REG_VERSION" => reg(Reg::Version),
        "VNIC_VERSION_MAJOR" | "VNIC_VERSION_MINOR" => NotChecked("a field of VERSION"),
        "VNIC_VERSION_MAJOR_SUPPORTED" => Card(VERSION_MAJOR.into()),
        "VNIC_VERSION_MINOR_OFFLOADS"
        | "VNIC_VERSION_MINOR_DB_PAGE"
        | "VNIC_VERSION_MINOR_TX_USECS"
        | "VNIC_VERSION_MINOR_GUEST_DB"
        | "VNIC_VERSION_MINOR_RX_FILTER"
        | "VNIC_VERSION_MINOR_LINK_SPEED"
        | "VNIC_VERSION_MINOR_HEAD_WB"
        | "VNIC_VERSION_MINOR_MIGRATING" => NotChecked(VERSION),
        "VNIC_REG_FUNC" => reg(Reg::Func),
        "VNIC_REG_QP_MAX" => reg(Reg::QpMax),
        "VNIC_REG_QP_NUM" => reg(Reg::QpNum),
        "VNIC_REG_STATUS" => reg(Reg::Status),
        "VNIC_REG_CTRL" => reg(Reg::Ctrl),
        "VNIC_REG_SCRATCH" => reg(Reg::Scratch),
        "VNIC_REG_MAC_LO" => reg(Reg::MacLo),
        "VNIC_REG_MAC_HI" => reg(Reg::MacHi),
        "VNIC_REG_IRQ_TEST" => reg(Reg::IrqTest),
        "VNIC_REG_IRQ_TEST_COUNT" => reg(Reg::IrqTestCount),
        "VNIC_REG_NUM_VECTORS" => reg(Reg::NumVectors),
        "VNIC_REG_BAD_ACCESS" => reg(Reg::BadAccess),
        "VNIC_REG_LINK_SPEED" => reg(Reg::LinkSpeed),
        "VNIC_REG_VCT_LO" => reg(Reg::VctLo),
        "VNIC_REG_VCT_HI" => reg(Reg::VctHi),
        "VNIC_REG_VCT_STATUS" => reg(Reg::VctStatus),
        "VNIC_VCT_OK" | "VNIC_VCT_ERR_UNREADABLE" | "VNIC_VCT_ERR_MAGIC" | "VNIC_VCT_ERR_TYPE" => {
            NotChecked(VCT)
        }
        "VNIC_REG_IRQ_CAUSE" => reg(Reg::IrqCause),
        "VNIC_REG_NUM_VFS" => reg(Reg::NumVfs),
        "VNIC_REG_EXC_QP" => reg(Reg::ExcQp),
        "VNIC_REG_FEATURES" => reg(Reg::Features),
        "VNIC_REG_DB_PAGE" => reg(Reg::DbPage),
        "VNIC_DB_PAGE_OFFSET" => Card(doorbell::PAGE_OFFSET),
        "VNIC_DB_PAGE_LEN" => Card(doorbell::PAGE_SIZE),
        "VNIC_DB_SLOT" => Formula(
            [0, 1, 2, 255]
                .map(|q| (vec![q], doorbell::PAGE_OFFSET + q * doorbell::SLOT_SIZE))
                .to_vec(),
        ),
        "VNIC_DB_TX_TAIL" => Card(Word::TxTail as u64),
        "VNIC_DB_RX_TAIL" => Card(Word::RxTail as u64),
        "VNIC_DB_IRQ_SEQ" => Card(Word::IrqSeq as u64),
        "VNIC_DB_WATCH" => Card(Word::Watch as u64),
        "VNIC_DB_WATCHING" => Card(doorbell::WATCHING.into()),
        "VNIC_REG_ADMIN_CMD" => reg(Reg::AdminCmd),
        "VNIC_REG_ADMIN_STATUS" => reg(Reg::AdminStatus),
        "VNIC_REG_ADMIN_ARG0" => reg(Reg::AdminArg0),
        "VNIC_REG_ADMIN_ARG1" => reg(Reg::AdminArg1),
        "VNIC_REG_ADMIN_ARG2" => reg(Reg::AdminArg2),
        "VNIC_REG_ADMIN_ARG3" => reg(Reg::AdminArg3),
        "VNIC_REG_ADMIN_ARG4" => reg(Reg::AdminArg4),
        "VNIC_REG_ADMIN_ARG5" => reg(Reg::AdminArg5),
        "VNIC_REG_ADMIN_ARG" => Formula(
            [
                Reg::AdminArg0,
                Reg::AdminArg1,
                Reg::AdminArg2,
                Reg::AdminArg3,
                Reg::AdminArg4,
                Reg::AdminArg5,
            ]
            .iter()
            .zip(0..)
            .map(|(&r, i)| (vec![i], r as u64))
            .collect(),
        ),
        "VNIC_ADMIN_NUM_ARGS" => Card(ADMIN_ARGS as u64),
        "VNIC_ADMIN_OP_SET_MAC"
        | "VNIC_ADMIN_OP_SET_VLAN"
        | "VNIC_ADMIN_OP_SET_RATE"
        | "VNIC_ADMIN_OP_SET_SPOOFCHK"
        | "VNIC_ADMIN_OP_SET_TRUST"
        | "VNIC_ADMIN_OP_SET_LINK"
        | "VNIC_ADMIN_OP_GET_CONFIG" => NotChecked(ADMIN),
        // The end of the last register below the counters.
        "VNIC_REGS_MIN_LEN" => Card(REGISTERS.iter().map(|s| s.reg as u64 + 4).max()?),
        "VNIC_REG_FN_TX_PACKETS" => fn_stat(FnStat::TxPackets),
        "VNIC_REG_FN_TX_BYTES" => fn_stat(FnStat::TxBytes),
        "VNIC_REG_FN_RX_PACKETS" => fn_stat(FnStat::RxPackets),
        "VNIC_REG_FN_RX_BYTES" => fn_stat(FnStat::RxBytes),
        "VNIC_REG_FN_TX_DROPS" => fn_stat(FnStat::TxDrops),
        "VNIC_REG_FN_RX_DROPS" => fn_stat(FnStat::RxDrops),
        "VNIC_REG_FN_SPOOF_DROPS" => fn_stat(FnStat::SpoofDrops),
        "VNIC_REG_FN_VLAN_DROPS" => fn_stat(FnStat::VlanDrops),
        "VNIC_REG_FN_TO_UPLINK" => fn_stat(FnStat::ToUplink),
        "VNIC_REG_FN_QUEUE_ERRORS" => fn_stat(FnStat::QueueErrors),
        "VNIC_REG_FN_OFFLOAD_DROPS" => fn_stat(FnStat::OffloadDrops),
        "VNIC_REG_FN_TX_GSO" => fn_stat(FnStat::TxGso),
        "VNIC_REG_FN_SW_SEGMENTS" => fn_stat(FnStat::SwSegments),
        "VNIC_REG_FN_SW_CSUM" => fn_stat(FnStat::SwCsum),
        "VNIC_REG_FN_ADDR_REFUSED" => fn_stat(FnStat::AddrRefused),
        "VNIC_REG_FN_PROMISC_REFUSED" => fn_stat(FnStat::PromiscRefused),
        "VNIC_QP_AREA_BASE" => Card(QP_AREA_BASE),
        "VNIC_QP_AREA_STRIDE" => Card(QP_AREA_SIZE),
        "VNIC_QP_REG" => Formula(
            [(0, QpReg::MacLo), (3, QpReg::Itr), (255, QpReg::RxHead)]
                .map(|(q, r)| {
                    let r = r as u64;
                    (vec![q, r], QP_AREA_BASE + q * QP_AREA_SIZE + r)
                })
                .to_vec(),
        ),
        "VNIC_QP_MAC_LO" => qp(QpReg::MacLo),
        "VNIC_QP_MAC_HI" => qp(QpReg::MacHi),
        "VNIC_QP_CTRL" => qp(QpReg::Ctrl),
        "VNIC_QP_STATUS" => qp(QpReg::Status),
        "VNIC_QP_TX_TAIL" => qp(QpReg::TxTail),
        "VNIC_QP_RX_TAIL" => qp(QpReg::RxTail),
        "VNIC_QP_IRQ" => qp(QpReg::Irq),
        "VNIC_QP_ITR" => qp(QpReg::Itr),
        "VNIC_QP_ITR_DEFAULT" => NotChecked("QP_ITR's reset value (queue::DEFAULT_ITR_US)"),
        "VNIC_QP_VLAN" => qp(QpReg::Vlan),
        "VNIC_QP_MAX_VLANS" => NotChecked("a limit (switch::MAX_VLANS_PER_PORT)"),
        "VNIC_QP_TX_HEAD" => qp(QpReg::TxHead),
        "VNIC_QP_RX_HEAD" => qp(QpReg::RxHead),
        "VNIC_QP_ADDR_STATUS" => qp(QpReg::AddrStatus),
        "VNIC_QP_FILTER_LO" => qp(QpReg::FilterLo),
        "VNIC_QP_FILTER_HI" => qp(QpReg::FilterHi),
        "VNIC_QP_RX_MODE" => qp(QpReg::RxMode),
        "VNIC_FILTER_MAX_ADDRS" => Card(crate::model::MAX_FILTER_ADDRS as u64),
        "VNIC_FILTER_ENTRY_LEN" => Card(crate::queue::FILTER_ENTRY_BYTES as u64),
        "VNIC_QP_TX_PACKETS" => qp_stat(QpStat::TxPackets),
        "VNIC_QP_TX_BYTES" => qp_stat(QpStat::TxBytes),
        "VNIC_QP_TX_DROPS" => qp_stat(QpStat::TxDrops),
        "VNIC_QP_TX_ERRORS" => qp_stat(QpStat::TxErrors),
        "VNIC_QP_RX_PACKETS" => qp_stat(QpStat::RxPackets),
        "VNIC_QP_RX_BYTES" => qp_stat(QpStat::RxBytes),
        "VNIC_QP_RX_DROPS" => qp_stat(QpStat::RxDrops),
        "VNIC_QP_RX_ERRORS" => qp_stat(QpStat::RxErrors),
        _ => return None,
    })
}

fn regs_header() -> String {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-driver/vnic_regs.h");
    std::fs::read_to_string(path).expect("guest-driver/vnic_regs.h")
}

fn is_mask(d: &Define) -> bool {
    d.body.contains("BIT(") || d.body.contains("GENMASK(")
}

#[test]
fn driver_register_offsets_match_the_card() {
    let header = regs_header();
    let all = defines(&header);
    let defs: Defs = all.iter().map(|d| (d.name.as_str(), d)).collect();
    let mut checked = 0;
    for d in all.iter().filter(|d| !d.body.is_empty() && !is_mask(d)) {
        let name = &d.name;
        let twin = register_twin(name).unwrap_or_else(|| {
            panic!("vnic_regs.h: {name} has no twin on the card listed in register_twin()")
        });
        let cases = match (twin, &d.params) {
            (Twin::NotChecked(why), _) => {
                println!("{name}: not an offset, not checked: {why}");
                continue;
            }
            (Twin::Card(v), None) => vec![(vec![], v)],
            (Twin::Formula(cases), Some(_)) => cases,
            _ => panic!("{name}: object-like and function-like defines mix up"),
        };
        let params = d.params.clone().unwrap_or_default();
        for (args, card) in cases {
            let env: HashMap<&str, u64> = params
                .iter()
                .map(String::as_str)
                .zip(args.iter().copied())
                .collect();
            let c = eval(&d.body, &env, &defs)
                .unwrap_or_else(|| panic!("{name}: cannot evaluate {}", d.body));
            assert_eq!(
                c, card,
                "{name}{args:?}: the driver's {c:#x}, the card's {card:#x}"
            );
            checked += 1;
        }
    }
    assert!(checked >= 80, "only {checked} values checked");
}

#[test]
fn every_card_register_has_its_driver_define() {
    let header = regs_header();
    let all = defines(&header);
    let defs: Defs = all.iter().map(|d| (d.name.as_str(), d)).collect();
    let value = |name: &str| {
        let d = defs
            .get(name)
            .unwrap_or_else(|| panic!("vnic_regs.h has no {name}"));
        eval(&d.body, &HashMap::new(), &defs)
    };
    for s in REGISTERS {
        assert_eq!(
            value(&format!("VNIC_REG_{}", s.name)),
            Some(s.reg as u64),
            "{}",
            s.name
        );
    }
    for s in QP_REGISTERS {
        assert_eq!(
            value(&format!("VNIC_{}", s.name)),
            Some(s.reg as u64),
            "{}",
            s.name
        );
    }
}
