//! vnicd's keeper (docs/restart.md, "The keeper"): with a fake worker
//! (keeper_worker.py beside this file, kept by `keeper-harness`) for
//! restarts, the descriptor store, backoff, the watchdog and successions,
//! and with the real vnicd, which now always runs under its keeper.
//!
//! Every process here is started by the test (the keeper) or by the
//! keeper it started (the workers); every wait is bounded, and a keeper
//! left running is killed by its PID on drop (its workers die with it).

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;
use vnic_tests::{vnicd_binary, wait_for, RawClient, TempDir, Vnicd};

/// How long anything the keeper does may take here.
const BOUND: Duration = Duration::from_secs(15);

/// python3, found on PATH.
fn python3() -> PathBuf {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join("python3"))
        .find(|p| p.is_file())
        .expect("python3 on PATH")
}

fn script() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("control/keeper_worker.py")
}

/// A keeper (keeper-harness) keeping the fake worker in one mode.
struct Keeper {
    child: Option<Child>,
    dir: TempDir,
}

impl Keeper {
    /// Starts the keeper for `python3 keeper_worker.py MODE` with extra
    /// environment `env`.
    fn start(mode: &str, env: &[(&str, &str)]) -> Keeper {
        let dir = TempDir::new("keeper");
        std::fs::create_dir(dir.0.join("run")).unwrap();
        let mut command = Command::new(env!("CARGO_BIN_EXE_keeper-harness"));
        command
            .arg(python3())
            .arg(script())
            .arg(mode)
            .current_dir(&dir.0)
            .env("FAKE_DIR", &dir.0)
            .env("XDG_RUNTIME_DIR", dir.0.join("run"))
            .env("RUST_LOG", "debug")
            .env_remove("RUNTIME_DIRECTORY")
            .env_remove("NOTIFY_SOCKET")
            .env_remove("VNICD_WORKER")
            .env_remove("VNICD_KEEPER")
            .env_remove("VNICD_WATCHDOG_USEC")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(File::create(dir.0.join("keeper.log")).unwrap());
        for (k, v) in env {
            command.env(k, v);
        }
        let child = command.spawn().expect("spawn keeper-harness");
        Keeper {
            child: Some(child),
            dir,
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// What the fake workers recorded so far, in order.
    fn events(&self) -> Vec<Value> {
        std::fs::read_to_string(self.dir.0.join("events"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// The events named `event`.
    fn all(&self, event: &str) -> Vec<Value> {
        self.events()
            .into_iter()
            .filter(|e| e["event"] == event)
            .collect()
    }

    /// Waits for the `n`th (from 1) event named `event` and returns it.
    fn nth(&self, event: &str, n: usize) -> Value {
        let mut found = None;
        let what = format!("event {event} #{n}\n{}", self.log());
        wait_for(&what, BOUND, || {
            found = self.all(event).into_iter().nth(n - 1);
            found.is_some()
        });
        found.unwrap()
    }

    /// The event named `event` from worker `pid`, waited for.
    fn of(&self, pid: u64, event: &str) -> Value {
        let mut found = None;
        let what = format!("event {event} of {pid}\n{}", self.log());
        wait_for(&what, BOUND, || {
            found = self.all(event).into_iter().find(|e| e["pid"] == pid);
            found.is_some()
        });
        found.unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.0.join("keeper.log")).unwrap_or_default()
    }

    /// Waits until the log contains `text`.
    fn logged(&self, text: &str) {
        wait_for(&format!("{text:?} in the keeper's log"), BOUND, || {
            self.log().contains(text)
        });
        let _ = self.log();
    }

    /// Whether the keeper still runs.
    fn alive(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| c.try_wait().ok().flatten().is_none())
    }

    /// Waits (bounded) for the keeper to exit by itself; its exit code.
    fn exit_code(&mut self) -> Option<i32> {
        let child = self.child.as_mut().expect("running");
        let deadline = Instant::now() + BOUND;
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status.code();
            }
            assert!(Instant::now() < deadline, "keeper kept running");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGTERM, then its exit code (bounded).
    fn stop(&mut self) -> Option<i32> {
        // SAFETY: kill(2) on the PID of the keeper this test spawned and
        // has not reaped.
        unsafe { libc::kill(self.pid() as i32, libc::SIGTERM) };
        self.exit_code()
    }
}

impl Drop for Keeper {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Sends `signal` to a worker of a keeper this test started, once it has
/// recorded that it runs.
fn signal_worker(pid: u64, signal: libc::c_int) {
    // SAFETY: kill(2) on a worker the test's keeper started and has not
    // reaped: the worker recorded itself and waits for signals.
    unsafe { libc::kill(pid as i32, signal) };
}

fn env<'a>(e: &'a Value, key: &str) -> Option<&'a str> {
    e["env"][key].as_str()
}

/// Whether a worker was given nothing of the keeper's own beyond its
/// stored descriptors: no notification socket, signalfd or stored memfd.
/// (What the keeper itself inherited, such as cargo's jobserver pipes or a
/// shell's stray /dev/null, it passes on, as vnicd alone would have had
/// it.)
fn nothing_leaked(start: &Value) -> bool {
    start["leaked"].as_array().is_some_and(|fds| {
        fds.iter().filter_map(Value::as_str).all(|target| {
            !(target.starts_with("socket:")
                || target.contains("signalfd")
                || target.contains("memfd"))
        })
    })
}

#[test]
fn a_killed_worker_is_restarted_with_its_descriptors_and_told_why() {
    let mut k = Keeper::start("serve", &[]);
    let first = k.nth("start", 1);
    let pid1 = first["pid"].as_u64().unwrap();
    assert_eq!(env(&first, "VNICD_RESTARTS"), Some("0"));
    assert_eq!(env(&first, "VNICD_LAST_EXIT"), None);
    assert_eq!(env(&first, "LISTEN_FDS"), None, "nothing stored yet");
    assert_eq!(env(&first, "VNICD_WORKER"), Some("1"));
    assert_eq!(env(&first, "VNICD_KEEPER"), Some("1"));
    assert_eq!(env(&first, "WATCHDOG_USEC"), Some("5000000"));
    assert_eq!(env(&first, "WATCHDOG_PID"), Some(pid1.to_string().as_str()));
    let socket = env(&first, "NOTIFY_SOCKET").unwrap().to_string();
    let run = k
        .dir
        .0
        .join("run")
        .join(format!("vnicd-keeper.{}", k.pid()));
    assert_eq!(socket, run.join("notify.1").display().to_string());
    assert_eq!(first["sigblk"], 0, "no signal blocked in a worker");
    assert!(nothing_leaked(&first), "{first}");
    k.of(pid1, "ready");

    signal_worker(pid1, libc::SIGKILL);
    let second = k.nth("start", 2);
    let pid2 = second["pid"].as_u64().unwrap();
    assert_ne!(pid1, pid2);
    assert!(k.alive(), "the same keeper");
    assert_eq!(env(&second, "LISTEN_PID"), Some(pid2.to_string().as_str()));
    assert_eq!(
        env(&second, "WATCHDOG_PID"),
        Some(pid2.to_string().as_str())
    );
    assert_eq!(env(&second, "LISTEN_FDS"), Some("1"));
    assert_eq!(env(&second, "LISTEN_FDNAMES"), Some("state"));
    assert_eq!(second["fds"]["state"], format!("written by {pid1}"));
    assert!(nothing_leaked(&second), "{second}");
    assert_eq!(env(&second, "VNICD_RESTARTS"), Some("1"));
    assert_eq!(
        env(&second, "VNICD_LAST_EXIT"),
        Some("killed by signal 9 (SIGKILL)")
    );
    assert_ne!(env(&second, "NOTIFY_SOCKET"), Some(socket.as_str()));
    k.logged(&format!(
        "card worker {pid1} killed by signal 9 (SIGKILL) after"
    ));
    k.logged("restarting it (restart 1)");
    k.of(pid2, "ready");

    // A second death: the store is what the second worker left.
    signal_worker(pid2, libc::SIGKILL);
    let third = k.nth("start", 3);
    assert_eq!(third["fds"]["state"], format!("written by {pid2}"));
    assert_eq!(env(&third, "VNICD_RESTARTS"), Some("2"));
    k.of(third["pid"].as_u64().unwrap(), "ready");

    assert_eq!(k.stop(), Some(0));
    assert_eq!(k.all("term").len(), 1, "SIGTERM forwarded to the worker");
    assert!(!run.exists(), "runtime directory removed");
}

#[test]
fn quick_crashes_back_off() {
    let mut k = Keeper::start("crash", &[]);
    let starts: Vec<f64> = (1..=5)
        .map(|n| k.nth("start", n)["t"].as_f64().unwrap())
        .collect();
    // Crashes 1 and 2 restart at once, 3 after 250 ms, 4 after 500 ms.
    assert!(starts[3] - starts[2] >= 0.25, "{starts:?}");
    assert!(starts[4] - starts[3] >= 0.5, "{starts:?}");
    k.logged("restarting it (restart 3) in 250 ms: it crashed 3 times within 10.0 s of starting");
    k.logged("restarting it (restart 4) in 500 ms: it crashed 4 times within 10.0 s of starting");
    assert!(
        k.log().contains("exited with status 3 after"),
        "{}",
        k.log()
    );
    assert!(k.alive());
    // A crash may race the stop; either way the keeper ends.
    let code = k.stop();
    assert!(matches!(code, Some(0) | Some(1)), "{code:?}");
}

#[test]
fn a_first_start_that_fails_before_ready_ends_the_keeper_with_its_status() {
    let mut k = Keeper::start("exit2", &[]);
    assert_eq!(k.exit_code(), Some(2));
    assert_eq!(k.all("start").len(), 1, "not restarted");
    assert!(!k
        .dir
        .0
        .join("run")
        .join(format!("vnicd-keeper.{}", k.pid()))
        .exists());
}

#[test]
fn a_worker_without_watchdog_pings_is_aborted_and_restarted() {
    let mut k = Keeper::start("hang", &[("VNICD_WATCHDOG_USEC", "300000")]);
    let first = k.nth("start", 1);
    assert_eq!(env(&first, "WATCHDOG_USEC"), Some("300000"));
    let pid1 = first["pid"].as_u64().unwrap();
    k.of(pid1, "ready");
    let second = k.nth("start", 2);
    let why = env(&second, "VNICD_LAST_EXIT").unwrap_or_default();
    assert!(
        why.starts_with("killed by signal 6 (SIGABRT)") && why.contains("no WATCHDOG=1 for 300 ms"),
        "{why}"
    );
    k.logged(&format!(
        "card worker {pid1} is hung: no WATCHDOG=1 for 300 ms"
    ));
    assert_eq!(k.stop(), Some(0));
}

#[test]
fn a_successor_that_becomes_ready_takes_over() {
    let mut k = Keeper::start("succeed", &[("FAKE_SUCCESSOR", "self")]);
    let first = k.nth("start", 1);
    let pid1 = first["pid"].as_u64().unwrap();
    k.of(pid1, "asked");
    let second = k.nth("start", 2);
    let pid2 = second["pid"].as_u64().unwrap();
    assert_eq!(env(&second, "VNICD_SUCCESSION"), Some("1"));
    assert_eq!(env(&second, "VNICD_RESTARTS"), Some("0"));
    assert_eq!(env(&second, "VNICD_LAST_EXIT"), None);
    assert_eq!(second["fds"]["state"], format!("written by {pid1}"));
    k.of(pid2, "ready");
    k.of(pid1, "usr1");
    k.logged(&format!("card worker {pid2} ("));
    k.logged(&format!(") took over from {pid1} in "));
    assert!(k.all("usr2").is_empty());
    assert!(k.alive());
    // The successor is the worker now: SIGTERM reaches it.
    assert_eq!(k.stop(), Some(0));
    assert_eq!(k.of(pid2, "term")["pid"], pid2);
}

#[test]
fn a_failing_successor_leaves_the_old_worker_serving() {
    for (successor, why) in [
        ("/bin/false", "failed (exited with status 1)"),
        ("/nonexistent/vnicd", "failed (cannot start the card worker"),
        ("bin/relative", "refused: the path is not absolute"),
    ] {
        let mut k = Keeper::start("succeed", &[("FAKE_SUCCESSOR", successor)]);
        let pid1 = k.nth("start", 1)["pid"].as_u64().unwrap();
        k.of(pid1, "usr2");
        k.logged(why);
        assert!(k.all("usr1").is_empty(), "{successor}");
        assert!(k.alive());
        // The store is the old worker's, intact (a failed exec reported
        // through std's pipe must not land in a stored file): its
        // restart gets it.
        signal_worker(pid1, libc::SIGKILL);
        let next = k.nth("start", 2);
        assert_eq!(
            next["fds"]["state"],
            format!("written by {pid1}"),
            "{successor}"
        );
        let pid2 = next["pid"].as_u64().unwrap();
        k.of(pid2, "usr2");
        // The worker serves: it stops on SIGTERM.
        assert_eq!(k.stop(), Some(0), "{successor}");
        k.of(pid2, "term");
    }
}

/// The PIDs of `pid`'s children.
fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

#[test]
fn vnicd_serves_from_a_worker_under_its_keeper() {
    let mut vnicd = Vnicd::start(&["--vfs", "1"]);
    let keeper = vnicd.pid();
    let workers = children(keeper);
    assert_eq!(workers.len(), 1, "one worker: {workers:?}");
    let worker = workers[0];
    let environ = std::fs::read(format!("/proc/{worker}/environ")).unwrap();
    let environ = String::from_utf8_lossy(&environ);
    assert!(
        environ.split('\0').any(|v| v == "VNICD_WORKER=1"),
        "{environ}"
    );
    // The lock names the process the user started.
    let lock = std::fs::read_to_string(vnicd.socket_dir().join("vnicd.lock")).unwrap();
    assert_eq!(lock.trim(), keeper.to_string());
    RawClient::negotiated(&vnicd.socket("pf"));
    let sock = vnicd.socket("vf0");
    assert_eq!(vnicd.stop(), Some(0));
    assert!(!sock.exists(), "sockets removed");
    assert!(
        !Path::new(&format!("/proc/{worker}")).exists(),
        "the worker ended with its keeper"
    );
}

#[test]
fn vnicd_answers_help_version_and_bad_options_without_a_worker() {
    let run = |args: &[&str]| {
        Command::new(vnicd_binary())
            .args(args)
            .env_remove("NOTIFY_SOCKET")
            .env_remove("VNICD_WORKER")
            .output()
            .expect("run vnicd")
    };
    let out = run(&["--version"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).starts_with("vnic"));
    let out = run(&["--help"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&out.stdout).contains("--socket-dir"));
    let out = run(&["--socket-dir", "/nonexistent", "--bogus"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("--bogus") && !err.contains("card worker"),
        "{err}"
    );
}

#[test]
fn vnicd_with_a_bad_configuration_exits_2_through_its_keeper() {
    let dir = TempDir::new("kcfg");
    let config = dir.0.join("bad.json");
    std::fs::write(&config, "{not json").unwrap();
    let out = Command::new(vnicd_binary())
        .arg("--socket-dir")
        .arg(dir.0.join("sock"))
        .arg("--config")
        .arg(&config)
        .env_remove("NOTIFY_SOCKET")
        .env_remove("VNICD_WORKER")
        .stdin(Stdio::null())
        .output()
        .expect("run vnicd");
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("configuration"), "{err}");
}
