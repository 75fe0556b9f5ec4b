//! Panics never cross `extern "C"`: every export the SDK generates runs the module's code inside
//! [`std::panic::catch_unwind`] and turns a panic into a value the C caller can see.
//!
//! The panic message goes to the host's log. Rust prints panic messages from a *panic hook*;
//! a module built as a `cdylib` links its own copy of `std`, so the hook this module installs
//! governs the panics of this module only (never the host's, never another module's). The rule
//! it implements: when the host gave a `log` callback, every panic message of the module goes
//! there (and not to stderr); when it gave none, Rust's default hook prints it to stderr as
//! usual. With `RUST_BACKTRACE` set, the default hook runs as well, so backtraces still work.

use std::any::Any;
use std::cell::Cell;
use std::panic::{self, AssertUnwindSafe};
use std::sync::Once;

use crate::host::{host, Level};

thread_local! {
    /// The export this thread is running inside, if any (a `Cell` of `Copy` data: no TLS
    /// destructor, so a thread that panicked does not pin the module in memory after
    /// `dlclose`).
    static CURRENT_EXPORT: Cell<Option<&'static str>> = const { Cell::new(None) };
}

static HOOK: Once = Once::new();

/// Install the module's panic hook (once per instance; cheap afterwards).
pub(crate) fn install_hook() {
    HOOK.call_once(|| {
        let default_hook = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            let host = host();
            if !host.has_log() || backtrace_requested() {
                default_hook(info);
            }
            if host.has_log() {
                let location = info
                    .location()
                    .map(|l| format!(" at {}:{}:{}", l.file(), l.line(), l.column()))
                    .unwrap_or_default();
                let msg = payload_message(info.payload());
                let what = match CURRENT_EXPORT.with(Cell::get) {
                    Some(export) => format!("`{export}`"),
                    None => {
                        let thread = std::thread::current();
                        format!("thread '{}'", thread.name().unwrap_or("<unnamed>"))
                    }
                };
                let outcome = if cfg!(panic = "abort") {
                    "; the module was built with panic=abort: the process aborts"
                } else {
                    ""
                };
                host.log(Level::Error, &format!("panic in {what}{location}: {msg}{outcome}"));
            }
        }));
    });
}

fn backtrace_requested() -> bool {
    std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0")
}

/// The text of a panic payload (`panic!("...")` gives a `&str` or a `String`).
pub(crate) fn payload_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(s) = payload.downcast_ref::<&'static str>() {
        s
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s
    } else {
        "Box<dyn Any> (a non-string panic payload)"
    }
}

/// Run `f` as export `name`: a panic is caught and reported (by the hook, see the module docs),
/// and `on_panic` is returned instead. Never unwinds.
pub(crate) fn guard<R>(
    name: &'static str,
    on_panic: impl FnOnce() -> R,
    f: impl FnOnce() -> R,
) -> R {
    install_hook();
    let outer = CURRENT_EXPORT.with(|c| c.replace(Some(name)));
    let result = panic::catch_unwind(AssertUnwindSafe(f));
    CURRENT_EXPORT.with(|c| c.set(outer));
    match result {
        Ok(value) => value,
        Err(payload) => {
            drop_payload(payload);
            on_panic()
        }
    }
}

/// Drop a caught panic payload; a payload whose destructor panics in turn is leaked (the one
/// thing that could still unwind out of [`guard`]).
fn drop_payload(payload: Box<dyn Any + Send>) {
    if let Err(second) = panic::catch_unwind(AssertUnwindSafe(move || drop(payload))) {
        std::mem::forget(second);
    }
}

/// The value an exported function returns to its C caller when it panics.
///
/// [`export!`](crate::export) requires it of every return type, so what a caller sees after a
/// panic is part of the function's type and documented in one place:
///
/// | return type | value after a panic |
/// |---|---|
/// | `()` | `()` |
/// | `i8`, `i16`, `i32`, `i64`, `isize` | `MIN` (`i32::MIN` = -2147483648) |
/// | `u8`, `u16`, `u32`, `u64`, `usize` | `MAX` |
/// | `f32`, `f64` | NaN |
/// | `bool` | `false` |
/// | `*const T`, `*mut T` | null |
/// | `Option<T>` (e.g. `Option<extern "C" fn()>`, `Option<NonNull<T>>`) | `None` |
///
/// Implement it for your own `#[repr(C)]` types to return them from exports:
///
/// ```
/// use kmodlike_module::PanicValue;
///
/// #[repr(C)]
/// #[derive(Clone, Copy)]
/// pub struct Point { x: i32, y: i32 }
///
/// impl PanicValue for Point {
///     fn panic_value() -> Self { Point { x: i32::MIN, y: i32::MIN } }
/// }
/// ```
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from an exported function: it has no panic value",
    label = "this return type does not implement `kmodlike_module::PanicValue`",
    note = "an export returns `PanicValue::panic_value()` when it panics: implement \
            `kmodlike_module::PanicValue` for `{Self}` (it must also be FFI-safe, e.g. `#[repr(C)]`)"
)]
pub trait PanicValue {
    /// What the export returns after a panic.
    fn panic_value() -> Self;
}

impl PanicValue for () {
    fn panic_value() -> Self {}
}

macro_rules! panic_value_is {
    ($value:ident: $($t:ty),*) => {
        $(impl PanicValue for $t {
            fn panic_value() -> Self { <$t>::$value }
        })*
    };
}
panic_value_is!(MIN: i8, i16, i32, i64, isize);
panic_value_is!(MAX: u8, u16, u32, u64, usize);
panic_value_is!(NAN: f32, f64);

impl PanicValue for bool {
    fn panic_value() -> Self {
        false
    }
}

impl<T> PanicValue for *const T {
    fn panic_value() -> Self {
        std::ptr::null()
    }
}

impl<T> PanicValue for *mut T {
    fn panic_value() -> Self {
        std::ptr::null_mut()
    }
}

impl<T> PanicValue for Option<T> {
    fn panic_value() -> Self {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn panic_values_are_the_documented_ones() {
        assert_eq!(i32::panic_value(), i32::MIN);
        assert_eq!(i64::panic_value(), i64::MIN);
        assert_eq!(u8::panic_value(), u8::MAX);
        assert_eq!(usize::panic_value(), usize::MAX);
        assert!(f64::panic_value().is_nan());
        assert!(!bool::panic_value());
        assert!(<*const u8>::panic_value().is_null());
        assert!(<*mut u8>::panic_value().is_null());
        assert!(<Option<extern "C" fn()>>::panic_value().is_none());
    }

    #[test]
    fn guard_returns_the_value_or_the_panic_value_and_restores_the_export_name() {
        assert_eq!(guard("ok", || -1, || 5), 5);
        let value = guard(
            "outer",
            || -1,
            || {
                let inner = guard("inner", || -2, || panic!("inner boom"));
                assert_eq!(CURRENT_EXPORT.with(Cell::get), Some("outer"));
                inner
            },
        );
        assert_eq!(value, -2);
        assert_eq!(CURRENT_EXPORT.with(Cell::get), None);
        assert_eq!(guard("panics", i32::panic_value, || panic!("boom {}", 1)), i32::MIN);
    }

    #[test]
    fn payload_messages_are_read_from_str_and_string_payloads() {
        assert_eq!(payload_message(&"static"), "static");
        assert_eq!(payload_message(&String::from("owned")), "owned");
        assert!(payload_message(&42u8).contains("non-string"));
    }
}
