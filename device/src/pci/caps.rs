//! The card's PCI capabilities, built into a [`ConfigSpace`] with their write
//! masks. Layout (fixed, so docs/registers.md and tests can name offsets):
//!
//! ```text
//! 0x40  Power Management     -> 0x50
//! 0x50  MSI-X                -> 0x60
//! 0x60  PCI Express v2 endpoint (FLR capable) -> end
//! 0x100 SR-IOV (PF only)     -> ARI
//! ARI                        -> DSN
//! DSN                        -> end
//! ```

use super::config::{hdr, Bar, ConfigSpace, EXT_CAP_START};

pub const PM_OFFSET: usize = 0x40;
pub const MSIX_OFFSET: usize = 0x50;
pub const PCIE_OFFSET: usize = 0x60;

const CAP_ID_PM: u8 = 0x01;
const CAP_ID_MSIX: u8 = 0x11;
const CAP_ID_EXP: u8 = 0x10;
pub const EXT_CAP_ID_SRIOV: u16 = 0x0010;
pub const EXT_CAP_ID_ARI: u16 = 0x000e;
pub const EXT_CAP_ID_DSN: u16 = 0x0003;

/// Power Management register offsets, relative to the capability.
pub mod pm {
    pub const PMC: usize = 2;
    pub const PMCSR: usize = 4;
    /// Version 3 of the PM spec.
    pub const PMC_VERSION3: u16 = 3;
    /// PowerState field (D0..D3hot).
    pub const PMCSR_STATE: u16 = 0x3;
    /// PowerState values of D1 and D2, which PMC does not list.
    pub const D1: u16 = 1;
    pub const D2: u16 = 2;
    /// Going D3hot -> D0 does not reset the function's state.
    pub const PMCSR_NO_SOFT_RESET: u16 = 1 << 3;
}

/// MSI-X register offsets, relative to the capability.
pub mod msix {
    pub const CONTROL: usize = 2;
    pub const TABLE: usize = 4;
    pub const PBA: usize = 8;
    pub const CONTROL_ENABLE: u16 = 1 << 15;
    pub const CONTROL_FUNCTION_MASK: u16 = 1 << 14;
}

/// PCI Express capability offsets, relative to the capability.
pub mod exp {
    pub const FLAGS: usize = 2;
    pub const DEVCAP: usize = 4;
    pub const DEVCTL: usize = 8;
    pub const DEVSTA: usize = 10;
    pub const LNKCAP: usize = 12;
    pub const LNKCTL: usize = 16;
    pub const LNKSTA: usize = 18;
    pub const DEVCAP2: usize = 0x24;
    pub const LNKCAP2: usize = 0x2c;
    pub const LNKSTA2: usize = 0x32;
    /// Version 2, device/port type 0 = PCI Express endpoint.
    pub const FLAGS_V2_ENDPOINT: u16 = 0x0002;
    /// Max payload 256 B, role-based error reporting, FLR capable.
    pub const DEVCAP_VALUE: u32 = 0b001 | (1 << 15) | (1 << 28);
    /// Correctable/non-fatal/fatal/unsupported-request reporting enables,
    /// relaxed ordering, max payload (bits 7:5), extended tag, no snoop,
    /// max read request (bits 14:12).
    pub const DEVCTL_WRITABLE: u16 = 0x000f | 0x0010 | 0x00e0 | 0x0100 | 0x0800 | 0x7000;
    /// Initiate Function Level Reset: write-only, reads as zero.
    pub const DEVCTL_FLR: u16 = 1 << 15;
    /// Error detected bits of Device Status, RW1C.
    pub const DEVSTA_RW1C: u16 = 0x000f;
    /// 2.5 GT/s, x1 link.
    pub const LNKCAP_VALUE: u32 = 0x1 | (1 << 4);
    pub const LNKSTA_VALUE: u16 = 0x1 | (1 << 4);
    /// ASPM control, RCB, common clock, extended sync.
    pub const LNKCTL_WRITABLE: u16 = 0x0003 | 0x0040 | 0x0080;
    /// Completion timeout ranges not supported; ARI forwarding n/a for EPs.
    pub const DEVCAP2_VALUE: u32 = 0;
    pub const LNKCAP2_VALUE: u32 = 1 << 1;
}

/// SR-IOV capability offsets, relative to the capability.
pub mod sriov {
    pub const CAP: usize = 0x04;
    pub const CTRL: usize = 0x08;
    pub const INITIAL_VFS: usize = 0x0c;
    pub const TOTAL_VFS: usize = 0x0e;
    pub const NUM_VFS: usize = 0x10;
    pub const FUNC_LINK: usize = 0x12;
    pub const VF_OFFSET: usize = 0x14;
    pub const VF_STRIDE: usize = 0x16;
    pub const VF_DID: usize = 0x1a;
    pub const SUP_PGSIZE: usize = 0x1c;
    pub const SYS_PGSIZE: usize = 0x20;
    pub const VF_BAR0: usize = 0x24;
    pub const SIZE: usize = 0x40;
    /// VF Enable and VF Memory Space Enable.
    pub const CTRL_VFE: u16 = 1 << 0;
    pub const CTRL_VF_MSE: u16 = 1 << 3;
    pub const CTRL_ARI: u16 = 1 << 4;
    /// 4K, 8K, 64K, 256K, 1M and 4M pages.
    pub const SUPPORTED_PAGE_SIZES: u32 = 0x553;
}

/// Everything needed to lay out one function's capabilities.
#[derive(Clone, Debug)]
pub struct CapLayout {
    /// MSI-X vectors (table size).
    pub msix_vectors: u16,
    /// BAR index and offset of the MSI-X table and PBA.
    pub msix_bar: u8,
    pub msix_table_offset: u32,
    pub msix_pba_offset: u32,
    /// SR-IOV on the PF only.
    pub sriov: Option<SriovLayout>,
    /// ARI next function number (0 = last function).
    pub ari_next_function: u8,
    /// Device serial number.
    pub serial: u64,
}

#[derive(Clone, Debug)]
pub struct SriovLayout {
    pub total_vfs: u16,
    pub num_vfs: u16,
    pub vf_device_id: u16,
    pub first_vf_offset: u16,
    pub vf_stride: u16,
    /// The BARs every VF has, as the VF BAR registers announce them.
    pub vf_bars: Vec<Bar>,
}

/// Writes the capability list into `c`.
pub fn build(c: &mut ConfigSpace, layout: &CapLayout) {
    c.set_u8(hdr::CAP_PTR, PM_OFFSET as u8);
    build_pm(c, MSIX_OFFSET as u8);
    build_msix(c, layout, PCIE_OFFSET as u8);
    build_pcie(c, 0);
    build_ext(c, layout);
}

fn build_pm(c: &mut ConfigSpace, next: u8) {
    let o = PM_OFFSET;
    c.set_u8(o, CAP_ID_PM);
    c.set_u8(o + 1, next);
    c.set_u16(o + pm::PMC, pm::PMC_VERSION3);
    c.set_u16(o + pm::PMCSR, pm::PMCSR_NO_SOFT_RESET);
    c.set_wmask_u16(o + pm::PMCSR, pm::PMCSR_STATE);
}

fn build_msix(c: &mut ConfigSpace, l: &CapLayout, next: u8) {
    let o = MSIX_OFFSET;
    c.set_u8(o, CAP_ID_MSIX);
    c.set_u8(o + 1, next);
    c.set_u16(o + msix::CONTROL, l.msix_vectors - 1);
    c.set_wmask_u16(
        o + msix::CONTROL,
        msix::CONTROL_ENABLE | msix::CONTROL_FUNCTION_MASK,
    );
    c.set_u32(o + msix::TABLE, l.msix_table_offset | u32::from(l.msix_bar));
    c.set_u32(o + msix::PBA, l.msix_pba_offset | u32::from(l.msix_bar));
}

fn build_pcie(c: &mut ConfigSpace, next: u8) {
    let o = PCIE_OFFSET;
    c.set_u8(o, CAP_ID_EXP);
    c.set_u8(o + 1, next);
    c.set_u16(o + exp::FLAGS, exp::FLAGS_V2_ENDPOINT);
    c.set_u32(o + exp::DEVCAP, exp::DEVCAP_VALUE);
    // Reset: max payload 128 B, max read request 512 B, relaxed ordering, no snoop.
    c.set_u16(o + exp::DEVCTL, 0x2810);
    c.set_wmask_u16(o + exp::DEVCTL, exp::DEVCTL_WRITABLE);
    c.set_w1c_u16(o + exp::DEVSTA, exp::DEVSTA_RW1C);
    c.set_u32(o + exp::LNKCAP, exp::LNKCAP_VALUE);
    c.set_wmask_u16(o + exp::LNKCTL, exp::LNKCTL_WRITABLE);
    c.set_u16(o + exp::LNKSTA, exp::LNKSTA_VALUE);
    c.set_u32(o + exp::DEVCAP2, exp::DEVCAP2_VALUE);
    c.set_u32(o + exp::LNKCAP2, exp::LNKCAP2_VALUE);
    c.set_u16(o + exp::LNKSTA2, 0);
}

/// PCI PM 1.2: software that writes PowerState with a state the function
/// does not support (D1 and D2: PMC lists neither) completes the write,
/// but the value is discarded and the state stays as it was. `data` is a
/// config write at `offset` about to be applied to `c`; if it covers
/// PowerState with D1 or D2, those bits are replaced by the current state.
pub fn discard_unsupported_power_state(c: &ConfigSpace, offset: u64, data: &mut [u8]) {
    let at = PM_OFFSET + pm::PMCSR;
    let byte = (at as u64)
        .checked_sub(offset)
        .and_then(|i| usize::try_from(i).ok())
        .and_then(|i| data.get_mut(i));
    let Some(b) = byte else {
        return;
    };
    let mask = pm::PMCSR_STATE as u8;
    let state = u16::from(*b & mask);
    if state == pm::D1 || state == pm::D2 {
        *b = (*b & !mask) | (c.u8(at) & mask);
    }
}

/// Extended capability header: id, version 1, next offset.
fn ext_header(c: &mut ConfigSpace, off: usize, id: u16, next: usize) {
    c.set_u32(off, u32::from(id) | (1 << 16) | ((next as u32) << 20));
}

fn build_ext(c: &mut ConfigSpace, l: &CapLayout) {
    let mut off = EXT_CAP_START;
    if let Some(s) = &l.sriov {
        let ari = off + sriov::SIZE;
        ext_header(c, off, EXT_CAP_ID_SRIOV, ari);
        build_sriov(c, off, s);
        off = ari;
    }
    let ari_size = 8;
    let dsn = off + ari_size;
    ext_header(c, off, EXT_CAP_ID_ARI, dsn);
    // ARI capability register: next function number in bits 15:8.
    c.set_u16(off + 4, u16::from(l.ari_next_function) << 8);
    ext_header(c, dsn, EXT_CAP_ID_DSN, 0);
    c.set_u32(dsn + 4, l.serial as u32);
    c.set_u32(dsn + 8, (l.serial >> 32) as u32);
}

/// Shows `n` enabled VFs in the SR-IOV capability (NumVFs; VF Enable and
/// VF MSE set while n > 0). No-op without the capability (a VF).
pub fn set_num_vfs(c: &mut ConfigSpace, n: u16) {
    let Some((_, o)) = walk_ext(c.bytes())
        .into_iter()
        .find(|(id, _)| *id == EXT_CAP_ID_SRIOV)
    else {
        return;
    };
    c.set_u16(o + sriov::NUM_VFS, n);
    let ctrl = c.u16(o + sriov::CTRL) & !(sriov::CTRL_VFE | sriov::CTRL_VF_MSE);
    let on = if n > 0 {
        sriov::CTRL_VFE | sriov::CTRL_VF_MSE
    } else {
        0
    };
    c.set_u16(o + sriov::CTRL, ctrl | on);
}

/// SR-IOV capability. vnicd starts as if the host had enabled SR-IOV, so VF
/// Enable, VF MSE and NumVFs read back set. Enabling and disabling VFs is a
/// management operation of the card (control socket), not something a client
/// of the PF function does through config space: the fields are read-only
/// here (see docs/registers.md).
fn build_sriov(c: &mut ConfigSpace, o: usize, s: &SriovLayout) {
    c.set_u32(o + sriov::CAP, 0);
    c.set_u16(
        o + sriov::CTRL,
        sriov::CTRL_VFE | sriov::CTRL_VF_MSE | sriov::CTRL_ARI,
    );
    c.set_u16(o + sriov::INITIAL_VFS, s.total_vfs);
    c.set_u16(o + sriov::TOTAL_VFS, s.total_vfs);
    c.set_u16(o + sriov::NUM_VFS, s.num_vfs);
    c.set_u8(o + sriov::FUNC_LINK, 0);
    c.set_u16(o + sriov::VF_OFFSET, s.first_vf_offset);
    c.set_u16(o + sriov::VF_STRIDE, s.vf_stride);
    c.set_u16(o + sriov::VF_DID, s.vf_device_id);
    c.set_u32(o + sriov::SUP_PGSIZE, sriov::SUPPORTED_PAGE_SIZES);
    c.set_u32(o + sriov::SYS_PGSIZE, 1);
    // System Page Size selects one supported size; software may write it.
    c.set_wmask_u32(o + sriov::SYS_PGSIZE, sriov::SUPPORTED_PAGE_SIZES);
    for &bar in &s.vf_bars {
        c.add_bar_at(o + sriov::VF_BAR0, bar);
    }
}

/// Walks the standard capability list; returns (id, offset) pairs. Bounded by
/// the number of possible positions so a corrupted list cannot loop.
#[cfg(test)]
pub fn walk_std(bytes: &[u8]) -> Vec<(u8, usize)> {
    let mut out = Vec::new();
    let mut ptr = usize::from(bytes[hdr::CAP_PTR]) & !3;
    for _ in 0..48 {
        if ptr < 0x40 || ptr + 2 > 0x100 {
            break;
        }
        out.push((bytes[ptr], ptr));
        ptr = usize::from(bytes[ptr + 1]) & !3;
    }
    out
}

/// Walks the extended capability list; returns (id, offset) pairs.
pub fn walk_ext(bytes: &[u8]) -> Vec<(u16, usize)> {
    let mut out = Vec::new();
    let mut ptr = EXT_CAP_START;
    for _ in 0..(4096 - 256) / 4 {
        if !(EXT_CAP_START..=4092).contains(&ptr) {
            break;
        }
        let h = u32::from_le_bytes([bytes[ptr], bytes[ptr + 1], bytes[ptr + 2], bytes[ptr + 3]]);
        if h == 0 {
            break;
        }
        out.push(((h & 0xffff) as u16, ptr));
        ptr = (h >> 20) as usize & !3;
        if ptr == 0 {
            break;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pci::config::BarKind;

    fn layout(pf: bool) -> CapLayout {
        CapLayout {
            msix_vectors: 9,
            msix_bar: 2,
            msix_table_offset: 0,
            msix_pba_offset: 0x2000,
            sriov: pf.then(|| SriovLayout {
                total_vfs: 4,
                num_vfs: 4,
                vf_device_id: 0x1001,
                first_vf_offset: 1,
                vf_stride: 1,
                vf_bars: vec![
                    Bar {
                        index: 0,
                        size: 64 * 1024,
                        kind: BarKind::Mem64,
                        prefetchable: false,
                    },
                    Bar {
                        index: 2,
                        size: 16 * 1024,
                        kind: BarKind::Mem64,
                        prefetchable: false,
                    },
                ],
            }),
            ari_next_function: 1,
            serial: 0x0102_0304_0506_0708,
        }
    }

    #[test]
    fn pf_lists_pm_msix_pcie_then_sriov_ari_dsn() {
        let mut c = ConfigSpace::default();
        build(&mut c, &layout(true));
        let std: Vec<u8> = walk_std(c.bytes()).iter().map(|x| x.0).collect();
        assert_eq!(std, vec![CAP_ID_PM, CAP_ID_MSIX, CAP_ID_EXP]);
        let ext: Vec<u16> = walk_ext(c.bytes()).iter().map(|x| x.0).collect();
        assert_eq!(ext, vec![EXT_CAP_ID_SRIOV, EXT_CAP_ID_ARI, EXT_CAP_ID_DSN]);
    }

    #[test]
    fn vf_has_no_sriov_capability() {
        let mut c = ConfigSpace::default();
        build(&mut c, &layout(false));
        let ext: Vec<u16> = walk_ext(c.bytes()).iter().map(|x| x.0).collect();
        assert_eq!(ext, vec![EXT_CAP_ID_ARI, EXT_CAP_ID_DSN]);
    }

    #[test]
    fn msix_table_size_is_read_only_and_enable_is_writable() {
        let mut c = ConfigSpace::default();
        build(&mut c, &layout(false));
        let ctl = (MSIX_OFFSET + msix::CONTROL) as u64;
        c.write(ctl, &0xffffu16.to_le_bytes()).unwrap();
        assert_eq!(c.u16(ctl as usize), 0xc000 | 8);
    }

    #[test]
    fn sriov_total_vfs_and_vf_device_id_are_read_only() {
        let mut c = ConfigSpace::default();
        build(&mut c, &layout(true));
        let o = EXT_CAP_START;
        c.write((o + sriov::TOTAL_VFS) as u64, &[0xff, 0xff])
            .unwrap();
        c.write((o + sriov::VF_DID) as u64, &[0, 0]).unwrap();
        c.write((o + sriov::NUM_VFS) as u64, &[0, 0]).unwrap();
        assert_eq!(c.u16(o + sriov::TOTAL_VFS), 4);
        assert_eq!(c.u16(o + sriov::VF_DID), 0x1001);
        assert_eq!(c.u16(o + sriov::NUM_VFS), 4);
    }

    #[test]
    fn sriov_vf_bar_probe_reports_vf_bar_size() {
        let mut c = ConfigSpace::default();
        build(&mut c, &layout(true));
        let bar0 = EXT_CAP_START + sriov::VF_BAR0;
        c.write(bar0 as u64, &[0xff; 8]).unwrap();
        assert_eq!(c.u32(bar0), 0xffff_0004);
        assert_eq!(c.u32(bar0 + 4), 0xffff_ffff);
    }

    #[test]
    fn pcie_flr_capable_and_devsta_is_rw1c() {
        let mut c = ConfigSpace::default();
        build(&mut c, &layout(false));
        assert_ne!(c.u32(PCIE_OFFSET + exp::DEVCAP) & (1 << 28), 0);
        c.set_u16(PCIE_OFFSET + exp::DEVSTA, 0x5);
        c.write((PCIE_OFFSET + exp::DEVSTA) as u64, &[0x1, 0])
            .unwrap();
        assert_eq!(c.u16(PCIE_OFFSET + exp::DEVSTA), 0x4);
    }

    fn write_power_state(c: &mut ConfigSpace, state: u16) {
        let at = (PM_OFFSET + pm::PMCSR) as u64;
        let mut data = state.to_le_bytes();
        discard_unsupported_power_state(c, at, &mut data);
        c.write(at, &data).unwrap();
    }

    #[test]
    fn power_state_takes_d0_and_d3hot_and_discards_d1_and_d2() {
        let mut c = ConfigSpace::default();
        build(&mut c, &layout(false));
        let pmc = c.u16(PM_OFFSET + pm::PMC);
        assert_eq!(pmc & (0b11 << 9), 0, "PMC: no D1, no D2 support");
        let state = |c: &ConfigSpace| c.u16(PM_OFFSET + pm::PMCSR) & pm::PMCSR_STATE;
        for d in [pm::D1, pm::D2] {
            write_power_state(&mut c, d);
            assert_eq!(state(&c), 0, "D{d} discarded, still D0");
        }
        write_power_state(&mut c, 3);
        assert_eq!(state(&c), 3, "D3hot");
        write_power_state(&mut c, pm::D2);
        assert_eq!(state(&c), 3, "D2 discarded, still D3hot");
        write_power_state(&mut c, 0);
        assert_eq!(state(&c), 0, "back to D0");
        assert_ne!(
            c.u16(PM_OFFSET + pm::PMCSR) & pm::PMCSR_NO_SOFT_RESET,
            0,
            "No_Soft_Reset untouched"
        );
    }

    #[test]
    fn a_write_not_covering_power_state_is_left_alone() {
        let mut c = ConfigSpace::default();
        build(&mut c, &layout(false));
        let mut data = [0x02, 0x00];
        discard_unsupported_power_state(&c, (PM_OFFSET + pm::PMCSR + 1) as u64, &mut data);
        assert_eq!(data, [0x02, 0x00]);
        let mut dword = [0xff; 4];
        discard_unsupported_power_state(&c, PM_OFFSET as u64, &mut dword);
        assert_eq!(dword, [0xff; 4], "a write ending before PMCSR");
    }

    #[test]
    fn walkers_stop_on_loops() {
        let mut b = [0u8; 4096];
        b[hdr::CAP_PTR] = 0x40;
        b[0x41] = 0x40;
        assert_eq!(walk_std(&b).len(), 48);
        b[0x100..0x104].copy_from_slice(&(0x10u32 | (0x100 << 20)).to_le_bytes());
        assert!(walk_ext(&b).len() <= (4096 - 256) / 4);
    }
}
