//! The crash guard under stress, through the C API (issue 11): `tests/c/guard_stress.c`,
//! compiled against the installed headers and library, one scenario per test.
//!
//! - 1,000 recoveries in a row of each crash kind, each in a fresh instance of
//!   `tests/modules/fault_signal.c`, with the host's callee-saved registers (x86_64: rbx, rbp,
//!   r12-r15, checked by `tests/c/regcheck.S`) intact after the crash and after a clean call
//!   into a module that stays loaded;
//! - a crash inside `printf` on one thread, then `printf` on another;
//! - unloading and reloading while other threads call the module: no call body runs after an
//!   unload returned;
//! - a host's own alternate signal stack, kept or given back (the rule in
//!   `crates/kmodlike/src/guard/altstack.rs`).
//!
//! The deadlines are safety nets for hangs, never measurements; each host prints its own run
//! time (`seconds=`), echoed with `--nocapture`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{support, Prefix, Run};
use module::module_error_t::*;

/// Crashes in a row per kind.
const RECOVERIES: usize = 1000;

/// Safety net for one host run on a loaded 2-core machine.
const DEADLINE: Duration = Duration::from_secs(300);

fn host() -> (Prefix, PathBuf) {
    let prefix = Prefix::install();
    let c = common::c_dir();
    let mut sources = vec![c.join("guard_stress.c")];
    if cfg!(target_arch = "x86_64") {
        sources.push(c.join("regcheck.S"));
    }
    let sources: Vec<&std::path::Path> = sources.iter().map(PathBuf::as_path).collect();
    let exe = prefix.compile_host("guard_stress", &sources, &["-pthread"]);
    (prefix, exe)
}

fn fault_module() -> PathBuf {
    support::test_module("fault_signal", "fault_plain", &[])
}

fn run(args: &[&str]) -> Run {
    let (prefix, exe) = host();
    let run = prefix.run(&exe, args, None, DEADLINE);
    println!("{run}");
    run.assert_ok();
    run
}

fn code(c: module::module_error_t) -> String {
    (c as i32).to_string()
}

/// `kinds KIND`: RECOVERIES crashes of one kind, each checked by the host (see
/// guard_stress.c), then the totals checked here.
fn recovers_in_a_row(kind: &str, signal_name: &str) {
    let fault = fault_module();
    let live = support::test_module("counter", "counter", &[]);
    let n = RECOVERIES.to_string();
    let run = run(&["kinds", kind, &n, fault.to_str().unwrap(), live.to_str().unwrap()]);
    assert_eq!(run.value("recovered"), n, "{run}");
    assert_eq!(run.value("live_regs_intact"), n, "{run}");
    assert_eq!(run.value("signal_name"), signal_name, "{run}");
    let error = run.value("first_error");
    assert!(error.contains(signal_name), "the error names the signal: {error}");
    assert!(error.contains("fault_plain"), "the error names the module: {error}");
    if run.value("regcheck") == "1" {
        assert_eq!(run.value("regs_intact"), n, "{run}");
    }
    eprintln!("{kind}: {RECOVERIES} crash-reload cycles in {} s", run.value("seconds"));
}

#[test]
fn sigsegv_recovers_1000_times_in_a_row_keeping_callee_saved_registers() {
    recovers_in_a_row("segv", "SIGSEGV");
}

#[test]
fn sigfpe_recovers_1000_times_in_a_row_keeping_callee_saved_registers() {
    recovers_in_a_row("fpe", "SIGFPE");
}

#[test]
fn sigill_recovers_1000_times_in_a_row_keeping_callee_saved_registers() {
    recovers_in_a_row("ill", "SIGILL");
}

#[test]
fn sigbus_recovers_1000_times_in_a_row_keeping_callee_saved_registers() {
    recovers_in_a_row("bus", "SIGBUS");
}

#[test]
fn abort_recovers_1000_times_in_a_row_keeping_callee_saved_registers() {
    recovers_in_a_row("abort", "SIGABRT");
}

#[test]
fn main_thread_stack_overflow_recovers_1000_times_in_a_row_keeping_callee_saved_registers() {
    recovers_in_a_row("overflow", "SIGSEGV");
}

#[test]
fn small_thread_stack_overflow_recovers_1000_times_in_a_row_keeping_callee_saved_registers() {
    recovers_in_a_row("overflow-thread", "SIGSEGV");
}

/// A `key=value` line of the host's stderr (the printf scenario keeps stdout for its subject).
fn stderr_value<'r>(run: &'r Run, key: &str) -> &'r str {
    let prefix = format!("{key}=");
    run.stderr
        .lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .unwrap_or_else(|| panic!("no {key}= line on stderr:\n{run}"))
}

#[test]
fn printf_on_another_thread_completes_after_a_crash_inside_printf() {
    let fault = fault_module();
    let run = run(&["printf", fault.to_str().unwrap()]);
    assert_eq!(stderr_value(&run, "a_rc"), code(MODULE_ERR_CRASHED), "{run}");
    assert_eq!(stderr_value(&run, "a_signal"), libc::SIGSEGV.to_string(), "{run}");
    assert_eq!(stderr_value(&run, "b_printf"), "completed", "{run}");
    assert!(run.stdout.contains("A: printf on the thread that crashed"), "{run}");
    assert!(run.stdout.contains("B: printf on another thread"), "{run}");
}

#[test]
fn no_call_runs_after_an_unload_returned_while_threads_call_and_reload_races() {
    let drain = support::test_module("drain_probe", "drain_probe", &[]);
    let run = run(&["drain", drain.to_str().unwrap(), "3", "2000"]);
    let n = |k: &str| -> u64 { run.value(k).parse().unwrap() };
    assert_eq!(n("body_violations"), 0, "a call body ran after its module was unloaded\n{run}");
    assert_eq!(n("fini_violations"), 0, "module_fini ran with a call body inside\n{run}");
    assert_eq!(n("unload_with_body_inside"), 0, "an unload returned with a body inside\n{run}");
    assert_eq!(n("sym_lost"), 0, "a call in flight lost its module\n{run}");
    assert_eq!(n("calls_other"), 0, "calls failed other than NOT_LOADED\n{run}");
    assert_eq!(n("cycles"), 2000, "{run}");
    // The race was real: calls ran, and unloads happened between calls that succeeded.
    assert!(n("calls_ok") > 0 && n("bodies") == n("calls_ok"), "{run}");
    assert!(n("unloads_with_calls_around") > 0, "no unload overlapped running callers\n{run}");
    eprintln!(
        "drain: {} cycles, {} calls, {} busy retries in {} s",
        n("cycles"),
        n("calls_ok"),
        n("busy_retries"),
        run.value("seconds")
    );
}

fn altstack(size: usize, change: bool) -> Run {
    let fault = fault_module();
    let size = size.to_string();
    run(&["altstack", &size, if change { "1" } else { "0" }, fault.to_str().unwrap()])
}

#[test]
fn a_host_alternate_stack_of_128_kib_stays_the_threads_through_crashes_and_overflows() {
    let run = altstack(128 * 1024, false);
    assert_eq!(run.value("recovered"), "6", "{run}");
    for when in ["after_first_call", "after_crashes", "at_thread_exit"] {
        assert_eq!(run.value(when), "host", "{when}\n{run}");
        assert_eq!(run.value(&format!("{when}_size")), "131072", "{when}\n{run}");
    }
}

#[test]
fn a_host_alternate_stack_of_8_kib_is_replaced_for_the_threads_life_and_given_back_at_exit() {
    let run = altstack(8 * 1024, false);
    assert_eq!(run.value("recovered"), "6", "{run}");
    for when in ["after_first_call", "after_crashes"] {
        assert_eq!(run.value(when), "other", "the guard's own stack {when}\n{run}");
        let size: usize = run.value(&format!("{when}_size")).parse().unwrap();
        assert!(size >= 64 * 1024, "{when}: {size} bytes\n{run}");
    }
    assert_eq!(run.value("at_thread_exit"), "host", "{run}");
    assert_eq!(run.value("at_thread_exit_size"), "8192", "{run}");
}

#[test]
fn an_alternate_stack_the_host_sets_after_the_guard_replaced_its_own_is_left_alone() {
    let run = altstack(8 * 1024, true);
    assert_eq!(run.value("recovered"), "6", "{run}");
    assert_eq!(run.value("after_first_call"), "other", "{run}");
    assert_eq!(run.value("after_crashes"), "host-changed", "{run}");
    assert_eq!(run.value("at_thread_exit"), "host-changed", "{run}");
    assert_eq!(run.value("at_thread_exit_size"), "131072", "{run}");
}

#[test]
fn a_thread_without_an_alternate_stack_gets_the_guards_and_none_after_it_exits() {
    let run = altstack(0, false);
    assert_eq!(run.value("recovered"), "6", "{run}");
    assert_eq!(run.value("after_first_call"), "other", "{run}");
    assert_eq!(run.value("at_thread_exit"), "none", "{run}");
}
