//! The live-migration mode over the vfio-user socket (docs/migration.md,
//! "Live migration"): the client plays QEMU. In the mode vnicd writes
//! nothing into the function's guest memory itself; every write arrives
//! as a DMA_WRITE request (command 12: address, count, data), posted but
//! for the last of a batch, and the queue's interrupt fires only after
//! the client answered that one. Errors from the client are counted; a
//! stray reply is refused without a disconnect; a client that vanishes in
//! the mode leaves vnicd serving.

use std::time::{Duration, Instant};

use serde_json::json;
use vnic::test_utils::{FAKE_BASE, FAKE_SIZE};
use vnic_tests::ctl::Ctl;
use vnic_tests::guest::{frame, mac, Guest};
use vnic_tests::{le_u64, wait_for, Reply, Vnicd, NO_REPLY};

const DMA_WRITE: u16 = 12;
const REPLY: u32 = 1;
const ERROR: u32 = 0x20;

/// All of a guest's memory.
fn image(g: &Guest) -> Vec<u8> {
    let mut m = vec![0; FAKE_SIZE as usize];
    g.drv.dma().read(FAKE_BASE, &mut m).unwrap();
    m
}

/// Reads the card's requests on `g`'s socket up to the one that asks for
/// a reply (the end of a batch); every one must be a DMA_WRITE.
fn batch(g: &mut Guest) -> Vec<Reply> {
    let mut out = Vec::new();
    loop {
        let m = g.client.recv().expect("a DMA_WRITE from vnicd");
        assert_eq!(m.command, DMA_WRITE, "{m:?}");
        assert_eq!(m.flags & 0xf, 0, "a request");
        let count = le_u64(&m.body, 8) as usize;
        assert_eq!(m.body.len(), 16 + count, "count matches the data");
        let last = m.flags & NO_REPLY == 0;
        out.push(m);
        if last {
            return out;
        }
    }
}

/// What QEMU does with a DMA_WRITE: writes the data at the address.
fn carry_out(g: &Guest, writes: &[Reply]) {
    for w in writes {
        let address = le_u64(&w.body, 0);
        g.drv.dma().write(address, &w.body[16..]).unwrap();
    }
}

/// QEMU's answer to request `id`: a bare header, with an errno or not.
fn answer(g: &mut Guest, id: u16, errno: u32) {
    let mut h = Vec::with_capacity(16);
    h.extend_from_slice(&id.to_le_bytes());
    h.extend_from_slice(&DMA_WRITE.to_le_bytes());
    h.extend_from_slice(&16u32.to_le_bytes());
    let flags = REPLY | if errno != 0 { ERROR } else { 0 };
    h.extend_from_slice(&flags.to_le_bytes());
    h.extend_from_slice(&errno.to_le_bytes());
    g.client.send_bytes(&h).unwrap();
}

fn migrate(vnicd: &Vnicd, function: &str, action: &str) -> serde_json::Value {
    Ctl::connect(vnicd).ok(json!({"op": "migrate", "function": function, "action": action}))
}

#[test]
fn in_migration_mode_every_guest_write_is_a_dma_write_and_interrupts_wait_for_the_answer() {
    let mut vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut a = Guest::attach(&vnicd, "vf0", 1);
    let mut b = Guest::attach(&vnicd, "vf1", 1);
    let r = migrate(&vnicd, "vf0", "begin");
    assert_eq!(r["state"], "relaying", "{r}");

    let before = image(&a);
    let to_a: Vec<Vec<u8>> = (0..5)
        .map(|i| frame(mac(1, 0), mac(2, 0), 60 + 100 * i))
        .collect();
    b.send(&to_a);
    let writes = batch(&mut a);
    assert!(
        image(&a) == before,
        "vnicd wrote nothing into A's memory itself"
    );
    assert!(a.received(0).is_empty());
    std::thread::sleep(Duration::from_millis(100));
    assert!(
        a.irqs[1].read().is_err(),
        "no receive interrupt before the client answered"
    );
    carry_out(&a, &writes);
    assert_eq!(a.received(0), to_a, "the frames, from the DMA_WRITEs alone");
    answer(&mut a, writes.last().unwrap().id, 0);
    wait_for("the receive interrupt", Duration::from_secs(5), || {
        a.irqs[1].read().is_ok()
    });

    // The client refuses one write (as QEMU does without Bus Master
    // Enable): counted, and the function goes on.
    let more = vec![frame(mac(1, 0), mac(2, 0), 80)];
    b.send(&more);
    let writes = batch(&mut a);
    carry_out(&a, &writes);
    answer(&mut a, writes[0].id, libc::ENODEV as u32);
    if writes.len() > 1 {
        answer(&mut a, writes.last().unwrap().id, 0);
    }
    // A reply to nothing: refused, not a reason to disconnect.
    answer(&mut a, writes.last().unwrap().id.wrapping_add(1000), 0);
    let deadline = Instant::now() + Duration::from_secs(5);
    let status = loop {
        let s = migrate(&vnicd, "vf0", "status");
        if s["unanswered"] == 0 || Instant::now() > deadline {
            break s;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(status["relay"]["errors"], 1, "{status}");
    assert_eq!(status["unanswered"], 0, "{status}");
    assert!(status["relay"]["writes"].as_u64().unwrap() >= 4, "{status}");
    assert_eq!(a.received(0).len(), 6);

    // The switchover: the contexts come as DMA_WRITEs, the mode ends when
    // they are answered, and A's addresses leave the switch.
    let before = image(&a);
    let s = migrate(&vnicd, "vf0", "switchover");
    assert_eq!(s["state"], "flushing", "{s}");
    assert_eq!(s["contexts_written"], 2, "{s}");
    let flush = batch(&mut a);
    assert!(image(&a) == before, "the flush goes through the client too");
    carry_out(&a, &flush);
    answer(&mut a, flush.last().unwrap().id, 0);
    wait_for("the mode ends", Duration::from_secs(5), || {
        migrate(&vnicd, "vf0", "status")["state"] == "switched"
    });
    let s = migrate(&vnicd, "vf0", "status");
    assert_eq!(s["addresses_released"], true, "{s}");

    // A client gone in the mode: vnicd serves on.
    migrate(&vnicd, "vf1", "begin");
    drop(b);
    wait_for("vf1 out of the mode", Duration::from_secs(5), || {
        migrate(&vnicd, "vf1", "status")["state"] == "off"
    });
    assert!(vnicd.alive());
    let log = vnicd.log_text();
    assert!(log.contains("did not make DMA_WRITE"), "{log}");
    assert!(log.contains("to no request of the card's"), "{log}");
}

#[test]
fn the_mode_needs_a_client_and_a_switchover_needs_the_mode() {
    let vnicd = Vnicd::start(&["--vfs", "1"]);
    let mut ctl = Ctl::connect(&vnicd);
    let e = ctl.refused(json!({"op": "migrate", "function": "vf0", "action": "begin"}));
    assert!(e.contains("no client has mapped guest memory"), "{e}");
    let e = Ctl::connect(&vnicd)
        .refused(json!({"op": "migrate", "function": "vf0", "action": "switchover"}));
    assert!(e.contains("not in migration mode"), "{e}");
    let s = migrate(&vnicd, "vf0", "status");
    assert_eq!(s["state"], "off", "{s}");
}
