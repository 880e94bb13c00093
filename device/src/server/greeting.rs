//! What a client is told before the card closes it at the door: a
//! function's second client (QEMU started twice on one socket), and a
//! control client (vnicctl) at a function's socket. Each gets an answer
//! in its own protocol, so it can say why instead of "EOF" or a timeout
//! (docs/protocol.md, "Clients at the wrong socket").
//!
//! A turned-away client is kept until its first bytes say what it speaks:
//! a vfio-user client gets an error reply with `EBUSY` to its first
//! message (QEMU's VERSION: "version reply: Device or resource busy"), a
//! JSON client a JSON error line. At most [`MAX_TURNED_AWAY`] wait at
//! once; a newcomer beyond that closes the oldest unanswered, so clients
//! that never send cannot hold on to anything.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::control::socket::error_line;
use crate::protocol::{error_reply_to_start, starts_json, HEADER_SIZE};

/// Turned-away clients waiting for their first bytes.
pub const MAX_TURNED_AWAY: usize = 8;

/// The JSON error line for a control client at function `name`'s socket.
pub fn not_the_control_socket(name: &str) -> Vec<u8> {
    error_line(&format!(
        "{name}.sock is the vfio-user socket of function {name} (for QEMU's vfio-user-pci), \
         not vnicd's control socket: use control.sock in the same directory, or vnicd's \
         --control path"
    ))
}

/// A turned-away client: its function's name and its first bytes.
struct Waiting {
    stream: UnixStream,
    name: String,
    head: [u8; HEADER_SIZE],
    len: usize,
    /// When it came, to close the oldest when all slots are taken.
    seq: u64,
}

/// What a turned-away client turned out to be.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Answered {
    /// Not yet: its first bytes are not all in.
    Waiting,
    /// A vfio-user client, told EBUSY.
    Busy,
    /// A JSON client, told this is no control socket.
    Json,
    /// It hung up (or failed) before saying anything.
    Gone,
}

#[derive(Default)]
pub struct TurnedAway {
    slots: [Option<Waiting>; MAX_TURNED_AWAY],
    next_seq: u64,
}

impl TurnedAway {
    /// Keeps `stream`, a client turned away from function `name`, watched
    /// as `token(slot)`, until it can be answered; with every slot taken,
    /// the oldest is closed unanswered. Returns the slot, if it could be
    /// watched.
    pub fn add(
        &mut self,
        stream: UnixStream,
        name: &str,
        registry: &Registry,
        token: impl Fn(usize) -> Token,
    ) -> Option<usize> {
        let slot = match self.slots.iter().position(Option::is_none) {
            Some(free) => free,
            None => {
                let oldest = (0..MAX_TURNED_AWAY)
                    .min_by_key(|&i| self.slots[i].as_ref().map_or(0, |w| w.seq))
                    .unwrap_or(0);
                self.close(oldest, registry);
                oldest
            }
        };
        stream.set_nonblocking(true).ok()?;
        registry
            .register(
                &mut SourceFd(&stream.as_raw_fd()),
                token(slot),
                Interest::READABLE,
            )
            .ok()?;
        self.next_seq += 1;
        self.slots[slot] = Some(Waiting {
            stream,
            name: name.to_string(),
            head: [0; HEADER_SIZE],
            len: 0,
            seq: self.next_seq,
        });
        Some(slot)
    }

    /// Reads what client `slot` sent; once its first bytes say what it
    /// speaks, answers it and closes it. Returns what it was, and the name
    /// of the function it came to.
    pub fn ready(&mut self, slot: usize, registry: &Registry) -> (Answered, String) {
        let Some(w) = self.slots.get_mut(slot).and_then(Option::as_mut) else {
            return (Answered::Gone, String::new());
        };
        let name = w.name.clone();
        let answered = w.read_and_answer();
        if answered != Answered::Waiting {
            self.close(slot, registry);
        }
        (answered, name)
    }

    fn close(&mut self, slot: usize, registry: &Registry) {
        if let Some(w) = self.slots[slot].take() {
            let _ = registry.deregister(&mut SourceFd(&w.stream.as_raw_fd()));
        }
    }
}

impl Waiting {
    fn read_and_answer(&mut self) -> Answered {
        while self.len < HEADER_SIZE {
            match (&self.stream).read(&mut self.head[self.len..]) {
                Ok(0) => return Answered::Gone,
                Ok(n) => self.len += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(_) => return Answered::Gone,
            }
            if starts_json(&self.head[..self.len]) == Some(true) {
                let _ = (&self.stream).write(&not_the_control_socket(&self.name));
                return Answered::Json;
            }
        }
        if self.len < HEADER_SIZE {
            return Answered::Waiting;
        }
        self.drain();
        let _ = (&self.stream).write(&error_reply_to_start(&self.head, libc::EBUSY));
        Answered::Busy
    }

    /// Reads and drops what else has arrived (the rest of the message, at
    /// most [`DRAIN_BYTES`]): closing a UNIX socket with unread data makes
    /// the peer's reads fail with ECONNRESET once it has read the answer.
    fn drain(&mut self) {
        let mut sink = [0u8; 4096];
        let mut left = DRAIN_BYTES;
        while left > 0 {
            match (&self.stream).read(&mut sink) {
                Ok(0) => return,
                Ok(n) => left = left.saturating_sub(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return,
            }
        }
    }
}

/// Bytes of a turned-away client's message read and dropped before it is
/// answered: more than a VERSION message with its capabilities.
const DRAIN_BYTES: usize = 64 * 1024;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::MessageHeader;
    use mio::Poll;

    #[test]
    fn a_turned_away_vfio_user_client_gets_ebusy_and_a_json_one_a_line() {
        let poll = Poll::new().unwrap();
        let mut away = TurnedAway::default();
        let (ours, mut qemu) = UnixStream::pair().unwrap();
        let slot = away.add(ours, "vf1", poll.registry(), Token).unwrap();
        assert_eq!(away.ready(slot, poll.registry()).0, Answered::Waiting);
        // VERSION, id 5, in two pieces.
        let mut version = vec![5, 0, 1, 0, 40, 0, 0, 0];
        qemu.write_all(&version).unwrap();
        assert_eq!(away.ready(slot, poll.registry()).0, Answered::Waiting);
        version = vec![0; 8 + 24];
        qemu.write_all(&version).unwrap();
        assert_eq!(
            away.ready(slot, poll.registry()),
            (Answered::Busy, "vf1".to_string())
        );
        let mut reply = [0u8; HEADER_SIZE];
        qemu.read_exact(&mut reply).unwrap();
        let h = MessageHeader::decode(&reply);
        assert_eq!((h.id, h.command, h.error), (5, 1, libc::EBUSY as u32));
        assert!(h.flags.error());
        assert_eq!(qemu.read(&mut reply).unwrap(), 0, "closed");

        let (ours, mut vnicctl) = UnixStream::pair().unwrap();
        let slot = away.add(ours, "pf", poll.registry(), Token).unwrap();
        vnicctl.write_all(b"{\"op\":\"list\"}\n").unwrap();
        assert_eq!(away.ready(slot, poll.registry()).0, Answered::Json);
        let mut line = String::new();
        vnicctl.read_to_string(&mut line).unwrap();
        let answer: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(answer["ok"], false);
        assert!(answer["error"]
            .as_str()
            .unwrap()
            .contains("pf.sock is the vfio-user socket of function pf"));
    }

    #[test]
    fn a_full_list_closes_the_oldest_unanswered() {
        let poll = Poll::new().unwrap();
        let mut away = TurnedAway::default();
        let mut peers = Vec::new();
        for _ in 0..MAX_TURNED_AWAY + 1 {
            let (ours, theirs) = UnixStream::pair().unwrap();
            away.add(ours, "pf", poll.registry(), Token).unwrap();
            peers.push(theirs);
        }
        let mut b = [0u8; 1];
        assert_eq!(peers[0].read(&mut b).unwrap(), 0, "the oldest is closed");
        peers[1].set_nonblocking(true).unwrap();
        assert_eq!(
            peers[1].read(&mut b).unwrap_err().kind(),
            io::ErrorKind::WouldBlock,
            "the others still wait"
        );
    }
}
