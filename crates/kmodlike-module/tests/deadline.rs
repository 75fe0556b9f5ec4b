//! A Rust module's export that never returns is interrupted at its deadline, like a C one.

mod common;

use std::time::Duration;

use common::{example_module, export, install, temp_dir, with_timeout};
use kmodlike::{CallOptions, Error, Handle, Loader};

/// Example module `name`, installed in a fresh directory (kept alive by the returned guard) and
/// opened by `loader`.
fn open_example(loader: &Loader, name: &str) -> (tempfile::TempDir, std::path::PathBuf, Handle) {
    let dir = temp_dir();
    let so = install(&example_module(name), dir.path(), &format!("{name}.so"));
    // SAFETY: a test module of this workspace, built with kmodlike-module.
    let h =
        unsafe { loader.open(so.to_str().unwrap()) }.unwrap_or_else(|e| panic!("open {name}: {e}"));
    (dir, so, h)
}

#[test]
fn a_rust_export_that_loops_forever_is_interrupted_at_its_deadline() {
    with_timeout(Duration::from_secs(60), || {
        let loader = Loader::new();
        let (_dir, _, h) = open_example(&loader, "rs_spin");
        // SAFETY: `spin` is `void spin(void)`.
        let spin: extern "C" fn() = unsafe { export(&h, "spin") };
        let opts = CallOptions::default().with_timeout(Duration::from_millis(200));
        // SAFETY: the module's own export; an interrupt skips only its frames.
        let report = match unsafe { h.call0_with(&opts, spin) } {
            Err(Error::TimedOut(r)) => r,
            other => panic!("expected TimedOut, got {other:?}"),
        };
        let t = report.timeout.expect("a timeout report");
        assert!(t.ran >= Duration::from_millis(200), "{t:?}");
        assert_eq!(report.called.as_deref(), Some("spin"), "{report}");
        assert!(report.pc_in_module, "{report}");
        assert!(!h.is_live());
        assert!(loader.list().is_empty());
    });
}

/// The slow-call warning samples the thread's stack with a signal: landing in the middle of a
/// panic's unwinding (libgcc's unwinder, the panic hook's `log` callback) it must disturb
/// nothing. 500 panicking calls whose soft deadline is already due when they start: every
/// one returns the panic value, none is recorded as a crash, and the module stays loaded.
#[test]
fn slow_call_samples_during_a_panics_unwinding_leave_it_caught() {
    with_timeout(Duration::from_secs(300), || {
        let loader = Loader::new();
        let (_dir, _, h) = open_example(&loader, "rs_lifecycle");
        // SAFETY: `double` is `int double(int)`.
        let double: extern "C" fn(i32) -> i32 = unsafe { export(&h, "double") };
        let opts = CallOptions::default()
            .with_timeout(Duration::from_secs(60))
            .with_soft_timeout(Duration::from_nanos(1));
        for i in 0..500 {
            // SAFETY: the module's own export, which catches its panic.
            let r = unsafe { h.call_with(&opts, double, i32::MAX) };
            assert_eq!(r.ok(), Some(i32::MIN), "call {i}: the panic value");
        }
        assert!(h.is_live(), "the module stays loaded");
        assert!(loader.crashes().is_empty(), "no crash: {:?}", loader.crashes());
    });
}

/// A deadline that falls while a panic unwinds is never served inside libgcc's unwinder
/// (which may hold its locks or the dynamic linker's) nor in libc outside a system call: the
/// call is ended back in the module's code (or in a system call the signal interrupted, such
/// as the panic message's `write`), untainted, or finishes first. 100 panicking calls with a
/// deadline that is due at once.
#[test]
fn a_deadline_during_a_panics_unwinding_is_never_served_inside_the_unwinder() {
    with_timeout(Duration::from_secs(300), || {
        let loader = Loader::new();
        let (_dir, so, first) = open_example(&loader, "rs_lifecycle");
        drop(first);
        let opts = CallOptions::default().with_timeout(Duration::from_nanos(1));
        let mut ended = 0;
        for i in 0..100 {
            // SAFETY: a test module of this workspace, built with kmodlike-module.
            let h = unsafe { loader.open(so.to_str().unwrap()) }.expect("open rs_lifecycle");
            // SAFETY: `double` is `int double(int)`.
            let double: extern "C" fn(i32) -> i32 = unsafe { export(&h, "double") };
            // SAFETY: the module's own export, which catches its panic.
            match unsafe { h.call_with(&opts, double, i32::MAX) } {
                Ok(v) => assert_eq!(v, i32::MIN, "call {i}: the panic value"),
                Err(Error::TimedOut(r)) => {
                    ended += 1;
                    let object = r.pc_object.as_deref().unwrap_or("");
                    assert!(!object.starts_with("libgcc_s"), "call {i}: ended in {object}: {r}");
                    assert!(r.taint.is_none(), "call {i}: tainted: {r}");
                }
                Err(e) => panic!("call {i}: {e}"),
            }
            if h.is_live() {
                h.close().expect("unload");
            }
        }
        assert!(ended > 0, "no call was ended by its deadline");
        assert!(kmodlike::taint().is_none(), "the process is not tainted");
    });
}
