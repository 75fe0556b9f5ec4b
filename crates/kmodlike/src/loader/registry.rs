//! The registry: which modules a loader has, who holds them, which loads and unloads are under
//! way, and the crash history. It is only ever touched with the loader's lock held, and that
//! lock is never held across file I/O, the probe, `dlopen` or module code: a load reserves its
//! file here ([`Pending`]), works unlocked, then publishes ([`Entry`]); an unload marks its
//! entry, works unlocked, then removes it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::thread::ThreadId;
use std::time::{Duration, Instant, SystemTime};

use crate::crash::CrashReport;
use crate::interface::Version;
use crate::module::{FileKey, Module, ModuleState};
use crate::options::OpenMode;

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
    /// What the trust checks said of its file: the signature verdict, and why its path is not
    /// trusted when it was loaded anyway.
    pub trust: crate::trust::TrustInfo,
    /// For an isolated module (see [`OpenOptions::isolated`](crate::OpenOptions::isolated)):
    /// the pid of the process it runs in. `None`: it runs in this process.
    pub child_pid: Option<u32>,
    /// For an isolated module: that process's resident memory, bytes, when known.
    pub child_rss: Option<u64>,
}

impl ModuleInfo {
    /// `"isolated"` for a module in a process of its own, else `"in-process"`.
    pub fn tier(&self) -> &'static str {
        if self.child_pid.is_some() {
            "isolated"
        } else {
            "in-process"
        }
    }
}

impl ModuleInfo {
    /// What is known of a module with no registry entry (crashed, unloaded).
    pub(crate) fn detached(m: &Module) -> ModuleInfo {
        ModuleInfo {
            id: m.id,
            name: m.name.clone(),
            path: m.path.clone(),
            state: m.state(),
            refcount: 0,
            interface_version: m.version(),
            legacy: m.legacy(),
            mode: m.mode,
            dependencies: Vec::new(),
            holders: Vec::new(),
            modinfo: m.checked.modinfo.entries.clone(),
            loaded_at: m.loaded_at,
            calls: m.calls(),
            crashes: m.crashes.load(Ordering::Relaxed),
            size: m.size,
            trust: m.trust.get().cloned().unwrap_or_default(),
            child_pid: m.isolated.as_ref().map(|c| c.pid()),
            child_rss: m.isolated.as_ref().and_then(|c| c.rss()),
        }
    }
}

/// Something that happened to a module, for [`Loader::subscribe`](crate::Loader::subscribe).
#[derive(Debug, Clone)]
pub enum Event {
    /// A module was loaded.
    Loaded(Box<ModuleInfo>),
    /// A module was unloaded.
    Unloaded {
        /// Its name.
        name: String,
    },
    /// A module crashed and was unloaded.
    Crashed(Box<CrashReport>),
    /// A call passed its soft deadline (by default half its time limit) and is still running:
    /// where it was when sampled. A warning also went to the loader's log sink.
    CallSlow {
        /// The module.
        module: String,
        /// The function the call ran, when known.
        function: Option<String>,
        /// The thread running it (kernel thread id).
        thread: i32,
        /// How long it had run when sampled.
        running: Duration,
        /// The sampled stack, innermost first (empty when the thread could not be sampled).
        frames: Vec<crate::crash::Frame>,
    },
    /// A call ran past its deadline and was interrupted: its module was unloaded as after a
    /// crash. The report's [`CrashReport::timeout`] is set.
    CallTimedOut(Box<CrashReport>),
    /// A call ran past its deadline and cannot be interrupted: the module is now
    /// [`ModuleState::Hung`](crate::ModuleState::Hung) (no new calls; unloading it removes
    /// it and leaves its thread alone).
    Hung {
        /// The module.
        module: String,
        /// The function the call ran, when known.
        function: Option<String>,
        /// The thread stuck in it.
        thread: i32,
        /// Why it cannot be interrupted.
        detail: String,
    },
}

/// A published module.
pub(crate) struct Entry {
    pub module: Arc<Module>,
    /// User references (handles); dependents are counted in `holders`.
    pub refs: usize,
    /// Modules this one depends on, in the order they were opened.
    pub deps: Vec<u64>,
    /// Loaded modules that depend on this one.
    pub holders: Vec<u64>,
    /// Loads under way that will depend on this one: they keep it from being unloaded until
    /// they publish (and become holders) or fail.
    pub pins: usize,
    /// The thread unloading it, while `module_can_unload`/`module_fini` run unlocked.
    pub unloading_by: Option<ThreadId>,
}

impl Entry {
    /// Nothing uses it any more.
    pub fn unused(&self) -> bool {
        self.refs == 0 && self.holders.is_empty() && self.pins == 0 && self.unloading_by.is_none()
    }
}

/// A load under way: its file is reserved so a second open of it waits instead of loading it
/// twice.
pub(crate) struct Pending {
    pub name: String,
    pub path: PathBuf,
    pub thread: ThreadId,
}

#[derive(Default)]
pub(crate) struct Registry {
    /// Keyed by instance id; ids grow with every load, so this is also load order.
    pub entries: BTreeMap<u64, Entry>,
    // Ordered maps: their keys (device and inode pairs, short names) compare in a few
    // instructions, where hashing them costs more than a lookup among a few hundred entries.
    pub by_key: BTreeMap<FileKey, u64>,
    pub by_name: BTreeMap<String, u64>,
    pub pending: BTreeMap<FileKey, Pending>,
    /// Threads waiting for a pending load or an unload, and the file they wait for: followed
    /// to refuse a wait that would close a circle.
    pub waiting: HashMap<ThreadId, FileKey>,
    pub crashes: VecDeque<CrashReport>,
    pub crash_times: HashMap<String, VecDeque<Instant>>,
    pub quarantined: HashMap<String, usize>,
    pub events: Vec<Event>,
}

/// Crash reports kept per loader (the newest; older ones are dropped).
pub(crate) const CRASH_HISTORY: usize = 256;

/// Module names whose recent crash times the crash-loop policy keeps per loader (beyond it,
/// names with no crash left in the window go first, then the one that crashed longest ago).
/// Quarantined names stay until cleared: one entry per quarantined name.
pub(crate) const CRASH_LOOP_NAMES: usize = 1024;

impl Registry {
    pub fn holders(&self, id: u64) -> Vec<String> {
        let mut h: Vec<String> = self.entries.get(&id).map_or_else(Vec::new, |e| {
            e.holders
                .iter()
                .filter_map(|h| self.entries.get(h).map(|e| e.module.name.clone()))
                .collect()
        });
        h.sort();
        h
    }

    pub fn is_held(&self, id: u64) -> bool {
        self.entries.get(&id).is_some_and(|e| !e.holders.is_empty())
    }

    pub fn info(&self, id: u64) -> Option<ModuleInfo> {
        let e = self.entries.get(&id)?;
        Some(ModuleInfo {
            refcount: e.refs + e.holders.len(),
            dependencies: e
                .deps
                .iter()
                .filter_map(|d| self.entries.get(d).map(|e| e.module.name.clone()))
                .collect(),
            holders: self.holders(id),
            ..ModuleInfo::detached(&e.module)
        })
    }

    /// Publish a loaded module and make it a holder of its dependencies (whose pins it
    /// inherits).
    pub fn publish(&mut self, module: Arc<Module>, as_dep: bool, deps: Vec<u64>) {
        let id = module.id;
        for d in &deps {
            if let Some(dep) = self.entries.get_mut(d) {
                dep.holders.push(id);
                dep.pins = dep.pins.saturating_sub(1);
            }
        }
        self.by_key.insert(module.key, id);
        self.by_name.insert(module.name.clone(), id);
        // A dependency's only users are its holders: it starts with no user reference, and a
        // pin for the dependent being loaded.
        let entry = Entry {
            module,
            refs: usize::from(!as_dep),
            deps,
            holders: Vec::new(),
            pins: usize::from(as_dep),
            unloading_by: None,
        };
        self.entries.insert(id, entry);
    }

    pub fn remove(&mut self, id: u64) -> Option<Entry> {
        let e = self.entries.remove(&id)?;
        if self.by_key.get(&e.module.key) == Some(&id) {
            self.by_key.remove(&e.module.key);
        }
        if self.by_name.get(&e.module.name) == Some(&id) {
            self.by_name.remove(&e.module.name);
        }
        for d in &e.deps {
            if let Some(dep) = self.entries.get_mut(d) {
                dep.holders.retain(|&h| h != id);
            }
        }
        Some(e)
    }

    /// The thread a wait for `key` waits on: the one loading or unloading it.
    fn owner(&self, key: &FileKey) -> Option<ThreadId> {
        if let Some(p) = self.pending.get(key) {
            return Some(p.thread);
        }
        let id = self.by_key.get(key)?;
        self.entries.get(id)?.unloading_by
    }

    /// Whether `me` waiting for `key` would wait, through other waiting threads, for itself.
    pub fn wait_closes_circle(&self, me: ThreadId, key: &FileKey) -> bool {
        let mut owner = self.owner(key);
        for _ in 0..=self.waiting.len() {
            match owner {
                Some(t) if t == me => return true,
                Some(t) => owner = self.waiting.get(&t).and_then(|k| self.owner(k)),
                None => return false,
            }
        }
        false
    }
}
