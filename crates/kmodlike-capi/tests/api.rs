//! The C API's contracts, called in-process as a C host would (through the `extern "C"`
//! functions): bad arguments, per-thread last errors, and many threads sharing one loader.

use std::ffi::{c_char, c_void, CStr, CString};
use std::ptr::{null, null_mut};
use std::sync::atomic::{AtomicUsize, Ordering};

use kmodlike_testsupport as support;
use module::interface::{module_init_args, MODULE_INIT_ARGS_VERSION_CURRENT};
use module::module_error_t::{self, *};
use module::*;

fn text(p: *const c_char) -> String {
    assert!(!p.is_null(), "expected an error text, got NULL");
    // SAFETY: the library returns NUL-terminated strings that live until the next failure.
    unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned()
}

fn last_error(loader: *const module_loader_t) -> String {
    // SAFETY: NULL or a live loader.
    text(unsafe { module_loader_last_error(loader) })
}

/// The dltest module, built under a name of the test's own: loaders in one process that open
/// the same file share its static data (ld.so maps a file once), and the tests here run in
/// parallel.
fn dltest(name: &str) -> CString {
    let src = support::workspace_root().join("modules/dltest/dltest.c");
    let so = support::build_module(&format!("capi_api_{name}.so"), &[&src], &[]);
    CString::new(so.to_str().unwrap()).unwrap()
}

/// A loader destroyed when the test ends.
struct Loader(*mut module_loader_t);
impl Loader {
    fn new() -> Self {
        let l = module_loader_create();
        assert!(!l.is_null());
        Loader(l)
    }
    /// The pointer (a method, so closures capture the whole `Loader`, which is `Sync`).
    fn ptr(&self) -> *mut module_loader_t {
        self.0
    }
}
impl Drop for Loader {
    fn drop(&mut self) {
        // SAFETY: created by module_loader_create, used by no other thread now.
        unsafe { module_loader_destroy(self.0) };
    }
}
// SAFETY: the C API documents a loader as usable from several threads at once.
unsafe impl Send for Loader {}
// SAFETY: as above.
unsafe impl Sync for Loader {}

#[test]
fn null_arguments_are_refused_with_a_reason_and_never_crash() {
    // SAFETY: NULL pointers are allowed by every call's contract (this block is the whole test).
    unsafe {
        assert_eq!(
            module_loader_load(null_mut(), c"x.so".as_ptr(), null()),
            MODULE_ERR_INVALID_ARGUMENT
        );
        assert_eq!(last_error(null()), "module_loader_load: loader is NULL");
        assert_eq!(module_loader_unload(null_mut()), MODULE_ERR_INVALID_ARGUMENT);
        assert_eq!(module_loader_set_path(null_mut(), null()), MODULE_ERR_INVALID_ARGUMENT);
        module_loader_destroy(null_mut());
        let mut sym: *mut c_void = 1 as *mut c_void;
        assert_eq!(
            module_loader_get_symbol(null_mut(), c"f".as_ptr(), &mut sym),
            MODULE_ERR_INVALID_ARGUMENT
        );
        assert!(sym.is_null(), "the out-parameter is cleared on failure");
        let mut err = MODULE_ERR_SUCCESS;
        assert!(module_loader_open(null_mut(), c"x".as_ptr(), null(), OpenFlagsArg(0), &mut err)
            .is_null());
        assert_eq!(err, MODULE_ERR_INVALID_ARGUMENT);
        assert!(module_loader_sym(null_mut(), c"x".as_ptr(), &mut err).is_null());
        assert_eq!(err, MODULE_ERR_INVALID_ARGUMENT);
        assert_eq!(last_error(null()), "module_loader_sym: handle is NULL");
        assert_eq!(module_loader_close(null_mut()), MODULE_ERR_INVALID_ARGUMENT);
        assert_eq!(
            module_loader_call_handle(null_mut(), None, null_mut()),
            MODULE_ERR_INVALID_ARGUMENT
        );

        let l = Loader::new();
        assert!(module_loader_last_error(l.0).is_null(), "no failure yet on this loader");
        assert_eq!(module_loader_call(l.0, None, null_mut()), MODULE_ERR_INVALID_ARGUMENT);
        assert_eq!(last_error(l.0), "module_loader_call: func is NULL");
        assert_eq!(module_loader_last_crash(l.0, null_mut()), MODULE_ERR_INVALID_ARGUMENT);
        assert_eq!(module_loader_get_symbol(l.0, null(), &mut sym), MODULE_ERR_INVALID_ARGUMENT);
        assert_eq!(last_error(l.0), "module_loader_get_symbol: name is NULL");
        assert_eq!(
            module_loader_modinfo(l.0, c"dltest".as_ptr(), None, null_mut()),
            MODULE_ERR_INVALID_ARGUMENT
        );
        assert!(!module_loader_tainted(null_mut(), 0), "no crash has tainted this process");
    }
}

#[test]
fn init_args_with_an_unknown_version_are_refused() {
    let l = Loader::new();
    let path = dltest("init_args");
    let args = module_init_args { version: 0, log: None, get_time: None, user_data: null_mut() };
    // SAFETY: a live loader, a valid path and init_args.
    let err = unsafe { module_loader_load(l.0, path.as_ptr(), &args) };
    assert_eq!(err, MODULE_ERR_INVALID_ARGUMENT);
    let e = last_error(l.0);
    assert!(
        e.contains("init_args->version is 0") && e.contains("MODULE_INIT_ARGS_VERSION_CURRENT"),
        "{e}"
    );
    let args = module_init_args { version: MODULE_INIT_ARGS_VERSION_CURRENT, ..args };
    // SAFETY: as above.
    unsafe {
        assert_eq!(module_loader_load(l.0, path.as_ptr(), &args), MODULE_ERR_SUCCESS);
        assert_eq!(module_loader_unload(l.0), MODULE_ERR_SUCCESS);
        // NULL init_args: module_init(NULL).
        assert_eq!(module_loader_load(l.0, path.as_ptr(), null()), MODULE_ERR_SUCCESS);
        assert_eq!(module_loader_unload(l.0), MODULE_ERR_SUCCESS);
    }
}

#[test]
fn last_error_is_per_thread_and_per_loader() {
    let a = Loader::new();
    let b = Loader::new();
    // SAFETY: live loaders.
    unsafe {
        assert_eq!(module_loader_unload(a.ptr()), MODULE_ERR_NOT_LOADED);
        assert_eq!(module_loader_load(b.0, c"".as_ptr(), null()), MODULE_ERR_INVALID_ARGUMENT);
    }
    assert!(last_error(a.ptr()).contains("no module is loaded"));
    assert!(last_error(b.0).contains("path is empty"));
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: a live loader, shared as the API allows.
            assert!(unsafe { module_loader_last_error(a.ptr()) }.is_null(), "not this thread's");
            // SAFETY: as above.
            let err = unsafe { module_loader_load(a.ptr(), c"/nonexistent/m.so".as_ptr(), null()) };
            assert_eq!(err, MODULE_ERR_NOT_FOUND);
            assert!(last_error(a.ptr()).contains("/nonexistent/m.so"));
        });
    });
    assert!(
        last_error(a.ptr()).contains("no module is loaded"),
        "the other thread's failure is its own"
    );
}

#[test]
fn flags_arguments_are_checked_not_trusted() {
    assert!(module_loader_create_with_flags(LoaderFlagsArg(0x80)).is_null());
    assert!(last_error(null()).contains("unknown flag bits 0x80"));
    let strict = module_loader_create_with_flags(LoaderFlagsArg(
        module_loader_flags_t::MODULE_LOADER_STRICT as u32
            | module_loader_flags_t::MODULE_LOADER_RECLAIM as u32,
    ));
    assert!(!strict.is_null());
    // SAFETY: the loader just created.
    unsafe { module_loader_destroy(strict) };
    // SAFETY: strerror takes any int.
    let s = text(module_loader_strerror(ErrorCodeArg(-7)));
    assert_eq!(s, "unknown error code");
}

static TEST_CALLS: AtomicUsize = AtomicUsize::new(0);
static WRONG_RESULTS: AtomicUsize = AtomicUsize::new(0);

/// A guarded call's body: calls the module's test(41) through `ctx`. It must not panic (it is
/// called from C), so it counts wrong results for the test to check.
unsafe extern "C" fn call_test(ctx: *mut c_void) {
    // SAFETY: ctx is the module's `int test(int)`.
    let test: extern "C" fn(i32) -> i32 = unsafe { std::mem::transmute(ctx) };
    if test(41) != 42 {
        WRONG_RESULTS.fetch_add(1, Ordering::Relaxed);
    }
    TEST_CALLS.fetch_add(1, Ordering::Relaxed);
}

#[test]
fn eight_threads_share_one_loader_and_its_handles() {
    const THREADS: usize = 8;
    const ROUNDS: usize = 500;
    let l = Loader::new();
    let path = dltest("threads");
    let mut keep_err = MODULE_ERR_SUCCESS;
    // One handle held throughout, so the module stays loaded while the threads churn.
    // SAFETY: a live loader and a valid spec.
    let keep = unsafe {
        module_loader_open(l.ptr(), path.as_ptr(), null(), OpenFlagsArg(0), &mut keep_err)
    };
    assert!(!keep.is_null(), "{}", last_error(l.ptr()));
    std::thread::scope(|s| {
        for t in 0..THREADS {
            let (l, path) = (&l, &path);
            s.spawn(move || {
                for round in 0..ROUNDS {
                    let mut err = MODULE_ERR_INTERNAL;
                    // SAFETY: a live loader shared as the API allows; valid strings.
                    unsafe {
                        let h = module_loader_open(
                            l.ptr(),
                            path.as_ptr(),
                            null(),
                            OpenFlagsArg(0),
                            &mut err,
                        );
                        assert!(
                            !h.is_null() && err == MODULE_ERR_SUCCESS,
                            "{}",
                            last_error(l.ptr())
                        );
                        let test = module_loader_sym(h, c"test".as_ptr(), &mut err);
                        assert!(!test.is_null());
                        assert_eq!(
                            module_loader_call_handle(h, Some(call_test), test),
                            MODULE_ERR_SUCCESS
                        );
                        // A per-thread failure text, checked right away.
                        assert!(module_loader_sym(h, c"nope".as_ptr(), &mut err).is_null());
                        assert_eq!(err, MODULE_ERR_SYMBOL_NOT_FOUND);
                        assert!(
                            last_error(l.ptr()).contains("\"nope\""),
                            "thread {t} round {round}"
                        );
                        assert_eq!(module_loader_close(h), MODULE_ERR_SUCCESS);
                    }
                }
            });
        }
    });
    assert_eq!(TEST_CALLS.load(Ordering::Relaxed), THREADS * ROUNDS);
    assert_eq!(WRONG_RESULTS.load(Ordering::Relaxed), 0, "test(41) returned 42 every time");
    // SAFETY: the handle from above, used by no other thread now.
    assert_eq!(unsafe { module_loader_close(keep) }, MODULE_ERR_SUCCESS);
    // The seed's unload refuses while a guarded call runs on another thread.
    assert_busy_while_a_call_runs(&l, &path);
}

static IN_CALL: AtomicUsize = AtomicUsize::new(0);
static RELEASE: AtomicUsize = AtomicUsize::new(0);

unsafe extern "C" fn wait_for_release(_ctx: *mut c_void) {
    IN_CALL.store(1, Ordering::SeqCst);
    while RELEASE.load(Ordering::SeqCst) == 0 {
        std::thread::yield_now();
    }
}

fn assert_busy_while_a_call_runs(l: &Loader, path: &CString) {
    // SAFETY: a live loader and a valid path.
    assert_eq!(unsafe { module_loader_load(l.ptr(), path.as_ptr(), null()) }, MODULE_ERR_SUCCESS);
    std::thread::scope(|s| {
        let caller = s.spawn(|| {
            // SAFETY: a live loader; the function is safe to call with NULL.
            unsafe { module_loader_call(l.ptr(), Some(wait_for_release), null_mut()) }
        });
        while IN_CALL.load(Ordering::SeqCst) == 0 {
            std::thread::yield_now();
        }
        // SAFETY: a live loader.
        let err: module_error_t = unsafe { module_loader_unload(l.ptr()) };
        assert_eq!(err, MODULE_ERR_BUSY);
        assert!(last_error(l.ptr()).contains("1 call(s) still running"), "{}", last_error(l.ptr()));
        RELEASE.store(1, Ordering::SeqCst);
        assert_eq!(caller.join().unwrap(), MODULE_ERR_SUCCESS);
    });
    // SAFETY: a live loader.
    assert_eq!(unsafe { module_loader_unload(l.ptr()) }, MODULE_ERR_SUCCESS);
}
