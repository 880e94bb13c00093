//! The control socket of a real vnicd: answers and errors, malformed and
//! oversized requests, events, VF enable/disable (sockets and clients), a
//! control client that never reads, and `--config` at start
//! (docs/management.md).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use vnic_tests::ctl::Ctl;
use vnic_tests::{vnicd_binary, RawClient, TempDir, Vnicd};

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

#[test]
fn a_control_client_that_never_reads_is_dropped_and_stalls_nothing() {
    let vnicd = Vnicd::start(&["--vfs", "4"]);
    let hog = UnixStream::connect(vnicd.socket_dir().join("control.sock")).unwrap();
    let mut w = hog.try_clone().unwrap();
    // Thousands of exports (several KiB each), answers never read.
    let writer = std::thread::spawn(move || {
        let line = b"{\"op\":\"export\"}\n".repeat(256);
        for _ in 0..40 {
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
    let cut_off = writer.join().unwrap();
    let mut sink = Vec::new();
    let mut r = hog;
    r.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = r.read_to_end(&mut sink);
    assert!(
        cut_off || vnicd.log_text().contains("does not read its answers"),
        "the hog was disconnected"
    );
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
