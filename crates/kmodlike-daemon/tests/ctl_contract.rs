//! kmodctl's contract with scripts and terminals: it never panics on a closed or full stdout,
//! resolves relative paths itself, says precisely why a socket cannot be used, prints JSON for
//! every outcome with --json, and filters and timestamps crashes and events.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::*;

const LOG_WAIT: Duration = Duration::from_secs(10);

fn ctl_cmd(d: &Daemon, args: &[&str]) -> Command {
    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("--socket").arg(&d.socket).args(args).env("NO_COLOR", "1");
    cmd
}

/// `kmodctl ... | head -0`: the reader is gone before kmodctl writes a byte.
#[test]
fn a_closed_stdout_ends_quietly_with_exit_0() {
    let hello = hello_module();
    let d = Daemon::start(&[(&hello, "hello.so")], &["hello"]);
    for args in [&["list"][..], &["--json", "list"], &["describe"], &["info", "hello"]] {
        let (read_end, write_end) = rustix::pipe::pipe().unwrap();
        drop(read_end);
        let mut cmd = ctl_cmd(&d, args);
        cmd.stdin(Stdio::null()).stdout(write_end).stderr(Stdio::piped());
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {stderr}");
        assert!(stderr.is_empty(), "{args:?} said something: {stderr}");
    }
    d.ctl(&["ping"]).ok();
}

/// `kmodctl list > /dev/full`: one line naming the cause, exit 1, no panic.
#[test]
fn a_full_stdout_is_one_line_and_exit_1() {
    let hello = hello_module();
    let d = Daemon::start(&[(&hello, "hello.so")], &["hello"]);
    for args in [&["list"][..], &["--json", "status"]] {
        let full = std::fs::OpenOptions::new().write(true).open("/dev/full").unwrap();
        let mut cmd = ctl_cmd(&d, args);
        cmd.stdin(Stdio::null()).stdout(full).stderr(Stdio::piped());
        let out = cmd.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert_eq!(
            stderr.trim_end(),
            "kmodctl: cannot write to standard output: No space left on device (os error 28)",
            "{args:?}"
        );
    }
}

#[test]
fn relative_paths_are_resolved_against_the_callers_directory() {
    let plain = crash_module("relplain", 0, &[]);
    let d = Daemon::start(&[], &[]);
    let here = tempfile::tempdir().unwrap();
    std::fs::create_dir(here.path().join("sub")).unwrap();
    let file = here.path().join("sub/relplain.so");
    std::fs::copy(&plain, &file).unwrap();

    let mut cmd = ctl_cmd(&d, &["info", "sub/relplain.so"]);
    cmd.current_dir(here.path());
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert!(out.ok().contains("filename:"), "{out:?}");
    assert!(out.stdout.contains(&here.path().join("sub/relplain.so").display().to_string()));

    let mut cmd = ctl_cmd(&d, &["load", "./relplain.so"]);
    cmd.current_dir(here.path().join("sub"));
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert_eq!(
        out.ok(),
        format!(
            "loaded module relplain from {}\n",
            here.path().join("sub/./relplain.so").display()
        )
    );
    assert_eq!(d.ctl(&["--json", "list"]).json()["modules"][0]["name"], "relplain");
}

#[test]
fn a_regular_file_as_socket_is_named_not_a_socket_in_text_and_json() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("not-a-socket");
    std::fs::write(&file, "x").unwrap();
    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("--socket").arg(&file).arg("ping").env("NO_COLOR", "1");
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(
        out.stderr.contains(&format!(
            "cannot reach the daemon at {}: not a socket (a regular file)",
            file.display()
        )),
        "{out:?}"
    );

    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("--socket").arg(&file).args(["--json", "ping"]);
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert_eq!(out.code(), 3, "{out:?}");
    let j = out.json();
    assert_eq!(j["error"], "kmodctl.NotASocket");
    assert_eq!(j["parameters"]["socket"], file.display().to_string());
    assert!(j["message"].as_str().unwrap().contains("not a socket"), "{j}");
}

#[test]
fn json_is_printed_for_every_outcome() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.sock");
    // The daemon is not there.
    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("--socket").arg(&missing).args(["--json", "list"]);
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert_eq!(out.code(), 3, "{out:?}");
    assert_eq!(out.json()["error"], "kmodctl.Unreachable");

    // A usage error clap finds.
    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("--socket").arg(&missing).args(["--json", "frobnicate"]);
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert_eq!(out.code(), 2, "{out:?}");
    assert_eq!(out.json()["error"], "kmodctl.UsageError");
    assert!(out.json()["message"].as_str().unwrap().contains("frobnicate"), "{out:?}");
    assert!(out.stderr.contains("frobnicate"), "clap's message stays on stderr: {out:?}");
    // --help stays help.
    let mut cmd = Command::new(kmodctl_bin());
    cmd.args(["--json", "--help"]);
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert!(out.ok().contains("Usage:"), "{out:?}");

    let d = Daemon::start(&[], &[]);
    // A usage error found after parsing.
    let out = d.ctl(&["--json", "call", "m", "f", "--arg", "1", "--returns", "void"]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert_eq!(out.json()["error"], "kmodctl.UsageError");
    let out = d.ctl(&["--json", "crashes", "--since", "last tuesday"]);
    assert_eq!(out.code(), 2, "{out:?}");
    assert!(out.json()["message"].as_str().unwrap().contains("--since"), "{out:?}");
    // An error reply.
    let out = d.ctl(&["--json", "unload", "nosuch"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.json()["error"].as_str().unwrap().starts_with("io.kmodlike.Loader."), "{out:?}");
    assert!(out.json()["message"].as_str().unwrap().contains("nosuch"), "{out:?}");
}

#[test]
fn crashes_filter_by_module_and_time_and_show_rfc3339_off_a_terminal() {
    let a = crash_module("crash_a", libc::SIGSEGV, &[]);
    let b = crash_module("crash_b", libc::SIGFPE, &[]);
    let d = Daemon::start(&[(&a, "crash_a.so"), (&b, "crash_b.so")], &[]);
    for m in ["crash_a", "crash_b"] {
        d.ctl(&["load", m]).ok();
        assert_eq!(d.ctl(&["call", m, "crash"]).code(), 1);
    }
    let only_a = d.ctl(&["crashes", "--module", "crash_a"]);
    let text = only_a.ok();
    assert!(text.contains("crash_a") && !text.contains("crash_b"), "{text}");
    let time_line = text.lines().find(|l| l.starts_with("  time:")).expect("a time line");
    let stamp = time_line.trim_start_matches("  time:").trim();
    assert!(is_rfc3339(stamp), "{time_line}");

    let j = d.ctl(&["--json", "crashes", "--since", "1h"]).json();
    assert_eq!(j["crashes"].as_array().unwrap().len(), 2, "{j}");
    let j = d.ctl(&["--json", "crashes", "--module", "crash_b", "--since", stamp]).json();
    assert_eq!(j["crashes"].as_array().unwrap().len(), 1, "{j}");
    assert_eq!(j["crashes"][0]["module"], "crash_b");
    let none = d.ctl(&["crashes", "--since", "2999-01-01T00:00:00Z"]);
    assert_eq!(none.ok(), "no crashes in that time\n");
}

fn is_rfc3339(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
        && s.starts_with("20")
}

#[test]
fn monitor_lines_start_with_an_rfc3339_time_off_a_terminal() {
    let plain = crash_module("monplain", 0, &[]);
    let d = Daemon::start(&[(&plain, "monplain.so")], &[]);
    let mut child = ctl_cmd(&d, &["monitor", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(("out", line));
        }
    });
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx2.send(("err", line));
        }
    });
    // Subscribed: the stream's start is announced on stderr.
    let (from, first) = rx.recv_timeout(LOG_WAIT).expect("the monitor's start");
    assert_eq!(from, "err");
    assert!(first.starts_with("kmodctl: monitoring the events of "), "{first}");
    d.ctl(&["load", "monplain"]).ok();
    let (from, line) = rx.recv_timeout(LOG_WAIT).expect("the load event");
    assert_eq!(from, "out", "{line}");
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert!(is_rfc3339(stamp), "{line}");
    assert!(rest.starts_with("loaded   monplain from "), "{line}");
    assert_eq!(wait_deadline(&mut child, LOG_WAIT).and_then(|s| s.code()), Some(0));
}

/// The generated bash completion offers the loaded modules' names (it runs the real kmodctl,
/// found on PATH, against the real daemon).
#[test]
fn bash_completion_offers_loaded_module_names() {
    let bash = std::path::PathBuf::from("/bin/bash");
    if !require_tool(&bash, "apt-get install bash") {
        return;
    }
    let plain = crash_module("complete_me", 0, &[]);
    let d = Daemon::start(&[(&plain, "complete_me.so")], &["complete_me"]);
    let share = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("generate").arg("--out").arg(share.path());
    run_with_deadline(&mut cmd, CTL_DEADLINE).ok();
    let script = share.path().join("bash-completion/completions/kmodctl");
    let socket = d.socket.display().to_string();
    let complete = |words: &[&str]| {
        let quoted: Vec<String> = words.iter().map(|w| format!("'{w}'")).collect();
        let program = format!(
            "source '{}'; COMP_WORDS=({}); COMP_CWORD={}; COMP_LINE=\"${{COMP_WORDS[*]}}\"; \
             COMP_POINT=${{#COMP_LINE}}; _kmodctl_with_modules kmodctl '{}' '{}'; \
             printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            script.display(),
            quoted.join(" "),
            words.len() - 1,
            words[words.len() - 1],
            words[words.len() - 2],
        );
        let path = format!(
            "{}:{}",
            kmodctl_bin().parent().unwrap().display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let mut cmd = Command::new(&bash);
        cmd.arg("-c").arg(program).env("PATH", path);
        run_with_deadline(&mut cmd, CTL_DEADLINE).ok().to_owned()
    };
    assert_eq!(complete(&["kmodctl", "--socket", &socket, "unload", ""]), "complete_me\n");
    assert_eq!(complete(&["kmodctl", "--socket", &socket, "call", "comp"]), "complete_me\n");
    assert_eq!(
        complete(&["kmodctl", "--socket", &socket, "crashes", "--module", ""]),
        "complete_me\n"
    );
    // The second argument of call is a symbol, not a module.
    assert!(!complete(&["kmodctl", "--socket", &socket, "call", "complete_me", ""])
        .contains("complete_me"));
}

#[test]
fn after_a_crash_the_name_still_leads_to_the_module() {
    let segv = crash_module("after_crash", libc::SIGSEGV, &[]);
    let d = Daemon::start(&[(&segv, "after_crash.so")], &["after_crash"]);
    let path = d.modules.join("misc/after_crash.so").display().to_string();
    assert_eq!(d.ctl(&["call", "after_crash", "crash"]).code(), 1);

    // call: the reason names the crash and the way back.
    let out = d.ctl(&["call", "after_crash", "crash"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr.contains("module after_crash is not loaded: it crashed with SIGSEGV")
            && out.stderr.contains("`kmodctl reload after_crash` loads"),
        "{out:?}"
    );
    let j = d.ctl(&["--json", "call", "after_crash", "crash"]).json();
    assert!(j["parameters"]["reason"].as_str().unwrap().contains("SIGSEGV"), "{j}");
    let out = d.ctl(&["unload", "after_crash"]);
    assert!(out.stderr.contains("it crashed with SIGSEGV"), "{out:?}");

    // info NAME: the name, the state, the last crash, and the file.
    let info = d.ctl(&["info", "after_crash"]);
    let text = info.ok();
    assert!(text.contains("crashed (not loaded)"), "{text}");
    assert!(
        text.contains("last crash:") && text.contains("SIGSEGV (SEGV_MAPERR) in call"),
        "{text}"
    );
    assert!(text.contains(&format!("filename:   {path}")) || text.contains(&path), "{text}");

    // reload NAME: from the recorded path.
    let out = d.ctl(&["reload", "after_crash"]);
    assert!(out.ok().starts_with(&format!("reloaded module after_crash from {path}")), "{out:?}");
    let list = d.ctl(&["--json", "list"]).json();
    assert_eq!(list["modules"][0]["name"], "after_crash");
    assert_eq!(list["modules"][0]["state"], "live");
}

#[test]
fn info_on_a_file_that_is_not_a_module_says_why() {
    let d = Daemon::start(&[], &[]);
    let out = d.ctl(&["info", "/etc/passwd"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(
        out.stderr.starts_with("kmodctl: /etc/passwd is not a module file: not an ELF file"),
        "{out:?}"
    );
    assert!(!out.stderr.contains("cannot load"), "{out:?}");
    let out = d.ctl(&["info", "/etc"]);
    assert!(out.stderr.contains("/etc is not a module file: not a regular file"), "{out:?}");
}
