//! Malformed and hostile vfio-user clients. Each test checks that the bad
//! client gets an error reply or is disconnected, that vnicd stays up, and
//! that a well-behaved client of another function keeps working.

use std::io::Read;
use std::os::fd::AsRawFd;
use std::time::Duration;

use vnic_tests::*;

/// A well-behaved client on `function` still gets correct answers.
fn healthy(vnicd: &mut Vnicd, function: &str) {
    assert!(vnicd.alive(), "vnicd died: {}", vnicd.log_text());
    let mut c = RawClient::negotiated(&vnicd.socket(function));
    assert_eq!(c.read_u32(0, 0), 0x564e_4943, "ID register");
}

/// The server closed this client's socket (EOF after any queued replies).
fn disconnected(c: &mut RawClient) -> bool {
    let mut rest = Vec::new();
    match c.stream.read_to_end(&mut rest) {
        Ok(_) => true,
        // A reset also means closed (vnicd dropped unread input); a timeout
        // means the connection is still open.
        Err(e) => !matches!(
            e.kind(),
            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
        ),
    }
}

#[test]
fn short_header_then_close_leaves_vnicd_serving() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut bad = RawClient::connect(&vnicd.socket("vf0"));
    bad.send_bytes(&[1, 0, 1, 0, 20]).unwrap();
    drop(bad);
    healthy(&mut vnicd, "vf1");
    healthy(&mut vnicd, "vf0");
}

#[test]
fn header_size_below_16_is_refused_and_disconnected() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut bad = RawClient::connect(&vnicd.socket("vf0"));
    let h = bad.header(VERSION, 0, 8);
    bad.send_bytes(&h).unwrap();
    let r = bad.recv().unwrap();
    assert!(r.is_error());
    assert_eq!(r.error, libc::EINVAL as u32);
    assert!(disconnected(&mut bad));
    healthy(&mut vnicd, "vf1");
}

#[test]
fn huge_message_size_is_refused_without_allocating() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut bad = RawClient::connect(&vnicd.socket("vf0"));
    let h = bad.header(REGION_WRITE, 0, u32::MAX);
    bad.send_bytes(&h).unwrap();
    let r = bad.recv().unwrap();
    assert!(r.is_error());
    assert!(disconnected(&mut bad));
    healthy(&mut vnicd, "vf1");
    assert!(vnicd.log_text().contains("malformed message header"));
}

/// The card's only requests are its DMA_WRITEs in migration mode
/// (docs/migration.md, "Live migration"): a short reply to nothing is
/// counted and logged, and the client stays; a long "reply" breaks the
/// framing rules and the client is dropped, without an answer (a reply is
/// never answered: QEMU aborts on one it did not ask for).
#[test]
fn a_reply_the_card_did_not_ask_for_is_refused() {
    let mut vnicd = Vnicd::start(&[]);
    let mut c = RawClient::connect(&vnicd.socket("vf0"));
    let h = c.header(VERSION, 1, 16);
    c.send_bytes(&h).unwrap();
    let r = c.call(DEVICE_GET_INFO, 0, &16u32.to_le_bytes(), &[]);
    assert!(r.is_error(), "still connected: VERSION first");
    assert!(!disconnected_within(&mut c, Duration::from_millis(300)));
    drop(c);

    let mut bad = RawClient::connect(&vnicd.socket("vf0"));
    let mut h = bad.header(VERSION, 1, 16 + 100);
    h.extend_from_slice(&[0; 100]);
    bad.send_bytes(&h).unwrap();
    let mut rest = Vec::new();
    let _ = bad.stream.read_to_end(&mut rest);
    assert!(rest.is_empty(), "no answer to a reply: {rest:?}");
    healthy(&mut vnicd, "vf0");
    let log = vnicd.log_text();
    assert!(log.contains("to no request of the card's"), "{log}");
    assert!(log.contains("malformed message header"), "{log}");
}

/// Whether the server closes `c` within `wait`.
fn disconnected_within(c: &mut RawClient, wait: Duration) -> bool {
    c.stream.set_read_timeout(Some(wait)).unwrap();
    let closed = disconnected(c);
    c.stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    closed
}

#[test]
fn commands_before_version_are_refused() {
    let mut vnicd = Vnicd::start(&[]);
    let mut c = RawClient::connect(&vnicd.socket("vf0"));
    let r = c.call(DEVICE_GET_INFO, 0, &16u32.to_le_bytes(), &[]);
    assert!(r.is_error());
    drop(c);
    healthy(&mut vnicd, "vf0");
}

#[test]
fn malformed_version_json_is_refused_but_connection_survives() {
    let vnicd = Vnicd::start(&[]);
    let mut c = RawClient::connect(&vnicd.socket("vf0"));
    let r = c.call(VERSION, 0, b"\0\0\0\0{not json\0", &[]);
    assert!(r.is_error());
    let r = c.call(VERSION, 0, b"\x01\0\0\0", &[]);
    assert!(r.is_error(), "major version 1 refused");
    // Valid JSON but not UTF-8 (an ignored field's string): the spec's
    // capabilities are UTF-8.
    let r = c.call(VERSION, 0, b"\0\0\0\0{\"x\":\"\xff\xfe\"}\0", &[]);
    assert!(r.is_error(), "non-UTF-8 capabilities refused");
    assert_eq!(r.error, libc::EINVAL as u32);
    let r = c.call(VERSION, 0, b"\0\0\0\0", &[]);
    assert!(!r.is_error(), "a correct VERSION still works");
    assert_eq!(&r.body[..4], &[0, 0, 0, 0]);
    let caps = std::str::from_utf8(&r.body[4..r.body.len() - 1]).unwrap();
    let v: serde_json::Value = serde_json::from_str(caps).unwrap();
    assert_eq!(v["capabilities"]["max_data_xfer_size"], 1 << 20);
    assert_eq!(v["capabilities"]["write_multiple"], true);
}

#[test]
fn unknown_and_unsupported_commands_get_enotsup() {
    let mut vnicd = Vnicd::start(&[]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    for cmd in [0u16, 6, 11, 12, 14, 99, 0xffff] {
        let r = c.call(cmd, 0, &[0; 8], &[]);
        assert!(r.is_error(), "command {cmd}");
        assert_eq!(r.error, libc::ENOTSUP as u32, "command {cmd}");
    }
    assert_eq!(c.read_u32(0, 0), 0x564e_4943, "same connection still works");
    healthy(&mut vnicd, "pf");
}

#[test]
fn bad_region_index_offset_and_count_are_einval() {
    let vnicd = Vnicd::start(&[]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    let r = c.region_read(42, 0, 4);
    assert!(r.is_error() && r.error == libc::EINVAL as u32);
    let r = c.region_read(0, 64 * 1024 - 2, 4);
    assert!(r.is_error(), "read crossing the end of BAR0");
    let r = c.region_read(7, u64::MAX - 1, 4);
    assert!(r.is_error(), "offset overflow");
    let r = c.region_read(4, 0, 4);
    assert!(r.is_error(), "absent BAR4");
    let r = c.region_read(0, 0, (1 << 20) + 1);
    assert_eq!(r.error, libc::E2BIG as u32);
    // Count field larger than the data that follows it.
    let mut b = region_access(0, 0, 100);
    b.extend_from_slice(&[0; 4]);
    assert!(c.call(REGION_WRITE, 0, &b, &[]).is_error());
    // Short payloads for every command that has one.
    for cmd in [
        DMA_MAP,
        DMA_UNMAP,
        GET_REGION_INFO,
        GET_IRQ_INFO,
        SET_IRQS,
        REGION_READ,
    ] {
        assert!(c.call(cmd, 0, &[1, 2], &[]).is_error(), "command {cmd}");
    }
    assert_eq!(c.read_u32(0, 0), 0x564e_4943);
}

#[test]
fn bad_mmio_inside_a_bar_reads_all_ones_and_is_counted() {
    let vnicd = Vnicd::start(&[]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    let r = c.region_read(0, 0x1, 4);
    assert!(!r.is_error(), "hardware-like: answered, not refused");
    assert_eq!(&r.body[16..], &[0xff; 4]);
    assert_eq!(c.read_u32(0, 0x800), u32::MAX);
    c.region_write(0, 0x0, &[0; 4], 0);
    assert_eq!(c.read_u32(0, 0x34), 3, "BAD_ACCESS counts all three");
}

#[test]
fn disconnect_mid_message_leaves_function_usable() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut bad = RawClient::negotiated(&vnicd.socket("vf0"));
    let mut msg = bad.header(REGION_WRITE, 0, 16 + 16 + 4096);
    msg.extend_from_slice(&[0; 20]);
    bad.send_bytes(&msg).unwrap();
    drop(bad);
    healthy(&mut vnicd, "vf1");
    wait_for("vf0 freed", Duration::from_secs(5), || {
        vnicd.log_text().contains("in the middle of a message")
    });
    healthy(&mut vnicd, "vf0");
}

/// A VERSION message as QEMU sends it.
fn version_body() -> Vec<u8> {
    let mut body = vec![0, 0, 0, 0];
    body.extend_from_slice(br#"{"capabilities":{"max_msg_fds":8}}"#);
    body.push(0);
    body
}

#[test]
fn second_client_on_a_busy_function_is_turned_away() {
    let mut vnicd = Vnicd::start(&[]);
    let mut first = RawClient::negotiated(&vnicd.socket("vf0"));
    // A second QEMU: its VERSION gets EBUSY ("version reply: Device or
    // resource busy"), then the connection closes.
    let mut second = RawClient::connect(&vnicd.socket("vf0"));
    let r = second.call(VERSION, 0, &version_body(), &[]);
    assert!(r.is_error(), "{r:?}");
    assert_eq!((r.command, r.error), (VERSION, libc::EBUSY as u32));
    assert!(disconnected(&mut second));
    assert!(
        vnicd.log_text().contains("vf0: refusing a second client"),
        "{}",
        vnicd.log_text()
    );
    assert_eq!(first.read_u32(0, 0), 0x564e_4943);
    drop(first);
    wait_for("vf0 free", Duration::from_secs(5), || {
        vnicd.log_text().matches("vf0: client disconnected").count() == 1
    });
    healthy(&mut vnicd, "vf0");
}

/// QEMU without `share=on` sends its RAM without descriptors, one range
/// after another: the card refuses the first with the reason (one error
/// reply, one log line), takes the others as known but out of reach, and
/// says so in STATUS.MEM_UNSHARED until the client goes; a new client
/// starts afresh.
#[test]
fn dma_map_without_fd_says_shared_memory_is_needed_once_per_client() {
    let mut vnicd = Vnicd::start(&[]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    let map = |flags: u32, at: u64| dma_map_body(flags, 0, at, 0x10_0000);
    const STATUS: u64 = 0x14;
    assert_eq!(c.read_u32(0, STATUS) & 2, 0);
    // Writable memory without a descriptor: guest RAM that is not shared.
    assert!(c.call(DMA_MAP, 0, &map(3, 0), &[]).is_error());
    for i in 1..30 {
        assert!(!c.call(DMA_MAP, 0, &map(3, i << 20), &[]).is_error());
    }
    // Read-only memory without a descriptor is how QEMU sends ROMs: accepted.
    assert!(!c.call(DMA_MAP, 0, &map(1, 0xfff0_0000), &[]).is_error());
    assert_eq!(c.read_u32(0, STATUS), 0b11, "LINK_UP | MEM_UNSHARED");
    let log = vnicd.log_text();
    assert_eq!(log.matches("share=on").count(), 1, "{log}");
    drop(c);
    wait_for("vf0 free", Duration::from_secs(5), || {
        vnicd.log_text().contains("vf0: client disconnected")
    });
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    assert_eq!(c.read_u32(0, STATUS), 0b01, "a new client starts afresh");
    healthy(&mut vnicd, "pf");
}

#[test]
fn a_burst_of_refused_dma_maps_and_unmaps_writes_a_bounded_log() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    let before = vnicd.log_text().lines().count();
    // 4000 DMA_MAPs with flags that mean nothing, then 1000 DMA_UNMAPs
    // asking for a dirty bitmap: 5000 refusals.
    for i in 0..4000u64 {
        let r = c.call(DMA_MAP, 0, &dma_map_body(4, 0, i << 12, 0x1000), &[]);
        assert!(r.is_error());
    }
    let mut unmap = 24u32.to_le_bytes().to_vec();
    unmap.extend_from_slice(&1u32.to_le_bytes());
    unmap.extend_from_slice(&[0; 16]);
    for _ in 0..1000 {
        assert!(c.call(DMA_UNMAP, 0, &unmap, &[]).is_error());
    }
    healthy(&mut vnicd, "vf1");
    let log = vnicd.log_text();
    let refusals: Vec<&str> = log.lines().filter(|l| l.contains("refused")).collect();
    // The first ten, then the 1000th, 2000th, ... 5000th.
    assert_eq!(refusals.len(), 15, "{log}");
    assert!(refusals.iter().all(|l| l.contains(" WARN ")), "{log}");
    assert!(refusals[0].contains("DMA_MAP flags"), "{}", refusals[0]);
    assert!(
        refusals[9].contains("one in 1000 is logged"),
        "{}",
        refusals[9]
    );
    assert!(
        refusals[14].contains("5000 refusals so far"),
        "{}",
        refusals[14]
    );
    assert!(!log.contains("ERROR"), "{log}");
    let new_lines = log.lines().count() - before;
    assert!(
        new_lines <= 25,
        "{new_lines} lines for 5000 refusals:\n{log}"
    );
}

#[test]
fn dma_map_of_a_file_shorter_than_the_range_is_refused() {
    let vnicd = Vnicd::start(&[]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    let mem = memfd(4096);
    let b = dma_map_body(3, 0, 0, 1 << 30);
    let r = c.call(DMA_MAP, 0, &b, &[mem.as_raw_fd()]);
    assert!(
        r.is_error(),
        "1 GiB range over a 4 KiB file would SIGBUS later"
    );
    assert_eq!(c.read_u32(0, 0), 0x564e_4943);
}

#[test]
fn unexpected_or_too_many_descriptors_are_refused() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    let mem = memfd(4096);
    let r = c.call(REGION_READ, 0, &region_access(0, 0, 4), &[mem.as_raw_fd()]);
    assert!(r.is_error(), "a region read carries no descriptor");
    let r = c.call(
        GET_REGION_INFO,
        0,
        &region_info_body(0, 32),
        &[mem.as_raw_fd()],
    );
    assert!(r.is_error(), "GET_REGION_INFO carries no descriptor either");
    assert_eq!(r.error, libc::EINVAL as u32);
    let r = c.call(GET_REGION_INFO, 0, &region_info_body(0, 32), &[]);
    assert!(!r.is_error(), "without one it is answered");
    // SET_IRQS with a descriptor that is not an eventfd.
    let mut s = 20u32.to_le_bytes().to_vec();
    s.extend_from_slice(&(0x20u32 | 0x4).to_le_bytes());
    s.extend_from_slice(&2u32.to_le_bytes());
    s.extend_from_slice(&0u32.to_le_bytes());
    s.extend_from_slice(&1u32.to_le_bytes());
    assert!(c.call(SET_IRQS, 0, &s, &[mem.as_raw_fd()]).is_error());
    // 20 descriptors in one message: more than max_msg_fds.
    let many: Vec<i32> = (0..20).map(|_| mem.as_raw_fd()).collect();
    c.send(DEVICE_GET_INFO, 0, &16u32.to_le_bytes(), &many);
    assert!(disconnected(&mut c));
    healthy(&mut vnicd, "vf1");
    healthy(&mut vnicd, "vf0");
}

#[test]
fn client_that_never_reads_replies_is_cut_off_without_stalling_others() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut hog = RawClient::negotiated(&vnicd.socket("vf0"));
    hog.stream
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let b = region_access(7, 0, 4096);
    let mut sent = 0;
    // 4 KiB config reads whose replies are never read: vnicd must give up
    // on this client once MAX_TX_BYTES are queued.
    for _ in 0..20_000 {
        let mut msg = hog.header(REGION_READ, 0, 32);
        msg.extend_from_slice(&b);
        if hog.send_bytes(&msg).is_err() {
            break;
        }
        sent += 1;
    }
    assert!(sent > 0);
    healthy(&mut vnicd, "vf1");
    wait_for("hog disconnected", Duration::from_secs(10), || {
        vnicd
            .log_text()
            .contains("vf0: client stopped reading replies")
    });
    drop(hog);
    healthy(&mut vnicd, "vf0");
}

/// A REGION_WRITE_MULTI payload: wr_cnt, then (offset, region, count,
/// 8 data bytes) per write.
fn write_multi_body(writes: &[(u32, u64, u32)]) -> Vec<u8> {
    let mut b = (writes.len() as u64).to_le_bytes().to_vec();
    for &(region, offset, value) in writes {
        b.extend_from_slice(&offset.to_le_bytes());
        b.extend_from_slice(&region.to_le_bytes());
        b.extend_from_slice(&4u32.to_le_bytes());
        b.extend_from_slice(&u64::from(value).to_le_bytes());
    }
    b
}

#[test]
fn region_write_multi_reply_carries_the_number_of_writes() {
    let vnicd = Vnicd::start(&[]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    // SCRATCH (0x1c) twice, then the cache line size in config space.
    let b = write_multi_body(&[(0, 0x1c, 5), (0, 0x1c, 6), (7, 0x0c, 0x10)]);
    let r = c.call(REGION_WRITE_MULTI, 0, &b, &[]);
    assert!(!r.is_error(), "{r:?}");
    assert_eq!(r.body.len(), 8, "wr_cnt only");
    assert_eq!(le_u64(&r.body, 0), 3, "wr_cnt: three writes completed");
    assert_eq!(c.read_u32(0, 0x1c), 6, "applied in order");
    assert_eq!(c.read_u32(7, 0x0c) & 0xff, 0x10);
    // Posted, as QEMU sends them: no reply, the next reply answers the read.
    let b = write_multi_body(&[(0, 0x1c, 8)]);
    c.send(REGION_WRITE_MULTI, NO_REPLY, &b, &[]);
    let r = c.region_read(0, 0x1c, 4);
    assert_eq!(r.command, REGION_READ);
    assert_eq!(le_u32(&r.body, 16), 8);
}

#[test]
fn posted_write_errors_get_no_reply_and_are_counted() {
    let vnicd = Vnicd::start(&[]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    // A posted write to a region that does not exist: no reply may come.
    c.region_write(42, 0, &[0; 4], NO_REPLY);
    // Posted write that works, then a read that must see it (ordering).
    c.region_write(0, 0x1c, &0xabcdu32.to_le_bytes(), NO_REPLY);
    let r = c.region_read(0, 0x1c, 4);
    assert!(!r.is_error());
    assert_eq!(
        r.id, 3,
        "the next reply answers the read, not the posted write"
    );
    assert_eq!(
        u32::from_le_bytes(r.body[16..20].try_into().unwrap()),
        0xabcd
    );
    assert!(vnicd.log_text().contains("refused"));
}

/// The function's `dma_lost` counter, from the control socket.
fn dma_lost(vnicd: &Vnicd, function: &str) -> u64 {
    let mut ctl = ctl::Ctl::connect(vnicd);
    let stats = ctl.ok(serde_json::json!({"op": "stats", "function": function}));
    stats["functions"][0]["counters"]["dma_lost"]
        .as_u64()
        .expect("dma_lost counter")
}

/// A client maps an unsealed memfd (as memory-backend-file gives), turns
/// on Bus Master, truncates the file to nothing and points its VCT entry
/// into it: the card's walk of the BAT meets the truncation (SIGBUS). Only
/// that function pays: vnicd stays up, the client is still served, the
/// VCT entry is refused, the loss is counted and logged once, the memory
/// is refused from then on, and another function is unaffected.
#[test]
fn a_client_truncating_its_dma_memory_costs_only_its_own_function() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut c = RawClient::negotiated(&vnicd.socket("vf0"));
    let mem = vnic::test_utils::unsealed_memfd(1 << 20);
    let r = c.call(
        DMA_MAP,
        0,
        &dma_map_body(3, 0, 0x10_0000, 1 << 20),
        &[mem.as_raw_fd()],
    );
    assert!(!r.is_error(), "DMA_MAP: {r:?}");
    c.region_write(7, 0x04, &0x6u16.to_le_bytes(), 0);
    mem.set_len(0).unwrap();
    c.region_write(0, 0x40, &0x10_0000u32.to_le_bytes(), 0);
    c.region_write(0, 0x44, &0u32.to_le_bytes(), 0);
    assert!(vnicd.alive(), "vnicd died: {}", vnicd.log_text());
    assert_eq!(c.read_u32(0, 0), 0x564e_4943, "vf0 still answers");
    // VCT_STATUS: the BAT was not taken (the walk read the zero pages
    // that replaced the lost memory: 2, bad magic).
    assert_eq!(c.read_u32(0, 0x48), 2, "VCT_STATUS");
    healthy(&mut vnicd, "vf1");
    wait_for("the loss counted", Duration::from_secs(5), || {
        dma_lost(&vnicd, "vf0") == 1
    });
    assert_eq!(dma_lost(&vnicd, "vf1"), 0);
    let log = vnicd.log_text();
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("truncated its DMA memory"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("vf0") && lines[0].contains("0x100000+0x100000"));
    // Pointing the VCT entry at it again: refused, no second fault, no
    // second loss.
    c.region_write(0, 0x44, &0u32.to_le_bytes(), 0);
    assert_eq!(c.read_u32(0, 0x48), 1, "VCT_STATUS: BAT unreadable");
    assert_eq!(dma_lost(&vnicd, "vf0"), 1);
    // The client can drop the lost mapping and map healthy memory again.
    let r = c.call(DMA_UNMAP, 0, &dma_unmap_body(0x10_0000, 1 << 20), &[]);
    assert!(!r.is_error(), "DMA_UNMAP: {r:?}");
    let good = vnic::test_utils::memfd(1 << 20);
    let r = c.call(
        DMA_MAP,
        0,
        &dma_map_body(3, 0, 0x10_0000, 1 << 20),
        &[good.as_raw_fd()],
    );
    assert!(!r.is_error(), "DMA_MAP again: {r:?}");
    assert!(vnicd.alive());
}

/// The answer line a JSON client got before the card closed it.
fn json_answer(c: &mut RawClient) -> serde_json::Value {
    let mut text = String::new();
    c.stream
        .read_to_string(&mut text)
        .expect("answer, then EOF");
    serde_json::from_str(text.trim_end()).unwrap_or_else(|e| panic!("{e}: {text:?}"))
}

#[test]
fn a_json_client_at_a_function_socket_is_told_it_is_not_the_control_socket() {
    let mut vnicd = Vnicd::start(&["--vfs", "1"]);
    // As the function's client...
    let mut json = RawClient::connect(&vnicd.socket("vf0"));
    json.send_bytes(b"{\"op\":\"list\"}\n").unwrap();
    let a = json_answer(&mut json);
    assert_eq!(a["ok"], false);
    let why = a["error"].as_str().unwrap();
    assert!(
        why.contains("vf0.sock is the vfio-user socket of function vf0")
            && why.contains("not vnicd's control socket"),
        "{why}"
    );
    wait_for("the log line", Duration::from_secs(5), || {
        vnicd
            .log_text()
            .contains("vf0: a client sent JSON, not vfio-user")
    });
    // ... and turned away while QEMU has it.
    let mut qemu = RawClient::negotiated(&vnicd.socket("pf"));
    let mut json = RawClient::connect(&vnicd.socket("pf"));
    json.send_bytes(b"{\"op\":\"list\"}\n").unwrap();
    let a = json_answer(&mut json);
    assert!(a["error"]
        .as_str()
        .unwrap()
        .contains("pf.sock is the vfio-user socket"));
    assert_eq!(
        qemu.read_u32(0, 0),
        0x564e_4943,
        "the attached client is served"
    );
    healthy(&mut vnicd, "vf0");
}
