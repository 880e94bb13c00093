//! `rings`: descriptor and ring processing against guest memory the
//! fuzzer writes. Two VFs of a real card are attached to fake guest memory
//! as vnic.ko would leave them (BAT, CLATs, contexts, rings, posted
//! buffers; [`vnic::test_utils::guest::Vm`]); then the input is a list of
//! operations: overwrite any bytes of those structures or of raw guest
//! memory, queue frames, write BAR0 registers (doorbells, queue control,
//! VCT, interrupts), restart queues with offload features, quiesce and
//! resume, reset or disconnect a function, run the data path, and take
//! memory away while the card uses it: truncate a guest's memory file (it
//! is unsealed, as memory-backend-file's is) or DMA_UNMAP it, and map it
//! again.
//!
//! Invariants: nothing panics and no SIGBUS escapes (a truncation costs
//! only that guest's function, crate::dma::guard); the PF (which no guest
//! drives) keeps its config space; and after both clients leave, fresh
//! guests on the same functions pass a frame between them, so nothing a
//! guest wrote, or took away, outlives its client.

use std::time::Instant;

use vnic::card::Card;
use vnic::dma::{DMA_READ, DMA_WRITE};
use vnic::function::REGION_BAR0;
use vnic::regs::{QpReg, Reg, BAR0_SIZE};
use vnic::state::ServiceType;
use vnic::test_utils::guest::{self, Vm, BUF, RING};
use vnic::test_utils::{FakeDriver, FAKE_BASE, FAKE_SIZE};

use crate::input::{Input, Output};
use crate::protocol::small_card;
use crate::Seed;

/// The functions the guests drive: VF0 and VF1.
const FUNCTIONS: [usize; 2] = [1, 2];
/// Receive buffers each queue starts with.
const POSTED: u16 = 8;
/// Raw guest memory the fuzzer may write: the part the tables, rings and
/// buffers were laid out in.
const RAW_SPAN: u64 = 1 << 20;
/// Most frames queued or buffers posted per input, so that the fake
/// driver's bump allocator cannot run out of guest memory.
const ALLOC_BUDGET: usize = 256;
/// Bytes one memory-write operation carries at most.
const MAX_WRITE: usize = 255;

/// One operation of the input. The first byte of each names it (modulo
/// the number of operations).
#[derive(Clone, Copy)]
#[repr(u8)]
pub enum Op {
    /// `vm: u8, what: u8, offset: u16, len: u8, bytes`: write into a
    /// structure of a guest (see [`Guests::place`]).
    Poke = 0,
    /// `vm: u8, q: u8, n: u8, then n x (len: u16, bytes)`: queue frames and
    /// ring the doorbell.
    Send,
    /// `vm: u8, offset: u16, value: u32`: a BAR0 write.
    Write,
    /// `vm: u8, q: u8, reg: u8, value: u32`: a queue-pair register write.
    QpWrite,
    /// `vm: u8, q: u8, n: u8`: post receive buffers.
    Post,
    /// `vm: u8, q: u8, tx: u16, rx: u16`: restart a queue pair with offload
    /// features.
    Features,
    /// Run the data path and the moderation timers.
    Run,
    /// `vm: u8, resume: u8`: quiesce (or resume) the function.
    Quiesce,
    /// `vm: u8, disconnect: u8`: reset the function (or drop its client).
    Reset,
    /// `vm: u8, pages: u16`: the guest's client shrinks its memory file to
    /// `pages` 4 KiB pages; the guest's own driver stops writing to it.
    Truncate,
    /// `vm: u8`: the client DMA_UNMAPs all of its memory (the card may be
    /// in the middle of using it: queues running, buffers posted).
    Unmap,
    /// `vm: u8`: the client DMA_MAPs its memory again.
    Remap,
}

const OPS: u8 = Op::Remap as u8 + 1;

struct Guests {
    card: Card,
    vms: Vec<Vm>,
    /// Whether each guest's memory file was truncated: its fake driver
    /// (which maps the same file) no longer lays out frames or buffers.
    truncated: Vec<bool>,
    allocs: usize,
}

impl Guests {
    fn new() -> Self {
        let mut card = small_card();
        let vms: Vec<Vm> = FUNCTIONS
            .iter()
            .map(|&f| {
                let drv = FakeDriver::with_unsealed_memory(FAKE_BASE, FAKE_SIZE);
                Vm::attach_with(&mut card, f, POSTED, drv)
            })
            .collect();
        Guests {
            card,
            truncated: vec![false; vms.len()],
            vms,
            allocs: 0,
        }
    }

    fn vm(&self, sel: u8) -> usize {
        usize::from(sel) % self.vms.len()
    }

    fn queue(&self, v: usize, sel: u8) -> u16 {
        u16::from(sel) % self.vms[v].rings.len() as u16
    }

    /// Where a poke of structure `what` lands: the BAT, a CLAT, a queue's
    /// contexts, its rings, or raw memory near the tables.
    fn place(&self, v: usize, what: u8, offset: u16) -> u64 {
        let vm = &self.vms[v];
        let q = usize::from(what >> 3) % vm.rings.len();
        let off = u64::from(offset);
        let ring_bytes = u64::from(RING) * 16;
        match what & 7 {
            0 => vm.tables.bat + off % 4096,
            1 => vm.tables.clat[usize::from(what >> 3) % 2] + off % 4096,
            2 => vm.tables.context(ServiceType::SendQueue, q as u16) + off % 64,
            3 => vm.tables.context(ServiceType::ReceiveQueue, q as u16) + off % 64,
            4 => vm.rings[q].0 + off % ring_bytes,
            5 => vm.rings[q].1 + off % ring_bytes,
            _ => FAKE_BASE + (off << 4) % RAW_SPAN,
        }
    }

    fn write(&mut self, v: usize, offset: u64, value: u32) {
        let f = self.vms[v].f;
        if let Some(func) = self.card.function_mut(f) {
            // Refusals (out-of-range offsets) are part of what is fuzzed.
            let _ = func.region_write(REGION_BAR0, offset, &value.to_le_bytes());
        }
        self.card.after_io(f);
        while self.card.functions()[f].admin_pending() {
            self.card.run_admin(f);
        }
    }

    fn step(&mut self, input: &mut Input) {
        let op = input.u8() % OPS;
        let v = self.vm(input.u8());
        // A guest whose memory is gone lays nothing out any more; register
        // writes, runs, resets and the like still reach the card.
        let lays_out = [Op::Poke, Op::Send, Op::Post, Op::Features].map(|o| o as u8);
        if self.truncated[v] && lays_out.contains(&op) {
            return;
        }
        match op {
            x if x == Op::Poke as u8 => {
                let (what, offset) = (input.u8(), input.u16());
                let len = usize::from(input.u8()).min(MAX_WRITE);
                let bytes = input.bytes(len);
                let at = self.place(v, what, offset);
                // A poke past the end of guest memory is just lost.
                let _ = self.vms[v].drv.dma().write(at, bytes);
            }
            x if x == Op::Send as u8 => {
                let q = self.queue(v, input.u8());
                let n = usize::from(input.u8() % 4);
                let frames: Vec<Vec<u8>> = (0..n)
                    .map(|_| {
                        let len = input.u16();
                        input.bytes(usize::from(len)).to_vec()
                    })
                    .collect();
                self.allocs += n;
                if self.allocs <= ALLOC_BUDGET {
                    self.vms[v].send(&mut self.card, q, &frames);
                }
            }
            x if x == Op::Write as u8 => {
                let offset = u64::from(input.u16()) % BAR0_SIZE;
                let value = input.u32();
                self.write(v, offset, value);
            }
            x if x == Op::QpWrite as u8 => {
                let q = self.queue(v, input.u8());
                let reg = u64::from(input.u8() % (QpReg::RxHead as u8 + 4)) & !3;
                let value = input.u32();
                self.write(v, guest::qp_reg(q, reg), value);
            }
            x if x == Op::Post as u8 => {
                let q = self.queue(v, input.u8());
                let n = u16::from(input.u8() % 8);
                self.allocs += usize::from(n);
                if self.allocs <= ALLOC_BUDGET {
                    self.vms[v].post(&mut self.card, q, n);
                }
            }
            x if x == Op::Features as u8 => {
                let q = self.queue(v, input.u8());
                let (tx, rx) = (input.u16(), input.u16());
                self.vms[v].set_features(&mut self.card, q, tx, rx);
            }
            x if x == Op::Run as u8 => self.run(),
            x if x == Op::Quiesce as u8 => {
                let name = self.card.functions()[self.vms[v].f].name().to_string();
                // Refused when already in that state: fine.
                let _ = if input.u8() & 1 == 0 {
                    self.card.quiesce(Some(&name)).map(drop)
                } else {
                    self.card.resume(Some(&name)).map(drop)
                };
            }
            x if x == Op::Truncate as u8 => {
                let pages = u64::from(input.u16());
                // Growing it back is no truncation; the file stays as is.
                if pages * 4096 < FAKE_SIZE && self.vms[v].drv.truncate(pages * 4096).is_ok() {
                    self.truncated[v] = true;
                }
            }
            x if x == Op::Unmap as u8 => {
                let f = self.vms[v].f;
                if let Some(func) = self.card.function_mut(f) {
                    let _ = func.dma_unmap(FAKE_BASE, FAKE_SIZE, false);
                }
                self.card.after_io(f);
            }
            x if x == Op::Remap as u8 => {
                let f = self.vms[v].f;
                let (base, size, file) = self.vms[v].drv.memory();
                if let Some(func) = self.card.function_mut(f) {
                    // Refused while still mapped: fine.
                    let _ = func.dma_map(base, size, 0, DMA_READ | DMA_WRITE, Some(file));
                }
                self.card.after_io(f);
            }
            _ => {
                let f = self.vms[v].f;
                if input.u8() & 1 == 0 {
                    if let Some(func) = self.card.function_mut(f) {
                        func.reset();
                    }
                    self.card.after_io(f);
                } else {
                    self.card.disconnect(f);
                }
            }
        }
    }

    fn run(&mut self) {
        self.card.run_pending();
        self.card.run_timers(Instant::now());
        self.card.reap_lost_dma();
    }
}

/// The `rings` target.
pub fn run(data: &[u8]) {
    let mut g = Guests::new();
    let pf_config = g.card.functions()[0].config().bytes().to_vec();
    let mut input = Input::new(data);
    while !input.is_empty() {
        g.step(&mut input);
    }
    g.run();
    let mut card = g.card;
    assert_eq!(card.functions()[0].config().bytes(), &pf_config[..]);
    for &f in &FUNCTIONS {
        card.disconnect(f);
    }
    check_fresh_guests_talk(&mut card);
}

/// After the fuzzed clients left, new guests on the same functions pass a
/// frame from VF0's first vNIC to VF1's.
fn check_fresh_guests_talk(card: &mut Card) {
    let [a, b] = FUNCTIONS;
    let mut from = Vm::attach(card, a, POSTED);
    let to = Vm::attach(card, b, POSTED);
    let frame = guest::eth(guest::mac(card, b, 0), guest::mac(card, a, 0), None, 64);
    from.send(card, 0, std::slice::from_ref(&frame));
    card.run_pending();
    assert_eq!(to.received(0), vec![frame], "a fresh guest's frame");
}

/// An Ethernet frame of `len` bytes from function `from`'s first vNIC to `to`'s.
fn frame_between(card: &Card, to: usize, from: usize, len: usize) -> Vec<u8> {
    guest::eth(
        guest::mac(card, to, 0),
        guest::mac(card, from, 0),
        None,
        len,
    )
}

/// Seeds: frames both ways; frames with a doorbell beyond the ring; a
/// ring re-pointed at a context; queues restarted with offload features;
/// quiesce and resume; a VCT moved; a reset in the middle.
pub fn seeds() -> Vec<Seed> {
    let card = small_card();
    let [a, b] = FUNCTIONS;
    let ab = frame_between(&card, b, a, 64);
    let ba = frame_between(&card, a, b, 1500);
    let send = |o: &mut Output, vm: u8, frames: &[&[u8]]| {
        o.u8(Op::Send as u8).u8(vm).u8(0).u8(frames.len() as u8);
        for f in frames {
            o.chunk(f);
        }
    };
    let mut frames = Output::default();
    send(&mut frames, 0, &[&ab, &ab]);
    send(&mut frames, 1, &[&ba]);
    frames.u8(Op::Run as u8).u8(0);

    let mut doorbell = Output::default();
    doorbell
        .u8(Op::QpWrite as u8)
        .u8(0)
        .u8(0)
        .u8(QpReg::TxTail as u8)
        .u32(u32::from(RING) + 3)
        .u8(Op::Run as u8)
        .u8(0);

    let mut poke = Output::default();
    // Send descriptor 0 of VF0's queue 0 pointing at the BAT, 1500 bytes.
    poke.u8(Op::Poke as u8).u8(0).u8(4).u16(0).u8(16);
    poke.u64(FAKE_BASE).u16(1500).u16(1).u32(0);
    poke.u8(Op::QpWrite as u8)
        .u8(0)
        .u8(0)
        .u8(QpReg::TxTail as u8)
        .u32(1);
    poke.u8(Op::Run as u8).u8(0);

    let mut features = Output::default();
    for vm in 0..2 {
        features.u8(Op::Features as u8).u8(vm).u8(0).u16(7).u16(15);
    }
    let mut hdr = vec![0; 10];
    hdr.extend_from_slice(&ab);
    send(&mut features, 0, &[&hdr]);
    features.u8(Op::Run as u8).u8(0);

    let mut migrate = Output::default();
    send(&mut migrate, 0, &[&ab]);
    migrate.u8(Op::Quiesce as u8).u8(0).u8(0);
    migrate.u8(Op::Quiesce as u8).u8(0).u8(1);
    migrate
        .u8(Op::Write as u8)
        .u8(1)
        .u16(Reg::VctLo as u16)
        .u32(0x1234_5000);
    migrate.u8(Op::Reset as u8).u8(1).u8(0);
    send(&mut migrate, 0, &[&ab]);
    migrate.u8(Op::Post as u8).u8(1).u8(0).u8(4);
    migrate.u8(Op::Run as u8).u8(0);

    // Frames queued, then VF0's memory cut to its first 16 KiB (the BAT
    // and CLATs stay, the rings and buffers go) and VF1 sends to it;
    // VF1's memory unmapped with its queues running, then mapped again.
    let mut truncate = Output::default();
    send(&mut truncate, 0, &[&ab]);
    truncate.u8(Op::Truncate as u8).u8(0).u16(4);
    send(&mut truncate, 1, &[&ba, &ba]);
    truncate.u8(Op::Run as u8).u8(0);
    truncate
        .u8(Op::QpWrite as u8)
        .u8(0)
        .u8(0)
        .u8(QpReg::TxTail as u8)
        .u32(2);
    truncate.u8(Op::Run as u8).u8(0);
    truncate.u8(Op::Unmap as u8).u8(1);
    send(&mut truncate, 0, &[&ab]);
    truncate.u8(Op::Run as u8).u8(0);
    truncate.u8(Op::Remap as u8).u8(1);
    truncate.u8(Op::Reset as u8).u8(0).u8(0);
    truncate.u8(Op::Run as u8).u8(0);

    vec![
        ("frames", frames.0),
        ("truncate-unmap", truncate.0),
        ("doorbell-past-ring", doorbell.0),
        ("descriptor-at-bat", poke.0),
        ("offload-features", features.0),
        ("quiesce-reset", migrate.0),
        ("buffers", {
            let mut o = Output::default();
            o.u8(Op::Post as u8)
                .u8(0)
                .u8(1)
                .u8(u8::try_from(BUF / 512).unwrap_or(1));
            o.0
        }),
    ]
}
