//! The baselines of `c/baselines.c`, and the guard's signal path on its own.

use std::ffi::{c_int, c_void};

mod ffi {
    use std::ffi::{c_int, c_void};

    extern "C" {
        pub fn kmlb_call_void(f: *mut c_void);
        pub fn kmlb_naive_guard_call(
            f: unsafe extern "C" fn(*mut c_void),
            ctx: *mut c_void,
        ) -> c_int;
        pub fn kmlb_usr1_install() -> c_int;
        pub fn kmlb_raise_usr1() -> c_int;
        pub fn kmlb_fault(ctx: *mut c_void);
        pub fn kmlb_direct_loop(
            f: *const unsafe extern "C" fn(*mut c_void),
            ctx: *mut c_void,
            n: u64,
        );
        pub fn kmlb_guarded_loop(
            call: super::CEntry,
            loader: *mut c_void,
            f: unsafe extern "C" fn(*mut c_void),
            ctx: *mut c_void,
            n: u64,
        ) -> u64;
    }
}

/// Call the `void (*)(void)` function `f` under a guard built the naive way, with
/// `sigsetjmp(env, 1)` (one `rt_sigprocmask` system call per call). Returns `true` when `f`
/// returned normally.
///
/// No handler is installed for this guard (one for SIGSEGV would replace kmodlike's): `f` must
/// not fault. Only the cost of entering and leaving the guard is measured.
pub fn naive_guard_call(f: extern "C" fn()) -> bool {
    // SAFETY: kmlb_call_void calls `f` (a safe `void (*)(void)`) and nothing else; the guard
    // only saves and restores a jump buffer around it.
    unsafe { ffi::kmlb_naive_guard_call(ffi::kmlb_call_void, f as *mut c_void) == 0 }
}

/// Install the `SIGUSR1` handler of the bare round trip (a handler that counts and returns).
pub fn install_usr1_handler() -> std::io::Result<()> {
    // SAFETY: installs a handler that only increments a `volatile sig_atomic_t`.
    if unsafe { ffi::kmlb_usr1_install() } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// One bare signal round trip: `raise(SIGUSR1)`, the handler runs and returns. Returns the
/// handler's running count. [`install_usr1_handler`] must have been called.
pub fn raise_usr1() -> c_int {
    // SAFETY: raise(3) of a signal whose handler is installed and returns.
    unsafe { ffi::kmlb_raise_usr1() }
}

/// kmodlike's guard on its own (`kmodlike::__bench_guard_call`: the C shim's
/// `sigsetjmp(env, 0)`, the thread's guard record, the call), below the public API: no
/// registry, no in-flight count, no crash report.
///
/// kmodlike's handlers must be installed (build any [`kmodlike::Loader`] first), and the calling
/// thread should have made one guarded call through a [`kmodlike::Handle`] (which gives it its
/// alternate signal stack), so the path timed is exactly the one a module's call takes.
pub struct GuardShim;

impl GuardShim {
    /// The shim.
    pub fn new() -> GuardShim {
        GuardShim
    }

    /// Call `f` through the guard. Returns `true` when `f` returned normally.
    pub fn call(&mut self, f: extern "C" fn()) -> bool {
        // SAFETY: kmlb_call_void calls `f` (a safe `void (*)(void)`); both are C frames that
        // own nothing.
        !unsafe { kmodlike::__bench_guard_call(ffi::kmlb_call_void, f as *mut c_void) }
    }

    /// The guard's signal path alone: a write through NULL under the guard, SIGSEGV,
    /// kmodlike's handler records it and `siglongjmp`s back. Returns `true` when the crash came
    /// back as expected.
    pub fn fault(&mut self) -> bool {
        // SAFETY: kmlb_fault is C and owns nothing: the jump skips only its frame.
        unsafe { kmodlike::__bench_guard_call(ffi::kmlb_fault, std::ptr::null_mut()) }
    }
}

impl Default for GuardShim {
    fn default() -> Self {
        GuardShim::new()
    }
}

/// A C entry of the shape of `module_loader_call(loader, fn, ctx)`.
pub type CEntry =
    unsafe extern "C" fn(*mut c_void, unsafe extern "C" fn(*mut c_void), *mut c_void) -> c_int;

/// `n` calls of `f(ctx)` from C, through a pointer.
///
/// # Safety
/// `f` must be safe to call with `ctx`.
pub unsafe fn c_direct_loop(f: unsafe extern "C" fn(*mut c_void), ctx: *mut c_void, n: u64) {
    let slot = f;
    // SAFETY: `slot` outlives the loop; the caller vouches for `f(ctx)`.
    unsafe { ffi::kmlb_direct_loop(&slot, ctx, n) }
}

/// `n` calls of `entry(loader, f, ctx)` from C; how many did not return 0.
///
/// # Safety
/// `entry` must be safe to call with `loader`, `f` and `ctx`.
pub unsafe fn c_guarded_loop(
    entry: CEntry,
    loader: *mut c_void,
    f: unsafe extern "C" fn(*mut c_void),
    ctx: *mut c_void,
    n: u64,
) -> u64 {
    // SAFETY: forwarded contract.
    unsafe { ffi::kmlb_guarded_loop(entry, loader, f, ctx, n) }
}
