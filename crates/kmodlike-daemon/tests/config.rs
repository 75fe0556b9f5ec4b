//! Configuration: kmodlike.toml and modules.d/*.conf at start (required and optional modules,
//! command-line options winning), a bad file refused with its file, line and key, and a reload
//! that loads newly listed modules and changes the module path, or changes nothing.

mod common;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const WAIT: Duration = Duration::from_secs(30);

/// A prepared daemon directory with `etc/kmodlike.toml` (`toml`) and `etc/modules.d/10-test.conf`
/// (`listed`); `extra/misc/` holds `extra` modules (a directory only the file names).
fn prepare(
    modules: &[(&Path, &str)],
    extra: &[(&Path, &str)],
    toml: &str,
    listed: &str,
) -> (tempfile::TempDir, PathBuf) {
    let dir = Daemon::prepare(modules);
    let etc = dir.path().join("etc");
    std::fs::create_dir_all(etc.join("modules.d")).unwrap();
    let extra_dir = dir.path().join("extra");
    std::fs::create_dir_all(extra_dir.join("misc")).unwrap();
    for (src, name) in extra {
        std::fs::copy(src, extra_dir.join("misc").join(name)).unwrap();
    }
    let toml = toml.replace("@EXTRA@", extra_dir.to_str().unwrap());
    std::fs::write(etc.join("kmodlike.toml"), toml).unwrap();
    std::fs::write(etc.join("modules.d/10-test.conf"), listed).unwrap();
    let config = etc.join("kmodlike.toml");
    (dir, config)
}

fn start(dir: tempfile::TempDir, config: &Path, more: &[&str], wait_ready: bool) -> Daemon {
    let mut args: Vec<OsString> = vec!["--config".into(), config.into()];
    args.extend(more.iter().map(OsString::from));
    Daemon::start_in(dir, DaemonConfig { args, wait_ready, ..Default::default() })
}

#[test]
fn listed_modules_load_at_start_and_the_command_line_wins() {
    let hello = hello_module();
    let plain = crash_module("cfg_plain", 0, &[]);
    let (dir, config) = prepare(
        &[],
        &[(&hello, "hello.so"), (&plain, "cfg_plain.so")],
        "module_path = [\"@EXTRA@\"]\n[crash_loop]\nmax_crashes = 2\nwindow_secs = 30\n",
        "# test modules\nhello\nmisc/nosuch optional\ncfg_plain isolated timeout=2.5 crash-loop=3/60\n",
    );
    let mut d = start(dir, &config, &["--crash-loop-window", "90"], true);
    d.wait_log("Hello from the kmodlike example module!", WAIT);
    let log = d.log();
    assert!(log.contains("10-test.conf:3: cannot load misc/nosuch"), "{log}");
    assert!(log.contains("optional: going on without it"), "{log}");

    let status = d.ctl(&["--json", "status"]).json();
    assert_eq!(status["config_file"], config.to_str().unwrap());
    assert_eq!(status["modules"], 2);
    // The file's max_crashes; the command line's window.
    assert_eq!(status["crash_loop"], serde_json::json!({ "max_crashes": 2, "window_secs": 90 }));
    let listed = &status["configured_modules"];
    assert_eq!(listed.as_array().unwrap().len(), 3);
    assert_eq!(listed[1]["required"], false);
    assert_eq!(listed[2]["isolated"], true);
    assert_eq!(listed[2]["call_timeout_secs"], 2.5);
    assert_eq!(listed[2]["crash_loop"], serde_json::json!({ "max_crashes": 3, "window_secs": 60 }));
    assert!(listed[2]["origin"].as_str().unwrap().ends_with("modules.d/10-test.conf:4"));
    // --module-path (the harness's) first, then the file's.
    let path = d.ctl(&["path"]);
    let dirs: Vec<&str> = path.ok().lines().collect();
    assert_eq!(dirs[0], d.modules.to_str().unwrap());
    assert!(dirs[1].ends_with("/extra"), "{dirs:?}");
    assert!(d.ctl(&["status"]).ok().contains("cfg_plain (required, isolated, timeout 2.5 s"));
}

#[test]
fn a_required_module_that_fails_stops_the_start_naming_its_line() {
    let (dir, config) = prepare(&[], &[], "", "\nmisc/absent\n");
    let mut d = start(dir, &config, &[], false);
    let st = d.wait_exit(WAIT);
    assert_eq!(st.code(), Some(1), "{}", d.log());
    let log = d.log();
    assert!(log.contains("10-test.conf:2: cannot load misc/absent"), "{log}");
    assert!(log.contains("it is required (mark it `optional` there"), "{log}");
    assert!(!log.contains("<6>ready"), "{log}");
    assert!(!d.socket.exists(), "the socket is removed");
}

#[test]
fn a_bad_configuration_is_refused_with_its_file_line_and_key() {
    let (dir, config) = prepare(&[], &[], "probe = true\nmax_conections = 3\n", "");
    let mut d = start(dir, &config, &[], false);
    assert_eq!(d.wait_exit(WAIT).code(), Some(1));
    let expected = format!("{}:2: unknown field `max_conections`", config.display());
    assert!(d.log().contains(&expected), "{}", d.log());

    let (dir, config) = prepare(&[], &[], "", "hello timeout=soon\n");
    let mut d = start(dir, &config, &[], false);
    assert_eq!(d.wait_exit(WAIT).code(), Some(1));
    assert!(
        d.log().contains("10-test.conf:1: timeout=soon: give a positive number"),
        "{}",
        d.log()
    );
}

#[test]
fn reload_applies_a_good_configuration_and_keeps_the_running_one_otherwise() {
    let hello = hello_module();
    let plain = crash_module("cfg_later", 0, &[]);
    let (dir, config) =
        prepare(&[(&hello, "hello.so")], &[(&plain, "cfg_later.so")], "", "hello\n");
    let root = dir.path().to_owned();
    let mut d = start(dir, &config, &[], true);
    d.wait_log("Hello from the kmodlike example module!", WAIT);
    assert_eq!(d.ctl(&["load", "cfg_later"]).code(), 1, "not on the module path yet");

    let extra = root.join("extra");
    std::fs::write(&config, format!("module_path = [\"{}\"]\n", extra.display())).unwrap();
    std::fs::write(root.join("etc/modules.d/20-more.conf"), "cfg_later\n").unwrap();
    let r = d.ctl(&["--json", "reload-config"]).json();
    assert_eq!(r["loaded"], serde_json::json!(["hello", "cfg_later"]));
    assert_eq!(r["failed"], serde_json::json!([]));
    assert_eq!(r["module_path"][1], extra.to_str().unwrap());
    d.wait_log("init cfg_later", WAIT);
    assert_eq!(d.log().matches("Hello from the kmodlike example module!").count(), 1);
    d.wait_log("request ReloadConfiguration by uid ", WAIT);

    // A broken file: refused with its line, and nothing changes.
    std::fs::write(&config, "module_path = \"/not/a/list\"\n").unwrap();
    std::fs::write(root.join("etc/modules.d/30-broken.conf"), "cfg_other\n").unwrap();
    let out = d.ctl(&["reload-config"]);
    assert_eq!(out.code(), 1, "{out:?}");
    assert!(out.stderr.contains(&format!("{}:1:", config.display())), "{out:?}");
    assert!(out.stderr.contains("the running configuration is kept"), "{out:?}");
    let status = d.ctl(&["--json", "status"]).json();
    assert_eq!(status["module_path"][1], extra.to_str().unwrap());
    assert_eq!(status["configured_modules"].as_array().unwrap().len(), 2);
}

#[test]
fn a_module_s_own_crash_loop_policy_replaces_the_daemon_s() {
    let never = crash_module("cfg_never", libc::SIGSEGV, &[]);
    let twice = crash_module("cfg_twice", libc::SIGSEGV, &[]);
    let (dir, config) = prepare(
        &[(&never, "cfg_never.so"), (&twice, "cfg_twice.so")],
        &[],
        "",
        "cfg_never crash-loop=off\ncfg_twice crash-loop=2/600\n",
    );
    // The daemon's own policy would quarantine after one crash.
    let d = start(dir, &config, &["--crash-loop-max", "1"], true);
    let quarantined = || d.ctl(&["--json", "status"]).json()["quarantined"].clone();

    assert_eq!(d.ctl(&["call", "cfg_never", "crash"]).code(), 1);
    assert_eq!(quarantined(), serde_json::json!([]), "crash-loop=off: never quarantined");
    d.ctl(&["load", "cfg_never"]).ok();

    assert_eq!(d.ctl(&["call", "cfg_twice", "crash"]).code(), 1);
    assert_eq!(quarantined(), serde_json::json!([]), "one crash of two");
    d.ctl(&["load", "cfg_twice"]).ok();
    assert_eq!(d.ctl(&["call", "cfg_twice", "crash"]).code(), 1);
    assert_eq!(quarantined(), serde_json::json!(["cfg_twice"]));
    let out = d.ctl(&["load", "cfg_twice"]);
    assert!(out.stderr.contains("quarantined after 2 crashes"), "{out:?}");
}

#[test]
fn sighup_reloads_modules_d() {
    let hello = hello_module();
    let (dir, config) = prepare(&[(&hello, "hello.so")], &[], "", "");
    let root = dir.path().to_owned();
    let mut d = start(dir, &config, &[], true);
    assert_eq!(d.ctl(&["--json", "status"]).json()["modules"], 0);

    std::fs::write(root.join("etc/modules.d/10-test.conf"), "hello\n").unwrap();
    d.signal(rustix::process::Signal::HUP);
    d.wait_log("configuration reloaded: module path ", WAIT);
    assert!(d.log().contains("1 listed module(s) loaded"), "{}", d.log());
    d.wait_log("Hello from the kmodlike example module!", WAIT);
    assert!(d.is_running());
    assert_eq!(d.ctl(&["--json", "list"]).json()["modules"][0]["name"], "hello");
}
