//! Device-level benchmark of the card's switch path (docs/performance.md).
//!
//! The card runs as in vnicd, on this thread, minus the vfio-user socket: a
//! fake driver (`vnic::test_utils::FakeDriver`, memfd guest memory mapped
//! through the card's real DMA space) fills send rings and posts receive
//! buffers as vnic.ko does, and rings the doorbells through the function's
//! BAR0 region, which is what a vfio-user REGION_WRITE ends in. Only the
//! card's work is timed: the doorbell writes and everything they trigger
//! (descriptor reads, switching, copies, write-backs, context sync). The
//! fake driver's own work (refilling rings, checking frames) is not, as a
//! real driver runs on the guest's CPUs.
//!
//! Beside it, in the same run, a plain memcpy of the same frames into the
//! same kind of buffers: the limit of a card that copies.
//!
//! Also: the switch's forwarding-table lookup at 1 k, 10 k, 100 k and 1 M
//! entries, random keys (it must stay O(1): beyond the caches each lookup
//! costs a memory access, not more work).
//!
//! Run: `cargo bench -p vnic-device --bench datapath` (add `-- --seconds
//! S` to change the time per case, default 2).

use std::hint::black_box;
use std::time::{Duration, Instant};

use vnic::card::{Card, CardConfig};
use vnic::dma::{DMA_READ, DMA_WRITE};
use vnic::function::REGION_BAR0;
use vnic::model::Mac;
use vnic::offload::HDR_LEN;
use vnic::regs::{FnStat, Reg, QP_AREA_BASE};
use vnic::ring::Features;
use vnic::state::ServiceType;
use vnic::switch::{Port, Switch};
use vnic::test_utils::{FakeDriver, StateTables};

/// Descriptors per ring, as vnic.ko's default.
const RING: u16 = 512;
/// Frames per doorbell: a NAPI budget's worth, what the driver hands over
/// under load (xmit_more batches).
const BATCH: u16 = 64;
/// Receive buffer size the driver posts (MTU 1500 + headers, rounded).
const BUF: u16 = 2048;

/// Offset of `features` in a queue context (docs/datapath.md, "Offloads").
const CTX_FEATURES: u64 = 18;

/// Queue-pair register offsets (docs/registers.md).
const QP_CTRL: u64 = 0x08;
const QP_TX_TAIL: u64 = 0x10;
const QP_RX_TAIL: u64 = 0x14;
const QP_IRQ: u64 = 0x18;
const QP_ENABLE_BOTH: u32 = 3;
const REARM: u32 = 1;

const DESC: u64 = 16;
const STATUS_DONE: u16 = 1;
const STATUS_DROPPED: u16 = 2;

fn qp_reg(rel: u64) -> u64 {
    QP_AREA_BASE + rel
}

fn write_reg(card: &mut Card, f: usize, off: u64, v: u32) {
    card.function_mut(f)
        .expect("function")
        .region_write(REGION_BAR0, off, &v.to_le_bytes())
        .expect("BAR0 write");
    card.after_io(f);
}

/// One function's queue pair 0 driven by a fake driver.
struct Guest {
    drv: FakeDriver,
    tx_ring: u64,
    rx_ring: u64,
    tx_tail: u16,
    rx_tail: u16,
    /// Receive buffer of each slot.
    rx_bufs: Vec<u64>,
}

impl Guest {
    /// Maps memory, builds BAT/CLAT, enables queue pair 0 (with the
    /// offload features vnic.ko negotiates if `headers`) and posts a full
    /// receive ring.
    fn attach(card: &mut Card, f: usize, headers: bool) -> Guest {
        let mut drv = FakeDriver::new();
        let (base, size, file) = drv.memory();
        card.function_mut(f)
            .expect("function")
            .dma_map(base, size, 0, DMA_READ | DMA_WRITE, Some(file))
            .expect("DMA map");
        let tables = StateTables::build(&mut drv, 1, 64, 1);
        let (tx_ring, rx_ring) = (drv.ring(RING), drv.ring(RING));
        tables.set_rings(&drv, 0, (tx_ring, RING), (rx_ring, RING));
        if headers {
            let tx = Features::OFFERED.with_multi_buf(false);
            for (ty, v) in [
                (ServiceType::SendQueue, tx),
                (ServiceType::ReceiveQueue, Features::OFFERED),
            ] {
                drv.write_u16(tables.context(ty, 0) + CTX_FEATURES, v.into_bits());
            }
        }
        write_reg(card, f, Reg::VctLo as u64, tables.bat as u32);
        write_reg(card, f, Reg::VctHi as u64, (tables.bat >> 32) as u32);
        write_reg(card, f, qp_reg(QP_CTRL), QP_ENABLE_BOTH);
        let rx_bufs = (0..RING).map(|_| drv.alloc(u64::from(BUF), 64)).collect();
        let mut g = Guest {
            drv,
            tx_ring,
            rx_ring,
            tx_tail: 0,
            rx_tail: 0,
            rx_bufs,
        };
        for i in 0..RING {
            g.drv.put_rx(g.rx_ring, i, g.rx_bufs[i as usize], BUF);
        }
        g.rx_tail = RING - 1;
        write_reg(card, f, qp_reg(QP_RX_TAIL), u32::from(g.rx_tail));
        g
    }

    /// Fills every send descriptor with its own buffer holding `frame`.
    fn fill_tx(&mut self, frame: &[u8]) {
        for i in 0..RING {
            let b = self.drv.buffer(frame);
            self.drv
                .put_tx(self.tx_ring, i, b, frame.len() as u16, true);
        }
    }

    /// Driver side, untimed: makes the next `n` send slots ready again
    /// (status cleared), as the driver's TX clean and xmit do.
    fn ready_tx(&mut self, n: u16) -> u16 {
        for i in 0..n {
            let at = self.tx_ring + u64::from((self.tx_tail + i) % RING) * DESC + 12;
            self.drv.write_u16(at, 0);
        }
        self.tx_tail = (self.tx_tail + n) % RING;
        self.tx_tail
    }

    /// Driver side, untimed: takes `n` received frames (checking DONE and
    /// the length) and reposts their buffers; returns the new tail.
    fn reclaim_rx(&mut self, n: u16, len: usize) -> u16 {
        for _ in 0..n {
            let slot = (self.rx_tail + 1) % RING;
            let status = self.drv.status(self.rx_ring, slot);
            assert_eq!(status & STATUS_DONE, STATUS_DONE, "frame received");
            assert_eq!(usize::from(self.drv.rx_len(self.rx_ring, slot)), len);
            self.drv.put_rx(
                self.rx_ring,
                self.rx_tail,
                self.rx_bufs[self.rx_tail as usize],
                BUF,
            );
            self.rx_tail = slot;
        }
        self.rx_tail
    }
}

/// Where the frames go.
#[derive(Clone, Copy)]
enum Path {
    /// VF0 → VF1 (two guests, one copy between their memories).
    VfToVf,
    /// VF0 → the uplink (backend `none`: counted and dropped).
    VfToUplink,
}

/// One benchmark case: where the frames go, how long they are, and
/// whether both queues carry offload headers (zeros: nothing to compute),
/// as a vnic.ko guest's queues do.
#[derive(Clone, Copy)]
struct Case {
    path: Path,
    len: usize,
    headers: bool,
}

impl Case {
    fn name(&self) -> String {
        let hdr = if self.headers { " +hdr" } else { "" };
        match self.path {
            Path::VfToVf => format!("card VF->VF {} B{hdr}", self.len),
            Path::VfToUplink => format!("card VF->uplink(none) {} B{hdr}", self.len),
        }
    }

    /// Bytes one frame takes in a send buffer.
    fn sent_len(&self) -> usize {
        self.len + if self.headers { HDR_LEN } else { 0 }
    }
}

struct Measured {
    name: String,
    frames: u64,
    bytes: u64,
    elapsed: Duration,
}

impl Measured {
    fn pps(&self) -> f64 {
        self.frames as f64 / self.elapsed.as_secs_f64()
    }

    fn gbit(&self) -> f64 {
        self.bytes as f64 * 8.0 / self.elapsed.as_secs_f64() / 1e9
    }
}

fn frame(dst: Mac, src: Mac, len: usize) -> Vec<u8> {
    let mut f = Vec::with_capacity(len);
    f.extend_from_slice(&dst.0);
    f.extend_from_slice(&src.0);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((f.len()..len).map(|i| i as u8));
    f
}

/// Switches the case's frames for about `time`; only the card's work is
/// counted. Bytes count the frame, not the offload header.
fn run_card(case: Case, time: Duration) -> Measured {
    let Case { path, len, headers } = case;
    let mut card = Card::new(CardConfig {
        vfs: 2,
        vnics_per_vf: 1,
        ..CardConfig::default()
    })
    .expect("card");
    let (vf0, vf1) = (1, 2);
    let mut tx = Guest::attach(&mut card, vf0, headers);
    let mut rx = Guest::attach(&mut card, vf1, headers);
    let src = card.functions()[vf0].queue_pairs()[0].mac;
    let dst = match path {
        Path::VfToVf => card.functions()[vf1].queue_pairs()[0].mac,
        Path::VfToUplink => Mac([0x02, 0xee, 0, 0, 0, 1]),
    };
    let mut sent = if headers {
        vec![0; HDR_LEN]
    } else {
        Vec::new()
    };
    sent.extend(frame(dst, src, len));
    tx.fill_tx(&sent);

    let (mut frames, mut card_time) = (0u64, Duration::ZERO);
    let start = Instant::now();
    while start.elapsed() < time {
        let tail = tx.ready_tx(BATCH);
        let t0 = Instant::now();
        write_reg(&mut card, vf0, qp_reg(QP_TX_TAIL), u32::from(tail));
        card_time += t0.elapsed();
        frames += u64::from(BATCH);
        if let Path::VfToVf = path {
            let rx_tail = rx.reclaim_rx(BATCH, case.sent_len());
            let t0 = Instant::now();
            write_reg(&mut card, vf1, qp_reg(QP_RX_TAIL), u32::from(rx_tail));
            write_reg(&mut card, vf1, qp_reg(QP_IRQ), REARM);
            card_time += t0.elapsed();
        }
        let t0 = Instant::now();
        write_reg(&mut card, vf0, qp_reg(QP_IRQ), REARM);
        card_time += t0.elapsed();
        check_sent(&tx, BATCH);
    }
    let name = case.name();
    let counters = card.functions()[vf0].counters();
    assert_eq!(
        counters.get(FnStat::TxPackets),
        frames,
        "every frame was sent"
    );
    Measured {
        name,
        frames,
        bytes: frames * len as u64,
        elapsed: card_time,
    }
}

fn check_sent(g: &Guest, n: u16) {
    for i in 1..=n {
        let slot = (g.tx_tail + RING - i) % RING;
        let s = g.drv.read_u16(g.tx_ring + u64::from(slot) * DESC + 12);
        assert_eq!(s & (STATUS_DONE | STATUS_DROPPED), STATUS_DONE, "sent");
    }
}

/// The same bytes as `run_card` moves, copied with memcpy from one
/// buffer per send slot into one buffer per receive slot.
fn run_memcpy(len: usize, time: Duration) -> Measured {
    let src: Vec<Vec<u8>> = (0..RING).map(|i| vec![i as u8; len]).collect();
    let mut dst: Vec<Vec<u8>> = (0..RING).map(|_| vec![0u8; usize::from(BUF)]).collect();
    let (mut frames, mut slot) = (0u64, 0usize);
    let start = Instant::now();
    while start.elapsed() < time {
        for _ in 0..BATCH {
            dst[slot][..len].copy_from_slice(black_box(&src[slot]));
            slot = (slot + 1) % usize::from(RING);
        }
        black_box(&mut dst);
        frames += u64::from(BATCH);
    }
    Measured {
        name: format!("memcpy {len} B"),
        frames,
        bytes: frames * len as u64,
        elapsed: start.elapsed(),
    }
}

/// Nanoseconds per lookup in a switch holding `entries` static entries.
fn lookup_ns(entries: u32) -> f64 {
    let mut switch = Switch::default();
    let port = Port { function: 1, qp: 0 };
    switch
        .add_port(port, Mac([0x02, 0, 0, 0, 0, 1]))
        .expect("port");
    let mac = |i: u32| {
        let b = i.to_be_bytes();
        Mac([0x02, 0x10, b[0], b[1], b[2], b[3]])
    };
    for i in 0..entries {
        switch.add_static(mac(i), 0, port).expect("static entry");
    }
    let rounds = 2_000_000u32;
    let start = Instant::now();
    let mut hits = 0u32;
    for r in 0..rounds {
        let i = r.wrapping_mul(2_654_435_761) % entries;
        hits += u32::from(switch.lookup(black_box(mac(i)), 0).is_some());
    }
    let ns = start.elapsed().as_nanos() as f64 / f64::from(rounds);
    assert_eq!(hits, rounds);
    ns
}

/// The value after `--name` on the command line.
fn option(name: &str) -> Option<String> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .cloned()
}

fn seconds() -> Duration {
    let s = option("--seconds").map_or(2.0, |s| s.parse::<f64>().expect("--seconds S"));
    Duration::from_secs_f64(s)
}

/// `--only WORD`: run only the parts whose name contains WORD (`memcpy`,
/// `VF->VF`, `uplink`, `64 B`, `1500 B`, `+hdr`, `lookup`), e.g. under a
/// profiler.
fn wanted(name: &str) -> bool {
    option("--only").is_none_or(|w| name.contains(&w))
}

/// Whether `--only` selects only card cases (the profiler then sees no
/// memcpy).
fn card_only() -> bool {
    option("--only").is_some_and(|w| w.contains("->"))
}

fn main() {
    let time = seconds();
    println!(
        "vnic device-level benchmark: ring {RING}, {BATCH} frames per doorbell, {:.1} s per case, one thread",
        time.as_secs_f64()
    );
    println!(
        "{:<32} {:>12} {:>10} {:>12}",
        "case", "Mpps", "Gbit/s", "vs memcpy"
    );
    for len in [64, 1500] {
        // The peer of this size, unless --only leaves every card case out.
        let cases: Vec<Case> = [false, true]
            .into_iter()
            .flat_map(|headers| {
                [Path::VfToVf, Path::VfToUplink].map(|path| Case { path, len, headers })
            })
            .filter(|c| wanted(&c.name()))
            .collect();
        let copy = ((!cases.is_empty() && !card_only()) || wanted(&format!("memcpy {len} B")))
            .then(|| run_memcpy(len, time));
        if let Some(copy) = &copy {
            println!(
                "{:<32} {:>12.2} {:>10.1} {:>12}",
                copy.name,
                copy.pps() / 1e6,
                copy.gbit(),
                "1.00"
            );
        }
        for case in cases {
            let c = run_card(case, time);
            let ratio = copy.as_ref().map_or(0.0, |m| c.gbit() / m.gbit());
            println!(
                "{:<32} {:>12.2} {:>10.1} {:>12.3}",
                c.name,
                c.pps() / 1e6,
                c.gbit(),
                ratio
            );
        }
    }
    if wanted("switch lookup") {
        println!("{:<32} {:>12}", "switch lookup", "ns/lookup");
        for n in [1_000, 10_000, 100_000, 1_000_000] {
            println!("{:<32} {:>12.1}", format!("  {n} entries"), lookup_ns(n));
        }
    }
}
