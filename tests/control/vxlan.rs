//! The uplink and VxLAN offload of real vnicd processes (docs/vxlan.md),
//! with fake guests (`Guest`) on their VFs and the test playing the host
//! agent over the control socket:
//!
//! - two vnicd joined by a UDP uplink are two hosts on one wire: frames of
//!   VLAN VFs cross as they are; frames of VxLAN VFs cross once the "agent"
//!   has answered the first miss and the first punt, and then without it;
//! - a TAP uplink reaches the host kernel: ARP through the VLAN path, and
//!   through Linux's own `vxlan` device (interop) in a network namespace.

use std::net::{Ipv4Addr, UdpSocket};
use std::process::Command;
use std::time::Duration;

use serde_json::json;
use vnic_tests::ctl::{vxlan_card_on_wire, Ctl};
use vnic_tests::guest::{
    card_mac as mac, free_udp_ports as free_ports, tagged_frame as frame, Guest,
};
use vnic_tests::{wait_for, Vnicd};

const VNI: u32 = 100;
const WAIT: Duration = Duration::from_secs(10);

fn mac_text(m: [u8; 6]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Two vnicd joined by a UDP wire, card ids 1 and 2, two VFs each.
fn two_hosts() -> (Vnicd, Vnicd) {
    let (pa, pb) = free_ports();
    let a = Vnicd::start(&[
        "--vfs",
        "2",
        "--card-id",
        "1",
        "--uplink",
        &format!("udp:127.0.0.1:{pa},127.0.0.1:{pb}"),
    ]);
    let b = Vnicd::start(&[
        "--vfs",
        "2",
        "--card-id",
        "2",
        "--uplink",
        &format!("udp:127.0.0.1:{pb},127.0.0.1:{pa}"),
    ]);
    (a, b)
}

#[test]
fn vlan_vf_frames_cross_a_udp_wire_between_two_vnicd() {
    let (va, vb) = two_hosts();
    let mut ga = Guest::attach(&va, "vf0", 2);
    let mut gb = Guest::attach(&vb, "vf0", 2);
    let (a0, b0) = (mac(1, 1, 0), mac(2, 1, 0));
    let there = frame(b0, a0, 1, 200);
    ga.send(std::slice::from_ref(&there));
    wait_for("B got A's frame", WAIT, || {
        gb.received(0) == vec![there.clone()]
    });
    let back = frame(a0, b0, 2, 1500);
    gb.send(std::slice::from_ref(&back));
    wait_for("A got B's answer", WAIT, || {
        ga.received(0) == vec![back.clone()]
    });
    // A broadcast reaches both vNICs of the other side (and the sender's
    // neighbour on its own card).
    let bc = frame([0xff; 6], a0, 3, 60);
    ga.send(std::slice::from_ref(&bc));
    wait_for("B's vNICs got the broadcast", WAIT, || {
        gb.received(1) == vec![bc.clone()] && gb.received(0).len() == 2
    });
    assert_eq!(ga.received(1), vec![bc.clone()]);
    let mut ca = Ctl::connect(&va);
    let mut cb = Ctl::connect(&vb);
    assert_eq!(ca.card_stat("uplink_tx_frames"), 2);
    assert_eq!(cb.card_stat("uplink_rx_frames"), 2);
    assert_eq!(cb.card_stat("uplink_tx_frames"), 1);
    // Unknown unicast from the wire is dropped, not sent back.
    ga.send(&[frame([2, 0, 0, 0, 0, 0x99], a0, 4, 60)]);
    wait_for("B dropped it", WAIT, || {
        cb.card_stat("uplink_rx_dropped") == 1
    });
    assert_eq!(cb.card_stat("uplink_tx_frames"), 1);
}

#[test]
fn vxlan_vfs_need_the_host_for_the_first_frame_only() {
    let (va, vb) = two_hosts();
    let (mut ca, mut cb) = (Ctl::connect(&va), Ctl::connect(&vb));
    let vtep_a = ("02:76:6e:ff:00:01", "10.1.0.1");
    let vtep_b = ("02:76:6e:ff:00:02", "10.1.0.2");
    for (ctl, (m, ip)) in [(&mut ca, vtep_a), (&mut cb, vtep_b)] {
        ctl.ok(json!({"op": "set-vtep", "mac": m, "ip": ip}));
        ctl.ok(json!({"op": "set-attr", "function": "vf1", "vni": VNI}));
    }
    assert_eq!(ca.ok(json!({"op": "show", "function": "vf1"}))["vni"], VNI);
    let mut ga = Guest::attach(&va, "vf1", 2);
    let mut gb = Guest::attach(&vb, "vf1", 2);
    // VLAN-attribute vf0 of B must see none of this.
    let gb_vlan = Guest::attach(&vb, "vf0", 1);
    let (mut ea, mut eb) = (Ctl::subscribe(&va), Ctl::subscribe(&vb));
    let (a0, b0) = (mac(1, 2, 0), mac(2, 2, 0));

    // 1. A's first frame misses: a request, nothing on the wire.
    let first = frame(b0, a0, 1, 300);
    ga.send(std::slice::from_ref(&first));
    let miss = ea.next_event("vxlan-miss", WAIT);
    assert_eq!(miss["vni"], VNI);
    assert_eq!(miss["function"], "vf1");
    assert_eq!(miss["vnic"], 0);
    assert_eq!(miss["frame"], hex(&first));
    assert_eq!(ca.card_stat("uplink_tx_frames"), 0);
    assert_eq!(ca.card_stat("vxlan_requests"), 1);

    // 2. The agent of A installs the entry and returns the frame.
    let added = ca.ok(json!({"op": "vxlan-add", "vni": VNI, "mac": mac_text(b0),
        "remote_ip": vtep_b.1, "remote_mac": vtep_b.0}));
    assert_eq!(added, json!({"tunnel": 0, "evicted": []}));
    let sent = ca.ok(json!({"op": "vxlan-send", "vni": VNI, "frame": miss["frame"]}));
    assert_eq!(sent, json!({"sent": true}));

    // 3. B does not know A's vNIC: the frame is punted to B's agent.
    let punt = eb.next_event("vxlan-punt", WAIT);
    assert_eq!(punt["vni"], VNI);
    assert_eq!(punt["reason"], "unknown");
    assert_eq!(punt["outer_src_ip"], vtep_a.1);
    assert_eq!(punt["outer_src_mac"], vtep_a.0);
    assert_eq!(punt["frame"], hex(&first));
    assert!(gb.received(0).is_empty());
    cb.ok(json!({"op": "vxlan-add", "vni": VNI, "mac": mac_text(a0),
        "remote_ip": punt["outer_src_ip"], "remote_mac": punt["outer_src_mac"]}));
    let delivered = cb.ok(json!({"op": "vxlan-deliver", "vni": VNI, "frame": punt["frame"]}));
    assert_eq!(delivered, json!({"delivered": 1}));
    wait_for("B's guest got the first frame", WAIT, || {
        gb.received(0) == vec![first.clone()]
    });

    // 4. From now on, both directions without the host.
    let mut to_b = vec![first];
    let mut to_a = Vec::new();
    for i in 0..5u8 {
        let f = frame(a0, b0, 10 + i, 100 + 200 * i as usize);
        gb.send(std::slice::from_ref(&f));
        to_a.push(f);
        let f = frame(b0, a0, 20 + i, 1400);
        ga.send(std::slice::from_ref(&f));
        to_b.push(f);
    }
    wait_for("A got B's frames", WAIT, || ga.received(0) == to_a);
    wait_for("B got A's frames", WAIT, || gb.received(0) == to_b);
    assert!(ea
        .vxlan_requests_within(Duration::from_millis(300))
        .is_empty());
    assert!(eb
        .vxlan_requests_within(Duration::from_millis(100))
        .is_empty());
    assert_eq!(ca.card_stat("vxlan_requests"), 1);
    assert_eq!(cb.card_stat("vxlan_punts"), 1);
    assert_eq!(ca.card_stat("vxlan_decapsulated"), 5);
    assert_eq!(cb.card_stat("vxlan_decapsulated"), 5);
    assert_eq!(ca.card_stat("vxlan_encapsulated"), 6);
    let list = ca.ok(json!({"op": "vxlan-list"}));
    assert_eq!(list["macs"][0]["uses"], 11, "6 sent, 5 received: {list}");
    assert_eq!(list["tunnels"][0]["remote_ip"], vtep_b.1);
    assert!(gb_vlan.received(0).is_empty(), "VLAN VFs saw nothing");

    // 5. Back to VLAN: the VF leaves the VNI; B's frames for it are then
    // for a VNI A no longer has.
    ca.ok(json!({"op": "set-attr", "function": "vf1", "vni": null}));
    gb.send(&[frame(a0, b0, 30, 60)]);
    wait_for("A counted an unknown VNI", WAIT, || {
        ca.card_stat("vxlan_unknown_vni") == 1
    });
    assert_eq!(ga.received(0).len(), 5);
}

// ---------------------------------------------------------------- TAP

/// Runs `ip ARGS` (in network namespace `ns` if given); panics with its
/// output if it fails.
fn ip(ns: Option<&str>, args: &[&str]) {
    let mut cmd = Command::new("ip");
    if let Some(ns) = ns {
        cmd.args(["netns", "exec", ns, "ip"]);
    }
    let out = cmd.args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?} in {ns:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn sysctl(ns: &str, setting: &str) {
    let _ = Command::new("ip")
        .args(["netns", "exec", ns, "sysctl", "-qw", setting])
        .status();
}

/// A network namespace, deleted (with the devices in it) on drop.
struct Netns(String);

impl Netns {
    fn new(name: String) -> Netns {
        let _ = Command::new("ip").args(["netns", "del", &name]).output();
        ip(None, &["netns", "add", &name]);
        Netns(name)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).output();
    }
}

/// Why the TAP test cannot run here, if it cannot.
fn tap_unavailable() -> Option<String> {
    if !std::path::Path::new("/dev/net/tun").exists() {
        return Some("/dev/net/tun is missing".into());
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Some("creating TAP devices and namespaces needs root".into());
    }
    match Command::new("ip").arg("-V").output() {
        Ok(o) if o.status.success() => None,
        _ => Some("the ip command (iproute2) is missing".into()),
    }
}

/// An ARP request from (`sha`, `spa`) for `tpa`, to `dst`.
fn arp_request(dst: [u8; 6], sha: [u8; 6], spa: Ipv4Addr, tpa: Ipv4Addr) -> Vec<u8> {
    let mut f = dst.to_vec();
    f.extend_from_slice(&sha);
    f.extend_from_slice(&[0x08, 0x06, 0, 1, 0x08, 0, 6, 4, 0, 1]);
    f.extend_from_slice(&sha);
    f.extend_from_slice(&spa.octets());
    f.extend_from_slice(&[0; 6]);
    f.extend_from_slice(&tpa.octets());
    f.resize(60, 0);
    f
}

/// The sender MAC of an ARP reply for `tpa`'s question about `spa`, if
/// `f` is one.
fn arp_reply_from(f: &[u8], spa: Ipv4Addr) -> Option<[u8; 6]> {
    let is_reply = f.len() >= 42 && f[12..14] == [0x08, 0x06] && f[20..22] == [0, 2];
    (is_reply && f[28..32] == spa.octets()).then(|| f[22..28].try_into().unwrap())
}

fn arp_replies(g: &Guest, q: u16, from: Ipv4Addr) -> Vec<[u8; 6]> {
    g.received(q)
        .iter()
        .filter_map(|f| arp_reply_from(f, from))
        .collect()
}

#[test]
fn a_tap_uplink_reaches_the_host_kernel_and_its_vxlan_device() {
    if let Some(why) = tap_unavailable() {
        eprintln!("skipped: {why}");
        return;
    }
    let pid = std::process::id();
    let tap = format!("vxt{}", pid % 100_000);
    let vnicd = Vnicd::start(&[
        "--vfs",
        "2",
        "--card-id",
        "3",
        "--uplink",
        &format!("tap:{tap}"),
    ]);
    // The kernel side lives in its own namespace, so the test touches
    // nothing of the host's network.
    let ns = Netns::new(format!("vnicvx{pid}"));
    let n = Some(ns.0.as_str());
    sysctl(&ns.0, "net.ipv6.conf.all.disable_ipv6=1");
    sysctl(&ns.0, "net.ipv6.conf.default.disable_ipv6=1");
    ip(None, &["link", "set", &tap, "netns", &ns.0]);
    let tap_mac = "02:aa:00:00:00:02";
    let (host_ip, vtep_ip) = (Ipv4Addr::new(10, 1, 0, 2), Ipv4Addr::new(10, 1, 0, 1));
    let vtep_mac = "02:76:6e:ff:00:01";
    ip(n, &["link", "set", &tap, "address", tap_mac, "up"]);
    ip(n, &["addr", "add", "10.1.0.2/24", "dev", &tap]);
    // The card's VTEP answers no ARP: the host knows its MAC.
    ip(
        n,
        &["neigh", "add", "10.1.0.1", "lladdr", vtep_mac, "dev", &tap],
    );
    ip(
        n,
        &[
            "link", "add", "vx100", "type", "vxlan", "id", "100", "local", "10.1.0.2", "remote",
            "10.1.0.1", "dstport", "4789", "dev", &tap,
        ],
    );
    let vx_mac = [2, 0xbb, 0, 0, 0, 2];
    ip(
        n,
        &["link", "set", "vx100", "address", &mac_text(vx_mac), "up"],
    );
    ip(n, &["addr", "add", "192.168.100.2/24", "dev", "vx100"]);

    let mut ctl = Ctl::connect(&vnicd);
    ctl.ok(json!({"op": "set-vtep", "mac": vtep_mac, "ip": vtep_ip.to_string()}));
    ctl.ok(json!({"op": "set-attr", "function": "vf1", "vni": VNI}));
    let mut plain = Guest::attach(&vnicd, "vf0", 1);
    let mut tenant = Guest::attach(&vnicd, "vf1", 1);
    let mut events = Ctl::subscribe(&vnicd);

    // The VLAN path: a VLAN VF asks the host for its tap address.
    let me = mac(3, 1, 0);
    plain.send(&[arp_request(
        [0xff; 6],
        me,
        Ipv4Addr::new(10, 1, 0, 77),
        host_ip,
    )]);
    wait_for("the host kernel answered through the tap", WAIT, || {
        arp_replies(&plain, 0, host_ip) == vec![[2, 0xaa, 0, 0, 0, 2]]
    });

    // The VxLAN path, both ways through Linux's vxlan device.
    let t = mac(3, 2, 0);
    let (t_ip, vx_ip) = (
        Ipv4Addr::new(192, 168, 100, 1),
        Ipv4Addr::new(192, 168, 100, 2),
    );
    tenant.send(&[arp_request([0xff; 6], t, t_ip, vx_ip)]);
    let miss = events.next_event("vxlan-miss", WAIT);
    assert_eq!(miss["vni"], VNI);
    ctl.ok(
        json!({"op": "vxlan-add", "vni": VNI, "mac": "ff:ff:ff:ff:ff:ff",
        "remote_ip": host_ip.to_string(), "remote_mac": tap_mac}),
    );
    let sent = ctl.ok(json!({"op": "vxlan-send", "vni": VNI, "frame": miss["frame"]}));
    assert_eq!(sent, json!({"sent": true}));
    // Linux took our VxLAN frame, answered the ARP through its own, and
    // the card punts that: it does not know vx100's MAC yet.
    let punt = events.next_event("vxlan-punt", WAIT);
    assert_eq!(punt["outer_src_ip"], host_ip.to_string());
    assert_eq!(punt["outer_src_mac"], tap_mac);
    assert_eq!(punt["reason"], "unknown");
    ctl.ok(
        json!({"op": "vxlan-add", "vni": VNI, "mac": mac_text(vx_mac),
        "remote_ip": punt["outer_src_ip"], "remote_mac": punt["outer_src_mac"]}),
    );
    ctl.ok(json!({"op": "vxlan-deliver", "vni": VNI, "frame": punt["frame"]}));
    wait_for("the tenant got vx100's ARP reply", WAIT, || {
        arp_replies(&tenant, 0, vx_ip) == vec![vx_mac]
    });
    // A unicast ARP request now goes and comes back without the host.
    tenant.send(&[arp_request(vx_mac, t, t_ip, vx_ip)]);
    wait_for("a second reply, by the card alone", WAIT, || {
        arp_replies(&tenant, 0, vx_ip).len() == 2
    });
    assert!(events
        .vxlan_requests_within(Duration::from_millis(200))
        .is_empty());
    assert!(ctl.card_stat("vxlan_decapsulated") >= 1);
    assert!(
        arp_replies(&plain, 0, vx_ip).is_empty(),
        "the VLAN VF saw no tenant traffic"
    );
}

/// A VxLAN frame to `dst_ip` built by the card's own code.
fn vxlan_frame(dst_ip: Ipv4Addr, inner: &[u8]) -> Vec<u8> {
    use vnic::model::Mac;
    use vnic::vxlan::wire::{encapsulate, Outer};
    let outer = Outer {
        dst_mac: Mac([2, 0x76, 0x6e, 0xff, 0, 1]),
        src_mac: Mac([2, 0x76, 0x6e, 0xff, 0, 2]),
        src_ip: Ipv4Addr::new(10, 1, 0, 2),
        dst_ip,
        ident: 1,
        vni: VNI,
    };
    let mut out = Vec::new();
    encapsulate(&outer, inner, &mut out);
    out
}

#[test]
fn hostile_frames_from_the_wire_and_hostile_requests_are_counted_or_refused() {
    // The test is the other end of vnicd's wire.
    let wire = UdpSocket::bind("127.0.0.1:0").unwrap();
    let (mut vnicd, mut ctl, port) = vxlan_card_on_wire(&wire, VNI);
    let g = Guest::attach(&vnicd, "vf0", 1);
    let to = format!("127.0.0.1:{port}");
    let good = vxlan_frame(
        Ipv4Addr::new(10, 1, 0, 1),
        &frame(mac(0, 1, 0), [2, 0, 0, 0, 0, 9], 1, 100),
    );
    let mut sent = 0;
    for n in 0..good.len() {
        wire.send_to(&good[..n], &to).unwrap();
        sent += 1;
    }
    for at in 0..50 {
        let mut f = good.clone();
        f[at] ^= 0xa5;
        wire.send_to(&f, &to).unwrap();
        sent += 1;
    }
    wire.send_to(&vec![0xff; 60_000], &to).unwrap();
    sent += 1;
    wait_for("every datagram read", WAIT, || {
        ctl.card_stat("uplink_rx_frames") == sent
    });
    assert!(vnicd.alive());
    assert!(
        g.received(0).is_empty(),
        "nothing vouched for reached the guest"
    );

    for (bad, why) in [
        (
            json!({"op": "vxlan-send", "vni": VNI, "frame": "abc"}),
            "odd number",
        ),
        (
            json!({"op": "vxlan-send", "vni": VNI, "frame": "zz"}),
            "not a hex digit",
        ),
        (
            json!({"op": "uplink-send", "frame": "00".repeat(9216 + 65)}),
            "longer than 9280",
        ),
        (
            json!({"op": "vxlan-deliver", "vni": 0, "frame": "00".repeat(60)}),
            "VNI 0",
        ),
        (
            json!({"op": "vxlan-add", "vni": 1, "mac": "02:00:00:00:00:01",
                   "remote_ip": "10.0.0.1"}),
            "missing field",
        ),
        (
            json!({"op": "set-attr", "function": "vf0", "vni": -1}),
            "invalid value",
        ),
        (
            json!({"op": "set-vtep", "mac": "02:00:00:00:00:01", "ip": "1.2.3"}),
            "invalid",
        ),
    ] {
        let e = ctl.refused(bad.clone());
        assert!(e.contains(why), "{bad}: {e}");
    }
    // Nearly a megabyte of hex in one request: refused, and the
    // connection still answers.
    let huge = json!({"op": "uplink-send", "frame": "0".repeat(1000 * 1000)});
    assert!(ctl.refused(huge).contains("longer"));
    assert_eq!(ctl.ok(json!({"op": "vxlan-list"}))["capacity"], 1024);
    assert!(vnicd.alive());
}
