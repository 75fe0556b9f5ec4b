//! The loader object: create, configure, destroy, and read errors.

use std::ffi::{c_char, c_uint};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};

use kmodlike::{CrashPolicy, CrashReport, Loader};

use crate::entry::{run, run_code, str_arg};
use crate::error::{module_error_t, ErrorCodeArg, ErrorSink, Failure};
use crate::single::Slot;

/// A loader: the context every other call works in. Opaque: create it with
/// `module_loader_create()` or `module_loader_create_with_flags()`, free it with
/// `module_loader_destroy()`.
pub struct module_loader_t {
    /// The guard's entry of the loaded module while the slot holds one (`FastEntry` as a raw
    /// pointer), else NULL: `module_loader_call()` runs on it without taking the slot's lock.
    pub(crate) fast: std::sync::atomic::AtomicPtr<std::ffi::c_void>,
    /// The call time limit in milliseconds (0: none): `module_loader_call()` takes its slow
    /// path, which sets the deadline, when it is not 0.
    pub(crate) timeout_ms: std::sync::atomic::AtomicU32,
    pub(crate) loader: Loader,
    pub(crate) shared: Arc<Shared>,
    pub(crate) slot: Mutex<Slot>,
}

/// What a loader shares with the handles opened from it: where failures are recorded and the
/// last crash seen.
#[derive(Debug)]
pub(crate) struct Shared {
    pub errors: ErrorSink,
    last_crash: Mutex<Option<CrashReport>>,
}

impl Shared {
    /// Turn a core error into a failure, keeping its crash report when it is a crash.
    pub(crate) fn fail(&self, e: kmodlike::Error) -> Failure {
        if let Some(report) = e.crash_report() {
            *lock(&self.last_crash) = Some(report.clone());
        }
        Failure::from(e)
    }

    pub(crate) fn last_crash(&self) -> Option<CrashReport> {
        lock(&self.last_crash).clone()
    }
}

/// Lock a mutex, ignoring poisoning: every critical section here leaves its data consistent
/// before anything that could panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Options for `module_loader_create_with_flags()`; combine them with `|`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum module_loader_flags_t {
    /// The defaults, as `module_loader_create()` uses them.
    MODULE_LOADER_DEFAULT = 0,
    /// Refuse legacy modules (those that export `mod_hello()` but not the module interface).
    MODULE_LOADER_STRICT = 1,
    /// After a crash, unmap the crashed module's code once calls into it have drained even when
    /// the module may start threads (unless one is seen in its code then). Without it, the code
    /// of a module that may start threads stays mapped, and that of any other module is unmapped
    /// once its calls have drained. Only for modules known to stop their threads themselves.
    MODULE_LOADER_RECLAIM = 2,
    /// Load every module first in a short-lived child process (the `kmodlike-probe` helper),
    /// so that a crash in a constructor or in `module_init()`, which no guard can contain
    /// safely, kills only the child: the load then fails with `MODULE_ERR_CRASHED` and the
    /// child's crash report. The helper is `$KMODLIKE_PROBE`, else `kmodlike-probe` next to
    /// the program, else `<program dir>/../libexec/kmodlike/kmodlike-probe` (where
    /// `make install` puts it); without it, loads fail with `MODULE_ERR_LOAD_FAILED`.
    MODULE_LOADER_PROBE = 4,
    /// Load modules whose path is not trusted (the file or a directory above it owned by
    /// another user, or writable by group or others) instead of refusing them with
    /// `MODULE_ERR_UNTRUSTED`. Each such load taints the process (`module_loader_tainted()`).
    MODULE_LOADER_ALLOW_UNTRUSTED = 8,
}

/// Every flag bit this library knows.
const KNOWN_LOADER_FLAGS: u32 = module_loader_flags_t::MODULE_LOADER_STRICT as u32
    | module_loader_flags_t::MODULE_LOADER_RECLAIM as u32
    | module_loader_flags_t::MODULE_LOADER_PROBE as u32
    | module_loader_flags_t::MODULE_LOADER_ALLOW_UNTRUSTED as u32;

/// `module_loader_flags_t` bits as received from C (any `|` of flags, read as a plain integer).
///
/// cbindgen:no-export
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct LoaderFlagsArg(pub c_uint);

impl module_loader_t {
    fn new(loader: Loader) -> Self {
        module_loader_t {
            fast: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
            timeout_ms: std::sync::atomic::AtomicU32::new(0),
            loader,
            shared: Arc::new(Shared { errors: ErrorSink::new(), last_crash: Mutex::new(None) }),
            slot: Mutex::new(Slot::default()),
        }
    }
}

/// Where calls record failures: the loader's sink, or the per-thread sink for calls made
/// without a loader.
pub(crate) fn sink_of(loader: Option<&module_loader_t>) -> &ErrorSink {
    loader.map_or(ErrorSink::none(), |l| &l.shared.errors)
}

/// ---- Loader: create, configure, destroy ------------------------------------------------
///
/// Create a loader with the default options: legacy modules accepted, a crashed module's code
/// kept mapped, and the module path made of `KMODLIKE_MODULE_PATH` then the built-in default.
///
/// Returns NULL only if the loader could not be set up; `module_loader_last_error(NULL)` then
/// says why.
#[no_mangle]
pub extern "C" fn module_loader_create() -> *mut module_loader_t {
    let r = run("module_loader_create", ErrorSink::none(), || {
        Ok(Box::into_raw(Box::new(module_loader_t::new(Loader::new()))))
    });
    r.unwrap_or(std::ptr::null_mut())
}

/// Create a loader with options: `flags` is `MODULE_LOADER_DEFAULT` or a `|` of
/// `module_loader_flags_t` values.
///
/// Returns NULL on unknown flag bits (`module_loader_last_error(NULL)` says which).
#[no_mangle]
pub extern "C" fn module_loader_create_with_flags(flags: LoaderFlagsArg) -> *mut module_loader_t {
    let r = run("module_loader_create_with_flags", ErrorSink::none(), || {
        let flags = flags.0;
        if flags & !KNOWN_LOADER_FLAGS != 0 {
            return Err(Failure::invalid(format!(
                "module_loader_create_with_flags: unknown flag bits {:#x} (known: {:#x})",
                flags & !KNOWN_LOADER_FLAGS,
                KNOWN_LOADER_FLAGS
            )));
        }
        let strict = flags & module_loader_flags_t::MODULE_LOADER_STRICT as u32 != 0;
        let policy = if flags & module_loader_flags_t::MODULE_LOADER_RECLAIM as u32 != 0 {
            CrashPolicy::Reclaim
        } else {
            CrashPolicy::ReclaimWhenSafe
        };
        let probe = flags & module_loader_flags_t::MODULE_LOADER_PROBE as u32 != 0;
        let untrusted = flags & module_loader_flags_t::MODULE_LOADER_ALLOW_UNTRUSTED as u32 != 0;
        let loader = Loader::builder()
            .strict(strict)
            .crash_policy(policy)
            .probe(probe)
            .allow_untrusted_paths(untrusted)
            .build();
        Ok(Box::into_raw(Box::new(module_loader_t::new(loader))))
    });
    r.unwrap_or(std::ptr::null_mut())
}

/// Set the directories searched for modules opened by name with `module_loader_open()`:
/// `path` is a `:`-separated list, searched in order, before `KMODLIKE_MODULE_PATH` and the
/// built-in default. NULL or "" leaves only those two.
///
/// A module named `[namespace/[dirspace/]]name` is looked for as
/// `<dir>/<namespace>/[<dirspace>/]<name>.so`; the namespace defaults to `misc`.
///
/// # Safety
/// `loader` is NULL or a live loader; `path` is NULL or a NUL-terminated string.
#[no_mangle]
pub unsafe extern "C" fn module_loader_set_path(
    loader: *mut module_loader_t,
    path: *const c_char,
) -> module_error_t {
    // SAFETY: the caller passes NULL or a loader from module_loader_create*() not yet destroyed.
    let l = unsafe { loader.as_ref() };
    run_code("module_loader_set_path", sink_of(l), || {
        let l = l.ok_or_else(|| Failure::invalid("module_loader_set_path: loader is NULL"))?;
        let dirs: Vec<PathBuf> = if path.is_null() {
            Vec::new()
        } else {
            // SAFETY: non-NULL, and the caller passes a NUL-terminated string.
            match unsafe { str_arg("module_loader_set_path", "path", path) } {
                Ok(p) => p.split(':').filter(|d| !d.is_empty()).map(PathBuf::from).collect(),
                Err(e) if e.text.ends_with("is empty") => Vec::new(),
                Err(e) => return Err(e),
            }
        };
        l.loader.set_module_path(dirs);
        Ok(())
    })
}

/// Destroy a loader. The module loaded with `module_loader_load()`, if any, is unloaded first
/// (its `module_fini()` runs). Handles opened with `module_loader_open()` stay valid and keep
/// their modules loaded until each is passed to `module_loader_close()`.
///
/// # Safety
/// `loader` is NULL or a loader from `module_loader_create*()`, not yet destroyed, that no
/// other call uses during or after this one. NULL is ignored.
#[no_mangle]
pub unsafe extern "C" fn module_loader_destroy(loader: *mut module_loader_t) {
    if loader.is_null() {
        return;
    }
    // SAFETY: the caller passes a loader from module_loader_create*() that no other call uses
    // now or later, so this Box owns it.
    let l = unsafe { Box::from_raw(loader) };
    let _ = run("module_loader_destroy", ErrorSink::none(), move || {
        crate::single::unload_for_destroy(&l);
        drop(l);
        Ok(())
    });
}

/// ---- Errors ----------------------------------------------------------------------------
///
/// A short, static description of an error code ("module not found"). Never NULL: an unknown
/// code gives "unknown error code".
#[no_mangle]
pub extern "C" fn module_loader_strerror(code: ErrorCodeArg) -> *const c_char {
    match module_error_t::from_raw(code.0) {
        Some(c) => c.message().as_ptr(),
        None => c"unknown error code".as_ptr(),
    }
}

/// The detailed text of the last failure of a call made on `loader` (or on a handle opened
/// from it) by the calling thread: it names the module or file and the cause (the `dlerror()`
/// text, the missing symbol, both interface versions, the `module_init()` code, the crash
/// report). NULL when this thread has seen no failure on this loader.
///
/// With `loader` NULL: the last failure of a call that had no loader to record on (a NULL
/// loader or handle argument, or a failed `module_loader_create*()`).
///
/// Per thread, like `dlerror()`: threads sharing a loader each see their own last failure.
/// A success does not clear it. The text stays valid until this thread's next failure on the
/// same loader, or until the loader is destroyed.
///
/// # Safety
/// `loader` is NULL or a live loader.
#[no_mangle]
pub unsafe extern "C" fn module_loader_last_error(loader: *const module_loader_t) -> *const c_char {
    // SAFETY: the caller passes NULL or a live loader.
    let l = unsafe { loader.as_ref() };
    sink_of(l).last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::ffi::CStr;

    #[test]
    fn strerror_names_every_code_and_survives_bad_ones() {
        for code in crate::error::ALL_CODES {
            // SAFETY: strerror returns a static NUL-terminated string.
            let s = unsafe { CStr::from_ptr(module_loader_strerror(ErrorCodeArg(code as i32))) };
            assert!(!s.to_bytes().is_empty(), "{code:?}");
        }
        for bad in [-1, crate::error::ALL_CODES.len() as i32, i32::MAX, i32::MIN] {
            // SAFETY: as above.
            let s = unsafe { CStr::from_ptr(module_loader_strerror(ErrorCodeArg(bad))) };
            assert_eq!(s.to_str().unwrap(), "unknown error code");
        }
    }

    #[test]
    fn unknown_loader_flags_are_refused_with_a_reason() {
        let l = module_loader_create_with_flags(LoaderFlagsArg(0x100));
        assert!(l.is_null());
        // SAFETY: NULL asks for the thread's loader-less last error.
        let text = unsafe { CStr::from_ptr(module_loader_last_error(std::ptr::null())) };
        assert!(text.to_str().unwrap().contains("unknown flag bits 0x100"), "{text:?}");
    }
}
