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

use crate::dma::DmaSpace;

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
/// Accepted receive buffer sizes.
pub const MIN_RX_BUF: u16 = 64;
pub const MAX_RX_BUF: u16 = 16384;

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

/// Driver-written flags of a send descriptor.
#[bitfield(u16)]
pub struct TxFlags {
    /// Last buffer of the frame.
    pub eop: bool,
    #[bits(15)]
    __: u16,
}

/// Card-written status of a descriptor.
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

    fn next(&self, i: u16) -> u16 {
        (i + 1) & (self.size - 1)
    }

    /// Descriptors handed to the card and not yet processed.
    pub fn pending(&self) -> u16 {
        self.tail.wrapping_sub(self.head) & (self.size - 1)
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
        status: DescStatus,
    ) -> Result<(), QueueError> {
        let mut tail = [0u8; 8];
        tail[0..2].copy_from_slice(&d.len.to_native().to_le_bytes());
        tail[2..4].copy_from_slice(&word.to_le_bytes());
        tail[4..6].copy_from_slice(&status.into_bits().to_le_bytes());
        dma.write(self.addr(index) + 8, &tail)
            .map_err(|_| QueueError::Ring {
                base: self.base,
                size: self.size,
            })
    }
}

/// A frame taken from a send ring, not yet completed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxFrame {
    /// Descriptors it used.
    pub descs: u16,
    /// Bytes (also `buf.len()` after [`tx_next`]).
    pub len: usize,
}

/// Gathers the next frame of a send ring into `buf` (cleared first).
/// `Ok(None)`: nothing pending.
pub fn tx_next(
    ring: &Ring,
    dma: &DmaSpace,
    buf: &mut Vec<u8>,
) -> Result<Option<TxFrame>, QueueError> {
    tx_next_max(ring, dma, buf, MAX_FRAME)
}

/// [`tx_next`] for frames of at most `max_frame` bytes (the PF's exception
/// send queue takes messages a little longer than [`MAX_FRAME`]).
pub fn tx_next_max(
    ring: &Ring,
    dma: &DmaSpace,
    buf: &mut Vec<u8>,
    max_frame: usize,
) -> Result<Option<TxFrame>, QueueError> {
    buf.clear();
    let pending = ring.pending() as usize;
    if pending == 0 {
        return Ok(None);
    }
    let mut index = ring.head;
    // A frame may use at most MAX_CHAIN descriptors, and only the ones the
    // driver handed over: this is the ttl of the walk.
    for count in 1..=pending.min(MAX_CHAIN) {
        let d = ring.read(dma, index)?;
        let len = d.len.to_native() as usize;
        let addr = d.addr.to_native();
        if len == 0 || buf.len() + len > max_frame {
            return Err(QueueError::Length {
                index,
                len: buf.len() + len,
            });
        }
        let at = buf.len();
        buf.resize(at + len, 0);
        dma.read(addr, &mut buf[at..])
            .map_err(|_| QueueError::Dma { index, addr, len })?;
        if TxFlags::from_bits(d.word.to_native()).eop() {
            if buf.len() < MIN_FRAME {
                return Err(QueueError::Length {
                    index,
                    len: buf.len(),
                });
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
/// head past it.
pub fn tx_complete(
    ring: &mut Ring,
    dma: &DmaSpace,
    frame: TxFrame,
    dropped: bool,
) -> Result<(), QueueError> {
    let status = DescStatus::new().with_done(true).with_dropped(dropped);
    for _ in 0..frame.descs {
        let d = ring.read(dma, ring.head)?;
        ring.write_back(dma, ring.head, &d, d.word.to_native(), status)?;
        ring.head = ring.next(ring.head);
    }
    Ok(())
}

/// Marks the descriptor the queue failed on with the error code, so a driver
/// developer can see where it went wrong.
pub fn mark_error(ring: &Ring, dma: &DmaSpace, index: u16, error: QueueError) {
    if let Ok(d) = ring.read(dma, index) {
        let status = DescStatus::new().with_error(error.code());
        let _ = ring.write_back(dma, index, &d, d.word.to_native(), status);
    }
}

/// What became of a frame offered to a receive ring.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RxOutcome {
    Delivered,
    /// The driver had posted no buffer.
    NoBuffer,
    /// The next buffer is smaller than the frame; it stays posted.
    TooLong,
}

/// Copies `frame` into the next posted receive buffer.
pub fn rx_put(ring: &mut Ring, dma: &DmaSpace, frame: &[u8]) -> Result<RxOutcome, QueueError> {
    if ring.pending() == 0 {
        return Ok(RxOutcome::NoBuffer);
    }
    let index = ring.head;
    let d = ring.read(dma, index)?;
    let buf_len = d.len.to_native();
    if !(MIN_RX_BUF..=MAX_RX_BUF).contains(&buf_len) {
        return Err(QueueError::Length {
            index,
            len: buf_len as usize,
        });
    }
    if frame.len() > buf_len as usize {
        return Ok(RxOutcome::TooLong);
    }
    let addr = d.addr.to_native();
    dma.write(addr, frame).map_err(|_| QueueError::Dma {
        index,
        addr,
        len: frame.len(),
    })?;
    ring.write_back(
        dma,
        index,
        &d,
        frame.len() as u16,
        DescStatus::new().with_done(true),
    )?;
    ring.head = ring.next(index);
    Ok(RxOutcome::Delivered)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::FakeDriver;

    const DONE: u16 = 1;

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
                rx_put(&mut ring, drv.dma(), &frame(n, n as u8)),
                Ok(RxOutcome::Delivered)
            );
        }
        assert_eq!(drv.rx_frame(base, 1), frame(1514, 1514usize as u8));
        assert_eq!(drv.status(base, 2), DONE);
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
        assert_eq!(rx_put(&mut ring, drv.dma(), &f), Ok(RxOutcome::Delivered));
        for _ in 0..10 {
            assert_eq!(rx_put(&mut ring, drv.dma(), &f), Ok(RxOutcome::NoBuffer));
        }
        // The driver posts again: delivery resumes, no stall.
        let b = drv.alloc(2048, 64);
        drv.put_rx(base, 1, b, 2048);
        ring.set_tail(2).unwrap();
        assert_eq!(rx_put(&mut ring, drv.dma(), &f), Ok(RxOutcome::Delivered));
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
            assert_eq!(rx_put(&mut ring, drv.dma(), &f), want, "{addr:#x} {len}");
        }
    }
}
