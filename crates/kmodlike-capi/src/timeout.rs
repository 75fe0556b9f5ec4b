//! Call time limits: a deadline for guarded calls, after which the call is interrupted.

use std::ffi::c_uint;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::entry::run_code;
use crate::error::{module_error_t, Failure};
use crate::handle::module_handle_t;
use crate::loader::{module_loader_t, sink_of};

fn limit(ms: c_uint) -> Option<Duration> {
    (ms != 0).then(|| Duration::from_millis(u64::from(ms)))
}

/// ---- Call time limits ------------------------------------------------------------------
///
/// Set the time limit, in milliseconds, of every guarded call made through this loader
/// (`module_loader_call()`, and `module_loader_call_handle()` on handles without a limit of
/// their own) and of `module_init()` in later loads; 0 (the default) for none.
///
/// A call that runs past its limit is interrupted wherever it is (a loop, a blocking
/// `read()` or `sleep()`), by the guard's interrupt signal (a real-time signal, `SIGRTMAX-4`
/// unless `KMODLIKE_INTERRUPT_SIGNAL` names another): the call returns `MODULE_ERR_TIMED_OUT`
/// and the module is unloaded as after a crash; `module_loader_last_crash()` says where it was.
/// A call inside a host callback (`log`, `get_time`) is interrupted when the callback returns.
/// A module that blocks the interrupt signal cannot be interrupted: it is reported hung, its
/// later calls fail with `MODULE_ERR_NOT_LOADED`, and unloading it leaves its thread alone.
///
/// # Safety
/// `loader` is NULL or a live loader.
#[no_mangle]
pub unsafe extern "C" fn module_loader_set_call_timeout(
    loader: *mut module_loader_t,
    ms: c_uint,
) -> module_error_t {
    // SAFETY: the caller passes NULL or a loader from module_loader_create*() not yet destroyed.
    let l = unsafe { loader.as_ref() };
    run_code("module_loader_set_call_timeout", sink_of(l), || {
        let l =
            l.ok_or_else(|| Failure::invalid("module_loader_set_call_timeout: loader is NULL"))?;
        l.loader.set_call_timeout(limit(ms));
        l.timeout_ms.store(ms, Ordering::Relaxed);
        Ok(())
    })
}

/// Set the time limit, in milliseconds, of guarded calls made through this handle
/// (`module_loader_call_handle()`); 0 for the loader's (`module_loader_set_call_timeout()`).
///
/// # Safety
/// `handle` is NULL or a live handle from `module_loader_open()`.
#[no_mangle]
pub unsafe extern "C" fn module_loader_handle_set_call_timeout(
    handle: *mut module_handle_t,
    ms: c_uint,
) -> module_error_t {
    const CALL: &str = "module_loader_handle_set_call_timeout";
    // SAFETY: the caller passes NULL or a live handle.
    let h = unsafe { handle.as_ref() };
    let sink = h.map_or(crate::error::ErrorSink::none(), |h| &h.shared.errors);
    run_code(CALL, sink, || {
        let h = h.ok_or_else(|| Failure::invalid(format!("{CALL}: handle is NULL")))?;
        h.handle(CALL)?.set_call_timeout(limit(ms));
        Ok(())
    })
}
