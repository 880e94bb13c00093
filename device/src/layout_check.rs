//! The guest driver's copies of the wire structures
//! (guest-driver/vnic_desc.h) must match the card's byte for byte. The C
//! header asserts every size and field offset at compile time; this test
//! reads those assertions and checks each one against the Rust layout.

use std::mem::{offset_of, size_of};

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
