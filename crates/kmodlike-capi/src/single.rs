//! The seed's single-module calls: one module per loader, loaded by path.

use std::ffi::{c_char, c_void};
use std::path::Path;
use std::sync::Arc;

use kmodlike::{Handle, InitArgs, OpenMode, OpenOptions};

use crate::entry::{run_code, str_arg};
use crate::error::{module_error_t, Failure};
use crate::interface::{module_init_args, MODULE_INIT_ARGS_VERSION_CURRENT};
use crate::loader::{lock, module_loader_t, sink_of};

/// The loader's one module (the seed's calls).
#[derive(Debug, Default)]
pub(crate) enum Slot {
    /// Nothing loaded; `gone` says what happened to the last module, if anything did.
    #[default]
    Empty,
    /// The last module left without `module_loader_unload()` (it crashed); why.
    Gone(String),
    /// A load or an unload is running on some thread.
    Changing,
    /// Loaded. Each call on another thread holds a clone while it runs, so the count of extra
    /// clones is the number of calls in flight.
    Loaded(Arc<Handle>),
}

/// Puts the slot back to a known state if a load is interrupted by a panic (caught
/// at the C boundary), so the loader does not stay "changing" forever.
struct ChangingGuard<'a> {
    l: &'a module_loader_t,
    armed: bool,
}

impl Drop for ChangingGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            *lock(&self.l.slot) =
                Slot::Gone("an internal error interrupted a load or unload of it".to_owned());
        }
    }
}

/// The call to pass `module_init()` for the C `init_args` pointer (NULL allowed).
///
/// # Safety
/// `init_args` is NULL or points to a readable `module_init_args_t`.
pub(crate) unsafe fn init_args_from(
    call: &str,
    init_args: *const module_init_args,
) -> Result<InitArgs, Failure> {
    // SAFETY: the caller's contract.
    let Some(args) = (unsafe { init_args.as_ref() }) else {
        return Ok(InitArgs::Null);
    };
    if args.version == 0 || args.version > MODULE_INIT_ARGS_VERSION_CURRENT {
        return Err(Failure::invalid(format!(
            "{call}: init_args->version is {}; this library knows version 1 to {} \
             (set it to MODULE_INIT_ARGS_VERSION_CURRENT)",
            args.version, MODULE_INIT_ARGS_VERSION_CURRENT
        )));
    }
    Ok(InitArgs::Raw((*args).into()))
}

/// The loader's module, for a call on it: a clone of the handle (so an unload meanwhile waits
/// for the call), or why there is none.
pub(crate) fn current(l: &module_loader_t, call: &str) -> Result<Arc<Handle>, Failure> {
    match &*lock(&l.slot) {
        Slot::Loaded(h) => Ok(Arc::clone(h)),
        other => Err(no_module(other, call)),
    }
}

/// Why the slot holds no module, as a `MODULE_ERR_NOT_LOADED` failure of `call`.
fn no_module(slot: &Slot, call: &str) -> Failure {
    let why = match slot {
        Slot::Gone(why) => format!("no module is loaded in this loader: {why}"),
        Slot::Changing => {
            "the loader's module is being loaded or unloaded by another thread".to_owned()
        }
        _ => "no module is loaded in this loader (load one with module_loader_load())".to_owned(),
    };
    Failure::new(module_error_t::MODULE_ERR_NOT_LOADED, format!("{call}: {why}"))
}

/// After a call on `h` failed with `e`: when the module is gone (it crashed, here or on one of
/// its own threads), empty the slot so the loader can load again.
pub(crate) fn forget_if_dead(l: &module_loader_t, h: &Arc<Handle>, e: &kmodlike::Error) {
    // Only a crash: a module being unloaded is the unloading thread's to take out of the slot.
    if h.state() != kmodlike::ModuleState::Crashed {
        return;
    }
    let mut slot = lock(&l.slot);
    if matches!(&*slot, Slot::Loaded(cur) if Arc::ptr_eq(cur, h)) {
        let why = match e.crash_report() {
            Some(r) => format!(
                "module {} was unloaded after it crashed ({} {} at address {:#x}, in {})",
                h.name(),
                r.signal_name,
                r.code_name,
                r.fault_addr,
                r.phase.name()
            ),
            None => format!("module {} was unloaded: {e}", h.name()),
        };
        *slot = Slot::Gone(why);
        publish(l, None);
    }
}

/// Publish the loaded module's guard entry for `module_loader_call()`'s fast path (or none).
/// Callers hold the slot's lock.
pub(crate) fn publish(l: &module_loader_t, h: Option<&Handle>) {
    let p = h.map_or(std::ptr::null(), |h| h.fast_entry().into_raw());
    l.fast.store(p.cast_mut(), std::sync::atomic::Ordering::Release);
}

/// ---- Single-module calls (the seed's API) ----------------------------------------------
///
/// Load the module file at `path` into `loader` and run its `module_init(init_args)`.
/// `init_args` may be NULL (the module's `module_init()` then gets NULL); otherwise its
/// `version` must be `MODULE_INIT_ARGS_VERSION_CURRENT`, and the loader keeps a copy of it
/// for as long as the module stays loaded.
///
/// `path` is a file path (a relative path is taken from the current directory), never a name
/// searched along the module path: use `module_loader_open()` for that. The file is checked
/// before any of its code runs: readable, an ELF shared object for this machine, the three
/// required exports present, a compatible interface version. A module that exports only
/// `mod_hello()` loads as a legacy module (no init/fini) unless the loader is strict.
///
/// One module per loader: a second load without `module_loader_unload()` fails with
/// `MODULE_ERR_ALREADY_LOADED`. Errors: `MODULE_ERR_INVALID_ARGUMENT` (NULL or empty path),
/// `MODULE_ERR_NOT_FOUND`, `MODULE_ERR_LOAD_FAILED`, `MODULE_ERR_SYMBOL_NOT_FOUND`,
/// `MODULE_ERR_VERSION_MISMATCH`, `MODULE_ERR_INIT_FAILED` (nothing stays loaded),
/// `MODULE_ERR_CRASHED` (the module crashed in a constructor or `module_init()`),
/// `MODULE_ERR_QUARANTINED`, `MODULE_ERR_DEPENDENCY`.
///
/// # Safety
/// `loader` is NULL or a live loader; `path` is NULL or a NUL-terminated string; `init_args` is
/// NULL or points to a `module_init_args_t`. The file at `path`, and every module it depends
/// on, is a module built for `module_interface.h`: loading it runs its constructors and
/// `module_init()` in this process, as `dlopen()` would (the checks above come first;
/// `MODULE_LOADER_PROBE` runs them in a child process first).
#[no_mangle]
pub unsafe extern "C" fn module_loader_load(
    loader: *mut module_loader_t,
    path: *const c_char,
    init_args: *const module_init_args,
) -> module_error_t {
    const CALL: &str = "module_loader_load";
    // SAFETY: the caller passes NULL or a live loader.
    let l = unsafe { loader.as_ref() };
    run_code(CALL, sink_of(l), || {
        let l = l.ok_or_else(|| Failure::invalid(format!("{CALL}: loader is NULL")))?;
        // SAFETY: the caller's contract on path and init_args.
        let path = unsafe { str_arg(CALL, "path", path) }?;
        // SAFETY: as above.
        let init_args = unsafe { init_args_from(CALL, init_args) }?;
        let path = std::path::absolute(Path::new(path))
            .map_err(|e| Failure::invalid(format!("{CALL}: path {path:?}: {e}")))?;
        {
            let mut slot = lock(&l.slot);
            match &*slot {
                Slot::Loaded(h) => {
                    return Err(Failure::from(kmodlike::Error::AlreadyLoaded {
                        module: h.name().to_owned(),
                        existing: h.path().to_owned(),
                    })
                    .with_hint("this loader holds one module: module_loader_unload() it first"));
                }
                Slot::Changing => {
                    return Err(Failure::new(
                        module_error_t::MODULE_ERR_BUSY,
                        format!(
                            "{CALL}: another thread is loading or unloading this loader's module"
                        ),
                    ));
                }
                Slot::Empty | Slot::Gone(_) => *slot = Slot::Changing,
            }
        }
        // The slot lock is not held while module code runs: module_init() may call back into
        // the host, and the host into this loader.
        let opts = OpenOptions { mode: OpenMode::Module, init_args, ..OpenOptions::default() };
        let mut guard = ChangingGuard { l, armed: true };
        // SAFETY: the C caller's promise (this function's `# Safety`): `path` is a module built
        // for the interface, whose constructors and module_init may run here.
        let opened = unsafe { l.loader.open_with(&path.to_string_lossy(), &opts) };
        guard.armed = false;
        let mut slot = lock(&l.slot);
        match opened {
            Ok(h) => {
                publish(l, Some(&h));
                *slot = Slot::Loaded(Arc::new(h));
                Ok(())
            }
            Err(e) => {
                *slot = Slot::Empty;
                Err(l.shared.fail(e))
            }
        }
    })
}

/// Find `name` in the loader's module and store its address in `*symbol`. Only symbols
/// defined in the module itself are found: one that resolves into a library the module uses
/// (libc, a dependency) is `MODULE_ERR_SYMBOL_NOT_FOUND`. On failure `*symbol` is set to NULL.
///
/// The address is valid until the module is unloaded; calling through it is not guarded
/// against crashes: use `module_loader_call()` for that.
///
/// # Safety
/// `loader` is NULL or a live loader; `name` is NULL or a NUL-terminated string; `symbol` is
/// NULL or valid for writing one pointer.
#[no_mangle]
pub unsafe extern "C" fn module_loader_get_symbol(
    loader: *mut module_loader_t,
    name: *const c_char,
    symbol: *mut *mut c_void,
) -> module_error_t {
    const CALL: &str = "module_loader_get_symbol";
    // SAFETY: the caller passes NULL or a live loader.
    let l = unsafe { loader.as_ref() };
    if !symbol.is_null() {
        // SAFETY: non-NULL, and the caller promises it is valid for one write.
        unsafe { symbol.write(std::ptr::null_mut()) };
    }
    run_code(CALL, sink_of(l), || {
        let l = l.ok_or_else(|| Failure::invalid(format!("{CALL}: loader is NULL")))?;
        // SAFETY: the caller's contract on name.
        let name = unsafe { str_arg(CALL, "name", name) }?;
        if symbol.is_null() {
            return Err(Failure::invalid(format!("{CALL}: symbol (the out-parameter) is NULL")));
        }
        let h = current(l, CALL)?;
        match h.symbol_ptr(name) {
            Ok(p) => {
                // SAFETY: checked non-NULL above; the caller promises it is writable.
                unsafe { symbol.write(p) };
                Ok(())
            }
            Err(e) => {
                forget_if_dead(l, &h, &e);
                Err(l.shared.fail(e))
            }
        }
    })
}

/// Unload the loader's module: ask its optional `module_can_unload()`, run its
/// `module_fini()`, and unmap it. Symbols obtained from it become invalid.
///
/// Errors: `MODULE_ERR_NOT_LOADED` (nothing loaded, or the module was already unloaded after
/// a crash), `MODULE_ERR_BUSY` (a call into it is still running on another thread, other
/// modules depend on it, or its `module_can_unload()` refused: it stays loaded, retry later),
/// `MODULE_ERR_CRASHED` (`module_fini()` crashed; the module is gone all the same).
///
/// # Safety
/// `loader` is NULL or a live loader.
#[no_mangle]
pub unsafe extern "C" fn module_loader_unload(loader: *mut module_loader_t) -> module_error_t {
    const CALL: &str = "module_loader_unload";
    // SAFETY: the caller passes NULL or a live loader.
    let l = unsafe { loader.as_ref() };
    run_code(CALL, sink_of(l), || {
        let l = l.ok_or_else(|| Failure::invalid(format!("{CALL}: loader is NULL")))?;
        // The slot keeps the module while the close decides: calls on other threads go on
        // (a call in flight makes the close Busy, and nothing changes), and a callback from
        // module_fini still finds its module.
        let h = match &*lock(&l.slot) {
            Slot::Loaded(h) => Arc::clone(h),
            other => return Err(no_module(other, CALL)),
        };
        let closed = h.close_shared(false);
        let mut slot = lock(&l.slot);
        let ours = matches!(&*slot, Slot::Loaded(cur) if Arc::ptr_eq(cur, &h));
        match closed {
            Err(e @ kmodlike::Error::Busy { .. }) => Err(l.shared.fail(e)),
            Ok(()) => {
                if ours {
                    publish(l, None);
                    *slot = Slot::Empty;
                }
                Ok(())
            }
            Err(e) => {
                if ours {
                    publish(l, None);
                    *slot = Slot::Gone(format!("its unload failed: {e}"));
                }
                Err(l.shared.fail(e))
            }
        }
    })
}

/// The loader's module at destroy time: unloaded as `module_loader_unload()` would, its
/// failure (a veto, a crash in fini) ignored since nobody is left to hear it.
pub(crate) fn unload_for_destroy(l: &module_loader_t) {
    let slot = {
        let mut slot = lock(&l.slot);
        publish(l, None);
        std::mem::take(&mut *slot)
    };
    if let Slot::Loaded(h) = slot {
        if let Some(handle) = Arc::into_inner(h) {
            let _ = handle.close();
        }
    }
}

impl Failure {
    /// Append the next step to the text.
    pub(crate) fn with_hint(mut self, hint: &str) -> Self {
        self.text.push_str(": ");
        self.text.push_str(hint);
        self
    }
}
