//! MSI-X: the device-side vector table, the Pending Bit Array, and delivery
//! through the eventfds a client registers with SET_IRQS.
//!
//! With vfio-user a vector is delivered by signalling its eventfd; the
//! table's address and data words are never used. QEMU's vfio-user client
//! emulates the MSI-X table itself (the guest's table writes never reach the
//! card), tells the card about the guest's masks with SET_IRQS MASK/UNMASK
//! and forwards only PBA reads. So a vector is masked if any of these says
//! so: the MSI-X Function Mask bit in config space, a SET_IRQS ACTION_MASK
//! from the client, or the table entry's Mask bit *once the client has
//! written that entry's Vector Control word* since the last reset. The Mask
//! bits reset to 1, as the PCI spec says; a client that never programs the
//! card's table (QEMU) is not held back by them, one that does masks and
//! unmasks through them. A masked vector that fires sets its pending bit;
//! unmasking delivers it (docs/registers.md, "MSI-X").

use log::warn;

use crate::regs::dword_or_qword;
use vmm_sys_util::eventfd::EventFd;

/// Bytes per table entry: address low, address high, data, vector control.
pub const ENTRY_SIZE: u64 = 16;
const CTRL_OFFSET: u64 = 12;
const CTRL_MASKED: u32 = 1;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Entry {
    addr_lo: u32,
    addr_hi: u32,
    data: u32,
    ctrl: u32,
}

impl Entry {
    /// An entry after reset: zero, with the vector masked (PCI spec).
    const RESET: Entry = Entry {
        addr_lo: 0,
        addr_hi: 0,
        data: 0,
        ctrl: CTRL_MASKED,
    };
}

/// What happened to one interrupt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The eventfd was signalled.
    Sent,
    /// The vector is masked; its pending bit is set.
    Pending,
    /// MSI-X is disabled or nobody registered an eventfd: the interrupt is
    /// lost, as on hardware whose driver has not set MSI-X up.
    Dropped,
}

/// Why an MSI-X BAR access was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MsixError {
    #[error("MSI-X access of {len} bytes at {offset:#x} is not an aligned dword or qword")]
    Unaligned { offset: u64, len: usize },
    #[error("vector {0} beyond table")]
    NoSuchVector(u32),
}

/// The MSI-X state a state record keeps (docs/restart.md): the table
/// (four dwords per entry), the masks and the pending bits. Which vectors
/// have an eventfd is the function's record's business.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct MsixRecord {
    pub table: Vec<[u32; 4]>,
    pub programmed: Vec<bool>,
    pub pending: Vec<bool>,
    pub client_masked: Vec<bool>,
}

/// One function's MSI-X state.
pub struct Msix {
    entries: Vec<Entry>,
    /// The client has written the entry's Vector Control word since the
    /// last reset: its Mask bit gates delivery.
    programmed: Vec<bool>,
    pending: Vec<bool>,
    client_masked: Vec<bool>,
    eventfds: Vec<Option<EventFd>>,
}

impl Msix {
    pub fn new(vectors: u16) -> Self {
        let n = usize::from(vectors);
        Msix {
            entries: vec![Entry::RESET; n],
            programmed: vec![false; n],
            pending: vec![false; n],
            client_masked: vec![false; n],
            eventfds: (0..n).map(|_| None).collect(),
        }
    }

    pub fn vectors(&self) -> u32 {
        self.entries.len() as u32
    }

    /// Bytes of the PBA (whole qwords).
    pub fn pba_size(&self) -> u64 {
        (self.entries.len() as u64).div_ceil(64) * 8
    }

    /// Returns to reset state. Registered eventfds stay: they belong to the
    /// client's connection, not to the function's register state (a vfio
    /// device reset does not tear down the host's interrupt plumbing).
    pub fn reset(&mut self) {
        self.entries.iter_mut().for_each(|e| *e = Entry::RESET);
        self.programmed.iter_mut().for_each(|p| *p = false);
        self.pending.iter_mut().for_each(|p| *p = false);
        self.client_masked.iter_mut().for_each(|m| *m = false);
    }

    /// The state a record keeps.
    pub fn save(&self) -> MsixRecord {
        MsixRecord {
            table: self
                .entries
                .iter()
                .map(|e| [e.addr_lo, e.addr_hi, e.data, e.ctrl])
                .collect(),
            programmed: self.programmed.clone(),
            pending: self.pending.clone(),
            client_masked: self.client_masked.clone(),
        }
    }

    /// Takes a record's state back; false, and nothing changed, if it was
    /// made for another number of vectors.
    pub fn restore(&mut self, rec: &MsixRecord) -> bool {
        let n = self.entries.len();
        if [
            rec.table.len(),
            rec.programmed.len(),
            rec.pending.len(),
            rec.client_masked.len(),
        ] != [n; 4]
        {
            return false;
        }
        for (e, &[addr_lo, addr_hi, data, ctrl]) in self.entries.iter_mut().zip(&rec.table) {
            *e = Entry {
                addr_lo,
                addr_hi,
                data,
                ctrl,
            };
        }
        self.programmed.clone_from(&rec.programmed);
        self.pending.clone_from(&rec.pending);
        self.client_masked.clone_from(&rec.client_masked);
        true
    }

    /// The registered eventfds, by vector.
    pub fn eventfds(&self) -> &[Option<EventFd>] {
        &self.eventfds
    }

    /// Drops every eventfd (client gone or SET_IRQS disable).
    pub fn clear_eventfds(&mut self) {
        self.eventfds.iter_mut().for_each(|e| *e = None);
    }

    pub fn set_eventfd(&mut self, vector: u32, fd: Option<EventFd>) -> Result<(), MsixError> {
        let slot = self
            .eventfds
            .get_mut(vector as usize)
            .ok_or(MsixError::NoSuchVector(vector))?;
        *slot = fd;
        Ok(())
    }

    fn check(offset: u64, len: usize) -> Result<(), MsixError> {
        dword_or_qword(offset, len)
            .then_some(())
            .ok_or(MsixError::Unaligned { offset, len })
    }

    fn entry_dword(&self, offset: u64) -> u32 {
        let Some(e) = self.entries.get((offset / ENTRY_SIZE) as usize) else {
            return u32::MAX;
        };
        match offset % ENTRY_SIZE {
            0 => e.addr_lo,
            4 => e.addr_hi,
            8 => e.data,
            _ => e.ctrl,
        }
    }

    /// Reads the table at `offset` (relative to the table start).
    pub fn table_read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MsixError> {
        Self::check(offset, buf.len())?;
        for (i, chunk) in buf.chunks_mut(4).enumerate() {
            let v = self.entry_dword(offset + 4 * i as u64);
            chunk.copy_from_slice(&v.to_le_bytes());
        }
        Ok(())
    }

    /// Writes the table; returns the vectors that became unmasked so the
    /// caller can deliver their pending interrupts. Writing an entry's
    /// Vector Control word makes its Mask bit count for delivery.
    pub fn table_write(&mut self, offset: u64, data: &[u8]) -> Result<Vec<u32>, MsixError> {
        Self::check(offset, data.len())?;
        let mut unmasked = Vec::new();
        for (i, chunk) in data.chunks(4).enumerate() {
            let off = offset + 4 * i as u64;
            let v = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            let vector = (off / ENTRY_SIZE) as usize;
            let Some(e) = self.entries.get_mut(vector) else {
                return Err(MsixError::NoSuchVector(vector as u32));
            };
            match off % ENTRY_SIZE {
                0 => e.addr_lo = v & !0x3,
                4 => e.addr_hi = v,
                8 => e.data = v,
                CTRL_OFFSET => {
                    let was = self.programmed[vector] && e.ctrl & CTRL_MASKED != 0;
                    e.ctrl = v & CTRL_MASKED;
                    self.programmed[vector] = true;
                    if was && e.ctrl & CTRL_MASKED == 0 {
                        unmasked.push(vector as u32);
                    }
                }
                _ => unreachable!("dword offsets within an entry are 0, 4, 8, 12"),
            }
        }
        Ok(unmasked)
    }

    /// Reads the PBA at `offset` (relative to the PBA start).
    pub fn pba_read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MsixError> {
        Self::check(offset, buf.len())?;
        for (i, byte) in buf.iter_mut().enumerate() {
            let first = (offset as usize + i) * 8;
            *byte = (0..8)
                .filter(|b| self.pending.get(first + b).copied().unwrap_or(false))
                .fold(0u8, |acc, b| acc | (1 << b));
        }
        Ok(())
    }

    #[cfg(test)]
    pub fn is_pending(&self, vector: u32) -> bool {
        self.pending.get(vector as usize).copied().unwrap_or(false)
    }

    fn masked(&self, v: usize, function_masked: bool) -> bool {
        let table_masked = self.programmed[v] && self.entries[v].ctrl & CTRL_MASKED != 0;
        function_masked || table_masked || self.client_masked[v]
    }

    /// Raises `vector`. `enabled` and `function_masked` come from the MSI-X
    /// capability's control word.
    pub fn trigger(
        &mut self,
        vector: u32,
        enabled: bool,
        function_masked: bool,
    ) -> Result<Delivery, MsixError> {
        let v = vector as usize;
        if v >= self.entries.len() {
            return Err(MsixError::NoSuchVector(vector));
        }
        if !enabled {
            return Ok(Delivery::Dropped);
        }
        if self.masked(v, function_masked) {
            self.pending[v] = true;
            return Ok(Delivery::Pending);
        }
        Ok(self.signal(v))
    }

    fn signal(&mut self, v: usize) -> Delivery {
        match &self.eventfds[v] {
            Some(fd) => match fd.write(1) {
                Ok(()) => Delivery::Sent,
                Err(e) => {
                    warn!("MSI-X vector {v}: eventfd write failed: {e}");
                    Delivery::Dropped
                }
            },
            None => Delivery::Dropped,
        }
    }

    /// Client-side mask (SET_IRQS ACTION_MASK/UNMASK) for a range of vectors.
    pub fn set_client_mask(&mut self, start: u32, masks: &[bool]) -> Result<(), MsixError> {
        for (i, &m) in masks.iter().enumerate() {
            let v = start as usize + i;
            let slot = self
                .client_masked
                .get_mut(v)
                .ok_or(MsixError::NoSuchVector(v as u32))?;
            *slot = m;
        }
        Ok(())
    }

    /// Delivers every pending vector that is no longer masked. Called after
    /// anything that can unmask: table writes, MSI-X control writes, client
    /// unmask.
    pub fn deliver_unmasked_pending(&mut self, enabled: bool, function_masked: bool) -> usize {
        if !enabled {
            return 0;
        }
        let mut delivered = 0;
        for v in 0..self.entries.len() {
            if self.pending[v] && !self.masked(v, function_masked) {
                self.pending[v] = false;
                if self.signal(v) == Delivery::Sent {
                    delivered += 1;
                }
            }
        }
        delivered
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vmm_sys_util::eventfd::EFD_NONBLOCK;

    fn with_fd(m: &mut Msix, v: u32) -> EventFd {
        let fd = EventFd::new(EFD_NONBLOCK).unwrap();
        m.set_eventfd(v, Some(fd.try_clone().unwrap())).unwrap();
        fd
    }

    #[test]
    fn unmasked_vector_signals_its_eventfd() {
        let mut m = Msix::new(3);
        let fd = with_fd(&mut m, 1);
        assert_eq!(m.trigger(1, true, false), Ok(Delivery::Sent));
        assert_eq!(fd.read().unwrap(), 1);
    }

    #[test]
    fn masked_vector_pends_and_fires_on_unmask() {
        let mut m = Msix::new(3);
        let fd = with_fd(&mut m, 2);
        m.table_write(2 * ENTRY_SIZE + 12, &1u32.to_le_bytes())
            .unwrap();
        assert_eq!(m.trigger(2, true, false), Ok(Delivery::Pending));
        let mut pba = [0u8; 8];
        m.pba_read(0, &mut pba).unwrap();
        assert_eq!(pba[0], 0b100);
        assert!(fd.read().is_err(), "nothing signalled while masked");
        let unmasked = m
            .table_write(2 * ENTRY_SIZE + 12, &0u32.to_le_bytes())
            .unwrap();
        assert_eq!(unmasked, vec![2]);
        assert_eq!(m.deliver_unmasked_pending(true, false), 1);
        assert_eq!(fd.read().unwrap(), 1);
        assert!(!m.is_pending(2));
    }

    fn ctrl_word(m: &Msix, v: u64) -> u32 {
        let mut b = [0u8; 4];
        m.table_read(v * ENTRY_SIZE + CTRL_OFFSET, &mut b).unwrap();
        u32::from_le_bytes(b)
    }

    #[test]
    fn every_table_entry_reads_masked_after_reset() {
        let mut m = Msix::new(4);
        assert!((0..4).all(|v| ctrl_word(&m, v) == CTRL_MASKED));
        m.table_write(ENTRY_SIZE + CTRL_OFFSET, &0u32.to_le_bytes())
            .unwrap();
        assert_eq!(ctrl_word(&m, 1), 0);
        m.reset();
        assert!((0..4).all(|v| ctrl_word(&m, v) == CTRL_MASKED));
    }

    #[test]
    fn reset_mask_bits_do_not_hold_back_set_irqs_delivery() {
        // QEMU never writes the card's table: its vectors must fire with
        // the table at its reset value.
        let mut m = Msix::new(3);
        let fd = with_fd(&mut m, 2);
        assert_eq!(ctrl_word(&m, 2), CTRL_MASKED);
        assert_eq!(m.trigger(2, true, false), Ok(Delivery::Sent));
        assert_eq!(fd.read().unwrap(), 1);
        let mut pba = [0u8; 8];
        m.pba_read(0, &mut pba).unwrap();
        assert_eq!(pba[0], 0, "nothing pending");
    }

    #[test]
    fn a_written_mask_bit_gates_its_vector_until_reset() {
        let mut m = Msix::new(2);
        let fd = with_fd(&mut m, 1);
        m.table_write(ENTRY_SIZE + CTRL_OFFSET, &1u32.to_le_bytes())
            .unwrap();
        assert_eq!(m.trigger(1, true, false), Ok(Delivery::Pending));
        assert!(fd.read().is_err());
        // Vector 0's entry was not written: its reset Mask bit does not gate.
        let fd0 = with_fd(&mut m, 0);
        assert_eq!(m.trigger(0, true, false), Ok(Delivery::Sent));
        assert_eq!(fd0.read().unwrap(), 1);
        // A reset forgets the client's table programming (eventfds stay).
        m.reset();
        assert_eq!(m.trigger(1, true, false), Ok(Delivery::Sent));
        assert_eq!(fd.read().unwrap(), 1);
    }

    #[test]
    fn function_mask_and_client_mask_also_pend() {
        let mut m = Msix::new(2);
        let _fd = with_fd(&mut m, 0);
        assert_eq!(m.trigger(0, true, true), Ok(Delivery::Pending));
        assert_eq!(m.deliver_unmasked_pending(true, true), 0);
        m.set_client_mask(0, &[true]).unwrap();
        assert_eq!(m.deliver_unmasked_pending(true, false), 0);
        m.set_client_mask(0, &[false]).unwrap();
        assert_eq!(m.deliver_unmasked_pending(true, false), 1);
    }

    #[test]
    fn disabled_msix_or_missing_eventfd_drops() {
        let mut m = Msix::new(2);
        assert_eq!(m.trigger(0, false, false), Ok(Delivery::Dropped));
        assert_eq!(m.trigger(0, true, false), Ok(Delivery::Dropped));
        assert_eq!(m.trigger(5, true, false), Err(MsixError::NoSuchVector(5)));
    }

    #[test]
    fn table_accepts_only_aligned_dwords_and_qwords() {
        let mut m = Msix::new(2);
        let mut b = [0u8; 2];
        assert!(m.table_read(0, &mut b).is_err());
        let mut b = [0u8; 4];
        assert!(m.table_read(2, &mut b).is_err());
        assert!(m.table_write(0, &[1, 2, 3]).is_err());
        m.table_write(16, &0xfee0_0000_0000_0000u64.to_le_bytes()[..8])
            .unwrap();
        let mut q = [0u8; 8];
        m.table_read(16, &mut q).unwrap();
        assert_eq!(u64::from_le_bytes(q), 0xfee0_0000_0000_0000);
    }

    #[test]
    fn reads_past_the_table_are_all_ones_writes_are_errors() {
        let mut m = Msix::new(1);
        let mut b = [0u8; 4];
        m.table_read(64, &mut b).unwrap();
        assert_eq!(u32::from_le_bytes(b), u32::MAX);
        assert!(m.table_write(64, &[0; 4]).is_err());
    }
}
