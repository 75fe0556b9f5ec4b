//! The loader: opens modules by spec, shares them by reference count, resolves their
//! dependencies, runs every entry into module code under the crash guard, and unloads a module
//! that crashes while the host keeps running.
//!
//! It works in phases so that no lock is held across file I/O, the probe, `dlopen` or module
//! code: [`registry`] (who has what, under the lock), [`open`] (reserve, load unlocked,
//! publish), [`unload`] (mark, run `module_fini` unlocked, remove), [`recovery`] (what a crash
//! does to the registry) and [`handle`] (references and guarded calls). The process-wide table
//! of instances the guard's callbacks use is [`instances`].

mod deadlines;
mod handle;
mod instances;
mod interpose;
mod invoke;
mod invoker;
mod isolated;
mod open;
mod recovery;
mod registry;
mod unload;

use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, RwLock, Weak};
use std::time::Duration;

use crate::crash::CrashReport;
use crate::error::{Error, Result};
use crate::guard;
pub use crate::options::{
    CrashLoop, CrashPolicy, InitArgs, LogSink, OpenOptions, DEFAULT_MAX_KEPT_MAPPED,
};
use crate::resolve::{resolve_spec, search_path};
use crate::trust::{SignaturePolicy, TrustSettings};

pub use deadlines::{CallInFlight, CallOptions};
pub use handle::{CloseError, FastEntry, FastResult, Handle, Symbol};
use instances::lock;
pub(crate) use instances::monotonic_ns;
pub use invoke::INVOKE_FIRST_CAPACITY;
pub use invoker::Invoker;
use registry::Registry;
pub use registry::{Event, ModuleInfo};

type Subscriber = Arc<dyn Fn(&Event) + Send + Sync>;

struct Config {
    strict: bool,
    probe: bool,
    probe_helper: Option<PathBuf>,
    probe_timeout: Duration,
    host_helper: Option<PathBuf>,
    crash_policy: CrashPolicy,
    max_kept_mapped: usize,
    crash_loop: Option<CrashLoop>,
    log: Option<LogSink>,
    guard_dlopen: bool,
    /// Where dependencies of these names are, before the module path (the probe child's copy
    /// of what its parent has loaded).
    dependency_paths: Vec<(String, PathBuf)>,
    trust: TrustSettings,
    call_timeout: Option<Duration>,
    interrupt_signal: Option<i32>,
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
    /// Load and unload every module first in a short-lived child process (the
    /// `kmodlike-probe` helper), so a crash in a constructor, `module_init`, `module_fini` or a
    /// destructor never reaches this process.
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
    /// The `kmodlike-host` helper that runs isolated modules
    /// ([`OpenOptions::isolated`]). Default: `$KMODLIKE_HOST`, else `kmodlike-host` next to
    /// the running executable, else `<exe dir>/../libexec/kmodlike/kmodlike-host`.
    pub fn host_helper(mut self, path: PathBuf) -> Self {
        self.cfg.host_helper = Some(path);
        self
    }
    /// How long the probe may take (default 10 s). After it the helper is killed and reaped,
    /// and the module refused as hung ([`Error::Probe`], naming the deadline).
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.cfg.probe_timeout = timeout;
        self
    }
    /// What happens to a crashed module's code (default [`CrashPolicy::ReclaimWhenSafe`]:
    /// unmapped once its calls have drained, unless a thread may still run in it).
    pub fn crash_policy(mut self, policy: CrashPolicy) -> Self {
        self.cfg.crash_policy = policy;
        self
    }
    /// How many instances' code may be kept mapped for good in this process (after crashes of
    /// modules that may start threads, or under [`CrashPolicy::Retain`]) before a load whose
    /// crash would keep one more is refused with [`Error::Limit`]: the bound on what crashes
    /// cost. Default [`DEFAULT_MAX_KEPT_MAPPED`] (256). Loads of modules whose crash would be
    /// reclaimed are never refused for it.
    pub fn max_kept_mapped(mut self, n: usize) -> Self {
        self.cfg.max_kept_mapped = n;
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
    /// The sink runs on the module's thread, with the guard suspended (a fault in it is the
    /// host's and stays fatal). It may call any function of this loader, also from inside a
    /// module's `module_init` or `module_fini`: the loader holds no lock while module code
    /// runs. Opening the very module that is being loaded (or closing one being unloaded) from
    /// there is refused with [`Error::Reentrant`].
    pub fn log(mut self, sink: impl Fn(&str, i32, &str) + Send + Sync + 'static) -> Self {
        self.cfg.log = Some(Arc::new(sink));
        self
    }
    /// The default time limit of guarded calls through this loader's handles, and of
    /// `module_init` (default none). A call past it is interrupted by the guard's interrupt
    /// signal and returns [`Error::TimedOut`]; the module is unloaded as after a crash. See
    /// [`Loader::set_call_timeout`], [`Handle::set_call_timeout`], [`CallOptions`].
    pub fn call_timeout(mut self, timeout: Option<Duration>) -> Self {
        self.cfg.call_timeout = timeout;
        self
    }
    /// The signal that interrupts calls past their deadline: a real-time signal, default
    /// `SIGRTMAX - 4` (or `$KMODLIKE_INTERRUPT_SIGNAL`: `60`, `SIGRTMAX-4`, `SIGRTMIN+5`).
    /// Process-wide, fixed by the first deadline set in the process: a different choice
    /// after that is refused with a warning on the log. Pick one the host and its libraries
    /// do not use.
    pub fn interrupt_signal(mut self, signo: i32) -> Self {
        self.cfg.interrupt_signal = Some(signo);
        self
    }
    /// Load modules whose path is not trusted (the file or a directory above it owned by
    /// another user, or writable by group or others) instead of refusing them with
    /// [`Error::UntrustedPath`]. Each such load taints the process ("untrusted path", see
    /// [`taint`](crate::taint)). Default: refuse.
    pub fn allow_untrusted_paths(mut self, allow: bool) -> Self {
        self.cfg.trust.allow_untrusted_paths = allow;
        self
    }
    /// The directory of trusted minisign public keys (`*.pub`). Default
    /// [`DEFAULT_TRUSTED_KEYS`](crate::trust::DEFAULT_TRUSTED_KEYS) (`/etc/kmodlike/keys`).
    /// It and its key files must pass the path rules, or no key of it is trusted.
    pub fn trusted_keys(self, dir: PathBuf) -> Self {
        *self.cfg.trust.keys_dir.write().unwrap_or_else(|e| e.into_inner()) = dir;
        self
    }
    /// The revocation list: one hex SHA-256 digest per line (`sha256sum` output works); a
    /// file whose digest is listed is refused ([`Error::Revoked`]) whatever the signature
    /// policy. Default [`DEFAULT_REVOKED`](crate::trust::DEFAULT_REVOKED)
    /// (`/etc/kmodlike/revoked`); a missing file is an empty list.
    pub fn revoked(self, file: PathBuf) -> Self {
        *self.cfg.trust.revoked.write().unwrap_or_else(|e| e.into_inner()) = file;
        self
    }
    /// What to do with modules not validly signed by a trusted key (default
    /// [`SignaturePolicy::Off`]). See [`Loader::set_signature_policy`] to raise it later.
    pub fn signature_policy(self, policy: SignaturePolicy) -> Self {
        // A fresh latch can take any policy.
        let _ = self.cfg.trust.policy.set(policy);
        self
    }
    /// Run `dlopen` itself under the guard. Only the probe child does this: a jump out of a
    /// constructor leaves ld.so's lock held, which only a process about to exit can afford.
    #[doc(hidden)]
    pub fn guard_dlopen_in_probe_child(mut self, on: bool) -> Self {
        self.cfg.guard_dlopen = on;
        // The child loads `/proc/self/fd/N`, bytes its parent already checked for trust.
        self.cfg.trust.check_paths = !on;
        if on {
            *self.cfg.trust.revoked.write().unwrap_or_else(|e| e.into_inner()) = PathBuf::new();
        }
        self
    }
    /// Satisfy a dependency on `name` with the file at `path` rather than searching the module
    /// path. Only the probe child uses this: its parent passes the modules it has loaded, so a
    /// dependency the parent satisfies with a module loaded by path resolves the same way here.
    #[doc(hidden)]
    pub fn dependency_paths(mut self, paths: Vec<(String, PathBuf)>) -> Self {
        self.cfg.dependency_paths = paths;
        self
    }
    /// Build the loader.
    pub fn build(self) -> Loader {
        guard::install();
        guard::set_host_sinks(instances::host_log, instances::host_get_time);
        guard::set_thread_crash_sink(instances::on_thread_crash);
        guard::deadline::set_watch_sink(deadlines::on_watch_event);
        if let Some(signo) = self.cfg.interrupt_signal {
            if let Err(why) = guard::deadline::set_interrupt_signal(signo) {
                let msg = format!("interrupt signal {signo} not used: {why}");
                match &self.cfg.log {
                    Some(sink) => sink("kmodlike", crate::interface::log_level::WARNING, &msg),
                    None => eprintln!("kmodlike: {msg}"),
                }
            }
        }
        let call_timeout = deadlines::limit_ns(self.cfg.call_timeout);
        Loader {
            shared: Arc::new_cyclic(|me| LoaderShared {
                me: me.clone(),
                call_timeout: std::sync::atomic::AtomicU64::new(call_timeout),
                cfg: self.cfg,
                path: RwLock::new(self.path),
                reg: Mutex::new(Registry::default()),
                changed: Condvar::new(),
                subscribers: RwLock::new(Vec::new()),
            }),
        }
    }
}

pub(crate) struct LoaderShared {
    me: Weak<LoaderShared>,
    /// The default call time limit in nanoseconds, 0 for none.
    call_timeout: std::sync::atomic::AtomicU64,
    cfg: Config,
    path: RwLock<Vec<PathBuf>>,
    reg: Mutex<Registry>,
    /// Signalled when a pending load is published or given up, or an unload ends, for the
    /// threads waiting in [`Registry::waiting`].
    changed: Condvar,
    subscribers: RwLock<Vec<Subscriber>>,
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
    /// directories, legacy modules accepted, no probe, crashed code unmapped once drained
    /// unless a thread may run in it, no crash-loop policy, no log sink.
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
                host_helper: None,
                crash_policy: CrashPolicy::ReclaimWhenSafe,
                max_kept_mapped: DEFAULT_MAX_KEPT_MAPPED,
                crash_loop: None,
                log: None,
                guard_dlopen: false,
                dependency_paths: Vec::new(),
                trust: TrustSettings::default(),
                call_timeout: None,
                interrupt_signal: None,
            },
            path: Vec::new(),
        }
    }

    /// Open a module with the default options (interface required, the loader's init args).
    ///
    /// # Safety
    /// As [`open_with`](Self::open_with): the file `spec` names must be a module built for
    /// kmodlike's module interface, whose constructors and `module_init` are sound to run in
    /// this process.
    pub unsafe fn open(&self, spec: &str) -> Result<Handle> {
        // SAFETY: the caller's promise, forwarded.
        unsafe { self.open_with(spec, &OpenOptions::default()) }
    }

    /// Open a module: a path, or `[namespace/[dirspace/]]name` searched along the module path.
    ///
    /// The first open of a file loads it (dependencies first, then `dlopen`, validation and
    /// `module_init` under the guard); later opens of the same file share that instance and
    /// count a reference.
    ///
    /// No lock is held while the file is read, the probe runs, `dlopen` maps the module or its
    /// code runs: other threads may list, open and close modules meanwhile. A second open of a
    /// file that is being loaded waits for that load and shares its result.
    ///
    /// # Safety
    /// Loading runs native code of the file's choosing in this process, as
    /// `libloading::Library::new` does: the ELF constructors of the file and of its
    /// dependencies, then (in [`OpenMode::Module`](crate::OpenMode::Module)) its `module_init`,
    /// and later its `module_fini` and `module_can_unload`. The caller vouches that the file
    /// `spec` resolves to (and every module it depends on) is a module built for this
    /// interface (`module_interface.h`, or `kmodlike-module`), whose code is sound to run here:
    /// its constructors and `module_init` do what a well-behaved module does, and its code may
    /// be abandoned mid-way when it faults (the guard jumps over its frames without running
    /// their destructors), which C code and `kmodlike-module` exports tolerate.
    ///
    /// The loader checks the rest itself, so the promise is no bigger than that: the file is
    /// opened once, must be a regular file, and the bytes it maps are the ones it validated;
    /// the required exports are found in the file's own symbol table before any of its code
    /// runs (a file that is no ELF shared object for this machine, or lacks them, is refused);
    /// the interface version is checked before `module_init` runs; a crash in
    /// `module_init` is contained by the guard and fails the open; and with
    /// [`LoaderBuilder::probe`] every load runs first in a short-lived child process, so a
    /// crash, an exit or a hang in a constructor or in `module_init` of a file you do not
    /// trust that far is reported instead of reaching this process.
    pub unsafe fn open_with(&self, spec: &str, opts: &OpenOptions) -> Result<Handle> {
        let module = self.shared.open_node(spec, opts, &mut Vec::new(), false)?;
        Ok(Handle::new(module, self.shared.clone()))
    }

    /// Change the signature policy. Once it is [`SignaturePolicy::Enforce`] it stays so for
    /// this loader's life (as the kernel's `module.sig_enforce`): lowering it is refused with
    /// [`Error::InvalidArgument`]. Applies to the loads that start after it.
    pub fn set_signature_policy(&self, policy: SignaturePolicy) -> Result<()> {
        self.shared.cfg.trust.policy.set(policy)
    }

    /// The signature policy in force.
    pub fn signature_policy(&self) -> SignaturePolicy {
        self.shared.cfg.trust.policy.get()
    }

    /// Replace the directory of trusted keys (see [`LoaderBuilder::trusted_keys`]); read again
    /// at every load.
    pub fn set_trusted_keys(&self, dir: PathBuf) {
        *self.shared.cfg.trust.keys_dir.write().unwrap_or_else(|e| e.into_inner()) = dir;
    }

    /// Replace the revocation list (see [`LoaderBuilder::revoked`]); read again at every load.
    pub fn set_revoked(&self, file: PathBuf) {
        *self.shared.cfg.trust.revoked.write().unwrap_or_else(|e| e.into_inner()) = file;
    }

    /// Whether untrusted paths load (with a taint) instead of being refused.
    pub fn allows_untrusted_paths(&self) -> bool {
        self.shared.cfg.trust.allow_untrusted_paths
    }

    /// The directory of trusted keys.
    pub fn trusted_keys(&self) -> PathBuf {
        self.shared.cfg.trust.keys_dir()
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
        if e.unloading_by.is_some() {
            return Err(e.module.not_live_error());
        }
        e.refs += 1;
        Ok(Handle::new(e.module.clone(), s.clone()))
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

    /// Quarantine `name` as if it had crashed `crashes` times within the crash-loop window: a
    /// host restoring the quarantines it persisted before a restart. [`Loader::open`] refuses
    /// the name until [`Loader::clear_quarantine`]. Works without a crash-loop policy too.
    pub fn restore_quarantine(&self, name: &str, crashes: usize) {
        lock(&self.shared.reg).quarantined.insert(name.to_owned(), crashes);
    }

    /// Call `f` for every load, unload and crash, after the loader's lock is released.
    pub fn subscribe(&self, f: impl Fn(&Event) + Send + Sync + 'static) {
        self.shared.subscribers.write().unwrap_or_else(|e| e.into_inner()).push(Arc::new(f));
    }

    /// Unload every module, dependents before their dependencies, newest first. `module_fini`
    /// runs for each; `module_can_unload` is not asked. Handles still held become dead.
    pub fn shutdown(&self) {
        self.shared.shutdown();
    }
}

impl LoaderShared {
    /// Run `f` with the registry locked; then wake the threads waiting for a load or an
    /// unload, and deliver the events `f` queued, with the lock released.
    fn with_reg<T>(&self, f: impl FnOnce(&mut Registry) -> T) -> T {
        let (out, events, wake) = {
            let mut reg = lock(&self.reg);
            let out = f(&mut reg);
            (out, std::mem::take(&mut reg.events), !reg.waiting.is_empty())
        };
        if wake {
            self.changed.notify_all();
        }
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

    fn has_subscribers(&self) -> bool {
        !self.subscribers.read().unwrap_or_else(|e| e.into_inner()).is_empty()
    }

    /// Wait for the registry to change (a load published or given up, an unload ended).
    fn wait<'a>(&self, reg: MutexGuard<'a, Registry>) -> MutexGuard<'a, Registry> {
        self.changed.wait(reg).unwrap_or_else(|e| e.into_inner())
    }
}
