//! How every exported call enters Rust: a panic is caught and turned into
//! `MODULE_ERR_INTERNAL` (it must never unwind into C), failures are recorded as the calling
//! thread's last error, and C arguments are checked before use.

use std::any::Any;
use std::ffi::{c_char, CStr};
use std::panic::{catch_unwind, AssertUnwindSafe};

use crate::error::{module_error_t, ErrorSink, Failure};

/// Run the body of the exported call `call`, catching panics; a failure (or a caught panic) is
/// recorded on `sink` and returned as its code.
pub(crate) fn run<T>(
    call: &'static str,
    sink: &ErrorSink,
    body: impl FnOnce() -> Result<T, Failure>,
) -> Result<T, module_error_t> {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(v)) => return Ok(v),
        Ok(Err(f)) => f,
        Err(payload) => Failure::new(
            module_error_t::MODULE_ERR_INTERNAL,
            format!("internal error in {call}: {}", panic_text(payload.as_ref())),
        ),
    };
    // Recording allocates; should even that panic, the code still reaches the caller.
    let _ = catch_unwind(AssertUnwindSafe(|| sink.record(&failure.text)));
    Err(failure.code)
}

/// Like [`run`] for calls that return a code.
pub(crate) fn run_code(
    call: &'static str,
    sink: &ErrorSink,
    body: impl FnOnce() -> Result<(), Failure>,
) -> module_error_t {
    match run(call, sink, body) {
        Ok(()) => module_error_t::MODULE_ERR_SUCCESS,
        Err(code) => code,
    }
}

/// Like [`run`] for calls that return a pointer and report through an optional `errp`
/// (ddi_modopen style): NULL and the code on failure, the pointer and `MODULE_ERR_SUCCESS`
/// otherwise.
///
pub(crate) fn run_ptr<T>(
    call: &'static str,
    sink: &ErrorSink,
    errp: Option<&mut module_error_t>,
    body: impl FnOnce() -> Result<*mut T, Failure>,
) -> *mut T {
    let (ptr, code) = match run(call, sink, body) {
        Ok(p) => (p, module_error_t::MODULE_ERR_SUCCESS),
        Err(code) => (std::ptr::null_mut(), code),
    };
    if let Some(errp) = errp {
        *errp = code;
    }
    ptr
}

/// The message of a caught panic.
fn panic_text(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("panic: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("panic: {s}")
    } else {
        "panic with a non-text payload".to_owned()
    }
}

/// A required, non-empty, UTF-8 string argument.
///
/// # Safety
/// `ptr` is NULL or points to a NUL-terminated string that stays valid during the call.
pub(crate) unsafe fn str_arg<'a>(
    call: &str,
    what: &str,
    ptr: *const c_char,
) -> Result<&'a str, Failure> {
    if ptr.is_null() {
        return Err(Failure::invalid(format!("{call}: {what} is NULL")));
    }
    // SAFETY: non-NULL, and the caller promises a NUL-terminated string alive for the call.
    let s = unsafe { CStr::from_ptr(ptr) };
    let s = s.to_str().map_err(|_| {
        Failure::invalid(format!("{call}: {what} {:?} is not valid UTF-8", s.to_string_lossy()))
    })?;
    if s.is_empty() {
        return Err(Failure::invalid(format!("{call}: {what} is empty")));
    }
    Ok(s)
}

/// Copy `text` into the C buffer `buf` of `len` bytes, truncating at a character boundary and
/// always NUL-terminating (nothing is written when `buf` is NULL or `len` is 0).
///
/// # Safety
/// `buf` is NULL or valid for writes of `len` bytes.
pub(crate) unsafe fn copy_to_buf(text: &str, buf: *mut c_char, len: usize) {
    if buf.is_null() || len == 0 {
        return;
    }
    let n = truncated_len(text, len - 1);
    // SAFETY: n + 1 <= len bytes are written into a buffer the caller promises holds len; the
    // source is a live &str of at least n bytes, and the two cannot overlap (Rust owns text).
    unsafe {
        std::ptr::copy_nonoverlapping(text.as_ptr().cast::<c_char>(), buf, n);
        *buf.add(n) = 0;
    }
}

/// Copy `text` into a fixed-size C array, truncated and NUL-terminated.
pub(crate) fn copy_to_array<const N: usize>(text: &str, out: &mut [c_char; N]) {
    if N == 0 {
        return;
    }
    let n = truncated_len(text, N - 1);
    for (dst, src) in out.iter_mut().zip(text.as_bytes()[..n].iter()) {
        *dst = *src as c_char;
    }
    out[n..].fill(0);
}

/// The longest prefix of `text` of at most `max` bytes that ends on a character boundary and
/// holds no NUL.
fn truncated_len(text: &str, max: usize) -> usize {
    let mut n = text.len().min(max);
    while !text.is_char_boundary(n) {
        n -= 1;
    }
    text.as_bytes()[..n].iter().position(|b| *b == 0).unwrap_or(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_panic_becomes_internal_with_its_message() {
        let sink = ErrorSink::new();
        let r: Result<(), _> = run("module_loader_test", &sink, || panic!("boom"));
        assert_eq!(r, Err(module_error_t::MODULE_ERR_INTERNAL));
        // SAFETY: last() points to this thread's live text.
        let text = unsafe { CStr::from_ptr(sink.last()) }.to_str().unwrap().to_owned();
        assert_eq!(text, "internal error in module_loader_test: panic: boom");
    }

    #[test]
    fn strings_are_checked_and_copied_safely() {
        let sink = ErrorSink::none();
        // SAFETY: NULL and a literal NUL-terminated string.
        let e = unsafe { str_arg("f", "path", std::ptr::null()) }.unwrap_err();
        assert_eq!(e.text, "f: path is NULL");
        // SAFETY: a literal NUL-terminated string.
        let e = unsafe { str_arg("f", "path", c"".as_ptr()) }.unwrap_err();
        assert_eq!(e.text, "f: path is empty");
        let _ = sink;

        let mut arr = [1 as c_char; 6];
        copy_to_array("héllo", &mut arr); // 'é' is 2 bytes: "hél" is 4 bytes, "héll" 5
        assert_eq!(arr.map(|c| c as u8), *b"h\xc3\xa9ll\0");
        let mut buf = [1 as c_char; 4];
        // SAFETY: buf holds 4 bytes.
        unsafe { copy_to_buf("abcdef", buf.as_mut_ptr(), buf.len()) };
        assert_eq!(buf.map(|c| c as u8), *b"abc\0");
    }
}
