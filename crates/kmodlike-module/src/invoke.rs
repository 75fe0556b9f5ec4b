//! Message entry points (`module_invoke_fn`): the one form of module function that works in
//! both tiers, in the host's process and isolated in a process of its own. See [`invoke!`].
//!
//! [`invoke!`]: crate::invoke!

use std::cell::RefCell;
use std::ffi::{c_int, c_void};

/// What an invoke function returns when its body panicked (the panic is reported to the host's
/// log, as for [`export!`](crate::export!)).
pub const INVOKE_PANICKED: c_int = -1;

thread_local! {
    /// The last output that did not fit, with its function and input: the loader calls again
    /// with a buffer that large, and gets it without running the body twice.
    static STASH: RefCell<Option<Stashed>> = const { RefCell::new(None) };
}

/// A kept output: the function, its input, its result code and its output.
type Stashed = (&'static str, Vec<u8>, c_int, Vec<u8>);

/// The body of an invoke export `name`: run `f` on the input (unless the same call's output is
/// stashed), and write its output, or the size it needs.
///
/// # Safety
/// The arguments are those of a `module_invoke_fn` call: `input` readable for `in_len` bytes
/// (or `in_len` 0), `out` writable for `out_cap` bytes (or `out_cap` 0), `out_len` writable.
pub unsafe fn run(
    name: &'static str,
    input: *const c_void,
    in_len: usize,
    out: *mut c_void,
    out_cap: usize,
    out_len: *mut usize,
    f: impl FnOnce(&[u8]) -> (c_int, Vec<u8>),
) -> c_int {
    let input: &[u8] = if in_len == 0 || input.is_null() {
        &[]
    } else {
        // SAFETY: the caller's contract: readable for `in_len` bytes.
        unsafe { std::slice::from_raw_parts(input.cast(), in_len) }
    };
    let stashed = STASH.with(|s| {
        let mut s = s.borrow_mut();
        match s.take() {
            Some((n, i, r, o)) if n == name && i == input => Some((r, o)),
            _ => None,
        }
    });
    let (ret, output) = match stashed {
        Some(kept) => kept,
        None => crate::panic::guard(name, || (INVOKE_PANICKED, Vec::new()), || f(input)),
    };
    if out_len.is_null() {
        return ret;
    }
    if output.len() > out_cap || (out.is_null() && !output.is_empty()) {
        // SAFETY: the caller's contract: `out_len` is writable.
        unsafe { *out_len = output.len() };
        STASH.with(|s| *s.borrow_mut() = Some((name, input.to_vec(), ret, output)));
        return ret;
    }
    if !output.is_empty() {
        // SAFETY: `out` is writable for `out_cap >= output.len()` bytes and does not overlap
        // our own vector.
        unsafe { std::ptr::copy_nonoverlapping(output.as_ptr(), out.cast::<u8>(), output.len()) };
    }
    // SAFETY: as above.
    unsafe { *out_len = output.len() };
    ret
}

/// What an invoke body may return: bytes (result 0), or a result code and bytes.
pub trait InvokeOutput {
    /// The result code and the bytes.
    fn into_reply(self) -> (c_int, Vec<u8>);
}

impl InvokeOutput for Vec<u8> {
    fn into_reply(self) -> (c_int, Vec<u8>) {
        (0, self)
    }
}

impl InvokeOutput for (c_int, Vec<u8>) {
    fn into_reply(self) -> (c_int, Vec<u8>) {
        self
    }
}

impl InvokeOutput for Result<Vec<u8>, c_int> {
    fn into_reply(self) -> (c_int, Vec<u8>) {
        match self {
            Ok(v) => (0, v),
            Err(code) => (code, Vec::new()),
        }
    }
}

/// The serde form: decode the input as JSON into `T`, run `f`, encode its result as JSON. A
/// malformed input returns [`INVOKE_BAD_INPUT`] with the decoder's message as output.
#[cfg(feature = "serde")]
pub fn json<T: serde::de::DeserializeOwned, U: serde::Serialize>(
    input: &[u8],
    f: impl FnOnce(T) -> U,
) -> (c_int, Vec<u8>) {
    match serde_json::from_slice::<T>(input) {
        Ok(t) => match serde_json::to_vec(&f(t)) {
            Ok(v) => (0, v),
            Err(e) => (INVOKE_BAD_OUTPUT, e.to_string().into_bytes()),
        },
        Err(e) => (INVOKE_BAD_INPUT, format!("malformed input: {e}").into_bytes()),
    }
}

/// The serde form's result code for an input that does not decode.
pub const INVOKE_BAD_INPUT: c_int = -2;
/// The serde form's result code for an output that does not encode.
pub const INVOKE_BAD_OUTPUT: c_int = -3;
