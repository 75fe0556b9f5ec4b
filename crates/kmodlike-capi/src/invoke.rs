//! The message entry point: `module_loader_invoke()`, the same call for a module in this
//! process and for an isolated one.

use std::ffi::{c_char, c_int, c_void};
use std::mem::MaybeUninit;

use crate::entry::{run_code, str_arg};
use crate::error::{module_error_t, ErrorSink, Failure};
use crate::handle::module_handle_t;

/// ---- Messages: the entry point of both tiers ------------------------------------------
///
/// Call the handle's module function `symbol`, a `module_invoke_fn` the module declares with
/// `MODULE_INVOKE(symbol)`, with the `in_len` bytes at `in`: its output goes to `out` (at most
/// `out_cap` bytes), its length to `*out_len`, and its return value to `*result` (when
/// `result` is not NULL).
///
/// For a module in this process this is a guarded call (as `module_loader_call_handle()`); for
/// an isolated one (`MODULE_OPEN_ISOLATED`) one round trip to its process. An output larger
/// than `out_cap` is `MODULE_ERR_BUFFER_TOO_SMALL` with the size needed in `*out_len`: call
/// again with a buffer that large (the function runs again). A function the module does not
/// declare is `MODULE_ERR_SYMBOL_NOT_FOUND`. A crash is `MODULE_ERR_CRASHED`; for an isolated
/// module also `MODULE_ERR_EXITED` (its process exited: the text has the status) and
/// `MODULE_ERR_TIMED_OUT` (past its deadline); after each the module is unloaded.
///
/// # Safety
/// `handle` is NULL or a live handle; `symbol` is NULL or a NUL-terminated string; `in` is
/// readable for `in_len` bytes (or `in_len` is 0); `out` is writable for `out_cap` bytes (or
/// `out_cap` is 0); `out_len` is valid for one write (NULL is refused); `result` is NULL or
/// valid for one write.
#[no_mangle]
#[allow(clippy::too_many_arguments)]
pub unsafe extern "C" fn module_loader_invoke(
    handle: *mut module_handle_t,
    symbol: *const c_char,
    r#in: *const c_void,
    in_len: usize,
    out: *mut c_void,
    out_cap: usize,
    out_len: *mut usize,
    result: *mut c_int,
) -> module_error_t {
    const CALL: &str = "module_loader_invoke";
    // SAFETY: the caller passes NULL or a live handle not being closed.
    let h = unsafe { handle.as_ref() };
    let sink = h.map_or(ErrorSink::none(), |h| &h.shared.errors);
    run_code(CALL, sink, || {
        let h = h.ok_or_else(|| Failure::invalid(format!("{CALL}: handle is NULL")))?;
        // SAFETY: the caller's contract on symbol.
        let symbol = unsafe { str_arg(CALL, "symbol", symbol) }?;
        if out_len.is_null() {
            return Err(Failure::invalid(format!("{CALL}: out_len is NULL")));
        }
        if r#in.is_null() && in_len != 0 {
            return Err(Failure::invalid(format!("{CALL}: in is NULL but in_len is {in_len}")));
        }
        if out.is_null() && out_cap != 0 {
            return Err(Failure::invalid(format!("{CALL}: out is NULL but out_cap is {out_cap}")));
        }
        let input: &[u8] = if in_len == 0 {
            &[]
        } else {
            // SAFETY: the caller's contract: `in` is readable for `in_len` bytes.
            unsafe { std::slice::from_raw_parts(r#in.cast(), in_len) }
        };
        let output: &mut [MaybeUninit<u8>] = if out_cap == 0 {
            &mut []
        } else {
            // SAFETY: the caller's contract: `out` is writable for `out_cap` bytes; as
            // MaybeUninit nothing is assumed of its contents.
            unsafe { std::slice::from_raw_parts_mut(out.cast(), out_cap) }
        };
        match h.handle(CALL)?.invoke_into(symbol, input, output) {
            Ok((ret, len)) => {
                // SAFETY: checked non-NULL above; the caller's contract makes it writable.
                unsafe { *out_len = len };
                if !result.is_null() {
                    // SAFETY: the caller's contract: NULL or valid for one write.
                    unsafe { *result = ret };
                }
                Ok(())
            }
            Err(e) => {
                if let kmodlike::Error::BufferTooSmall { needed, .. } = &e {
                    // SAFETY: as above.
                    unsafe { *out_len = *needed };
                }
                Err(h.shared.fail(e))
            }
        }
    })
}
