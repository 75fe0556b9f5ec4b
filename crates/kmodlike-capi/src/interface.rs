//! The module interface: the source of `module_interface.h`.
//!
//! This file is what cbindgen reads to generate `module_interface.h` (see `cbindgen-interface.toml`
//! and the `headers_are_current` test); the `MODULE_INFO` family of macros and the version macro
//! are C-only and live in that config's `after_includes` and `trailer`. It mirrors
//! `kmodlike::interface`; the unit tests below prove the two agree.

use std::ffi::{c_char, c_int, c_void};

/// Major number of the interface this loader implements: a module must have the same major.
pub const MODULE_INTERFACE_VERSION_MAJOR: u32 = 1;

/// Minor number of the interface this loader implements: a module's minor must not be newer.
/// 1.0 is the seed's interface; 1.1 adds the optional `module_can_unload()` export and the
/// `.modinfo` metadata (`MODULE_INFO` and its short forms).
pub const MODULE_INTERFACE_VERSION_MINOR: u32 = 1;

/// The `version` a host puts in `module_init_args_t`.
pub const MODULE_INIT_ARGS_VERSION_CURRENT: u32 = 1;

/// Log level for debugging detail.
// Written as a subtraction so that cbindgen emits the parenthesised `(0 - 1)`: a negative
// macro should expand to one parenthesised operand (the hand-written header had `(-1)`), and
// cbindgen prints a bare `-1` for a negative literal.
pub const MODULE_LOG_DEBUG: c_int = 0 - 1;
/// Log level for normal operation (the seed's example module logs at 0).
pub const MODULE_LOG_INFO: c_int = 0;
/// Log level for something unexpected that the module handled.
pub const MODULE_LOG_WARNING: c_int = 1;
/// Log level for a failure.
pub const MODULE_LOG_ERROR: c_int = 2;

/// What the host hands to `module_init()`: exactly the seed's four fields.
///
/// This struct never grows: hosts written from the seed fill in only these four fields. The
/// interface is extended through new optional exports instead.
///
/// A module may keep the pointer it was given for as long as it is loaded: the loader keeps
/// its own copy alive until `module_fini()` has returned.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct module_init_args {
    /// `MODULE_INIT_ARGS_VERSION_CURRENT`.
    pub version: u32,
    /// The host's log: `level` is one of the `MODULE_LOG_*` values, `msg` a NUL-terminated
    /// string. NULL when the host offers none. A crash inside it is the host's, not the
    /// module's: the crash guard is suspended while it runs.
    pub log: Option<unsafe extern "C" fn(level: c_int, msg: *const c_char)>,
    /// The host's clock: monotonic nanoseconds. NULL when the host offers none.
    pub get_time: Option<unsafe extern "C" fn() -> u64>,
    /// The host's own pointer, handed to the module unchanged.
    pub user_data: *mut c_void,
}

/// A message entry point, the one form of module function that works in both tiers (in the
/// host's process, and isolated in a process of its own): read `in_len` bytes at `in`, write at
/// most `out_cap` bytes at `out`, set `*out_len` to the bytes written, and return a result code
/// of the module's choosing. An output that needs more than `out_cap` bytes sets `*out_len` to
/// the size needed and returns without doing anything else: the loader calls again with a
/// buffer that large (`module_loader_invoke()` gives `MODULE_ERR_BUFFER_TOO_SMALL` instead).
/// Declare each one with `MODULE_INVOKE(fn)`: only declared functions can be invoked.
#[allow(non_camel_case_types)]
pub type module_invoke_fn = Option<
    unsafe extern "C" fn(
        input: *const c_void,
        in_len: usize,
        out: *mut c_void,
        out_cap: usize,
        out_len: *mut usize,
    ) -> c_int,
>;

impl From<module_init_args> for kmodlike::ModuleInitArgs {
    fn from(a: module_init_args) -> Self {
        kmodlike::ModuleInitArgs {
            version: a.version,
            log: a.log,
            get_time: a.get_time,
            user_data: a.user_data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kmodlike::interface as core;

    #[test]
    fn constants_match_the_core_crate() {
        assert_eq!(
            core::interface_version(
                MODULE_INTERFACE_VERSION_MAJOR as u16,
                MODULE_INTERFACE_VERSION_MINOR as u16
            ),
            core::MODULE_INTERFACE_VERSION_CURRENT
        );
        assert_eq!(MODULE_INIT_ARGS_VERSION_CURRENT, core::MODULE_INIT_ARGS_VERSION_CURRENT);
        assert_eq!(MODULE_LOG_DEBUG, core::log_level::DEBUG);
        assert_eq!(MODULE_LOG_INFO, core::log_level::INFO);
        assert_eq!(MODULE_LOG_WARNING, core::log_level::WARNING);
        assert_eq!(MODULE_LOG_ERROR, core::log_level::ERROR);
    }

    #[test]
    fn init_args_layout_matches_the_core_crate() {
        use std::mem::{align_of, offset_of, size_of};
        assert_eq!(size_of::<module_init_args>(), size_of::<core::ModuleInitArgs>());
        assert_eq!(align_of::<module_init_args>(), align_of::<core::ModuleInitArgs>());
        assert_eq!(offset_of!(module_init_args, log), offset_of!(core::ModuleInitArgs, log));
        assert_eq!(
            offset_of!(module_init_args, get_time),
            offset_of!(core::ModuleInitArgs, get_time)
        );
        assert_eq!(
            offset_of!(module_init_args, user_data),
            offset_of!(core::ModuleInitArgs, user_data)
        );
    }
}
