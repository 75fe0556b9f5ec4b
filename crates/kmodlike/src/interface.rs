//! The module interface: the C ABI every module implements (`module_interface.h`).
//!
//! A module exports three functions:
//!
//! | export | C signature | when it runs |
//! |---|---|---|
//! | `module_get_interface_version` | `uint32_t (void)` | at load, before anything else |
//! | `module_init` | `int (const void *init_args)` | on the first open; non-zero fails the load |
//! | `module_fini` | `void (void)` | on the last close |
//!
//! and may export `int module_can_unload(void)` (a non-zero return vetoes the last close, as an
//! illumos `_fini` returning `EBUSY` does) and `void mod_hello(void)` (the legacy entry point the
//! main program calls after a load).

use std::ffi::{c_char, c_int, c_void};
use std::fmt;

/// Pack a major and minor number into an interface version (`major << 16 | minor`).
pub const fn interface_version(major: u16, minor: u16) -> u32 {
    ((major as u32) << 16) | minor as u32
}

/// The interface version this loader implements: 1.1.
///
/// 1.0 is the seed's interface (three exports, `module_init_args_t`); 1.1 adds the optional
/// `module_can_unload` export and `.modinfo` metadata. A module is accepted when its major equals
/// ours and its minor is not newer.
pub const MODULE_INTERFACE_VERSION_CURRENT: u32 = interface_version(1, 1);

/// The version of [`ModuleInitArgs`] this loader fills in.
pub const MODULE_INIT_ARGS_VERSION_CURRENT: u32 = 1;

/// Log levels passed to the host's `log` callback.
pub mod log_level {
    /// Debugging detail.
    pub const DEBUG: i32 = -1;
    /// Normal operation (the seed's example logs at 0).
    pub const INFO: i32 = 0;
    /// Something unexpected that the module handled.
    pub const WARNING: i32 = 1;
    /// A failure.
    pub const ERROR: i32 = 2;
}

/// `void (*log)(int level, const char *msg)`.
pub type LogFn = unsafe extern "C" fn(level: c_int, msg: *const c_char);
/// `uint64_t (*get_time)(void)`: monotonic nanoseconds.
pub type GetTimeFn = unsafe extern "C" fn() -> u64;

/// `module_init_args_t`: exactly the seed's four fields. Never grown; the interface is extended
/// through new optional exports instead, so hosts written from the seed stay correct.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct ModuleInitArgs {
    /// [`MODULE_INIT_ARGS_VERSION_CURRENT`].
    pub version: u32,
    /// Host logging callback, or NULL.
    pub log: Option<LogFn>,
    /// Host monotonic clock in nanoseconds, or NULL.
    pub get_time: Option<GetTimeFn>,
    /// Opaque host pointer handed to the module unchanged.
    pub user_data: *mut c_void,
}

/// An interface version split into its parts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Version {
    /// Incompatible changes.
    pub major: u16,
    /// Compatible additions.
    pub minor: u16,
}

impl Version {
    /// Split a packed `major << 16 | minor` value.
    pub const fn from_raw(raw: u32) -> Self {
        Version { major: (raw >> 16) as u16, minor: (raw & 0xffff) as u16 }
    }
    /// The packed value.
    pub const fn raw(self) -> u32 {
        interface_version(self.major, self.minor)
    }
    /// The loader's own version.
    pub const fn current() -> Self {
        Self::from_raw(MODULE_INTERFACE_VERSION_CURRENT)
    }
    /// Whether a module built for `self` can be loaded by a loader at `loader`:
    /// same major, module minor not newer.
    pub const fn is_compatible_with(self, loader: Version) -> bool {
        self.major == loader.major && self.minor <= loader.minor
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// Names of the exports the loader looks for.
pub mod symbols {
    /// Required: `uint32_t module_get_interface_version(void)`.
    pub const GET_INTERFACE_VERSION: &str = "module_get_interface_version";
    /// Required: `int module_init(const void *init_args)`.
    pub const INIT: &str = "module_init";
    /// Required: `void module_fini(void)`.
    pub const FINI: &str = "module_fini";
    /// Optional: `int module_can_unload(void)`; non-zero vetoes the last close.
    pub const CAN_UNLOAD: &str = "module_can_unload";
    /// Optional, legacy: `void mod_hello(void)`.
    pub const HELLO: &str = "mod_hello";
    /// The three required exports, in the order they are checked.
    pub const REQUIRED: [&str; 3] = [GET_INTERFACE_VERSION, INIT, FINI];
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_compatibility_requires_equal_major_and_no_newer_minor() {
        let loader = Version { major: 1, minor: 1 };
        assert!(Version { major: 1, minor: 0 }.is_compatible_with(loader));
        assert!(Version { major: 1, minor: 1 }.is_compatible_with(loader));
        assert!(!Version { major: 1, minor: 2 }.is_compatible_with(loader));
        assert!(!Version { major: 2, minor: 0 }.is_compatible_with(loader));
        assert!(!Version { major: 0, minor: 9 }.is_compatible_with(loader));
    }

    #[test]
    fn version_round_trips_through_raw() {
        let v = Version::from_raw(MODULE_INTERFACE_VERSION_CURRENT);
        assert_eq!(v, Version { major: 1, minor: 1 });
        assert_eq!(v.raw(), MODULE_INTERFACE_VERSION_CURRENT);
        assert_eq!(v.to_string(), "1.1");
    }
}
