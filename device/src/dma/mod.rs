//! DMA into guest memory.
//!
//! QEMU runs the guest on shared memory (`memory-backend-memfd,share=on`) and
//! sends each RAM section in a DMA_MAP with the memfd. [`DmaSpace`] maps those
//! files with `vm-memory` and is the only way the card touches guest memory:
//! every access is checked against the mapped ranges and their permissions,
//! and an address outside them is a [`DmaError`], never a fault in vnicd.
//! Memory a client truncates under the card is caught by [`guard`] and
//! refused from then on.

pub mod guard;
pub mod relay;

use std::fs::File;
use std::sync::Arc;

use guard::Watch;
use relay::{Relay, RelayedWrite};

pub(crate) mod crash;
use thiserror::Error;
use vm_memory::{
    ByteValued, Bytes, FileOffset, GuestAddress, GuestMemoryMmap, GuestMemoryRegion,
    GuestRegionMmap, MemoryRegionAddress, MmapRegion, VolatileSlice, WriteVolatile,
};

use crate::protocol::{DMA_PAGE_SIZE, MAX_DMA_MAPS};

/// DMA_MAP flag bits (vfio-user `VFIO_USER_F_DMA_REGION_READ/WRITE`).
pub const DMA_READ: u32 = 1;
pub const DMA_WRITE: u32 = 2;

#[derive(Debug, Error)]
pub enum DmaError {
    #[error(
        "DMA_MAP of writable memory {address:#x}+{size:#x} without a file descriptor: \
         the guest's memory must be shared (run QEMU with -object \
         memory-backend-memfd,id=mem,size=...,share=on -numa node,memdev=mem); \
         vnicd does not do DMA through messages"
    )]
    NoFd { address: u64, size: u64 },
    #[error("DMA_MAP flags {0:#x} invalid")]
    Flags(u32),
    #[error(
        "DMA range {address:#x}+{size:#x} (file offset {offset:#x}) is empty, unaligned or wraps"
    )]
    BadRange {
        address: u64,
        size: u64,
        offset: u64,
    },
    #[error("DMA range {address:#x}+{size:#x} overlaps an existing mapping")]
    Overlap { address: u64, size: u64 },
    #[error("too many DMA mappings (limit {MAX_DMA_MAPS})")]
    TooMany,
    #[error("DMA file is not mappable shared memory: {0}")]
    NotMappable(String),
    #[error("DMA file offset {offset:#x}+{size:#x} is past its end ({len:#x} bytes)")]
    PastEnd { offset: u64, size: u64, len: u64 },
    #[error("mmap of DMA region failed: {0}")]
    Mmap(String),
    #[error("DMA_UNMAP {address:#x}+{size:#x} splits a mapping")]
    PartialUnmap { address: u64, size: u64 },
    #[error("DMA_UNMAP flags {0:#x} unsupported")]
    UnmapFlags(u32),
    #[error("DMA to {address:#x}+{len:#x} is outside guest memory")]
    OutOfRange { address: u64, len: usize },
    #[error("DMA write to {address:#x}+{len:#x} hits read-only memory")]
    ReadOnly { address: u64, len: usize },
    #[error(
        "DMA to {address:#x}+{len:#x}: the client truncated that memory under the card, \
         which no longer uses it"
    )]
    Lost { address: u64, len: usize },
    #[error(
        "too many DMA mappings watched for truncation (limit {})",
        guard::WATCH_SLOTS
    )]
    Unwatched,
    #[error("the state record names a file for this mapping, and none was kept")]
    FileMissing,
}

impl DmaError {
    pub fn errno(&self) -> i32 {
        match self {
            DmaError::Overlap { .. } => libc::EEXIST,
            DmaError::TooMany => libc::ENOSPC,
            DmaError::OutOfRange { .. } | DmaError::ReadOnly { .. } | DmaError::Lost { .. } => {
                libc::EFAULT
            }
            DmaError::Unwatched => libc::ENOSPC,
            _ => libc::EINVAL,
        }
    }
}

/// One DMA_MAP. `region` is None for read-only memory the client sent
/// without a descriptor (QEMU does this for ROMs such as the BIOS): the
/// range is known but the card cannot reach it. `watch` (declared first, so
/// dropped first) catches the client truncating the file under `region`.
struct Mapping {
    address: u64,
    size: u64,
    writable: bool,
    watch: Option<Watch>,
    /// The loss was reported ([`DmaSpace::take_lost`]).
    reported: bool,
    region: Option<Arc<GuestRegionMmap>>,
}

impl Mapping {
    fn end(&self) -> u64 {
        self.address + self.size
    }

    /// The memory the card may reach: None for a range without a
    /// descriptor, and for memory the client truncated.
    #[inline]
    fn reachable(&self) -> Option<&GuestRegionMmap> {
        if self.watch.as_ref().is_some_and(Watch::lost) {
            return None;
        }
        self.region.as_deref()
    }

    /// The error for an access at `address` that this mapping holds but
    /// cannot serve.
    fn unreachable(&self, address: u64, len: usize) -> DmaError {
        if self.watch.as_ref().is_some_and(Watch::lost) {
            DmaError::Lost { address, len }
        } else {
            DmaError::OutOfRange { address, len }
        }
    }
}

/// Guest memory the card may read: a range inside one mapping, checked as
/// [`DmaSpace::read`] checks it ([`DmaSpace::source`]). The fast path
/// copies a frame from the sending guest's buffer straight into the
/// receiving guest's buffer with it, without a stop in the card's memory.
#[derive(Clone, Copy, Debug)]
pub struct GuestBytes<'a>(VolatileSlice<'a>);

impl<'a> GuestBytes<'a> {
    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.len() == 0
    }

    /// The range cut in two at `mid`; None if `mid` is beyond its end.
    pub fn split_at(&self, mid: usize) -> Option<(GuestBytes<'a>, GuestBytes<'a>)> {
        let (a, b) = self.0.split_at(mid).ok()?;
        Some((GuestBytes(a), GuestBytes(b)))
    }

    /// Copies the first bytes of the range into `buf`, as many as both
    /// hold; returns how many.
    pub fn read_head(&self, buf: &mut [u8]) -> usize {
        self.0.copy_to(buf)
    }

    /// Copies wire structures from `offset` into `out`, as many as fit
    /// both; returns how many.
    pub fn read_objs<T: ByteValued>(&self, offset: usize, out: &mut [T]) -> usize {
        self.0.offset(offset).map_or(0, |s| s.copy_to(out))
    }

    /// The range as vm-memory's volatile slice, for word-sized atomic
    /// loads of words the guest's CPUs store (crate::doorbell). The card's
    /// own stores go through [`DmaSpace::store_u32`].
    pub fn volatile(&self) -> VolatileSlice<'a> {
        self.0
    }
}

/// Guest memory the card may write (and read): a range inside one
/// mapping, checked as [`DmaSpace::write`] checks it
/// ([`DmaSpace::target`]). In migration mode ([`relay`]) its writes are
/// kept for the client instead of made: `relay` is the function's relay
/// and `address` the range's guest address.
#[derive(Clone, Copy, Debug)]
pub struct GuestBytesMut<'a> {
    mem: VolatileSlice<'a>,
    address: u64,
    relay: Option<&'a Relay>,
}

impl<'a> GuestBytesMut<'a> {
    pub fn len(&self) -> usize {
        self.mem.len()
    }

    pub fn is_empty(&self) -> bool {
        self.mem.len() == 0
    }

    /// The same range, for reading.
    pub fn as_source(&self) -> GuestBytes<'a> {
        GuestBytes(self.mem)
    }

    /// The range cut in two at `mid`; None if `mid` is beyond its end.
    pub fn split_at(&self, mid: usize) -> Option<(GuestBytesMut<'a>, GuestBytesMut<'a>)> {
        let (a, b) = self.mem.split_at(mid).ok()?;
        let second = GuestBytesMut {
            mem: b,
            address: self.address + mid as u64,
            relay: self.relay,
        };
        Some((GuestBytesMut { mem: a, ..*self }, second))
    }

    /// Copies all of `src` (another guest's memory, or this one's) to the
    /// start of the range; false if it does not fit.
    pub fn copy_from(&self, src: GuestBytes) -> bool {
        if src.len() > self.len() {
            return false;
        }
        if !crash::write_allowed() {
            return true;
        }
        match self.relay {
            Some(r) => {
                let mut data = vec![0; src.len()];
                src.0.copy_to(&mut data[..]);
                r.push(self.address, &data);
            }
            None => {
                src.0.copy_to_volatile_slice(self.mem);
            }
        }
        true
    }

    /// Stores `value` (little-endian) at `offset` in the range with one
    /// 8-byte store, ordered after every earlier write (release); false
    /// (and nothing written) if it does not fit or `offset` is not 8-byte
    /// aligned in memory.
    pub fn store_u64(&self, offset: usize, value: u64) -> bool {
        self.store(offset, value.to_le())
    }

    /// As [`GuestBytesMut::store_u64`], 4 bytes.
    pub fn store_u32(&self, offset: usize, value: u32) -> bool {
        self.store(offset, value.to_le())
    }

    fn store<T: vm_memory::AtomicAccess + ByteValued>(&self, offset: usize, value: T) -> bool {
        let size = std::mem::size_of::<T>();
        let fits = offset % size == 0
            && offset + size <= self.len()
            && (self.mem.ptr_guard().as_ptr() as usize + offset) % size == 0;
        if !fits {
            return false;
        }
        if !crash::write_allowed() {
            return true;
        }
        match self.relay {
            Some(r) => r.push(self.address + offset as u64, value.as_slice()),
            None => {
                let _ = self
                    .mem
                    .store(value, offset, std::sync::atomic::Ordering::Release);
            }
        }
        true
    }

    /// Writes `data` at `offset` in the range; false (and nothing
    /// written) if it does not fit. 8 naturally aligned bytes go with one
    /// 8-byte store (vm-memory copies up to 8 bytes with the widest
    /// aligned access).
    pub fn write(&self, offset: usize, data: &[u8]) -> bool {
        let fits = offset
            .checked_add(data.len())
            .is_some_and(|end| end <= self.len());
        if !fits {
            return false;
        }
        if !crash::write_allowed() {
            return true;
        }
        match self.relay {
            Some(r) => {
                r.push(self.address + offset as u64, data);
                true
            }
            None => self.mem.write_slice(data, offset).is_ok(),
        }
    }
}

/// A [`DmaSpace`] seen through the last mapping it reached: a burst of
/// accesses to buffers in one RAM section (the common case) finds the
/// mapping once and then only checks that each access lies inside it,
/// with the checks of [`DmaSpace::source`] and [`DmaSpace::target`].
pub struct DmaWindow<'a> {
    dma: &'a DmaSpace,
    /// The mapping last reached: its guest address, all of its memory,
    /// and whether the card may write it.
    last: Option<(u64, VolatileSlice<'a>, bool)>,
}

impl<'a> DmaWindow<'a> {
    pub fn new(dma: &'a DmaSpace) -> Self {
        DmaWindow { dma, last: None }
    }

    /// As [`DmaSpace::source`], None for an error too.
    pub fn source(&mut self, address: u64, len: usize) -> Option<GuestBytes<'a>> {
        self.range(address, len, false).map(GuestBytes)
    }

    /// As [`DmaSpace::target`], None for an error too.
    pub fn target(&mut self, address: u64, len: usize) -> Option<GuestBytesMut<'a>> {
        let mem = self.range(address, len, true)?;
        Some(GuestBytesMut {
            mem,
            address,
            relay: self.dma.relay.as_ref(),
        })
    }

    fn range(&mut self, address: u64, len: usize, write: bool) -> Option<VolatileSlice<'a>> {
        if let Some(s) = self.inside(address, len, write) {
            return Some(s);
        }
        self.last = self.dma.mapping_of(address);
        self.inside(address, len, write)
    }

    /// `len` bytes at `address` if the last mapping holds them all (and
    /// may be written, for `write`).
    fn inside(&self, address: u64, len: usize, write: bool) -> Option<VolatileSlice<'a>> {
        let (base, slice, writable) = self.last?;
        let offset = usize::try_from(address.checked_sub(base)?).ok()?;
        (writable || !write).then_some(())?;
        slice.subslice(offset, len).ok()
    }
}

/// One mapping as a state record keeps it (docs/restart.md); the file,
/// if it had one, travels apart, through the descriptor store, in the
/// order of [`DmaSpace::files`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DmaRecord {
    pub address: u64,
    pub size: u64,
    pub offset: u64,
    pub writable: bool,
    /// It came with a descriptor.
    pub file: bool,
}

/// The guest memory one client mapped for one function.
#[derive(Default)]
pub struct DmaSpace {
    maps: Vec<Mapping>,
    mem: Option<GuestMemoryMmap>,
    /// The client offered writable memory without a descriptor, and it
    /// was refused: guest RAM of a QEMU without `share=on`, unless the
    /// client's other writable memory came with descriptors.
    refused_unshared: bool,
    /// Migration mode: writes are kept here for the client to make
    /// ([`relay`]), none is made through the mapping.
    relay: Option<Relay>,
}

fn aligned(v: u64) -> bool {
    v % DMA_PAGE_SIZE == 0
}

/// Checks that `file` is a regular (memfd or tmpfs) file at least
/// `offset + size` long: mapping past the end would make every access past
/// it raise SIGBUS. (A file shrunk later is [`guard`]'s business.)
fn check_file(file: &File, offset: u64, size: u64) -> Result<(), DmaError> {
    let meta = file
        .metadata()
        .map_err(|e| DmaError::NotMappable(e.to_string()))?;
    if !meta.file_type().is_file() {
        return Err(DmaError::NotMappable("not a regular file or memfd".into()));
    }
    let end = offset.checked_add(size).ok_or(DmaError::BadRange {
        address: 0,
        size,
        offset,
    })?;
    if end > meta.len() {
        return Err(DmaError::PastEnd {
            offset,
            size,
            len: meta.len(),
        });
    }
    Ok(())
}

impl DmaSpace {
    pub fn is_empty(&self) -> bool {
        self.maps.is_empty()
    }

    pub fn len(&self) -> usize {
        self.maps.len()
    }

    /// Handles DMA_MAP.
    pub fn map(
        &mut self,
        address: u64,
        size: u64,
        offset: u64,
        flags: u32,
        file: Option<File>,
    ) -> Result<(), DmaError> {
        if flags & !(DMA_READ | DMA_WRITE) != 0 || flags & DMA_READ == 0 {
            return Err(DmaError::Flags(flags));
        }
        let bad = DmaError::BadRange {
            address,
            size,
            offset,
        };
        let end = address.checked_add(size);
        if size == 0 || end.is_none() || !aligned(address) || !aligned(size) || !aligned(offset) {
            return Err(bad);
        }
        let end = end.unwrap_or_default();
        if self
            .maps
            .iter()
            .any(|m| address < m.end() && m.address < end)
        {
            return Err(DmaError::Overlap { address, size });
        }
        if self.maps.len() >= MAX_DMA_MAPS as usize {
            return Err(DmaError::TooMany);
        }
        let writable = flags & DMA_WRITE != 0;
        let Some(file) = file else {
            // Writable memory without a descriptor is guest RAM that is not
            // shared, or another device's BAR QEMU maps into the guest. The
            // first is refused once per client, with the reason; every other
            // such range is then taken as known but out of reach (as ROMs
            // are), so the client hears it once, not once per range. A
            // client whose writable memory came with descriptors shares its
            // RAM: such a range is a BAR, and taken at once.
            let shared = self.maps.iter().any(|m| m.writable && m.region.is_some());
            if writable && !shared && !self.refused_unshared {
                self.refused_unshared = true;
                return Err(DmaError::NoFd { address, size });
            }
            self.maps.push(Mapping {
                address,
                size,
                writable,
                watch: None,
                reported: false,
                region: None,
            });
            self.rebuild();
            return Ok(());
        };
        check_file(&file, offset, size)?;
        let prot = libc::PROT_READ | if writable { libc::PROT_WRITE } else { 0 };
        let len = usize::try_from(size).map_err(|_| bad)?;
        let mapping = MmapRegion::build(
            Some(FileOffset::new(file, offset)),
            len,
            prot,
            libc::MAP_SHARED | libc::MAP_NORESERVE,
        )
        .map_err(|e| DmaError::Mmap(e.to_string()))?;
        let region =
            GuestRegionMmap::new(mapping, GuestAddress(address)).ok_or(DmaError::BadRange {
                address,
                size,
                offset,
            })?;
        let watch = guard::watch(region.as_ptr(), len).ok_or(DmaError::Unwatched)?;
        self.maps.push(Mapping {
            address,
            size,
            writable,
            watch: Some(watch),
            reported: false,
            region: Some(Arc::new(region)),
        });
        self.rebuild();
        Ok(())
    }

    /// Handles DMA_UNMAP: removes every mapping inside the range; a mapping
    /// that straddles the range's edge is an error (as in vfio type1 v2).
    pub fn unmap(&mut self, address: u64, size: u64, all: bool) -> Result<usize, DmaError> {
        if all {
            let n = self.maps.len();
            self.maps.clear();
            self.rebuild();
            return Ok(n);
        }
        let end = address.checked_add(size).ok_or(DmaError::BadRange {
            address,
            size,
            offset: 0,
        })?;
        let overlaps = |m: &Mapping| address < m.end() && m.address < end;
        if self
            .maps
            .iter()
            .any(|m| overlaps(m) && (m.address < address || m.end() > end))
        {
            return Err(DmaError::PartialUnmap { address, size });
        }
        let before = self.maps.len();
        self.maps.retain(|m| !overlaps(m));
        self.rebuild();
        Ok(before - self.maps.len())
    }

    /// Mappings whose memory the client truncated since the last call
    /// (address and size of each, reported once): the owner logs and
    /// counts them. Cheap when [`guard::lost_total`] has not moved.
    pub fn take_lost(&mut self) -> Vec<(u64, u64)> {
        let mut lost = Vec::new();
        for m in &mut self.maps {
            if !m.reported && m.watch.as_ref().is_some_and(Watch::lost) {
                m.reported = true;
                lost.push((m.address, m.size));
            }
        }
        lost
    }

    /// Every mapping, by address, as a state record keeps it, and whether
    /// writable memory without a descriptor was refused.
    pub fn save(&self) -> (Vec<DmaRecord>, bool) {
        let maps = self
            .maps
            .iter()
            .map(|m| DmaRecord {
                address: m.address,
                size: m.size,
                offset: m
                    .region
                    .as_ref()
                    .and_then(|r| r.file_offset())
                    .map_or(0, |f| f.start()),
                writable: m.writable,
                file: m.region.is_some(),
            })
            .collect();
        (maps, self.refused_unshared)
    }

    /// The files of the mappings that have one, in [`DmaSpace::save`]'s
    /// order.
    pub fn files(&self) -> Vec<&File> {
        self.maps
            .iter()
            .filter_map(|m| m.region.as_ref()?.file_offset().map(|f| f.file()))
            .collect()
    }

    /// Maps again what a state record kept, `files` in [`DmaSpace::files`]'
    /// order: the same checks as a DMA_MAP (a file shorter than it was is
    /// refused). Returns the first mapping that failed, with why; those
    /// before it stay.
    pub fn restore(
        &mut self,
        maps: &[DmaRecord],
        refused_unshared: bool,
        files: Vec<File>,
    ) -> Result<(), (DmaRecord, DmaError)> {
        let mut files = files.into_iter();
        for &m in maps {
            let file = if m.file {
                Some(files.next().ok_or((m, DmaError::FileMissing))?)
            } else {
                None
            };
            let flags = DMA_READ | if m.writable { DMA_WRITE } else { 0 };
            // A range without a descriptor is taken as known but out of
            // reach, as the first time.
            self.refused_unshared = true;
            self.map(m.address, m.size, m.offset, flags, file)
                .map_err(|e| (m, e))?;
        }
        self.refused_unshared = refused_unshared;
        Ok(())
    }

    /// Drops every mapping (client disconnected).
    pub fn clear(&mut self) {
        self.maps.clear();
        self.mem = None;
        self.refused_unshared = false;
    }

    /// Whether the client's guest RAM is out of reach (STATUS.MEM_UNSHARED):
    /// writable memory without a descriptor was refused, and none came with
    /// one.
    pub fn unshared(&self) -> bool {
        self.refused_unshared && !self.maps.iter().any(|m| m.writable && m.region.is_some())
    }

    /// Enters or leaves migration mode ([`relay`]). Leaving it hands back
    /// the writes not taken yet: the caller still sends them.
    pub fn set_relay(&mut self, on: bool) -> Vec<RelayedWrite> {
        match (on, self.relay.take()) {
            (true, Some(r)) => {
                self.relay = Some(r);
                Vec::new()
            }
            (true, None) => {
                self.relay = Some(Relay::default());
                Vec::new()
            }
            (false, r) => r.map(|r| r.take()).unwrap_or_default(),
        }
    }

    /// Whether writes go through the client (migration mode).
    pub fn relaying(&self) -> bool {
        self.relay.is_some()
    }

    /// The writes made in migration mode since the last call, oldest
    /// first.
    pub fn take_relayed(&self) -> Vec<RelayedWrite> {
        self.relay.as_ref().map(Relay::take).unwrap_or_default()
    }

    /// Whether writes made in migration mode wait for
    /// [`DmaSpace::take_relayed`].
    pub fn relay_pending(&self) -> bool {
        self.relay.as_ref().is_some_and(|r| !r.is_empty())
    }

    /// Stores `value` at `address` with one aligned 4-byte store (release),
    /// or keeps it for the client in migration mode: the doorbell page's
    /// words.
    pub fn store_u32(&self, address: u64, value: u32) -> Result<(), DmaError> {
        let t = self
            .target(address, 4)?
            .ok_or(DmaError::OutOfRange { address, len: 4 })?;
        if t.store_u32(0, value) {
            Ok(())
        } else {
            Err(DmaError::OutOfRange { address, len: 4 })
        }
    }

    fn rebuild(&mut self) {
        self.maps.sort_by_key(|m| m.address);
        let regions = self.maps.iter().filter_map(|m| m.region.clone()).collect();
        // Mappings never overlap (checked in map), so only "no regions" fails.
        self.mem = GuestMemoryMmap::from_arc_regions(regions).ok();
    }

    /// Checks that `[address, address+len)` is wholly covered by mappings,
    /// writable ones if `write`.
    fn check(&self, address: u64, len: usize, write: bool) -> Result<(), DmaError> {
        let oob = || DmaError::OutOfRange { address, len };
        let end = address.checked_add(len as u64).ok_or_else(oob)?;
        let mut at = address;
        while at < end {
            let m = self
                .maps
                .iter()
                .find(|m| m.address <= at && at < m.end())
                .ok_or_else(oob)?;
            if m.reachable().is_none() {
                return Err(m.unreachable(address, len));
            }
            if write && !m.writable {
                return Err(DmaError::ReadOnly { address, len });
            }
            at = m.end();
        }
        Ok(())
    }

    /// The region that holds all of `[address, address + len)`, and where
    /// in it `address` is, when one mapping holds the whole range (every
    /// descriptor and buffer access of a driver that keeps its buffers in
    /// one RAM section): one lookup, then a copy through the region's
    /// volatile slice ([`DmaSpace::slice`]) instead of vm-memory's walk
    /// over the whole memory, or its `Bytes` layers (a hundred
    /// instructions per access before a byte moves). `None`: the range
    /// spans mappings, for the slower path. Errors as [`DmaSpace::read`]
    /// and [`DmaSpace::write`] report them.
    fn single(
        &self,
        address: u64,
        len: usize,
        write: bool,
    ) -> Result<Option<(&GuestRegionMmap, MemoryRegionAddress)>, DmaError> {
        let oob = DmaError::OutOfRange { address, len };
        let m = self
            .maps
            .iter()
            .find(|m| m.address <= address && address < m.end())
            .ok_or(oob)?;
        let end = address
            .checked_add(len as u64)
            .ok_or(DmaError::OutOfRange { address, len })?;
        if end > m.end() {
            return Ok(None);
        }
        let region = m.reachable().ok_or_else(|| m.unreachable(address, len))?;
        if write && !m.writable {
            return Err(DmaError::ReadOnly { address, len });
        }
        Ok(Some((region, MemoryRegionAddress(address - m.address))))
    }

    /// Copies guest memory at `address` into `buf`.
    pub fn read(&self, address: u64, buf: &mut [u8]) -> Result<(), DmaError> {
        let len = buf.len();
        let oob = || DmaError::OutOfRange { address, len };
        if let Some(slice) = self.slice(address, len, false)? {
            slice.copy_to(buf);
            return Ok(());
        }
        self.check(address, buf.len(), false)?;
        let mem = self.mem.as_ref().ok_or_else(oob)?;
        mem.read_slice(buf, GuestAddress(address))
            .map_err(|_| oob())
    }

    /// Appends `len` bytes of guest memory at `address` to `buf`. Unlike
    /// [`DmaSpace::read`] into a resized `Vec`, the new room is not
    /// zero-filled first: for the card's frame buffer that fill was a
    /// second pass over every byte of every frame. On an error `buf` is
    /// left as it was.
    pub fn read_append(&self, address: u64, len: usize, buf: &mut Vec<u8>) -> Result<(), DmaError> {
        let oob = || DmaError::OutOfRange { address, len };
        if let Some(slice) = self.slice(address, len, false)? {
            return buf.write_volatile(&slice).map(drop).map_err(|_| oob());
        }
        // Across mappings (rare): the checked walk, into zeroed room.
        let at = buf.len();
        buf.resize(at + len, 0);
        let result = self.read(address, &mut buf[at..]);
        if result.is_err() {
            buf.truncate(at);
        }
        result
    }

    /// `len` bytes at `address` for reading as [`GuestBytes`]: checked as
    /// [`DmaSpace::read`] checks (in range, mapped, reachable), with the
    /// same errors. `Ok(None)` when one mapping does not hold the whole
    /// range (across mappings, or running past the end): the caller takes
    /// the path of [`DmaSpace::read`], which tells the two apart.
    pub fn source(&self, address: u64, len: usize) -> Result<Option<GuestBytes<'_>>, DmaError> {
        Ok(self.slice(address, len, false)?.map(GuestBytes))
    }

    /// `len` bytes at `address` for writing as [`GuestBytesMut`]: checked
    /// as [`DmaSpace::write`] checks (in range, mapped, writable), with
    /// the same errors; `Ok(None)` as for [`DmaSpace::source`].
    pub fn target(&self, address: u64, len: usize) -> Result<Option<GuestBytesMut<'_>>, DmaError> {
        Ok(self.slice(address, len, true)?.map(|mem| GuestBytesMut {
            mem,
            address,
            relay: self.relay.as_ref(),
        }))
    }

    /// The mapping that holds `address`, all of it, for [`DmaWindow`]:
    /// its guest address, memory and whether the card may write it. None
    /// if no mapping the card can reach holds it.
    fn mapping_of(&self, address: u64) -> Option<(u64, VolatileSlice<'_>, bool)> {
        let m = self
            .maps
            .iter()
            .find(|m| m.address <= address && address < m.end())?;
        let slice = m.reachable()?.as_volatile_slice().ok()?;
        Some((m.address, slice, m.writable))
    }

    /// The volatile slice of [`DmaSpace::single`]'s range. Inlined: the
    /// data path calls it for every access, and most of what it checks is
    /// known to the caller.
    #[inline]
    fn slice(
        &self,
        address: u64,
        len: usize,
        write: bool,
    ) -> Result<Option<VolatileSlice<'_>>, DmaError> {
        let Some((region, at)) = self.single(address, len, write)? else {
            return Ok(None);
        };
        let slice = region
            .get_slice(at, len)
            .map_err(|_| DmaError::OutOfRange { address, len })?;
        Ok(Some(slice))
    }

    /// Reads a wire structure (little-endian fields) at `address`.
    pub fn read_obj<T: ByteValued>(&self, address: u64) -> Result<T, DmaError> {
        let len = std::mem::size_of::<T>();
        let oob = DmaError::OutOfRange { address, len };
        if let Some(slice) = self.slice(address, len, false)? {
            let mut value = T::zeroed();
            slice.copy_to(value.as_mut_slice());
            return Ok(value);
        }
        self.check(address, len, false)?;
        let mem = self.mem.as_ref().ok_or(oob)?;
        mem.read_obj(GuestAddress(address))
            .map_err(|_| DmaError::OutOfRange { address, len })
    }

    /// Reads consecutive wire structures at `address` into `out`: one
    /// access when one mapping holds them all.
    pub fn read_objs<T: ByteValued>(&self, address: u64, out: &mut [T]) -> Result<(), DmaError> {
        let size = std::mem::size_of::<T>();
        let len = std::mem::size_of_val(out);
        if let Some(slice) = self.slice(address, len, false)? {
            slice.copy_to(out);
            return Ok(());
        }
        let mut at = address;
        for o in out.iter_mut() {
            *o = self.read_obj(at)?;
            at += size as u64;
        }
        Ok(())
    }

    /// Writes a wire structure at `address`.
    pub fn write_obj<T: ByteValued>(&self, address: u64, value: T) -> Result<(), DmaError> {
        self.write(address, value.as_slice())
    }

    /// Whether `[address, address + len)` is wholly mapped (and writable if
    /// `write`): rings are checked once when a queue starts.
    pub fn contains(&self, address: u64, len: usize, write: bool) -> bool {
        self.check(address, len, write).is_ok()
    }

    /// Copies `data` into guest memory at `address`.
    pub fn write(&self, address: u64, data: &[u8]) -> Result<(), DmaError> {
        let oob = || DmaError::OutOfRange {
            address,
            len: data.len(),
        };
        if !crash::write_allowed() {
            return Ok(());
        }
        if let Some(relay) = &self.relay {
            self.check(address, data.len(), true)?;
            relay.push(address, data);
            return Ok(());
        }
        if let Some(slice) = self.slice(address, data.len(), true)? {
            slice.copy_from(data);
            return Ok(());
        }
        self.check(address, data.len(), true)?;
        let mem = self.mem.as_ref().ok_or_else(oob)?;
        mem.write_slice(data, GuestAddress(address))
            .map_err(|_| oob())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_utils::memfd;

    /// Maps 4 KiB right after [`space`]'s mapping, for accesses across two.
    fn map_adjacent(d: &mut DmaSpace) {
        d.map(
            0x10_4000,
            0x1000,
            0,
            DMA_READ | DMA_WRITE,
            Some(memfd(0x1000)),
        )
        .unwrap();
    }

    fn space() -> DmaSpace {
        let mut d = DmaSpace::default();
        d.map(
            0x10_0000,
            0x4000,
            0,
            DMA_READ | DMA_WRITE,
            Some(memfd(0x4000)),
        )
        .unwrap();
        d
    }

    #[test]
    fn write_then_read_inside_mapping() {
        let d = space();
        d.write(0x10_0ff0, b"hello guest").unwrap();
        let mut b = [0u8; 11];
        d.read(0x10_0ff0, &mut b).unwrap();
        assert_eq!(&b, b"hello guest");
    }

    #[test]
    fn read_append_adds_to_the_buffer_or_leaves_it_on_error() {
        let mut d = space();
        d.write(0x10_3ffe, &[7, 8]).unwrap();
        let mut buf = vec![1, 2];
        d.read_append(0x10_3ffe, 2, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 7, 8]);
        assert!(matches!(
            d.read_append(0x10_3ffe, 4, &mut buf),
            Err(DmaError::OutOfRange { .. })
        ));
        assert_eq!(buf, [1, 2, 7, 8], "unchanged");
        // Across two adjacent mappings: the walk.
        map_adjacent(&mut d);
        d.write(0x10_4000, &[9]).unwrap();
        d.read_append(0x10_3fff, 2, &mut buf).unwrap();
        assert_eq!(buf, [1, 2, 7, 8, 8, 9]);
    }

    #[test]
    fn source_and_target_copy_between_spaces_with_the_checks_of_read_and_write() {
        let (a, mut b) = (space(), space());
        a.write(0x10_0100, b"from guest a").unwrap();
        let src = a.source(0x10_0100, 12).unwrap().unwrap();
        assert_eq!(src.len(), 12);
        let mut head = [0u8; 4];
        assert_eq!(src.read_head(&mut head), 4);
        assert_eq!(&head, b"from");
        let dst = b.target(0x10_0200, 16).unwrap().unwrap();
        assert!(dst.copy_from(src));
        assert!(dst.write(12, &[1, 2, 3, 4]));
        assert!(!dst.write(14, &[1, 2, 3]), "past the range");
        let mut got = [0u8; 16];
        b.read(0x10_0200, &mut got).unwrap();
        assert_eq!(&got, b"from guest a\x01\x02\x03\x04");
        let small = b.target(0x10_0200, 8).unwrap().unwrap();
        assert!(!small.copy_from(src), "does not fit");
        let mut words = [0u32; 2];
        assert_eq!(dst.as_source().read_objs(8, &mut words), 2);
        assert_eq!(words[1], u32::from_le_bytes([1, 2, 3, 4]));
        // Outside memory is an error; a range running past its mapping is
        // left to the caller, whose read or write reports it.
        assert!(matches!(
            a.source(0x20_0000, 1),
            Err(DmaError::OutOfRange { .. })
        ));
        assert!(a.source(0x10_3ffc, 8).unwrap().is_none());
        assert!(a.read_append(0x10_3ffc, 8, &mut Vec::new()).is_err());
        let mut ro = DmaSpace::default();
        ro.map(0, 0x1000, 0, DMA_READ, Some(memfd(0x1000))).unwrap();
        assert!(ro.source(0, 16).unwrap().is_some());
        assert!(matches!(ro.target(0, 16), Err(DmaError::ReadOnly { .. })));
        // Across two adjacent mappings: None, for the caller's walk.
        map_adjacent(&mut b);
        assert!(b.target(0x10_3ffa, 12).unwrap().is_none());
    }

    #[test]
    fn read_objs_reads_in_one_mapping_or_across_two() {
        let mut d = space();
        map_adjacent(&mut d);
        let words: Vec<u8> = (0u8..16).collect();
        for at in [0x10_0100, 0x10_3ff8] {
            d.write(at, &words).unwrap();
            let mut out = [0u32; 4];
            d.read_objs(at, &mut out).unwrap();
            assert_eq!(out[3], u32::from_le_bytes([12, 13, 14, 15]), "{at:#x}");
        }
        assert!(d.read_objs(0x10_4ff8, &mut [0u32; 4]).is_err());
    }

    #[test]
    fn a_window_checks_as_source_and_target_across_mappings() {
        let mut d = space();
        d.map(0x20_0000, 0x1000, 0, DMA_READ, Some(memfd(0x1000)))
            .unwrap();
        d.write(0x10_0010, &[5; 8]).unwrap();
        let mut w = DmaWindow::new(&d);
        let mut b = [0u8; 8];
        w.source(0x10_0010, 8).unwrap().read_head(&mut b);
        assert_eq!(b, [5; 8]);
        let t = w.target(0x10_3ff0, 16).unwrap();
        assert!(t.store_u64(8, 0x0102_0304_0506_0708));
        assert!(!t.store_u64(4, 1), "not 8-byte aligned");
        assert!(!t.store_u64(16, 1), "past the range");
        assert_eq!(d.read_obj::<u64>(0x10_3ff8).unwrap(), 0x0102_0304_0506_0708);
        assert!(w.target(0x10_3ff0, 17).is_none(), "past the mapping");
        assert!(w.source(0x20_0000, 16).is_some(), "another mapping");
        assert!(w.target(0x20_0000, 16).is_none(), "read-only");
        assert!(w.source(0x30_0000, 1).is_none(), "outside memory");
        assert!(w.target(0x10_0000, 16).is_some(), "and back");
    }

    #[test]
    fn accesses_outside_or_across_the_end_are_errors() {
        let d = space();
        let mut b = [0u8; 8];
        assert!(matches!(
            d.read(0, &mut b),
            Err(DmaError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.read(0x10_3ffc, &mut b),
            Err(DmaError::OutOfRange { .. })
        ));
        assert!(matches!(
            d.write(u64::MAX - 2, &b),
            Err(DmaError::OutOfRange { .. })
        ));
        assert!(DmaSpace::default().read(0, &mut b).is_err());
    }

    #[test]
    fn writable_map_without_fd_explains_shared_memory_once() {
        let mut d = DmaSpace::default();
        let e = d.map(0, 0x1000, 0, DMA_READ | DMA_WRITE, None).unwrap_err();
        assert!(e.to_string().contains("share=on"), "{e}");
        assert!(d.unshared());
        // The next ranges are known but out of reach.
        d.map(0x1000, 0x1000, 0, DMA_READ | DMA_WRITE, None)
            .unwrap();
        let mut b = [0u8; 4];
        assert!(matches!(
            d.read(0x1000, &mut b),
            Err(DmaError::OutOfRange { .. })
        ));
        assert_eq!(d.unmap(0x1000, 0x1000, false).unwrap(), 1);
        d.clear();
        assert!(!d.unshared());
    }

    /// A client whose RAM came with descriptors shares it: writable memory
    /// without one is then another device's BAR (QEMU maps a doorbell page
    /// into the guest), taken as known but out of reach, no error.
    #[test]
    fn writable_map_without_fd_beside_shared_ram_is_a_bar() {
        let mut d = DmaSpace::default();
        let ram = crate::test_utils::memfd(0x10_0000);
        d.map(0, 0x10_0000, 0, DMA_READ | DMA_WRITE, Some(ram))
            .unwrap();
        d.map(0xfebd_f000, 0x1000, 0, DMA_READ | DMA_WRITE, None)
            .unwrap();
        assert!(!d.unshared());
        let mut b = [0u8; 4];
        assert!(d.read(0xfebd_f000, &mut b).is_err());
        assert!(d.read(0x1000, &mut b).is_ok());
        // The other order: the BAR first is refused, the RAM then clears it.
        let mut d = DmaSpace::default();
        assert!(d
            .map(0xfebd_f000, 0x1000, 0, DMA_READ | DMA_WRITE, None)
            .is_err());
        assert!(d.unshared());
        let ram = crate::test_utils::memfd(0x10_0000);
        d.map(0, 0x10_0000, 0, DMA_READ | DMA_WRITE, Some(ram))
            .unwrap();
        assert!(!d.unshared());
    }

    #[test]
    fn read_only_map_without_fd_is_known_but_unreachable() {
        let mut d = DmaSpace::default();
        d.map(0xfffc_0000, 0x4_0000, 0, DMA_READ, None).unwrap();
        let mut b = [0u8; 4];
        assert!(matches!(
            d.read(0xfffc_0000, &mut b),
            Err(DmaError::OutOfRange { .. })
        ));
        let e = d
            .map(0xfffc_0000, 0x1000, 0, DMA_READ, Some(memfd(0x1000)))
            .unwrap_err();
        assert_eq!(e.errno(), libc::EEXIST);
        assert_eq!(d.unmap(0xfffc_0000, 0x4_0000, false).unwrap(), 1);
    }

    #[test]
    fn map_rejects_overlap_unaligned_and_past_end_of_file() {
        let mut d = space();
        let e = d
            .map(0x10_2000, 0x4000, 0, DMA_READ, Some(memfd(0x4000)))
            .unwrap_err();
        assert_eq!(e.errno(), libc::EEXIST);
        assert!(matches!(
            d.map(0x20_0001, 0x1000, 0, DMA_READ, Some(memfd(0x1000))),
            Err(DmaError::BadRange { .. })
        ));
        assert!(matches!(
            d.map(0x20_0000, 0x2000, 0, DMA_READ, Some(memfd(0x1000))),
            Err(DmaError::PastEnd { .. })
        ));
        assert!(matches!(
            d.map(u64::MAX - 0xfff, 0x2000, 0, DMA_READ, Some(memfd(0x2000))),
            Err(DmaError::BadRange { .. })
        ));
        assert!(matches!(
            d.map(0x20_0000, 0x1000, 0, 4, Some(memfd(0x1000))),
            Err(DmaError::Flags(4))
        ));
    }

    #[test]
    fn read_only_mapping_refuses_writes() {
        let mut d = DmaSpace::default();
        d.map(0, 0x1000, 0, DMA_READ, Some(memfd(0x1000))).unwrap();
        assert!(matches!(d.write(0, &[1]), Err(DmaError::ReadOnly { .. })));
        let mut b = [0u8; 1];
        d.read(0, &mut b).unwrap();
    }

    #[test]
    fn access_spanning_two_adjacent_mappings_works() {
        let mut d = space();
        map_adjacent(&mut d);
        d.write(0x10_3ffe, &[1, 2, 3, 4]).unwrap();
        let mut b = [0u8; 4];
        d.read(0x10_3ffe, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3, 4]);
    }

    #[test]
    fn unmap_removes_whole_mappings_and_refuses_splits() {
        let mut d = space();
        assert!(matches!(
            d.unmap(0x10_0000, 0x1000, false),
            Err(DmaError::PartialUnmap { .. })
        ));
        assert_eq!(d.unmap(0x10_0000, 0x4000, false).unwrap(), 1);
        assert!(d.is_empty());
        let mut b = [0u8; 1];
        assert!(d.read(0x10_0000, &mut b).is_err());
        let mut d = space();
        assert_eq!(d.unmap(0, 0, true).unwrap(), 1);
    }

    #[test]
    fn memory_the_client_truncates_is_refused_and_reported_once() {
        use crate::test_utils::unsealed_memfd;
        let mut d = DmaSpace::default();
        let file = unsealed_memfd(0x4000);
        let fd = file.try_clone().unwrap();
        d.map(0x10_0000, 0x4000, 0, DMA_READ | DMA_WRITE, Some(file))
            .unwrap();
        map_adjacent(&mut d);
        d.write(0x10_3000, b"frame").unwrap();
        fd.set_len(0).unwrap();
        // The access that meets the truncation completes on zero pages.
        let mut b = [0xffu8; 5];
        d.read(0x10_3000, &mut b).unwrap();
        assert_eq!(b, [0; 5]);
        // From then on the mapping is refused, every way in.
        assert!(matches!(
            d.read(0x10_0000, &mut b),
            Err(DmaError::Lost { .. })
        ));
        assert!(matches!(d.write(0x10_0000, &b), Err(DmaError::Lost { .. })));
        assert!(matches!(d.source(0x10_0000, 4), Err(DmaError::Lost { .. })));
        assert!(matches!(d.target(0x10_0000, 4), Err(DmaError::Lost { .. })));
        assert!(!d.contains(0x10_0000, 4, false));
        assert!(DmaWindow::new(&d).source(0x10_0000, 4).is_none());
        assert_eq!(d.take_lost(), vec![(0x10_0000, 0x4000)]);
        assert!(d.take_lost().is_empty());
        // The client's other memory is untouched.
        d.write(0x10_4000, b"ok").unwrap();
        let mut ok = [0u8; 2];
        d.read(0x10_4000, &mut ok).unwrap();
        assert_eq!(&ok, b"ok");
        // Unmapped, the range can be mapped again.
        d.unmap(0x10_0000, 0x4000, false).unwrap();
        d.map(
            0x10_0000,
            0x1000,
            0,
            DMA_READ | DMA_WRITE,
            Some(memfd(0x1000)),
        )
        .unwrap();
        d.write(0x10_0000, b"again").unwrap();
    }
}
