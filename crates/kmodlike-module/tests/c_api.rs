//! Modules written with the SDK, loaded by a C host through libmodule.so (module_loader.h): the
//! host's own log, clock and user_data reach the module, a panic in an export is contained, a
//! panic in init fails the load.

mod common;

use common::{example_module, install, line_index, run_c_host, temp_dir};

#[test]
fn a_c_host_gets_the_panic_value_and_the_panic_message_and_keeps_running() {
    let dir = temp_dir();
    let so = install(&example_module("rs_lifecycle"), dir.path(), "rs_lifecycle.so");
    let (lines, ok) = run_c_host(
        &so,
        &["add:2:3", "add:2147483647:1", "add:40:2", "now", "user_data", "hello", "unload"],
    );
    assert!(ok, "{lines:#?}");
    let init = line_index(&lines, "log 0 rs_lifecycle init: args version Some(1), user_data *");
    let sum = line_index(&lines, "add(2, 3) = 5");
    let panicked = line_index(&lines, "add(2147483647, 1) = -2147483648");
    let message = line_index(&lines, "log 2 panic in `add` at *");
    assert!(lines[message].ends_with(": add overflowed"), "{}", lines[message]);
    let after = line_index(&lines, "add(40, 2) = 42");
    assert!(init < sum && sum < message && message < panicked && panicked < after, "{lines:#?}");
    line_index(&lines, "now_ns = 987654321");
    line_index(&lines, "user_data is the host's: yes");
    let hello = line_index(&lines, "log 0 Hello from rs_lifecycle");
    let fini = line_index(&lines, "log 0 rs_lifecycle fini");
    let unloaded = line_index(&lines, "unloaded");
    assert!(hello < fini && fini < unloaded, "{lines:#?}");
    line_index(&lines, "host still running");
}

#[test]
fn a_panic_in_init_fails_the_c_hosts_load_with_init_failed() {
    let dir = temp_dir();
    let so = install(&example_module("rs_init_panics"), dir.path(), "rs_init_panics.so");
    let (lines, ok) = run_c_host(&so, &["hello"]);
    assert!(!ok, "the load must fail: {lines:#?}");
    let message = line_index(&lines, "log 2 panic in `module_init` at *");
    assert!(lines[message].ends_with(": init exploded on purpose"), "{}", lines[message]);
    let failed = line_index(&lines, "load failed: *");
    assert!(lines[failed].contains("101"), "the error carries init's code 101: {}", lines[failed]);
    assert!(message < failed);
    line_index(&lines, "host still running");
}
