//! Module trust through the daemon: untrusted paths and their override, signatures under warn
//! and enforce with `kmodctl info` naming the signer, the policy that cannot be lowered, the
//! socket group's access level, and a lock file planted by another user.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use kmodlike_testsupport::SigningKey;

const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A copy of kmodctl in `dir` that another uid can run wherever the checkout lives.
fn ctl_copy(dir: &Path) -> PathBuf {
    let bin = dir.join("kmodctl");
    std::fs::copy(kmodctl_bin(), &bin).unwrap();
    chmod(&bin, 0o755);
    bin
}

/// `ctl` run as another uid.
fn ctl_as(ctl: &Path, uid: u32, socket: &Path, args: &[&str]) -> Output {
    let mut cmd = Command::new(ctl);
    cmd.arg("--socket").arg(socket).args(args).env("NO_COLOR", "1").uid(uid).gid(uid);
    run_with_deadline(&mut cmd, CTL_DEADLINE)
}

/// A key directory in `dir` trusting a fresh key.
fn keys_in(dir: &Path) -> (PathBuf, SigningKey) {
    let keys = dir.join("keys");
    std::fs::create_dir(&keys).unwrap();
    chmod(&keys, 0o755);
    let key = SigningKey::generate();
    key.write_pub(&keys, "vendor");
    (keys, key)
}

#[test]
fn enforce_loads_signed_modules_names_the_signer_and_refuses_unsigned_ones() {
    let dir = Daemon::prepare(&[(&hello_module(), "hello.so"), (&hello_module(), "other.so")]);
    let (keys, key) = keys_in(dir.path());
    let misc = dir.path().join("modules/misc");
    key.sign(&misc.join("hello.so"), "timestamp:1 file:hello.so release 7");
    let args = ["--trusted-keys", keys.to_str().unwrap(), "--signature-policy", "enforce"];
    let cfg = DaemonConfig { args: args.iter().map(Into::into).collect(), ..Default::default() };
    let d = Daemon::start_in(dir, cfg);

    d.ctl(&["load", "misc/hello"]).ok();
    let info = d.ctl(&["info", "hello"]);
    assert!(info.ok().contains(&format!("signed by key {}", key.id())), "{info:?}");
    assert!(
        info.stdout.contains("trusted comment: timestamp:1 file:hello.so release 7"),
        "{info:?}"
    );
    let json = d.ctl(&["--json", "info", "hello"]).json();
    assert_eq!(json["loaded"]["signature"], "signed");
    assert_eq!(json["loaded"]["signer_key_id"], key.id());

    let out = d.ctl(&["--json", "load", "misc/other"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.json()["error"], "io.kmodlike.Loader.LoadFailed");
    assert_eq!(out.json()["parameters"]["kind"], "Signature");
    let out = d.ctl(&["load", "misc/other"]);
    assert!(out.stderr.contains("has no signature") && out.stderr.contains("other.so"), "{out:?}");
    assert!(d.ctl(&["status"]).ok().contains("policy enforce"));

    // Enforce stays on.
    let out = d.ctl(&["signature-policy", "warn"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains("cannot be turned warn"), "{out:?}");
    assert!(d.ctl(&["status"]).ok().contains("policy enforce"));
}

#[test]
fn warn_loads_an_unsigned_module_marks_it_in_list_and_taints() {
    let dir = Daemon::prepare(&[(&hello_module(), "hello.so")]);
    let (keys, _key) = keys_in(dir.path());
    let args = ["--trusted-keys", keys.to_str().unwrap()];
    let cfg = DaemonConfig { args: args.iter().map(Into::into).collect(), ..Default::default() };
    let mut d = Daemon::start_in(dir, cfg);
    // The key directory exists: the default policy is warn.
    assert!(d.ctl(&["status"]).ok().contains("policy warn"));
    d.ctl(&["load", "misc/hello"]).ok();
    let list = d.ctl(&["list"]);
    assert!(
        list.ok().lines().any(|l| l.starts_with("hello") && l.ends_with("(unsigned)")),
        "{list:?}"
    );
    let info = d.ctl(&["info", "hello"]);
    assert!(info.ok().contains("UNSIGNED: it has no signature"), "{info:?}");
    d.wait_log("module hello loaded UNSIGNED (policy warn): it has no signature", START_DEADLINE);
    let status = d.ctl(&["--json", "status"]).json();
    assert!(
        status["taint"]["reason"].as_str().unwrap().starts_with("unsigned module: "),
        "{status}"
    );
    // The policy rises at run time.
    assert!(d.ctl(&["signature-policy", "enforce"]).ok().contains("enforce"));
    d.ctl(&["unload", "hello"]).ok();
    assert_eq!(d.ctl(&["load", "misc/hello"]).code(), 1);
}

#[test]
fn an_untrusted_module_path_is_refused_unless_allowed() {
    let dir = Daemon::prepare(&[(&hello_module(), "hello.so")]);
    let misc = dir.path().join("modules/misc");
    chmod(&misc, 0o777);
    let d = Daemon::start_in(dir, DaemonConfig::default());
    let out = d.ctl(&["--json", "load", "misc/hello"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert_eq!(out.json()["parameters"]["kind"], "Untrusted");
    let message = out.json()["parameters"]["message"].as_str().unwrap().to_owned();
    assert!(message.contains(&format!("{} (owner uid 0, mode 0777)", misc.display())), "{message}");
    assert!(message.contains("--allow-untrusted-paths"), "{message}");
    drop(d);

    let dir = Daemon::prepare(&[(&hello_module(), "hello.so")]);
    chmod(&dir.path().join("modules/misc"), 0o777);
    let cfg = DaemonConfig { args: vec!["--allow-untrusted-paths".into()], ..Default::default() };
    let d = Daemon::start_in(dir, cfg);
    d.ctl(&["load", "misc/hello"]).ok();
    let list = d.ctl(&["list"]);
    assert!(list.ok().contains("(untrusted path)"), "{list:?}");
    let status = d.ctl(&["--json", "status"]).json();
    assert!(status["taint"]["reason"].as_str().unwrap().starts_with("untrusted path: "));
}

#[test]
fn a_socket_group_member_may_list_and_call_but_not_load() {
    if !root_or_skip("the socket group access test") {
        return;
    }
    let dir = Daemon::prepare(&[(&hello_module(), "hello.so")]);
    let ctl = ctl_copy(dir.path());
    let args = ["--socket-group", "65534", "--socket-mode", "0660", "misc/hello"];
    let cfg = DaemonConfig { args: args.iter().map(Into::into).collect(), ..Default::default() };
    let mut d = Daemon::start_in(dir, cfg);
    chmod(d.dir.path(), 0o755);

    assert!(ctl_as(&ctl, NOBODY, &d.socket, &["list"]).ok().contains("hello"));
    ctl_as(&ctl, NOBODY, &d.socket, &["call", "hello", "mod_hello"]).ok();
    for args in [
        &["load", "misc/hello"][..],
        &["unload", "hello"],
        &["reload", "hello"],
        &["path", "--set", "/tmp"],
        &["signature-policy", "enforce"],
    ] {
        let out = ctl_as(&ctl, NOBODY, &d.socket, args);
        assert_eq!(out.code(), 1, "{args:?}: {out:?}");
        assert!(out.stderr.contains("--socket-group-may-load"), "{args:?}: {out:?}");
    }
    let out = ctl_as(&ctl, NOBODY, &d.socket, &["--json", "unload", "hello"]);
    assert_eq!(out.json()["error"], "io.kmodlike.Loader.NotPermitted");
    assert_eq!(out.json()["parameters"]["method"], "Unload");
    d.wait_log("refused: the socket group may not change", Duration::from_secs(10));
    // Still loaded, and root may unload it.
    d.ctl(&["unload", "hello"]).ok();
}

#[test]
fn socket_group_may_load_lets_the_group_load() {
    if !root_or_skip("the socket group access test") {
        return;
    }
    let dir = Daemon::prepare(&[(&hello_module(), "hello.so")]);
    let ctl = ctl_copy(dir.path());
    let args = ["--socket-group", "65534", "--socket-mode", "0660", "--socket-group-may-load"];
    let cfg = DaemonConfig { args: args.iter().map(Into::into).collect(), ..Default::default() };
    let d = Daemon::start_in(dir, cfg);
    chmod(d.dir.path(), 0o755);
    ctl_as(&ctl, NOBODY, &d.socket, &["load", "misc/hello"]).ok();
    ctl_as(&ctl, NOBODY, &d.socket, &["unload", "hello"]).ok();
}

#[test]
fn a_lock_file_planted_by_another_user_is_refused_naming_the_owner() {
    if !root_or_skip("the foreign lock file test") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    chmod(dir.path(), 0o1777);
    let socket = dir.path().join("kmodlike.sock");
    let lock = dir.path().join("kmodlike.sock.lock");
    std::fs::write(&lock, "").unwrap();
    std::os::unix::fs::chown(&lock, Some(NOBODY), Some(NOBODY)).unwrap();
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("--socket").arg(&socket).arg("--no-probe").env("NO_COLOR", "1");
    let out = run_with_deadline(&mut cmd, Duration::from_secs(30));
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains(&lock.display().to_string()), "{out:?}");
    assert!(out.stderr.contains("(uid 65534)") && out.stderr.contains("--socket"), "{out:?}");
    assert!(!socket.exists(), "no socket was made");
    assert!(lock.exists(), "another user's file is left alone");
}

#[test]
fn the_revocation_list_refuses_a_module_by_digest() {
    let dir = Daemon::prepare(&[(&hello_module(), "hello.so")]);
    let data = std::fs::read(dir.path().join("modules/misc/hello.so")).unwrap();
    let out = Command::new("sha256sum").arg(dir.path().join("modules/misc/hello.so")).output();
    let digest = String::from_utf8(out.unwrap().stdout).unwrap();
    let digest = digest.split_whitespace().next().unwrap().to_owned();
    assert_eq!(digest.len(), 64, "{} bytes hashed", data.len());
    let revoked = dir.path().join("revoked");
    std::fs::write(&revoked, format!("{digest}\n")).unwrap();
    let args = ["--revoked", revoked.to_str().unwrap()];
    let cfg = DaemonConfig { args: args.iter().map(Into::into).collect(), ..Default::default() };
    let d = Daemon::start_in(dir, cfg);
    let out = d.ctl(&["load", "misc/hello"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains(&digest) && out.stderr.contains("revocation list"), "{out:?}");
}
