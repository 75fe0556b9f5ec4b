//! The crash guard: the ONLY place in kmodlike that touches signals.
//!
//! # How a guarded call works
//!
//! ```text
//! caller ──> the entry (entry.rs, inline asm) ──> module function ──> ... fault
//!              slot written, state checked  <──── glibc siglongjmp ──── kml_handler
//! ```
//!
//! A call into a module ([`call_module`], used by every `Handle` call and the C API's
//! `module_loader_call`) runs the fast entry of `entry.rs` inlined into the caller: this
//! thread's slot gets `{module, stack pointer, landing, callee-saved registers}` with plain
//! stores, the module's state is checked with a plain load, and the function is called. When it
//! raises SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT or SIGSYS, the handler (`guard.c`) writes the
//! raw facts (signal, `si_code`, address, PC, SP, frame pointer, thread id, time, and a copy of
//! the faulting stack up to the guard's frame for the unwinder) into the thread's record and resumes the slot's
//! landing through a glibc `sigjmp_buf` it builds (`fast.c`); the entry returns 1 and the crash
//! is taken from the record. An unload drains calls in flight with `membarrier` and a scan of
//! the slots ([`calls_in_flight`]). Where the entry's start-up check fails (another libc,
//! another architecture), [`call`] is used instead: a C shim that pushes a guard record on its
//! own stack and takes `sigsetjmp(env, 0)`; the lifecycle entry points (init, fini, the version
//! check, `can_unload`) always use it. Everything the handler does is async-signal-safe; each
//! step's reason is written next to it in the C files. Naming the signal, unwinding the stack
//! copy (`backtrace.rs`) and deciding taint happen later, in normal context, from [`RawCrash`].
//!
//! # The rule for frames the jump skips
//!
//! `siglongjmp` skips every frame between the entry and the fault without running anything in
//! them. Skipping a Rust frame that still owns a value with a destructor is undefined
//! behaviour (the Rust reference; RFC 2945 "plain old frames"). The frames between the shim
//! and a module's fault are the module's own (C, or a Rust module's `extern "C"` exports) and
//! libc's. So the function given to [`call`] must be an `extern "C"` function that owns
//! nothing droppable while it can fault; the API above this module only offers guarded calls
//! of that shape (a function pointer plus `Copy` arguments and result, run by a monomorphised
//! `extern "C"` trampoline that owns nothing). The caller of [`call`] is below the jump point
//! and may own anything.
//!
//! # What is ours
//!
//! A signal is the guard's when the innermost guarded call on the faulting thread is active (a
//! fast slot, or a record that is not a host callback's suspension) and the signal is
//! synchronous: a positive `si_code` (a hardware fault or a seccomp trap), or
//! `SI_TKILL` from our own pid (`raise`, `abort`). The PC need not be in the module: `abort`,
//! `free` and `strlen` fault inside libc on the module's behalf.
//!
//! On a thread with no guard (a thread the module started), a synchronous fault whose PC lies
//! in a registered module's text (for `abort`/`raise`: with a return address into a module's
//! text in the top 16 KiB of the stack) parks the thread forever and hands the crash to the
//! sink set by [`set_thread_crash_sink`], which runs on a service thread woken through a pipe.
//! The main thread is never parked.
//!
//! Everything else is chained to the handler that was installed before ours, or, when that was
//! the default action, the default action is reinstalled and the fault re-executes: the
//! process dies exactly as it would have without kmodlike. A host callback (`log`,
//! `get_time`) suspends the guard, so a fault in host code called by a module is fatal too.
//!
//! # fork
//!
//! Only the forking thread exists in a child: the service thread does not, and the crash pipe
//! would be the parent's. A `pthread_atfork` child handler (registered by [`install`]) makes
//! the shim forget the parent's pipe, report slots, parked threads and sampling requests, and
//! sets a flag; the next [`install`], [`call`] or [`register_module`] in the child sees the
//! flag (one relaxed load: no system call on the guarded-call path) and starts a fresh pipe
//! and service thread. A crash on a module thread before that (there can be none: a module
//! thread in the child is started by a call into the module) waits in its slot and is
//! delivered when the service thread starts. Guarded calls need nothing: the jump buffer, the
//! thread-local guard pointer and the alternate stack are the forking thread's own.
//!
//! # Threads in a module's code
//!
//! [`threads_in_code`] (in `threads.rs`) tells the unload path whether another thread runs in,
//! or will return into, a module's code; it samples running threads with a signal whose
//! handler is in `guard.c` too. See that module for the mechanism.
//!
//! # Alternate signal stack
//!
//! Every thread that enters a guard gets an alternate signal stack of at least 64 KiB (reused
//! when it has one, else mapped with a guard page and freed when the thread exits), so a stack
//! overflow in module code is recoverable.

mod altstack;
mod asking;
pub(crate) mod deadline;
mod entry;
mod ffi;
mod interpose;
mod interrupt_signal;
#[cfg(test)]
mod tests;
#[cfg(test)]
mod text_tests;
mod threads;
#[cfg(test)]
mod threads_tests;

#[cfg(target_arch = "x86_64")]
pub(crate) use entry::take_fast_crash;
pub(crate) use entry::{call_module, calls_in_flight, GuardModule, Outcome, LIVE};
pub use entry::{guard_entry, GuardEntry};
#[cfg(target_arch = "x86_64")]
pub use ffi::kml_fast_restore_mask as __kml_fast_restore_mask;
pub(crate) use interpose::{
    forget as forget_module_actions, interposer, reclaim_handlers as reclaim_fatal_handlers,
};
#[cfg(test)]
pub(crate) use threads::Evidence;
pub(crate) use threads::{threads_in_code, ThreadInCode, ThreadSample};

use std::ffi::{c_char, c_int, c_void};
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, Once, RwLock};
use std::time::{Duration, SystemTime};

/// What the signal handler recorded about a fatal signal, in raw numbers only.
#[derive(Debug, Clone)]
pub(crate) struct RawCrash {
    pub signo: i32,
    pub code: i32,
    pub addr: u64,
    pub pc: u64,
    pub tid: i32,
    pub time: SystemTime,
    /// The module the fault is attributed to (the active guard's, or the one whose text holds
    /// the PC / a return address on a module thread).
    pub module_id: u64,
    /// What the unwinder starts from (boxed: the record stays small).
    pub stack: Box<StackCopy>,
    /// The function the guarded call ran, when the caller knows it (set after the jump).
    pub called: Option<u64>,
    /// The fault happened on a thread with no guard (a thread the module started).
    pub on_module_thread: bool,
    /// Not a signal: the module called `exit`/`_exit`/`_Exit` with this status inside a
    /// guarded call, and the guard ended that call instead of the process (`signo` is 0).
    /// On a thread the module started, the thread was parked instead.
    pub exit_status: Option<i32>,
    /// With `exit_status`: which function the module called (`"exit"`, `"_exit"`, `"_Exit"`,
    /// `"quick_exit"`), when known. `pc` is then the module's return address at that call.
    pub exit_function: Option<&'static str>,
    /// For a SIGABRT raised by glibc after one of its checks failed: what it said (boxed: the
    /// record stays small).
    pub glibc_abort: Option<Box<GlibcAbort>>,
    /// Not a fault: the call overran its deadline and the interrupt signal ended it (`signo`
    /// is the interrupt signal).
    pub timeout: Option<Box<TimeoutFacts>>,
}

/// When a call that overran its deadline started, was due and was interrupted
/// (`CLOCK_MONOTONIC` nanoseconds).
#[derive(Debug, Clone, Copy)]
pub(crate) struct TimeoutFacts {
    pub start: u64,
    pub deadline: u64,
    pub stopped: u64,
}

impl TimeoutFacts {
    /// How long the call ran, when its start is known.
    pub(crate) fn ran(&self) -> Option<Duration> {
        (self.start != 0).then(|| Duration::from_nanos(self.stopped.saturating_sub(self.start)))
    }
}

/// A SIGABRT glibc raised itself (arena.c).
#[derive(Debug, Clone)]
pub(crate) struct GlibcAbort {
    /// The message it printed (`"double free or corruption (!prev)"`).
    pub message: String,
    /// It aborted with an allocator arena's lock held by the crashed call, and the loader
    /// released that lock after the jump: the arena's address.
    pub arena_released: Option<u64>,
}

/// The registers and stack bytes a backtrace is unwound from.
#[derive(Debug, Clone, Default)]
pub(crate) struct StackCopy {
    /// Stack pointer, frame pointer and (aarch64) link register at the fault.
    pub sp: u64,
    pub fp: u64,
    pub lr: u64,
    /// The handler's copy of the faulting stack from `sp` up to the guard's own frame (at most
    /// 64 KiB). Empty for a crash on a module thread, an exit, or when the thread had no
    /// buffer.
    pub bytes: Vec<u8>,
}

impl RawCrash {
    /// What the backtrace unwinds: the PC, the registers and the stack copy.
    pub(crate) fn fault(&self) -> crate::backtrace::Fault<'_> {
        crate::backtrace::Fault {
            pc: self.pc,
            sp: self.stack.sp,
            fp: self.stack.fp,
            lr: self.stack.lr,
            stack: &self.stack.bytes,
        }
    }

    fn from_c(c: &ffi::CRawCrash) -> RawCrash {
        let since_epoch =
            Duration::new(c.time_sec.max(0) as u64, c.time_nsec.clamp(0, 999_999_999) as u32);
        let exited = c.cause == ffi::CAUSE_EXIT;
        // An exit is recorded with the exit function in `addr` and the module's call site in
        // `pc` (guard.c's kml_guard_abandon_exit in a guarded call, interpose.c on a module
        // thread).
        let (exit_function, addr) = match exited {
            false => (None, c.addr),
            true => (interpose::exit_function_of_record(c.addr), 0),
        };
        let pc = c.pc;
        RawCrash {
            signo: c.signo,
            code: c.code,
            addr,
            pc,
            tid: c.tid,
            time: SystemTime::UNIX_EPOCH + since_epoch,
            module_id: c.module_id,
            stack: Box::new(StackCopy { sp: c.sp, fp: c.fp, lr: c.lr, bytes: stack_copy_of(c) }),
            called: None,
            on_module_thread: c.on_module_thread != 0,
            exit_status: exited.then_some(c.code),
            exit_function,
            timeout: (c.cause == ffi::CAUSE_TIMEOUT).then(|| {
                Box::new(TimeoutFacts {
                    start: c.call_start,
                    deadline: c.call_deadline,
                    stopped: c.call_stopped,
                })
            }),
            glibc_abort: abort_message_of(c).map(|message| {
                let arena_released = (c.arena_released != 0).then_some(c.arena_released);
                Box::new(GlibcAbort { message, arena_released })
            }),
        }
    }

    /// Settle a record just taken, before anything allocates: an allocator lock the crashed
    /// call held is released (arena.c), then the record becomes a `RawCrash`.
    fn settle(c: &mut ffi::CRawCrash) -> RawCrash {
        // SAFETY: normal context; `c` is a complete record; the shim allocates nothing.
        unsafe { ffi::kml_crash_release_arena(c) };
        RawCrash::from_c(c)
    }
}

/// glibc's abort message in `c`, when the handler found a new one.
fn abort_message_of(c: &ffi::CRawCrash) -> Option<String> {
    if c.abort_msg_ptr == 0 {
        return None;
    }
    let end = c.abort_msg.iter().position(|&b| b == 0).unwrap_or(c.abort_msg.len());
    let msg = String::from_utf8_lossy(&c.abort_msg[..end]).trim().to_owned();
    (!msg.is_empty()).then_some(msg)
}

/// The handler's stack copy of `c`, copied out of its per-thread buffer.
fn stack_copy_of(c: &ffi::CRawCrash) -> Vec<u8> {
    if c.copy_buf == 0 || c.cause == ffi::CAUSE_EXIT {
        return Vec::new();
    }
    // SAFETY: kml_stack_copy_size returns a constant.
    let cap = unsafe { ffi::kml_stack_copy_size() };
    let len = (c.copy_len as usize).min(cap);
    // SAFETY: `copy_buf` is this thread's buffer of `cap` bytes (the fast entry's thread
    // record, or STACK_COPY below), alive while the thread is; the handler wrote `len` bytes
    // into it before the jump, and nothing writes it again until this thread's next crash.
    unsafe { std::slice::from_raw_parts(c.copy_buf as *const u8, len) }.to_vec()
}

std::thread_local! {
    /// The `sigsetjmp` entry's buffer for the handler's copy of a crashed stack on this thread
    /// (allocated on the thread's first such call, in normal context: the handler allocates
    /// nothing).
    static STACK_COPY: std::cell::Cell<*mut u8> = const { std::cell::Cell::new(std::ptr::null_mut()) };
    static STACK_COPY_OWNER: StackCopyOwner = const { StackCopyOwner };
}

/// Frees this thread's [`STACK_COPY`] at thread exit.
struct StackCopyOwner;

impl Drop for StackCopyOwner {
    fn drop(&mut self) {
        let p = STACK_COPY.try_with(|c| c.replace(std::ptr::null_mut())).unwrap_or_default();
        if !p.is_null() {
            // SAFETY: allocated by `stack_copy_buffer` with kml_stack_copy_alloc; no guarded
            // call runs on this thread any more with it (its pointer was cleared above).
            unsafe { ffi::kml_stack_copy_free(p) };
        }
    }
}

/// This thread's buffer for the `sigsetjmp` entry's stack copy, or null (no copy) when it
/// cannot be had (allocation failed, or the thread is exiting).
fn stack_copy_buffer() -> *mut u8 {
    STACK_COPY
        .try_with(|c| {
            if c.get().is_null() && STACK_COPY_OWNER.try_with(|_| ()).is_ok() {
                // SAFETY: normal context; an anonymous mapping of the copy's size, or null.
                let p = unsafe { ffi::kml_stack_copy_alloc() };
                c.set(p);
            }
            c.get()
        })
        .unwrap_or(std::ptr::null_mut())
}

/// Install the handlers (idempotent, cheap after the first call).
///
/// Also starts the service thread that reports crashes on threads without a guard. Call it
/// after anything else that installs handlers for these signals (Rust's std does so before
/// `main`), so that those handlers stay behind ours and are chained to.
/// Why the allocator's lock cannot be released after an abort inside it (arena.c), when so.
static ARENA_UNAVAILABLE: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Why the loader cannot release an allocator lock a crashed call held, or `None` when it can.
pub(crate) fn arena_release_unavailable() -> Option<&'static str> {
    ARENA_UNAVAILABLE.get().map(String::as_str)
}

pub(crate) fn install() {
    restart_after_fork_if_needed();
    static INSTALL: Once = Once::new();
    INSTALL.call_once(|| {
        // SAFETY: normal context; dl_iterate_phdr under the shim's own lock.
        unsafe { ffi::kml_refresh_code_ranges() };
        // Pipe and service thread first, so a crash right after installation is delivered.
        start_service_thread();
        // SAFETY: returns a constant.
        let c_size = unsafe { ffi::kml_raw_crash_size() };
        assert_eq!(
            c_size,
            std::mem::size_of::<ffi::CRawCrash>(),
            "kmodlike: guard.c and guard/ffi.rs disagree on struct kml_raw_crash"
        );
        // The entry first: the handler reads the records the fast entry registers.
        entry::choose();
        // Where glibc's main arena and abort message are, for a crash inside the allocator.
        let mut why = std::ptr::null();
        // SAFETY: normal context, before the handler can record a crash; `why` is writable.
        if unsafe { ffi::kml_arena_discover(&mut why) } == 0 {
            // SAFETY: kml_arena_discover sets `why` to a static C string when it returns 0.
            let why = unsafe { std::ffi::CStr::from_ptr(why) }.to_string_lossy();
            let _ = ARENA_UNAVAILABLE.set(why.into_owned());
        }
        // SAFETY: installs our handler for six signals, saving the previous actions; the
        // handler only touches state the shim owns.
        let rc = unsafe { ffi::kml_install() };
        assert!(
            rc == 0,
            "kmodlike: cannot install the crash guard's signal handlers: {}",
            std::io::Error::from_raw_os_error(rc)
        );
        // What `reclaim_fatal_handlers` puts back when module code replaces them.
        interpose::capture_guard_actions();
        // SAFETY: three `extern "C" fn()` handlers valid for the life of the process; the
        // child handler only closes descriptors and stores atomics (see `after_fork_child`).
        let rc = unsafe {
            libc::pthread_atfork(
                Some(ffi::kml_atfork_prepare),
                Some(ffi::kml_atfork_parent),
                Some(after_fork_child),
            )
        };
        if rc != 0 {
            eprintln!(
                "kmodlike: crash guard cannot register its fork handler ({}): in a child \
                 process, crashes on module threads will park the thread but not be reported",
                std::io::Error::from_raw_os_error(rc)
            );
        }
    });
}

/// Set in a fork child (by [`after_fork_child`]) until the service thread is restarted there.
static FORKED: AtomicBool = AtomicBool::new(false);

/// The `pthread_atfork` child handler. Runs in the child right after `fork`, where only
/// async-signal-safe work is allowed when the parent had other threads: the shim closes its
/// copies of the parent's pipe and resets atomics; we store two atomics. No thread is started
/// here: the next guard entry point does that ([`restart_after_fork_if_needed`]).
extern "C" fn after_fork_child() {
    // SAFETY: async-signal-safe C (close, atomic stores, unlocking a mutex this thread
    // locked in the prepare handler).
    unsafe { ffi::kml_atfork_child() };
    threads::after_fork_child();
    deadline::after_fork_child();
    FORKED.store(true, Ordering::Release);
}

/// In a fork child, the first guard entry point starts a fresh pipe and service thread. One
/// relaxed load otherwise.
#[inline]
fn restart_after_fork_if_needed() {
    if FORKED.load(Ordering::Relaxed) {
        restart_after_fork();
    }
}

#[cold]
fn restart_after_fork() {
    // One thread wins; a crash on another thread before the new pipe is published waits in
    // its slot and is announced by `kml_set_crash_pipe`.
    if FORKED.swap(false, Ordering::AcqRel) {
        start_service_thread();
    }
}

/// Run `f(ctx)` under the guard, attributing a fatal signal to `module_id`.
///
/// Returns `Err` with what the handler recorded when `f` raised SIGSEGV, SIGBUS, SIGFPE,
/// SIGILL, SIGABRT or SIGSYS on this thread. Guards nest: a guarded call made inside another
/// catches its own faults.
///
/// # Safety
/// `f` must be safe to call with `ctx`. Frames between this call and a fault are skipped by
/// `siglongjmp`: they must own nothing with a destructor.
pub(crate) unsafe fn call(
    module_id: u64,
    f: unsafe extern "C" fn(*mut c_void),
    ctx: *mut c_void,
) -> Result<(), RawCrash> {
    // SAFETY: forwarded contract.
    unsafe { call_until(module_id, f, ctx, None) }
}

/// [`call`], interrupted at `dl`'s deadline when there is one (the `Err` then has `timeout`).
///
/// # Safety
/// As [`call`].
pub(crate) unsafe fn call_until(
    module_id: u64,
    f: unsafe extern "C" fn(*mut c_void),
    ctx: *mut c_void,
    dl: Option<&deadline::Deadline>,
) -> Result<(), RawCrash> {
    install();
    altstack::ensure();
    let mut out = MaybeUninit::<ffi::CRawCrash>::uninit();
    // SAFETY: `f(ctx)` is callable (the caller's contract); the frames the jump can skip are
    // `f`'s and what it calls (the caller's contract again), never ours; `out` is writable.
    let buf = stack_copy_buffer();
    // SAFETY: as above; `buf` is null or this thread's buffer of kml_stack_copy_size bytes.
    let dl: *const deadline::Deadline = dl.map_or(std::ptr::null(), |d| d);
    // SAFETY: as above; `dl` is null or a deadline alive for the call.
    let crashed = unsafe { ffi::kml_guard_call(f, ctx, module_id, out.as_mut_ptr(), buf, dl) };
    if crashed == 0 {
        Ok(())
    } else {
        // SAFETY: the shim filled `out` when it reports a crash.
        Err(RawCrash::settle(unsafe { out.assume_init_mut() }))
    }
}

/// The system's page size, for the alternate stacks and the thread scan.
fn page_size() -> usize {
    crate::page_size() as usize
}

/// Whether a guard is active (and not suspended by a host callback) on this thread.
#[cfg(test)]
pub(crate) fn is_guarded() -> bool {
    // SAFETY: reads this thread's guard pointer.
    unsafe { ffi::kml_guard_active() != 0 }
}

/// Publish a module's text ranges `[start, end)` so faults on threads without a guard can be
/// attributed to it, and host callbacks can tell which module called.
///
/// All of them or none: a module whose text is not in the table cannot have a fault on its own
/// threads contained, so the loader refuses to run it ([`TextTableFull`]). The table grows on
/// demand (in chunks, in normal context) up to [`text_table_stats`]'s `capacity` ranges
/// registered at once (262,144 by default); ranges of unmapped modules are reused. Module ids
/// are any `u64` except `u64::MAX`; empty ranges are left out.
pub(crate) fn register_module(module_id: u64, text: &[(u64, u64)]) -> Result<(), TextTableFull> {
    restart_after_fork_if_needed();
    let flat: Vec<u64> = text.iter().filter(|&&(s, e)| s < e).flat_map(|&(s, e)| [s, e]).collect();
    let n = (flat.len() / 2) as u32;
    // SAFETY: plain values and `n` start/end pairs; the shim serialises writers and publishes
    // with atomics.
    let rc = unsafe { ffi::kml_register_module_text(module_id, flat.as_ptr(), n) };
    if rc != 0 {
        return Err(TextTableFull { ranges: n as usize, stats: text_table_stats() });
    }
    // Record the new code for the handler's return-address test; a module that brought new
    // libraries with it makes the shim rebuild its table from every loaded object.
    // SAFETY: normal context; `flat` holds `n` start/end pairs.
    unsafe { ffi::kml_code_ranges_after_load(flat.as_ptr(), n) };
    Ok(())
}

/// The guard's table of module text ranges could not take a module's ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TextTableFull {
    /// Ranges the module needed.
    pub ranges: usize,
    /// The table when it refused.
    pub stats: TextTableStats,
}

impl std::fmt::Display for TextTableFull {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "the crash guard's table of module code is full ({} of {} ranges in use, {} \
             needed): a fault on this module's threads could not be contained; unload modules, \
             or restart the process to drop the code of crashed modules kept mapped",
            self.stats.used, self.stats.capacity, self.ranges
        )
    }
}

/// Figures of the guard's table of module text ranges.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TextTableStats {
    /// Ranges registered now.
    pub used: u32,
    /// One past the highest slot ever used: what the signal handler scans.
    pub high_water: u32,
    /// Chunks mapped (the first is static).
    pub chunks: u32,
    /// Ranges the table can hold at once.
    pub capacity: u32,
}

/// The table's figures now.
pub(crate) fn text_table_stats() -> TextTableStats {
    let (mut used, mut high_water, mut chunks, mut capacity) = (0, 0, 0, 0);
    // SAFETY: four valid out pointers; the shim reads its counters under its lock.
    unsafe { ffi::kml_text_stats(&mut used, &mut high_water, &mut chunks, &mut capacity) };
    TextTableStats { used, high_water, chunks, capacity }
}

/// Forget a module's text ranges (after it is unloaded and unmapped), and the signal actions
/// it recorded through its redirected `sigaction`.
pub(crate) fn unregister_module(module_id: u64) {
    interpose::forget(module_id);
    // SAFETY: plain value; the shim serialises writers.
    unsafe { ffi::kml_unregister_module(module_id) };
}

/// The module whose registered text holds `addr`.
#[cfg(test)]
pub(crate) fn module_at(addr: u64) -> Option<u64> {
    let mut id = 0u64;
    // SAFETY: `id` is a valid out pointer.
    (unsafe { ffi::kml_module_at(addr, &mut id) } != 0).then_some(id)
}

// ---------------------------------------------------------------------------------------------
// Crashes on threads without a guard: the service thread.
// ---------------------------------------------------------------------------------------------

/// The thread-crash sink, and crashes that arrived before one was set.
type ThreadSink = (Option<fn(RawCrash)>, Vec<RawCrash>);
static THREAD_SINK: Mutex<ThreadSink> = Mutex::new((None, Vec::new()));

/// Set the function that receives crashes on threads without a guard. It runs on the guard's
/// service thread, never in the signal handler. Crashes that arrived before a sink was set are
/// delivered to it now.
pub(crate) fn set_thread_crash_sink(sink: fn(RawCrash)) {
    let pending = {
        let mut s = THREAD_SINK.lock().unwrap_or_else(|e| e.into_inner());
        s.0 = Some(sink);
        std::mem::take(&mut s.1)
    };
    for crash in pending {
        deliver(sink, crash);
    }
}

fn deliver(sink: fn(RawCrash), crash: RawCrash) {
    if std::panic::catch_unwind(|| sink(crash)).is_err() {
        eprintln!("kmodlike: the thread-crash sink panicked; the crash report was lost");
    }
}

fn start_service_thread() {
    let mut fds = [-1 as c_int; 2];
    // SAFETY: `fds` has room for two descriptors.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        eprintln!(
            "kmodlike: crash guard cannot create its pipe ({}): crashes on module threads will \
             park the thread but not be reported",
            std::io::Error::last_os_error()
        );
        return;
    }
    let [read_fd, write_fd] = fds;
    // The handler must never block on the pipe.
    // SAFETY: fcntl on a descriptor we own.
    unsafe { libc::fcntl(write_fd, libc::F_SETFL, libc::O_NONBLOCK) };
    let spawned = std::thread::Builder::new()
        .name("kmodlike-guard".into())
        .stack_size(256 * 1024)
        .spawn(move || service_loop(read_fd));
    match spawned {
        // SAFETY: publishes descriptors that stay open for the life of the process (in a
        // fork child, the child handler closes its copies).
        Ok(_) => unsafe { ffi::kml_set_crash_pipe(read_fd, write_fd) },
        Err(e) => {
            eprintln!(
                "kmodlike: crash guard cannot start its service thread ({e}): crashes on module \
                 threads will park the thread but not be reported"
            );
            // SAFETY: our descriptors, used by nobody else.
            unsafe {
                libc::close(read_fd);
                libc::close(write_fd);
            }
        }
    }
}

fn service_loop(read_fd: c_int) {
    loop {
        let mut byte = 0u8;
        // SAFETY: reads one byte into a local.
        let n = unsafe { libc::read(read_fd, (&mut byte as *mut u8).cast(), 1) };
        if n < 0 && std::io::Error::last_os_error().kind() == std::io::ErrorKind::Interrupted {
            continue;
        }
        if n != 1 {
            eprintln!("kmodlike: crash guard service thread: pipe closed, stopping");
            return;
        }
        if byte == LOST_REPORT {
            eprintln!(
                "kmodlike: a module thread crashed and was parked, but no report slot was free: \
                 {} such report(s) lost so far; the module that crashed is not known",
                thread_crashes_dropped()
            );
            continue;
        }
        let mut out = MaybeUninit::<ffi::CRawCrash>::uninit();
        // SAFETY: `out` is writable; the shim checks the index and the slot's state.
        if unsafe { ffi::kml_take_thread_crash(u32::from(byte), out.as_mut_ptr()) } == 0 {
            continue;
        }
        // SAFETY: filled by kml_take_thread_crash when it returns 1.
        let mut crash = RawCrash::settle(unsafe { out.assume_init_mut() });
        if crash.stack.bytes.is_empty() {
            crash.stack.bytes = read_parked_stack(crash.stack.sp);
        }
        debug_assert!(crash.on_module_thread, "a guarded crash reached the service thread");
        let sink = {
            let mut s = THREAD_SINK.lock().unwrap_or_else(|e| e.into_inner());
            match s.0 {
                Some(sink) => sink,
                None => {
                    s.1.push(crash);
                    continue;
                }
            }
        };
        deliver(sink, crash);
    }
}

/// The stack of a parked module thread, from its stack pointer at the fault up to 64 KiB (or the
/// end of its mapping): the thread never runs again, so the words there stay as they were at
/// the fault, and the backtrace unwinds them like the handler's copy of a guarded call's stack.
/// `process_vm_readv` stops at the first unmapped page instead of faulting.
fn read_parked_stack(sp: u64) -> Vec<u8> {
    const MAX: usize = 64 * 1024;
    let page = page_size();
    let mut bytes = vec![0u8; MAX];
    let mut got = 0usize;
    while got < MAX {
        let at = sp as usize + got;
        // Up to the next page boundary, so a short read ends exactly at the mapping's end.
        let want = (page - at % page).min(MAX - got);
        let local = libc::iovec { iov_base: bytes[got..].as_mut_ptr().cast(), iov_len: want };
        let remote = libc::iovec { iov_base: at as *mut c_void, iov_len: want };
        // SAFETY: reads our own address space into `bytes`, which has `want` bytes left at
        // `got`; process_vm_readv returns an error instead of faulting on unmapped memory.
        let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
        if n <= 0 {
            break;
        }
        got += n as usize;
        if (n as usize) < want {
            break;
        }
    }
    bytes.truncate(got);
    bytes
}

/// The byte guard.c writes to the service pipe when a report found no free slot
/// (`KML_LOST_REPORT`).
const LOST_REPORT: u8 = 0xFF;

/// How many crashes on module threads found no free report slot (the threads were still
/// parked, but their reports were lost).
pub(crate) fn thread_crashes_dropped() -> u32 {
    // SAFETY: reads an atomic counter.
    unsafe { ffi::kml_thread_crashes_dropped_count() }
}

// ---------------------------------------------------------------------------------------------
// Host callbacks.
// ---------------------------------------------------------------------------------------------

type LogSink = fn(Option<u64>, i32, *const c_char);
type TimeSink = fn(Option<u64>) -> u64;

static HOST_SINKS: RwLock<Option<(LogSink, TimeSink)>> = RwLock::new(None);

/// Sinks for the host-callback trampolines: `log(module_id, level, msg)` and
/// `get_time(module_id)`. `module_id` is the active guard's module, or the module whose text
/// holds the caller's return address, or `None`.
///
/// The sinks run with the calling thread's guard suspended: a fault in them kills the process,
/// as a fault in host code must. A panic in them aborts the process.
pub(crate) fn set_host_sinks(log: LogSink, get_time: TimeSink) {
    *HOST_SINKS.write().unwrap_or_else(|e| e.into_inner()) = Some((log, get_time));
    // SAFETY: registers two `extern "C"` adapters with matching signatures; they stay valid
    // for the life of the process.
    unsafe { ffi::kml_set_host_sinks(log_adapter, time_adapter) };
}

fn host_sinks() -> Option<(LogSink, TimeSink)> {
    *HOST_SINKS.read().unwrap_or_else(|e| e.into_inner())
}

fn module_arg(has_module: c_int, module_id: u64) -> Option<u64> {
    (has_module != 0).then_some(module_id)
}

/// Called by `kml_log_trampoline` (C), guard suspended. Not `#[no_mangle]`: the C side gets a
/// pointer, so no symbol is exported from a shared object that embeds kmodlike.
extern "C" fn log_adapter(has_module: c_int, module_id: u64, level: c_int, msg: *const c_char) {
    let Some((log, _)) = host_sinks() else { return };
    let r = std::panic::catch_unwind(|| log(module_arg(has_module, module_id), level, msg));
    if r.is_err() {
        // Unwinding into C is not allowed; a panicking host sink is a host bug: fatal.
        eprintln!("kmodlike: the host log callback panicked");
        std::process::abort();
    }
}

/// Called by `kml_get_time_trampoline` (C), guard suspended.
extern "C" fn time_adapter(has_module: c_int, module_id: u64) -> u64 {
    let Some((_, get_time)) = host_sinks() else { return monotonic_ns() };
    match std::panic::catch_unwind(|| get_time(module_arg(has_module, module_id))) {
        Ok(t) => t,
        Err(_) => {
            eprintln!("kmodlike: the host get_time callback panicked");
            std::process::abort();
        }
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid out pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64).wrapping_mul(1_000_000_000).wrapping_add(ts.tv_nsec as u64)
}

/// The `log` function pointer handed to modules: suspends the guard and calls the log sink.
pub(crate) fn log_trampoline() -> crate::interface::LogFn {
    ffi::kml_log_trampoline
}

/// The `get_time` function pointer handed to modules: suspends the guard and calls the sink
/// (without a sink: the monotonic clock in nanoseconds).
pub(crate) fn get_time_trampoline() -> crate::interface::GetTimeFn {
    ffi::kml_get_time_trampoline
}
