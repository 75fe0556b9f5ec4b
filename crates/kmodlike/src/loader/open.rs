//! Opening a module in phases: resolve and open the file, reserve it in the registry, then with
//! no lock held make its bytes stable and validate them, open its dependencies, probe it, map
//! it and run its `module_init` under the guard; finally publish it.

use std::ffi::{c_void, OsStr};
use std::mem::MaybeUninit;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use libloading::os::unix::{Library, RTLD_GLOBAL, RTLD_LOCAL, RTLD_NOW};

use crate::crash::{self, Phase};
use crate::error::{Error, Result};
use crate::guard;
use crate::image::Checked;
use crate::image::{Image, ModuleFile};
use crate::interface::{symbols, ModuleInitArgs, Version};
use crate::module::{
    trampoline, trampoline0, Call0Ctx, CallCtx, EntryPoints, FileKey, HostCallbacks, Interface,
    Module, ModuleState,
};
use crate::options::{CrashPolicy, InitArgs, OpenMode, OpenOptions};
use crate::probe;
use crate::resolve::{module_name_for, resolve_spec_with, search_path};
use crate::trust::{SignatureVerdict, TrustInfo};

use super::instances::{self, lock};
use super::interpose::{self, After};
use super::registry::{Event, Pending};
use super::LoaderShared;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A new, process-unique instance id.
pub(super) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// A load's outcome with the ids of its pinned dependencies, which a failure must let go of.
type Loaded = std::result::Result<(Arc<Module>, Vec<u64>), (Error, Vec<u64>)>;

/// What reserving a file in the registry gave.
enum Claim {
    /// The file is loaded already: a reference (or, for a dependency, a pin) was taken.
    Existing(Arc<Module>),
    /// The file is reserved for this thread to load.
    Reserved,
}

impl LoaderShared {
    /// Open `spec`: a new reference to a loaded module, or a new load. `chain` holds the files
    /// this thread is loading as dependencies of each other, to name a cycle; `as_dep` opens a
    /// dependency, which is pinned (not referenced) until its dependent publishes.
    pub(super) fn open_node(
        &self,
        spec: &str,
        opts: &OpenOptions,
        chain: &mut Vec<(FileKey, String)>,
        as_dep: bool,
    ) -> Result<Arc<Module>> {
        let path = resolve_spec_with(spec, || {
            search_path(&self.path.read().unwrap_or_else(|e| e.into_inner()))
        })?;
        let (file, untrusted_path) = self.cfg.trust.open(&path, spec)?;
        let key = file.key();
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
        if let Claim::Existing(module) = self.claim(key, &name, &path, as_dep)? {
            return Ok(module);
        }
        let loaded = self.load_reserved(file, key, &name, opts, chain, as_dep, untrusted_path);
        let published = self.with_reg(|reg| {
            reg.pending.remove(&key);
            let (module, deps) = loaded?;
            if module.state() != ModuleState::Live {
                // A thread it started in module_init crashed before it could be published.
                return Err((module.not_live_error(), deps));
            }
            let id = module.id;
            reg.publish(module.clone(), as_dep, deps);
            if self.has_subscribers() {
                if let Some(info) = reg.info(id) {
                    reg.events.push(Event::Loaded(Box::new(info)));
                }
            }
            Ok(module)
        });
        published.map_err(|(e, deps)| {
            self.release_deps(&deps, true);
            e
        })
    }

    /// What to open for a dependency `dep` (a `depends=` entry, `[namespace/[dirspace/]]name`):
    /// a module loaded under that name satisfies it, however it was loaded (by path too), so
    /// its file is opened (and shared), as module names are unique in a loader; else a name
    /// given to [`LoaderBuilder::dependency_paths`]; else `dep` itself, searched along the
    /// module path. A `dep` that is an absolute path is left alone.
    ///
    /// [`LoaderBuilder::dependency_paths`]: super::LoaderBuilder::dependency_paths
    fn dependency_spec(&self, spec: &str) -> String {
        if spec.starts_with('/') {
            return spec.to_owned();
        }
        let dep = spec.rsplit('/').next().unwrap_or(spec);
        let loaded = {
            let reg = lock(&self.reg);
            reg.by_name.get(dep).and_then(|id| reg.entries.get(id)).and_then(|e| {
                let live = e.unloading_by.is_none() && e.module.state() == ModuleState::Live;
                live.then(|| e.module.path.clone())
            })
        };
        let known =
            || self.cfg.dependency_paths.iter().find(|(n, _)| n == dep).map(|(_, p)| p.clone());
        // A path that is not UTF-8 cannot be a spec: search by name then.
        loaded
            .or_else(known)
            .and_then(|p| p.to_str().map(str::to_owned))
            .unwrap_or_else(|| spec.to_owned())
    }

    /// Every loaded module's name and file, for the probe child's dependencies.
    fn loaded_paths(&self) -> Vec<(String, PathBuf)> {
        let reg = lock(&self.reg);
        let mut out: Vec<(String, PathBuf)> = reg
            .by_name
            .iter()
            .filter_map(|(n, id)| Some((n.clone(), reg.entries.get(id)?.module.path.clone())))
            .collect();
        out.extend(self.cfg.dependency_paths.iter().cloned());
        out
    }

    /// Take a reference to `key` when it is loaded, wait when another thread is loading or
    /// unloading it, or reserve it for this thread.
    fn claim(&self, key: FileKey, name: &str, path: &Path, as_dep: bool) -> Result<Claim> {
        let me = std::thread::current().id();
        let mut reg = lock(&self.reg);
        loop {
            if let Some(&id) = reg.by_key.get(&key) {
                let e = reg.entries.get_mut(&id).expect("by_key points at an entry");
                // A crashed module's entry is about to go (its crash is being recorded).
                let crashed = e.module.state() == ModuleState::Crashed;
                match e.unloading_by {
                    None if !crashed => {
                        if as_dep {
                            e.pins += 1;
                        } else {
                            e.refs += 1;
                        }
                        let module = e.module.clone();
                        drop(reg);
                        if as_dep {
                            promote_global(&module);
                        }
                        return Ok(Claim::Existing(module));
                    }
                    Some(t) if t == me => {
                        return Err(Error::Reentrant {
                            module: name.to_owned(),
                            detail: "this thread is unloading it (the open was made from its \
                                     module_can_unload or module_fini, or a callback they made)"
                                .into(),
                        })
                    }
                    _ => {}
                }
            } else if let Some(p) = reg.pending.get(&key) {
                if p.thread == me {
                    return Err(Error::Reentrant {
                        module: name.to_owned(),
                        detail: "this thread is loading it (the open was made from its own \
                                 constructor or module_init, or a callback they made)"
                            .into(),
                    });
                }
            } else {
                break;
            }
            if reg.wait_closes_circle(me, &key) {
                return Err(Error::Dependency {
                    module: name.to_owned(),
                    detail: "dependency cycle across concurrent loads: the thread loading it \
                             waits for a module this thread is loading"
                        .into(),
                    source: None,
                });
            }
            reg.waiting.insert(me, key);
            reg = self.wait(reg);
            reg.waiting.remove(&me);
        }
        if let Some(&crashes) = reg.quarantined.get(name) {
            let window_secs = self.cfg.crash_loop.map(|c| c.window.as_secs()).unwrap_or(0);
            return Err(Error::Quarantined { module: name.to_owned(), crashes, window_secs });
        }
        if let Some(&other) = reg.by_name.get(name) {
            let existing = reg.entries[&other].module.path.clone();
            return Err(Error::AlreadyLoaded { module: name.to_owned(), existing });
        }
        if let Some(p) = reg.pending.values().find(|p| p.name == name) {
            return Err(Error::AlreadyLoaded { module: name.to_owned(), existing: p.path.clone() });
        }
        reg.pending
            .insert(key, Pending { name: name.to_owned(), path: path.to_owned(), thread: me });
        Ok(Claim::Reserved)
    }

    /// The unlocked part of a load: stable bytes, validation and the trust checks of those
    /// bytes, dependencies, then the module. Returns the module and the ids of its (pinned)
    /// dependencies.
    #[allow(clippy::too_many_arguments)]
    fn load_reserved(
        &self,
        file: ModuleFile,
        key: FileKey,
        name: &str,
        opts: &OpenOptions,
        chain: &mut Vec<(FileKey, String)>,
        as_dep: bool,
        untrusted_path: Option<String>,
    ) -> Loaded {
        let path = file.path().to_owned();
        let fresh = instances::is_kept_mapped(key);
        let (image, facts, signature) =
            self.stable_trusted_bytes(file, fresh).map_err(|e| (e, Vec::new()))?;
        let trust = TrustInfo { signature, untrusted_path };
        self.check_kept_bound(name, &path, &facts).map_err(|e| (e, Vec::new()))?;
        if opts.mode == OpenMode::Module {
            check_exports(&path, &facts, self.cfg.strict).map_err(|e| (e, Vec::new()))?;
        }
        if let Some(isolation) = opts.isolation {
            // Its dependencies are its process's business: its own loader opens them there.
            // The trust checks above passed; its code runs in its own process, so it taints
            // nothing here.
            return self
                .load_isolated(image, facts, path, key, name, opts, isolation)
                .map(|m| {
                    let _ = m.trust.set(trust);
                    (m, Vec::new())
                })
                .map_err(|e| (e, Vec::new()));
        }
        chain.push((key, name.to_owned()));
        let mut deps: Vec<u64> = Vec::new();
        for dep in facts.modinfo.depends() {
            let dep_opts = OpenOptions {
                init_args: opts.init_args,
                init_timeout: opts.init_timeout,
                ..OpenOptions::default()
            };
            let dep_spec = self.dependency_spec(&dep);
            match self.open_node(&dep_spec, &dep_opts, chain, true) {
                Ok(m) => deps.push(m.id),
                Err(e) => {
                    chain.pop();
                    let e = match e {
                        cycle @ Error::Dependency { source: None, .. } => cycle,
                        e => Error::Dependency {
                            module: name.to_owned(),
                            detail: format!(
                                "dependency {dep:?} (needed by {name}) cannot be opened: {e}"
                            ),
                            source: Some(Box::new(e)),
                        },
                    };
                    return Err((e, deps));
                }
            }
        }
        chain.pop();
        // Everything else passed: its code runs next (the probe, dlopen). Taint now, as the
        // kernel taints before it runs an unsigned module; a refused file taints nothing.
        if let Some(why) = &trust.untrusted_path {
            crash::set_taint(name, &format!("untrusted path: {why}"));
        }
        if let SignatureVerdict::Unsigned { reason } = &trust.signature {
            crash::set_taint(name, &format!("unsigned module: {reason}"));
        }
        match self.load_image(image, facts, path, key, name, opts, as_dep, trust) {
            Ok(module) => Ok((module, deps)),
            Err(e) => Err((e, deps)),
        }
    }

    /// Make the file's bytes stable and validate them, and check those very bytes against the
    /// revocation list and the signature policy.
    fn stable_trusted_bytes(
        &self,
        file: ModuleFile,
        fresh: bool,
    ) -> Result<(Image, Arc<Checked>, SignatureVerdict)> {
        let check = self.cfg.trust.bytes_check()?;
        if check.is_noop() {
            let (image, facts) = file.into_image(fresh)?;
            return Ok((image, facts, SignatureVerdict::NotChecked));
        }
        let path = file.path().to_owned();
        let mut verdict = SignatureVerdict::NotChecked;
        let (image, facts) = {
            let mut inspect = |data: &[u8]| {
                verdict = check.check(&path, data)?;
                Ok(())
            };
            file.into_image_inspected(fresh, Some(&mut inspect))?
        };
        Ok((image, facts, verdict))
    }

    /// Probe, map, check the interface version and run `module_init`.
    #[allow(clippy::too_many_arguments)]
    fn load_image(
        &self,
        image: Image,
        facts: Arc<Checked>,
        path: PathBuf,
        key: FileKey,
        name: &str,
        opts: &OpenOptions,
        as_dep: bool,
        trust: TrustInfo,
    ) -> Result<Arc<Module>> {
        if self.cfg.probe && opts.mode == OpenMode::Module {
            let probe_cfg = probe::ProbeConfig {
                dependency_paths: self.loaded_paths(),
                helper: self.cfg.probe_helper.clone(),
                dirs: search_path(&self.path.read().unwrap_or_else(|e| e.into_inner())),
                strict: self.cfg.strict,
                timeout: self.cfg.probe_timeout,
            };
            // The child maps the very bytes that were validated, through their descriptor.
            if let Err(e) = probe::run(&probe_cfg, name, &path, Some(image.fd())) {
                if let Error::Crashed(report) = &e {
                    self.with_reg(|reg| self.record_crash_history(reg, report));
                }
                return Err(e);
            }
        }
        let flags = RTLD_NOW | if as_dep { RTLD_GLOBAL } else { RTLD_LOCAL };
        let lib =
            self.dlopen(&image, flags).map_err(|dlerror| image.classify_failure(&path, dlerror))?;
        let raw = lib.into_raw();
        let mapped = crate::linkmap::mapping_of(raw, &facts.loads);
        // SAFETY: `raw` came from `into_raw` just above and is still open.
        let lib = unsafe { Library::from_raw(raw) };
        let Some(mapped) = mapped else {
            return Err(Error::LoadFailed {
                path,
                dlerror: "ld.so does not say where it mapped the module (dlinfo failed)".into(),
            });
        };
        let size = mapped.segments.iter().map(|(s, e)| e - s).sum();
        let id = next_id();
        let host = match opts.init_args {
            InitArgs::Loader => HostCallbacks::Loader(self.cfg.log.clone()),
            InitArgs::Null => HostCallbacks::Null,
            InitArgs::Raw(a) => HostCallbacks::Raw(a),
        };
        let module = Arc::new(Module::new(
            id,
            name.to_owned(),
            path,
            key,
            opts.mode,
            facts,
            size,
            lib,
            image,
            mapped.segments,
            mapped.text,
            mapped.base,
            mapped.bias,
            host,
        ));
        let _ = module.trust.set(trust);
        if let Err(full) = guard::register_module(id, &module.text) {
            // Its threads' faults could not be contained: it must not run at all.
            module.set_state(ModuleState::Unloaded);
            self.unmap_now(&module);
            return Err(Error::Limit {
                module: name.to_owned(),
                path: module.path.clone(),
                detail: full.to_string(),
            });
        }
        instances::insert(&module, self.me.clone());
        if opts.mode == OpenMode::Module {
            // Before any interface function runs: from here on the module's own sigaction,
            // signal, sigprocmask and exit calls reach the guard's interposers.
            if let Err(detail) = interpose::redirect_imports(&module) {
                self.warn(
                    &module,
                    &format!(
                        "module {}: some of its signal and exit imports could not be                          redirected to the crash guard: {detail}",
                        module.name
                    ),
                );
            }
        }
        let started = self.start(&module, name, opts);
        // Constructors ran before the redirection; anything may have gone around it.
        self.reclaim_fatal_handlers(&module, After::Load);
        started?;
        // A module whose thread crashed during module_init stays crashed.
        let _ = module.compare_set_state(ModuleState::Loading, ModuleState::Live);
        Ok(module)
    }

    /// Check the interface version and run `module_init`, under the guard.
    fn start(&self, module: &Arc<Module>, name: &str, opts: &OpenOptions) -> Result<()> {
        if opts.mode == OpenMode::Module {
            if let Err(e) = self.check_interface(module) {
                if !matches!(e, Error::Crashed(_)) {
                    module.set_state(ModuleState::Unloaded);
                    self.unmap(module);
                }
                return Err(e);
            }
        } else {
            module.set_interface(Interface::default());
        }
        if let Some(init) = module.entry().init {
            let args: *const c_void = module
                .init_args
                .as_deref()
                .map_or(std::ptr::null(), |a| a as *const ModuleInitArgs as *const c_void);
            let mut ctx = CallCtx { f: init, arg: args, ret: MaybeUninit::uninit() };
            // SAFETY: `init` is the module's module_init export, called with the init args
            // the interface promises; the trampoline owns nothing droppable.
            let dl = self.init_deadline(opts.init_timeout);
            // SAFETY: as above.
            let r = unsafe {
                module.guarded_until(
                    trampoline::<*const c_void, i32>,
                    &mut ctx as *mut _ as *mut c_void,
                    dl.as_ref(),
                )
            };
            match r {
                Err(raw) if raw.timeout.is_some() => {
                    let report = self.record_crash(module, &raw, Phase::Init);
                    return Err(Error::TimedOut(Box::new(report)));
                }
                Err(raw) => {
                    let report = self.record_crash(module, &raw, Phase::Init);
                    return Err(Error::Crashed(Box::new(report)));
                }
                Ok(()) => {
                    // SAFETY: the trampoline wrote the result before returning normally.
                    let code = unsafe { ctx.ret.assume_init() };
                    if code != 0 {
                        module.set_state(ModuleState::Unloaded);
                        self.unmap(module);
                        return Err(Error::InitFailed {
                            module: name.to_owned(),
                            path: module.path.clone(),
                            code,
                        });
                    }
                }
            }
        }
        Ok(())
    }

    /// Refuse a load whose crash would keep its code mapped for good once the process keeps
    /// `max_kept_mapped` such instances already: the bound on what crashes cost.
    fn check_kept_bound(&self, name: &str, path: &Path, facts: &Checked) -> Result<()> {
        let kept = instances::kept_instances();
        let would_keep = match self.cfg.crash_policy {
            CrashPolicy::Retain => true,
            CrashPolicy::ReclaimWhenSafe => facts.may_start_threads,
            CrashPolicy::Reclaim => false,
        };
        if !would_keep || kept < self.cfg.max_kept_mapped {
            return Ok(());
        }
        let why = if self.cfg.crash_policy == CrashPolicy::Retain {
            "the loader's crash policy is Retain"
        } else {
            "it may start threads, which may still run in its code after a crash"
        };
        Err(Error::Limit {
            module: name.to_owned(),
            path: path.to_owned(),
            detail: format!(
                "the code of {kept} crashed instance(s) is kept mapped in this process (the \
                 bound is {}), and a crash of this module would keep its code too ({why}); \
                 restart the process to drop them, or raise LoaderBuilder::max_kept_mapped",
                self.cfg.max_kept_mapped
            ),
        })
    }

    /// `dlopen` the image by its `/proc/self/fd/<n>` name (under the guard in the probe child).
    fn dlopen(&self, image: &Image, flags: i32) -> std::result::Result<Library, String> {
        let name = Path::new(OsStr::from_bytes(image.name().to_bytes()));
        if self.cfg.guard_dlopen {
            probe::guarded_dlopen(name, flags)
        } else {
            // SAFETY: loading a module runs its constructors; that is what the caller asked
            // for (the structure was validated, and the probe option exists for modules whose
            // constructors cannot be trusted).
            unsafe { Library::open(Some(name), flags) }.map_err(|e| e.to_string())
        }
    }

    /// Find the interface exports in the mapped module and check its version, under the guard
    /// and booked like any other entry into module code.
    fn check_interface(&self, m: &Arc<Module>) -> Result<()> {
        // From the file's own symbol table when it says where the export is (no dlsym);
        // only names it exports are asked of ld.so otherwise (a failing dlsym costs an error
        // message).
        let lookup = |name: &str| {
            m.interface_export(name)
                .or_else(|| m.checked.exports(name).then(|| m.lookup_own(name).ok()).flatten())
        };
        let present: [Option<*mut c_void>; 3] = symbols::REQUIRED.map(lookup);
        if present.iter().all(Option::is_none) {
            if lookup(symbols::HELLO).is_some() && !self.cfg.strict {
                m.set_interface(Interface { legacy: true, ..Interface::default() });
                return Ok(());
            }
            return Err(Error::NoInterface {
                path: m.path.clone(),
                legacy_refused: lookup(symbols::HELLO).is_some(),
            });
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
                let report = self.record_crash(m, &raw, Phase::Version);
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
        m.set_interface(Interface {
            legacy: false,
            version: Some(version),
            entry: EntryPoints { init: Some(init), fini: Some(fini), can_unload },
        });
        Ok(())
    }
}

/// Refuse, before any of its code runs (constructors included), a file that does not export
/// the module interface: the answer comes from its dynamic symbol table.
fn check_exports(path: &Path, facts: &Checked, strict: bool) -> Result<()> {
    let present: Vec<bool> = symbols::REQUIRED.iter().map(|s| facts.exports(s)).collect();
    let hello = facts.exports(symbols::HELLO);
    if !present.iter().any(|&p| p) {
        if hello && !strict {
            return Ok(());
        }
        return Err(Error::NoInterface { path: path.to_owned(), legacy_refused: hello });
    }
    match present.iter().position(|&p| !p) {
        Some(i) => {
            Err(Error::MissingExport { path: path.to_owned(), symbol: symbols::REQUIRED[i] })
        }
        None => Ok(()),
    }
}

/// Make a module's symbols global so the modules that depend on it resolve them.
pub(super) fn promote_global(module: &Module) {
    let mut g = lock(&module.global_ref);
    if g.is_some() || lock(&module.lib).is_none() {
        return;
    }
    let image = lock(&module.image);
    let Some(image) = image.as_ref() else { return };
    let name = Path::new(OsStr::from_bytes(image.name().to_bytes()));
    // RTLD_NOLOAD finds the already-loaded object by its image name and only changes its flags.
    // SAFETY: the object is loaded already, so no constructor runs again.
    let lib = unsafe { Library::open(Some(name), RTLD_NOW | RTLD_GLOBAL | libc::RTLD_NOLOAD) };
    *g = lib.ok();
}
