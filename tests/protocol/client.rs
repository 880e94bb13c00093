//! vnicd driven by an independent vfio-user implementation: the rust-vmm
//! `vfio-user` crate's `Client`.

use std::os::fd::AsRawFd;
use std::time::Duration;

use vfio_bindings::bindings::vfio::{
    VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_DATA_EVENTFD, VFIO_PCI_MSIX_IRQ_INDEX,
};
use vfio_user::Client;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vnic_tests::guest::{BAR0, CONFIG, MSIX_BAR};
use vnic_tests::{le_u32, memfd, region_info_body, wait_for, Vnicd};

fn cfg_u32(c: &mut Client, off: u64) -> u32 {
    let mut b = [0u8; 4];
    c.region_read(CONFIG, off, &mut b).unwrap();
    u32::from_le_bytes(b)
}

fn cfg_u16(c: &mut Client, off: u64) -> u16 {
    let mut b = [0u8; 2];
    c.region_read(CONFIG, off, &mut b).unwrap();
    u16::from_le_bytes(b)
}

fn bar0_u32(c: &mut Client, off: u64) -> u32 {
    let mut b = [0u8; 4];
    c.region_read(BAR0, off, &mut b).unwrap();
    u32::from_le_bytes(b)
}

/// (capability id, offset) of the standard list, read over the protocol.
fn std_caps(c: &mut Client) -> Vec<(u8, u64)> {
    let mut out = Vec::new();
    let mut ptr = u64::from(cfg_u16(c, 0x34) & 0xfc);
    while ptr != 0 && out.len() < 48 {
        let h = cfg_u16(c, ptr);
        out.push(((h & 0xff) as u8, ptr));
        ptr = u64::from(h >> 8) & 0xfc;
    }
    out
}

fn ext_caps(c: &mut Client) -> Vec<(u16, u64)> {
    let mut out = Vec::new();
    let mut ptr = 0x100;
    while ptr != 0 && out.len() < 64 {
        let h = cfg_u32(c, ptr);
        if h == 0 {
            break;
        }
        out.push(((h & 0xffff) as u16, ptr));
        ptr = u64::from(h >> 20) & 0xffc;
    }
    out
}

#[test]
fn client_sees_regions_with_bar_and_config_sizes() {
    let vnicd = Vnicd::start(&["--vfs", "2"]);
    let c = Client::new(&vnicd.socket("vf0")).unwrap();
    assert_eq!(c.region(0).unwrap().size, 64 * 1024);
    assert_eq!(c.region(2).unwrap().size, 16 * 1024);
    assert_eq!(c.region(7).unwrap().size, 4096);
    for absent in [1, 3, 4, 5, 6, 8] {
        assert_eq!(c.region(absent).unwrap().size, 0, "region {absent}");
    }
}

#[test]
fn pf_and_vf_config_space_identify_the_card() {
    let vnicd = Vnicd::start(&["--vfs", "3"]);
    let mut pf = Client::new(&vnicd.socket("pf")).unwrap();
    let mut vf = Client::new(&vnicd.socket("vf2")).unwrap();
    assert_eq!(cfg_u32(&mut pf, 0), 0x1000_1ffe);
    assert_eq!(cfg_u32(&mut vf, 0), 0x1001_1ffe);
    // Revision 1, class 02 (network) 00 (Ethernet) 00.
    assert_eq!(cfg_u32(&mut pf, 8), 0x0200_0001);
    assert_eq!(cfg_u32(&mut pf, 0x2c), 0x0001_1ffe);
    // Capabilities list bit in status.
    assert_ne!(cfg_u16(&mut vf, 6) & 0x10, 0);
}

#[test]
fn capabilities_pm_msix_pcie_and_extended_sriov_ari_dsn() {
    let vnicd = Vnicd::start(&["--vfs", "5", "--queue-pairs", "4"]);
    let mut pf = Client::new(&vnicd.socket("pf")).unwrap();
    let ids: Vec<u8> = std_caps(&mut pf).iter().map(|c| c.0).collect();
    assert_eq!(ids, [0x01, 0x11, 0x10]);
    let (_, msix) = std_caps(&mut pf)[1];
    // Table size N-1 = X queue pairs + 1 misc vector - 1.
    assert_eq!(cfg_u16(&mut pf, msix + 2) & 0x7ff, 4);
    assert_eq!(cfg_u32(&mut pf, msix + 4), 2, "table in BAR2 at 0");
    assert_eq!(cfg_u32(&mut pf, msix + 8), 0x2002, "PBA in BAR2 at 0x2000");
    let (_, exp) = std_caps(&mut pf)[2];
    assert_ne!(cfg_u32(&mut pf, exp + 4) & (1 << 28), 0, "FLR capable");

    let ext = ext_caps(&mut pf);
    let ids: Vec<u16> = ext.iter().map(|c| c.0).collect();
    assert_eq!(ids, [0x10, 0x0e, 0x03]);
    let sriov = ext[0].1;
    assert_eq!(cfg_u16(&mut pf, sriov + 0x0e), 5, "TotalVFs");
    assert_eq!(cfg_u16(&mut pf, sriov + 0x10), 5, "NumVFs");
    assert_eq!(cfg_u16(&mut pf, sriov + 0x14), 1, "First VF Offset");
    assert_eq!(cfg_u16(&mut pf, sriov + 0x16), 1, "VF Stride");
    assert_eq!(cfg_u16(&mut pf, sriov + 0x1a), 0x1001, "VF Device ID");
    assert_eq!(cfg_u16(&mut pf, sriov + 0x08) & 1, 1, "VF Enable");
    // VF BAR0 probes as a 64 KiB 64-bit BAR.
    pf.region_write(CONFIG, sriov + 0x24, &[0xff; 8]).unwrap();
    assert_eq!(cfg_u32(&mut pf, sriov + 0x24), 0xffff_0004);

    let mut vf = Client::new(&vnicd.socket("vf4")).unwrap();
    let ids: Vec<u16> = ext_caps(&mut vf).iter().map(|c| c.0).collect();
    assert_eq!(ids, [0x0e, 0x03], "a VF has ARI and DSN but no SR-IOV");
}

#[test]
fn bar_size_probe_and_read_only_fields() {
    let vnicd = Vnicd::start(&["--vfs", "1"]);
    let mut c = Client::new(&vnicd.socket("vf0")).unwrap();
    c.region_write(CONFIG, 0x10, &[0xff; 4]).unwrap();
    c.region_write(CONFIG, 0x14, &[0xff; 4]).unwrap();
    assert_eq!(cfg_u32(&mut c, 0x10), 0xffff_0004);
    assert_eq!(cfg_u32(&mut c, 0x14), 0xffff_ffff);
    c.region_write(CONFIG, 0x18, &[0xff; 4]).unwrap();
    assert_eq!(cfg_u32(&mut c, 0x18), 0xffff_c004, "16 KiB MSI-X BAR");
    // Vendor/device and class are read-only.
    c.region_write(CONFIG, 0, &[0; 4]).unwrap();
    c.region_write(CONFIG, 8, &[0; 4]).unwrap();
    assert_eq!(cfg_u32(&mut c, 0), 0x1001_1ffe);
    assert_eq!(cfg_u32(&mut c, 8), 0x0200_0001);
    // Memory space and bus master are writable; I/O space is not.
    c.region_write(CONFIG, 4, &[0x07, 0]).unwrap();
    assert_eq!(cfg_u16(&mut c, 4), 0x06);
}

#[test]
fn bar0_registers_identify_function_and_scratch_works() {
    let vnicd = Vnicd::start(&[
        "--vfs",
        "2",
        "--queue-pairs",
        "6",
        "--vnics-per-vf",
        "3",
        "--link-speed",
        "25000",
    ]);
    let mut c = Client::new(&vnicd.socket("vf1")).unwrap();
    assert_eq!(bar0_u32(&mut c, 0x00), 0x564e_4943);
    assert_eq!(bar0_u32(&mut c, 0x04), 0x0001_0008, "interface 1.8");
    assert_eq!(bar0_u32(&mut c, 0x38), 25_000, "LINK_SPEED: --link-speed");
    assert_eq!(
        bar0_u32(&mut c, 0x58),
        0x1f,
        "FEATURES: every offload and HEAD_WB"
    );
    assert_eq!(bar0_u32(&mut c, 0x08), 0x8000_0001, "VF 1");
    assert_eq!(bar0_u32(&mut c, 0x0c), 6);
    assert_eq!(bar0_u32(&mut c, 0x10), 3);
    assert_eq!(bar0_u32(&mut c, 0x20), 0x006e_7602);
    assert_eq!(bar0_u32(&mut c, 0x24), 0x0000_0002, "function number 2");
    assert_eq!(bar0_u32(&mut c, 0x30), 7, "vectors");
    c.region_write(BAR0, 0x1c, &0x1234_5678u32.to_le_bytes())
        .unwrap();
    assert_eq!(bar0_u32(&mut c, 0x1c), 0x1234_5678);
    let mut pf = Client::new(&vnicd.socket("pf")).unwrap();
    assert_eq!(bar0_u32(&mut pf, 0x08), 0, "PF");
    assert_eq!(bar0_u32(&mut pf, 0x1c), 0, "scratch is per function");
}

#[test]
fn irq_info_reports_msix_vectors_and_no_intx() {
    let vnicd = Vnicd::start(&[]);
    let mut c = Client::new(&vnicd.socket("vf0")).unwrap();
    assert_eq!(c.get_irq_info(VFIO_PCI_MSIX_IRQ_INDEX).unwrap().count, 9);
    assert_eq!(c.get_irq_info(0).unwrap().count, 0, "no INTx");
    assert_eq!(c.get_irq_info(1).unwrap().count, 0, "no MSI");
    assert_eq!(c.get_irq_info(3).unwrap().count, 1, "ERR");
    assert_eq!(c.get_irq_info(4).unwrap().count, 1, "REQ");
}

fn enable_msix(c: &mut Client) {
    // MSI-X capability at 0x50, control word at +2: set Enable.
    c.region_write(CONFIG, 0x52, &0x8000u16.to_le_bytes())
        .unwrap();
}

#[test]
fn set_irqs_eventfd_receives_the_test_interrupt() {
    let vnicd = Vnicd::start(&[]);
    let mut c = Client::new(&vnicd.socket("vf0")).unwrap();
    enable_msix(&mut c);
    let efds: Vec<EventFd> = (0..3)
        .map(|_| EventFd::new(EFD_NONBLOCK).unwrap())
        .collect();
    let raw: Vec<i32> = efds.iter().map(|e| e.as_raw_fd()).collect();
    let flags = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD;
    c.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, flags, 0, 3, &raw)
        .unwrap();
    // Like QEMU, this client never writes the card's MSI-X table: every
    // entry is at its reset value, Mask = 1, which must not hold it back.
    for v in 0..9u64 {
        let mut ctrl = [0u8; 4];
        c.region_read(MSIX_BAR, 16 * v + 12, &mut ctrl).unwrap();
        assert_eq!(u32::from_le_bytes(ctrl), 1, "vector {v} masked at reset");
    }
    c.region_write(BAR0, 0x28, &2u32.to_le_bytes()).unwrap();
    wait_for("vector 2", Duration::from_secs(5), || {
        efds[2].read().is_ok()
    });
    assert!(efds[0].read().is_err(), "only vector 2 fired");
    assert_eq!(bar0_u32(&mut c, 0x2c), 1, "IRQ_TEST_COUNT");
}

#[test]
fn masked_vector_sets_pba_bit_and_fires_on_unmask() {
    let vnicd = Vnicd::start(&[]);
    let mut c = Client::new(&vnicd.socket("vf0")).unwrap();
    enable_msix(&mut c);
    let efd = EventFd::new(EFD_NONBLOCK).unwrap();
    let flags = VFIO_IRQ_SET_ACTION_TRIGGER | VFIO_IRQ_SET_DATA_EVENTFD;
    c.set_irqs(VFIO_PCI_MSIX_IRQ_INDEX, flags, 1, 1, &[efd.as_raw_fd()])
        .unwrap();
    // Vector 1's control word in the table: mask it.
    c.region_write(MSIX_BAR, 16 + 12, &1u32.to_le_bytes())
        .unwrap();
    c.region_write(BAR0, 0x28, &1u32.to_le_bytes()).unwrap();
    let mut pba = [0u8; 8];
    c.region_read(MSIX_BAR, 0x2000, &mut pba).unwrap();
    assert_eq!(pba[0], 0b10, "pending bit of vector 1");
    assert!(efd.read().is_err());
    c.region_write(MSIX_BAR, 16 + 12, &0u32.to_le_bytes())
        .unwrap();
    wait_for("delivery on unmask", Duration::from_secs(5), || {
        efd.read().is_ok()
    });
    c.region_read(MSIX_BAR, 0x2000, &mut pba).unwrap();
    assert_eq!(pba[0], 0);
}

#[test]
fn dma_map_and_unmap_with_memfd() {
    let vnicd = Vnicd::start(&[]);
    let mut c = Client::new(&vnicd.socket("vf0")).unwrap();
    let mem = memfd(1 << 20);
    c.dma_map(0, 0x1_0000_0000, 1 << 20, mem.as_raw_fd())
        .unwrap();
    c.dma_unmap(0x1_0000_0000, 1 << 20).unwrap();
    // Mapping the same range again succeeds only if the unmap removed it.
    c.dma_map(0, 0x1_0000_0000, 1 << 20, mem.as_raw_fd())
        .unwrap();
    let log = vnicd.log_text();
    assert_eq!(
        log.matches("DMA map 0x100000000+0x100000").count(),
        2,
        "{log}"
    );
    assert!(!log.contains("refused"), "{log}");
}

/// vf0 and vf1 with their SCRATCH registers set to 7 and 9, for reset
/// tests that check one function is reset and the other is not.
fn two_vfs_with_scratch() -> (Vnicd, Client, Client) {
    let vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut c = Client::new(&vnicd.socket("vf0")).unwrap();
    let mut other = Client::new(&vnicd.socket("vf1")).unwrap();
    c.region_write(BAR0, 0x1c, &7u32.to_le_bytes()).unwrap();
    other.region_write(BAR0, 0x1c, &9u32.to_le_bytes()).unwrap();
    (vnicd, c, other)
}

#[test]
fn device_reset_returns_registers_to_reset_values() {
    let (_vnicd, mut c, mut other) = two_vfs_with_scratch();
    c.region_write(CONFIG, 4, &[0x06, 0]).unwrap();
    c.reset().unwrap();
    assert_eq!(bar0_u32(&mut c, 0x1c), 0);
    assert_eq!(cfg_u16(&mut c, 4), 0);
    assert_eq!(
        bar0_u32(&mut other, 0x1c),
        9,
        "reset of vf0 leaves vf1 alone"
    );
}

#[test]
fn flr_through_pcie_device_control_resets_one_function() {
    let (_vnicd, mut c, mut other) = two_vfs_with_scratch();
    // PCIe capability at 0x60, Device Control at +8, Initiate FLR bit 15.
    c.region_write(CONFIG, 0x68, &0x8000u16.to_le_bytes())
        .unwrap();
    assert_eq!(bar0_u32(&mut c, 0x1c), 0);
    assert_eq!(bar0_u32(&mut other, 0x1c), 9);
}

#[test]
fn pf_flr_leaves_vf_enable_and_the_vfs_clients_alone() {
    let vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut pf = Client::new(&vnicd.socket("pf")).unwrap();
    let mut vf = Client::new(&vnicd.socket("vf1")).unwrap();
    vf.region_write(BAR0, 0x1c, &9u32.to_le_bytes()).unwrap();
    pf.region_write(BAR0, 0x1c, &7u32.to_le_bytes()).unwrap();
    // SR-IOV at 0x100: Control at +8 (VF Enable bit 0), NumVFs at +0x10.
    let sriov = |pf: &mut Client| (cfg_u16(pf, 0x108), cfg_u16(pf, 0x110));
    assert_eq!(sriov(&mut pf), (0x19, 2), "VFE, VF MSE, ARI; 2 VFs");
    pf.region_write(CONFIG, 0x68, &0x8000u16.to_le_bytes())
        .unwrap();
    assert_eq!(bar0_u32(&mut pf, 0x1c), 0, "the PF was reset");
    assert_eq!(sriov(&mut pf), (0x19, 2), "VF Enable and NumVFs stay");
    pf.reset().unwrap();
    assert_eq!(sriov(&mut pf), (0x19, 2), "DEVICE_RESET too");
    assert!(vnicd.socket("vf0").exists() && vnicd.socket("vf1").exists());
    assert_eq!(bar0_u32(&mut vf, 0x1c), 9, "vf1's client and state stay");
}

#[test]
fn clients_of_different_functions_coexist_and_reconnect() {
    let vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut a = Client::new(&vnicd.socket("vf0")).unwrap();
    let mut b = Client::new(&vnicd.socket("vf1")).unwrap();
    a.region_write(BAR0, 0x1c, &1u32.to_le_bytes()).unwrap();
    b.region_write(BAR0, 0x1c, &2u32.to_le_bytes()).unwrap();
    drop(a);
    // The function is reset when its client goes away; a new client attaches.
    let mut a2 = Client::new(&vnicd.socket("vf0")).unwrap();
    assert_eq!(bar0_u32(&mut a2, 0x1c), 0);
    assert_eq!(bar0_u32(&mut b, 0x1c), 2);
}

#[test]
fn sigterm_stops_cleanly_and_removes_sockets() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    assert!(vnicd.ready_line.contains("2 VFs"), "{}", vnicd.ready_line);
    let sock = vnicd.socket("vf1");
    assert!(sock.exists());
    assert_eq!(vnicd.stop(), Some(0));
    assert!(!sock.exists(), "socket removed on exit");
}

#[test]
fn msix_bar_region_info_carries_a_capability_after_argsz_negotiation() {
    let vnicd = Vnicd::start(&[]);
    // The rust-vmm client re-asks with the argsz the first reply names and
    // checks the capability data length against the message size.
    let c = Client::new(&vnicd.socket("vf0")).unwrap();
    assert_eq!(c.region(2).unwrap().size, 16 * 1024);
    drop(c);
    // One client per function: the next may only come once vnicd has seen
    // this one go.
    vnic_tests::wait_for(
        "vnicd saw the first client go",
        std::time::Duration::from_secs(10),
        || vnicd.log_text().contains("vf0: client disconnected"),
    );

    let mut raw = vnic_tests::RawClient::negotiated(&vnicd.socket("vf0"));
    let ask = |argsz: u32| region_info_body(MSIX_BAR, argsz);
    let r = raw.call(vnic_tests::GET_REGION_INFO, 0, &ask(32), &[]);
    assert_eq!(r.body.len(), 32, "no room: no capability data");
    assert_eq!(le_u32(&r.body, 0), 40, "argsz needed");
    assert_eq!(
        le_u32(&r.body, 4) & 8,
        0,
        "CAPS only with the chain, as QEMU requires"
    );
    let r = raw.call(vnic_tests::GET_REGION_INFO, 0, &ask(40), &[]);
    assert_eq!(r.body.len(), 40);
    assert_ne!(le_u32(&r.body, 4) & 8, 0, "CAPS flag");
    assert_eq!(le_u32(&r.body, 12), 32, "cap_offset");
    assert_eq!(
        le_u32(&r.body, 32) & 0xffff,
        3,
        "VFIO_REGION_INFO_CAP_MSIX_MAPPABLE"
    );
    assert_eq!(le_u32(&r.body, 36), 0, "last capability");
    // BAR0 has none.
    let r = raw.call(
        vnic_tests::GET_REGION_INFO,
        0,
        &region_info_body(BAR0, 32),
        &[],
    );
    assert_eq!(le_u32(&r.body, 0), 32);
    assert_eq!(le_u32(&r.body, 4) & 8, 0);
}
