//! Error codes, their texts, and the per-thread "last error" texts of each loader.

use std::cell::RefCell;
use std::collections::HashSet;
use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use kmodlike::ErrorKind;

/// The result of every call that can fail. `MODULE_ERR_SUCCESS` is 0; every other value names
/// a kind of failure, and `module_loader_last_error()` gives the detailed text.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum module_error_t {
    /// The call succeeded.
    MODULE_ERR_SUCCESS = 0,
    /// A NULL or empty argument, a malformed module name (`..`, an absolute part, an empty
    /// segment), an unknown flag, or an `init_args` whose `version` is not one this loader knows.
    MODULE_ERR_INVALID_ARGUMENT = 1,
    /// No such file, or no module of that name along the module path (the text lists every
    /// place tried); also: no crash recorded, for `module_loader_last_crash()`.
    MODULE_ERR_NOT_FOUND = 2,
    /// The file could not be loaded: unreadable, not a regular file (a FIFO, a device, a
    /// directory: refused at once), larger than 1 GiB, empty, not ELF, truncated, malformed (a
    /// structure `dlopen()` would trust and crash on), for another architecture, not a shared
    /// object, not a module (refused before any of its code runs), or `dlopen()` failed (the
    /// text keeps the `dlerror()` text).
    MODULE_ERR_LOAD_FAILED = 3,
    /// A required export (`module_get_interface_version`, `module_init`, `module_fini`) is
    /// missing, or the symbol asked for is not defined in the module itself.
    MODULE_ERR_SYMBOL_NOT_FOUND = 4,
    /// The module's interface version is not compatible (the text shows both versions).
    MODULE_ERR_VERSION_MISMATCH = 5,
    /// `module_init()` returned non-zero (the text carries the code); nothing stayed loaded.
    MODULE_ERR_INIT_FAILED = 6,
    /// No module is loaded (never loaded, already unloaded, or unloaded after a crash).
    MODULE_ERR_NOT_LOADED = 7,
    /// The loader already has a module loaded (`module_loader_load()` loads one per loader).
    MODULE_ERR_ALREADY_LOADED = 8,
    /// The module cannot be unloaded now: other modules depend on it, calls into it are still
    /// running, or its `module_can_unload()` refused. The handle stays valid: retry later.
    /// Also: a module opened or closed from inside its own load or unload (a host `log`
    /// callback called from its `module_init()`, say), which would otherwise wait for itself.
    MODULE_ERR_BUSY = 9,
    /// A dependency named in the module's `.modinfo` is missing, failed, or forms a cycle.
    MODULE_ERR_DEPENDENCY = 10,
    /// The module raised a fatal signal; it has been unloaded and the host kept running.
    /// `module_loader_last_crash()` gives the details.
    MODULE_ERR_CRASHED = 11,
    /// The module crashed too often and is refused until an operator clears it.
    MODULE_ERR_QUARANTINED = 12,
    /// A bug in libmodule itself (an internal panic was caught); the text says where.
    MODULE_ERR_INTERNAL = 13,
    /// The module file, or a directory above it, may be changed by a user other than root and
    /// this process's: owned by another user, or writable by group or others. The text names
    /// the path, its owner and mode. Fix the owner and mode, or create the loader with
    /// `MODULE_LOADER_ALLOW_UNTRUSTED` (which taints the process).
    MODULE_ERR_UNTRUSTED = 14,
    /// The signature policy is `MODULE_SIGNATURE_ENFORCE` and the module has no valid signature
    /// by a trusted key (missing, tampered, another file's, an untrusted key), or its digest is
    /// on the revocation list.
    MODULE_ERR_SIGNATURE = 15,
    /// The output of `module_loader_invoke()` does not fit `out_cap`: `*out_len` holds the
    /// size needed; call again with a buffer that large.
    MODULE_ERR_BUFFER_TOO_SMALL = 16,
    /// An isolated module's process exited (the module called `exit()`/`_exit()`, or made a raw
    /// exit system call): the text has the status; the module is unloaded.
    MODULE_ERR_EXITED = 17,
    /// A call ran past its time limit (`module_loader_set_call_timeout()`,
    /// `module_loader_handle_set_call_timeout()`): it was interrupted and the module unloaded,
    /// as after a crash; `module_loader_last_crash()` says where it was (its `signal_name` is
    /// "timeout"). For an isolated module: its process was killed and the module unloaded.
    MODULE_ERR_TIMED_OUT = 18,
}

use module_error_t::*;

/// Every code, in numeric order.
pub(crate) const ALL_CODES: [module_error_t; 19] = [
    MODULE_ERR_SUCCESS,
    MODULE_ERR_INVALID_ARGUMENT,
    MODULE_ERR_NOT_FOUND,
    MODULE_ERR_LOAD_FAILED,
    MODULE_ERR_SYMBOL_NOT_FOUND,
    MODULE_ERR_VERSION_MISMATCH,
    MODULE_ERR_INIT_FAILED,
    MODULE_ERR_NOT_LOADED,
    MODULE_ERR_ALREADY_LOADED,
    MODULE_ERR_BUSY,
    MODULE_ERR_DEPENDENCY,
    MODULE_ERR_CRASHED,
    MODULE_ERR_QUARANTINED,
    MODULE_ERR_INTERNAL,
    MODULE_ERR_UNTRUSTED,
    MODULE_ERR_SIGNATURE,
    MODULE_ERR_BUFFER_TOO_SMALL,
    MODULE_ERR_EXITED,
    MODULE_ERR_TIMED_OUT,
];

impl module_error_t {
    /// The code for an error of the core crate.
    pub(crate) fn from_kind(kind: ErrorKind) -> Self {
        match kind {
            ErrorKind::InvalidArgument => MODULE_ERR_INVALID_ARGUMENT,
            ErrorKind::NotFound => MODULE_ERR_NOT_FOUND,
            ErrorKind::LoadFailed => MODULE_ERR_LOAD_FAILED,
            ErrorKind::SymbolNotFound => MODULE_ERR_SYMBOL_NOT_FOUND,
            ErrorKind::VersionMismatch => MODULE_ERR_VERSION_MISMATCH,
            ErrorKind::InitFailed => MODULE_ERR_INIT_FAILED,
            ErrorKind::NotLoaded => MODULE_ERR_NOT_LOADED,
            ErrorKind::AlreadyLoaded => MODULE_ERR_ALREADY_LOADED,
            ErrorKind::Busy => MODULE_ERR_BUSY,
            ErrorKind::Dependency => MODULE_ERR_DEPENDENCY,
            ErrorKind::Crashed => MODULE_ERR_CRASHED,
            ErrorKind::Quarantined => MODULE_ERR_QUARANTINED,
            ErrorKind::Untrusted => MODULE_ERR_UNTRUSTED,
            ErrorKind::Signature => MODULE_ERR_SIGNATURE,
            ErrorKind::BufferTooSmall => MODULE_ERR_BUFFER_TOO_SMALL,
            ErrorKind::Exited => MODULE_ERR_EXITED,
            ErrorKind::TimedOut => MODULE_ERR_TIMED_OUT,
            // A kind added to the core crate after this library was built.
            _ => MODULE_ERR_INTERNAL,
        }
    }

    /// The code with this numeric value, if there is one.
    pub(crate) fn from_raw(raw: c_int) -> Option<Self> {
        usize::try_from(raw).ok().and_then(|i| ALL_CODES.get(i)).copied()
    }

    /// The static, NUL-terminated description of the code.
    pub(crate) fn message(self) -> &'static CStr {
        match self {
            MODULE_ERR_SUCCESS => c"success",
            MODULE_ERR_INVALID_ARGUMENT => c"invalid argument",
            MODULE_ERR_NOT_FOUND => c"module not found",
            MODULE_ERR_LOAD_FAILED => c"module file could not be loaded",
            MODULE_ERR_SYMBOL_NOT_FOUND => c"symbol not found in the module",
            MODULE_ERR_VERSION_MISMATCH => c"module interface version is not compatible",
            MODULE_ERR_INIT_FAILED => c"module_init() failed",
            MODULE_ERR_NOT_LOADED => c"module is not loaded",
            MODULE_ERR_ALREADY_LOADED => c"a module is already loaded",
            MODULE_ERR_BUSY => c"module is busy and cannot be unloaded now",
            MODULE_ERR_DEPENDENCY => c"module dependency failed",
            MODULE_ERR_CRASHED => c"module crashed and was unloaded",
            MODULE_ERR_QUARANTINED => c"module is quarantined after repeated crashes",
            MODULE_ERR_INTERNAL => c"internal error in libmodule",
            MODULE_ERR_UNTRUSTED => c"module path is not trusted (owner or mode)",
            MODULE_ERR_SIGNATURE => c"module is not validly signed by a trusted key, or revoked",
            MODULE_ERR_BUFFER_TOO_SMALL => c"the output does not fit the buffer",
            MODULE_ERR_EXITED => c"the isolated module's process exited",
            MODULE_ERR_TIMED_OUT => c"the call ran past its deadline",
        }
    }
}

/// A `module_error_t` as received from C. C may pass any `int` where an enum is expected, and
/// an out-of-range value in a Rust enum is undefined behaviour, so calls that take a code read
/// it as this plain integer; the header still shows `module_error_t` (cbindgen renames it).
///
/// cbindgen:no-export
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct ErrorCodeArg(pub c_int);

/// A core error turned into a code and its detailed text.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
    pub code: module_error_t,
    pub text: String,
}

impl Failure {
    pub(crate) fn new(code: module_error_t, text: impl Into<String>) -> Self {
        Failure { code, text: text.into() }
    }
    pub(crate) fn invalid(text: impl Into<String>) -> Self {
        Failure::new(MODULE_ERR_INVALID_ARGUMENT, text)
    }
}

impl From<kmodlike::Error> for Failure {
    fn from(e: kmodlike::Error) -> Self {
        Failure { code: module_error_t::from_kind(e.kind()), text: e.to_string() }
    }
}

impl From<&kmodlike::Error> for Failure {
    fn from(e: &kmodlike::Error) -> Self {
        Failure { code: module_error_t::from_kind(e.kind()), text: e.to_string() }
    }
}

// ---------------------------------------------------------------------------------------------
// Last-error texts: per loader and per thread, like dlerror(), so threads sharing a loader never
// read each other's text or a text being replaced.
//
// Each thread keeps a small list of (error-sink id, text) in thread-local storage: freed when the
// thread exits, and pruned of sinks that no longer exist whenever the thread records a new text.
// Sink 0 belongs to calls made without a loader (a NULL loader, a failed create).

static NEXT_SINK: AtomicU64 = AtomicU64::new(1);
static LIVE_SINKS: Mutex<Option<HashSet<u64>>> = Mutex::new(None);

thread_local! {
    static LAST_ERRORS: RefCell<Vec<(u64, CString)>> = const { RefCell::new(Vec::new()) };
}

/// Where one loader's failures are recorded (shared by the loader and its handles).
#[derive(Debug)]
pub(crate) struct ErrorSink {
    id: u64,
}

impl ErrorSink {
    /// The sink used when there is no loader to record on.
    pub(crate) fn none() -> &'static ErrorSink {
        static NONE: ErrorSink = ErrorSink { id: 0 };
        &NONE
    }

    pub(crate) fn new() -> Self {
        let id = NEXT_SINK.fetch_add(1, Ordering::Relaxed);
        LIVE_SINKS
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get_or_insert_with(HashSet::new)
            .insert(id);
        ErrorSink { id }
    }

    /// Record `text` as the calling thread's last error on this sink.
    pub(crate) fn record(&self, text: &str) {
        let text = CString::new(text.replace('\0', "\\0")).unwrap_or_default();
        let live = LIVE_SINKS.lock().unwrap_or_else(|e| e.into_inner());
        LAST_ERRORS.with(|slots| {
            let mut slots = slots.borrow_mut();
            slots.retain(|(id, _)| {
                *id == 0 || *id == self.id || live.as_ref().is_some_and(|l| l.contains(id))
            });
            match slots.iter_mut().find(|(id, _)| *id == self.id) {
                Some(slot) => slot.1 = text,
                None => slots.push((self.id, text)),
            }
        });
    }

    /// The calling thread's last error text on this sink, or NULL. The pointer stays valid
    /// until this thread records another failure on the same sink, or the sink is dropped.
    pub(crate) fn last(&self) -> *const c_char {
        LAST_ERRORS.with(|slots| {
            slots
                .borrow()
                .iter()
                .find(|(id, _)| *id == self.id)
                .map_or(std::ptr::null(), |(_, text)| text.as_ptr())
        })
    }
}

impl Drop for ErrorSink {
    fn drop(&mut self) {
        if self.id == 0 {
            return;
        }
        if let Some(live) = LIVE_SINKS.lock().unwrap_or_else(|e| e.into_inner()).as_mut() {
            live.remove(&self.id);
        }
        // Free this thread's text now; other threads drop theirs at their next record or exit.
        let _ = LAST_ERRORS.try_with(|slots| {
            if let Ok(mut slots) = slots.try_borrow_mut() {
                slots.retain(|(id, _)| *id != self.id);
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_dense_and_success_is_zero() {
        for (i, code) in ALL_CODES.iter().enumerate() {
            assert_eq!(*code as usize, i, "{code:?}");
            assert_eq!(module_error_t::from_raw(i as c_int), Some(*code));
        }
        assert_eq!(MODULE_ERR_SUCCESS as c_int, 0);
        assert_eq!(module_error_t::from_raw(-1), None);
        assert_eq!(module_error_t::from_raw(ALL_CODES.len() as c_int), None);
    }

    #[test]
    fn every_core_error_kind_has_its_own_code() {
        let kinds = [
            ErrorKind::InvalidArgument,
            ErrorKind::NotFound,
            ErrorKind::LoadFailed,
            ErrorKind::SymbolNotFound,
            ErrorKind::VersionMismatch,
            ErrorKind::InitFailed,
            ErrorKind::NotLoaded,
            ErrorKind::AlreadyLoaded,
            ErrorKind::Busy,
            ErrorKind::Dependency,
            ErrorKind::Crashed,
            ErrorKind::Quarantined,
            ErrorKind::Untrusted,
            ErrorKind::Signature,
            ErrorKind::BufferTooSmall,
            ErrorKind::Exited,
            ErrorKind::TimedOut,
        ];
        let codes: HashSet<module_error_t> =
            kinds.iter().map(|k| module_error_t::from_kind(*k)).collect();
        assert_eq!(codes.len(), kinds.len());
        assert!(!codes.contains(&MODULE_ERR_SUCCESS));
        assert!(!codes.contains(&MODULE_ERR_INTERNAL));
        // The code's name is the kind's name in SCREAMING_SNAKE_CASE.
        for k in kinds {
            let code = format!("{:?}", module_error_t::from_kind(k));
            let snake: String = k
                .name()
                .chars()
                .enumerate()
                .flat_map(|(i, c)| {
                    let sep = (i > 0 && c.is_ascii_uppercase()).then_some('_');
                    sep.into_iter().chain(std::iter::once(c.to_ascii_uppercase()))
                })
                .collect();
            assert_eq!(code, format!("MODULE_ERR_{snake}"));
        }
    }

    #[test]
    fn last_error_is_per_sink_and_per_thread() {
        let a = ErrorSink::new();
        let b = ErrorSink::new();
        assert!(a.last().is_null());
        a.record("first failure on a");
        b.record("failure on b");
        // SAFETY: last() returned a pointer to a live CString owned by this thread's slots.
        let text = |p: *const c_char| unsafe { CStr::from_ptr(p) }.to_str().unwrap().to_owned();
        assert_eq!(text(a.last()), "first failure on a");
        assert_eq!(text(b.last()), "failure on b");
        std::thread::scope(|s| {
            s.spawn(|| assert!(a.last().is_null(), "another thread sees no text"));
        });
        a.record("second failure on a");
        assert_eq!(text(a.last()), "second failure on a");

        // A thread's text for a sink dropped by another thread is pruned at its next record.
        let c = ErrorSink::new();
        let (to_worker, worker_rx) = std::sync::mpsc::channel::<()>();
        let (to_main, main_rx) = std::sync::mpsc::channel::<()>();
        std::thread::scope(|s| {
            let c = &c;
            let b = &b;
            s.spawn(move || {
                c.record("on c, from the worker");
                to_main.send(()).unwrap();
                worker_rx.recv().unwrap(); // c has been dropped by now
                b.record("on b, from the worker");
                LAST_ERRORS.with(|slots| {
                    let ids: Vec<u64> = slots.borrow().iter().map(|(id, _)| *id).collect();
                    assert_eq!(ids, [b.id], "the dropped sink's text was freed");
                });
            });
            main_rx.recv().unwrap();
            // Simulate the drop of `c` while the worker still holds its text.
            LIVE_SINKS.lock().unwrap().as_mut().unwrap().remove(&c.id);
            to_worker.send(()).unwrap();
        });
    }
}
