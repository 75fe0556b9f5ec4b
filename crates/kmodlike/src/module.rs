//! One loaded module instance: its library, where it is mapped, its interface entry points,
//! its counters, and the guarded calls into it.

use std::collections::HashMap;
use std::ffi::{c_void, CStr, CString};
use std::mem::MaybeUninit;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::SystemTime;

use libloading::os::unix::Library;

use crate::error::{Error, Result};
use crate::guard;
use crate::image::Checked;
use crate::image::Image;
use crate::interface::{ModuleInitArgs, Version, MODULE_INIT_ARGS_VERSION_CURRENT};
use crate::options::{LogSink, OpenMode};

/// The life of a module instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum ModuleState {
    /// Being opened: dependencies, `dlopen`, validation, `module_init`.
    Loading,
    /// Loaded and callable.
    Live,
    /// Being closed: `module_can_unload`, `module_fini`.
    Unloading,
    /// Raised a fatal signal: logically unloaded, calls and symbols refused.
    Crashed,
    /// Closed.
    Unloaded,
    /// A call into it ran past its deadline and could not be interrupted (its thread blocks
    /// the interrupt signal, or did not leave the call): no new calls, symbols refused;
    /// unloading it removes it and leaves that thread alone (its code stays mapped).
    Hung,
}

impl ModuleState {
    fn from_u32(v: u32) -> Self {
        match v {
            0 => ModuleState::Loading,
            1 => ModuleState::Live,
            2 => ModuleState::Unloading,
            3 => ModuleState::Crashed,
            5 => ModuleState::Hung,
            _ => ModuleState::Unloaded,
        }
    }

    /// A lowercase name: `"live"`, `"crashed"`, ...
    pub fn name(self) -> &'static str {
        match self {
            ModuleState::Loading => "loading",
            ModuleState::Live => "live",
            ModuleState::Unloading => "unloading",
            ModuleState::Crashed => "crashed",
            ModuleState::Hung => "hung",
            ModuleState::Unloaded => "unloaded",
        }
    }
}

pub(crate) use crate::image::FileKey;

/// The interface entry points of a module.
#[derive(Clone, Copy, Default)]
pub(crate) struct EntryPoints {
    pub init: Option<unsafe extern "C" fn(*const c_void) -> i32>,
    pub fini: Option<unsafe extern "C" fn()>,
    pub can_unload: Option<unsafe extern "C" fn() -> i32>,
}

/// What the interface check found: set once, after `dlopen`, before any entry point runs.
#[derive(Clone, Copy, Default)]
pub(crate) struct Interface {
    /// A legacy `mod_hello`-only module.
    pub legacy: bool,
    /// The version it reported.
    pub version: Option<Version>,
    pub entry: EntryPoints,
}

/// Who receives a module's `log` and `get_time` calls.
pub(crate) enum HostCallbacks {
    /// The loader's own log sink (module name, level, message).
    Loader(Option<LogSink>),
    /// A C host's own callbacks, called with the guard suspended.
    Raw(ModuleInitArgs),
    /// The module got NULL init args.
    Null,
}

pub(crate) struct Module {
    pub id: u64,
    pub name: String,
    pub path: PathBuf,
    pub key: FileKey,
    pub mode: OpenMode,
    interface: OnceLock<Interface>,
    /// What validation found in its file.
    pub checked: Arc<Checked>,
    pub size: u64,
    pub loaded_at: SystemTime,
    /// `[start, end)` of every `PT_LOAD` segment.
    pub segments: Vec<(u64, u64)>,
    /// `[start, end)` of the executable ones.
    pub text: Vec<(u64, u64)>,
    /// Where the first segment is mapped (`dladdr`'s `dli_fbase` for our symbols).
    pub base: u64,
    /// What ld.so added to the file's addresses (`l_addr`).
    pub bias: u64,
    pub host: HostCallbacks,
    /// The init args handed to the module. Kept at a stable address for the module's life
    /// (the module may keep the pointer); a crashed instance whose code stays mapped is never
    /// freed, since its threads may still read them.
    pub init_args: Option<Box<ModuleInitArgs>>,
    pub lib: Mutex<Option<Library>>,
    /// The bytes ld.so mapped, held open (and leased) while the module is loaded.
    pub image: Mutex<Option<Image>>,
    /// The extra reference that made the module's symbols global (it is a dependency).
    pub global_ref: Mutex<Option<Library>>,
    /// What the guarded-call entry reads: the state, the id, the call count. Pooled: given
    /// back when the module is dropped.
    pub(crate) guard: &'static guard::GuardModule,
    pub crashes: AtomicU64,
    symbols: RwLock<HashMap<Box<str>, usize>>,
    /// Declared invoke entry points already resolved: a few, scanned in order (cheaper than
    /// hashing the name).
    invokable: RwLock<Vec<(Box<str>, usize)>>,
    /// Why the module is dead, for errors on later calls.
    pub death: Mutex<Option<String>>,
    /// What the trust checks said of its file (set once, before any of its code runs).
    pub trust: OnceLock<crate::trust::TrustInfo>,
    /// The process an isolated module runs in; `None` for a module in this process.
    pub isolated: Option<Arc<crate::isolated::Child>>,
}

// SAFETY: the raw pointers inside (init args' user_data, function pointers) are only handed
// to the module's own code; all mutable state is behind atomics and mutexes.
unsafe impl Send for Module {}
// SAFETY: as above: shared access goes through atomics, mutexes and read-only fields.
unsafe impl Sync for Module {}

impl Module {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: u64,
        name: String,
        path: PathBuf,
        key: FileKey,
        mode: OpenMode,
        facts: Arc<Checked>,
        size: u64,
        lib: Library,
        image: Image,
        segments: Vec<(u64, u64)>,
        text: Vec<(u64, u64)>,
        base: u64,
        bias: u64,
        host: HostCallbacks,
    ) -> Module {
        Module {
            id,
            name,
            path,
            key,
            mode,
            interface: OnceLock::new(),
            checked: facts,
            size,
            loaded_at: SystemTime::now(),
            segments,
            text,
            base,
            bias,
            init_args: init_args_for(&host, mode),
            host,
            lib: Mutex::new(Some(lib)),
            image: Mutex::new(Some(image)),
            global_ref: Mutex::new(None),
            guard: guard::GuardModule::acquire(id),
            crashes: AtomicU64::new(0),
            symbols: RwLock::new(HashMap::new()),
            invokable: RwLock::new(Vec::new()),
            death: Mutex::new(None),
            trust: OnceLock::new(),
            isolated: None,
        }
    }

    /// An isolated module: its code runs in `child`; nothing of it is mapped here.
    pub(crate) fn new_isolated(
        id: u64,
        name: String,
        path: PathBuf,
        key: FileKey,
        facts: Arc<Checked>,
        child: Arc<crate::isolated::Child>,
    ) -> Module {
        Module {
            id,
            name,
            path,
            key,
            mode: OpenMode::Module,
            interface: OnceLock::new(),
            checked: facts,
            size: 0,
            loaded_at: SystemTime::now(),
            segments: Vec::new(),
            text: Vec::new(),
            base: 0,
            bias: 0,
            host: HostCallbacks::Null,
            init_args: None,
            lib: Mutex::new(None),
            image: Mutex::new(None),
            global_ref: Mutex::new(None),
            guard: guard::GuardModule::acquire(id),
            crashes: AtomicU64::new(0),
            symbols: RwLock::new(HashMap::new()),
            invokable: RwLock::new(Vec::new()),
            death: Mutex::new(None),
            trust: OnceLock::new(),
            isolated: Some(child),
        }
    }

    /// The error for raw access (`what`) to an isolated module's code.
    pub(crate) fn isolated_refusal(&self, what: &str) -> Error {
        let pid = self.isolated.as_ref().map_or(0, |c| c.pid());
        Error::InvalidArgument(format!(
            "module {} is isolated: it runs in its own process (pid {pid}), so {what} cannot \
             reach its code from here; call its functions with Handle::invoke \
             (module_loader_invoke in C, kmodctl invoke)",
            self.name
        ))
    }

    /// Whether the module declares `symbol` as an invoke entry point (`MODULE_INVOKE(symbol)`,
    /// `kmodlike_module::invoke!`): the `.modinfo` entry `invoke=<symbol>`.
    pub(crate) fn declares_invoke(&self, symbol: &str) -> bool {
        self.checked.modinfo.entries.iter().any(|(t, v)| t == "invoke" && v == symbol)
    }

    /// The address of the declared invoke entry point `symbol` (cached after the first look-up).
    pub(crate) fn invoke_entry(&self, symbol: &str) -> Result<*mut c_void> {
        {
            let cache = self.invokable.read().unwrap_or_else(|e| e.into_inner());
            if let Some((_, addr)) = cache.iter().find(|(n, _)| &**n == symbol) {
                return Ok(*addr as *mut c_void);
            }
        }
        if !self.declares_invoke(symbol) {
            return Err(self.undeclared_invoke(symbol));
        }
        let addr = self.symbol(symbol)?;
        self.invokable
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .push((symbol.into(), addr as usize));
        Ok(addr)
    }

    /// The error for an invoke of a function the module does not declare.
    pub(crate) fn undeclared_invoke(&self, symbol: &str) -> Error {
        Error::SymbolNotFound {
            module: self.name.clone(),
            symbol: symbol.to_owned(),
            detail: format!(
                "it is not declared as an invoke entry point; the module must declare it with \
                 MODULE_INVOKE({symbol}) in C or kmodlike_module::invoke! in Rust"
            ),
        }
    }

    // The state and the calls in flight form a Dekker pair (a caller publishes its slot then
    // reads the state; a crash or unload writes the state then scans the slots after a
    // membarrier, see guard::calls_in_flight), so every access of the state is SeqCst.
    pub(crate) fn state(&self) -> ModuleState {
        ModuleState::from_u32(self.guard.state.load(Ordering::SeqCst))
    }

    pub(crate) fn set_state(&self, s: ModuleState) {
        self.guard.state.store(s as u32, Ordering::SeqCst);
    }

    /// Move from `from` to `to`; false (and no change) when the state was not `from`.
    pub(crate) fn compare_set_state(&self, from: ModuleState, to: ModuleState) -> bool {
        self.guard
            .state
            .compare_exchange(from as u32, to as u32, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }

    /// Record what the interface check found (once).
    pub(crate) fn set_interface(&self, interface: Interface) {
        let _ = self.interface.set(interface);
    }

    fn interface(&self) -> Interface {
        self.interface.get().copied().unwrap_or_default()
    }

    /// A legacy `mod_hello`-only module.
    pub(crate) fn legacy(&self) -> bool {
        self.interface().legacy
    }

    /// The interface version it reported.
    pub(crate) fn version(&self) -> Option<Version> {
        self.interface().version
    }

    /// Its interface entry points (none before the check, and for data objects).
    pub(crate) fn entry(&self) -> EntryPoints {
        self.interface().entry
    }

    /// Guarded calls running in the module now: the drain check of unloading and of
    /// reclaiming a crashed instance (`LoaderShared::reclaim_if_drained`), and nothing else.
    /// Set a state other than live first: a call this misses then runs nothing (see
    /// [`guard::calls_in_flight`]).
    pub(crate) fn calls_in_flight(&self) -> usize {
        guard::calls_in_flight(self.guard)
    }

    /// Guarded calls made into the module (approximate when several threads call it at once:
    /// the entry counts with a plain add).
    pub(crate) fn calls(&self) -> u64 {
        self.guard.calls.load(Ordering::Relaxed)
    }

    pub(crate) fn contains(&self, addr: u64) -> bool {
        self.segments.iter().any(|&(s, e)| addr >= s && addr < e)
    }

    pub(crate) fn not_live_error(&self) -> Error {
        let reason = match self.state() {
            ModuleState::Crashed | ModuleState::Hung => {
                self.death.lock().unwrap_or_else(|e| e.into_inner()).clone()
            }
            ModuleState::Unloaded => Some("it was unloaded".to_owned()),
            ModuleState::Loading => Some("it is still loading".to_owned()),
            ModuleState::Unloading => Some("it is being unloaded".to_owned()),
            ModuleState::Live => None,
        };
        Error::NotLoaded { module: self.name.clone(), reason: reason.unwrap_or_default() }
    }

    /// Look up `name` with `dlsym` and accept it only when `dladdr` places it in this module.
    /// Used during loading (no state check, no cache).
    pub(crate) fn lookup_own(&self, name: &str) -> Result<*mut c_void> {
        let not_found = |detail: String| Error::SymbolNotFound {
            module: self.name.clone(),
            symbol: name.to_owned(),
            detail,
        };
        let cname =
            CString::new(name).map_err(|_| not_found("the name contains a NUL byte".into()))?;
        let lib = self.lib.lock().unwrap_or_else(|e| e.into_inner());
        let lib = lib.as_ref().ok_or_else(|| not_found("the module is unmapped".into()))?;
        // SAFETY: we only read the symbol's address as a raw pointer; nothing is called.
        let sym = unsafe { lib.get::<*mut c_void>(cname.as_bytes_with_nul()) };
        let addr = match sym {
            Ok(s) => s.into_raw(),
            Err(e) => return Err(not_found(e.to_string())),
        };
        if addr.is_null() {
            return Err(not_found("the symbol's value is NULL".into()));
        }
        // Ours when it lies in one of our segments; otherwise `dladdr` names the object that
        // defines it (a dependency, libc), for the error.
        if self.contains(addr as u64) {
            return Ok(addr);
        }
        let mut info = MaybeUninit::<libc::Dl_info>::zeroed();
        // SAFETY: dladdr only reads the loader's tables and fills `info`.
        let found = unsafe { libc::dladdr(addr, info.as_mut_ptr()) } != 0;
        // SAFETY: zero-initialised, and filled by dladdr when it returned non-zero.
        let info = unsafe { info.assume_init() };
        if found && info.dli_fbase as u64 == self.base {
            return Ok(addr);
        }
        let owner = if found && !info.dli_fname.is_null() {
            // SAFETY: dladdr returned a NUL-terminated file name owned by the loader.
            unsafe { CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned()
        } else {
            "another object".to_owned()
        };
        Err(not_found(format!("it is defined in {owner}, not in the module itself")))
    }

    /// Where the interface export `name` is, from the module's own symbol table (what `dlsym`
    /// would answer, without asking ld.so); `None` when only `dlsym` can say.
    pub(crate) fn interface_export(&self, name: &str) -> Option<*mut c_void> {
        let addr = self.bias.checked_add(self.checked.offset_of(name)?)?;
        self.contains(addr).then_some(addr as *mut c_void)
    }

    /// [`lookup_own`](Self::lookup_own) with the state check and a cache.
    pub(crate) fn symbol(&self, name: &str) -> Result<*mut c_void> {
        if self.isolated.is_some() {
            return Err(self.isolated_refusal(&format!("the address of symbol {name:?}")));
        }
        // Unloading: the code is still mapped, and the unload may yet find a call in flight
        // and put the module back to live (a call in flight must not see its module vanish).
        if !matches!(self.state(), ModuleState::Live | ModuleState::Unloading) {
            return Err(self.not_live_error());
        }
        if let Some(&addr) = self.symbols.read().unwrap_or_else(|e| e.into_inner()).get(name) {
            return Ok(addr as *mut c_void);
        }
        let addr = self.lookup_own(name)?;
        self.symbols.write().unwrap_or_else(|e| e.into_inner()).insert(name.into(), addr as usize);
        Ok(addr)
    }

    /// Run `f(ctx)` under the guard, attributed to this module. No state check.
    ///
    /// # Safety
    /// As [`guard::call`]: `f` must be safe to call with `ctx`, and the frames between here
    /// and a fault own nothing with a destructor.
    pub(crate) unsafe fn guarded(
        &self,
        f: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
    ) -> std::result::Result<(), guard::RawCrash> {
        // SAFETY: forwarded contract.
        unsafe { guard::call(self.id, f, ctx) }
    }

    /// [`guarded`](Self::guarded), interrupted at `dl`'s deadline when there is one.
    ///
    /// # Safety
    /// As [`guarded`](Self::guarded).
    pub(crate) unsafe fn guarded_until(
        &self,
        f: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
        dl: Option<&guard::deadline::Deadline>,
    ) -> std::result::Result<(), guard::RawCrash> {
        // SAFETY: forwarded contract.
        unsafe { guard::call_until(self.id, f, ctx, dl) }
    }
}

impl Drop for Module {
    /// The last reference is gone: no handle can call the module any more, so its guard record
    /// goes back to the pool (a stale C pointer to it reads "unloaded", or a later module's).
    fn drop(&mut self) {
        guard::GuardModule::release(self.guard, ModuleState::Unloaded as u32);
    }
}

/// The init args a module receives, kept at a stable address by the module.
fn init_args_for(host: &HostCallbacks, mode: OpenMode) -> Option<Box<ModuleInitArgs>> {
    match (host, mode) {
        (_, OpenMode::Data) | (HostCallbacks::Null, _) => None,
        (HostCallbacks::Loader(sink), _) => Some(Box::new(ModuleInitArgs {
            version: MODULE_INIT_ARGS_VERSION_CURRENT,
            log: sink.as_ref().map(|_| guard::log_trampoline()),
            get_time: Some(guard::get_time_trampoline()),
            user_data: std::ptr::null_mut(),
        })),
        (HostCallbacks::Raw(a), _) => Some(Box::new(ModuleInitArgs {
            version: a.version,
            log: a.log.map(|_| guard::log_trampoline()),
            get_time: a.get_time.map(|_| guard::get_time_trampoline()),
            user_data: a.user_data,
        })),
    }
}

/// `f(arg)` packed for a guarded call through [`trampoline`].
#[repr(C)]
pub(crate) struct CallCtx<A, R> {
    pub f: unsafe extern "C" fn(A) -> R,
    pub arg: A,
    pub ret: MaybeUninit<R>,
}

/// Calls `ctx.f(ctx.arg)` and stores the result. It owns nothing with a destructor (`A` and
/// `R` are `Copy`), so a `siglongjmp` out of it skips no drop.
pub(crate) unsafe extern "C" fn trampoline<A: Copy, R: Copy>(ctx: *mut c_void) {
    // SAFETY: `ctx` points to a live `CallCtx<A, R>` owned by the caller of the guarded call.
    let c = unsafe { &mut *(ctx as *mut CallCtx<A, R>) };
    // SAFETY: the caller vouched for `f` when it built the context.
    let r = unsafe { (c.f)(c.arg) };
    c.ret.write(r);
}

/// Context for calling an entry point with no argument.
#[repr(C)]
pub(crate) struct Call0Ctx<R> {
    pub f: unsafe extern "C" fn() -> R,
    pub ret: MaybeUninit<R>,
}

/// Calls `ctx.f()` and stores the result; owns nothing droppable.
pub(crate) unsafe extern "C" fn trampoline0<R: Copy>(ctx: *mut c_void) {
    // SAFETY: `ctx` points to a live `Call0Ctx<R>` owned by the caller of the guarded call.
    let c = unsafe { &mut *(ctx as *mut Call0Ctx<R>) };
    // SAFETY: the caller vouched for `f` when it built the context.
    let r = unsafe { (c.f)() };
    c.ret.write(r);
}
