//! The doorbell page over the protocol (docs/protocol.md, docs/registers.md
//! "Doorbell pages"): BAR0 is mappable, with the page as its one sparse
//! area and the memfd in the GET_REGION_INFO reply, only with
//! `--doorbell-page`; a store through the mapping is what the card reads.

use std::os::unix::fs::FileExt;

use vnic_tests::guest::{BAR0, MSIX_BAR};
use vnic_tests::{le_u32, le_u64, region_info_body, RawClient, Vnicd, GET_REGION_INFO};

const MMAP: u32 = 1 << 2;
const CAPS: u32 = 1 << 3;
const SPARSE_MMAP: u32 = 1;
const PAGE_OFFSET: u64 = 0xf000;
const PAGE_SIZE: u64 = 0x1000;
const DB_PAGE: u64 = 0x05c;

/// GET_REGION_INFO with `argsz`: the reply's body and its descriptor.
fn region_info(c: &mut RawClient, index: u32, argsz: u32) -> (Vec<u8>, Option<std::fs::File>) {
    c.send(GET_REGION_INFO, 0, &region_info_body(index, argsz), &[]);
    let (r, fd) = c.recv_with_fd().expect("reply");
    assert!(!r.is_error(), "{r:?}");
    (r.body, fd)
}

#[test]
fn bar0_is_mappable_with_the_page_and_its_fd_only_with_doorbell_page() {
    let vnicd = Vnicd::start(&["--vfs", "1", "--doorbell-page"]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));

    // The first, short ask: the size needed and no descriptor (a client
    // asks again and keeps only the second reply's).
    let (b, fd) = region_info(&mut c, BAR0, 32);
    assert!(fd.is_none(), "no descriptor with an incomplete reply");
    let need = le_u32(&b, 0);
    assert_eq!(need, 32 + 8 + 8 + 16, "one sparse-mmap area");
    assert_ne!(le_u32(&b, 4) & MMAP, 0);

    let (b, fd) = region_info(&mut c, BAR0, need);
    let fd = fd.expect("the memfd with the complete reply");
    let flags = le_u32(&b, 4);
    assert_ne!(flags & MMAP, 0, "MMAP");
    assert_ne!(flags & CAPS, 0, "CAPS");
    assert_eq!(le_u64(&b, 16), 64 * 1024, "size");
    assert_eq!(le_u64(&b, 24), 0, "the file maps from offset 0");
    let cap = le_u32(&b, 12) as usize;
    assert_eq!(le_u32(&b, cap) & 0xffff, SPARSE_MMAP);
    assert_eq!(le_u32(&b, cap + 4), 0, "last capability");
    assert_eq!(le_u32(&b, cap + 8), 1, "nr_areas");
    assert_eq!(le_u64(&b, cap + 16), PAGE_OFFSET);
    assert_eq!(le_u64(&b, cap + 24), PAGE_SIZE);

    // The MSI-X BAR stays unmappable: no descriptor.
    let (b, fd2) = region_info(&mut c, MSIX_BAR, 64);
    assert!(fd2.is_none());
    assert_eq!(le_u32(&b, 4) & MMAP, 0);

    // The card offers the page; a store through the file is what BAR0
    // reads at the page (the same memory QEMU maps for the guest).
    assert_eq!(c.read_u32(BAR0, DB_PAGE), 2, "PRESENT");
    fd.write_all_at(&0x1234u32.to_le_bytes(), PAGE_OFFSET + 0x10)
        .unwrap();
    assert_eq!(c.read_u32(BAR0, PAGE_OFFSET + 0x10), 0x1234);
}

#[test]
fn without_doorbell_page_nothing_is_mappable_and_no_fd_is_sent() {
    let vnicd = Vnicd::start(&["--vfs", "1"]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    for index in 0..9 {
        let (b, fd) = region_info(&mut c, index, 256);
        assert!(fd.is_none(), "region {index}: no descriptor");
        assert_eq!(le_u32(&b, 4) & MMAP, 0, "region {index}: not mappable");
    }
    assert_eq!(c.read_u32(BAR0, DB_PAGE), 0, "no page");
    assert_eq!(c.read_u32(BAR0, PAGE_OFFSET), u32::MAX, "a bad access");
}

#[test]
fn each_function_has_its_own_page() {
    let vnicd = Vnicd::start(&["--vfs", "2", "--doorbell-page"]);
    let mut a = RawClient::negotiated(&vnicd.socket("vf0"));
    let mut b = RawClient::negotiated(&vnicd.socket("vf1"));
    let (_, fa) = region_info(&mut a, BAR0, 256);
    let (_, fb) = region_info(&mut b, BAR0, 256);
    fa.unwrap()
        .write_all_at(&7u32.to_le_bytes(), PAGE_OFFSET)
        .unwrap();
    assert_eq!(a.read_u32(BAR0, PAGE_OFFSET), 7);
    assert_eq!(b.read_u32(BAR0, PAGE_OFFSET), 0, "vf1's page untouched");
    let mut w = [0u8; 4];
    fb.unwrap().read_exact_at(&mut w, PAGE_OFFSET).unwrap();
    assert_eq!(w, [0; 4]);
}
