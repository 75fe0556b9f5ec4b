//! Who may talk to whom: socket mode, SO_PEERCRED on both sides, one daemon per socket, stale
//! sockets, the default socket path rule, and systemd socket activation.

mod common;

use std::ffi::OsString;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixDatagram, UnixListener};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

const NOBODY: u32 = 65534;

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

fn chown(path: &Path, uid: u32) {
    std::os::unix::fs::chown(path, Some(uid), Some(uid)).unwrap();
}

/// kmodctl run as another uid, from a copy in `dir` that uid can reach.
fn ctl_as(uid: u32, dir: &Path, socket: &Path, args: &[&str]) -> Output {
    let program = copy_for_other_uid(dir, &kmodctl_bin(), "kmodctl");
    let mut cmd = Command::new(program);
    cmd.arg("--socket").arg(socket).args(args).env("NO_COLOR", "1").uid(uid).gid(uid);
    run_with_deadline(&mut cmd, CTL_DEADLINE)
}

#[test]
fn socket_file_has_mode_0600() {
    let d = Daemon::start(&[], &[]);
    let mode = std::fs::metadata(&d.socket).unwrap().mode();
    assert_eq!(mode & 0o777, 0o600, "socket mode {mode:o}");
    d.ctl(&["ping"]).ok();
}

#[test]
fn another_uid_is_refused_by_the_mode_and_by_peercred() {
    if !root_or_skip("the other-uid connection test") {
        return;
    }
    // Default mode 0600: the kernel refuses the connect itself.
    let d = Daemon::start(&[], &[]);
    let out = ctl_as(NOBODY, d.dir.path(), &d.socket, &["ping"]);
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(
        out.stderr.contains("permission denied (socket mode 0600: only uid 0 may connect)"),
        "{out:?}"
    );

    // A world-writable socket: the connect succeeds, SO_PEERCRED refuses the caller.
    let mut wide = Daemon::start(&[], &["--socket-mode", "0666"]);
    assert_eq!(std::fs::metadata(&wide.socket).unwrap().mode() & 0o777, 0o666);
    let out = ctl_as(NOBODY, wide.dir.path(), &wide.socket, &["--json", "ping"]);
    assert_eq!(out.code(), 3, "{out:?}");
    assert_eq!(out.json()["error"], "io.kmodlike.Loader.PermissionDenied");
    assert_eq!(out.json()["parameters"]["uid"], NOBODY);
    assert!(out.stderr.contains("refused this connection: uid 65534"), "{out:?}");
    wide.wait_log("refused a connection: permission denied", Duration::from_secs(10));
    // The refusal cost the daemon nothing.
    wide.ctl(&["ping"]).ok();
}

#[test]
fn socket_group_members_may_call() {
    if !root_or_skip("the socket group test") {
        return;
    }
    let d = Daemon::start(&[], &["--socket-group", "65534", "--socket-mode", "0660"]);
    let meta = std::fs::metadata(&d.socket).unwrap();
    assert_eq!((meta.mode() & 0o777, meta.gid()), (0o660, NOBODY));
    let out = ctl_as(NOBODY, d.dir.path(), &d.socket, &["ping"]);
    assert!(out.ok().contains("answers"), "{out:?}");
}

#[test]
fn client_refuses_a_socket_served_by_another_uid() {
    if !root_or_skip("the squatter test") {
        return;
    }
    let dir = Daemon::prepare(&[]);
    let program = copy_for_other_uid(dir.path(), &daemon_bin(), "kmodlike");
    chown(dir.path(), NOBODY);
    let cfg = DaemonConfig { uid: Some(NOBODY), program: Some(program), ..Default::default() };
    let d = Daemon::start_in(dir, cfg);
    assert_eq!(std::fs::metadata(&d.socket).unwrap().uid(), NOBODY);
    let out = d.ctl(&["ping"]);
    assert_eq!(out.code(), 3, "{out:?}");
    assert!(
        out.stderr.contains("served by uid 65534") && out.stderr.contains("nothing was sent"),
        "{out:?}"
    );
}

#[test]
fn second_daemon_on_the_same_socket_is_refused_naming_the_first() {
    let d = Daemon::start(&[], &[]);
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("--socket").arg(&d.socket).arg("--no-probe").env("NO_COLOR", "1");
    cmd.arg("--state-dir").arg(d.dir.path().join("state2"));
    let out = run_with_deadline(&mut cmd, Duration::from_secs(30));
    assert_ne!(out.code(), 0, "{out:?}");
    assert!(out.stderr.contains(&format!("pid {}", d.pid())), "names the running daemon: {out:?}");
    d.ctl(&["ping"]).ok();
    assert!(d.socket.exists(), "the loser did not touch the socket");
}

#[test]
fn stale_socket_and_lock_files_are_replaced() {
    let dir = Daemon::prepare(&[]);
    let socket = dir.path().join("kmodlike.sock");
    // A socket file nobody listens on, and a lock file nobody holds.
    drop(UnixListener::bind(&socket).unwrap());
    std::fs::write(dir.path().join("kmodlike.sock.lock"), "999999\n").unwrap();
    let d = Daemon::start_in(dir, DaemonConfig::default());
    assert!(d.log().contains("replacing a stale socket file"), "{}", d.log());
    d.ctl(&["ping"]).ok();
}

#[test]
fn a_file_that_is_not_a_socket_is_never_replaced() {
    let dir = Daemon::prepare(&[]);
    let socket = dir.path().join("kmodlike.sock");
    std::fs::write(&socket, "precious").unwrap();
    let mut cmd = Command::new(daemon_bin());
    cmd.arg("--socket").arg(&socket).arg("--no-probe");
    cmd.arg("--state-dir").arg(dir.path().join("state"));
    let out = run_with_deadline(&mut cmd, Duration::from_secs(30));
    assert_ne!(out.code(), 0);
    assert!(out.stderr.contains("not a socket"), "{out:?}");
    assert_eq!(std::fs::read_to_string(&socket).unwrap(), "precious");
}

/// A copy of the daemon named `name` in `dir` (the socket is named after the program).
fn renamed_daemon(dir: &Path, name: &str) -> PathBuf {
    copy_for_other_uid(dir, &daemon_bin(), name)
}

fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    format!("{prefix}-{}-{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed))
}

#[test]
fn default_socket_is_in_the_run_dir_named_after_the_program() {
    let dir = Daemon::prepare(&[]);
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let name = unique("foo");
    let program = renamed_daemon(dir.path(), &name);
    let cfg = DaemonConfig {
        program: Some(program),
        with_socket: false,
        env: vec![("KMODLIKE_RUNDIR_FOR_TESTS".into(), run.clone().into())],
        ..Default::default()
    };
    let mut d = Daemon::start_in(dir, cfg);
    let expected = run.join(format!("{name}.sock"));
    assert!(d.log().contains(&format!("socket={}", expected.display())), "{}", d.log());
    d.socket = expected.clone();
    d.ctl(&["ping"]).ok();
    assert_eq!(d.terminate().code(), Some(0));
    assert!(!expected.exists());
}

#[test]
fn kmodlike_socket_variable_names_the_socket() {
    let dir = Daemon::prepare(&[]);
    let env_socket = dir.path().join("from-env.sock");
    let cfg = DaemonConfig {
        with_socket: false,
        env: vec![("KMODLIKE_SOCKET".into(), env_socket.clone().into())],
        ..Default::default()
    };
    let mut d = Daemon::start_in(dir, cfg);
    assert!(d.log().contains("from KMODLIKE_SOCKET"), "{}", d.log());
    d.socket = env_socket;
    d.ctl(&["ping"]).ok();
}

#[test]
fn default_socket_falls_back_to_tmp_when_the_run_dir_is_not_writable() {
    let dir = Daemon::prepare(&[]);
    chmod(dir.path(), 0o755);
    let run = dir.path().join("run");
    std::fs::create_dir(&run).unwrap();
    let name = unique("kmodlike-fallback");
    let program = renamed_daemon(dir.path(), &name);
    // Root writes anywhere: the daemon runs as nobody, for whom the root-owned 0755 run dir is
    // not writable. Others are not root: a 0555 run dir is not writable for them either.
    let uid = if kmodlike_testsupport::is_root() {
        chmod(&run, 0o755);
        Some(NOBODY)
    } else {
        chmod(&run, 0o555);
        None
    };
    let env: Vec<(OsString, OsString)> =
        vec![("KMODLIKE_RUNDIR_FOR_TESTS".into(), run.clone().into())];
    let cfg =
        DaemonConfig { program: Some(program), with_socket: false, env, uid, ..Default::default() };
    let mut d = Daemon::start_in(dir, cfg);
    let expected = PathBuf::from(format!("/tmp/{name}.sock"));
    let log = d.log();
    assert!(log.contains(&format!("socket={}", expected.display())), "{log}");
    assert!(log.contains("fallback"), "{log}");
    assert!(expected.exists());
    assert_eq!(d.terminate().code(), Some(0), "{}", d.log());
    assert!(!expected.exists(), "removed at exit");
    assert!(!PathBuf::from(format!("/tmp/{name}.sock.lock")).exists());
}

#[test]
fn socket_activation_and_ready_notification() {
    let dir = Daemon::prepare(&[]);
    let socket = dir.path().join("activated.sock");
    let listener = UnixListener::bind(&socket).unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(30))).unwrap();

    let mut cmd = Command::new("/bin/sh");
    // LISTEN_PID must be the daemon's own pid: the shell's, which exec keeps.
    cmd.arg("-c")
        .arg("LISTEN_PID=$$ LISTEN_FDS=1 exec \"$0\" \"$@\"")
        .arg(daemon_bin())
        .arg("--no-probe")
        .env("NOTIFY_SOCKET", &notify_path)
        .env("NO_COLOR", "1")
        .env_remove("KMODLIKE_SOCKET");
    let fd = listener.as_raw_fd();
    // SAFETY: between fork and exec only dup2 and fcntl run, which are async-signal-safe; they
    // put the listening socket at descriptor 3 (SD_LISTEN_FDS_START) without close-on-exec
    // (dup2 onto itself would keep the flag, hence the fcntl when it is already 3).
    unsafe {
        cmd.pre_exec(move || {
            let rc = if fd == 3 { libc::fcntl(3, libc::F_SETFD, 0) } else { libc::dup2(fd, 3) };
            if rc < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let modules = dir.path().join("modules");
    let mut d = Daemon::spawn(cmd, dir, socket.clone(), modules);
    drop(listener);

    let mut buf = [0u8; 512];
    let n = notify.recv(&mut buf).expect("a notification from the daemon");
    let msg = String::from_utf8_lossy(&buf[..n]);
    assert!(msg.lines().any(|l| l == "READY=1"), "{msg:?}");
    d.wait_log("serving the socket passed by systemd", Duration::from_secs(10));
    d.ctl(&["ping"]).ok();
    assert_eq!(d.terminate().code(), Some(0), "{}", d.log());
    assert!(socket.exists(), "systemd owns an activated socket: the daemon leaves it");
}

#[test]
fn contrib_units_set_the_socket_mode_and_notify_explicitly() {
    let contrib = kmodlike_testsupport::workspace_root().join("contrib");
    let socket_unit = std::fs::read_to_string(contrib.join("kmodlike.socket")).unwrap();
    assert!(socket_unit.lines().any(|l| l == "SocketMode=0600"), "{socket_unit}");
    assert!(socket_unit.lines().any(|l| l.starts_with("ListenStream=/")), "{socket_unit}");
    let service = std::fs::read_to_string(contrib.join("kmodlike.service")).unwrap();
    assert!(service.lines().any(|l| l == "Type=notify"), "READY=1 is sent: {service}");
    assert!(service.lines().any(|l| l.starts_with("ExecStart=") && l.contains("kmodlike")));
}
