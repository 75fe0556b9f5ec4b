//! Write [kmodlike] modules in safe Rust.
//!
//! A kmodlike module is a shared object that exports a small C interface
//! (`module_interface.h`): `module_get_interface_version`, `module_init` and `module_fini`,
//! optionally `module_can_unload`, plus whatever functions the host looks up by name. This
//! crate writes all of that for you. A module author writes safe Rust: no `extern "C"`, no raw
//! pointers, no `#[no_mangle]`, and no panic ever unwinds into the loader.
//!
//! * [`module!`] declares the module: its `init` and `fini`, an optional `can_unload` veto, and
//!   its `.modinfo` metadata (version, description, license, author, dependencies).
//! * [`export!`] exports further functions with C-callable signatures, each guarded against
//!   panics.
//! * [`Context`] is what the host gave the module: its log, its monotonic clock and its opaque
//!   `user_data`. `init` receives it; [`host()`] returns it anywhere else, and [`log_info!`] and
//!   friends log through it.
//!
//! # A complete module
//!
//! `Cargo.toml`:
//!
//! ```toml
//! [package]
//! name = "greeter"
//! version = "1.2.0"        # becomes the module's `.modinfo` version
//! edition = "2021"
//!
//! [lib]
//! crate-type = ["cdylib"]  # a shared object the loader can dlopen
//!
//! [dependencies]
//! kmodlike-module = "0.1"
//! ```
//!
//! `src/lib.rs`:
//!
//! ```
//! use std::sync::atomic::{AtomicU32, Ordering};
//! use kmodlike_module::{export, log_info, module, Context, InitError, Level};
//!
//! static GREETINGS: AtomicU32 = AtomicU32::new(0);
//!
//! module! {
//!     init: init,
//!     fini: fini,
//!     description: "Greets through the host's log",
//!     license: "MIT OR Apache-2.0",
//!     author: "A. Module Author",
//! }
//!
//! fn init(ctx: &Context) -> Result<(), InitError> {
//!     ctx.log(Level::Info, "greeter initializing");
//!     if ctx.user_data().is_null() {
//!         log_info!("no user_data from the host, which is fine");
//!     }
//!     Ok(())
//! }
//!
//! fn fini() {
//!     let n = GREETINGS.load(Ordering::Relaxed);
//!     log_info!("greeter finalizing after {n} greetings");
//! }
//!
//! export! {
//!     /// `void mod_hello(void)`: the entry point the main program calls after a load.
//!     fn mod_hello() {
//!         GREETINGS.fetch_add(1, Ordering::Relaxed);
//!         log_info!("Hello from a module written in Rust!");
//!     }
//!
//!     /// `int32_t add(int32_t, int32_t)`; returns `INT32_MIN` if it panics.
//!     fn add(a: i32, b: i32) -> i32 {
//!         a.checked_add(b).expect("add overflowed")
//!     }
//! }
//! # fn main() {
//! #     // What a host does, through the C ABI the macros generated.
//! #     assert_eq!(module_get_interface_version(), kmodlike_module::INTERFACE_VERSION);
//! #     // SAFETY: NULL init args are allowed.
//! #     assert_eq!(unsafe { module_init(std::ptr::null()) }, 0);
//! #     mod_hello();
//! #     assert_eq!(add(2, 3), 5);
//! #     assert_eq!(add(i32::MAX, 1), i32::MIN); // the panic is caught
//! #     module_fini();
//! #     assert_eq!(GREETINGS.load(Ordering::Relaxed), 1);
//! # }
//! ```
//!
//! Build it with `cargo build --release`, and install `target/release/libgreeter.so` under the
//! name the module should have (the loader names a module after its file: `misc/greeter.so` is
//! `greeter`). Load it with `kmodctl load`, `module_loader_load` or
//! [`kmodlike::Loader::open`][kmodlike]. `objdump -s -j .modinfo` on the
//! file shows the metadata; `kmodctl info` reads it without running any of the module's code.
//!
//! # Panics
//!
//! A panic never unwinds across `extern "C"`. Every function this crate exports runs the
//! module's code under [`std::panic::catch_unwind`]:
//!
//! | where | what the host sees |
//! |---|---|
//! | `init` | `module_init` returns [`INIT_PANICKED`] (101): the load fails with the init error |
//! | `fini` | nothing: the panic is logged and the unload goes on |
//! | `can_unload` | `module_can_unload` returns 1: the module stays loaded (its state is in doubt) |
//! | an [`export!`]ed function | it returns its type's [`PanicValue`] (`i32::MIN`, null, `()`, ...) |
//!
//! and the panic message, with its source location, goes to the host's log at
//! [`Level::Error`] as ``panic in `add` at src/lib.rs:12:9: add overflowed``. While the host gave a
//! log, the module's panic messages go there instead of stderr (`RUST_BACKTRACE` still prints
//! the usual report too); without one, Rust's default hook prints them to stderr. The hook is
//! the module's own: a `cdylib` carries its own copy of `std`, so it never changes how the host
//! or another module reports panics.
//!
//! After a caught panic the module keeps running, as a `std` thread does after one: data the
//! panicking code was changing may be half-updated (a `Mutex` it held is poisoned).
//!
//! Two cases cannot be caught, and both end in `SIGABRT` raised inside the module, which the
//! loader's crash guard contains like any other crash of the module (the module is unloaded, the
//! host keeps running): a module built with `panic = "abort"` (the message is logged first), and
//! a panic while already panicking (a `Drop` that panics during unwinding).
//!
//! # Rejected at compile time
//!
//! A module with the wrong shape does not build (`tests/ui/` holds every case with the
//! compiler's message).
//!
//! `init` must be `fn(&Context) -> Result<(), InitError>`:
//!
//! ```compile_fail
//! kmodlike_module::module! { init: init }
//! fn init() -> i32 { 0 } // wrong: takes no context, returns a bare int
//! # fn main() {}
//! ```
//!
//! An exported function's types must be FFI-safe, and its return type must have a
//! [`PanicValue`]:
//!
//! ```compile_fail
//! kmodlike_module::export! {
//!     fn name() -> String { String::from("not a C type") }
//! }
//! # fn main() {}
//! ```
//!
//! [kmodlike]: https://docs.rs/kmodlike

#![warn(missing_docs)]

mod host;
mod invoke;
mod lifecycle;
mod modinfo;
mod panic;

pub use host::{host, log, Context, Level, UserData};
pub use invoke::{InvokeOutput, INVOKE_BAD_INPUT, INVOKE_BAD_OUTPUT, INVOKE_PANICKED};
pub use lifecycle::{InitError, INIT_PANICKED};
pub use panic::PanicValue;

/// The interface version this crate implements and `module_get_interface_version` returns:
/// 1.1 (`MODULE_INTERFACE_VERSION_CURRENT` in `module_interface.h`, `major << 16 | minor`).
pub const INTERFACE_VERSION: u32 = (1 << 16) | 1;

/// What the macros expand to. Not a stable API.
#[doc(hidden)]
pub mod __private {
    pub use crate::lifecycle::{module_can_unload, module_fini, module_fini_default, module_init};
    pub use crate::modinfo::modinfo_entry;
    pub use std::ffi::{c_int, c_void};

    use crate::PanicValue;

    /// Body of an exported function named `name`.
    pub fn export<R: PanicValue>(name: &'static str, f: impl FnOnce() -> R) -> R {
        crate::panic::guard(name, R::panic_value, f)
    }

    #[cfg(feature = "serde")]
    pub use crate::invoke::json;
    /// The body of an invoke export (see [`invoke!`](crate::invoke!)).
    pub use crate::invoke::run as invoke;

    /// The init of a module that declared none.
    pub fn no_init(_: &crate::Context) -> Result<(), crate::InitError> {
        Ok(())
    }
}

/// Declare the module: export the interface (`module_get_interface_version`, `module_init`,
/// `module_fini`, and `module_can_unload` when asked) and its `.modinfo` metadata.
///
/// Every key is optional, in any order, each at most once except `author` and `depends`:
///
/// | key | value | C equivalent |
/// |---|---|---|
/// | `init` | `fn(&Context) -> Result<(), InitError>` (a path or a closure) | `module_init` |
/// | `fini` | `fn()` | `module_fini` |
/// | `can_unload` | `fn() -> bool`: `false` vetoes the unload (the close is `Busy`) | `module_can_unload` |
/// | `version` | `&str`; defaults to the crate's `CARGO_PKG_VERSION` | `MODULE_VERSION` |
/// | `description` | `&str` | `MODULE_DESCRIPTION` |
/// | `license` | `&str` | `MODULE_LICENSE` |
/// | `author` | `&str` (repeat for several) | `MODULE_AUTHOR` |
/// | `depends` | `&str`: space-separated specs such as `"misc/dltest"`, loaded first | `MODULE_DEPENDS` |
///
/// Metadata values are `&str` constants (literals, `env!`, `concat!`, a `const`). Without
/// `init` the module initialises with nothing to do; without `fini` it finalises with nothing to
/// do. In both cases the host's arguments are still kept for [`host()`] and the log macros.
///
/// Use it once per module (the exports are `#[no_mangle]`: a second use is a duplicate-symbol
/// error), at the crate's top level.
///
/// ```
/// use kmodlike_module::module;
///
/// module! {
///     init: |ctx| {
///         ctx.info("ready");
///         Ok(())
///     },
///     can_unload: || true,
///     description: "closures work too",
///     depends: "misc/dltest",
/// }
/// # fn main() {}
/// ```
#[macro_export]
macro_rules! module {
    ($($body:tt)*) => {
        $crate::__module! { @parse [] [] [] [] $($body)* }
    };
}

/// The key-by-key parser behind [`module!`]. The four brackets hold `init`, `fini`,
/// `can_unload` and `version` once seen; metadata is emitted as it is read.
#[doc(hidden)]
#[macro_export]
macro_rules! __module {
    (@parse [] $f:tt $c:tt $v:tt init : $init:expr $(, $($rest:tt)*)?) => {
        $crate::__module! { @parse [$init] $f $c $v $($($rest)*)? }
    };
    (@parse $i:tt [] $c:tt $v:tt fini : $fini:expr $(, $($rest:tt)*)?) => {
        $crate::__module! { @parse $i [$fini] $c $v $($($rest)*)? }
    };
    (@parse $i:tt $f:tt [] $v:tt can_unload : $can:expr $(, $($rest:tt)*)?) => {
        $crate::__module! { @parse $i $f [$can] $v $($($rest)*)? }
    };
    (@parse $i:tt $f:tt $c:tt [] version : $version:expr $(, $($rest:tt)*)?) => {
        $crate::modinfo!(version = $version);
        $crate::__module! { @parse $i $f $c [$version] $($($rest)*)? }
    };
    (@parse $i:tt $f:tt $c:tt $v:tt description : $value:expr $(, $($rest:tt)*)?) => {
        $crate::modinfo!(description = $value);
        $crate::__module! { @parse $i $f $c $v $($($rest)*)? }
    };
    (@parse $i:tt $f:tt $c:tt $v:tt license : $value:expr $(, $($rest:tt)*)?) => {
        $crate::modinfo!(license = $value);
        $crate::__module! { @parse $i $f $c $v $($($rest)*)? }
    };
    (@parse $i:tt $f:tt $c:tt $v:tt author : $value:expr $(, $($rest:tt)*)?) => {
        $crate::modinfo!(author = $value);
        $crate::__module! { @parse $i $f $c $v $($($rest)*)? }
    };
    (@parse $i:tt $f:tt $c:tt $v:tt depends : $value:expr $(, $($rest:tt)*)?) => {
        $crate::modinfo!(depends = $value);
        $crate::__module! { @parse $i $f $c $v $($($rest)*)? }
    };
    (@parse $i:tt $f:tt $c:tt $v:tt $key:ident : $($rest:tt)*) => {
        ::core::compile_error!(::core::concat!(
            "kmodlike_module::module!: `", ::core::stringify!($key),
            "` is unknown or given twice; the keys are init, fini, can_unload, version, ",
            "description, license, author and depends (author and depends may repeat)"
        ));
    };
    (@parse [$($init:expr)?] [$($fini:expr)?] [$($can:expr)?] [$($version:expr)?]) => {
        $crate::__module! { @version [$($version)?] }

        /// The interface version this module implements (`module_interface.h`).
        #[no_mangle]
        pub extern "C" fn module_get_interface_version() -> u32 {
            $crate::INTERFACE_VERSION
        }

        $crate::__module!(@init [$($init)?]);

        /// Finalise the module (`module_interface.h`).
        #[no_mangle]
        pub extern "C" fn module_fini() {
            $crate::__module!(@fini [$($fini)?])
        }

        $($crate::__module!(@can_unload $can);)?
    };
    (@version []) => { $crate::modinfo!(version = ::core::env!("CARGO_PKG_VERSION")); };
    (@version [$version:expr]) => {};
    (@init []) => { $crate::__module!(@init [$crate::__private::no_init]); };
    (@init [$init:expr]) => {
        /// Initialise the module (`module_interface.h`); non-zero fails the load.
        ///
        /// # Safety
        /// `init_args` is NULL or points to a valid `module_init_args_t`.
        #[no_mangle]
        pub unsafe extern "C" fn module_init(
            init_args: *const $crate::__private::c_void,
        ) -> $crate::__private::c_int {
            // SAFETY: forwarded: the host passes NULL or a valid `module_init_args_t`.
            unsafe { $crate::__private::module_init(init_args, $init) }
        }
    };
    (@fini [$fini:expr]) => { $crate::__private::module_fini($fini) };
    (@fini []) => { $crate::__private::module_fini_default() };
    (@can_unload $can:expr) => {
        /// Whether the module may be unloaded now (`module_interface.h`); non-zero vetoes.
        #[no_mangle]
        pub extern "C" fn module_can_unload() -> $crate::__private::c_int {
            $crate::__private::module_can_unload($can)
        }
    };
}

/// Put one `tag=value` entry in the module's `.modinfo` section, exactly as the C macro
/// `MODULE_INFO(tag, "value")` does. [`module!`] uses it for its metadata keys; use it directly
/// for tags of your own.
///
/// ```
/// kmodlike_module::modinfo!(firmware = "blob-v2.bin");
/// ```
///
/// The value is any `&str` constant; one containing a NUL byte fails the build.
#[macro_export]
macro_rules! modinfo {
    ($tag:ident = $value:expr) => {
        const _: () = {
            const TAG: &str = ::core::stringify!($tag);
            const VALUE: &str = $value;
            #[used]
            #[link_section = ".modinfo"]
            static MODINFO: [u8; TAG.len() + VALUE.len() + 2] =
                $crate::__private::modinfo_entry(TAG, VALUE);
        };
    };
}

/// Export functions with the C ABI from safe Rust signatures.
///
/// Each `fn` becomes a `#[no_mangle] extern "C"` function of the same name and signature, which
/// the host finds by name (`Handle::symbol`, `module_loader_get_symbol`, `kmodctl call`). Its
/// body runs under [`std::panic::catch_unwind`]: a panic is reported to the host's log (with the
/// function's name and the panic's location) and the function returns its type's
/// [`PanicValue`] instead of unwinding into the caller.
///
/// Two forms, freely mixed:
///
/// ```
/// kmodlike_module::export! {
///     /// A body written in place.
///     fn add(a: i32, b: i32) -> i32 {
///         a.wrapping_add(b)
///     }
///
///     /// Forward to a Rust function of the same signature.
///     fn sub(a: i32, b: i32) -> i32 = checked_sub;
/// }
///
/// fn checked_sub(a: i32, b: i32) -> i32 {
///     a.checked_sub(b).expect("sub overflowed")
/// }
/// # fn main() {
/// #     assert_eq!(add(2, 3), 5);
/// #     assert_eq!(sub(i32::MIN, 1), i32::MIN); // panicked: the panic value
/// # }
/// ```
///
/// Argument and return types must be FFI-safe (`improper_ctypes_definitions` is denied on the
/// generated function): integers, floats, `bool`, raw pointers, `Option<extern "C" fn ...>`,
/// `#[repr(C)]` types. The return type must implement [`PanicValue`]. An argument that is a raw
/// pointer is the caller's promise, as in C: dereferencing it is `unsafe` in your code.
#[macro_export]
macro_rules! export {
    () => {};
    (
        $(#[$attr:meta])*
        $(pub)? fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? = $target:expr;
        $($rest:tt)*
    ) => {
        $(#[$attr])*
        #[no_mangle]
        #[deny(improper_ctypes_definitions)]
        pub extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
            $crate::__private::export(::core::stringify!($name), move || ($target)($($arg),*))
        }
        $crate::export! { $($rest)* }
    };
    (
        $(#[$attr:meta])*
        $(pub)? fn $name:ident ( $($arg:ident : $ty:ty),* $(,)? ) $(-> $ret:ty)? $body:block
        $($rest:tt)*
    ) => {
        $(#[$attr])*
        #[no_mangle]
        #[deny(improper_ctypes_definitions)]
        pub extern "C" fn $name($($arg: $ty),*) $(-> $ret)? {
            $crate::__private::export(::core::stringify!($name), move || $body)
        }
        $crate::export! { $($rest)* }
    };
}

/// Export message entry points (`module_invoke_fn`), the form of module function that works
/// in both tiers: in the host's process, and isolated in a process of its own
/// (`OpenOptions::isolated`, `MODULE_OPEN_ISOLATED`, `kmodctl load --isolated`). Each is also
/// declared in `.modinfo` (`invoke=<name>`), as `MODULE_INVOKE()` does in C: the host invokes
/// only declared functions (`Handle::invoke`, `module_loader_invoke`, `kmodctl invoke`).
///
/// Two forms, freely mixed: bytes in, bytes out (the body returns `Vec<u8>`, `(i32, Vec<u8>)`
/// or `Result<Vec<u8>, i32>`: the result code is 0, or the one given), and, with the `serde`
/// feature, `json fn`: the input is decoded from JSON into the argument's type and the result
/// encoded as JSON (a malformed input returns [`INVOKE_BAD_INPUT`]).
///
/// ```
/// kmodlike_module::invoke! {
///     /// Bytes in, bytes out.
///     fn reverse(input: &[u8]) -> Vec<u8> {
///         input.iter().rev().copied().collect()
///     }
/// }
/// ```
///
/// A panic in a body is reported to the host's log and the call returns [`INVOKE_PANICKED`]
/// with no output. An output larger than the caller's buffer is kept for the caller's second
/// call (with a buffer that large), so the body runs once.
#[macro_export]
macro_rules! invoke {
    () => {};
    (
        $(#[$attr:meta])*
        json fn $name:ident ( $arg:ident : $ty:ty ) -> $ret:ty $body:block
        $($rest:tt)*
    ) => {
        $crate::invoke! {
            $(#[$attr])*
            fn $name(input: &[u8]) -> (i32, ::std::vec::Vec<u8>) {
                $crate::__private::json(input, |$arg: $ty| -> $ret { $body })
            }
        }
        $crate::invoke! { $($rest)* }
    };
    (
        $(#[$attr:meta])*
        fn $name:ident ( $arg:ident : &[u8] ) -> $ret:ty $body:block
        $($rest:tt)*
    ) => {
        $(#[$attr])*
        ///
        /// # Safety
        /// A `module_invoke_fn`: `input` readable for `in_len` bytes, `out` writable for
        /// `out_cap` bytes, `out_len` writable.
        #[no_mangle]
        pub unsafe extern "C" fn $name(
            input: *const $crate::__private::c_void,
            in_len: usize,
            out: *mut $crate::__private::c_void,
            out_cap: usize,
            out_len: *mut usize,
        ) -> $crate::__private::c_int {
            // SAFETY: forwarded: this is the module_invoke_fn the loader calls.
            unsafe {
                $crate::__private::invoke(
                    ::core::stringify!($name),
                    input,
                    in_len,
                    out,
                    out_cap,
                    out_len,
                    |$arg: &[u8]| $crate::InvokeOutput::into_reply((|| -> $ret { $body })()),
                )
            }
        }
        $crate::modinfo!(invoke = ::core::stringify!($name));
        $crate::invoke! { $($rest)* }
    };
}

/// Log through the host's log at a given [`Level`], `format!`-style; nothing when the host gave
/// no log. `log_at!(Level::Warning, "{} left", n)`.
#[macro_export]
macro_rules! log_at {
    ($level:expr, $($arg:tt)+) => {
        $crate::log($level, &::std::format!($($arg)+))
    };
}

/// [`log_at!`] at [`Level::Debug`].
#[macro_export]
macro_rules! log_debug {
    ($($arg:tt)+) => { $crate::log_at!($crate::Level::Debug, $($arg)+) };
}

/// [`log_at!`] at [`Level::Info`].
#[macro_export]
macro_rules! log_info {
    ($($arg:tt)+) => { $crate::log_at!($crate::Level::Info, $($arg)+) };
}

/// [`log_at!`] at [`Level::Warning`].
#[macro_export]
macro_rules! log_warn {
    ($($arg:tt)+) => { $crate::log_at!($crate::Level::Warning, $($arg)+) };
}

/// [`log_at!`] at [`Level::Error`].
#[macro_export]
macro_rules! log_error {
    ($($arg:tt)+) => { $crate::log_at!($crate::Level::Error, $($arg)+) };
}
