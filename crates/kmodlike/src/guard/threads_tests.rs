//! Unit tests of [`threads_in_code`] (crate-private): threads of a real shared object
//! (`tests/modules/thread_park.c`, built by kmodlike-testsupport and loaded with `dlopen`) that
//! sleep, read, wait on a futex or spin in its code, and host threads that do the same outside
//! it. The object is never unloaded; every thread a test starts is stopped before it ends.

use super::threads::{parse_syscall_for_test, RegsFrom};
use super::*;
use std::ffi::CString;
use std::sync::atomic::AtomicBool;
use std::sync::{mpsc, Arc, OnceLock};
use std::time::Instant;

type Start = unsafe extern "C" fn(*mut c_int) -> c_int;
type StartSpinner = unsafe extern "C" fn(c_int, *mut c_int) -> c_int;
type Stop = unsafe extern "C" fn(c_int);

/// The loaded object: its functions and its executable segments.
struct Parker {
    sleeper: Start,
    reader: Start,
    waiter: Start,
    spinner: StartSpinner,
    crasher: Start,
    stop: Stop,
    text: Vec<(u64, u64)>,
}

fn parker() -> &'static Parker {
    static P: OnceLock<Parker> = OnceLock::new();
    P.get_or_init(|| {
        let path = kmodlike_testsupport::test_module("thread_park", "thread_park", &[]);
        let c = CString::new(path.to_str().unwrap()).unwrap();
        // SAFETY: a plain shared object with no constructors; never closed.
        let h = unsafe { libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL) };
        assert!(!h.is_null(), "dlopen thread_park.so");
        let sym = |name: &str| {
            let n = CString::new(name).unwrap();
            // SAFETY: `h` is a live handle; `n` a C string.
            let p = unsafe { libc::dlsym(h, n.as_ptr()) };
            assert!(!p.is_null(), "dlsym {name}");
            p
        };
        // SAFETY: each symbol is the C function of the named signature (thread_park.c).
        unsafe {
            let sleeper: Start = std::mem::transmute(sym("start_sleeper"));
            Parker {
                sleeper,
                reader: std::mem::transmute::<*mut c_void, Start>(sym("start_reader")),
                waiter: std::mem::transmute::<*mut c_void, Start>(sym("start_waiter")),
                spinner: std::mem::transmute::<*mut c_void, StartSpinner>(sym("start_spinner")),
                crasher: std::mem::transmute::<*mut c_void, Start>(sym("start_crasher")),
                stop: std::mem::transmute::<*mut c_void, Stop>(sym("stop_thread")),
                text: exec_segments_of(sleeper as usize as u64),
            }
        }
    })
}

/// The executable PT_LOAD segments of the object that holds `addr`.
fn exec_segments_of(addr: u64) -> Vec<(u64, u64)> {
    struct Find {
        addr: u64,
        out: Vec<(u64, u64)>,
    }
    unsafe extern "C" fn cb(info: *mut libc::dl_phdr_info, _: usize, data: *mut c_void) -> c_int {
        // SAFETY: dl_iterate_phdr passes a valid info and our `Find`.
        let (info, find) = unsafe { (&*info, &mut *data.cast::<Find>()) };
        let mut segs = Vec::new();
        for i in 0..info.dlpi_phnum as usize {
            // SAFETY: `dlpi_phdr` has `dlpi_phnum` entries.
            let ph = unsafe { &*info.dlpi_phdr.add(i) };
            if ph.p_type == libc::PT_LOAD && ph.p_flags & libc::PF_X != 0 {
                let start = info.dlpi_addr + ph.p_vaddr;
                segs.push((start, start + ph.p_memsz));
            }
        }
        if segs.iter().any(|&(s, e)| find.addr >= s && find.addr < e) {
            find.out = segs;
            return 1;
        }
        0
    }
    let mut find = Find { addr, out: Vec::new() };
    // SAFETY: the callback matches and `find` outlives the call.
    unsafe { libc::dl_iterate_phdr(Some(cb), (&mut find as *mut Find).cast()) };
    assert!(!find.out.is_empty(), "no executable segment holds {addr:#x}");
    find.out
}

/// A thread of thread_park.so, stopped and joined when dropped.
struct ModThread {
    handle: c_int,
    tid: i32,
}

impl Drop for ModThread {
    fn drop(&mut self) {
        // SAFETY: a handle returned by a start_* function, stopped once.
        unsafe { (parker().stop)(self.handle) };
    }
}

fn start(f: Start) -> ModThread {
    let mut tid = 0;
    // SAFETY: `tid` is a valid out pointer.
    let handle = unsafe { f(&mut tid) };
    assert!(handle >= 0, "start a thread in thread_park.so");
    ModThread { handle, tid }
}

fn start_spinner(block_signals: bool) -> ModThread {
    let mut tid = 0;
    // SAFETY: `tid` is a valid out pointer.
    let handle = unsafe { (parker().spinner)(c_int::from(block_signals), &mut tid) };
    assert!(handle >= 0, "start a spinner in thread_park.so");
    ModThread { handle, tid }
}

/// The scheduler state letter of a thread (`R`, `S`, ...).
fn state(tid: i32) -> char {
    let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat")).unwrap_or_default();
    // "tid (comm) S ...": the letter after the last ')'.
    stat.rsplit(')').next().and_then(|r| r.trim_start().chars().next()).unwrap_or('?')
}

/// Wait until `tid` is asleep in the kernel.
fn wait_blocked(tid: i32) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while state(tid) != 'S' {
        assert!(Instant::now() < deadline, "thread {tid} never blocked (state {})", state(tid));
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn find(found: &[ThreadInCode], tid: i32) -> Option<&ThreadInCode> {
    found.iter().find(|t| t.tid == tid)
}

#[test]
fn parses_proc_syscall_lines() {
    let line = "230 0x0 0x0 0x7f 0x7f 0x0 0x0 0x7ffd1000 0x7f0012345678\n";
    assert_eq!(parse_syscall_for_test(line), Some((0x7ffd1000, 0x7f0012345678)));
    assert_eq!(parse_syscall_for_test("-1 0x7ffd2000 0x401000\n"), Some((0x7ffd2000, 0x401000)));
    assert_eq!(parse_syscall_for_test("running\n"), Some((0, 0)));
    assert_eq!(parse_syscall_for_test("garbage"), None);
}

#[test]
fn finds_module_threads_blocked_in_system_calls() {
    let p = parker();
    let threads = [start(p.sleeper), start(p.reader), start(p.waiter)];
    for t in &threads {
        wait_blocked(t.tid);
    }
    let found = threads_in_code(&p.text);
    for (t, what) in threads.iter().zip(["sleep", "read", "futex"]) {
        let hit = find(&found, t.tid)
            .unwrap_or_else(|| panic!("a thread blocked in {what} was not found: {found:#?}"));
        assert!(matches!(hit.evidence, Evidence::ReturnAddress { .. }), "blocked in {what}: {hit}");
        // It was read from /proc, not signalled (unless it woke just then: sleep(1) loops).
        if hit.regs_from != RegsFrom::Syscall {
            assert_eq!(what, "sleep", "{hit}");
        }
        assert!(!in_text(&p.text, hit.pc), "the PC is in libc's system call wrapper: {hit}");
        eprintln!("{hit}");
    }
}

fn in_text(text: &[(u64, u64)], a: u64) -> bool {
    text.iter().any(|&(s, e)| a >= s && a < e)
}

#[test]
fn finds_a_module_thread_spinning_in_module_code() {
    let p = parker();
    let spinner = start_spinner(false);
    let found = threads_in_code(&p.text);
    let hit = find(&found, spinner.tid)
        .unwrap_or_else(|| panic!("the spinning thread was not found: {found:#?}"));
    assert_eq!(hit.evidence, Evidence::Pc, "{hit}");
    assert_eq!(hit.regs_from, RegsFrom::Signal, "{hit}");
    assert!(in_text(&p.text, hit.pc));
    eprintln!("{hit}");
}

#[test]
fn a_running_thread_that_blocks_every_signal_is_unknown_and_does_not_hang() {
    let p = parker();
    let spinner = start_spinner(true);
    let t0 = Instant::now();
    let found = threads_in_code(&p.text);
    let took = t0.elapsed();
    let hit = find(&found, spinner.tid)
        .unwrap_or_else(|| panic!("the signal-blocking spinner is not reported: {found:#?}"));
    assert!(matches!(hit.evidence, Evidence::Unknown(_)), "{hit}");
    assert!(!hit.is_certain());
    assert!(took < Duration::from_secs(5), "took {took:?}");
    eprintln!("{hit} (after {took:?})");
}

#[test]
fn threads_outside_the_module_are_not_reported() {
    let p = parker();
    let stop = Arc::new(AtomicBool::new(false));
    let (tx, rx) = mpsc::channel::<i32>();
    let (block_tx, block_rx) = mpsc::channel::<()>();
    let mut joins = Vec::new();
    {
        let tx = tx.clone();
        joins.push(std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let _ = block_rx.recv(); // futex, in Rust code
        }));
    }
    {
        let tx = tx.clone();
        let stop = stop.clone();
        joins.push(std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            while !stop.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(5)); // nanosleep, from Rust code
            }
        }));
    }
    {
        let tx = tx.clone();
        let stop = stop.clone();
        joins.push(std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n = std::hint::black_box(n.wrapping_add(1)); // spinning in Rust code
            }
        }));
    }
    let tids: Vec<i32> = (0..3).map(|_| rx.recv().unwrap()).collect();
    // A module thread too, so the scan has something to find.
    let sleeper = start(p.sleeper);
    wait_blocked(sleeper.tid);
    let found = threads_in_code(&p.text);
    stop.store(true, Ordering::Relaxed);
    drop(block_tx);
    for j in joins {
        j.join().unwrap();
    }
    assert!(find(&found, sleeper.tid).is_some(), "{found:#?}");
    for tid in tids {
        assert!(find(&found, tid).is_none(), "a thread outside the module is reported: {found:#?}");
    }
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    assert!(find(&found, me).is_none(), "the calling thread is reported");
}

#[test]
fn no_thread_is_in_an_empty_or_unused_range() {
    // A range nothing is mapped at, far from small integers and from the usual mmap area:
    // nobody is there (threads that block the sampling signal may still be unknown, but none
    // is certain). A range at low addresses would catch small integers on stacks as "code
    // pointers": module text never lies there.
    let found = threads_in_code(&[(0x5000_0000_0000, 0x5000_0000_1000)]);
    assert!(found.iter().all(|t| !t.is_certain()), "{found:#?}");
    assert!(threads_in_code(&[]).iter().all(|t| !t.is_certain()));
}

/// The cost of one call with about ten threads: five blocked in the module, two spinning in
/// it, three blocked outside it (plus the test harness's). Run with `--nocapture` to see it.
#[test]
fn threads_in_code_cost_with_ten_threads() {
    let p = parker();
    let mut ts = Vec::new();
    for _ in 0..2 {
        ts.push(start(p.sleeper));
        ts.push(start(p.reader));
    }
    ts.push(start(p.waiter));
    for t in &ts {
        wait_blocked(t.tid);
    }
    ts.push(start_spinner(false));
    ts.push(start_spinner(false));
    let (block_tx, block_rx) = mpsc::channel::<()>();
    let block_rx = Arc::new(std::sync::Mutex::new(block_rx));
    let outside: Vec<_> = (0..3)
        .map(|_| {
            let rx = block_rx.clone();
            std::thread::spawn(move || {
                let _ = rx.lock().map(|r| r.recv());
            })
        })
        .collect();
    // Warm up (installs the sampling handler), then measure.
    let _ = threads_in_code(&p.text);
    let n = 20;
    let t0 = Instant::now();
    let mut found = 0;
    for _ in 0..n {
        found = threads_in_code(&p.text).iter().filter(|t| t.is_certain()).count();
    }
    let per_call = t0.elapsed() / n;
    let all = std::fs::read_dir("/proc/self/task").map(|d| d.count()).unwrap_or(0);
    eprintln!(
        "threads_in_code: {per_call:?} per call, {all} threads in the process, {found} found in \
         the module"
    );
    drop(ts);
    drop(block_tx);
    for o in outside {
        o.join().unwrap();
    }
    assert!(found >= 7, "expected the 7 module threads, found {found}");
}

/// A module thread that crashed and was parked by the guard never runs again: it is left out,
/// although its stack (and the signal frame on it) points into the module.
#[test]
fn a_thread_parked_after_a_crash_is_left_out() {
    let p = parker();
    install();
    // An id no other test uses; the object stays loaded, so its text stays registered.
    register_module(u64::MAX - 77, &p.text).unwrap();
    let mut tid = 0;
    // SAFETY: `tid` is a valid out pointer. The thread faults in thread_park's registered text
    // and is parked by the guard (never stopped: it is not ours to join any more).
    assert!(unsafe { (p.crasher)(&mut tid) } >= 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    // SAFETY: reads atomics.
    while unsafe { ffi::kml_is_parked(tid) } == 0 {
        assert!(
            Instant::now() < deadline,
            "the crashing thread {tid} was not parked: state {}, syscall {:?}",
            state(tid),
            std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall"))
        );
        std::thread::sleep(Duration::from_millis(1));
    }
    wait_blocked(tid);
    let found = threads_in_code(&p.text);
    assert!(find(&found, tid).is_none(), "a parked thread is reported: {found:#?}");
}
