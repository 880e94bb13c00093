//! A line-oriented client of vnicd's control socket for tests
//! (docs/management.md).

use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::Vnicd;

/// A line-oriented control client.
pub struct Ctl {
    pub reader: BufReader<UnixStream>,
    pub writer: UnixStream,
}

impl Ctl {
    pub fn connect(vnicd: &Vnicd) -> Ctl {
        let s = UnixStream::connect(vnicd.socket_dir().join("control.sock")).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        Ctl {
            writer: s.try_clone().unwrap(),
            reader: BufReader::new(s),
        }
    }

    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write request");
    }

    pub fn line(&mut self) -> Value {
        let mut l = String::new();
        self.reader.read_line(&mut l).expect("read answer");
        serde_json::from_str(&l).unwrap_or_else(|e| panic!("answer {l:?}: {e}"))
    }

    /// Sends a request, returns the answer.
    pub fn call(&mut self, req: Value) -> Value {
        self.send_raw(format!("{req}\n").as_bytes());
        self.line()
    }

    /// Sends a request that must succeed; returns its result.
    pub fn ok(&mut self, req: Value) -> Value {
        let a = self.call(req.clone());
        assert_eq!(a["ok"], true, "{req} refused: {a}");
        a["result"].clone()
    }

    /// Sends a request that must fail; returns the error message.
    pub fn refused(&mut self, req: Value) -> String {
        let a = self.call(req.clone());
        assert_eq!(a["ok"], false, "{req} accepted: {a}");
        a["error"].as_str().unwrap().to_string()
    }

    /// A control connection turned into an event stream.
    pub fn subscribe(vnicd: &Vnicd) -> Ctl {
        let mut ctl = Ctl::connect(vnicd);
        ctl.ok(serde_json::json!({"op": "subscribe"}));
        ctl
    }

    /// The next event called `name` (others are skipped), within `wait`.
    pub fn next_event(&mut self, name: &str, wait: Duration) -> Value {
        let deadline = Instant::now() + wait;
        loop {
            assert!(Instant::now() < deadline, "no {name} event");
            let e = self.line();
            if e["event"] == name {
                return e;
            }
        }
    }

    /// Events of VxLAN requests (`vxlan-miss`, `vxlan-punt`) that arrive
    /// within `t`.
    pub fn vxlan_requests_within(&mut self, t: Duration) -> Vec<Value> {
        let stream = self.reader.get_ref().try_clone().unwrap();
        stream.set_read_timeout(Some(t)).unwrap();
        let mut out = Vec::new();
        let mut line = String::new();
        loop {
            match self.reader.read_line(&mut line) {
                Ok(n) if n > 0 && line.ends_with('\n') => {
                    let e: Value = serde_json::from_str(&line).unwrap();
                    if matches!(e["event"].as_str(), Some("vxlan-miss" | "vxlan-punt")) {
                        out.push(e);
                    }
                    line.clear();
                }
                Ok(_) => break,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => break,
                Err(e) => panic!("reading events: {e}"),
            }
        }
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        out
    }

    /// Card counter `name` of `stats`.
    pub fn card_stat(&mut self, name: &str) -> u64 {
        self.ok(serde_json::json!({"op": "stats"}))["card"][name]
            .as_u64()
            .unwrap_or_else(|| panic!("no card counter {name}"))
    }
}

/// A vnicd with one VF (VxLAN, `vni`) whose UDP uplink's far end is
/// `wire` (the test plays the other host), the VTEP 02:76:6e:ff:00:01 /
/// 10.1.0.1, and a control connection. Returns them with vnicd's own UDP
/// port.
pub fn vxlan_card_on_wire(wire: &std::net::UdpSocket, vni: u32) -> (Vnicd, Ctl, u16) {
    let (port, _) = crate::guest::free_udp_ports();
    let vnicd = Vnicd::start(&[
        "--vfs",
        "1",
        "--uplink",
        &format!(
            "udp:127.0.0.1:{port},{}",
            wire.local_addr().expect("wire address")
        ),
    ]);
    let mut ctl = Ctl::connect(&vnicd);
    ctl.ok(serde_json::json!({"op": "set-vtep", "mac": "02:76:6e:ff:00:01", "ip": "10.1.0.1"}));
    ctl.ok(serde_json::json!({"op": "set-attr", "function": "vf0", "vni": vni}));
    (vnicd, ctl, port)
}
