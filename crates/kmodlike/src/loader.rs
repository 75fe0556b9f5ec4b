//! The loader: opens modules by spec, shares them by reference count, resolves their
//! dependencies, runs every entry into module code under the crash guard, and unloads a module
//! that crashes while the host keeps running.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{c_char, c_void, CStr};
use std::mem::MaybeUninit;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, RwLock, Weak};
use std::time::{Duration, Instant, SystemTime};

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_LOCAL, RTLD_NOW};

use crate::crash::{self, CrashReport, Phase};
use crate::error::{BusyReason, Error, Result};
use crate::guard::{self, RawCrash};
use crate::interface::{symbols, ModuleInitArgs, Version, MODULE_INIT_ARGS_VERSION_CURRENT};
use crate::modinfo::FileFacts;
use crate::module::{
    mapping_of, trampoline, trampoline0, Call0Ctx, CallCtx, EntryPoints, FileKey, HostCallbacks,
    Module, ModuleState, OpenMode,
};
use crate::probe;
use crate::resolve::{module_name_for, resolve_spec, resolve_spec_with, search_path};

/// The loader's log sink: `(module name, level, message)`.
pub type LogSink = Arc<dyn Fn(&str, i32, &str) + Send + Sync>;
type Subscriber = Arc<dyn Fn(&Event) + Send + Sync>;

/// What happens to a crashed module's code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrashPolicy {
    /// The default: the code stays mapped forever (no `dlclose`), because a thread the module
    /// started may still run in it; unloading under such a thread kills the host. The module
    /// is gone logically, and loading it again maps a fresh private copy.
    #[default]
    Retain,
    /// Unmap the module once the calls in flight in it have drained. Only for modules known to
    /// start no threads.
    Reclaim,
}

/// Refuse a module after `max_crashes` crashes within `window`, until cleared with
/// [`Loader::clear_quarantine`]. Off by default in the library; the daemon turns it on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CrashLoop {
    /// Crashes that trigger the quarantine.
    pub max_crashes: usize,
    /// The window they are counted in.
    pub window: Duration,
}

impl Default for CrashLoop {
    /// 5 crashes within 60 seconds.
    fn default() -> Self {
        CrashLoop { max_crashes: 5, window: Duration::from_secs(60) }
    }
}

/// The `module_init_args_t` a module receives.
#[derive(Debug, Clone, Copy, Default)]
pub enum InitArgs {
    /// The loader's own: its log sink (or NULL `log` when it has none) and a monotonic clock.
    #[default]
    Loader,
    /// `module_init(NULL)`.
    Null,
    /// A C host's own struct. Its `log` and `get_time` are wrapped so they run with the guard
    /// suspended: a fault in host code stays fatal, as it must.
    Raw(ModuleInitArgs),
}

/// How to open one module.
#[derive(Debug, Clone, Copy, Default)]
pub struct OpenOptions {
    /// Module (interface required) or data (symbols only).
    pub mode: OpenMode,
    /// What `module_init` receives.
    pub init_args: InitArgs,
}

impl OpenOptions {
    /// Options for a data object: no interface, no init or fini.
    pub fn data() -> Self {
        OpenOptions { mode: OpenMode::Data, init_args: InitArgs::Null }
    }
}

/// A snapshot of one loaded module.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct ModuleInfo {
    /// Process-unique instance id.
    pub id: u64,
    /// The module's name (file name up to `.so`).
    pub name: String,
    /// The file it was loaded from.
    pub path: PathBuf,
    /// Its state.
    pub state: ModuleState,
    /// References held: handles, plus one per dependent module (lsmod's "used by" count).
    pub refcount: usize,
    /// Interface version it reported (none for legacy and data objects).
    pub interface_version: Option<Version>,
    /// A legacy `mod_hello`-only module.
    pub legacy: bool,
    /// How it was opened.
    pub mode: OpenMode,
    /// Names of the modules it depends on.
    pub dependencies: Vec<String>,
    /// Names of the loaded modules that depend on it.
    pub holders: Vec<String>,
    /// Its `.modinfo` entries.
    pub modinfo: Vec<(String, String)>,
    /// When it was loaded.
    #[cfg_attr(feature = "serde", serde(serialize_with = "crate::crash::serialize_time"))]
    pub loaded_at: SystemTime,
    /// Guarded calls made into it.
    pub calls: u64,
    /// Crashes of this instance (0 or 1: a crash unloads it).
    pub crashes: u64,
    /// Bytes mapped for it.
    pub size: u64,
}

/// Something that happened to a module, for [`Loader::subscribe`].
#[derive(Debug, Clone)]
pub enum Event {
    /// A module was loaded.
    Loaded(ModuleInfo),
    /// A module was unloaded.
    Unloaded {
        /// Its name.
        name: String,
    },
    /// A module crashed and was unloaded.
    Crashed(Box<CrashReport>),
}

struct Config {
    strict: bool,
    probe: bool,
    probe_helper: Option<PathBuf>,
    probe_timeout: Duration,
    crash_policy: CrashPolicy,
    crash_loop: Option<CrashLoop>,
    log: Option<LogSink>,
    guard_dlopen: bool,
}

/// Builds a [`Loader`].
pub struct LoaderBuilder {
    cfg: Config,
    path: Vec<PathBuf>,
}

impl LoaderBuilder {
    /// Directories searched for module names, before `KMODLIKE_MODULE_PATH` and the defaults.
    pub fn module_path(mut self, dirs: Vec<PathBuf>) -> Self {
        self.path = dirs;
        self
    }
    /// Refuse legacy `mod_hello`-only modules.
    pub fn strict(mut self, strict: bool) -> Self {
        self.cfg.strict = strict;
        self
    }
    /// Load every module first in a short-lived child process (the `kmodlike-probe` helper),
    /// so a crash in a constructor or in `module_init` never reaches this process.
    pub fn probe(mut self, probe: bool) -> Self {
        self.cfg.probe = probe;
        self
    }
    /// The probe helper binary. Default: `$KMODLIKE_PROBE`, else `kmodlike-probe` next to the
    /// running executable, else `<exe dir>/../libexec/kmodlike/kmodlike-probe`.
    pub fn probe_helper(mut self, path: PathBuf) -> Self {
        self.cfg.probe_helper = Some(path);
        self
    }
    /// How long the probe may take before it is killed (default 10 s).
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.probe_timeout = timeout;
        self
    }
    /// What happens to a crashed module's code (default [`CrashPolicy::Retain`]).
    pub fn crash_policy(mut self, policy: CrashPolicy) -> Self {
        self.cfg.crash_policy = policy;
        self
    }
    /// The crash-loop policy (default off).
    pub fn crash_loop(mut self, policy: Option<CrashLoop>) -> Self {
        self.cfg.crash_loop = policy;
        self
    }
    /// Where modules' log messages go: `(module name, level, message)`. Without it, modules
    /// opened with [`InitArgs::Loader`] get a NULL `log`.
    ///
    /// The sink runs on the module's thread, with the guard suspended; it must not call back
    /// into this loader.
    pub fn log(mut self, sink: impl Fn(&str, i32, &str) + Send + Sync + 'static) -> Self {
        self.cfg.log = Some(Arc::new(sink));
        self
    }
    /// Run `dlopen` itself under the guard. Only the probe child does this: a jump out of a
    /// constructor leaves ld.so's lock held, which only a process about to exit can afford.
    #[doc(hidden)]
    pub fn guard_dlopen_in_probe_child(mut self, on: bool) -> Self {
        self.cfg.guard_dlopen = on;
        self
    }
    /// Build the loader.
    pub fn build(self) -> Loader {
        guard::install();
        guard::set_host_sinks(host_log, host_get_time);
        guard::set_thread_crash_sink(on_thread_crash);
        Loader {
            shared: Arc::new_cyclic(|me| LoaderShared {
                me: me.clone(),
                cfg: self.cfg,
                path: RwLock::new(self.path),
                reg: Mutex::new(Registry::default()),
                subscribers: RwLock::new(Vec::new()),
            }),
        }
    }
}

struct Entry {
    module: Arc<Module>,
    /// User references (handles); dependents are counted in `holders`.
    refs: usize,
    /// Modules this one depends on, in the order they were opened.
    deps: Vec<u64>,
    /// Loaded modules that depend on this one.
    holders: Vec<u64>,
}

#[derive(Default)]
struct Registry {
    /// Keyed by instance id; ids grow with every load, so this is also load order.
    entries: BTreeMap<u64, Entry>,
    by_key: HashMap<FileKey, u64>,
    by_name: HashMap<String, u64>,
    crashes: VecDeque<CrashReport>,
    crash_times: HashMap<String, VecDeque<Instant>>,
    quarantined: HashMap<String, usize>,
    events: Vec<Event>,
}

/// Crash reports kept per loader.
const CRASH_HISTORY: usize = 256;

impl Registry {
    fn holders(&self, id: u64) -> Vec<String> {
        let mut h: Vec<String> = self.entries.get(&id).map_or_else(Vec::new, |e| {
            e.holders
                .iter()
                .filter_map(|h| self.entries.get(h).map(|e| e.module.name.clone()))
                .collect()
        });
        h.sort();
        h
    }

    fn is_held(&self, id: u64) -> bool {
        self.entries.get(&id).is_some_and(|e| !e.holders.is_empty())
    }

    /// Record that `id` depends on `deps`.
    fn link(&mut self, id: u64, deps: Vec<u64>) {
        for d in &deps {
            if let Some(dep) = self.entries.get_mut(d) {
                dep.holders.push(id);
            }
        }
        self.entries.get_mut(&id).expect("linking a registered module").deps = deps;
    }

    fn info(&self, id: u64) -> Option<ModuleInfo> {
        let e = self.entries.get(&id)?;
        let m = &e.module;
        Some(ModuleInfo {
            id: m.id,
            name: m.name.clone(),
            path: m.path.clone(),
            state: m.state(),
            refcount: e.refs + e.holders.len(),
            interface_version: m.version,
            legacy: m.legacy,
            mode: m.mode,
            dependencies: e
                .deps
                .iter()
                .filter_map(|d| self.entries.get(d).map(|e| e.module.name.clone()))
                .collect(),
            holders: self.holders(id),
            modinfo: m.modinfo.entries.clone(),
            loaded_at: m.loaded_at,
            calls: m.calls(),
            crashes: m.crashes.load(Ordering::Relaxed),
            size: m.size,
        })
    }

    fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        self.by_key.remove(&e.module.key);
        self.by_name.remove(&e.module.name);
        for d in &e.deps {
            if let Some(dep) = self.entries.get_mut(d) {
                dep.holders.retain(|&h| h != id);
            }
        }
        Some(e)
    }
}

pub(crate) struct LoaderShared {
    me: Weak<LoaderShared>,
    cfg: Config,
    path: RwLock<Vec<PathBuf>>,
    reg: Mutex<Registry>,
    subscribers: RwLock<Vec<Subscriber>>,
}

/// Every module instance in the process, for the guard's callbacks (host `log` calls and
/// crashes on module threads), which know only a module id.
static MODULES: Mutex<BTreeMap<u64, ModuleLink>> = Mutex::new(BTreeMap::new());

/// Weak links to a module instance and to its loader.
type ModuleLink = (Weak<Module>, Weak<LoaderShared>);
/// Files whose code stays mapped after a crash: loading them again must map a fresh copy.
static CRASHED_FILES: Mutex<Option<HashSet<FileKey>>> = Mutex::new(None);
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn lookup_module(id: u64) -> Option<(Arc<Module>, Option<Arc<LoaderShared>>)> {
    let table = lock(&MODULES);
    let (m, l) = table.get(&id)?;
    Some((m.upgrade()?, l.upgrade()))
}

fn host_log(id: Option<u64>, level: i32, msg: *const c_char) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the module passed a NUL-terminated string, as the interface requires.
    let text = unsafe { CStr::from_ptr(msg) };
    match id.and_then(lookup_module) {
        Some((m, _)) => match &m.host {
            HostCallbacks::Loader(Some(sink)) => sink(&m.name, level, &text.to_string_lossy()),
            HostCallbacks::Raw(ModuleInitArgs { log: Some(log), .. }) => {
                // SAFETY: the host gave us this callback for exactly this use.
                unsafe { log(level, msg) }
            }
            _ => {}
        },
        None => eprintln!("kmodlike: log from an unidentified module: {}", text.to_string_lossy()),
    }
}

fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

fn host_get_time(id: Option<u64>) -> u64 {
    if let Some((m, _)) = id.and_then(lookup_module) {
        if let HostCallbacks::Raw(ModuleInitArgs { get_time: Some(get_time), .. }) = &m.host {
            // SAFETY: the host gave us this callback for exactly this use.
            return unsafe { get_time() };
        }
    }
    monotonic_ns()
}

fn on_thread_crash(raw: RawCrash) {
    let Some((module, Some(loader))) = lookup_module(raw.module_id) else {
        eprintln!("kmodlike: a module thread crashed with signal {} (module unknown)", raw.signo);
        return;
    };
    loader.locked(|reg| {
        loader.crash_locked(reg, &module, &raw, Phase::Thread);
    });
}

/// The module loader. Cheap to clone: clones share one registry.
#[derive(Clone)]
pub struct Loader {
    shared: Arc<LoaderShared>,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::new()
    }
}

impl std::fmt::Debug for Loader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loader").field("modules", &self.list().len()).finish()
    }
}

impl Loader {
    /// A loader with the defaults: module path from `KMODLIKE_MODULE_PATH` and the built-in
    /// directories, legacy modules accepted, no probe, crashed code retained, no crash-loop
    /// policy, no log sink.
    pub fn new() -> Loader {
        Loader::builder().build()
    }

    /// Configure a loader.
    pub fn builder() -> LoaderBuilder {
        LoaderBuilder {
            cfg: Config {
                strict: false,
                probe: false,
                probe_helper: None,
                probe_timeout: Duration::from_secs(10),
                crash_policy: CrashPolicy::Retain,
                crash_loop: None,
                log: None,
                guard_dlopen: false,
            },
            path: Vec::new(),
        }
    }

    /// Open a module with the default options (interface required, the loader's init args).
    pub fn open(&self, spec: &str) -> Result<Handle> {
        self.open_with(spec, &OpenOptions::default())
    }

    /// Open a module: a path, or `[namespace/[dirspace/]]name` searched along the module path.
    ///
    /// The first open of a file loads it (dependencies first, then `dlopen`, validation and
    /// `module_init` under the guard); later opens of the same file share that instance and
    /// count a reference.
    pub fn open_with(&self, spec: &str, opts: &OpenOptions) -> Result<Handle> {
        let s = &self.shared;
        let id = s.locked(|reg| s.open_locked(reg, spec, opts, &mut Vec::new(), false))?;
        let module = lock(&s.reg).entries.get(&id).map(|e| e.module.clone());
        match module {
            Some(module) => Ok(Handle { module, loader: s.clone(), released: false }),
            None => Err(Error::NotLoaded {
                module: spec.to_owned(),
                reason: "it was unloaded while being opened".into(),
            }),
        }
    }

    /// Replace the configured module directories.
    pub fn set_module_path(&self, dirs: Vec<PathBuf>) {
        *self.shared.path.write().unwrap_or_else(|e| e.into_inner()) = dirs;
    }

    /// The full search list: configured, `KMODLIKE_MODULE_PATH`, built-in defaults.
    pub fn module_path(&self) -> Vec<PathBuf> {
        search_path(&self.shared.path.read().unwrap_or_else(|e| e.into_inner()))
    }

    /// Which file `spec` names.
    pub fn resolve(&self, spec: &str) -> Result<PathBuf> {
        resolve_spec(spec, &self.module_path())
    }

    /// Every loaded module, as one consistent snapshot, in load order.
    pub fn list(&self) -> Vec<ModuleInfo> {
        let reg = lock(&self.shared.reg);
        reg.entries.keys().filter_map(|&id| reg.info(id)).collect()
    }

    /// A new handle (a new reference) to the loaded module named `name`.
    pub fn get(&self, name: &str) -> Result<Handle> {
        let s = &self.shared;
        let mut reg = lock(&s.reg);
        let id = *reg
            .by_name
            .get(name)
            .ok_or_else(|| Error::NotLoaded { module: name.to_owned(), reason: String::new() })?;
        let e = reg.entries.get_mut(&id).expect("by_name points at an entry");
        e.refs += 1;
        Ok(Handle { module: e.module.clone(), loader: s.clone(), released: false })
    }

    /// Crash reports of this loader's modules, newest first.
    pub fn crashes(&self) -> Vec<CrashReport> {
        lock(&self.shared.reg).crashes.iter().cloned().collect()
    }

    /// Names of the quarantined modules and their crash counts.
    pub fn quarantined(&self) -> Vec<(String, usize)> {
        let mut q: Vec<_> =
            lock(&self.shared.reg).quarantined.iter().map(|(k, v)| (k.clone(), *v)).collect();
        q.sort();
        q
    }

    /// Lift the crash-loop quarantine of `name` (and forget its crash count).
    pub fn clear_quarantine(&self, name: &str) -> Result<()> {
        let mut reg = lock(&self.shared.reg);
        reg.crash_times.remove(name);
        match reg.quarantined.remove(name) {
            Some(_) => Ok(()),
            None => Err(Error::InvalidArgument(format!("module {name} is not quarantined"))),
        }
    }

    /// Call `f` for every load, unload and crash, after the loader's lock is released.
    pub fn subscribe(&self, f: impl Fn(&Event) + Send + Sync + 'static) {
        self.shared.subscribers.write().unwrap_or_else(|e| e.into_inner()).push(Arc::new(f));
    }

    /// Unload every module, dependents before their dependencies, newest first. `module_fini`
    /// runs for each; `module_can_unload` is not asked. Handles still held become dead.
    pub fn shutdown(&self) {
        let s = &self.shared;
        s.locked(|reg| {
            while let Some(id) = reg.entries.keys().rev().copied().find(|&id| !reg.is_held(id)) {
                if s.unload_locked(reg, id, false).is_err() {
                    // A crash in fini already removed it; anything else must not loop.
                    reg.remove(id);
                }
            }
        });
    }
}

impl LoaderShared {
    /// Run `f` with the registry locked, then deliver the events it queued.
    fn locked<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let (out, events) = {
            let mut reg = lock(&self.reg);
            let out = f(&mut reg);
            (out, std::mem::take(&mut reg.events))
        };
        if !events.is_empty() {
            let subs = self.subscribers.read().unwrap_or_else(|e| e.into_inner()).clone();
            for ev in &events {
                for s in &subs {
                    s(ev);
                }
            }
        }
        out
    }

    fn open_locked(
        &self,
        reg: &mut Registry,
        spec: &str,
        opts: &OpenOptions,
        chain: &mut Vec<(FileKey, String)>,
        as_dep: bool,
    ) -> Result<u64> {
        let path = resolve_spec_with(spec, || {
            search_path(&self.path.read().unwrap_or_else(|e| e.into_inner()))
        })?;
        let meta = std::fs::metadata(&path).map_err(|source| {
            if source.kind() == std::io::ErrorKind::NotFound {
                Error::NotFound { spec: spec.to_owned(), tried: vec![path.clone()] }
            } else {
                Error::Unreadable { path: path.clone(), source }
            }
        })?;
        if meta.is_dir() {
            let source = std::io::Error::new(std::io::ErrorKind::IsADirectory, "is a directory");
            return Err(Error::Unreadable { path, source });
        }
        let key = (meta.dev(), meta.ino());
        let name = module_name_for(&path);
        if let Some(pos) = chain.iter().position(|(k, _)| *k == key) {
            let mut names: Vec<&str> = chain[pos..].iter().map(|(_, n)| n.as_str()).collect();
            names.push(&name);
            return Err(Error::Dependency {
                module: chain[pos].1.clone(),
                detail: format!("dependency cycle: {}", names.join(" -> ")),
                source: None,
            });
        }
        if let Some(&id) = reg.by_key.get(&key) {
            let e = reg.entries.get_mut(&id).expect("by_key points at an entry");
            if as_dep {
                promote_global(&e.module);
            } else {
                e.refs += 1;
            }
            return Ok(id);
        }
        if let Some(&crashes) = reg.quarantined.get(&name) {
            let window_secs = self.cfg.crash_loop.map(|c| c.window.as_secs()).unwrap_or(0);
            return Err(Error::Quarantined { module: name, crashes, window_secs });
        }
        if let Some(&other) = reg.by_name.get(&name) {
            let existing = reg.entries[&other].module.path.clone();
            return Err(Error::AlreadyLoaded { module: name, existing });
        }
        let data = std::fs::read(&path)
            .map_err(|source| Error::Unreadable { path: path.clone(), source })?;
        let facts = FileFacts::read(&data).unwrap_or_default();

        chain.push((key, name.clone()));
        let mut deps: Vec<u64> = Vec::new();
        for dep in facts.modinfo.depends() {
            let dep_opts = OpenOptions { mode: OpenMode::Module, init_args: opts.init_args };
            match self.open_locked(reg, &dep, &dep_opts, chain, true) {
                Ok(id) => deps.push(id),
                Err(e) => {
                    chain.pop();
                    self.release_all(reg, &deps);
                    return Err(match e {
                        cycle @ Error::Dependency { source: None, .. } => cycle,
                        e => Error::Dependency {
                            module: name.clone(),
                            detail: format!(
                                "dependency {dep:?} (needed by {name}) cannot be opened: {e}"
                            ),
                            source: Some(Box::new(e)),
                        },
                    });
                }
            }
        }
        chain.pop();
        match self.load_new(reg, path, key, name, &data, facts, opts, as_dep) {
            Ok(id) => {
                reg.link(id, deps);
                Ok(id)
            }
            Err(e) => {
                self.release_all(reg, &deps);
                Err(e)
            }
        }
    }

    /// Dependencies let go of by a dependent, last opened first.
    fn release_all(&self, reg: &mut Registry, ids: &[u64]) {
        for &id in ids.iter().rev() {
            self.release_dep_locked(reg, id);
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn load_new(
        &self,
        reg: &mut Registry,
        path: PathBuf,
        key: FileKey,
        name: String,
        data: &[u8],
        facts: FileFacts,
        opts: &OpenOptions,
        as_dep: bool,
    ) -> Result<u64> {
        if self.cfg.probe && opts.mode == OpenMode::Module {
            let dirs = search_path(&self.path.read().unwrap_or_else(|e| e.into_inner()));
            let helper = self.cfg.probe_helper.clone();
            let probe_cfg = probe::ProbeConfig {
                helper,
                dirs,
                strict: self.cfg.strict,
                timeout: self.cfg.probe_timeout,
            };
            if let Err(e) = probe::run(&probe_cfg, &name, &path) {
                if let Error::Crashed(report) = &e {
                    self.record_crash_history(reg, report);
                }
                return Err(e);
            }
        }
        crate::elf::check_before_dlopen(&path, data)?;
        let flags = RTLD_NOW | if as_dep { RTLD_GLOBAL } else { RTLD_LOCAL };
        let fresh_copy = lock(&CRASHED_FILES).as_ref().map(|s| s.contains(&key)).unwrap_or(false);
        let lib = self.dlopen(&path, data, flags, fresh_copy)?;
        let raw = lib.into_raw();
        let (segments, text, base) = mapping_of(raw, &facts.loads);
        // SAFETY: `raw` came from `into_raw` just above and is still open.
        let lib = unsafe { Library::from_raw(raw) };
        let size = segments.iter().map(|(s, e)| e - s).sum();
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        let host = match opts.init_args {
            InitArgs::Loader => HostCallbacks::Loader(self.cfg.log.clone()),
            InitArgs::Null => HostCallbacks::Null,
            InitArgs::Raw(a) => HostCallbacks::Raw(a),
        };
        let mut module = Module::new(
            id,
            name.clone(),
            path.clone(),
            key,
            opts.mode,
            facts.modinfo.clone(),
            size,
            lib,
            segments,
            base,
            host,
        );
        guard::register_module(id, &text);
        let unregister = |m: Module| {
            guard::unregister_module(m.id);
            drop(m);
        };
        if opts.mode == OpenMode::Module {
            if let Err(e) = self.validate(&mut module, &facts) {
                unregister(module);
                return Err(e);
            }
        }
        module.init_args = match (&module.host, opts.mode) {
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
        };
        let module = Arc::new(module);
        lock(&MODULES).insert(id, (Arc::downgrade(&module), self.me.clone()));
        if let Some(init) = module.entry.init {
            let args: *const c_void = module
                .init_args
                .as_deref()
                .map_or(std::ptr::null(), |a| a as *const ModuleInitArgs as *const c_void);
            let mut ctx = CallCtx { f: init, arg: args, ret: MaybeUninit::uninit() };
            // SAFETY: `init` is the module's module_init export, called with the init args
            // the interface promises; the trampoline owns nothing droppable.
            let r = unsafe {
                module.guarded(trampoline::<*const c_void, i32>, &mut ctx as *mut _ as *mut c_void)
            };
            match r {
                Err(raw) => {
                    let report = self.crash_locked(reg, &module, &raw, Phase::Init);
                    return Err(Error::Crashed(Box::new(report)));
                }
                Ok(()) => {
                    // SAFETY: the trampoline wrote the result before returning normally.
                    let code = unsafe { ctx.ret.assume_init() };
                    if code != 0 {
                        module.set_state(ModuleState::Unloaded);
                        self.unmap(&module);
                        return Err(Error::InitFailed { module: name, path, code });
                    }
                }
            }
        }
        module.set_state(ModuleState::Live);
        // A dependency's only users are its holders: it starts with no user reference.
        reg.entries.insert(
            id,
            Entry { module, refs: usize::from(!as_dep), deps: Vec::new(), holders: Vec::new() },
        );
        reg.by_key.insert(key, id);
        reg.by_name.insert(name, id);
        if !self.subscribers.read().unwrap_or_else(|e| e.into_inner()).is_empty() {
            if let Some(info) = reg.info(id) {
                reg.events.push(Event::Loaded(info));
            }
        }
        Ok(id)
    }

    fn dlopen(&self, path: &Path, data: &[u8], flags: i32, fresh_copy: bool) -> Result<Library> {
        // A file whose earlier instance crashed is still mapped: dlopen of the same file would
        // hand back that instance with its old static data. A private copy under a name never
        // used before is a new object to ld.so, so it maps a fresh instance. (A memfd is not
        // enough: ld.so first matches objects by the name passed to dlopen, and
        // `/proc/self/fd/N` names repeat as descriptor numbers are reused.)
        if !fresh_copy {
            return self
                .dlopen_file(path, flags)
                .map_err(|dlerror| crate::elf::classify_dlopen_failure(path, dlerror));
        }
        // The copy goes to memory (tmpfs) when it can: on a disk file system creating and
        // freeing it cost more than the rest of a crash and reload. A tmpfs mounted noexec
        // refuses the mapping; the copy is then made again in the temporary directory.
        let mut failure = None;
        for base in PrivateCopy::bases() {
            let copy = match PrivateCopy::new(&base, path, data) {
                Ok(copy) => copy,
                Err(e) => {
                    failure = Some(e);
                    continue;
                }
            };
            match self.dlopen_file(&copy.file, flags) {
                Ok(lib) => return Ok(lib),
                Err(dlerror) => {
                    failure = Some(crate::elf::classify_dlopen_failure(path, dlerror));
                }
            }
        }
        Err(failure.unwrap_or_else(|| Error::LoadFailed {
            path: path.to_owned(),
            dlerror: "no directory to copy the module into".to_owned(),
        }))
    }

    fn dlopen_file(&self, file: &Path, flags: i32) -> std::result::Result<Library, String> {
        if self.cfg.guard_dlopen {
            probe::guarded_dlopen(file, flags)
        } else {
            // SAFETY: loading a module runs its constructors; that is what the caller asked
            // for. The probe option exists for modules whose constructors cannot be trusted.
            unsafe { Library::open(Some(file), flags) }.map_err(|e| e.to_string())
        }
    }

    /// Check the interface: the required exports, then the version.
    fn validate(&self, m: &mut Module, facts: &FileFacts) -> Result<()> {
        let lookup = |name: &str| {
            if facts.exports(name) {
                m.lookup_own(name).ok()
            } else {
                None
            }
        };
        let present: Vec<Option<*mut c_void>> =
            symbols::REQUIRED.iter().map(|s| lookup(s)).collect();
        let hello = lookup(symbols::HELLO).is_some();
        if present.iter().all(Option::is_none) {
            if hello && !self.cfg.strict {
                m.legacy = true;
                return Ok(());
            }
            return Err(Error::NoInterface { path: m.path.clone(), legacy_refused: hello });
        }
        if let Some(i) = present.iter().position(Option::is_none) {
            return Err(Error::MissingExport {
                path: m.path.clone(),
                symbol: symbols::REQUIRED[i],
            });
        }
        // SAFETY: the interface defines these exports' C signatures; a module that lies about
        // them is calling convention-compatible for these simple types or crashes under the
        // guard.
        let (get_version, init, fini) = unsafe {
            (
                std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> u32>(
                    present[0].unwrap(),
                ),
                std::mem::transmute::<*mut c_void, unsafe extern "C" fn(*const c_void) -> i32>(
                    present[1].unwrap(),
                ),
                std::mem::transmute::<*mut c_void, unsafe extern "C" fn()>(present[2].unwrap()),
            )
        };
        let can_unload = lookup(symbols::CAN_UNLOAD).map(|p| {
            // SAFETY: `int module_can_unload(void)` per the interface.
            unsafe { std::mem::transmute::<*mut c_void, unsafe extern "C" fn() -> i32>(p) }
        });
        let mut ctx = Call0Ctx { f: get_version, ret: MaybeUninit::uninit() };
        // SAFETY: module_get_interface_version takes nothing and returns a u32.
        let r = unsafe { m.guarded(trampoline0::<u32>, &mut ctx as *mut _ as *mut c_void) };
        let raw_version = match r {
            // SAFETY: written by the trampoline on the normal return path.
            Ok(()) => unsafe { ctx.ret.assume_init() },
            Err(raw) => {
                let report = crash::build_report(m, &raw, Phase::Init);
                return Err(Error::Crashed(Box::new(report)));
            }
        };
        let version = Version::from_raw(raw_version);
        if !version.is_compatible_with(Version::current()) {
            return Err(Error::VersionMismatch {
                path: m.path.clone(),
                module: version,
                loader: Version::current(),
            });
        }
        m.version = Some(version);
        m.entry = EntryPoints { init: Some(init), fini: Some(fini), can_unload };
        Ok(())
    }

    /// Drop one user reference. The last one, while other loaded modules depend on this one,
    /// is `Busy` naming them (as rmmod's "in use by"); otherwise the module is unloaded, asking
    /// `module_can_unload` first unless `force`.
    fn close_ref_locked(&self, reg: &mut Registry, id: u64, force: bool) -> Result<()> {
        let Some(e) = reg.entries.get_mut(&id) else { return Ok(()) };
        if e.refs > 1 {
            e.refs -= 1;
            return Ok(());
        }
        let name = e.module.name.clone();
        let holders = reg.holders(id);
        if !holders.is_empty() {
            return Err(Error::Busy { module: name, reason: BusyReason::Holders(holders) });
        }
        let inflight = reg.entries[&id].module.inflight();
        if inflight > 0 {
            return Err(Error::Busy { module: name, reason: BusyReason::InFlight(inflight) });
        }
        self.unload_locked(reg, id, !force)
    }

    /// A dependent let go of `id`: unload it when nothing else uses it. A veto keeps it
    /// loaded, owned by the loader until [`Loader::shutdown`].
    fn release_dep_locked(&self, reg: &mut Registry, id: u64) {
        let Some(e) = reg.entries.get(&id) else { return };
        if e.refs == 0 && e.holders.is_empty() {
            let _ = self.unload_locked(reg, id, true);
        }
    }

    /// Ask `module_can_unload` (when `veto` is allowed), run `module_fini`, unmap, and
    /// release the dependencies.
    fn unload_locked(&self, reg: &mut Registry, id: u64, veto: bool) -> Result<()> {
        let Some(e) = reg.entries.get(&id) else { return Ok(()) };
        let module = e.module.clone();
        module.set_state(ModuleState::Unloading);
        if let (true, Some(can_unload)) = (veto, module.entry.can_unload) {
            let mut ctx = Call0Ctx { f: can_unload, ret: MaybeUninit::uninit() };
            // SAFETY: `int module_can_unload(void)`; the trampoline owns nothing droppable.
            let r =
                unsafe { module.guarded(trampoline0::<i32>, &mut ctx as *mut _ as *mut c_void) };
            match r {
                Err(raw) => {
                    let report = self.crash_locked(reg, &module, &raw, Phase::CanUnload);
                    return Err(Error::Crashed(Box::new(report)));
                }
                // SAFETY: written by the trampoline on the normal return path.
                Ok(()) => match unsafe { ctx.ret.assume_init() } {
                    0 => {}
                    code => {
                        module.set_state(ModuleState::Live);
                        return Err(Error::Busy {
                            module: module.name.clone(),
                            reason: BusyReason::Veto(code),
                        });
                    }
                },
            }
        }
        if let Some(fini) = module.entry.fini {
            let mut ctx = Call0Ctx { f: fini, ret: MaybeUninit::uninit() };
            // SAFETY: `void module_fini(void)`; the trampoline owns nothing droppable.
            let r = unsafe { module.guarded(trampoline0::<()>, &mut ctx as *mut _ as *mut c_void) };
            if let Err(raw) = r {
                let report = self.crash_locked(reg, &module, &raw, Phase::Fini);
                return Err(Error::Crashed(Box::new(report)));
            }
        }
        let entry = reg.remove(id).expect("entry present");
        module.set_state(ModuleState::Unloaded);
        self.unmap(&module);
        reg.events.push(Event::Unloaded { name: module.name.clone() });
        self.release_all(reg, &entry.deps);
        Ok(())
    }

    /// `dlclose` a module that is no longer used and forget it.
    fn unmap(&self, module: &Module) {
        guard::unregister_module(module.id);
        lock(&MODULES).remove(&module.id);
        drop(lock(&module.global_ref).take());
        drop(lock(&module.lib).take());
    }

    /// Everything a crash does: report, taint, logical unload, history, crash-loop, event.
    fn crash_locked(
        &self,
        reg: &mut Registry,
        module: &Arc<Module>,
        raw: &RawCrash,
        phase: Phase,
    ) -> CrashReport {
        let report = crash::build_report(module, raw, phase);
        module.crashes.fetch_add(1, Ordering::Relaxed);
        *lock(&module.death) =
            Some(format!("unloaded after a crash: {} in {}", report.signal_name, phase.name()));
        module.set_state(ModuleState::Crashed);
        lock(&CRASHED_FILES).get_or_insert_with(HashSet::new).insert(module.key);
        let deps = reg.remove(module.id).map(|e| e.deps).unwrap_or_default();
        self.record_crash_history(reg, &report);
        match self.cfg.crash_policy {
            CrashPolicy::Reclaim => self.reclaim_if_drained(module),
            CrashPolicy::Retain => {
                // The code stays mapped for good: threads the module started may still run
                // in it, and `dlclose` under them kills the host.
                if let Some(lib) = lock(&module.lib).take() {
                    std::mem::forget(lib);
                }
                if let Some(lib) = lock(&module.global_ref).take() {
                    std::mem::forget(lib);
                }
            }
        }
        self.release_all(reg, &deps);
        report
    }

    fn record_crash_history(&self, reg: &mut Registry, report: &CrashReport) {
        reg.crashes.push_front(report.clone());
        reg.crashes.truncate(CRASH_HISTORY);
        if let Some(policy) = self.cfg.crash_loop {
            let now = Instant::now();
            let times = reg.crash_times.entry(report.module.clone()).or_default();
            times.push_back(now);
            while times.front().is_some_and(|t| now.duration_since(*t) > policy.window) {
                times.pop_front();
            }
            if times.len() >= policy.max_crashes {
                let n = times.len();
                reg.quarantined.insert(report.module.clone(), n);
            }
        }
        reg.events.push(Event::Crashed(Box::new(report.clone())));
    }

    /// Under [`CrashPolicy::Reclaim`], unmap a crashed module once no call is in it.
    fn reclaim_if_drained(&self, module: &Module) {
        if self.cfg.crash_policy == CrashPolicy::Reclaim
            && module.state() == ModuleState::Crashed
            && module.inflight() == 0
        {
            self.unmap(module);
        }
    }
}

/// A module file copied under a unique name in a private directory (mode 0700), on tmpfs when
/// possible. Removed again as soon as `dlopen` has mapped it.
struct PrivateCopy {
    dir: PathBuf,
    file: PathBuf,
}

impl PrivateCopy {
    /// Where copies may go, in order: `$KMODLIKE_COPY_DIR` when set; else `/dev/shm` (memory)
    /// when it is a directory, then the temporary directory.
    fn bases() -> Vec<PathBuf> {
        if let Some(dir) = std::env::var_os("KMODLIKE_COPY_DIR") {
            return vec![PathBuf::from(dir)];
        }
        let shm = PathBuf::from("/dev/shm");
        let mut bases = Vec::with_capacity(2);
        if shm.is_dir() {
            bases.push(shm);
        }
        bases.push(std::env::temp_dir());
        bases
    }

    fn new(base: &Path, path: &Path, data: &[u8]) -> Result<PrivateCopy> {
        use std::os::unix::fs::DirBuilderExt;
        static GENERATION: AtomicU64 = AtomicU64::new(0);
        let err = |e: std::io::Error| Error::LoadFailed {
            path: path.to_owned(),
            dlerror: format!(
                "cannot make the private copy a reload after a crash needs in {}: {e}",
                base.display()
            ),
        };
        let generation = GENERATION.fetch_add(1, Ordering::Relaxed);
        let nanos = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!("kmodlike-{}-{generation}-{nanos:08x}", std::process::id()));
        std::fs::DirBuilder::new().mode(0o700).create(&dir).map_err(err)?;
        let file = dir.join(path.file_name().unwrap_or_else(|| "module.so".as_ref()));
        let copy = PrivateCopy { dir, file };
        std::fs::write(&copy.file, data).map_err(err)?;
        Ok(copy)
    }
}

impl Drop for PrivateCopy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.file);
        let _ = std::fs::remove_dir(&self.dir);
    }
}

/// Make a module's symbols global so the modules that depend on it resolve them.
fn promote_global(module: &Module) {
    let mut g = lock(&module.global_ref);
    if g.is_some() || lock(&module.lib).is_none() {
        return;
    }
    // RTLD_NOLOAD finds the already-loaded object and only changes its flags.
    // SAFETY: the object is loaded already, so no constructor runs again.
    let lib =
        unsafe { Library::open(Some(&module.path), RTLD_NOW | RTLD_GLOBAL | libc::RTLD_NOLOAD) };
    *g = lib.ok();
}

/// One reference to a loaded module. Dropping it closes it (see [`Handle::close`]).
pub struct Handle {
    module: Arc<Module>,
    loader: Arc<LoaderShared>,
    released: bool,
}

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
        reg.info(self.module.id).unwrap_or_else(|| ModuleInfo {
            id: self.module.id,
            name: self.module.name.clone(),
            path: self.module.path.clone(),
            state: self.module.state(),
            refcount: 0,
            interface_version: self.module.version,
            legacy: self.module.legacy,
            mode: self.module.mode,
            dependencies: Vec::new(),
            holders: Vec::new(),
            modinfo: self.module.modinfo.entries.clone(),
            loaded_at: self.module.loaded_at,
            calls: self.module.calls(),
            crashes: self.module.crashes.load(Ordering::Relaxed),
            size: self.module.size,
        })
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

    /// Call `f(arg)` under the crash guard, on behalf of this module.
    ///
    /// A fatal signal in `f` unloads the module (logically: its code stays mapped unless the
    /// loader reclaims it) and returns `Err(Error::Crashed(report))`; the host keeps running.
    ///
    /// The rule that makes this sound: a crash jumps over every frame between the guard and
    /// the fault without running destructors. `f` is an `extern "C"` function and `A`/`R` are
    /// `Copy`, so the only Rust frame in between is a trampoline that owns nothing droppable.
    /// If `f` is a Rust function, it must not own values with destructors at the point it
    /// can fault.
    pub fn call<A: Copy, R: Copy>(&self, f: extern "C" fn(A) -> R, arg: A) -> Result<R> {
        let mut ctx = CallCtx {
            // SAFETY: a safe `extern "C" fn` is also a valid `unsafe extern "C" fn`.
            f: unsafe {
                std::mem::transmute::<extern "C" fn(A) -> R, unsafe extern "C" fn(A) -> R>(f)
            },
            arg,
            ret: MaybeUninit::uninit(),
        };
        // SAFETY: the trampoline calls `f(arg)`; both are the caller's, and safe to call.
        unsafe { self.enter(trampoline::<A, R>, &mut ctx as *mut _ as *mut c_void)? };
        // SAFETY: the trampoline wrote the result before returning normally.
        Ok(unsafe { ctx.ret.assume_init() })
    }

    /// Call `f()` under the crash guard (see [`call`](Self::call)).
    pub fn call0<R: Copy>(&self, f: extern "C" fn() -> R) -> Result<R> {
        let mut ctx = Call0Ctx {
            // SAFETY: a safe `extern "C" fn` is also a valid `unsafe extern "C" fn`.
            f: unsafe {
                std::mem::transmute::<extern "C" fn() -> R, unsafe extern "C" fn() -> R>(f)
            },
            ret: MaybeUninit::uninit(),
        };
        // SAFETY: the trampoline calls `f()`, which is safe to call.
        unsafe { self.enter(trampoline0::<R>, &mut ctx as *mut _ as *mut c_void)? };
        // SAFETY: the trampoline wrote the result before returning normally.
        Ok(unsafe { ctx.ret.assume_init() })
    }

    /// Call `f(ctx)` under the crash guard (see [`call`](Self::call)); the C API's form.
    ///
    /// # Safety
    /// `f` must be safe to call with `ctx`, and own nothing with a destructor where it can
    /// fault.
    pub unsafe fn call_raw(
        &self,
        f: unsafe extern "C" fn(*mut c_void),
        ctx: *mut c_void,
    ) -> Result<()> {
        // SAFETY: forwarded contract.
        unsafe { self.enter(f, ctx) }
    }

    /// The guarded entry: refuse dead modules, count the call in flight, recover a crash.
    unsafe fn enter(&self, f: unsafe extern "C" fn(*mut c_void), ctx: *mut c_void) -> Result<()> {
        let m = &self.module;
        m.enter_call();
        if m.state() != ModuleState::Live {
            m.leave_call();
            self.loader.reclaim_if_drained(m);
            return Err(m.not_live_error());
        }
        // SAFETY: forwarded contract.
        let r = unsafe { m.guarded(f, ctx) };
        m.leave_call();
        match r {
            Ok(()) => {
                if m.state() == ModuleState::Crashed {
                    self.loader.reclaim_if_drained(m);
                }
                Ok(())
            }
            Err(raw) => {
                let loader = self.loader.clone();
                let report = loader.locked(|reg| loader.crash_locked(reg, m, &raw, Phase::Call));
                Err(Error::Crashed(Box::new(report)))
            }
        }
    }

    /// Another reference to the same module.
    pub fn try_clone(&self) -> Result<Handle> {
        let mut reg = lock(&self.loader.reg);
        match reg.entries.get_mut(&self.module.id) {
            Some(e) => {
                e.refs += 1;
                Ok(Handle {
                    module: self.module.clone(),
                    loader: self.loader.clone(),
                    released: false,
                })
            }
            None => Err(self.module.not_live_error()),
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

    fn close_with(mut self, force: bool) -> std::result::Result<(), CloseError> {
        let loader = self.loader.clone();
        let id = self.module.id;
        match loader.locked(|reg| loader.close_ref_locked(reg, id, force)) {
            Ok(()) => {
                self.released = true;
                Ok(())
            }
            Err(error @ Error::Busy { .. }) => Err(CloseError { error, handle: Some(self) }),
            Err(error) => {
                self.released = true;
                Err(CloseError { error, handle: None })
            }
        }
    }
}

impl Drop for Handle {
    /// Closes the reference. If the module refuses (`Busy`), it stays loaded, owned by the
    /// loader until [`Loader::shutdown`].
    fn drop(&mut self) {
        if !self.released {
            self.released = true;
            let loader = self.loader.clone();
            let id = self.module.id;
            loader.locked(|reg| {
                if let Err(Error::Busy { .. }) = loader.close_ref_locked(reg, id, false) {
                    // The module stays loaded (its dependents or its veto keep it); this
                    // handle's reference goes, and the module is unloaded with its last
                    // dependent or at shutdown.
                    if let Some(e) = reg.entries.get_mut(&id) {
                        e.refs -= 1;
                    }
                }
            });
        }
    }
}
