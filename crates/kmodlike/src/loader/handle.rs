//! Handles: one counted reference to a loaded module, its symbols, and guarded calls into it.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::crash::Phase;
use crate::error::{Error, Result};
use crate::guard;
use crate::module::{trampoline, trampoline0, Call0Ctx, CallCtx, Module, ModuleState};

use super::deadlines::{limit_ns, CallOptions};
use super::instances::lock;
use super::registry::ModuleInfo;
use super::LoaderShared;

/// The guard's view of a module, for the fast path of a guarded call (see
/// [`Handle::fast_entry`]). A plain pointer to a record the guard pools and never frees.
#[doc(hidden)]
#[derive(Clone, Copy)]
pub struct FastEntry(&'static guard::GuardModule);

/// How a [`FastEntry::call`] ended; [`FastResult::returned`] is the common case, anything else
/// goes to [`Handle::finish`].
#[doc(hidden)]
#[must_use]
pub struct FastResult(guard::Outcome, bool);

impl FastResult {
    /// The function ran and returned, and its module is still live.
    #[inline(always)]
    pub fn returned(&self) -> bool {
        self.1
    }

    /// The outcome of the fast entry run from assembly (`__guard_entry_asm!`, as the C API's
    /// `module_loader_call` does), from the code it left: 0 returned but the module is no
    /// longer live, 1 crashed (this thread's crash record is read now), anything else: not
    /// run.
    ///
    /// # Safety
    /// `code` is what the entry left on this thread just now.
    #[cfg(target_arch = "x86_64")]
    pub unsafe fn from_entry_code(code: i32) -> FastResult {
        let out = match code {
            0 => guard::Outcome::Returned,
            // SAFETY: the entry returned 1 on this thread just now (the caller's contract).
            1 => guard::Outcome::ended(unsafe { guard::take_fast_crash() }),
            _ => guard::Outcome::NotLive,
        };
        FastResult(out, false)
    }

    /// The module instance the function crashed in (or was interrupted in at its deadline),
    /// if it did.
    pub fn crashed_in(&self) -> Option<u64> {
        match &self.0 {
            guard::Outcome::Crashed(raw) | guard::Outcome::TimedOut(raw) => Some(raw.module_id),
            _ => None,
        }
    }
}

impl FastEntry {
    /// Run `f(ctx)` under the crash guard if the module is live.
    ///
    /// # Safety
    /// As [`Handle::call_raw`]; and the module must not be unloaded meanwhile by another
    /// thread (a handle to it must be open): after an unload the record may describe another
    /// module, and `f` is not that module's code.
    #[inline(always)]
    pub unsafe fn call(self, f: unsafe extern "C" fn(*mut c_void), ctx: *mut c_void) -> FastResult {
        // SAFETY: forwarded contract.
        unsafe { self.call_until(f, ctx, None) }
    }

    /// [`call`](Self::call), interrupted at `dl`'s deadline.
    ///
    /// # Safety
    /// As [`call`](Self::call).
    #[inline(always)]
    pub(crate) unsafe fn call_until(
        self,
        f: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
        dl: Option<&guard::deadline::Deadline>,
    ) -> FastResult {
        // SAFETY: forwarded contract.
        let out = unsafe { guard::call_module(self.0, f, ctx, dl) };
        // Returned, and the module still live: done. (Returned after another thread's crash of
        // the same module: finish() reclaims it.)
        let plain = matches!(out, guard::Outcome::Returned)
            && self.0.state.load(std::sync::atomic::Ordering::Relaxed) == guard::LIVE;
        FastResult(out, plain)
    }

    /// The entry as a plain pointer (for a C structure: the C API's `module_loader_call` reads
    /// it from its loader).
    pub fn into_raw(self) -> *const c_void {
        (self.0 as *const guard::GuardModule).cast()
    }
}

/// One reference to a loaded module. Dropping it closes it (see [`Handle::close`]).
pub struct Handle {
    pub(super) module: Arc<Module>,
    pub(super) loader: Arc<LoaderShared>,
    /// [`RELEASED`]: this reference was closed (by a close, or
    /// [`close_shared`](Handle::close_shared)); the other bits: this handle's call time limit
    /// in nanoseconds, 0 for the loader's. One word, so a handle stays small (it travels in
    /// [`CloseError`]).
    state: AtomicU64,
}

/// The bit of [`Handle`]'s state that says it was closed.
const RELEASED: u64 = 1 << 63;

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle")
            .field("module", &self.module.name)
            .field("state", &self.module.state())
            .finish()
    }
}

/// A failed [`Handle::close`]: the error, and the handle back when the module stayed loaded
/// (`Busy`), so the caller can retry.
#[derive(Debug)]
pub struct CloseError {
    /// Why the close failed.
    pub error: Error,
    /// The still-valid handle, when the module stayed loaded.
    pub handle: Option<Handle>,
}

impl std::fmt::Display for CloseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.error.fmt(f)
    }
}

impl std::error::Error for CloseError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&self.error)
    }
}

/// A symbol of a module, borrowed from its handle so it cannot outlive it.
pub struct Symbol<'h, T> {
    value: T,
    _handle: std::marker::PhantomData<&'h Handle>,
}

impl<T: Copy> Symbol<'_, T> {
    /// The symbol's value (a function pointer or a data pointer).
    pub fn get(&self) -> T {
        self.value
    }
}

impl<T> std::ops::Deref for Symbol<'_, T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.value
    }
}

impl Handle {
    pub(super) fn new(module: Arc<Module>, loader: Arc<LoaderShared>) -> Handle {
        Handle { module, loader, state: AtomicU64::new(0) }
    }

    /// The module's name.
    pub fn name(&self) -> &str {
        &self.module.name
    }
    /// The module's file.
    pub fn path(&self) -> &Path {
        &self.module.path
    }
    /// The instance id.
    pub fn id(&self) -> u64 {
        self.module.id
    }
    /// Whether the module is loaded and callable (not crashed or unloaded).
    pub fn is_live(&self) -> bool {
        self.module.state() == ModuleState::Live
    }
    /// The module's state.
    pub fn state(&self) -> ModuleState {
        self.module.state()
    }
    /// A snapshot of the module.
    pub fn info(&self) -> ModuleInfo {
        let reg = lock(&self.loader.reg);
        reg.info(self.module.id).unwrap_or_else(|| ModuleInfo::detached(&self.module))
    }

    /// The address of `name`, which must be defined in this module itself: a symbol that
    /// `dlsym` finds in a dependency or in libc is `SymbolNotFound`. Cached after the first
    /// look-up.
    pub fn symbol_ptr(&self, name: &str) -> Result<*mut c_void> {
        self.module.symbol(name)
    }

    /// The symbol `name` as a `T` (a function pointer type or a data pointer).
    ///
    /// # Safety
    /// `T` must be pointer-sized and match the symbol's real type. Calling a function through
    /// the result outside [`call`](Self::call) runs module code unguarded: a crash there is not
    /// recovered. After the module crashes or is unloaded, the value must not be used.
    pub unsafe fn symbol<T: Copy>(&self, name: &str) -> Result<Symbol<'_, T>> {
        assert_eq!(std::mem::size_of::<T>(), std::mem::size_of::<*mut c_void>());
        let p = self.module.symbol(name)?;
        // SAFETY: sizes checked above; the type is the caller's promise.
        let value = unsafe { std::mem::transmute_copy::<*mut c_void, T>(&p) };
        Ok(Symbol { value, _handle: std::marker::PhantomData })
    }

    /// The time limit of guarded calls through this handle; `None`: the loader's
    /// ([`Loader::set_call_timeout`](super::Loader::set_call_timeout)). A call past it is
    /// interrupted and returns [`Error::TimedOut`]; the module is unloaded as after a crash.
    pub fn set_call_timeout(&self, timeout: Option<Duration>) {
        let ns = limit_ns(timeout).min(RELEASED - 1);
        let _ = self
            .state
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| Some(s & RELEASED | ns));
    }

    /// This handle's own call time limit (`None`: the loader's applies).
    pub fn call_timeout(&self) -> Option<Duration> {
        match self.state.load(Ordering::Relaxed) & !RELEASED {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Call `f(arg)` under the crash guard, on behalf of this module.
    ///
    /// With a time limit (the handle's or the loader's), a call that runs past it is
    /// interrupted by the guard's interrupt signal, wherever it is (a loop, a blocking system
    /// call): it returns [`Error::TimedOut`] and the module is unloaded as after a crash. An
    /// interrupt that comes while a host callback (`log`, `get_time`) runs waits until the
    /// callback returns to the module.
    ///
    /// A fatal signal in `f` unloads the module (logically: its code stays mapped unless the
    /// loader reclaims it) and returns `Err(Error::Crashed(report))`; the host keeps running.
    ///
    /// A crash jumps over every frame between the guard and the fault (a `siglongjmp`)
    /// without running their destructors or unwinding. The loader's own frame in between is a
    /// trampoline that owns nothing droppable (`A` and `R` are `Copy`); the frames of `f` and
    /// of everything it calls are the caller's concern, hence `unsafe`.
    ///
    /// # Safety
    /// Every frame `f(arg)` can fault in may be abandoned without further ado. That holds when
    /// `f` is this module's code (a C function, or a `kmodlike-module` export), which the
    /// promise made to [`Loader::open`](super::Loader::open) covers, and it holds for any
    /// function that, at every point where it (or what it calls) can raise a fatal signal,
    /// owns no value with a destructor (`String`, `Vec`, a lock guard, ...) and has no
    /// borrow outstanding that something else relies on ending (a `std::thread::scope`, a
    /// pinned future, a value lent to another thread). A safe `extern "C" fn` of the host's
    /// own is not enough: one that owns a `String` and calls `std::process::abort()` would
    /// leak it at best, and a `thread::scope` jumped over leaves its threads borrowing a dead
    /// stack frame. Callbacks the module calls back into through `arg` are under the same
    /// rule.
    #[inline(always)]
    pub unsafe fn call<A: Copy, R: Copy>(&self, f: extern "C" fn(A) -> R, arg: A) -> Result<R> {
        // SAFETY: forwarded contract.
        unsafe { self.call_opts(None, f, arg) }
    }

    /// [`call`](Self::call) with options: a time limit and a slow-call warning of its own
    /// ([`CallOptions`]).
    ///
    /// # Safety
    /// As [`call`](Self::call).
    #[inline(always)]
    pub unsafe fn call_with<A: Copy, R: Copy>(
        &self,
        opts: &CallOptions,
        f: extern "C" fn(A) -> R,
        arg: A,
    ) -> Result<R> {
        // SAFETY: forwarded contract.
        unsafe { self.call_opts(Some(opts), f, arg) }
    }

    /// [`call0`](Self::call0) with options ([`CallOptions`]).
    ///
    /// # Safety
    /// As [`call0`](Self::call0).
    #[inline(always)]
    pub unsafe fn call0_with<R: Copy>(
        &self,
        opts: &CallOptions,
        f: extern "C" fn() -> R,
    ) -> Result<R> {
        // SAFETY: forwarded contract.
        unsafe { self.call0_opts(Some(opts), f) }
    }

    /// [`call`](Self::call) with optional options.
    ///
    /// # Safety
    /// As [`call`](Self::call).
    #[inline(always)]
    unsafe fn call_opts<A: Copy, R: Copy>(
        &self,
        opts: Option<&CallOptions>,
        f: extern "C" fn(A) -> R,
        arg: A,
    ) -> Result<R> {
        let mut ctx = CallCtx {
            // SAFETY: a safe `extern "C" fn` is also a valid `unsafe extern "C" fn`.
            f: unsafe {
                std::mem::transmute::<extern "C" fn(A) -> R, unsafe extern "C" fn(A) -> R>(f)
            },
            arg,
            ret: MaybeUninit::uninit(),
        };
        let called = f as usize as u64;
        // SAFETY: the trampoline calls `f(arg)`, safe to call by its type; the frames a crash
        // may skip are the trampoline's (it owns only `Copy` values) and `f`'s, which the
        // caller vouched for.
        unsafe { self.enter(trampoline::<A, R>, &mut ctx as *mut _ as *mut c_void, called, opts)? };
        // SAFETY: the trampoline wrote the result before returning normally.
        Ok(unsafe { ctx.ret.assume_init() })
    }

    /// Call `f()` under the crash guard (see [`call`](Self::call)).
    ///
    /// # Safety
    /// As [`call`](Self::call): every frame `f()` can fault in may be abandoned without
    /// running its destructors. True of this module's own functions; not of a host function
    /// that owns a value with a destructor, or runs a `std::thread::scope`, where it can fault.
    #[inline(always)]
    pub unsafe fn call0<R: Copy>(&self, f: extern "C" fn() -> R) -> Result<R> {
        // SAFETY: forwarded contract.
        unsafe { self.call0_opts(None, f) }
    }

    /// [`call0`](Self::call0) with optional options.
    ///
    /// # Safety
    /// As [`call0`](Self::call0).
    #[inline(always)]
    unsafe fn call0_opts<R: Copy>(
        &self,
        opts: Option<&CallOptions>,
        f: extern "C" fn() -> R,
    ) -> Result<R> {
        if std::mem::size_of::<R>() == 0 {
            // Nothing to keep: call `f` itself as `void f(void *)` (the argument is ignored
            // under the C calling convention), without the trampoline.
            // SAFETY: same calling convention, and no return value to read.
            let g = unsafe {
                std::mem::transmute::<extern "C" fn() -> R, unsafe extern "C" fn(*mut c_void)>(f)
            };
            // SAFETY: forwarded contract: `f` is callable and abandonable where it faults.
            unsafe { self.enter(g, std::ptr::null_mut(), f as usize as u64, opts)? };
            // SAFETY: a zero-sized value has no bytes; `f` returned one (an uninhabited `R`
            // never returns, so this is not reached for it).
            return Ok(unsafe { std::mem::zeroed::<R>() });
        }
        let mut ctx = Call0Ctx {
            // SAFETY: a safe `extern "C" fn` is also a valid `unsafe extern "C" fn`.
            f: unsafe {
                std::mem::transmute::<extern "C" fn() -> R, unsafe extern "C" fn() -> R>(f)
            },
            ret: MaybeUninit::uninit(),
        };
        let called = f as usize as u64;
        // SAFETY: the trampoline calls `f()`, safe to call by its type; the frames a crash
        // may skip are the trampoline's (it owns only `Copy` values) and `f`'s, which the
        // caller vouched for.
        unsafe { self.enter(trampoline0::<R>, &mut ctx as *mut _ as *mut c_void, called, opts)? };
        // SAFETY: the trampoline wrote the result before returning normally.
        Ok(unsafe { ctx.ret.assume_init() })
    }

    /// Call `f(ctx)` under the crash guard (see [`call`](Self::call)); the C API's form.
    ///
    /// # Safety
    /// `f` must be safe to call with `ctx`, and every frame it can fault in may be abandoned
    /// without running destructors, as for [`call`](Self::call).
    #[inline(always)]
    pub unsafe fn call_raw(
        &self,
        f: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.enter(f, ctx, f as usize as u64, None) }
    }

    /// The guarded entry: the guard's fast entry runs `f(ctx)` if the module is live; the rest
    /// (a crash, a module that is not live, another thread's crash meanwhile) is
    /// [`finish`](Self::finish)'s. `called` is the function the caller asked for (`f` itself,
    /// or the one a trampoline runs), for the crash report.
    ///
    /// # Safety
    /// As [`call_raw`](Self::call_raw).
    #[inline(always)]
    pub(super) unsafe fn enter(
        &self,
        f: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
        called: u64,
        opts: Option<&CallOptions>,
    ) -> Result<()> {
        if self.module.isolated.is_some() {
            return Err(self.module.isolated_refusal("a guarded call of a function pointer"));
        }
        let dl = self.deadline(opts, called);
        // SAFETY: forwarded contract.
        let r = unsafe { self.fast_entry().call_until(f, ctx, dl.as_ref()) };
        if r.returned() {
            return Ok(());
        }
        // SAFETY: forwarded contract.
        unsafe { self.finish_called(r, f, ctx, called, opts) }
    }

    /// The deadline of a call of `called` now, if a time limit applies.
    #[inline(always)]
    fn deadline(
        &self,
        opts: Option<&CallOptions>,
        called: u64,
    ) -> Option<guard::deadline::Deadline> {
        let ns = self.state.load(Ordering::Relaxed) & !RELEASED;
        self.loader.deadline_for(opts, ns, called)
    }

    /// What the guard's fast entry reads about this module, for a caller that keeps it at hand
    /// (the C API's `module_loader_call`). Valid as long as the module is: see
    /// [`FastEntry::call`].
    #[doc(hidden)]
    pub fn fast_entry(&self) -> FastEntry {
        FastEntry(self.module.guard)
    }

    /// Finish a call whose [`FastEntry::call`] did not simply return: record a crash (the
    /// module is unloaded and `Err(Crashed)` comes back), or, when nothing ran, wait for an
    /// unload that is deciding and call again, or say why the module is not live.
    ///
    /// # Safety
    /// `r` comes from `self.fast_entry().call(f, ctx)` on this thread, just now; `f` and `ctx`
    /// are those of that call, under its contract.
    #[doc(hidden)]
    #[cold]
    #[inline(never)]
    pub unsafe fn finish(
        &self,
        r: FastResult,
        f: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.finish_called(r, f, ctx, f as usize as u64, None) }
    }

    /// [`finish`](Self::finish), naming `called` as the function the call ran.
    ///
    /// # Safety
    /// As [`finish`](Self::finish).
    #[cold]
    #[inline(never)]
    unsafe fn finish_called(
        &self,
        r: FastResult,
        f: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
        called: u64,
        opts: Option<&CallOptions>,
    ) -> Result<()> {
        let m = &self.module;
        let mut r = r;
        for _ in 0..8 {
            match r.0 {
                guard::Outcome::Returned => {
                    if m.state() == ModuleState::Crashed {
                        self.loader.reclaim_if_drained(m);
                    }
                    return Ok(());
                }
                guard::Outcome::Crashed(mut raw) => {
                    raw.called = Some(called);
                    let report = self.loader.record_crash(m, &raw, Phase::Call);
                    return Err(Error::Crashed(Box::new(report)));
                }
                guard::Outcome::TimedOut(mut raw) => {
                    raw.called = Some(called);
                    let report = self.loader.record_crash(m, &raw, Phase::Call);
                    return Err(Error::TimedOut(Box::new(report)));
                }
                guard::Outcome::NotLive if m.state() == ModuleState::Unloading => {
                    // An unload holds the registry lock while it looks for calls in flight; when
                    // it finds one it puts the module back to live. Wait for its decision.
                    drop(lock(&self.loader.reg));
                    if m.state() != ModuleState::Live {
                        break;
                    }
                    let dl = self.deadline(opts, called);
                    // SAFETY: forwarded contract: nothing ran, so `f(ctx)` runs once.
                    r = unsafe { self.fast_entry().call_until(f, ctx, dl.as_ref()) };
                }
                guard::Outcome::NotLive => break,
            }
        }
        self.loader.reclaim_if_drained(m);
        Err(m.not_live_error())
    }

    /// Another reference to the same module.
    pub fn try_clone(&self) -> Result<Handle> {
        let mut reg = lock(&self.loader.reg);
        match reg.entries.get_mut(&self.module.id) {
            Some(e) if e.unloading_by.is_none() => {
                e.refs += 1;
                Ok(Handle {
                    module: self.module.clone(),
                    loader: self.loader.clone(),
                    state: AtomicU64::new(self.state.load(Ordering::Relaxed) & !RELEASED),
                })
            }
            _ => Err(self.module.not_live_error()),
        }
    }

    /// Close this reference. The last close asks `module_can_unload` (a non-zero answer keeps
    /// the module loaded: `Busy`, and the handle comes back for a retry), runs `module_fini`,
    /// unloads the module and releases its dependencies. A module others depend on is `Busy`
    /// naming them. Closing a handle to a crashed or unloaded module just releases it.
    pub fn close(self) -> std::result::Result<(), CloseError> {
        self.close_with(false)
    }

    /// [`close`](Self::close), but the last close does not ask `module_can_unload` (like
    /// `rmmod -f`). Modules that others depend on, or with calls in flight, are still `Busy`.
    pub fn close_forced(self) -> std::result::Result<(), CloseError> {
        self.close_with(true)
    }

    fn close_with(self, force: bool) -> std::result::Result<(), CloseError> {
        match self.close_shared(force) {
            Ok(()) => Ok(()),
            Err(error @ Error::Busy { .. }) => Err(CloseError { error, handle: Some(self) }),
            Err(error) => Err(CloseError { error, handle: None }),
        }
    }

    /// [`close`](Self::close) (or [`close_forced`](Self::close_forced) when `force`) through a
    /// shared reference, for a handle others may still be calling through (the C API's
    /// loader slot): the module stays reachable through this handle while the close decides.
    /// On `Busy` nothing changed; on any other outcome the reference is released, and later
    /// calls through this handle fail as on a closed module.
    #[doc(hidden)]
    pub fn close_shared(&self, force: bool) -> Result<()> {
        if self.state.load(Ordering::Acquire) & RELEASED != 0 {
            return Err(self.module.not_live_error());
        }
        match self.loader.close_ref(self.module.id, force) {
            Err(error @ Error::Busy { .. }) => Err(error),
            other => {
                self.state.fetch_or(RELEASED, Ordering::Release);
                other
            }
        }
    }
}

impl Drop for Handle {
    /// Closes the reference. If the module refuses (`Busy`), it stays loaded, owned by the
    /// loader until [`Loader::shutdown`](super::Loader::shutdown).
    fn drop(&mut self) {
        if self.state.fetch_or(RELEASED, Ordering::AcqRel) & RELEASED == 0 {
            let id = self.module.id;
            if let Err(Error::Busy { .. }) = self.loader.close_ref(id, false) {
                // The module stays loaded (its dependents, its veto or a call in flight keep
                // it); this handle's reference goes, and the module is unloaded with its last
                // dependent or at shutdown.
                if let Some(e) = lock(&self.loader.reg).entries.get_mut(&id) {
                    e.refs = e.refs.saturating_sub(1);
                }
            }
        }
    }
}
