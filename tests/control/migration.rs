//! Migration operations of a real vnicd over its control socket
//! (docs/migration.md): quiesce writes every queue context to guest memory
//! and stops the card writing it; resume carries on; an export remapped
//! onto another VF starts a second vnicd (`--config`) that resumes the
//! guest's queues from the BAT address alone, once the guest enables bus
//! mastering.

use std::process::Command;
use std::time::Duration;

use serde_json::{json, Value};
use vnic::state::{Context, ServiceType};
use vnic_tests::ctl::Ctl;
use vnic_tests::guest::{frame, mac, qp, Guest, IRQ_CAUSE};
use vnic_tests::{vnicctl_binary, wait_for, TempDir, Vnicd};

/// Every queue context of `g` as its memory holds it: send then receive,
/// per queue pair.
fn contexts(g: &Guest) -> Vec<Context> {
    let mut out = Vec::new();
    for q in 0..g.rings.len() as u16 {
        for ty in ServiceType::ALL {
            let at = g.tables.context(ty, q);
            out.push(Context::load(g.drv.dma(), at).unwrap());
        }
    }
    out
}

#[test]
fn quiesce_flushes_contexts_and_stops_the_function_until_resume() {
    let vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut ctl = Ctl::connect(&vnicd);
    let mut a = Guest::attach(&vnicd, "vf0", 2);
    let mut b = Guest::attach(&vnicd, "vf1", 2);
    b.send(&vec![frame(mac(1, 0), mac(2, 0), 100); 4]);
    wait_for("A got 4", Duration::from_secs(5), || {
        a.received(0).len() == 4
    });

    let done = ctl.ok(json!({"op": "quiesce", "function": "vf0"}));
    assert_eq!(done, json!([{"function": "vf0", "contexts_written": 4}]));
    let mem = contexts(&a);
    // A's receive queue 0 took 4 frames; memory says so, and RUNNING.
    assert_eq!((mem[1].packets, mem[1].head), (4, 4), "{mem:?}");
    assert!(mem.iter().all(|c| c.running()));
    assert_eq!(
        ctl.ok(json!({"op": "show", "function": "vf0"}))["quiesced"],
        true
    );

    // Frames to A wait in the card; A's own stay in its ring.
    b.send(&vec![frame(mac(1, 0), mac(2, 0), 100); 3]);
    a.send(&vec![frame(mac(2, 0), mac(1, 0), 80); 2]);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(a.received(0).len(), 4, "nothing written into A's buffers");
    assert_eq!(b.received(0).len(), 0, "nothing left A");
    let now = contexts(&a);
    assert_eq!(
        now[0].tail, a.tx_tails[0],
        "A's doorbell reached its context"
    );
    assert_eq!(now[0].head, 0);
    assert_eq!(now[1], mem[1], "receive context untouched");

    assert_eq!(ctl.ok(json!({"op": "resume"})), json!(["vf0"]));
    wait_for("A got the 3 that waited", Duration::from_secs(5), || {
        a.received(0).len() == 7
    });
    wait_for("B got A's 2", Duration::from_secs(5), || {
        b.received(0).len() == 2
    });
    assert_eq!(
        ctl.ok(json!({"op": "show", "function": "vf0"}))["quiesced"],
        false
    );
    assert!(ctl
        .refused(json!({"op": "quiesce", "function": "vf9"}))
        .contains("no function"));
}

#[test]
fn a_second_vnicd_from_the_remapped_export_resumes_the_guest_on_another_vf() {
    let dir = TempDir::new("migration");
    let mut src = Vnicd::start(&["--vfs", "3"]);
    let mut a = Guest::attach(&src, "vf0", 2);
    let mut b = Guest::attach(&src, "vf1", 2);
    a.send(&vec![frame(mac(2, 1), mac(1, 0), 120); 5]);
    b.send(&vec![frame(mac(1, 1), mac(2, 0), 90); 3]);
    wait_for("traffic both ways", Duration::from_secs(5), || {
        b.received(1).len() == 5 && a.received(1).len() == 3
    });
    let mut ctl = Ctl::connect(&src);
    ctl.ok(json!({"op": "quiesce"}));
    let saved = contexts(&a);
    let export = ctl.ok(json!({"op": "export"}));
    let vf0 = &export["functions"][1];
    assert_eq!(vf0["name"], "vf0");
    assert_eq!(vf0["vct"], format!("{:#x}", a.tables.bat));
    src.stop();
    assert_eq!(contexts(&a), saved, "disconnect wrote nothing new");

    let exported = dir.0.join("card.json");
    std::fs::write(&exported, export.to_string()).unwrap();
    let out = Command::new(vnicctl_binary())
        .arg("remap")
        .arg(&exported)
        .arg("vf0=vf2")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let remapped = dir.0.join("remapped.json");
    std::fs::write(&remapped, &out.stdout).unwrap();

    let dst = Vnicd::start(&["--vfs", "3", "--config", remapped.to_str().unwrap()]);
    let mut ctl = Ctl::connect(&dst);
    let show = ctl.ok(json!({"op": "show", "function": "vf2"}));
    assert_eq!(
        show["vct_pending"],
        format!("{:#x}", a.tables.bat),
        "{show}"
    );
    assert_eq!(show["vnics"][0]["mac"], "02:76:6e:00:01:00", "vf0's MAC");
    let mut a = a.restore(&dst, "vf2");
    let show: Value = ctl.ok(json!({"op": "show", "function": "vf2"}));
    assert_eq!(show["vct"], a.tables.bat, "committed: {show}");
    for q in 0..2 {
        assert_eq!(a.read(qp(q, 0x0c)) & 3, 3, "queue pair {q} runs");
        let (tx, rx) = (&saved[2 * q as usize], &saved[2 * q as usize + 1]);
        assert_eq!(a.read(qp(q, 0x24)), tx.head as u32, "TX head");
        assert_eq!(a.read(qp(q, 0x28)), rx.head as u32, "RX head");
        assert_eq!(a.read(qp(q, 0x30)), tx.packets as u32, "TX_PACKETS");
        assert_eq!(a.read(qp(q, 0x50)), rx.packets as u32, "RX_PACKETS");
    }
    assert_eq!(a.read(IRQ_CAUSE) & 4, 4, "IRQ_CAUSE.RESUMED");
    assert!(a.irqs[0].read().is_ok(), "misc vector fired");

    // The guest carries on: counters continue from where they were.
    let mut b = Guest::attach(&dst, "vf1", 2);
    a.send(&vec![frame(mac(2, 1), mac(1, 0), 120); 2]);
    wait_for("B got 2 on the new card", Duration::from_secs(5), || {
        b.received(1).len() == 2
    });
    assert_eq!(a.read(qp(0, 0x30)), saved[0].packets as u32 + 2);
    b.send(&[frame(mac(1, 1), mac(2, 0), 90)]);
    wait_for("A got 1", Duration::from_secs(5), || {
        a.received(1).len() == 4
    });
}
