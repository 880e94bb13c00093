//! Fault injection through a real vnicd's control socket and through the
//! vnicctl binary, seen by fake guests over vfio-user
//! (docs/fault-injection.md).

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vnic_tests::ctl::Ctl;
use vnic_tests::guest::{frame, mac, Guest};
use vnic_tests::{vnicctl_binary, Vnicd};

/// The frames vf1's queue pair 0 has received, waiting up to 5 s for `n`.
fn received(g: &Guest, n: usize) -> Vec<Vec<u8>> {
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let got = g.received(0);
        if got.len() >= n || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn fault(c: &mut Ctl, function: &str, fault: Value) -> Value {
    c.ok(json!({"op": "fault-inject", "function": function, "fault": fault}))
}

#[test]
fn injected_faults_reach_the_guest_and_are_counted_for_one_function_only() {
    let vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut c = Ctl::connect(&vnicd);
    let mut a = Guest::attach(&vnicd, "vf0", 1);
    let mut b = Guest::attach(&vnicd, "vf1", 1);
    let to_b = |n| frame(mac(2, 0), mac(1, 0), n);

    fault(
        &mut c,
        "vf1",
        json!({"type": "drop-frames", "direction": "rx", "count": 2}),
    );
    a.send(&[to_b(60), to_b(61), to_b(62)]);
    assert_eq!(received(&b, 1), vec![to_b(62)]);

    let info = c.ok(json!({"op": "fault-status", "function": "vf1"}));
    assert_eq!(info["counters"]["rx_frames_dropped"], 2);
    assert_eq!(info["armed"]["drop_frames"]["rx"], 0);
    let other = c.ok(json!({"op": "fault-status", "function": "vf0"}));
    assert_eq!(other["counters"]["rx_frames_dropped"], 0);
    let stats = c.ok(json!({"op": "stats", "function": "vf1"}));
    assert_eq!(
        stats["functions"][0]["counters"]["fault_rx_frames_dropped"],
        2
    );

    // Surprise removal: all-ones, until reinserted (and then reset).
    fault(&mut c, "vf1", json!({"type": "remove"}));
    assert_eq!(b.read(0x000), 0xffff_ffff);
    assert_eq!(a.read(0x000), 0x564e_4943, "vf0 still answers");
    let e =
        c.refused(json!({"op": "fault-inject", "function": "vf1", "fault": {"type": "remove"}}));
    assert!(e.contains("already removed"), "{e}");
    fault(&mut c, "vf1", json!({"type": "reinsert"}));
    assert_eq!(b.read(0x000), 0x564e_4943);
    assert_eq!(b.read(0x040), 0, "reset: no VCT entry");

    for (req, why) in [
        (json!({"type": "drop-irqs", "count": 0}), "count 0 outside"),
        (
            json!({"type": "delay-completions", "us": 61_000_000}),
            "delay",
        ),
        (json!({"type": "reinsert"}), "not removed"),
    ] {
        let e = c.refused(json!({"op": "fault-inject", "function": "vf0", "fault": req}));
        assert!(e.contains(why), "{e}");
    }
    let r = c.call(json!({"op": "fault-inject", "function": "vf0", "fault": {"type": "boom"}}));
    assert_eq!(r["ok"], false);
}

#[test]
fn vnicctl_fault_commands_inject_show_and_refuse() {
    let vnicd = Vnicd::start(&["--vfs", "1"]);
    let control = vnicd.socket_dir().join("control.sock");
    let run = |args: &[&str]| {
        Command::new(vnicctl_binary())
            .arg("--control")
            .arg(&control)
            .args(args)
            .output()
            .expect("run vnicctl")
    };
    let out = run(&["fault", "vf0", "drop-completions", "3"]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("armed drop_completions 3"), "{text}");
    let out = run(&["--json", "fault", "vf0", "status"]);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["armed"]["drop_completions"], 3);
    assert!(run(&["fault", "vf0", "clear"]).status.success());
    let out = run(&["fault", "vf0", "fail-dma", "rx", "0"]);
    assert_eq!(out.status.code(), Some(1), "refused by the card");
    assert_eq!(run(&["fault", "vf0", "melt"]).status.code(), Some(2));
    assert_eq!(run(&["fault", "vf7", "remove"]).status.code(), Some(1));
}
