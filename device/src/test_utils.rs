//! Helpers for tests, benches and fuzzers that play the client's part.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd};

/// A memfd of `len` bytes sealed against growing and shrinking, as QEMU's
/// `memory-backend-memfd` makes guest RAM.
pub fn memfd(len: u64) -> File {
    let file = unsealed_memfd(len);
    // SAFETY: fcntl on a descriptor we own; adding seals has no memory effects.
    let rc = unsafe {
        libc::fcntl(
            file.as_raw_fd(),
            libc::F_ADD_SEALS,
            libc::F_SEAL_SHRINK | libc::F_SEAL_GROW,
        )
    };
    assert_eq!(rc, 0, "seal the memfd");
    file
}

/// A memfd of `len` bytes without seals, as a file of `memory-backend-file`
/// is: its owner may truncate it under the card.
pub fn unsealed_memfd(len: u64) -> File {
    let name = CString::new("vnic-test").expect("static name has no NUL");
    // SAFETY: memfd_create with a valid NUL-terminated name; the result is
    // checked before use.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_ALLOW_SEALING) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: fd was just created and nothing else owns it.
    let file = unsafe { File::from_raw_fd(fd) };
    file.set_len(len).expect("size the memfd");
    file
}

use crate::dma::{DmaSpace, DMA_READ, DMA_WRITE};
use crate::state::{ServiceType, BAT_ENTRY_SIZE, BAT_HEADER_SIZE, BAT_MAGIC};

/// Guest-physical base of the fake guest's memory.
pub const FAKE_BASE: u64 = 0x10_0000;
/// Size of the fake guest's memory.
pub const FAKE_SIZE: u64 = 16 << 20;

/// A fake driver: guest memory (a memfd mapped through [`DmaSpace`] as
/// QEMU's would be), a bump allocator, and helpers to lay out the
/// structures a guest driver builds (BAT/CLAT, rings, buffers). Shared by
/// unit tests, benches and fuzzers.
pub struct FakeDriver {
    dma: DmaSpace,
    next: u64,
    base: u64,
    size: u64,
    file: File,
}

impl Default for FakeDriver {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeDriver {
    pub fn new() -> Self {
        Self::with_memory(FAKE_BASE, FAKE_SIZE)
    }

    pub fn with_memory(base: u64, size: u64) -> Self {
        Self::with_file(base, size, memfd(size))
    }

    /// [`FakeDriver::with_memory`] on a file without seals, as QEMU's
    /// `memory-backend-file` gives: the test may truncate it under the card
    /// ([`FakeDriver::truncate`]).
    pub fn with_unsealed_memory(base: u64, size: u64) -> Self {
        Self::with_file(base, size, unsealed_memfd(size))
    }

    fn with_file(base: u64, size: u64, file: File) -> Self {
        let mut dma = DmaSpace::default();
        let clone = file.try_clone().expect("dup memfd");
        dma.map(base, size, 0, DMA_READ | DMA_WRITE, Some(clone))
            .expect("map fake guest memory");
        FakeDriver {
            dma,
            next: base,
            base,
            size,
            file,
        }
    }

    /// (address, size, file) of the guest memory, for a DMA_MAP of the same
    /// memory into a function: the card then sees what the driver writes.
    pub fn memory(&self) -> (u64, u64, File) {
        let file = self.file.try_clone().expect("dup memfd");
        (self.base, self.size, file)
    }

    pub fn dma(&self) -> &DmaSpace {
        &self.dma
    }

    /// Shrinks the guest memory's file to `len` bytes, as a hostile client
    /// would (only for [`FakeDriver::with_unsealed_memory`]). The driver's
    /// own mapping of it is lost too: its accesses past `len` read zeros.
    pub fn truncate(&self, len: u64) -> std::io::Result<()> {
        self.file.set_len(len)
    }

    /// Hands the guest memory to the card (a function's DmaSpace).
    pub fn into_dma(self) -> DmaSpace {
        self.dma
    }

    /// Zeroed guest memory of `len` bytes aligned to `align`.
    pub fn alloc(&mut self, len: u64, align: u64) -> u64 {
        let at = self.next.div_ceil(align) * align;
        self.next = at + len;
        self.dma
            .write(at, &vec![0; len as usize])
            .expect("fake guest memory exhausted");
        at
    }

    pub fn write_u16(&self, at: u64, v: u16) {
        self.dma.write(at, &v.to_le_bytes()).unwrap();
    }
    pub fn write_u32(&self, at: u64, v: u32) {
        self.dma.write(at, &v.to_le_bytes()).unwrap();
    }
    pub fn write_u64(&self, at: u64, v: u64) {
        self.dma.write(at, &v.to_le_bytes()).unwrap();
    }
    pub fn read_u16(&self, at: u64) -> u16 {
        let mut b = [0; 2];
        self.dma.read(at, &mut b).unwrap();
        u16::from_le_bytes(b)
    }
    pub fn read_u32(&self, at: u64) -> u32 {
        let mut b = [0; 4];
        self.dma.read(at, &mut b).unwrap();
        u32::from_le_bytes(b)
    }
    pub fn read_u64(&self, at: u64) -> u64 {
        let mut b = [0; 8];
        self.dma.read(at, &mut b).unwrap();
        u64::from_le_bytes(b)
    }

    /// A buffer holding `data`.
    pub fn buffer(&mut self, data: &[u8]) -> u64 {
        let at = self.alloc(data.len().max(1) as u64, 64);
        self.dma.write(at, data).unwrap();
        at
    }

    /// A descriptor ring of `size` 16-byte entries.
    pub fn ring(&mut self, size: u16) -> u64 {
        self.alloc(size as u64 * 16, 4096)
    }

    /// Writes send descriptor `index` of the ring at `ring`.
    pub fn put_tx(&self, ring: u64, index: u16, addr: u64, len: u16, eop: bool) {
        let at = ring + index as u64 * 16;
        self.write_u64(at, addr);
        self.write_u16(at + 8, len);
        self.write_u16(at + 10, eop as u16);
        self.write_u32(at + 12, 0);
    }

    /// Writes receive descriptor `index`: an empty buffer of `buf_len`.
    pub fn put_rx(&self, ring: u64, index: u16, addr: u64, buf_len: u16) {
        let at = ring + index as u64 * 16;
        self.write_u64(at, addr);
        self.write_u16(at + 8, buf_len);
        self.write_u16(at + 10, 0);
        self.write_u32(at + 12, 0);
    }

    /// Status word of descriptor `index`.
    pub fn status(&self, ring: u64, index: u16) -> u16 {
        self.read_u16(ring + index as u64 * 16 + 12)
    }

    /// Length the card wrote into receive descriptor `index`.
    pub fn rx_len(&self, ring: u64, index: u16) -> u16 {
        self.read_u16(ring + index as u64 * 16 + 10)
    }

    /// Queues `frames` on the send ring at `ring` (`size` entries) from
    /// `tail`, one buffer and descriptor each; returns the tail to write to
    /// the doorbell.
    pub fn queue_tx(&mut self, ring: u64, size: u16, tail: u16, frames: &[Vec<u8>]) -> u16 {
        let mut t = tail;
        for f in frames {
            let b = self.buffer(f);
            self.put_tx(ring, t, b, f.len() as u16, true);
            t = (t + 1) % size;
        }
        t
    }

    /// Posts `n` empty buffers of `buf_len` bytes on the receive ring at
    /// `ring` from `tail`; returns the tail to write to the doorbell.
    pub fn post_rx(&mut self, ring: u64, size: u16, tail: u16, n: u16, buf_len: u16) -> u16 {
        let mut t = tail;
        for _ in 0..n {
            let b = self.alloc(buf_len as u64, 64);
            self.put_rx(ring, t, b, buf_len);
            t = (t + 1) % size;
        }
        t
    }

    /// The frames in a receive ring that started empty at slot 0: every
    /// buffer up to the first one without DONE.
    pub fn received(&self, ring: u64, size: u16) -> Vec<Vec<u8>> {
        (0..size)
            .take_while(|&i| self.status(ring, i) & 1 != 0)
            .map(|i| self.rx_frame(ring, i))
            .collect()
    }

    /// The frames in a receive ring that started empty at slot 0, each
    /// joined from its buffers up to the one with EOP (multi-buffer
    /// receive), up to the first buffer without DONE.
    pub fn received_chained(&self, ring: u64, size: u16) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        let mut frame = Vec::new();
        for i in (0..size).take_while(|&i| self.status(ring, i) & 1 != 0) {
            frame.extend(self.rx_frame(ring, i));
            if self.status(ring, i) & 2 != 0 {
                frames.push(std::mem::take(&mut frame));
            }
        }
        frames
    }

    /// Frame bytes in receive descriptor `index`'s buffer.
    pub fn rx_frame(&self, ring: u64, index: u16) -> Vec<u8> {
        let addr = self.read_u64(ring + index as u64 * 16);
        let mut b = vec![0; self.rx_len(ring, index) as usize];
        self.dma.read(addr, &mut b).unwrap();
        b
    }
}

/// BAT, CLATs and blocks a fake driver built, with where every context is.
pub struct StateTables {
    pub bat: u64,
    /// Top-level CLAT per service type.
    pub clat: [u64; 2],
    contexts: [Vec<u64>; 2],
}

impl StateTables {
    /// Builds tables for `services` queues of each type with 4 KiB blocks,
    /// `entry_size`-byte contexts and `levels` (1 or 2) CLAT levels.
    pub fn build(drv: &mut FakeDriver, levels: u32, entry_size: u32, services: u32) -> Self {
        const B: u64 = 4096;
        let c = B / 8;
        let per_block = B / entry_size as u64;
        let bat = drv.alloc(4096, 4096);
        drv.write_u32(bat, BAT_MAGIC);
        drv.write_u32(bat + 4, 2);
        let mut clat = [0; 2];
        let mut contexts = [Vec::new(), Vec::new()];
        for ty in ServiceType::ALL {
            let blocks = (services as u64).div_ceil(per_block);
            let top = drv.alloc(B, B);
            let mut l2 = 0;
            for b in 0..blocks {
                let block = drv.alloc(B, B);
                let slot = match levels {
                    1 => top + b * 8,
                    _ => {
                        if b % c == 0 {
                            l2 = drv.alloc(B, B);
                            drv.write_u64(top + (b / c) * 8, l2);
                        }
                        l2 + (b % c) * 8
                    }
                };
                drv.write_u64(slot, block);
                for e in 0..per_block {
                    contexts[ty as usize].push(block + e * entry_size as u64);
                }
            }
            let entry = bat + BAT_HEADER_SIZE + ty as u64 * BAT_ENTRY_SIZE;
            drv.write_u64(entry, top);
            drv.write_u32(entry + 8, entry_size);
            drv.write_u32(entry + 12, B as u32);
            drv.write_u32(entry + 16, levels);
            drv.write_u32(entry + 20, services);
            clat[ty as usize] = top;
        }
        StateTables {
            bat,
            clat,
            contexts,
        }
    }

    /// Where the context of `queue` (service queue + 1) is.
    pub fn context(&self, ty: ServiceType, queue: u16) -> u64 {
        self.contexts[ty as usize][queue as usize]
    }

    /// Makes queue `queue`'s contexts describe the given rings, as a driver
    /// does before enabling the queue pair.
    pub fn set_rings(&self, drv: &FakeDriver, queue: u16, tx: (u64, u16), rx: (u64, u16)) {
        for (ty, (ring, size)) in [
            (ServiceType::SendQueue, tx),
            (ServiceType::ReceiveQueue, rx),
        ] {
            let at = self.context(ty, queue);
            drv.dma().write(at, &[0; 64]).unwrap();
            drv.write_u64(at, ring);
            drv.write_u16(at + 8, size);
        }
    }
}

/// A guest driving card functions through their registers, as vnic.ko
/// does, over fake memory: for the card-level tests of the data path,
/// management and migration.
pub mod guest {
    use crate::card::{Card, CardConfig};
    use crate::dma::{DMA_READ, DMA_WRITE};
    use crate::function::REGION_BAR0;
    use crate::model::Mac;
    use crate::regs::{FnStat, Reg, QP_AREA_BASE, QP_AREA_SIZE};

    use super::{FakeDriver, StateTables};

    pub const RING: u16 = 64;
    pub const BUF: u16 = 2048;

    /// A guest driving one function of the card: its memory, tables and the
    /// rings of every queue pair.
    pub struct Vm {
        pub f: usize,
        pub drv: FakeDriver,
        pub tables: StateTables,
        pub rings: Vec<(u64, u64)>,
        pub tx_tail: Vec<u16>,
        pub rx_tail: Vec<u16>,
    }

    pub fn wr(card: &mut Card, f: usize, off: u64, v: u32) {
        card.functions_mut()[f]
            .region_write(REGION_BAR0, off, &v.to_le_bytes())
            .unwrap();
        card.after_io(f);
    }

    pub fn rd(card: &mut Card, f: usize, off: u64) -> u32 {
        let mut b = [0; 4];
        card.functions_mut()[f]
            .region_read(REGION_BAR0, off, &mut b)
            .unwrap();
        u32::from_le_bytes(b)
    }

    pub fn qp_reg(q: u16, rel: u64) -> u64 {
        QP_AREA_BASE + q as u64 * QP_AREA_SIZE + rel
    }

    pub fn fn_stat(card: &Card, f: usize, s: FnStat) -> u64 {
        card.functions()[f].counters().get(s)
    }

    impl Vm {
        /// Maps memory, builds tables (for `QP_MAX` queue pairs, as vnic.ko
        /// does), writes the VCT, starts every vNIC's queue pair and posts
        /// `posted` receive buffers on each. The PF's exception queue pair
        /// is started by [`Vm::start_qp`].
        pub fn attach(card: &mut Card, f: usize, posted: u16) -> Vm {
            Self::attach_with(card, f, posted, FakeDriver::new())
        }

        /// [`Vm::attach`] with guest memory of the caller's choosing (e.g.
        /// [`FakeDriver::with_unsealed_memory`]).
        pub fn attach_with(card: &mut Card, f: usize, posted: u16, mut drv: FakeDriver) -> Vm {
            let (base, size, file) = drv.memory();
            card.functions_mut()[f]
                .dma_map(base, size, 0, DMA_READ | DMA_WRITE, Some(file))
                .unwrap();
            let nqp = card.functions()[f].queue_pairs().len() as u16;
            let services = card.functions()[f].qp_max();
            let tables = StateTables::build(&mut drv, 1, 64, services);
            let mut rings = Vec::new();
            for q in 0..nqp {
                let (tx, rx) = (drv.ring(RING), drv.ring(RING));
                tables.set_rings(&drv, q, (tx, RING), (rx, RING));
                rings.push((tx, rx));
            }
            wr(card, f, Reg::VctLo as u64, tables.bat as u32);
            wr(card, f, Reg::VctHi as u64, (tables.bat >> 32) as u32);
            assert_eq!(rd(card, f, Reg::VctStatus as u64), 0);
            let mut vm = Vm {
                f,
                drv,
                tables,
                rings,
                tx_tail: vec![0; nqp as usize],
                rx_tail: vec![0; nqp as usize],
            };
            for q in 0..nqp {
                wr(card, f, qp_reg(q, 0x08), 3);
                assert_eq!(rd(card, f, qp_reg(q, 0x0c)) & 3, 3, "queue pair {q} runs");
                vm.post(card, q, posted);
            }
            vm
        }

        /// Starts queue pair `q`, the next one after those started so far
        /// (the PF's exception queue pair after its vNIC), with new rings
        /// and `posted` receive buffers.
        pub fn start_qp(&mut self, card: &mut Card, q: u16, posted: u16) {
            assert_eq!(usize::from(q), self.rings.len(), "queue pairs in order");
            let (tx, rx) = (self.drv.ring(RING), self.drv.ring(RING));
            self.tables.set_rings(&self.drv, q, (tx, RING), (rx, RING));
            self.rings.push((tx, rx));
            self.tx_tail.push(0);
            self.rx_tail.push(0);
            wr(card, self.f, qp_reg(q, 0x08), 3);
            assert_eq!(
                rd(card, self.f, qp_reg(q, 0x0c)) & 3,
                3,
                "queue pair {q} runs"
            );
            self.post(card, q, posted);
        }

        pub fn post(&mut self, card: &mut Card, q: u16, n: u16) {
            let rx = self.rings[q as usize].1;
            let t = &mut self.rx_tail[q as usize];
            *t = self.drv.post_rx(rx, RING, *t, n, BUF);
            let t = *t;
            wr(card, self.f, qp_reg(q, 0x14), t as u32);
        }

        /// Queues frames on send queue `q` and rings the doorbell once.
        pub fn send(&mut self, card: &mut Card, q: u16, frames: &[Vec<u8>]) {
            let tx = self.rings[q as usize].0;
            let t = &mut self.tx_tail[q as usize];
            *t = self.drv.queue_tx(tx, RING, *t, frames);
            let t = *t;
            wr(card, self.f, qp_reg(q, 0x10), t as u32);
        }

        /// Restarts queue pair `q` with offload features `tx` and `rx` in
        /// its contexts (docs/datapath.md, "Offloads"); posted buffers stay
        /// posted. Returns QP_STATUS.
        pub fn set_features(&mut self, card: &mut Card, q: u16, tx: u16, rx: u16) -> u32 {
            wr(card, self.f, qp_reg(q, 0x08), 0);
            for (ty, v) in [
                (crate::state::ServiceType::SendQueue, tx),
                (crate::state::ServiceType::ReceiveQueue, rx),
            ] {
                self.drv.write_u16(self.tables.context(ty, q) + 18, v);
            }
            wr(card, self.f, qp_reg(q, 0x08), 3);
            rd(card, self.f, qp_reg(q, 0x0c))
        }

        /// Hands vNIC `q`'s receive filter to the card as vnic.ko does (a
        /// list in guest memory, QP_FILTER_LO/HI, then QP_RX_MODE) and
        /// returns QP_ADDR_STATUS.
        pub fn set_filter(
            &mut self,
            card: &mut Card,
            q: u16,
            promisc: bool,
            allmulti: bool,
            addrs: &[Mac],
        ) -> u32 {
            let list = self.drv.alloc(8 * addrs.len().max(1) as u64, 8);
            for (i, m) in addrs.iter().enumerate() {
                let mut entry = [0u8; 8];
                entry[..6].copy_from_slice(&m.0);
                self.drv
                    .write_u64(list + 8 * i as u64, u64::from_le_bytes(entry));
            }
            wr(card, self.f, qp_reg(q, 0x70), list as u32);
            wr(card, self.f, qp_reg(q, 0x74), (list >> 32) as u32);
            let mode = u32::from(promisc) | u32::from(allmulti) << 1 | (addrs.len() as u32) << 16;
            wr(card, self.f, qp_reg(q, 0x78), mode);
            rd(card, self.f, qp_reg(q, 0x2c))
        }

        /// Restarts queue pair `q` with `max_frame` in its receive
        /// context (docs/datapath.md, "Frames longer than the receiver's
        /// MTU"); posted buffers stay posted. Returns QP_STATUS.
        pub fn set_max_frame(&mut self, card: &mut Card, q: u16, max_frame: u16) -> u32 {
            wr(card, self.f, qp_reg(q, 0x08), 0);
            let rx = self
                .tables
                .context(crate::state::ServiceType::ReceiveQueue, q);
            self.drv.write_u16(rx + 20, max_frame);
            wr(card, self.f, qp_reg(q, 0x08), 3);
            rd(card, self.f, qp_reg(q, 0x0c))
        }

        /// Frames received so far on queue `q`, joined across buffers.
        pub fn received_chained(&self, q: u16) -> Vec<Vec<u8>> {
            self.drv.received_chained(self.rings[q as usize].1, RING)
        }

        /// Frames received so far on queue `q`.
        pub fn received(&self, q: u16) -> Vec<Vec<u8>> {
            self.drv.received(self.rings[q as usize].1, RING)
        }
    }

    pub fn mac(card: &Card, f: usize, q: u16) -> Mac {
        card.functions()[f].queue_pairs()[q as usize].mac
    }

    pub fn eth(dst: Mac, src: Mac, vlan: Option<u16>, len: usize) -> Vec<u8> {
        let mut f = Vec::new();
        f.extend_from_slice(&dst.0);
        f.extend_from_slice(&src.0);
        if let Some(v) = vlan {
            f.extend_from_slice(&[0x81, 0, (v >> 8) as u8, v as u8]);
        }
        f.extend_from_slice(&[0x08, 0x00]);
        f.extend((0..len.saturating_sub(f.len())).map(|i| i as u8));
        f
    }

    pub fn card() -> Card {
        Card::new(CardConfig::default()).unwrap()
    }
}
