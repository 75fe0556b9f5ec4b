//! The fault matrix (issue 3): each of the six fatal signals, raised for real by a C module
//! (`tests/modules/fault_signal.c`) in `module_init`, in `module_fini`, in a guarded call and on
//! a thread the module started. In every cell the host survives, the module is gone from
//! `Loader::list()`, and the crash report names the signal.
//!
//! Every cell is its own test and runs under a deadline. `fault_matrix_table` runs them all
//! again and prints the matrix (run with `--nocapture` to see it; it is also written to
//! `target/test-artifacts/fault_matrix.txt`).

use std::ffi::{c_int, c_void};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use kmodlike::{CrashReport, Error, Event, Loader, Phase};
use kmodlike_testsupport as ts;

/// Where in the module's life the signal is raised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Where {
    Init,
    Fini,
    Call,
    Thread,
}

impl Where {
    const ALL: [Where; 4] = [Where::Init, Where::Fini, Where::Call, Where::Thread];

    fn phase(self) -> Phase {
        match self {
            Where::Init => Phase::Init,
            Where::Fini => Phase::Fini,
            Where::Call => Phase::Call,
            Where::Thread => Phase::Thread,
        }
    }

    fn column(self) -> &'static str {
        match self {
            Where::Init => "module_init",
            Where::Fini => "module_fini",
            Where::Call => "guarded call",
            Where::Thread => "module thread",
        }
    }
}

/// The six signals: number, name, and the `si_code` name the real cause produces.
const SIGNALS: [(c_int, &str, &str); 6] = [
    (libc::SIGSEGV, "SIGSEGV", "SEGV_MAPERR"),
    (libc::SIGBUS, "SIGBUS", "BUS_ADRERR"),
    (libc::SIGFPE, "SIGFPE", "FPE_INTDIV"),
    (
        libc::SIGILL,
        "SIGILL",
        if cfg!(target_arch = "x86_64") { "ILL_ILLOPN" } else { "ILL_ILLOPC" },
    ),
    (libc::SIGABRT, "SIGABRT", "SI_TKILL"),
    (libc::SIGSYS, "SIGSYS", "SYS_SECCOMP"),
];

fn signal(signo: c_int) -> (c_int, &'static str, &'static str) {
    *SIGNALS.iter().find(|s| s.0 == signo).expect("one of the six signals")
}

/// Per-cell deadline: generous for a loaded 2-core machine, short enough to fail a hang.
const DEADLINE: Duration = Duration::from_secs(60);

/// Run `f` on its own thread; panic if it does not finish within `deadline`.
fn with_deadline<T: Send + 'static>(
    what: &str,
    deadline: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    std::thread::Builder::new()
        .name(what.to_owned())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .expect("spawn the cell thread");
    match rx.recv_timeout(deadline) {
        Ok(v) => v,
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("{what}: no result within {deadline:?}"),
        Err(mpsc::RecvTimeoutError::Disconnected) => panic!("{what}: panicked (see above)"),
    }
}

/// The module built for a cell: init/fini variants raise in that phase; the plain build
/// raises on request.
fn built_module(place: Where, signo: c_int) -> PathBuf {
    match place {
        Where::Init => {
            let flag = format!("-DINIT_SIGNAL={signo}");
            ts::test_module("fault_signal", &format!("fault_init_{signo}"), &[&flag])
        }
        Where::Fini => {
            let flag = format!("-DFINI_SIGNAL={signo}");
            ts::test_module("fault_signal", &format!("fault_fini_{signo}"), &[&flag])
        }
        Where::Call | Where::Thread => plain_module(),
    }
}

fn plain_module() -> PathBuf {
    ts::test_module("fault_signal", "fault_plain", &[])
}

/// A private copy of `built` named `name.so` in `dir`: a file of its own, so no other test's
/// loader shares its mapping (ld.so hands out one instance per file).
fn private_copy(dir: &Path, built: &Path, name: &str) -> PathBuf {
    let dest = dir.join(format!("{name}.so"));
    std::fs::copy(built, &dest).expect("copy the module");
    dest
}

/// A symbol of the module as a function pointer of type `F`.
fn function<F: Copy>(h: &kmodlike::Handle, name: &str) -> F {
    let p = h.symbol_ptr(name).unwrap_or_else(|e| panic!("symbol {name}: {e}"));
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
    // SAFETY: the caller names the C signature of `name` in `F` (a function pointer type).
    unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) }
}

/// Collects the crash events of a loader.
fn crash_events(loader: &Loader) -> mpsc::Receiver<CrashReport> {
    let (tx, rx) = mpsc::channel();
    loader.subscribe(move |ev| {
        if let Event::Crashed(r) = ev {
            let _ = tx.send((**r).clone());
        }
    });
    rx
}

/// Run one cell; `Ok(report)` when every check passed, else what went wrong.
fn run_cell(place: Where, signo: c_int) -> Result<CrashReport, String> {
    let (_, sig_name, code_name) = signal(signo);
    let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
    let name = format!("fault_{}_{}", place.column().replace(' ', "_"), sig_name.to_lowercase());
    let path = private_copy(dir.path(), &built_module(place, signo), &name);
    let loader = Loader::new();
    let events = crash_events(&loader);
    let spec = path.to_str().unwrap();

    let (report, error_text) = match place {
        // SAFETY: a fixture module this test built from its C source for the interface.
        Where::Init => match unsafe { loader.open(spec) } {
            Ok(_) => return Err("module_init returned instead of crashing".into()),
            Err(e) => (e.crash_report().cloned(), e.to_string()),
        },
        Where::Fini => {
            // SAFETY: a fixture module this test built from its C source for the interface.
            let h = unsafe { loader.open(spec) }.map_err(|e| format!("open: {e}"))?;
            match h.close() {
                Ok(()) => return Err("module_fini returned instead of crashing".into()),
                Err(e) => (e.error.crash_report().cloned(), e.error.to_string()),
            }
        }
        Where::Call => {
            // SAFETY: a fixture module this test built from its C source for the interface.
            let h = unsafe { loader.open(spec) }.map_err(|e| format!("open: {e}"))?;
            let fault: extern "C" fn(c_int) = function(&h, "fault");
            // SAFETY: `fault` is the fixture module's C code; a fault skips only its frames.
            match unsafe { h.call(fault, signo) } {
                Ok(()) => return Err("fault() returned instead of crashing".into()),
                Err(e) => {
                    if h.is_live() {
                        return Err("the handle is still live after the crash".into());
                    }
                    (e.crash_report().cloned(), e.to_string())
                }
            }
        }
        Where::Thread => {
            // SAFETY: a fixture module this test built from its C source for the interface.
            let h = unsafe { loader.open(spec) }.map_err(|e| format!("open: {e}"))?;
            let start: extern "C" fn(c_int) -> c_int = function(&h, "start_fault_thread");
            // SAFETY: `start` is the fixture module's C code; a fault skips only its frames.
            match unsafe { h.call(start, signo) } {
                Ok(0) => {}
                other => return Err(format!("start_fault_thread: {other:?}")),
            }
            let report = events
                .recv_timeout(Duration::from_secs(20))
                .map_err(|_| "no crash reported for the module's thread within 20 s")?;
            let text = report.to_string();
            (Some(report), text)
        }
    };
    let report = report.ok_or_else(|| format!("not a crash: {error_text}"))?;
    if report.signal != signo || report.signal_name != sig_name {
        return Err(format!("expected {sig_name}, got {} ({})", report.signal_name, report.signal));
    }
    if report.code_name != code_name {
        return Err(format!("expected {code_name}, got {}", report.code_name));
    }
    if report.phase != place.phase() {
        return Err(format!("expected phase {:?}, got {:?}", place.phase(), report.phase));
    }
    if report.module != name {
        return Err(format!("report names module {}, expected {name}", report.module));
    }
    // The report names the function that ran: the loader's lifecycle entry point, or the
    // function the guarded call was given; none for a thread the module started.
    let called = match place {
        Where::Init => Some("module_init"),
        Where::Fini => Some("module_fini"),
        Where::Call => Some("fault"),
        Where::Thread => None,
    };
    if report.called.as_deref() != called {
        return Err(format!("expected called {called:?}, got {:?}", report.called));
    }
    if !error_text.contains(sig_name) {
        return Err(format!("the error does not name {sig_name}: {error_text}"));
    }
    // abort() called by the module itself never taints, wherever it runs: the backtrace shows
    // only raise/abort between the signal and the module's frame.
    if signo == libc::SIGABRT && report.taint.is_some() {
        return Err(format!("a plain abort() tainted the process: {report}"));
    }
    if signo == libc::SIGABRT && !report.frames.iter().any(|f| f.in_module) {
        return Err(format!("the backtrace does not reach the module: {:#?}", report.frames));
    }
    if let Some(m) = loader.list().iter().find(|m| m.name == name) {
        return Err(format!("the module is still listed after the crash: {:?}", m.state));
    }
    if !loader.crashes().iter().any(|c| c.module == name && c.signal == signo) {
        return Err("Loader::crashes() does not hold the report".into());
    }
    // The host and the loader still work: a fresh module loads and runs.
    let fresh = private_copy(dir.path(), &plain_module(), &format!("{name}_after"));
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open(fresh.to_str().unwrap()) }.map_err(|e| format!("reload: {e}"))?;
    let bump: extern "C" fn() -> c_int = function(&h, "bump");
    // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
    match unsafe { h.call0(bump) } {
        Ok(1) => {}
        other => return Err(format!("a fresh module after the crash: bump() = {other:?}")),
    }
    h.close().map_err(|e| format!("close the fresh module: {e}"))?;
    Ok(report)
}

fn check_cell(place: Where, signo: c_int) {
    let what = format!("{} in {}", signal(signo).1, place.column());
    let result = with_deadline(&what, DEADLINE, move || run_cell(place, signo));
    if let Err(e) = result {
        panic!("{what}: {e}");
    }
}

macro_rules! cells {
    ($($test:ident: $place:ident, $sig:ident;)*) => {
        $(
            #[test]
            fn $test() {
                check_cell(Where::$place, libc::$sig);
            }
        )*
    };
}

cells! {
    init_sigsegv: Init, SIGSEGV;
    init_sigbus: Init, SIGBUS;
    init_sigfpe: Init, SIGFPE;
    init_sigill: Init, SIGILL;
    init_sigabrt: Init, SIGABRT;
    init_sigsys: Init, SIGSYS;
    fini_sigsegv: Fini, SIGSEGV;
    fini_sigbus: Fini, SIGBUS;
    fini_sigfpe: Fini, SIGFPE;
    fini_sigill: Fini, SIGILL;
    fini_sigabrt: Fini, SIGABRT;
    fini_sigsys: Fini, SIGSYS;
    call_sigsegv: Call, SIGSEGV;
    call_sigbus: Call, SIGBUS;
    call_sigfpe: Call, SIGFPE;
    call_sigill: Call, SIGILL;
    call_sigabrt: Call, SIGABRT;
    call_sigsys: Call, SIGSYS;
    thread_sigsegv: Thread, SIGSEGV;
    thread_sigbus: Thread, SIGBUS;
    thread_sigfpe: Thread, SIGFPE;
    thread_sigill: Thread, SIGILL;
    thread_sigabrt: Thread, SIGABRT;
    thread_sigsys: Thread, SIGSYS;
}

#[test]
fn fault_matrix_table() {
    let table = with_deadline("the whole matrix", DEADLINE * 4, || {
        let mut rows = Vec::new();
        let mut failures = Vec::new();
        for &(signo, sig_name, _) in &SIGNALS {
            let mut row = format!("| {sig_name:<8} |");
            for place in Where::ALL {
                let cell = match run_cell(place, signo) {
                    Ok(r) => format!("recovered, {}", r.code_name),
                    Err(e) => {
                        failures.push(format!("{sig_name} in {}: {e}", place.column()));
                        "FAILED".to_owned()
                    }
                };
                row.push_str(&format!(" {cell:<25} |"));
            }
            rows.push(row);
        }
        let mut table = format!("| {:<8} |", "signal");
        for place in Where::ALL {
            table.push_str(&format!(" {:<25} |", place.column()));
        }
        table.push('\n');
        table.push_str(&format!("|{}|", "-".repeat(10)));
        for _ in Where::ALL {
            table.push_str(&format!("{}|", "-".repeat(27)));
        }
        table.push('\n');
        for r in rows {
            table.push_str(&r);
            table.push('\n');
        }
        (table, failures)
    });
    let (table, failures) = table;
    println!("\nfault matrix (host survived every cell it reports as recovered):\n{table}");
    let _ = std::fs::write(ts::artifacts_dir().join("fault_matrix.txt"), &table);
    assert!(failures.is_empty(), "failed cells:\n{}\n{table}", failures.join("\n"));
}

// ---------------------------------------------------------------------------------------------
// Beyond the matrix.
// ---------------------------------------------------------------------------------------------

/// A loaded private copy of the plain fault module.
struct Plain {
    dir: tempfile::TempDir,
    loader: Loader,
}

impl Plain {
    fn new() -> Plain {
        Plain { dir: tempfile::tempdir().unwrap(), loader: Loader::new() }
    }

    /// Copy the plain module as `name.so` (once) and open it.
    fn open(&self, name: &str) -> kmodlike::Handle {
        let path = self.dir.path().join(format!("{name}.so"));
        if !path.exists() {
            private_copy(self.dir.path(), &plain_module(), name);
        }
        // SAFETY: a fixture module this test built from its C source for the interface.
        unsafe { self.loader.open(path.to_str().unwrap()) }
            .unwrap_or_else(|e| panic!("open {name}: {e}"))
    }

    fn listed(&self, name: &str) -> bool {
        self.loader.list().iter().any(|m| m.name == name)
    }
}

fn crash_of(e: Error) -> CrashReport {
    match e.crash_report() {
        Some(r) => r.clone(),
        None => panic!("expected a crash, got: {e}"),
    }
}

#[test]
fn the_same_signal_three_times_in_a_row_recovers_each_time_with_fresh_data() {
    with_deadline("three in a row", DEADLINE * 2, || {
        let p = Plain::new();
        for &(signo, sig_name, code_name) in &SIGNALS {
            for round in 1..=3 {
                let name = format!("again_{}", sig_name.to_lowercase());
                let h = p.open(&name);
                let bump: extern "C" fn() -> c_int = function(&h, "bump");
                assert_eq!(
                    // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
                    unsafe { h.call0(bump) }.unwrap(),
                    1,
                    "{sig_name} round {round}: fresh data"
                );
                let fault: extern "C" fn(c_int) = function(&h, "fault");
                // SAFETY: `fault` is the fixture module's C code; a fault skips only its frames.
                let r = crash_of(unsafe { h.call(fault, signo) }.expect_err("the fault returned"));
                assert_eq!(
                    (r.signal_name.as_str(), r.code_name.as_str()),
                    (sig_name, code_name),
                    "round {round}"
                );
                assert!(!p.listed(&name), "{sig_name} round {round}: still listed");
            }
        }
    });
}

#[test]
fn abort_and_raise_sigabrt_are_both_recovered_without_taint() {
    with_deadline("abort and raise", DEADLINE, || {
        let p = Plain::new();
        let h = p.open("abort_one");
        let fault: extern "C" fn(c_int) = function(&h, "fault");
        // SAFETY: `fault` is the fixture module's C code; a fault skips only its frames.
        let r = crash_of(unsafe { h.call(fault, libc::SIGABRT) }.unwrap_err());
        assert_eq!((r.signal_name.as_str(), r.code_name.as_str()), ("SIGABRT", "SI_TKILL"));
        assert_eq!(r.taint, None, "abort() outside malloc must not taint");

        let h = p.open("raise_one");
        let raise: extern "C" fn() = function(&h, "raise_abrt");
        // SAFETY: `raise` is the fixture module's C code; a fault skips only its frames.
        let r = crash_of(unsafe { h.call0(raise) }.unwrap_err());
        assert_eq!((r.signal_name.as_str(), r.code_name.as_str()), ("SIGABRT", "SI_TKILL"));
        assert_eq!(r.taint, None, "raise(SIGABRT) must not taint");
        assert!(!p.listed("abort_one") && !p.listed("raise_one"));
    });
}

#[test]
fn strlen_null_is_recovered_and_taints_the_process() {
    with_deadline("strlen(NULL)", DEADLINE, || {
        let p = Plain::new();
        let h = p.open("strlen_null");
        let f: extern "C" fn() -> usize = function(&h, "strlen_null");
        // SAFETY: `f` is the fixture module's C code; a fault skips only its frames.
        let r = crash_of(unsafe { h.call0(f) }.unwrap_err());
        assert_eq!(r.signal_name, "SIGSEGV");
        assert!(!r.pc_in_module, "strlen faults inside libc");
        let taint = r.taint.expect("a fault with the PC in libc taints");
        assert!(taint.contains("libc"), "taint reason: {taint}");
        assert!(kmodlike::taint().is_some(), "the process-wide taint is not set");
    });
}

#[test]
fn a_bad_free_is_recovered_and_taints_the_process() {
    with_deadline("bad free", DEADLINE, || {
        let p = Plain::new();
        let h = p.open("bad_free");
        let f: extern "C" fn() = function(&h, "bad_free");
        // SAFETY: `f` is the fixture module's C code; a fault skips only its frames.
        let r = crash_of(unsafe { h.call0(f) }.unwrap_err());
        assert_eq!(r.signal_name, "SIGABRT");
        let taint =
            r.taint.clone().unwrap_or_else(|| panic!("an abort from inside free() taints: {r}"));
        assert!(taint.contains("free"), "taint reason: {taint}");
        assert!(kmodlike::taint().is_some(), "the process-wide taint is not set");
    });
}

#[test]
fn a_free_of_a_stack_pointer_is_recovered_tainted_naming_free_and_does_not_hang() {
    with_deadline("free of a stack pointer", DEADLINE, || {
        let p = Plain::new();
        let helper = std::thread::spawn(|| vec![1u8; 100].len()); // glibc locks when threaded
        let h = p.open("bad_free_stack");
        let f: extern "C" fn() = function(&h, "bad_free_stack");
        // SAFETY: `f` is the fixture module's C code; a fault skips only its frames.
        let r = crash_of(unsafe { h.call0(f) }.unwrap_err());
        assert_eq!(r.signal_name, "SIGABRT", "{r}");
        let taint = r.taint.clone().unwrap_or_else(|| panic!("a bad free() taints: {r}"));
        assert!(taint.contains("free"), "the taint names the allocator frame: {taint}");
        // Which check fires depends on the bytes around the pointer ("free(): invalid
        // pointer", or, for these zeroed ones, "double free or corruption (out)" under the
        // arena lock, which the loader then releases): glibc said something.
        assert!(r.abort_message.is_some(), "glibc's message is in the report: {r}");
        assert!(!h.is_live(), "the module is still live after its crash");
        assert_eq!(helper.join().unwrap(), 100);
        assert_eq!(vec![2u8; 50000].len(), 50000, "this thread allocates after the crash");
    });
}

#[test]
fn a_double_free_with_a_second_thread_alive_is_recovered_tainted_and_does_not_hang() {
    with_deadline("double free", DEADLINE, || {
        let p = Plain::new();
        // A second thread alive and allocating, as in the measured deadlock.
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        let allocator = std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                n = n.wrapping_add(std::hint::black_box(vec![n as u8; 100]).len());
                std::thread::sleep(Duration::from_micros(100));
            }
            n
        });
        let h = p.open("double_free");
        let f: extern "C" fn() = function(&h, "double_free");
        // SAFETY: `f` is the fixture module's C code; a fault skips only its frames.
        let r = crash_of(unsafe { h.call0(f) }.unwrap_err());
        assert_eq!(r.signal_name, "SIGABRT");
        let taint =
            r.taint.clone().unwrap_or_else(|| panic!("an abort from inside free() taints: {r}"));
        assert!(taint.contains("free"), "taint reason: {taint}");
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        allocator.join().unwrap();
    });
}

/// glibc finds a large block's double free in `_int_free` with the arena's lock held, then
/// aborts. The loader releases that lock after the jump (it is in the crashed call's own
/// frames), so this thread's next allocation, the report's, and a second thread sharing the
/// arena all go on. Without the release the report itself deadlocks.
#[test]
fn a_large_double_free_under_the_arena_lock_is_tainted_and_nothing_hangs() {
    with_deadline("large double free", DEADLINE, || {
        let p = Plain::new();
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop2 = stop.clone();
        // A second thread alive: glibc's malloc takes its locks only when the process has more
        // than one thread; this one allocates the whole time, and must finish.
        let allocator = std::thread::spawn(move || {
            let mut n = 0usize;
            while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
                n = n.wrapping_add(std::hint::black_box(vec![n as u8; 30000]).len());
                std::thread::yield_now();
            }
            n
        });
        let h = p.open("double_free_large");
        let f: extern "C" fn() = function(&h, "double_free_large");
        // SAFETY: `f` is the fixture module's C code; a fault skips only its frames.
        let r = crash_of(unsafe { h.call0(f) }.unwrap_err());
        assert_eq!(r.signal_name, "SIGABRT", "{r}");
        // "(!prev)" or "(out)": which check fires depends on the arena the block came from.
        let said = r.abort_message.clone().unwrap_or_default();
        assert!(said.starts_with("double free or corruption ("), "glibc's message: {r}");
        let taint = r.taint.clone().unwrap_or_else(|| panic!("a double free taints: {r}"));
        assert!(taint.contains("free"), "the taint names the allocator frame: {taint}");
        assert!(taint.contains("released"), "the taint says the lock was released: {taint}");
        assert!(r.to_string().contains(&format!("glibc:   {said}")), "{r}");
        // The module is gone, and this thread and the other allocate again.
        assert!(!h.is_live(), "the module is still live after its crash");
        let after: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 40000]).collect();
        assert_eq!(after.len(), 64);
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        allocator.join().expect("the allocating thread finishes");
    });
}

/// The same on a thread the module started: the thread is parked with the lock held, and the
/// loader's service thread releases it (it is in the parked thread's live frames) before it
/// builds the report; then every thread allocates again.
#[test]
fn a_large_double_free_on_a_module_thread_is_tainted_and_nothing_hangs() {
    with_deadline("large double free on a module thread", DEADLINE, || {
        let p = Plain::new();
        let events = crash_events(&p.loader);
        let h = p.open("double_free_thread");
        let start: extern "C" fn() -> c_int = function(&h, "start_double_free_thread");
        // SAFETY: `start` is the fixture module's C code; a fault skips only its frames.
        assert_eq!(unsafe { h.call0(start) }.expect("start the thread"), 0);
        let r = events.recv_timeout(DEADLINE).expect("a crash report for the module's thread");
        assert_eq!(r.signal_name, "SIGABRT", "{r}");
        assert_eq!(r.phase, kmodlike::Phase::Thread, "{r}");
        let said = r.abort_message.clone().unwrap_or_default();
        assert!(said.starts_with("double free or corruption ("), "glibc's message: {r}");
        let taint = r.taint.clone().unwrap_or_else(|| panic!("a double free taints: {r}"));
        assert!(taint.contains("released"), "the taint says the lock was released: {taint}");
        assert!(!p.listed("double_free_thread"), "the module is still listed after its crash");
        let after: Vec<Vec<u8>> = (0..64).map(|i| vec![i as u8; 40000]).collect();
        assert_eq!(after.len(), 64);
        let other = std::thread::spawn(|| vec![7u8; 50000].len());
        assert_eq!(other.join().expect("another thread allocates"), 50000);
    });
}

#[test]
fn a_crash_inside_printf_does_not_deadlock_printf_on_another_thread() {
    with_deadline("printf", DEADLINE, || {
        let p = Plain::new();
        let h = p.open("printf_crash");
        let f: extern "C" fn() -> c_int = function(&h, "crash_in_printf");
        // SAFETY: `f` is the fixture module's C code; a fault skips only its frames.
        let r = crash_of(unsafe { h.call0(f) }.unwrap_err());
        assert_eq!(r.signal_name, "SIGSEGV");
        // stdout's lock must have been released by the jump (glibc's siglongjmp runs libc's
        // cleanup regions): printf on another thread, and on this one, completes.
        let other = std::thread::spawn(|| {
            // SAFETY: a NUL-terminated format without conversions; fflush(NULL) flushes all.
            unsafe {
                libc::printf(c"printf on another thread after a crash in printf\n".as_ptr());
                libc::fflush(std::ptr::null_mut())
            }
        });
        assert_eq!(other.join().unwrap(), 0);
        // SAFETY: as above.
        unsafe {
            libc::printf(c"printf on the crashing thread after the crash\n".as_ptr());
            libc::fflush(std::ptr::null_mut());
        }
    });
}

#[test]
fn a_stack_overflow_in_module_code_is_recovered() {
    with_deadline("stack overflow", DEADLINE, || {
        let p = Plain::new();
        for round in 1..=3 {
            let h = p.open("overflow");
            let f: extern "C" fn(c_int) -> c_int = function(&h, "recurse");
            // SAFETY: `f` is the fixture module's C code; a fault skips only its frames.
            let r = crash_of(unsafe { h.call(f, 0) }.unwrap_err());
            assert_eq!(r.signal_name, "SIGSEGV", "round {round}");
            assert!(r.pc_in_module, "round {round}: the overflow happens in recurse()");
        }
    });
}

#[test]
fn a_crashed_module_whose_own_thread_keeps_running_leaves_the_host_alive() {
    with_deadline("running thread", DEADLINE, || {
        let p = Plain::new();
        let h = p.open("ticker");
        let start: extern "C" fn() -> c_int = function(&h, "start_ticker");
        // SAFETY: `start` is the fixture module's C code; a fault skips only its frames.
        assert_eq!(unsafe { h.call0(start) }.unwrap(), 0);
        let ticks = h.symbol_ptr("fault_ticks").unwrap() as *const u64;
        let fault: extern "C" fn(c_int) = function(&h, "fault");
        // SAFETY: `fault` is the fixture module's C code; a fault skips only its frames.
        let r = crash_of(unsafe { h.call(fault, libc::SIGSEGV) }.unwrap_err());
        assert_eq!(r.signal_name, "SIGSEGV");
        assert!(!p.listed("ticker"));
        // The module's code stays mapped: its thread keeps running in it, and so do we.
        // SAFETY: the module's data stays mapped after a crash (the default Retain policy).
        let read = || unsafe { std::ptr::read_volatile(ticks) };
        let before = read();
        let deadline = Instant::now() + Duration::from_secs(10);
        while read() <= before + 10 {
            assert!(Instant::now() < deadline, "the module's thread stopped advancing");
            std::thread::sleep(Duration::from_millis(5));
        }
        // And other modules still load and run.
        let other = p.open("after_ticker");
        let bump: extern "C" fn() -> c_int = function(&other, "bump");
        // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
        assert_eq!(unsafe { other.call0(bump) }.unwrap(), 1);
    });
}

#[test]
fn reloading_after_a_crash_gives_fresh_static_data() {
    with_deadline("fresh reload", DEADLINE, || {
        let p = Plain::new();
        let h = p.open("fresh");
        let bump: extern "C" fn() -> c_int = function(&h, "bump");
        // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
        assert_eq!((unsafe { h.call0(bump) }.unwrap(), unsafe { h.call0(bump) }.unwrap()), (1, 2));
        let fault: extern "C" fn(c_int) = function(&h, "fault");
        // SAFETY: `fault` is the fixture module's C code; a fault skips only its frames.
        crash_of(unsafe { h.call(fault, libc::SIGILL) }.unwrap_err());
        // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
        assert!(unsafe { h.call0(bump) }.is_err(), "a crashed module refuses new calls");
        let again = p.open("fresh");
        let bump2: extern "C" fn() -> c_int = function(&again, "bump");
        assert_eq!(
            // SAFETY: `bump2` is the fixture module's C code; a fault skips only its frames.
            unsafe { again.call0(bump2) }.unwrap(),
            1,
            "the reload shares the crashed instance's data"
        );
        // SAFETY: `bump2` is the fixture module's C code; a fault skips only its frames.
        assert_eq!(unsafe { again.call0(bump2) }.unwrap(), 2);
    });
}

// ---------------------------------------------------------------------------------------------
// A host fault stays fatal (child process).
// ---------------------------------------------------------------------------------------------

const CHILD_ENV: &str = "KMODLIKE_FAULT_MATRIX_CHILD";

extern "C" fn host_previous_segv_handler(_sig: c_int) {
    let msg = b"previous handler ran\n";
    // SAFETY: write(2) and signal(2) are async-signal-safe; the buffer is valid.
    unsafe {
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::signal(libc::SIGSEGV, libc::SIG_DFL);
    }
}

#[test]
fn a_host_sigsegv_outside_any_guard_kills_the_process_and_the_previous_handler_runs() {
    const NAME: &str =
        "a_host_sigsegv_outside_any_guard_kills_the_process_and_the_previous_handler_runs";
    if std::env::var_os(CHILD_ENV).is_some() {
        // The host's own handler first, then the loader (which installs the guard on top).
        // SAFETY: the handler only calls async-signal-safe functions.
        unsafe {
            libc::signal(
                libc::SIGSEGV,
                host_previous_segv_handler as *const () as libc::sighandler_t,
            );
        }
        let p = Plain::new();
        let h = p.open("before_host_fault");
        let fault: extern "C" fn(c_int) = function(&h, "fault");
        // SAFETY: `fault` is the fixture module's C code; a fault skips only its frames.
        let r = crash_of(unsafe { h.call(fault, libc::SIGSEGV) }.unwrap_err());
        eprintln!("module crash recovered: {}", r.summary());
        // Host code, no guard: must be fatal.
        // SAFETY: none, deliberately: this is the host fault under test.
        unsafe { std::ptr::read_volatile(std::hint::black_box(8usize) as *const u64) };
        eprintln!("SURVIVED a host fault");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let mut cmd = Command::new(exe);
    cmd.args([NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // SAFETY: setrlimit is async-signal-safe; no core file for the expected crash.
    unsafe {
        cmd.pre_exec(|| {
            libc::setrlimit(libc::RLIMIT_CORE, &libc::rlimit { rlim_cur: 0, rlim_max: 0 });
            Ok(())
        });
    }
    let out = with_deadline("host fault child", DEADLINE, move || cmd.output().unwrap());
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.signal(), Some(libc::SIGSEGV), "child {:?}:\n{text}", out.status);
    assert!(text.contains("module crash recovered"), "child output:\n{text}");
    assert!(text.contains("previous handler ran"), "child output:\n{text}");
    assert!(!text.contains("SURVIVED"), "child output:\n{text}");
}
