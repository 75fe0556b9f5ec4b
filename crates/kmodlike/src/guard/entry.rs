//! The guarded call of a module function: the fast entry (`fast_x86_64.S`, `fast.c`) and its
//! Rust side: the per-module record it reads, the slow path of a thread's first call, and the
//! drain an unload waits on.
//!
//! A call costs a function call: the entry writes `{module, frame, landing}` into this thread's
//! slot with plain stores, checks the module's state with a plain load and calls. No locked
//! instruction, no fence, no system call. What that leaves to others:
//!
//! - **Unload** stores the module's new state, then [`calls_in_flight`] runs
//!   `membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED)` and scans every thread's slots: a caller
//!   either shows in the scan, or its state check comes after the barrier and sees the module
//!   is no longer live (it returns [`Outcome::NotLive`] without running anything).
//! - **A crash** resumes the entry's landing pad through a glibc `sigjmp_buf` built by the
//!   handler and glibc's own `siglongjmp` (its cleanup regions run: the stdio lock of a crash
//!   inside `printf` is released). The layout is glibc's private business: it is checked at
//!   start-up against what glibc's `__sigsetjmp` stores, and where it differs, or on another
//!   architecture, every call takes the per-call `sigsetjmp` path ([`super::call`]) and counts
//!   itself in and out with atomics instead ([`GuardEntry::Sigsetjmp`] says why).

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};

use super::deadline::Deadline;
use super::{ffi, RawCrash};

/// The state value of a callable module (`ModuleState::Live`; `KML_LIVE` in the entry).
pub(crate) const LIVE: u32 = 1;

/// A module as the entry sees it (`struct kml_gmod`, field for field).
///
/// Records are pooled and never freed: a pointer to one that outlived its module (a C caller's
/// race with an unload) still points to a record, never to freed memory.
#[repr(C)]
pub(crate) struct GuardModule {
    /// The module's `ModuleState`; the entry runs a call only when it is [`LIVE`].
    pub state: AtomicU32,
    _pad: u32,
    /// The module instance's id, for crash reports.
    pub id: AtomicU64,
    /// Calls made. The entry bumps it with a plain add (no locked instruction): calls made at
    /// the same moment on several threads may be counted once.
    pub calls: AtomicU64,
    /// Calls of the `sigsetjmp` path entered and left (that path has no slot to scan).
    slow_entered: AtomicU64,
    slow_left: AtomicU64,
}

static POOL: Mutex<Vec<&'static GuardModule>> = Mutex::new(Vec::new());

impl GuardModule {
    /// A record for a new module instance `id`, in state 0 (loading).
    pub(crate) fn acquire(id: u64) -> &'static GuardModule {
        let reused = POOL.lock().unwrap_or_else(|e| e.into_inner()).pop();
        let m = reused.unwrap_or_else(|| {
            Box::leak(Box::new(GuardModule {
                state: AtomicU32::new(0),
                _pad: 0,
                id: AtomicU64::new(0),
                calls: AtomicU64::new(0),
                slow_entered: AtomicU64::new(0),
                slow_left: AtomicU64::new(0),
            }))
        });
        m.state.store(0, Ordering::SeqCst);
        m.id.store(id, Ordering::Relaxed);
        m.calls.store(0, Ordering::Relaxed);
        m.slow_entered.store(0, Ordering::Relaxed);
        m.slow_left.store(0, Ordering::Relaxed);
        m
    }

    /// Give the record back (its module is gone and no call can be in it).
    pub(crate) fn release(m: &'static GuardModule, unloaded: u32) {
        m.state.store(unloaded, Ordering::SeqCst);
        POOL.lock().unwrap_or_else(|e| e.into_inner()).push(m);
    }
}

/// How a guarded call ended.
pub(crate) enum Outcome {
    /// The function returned.
    Returned,
    /// It raised a fatal signal (or its module called `exit`).
    Crashed(Box<RawCrash>),
    /// It overran its deadline and the interrupt signal ended it (`timeout` is set).
    TimedOut(Box<RawCrash>),
    /// Nothing ran: the module is not live.
    NotLive,
}

impl Outcome {
    /// A call the handler ended: a crash, or a timeout.
    pub(crate) fn ended(raw: Box<RawCrash>) -> Outcome {
        if raw.timeout.is_some() {
            Outcome::TimedOut(raw)
        } else {
            Outcome::Crashed(raw)
        }
    }
}

/// Which entry guarded calls take in this process.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GuardEntry {
    /// The fast entry: slots written with plain stores, drained with `membarrier`.
    Fast,
    /// A `sigsetjmp` per call, and why the fast entry is off.
    Sigsetjmp(String),
}

static ENTRY: OnceLock<GuardEntry> = OnceLock::new();

/// Decide the entry (once, from [`super::install`], before the handlers go in).
pub(super) fn choose() -> &'static GuardEntry {
    ENTRY.get_or_init(|| {
        let mut why: *const std::ffi::c_char = std::ptr::null();
        // SAFETY: normal context, once; `why` receives a static string when it returns 0.
        if unsafe { ffi::kml_fast_install(&mut why) } == 1 {
            GuardEntry::Fast
        } else {
            // SAFETY: kml_fast_install sets `why` to a static NUL-terminated string on 0.
            let why = unsafe { std::ffi::CStr::from_ptr(why) };
            GuardEntry::Sigsetjmp(why.to_string_lossy().into_owned())
        }
    })
}

/// The entry guarded calls take in this process (installing the guard if needed).
pub fn guard_entry() -> GuardEntry {
    super::install();
    choose().clone()
}

/// Run `f(ctx)` under the guard for module `m`, if `m` is live, interrupted at `dl`'s
/// deadline when there is one.
///
/// # Safety
/// `f` must be safe to call with `ctx`, and every frame between the entry and a fault may be
/// abandoned without running destructors (see [`super::call`]).
#[inline(always)]
pub(crate) unsafe fn call_module(
    m: &'static GuardModule,
    f: unsafe extern "C" fn(*mut c_void),
    ctx: *mut c_void,
    dl: Option<&Deadline>,
) -> Outcome {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: `m` is a live record; the caller's contract covers `f(ctx)` and the frames.
        let rc = unsafe { inline_entry(m, f, ctx, dl) };
        if rc == 0 {
            return Outcome::Returned;
        }
        // SAFETY: forwarded contract.
        unsafe { call_cold(m, f, ctx, dl, rc) }
    }
    #[cfg(not(target_arch = "x86_64"))]
    // SAFETY: forwarded contract.
    unsafe {
        call_slow(m, f, ctx, dl)
    }
}

/// The fast entry's instructions (x86_64, Intel syntax), as one string for `asm!` and
/// `naked_asm!`: with
/// `rsi` = the module's record, `rdx` = the function, `rdi` = its argument, `r11` = the call's
/// deadline (a `struct kml_deadline`, [`super::deadline::Deadline`], or 0 for none) and a
/// 16-byte aligned stack, it leaves 0 (returned), 1 (crashed), 2 (slow path) or 3 (not live) in `eax`
/// (and, for 0, 1 and 3, the module's record in `r10`), and clobbers the C ABI's caller-saved
/// registers. The caller names
/// `kml_fast_restore_mask` as the `restore` operand. See [`inline_entry`] for how it works;
/// the C API's `module_loader_call` is built around it too.
#[doc(hidden)]
#[macro_export]
macro_rules! __guard_entry_asm {
    () => {
        concat!(
            // rcx = this thread's record, r8d = depth, r9 = &slot[depth]
            "mov rcx, qword ptr [rip + kml_self@GOTTPOFF]\n",
            "mov rcx, qword ptr fs:[rcx]\n",
            "mov eax, 2\n",
            "test rcx, rcx\n",
            "jz 5f\n",
            "mov r8d, dword ptr [rcx]\n",
            "cmp r8d, dword ptr [rcx + 4]\n",
            "jae 5f\n",
            "mov r9d, r8d\n",
            "shl r9, 7\n",
            "lea r9, [rcx + r9 + 64]\n",
            // the deadline (r11: a struct kml_deadline, or 0 for none), before the module: a
            // watchdog that sees the module sees this call's deadline
            "xor eax, eax\n",
            "test r11, r11\n",
            "jz 7f\n",
            "mov rax, qword ptr [r11 + 8]\n",
            "mov qword ptr [r9 + 88], rax\n",
            "mov rax, qword ptr [r11 + 16]\n",
            "mov qword ptr [r9 + 96], rax\n",
            "mov rax, qword ptr [r11 + 24]\n",
            "mov qword ptr [r9 + 104], rax\n",
            "mov rax, qword ptr [r11]\n",
            "7:\n",
            "mov qword ptr [r9 + 80], rax\n",
            // the slot: module, landing, the callee-saved registers; then depth + 1
            "mov qword ptr [r9], rsi\n",
            // a deadline is in the slot now: no longer pending (the watchdog sees either)
            "test r11, r11\n",
            "jz 2f\n",
            "mov qword ptr [rcx + 40], 0\n",
            "2:\n",
            "lea rax, [rip + 3f]\n",
            "mov qword ptr [r9 + 16], rax\n",
            "mov qword ptr [r9 + 32], rbp\n",
            "mov qword ptr [r9 + 40], rbx\n",
            "mov qword ptr [r9 + 48], r12\n",
            "mov qword ptr [r9 + 56], r13\n",
            "mov qword ptr [r9 + 64], r14\n",
            "mov qword ptr [r9 + 72], r15\n",
            "lea eax, [r8 + 1]\n",
            "mov dword ptr [rcx], eax\n",
            "mov eax, 3\n",
            "cmp dword ptr [rsi], 1\n",
            "jne 4f\n",
            "add qword ptr [rsi + 16], 1\n",
            // the call; the landing pad is 3
            "mov qword ptr [r9 + 8], rsp\n",
            "call rdx\n",
            "xor eax, eax\n",
            "jmp 6f\n",
            "3:\n",
            "mov eax, 1\n",
            "6:\n",
            // the record again (every caller-saved register is the callee's now)
            "mov rcx, qword ptr [rip + kml_self@GOTTPOFF]\n",
            "mov rcx, qword ptr fs:[rcx]\n",
            "mov r8d, dword ptr [rcx]\n",
            "sub r8d, 1\n",
            "mov r9d, r8d\n",
            "shl r9, 7\n",
            "lea r9, [rcx + r9 + 64]\n",
            "4:\n",
            "mov dword ptr [rcx], r8d\n",
            "mov r10, qword ptr [r9]\n",
            "mov qword ptr [r9], 0\n",
            "cmp dword ptr [r9 + 24], 0\n",
            "je 5f\n",
            // the module changed the signal mask: put it back (the code goes through)
            "mov rdi, r9\n",
            "mov esi, eax\n",
            "call {restore}\n",
            "5:\n",
        )
    };
}

/// The fast entry, inlined into the caller (x86_64): no call level of its own, and no
/// registers saved on every call. The caller's
/// callee-saved registers (`rbx`, `rbp`, `r12`-`r15`) are written into the slot instead, with
/// the slot's stack pointer and landing address; after a crash the handler's `siglongjmp`
/// (`fast.c`, `kml_fast_resume`) loads them back and resumes at the landing label below, as if
/// the call had returned 1. Nothing is kept in registers across the call (the record is found
/// again through the thread-local), so the caller saves nothing for it. The stack pointer is
/// never moved (`asm!` without `nostack` leaves nothing in the red zone, and a backtrace taken
/// inside the module unwinds through the caller's frame with the caller's own unwind rules).
///
/// Returns 0 (returned), 1 (crashed), 2 (slow path), 3 (not live).
///
/// # Safety
/// As [`call_module`].
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn inline_entry(
    m: &'static GuardModule,
    f: unsafe extern "C" fn(*mut c_void),
    ctx: *mut c_void,
    dl: Option<&Deadline>,
) -> i32 {
    let dl: *const Deadline = dl.map_or(std::ptr::null(), |d| d);
    let rc: u64;
    // SAFETY: the layout is `struct kml_thread`/`kml_slot` (shim.h, checked there by static
    // assertions: slots at 64, 128 bytes each, module 0, frame 8, landing 16, mask_saved 24,
    // rbp..r15 32..80, deadline 80, soft 88, start 96, func 104; the thread's pending
    // deadline at 40) and `struct kml_gmod`
    // (state 0, calls 16); `dl` is null or a `struct kml_deadline` (32 bytes) the entry reads
    // before the call. `kml_self` is the shim's
    // initial-exec thread-local. Every register the asm writes is an output or clobbered (the C
    // ABI's caller-saved set); the callee-saved ones are only read (stored in the slot) and come
    // back unchanged from `f` (the ABI) or from the landing's `siglongjmp` (the slot).
    // The stack is 16-byte aligned at the block and holds nothing below its pointer (no
    // `nostack`). `f(ctx)` itself is the caller's contract.
    unsafe {
        std::arch::asm!(
            crate::__guard_entry_asm!(),
            restore = sym ffi::kml_fast_restore_mask,
            in("rdi") ctx,
            in("rsi") m as *const GuardModule,
            in("rdx") f,
            in("r11") dl,
            lateout("rax") rc,
            clobber_abi("C"),
        );
    }
    rc as u32 as i32
}

/// The entry's other answers: 1 crashed, 2 take the slow path, 3 not live.
///
/// # Safety
/// As [`call_module`].
#[cold]
#[inline(never)]
unsafe fn call_cold(
    m: &'static GuardModule,
    f: unsafe extern "C" fn(*mut c_void),
    ctx: *mut c_void,
    dl: Option<&Deadline>,
    rc: i32,
) -> Outcome {
    match rc {
        // SAFETY: the entry just returned 1 on this thread.
        1 => Outcome::ended(unsafe { take_fast_crash() }),
        3 => Outcome::NotLive,
        // SAFETY: forwarded contract.
        _ => unsafe { call_slow(m, f, ctx, dl) },
    }
}

/// The crash the fast entry just returned 1 for, on this thread.
///
/// # Safety
/// The entry returned 1 on this thread, and nothing guarded ran on it since.
#[cfg(target_arch = "x86_64")]
pub(crate) unsafe fn take_fast_crash() -> Box<RawCrash> {
    let mut out = MaybeUninit::<ffi::CRawCrash>::uninit();
    // SAFETY: the entry recorded this thread's crash; `out` is writable.
    unsafe { ffi::kml_fast_take_crash(out.as_mut_ptr()) };
    // SAFETY: filled by kml_fast_take_crash (this thread has a record: it crashed). Settled
    // before the box: the crashed call may hold the allocator's lock.
    let raw = RawCrash::settle(unsafe { out.assume_init_mut() });
    Box::new(raw)
}

/// A thread's first call (it gets its record and alternate stack, and the fast entry is tried
/// again), guards nested deeper than the entry's slots, or the `sigsetjmp` entry.
///
/// # Safety
/// As [`call_module`].
unsafe fn call_slow(
    m: &'static GuardModule,
    f: unsafe extern "C" fn(*mut c_void),
    ctx: *mut c_void,
    dl: Option<&Deadline>,
) -> Outcome {
    super::install();
    super::altstack::ensure();
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: normal context; allocates and publishes this thread's record, or re-arms it
        // after a fork; -1 when it was armed (nesting deeper than the entry's slots).
        if *choose() == GuardEntry::Fast && unsafe { ffi::kml_fast_register_thread() } == 0 {
            // SAFETY: forwarded contract.
            return unsafe { call_module(m, f, ctx, dl) };
        }
    }
    // The sigsetjmp path: counted in before the state check (a Dekker pair with the unload,
    // which stores the state before reading the counters; all SeqCst).
    m.slow_entered.fetch_add(1, Ordering::SeqCst);
    if m.state.load(Ordering::SeqCst) != LIVE {
        m.slow_left.fetch_add(1, Ordering::SeqCst);
        return Outcome::NotLive;
    }
    m.calls.fetch_add(1, Ordering::Relaxed);
    // SAFETY: forwarded contract.
    let r = unsafe { super::call_until(m.id.load(Ordering::Relaxed), f, ctx, dl) };
    m.slow_left.fetch_add(1, Ordering::SeqCst);
    match r {
        Ok(()) => Outcome::Returned,
        Err(raw) => Outcome::ended(Box::new(raw)),
    }
}

/// Guarded calls running in `m` now, on every thread. Store `m`'s new (not live) state first:
/// a call this misses then sees that state and runs nothing.
pub(crate) fn calls_in_flight(m: &'static GuardModule) -> usize {
    let left = m.slow_left.load(Ordering::SeqCst);
    let slow = m.slow_entered.load(Ordering::SeqCst).saturating_sub(left);
    // SAFETY: normal context; membarrier and a scan under the shim's lock.
    let fast = unsafe { ffi::kml_fast_calls_in(m) };
    slow as usize + fast as usize
}
