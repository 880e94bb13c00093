//! Starting a worker and telling how it ended: the process side of the
//! keeper, apart from its decisions.
//!
//! A worker is the same program with the same arguments as the keeper (or
//! a successor's binary), started with the stored descriptors at 3, 4, …
//! and the environment systemd gives a Type=notify service with a
//! descriptor store (`NOTIFY_SOCKET`, `LISTEN_FDS`, `LISTEN_FDNAMES`,
//! `LISTEN_PID`, `WATCHDOG_USEC`, `WATCHDOG_PID`) plus vnicd's own
//! `VNICD_*` variables (docs/restart.md, "The keeper").

use std::ffi::{CString, OsString};
use std::fmt;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::Path;
use std::process::{Child, Command, ExitStatus};
use std::time::Duration;

use command_fds::{CommandFdExt, FdMapping};

use super::store::FdStore;

/// The first descriptor a worker is given (systemd's SD_LISTEN_FDS_START).
pub const LISTEN_FDS_START: i32 = 3;

/// How a worker ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Exit {
    /// It exited with this status.
    Status(i32),
    /// A signal killed it.
    Signal {
        /// The signal's number.
        signal: i32,
        /// Whether it dumped core.
        core: bool,
    },
}

impl Exit {
    /// How a reaped process ended (`None` for a stop or continue report,
    /// which the keeper never asks for).
    pub fn from_status(status: ExitStatus) -> Option<Exit> {
        if let Some(code) = status.code() {
            Some(Exit::Status(code))
        } else {
            status.signal().map(|signal| Exit::Signal {
                signal,
                core: status.core_dumped(),
            })
        }
    }

    /// The keeper's own exit status for it, as a shell reports one: the
    /// status, or 128 plus the signal.
    pub fn code(self) -> i32 {
        match self {
            Exit::Status(code) => code,
            Exit::Signal { signal, .. } => 128 + signal,
        }
    }

    /// Exit status 0.
    pub fn is_success(self) -> bool {
        self == Exit::Status(0)
    }
}

impl fmt::Display for Exit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            Exit::Status(code) => write!(f, "exited with status {code}"),
            Exit::Signal { signal, core } => {
                write!(f, "killed by signal {signal}")?;
                if let Some(name) = signal_name(signal) {
                    write!(f, " ({name})")?;
                }
                if core {
                    write!(f, ", core dumped")?;
                }
                Ok(())
            }
        }
    }
}

/// The name of Linux signal `signal` (`SIGKILL`), if it has one.
pub fn signal_name(signal: i32) -> Option<&'static str> {
    const NAMES: [&str; 32] = [
        "",
        "SIGHUP",
        "SIGINT",
        "SIGQUIT",
        "SIGILL",
        "SIGTRAP",
        "SIGABRT",
        "SIGBUS",
        "SIGFPE",
        "SIGKILL",
        "SIGUSR1",
        "SIGSEGV",
        "SIGUSR2",
        "SIGPIPE",
        "SIGALRM",
        "SIGTERM",
        "SIGSTKFLT",
        "SIGCHLD",
        "SIGCONT",
        "SIGSTOP",
        "SIGTSTP",
        "SIGTTIN",
        "SIGTTOU",
        "SIGURG",
        "SIGXCPU",
        "SIGXFSZ",
        "SIGVTALRM",
        "SIGPROF",
        "SIGWINCH",
        "SIGIO",
        "SIGPWR",
        "SIGSYS",
    ];
    usize::try_from(signal)
        .ok()
        .and_then(|i| NAMES.get(i))
        .copied()
        .filter(|n| !n.is_empty())
}

/// A worker that dies sooner than this after it became ready (or before
/// it became ready, on a restart) crashed quickly.
pub const QUICK: Duration = Duration::from_secs(10);
/// The longest delay before a restart.
pub const MAX_BACKOFF: Duration = Duration::from_secs(8);

/// The delay before the next start after `quick` consecutive quick
/// crashes: none for the first two, then 250 ms, doubling, up to
/// [`MAX_BACKOFF`].
pub fn backoff(quick: u32) -> Duration {
    if quick <= 2 {
        return Duration::ZERO;
    }
    let doublings = (quick - 3).min(8);
    (Duration::from_millis(250) * (1 << doublings)).min(MAX_BACKOFF)
}

/// `d` for a log line: "12.3 s", or "250 ms" under a second.
pub fn seconds(d: Duration) -> String {
    if d < Duration::from_secs(1) {
        format!("{} ms", d.as_millis())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

/// What a worker is started with, besides the program and its arguments.
/// Its environment is the keeper's with these changes.
pub struct Launch<'a> {
    /// Environment variables to set (`NOTIFY_SOCKET`, `VNICD_*`, …).
    pub set: Vec<(&'static str, OsString)>,
    /// Environment variables to remove (inherited ones that do not apply).
    pub remove: Vec<&'static str>,
    /// The descriptors it is given, at 3, 4, … (`LISTEN_*` set from them).
    pub store: &'a FdStore,
    /// Whether `WATCHDOG_PID` is set (to the worker's own PID).
    pub watchdog: bool,
}

/// Starts `program` with `args` as described by `launch`. stdin, stdout
/// and stderr are the keeper's.
///
/// `LISTEN_PID` and `WATCHDOG_PID` must be the worker's own PID, which
/// exists only once it is forked, so they are set in the child between
/// fork and exec with setenv(3). That reaches the new program only if
/// std's `Command` execs with `environ`, which it does only when the
/// command's environment is left alone: once `Command::env` is called it
/// execs with the environment it built before the fork, and a setenv in
/// `pre_exec` is lost (tried). So the keeper never calls `Command::env`:
/// every variable of the worker is set (or unset) in the child, in the
/// same `pre_exec` closure, from strings prepared before the fork. The
/// integration test tests/control/keeper.rs checks `LISTEN_PID` and
/// `WATCHDOG_PID` against the worker's PID. setenv(3) allocates, which
/// POSIX does not allow after fork in a threaded process; the keeper has
/// a single thread, so no lock of the allocator can be held by another
/// thread at the fork.
///
/// The child also gets `PR_SET_PDEATHSIG` = SIGKILL: the worker dies with
/// its keeper (a keeper killed outright takes the card with it, as the
/// process users started), and its signal mask is emptied (the keeper
/// blocks the signals it reads from a signalfd).
pub fn spawn(program: &Path, args: &[OsString], launch: Launch<'_>) -> io::Result<Child> {
    let keeper = std::process::id() as libc::pid_t;
    let count = launch.store.len();
    let listen = count > 0;
    let mut set = Vec::new();
    let mut unset = vec![c"LISTEN_PID".to_owned(), c"WATCHDOG_PID".to_owned()];
    for (key, value) in &launch.set {
        set.push((c_string(key.as_bytes())?, c_string(value.as_bytes())?));
    }
    if listen {
        set.push((
            c"LISTEN_FDS".to_owned(),
            c_string(count.to_string().as_bytes())?,
        ));
        set.push((
            c"LISTEN_FDNAMES".to_owned(),
            c_string(launch.store.listen_fdnames().as_bytes())?,
        ));
    } else {
        unset.extend([c"LISTEN_FDS".to_owned(), c"LISTEN_FDNAMES".to_owned()]);
    }
    for key in &launch.remove {
        unset.push(c_string(key.as_bytes())?);
    }
    let mut command = Command::new(program);
    command.args(args);
    let mut mappings = Vec::with_capacity(count);
    for (i, (_, fd)) in launch.store.iter().enumerate() {
        mappings.push(FdMapping {
            parent_fd: fd.try_clone()?,
            child_fd: LISTEN_FDS_START + i as i32,
        });
    }
    command
        .fd_mappings(mappings)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    let watchdog = launch.watchdog;
    // SAFETY: the closure runs in the child between fork and exec. It calls
    // prctl, getppid, getpid, sigemptyset, sigprocmask, unsetenv and setenv
    // on strings made before the fork, and formats into a stack buffer. All
    // but setenv/unsetenv are async-signal-safe; those two may allocate,
    // which is sound here because the keeper is single-threaded (see
    // above).
    unsafe {
        command.pre_exec(move || {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong) != 0 {
                return Err(io::Error::last_os_error());
            }
            // The keeper may have died before the prctl: then nobody keeps
            // this worker.
            if libc::getppid() != keeper {
                return Err(io::Error::from_raw_os_error(libc::ESRCH));
            }
            let mut signals: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut signals);
            if libc::sigprocmask(libc::SIG_SETMASK, &signals, std::ptr::null_mut()) != 0 {
                return Err(io::Error::last_os_error());
            }
            for key in &unset {
                if libc::unsetenv(key.as_ptr()) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            for (key, value) in &set {
                if libc::setenv(key.as_ptr(), value.as_ptr(), 1) != 0 {
                    return Err(io::Error::last_os_error());
                }
            }
            let mut pid = [0u8; 24];
            decimal(libc::getpid() as u64, &mut pid);
            let value = pid.as_ptr().cast::<libc::c_char>();
            if listen && libc::setenv(c"LISTEN_PID".as_ptr(), value, 1) != 0 {
                return Err(io::Error::last_os_error());
            }
            if watchdog && libc::setenv(c"WATCHDOG_PID".as_ptr(), value, 1) != 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        });
    }
    // std reports a failed exec through a pipe it opens just before the
    // fork, at the lowest free descriptors. Were that in 3..3+count,
    // command-fds would dup2 a stored descriptor over it: the error would be
    // written into the stored file and the keeper would take the failed
    // exec for a start. The copies made above for the mappings already fill
    // every free slot of the range (as many as the range is long, each at
    // the lowest free descriptor from 3 up); holding whatever is still free
    // there keeps that true whatever the mappings become.
    let _reserved = reserve(LISTEN_FDS_START, count)?;
    command.spawn()
}

/// `bytes` as a C string (an environment variable's name or value).
fn c_string(bytes: &[u8]) -> io::Result<CString> {
    CString::new(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
}

/// `n` in decimal, NUL-terminated, into `out` (long enough for any u64),
/// without allocating.
fn decimal(mut n: u64, out: &mut [u8; 24]) {
    let mut digits = [0u8; 20];
    let mut len = 0;
    loop {
        digits[len] = b'0' + (n % 10) as u8;
        len += 1;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for (to, from) in out.iter_mut().zip(digits[..len].iter().rev()) {
        *to = *from;
    }
    out[len] = 0;
}

/// Opens /dev/null (close-on-exec) at every free descriptor in
/// `first..first + count`; they stay open while the returned vector lives.
fn reserve(first: i32, count: usize) -> io::Result<Vec<OwnedFd>> {
    if count == 0 {
        return Ok(Vec::new());
    }
    // Opened at the lowest free descriptor, which may be in the range: it
    // is then one of the reservations.
    let null = OwnedFd::from(File::open("/dev/null")?);
    let mut held = Vec::new();
    for fd in first..first + count as i32 {
        // SAFETY: F_GETFD only asks whether `fd` is open; it touches no
        // memory of ours.
        if unsafe { libc::fcntl(fd, libc::F_GETFD) } >= 0 {
            continue;
        }
        // SAFETY: dup3 onto `fd`, which is free (checked just above; the
        // keeper has a single thread, so nothing opens it in between).
        let got = unsafe { libc::dup3(null.as_raw_fd(), fd, libc::O_CLOEXEC) };
        if got < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: dup3 returned a new descriptor that nothing else owns.
        held.push(unsafe { OwnedFd::from_raw_fd(got) });
    }
    held.push(null);
    Ok(held)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_exit_is_told_as_a_status_or_a_signal() {
        assert_eq!(Exit::Status(2).to_string(), "exited with status 2");
        let kill = Exit::Signal {
            signal: 9,
            core: false,
        };
        assert_eq!(kill.to_string(), "killed by signal 9 (SIGKILL)");
        let abort = Exit::Signal {
            signal: 6,
            core: true,
        };
        assert_eq!(
            abort.to_string(),
            "killed by signal 6 (SIGABRT), core dumped"
        );
        let rt = Exit::Signal {
            signal: 40,
            core: false,
        };
        assert_eq!(rt.to_string(), "killed by signal 40");
    }

    #[test]
    fn the_keeper_exits_as_a_shell_reports_its_worker() {
        assert_eq!(Exit::Status(2).code(), 2);
        let kill = Exit::Signal {
            signal: 9,
            core: false,
        };
        assert_eq!(kill.code(), 137);
        assert!(Exit::Status(0).is_success() && !kill.is_success());
    }

    #[test]
    fn wait_statuses_are_decoded() {
        assert_eq!(
            Exit::from_status(ExitStatus::from_raw(3 << 8)),
            Some(Exit::Status(3))
        );
        assert_eq!(
            Exit::from_status(ExitStatus::from_raw(9)),
            Some(Exit::Signal {
                signal: 9,
                core: false
            })
        );
        assert_eq!(
            Exit::from_status(ExitStatus::from_raw(6 | 0x80)),
            Some(Exit::Signal {
                signal: 6,
                core: true
            })
        );
    }

    #[test]
    fn signals_have_their_names() {
        assert_eq!(signal_name(libc::SIGKILL), Some("SIGKILL"));
        assert_eq!(signal_name(libc::SIGTERM), Some("SIGTERM"));
        assert_eq!(signal_name(libc::SIGSYS), Some("SIGSYS"));
        assert_eq!(signal_name(libc::SIGUSR2), Some("SIGUSR2"));
        assert_eq!(signal_name(0), None);
        assert_eq!(signal_name(-1), None);
        assert_eq!(signal_name(64), None);
    }

    #[test]
    fn quick_crashes_back_off_to_eight_seconds() {
        let ms = |n| backoff(n).as_millis();
        let seq: Vec<u128> = (1..=9).map(ms).collect();
        assert_eq!(seq, [0, 0, 250, 500, 1000, 2000, 4000, 8000, 8000]);
        assert_eq!(ms(0), 0);
        assert_eq!(backoff(u32::MAX), MAX_BACKOFF);
    }

    #[test]
    fn durations_read_as_people_write_them() {
        assert_eq!(seconds(Duration::from_millis(250)), "250 ms");
        assert_eq!(seconds(Duration::from_millis(12_345)), "12.3 s");
    }

    #[test]
    fn pids_are_written_without_allocating() {
        let mut out = [0xffu8; 24];
        decimal(0, &mut out);
        assert_eq!(&out[..2], b"0\0");
        decimal(4_194_304, &mut out);
        assert_eq!(&out[..8], b"4194304\0");
        decimal(u64::MAX, &mut out);
        assert_eq!(&out[..21], b"18446744073709551615\0");
    }
}
