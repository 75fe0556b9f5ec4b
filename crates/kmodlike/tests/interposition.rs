//! The guard holds its ground against modules: a module's own `sigaction`/`signal`,
//! `sigprocmask`/`pthread_sigmask` and `exit`/`_exit` reach the guard's interposers, and a
//! handler installed behind them (a raw system call in a constructor) is taken back after the
//! load. Every test builds real modules from C and loads them through a real `Loader`; nextest
//! runs each test in its own process, so the process-wide signal state starts fresh.

use std::ffi::c_void;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kmodlike::{Error, Handle, Loader, Phase};
use kmodlike_testsupport as ts;

/// `tests/modules/interposed.c` built as the module `name`.
fn interposed(name: &str) -> PathBuf {
    ts::test_module("interposed", name, &[])
}

/// The same, linked with `-z now`: every GOT slot is in `PT_GNU_RELRO`, read-only once ld.so
/// has relocated it, so redirecting the imports must unprotect and reprotect it.
fn interposed_bind_now(name: &str) -> PathBuf {
    ts::test_module("interposed", name, &["-Wl,-z,relro,-z,now"])
}

fn open(loader: &Loader, path: &Path) -> Handle {
    // SAFETY: a fixture module this test built from its C source for the interface.
    unsafe { loader.open(path.to_str().unwrap()) }.unwrap()
}

/// The fixture's `name`, of C type `R name(void)`.
fn func<R>(h: &Handle, name: &str) -> extern "C" fn() -> R {
    let p = h.symbol_ptr(name).unwrap();
    // SAFETY: the fixture defines every function this test names as `R name(void)`.
    unsafe { std::mem::transmute_copy::<*mut c_void, extern "C" fn() -> R>(&p) }
}

/// Call the fixture's `name` under the guard.
fn call<R: Copy>(h: &Handle, name: &str) -> kmodlike::Result<R> {
    let f = func::<R>(h, name);
    // SAFETY: the fixture's own C code; a fault skips only its frames.
    unsafe { h.call0(f) }
}

fn crash_of<R: std::fmt::Debug>(r: kmodlike::Result<R>) -> (kmodlike::CrashReport, String) {
    match r {
        Err(e @ Error::Crashed(_)) => {
            let text = e.to_string();
            let Error::Crashed(report) = e else { unreachable!() };
            (*report, text)
        }
        other => panic!("expected a contained crash, got {other:?}"),
    }
}

/// The SIGSEGV handler the kernel holds for this process.
fn installed_segv_handler() -> usize {
    let mut old = std::mem::MaybeUninit::<libc::sigaction>::zeroed();
    // SAFETY: a query (no new action); `old` is a valid out pointer.
    assert_eq!(unsafe { libc::sigaction(libc::SIGSEGV, std::ptr::null(), old.as_mut_ptr()) }, 0);
    // SAFETY: filled by sigaction.
    unsafe { old.assume_init() }.sa_sigaction
}

fn current_mask() -> libc::sigset_t {
    let mut set = std::mem::MaybeUninit::<libc::sigset_t>::zeroed();
    // SAFETY: a query of this thread's mask into a valid out pointer.
    let rc =
        unsafe { libc::pthread_sigmask(libc::SIG_SETMASK, std::ptr::null(), set.as_mut_ptr()) };
    assert_eq!(rc, 0);
    // SAFETY: filled by pthread_sigmask.
    unsafe { set.assume_init() }
}

fn is_member(set: &libc::sigset_t, sig: i32) -> bool {
    // SAFETY: reads an initialised set.
    unsafe { libc::sigismember(set, sig) == 1 }
}

#[test]
fn a_modules_own_segv_handler_is_its_own_and_goes_with_it() {
    let loader = Loader::new();
    let guard_handler = installed_segv_handler(); // the loader installed the guard
    let a = open(&loader, &interposed("interpose_a"));
    assert_eq!(call::<i32>(&a, "install_segv_handler").unwrap(), 0, "sigaction says yes");
    let own = a.symbol_ptr("own_segv_handler").unwrap() as usize;
    assert_eq!(call::<usize>(&a, "current_segv_handler").unwrap(), own, "the module sees its own");
    assert_eq!(installed_segv_handler(), guard_handler, "but the guard's stays installed");
    // Its own faults go to its own handler first, which jumps back into the module.
    assert_eq!(call::<i32>(&a, "fault_with_own_handler").unwrap(), 1);
    a.close().unwrap();

    let b = open(&loader, &interposed("interpose_b"));
    let (report, text) = crash_of(call::<()>(&b, "crash_now"));
    assert_eq!(report.module, "interpose_b");
    assert_eq!(report.signal_name, "SIGSEGV");
    assert!(text.contains("interpose_b"), "{text}");
    assert_eq!(installed_segv_handler(), guard_handler);
}

#[test]
fn one_modules_sig_ign_for_sigabrt_leaves_abort_recoverable_for_the_others() {
    let loader = Loader::new();
    let a = open(&loader, &interposed("ignores_abort"));
    assert_eq!(call::<i32>(&a, "ignore_abort").unwrap(), 0);
    let b = open(&loader, &interposed("aborts"));
    let (report, _) = crash_of(call::<()>(&b, "do_abort"));
    assert_eq!(report.module, "aborts");
    assert_eq!(report.signal_name, "SIGABRT");
    // Even the module that asked to ignore it is recovered (it only recorded SIG_IGN).
    let (report, _) = crash_of(call::<()>(&a, "do_abort"));
    assert_eq!(report.module, "ignores_abort");
    assert_eq!(report.signal_name, "SIGABRT");
}

#[test]
fn a_mask_a_module_leaves_behind_is_put_back_and_never_blocks_a_fatal_signal() {
    let loader = Loader::new();
    let m = open(&loader, &interposed_bind_now("blocks_signals"));
    let before = current_mask();
    assert!(!is_member(&before, libc::SIGUSR1));
    assert_eq!(call::<i32>(&m, "block_signals").unwrap(), 1, "SIGUSR1 blocked, SIGSEGV not");
    let after = current_mask();
    for sig in 1..64 {
        assert_eq!(is_member(&before, sig), is_member(&after, sig), "signal {sig}");
    }
    let (report, _) = crash_of(call::<()>(&m, "crash_now"));
    assert_eq!(report.signal_name, "SIGSEGV");
    assert_eq!(report.module, "blocks_signals");
}

#[test]
fn exit_in_a_guarded_call_ends_the_call_and_the_module_not_the_host() {
    let loader = Loader::new();
    for (name, func_name, call_text, status) in [
        ("exits", "call_exit", "exit(3)", 3),
        ("underscore_exits", "call__exit", "_exit(4)", 4),
        ("pointer_exits", "call_Exit_via_pointer", "_Exit(5)", 5),
    ] {
        let m = open(&loader, &interposed_bind_now(name));
        let crash_now = func::<()>(&m, "crash_now");
        let (report, text) = crash_of(call::<()>(&m, func_name));
        assert_eq!(report.exit_status, Some(status));
        assert_eq!(report.signal, 0);
        assert_eq!(report.signal_name, call_text);
        assert_eq!(report.phase, Phase::Call);
        assert!(report.pc_in_module, "the PC is the module's call site: {report}");
        assert!(report.symbol.as_deref().unwrap_or("").starts_with(func_name), "{report}");
        assert!(text.contains(name) && text.contains(call_text), "{text}");
        assert!(
            report.to_string().contains(&format!("module {name} called {call_text}")),
            "{report}"
        );
        assert!(!m.is_live());
        assert!(loader.list().iter().all(|i| i.name != name), "the module is gone");
        // SAFETY: the fixture's own C code (the handle is dead: it is not called).
        let e = unsafe { m.call0(crash_now) }.unwrap_err();
        assert!(e.to_string().contains(call_text), "later calls say why: {e}");
    }
    assert_eq!(loader.crashes().len(), 3);
}

#[test]
fn a_handler_installed_by_a_raw_system_call_in_a_constructor_is_taken_back() {
    let logs = Arc::new(Mutex::new(Vec::<String>::new()));
    let sink = logs.clone();
    let loader = Loader::builder()
        .log(move |module, level, msg| sink.lock().unwrap().push(format!("{module} {level} {msg}")))
        .build();
    let path = ts::test_module("raw_sigaction", "raw_sigaction", &[]);
    let m = open(&loader, &path);
    let raw = call::<usize>(&m, "raw_handler").unwrap();
    assert_ne!(installed_segv_handler(), raw, "the guard's handler is back");
    let logs = logs.lock().unwrap().clone();
    assert!(
        logs.iter().any(|l| l.starts_with("raw_sigaction 1 ")
            && l.contains("module raw_sigaction")
            && l.contains("SIGSEGV")),
        "{logs:?}"
    );
    let (report, _) = crash_of(call::<()>(&m, "crash_now"));
    assert_eq!(report.signal_name, "SIGSEGV");
    assert_eq!(report.module, "raw_sigaction");
}
