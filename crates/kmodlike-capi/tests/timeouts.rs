//! Call time limits through C (issue 13): tests/c/timeout_host.c, compiled against the
//! installed headers and library, runs a module function that never returns with a loader's
//! limit and one blocked in `sleep()` with a handle's.

mod common;

use std::time::Duration;

use common::{support, Prefix};
use module::module_error_t::*;

fn code(c: module::module_error_t) -> String {
    (c as i32).to_string()
}

#[test]
fn calls_past_their_limit_return_timed_out_and_say_where_they_were() {
    let prefix = Prefix::install();
    let exe = prefix.compile_host("timeout_host", &[&common::c_dir().join("timeout_host.c")], &[]);
    let hang = support::test_module("hang", "capi_hang", &[]);
    let run = prefix.run(&exe, &[hang.to_str().unwrap()], None, Duration::from_secs(60));
    run.assert_ok();
    for key in
        ["set_timeout", "load", "sym", "last_crash", "clear_timeout", "open", "handle_timeout"]
    {
        assert_eq!(run.value(key), code(MODULE_ERR_SUCCESS), "{key}: {run}");
    }
    assert_eq!(run.value("call"), code(MODULE_ERR_TIMED_OUT), "{run}");
    assert_eq!(run.value("strerror"), "the call ran past its deadline", "{run}");
    let error = run.value("error");
    assert!(error.contains("module capi_hang") && error.contains("deadline of 0.2 s"), "{run}");
    assert_eq!(run.value("signal_name"), "timeout", "{run}");
    assert!(run.value("symbol").starts_with("spin"), "{run}");
    assert_eq!(run.value("timed_out"), "1", "{run}");
    assert_eq!(run.value("ran_at_least_limit"), "1", "{run}");
    assert_eq!(run.value("call_again"), code(MODULE_ERR_NOT_LOADED), "{run}");
    assert_eq!(run.value("handle_call"), code(MODULE_ERR_TIMED_OUT), "{run}");
}
