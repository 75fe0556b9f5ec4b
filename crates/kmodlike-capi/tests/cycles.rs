//! 10,000 load/init/fini/unload cycles through the C API in one process leak nothing: the open
//! file descriptors are unchanged and resident memory grows by less than 1 MiB.
//!
//! Alone in its test binary so no other test's allocations blur the figures.

use std::ffi::{c_char, c_int, CStr, CString};
use std::sync::atomic::{AtomicUsize, Ordering};

use kmodlike_testsupport as support;
use module::interface::{module_init_args, MODULE_INIT_ARGS_VERSION_CURRENT};
use module::module_error_t::MODULE_ERR_SUCCESS;
use module::{
    module_loader_create, module_loader_destroy, module_loader_load, module_loader_unload,
};

static INITS: AtomicUsize = AtomicUsize::new(0);
static FINIS: AtomicUsize = AtomicUsize::new(0);

/// The host's log: the example module logs once in module_init and once in module_fini.
unsafe extern "C" fn count_log(_level: c_int, msg: *const c_char) {
    // SAFETY: the module passes a NUL-terminated string.
    let msg = unsafe { CStr::from_ptr(msg) }.to_bytes();
    match msg {
        b"module initializing" => INITS.fetch_add(1, Ordering::Relaxed),
        b"module finalizing" => FINIS.fetch_add(1, Ordering::Relaxed),
        _ => 0,
    };
}

#[test]
fn ten_thousand_load_unload_cycles_leak_no_fd_and_under_1_mib() {
    let hello = support::workspace_root().join("modules/hello/hello.c");
    let path = support::build_module("capi_cycles_hello.so", &[&hello], &[]);
    let path = CString::new(path.to_str().unwrap()).unwrap();
    let args = module_init_args {
        version: MODULE_INIT_ARGS_VERSION_CURRENT,
        log: Some(count_log),
        get_time: None,
        user_data: std::ptr::null_mut(),
    };
    let loader = module_loader_create();
    assert!(!loader.is_null());
    let cycle = || {
        // SAFETY: a live loader, a NUL-terminated path and a valid init_args.
        unsafe {
            assert_eq!(module_loader_load(loader, path.as_ptr(), &args), MODULE_ERR_SUCCESS);
            assert_eq!(module_loader_unload(loader), MODULE_ERR_SUCCESS);
        }
    };
    // Warm up: the first cycles fill caches (ld.so's, the allocator's, thread-locals).
    for _ in 0..200 {
        cycle();
    }
    let fds_before = support::open_fds();
    let rss_before = support::rss_bytes();
    const CYCLES: usize = 10_000;
    let started = std::time::Instant::now();
    for _ in 0..CYCLES {
        cycle();
    }
    let elapsed = started.elapsed();
    let fds_after = support::open_fds();
    let rss_after = support::rss_bytes();
    // SAFETY: the loader is live and used by no other thread.
    unsafe { module_loader_destroy(loader) };

    let growth = rss_after.saturating_sub(rss_before);
    println!(
        "{CYCLES} cycles in {elapsed:.2?} ({:.1} us each): open fds {fds_before} -> {fds_after}, \
         RSS {} KiB -> {} KiB (growth {} KiB)",
        elapsed.as_secs_f64() * 1e6 / CYCLES as f64,
        rss_before / 1024,
        rss_after / 1024,
        growth / 1024
    );
    assert_eq!(INITS.load(Ordering::Relaxed), CYCLES + 200, "module_init ran every cycle");
    assert_eq!(FINIS.load(Ordering::Relaxed), CYCLES + 200, "module_fini ran every cycle");
    assert_eq!(fds_after, fds_before, "open file descriptors leaked");
    assert!(growth < 1024 * 1024, "resident memory grew by {growth} bytes over {CYCLES} cycles");
}
