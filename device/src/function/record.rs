//! A function's part of the state record (docs/restart.md): what its
//! client and its guest's driver set up, kept so that a new card worker
//! serves the function as the old one left it, without the guest or QEMU
//! noticing.
//!
//! The queues themselves are not here: their contexts live in guest memory
//! (written back after every batch), and a restored function resumes them
//! from there through its VCT entry, as after a migration. Nor are the
//! descriptors: the mappings' files and the eventfds travel through the
//! descriptor store, in the orders [`Function::dma_files`] and
//! [`Function::irq_fds`] give.

use std::os::fd::{AsRawFd, BorrowedFd};

use serde::{Deserialize, Serialize};

use super::*;
use crate::dma::DmaRecord;
use crate::pci::msix::MsixRecord;
use crate::queue::{AddrStatus, QpItr};
use crate::regs::Bar0Record;

/// One queue pair's registers, as the driver set them.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QpRecord {
    /// QP_ITR.
    pub itr: u32,
    pub filter_lo: u32,
    pub filter_hi: u32,
    /// The receive filter the driver last handed over (QP_RX_MODE).
    pub rx_filter: Option<RxFilter>,
    pub addr_status: u32,
    pub staged_mac_lo: Option<u32>,
    /// VLANs the vNIC joined (QP_VLAN), from the switch.
    pub vlans: Vec<u16>,
}

/// One function's state, as a state record keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionRecord {
    pub name: String,
    /// The configuration space, 4096 bytes in hex.
    pub config: String,
    pub msix: MsixRecord,
    /// Which MSI-X vectors have an eventfd; then the error and request
    /// eventfds: the order of [`Function::irq_fds`].
    pub msix_fds: Vec<bool>,
    pub err_fd: bool,
    pub req_fd: bool,
    /// The client's mappings, by address.
    pub dma: Vec<DmaRecord>,
    pub dma_refused_unshared: bool,
    pub bar0: Bar0Record,
    /// DB_PAGE.ENABLE with BAR0's page (`vnicd --doorbell-page`).
    pub bar_page: bool,
    /// The BAT of the committed VCT entry.
    pub vct: Option<u64>,
    /// Management's entry, waiting for guest memory and Bus Master Enable.
    pub pending_vct: Option<u64>,
    pub quiesced: bool,
    pub qps: Vec<QpRecord>,
    /// FN_* counters, in [`FnStat`] order.
    pub counters: Vec<u64>,
    pub stats: FunctionStats,
    /// Faults management armed, and their counts (docs/fault-injection.md).
    #[serde(default)]
    pub faults: Option<(crate::fault::Armed, crate::fault::FaultCounters)>,
}

/// Why a function could not take its record back.
#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("the record is for function {0}")]
    OtherFunction(String),
    #[error("the record's configuration space is not 4096 bytes of hex")]
    Config,
    #[error("the record's MSI-X table has another number of vectors")]
    Msix,
    #[error("fewer eventfds kept than the record names")]
    EventfdMissing,
    #[error("a kept eventfd is not one: {0}")]
    Eventfd(FnError),
    #[error("DMA mapping {address:#x}+{size:#x}: {error}")]
    Dma {
        address: u64,
        size: u64,
        error: DmaError,
    },
}

fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn from_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 || !s.is_ascii() {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

impl Function {
    /// Changes whenever the function's mappings or eventfds do: the
    /// descriptors to keep changed.
    pub fn fd_generation(&self) -> u64 {
        self.fd_generation
    }

    /// Takes over BAR0's doorbell page from the memfd an earlier worker
    /// made (its client maps it); without `--doorbell-page`, ignored.
    pub fn adopt_bar_page(&mut self, file: File) -> std::io::Result<()> {
        if self.doorbell.has_bar_page() {
            self.doorbell.adopt_bar_page(file)?;
        }
        Ok(())
    }

    /// Sets the counters to what the state record's live block kept
    /// (`crate::restart`): FN_* and the per-function statistics.
    pub fn restore_counters(&mut self, counters: FnCounters, stats: FunctionStats) {
        self.counters = counters;
        self.stats = stats;
    }

    /// The files of the client's mappings, in the record's order.
    pub fn dma_files(&self) -> Vec<&File> {
        self.dma.files()
    }

    /// The registered eventfds: MSI-X vectors in order, then the error and
    /// request eventfds, as the record lists them.
    pub fn irq_fds(&self) -> Vec<BorrowedFd<'_>> {
        let msix = self.msix.eventfds().iter().flatten();
        msix.chain(&self.err_fd)
            .chain(&self.req_fd)
            // SAFETY: the EventFd owns the descriptor and outlives the
            // borrow, which is tied to `self`.
            .map(|fd| unsafe { BorrowedFd::borrow_raw(fd.as_raw_fd()) })
            .collect()
    }

    /// The function's state, for the record. `vlans(q)` gives the VLANs
    /// vNIC q joined (the switch keeps them).
    pub fn record(&self, vlans: impl Fn(u16) -> Vec<u16>) -> FunctionRecord {
        let (dma, dma_refused_unshared) = self.dma.save();
        let qps = self
            .qps
            .iter()
            .map(|qp| QpRecord {
                itr: qp.irq.itr().into_bits(),
                filter_lo: qp.filter_lo,
                filter_hi: qp.filter_hi,
                rx_filter: qp.rx_filter.clone(),
                addr_status: qp.addr_status.into_bits(),
                staged_mac_lo: qp.staged_mac_lo,
                vlans: vlans(qp.index),
            })
            .collect();
        FunctionRecord {
            name: self.name.clone(),
            config: to_hex(self.config.bytes()),
            msix: self.msix.save(),
            msix_fds: self.msix.eventfds().iter().map(Option::is_some).collect(),
            err_fd: self.err_fd.is_some(),
            req_fd: self.req_fd.is_some(),
            dma,
            dma_refused_unshared,
            bar0: self.bar0.save(),
            bar_page: self.doorbell.bar_enabled(),
            vct: self.bat.as_ref().map(|b| b.address),
            pending_vct: self.pending_vct,
            quiesced: self.quiesced,
            qps,
            counters: self.counters.0.to_vec(),
            stats: self.stats,
            faults: Some((self.faults.armed(), self.faults.counters())),
        }
    }

    /// Takes `rec` back into a function built afresh with management's
    /// settings applied, its client's files and eventfds in the record's
    /// order: config space, MSI-X, mappings and registers as they were;
    /// then the queues resume from guest memory through the VCT entry,
    /// the vNICs' filters and VLANs go back to the switch (the card
    /// carries out the switch operations this leaves), and every vector of
    /// a running queue pair fires once, so the driver reaps what the
    /// previous worker completed without signalling it.
    pub fn restore(
        &mut self,
        rec: &FunctionRecord,
        dma_files: Vec<File>,
        irq_files: Vec<File>,
    ) -> Result<(), RestoreError> {
        if rec.name != self.name {
            return Err(RestoreError::OtherFunction(rec.name.clone()));
        }
        let config = from_hex(&rec.config).ok_or(RestoreError::Config)?;
        if !self.config.restore(&config) {
            return Err(RestoreError::Config);
        }
        if !self.msix.restore(&rec.msix) {
            return Err(RestoreError::Msix);
        }
        let mut irq = irq_files.into_iter();
        let mut eventfd = || {
            let file = irq.next().ok_or(RestoreError::EventfdMissing)?;
            irq::into_eventfd(file).map_err(RestoreError::Eventfd)
        };
        for (v, &has) in rec.msix_fds.iter().enumerate() {
            if has {
                let fd = eventfd()?;
                self.msix
                    .set_eventfd(v as u32, fd)
                    .map_err(|_| RestoreError::Msix)?;
            }
        }
        if rec.err_fd {
            self.err_fd = eventfd()?;
        }
        if rec.req_fd {
            self.req_fd = eventfd()?;
        }
        self.dma
            .restore(&rec.dma, rec.dma_refused_unshared, dma_files)
            .map_err(|(m, error)| RestoreError::Dma {
                address: m.address,
                size: m.size,
                error,
            })?;
        self.bar0.restore(&rec.bar0);
        for (c, &v) in self.counters.0.iter_mut().zip(&rec.counters) {
            *c = v;
        }
        self.stats = rec.stats;
        if let Some((armed, counters)) = rec.faults {
            self.faults.restore(armed, counters);
        }
        self.fd_generation += 1;
        if rec.bar_page {
            let qps = &self.qps;
            self.doorbell.set_bar_enabled(true, |q| Self::tails(qps, q));
        }
        if let Some(address) = rec.vct {
            self.commit_vct(address);
            // The commit's outcome is what VCT_STATUS said before.
            self.bar0.set_vct_status(rec.bar0.vct_status);
        }
        self.pending_vct = rec.pending_vct;
        for (q, r) in rec.qps.iter().enumerate().take(self.qps.len()) {
            let qp = &mut self.qps[q];
            qp.irq.set_itr(QpItr::from_bits(r.itr));
            qp.filter_lo = r.filter_lo;
            qp.filter_hi = r.filter_hi;
            qp.addr_status = AddrStatus::from_bits(r.addr_status);
            qp.staged_mac_lo = r.staged_mac_lo;
            if let Some(filter) = &r.rx_filter {
                qp.rx_filter = Some(filter.clone());
                self.switch_ops.push(SwitchOp::Filter { qp: q as u16 });
            }
            for &vlan in &r.vlans {
                self.switch_ops.push(SwitchOp::Join { qp: q as u16, vlan });
            }
        }
        // Doorbells the driver stored into its page while no worker
        // watched it: the slots hold them; take them now rather than at
        // the driver's next register kick.
        if self.page_mode() && self.page_reachable() {
            for q in 0..self.qps.len() {
                self.take_page(q);
            }
        }
        if rec.quiesced {
            self.quiesce();
        }
        self.deliver_pending();
        let running: Vec<u32> = (self.qps.iter())
            .filter(|qp| qp.tx.running() || qp.rx.running())
            .map(|qp| MISC_VECTORS + u32::from(qp.index))
            .collect();
        for vector in running {
            self.raise_irq(vector);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trips_and_refuses_junk() {
        let bytes = [0u8, 1, 0xab, 0xff];
        assert_eq!(from_hex(&to_hex(&bytes)).as_deref(), Some(&bytes[..]));
        assert_eq!(from_hex("abc"), None);
        assert_eq!(from_hex("zz"), None);
        assert_eq!(from_hex("é0"), None);
    }
}
