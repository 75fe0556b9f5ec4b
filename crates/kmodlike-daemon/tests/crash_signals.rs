//! A module crashes inside `Call` for each of the six fatal signals: the reply names the
//! signal, the daemon still answers `Ping`, `List` no longer shows the module, `Crashes` does.
//! Each signal runs twice in a row on the same daemon (the second crash of a signal is where a
//! missing SA_NODEFER would kill the process).

mod common;

use common::*;

fn crash_in_call(sig: i32, sig_name: &str) {
    let name = format!("crash_{}", sig_name.trim_start_matches("SIG").to_lowercase());
    let module = crash_module(&name, sig, &[]);
    let d = Daemon::start(&[(&module, &format!("{name}.so"))], &[]);
    for round in 1..=2 {
        d.ctl(&["load", &name]).ok();
        let out = d.ctl(&["--json", "call", &name, "crash", "--returns", "int"]);
        assert_eq!(out.code(), 1, "round {round}: {out:?}");
        let reply = out.json();
        assert_eq!(reply["error"], "io.kmodlike.Loader.ModuleCrashed", "{out:?}");
        assert_eq!(reply["parameters"]["signal"], sig_name);
        assert_eq!(reply["parameters"]["module"], name.as_str());
        assert_eq!(reply["parameters"]["report"]["signal"], sig);
        assert!(
            out.stderr.starts_with(&format!("kmodctl: module {name} crashed: {sig_name}")),
            "the error names the module and the signal: {out:?}"
        );

        let ping = d.ctl(&["ping"]);
        assert!(ping.ok().contains("answers"), "the daemon survived {sig_name}: {ping:?}");
        let list = d.ctl(&["--json", "list"]).json();
        assert!(
            list["modules"].as_array().unwrap().iter().all(|m| m["name"] != name.as_str()),
            "List no longer shows {name}: {list}"
        );
        let crashes = d.ctl(&["--json", "crashes"]).json();
        let crashes = crashes["crashes"].as_array().unwrap();
        assert_eq!(crashes.len(), round, "one report per crash");
        assert_eq!(crashes[0]["module"], name.as_str());
        assert_eq!(crashes[0]["signal_name"], sig_name);
        assert_eq!(crashes[0]["phase"], "call");
    }
}

#[test]
fn sigsegv_in_call() {
    crash_in_call(libc::SIGSEGV, "SIGSEGV");
}

#[test]
fn sigbus_in_call() {
    crash_in_call(libc::SIGBUS, "SIGBUS");
}

#[test]
fn sigfpe_in_call() {
    crash_in_call(libc::SIGFPE, "SIGFPE");
}

#[test]
fn sigill_in_call() {
    crash_in_call(libc::SIGILL, "SIGILL");
}

#[test]
fn sigabrt_in_call() {
    crash_in_call(libc::SIGABRT, "SIGABRT");
}

#[test]
fn sigsys_in_call() {
    crash_in_call(libc::SIGSYS, "SIGSYS");
}

#[test]
fn crash_in_module_init_under_the_probe_is_refused_and_the_daemon_lives() {
    if !probe_available() {
        eprintln!("SKIPPED: the probe helper is not built (cargo build --workspace)");
        return;
    }
    let ctor = crash_module("ctor_crash", 0, &["-DCTOR_CRASH"]);
    let d = Daemon::start(&[(&ctor, "ctor_crash.so")], &[]);
    let out = d.ctl(&["load", "ctor_crash"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("ctor_crash"), "{out:?}");
    assert!(out.stderr.contains("SIGSEGV"), "the refusal names the signal: {out:?}");
    d.ctl(&["ping"]).ok();
}

/// 200 `abort()` and `raise(SIGABRT)` crashes (alternating) in `Call`, the daemon's connection threads doing varied amounts of
/// allocation work (List, Status, Info, Crashes) between them: not one is tainted (the verdict
/// comes from the unwound backtrace, not from stale words on the daemon's stacks), and each
/// report carries a backtrace naming the module's `crash` function.
#[test]
fn two_hundred_aborts_through_the_daemon_taint_nothing() {
    let module = crash_module("abort_many", libc::SIGABRT, &[]);
    let d = Daemon::start(&[(&module, "abort_many.so")], &[]);
    for round in 0..200 {
        for _ in 0..round % 4 {
            d.ctl(&["--json", "list"]).ok();
            d.ctl(&["--json", "status"]).ok();
        }
        if round % 3 == 0 {
            d.ctl(&["--json", "crashes"]).ok();
        }
        // The crash-loop policy quarantines a module after 5 crashes a minute: let it back.
        let _ = d.ctl(&["clear", "abort_many"]);
        d.ctl(&["load", "abort_many"]).ok();
        let function = if round % 2 == 0 { "crash" } else { "raise_abort" };
        let out = d.ctl(&["--json", "call", "abort_many", function, "--returns", "int"]);
        assert_eq!(out.code(), 1, "round {round}: {out:?}");
        let report = &out.json()["parameters"]["report"];
        assert_eq!(report["signal_name"], "SIGABRT", "round {round}: {report}");
        assert!(report["taint"].is_null(), "round {round}: a plain abort tainted: {report}");
        let frames = report["frames"].as_array().cloned().unwrap_or_default();
        assert!(
            frames.iter().any(|f| f["in_module"] == true
                && f["symbol"].as_str().is_some_and(|s| s.starts_with(function))),
            "round {round}: the backtrace names the module's {function}(): {report}"
        );
        assert_eq!(report["called"], function, "round {round}: {report}");
    }
    let status = d.ctl(&["--json", "status"]).json();
    assert!(status["taint"].is_null(), "the daemon is not tainted: {status}");
}
