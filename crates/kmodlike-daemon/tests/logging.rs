//! Logging and audit: native journal records under systemd (a datagram socket stands in for
//! journald), `<N>` priority lines otherwise, one audit line per state-changing request with the
//! caller and the outcome, and Monitor events for quarantines, taints and their clears.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;

const WAIT: Duration = Duration::from_secs(20);

/// One native journal record: single-line `NAME=value` fields and length-prefixed binary ones.
fn parse_record(mut data: &[u8]) -> HashMap<String, String> {
    let mut fields = HashMap::new();
    while !data.is_empty() {
        let nl = data.iter().position(|&b| b == b'\n').expect("a field ends with a newline");
        let line = &data[..nl];
        if let Some(eq) = line.iter().position(|&b| b == b'=') {
            let name = String::from_utf8_lossy(&line[..eq]).into_owned();
            fields.insert(name, String::from_utf8_lossy(&line[eq + 1..]).into_owned());
            data = &data[nl + 1..];
        } else {
            let name = String::from_utf8_lossy(line).into_owned();
            let rest = &data[nl + 1..];
            let len = u64::from_le_bytes(rest[..8].try_into().unwrap()) as usize;
            let value = String::from_utf8_lossy(&rest[8..8 + len]).into_owned();
            assert_eq!(rest[8 + len], b'\n', "a binary field ends with a newline");
            fields.insert(name, value);
            data = &rest[8 + len + 1..];
        }
    }
    fields
}

struct Journal {
    socket: UnixDatagram,
    seen: Vec<HashMap<String, String>>,
}

impl Journal {
    /// Wait for a record for which `pred` holds (fails the test after WAIT).
    fn wait_for(
        &mut self,
        what: &str,
        pred: impl Fn(&HashMap<String, String>) -> bool,
    ) -> HashMap<String, String> {
        if let Some(r) = self.seen.iter().find(|r| pred(r)) {
            return r.clone();
        }
        let until = Instant::now() + WAIT;
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let left = until.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no journal record {what} within {WAIT:?}: {:#?}", self.seen);
            self.socket.set_read_timeout(Some(left)).unwrap();
            let n = match self.socket.recv(&mut buf) {
                Ok(n) => n,
                Err(e) => panic!("no journal record {what}: {e}; seen: {:#?}", self.seen),
            };
            let r = parse_record(&buf[..n]);
            self.seen.push(r.clone());
            if pred(&r) {
                return r;
            }
        }
    }
}

struct Killed(Child);
impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn ctl(socket: &std::path::Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("--socket").arg(socket).args(args);
    run_with_deadline(&mut cmd, CTL_DEADLINE)
}

#[test]
fn under_systemd_each_event_is_one_native_journal_record_with_its_fields() {
    let segv = crash_module("crash_journal", libc::SIGSEGV, &[]);
    let dir = Daemon::prepare(&[(&segv, "crash_journal.so")]);
    let journal_path = dir.path().join("journal.sock");
    let mut journal =
        Journal { socket: UnixDatagram::bind(&journal_path).unwrap(), seen: Vec::new() };
    let socket = dir.path().join("kmodlike.sock");

    // stderr is a pipe whose device and inode JOURNAL_STREAM names, as systemd does.
    let (read_end, write_end) = rustix::pipe::pipe().unwrap();
    let st = rustix::fs::fstat(&write_end).unwrap();
    let stream = format!("{}:{}", st.st_dev, st.st_ino);
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("--socket").arg(&socket).arg("--module-path").arg(dir.path().join("modules"));
    cmd.arg("--state-dir").arg(dir.path().join("state"));
    if !probe_available() {
        cmd.arg("--no-probe");
    }
    cmd.env("JOURNAL_STREAM", &stream)
        .env("KMODLIKE_JOURNAL_SOCKET", &journal_path)
        .env("RUST_LOG", "info")
        .env_remove("NOTIFY_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("KMODLIKE_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write_end));
    let _daemon = Killed(cmd.spawn().unwrap());
    // Whatever still reaches stderr (nothing should) is collected for the failure message.
    let (tx, stderr_lines) = mpsc::channel();
    std::thread::spawn(move || {
        for l in BufReader::new(std::fs::File::from(read_end)).lines().map_while(Result::ok) {
            let _ = tx.send(l);
        }
    });

    let ready = journal.wait_for("ready", |r| r.get("MESSAGE").is_some_and(|m| m == "ready"));
    assert_eq!(ready["PRIORITY"], "6");
    assert_eq!(ready["SYSLOG_IDENTIFIER"], "kmodlike");
    assert_eq!(ready["MESSAGE_ID"], kmodlike_daemon::journal::message_id::READY);
    assert_eq!(ready["SOCKET"], socket.display().to_string());

    ctl(&socket, &["load", "crash_journal"]).ok();
    let audit =
        journal.wait_for("for the load request", |r| r.get("REQUEST").is_some_and(|m| m == "Load"));
    assert_eq!(audit["MESSAGE_ID"], kmodlike_daemon::journal::message_id::REQUEST);
    assert_eq!(audit["OUTCOME"], "ok");
    assert_eq!(audit["SUBJECT"], "crash_journal");
    assert_eq!(audit["COMM"], "kmodctl");
    assert_eq!(audit["UID"], rustix::process::getuid().as_raw().to_string());
    assert!(audit["MESSAGE"].contains("by uid "), "{audit:?}");

    assert_eq!(ctl(&socket, &["call", "crash_journal", "crash"]).code(), 1);
    let crash = journal.wait_for("for the crash", |r| {
        r.get("MESSAGE_ID").is_some_and(|m| m == kmodlike_daemon::journal::message_id::CRASHED)
    });
    assert_eq!(crash["PRIORITY"], "3");
    assert_eq!(crash["MODULE"], "crash_journal");
    assert_eq!(crash["SIGNAL"], "SIGSEGV");
    // One record holds the whole report: the summary and the report's own lines.
    let message = &crash["MESSAGE"];
    assert!(message.starts_with("module crash_journal crashed with SIGSEGV"), "{message}");
    assert!(message.contains("\nmodule crash_journal crashed: SIGSEGV (SEGV_MAPERR"), "{message}");
    assert!(message.lines().count() > 3, "{message}");
    let crash_records = journal
        .seen
        .iter()
        .filter(|r| r.get("MODULE").is_some_and(|m| m == "crash_journal") && r["PRIORITY"] == "3")
        .count();
    assert_eq!(crash_records, 1, "{:#?}", journal.seen);

    let failed = ctl(&socket, &["unload", "nosuch"]);
    assert_eq!(failed.code(), 1);
    let refused = journal
        .wait_for("for the refused unload", |r| r.get("REQUEST").is_some_and(|m| m == "Unload"));
    assert_eq!(refused["OUTCOME"], "error");
    assert_eq!(refused["PRIORITY"], "4");
    assert_eq!(refused["ERROR"], "io.kmodlike.Loader.ModuleNotLoaded");
    assert!(refused["MESSAGE"].contains("module nosuch is not loaded"), "{refused:?}");

    let leaked: Vec<String> = stderr_lines.try_iter().collect();
    assert!(leaked.is_empty(), "records went to stderr instead of the journal: {leaked:?}");
}

#[test]
fn without_the_journal_lines_carry_priorities_and_requests_name_the_caller() {
    let base = test_module("dep_base");
    let top = test_module("dep_top");
    let mut d = Daemon::start(&[(&base, "dep_base.so"), (&top, "dep_top.so")], &[]);
    assert!(d.log().contains("<6>ready socket="), "{}", d.log());

    d.ctl(&["load", "dep_top"]).ok();
    d.wait_log("<6>request Load dep_top by uid ", WAIT);
    let line = d.log().lines().find(|l| l.contains("request Load dep_top")).unwrap().to_owned();
    assert!(line.contains("(kmodctl): done") && line.contains("outcome=ok"), "{line}");

    // A refused unload and a failed load each leave a warning naming the reason.
    assert_eq!(d.ctl(&["unload", "dep_base"]).code(), 1);
    d.wait_log("<4>request Unload dep_base by uid ", WAIT);
    assert_eq!(d.ctl(&["load", "misc/nosuch"]).code(), 1);
    d.wait_log("<4>request Load misc/nosuch by uid ", WAIT);
    let line = d.log().lines().find(|l| l.contains("request Load misc/nosuch")).unwrap().to_owned();
    assert!(line.contains("refused: module misc/nosuch not found"), "{line}");
    assert!(line.contains("error=io.kmodlike.Loader.ModuleNotFound"), "{line}");
}

/// `kmodctl monitor --json` lines as they come.
fn monitor(d: &Daemon) -> (Killed, mpsc::Receiver<serde_json::Value>) {
    let mut child = Command::new(kmodctl_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "monitor"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(serde_json::from_str::<serde_json::Value>(&line).unwrap());
        }
    });
    let started = rx.recv_timeout(WAIT).expect("the started event");
    assert_eq!(started["event"]["kind"], "started");
    (Killed(child), rx)
}

fn next_kind(rx: &mpsc::Receiver<serde_json::Value>, kind: &str) -> serde_json::Value {
    loop {
        let v = rx.recv_timeout(WAIT).unwrap_or_else(|_| panic!("no {kind} event"));
        if v["event"]["kind"] == kind {
            return v["event"].clone();
        }
    }
}

#[test]
fn quarantine_taint_and_their_clears_are_monitor_events_and_log_lines() {
    let segv = crash_module("taint_q", libc::SIGSEGV, &[]);
    let mut d = Daemon::start(&[(&segv, "taint_q.so")], &["--crash-loop-max", "1"]);
    let (_mon, events) = monitor(&d);

    d.ctl(&["load", "taint_q"]).ok();
    assert_eq!(d.ctl(&["call", "taint_q", "crash_in_libc", "--returns", "int"]).code(), 1);
    let q = next_kind(&events, "quarantined");
    assert_eq!(q["name"], "taint_q");
    assert_eq!(q["detail"], "1 crash(es)");
    let t = next_kind(&events, "tainted");
    assert_eq!(t["name"], "taint_q");
    assert!(!t["detail"].as_str().unwrap().is_empty());
    d.wait_log("<4>module taint_q is quarantined after 1 crash(es)", WAIT);
    d.wait_log("<3>the daemon is tainted by module taint_q's crash", WAIT);

    d.ctl(&["clear", "taint_q"]).ok();
    let c = next_kind(&events, "quarantine_cleared");
    assert!(c["detail"].as_str().unwrap().starts_with("uid "), "{c}");
    d.ctl(&["clear", "--taint"]).ok();
    let c = next_kind(&events, "taint_cleared");
    assert_eq!(c["name"], "taint_q");
    d.wait_log("<6>quarantine of module taint_q cleared by uid ", WAIT);
    d.wait_log("<6>request ClearTaint by uid ", WAIT);
}
