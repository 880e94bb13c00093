//! `control`: the fuzzer's bytes as a control-socket client's input,
//! through [`vnic::control::socket::Session`] (line framing, the JSON
//! request parser, `subscribe`) and the card's operations
//! ([`Card::handle`]) on a real card with an in-memory uplink.
//!
//! The one thing changed on the way: a `capture-start` request's path is
//! replaced by a file in a private temporary directory, so the fuzzer
//! cannot make the card create files anywhere else. The request is parsed
//! by the same parser to find it, and re-encoded.
//!
//! Invariants: every complete non-blank line gets exactly one answer, a
//! JSON object with a boolean `ok`; a refused request leaves the card's
//! configuration (`export`) unchanged; the card still answers `list`.

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;

use vnic::card::Card;
use vnic::control::api::Request;
use vnic::control::socket::Session;
use vnic::uplink::Uplink;

use crate::protocol::small_card;
use crate::Seed;

/// Where captures go: a directory of this process's own.
fn capture_path() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    let dir = DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("vnic-fuzz-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("a capture directory");
        dir
    });
    dir.join("capture.pcap")
}

/// `line` with a capture-start's path made safe; other lines as they are.
fn confine(line: &[u8]) -> Vec<u8> {
    match serde_json::from_slice::<Request>(line) {
        Ok(Request::CaptureStart { function, .. }) => {
            let req = Request::CaptureStart {
                path: capture_path(),
                function,
            };
            serde_json::to_vec(&req).expect("requests serialise")
        }
        _ => line.to_vec(),
    }
}

fn config(card: &Card) -> Value {
    serde_json::to_value(card.export()).expect("the configuration serialises")
}

/// Feeds one line (with its newline) and checks its answer, taking it as
/// the socket would (so answers never pile up to the session's bound).
fn request(session: &mut Session, card: &mut Card, line: &[u8]) {
    let before = config(card);
    let mut bytes = confine(line);
    bytes.push(b'\n');
    session.take_input(&bytes, card);
    card.run_pending();
    card.take_events();
    card.uplink_mut().take_sent();
    let answers = session.take_output();
    if line.iter().all(u8::is_ascii_whitespace) {
        assert!(answers.is_empty(), "an answer to a blank line");
        return;
    }
    let text = answers.strip_suffix(b"\n").expect("a terminated answer");
    assert!(!text.contains(&b'\n'), "one answer per request");
    let answer: Value = serde_json::from_slice(text).expect("a JSON answer");
    let ok = answer["ok"].as_bool().expect("an ok field");
    if !ok {
        assert_eq!(config(card), before, "a refused request changed the card");
    }
}

/// The `control` target.
pub fn run(data: &[u8]) {
    let mut card = small_card();
    card.set_uplink(Uplink::memory());
    let mut session = Session::default();
    let mut lines = data.split(|&b| b == b'\n').peekable();
    while let Some(line) = lines.next() {
        if lines.peek().is_none() {
            // The last piece has no newline: it waits for more input.
            session.take_input(&confine(line), &mut card);
            assert!(session.output().is_empty(), "an answer before the newline");
            break;
        }
        request(&mut session, &mut card, line);
    }
    let mut fresh = Session::default();
    fresh.take_input(b"{\"op\":\"list\"}\n", &mut card);
    assert!(fresh.output().starts_with(b"{\"ok\":true"));
}

/// Every request docs/management.md documents, valid, one per seed; and
/// one session using most of them in a row.
pub fn seeds() -> Vec<Seed> {
    let card = small_card();
    let apply = serde_json::json!({"op": "apply", "config": card.export()}).to_string();
    let requests: Vec<(&'static str, String)> = vec![
        ("list", r#"{"op":"list"}"#.into()),
        ("show", r#"{"op":"show","function":"vf0"}"#.into()),
        ("set-num-vfs", r#"{"op":"set-num-vfs","count":1}"#.into()),
        ("set-vnics", r#"{"op":"set-vnics","function":"vf0","count":3}"#.into()),
        (
            "set-vnic",
            r#"{"op":"set-vnic","function":"vf1","vnic":1,"mac":"02:76:6e:00:aa:01","vlan":7}"#
                .into(),
        ),
        (
            "fdb-add",
            r#"{"op":"fdb-add","mac":"02:00:00:00:00:09","vlan":0,"function":"vf0","vnic":0}"#
                .into(),
        ),
        ("fdb-del", r#"{"op":"fdb-del","mac":"02:00:00:00:00:09","vlan":0}"#.into()),
        ("fdb-list", r#"{"op":"fdb-list"}"#.into()),
        (
            "set-rate",
            r#"{"op":"set-rate","function":"vf1","direction":"tx","policy":{"avg_kbps":20000,"peak_kbps":0,"burst_bytes":65536}}"#
                .into(),
        ),
        (
            "set-spoof-check",
            r#"{"op":"set-spoof-check","function":"vf0","on":false}"#.into(),
        ),
        ("set-trust", r#"{"op":"set-trust","function":"vf0","on":true}"#.into()),
        ("set-link", r#"{"op":"set-link","function":"vf1","state":"down"}"#.into()),
        ("stats", r#"{"op":"stats","function":"pf"}"#.into()),
        (
            "capture-start",
            r#"{"op":"capture-start","path":"capture.pcap","function":"uplink"}"#.into(),
        ),
        ("capture-stop", r#"{"op":"capture-stop"}"#.into()),
        ("export", r#"{"op":"export"}"#.into()),
        ("apply", apply),
        ("subscribe", r#"{"op":"subscribe"}"#.into()),
        ("quiesce", r#"{"op":"quiesce","function":"vf0"}"#.into()),
        ("resume", r#"{"op":"resume"}"#.into()),
        (
            "vct-set",
            r#"{"op":"vct-set","function":"vf1","address":"0x100000"}"#.into(),
        ),
        (
            "set-vtep",
            r#"{"op":"set-vtep","mac":"02:76:6e:ff:00:01","ip":"10.1.0.1"}"#.into(),
        ),
        ("set-attr", r#"{"op":"set-attr","function":"vf0","vni":100}"#.into()),
        ("vxlan-list", r#"{"op":"vxlan-list"}"#.into()),
        (
            "vxlan-add",
            r#"{"op":"vxlan-add","vni":100,"mac":"02:bb:00:00:00:02","remote_ip":"10.1.0.2","remote_mac":"02:aa:00:00:00:02"}"#
                .into(),
        ),
        ("vxlan-del", r#"{"op":"vxlan-del","vni":100,"mac":"02:bb:00:00:00:02"}"#.into()),
        (
            "vxlan-send",
            r#"{"op":"vxlan-send","vni":100,"frame":"02bb0000000202766e00010008004500"}"#.into(),
        ),
        (
            "vxlan-deliver",
            r#"{"op":"vxlan-deliver","vni":100,"frame":"02766e00010002bb000000020800aa"}"#
                .into(),
        ),
        (
            "uplink-send",
            r#"{"op":"uplink-send","frame":"ffffffffffff02766e0000000800"}"#.into(),
        ),
    ];
    let order = [
        "set-vtep",
        "set-attr",
        "vxlan-add",
        "vxlan-send",
        "vxlan-deliver",
        "vxlan-list",
        "set-vnics",
        "set-vnic",
        "fdb-add",
        "fdb-list",
        "set-rate",
        "quiesce",
        "resume",
        "export",
        "set-num-vfs",
        "stats",
        "vxlan-del",
        "list",
    ];
    let mut session = String::new();
    for name in order {
        let (_, line) = requests.iter().find(|(n, _)| *n == name).expect("a seed");
        session.push_str(line);
        session.push('\n');
    }
    let mut seeds: Vec<Seed> = requests
        .into_iter()
        .map(|(name, line)| (name, format!("{line}\n").into_bytes()))
        .collect();
    seeds.push(("session", session.into_bytes()));
    seeds
}
