//! `vnicctl vxlan-agent` against real vnicd processes (docs/vxlan.md, "The
//! host agent"): two vnicd joined by a UDP uplink, a fake guest on a VxLAN
//! VF of each, and one agent per host. The test never answers a request
//! itself: the agents do, the first frame each way crosses through them,
//! and every later frame without them. Both variants of the agent (A: the
//! card encapsulates the returned frame; B: the agent does).
//!
//! And the agent's other transport (`--pf-netdev`, docs/vxlan.md "The
//! exception queue on the PF"): a TAP device stands for the PF's exception
//! netdev, and the test plays the card on its other end.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::json;
use vnic::model::{Mac, PuntReason, Vtep};
use vnic::uplink::{RecvOutcome, Uplink, UplinkSpec};
use vnic::vxlan::exception::{ExceptionHeader, MsgType};
use vnic::vxlan::table::Remote;
use vnic::vxlan::Vni;
use vnic_tests::ctl::Ctl;
use vnic_tests::guest::{
    card_mac as mac, free_udp_ports as free_ports, tagged_frame as frame, Guest,
};
use vnic_tests::{wait_for, Agent, TempDir, Vnicd};

const VNI: u32 = 100;
const WAIT: Duration = Duration::from_secs(10);
const VTEP_A: (&str, &str) = ("02:76:6e:ff:00:01", "10.1.0.1");
const VTEP_B: (&str, &str) = ("02:76:6e:ff:00:02", "10.1.0.2");

/// Card `id` with VTEP `vtep` and vf1 in VNI 100, on a UDP wire.
fn host(id: u8, local: u16, remote: u16, vtep: (&str, &str)) -> Vnicd {
    let v = Vnicd::start(&[
        "--vfs",
        "2",
        "--card-id",
        &id.to_string(),
        "--uplink",
        &format!("udp:127.0.0.1:{local},127.0.0.1:{remote}"),
    ]);
    let mut ctl = Ctl::connect(&v);
    ctl.ok(json!({"op": "set-vtep", "mac": vtep.0, "ip": vtep.1}));
    ctl.ok(json!({"op": "set-attr", "function": "vf1", "vni": VNI}));
    v
}

fn card_stat(v: &Vnicd, name: &str) -> u64 {
    Ctl::connect(v).ok(json!({"op": "stats"}))["card"][name]
        .as_u64()
        .unwrap_or_else(|| panic!("no card counter {name}"))
}

fn agent(v: &Vnicd, dir: &TempDir, name: &str, peer: (&str, &str), variant: &str) -> Agent {
    let log: PathBuf = dir.0.join(format!("{name}.log"));
    let out: PathBuf = dir.0.join(format!("{name}.out"));
    Agent::start(
        &v.socket_dir().join("control.sock"),
        &[
            "--fdb",
            &format!("00:00:00:00:00:00={}", peer.1),
            "--neigh",
            &format!("{}={}", peer.1, peer.0),
            "--variant",
            variant,
        ],
        &log,
        &out,
    )
}

fn first_frames_go_through_the_agents(variant: &str) {
    let (pa, pb) = free_ports();
    let va = host(1, pa, pb, VTEP_A);
    let vb = host(2, pb, pa, VTEP_B);
    let dir = TempDir::new("agent");
    let mut aa = agent(&va, &dir, "a", VTEP_B, variant);
    let mut ab = agent(&vb, &dir, "b", VTEP_A, "a");
    let mut ga = Guest::attach(&va, "vf1", 1);
    let mut gb = Guest::attach(&vb, "vf1", 1);
    let (a0, b0) = (mac(1, 2, 0), mac(2, 2, 0));

    // A broadcast from A: a miss on A (the default FDB entry), a punt on
    // B (A's vNIC is unknown there).
    let hello = frame([0xff; 6], a0, 1, 60);
    ga.send(std::slice::from_ref(&hello));
    wait_for("B got A's broadcast through both agents", WAIT, || {
        gb.received(0) == vec![hello.clone()]
    });
    // B answers A's vNIC: a hit on B (learned from the punt), a punt on A.
    let answer = frame(a0, b0, 2, 300);
    gb.send(std::slice::from_ref(&answer));
    wait_for("A got B's answer through its agent", WAIT, || {
        ga.received(0) == vec![answer.clone()]
    });
    // From now on the cards alone.
    let mut to_a = vec![answer];
    let mut to_b = vec![hello];
    for i in 0..4u8 {
        let f = frame(b0, a0, 10 + i, 1000);
        ga.send(std::slice::from_ref(&f));
        to_b.push(f);
        let f = frame(a0, b0, 20 + i, 200);
        gb.send(std::slice::from_ref(&f));
        to_a.push(f);
    }
    wait_for("B got A's frames", WAIT, || gb.received(0) == to_b);
    wait_for("A got B's frames", WAIT, || ga.received(0) == to_a);
    assert_eq!(card_stat(&va, "vxlan_requests"), 1, "the broadcast only");
    assert_eq!(card_stat(&va, "vxlan_punts"), 1);
    assert_eq!(card_stat(&vb, "vxlan_requests"), 0);
    assert_eq!(card_stat(&vb, "vxlan_punts"), 1);
    assert_eq!(card_stat(&va, "vxlan_send_misses"), 0);

    assert_eq!(aa.stop(), Some(0), "agent A exits 0 on SIGTERM");
    assert_eq!(ab.stop(), Some(0), "agent B exits 0 on SIGTERM");
    println!("A: {}\nB: {}", aa.summary(), ab.summary());
    print!("--- agent A ---\n{}", aa.log_text());
    print!("--- agent B ---\n{}", ab.log_text());
    assert_eq!(aa.counter("requests"), Some(1));
    assert_eq!(aa.counter("punts"), Some(1));
    assert_eq!(aa.counter("installs"), Some(2));
    assert_eq!(aa.counter("sent"), Some(1));
    assert_eq!(aa.counter("drops"), Some(0));
    assert_eq!(ab.counter("requests"), Some(0));
    assert_eq!(ab.counter("punts"), Some(1));
    assert_eq!(ab.counter("delivered"), Some(1));
    // Variant B's outer frames came from the agent, through uplink-send.
    let encapsulated = card_stat(&va, "vxlan_encapsulated");
    match variant {
        "a" => assert_eq!(encapsulated, 5),
        _ => assert_eq!(encapsulated, 4),
    }
}

#[test]
fn variant_a_agents_answer_the_first_frame_each_way() {
    first_frames_go_through_the_agents("a");
}

#[test]
fn variant_b_agent_encapsulates_the_first_frames_itself() {
    first_frames_go_through_the_agents("b");
}

#[test]
fn an_agent_that_cannot_resolve_drops_and_logs() {
    let (pa, pb) = free_ports();
    let va = host(1, pa, pb, VTEP_A);
    let dir = TempDir::new("agent");
    let mut a = Agent::start(
        &va.socket_dir().join("control.sock"),
        &["--fdb", "00:00:00:00:00:00=10.1.0.2"],
        &dir.0.join("a.log"),
        &dir.0.join("a.out"),
    );
    let mut g = Guest::attach(&va, "vf1", 1);
    g.send(&[frame([0xff; 6], mac(1, 2, 0), 1, 60)]);
    wait_for("the agent logged a drop", WAIT, || {
        a.log_text().contains("no neighbour entry for 10.1.0.2")
    });
    assert_eq!(card_stat(&va, "uplink_tx_frames"), 0);
    assert_eq!(a.stop(), Some(0));
    assert_eq!(a.counter("drops"), Some(1));
    assert_eq!(a.counter("installs"), Some(0));
}

#[test]
fn an_agent_stops_with_status_3_when_vnicd_goes_away() {
    let (pa, pb) = free_ports();
    let mut va = host(1, pa, pb, VTEP_A);
    let dir = TempDir::new("agent");
    let mut a = Agent::start(
        &va.socket_dir().join("control.sock"),
        &[],
        &dir.0.join("a.log"),
        &dir.0.join("a.out"),
    );
    va.stop();
    let pid = a.pid();
    wait_for("the agent noticed", WAIT, || {
        // Only our own child's state: /proc of its PID, a zombie once it
        // has exited and not been reaped.
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    assert_eq!(a.stop(), Some(3));
    assert!(a.summary().contains("requests=0"), "{}", a.summary());
}

/// The exception queue pair's MAC on card 0 (PF queue pair 1).
const EXC_MAC: Mac = Mac([0x02, 0x76, 0x6e, 0x00, 0x00, 0x01]);

/// Runs `ip ARGS...`; panics with its stderr if it fails.
fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("run ip");
    assert!(
        out.status.success(),
        "ip {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes a message of the card to the TAP, as if on the exception
/// queue pair.
fn put(tap: &mut Uplink, h: ExceptionHeader, frame: &[u8]) {
    let mut m = Vec::new();
    h.write(EXC_MAC, EXC_MAC, frame, &mut m);
    tap.send(&m, None);
}

/// The next message the agent wrote to the TAP, within `WAIT`: its header
/// and frame.
fn next_message(tap: &mut Uplink) -> (ExceptionHeader, Vec<u8>) {
    let deadline = Instant::now() + WAIT;
    let mut f = Vec::new();
    loop {
        match tap.recv(&mut f).expect("read the TAP") {
            RecvOutcome::Frame if f.len() >= 14 && f[12..14] == [0x88, 0xb5] => {
                let (h, frame) = ExceptionHeader::parse(&f).expect("a well-formed message");
                return (h, f[frame].to_vec());
            }
            RecvOutcome::Frame | RecvOutcome::Skipped => continue,
            RecvOutcome::Empty => {}
        }
        assert!(Instant::now() < deadline, "no message from the agent");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// `vnicctl vxlan-agent --pf-netdev`: a TAP device (up, the exception
/// queue pair's MAC) stands for the PF's exception netdev, and the test
/// plays the card on the TAP's file descriptor. A `MISS` is answered with
/// `ADD` then `SEND`, a `PUNT` with `ADD` then `DELIVER` (byte-level
/// checks), a malformed message is logged and ignored, and when the TAP
/// goes away the agent exits with status 3 and its summary.
#[test]
fn a_pf_netdev_agent_answers_messages_and_exits_3_when_the_netdev_goes() {
    // SAFETY: geteuid has no preconditions.
    let euid = unsafe { libc::geteuid() };
    assert_eq!(euid, 0, "needs root (a TAP device and a packet socket)");
    let name = format!("vnicexc{}", std::process::id() % 100_000);
    let mut tap = Uplink::open(&UplinkSpec::Tap(name.clone())).expect("TAP device");
    let _ = Command::new("sysctl")
        .args(["-qw", &format!("net.ipv6.conf.{name}.disable_ipv6=1")])
        .status();
    ip(&["link", "set", &name, "address", &EXC_MAC.to_string(), "up"]);

    let dir = TempDir::new("agent-pf");
    let mut a = Agent::start(
        &dir.0.join("no-control.sock"),
        &[
            "--pf-netdev",
            &name,
            "--fdb",
            "00:00:00:00:00:00=10.1.0.2",
            "--neigh",
            "10.1.0.2=02:aa:00:00:00:02",
        ],
        &dir.0.join("a.log"),
        &dir.0.join("a.out"),
    );
    assert!(
        a.log_text()
            .contains(&format!("pf-netdev {name} {EXC_MAC}")),
        "{}",
        a.log_text()
    );

    // MISS: VF0's vNIC 0 broadcast in VNI 100.
    let vni = Vni::new(VNI).unwrap();
    let vtep = Vtep {
        mac: Mac([0x02, 0x76, 0x6e, 0xff, 0x00, 0x01]),
        ip: Ipv4Addr::new(10, 1, 0, 1),
    };
    let behind_tap = Remote {
        ip: Ipv4Addr::new(10, 1, 0, 2),
        mac: Mac([0x02, 0xaa, 0, 0, 0, 0x02]),
    };
    let guest = Mac(mac(0, 1, 0));
    let hello = frame([0xff; 6], guest.0, 1, 60);
    put(&mut tap, ExceptionHeader::miss(vni, 0, 0, vtep), &hello);
    assert_eq!(
        next_message(&mut tap),
        (
            ExceptionHeader::add(VNI, Mac::BROADCAST, behind_tap),
            vec![]
        )
    );
    assert_eq!(
        next_message(&mut tap),
        (ExceptionHeader::answer(MsgType::Send, VNI), hello.clone())
    );

    // PUNT: an answer from a peer behind 10.1.0.2.
    let peer = Mac([0x02, 0xbb, 0, 0, 0, 0x02]);
    let answer = frame(guest.0, peer.0, 2, 100);
    let punt = ExceptionHeader::punt(vni, behind_tap, PuntReason::Unknown);
    put(&mut tap, punt, &answer);
    assert_eq!(
        next_message(&mut tap),
        (ExceptionHeader::add(VNI, peer, behind_tap), vec![])
    );
    assert_eq!(
        next_message(&mut tap),
        (ExceptionHeader::answer(MsgType::Deliver, VNI), answer)
    );

    // A message of another version is no request.
    let mut bad = Vec::new();
    ExceptionHeader::miss(vni, 0, 0, vtep).write(EXC_MAC, EXC_MAC, &hello, &mut bad);
    bad[14] = 9;
    tap.send(&bad, None);
    wait_for("the agent logged the bad message", WAIT, || {
        a.log_text().contains("ignored a message: version 9")
    });

    // The netdev goes away (the TAP is not persistent).
    drop(tap);
    let pid = a.pid();
    wait_for("the agent noticed", WAIT, || {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| s.contains(") Z "))
    });
    assert_eq!(a.stop(), Some(3));
    println!("{}\n{}", a.summary(), a.log_text());
    assert!(a.log_text().contains("went away"), "{}", a.log_text());
    for (counter, want) in [
        ("requests", 1),
        ("punts", 1),
        ("installs", 2),
        ("sent", 1),
        ("delivered", 1),
        ("drops", 0),
    ] {
        assert_eq!(a.counter(counter), Some(want), "{}", a.summary());
    }
}
