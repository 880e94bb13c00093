//! The card outliving its worker process (docs/restart.md), driven the way
//! systemd drives a unit with a descriptor store: the test plays systemd's
//! notify socket ([`FakeSystemd`]), kills the card worker with SIGKILL and
//! starts a new one with the descriptors the first one stored. The
//! "guests" are fake drivers over the vfio-user protocol; their
//! connections, memory and eventfds stay the same throughout, as QEMU's
//! would.

use std::ffi::OsStr;
use std::time::{Duration, Instant};

use vnic_tests::guest::{frame, mac, qp, Guest, COMMAND, CONFIG};
use vnic_tests::systemd::FakeSystemd;
use vnic_tests::{wait_for, TempDir, Vnicd};

const SCRATCH: u64 = 0x01c;
const QP_ITR: u64 = 0x1c;
const QP_STATUS: u64 = 0x0c;

/// A card worker under `sd`, with `args` after --socket-dir.
fn start(sd: &mut FakeSystemd, dir: TempDir, args: &[&str]) -> Vnicd {
    let log = dir.0.join("vnicd.log");
    let mut argv: Vec<&OsStr> = vec![
        OsStr::new("--socket-dir"),
        dir.0.join("sock").leak().as_os_str(),
    ];
    argv.extend(args.iter().map(OsStr::new));
    let mut child = sd.spawn(&argv, &log);
    let ready = sd.wait_ready(&mut child, Duration::from_secs(10));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(ready, "worker not ready:\n{text}");
    Vnicd::from_child(child, dir, log)
}

/// Kills the worker and starts the next one with what it stored; returns
/// the time from the kill to the new worker's READY=1.
fn crash_and_restart(sd: &mut FakeSystemd, vnicd: &mut Vnicd, args: &[&str]) -> Duration {
    let t0 = Instant::now();
    vnicd.kill();
    let sock = vnicd.socket_dir();
    let mut argv: Vec<&OsStr> = vec![OsStr::new("--socket-dir"), sock.as_os_str()];
    argv.extend(args.iter().map(OsStr::new));
    let mut child = sd.spawn(&argv, &vnicd.log);
    let ready = sd.wait_ready(&mut child, Duration::from_secs(10));
    let took = t0.elapsed();
    assert!(ready, "new worker not ready:\n{}", vnicd.log_text());
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
