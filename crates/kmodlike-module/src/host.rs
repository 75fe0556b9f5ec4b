//! What the host handed `module_init`, kept for the life of the instance: its log callback, its
//! clock and its opaque `user_data`.
//!
//! The four fields of `module_init_args_t` are copied at `module_init` (the host owns the struct
//! and need not keep it alive afterwards) into atomics rather than a lock: a module that crashes
//! and is jumped out of by the loader's guard must never leave a lock held that the next call of
//! the same instance would wait on.

use std::ffi::{c_char, c_int, c_void, CString};
use std::fmt;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;

/// `void (*log)(int level, const char *msg)`.
pub(crate) type LogFn = unsafe extern "C" fn(level: c_int, msg: *const c_char);
/// `uint64_t (*get_time)(void)`: monotonic nanoseconds.
pub(crate) type GetTimeFn = unsafe extern "C" fn() -> u64;

/// `module_init_args_t`, exactly as `module_interface.h` declares it.
#[repr(C)]
pub(crate) struct RawInitArgs {
    pub(crate) version: u32,
    pub(crate) log: Option<LogFn>,
    pub(crate) get_time: Option<GetTimeFn>,
    pub(crate) user_data: *mut c_void,
}

/// A log level of the host's `log` callback (`MODULE_LOG_*` in `module_interface.h`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[repr(i32)]
pub enum Level {
    /// Debugging detail (`-1`).
    Debug = -1,
    /// Normal operation (`0`).
    Info = 0,
    /// Something unexpected that the module handled (`1`).
    Warning = 1,
    /// A failure (`2`).
    Error = 2,
}

impl Level {
    /// The integer the host's `log` callback receives.
    pub const fn as_raw(self) -> i32 {
        self as i32
    }
}

/// The host's `user_data` pointer, as an opaque value.
///
/// The SDK never dereferences it and offers no safe way to: what it points to is an agreement
/// between the host and the module, outside the interface. [`UserData::as_ptr`] gives the raw
/// pointer to a module that knows that agreement (dereferencing it is then that module's
/// `unsafe`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct UserData(*mut c_void);

// SAFETY: a `UserData` is only an address: no method reads or writes through it, so sharing or
// sending the address between threads cannot race. Whoever dereferences it (with `unsafe`) takes
// on the host's contract for the pointee.
unsafe impl Send for UserData {}
// SAFETY: as for `Send`: `&UserData` exposes only a copy of the address.
unsafe impl Sync for UserData {}

impl UserData {
    /// The null `user_data` (what the host passed when it had none, or passed no arguments).
    pub const NULL: UserData = UserData(std::ptr::null_mut());

    /// Whether the host passed no `user_data`.
    pub fn is_null(self) -> bool {
        self.0.is_null()
    }

    /// The raw pointer, exactly as the host passed it.
    pub fn as_ptr(self) -> *mut c_void {
        self.0
    }

    /// The pointer as an integer (for logging, or as a key).
    pub fn addr(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Debug for UserData {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UserData({:p})", self.0)
    }
}

/// What the host gave this module: the safe face of `module_init_args_t`.
///
/// `module_init` hands one to the module's `init`; afterwards [`host()`](crate::host) returns
/// the same view from anywhere in the module (an exported function, a thread the module
/// started). After `module_fini` (or a failed `init`) it is empty again: logging does nothing
/// and [`Context::now`] reads `CLOCK_MONOTONIC` itself.
///
/// A `Context` is a copy of the host's values: cheap to copy, `Send` and `Sync`.
#[derive(Clone, Copy, Debug)]
pub struct Context {
    args_version: Option<u32>,
    log: Option<LogFn>,
    get_time: Option<GetTimeFn>,
    user_data: UserData,
}

impl Context {
    /// A context with no host behind it: no log, the system's monotonic clock, null
    /// `user_data`. This is what a module sees when the host called `module_init(NULL)`.
    pub const fn detached() -> Context {
        Context { args_version: None, log: None, get_time: None, user_data: UserData::NULL }
    }

    /// Copy the host's arguments.
    ///
    /// # Safety
    /// `args` is null or points to a readable `module_init_args_t` whose `log` and `get_time`
    /// are null or functions with those C signatures that stay callable while the module uses
    /// them (the host's side of the interface).
    pub(crate) unsafe fn from_raw(args: *const c_void) -> Context {
        if args.is_null() {
            return Context::detached();
        }
        // SAFETY: non-null, and the caller promises it points to a `module_init_args_t`, which
        // `RawInitArgs` lays out exactly (`#[repr(C)]`, same four fields in the same order).
        let raw = unsafe { &*(args as *const RawInitArgs) };
        Context {
            args_version: Some(raw.version),
            log: raw.log,
            get_time: raw.get_time,
            user_data: UserData(raw.user_data),
        }
    }

    /// Whether the host gave a `log` callback (else [`Context::log`] does nothing).
    pub fn has_log(&self) -> bool {
        self.log.is_some()
    }

    /// The `version` field of the host's `module_init_args_t`, or `None` when the host passed
    /// no arguments (`module_init(NULL)`).
    pub fn init_args_version(&self) -> Option<u32> {
        self.args_version
    }

    /// Send `msg` to the host's log at `level`; nothing when the host gave no log.
    ///
    /// An interior NUL byte (which C cannot carry) is shown as `\0`.
    pub fn log(&self, level: Level, msg: &str) {
        let Some(log) = self.log else { return };
        let c_msg = match CString::new(msg) {
            Ok(s) => s,
            Err(_) => CString::new(msg.replace('\0', "\\0")).expect("NUL bytes were replaced"),
        };
        // SAFETY: `log` came from the host's `module_init_args_t` (see `from_raw`); the host
        // promises it is callable with a level and a NUL-terminated string that lives for the
        // duration of the call, which `c_msg` does.
        unsafe { log(level.as_raw(), c_msg.as_ptr()) }
    }

    /// [`Context::log`] at [`Level::Debug`].
    pub fn debug(&self, msg: &str) {
        self.log(Level::Debug, msg)
    }

    /// [`Context::log`] at [`Level::Info`].
    pub fn info(&self, msg: &str) {
        self.log(Level::Info, msg)
    }

    /// [`Context::log`] at [`Level::Warning`].
    pub fn warn(&self, msg: &str) {
        self.log(Level::Warning, msg)
    }

    /// [`Context::log`] at [`Level::Error`].
    pub fn error(&self, msg: &str) {
        self.log(Level::Error, msg)
    }

    /// Monotonic time since an unspecified origin: the host's `get_time` when it gave one (so
    /// the module and the host agree on the clock), else `CLOCK_MONOTONIC`.
    pub fn now(&self) -> Duration {
        Duration::from_nanos(self.now_ns())
    }

    /// [`Context::now`] in nanoseconds, as the host's `get_time` returns it.
    pub fn now_ns(&self) -> u64 {
        match self.get_time {
            // SAFETY: `get_time` came from the host's `module_init_args_t`; the host promises it
            // is a callable `uint64_t (*)(void)`.
            Some(get_time) => unsafe { get_time() },
            None => monotonic_ns(),
        }
    }

    /// The host's opaque `user_data`.
    pub fn user_data(&self) -> UserData {
        self.user_data
    }
}

// SAFETY: the two function pointers are the host's callbacks, which the interface lets any thread
// of the module call (the C example module calls them from whatever thread the host calls it
// on); `UserData` is `Send` (see there). A `Context` owns nothing else.
unsafe impl Send for Context {}
// SAFETY: all of `Context` is read-only copies; see `Send`.
unsafe impl Sync for Context {}

/// `CLOCK_MONOTONIC` in nanoseconds.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0, "clock_gettime(CLOCK_MONOTONIC)");
    (ts.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(ts.tv_nsec as u64)
}

// The kept host arguments. `LOG` and `GET_TIME` hold function pointers as integers (0 = none).
static ARGS_VERSION: AtomicU32 = AtomicU32::new(NO_ARGS);
static LOG: AtomicUsize = AtomicUsize::new(0);
static GET_TIME: AtomicUsize = AtomicUsize::new(0);
static USER_DATA: AtomicPtr<c_void> = AtomicPtr::new(std::ptr::null_mut());

/// `ARGS_VERSION` when the host passed NULL or the module is not initialised.
const NO_ARGS: u32 = u32::MAX;

/// Keep `ctx` as this instance's host (at `module_init`).
pub(crate) fn install(ctx: &Context) {
    USER_DATA.store(ctx.user_data.0, Ordering::Relaxed);
    GET_TIME.store(ctx.get_time.map_or(0, |f| f as usize), Ordering::Relaxed);
    LOG.store(ctx.log.map_or(0, |f| f as usize), Ordering::Relaxed);
    ARGS_VERSION.store(ctx.args_version.unwrap_or(NO_ARGS), Ordering::Release);
}

/// Forget the host (after `module_fini` or a failed `module_init`): its callbacks may be gone.
pub(crate) fn clear() {
    install(&Context::detached());
}

/// The host this instance was initialised with; [`Context::detached`] before `module_init` and
/// after `module_fini`.
///
/// This is how functions other than `init` (an exported function, `fini`, a thread the module
/// started) reach the host's log and clock:
///
/// ```
/// use kmodlike_module::{host, Level};
///
/// fn report(progress: u32) {
///     host().log(Level::Info, &format!("{progress}% done"));
/// }
/// # report(50);
/// ```
pub fn host() -> Context {
    let version = ARGS_VERSION.load(Ordering::Acquire);
    let log = LOG.load(Ordering::Relaxed);
    let get_time = GET_TIME.load(Ordering::Relaxed);
    Context {
        args_version: (version != NO_ARGS).then_some(version),
        // SAFETY: a non-zero `LOG` was stored by `install` from a `LogFn`; a function pointer
        // round-trips through `usize` unchanged on every platform Rust supports for this crate.
        log: (log != 0).then(|| unsafe { std::mem::transmute::<usize, LogFn>(log) }),
        // SAFETY: as for `log`, from a `GetTimeFn`.
        get_time: (get_time != 0)
            .then(|| unsafe { std::mem::transmute::<usize, GetTimeFn>(get_time) }),
        user_data: UserData(USER_DATA.load(Ordering::Relaxed)),
    }
}

/// Log `msg` at `level` through the host's log (shorthand for `host().log(level, msg)`); nothing
/// when the host gave no log or the module is not initialised.
pub fn log(level: Level, msg: &str) {
    host().log(level, msg)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    static SEEN: Mutex<Vec<(i32, String)>> = Mutex::new(Vec::new());

    unsafe extern "C" fn record(level: c_int, msg: *const c_char) {
        // SAFETY: `Context::log` passes a valid NUL-terminated string.
        let msg = unsafe { std::ffi::CStr::from_ptr(msg) }.to_string_lossy().into_owned();
        SEEN.lock().unwrap().push((level, msg));
    }

    unsafe extern "C" fn fixed_time() -> u64 {
        42_000
    }

    #[test]
    fn context_from_null_args_is_detached() {
        // SAFETY: null is allowed.
        let ctx = unsafe { Context::from_raw(std::ptr::null()) };
        assert!(!ctx.has_log());
        assert_eq!(ctx.init_args_version(), None);
        assert!(ctx.user_data().is_null());
        ctx.log(Level::Error, "goes nowhere");
        let (a, b) = (ctx.now_ns(), ctx.now_ns());
        assert!(a > 0 && b >= a, "CLOCK_MONOTONIC is used and does not go back: {a} then {b}");
    }

    #[test]
    fn context_copies_the_hosts_fields_and_logs_through_its_callback() {
        let mut marker = 7u8;
        let raw = RawInitArgs {
            version: 1,
            log: Some(record),
            get_time: Some(fixed_time),
            user_data: (&mut marker as *mut u8).cast(),
        };
        // SAFETY: `raw` is a valid module_init_args_t with valid callbacks.
        let ctx = unsafe { Context::from_raw((&raw as *const RawInitArgs).cast()) };
        assert_eq!(ctx.init_args_version(), Some(1));
        assert_eq!(ctx.now(), Duration::from_nanos(42_000));
        assert_eq!(ctx.user_data().as_ptr(), (&mut marker as *mut u8).cast::<c_void>());
        ctx.log(Level::Warning, "careful");
        ctx.error("with\0nul");
        let seen = SEEN.lock().unwrap().clone();
        assert!(seen.contains(&(1, "careful".to_owned())), "{seen:?}");
        assert!(seen.contains(&(2, "with\\0nul".to_owned())), "{seen:?}");
    }

    #[test]
    fn levels_match_module_interface_h() {
        assert_eq!(
            [Level::Debug, Level::Info, Level::Warning, Level::Error].map(Level::as_raw),
            [-1, 0, 1, 2]
        );
    }
}
