//! systemd's side of the notify protocol, played by a test: the card
//! worker (vnicd with `NOTIFY_SOCKET`) hands its descriptors over with
//! `FDSTORE=1`/`FDNAME=`, says `READY=1`, and a worker started later gets
//! them back as `LISTEN_FDS`/`LISTEN_FDNAMES`/`LISTEN_PID`, as systemd
//! does for a unit with `FileDescriptorStoreMax=` (docs/restart.md).

use std::ffi::OsStr;
use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

use crate::vnicd_binary;

/// The notify socket and the descriptor store.
pub struct FakeSystemd {
    socket: UnixDatagram,
    path: PathBuf,
    /// Stored descriptors by name, in the order they came.
    pub store: Vec<(String, Vec<OwnedFd>)>,
    /// READY=1 came since the last [`FakeSystemd::spawn`].
    pub ready: bool,
    /// Every notification, one string per datagram.
    pub messages: Vec<String>,
}

impl FakeSystemd {
    /// A notify socket in `dir`.
    pub fn new(dir: &Path) -> FakeSystemd {
        let path = dir.join("notify");
        let socket = UnixDatagram::bind(&path).expect("bind notify socket");
        socket.set_nonblocking(true).expect("nonblocking");
        FakeSystemd {
            socket,
            path,
            store: Vec::new(),
            ready: false,
            messages: Vec::new(),
        }
    }

    /// Takes every waiting notification.
    pub fn drain(&mut self) {
        loop {
            let mut buf = vec![0u8; 4096];
            let mut fds = [-1 as RawFd; 253];
            let mut iov = [libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: buf.len(),
            }];
            // SAFETY: the iovec points at `buf`, borrowed mutably for the
            // call.
            let Ok((n, nfds)) = (unsafe { self.socket.recv_with_fds(&mut iov, &mut fds) }) else {
                return;
            };
            // SAFETY: the kernel handed these descriptors to us.
            let fds: Vec<OwnedFd> = fds[..nfds]
                .iter()
                .map(|&fd| unsafe { OwnedFd::from_raw_fd(fd) })
                .collect();
            let text = String::from_utf8_lossy(&buf[..n]).to_string();
            self.take(&text, fds);
            self.messages.push(text);
        }
    }

    fn take(&mut self, text: &str, fds: Vec<OwnedFd>) {
        let field = |k: &str| {
            text.lines()
                .find_map(|l| l.strip_prefix(k)?.strip_prefix('='))
                .map(str::to_string)
        };
        if field("READY").as_deref() == Some("1") {
            self.ready = true;
        }
        let name = field("FDNAME").unwrap_or_else(|| "stored".into());
        if field("FDSTOREREMOVE").as_deref() == Some("1") {
            self.store.retain(|(n, _)| *n != name);
        } else if field("FDSTORE").as_deref() == Some("1") {
            // systemd keeps several descriptors under one name; the worker
            // never stores a name twice.
            match self.store.iter_mut().find(|(n, _)| *n == name) {
                Some((_, kept)) => kept.extend(fds),
                None => self.store.push((name, fds)),
            }
        }
    }

    /// Names in the store.
    pub fn names(&self) -> Vec<String> {
        self.store.iter().map(|(n, _)| n.clone()).collect()
    }

    /// Waits up to `timeout` for READY=1; false if `child` exits first or
    /// the time runs out.
    pub fn wait_ready(&mut self, child: &mut Child, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            self.drain();
            if self.ready {
                return true;
            }
            if child.try_wait().ok().flatten().is_some() || Instant::now() > deadline {
                return false;
            }
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    /// Starts vnicd with `args` as a card worker under this "systemd":
    /// `NOTIFY_SOCKET`, and the stored descriptors from 3 on; its stderr
    /// appends to `log`.
    pub fn spawn(&mut self, args: &[&OsStr], log: &Path) -> Child {
        self.drain();
        self.ready = false;
        let mut names = Vec::new();
        let mut high = Vec::new();
        for (name, fds) in &self.store {
            for fd in fds {
                // Out of the way of 3.. first, so no dup2 below overwrites
                // a descriptor still to be moved.
                // SAFETY: fcntl duplicates a descriptor we own.
                let h = unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_DUPFD_CLOEXEC, 1000) };
                assert!(h >= 0, "dup: {}", std::io::Error::last_os_error());
                // SAFETY: just created, ours alone.
                high.push(unsafe { OwnedFd::from_raw_fd(h) });
                names.push(name.clone());
            }
        }
        let raw: Vec<RawFd> = high.iter().map(AsRawFd::as_raw_fd).collect();
        let stderr = File::options()
            .create(true)
            .append(true)
            .open(log)
            .expect("open log");
        // LISTEN_PID must be the worker's own PID, known only in the child:
        // a shell sets it to its own ($$) and execs vnicd, which keeps the
        // PID (and the descriptors).
        let mut command = Command::new("/bin/sh");
        command
            .arg("-c")
            .arg(r#"[ -n "$LISTEN_FDS" ] && export LISTEN_PID=$$; exec "$0" "$@""#)
            .arg(vnicd_binary())
            .args(args)
            .env("NOTIFY_SOCKET", &self.path)
            .env("VNICD_WORKER", "1")
            .env("RUST_LOG", "debug")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr);
        if !raw.is_empty() {
            // As systemd: no LISTEN_* at all when the store is empty.
            command
                .env("LISTEN_FDS", raw.len().to_string())
                .env("LISTEN_FDNAMES", names.join(":"));
        }
        // SAFETY: between fork and exec only dup2, which is
        // async-signal-safe.
        unsafe {
            command.pre_exec(move || {
                for (i, &fd) in raw.iter().enumerate() {
                    if libc::dup2(fd, 3 + i as RawFd) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let child = command.spawn().expect("spawn vnicd worker");
        drop(high);
        child
    }
}

/// A file descriptor's number of bytes, for a test's look into a memfd.
pub fn fd_len(fd: &OwnedFd) -> u64 {
    // SAFETY: dup of a descriptor we own; the File owns the copy.
    let file = unsafe { File::from_raw_fd(libc::dup(fd.as_raw_fd())) };
    file.metadata().map(|m| m.len()).unwrap_or(0)
}
