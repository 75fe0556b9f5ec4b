//! The module path changed at run time (`kmodctl path --set`, Varlink `SetModulePath`), and a
//! dependency satisfied by a module already loaded under its name, even one loaded by path from
//! outside the module path.

mod common;

use std::process::Command;

use common::*;
use kmodlike_daemon::client::Connection;
use serde_json::json;

#[test]
fn the_module_path_changes_at_run_time_and_relative_dirs_are_the_callers() {
    let hello = hello_module();
    let d = Daemon::start(&[], &[]);
    let shown = d.ctl(&["path"]);
    assert_eq!(shown.ok().lines().next(), Some(d.modules.to_str().unwrap()), "{shown:?}");
    assert_eq!(d.ctl(&["load", "hello"]).code(), 1, "not on the module path yet");

    // A directory given relative to kmodctl's working directory.
    let extra = d.dir.path().join("extra");
    std::fs::create_dir_all(extra.join("misc")).unwrap();
    std::fs::copy(&hello, extra.join("misc/hello.so")).unwrap();
    let mut cmd = Command::new(kmodctl_bin());
    cmd.current_dir(d.dir.path()).arg("--socket").arg(&d.socket).args(["path", "--set", "extra"]);
    let out = run_with_deadline(&mut cmd, CTL_DEADLINE);
    assert_eq!(out.ok().lines().next(), Some(extra.to_str().unwrap()), "{out:?}");
    assert_eq!(d.ctl(&["--json", "status"]).json()["module_path"][0], extra.to_str().unwrap());
    d.ctl(&["load", "hello"]).ok();
    assert!(d.log().contains(&format!("request SetModulePath {} by uid", extra.display())));

    // The daemon itself refuses a relative directory (another client may send one).
    let mut conn = Connection::connect(&d.socket, None).unwrap();
    let e = conn
        .call("io.kmodlike.Loader.SetModulePath", json!({ "dirs": ["relative/dir"] }))
        .unwrap()
        .unwrap_err();
    assert_eq!(e.name, "org.varlink.service.InvalidParameter");
    assert!(e.param_str("message").unwrap().contains("\"relative/dir\" is not an absolute"));
}

#[test]
fn a_dependency_loaded_by_path_satisfies_the_name() {
    let base = test_module("dep_base");
    let top = test_module("dep_top");
    // dep_top is on the module path; dep_base only elsewhere, loaded by its path.
    let mut d = Daemon::start(&[(&top, "dep_top.so")], &[]);
    let elsewhere = d.dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let base_path = elsewhere.join("dep_base.so");
    std::fs::copy(&base, &base_path).unwrap();

    let out = d.ctl(&["load", "dep_top"]);
    assert_eq!(out.code(), 1, "dep_base is nowhere on the module path: {out:?}");
    assert!(out.stderr.contains("dep_base"), "{out:?}");

    d.ctl(&["load", base_path.to_str().unwrap()]).ok();
    d.ctl(&["load", "dep_top"]).ok();
    assert_eq!(
        d.ctl(&["call", "dep_top", "top_value", "--returns", "int"]).ok(),
        "dep_top: top_value() returned 42\n"
    );
    let list = d.ctl(&["--json", "list"]).json();
    let base_row = list["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "dep_base")
        .unwrap()
        .clone();
    assert_eq!(base_row["path"], base_path.to_str().unwrap(), "the file loaded by path, shared");
    assert_eq!(base_row["holders"], json!(["dep_top"]));
    d.wait_log_count("init dep_base", 1, CTL_DEADLINE);
    assert_eq!(d.log().matches("init dep_base").count(), 1, "dep_base is not loaded twice");
}
