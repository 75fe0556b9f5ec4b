//! The ddi_modopen-style handle calls: many modules per loader, opened by name or path,
//! reference-counted, with `errp` out-parameters.

use std::ffi::{c_char, c_int, c_uint, c_void, CString};
use std::path::Path;
use std::sync::Arc;

use kmodlike::{Handle, InitArgs, Isolation, OpenMode, OpenOptions};

use crate::crash::module_call_fn_t;
use crate::entry::{run_code, run_ptr, str_arg};
use crate::error::{module_error_t, ErrorSink, Failure};
use crate::interface::module_init_args;
use crate::loader::{module_loader_t, sink_of, Shared};
use crate::single::init_args_from;

/// One reference to an opened module. Opaque: from `module_loader_open()`, released by
/// `module_loader_close()`.
pub struct module_handle_t {
    /// `None` only while `module_loader_close()` runs.
    handle: Option<Handle>,
    pub(crate) shared: Arc<Shared>,
}

impl module_handle_t {
    pub(crate) fn handle(&self, call: &str) -> Result<&Handle, Failure> {
        self.handle.as_ref().ok_or_else(|| {
            Failure::invalid(format!("{call}: the handle is being closed by another thread"))
        })
    }
}

/// How `module_loader_open()` opens a module, like `ddi_modopen()`'s `mode`.
#[repr(C)]
#[allow(non_camel_case_types)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum module_open_flags_t {
    /// A module: it must implement the module interface (or be an accepted legacy module);
    /// `module_init()` runs on the first open, `module_fini()` on the last close.
    MODULE_OPEN_DEFAULT = 0,
    /// A data object with no interface, such as a firmware blob wrapped into a shared object
    /// (`objcopy -I binary ...` then `cc -shared`): no `module_init()` or `module_fini()` is
    /// looked for or run, only its symbols are used (`_binary_<name>_start`, `..._end`).
    /// `init_args` is ignored.
    MODULE_OPEN_DATA = 1,
    /// An isolated module: it runs in a `kmodlike-host` process of its own (one per module),
    /// confined with the default limits (1 GiB of address space, 64 open files), so nothing it
    /// does (a crash, heap corruption, `_exit()`, running out of memory) reaches this process.
    /// Only `module_loader_invoke()` reaches its code: `module_loader_sym()` and
    /// `module_loader_call_handle()` are refused. Its `log` and `get_time` calls are forwarded
    /// to `init_args`' callbacks; `user_data` is not shared (the module sees NULL).
    MODULE_OPEN_ISOLATED = 2,
}

/// `module_open_flags_t` as received from C (read as a plain integer: an unknown value is an
/// error, not undefined behaviour).
///
/// cbindgen:no-export
#[repr(transparent)]
#[derive(Debug, Clone, Copy)]
pub struct OpenFlagsArg(pub c_uint);

/// ---- Handles: modules opened by name, reference-counted (after illumos ddi_modopen) ----
///
/// Open a module and return a new handle to it, or NULL with the reason in `*errp` (when
/// `errp` is not NULL) and in `module_loader_last_error(loader)`.
///
/// `spec` is a path (it contains a `/` and names an existing file) or a name
/// `[namespace/[dirspace/]]name`, searched as `<dir>/<namespace>/[<dirspace>/]<name>.so` along
/// the module path (`module_loader_set_path()`, then `KMODLIKE_MODULE_PATH`, then the built-in
/// default); the namespace defaults to `misc`. A name may not leave the module path: `..`,
/// absolute parts and empty segments are `MODULE_ERR_INVALID_ARGUMENT`; a name found nowhere is
/// `MODULE_ERR_NOT_FOUND`, and the text lists every place tried.
///
/// Opening a module that is already open (the same file) returns another handle to the same
/// instance: `module_init()` runs on the first open only, with that open's `init_args` (NULL
/// allowed), and `module_fini()` on the last close. Dependencies named by the module's
/// `MODULE_DEPENDS()` are opened first, in order; a missing one or a cycle is
/// `MODULE_ERR_DEPENDENCY`. `flags` is a `module_open_flags_t`. The other errors are those of
/// `module_loader_load()`.
///
/// # Safety
/// `loader` is NULL or a live loader; `spec` is NULL or a NUL-terminated string; `init_args`
/// is NULL or points to a `module_init_args_t`; `errp` is NULL or valid for one write. The
/// file `spec` names, and every module it depends on, is a module built for
/// `module_interface.h` (or a data object, with `MODULE_OPEN_DATA`): opening it runs its
/// constructors and `module_init()` in this process, as `dlopen()` would (the loader checks its
/// structure and exports first; `MODULE_LOADER_PROBE` runs them in a child process first).
#[no_mangle]
pub unsafe extern "C" fn module_loader_open(
    loader: *mut module_loader_t,
    spec: *const c_char,
    init_args: *const module_init_args,
    flags: OpenFlagsArg,
    errp: *mut module_error_t,
) -> *mut module_handle_t {
    const CALL: &str = "module_loader_open";
    // SAFETY: the caller passes NULL or a live loader.
    let l = unsafe { loader.as_ref() };
    // SAFETY: the caller passes NULL or a pointer valid for one write.
    let errp = unsafe { errp.as_mut() };
    run_ptr(CALL, sink_of(l), errp, || {
        let l = l.ok_or_else(|| Failure::invalid(format!("{CALL}: loader is NULL")))?;
        // SAFETY: the caller's contract on spec.
        let spec = unsafe { str_arg(CALL, "spec", spec) }?;
        let (mode, isolation) = match flags.0 {
            f if f == module_open_flags_t::MODULE_OPEN_DEFAULT as c_uint => {
                (OpenMode::Module, None)
            }
            f if f == module_open_flags_t::MODULE_OPEN_DATA as c_uint => (OpenMode::Data, None),
            f if f == module_open_flags_t::MODULE_OPEN_ISOLATED as c_uint => {
                (OpenMode::Module, Some(Isolation::default()))
            }
            f => {
                return Err(Failure::invalid(format!(
                    "{CALL}: unknown flags {f:#x} for {spec:?} (use MODULE_OPEN_DEFAULT, \
                     MODULE_OPEN_DATA or MODULE_OPEN_ISOLATED)"
                )))
            }
        };
        let init_args = match mode {
            // Nothing of a data object runs, so its init_args are not even looked at.
            OpenMode::Data => InitArgs::Null,
            // SAFETY: the caller's contract on init_args.
            _ => unsafe { init_args_from(CALL, init_args) }?,
        };
        // SAFETY: the C caller's promise (this function's `# Safety`): `spec` names a module
        // built for the interface, whose constructors and module_init may run here.
        let opened = unsafe {
            l.loader.open_with(
                spec,
                &OpenOptions { mode, init_args, isolation, ..OpenOptions::default() },
            )
        };
        let handle = opened.map_err(|e| l.shared.fail(e))?;
        Ok(Box::into_raw(Box::new(module_handle_t {
            handle: Some(handle),
            shared: Arc::clone(&l.shared),
        })))
    })
}

/// The address of the symbol `name` defined in the handle's module, or NULL with the reason in
/// `*errp` (when not NULL) and `module_loader_last_error()` of the handle's loader. Only the
/// module itself is searched, not its dependencies nor the libraries it uses. The address is
/// valid until the handle is closed.
///
/// # Safety
/// `handle` is NULL or a live handle; `name` is NULL or a NUL-terminated string; `errp` is NULL
/// or valid for one write.
#[no_mangle]
pub unsafe extern "C" fn module_loader_sym(
    handle: *mut module_handle_t,
    name: *const c_char,
    errp: *mut module_error_t,
) -> *mut c_void {
    const CALL: &str = "module_loader_sym";
    // SAFETY: the caller passes NULL or a live handle not being closed.
    let h = unsafe { handle.as_ref() };
    let sink = h.map_or(ErrorSink::none(), |h| &h.shared.errors);
    // SAFETY: the caller passes NULL or a pointer valid for one write.
    let errp = unsafe { errp.as_mut() };
    run_ptr(CALL, sink, errp, || {
        let h = h.ok_or_else(|| Failure::invalid(format!("{CALL}: handle is NULL")))?;
        // SAFETY: the caller's contract on name.
        let name = unsafe { str_arg(CALL, "name", name) }?;
        h.handle(CALL)?.symbol_ptr(name).map_err(|e| h.shared.fail(e))
    })
}

/// Close a handle. When it was the module's last reference, the module's optional
/// `module_can_unload()` is asked, then its `module_fini()` runs and it is unloaded, and the
/// references it held on its dependencies are released.
///
/// On `MODULE_ERR_BUSY` nothing happened and the handle stays valid, so the caller can retry:
/// other modules depend on this one (the text names them), calls into it are still running,
/// or its `module_can_unload()` refused (the text has its code). On any other result the
/// handle is freed and must not be used again. NULL gives `MODULE_ERR_INVALID_ARGUMENT`.
///
/// # Safety
/// `handle` is NULL or a live handle that no other thread uses during this call.
#[no_mangle]
pub unsafe extern "C" fn module_loader_close(handle: *mut module_handle_t) -> module_error_t {
    const CALL: &str = "module_loader_close";
    if handle.is_null() {
        return run_code(CALL, ErrorSink::none(), || {
            Err(Failure::invalid(format!("{CALL}: handle is NULL")))
        });
    }
    // SAFETY: the caller passes a live handle that no other thread uses now.
    let hd = unsafe { &mut *handle };
    let shared = Arc::clone(&hd.shared);
    let mut freed = false;
    let code = run_code(CALL, &shared.errors, || {
        let h = hd.handle.take().ok_or_else(|| {
            Failure::invalid(format!("{CALL}: the handle is being closed by another thread"))
        })?;
        match h.close() {
            Ok(()) => {
                freed = true;
                Ok(())
            }
            Err(ce) => {
                match ce.handle {
                    Some(back) => hd.handle = Some(back),
                    None => freed = true,
                }
                Err(shared.fail(ce.error))
            }
        }
    });
    if freed {
        // SAFETY: the handle came from Box::into_raw in module_loader_open, its Handle has been
        // consumed by close(), and the caller will not use the pointer again.
        drop(unsafe { Box::from_raw(handle) });
    }
    code
}

/// Run `func(ctx)` under the crash guard on behalf of the handle's module, exactly as
/// `module_loader_call()` does for the loader's module. After `MODULE_ERR_CRASHED` the module
/// is gone: further calls and look-ups on any of its handles fail with
/// `MODULE_ERR_NOT_LOADED`, and each handle must still be closed.
///
/// # Safety
/// `handle` is NULL or a live handle; `func` is NULL or a function safe to call with `ctx`,
/// whose frames (and those of what it calls) may be abandoned at a fault without any cleanup,
/// as `module_loader_call()` describes.
#[no_mangle]
pub unsafe extern "C" fn module_loader_call_handle(
    handle: *mut module_handle_t,
    func: module_call_fn_t,
    ctx: *mut c_void,
) -> module_error_t {
    const CALL: &str = "module_loader_call_handle";
    // SAFETY: the caller passes NULL or a live handle not being closed.
    let h = unsafe { handle.as_ref() };
    let sink = h.map_or(ErrorSink::none(), |h| &h.shared.errors);
    run_code(CALL, sink, || {
        let h = h.ok_or_else(|| Failure::invalid(format!("{CALL}: handle is NULL")))?;
        let f = func.ok_or_else(|| Failure::invalid(format!("{CALL}: func is NULL")))?;
        // SAFETY: the caller promises f is safe to call with ctx; no Rust frame with a
        // destructor lies between the guard's jump point (inside call_raw) and f.
        unsafe { h.handle(CALL)?.call_raw(f, ctx) }.map_err(|e| h.shared.fail(e))
    })
}

/// Called by `module_loader_modinfo()` once per `.modinfo` entry, in file order: `tag` and
/// `value` are valid only during the call. Return 0 to go on, non-zero to stop.
#[allow(non_camel_case_types)]
pub type module_modinfo_fn_t = Option<
    unsafe extern "C" fn(tag: *const c_char, value: *const c_char, ctx: *mut c_void) -> c_int,
>;

/// ---- Metadata --------------------------------------------------------------------------
///
/// Read a module's metadata without running any of its code: the `tag=value` entries that
/// `MODULE_INFO()`, `MODULE_VERSION()`, `MODULE_DESCRIPTION()`, `MODULE_LICENSE()`,
/// `MODULE_AUTHOR()` and `MODULE_DEPENDS()` put in its `.modinfo` section. `spec` is resolved
/// as by `module_loader_open()` (a path or a name along the module path); the file is read,
/// never loaded. `func(tag, value, ctx)` is called for each entry in file order, until it
/// returns non-zero. A module without metadata calls `func` zero times and succeeds.
///
/// Errors: those of resolving the spec, and `MODULE_ERR_LOAD_FAILED` when the file is not an
/// ELF shared object (the text says why).
///
/// # Safety
/// `loader` is NULL or a live loader; `spec` is NULL or a NUL-terminated string; `func` is NULL
/// or a function safe to call with `ctx`.
#[no_mangle]
pub unsafe extern "C" fn module_loader_modinfo(
    loader: *mut module_loader_t,
    spec: *const c_char,
    func: module_modinfo_fn_t,
    ctx: *mut c_void,
) -> module_error_t {
    const CALL: &str = "module_loader_modinfo";
    // SAFETY: the caller passes NULL or a live loader.
    let l = unsafe { loader.as_ref() };
    run_code(CALL, sink_of(l), || {
        let l = l.ok_or_else(|| Failure::invalid(format!("{CALL}: loader is NULL")))?;
        // SAFETY: the caller's contract on spec.
        let spec = unsafe { str_arg(CALL, "spec", spec) }?;
        let f = func.ok_or_else(|| Failure::invalid(format!("{CALL}: func is NULL")))?;
        let path = l.loader.resolve(spec).map_err(|e| l.shared.fail(e))?;
        let info = kmodlike::modinfo(Path::new(&path)).map_err(|e| l.shared.fail(e))?;
        for (tag, value) in &info.entries {
            // Entries come from NUL-separated strings, so they hold no NUL.
            let tag = CString::new(tag.as_str()).unwrap_or_default();
            let value = CString::new(value.as_str()).unwrap_or_default();
            // SAFETY: the caller promises f is safe to call with ctx; both strings live
            // until after the call.
            if unsafe { f(tag.as_ptr(), value.as_ptr(), ctx) } != 0 {
                break;
            }
        }
        Ok(())
    })
}
