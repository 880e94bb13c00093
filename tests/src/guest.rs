//! A fake guest attached to one function over vfio-user, as QEMU and
//! vnic.ko would drive it: memory shared through a DMA_MAP memfd, posted
//! (NO_REPLY) register writes, MSI-X on eventfds registered with SET_IRQS.

use std::os::fd::AsRawFd;

use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vnic::test_utils::{FakeDriver, StateTables};

use crate::{dma_map_body, RawClient, Vnicd, DMA_MAP, NO_REPLY, SET_IRQS};

pub const BAR0: u32 = 0;
/// The MSI-X BAR (table and PBA).
pub const MSIX_BAR: u32 = 2;
pub const CONFIG: u32 = 7;
pub const MSIX_CONTROL: u64 = 0x52;
pub const COMMAND: u64 = 0x04;
/// Command register: Memory Space Enable and Bus Master Enable.
pub const COMMAND_MEM_MASTER: u16 = 0x6;
pub const IRQ_CAUSE: u64 = 0x4c;
pub const VCT_LO: u64 = 0x40;
pub const VCT_HI: u64 = 0x44;
pub const VCT_STATUS: u64 = 0x48;
pub const RING: u16 = 64;
pub const BUF: u16 = 2048;

pub fn qp(q: u16, rel: u64) -> u64 {
    0x1000 + q as u64 * 0x80 + rel
}

/// One guest attached to one function.
pub struct Guest {
    pub client: RawClient,
    pub drv: FakeDriver,
    pub tables: StateTables,
    pub rings: Vec<(u64, u64)>,
    /// The send doorbell value of each queue pair.
    pub tx_tails: Vec<u16>,
    pub irqs: Vec<EventFd>,
}

/// Connects to `function` the way QEMU does for a guest: DMA_MAP of its
/// memory, MSI-X on with one eventfd per vector (misc + queue pairs), and
/// the command register's Memory Space and Bus Master Enable, as the
/// driver's probe (or `pci_restore_state`) sets them.
fn connect(
    vnicd: &Vnicd,
    function: &str,
    drv: &FakeDriver,
    vectors: u16,
) -> (RawClient, Vec<EventFd>) {
    let mut client = RawClient::negotiated(&vnicd.socket(function));
    let (base, size, file) = drv.memory();
    let r = client.call(
        DMA_MAP,
        0,
        &dma_map_body(3, 0, base, size),
        &[file.as_raw_fd()],
    );
    assert!(!r.is_error(), "DMA_MAP: {r:?}");
    client.region_write(CONFIG, MSIX_CONTROL, &0x8000u16.to_le_bytes(), 0);
    let irqs: Vec<EventFd> = (0..vectors)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let mut body = Vec::new();
    for v in [20u32, (1 << 5) | (1 << 2), 2, 0, irqs.len() as u32] {
        body.extend_from_slice(&v.to_le_bytes());
    }
    let fds: Vec<i32> = irqs.iter().map(|e| e.as_raw_fd()).collect();
    assert!(!client.call(SET_IRQS, 0, &body, &fds).is_error());
    client.region_write(CONFIG, COMMAND, &COMMAND_MEM_MASTER.to_le_bytes(), 0);
    (client, irqs)
}

impl Guest {
    pub fn attach(vnicd: &Vnicd, function: &str, queue_pairs: u16) -> Guest {
        Self::attach_with(vnicd, function, queue_pairs, FakeDriver::new())
    }

    /// [`Guest::attach`] with guest memory of the caller's choosing (e.g.
    /// at another guest-physical base, so that two guests' addresses do not
    /// overlap and a test can name one guest's memory in the other's
    /// descriptors).
    pub fn attach_with(vnicd: &Vnicd, function: &str, queue_pairs: u16, drv: FakeDriver) -> Guest {
        Self::attach_inner(vnicd, function, queue_pairs, drv, true)
    }

    /// [`Guest::attach_with`] with every queue pair running but no receive
    /// buffer posted: the test writes the receive descriptors itself (the
    /// card may read posted descriptors ahead, so they must be right before
    /// the doorbell).
    pub fn attach_without_buffers(
        vnicd: &Vnicd,
        function: &str,
        queue_pairs: u16,
        drv: FakeDriver,
    ) -> Guest {
        Self::attach_inner(vnicd, function, queue_pairs, drv, false)
    }

    fn attach_inner(
        vnicd: &Vnicd,
        function: &str,
        queue_pairs: u16,
        mut drv: FakeDriver,
        post_rx: bool,
    ) -> Guest {
        let (client, irqs) = connect(vnicd, function, &drv, queue_pairs + 1);

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
            tx_tails: vec![0; queue_pairs as usize],
            irqs,
        };
        let bat = g.tables.bat;
        g.posted(VCT_LO, bat as u32);
        g.posted(VCT_HI, (bat >> 32) as u32);
        for q in 0..queue_pairs {
            g.posted(qp(q, 0x08), 3);
            if post_rx {
                // Post every receive buffer but one (a full ring keeps one
                // slot).
                let rx = g.rings[q as usize].1;
                let tail = g.drv.post_rx(rx, RING, 0, RING - 1, BUF);
                g.posted(qp(q, 0x14), tail as u32);
            }
            // A read is a round trip: every posted write before it is done.
            assert_eq!(g.read(qp(q, 0x0c)) & 0xf, 0b0011, "queue pair {q} runs");
        }
        g
    }

    /// The same guest restored by QEMU onto `function` of (another) vnicd:
    /// a new connection and mapping of the same memory, and nothing else;
    /// no VCT write, no queue register (the card resumes from what
    /// management gave it).
    pub fn restore(mut self, vnicd: &Vnicd, function: &str) -> Guest {
        let vectors = self.rings.len() as u16 + 1;
        (self.client, self.irqs) = connect(vnicd, function, &self.drv, vectors);
        self
    }

    /// A register write the way QEMU sends BAR writes: posted.
    pub fn posted(&mut self, offset: u64, v: u32) {
        self.client
            .region_write(BAR0, offset, &v.to_le_bytes(), NO_REPLY);
    }

    pub fn read(&mut self, offset: u64) -> u32 {
        self.client.read_u32(BAR0, offset)
    }

    /// Queues frames on send queue 0 and rings its doorbell once.
    pub fn send(&mut self, frames: &[Vec<u8>]) {
        self.send_on(0, frames);
    }

    /// Queues frames on send queue `q` and rings its doorbell once.
    pub fn send_on(&mut self, q: u16, frames: &[Vec<u8>]) {
        let tx = self.rings[q as usize].0;
        let tail = &mut self.tx_tails[q as usize];
        *tail = self.drv.queue_tx(tx, RING, *tail, frames);
        let tail = *tail;
        self.posted(qp(q, 0x10), tail as u32);
    }

    /// Status words of the last `n` descriptors queued on send queue `q`.
    pub fn sent_status(&self, q: u16, n: u16) -> Vec<u16> {
        let (tx, tail) = (self.rings[q as usize].0, self.tx_tails[q as usize]);
        (1..=n)
            .rev()
            .map(|back| self.drv.status(tx, (tail + RING - back) % RING))
            .collect()
    }

    pub fn received(&self, q: u16) -> Vec<Vec<u8>> {
        self.drv.received(self.rings[q as usize].1, RING)
    }
}

pub fn mac(function: u8, q: u8) -> [u8; 6] {
    card_mac(0, function, q)
}

/// A vNIC's default MAC on card `card` (`--card-id`): function `function`
/// (1 = vf0), queue pair `q`.
pub fn card_mac(card: u8, function: u8, q: u8) -> [u8; 6] {
    [2, 0x76, 0x6e, card, function, q]
}

/// An Ethernet frame of `n` payload bytes (ethertype 0x88b5, local
/// experimental), numbered by `tag` so frames can be told apart.
pub fn tagged_frame(dst: [u8; 6], src: [u8; 6], tag: u8, n: usize) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x88, 0xb5, tag]);
    f.extend((0..n).map(|i| (i as u8).wrapping_mul(13)));
    f
}

/// Two UDP ports free on 127.0.0.1 now (bound, read back, released), for
/// two vnicd joined by a UDP uplink.
pub fn free_udp_ports() -> (u16, u16) {
    let a = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    let b = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind");
    (
        a.local_addr().unwrap().port(),
        b.local_addr().unwrap().port(),
    )
}

pub fn frame(dst: [u8; 6], src: [u8; 6], n: usize) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&src);
    f.extend_from_slice(&[0x08, 0x00]);
    f.extend((0..n).map(|i| (i * 7 + n) as u8));
    f
}
