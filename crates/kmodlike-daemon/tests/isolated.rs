//! The isolation tier through the daemon and kmodctl: `load --isolated`, `invoke` (from a file
//! and from standard input), `list`/`info` showing the tier and the child's pid, a crash in
//! the isolated module leaving the daemon serving, and `call` refused with a pointer to invoke.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};

use common::*;

fn host_available() -> bool {
    let ok = daemon_bin().with_file_name("kmodlike-host").exists();
    if !ok {
        eprintln!("kmodlike-host is not built next to the daemon: `cargo build -p kmodlike` first");
    }
    ok
}

#[test]
fn load_isolated_invoke_list_info_and_survive_a_crash() {
    if !host_available() {
        return;
    }
    let echo = kmodlike_testsupport::test_module("invoke_echo", "daemon-invoke_echo", &[]);
    let d = Daemon::start(&[(&echo, "echo.so")], &[]);
    let load = d.ctl(&["load", "--isolated", "echo"]);
    assert!(load.ok().contains("loaded module echo"), "{load:?}");

    let m = &d.ctl(&["--json", "list"]).json()["modules"][0];
    assert_eq!(m["tier"], "isolated");
    let pid = m["child_pid"].as_u64().expect("a child pid");
    assert_ne!(pid, u64::from(d.pid()));
    assert!(d.ctl(&["list"]).ok().contains(&format!("echo is isolated: pid {pid}")));
    assert!(d.ctl(&["info", "echo"]).ok().contains("isolated"));

    // From a file, and from standard input.
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, b"hello isolated").unwrap();
    let out = d.ctl(&["invoke", "echo", "echo", "--input", input.to_str().unwrap()]);
    assert_eq!(out.ok(), "hello isolated");
    assert!(out.stderr.contains("echo: echo() returned 0"), "{out:?}");
    let mut child = Command::new(kmodctl_bin())
        .args(["--socket", d.socket.to_str().unwrap(), "invoke", "echo", "pid", "--input", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"").unwrap();
    let got = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8(got.stdout).unwrap(), pid.to_string());

    // Raw calls are refused, and say to use invoke.
    let call = d.ctl(&["call", "echo", "nothing"]);
    assert_ne!(call.code(), 0);
    assert!(call.stderr.contains("invoke"), "{call:?}");

    // A crash in the isolated module: reported, the module gone, the daemon serving.
    let bad = dir.path().join("cmd");
    std::fs::write(&bad, b"signal 11").unwrap();
    let crash = d.ctl(&["invoke", "echo", "misbehave", "--input", bad.to_str().unwrap()]);
    assert_ne!(crash.code(), 0);
    assert!(crash.stderr.contains("SIGSEGV"), "{crash:?}");
    assert!(d.ctl(&["--json", "list"]).json()["modules"].as_array().unwrap().is_empty());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "child reaped");
    d.ctl(&["status"]).ok();
}

#[test]
fn load_seccomp_confines_the_module_and_a_forbidden_call_stops_it() {
    if !host_available() {
        return;
    }
    let echo = kmodlike_testsupport::test_module("invoke_echo", "daemon-invoke_echo", &[]);
    let d = Daemon::start(&[(&echo, "echo.so")], &[]);
    // --seccomp implies --isolated.
    let load = d.ctl(&["load", "--seccomp", "echo"]);
    assert!(load.ok().contains("loaded module echo"), "{load:?}");
    let m = &d.ctl(&["--json", "list"]).json()["modules"][0];
    assert_eq!(m["tier"], "isolated");
    let pid = m["child_pid"].as_u64().expect("a child pid");

    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("in.bin");
    std::fs::write(&input, b"hello confined").unwrap();
    let out = d.ctl(&["invoke", "echo", "echo", "--input", input.to_str().unwrap()]);
    assert_eq!(out.ok(), "hello confined");

    // open("/etc/passwd") is outside the allow-list: the module is stopped, the daemon serves.
    let bad = dir.path().join("cmd");
    std::fs::write(&bad, b"open").unwrap();
    let stopped = d.ctl(&["invoke", "echo", "misbehave", "--input", bad.to_str().unwrap()]);
    assert_ne!(stopped.code(), 0);
    assert!(stopped.stderr.contains("SIGSYS"), "{stopped:?}");
    assert!(stopped.stderr.contains("seccomp"), "{stopped:?}");
    assert!(d.ctl(&["--json", "list"]).json()["modules"].as_array().unwrap().is_empty());
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "child reaped");
    d.ctl(&["status"]).ok();
}
