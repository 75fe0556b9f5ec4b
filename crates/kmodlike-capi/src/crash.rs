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
/// Size of `module_crash_frame_t.object`, NUL included.
pub const MODULE_CRASH_OBJECT_MAX: usize = 256;
/// Size of `module_crash_frame_t.build_id` (a hexadecimal GNU build id), NUL included.
pub const MODULE_CRASH_BUILD_ID_MAX: usize = 72;
/// An offset that is not known (`module_crash_frame_t.object_offset`, `.symbol_offset`).
pub const MODULE_CRASH_NO_OFFSET: u64 = u64::MAX;

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

/// What `module_loader_last_crash_ext()` adds to `module_crash_info_t`. The caller sets
/// `struct_size` to `sizeof(module_crash_info_ext_t)` before the call: fields are only ever
/// added at the end, and the call writes no byte past `struct_size`, so a program built against
/// this header keeps working with a later library. String fields are NUL-terminated and
/// truncated to fit.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct module_crash_info_ext_t {
    /// Set by the caller: `sizeof(module_crash_info_ext_t)`. Left unchanged by the call.
    pub struct_size: usize,
    /// For a crash seen by the probe (`MODULE_CRASH_IN_PROBE`): the probe child's pid (the
    /// report's `thread_id` is a thread of that process); 0 otherwise.
    pub probe_pid: u32,
    /// The number of frames in the crash's backtrace (0 when none could be taken); read them
    /// with `module_loader_last_crash_frames()`.
    pub frame_count: usize,
    /// The function the guarded call ran ("crash_now"), when the crash happened in a call and
    /// the function has a name; "" otherwise.
    pub called: [c_char; MODULE_CRASH_SYMBOL_MAX],
    /// For a SIGABRT glibc raised after one of its checks failed: the message it printed
    /// ("double free or corruption (!prev)"); "" otherwise.
    pub abort_message: [c_char; MODULE_CRASH_SYMBOL_MAX],
    /// Whether the call was not a crash but ran past its time limit and was interrupted
    /// (`MODULE_ERR_TIMED_OUT`): `pc`, `symbol` and the frames say where it was.
    pub timed_out: bool,
    /// For a call that timed out: how long it ran, in milliseconds; 0 otherwise.
    pub ran_ms: u64,
}

impl module_crash_info_ext_t {
    fn from_report(r: &CrashReport) -> Self {
        let mut ext = module_crash_info_ext_t {
            struct_size: std::mem::size_of::<Self>(),
            probe_pid: r.probe_pid.unwrap_or(0),
            frame_count: r.frames.len(),
            called: [0; MODULE_CRASH_SYMBOL_MAX],
            abort_message: [0; MODULE_CRASH_SYMBOL_MAX],
            timed_out: r.timeout.is_some(),
            ran_ms: r.timeout.map_or(0, |t| t.ran.as_millis() as u64),
        };
        copy_to_array(r.called.as_deref().unwrap_or(""), &mut ext.called);
        copy_to_array(r.abort_message.as_deref().unwrap_or(""), &mut ext.abort_message);
        ext
    }
}

/// One frame of a crash's backtrace, as `module_loader_last_crash_frames()` reports it. String
/// fields are NUL-terminated and truncated to fit; "" when unknown.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct module_crash_frame_t {
    /// The address: the program counter for frame 0, a return address for the others.
    pub pc: u64,
    /// `pc` minus the load address of the object holding it (what `addr2line -e OBJECT` takes),
    /// or `MODULE_CRASH_NO_OFFSET`.
    pub object_offset: u64,
    /// `pc` minus the address of `symbol`, or `MODULE_CRASH_NO_OFFSET`.
    pub symbol_offset: u64,
    /// Found without unwind information (frame pointers or a stack scan): a guess.
    pub guessed: bool,
    /// In the crashed module's own code.
    pub in_module: bool,
    /// The file name of the object holding `pc` ("libc.so.6").
    pub object: [c_char; MODULE_CRASH_OBJECT_MAX],
    /// The nearest symbol before `pc`, demangled ("crash_now").
    pub symbol: [c_char; MODULE_CRASH_SYMBOL_MAX],
    /// The object's GNU build id, in hexadecimal.
    pub build_id: [c_char; MODULE_CRASH_BUILD_ID_MAX],
}

impl module_crash_frame_t {
    fn from_frame(f: &kmodlike::Frame) -> Self {
        let mut out = module_crash_frame_t {
            pc: f.pc,
            object_offset: f.object_offset.unwrap_or(MODULE_CRASH_NO_OFFSET),
            symbol_offset: f.symbol_offset.unwrap_or(MODULE_CRASH_NO_OFFSET),
            guessed: f.guessed,
            in_module: f.in_module,
            object: [0; MODULE_CRASH_OBJECT_MAX],
            symbol: [0; MODULE_CRASH_SYMBOL_MAX],
            build_id: [0; MODULE_CRASH_BUILD_ID_MAX],
        };
        copy_to_array(f.object.as_deref().unwrap_or(""), &mut out.object);
        copy_to_array(f.symbol.as_deref().unwrap_or(""), &mut out.symbol);
        copy_to_array(f.build_id.as_deref().unwrap_or(""), &mut out.build_id);
        out
    }
}

/// A report's backtrace as text, one frame a line, innermost first, like `gdb bt`:
/// `#0 0x7f12... crash_now+0x12 (in mod.so +0x1123)`, `??` for an unknown symbol, ` [guessed]`
/// after a frame found without unwind information. Empty without frames.
pub(crate) fn backtrace_text(frames: &[kmodlike::Frame]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for (i, f) in frames.iter().enumerate() {
        let _ = write!(out, "#{i} {:#x} ", f.pc);
        match (&f.symbol, f.symbol_offset) {
            (Some(sym), Some(off)) => {
                let _ = write!(out, "{sym}+{off:#x}");
            }
            (Some(sym), None) => out.push_str(sym),
            (None, _) => out.push_str("??"),
        }
        match (&f.object, f.object_offset) {
            (Some(obj), Some(off)) => {
                let _ = write!(out, " (in {obj} +{off:#x})");
            }
            (Some(obj), None) => {
                let _ = write!(out, " (in {obj})");
            }
            (None, _) => {}
        }
        if f.guessed {
            out.push_str(" [guessed]");
        }
        out.push('\n');
    }
    out
}

/// The newest crash of the loader: what our calls saw, or what the core recorded (which
/// includes crashes on module threads, reported by no call).
fn newest_crash(l: &module_loader_t, call: &str) -> Result<CrashReport, Failure> {
    let ours = l.shared.last_crash();
    let core = l.loader.crashes().into_iter().next();
    let newest = match (ours, core) {
        (Some(a), Some(b)) => Some(if b.time > a.time { b } else { a }),
        (a, b) => a.or(b),
    };
    newest.ok_or_else(|| {
        Failure::new(
            module_error_t::MODULE_ERR_NOT_FOUND,
            format!("{call}: no module of this loader has crashed"),
        )
    })
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
        // a call time limit: the slow path sets the deadline
        "cmp dword ptr [rdi + {timeout}], 0",
        "jne 9f",
        // loader, func, ctx kept for the slow path; the stack is 16-byte aligned after them
        // (and a backtrace from inside the module finds its way through this frame)
        "push rdi",
        "push rsi",
        "push rdx",
        ".cfi_adjust_cfa_offset 24",
        "mov rdi, rdx",
        "mov rdx, rsi",
        "mov rsi, rax",
        "xor r11d, r11d",
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
        timeout = const std::mem::offset_of!(module_loader_t, timeout_ms),
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
        let h = match current(l, CALL) {
            Ok(h) => h,
            // The function ran and returned; its module was unloaded on another thread right
            // after (the entry saw it no longer live): the call itself succeeded.
            Err(_) if r.returned() => return Ok(()),
            Err(e) => return Err(e),
        };
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
        let report = newest_crash(l, CALL)?;
        // SAFETY: checked non-NULL; the caller promises it is valid for one write.
        unsafe { info.write(module_crash_info_t::from_report(&report)) };
        Ok(())
    })
}

/// Fill `*info` and `*ext` with the loader's most recent crash (the one
/// `module_loader_last_crash()` reports): `*info` as that call does (`info` may be NULL to skip
/// it), `*ext` with what was added since: the function the call ran, the probe child's pid and
/// the number of frames of the backtrace. Set `ext->struct_size = sizeof *ext` first.
///
/// ```c
/// module_crash_info_ext_t ext = { .struct_size = sizeof ext };
/// if (module_loader_last_crash_ext(loader, NULL, &ext) == MODULE_ERR_SUCCESS && ext.called[0])
///     printf("crashed in %s, %zu frames\n", ext.called, ext.frame_count);
/// ```
///
/// Returns `MODULE_ERR_NOT_FOUND` when no module of this loader has crashed,
/// `MODULE_ERR_INVALID_ARGUMENT` when `ext` is NULL or `ext->struct_size` is smaller than the
/// first version of the struct (this one).
///
/// # Safety
/// `loader` is NULL or a live loader; `info` is NULL or valid for writing one
/// `module_crash_info_t`; `ext` is NULL or valid for reading and writing `ext->struct_size`
/// bytes.
#[no_mangle]
pub unsafe extern "C" fn module_loader_last_crash_ext(
    loader: *const module_loader_t,
    info: *mut module_crash_info_t,
    ext: *mut module_crash_info_ext_t,
) -> module_error_t {
    const CALL: &str = "module_loader_last_crash_ext";
    // SAFETY: the caller passes NULL or a live loader.
    let l = unsafe { loader.as_ref() };
    run_code(CALL, sink_of(l), || {
        let l = l.ok_or_else(|| Failure::invalid(format!("{CALL}: loader is NULL")))?;
        if ext.is_null() {
            return Err(Failure::invalid(format!("{CALL}: ext is NULL")));
        }
        // SAFETY: non-NULL; the caller promises it holds at least struct_size bytes, and the
        // field comes first (read alone: a smaller struct must not be read as a whole).
        let size = unsafe { std::ptr::addr_of!((*ext).struct_size).read_unaligned() };
        let ours = std::mem::size_of::<module_crash_info_ext_t>();
        if size < ours {
            return Err(Failure::invalid(format!(
                "{CALL}: ext->struct_size is {size}, less than sizeof(module_crash_info_ext_t) \
                 ({ours}): set it to sizeof *ext"
            )));
        }
        let report = newest_crash(l, CALL)?;
        if !info.is_null() {
            // SAFETY: non-NULL; the caller promises it is valid for one write.
            unsafe { info.write(module_crash_info_t::from_report(&report)) };
        }
        let mut out = module_crash_info_ext_t::from_report(&report);
        // The caller's size stays: a later library writing a longer struct still writes only
        // the fields this one knows (here all of them, `size >= ours`).
        out.struct_size = size;
        // SAFETY: non-NULL, valid for `size >= ours` bytes by the caller's promise.
        unsafe { ext.write(out) };
        Ok(())
    })
}

/// Copy the backtrace of the loader's most recent crash (the one `module_loader_last_crash()`
/// reports), innermost first (frame 0 holds the program counter), into `frames`: at most `cap`
/// frames. `*count` is set to the number of frames the backtrace has, which may exceed `cap`
/// (call again with a larger array), and is 0 when no backtrace could be taken. `frames` may be
/// NULL when `cap` is 0, to ask for the count alone.
///
/// Returns `MODULE_ERR_NOT_FOUND` when no module of this loader has crashed,
/// `MODULE_ERR_INVALID_ARGUMENT` when `count` is NULL, or `frames` is NULL and `cap` is not 0.
///
/// # Safety
/// `loader` is NULL or a live loader; `frames` is NULL or valid for writing `cap`
/// `module_crash_frame_t`; `count` is NULL or valid for writing one `size_t`.
#[no_mangle]
pub unsafe extern "C" fn module_loader_last_crash_frames(
    loader: *const module_loader_t,
    frames: *mut module_crash_frame_t,
    cap: usize,
    count: *mut usize,
) -> module_error_t {
    const CALL: &str = "module_loader_last_crash_frames";
    // SAFETY: the caller passes NULL or a live loader.
    let l = unsafe { loader.as_ref() };
    run_code(CALL, sink_of(l), || {
        let l = l.ok_or_else(|| Failure::invalid(format!("{CALL}: loader is NULL")))?;
        if count.is_null() {
            return Err(Failure::invalid(format!("{CALL}: count is NULL")));
        }
        if frames.is_null() && cap != 0 {
            return Err(Failure::invalid(format!("{CALL}: frames is NULL but cap is {cap}")));
        }
        let report = newest_crash(l, CALL)?;
        for (i, f) in report.frames.iter().take(cap).enumerate() {
            // SAFETY: i < cap, and the caller promises frames holds cap entries.
            unsafe { frames.add(i).write(module_crash_frame_t::from_frame(f)) };
        }
        // SAFETY: checked non-NULL; the caller promises it is valid for one write.
        unsafe { count.write(report.frames.len()) };
        Ok(())
    })
}

/// Write the backtrace of the loader's most recent crash as text into `buf` (at most `len`
/// bytes, NUL included, truncated to fit): one frame a line, innermost first, like gdb's `bt`:
///
/// ```text
/// #0 0x7f3572ae342e crash_now+0x12 (in crash_segv.so +0x142e)
/// #1 0x55d0c1e2a0b1 ?? (in host +0x2a0b1) [guessed]
/// ```
///
/// `??` marks an unknown symbol, `[guessed]` a frame found without unwind information. The
/// text is "" when no backtrace could be taken.
///
/// Returns `MODULE_ERR_NOT_FOUND` when no module of this loader has crashed,
/// `MODULE_ERR_INVALID_ARGUMENT` when `buf` is NULL or `len` is 0.
///
/// # Safety
/// `loader` is NULL or a live loader; `buf` is NULL or valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn module_loader_last_crash_backtrace(
    loader: *const module_loader_t,
    buf: *mut c_char,
    len: usize,
) -> module_error_t {
    const CALL: &str = "module_loader_last_crash_backtrace";
    // SAFETY: the caller passes NULL or a live loader.
    let l = unsafe { loader.as_ref() };
    run_code(CALL, sink_of(l), || {
        let l = l.ok_or_else(|| Failure::invalid(format!("{CALL}: loader is NULL")))?;
        if buf.is_null() || len == 0 {
            return Err(Failure::invalid(format!("{CALL}: buf is NULL or len is 0")));
        }
        let report = newest_crash(l, CALL)?;
        // SAFETY: checked non-NULL; the caller promises it holds len bytes.
        unsafe { copy_to_buf(&backtrace_text(&report.frames), buf, len) };
        Ok(())
    })
}

/// Whether the process is tainted: a module crashed in a way that may have left libc in a bad
/// state (the program counter was in libc or the dynamic linker, or `abort()` was called from
/// inside `malloc()`), as the Linux kernel taints itself after an oops. The taint stays until it
/// is acknowledged (`module_loader_clear_taint()`); the operator decides whether to restart
/// the process.
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

/// Acknowledge the process's taint: the taint verdict is cleared (`module_loader_tainted()`
/// returns false until a later crash taints the process again), and the acknowledgement, by
/// "api", is recorded with the time (in the process-wide history a daemon shows in its status).
///
/// When `reason` is not NULL, the acknowledged taint ("module NAME: REASON") is copied into it
/// (at most `len` bytes, NUL included, truncated to fit), or "" when there was none.
///
/// Returns `MODULE_ERR_SUCCESS` when a taint was acknowledged, `MODULE_ERR_NOT_FOUND` when the
/// process was not tainted.
///
/// # Safety
/// `reason` is NULL or valid for writing `len` bytes.
#[no_mangle]
pub unsafe extern "C" fn module_loader_clear_taint(
    reason: *mut c_char,
    len: usize,
) -> module_error_t {
    const CALL: &str = "module_loader_clear_taint";
    run_code(CALL, ErrorSink::none(), || {
        let ack = kmodlike::acknowledge_taint("api");
        let text = ack.as_ref().map(|a| format!("module {}: {}", a.taint.module, a.taint.reason));
        // SAFETY: the caller promises reason is NULL or holds len bytes.
        unsafe { copy_to_buf(text.as_deref().unwrap_or(""), reason, len) };
        match ack {
            Some(_) => Ok(()),
            None => Err(Failure::new(
                module_error_t::MODULE_ERR_NOT_FOUND,
                format!("{CALL}: the process is not tainted"),
            )),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backtrace_text_is_one_frame_a_line_innermost_first_guesses_marked() {
        let frames = [
            kmodlike::Frame {
                pc: 0x7f00_0000_1123,
                object: Some("mod.so".into()),
                object_offset: Some(0x1123),
                symbol: Some("crash_now".into()),
                symbol_offset: Some(0x12),
                in_module: true,
                ..Default::default()
            },
            kmodlike::Frame { pc: 0x5600_0000_2000, guessed: true, ..Default::default() },
        ];
        assert_eq!(
            backtrace_text(&frames),
            "#0 0x7f0000001123 crash_now+0x12 (in mod.so +0x1123)\n#1 0x560000002000 ?? [guessed]\n"
        );
        assert_eq!(backtrace_text(&[]), "");
        let c = module_crash_frame_t::from_frame(&frames[1]);
        assert_eq!(
            (c.object_offset, c.symbol_offset),
            (MODULE_CRASH_NO_OFFSET, MODULE_CRASH_NO_OFFSET)
        );
        assert!(c.guessed && !c.in_module && c.symbol[0] == 0);
    }
}
