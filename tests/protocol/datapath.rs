//! The data path driven over the vfio-user protocol, as QEMU drives it: the
//! "guests" are fake drivers whose memory is shared with vnicd through
//! DMA_MAP memfds, registers are written with posted (NO_REPLY)
//! REGION_WRITEs, and interrupts arrive on eventfds registered with SET_IRQS.

use std::os::fd::AsRawFd;
use std::time::Duration;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vnic::test_utils::{FakeDriver, StateTables};
use vnic_tests::{
    dma_map_body, wait_for, RawClient, Vnicd, DMA_MAP, NO_REPLY, REGION_WRITE, SET_IRQS,
};

const BAR0: u32 = 0;
const CONFIG: u32 = 7;
const MSIX_CONTROL: u64 = 0x52;
const VCT_LO: u64 = 0x40;
const VCT_HI: u64 = 0x44;
const VCT_STATUS: u64 = 0x48;
const RING: u16 = 64;
const BUF: u16 = 2048;

fn qp(q: u16, rel: u64) -> u64 {
    0x1000 + q as u64 * 0x80 + rel
}

/// One guest attached to one function.
struct Guest {
    client: RawClient,
    drv: FakeDriver,
    tables: StateTables,
    rings: Vec<(u64, u64)>,
    tx_tail: u16,
    irqs: Vec<EventFd>,
}

impl Guest {
    fn attach(vnicd: &Vnicd, function: &str, queue_pairs: u16) -> Guest {
        let mut client = RawClient::negotiated(&vnicd.socket(function));
        let mut drv = FakeDriver::new();
        let (base, size, file) = drv.memory();
        let r = client.call(
            DMA_MAP,
            0,
            &dma_map_body(3, 0, base, size),
            &[file.as_raw_fd()],
        );
        assert!(!r.is_error(), "DMA_MAP: {r:?}");
        // MSI-X on, one eventfd per vector (misc + queue pairs).
        client.region_write(CONFIG, MSIX_CONTROL, &0x8000u16.to_le_bytes(), 0);
        let irqs: Vec<EventFd> = (0..=queue_pairs)
            .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
            .collect();
        let mut body = Vec::new();
        for v in [20u32, (1 << 5) | (1 << 2), 2, 0, irqs.len() as u32] {
            body.extend_from_slice(&v.to_le_bytes());
        }
        let fds: Vec<i32> = irqs.iter().map(|e| e.as_raw_fd()).collect();
        assert!(!client.call(SET_IRQS, 0, &body, &fds).is_error());

        let tables = StateTables::build(&mut drv, 2, 64, queue_pairs as u32);
        let mut rings = Vec::new();
        for q in 0..queue_pairs {
            let (tx, rx) = (drv.ring(RING), drv.ring(RING));
            tables.set_rings(&drv, q, (tx, RING), (rx, RING));
            rings.push((tx, rx));
        }
        let mut g = Guest {
            client,
            drv,
            tables,
            rings,
            tx_tail: 0,
            irqs,
        };
        let bat = g.tables.bat;
        g.posted(VCT_LO, bat as u32);
        g.posted(VCT_HI, (bat >> 32) as u32);
        for q in 0..queue_pairs {
            g.posted(qp(q, 0x08), 3);
            // Post every receive buffer but one (a full ring keeps one slot).
            let rx = g.rings[q as usize].1;
            let tail = g.drv.post_rx(rx, RING, 0, RING - 1, BUF);
            g.posted(qp(q, 0x14), tail as u32);
            // A read is a round trip: every posted write before it is done.
            assert_eq!(g.read(qp(q, 0x0c)) & 0xf, 0b0011, "queue pair {q} runs");
        }
        g
    }

    /// A register write the way QEMU sends BAR writes: posted.
    fn posted(&mut self, offset: u64, v: u32) {
        self.client
            .region_write(BAR0, offset, &v.to_le_bytes(), NO_REPLY);
    }

    fn read(&mut self, offset: u64) -> u32 {
        self.client.read_u32(BAR0, offset)
    }

    fn send(&mut self, frames: &[Vec<u8>]) {
        let tx = self.rings[0].0;
        self.tx_tail = self.drv.queue_tx(tx, RING, self.tx_tail, frames);
        self.posted(qp(0, 0x10), self.tx_tail as u32);
    }

    fn received(&self, q: u16) -> Vec<Vec<u8>> {
        self.drv.received(self.rings[q as usize].1, RING)
    }
}

fn mac(function: u8, q: u8) -> [u8; 6] {
    [2, 0x76, 0x6e, 0, function, q]
}

fn frame(dst: [u8; 6], src: [u8; 6], n: usize) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..n).map(|i| (i * 7 + n) as u8));
    f
}

#[test]
fn frames_cross_between_two_clients_with_posted_doorbells_and_msix() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut a = Guest::attach(&vnicd, "vf0", 2);
    let mut b = Guest::attach(&vnicd, "vf1", 2);
    let frames: Vec<Vec<u8>> = (0..10)
        .map(|i| frame(mac(2, 1), mac(1, 0), 46 + 140 * i))
        .collect();
    a.send(&frames);
    wait_for(
        "ten frames in VF1's queue pair 1",
        Duration::from_secs(5),
        || b.received(1).len() == 10,
    );
    assert_eq!(b.received(1), frames);
    // Interrupts: VF1 vector 2 (queue pair 1) and VF0 vector 1 (send
    // completions) fired; VF1's queue pair 0 stayed quiet.
    assert!(b.irqs[2].read().is_ok(), "receive interrupt");
    assert!(a.irqs[1].read().is_ok(), "send completion interrupt");
    assert!(b.irqs[1].read().is_err(), "no interrupt for an idle queue");
    // Counters, from BAR0 (queue and function) and from guest memory.
    assert_eq!(b.read(qp(1, 0x50)), 10, "RX_PACKETS");
    assert_eq!(a.read(0x100), 10, "function TX_PACKETS");
    let ctx = a.tables.context(vnic::state::ServiceType::SendQueue, 0);
    wait_for("context written back", Duration::from_secs(5), || {
        a.drv.read_u64(ctx + 24) == 10
    });
    assert!(vnicd.alive());
}

#[test]
fn a_client_vanishing_mid_traffic_leaves_the_others_working() {
    let mut vnicd = Vnicd::start(&["--vfs", "3"]);
    let mut a = Guest::attach(&vnicd, "vf0", 2);
    let b = Guest::attach(&vnicd, "vf1", 2);
    let mut c = Guest::attach(&vnicd, "vf2", 2);
    // A queues frames and goes away in the middle of a message.
    a.send(&vec![frame(mac(2, 0), mac(1, 0), 100); 5]);
    let h = a.client.header(REGION_WRITE, NO_REPLY, 40);
    a.client.send_bytes(&h).unwrap();
    let bat = a.tables.bat;
    let ctx = a.tables.context(vnic::state::ServiceType::SendQueue, 0);
    drop(a.client);
    // C still reaches B.
    c.send(&vec![frame(mac(2, 0), mac(3, 0), 200); 3]);
    wait_for(
        "B has A's 5 and C's 3 frames",
        Duration::from_secs(5),
        || b.received(0).len() == 8,
    );
    // A's queue state is in A's memory: running, with its counters.
    assert_eq!(a.drv.read_u16(ctx + 10) & 1, 1, "still marked RUNNING");
    assert_eq!(a.drv.read_u64(ctx + 24), 5);
    assert_ne!(bat, 0);
    assert!(vnicd.alive());
    let log = vnicd.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("vf0") && l.contains("disconnect")),
        "{log}"
    );
}

#[test]
fn a_bad_vct_or_bad_ring_fails_only_that_function() {
    let vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut b = Guest::attach(&vnicd, "vf1", 2);
    let mut bad = RawClient::negotiated(&vnicd.socket("vf0"));
    let drv = FakeDriver::new();
    let (base, size, file) = drv.memory();
    let r = bad.call(
        DMA_MAP,
        0,
        &dma_map_body(3, 0, base, size),
        &[file.as_raw_fd()],
    );
    assert!(!r.is_error());
    // A VCT pointing at zeroes: bad magic.
    bad.region_write(BAR0, VCT_LO, &(base as u32).to_le_bytes(), NO_REPLY);
    bad.region_write(BAR0, VCT_HI, &0u32.to_le_bytes(), NO_REPLY);
    assert_eq!(bad.read_u32(BAR0, VCT_STATUS), 2);
    // Enabling a queue pair without a usable BAT: CONTEXT error (6).
    bad.region_write(BAR0, qp(0, 0x08), &3u32.to_le_bytes(), NO_REPLY);
    let status = bad.read_u32(BAR0, qp(0, 0x0c));
    assert_eq!(status & 0xf, 0b1100, "both queues in error");
    assert_eq!((status >> 8) & 0xff, 6);
    // A VCT outside guest memory: unreadable.
    bad.region_write(BAR0, VCT_LO, &0xdead_0000u32.to_le_bytes(), NO_REPLY);
    bad.region_write(BAR0, VCT_HI, &0u32.to_le_bytes(), NO_REPLY);
    assert_eq!(bad.read_u32(BAR0, VCT_STATUS), 1);
    // A doorbell on a queue pair beyond N is a bad access, counted.
    bad.region_write(BAR0, qp(5, 0x10), &1u32.to_le_bytes(), NO_REPLY);
    assert_eq!(bad.read_u32(BAR0, 0x34), 1, "BAD_ACCESS");
    // VF1 is untouched and keeps working.
    assert_eq!(b.read(qp(0, 0x0c)) & 0xf, 0b0011);
    b.send(&[frame(mac(2, 1), mac(2, 0), 60)]);
    wait_for(
        "VF1 talks to itself across queue pairs",
        Duration::from_secs(5),
        || b.received(1).len() == 1,
    );
}
