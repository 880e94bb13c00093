//! A PCIe configuration space as data: 4 KiB of register bytes plus two
//! parallel masks, the bits a write may change and the bits a write of 1
//! clears (RW1C). Every write goes through [`ConfigSpace::write`], so a client
//! can never change a read-only field, whatever capability it lives in.

use thiserror::Error;

/// Size of a PCI Express function's configuration space.
pub const CONFIG_SIZE: usize = 4096;
/// Start of PCIe extended capabilities.
pub const EXT_CAP_START: usize = 0x100;

/// Offsets of the type-0 header fields we use.
pub mod hdr {
    pub const VENDOR_ID: usize = 0x00;
    pub const DEVICE_ID: usize = 0x02;
    pub const COMMAND: usize = 0x04;
    pub const STATUS: usize = 0x06;
    pub const REVISION: usize = 0x08;
    pub const CLASS_PROG: usize = 0x09;
    pub const CACHE_LINE: usize = 0x0c;
    pub const HEADER_TYPE: usize = 0x0e;
    pub const BAR0: usize = 0x10;
    pub const SUBSYS_VENDOR: usize = 0x2c;
    pub const SUBSYS_ID: usize = 0x2e;
    pub const CAP_PTR: usize = 0x34;
    pub const INT_LINE: usize = 0x3c;
    pub const INT_PIN: usize = 0x3d;
}

/// Command register bits.
pub mod command {
    pub const MEMORY: u16 = 1 << 1;
    pub const BUS_MASTER: u16 = 1 << 2;
    pub const PARITY: u16 = 1 << 6;
    pub const SERR: u16 = 1 << 8;
    pub const INTX_DISABLE: u16 = 1 << 10;
    /// Everything a function without I/O BARs lets software set.
    pub const WRITABLE: u16 = MEMORY | BUS_MASTER | PARITY | SERR | INTX_DISABLE;
}

/// Status register bits.
pub mod status {
    pub const CAP_LIST: u16 = 1 << 4;
    /// Master data parity error, signalled/received target and master abort,
    /// signalled system error, detected parity error: all RW1C.
    pub const RW1C: u16 = (1 << 8) | (0x1f << 11);
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("config access of {len} bytes at {offset:#x} outside 4 KiB")]
    OutOfRange { offset: u64, len: usize },
}

/// Kind of a memory BAR, as encoded in its low bits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BarKind {
    Mem32,
    Mem64,
}

/// One memory BAR: its register index (0..=5) and size (a power of two).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Bar {
    pub index: usize,
    pub size: u64,
    pub kind: BarKind,
    pub prefetchable: bool,
}

/// Register bytes, writable mask and RW1C mask.
#[derive(Clone)]
pub struct ConfigSpace {
    data: Box<[u8; CONFIG_SIZE]>,
    wmask: Box<[u8; CONFIG_SIZE]>,
    w1cmask: Box<[u8; CONFIG_SIZE]>,
}

impl Default for ConfigSpace {
    fn default() -> Self {
        ConfigSpace {
            data: Box::new([0; CONFIG_SIZE]),
            wmask: Box::new([0; CONFIG_SIZE]),
            w1cmask: Box::new([0; CONFIG_SIZE]),
        }
    }
}

fn range(offset: u64, len: usize) -> Result<std::ops::Range<usize>, ConfigError> {
    let start = usize::try_from(offset).map_err(|_| ConfigError::OutOfRange { offset, len })?;
    let end = start.checked_add(len).filter(|e| *e <= CONFIG_SIZE);
    end.map(|end| start..end)
        .ok_or(ConfigError::OutOfRange { offset, len })
}

impl ConfigSpace {
    /// Sets a read-only field (used while building the space).
    pub fn set_ro(&mut self, offset: usize, bytes: &[u8]) {
        self.data[offset..offset + bytes.len()].copy_from_slice(bytes);
    }

    /// Sets a field's reset value and the bits software may write.
    pub fn set_rw(&mut self, offset: usize, bytes: &[u8], wmask: &[u8]) {
        self.set_ro(offset, bytes);
        self.wmask[offset..offset + wmask.len()].copy_from_slice(wmask);
    }

    /// Marks bits as write-1-to-clear.
    pub fn set_w1c(&mut self, offset: usize, mask: &[u8]) {
        self.w1cmask[offset..offset + mask.len()].copy_from_slice(mask);
    }

    pub fn set_u8(&mut self, offset: usize, v: u8) {
        self.set_ro(offset, &[v]);
    }
    pub fn set_u16(&mut self, offset: usize, v: u16) {
        self.set_ro(offset, &v.to_le_bytes());
    }
    pub fn set_u32(&mut self, offset: usize, v: u32) {
        self.set_ro(offset, &v.to_le_bytes());
    }
    pub fn set_wmask_u16(&mut self, offset: usize, m: u16) {
        self.wmask[offset..offset + 2].copy_from_slice(&m.to_le_bytes());
    }
    pub fn set_wmask_u32(&mut self, offset: usize, m: u32) {
        self.wmask[offset..offset + 4].copy_from_slice(&m.to_le_bytes());
    }
    pub fn set_w1c_u16(&mut self, offset: usize, m: u16) {
        self.set_w1c(offset, &m.to_le_bytes());
    }

    pub fn u8(&self, offset: usize) -> u8 {
        self.data[offset]
    }
    pub fn u16(&self, offset: usize) -> u16 {
        u16::from_le_bytes([self.data[offset], self.data[offset + 1]])
    }
    pub fn u32(&self, offset: usize) -> u32 {
        let b = &self.data[offset..offset + 4];
        u32::from_le_bytes([b[0], b[1], b[2], b[3]])
    }

    /// Declares a memory BAR: its type bits are read-only and its address bits
    /// below the size are hardwired to zero, which is what makes size probing
    /// (write all-ones, read back) report the size.
    pub fn add_bar(&mut self, bar: Bar) {
        self.add_bar_at(hdr::BAR0, bar);
    }

    /// Same, for a BAR table that starts at `table` (the header's BARs, or
    /// the VF BARs of the SR-IOV capability, which probe the same way).
    pub fn add_bar_at(&mut self, table: usize, bar: Bar) {
        debug_assert!(bar.size.is_power_of_two() && bar.size >= 16);
        let off = table + bar.index * 4;
        let mut low = 0u32;
        if bar.kind == BarKind::Mem64 {
            low |= 0b100;
        }
        if bar.prefetchable {
            low |= 0b1000;
        }
        let addr_mask = !(bar.size - 1);
        self.set_rw(
            off,
            &low.to_le_bytes(),
            &((addr_mask as u32) & !0xf).to_le_bytes(),
        );
        if bar.kind == BarKind::Mem64 {
            self.set_rw(off + 4, &[0; 4], &((addr_mask >> 32) as u32).to_le_bytes());
        }
    }

    /// Reads `buf.len()` bytes at `offset`.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), ConfigError> {
        let r = range(offset, buf.len())?;
        buf.copy_from_slice(&self.data[r]);
        Ok(())
    }

    /// Applies a write through the masks. Returns the old bytes so the caller
    /// can detect transitions that have side effects (FLR, MSI-X enable).
    pub fn write(&mut self, offset: u64, data: &[u8]) -> Result<Vec<u8>, ConfigError> {
        let r = range(offset, data.len())?;
        let old = self.data[r.clone()].to_vec();
        for (i, &v) in r.zip(data) {
            let keep = self.data[i] & !self.wmask[i];
            let mut new = keep | (v & self.wmask[i]);
            new &= !(v & self.w1cmask[i]);
            self.data[i] = new;
        }
        Ok(old)
    }

    /// Software-visible raw bytes (tests, capability walkers, the state
    /// record).
    pub fn bytes(&self) -> &[u8; CONFIG_SIZE] {
        &self.data
    }

    /// Takes the bytes a state record kept (docs/restart.md): every
    /// register as it was, with no write's side effects (the masks are the
    /// card's, built as before). False, and nothing changed, if `bytes` is
    /// not a whole configuration space.
    pub fn restore(&mut self, bytes: &[u8]) -> bool {
        let Ok(data) = <&[u8; CONFIG_SIZE]>::try_from(bytes) else {
            return false;
        };
        *self.data = *data;
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn space_with_bars() -> ConfigSpace {
        let mut c = ConfigSpace::default();
        c.add_bar(Bar {
            index: 0,
            size: 64 * 1024,
            kind: BarKind::Mem64,
            prefetchable: false,
        });
        c.add_bar(Bar {
            index: 2,
            size: 16 * 1024,
            kind: BarKind::Mem32,
            prefetchable: false,
        });
        c
    }

    fn r32(c: &ConfigSpace, off: u64) -> u32 {
        let mut b = [0; 4];
        c.read(off, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    #[test]
    fn mem64_bar_size_probe_reports_size_and_type() {
        let mut c = space_with_bars();
        c.write(0x10, &[0xff; 4]).unwrap();
        c.write(0x14, &[0xff; 4]).unwrap();
        assert_eq!(r32(&c, 0x10), 0xffff_0004);
        assert_eq!(r32(&c, 0x14), 0xffff_ffff);
        let size = !((u64::from(r32(&c, 0x14)) << 32 | u64::from(r32(&c, 0x10))) & !0xf) + 1;
        assert_eq!(size, 64 * 1024);
    }

    #[test]
    fn bar_keeps_assigned_address_aligned_to_its_size() {
        let mut c = space_with_bars();
        c.write(0x18, &0xfebf_1234u32.to_le_bytes()).unwrap();
        assert_eq!(r32(&c, 0x18), 0xfebf_0000);
    }

    #[test]
    fn read_only_bytes_ignore_writes() {
        let mut c = ConfigSpace::default();
        c.set_u16(hdr::VENDOR_ID, 0x1ffe);
        c.write(0, &[0, 0, 0, 0]).unwrap();
        assert_eq!(c.u16(hdr::VENDOR_ID), 0x1ffe);
    }

    #[test]
    fn rw1c_bits_clear_on_one_and_survive_zero() {
        let mut c = ConfigSpace::default();
        c.set_u16(hdr::STATUS, status::CAP_LIST | (1 << 13));
        c.set_w1c_u16(hdr::STATUS, status::RW1C);
        c.write(hdr::STATUS as u64, &0u16.to_le_bytes()).unwrap();
        assert_eq!(c.u16(hdr::STATUS), status::CAP_LIST | (1 << 13));
        c.write(hdr::STATUS as u64, &0xffffu16.to_le_bytes())
            .unwrap();
        assert_eq!(c.u16(hdr::STATUS), status::CAP_LIST);
    }

    #[test]
    fn accesses_past_4k_are_errors_not_panics() {
        let mut c = ConfigSpace::default();
        let mut b = [0; 4];
        assert!(c.read(4094, &mut b).is_err());
        assert!(c.read(u64::MAX, &mut b).is_err());
        assert!(c.write(4096, &[1]).is_err());
        assert!(c.read(4092, &mut b).is_ok());
    }
}
