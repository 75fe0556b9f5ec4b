//! Bindings to the C shim (`guard.c`). Nothing outside `guard` sees these.

use std::ffi::{c_char, c_int, c_uint, c_void};

/// Number of stack words the handler keeps for a raised signal (`KML_STACK_WORDS`).
pub(super) const STACK_WORDS: usize = 32;
/// `KML_CAUSE_EXIT`: the module called `exit`/`_exit` in a guarded call.
pub(super) const CAUSE_EXIT: u32 = 1;

/// `struct kml_raw_crash`: must match guard.c field for field (checked by a unit test
/// against `kml_raw_crash_size`).
#[repr(C)]
#[derive(Clone, Copy)]
pub(super) struct CRawCrash {
    pub signo: i32,
    pub code: i32,
    pub addr: u64,
    pub pc: u64,
    pub sp: u64,
    pub module_id: u64,
    pub time_sec: i64,
    pub time_nsec: i64,
    pub tid: i32,
    pub on_module_thread: i32,
    pub n_stack_words: u32,
    /// `KML_CAUSE_*`: 0 a fatal signal, 1 the module called `exit` (`code` = its status).
    pub cause: u32,
    pub stack_words: [u64; STACK_WORDS],
    /// Frame pointer (and, on aarch64, link register) at the fault.
    pub fp: u64,
    pub lr: u64,
    /// The handler's copy of the faulting stack from `sp`: `copy_len` bytes at `copy_buf`.
    pub copy_buf: u64,
    pub copy_len: u32,
    pub copy_pad: u32,
    /// Callee-saved registers at the fault (`KML_SAVED_REGS`).
    pub saved_regs: [u64; SAVED_REGS],
    /// For a SIGABRT: the `__abort_msg` buffer `abort_msg` was copied from, or 0.
    pub abort_msg_ptr: u64,
    /// The arena whose lock `kml_crash_release_arena` released, or 0.
    pub arena_released: u64,
    /// glibc's abort message, NUL-terminated (`KML_ABORT_MSG` bytes).
    pub abort_msg: [u8; ABORT_MSG],
    /// `KML_CAUSE_TIMEOUT`: the call's start, deadline and interrupt (monotonic ns).
    pub call_start: u64,
    pub call_deadline: u64,
    pub call_stopped: u64,
}

/// `KML_CAUSE_TIMEOUT`: the call overran its deadline and the interrupt signal ended it.
pub(super) const CAUSE_TIMEOUT: u32 = 2;

/// `struct kml_inflight`: one guarded call in flight (fast.c's `kml_calls_scan`).
#[repr(C)]
#[derive(Clone, Copy, Default, Debug)]
pub(super) struct CInFlight {
    pub tid: i32,
    /// Its slot, or -1 for the thread's innermost `sigsetjmp` call with a deadline.
    pub index: i32,
    /// Host callbacks running on the thread.
    pub suspended: u32,
    pub pad: u32,
    pub module_id: u64,
    pub deadline: u64,
    pub soft: u64,
    pub start: u64,
    pub func: u64,
    /// Where the interrupt handler last let the thread run on in library code, or 0.
    pub waited_pc: u64,
    /// How many times it did.
    pub waits: u64,
}

/// `KML_SAVED_REGS`.
pub(super) const SAVED_REGS: usize = 10;
/// `KML_ABORT_MSG`.
pub(super) const ABORT_MSG: usize = 160;

/// Most threads `kml_sample_threads` samples at once (`KML_SAMPLE_SLOTS`).
pub(super) const SAMPLE_SLOTS: usize = 64;
/// `kml_sample_threads` statuses (`KML_SAMPLE_*`).
pub(super) const SAMPLE_OK: i32 = 1;
pub(super) const SAMPLE_NO_ANSWER: i32 = 0;
pub(super) const SAMPLE_GONE: i32 = -1;

/// `void (*)(int has_module, uint64_t module_id, int level, const char *msg)`.
pub(super) type CLogSink = extern "C" fn(c_int, u64, c_int, *const c_char);
/// `uint64_t (*)(int has_module, uint64_t module_id)`.
pub(super) type CTimeSink = extern "C" fn(c_int, u64) -> u64;

/// `kml_interrupt_call`: interrupt now, whatever the call's deadline (`unload --force`).
pub(super) const INTERRUPT_NOW: c_int = 1;
/// `kml_interrupt_call`: end the call even while the thread runs library code outside the
/// module (the handler waits for it to come back otherwise).
pub(super) const INTERRUPT_INSIST: c_int = 2;

extern "C" {
    pub(super) fn kml_fast_install(why: *mut *const c_char) -> c_int;
    #[cfg(target_arch = "x86_64")]
    pub(super) fn kml_fast_register_thread() -> c_int;
    pub(super) fn kml_fast_calls_in(m: *const super::GuardModule) -> u32;
    #[cfg(target_arch = "x86_64")]
    pub(super) fn kml_fast_take_crash(out: *mut CRawCrash);
    /// Called by the fast entry when the module changed the signal mask in the call.
    #[cfg(target_arch = "x86_64")]
    pub fn kml_fast_restore_mask(slot: *mut c_void, code: c_int) -> c_int;
    pub(super) fn kml_raw_crash_size() -> usize;
    /// Finds glibc's main arena and `__abort_msg` (arena.c); 0 with `why` when unavailable.
    pub(super) fn kml_arena_discover(why: *mut *const c_char) -> c_int;
    /// After the jump, before anything allocates: releases the arena lock the crashed call held
    /// when glibc aborted under it (arena.c).
    pub(super) fn kml_crash_release_arena(c: *mut CRawCrash) -> u64;
    pub(super) fn kml_stack_copy_alloc() -> *mut u8;
    pub(super) fn kml_stack_copy_free(p: *mut u8);
    pub(super) fn kml_install() -> c_int;
    pub(super) fn kml_guard_call(
        f: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
        module_id: u64,
        out: *mut CRawCrash,
        stack_copy: *mut u8,
        deadline: *const super::deadline::Deadline,
    ) -> c_int;
    pub(super) fn kml_deadline_pending(at: u64);
    pub(super) fn kml_calls_scan(out: *mut CInFlight, cap: u32) -> u32;
    /// `how`: [`INTERRUPT_NOW`] and [`INTERRUPT_INSIST`] (shim.h's `KML_INTERRUPT_*`).
    pub(super) fn kml_interrupt_call(tid: i32, index: i32, expect: u64, how: c_int) -> c_int;
    pub(super) fn kml_claim_soft(tid: i32, index: i32, soft: u64) -> c_int;
    pub(super) fn kml_interrupt_install(signo: c_int) -> c_int;
    pub(super) fn kml_stack_copy_size() -> usize;
    #[cfg(test)]
    pub(super) fn kml_guard_active() -> c_int;
    pub(super) fn kml_register_module_text(module_id: u64, ranges: *const u64, n: u32) -> c_int;
    pub(super) fn kml_text_stats(
        used: *mut u32,
        hwm: *mut u32,
        chunks: *mut u32,
        capacity: *mut u32,
    );
    pub(super) fn kml_unregister_module(module_id: u64);
    #[cfg(test)]
    pub(super) fn kml_module_at(addr: u64, module_id: *mut u64) -> c_int;
    pub(super) fn kml_refresh_code_ranges();
    pub(super) fn kml_code_ranges_after_load(ranges: *const u64, n: u32);
    pub(super) fn kml_set_crash_pipe(read_fd: c_int, write_fd: c_int);
    pub(super) fn kml_is_parked(tid: i32) -> c_int;
    pub(super) fn kml_sample_install(signo: c_int) -> c_int;
    pub(super) fn kml_sample_threads(
        tids: *const i32,
        n: u32,
        timeout_ms: c_int,
        pcs: *mut u64,
        sps: *mut u64,
        status: *mut i32,
    ) -> c_int;
    pub(super) fn kml_looks_like_return(w: u64) -> c_int;
    pub(super) fn kml_atfork_prepare();
    pub(super) fn kml_atfork_parent();
    pub(super) fn kml_atfork_child();
    pub(super) fn kml_take_thread_crash(index: u32, out: *mut CRawCrash) -> c_int;
    pub(super) fn kml_thread_crashes_dropped_count() -> c_uint;
    pub(super) fn kml_set_host_sinks(log: CLogSink, get_time: CTimeSink);
    pub(super) fn kml_log_trampoline(level: c_int, msg: *const c_char);
    pub(super) fn kml_get_time_trampoline() -> u64;
}
