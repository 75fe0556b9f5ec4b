//! State kept across restarts: a restarted daemon shows the earlier run's crashes (marked as
//! such), still refuses the module it had quarantined, and starts empty (the bad file kept
//! aside) when the state file is corrupt.

mod common;

use common::*;

#[test]
fn crashes_and_quarantine_survive_a_restart() {
    let segv = crash_module("crash_kept", libc::SIGSEGV, &[]);
    let state = tempfile::tempdir().unwrap();
    let state_dir = state.path().join("kmodlike");
    let state_arg = state_dir.to_str().unwrap();
    let args = ["--state-dir", state_arg, "--crash-loop-max", "1"];

    let mut d = Daemon::start(&[(&segv, "crash_kept.so")], &args);
    d.ctl(&["load", "crash_kept"]).ok();
    assert_eq!(d.ctl(&["call", "crash_kept", "crash"]).code(), 1);
    let status = d.ctl(&["--json", "status"]).json();
    assert_eq!(status["quarantined"], serde_json::json!(["crash_kept"]));
    assert_eq!(status["state_dir"], state_arg);
    assert_eq!(d.terminate().code(), Some(0));
    assert!(state_dir.join("state.json").is_file());

    let d = Daemon::start(&[(&segv, "crash_kept.so")], &args);
    let crashes = d.ctl(&["--json", "crashes"]).json();
    assert_eq!(crashes["crashes"][0]["module"], "crash_kept");
    assert_eq!(crashes["crashes"][0]["previous_run"], true);
    let text = d.ctl(&["crashes"]);
    assert!(text.ok().starts_with("[previous run] module crash_kept crashed: SIGSEGV"), "{text:?}");
    // This run has seen no crash of its own; the quarantine holds.
    let status = d.ctl(&["--json", "status"]).json();
    assert_eq!(status["crashes"], 0);
    assert_eq!(status["quarantined"], serde_json::json!(["crash_kept"]));
    let out = d.ctl(&["load", "crash_kept"]);
    assert_eq!(out.code(), 1);
    assert!(out.stderr.contains("quarantined"), "{out:?}");

    // Clearing it is kept too.
    d.ctl(&["clear", "crash_kept"]).ok();
    drop(d);
    let d = Daemon::start(&[(&segv, "crash_kept.so")], &args);
    assert_eq!(d.ctl(&["--json", "status"]).json()["quarantined"], serde_json::json!([]));
    d.ctl(&["load", "crash_kept"]).ok();
}

#[test]
fn a_corrupt_state_file_is_kept_aside_and_the_daemon_starts_empty() {
    let state = tempfile::tempdir().unwrap();
    std::fs::write(state.path().join("state.json"), b"{\"version\": 1, \"crashes\": [{").unwrap();
    let state_arg = state.path().to_str().unwrap();
    let d = Daemon::start(&[], &["--state-dir", state_arg]);
    assert!(d.log().contains("is corrupt"), "{}", d.log());
    assert_eq!(d.ctl(&["crashes"]).ok(), "no crashes\n");
    let aside: Vec<_> = std::fs::read_dir(state.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with("state.json.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "the corrupt file is kept aside");
    assert!(d.log().contains(&aside[0].path().display().to_string()), "{}", d.log());
}

#[test]
fn an_unacknowledged_taint_and_its_acknowledgement_survive_restarts() {
    let segv = crash_module("taint_kept", libc::SIGSEGV, &[]);
    let state = tempfile::tempdir().unwrap();
    let state_arg = state.path().to_str().unwrap().to_owned();
    let args = ["--state-dir", state_arg.as_str()];

    let mut d = Daemon::start(&[(&segv, "taint_kept.so")], &args);
    d.ctl(&["load", "taint_kept"]).ok();
    assert_eq!(d.ctl(&["call", "taint_kept", "crash_in_libc", "--returns", "int"]).code(), 1);
    let reason = d.ctl(&["--json", "status"]).json()["taint"]["reason"].clone();
    assert!(reason.is_string(), "the crash tainted the daemon");
    assert_eq!(d.terminate().code(), Some(0));

    // A fresh process is not tainted itself, but says the earlier run was, unacknowledged.
    let mut d = Daemon::start(&[(&segv, "taint_kept.so")], &args);
    let status = d.ctl(&["--json", "status"]).json();
    assert!(status["taint"].is_null(), "{status}");
    assert_eq!(status["previous_taint"]["module"], "taint_kept");
    assert_eq!(status["previous_taint"]["reason"], reason);
    assert!(d.log().contains("an earlier run was tainted by module taint_kept"), "{}", d.log());
    assert!(d.ctl(&["status"]).ok().contains("earlier run:"));

    // ClearTaint acknowledges it; the acknowledgement is kept across the next restart.
    let ack = d.ctl(&["--json", "clear", "--taint"]).json();
    assert_eq!(ack["acknowledged"]["taint"]["module"], "taint_kept");
    assert!(d.ctl(&["--json", "status"]).json()["previous_taint"].is_null());
    assert_eq!(d.terminate().code(), Some(0));

    let d = Daemon::start(&[(&segv, "taint_kept.so")], &args);
    let status = d.ctl(&["--json", "status"]).json();
    assert!(status["previous_taint"].is_null(), "{status}");
    assert_eq!(status["taint_acks"][0], ack["acknowledged"]);
}
