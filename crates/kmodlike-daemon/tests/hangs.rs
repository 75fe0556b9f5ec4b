//! Calls that do not return, through the real daemon and the real kmodctl: a deadline that
//! interrupts a spinning call (TimedOut naming module and function, exit 5, Monitor's call_slow
//! and call_timed_out), `kmodctl calls` and `unload --force` of a blocked call while others are
//! served, a call that blocks the signal (hung, then removed), SIGTERM with a call running (named
//! in the log), kmodctl's own reply timeout (a busy daemon is not "unreachable"), and a client
//! that gave up not counted as a connection. The module (tests/modules/hang.c) logs "<function>
//! entered hang" before it hangs; tests wait for that line, never for a fixed time.

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixListener;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;

const LOG_WAIT: Duration = Duration::from_secs(20);

/// Run `status --json` until `pred` holds (a safety-net deadline, not a synchronisation sleep:
/// the state changes when a thread of the daemon gets to it).
fn wait_status(d: &Daemon, what: &str, pred: impl Fn(&serde_json::Value) -> bool) {
    let until = Instant::now() + LOG_WAIT;
    loop {
        let st = d.ctl(&["--json", "status"]).json();
        if pred(&st) {
            return;
        }
        assert!(Instant::now() < until, "{what}: not within {LOG_WAIT:?}; last status {st:#}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn reply_timeout_says_the_daemon_answers_ping_and_the_abandoned_connection_is_not_counted() {
    let mut d = hang_daemon(&[]);

    // No deadline on the call: only kmodctl's own --timeout ends the wait.
    let out =
        d.ctl(&["--timeout", "1", "call", "hang", "block", "--returns", "int", "--deadline", "0"]);
    d.wait_log("block entered hang", LOG_WAIT);
    assert_eq!(out.code(), 4, "{out:?}");
    assert_eq!(
        out.stderr.lines().next().unwrap_or_default(),
        "kmodctl: no reply within 1.0 s; the daemon answers ping, the call may still be running \
         (see `kmodctl calls`; raise --timeout, or bound a call with --deadline)",
        "{out:?}"
    );

    // With --json: one document naming it, the same exit status.
    let j = d.ctl(&["--json", "--timeout", "0.5", "call", "hang", "block", "--deadline", "0"]);
    assert_eq!(j.code(), 4, "{j:?}");
    assert_eq!(j.json()["error"], "kmodctl.NoReply", "{j:?}");
    assert_eq!(j.json()["parameters"]["timeout"], 0.5, "{j:?}");

    // kmodctl gave up and closed: the connection is abandoned, not open. The status request's
    // own connection is the one open.
    let st = d.ctl(&["--json", "status"]).json();
    assert_eq!(st["connections"], 1, "{st:#}");
    assert_eq!(st["abandoned_connections"], 2, "{st:#}");
    assert!(d.ctl(&["status"]).ok().contains("(and 2 abandoned"), "the text says so too");

    // Meanwhile the daemon serves other calls into the same module.
    assert_eq!(
        d.ctl(&["call", "hang", "answer", "--returns", "int"]).ok(),
        "hang: answer() returned 42\n"
    );

    // Let the blocked calls return: their connections close and are not counted any more.
    for _ in 0..2 {
        assert_eq!(
            d.ctl(&["call", "hang", "release", "--returns", "int"]).ok(),
            "hang: release() returned 1\n"
        );
    }
    wait_status(&d, "the abandoned connection closes", |st| st["abandoned_connections"] == 0);
    assert!(d.is_running());
}

#[test]
fn a_socket_that_answers_nothing_not_even_ping_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&path).unwrap();
    // Accept and hold every connection, never reply.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for s in listener.incoming().map_while(Result::ok) {
            held.push(s);
        }
    });
    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("--socket").arg(&path).args(["--timeout", "0.5", "list"]);
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(
        out.stderr.starts_with(
            "kmodctl: no reply within 0.5 s, and the daemon does not answer ping either: no reply \
             from"
        ),
        "{out:?}"
    );
}

/// Start `kmodctl ARGS` in the background (its output collected when it ends).
fn spawn_ctl(d: &Daemon, args: &[&str]) -> Child {
    Command::new(kmodctl_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(args)
        .env("NO_COLOR", "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// Wait for a background kmodctl and return its output.
fn finish_ctl(child: Child) -> std::process::Output {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    rx.recv_timeout(CTL_DEADLINE).expect("kmodctl finished").expect("kmodctl output")
}

/// `kmodctl --json monitor`, its lines as they come.
fn start_monitor(d: &Daemon) -> (Child, mpsc::Receiver<serde_json::Value>) {
    let mut child = spawn_ctl(d, &["--json", "monitor"]);
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<serde_json::Value>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            // A line cut short when the monitor is killed ends the stream.
            let Ok(v) = serde_json::from_str(&line) else { break };
            let _ = tx.send(v);
        }
    });
    let first = rx.recv_timeout(LOG_WAIT).expect("the started event");
    assert_eq!(first["event"]["kind"], "started");
    (child, rx)
}

/// A daemon started with `args`, the `hang` module loaded.
fn hang_daemon(args: &[&str]) -> Daemon {
    let hang = test_module("hang");
    let d = Daemon::start(&[(&hang, "hang.so")], args);
    d.ctl(&["load", "hang"]).ok();
    d
}

/// The next Monitor event of `kind` (others are skipped).
fn next_event(events: &mpsc::Receiver<serde_json::Value>, kind: &str) -> serde_json::Value {
    loop {
        let v = events.recv_timeout(LOG_WAIT).unwrap_or_else(|_| panic!("a {kind} event"));
        if v["event"]["kind"] == kind {
            return v;
        }
    }
}

#[test]
fn a_spinning_call_times_out_naming_module_and_function_and_monitor_sees_it_coming() {
    let mut d = hang_daemon(&[]);
    let (mut monitor, events) = start_monitor(&d);

    let out = d.ctl(&["call", "hang", "spin", "--deadline", "1"]);
    d.wait_log("spin entered hang", LOG_WAIT);
    assert_eq!(out.code(), 5, "exit 5: timed out: {out:?}");
    assert!(
        out.stderr.starts_with("kmodctl: module hang: spin ran for "),
        "names the module, the function and the time: {out:?}"
    );
    assert!(out.stderr.contains("past its deadline, and was interrupted"), "{out:?}");
    assert!(out.stderr.contains("backtrace (innermost first):"), "where it was: {out:?}");
    assert!(out.stderr.contains("spin"), "{out:?}");

    let j = d.ctl(&["--json", "call", "hang", "answer", "--returns", "int"]);
    assert_eq!(j.code(), 1, "the module was unloaded: {j:?}");
    assert_eq!(j.json()["error"], "io.kmodlike.Loader.ModuleNotLoaded", "{j:?}");
    // info: no longer loaded; the timeout is its last crash, and the file is shown.
    let info = d.ctl(&["--json", "info", "hang"]).json();
    assert_eq!(info["loaded"], serde_json::Value::Null, "{info:#}");
    assert!(info["file"]["path"].as_str().unwrap().ends_with("hang.so"), "{info:#}");
    let text = d.ctl(&["info", "hang"]);
    assert!(
        text.ok().contains("last crash:         a call to spin ran past its deadline of 1.0 s"),
        "{text:?}"
    );
    let again = d.ctl(&["call", "hang", "answer", "--returns", "int"]);
    assert!(
        again.stderr.contains("module hang is not loaded: its call to spin ran past its deadline"),
        "{again:?}"
    );
    assert!(d.is_running());

    // Monitor: call_slow at half the deadline, then call_timed_out with where it was.
    let mut kinds = Vec::new();
    loop {
        let v = events.recv_timeout(LOG_WAIT).unwrap_or_else(|_| panic!("events so far {kinds:?}"));
        let e = &v["event"];
        let kind = e["kind"].as_str().unwrap().to_owned();
        if kind == "call_slow" || kind == "call_timed_out" {
            assert_eq!(e["name"], "hang", "{v}");
            assert_eq!(e["call"]["module"], "hang", "{v}");
            assert_eq!(e["call"]["function"], "spin", "{v}");
            assert!(e["call"]["thread"].as_i64().unwrap() > 0, "{v}");
            assert!(e["ran_for"].as_f64().unwrap() > 0.0, "{v}");
        }
        if kind == "call_timed_out" {
            assert!(e["report"]["frames"].is_array(), "where it was: {v}");
        }
        kinds.push(kind);
        if kinds.last().map(String::as_str) == Some("call_timed_out") {
            break;
        }
    }
    let slow = kinds.iter().position(|k| k == "call_slow");
    assert!(slow.is_some(), "a call_slow event before the timeout: {kinds:?}");
    let _ = monitor.kill();
    let _ = monitor.wait();

    // The timeout is in the crash log and the crash count (the crash-loop policy counts it).
    let st = d.ctl(&["--json", "status"]).json();
    assert_eq!(st["crashes"], 1, "{st:#}");
    let crashes = d.ctl(&["--json", "crashes"]).json();
    assert_eq!(crashes["crashes"][0]["timeout"]["limit"], 1.0, "{crashes:#}");
    assert!(d.is_running());
}

#[test]
fn calls_lists_a_hung_call_and_unload_force_interrupts_it() {
    let mut d = hang_daemon(&[]);
    // A deadline far away: only the forced unload ends this call.
    let call = spawn_ctl(
        &d,
        &["--json", "call", "hang", "block", "--returns", "int", "--deadline", "600"],
    );
    d.wait_log("block entered hang", LOG_WAIT);

    // The daemon serves others meanwhile, and shows the call.
    let calls = d.ctl(&["calls"]);
    let lines: Vec<&str> = calls.ok().lines().collect();
    assert_eq!(
        lines[0].split_whitespace().collect::<Vec<_>>(),
        ["Module", "Function", "Thread", "Running", "Deadline"]
    );
    let row: Vec<&str> = lines[1].split_whitespace().collect();
    assert_eq!((row[0], row[1]), ("hang", "block"), "{calls:?}");
    assert!(lines[1].contains(" in "), "the deadline is ahead: {calls:?}");
    let j = d.ctl(&["--json", "calls"]).json();
    let thread = j["calls"][0]["thread"].as_i64().unwrap();
    assert!(thread > 0, "{j}");
    assert!(j["calls"][0]["deadline"].as_f64().unwrap() > j["calls"][0]["since"].as_f64().unwrap());
    let list = d.ctl(&["--json", "list"]).json();
    assert_eq!(list["modules"][0]["calls_in_flight"][0]["function"], "block", "{list}");
    assert_eq!(list["modules"][0]["calls_in_flight"][0]["thread"], thread, "{list}");
    let info = d.ctl(&["info", "hang"]);
    assert!(
        info.ok().contains(&format!("call in flight:     block on thread {thread}")),
        "{info:?}"
    );

    // Without --force: busy, and the message names the flags that help.
    let busy = d.ctl(&["unload", "hang"]);
    assert_eq!(busy.code(), 1, "{busy:?}");
    assert!(busy.stderr.contains("kmodctl unload --wait"), "{busy:?}");

    let forced = d.ctl(&["unload", "--force", "hang"]);
    assert_eq!(
        forced.ok(),
        "interrupted 1 call(s) running in module hang\nunloaded module hang\n",
        "{forced:?}"
    );
    let call = finish_ctl(call);
    assert_eq!(call.status.code(), Some(5), "the caller learns it was interrupted: {call:?}");
    let stderr = String::from_utf8_lossy(&call.stderr);
    assert!(stderr.starts_with("kmodctl: module hang: block ran for"), "{stderr}");
    // The error on the wire: interrupted on request, so its report has no limit.
    let j: serde_json::Value = serde_json::from_slice(&call.stdout).expect("the error as JSON");
    assert_eq!(j["error"], "io.kmodlike.Loader.TimedOut", "{j:#}");
    let p = &j["parameters"];
    assert_eq!((&p["module"], &p["function"]), (&json!("hang"), &json!("block")), "{j:#}");
    assert!(p["ran_for"].as_f64().unwrap() > 0.0, "{j:#}");
    assert_eq!(p["report"]["timeout"]["limit"], serde_json::Value::Null, "{j:#}");
    assert_eq!(p["report"]["thread_id"], thread, "{j:#}");
    assert_eq!(d.ctl(&["calls"]).ok(), "no calls running\n");
    assert!(!d.ctl(&["list"]).ok().contains("hang"));
    assert!(d.is_running());
}

#[test]
fn a_call_that_blocks_the_signal_is_reported_hung_and_unload_force_removes_it() {
    let mut d = hang_daemon(&[]);
    let (mut monitor, events) = start_monitor(&d);
    let call =
        spawn_ctl(&d, &["call", "hang", "block_masked", "--returns", "int", "--deadline", "1"]);
    d.wait_log("block_masked entered hang", LOG_WAIT);
    let hung = next_event(&events, "hung");
    assert_eq!(hung["event"]["name"], "hang", "{hung}");
    assert_eq!(hung["event"]["call"]["function"], "block_masked", "{hung}");
    assert!(hung["event"]["detail"].as_str().unwrap().contains("cannot be interrupted"), "{hung}");
    let _ = monitor.kill();
    let _ = monitor.wait();

    let st = d.ctl(&["--json", "status"]).json();
    assert_eq!(st["hung"], json!(["hang"]), "{st:#}");
    assert!(d.ctl(&["status"]).ok().contains("hung:               hang"));
    let j = d.ctl(&["--json", "call", "hang", "answer", "--returns", "int"]);
    assert_eq!(j.code(), 1, "a hung module takes no new calls: {j:?}");
    assert_eq!(j.json()["error"], "io.kmodlike.Loader.ModuleNotLoaded", "{j:?}");

    // It cannot be interrupted: the forced unload removes it and leaves the thread alone.
    assert_eq!(d.ctl(&["unload", "--force", "hang"]).ok(), "unloaded module hang\n");
    d.wait_log("unloaded the hung module hang; the thread stuck in it is left running", LOG_WAIT);
    let st = d.ctl(&["--json", "status"]).json();
    assert_eq!(st["hung"], json!([]), "{st:#}");
    assert!(!d.ctl(&["list"]).ok().contains("hang"));
    assert!(d.ctl(&["ping"]).ok().contains("answers"));
    assert!(d.is_running());
    drop(call); // its thread stays blocked in the module; the daemon is killed at the end
}

/// A call spinning inside libc is not ended there (a libc lock could be held): the daemon
/// reports it hung naming the libc function, serves on, and `unload --force` removes it.
#[test]
fn a_call_spinning_inside_libc_is_reported_hung_naming_the_function_and_can_be_removed() {
    let mut d = hang_daemon(&[]);
    let (mut monitor, events) = start_monitor(&d);
    let call = spawn_ctl(&d, &["call", "hang", "spin_in_libc", "--deadline", "0.2"]);
    d.wait_log("spin_in_libc entered hang", LOG_WAIT);
    let hung = next_event(&events, "hung");
    let detail = hung["event"]["detail"].as_str().unwrap();
    assert!(detail.contains("pthread_spin_lock in libc.so.6"), "{hung}");
    assert!(detail.contains("locks held"), "{hung}");
    let _ = monitor.kill();
    let _ = monitor.wait();
    assert_eq!(d.ctl(&["--json", "status"]).json()["hung"], json!(["hang"]));
    assert!(d.ctl(&["call", "hang", "answer", "--returns", "int"]).stderr.contains("hung"));
    assert_eq!(d.ctl(&["unload", "--force", "hang"]).ok(), "unloaded module hang\n");
    assert!(!d.ctl(&["list"]).ok().contains("hang"));
    assert!(d.ctl(&["ping"]).ok().contains("answers"));
    assert!(d.is_running());
    drop(call); // its thread spins on in libc; the daemon is killed at the end
}

#[test]
fn sigterm_interrupts_a_hung_call_and_names_it_in_the_log() {
    let mut d = hang_daemon(&["--call-timeout", "600"]);
    let call = spawn_ctl(&d, &["call", "hang", "block", "--returns", "int"]);
    d.wait_log("block entered hang", LOG_WAIT);
    let calls = d.ctl(&["--json", "calls"]).json();
    let thread = calls["calls"][0]["thread"].as_i64().unwrap();
    // The daemon's --call-timeout is the call's deadline (both times come from one clock read).
    let limit = calls["calls"][0]["deadline"].as_f64().unwrap()
        - calls["calls"][0]["since"].as_f64().unwrap();
    assert!((limit - 600.0).abs() < 0.01, "{calls:#}");
    let st = d.terminate();
    assert_eq!(st.code(), Some(0), "{}", d.log());
    let log = d.log();
    let line = log
        .lines()
        .find(|l| l.contains("still running at shutdown: interrupting"))
        .unwrap_or_else(|| panic!("no line names the interrupted call:\n{log}"));
    assert!(
        line.contains("module hang")
            && line.contains("block")
            && line.contains(&thread.to_string()),
        "{line}"
    );
    assert!(!log.contains("still busy after the interrupt"), "{log}");
    let _ = finish_ctl(call);
}

/// Every call into a module loaded again after a timeout is interrupted at its own deadline
/// (the loader's watchdog once lost the registration of a call made right after an interrupt).
#[test]
fn timeouts_in_a_row_are_each_enforced() {
    let hang = test_module("hang");
    let d = Daemon::start(&[(&hang, "hang.so")], &["--crash-loop-max", "0"]);
    for round in 0..4 {
        d.ctl(&["load", "hang"]).ok();
        // kmodctl waits 5.5 s for the reply: exit 4 (no reply) means the deadline was missed.
        let out = d.ctl(&["--timeout", "1", "--json", "call", "hang", "spin", "--deadline", "0.5"]);
        assert_eq!(out.code(), 5, "round {round}: {out:?}");
        assert_eq!(out.json()["parameters"]["report"]["timeout"]["limit"], 0.5);
    }
}

/// A `module_init` that never returns: the load's deadline (the daemon's `--call-timeout`, and
/// first the probe child's own limit) refuses the load, naming the module and `module_init`,
/// and the daemon goes on serving.
#[test]
fn a_load_whose_module_init_hangs_is_refused_and_the_daemon_serves_on() {
    let src = crate_dir().join("tests/modules/hang.c");
    let hang_init =
        kmodlike_testsupport::build_module("daemon-hang_init.so", &[&src], &["-DHANG_INIT"]);
    // Without the probe helper built, every test daemon runs with --no-probe already.
    let variants: &[bool] = if probe_available() { &[true, false] } else { &[false] };
    for &probe in variants {
        let mut args = vec!["--call-timeout", "0.5"];
        if !probe && probe_available() {
            args.push("--no-probe");
        }
        let d = Daemon::start(&[(&hang_init, "hang_init.so")], &args);
        let out = d.ctl(&["load", "hang_init"]);
        assert_ne!(out.code(), 0, "probe {probe}: {out:?}");
        assert!(out.stderr.contains("hang_init"), "probe {probe}: names the module: {out:?}");
        assert!(out.stderr.contains("module_init"), "probe {probe}: names module_init: {out:?}");
        d.ctl(&["ping"]).ok();
        let list = d.ctl(&["--json", "list"]).json();
        assert!(!list.to_string().contains("\"hang_init\""), "probe {probe}: listed: {list}");
    }
}

#[test]
fn kmodlike_toml_sets_the_default_deadline_and_modules_d_a_module_s_own() {
    let hang = test_module("hang");
    let dir = Daemon::prepare(&[(&hang, "hang.so")]);
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("modules.d")).unwrap();
    std::fs::write(etc.join("kmodlike.toml"), "call_timeout = 120\n").unwrap();
    std::fs::write(etc.join("modules.d/10-test.conf"), "misc/hang timeout=300\n").unwrap();
    let args = vec!["--config".into(), etc.join("kmodlike.toml").into_os_string()];
    let mut d = Daemon::start_in(dir, DaemonConfig { args, ..Default::default() });
    let call = spawn_ctl(&d, &["call", "hang", "block", "--returns", "int"]);
    d.wait_log("block entered hang", LOG_WAIT);
    let calls = d.ctl(&["--json", "calls"]).json();
    let limit = calls["calls"][0]["deadline"].as_f64().unwrap()
        - calls["calls"][0]["since"].as_f64().unwrap();
    assert!((limit - 300.0).abs() < 0.01, "timeout=300, not the default 120: {calls:#}");
    // kmodlike.toml's call_timeout is the daemon's default.
    assert_eq!(d.ctl(&["--json", "status"]).json()["call_timeout"], 120.0);
    d.ctl(&["unload", "--force", "hang"]).ok();
    assert_eq!(finish_ctl(call).status.code(), Some(5));
}
