//! The card's physical port with real vnicd processes (docs/vxlan.md,
//! "Uplink backends"): two vnicd "hosts" joined by the UDP uplink pass
//! unicast and broadcast frames between fake guests, with uplink counters
//! and a capture of the port; a TAP uplink carries frames to and from the
//! host's network stack.

use std::net::UdpSocket;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use vnic_tests::ctl::Ctl;
use vnic_tests::guest::{frame, Guest};
use vnic_tests::{wait_for, TempDir, Vnicd};

/// Two free UDP ports on the loopback (bound, read back, released).
fn two_ports() -> (String, String) {
    let a = UdpSocket::bind("127.0.0.1:0").unwrap();
    let b = UdpSocket::bind("127.0.0.1:0").unwrap();
    (
        a.local_addr().unwrap().to_string(),
        b.local_addr().unwrap().to_string(),
    )
}

/// MAC of card `card`'s function `f` (1 = vf0) queue pair `q`.
fn mac_on(card: u8, f: u8, q: u8) -> [u8; 6] {
    [2, 0x76, 0x6e, card, f, q]
}

#[test]
fn two_vnicd_hosts_joined_by_the_udp_uplink_exchange_frames() {
    let dir = TempDir::new("uplink");
    let (pa, pb) = two_ports();
    let a_up = format!("udp:{pa},{pb}");
    let b_up = format!("udp:{pb},{pa}");
    let host_a = Vnicd::start(&["--vfs", "1", "--uplink", &a_up]);
    let host_b = Vnicd::start(&["--vfs", "1", "--card-id", "1", "--uplink", &b_up]);
    let mut ctl_a = Ctl::connect(&host_a);
    let mut ctl_b = Ctl::connect(&host_b);
    let pcap = dir.0.join("uplink.pcap");
    ctl_a.ok(json!({"op": "capture-start", "path": pcap, "function": "uplink"}));

    let mut ga = Guest::attach(&host_a, "vf0", 2);
    let gb = Guest::attach(&host_b, "vf0", 2);
    // A → B: unknown on A's card, so out of A's port into B's, where B's
    // vNIC 1 owns the address.
    let to_b = frame(mac_on(1, 1, 1), mac_on(0, 1, 0), 400);
    ga.send(std::slice::from_ref(&to_b));
    wait_for("B got A's frame", Duration::from_secs(5), || {
        gb.received(1) == vec![to_b.clone()]
    });
    // A broadcast reaches A's other vNIC and both of B's.
    let bcast = frame([0xff; 6], mac_on(0, 1, 0), 100);
    ga.send(std::slice::from_ref(&bcast));
    wait_for("B got the broadcast", Duration::from_secs(5), || {
        gb.received(0) == vec![bcast.clone()] && gb.received(1).len() == 2
    });
    assert_eq!(ga.received(1), vec![bcast]);

    let a = &ctl_a.ok(json!({"op": "stats"}))["card"];
    let b = &ctl_b.ok(json!({"op": "stats"}))["card"];
    assert_eq!(a["uplink_tx_frames"], 2, "{a}");
    assert_eq!(b["uplink_rx_frames"], 2, "{b}");
    assert_eq!(b["uplink_tx_frames"], 0, "B sends nothing back: {b}");
    let cap = ctl_a.ok(json!({"op": "capture-stop"}));
    assert_eq!(cap["frames"], 2, "{cap}");
    assert_eq!(cap["function"], "uplink");
}

/// A packet socket on interface `ifname`: what the host's stack sees of
/// a TAP device.
fn packet_socket(ifname: &str) -> OwnedFd {
    let proto = (libc::ETH_P_ALL as u16).to_be();
    // SAFETY: plain socket(2); the fd is owned at once.
    let fd = unsafe { libc::socket(libc::AF_PACKET, libc::SOCK_RAW, proto as i32) };
    assert!(
        fd >= 0,
        "AF_PACKET socket: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a new, valid descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let name = std::ffi::CString::new(ifname).unwrap();
    // SAFETY: a NUL-terminated name.
    let index = unsafe { libc::if_nametoindex(name.as_ptr()) };
    assert_ne!(index, 0, "no interface {ifname}");
    // SAFETY: sockaddr_ll is plain data; zeroes are valid.
    let mut sa: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
    sa.sll_family = libc::AF_PACKET as u16;
    sa.sll_protocol = proto;
    sa.sll_ifindex = index as i32;
    // SAFETY: sa is a sockaddr_ll of the size given.
    let rc = unsafe {
        libc::bind(
            fd.as_raw_fd(),
            &sa as *const libc::sockaddr_ll as *const libc::sockaddr,
            std::mem::size_of::<libc::sockaddr_ll>() as u32,
        )
    };
    assert_eq!(rc, 0, "bind: {}", std::io::Error::last_os_error());
    let tv = libc::timeval {
        tv_sec: 5,
        tv_usec: 0,
    };
    // SAFETY: SO_RCVTIMEO takes a timeval.
    unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVTIMEO,
            &tv as *const libc::timeval as *const libc::c_void,
            std::mem::size_of::<libc::timeval>() as u32,
        );
    }
    fd
}

fn ip(args: &[&str]) {
    let st = Command::new("ip").args(args).status().unwrap();
    assert!(st.success(), "ip {args:?}");
}

#[test]
fn a_tap_uplink_carries_frames_to_and_from_the_host() {
    if !std::path::Path::new("/dev/net/tun").exists() {
        println!("skipped: no /dev/net/tun on this machine");
        return;
    }
    let ifname = format!("vnt{}", std::process::id() % 100_000);
    let vnicd = Vnicd::start(&["--vfs", "1", "--uplink", &format!("tap:{ifname}")]);
    ip(&["link", "set", &ifname, "up"]);
    let sock = packet_socket(&ifname);
    let mut g = Guest::attach(&vnicd, "vf0", 2);
    let out = frame([2, 0, 0, 0, 0, 0x42], mac_on(0, 1, 0), 300);
    g.send(std::slice::from_ref(&out));
    let mut buf = [0u8; 2048];
    let got = loop {
        // SAFETY: reading into a buffer of the length given.
        let n = unsafe { libc::recv(sock.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0) };
        assert!(
            n > 0,
            "nothing on {ifname}: {}",
            std::io::Error::last_os_error()
        );
        // The host's stack may send its own frames (IPv6 DAD, ...).
        if buf[..n as usize] == out[..] {
            break n as usize;
        }
    };
    assert_eq!(got, out.len());
    // And from the host into the guest's vNIC 1.
    let inbound = frame(mac_on(0, 1, 1), [2, 0, 0, 0, 0, 0x42], 200);
    // SAFETY: writing a buffer of the length given.
    let n = unsafe { libc::send(sock.as_raw_fd(), inbound.as_ptr().cast(), inbound.len(), 0) };
    assert_eq!(n as usize, inbound.len());
    wait_for(
        "the guest got the host's frame",
        Duration::from_secs(5),
        || g.received(1).contains(&inbound),
    );
    drop(vnicd);
    // vnicd made the TAP (not persistent): it goes with vnicd.
    wait_for("the TAP is gone", Duration::from_secs(5), || {
        !std::path::Path::new(&format!("/sys/class/net/{ifname}")).exists()
    });
}
