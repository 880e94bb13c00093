//! Configuration space and the MSI-X BAR as the client accesses them: the
//! writes that matter to the function (command register, MSI-X control,
//! FLR, power state) and the MSI-X table and PBA (docs/registers.md).

use super::*;

impl Function {
    pub(super) fn msix_bar_read(&self, offset: u64, buf: &mut [u8]) -> Result<(), MsixError> {
        if offset < MSIX_PBA_OFFSET {
            self.msix.table_read(offset - MSIX_TABLE_OFFSET, buf)
        } else {
            let rel = offset - MSIX_PBA_OFFSET;
            if rel + buf.len() as u64 > self.msix.pba_size() {
                return Err(MsixError::Unaligned {
                    offset,
                    len: buf.len(),
                });
            }
            self.msix.pba_read(rel, buf)
        }
    }

    pub(super) fn msix_bar_write(&mut self, offset: u64, data: &[u8]) -> Result<(), MsixError> {
        if offset >= MSIX_PBA_OFFSET {
            // The PBA is read-only.
            return Err(MsixError::Unaligned {
                offset,
                len: data.len(),
            });
        }
        let unmasked = self.msix.table_write(offset - MSIX_TABLE_OFFSET, data)?;
        if !unmasked.is_empty() {
            self.deliver_pending();
        }
        Ok(())
    }

    pub(super) fn msix_control(&self) -> (bool, bool) {
        let ctl = self.config.u16(caps::MSIX_OFFSET + msix_cap::CONTROL);
        (
            ctl & msix_cap::CONTROL_ENABLE != 0,
            ctl & msix_cap::CONTROL_FUNCTION_MASK != 0,
        )
    }

    pub(super) fn config_write(&mut self, offset: u64, data: &[u8]) -> Result<(), FnError> {
        let mut data = data.to_vec();
        caps::discard_unsupported_power_state(&self.config, offset, &mut data);
        self.config.write(offset, &data)?;
        // Initiate FLR is bit 15 of Device Control: write-only, never stored.
        let flr_byte = (caps::PCIE_OFFSET + exp::DEVCTL + 1) as u64;
        let flr = flr_byte
            .checked_sub(offset)
            .and_then(|i| data.get(i as usize))
            .is_some_and(|b| b & (exp::DEVCTL_FLR >> 8) as u8 != 0);
        if flr {
            self.log(Cause::Reset, format_args!("function level reset"));
            self.reset();
            return Ok(());
        }
        let msix_ctl = (caps::MSIX_OFFSET + msix_cap::CONTROL) as u64;
        if offset < msix_ctl + 2 && msix_ctl < offset + data.len() as u64 {
            self.deliver_pending();
        }
        self.try_pending_vct();
        Ok(())
    }
}

/// Builds a function's configuration space.
pub(super) fn build_config(spec: &FunctionSpec, vectors: u16) -> ConfigSpace {
    let mut c = ConfigSpace::default();
    let device = match spec.kind {
        FunctionKind::Pf => PF_DEVICE_ID,
        FunctionKind::Vf(_) => VF_DEVICE_ID,
    };
    c.set_u16(hdr::VENDOR_ID, VENDOR_ID);
    c.set_u16(hdr::DEVICE_ID, device);
    c.set_u16(hdr::COMMAND, 0);
    c.set_wmask_u16(hdr::COMMAND, command::WRITABLE);
    c.set_u16(hdr::STATUS, status::CAP_LIST);
    c.set_w1c_u16(hdr::STATUS, status::RW1C);
    c.set_u8(hdr::REVISION, REVISION);
    c.set_ro(hdr::CLASS_PROG, &CLASS_ETHERNET.to_le_bytes()[..3]);
    c.set_rw(hdr::CACHE_LINE, &[0], &[0xff]);
    c.set_u8(hdr::HEADER_TYPE, 0);
    for bar in BARS {
        c.add_bar(bar);
    }
    c.set_u16(hdr::SUBSYS_VENDOR, VENDOR_ID);
    c.set_u16(hdr::SUBSYS_ID, SUBSYS_ID);
    c.set_rw(hdr::INT_LINE, &[0], &[0xff]);
    c.set_u8(hdr::INT_PIN, 0);
    caps::build(
        &mut c,
        &CapLayout {
            msix_vectors: vectors,
            msix_bar: REGION_MSIX as u8,
            msix_table_offset: MSIX_TABLE_OFFSET as u32,
            msix_pba_offset: MSIX_PBA_OFFSET as u32,
            sriov: spec.sriov.clone(),
            ari_next_function: spec.ari_next,
            serial: spec.serial,
        },
    );
    c
}
