//! Unit tests of the crash guard: real faults raised by `extern "C"` functions that own nothing
//! droppable. Tests whose outcome is the death of the process, or that set the process-wide
//! sinks, run in a child process (this test binary re-executed with `KMODLIKE_GUARD_CHILD`).

use super::*;
use std::ffi::CStr;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::Command;
use std::sync::Condvar;
use std::time::Instant;

const SI_TKILL: i32 = -6;
const SEGV_MAPERR: i32 = 1;
const BUS_ADRERR: i32 = 2;
const FPE_INTDIV: i32 = 1;
const ILL_ILLOPN: i32 = 2;
const SYS_SECCOMP: i32 = 1;

// ----- faulting functions: each owns nothing with a destructor -----------------------------

/// Reads address 8: unmapped (page 0), so SIGSEGV with SEGV_MAPERR.
extern "C" fn fault_segv(_: *mut c_void) {
    // SAFETY: none, deliberately: the read faults and the guard jumps out.
    unsafe { std::ptr::read_volatile(8usize as *const u64) };
}

/// Reads the first byte of a file mapping whose file was truncated to 0 after mapping:
/// SIGBUS with BUS_ADRERR. `ctx` is the mapping.
extern "C" fn fault_bus(ctx: *mut c_void) {
    // SAFETY: none, deliberately: the page has no backing file data any more.
    unsafe { std::ptr::read_volatile(ctx.cast::<u8>()) };
}

/// Integer division by zero in the CPU: SIGFPE with FPE_INTDIV (x86_64; other targets have no
/// trapping integer division and raise the signal instead).
extern "C" fn fault_fpe(_: *mut c_void) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the division traps; the guard jumps out.
    unsafe {
        std::arch::asm!("div {0:e}", in(reg) 0u32, inout("eax") 1u32 => _, inout("edx") 0u32 => _);
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: raise has no memory-safety preconditions.
    unsafe {
        libc::raise(libc::SIGFPE);
    }
}

/// An undefined instruction: SIGILL.
extern "C" fn fault_ill(_: *mut c_void) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: the instruction traps; the guard jumps out.
    unsafe {
        std::arch::asm!("ud2")
    };
    #[cfg(target_arch = "aarch64")]
    // SAFETY: the instruction traps; the guard jumps out.
    unsafe {
        std::arch::asm!("udf #0")
    };
}

/// `abort()`: SIGABRT, SI_TKILL.
extern "C" fn fault_abrt(_: *mut c_void) {
    // SAFETY: abort has no preconditions; its SIGABRT is caught by the guard.
    unsafe { libc::abort() };
}

/// `raise(SIGSYS)`: SIGSYS, SI_TKILL.
extern "C" fn fault_sys(_: *mut c_void) {
    // SAFETY: raise has no memory-safety preconditions.
    unsafe { libc::raise(libc::SIGSYS) };
}

/// `strlen(NULL)`: SIGSEGV with the PC inside libc.
extern "C" fn fault_strlen(_: *mut c_void) {
    // SAFETY: none, deliberately.
    let n = unsafe { libc::strlen(std::hint::black_box(std::ptr::null())) };
    std::hint::black_box(n);
}

extern "C" fn no_fault(ctx: *mut c_void) {
    // SAFETY: callers pass a pointer to a live u32.
    unsafe { *ctx.cast::<u32>() += 1 };
}

/// Recurses until the thread's stack runs out: SIGSEGV on the stack's guard page.
extern "C" fn fault_stack_overflow(_: *mut c_void) {
    std::hint::black_box(recurse(std::hint::black_box(u64::MAX)));
}

fn recurse(depth: u64) -> u64 {
    let frame = std::hint::black_box([depth as u8; 512]);
    if depth == 0 {
        return 0;
    }
    recurse(depth - 1).wrapping_add(u64::from(frame[7]))
}

/// Runs `f` under the guard; returns the crash.
fn expect_crash(
    module_id: u64,
    f: unsafe extern "C" fn(*mut c_void),
    ctx: *mut c_void,
) -> RawCrash {
    // SAFETY: the faulting functions above own nothing droppable.
    match unsafe { call(module_id, f, ctx) } {
        Ok(()) => panic!("the guarded function returned instead of faulting"),
        Err(c) => c,
    }
}

fn assert_caught_three_times(
    f: unsafe extern "C" fn(*mut c_void),
    ctx: *mut c_void,
    signo: i32,
    code: i32,
) {
    for round in 1..=3 {
        let before = SystemTime::now();
        let c = expect_crash(1000 + round, f, ctx);
        assert_eq!(c.signo, signo, "round {round}: signal");
        assert_eq!(c.code, code, "round {round}: si_code");
        assert_eq!(c.module_id, 1000 + round, "round {round}: module id");
        assert!(!c.on_module_thread);
        // SAFETY: gettid has no preconditions.
        assert_eq!(c.tid, unsafe { libc::gettid() }, "round {round}: thread id");
        assert!(c.time >= before - Duration::from_secs(1), "round {round}: time");
        assert!(c.pc != 0, "round {round}: pc");
        assert!(!is_guarded(), "round {round}: guard still active after the crash");
    }
}

// ----- the six signals ---------------------------------------------------------------------

#[test]
fn sigsegv_is_caught_three_times_in_a_row() {
    assert_caught_three_times(fault_segv, std::ptr::null_mut(), libc::SIGSEGV, SEGV_MAPERR);
    let c = expect_crash(1, fault_segv, std::ptr::null_mut());
    assert_eq!(c.addr, 8, "fault address");
}

#[test]
fn sigbus_is_caught_three_times_in_a_row() {
    let mut file = tempfile::tempfile().expect("temporary file");
    std::io::Write::write_all(&mut file, &[7u8; 4096]).expect("fill the file");
    let fd = std::os::fd::AsRawFd::as_raw_fd(&file);
    // SAFETY: maps one page of our own file, read-only; unmapped below.
    let map =
        unsafe { libc::mmap(std::ptr::null_mut(), 4096, libc::PROT_READ, libc::MAP_SHARED, fd, 0) };
    assert_ne!(map, libc::MAP_FAILED);
    file.set_len(0).expect("truncate the mapped file");
    assert_caught_three_times(fault_bus, map, libc::SIGBUS, BUS_ADRERR);
    // SAFETY: our mapping.
    unsafe { libc::munmap(map, 4096) };
}

#[test]
fn sigfpe_is_caught_three_times_in_a_row() {
    let code = if cfg!(target_arch = "x86_64") { FPE_INTDIV } else { SI_TKILL };
    assert_caught_three_times(fault_fpe, std::ptr::null_mut(), libc::SIGFPE, code);
}

#[test]
fn sigill_is_caught_three_times_in_a_row() {
    let code = if cfg!(target_arch = "x86_64") {
        ILL_ILLOPN
    } else {
        1 /* ILL_ILLOPC */
    };
    assert_caught_three_times(fault_ill, std::ptr::null_mut(), libc::SIGILL, code);
}

#[test]
fn sigabrt_from_abort_is_caught_three_times_in_a_row() {
    assert_caught_three_times(fault_abrt, std::ptr::null_mut(), libc::SIGABRT, SI_TKILL);
}

#[test]
fn sigsys_from_raise_is_caught_three_times_in_a_row() {
    assert_caught_three_times(fault_sys, std::ptr::null_mut(), libc::SIGSYS, SI_TKILL);
}

/// A syscall number no kernel implements, trapped by the seccomp filter below.
const TRAPPED_SYSCALL: u32 = 1023;

extern "C" fn fault_seccomp(_: *mut c_void) {
    // SAFETY: the filter turns this syscall into SIGSYS; nothing else happens.
    unsafe { libc::syscall(libc::c_long::from(TRAPPED_SYSCALL as i32)) };
}

#[test]
fn sigsys_from_a_seccomp_trap_is_caught_three_times_in_a_row() {
    // seccomp filters are per thread (and inherited by its children): use a thread of our own.
    std::thread::spawn(|| {
        let nr_offset = 0u32; // offsetof(struct seccomp_data, nr)
        let filter = [
            libc::sock_filter { code: 0x20, jt: 0, jf: 0, k: nr_offset }, // ld [nr]
            libc::sock_filter { code: 0x15, jt: 0, jf: 1, k: TRAPPED_SYSCALL }, // jeq
            libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: libc::SECCOMP_RET_TRAP },
            libc::sock_filter { code: 0x06, jt: 0, jf: 0, k: libc::SECCOMP_RET_ALLOW },
        ];
        let prog =
            libc::sock_fprog { len: filter.len() as u16, filter: filter.as_ptr().cast_mut() };
        // SAFETY: prctl with valid arguments; the filter outlives the call (the kernel copies
        // it).
        unsafe {
            assert_eq!(libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), 0);
            assert_eq!(
                libc::prctl(libc::PR_SET_SECCOMP, libc::SECCOMP_MODE_FILTER, &prog),
                0,
                "install seccomp filter: {}",
                std::io::Error::last_os_error()
            );
        }
        assert_caught_three_times(fault_seccomp, std::ptr::null_mut(), libc::SIGSYS, SYS_SECCOMP);
    })
    .join()
    .expect("seccomp thread");
}

// ----- what is recorded ----------------------------------------------------------------------

#[test]
fn a_fault_inside_libc_is_caught_and_its_pc_is_outside_the_caller() {
    let c = expect_crash(5, fault_strlen, std::ptr::null_mut());
    assert_eq!((c.signo, c.code), (libc::SIGSEGV, SEGV_MAPERR));
    assert_eq!(object_of(c.pc).as_deref().map(base_name), Some("libc.so.6"));
}

/// The backtrace of a crash `expect_crash` returned, module text being `module`.
fn frames_of(c: &RawCrash, module: std::ops::Range<u64>) -> Vec<crate::Frame> {
    let contains = move |a: u64| module.contains(&a);
    let view = crate::backtrace::ModuleView {
        path: std::path::Path::new("/nonexistent"),
        contains: &contains,
    };
    crate::backtrace::backtrace(&c.fault(), &view)
}

fn names(frames: &[crate::Frame]) -> Vec<String> {
    frames.iter().map(|f| f.symbol.clone().unwrap_or_else(|| format!("{:#x}", f.pc))).collect()
}

#[test]
fn abort_is_unwound_through_libc_to_the_guarded_function() {
    let c = expect_crash(6, fault_abrt, std::ptr::null_mut());
    assert!(!c.stack.bytes.is_empty(), "no stack copy for abort()");
    let frames = frames_of(&c, 0..0);
    let names = names(&frames);
    let abort = names.iter().position(|n| n == "abort").unwrap_or_else(|| panic!("{names:?}"));
    let guarded = names
        .iter()
        .position(|n| n.ends_with("fault_abrt"))
        .unwrap_or_else(|| panic!("the guarded function is not in {names:?}"));
    assert!(abort < guarded, "{names:?}");
    assert!(frames[..=guarded].iter().all(|f| !f.guessed), "{frames:#?}");
    assert_eq!(frames[abort].object.as_deref(), Some("libc.so.6"));
}

#[test]
fn a_hardware_fault_copies_the_stack_and_names_the_faulting_function() {
    let c = expect_crash(7, fault_segv, std::ptr::null_mut());
    assert!(!c.stack.bytes.is_empty());
    let frames = frames_of(&c, 0..0);
    assert_eq!(frames[0].pc, c.pc);
    // Frame 0 is the faulting read (a helper of std's in an unoptimised build), then its caller.
    let names = names(&frames);
    assert!(names.iter().take(2).any(|n| n.ends_with("fault_segv")), "{names:?}");
    assert!(frames.iter().take(2).all(|f| !f.guessed), "{frames:#?}");
}

fn object_of(addr: u64) -> Option<String> {
    // SAFETY: all-zero Dl_info is a valid out value; dladdr only reads `addr` as a number.
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out pointer.
    if unsafe { libc::dladdr(addr as *const c_void, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr returned a NUL-terminated file name owned by the dynamic linker.
    Some(unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned())
}

fn base_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

#[test]
fn raw_crash_layout_matches_the_c_shim() {
    // SAFETY: returns a constant.
    assert_eq!(unsafe { ffi::kml_raw_crash_size() }, std::mem::size_of::<ffi::CRawCrash>());
}

// ----- nesting, normal returns -------------------------------------------------------------

#[test]
fn a_call_that_does_not_fault_returns_ok_and_runs_once() {
    let mut n = 0u32;
    // SAFETY: no_fault increments the u32 it is given.
    let r = unsafe { call(1, no_fault, (&mut n as *mut u32).cast()) };
    assert!(r.is_ok());
    assert_eq!(n, 1);
    assert!(!is_guarded());
}

/// Outer guarded function: runs an inner guard that faults, then faults itself. The inner
/// crash is stored through `ctx` (an `Option<RawCrash>` owned by the test, not by this frame).
extern "C" fn outer_then_fault(ctx: *mut c_void) {
    // SAFETY: the test passes a pointer to an Option<RawCrash> that outlives the call.
    let slot = unsafe { &mut *ctx.cast::<Option<RawCrash>>() };
    assert!(is_guarded());
    // SAFETY: fault_ill owns nothing droppable.
    *slot = unsafe { call(22, fault_ill, std::ptr::null_mut()) }.err();
    // Still guarded by the outer guard after the inner one caught its fault.
    assert!(is_guarded());
    // Own nothing droppable from here on: the next line faults and this frame is skipped.
    fault_segv(std::ptr::null_mut());
}

#[test]
fn nested_guards_each_catch_their_own_fault() {
    let mut inner: Option<RawCrash> = None;
    let outer = expect_crash(11, outer_then_fault, (&mut inner as *mut Option<RawCrash>).cast());
    let inner = inner.expect("the inner guard caught nothing");
    assert_eq!((inner.signo, inner.module_id), (libc::SIGILL, 22));
    assert_eq!((outer.signo, outer.module_id), (libc::SIGSEGV, 11));
    assert!(!is_guarded());
}

// ----- stack overflow and the alternate stack ----------------------------------------------

#[test]
fn a_stack_overflow_under_the_guard_is_recovered_three_times() {
    std::thread::Builder::new()
        .stack_size(256 * 1024)
        .spawn(|| {
            for round in 1..=3 {
                let c = expect_crash(round, fault_stack_overflow, std::ptr::null_mut());
                assert_eq!(c.signo, libc::SIGSEGV, "round {round}");
                assert!(c.code > 0, "round {round}: si_code {}", c.code);
            }
        })
        .unwrap()
        .join()
        .expect("the overflowing thread died");
}

#[test]
fn a_guarded_thread_gets_an_alternate_stack_that_is_freed_when_it_exits() {
    // Alone in its own process: on a shared one, another test's thread may map something at
    // the freed address before we look.
    if !kmodlike_testsupport::in_own_process(
        "guard::tests::a_guarded_thread_gets_an_alternate_stack_that_is_freed_when_it_exits",
        std::time::Duration::from_secs(60),
    ) {
        return;
    }
    let (start, size) = std::thread::spawn(|| {
        let mut n = 0u32;
        // SAFETY: no_fault increments the u32 it is given.
        unsafe { call(1, no_fault, (&mut n as *mut u32).cast()) }.unwrap();
        altstack::current_for_test().expect("no alternate stack after a guarded call")
    })
    .join()
    .unwrap();
    assert!(size >= 64 * 1024, "alternate stack of {size} bytes");
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let still_mapped = maps.lines().any(|l| {
        let range = l.split_whitespace().next().unwrap_or("");
        let (a, b) = range.split_once('-').unwrap_or(("0", "0"));
        let a = usize::from_str_radix(a, 16).unwrap_or(0);
        let b = usize::from_str_radix(b, 16).unwrap_or(0);
        a <= start && start < b
    });
    assert!(!still_mapped, "the exited thread's alternate stack {start:#x} is still mapped");
}

// ----- module text table --------------------------------------------------------------------

#[test]
fn registered_text_ranges_attribute_addresses_until_unregistered() {
    // Page-zero addresses: never mapped, so they cannot collide with real modules' text.
    let id = u64::MAX - 100;
    register_module(id, &[(0x1000, 0x2000), (0x3000, 0x3100)]).unwrap();
    assert_eq!(module_at(0x1000), Some(id));
    assert_eq!(module_at(0x1fff), Some(id));
    assert_eq!(module_at(0x2000), None);
    assert_eq!(module_at(0x30ff), Some(id));
    unregister_module(id);
    assert_eq!(module_at(0x1000), None);
    assert_eq!(module_at(0x30ff), None);
}

// ----- child-process tests ------------------------------------------------------------------

const CHILD_ENV: &str = "KMODLIKE_GUARD_CHILD";

/// Re-run the test `name` (this test binary, that test only) with `CHILD_ENV` set; core dumps
/// off; killed after 30 s.
fn run_child(name: &str) -> (std::process::ExitStatus, String) {
    let exe = std::env::current_exe().expect("test binary");
    let mut cmd = Command::new(exe);
    cmd.args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, "1")
        .stdin(std::process::Stdio::null());
    // SAFETY: setrlimit is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            let zero = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
            libc::setrlimit(libc::RLIMIT_CORE, &zero);
            Ok(())
        });
    }
    let mut child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn the child test");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if child.try_wait().expect("wait for the child").is_some() {
            break;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "child test {name} hung; output:\n{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("child output");
    let text =
        format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    (out.status, text)
}

fn in_child() -> bool {
    std::env::var_os(CHILD_ENV).is_some()
}

/// Write a message to stderr with write(2) only: usable in a signal handler.
fn raw_stderr(msg: &[u8]) {
    // SAFETY: writes `msg.len()` bytes from a valid slice.
    unsafe { libc::write(2, msg.as_ptr().cast(), msg.len()) };
}

extern "C" fn host_previous_segv_handler(_sig: c_int) {
    raw_stderr(b"previous handler ran\n");
    // Restore the default action: the fault re-executes and kills the process.
    // SAFETY: signal() with SIG_DFL is async-signal-safe.
    unsafe { libc::signal(libc::SIGSEGV, libc::SIG_DFL) };
}

#[test]
fn a_fault_after_the_guard_returned_is_fatal_and_the_previous_handler_runs() {
    const NAME: &str =
        "guard::tests::a_fault_after_the_guard_returned_is_fatal_and_the_previous_handler_runs";
    if in_child() {
        // The host's own handler, installed before the guard.
        // SAFETY: installs a handler that only calls async-signal-safe functions.
        unsafe {
            libc::signal(
                libc::SIGSEGV,
                host_previous_segv_handler as *const () as libc::sighandler_t,
            );
        }
        install();
        let mut n = 0u32;
        // SAFETY: no_fault increments the u32 it is given.
        unsafe { call(1, no_fault, (&mut n as *mut u32).cast()) }.unwrap();
        raw_stderr(b"guarded call returned; faulting outside any guard\n");
        fault_segv(std::ptr::null_mut());
        raw_stderr(b"SURVIVED a host fault\n");
        return;
    }
    let (status, out) = run_child(NAME);
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "child status {status:?}; output:\n{out}");
    assert!(out.contains("guarded call returned"), "child output:\n{out}");
    assert!(out.contains("previous handler ran"), "child output:\n{out}");
    assert!(!out.contains("SURVIVED"), "child output:\n{out}");
}

/// A host log sink that faults.
fn faulting_log_sink(_module: Option<u64>, _level: i32, _msg: *const c_char) {
    raw_stderr(b"host log sink entered\n");
    fault_segv(std::ptr::null_mut());
}

fn zero_time(_module: Option<u64>) -> u64 {
    0
}

extern "C" fn module_calls_log(_: *mut c_void) {
    // SAFETY: the trampoline takes a level and a NUL-terminated message.
    unsafe { log_trampoline()(0, c"hello from the module".as_ptr()) };
}

#[test]
fn a_fault_in_the_host_log_sink_is_fatal_even_under_a_guard() {
    const NAME: &str = "guard::tests::a_fault_in_the_host_log_sink_is_fatal_even_under_a_guard";
    if in_child() {
        install();
        set_host_sinks(faulting_log_sink, zero_time);
        // SAFETY: module_calls_log owns nothing droppable.
        let r = unsafe { call(3, module_calls_log, std::ptr::null_mut()) };
        raw_stderr(format!("SURVIVED: the guard returned {:?}\n", r.err()).as_bytes());
        return;
    }
    let (status, out) = run_child(NAME);
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "child status {status:?}; output:\n{out}");
    assert!(out.contains("host log sink entered"), "child output:\n{out}");
    assert!(!out.contains("SURVIVED"), "child output:\n{out}");
}

static LOGGED: Mutex<Vec<(Option<u64>, i32, String)>> = Mutex::new(Vec::new());

fn recording_log_sink(module: Option<u64>, level: i32, msg: *const c_char) {
    assert!(!is_guarded(), "the guard is not suspended while host code runs");
    // SAFETY: modules pass NUL-terminated messages.
    let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned();
    LOGGED.lock().unwrap().push((module, level, msg));
}

fn module_time(module: Option<u64>) -> u64 {
    module.map_or(1, |m| m * 1000)
}

#[inline(never)]
extern "C" fn unguarded_module_code_calls_log() {
    // SAFETY: as in module_calls_log.
    unsafe { log_trampoline()(2, c"from module text".as_ptr()) };
    // Work after the call, so the optimiser cannot turn it into a tail call (whose return
    // address would be our caller's, outside the registered text).
    AFTER_LOG.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
}

static AFTER_LOG: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

extern "C" fn module_reads_time(ctx: *mut c_void) {
    // SAFETY: ctx points to a u64 owned by the caller.
    unsafe { *ctx.cast::<u64>() = get_time_trampoline()() };
}

#[test]
fn host_callbacks_name_the_calling_module_and_restore_the_guard() {
    const NAME: &str = "guard::tests::host_callbacks_name_the_calling_module_and_restore_the_guard";
    if in_child() {
        install();
        set_host_sinks(recording_log_sink, module_time);
        // Under a guard: the guard's module.
        // SAFETY: module_calls_log owns nothing droppable.
        unsafe { call(42, module_calls_log, std::ptr::null_mut()) }.unwrap();
        let mut t = 0u64;
        // SAFETY: module_reads_time writes the u64 it is given.
        unsafe { call(43, module_reads_time, (&mut t as *mut u64).cast()) }.unwrap();
        assert_eq!(t, 43_000, "get_time sink saw the wrong module");
        // No guard, the caller's code registered as module 9's text: module 9.
        let f = unguarded_module_code_calls_log as *const () as usize as u64;
        register_module(9, &[(f, f + 256)]).unwrap();
        unguarded_module_code_calls_log();
        unregister_module(9);
        // No guard, not in any module's text: none.
        unguarded_module_code_calls_log();
        // The guard survives a host callback: a fault after the callback is still caught.
        extern "C" fn log_then_fault(_: *mut c_void) {
            module_calls_log(std::ptr::null_mut());
            fault_ill(std::ptr::null_mut());
        }
        let c = expect_crash(44, log_then_fault, std::ptr::null_mut());
        assert_eq!((c.signo, c.module_id), (libc::SIGILL, 44));
        let logged = LOGGED.lock().unwrap().clone();
        assert_eq!(
            logged,
            vec![
                (Some(42), 0, "hello from the module".to_owned()),
                (Some(9), 2, "from module text".to_owned()),
                (None, 2, "from module text".to_owned()),
                (Some(44), 0, "hello from the module".to_owned()),
            ]
        );
        println!("CHILD OK");
        return;
    }
    let (status, out) = run_child(NAME);
    assert!(status.success() && out.contains("CHILD OK"), "child {status:?}; output:\n{out}");
}

// ----- threads without a guard ----------------------------------------------------------------

static THREAD_CRASHES: (Mutex<Vec<RawCrash>>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());

fn record_thread_crash(c: RawCrash) {
    THREAD_CRASHES.0.lock().unwrap().push(c);
    THREAD_CRASHES.1.notify_all();
}

fn wait_thread_crashes(n: usize) -> Vec<RawCrash> {
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut got = THREAD_CRASHES.0.lock().unwrap();
    while got.len() < n {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "only {} of {n} thread crashes reported", got.len());
        got = THREAD_CRASHES.1.wait_timeout(got, left).unwrap().0;
    }
    got.clone()
}

/// A stand-in for a function's text: from `start` to the nearest other function start among
/// `starts` that follows it, at most 256 bytes.
fn text_of(start: u64, starts: &[u64]) -> (u64, u64) {
    let end = starts.iter().copied().filter(|&s| s > start).min().unwrap_or(u64::MAX);
    (start, end.min(start + 256))
}

#[inline(never)]
extern "C" fn module_thread_body_ill() {
    fault_ill(std::ptr::null_mut());
}

#[inline(never)]
extern "C" fn module_thread_body_abort() {
    // SAFETY: abort has no preconditions.
    unsafe { libc::abort() };
}

#[test]
fn a_fault_in_module_text_on_a_thread_without_a_guard_parks_it_and_reports() {
    const NAME: &str =
        "guard::tests::a_fault_in_module_text_on_a_thread_without_a_guard_parks_it_and_reports";
    if in_child() {
        install();
        set_thread_crash_sink(record_thread_crash);
        // The faulting functions stand in for a module's text. fault_ill is inlined into its
        // caller or called from it: register both.
        let body = module_thread_body_ill as *const () as usize as u64;
        let ill = fault_ill as *const () as usize as u64;
        let abort_body = module_thread_body_abort as *const () as usize as u64;
        let starts = [body, ill, abort_body];
        register_module(77, &[text_of(body, &starts), text_of(ill, &starts)]).unwrap();
        register_module(78, &[text_of(abort_body, &starts)]).unwrap();

        let (tx, rx) = std::sync::mpsc::channel::<i32>();
        let tx2 = tx.clone();
        // Threads "the module started": they never finish.
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() }).unwrap();
            module_thread_body_ill();
        });
        let ill_tid = rx.recv().unwrap();
        let crashes = wait_thread_crashes(1);
        std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx2.send(unsafe { libc::gettid() }).unwrap();
            module_thread_body_abort();
        });
        let abort_tid = rx.recv().unwrap();
        let crashes2 = wait_thread_crashes(2);
        let c = &crashes[0];
        assert_eq!(
            (c.signo, c.module_id, c.tid, c.on_module_thread),
            (libc::SIGILL, 77, ill_tid, true)
        );
        let a = &crashes2[1];
        assert_eq!(
            (a.signo, a.code, a.module_id, a.tid, a.on_module_thread),
            (libc::SIGABRT, SI_TKILL, 78, abort_tid, true)
        );
        // Both threads are parked, not dead: their /proc entries remain.
        // (It reports before it goes to sleep: give it a moment.)
        for tid in [ill_tid, abort_tid] {
            let deadline = Instant::now() + Duration::from_secs(5);
            loop {
                let stat = std::fs::read_to_string(format!("/proc/self/task/{tid}/stat"))
                    .expect("the parked thread still exists");
                if stat.contains(") S ") {
                    break;
                }
                assert!(Instant::now() < deadline, "parked thread {tid} not sleeping: {stat}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        // The host keeps working, guard included.
        let g = expect_crash(5, fault_segv, std::ptr::null_mut());
        assert_eq!(g.signo, libc::SIGSEGV);
        println!("CHILD OK");
        return;
    }
    let (status, out) = run_child(NAME);
    assert!(status.success() && out.contains("CHILD OK"), "child {status:?}; output:\n{out}");
}

#[test]
fn a_fault_outside_module_text_on_a_thread_without_a_guard_is_fatal() {
    const NAME: &str =
        "guard::tests::a_fault_outside_module_text_on_a_thread_without_a_guard_is_fatal";
    if in_child() {
        install();
        set_thread_crash_sink(record_thread_crash);
        let _ = std::thread::spawn(|| fault_ill(std::ptr::null_mut())).join();
        raw_stderr(b"SURVIVED a host thread's fault\n");
        return;
    }
    let (status, out) = run_child(NAME);
    assert_eq!(status.signal(), Some(libc::SIGILL), "child status {status:?}; output:\n{out}");
    assert!(!out.contains("SURVIVED"), "child output:\n{out}");
}

// ----- concurrency ----------------------------------------------------------------------------

#[test]
fn guarded_crashes_on_many_threads_at_once_are_each_caught_by_their_own_guard() {
    let faults: [(unsafe extern "C" fn(*mut c_void), i32); 4] = [
        (fault_segv, libc::SIGSEGV),
        (fault_ill, libc::SIGILL),
        (fault_abrt, libc::SIGABRT),
        (fault_fpe, libc::SIGFPE),
    ];
    // Meanwhile the module table is rewritten, as loads and unloads on other threads do.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let churn = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let id = u64::MAX - 1000 - (n % 16);
                register_module(id, &[(0x5000 + n % 16 * 0x100, 0x5000 + n % 16 * 0x100 + 0x80)])
                    .unwrap();
                unregister_module(id);
                n += 1;
            }
        })
    };
    let workers: Vec<_> = (0..8u64)
        .map(|t| {
            let (f, signo) = faults[t as usize % faults.len()];
            std::thread::spawn(move || {
                for i in 0..100u64 {
                    let id = t * 1000 + i;
                    let c = expect_crash(id, f, std::ptr::null_mut());
                    assert_eq!((c.signo, c.module_id), (signo, id), "thread {t} crash {i}");
                    // SAFETY: gettid has no preconditions.
                    assert_eq!(c.tid, unsafe { libc::gettid() });
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("a worker thread failed");
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    churn.join().unwrap();
}

// ----- stack words ----------------------------------------------------------------------------

extern "C" fn aborting_comparator(_: *const c_void, _: *const c_void) -> c_int {
    // SAFETY: abort has no preconditions; the guard catches its SIGABRT.
    unsafe { libc::abort() }
}

/// Module code -> libc (qsort) -> module callback -> abort().
extern "C" fn sort_with_aborting_comparator(_: *mut c_void) {
    let mut items = [3u32, 1, 2];
    // SAFETY: a valid array of three u32 and a comparator of the right type.
    unsafe {
        libc::qsort(items.as_mut_ptr().cast(), items.len(), 4, Some(aborting_comparator));
    }
}

#[test]
fn the_backtrace_goes_past_module_frames_to_the_libc_frames_behind_them() {
    // The comparator stands in for module text: its frame sits between abort's frames and
    // qsort's, and the unwinding goes on through libc to the function that called qsort.
    let cmp = aborting_comparator as *const () as usize as u64;
    let id = u64::MAX - 200;
    register_module(id, &[(cmp, cmp + 256)]).unwrap();
    let c = expect_crash(id, sort_with_aborting_comparator, std::ptr::null_mut());
    unregister_module(id);
    assert_eq!(c.signo, libc::SIGABRT);
    let frames = frames_of(&c, cmp..cmp + 256);
    let names = names(&frames);
    let module = frames.iter().position(|f| f.in_module).unwrap_or_else(|| panic!("{names:?}"));
    assert!(names[module].ends_with("aborting_comparator"), "{names:?}");
    let sorter = names
        .iter()
        .position(|n| n.ends_with("sort_with_aborting_comparator"))
        .unwrap_or_else(|| panic!("no frame of the qsort caller: {names:?}"));
    assert!(
        frames[module + 1..sorter].iter().any(|f| f.object.as_deref() == Some("libc.so.6")),
        "no libc frame between the comparator and the qsort caller: {names:?}"
    );
    assert!(frames[..=sorter].iter().all(|f| !f.guessed), "{frames:#?}");
}

#[test]
fn an_abort_outside_a_guard_on_a_thread_that_entered_one_is_fatal() {
    // Such a thread is a host thread: return addresses into modules on its stack may be stale
    // leftovers of its guarded calls, so they never make its abort a module's crash.
    const NAME: &str =
        "guard::tests::an_abort_outside_a_guard_on_a_thread_that_entered_one_is_fatal";
    if in_child() {
        install();
        set_thread_crash_sink(record_thread_crash);
        let body = module_thread_body_abort as *const () as usize as u64;
        register_module(79, &[(body, body + 256)]).unwrap();
        let _ = std::thread::spawn(|| {
            let mut n = 0u32;
            // SAFETY: no_fault increments the u32 it is given.
            unsafe { call(1, no_fault, (&mut n as *mut u32).cast()) }.unwrap();
            module_thread_body_abort();
        })
        .join();
        raw_stderr(b"SURVIVED a host thread's abort\n");
        return;
    }
    let (status, out) = run_child(NAME);
    assert_eq!(status.signal(), Some(libc::SIGABRT), "child status {status:?}; output:\n{out}");
    assert!(!out.contains("SURVIVED"), "child output:\n{out}");
}
