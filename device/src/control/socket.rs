//! The control socket: newline-delimited JSON requests and answers, and an
//! event stream for subscribers, served from vnicd's event loop
//! (docs/management.md, "The control socket").
//!
//! Clients are served like vfio-user clients: non-blocking, with bounded
//! buffers, so a slow or hostile control client cannot stall the card. A
//! request runs between turns of the data path.
//!
//! Slots and backpressure (docs/management.md, "Clients, slots and
//! backpressure"):
//! - A client's requests are answered while fewer than [`PAUSE_BYTES`] of
//!   its answers wait; beyond that the card stops answering and reading
//!   its requests (they wait in the socket and in its [`Session`]) until
//!   the client has read enough.
//! - A client that completes no request within the timeout, or that takes
//!   none of its waiting answers or events for as long, is closed; so is
//!   a subscriber with more than [`MAX_PENDING_BYTES`] of events waiting.
//! - When all [`MAX_CLIENTS`] slots are taken, a newcomer takes the slot of
//!   the longest-idle client that is no subscriber and has nothing in
//!   progress; only if there is none is the newcomer refused. Whoever is
//!   closed this way is told why in one error answer first.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

use crate::card::Card;
use crate::clientlog::rate_limited;
use crate::control::api::{Request, Response, MAX_REQUEST_BYTES};
use crate::model::Event;
use crate::protocol::{error_reply_to_start, starts_vfio_user};

/// Control clients served at once.
pub const MAX_CLIENTS: usize = 32;
/// Answers waiting for one client from which the card stops answering and
/// reading its requests until the client reads.
pub const PAUSE_BYTES: usize = 256 * 1024;
/// Events (and answers) waiting for one subscriber before it is
/// disconnected. Answers alone stay near [`PAUSE_BYTES`].
pub const MAX_PENDING_BYTES: usize = 4 * 1024 * 1024;
/// How long a client may stay without completing its first request, and
/// how long answers or events may wait with the client taking none of
/// them, before it is closed (vnicd `--control-timeout-ms` for tests).
pub const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);
/// Reads of one client's socket per turn of the event loop (64 KiB
/// each), so a client that writes without pause cannot hold the loop.
const READS_PER_TURN: usize = 16;

/// One control client: its socket and its session.
struct Client {
    stream: UnixStream,
    session: Session,
    /// When it connected, or last had a request answered.
    active: Instant,
    /// Since when answers or events have waited with the socket taking
    /// none of them.
    stalled: Option<Instant>,
    /// Requests may be left unanswered (in the session or in the socket)
    /// although no new readable edge will come: serve it again once its
    /// answers are below [`PAUSE_BYTES`].
    more: bool,
    /// It shut down its sending side: answer what it sent, then close.
    hung_up: bool,
    /// Its first bytes (up to 4), until they say whether it speaks
    /// vfio-user (see [`Client::misdirected`]).
    head: Vec<u8>,
    /// Its first bytes were a vfio-user message: QEMU at the control
    /// socket. It was answered with an error reply and is to be closed.
    misdirected: bool,
}

/// The errno a vfio-user client at the control socket gets in its error
/// reply: QEMU prints "version reply: Protocol wrong type for socket".
pub const WRONG_PROTOCOL_ERRNO: i32 = libc::EPROTOTYPE;

/// The socket-independent part of a control client: newline framing of
/// its requests, their answers, backpressure and whether it subscribed to
/// events. The socket feeds it bytes; tests and fuzzers feed it directly,
/// through the same code vnicd runs.
#[derive(Debug, Default)]
pub struct Session {
    /// Bytes received and not yet answered: whole lines waiting for room
    /// in `output`, then the start of the next line.
    input: Vec<u8>,
    /// Bytes at the start of `input` known to hold no newline.
    scanned: usize,
    /// The current line outgrew [`MAX_REQUEST_BYTES`]: skip to its end.
    skipping: bool,
    /// Answers (and events, for a subscriber) not yet sent.
    output: Vec<u8>,
    subscribed: bool,
    /// Lines answered so far.
    answered: u64,
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
    /// See [`CLIENT_TIMEOUT`].
    timeout: Duration,
    /// vfio-user clients turned away so far (their log lines are
    /// rate-limited by it).
    misdirected: u64,
    /// Clients to serve again without waiting for an event (see
    /// [`Client::more`]).
    again: Vec<usize>,
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
            timeout: CLIENT_TIMEOUT,
            misdirected: 0,
            again: Vec::new(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Replaces [`CLIENT_TIMEOUT`].
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// Accepts waiting clients; client `i` is watched as `token(i)`. With
    /// every slot taken, a newcomer displaces the longest-idle client, or
    /// is refused if none is idle; both are counted in `card`'s stats.
    pub fn accept(&mut self, registry: &Registry, token: impl Fn(usize) -> Token, card: &mut Card) {
        loop {
            let stream = match self.listener.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("control socket: accept: {e}");
                    return;
                }
            };
            let free = self.clients.iter().position(Option::is_none);
            let Some(i) = free.or_else(|| self.idlest()) else {
                refuse(stream, card);
                continue;
            };
            if self.clients[i].is_some() {
                let c = &mut card.counters_mut().control;
                c.displaced += 1;
                if rate_limited(c.displaced) {
                    warn!(
                        "control socket: {MAX_CLIENTS} clients; closing the longest idle for a \
                         new one ({} so far)",
                        c.displaced
                    );
                }
                let why = format!(
                    "closed to make room for a new client: all {MAX_CLIENTS} control clients \
                     were connected and this one was idle longest"
                );
                self.close(i, registry, &why);
            }
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
                active: Instant::now(),
                stalled: None,
                more: false,
                hung_up: false,
                head: Vec::new(),
                misdirected: false,
            });
        }
    }

    /// The slot of the client to displace for a newcomer: no subscriber,
    /// nothing waiting to be answered or sent; of those, one that never
    /// completed a request if any (it connected longest ago), else the one
    /// idle longest.
    fn idlest(&self) -> Option<usize> {
        self.clients
            .iter()
            .enumerate()
            .filter_map(|(i, c)| Some((i, c.as_ref()?)))
            .filter(|(_, c)| c.idle())
            .min_by_key(|(_, c)| (c.session.answered > 0, c.active))
            .map(|(i, _)| i)
    }

    /// Answers client `i`'s requests on `card`, as many as its waiting
    /// answers leave room for, reading more from its socket. The new
    /// answers are sent by [`ControlSocket::flush`], which the server calls
    /// once it has carried out what the requests imply for it (sockets of
    /// enabled VFs), so a client that has its answer sees the whole effect.
    pub fn serve(&mut self, i: usize, card: &mut Card, registry: &Registry) -> Served {
        let Some(client) = self.clients.get_mut(i).and_then(Option::as_mut) else {
            return Served::Open;
        };
        let served = client.serve(card, Instant::now());
        if client.misdirected {
            self.misdirected += 1;
            if rate_limited(self.misdirected) {
                warn!(
                    "control socket: a client sent a vfio-user message (QEMU's vfio-user-pci \
                     pointed at {}?); answered it with error {WRONG_PROTOCOL_ERRNO} (EPROTOTYPE) \
                     and closed it: the function sockets are pf.sock, vf0.sock, ... ({} so far)",
                    self.path.display(),
                    self.misdirected
                );
            }
        }
        if served == Served::Gone {
            self.drop_client(i, registry);
        }
        served
    }

    /// Sends client `i` the answers waiting for it. A client whose reading
    /// stopped for backpressure (or at the end of its turn) and that has
    /// room again is served again in the next turn: see
    /// [`ControlSocket::take_again`].
    pub fn flush(&mut self, i: usize, registry: &Registry) {
        let Some(client) = self.clients.get_mut(i).and_then(Option::as_mut) else {
            return;
        };
        if client.flush(Instant::now()) == Served::Gone {
            self.drop_client(i, registry);
        } else if client.more && !client.session.paused() {
            self.again.push(i);
        }
    }

    /// Clients to serve in this turn although no event came for them.
    pub fn take_again(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.again)
    }

    /// Whether a client waits for [`ControlSocket::take_again`]: the loop
    /// must not block.
    pub fn has_again(&self) -> bool {
        !self.again.is_empty()
    }

    /// Sends `events` to every subscriber; one with more than
    /// [`MAX_PENDING_BYTES`] waiting is disconnected.
    pub fn broadcast(&mut self, events: &[Event], card: &mut Card, registry: &Registry) {
        if events.is_empty() {
            return;
        }
        let mut lines = Vec::new();
        for e in events {
            serde_json::to_writer(&mut lines, e).expect("events serialise");
            lines.push(b'\n');
        }
        let now = Instant::now();
        for i in 0..self.clients.len() {
            let Some(c) = self.clients[i].as_mut().filter(|c| c.session.subscribed) else {
                continue;
            };
            c.session.output.extend_from_slice(&lines);
            if c.flush(now) == Served::Gone {
                self.drop_client(i, registry);
            } else if c.session.output.len() > MAX_PENDING_BYTES {
                not_reading(card, "does not read its events");
                self.drop_client(i, registry);
            }
        }
    }

    /// When [`ControlSocket::expire`] next has something to do.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.clients
            .iter()
            .flatten()
            .filter_map(|c| c.deadline(self.timeout))
            .min()
    }

    /// Closes, as of `now`, the clients that completed no request within
    /// the timeout, and those that took none of their waiting answers or
    /// events for as long.
    pub fn expire(&mut self, now: Instant, card: &mut Card, registry: &Registry) {
        for i in 0..self.clients.len() {
            let Some(c) = self.clients[i].as_mut() else {
                continue;
            };
            if c.deadline(self.timeout).is_none_or(|t| t > now) {
                continue;
            }
            if c.stalled.is_none() {
                let counters = &mut card.counters_mut().control;
                counters.timed_out += 1;
                if rate_limited(counters.timed_out) {
                    info!(
                        "control client sent no request within {}; closing ({} so far)",
                        seconds(self.timeout),
                        counters.timed_out
                    );
                }
                let why = format!("closed: no request within {}", seconds(self.timeout));
                self.close(i, registry, &why);
                continue;
            }
            // The client may have read without the socket saying so yet.
            let before = c.session.output.len();
            if c.flush(now) == Served::Gone {
                self.drop_client(i, registry);
            } else if c.session.output.len() == before {
                not_reading(card, "does not read its answers");
                self.drop_client(i, registry);
            }
        }
    }

    /// Closes client `i`, first telling it `why` in an error answer if
    /// the socket takes it at once.
    fn close(&mut self, i: usize, registry: &Registry, why: &str) {
        if let Some(c) = &self.clients[i] {
            let _ = (&c.stream).write(&error_line(why));
        }
        self.drop_client(i, registry);
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

/// Tells a newcomer no slot is free, and closes it.
fn refuse(stream: UnixStream, card: &mut Card) {
    let c = &mut card.counters_mut().control;
    c.refused += 1;
    if rate_limited(c.refused) {
        warn!(
            "control socket: all {MAX_CLIENTS} clients are subscribers or busy; refusing a new \
             one ({} so far)",
            c.refused
        );
    }
    let why = format!(
        "control socket busy: all {MAX_CLIENTS} clients are subscribers or have requests in \
         progress; try again later"
    );
    if stream.set_nonblocking(true).is_ok() {
        let _ = (&stream).write(&error_line(&why));
    }
}

/// Counts and logs (rate-limited) a client dropped for not reading.
fn not_reading(card: &mut Card, what: &str) {
    let c = &mut card.counters_mut().control;
    c.not_reading += 1;
    if rate_limited(c.not_reading) {
        warn!(
            "control client {what}; disconnecting ({} so far)",
            c.not_reading
        );
    }
}

/// `why` as an error answer line (also what a control client at a
/// function's socket is told, `server::greeting`).
pub fn error_line(why: &str) -> Vec<u8> {
    let mut line = serde_json::to_vec(&Response::error(why)).expect("responses serialise");
    line.push(b'\n');
    line
}

/// `d` for a message: "30 s", "1.5 s".
fn seconds(d: Duration) -> String {
    format!("{} s", d.as_secs_f64())
}

impl Client {
    /// Sends what waits from earlier turns, answers the requests that
    /// waited for room, then reads and answers more until the socket is
    /// empty, the answers reach [`PAUSE_BYTES`] or the turn's reads are
    /// used up.
    fn serve(&mut self, card: &mut Card, now: Instant) -> Served {
        // Earlier answers' effects are carried out already: they may go.
        if self.flush(now) == Served::Gone {
            return Served::Gone;
        }
        let answered = self.session.answered;
        self.session.resume(card);
        self.more = false;
        let mut buf = [0u8; 64 * 1024];
        let mut reads = 0;
        while !self.session.paused() && !self.hung_up {
            if reads == READS_PER_TURN {
                self.more = true;
                break;
            }
            reads += 1;
            match self.stream.read(&mut buf) {
                Ok(0) => self.hung_up = true,
                Ok(n) if self.vfio_user(&buf[..n]) => {
                    self.misdirected = true;
                    let reply = error_reply_to_start(&self.head, WRONG_PROTOCOL_ERRNO);
                    let _ = (&self.stream).write(&reply);
                    return Served::Gone;
                }
                Ok(n) => self.session.take_input(&buf[..n], card),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    info!("control client: {e}");
                    return Served::Gone;
                }
            }
        }
        if self.session.answered != answered {
            self.active = now;
        }
        if self.session.paused() {
            self.more = true;
        }
        self.finished()
    }

    /// Whether the connection's first bytes, with `more` just read, are
    /// a vfio-user message: its command field (bytes 2–3) names a
    /// vfio-user command, which no text line can. Undecided below 4 bytes;
    /// the bytes go to the session meanwhile (a line that short is text).
    fn vfio_user(&mut self, more: &[u8]) -> bool {
        if self.session.answered > 0 || self.head.len() == 4 {
            return false;
        }
        let take = more.len().min(4 - self.head.len());
        self.head.extend_from_slice(&more[..take]);
        starts_vfio_user(&self.head) == Some(true)
    }

    /// Writes what the socket takes now.
    fn flush(&mut self, now: Instant) -> Served {
        let mut wrote = false;
        while !self.session.output.is_empty() {
            match self.stream.write(&self.session.output) {
                Ok(0) => return Served::Gone,
                Ok(n) => {
                    self.session.output.drain(..n);
                    wrote = true;
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(_) => return Served::Gone,
            }
        }
        self.stalled = match (self.session.output.is_empty(), wrote) {
            (true, _) => None,
            (false, true) => Some(now),
            (false, false) => self.stalled.or(Some(now)),
        };
        self.finished()
    }

    /// Gone once a client that hung up has all its answers.
    fn finished(&self) -> Served {
        let done = self.session.output.is_empty() && !self.session.has_requests();
        if self.hung_up && done {
            Served::Gone
        } else {
            Served::Open
        }
    }

    /// Whether it may be displaced by a newcomer: no subscriber, nothing
    /// to answer or send.
    fn idle(&self) -> bool {
        !self.session.subscribed
            && !self.more
            && self.session.output.is_empty()
            && !self.session.has_requests()
    }

    /// When it is to be closed unless something happens: the end of the
    /// wait for its first request, or for it to take waiting output.
    fn deadline(&self, timeout: Duration) -> Option<Instant> {
        if let Some(since) = self.stalled {
            return Some(since + timeout);
        }
        (self.session.answered == 0 && !self.session.subscribed).then(|| self.active + timeout)
    }
}

impl Session {
    /// Takes `bytes` received from the client and answers the whole lines
    /// (see [`Session::resume`]).
    pub fn take_input(&mut self, bytes: &[u8], card: &mut Card) {
        self.input.extend_from_slice(bytes);
        self.resume(card);
    }

    /// Runs the whole lines received on `card`, in order, queueing their
    /// answers, while fewer than [`PAUSE_BYTES`] of answers wait; the
    /// others wait for [`Session::take_output`] (or the socket) to make
    /// room. A line longer than [`MAX_REQUEST_BYTES`] is answered with an
    /// error as soon as it is that long, and skipped to its end.
    pub fn resume(&mut self, card: &mut Card) {
        let mut input = std::mem::take(&mut self.input);
        let mut start = 0;
        while !self.paused() {
            let from = start + self.scanned;
            let Some(nl) = input[from..].iter().position(|&b| b == b'\n') else {
                self.scanned = input.len() - start;
                if self.skipping {
                    start = input.len();
                    self.scanned = 0;
                } else if self.scanned > MAX_REQUEST_BYTES {
                    start = input.len();
                    self.scanned = 0;
                    self.skipping = true;
                    self.reply(&Response::error(format!(
                        "request longer than {MAX_REQUEST_BYTES} bytes"
                    )));
                }
                break;
            };
            let line = start..from + nl;
            start = line.end + 1;
            self.scanned = 0;
            if !std::mem::take(&mut self.skipping) {
                self.answer(&input[line], card);
            }
        }
        input.drain(..start);
        self.input = input;
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
        self.answered += 1;
    }

    /// Whether so many answers wait that no more requests are run (nor
    /// read from the socket) until they are taken.
    pub fn paused(&self) -> bool {
        self.output.len() >= PAUSE_BYTES
    }

    /// Whether whole request lines wait for room to be answered.
    pub fn has_requests(&self) -> bool {
        self.input[self.scanned..].contains(&b'\n')
    }

    /// The answers (and events) produced so far and not yet taken, as
    /// newline-terminated JSON.
    pub fn output(&self) -> &[u8] {
        &self.output
    }

    /// Takes the answers (and events) waiting, as the socket does when the
    /// client reads; call [`Session::resume`] then to run the requests
    /// that waited for room.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.output)
    }

    /// Lines answered so far (an oversized line counts once).
    pub fn answered(&self) -> u64 {
        self.answered
    }

    /// Whether the client asked for the event stream.
    pub fn subscribed(&self) -> bool {
        self.subscribed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::card::CardConfig;

    fn card() -> Card {
        Card::new(CardConfig::default()).unwrap()
    }

    fn answers(bytes: &[u8]) -> Vec<serde_json::Value> {
        bytes
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).unwrap())
            .collect()
    }

    /// `show` of a function that does not exist: a short error naming it,
    /// so answers can be told apart.
    fn numbered(n: usize) -> String {
        format!("{{\"op\":\"show\",\"function\":\"x{n}\"}}\n")
    }

    #[test]
    fn pipelined_requests_beyond_the_bound_wait_and_are_answered_in_order_once_taken() {
        let mut c = card();
        let mut s = Session::default();
        // Big answers (list) between numbered small ones.
        let mut input = String::new();
        for n in 0..2000 {
            input.push_str(&numbered(n));
            input.push_str("{\"op\":\"list\"}\n");
        }
        s.take_input(input.as_bytes(), &mut c);
        assert!(s.paused(), "{} bytes of answers", s.output().len());
        assert!(s.has_requests());
        let first = s.output().len();
        assert!(
            first < PAUSE_BYTES + 64 * 1024,
            "{first} bytes: one answer past the bound"
        );
        // Nothing is run while paused, whatever arrives.
        s.take_input(numbered(9999).as_bytes(), &mut c);
        assert_eq!(s.output().len(), first);
        let mut all = Vec::new();
        loop {
            let out = s.take_output();
            if out.is_empty() {
                break;
            }
            all.extend(answers(&out));
            s.resume(&mut c);
        }
        assert!(!s.has_requests());
        assert_eq!(all.len(), 4001);
        assert_eq!(s.answered(), 4001);
        for (n, pair) in all.chunks(2).enumerate() {
            let n = if n == 2000 { 9999 } else { n };
            let e = pair[0]["error"].as_str().unwrap();
            assert!(e.contains(&format!("\"x{n}\"")), "answer {n}: {e}");
            if let Some(list) = pair.get(1) {
                assert_eq!(list["ok"], true);
            }
        }
    }

    #[test]
    fn a_partial_line_waits_for_its_newline_across_inputs() {
        let mut c = card();
        let mut s = Session::default();
        s.take_input(b"{\"op\":\"li", &mut c);
        assert!(s.output().is_empty());
        assert!(!s.has_requests());
        s.take_input(b"st\"}\n\n  \n{\"op\"", &mut c);
        assert_eq!(answers(s.output()).len(), 1, "blank lines get no answer");
        assert_eq!(answers(s.output())[0]["ok"], true);
        assert_eq!(s.answered(), 1);
    }

    #[test]
    fn an_oversized_line_is_refused_before_its_end_and_skipped() {
        let mut c = card();
        let mut s = Session::default();
        let chunk = vec![b'x'; 64 * 1024];
        for _ in 0..(MAX_REQUEST_BYTES / chunk.len() + 1) {
            s.take_input(&chunk, &mut c);
        }
        let a = answers(&s.take_output());
        assert_eq!(a.len(), 1);
        assert!(a[0]["error"].as_str().unwrap().contains("longer than"));
        s.take_input(&chunk, &mut c);
        s.take_input(b"xx\n{\"op\":\"fdb-list\"}\n", &mut c);
        let a = answers(&s.take_output());
        assert_eq!(a.len(), 1, "{a:?}");
        assert_eq!(a[0]["ok"], true);
    }

    #[test]
    fn subscribe_marks_the_session() {
        let mut c = card();
        let mut s = Session::default();
        assert!(!s.subscribed());
        s.take_input(b"{\"op\":\"subscribe\"}\n", &mut c);
        assert!(s.subscribed());
        assert_eq!(answers(s.output())[0]["ok"], true);
    }
}
