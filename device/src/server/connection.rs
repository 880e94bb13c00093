//! One client connection: framing of vfio-user messages on a non-blocking
//! UNIX stream, the file descriptors that come with them, and a bounded queue
//! of replies.
//!
//! The header is read on its own so that the descriptors a client attaches to
//! a message (SCM_RIGHTS arrive with its first byte) are collected for that
//! message. Nothing is allocated for a body before its header is validated.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd};
use std::os::unix::net::UnixStream;

use libc::{c_void, iovec};
use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::protocol::{starts_json, MessageHeader, ProtocolError, HEADER_SIZE, MAX_MSG_FDS};

/// Replies queued for a client that does not read them; past this the
/// client is disconnected rather than letting vnicd's memory grow.
pub const MAX_TX_BYTES: usize = 8 << 20;
/// The same bound for the card's own DMA_WRITEs in migration mode
/// (crate::dma::relay), which carry frames: QEMU reads them in its I/O
/// thread, and a busy host may leave it a moment behind.
pub const MAX_RELAY_TX_BYTES: usize = 64 << 20;
/// Messages up to this size are read only once all of their bytes have
/// arrived, so a worker that dies leaves the stream at a message boundary
/// (docs/restart.md, "A message cut by the crash"). QEMU's messages are
/// far smaller; a larger one is read as it comes.
pub const WHOLE_MESSAGE: usize = 64 << 10;

/// A complete message off the wire.
pub struct Message {
    pub header: MessageHeader,
    pub body: Vec<u8>,
    pub fds: Vec<File>,
}

/// A reply on its way out, with the descriptor it carries, if any (a
/// GET_REGION_INFO reply for a mappable region: SCM_RIGHTS with its first
/// byte).
pub struct Reply {
    pub bytes: Vec<u8>,
    pub fd: Option<File>,
}

impl From<Vec<u8>> for Reply {
    fn from(bytes: Vec<u8>) -> Self {
        Reply { bytes, fd: None }
    }
}

/// Result of trying to read one message.
pub enum ReadOutcome {
    Message(Message),
    /// A header that cannot be trusted: reply with this error, then drop the
    /// client (the stream cannot be resynchronised).
    BadHeader(MessageHeader, ProtocolError),
    WouldBlock,
    Closed,
    Fatal(String),
    /// The connection's first bytes are JSON, not vfio-user: a control
    /// client (vnicctl) at a function's socket. Tell it, then drop it.
    NotVfioUser,
}

/// What the next message in the socket looks like.
enum Next {
    /// All of its bytes are there: this many.
    Whole(usize),
    /// Not all yet.
    Wait,
    /// Read it as it comes.
    Stream,
}

#[derive(Default)]
struct Rx {
    hdr: [u8; HEADER_SIZE],
    hdr_len: usize,
    header: Option<MessageHeader>,
    body: Vec<u8>,
    body_len: usize,
    fds: Vec<File>,
}

pub struct Connection {
    stream: UnixStream,
    rx: Rx,
    tx: VecDeque<Reply>,
    /// Bytes of `tx.front()` already written.
    tx_sent: usize,
    tx_bytes: usize,
    /// Bound on `tx_bytes`: [`MAX_TX_BYTES`], or [`MAX_RELAY_TX_BYTES`]
    /// once the card wrote through the client.
    tx_limit: usize,
    /// VERSION has been negotiated.
    pub versioned: bool,
    /// The first bytes have been looked at (see [`ReadOutcome::NotVfioUser`]).
    greeted: bool,
}

impl Connection {
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        stream.set_nonblocking(true)?;
        Ok(Connection {
            stream,
            rx: Rx::default(),
            tx: VecDeque::new(),
            tx_sent: 0,
            tx_bytes: 0,
            tx_limit: MAX_TX_BYTES,
            versioned: false,
            greeted: false,
        })
    }

    pub fn stream(&self) -> &UnixStream {
        &self.stream
    }

    /// Part of a message has been read, not all of it.
    pub fn mid_message(&self) -> bool {
        self.rx.hdr_len > 0 || self.rx.header.is_some()
    }

    /// What the next message looks like, without taking anything: whole
    /// in the socket (its size), not yet whole (wait), or something the
    /// read path takes as it comes (a header in pieces, a bad one, one
    /// larger than [`WHOLE_MESSAGE`], an error, the end).
    fn next_message(&self) -> Next {
        let mut hdr = [0u8; HEADER_SIZE];
        // SAFETY: recv writes at most hdr.len() bytes into hdr; MSG_PEEK
        // leaves them (and any descriptors) in the socket.
        let n = unsafe {
            libc::recv(
                self.stream.as_raw_fd(),
                hdr.as_mut_ptr().cast(),
                hdr.len(),
                libc::MSG_PEEK | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 || (n as usize) < HEADER_SIZE {
            // An error or EAGAIN (the read path finds it), the end, or a
            // header sent in pieces (read as it comes, and recorded as a
            // message begun).
            return Next::Stream;
        }
        let header = MessageHeader::decode(&hdr);
        let size = header.size as usize;
        if header.validate().is_err() || size > WHOLE_MESSAGE {
            return Next::Stream;
        }
        let mut available: libc::c_int = 0;
        // SAFETY: FIONREAD writes one c_int into `available`.
        let rc = unsafe { libc::ioctl(self.stream.as_raw_fd(), libc::FIONREAD, &mut available) };
        if rc < 0 || self.peer_closed() {
            Next::Stream
        } else if available as usize >= size {
            Next::Whole(size)
        } else {
            Next::Wait
        }
    }

    /// Takes a message that is whole in the socket with one read (header,
    /// body and descriptors together), so that a worker killed at any
    /// moment leaves the stream at a message boundary. If the read comes
    /// back short (the message's bytes were sent in parts), the rest is
    /// read as it comes.
    fn read_whole(&mut self, size: usize) -> Option<ReadOutcome> {
        let mut buf = vec![0u8; size];
        let n = match self.recv(&mut buf) {
            Ok(0) => return Some(ReadOutcome::Closed),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                return Some(ReadOutcome::WouldBlock)
            }
            // Nothing taken: the read path tries again.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => return None,
            Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                return Some(ReadOutcome::Fatal(format!(
                    "more than {MAX_MSG_FDS} file descriptors"
                )))
            }
            Err(e) => return Some(ReadOutcome::Fatal(e.to_string())),
        };
        if self.rx.fds.len() > MAX_MSG_FDS {
            return Some(ReadOutcome::Fatal(format!(
                "more than {MAX_MSG_FDS} file descriptors"
            )));
        }
        if n >= HEADER_SIZE {
            let hdr: [u8; HEADER_SIZE] = buf[..HEADER_SIZE].try_into().expect("16 bytes");
            let header = MessageHeader::decode(&hdr);
            if n == size {
                let fds = std::mem::take(&mut self.rx.fds);
                return Some(ReadOutcome::Message(Message {
                    header,
                    body: buf.split_off(HEADER_SIZE),
                    fds,
                }));
            }
            self.rx.hdr = hdr;
            self.rx.hdr_len = HEADER_SIZE;
            self.rx.header = Some(header);
            self.rx.body = vec![0; header.body_len()];
            self.rx.body[..n - HEADER_SIZE].copy_from_slice(&buf[HEADER_SIZE..n]);
            self.rx.body_len = n - HEADER_SIZE;
        } else {
            self.rx.hdr[..n].copy_from_slice(&buf[..n]);
            self.rx.hdr_len = n;
        }
        None
    }

    /// The client shut its side: what it sent is all there will be.
    fn peer_closed(&self) -> bool {
        let mut pfd = libc::pollfd {
            fd: self.stream.as_raw_fd(),
            events: libc::POLLRDHUP,
            revents: 0,
        };
        // SAFETY: poll reads and writes one pollfd, which `pfd` is; a zero
        // timeout never blocks.
        let rc = unsafe { libc::poll(&mut pfd, 1, 0) };
        rc > 0 && pfd.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
    }

    /// Reads into `buf`, collecting descriptors. Ok(0) means end of stream.
    fn recv(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut raw = [-1; MAX_MSG_FDS];
        let mut iov = [iovec {
            iov_base: buf.as_mut_ptr() as *mut c_void,
            iov_len: buf.len(),
        }];
        // SAFETY: the iovec points at `buf`, which we borrow mutably for the
        // call, so the kernel may write any bytes into it.
        let (n, nfds) = unsafe { self.stream.recv_with_fds(&mut iov, &mut raw) }
            .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
        for &fd in &raw[..nfds] {
            // SAFETY: recv_with_fds returned these descriptors to us and
            // nothing else owns them; the File closes each one on drop.
            self.rx.fds.push(unsafe { File::from_raw_fd(fd) });
        }
        Ok(n)
    }

    /// Reads until one whole message is in, or the socket would block.
    /// A message no larger than [`WHOLE_MESSAGE`] is not started until all
    /// of it has arrived, then taken with one read.
    pub fn read_message(&mut self) -> ReadOutcome {
        if self.greeted && !self.mid_message() {
            match self.next_message() {
                Next::Wait => return ReadOutcome::WouldBlock,
                Next::Whole(size) => {
                    if let Some(outcome) = self.read_whole(size) {
                        return outcome;
                    }
                }
                Next::Stream => {}
            }
        }
        loop {
            let res = if self.rx.header.is_none() {
                let mut hdr = self.rx.hdr;
                let at = self.rx.hdr_len;
                let r = self.recv(&mut hdr[at..]);
                self.rx.hdr = hdr;
                r.map(|n| (n, true))
            } else {
                let mut body = std::mem::take(&mut self.rx.body);
                let at = self.rx.body_len;
                let r = self.recv(&mut body[at..]);
                self.rx.body = body;
                r.map(|n| (n, false))
            };
            let (n, in_header) = match res {
                Ok(v) => v,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return ReadOutcome::WouldBlock,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.raw_os_error() == Some(libc::ENOBUFS) => {
                    return ReadOutcome::Fatal(format!("more than {MAX_MSG_FDS} file descriptors"))
                }
                Err(e) => return ReadOutcome::Fatal(e.to_string()),
            };
            if n == 0 {
                let mid = self.rx.hdr_len > 0 || self.rx.header.is_some();
                return if mid {
                    ReadOutcome::Fatal("client closed the socket in the middle of a message".into())
                } else {
                    ReadOutcome::Closed
                };
            }
            if self.rx.fds.len() > MAX_MSG_FDS {
                return ReadOutcome::Fatal(format!("more than {MAX_MSG_FDS} file descriptors"));
            }
            if in_header {
                self.rx.hdr_len += n;
                if !self.greeted {
                    match starts_json(&self.rx.hdr[..self.rx.hdr_len]) {
                        Some(true) => return ReadOutcome::NotVfioUser,
                        Some(false) => self.greeted = true,
                        None => {}
                    }
                }
                if self.rx.hdr_len < HEADER_SIZE {
                    continue;
                }
                let header = MessageHeader::decode(&self.rx.hdr);
                if let Err(e) = header.validate() {
                    self.rx = Rx::default();
                    return ReadOutcome::BadHeader(header, e);
                }
                self.rx.header = Some(header);
                self.rx.body = vec![0; header.body_len()];
                self.rx.body_len = 0;
            } else {
                self.rx.body_len += n;
            }
            if let Some(header) = self.rx.header {
                if self.rx.body_len == header.body_len() {
                    let rx = std::mem::take(&mut self.rx);
                    return ReadOutcome::Message(Message {
                        header,
                        body: rx.body,
                        fds: rx.fds,
                    });
                }
            }
        }
    }

    /// Queues a reply; false if the client has stopped reading for too long.
    pub fn queue(&mut self, reply: impl Into<Reply>) -> bool {
        let reply = reply.into();
        self.tx_bytes += reply.bytes.len();
        self.tx.push_back(reply);
        self.tx_bytes <= self.tx_limit
    }

    /// Queues a DMA_WRITE of the card's; false if the client has stopped
    /// reading for too long ([`MAX_RELAY_TX_BYTES`]).
    pub fn queue_relayed(&mut self, msg: Vec<u8>) -> bool {
        self.tx_limit = MAX_RELAY_TX_BYTES;
        self.tx_bytes += msg.len();
        self.tx.push_back(msg.into());
        self.tx_bytes <= MAX_RELAY_TX_BYTES
    }

    /// Writes the rest of `reply` from `sent`; its descriptor goes with the
    /// first byte, once.
    fn write_reply(stream: &UnixStream, reply: &mut Reply, sent: usize) -> io::Result<usize> {
        let rest = &reply.bytes[sent..];
        match reply.fd.as_ref() {
            Some(fd) => {
                let n = stream
                    .send_with_fd(rest, fd.as_raw_fd())
                    .map_err(|e| io::Error::from_raw_os_error(e.errno()))?;
                reply.fd = None;
                Ok(n)
            }
            None => (&*stream).write(rest),
        }
    }

    /// Writes queued replies until done or the socket is full.
    pub fn flush(&mut self) -> io::Result<()> {
        while let Some(front) = self.tx.front_mut() {
            match Self::write_reply(&self.stream, front, self.tx_sent) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.tx_sent += n;
                    if self.tx_sent == front.bytes.len() {
                        self.tx_bytes -= front.bytes.len();
                        self.tx.pop_front();
                        self.tx_sent = 0;
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
