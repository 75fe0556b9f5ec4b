//! `io.kmodlike.Loader`: the daemon's interface, implemented on a [`kmodlike::Loader`].
//!
//! The daemon holds one reference ([`Handle`]) per module it loaded (at start or through
//! `Load`); `Unload` closes it. Calls use that reference, so a call still running in a module
//! shows up as in flight and an `Unload` waits for it or reports `Busy`, never pulling code from
//! under a running call.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::sync_channel;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

use kmodlike::{BusyReason, Error, Handle, Loader};
use serde::Serialize;
use serde_json::{json, Value};

use crate::server::{CallContext, Connections, Outcome, Service};
use crate::socket::Access;
use crate::varlink::params::Params;
use crate::varlink::types::{
    self, CallsReply, ClearTaintReply, CrashesReply, InfoReply, ListReply, LoadReply, ModuleFile,
    MonitorReply, PingReply, ReloadReply, SetModulePathReply, StatusReply, UnloadReply,
};
use crate::varlink::{VarlinkError, INTERFACE, INTERFACE_DESCRIPTION};

mod after_crash;
mod audit;
mod calls;
mod configured;
mod crash_loop;
mod errors;
mod invoke;
mod monitor;
mod persist;

pub use calls::Signature;

pub use errors::map_error;
use errors::{busy, hung, not_loaded};
use monitor::{monitor_event, MonitorHub};
use persist::Persisted;

pub use configured::ConfigSource;
use configured::Configured;
use crash_loop::CrashLoopOverrides;

use crate::metrics::{Metrics, METRICS_DESCRIPTION, METRICS_INTERFACE};
use crate::state::StateStore;

/// The methods that change which code runs in the daemon: only for [`Access::Full`].
const CHANGES_CODE: [&str; 8] = [
    "Load",
    "Unload",
    "Reload",
    "Clear",
    "ClearTaint",
    "SetModulePath",
    "ReloadConfiguration",
    "SetSignaturePolicy",
];

/// How long `Unload` with `wait` waits for calls in flight.
pub const UNLOAD_WAIT: Duration = Duration::from_secs(30);

/// Events buffered per Monitor client before it counts as too slow and is disconnected.
const MONITOR_BACKLOG: usize = 1024;

/// This process's id, read once (`Ping` and `Status` report it on every call).
static PID: std::sync::LazyLock<u32> = std::sync::LazyLock::new(std::process::id);

/// What `Status` reports about the daemon's configuration.
#[derive(Debug, Clone)]
pub struct DaemonFacts {
    /// The socket served.
    pub socket: PathBuf,
    /// Modules are probed before loading.
    pub probe: bool,
    /// The crash-loop policy.
    pub crash_loop: Option<kmodlike::CrashLoop>,
    /// The connection bound.
    pub max_connections: usize,
    /// The deadline of a `Call` that names none (`--call-timeout`); `None`: no deadline.
    pub call_timeout: Option<Duration>,
}

/// The implementation of `io.kmodlike.Loader`.
pub struct LoaderService {
    loader: Loader,
    held: Mutex<HashMap<String, Arc<Handle>>>,
    started: Instant,
    crash_count: Arc<AtomicU64>,
    monitors: Arc<MonitorHub>,
    facts: DaemonFacts,
    conns: Arc<Connections>,
    /// What is kept across restarts (set once, by [`LoaderService::restore_state`]).
    persisted: Arc<OnceLock<Persisted>>,
    /// The configuration in force (set once, by [`LoaderService::set_configuration`]).
    configured: OnceLock<Configured>,
    /// What `io.systemd.Metrics` reports.
    metrics: Arc<Metrics>,
    /// The crash-loop policies of modules listed with their own.
    crash_loops: Arc<CrashLoopOverrides>,
}

impl LoaderService {
    /// Serve `loader`. Subscribes to its events (for Monitor and the crash count).
    pub fn new(loader: Loader, facts: DaemonFacts, conns: Arc<Connections>) -> LoaderService {
        let monitors = Arc::new(MonitorHub::default());
        let crash_count = Arc::new(AtomicU64::new(0));
        let persisted: Arc<OnceLock<Persisted>> = Arc::new(OnceLock::new());
        let metrics = Arc::new(Metrics::default());
        let crash_loops = Arc::new(CrashLoopOverrides::default());
        {
            let metrics = metrics.clone();
            let monitors = monitors.clone();
            let crash_count = crash_count.clone();
            let persisted = persisted.clone();
            // The subscriber outlives no one: the loader and this service live until exit.
            let me = loader.clone();
            let crash_loops = crash_loops.clone();
            loader.subscribe(move |event| {
                metrics.on_event(event);
                // A timed-out call is in the crash log too (and counts for the crash loop).
                if let kmodlike::Event::Crashed(report) | kmodlike::Event::CallTimedOut(report) =
                    event
                {
                    crash_count.fetch_add(1, Ordering::Relaxed);
                    // Its own crash-loop policy first: the verdict is then saved and announced.
                    crash_loops.on_crash(&me, &report.module);
                    // The crash, and the quarantine or taint it may have caused.
                    if let Some(p) = persisted.get() {
                        p.save(&me);
                    }
                }
                monitors.publish(monitor_event(event));
                if let kmodlike::Event::Crashed(report) | kmodlike::Event::CallTimedOut(report) =
                    event
                {
                    if announce_consequences(&me, &monitors, report) {
                        metrics.quarantined(&report.module);
                    }
                }
            });
        }
        LoaderService {
            loader,
            held: Mutex::new(HashMap::new()),
            started: Instant::now(),
            crash_count,
            monitors,
            facts,
            conns,
            persisted,
            configured: OnceLock::new(),
            metrics,
            crash_loops,
        }
    }

    /// Keep crashes, quarantines and taints in `store` from now on, and restore what earlier
    /// runs left there (quarantines take effect at once). Call once, before serving.
    pub fn restore_state(&self, store: StateStore) {
        let _ = self.persisted.set(Persisted::restore(store, &self.loader));
    }

    /// Write the persisted state now (after a change the loader does not announce).
    fn save_state(&self) {
        if let Some(p) = self.persisted.get() {
            p.save(&self.loader);
        }
    }

    /// The crash log, earlier runs' included.
    fn crash_log(&self) -> Vec<types::CrashReport> {
        match self.persisted.get() {
            Some(p) => p.crashes(&self.loader),
            None => self.loader.crashes().iter().map(types::CrashReport::from).collect(),
        }
    }

    /// The loader served.
    pub fn loader(&self) -> &Loader {
        &self.loader
    }

    /// End every Monitor stream (at shutdown).
    pub fn close_monitors(&self) {
        self.monitors.close_all();
    }

    /// Drop every reference the daemon holds (before `Loader::shutdown`).
    pub fn release_all(&self) {
        let handles: Vec<Arc<Handle>> = self.held().drain().map(|(_, h)| h).collect();
        drop(handles);
    }

    /// The daemon's references, without those to modules that crashed meanwhile.
    fn held(&self) -> MutexGuard<'_, HashMap<String, Arc<Handle>>> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        held.retain(|_, h| {
            !matches!(h.state(), kmodlike::ModuleState::Crashed | kmodlike::ModuleState::Unloaded)
        });
        held
    }

    /// Load `spec` and keep a reference; call `mod_hello` when asked and exported.
    pub fn load(&self, spec: &str, hello: bool) -> Result<LoadReply, VarlinkError> {
        self.load_tier(spec, hello, None)
    }

    /// [`load`](Self::load), in a process of its own with `isolation` (no `mod_hello` then).
    pub fn load_tier(
        &self,
        spec: &str,
        hello: bool,
        isolation: Option<kmodlike::Isolation>,
    ) -> Result<LoadReply, VarlinkError> {
        let hello = hello && isolation.is_none();
        // module_init runs under the call deadline the module's calls would get (a module's
        // name is its file's stem).
        let name_hint = std::path::Path::new(spec)
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_default();
        let init_timeout = self.configured_call_timeout(&name_hint).or(self.facts.call_timeout);
        let opts = kmodlike::OpenOptions { isolation, init_timeout, ..Default::default() };
        // SAFETY: `spec` is what an authorised operator named (the socket's AccessPolicy
        // admits only root, the daemon's uid or its group): loading a module and running its
        // init is the service this daemon exists to give them, and their request vouches that
        // the file is a module built for the interface. The daemon adds no frames of its own
        // below the guard.
        let opened = unsafe { self.loader.open_with(spec, &opts) };
        let handle = opened.map_err(|e| map_error(&e, spec))?;
        let name = handle.name().to_owned();
        let info = handle.info();
        let duplicate = {
            let mut held = self.held();
            match held.get(&name) {
                // This open only counted one more reference: give it back.
                Some(existing) if existing.id() == handle.id() => Some(handle),
                _ => {
                    held.insert(name.clone(), Arc::new(handle));
                    None
                }
            }
        };
        let already_loaded = duplicate.is_some();
        drop(duplicate);
        let mut hello_called = false;
        if hello && !already_loaded {
            hello_called = self.call_hello(&name)?;
        }
        let module = self.module_info(&name).unwrap_or_else(|| types::Module::from(&info));
        Ok(LoadReply { module, already_loaded, hello_called })
    }

    /// A reference for a call: the daemon's own, or a new one for a module loaded only as a
    /// dependency.
    fn handle_for(&self, name: &str) -> Result<Arc<Handle>, VarlinkError> {
        if let Some(h) = self.held().get(name) {
            return Ok(h.clone());
        }
        self.loader
            .get(name)
            .map(Arc::new)
            .map_err(|e| after_crash::explain_not_loaded(&self.loader, name, map_error(&e, name)))
    }

    fn module_info(&self, name: &str) -> Option<types::Module> {
        let m = self.loader.list().iter().find(|m| m.name == name).map(types::Module::from)?;
        Some(self.with_calls(vec![m]).remove(0))
    }

    /// Unload a module the daemon holds. With `force`, calls running in it are interrupted
    /// first, as their deadline would (each caller gets `TimedOut`, and the module is unloaded
    /// as after a crash); a hung module is removed, its thread left alone. Returns how many
    /// calls were interrupted.
    pub fn unload(&self, name: &str, force: bool, wait: bool) -> Result<usize, VarlinkError> {
        // A hung module's call cannot be interrupted (it blocks the signal): it is removed below.
        let hung_now = || {
            self.loader
                .list()
                .iter()
                .any(|m| m.name == name && m.state == kmodlike::ModuleState::Hung)
        };
        let interrupted = if force && !hung_now() { self.loader.interrupt_calls(name) } else { 0 };
        if interrupted > 0 {
            tracing::warn!(
                module = %name,
                "forced unload: interrupted {interrupted} call(s) running in module {name}"
            );
        }
        // Interrupted calls return at once; wait for them as for `wait`.
        let patience = if wait || interrupted > 0 { UNLOAD_WAIT } else { Duration::ZERO };
        let deadline = Instant::now() + patience;
        let Some(mut arc) = self.held().remove(name) else {
            return match self.module_info(name) {
                Some(m) if m.state == kmodlike::ModuleState::Hung.name() => Err(hung(&m)),
                // Loaded, but only because other modules depend on it.
                Some(m) => Err(busy(
                    name,
                    "holders",
                    &m.holders,
                    &format!(
                        "module {name} was loaded as a dependency of {}; unload them first",
                        m.holders.join(", ")
                    ),
                )),
                // The interrupt unloaded it already.
                None if interrupted > 0 => Ok(interrupted),
                None => Err(after_crash::not_loaded_explained(&self.loader, name)),
            };
        };
        loop {
            // Calls running on the daemon's reference hold clones of it.
            let handle = match Arc::try_unwrap(arc) {
                Ok(h) => h,
                Err(back) => {
                    if back.state() == kmodlike::ModuleState::Hung {
                        // Its call can neither return nor be interrupted, and its clone of
                        // the reference stays: close through the shared reference. The loader
                        // removes a hung module without module_fini and leaves its code mapped
                        // for the thread stuck in it. Its calls still running were not
                        // interrupted after all (the watchdog found them uninterruptible).
                        let stuck = Arc::strong_count(&back) - 1;
                        let interrupted = interrupted.saturating_sub(stuck);
                        return match back.close_shared(true) {
                            Ok(()) => {
                                tracing::warn!(
                                    module = %name,
                                    "unloaded the hung module {name}; the thread stuck in it \
                                     is left running"
                                );
                                Ok(interrupted)
                            }
                            Err(e) => {
                                self.held().insert(name.to_owned(), back);
                                Err(map_error(&e, name))
                            }
                        };
                    }
                    if Instant::now() >= deadline {
                        let n = Arc::strong_count(&back) - 1;
                        self.held().insert(name.to_owned(), back);
                        return Err(busy(
                            name,
                            "in_flight",
                            &[],
                            &format!(
                                "module {name} is busy: {n} call(s) still running in it{}",
                                if wait {
                                    " after waiting"
                                } else {
                                    "; retry, or wait for them (kmodctl unload --wait)"
                                }
                            ),
                        ));
                    }
                    std::thread::sleep(Duration::from_millis(20));
                    arc = back;
                    continue;
                }
            };
            let closed = if force { handle.close_forced() } else { handle.close() };
            match closed {
                Ok(()) => return Ok(interrupted),
                Err(e) => {
                    let in_flight =
                        matches!(e.error, Error::Busy { reason: BusyReason::InFlight(_), .. });
                    match e.handle {
                        Some(h) if in_flight && Instant::now() < deadline => {
                            std::thread::sleep(Duration::from_millis(20));
                            arc = Arc::new(h);
                        }
                        Some(h) => {
                            self.held().insert(name.to_owned(), Arc::new(h));
                            return Err(map_error(&e.error, name));
                        }
                        None => return Err(map_error(&e.error, name)),
                    }
                }
            }
        }
    }

    /// Unload a module and load its file again; a module that crashed (and so is unloaded
    /// already) is loaded again from the file its crash report names.
    pub fn reload(&self, name: &str) -> Result<ReloadReply, VarlinkError> {
        let held =
            self.held().get(name).map(|h| (h.path().to_owned(), h.info().child_pid.is_some()));
        let found =
            held.or_else(|| self.module_info(name).map(|m| (m.path.into(), m.child_pid.is_some())));
        let (path, isolated): (PathBuf, bool) = match found {
            Some(found) => {
                self.unload(name, false, true)?;
                found
            }
            // A crashed module comes back in the tier it crashed in: a crash of an isolated
            // one names its process (probe_pid outside the probe phase).
            None => match after_crash::crashed_path(&self.loader, name) {
                Some(path) => {
                    let isolated =
                        self.loader.crashes().iter().find(|r| r.module == name).is_some_and(|r| {
                            r.probe_pid.is_some() && r.phase != kmodlike::Phase::Probe
                        });
                    (path, isolated)
                }
                None => return Err(not_loaded(name, None)),
            },
        };
        let spec = path.to_string_lossy().into_owned();
        // The same tier as before.
        let reply = self.load_tier(&spec, false, isolated.then(kmodlike::Isolation::default))?;
        Ok(ReloadReply { module: reply.module })
    }

    fn info(&self, target: &str) -> Result<InfoReply, VarlinkError> {
        if !target.contains('/') {
            if let Some(m) = self.module_info(target) {
                return Ok(InfoReply { loaded: Some(m), file: None });
            }
        }
        let path = if target.contains('/') && Path::new(target).exists() {
            PathBuf::from(target)
        } else if let Some(crashed) = after_crash::crashed_path(&self.loader, target) {
            // A module that crashed: its file (the client shows the crash with it).
            crashed
        } else {
            self.loader.resolve(target).map_err(|e| map_error(&e, target))?
        };
        let file = ModuleFile::read(&path).map_err(|e| map_error(&e, target))?;
        Ok(InfoReply { loaded: None, file: Some(file) })
    }

    /// Replace the configured module directories (absolute paths only: a relative one would
    /// be resolved against the daemon's working directory, not the caller's).
    pub fn set_module_path(&self, dirs: &[String]) -> Result<SetModulePathReply, VarlinkError> {
        if let Some(bad) = dirs.iter().find(|d| !Path::new(d).is_absolute()) {
            return Err(VarlinkError::invalid_parameter_because(
                "dirs",
                &format!("{bad:?} is not an absolute path; give the full path of the directory"),
            ));
        }
        self.loader.set_module_path(dirs.iter().map(PathBuf::from).collect());
        Ok(SetModulePathReply { module_path: self.module_path_strings() })
    }

    fn module_path_strings(&self) -> Vec<String> {
        self.loader.module_path().iter().map(|p| p.display().to_string()).collect()
    }

    fn status(&self) -> StatusReply {
        let config = self.configuration_facts();
        let census = self.conns.census();
        StatusReply {
            version: env!("CARGO_PKG_VERSION").to_owned(),
            pid: *PID,
            socket: self.facts.socket.display().to_string(),
            uptime_secs: self.started.elapsed().as_secs_f64(),
            modules: self.loader.list().len() as u64,
            crashes: self.crash_count.load(Ordering::Relaxed),
            quarantined: self.loader.quarantined().into_iter().map(|(n, _)| n).collect(),
            connections: census.open as u64,
            abandoned_connections: Some(census.abandoned as u64),
            max_connections: self.facts.max_connections as u64,
            probe: self.facts.probe,
            crash_loop: self.facts.crash_loop.map(|c| types::CrashLoop {
                max_crashes: c.max_crashes as u64,
                window_secs: c.window.as_secs(),
            }),
            taint: kmodlike::taint().as_ref().map(types::Taint::from),
            taint_acks: Some(match self.persisted.get() {
                Some(p) => p.taint_acks(),
                None => {
                    kmodlike::taint_acknowledgements().iter().map(types::TaintAck::from).collect()
                }
            }),
            previous_taint: self.persisted.get().and_then(Persisted::previous_taint),
            state_dir: self
                .persisted
                .get()
                .and_then(|p| p.store.dir())
                .map(|d| d.display().to_string()),
            config_file: config.0,
            configured_modules: config.1,
            hung: Some(
                self.loader
                    .list()
                    .iter()
                    .filter(|m| m.state == kmodlike::ModuleState::Hung)
                    .map(|m| m.name.clone())
                    .collect(),
            ),
            call_timeout: Some(self.facts.call_timeout.map_or(0.0, |d| d.as_secs_f64())),
            module_path: self
                .loader
                .module_path()
                .iter()
                .map(|p| p.display().to_string())
                .collect(),
            signature_policy: Some(self.loader.signature_policy().as_str().to_owned()),
            trusted_keys: Some(self.loader.trusted_keys().display().to_string()),
            allow_untrusted_paths: Some(self.loader.allows_untrusted_paths()),
        }
    }

    fn monitor(&self, ctx: &CallContext) -> Outcome {
        if !ctx.more {
            return Outcome::Error(VarlinkError::expected_more());
        }
        let (tx, rx) = sync_channel(MONITOR_BACKLOG);
        let first = serde_json::to_value(MonitorReply { event: types::Event::started() })
            .unwrap_or_default();
        let _ = tx.try_send(first);
        self.monitors.subscribers.lock().unwrap_or_else(|e| e.into_inner()).push(tx);
        Outcome::Stream(rx)
    }

    fn dispatch(&self, method: &str, p: Params, ctx: &CallContext) -> Outcome {
        if !audit::AUDITED.contains(&method) {
            return self.dispatch_method(method, p, ctx);
        }
        let named = ["module", "spec"].iter().find_map(|k| p.peek_str(k));
        let subject = match (named, p.peek("dirs")) {
            (Some(s), _) => s.to_owned(),
            (None, Some(Value::Array(dirs))) => {
                dirs.iter().filter_map(Value::as_str).collect::<Vec<_>>().join(":")
            }
            _ => String::new(),
        };
        let outcome = self.dispatch_method(method, p, ctx);
        let result = match &outcome {
            Outcome::Error(e) => Err(e.clone()),
            _ => Ok(Value::Null),
        };
        audit::log_request(method, &subject, ctx, &result);
        outcome
    }

    fn dispatch_method(&self, method: &str, mut p: Params, ctx: &CallContext) -> Outcome {
        if ctx.access != Access::Full && CHANGES_CODE.contains(&method) {
            tracing::warn!(
                uid = ctx.peer.uid,
                pid = ctx.peer.pid,
                method,
                "refused: the socket group may not change which code is loaded"
            );
            return Outcome::Error(VarlinkError::loader(
                "NotPermitted",
                json!({
                    "method": method,
                    "uid": ctx.peer.uid,
                    "message": format!(
                        "uid {} reaches the daemon through its socket group, which may read and \
                         call but not {method}; ask the daemon's operator, or run the daemon \
                         with --socket-group-may-load (which makes the group as strong as the \
                         daemon's user)",
                        ctx.peer.uid
                    ),
                }),
            ));
        }
        let r = match method {
            "SetSignaturePolicy" => (|| {
                let policy = p.string("policy")?;
                p.finish()?;
                let policy = policy.parse::<kmodlike::SignaturePolicy>().map_err(|e| {
                    VarlinkError::invalid_parameter_because("policy", &e.to_string())
                })?;
                self.loader.set_signature_policy(policy).map_err(|e| {
                    VarlinkError::loader(
                        "SignaturePolicyLocked",
                        json!({ "policy": policy.as_str(), "message": e.to_string() }),
                    )
                })?;
                tracing::warn!(
                    policy = %policy,
                    uid = ctx.peer.uid,
                    pid = ctx.peer.pid,
                    "signature policy changed"
                );
                reply(types::SetSignaturePolicyReply {
                    policy: self.loader.signature_policy().as_str().to_owned(),
                })
            })(),
            "Ping" => p.finish().and_then(|()| {
                reply(PingReply { version: env!("CARGO_PKG_VERSION").into(), pid: *PID })
            }),
            "List" => p.finish().and_then(|()| {
                let modules = self.loader.list().iter().map(types::Module::from).collect();
                reply(ListReply { modules: self.with_calls(modules) })
            }),
            "Info" => (|| {
                let target = p.string("module")?;
                p.finish()?;
                reply(self.info(&target)?)
            })(),
            "Load" => (|| {
                let spec = p.string("spec")?;
                let hello = p.opt_bool("hello")?.unwrap_or(true);
                let isolated = p.opt_bool("isolated")?.unwrap_or(false);
                let seccomp = p.opt_bool("seccomp")?.unwrap_or(false);
                p.finish()?;
                // `seccomp` implies `isolated`.
                let isolation = (isolated || seccomp)
                    .then(|| kmodlike::Isolation { seccomp, ..kmodlike::Isolation::default() });
                reply(self.load_tier(&spec, hello, isolation)?)
            })(),
            "Unload" => (|| {
                let name = p.string("module")?;
                let force = p.opt_bool("force")?.unwrap_or(false);
                let wait = p.opt_bool("wait")?.unwrap_or(false);
                p.finish()?;
                let interrupted = self.unload(&name, force, wait)?;
                reply(UnloadReply { interrupted: Some(interrupted as u64) })
            })(),
            "Reload" => (|| {
                let name = p.string("module")?;
                p.finish()?;
                reply(self.reload(&name)?)
            })(),
            "Clear" => (|| {
                let name = p.string("module")?;
                p.finish()?;
                self.loader.clear_quarantine(&name).map_err(|_| {
                    VarlinkError::loader("NotQuarantined", json!({ "module": name }))
                })?;
                self.save_state();
                let who = audit::caller(ctx);
                tracing::info!(
                    message_id = crate::journal::message_id::QUARANTINE_CLEARED,
                    module = %name,
                    "quarantine of module {name} cleared by {who}"
                );
                self.monitors.publish(types::Event::about("quarantine_cleared", &name, who));
                Ok(json!({}))
            })(),
            "ClearTaint" => p.finish().and_then(|()| {
                let by = format!("uid {} pid {}", ctx.peer.uid, ctx.peer.pid);
                // This process's taint first; else an earlier run's, never acknowledged.
                let ack = kmodlike::acknowledge_taint(&by)
                    .map(|a| types::TaintAck::from(&a))
                    .or_else(|| self.persisted.get()?.acknowledge_previous_taint(&by))
                    .ok_or_else(|| VarlinkError::loader("NotTainted", json!({})))?;
                tracing::warn!(
                    message_id = crate::journal::message_id::TAINT_CLEARED,
                    module = %ack.taint.module,
                    reason = %ack.taint.reason,
                    by = %ack.by,
                    "taint acknowledged and cleared"
                );
                self.monitors.publish(types::Event::about(
                    "taint_cleared",
                    &ack.taint.module,
                    format!("by {}", audit::caller(ctx)),
                ));
                self.save_state();
                reply(ClearTaintReply { acknowledged: ack })
            }),
            "Call" => (|| {
                let name = p.string("module")?;
                let symbol = p.string("symbol")?;
                let signature = Signature::parse(&p.string("signature")?)?;
                let arg = p.opt_c_int("arg")?;
                // The request's own deadline, else the module's (modules.d timeout=SECS), else
                // the daemon's default.
                let deadline = match p.opt_seconds("timeout")? {
                    Some(secs) => crate::cli::seconds_to_deadline(secs),
                    None => self.configured_call_timeout(&name).or(self.facts.call_timeout),
                };
                p.finish()?;
                match (signature, arg) {
                    (Signature::IntInt, None) => {
                        return Err(VarlinkError::invalid_parameter_because(
                            "arg",
                            "signature int(int) needs an arg",
                        ))
                    }
                    (Signature::Void | Signature::Int, Some(_)) => {
                        return Err(VarlinkError::invalid_parameter_because(
                            "arg",
                            "arg is only for signature int(int)",
                        ))
                    }
                    _ => {}
                }
                reply(self.call(&name, &symbol, signature, arg, deadline)?)
            })(),
            "Calls" => {
                p.finish().and_then(|()| reply(CallsReply { calls: self.calls_in_flight() }))
            }
            "Invoke" => (|| {
                let name = p.string("module")?;
                let symbol = p.string("symbol")?;
                let input = p.opt_string("input")?;
                p.finish()?;
                reply(self.invoke(&name, &symbol, input.as_deref())?)
            })(),
            "ReloadConfiguration" => p
                .finish()
                .and_then(|()| reply(self.reload_configuration().map_err(VarlinkError::failed)?)),
            "SetModulePath" => (|| {
                let dirs = p.strings("dirs")?;
                p.finish()?;
                reply(self.set_module_path(&dirs)?)
            })(),
            "Crashes" => {
                p.finish().and_then(|()| reply(CrashesReply { crashes: self.crash_log() }))
            }
            "Status" => p.finish().and_then(|()| reply(self.status())),
            "Monitor" => {
                return match p.finish() {
                    Ok(()) => self.monitor(ctx),
                    Err(e) => Outcome::Error(e),
                }
            }
            _ => Err(VarlinkError::method_not_found(&format!("{INTERFACE}.{method}"))),
        };
        Outcome::from(r)
    }
}

impl Service for LoaderService {
    fn interface(&self) -> &'static str {
        INTERFACE
    }

    fn other_interfaces(&self) -> &'static [(&'static str, &'static str)] {
        &[(METRICS_INTERFACE, METRICS_DESCRIPTION)]
    }

    fn call_other(&self, interface: &str, method: &str, p: Params, ctx: &CallContext) -> Outcome {
        if interface != METRICS_INTERFACE {
            return Outcome::Error(VarlinkError::interface_not_found(interface));
        }
        if let Err(e) = p.finish() {
            return Outcome::Error(e);
        }
        let replies = match method {
            "List" => self.metrics.list(self.conns.count() as u64, kmodlike::taint().is_some()),
            "Describe" => crate::metrics::describe(),
            _ => {
                return Outcome::Error(VarlinkError::method_not_found(&format!(
                    "{METRICS_INTERFACE}.{method}"
                )))
            }
        };
        if !ctx.more {
            return Outcome::Error(VarlinkError::expected_more());
        }
        Outcome::Replies(replies)
    }

    fn description(&self) -> &'static str {
        INTERFACE_DESCRIPTION
    }

    fn call(&self, method: &str, params: Params, ctx: &CallContext) -> Outcome {
        self.dispatch(method, params, ctx)
    }

    fn interrupt_running(&self) -> usize {
        self.interrupt_all_calls()
    }
}

/// What a crash led to beyond the crash itself: a quarantine, a taint. Logged and published
/// as Monitor events.
/// True when the crash quarantined the module.
fn announce_consequences(
    loader: &Loader,
    monitors: &MonitorHub,
    report: &kmodlike::CrashReport,
) -> bool {
    let name = &report.module;
    let quarantine = loader.quarantined().into_iter().find(|(q, _)| q == name);
    if let Some((_, n)) = quarantine {
        tracing::warn!(
            message_id = crate::journal::message_id::QUARANTINED,
            module = %name,
            crashes = n,
            "module {name} is quarantined after {n} crash(es): loads are refused until              `kmodctl clear {name}`"
        );
        monitors.publish(types::Event::about("quarantined", name, format!("{n} crash(es)")));
    }
    if let Some(t) = kmodlike::taint().filter(|t| &t.module == name && report.taint.is_some()) {
        tracing::error!(
            message_id = crate::journal::message_id::TAINTED,
            module = %name,
            reason = %t.reason,
            "the daemon is tainted by module {name}'s crash: {}; restart it when convenient,              or acknowledge with `kmodctl clear --taint`",
            t.reason
        );
        monitors.publish(types::Event::about("tainted", name, t.reason.clone()));
    }
    quarantine.is_some()
}

fn reply<T: Serialize>(value: T) -> Result<Value, VarlinkError> {
    serde_json::to_value(value)
        .map_err(|e| VarlinkError::failed(format!("cannot encode the reply: {e}")))
}
