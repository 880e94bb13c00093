//! Helpers shared by vnic's integration and end-to-end tests: a vnicd
//! process owned by the test, and a raw vfio-user client for messages no
//! well-behaved client would send.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::RawFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Once;
use std::time::{Duration, Instant};

use vmm_sys_util::sock_ctrl_msg::ScmSocket;

pub mod ctl;
pub mod guest;
pub mod systemd;

/// Root of the workspace.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The target directory (CARGO_TARGET_DIR or the workspace's target/).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"))
}

/// Builds vnicd and vnicctl with cargo (`extra` arguments, e.g.
/// `--release`), in one cargo run.
fn build_binaries(extra: &[&str]) {
    let status = Command::new(env!("CARGO"))
        .args(["build", "--quiet", "-p", "vnic-device", "--bins"])
        .args(extra)
        .current_dir(workspace())
        .status()
        .expect("run cargo build");
    assert!(status.success(), "building vnicd and vnicctl failed");
}

/// target/debug, with vnicd and vnicctl built there once per test process
/// (one cargo run for both, so tests asking for either do not wait on
/// each other's build lock).
fn debug_binaries() -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| build_binaries(&[]));
    target_dir().join("debug")
}

/// target/release, with vnicd and vnicctl built there once per process:
/// benchmarks measure the release build.
pub fn release_binaries() -> PathBuf {
    static BUILD: Once = Once::new();
    BUILD.call_once(|| build_binaries(&["--release"]));
    target_dir().join("release")
}

/// Path of the vnicd binary, built once per test process if needed.
pub fn vnicd_binary() -> PathBuf {
    debug_binaries().join("vnicd")
}

/// Path of the vnicctl binary, built once per test process if needed.
pub fn vnicctl_binary() -> PathBuf {
    debug_binaries().join("vnicctl")
}

/// A unique scratch directory under target/, removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static COUNTER: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        // Short path: UNIX socket paths are limited to 108 bytes.
        let dir = std::env::temp_dir().join(format!("vnic-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A vnicd process started by a test and ended by it (by PID) on drop.
pub struct Vnicd {
    child: Option<Child>,
    pub dir: TempDir,
    pub log: PathBuf,
    pub ready_line: String,
}

impl Vnicd {
    /// Starts vnicd with `args` (after --socket-dir) and waits for "ready".
    pub fn start(args: &[&str]) -> Vnicd {
        Vnicd::start_with_umask(args, None)
    }

    /// [`Vnicd::start`] with the process's umask set to `umask` (if some),
    /// to check what vnicd creates does not depend on it.
    pub fn start_with_umask(args: &[&str], umask: Option<libc::mode_t>) -> Vnicd {
        use std::os::unix::process::CommandExt;
        let dir = TempDir::new("d");
        let sockets = dir.0.join("sock");
        let log = dir.0.join("vnicd.log");
        let mut command = Command::new(vnicd_binary());
        command
            .arg("--socket-dir")
            .arg(&sockets)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("create log"));
        if let Some(mask) = umask {
            // SAFETY: runs in the child between fork and exec, where only
            // async-signal-safe calls are allowed: umask(2) is one and
            // nothing here allocates.
            unsafe {
                command.pre_exec(move || {
                    libc::umask(mask);
                    Ok(())
                });
            }
        }
        let mut child = command.spawn().expect("spawn vnicd");
        let stdout = child.stdout.take().expect("stdout");
        let mut ready_line = String::new();
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("read vnicd stdout");
            if line.starts_with("vnicd: ready") {
                ready_line = line;
                break;
            }
        }
        assert!(
            !ready_line.is_empty(),
            "vnicd exited before ready: {}",
            read(&log)
        );
        Vnicd {
            child: Some(child),
            dir,
            log,
            ready_line,
        }
    }

    /// Starts vnicd with `args` (after --socket-dir), its stdout in `out`
    /// and its stderr in `log` (files the caller keeps, e.g. with a guest's
    /// logs), and waits at most `timeout` for its ready line. vnicd logs at
    /// its default level unless RUST_LOG says otherwise, as under
    /// qemu/run-guest.sh. Panics, naming the logs, if it is not ready.
    pub fn start_logged(args: &[&str], out: &Path, log: &Path, timeout: Duration) -> Vnicd {
        Vnicd::start_binary_logged(&vnicd_binary(), args, out, log, timeout)
    }

    /// [`Vnicd::start_logged`] with another vnicd binary (a benchmark's
    /// release build).
    pub fn start_binary_logged(
        binary: &Path,
        args: &[&str],
        out: &Path,
        log: &Path,
        timeout: Duration,
    ) -> Vnicd {
        let dir = TempDir::new("d");
        let mut child = Command::new(binary)
            .arg("--socket-dir")
            .arg(dir.0.join("sock"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(File::create(out).expect("create vnicd stdout file"))
            .stderr(File::create(log).expect("create vnicd log"))
            .spawn()
            .expect("spawn vnicd");
        let deadline = Instant::now() + timeout;
        let ready_line = loop {
            if let Some(l) = read(out).lines().find(|l| l.starts_with("vnicd: ready")) {
                break l.to_string();
            }
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                if exited.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                panic!(
                    "vnicd not ready ({}); see {} and {}:\n{}",
                    exited.map_or("timeout".to_string(), |s| s.to_string()),
                    out.display(),
                    log.display(),
                    read(log)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        Vnicd {
            child: Some(child),
            dir,
            log: log.to_path_buf(),
            ready_line,
        }
    }

    /// A vnicd process the caller started (a card worker under
    /// [`systemd::FakeSystemd`]) with its socket directory in `dir`/sock.
    pub fn from_child(child: Child, dir: TempDir, log: PathBuf) -> Vnicd {
        Vnicd {
            child: Some(child),
            dir,
            log,
            ready_line: String::new(),
        }
    }

    /// Puts `child` in place of the process (a new card worker).
    pub fn set_child(&mut self, child: Child) {
        self.child = Some(child);
    }

    /// SIGKILL, and reaps it: a crash.
    pub fn kill(&mut self) -> Option<std::process::ExitStatus> {
        let mut child = self.child.take()?;
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        let _ = child.kill();
        child.wait().ok()
    }

    pub fn socket(&self, function: &str) -> PathBuf {
        self.socket_dir().join(format!("{function}.sock"))
    }

    /// The directory holding the function sockets (`--socket-dir`).
    pub fn socket_dir(&self) -> PathBuf {
        self.dir.0.join("sock")
    }

    /// The exit status if the process has ended, without waiting.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// True while the process runs.
    pub fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    pub fn log_text(&self) -> String {
        read(&self.log)
    }

    /// Sends SIGTERM and waits (bounded); returns the exit status code.
    pub fn stop(&mut self) -> Option<i32> {
        terminate(&mut self.child.take()?)
    }
}

/// Stops a child process this test spawned: SIGTERM, up to 10 s, then
/// SIGKILL. Returns its exit status code (None if it had to be killed).
fn terminate(child: &mut Child) -> Option<i32> {
    if let Ok(Some(status)) = child.try_wait() {
        // Already reaped: its PID may belong to someone else by now.
        return status.code();
    }
    // SAFETY: kill(2) on the PID of a child we spawned and have not reaped
    // (try_wait just saw it running), so the PID is still ours.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return status.code();
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

impl Drop for Vnicd {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A `vnicctl vxlan-agent` process started by a test (docs/vxlan.md, "The
/// host agent"), stopped by its PID with SIGTERM (then SIGKILL) on
/// [`Agent::stop`] or drop. Its decisions (stderr) go to `log`, its
/// summary (stdout) to `out`.
pub struct Agent {
    child: Option<Child>,
    pub log: PathBuf,
    pub out: PathBuf,
    /// The exit status of the stop, once stopped: 0 for a clean SIGTERM.
    pub status: Option<Option<i32>>,
}

impl Agent {
    /// Starts `vnicctl --control CONTROL vxlan-agent ARGS...` and waits
    /// (up to 10 s) for its ready line; panics with its log if it does
    /// not get there.
    pub fn start(control: &Path, args: &[&str], log: &Path, out: &Path) -> Agent {
        let mut child = Command::new(vnicctl_binary())
            .arg("--control")
            .arg(control)
            .arg("vxlan-agent")
            .args(args)
            .env_remove("VNICCTL_CONTROL")
            .stdin(Stdio::null())
            .stdout(File::create(out).expect("create agent stdout file"))
            .stderr(File::create(log).expect("create agent log"))
            .spawn()
            .expect("spawn vnicctl vxlan-agent");
        let deadline = Instant::now() + Duration::from_secs(10);
        while !read(log).contains("vxlan-agent: ready") {
            let exited = child.try_wait().ok().flatten();
            if exited.is_some() || Instant::now() > deadline {
                if exited.is_none() {
                    let _ = child.kill();
                    let _ = child.wait();
                }
                panic!(
                    "vxlan-agent not ready ({}): {}{}",
                    exited.map_or("timeout".to_string(), |s| s.to_string()),
                    read(log),
                    read(out)
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Agent {
            child: Some(child),
            log: log.to_path_buf(),
            out: out.to_path_buf(),
            status: None,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// SIGTERM, up to 10 s for the agent to print its summary and exit,
    /// then SIGKILL. Returns the exit status (None: killed or died of a
    /// signal).
    pub fn stop(&mut self) -> Option<i32> {
        let Some(mut child) = self.child.take() else {
            return self.status.flatten();
        };
        let status = terminate(&mut child);
        self.status = Some(status);
        status
    }

    /// The summary line (after [`Agent::stop`]), or "" if there is none.
    pub fn summary(&self) -> String {
        read(&self.out)
            .lines()
            .find(|l| l.contains("summary:"))
            .unwrap_or("")
            .to_string()
    }

    /// Counter `name` of the summary (`requests`, `punts`, `installs`,
    /// `drops`, ...).
    pub fn counter(&self, name: &str) -> Option<u64> {
        let key = format!("{name}=");
        self.summary()
            .split_whitespace()
            .find_map(|w| w.strip_prefix(&key)?.parse().ok())
    }

    /// The decisions it logged so far.
    pub fn log_text(&self) -> String {
        read(&self.log)
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        self.stop();
    }
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_default()
}

/// A reply as received by [`RawClient`].
#[derive(Debug)]
pub struct Reply {
    pub id: u16,
    pub command: u16,
    pub flags: u32,
    pub error: u32,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn is_error(&self) -> bool {
        self.flags & 0x20 != 0
    }
}

/// The fixed part of a REGION_READ/REGION_WRITE payload.
pub fn region_access(region: u32, offset: u64, count: u32) -> Vec<u8> {
    let mut b = offset.to_le_bytes().to_vec();
    b.extend_from_slice(&region.to_le_bytes());
    b.extend_from_slice(&count.to_le_bytes());
    b
}

/// A GET_REGION_INFO payload: `struct vfio_region_info` asking about
/// region `index`, with room for `argsz` bytes of answer.
pub fn region_info_body(index: u32, argsz: u32) -> Vec<u8> {
    let mut b = argsz.to_le_bytes().to_vec();
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&index.to_le_bytes());
    b.extend_from_slice(&[0; 20]);
    b
}

/// The little-endian u32 at byte `o` of a reply.
pub fn le_u32(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}

/// The little-endian u64 at byte `o` of a reply.
pub fn le_u64(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}

/// A DMA_MAP payload (argsz 32).
pub fn dma_map_body(flags: u32, offset: u64, address: u64, size: u64) -> Vec<u8> {
    let mut b = 32u32.to_le_bytes().to_vec();
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
    b.extend_from_slice(&address.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b
}

/// The body of a DMA_UNMAP of `[address, address + size)`
/// (`vfio_user_dma_unmap` without a dirty bitmap).
pub fn dma_unmap_body(address: u64, size: u64) -> Vec<u8> {
    let mut b = 24u32.to_le_bytes().to_vec();
    b.extend_from_slice(&0u32.to_le_bytes());
    b.extend_from_slice(&address.to_le_bytes());
    b.extend_from_slice(&size.to_le_bytes());
    b
}

/// A vfio-user client that sends whatever bytes a test wants.
pub struct RawClient {
    pub stream: UnixStream,
    next_id: u16,
}

pub const VERSION: u16 = 1;
pub const DMA_MAP: u16 = 2;
pub const DMA_UNMAP: u16 = 3;
pub const DEVICE_GET_INFO: u16 = 4;
pub const GET_REGION_INFO: u16 = 5;
pub const GET_IRQ_INFO: u16 = 7;
pub const SET_IRQS: u16 = 8;
pub const REGION_READ: u16 = 9;
pub const REGION_WRITE: u16 = 10;
pub const DEVICE_RESET: u16 = 13;
pub const REGION_WRITE_MULTI: u16 = 15;
pub const NO_REPLY: u32 = 0x10;

impl RawClient {
    pub fn connect(path: &Path) -> RawClient {
        let stream = UnixStream::connect(path).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        RawClient { stream, next_id: 0 }
    }

    /// Connects and negotiates VERSION.
    pub fn negotiated(path: &Path) -> RawClient {
        let mut c = RawClient::connect(path);
        let mut body = vec![0, 0, 0, 0];
        body.extend_from_slice(br#"{"capabilities":{"max_msg_fds":8}}"#);
        body.push(0);
        let r = c.call(VERSION, 0, &body, &[]);
        assert!(!r.is_error(), "VERSION refused: {r:?}");
        c
    }

    /// Raw bytes on the socket.
    pub fn send_bytes(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(b)
    }

    pub fn header(&mut self, cmd: u16, flags: u32, size: u32) -> Vec<u8> {
        let id = self.next_id;
        self.next_id = self.next_id.wrapping_add(1);
        let mut h = Vec::with_capacity(16);
        h.extend_from_slice(&id.to_le_bytes());
        h.extend_from_slice(&cmd.to_le_bytes());
        h.extend_from_slice(&size.to_le_bytes());
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&0u32.to_le_bytes());
        h
    }

    /// Sends one well-framed message with optional descriptors.
    pub fn send(&mut self, cmd: u16, flags: u32, body: &[u8], fds: &[RawFd]) {
        let mut msg = self.header(cmd, flags, 16 + body.len() as u32);
        msg.extend_from_slice(body);
        if fds.is_empty() {
            self.stream.write_all(&msg).expect("send");
        } else {
            let n = self
                .stream
                .send_with_fds(&[&msg[..]], fds)
                .expect("send with fds");
            assert_eq!(n, msg.len());
        }
    }

    /// Reads one reply.
    pub fn recv(&mut self) -> std::io::Result<Reply> {
        let mut h = [0u8; 16];
        self.stream.read_exact(&mut h)?;
        let size = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let mut body = vec![0; size.saturating_sub(16)];
        self.stream.read_exact(&mut body)?;
        Ok(Reply {
            id: u16::from_le_bytes([h[0], h[1]]),
            command: u16::from_le_bytes([h[2], h[3]]),
            flags: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
            error: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
            body,
        })
    }

    /// Reads one reply and the descriptor that came with it, if any (it
    /// arrives with the reply's first byte).
    pub fn recv_with_fd(&mut self) -> std::io::Result<(Reply, Option<File>)> {
        let mut h = [0u8; 16];
        let mut raw = [-1; 4];
        let mut iov = [libc::iovec {
            iov_base: h.as_mut_ptr().cast(),
            iov_len: h.len(),
        }];
        // SAFETY: the iovec points at `h`, borrowed mutably for the call.
        let (n, nfds) = unsafe { self.stream.recv_with_fds(&mut iov, &mut raw) }
            .map_err(|e| std::io::Error::from_raw_os_error(e.errno()))?;
        let mut fds: Vec<File> = raw[..nfds]
            .iter()
            // SAFETY: the kernel gave us these descriptors; nothing else owns them.
            .map(|&fd| unsafe { <File as std::os::fd::FromRawFd>::from_raw_fd(fd) })
            .collect();
        self.stream.read_exact(&mut h[n..])?;
        let size = u32::from_le_bytes([h[4], h[5], h[6], h[7]]) as usize;
        let mut body = vec![0; size.saturating_sub(16)];
        self.stream.read_exact(&mut body)?;
        let reply = Reply {
            id: u16::from_le_bytes([h[0], h[1]]),
            command: u16::from_le_bytes([h[2], h[3]]),
            flags: u32::from_le_bytes([h[8], h[9], h[10], h[11]]),
            error: u32::from_le_bytes([h[12], h[13], h[14], h[15]]),
            body,
        };
        assert!(fds.len() <= 1, "at most one descriptor per reply");
        Ok((reply, fds.pop()))
    }

    pub fn call(&mut self, cmd: u16, flags: u32, body: &[u8], fds: &[RawFd]) -> Reply {
        self.send(cmd, flags, body, fds);
        self.recv().expect("reply")
    }

    pub fn region_read(&mut self, region: u32, offset: u64, count: u32) -> Reply {
        self.call(REGION_READ, 0, &region_access(region, offset, count), &[])
    }

    pub fn region_write(&mut self, region: u32, offset: u64, data: &[u8], flags: u32) {
        let mut b = region_access(region, offset, data.len() as u32);
        b.extend_from_slice(data);
        self.send(REGION_WRITE, flags, &b, &[]);
        if flags & NO_REPLY == 0 {
            let r = self.recv().expect("write reply");
            assert!(!r.is_error(), "write refused: {r:?}");
        }
    }

    /// Reads a u32 from `region` at `offset`, panicking on an error reply.
    pub fn read_u32(&mut self, region: u32, offset: u64) -> u32 {
        let r = self.region_read(region, offset, 4);
        assert!(!r.is_error(), "read refused: {r:?}");
        u32::from_le_bytes(r.body[16..20].try_into().expect("4 bytes"))
    }
}

pub use vnic::test_utils::memfd;

/// Waits (bounded) until `f` holds, polling every 10 ms.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Running guest scenarios under QEMU through `qemu/run-guest.sh`.
///
/// A scenario is a shell script under tests/e2e/ run inside the guest. Its
/// launcher options are in its header, on a line `# run-guest: OPTIONS`, so
/// the script alone says how it runs; options after a `--` there are
/// vnicd's. [`run_scenario`] boots one guest on a vnicd of its own (the
/// launcher starts it); [`run_guests`] starts one vnicd and boots several
/// guests on it at once, each in its own QEMU process: VMs sharing a card.
/// Their `_with_host` forms also serve each guest's host channel
/// ([`HostChannel`]), so a scenario can run vnicctl on the host at a moment
/// of its choosing (tests/e2e/lib.sh: `host vnicctl ARGS...`).
pub mod e2e {
    use super::*;
    use std::ffi::OsString;
    use std::fs::OpenOptions;
    use std::os::unix::fs::OpenOptionsExt;
    use std::os::unix::process::ExitStatusExt;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    use std::thread::JoinHandle;

    pub struct Outcome {
        pub status: Option<i32>,
        pub console: String,
        /// Directory with the console, QEMU and vnicd logs.
        pub logs: PathBuf,
        /// The host channel's log (each command the guest asked for, its
        /// status and output); empty without a host channel.
        pub host: String,
    }

    impl Outcome {
        /// Panics, keeping the logs and naming them, unless the scenario
        /// exited 0; on success the logs are removed.
        pub fn assert_success(&self) {
            if self.status == Some(0) {
                let _ = std::fs::remove_dir_all(&self.logs);
                return;
            }
            panic!(
                "guest scenario failed (status {:?}); logs kept in {}\n--- console tail ---\n{}",
                self.status,
                self.logs.display(),
                tail(&self.console, 40),
            );
        }

        /// Console lines that contain any of `needles`.
        pub fn lines_with<'a>(&'a self, needles: &'a [&str]) -> impl Iterator<Item = &'a str> {
            self.console
                .lines()
                .filter(move |l| needles.iter().any(|n| l.contains(n)))
        }

        /// What follows `marker` on the first console line containing it
        /// (trimmed), e.g. a value a scenario prints for the test to check.
        pub fn value_after(&self, marker: &str) -> Option<&str> {
            self.console
                .lines()
                .find_map(|l| l.find(marker).map(|i| l[i + marker.len()..].trim()))
        }
    }

    /// The last `n` lines of `text`.
    fn tail(text: &str, n: usize) -> String {
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }

    /// Checks that qemu/setup.sh has set up QEMU and guest kernel `kernel`
    /// (`None`: the launcher's default, or `$VNIC_KERNEL`), with the
    /// launcher's message naming what is missing if not. The launcher
    /// (qemu/kernels.sh) is the one place that knows the kernels' files.
    fn require_setup(kernel: Option<&str>) {
        let mut check = Command::new(workspace().join("qemu/run-guest.sh"));
        check.arg("--check").stdin(Stdio::null());
        if let Some(k) = kernel {
            check.args(["--kernel", k]);
        }
        let out = check.output().expect("run qemu/run-guest.sh --check");
        assert!(
            out.status.success(),
            "guest environment missing (tests/run.sh sets up every kernel):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The launcher options in a scenario's `# run-guest:` header line.
    pub fn header_options(script: &Path) -> Vec<String> {
        let text = read(script);
        let line = text.lines().find_map(|l| l.strip_prefix("# run-guest:"));
        let line =
            line.unwrap_or_else(|| panic!("{} has no '# run-guest:' line", script.display()));
        line.split_whitespace().map(String::from).collect()
    }

    /// Splits launcher options at `--` into the launcher's own and vnicd's.
    pub fn split_vnicd_args(opts: &[String]) -> (Vec<String>, Vec<String>) {
        match opts.iter().position(|o| o == "--") {
            Some(i) => (opts[..i].to_vec(), opts[i + 1..].to_vec()),
            None => (opts.to_vec(), Vec::new()),
        }
    }

    /// The value of launcher option `name` (`--name VALUE` or `--name=VALUE`).
    fn option_value<'a>(opts: &'a [String], name: &str) -> Option<&'a str> {
        let prefix = format!("{name}=");
        opts.iter().enumerate().find_map(|(i, o)| {
            if o == name {
                opts.get(i + 1).map(String::as_str)
            } else {
                o.strip_prefix(&prefix)
            }
        })
    }

    /// The `--timeout` among launcher options (the launcher's default is 300).
    fn timeout_of(opts: &[String]) -> u64 {
        option_value(opts, "--timeout")
            .and_then(|t| t.parse().ok())
            .unwrap_or(300)
    }

    fn scenario_path(name: &str) -> PathBuf {
        workspace().join(format!("tests/e2e/{name}.sh"))
    }

    /// target/e2e-logs/`name`, emptied.
    fn fresh_log_dir(name: &str) -> PathBuf {
        let logs = workspace().join("target/e2e-logs").join(name);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("log dir");
        logs
    }

    /// A qemu/run-guest.sh process started by a test. Dropping it (e.g.
    /// when the test panics) stops it by PID if it still runs; its TERM trap
    /// stops the QEMU (and vnicd) it started.
    struct Launcher {
        child: Child,
        status: Option<Option<i32>>,
    }

    /// The launcher options every test harness passes: the guest attaches
    /// to a vnicd the test started (sockets in `sockets`), its console log
    /// goes to `console`.
    fn harness_args<'a>(sockets: &'a Path, console: &'a Path) -> Vec<&'a std::ffi::OsStr> {
        vec![
            "--no-vnicd".as_ref(),
            "--socket-dir".as_ref(),
            sockets.as_os_str(),
            "--log".as_ref(),
            console.as_os_str(),
        ]
    }

    impl Launcher {
        /// Starts the launcher for `script` with the harness's options
        /// first (the header's may end with `-- VNICD-ARGS`), its stdout and
        /// stderr in `run_log`.
        fn start(
            script: &Path,
            harness: &[&std::ffi::OsStr],
            opts: &[String],
            run_log: &Path,
        ) -> Self {
            let run_log = File::create(run_log).expect("run log");
            let child = Command::new(workspace().join("qemu/run-guest.sh"))
                .current_dir(workspace())
                .arg("--scenario")
                .arg(script)
                .arg("--quiet")
                .args(harness)
                .args(opts)
                .stdin(Stdio::null())
                .stdout(run_log.try_clone().expect("dup log"))
                .stderr(run_log)
                .spawn()
                .expect("start qemu/run-guest.sh");
            Launcher {
                child,
                status: None,
            }
        }

        /// Records the exit status if the launcher has ended; true if so.
        fn poll(&mut self) -> bool {
            if self.status.is_none() {
                // (No panic here: this also runs in drop, maybe unwinding.)
                if let Ok(Some(st)) = self.child.try_wait() {
                    self.status = Some(st.code());
                }
            }
            self.status.is_some()
        }

        /// SIGTERM, up to 20 s for its cleanup, then SIGKILL.
        fn stop(&mut self) {
            if self.poll() {
                return;
            }
            // SAFETY: kill(2) on the PID of the launcher we spawned and have
            // not reaped (poll() saw it running), so the PID is still ours.
            unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
            let deadline = Instant::now() + Duration::from_secs(20);
            while !self.poll() {
                if Instant::now() > deadline {
                    let _ = self.child.kill();
                    let _ = self.child.wait();
                    break;
                }
                std::thread::sleep(Duration::from_millis(100));
            }
            // Stopped by the watchdog: no scenario status.
            self.status = Some(None);
        }
    }

    /// Ends the wait for running guests when it is past `deadline`, or
    /// 15 s after their vnicd died (`died`; time for the guests to notice):
    /// stops every launcher and returns true.
    fn stop_when_overdue(
        launchers: &mut [Launcher],
        deadline: Instant,
        died: Option<Instant>,
    ) -> bool {
        let late = Instant::now() > deadline;
        let gone = died.is_some_and(|t| t.elapsed() > Duration::from_secs(15));
        if !late && !gone {
            return false;
        }
        for l in launchers {
            l.stop();
        }
        true
    }

    impl Drop for Launcher {
        fn drop(&mut self) {
            self.stop();
        }
    }

    /// Runs tests/e2e/`name`.sh in a guest. The launcher bounds the run and
    /// ends only the processes it started; a watchdog here ends the
    /// launcher itself (by PID) if it outlives its own timeout.
    pub fn run_scenario(name: &str) -> Outcome {
        run_one(name, Host::None, None)
    }

    /// [`run_scenario`] on guest kernel `kernel` (the launcher's `--kernel`:
    /// 6.1, 6.12, latest) instead of the default one; the logs go to
    /// target/e2e-logs/<name>-<kernel>.
    pub fn run_scenario_on_kernel(name: &str, kernel: &str) -> Outcome {
        run_one(name, Host::None, Some(kernel))
    }

    /// [`run_scenario`] with the guest's host channel served: the launcher
    /// gets `--host-channel target/e2e-logs/<name>/host` and a socket
    /// directory of ours, so the card's control socket is known, and a
    /// [`HostChannel`] answers the guest's `host vnicctl ...` requests
    /// until the launcher has ended. Its log is `host.log` there (and
    /// [`Outcome::host`]).
    pub fn run_scenario_with_host(name: &str) -> Outcome {
        run_one(name, Host::Vnicctl, None)
    }

    /// [`run_scenario_with_host`] where the guest may also hot-add
    /// functions of its card to itself: the launcher gets `--qmp` (a
    /// socket in a directory of ours) and the host channel serves `host
    /// qmp device_add FUNCTION ROOT-PORT` ([`QmpAccess`]); the scenario's
    /// header gives the root ports (`--root-ports`). `host qmp device_del
    /// FUNCTION` runs only if [`hotunplug_allowed`] (the guest's
    /// /etc/vnic-run.env says `VNIC_HOTUNPLUG=1` then, else 0): QEMU
    /// 11.1.3 aborts on it (docs/guest-environment.md, "Hotplug").
    pub fn run_scenario_with_hotplug(name: &str) -> Outcome {
        run_one(name, Host::Hotplug, None)
    }

    /// True if `VNIC_HOTUNPLUG=1`: whoever runs the tests says that their
    /// QEMU (`VNIC_QEMU`, the launcher's `--qemu`) survives `device_del`
    /// of a vfio-user-pci function with MSI-X, which QEMU 11.1.3 does not
    /// (docs/guest-environment.md, "Hotplug").
    pub fn hotunplug_allowed() -> bool {
        std::env::var("VNIC_HOTUNPLUG").is_ok_and(|v| v == "1")
    }

    /// What a single-guest run serves on the guest's host channel.
    #[derive(Clone, Copy, PartialEq)]
    enum Host {
        None,
        Vnicctl,
        Hotplug,
    }

    fn run_one(name: &str, served: Host, kernel: Option<&str>) -> Outcome {
        require_setup(kernel);
        let script = scenario_path(name);
        let opts = header_options(&script);
        let logs = match kernel {
            Some(k) => fresh_log_dir(&format!("{name}-{k}")),
            None => fresh_log_dir(name),
        };
        let console = logs.join("console.log");
        let mut harness: Vec<OsString> = vec![
            "--log".into(),
            console.clone().into(),
            "--vnicd".into(),
            vnicd_binary().into(),
        ];
        if let Some(k) = kernel {
            harness.extend(["--kernel".into(), k.into()]);
        }
        // A short directory of our own: socket paths are limited to 108
        // bytes, and the control socket's path must be known here.
        let sockets = TempDir::new("s");
        // QEMU's QMP socket, apart from vnicd's sockets (whose directory
        // the launcher checks for leftovers).
        let qmp_dir = TempDir::new("q");
        let host = (served != Host::None).then(|| {
            let channel = logs.join("host");
            harness.extend([
                "--host-channel".into(),
                channel.clone().into(),
                "--socket-dir".into(),
                sockets.0.clone().into(),
            ]);
            let control = sockets.0.join("control.sock");
            let qmp = (served == Host::Hotplug).then(|| {
                let socket = qmp_dir.0.join("qmp.sock");
                let unplug = hotunplug_allowed();
                harness.extend([
                    "--qmp".into(),
                    socket.clone().into(),
                    "--env".into(),
                    format!("VNIC_HOTUNPLUG={}", u8::from(unplug)).into(),
                ]);
                QmpAccess {
                    socket,
                    functions: sockets.0.clone(),
                    unplug,
                }
            });
            HostChannel::serve_with(&channel, &control, &logs.join("host.log"), &[], qmp)
        });
        let harness: Vec<&std::ffi::OsStr> = harness.iter().map(OsString::as_os_str).collect();
        let mut launcher = Launcher::start(&script, &harness, &opts, &logs.join("run.log"));
        let deadline = Instant::now() + Duration::from_secs(timeout_of(&opts) + 60);
        while !launcher.poll() {
            if Instant::now() > deadline {
                launcher.stop();
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        // The guest is gone: nothing more can come over the channel.
        drop(host);
        Outcome {
            status: launcher.status.flatten(),
            console: read(&console),
            host: read(&logs.join("host.log")),
            logs,
        }
    }

    /// The result of [`run_guests`]: every guest's outcome, and whether
    /// vnicd, shared by all of them, stayed up and exited cleanly.
    pub struct SharedOutcome {
        /// (scenario name, outcome); the outcomes' `logs` is the shared
        /// log directory.
        pub guests: Vec<(String, Outcome)>,
        /// What went wrong with vnicd (any of them), if anything.
        pub vnicd_problem: Option<String>,
        /// What went wrong with the agents ([`Testbed::start_agent`]):
        /// one that died, or did not exit 0 on SIGTERM.
        pub agent_problem: Option<String>,
        /// The agents a [`Testbed`] ran, by name, stopped: their summary
        /// and counters ([`Agent::summary`], [`Agent::counter`]).
        pub agents: Vec<(String, Agent)>,
        /// The vnicd logs shown when the test fails.
        pub vnicd_logs: Vec<PathBuf>,
        /// target/e2e-logs/<test>: `<scenario>.log` (console),
        /// `<scenario>.qemu.log`, `<scenario>.run.log` (launcher),
        /// `vnicd.out`, `vnicd.log`.
        pub logs: PathBuf,
    }

    impl SharedOutcome {
        /// The outcome of scenario `name`.
        pub fn guest(&self, name: &str) -> &Outcome {
            self.guests
                .iter()
                .find_map(|(n, o)| (n == name).then_some(o))
                .unwrap_or_else(|| panic!("no guest ran scenario {name}"))
        }

        /// Panics with `what`, every guest's status and console tail and
        /// vnicd's log tail, keeping the logs.
        pub fn fail(&self, what: &str) -> ! {
            let mut msg = format!("{what}; logs kept in {}", self.logs.display());
            for (name, o) in &self.guests {
                let status = o
                    .status
                    .map_or("none (stopped by the watchdog)".into(), |c| c.to_string());
                msg += &format!(
                    "\n--- {name}: status {status}, console tail ---\n{}",
                    tail(&o.console, 40)
                );
            }
            msg += &format!(
                "\n--- vnicd: {} ---",
                self.vnicd_problem.as_deref().unwrap_or("ran throughout"),
            );
            for log in &self.vnicd_logs {
                msg += &format!("\n--- {} tail ---\n{}", log.display(), tail(&read(log), 20));
            }
            if let Some(p) = &self.agent_problem {
                msg += &format!("\n--- agents: {p} ---");
            }
            for (name, a) in &self.agents {
                msg += &format!(
                    "\n--- agent {name}: {}, log tail ---\n{}",
                    a.summary(),
                    tail(&a.log_text(), 20)
                );
            }
            panic!("{msg}");
        }

        /// Fails (see [`SharedOutcome::fail`]) unless `ok`.
        pub fn check(&self, ok: bool, what: &str) {
            if !ok {
                self.fail(what);
            }
        }

        /// True if every scenario exited 0 and vnicd stayed up and exited
        /// cleanly.
        pub fn passed(&self) -> bool {
            self.vnicd_problem.is_none()
                && self.agent_problem.is_none()
                && self.guests.iter().all(|(_, o)| o.status == Some(0))
        }

        /// The agent called `name`.
        pub fn agent(&self, name: &str) -> &Agent {
            self.agents
                .iter()
                .find_map(|(n, a)| (n == name).then_some(a))
                .unwrap_or_else(|| panic!("no agent {name}"))
        }

        /// Fails unless every scenario exited 0 and vnicd stayed up and
        /// exited cleanly; on success the logs are removed.
        pub fn assert_success(&self) {
            let failed: Vec<&str> = self
                .guests
                .iter()
                .filter(|(_, o)| o.status != Some(0))
                .map(|(n, _)| n.as_str())
                .collect();
            if !failed.is_empty() {
                self.fail(&format!("guest scenario(s) failed: {}", failed.join(", ")));
            }
            if let Some(p) = &self.vnicd_problem {
                self.fail(p);
            }
            if let Some(p) = &self.agent_problem {
                self.fail(p);
            }
            let _ = std::fs::remove_dir_all(&self.logs);
        }
    }

    /// Runs the scenarios `names` (tests/e2e/<name>.sh) at the same time,
    /// each in its own guest (its own QEMU process), all on one vnicd, with
    /// logs in target/e2e-logs/`test`. vnicd gets `--vfs` (the largest in
    /// the headers, default 4) and the options after `--` in the headers,
    /// which must agree. The launchers bound their own runs; a watchdog here
    /// stops (by PID) any launcher that outlives its timeout by a minute,
    /// and every guest 15 s after vnicd dies. Only processes this function
    /// started are stopped.
    pub fn run_guests(test: &str, names: &[&str]) -> SharedOutcome {
        run_many(test, names, false)
    }

    /// [`run_guests`] with every guest's host channel served: guest
    /// `<name>`'s is target/e2e-logs/`test`/`<name>`.host, its log
    /// `<name>`.host.log, and its `host vnicctl ...` commands reach the
    /// shared vnicd.
    pub fn run_guests_with_host(test: &str, names: &[&str]) -> SharedOutcome {
        run_many(test, names, true)
    }

    fn run_many(test: &str, names: &[&str], with_host: bool) -> SharedOutcome {
        require_setup(None);
        assert!(!names.is_empty(), "run_guests needs scenarios");
        let logs = fresh_log_dir(test);
        let mut guests = Vec::new();
        let mut vnicd_args: Option<Vec<String>> = None;
        let mut vfs = 0;
        let mut timeout = 0;
        for &name in names {
            let script = scenario_path(name);
            let (opts, vargs) = split_vnicd_args(&header_options(&script));
            match &vnicd_args {
                None => vnicd_args = Some(vargs),
                Some(first) => assert_eq!(
                    first, &vargs,
                    "{name}.sh: vnicd options (after --) differ from {}.sh's",
                    names[0]
                ),
            }
            let n: u32 = option_value(&opts, "--vfs").map_or(4, |v| {
                v.parse()
                    .unwrap_or_else(|_| panic!("{name}.sh: --vfs {v} is not a number"))
            });
            vfs = vfs.max(n);
            timeout = timeout.max(timeout_of(&opts));
            guests.push((name, script, opts));
        }
        let mut args = vec!["--vfs".to_string(), vfs.to_string()];
        args.extend(vnicd_args.unwrap_or_default());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut vnicd = Vnicd::start_logged(
            &args,
            &logs.join("vnicd.out"),
            &logs.join("vnicd.log"),
            Duration::from_secs(30),
        );
        let sockets = vnicd.socket_dir();

        let mut hosts = Vec::new();
        let mut launchers: Vec<Launcher> = guests
            .iter()
            .map(|(name, script, opts)| {
                let console = logs.join(format!("{name}.log"));
                let channel = logs.join(format!("{name}.host"));
                let mut harness = harness_args(&sockets, &console);
                if with_host {
                    let log = logs.join(format!("{name}.host.log"));
                    let control = sockets.join("control.sock");
                    hosts.push(HostChannel::serve(&channel, &control, &log));
                    harness.extend(["--host-channel".as_ref(), channel.as_os_str()]);
                }
                let run_log = logs.join(format!("{name}.run.log"));
                Launcher::start(script, &harness, opts, &run_log)
            })
            .collect();

        let deadline = Instant::now() + Duration::from_secs(timeout + 60);
        let mut vnicd_problem = None;
        let mut vnicd_died: Option<Instant> = None;
        loop {
            let mut running = 0;
            for l in &mut launchers {
                if !l.poll() {
                    running += 1;
                }
            }
            if running == 0 {
                break;
            }
            if vnicd_died.is_none() {
                if let Some(st) = vnicd.exited() {
                    vnicd_problem = Some(format!("vnicd exited ({st}) while the guests ran"));
                    vnicd_died = Some(Instant::now());
                }
            }
            if stop_when_overdue(&mut launchers, deadline, vnicd_died) {
                break;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        drop(hosts);
        if vnicd_problem.is_none() {
            vnicd_problem = match vnicd.stop() {
                Some(0) => None,
                Some(c) => Some(format!("vnicd exited with status {c} on SIGTERM")),
                None => Some("vnicd did not exit on SIGTERM (killed)".to_string()),
            };
        }

        let guests = guests
            .iter()
            .zip(&launchers)
            .map(|((name, _, _), l)| {
                let outcome = Outcome {
                    status: l.status.flatten(),
                    console: read(&logs.join(format!("{name}.log"))),
                    logs: logs.clone(),
                    host: read(&logs.join(format!("{name}.host.log"))),
                };
                (name.to_string(), outcome)
            })
            .collect();
        SharedOutcome {
            guests,
            vnicd_problem,
            agent_problem: None,
            agents: Vec::new(),
            vnicd_logs: vec![logs.join("vnicd.log")],
            logs,
        }
    }

    /// target/e2e-logs/`test`, emptied: the log directory of a test that
    /// starts its guests one by one ([`GuestRun`]).
    pub fn log_dir(test: &str) -> PathBuf {
        require_setup(None);
        fresh_log_dir(test)
    }

    /// One guest a test starts by itself on a vnicd it owns, so that it can
    /// act on it while it runs (kill its QEMU, start another on the same
    /// function). The scenario's header gives the launcher's options;
    /// vnicd's (after `--`) are the test's business. QEMU writes its PID to
    /// `<logs>/<name>.qemu.pid` (`-pidfile`), so the test can signal the
    /// QEMU it started, and only that one. Dropping it stops the launcher
    /// (by PID) if it still runs, and with it its QEMU.
    pub struct GuestRun {
        launcher: Launcher,
        console: PathBuf,
        pid_file: PathBuf,
        deadline: Instant,
    }

    impl GuestRun {
        /// Starts tests/e2e/`scenario`.sh in a guest attached to the vnicd
        /// whose sockets are in `sockets`; logs `<logs>/<name>.log`
        /// (console), `.run.log` (launcher), `.qemu.log`; `extra` are more
        /// launcher options (e.g. `--env NAME=VALUE`).
        pub fn start(
            logs: &Path,
            name: &str,
            scenario: &str,
            sockets: &Path,
            extra: &[&str],
        ) -> GuestRun {
            let script = scenario_path(scenario);
            let (mut opts, _) = split_vnicd_args(&header_options(&script));
            let console = logs.join(format!("{name}.log"));
            let pid_file = logs.join(format!("{name}.qemu.pid"));
            let _ = std::fs::remove_file(&pid_file);
            opts.extend(extra.iter().map(|e| e.to_string()));
            opts.extend([
                "--qemu-arg".into(),
                "-pidfile".into(),
                "--qemu-arg".into(),
                pid_file.display().to_string(),
            ]);
            let harness = harness_args(sockets, &console);
            let run_log = logs.join(format!("{name}.run.log"));
            let deadline = Instant::now() + Duration::from_secs(timeout_of(&opts) + 60);
            GuestRun {
                launcher: Launcher::start(&script, &harness, &opts, &run_log),
                console,
                pid_file,
                deadline,
            }
        }

        /// The console so far.
        pub fn console(&self) -> String {
            read(&self.console)
        }

        /// True once the launcher has ended.
        pub fn finished(&mut self) -> bool {
            self.launcher.poll()
        }

        /// The PID of this guest's QEMU, once QEMU has written it.
        pub fn qemu_pid(&self) -> Option<i32> {
            read(&self.pid_file).trim().parse().ok()
        }

        /// Stops the launcher (and so its QEMU) now.
        pub fn stop(&mut self) {
            self.launcher.stop();
        }

        /// Waits for the launcher to end (stopping it past its own timeout
        /// plus a minute); the scenario's exit status, None if stopped.
        pub fn wait(&mut self) -> Option<i32> {
            while !self.launcher.poll() {
                if Instant::now() > self.deadline {
                    self.launcher.stop();
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            self.launcher.status.flatten()
        }
    }

    /// Hosts of their own: each guest on a vnicd of its own, started by
    /// the test with extra arguments (e.g. an uplink, a configuration
    /// file), with host agents (`vnicctl vxlan-agent`) the test starts and
    /// stops by PID, and the network namespaces the guests may ping from
    /// the host (`host netns-ping`, [`HostChannel`]).
    ///
    /// ```text
    /// let mut bed = Testbed::new("vxlan-two-hosts");
    /// let a = bed.host("vxlan-a", &["--card-id", "1", "--uplink", ...]);
    /// bed.start_agent(a, "agent-a", &["--fdb", ...]);
    /// let out = bed.run();     // boots every guest at once, waits, stops
    /// ```
    ///
    /// Logs in target/e2e-logs/`test`: `<scenario>.log` (console),
    /// `.run.log`, `.qemu.log`, `.host.log`, `.vnicd.out`, `.vnicd.log`,
    /// `<agent>.agent.log` (its decisions) and `.agent.out` (its summary).
    /// Every process it started is stopped by its handle (PID): by
    /// [`Testbed::run`], or on drop if the test panics before.
    pub struct Testbed {
        logs: PathBuf,
        hosts: Vec<BedHost>,
        agents: Vec<(String, Agent)>,
        namespaces: Vec<String>,
    }

    struct BedHost {
        name: String,
        script: PathBuf,
        /// The launcher's options from the scenario's header.
        opts: Vec<String>,
        vnicd: Vnicd,
    }

    impl Testbed {
        /// A test bed whose logs go to a fresh target/e2e-logs/`test`.
        pub fn new(test: &str) -> Testbed {
            require_setup(None);
            Testbed {
                logs: fresh_log_dir(test),
                hosts: Vec::new(),
                agents: Vec::new(),
                namespaces: Vec::new(),
            }
        }

        /// The log directory (also the guests' `@LOGDIR@`), e.g. for
        /// configuration files and captures.
        pub fn logs(&self) -> &Path {
            &self.logs
        }

        /// Starts the vnicd of a new host whose guest runs
        /// tests/e2e/`scenario`.sh: `--vfs` and the vnicd options of the
        /// scenario's header, then `extra`. Returns the host's index.
        pub fn host(&mut self, scenario: &str, extra: &[&str]) -> usize {
            let script = scenario_path(scenario);
            let (opts, mut args) = split_vnicd_args(&header_options(&script));
            let vfs = option_value(&opts, "--vfs").unwrap_or("4").to_string();
            args.splice(0..0, ["--vfs".to_string(), vfs]);
            args.extend(extra.iter().map(|a| a.to_string()));
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            let vnicd = Vnicd::start_logged(
                &args,
                &self.logs.join(format!("{scenario}.vnicd.out")),
                &self.logs.join(format!("{scenario}.vnicd.log")),
                Duration::from_secs(30),
            );
            self.hosts.push(BedHost {
                name: scenario.to_string(),
                script,
                opts,
                vnicd,
            });
            self.hosts.len() - 1
        }

        /// Host `host`'s control socket.
        pub fn control(&self, host: usize) -> PathBuf {
            self.hosts[host].vnicd.socket_dir().join("control.sock")
        }

        /// Host `host`'s vnicd PID.
        pub fn vnicd_pid(&self, host: usize) -> u32 {
            self.hosts[host].vnicd.pid()
        }

        /// Starts `vnicctl vxlan-agent ARGS...` on host `host`'s card and
        /// waits for it to be ready; returns its PID.
        pub fn start_agent(&mut self, host: usize, name: &str, args: &[&str]) -> u32 {
            let agent = Agent::start(
                &self.control(host),
                args,
                &self.logs.join(format!("{name}.agent.log")),
                &self.logs.join(format!("{name}.agent.out")),
            );
            let pid = agent.pid();
            self.agents.push((name.to_string(), agent));
            pid
        }

        /// Stops (SIGTERM) the agent with PID `pid` that this bed started;
        /// its exit status. Its outcome stays in the bed's list.
        pub fn stop_agent(&mut self, pid: u32) -> Option<i32> {
            let (_, agent) = self
                .agents
                .iter_mut()
                .find(|(_, a)| a.pid() == pid)
                .unwrap_or_else(|| panic!("no running agent with PID {pid}"));
            agent.stop()
        }

        /// Puts `NAME=VALUE` in host `host`'s guest's /etc/vnic-run.env
        /// (the launcher's `--env`).
        pub fn guest_env(&mut self, host: usize, name: &str, value: &str) {
            let h = &mut self.hosts[host];
            h.opts.push("--env".into());
            h.opts.push(format!("{name}={value}"));
        }

        /// Puts host program `program` at `dst` in host `host`'s guest,
        /// with the shared libraries it needs (the launcher's `--add-bin`),
        /// e.g. vnicctl for an agent that runs in the guest.
        pub fn guest_program(&mut self, host: usize, program: &Path, dst: &str) {
            let h = &mut self.hosts[host];
            h.opts.push("--add-bin".into());
            h.opts.push(format!("{}:{dst}", program.display()));
        }

        /// Lets the guests ask for `host netns-ping NS ...` in namespace
        /// `ns` (one the test made).
        pub fn allow_netns(&mut self, ns: &str) {
            self.namespaces.push(ns.to_string());
        }

        /// Boots every host's guest at once (each in its own QEMU process,
        /// attached to its own vnicd, with its host channel to that
        /// vnicd), waits for them, then stops the agents and the vnicds
        /// (SIGTERM). A watchdog stops (by PID) any launcher that outlives
        /// the longest `--timeout` by a minute, and every guest 15 s after
        /// a vnicd died.
        pub fn run(&mut self) -> SharedOutcome {
            assert!(!self.hosts.is_empty(), "a test bed needs hosts");
            let logs = self.logs.clone();
            let mut channels = Vec::new();
            let mut timeout = 0;
            let mut launchers: Vec<Launcher> = Vec::new();
            for h in &self.hosts {
                timeout = timeout.max(timeout_of(&h.opts));
                let console = logs.join(format!("{}.log", h.name));
                let channel = logs.join(format!("{}.host", h.name));
                channels.push(HostChannel::serve_with_namespaces(
                    &channel,
                    &h.vnicd.socket_dir().join("control.sock"),
                    &logs.join(format!("{}.host.log", h.name)),
                    &self.namespaces,
                ));
                let sockets = h.vnicd.socket_dir();
                let mut harness = harness_args(&sockets, &console);
                harness.extend(["--host-channel".as_ref(), channel.as_os_str()]);
                let run_log = logs.join(format!("{}.run.log", h.name));
                launchers.push(Launcher::start(&h.script, &harness, &h.opts, &run_log));
            }

            let deadline = Instant::now() + Duration::from_secs(timeout + 60);
            let mut problems = Vec::new();
            let mut died: Option<Instant> = None;
            let mut dead = vec![false; self.hosts.len()];
            loop {
                let running = launchers
                    .iter_mut()
                    .map(|l| !l.poll())
                    .filter(|r| *r)
                    .count();
                if running == 0 {
                    break;
                }
                for (h, dead) in self.hosts.iter_mut().zip(&mut dead) {
                    if !*dead {
                        if let Some(st) = h.vnicd.exited() {
                            problems.push(format!(
                                "{}: vnicd exited ({st}) while the guests ran",
                                h.name
                            ));
                            *dead = true;
                            died.get_or_insert_with(Instant::now);
                        }
                    }
                }
                if stop_when_overdue(&mut launchers, deadline, died) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            drop(channels);

            let mut agent_problems = Vec::new();
            for (name, a) in &mut self.agents {
                // One the test stopped itself is the test's to judge.
                if a.status.is_some() {
                    continue;
                }
                match a.stop() {
                    Some(0) => {}
                    Some(c) => agent_problems.push(format!("agent {name} exited with status {c}")),
                    None => agent_problems.push(format!("agent {name} did not exit on SIGTERM")),
                }
            }
            for (h, dead) in self.hosts.iter_mut().zip(&dead) {
                let status = h.vnicd.stop();
                if *dead {
                    continue;
                }
                match status {
                    Some(0) => {}
                    Some(c) => problems.push(format!(
                        "{}: vnicd exited with status {c} on SIGTERM",
                        h.name
                    )),
                    None => problems.push(format!(
                        "{}: vnicd did not exit on SIGTERM (killed)",
                        h.name
                    )),
                }
            }

            let guests = self
                .hosts
                .iter()
                .zip(&launchers)
                .map(|(h, l)| {
                    let outcome = Outcome {
                        status: l.status.flatten(),
                        console: read(&logs.join(format!("{}.log", h.name))),
                        logs: logs.clone(),
                        host: read(&logs.join(format!("{}.host.log", h.name))),
                    };
                    (h.name.clone(), outcome)
                })
                .collect();
            let join = |v: Vec<String>| (!v.is_empty()).then(|| v.join("; "));
            SharedOutcome {
                guests,
                vnicd_problem: join(problems),
                agent_problem: join(agent_problems),
                agents: std::mem::take(&mut self.agents),
                vnicd_logs: self
                    .hosts
                    .iter()
                    .map(|h| logs.join(format!("{}.vnicd.log", h.name)))
                    .collect(),
                logs,
            }
        }
    }

    /// How long one vnicctl run may take for a guest; the guest's `host`
    /// waits longer (60 s), so it always gets an answer.
    pub const HOST_COMMAND_TIMEOUT: Duration = Duration::from_secs(30);

    /// How long a guest's `qmp ...` may take, DEVICE_DELETED included.
    pub const HOST_QMP_TIMEOUT: Duration = Duration::from_secs(20);

    /// Longest request line; a guest that writes more without a newline
    /// has its bytes dropped (and logged) rather than held without bound.
    const HOST_MAX_LINE: usize = 64 * 1024;

    /// Output lines sent back per command; the rest is cut, with a note.
    const HOST_MAX_OUTPUT_LINES: usize = 2000;

    /// How long a reply may wait for room in the FIFO to the guest (a guest
    /// that stopped reading).
    const HOST_REPLY_TIMEOUT: Duration = Duration::from_secs(10);

    /// The host end of a guest's host channel (`qemu/run-guest.sh
    /// --host-channel BASE`, the guest's /dev/ttyS1).
    ///
    /// Line protocol: the guest writes `HOST-RUN vnicctl ARG...` (words
    /// separated by single spaces) to BASE.out; a thread here runs the real
    /// `vnicctl --control CONTROL ARG...` (stdout and stderr as one stream,
    /// bounded by [`HOST_COMMAND_TIMEOUT`]) and writes back to BASE.in one
    /// `HOST-OUT <line>` per output line, then `HOST-END <rc>` (vnicctl's
    /// exit status; 124 on timeout, 127 for a request it cannot run).
    /// `HOST-RUN netns-ping NS IP COUNT` pings from a network namespace the
    /// test made and allowed ([`HostChannel::serve_with_namespaces`]);
    /// `HOST-RUN qmp device_add FUNCTION ROOT-PORT` and `qmp device_del
    /// FUNCTION` act on the guest's own QEMU where the test allowed it
    /// ([`HostChannel::serve_with`], [`QmpAccess`]); nothing else runs. Other lines are logged and ignored. Each command, its status and
    /// output go to the log. `@LOGDIR@` in an argument stands for the
    /// directory of the log (e.g. where a capture file goes, for the test to
    /// read after the run).
    ///
    /// Dropping it stops the thread, and the vnicctl it may be running
    /// (the only process it ends, by its own handle), and removes the
    /// FIFOs it made.
    pub struct HostChannel {
        stop: Arc<AtomicBool>,
        thread: Option<JoinHandle<()>>,
        made: Vec<PathBuf>,
    }

    impl HostChannel {
        /// Makes the FIFOs BASE.in and BASE.out if missing, opens them and
        /// starts serving. Both are opened read-write and non-blocking, so
        /// nothing here waits for QEMU to open its ends, and a guest that
        /// never speaks costs a 20 ms poll.
        pub fn serve(base: &Path, control: &Path, log: &Path) -> HostChannel {
            Self::serve_with_namespaces(base, control, log, &[])
        }

        /// [`HostChannel::serve`] that also runs `netns-ping NS IP COUNT`
        /// for the network namespaces `namespaces` (ones the test made):
        /// `ip netns exec NS ping -c COUNT -i 0.2 -W 1 -w COUNT+5 IP`,
        /// COUNT 1..=50, IP an IPv4 address; its output and status come
        /// back as vnicctl's do. Any other namespace, or other words, are
        /// refused (`HOST-END 127`).
        pub fn serve_with_namespaces(
            base: &Path,
            control: &Path,
            log: &Path,
            namespaces: &[String],
        ) -> HostChannel {
            Self::serve_with(base, control, log, namespaces, None)
        }

        /// [`HostChannel::serve_with_namespaces`] that also runs `qmp
        /// device_add FUNCTION ROOT-PORT` and (if `qmp.unplug`) `qmp
        /// device_del FUNCTION` on the guest's own QEMU, when `qmp` is
        /// given ([`QmpAccess`]); without it they are refused (127).
        pub fn serve_with(
            base: &Path,
            control: &Path,
            log: &Path,
            namespaces: &[String],
            qmp: Option<QmpAccess>,
        ) -> HostChannel {
            let mut made = Vec::new();
            let from_guest = open_fifo(&fifo_path(base, "out"), &mut made);
            let to_guest = open_fifo(&fifo_path(base, "in"), &mut made);
            let mut server = HostServer {
                from_guest,
                to_guest,
                vnicctl: vnicctl_binary(),
                control: control.to_path_buf(),
                scratch: fifo_path(base, "command-output"),
                logdir: log.parent().unwrap_or(Path::new(".")).to_path_buf(),
                log: File::create(log).expect("create host channel log"),
                started: Instant::now(),
                namespaces: namespaces.to_vec(),
                qmp,
            };
            let stop = Arc::new(AtomicBool::new(false));
            let flag = stop.clone();
            let thread = std::thread::spawn(move || server.run(&flag));
            HostChannel {
                stop,
                thread: Some(thread),
                made,
            }
        }
    }

    impl Drop for HostChannel {
        fn drop(&mut self) {
            self.stop.store(true, Ordering::Relaxed);
            if let Some(t) = self.thread.take() {
                let _ = t.join();
            }
            for f in &self.made {
                let _ = std::fs::remove_file(f);
            }
        }
    }

    /// What a guest may do to its own QEMU over its host channel (`host qmp
    /// ...`, [`HostChannel::serve_with`]).
    #[derive(Clone, Debug)]
    pub struct QmpAccess {
        /// QEMU's QMP socket (the launcher's `--qmp`).
        pub socket: PathBuf,
        /// The card's socket directory: `device_add FUNCTION` attaches
        /// FUNCTION.sock from there, and nothing else.
        pub functions: PathBuf,
        /// Whether `device_del` may run: QEMU 11.1.3 aborts on it
        /// ([`hotunplug_allowed`]).
        pub unplug: bool,
    }

    /// Why a QMP exchange failed.
    #[derive(Debug)]
    pub enum QmpError {
        /// Connecting, reading or writing failed (QEMU gone: EOF).
        Io(std::io::Error),
        /// QEMU answered with an error (its `desc`).
        Refused(String),
        /// No answer or event in time, or the caller stopped waiting.
        Timeout(String),
        /// Something that is not QMP.
        Protocol(String),
    }

    impl std::fmt::Display for QmpError {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            match self {
                QmpError::Io(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    write!(f, "QEMU closed its QMP socket (has it exited?)")
                }
                QmpError::Io(e) => write!(f, "QMP socket: {e}"),
                QmpError::Refused(d) => write!(f, "QEMU refused: {d}"),
                QmpError::Timeout(w) => write!(f, "{w}"),
                QmpError::Protocol(w) => write!(f, "not QMP: {w}"),
            }
        }
    }

    /// A minimal QMP client (QEMU's JSON monitor, one JSON object a line):
    /// capabilities negotiated on connect, commands, and events kept until
    /// asked for. Every wait is bounded by a deadline and, if given, a stop
    /// flag.
    pub struct Qmp<'a> {
        stream: BufReader<UnixStream>,
        pending: Vec<u8>,
        events: Vec<serde_json::Value>,
        stop: Option<&'a AtomicBool>,
    }

    impl<'a> Qmp<'a> {
        /// Connects to `socket`, reads QEMU's greeting and leaves
        /// negotiation mode (`qmp_capabilities`).
        pub fn connect(
            socket: &Path,
            deadline: Instant,
            stop: Option<&'a AtomicBool>,
        ) -> Result<Qmp<'a>, QmpError> {
            let stream = UnixStream::connect(socket).map_err(QmpError::Io)?;
            stream
                .set_read_timeout(Some(Duration::from_millis(100)))
                .map_err(QmpError::Io)?;
            let mut q = Qmp {
                stream: BufReader::new(stream),
                pending: Vec::new(),
                events: Vec::new(),
                stop,
            };
            let greeting = q.next(deadline)?;
            if greeting.get("QMP").is_none() {
                return Err(QmpError::Protocol(format!("greeting {greeting}")));
            }
            q.execute("qmp_capabilities", serde_json::json!({}), deadline)?;
            Ok(q)
        }

        /// Runs `command` with `arguments`; its `return` value, or QEMU's
        /// error. Events that come first are kept for [`Qmp::wait_event`].
        pub fn execute(
            &mut self,
            command: &str,
            arguments: serde_json::Value,
            deadline: Instant,
        ) -> Result<serde_json::Value, QmpError> {
            let mut line = serde_json::json!({ "execute": command, "arguments": arguments })
                .to_string()
                .into_bytes();
            line.push(b'\n');
            self.stream
                .get_mut()
                .write_all(&line)
                .map_err(QmpError::Io)?;
            loop {
                let mut msg = self.next(deadline)?;
                if let Some(r) = msg.get_mut("return") {
                    return Ok(r.take());
                }
                if let Some(e) = msg.get("error") {
                    let desc = e["desc"].as_str().unwrap_or("(no description)");
                    return Err(QmpError::Refused(desc.to_string()));
                }
                if msg.get("event").is_some() {
                    self.events.push(msg);
                } else {
                    return Err(QmpError::Protocol(msg.to_string()));
                }
            }
        }

        /// Waits for event `name` whose `data` satisfies `matches` (kept
        /// ones first); its data.
        pub fn wait_event(
            &mut self,
            name: &str,
            deadline: Instant,
            matches: impl Fn(&serde_json::Value) -> bool,
        ) -> Result<serde_json::Value, QmpError> {
            let wanted = |m: &serde_json::Value| m["event"] == name && matches(&m["data"]);
            if let Some(i) = self.events.iter().position(wanted) {
                return Ok(self.events.remove(i)["data"].take());
            }
            loop {
                let mut msg = self.next(deadline).map_err(|e| match e {
                    QmpError::Timeout(_) => QmpError::Timeout(format!("no {name} event in time")),
                    e => e,
                })?;
                if wanted(&msg) {
                    return Ok(msg["data"].take());
                }
                if msg.get("event").is_some() {
                    self.events.push(msg);
                }
            }
        }

        /// The next message, by `deadline`.
        fn next(&mut self, deadline: Instant) -> Result<serde_json::Value, QmpError> {
            loop {
                if let Some(end) = self.pending.iter().position(|&b| b == b'\n') {
                    let line: Vec<u8> = self.pending.drain(..=end).collect();
                    return serde_json::from_slice(&line).map_err(|e| {
                        QmpError::Protocol(format!("{e}: {}", String::from_utf8_lossy(&line)))
                    });
                }
                if self.stop.is_some_and(|s| s.load(Ordering::Relaxed)) {
                    return Err(QmpError::Timeout("stopped: the guest is gone".into()));
                }
                if Instant::now() > deadline {
                    return Err(QmpError::Timeout("QEMU did not answer in time".into()));
                }
                match self.stream.read_until(b'\n', &mut self.pending) {
                    Ok(0) => {
                        return Err(QmpError::Io(std::io::ErrorKind::UnexpectedEof.into()));
                    }
                    Ok(_) => {}
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock
                                | std::io::ErrorKind::TimedOut
                                | std::io::ErrorKind::Interrupted
                        ) => {}
                    Err(e) => return Err(QmpError::Io(e)),
                }
                // Bounded line: a QMP answer here is short.
                if self.pending.len() > HOST_MAX_LINE {
                    return Err(QmpError::Protocol("a line over 64 KiB".into()));
                }
            }
        }
    }

    /// `base` with `.ext` appended (not replacing an extension).
    fn fifo_path(base: &Path, ext: &str) -> PathBuf {
        let mut p = base.as_os_str().to_owned();
        p.push(format!(".{ext}"));
        PathBuf::from(p)
    }

    /// Opens FIFO `path`, made first if missing (and then added to `made`).
    fn open_fifo(path: &Path, made: &mut Vec<PathBuf>) -> File {
        if !path.exists() {
            let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                .expect("FIFO path without NUL");
            // SAFETY: mkfifo(3) reads the NUL-terminated path, which `c`
            // owns and keeps alive for the call.
            let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
            assert_eq!(
                rc,
                0,
                "mkfifo {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
            made.push(path.to_path_buf());
        }
        OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(path)
            .unwrap_or_else(|e| panic!("open {}: {e}", path.display()))
    }

    /// The thread's side of a [`HostChannel`].
    struct HostServer {
        from_guest: File,
        to_guest: File,
        vnicctl: PathBuf,
        control: PathBuf,
        /// vnicctl's output goes to a file, not a pipe: nothing to drain
        /// while it runs, and stdout and stderr keep their order.
        scratch: PathBuf,
        /// What `@LOGDIR@` in an argument becomes.
        logdir: PathBuf,
        log: File,
        started: Instant,
        /// Namespaces `netns-ping` may run in.
        namespaces: Vec<String>,
        /// The guest's QEMU, for `qmp ...`, if the test allowed it.
        qmp: Option<QmpAccess>,
    }

    impl HostServer {
        fn run(&mut self, stop: &AtomicBool) {
            self.note("serving the host channel");
            let mut pending = Vec::new();
            let mut buf = [0u8; 4096];
            while !stop.load(Ordering::Relaxed) {
                match self.from_guest.read(&mut buf) {
                    Ok(n) if n > 0 => {
                        pending.extend_from_slice(&buf[..n]);
                        self.take_lines(&mut pending, stop);
                    }
                    Ok(_) => std::thread::sleep(Duration::from_millis(20)),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        std::thread::sleep(Duration::from_millis(20))
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        self.note(&format!("reading from the guest: {e}; giving up"));
                        break;
                    }
                }
            }
            if !pending.is_empty() {
                let rest = String::from_utf8_lossy(&pending).into_owned();
                self.note(&format!("unfinished line at the end: {rest:?}"));
            }
            self.note("stopped");
            let _ = std::fs::remove_file(&self.scratch);
        }

        /// Handles every complete line in `pending`, keeping a partial one
        /// for the next read.
        fn take_lines(&mut self, pending: &mut Vec<u8>, stop: &AtomicBool) {
            while let Some(end) = pending.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = pending.drain(..=end).collect();
                let line = String::from_utf8_lossy(&line[..end]);
                self.handle(line.trim_end_matches('\r'), stop);
            }
            if pending.len() > HOST_MAX_LINE {
                self.note(&format!(
                    "dropped {} bytes without a newline",
                    pending.len()
                ));
                pending.clear();
            }
        }

        fn handle(&mut self, line: &str, stop: &AtomicBool) {
            let Some(request) = line.strip_prefix("HOST-RUN ") else {
                if !line.is_empty() {
                    self.note(&format!("ignored: {line:?}"));
                }
                return;
            };
            let words: Vec<&str> = request.split(' ').filter(|w| !w.is_empty()).collect();
            let t0 = Instant::now();
            let (output, rc) = match words.split_first() {
                Some((&"vnicctl", args)) => self.run_vnicctl(args, stop),
                Some((&"netns-ping", args)) => self.netns_ping(args, stop),
                Some((&"qmp", args)) => self.qmp(args, stop),
                _ => (
                    vec![format!(
                        "host: only vnicctl, netns-ping and qmp may run, not {request:?}"
                    )],
                    127,
                ),
            };
            let mut entry = format!("{request} -> rc {rc} ({:.2} s)", t0.elapsed().as_secs_f64());
            for l in &output {
                entry += &format!("\n    | {l}");
            }
            self.note(&entry);
            self.reply(&output, rc, stop);
        }

        /// Runs vnicctl; its output lines and exit status.
        fn run_vnicctl(&mut self, args: &[&str], stop: &AtomicBool) -> (Vec<String>, i32) {
            let mut cmd = Command::new(&self.vnicctl);
            cmd.arg("--control")
                .arg(&self.control)
                .args(
                    args.iter()
                        .map(|a| a.replace("@LOGDIR@", &self.logdir.to_string_lossy())),
                )
                .env_remove("VNICCTL_CONTROL");
            self.run_bounded(cmd, "vnicctl", stop)
        }

        /// `netns-ping NS IP COUNT`, in a namespace the test allowed.
        fn netns_ping(&mut self, args: &[&str], stop: &AtomicBool) -> (Vec<String>, i32) {
            let refuse = |why: String| (vec![format!("host: netns-ping: {why}")], 127);
            let [ns, ip, count] = args else {
                return refuse("want NS IP COUNT".into());
            };
            if !self.namespaces.iter().any(|n| n == ns) {
                return refuse(format!("namespace {ns:?} is not one this test made"));
            }
            let Ok(ip) = ip.parse::<std::net::Ipv4Addr>() else {
                return refuse(format!("{ip:?} is not an IPv4 address"));
            };
            let count = match count.parse::<u32>() {
                Ok(c @ 1..=50) => c,
                _ => return refuse(format!("count {count:?} outside 1..=50")),
            };
            let mut cmd = Command::new("ip");
            cmd.args(["netns", "exec", ns, "ping", "-c"])
                .arg(count.to_string())
                .args(["-i", "0.2", "-W", "1", "-w"])
                .arg((count + 5).to_string())
                .arg(ip.to_string());
            self.run_bounded(cmd, "ping", stop)
        }

        /// `qmp device_add FUNCTION ROOT-PORT` or `qmp device_del FUNCTION`
        /// on the guest's QEMU ([`QmpAccess`]): FUNCTION is `pf` or `vfN`
        /// with a socket in the card's socket directory (the device's QOM
        /// id is FUNCTION too), ROOT-PORT one of the launcher's `rpK`.
        /// `device_add` answers when QEMU has added the device (the guest
        /// sees it some time later); `device_del` when QEMU reports
        /// DEVICE_DELETED (the guest has let the function go). Status 0,
        /// 1 if QEMU refused or went away, 124 past [`HOST_QMP_TIMEOUT`],
        /// 127 for a request refused here.
        fn qmp(&mut self, args: &[&str], stop: &AtomicBool) -> (Vec<String>, i32) {
            let refuse = |why: String| (vec![format!("host: qmp: {why}")], 127);
            let Some(access) = self.qmp.clone() else {
                return refuse("this test gives the guest no QMP access".into());
            };
            let function_ok = |f: &str| {
                f == "pf"
                    || f.strip_prefix("vf").is_some_and(|n| {
                        (1..=3).contains(&n.len()) && n.bytes().all(|b| b.is_ascii_digit())
                    })
            };
            let (command, arguments, deleted) = match args {
                ["device_add", function, bus] => {
                    if !function_ok(function) {
                        return refuse(format!("{function:?} is not a function (pf, vfN)"));
                    }
                    let root_port = bus.strip_prefix("rp").is_some_and(|n| {
                        matches!(n.parse::<u32>(), Ok(1..=16)) && !n.starts_with('0')
                    });
                    if !root_port {
                        return refuse(format!(
                            "{bus:?} is not a root port of the launcher (rp1 .. rp16)"
                        ));
                    }
                    let socket = access.functions.join(format!("{function}.sock"));
                    let is_socket = std::fs::metadata(&socket)
                        .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()));
                    if !is_socket {
                        return refuse(format!("the card has no socket {}", socket.display()));
                    }
                    let arguments = serde_json::json!({
                        "driver": "vfio-user-pci",
                        "id": function,
                        "bus": bus,
                        "socket": {"type": "unix", "path": socket},
                    });
                    ("device_add", arguments, None)
                }
                ["device_del", function] => {
                    if !function_ok(function) {
                        return refuse(format!("{function:?} is not a function (pf, vfN)"));
                    }
                    if !access.unplug {
                        return refuse(format!(
                            "device_del {function} refused: QEMU 11.1.3 aborts on device_del of a \
                             vfio-user-pci function with MSI-X (docs/guest-environment.md, \
                             \"Hotplug\"); VNIC_HOTUNPLUG=1 allows it for a QEMU with the fix"
                        ));
                    }
                    let arguments = serde_json::json!({ "id": function });
                    ("device_del", arguments, Some(function.to_string()))
                }
                _ => {
                    return refuse(
                        "want 'device_add FUNCTION ROOT-PORT' or 'device_del FUNCTION'".into(),
                    )
                }
            };
            let t0 = Instant::now();
            let deadline = t0 + HOST_QMP_TIMEOUT;
            let what = format!("{command} {}", args[1..].join(" "));
            let result = Qmp::connect(&access.socket, deadline, Some(stop)).and_then(|mut q| {
                q.execute(command, arguments, deadline)?;
                if let Some(id) = deleted {
                    q.wait_event("DEVICE_DELETED", deadline, |data| data["device"] == id)?;
                    return Ok(format!(
                        "{what}: DEVICE_DELETED after {:.2} s",
                        t0.elapsed().as_secs_f64()
                    ));
                }
                Ok(format!(
                    "{what}: done in {:.2} s",
                    t0.elapsed().as_secs_f64()
                ))
            });
            match result {
                Ok(line) => (vec![line], 0),
                Err(QmpError::Timeout(why)) => (vec![format!("host: qmp: {what}: {why}")], 124),
                Err(e) => (vec![format!("host: qmp: {what}: {e}")], 1),
            }
        }

        /// Runs `cmd` (stdout and stderr as one stream) for at most
        /// [`HOST_COMMAND_TIMEOUT`]; its output lines and exit status.
        fn run_bounded(
            &mut self,
            mut cmd: Command,
            what: &str,
            stop: &AtomicBool,
        ) -> (Vec<String>, i32) {
            let out = File::create(&self.scratch).expect("create command output file");
            let spawned = cmd
                .stdin(Stdio::null())
                .stdout(out.try_clone().expect("dup output file"))
                .stderr(out)
                .spawn();
            let mut child = match spawned {
                Ok(c) => c,
                Err(e) => return (vec![format!("host: cannot run {what}: {e}")], 127),
            };
            let deadline = Instant::now() + HOST_COMMAND_TIMEOUT;
            let (status, why) = loop {
                match child.try_wait() {
                    Ok(Some(st)) => break (Some(st), None),
                    Ok(None) if stop.load(Ordering::Relaxed) => {
                        break (None, Some("the guest is gone"))
                    }
                    Ok(None) if Instant::now() > deadline => break (None, Some("timed out")),
                    Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                    Err(e) => panic!("waiting for {what}: {e}"),
                }
            };
            if status.is_none() {
                // Our own child, not yet reaped: its PID is still ours.
                let _ = child.kill();
                let _ = child.wait();
            }
            let mut lines: Vec<String> = read(&self.scratch).lines().map(String::from).collect();
            if lines.len() > HOST_MAX_OUTPUT_LINES {
                let cut = lines.len() - HOST_MAX_OUTPUT_LINES;
                lines.truncate(HOST_MAX_OUTPUT_LINES);
                lines.push(format!("host: ... {cut} more lines cut"));
            }
            let rc = match (status, why) {
                (Some(st), _) => st.code().unwrap_or(128 + st.signal().unwrap_or(0)),
                (None, why) => {
                    lines.push(format!(
                        "host: {what} stopped: {}",
                        why.unwrap_or("unknown")
                    ));
                    124
                }
            };
            (lines, rc)
        }

        /// Writes the answer: `HOST-OUT <line>`..., `HOST-END <rc>`.
        fn reply(&mut self, output: &[String], rc: i32, stop: &AtomicBool) {
            let mut text = String::new();
            for l in output {
                // A line must not break the framing.
                text += &format!("HOST-OUT {}\n", l.replace(['\r', '\n'], " "));
            }
            text += &format!("HOST-END {rc}\n");
            let mut left = text.as_bytes();
            let deadline = Instant::now() + HOST_REPLY_TIMEOUT;
            while !left.is_empty() {
                match self.to_guest.write(left) {
                    Ok(n) => left = &left[n..],
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if stop.load(Ordering::Relaxed) || Instant::now() > deadline {
                            self.note("the guest does not read its answers; reply cut");
                            return;
                        }
                        std::thread::sleep(Duration::from_millis(20));
                    }
                    Err(e) => {
                        self.note(&format!("writing to the guest: {e}"));
                        return;
                    }
                }
            }
        }

        /// One log entry, stamped with the seconds since the channel opened.
        fn note(&mut self, what: &str) {
            let t = self.started.elapsed().as_secs_f64();
            let _ = writeln!(self.log, "[{t:7.2} s] {what}");
        }
    }
}
