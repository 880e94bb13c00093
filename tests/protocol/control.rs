//! The control socket of a real vnicd: answers and errors, malformed and
//! oversized requests, events, VF enable/disable (sockets and clients),
//! client slots (idle clients displaced or timed out, newcomers refused),
//! backpressure on pipelined requests, a control client that never reads,
//! and `--config` at start (docs/management.md).

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vnic::control::socket::MAX_CLIENTS;
use vnic_tests::ctl::Ctl;
use vnic_tests::{vnicctl_binary, vnicd_binary, wait_for, RawClient, TempDir, Vnicd};

#[test]
fn requests_get_answers_and_refused_ones_change_nothing() {
    let vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut c = Ctl::connect(&vnicd);
    let list = c.ok(json!({"op": "list"}));
    assert_eq!(list.as_array().unwrap().len(), 3);
    assert_eq!(list[1]["name"], "vf0");
    c.ok(json!({"op": "set-vnics", "function": "vf0", "count": 3}));
    let before = c.ok(json!({"op": "export"}));
    for (req, why) in [
        (
            json!({"op": "set-vnics", "function": "vf0", "count": 9}),
            "outside 1..=8",
        ),
        (
            json!({"op": "set-vnics", "function": "vf5", "count": 1}),
            "no function",
        ),
        (
            json!({"op": "set-vnic", "function": "vf1", "vnic": 0, "mac": "02:76:6e:00:01:00"}),
            "already belongs",
        ),
        (
            json!({"op": "set-vnic", "function": "vf1", "vnic": 0, "mac": "zz"}),
            "bad MAC",
        ),
        (
            json!({"op": "fdb-del", "mac": "02:00:00:00:00:01"}),
            "no static entry",
        ),
        (json!({"op": "set-num-vfs", "count": 3}), "TotalVFs"),
    ] {
        let e = c.refused(req.clone());
        assert!(e.contains(why), "{req}: {e}");
    }
    assert_eq!(c.ok(json!({"op": "export"})), before);
    assert_eq!(before["functions"][1]["vnics"].as_array().unwrap().len(), 3);
}

#[test]
fn malformed_and_oversized_requests_get_errors_and_the_connection_survives() {
    let vnicd = Vnicd::start(&["--vfs", "1"]);
    let mut c = Ctl::connect(&vnicd);
    c.send_raw(b"this is not json\n");
    assert!(c.line()["error"].as_str().unwrap().contains("bad request"));
    c.send_raw(b"{\"op\":\"list\",\"please\":1}\n");
    assert!(c.line()["error"]
        .as_str()
        .unwrap()
        .contains("unknown field"));
    c.send_raw(b"{\"op\":\"format-disk\"}\n");
    assert!(c.line()["error"]
        .as_str()
        .unwrap()
        .contains("unknown variant"));
    // 2 MiB without a newline: one error, the rest of the line skipped.
    let big = vec![b'x'; 2 * 1024 * 1024];
    let mut w = c.writer.try_clone().unwrap();
    let t = std::thread::spawn(move || {
        w.write_all(&big).unwrap();
        w.write_all(b"\n").unwrap();
    });
    assert!(c.line()["error"].as_str().unwrap().contains("longer than"));
    t.join().unwrap();
    assert_eq!(c.call(json!({"op": "fdb-list"}))["ok"], true);
    // Another client was served all along.
    let mut d = Ctl::connect(&vnicd);
    assert_eq!(d.call(json!({"op": "list"}))["ok"], true);
}

#[test]
fn subscribers_receive_events_from_every_source() {
    let vnicd = Vnicd::start(&["--vfs", "2"]);
    let mut sub = Ctl::connect(&vnicd);
    sub.ok(json!({"op": "subscribe"}));
    let mut c = Ctl::connect(&vnicd);
    c.ok(json!({"op": "set-vnics", "function": "vf1", "count": 1}));
    let e = sub.line();
    assert_eq!(
        e,
        json!({"event": "vnics-changed", "function": "vf1", "count": 1})
    );
    let client = RawClient::negotiated(&vnicd.socket("vf0"));
    assert_eq!(
        sub.line(),
        json!({"event": "client-connected", "function": "vf0"})
    );
    drop(client);
    assert_eq!(
        sub.line(),
        json!({"event": "client-disconnected", "function": "vf0"})
    );
    c.ok(json!({"op": "set-link", "function": "vf0", "state": "down"}));
    assert_eq!(
        sub.line(),
        json!({"event": "link-changed", "function": "vf0", "up": false})
    );
}

/// PCI config space offset of the PF's SR-IOV capability NumVFs field
/// (extended capabilities start at 0x100, SR-IOV first; NumVFs at +0x10).
const SRIOV_NUM_VFS: u64 = 0x100 + 0x10;
const CONFIG_REGION: u32 = 7;

#[test]
fn disabling_a_vf_removes_its_socket_and_disconnects_its_client() {
    let vnicd = Vnicd::start(&["--vfs", "3"]);
    let mut c = Ctl::connect(&vnicd);
    let mut vf2 = RawClient::negotiated(&vnicd.socket("vf2"));
    let mut pf = RawClient::negotiated(&vnicd.socket("pf"));
    assert_eq!(pf.read_u32(CONFIG_REGION, SRIOV_NUM_VFS) & 0xffff, 3);
    c.ok(json!({"op": "set-num-vfs", "count": 2}));
    assert!(!vnicd.socket("vf2").exists(), "socket removed");
    assert!(vnicd.socket("vf1").exists());
    let mut b = [0u8; 1];
    assert_eq!(
        vf2.stream.read(&mut b).unwrap_or(0),
        0,
        "client disconnected"
    );
    assert_eq!(pf.read_u32(CONFIG_REGION, SRIOV_NUM_VFS) & 0xffff, 2);
    let list = c.ok(json!({"op": "list"}));
    assert_eq!(list[3]["enabled"], false);
    assert!(c
        .refused(json!({"op": "set-trust", "function": "vf2", "on": true}))
        .contains("disabled"));
    c.ok(json!({"op": "set-num-vfs", "count": 3}));
    assert!(vnicd.socket("vf2").exists(), "socket back");
    let _again = RawClient::negotiated(&vnicd.socket("vf2"));
    assert_eq!(pf.read_u32(CONFIG_REGION, SRIOV_NUM_VFS) & 0xffff, 3);
}

fn control_socket(vnicd: &Vnicd) -> PathBuf {
    vnicd.socket_dir().join("control.sock")
}

/// What vnicd said on a connection it closed: its one error answer, once
/// the connection has ended (None while it is open, or if it said nothing).
fn closed_with(stream: &UnixStream) -> Option<String> {
    stream.set_nonblocking(true).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let ended = loop {
        match (&*stream).read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
            Err(_) => break true,
        }
    };
    stream.set_nonblocking(false).unwrap();
    if !ended {
        return None;
    }
    let line = got.split(|&b| b == b'\n').next()?;
    let answer: Value = serde_json::from_slice(line).ok()?;
    assert_eq!(answer["ok"], false, "{answer}");
    answer["error"].as_str().map(str::to_string)
}

/// Runs `vnicctl --control SOCKET args...`: (exit code, stdout, stderr).
fn vnicctl(socket: &Path, args: &[&str]) -> (Option<i32>, String, String) {
    let out = Command::new(vnicctl_binary())
        .arg("--control")
        .arg(socket)
        .args(args)
        .output()
        .expect("run vnicctl");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn forty_idle_connections_do_not_lock_management_out() {
    let vnicd = Vnicd::start(&["--vfs", "1"]);
    let socket = control_socket(&vnicd);
    let idle: Vec<UnixStream> = (0..40)
        .map(|_| UnixStream::connect(&socket).unwrap())
        .collect();
    let (code, stdout, stderr) = vnicctl(&socket, &["list"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stdout.contains("vf0"), "{stdout}");
    // 32 slots: the 8 oldest idle clients made room for the other 8 idle
    // ones, two more for vnicctl (`list`, then `stats` for the worker line
    // under the table), whose slot was free again for this one.
    let mut c = Ctl::connect(&vnicd);
    assert_eq!(c.card_stat("control_displaced"), 10);
    assert_eq!(c.card_stat("control_refused"), 0);
    let told: Vec<Option<String>> = idle.iter().map(closed_with).collect();
    // The longest idle went first, each told why.
    for (i, why) in told.iter().enumerate() {
        match why {
            Some(e) if i < 10 => assert!(e.contains("make room"), "{e}"),
            None if i >= 10 => {}
            _ => panic!("connection {i}: {why:?}"),
        }
    }
    let (code, _, stderr) = vnicctl(&socket, &["list"]);
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn with_every_slot_held_by_subscribers_a_newcomer_is_told_why() {
    let vnicd = Vnicd::start(&["--vfs", "1"]);
    let socket = control_socket(&vnicd);
    let mut subscribers: Vec<Ctl> = (0..MAX_CLIENTS).map(|_| Ctl::subscribe(&vnicd)).collect();
    let newcomer = UnixStream::connect(&socket).unwrap();
    newcomer
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(&newcomer).read_line(&mut line).unwrap();
    let answer: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(answer["ok"], false, "{answer}");
    let why = answer["error"].as_str().unwrap();
    assert!(why.contains("busy") && why.contains("subscribers"), "{why}");
    assert_eq!((&newcomer).read(&mut [0u8; 16]).unwrap_or(0), 0, "closed");

    let (code, stdout, stderr) = vnicctl(&socket, &["list"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.starts_with("vnicctl: control socket busy: "),
        "{stderr}"
    );
    assert!(!stderr.contains("reset by peer"), "{stderr}");

    // A subscriber leaves: its slot takes a client, and the others still
    // get their events.
    drop(subscribers.pop());
    let mut refused = 2;
    let (mut c, stats) = loop {
        // vnicd may take this newcomer before it sees the hang-up (in the
        // accept loop that refused vnicctl): then it is refused too.
        let mut c = Ctl::connect(&vnicd);
        let _ = c.writer.write_all(b"{\"op\":\"stats\"}\n");
        let answer = c.line();
        if answer["ok"] == true {
            break (c, answer);
        }
        assert!(answer["error"].as_str().unwrap().contains("busy"));
        refused += 1;
        assert!(refused < 10, "still refused");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(stats["result"]["card"]["control_refused"], refused);
    c.ok(json!({"op": "set-link", "function": "vf0", "state": "down"}));
    for s in &mut subscribers {
        let e = s.next_event("link-changed", Duration::from_secs(10));
        assert_eq!(e["function"], "vf0");
    }
}

#[test]
fn a_client_that_sends_no_request_is_closed_after_the_timeout_and_quiet_ones_are_not() {
    let vnicd = Vnicd::start(&["--vfs", "1", "--control-timeout-ms", "1000"]);
    let socket = control_socket(&vnicd);
    let start = Instant::now();
    let silent = UnixStream::connect(&socket).unwrap();
    let mut partial = UnixStream::connect(&socket).unwrap();
    partial.write_all(b"{\"op\":").unwrap();
    let mut talker = Ctl::connect(&vnicd);
    talker.ok(json!({"op": "list"}));
    let mut subscriber = Ctl::subscribe(&vnicd);
    for s in [&silent, &partial] {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut line = String::new();
        BufReader::new(s).read_line(&mut line).unwrap();
        let answer: Value = serde_json::from_str(&line).unwrap();
        let why = answer["error"].as_str().unwrap();
        assert!(why.contains("no request within 1 s"), "{why}");
        assert_eq!(s.try_clone().unwrap().read(&mut [0u8; 16]).unwrap_or(0), 0);
    }
    let waited = start.elapsed();
    assert!(waited >= Duration::from_millis(900), "{waited:?}");
    assert!(waited < Duration::from_secs(5), "{waited:?}");
    // Past twice the timeout, a client that sent a request and a
    // subscriber are still served.
    std::thread::sleep(Duration::from_millis(2200).saturating_sub(start.elapsed()));
    talker.ok(json!({"op": "set-link", "function": "vf0", "state": "down"}));
    let e = subscriber.next_event("link-changed", Duration::from_secs(10));
    assert_eq!(e["up"], false);
    assert_eq!(talker.card_stat("control_timed_out"), 2);
}

#[test]
fn a_client_pipelining_5000_requests_while_reading_gets_every_answer_in_order() {
    let vnicd = Vnicd::start(&["--vfs", "4"]);
    let stream = UnixStream::connect(control_socket(&vnicd)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    // 5000 lists, and after every 100th a request whose (error) answer
    // carries its number, to check the order.
    let writer = std::thread::spawn(move || {
        let mut all = Vec::new();
        for n in 0..50 {
            all.extend_from_slice(&b"{\"op\":\"list\"}\n".repeat(100));
            all.extend_from_slice(
                format!("{{\"op\":\"show\",\"function\":\"m{n}\"}}\n").as_bytes(),
            );
        }
        w.write_all(&all)
    });
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let mut bytes = 0;
    for n in 0..50 {
        for _ in 0..100 {
            line.clear();
            bytes += reader.read_line(&mut line).expect("a list answer");
            assert!(line.starts_with("{\"ok\":true,\"result\":[{"), "{line}");
            assert!(line.contains("\"name\":\"vf3\""), "{line}");
        }
        line.clear();
        reader.read_line(&mut line).expect("a marker answer");
        let marker: Value = serde_json::from_str(&line).expect("a JSON answer");
        let e = marker["error"].as_str().unwrap_or_default();
        assert!(e.contains(&format!("\"m{n}\"")), "answer {n}: {line}");
    }
    writer.join().unwrap().expect("every request written");
    assert!(
        bytes > 4 * 1024 * 1024,
        "more than MAX_PENDING_BYTES: {bytes}"
    );
    assert!(!vnicd.log_text().contains("does not read"));
}

#[test]
fn a_client_that_shuts_down_its_sending_side_still_gets_every_answer() {
    let vnicd = Vnicd::start(&["--vfs", "4"]);
    let mut stream = UnixStream::connect(control_socket(&vnicd)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    // More answers than the card holds before it stops reading.
    let requests = b"{\"op\":\"export\"}\n".repeat(300);
    let mut w = stream.try_clone().unwrap();
    let writer = std::thread::spawn(move || {
        w.write_all(&requests)?;
        w.shutdown(std::net::Shutdown::Write)
    });
    let mut answers = Vec::new();
    stream
        .read_to_end(&mut answers)
        .expect("answers, then the end");
    writer.join().unwrap().expect("requests sent");
    assert!(answers.len() > 256 * 1024, "{} bytes", answers.len());
    let lines: Vec<&[u8]> = answers.split(|&b| b == b'\n').collect();
    assert_eq!(lines.len(), 301, "300 answers and nothing after the last");
    assert!(lines[..300].iter().all(|l| l.starts_with(b"{\"ok\":true")));
}

#[test]
fn a_control_client_that_never_reads_is_dropped_and_stalls_nothing() {
    let vnicd = Vnicd::start(&["--vfs", "4", "--control-timeout-ms", "2000"]);
    let hog = UnixStream::connect(control_socket(&vnicd)).unwrap();
    let mut w = hog.try_clone().unwrap();
    // Thousands of exports (several KiB each), answers never read.
    let writer = std::thread::spawn(move || {
        let line = b"{\"op\":\"export\"}\n".repeat(256);
        for _ in 0..400 {
            if w.write_all(&line).is_err() {
                return true;
            }
        }
        false
    });
    let mut c = Ctl::connect(&vnicd);
    let start = Instant::now();
    for _ in 0..20 {
        assert_eq!(c.call(json!({"op": "list"}))["ok"], true);
    }
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "the card stayed responsive"
    );
    wait_for("the hog's disconnection", Duration::from_secs(20), || {
        c.card_stat("control_not_reading") == 1
    });
    assert!(vnicd.log_text().contains("does not read its answers"));
    assert!(writer.join().unwrap(), "the hog was cut off mid-write");
    let mut sink = Vec::new();
    let mut r = hog;
    r.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = r.read_to_end(&mut sink);
    assert!(sink.len() < 8 * 1024 * 1024, "{} bytes", sink.len());
    assert_eq!(c.call(json!({"op": "list"}))["ok"], true);
}

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn vnicd_applies_a_configuration_file_at_start_and_refuses_a_bad_one() {
    let dir = TempDir::new("cfg");
    let good = write(
        &dir.0,
        "good.json",
        r#"{"card":{"vfs":3,"queue_pairs":4},"num_vfs":2,
            "functions":[{"name":"vf1","vnics":[{"mac":"02:00:00:00:01:01"},{},{"vlan":7}],
                          "tx_rate":{"avg_kbps":20000,"burst_bytes":65536},"trust":true}],
            "fdb":[{"mac":"02:00:00:00:0f:0f","function":"vf0","vnic":1}]}"#,
    );
    let vnicd = Vnicd::start(&["--config", good.to_str().unwrap()]);
    assert!(
        vnicd.ready_line.contains("3 VFs, 4 queue pairs"),
        "{}",
        vnicd.ready_line
    );
    let mut c = Ctl::connect(&vnicd);
    let vf1 = c.ok(json!({"op": "show", "function": "vf1"}));
    assert_eq!(vf1["vnics"].as_array().unwrap().len(), 3);
    assert_eq!(vf1["vnics"][0]["mac"], "02:00:00:00:01:01");
    assert_eq!(vf1["vnics"][2]["vlan"], 7);
    assert_eq!(vf1["tx_rate"]["avg_kbps"], 20000);
    assert_eq!(vf1["trust"], true);
    assert!(!vnicd.socket("vf2").exists(), "NumVFs 2");
    let exported = c.ok(json!({"op": "export"}));
    // The export, applied at start of another vnicd, gives the same card.
    let again = write(&dir.0, "again.json", &exported.to_string());
    let second = Vnicd::start(&["--config", again.to_str().unwrap()]);
    let mut c2 = Ctl::connect(&second);
    assert_eq!(c2.ok(json!({"op": "export"})), exported);

    let bad = write(
        &dir.0,
        "bad.json",
        r#"{"functions":[{"name":"vf0","vnics":[{"mac":"01:00:5e:00:00:01"}]}]}"#,
    );
    let out = Command::new(vnicd_binary())
        .arg("--socket-dir")
        .arg(dir.0.join("s"))
        .arg("--config")
        .arg(&bad)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a usable unicast"), "{err}");
}

/// Permission bits of a file.
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o7777
}

#[test]
fn sockets_are_owner_only_whatever_the_umask_and_so_are_vfs_enabled_later() {
    // umask 000 used to leave every socket 0777: any local user could
    // drive the card.
    let vnicd = Vnicd::start_with_umask(&["--vfs", "2"], Some(0o000));
    let dir = vnicd.socket_dir();
    assert_eq!(mode(&dir), 0o700, "socket directory");
    for f in ["pf", "vf0", "vf1"] {
        assert_eq!(mode(&vnicd.socket(f)), 0o600, "{f}.sock");
    }
    assert_eq!(mode(&dir.join("control.sock")), 0o600, "control.sock");
    let mut c = Ctl::connect(&vnicd);
    c.ok(json!({"op": "set-num-vfs", "count": 1}));
    assert!(!vnicd.socket("vf1").exists(), "vf1 disabled");
    c.ok(json!({"op": "set-num-vfs", "count": 2}));
    assert_eq!(mode(&vnicd.socket("vf1")), 0o600, "vf1.sock enabled again");
    RawClient::negotiated(&vnicd.socket("vf1"));
}

#[test]
fn socket_mode_and_group_open_the_function_sockets_to_a_group() {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: getegid(2) has no preconditions and cannot fail.
    let gid = unsafe { libc::getegid() };
    let group = gid.to_string();
    let args = [
        "--vfs",
        "1",
        "--socket-mode",
        "0660",
        "--socket-group",
        &group,
    ];
    // A umask that would take the group's bits away.
    let vnicd = Vnicd::start_with_umask(&args, Some(0o077));
    let dir = vnicd.socket_dir();
    assert_eq!(mode(&dir), 0o710, "the group may reach the sockets");
    assert_eq!(std::fs::metadata(&dir).unwrap().gid(), gid);
    for f in ["pf", "vf0"] {
        let sock = vnicd.socket(f);
        assert_eq!(mode(&sock), 0o660, "{f}.sock");
        assert_eq!(std::fs::metadata(&sock).unwrap().gid(), gid, "{f}.sock");
    }
    assert_eq!(
        mode(&dir.join("control.sock")),
        0o600,
        "management stays owner-only"
    );
}

#[test]
fn bad_socket_modes_and_groups_are_usage_errors() {
    let dir = TempDir::new("perm");
    for bad in [
        ["--socket-mode", "0999"],
        ["--socket-mode", "4777"],
        ["--socket-group", "no-such-group-vnic"],
    ] {
        let out = Command::new(vnicd_binary())
            .arg("--socket-dir")
            .arg(dir.0.join("sock"))
            .args(bad)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{bad:?}");
        assert!(!dir.0.join("sock").exists(), "{bad:?}: nothing created");
    }
}

/// A process this test spawned, killed (by its PID) and reaped on drop.
struct Spawned(std::process::Child);

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Runs vnicd on socket directory `sockets` with `args`, expecting it to
/// stop by itself within 10 s: (exit code, what it logged).
fn vnicd_refused(sockets: &Path, args: &[&str]) -> (Option<i32>, String) {
    let log = sockets.with_extension("refused.log");
    let mut child = Spawned(
        Command::new(vnicd_binary())
            .arg("--socket-dir")
            .arg(sockets)
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "vnicd kept running");
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.code(), std::fs::read_to_string(&log).unwrap())
}

/// Starts vnicd on socket directory `sockets` and waits for its ready line.
fn vnicd_serving(sockets: &Path, args: &[&str]) -> Spawned {
    let mut child = Spawned(
        Command::new(vnicd_binary())
            .arg("--socket-dir")
            .arg(sockets)
            .args(args)
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap(),
    );
    let stdout = BufReader::new(child.0.stdout.take().unwrap());
    let ready = stdout
        .lines()
        .map_while(Result::ok)
        .any(|l| l.starts_with("vnicd: ready"));
    assert!(ready, "vnicd on {} did not get ready", sockets.display());
    child
}

#[test]
fn a_second_vnicd_on_a_served_directory_refuses_and_the_first_stays_reachable() {
    let vnicd = Vnicd::start(&["--vfs", "1"]);
    let dir = vnicd.socket_dir();
    let (code, log) = vnicd_refused(&dir, &["--vfs", "1"]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("is served by another vnicd")
            && log.contains(&format!("(pid {})", vnicd.pid())),
        "{log}"
    );
    // Its sockets are still the first vnicd's: nothing unlinked or rebound.
    for f in ["pf", "vf0"] {
        RawClient::negotiated(&vnicd.socket(f));
    }
    let mut c = Ctl::connect(&vnicd);
    assert_eq!(c.ok(json!({"op": "list"})).as_array().unwrap().len(), 2);
}

#[test]
fn stale_sockets_are_replaced_and_one_another_process_listens_on_is_refused() {
    use std::os::unix::net::UnixListener;
    // A vnicd killed outright leaves its sockets behind, with nobody
    // listening: the next one on the directory replaces them.
    let mut crashed = Vnicd::start(&["--vfs", "1"]);
    let dir = crashed.socket_dir();
    // SAFETY: kill(2) on the PID of the vnicd this test started and has
    // not reaped.
    unsafe { libc::kill(crashed.pid() as i32, libc::SIGKILL) };
    wait_for("vnicd killed", Duration::from_secs(10), || {
        crashed.exited().is_some()
    });
    assert!(dir.join("pf.sock").exists() && dir.join("control.sock").exists());
    let _next = vnicd_serving(&dir, &["--vfs", "1"]);
    RawClient::negotiated(&dir.join("vf0.sock"));
    let mut c = UnixStream::connect(dir.join("control.sock")).unwrap();
    c.write_all(b"{\"op\":\"list\"}\n").unwrap();
    let mut answer = String::new();
    BufReader::new(&c).read_line(&mut answer).unwrap();
    assert!(answer.contains("\"ok\":true"), "{answer}");

    // Something else listening on a socket path: refused, and left alone.
    let other = TempDir::new("inuse");
    let sockets = other.0.join("sock");
    std::fs::create_dir(&sockets).unwrap();
    let taken = UnixListener::bind(sockets.join("vf0.sock")).unwrap();
    let (code, log) = vnicd_refused(&sockets, &["--vfs", "1"]);
    assert_eq!(code, Some(1), "{log}");
    assert!(
        log.contains("vf0.sock") && log.contains("another process is listening on it"),
        "{log}"
    );
    let _client = UnixStream::connect(sockets.join("vf0.sock")).unwrap();
    assert!(taken.accept().is_ok(), "the other process keeps its socket");
    assert!(
        !sockets.join("pf.sock").exists(),
        "vnicd removed what it bound"
    );
}

#[test]
fn a_vfio_user_client_at_the_control_socket_gets_an_error_reply_and_a_log_line() {
    let vnicd = Vnicd::start(&["--vfs", "1"]);
    let mut qemu = RawClient::connect(&control_socket(&vnicd));
    let mut body = vec![0, 0, 0, 0];
    body.extend_from_slice(br#"{"capabilities":{"max_msg_fds":8}}"#);
    body.push(0);
    let r = qemu.call(vnic_tests::VERSION, 0, &body, &[]);
    assert!(r.is_error(), "{r:?}");
    // QEMU prints it as "version reply: Protocol wrong type for socket".
    assert_eq!(r.error, libc::EPROTOTYPE as u32);
    let mut rest = Vec::new();
    assert_eq!(
        qemu.stream.read_to_end(&mut rest).unwrap(),
        0,
        "then closed"
    );
    wait_for("the log line", Duration::from_secs(5), || {
        vnicd
            .log_text()
            .contains("control socket: a client sent a vfio-user message")
    });
    // Text that is no JSON is still a bad request on a usable connection.
    let mut c = Ctl::connect(&vnicd);
    c.send_raw(b"this is not json\n");
    assert!(c.line()["error"].as_str().unwrap().contains("bad request"));
    assert_eq!(c.call(json!({"op": "list"}))["ok"], true);
}

#[test]
fn vnicctl_at_a_function_socket_says_so_and_vnicctl_gives_up_after_its_timeout() {
    let vnicd = Vnicd::start(&["--vfs", "1"]);
    let started = Instant::now();
    let (code, stdout, stderr) = vnicctl(&vnicd.socket("pf"), &["list"]);
    assert_eq!(code, Some(1), "{stdout}{stderr}");
    assert!(
        stderr.starts_with("vnicctl: pf.sock is the vfio-user socket of function pf"),
        "{stderr}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered at once"
    );
    // A socket that never answers: vnicctl's --timeout, a clear message,
    // exit status 3.
    let dir = TempDir::new("silent");
    let silent = std::os::unix::net::UnixListener::bind(dir.0.join("silent.sock")).unwrap();
    let started = Instant::now();
    let (code, _, stderr) = vnicctl(&dir.0.join("silent.sock"), &["--timeout", "0.5", "list"]);
    assert_eq!(code, Some(3), "{stderr}");
    assert!(
        stderr.contains("no answer from") && stderr.contains("within 0.5 s"),
        "{stderr}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    drop(silent);
}
