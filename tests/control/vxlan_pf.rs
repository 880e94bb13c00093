//! The PF's exception queue pair in a real vnicd (docs/vxlan.md, "The
//! exception queue on the PF"): a fake guest on pf.sock runs queue pair 1
//! and plays the host agent over it, a fake guest on vf0.sock (VxLAN, VNI
//! 100) sends and receives, and the test is the other end of vnicd's UDP
//! uplink. Messages are built and read here byte by byte from the
//! contract's table, not with the card's own code.

use std::net::{Ipv4Addr, SocketAddr, UdpSocket};
use std::time::Duration;

use serde_json::json;
use vnic_tests::ctl::{vxlan_card_on_wire, Ctl};
use vnic_tests::guest::{mac, qp, tagged_frame as frame, Guest};
use vnic_tests::{wait_for, Vnicd};

const VNI: u32 = 100;
const WAIT: Duration = Duration::from_secs(10);
/// The exception queue pair's index, and EXC_QP's offset in BAR0.
const EXC: u16 = 1;
const EXC_QP_REG: u64 = 0x054;
const VTEP_MAC: [u8; 6] = [2, 0x76, 0x6e, 0xff, 0, 1];
const VTEP_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 1);
const PEER_MAC: [u8; 6] = [2, 0x76, 0x6e, 0xff, 0, 2];
const PEER_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
/// vNICs behind the peer VTEP.
const FAR: [u8; 6] = [2, 0x76, 0x6e, 9, 9, 1];
const FAR2: [u8; 6] = [2, 0x76, 0x6e, 9, 9, 2];

const MISS: u8 = 0x01;
const PUNT: u8 = 0x02;
const ADD: u8 = 0x81;
const SEND: u8 = 0x82;
const DELIVER: u8 = 0x83;
const UPLINK: u8 = 0x84;

/// A PF → card message, field by field (docs/vxlan.md, "Message format").
fn message(ty: u8, vni: u32, ip: Ipv4Addr, mac: [u8; 6], inner: [u8; 6], f: &[u8]) -> Vec<u8> {
    let mut m = vec![0xff; 6]; // ignored by the card
    m.extend_from_slice(&[2, 0, 0, 0, 0, 0x77]); // ignored too
    m.extend_from_slice(&[0x88, 0xb5, 1, ty]);
    m.extend_from_slice(&(f.len() as u16).to_be_bytes());
    m.extend_from_slice(&vni.to_be_bytes());
    m.extend_from_slice(&[0xff, 0xff, 0, 0]);
    m.extend_from_slice(&ip.octets());
    m.extend_from_slice(&mac);
    m.extend_from_slice(&inner);
    m.extend_from_slice(&[0; 4]);
    assert_eq!(m.len(), 46);
    m.extend_from_slice(f);
    m
}

fn add(vni: u32, inner: [u8; 6]) -> Vec<u8> {
    message(ADD, vni, PEER_IP, PEER_MAC, inner, &[])
}

fn answer(ty: u8, vni: u32, f: &[u8]) -> Vec<u8> {
    message(ty, vni, Ipv4Addr::UNSPECIFIED, [0; 6], [0; 6], f)
}

/// A request as the card wrote it, field by field.
#[derive(Debug, PartialEq)]
struct Request {
    dst: [u8; 6],
    src: [u8; 6],
    ethertype: u16,
    version: u8,
    ty: u8,
    vni: u32,
    function: u16,
    vnic: u16,
    ip: Ipv4Addr,
    mac: [u8; 6],
    inner: [u8; 6],
    reason: u8,
    reserved: [u8; 3],
    frame: Vec<u8>,
}

fn request(m: &[u8]) -> Request {
    assert!(m.len() >= 46, "a request of {} bytes", m.len());
    let len = u16::from_be_bytes([m[16], m[17]]) as usize;
    assert_eq!(m.len(), 46 + len, "len says the frame ends the message");
    Request {
        dst: m[0..6].try_into().unwrap(),
        src: m[6..12].try_into().unwrap(),
        ethertype: u16::from_be_bytes([m[12], m[13]]),
        version: m[14],
        ty: m[15],
        vni: u32::from_be_bytes(m[18..22].try_into().unwrap()),
        function: u16::from_be_bytes([m[22], m[23]]),
        vnic: u16::from_be_bytes([m[24], m[25]]),
        ip: Ipv4Addr::from(<[u8; 4]>::try_from(&m[26..30]).unwrap()),
        mac: m[30..36].try_into().unwrap(),
        inner: m[36..42].try_into().unwrap(),
        reason: m[42],
        reserved: m[43..46].try_into().unwrap(),
        frame: m[46..].to_vec(),
    }
}

/// `inner` as the peer VTEP sends it to us (the card's own encapsulation
/// code builds the outer headers; it is tested on its own elsewhere).
fn from_peer(inner: &[u8]) -> Vec<u8> {
    use vnic::model::Mac;
    use vnic::vxlan::wire::{encapsulate, Outer};
    let outer = Outer {
        dst_mac: Mac(VTEP_MAC),
        src_mac: Mac(PEER_MAC),
        src_ip: PEER_IP,
        dst_ip: VTEP_IP,
        ident: 1,
        vni: VNI,
    };
    let mut out = Vec::new();
    encapsulate(&outer, inner, &mut out);
    out
}

/// A vnicd with one VF (vf0, VNI 100) and a VTEP, whose UDP uplink leads
/// to the test's socket; a fake guest on the PF with its exception queue
/// pair running, one on vf0, a control connection and a subscriber.
struct Host {
    vnicd: Vnicd,
    wire: UdpSocket,
    card: SocketAddr,
    ctl: Ctl,
    events: Ctl,
    pf: Guest,
    vf: Guest,
}

impl Host {
    fn start() -> Host {
        let wire = UdpSocket::bind("127.0.0.1:0").unwrap();
        wire.set_read_timeout(Some(WAIT)).unwrap();
        let (vnicd, ctl, port) = vxlan_card_on_wire(&wire, VNI);
        // Both queue pairs of the PF run: its vNIC and the exception
        // queue pair (attach checks QP_STATUS of each).
        let mut pf = Guest::attach(&vnicd, "pf", 2);
        let mut vf = Guest::attach(&vnicd, "vf0", 1);
        assert_eq!(pf.read(EXC_QP_REG), u32::from(EXC));
        assert_eq!(vf.read(EXC_QP_REG), 0);
        let events = Ctl::subscribe(&vnicd);
        Host {
            card: format!("127.0.0.1:{port}").parse().unwrap(),
            vnicd,
            wire,
            ctl,
            events,
            pf,
            vf,
        }
    }

    /// Requests the PF's exception queue pair received so far.
    fn requests(&self) -> Vec<Request> {
        self.pf.received(EXC).iter().map(|m| request(m)).collect()
    }

    fn wait_requests(&self, n: usize) -> Vec<Request> {
        wait_for(&format!("{n} requests on the PF"), WAIT, || {
            self.pf.received(EXC).len() >= n
        });
        let got = self.requests();
        assert_eq!(got.len(), n);
        got
    }

    /// Sends `messages` on the exception send queue in one doorbell and
    /// waits until the card completed them; returns their status words.
    fn answer(&mut self, messages: &[Vec<u8>]) -> Vec<u16> {
        let n = messages.len() as u16;
        self.pf.send_on(EXC, messages);
        wait_for("the card took the messages", WAIT, || {
            self.pf.sent_status(EXC, n).iter().all(|s| s & 1 != 0)
        });
        self.pf.sent_status(EXC, n)
    }

    /// The next datagram on the wire.
    fn datagram(&self) -> Vec<u8> {
        let mut buf = vec![0; 65536];
        let (n, from) = self.wire.recv_from(&mut buf).expect("a datagram");
        assert_eq!(from, self.card);
        buf.truncate(n);
        buf
    }

    fn no_events(&mut self) {
        let seen = self
            .events
            .vxlan_requests_within(Duration::from_millis(300));
        assert!(
            seen.is_empty(),
            "requests reached the control socket: {seen:?}"
        );
    }
}

#[test]
fn the_pf_serves_requests_on_its_exception_queue_pair() {
    let mut h = Host::start();
    let me = mac(1, 0);

    // 1. vf0's frame to an unknown MAC: a MISS on the PF's exception
    // queue, and no event.
    let first = frame(FAR, me, 1, 300);
    h.vf.send(std::slice::from_ref(&first));
    let miss = h.wait_requests(1).remove(0);
    let exc_mac = mac(0, 1);
    assert_eq!(
        miss,
        Request {
            dst: exc_mac,
            src: exc_mac,
            ethertype: 0x88b5,
            version: 1,
            ty: MISS,
            vni: VNI,
            function: 0,
            vnic: 0,
            ip: VTEP_IP,
            mac: VTEP_MAC,
            inner: [0; 6],
            reason: 0,
            reserved: [0; 3],
            frame: first.clone(),
        }
    );
    h.no_events();
    assert_eq!(h.ctl.card_stat("vxlan_requests"), 1);
    assert_eq!(h.ctl.card_stat("exception_to_pf"), 1);
    assert_eq!(h.ctl.card_stat("uplink_tx_frames"), 0);

    // 2. ADD and SEND in one batch: the frame leaves encapsulated.
    let status = h.answer(&[add(VNI, FAR), answer(SEND, VNI, &miss.frame)]);
    assert_eq!(status, vec![1, 1], "DONE, not DROPPED");
    let outer = h.datagram();
    let d = vnic::vxlan::wire::decapsulate(&outer, PEER_IP).expect("VxLAN to the peer");
    assert_eq!(d.vni, VNI);
    assert_eq!(&outer[d.inner], &first[..]);
    assert_eq!(&outer[..12], &[PEER_MAC, VTEP_MAC].concat()[..]);
    // Later frames need no host.
    let second = frame(FAR, me, 2, 100);
    h.vf.send(std::slice::from_ref(&second));
    let outer = h.datagram();
    let d = vnic::vxlan::wire::decapsulate(&outer, PEER_IP).unwrap();
    assert_eq!(&outer[d.inner], &second[..]);
    assert_eq!(h.requests().len(), 1);

    // 3. A VxLAN frame from an unknown source: a PUNT; DELIVER puts it
    // into vf0's receive queue.
    let inner = frame(me, FAR2, 3, 200);
    h.wire.send_to(&from_peer(&inner), h.card).unwrap();
    let punt = h.wait_requests(2).remove(1);
    assert_eq!(
        punt,
        Request {
            dst: exc_mac,
            src: exc_mac,
            ethertype: 0x88b5,
            version: 1,
            ty: PUNT,
            vni: VNI,
            function: 0xffff,
            vnic: 0,
            ip: PEER_IP,
            mac: PEER_MAC,
            inner: [0; 6],
            reason: 1,
            reserved: [0; 3],
            frame: inner.clone(),
        }
    );
    h.no_events();
    assert!(
        h.vf.received(0).is_empty(),
        "nothing before the host answers"
    );
    assert_eq!(h.answer(&[answer(DELIVER, VNI, &punt.frame)]), vec![1]);
    wait_for("vf0 got the punted frame", WAIT, || {
        h.vf.received(0) == vec![inner.clone()]
    });
    assert_eq!(h.ctl.card_stat("vxlan_punts"), 1);
    assert_eq!(h.ctl.card_stat("exception_to_pf"), 2);
    assert_eq!(h.ctl.card_stat("exception_from_pf"), 3);

    // 4. Hostile messages: completed DROPPED, counted, nothing done.
    let good = answer(SEND, VNI, &first);
    let mut bad_version = good.clone();
    bad_version[14] = 2;
    let mut bad_type = good.clone();
    bad_type[15] = 0x85;
    let mut too_long = good.clone();
    too_long[16..18].copy_from_slice(&(first.len() as u16 + 1).to_be_bytes());
    let hostile = vec![
        good[..20].to_vec(),
        bad_version,
        bad_type,
        too_long,
        answer(SEND, 0, &first),
        add(VNI, [0; 6]),
    ];
    let n = hostile.len() as u64;
    assert_eq!(h.answer(&hostile), vec![0b11; hostile.len()]);
    assert_eq!(h.ctl.card_stat("exception_refused"), n);
    // A frame of another ethertype (the guest kernel's own IPv6, say) is
    // ignored, also DROPPED.
    let mut ipv6 = frame([0x33, 0x33, 0, 0, 0, 1], exc_mac, 4, 80);
    ipv6[12..14].copy_from_slice(&[0x86, 0xdd]);
    assert_eq!(h.answer(&[ipv6]), vec![0b11]);
    assert_eq!(h.ctl.card_stat("exception_ignored"), 1);
    let list = h.ctl.ok(json!({"op": "vxlan-list"}));
    assert_eq!(list["macs"].as_array().unwrap().len(), 1, "{list}");
    assert_eq!(h.ctl.card_stat("uplink_tx_frames"), 2, "nothing sent");
    let pf_stats = &h.ctl.ok(json!({"op": "stats", "function": "pf"}))["functions"][0];
    assert_eq!(pf_stats["counters"]["tx_drops"], n + 1, "{pf_stats}");
    assert_eq!(pf_stats["counters"]["tx_packets"], 3, "{pf_stats}");
    // A valid message still works: UPLINK, out of the uplink as it is.
    let raw = from_peer(&frame(FAR, me, 5, 90));
    assert_eq!(h.answer(&[answer(UPLINK, VNI, &raw)]), vec![1]);
    assert_eq!(h.datagram(), raw);
    assert_eq!(h.ctl.card_stat("exception_from_pf"), 4);
    assert!(h.vnicd.alive());

    // 5. The PF stops the exception queue's RX: requests are control
    // events again.
    h.pf.posted(qp(EXC, 0x08), 1);
    assert_eq!(h.pf.read(qp(EXC, 0x0c)) & 0b11, 0b01, "TX runs, RX not");
    let third = frame([2, 0x76, 0x6e, 9, 9, 3], me, 6, 60);
    h.vf.send(std::slice::from_ref(&third));
    let miss = h.events.next_event("vxlan-miss", WAIT);
    assert_eq!(miss["vni"], VNI);
    assert_eq!(miss["function"], "vf0");
    let inner = frame(me, [2, 0x76, 0x6e, 9, 9, 4], 7, 60);
    h.wire.send_to(&from_peer(&inner), h.card).unwrap();
    let punt = h.events.next_event("vxlan-punt", WAIT);
    assert_eq!(punt["outer_src_ip"], PEER_IP.to_string());
    assert_eq!(h.requests().len(), 2, "nothing more on the PF");
    assert_eq!(h.ctl.card_stat("vxlan_requests"), 2);
    assert_eq!(h.ctl.card_stat("vxlan_punts"), 2);
    assert_eq!(h.ctl.card_stat("exception_to_pf"), 2);
    assert_eq!(h.ctl.card_stat("exception_lost"), 0);
}
