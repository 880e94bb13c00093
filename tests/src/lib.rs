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

/// Root of the workspace.
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// Path of the vnicd binary, built once per test process if needed.
pub fn vnicd_binary() -> PathBuf {
    static BUILD: Once = Once::new();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join("target"));
    BUILD.call_once(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "vnic-device", "--bin", "vnicd"])
            .current_dir(workspace())
            .status()
            .expect("run cargo build");
        assert!(status.success(), "building vnicd failed");
    });
    target.join("debug").join("vnicd")
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
        let dir = TempDir::new("d");
        let sockets = dir.0.join("sock");
        let log = dir.0.join("vnicd.log");
        let mut child = Command::new(vnicd_binary())
            .arg("--socket-dir")
            .arg(&sockets)
            .args(args)
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(File::create(&log).expect("create log"))
            .spawn()
            .expect("spawn vnicd");
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

    pub fn socket(&self, function: &str) -> PathBuf {
        self.dir.0.join("sock").join(format!("{function}.sock"))
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
        let mut child = self.child.take()?;
        // SAFETY: kill(2) on the PID of a child we spawned and still own.
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
}

impl Drop for Vnicd {
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

/// A DMA_MAP payload (argsz 32).
pub fn dma_map_body(flags: u32, offset: u64, address: u64, size: u64) -> Vec<u8> {
    let mut b = 32u32.to_le_bytes().to_vec();
    b.extend_from_slice(&flags.to_le_bytes());
    b.extend_from_slice(&offset.to_le_bytes());
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
/// the script alone says how it runs.
pub mod e2e {
    use super::*;

    pub struct Outcome {
        pub status: Option<i32>,
        pub console: String,
        /// Directory with the console, QEMU and vnicd logs.
        pub logs: PathBuf,
    }

    impl Outcome {
        /// Panics, keeping the logs and naming them, unless the scenario
        /// exited 0; on success the logs are removed.
        pub fn assert_success(&self) {
            if self.status == Some(0) {
                let _ = std::fs::remove_dir_all(&self.logs);
                return;
            }
            let lines: Vec<&str> = self.console.lines().collect();
            let tail = lines[lines.len().saturating_sub(40)..].join("\n");
            panic!(
                "guest scenario failed (status {:?}); logs kept in {}\n--- console tail ---\n{tail}",
                self.status,
                self.logs.display(),
            );
        }

        /// Console lines that contain any of `needles`.
        pub fn lines_with<'a>(&'a self, needles: &'a [&str]) -> impl Iterator<Item = &'a str> {
            self.console
                .lines()
                .filter(move |l| needles.iter().any(|n| l.contains(n)))
        }
    }

    /// Checks that qemu/setup.sh has run, with a clear message if not.
    fn require_setup() {
        let image = workspace().join("qemu/.cache/initramfs.cpio.gz");
        assert!(
            image.exists(),
            "guest environment missing: run qemu/setup.sh (tests/run.sh does it)"
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

    /// The `--timeout` among launcher options (the launcher's default is 300).
    fn timeout_of(opts: &[String]) -> u64 {
        let pos = opts.iter().position(|o| o == "--timeout");
        pos.and_then(|i| opts.get(i + 1))
            .and_then(|t| t.parse().ok())
            .unwrap_or(300)
    }

    /// Runs tests/e2e/`name`.sh in a guest. The launcher bounds the run and
    /// ends only the processes it started; a watchdog here ends the
    /// launcher itself (by PID) if it outlives its own timeout.
    pub fn run_scenario(name: &str) -> Outcome {
        require_setup();
        let script = workspace().join(format!("tests/e2e/{name}.sh"));
        let opts = header_options(&script);
        let logs = workspace().join("target/e2e-logs").join(name);
        let _ = std::fs::remove_dir_all(&logs);
        std::fs::create_dir_all(&logs).expect("log dir");
        let run_log = File::create(logs.join("run.log")).expect("run log");
        let mut child = Command::new(workspace().join("qemu/run-guest.sh"))
            .current_dir(workspace())
            .args(&opts)
            .arg("--scenario")
            .arg(&script)
            .arg("--quiet")
            .arg("--log")
            .arg(logs.join("console.log"))
            .arg("--vnicd")
            .arg(vnicd_binary())
            .stdout(run_log.try_clone().expect("dup log"))
            .stderr(run_log)
            .spawn()
            .expect("start qemu/run-guest.sh");
        let deadline = Instant::now() + Duration::from_secs(timeout_of(&opts) + 60);
        let status = loop {
            if let Some(st) = child.try_wait().expect("wait for launcher") {
                break st.code();
            }
            if Instant::now() > deadline {
                // SAFETY: kill(2) on the PID of the launcher we spawned; its
                // TERM trap stops the processes it started.
                unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
                let _ = child.wait();
                break None;
            }
            std::thread::sleep(Duration::from_millis(200));
        };
        Outcome {
            status,
            console: read(&logs.join("console.log")),
            logs,
        }
    }
}
