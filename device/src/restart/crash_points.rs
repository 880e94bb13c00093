//! Crash consistency of the data path (docs/restart.md, "Crash
//! consistency"): a card worker killed at every point of a batch, and a
//! new worker restored from the state record over the same guest memory.
//!
//! A batch: VF0's driver queues frames for VF1 and rings its send doorbell;
//! the card switches them into VF1's receive buffers, writes the
//! descriptors back, the contexts, and fires the interrupts. The test
//! counts the card's writes into guest memory in that batch, then for
//! every N from 0 to that count runs the batch again from the start with
//! the card dying after its Nth write (`dma::crash`: later writes are
//! dropped), lets a guest look at memory as the dead card left it, builds
//! a new card from the record written before the batch (the last one a
//! worker writes is at the end of the turn before), lets the driver ring
//! its doorbell again (a register doorbell carries the absolute tail) and
//! runs until quiet; the guest looks again. What a guest saw must hold:
//!
//! 1. no receive buffer changes after the guest took it as complete, and
//!    none holds a frame nobody sent (the guest reuses a send buffer once
//!    it saw it complete, as a driver frees the skb: a card that sends it
//!    again sends garbage);
//! 2. no completion is seen twice (each receive slot taken once, in order);
//! 3. no send descriptor is seen complete whose frame never arrived;
//!
//! and in the end every frame arrived and every send completed.
//!
//! The guest takes completions as a HEAD_WB driver does: up to the head in
//! the queue's context. A driver that took them from DONE bits alone
//! breaks the invariants at some crash point (checked too): that is why
//! vnic.ko uses HEAD_WB on a card that offers it.

use crate::card::Card;
use crate::dma::crash;
use crate::function::FunctionRecord;
use crate::state::ServiceType;
use crate::test_utils::guest::{card, eth, mac, qp_reg, rd, wr, Vm, RING};

/// Frames in the batch.
const FRAMES: usize = 5;
const SENDER: usize = 1;
const RECEIVER: usize = 2;

/// How the guest takes completions.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Driver {
    /// Up to the context's head (VNIC_FEAT_HEAD_WB).
    HeadWb,
    /// Descriptors with DONE, in order (before interface 1.7).
    DoneBits,
}

/// What the guest took so far, and what it broke.
struct Guest {
    driver: Driver,
    /// Receive slots taken, with the bytes they held then.
    taken: Vec<(u16, Vec<u8>)>,
    /// Send descriptors taken as complete.
    sent: u16,
    violations: Vec<String>,
}

impl Guest {
    fn new(driver: Driver) -> Self {
        Guest {
            driver,
            taken: Vec::new(),
            sent: 0,
            violations: Vec::new(),
        }
    }

    /// Takes the completions visible now, as the driver's NAPI poll would.
    fn poll(&mut self, a: &Vm, b: &Vm) {
        let rx_ring = b.rings[0].1;
        let rx_ctx = b.tables.context(ServiceType::ReceiveQueue, 0);
        let next = self.taken.len() as u16;
        let limit = match self.driver {
            Driver::HeadWb => b.drv.read_u16(rx_ctx + 12),
            Driver::DoneBits => (next..RING)
                .find(|&i| b.drv.status(rx_ring, i) & 1 == 0)
                .unwrap_or(RING),
        };
        if limit < next {
            self.violations
                .push(format!("receive head went back from {next} to {limit}"));
        }
        for i in next..limit {
            self.taken.push((i, b.drv.rx_frame(rx_ring, i)));
        }
        let tx_ring = a.rings[0].0;
        let tx_ctx = a.tables.context(ServiceType::SendQueue, 0);
        let sent = match self.driver {
            Driver::HeadWb => a.drv.read_u16(tx_ctx + 12),
            Driver::DoneBits => (self.sent..RING)
                .find(|&i| a.drv.status(tx_ring, i) & 1 == 0)
                .unwrap_or(RING),
        };
        if sent < self.sent {
            self.violations
                .push(format!("send head went back from {} to {sent}", self.sent));
        }
        // A completed send's buffer is the stack's again, and reused: a
        // card that sends it again sends something else (the addresses
        // kept, so that the switch still delivers it).
        for j in self.sent..sent {
            let at = tx_ring + u64::from(j) * 16;
            let (addr, len) = (a.drv.read_u64(at), a.drv.read_u16(at + 8));
            let payload = usize::from(len).saturating_sub(14);
            a.drv.dma().write(addr + 14, &vec![0xee; payload]).unwrap();
        }
        self.sent = self.sent.max(sent);
    }

    /// Invariants 1 and 3 against memory now; `frames` are what was sent.
    fn check(&mut self, b: &Vm, frames: &[Vec<u8>]) {
        let rx_ring = b.rings[0].1;
        for (i, bytes) in &self.taken {
            if b.drv.rx_frame(rx_ring, *i) != *bytes {
                self.violations
                    .push(format!("receive slot {i} changed after the guest took it"));
            }
        }
        for (i, bytes) in &self.taken {
            if !frames.contains(bytes) {
                self.violations
                    .push(format!("receive slot {i} holds a frame nobody sent"));
            }
        }
        for (j, f) in frames.iter().enumerate().take(usize::from(self.sent)) {
            if !self.taken.iter().any(|(_, bytes)| bytes == f) {
                self.violations.push(format!(
                    "send descriptor {j} complete, its frame never arrived"
                ));
            }
        }
    }
}

/// Two guests, VF0 sending to VF1 (8 buffers posted); the records of both
/// functions as a worker wrote them after the last turn.
fn setup() -> (Card, Vm, Vm, FunctionRecord, FunctionRecord, Vec<Vec<u8>>) {
    let mut c = card();
    let a = Vm::attach(&mut c, SENDER, 0);
    let b = Vm::attach(&mut c, RECEIVER, 8);
    let frames = (0..FRAMES)
        .map(|i| {
            let mut f = eth(mac(&c, RECEIVER, 0), mac(&c, SENDER, 0), None, 60 + i);
            f[14] = i as u8;
            f
        })
        .collect();
    let ra = c.record_function(SENDER).expect("record");
    let rb = c.record_function(RECEIVER).expect("record");
    (c, a, b, ra, rb, frames)
}

/// The batch: the driver queues `frames` (its own writes), then the card
/// takes the doorbell, with `budget` writes before it dies (None: all).
/// Returns the card's writes.
fn batch(c: &mut Card, a: &mut Vm, frames: &[Vec<u8>], budget: Option<u64>) -> u64 {
    let tx = a.rings[0].0;
    a.tx_tail[0] = a.drv.queue_tx(tx, RING, a.tx_tail[0], frames);
    crash::reset();
    if let Some(n) = budget {
        crash::arm(n);
    }
    wr(c, SENDER, qp_reg(0, 0x10), u32::from(a.tx_tail[0]));
    crash::disarm();
    crash::seen()
}

/// A new worker over the same memory, from the records.
fn restart(a: &Vm, b: &Vm, ra: &FunctionRecord, rb: &FunctionRecord) -> Card {
    let mut c = card();
    for (f, vm, rec) in [(SENDER, a, ra), (RECEIVER, b, rb)] {
        let (_, _, file) = vm.drv.memory();
        c.restore_function(f, rec, vec![file], Vec::new())
            .expect("restore");
        assert_eq!(rd(&mut c, f, qp_reg(0, 0x0c)) & 3, 3, "resumed");
    }
    c
}

/// The whole batch at every crash point with `driver`; the violations
/// found, by crash point.
fn every_crash_point(driver: Driver) -> Vec<(u64, Vec<String>)> {
    let (mut c, mut a, _b, _, _, frames) = setup();
    let writes = batch(&mut c, &mut a, &frames, None);
    assert!(writes > 2 * FRAMES as u64, "{writes} writes in the batch");
    let mut found = Vec::new();
    for n in 0..=writes {
        let (mut c, mut a, b, ra, rb, frames) = setup();
        let mut guest = Guest::new(driver);
        batch(&mut c, &mut a, &frames, Some(n));
        drop(c);
        guest.poll(&a, &b);
        guest.check(&b, &frames);
        let mut c = restart(&a, &b, &ra, &rb);
        wr(&mut c, SENDER, qp_reg(0, 0x10), u32::from(a.tx_tail[0]));
        guest.poll(&a, &b);
        guest.check(&b, &frames);
        if guest.sent != FRAMES as u16 {
            guest.violations.push(format!(
                "{} of {FRAMES} sends complete in the end",
                guest.sent
            ));
        }
        for f in &frames {
            if !guest.taken.iter().any(|(_, bytes)| bytes == f) {
                guest.violations.push("a frame never arrived".into());
            }
        }
        if !guest.violations.is_empty() {
            found.push((n, guest.violations));
        }
    }
    found
}

#[test]
fn a_head_wb_guest_sees_nothing_wrong_whichever_write_the_card_dies_at() {
    let found = every_crash_point(Driver::HeadWb);
    assert!(found.is_empty(), "{found:#?}");
}

#[test]
fn a_guest_taking_done_bits_alone_is_caught_out_at_some_crash_point() {
    let found = every_crash_point(Driver::DoneBits);
    assert!(
        found
            .iter()
            .any(|(_, v)| v.iter().any(|v| v.contains("nobody sent"))),
        "the crash points must show why HEAD_WB exists: {found:#?}"
    );
}
