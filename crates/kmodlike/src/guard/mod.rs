//! The crash guard: the ONLY place in kmodlike that touches signals.
//!
//! STUB: calls run unguarded until the real guard lands. The interface below is the contract
//! the rest of the crate uses.

use std::ffi::{c_char, c_void};
use std::time::SystemTime;

/// What the signal handler recorded about a fatal signal, in raw numbers only.
#[derive(Debug, Clone)]
pub(crate) struct RawCrash {
    pub signo: i32,
    pub code: i32,
    pub addr: u64,
    pub pc: u64,
    pub tid: i32,
    pub time: SystemTime,
    /// The module the fault is attributed to (the active guard's, or the one whose text holds
    /// the PC / a return address on a module thread).
    pub module_id: u64,
    /// Return addresses found on the faulting stack that lie outside any module (for SIGABRT:
    /// used after the jump to tell an abort from inside malloc).
    pub stack_words: Vec<u64>,
    /// The fault happened on a thread with no guard (a thread the module started).
    pub on_module_thread: bool,
}

/// Install the handlers (idempotent, cheap after the first call).
pub(crate) fn install() {}

/// Run `f(ctx)` under the guard, attributing a fatal signal to `module_id`.
///
/// # Safety
/// `f` must be safe to call with `ctx`. Frames between this call and a fault are skipped by
/// `siglongjmp`: they must own nothing with a destructor.
pub(crate) unsafe fn call(
    module_id: u64,
    f: unsafe extern "C" fn(*mut c_void),
    ctx: *mut c_void,
) -> Result<(), RawCrash> {
    let _ = module_id;
    // SAFETY: the caller's contract.
    unsafe { f(ctx) };
    Ok(())
}

/// Publish a module's text ranges `[start, end)` so faults on threads without a guard can be
/// attributed to it, and host callbacks can tell which module called.
pub(crate) fn register_module(module_id: u64, text: &[(u64, u64)]) {
    let _ = (module_id, text);
}

/// Forget a module's text ranges (after it is unloaded and unmapped).
pub(crate) fn unregister_module(module_id: u64) {
    let _ = module_id;
}

/// Set the function that receives crashes on threads without a guard. It runs on the guard's
/// service thread, never in the signal handler.
pub(crate) fn set_thread_crash_sink(sink: fn(RawCrash)) {
    let _ = sink;
}

/// Sinks for the host-callback trampolines: `log(module_id, level, msg)` and
/// `get_time(module_id)`. `module_id` is the active guard's module, or the module whose text
/// holds the caller's return address, or `None`.
pub(crate) fn set_host_sinks(
    log: fn(Option<u64>, i32, *const c_char),
    get_time: fn(Option<u64>) -> u64,
) {
    let _ = (log, get_time);
}

/// The `log` function pointer handed to modules: suspends the guard and calls the log sink.
pub(crate) fn log_trampoline() -> crate::interface::LogFn {
    unimplemented_log
}

/// The `get_time` function pointer handed to modules: suspends the guard and calls the sink.
pub(crate) fn get_time_trampoline() -> crate::interface::GetTimeFn {
    unimplemented_time
}

unsafe extern "C" fn unimplemented_log(_level: i32, _msg: *const c_char) {}
unsafe extern "C" fn unimplemented_time() -> u64 {
    0
}
