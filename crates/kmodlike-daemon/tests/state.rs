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
