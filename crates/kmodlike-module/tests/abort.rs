//! The one panic the SDK cannot catch: a panic while unwinding from another one. Rust aborts,
//! SIGABRT is raised inside the module's call, and the loader's guard contains it: the module
//! is unloaded as crashed and the host keeps running. (Its own test binary: an abort may mark
//! the process tainted, which the other tests should not see.)

mod common;

use std::time::Duration;

use common::{example_module, export, install, temp_dir, with_timeout, Logs};
use kmodlike::{Error, Loader};

#[test]
fn a_panic_during_unwinding_aborts_inside_the_module_and_the_guard_contains_it() {
    // Built before the clock starts: a cargo build on a loaded machine is not what is timed.
    let built = example_module("rs_lifecycle");
    with_timeout(Duration::from_secs(60), move || {
        let dir = temp_dir();
        let so = install(&built, dir.path(), "rs_lifecycle.so");
        let logs = Logs::default();
        let loader = Loader::builder().log(logs.sink()).build();
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle = unsafe { loader.open(so.to_str().unwrap()) }.expect("open");
        // SAFETY: `void double_panic(void)`.
        let double_panic: extern "C" fn() = unsafe { export(&handle, "double_panic") };

        // SAFETY: `double_panic` is the test module's own export; a fault skips only its frames.
        match unsafe { handle.call0(double_panic) } {
            Err(Error::Crashed(report)) => {
                assert_eq!(report.signal, libc::SIGABRT, "{}", report.summary());
                assert_eq!(report.module, "rs_lifecycle");
            }
            other => panic!("expected a contained SIGABRT, got {other:?}"),
        }
        assert!(!handle.is_live(), "the crashed module is unloaded");
        assert!(
            logs.find("first panic").is_some(),
            "the first panic's message reached the host's log before the abort: {:?}",
            logs.all()
        );
        drop(handle);

        // The host keeps running and can load the module again (a fresh instance).
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let again = unsafe { loader.open(so.to_str().unwrap()) }.expect("reopen after the crash");
        // SAFETY: `void mod_hello(void)`.
        let hello: extern "C" fn() = unsafe { export(&again, "mod_hello") };
        // SAFETY: `hello` is the test module's own export; a fault skips only its frames.
        unsafe { again.call0(hello) }.expect("mod_hello on the fresh instance");
        assert!(logs.find("Hello from rs_lifecycle").is_some());
        again.close().map_err(|e| e.error).expect("close");
    });
}

/// tests/modules/rs_panic_abort, a module built with `panic = "abort"` (its own little
/// workspace, built into target/<profile>/sdk-tests/panic-abort).
fn panic_abort_module() -> std::path::PathBuf {
    let manifest = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/modules/rs_panic_abort/Cargo.toml");
    let target = common::profile_dir().join("sdk-tests/panic-abort");
    let status = std::process::Command::new(env!("CARGO"))
        .args(["build", "--quiet", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building {} failed", manifest.display());
    target.join("debug/librs_panic_abort.so")
}

#[test]
fn a_panic_in_a_module_built_with_panic_abort_is_logged_then_contained_as_sigabrt() {
    let built = panic_abort_module();
    with_timeout(Duration::from_secs(120), move || {
        let dir = temp_dir();
        let so = install(&built, dir.path(), "rs_panic_abort.so");
        let logs = Logs::default();
        let loader = Loader::builder().log(logs.sink()).build();
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle = unsafe { loader.open(so.to_str().unwrap()) }.expect("open");
        // SAFETY: `void give_up(void)`.
        let give_up: extern "C" fn() = unsafe { export(&handle, "give_up") };
        // SAFETY: `give_up` is the test module's own export; a fault skips only its frames.
        match unsafe { handle.call0(give_up) } {
            Err(Error::Crashed(report)) => {
                assert_eq!(report.signal, libc::SIGABRT);
                // A Rust module's own abort: no taint, and a backtrace of demangled Rust frames
                // of the module down to the export that was called.
                assert_eq!(report.taint, None, "{report}");
                assert!(
                    report.frames.iter().any(|f| f.in_module
                        && f.symbol.as_deref().is_some_and(|s| s.contains("give_up"))),
                    "the module's give_up frame: {:#?}",
                    report.frames
                );
                assert!(
                    report
                        .frames
                        .iter()
                        .filter_map(|f| f.symbol.as_deref())
                        .all(|s| !s.starts_with("_ZN") && !s.starts_with("_R")),
                    "every Rust name demangled: {:#?}",
                    report.frames
                );
            }
            other => panic!("expected a contained SIGABRT, got {other:?}"),
        }
        let (module, level, msg) = logs.find("giving up under panic=abort").expect("logged first");
        assert_eq!((module.as_str(), level), ("rs_panic_abort", 2));
        assert!(msg.starts_with("panic in `give_up` at "), "{msg}");
        assert!(msg.ends_with("the process aborts"), "{msg}");
        assert!(!handle.is_live());
    });
}
