//! The state record's file (docs/restart.md, "The state record"): a memfd
//! the descriptor store keeps, so it outlives every worker.
//!
//! ```text
//! 0      header: magic "VNICREC\0", layout (u32), active slot (u32)
//! 4096   slot 0: length (u64), sequence (u64), then the record (JSON)
//! 4096 + SLOT_SIZE   slot 1: the same
//! 4096 + 2 SLOT_SIZE the live block: counters, rewritten in place after
//!        every turn with traffic (crate::restart, `Live`)
//! ```
//!
//! A write fills the slot that is not active, then makes it active with
//! one 4-byte store: a worker killed in the middle leaves the previous
//! record whole. The layout number changes whenever a record's meaning
//! does; a worker refuses a layout it does not read, with a message, and
//! exits before it touches anything (a planned upgrade then leaves the
//! old worker serving).

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use thiserror::Error;
use vm_memory::{FileOffset, MmapRegion, VolatileMemory, VolatileSlice};

/// Maps the live block of `file`, shared.
fn map_live(file: &File) -> io::Result<MmapRegion> {
    MmapRegion::build(
        Some(FileOffset::new(file.try_clone()?, LIVE_OFFSET)),
        LIVE_SIZE as usize,
        libc::PROT_READ | libc::PROT_WRITE,
        libc::MAP_SHARED,
    )
    .map_err(|e| io::Error::other(e.to_string()))
}

/// "VNICREC\0".
const MAGIC: [u8; 8] = *b"VNICREC\0";
/// The layout this vnicd writes and reads.
pub const LAYOUT: u32 = 1;
const HEADER_SIZE: u64 = 4096;
/// Bytes per slot: far more than any card's record (a few hundred KiB
/// with 128 VFs); the memfd is sparse, so only what is written is memory.
pub const SLOT_SIZE: u64 = 64 << 20;
const SLOT_HEADER: u64 = 16;
/// Where the live block starts, and its size (the counters of 256
/// functions and the card fit many times).
const LIVE_OFFSET: u64 = HEADER_SIZE + 2 * SLOT_SIZE;
pub const LIVE_SIZE: u64 = 1 << 20;

#[derive(Debug, Error)]
pub enum RecordError {
    #[error("state record: {0}")]
    Io(#[from] io::Error),
    #[error("state record: not a vnicd state record (bad magic)")]
    Magic,
    #[error(
        "state record layout {found} is not one this vnicd reads (it reads layout {LAYOUT}); \
         start the vnicd that wrote it, or stop every guest and start afresh"
    )]
    Layout { found: u32 },
    #[error("state record: slot {slot} is damaged ({why})")]
    Slot { slot: u32, why: &'static str },
    #[error("state record of {0} bytes is larger than a slot")]
    TooLarge(usize),
}

/// The record's file.
pub struct RecordFile {
    file: File,
    /// The live block, mapped shared: written with plain stores.
    live: MmapRegion,
    /// The slot holding the current record.
    active: u32,
    sequence: u64,
}

impl RecordFile {
    /// A new, empty record in a fresh memfd.
    pub fn create() -> Result<Self, RecordError> {
        let name = c"vnicd-state-record";
        // SAFETY: memfd_create with a valid NUL-terminated name; the
        // result is checked before use.
        let fd = unsafe { libc::memfd_create(name.as_ptr(), libc::MFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error().into());
        }
        // SAFETY: the descriptor was just created and nothing else owns it.
        let file = unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) };
        file.set_len(LIVE_OFFSET + LIVE_SIZE)?;
        let mut header = [0u8; 16];
        header[..8].copy_from_slice(&MAGIC);
        header[8..12].copy_from_slice(&LAYOUT.to_le_bytes());
        file.write_all_at(&header, 0)?;
        Ok(RecordFile {
            live: map_live(&file)?,
            file,
            active: 0,
            sequence: 0,
        })
    }

    /// The record an earlier worker left in `file`; refused unless its
    /// magic and layout are this vnicd's.
    pub fn open(file: File) -> Result<Self, RecordError> {
        let mut header = [0u8; 16];
        file.read_exact_at(&mut header, 0)?;
        if header[..8] != MAGIC {
            return Err(RecordError::Magic);
        }
        let layout = u32::from_le_bytes(header[8..12].try_into().expect("4 bytes"));
        if layout != LAYOUT {
            return Err(RecordError::Layout { found: layout });
        }
        let active = u32::from_le_bytes(header[12..16].try_into().expect("4 bytes"));
        if active > 1 {
            return Err(RecordError::Slot {
                slot: active,
                why: "no such slot",
            });
        }
        if file.metadata()?.len() < LIVE_OFFSET + LIVE_SIZE {
            return Err(RecordError::Slot {
                slot: 2,
                why: "the file ends before the live block",
            });
        }
        let mut rec = RecordFile {
            live: map_live(&file)?,
            file,
            active,
            sequence: 0,
        };
        rec.sequence = rec.slot_header(active)?.1;
        Ok(rec)
    }

    pub fn file(&self) -> &File {
        &self.file
    }

    /// The live block ([`LIVE_SIZE`] bytes).
    pub fn live(&self) -> VolatileSlice<'_> {
        self.live.as_volatile_slice()
    }

    fn slot_offset(slot: u32) -> u64 {
        HEADER_SIZE + u64::from(slot) * SLOT_SIZE
    }

    fn slot_header(&self, slot: u32) -> Result<(u64, u64), RecordError> {
        let mut h = [0u8; SLOT_HEADER as usize];
        self.file.read_exact_at(&mut h, Self::slot_offset(slot))?;
        let len = u64::from_le_bytes(h[..8].try_into().expect("8 bytes"));
        let seq = u64::from_le_bytes(h[8..].try_into().expect("8 bytes"));
        if len > SLOT_SIZE - SLOT_HEADER {
            return Err(RecordError::Slot {
                slot,
                why: "length past the slot",
            });
        }
        Ok((len, seq))
    }

    /// The current record; empty if none was written yet.
    pub fn read(&self) -> Result<Vec<u8>, RecordError> {
        let (len, _) = self.slot_header(self.active)?;
        let mut buf = vec![0; len as usize];
        self.file
            .read_exact_at(&mut buf, Self::slot_offset(self.active) + SLOT_HEADER)?;
        Ok(buf)
    }

    /// How many records were written into this file.
    pub fn sequence(&self) -> u64 {
        self.sequence
    }

    /// Makes `record` the current one (see the module documentation).
    pub fn write(&mut self, record: &[u8]) -> Result<(), RecordError> {
        if record.len() as u64 > SLOT_SIZE - SLOT_HEADER {
            return Err(RecordError::TooLarge(record.len()));
        }
        let slot = 1 - self.active;
        let offset = Self::slot_offset(slot);
        let sequence = self.sequence + 1;
        self.file.write_all_at(record, offset + SLOT_HEADER)?;
        let mut h = [0u8; SLOT_HEADER as usize];
        h[..8].copy_from_slice(&(record.len() as u64).to_le_bytes());
        h[8..].copy_from_slice(&sequence.to_le_bytes());
        self.file.write_all_at(&h, offset)?;
        self.file.write_all_at(&slot.to_le_bytes(), 12)?;
        self.active = slot;
        self.sequence = sequence;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reopen(rec: &RecordFile) -> Result<RecordFile, RecordError> {
        RecordFile::open(rec.file().try_clone().unwrap())
    }

    #[test]
    fn a_written_record_reads_back_from_another_handle() {
        let mut rec = RecordFile::create().unwrap();
        assert_eq!(reopen(&rec).unwrap().read().unwrap(), b"");
        rec.write(b"first").unwrap();
        rec.write(b"second, longer").unwrap();
        let back = reopen(&rec).unwrap();
        assert_eq!(back.read().unwrap(), b"second, longer");
        assert_eq!(back.sequence(), 2);
    }

    #[test]
    fn a_write_cut_short_before_the_switch_leaves_the_previous_record() {
        let mut rec = RecordFile::create().unwrap();
        rec.write(b"whole").unwrap();
        // A worker killed after filling the other slot, before switching.
        let other = RecordFile::slot_offset(1 - rec.active);
        rec.file
            .write_all_at(b"half-writ", other + SLOT_HEADER)
            .unwrap();
        rec.file.write_all_at(&9u64.to_le_bytes(), other).unwrap();
        assert_eq!(reopen(&rec).unwrap().read().unwrap(), b"whole");
    }

    #[test]
    fn another_layout_or_no_record_is_refused_with_the_reason() {
        let rec = RecordFile::create().unwrap();
        rec.file
            .write_all_at(&(LAYOUT + 1).to_le_bytes(), 8)
            .unwrap();
        let e = reopen(&rec).err().unwrap();
        assert!(matches!(e, RecordError::Layout { found } if found == LAYOUT + 1));
        assert!(e.to_string().contains("is not one this vnicd reads"), "{e}");
        rec.file.write_all_at(b"NOTAREC\0", 0).unwrap();
        assert!(matches!(reopen(&rec), Err(RecordError::Magic)));
        let empty = File::open("/dev/null").unwrap();
        assert!(RecordFile::open(empty).is_err());
        let short = RecordFile::create().unwrap();
        short.file.set_len(HEADER_SIZE + 2 * SLOT_SIZE).unwrap();
        assert!(matches!(
            reopen(&short),
            Err(RecordError::Slot { slot: 2, .. })
        ));
    }

    #[test]
    fn a_record_larger_than_a_slot_is_refused() {
        let mut rec = RecordFile::create().unwrap();
        let huge = vec![b'x'; (SLOT_SIZE - SLOT_HEADER + 1) as usize];
        assert!(matches!(rec.write(&huge), Err(RecordError::TooLarge(_))));
    }
}
