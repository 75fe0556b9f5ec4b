//! Modules written with the SDK, hosted by the daemon (`kmodlike`) and driven with `kmodctl`:
//! hello-rs greets through the daemon's log, and a panic in an export is contained while the
//! daemon keeps serving.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{cargo_build, example_module, hello_rs_so, install, profile_dir, run, temp_dir};

const LIMIT: Duration = Duration::from_secs(30);

/// A daemon on a private socket, stopped with SIGTERM when dropped.
struct Daemon {
    child: Child,
    socket: PathBuf,
    stderr: PathBuf,
}

impl Daemon {
    fn start(dir: &Path) -> Daemon {
        cargo_build("kmodlike-daemon");
        let socket = dir.join("kmodlike.sock");
        let stderr = dir.join("daemon.err");
        let child = Command::new(profile_dir().join("kmodlike"))
            .arg("--socket")
            .arg(&socket)
            .arg("--module-path")
            .arg(dir.join("modules"))
            // Its own crash log and taint history: the default, /var/lib/kmodlike, is shared
            // by every daemon on the machine, so another test's crashes would show here.
            .arg("--state-dir")
            .arg(dir.join("state"))
            .env_remove("KMODLIKE_SOCKET")
            .env("RUST_BACKTRACE", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&stderr).expect("daemon.err"))
            .spawn()
            .expect("start kmodlike");
        let daemon = Daemon { child, socket, stderr };
        let deadline = Instant::now() + LIMIT;
        while !daemon.ctl(&["ping"]).0 {
            assert!(Instant::now() < deadline, "the daemon did not answer:\n{}", daemon.log());
            std::thread::sleep(Duration::from_millis(50));
        }
        daemon
    }

    /// Run `kmodctl` against this daemon: (exit 0?, stdout then stderr).
    fn ctl(&self, args: &[&str]) -> (bool, String) {
        let out = run(
            Command::new(profile_dir().join("kmodctl"))
                .arg("--socket")
                .arg(&self.socket)
                .args(args),
            LIMIT,
        );
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    /// Run `kmodctl`, which must succeed; its output.
    fn ctl_ok(&self, args: &[&str]) -> String {
        let (ok, out) = self.ctl(args);
        assert!(ok, "kmodctl {args:?} failed: {out}\ndaemon log:\n{}", self.log());
        out
    }

    /// What the daemon logged so far (modules' log messages included).
    fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Wait for a line of the daemon's log containing every one of `needles`.
    fn wait_for_log(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + LIMIT;
        loop {
            let log = self.log();
            if let Some(line) = log.lines().find(|l| needles.iter().all(|n| l.contains(n))) {
                return line.to_owned();
            }
            assert!(Instant::now() < deadline, "no log line with {needles:?} in:\n{log}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the pid of our own child, which we have not reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + LIMIT;
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn hello_rs_greets_through_the_daemons_log() {
    let dir = temp_dir();
    install(&hello_rs_so(), dir.path(), "modules/misc/hello-rs.so");
    let daemon = Daemon::start(dir.path());

    daemon.ctl_ok(&["load", "misc/hello-rs", "--no-hello"]);
    daemon.wait_for_log(&["module initializing", "hello-rs"]);
    let out = daemon.ctl_ok(&["call", "hello-rs", "mod_hello"]);
    assert!(out.contains("mod_hello"), "{out}");
    daemon.wait_for_log(&["Hello from the kmodlike example module, written in Rust!", "hello-rs"]);
    let info = daemon.ctl_ok(&["info", "hello-rs"]);
    assert!(info.contains("The kmodlike example module in Rust"), "{info}");
    daemon.ctl_ok(&["unload", "hello-rs"]);
    daemon.wait_for_log(&["module finalizing", "hello-rs"]);
}

#[test]
fn a_panic_in_an_export_called_through_the_daemon_is_contained() {
    let dir = temp_dir();
    install(&example_module("rs_lifecycle"), dir.path(), "modules/misc/rs_lifecycle.so");
    let daemon = Daemon::start(dir.path());
    daemon.ctl_ok(&["load", "misc/rs_lifecycle", "--no-hello"]);

    let out = daemon.ctl_ok(&["call", "rs_lifecycle", "double", "--arg", "21"]);
    assert!(out.contains("42"), "{out}");
    let out = daemon.ctl_ok(&["call", "rs_lifecycle", "double", "--arg", "2147483647"]);
    assert!(out.contains("-2147483648"), "the panic value: {out}");
    let line = daemon.wait_for_log(&["panic in `double`", "double overflowed"]);
    assert!(line.contains("rs_lifecycle"), "{line}");

    let out = daemon.ctl_ok(&["call", "rs_lifecycle", "double", "--arg", "5"]);
    assert!(out.contains("10"), "the module and the daemon live on: {out}");
    let crashes = daemon.ctl_ok(&["--json", "crashes"]);
    assert!(!crashes.contains("rs_lifecycle"), "a caught panic is no crash: {crashes}");
    daemon.ctl_ok(&["unload", "rs_lifecycle"]);
}

/// 200 `std::process::abort()` calls in a Rust module through the daemon, its connection
/// threads doing allocation work in between: each is contained, and not one taints (the verdict
/// comes from the unwound backtrace, which reaches the module's frame).
#[test]
fn two_hundred_rust_aborts_through_the_daemon_taint_nothing() {
    let dir = temp_dir();
    install(&example_module("rs_lifecycle"), dir.path(), "modules/misc/rs_lifecycle.so");
    let daemon = Daemon::start(dir.path());
    for round in 0..200 {
        if round % 3 == 0 {
            daemon.ctl(&["--json", "status"]);
            daemon.ctl(&["--json", "crashes"]);
        }
        // The crash-loop policy quarantines a module after 5 crashes a minute: let it back.
        daemon.ctl(&["clear", "rs_lifecycle"]);
        daemon.ctl_ok(&["load", "misc/rs_lifecycle", "--no-hello"]);
        let (ok, out) = daemon.ctl(&["--json", "call", "rs_lifecycle", "abort_now"]);
        assert!(!ok, "round {round}: abort_now returned: {out}");
        // The reply is the first JSON value printed (stdout before stderr).
        let reply: serde_json::Value = serde_json::Deserializer::from_str(&out)
            .into_iter()
            .next()
            .and_then(Result::ok)
            .unwrap_or_else(|| panic!("round {round}: not JSON: {out}"));
        let report = &reply["parameters"]["report"];
        assert_eq!(report["signal_name"], "SIGABRT", "round {round}: {report}");
        assert!(report["taint"].is_null(), "round {round}: a plain abort tainted: {report}");
        assert!(
            report["frames"].as_array().is_some_and(|f| f.iter().any(|f| f["in_module"] == true)),
            "round {round}: the backtrace reaches the module: {report}"
        );
    }
    let status: serde_json::Value =
        serde_json::from_str(&daemon.ctl_ok(&["--json", "status"])).expect("status JSON");
    assert!(status["taint"].is_null(), "the daemon is not tainted: {status}");
}
