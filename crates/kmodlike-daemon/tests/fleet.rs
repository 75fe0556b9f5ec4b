//! Fleets: `kmodctl bridge` joins stdin/stdout to the daemon (driven raw, and by the PyPI
//! varlink client's `--bridge`), and `kmodctl --host` runs its request over `ssh HOST kmodctl
//! bridge` (a fake `ssh` on PATH runs the command locally and records the host it was given).

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;
use serde_json::{json, Value};

#[test]
fn bridge_passes_pipelined_requests_and_ends_when_its_input_does() {
    let d = Daemon::start(&[], &[]);
    let mut child = Command::new(kmodctl_bin())
        .arg("--socket")
        .arg(&d.socket)
        .arg("bridge")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    for method in ["io.kmodlike.Loader.Ping", "io.kmodlike.Loader.List"] {
        stdin.write_all(json!({ "method": method }).to_string().as_bytes()).unwrap();
        stdin.write_all(b"\0").unwrap();
    }
    drop(stdin);
    let mut out = Vec::new();
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    let status = wait_deadline(&mut child, CTL_DEADLINE).expect("the bridge ends");
    assert!(status.success(), "{status}");
    let replies: Vec<Value> = out
        .split(|&b| b == 0)
        .filter(|m| !m.is_empty())
        .map(|m| serde_json::from_slice(m).unwrap())
        .collect();
    assert_eq!(replies.len(), 2, "{replies:?}");
    assert_eq!(replies[0]["parameters"]["pid"], d.pid());
    assert_eq!(replies[1]["parameters"]["modules"], json!([]));
}

#[test]
fn bridge_to_a_missing_socket_fails_with_exit_3() {
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(kmodctl_bin());
    cmd.arg("--socket").arg(dir.path().join("none.sock")).arg("bridge");
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(out.stderr.contains("cannot reach the daemon"), "{out:?}");
}

#[test]
fn the_pypi_varlink_client_uses_kmodctl_bridge() {
    let Some(py) = varlink_python() else { return };
    let hello = hello_module();
    let d = Daemon::start(&[(&hello, "hello.so")], &[]);
    let bridge = format!("{} --socket {} bridge", kmodctl_bin().display(), d.socket.display());
    let call = |method: &str, params: Value| {
        let mut cmd = Command::new(&py);
        cmd.args(["-m", "varlink.cli", "--bridge", &bridge, "call"])
            .arg(format!("io.kmodlike.Loader.{method}"))
            .arg(params.to_string());
        run_with_deadline(&mut cmd, CTL_DEADLINE)
    };
    let out = call("Load", json!({ "spec": "hello" }));
    assert!(out.stderr.is_empty(), "{out:?}");
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap()["module"]["name"], "hello");
    let out = call("List", json!({}));
    assert_eq!(serde_json::from_str::<Value>(&out.stdout).unwrap()["modules"][0]["name"], "hello");
}

/// A directory with a fake `ssh` that records its host argument in `<dir>/hosts` and runs the
/// remote command here, and `kmodctl` (the "remote" one) next to it.
fn fake_ssh() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    let script = format!(
        "#!/bin/sh\n\
         # ssh [options] -- HOST COMMAND...: skip options, record HOST, run COMMAND here.\n\
         while [ \"$1\" != \"--\" ]; do shift; done; shift\n\
         echo \"$1\" >> {hosts}\n\
         case \"$1\" in unreachable*) echo \"ssh: Could not resolve hostname $1\" >&2; exit 255;; esac\n\
         shift\n\
         exec \"$@\"\n",
        hosts = hosts.display()
    );
    let ssh = dir.path().join("ssh");
    std::fs::write(&ssh, script).unwrap();
    std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::os::unix::fs::symlink(kmodctl_bin(), dir.path().join("kmodctl")).unwrap();
    (dir, hosts)
}

fn ctl_via(bin_dir: &Path, args: &[&str]) -> Output {
    let path = format!("{}:{}", bin_dir.display(), std::env::var("PATH").unwrap_or_default());
    let mut cmd = Command::new(kmodctl_bin());
    cmd.args(args).env("PATH", path).env_remove("KMODCTL_SSH");
    run_with_deadline(&mut cmd, CTL_DEADLINE)
}

#[test]
fn host_runs_each_command_over_ssh_and_the_bridge() {
    let hello = hello_module();
    let mut d = Daemon::start(&[(&hello, "hello.so")], &[]);
    let (bin, hosts) = fake_ssh();
    let socket = d.socket.to_str().unwrap().to_owned();
    let remote = ["--host", "ops@web1", "--socket", &socket];

    let out = ctl_via(bin.path(), &[&remote[..], &["load", "hello"]].concat());
    assert!(out.ok().contains("loaded module hello"), "{out:?}");
    d.wait_log("Hello from the kmodlike example module!", CTL_DEADLINE);
    let list = ctl_via(bin.path(), &[&remote[..], &["--json", "list"]].concat()).json();
    assert_eq!(list["modules"][0]["name"], "hello");
    let out = ctl_via(bin.path(), &[&remote[..], &["call", "hello", "mod_hello"]].concat());
    assert_eq!(out.ok(), "hello: mod_hello() returned\n");
    // An error reply comes back like a local one (exit 1, the message).
    let out = ctl_via(bin.path(), &[&remote[..], &["unload", "nosuch"]].concat());
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("module nosuch is not loaded"), "{out:?}");
    assert_eq!(std::fs::read_to_string(&hosts).unwrap(), "ops@web1\n".repeat(4));

    // The audit line names the bridge's caller: the remote kmodctl.
    assert!(d.log().contains("request Load hello by uid "), "{}", d.log());

    // An unreachable host: ssh's own message, and exit 3 (the daemon cannot be used).
    let out = ctl_via(bin.path(), &["--host", "unreachable.example", "list"]);
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(out.stderr.contains("Could not resolve hostname unreachable.example"), "{out:?}");
    assert!(out.stderr.contains("ssh://unreachable.example"), "{out:?}");
}
