//! # kmodlike: a userland module loader that survives modules that crash
//!
//! kmodlike loads shared libraries ("modules") at run time, checks that each implements the
//! versioned module interface ([`interface`]), and runs every entry into module code under a
//! crash guard: a SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT or SIGSYS raised by module code
//! unloads that module and returns [`Error::Crashed`] with a [`CrashReport`], and the host
//! keeps running.
//!
//! ```no_run
//! use kmodlike::{Loader, Error};
//!
//! let loader = Loader::builder()
//!     .log(|module, level, msg| eprintln!("[{module}] ({level}) {msg}"))
//!     .build();
//! // SAFETY: hello.so is the example module, built for the module interface: running its
//! // constructors and `module_init` in this process is what we ask for.
//! let hello = unsafe { loader.open("build/modules/misc/hello.so") }?; // path, or "misc/hello"
//! let greet = hello.symbol_ptr("mod_hello")?;
//! // SAFETY: mod_hello is `void mod_hello(void)`.
//! let greet: extern "C" fn() = unsafe { std::mem::transmute(greet) };
//! // SAFETY: `greet` is the module's own C code: a crash in it skips only its frames.
//! match unsafe { hello.call0(greet) } {
//!     Ok(()) => {}
//!     Err(Error::Crashed(report)) => eprintln!("{report}"),    // the module is gone, we are not
//!     Err(e) => return Err(e),
//! }
//! hello.close().map_err(|e| e.error)?;                         // module_fini, dlclose
//! # Ok::<(), kmodlike::Error>(())
//! ```
//!
//! Opening a module and calling into it are `unsafe`, as with libloading: [`Loader::open`]
//! runs the file's native code on the caller's word that it is a module built for this
//! interface, and [`Handle::call`] jumps over the frames of a crashed function without running
//! their destructors, which module code tolerates and host code holding a `String` or a
//! `std::thread::scope` does not. Their `# Safety` sections state the exact promise.
//!
//! Modules are opened by path or by `[namespace/[dirspace/]]name` along a module path, shared
//! by reference count, and may depend on each other through `.modinfo` metadata (see
//! [`modinfo()`]), after illumos `ddi_modopen(9F)` and Linux kmod.
#![warn(missing_docs)]

mod backtrace;
pub mod crash;
mod elf;
mod error;
mod facts;
mod guard;
mod image;
pub mod interface;
#[doc(hidden)]
pub mod isolated;
mod linkmap;
mod loader;
mod modinfo;
mod module;
mod options;
#[doc(hidden)]
pub mod probe;
mod resolve;
pub mod trust;

pub use crash::{
    acknowledge_taint, taint, taint_acknowledgements, CallTimeout, CrashReport, Frame, Phase,
    Taint, TaintAck,
};
pub use error::{BusyReason, Error, ErrorKind, Result};
#[cfg(target_arch = "x86_64")]
#[doc(hidden)]
pub use guard::__kml_fast_restore_mask;
pub use guard::deadline::{
    default_interrupt_signal, interrupt_signal, DEFAULT_INTERRUPT_SIGNAL, INTERRUPT_SIGNAL_ENV,
};
pub use guard::{guard_entry, GuardEntry};
pub use image::modinfo;
pub use interface::{ModuleInitArgs, Version};
pub use loader::{
    CallInFlight, CallOptions, CloseError, CrashLoop, CrashPolicy, Event, FastEntry, FastResult,
    Handle, InitArgs, Invoker, Loader, LoaderBuilder, LogSink, ModuleInfo, OpenOptions, Symbol,
    DEFAULT_MAX_KEPT_MAPPED, INVOKE_FIRST_CAPACITY,
};
pub use modinfo::ModInfo;
pub use module::ModuleState;
pub use options::{Isolation, OpenMode};
pub use resolve::{
    default_module_path, module_name_for, resolve_spec, search_path, NameSpec, DEFAULT_NAMESPACE,
    MODULE_PATH_ENV,
};
pub use trust::{SignaturePolicy, SignatureVerdict, TrustInfo};

/// Benchmark hook, not API: run `f(ctx)` under the crash guard with no module attached, as a
/// guarded call does below its bookkeeping. Returns `true` when `f` raised a fatal signal (the
/// crash is recorded nowhere). Used by `make bench` to time the guard alone.
///
/// # Safety
/// As [`Handle::call_raw`]: `f` must be safe to call with `ctx` and own nothing with a
/// destructor where it can fault.
#[doc(hidden)]
pub unsafe fn __bench_guard_call(
    f: unsafe extern "C" fn(*mut std::ffi::c_void),
    ctx: *mut std::ffi::c_void,
) -> bool {
    // SAFETY: forwarded contract; u64::MAX - 1 is no module's id.
    unsafe { guard::call(u64::MAX - 1, f, ctx) }.is_err()
}

/// The system page size.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system parameter.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}
