//! A line-oriented client of vnicd's control socket for tests
//! (docs/management.md).

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::time::Duration;

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
}
