//! Device state in guest memory: BAT, CLATs, blocks and queue contexts
//! (SPEC section 6, docs/datapath.md).
//!
//! A function's VCT entry (kept by the card) is the guest address of its BAT.
//! The BAT gives, per service type, the top-level CLAT and the geometry (context
//! size A, block size B, levels L). The card finds the context of service n by
//! turning n into base-C digits (C = B / 8 addresses per CLAT) and following
//! one CLAT entry per level to a block. All of it lives in guest memory, so a
//! queue's state travels with the guest: on a destination card only the VCT
//! entry has to be written.

use thiserror::Error;
use vm_memory::endian::{Le16, Le32, Le64};
use vm_memory::ByteValued;

use crate::dma::{DmaError, DmaSpace};

/// "BAT1", little-endian, at the start of every BAT.
pub const BAT_MAGIC: u32 = 0x3154_4142;
/// Bytes of the BAT header before the per-type entries.
pub const BAT_HEADER_SIZE: u64 = 16;
/// Bytes of one BAT entry.
pub const BAT_ENTRY_SIZE: u64 = 32;
/// Bytes of a CLAT entry (a guest address).
pub const CLAT_ENTRY_SIZE: u64 = 8;
/// Smallest and largest block (and CLAT) size.
pub const MIN_BLOCK_SIZE: u32 = 4096;
pub const MAX_BLOCK_SIZE: u32 = 2 << 20;
/// Deepest CLAT tree the card walks.
pub const MAX_LEVELS: u32 = 4;

/// A kind of per-queue state; its value is the index of its BAT entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceType {
    SendQueue = 0,
    ReceiveQueue = 1,
}

impl ServiceType {
    pub const ALL: [ServiceType; 2] = [ServiceType::SendQueue, ServiceType::ReceiveQueue];
}

/// Why a BAT or a context could not be found. VCT_STATUS shows
/// [`StateError::vct_code`] for errors in the BAT itself.
#[derive(Debug, Error)]
pub enum StateError {
    #[error("BAT unreadable")]
    BatUnreadable(#[source] DmaError),
    #[error("BAT magic {0:#x} is not BAT1")]
    BadMagic(u32),
    #[error("BAT has {0} service types, fewer than the card needs")]
    TooFewTypes(u32),
    #[error("BAT entry {ty:?}: {why}")]
    BadEntry { ty: ServiceType, why: &'static str },
    #[error("service {n} outside 1..={max}")]
    NoService { n: u32, max: u64 },
    #[error("CLAT level {level} entry {index} is {addr:#x}: null or unaligned")]
    BadPointer { level: u32, index: u64, addr: u64 },
    #[error("CLAT level {level} unreadable")]
    ClatUnreadable {
        level: u32,
        #[source]
        source: DmaError,
    },
    #[error("context at {addr:#x} unreadable")]
    ContextUnreadable {
        addr: u64,
        #[source]
        source: DmaError,
    },
}

impl StateError {
    /// VCT_STATUS code: 1 unreadable, 2 bad magic, 3 bad entry.
    pub fn vct_code(&self) -> u32 {
        match self {
            StateError::BatUnreadable(_) => 1,
            StateError::BadMagic(_) => 2,
            _ => 3,
        }
    }
}

/// BAT header, as in guest memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BatHeader {
    pub magic: Le32,
    pub types: Le32,
    /// Guest address of the driver's doorbell page (interface 1.4,
    /// crate::doorbell), 4 KiB-aligned; 0: doorbells are register writes.
    /// In the BAT, so the page is found again wherever the VCT entry is
    /// committed (a destination card after migration).
    pub doorbells: Le64,
}

/// One BAT entry, as in guest memory.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct BatEntry {
    pub clat: Le64,
    pub entry_size: Le32,
    pub block_size: Le32,
    pub levels: Le32,
    pub services: Le32,
    pub reserved: Le64,
}

// SAFETY: plain old data of little-endian integers with no padding (sizes
// asserted below); every bit pattern is a valid value.
unsafe impl ByteValued for BatHeader {}
// SAFETY: as above.
unsafe impl ByteValued for BatEntry {}

const _: () = assert!(std::mem::size_of::<BatHeader>() == BAT_HEADER_SIZE as usize);
const _: () = assert!(std::mem::size_of::<BatEntry>() == BAT_ENTRY_SIZE as usize);

/// Where service n sits: one CLAT index per level (most significant
/// first), then the element inside the block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Location {
    pub clat_offsets: Vec<u64>,
    pub element: u64,
}

/// The validated geometry of one service type.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Layout {
    /// Guest address of the top-level CLAT.
    pub clat: u64,
    /// A: bytes per context.
    pub entry_size: u64,
    /// B: bytes per block and per CLAT.
    pub block_size: u64,
    /// L: CLAT levels.
    pub levels: u32,
    /// Services the tables hold.
    pub services: u32,
}

impl Layout {
    fn from_wire(ty: ServiceType, e: &BatEntry) -> Result<Layout, StateError> {
        let bad = |why| StateError::BadEntry { ty, why };
        let (a, b) = (e.entry_size.to_native(), e.block_size.to_native());
        let levels = e.levels.to_native();
        if !b.is_power_of_two() || !(MIN_BLOCK_SIZE..=MAX_BLOCK_SIZE).contains(&b) {
            return Err(bad("block size not a power of two in 4 KiB..=2 MiB"));
        }
        if !a.is_power_of_two() || !(64..=b).contains(&a) {
            return Err(bad("entry size not a power of two in 64..=block size"));
        }
        if !(1..=MAX_LEVELS).contains(&levels) {
            return Err(bad("levels outside 1..=4"));
        }
        let clat = e.clat.to_native();
        if clat == 0 || clat % CLAT_ENTRY_SIZE != 0 {
            return Err(bad("CLAT address null or unaligned"));
        }
        Ok(Layout {
            clat,
            entry_size: a as u64,
            block_size: b as u64,
            levels,
            services: e.services.to_native(),
        })
    }

    /// C: addresses per CLAT.
    pub fn clat_entries(&self) -> u64 {
        self.block_size / CLAT_ENTRY_SIZE
    }

    /// Contexts per block (B / A).
    pub fn per_block(&self) -> u64 {
        self.block_size / self.entry_size
    }

    /// Most services the tree can address: C^L blocks of B / A contexts.
    pub fn capacity(&self) -> u64 {
        let blocks = self.clat_entries().saturating_pow(self.levels);
        blocks.saturating_mul(self.per_block())
    }

    /// The offset math of SPEC section 6 for 1-based service number `n`.
    pub fn locate(&self, n: u32) -> Result<Location, StateError> {
        let max = self.capacity().min(self.services as u64);
        if n == 0 || n as u64 > max {
            return Err(StateError::NoService { n, max });
        }
        let i = n as u64 - 1;
        let (mut block, element) = (i / self.per_block(), i % self.per_block());
        let c = self.clat_entries();
        let mut clat_offsets = vec![0; self.levels as usize];
        for digit in clat_offsets.iter_mut().rev() {
            *digit = block % c;
            block /= c;
        }
        Ok(Location {
            clat_offsets,
            element,
        })
    }

    /// Walks the CLATs to the guest address of service `n`'s context.
    pub fn context_address(&self, dma: &DmaSpace, n: u32) -> Result<u64, StateError> {
        let loc = self.locate(n)?;
        let mut table = self.clat;
        for (level, &index) in (1..).zip(&loc.clat_offsets) {
            let entry: Le64 = dma
                .read_obj(table + index * CLAT_ENTRY_SIZE)
                .map_err(|source| StateError::ClatUnreadable { level, source })?;
            let addr = entry.to_native();
            // Lower CLATs and blocks are B-sized tables: they must at least
            // be aligned like their entries, and blocks like their contexts.
            let align = if level == self.levels {
                self.entry_size
            } else {
                CLAT_ENTRY_SIZE
            };
            if addr == 0 || addr % align != 0 {
                return Err(StateError::BadPointer { level, index, addr });
            }
            table = addr;
        }
        Ok(table + loc.element * self.entry_size)
    }
}

/// A function's BAT, read from guest memory and validated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bat {
    pub address: u64,
    /// The header's doorbell page, 0 for none (not checked here: a bad
    /// page turns the page off, not the BAT).
    pub doorbells: u64,
    layouts: [Layout; 2],
}

impl Bat {
    pub fn read(dma: &DmaSpace, address: u64) -> Result<Bat, StateError> {
        let header: BatHeader = dma.read_obj(address).map_err(StateError::BatUnreadable)?;
        if header.magic.to_native() != BAT_MAGIC {
            return Err(StateError::BadMagic(header.magic.to_native()));
        }
        let types = header.types.to_native();
        if types < ServiceType::ALL.len() as u32 {
            return Err(StateError::TooFewTypes(types));
        }
        let entry = |ty: ServiceType| -> Result<Layout, StateError> {
            let at = address + BAT_HEADER_SIZE + ty as u64 * BAT_ENTRY_SIZE;
            let e: BatEntry = dma.read_obj(at).map_err(StateError::BatUnreadable)?;
            Layout::from_wire(ty, &e)
        };
        Ok(Bat {
            address,
            doorbells: header.doorbells.to_native(),
            layouts: [
                entry(ServiceType::SendQueue)?,
                entry(ServiceType::ReceiveQueue)?,
            ],
        })
    }

    pub fn layout(&self, ty: ServiceType) -> &Layout {
        &self.layouts[ty as usize]
    }

    /// Guest address of the context of queue `queue` (service n = queue + 1).
    pub fn context_address(
        &self,
        dma: &DmaSpace,
        ty: ServiceType,
        queue: u16,
    ) -> Result<u64, StateError> {
        self.layout(ty).context_address(dma, queue as u32 + 1)
    }
}

/// Queue context state flags.
pub mod ctx_state {
    pub const RUNNING: u16 = 1 << 0;
    pub const ERROR: u16 = 1 << 1;
}

/// A queue context as in guest memory (the first 64 bytes of its slot).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct QueueContext {
    pub ring: Le64,
    pub size: Le16,
    pub state: Le16,
    pub head: Le16,
    pub tail: Le16,
    pub error: u8,
    pub reserved0: u8,
    /// Driver-written [`crate::ring::Features`].
    pub features: Le16,
    /// Driver-written, receive queues: the longest frame the queue takes,
    /// 0 for no limit but the buffers' (docs/datapath.md, "Frames longer
    /// than the receiver's MTU").
    pub max_frame: Le16,
    pub reserved2: [u8; 2],
    pub packets: Le64,
    pub bytes: Le64,
    pub drops: Le64,
    pub errors: Le64,
    pub reserved1: Le64,
}

// SAFETY: little-endian integers and bytes laid out without padding (size
// asserted below); every bit pattern is valid.
unsafe impl ByteValued for QueueContext {}

/// Bytes of [`QueueContext`]; a context slot (A) is at least this.
pub const CONTEXT_SIZE: usize = 64;
const _: () = assert!(std::mem::size_of::<QueueContext>() == CONTEXT_SIZE);

/// The card's cached copy of a queue context, in native types.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Context {
    pub ring: u64,
    pub size: u16,
    pub state: u16,
    pub head: u16,
    pub tail: u16,
    pub error: u8,
    /// The driver's [`crate::ring::Features`] bits, kept as written.
    pub features: u16,
    /// The driver's `max_frame`, kept as written.
    pub max_frame: u16,
    pub packets: u64,
    pub bytes: u64,
    pub drops: u64,
    pub errors: u64,
}

impl From<QueueContext> for Context {
    fn from(w: QueueContext) -> Self {
        Context {
            ring: w.ring.to_native(),
            size: w.size.to_native(),
            state: w.state.to_native(),
            head: w.head.to_native(),
            tail: w.tail.to_native(),
            error: w.error,
            features: w.features.to_native(),
            max_frame: w.max_frame.to_native(),
            packets: w.packets.to_native(),
            bytes: w.bytes.to_native(),
            drops: w.drops.to_native(),
            errors: w.errors.to_native(),
        }
    }
}

impl From<Context> for QueueContext {
    fn from(c: Context) -> Self {
        QueueContext {
            ring: c.ring.into(),
            size: c.size.into(),
            state: c.state.into(),
            head: c.head.into(),
            tail: c.tail.into(),
            error: c.error,
            features: c.features.into(),
            max_frame: c.max_frame.into(),
            packets: c.packets.into(),
            bytes: c.bytes.into(),
            drops: c.drops.into(),
            errors: c.errors.into(),
            ..Default::default()
        }
    }
}

impl Context {
    pub fn running(&self) -> bool {
        self.state & ctx_state::RUNNING != 0
    }

    pub fn load(dma: &DmaSpace, addr: u64) -> Result<Context, StateError> {
        let w: QueueContext = dma
            .read_obj(addr)
            .map_err(|source| StateError::ContextUnreadable { addr, source })?;
        Ok(w.into())
    }

    /// Writes the card-owned fields back. The driver-owned ring and size are
    /// written too, unchanged, so one 64-byte store keeps it simple.
    pub fn store(&self, dma: &DmaSpace, addr: u64) -> Result<(), DmaError> {
        dma.write_obj(addr, QueueContext::from(*self))
    }

    // The counters are loaded from guest memory (a queue resumes from the
    // numbers its context holds), so they may start anywhere, up to
    // u64::MAX: they wrap, as a device's statistics registers do, rather
    // than overflow.

    /// Counts `packets` frames of `bytes` bytes in all.
    pub fn count(&mut self, packets: u64, bytes: u64) {
        self.packets = self.packets.wrapping_add(packets);
        self.bytes = self.bytes.wrapping_add(bytes);
    }

    /// Counts `n` dropped frames.
    pub fn count_drops(&mut self, n: u64) {
        self.drops = self.drops.wrapping_add(n);
    }

    /// Counts one queue error.
    pub fn count_error(&mut self) {
        self.errors = self.errors.wrapping_add(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::{FakeDriver, StateTables};

    fn layout(a: u64, b: u64, levels: u32, services: u32) -> Layout {
        Layout {
            clat: 0x1000,
            entry_size: a,
            block_size: b,
            levels,
            services,
        }
    }

    #[test]
    fn spec_example_one_level_service_100_is_clat_24_last_element() {
        let l = layout(1024, 4096, 1, 4096);
        let loc = l.locate(100).unwrap();
        assert_eq!(loc.clat_offsets, vec![24]);
        assert_eq!(loc.element, 3, "4th and last of 4 contexts per block");
    }

    #[test]
    fn spec_example_two_levels_service_2054_is_1_1_second_element() {
        let l = layout(1024, 4096, 2, 1 << 20);
        assert_eq!(l.clat_entries(), 512);
        let loc = l.locate(2054).unwrap();
        assert_eq!(loc.clat_offsets, vec![1, 1]);
        assert_eq!(loc.element, 1);
    }

    #[test]
    fn spec_example_two_levels_service_2048_is_0_511_last_element() {
        let l = layout(1024, 4096, 2, 1 << 20);
        let loc = l.locate(2048).unwrap();
        assert_eq!(loc.clat_offsets, vec![0, 511]);
        assert_eq!(loc.element, 3);
    }

    #[test]
    fn first_service_is_first_element_of_first_block() {
        let l = layout(64, 4096, 2, 100);
        let loc = l.locate(1).unwrap();
        assert_eq!(loc.clat_offsets, vec![0, 0]);
        assert_eq!(loc.element, 0);
    }

    #[test]
    fn services_beyond_the_tables_or_zero_are_refused() {
        let l = layout(1024, 4096, 1, 4096);
        assert!(matches!(l.locate(0), Err(StateError::NoService { .. })));
        // One level of 512 blocks of 4 contexts: 2048 services.
        assert_eq!(l.capacity(), 2048);
        assert!(l.locate(2048).is_ok());
        assert!(matches!(l.locate(2049), Err(StateError::NoService { .. })));
        let few = layout(1024, 4096, 1, 10);
        assert!(matches!(few.locate(11), Err(StateError::NoService { .. })));
    }

    #[test]
    fn walk_finds_contexts_through_one_and_two_level_clats() {
        for levels in [1, 2] {
            let mut drv = FakeDriver::new();
            let t = StateTables::build(&mut drv, levels, 1024, 300);
            let bat = Bat::read(drv.dma(), t.bat).unwrap();
            for q in [0u16, 3, 4, 299] {
                for ty in ServiceType::ALL {
                    let got = bat.context_address(drv.dma(), ty, q).unwrap();
                    assert_eq!(got, t.context(ty, q), "levels {levels} queue {q} {ty:?}");
                }
            }
        }
    }

    #[test]
    fn walk_rejects_null_pointers_and_bad_bats() {
        let mut drv = FakeDriver::new();
        let t = StateTables::build(&mut drv, 2, 64, 8);
        // Clear the level-1 entry: the level-2 CLAT is gone.
        drv.write_u64(t.clat[0], 0);
        let bat = Bat::read(drv.dma(), t.bat).unwrap();
        assert!(matches!(
            bat.context_address(drv.dma(), ServiceType::SendQueue, 0),
            Err(StateError::BadPointer { level: 1, .. })
        ));
        drv.write_u32(t.bat, 0x1234);
        assert!(matches!(
            Bat::read(drv.dma(), t.bat),
            Err(StateError::BadMagic(0x1234))
        ));
        assert!(matches!(
            Bat::read(drv.dma(), 0xdead_0000),
            Err(StateError::BatUnreadable(_))
        ));
    }

    #[test]
    fn bat_entries_out_of_range_are_refused() {
        let mut drv = FakeDriver::new();
        let t = StateTables::build(&mut drv, 1, 64, 8);
        let entry = t.bat + BAT_HEADER_SIZE;
        // entry_size 32 < 64
        drv.write_u32(entry + 8, 32);
        let e = Bat::read(drv.dma(), t.bat).unwrap_err();
        assert!(matches!(e, StateError::BadEntry { .. }));
        assert_eq!(e.vct_code(), 3);
        drv.write_u32(entry + 8, 64);
        drv.write_u32(entry + 16, 5);
        assert!(Bat::read(drv.dma(), t.bat).is_err(), "5 levels");
    }

    #[test]
    fn context_round_trips_through_guest_memory() {
        let mut drv = FakeDriver::new();
        let at = drv.alloc(64, 64);
        let c = Context {
            ring: 0x1234_5000,
            size: 256,
            state: ctx_state::RUNNING,
            head: 7,
            tail: 9,
            features: 0x7,
            max_frame: 1518,
            error: 0,
            packets: 1 << 40,
            bytes: 5,
            drops: 6,
            errors: 1,
        };
        c.store(drv.dma(), at).unwrap();
        assert_eq!(Context::load(drv.dma(), at).unwrap(), c);
        // Byte layout as documented: size at 8, head at 12, packets at 24.
        assert_eq!(drv.read_u16(at + 8), 256);
        assert_eq!(drv.read_u16(at + 12), 7);
        assert_eq!(drv.read_u16(at + 20), 1518, "max_frame at 20");
        assert_eq!(drv.read_u64(at + 24), 1 << 40);
    }
}
