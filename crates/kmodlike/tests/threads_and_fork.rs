//! Crashes on module threads in a `fork()` child (issue 10, item 11): the child gets its own
//! crash pipe and service thread, so a module thread that crashes there is reported to the
//! child's loader, and never to the parent's.
//!
//! Each test re-runs itself in a fresh process of this test binary (only that test, one test
//! thread), so the process that forks has as few threads as possible; that process forks with
//! `libc::fork()`, the child does its part and `_exit`s with a code that says what went wrong,
//! and the process asserts the child's exit status. (The unit tests of `threads_in_code`, which
//! is crate-private, are in `src/guard/threads_tests.rs`.)

use std::ffi::{c_int, c_void};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc, Condvar, Mutex};
use std::time::Duration;

use kmodlike::{CrashReport, Event, Handle, Loader, Phase};
use kmodlike_testsupport as ts;

/// Open a module for a test.
fn open(loader: &Loader, spec: &str) -> kmodlike::Result<kmodlike::Handle> {
    // SAFETY: every file opened here is a test module built from tests/modules/*.c, or a file
    // the loader must refuse before running any of it.
    unsafe { loader.open(spec) }
}

const CHILD_ENV: &str = "KMODLIKE_FORK_TEST_CHILD";

/// Generous: a safety net on a loaded 2-core machine, not a wait.
const EVENT_TIMEOUT: Duration = Duration::from_secs(30);

/// Child exit codes.
const OK: i32 = 0;
const OPEN_FAILED: i32 = 10;
const START_FAILED: i32 = 11;
const NO_EVENT: i32 = 12;
const WRONG_REPORT: i32 = 13;
const PANICKED: i32 = 14;

fn explain(code: i32) -> &'static str {
    match code {
        OPEN_FAILED => "the child could not open the module",
        START_FAILED => "the child could not start the module's thread",
        NO_EVENT => "the child got no Crashed event for its module's thread",
        WRONG_REPORT => "the child's crash report is wrong",
        PANICKED => "the child panicked",
        _ => "unexpected exit code",
    }
}

/// Re-run the test `name` alone in a new process with `CHILD_ENV` set; panic unless it passes.
fn run_isolated(name: &str) {
    let exe = std::env::current_exe().expect("test binary");
    let out = Command::new(exe)
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run the isolated test");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{name} failed in its own process ({}):\n{text}", out.status);
    assert!(text.contains("1 passed"), "{name} did not run:\n{text}");
}

fn isolated() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// A private copy of fault_signal.so named `name.so` in `dir`.
fn module_copy(dir: &Path, name: &str) -> PathBuf {
    let built = ts::test_module("fault_signal", "fault_plain", &[]);
    let dest = dir.join(format!("{name}.so"));
    std::fs::copy(built, &dest).expect("copy the module");
    dest
}

fn function<F: Copy>(h: &Handle, name: &str) -> F {
    let p = h.symbol_ptr(name).unwrap_or_else(|e| panic!("symbol {name}: {e}"));
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller names the C signature of `name` in `F` (a function pointer type).
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) }
}

/// Crashed events, as a subscriber queues them.
///
/// A mutex and a condition variable rather than a channel: a process that forks right after
/// an event must not copy a lock the subscriber (on the loader's service thread) still holds.
/// A channel's sender may still hold its waker lock when the receiver wakes, and a fork child
/// that inherits the subscriber would then block forever delivering its own next event. The
/// waiter here wakes only once the subscriber has let go of the mutex.
#[derive(Clone, Default)]
struct Events(Arc<(Mutex<Vec<CrashReport>>, Condvar)>);

impl Events {
    fn try_recv(&self) -> Option<CrashReport> {
        self.0 .0.lock().unwrap().pop()
    }

    fn recv_timeout(&self, timeout: Duration) -> Option<CrashReport> {
        let (lock, ready) = &*self.0;
        let queue = lock.lock().unwrap();
        let (mut queue, _) = ready.wait_timeout_while(queue, timeout, |q| q.is_empty()).unwrap();
        queue.pop()
    }
}

fn crash_events(loader: &Loader) -> Events {
    let events = Events::default();
    let queue = events.clone();
    loader.subscribe(move |ev| {
        if let Event::Crashed(r) = ev {
            let (lock, ready) = &*queue.0;
            lock.lock().unwrap().push((**r).clone());
            ready.notify_all();
        }
    });
    events
}

/// Start a module thread that raises SIGSEGV and wait for its Crashed event. Ok, or a child
/// exit code.
fn crash_a_module_thread(h: &Handle, events: &Events, name: &str) -> Result<(), i32> {
    let start: extern "C" fn(c_int) -> c_int = function(h, "start_fault_thread");
    // SAFETY: the module's own function, which starts the thread that faults.
    match unsafe { h.call(start, libc::SIGSEGV) } {
        Ok(0) => {}
        _ => return Err(START_FAILED),
    }
    let report = events.recv_timeout(EVENT_TIMEOUT).ok_or(NO_EVENT)?;
    if report.module != name || report.phase != Phase::Thread || report.signal != libc::SIGSEGV {
        eprintln!("child: wrong report: {report}");
        return Err(WRONG_REPORT);
    }
    Ok(())
}

/// Fork; run `child` in the child and `_exit` with its code (a panic: PANICKED). Returns the
/// child's exit code; kills it when it does not finish in time.
fn fork_and_wait(child: impl FnOnce() -> i32) -> i32 {
    // SAFETY: fork has no memory-safety preconditions; the child only runs `child` (which
    // relies on glibc's fork handlers for malloc and on kmodlike's for the guard) and _exits.
    let pid = unsafe { libc::fork() };
    assert!(pid >= 0, "fork: {}", std::io::Error::last_os_error());
    if pid == 0 {
        let code =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(child)).unwrap_or(PANICKED);
        // SAFETY: ends the child without running the parent's atexit handlers.
        unsafe { libc::_exit(code) };
    }
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let mut status = 0;
        // SAFETY: waits for our own child; `status` is a valid out pointer.
        let r = unsafe { libc::waitpid(pid, &mut status, 0) };
        let _ = tx.send((r, status));
    });
    let Ok((r, status)) = rx.recv_timeout(EVENT_TIMEOUT * 2) else {
        // SAFETY: kills our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("the fork child did not finish in time");
    };
    assert_eq!(r, pid, "waitpid");
    assert!(libc::WIFEXITED(status), "the fork child died: status {status:#x}");
    libc::WEXITSTATUS(status)
}

/// The child uses the loader, the handle and the guard it inherited from the parent: no new
/// `Loader` (so no `LoaderBuilder::build`, no `guard::install`) in the child. The guarded call
/// that starts the module's thread restarts the child's service thread.
#[test]
fn a_module_thread_crash_in_a_fork_child_is_reported_with_the_inherited_loader() {
    if !isolated() {
        return run_isolated(
            "a_module_thread_crash_in_a_fork_child_is_reported_with_the_inherited_loader",
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let loader = Loader::new();
    let parent_events = crash_events(&loader);
    let name = "fork_inherited";
    let h = open(&loader, module_copy(dir.path(), name).to_str().unwrap()).expect("open");
    let code = fork_and_wait(|| {
        let events = crash_events(&loader);
        match crash_a_module_thread(&h, &events, name) {
            Ok(()) => OK,
            Err(code) => code,
        }
    });
    assert_eq!(code, OK, "{}", explain(code));
    // The child's crash never reached the parent, whose module is still live.
    assert!(parent_events.try_recv().is_none(), "the parent got the child's crash");
    assert!(h.is_live(), "the parent's module was affected by the child's crash");
    // And the parent's own module-thread crashes are still reported.
    crash_a_module_thread(&h, &parent_events, name)
        .unwrap_or_else(|c| panic!("parent after the fork: {}", explain(c)));
}

/// The child builds a new `Loader` (which installs the guard again and sets the thread-crash
/// sink) and opens a module of its own.
#[test]
fn a_module_thread_crash_in_a_fork_child_is_reported_with_a_new_loader() {
    if !isolated() {
        return run_isolated("a_module_thread_crash_in_a_fork_child_is_reported_with_a_new_loader");
    }
    let dir = tempfile::tempdir().unwrap();
    // The parent has a loader (guard installed, service thread running) before the fork.
    let parent = Loader::new();
    let parent_events = crash_events(&parent);
    let parent_h = open(&parent, module_copy(dir.path(), "fork_parent").to_str().unwrap()).unwrap();
    let child_path = module_copy(dir.path(), "fork_child");
    let code = fork_and_wait(|| {
        let loader = Loader::new();
        let events = crash_events(&loader);
        let Ok(h) = open(&loader, child_path.to_str().unwrap()) else {
            return OPEN_FAILED;
        };
        match crash_a_module_thread(&h, &events, "fork_child") {
            Ok(()) => OK,
            Err(code) => code,
        }
    });
    assert_eq!(code, OK, "{}", explain(code));
    assert!(parent_events.try_recv().is_none(), "the parent got the child's crash");
    crash_a_module_thread(&parent_h, &parent_events, "fork_parent")
        .unwrap_or_else(|c| panic!("parent after the fork: {}", explain(c)));
}

/// Two forks in a row, the second from the first child: each generation gets its own service
/// thread.
#[test]
fn a_grandchild_reports_its_module_thread_crash_too() {
    if !isolated() {
        return run_isolated("a_grandchild_reports_its_module_thread_crash_too");
    }
    let dir = tempfile::tempdir().unwrap();
    let loader = Loader::new();
    let a = open(&loader, module_copy(dir.path(), "fork_gen_a").to_str().unwrap()).unwrap();
    let b = open(&loader, module_copy(dir.path(), "fork_gen_b").to_str().unwrap()).unwrap();
    let code = fork_and_wait(|| {
        let events = crash_events(&loader);
        if let Err(code) = crash_a_module_thread(&a, &events, "fork_gen_a") {
            return code;
        }
        let code = fork_and_wait(|| {
            let events = crash_events(&loader);
            match crash_a_module_thread(&b, &events, "fork_gen_b") {
                Ok(()) => OK,
                Err(code) => code,
            }
        });
        if code != OK {
            return 20 + code;
        }
        OK
    });
    assert_eq!(code, OK, "{}", explain(code % 20));
}

/// A call in flight on another thread of a fork child, whose address space must be registered
/// for `membarrier` again: the child's unload of the module is Busy until the call returned.
static FORK_DRAIN: std::sync::OnceLock<(std::sync::Barrier, std::sync::Barrier)> =
    std::sync::OnceLock::new();

extern "C" fn held_call(_: c_int) -> c_int {
    let (entered, release) = FORK_DRAIN.get().expect("set up");
    entered.wait();
    release.wait();
    7
}

#[test]
fn a_fork_childs_unload_waits_for_a_call_in_flight_on_another_thread() {
    if !isolated() {
        return run_isolated("a_fork_childs_unload_waits_for_a_call_in_flight_on_another_thread");
    }
    let dir = tempfile::tempdir().unwrap();
    let loader = Loader::new();
    let h = open(&loader, module_copy(dir.path(), "fork_drain").to_str().unwrap()).unwrap();
    // One guarded call in the parent first: its thread record is the one the child inherits.
    let bump: extern "C" fn() -> c_int = function(&h, "bump");
    // SAFETY: the fixture module's C code.
    unsafe { h.call0(bump) }.unwrap();
    assert!(FORK_DRAIN.set((std::sync::Barrier::new(2), std::sync::Barrier::new(2))).is_ok());
    let code = fork_and_wait(|| {
        let (entered, release) = FORK_DRAIN.get().unwrap();
        std::thread::scope(|s| {
            let caller = s.spawn(|| {
                // SAFETY: `held_call` owns nothing droppable and does not fault.
                unsafe { h.call(held_call, 0) }
            });
            entered.wait();
            let busy = matches!(h.close_shared(false), Err(kmodlike::Error::Busy { .. }));
            release.wait();
            let returned = matches!(caller.join(), Ok(Ok(7)));
            let closed = h.close_shared(false).is_ok();
            match (busy, returned, closed) {
                (true, true, true) => OK,
                _ => WRONG_REPORT,
            }
        })
    });
    assert_eq!(code, OK, "busy while the call ran, closed after it: {}", explain(code));
}
