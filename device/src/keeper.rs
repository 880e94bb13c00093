//! The keeper: the process a user starts as `vnicd ARGS`, which runs the
//! card in a worker child and outlives it (docs/restart.md, "The keeper").
//!
//! QEMU never reconnects a vfio-user socket, so the descriptors a guest's
//! connection lives on must survive a crash of the process serving it. The
//! keeper holds them: it plays systemd's side of the `sd_notify` and
//! file-descriptor-store protocol for its worker (the same binary with the
//! same arguments), so the worker's code is the same under the keeper and
//! under systemd (contrib/vnicd.service). The keeper parses nothing a guest
//! or a control client sends; what it reads is its worker's notifications
//! ([`notify`]), its descriptor store ([`store`]) and how its workers end
//! ([`worker`]).
//!
//! It has a single thread, reads its signals (SIGCHLD, SIGTERM, SIGINT,
//! SIGHUP) from a signalfd and polls that with one datagram socket per
//! worker, so it always knows which worker spoke. Nothing of the card is
//! imported here.

pub mod notify;
pub mod store;
pub mod worker;

use std::ffi::OsString;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use log::{debug, error, info, warn};
use sendfd::RecvWithFd;
use thiserror::Error;

use crate::clientlog::rate_limited;
use notify::{Notification, NotifyError, DEFAULT_NAME, MAX_DATAGRAM};
use store::FdStore;
use worker::{backoff, seconds, Exit, Launch, QUICK};

/// Set to 1 in a worker's environment: it is a worker (never a keeper).
pub const ENV_WORKER: &str = "VNICD_WORKER";
/// Set to 1 in a worker's environment: its parent is a vnicd keeper (and
/// not systemd), which understands `X_VNICD_SUCCESSOR`.
pub const ENV_KEEPER: &str = "VNICD_KEEPER";
/// How many times the keeper restarted a worker so far (0 on the first
/// start; a successor inherits the count).
pub const ENV_RESTARTS: &str = "VNICD_RESTARTS";
/// Why the previous worker ended ("killed by signal 9 (SIGKILL)"); absent
/// on the first start and for a successor.
pub const ENV_LAST_EXIT: &str = "VNICD_LAST_EXIT";
/// Set to 1 for a successor started on `X_VNICD_SUCCESSOR`.
pub const ENV_SUCCESSION: &str = "VNICD_SUCCESSION";
/// In the keeper's environment: the watchdog interval it gives workers, in
/// µs (0 disables it) [default: 5 s].
pub const ENV_WATCHDOG_USEC: &str = "VNICD_WATCHDOG_USEC";

/// The watchdog interval unless [`ENV_WATCHDOG_USEC`] says otherwise.
pub const DEFAULT_WATCHDOG: Duration = Duration::from_secs(5);
/// How long workers get to exit on SIGTERM before SIGKILL.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a successor gets to send READY=1.
pub const SUCCESSION_TIMEOUT: Duration = Duration::from_secs(10);
/// How long the worker a successor took over from gets to exit on SIGUSR1.
pub const LEAVE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a worker aborted by the watchdog gets before SIGKILL.
pub const ABORT_TIMEOUT: Duration = Duration::from_secs(1);
/// Receive buffer of a worker's notification socket: a worker may store
/// a hundred descriptors in a burst (systemd uses the same size).
const RECEIVE_BUFFER: libc::c_int = 8 << 20;
/// Most descriptors one datagram carries (Linux's SCM_MAX_FD).
const MAX_FDS_PER_DATAGRAM: usize = 253;
/// Datagrams read from one worker before the keeper looks at the rest.
const DATAGRAMS_PER_TURN: usize = 256;
/// The keeper's soft RLIMIT_NOFILE, at least (its store plus the copies
/// made for a start); the workers inherit it.
const MIN_NOFILE: libc::rlim_t = 16384;

/// Why the keeper could not run.
#[derive(Debug, Error)]
pub enum KeeperError {
    #[error("cannot create the runtime directory {0}: {1}")]
    RuntimeDir(PathBuf, io::Error),
    #[error("cannot set up signal handling: {0}")]
    Signals(io::Error),
    #[error("cannot bind the notification socket {0}: {1}")]
    Bind(PathBuf, io::Error),
    #[error("cannot start the card worker {0}: {1}")]
    Spawn(PathBuf, io::Error),
}

/// How the keeper runs.
#[derive(Clone, Debug)]
pub struct KeeperOptions {
    /// Where its private runtime directory (`vnicd-keeper.PID`, holding the
    /// notification sockets) is made.
    pub runtime_parent: PathBuf,
    /// The watchdog interval given to workers; `None` disables it.
    pub watchdog: Option<Duration>,
}

impl KeeperOptions {
    /// The options from the environment: `$RUNTIME_DIRECTORY` (its first
    /// entry), else `$XDG_RUNTIME_DIR`, else the temporary directory;
    /// [`ENV_WATCHDOG_USEC`], else [`DEFAULT_WATCHDOG`].
    pub fn from_env() -> KeeperOptions {
        let var = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
        let runtime_parent = var("RUNTIME_DIRECTORY")
            .map(|v| {
                let first = v
                    .to_string_lossy()
                    .split(':')
                    .next()
                    .unwrap_or("")
                    .to_string();
                PathBuf::from(first)
            })
            .filter(|p| p.is_absolute())
            .or_else(|| var("XDG_RUNTIME_DIR").map(PathBuf::from))
            .unwrap_or_else(std::env::temp_dir);
        let watchdog = match var(ENV_WATCHDOG_USEC).map(|v| v.to_string_lossy().parse::<u64>()) {
            None => Some(DEFAULT_WATCHDOG),
            Some(Ok(0)) => None,
            Some(Ok(us)) => Some(Duration::from_micros(us)),
            Some(Err(_)) => {
                warn!(
                    "vnicd: {ENV_WATCHDOG_USEC} is not a number of µs; the watchdog is {}",
                    seconds(DEFAULT_WATCHDOG)
                );
                Some(DEFAULT_WATCHDOG)
            }
        };
        KeeperOptions {
            runtime_parent,
            watchdog,
        }
    }
}

/// Whether this process is to be a worker rather than a keeper: it has a
/// service manager (`NOTIFY_SOCKET`, from systemd or a keeper) or was
/// started as a worker ([`ENV_WORKER`]).
pub fn is_worker() -> bool {
    std::env::var_os("NOTIFY_SOCKET").is_some_and(|v| !v.is_empty())
        || std::env::var_os(ENV_WORKER).is_some_and(|v| v == "1")
}

/// The PID that stands for this vnicd (in the socket directory's lock, in
/// messages): its keeper's when it is a worker started by one (stopping
/// the keeper stops it, and a worker dies with its keeper), else its own.
pub fn served_pid() -> u32 {
    if std::env::var_os(ENV_KEEPER).is_some_and(|v| v == "1") {
        // SAFETY: getppid(2) cannot fail and touches no memory.
        let parent = unsafe { libc::getppid() };
        if parent > 1 {
            return parent as u32;
        }
    }
    std::process::id()
}

/// Runs the keeper for `program` with `args`, options from the
/// environment; returns the process's exit status.
pub fn run(program: &Path, args: &[OsString]) -> i32 {
    run_with(program, args, KeeperOptions::from_env())
}

/// Runs the keeper for `program` (any program speaking the worker's side
/// of the protocol) with `args`; returns the process's exit status: 0
/// after a requested stop, the first worker's own status if it ends
/// before it ever served, 1 if the keeper cannot run.
///
/// Call it from a process with a single thread: it blocks SIGCHLD,
/// SIGTERM, SIGINT and SIGHUP for good and forks.
pub fn run_with(program: &Path, args: &[OsString], options: KeeperOptions) -> i32 {
    raise_nofile();
    let mut keeper = match Keeper::new(program, args, options) {
        Ok(k) => k,
        Err(e) => {
            error!("vnicd: {e}");
            return 1;
        }
    };
    keeper.run()
}

/// Raises the soft RLIMIT_NOFILE to hold the store twice over (the hard
/// limit permitting).
fn raise_nofile() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we own.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && limit.rlim_cur < MIN_NOFILE {
            limit.rlim_cur = MIN_NOFILE.min(limit.rlim_max);
            let _ = libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
        }
    }
}

/// The keeper's private directory for its notification sockets (mode
/// 0700), removed with everything in it on drop.
struct RuntimeDir(PathBuf);

impl RuntimeDir {
    /// Creates `parent/vnicd-keeper.PID`. A directory of that name left by a
    /// dead keeper with the same PID is replaced if it is ours; anything
    /// else there is refused.
    fn create(parent: &Path) -> io::Result<RuntimeDir> {
        let path = parent.join(format!("vnicd-keeper.{}", std::process::id()));
        let mut builder = fs::DirBuilder::new();
        builder.mode(0o700);
        if let Err(e) = builder.create(&path) {
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
            let meta = fs::symlink_metadata(&path)?;
            // SAFETY: geteuid(2) cannot fail and touches no memory.
            let me = unsafe { libc::geteuid() };
            if !meta.is_dir() || meta.uid() != me {
                return Err(io::Error::new(
                    io::ErrorKind::AlreadyExists,
                    "exists and is not a directory of ours",
                ));
            }
            fs::remove_dir_all(&path)?;
            builder.create(&path)?;
        }
        fs::set_permissions(&path, fs::Permissions::from_mode(0o700))?;
        Ok(RuntimeDir(path))
    }
}

impl Drop for RuntimeDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Blocks `signals` and returns a signalfd that becomes readable when one
/// arrives, so an event loop handles them like any other event (the
/// keeper's, and the worker's: `vnicd`'s stop and hand-over signals).
/// Call before any thread exists.
pub fn signal_fd(signals: &[libc::c_int]) -> io::Result<OwnedFd> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it,
    // sigprocmask and signalfd only read it. The caller has one thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
        let fd = libc::signalfd(-1, &set, libc::SFD_CLOEXEC | libc::SFD_NONBLOCK);
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(OwnedFd::from_raw_fd(fd))
    }
}

/// The next signal the signalfd `fd` delivers, if one is waiting.
pub fn read_signal(fd: RawFd) -> Option<libc::c_int> {
    // SAFETY: signalfd_siginfo is plain data; read(2) fills at most its
    // size into it.
    let mut info: libc::signalfd_siginfo = unsafe { std::mem::zeroed() };
    let size = std::mem::size_of::<libc::signalfd_siginfo>();
    // SAFETY: `info` is `size` bytes we own.
    let n = unsafe { libc::read(fd, (&mut info as *mut libc::signalfd_siginfo).cast(), size) };
    (n == size as isize).then_some(info.ssi_signo as libc::c_int)
}

/// Blocks the keeper's signals and returns a signalfd for them. SIGHUP is
/// left alone if it is ignored (`nohup vnicd …`); else it stops vnicd
/// like SIGTERM, as it ended vnicd before the keeper.
fn keeper_signals() -> io::Result<OwnedFd> {
    // SAFETY: sigaction is plain data; with a null new action it only
    // reads the current one into `old`.
    let hup_ignored = unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(libc::SIGHUP, std::ptr::null(), &mut old) == 0
            && old.sa_sigaction == libc::SIG_IGN
    };
    let mut signals = vec![libc::SIGCHLD, libc::SIGTERM, libc::SIGINT];
    if !hup_ignored {
        signals.push(libc::SIGHUP);
    }
    signal_fd(&signals)
}

/// What the signals read in one turn ask for.
#[derive(Default)]
struct Signals {
    /// A stop signal, by name.
    stop: Option<&'static str>,
}

/// Reads every pending signal from the signalfd `fd`.
fn read_signals(fd: RawFd) -> Signals {
    let mut out = Signals::default();
    while let Some(signal) = read_signal(fd) {
        if signal != libc::SIGCHLD {
            out.stop = out.stop.or(worker::signal_name(signal));
        }
    }
    out
}

/// Sends `signal` to `pid`, a worker the keeper has not reaped (so the PID
/// is still its).
fn send(pid: u32, signal: libc::c_int) {
    // SAFETY: kill(2) on the PID of an unreaped child of ours.
    if unsafe { libc::kill(pid as libc::pid_t, signal) } != 0 {
        debug!(
            "vnicd: cannot send {} to card worker {pid}: {}",
            worker::signal_name(signal).unwrap_or("a signal"),
            io::Error::last_os_error()
        );
    }
}

/// What a worker is to the keeper.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Role {
    /// The worker that serves (or is starting to).
    Current,
    /// A successor started on `X_VNICD_SUCCESSOR`, not yet ready.
    Successor,
    /// A worker the keeper told to go (SIGUSR1 after a takeover, SIGKILL
    /// for a failed successor); how it ends is of no consequence.
    Leaving,
}

/// A worker process and what the keeper knows of it.
struct Worker {
    /// The process, reaped with `try_wait` (waitpid on its PID alone).
    child: Child,
    /// Its PID.
    pid: u32,
    /// What it is to the keeper.
    role: Role,
    /// Its notification socket, `NOTIFY_SOCKET` for it alone.
    socket: UnixDatagram,
    /// The socket's path, removed when the worker is gone.
    socket_path: PathBuf,
    /// When it was started.
    started: Instant,
    /// When it sent READY=1.
    ready: Option<Instant>,
    /// Its last WATCHDOG=1 (or readiness, or resumption).
    ping: Instant,
    /// It sent STOPPING=1.
    stopping: bool,
    /// The keeper sent it SIGTERM to stop.
    asked: bool,
    /// It asked for a successor and waits for the answer (no watchdog).
    frozen: bool,
    /// Why the watchdog aborted it.
    aborted: Option<String>,
    /// When it is sent SIGKILL if still alive.
    kill_at: Option<Instant>,
    /// Its notifications refused or ignored so far (for rate limiting).
    refused: u64,
}

/// A worker that ended and is to be restarted.
struct Ended {
    pid: u32,
    /// What happened, for the log and `VNICD_LAST_EXIT`.
    text: String,
    /// How long it lived.
    lived: Duration,
    /// It died within [`QUICK`] of becoming ready, or before.
    quick: bool,
}

/// A successor on its way.
struct Succession {
    /// The worker that asked, and still serves.
    from: u32,
    /// The successor.
    to: u32,
    /// The successor's binary.
    path: PathBuf,
    /// When the request came.
    requested: Instant,
    /// When the successor is given up unless it is ready.
    deadline: Instant,
    /// The store as it was when the request came, put back if the
    /// successor fails.
    before: FdStore,
    /// The worker that asked, if it died in the meantime.
    orphaned: Option<Ended>,
}

/// A stop in progress.
struct Stop {
    /// When what is left is SIGKILLed.
    deadline: Instant,
    /// SIGKILL sent to whatever was left at the deadline.
    killed: bool,
    /// The keeper's exit status once every worker is gone.
    code: i32,
}

/// The keeper's state.
struct Keeper<'a> {
    /// The binary restarts run (a successor's, after a takeover).
    program: PathBuf,
    /// The arguments every worker gets.
    args: &'a [OsString],
    /// The watchdog interval, if on.
    watchdog: Option<Duration>,
    /// The private directory of the notification sockets.
    dir: RuntimeDir,
    /// The signalfd of SIGCHLD, SIGTERM, SIGINT (and SIGHUP).
    signals: OwnedFd,
    /// The descriptor store.
    store: FdStore,
    /// Every worker not reaped yet.
    workers: Vec<Worker>,
    /// Generations started (names the notification sockets).
    generation: u64,
    /// Restarts so far.
    restarts: u32,
    /// Consecutive quick crashes.
    quick: u32,
    /// Some worker ever sent READY=1.
    served: bool,
    /// Why the last worker that was restarted ended.
    last_exit: Option<String>,
    /// When the next worker starts, if none runs.
    restart_at: Option<Instant>,
    succession: Option<Succession>,
    stop: Option<Stop>,
}

impl<'a> Keeper<'a> {
    /// A keeper with its runtime directory and signalfd, no worker yet.
    fn new(
        program: &Path,
        args: &'a [OsString],
        options: KeeperOptions,
    ) -> Result<Keeper<'a>, KeeperError> {
        let dir = RuntimeDir::create(&options.runtime_parent).map_err(|e| {
            KeeperError::RuntimeDir(options.runtime_parent.join("vnicd-keeper.PID"), e)
        })?;
        let signals = keeper_signals().map_err(KeeperError::Signals)?;
        Ok(Keeper {
            program: program.to_path_buf(),
            args,
            watchdog: options.watchdog,
            dir,
            signals,
            store: FdStore::default(),
            workers: Vec::new(),
            generation: 0,
            restarts: 0,
            quick: 0,
            served: false,
            last_exit: None,
            restart_at: None,
            succession: None,
            stop: None,
        })
    }

    /// Starts the first worker and runs until the keeper is to exit;
    /// returns its exit status.
    fn run(&mut self) -> i32 {
        let program = self.program.clone();
        if let Err(e) = self.start(&program, Role::Current) {
            error!("vnicd: {e}");
            return 1;
        }
        loop {
            if let Some(stop) = &self.stop {
                if self.workers.is_empty() {
                    return stop.code;
                }
            }
            let now = Instant::now();
            // Rounded up, so that a deadline is past when poll returns.
            let timeout = self.next_deadline().map_or(-1, |at| {
                let left = at.saturating_duration_since(now);
                (left.as_micros().div_ceil(1000)).min(60_000) as i32
            });
            let mut fds = vec![libc::pollfd {
                fd: self.signals.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }];
            fds.extend(self.workers.iter().map(|w| libc::pollfd {
                fd: w.socket.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            }));
            // SAFETY: `fds` is a vector of pollfd we own, its length given.
            let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, timeout) };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    error!("vnicd: keeper poll: {e}; stopping");
                    self.begin_stop("an error", 1);
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
            let mut stop = None;
            if fds[0].revents != 0 {
                stop = read_signals(self.signals.as_raw_fd()).stop;
            }
            let speaking: Vec<u32> = fds[1..]
                .iter()
                .zip(&self.workers)
                .filter(|(p, _)| p.revents != 0)
                .map(|(_, w)| w.pid)
                .collect();
            for pid in speaking {
                self.drain(pid);
            }
            if let Some(name) = stop {
                self.begin_stop(name, 0);
            }
            self.reap();
            self.timers(Instant::now());
        }
    }

    /// The earliest moment something is due.
    fn next_deadline(&self) -> Option<Instant> {
        let mut at = self.restart_at;
        let mut earliest = |t: Option<Instant>| {
            if let Some(t) = t {
                at = Some(at.map_or(t, |a| a.min(t)));
            }
        };
        earliest(self.succession.as_ref().map(|s| s.deadline));
        earliest(self.stop.as_ref().filter(|s| !s.killed).map(|s| s.deadline));
        for w in &self.workers {
            earliest(w.kill_at);
            earliest(self.watchdog_due(w));
        }
        at
    }

    /// When `w`'s watchdog expires, if it is watched.
    fn watchdog_due(&self, w: &Worker) -> Option<Instant> {
        let interval = self.watchdog?;
        let watched = w.role == Role::Current
            && w.ready.is_some()
            && !w.frozen
            && !w.stopping
            && !w.asked
            && w.aborted.is_none()
            && self.stop.is_none();
        watched.then_some(w.ping + interval)
    }

    /// Starts a worker from `program`: a current one (first start or
    /// restart) or a successor.
    fn start(&mut self, program: &Path, role: Role) -> Result<u32, KeeperError> {
        self.generation += 1;
        let socket_path = self.dir.0.join(format!("notify.{}", self.generation));
        let socket = bind(&socket_path).map_err(|e| KeeperError::Bind(socket_path.clone(), e))?;
        let mut set: Vec<(&'static str, OsString)> = vec![
            ("NOTIFY_SOCKET", socket_path.clone().into()),
            (ENV_WORKER, "1".into()),
            (ENV_KEEPER, "1".into()),
            (ENV_RESTARTS, self.restarts.to_string().into()),
        ];
        let mut remove = Vec::new();
        match (&self.last_exit, role) {
            (Some(text), Role::Current) => set.push((ENV_LAST_EXIT, text.into())),
            _ => remove.push(ENV_LAST_EXIT),
        }
        if role == Role::Successor {
            set.push((ENV_SUCCESSION, "1".into()));
        } else {
            remove.push(ENV_SUCCESSION);
        }
        match self.watchdog {
            Some(d) => set.push(("WATCHDOG_USEC", d.as_micros().to_string().into())),
            None => remove.push("WATCHDOG_USEC"),
        }
        let launch = Launch {
            set,
            remove,
            store: &self.store,
            watchdog: self.watchdog.is_some(),
        };
        let child = match worker::spawn(program, self.args, launch) {
            Ok(c) => c,
            Err(e) => {
                let _ = fs::remove_file(&socket_path);
                return Err(KeeperError::Spawn(program.to_path_buf(), e));
            }
        };
        let pid = child.id();
        debug!(
            "vnicd: card worker {pid} started from {} with {} stored descriptors",
            program.display(),
            self.store.len()
        );
        let now = Instant::now();
        self.workers.push(Worker {
            child,
            pid,
            role,
            socket,
            socket_path,
            started: now,
            ready: None,
            ping: now,
            stopping: false,
            asked: false,
            frozen: false,
            aborted: None,
            kill_at: None,
            refused: 0,
        });
        Ok(pid)
    }

    /// Where worker `pid` is in `workers`.
    fn index(&self, pid: u32) -> Option<usize> {
        self.workers.iter().position(|w| w.pid == pid)
    }

    /// Reads what worker `pid` sent, up to [`DATAGRAMS_PER_TURN`]
    /// datagrams.
    fn drain(&mut self, pid: u32) {
        let mut buf = vec![0u8; MAX_DATAGRAM + 1];
        let mut raw: [RawFd; MAX_FDS_PER_DATAGRAM] = [-1; MAX_FDS_PER_DATAGRAM];
        for _ in 0..DATAGRAMS_PER_TURN {
            let Some(i) = self.index(pid) else {
                return;
            };
            let (n, count) = match self.workers[i].socket.recv_with_fd(&mut buf, &mut raw) {
                Ok(got) => got,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) => {
                    warn!("vnicd: reading card worker {pid}'s notifications: {e}");
                    return;
                }
            };
            let fds: Vec<OwnedFd> = raw[..count.min(raw.len())]
                .iter()
                .map(|&fd| {
                    // SAFETY: recvmsg(2) just installed `fd` in this process
                    // for us (SCM_RIGHTS); nothing else owns it.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    set_cloexec(&fd);
                    fd
                })
                .collect();
            match notify::parse(&buf[..n]) {
                Ok(note) => self.handle(i, note, fds),
                Err(e) => self.refuse(i, &e, fds.len()),
            }
        }
    }

    /// A malformed datagram from worker `i`: logged (rate-limited), its
    /// descriptors closed.
    fn refuse(&mut self, i: usize, e: &NotifyError, fds: usize) {
        let w = &mut self.workers[i];
        w.refused += 1;
        if rate_limited(w.refused) {
            warn!(
                "vnicd: card worker {} sent a malformed notification ({e}); dropped it{} \
                 ({} refused so far)",
                w.pid,
                if fds > 0 {
                    format!(" and closed its {fds} descriptors")
                } else {
                    String::new()
                },
                w.refused
            );
        }
    }

    /// Logs, rate-limited per worker, something the keeper did not do for
    /// worker `i`.
    fn ignored(&mut self, i: usize, what: &str) {
        let w = &mut self.workers[i];
        w.refused += 1;
        if rate_limited(w.refused) {
            warn!(
                "vnicd: card worker {}: {what} ({} refused so far)",
                w.pid, w.refused
            );
        }
    }

    /// Acts on a notification from worker `i`.
    fn handle(&mut self, i: usize, note: Notification, fds: Vec<OwnedFd>) {
        let now = Instant::now();
        let (pid, role) = (self.workers[i].pid, self.workers[i].role);
        let changes_store = note.fd_store || note.fd_store_remove;
        let owns_store = match role {
            Role::Current => !self.workers[i].frozen,
            Role::Successor => true,
            Role::Leaving => false,
        };
        if changes_store && !owns_store {
            let n = fds.len();
            drop(fds);
            self.ignored(
                i,
                &format!(
                    "store change ignored (its successor owns the store); {n} descriptors closed"
                ),
            );
        } else if changes_store {
            if note.fd_store_remove {
                match &note.name {
                    Some(name) => {
                        let n = self.store.remove(name);
                        debug!("vnicd: card worker {pid} removed {name} ({n} descriptors)");
                    }
                    None => self.ignored(i, "FDSTOREREMOVE=1 without FDNAME ignored"),
                }
            }
            if note.fd_store {
                let name = note.name.as_deref().unwrap_or(DEFAULT_NAME);
                let n = fds.len();
                if n == 0 {
                    debug!(
                        "vnicd: card worker {pid} sent FDSTORE=1 for {name} without descriptors"
                    );
                } else {
                    match self.store.store(name, fds) {
                        Ok(old) => debug!(
                            "vnicd: card worker {pid} stored {n} descriptors as {name} \
                             (replacing {old}); {} stored",
                            self.store.len()
                        ),
                        Err(e) => self.ignored(i, &format!("{name} not stored: {e}")),
                    }
                }
            }
        } else if !fds.is_empty() {
            let n = fds.len();
            drop(fds);
            self.ignored(i, &format!("{n} descriptors without FDSTORE=1 closed"));
        }
        let w = &mut self.workers[i];
        if let Some(status) = note.status {
            debug!("vnicd: card worker {pid}: STATUS={status}");
        }
        if let Some(errno) = note.errno {
            warn!(
                "vnicd: card worker {pid} reports ERRNO={errno} ({})",
                io::Error::from_raw_os_error(errno)
            );
        }
        if note.watchdog {
            w.ping = now;
        }
        if note.stopping && !w.stopping {
            w.stopping = true;
            if role == Role::Current {
                info!("vnicd: card worker {pid} is stopping");
                w.kill_at = w.kill_at.or(Some(now + STOP_TIMEOUT));
            }
        }
        if note.ready && w.ready.is_none() {
            match role {
                Role::Current => {
                    w.ready = Some(now);
                    w.ping = now;
                    if self.served {
                        info!(
                            "vnicd: card worker {pid} serves again (restart {}) {} after its start",
                            self.restarts,
                            seconds(now - w.started)
                        );
                    }
                    self.served = true;
                }
                Role::Successor => self.take_over(i, now),
                Role::Leaving => {}
            }
        }
        if note.watchdog_trigger {
            if let Some(i) = self.index(pid).filter(|_| role == Role::Current) {
                self.abort(i, "it asked for it (WATCHDOG=trigger)".to_string(), now);
            }
        }
        if let Some(path) = note.successor {
            self.request_successor(pid, PathBuf::from(path), now);
        }
        if note.successor_abort {
            self.abort_successor(pid, now);
        }
    }

    /// The successor (worker `i`) is ready: it takes over.
    fn take_over(&mut self, i: usize, now: Instant) {
        let Some(s) = self.succession.take() else {
            return;
        };
        let w = &mut self.workers[i];
        w.role = Role::Current;
        w.ready = Some(now);
        w.ping = now;
        self.program = s.path.clone();
        self.served = true;
        let took = (now - s.requested).as_millis();
        let new = w.pid;
        match self.index(s.from) {
            Some(j) => {
                let old = &mut self.workers[j];
                send(old.pid, libc::SIGUSR1);
                old.role = Role::Leaving;
                old.frozen = false;
                old.kill_at = Some(now + LEAVE_TIMEOUT);
                info!(
                    "vnicd: card worker {new} ({}) took over from {} in {took} ms",
                    s.path.display(),
                    s.from
                );
            }
            None => info!(
                "vnicd: card worker {new} ({}) took over from {}, which had {}, in {took} ms",
                s.path.display(),
                s.from,
                s.orphaned.map_or("ended".to_string(), |e| e.text)
            ),
        }
    }

    /// `X_VNICD_SUCCESSOR=path` from worker `pid`.
    fn request_successor(&mut self, pid: u32, path: PathBuf, now: Instant) {
        let Some(i) = self.index(pid) else {
            return;
        };
        if self.workers[i].role != Role::Current || self.stop.is_some() {
            self.ignored(i, "X_VNICD_SUCCESSOR ignored: it is not the serving worker");
            return;
        }
        if self.succession.is_some() {
            self.ignored(
                i,
                "X_VNICD_SUCCESSOR ignored: a successor is already starting",
            );
            return;
        }
        let refusal = if self.workers[i].ready.is_none() {
            Some("it has not sent READY=1".to_string())
        } else if !path.is_absolute() {
            Some("the path is not absolute".to_string())
        } else {
            None
        };
        if let Some(why) = refusal {
            warn!(
                "vnicd: card worker {pid} asked for a successor from {}, refused: {why}; it \
                 keeps serving",
                path.display()
            );
            send(pid, libc::SIGUSR2);
            return;
        }
        self.workers[i].frozen = true;
        let before = self.store.clone();
        match self.start(&path, Role::Successor) {
            Ok(to) => {
                info!(
                    "vnicd: card worker {pid} hands over to a new worker from {} ({to})",
                    path.display()
                );
                self.succession = Some(Succession {
                    from: pid,
                    to,
                    path,
                    requested: now,
                    deadline: now + SUCCESSION_TIMEOUT,
                    before,
                    orphaned: None,
                });
            }
            Err(e) => {
                error!(
                    "vnicd: the new card worker from {} failed ({e}); {pid} keeps serving",
                    path.display()
                );
                self.resume(pid, now);
            }
        }
    }

    /// `X_VNICD_SUCCESSOR_ABORT=1` from worker `pid`.
    fn abort_successor(&mut self, pid: u32, now: Instant) {
        if self.succession.as_ref().is_none_or(|s| s.from != pid) {
            debug!("vnicd: card worker {pid} cancelled a successor that is not starting");
            return;
        }
        self.fail_successor("cancelled by the worker it was to replace", now);
    }

    /// Ends the succession in progress without a takeover: the successor
    /// (if alive) is killed, the store put back, and the worker that asked
    /// resumes (SIGUSR2), or is restarted if it died meanwhile.
    fn fail_successor(&mut self, why: &str, now: Instant) {
        let Some(s) = self.succession.take() else {
            return;
        };
        self.store = s.before;
        if let Some(j) = self.index(s.to) {
            let w = &mut self.workers[j];
            send(w.pid, libc::SIGKILL);
            w.role = Role::Leaving;
        }
        match s.orphaned {
            None => {
                error!(
                    "vnicd: the new card worker from {} failed ({why}); {} keeps serving",
                    s.path.display(),
                    s.from
                );
                self.resume(s.from, now);
            }
            Some(ended) => {
                error!(
                    "vnicd: the new card worker from {} failed ({why}), and {} is gone",
                    s.path.display(),
                    s.from
                );
                self.restart_after(ended, now);
            }
        }
    }

    /// Tells worker `pid`, frozen for a succession, to serve on.
    fn resume(&mut self, pid: u32, now: Instant) {
        if let Some(i) = self.index(pid) {
            let w = &mut self.workers[i];
            w.frozen = false;
            w.ping = now;
            send(pid, libc::SIGUSR2);
        }
    }

    /// The watchdog (or the worker itself) gives up on worker `i`: SIGABRT,
    /// then SIGKILL after [`ABORT_TIMEOUT`]; its end is a crash.
    fn abort(&mut self, i: usize, why: String, now: Instant) {
        let w = &mut self.workers[i];
        error!(
            "vnicd: card worker {} is hung: {why}; aborting it (SIGABRT)",
            w.pid
        );
        send(w.pid, libc::SIGABRT);
        w.aborted = Some(why);
        w.kill_at = Some(now + ABORT_TIMEOUT);
    }

    /// Stops everything: SIGTERM to every worker but those already leaving,
    /// no more restarts or successions; the keeper exits with `code` (or 1
    /// if a worker does not end cleanly) once they are gone.
    fn begin_stop(&mut self, why: &str, code: i32) {
        if self.stop.is_some() {
            return;
        }
        if !self.workers.is_empty() {
            info!("vnicd: {why}: stopping the card worker");
        }
        self.restart_at = None;
        self.succession = None;
        for w in &mut self.workers {
            if w.role != Role::Leaving {
                send(w.pid, libc::SIGTERM);
                w.asked = true;
            }
        }
        self.stop = Some(Stop {
            deadline: Instant::now() + STOP_TIMEOUT,
            killed: false,
            code,
        });
    }

    /// Reaps every worker that ended.
    fn reap(&mut self) {
        let mut i = 0;
        while i < self.workers.len() {
            match self.workers[i].child.try_wait() {
                Ok(Some(status)) => {
                    let pid = self.workers[i].pid;
                    // What it sent before it died counts (STOPPING=1, a
                    // last store).
                    self.drain(pid);
                    let Some(i) = self.index(pid) else {
                        continue;
                    };
                    let w = self.workers.remove(i);
                    let _ = fs::remove_file(&w.socket_path);
                    match Exit::from_status(status) {
                        Some(exit) => self.ended(w, exit),
                        None => warn!("vnicd: card worker {pid}: unexpected wait status {status}"),
                    }
                }
                Ok(None) => i += 1,
                Err(e) => {
                    warn!(
                        "vnicd: waiting for card worker {}: {e}",
                        self.workers[i].pid
                    );
                    i += 1;
                }
            }
        }
    }

    /// Worker `w` ended with `exit`.
    fn ended(&mut self, w: Worker, exit: Exit) {
        let now = Instant::now();
        let lived = now - w.started;
        let mut text = exit.to_string();
        if let Some(why) = &w.aborted {
            text = format!("{text} (watchdog: {why})");
        }
        if let Some(stop) = &mut self.stop {
            if !(exit.is_success() || w.role == Role::Leaving) {
                error!("vnicd: card worker {} {text} while stopping", w.pid);
                stop.code = stop.code.max(1);
            }
            return;
        }
        match w.role {
            Role::Leaving => debug!("vnicd: card worker {} left: {text}", w.pid),
            Role::Successor => {
                self.fail_successor(&text, now);
            }
            Role::Current => {
                let ended = Ended {
                    pid: w.pid,
                    text,
                    lived,
                    quick: w.ready.is_none_or(|r| now - r < QUICK),
                };
                if let Some(s) = &mut self.succession {
                    error!(
                        "vnicd: card worker {} {} while its successor starts; the successor \
                         carries on",
                        ended.pid, ended.text
                    );
                    s.orphaned = Some(ended);
                } else if exit.is_success() && w.stopping {
                    info!(
                        "vnicd: card worker {} stopped by itself; vnicd stops",
                        w.pid
                    );
                    self.begin_stop("the card worker stopped", 0);
                } else if !self.served && self.restarts == 0 {
                    // Never served: a bad configuration, a socket directory
                    // in use. The worker said why (unless a signal killed
                    // it); vnicd ends as it did.
                    if matches!(exit, Exit::Signal { .. }) {
                        error!(
                            "vnicd: card worker {} {} before it was ready; vnicd exits",
                            w.pid, ended.text
                        );
                    } else {
                        debug!(
                            "vnicd: card worker {} {} before it was ready",
                            w.pid, ended.text
                        );
                    }
                    self.stop = Some(Stop {
                        deadline: now,
                        killed: true,
                        code: exit.code(),
                    });
                } else {
                    self.restart_after(ended, now);
                }
            }
        }
    }

    /// Schedules the restart after `ended`, with the backoff its crash
    /// earns.
    fn restart_after(&mut self, ended: Ended, now: Instant) {
        self.quick = if ended.quick { self.quick + 1 } else { 0 };
        self.restarts += 1;
        let delay = backoff(self.quick);
        let when = if delay.is_zero() {
            String::new()
        } else {
            format!(
                " in {}: it crashed {} times within {} of starting",
                seconds(delay),
                self.quick,
                seconds(QUICK)
            )
        };
        error!(
            "vnicd: card worker {} {} after {}; restarting it (restart {}){when}",
            ended.pid,
            ended.text,
            seconds(ended.lived),
            self.restarts
        );
        self.last_exit = Some(ended.text);
        self.restart_at = Some(now + delay);
    }

    /// Whatever is due at `now`: a restart, a succession's timeout, a
    /// watchdog, a SIGKILL.
    fn timers(&mut self, now: Instant) {
        if self.restart_at.is_some_and(|t| t <= now) {
            self.restart_at = None;
            let program = self.program.clone();
            if let Err(e) = self.start(&program, Role::Current) {
                let ended = Ended {
                    pid: 0,
                    text: format!("could not be started ({e})"),
                    lived: Duration::ZERO,
                    quick: true,
                };
                self.restart_after(ended, now);
            }
        }
        if self.succession.as_ref().is_some_and(|s| s.deadline <= now) {
            self.fail_successor(
                &format!("no READY=1 within {}", seconds(SUCCESSION_TIMEOUT)),
                now,
            );
        }
        if let Some(stop) = &mut self.stop {
            if !stop.killed && stop.deadline <= now {
                stop.killed = true;
                stop.code = stop.code.max(1);
                for w in &self.workers {
                    error!(
                        "vnicd: card worker {} still runs {} after SIGTERM; killing it",
                        w.pid,
                        seconds(STOP_TIMEOUT)
                    );
                    send(w.pid, libc::SIGKILL);
                }
            }
        }
        for w in &mut self.workers {
            if w.kill_at.is_some_and(|t| t <= now) {
                w.kill_at = None;
                warn!(
                    "vnicd: card worker {} did not exit in time; killing it",
                    w.pid
                );
                send(w.pid, libc::SIGKILL);
            }
        }
        let expired: Vec<usize> = (0..self.workers.len())
            .filter(|&i| {
                self.watchdog_due(&self.workers[i])
                    .is_some_and(|t| t <= now)
            })
            .collect();
        for i in expired {
            let interval = self.watchdog.unwrap_or_default();
            self.abort(i, format!("no WATCHDOG=1 for {}", seconds(interval)), now);
        }
    }
}

/// Binds a notification socket at `path` (non-blocking, with a large
/// receive buffer), replacing a file left there.
fn bind(path: &Path) -> io::Result<UnixDatagram> {
    let _ = fs::remove_file(path);
    let socket = UnixDatagram::bind(path)?;
    socket.set_nonblocking(true)?;
    let size = RECEIVE_BUFFER;
    for option in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: setsockopt(2) reads an int we own, of the size given.
        let r = unsafe {
            libc::setsockopt(
                socket.as_raw_fd(),
                libc::SOL_SOCKET,
                option,
                (&size as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        // SO_RCVBUFFORCE needs CAP_NET_ADMIN; SO_RCVBUF is capped by
        // net.core.rmem_max.
        if r == 0 {
            break;
        }
    }
    Ok(socket)
}

/// Marks a received descriptor close-on-exec (recvmsg without
/// MSG_CMSG_CLOEXEC leaves it inheritable): a worker gets only what is
/// placed at 3, 4, ….
fn set_cloexec(fd: &OwnedFd) {
    // SAFETY: fcntl(2) F_SETFD on a descriptor we own.
    unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFD, libc::FD_CLOEXEC) };
}
