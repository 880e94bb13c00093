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

/// The doorbell page in guest memory over the socket (interface 1.4): the
/// fake guest names a page of its memory in its BAT header and commits the
/// VCT entry again; after one kick, doorbells stored into that memory
/// alone reach the card, which polls by its own timer. BAR0 stays
/// unmappable: QEMU would keep posting the kick.
#[test]
fn a_page_in_guest_memory_carries_doorbells_without_messages() {
    use std::time::Duration;
    use vnic_tests::guest::{frame, mac, qp, Guest, RING, VCT_HI, VCT_LO};
    use vnic_tests::wait_for;

    // An idle window of 1 s, so the card is still polling when the test
    // looks.
    let mut vnicd = Vnicd::start(&["--vfs", "2", "--doorbell-idle-us", "1000000"]);
    let mut a = Guest::attach(&vnicd, "vf0", 1);
    let b = Guest::attach(&vnicd, "vf1", 1);
    let page = a.drv.alloc(PAGE_SIZE, PAGE_SIZE);
    a.drv.write_u64(a.tables.bat + 8, page);
    let bat = a.tables.bat;
    a.posted(VCT_LO, bat as u32);
    a.posted(VCT_HI, (bat >> 32) as u32);
    assert_eq!(a.read(DB_PAGE), 0b101, "ENABLE | GUEST");
    let (info, _) = region_info(&mut a.client, BAR0, 32);
    assert_eq!(le_u32(&info, 4) & MMAP, 0, "BAR0 not mappable");

    let (tx_tail, watch) = (page, page + 0xc);
    let queue = |a: &mut Guest, n: u16| {
        let frames: Vec<Vec<u8>> = (0..n).map(|_| frame(mac(2, 0), mac(1, 0), 80)).collect();
        let tx = a.rings[0].0;
        a.tx_tails[0] = a.drv.queue_tx(tx, RING, a.tx_tails[0], &frames);
        a.drv.write_u32(tx_tail, a.tx_tails[0].into());
    };
    // The card is not polling yet: the driver rings the register (a kick,
    // with a value the card ignores).
    assert_eq!(a.drv.read_u32(watch), 0);
    queue(&mut a, 1);
    a.posted(qp(0, 0x10), 0xdead);
    wait_for("the kicked frame", Duration::from_secs(5), || {
        b.received(0).len() == 1
    });
    assert_eq!(a.drv.read_u32(watch), 1, "WATCH in guest memory");
    // Now stores alone: no message.
    for sent in [4, 9] {
        queue(&mut a, if sent == 4 { 3 } else { 5 });
        wait_for("stored doorbells taken", Duration::from_secs(5), || {
            b.received(0).len() == sent
        });
    }
    // Quiet for the idle window: the card stops polling and says so.
    wait_for("WATCH cleared when idle", Duration::from_secs(10), || {
        a.drv.read_u32(watch) == 0
    });
    assert_eq!(a.read(0x100), 9, "function TX_PACKETS");
    assert!(vnicd.alive());
}

/// A BAT naming a doorbell page outside the guest's memory: the page is
/// refused (DB_PAGE.REFUSED, a log line), the BAT is not, and register
/// doorbells work as before.
#[test]
fn a_doorbell_page_outside_guest_memory_is_refused_not_fatal() {
    use std::time::Duration;
    use vnic_tests::guest::{frame, mac, Guest, VCT_HI, VCT_LO, VCT_STATUS};
    use vnic_tests::wait_for;

    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut a = Guest::attach(&vnicd, "vf0", 1);
    let b = Guest::attach(&vnicd, "vf1", 1);
    let (base, size, _) = a.drv.memory();
    a.drv.write_u64(a.tables.bat + 8, base + size);
    let bat = a.tables.bat;
    a.posted(VCT_LO, bat as u32);
    a.posted(VCT_HI, (bat >> 32) as u32);
    assert_eq!(a.read(VCT_STATUS), 0);
    assert_eq!(a.read(DB_PAGE), 0b1000, "REFUSED");
    a.send(&[frame(mac(2, 0), mac(1, 0), 60)]);
    wait_for("a register doorbell", Duration::from_secs(5), || {
        b.received(0).len() == 1
    });
    assert!(vnicd.alive());
    assert!(
        vnicd
            .log_text()
            .contains("not guest memory the card may write"),
        "{}",
        vnicd.log_text()
    );
}
