//! Crash reports and the process taint, for C.

use std::ffi::{c_char, c_int, c_void};
use std::time::UNIX_EPOCH;

use kmodlike::{CrashReport, Phase};

use crate::entry::{copy_to_array, copy_to_buf, run, run_code};
use crate::error::{module_error_t, ErrorSink, Failure};
use crate::loader::{module_loader_t, sink_of};
use crate::single::{current, forget_if_dead};

/// Size of `module_crash_info_t.signal_name` and `.si_code_name`, NUL included.
pub const MODULE_CRASH_CODE_NAME_MAX: usize = 32;
/// Size of `module_crash_info_t.module`, NUL included.
pub const MODULE_CRASH_MODULE_NAME_MAX: usize = 256;
/// Size of `module_crash_info_t.symbol`, NUL included.
pub const MODULE_CRASH_SYMBOL_MAX: usize = 256;
/// Size of `module_crash_info_t.path`, NUL included (`PATH_MAX`).
pub const MODULE_CRASH_PATH_MAX: usize = 4096;
/// Size of `module_crash_info_t.taint_reason`, NUL included.
pub const MODULE_CRASH_TAINT_MAX: usize = 256;

/// Where in a module's life a crash happened.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum module_crash_phase_t {
    /// In `module_init()`.
    MODULE_CRASH_IN_INIT = 0,
    /// In `module_fini()`.
    MODULE_CRASH_IN_FINI = 1,
    /// In `module_can_unload()`.
    MODULE_CRASH_IN_CAN_UNLOAD = 2,
    /// In `mod_hello()`.
    MODULE_CRASH_IN_HELLO = 3,
    /// In a guarded call (`module_loader_call()`, `module_loader_call_handle()`).
    MODULE_CRASH_IN_CALL = 4,
    /// On a thread the module started itself (no guard was active; the thread was parked).
    MODULE_CRASH_IN_THREAD = 5,
    /// In a constructor or `module_init()`, seen in the probe child process before the module
    /// was loaded into this one.
    MODULE_CRASH_IN_PROBE = 6,
}

impl From<Phase> for module_crash_phase_t {
    fn from(p: Phase) -> Self {
        use module_crash_phase_t::*;
        match p {
            // The version check runs while the module loads, before module_init.
            Phase::Init | Phase::Version => MODULE_CRASH_IN_INIT,
            Phase::Fini => MODULE_CRASH_IN_FINI,
            Phase::CanUnload => MODULE_CRASH_IN_CAN_UNLOAD,
            Phase::Hello => MODULE_CRASH_IN_HELLO,
            Phase::Call => MODULE_CRASH_IN_CALL,
            Phase::Thread => MODULE_CRASH_IN_THREAD,
            Phase::Probe => MODULE_CRASH_IN_PROBE,
        }
    }
}

/// One fatal signal raised by module code, as `module_loader_last_crash()` reports it. String
/// fields are NUL-terminated and truncated to fit.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct module_crash_info_t {
    /// The signal number (`SIGSEGV`, ...).
    pub signal: c_int,
    /// The signal's `si_code` (`SEGV_MAPERR`, `FPE_INTDIV`, `SI_TKILL`, ...).
    pub si_code: c_int,
    /// The faulting address (`si_addr`): the bad memory address for SIGSEGV and SIGBUS, the
    /// faulting instruction for SIGFPE and SIGILL, 0 for a signal sent by `abort()`/`raise()`.
    pub fault_addr: u64,
    /// The program counter when the signal arrived.
    pub pc: u64,
    /// Whether the program counter lay in the module's own code (false for a crash inside libc,
    /// such as `strlen(NULL)` or a bad `free()` called by the module).
    pub pc_in_module: bool,
    /// The program counter's offset from the module's load address (when `pc_in_module`; 0
    /// otherwise): what `addr2line -e module.so` takes.
    pub module_offset: u64,
    /// The kernel thread id of the thread that crashed.
    pub thread_id: i32,
    /// When the signal arrived: seconds since the Unix epoch.
    pub time_sec: i64,
    /// ... and nanoseconds within that second.
    pub time_nsec: i32,
    /// Where in the module's life the crash happened.
    pub phase: module_crash_phase_t,
    /// Whether this crash tainted the process (it may have left a libc lock held; see
    /// `module_loader_tainted()`).
    pub tainted: bool,
    /// The signal's name: "SIGSEGV".
    pub signal_name: [c_char; MODULE_CRASH_CODE_NAME_MAX],
    /// The `si_code`'s name: "SEGV_MAPERR".
    pub si_code_name: [c_char; MODULE_CRASH_CODE_NAME_MAX],
    /// The module's name: "hello".
    pub module: [c_char; MODULE_CRASH_MODULE_NAME_MAX],
    /// The nearest symbol to the program counter and the offset from it ("crash_segv+0x12"),
    /// or "" when unknown.
    pub symbol: [c_char; MODULE_CRASH_SYMBOL_MAX],
    /// The module's file.
    pub path: [c_char; MODULE_CRASH_PATH_MAX],
    /// Why the crash tainted the process, or "".
    pub taint_reason: [c_char; MODULE_CRASH_TAINT_MAX],
}

impl module_crash_info_t {
    fn from_report(r: &CrashReport) -> Self {
        let since = r.time.duration_since(UNIX_EPOCH).unwrap_or_default();
        let mut info = module_crash_info_t {
            signal: r.signal,
            si_code: r.code,
            fault_addr: r.fault_addr,
            pc: r.pc,
            pc_in_module: r.pc_in_module,
            module_offset: r.module_offset.unwrap_or(0),
            thread_id: r.thread_id,
            time_sec: i64::try_from(since.as_secs()).unwrap_or(i64::MAX),
            time_nsec: since.subsec_nanos() as i32,
            phase: r.phase.into(),
            tainted: r.taint.is_some(),
            signal_name: [0; MODULE_CRASH_CODE_NAME_MAX],
            si_code_name: [0; MODULE_CRASH_CODE_NAME_MAX],
            module: [0; MODULE_CRASH_MODULE_NAME_MAX],
            symbol: [0; MODULE_CRASH_SYMBOL_MAX],
            path: [0; MODULE_CRASH_PATH_MAX],
            taint_reason: [0; MODULE_CRASH_TAINT_MAX],
        };
        copy_to_array(&r.signal_name, &mut info.signal_name);
        copy_to_array(&r.code_name, &mut info.si_code_name);
        copy_to_array(&r.module, &mut info.module);
        copy_to_array(r.symbol.as_deref().unwrap_or(""), &mut info.symbol);
        copy_to_array(&r.path.to_string_lossy(), &mut info.path);
        copy_to_array(r.taint.as_deref().unwrap_or(""), &mut info.taint_reason);
        info
    }
}

/// A function run by `module_loader_call()` and `module_loader_call_handle()`: `ctx` is passed
/// through unchanged.
#[allow(non_camel_case_types)]
pub type module_call_fn_t = Option<unsafe extern "C" fn(ctx: *mut c_void)>;

/// ---- Crash-guarded calls ----------------------------------------------------------------
///
/// Run `func(ctx)` under the crash guard, on behalf of the loader's module. Use it for every
/// call into module code that might crash: `func` is typically a small host function that calls
/// the module's symbols and stores results in `*ctx`.
///
/// If `func` raises SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT or SIGSYS, execution jumps back
/// here, the module is unloaded (its `module_fini()` is not run; its code is unmapped once calls
/// into it have drained, unless a thread may still run in it: see `MODULE_LOADER_RECLAIM`), and
/// `MODULE_ERR_CRASHED` is returned; `module_loader_last_crash()` and `module_loader_last_error()` describe the crash.
/// The loader can then load a module again (a fresh instance, with fresh static data).
///
/// What a jump out of `func` skips: the C frames between this call and the fault are abandoned
/// without running any cleanup, so `func` must not hold locks or resources that the host needs
/// afterwards (a crash inside libc, such as in `malloc()`, may leave a libc lock held: the
/// process is then marked tainted, see `module_loader_tainted()`). A fault in host code called
/// from `func` is attributed to the module all the same; a fault in a host `log` or `get_time`
/// callback is not (it stays fatal).
///
/// Returns `MODULE_ERR_SUCCESS` when `func` returned, `MODULE_ERR_NOT_LOADED` when no module is
/// loaded, `MODULE_ERR_INVALID_ARGUMENT` for a NULL `func`.
///
/// # Safety
/// `loader` is NULL or a live loader; `func` is NULL or a function safe to call with `ctx`,
/// whose frames (and those of what it calls) may be abandoned at a fault without any cleanup,
/// as described above.
#[cfg(target_arch = "x86_64")]
#[no_mangle]
#[unsafe(naked)]
pub unsafe extern "C" fn module_loader_call(
    loader: *mut module_loader_t,
    func: module_call_fn_t,
    ctx: *mut c_void,
) -> module_error_t {
    // The fast path, in assembly around the guard's entry (kmodlike::__guard_entry_asm!): a
    // loader with a loaded module and a function run func(ctx) under the guard, with no lock,
    // no allocation and no reference count; everything else (NULL arguments, no module, a
    // thread's first call, a crash, a module no longer live) goes to `call_slow`, with the
    // entry's code.
    core::arch::naked_asm!(
        ".cfi_startproc",
        "test rdi, rdi",
        "jz 9f",
        "test rsi, rsi",
        "jz 9f",
        "mov rax, qword ptr [rdi + {fast}]",
        "test rax, rax",
        "jz 9f",
        // loader, func, ctx kept for the slow path; the stack is 16-byte aligned after them
        // (and a backtrace from inside the module finds its way through this frame)
        "push rdi",
        "push rsi",
        "push rdx",
        ".cfi_adjust_cfa_offset 24",
        "mov rdi, rdx",
        "mov rdx, rsi",
        "mov rsi, rax",
        kmodlike::__guard_entry_asm!(),
        "test eax, eax",
        "jnz 8f",
        // returned: done, unless the module stopped being live meanwhile (a crash elsewhere);
        // r10 is its record
        "cmp dword ptr [r10], 1",
        "jne 8f",
        "add rsp, 24",
        ".cfi_adjust_cfa_offset -24",
        "ret",
        ".cfi_adjust_cfa_offset 24",
        "8:",
        "mov ecx, eax",
        "pop rdx",
        "pop rsi",
        "pop rdi",
        ".cfi_adjust_cfa_offset -24",
        "jmp {slow}",
        "9:",
        "mov ecx, -1",
        "jmp {slow}",
        ".cfi_endproc",
        fast = const std::mem::offset_of!(module_loader_t, fast),
        restore = sym kmodlike::__kml_fast_restore_mask,
        slow = sym call_slow,
    )
}

// Where the fast entry is not x86_64's: the same, through the guard's portable entry. (Not a
// doc comment: the header declares the function once, from the x86_64 definition.)
/// cbindgen:ignore
///
/// # Safety
/// As above.
#[cfg(not(target_arch = "x86_64"))]
#[no_mangle]
pub unsafe extern "C" fn module_loader_call(
    loader: *mut module_loader_t,
    func: module_call_fn_t,
    ctx: *mut c_void,
) -> module_error_t {
    // SAFETY: forwarded contract.
    unsafe { locked_call(loader, func, ctx) }
}

/// `module_loader_call()` past its fast path: `code` is the entry's (0 returned but the module
/// is no longer live, 1 crashed, 2 or 3 not run), or -1 when the fast path did not apply.
///
/// # Safety
/// As `module_loader_call()`; `code` is what the entry left on this thread just now.
#[cfg(target_arch = "x86_64")]
unsafe extern "C" fn call_slow(
    loader: *mut module_loader_t,
    func: module_call_fn_t,
    ctx: *mut c_void,
    code: c_int,
) -> module_error_t {
    // SAFETY: the caller passes NULL or a live loader.
    match (code, unsafe { loader.as_ref() }, func) {
        (0 | 1, Some(l), Some(f)) => {
            // SAFETY: the entry's code, on this thread, just now.
            let r = unsafe { kmodlike::FastResult::from_entry_code(code) };
            // SAFETY: the function ran; `r` is its outcome.
            unsafe { after_fast_call(l, r, f, ctx) }
        }
        // SAFETY: forwarded contract.
        _ => unsafe { locked_call(loader, func, ctx) },
    }
}

const CALL: &str = "module_loader_call";

/// `module_loader_call()` after a fast call that ran and did not simply return: a crash to
/// record, or the module's death on another thread meanwhile.
///
/// # Safety
/// `r` is this thread's outcome of the loader's `FastEntry::call(f, ctx)`, just now.
#[cfg(target_arch = "x86_64")]
#[cold]
#[inline(never)]
unsafe fn after_fast_call(
    l: &module_loader_t,
    r: kmodlike::FastResult,
    f: unsafe extern "C" fn(*mut c_void),
    ctx: *mut c_void,
) -> module_error_t {
    run_code(CALL, &l.shared.errors, || {
        let h = current(l, CALL)?;
        // A crash is the instance's it happened in; records are pooled, so the entry alone does
        // not say which instance that was.
        if r.crashed_in().is_some_and(|id| id != h.id()) {
            return Err(Failure::new(
                module_error_t::MODULE_ERR_NOT_LOADED,
                format!(
                    "{CALL}: the call crashed, and its module was unloaded before the crash \
                     could be recorded"
                ),
            ));
        }
        // SAFETY: the function ran (it is not run again); `r` is its outcome.
        match unsafe { h.finish(r, f, ctx) } {
            Ok(()) => Ok(()),
            Err(e) => {
                forget_if_dead(l, &h, &e);
                Err(l.shared.fail(e))
            }
        }
    })
}

/// `module_loader_call()` under the slot's lock: bad arguments, no module, a module that is
/// not live (an unload deciding: its outcome is waited for).
///
/// # Safety
/// As `module_loader_call()`.
#[cold]
#[inline(never)]
unsafe fn locked_call(
    loader: *mut module_loader_t,
    func: module_call_fn_t,
    ctx: *mut c_void,
) -> module_error_t {
    // SAFETY: the caller passes NULL or a live loader.
    let l = unsafe { loader.as_ref() };
    run_code(CALL, sink_of(l), || {
        let l = l.ok_or_else(|| Failure::invalid(format!("{CALL}: loader is NULL")))?;
        let f = func.ok_or_else(|| Failure::invalid(format!("{CALL}: func is NULL")))?;
        let h = current(l, CALL)?;
        // SAFETY: the caller promises f is safe to call with ctx. No Rust frame with a
        // destructor lies between the guard's jump point (inside call_raw) and f.
        match unsafe { h.call_raw(f, ctx) } {
            Ok(()) => Ok(()),
            Err(e) => {
                forget_if_dead(l, &h, &e);
                Err(l.shared.fail(e))
            }
        }
    })
}

/// Fill `*info` with the loader's most recent crash: one returned as `MODULE_ERR_CRASHED` by
/// any call on the loader or its handles, or one on a thread a module of the loader started.
/// `module_loader_last_error()` has the same report as text.
///
/// Returns `MODULE_ERR_NOT_FOUND` when no module of this loader has crashed.
///
/// # Safety
/// `loader` is NULL or a live loader; `info` is NULL or valid for writing one
/// `module_crash_info_t`.
#[no_mangle]
pub unsafe extern "C" fn module_loader_last_crash(
    loader: *const module_loader_t,
    info: *mut module_crash_info_t,
) -> module_error_t {
    const CALL: &str = "module_loader_last_crash";
    // SAFETY: the caller passes NULL or a live loader.
    let l = unsafe { loader.as_ref() };
    run_code(CALL, sink_of(l), || {
        let l = l.ok_or_else(|| Failure::invalid(format!("{CALL}: loader is NULL")))?;
        if info.is_null() {
            return Err(Failure::invalid(format!("{CALL}: info is NULL")));
        }
        // The newest of what our calls saw and what the core recorded (which includes crashes
        // on module threads, reported by no call).
        let ours = l.shared.last_crash();
        let core = l.loader.crashes().into_iter().next();
        let newest = match (ours, core) {
            (Some(a), Some(b)) => Some(if b.time > a.time { b } else { a }),
            (a, b) => a.or(b),
        };
        let report = newest.ok_or_else(|| {
            Failure::new(
                module_error_t::MODULE_ERR_NOT_FOUND,
                format!("{CALL}: no module of this loader has crashed"),
            )
        })?;
        // SAFETY: checked non-NULL; the caller promises it is valid for one write.
        unsafe { info.write(module_crash_info_t::from_report(&report)) };
        Ok(())
    })
}

/// Whether the process is tainted: a module crashed in a way that may have left libc in a bad
/// state (the program counter was in libc or the dynamic linker, or `abort()` was called from
/// inside `malloc()`), as the Linux kernel taints itself after an oops. The taint never clears:
/// the operator decides whether to restart the process.
///
/// When tainted and `reason` is not NULL, the first such crash ("module NAME: REASON") is
/// copied into `reason` (at most `len` bytes, NUL included, truncated to fit). When not tainted
/// and `reason` is not NULL, `reason` is set to "".
///
/// # Safety
/// `reason` is NULL or valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn module_loader_tainted(reason: *mut c_char, len: usize) -> bool {
    let r = run("module_loader_tainted", ErrorSink::none(), || {
        let taint = kmodlike::taint();
        let text = taint.as_ref().map(|t| format!("module {}: {}", t.module, t.reason));
        // SAFETY: the caller promises reason is NULL or holds len bytes.
        unsafe { copy_to_buf(text.as_deref().unwrap_or(""), reason, len) };
        Ok(taint.is_some())
    });
    r.unwrap_or(false)
}
