//! The bodies of the three interface exports (and `module_can_unload`) that
//! [`module!`](crate::module) generates: each keeps or forgets the host, runs the module's safe
//! function under [`guard`], and turns the outcome into the C return value.

use std::ffi::{c_int, c_void};
use std::fmt;
use std::num::NonZeroI32;

use crate::host::{self, Context, Level};
use crate::panic::guard;

/// What `module_init` returns when the module's `init` panics: 101, the exit status of a Rust
/// program that panics. The panic message goes to the host's log.
pub const INIT_PANICKED: i32 = 101;

/// Why a module's `init` failed: a non-zero code for `module_init` to return (the loader
/// reports it as the init return code) and, optionally, a message for the host's log.
///
/// A module's `init` is `fn(&Context) -> Result<(), InitError>`. Common error types convert
/// into `InitError`, so `init` can use `?` on them:
///
/// | from | code | message |
/// |---|---|---|
/// | `i32` | the value (`0` becomes [`InitError::FAILED`]) | none |
/// | `&str`, `String` | [`InitError::FAILED`] | the text |
/// | `std::io::Error` | `-errno` when it has one, else [`InitError::FAILED`] | its `Display` |
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitError {
    code: NonZeroI32,
    message: Option<String>,
}

impl InitError {
    /// The generic failure code, `-1`.
    pub const FAILED: i32 = -1;

    /// Fail with `code` (a zero `code` means success in C, so it becomes [`InitError::FAILED`]).
    pub fn new(code: i32) -> InitError {
        InitError { code: nonzero(code), message: None }
    }

    /// Fail with [`InitError::FAILED`] and `message`.
    pub fn msg(message: impl Into<String>) -> InitError {
        InitError { code: nonzero(Self::FAILED), message: Some(message.into()) }
    }

    /// Fail with `code` and `message`.
    pub fn with_message(code: i32, message: impl Into<String>) -> InitError {
        InitError { code: nonzero(code), message: Some(message.into()) }
    }

    /// The code `module_init` returns.
    pub fn code(&self) -> i32 {
        self.code.get()
    }

    /// The message for the host's log, if any.
    pub fn message(&self) -> Option<&str> {
        self.message.as_deref()
    }
}

fn nonzero(code: i32) -> NonZeroI32 {
    const FAILED: NonZeroI32 = match NonZeroI32::new(InitError::FAILED) {
        Some(code) => code,
        None => unreachable!(),
    };
    NonZeroI32::new(code).unwrap_or(FAILED)
}

impl fmt::Display for InitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.message {
            Some(message) => write!(f, "{message} (code {})", self.code),
            None => write!(f, "code {}", self.code),
        }
    }
}

impl std::error::Error for InitError {}

impl From<i32> for InitError {
    fn from(code: i32) -> InitError {
        InitError::new(code)
    }
}

impl From<&str> for InitError {
    fn from(message: &str) -> InitError {
        InitError::msg(message)
    }
}

impl From<String> for InitError {
    fn from(message: String) -> InitError {
        InitError::msg(message)
    }
}

impl From<std::io::Error> for InitError {
    fn from(err: std::io::Error) -> InitError {
        let code = err.raw_os_error().map_or(Self::FAILED, |errno| -errno);
        InitError::with_message(code, err.to_string())
    }
}

/// `module_init`: keep the host, run `init`, report a failure or panic, return the C code.
///
/// # Safety
/// `init_args` is null or a valid `module_init_args_t` (the interface's contract for the host).
pub unsafe fn module_init<F>(init_args: *const c_void, init: F) -> c_int
where
    F: FnOnce(&Context) -> Result<(), InitError>,
{
    // SAFETY: forwarded from this function's contract.
    let ctx = unsafe { Context::from_raw(init_args) };
    host::install(&ctx);
    let result = guard("module_init", || Err(None), || init(&ctx).map_err(Some));
    match result {
        Ok(()) => 0,
        Err(error) => {
            let code = match error {
                // The panic hook has logged the message.
                None => INIT_PANICKED,
                Some(error) => {
                    ctx.log(Level::Error, &format!("module_init failed: {error}"));
                    error.code()
                }
            };
            host::clear();
            code
        }
    }
}

/// `module_fini`: run `fini` (a panic is logged and swallowed: the loader unloads the module
/// regardless), then forget the host.
pub fn module_fini(fini: impl FnOnce()) {
    guard("module_fini", || (), fini);
    host::clear();
}

/// `module_fini` of a module that declared no `fini`.
pub fn module_fini_default() {
    host::clear();
}

/// `module_can_unload`: 0 when `can_unload` allows the unload, 1 when it refuses or panics (a
/// module whose state is in doubt is kept rather than finalised).
pub fn module_can_unload(can_unload: impl FnOnce() -> bool) -> c_int {
    c_int::from(!guard("module_can_unload", || false, can_unload))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_errors_never_carry_a_zero_code() {
        assert_eq!(InitError::new(0).code(), InitError::FAILED);
        assert_eq!(InitError::from(0).code(), -1);
        assert_eq!(InitError::new(-22).code(), -22);
        assert_eq!(InitError::with_message(0, "x").code(), -1);
    }

    #[test]
    fn init_errors_convert_from_common_error_types() {
        let e = InitError::from("no config");
        assert_eq!((e.code(), e.message()), (-1, Some("no config")));
        let e = InitError::from(String::from("owned"));
        assert_eq!(e.message(), Some("owned"));
        let e = InitError::from(std::io::Error::from_raw_os_error(libc::ENOENT));
        assert_eq!(e.code(), -libc::ENOENT);
        assert!(e.message().unwrap().contains("No such file"), "{e}");
        assert_eq!(InitError::with_message(3, "bad").to_string(), "bad (code 3)");
        assert_eq!(InitError::new(3).to_string(), "code 3");
    }

    #[test]
    fn lifecycle_exports_return_the_documented_codes() {
        // One test touches the instance-wide host, so no other test races on it.
        // SAFETY: null init args are allowed.
        let ok = unsafe { module_init(std::ptr::null(), |_| Ok(())) };
        assert_eq!(ok, 0);
        // SAFETY: as above.
        let failed = unsafe { module_init(std::ptr::null(), |_| Err(InitError::new(-5))) };
        assert_eq!(failed, -5);
        // SAFETY: as above.
        let panicked = unsafe { module_init(std::ptr::null(), |_| panic!("init boom")) };
        assert_eq!(panicked, INIT_PANICKED);
        assert_eq!(module_can_unload(|| true), 0);
        assert_eq!(module_can_unload(|| false), 1);
        assert_eq!(module_can_unload(|| -> bool { panic!("can_unload boom") }), 1);
        module_fini(|| panic!("fini boom"));
        assert!(!host::host().has_log());
    }
}
