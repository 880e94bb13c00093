//! The data path driven over the vfio-user protocol, as QEMU drives it: the
//! "guests" are fake drivers whose memory is shared with vnicd through
//! DMA_MAP memfds, registers are written with posted (NO_REPLY)
//! REGION_WRITEs, and interrupts arrive on eventfds registered with SET_IRQS.

use std::os::fd::AsRawFd;
use std::time::Duration;

use vnic::test_utils::FakeDriver;
use vnic_tests::guest::{frame, mac, qp, Guest, BAR0, VCT_HI, VCT_LO, VCT_STATUS};
use vnic_tests::{dma_map_body, wait_for, RawClient, Vnicd, DMA_MAP, NO_REPLY, REGION_WRITE};

#[test]
fn frames_cross_between_two_clients_with_posted_doorbells_and_msix() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut a = Guest::attach(&vnicd, "vf0", 2);
    let mut b = Guest::attach(&vnicd, "vf1", 2);
    let frames: Vec<Vec<u8>> = (0..10)
        .map(|i| frame(mac(2, 1), mac(1, 0), 46 + 140 * i))
        .collect();
    a.send(&frames);
    wait_for(
        "ten frames in VF1's queue pair 1",
        Duration::from_secs(5),
        || b.received(1).len() == 10,
    );
    assert_eq!(b.received(1), frames);
    // Interrupts: VF1 vector 2 (queue pair 1) and VF0 vector 1 (send
    // completions) fired; VF1's queue pair 0 stayed quiet.
    assert!(b.irqs[2].read().is_ok(), "receive interrupt");
    assert!(a.irqs[1].read().is_ok(), "send completion interrupt");
    assert!(b.irqs[1].read().is_err(), "no interrupt for an idle queue");
    // Counters, from BAR0 (queue and function) and from guest memory.
    assert_eq!(b.read(qp(1, 0x50)), 10, "RX_PACKETS");
    assert_eq!(a.read(0x100), 10, "function TX_PACKETS");
    let ctx = a.tables.context(vnic::state::ServiceType::SendQueue, 0);
    wait_for("context written back", Duration::from_secs(5), || {
        a.drv.read_u64(ctx + 24) == 10
    });
    assert!(vnicd.alive());
}

#[test]
fn a_client_vanishing_mid_traffic_leaves_the_others_working() {
    let mut vnicd = Vnicd::start(&["--vfs", "3"]);
    let mut a = Guest::attach(&vnicd, "vf0", 2);
    let b = Guest::attach(&vnicd, "vf1", 2);
    let mut c = Guest::attach(&vnicd, "vf2", 2);
    // A queues frames and goes away in the middle of a message.
    a.send(&vec![frame(mac(2, 0), mac(1, 0), 100); 5]);
    let h = a.client.header(REGION_WRITE, NO_REPLY, 40);
    a.client.send_bytes(&h).unwrap();
    let bat = a.tables.bat;
    let ctx = a.tables.context(vnic::state::ServiceType::SendQueue, 0);
    drop(a.client);
    // C still reaches B.
    c.send(&vec![frame(mac(2, 0), mac(3, 0), 200); 3]);
    wait_for(
        "B has A's 5 and C's 3 frames",
        Duration::from_secs(5),
        || b.received(0).len() == 8,
    );
    // A's queue state is in A's memory: running, with its counters.
    assert_eq!(a.drv.read_u16(ctx + 10) & 1, 1, "still marked RUNNING");
    assert_eq!(a.drv.read_u64(ctx + 24), 5);
    assert_ne!(bat, 0);
    assert!(vnicd.alive());
    let log = vnicd.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("vf0") && l.contains("disconnect")),
        "{log}"
    );
}

#[test]
fn a_bad_vct_or_bad_ring_fails_only_that_function() {
    let vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut b = Guest::attach(&vnicd, "vf1", 2);
    let mut bad = RawClient::negotiated(&vnicd.socket("vf0"));
    let drv = FakeDriver::new();
    let (base, size, file) = drv.memory();
    let r = bad.call(
        DMA_MAP,
        0,
        &dma_map_body(3, 0, base, size),
        &[file.as_raw_fd()],
    );
    assert!(!r.is_error());
    // A VCT pointing at zeroes: bad magic.
    bad.region_write(BAR0, VCT_LO, &(base as u32).to_le_bytes(), NO_REPLY);
    bad.region_write(BAR0, VCT_HI, &0u32.to_le_bytes(), NO_REPLY);
    assert_eq!(bad.read_u32(BAR0, VCT_STATUS), 2);
    // Enabling a queue pair without a usable BAT: CONTEXT error (6).
    bad.region_write(BAR0, qp(0, 0x08), &3u32.to_le_bytes(), NO_REPLY);
    let status = bad.read_u32(BAR0, qp(0, 0x0c));
    assert_eq!(status & 0xf, 0b1100, "both queues in error");
    assert_eq!((status >> 8) & 0xff, 6);
    // A VCT outside guest memory: unreadable.
    bad.region_write(BAR0, VCT_LO, &0xdead_0000u32.to_le_bytes(), NO_REPLY);
    bad.region_write(BAR0, VCT_HI, &0u32.to_le_bytes(), NO_REPLY);
    assert_eq!(bad.read_u32(BAR0, VCT_STATUS), 1);
    // A doorbell on a queue pair beyond N is a bad access, counted.
    bad.region_write(BAR0, qp(5, 0x10), &1u32.to_le_bytes(), NO_REPLY);
    assert_eq!(bad.read_u32(BAR0, 0x34), 1, "BAD_ACCESS");
    // VF1 is untouched and keeps working.
    assert_eq!(b.read(qp(0, 0x0c)) & 0xf, 0b0011);
    b.send(&[frame(mac(2, 1), mac(2, 0), 60)]);
    wait_for(
        "VF1 talks to itself across queue pairs",
        Duration::from_secs(5),
        || b.received(1).len() == 1,
    );
}

/// Three guests on one vnicd; VF2's memory is an unsealed file (as
/// memory-backend-file gives). In the middle of traffic VF2's client
/// truncates it and rings its send doorbell, and VF0 sends to VF2: the
/// card meets the truncation reading VF2's ring and writing its receive
/// buffers. Only VF2 pays (its queues fail, the loss is counted); VF0 and
/// VF1 keep switching, before, during and after.
#[test]
fn a_client_truncating_its_memory_mid_traffic_leaves_the_others_switching() {
    let mut vnicd = Vnicd::start(&["--vfs", "3"]);
    let mut a = Guest::attach(&vnicd, "vf0", 1);
    let mut b = Guest::attach(&vnicd, "vf1", 1);
    let mut h = Guest::attach_with(
        &vnicd,
        "vf2",
        1,
        FakeDriver::with_unsealed_memory(vnic::test_utils::FAKE_BASE, vnic::test_utils::FAKE_SIZE),
    );
    a.send(&vec![frame(mac(2, 0), mac(1, 0), 100); 5]);
    h.send(&vec![frame(mac(2, 0), mac(3, 0), 100); 3]);
    a.send(&vec![frame(mac(3, 0), mac(1, 0), 100); 2]);
    wait_for("B has 8 frames, H 2", Duration::from_secs(5), || {
        b.received(0).len() == 8 && h.received(0).len() == 2
    });

    // H takes its memory away and rings its doorbell; A keeps sending to
    // B and also to H.
    h.drv.truncate(0).unwrap();
    let tail = h.tx_tails[0].wrapping_add(1) % vnic_tests::guest::RING;
    h.posted(qp(0, 0x10), tail as u32);
    a.send(&vec![frame(mac(3, 0), mac(1, 0), 100); 3]);
    for round in 0..5 {
        a.send(&vec![frame(mac(2, 0), mac(1, 0), 200); 4]);
        let want = 8 + 4 * (round + 1);
        wait_for("B keeps receiving from A", Duration::from_secs(5), || {
            b.received(0).len() == want
        });
    }
    assert!(vnicd.alive(), "vnicd died: {}", vnicd.log_text());
    // H's send and receive queues are in the error state; the function
    // counted its queue errors and the lost memory.
    let status = h.read(qp(0, 0x0c));
    assert_ne!(status & 0b1100, 0, "H's queue pair in error: {status:#x}");
    assert!(h.read(0x148) >= 1, "H's QUEUE_ERRORS");
    let mut ctl = vnic_tests::ctl::Ctl::connect(&vnicd);
    let stats = ctl.ok(serde_json::json!({"op": "stats"}));
    let lost = |name: &str| {
        stats["functions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["name"] == name)
            .map(|f| f["counters"]["dma_lost"].as_u64().unwrap())
            .unwrap()
    };
    assert_eq!((lost("vf0"), lost("vf1"), lost("vf2")), (0, 0, 1));
    assert_eq!(a.read(0x148), 0, "A's QUEUE_ERRORS");
    assert_eq!(b.read(0x148), 0, "B's QUEUE_ERRORS");
}

/// Posted writes that change the switch (a MAC, a receive filter) take
/// effect before the next message of the same client, so a driver that
/// reads QP_MAC or QP_ADDR_STATUS right behind its writes, as vnic.ko does
/// when the guest changes an address, sees what became of them.
#[test]
fn posted_address_writes_take_effect_before_the_next_read() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut pf = Guest::attach(&vnicd, "pf", 1);
    // The PF may change its MAC without trust.
    let new = [2u8, 0x11, 0x22, 0x33, 0x44, 0x55];
    pf.posted(
        qp(0, 0x00),
        u32::from_le_bytes(new[..4].try_into().unwrap()),
    );
    pf.posted(qp(0, 0x04), u32::from(new[4]) | u32::from(new[5]) << 8);
    assert_eq!(
        pf.read(qp(0, 0x00)),
        u32::from_le_bytes(new[..4].try_into().unwrap())
    );
    // Another vNIC's MAC: refused, and QP_ADDR_STATUS.MAC_TAKEN says so.
    let taken = mac(1, 0);
    pf.posted(
        qp(0, 0x00),
        u32::from_le_bytes(taken[..4].try_into().unwrap()),
    );
    pf.posted(qp(0, 0x04), u32::from(taken[4]) | u32::from(taken[5]) << 8);
    assert_eq!(pf.read(qp(0, 0x2c)), 1 << 9, "MAC_TAKEN");
    // A receive filter with one extra address, read back at once.
    let list = pf.drv.alloc(8, 8);
    let mut entry = [0u8; 8];
    entry[..6].copy_from_slice(&[2, 0, 0, 0, 0xee, 1]);
    pf.drv.write_u64(list, u64::from_le_bytes(entry));
    pf.posted(qp(0, 0x70), list as u32);
    pf.posted(qp(0, 0x74), (list >> 32) as u32);
    pf.posted(qp(0, 0x78), 1 << 16);
    assert_eq!(pf.read(qp(0, 0x2c)) >> 16, 1, "one extra address in effect");
    assert!(vnicd.alive());
}
