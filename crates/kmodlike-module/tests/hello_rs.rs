//! modules/hello-rs, the SDK's example module, loads through the Rust API and the C API, and its
//! mod_hello greets through the host's log, like modules/hello/hello.c.

mod common;

use std::time::Duration;

use common::{export, hello_rs_so, install, line_index, run_c_host, temp_dir, with_timeout, Logs};
use kmodlike::Loader;

const GREETING: &str = "Hello from the kmodlike example module, written in Rust!";

#[test]
fn hello_rs_carries_its_modinfo_in_the_file() {
    let info = kmodlike::modinfo(&hello_rs_so()).expect("read .modinfo");
    let entries = &info.entries;
    for (tag, value) in [
        // hello-rs and this crate share the workspace's version.
        ("version", env!("CARGO_PKG_VERSION")),
        ("license", "MIT OR Apache-2.0"),
        ("author", "The kmodlike developers"),
    ] {
        assert!(
            entries.iter().any(|(t, v)| t == tag && v == value),
            "{tag}={value} in {entries:?}"
        );
    }
    assert!(
        entries.iter().any(|(t, v)| t == "description" && v.contains("in Rust")),
        "{entries:?}"
    );
}

#[test]
fn hello_rs_greets_through_the_rust_apis_log() {
    with_timeout(Duration::from_secs(60), || {
        let dir = temp_dir();
        install(&hello_rs_so(), dir.path(), "misc/hello-rs.so");
        let logs = Logs::default();
        let loader =
            Loader::builder().module_path(vec![dir.path().to_owned()]).log(logs.sink()).build();
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle = unsafe { loader.open("misc/hello-rs") }.expect("open misc/hello-rs");
        assert_eq!(handle.name(), "hello-rs");
        // SAFETY: `void mod_hello(void)`.
        let hello: extern "C" fn() = unsafe { export(&handle, "mod_hello") };
        // SAFETY: `hello` is the test module's own export; a fault skips only its frames.
        unsafe { handle.call0(hello) }.expect("mod_hello");
        handle.close().map_err(|e| e.error).expect("close");
        assert_eq!(
            logs.all(),
            vec![
                ("hello-rs".to_owned(), 0, "module initializing".to_owned()),
                ("hello-rs".to_owned(), 0, GREETING.to_owned()),
                ("hello-rs".to_owned(), 0, "module finalizing".to_owned()),
            ]
        );
    });
}

#[test]
fn hello_rs_greets_through_a_c_hosts_log() {
    let dir = temp_dir();
    let so = install(&hello_rs_so(), dir.path(), "hello-rs.so");
    let (lines, ok) = run_c_host(&so, &["hello", "unload"]);
    assert!(ok, "{lines:#?}");
    let init = line_index(&lines, "log 0 module initializing");
    let greeting = line_index(&lines, &format!("log 0 {GREETING}"));
    let returned = line_index(&lines, "mod_hello returned");
    let fini = line_index(&lines, "log 0 module finalizing");
    let unloaded = line_index(&lines, "unloaded");
    assert!(init < greeting && greeting < returned && returned < fini && fini < unloaded);
    line_index(&lines, "host still running");
}
