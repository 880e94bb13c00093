//! Descriptor rings in guest memory (docs/datapath.md).
//!
//! A ring is validated once when its queue starts (size, alignment, wholly
//! inside mapped memory); every later step checks what the driver wrote into
//! a descriptor before using it, bounds every walk by the number of
//! descriptors the driver handed over, and turns a violation into a
//! [`QueueError`] for that queue alone.

use bitfield_struct::bitfield;
use thiserror::Error;
use vm_memory::endian::{Le16, Le64};
use vm_memory::ByteValued;

use crate::dma::{DmaSpace, GuestBytesMut};

/// Bytes of one descriptor.
pub const DESC_SIZE: u64 = 16;
/// Smallest and largest ring (entries; powers of two).
pub const MIN_RING: u16 = 8;
pub const MAX_RING: u16 = 4096;
/// Largest frame the card switches: MTU 9000 plus Ethernet and VLAN headers,
/// with room to spare.
pub const MAX_FRAME: usize = 9216;
/// Smallest frame: an Ethernet header.
pub const MIN_FRAME: usize = 14;
/// Most descriptors in one send frame.
pub const MAX_CHAIN: usize = 32;
/// Largest GSO frame (without its offload header) a send queue with
/// [`Features::gso`] takes: a 64 KiB IP packet and its link headers, with
/// room to spare (docs/datapath.md, "Offloads").
pub const MAX_GSO_FRAME: usize = 65600;
/// Accepted receive buffer sizes.
pub const MIN_RX_BUF: u16 = 64;
pub const MAX_RX_BUF: u16 = 16384;

/// Offloads a queue uses: the driver-written `features` of its context,
/// read when the queue starts (docs/datapath.md, "Offloads"). The card
/// offers all of them (the FEATURES register).
#[bitfield(u16)]
#[derive(PartialEq, Eq)]
pub struct Features {
    /// Every frame starts with a `struct virtio_net_hdr`.
    pub vnet_hdr: bool,
    /// Send: frames may ask for checksum completion. Receive: frames may
    /// arrive with a partial checksum.
    pub csum: bool,
    /// Send: frames may be TCP GSO frames. Receive: such frames may arrive
    /// unsegmented.
    pub gso: bool,
    /// Receive only: a frame may span consecutive buffers.
    pub multi_buf: bool,
    /// Interface 1.7: the driver takes completions up to the head the
    /// card writes into the context, not from DONE bits alone: a
    /// completion is then visible only once the card recorded it, which
    /// is what lets a restarted card resume exactly (docs/restart.md,
    /// "Crash consistency"). Both directions, any queue pair.
    pub head_wb: bool,
    #[bits(11)]
    __: u16,
}

impl Features {
    /// Everything the card offers: the FEATURES register
    /// ([`crate::regs::FEATURES_OFFERED`]).
    pub const OFFERED: Features = Features::from_bits(crate::regs::FEATURES_OFFERED);

    /// Whether a queue may use these: known bits that follow the
    /// dependencies (CSUM needs VNET_HDR, GSO needs CSUM, a receive queue
    /// with GSO needs MULTI_BUF), MULTI_BUF only on a receive queue, and
    /// only MULTI_BUF (and HEAD_WB) on the PF's exception queue pair.
    pub fn valid(self, receive: bool, exception: bool) -> bool {
        let known = self.into_bits() & !Self::OFFERED.into_bits() == 0;
        let deps = (!self.csum() || self.vnet_hdr())
            && (!self.gso() || self.csum())
            && (!receive || !self.gso() || self.multi_buf());
        let direction = receive || !self.multi_buf();
        let exception_only = Features::new().with_multi_buf(true).with_head_wb(true);
        let exception_ok = !exception || self.into_bits() & !exception_only.into_bits() == 0;
        known && deps && direction && exception_ok
    }

    /// Bytes of the per-frame header in front of every frame.
    pub fn header_len(self) -> usize {
        if self.vnet_hdr() {
            crate::offload::HDR_LEN
        } else {
            0
        }
    }
}

/// A descriptor as in guest memory. Send: addr, len, flags, status. Receive:
/// addr, buf_len (in `len`), frame length (in `flags`'s place), status.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct Desc {
    pub addr: Le64,
    pub len: Le16,
    /// Send: [`TxFlags`]. Receive: the frame length the card wrote.
    pub word: Le16,
    pub status: Le16,
    pub reserved: Le16,
}

// SAFETY: little-endian integers without padding (size asserted below).
unsafe impl ByteValued for Desc {}
const _: () = assert!(std::mem::size_of::<Desc>() == DESC_SIZE as usize);

impl Desc {
    /// A send descriptor the fast path takes as a whole frame behind an
    /// offload header of `header` bytes (0 without one): EOP, and a frame
    /// length the general path ([`tx_take`]) accepts for a frame that is
    /// no GSO frame. Its buffer (address, length with the header); None
    /// for anything else, which the general path checks and reports.
    pub fn plain_tx(&self, header: usize) -> Option<(u64, usize)> {
        let len = self.len.to_native() as usize;
        let eop = TxFlags::from_bits(self.word.to_native()).eop();
        let frame = len.checked_sub(header)?;
        (eop && (MIN_FRAME..=MAX_FRAME).contains(&frame)).then_some((self.addr.to_native(), len))
    }

    /// The buffer of a receive descriptor if it is one the general path
    /// accepts ([`rx_put`]) and `len` bytes fit in it; None for anything
    /// else.
    pub fn rx_fits(&self, len: usize) -> Option<u64> {
        let buf_len = self.len.to_native();
        let valid = (MIN_RX_BUF..=MAX_RX_BUF).contains(&buf_len);
        (valid && len <= buf_len as usize).then_some(self.addr.to_native())
    }
}

/// Driver-written flags of a send descriptor.
#[bitfield(u16)]
pub struct TxFlags {
    /// Last buffer of the frame.
    pub eop: bool,
    #[bits(15)]
    __: u16,
}

/// Card-written status of a send descriptor.
#[bitfield(u16)]
pub struct DescStatus {
    pub done: bool,
    /// Send: the switch dropped the frame (spoofed source, VLAN not joined).
    pub dropped: bool,
    #[bits(6)]
    __: u8,
    /// Queue error code when the queue failed on this descriptor.
    pub error: u8,
}

/// Card-written status of a receive descriptor.
#[bitfield(u16)]
pub struct RxStatus {
    pub done: bool,
    /// Last buffer of the frame.
    pub eop: bool,
    #[bits(6)]
    __: u8,
    /// Queue error code when the queue failed on this descriptor.
    pub error: u8,
}

/// Why a queue stopped. The discriminant is the code in QP_STATUS and in the
/// context's `error` byte.
#[derive(Clone, Copy, Debug, Error, PartialEq, Eq)]
pub enum QueueError {
    #[error("ring base {base:#x} size {size} invalid or not in guest memory")]
    Ring { base: u64, size: u16 },
    #[error("descriptor {index}: buffer {addr:#x}+{len} not in guest memory")]
    Dma { index: u16, addr: u64, len: usize },
    #[error("descriptor {index}: length {len} out of range")]
    Length { index: u16, len: usize },
    #[error("doorbell {value} beyond ring of {size}")]
    Index { value: u32, size: u16 },
    #[error("frame at descriptor {index} has no end within {count} descriptors")]
    Chain { index: u16, count: usize },
    #[error("queue context unusable")]
    Context,
    #[error("queue features {0:#06x} not offered or inconsistent")]
    Features(u16),
}

impl QueueError {
    pub fn code(&self) -> u8 {
        match self {
            QueueError::Ring { .. } => 1,
            QueueError::Dma { .. } => 2,
            QueueError::Length { .. } => 3,
            QueueError::Index { .. } => 4,
            QueueError::Chain { .. } => 5,
            QueueError::Context => 6,
            QueueError::Features(_) => 7,
        }
    }
}

/// A validated ring and the card's indices into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ring {
    base: u64,
    size: u16,
    /// Next descriptor the card processes.
    pub head: u16,
    /// First descriptor the driver has not handed over.
    pub tail: u16,
}

impl Ring {
    /// Checks a ring the driver described, once, when its queue starts.
    pub fn new(
        dma: &DmaSpace,
        base: u64,
        size: u16,
        head: u16,
        tail: u16,
    ) -> Result<Ring, QueueError> {
        let bad = QueueError::Ring { base, size };
        let shape_ok = size.is_power_of_two()
            && (MIN_RING..=MAX_RING).contains(&size)
            && base % DESC_SIZE == 0
            && head < size
            && tail < size;
        // Receive descriptors are written back, send ones too (status).
        if !shape_ok || !dma.contains(base, size as usize * DESC_SIZE as usize, true) {
            return Err(bad);
        }
        Ok(Ring {
            base,
            size,
            head,
            tail,
        })
    }

    pub fn size(&self) -> u16 {
        self.size
    }

    /// Guest address of the ring.
    pub fn base(&self) -> u64 {
        self.base
    }

    fn next(&self, i: u16) -> u16 {
        (i + 1) & (self.size - 1)
    }

    /// Descriptors handed to the card and not yet processed.
    pub fn pending(&self) -> u16 {
        self.tail.wrapping_sub(self.head) & (self.size - 1)
    }

    /// Moves the head past `n` descriptors the card processed (at most
    /// the pending ones).
    pub fn advance(&mut self, n: u16) {
        debug_assert!(n <= self.pending());
        self.head = self.head.wrapping_add(n) & (self.size - 1);
    }

    /// A doorbell: the driver's new tail.
    pub fn set_tail(&mut self, value: u32) -> Result<(), QueueError> {
        if value >= self.size as u32 {
            return Err(QueueError::Index {
                value,
                size: self.size,
            });
        }
        self.tail = value as u16;
        Ok(())
    }

    fn addr(&self, index: u16) -> u64 {
        self.base + index as u64 * DESC_SIZE
    }

    fn read(&self, dma: &DmaSpace, index: u16) -> Result<Desc, QueueError> {
        // The ring was checked at start; a failure means the memory went away.
        dma.read_obj(self.addr(index))
            .map_err(|_| QueueError::Ring {
                base: self.base,
                size: self.size,
            })
    }

    /// Writes the card's half of descriptor `index` (`d`, as read before):
    /// `word` and `status` with one 8-byte store together with the
    /// driver's length, so the driver never sees DONE before the length.
    fn write_back(
        &self,
        dma: &DmaSpace,
        index: u16,
        d: &Desc,
        word: u16,
        status: u16,
    ) -> Result<(), QueueError> {
        let tail = write_back_bytes(d, word, status);
        dma.write(self.addr(index) + 8, &tail)
            .map_err(|_| QueueError::Ring {
                base: self.base,
                size: self.size,
            })
    }
}

/// A running ring's descriptors, found in guest memory once for a burst of
/// frames on the fast path (`crate::datapath`, fast.rs): one lookup, then plain
/// loads and stores, instead of a lookup per descriptor access. The range
/// is the one [`Ring::new`] checked (mapped, writable).
pub struct Slots<'a> {
    ring: Ring,
    mem: GuestBytesMut<'a>,
}

impl Ring {
    /// The ring's descriptors in `dma`, if one mapping holds them all (a
    /// ring in two RAM sections takes the general path).
    pub fn slots<'a>(&self, dma: &'a DmaSpace) -> Option<Slots<'a>> {
        let len = self.size as usize * DESC_SIZE as usize;
        let mem = dma.target(self.base, len).ok().flatten()?;
        Some(Slots { ring: *self, mem })
    }
}

impl Slots<'_> {
    /// Copies the pending descriptors from the head into `out`, as many as
    /// it holds, with one read (two where the ring wraps); returns how
    /// many.
    pub fn read_pending(&self, out: &mut [Desc]) -> usize {
        let n = out.len().min(self.ring.pending() as usize);
        let first = n.min((self.ring.size - self.ring.head) as usize);
        let src = self.mem.as_source();
        let at = |i: u16| i as usize * DESC_SIZE as usize;
        let mut got = src.read_objs(at(self.ring.head), &mut out[..first]);
        if got == first && first < n {
            got += src.read_objs(0, &mut out[first..n]);
        }
        got
    }

    /// Writes the completed send descriptors `done` (as read from the
    /// head, in order) back with DONE, with one write (two where the ring
    /// wraps): the same bytes [`tx_complete`] writes, with the driver's
    /// address rewritten as it was read.
    pub fn complete_tx(&self, done: &[Desc]) -> bool {
        let status = DescStatus::new().with_done(true).into_bits();
        let mut bytes = [0u8; MAX_BURST * DESC_SIZE as usize];
        let Some(bytes) = bytes.get_mut(..done.len() * DESC_SIZE as usize) else {
            return false;
        };
        for (chunk, d) in bytes.chunks_exact_mut(DESC_SIZE as usize).zip(done) {
            let mut d = *d;
            d.status = status.into();
            d.reserved = 0.into();
            chunk.copy_from_slice(d.as_slice());
        }
        let head = self.ring.head as usize;
        let first = done.len().min(self.ring.size as usize - head) * DESC_SIZE as usize;
        self.mem.write(head * DESC_SIZE as usize, &bytes[..first])
            && (first == bytes.len() || self.mem.write(0, &bytes[first..]))
    }

    /// Writes receive descriptor `index` (`d`, as read) back with the
    /// frame length `len` and `status`: one 8-byte store after the data,
    /// as [`rx_put`] writes it.
    pub fn complete_rx(&self, index: u16, d: &Desc, len: u16, status: RxStatus) -> bool {
        let tail = write_back_bytes(d, len, status.into_bits());
        let at = index as usize * DESC_SIZE as usize + 8;
        self.mem.store_u64(at, u64::from_le_bytes(tail))
    }
}

/// Most frames the fast path moves in one burst: a NAPI budget's worth,
/// and what the descriptors of one burst's reads and writes hold.
pub const MAX_BURST: usize = 64;

/// The 8 bytes at offset 8 of a descriptor the card writes back: the
/// driver's length, `word` and `status` (and a zero reserved field).
fn write_back_bytes(d: &Desc, word: u16, status: u16) -> [u8; 8] {
    let mut tail = [0u8; 8];
    tail[0..2].copy_from_slice(&d.len.to_native().to_le_bytes());
    tail[2..4].copy_from_slice(&word.to_le_bytes());
    tail[4..6].copy_from_slice(&status.to_le_bytes());
    tail
}

impl Ring {
    /// Writes the card's half of send descriptor `index`: `status` (and the
    /// reserved field, 0) with one 4-byte store. The driver's address,
    /// length and flags stay as they are, so completing a frame needs no
    /// second read of its descriptors.
    fn write_status(&self, dma: &DmaSpace, index: u16, status: u16) -> Result<(), QueueError> {
        let word = u32::from(status).to_le_bytes();
        dma.write(self.addr(index) + 12, &word)
            .map_err(|_| QueueError::Ring {
                base: self.base,
                size: self.size,
            })
    }
}

/// Send descriptors read ahead of the card's head, up to [`MAX_BURST`] with
/// one DMA read (two where the ring wraps), as a NIC fetches descriptors
/// in bursts, rather than one read per descriptor. The card owns pending
/// descriptors until it writes them back, so they stay as read. Valid for
/// one turn of one send queue (the caller clears it before): within it the
/// head moves less than a ring's length, so positions are unambiguous.
#[derive(Clone, Debug)]
pub struct Ahead {
    descs: [Desc; MAX_BURST],
    /// The ring they belong to, and its head when they were read.
    base: u64,
    size: u16,
    head: u16,
    count: usize,
}

impl Default for Ahead {
    fn default() -> Self {
        Ahead {
            descs: [Desc::default(); MAX_BURST],
            base: 0,
            size: 0,
            head: 0,
            count: 0,
        }
    }
}

impl Ahead {
    /// Forgets what was read (a new turn, another queue).
    pub fn clear(&mut self) {
        self.count = 0;
    }

    /// Pending descriptor `index` of `ring`, read ahead if need be.
    fn get(&mut self, ring: &Ring, dma: &DmaSpace, index: u16) -> Result<Desc, QueueError> {
        if let Some(d) = self.cached(ring, index) {
            return Ok(d);
        }
        self.fill(ring, dma)?;
        self.cached(ring, index).ok_or(QueueError::Ring {
            base: ring.base,
            size: ring.size,
        })
    }

    /// Descriptor `index` if it was read ahead and the head has not moved
    /// past it.
    fn cached(&self, ring: &Ring, index: u16) -> Option<Desc> {
        if (self.base, self.size) != (ring.base, ring.size) {
            return None;
        }
        let mask = ring.size - 1;
        let done = (ring.head.wrapping_sub(self.head) & mask) as usize;
        let at = (index.wrapping_sub(self.head) & mask) as usize;
        (done <= at && at < self.count).then(|| self.descs[at])
    }

    /// Reads the pending descriptors from the head, as many as it holds.
    fn fill(&mut self, ring: &Ring, dma: &DmaSpace) -> Result<(), QueueError> {
        let n = (ring.pending() as usize).min(MAX_BURST);
        let first = n.min((ring.size - ring.head) as usize);
        let err = |_| QueueError::Ring {
            base: ring.base,
            size: ring.size,
        };
        self.count = 0;
        dma.read_objs(ring.addr(ring.head), &mut self.descs[..first])
            .map_err(err)?;
        dma.read_objs(ring.base, &mut self.descs[first..n])
            .map_err(err)?;
        (self.base, self.size, self.head, self.count) = (ring.base, ring.size, ring.head, n);
        Ok(())
    }
}

/// A frame taken from a send ring, not yet completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxFrame {
    /// Descriptors it used.
    pub descs: u16,
    /// Bytes of the frame, without its offload header (also `buf.len()`
    /// after [`tx_next`]).
    pub len: usize,
}

/// Gathers the next frame of a send ring into `buf` (cleared first).
/// `Ok(None)`: nothing pending.
pub fn tx_next(
    ring: &Ring,
    dma: &DmaSpace,
    buf: &mut Vec<u8>,
) -> Result<Option<TxFrame>, QueueError> {
    tx_next_max(ring, dma, &mut [], buf, MAX_FRAME)
}

/// [`tx_next`] for frames of at most `max_frame` bytes (the PF's exception
/// send queue takes messages a little longer than [`MAX_FRAME`], a queue
/// with GSO up to [`MAX_GSO_FRAME`]) behind a per-frame header of
/// `header.len()` bytes (0, or the offload header of a queue with
/// [`Features::vnet_hdr`]): the first bytes of the buffers fill `header`,
/// the rest `buf`.
pub fn tx_next_max(
    ring: &Ring,
    dma: &DmaSpace,
    header: &mut [u8],
    buf: &mut Vec<u8>,
    max_frame: usize,
) -> Result<Option<TxFrame>, QueueError> {
    tx_take(ring, dma, header, buf, max_frame, &mut Ahead::default())
}

/// [`tx_next_max`] with the descriptors read ahead in `ahead` (valid for
/// this turn of this queue), which it reads more of as it needs.
pub fn tx_take(
    ring: &Ring,
    dma: &DmaSpace,
    header: &mut [u8],
    buf: &mut Vec<u8>,
    max_frame: usize,
    ahead: &mut Ahead,
) -> Result<Option<TxFrame>, QueueError> {
    buf.clear();
    let pending = ring.pending() as usize;
    if pending == 0 {
        return Ok(None);
    }
    let (skip, max_total) = (header.len(), header.len() + max_frame);
    let mut total = 0;
    let mut index = ring.head;
    // A frame may use at most MAX_CHAIN descriptors, and only the ones the
    // driver handed over: this is the ttl of the walk.
    for count in 1..=pending.min(MAX_CHAIN) {
        let d = ahead.get(ring, dma, index)?;
        let len = d.len.to_native() as usize;
        let addr = d.addr.to_native();
        if len == 0 || total + len > max_total {
            return Err(QueueError::Length {
                index,
                len: total + len,
            });
        }
        let dma_err = |_| QueueError::Dma { index, addr, len };
        // The part of this buffer that belongs to the header, then the rest.
        let in_header = skip.saturating_sub(total).min(len);
        if in_header > 0 {
            dma.read(addr, &mut header[total..total + in_header])
                .map_err(dma_err)?;
        }
        if in_header < len {
            dma.read_append(addr + in_header as u64, len - in_header, buf)
                .map_err(dma_err)?;
        }
        total += len;
        if TxFlags::from_bits(d.word.to_native()).eop() {
            if buf.len() < MIN_FRAME {
                return Err(QueueError::Length { index, len: total });
            }
            return Ok(Some(TxFrame {
                descs: count as u16,
                len: buf.len(),
            }));
        }
        index = ring.next(index);
    }
    Err(QueueError::Chain {
        index: ring.head,
        count: pending.min(MAX_CHAIN),
    })
}

/// Writes DONE (and DROPPED) into every descriptor of `frame` and moves the
/// head past it (without reading the descriptors again).
pub fn tx_complete(
    ring: &mut Ring,
    dma: &DmaSpace,
    frame: TxFrame,
    dropped: bool,
) -> Result<(), QueueError> {
    let status = DescStatus::new().with_done(true).with_dropped(dropped);
    for _ in 0..frame.descs {
        ring.write_status(dma, ring.head, status.into_bits())?;
        ring.head = ring.next(ring.head);
    }
    Ok(())
}

/// Moves the head past `frame` without writing its descriptors back: an
/// injected lost completion (docs/fault-injection.md). The driver never
/// sees DONE on them.
pub fn tx_skip(ring: &mut Ring, frame: TxFrame) {
    for _ in 0..frame.descs {
        ring.head = ring.next(ring.head);
    }
}

/// The error an injected DMA failure reports for the descriptor at the
/// head: its buffer, as if the address were not mapped.
pub fn injected_dma_error(ring: &Ring, dma: &DmaSpace) -> QueueError {
    let index = ring.head;
    let (addr, len) = ring
        .read(dma, index)
        .map_or((0, 0), |d| (d.addr.to_native(), d.len.to_native() as usize));
    QueueError::Dma { index, addr, len }
}

/// Marks the descriptor the queue failed on with the error code, so a driver
/// developer can see where it went wrong.
pub fn mark_error(ring: &Ring, dma: &DmaSpace, index: u16, error: QueueError) {
    if let Ok(d) = ring.read(dma, index) {
        let status = DescStatus::new().with_error(error.code());
        let _ = ring.write_back(dma, index, &d, d.word.to_native(), status.into_bits());
    }
}

/// What became of a frame offered to a receive ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxOutcome {
    Delivered,
    /// The driver had not posted enough buffers.
    NoBuffer,
    /// The frame does not fit the next buffer (or, with `multi_buf`, the
    /// most buffers a frame may span); they stay posted.
    TooLong,
}

/// The bytes a receive queue writes for one frame: its offload header (or
/// nothing) and the frame, as one sequence without copying them together.
#[derive(Clone, Copy, Debug)]
pub struct RxBytes<'a> {
    pub header: &'a [u8],
    pub frame: &'a [u8],
}

impl RxBytes<'_> {
    pub fn len(&self) -> usize {
        self.header.len() + self.frame.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Writes bytes `from..from + n` of the sequence to guest address
    /// `addr`.
    fn write(&self, dma: &DmaSpace, addr: u64, from: usize, n: usize) -> Result<(), ()> {
        let h = self.header.len();
        let mut at = addr;
        if from < h {
            let part = &self.header[from..h.min(from + n)];
            dma.write(at, part).map_err(|_| ())?;
            at += part.len() as u64;
        }
        let start = from.max(h) - h;
        let end = from + n - h.min(from + n);
        if start < end {
            dma.write(at, &self.frame[start..end]).map_err(|_| ())?;
        }
        Ok(())
    }
}

/// A posted receive buffer, checked.
struct RxBuf {
    index: u16,
    desc: Desc,
    len: usize,
}

/// Reads and checks the receive descriptor at `index`.
fn rx_buf(ring: &Ring, dma: &DmaSpace, index: u16) -> Result<RxBuf, QueueError> {
    let desc = ring.read(dma, index)?;
    let len = desc.len.to_native();
    if !(MIN_RX_BUF..=MAX_RX_BUF).contains(&len) {
        return Err(QueueError::Length {
            index,
            len: len as usize,
        });
    }
    Ok(RxBuf {
        index,
        desc,
        len: len as usize,
    })
}

/// Writes `bytes` (offload header and frame) into the next posted receive
/// buffer, or with `multi_buf` the next buffers it needs. Each buffer gets
/// its length and DONE, the last one EOP; the first descriptor is written
/// last, so a driver that sees its DONE sees the whole frame.
pub fn rx_put(
    ring: &mut Ring,
    dma: &DmaSpace,
    bytes: RxBytes,
    multi_buf: bool,
) -> Result<RxOutcome, QueueError> {
    if ring.pending() == 0 {
        return Ok(RxOutcome::NoBuffer);
    }
    // The common case, a frame that fits the next buffer, claims nothing
    // on the heap.
    let first = rx_buf(ring, dma, ring.head)?;
    if bytes.len() <= first.len {
        rx_fill(ring, dma, &bytes, &[first])?;
        return Ok(RxOutcome::Delivered);
    }
    if !multi_buf {
        return Ok(RxOutcome::TooLong);
    }
    match rx_claim(ring, dma, bytes.len())? {
        Ok(bufs) => {
            rx_fill(ring, dma, &bytes, &bufs)?;
            Ok(RxOutcome::Delivered)
        }
        Err(outcome) => Ok(outcome),
    }
}

/// The posted buffers a frame of `need` bytes fills, from the head, at
/// most [`MAX_CHAIN`].
fn rx_claim(
    ring: &Ring,
    dma: &DmaSpace,
    need: usize,
) -> Result<Result<Vec<RxBuf>, RxOutcome>, QueueError> {
    let mut bufs = Vec::new();
    let mut room = 0;
    let mut index = ring.head;
    while room < need {
        if bufs.len() == MAX_CHAIN {
            return Ok(Err(RxOutcome::TooLong));
        }
        if bufs.len() == ring.pending() as usize {
            // Every slot posted (one always stays empty) and still short:
            // waiting for more buffers would wait forever.
            let full = ring.pending() == ring.size() - 1;
            return Ok(Err(if full {
                RxOutcome::TooLong
            } else {
                RxOutcome::NoBuffer
            }));
        }
        let b = rx_buf(ring, dma, index)?;
        room += b.len;
        bufs.push(b);
        index = ring.next(index);
    }
    Ok(Ok(bufs))
}

/// Writes `bytes` across `bufs` (enough of them, from the head) and
/// completes them: each gets its length and DONE, the last EOP, and the
/// first descriptor is written last, so a driver that sees its DONE sees
/// the whole frame.
fn rx_fill(
    ring: &mut Ring,
    dma: &DmaSpace,
    bytes: &RxBytes,
    bufs: &[RxBuf],
) -> Result<(), QueueError> {
    let mut from = 0;
    let mut lens = [0u16; MAX_CHAIN];
    for (b, len) in bufs.iter().zip(lens.iter_mut()) {
        let n = b.len.min(bytes.len() - from);
        let addr = b.desc.addr.to_native();
        bytes
            .write(dma, addr, from, n)
            .map_err(|_| QueueError::Dma {
                index: b.index,
                addr,
                len: n,
            })?;
        *len = n as u16;
        from += n;
    }
    let last = bufs.len() - 1;
    for (i, b) in bufs.iter().enumerate().rev() {
        let status = RxStatus::new().with_done(true).with_eop(i == last);
        ring.write_back(dma, b.index, &b.desc, lens[i], status.into_bits())?;
    }
    for _ in bufs {
        ring.head = ring.next(ring.head);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::FakeDriver;

    const DONE: u16 = 1;
    const DONE_EOP: u16 = 0b11;

    /// A frame into a queue without features.
    fn put(ring: &mut Ring, dma: &DmaSpace, frame: &[u8]) -> Result<RxOutcome, QueueError> {
        rx_put(ring, dma, RxBytes { header: &[], frame }, false)
    }

    fn frame(n: usize, fill: u8) -> Vec<u8> {
        let mut f = vec![fill; n];
        f[..6].copy_from_slice(&[2, 0, 0, 0, 0, 2]);
        f[6..12].copy_from_slice(&[2, 0, 0, 0, 0, 1]);
        f
    }

    fn tx_ring(drv: &mut FakeDriver, size: u16) -> (u64, Ring) {
        let base = drv.ring(size);
        let ring = Ring::new(drv.dma(), base, size, 0, 0).unwrap();
        (base, ring)
    }

    #[test]
    fn the_features_register_offers_every_feature_bit() {
        let all = Features::new()
            .with_vnet_hdr(true)
            .with_csum(true)
            .with_gso(true)
            .with_multi_buf(true)
            .with_head_wb(true);
        assert_eq!(Features::OFFERED, all);
    }

    #[test]
    fn ring_shape_is_checked_at_start() {
        let mut drv = FakeDriver::new();
        let base = drv.ring(64);
        assert!(Ring::new(drv.dma(), base, 64, 0, 0).is_ok());
        for (b, size) in [
            (base, 0),
            (base, 48),
            (base, 4),
            (base, 8192),
            (base + 8, 64),
        ] {
            assert_eq!(
                Ring::new(drv.dma(), b, size, 0, 0),
                Err(QueueError::Ring { base: b, size }),
                "base {b:#x} size {size}"
            );
        }
        // Base outside guest memory, and a ring running off its end.
        assert!(Ring::new(drv.dma(), 0x1000, 64, 0, 0).is_err());
        let end = crate::test_utils::FAKE_BASE + crate::test_utils::FAKE_SIZE;
        assert!(Ring::new(drv.dma(), end - 16 * 32, 64, 0, 0).is_err());
        assert!(
            Ring::new(drv.dma(), base, 64, 64, 0).is_err(),
            "head beyond"
        );
    }

    #[test]
    fn doorbell_beyond_the_ring_is_an_index_error() {
        let mut drv = FakeDriver::new();
        let (_, mut ring) = tx_ring(&mut drv, 64);
        assert_eq!(
            ring.set_tail(64),
            Err(QueueError::Index {
                value: 64,
                size: 64
            })
        );
        assert!(ring.set_tail(63).is_ok());
        assert_eq!(ring.pending(), 63);
    }

    #[test]
    fn tx_batch_wraps_around_the_ring() {
        // size 8, head starts at 6: frames in 6, 7, 0, 1 (wrap), tail = 2.
        //   [0 F3][1 F4][2 ..][3][4][5][6 F1][7 F2]
        let mut drv = FakeDriver::new();
        let base = drv.ring(8);
        let mut ring = Ring::new(drv.dma(), base, 8, 6, 6).unwrap();
        let frames: Vec<Vec<u8>> = (0..4).map(|i| frame(60 + i, i as u8)).collect();
        for (k, f) in frames.iter().enumerate() {
            let addr = drv.buffer(f);
            drv.put_tx(base, ((6 + k) % 8) as u16, addr, f.len() as u16, true);
        }
        ring.set_tail(2).unwrap();
        let mut buf = Vec::new();
        for f in &frames {
            let got = tx_next(&ring, drv.dma(), &mut buf).unwrap().unwrap();
            assert_eq!(&buf, f);
            tx_complete(&mut ring, drv.dma(), got, false).unwrap();
        }
        assert_eq!(tx_next(&ring, drv.dma(), &mut buf), Ok(None));
        assert_eq!(ring.head, 2);
        for i in [6, 7, 0, 1] {
            assert_eq!(drv.status(base, i), DONE);
        }
    }

    #[test]
    fn tx_frame_spanning_descriptors_is_gathered() {
        let mut drv = FakeDriver::new();
        let (base, mut ring) = tx_ring(&mut drv, 16);
        let f = frame(3000, 7);
        for (i, part) in f.chunks(1000).enumerate() {
            let addr = drv.buffer(part);
            drv.put_tx(base, i as u16, addr, part.len() as u16, i == 2);
        }
        ring.set_tail(3).unwrap();
        let mut buf = Vec::new();
        let got = tx_next(&ring, drv.dma(), &mut buf).unwrap().unwrap();
        assert_eq!(
            got,
            TxFrame {
                descs: 3,
                len: 3000
            }
        );
        assert_eq!(buf, f);
        tx_complete(&mut ring, drv.dma(), got, true).unwrap();
        assert_eq!(drv.status(base, 1), 0b11, "DONE | DROPPED");
    }

    #[test]
    fn hostile_tx_descriptors_are_queue_errors() {
        let mut drv = FakeDriver::new();
        let good = drv.buffer(&frame(60, 0));
        let cases: Vec<(&str, u64, u16, QueueError)> = vec![
            (
                "outside memory",
                0xdead_0000,
                60,
                QueueError::Dma {
                    index: 0,
                    addr: 0xdead_0000,
                    len: 60,
                },
            ),
            (
                "zero length",
                good,
                0,
                QueueError::Length { index: 0, len: 0 },
            ),
            (
                "oversized",
                good,
                9217,
                QueueError::Length {
                    index: 0,
                    len: 9217,
                },
            ),
            ("runt", good, 10, QueueError::Length { index: 0, len: 10 }),
        ];
        for (what, addr, len, want) in cases {
            let (base, mut ring) = tx_ring(&mut drv, 8);
            drv.put_tx(base, 0, addr, len, true);
            ring.set_tail(1).unwrap();
            assert_eq!(
                tx_next(&ring, drv.dma(), &mut Vec::new()),
                Err(want),
                "{what}"
            );
        }
    }

    #[test]
    fn tx_chain_without_end_is_bounded() {
        let mut drv = FakeDriver::new();
        let buf = drv.buffer(&[0; 512]);
        // Every descriptor handed over, none with EOP: a ring that never ends.
        let (base, mut ring) = tx_ring(&mut drv, 64);
        for i in 0..64 {
            drv.put_tx(base, i, buf, 512, false);
        }
        ring.set_tail(63).unwrap();
        assert_eq!(
            tx_next(&ring, drv.dma(), &mut Vec::new()),
            Err(QueueError::Length {
                index: 18,
                len: 9728
            }),
            "the byte limit trips first with 512-byte buffers (19 of them)"
        );
        // Small buffers: the descriptor limit trips.
        for i in 0..64 {
            drv.put_tx(base, i, buf, 14, false);
        }
        assert_eq!(
            tx_next(&ring, drv.dma(), &mut Vec::new()),
            Err(QueueError::Chain {
                index: 0,
                count: 32
            })
        );
        // A chain that reaches the tail without EOP.
        ring.set_tail(3).unwrap();
        assert_eq!(
            tx_next(&ring, drv.dma(), &mut Vec::new()),
            Err(QueueError::Chain { index: 0, count: 3 })
        );
    }

    #[test]
    fn rx_fills_buffers_in_order_and_reports_lengths() {
        let mut drv = FakeDriver::new();
        let base = drv.ring(8);
        let mut ring = Ring::new(drv.dma(), base, 8, 0, 0).unwrap();
        for i in 0..4 {
            let b = drv.alloc(2048, 64);
            drv.put_rx(base, i, b, 2048);
        }
        ring.set_tail(4).unwrap();
        for n in [60usize, 1514, 100] {
            assert_eq!(
                put(&mut ring, drv.dma(), &frame(n, n as u8)),
                Ok(RxOutcome::Delivered)
            );
        }
        assert_eq!(drv.rx_frame(base, 1), frame(1514, 1514usize as u8));
        assert_eq!(drv.status(base, 2), DONE_EOP);
        assert_eq!(drv.status(base, 3), 0, "posted, not used yet");
        assert_eq!(ring.head, 3);
    }

    #[test]
    fn full_receive_ring_drops_then_recovers() {
        let mut drv = FakeDriver::new();
        let base = drv.ring(8);
        let mut ring = Ring::new(drv.dma(), base, 8, 0, 0).unwrap();
        let b = drv.alloc(2048, 64);
        drv.put_rx(base, 0, b, 2048);
        ring.set_tail(1).unwrap();
        let f = frame(100, 1);
        assert_eq!(put(&mut ring, drv.dma(), &f), Ok(RxOutcome::Delivered));
        for _ in 0..10 {
            assert_eq!(put(&mut ring, drv.dma(), &f), Ok(RxOutcome::NoBuffer));
        }
        // The driver posts again: delivery resumes, no stall.
        let b = drv.alloc(2048, 64);
        drv.put_rx(base, 1, b, 2048);
        ring.set_tail(2).unwrap();
        assert_eq!(put(&mut ring, drv.dma(), &f), Ok(RxOutcome::Delivered));
    }

    #[test]
    fn hostile_rx_buffers_are_queue_errors_small_buffer_is_a_drop() {
        let mut drv = FakeDriver::new();
        let f = frame(200, 1);
        let good = drv.alloc(4096, 64);
        let cases = [
            (
                0xdead_0000,
                2048,
                Err(QueueError::Dma {
                    index: 0,
                    addr: 0xdead_0000,
                    len: 200,
                }),
            ),
            (good, 0, Err(QueueError::Length { index: 0, len: 0 })),
            (
                good,
                20000,
                Err(QueueError::Length {
                    index: 0,
                    len: 20000,
                }),
            ),
            (good, 128, Ok(RxOutcome::TooLong)),
        ];
        for (addr, len, want) in cases {
            let base = drv.ring(8);
            let mut ring = Ring::new(drv.dma(), base, 8, 0, 0).unwrap();
            drv.put_rx(base, 0, addr, len);
            ring.set_tail(1).unwrap();
            assert_eq!(put(&mut ring, drv.dma(), &f), want, "{addr:#x} {len}");
        }
    }

    #[test]
    fn tx_header_is_read_apart_from_the_frame_wherever_it_lies() {
        let mut drv = FakeDriver::new();
        let (base, mut ring) = tx_ring(&mut drv, 16);
        let f = frame(100, 3);
        let hdr: Vec<u8> = (1..=10).collect();
        // Frame 1: header in a descriptor of its own. Frame 2: header and
        // the first 6 frame bytes in one, the rest in another.
        let both = [&hdr[..], &f[..6]].concat();
        let bufs = [
            (drv.buffer(&hdr), 10, false),
            (drv.buffer(&f), 100, true),
            (drv.buffer(&both), 16, false),
            (drv.buffer(&f[6..]), 94, true),
        ];
        for (i, (addr, len, eop)) in bufs.into_iter().enumerate() {
            drv.put_tx(base, i as u16, addr, len, eop);
        }
        ring.set_tail(4).unwrap();
        for _ in 0..2 {
            let mut h = [0u8; 10];
            let mut buf = Vec::new();
            let got = tx_next_max(&ring, drv.dma(), &mut h, &mut buf, MAX_FRAME).unwrap();
            assert_eq!(got, Some(TxFrame { descs: 2, len: 100 }));
            assert_eq!((&h[..], &buf[..]), (&hdr[..], &f[..]));
            tx_complete(&mut ring, drv.dma(), got.unwrap(), false).unwrap();
        }
        // A header alone is a runt.
        let alone = drv.buffer(&hdr);
        drv.put_tx(base, 4, alone, 10, true);
        ring.set_tail(5).unwrap();
        assert_eq!(
            tx_next_max(&ring, drv.dma(), &mut [0; 10], &mut Vec::new(), MAX_FRAME),
            Err(QueueError::Length { index: 4, len: 10 })
        );
    }

    #[test]
    fn multi_buffer_receive_spans_buffers_and_marks_the_last() {
        let mut drv = FakeDriver::new();
        let base = drv.ring(64);
        let mut ring = Ring::new(drv.dma(), base, 64, 0, 0).unwrap();
        ring.set_tail(drv.post_rx(base, 64, 0, 2, 1024) as u32)
            .unwrap();
        let hdr = [7u8; 10];
        let f = frame(2500, 9);
        let bytes = RxBytes {
            header: &hdr,
            frame: &f,
        };
        assert_eq!(
            rx_put(&mut ring, drv.dma(), bytes, true),
            Ok(RxOutcome::NoBuffer),
            "2510 bytes need three 1 KiB buffers"
        );
        assert_eq!(drv.status(base, 0), 0, "nothing written");
        assert_eq!(put(&mut ring, drv.dma(), &f), Ok(RxOutcome::TooLong));
        ring.set_tail(drv.post_rx(base, 64, 2, 1, 1024) as u32)
            .unwrap();
        assert_eq!(
            rx_put(&mut ring, drv.dma(), bytes, true),
            Ok(RxOutcome::Delivered)
        );
        let lens: Vec<u16> = (0..3).map(|i| drv.rx_len(base, i)).collect();
        assert_eq!(lens, [1024, 1024, 462]);
        let status: Vec<u16> = (0..3).map(|i| drv.status(base, i)).collect();
        assert_eq!(status, [DONE, DONE, DONE_EOP]);
        assert_eq!(
            drv.received_chained(base, 64),
            vec![[&hdr[..], &f].concat()]
        );
        assert_eq!(ring.head, 3);
        // More than 32 buffers: too long, whatever is posted.
        ring.set_tail(drv.post_rx(base, 64, 3, 40, 64) as u32)
            .unwrap();
        assert_eq!(
            rx_put(&mut ring, drv.dma(), bytes, true),
            Ok(RxOutcome::TooLong)
        );
        assert_eq!(ring.head, 3, "still posted");
    }

    #[test]
    fn a_frame_larger_than_a_full_ring_can_hold_is_too_long_not_waiting() {
        let mut drv = FakeDriver::new();
        let base = drv.ring(8);
        let mut ring = Ring::new(drv.dma(), base, 8, 0, 0).unwrap();
        ring.set_tail(drv.post_rx(base, 8, 0, 7, 1024) as u32)
            .unwrap();
        let f = frame(8000, 1);
        let bytes = RxBytes {
            header: &[],
            frame: &f,
        };
        assert_eq!(
            rx_put(&mut ring, drv.dma(), bytes, true),
            Ok(RxOutcome::TooLong),
            "8 buffers needed, 7 can ever be posted"
        );
    }

    #[test]
    fn read_ahead_serves_a_turn_across_the_wrap_and_rereads_when_it_must() {
        // size 8, head 6: frames in 6, 7, 0 (wrap), read with two reads.
        let mut drv = FakeDriver::new();
        let base = drv.ring(8);
        let mut ring = Ring::new(drv.dma(), base, 8, 6, 6).unwrap();
        let frames: Vec<Vec<u8>> = (0..3).map(|i| frame(60 + i, i as u8)).collect();
        for (k, f) in frames.iter().enumerate() {
            let addr = drv.buffer(f);
            drv.put_tx(base, ((6 + k) % 8) as u16, addr, f.len() as u16, true);
        }
        ring.set_tail(1).unwrap();
        let mut ahead = Ahead::default();
        let mut buf = Vec::new();
        let got = tx_take(&ring, drv.dma(), &mut [], &mut buf, MAX_FRAME, &mut ahead);
        assert_eq!(got.unwrap().unwrap().len, 60);
        assert_eq!(ahead.count, 3, "all three read at once");
        // The driver's copy of a read descriptor changes (it may not): the
        // card goes on with what it read.
        drv.put_tx(base, 7, 0xdead_0000, 61, true);
        let first = tx_take(&ring, drv.dma(), &mut [], &mut buf, MAX_FRAME, &mut ahead)
            .unwrap()
            .unwrap();
        tx_complete(&mut ring, drv.dma(), first, false).unwrap();
        let second = tx_take(&ring, drv.dma(), &mut [], &mut buf, MAX_FRAME, &mut ahead);
        assert_eq!(buf, frames[1], "as read before the change");
        tx_complete(&mut ring, drv.dma(), second.unwrap().unwrap(), false).unwrap();
        tx_take(&ring, drv.dma(), &mut [], &mut buf, MAX_FRAME, &mut ahead).unwrap();
        assert_eq!(buf, frames[2]);
        // Another ring, or a descriptor beyond what was read: read again.
        let other_base = drv.ring(8);
        let other = Ring::new(drv.dma(), other_base, 8, 0, 0).unwrap();
        assert!(ahead.cached(&other, 0).is_none());
        assert!(ahead.cached(&ring, 1).is_none());
        ahead.clear();
        assert!(ahead.cached(&ring, 0).is_none());
    }

    #[test]
    fn completion_writes_status_and_leaves_the_drivers_fields() {
        let mut drv = FakeDriver::new();
        let (base, mut ring) = tx_ring(&mut drv, 8);
        let f = frame(100, 1);
        let addr = drv.buffer(&f);
        drv.put_tx(base, 0, addr, 100, true);
        drv.write_u16(base + 14, 0xffff);
        ring.set_tail(1).unwrap();
        let got = tx_next(&ring, drv.dma(), &mut Vec::new()).unwrap().unwrap();
        tx_complete(&mut ring, drv.dma(), got, false).unwrap();
        assert_eq!(drv.read_u64(base), addr);
        assert_eq!(drv.read_u16(base + 8), 100);
        assert_eq!(drv.read_u16(base + 10), 1, "EOP");
        assert_eq!(drv.status(base, 0), DONE);
        assert_eq!(drv.read_u16(base + 14), 0, "reserved");
    }

    #[test]
    fn slots_read_across_the_wrap_and_write_back_as_the_general_path() {
        let mut drv = FakeDriver::new();
        let base = drv.ring(8);
        let mut ring = Ring::new(drv.dma(), base, 8, 6, 6).unwrap();
        for i in [6u16, 7, 0, 1] {
            drv.put_tx(base, i, 0x1000 * u64::from(i + 1), 60 + i, true);
        }
        ring.set_tail(2).unwrap();
        let slots = ring.slots(drv.dma()).unwrap();
        let mut out = [Desc::default(); 8];
        assert_eq!(slots.read_pending(&mut out), 4);
        let lens: Vec<u16> = out[..4].iter().map(|d| d.len.to_native()).collect();
        assert_eq!(lens, [66, 67, 60, 61]);
        assert!(slots.complete_tx(&out[..3]));
        let status: Vec<u16> = [6, 7, 0, 1].iter().map(|&i| drv.status(base, i)).collect();
        assert_eq!(status, [DONE, DONE, DONE, 0]);
        assert_eq!(drv.read_u64(base + 16 * 7), 0x8000, "address as read");
        // A receive descriptor: buffer length, frame length and status.
        assert!(slots.complete_rx(
            1,
            &out[3],
            42,
            RxStatus::new().with_done(true).with_eop(true)
        ));
        assert_eq!((drv.read_u16(base + 16 + 8), drv.rx_len(base, 1)), (61, 42));
        assert_eq!(drv.status(base, 1), DONE_EOP);
    }

    #[test]
    fn the_fast_path_takes_only_descriptors_the_general_path_accepts() {
        let tx = |len: u16, flags: u16| Desc {
            addr: 0x1000.into(),
            len: len.into(),
            word: flags.into(),
            ..Desc::default()
        };
        assert_eq!(tx(60, 1).plain_tx(0), Some((0x1000, 60)));
        assert_eq!(tx(9216, 1).plain_tx(0), Some((0x1000, 9216)));
        for d in [tx(60, 0), tx(13, 1), tx(0, 1), tx(9217, 1)] {
            assert_eq!(d.plain_tx(0), None, "{d:?}");
        }
        // Behind a 10-byte header: the frame's length counts.
        assert_eq!(tx(24, 1).plain_tx(10), Some((0x1000, 24)));
        assert_eq!(tx(9226, 1).plain_tx(10), Some((0x1000, 9226)));
        for len in [5, 23, 9227] {
            assert_eq!(tx(len, 1).plain_tx(10), None, "{len}");
        }
        let rx = |buf_len: u16| tx(buf_len, 0);
        assert_eq!(rx(2048).rx_fits(2048), Some(0x1000));
        assert_eq!(
            rx(2048).rx_fits(2049),
            None,
            "too long: the general path drops"
        );
        assert_eq!(
            rx(20).rx_fits(14),
            None,
            "a bad size: the general path fails the queue"
        );
        assert_eq!(rx(16385).rx_fits(100), None);
    }
}
