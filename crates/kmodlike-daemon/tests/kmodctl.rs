//! kmodctl end to end against the real daemon: load, list, call, info, unload, reload,
//! crashes, status, monitor, dependencies, quarantine, SIGTERM, and the exit codes.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const LOG_WAIT: Duration = Duration::from_secs(10);

#[test]
fn load_list_call_info_unload_reload() {
    let hello = hello_module();
    let plain = crash_module("plain", 0, &[]);
    let base = test_module("dep_base");
    let mut d = Daemon::start(
        &[(&hello, "hello.so"), (&plain, "plain.so"), (&base, "dep_base.so")],
        &["hello"],
    );
    // The main program calls mod_hello after loading a module given on its command line.
    d.wait_log("Hello from the kmodlike example module!", LOG_WAIT);

    let list = d.ctl(&["list"]);
    let mut lines = list.ok().lines();
    let header: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
    assert_eq!(header, ["Module", "Size", "Used", "by", "State"]);
    let row: Vec<&str> = lines.next().expect("a row for hello").split_whitespace().collect();
    assert_eq!((row[0], row[2], row[3]), ("hello", "1", "live"), "{row:?}");
    assert_eq!(d.ctl(&["--json", "list"]).json()["modules"][0]["name"], "hello");

    // call: through the guard, the module logs through the daemon.
    assert_eq!(d.ctl(&["call", "hello", "mod_hello"]).ok(), "hello: mod_hello() returned\n");
    d.wait_log_count("Hello from the kmodlike example module!", 2, LOG_WAIT);

    // load by spec along the module path; calls with and without an argument.
    let load = d.ctl(&["load", "plain"]);
    assert!(load.ok().contains("loaded module plain from"), "{load:?}");
    d.wait_log("init plain", LOG_WAIT);
    assert_eq!(
        d.ctl(&["call", "plain", "answer", "--returns", "int"]).ok(),
        "plain: answer() returned 42\n"
    );
    assert_eq!(
        d.ctl(&["call", "plain", "add_one", "--arg", "-8"]).ok(),
        "plain: add_one(-8) returned -7\n"
    );
    assert_eq!(d.ctl(&["--json", "call", "plain", "add_one", "--arg", "41"]).json()["result"], 42);
    let again = d.ctl(&["--json", "load", "plain"]).json();
    assert_eq!(again["already_loaded"], true);

    // info: a loaded module, and a file that is not loaded (nothing runs, nothing loads).
    let info = d.ctl(&["info", "hello"]);
    let text = info.ok();
    assert!(text.contains("state:") && text.contains("live"), "{text}");
    assert!(text.contains("version:") && text.contains("1.0.0"), "{text}");
    let base_file = d.modules.join("misc/dep_base.so");
    let file_info = d.ctl(&["--json", "info", base_file.to_str().unwrap()]).json();
    assert_eq!(file_info["loaded"], serde_json::Value::Null);
    let tags: Vec<&str> = file_info["file"]["modinfo"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["tag"].as_str().unwrap())
        .collect();
    assert!(tags.contains(&"description"), "{file_info}");
    let by_spec = d.ctl(&["info", "misc/dep_base"]);
    assert!(
        by_spec.ok().contains("filename:") && by_spec.stdout.contains("dep_base.so"),
        "{by_spec:?}"
    );
    let out = d.ctl(&["info", "no_such_thing"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr.contains("no_such_thing") && out.stderr.contains("not found"), "{out:?}");
    assert!(!d.log().contains("init dep_base"), "info FILE must not load the module");
    assert!(!d.ctl(&["list"]).ok().contains("dep_base"));

    // unload: fini runs, the module is gone.
    assert_eq!(d.ctl(&["unload", "plain"]).ok(), "unloaded module plain\n");
    d.wait_log("fini plain", LOG_WAIT);
    assert!(!d.ctl(&["list"]).ok().contains("plain"));

    // reload: fini, then init of a fresh instance (a new id).
    let before = d.ctl(&["--json", "info", "hello"]).json()["loaded"]["id"].as_u64().unwrap();
    let reload = d.ctl(&["--json", "reload", "hello"]).json();
    assert_ne!(reload["module"]["id"].as_u64().unwrap(), before);
    d.wait_log("module finalizing", LOG_WAIT);
    d.wait_log_count("module initializing", 2, LOG_WAIT);

    // Failures name what failed, exit 1.
    let out = d.ctl(&["unload", "nope"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr.starts_with("kmodctl: module nope is not loaded"), "{out:?}");
    let out = d.ctl(&["load", "misc/missing"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr.contains("misc/missing") && out.stderr.contains("missing.so"), "{out:?}");
    let out = d.ctl(&["call", "hello", "no_such_symbol"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr.contains("no_such_symbol") && out.stderr.contains("hello"), "{out:?}");
    let out = d.ctl(&["--json", "unload", "nope"]);
    assert_eq!(out.json()["error"], "io.kmodlike.Loader.ModuleNotLoaded");
}

#[test]
fn exit_codes_usage_unreachable_version() {
    let d = Daemon::start(&[], &[]);
    assert_eq!(d.ctl(&["ping"]).code(), 0);
    assert_eq!(d.ctl(&["frobnicate"]).code(), 2);
    assert_eq!(d.ctl(&["call", "m", "f", "--arg", "1", "--returns", "void"]).code(), 2);
    assert_eq!(d.ctl(&["load"]).code(), 2);
    assert!(d.ctl(&["describe"]).ok().contains("interface io.kmodlike.Loader\n"));

    let mut cmd = Command::new(kmodctl_bin());
    cmd.args(["--socket", "/nonexistent/kmodlike.sock", "list"]);
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(
        out.stderr.starts_with("kmodctl: cannot reach the daemon at /nonexistent/kmodlike.sock"),
        "{out:?}"
    );

    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("--version");
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert_eq!(out.ok().trim(), format!("kmodctl {}", env!("CARGO_PKG_VERSION")));
}

/// Starts `kmodctl monitor --json --count n` and returns its lines as they come.
fn start_monitor(d: &Daemon, n: u64) -> (std::process::Child, mpsc::Receiver<String>) {
    let mut child = Command::new(kmodctl_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["--json", "monitor", "--count", &n.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

#[test]
fn crashes_status_and_monitor() {
    let segv = crash_module("crash_segv", libc::SIGSEGV, &[]);
    let d = Daemon::start(&[(&segv, "crash_segv.so")], &[]);

    let (mut mon, lines) = start_monitor(&d, 2);
    let first = lines.recv_timeout(Duration::from_secs(10)).expect("the started event");
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&first).unwrap()["event"]["kind"],
        "started"
    );

    d.ctl(&["load", "crash_segv"]).ok();
    let out = d.ctl(&["call", "crash_segv", "crash", "--returns", "int"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr.starts_with("kmodctl: module crash_segv crashed: SIGSEGV"), "{out:?}");

    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        let line = lines.recv_timeout(Duration::from_secs(10)).expect("a monitor event");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        kinds.push(v["event"]["kind"].as_str().unwrap().to_owned());
        if v["event"]["kind"] == "crashed" {
            assert_eq!(v["event"]["report"]["signal_name"], "SIGSEGV");
            assert_eq!(v["event"]["name"], "crash_segv");
        }
    }
    assert_eq!(kinds, ["loaded", "crashed"]);
    let st = wait_deadline(&mut mon, Duration::from_secs(10)).expect("monitor exits after --count");
    assert!(st.success());

    let crashes = d.ctl(&["crashes"]);
    assert!(
        crashes.ok().contains("module crash_segv crashed: SIGSEGV (SEGV_MAPERR"),
        "{crashes:?}"
    );
    let j = d.ctl(&["--json", "crashes"]).json();
    assert_eq!(j["crashes"][0]["module"], "crash_segv");
    assert_eq!(j["crashes"][0]["phase"], "call");

    let status = d.ctl(&["--json", "status"]).json();
    assert_eq!(status["crashes"], 1);
    assert_eq!(status["modules"], 0);
    assert_eq!(status["pid"], d.pid());
    assert!(status["uptime_secs"].as_f64().unwrap() > 0.0);
    assert_eq!(status["crash_loop"]["max_crashes"], 5);
    assert!(d.ctl(&["status"]).ok().contains("crashes:"));
}

#[test]
fn dependencies_show_in_used_by_and_block_unload() {
    let base = test_module("dep_base");
    let top = test_module("dep_top");
    let mut d = Daemon::start(&[(&base, "dep_base.so"), (&top, "dep_top.so")], &[]);
    d.ctl(&["load", "dep_top"]).ok();
    d.wait_log("init dep_base", LOG_WAIT);
    let table = d.ctl(&["list"]);
    let base_row =
        table.ok().lines().find(|l| l.starts_with("dep_base")).expect("dep_base row").to_owned();
    assert!(base_row.contains("dep_top"), "Used by names the dependent: {base_row}");
    assert_eq!(
        d.ctl(&["call", "dep_top", "top_value", "--returns", "int"]).ok(),
        "dep_top: top_value() returned 42\n"
    );

    let out = d.ctl(&["unload", "dep_base"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr.contains("dep_base") && out.stderr.contains("dep_top"), "{out:?}");

    d.ctl(&["unload", "dep_top"]).ok();
    d.wait_log("fini dep_base", LOG_WAIT);
    let log = d.log();
    assert!(log.find("fini dep_top").unwrap() < log.find("fini dep_base").unwrap());
    assert!(!d.ctl(&["list"]).ok().contains("dep_"));
}

#[test]
fn crash_loop_quarantines_until_cleared() {
    let segv = crash_module("crash_loop", libc::SIGSEGV, &[]);
    let d = Daemon::start(&[(&segv, "crash_loop.so")], &["--crash-loop-max", "2"]);
    for _ in 0..2 {
        d.ctl(&["load", "crash_loop"]).ok();
        assert_eq!(d.ctl(&["call", "crash_loop", "crash"]).code(), 1);
    }
    let out = d.ctl(&["load", "crash_loop"]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr.contains("quarantined") && out.stderr.contains("kmodctl clear crash_loop"),
        "{out:?}"
    );
    assert_eq!(
        d.ctl(&["--json", "status"]).json()["quarantined"],
        serde_json::json!(["crash_loop"])
    );
    d.ctl(&["clear", "crash_loop"]).ok();
    d.ctl(&["load", "crash_loop"]).ok();
    let out = d.ctl(&["clear", "crash_loop"]);
    assert_eq!(out.code(), 1, "not quarantined any more: {out:?}");
}

#[test]
fn unload_is_busy_during_a_call_and_waits_with_wait() {
    let plain = crash_module("slow", 0, &[]);
    let mut d = Daemon::start(&[(&plain, "slow.so")], &[]);
    d.ctl(&["load", "slow"]).ok();
    let mut call = Command::new(kmodctl_bin())
        .arg("--socket")
        .arg(&d.socket)
        .args(["call", "slow", "sleep_ms", "--arg", "3000"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    // The call is in the module (it says so) for the next 3 s.
    d.wait_log("sleep_ms begins in slow", LOG_WAIT);
    let out = d.ctl(&["unload", "slow"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("busy") && out.stderr.contains("slow"), "{out:?}");
    d.ctl(&["unload", "--wait", "slow"]).ok();
    d.wait_log("fini slow", LOG_WAIT);
    let log = d.log();
    let ended = log.find("sleep_ms ends in slow").expect("the call ended");
    assert!(ended < log.find("fini slow").unwrap(), "the unload waited for the call:\n{log}");
    assert!(wait_deadline(&mut call, Duration::from_secs(10)).unwrap().success());
}

#[test]
fn sigterm_runs_fini_in_dependency_order_and_removes_the_socket() {
    let hello = hello_module();
    let base = test_module("dep_base");
    let top = test_module("dep_top");
    let plain = crash_module("plain_term", 0, &[]);
    let mut d = Daemon::start(
        &[
            (&hello, "hello.so"),
            (&base, "dep_base.so"),
            (&top, "dep_top.so"),
            (&plain, "plain_term.so"),
        ],
        &["hello", "dep_top", "plain_term"],
    );
    assert!(d.socket.exists());
    let lock = d.socket.with_extension("sock.lock");
    assert!(lock.exists());
    let st = d.terminate();
    assert_eq!(st.code(), Some(0), "{}", d.log());
    let log = d.log();
    for fini in ["module finalizing", "fini dep_top", "fini dep_base", "fini plain_term"] {
        assert!(log.contains(fini), "{fini:?} missing:\n{log}");
    }
    assert!(log.find("fini dep_top").unwrap() < log.find("fini dep_base").unwrap(), "{log}");
    assert!(!d.socket.exists(), "the socket is removed");
    assert!(!lock.exists(), "the lock file is removed");
}

#[test]
fn module_can_unload_veto_keeps_the_module_until_it_agrees() {
    let veto = test_module("veto");
    let mut d = Daemon::start(&[(&veto, "veto.so")], &[]);
    d.ctl(&["load", "veto"]).ok();
    d.ctl(&["call", "veto", "keep_loaded", "--arg", "1"]).ok();
    let out = d.ctl(&["--json", "unload", "veto"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.json()["error"], "io.kmodlike.Loader.Busy");
    assert_eq!(out.json()["parameters"]["reason"], "veto");
    assert!(out.stderr.contains("module_can_unload()"), "{out:?}");
    assert!(d.ctl(&["list"]).ok().contains("veto"), "still loaded, still held");
    d.ctl(&["call", "veto", "keep_loaded", "--arg", "0"]).ok();
    d.ctl(&["unload", "veto"]).ok();
    d.wait_log("fini veto", LOG_WAIT);
}

#[test]
fn unload_force_overrides_a_veto_and_runs_fini() {
    let veto = test_module("veto");
    let mut d = Daemon::start(&[(&veto, "veto.so")], &[]);
    d.ctl(&["load", "veto"]).ok();
    d.ctl(&["call", "veto", "keep_loaded", "--arg", "1"]).ok();
    let out = d.ctl(&["unload", "veto"]);
    assert_eq!(out.code(), 1, "a plain unload is refused: {out:?}");
    d.ctl(&["unload", "--force", "veto"]).ok();
    d.wait_log("fini veto", LOG_WAIT);
    assert!(!d.ctl(&["list"]).ok().contains("veto"), "gone after a forced unload");
}

/// A FIFO and a device named to the daemon are refused at once, naming what they are, and the
/// daemon goes on answering (they used to block `Info` forever and `List`/`Load` behind it, or
/// read `/dev/zero` until the OOM killer came).
#[test]
fn a_fifo_or_a_device_is_refused_at_once_and_the_daemon_keeps_answering() {
    let hello = hello_module();
    let d = Daemon::start(&[(&hello, "hello.so")], &[]);
    let fifo = d.modules.join("misc/evil.so");
    kmodlike_testsupport::mkfifo(&fifo);
    let fifo = fifo.to_str().unwrap();
    for args in [["info", fifo], ["load", fifo], ["info", "/dev/zero"], ["load", "/dev/urandom"]] {
        let out = d.ctl(&args);
        assert_eq!(out.code(), 1, "{args:?}: {out:#?}");
        let kind = if args[1] == fifo { "FIFO" } else { "character device" };
        assert!(out.stderr.contains(kind) && out.stderr.contains(args[1]), "{args:?}: {out:#?}");
    }
    let list = d.ctl(&["list"]);
    assert!(list.ok().starts_with("Module"), "{list:?}");
    assert!(d.ctl(&["load", "hello"]).ok().contains("loaded module hello"));
}

/// A report's backtrace fields as the wire has them: `frames` null or an array of frames,
/// `called` null or a name, `probe_pid` null outside the probe.
fn assert_backtrace_fields(report: &serde_json::Value, what: &str) {
    let r = report.as_object().unwrap_or_else(|| panic!("{what}: no report: {report}"));
    for k in ["frames", "called", "probe_pid"] {
        assert!(r.contains_key(k), "{what}: the report has no {k}: {report}");
    }
    assert!(r["probe_pid"].is_null(), "{what}: a call crash is not the probe's: {report}");
    assert!(
        r["called"].is_null() || r["called"] == "crash",
        "{what}: called names the function the call ran: {report}"
    );
    match &r["frames"] {
        serde_json::Value::Null => {}
        serde_json::Value::Array(frames) => {
            assert!(!frames.is_empty(), "{what}: no backtrace is null, not []: {report}");
            for f in frames {
                assert!(f["pc"].as_str().is_some_and(|pc| pc.starts_with("0x")), "{what}: {f}");
                assert!(f["guessed"].is_boolean() && f["in_module"].is_boolean(), "{what}: {f}");
            }
        }
        other => panic!("{what}: frames is {other}"),
    }
}

#[test]
fn crash_reports_carry_the_backtrace_fields_in_call_crashes_and_monitor() {
    let segv = crash_module("bt_segv", libc::SIGSEGV, &[]);
    let d = Daemon::start(&[(&segv, "bt_segv.so")], &[]);
    let (mut mon, lines) = start_monitor(&d, 2);
    lines.recv_timeout(Duration::from_secs(10)).expect("the started event");

    d.ctl(&["load", "bt_segv"]).ok();
    let call = d.ctl(&["--json", "call", "bt_segv", "crash", "--returns", "int"]);
    assert_eq!(call.code(), 1, "{call:?}");
    let err = call.json();
    assert_eq!(err["error"], "io.kmodlike.Loader.ModuleCrashed");
    assert_backtrace_fields(&err["parameters"]["report"], "call --json");

    let mut crashed = None;
    while crashed.is_none() {
        let line = lines.recv_timeout(Duration::from_secs(10)).expect("a monitor event");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"]["kind"] == "crashed" {
            crashed = Some(v);
        }
    }
    assert_backtrace_fields(&crashed.unwrap()["event"]["report"], "monitor --json");
    assert!(wait_deadline(&mut mon, Duration::from_secs(10)).expect("monitor exits").success());

    let j = d.ctl(&["--json", "crashes"]).json();
    let report = &j["crashes"][0];
    assert_backtrace_fields(report, "crashes --json");

    // Text: whatever the report holds is printed after it, innermost frame first.
    let text = d.ctl(&["crashes"]);
    let out = text.ok();
    let frames = report["frames"].as_array().map_or(0, Vec::len);
    assert_eq!(out.contains("  backtrace (innermost first):"), frames > 0, "{out}");
    if frames > 0 {
        assert!(out.contains("    #0 "), "{out}");
        assert!(out.contains(&format!("    #{} ", frames - 1)), "{out}");
    }
    assert_eq!(out.contains("  called:  crash"), !report["called"].is_null(), "{out}");
    let plain = d.ctl(&["call", "bt_segv", "crash", "--returns", "int"]);
    assert_eq!(plain.code(), 1, "{plain:?}");
}

#[test]
fn clear_taint_acknowledges_the_taint_and_status_keeps_the_history() {
    let segv = crash_module("taint_segv", libc::SIGSEGV, &[]);
    let d = Daemon::start(&[(&segv, "taint_segv.so")], &[]);

    // Nothing to acknowledge yet.
    let none = d.ctl(&["clear", "--taint"]);
    assert_eq!(none.code(), 1, "{none:?}");
    assert!(none.stderr.contains("not tainted"), "{none:?}");
    assert_eq!(d.ctl(&["--json", "status"]).json()["taint_acks"], serde_json::json!([]));

    // A fault inside libc taints the daemon.
    d.ctl(&["load", "taint_segv"]).ok();
    let out = d.ctl(&["call", "taint_segv", "crash_in_libc", "--returns", "int"]);
    assert_eq!(out.code(), 1, "{out:?}");
    let status = d.ctl(&["--json", "status"]).json();
    assert_eq!(status["taint"]["module"], "taint_segv", "{status}");
    let reason = status["taint"]["reason"].as_str().unwrap().to_owned();

    // Acknowledged by this process's uid; the clear reply names the taint.
    let before =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs_f64();
    let ack = d.ctl(&["--json", "clear", "--taint"]).json();
    let uid = rustix::process::getuid().as_raw();
    let by = ack["acknowledged"]["by"].as_str().unwrap().to_owned();
    assert!(by.starts_with(&format!("uid {uid} pid ")), "{ack}");
    assert_eq!(ack["acknowledged"]["taint"]["module"], "taint_segv");
    assert_eq!(ack["acknowledged"]["taint"]["reason"], reason.as_str());
    assert!(ack["acknowledged"]["time"].as_f64().unwrap() >= before.floor(), "{ack}");

    // The verdict is gone, the acknowledgement stays.
    let status = d.ctl(&["--json", "status"]).json();
    assert!(status["taint"].is_null(), "{status}");
    assert_eq!(status["taint_acks"].as_array().unwrap().len(), 1, "{status}");
    assert_eq!(status["taint_acks"][0], ack["acknowledged"]);
    let text = d.ctl(&["status"]);
    let text = text.ok();
    assert!(text.contains("not tainted"), "{text}");
    // Off a terminal, the time is RFC 3339 (UTC).
    let ack_line = text.lines().find(|l| l.starts_with("taint acknowledged:")).expect(text);
    let stamp = ack_line.trim_start_matches("taint acknowledged:").trim_start();
    assert!(stamp.starts_with("20") && stamp[..20].ends_with('Z'), "{ack_line}");
    assert!(text.contains(&format!("by {by} (was: taint_segv: {reason})")), "{text}");

    // A second tainting crash taints again; its acknowledgement is added to the history.
    d.ctl(&["load", "taint_segv"]).ok();
    d.ctl(&["call", "taint_segv", "crash_in_libc", "--returns", "int"]);
    assert_eq!(d.ctl(&["--json", "status"]).json()["taint"]["module"], "taint_segv");
    let cleared = d.ctl(&["clear", "--taint"]);
    assert!(cleared.ok().starts_with("acknowledged and cleared the taint by module taint_segv"));
    let status = d.ctl(&["--json", "status"]).json();
    assert_eq!(status["taint_acks"].as_array().unwrap().len(), 2, "{status}");
    assert!(status["taint"].is_null());
    assert_eq!(d.ctl(&["clear", "--taint"]).code(), 1, "nothing left to acknowledge");
}
