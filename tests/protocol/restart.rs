//! The card outliving its worker process (docs/restart.md), driven the way
//! systemd drives a unit with a descriptor store: the test plays systemd's
//! notify socket ([`FakeSystemd`]), kills the card worker with SIGKILL and
//! starts a new one with the descriptors the first one stored. The
//! "guests" are fake drivers over the vfio-user protocol; their
//! connections, memory and eventfds stay the same throughout, as QEMU's
//! would.

use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::Child;
use std::time::{Duration, Instant};

use vnic_tests::guest::{frame, mac, qp, Guest, COMMAND, CONFIG};
use vnic_tests::systemd::FakeSystemd;
use vnic_tests::{wait_for, TempDir, Vnicd};

const SCRATCH: u64 = 0x01c;
const QP_ITR: u64 = 0x1c;
const QP_STATUS: u64 = 0x0c;

/// vnicd's arguments: `--socket-dir SOCK`, then `args`.
fn argv(sock: &Path, args: &[&str]) -> Vec<OsString> {
    let mut v = vec!["--socket-dir".into(), sock.as_os_str().to_owned()];
    v.extend(args.iter().map(OsString::from));
    v
}

/// Starts a worker under `sd` with `args` and waits for READY=1.
fn spawn_ready(sd: &mut FakeSystemd, sock: &Path, args: &[&str], log: &Path) -> Child {
    let argv = argv(sock, args);
    let argv: Vec<&OsStr> = argv.iter().map(OsString::as_os_str).collect();
    let mut child = sd.spawn(&argv, log);
    let ready = sd.wait_ready(&mut child, Duration::from_secs(10));
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(ready, "worker not ready:\n{text}");
    child
}

/// A card worker under `sd`, with `args` after --socket-dir.
fn start(sd: &mut FakeSystemd, dir: TempDir, args: &[&str]) -> Vnicd {
    let log = dir.0.join("vnicd.log");
    let child = spawn_ready(sd, &dir.0.join("sock"), args, &log);
    Vnicd::from_child(child, dir, log)
}

/// Kills the worker and starts the next one with what it stored; returns
/// the time from the kill to the new worker's READY=1.
fn crash_and_restart(sd: &mut FakeSystemd, vnicd: &mut Vnicd, args: &[&str]) -> Duration {
    let t0 = Instant::now();
    vnicd.kill();
    let log = vnicd.log.clone();
    let child = spawn_ready(sd, &vnicd.socket_dir(), args, &log);
    let took = t0.elapsed();
    vnicd.set_child(child);
    took
}

#[test]
fn a_killed_worker_is_replaced_and_its_clients_carry_on_on_the_same_connections() {
    let dir = TempDir::new("restart");
    let mut sd = FakeSystemd::new(&dir.0);
    let args = ["--vfs", "2"];
    let mut vnicd = start(&mut sd, dir, &args);
    let mut a = Guest::attach(&vnicd, "vf0", 2);
    let mut b = Guest::attach(&vnicd, "vf1", 2);
    a.posted(SCRATCH, 0x1234_abcd);
    a.posted(qp(0, QP_ITR), 50);
    let first: Vec<Vec<u8>> = (0..3)
        .map(|i| frame(mac(2, 1), mac(1, 0), 60 + i))
        .collect();
    a.send(&first);
    wait_for("3 frames at VF1", Duration::from_secs(5), || {
        b.received(1).len() == 3
    });
    let command = a.client.read_u32(CONFIG, COMMAND) & 0xffff;
    // A read is a round trip: the record of everything before it is
    // written by the end of that turn.
    assert_eq!(a.read(SCRATCH), 0x1234_abcd);
    std::thread::sleep(Duration::from_millis(50));
    sd.drain();
    let names = sd.names();
    for want in [
        "record",
        "lock",
        "control",
        "listen-vf0",
        "client-vf0",
        "client-vf1",
    ] {
        assert!(
            names.iter().any(|n| n == want),
            "{want} not stored: {names:?}"
        );
    }
    assert!(names.iter().any(|n| n.starts_with("dma-vf0.")), "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("irq-vf0.")), "{names:?}");
    // Drain the interrupts so far: those after the restart are new.
    for e in a.irqs.iter().chain(&b.irqs) {
        let _ = e.read();
    }

    let took = crash_and_restart(&mut sd, &mut vnicd, &args);
    eprintln!("restart: kill -9 to READY=1 in {} ms", took.as_millis());
    assert!(took < Duration::from_secs(1), "restart took {took:?}");

    // The same connections: registers and config space as they were.
    assert_eq!(a.read(SCRATCH), 0x1234_abcd, "SCRATCH");
    assert_eq!(a.read(qp(0, QP_ITR)) & 0xffff, 50, "QP_ITR");
    assert_eq!(a.client.read_u32(CONFIG, COMMAND) & 0xffff, command);
    assert_eq!(a.read(qp(0, QP_STATUS)) & 0xf, 0b0011, "queues run");
    assert_eq!(b.read(qp(1, QP_STATUS)) & 0xf, 0b0011, "queues run");
    // Counters go on from where they were.
    assert_eq!(b.read(qp(1, 0x50)), 3, "RX_PACKETS");
    assert_eq!(a.read(0x100), 3, "function TX_PACKETS");
    // Traffic goes on, on the same rings and eventfds.
    let second: Vec<Vec<u8>> = (0..5)
        .map(|i| frame(mac(2, 1), mac(1, 0), 100 + i))
        .collect();
    a.send(&second);
    wait_for("8 frames at VF1", Duration::from_secs(5), || {
        b.received(1).len() == 8
    });
    assert_eq!(b.received(1)[3..], second[..]);
    assert!(
        b.irqs[2].read().is_ok(),
        "receive interrupt after the restart"
    );
    assert_eq!(a.sent_status(0, 5), vec![1; 5], "send descriptors DONE");
    let log = vnicd.log_text();
    assert!(
        log.contains("took over from the previous card worker"),
        "{log}"
    );

    // Counters of traffic right before a crash, with nothing durable after
    // it: the record's live block has them.
    let third: Vec<Vec<u8>> = (0..4)
        .map(|i| frame(mac(2, 1), mac(1, 0), 200 + i))
        .collect();
    a.send(&third);
    wait_for("12 frames at VF1", Duration::from_secs(5), || {
        b.received(1).len() == 12
    });
    crash_and_restart(&mut sd, &mut vnicd, &args);
    assert_eq!(b.read(qp(1, 0x50)), 12, "RX_PACKETS (guest memory)");
    assert_eq!(a.read(0x100), 12, "function TX_PACKETS (the live block)");
    assert!(vnicd.alive());
}

#[test]
fn a_record_of_another_layout_is_refused_and_the_worker_touches_nothing() {
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::fs::FileExt;
    let dir = TempDir::new("restart-layout");
    let mut sd = FakeSystemd::new(&dir.0);
    // A record from a vnicd of another layout.
    // SAFETY: memfd_create with a valid name; checked below.
    let fd = unsafe { libc::memfd_create(c"old-record".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: just created, ours alone.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let file = std::fs::File::from(fd.try_clone().unwrap());
    file.set_len(8192).unwrap();
    let mut header = *b"VNICREC\0\xe7\x03\0\0\0\0\0\0";
    header[8..12].copy_from_slice(&999u32.to_le_bytes());
    file.write_all_at(&header, 0).unwrap();
    sd.store.push(("record".into(), vec![fd]));
    let log = dir.0.join("vnicd.log");
    let sock = dir.0.join("sock");
    let argv = [OsStr::new("--socket-dir"), sock.as_os_str()];
    let mut child = sd.spawn(&argv, &log);
    let status = child.wait().unwrap();
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(status.code(), Some(2), "{text}");
    assert!(
        text.contains("state record layout 999 is not one this vnicd reads"),
        "{text}"
    );
    assert!(!sd.ready, "never ready");
    assert!(!sock.join("pf.sock").exists(), "no socket made");
    // The record is as it was.
    let mut back = [0u8; 16];
    file.read_exact_at(&mut back, 0).unwrap();
    assert_eq!(back, header);
}

#[test]
fn restart_under_systemd_exits_for_systemd_to_restart_and_upgrade_is_refused() {
    use vnic_tests::ctl::Ctl;
    let dir = TempDir::new("restart-sd");
    let mut sd = FakeSystemd::new(&dir.0);
    let args = ["--vfs", "1"];
    let mut vnicd = start(&mut sd, dir, &args);
    let mut a = Guest::attach(&vnicd, "vf0", 1);
    a.posted(SCRATCH, 77);
    let mut ctl = Ctl::connect(&vnicd);
    let e = ctl.refused(serde_json::json!({"op": "upgrade", "path": "/bin/true"}));
    assert!(e.contains("under systemd"), "{e}");
    let pid = vnicd.pid();
    let r = ctl.ok(serde_json::json!({"op": "restart"}));
    assert_eq!(r["pid"], pid);
    // The worker leaves; systemd (Restart=always) starts the next one.
    wait_for("the worker leaves", Duration::from_secs(10), || {
        vnicd.exited().is_some()
    });
    let status = vnicd.kill().expect("status");
    assert!(status.success(), "{status}: {}", vnicd.log_text());
    let log = vnicd.log.clone();
    let child = spawn_ready(&mut sd, &vnicd.socket_dir(), &args, &log);
    vnicd.set_child(child);
    assert_eq!(a.read(SCRATCH), 77);
    assert_eq!(a.read(qp(0, QP_STATUS)) & 0xf, 0b0011, "queues run");
    let stats = Ctl::connect(&vnicd).ok(serde_json::json!({"op": "stats"}));
    assert_ne!(stats["worker"]["pid"], pid);
    assert_eq!(stats["worker"]["kept"], true);
}

#[test]
fn a_message_half_sent_at_the_crash_is_read_whole_by_the_next_worker() {
    let dir = TempDir::new("restart-mid");
    let mut sd = FakeSystemd::new(&dir.0);
    let args = ["--vfs", "1"];
    let mut vnicd = start(&mut sd, dir, &args);
    let mut a = Guest::attach(&vnicd, "vf0", 1);
    // A posted write to SCRATCH, sent in two pieces around the crash.
    let mut msg = a
        .client
        .header(vnic_tests::REGION_WRITE, vnic_tests::NO_REPLY, 16 + 20);
    msg.extend_from_slice(&vnic_tests::region_access(0, SCRATCH, 4));
    msg.extend_from_slice(&0x5eed_u32.to_le_bytes());
    a.client.send_bytes(&msg[..22]).unwrap();
    std::thread::sleep(Duration::from_millis(100));
    crash_and_restart(&mut sd, &mut vnicd, &args);
    a.client.send_bytes(&msg[22..]).unwrap();
    assert_eq!(a.read(SCRATCH), 0x5eed, "the message took effect, once");
    assert_eq!(a.read(qp(0, QP_STATUS)) & 0xf, 0b0011);
}

#[test]
fn a_large_message_cut_by_the_crash_costs_only_its_client() {
    let dir = TempDir::new("restart-cut");
    let mut sd = FakeSystemd::new(&dir.0);
    let args = ["--vfs", "2"];
    let mut vnicd = start(&mut sd, dir, &args);
    let mut a = Guest::attach(&vnicd, "vf0", 1);
    let mut b = Guest::attach(&vnicd, "vf1", 1);
    // More than a worker waits for: read as it comes, so the crash finds
    // it half-read.
    let size = 100 << 10;
    let mut msg = a.client.header(vnic_tests::REGION_WRITE, 0, size);
    msg.extend_from_slice(&vnic_tests::region_access(0, 0, size - 32));
    msg.extend_from_slice(&[0u8; 4096]);
    a.client.send_bytes(&msg).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    crash_and_restart(&mut sd, &mut vnicd, &args);
    let log = vnicd.log_text();
    assert!(log.contains("died in the middle of a message"), "{log}");
    // A's connection is closed; B carries on.
    assert!(a.client.recv().is_err(), "A cut");
    b.posted(SCRATCH, 9);
    assert_eq!(b.read(SCRATCH), 9);
    assert!(vnicd.alive());
}

#[test]
fn counters_faults_and_vxlan_tables_survive_the_worker() {
    use serde_json::json;
    use vnic_tests::ctl::Ctl;
    let dir = TempDir::new("restart-state");
    let mut sd = FakeSystemd::new(&dir.0);
    let args = ["--vfs", "2"];
    let mut vnicd = start(&mut sd, dir, &args);
    let mut a = Guest::attach(&vnicd, "vf0", 1);
    let b = Guest::attach(&vnicd, "vf1", 1);
    a.send(&[frame(mac(2, 0), mac(1, 0), 64)]);
    wait_for("a frame at VF1", Duration::from_secs(5), || {
        b.received(0).len() == 1
    });
    let mut c = Ctl::connect(&vnicd);
    c.ok(json!({"op": "set-vtep", "mac": "02:76:6e:ff:00:01", "ip": "10.1.0.1"}));
    c.ok(json!({"op": "set-attr", "function": "vf1", "vni": 100}));
    c.ok(
        json!({"op": "vxlan-add", "vni": 100, "mac": "02:00:00:00:00:09",
        "remote_ip": "10.1.0.9", "remote_mac": "02:00:00:00:00:0a"}),
    );
    c.ok(json!({"op": "fault-inject", "function": "vf0",
        "fault": {"type": "drop-irqs", "count": 7}}));
    let stats = Ctl::connect(&vnicd).ok(json!({"op": "stats"}));
    let switched = stats["card"]["frames_switched"].as_u64().unwrap();
    assert!(switched >= 1, "{stats}");
    let tables = Ctl::connect(&vnicd).ok(json!({"op": "vxlan-list"}));
    let faults = Ctl::connect(&vnicd).ok(json!({"op": "fault-status", "function": "vf0"}));
    std::thread::sleep(Duration::from_millis(50));

    crash_and_restart(&mut sd, &mut vnicd, &args);

    let stats = Ctl::connect(&vnicd).ok(json!({"op": "stats"}));
    assert_eq!(stats["card"]["frames_switched"], switched, "{stats}");
    assert_eq!(stats["card"]["worker_restarts"], 0, "a fake systemd says 0");
    assert_eq!(Ctl::connect(&vnicd).ok(json!({"op": "vxlan-list"})), tables);
    // Still armed; the new worker's first interrupts (it fires every
    // running queue pair's vector once) may have used some of it.
    let after = Ctl::connect(&vnicd).ok(json!({"op": "fault-status", "function": "vf0"}));
    let armed = after["armed"]["drop_irqs"].as_u64().unwrap();
    let used = after["counters"]["irqs_dropped"].as_u64().unwrap();
    assert_eq!(faults["armed"]["drop_irqs"], 7);
    assert!(armed > 0 && armed + used == 7, "{after}");
    let show = Ctl::connect(&vnicd).ok(json!({"op": "show", "function": "vf1"}));
    assert_eq!(show["vni"], 100, "{show}");
}

/// `vnicctl ARGS` on `vnicd`'s control socket: (exit code, stdout, stderr).
fn vnicctl(vnicd: &Vnicd, args: &[&str]) -> (Option<i32>, String, String) {
    let out = std::process::Command::new(vnic_tests::vnicctl_binary())
        .arg("--control")
        .arg(vnicd.socket_dir().join("control.sock"))
        .args(args)
        .output()
        .expect("run vnicctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The card worker's PID, from `vnicctl --json stats`.
fn worker_pid(vnicd: &Vnicd) -> u64 {
    let (_, out, _) = vnicctl(vnicd, &["--json", "stats"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap_or_default();
    v["worker"]["pid"].as_u64().unwrap_or(0)
}

#[test]
fn under_the_keeper_a_failed_upgrade_leaves_the_worker_serving_and_a_restart_replaces_it() {
    // vnicd as a user starts it: the keeper, with the card in its worker.
    let mut vnicd = Vnicd::start(&["--vfs", "1"]);
    let keeper = vnicd.pid();
    let mut a = Guest::attach(&vnicd, "vf0", 1);
    a.posted(SCRATCH, 31);
    let old = worker_pid(&vnicd);
    assert!(
        old != 0 && old != u64::from(keeper),
        "worker {old}, keeper {keeper}"
    );

    // A binary that exits at once: the old worker serves on.
    let (code, _, err) = vnicctl(&vnicd, &["upgrade", "/bin/false"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("failed") && err.contains("serves on"), "{err}");
    assert_eq!(worker_pid(&vnicd), old);
    assert_eq!(a.read(SCRATCH), 31, "the same worker, the same client");
    let (_, out, _) = vnicctl(&vnicd, &["--json", "stats"]);
    assert!(out.contains("succession_failed"), "{out}");
    // Not an absolute path to an executable: refused at once.
    let (code, _, err) = vnicctl(&vnicd, &["upgrade", "/nonexistent/vnicd"]);
    assert_eq!(code, Some(1), "{err}");

    // The same binary: a new worker, the same connection.
    let (code, out, err) = vnicctl(&vnicd, &["restart"]);
    assert_eq!(code, Some(0), "{out}{err}{}", vnicd.log_text());
    assert!(out.contains("handed over"), "{out}");
    let new = worker_pid(&vnicd);
    assert!(new != 0 && new != old, "{old} -> {new}");
    assert_eq!(a.read(SCRATCH), 31);
    assert_eq!(a.read(qp(0, QP_STATUS)) & 0xf, 0b0011, "queues run");
    let (_, list, _) = vnicctl(&vnicd, &["list"]);
    assert!(list.contains(&format!("card worker: pid {new}")), "{list}");
    assert_eq!(vnicd.pid(), keeper);
    assert!(vnicd.alive());
    assert_eq!(vnicd.stop(), Some(0), "{}", vnicd.log_text());
}
