//! The vfio-user server: one `mio` event loop serving every function's socket.
//!
//! Each function has a listening socket (`pf.sock`, `vf0.sock`, ...) and at
//! most one client at a time; clients of different functions may be different
//! QEMU processes. A client that misbehaves gets error replies, or is
//! disconnected, and nothing else: other functions never see it. A client may
//! disconnect and a new one connect later (QEMU restart, migration).
//!
//! Event sources are named by token: listeners at even numbers, connections
//! at odd numbers (`2 * function + 1`), the stop descriptor at [`STOP`], the
//! interrupt-moderation timer at [`TIMER`], the control socket at
//! [`CONTROL`] and its clients from [`CONTROL_CLIENTS`] on, the uplink's
//! descriptor (a TAP device or a UDP socket) at [`UPLINK`].
//!
//! The control socket (`control/socket.rs`) is served by the same loop:
//! management requests run between data-path turns. After each, the
//! listeners follow the card's enabled VFs: a disabled VF's socket is
//! removed (its client disconnected first) and an enabled one's is created.
//!
//! After a client's messages the loop runs the data path (frames whose
//! doorbells rang, see `datapath.rs`); held-back interrupts are fired from a
//! timerfd, which has the microsecond resolution moderation needs (a poll
//! timeout only has milliseconds). The same timer wakes the loop for the
//! control clients' timeouts (`ControlSocket::next_deadline`).

mod connection;
mod dispatch;
mod greeting;
pub mod sockets;

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};

use std::time::{Duration, Instant};

use log::{error, info, warn};
use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Token};
use thiserror::Error;
use vmm_sys_util::timerfd::TimerFd;

pub use connection::MAX_TX_BYTES;
use connection::{Connection, ReadOutcome};
use greeting::{Answered, TurnedAway, MAX_TURNED_AWAY};
pub use sockets::SocketAccess;

use crate::card::Card;
use crate::clientlog::Cause;
use crate::control::socket::{ControlSocket, Served, MAX_CLIENTS};
use crate::keeper;
use crate::protocol::{dma_write, error_reply, MsgType};
use crate::restart::{names, CardRecord, ClientRecord, Restart};

/// Token of the descriptor that stops the loop (a signalfd in vnicd).
const STOP: Token = Token(usize::MAX - 1);
/// Token of the interrupt-moderation timer.
const TIMER: Token = Token(usize::MAX - 2);
/// Token of the control socket's listener.
const CONTROL: Token = Token(usize::MAX - 3);
/// Token of the uplink's descriptor.
const UPLINK: Token = Token(usize::MAX - 4);
/// Control client `i` is `CONTROL_CLIENTS + i`.
const CONTROL_CLIENTS: usize = usize::MAX - 64;
const _: () = assert!(
    CONTROL_CLIENTS + MAX_CLIENTS <= UPLINK.0,
    "control tokens overlap"
);
/// Turned-away client `i` (a function's second client, `greeting.rs`) is
/// `TURNED_AWAY + i`.
const TURNED_AWAY: usize = CONTROL_CLIENTS - MAX_TURNED_AWAY;
/// The control socket's file name in the socket directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// Messages handled for one client before the loop turns to the others.
const MESSAGES_PER_TURN: usize = 256;

fn listener_token(index: usize) -> Token {
    Token(2 * index)
}

fn conn_token(index: usize) -> Token {
    Token(2 * index + 1)
}

#[derive(Debug, Error)]
pub enum ServerError {
    #[error("cannot create socket directory {0}: {1}")]
    SocketDir(PathBuf, io::Error),
    #[error(
        "socket directory {0} is served by another vnicd{pid}; stop it first, or use another \
         --socket-dir",
        pid = .1.map(|p| format!(" (pid {p})")).unwrap_or_default()
    )]
    Locked(PathBuf, Option<u32>),
    #[error("cannot lock socket directory {0}: {1}")]
    Lock(PathBuf, io::Error),
    #[error("cannot listen on {0}: {1}")]
    Bind(PathBuf, io::Error),
    #[error("event loop: {0}")]
    Poll(io::Error),
    #[error("cannot listen on control socket {0}: {1}")]
    Control(PathBuf, io::Error),
}

struct Listener {
    socket: UnixListener,
    path: PathBuf,
}

/// How [`Server::run`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ended {
    /// SIGTERM or SIGINT: the sockets are removed as the server drops.
    Stopped,
    /// A successor serves the card now (docs/restart.md): leave without
    /// removing or touching anything.
    HandedOver,
}

/// How long a worker waits for its keeper's word on a hand-over before it
/// takes the card back.
const HAND_OVER_WAIT: Duration = Duration::from_secs(30);

/// What became of a client after [`Client::serve`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientState {
    /// Everything it sent so far is answered (the socket would block).
    Open,
    /// More messages may be waiting; revisit without blocking.
    Busy,
    /// It hung up, broke the framing or stopped reading: drop it (and
    /// [`Card::disconnect`] its function).
    Gone,
}

/// One function's vfio-user client: its connection and what it has
/// negotiated. The event loop owns one per attached function; tests and
/// fuzzers drive one over a socket pair without the loop, through exactly
/// the code vnicd runs.
pub struct Client {
    conn: Connection,
    /// A message since the last [`Client::take_changed`] may have changed
    /// what the state record keeps.
    changed: bool,
}

impl Client {
    /// A client on `stream` (made non-blocking).
    pub fn new(stream: UnixStream) -> io::Result<Self> {
        Connection::new(stream).map(|conn| Client {
            conn,
            changed: true,
        })
    }

    /// The client an earlier worker served on `stream`, as the state
    /// record left it.
    pub fn resume(stream: UnixStream, rec: ClientRecord) -> io::Result<Self> {
        let mut client = Client::new(stream)?;
        client.conn.versioned = rec.versioned;
        Ok(client)
    }

    /// What the state record keeps of it.
    pub fn record(&self) -> ClientRecord {
        ClientRecord {
            versioned: self.conn.versioned,
            mid_message: self.conn.mid_message(),
        }
    }

    /// Whether a message since the last call may have changed durable
    /// state.
    pub fn take_changed(&mut self) -> bool {
        std::mem::take(&mut self.changed)
    }

    /// The client's socket.
    pub fn stream(&self) -> &UnixStream {
        self.conn.stream()
    }

    /// Reads and answers up to [`MESSAGES_PER_TURN`] messages for function
    /// `index` of `card`, then sends the replies the socket takes. A PF
    /// admin command runs right after the message that wrote it, so the
    /// client's next read sees its status.
    pub fn serve(&mut self, card: &mut Card, index: usize) -> ClientState {
        let conn = &mut self.conn;
        let mut state = ClientState::Open;
        for n in 0.. {
            let Some(func) = card.function_mut(index) else {
                return ClientState::Open;
            };
            if func.admin_pending() {
                card.run_admin(index);
                continue;
            }
            // Switch changes a message asked for (a MAC, a VLAN, a receive
            // filter) take effect before the next message, which may read
            // what became of them.
            if func.switch_ops_pending() {
                card.apply_switch_ops(index);
                continue;
            }
            if n >= MESSAGES_PER_TURN {
                state = ClientState::Busy;
                break;
            }
            match conn.read_message() {
                ReadOutcome::Message(msg)
                    if msg.header.flags.msg_type() == MsgType::Reply as u8 =>
                {
                    // QEMU answering the card's DMA_WRITEs (migration mode).
                    func.relay_reply(&msg.header);
                }
                ReadOutcome::Message(msg) => {
                    let changed = &mut self.changed;
                    if let Some(bytes) = dispatch::handle(func, &mut conn.versioned, msg, changed) {
                        if !conn.queue(bytes) {
                            func.log(
                                Cause::Dropped,
                                format_args!("client stopped reading replies; disconnecting"),
                            );
                            return ClientState::Gone;
                        }
                    }
                }
                ReadOutcome::BadHeader(header, e) => {
                    func.count_protocol_error();
                    func.log(
                        Cause::Dropped,
                        format_args!("malformed message header ({e}); disconnecting"),
                    );
                    // Never a reply to a reply: QEMU aborts on one it
                    // did not ask for.
                    if header.flags.msg_type() == MsgType::Command as u8 {
                        conn.queue(error_reply(&header, e.errno()));
                    }
                    let _ = conn.flush();
                    return ClientState::Gone;
                }
                ReadOutcome::WouldBlock => break,
                ReadOutcome::Closed => {
                    func.log(Cause::Connection, format_args!("client disconnected"));
                    return ClientState::Gone;
                }
                ReadOutcome::Fatal(why) => {
                    func.count_protocol_error();
                    func.log(Cause::Dropped, format_args!("{why}; disconnecting"));
                    return ClientState::Gone;
                }
                ReadOutcome::NotVfioUser => {
                    func.log(
                        Cause::Dropped,
                        format_args!(
                            "a client sent JSON, not vfio-user (vnicctl at a function's socket?); \
                             told it this is not the control socket, disconnecting"
                        ),
                    );
                    conn.queue(greeting::not_the_control_socket(func.name()));
                    let _ = conn.flush();
                    return ClientState::Gone;
                }
            }
        }
        if let Err(e) = conn.flush() {
            if let Some(func) = card.function_mut(index) {
                func.log(
                    Cause::Connection,
                    format_args!("client gone while replying: {e}"),
                );
            }
            return ClientState::Gone;
        }
        state
    }
}

impl Client {
    /// Sends the guest-memory writes function `index` made in migration
    /// mode as DMA_WRITE requests (docs/migration.md, "Live migration").
    pub fn relay(&mut self, card: &mut Card, index: usize) -> ClientState {
        let Some(func) = card.function_mut(index) else {
            return ClientState::Open;
        };
        let batch = func.relay_batch();
        if batch.is_empty() {
            return ClientState::Open;
        }
        for r in batch {
            let msg = dma_write(r.id, r.write.address, &r.write.data, r.reply);
            if !self.conn.queue_relayed(msg) {
                func.log(
                    Cause::Dropped,
                    format_args!("client stopped reading the card's DMA_WRITEs; disconnecting"),
                );
                return ClientState::Gone;
            }
        }
        if let Err(e) = self.conn.flush() {
            func.log(
                Cause::Connection,
                format_args!("client gone while the card wrote through it: {e}"),
            );
            return ClientState::Gone;
        }
        ClientState::Open
    }
}

pub struct Server {
    poll: Poll,
    card: Card,
    /// The socket directory's lock ([`sockets::LOCK_FILE`]), held while
    /// the server lives.
    _lock: std::fs::File,
    /// Mode and group of the function sockets.
    access: SocketAccess,
    /// Every function's socket path, and its listener while it is enabled.
    paths: Vec<PathBuf>,
    listeners: Vec<Option<Listener>>,
    control: ControlSocket,
    conns: Vec<Option<Client>>,
    /// Second clients of a function, until they are told it is busy.
    turned_away: TurnedAway,
    /// Connections that still had data when their turn ended.
    backlog: Vec<usize>,
    timer: TimerFd,
    /// The deadline the timer is armed for.
    timer_due: Option<Instant>,
    /// What outlives this process: descriptors and the state record.
    restart: Restart,
    /// Leave the sockets in place on the way out: a successor serves them.
    handed_over: bool,
    /// What the record keeps of each client, refilled every turn.
    client_records: Vec<Option<ClientRecord>>,
}

impl Server {
    /// Locks `dir` (created if missing, see [`sockets`]) against other
    /// vnicds, then binds one socket per enabled function in it (stale
    /// sockets from a crashed vnicd are replaced, live ones refused) with
    /// `access`'s mode and group, and the control socket at `control`
    /// (default: `dir`/control.sock), vnicd's user's only.
    pub fn new(
        card: Card,
        dir: &Path,
        control: Option<&Path>,
        access: SocketAccess,
    ) -> Result<Self, ServerError> {
        Self::start(card, dir, control, access, Restart::none(), None)
    }

    /// [`Server::new`] for a card worker whose descriptors and state
    /// outlive it (docs/restart.md): what `restart` hands over from an
    /// earlier worker (lock, sockets, clients) is taken over and
    /// `previous`, that worker's record, restored; what is made afresh
    /// is kept for the next one.
    pub fn start(
        card: Card,
        dir: &Path,
        control: Option<&Path>,
        access: SocketAccess,
        mut restart: Restart,
        previous: Option<CardRecord>,
    ) -> Result<Self, ServerError> {
        sockets::create_dir(dir, &access).map_err(|e| ServerError::SocketDir(dir.into(), e))?;
        let lock = match restart.adopt(names::LOCK) {
            Some(fd) => std::fs::File::from(fd),
            None => {
                let lock = sockets::lock_dir(dir).map_err(|e| match e {
                    sockets::LockError::Held(pid) => ServerError::Locked(dir.into(), pid),
                    sockets::LockError::Io(e) => ServerError::Lock(dir.into(), e),
                })?;
                restart.keep_one(names::LOCK, &lock);
                lock
            }
        };
        let poll = Poll::new().map_err(ServerError::Poll)?;
        let paths: Vec<PathBuf> = card
            .functions()
            .iter()
            .map(|f| dir.join(format!("{}.sock", f.name())))
            .collect();
        let control_path = control.map_or_else(|| dir.join(CONTROL_SOCKET), Path::to_path_buf);
        let bind_control = || sockets::bind(&control_path, sockets::CONTROL_SOCKET_MODE, None);
        let control = restart
            .adopt_or(names::CONTROL, UnixListener::from, bind_control)
            .and_then(|l| ControlSocket::listen(l, &control_path, poll.registry(), CONTROL))
            .map_err(|e| ServerError::Control(control_path, e))?;
        let conns = (0..paths.len()).map(|_| None).collect();
        let timer = TimerFd::new().map_err(|e| ServerError::Poll(e.into()))?;
        poll.registry()
            .register(&mut SourceFd(&timer.as_raw_fd()), TIMER, Interest::READABLE)
            .map_err(ServerError::Poll)?;
        if let Some(fd) = card.uplink().fd() {
            poll.registry()
                .register(&mut SourceFd(&fd), UPLINK, Interest::READABLE)
                .map_err(ServerError::Poll)?;
        }
        let mut server = Server {
            poll,
            card,
            _lock: lock,
            access,
            listeners: paths.iter().map(|_| None).collect(),
            paths,
            control,
            conns,
            turned_away: TurnedAway::default(),
            backlog: Vec::new(),
            timer,
            timer_due: None,
            restart,
            handed_over: false,
            client_records: Vec::new(),
        };
        for i in 0..server.paths.len() {
            if server.card.functions()[i].policy().enabled {
                server.listen(i)?;
            }
        }
        server.take_over(previous);
        Ok(server)
    }

    /// Takes over what an earlier worker served: each function's doorbell
    /// page, client and state (a function whose state cannot be taken
    /// back loses its client, and only it), then drops from the store
    /// whatever nothing uses. On a first start, keeps the doorbell pages.
    fn take_over(&mut self, previous: Option<CardRecord>) {
        let started = Instant::now();
        let mut restored = 0;
        for i in 0..self.paths.len() {
            let name = self.card.functions()[i].name().to_string();
            let func = &mut self.card.functions_mut()[i];
            if let Some(fd) = self.restart.adopt(&names::bar_page(&name)) {
                if let Err(e) = func.adopt_bar_page(std::fs::File::from(fd)) {
                    error!("{name}: cannot take the doorbell page over: {e}");
                }
            } else if let Some(file) = func.doorbell_page().file() {
                let file = file.try_clone();
                if let Ok(file) = file {
                    self.restart.keep_one(&names::bar_page(&name), file);
                }
            }
            let Some(fd) = self.restart.adopt(&names::client(&name)) else {
                continue;
            };
            let entry = previous
                .as_ref()
                .and_then(|p| p.functions.iter().find(|e| e.state.name == name));
            let record = entry.and_then(|e| e.client);
            let stream = UnixStream::from(fd);
            let client = match (entry, record) {
                (Some(_), Some(rec)) if rec.mid_message => {
                    error!(
                        "{name}: the previous card worker died in the middle of a message from \
                         this function's client; cutting the client (docs/restart.md)"
                    );
                    self.restart.forget(&names::client(&name));
                    continue;
                }
                (Some(entry), Some(rec)) => {
                    if !self.restart.restore_function(&mut self.card, i, entry) {
                        self.restart.forget(&names::client(&name));
                        continue;
                    }
                    restored += 1;
                    Client::resume(stream, rec)
                }
                // Connected after the last record: nothing was set up yet
                // that the record missed but the connection itself.
                _ => {
                    self.card.connect(i);
                    Client::new(stream)
                }
            };
            match client {
                Ok(client) => self.attach(i, client),
                Err(e) => warn!("{name}: cannot take its client over: {e}"),
            }
        }
        self.restart.prune();
        // The counters as of the last worker's last turn with traffic.
        self.restart.restore_live(&mut self.card);
        if self.restart.restarting() || restored > 0 {
            info!(
                "took over from the previous card worker: {restored} functions with their \
                 clients restored in {} ms",
                started.elapsed().as_millis()
            );
        }
        self.restart.mark_dirty();
        self.after_turn();
    }

    /// Watches `client` as function `index`'s.
    fn attach(&mut self, index: usize, client: Client) {
        let fd = client.stream().as_raw_fd();
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) =
            self.poll
                .registry()
                .register(&mut SourceFd(&fd), conn_token(index), interest)
        {
            warn!("cannot watch client of function {index}: {e}");
            return;
        }
        self.conns[index] = Some(client);
        // What it sent while no worker served is waiting: read it now.
        self.backlog.push(index);
    }

    /// Writes the state record if a client or management changed durable
    /// state (crate::restart), keeps changed descriptors, and tells the
    /// keeper the worker is alive.
    fn after_turn(&mut self) {
        let clients = &mut self.client_records;
        clients.clear();
        for c in &mut self.conns {
            if let Some(c) = c {
                if c.take_changed() {
                    self.restart.mark_dirty();
                }
                clients.push(Some(c.record()));
            } else {
                clients.push(None);
            }
        }
        self.restart.after_turn(&self.card, clients, Instant::now());
    }

    /// Tells whoever started this worker (vnicd's keeper, systemd) that it
    /// serves.
    pub fn ready(&mut self, status: &str) {
        self.restart.ready(status);
    }

    fn listen(&mut self, i: usize) -> Result<(), ServerError> {
        let path = self.paths[i].clone();
        let name = names::listener(self.card.functions()[i].name());
        let bind = || sockets::bind(&path, self.access.mode, self.access.group);
        let socket = self
            .restart
            .adopt_or(&name, UnixListener::from, bind)
            .map_err(|e| ServerError::Bind(path.clone(), e))?;
        socket
            .set_nonblocking(true)
            .map_err(|e| ServerError::Bind(path.clone(), e))?;
        self.poll
            .registry()
            .register(
                &mut SourceFd(&socket.as_raw_fd()),
                listener_token(i),
                Interest::READABLE,
            )
            .map_err(ServerError::Poll)?;
        self.listeners[i] = Some(Listener { socket, path });
        Ok(())
    }

    /// Makes the listeners follow the card's enabled functions.
    fn sync_listeners(&mut self) {
        for i in 0..self.paths.len() {
            let enabled = self.card.functions()[i].policy().enabled;
            match (&self.listeners[i], enabled) {
                (None, true) => {
                    if let Err(e) = self.listen(i) {
                        error!("{e}");
                    }
                }
                (Some(_), false) => {
                    self.drop_client(i);
                    let name = names::listener(self.card.functions()[i].name());
                    self.restart.forget(&name);
                    if let Some(l) = self.listeners[i].take() {
                        let fd = l.socket.as_raw_fd();
                        let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
                        let _ = std::fs::remove_file(&l.path);
                    }
                }
                _ => {}
            }
        }
    }

    /// (function name, socket path) for every function.
    pub fn sockets(&self) -> Vec<(String, PathBuf)> {
        let names = self.card.functions().iter().map(|f| f.name().to_string());
        names.zip(self.paths.iter().cloned()).collect()
    }

    /// The control socket's path.
    pub fn control_path(&self) -> &Path {
        self.control.path()
    }

    /// How long a control client may go without completing its first
    /// request, or without taking any of its waiting answers
    /// (default [`crate::control::socket::CLIENT_TIMEOUT`]).
    pub fn set_control_timeout(&mut self, timeout: Duration) {
        self.control.set_timeout(timeout);
    }

    pub fn card(&self) -> &Card {
        &self.card
    }

    /// Serves until `stop`, a signalfd, delivers SIGTERM or SIGINT (then
    /// the sockets are removed as the server drops), or until a successor
    /// took the card over. SIGUSR1 and SIGUSR2 on it answer a hand-over.
    pub fn run(&mut self, stop: RawFd) -> Result<Ended, ServerError> {
        self.poll
            .registry()
            .register(&mut SourceFd(&stop), STOP, Interest::READABLE)
            .map_err(ServerError::Poll)?;
        let mut events = Events::with_capacity(256);
        loop {
            let timeout = self.next_timeout();
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(ServerError::Poll(e));
            }
            let mut ready: Vec<usize> = std::mem::take(&mut self.backlog);
            let mut control_ready = self.control.take_again();
            let mut control_accept = false;
            let mut uplink = self.card.uplink_pending();
            for ev in events.iter() {
                match ev.token() {
                    STOP => match keeper::read_signal(stop) {
                        Some(libc::SIGTERM | libc::SIGINT) => {
                            info!("stopping");
                            self.restart.stopping();
                            return Ok(Ended::Stopped);
                        }
                        Some(sig) => warn!("signal {sig} outside a hand-over: ignored"),
                        None => {}
                    },
                    // Edge-triggered: read until empty or out of budget
                    // (then the card stays busy and the loop comes back).
                    UPLINK => uplink = true,
                    TIMER => {
                        // Expired: reading it re-arms nothing; run_timers
                        // below fires what is due.
                        let _ = self.timer.wait();
                        self.timer_due = None;
                    }
                    CONTROL => control_accept = true,
                    Token(t) if (CONTROL_CLIENTS..CONTROL_CLIENTS + MAX_CLIENTS).contains(&t) => {
                        control_ready.push(t - CONTROL_CLIENTS);
                    }
                    Token(t) if (TURNED_AWAY..TURNED_AWAY + MAX_TURNED_AWAY).contains(&t) => {
                        self.answer_turned_away(t - TURNED_AWAY);
                    }
                    Token(t) if t % 2 == 0 => self.accept(t / 2),
                    Token(t) => ready.push(t / 2),
                }
            }
            // Clients first: what they sent before a newcomer counts when
            // it looks for an idle client to displace.
            control_ready.sort_unstable();
            control_ready.dedup();
            for i in control_ready {
                self.serve_control(i);
            }
            if let Some(binary) = self.card.take_succession() {
                if let Some(ended) = self.hand_over(&binary, stop) {
                    return Ok(ended);
                }
            }
            if control_accept {
                let registry = self.poll.registry();
                self.control
                    .accept(registry, |i| Token(CONTROL_CLIENTS + i), &mut self.card);
            }
            ready.sort_unstable();
            ready.dedup();
            if !ready.is_empty() || uplink || self.card.busy() {
                self.restart.mark_active();
            }
            for i in ready {
                let state = self.service(i);
                self.card.after_io(i);
                match state {
                    ClientState::Open => {}
                    ClientState::Busy => self.backlog.push(i),
                    ClientState::Gone => self.drop_client(i),
                }
            }
            if uplink {
                self.card.run_uplink();
            }
            self.card.poll_doorbells(Instant::now());
            self.card.run_pending();
            self.card.run_timers(Instant::now());
            self.card.reap_lost_dma();
            let events = self.card.take_events();
            let registry = self.poll.registry();
            self.control.broadcast(&events, &mut self.card, registry);
            self.control
                .expire(Instant::now(), &mut self.card, registry);
            self.card.settle();
            self.relay();
            self.after_turn();
        }
    }

    /// Sends every function's writes made in migration mode.
    fn relay(&mut self) {
        for i in 0..self.conns.len() {
            let Some(client) = self.conns[i].as_mut() else {
                continue;
            };
            if let ClientState::Gone = client.relay(&mut self.card, i) {
                self.drop_client(i);
            }
        }
    }

    /// Answers control client `i`'s requests, makes the listeners follow
    /// what they changed, then sends the answers.
    fn serve_control(&mut self, i: usize) {
        self.restart.mark_dirty();
        if self.control.serve(i, &mut self.card, self.poll.registry()) == Served::Open {
            self.sync_listeners();
            self.control.flush(i, self.poll.registry());
        }
    }

    /// Hands the card over to a worker from `binary` (docs/restart.md,
    /// "Planned restart and upgrade"): between two turns, so no frame is
    /// half-way, every queue context goes to guest memory, the record is
    /// written and the replies sent; then the keeper starts the successor
    /// while this worker waits, touching nothing. SIGUSR1: the successor
    /// serves, this one leaves. SIGUSR2, or no word in time: it failed,
    /// this one serves on.
    fn hand_over(&mut self, binary: &Path, stop: RawFd) -> Option<Ended> {
        info!(
            "handing the card over to a new worker from {}",
            binary.display()
        );
        let started = Instant::now();
        for f in self.card.functions_mut() {
            f.sync_contexts();
        }
        for c in self.conns.iter_mut().flatten() {
            let _ = c.conn.flush();
        }
        self.restart.mark_dirty();
        self.after_turn();
        if !self.restart.keeping() {
            return None;
        }
        let successor = format!("X_VNICD_SUCCESSOR={}", binary.display());
        let keeper = self.card.worker().keeper;
        if keeper {
            self.restart.notify(&successor);
        } else {
            // systemd restarts a worker that exits (Restart=always): the
            // record and the store carry the card over.
            info!("leaving the card to systemd's restart");
            return Some(Ended::HandedOver);
        }
        let deadline = started + HAND_OVER_WAIT;
        let failed = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                self.restart.notify("X_VNICD_SUCCESSOR_ABORT=1");
                break format!("no word from the keeper in {} s", HAND_OVER_WAIT.as_secs());
            }
            if !wait_readable(stop, left) {
                continue;
            }
            match keeper::read_signal(stop) {
                Some(libc::SIGUSR1) => {
                    info!(
                        "the new worker serves the card; this one leaves ({} ms after the \
                         request)",
                        started.elapsed().as_millis()
                    );
                    self.handed_over = true;
                    return Some(Ended::HandedOver);
                }
                Some(libc::SIGUSR2) => {
                    break "the new worker failed to start (vnicd's log says why)".to_string()
                }
                Some(libc::SIGTERM | libc::SIGINT) => {
                    self.restart.stopping();
                    return Some(Ended::Stopped);
                }
                _ => {}
            }
        };
        error!(
            "hand-over to {} failed: {failed}; this worker serves on",
            binary.display()
        );
        self.card.worker_mut().succession_failed = Some(failed);
        None
    }

    /// Zero while work is waiting; otherwise no timeout, with the timer
    /// armed for the next held-back interrupt or control-client timeout.
    fn next_timeout(&mut self) -> Option<Duration> {
        if !self.backlog.is_empty() || self.card.busy() || self.control.has_again() {
            return Some(Duration::ZERO);
        }
        let due = [
            self.card.next_deadline(),
            self.control.next_deadline(),
            self.restart.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()?;
        let now = Instant::now();
        if due <= now {
            return Some(Duration::ZERO);
        }
        if self.timer_due != Some(due) {
            match self.timer.reset(due - now, None) {
                Ok(()) => self.timer_due = Some(due),
                Err(e) => {
                    warn!("moderation timer: {e}; polling instead");
                    return Some(due - now);
                }
            }
        }
        None
    }

    fn accept(&mut self, index: usize) {
        loop {
            let Some(listener) = self.listeners.get(index).and_then(Option::as_ref) else {
                return;
            };
            let stream = match listener.socket.accept() {
                Ok((s, _)) => s,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("accept on {}: {e}", listener.path.display());
                    return;
                }
            };
            let name = self.card.functions()[index].name().to_string();
            // The old client may have gone without its hang-up being handled
            // yet (a QEMU restart races with us): settle it first.
            if self.conns[index].is_some() {
                if let ClientState::Gone = self.service(index) {
                    self.drop_client(index);
                }
            }
            if self.conns[index].is_some() {
                self.log(
                    index,
                    Cause::Dropped,
                    format_args!(
                        "refusing a second client while one is attached (its first message \
                         gets EBUSY)"
                    ),
                );
                let registry = self.poll.registry();
                let token = |i| Token(TURNED_AWAY + i);
                if let Some(slot) = self.turned_away.add(stream, &name, registry, token) {
                    // What it sent already is answered now: an edge came
                    // and went before it was watched.
                    self.answer_turned_away(slot);
                }
                continue;
            }
            let conn = match Client::new(stream) {
                Ok(c) => c,
                Err(e) => {
                    warn!("{name}: cannot set up client: {e}");
                    continue;
                }
            };
            let fd = conn.stream().as_raw_fd();
            let interest = Interest::READABLE | Interest::WRITABLE;
            if let Err(e) =
                self.poll
                    .registry()
                    .register(&mut SourceFd(&fd), conn_token(index), interest)
            {
                warn!("{name}: cannot watch client: {e}");
                continue;
            }
            self.log(index, Cause::Connection, format_args!("client connected"));
            self.restart.keep_one(&names::client(&name), conn.stream());
            self.conns[index] = Some(conn);
            self.card.connect(index);
        }
    }

    /// Answers turned-away client `slot` once its first bytes are in.
    fn answer_turned_away(&mut self, slot: usize) {
        let (answered, name) = self.turned_away.ready(slot, self.poll.registry());
        if answered == Answered::Json {
            if let Some(index) = self.card.functions().iter().position(|f| f.name() == name) {
                self.log(
                    index,
                    Cause::Dropped,
                    format_args!(
                        "a client sent JSON, not vfio-user (vnicctl at a function's socket?); \
                         told it this is not the control socket"
                    ),
                );
            }
        }
    }

    /// A line about function `index` that its client caused, rate-limited.
    fn log(&mut self, index: usize, cause: Cause, what: std::fmt::Arguments<'_>) {
        if let Some(func) = self.card.function_mut(index) {
            func.log(cause, what);
        }
    }

    /// Reads and answers up to [`MESSAGES_PER_TURN`] messages of client
    /// `index`.
    fn service(&mut self, index: usize) -> ClientState {
        match self.conns[index].as_mut() {
            Some(client) => client.serve(&mut self.card, index),
            None => ClientState::Open,
        }
    }

    fn drop_client(&mut self, index: usize) {
        if let Some(conn) = self.conns[index].take() {
            let fd = conn.stream().as_raw_fd();
            let _ = self.poll.registry().deregister(&mut SourceFd(&fd));
            let name = names::client(self.card.functions()[index].name());
            self.restart.forget(&name);
            self.restart.mark_dirty();
        }
        self.backlog.retain(|&i| i != index);
        self.card.disconnect(index);
    }
}

/// Waits up to `timeout` for `fd` to become readable.
fn wait_readable(fd: RawFd, timeout: Duration) -> bool {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN,
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    // SAFETY: poll reads and writes one pollfd, which `pfd` is.
    unsafe { libc::poll(&mut pfd, 1, ms) > 0 }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.handed_over {
            return;
        }
        for l in self.listeners.iter().flatten() {
            let _ = std::fs::remove_file(&l.path);
        }
    }
}
