//! The real vnicctl binary against a fake control socket: a thread that
//! checks the request line vnicctl sends and answers with canned lines, so
//! the client's output and exit status are tested apart from vnicd.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};
use vnic_tests::{vnicctl_binary, TempDir};

/// A control socket that serves one connection: it reads one request
/// line, writes `answer` (one line each), and closes.
struct FakeCard {
    _dir: TempDir,
    socket: PathBuf,
    thread: Option<JoinHandle<Option<String>>>,
}

impl FakeCard {
    fn serve(answer: &[&str]) -> FakeCard {
        let dir = TempDir::new("ctl");
        let socket = dir.0.join("control.sock");
        let listener = UnixListener::bind(&socket).expect("bind the fake control socket");
        let answer: Vec<String> = answer.iter().map(|l| format!("{l}\n")).collect();
        let thread = std::thread::spawn(move || serve_one(listener, &answer));
        FakeCard {
            _dir: dir,
            socket,
            thread: Some(thread),
        }
    }

    /// A control socket that turns its one client away as a full vnicd
    /// does: one error answer, then it closes without reading.
    fn turn_away(why: &str) -> FakeCard {
        let dir = TempDir::new("ctl");
        let socket = dir.0.join("control.sock");
        let listener = UnixListener::bind(&socket).expect("bind the fake control socket");
        let line = format!("{}\n", json!({"ok": false, "error": why}));
        let thread = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().ok()?;
            let _ = stream.write_all(line.as_bytes());
            None
        });
        FakeCard {
            _dir: dir,
            socket,
            thread: Some(thread),
        }
    }

    /// The request line vnicctl sent, as JSON (None if it never sent one).
    fn request(&mut self) -> Option<Value> {
        let line = self.thread.take()?.join().expect("fake card thread")?;
        Some(serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line:?}")))
    }
}

/// Accepts one client (waiting at most 20 s, so a test whose vnicctl
/// never connects still ends), reads its request line, answers.
fn serve_one(listener: UnixListener, answer: &[String]) -> Option<String> {
    listener
        .set_nonblocking(true)
        .expect("nonblocking listener");
    let deadline = Instant::now() + Duration::from_secs(20);
    let stream = loop {
        match listener.accept() {
            Ok((s, _)) => break s,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            Err(_) => return None,
        }
    };
    stream.set_nonblocking(false).expect("blocking stream");
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("read timeout");
    let mut reader = BufReader::new(stream.try_clone().expect("clone stream"));
    let mut line = String::new();
    reader.read_line(&mut line).ok()?;
    let mut writer = stream;
    for a in answer {
        // vnicctl may have gone already (a test of a broken answer).
        if writer.write_all(a.as_bytes()).is_err() {
            break;
        }
    }
    Some(line.trim_end().to_string())
}

/// What a vnicctl run did.
#[derive(Debug)]
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

/// Runs vnicctl with `args`, `VNICCTL_CONTROL` set to `env` or unset.
fn vnicctl_env(env: Option<&Path>, args: &[&str]) -> Run {
    let mut cmd = Command::new(vnicctl_binary());
    cmd.args(args)
        .env_remove("VNICCTL_CONTROL")
        .stdin(Stdio::null());
    if let Some(p) = env {
        cmd.env("VNICCTL_CONTROL", p);
    }
    let out = cmd.output().expect("run vnicctl");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Runs `vnicctl --control SOCKET args...`.
fn vnicctl(socket: &Path, args: &[&str]) -> Run {
    let mut all = vec!["--control", socket.to_str().expect("UTF-8 path")];
    all.extend_from_slice(args);
    vnicctl_env(None, &all)
}

fn ok(result: &Value) -> String {
    json!({"ok": true, "result": result}).to_string()
}

/// What vnicd answers to `list`: the PF, and VF0 with two vNICs.
fn two_functions() -> Value {
    let vnic = |q: u16, mac: &str| {
        json!({"vnic": q, "mac": mac, "vlan": 0, "joined": [], "tx_running": true,
               "rx_running": true})
    };
    let function = |name: &str, vnics: Vec<Value>, tx_rate: Value| {
        json!({"name": name, "enabled": true, "attached": name == "vf0", "max_vnics": 8,
               "vnics": vnics, "link": "auto", "link_up": true, "spoof_check": true,
               "trust": false, "tx_rate": tx_rate, "rx_rate": null, "vct": 0})
    };
    json!([
        function("pf", vec![vnic(0, "02:76:6e:00:00:00")], Value::Null),
        function(
            "vf0",
            vec![vnic(0, "02:76:6e:00:01:00"), vnic(1, "02:76:6e:00:01:01")],
            json!({"avg_kbps": 20000, "peak_kbps": 40000, "burst_bytes": 65536})
        ),
    ])
}

#[test]
fn list_prints_tables_and_with_json_the_result() {
    let mut card = FakeCard::serve(&[&ok(&two_functions())]);
    let run = vnicctl(&card.socket, &["list"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(card.request(), Some(json!({"op": "list"})));
    assert_eq!(run.stderr, "");
    let vf0 = run
        .stdout
        .lines()
        .find(|l| l.starts_with("vf0 "))
        .expect("vf0 line");
    for field in [
        "yes",
        "2/8",
        "auto (up)",
        "on",
        "off",
        "20M peak 40M burst 64K",
    ] {
        assert!(vf0.contains(field), "{field:?} missing in {vf0:?}");
    }
    assert!(run.stdout.contains("02:76:6e:00:01:01"), "{}", run.stdout);

    let mut card = FakeCard::serve(&[&ok(&two_functions())]);
    let run = vnicctl(&card.socket, &["--json", "list"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(card.request(), Some(json!({"op": "list"})));
    let printed: Value = serde_json::from_str(&run.stdout).expect("--json prints JSON");
    assert_eq!(printed, two_functions());
    assert!(
        run.stdout.lines().count() > 10,
        "not pretty: {}",
        run.stdout
    );
}

#[test]
fn a_refused_request_exits_1_with_the_cards_message_on_stderr() {
    let refusal = r#"{"ok":false,"error":"vf0: 99 vNICs outside 1..=8"}"#;
    let mut card = FakeCard::serve(&[refusal]);
    let run = vnicctl(&card.socket, &["vnics", "vf0", "99"]);
    assert_eq!(
        card.request(),
        Some(json!({"op": "set-vnics", "function": "vf0", "count": 99}))
    );
    assert_eq!(run.code, Some(1), "{run:?}");
    assert_eq!(run.stderr, "vnicctl: vf0: 99 vNICs outside 1..=8\n");
    assert_eq!(run.stdout, "");
}

#[test]
fn a_connection_turned_away_exits_1_with_the_cards_reason_not_a_socket_error() {
    let why = "control socket busy: all 32 clients are subscribers or have requests in \
               progress; try again later";
    // The card may close before or after vnicctl's request arrives (a
    // write error, or a reset after the answer): the reason shows either
    // way.
    for _ in 0..5 {
        let mut card = FakeCard::turn_away(why);
        let run = vnicctl(&card.socket, &["list"]);
        assert_eq!(card.request(), None);
        assert_eq!(run.code, Some(1), "{run:?}");
        assert_eq!(run.stderr, format!("vnicctl: {why}\n"));
        assert_eq!(run.stdout, "");
    }
}

#[test]
fn an_unreachable_socket_or_a_broken_answer_exits_3() {
    let dir = TempDir::new("ctl");
    let run = vnicctl(&dir.0.join("control.sock"), &["list"]);
    assert_eq!(run.code, Some(3), "{run:?}");
    assert!(
        run.stderr.starts_with("vnicctl: cannot connect to "),
        "{run:?}"
    );

    for answer in [&[][..], &["not json"], &[r#"{"ok":true,"result":{"x":1}}"#]] {
        let mut card = FakeCard::serve(answer);
        let run = vnicctl(&card.socket, &["list"]);
        assert_eq!(card.request(), Some(json!({"op": "list"})));
        assert_eq!(run.code, Some(3), "answer {answer:?}: {run:?}");
        assert!(run.stderr.starts_with("vnicctl: "), "{run:?}");
    }
}

#[test]
fn events_prints_each_event_until_vnicd_closes() {
    let answer = [
        r#"{"ok":true,"result":null}"#,
        r#"{"event":"client-connected","function":"vf0"}"#,
        r#"{"event":"vnics-changed","function":"vf0","count":3}"#,
    ];
    let mut card = FakeCard::serve(&answer);
    let run = vnicctl(&card.socket, &["events"]);
    assert_eq!(card.request(), Some(json!({"op": "subscribe"})));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        run.stdout,
        "client-connected vf0\nvnics-changed vf0 count=3\n"
    );

    let mut card = FakeCard::serve(&answer);
    let run = vnicctl(&card.socket, &["--json", "events"]);
    assert_eq!(card.request(), Some(json!({"op": "subscribe"})));
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, format!("{}\n{}\n", answer[1], answer[2]));
}

#[test]
fn the_socket_may_come_from_the_environment() {
    let mut card = FakeCard::serve(&[r#"{"ok":true,"result":null}"#]);
    let run = vnicctl_env(Some(&card.socket), &["link", "vf1", "down"]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(
        card.request(),
        Some(json!({"op": "set-link", "function": "vf1", "state": "down"}))
    );

    let run = vnicctl_env(None, &["list"]);
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("VNICCTL_CONTROL"), "{run:?}");
}

#[test]
fn apply_sends_the_file_and_export_writes_one() {
    let config = json!({"num_vfs": 2, "functions": [{"name": "vf1", "trust": true}]});
    let files = TempDir::new("ctlf");
    let file = files.0.join("card.json");
    let mut card = FakeCard::serve(&[r#"{"ok":true,"result":null}"#]);
    std::fs::write(&file, config.to_string()).unwrap();
    let run = vnicctl(&card.socket, &["apply", file.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(
        card.request(),
        Some(json!({"op": "apply", "config": config}))
    );

    let mut card = FakeCard::serve(&[&ok(&config)]);
    let out = files.0.join("export.json");
    let run = vnicctl(&card.socket, &["export", out.to_str().unwrap()]);
    assert_eq!(run.code, Some(0), "{run:?}");
    assert_eq!(run.stdout, "");
    assert_eq!(card.request(), Some(json!({"op": "export"})));
    let written = std::fs::read_to_string(&out).unwrap();
    assert_eq!(serde_json::from_str::<Value>(&written).unwrap(), config);

    // A bad file is refused before connecting: 2, not 3 for the missing
    // socket.
    std::fs::write(&file, "{\n  \"num_vfs\": 2,\n  \"vfs\": 3\n}\n").unwrap();
    let run = vnicctl(
        &files.0.join("none.sock"),
        &["apply", file.to_str().unwrap()],
    );
    assert_eq!(run.code, Some(2), "{run:?}");
    assert!(run.stderr.contains("line 3, column "), "{run:?}");
    assert!(run.stderr.contains("unknown field `vfs`"), "{run:?}");
}
