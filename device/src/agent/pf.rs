//! The agent over the PF's exception queue pair (docs/vxlan.md, "The
//! exception queue on the PF"): `vnicctl vxlan-agent --pf-netdev NAME` in
//! the guest that has the PF. The card writes its requests to that queue
//! pair as 0x88B5 messages (the card's own [`ExceptionHeader`]) and takes the
//! answers from it; vnic.ko makes it a netdev, so the agent needs only an
//! `AF_PACKET` socket bound to it for that ethertype.
//!
//! [`handle`] is the mapping, without sockets: a `MISS` or `PUNT` message
//! becomes the event the control socket would have given ([`incoming`]),
//! the same [`Agent`] decides, and each request of the decision becomes a
//! message ([`outgoing`]). [`run_pf`] is the loop around it. No answer
//! comes back over the queue pair, so `sent` and `delivered` count
//! messages written ([`Agent::written`]).

use std::ffi::CString;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{describe_fdb, describe_neigh, Agent, AgentError};
use crate::control::api::Request;
use crate::model::{Event, Frame, Mac, Vtep};
use crate::vxlan::exception::{self, ExceptionHeader, MsgType, MAX_MESSAGE};
use crate::vxlan::table::Remote;
use crate::vxlan::Vni;

/// How long a receive waits before the loop looks at its stop flag.
const STOP_POLL: Duration = Duration::from_millis(100);
/// How often an idle loop checks that the netdev still exists.
const PRESENCE_POLL: Duration = Duration::from_secs(1);

/// A request read from one of the card's messages: the event the control
/// socket would have given, and the VTEP a `MISS` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CardRequest {
    pub event: Event,
    /// `MISS`: the card's VTEP (`None` when the card has none).
    pub vtep: Option<Vtep>,
}

/// The request in a message from the card; `Ok(None)` for a PF → card
/// type (an answer of ours seen again), which is not one; `Err` for a
/// frame that is not a well-formed request.
pub fn incoming(msg: &[u8]) -> Result<Option<CardRequest>, String> {
    let (h, frame) = ExceptionHeader::parse(msg).map_err(|e| e.to_string())?;
    let frame = Frame(msg[frame].to_vec());
    let incoming = match h.ty {
        MsgType::Miss => {
            let vtep = (!h.ip.is_unspecified() && h.mac != Mac::default()).then_some(Vtep {
                mac: h.mac,
                ip: h.ip,
            });
            CardRequest {
                event: Event::VxlanMiss {
                    vni: h.vni,
                    function: format!("vf{}", h.function),
                    vnic: h.vnic,
                    frame,
                },
                vtep,
            }
        }
        MsgType::Punt => {
            // The reason byte is at offset 42.
            let reason = h
                .reason
                .ok_or_else(|| format!("Punt with reason {}", msg[42]))?;
            CardRequest {
                event: Event::VxlanPunt {
                    vni: h.vni,
                    outer_src_ip: h.ip,
                    outer_src_mac: h.mac,
                    reason,
                    frame,
                },
                vtep: None,
            }
        }
        MsgType::Add | MsgType::Send | MsgType::Deliver | MsgType::Uplink => return Ok(None),
    };
    Vni::new(h.vni).map_err(|e| format!("{:?}: {e}", h.ty))?;
    Ok(Some(incoming))
}

/// The message that carries `request` to the card, from and to `own` (the
/// exception queue pair's MAC; the card ignores both). `vni` is the
/// request's event's, also given to `UPLINK`. `Err` for a request that
/// has no message or a frame too long for one.
pub fn outgoing(request: &Request, vni: u32, own: Mac) -> Result<Vec<u8>, String> {
    let (header, frame) = match request {
        Request::VxlanAdd {
            vni,
            mac: inner,
            remote_ip: ip,
            remote_mac: mac,
        } => (
            ExceptionHeader::add(*vni, *inner, Remote { ip: *ip, mac: *mac }),
            &[][..],
        ),
        Request::VxlanSend { vni, frame } => {
            (ExceptionHeader::answer(MsgType::Send, *vni), &frame.0[..])
        }
        Request::VxlanDeliver { vni, frame } => (
            ExceptionHeader::answer(MsgType::Deliver, *vni),
            &frame.0[..],
        ),
        Request::UplinkSend { frame } => {
            (ExceptionHeader::answer(MsgType::Uplink, vni), &frame.0[..])
        }
        _ => return Err("no message for this request".into()),
    };
    if exception::FRAME_OFFSET + frame.len() > MAX_MESSAGE {
        return Err(format!(
            "a {}-byte frame does not fit a message of at most {MAX_MESSAGE} bytes",
            frame.len()
        ));
    }
    let mut out = Vec::new();
    header.write(own, own, frame, &mut out);
    Ok(out)
}

/// What to do about one message: lines to log (without the
/// `vxlan-agent: ` prefix) and the messages to write, in order, each with
/// the request it carries (or why it cannot be written).
#[derive(Debug, Default)]
pub struct Handled {
    pub log: Vec<String>,
    pub writes: Vec<(Request, Result<Vec<u8>, String>)>,
}

/// Decides about one frame read from the exception netdev (whose MAC is
/// `own`): the agent's decision for a `MISS` (taking the VTEP it names) or
/// a `PUNT`, as messages. Anything else is logged or ignored.
pub fn handle(agent: &mut Agent, msg: &[u8], own: Mac) -> Handled {
    let mut out = Handled::default();
    let incoming = match incoming(msg) {
        Ok(Some(i)) => i,
        Ok(None) => return out,
        Err(why) => {
            out.log.push(format!("ignored a message: {why}"));
            return out;
        }
    };
    let vni = match &incoming.event {
        Event::VxlanMiss { vni, .. } => {
            agent.set_vtep(incoming.vtep);
            *vni
        }
        Event::VxlanPunt { vni, .. } => *vni,
        _ => 0,
    };
    let Some(decision) = agent.on_event(&incoming.event) else {
        return out;
    };
    out.log.push(decision.log);
    out.writes = decision
        .requests
        .into_iter()
        .map(|r| {
            let m = outgoing(&r, vni, own);
            (r, m)
        })
        .collect();
    out
}

// ------------------------------------------------------------ the socket

/// An `AF_PACKET` socket bound to one netdev for ethertype 0x88B5.
struct PacketSocket {
    fd: OwnedFd,
    name: String,
    ifindex: i32,
    mac: Mac,
}

/// An `ifreq` naming `name`.
fn ifreq(name: &str) -> io::Result<libc::ifreq> {
    if name.is_empty() || name.len() >= libc::IFNAMSIZ || name.contains(['\0', '/']) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a netdev name",
        ));
    }
    // SAFETY: ifreq is plain old data; all zeroes is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, &src) in req.ifr_name.iter_mut().zip(name.as_bytes()) {
        *dst = src as libc::c_char;
    }
    Ok(req)
}

/// The netdev's index; `ENODEV` if there is none by that name.
fn ifindex(name: &str) -> io::Result<i32> {
    let c = CString::new(name).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    // SAFETY: c is a NUL-terminated string that outlives the call.
    let index = unsafe { libc::if_nametoindex(c.as_ptr()) };
    if index == 0 {
        return Err(io::Error::last_os_error());
    }
    i32::try_from(index).map_err(|_| io::Error::from(io::ErrorKind::InvalidData))
}

impl PacketSocket {
    /// Opens and binds the socket; the netdev must exist and be up.
    fn open(name: &str) -> io::Result<PacketSocket> {
        let proto = exception::ETHERTYPE.to_be();
        // SAFETY: socket(2) with constant arguments; the result is checked.
        let raw = unsafe {
            libc::socket(
                libc::AF_PACKET,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::c_int::from(proto),
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: raw is a descriptor socket(2) just opened, owned by no
        // one else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let ifindex = ifindex(name)?;

        let mut req = ifreq(name)?;
        // SAFETY: SIOCGIFFLAGS fills ifr_flags of the ifreq it is given.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFFLAGS wrote the flags member of the union.
        let flags = libc::c_int::from(unsafe { req.ifr_ifru.ifru_flags });
        if flags & libc::IFF_UP == 0 {
            return Err(io::Error::other("the netdev is down (ip link set NAME up)"));
        }
        let mut req = ifreq(name)?;
        // SAFETY: SIOCGIFHWADDR fills ifr_hwaddr of the ifreq it is given.
        if unsafe { libc::ioctl(fd.as_raw_fd(), libc::SIOCGIFHWADDR, &mut req) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: SIOCGIFHWADDR wrote the hwaddr member of the union.
        let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
        let mut mac = [0u8; 6];
        for (dst, &src) in mac.iter_mut().zip(&hw.sa_data) {
            *dst = src as u8;
        }

        // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
        let mut sll: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
        sll.sll_family = libc::AF_PACKET as u16;
        sll.sll_protocol = proto;
        sll.sll_ifindex = ifindex;
        // SAFETY: sll is a sockaddr_ll of the size given, alive for the
        // call.
        let rc = unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sll as *const libc::sockaddr_ll).cast(),
                std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        // Our own messages are not requests: do not read them back (the
        // loop also skips outgoing frames, for kernels without this).
        let one: libc::c_int = 1;
        // SAFETY: an int option, pointer and size of a live c_int.
        let _ = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_PACKET,
                PACKET_IGNORE_OUTGOING,
                (&one as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        let tv = libc::timeval {
            tv_sec: 0,
            tv_usec: STOP_POLL.as_micros() as libc::suseconds_t,
        };
        // SAFETY: SO_RCVTIMEO takes a timeval; pointer and size of a live
        // one.
        let rc = unsafe {
            libc::setsockopt(
                fd.as_raw_fd(),
                libc::SOL_SOCKET,
                libc::SO_RCVTIMEO,
                (&tv as *const libc::timeval).cast(),
                std::mem::size_of::<libc::timeval>() as libc::socklen_t,
            )
        };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(PacketSocket {
            fd,
            name: name.to_string(),
            ifindex,
            mac: Mac(mac),
        })
    }

    /// The next frame for us into `buf`: its length, or `None` when none
    /// came within [`STOP_POLL`].
    fn recv(&self, buf: &mut [u8]) -> io::Result<Option<usize>> {
        loop {
            // SAFETY: sockaddr_ll is plain old data; all zeroes is valid.
            let mut from: libc::sockaddr_ll = unsafe { std::mem::zeroed() };
            let mut from_len = std::mem::size_of::<libc::sockaddr_ll>() as libc::socklen_t;
            // SAFETY: buf and from are live and writable for the sizes
            // given.
            let n = unsafe {
                libc::recvfrom(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    0,
                    (&mut from as *mut libc::sockaddr_ll).cast(),
                    &mut from_len,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Ok(None),
                    io::ErrorKind::Interrupted => Ok(None),
                    _ => Err(e),
                };
            }
            if from.sll_pkttype == PACKET_OUTGOING {
                continue;
            }
            return Ok(Some(n as usize));
        }
    }

    /// Writes one message out of the bound netdev.
    fn send(&self, msg: &[u8]) -> io::Result<()> {
        // SAFETY: msg is live and readable for its length.
        let n = unsafe { libc::send(self.fd.as_raw_fd(), msg.as_ptr().cast(), msg.len(), 0) };
        if n < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Is the netdev the socket is bound to still there?
    fn present(&self) -> bool {
        ifindex(&self.name).is_ok_and(|i| i == self.ifindex)
    }
}

/// `PACKET_IGNORE_OUTGOING` (linux/if_packet.h, Linux 4.20).
const PACKET_IGNORE_OUTGOING: libc::c_int = 23;
/// `sll_pkttype` of a frame this host sent.
const PACKET_OUTGOING: u8 = 4;

/// Runs `agent` over the exception netdev `netdev` until `stop` is set:
/// reads the card's messages, writes its answers, logs one line per
/// decision to `log` (and `vxlan-agent: ready ...` once the socket is
/// bound). Returns when stopped (`Ok`), or with an error if the socket
/// cannot be opened or the netdev goes away; `agent` keeps its counters
/// either way.
pub fn run_pf(
    agent: &mut Agent,
    netdev: &str,
    stop: &AtomicBool,
    log: &mut dyn Write,
) -> Result<(), AgentError> {
    let netdev_error = |error: io::Error| AgentError::Netdev {
        name: netdev.to_string(),
        error,
    };
    let sock = PacketSocket::open(netdev).map_err(netdev_error)?;
    let vtep = agent
        .vtep()
        .map_or("none".to_string(), |v| format!("{} {}", v.mac, v.ip));
    let _ = writeln!(
        log,
        "vxlan-agent: ready: variant {}, vtep {vtep}, fdb {}, neigh {}, pf-netdev {netdev} {}",
        agent.variant(),
        describe_fdb(agent),
        describe_neigh(agent),
        sock.mac
    );
    // Room for any frame of the netdev, and more (a longer one is cut and
    // then refused as a message whose len runs past its end).
    let mut buf = vec![0u8; 64 * 1024];
    let mut checked = Instant::now();
    let mut down = false;
    while !stop.load(Ordering::Relaxed) {
        match sock.recv(&mut buf) {
            Ok(Some(n)) => {
                down = false;
                let handled = handle(agent, &buf[..n], sock.mac);
                for line in handled.log {
                    let _ = writeln!(log, "vxlan-agent: {line}");
                }
                for (request, msg) in handled.writes {
                    let result = msg.and_then(|m| sock.send(&m).map_err(|e| e.to_string()));
                    if let Some(note) = agent.written(
                        &request,
                        result.as_ref().map(|_| ()).map_err(String::as_str),
                    ) {
                        let _ = writeln!(log, "vxlan-agent: {note}");
                    }
                }
            }
            Ok(None) => {
                if checked.elapsed() >= PRESENCE_POLL {
                    checked = Instant::now();
                    if !sock.present() {
                        return Err(AgentError::NetdevGone(netdev.to_string()));
                    }
                }
            }
            // The netdev went down, or away.
            Err(e) if e.raw_os_error() == Some(libc::ENETDOWN) => {
                if !sock.present() {
                    return Err(AgentError::NetdevGone(netdev.to_string()));
                }
                if !down {
                    down = true;
                    let _ = writeln!(log, "vxlan-agent: {netdev} is down: waiting for it");
                }
            }
            Err(e) => return Err(netdev_error(e)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agent::{Config, Variant};
    use crate::model::PuntReason;
    use std::net::Ipv4Addr;

    const OWN: Mac = Mac([0x02, 0x76, 0x6e, 0x00, 0x00, 0x01]);
    const VTEP: Vtep = Vtep {
        mac: Mac([0x02, 0x76, 0x6e, 0xff, 0x00, 0x01]),
        ip: Ipv4Addr::new(10, 1, 0, 1),
    };
    const NS_IP: Ipv4Addr = Ipv4Addr::new(10, 1, 0, 2);
    const TAP: Mac = Mac([0x02, 0xaa, 0, 0, 0, 0x02]);
    const GUEST: Mac = Mac([0x02, 0x76, 0x6e, 0x00, 0x01, 0x00]);
    const PEER: Mac = Mac([0x02, 0xbb, 0, 0, 0, 0x02]);

    fn agent(variant: Variant) -> Agent {
        Agent::new(&Config {
            fdb: vec!["00:00:00:00:00:00=10.1.0.2".parse().unwrap()],
            neigh: vec!["10.1.0.2=02:aa:00:00:00:02".parse().unwrap()],
            variant,
        })
    }

    fn frame(dst: Mac, src: Mac) -> Vec<u8> {
        let mut f = dst.0.to_vec();
        f.extend_from_slice(&src.0);
        f.extend_from_slice(&[0x08, 0x06]);
        f.extend(0..46u8);
        f
    }

    fn vni() -> Vni {
        Vni::new(100).unwrap()
    }

    fn message(h: ExceptionHeader, frame: &[u8]) -> Vec<u8> {
        let mut m = Vec::new();
        h.write(OWN, OWN, frame, &mut m);
        m
    }

    /// A `MISS` as the card writes it: VF 0's queue pair 0, VNI 100.
    fn miss(inner: &[u8]) -> Vec<u8> {
        message(ExceptionHeader::miss(vni(), 0, 0, VTEP), inner)
    }

    /// A `PUNT` of a frame from 10.1.0.2 behind the TAP.
    fn punt(inner: &[u8], reason: PuntReason) -> Vec<u8> {
        let from = Remote {
            ip: NS_IP,
            mac: TAP,
        };
        message(ExceptionHeader::punt(vni(), from, reason), inner)
    }

    /// The header and the frame of a message the agent wrote.
    fn parsed(m: &Result<Vec<u8>, String>) -> (ExceptionHeader, Vec<u8>) {
        let m = m.as_ref().expect("a message");
        let (h, frame) = ExceptionHeader::parse(m).expect("a well-formed message");
        (h, m[frame].to_vec())
    }

    #[test]
    fn a_miss_becomes_the_control_event_and_its_vtep() {
        let inner = frame(Mac::BROADCAST, GUEST);
        let i = incoming(&miss(&inner)).unwrap().unwrap();
        assert_eq!(
            i.event,
            Event::VxlanMiss {
                vni: 100,
                function: "vf0".into(),
                vnic: 0,
                frame: Frame(inner.clone()),
            }
        );
        assert_eq!(i.vtep, Some(VTEP));
        // A card without a VTEP names none.
        let none = Vtep {
            mac: Mac::default(),
            ip: Ipv4Addr::UNSPECIFIED,
        };
        let i = incoming(&message(ExceptionHeader::miss(vni(), 2, 1, none), &inner))
            .unwrap()
            .unwrap();
        assert!(
            matches!(&i.event, Event::VxlanMiss { function, vnic: 1, .. } if function == "vf2")
        );
        assert_eq!(i.vtep, None);
    }

    #[test]
    fn a_punt_becomes_the_control_event() {
        let inner = frame(GUEST, PEER);
        for reason in [PuntReason::Unknown, PuntReason::Moved] {
            let i = incoming(&punt(&inner, reason)).unwrap().unwrap();
            assert_eq!(
                i.event,
                Event::VxlanPunt {
                    vni: 100,
                    outer_src_ip: NS_IP,
                    outer_src_mac: TAP,
                    reason,
                    frame: Frame(inner.clone()),
                }
            );
        }
        let mut m = punt(&inner, PuntReason::Moved);
        m[42] = 3;
        assert!(incoming(&m).unwrap_err().contains("reason 3"));
    }

    #[test]
    fn answers_seen_again_and_bad_messages_are_not_requests() {
        let send = message(ExceptionHeader::answer(MsgType::Send, 100), &[0; 14]);
        assert_eq!(incoming(&send), Ok(None));
        assert!(incoming(&send[..40]).is_err());
        let mut m = miss(&frame(Mac::BROADCAST, GUEST));
        m[18..22].copy_from_slice(&[0, 0, 0, 0]);
        assert!(incoming(&m).unwrap_err().contains("VNI 0 outside"));

        let mut a = agent(Variant::A);
        let h = handle(&mut a, &send, OWN);
        assert!(h.log.is_empty() && h.writes.is_empty());
        let h = handle(&mut a, &m, OWN);
        assert!(h.writes.is_empty());
        assert!(h.log[0].starts_with("ignored a message: "), "{:?}", h.log);
        assert_eq!(a.counters.requests, 0);
    }

    #[test]
    fn variant_a_answers_a_miss_with_add_then_send() {
        let mut a = agent(Variant::A);
        let inner = frame(Mac::BROADCAST, GUEST);
        let h = handle(&mut a, &miss(&inner), OWN);
        assert_eq!(
            h.log,
            vec!["miss vni 100 vf0/0 to ff:ff:ff:ff:ff:ff: 10.1.0.2 via 02:aa:00:00:00:02: vxlan-add, vxlan-send"]
        );
        assert_eq!(h.writes.len(), 2);
        let add = h.writes[0].1.as_ref().unwrap();
        #[rustfmt::skip]
        let want: [u8; 46] = [
            0x02, 0x76, 0x6e, 0x00, 0x00, 0x01,
            0x02, 0x76, 0x6e, 0x00, 0x00, 0x01,
            0x88, 0xb5, 0x01, 0x81, 0x00, 0x00,
            0x00, 0x00, 0x00, 100,
            0xff, 0xff, 0x00, 0x00,
            10, 1, 0, 2,
            0x02, 0xaa, 0x00, 0x00, 0x00, 0x02,
            0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0, 0, 0, 0,
        ];
        assert_eq!(add[..], want);
        assert_eq!(
            parsed(&h.writes[1].1),
            (ExceptionHeader::answer(MsgType::Send, 100), inner)
        );
        assert!(matches!(h.writes[1].0, Request::VxlanSend { vni: 100, .. }));

        // Written: the frame counts as sent; no answer is awaited.
        for (r, _) in &h.writes {
            assert_eq!(a.written(r, Ok(())), None);
        }
        assert_eq!((a.counters.requests, a.counters.installs), (1, 1));
        assert_eq!((a.counters.sent, a.counters.drops), (1, 0));
        // A write that failed is a drop, and logged.
        let note = a.written(&h.writes[1].0, Err("No buffer space available"));
        assert!(note.unwrap().contains("vxlan-send not written"));
        assert_eq!(a.counters.drops, 1);
    }

    #[test]
    fn variant_b_takes_the_vtep_from_the_miss_and_sends_uplink() {
        let mut a = agent(Variant::B);
        assert_eq!(a.vtep(), None);
        let inner = frame(PEER, GUEST);
        let h = handle(&mut a, &miss(&inner), OWN);
        assert_eq!(a.vtep(), Some(VTEP));
        assert_eq!(h.writes.len(), 2, "{:?}", h.log);
        let (uh, outer) = parsed(&h.writes[1].1);
        assert_eq!(uh.ty, MsgType::Uplink);
        assert_eq!(uh.vni, 100, "UPLINK carries the miss's VNI");
        // The card's own decapsulation takes the agent's outer frame
        // apart into the inner frame, from the VTEP the MISS named.
        let d = crate::vxlan::wire::decapsulate(&outer, NS_IP).expect("VxLAN for 10.1.0.2");
        assert_eq!(
            (d.vni, d.outer_src_ip, d.outer_src_mac),
            (100, VTEP.ip, VTEP.mac)
        );
        assert_eq!(&outer[0..6], &TAP.0);
        assert_eq!(&outer[d.inner], &inner[..]);
    }

    #[test]
    fn a_punt_is_answered_with_add_then_deliver() {
        let mut a = agent(Variant::A);
        let inner = frame(GUEST, PEER);
        let h = handle(&mut a, &punt(&inner, PuntReason::Unknown), OWN);
        assert_eq!(
            h.log,
            vec!["punt vni 100 (unknown) from 10.1.0.2 02:aa:00:00:00:02 inner 02:bb:00:00:00:02: vxlan-add, vxlan-deliver (fdb 02:bb:00:00:00:02 learned)"]
        );
        let remote = Remote {
            ip: NS_IP,
            mac: TAP,
        };
        assert_eq!(
            parsed(&h.writes[0].1),
            (ExceptionHeader::add(100, PEER, remote), vec![])
        );
        assert_eq!(
            parsed(&h.writes[1].1),
            (ExceptionHeader::answer(MsgType::Deliver, 100), inner)
        );
        for (r, _) in &h.writes {
            assert_eq!(a.written(r, Ok(())), None);
        }
        assert_eq!((a.counters.punts, a.counters.delivered), (1, 1));
        assert_eq!(a.fdb(PEER), Some((NS_IP, crate::agent::Origin::Learned)));
    }

    #[test]
    fn a_frame_too_long_for_a_message_is_not_written() {
        let mut a = agent(Variant::A);
        let mut inner = frame(Mac::BROADCAST, GUEST);
        inner.resize(MAX_MESSAGE - exception::FRAME_OFFSET, 0);
        let h = handle(&mut a, &miss(&inner), OWN);
        assert_eq!(h.writes[1].1.as_ref().map(Vec::len), Ok(MAX_MESSAGE));
        inner.push(0);
        let h = handle(&mut a, &miss(&inner), OWN);
        let why = h.writes[1].1.as_ref().unwrap_err();
        assert!(why.contains("does not fit"), "{why}");
        let note = a.written(&h.writes[1].0, Err(why)).unwrap();
        assert!(note.contains("not written"), "{note}");
        assert_eq!(a.counters.drops, 1);
    }

    #[test]
    fn a_missing_netdev_is_an_error() {
        let stop = AtomicBool::new(false);
        let mut a = agent(Variant::A);
        let mut log = Vec::new();
        let e = run_pf(&mut a, "vnic-no-such0", &stop, &mut log).unwrap_err();
        assert!(matches!(e, AgentError::Netdev { .. }), "{e}");
        assert!(log.is_empty());
    }
}
