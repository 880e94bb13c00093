//! The card worker's side of the descriptor store (docs/restart.md): the
//! descriptors a new worker must find (sockets QEMU holds, its guest
//! memory, its eventfds, the state record) are handed to whoever started
//! the worker, vnicd's keeper or systemd, with sd_notify's `FDSTORE=1`
//! and a name, and come back to the next worker as `LISTEN_FDS` with
//! `LISTEN_FDNAMES`. The protocol is systemd's, spoken through the
//! `sd-notify` crate, so one worker serves under both.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use log::{debug, warn};
use sd_notify::NotifyState;

/// Names of the descriptors a worker keeps. A name is unique per
/// descriptor set: a changed set is stored under a new name before the
/// record names it, and the old name removed after, so a record never
/// names a set the store lacks (see [`crate::restart`]).
pub mod names {
    /// The state record's memfd.
    pub const RECORD: &str = "record";
    /// The socket directory's lock.
    pub const LOCK: &str = "lock";
    /// The control socket's listener.
    pub const CONTROL: &str = "control";
    /// The uplink's TAP device or UDP socket.
    pub const UPLINK: &str = "uplink";

    /// Function `f`'s listening socket.
    pub fn listener(f: &str) -> String {
        format!("listen-{f}")
    }

    /// Function `f`'s client connection.
    pub fn client(f: &str) -> String {
        format!("client-{f}")
    }

    /// Function `f`'s BAR0 doorbell page (`--doorbell-page`).
    pub fn bar_page(f: &str) -> String {
        format!("dbpage-{f}")
    }

    /// Function `f`'s mapping files, generation `g`.
    pub fn dma(f: &str, g: u64) -> String {
        format!("dma-{f}.{g}")
    }

    /// Function `f`'s eventfds, generation `g`.
    pub fn irq(f: &str, g: u64) -> String {
        format!("irq-{f}.{g}")
    }
}

/// Why the worker could not hand a descriptor over.
#[derive(Debug, thiserror::Error)]
#[error("cannot keep {name} in the descriptor store: {error}")]
pub struct StoreError {
    name: String,
    error: io::Error,
}

/// The descriptors inherited from the last worker, by name, and the
/// channel to the keeper (or systemd) for the ones to keep.
pub struct FdStore {
    /// `$NOTIFY_SOCKET` is set: someone keeps what is stored.
    active: bool,
    inherited: HashMap<String, Vec<OwnedFd>>,
    /// Names stored (or inherited) and not removed.
    held: Vec<String>,
    last_warning: Option<Instant>,
}

impl FdStore {
    /// Takes the descriptors `LISTEN_FDS`/`LISTEN_FDNAMES` hand over (none
    /// on a first start) and unsets those variables.
    ///
    /// # Safety
    ///
    /// Changes the environment: call before any thread exists.
    pub unsafe fn from_env() -> io::Result<Self> {
        // A manager with nothing stored may still say LISTEN_FDS=0 (and
        // an empty LISTEN_FDNAMES, which sd-notify would refuse).
        if std::env::var("LISTEN_FDS").is_ok_and(|n| n.trim() == "0") {
            // SAFETY: the caller guarantees no other thread exists.
            unsafe {
                for v in ["LISTEN_FDS", "LISTEN_FDNAMES", "LISTEN_PID"] {
                    std::env::remove_var(v);
                }
            }
        }
        // SAFETY: the caller guarantees no other thread exists.
        let fds = unsafe { sd_notify::listen_fds_with_names_and_unset_env()? };
        let mut inherited: HashMap<String, Vec<OwnedFd>> = HashMap::new();
        for (fd, name) in fds {
            // SAFETY: the descriptors from 3 on are ours, handed over once
            // (LISTEN_PID is this process), and nothing else owns them.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            inherited.entry(name).or_default().push(fd);
        }
        let held = inherited.keys().cloned().collect();
        Ok(FdStore {
            active: std::env::var_os("NOTIFY_SOCKET").is_some(),
            inherited,
            held,
            last_warning: None,
        })
    }

    /// A store that keeps nothing (no keeper: tests, `--no-keeper`).
    pub fn inactive() -> Self {
        FdStore {
            active: false,
            inherited: HashMap::new(),
            held: Vec::new(),
            last_warning: None,
        }
    }

    /// Whether a keeper or systemd keeps what is stored.
    pub fn active(&self) -> bool {
        self.active
    }

    /// Whether the last worker left descriptors (this is a restart).
    pub fn restarting(&self) -> bool {
        !self.inherited.is_empty()
    }

    /// The inherited descriptors stored under `name`, taken (empty if none).
    pub fn take(&mut self, name: &str) -> Vec<OwnedFd> {
        self.inherited.remove(name).unwrap_or_default()
    }

    /// The one inherited descriptor stored under `name`, taken.
    pub fn take_one(&mut self, name: &str) -> Option<OwnedFd> {
        self.take(name).pop()
    }

    /// Hands `fds` to the keeper under `name` (replacing nothing: see
    /// [`names`]). Without a keeper it does nothing.
    pub fn store(&mut self, name: &str, fds: &[BorrowedFd<'_>]) -> Result<(), StoreError> {
        if !self.active || fds.is_empty() {
            return Ok(());
        }
        let state = [NotifyState::FdStore, NotifyState::FdName(name)];
        sd_notify::notify_with_fds(&state, fds).map_err(|error| StoreError {
            name: name.into(),
            error,
        })?;
        debug!("descriptor store: {name} ({} fds)", fds.len());
        if !self.held.iter().any(|n| n == name) {
            self.held.push(name.into());
        }
        Ok(())
    }

    /// [`FdStore::store`] of one descriptor.
    pub fn store_one(&mut self, name: &str, fd: impl AsFd) -> Result<(), StoreError> {
        self.store(name, &[fd.as_fd()])
    }

    /// Drops what is stored under `name` from the store.
    pub fn remove(&mut self, name: &str) {
        self.inherited.remove(name);
        let Some(i) = self.held.iter().position(|n| n == name) else {
            return;
        };
        self.held.swap_remove(i);
        if !self.active {
            return;
        }
        let state = [NotifyState::FdStoreRemove, NotifyState::FdName(name)];
        if let Err(e) = sd_notify::notify(&state) {
            self.warn(format_args!(
                "cannot remove {name} from the descriptor store: {e}"
            ));
        }
    }

    /// Removes every held name `keep` refuses (what a crashed worker stored
    /// and never recorded), and closes inherited descriptors nobody took.
    pub fn prune(&mut self, keep: impl Fn(&str) -> bool) {
        let stale: Vec<String> = self.held.iter().filter(|n| !keep(n)).cloned().collect();
        for name in stale {
            debug!("descriptor store: dropping {name}, which the record does not name");
            self.remove(&name);
        }
        self.inherited.clear();
    }

    /// Tells the keeper the worker serves (`READY=1`), with a status line.
    pub fn ready(&self, status: &str) {
        self.notify(&[NotifyState::Ready, NotifyState::Status(status)]);
    }

    /// Tells the keeper the worker is alive (`WATCHDOG=1`).
    pub fn watchdog(&self) {
        self.notify(&[NotifyState::Watchdog]);
    }

    /// Tells the keeper the worker is stopping on purpose (`STOPPING=1`).
    pub fn stopping(&self) {
        self.notify(&[NotifyState::Stopping]);
    }

    /// Any other notification (a status line, a vnicd-specific field).
    pub fn notify(&self, state: &[NotifyState<'_>]) {
        if self.active {
            if let Err(e) = sd_notify::notify(state) {
                warn!("cannot notify the keeper: {e}");
            }
        }
    }

    /// How often the worker must say it is alive, if the keeper watches.
    pub fn watchdog_interval() -> Option<Duration> {
        sd_notify::watchdog_enabled().map(|d| d / 2)
    }

    fn warn(&mut self, what: std::fmt::Arguments<'_>) {
        let now = Instant::now();
        if self
            .last_warning
            .is_none_or(|t| now.duration_since(t) >= Duration::from_secs(1))
        {
            self.last_warning = Some(now);
            warn!("{what}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_what_systemd_takes() {
        let all = [
            names::listener("vf12"),
            names::client("pf"),
            names::bar_page("vf0"),
            names::dma("vf3", 17),
            names::irq("vf3", 18),
            names::RECORD.into(),
        ];
        for n in all {
            assert!(n.len() <= 255);
            assert!(n
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)));
        }
    }

    #[test]
    fn an_inactive_store_keeps_nothing_and_prunes_quietly() {
        let mut store = FdStore::inactive();
        let file = std::fs::File::open("/dev/null").unwrap();
        store.store_one("record", &file).unwrap();
        assert!(!store.restarting());
        assert!(store.take_one("record").is_none());
        store.prune(|_| false);
        store.remove("record");
    }
}
