//! How a loader behaves and how one module is opened: the plain option types shared by the
//! loader, the module instances and the C API.

use std::sync::Arc;
use std::time::Duration;

use crate::interface::ModuleInitArgs;

/// How a module is opened, like `ddi_modopen`'s `mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum OpenMode {
    /// The default: the module must implement the interface (or be an accepted legacy
    /// module); `module_init` and `module_fini` run.
    #[default]
    Module,
    /// An object with no interface (for example a firmware blob wrapped into a shared object):
    /// no init or fini is looked for or run; only its symbols are used.
    Data,
}

/// The loader's log sink: `(module name, level, message)`.
pub type LogSink = Arc<dyn Fn(&str, i32, &str) + Send + Sync>;

/// What happens to a crashed module's code. A crash unloads the module logically at once
/// (out of the registry, its symbols and new calls refused) whatever the policy; the policy
/// decides when its code is unmapped, and so what a crash costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CrashPolicy {
    /// The default: unmap the crashed instance (`dlclose`, its image and lease released, its
    /// text dropped from the guard's table) once its guarded calls in flight have drained,
    /// unless a thread may still run in its code: the module may start threads (it imports
    /// `pthread_create`, `clone`, `dlopen`... or needs a library other than the C runtime's),
    /// or a thread's PC or stack lies in its code when the calls have drained. Then the code
    /// stays mapped for good, as under [`Retain`](Self::Retain). So a crash of a module that
    /// starts no thread costs nothing that lasts.
    #[default]
    ReclaimWhenSafe,
    /// Keep every crashed instance's code mapped for good (no `dlclose`), whether or not the
    /// module may start threads. The module is gone logically, and loading it again maps a
    /// fresh private image (a sealed memfd). Each crash then keeps ~20 KiB and a few mappings;
    /// the number of instances kept is bounded by
    /// [`LoaderBuilder::max_kept_mapped`](crate::LoaderBuilder::max_kept_mapped).
    Retain,
    /// Unmap once the calls in flight have drained, even a module that may start threads,
    /// unless one of its threads is seen in its code then (as on a normal unload). For modules
    /// known to stop their threads themselves.
    Reclaim,
}

/// Instances whose code is kept mapped for good after a crash (or after an unload under a
/// running thread), per process, beyond which a load whose crash would be kept is refused:
/// the default of [`LoaderBuilder::max_kept_mapped`](crate::LoaderBuilder::max_kept_mapped).
/// At ~20-25 KiB and 6 mappings each, 256 instances are ~6 MiB and ~1,500 mappings.
pub const DEFAULT_MAX_KEPT_MAPPED: usize = 256;

/// Refuse a module after `max_crashes` crashes within `window`, until cleared with
/// [`Loader::clear_quarantine`](crate::Loader::clear_quarantine). Off by default in the
/// library; the daemon turns it on.
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
    /// Run the module in a process of its own (the isolation tier, see
    /// [`Isolation`]); `None`: in this process, under the crash guard.
    pub isolation: Option<Isolation>,
    /// The load's deadline for `module_init` (in this process): past it the call is
    /// interrupted, as a hung guarded call would be, and the load is refused as hung.
    /// `None`: the loader's call time limit
    /// ([`Loader::set_call_timeout`](crate::Loader::set_call_timeout)), if any.
    pub init_timeout: Option<Duration>,
}

impl OpenOptions {
    /// Options for a data object: no interface, no init or fini.
    pub fn data() -> Self {
        OpenOptions {
            mode: OpenMode::Data,
            init_args: InitArgs::Null,
            isolation: None,
            init_timeout: None,
        }
    }

    /// Options for an isolated module with the default [`Isolation`]: the module runs in a
    /// `kmodlike-host` child process of its own, reached through
    /// [`Handle::invoke`](crate::Handle::invoke) only.
    pub fn isolated() -> Self {
        OpenOptions { isolation: Some(Isolation::default()), ..OpenOptions::default() }
    }

    /// Kill an isolated module's process when one call (an invoke, `module_init`,
    /// `module_fini`) runs longer than `timeout`: the call returns
    /// [`Error::TimedOut`](crate::Error::TimedOut) and the module is unloaded. Makes the
    /// options isolated if they were not.
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.isolation.get_or_insert_with(Isolation::default).call_timeout = Some(timeout);
        self
    }
}

/// How an isolated module's process is run and confined (see `docs/isolation.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Isolation {
    /// The longest one call may run before the process is killed (`None`: no deadline).
    pub call_timeout: Option<Duration>,
    /// `RLIMIT_AS` of the process, bytes (`None`: inherited). Default 1 GiB.
    pub address_space: Option<u64>,
    /// `RLIMIT_CPU` of the process, seconds (`None`: inherited). Default none.
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_NOFILE` of the process (`None`: inherited). Default 64.
    pub open_files: Option<u64>,
    /// Confine the process with the default seccomp allow-list for computation modules
    /// (memory, time, futexes, reading and writing descriptors it already has; no `open`,
    /// no `socket`, no `execve`). Default off.
    pub seccomp: bool,
    /// When this process runs as root, the uid (and gid) the child drops to before loading the
    /// module. Ignored otherwise. Default none.
    pub uid: Option<u32>,
}

impl Default for Isolation {
    /// No deadline, 1 GiB of address space, 64 open files, no CPU limit, no seccomp filter,
    /// no uid change.
    fn default() -> Self {
        Isolation {
            call_timeout: None,
            address_space: Some(1 << 30),
            cpu_seconds: None,
            open_files: Some(64),
            seccomp: false,
            uid: None,
        }
    }
}
