//! The guarded call's entry itself (issue 11): which entry this process runs, what a backtrace
//! sees through it, guards nested deeper than the fast entry's slots, and the `sigsetjmp`
//! fallback (forced with `KMODLIKE_GUARD_SIGSETJMP=1`, in a child process) recovering every
//! crash kind and draining an unload as the fast entry does.

use std::ffi::{c_int, c_void};
use std::process::Command;
use std::sync::OnceLock;

use kmodlike::{Error, GuardEntry, Handle, Loader};
use kmodlike_testsupport as ts;

fn open(loader: &Loader, stem: &str, name: &str) -> Handle {
    let path = ts::test_module(stem, name, &[]);
    // SAFETY: a fixture module this test built from its C source for the interface.
    unsafe { loader.open(path.to_str().unwrap()) }.unwrap_or_else(|e| panic!("open {name}: {e}"))
}

fn function<F: Copy>(h: &Handle, name: &str) -> F {
    let p = h.symbol_ptr(name).unwrap_or_else(|e| panic!("symbol {name}: {e}"));
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller names the C signature of `name` in `F` (a function pointer type).
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) }
}

#[test]
#[cfg(all(target_arch = "x86_64", target_env = "gnu"))]
fn this_process_runs_the_fast_entry() {
    if std::env::var_os("KMODLIKE_GUARD_SIGSETJMP").is_some() {
        return; // the fallback's own run (below) checks the other answer
    }
    assert_eq!(kmodlike::guard_entry(), GuardEntry::Fast);
}

/// A host function called under the guard that captures a backtrace: the unwinder must find
/// its way through the entry's frame (and not fault on it) back to this test.
extern "C" fn capture_backtrace(out: *mut String) {
    let bt = std::backtrace::Backtrace::force_capture().to_string();
    // SAFETY: `out` points to the caller's String, alive during the call.
    unsafe { *out = bt };
}

#[inline(never)]
fn a_backtrace_through_the_entry() -> String {
    let loader = Loader::new();
    let h = open(&loader, "counter", "entry_backtrace");
    let mut bt = String::new();
    // SAFETY: `capture_backtrace` owns only a String it hands back before returning; it does
    // not fault (a backtrace capture reads the stack through the unwind tables).
    unsafe { h.call(capture_backtrace, &mut bt as *mut String) }.expect("the call");
    bt
}

#[test]
fn a_backtrace_taken_inside_a_guarded_call_reaches_the_caller() {
    let bt = a_backtrace_through_the_entry();
    assert!(bt.contains("capture_backtrace"), "{bt}");
    assert!(bt.contains("a_backtrace_through_the_entry"), "the caller's frame: {bt}");
}

/// Nesting: a guarded call of a host function that makes a guarded call of itself, 40 deep
/// (more than the fast entry's 32 slots), then a crash in the module at the bottom. The
/// innermost guard catches it; every level above returns normally.
static NEST: OnceLock<(Handle, Handle)> = OnceLock::new();

extern "C" fn nest(depth: c_int) -> c_int {
    let (host, fault) = NEST.get().expect("set up");
    if depth == 0 {
        let f: extern "C" fn(c_int) = function(fault, "fault");
        // SAFETY: the fixture module's C code; a fault skips only its frames.
        return match unsafe { fault.call(f, libc::SIGSEGV) } {
            Err(Error::Crashed(r)) if r.signal_name == "SIGSEGV" => 1000,
            other => panic!("the crash at the bottom: {other:?}"),
        };
    }
    // SAFETY: `nest` owns nothing droppable across the guarded call and does not fault itself.
    match unsafe { host.call(nest, depth - 1) } {
        Ok(v) => v + 1,
        Err(e) => panic!("level {depth}: {e}"),
    }
}

#[test]
fn guards_nested_deeper_than_the_fast_entrys_slots_catch_at_the_innermost() {
    let loader = Loader::new();
    let host = open(&loader, "counter", "entry_nest_host");
    let fault = open(&loader, "fault_signal", "entry_nest_fault");
    assert!(NEST.set((host, fault)).is_ok());
    let (host, fault) = NEST.get().unwrap();
    // SAFETY: as in `nest`.
    let v = unsafe { host.call(nest, 40) }.expect("the outermost call returns");
    assert_eq!(v, 1040, "every level returned once, the bottom one after the crash");
    assert!(host.is_live(), "the module of the outer calls lives on");
    assert!(!fault.is_live(), "the module that crashed is gone");
    assert!(loader.list().iter().all(|m| m.name != "entry_nest_fault"));
}

/// The sigsetjmp fallback, in a child with `KMODLIKE_GUARD_SIGSETJMP=1`.
#[test]
fn the_sigsetjmp_fallback_recovers_every_crash_kind_and_drains_unloads() {
    const CHILD: &str = "KMODLIKE_GUARD_ENTRY_CHILD";
    if std::env::var_os(CHILD).is_none() {
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "the_sigsetjmp_fallback_recovers_every_crash_kind_and_drains_unloads",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD, "1")
            .env("KMODLIKE_GUARD_SIGSETJMP", "1")
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success() && text.contains("1 passed"), "the child:\n{text}");
        return;
    }
    match kmodlike::guard_entry() {
        GuardEntry::Sigsetjmp(why) => assert!(why.contains("KMODLIKE_GUARD_SIGSETJMP"), "{why}"),
        GuardEntry::Fast => panic!("KMODLIKE_GUARD_SIGSETJMP=1 must turn the fast entry off"),
    }
    let loader = Loader::new();
    let kinds = [
        (libc::SIGSEGV, "SIGSEGV"),
        (libc::SIGBUS, "SIGBUS"),
        (libc::SIGFPE, "SIGFPE"),
        (libc::SIGILL, "SIGILL"),
        (libc::SIGABRT, "SIGABRT"),
    ];
    for (i, (signo, name)) in kinds.into_iter().enumerate() {
        for round in 0..20 {
            let h = open(&loader, "fault_signal", &format!("fallback_{i}"));
            let fault: extern "C" fn(c_int) = function(&h, "fault");
            // SAFETY: the fixture module's C code; a fault skips only its frames.
            match unsafe { h.call(fault, signo) } {
                Err(Error::Crashed(r)) => assert_eq!(r.signal_name, name, "round {round}"),
                other => panic!("{name} round {round}: {other:?}"),
            }
            assert!(!h.is_live());
        }
    }
    unload_from_inside_a_call_is_busy("fallback_drain");
}

static DRAIN: OnceLock<Handle> = OnceLock::new();

/// Under the guard of the module's handle: try to unload that very module.
extern "C" fn unload_me(_: c_int) -> c_int {
    match DRAIN.get().expect("set up").close_shared(false) {
        Err(Error::Busy { .. }) => 1,
        other => panic!("an unload with a call in flight: {other:?}"),
    }
}

/// The drain: an unload while a guarded call of the module is in flight (this very thread's)
/// is Busy and changes nothing; once the call returned, it unloads.
fn unload_from_inside_a_call_is_busy(name: &str) {
    let loader = Loader::new();
    assert!(DRAIN.set(open(&loader, "counter", name)).is_ok());
    let h = DRAIN.get().unwrap();
    // SAFETY: `unload_me` owns nothing droppable and does not fault.
    assert_eq!(unsafe { h.call(unload_me, 0) }.unwrap(), 1);
    assert!(h.is_live(), "a Busy unload changes nothing");
    let bump: extern "C" fn() -> c_int = function(h, "bump");
    // SAFETY: the fixture module's C code.
    assert_eq!(unsafe { h.call0(bump) }.unwrap(), 1, "still the same live instance");
    h.close_shared(false).expect("no call in flight: it unloads");
    assert!(!h.is_live());
}

#[test]
fn an_unload_while_a_call_is_in_flight_is_busy_and_changes_nothing() {
    unload_from_inside_a_call_is_busy("entry_drain");
}
