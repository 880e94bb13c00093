//! The host end of the guest's host channel (`vnic_tests::e2e::HostChannel`)
//! without a guest: this test writes to the FIFOs as QEMU would for the
//! guest's /dev/ttyS1, and reads the answers, with the real vnicctl.

use std::fs::{File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use vnic_tests::e2e::HostChannel;
use vnic_tests::TempDir;

/// The guest's side: what QEMU does with the two FIFOs.
struct Guest {
    to_host: File,
    from_host: File,
    pending: Vec<u8>,
}

impl Guest {
    fn open(base: &Path) -> Guest {
        let open = |ext: &str| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .custom_flags(libc::O_NONBLOCK)
                .open(base.with_extension(ext))
                .unwrap_or_else(|e| panic!("open {ext}: {e}"))
        };
        Guest {
            to_host: open("out"),
            from_host: open("in"),
            pending: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &str) {
        self.to_host.write_all(bytes.as_bytes()).expect("write");
    }

    /// The answer lines up to and including `HOST-END <rc>` (10 s at most).
    fn answer(&mut self) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut lines = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            while let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]).into_owned();
                let last = line.starts_with("HOST-END ");
                lines.push(line);
                if last {
                    return lines;
                }
            }
            assert!(Instant::now() < deadline, "no HOST-END; got {lines:?}");
            match self.from_host.read(&mut buf) {
                Ok(n) => self.pending.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(10))
                }
                Err(e) => panic!("read: {e}"),
            }
        }
    }
}

#[test]
fn requests_split_across_writes_get_vnicctls_output_and_status() {
    let dir = TempDir::new("hc");
    let base = dir.0.join("host");
    let log = dir.0.join("host.log");
    let control = dir.0.join("control.sock");
    let channel = HostChannel::serve(&base, &control, &log);
    let mut guest = Guest::open(&base);

    // A request in pieces, as a UART delivers it, after noise to ignore.
    guest.send("boot noise\r\nHOST-RUN vnicctl --ver");
    std::thread::sleep(Duration::from_millis(100));
    guest.send("sion\r\n");
    assert_eq!(
        guest.answer(),
        ["HOST-OUT vnicctl 0.1.0", "HOST-END 0"],
        "log:\n{}",
        std::fs::read_to_string(&log).unwrap()
    );

    // No vnicd here: vnicctl's own status and message come back.
    guest.send("HOST-RUN vnicctl list\n");
    let answer = guest.answer();
    assert_eq!(answer.len(), 2, "{answer:?}");
    assert!(
        answer[0].starts_with("HOST-OUT vnicctl: cannot connect to "),
        "{answer:?}"
    );
    assert!(answer[0].contains("control.sock"), "{answer:?}");
    assert_eq!(answer[1], "HOST-END 3");

    guest.send("HOST-RUN ls /\n");
    let answer = guest.answer();
    assert_eq!(answer.last().map(String::as_str), Some("HOST-END 127"));

    let t0 = Instant::now();
    drop(channel);
    assert!(t0.elapsed() < Duration::from_secs(2), "slow to stop");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("] ignored: \"boot noise\""), "{log}");
    assert!(log.contains("] vnicctl --version -> rc 0"), "{log}");
    assert!(log.contains("] vnicctl list -> rc 3"), "{log}");
    assert!(log.contains("] ls / -> rc 127"), "{log}");
    assert!(log.contains("] stopped"), "{log}");
    assert!(!base.with_extension("in").exists(), "FIFO left behind");
}

#[test]
fn a_guest_that_never_speaks_costs_nothing_to_stop() {
    let dir = TempDir::new("hc");
    let base = dir.0.join("host");
    let log = dir.0.join("host.log");
    let channel = HostChannel::serve(&base, &dir.0.join("control.sock"), &log);
    std::thread::sleep(Duration::from_millis(200));
    let t0 = Instant::now();
    drop(channel);
    assert!(t0.elapsed() < Duration::from_secs(1), "slow to stop");
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(log.contains("] serving the host channel"), "{log}");
    assert!(log.contains("] stopped"), "{log}");
}

#[test]
fn stopping_the_channel_ends_the_vnicctl_it_runs() {
    let dir = TempDir::new("hc");
    let base = dir.0.join("host");
    let log = dir.0.join("host.log");
    let control = dir.0.join("control.sock");
    // A card that takes the connection and never answers.
    let _card = std::os::unix::net::UnixListener::bind(&control).expect("bind");
    let channel = HostChannel::serve(&base, &control, &log);
    let mut guest = Guest::open(&base);
    guest.send("HOST-RUN vnicctl list\n");
    std::thread::sleep(Duration::from_millis(500));
    let t0 = Instant::now();
    drop(channel);
    assert!(t0.elapsed() < Duration::from_secs(2), "slow to stop");
    let answer = guest.answer();
    assert_eq!(answer.last().map(String::as_str), Some("HOST-END 124"));
    assert!(
        answer.iter().any(|l| l.contains("the guest is gone")),
        "{answer:?}"
    );
}

#[test]
fn netns_ping_runs_only_in_namespaces_the_test_allowed() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: network namespaces need root");
        return;
    }
    let ns = format!("vnichc{}", std::process::id());
    let ip = |args: &[&str]| {
        std::process::Command::new("ip")
            .args(args)
            .status()
            .is_ok_and(|s| s.success())
    };
    let _ = ip(&["netns", "del", &ns]);
    assert!(ip(&["netns", "add", &ns]), "ip netns add");
    // Deleted even if an assertion fails.
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", &self.0])
                .status();
        }
    }
    let _gone = Gone(ns.clone());
    assert!(ip(&["-n", &ns, "link", "set", "lo", "up"]));

    let dir = TempDir::new("hc");
    let base = dir.0.join("host");
    let log = dir.0.join("host.log");
    let channel = HostChannel::serve_with_namespaces(
        &base,
        &dir.0.join("control.sock"),
        &log,
        std::slice::from_ref(&ns),
    );
    let mut guest = Guest::open(&base);
    guest.send(&format!("HOST-RUN netns-ping {ns} 127.0.0.1 2\n"));
    let answer = guest.answer();
    assert_eq!(
        answer.last().map(String::as_str),
        Some("HOST-END 0"),
        "{answer:?}"
    );
    assert!(
        answer.iter().any(|l| l.contains("2 received")),
        "{answer:?}"
    );
    for bad in [
        "netns-ping someone-elses 127.0.0.1 1".to_string(),
        format!("netns-ping {ns} 127.0.0.1 0"),
        format!("netns-ping {ns} 127.0.0.1 51"),
        format!("netns-ping {ns} localhost 1"),
        format!("netns-ping {ns} 127.0.0.1"),
        format!("netns-ping {ns} 127.0.0.1 1 -f"),
    ] {
        guest.send(&format!("HOST-RUN {bad}\n"));
        let answer = guest.answer();
        assert_eq!(
            answer.last().map(String::as_str),
            Some("HOST-END 127"),
            "{bad}: {answer:?}"
        );
    }
    drop(channel);
    let log = std::fs::read_to_string(&log).unwrap();
    assert!(
        log.contains(&format!("] netns-ping {ns} 127.0.0.1 2 -> rc 0")),
        "{log}"
    );
    assert!(log.contains("not one this test made"), "{log}");
}

/// A stand-in for QEMU's QMP socket: answers every command with an empty
/// return (or, for a device named "pf", QEMU's duplicate-ID error), sends
/// DEVICE_DELETED after device_del, and records the commands it got.
fn fake_qmp(socket: &Path) -> std::sync::Arc<std::sync::Mutex<Vec<serde_json::Value>>> {
    use std::io::BufRead;
    let listener = std::os::unix::net::UnixListener::bind(socket).expect("bind QMP");
    let got = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let seen = got.clone();
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(mut conn) = conn else { return };
            let greeting = r#"{"QMP": {"version": {}, "capabilities": ["oob"]}}"#;
            let _ = writeln!(conn, "{greeting}");
            let reader = std::io::BufReader::new(conn.try_clone().expect("dup"));
            for line in reader.lines() {
                let Ok(line) = line else { break };
                let cmd: serde_json::Value = serde_json::from_str(&line).expect("JSON command");
                let name = cmd["execute"].as_str().unwrap_or_default().to_string();
                let id = cmd["arguments"]["id"].clone();
                if name != "qmp_capabilities" {
                    seen.lock().unwrap().push(cmd);
                }
                if id == "pf" {
                    let e = r#"{"error": {"class": "GenericError", "desc": "Duplicate device ID 'pf'"}}"#;
                    let _ = writeln!(conn, "{e}");
                    continue;
                }
                let _ = writeln!(conn, r#"{{"return": {{}}}}"#);
                if name == "device_del" {
                    let ev = serde_json::json!({"event": "DEVICE_DELETED", "data": {"device": id}});
                    let _ = writeln!(conn, "{ev}");
                }
            }
        }
    });
    got
}

#[test]
fn qmp_requests_are_checked_and_device_del_needs_the_tests_permission() {
    use vnic_tests::e2e::QmpAccess;
    let dir = TempDir::new("hc");
    let base = dir.0.join("host");
    let log = dir.0.join("host.log");
    let functions = dir.0.join("card");
    std::fs::create_dir(&functions).unwrap();
    // The card's sockets: only their existence matters here.
    let _vf1 = std::os::unix::net::UnixListener::bind(functions.join("vf1.sock")).unwrap();
    let _pf = std::os::unix::net::UnixListener::bind(functions.join("pf.sock")).unwrap();
    std::fs::write(functions.join("vf2.sock"), "not a socket").unwrap();
    let socket = dir.0.join("qmp.sock");
    let got = fake_qmp(&socket);
    let access = |unplug| QmpAccess {
        socket: socket.clone(),
        functions: functions.clone(),
        unplug,
    };
    let control = dir.0.join("control.sock");
    let channel = HostChannel::serve_with(&base, &control, &log, &[], Some(access(false)));
    let mut guest = Guest::open(&base);

    guest.send("HOST-RUN qmp device_add vf1 rp1\n");
    let answer = guest.answer();
    assert_eq!(
        answer.last().map(String::as_str),
        Some("HOST-END 0"),
        "{answer:?}"
    );
    assert!(
        answer[0].starts_with("HOST-OUT device_add vf1 rp1: done in "),
        "{answer:?}"
    );
    let sent = got.lock().unwrap()[0].clone();
    assert_eq!(
        sent,
        serde_json::json!({"execute": "device_add", "arguments": {
            "driver": "vfio-user-pci", "id": "vf1", "bus": "rp1",
            "socket": {"type": "unix", "path": functions.join("vf1.sock")}}})
    );

    // QEMU's own refusal comes back with status 1.
    guest.send("HOST-RUN qmp device_add pf rp2\n");
    let answer = guest.answer();
    assert_eq!(
        answer.last().map(String::as_str),
        Some("HOST-END 1"),
        "{answer:?}"
    );
    assert!(
        answer[0].contains("QEMU refused: Duplicate device ID 'pf'"),
        "{answer:?}"
    );

    // Refused here, never sent to QEMU.
    for bad in [
        "qmp device_del vf1",
        "qmp device_add vf3 rp1",
        "qmp device_add vf2 rp1",
        "qmp device_add vf1 rp0",
        "qmp device_add vf1 rp17",
        "qmp device_add vf1 rp01",
        "qmp device_add vf1 pcie.0",
        "qmp device_add ../vf1 rp1",
        "qmp device_add vf1x rp1",
        "qmp device_add vf1 rp1 extra",
        "qmp device_add vf1",
        "qmp quit",
        "qmp",
    ] {
        guest.send(&format!("HOST-RUN {bad}\n"));
        let answer = guest.answer();
        assert_eq!(
            answer.last().map(String::as_str),
            Some("HOST-END 127"),
            "{bad}: {answer:?}"
        );
    }
    assert_eq!(
        got.lock().unwrap().len(),
        2,
        "a refused request reached QEMU"
    );
    drop(channel);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("device_del vf1 refused: QEMU 11.1.3 aborts"),
        "{text}"
    );

    // With the test's permission, device_del runs and waits for the event.
    let channel = HostChannel::serve_with(&base, &control, &log, &[], Some(access(true)));
    let mut guest = Guest::open(&base);
    guest.send("HOST-RUN qmp device_del vf1\n");
    let answer = guest.answer();
    assert_eq!(
        answer.last().map(String::as_str),
        Some("HOST-END 0"),
        "{answer:?}"
    );
    assert!(
        answer[0].starts_with("HOST-OUT device_del vf1: DEVICE_DELETED after "),
        "{answer:?}"
    );
    assert_eq!(
        got.lock().unwrap()[2]["arguments"],
        serde_json::json!({"id": "vf1"})
    );
    drop(channel);

    // Without QMP access nothing is served.
    let channel = HostChannel::serve(&base, &control, &log);
    let mut guest = Guest::open(&base);
    guest.send("HOST-RUN qmp device_add vf1 rp1\n");
    let answer = guest.answer();
    assert_eq!(
        answer.last().map(String::as_str),
        Some("HOST-END 127"),
        "{answer:?}"
    );
    drop(channel);
}
