//! The daemon under systemd: sd_notify (READY, STATUS, WATCHDOG, RELOADING, STOPPING) seen by a
//! NOTIFY_SOCKET listener, SIGHUP reloads instead of killing, required and optional modules at
//! start, socket activation through the real `systemd-socket-activate` (with and without
//! --accept), and the hardening score of the contrib unit.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use rustix::process::Signal;

const WAIT: Duration = Duration::from_secs(30);

/// A NOTIFY_SOCKET listener: each datagram the daemon sends, as text, through a channel.
struct NotifyListener {
    path: PathBuf,
    messages: mpsc::Receiver<String>,
}

impl NotifyListener {
    fn bind(dir: &Path) -> NotifyListener {
        let path = dir.join("notify.sock");
        let socket = UnixDatagram::bind(&path).unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 4096];
            while let Ok(n) = socket.recv(&mut buf) {
                if tx.send(String::from_utf8_lossy(&buf[..n]).into_owned()).is_err() {
                    return;
                }
            }
        });
        NotifyListener { path, messages: rx }
    }

    /// The next message with the line `line`; the messages skipped on the way are returned too.
    fn wait_for(&self, line: &str) -> (String, Vec<String>) {
        self.wait_for_match(line, |l| l == line)
    }

    /// The next message with a line starting with `prefix`.
    fn wait_for_prefix(&self, prefix: &str) -> (String, Vec<String>) {
        self.wait_for_match(prefix, |l| l.starts_with(prefix))
    }

    fn wait_for_match(&self, line: &str, matches: impl Fn(&str) -> bool) -> (String, Vec<String>) {
        let until = Instant::now() + WAIT;
        let mut skipped = Vec::new();
        loop {
            let left = until.saturating_duration_since(Instant::now());
            let msg = self
                .messages
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("no {line:?} notification; saw {skipped:?}"));
            if msg.lines().any(&matches) {
                return (msg, skipped);
            }
            skipped.push(msg);
        }
    }
}

/// The daemon started through `sh -c` so that `$$` (kept by exec) names its own pid in
/// WATCHDOG_PID, with NOTIFY_SOCKET pointing at `notify`.
fn daemon_cmd(dir: &Path, notify: &NotifyListener, extra_env: &str, args: &[&str]) -> Command {
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(format!("{extra_env} exec \"$0\" \"$@\""))
        .arg(daemon_bin())
        .arg("--socket")
        .arg(dir.join("kmodlike.sock"))
        .arg("--module-path")
        .arg(dir.join("modules"))
        .arg("--state-dir")
        .arg(dir.join("state"));
    if !probe_available() {
        cmd.arg("--no-probe");
    }
    cmd.args(args)
        .env("NOTIFY_SOCKET", &notify.path)
        .env("NO_COLOR", "1")
        .env("RUST_LOG", "info")
        .env_remove("KMODLIKE_SOCKET")
        .env_remove("LISTEN_FDS")
        .env_remove("LISTEN_PID");
    cmd
}

#[test]
fn notifications_ready_status_watchdog_reloading_and_stopping() {
    let hello = hello_module();
    let plain = crash_module("sd_plain", 0, &[]);
    let dir = Daemon::prepare(&[(&hello, "hello.so"), (&plain, "sd_plain.so")]);
    let notify = NotifyListener::bind(dir.path());
    let cmd = daemon_cmd(dir.path(), &notify, "WATCHDOG_PID=$$ WATCHDOG_USEC=200000", &["hello"]);
    let socket = dir.path().join("kmodlike.sock");
    let modules = dir.path().join("modules");
    let mut d = Daemon::spawn(cmd, dir, socket, modules);

    let (ready, _) = notify.wait_for("READY=1");
    assert!(
        ready
            .lines()
            .any(|l| l == "STATUS=serving: 1 module loaded, 0 crashes logged, 0 quarantined"),
        "{ready:?}"
    );
    // WATCHDOG_USEC=200ms: a keep-alive every 100 ms; two in a row prove it repeats.
    notify.wait_for("WATCHDOG=1");
    notify.wait_for("WATCHDOG=1");
    d.wait_log("systemd watchdog on", WAIT);

    // A change of the counts is reported.
    d.ctl(&["load", "sd_plain"]).ok();
    let (status, _) = notify.wait_for_prefix("STATUS=serving: 2 modules loaded");
    assert!(status.contains("0 crashes logged"), "{status:?}");

    // SIGHUP reloads: RELOADING=1 (with MONOTONIC_USEC, as Type=notify-reload wants), then
    // READY=1 again, a log line, and the daemon and its modules are still there.
    d.signal(Signal::HUP);
    let (reloading, _) = notify.wait_for("RELOADING=1");
    assert!(reloading.lines().any(|l| l.starts_with("MONOTONIC_USEC=")), "{reloading:?}");
    notify.wait_for("READY=1");
    d.wait_log("configuration reloaded: module path ", WAIT);
    assert!(d.is_running(), "SIGHUP must not stop the daemon:\n{}", d.log());
    let list = d.ctl(&["--json", "list"]).json();
    assert_eq!(list["modules"].as_array().unwrap().len(), 2, "{list}");

    // SIGTERM: STOPPING=1 before the modules are unloaded; their unloads do not put "serving"
    // back in the status.
    assert_eq!(d.terminate().code(), Some(0), "{}", d.log());
    let (stopping, _) = notify.wait_for("STOPPING=1");
    assert!(stopping.contains("STATUS=stopping"), "{stopping:?}");
    // The daemon has exited: a marker sent now arrives after everything it sent.
    UnixDatagram::unbound().unwrap().send_to(b"TEST-END", &notify.path).unwrap();
    let (_, after) = notify.wait_for("TEST-END");
    assert!(!after.iter().any(|m| m.contains("STATUS=serving")), "{after:?}");
}

#[test]
fn a_required_module_that_fails_fails_the_start_without_ready() {
    let dir = Daemon::prepare(&[]);
    let notify = NotifyListener::bind(dir.path());
    let mut cmd = daemon_cmd(dir.path(), &notify, "", &["misc/nosuch"]);
    let out = run_with_deadline(&mut cmd, WAIT);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr.contains("the required module misc/nosuch could not be loaded: "),
        "{out:?}"
    );
    assert!(out.stderr.contains("--optional-module"), "names the way out: {out:?}");
    assert!(!out.stderr.contains("io.kmodlike.Loader.") && !out.stderr.contains('{'), "{out:?}");
    // The daemon has exited: what it sent is queued; the reader thread may still be at it, so
    // wait for the socket to be read empty (a STOPPING=1 is the last thing a start sends).
    let (_, sent) = notify.wait_for("STOPPING=1");
    assert!(!sent.iter().any(|m| m.lines().any(|l| l == "READY=1")), "{sent:?}");
    assert!(!dir.path().join("kmodlike.sock").exists(), "the socket was removed");
}

#[test]
fn an_optional_module_that_fails_only_warns() {
    let hello = hello_module();
    let dir = Daemon::prepare(&[(&hello, "hello.so")]);
    let notify = NotifyListener::bind(dir.path());
    let cmd = daemon_cmd(dir.path(), &notify, "", &["--optional-module", "misc/nosuch", "hello"]);
    let socket = dir.path().join("kmodlike.sock");
    let modules = dir.path().join("modules");
    let mut d = Daemon::spawn(cmd, dir, socket, modules);
    notify.wait_for("READY=1");
    d.wait_log("ready", WAIT);
    assert!(
        d.log().contains("cannot load the optional module misc/nosuch: ")
            && d.log().contains("starting without it"),
        "{}",
        d.log()
    );
    d.ctl(&["info", "hello"]).ok();
}

fn socket_activate() -> Option<PathBuf> {
    let p = PathBuf::from("/usr/bin/systemd-socket-activate");
    require_tool(&p, "install the systemd package (make test-deps does)").then_some(p)
}

/// Collects a child's stderr lines through a channel.
fn lines_of(stderr: std::process::ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    rx
}

fn wait_line(rx: &mpsc::Receiver<String>, needle: &str, seen: &mut Vec<String>) {
    let until = Instant::now() + WAIT;
    while !seen.iter().any(|l| l.contains(needle)) {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no line with {needle:?}; saw:\n{}", seen.join("\n")),
        }
    }
}

#[test]
fn systemd_socket_activate_passes_a_listening_socket_that_is_served() {
    let Some(activate) = socket_activate() else { return };
    let dir = Daemon::prepare(&[]);
    let socket = dir.path().join("activated.sock");
    let mut child = Command::new(activate)
        .arg("-l")
        .arg(&socket)
        .arg(daemon_bin())
        .args(["--no-probe", "--socket", "/ignored/by/activation.sock"])
        .arg("--state-dir")
        .arg(dir.path().join("state"))
        .env("NO_COLOR", "1")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    wait_line(&rx, "Listening on", &mut seen);
    // The first connection makes systemd-socket-activate exec the daemon, which serves it.
    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("--socket").arg(&socket).arg("ping");
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert!(out.ok().contains("answers at"), "{out:?}");
    wait_line(&rx, "serving the socket passed by systemd", &mut seen);
    wait_line(&rx, "--socket /ignored/by/activation.sock is ignored", &mut seen);
    rustix::process::kill_process(rustix::process::Pid::from_child(&child), Signal::TERM).unwrap();
    let status = wait_deadline(&mut child, WAIT).expect("the daemon stops on SIGTERM");
    assert_eq!(status.code(), Some(0), "{}", seen.join("\n"));
}

#[test]
fn systemd_socket_activate_accept_yes_is_refused_with_a_clear_error() {
    let Some(activate) = socket_activate() else { return };
    let dir = Daemon::prepare(&[]);
    let socket = dir.path().join("accept.sock");
    let mut child = Command::new(activate)
        .arg("--accept")
        .arg("-l")
        .arg(&socket)
        .arg(daemon_bin())
        .arg("--no-probe")
        .env("NO_COLOR", "1")
        .env_remove("NOTIFY_SOCKET")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let rx = lines_of(child.stderr.take().unwrap());
    let mut seen = Vec::new();
    wait_line(&rx, "Listening on", &mut seen);
    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("--socket").arg(&socket).arg("ping");
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert_eq!(out.code(), 3, "the connection is closed unserved: {out:?}");
    wait_line(&rx, "a connected socket (Accept=yes)", &mut seen);
    assert!(seen.iter().any(|l| l.contains("use Accept=no")), "{}", seen.join("\n"));
    assert!(!seen.iter().any(|l| l.contains("accept failed")), "{}", seen.join("\n"));
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn the_contrib_service_scores_at_most_2_5_in_systemd_analyze_security() {
    let analyze = PathBuf::from("/usr/bin/systemd-analyze");
    if !require_tool(&analyze, "install the systemd package (make test-deps does)") {
        return;
    }
    let unit = kmodlike_testsupport::workspace_root().join("contrib/kmodlike.service");
    let mut cmd = Command::new(&analyze);
    cmd.args(["security", "--offline=yes", "--no-pager"]).arg(&unit);
    let out = run_with_deadline(&mut cmd, WAIT);
    let text = format!("{}{}", out.stdout, out.stderr);
    let line = text
        .lines()
        .find(|l| l.contains("Overall exposure level for kmodlike.service:"))
        .unwrap_or_else(|| panic!("no overall score:\n{text}"));
    let score: f64 = line
        .split(':')
        .nth(1)
        .and_then(|s| s.split_whitespace().next())
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("cannot read the score in {line:?}"));
    assert!(score <= 2.5, "{line}\n{text}");
    let service = std::fs::read_to_string(&unit).unwrap();
    assert!(service.lines().any(|l| l.starts_with("WatchdogSec=")), "{service}");
    assert!(service.lines().any(|l| l.starts_with("ExecReload=")), "{service}");
}
