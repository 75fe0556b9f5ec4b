//! The crash guard under repetition through the Rust API (issue 11): 1,000 recoveries in a row of
//! each crash kind through `Handle::call`, each in a fresh instance of
//! `tests/modules/fault_signal.c` (a crash unloads the module), each followed by a clean
//! `Handle::call0` into a module that stays loaded. Every crash: the error names the signal and
//! the module, the module is gone (its handle refuses calls, `list()` no longer has it), and the
//! host goes on.
//!
//! The callee-saved register check and the main-thread stack overflow live in the C API's
//! `guard_stress` tests (a Rust test runs on the harness's threads, never on the main thread).
//! Each test prints its run time (`--nocapture`); the deadline is a safety net, never a
//! measurement.

use std::ffi::{c_int, c_void};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kmodlike::{CrashPolicy, Error, Loader};
use kmodlike_testsupport as ts;

/// Crashes in a row per kind.
const RECOVERIES: usize = 1000;

/// A symbol of the module as a function pointer of type `F`.
fn function<F: Copy>(h: &kmodlike::Handle, name: &str) -> F {
    let p = h.symbol_ptr(name).unwrap_or_else(|e| panic!("symbol {name}: {e}"));
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller names the C signature of `name` in `F` (a function pointer type).
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) }
}

/// A private copy of `built` named `name.so` in `dir`: a file of its own, so no other test's
/// loader in this process shares its instance (ld.so hands out one per file).
fn private_copy(dir: &Path, built: &Path, name: &str) -> PathBuf {
    let dest = dir.join(format!("{name}.so"));
    std::fs::copy(built, &dest).expect("copy the module");
    dest
}

/// What the module is told to do: `fault(signo)` or `recurse(0)` (a stack overflow).
#[derive(Clone, Copy)]
enum Crash {
    Fault(c_int),
    Overflow,
}

/// RECOVERIES crashes of one kind on a thread with a `stack`-byte stack; returns the time they
/// took.
fn recovers_in_a_row(kind: &'static str, crash: Crash, signal_name: &'static str, stack: usize) {
    let work = move || -> Duration {
        let dir = tempfile::tempdir().unwrap();
        let name = format!("matrix_{kind}");
        let fault =
            private_copy(dir.path(), &ts::test_module("fault_signal", "fault_plain", &[]), &name);
        let live = private_copy(
            dir.path(),
            &ts::test_module("counter", "counter", &[]),
            &format!("{name}_live"),
        );
        // Reclaim: a crashed instance is unmapped once drained, so 1,000 do not pile up.
        let loader = Loader::builder().crash_policy(CrashPolicy::Reclaim).build();
        // SAFETY: a fixture module this test built from its C source for the interface.
        let live = unsafe { loader.open(live.to_str().unwrap()) }.expect("open the live module");
        let live_bump: extern "C" fn() -> c_int = function(&live, "bump");
        let spec = fault.to_str().unwrap();
        let t0 = Instant::now();
        for i in 0..RECOVERIES {
            // SAFETY: a fixture module this test built from its C source for the interface.
            let h = unsafe { loader.open(spec) }.unwrap_or_else(|e| panic!("{kind} #{i}: {e}"));
            let bump: extern "C" fn() -> c_int = function(&h, "bump");
            // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
            let calls = unsafe { h.call0(bump) }.unwrap();
            assert_eq!(calls, 1, "{kind} #{i}: not a fresh instance");
            let result = match crash {
                Crash::Fault(signo) => {
                    let fault: extern "C" fn(c_int) = function(&h, "fault");
                    // SAFETY: the fixture module's C code; a fault skips only its frames.
                    unsafe { h.call(fault, signo) }.map(|()| 0)
                }
                Crash::Overflow => {
                    let recurse: extern "C" fn(c_int) -> c_int = function(&h, "recurse");
                    // SAFETY: the fixture module's C code; a fault skips only its frames.
                    unsafe { h.call(recurse, 0) }
                }
            };
            let err = match result {
                Err(e) => e,
                Ok(v) => panic!("{kind} #{i}: returned {v} instead of crashing"),
            };
            let report = err.crash_report().unwrap_or_else(|| panic!("{kind} #{i}: {err}"));
            assert_eq!(report.signal_name, signal_name, "{kind} #{i}: {report:?}");
            assert_eq!(report.module, name, "{kind} #{i}");
            let text = err.to_string();
            assert!(text.contains(signal_name) && text.contains(&name), "{kind} #{i}: {text}");
            assert!(!h.is_live(), "{kind} #{i}: the handle is live after the crash");
            // SAFETY: as above.
            match unsafe { h.call0(bump) } {
                Err(Error::Crashed(_)) | Ok(_) => panic!("{kind} #{i}: a call ran after the crash"),
                Err(_) => {}
            }
            assert!(!loader.list().iter().any(|m| m.name == name), "{kind} #{i}: still listed");
            let _ = h.close();
            // SAFETY: `live_bump` is the live fixture module's C code.
            let n = unsafe { live.call0(live_bump) }.unwrap_or_else(|e| panic!("{kind} #{i}: {e}"));
            assert_eq!(n as usize, i + 1, "{kind} #{i}: the live module's count");
        }
        let took = t0.elapsed();
        live.close().map_err(|e| e.error).unwrap();
        took
    };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new()
        .name(kind.into())
        .stack_size(stack)
        .spawn(move || {
            let _ = tx.send(work());
        })
        .unwrap();
    let took = rx
        .recv_timeout(Duration::from_secs(300))
        .unwrap_or_else(|e| panic!("{kind}: no result within the safety net ({e}); see above"));
    eprintln!("{kind}: {RECOVERIES} crash-reload cycles in {took:?}");
}

const BIG_STACK: usize = 8 << 20;

#[test]
fn sigsegv_in_a_call_recovers_1000_times_in_a_row() {
    recovers_in_a_row("segv", Crash::Fault(libc::SIGSEGV), "SIGSEGV", BIG_STACK);
}

#[test]
fn sigfpe_in_a_call_recovers_1000_times_in_a_row() {
    recovers_in_a_row("fpe", Crash::Fault(libc::SIGFPE), "SIGFPE", BIG_STACK);
}

#[test]
fn sigill_in_a_call_recovers_1000_times_in_a_row() {
    recovers_in_a_row("ill", Crash::Fault(libc::SIGILL), "SIGILL", BIG_STACK);
}

#[test]
fn sigbus_in_a_call_recovers_1000_times_in_a_row() {
    // In a process of its own: each SIGBUS leaves the module's mapping of a truncated file
    // behind (the fault happens before it could unmap it), and 1,000 extra mappings slow every
    // later load and crash in the process several times over.
    if !ts::in_own_process(
        "sigbus_in_a_call_recovers_1000_times_in_a_row",
        Duration::from_secs(300),
    ) {
        return;
    }
    recovers_in_a_row("bus", Crash::Fault(libc::SIGBUS), "SIGBUS", BIG_STACK);
}

#[test]
fn abort_in_a_call_recovers_1000_times_in_a_row() {
    recovers_in_a_row("abort", Crash::Fault(libc::SIGABRT), "SIGABRT", BIG_STACK);
}

#[test]
fn stack_overflow_in_a_call_on_an_8_mib_thread_recovers_1000_times_in_a_row() {
    recovers_in_a_row("overflow", Crash::Overflow, "SIGSEGV", BIG_STACK);
}

#[test]
fn stack_overflow_in_a_call_on_a_256_kib_thread_recovers_1000_times_in_a_row() {
    recovers_in_a_row("overflow_small", Crash::Overflow, "SIGSEGV", 256 << 10);
}
