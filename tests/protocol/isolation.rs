//! Isolation between functions and between guests, over the protocol as
//! QEMU speaks it: a client of one function has no way to address another
//! function's registers, configuration space, VCT entry or counters; a
//! guest's descriptors make the card touch only that guest's own mapped
//! memory; a client that stops reading does not hold up another function's
//! data path. docs/robustness.md maps each guarantee to its tests.

use std::io::Read;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vnic::test_utils::{FakeDriver, FAKE_BASE, FAKE_SIZE};
use vnic_tests::ctl::Ctl;
use vnic_tests::guest::{frame, mac, qp, Guest, BAR0, BUF, CONFIG, MSIX_BAR, RING};
use vnic_tests::*;

/// BAR0's size (docs/registers.md, "vfio-user regions").
const BAR0_SIZE: u64 = 64 << 10;
/// The MSI-X BAR's size (table and PBA).
const MSIX_BAR_SIZE: u64 = 16 << 10;
/// Configuration space size.
const CONFIG_SIZE: u64 = 4 << 10;
/// Regions a function has (DEVICE_GET_INFO: BAR0-5, ROM, config, VGA).
const REGIONS: u32 = 9;
/// Register offsets used below (docs/registers.md).
const BAD_ACCESS: u64 = 0x34;
const FN_QUEUE_ERRORS: u64 = 0x148;
const QP_STATUS: u64 = 0x0c;
const QP_TX_TAIL: u64 = 0x10;
const QP_RX_TAIL: u64 = 0x14;
const QP_IRQ: u64 = 0x18;
const QP_RX_PACKETS: u64 = 0x50;
const QP_IRQ_REARM: u32 = 1;
/// QP_STATUS bits.
const TX_ERROR: u32 = 1 << 2;
const RX_ERROR: u32 = 1 << 3;
/// Guest-physical base of the second guest's memory: above the first's, so
/// an address in one is never mapped for the other.
const OTHER_BASE: u64 = 0x4000_0000;
/// How long a well-behaved function may wait for its frames while another
/// client misbehaves; generous for a loaded 2-core machine, far below
/// QEMU's 5 s reply timeout.
const DEADLINE: Duration = Duration::from_secs(3);

/// Every dword of `region` (`size` bytes) of a function, read one by one as
/// a guest would (so the snapshot also covers per-offset decoding).
/// BAD_ACCESS, which counts the dump's own reads of offsets without a
/// register, reads as 0 here.
fn dump(c: &mut RawClient, region: u32, size: u64) -> Vec<u32> {
    (0..size)
        .step_by(4)
        .map(|o| match (region, o) {
            (BAR0, BAD_ACCESS) => 0,
            _ => c.read_u32(region, o),
        })
        .collect()
}

/// Everything a client of `function` can read of it, plus what the control
/// socket says of it (settings, queue states, VCT entry, counters). The
/// same client is used before and after (a client that goes away resets
/// its function, which counts in the function's counters).
fn snapshot(c: &mut RawClient, ctl: &mut Ctl, function: &str) -> (Vec<Vec<u32>>, Value) {
    let regions = vec![
        dump(c, BAR0, BAR0_SIZE),
        dump(c, CONFIG, CONFIG_SIZE),
        dump(c, MSIX_BAR, MSIX_BAR_SIZE),
    ];
    (regions, control_view(ctl, function))
}

/// `show` and `stats` of one function. Left out: the card-wide counters
/// (every function's traffic counts there) and the bad-access counter (the
/// snapshot's own reads of offsets without a register count there).
fn control_view(ctl: &mut Ctl, function: &str) -> Value {
    let show = ctl.ok(json!({"op": "show", "function": function}));
    let mut stats = ctl.ok(json!({"op": "stats", "function": function}));
    stats["card"] = Value::Null;
    for f in stats["functions"].as_array_mut().into_iter().flatten() {
        f["counters"]["bad_mmio"] = Value::Null;
    }
    json!({"show": show, "stats": stats})
}

/// First differing dword of two region dumps, for a readable failure.
fn first_difference(a: &[Vec<u32>], b: &[Vec<u32>]) -> Option<String> {
    for (r, (x, y)) in a.iter().zip(b).enumerate() {
        if let Some(i) = x.iter().zip(y).position(|(p, q)| p != q) {
            return Some(format!(
                "region #{r} offset {:#x}: {:#x} -> {:#x}",
                i * 4,
                x[i],
                y[i]
            ));
        }
    }
    None
}

/// Posted writes of `value` to every dword of `region`, then one read (a
/// round trip: every posted write before it is done).
fn write_sweep(c: &mut RawClient, region: u32, size: u64, value: u32) {
    for o in (0..size).step_by(4) {
        c.region_write(region, o, &value.to_le_bytes(), NO_REPLY);
    }
    c.region_read(region, 0, 4);
}

#[test]
fn regions_outside_a_functions_own_are_refused() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    // No region index names another function: indices past the function's
    // own regions are refused, and so is every access past a region's end.
    for region in [REGIONS, REGIONS + 1, 0x100, u32::MAX] {
        let r = c.region_read(region, 0, 4);
        assert!(r.is_error(), "region {region} readable");
        assert_eq!(r.error, libc::EINVAL as u32);
    }
    for (region, size) in [
        (BAR0, BAR0_SIZE),
        (CONFIG, CONFIG_SIZE),
        (MSIX_BAR, MSIX_BAR_SIZE),
    ] {
        for offset in [size, size - 2, size << 1, u64::MAX - 3, u64::MAX] {
            let r = c.region_read(region, offset, 4);
            assert!(r.is_error(), "region {region} offset {offset:#x}");
        }
        // Writes too, posted or not: no reply for posted ones, an error
        // for the others.
        c.region_write(region, size, &[0xff; 4], NO_REPLY);
        let mut b = region_access(region, size, 4);
        b.extend_from_slice(&[0xff; 4]);
        assert!(c.call(REGION_WRITE, 0, &b, &[]).is_error());
    }
    assert!(vnicd.alive());
    assert_eq!(
        c.read_u32(BAR0, 0),
        0x564e_4943,
        "the connection still serves"
    );
}

#[test]
fn a_hostile_write_sweep_of_one_vf_changes_no_other_function() {
    let vnicd = Vnicd::start(&["--vfs", "3"]);
    let mut ctl = Ctl::connect(&vnicd);
    // vf1 runs a guest (VCT entry, running queues, counters); vf2 and the
    // PF are idle, each with a client of its own that only reads.
    let mut victim = Guest::attach(&vnicd, "vf1", 2);
    victim.send(&[frame(mac(2, 1), mac(2, 0), 100)]);
    wait_for("vf1's own frame", Duration::from_secs(5), || {
        victim.received(1).len() == 1
    });
    let before_victim = snapshot(&mut victim.client, &mut ctl, "vf1");
    let idle = ["pf", "vf2"];
    let mut clients: Vec<RawClient> = idle
        .iter()
        .map(|f| RawClient::negotiated(&vnicd.socket(f)))
        .collect();
    let before: Vec<_> = idle
        .iter()
        .zip(&mut clients)
        .map(|(f, c)| snapshot(c, &mut ctl, f))
        .collect();
    // The sweep would show nothing if snapshots were not stable.
    let again = snapshot(&mut victim.client, &mut ctl, "vf1");
    assert_eq!(first_difference(&again.0, &before_victim.0), None);
    assert_eq!(again.1, before_victim.1);

    // vf0, with guest memory mapped, writes all-ones and then zeroes to
    // every dword of BAR0, configuration space and the MSI-X BAR: resets,
    // VCT entries, doorbells, admin commands, MAC and VLAN registers, FLR,
    // BAR sizing, power states.
    let mut hostile = Guest::attach(&vnicd, "vf0", 2);
    for value in [u32::MAX, 0, 0x5a5a_5a5a] {
        write_sweep(&mut hostile.client, BAR0, BAR0_SIZE, value);
        write_sweep(&mut hostile.client, MSIX_BAR, MSIX_BAR_SIZE, value);
        write_sweep(&mut hostile.client, CONFIG, CONFIG_SIZE, value);
    }
    drop(hostile);

    let after_victim = snapshot(&mut victim.client, &mut ctl, "vf1");
    if let Some(d) = first_difference(&before_victim.0, &after_victim.0) {
        panic!("vf1 changed: {d}");
    }
    assert_eq!(before_victim.1, after_victim.1, "vf1 (control socket)");
    for ((f, c), b) in idle.iter().zip(&mut clients).zip(&before) {
        let a = snapshot(c, &mut ctl, f);
        if let Some(d) = first_difference(&b.0, &a.0) {
            panic!("{f} changed: {d}");
        }
        assert_eq!(b.1, a.1, "{f} (control socket)");
    }
    // And vf1 still passes traffic.
    victim.send(&[frame(mac(2, 1), mac(2, 0), 200)]);
    wait_for("vf1's second frame", Duration::from_secs(5), || {
        victim.received(1).len() == 2
    });
}

/// Guest memory of the second guest, filled with a pattern, at
/// [`OTHER_BASE`]; returns the driver and the address of the pattern.
fn other_guest_memory() -> (FakeDriver, u64, Vec<u8>) {
    let mut drv = FakeDriver::with_memory(OTHER_BASE, FAKE_SIZE);
    let pattern: Vec<u8> = (0..4096u32).map(|i| (i * 31 + 7) as u8).collect();
    let at = drv.buffer(&pattern);
    (drv, at, pattern)
}

fn memory_at(drv: &FakeDriver, at: u64, len: usize) -> Vec<u8> {
    let mut b = vec![0; len];
    drv.dma().read(at, &mut b).unwrap();
    b
}

/// Queues one raw send descriptor (`addr`, `len`) on `g`'s send queue 0
/// and rings the doorbell.
fn send_raw(g: &mut Guest, addr: u64, len: u16) {
    let (tx, tail) = (g.rings[0].0, g.tx_tails[0]);
    g.drv.put_tx(tx, tail, addr, len, true);
    g.tx_tails[0] = (tail + 1) % RING;
    g.posted(qp(0, QP_TX_TAIL), g.tx_tails[0] as u32);
}

/// Posts one raw receive descriptor (`addr`, `len`) as `g`'s first on
/// queue pair 0.
fn post_raw(g: &mut Guest, addr: u64, len: u16) {
    let rx = g.rings[0].1;
    g.drv.put_rx(rx, 0, addr, len);
    g.posted(qp(0, QP_RX_TAIL), 1);
}

#[test]
fn descriptors_naming_another_guests_memory_are_refused() {
    let vnicd = Vnicd::start(&["--vfs", "3"]);
    let (drv, secret, pattern) = other_guest_memory();
    let victim = Guest::attach_with(&vnicd, "vf1", 1, drv);
    let mut reader = Guest::attach(&vnicd, "vf0", 1);
    let mut writer = Guest::attach_without_buffers(&vnicd, "vf2", 1, FakeDriver::new());

    // A send descriptor naming the victim's memory: the queue fails, the
    // failure is counted, nothing leaves.
    send_raw(&mut reader, secret, 1500);
    wait_for("vf0's send queue fails", Duration::from_secs(5), || {
        reader.read(qp(0, QP_STATUS)) & TX_ERROR == TX_ERROR
    });
    assert_eq!(reader.read(FN_QUEUE_ERRORS), 1, "QUEUE_ERRORS");
    assert_eq!(reader.read(0x100), 0, "TX_PACKETS");

    // A receive buffer naming the victim's memory: the frame the victim
    // itself sends to it is not written there; the receive queue fails and
    // is counted.
    post_raw(&mut writer, secret, BUF);
    let mut victim = victim;
    victim.send(&[frame(mac(3, 0), mac(2, 0), 1000)]);
    wait_for("vf2's receive queue fails", Duration::from_secs(5), || {
        writer.read(qp(0, QP_STATUS)) & RX_ERROR == RX_ERROR
    });
    assert_eq!(writer.read(FN_QUEUE_ERRORS), 1, "QUEUE_ERRORS");
    assert_eq!(memory_at(&victim.drv, secret, pattern.len()), pattern);
    assert_eq!(victim.read(FN_QUEUE_ERRORS), 0, "the victim's queues run");
}

#[test]
fn descriptors_crossing_the_end_of_a_mapping_are_refused() {
    let vnicd = Vnicd::start(&["--vfs", "2"]);
    let end = FAKE_BASE + FAKE_SIZE;
    let mut a = Guest::attach(&vnicd, "vf0", 2);
    let mut b = Guest::attach_without_buffers(&vnicd, "vf1", 1, FakeDriver::new());
    let tail_before = memory_at(&b.drv, end - 100, 100);

    // 100 bytes inside, 100 past the end.
    send_raw(&mut a, end - 100, 200);
    wait_for("vf0's send queue fails", Duration::from_secs(5), || {
        a.read(qp(0, QP_STATUS)) & TX_ERROR == TX_ERROR
    });
    assert_eq!(a.read(FN_QUEUE_ERRORS), 1);

    // A receive buffer whose last byte is past the end: the card refuses
    // the whole frame, not just the bytes past the end. The frame comes
    // from vf0's other queue pair, which still runs.
    post_raw(&mut b, end - 100, BUF);
    a.send_on(1, &[frame(mac(2, 0), mac(1, 1), 300)]);
    wait_for("vf1's receive queue fails", Duration::from_secs(5), || {
        b.read(qp(0, QP_STATUS)) & RX_ERROR == RX_ERROR
    });
    assert_eq!(b.read(FN_QUEUE_ERRORS), 1);
    assert_eq!(memory_at(&b.drv, end - 100, 100), tail_before);
}

/// vf1's receive queue 0, as `round` keeps it: buffers given back as
/// frames arrive, so rounds can go on past one ring's worth.
struct Receiver {
    guest: Guest,
    tail: u16,
}

impl Receiver {
    fn new(guest: Guest) -> Self {
        // Guest::attach posted every buffer but one.
        Receiver {
            guest,
            tail: RING - 1,
        }
    }

    fn packets(&mut self) -> u32 {
        self.guest.read(qp(0, QP_RX_PACKETS))
    }

    /// Gives `n` buffers back to the card.
    fn repost(&mut self, n: u16) {
        let rx = self.guest.rings[0].1;
        self.tail = self.guest.drv.post_rx(rx, RING, self.tail, n, BUF);
        self.guest.posted(qp(0, QP_RX_TAIL), self.tail as u32);
    }
}

/// Sends `n` frames from `a` (vf0 queue 0) to `b`'s queue 0, waits until
/// they have arrived and the receive interrupt has fired (then rearms it
/// and gives the buffers back), and returns how long it took.
fn round(a: &mut Guest, b: &mut Receiver, n: u16) -> Duration {
    let t0 = Instant::now();
    let had = b.packets();
    a.send(&vec![frame(mac(2, 0), mac(1, 0), 200); n as usize]);
    wait_for("frames to vf1 while vf2 hogs", DEADLINE, || {
        b.packets() >= had + u32::from(n)
    });
    wait_for("vf1's receive interrupt", DEADLINE, || {
        b.guest.irqs[1].read().is_ok()
    });
    b.guest.posted(qp(0, QP_IRQ), QP_IRQ_REARM);
    b.repost(n);
    t0.elapsed()
}

#[test]
fn a_client_that_stops_reading_does_not_hold_up_another_functions_traffic() {
    let mut vnicd = Vnicd::start(&["--vfs", "3"]);
    let mut a = Guest::attach(&vnicd, "vf0", 1);
    let mut b = Receiver::new(Guest::attach(&vnicd, "vf1", 1));
    let mut hog = RawClient::negotiated(&vnicd.socket("vf2"));
    hog.stream
        .set_write_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let read = region_access(CONFIG, 0, CONFIG_SIZE as u32);
    let mut rounds = Vec::new();
    let mut sent = 0usize;
    // Interleave: a burst of 4 KiB reads whose replies vf2 never reads,
    // then a round of vf0 -> vf1 traffic (doorbells, DMA, interrupts),
    // until vnicd cuts vf2 off.
    let t0 = Instant::now();
    while !vnicd
        .log_text()
        .contains("vf2: client stopped reading replies")
    {
        assert!(t0.elapsed() < Duration::from_secs(60), "vf2 never cut off");
        for _ in 0..64 {
            let mut msg = hog.header(REGION_READ, 0, 32);
            msg.extend_from_slice(&read);
            if hog.send_bytes(&msg).is_err() {
                break;
            }
            sent += 1;
        }
        rounds.push(round(&mut a, &mut b, 4));
    }
    assert!(sent > 0 && !rounds.is_empty());
    let worst = rounds.iter().max().unwrap();
    println!(
        "{} rounds of vf0 -> vf1 traffic while vf2 queued {sent} unread replies; slowest {worst:?}",
        rounds.len()
    );
    // Cut off: EOF (or a reset) after what was queued.
    let mut rest = Vec::new();
    hog.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let closed = match hog.stream.read_to_end(&mut rest) {
        Ok(_) => true,
        Err(e) => e.kind() != std::io::ErrorKind::WouldBlock,
    };
    assert!(closed, "vf2's connection still open");
    assert!(vnicd.alive());
    round(&mut a, &mut b, 4);
}
