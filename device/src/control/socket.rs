//! The control socket: newline-delimited JSON requests and answers, and an
//! event stream for subscribers, served from vnicd's event loop
//! (docs/management.md, "The control socket").
//!
//! Clients are served like vfio-user clients: non-blocking, with bounded
//! buffers, so a slow or hostile control client cannot stall the card. A
//! request runs between turns of the data path.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use log::{info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::card::Card;
use crate::control::api::{Event, Request, Response, MAX_REQUEST_BYTES};

/// Control clients served at once.
pub const MAX_CLIENTS: usize = 16;
/// Answers and events waiting for one client before it is disconnected.
pub const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;

/// One control client: its socket and its session.
struct Client {
    stream: UnixStream,
    session: Session,
}

/// The socket-independent part of a control client: newline framing of
/// its requests, their answers and whether it subscribed to events. The
/// socket feeds it bytes; tests and fuzzers feed it directly, through the
/// same code vnicd runs.
#[derive(Debug, Default)]
pub struct Session {
    /// Bytes read but not yet a whole line.
    input: Vec<u8>,
    /// The current line outgrew [`MAX_REQUEST_BYTES`]: skip to its end.
    skipping: bool,
    /// Answers (and events, for a subscriber) not yet sent.
    output: Vec<u8>,
    subscribed: bool,
}

/// What became of a client after serving it.
#[derive(Debug, PartialEq, Eq)]
pub enum Served {
    Open,
    Gone,
}

pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Option<Client>>,
}

impl ControlSocket {
    /// Serves `listener`, bound at `path` (the server binds it with the
    /// control socket's mode), and watches it as `token`.
    pub fn listen(
        listener: UnixListener,
        path: &Path,
        registry: &Registry,
        token: Token,
    ) -> io::Result<Self> {
        listener.set_nonblocking(true)?;
        registry.register(
            &mut SourceFd(&listener.as_raw_fd()),
            token,
            Interest::READABLE,
        )?;
        Ok(ControlSocket {
            listener,
            path: path.into(),
            clients: (0..MAX_CLIENTS).map(|_| None).collect(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts waiting clients; client `i` is watched as `token(i)`.
    pub fn accept(&mut self, registry: &Registry, token: impl Fn(usize) -> Token) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("control socket: accept: {e}");
                    return;
                }
            };
            let Some(i) = self.clients.iter().position(Option::is_none) else {
                warn!("control socket: {MAX_CLIENTS} clients already; refusing one");
                continue;
            };
            if let Err(e) = stream.set_nonblocking(true).and_then(|()| {
                registry.register(
                    &mut SourceFd(&stream.as_raw_fd()),
                    token(i),
                    Interest::READABLE | Interest::WRITABLE,
                )
            }) {
                warn!("control socket: cannot watch a client: {e}");
                continue;
            }
            self.clients[i] = Some(Client {
                stream,
                session: Session::default(),
            });
        }
    }

    /// Reads client `i`'s requests and runs them on `card`. The answers are
    /// sent by [`ControlSocket::flush`], which the server calls once it has
    /// carried out what the requests imply for it (sockets of enabled VFs),
    /// so a client that has its answer sees the whole effect.
    pub fn serve(&mut self, i: usize, card: &mut Card, registry: &Registry) -> Served {
        let Some(client) = self.clients.get_mut(i).and_then(Option::as_mut) else {
            return Served::Open;
        };
        let served = client.serve(card);
        if served == Served::Gone {
            self.drop_client(i, registry);
        }
        served
    }

    /// Sends client `i` the answers waiting for it.
    pub fn flush(&mut self, i: usize, registry: &Registry) {
        let gone = self
            .clients
            .get_mut(i)
            .and_then(Option::as_mut)
            .is_some_and(|c| c.flush() == Served::Gone);
        if gone {
            self.drop_client(i, registry);
        }
    }

    /// Sends `events` to every subscriber.
    pub fn broadcast(&mut self, events: &[Event], registry: &Registry) {
        if events.is_empty() {
            return;
        }
        let mut lines = Vec::new();
        for e in events {
            serde_json::to_writer(&mut lines, e).expect("events serialise");
            lines.push(b'\n');
        }
        for i in 0..self.clients.len() {
            let gone = match &mut self.clients[i] {
                Some(c) if c.session.subscribed => {
                    c.session.output.extend_from_slice(&lines);
                    c.flush() == Served::Gone
                }
                _ => false,
            };
            if gone {
                self.drop_client(i, registry);
            }
        }
    }

    fn drop_client(&mut self, i: usize, registry: &Registry) {
        if let Some(c) = self.clients[i].take() {
            let _ = registry.deregister(&mut SourceFd(&c.stream.as_raw_fd()));
        }
    }
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Client {
    fn serve(&mut self, card: &mut Card) -> Served {
        let mut buf = [0u8; 64 * 1024];
        loop {
            match self.stream.read(&mut buf) {
                Ok(0) => return Served::Gone,
                Ok(n) => self.session.take_input(&buf[..n], card),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    info!("control client: {e}");
                    return Served::Gone;
                }
            }
            // A client pipelining many requests gets answers as it goes;
            // one that does not read them is dropped by flush.
            if self.session.output.len() > MAX_PENDING_BYTES / 4 && self.flush() == Served::Gone {
                return Served::Gone;
            }
        }
        Served::Open
    }

    /// Writes what the socket takes now; a client that lets too much pile
    /// up is dropped.
    fn flush(&mut self) -> Served {
        while !self.session.output.is_empty() {
            match self.stream.write(&self.session.output) {
                Ok(0) => return Served::Gone,
                Ok(n) => {
                    self.session.output.drain(..n);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Served::Gone,
            }
        }
        if self.session.output.len() > MAX_PENDING_BYTES {
            warn!("control client does not read its answers; disconnecting");
            return Served::Gone;
        }
        Served::Open
    }
}

impl Session {
    /// Splits input into lines and runs each whole one on `card`, queueing
    /// its answer; a line longer than [`MAX_REQUEST_BYTES`] is answered
    /// with an error and skipped to its end.
    pub fn take_input(&mut self, mut bytes: &[u8], card: &mut Card) {
        while let Some(nl) = bytes.iter().position(|&b| b == b'\n') {
            let (line, rest) = (&bytes[..nl], &bytes[nl + 1..]);
            bytes = rest;
            if std::mem::take(&mut self.skipping) {
                self.input.clear();
                continue;
            }
            self.input.extend_from_slice(line);
            let line = std::mem::take(&mut self.input);
            self.answer(&line, card);
        }
        if self.skipping {
            return;
        }
        self.input.extend_from_slice(bytes);
        if self.input.len() > MAX_REQUEST_BYTES {
            self.input.clear();
            self.skipping = true;
            self.reply(&Response::error(format!(
                "request longer than {MAX_REQUEST_BYTES} bytes"
            )));
        }
    }

    fn answer(&mut self, line: &[u8], card: &mut Card) {
        if line.iter().all(u8::is_ascii_whitespace) {
            return;
        }
        let response = match serde_json::from_slice::<Request>(line) {
            Err(e) => Response::error(format!("bad request: {e}")),
            Ok(Request::Subscribe {}) => {
                self.subscribed = true;
                Response::ok(serde_json::Value::Null)
            }
            Ok(req) => match card.handle(req) {
                Ok(v) => Response::ok(v),
                Err(e) => Response::error(e.to_string()),
            },
        };
        self.reply(&response);
    }

    fn reply(&mut self, r: &Response) {
        serde_json::to_writer(&mut self.output, r).expect("responses serialise");
        self.output.push(b'\n');
    }

    /// The answers (and events) produced so far and not yet taken, as
    /// newline-terminated JSON.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Whether the client asked for the event stream.
    pub fn subscribed(&self) -> bool {
        self.subscribed
    }
}
