//! The one error type of the loader. Every variant carries its cause: the file, the `dlerror`
//! text, the missing symbol, both versions, the init return code, the crash report.

use std::path::PathBuf;

use crate::crash::CrashReport;
use crate::interface::Version;

/// A `Result` whose error is [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why a module is busy and cannot be unloaded now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BusyReason {
    /// Other loaded modules depend on it (like rmmod's "in use by").
    Holders(Vec<String>),
    /// Its `module_can_unload()` returned this non-zero code.
    Veto(i32),
    /// Calls into it are still running on other threads.
    InFlight(usize),
}

impl std::fmt::Display for BusyReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BusyReason::Holders(h) => write!(f, "in use by {}", h.join(", ")),
            BusyReason::Veto(code) => write!(f, "module_can_unload() refused with {code}"),
            BusyReason::InFlight(n) => write!(f, "{n} call(s) still running in it"),
        }
    }
}

/// Everything that can go wrong when loading, using or unloading a module.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A NULL or empty path, a malformed spec (`..`, an absolute part, an empty segment), a bad
    /// option value.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The spec names no file: `tried` lists every place looked at.
    #[error("module {spec:?} not found{}", tried_list(tried))]
    NotFound {
        /// The spec or path asked for.
        spec: String,
        /// The files that were tried, in order.
        tried: Vec<PathBuf>,
    },

    /// The file exists but cannot be read (permissions, a directory, an I/O error).
    #[error("{}: cannot read module file: {source}", path.display())]
    Unreadable {
        /// The file.
        path: PathBuf,
        /// The operating system's reason.
        #[source]
        source: std::io::Error,
    },

    /// The path names something other than a regular file: a FIFO, a device, a directory, a
    /// socket. Refused without reading it (a FIFO would block, a device never ends).
    #[error("{}: not a regular file but {kind}; a module must be a regular file", path.display())]
    NotRegularFile {
        /// The path.
        path: PathBuf,
        /// What it is (`"a FIFO (named pipe)"`, `"a character device"`, ...).
        kind: &'static str,
    },

    /// The file is larger than any module the loader accepts.
    #[error("{}: {size} bytes, larger than the {limit}-byte limit for a module file", path.display())]
    TooLarge {
        /// The file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },

    /// The file is empty.
    #[error("{}: empty file, not an ELF shared object (dlopen: {dlerror})", path.display())]
    EmptyFile {
        /// The file.
        path: PathBuf,
        /// What the dynamic linker said.
        dlerror: String,
    },

    /// The file does not start with the ELF magic.
    #[error("{}: not an ELF file (dlopen: {dlerror})", path.display())]
    NotElf {
        /// The file.
        path: PathBuf,
        /// What the dynamic linker said.
        dlerror: String,
    },

    /// The ELF file is shorter than its own headers say.
    #[error("{}: truncated ELF file: {detail} (dlopen: {dlerror})", path.display())]
    Truncated {
        /// The file.
        path: PathBuf,
        /// What is missing.
        detail: String,
        /// What the dynamic linker said.
        dlerror: String,
    },

    /// The ELF file is for another machine or class.
    #[error("{}: ELF file for {found}, this machine needs {expected} (dlopen: {dlerror})", path.display())]
    WrongArchitecture {
        /// The file.
        path: PathBuf,
        /// The file's machine and class.
        found: String,
        /// This machine's.
        expected: String,
        /// What the dynamic linker said.
        dlerror: String,
    },

    /// The ELF file is not a shared object (an executable, a relocatable object).
    #[error("{}: not an ELF shared object: {detail} (dlopen: {dlerror})", path.display())]
    NotSharedObject {
        /// The file.
        path: PathBuf,
        /// The ELF type found.
        detail: String,
        /// What the dynamic linker said.
        dlerror: String,
    },

    /// The ELF file's structure is malformed in a way `ld.so` trusts (a table past the end of
    /// its segment, a bad relocation, a broken hash chain...): it was refused before `dlopen`,
    /// which could have crashed the whole process on it.
    #[error("{}: malformed ELF file, not passed to dlopen: {detail}", path.display())]
    MalformedElf {
        /// The file.
        path: PathBuf,
        /// Exactly what is wrong.
        detail: String,
    },

    /// `dlopen` failed for another reason (a missing library it needs, a relocation error).
    #[error("{}: dlopen failed: {dlerror}", path.display())]
    LoadFailed {
        /// The file.
        path: PathBuf,
        /// What the dynamic linker said.
        dlerror: String,
    },

    /// A required export is missing.
    #[error("{}: required export {symbol}() is missing", path.display())]
    MissingExport {
        /// The file.
        path: PathBuf,
        /// The missing export.
        symbol: &'static str,
    },

    /// The file exports none of the module interface (and is not an acceptable legacy module).
    #[error("{}: not a module: it exports none of module_get_interface_version(), module_init(), module_fini(){}", path.display(), if *.legacy_refused { " (it exports mod_hello() but this loader is strict and refuses legacy modules)" } else { "" })]
    NoInterface {
        /// The file.
        path: PathBuf,
        /// It was a legacy `mod_hello`-only module that a strict loader refused.
        legacy_refused: bool,
    },

    /// The module's interface version is not compatible with the loader's.
    #[error("{}: interface version {module} is not compatible with the loader's {loader} (major must match, module minor must not be newer)", path.display())]
    VersionMismatch {
        /// The file.
        path: PathBuf,
        /// What the module returned.
        module: Version,
        /// What the loader implements.
        loader: Version,
    },

    /// `module_init` returned non-zero; the module was closed again.
    #[error("module {module} ({}): module_init() failed with code {code}", path.display())]
    InitFailed {
        /// The module's name.
        module: String,
        /// The file.
        path: PathBuf,
        /// What `module_init` returned.
        code: i32,
    },

    /// No such symbol is defined in the module itself.
    #[error("module {module}: symbol {symbol:?} not found{}", if detail.is_empty() { String::new() } else { format!(" ({detail})") })]
    SymbolNotFound {
        /// The module's name.
        module: String,
        /// The symbol asked for.
        symbol: String,
        /// Where it was found instead, or the dlerror text.
        detail: String,
    },

    /// The module is not loaded (never loaded, already unloaded, or unloaded after a crash).
    #[error("module {module} is not loaded{}", if reason.is_empty() { String::new() } else { format!(": {reason}") })]
    NotLoaded {
        /// The module's name (empty when nothing was loaded at all).
        module: String,
        /// Why, when known ("unloaded after a crash: SIGSEGV").
        reason: String,
    },

    /// A module is already loaded where only one may be.
    #[error("module {module} is already loaded from {}", existing.display())]
    AlreadyLoaded {
        /// The module's name.
        module: String,
        /// The file already loaded under that name.
        existing: PathBuf,
    },

    /// The module cannot be unloaded now.
    #[error("module {module} is busy: {reason}")]
    Busy {
        /// The module's name.
        module: String,
        /// Why.
        reason: BusyReason,
    },

    /// An open or close made from inside the very load or unload it would wait for: from a
    /// module's own constructor, `module_init` or `module_fini`, or a host callback they made.
    #[error("module {module} cannot be opened or closed from here: {detail}")]
    Reentrant {
        /// The module.
        module: String,
        /// What the thread is doing with it already.
        detail: String,
    },

    /// A dependency problem: a cycle, or a dependency that cannot be opened.
    #[error("module {module}: {detail}")]
    Dependency {
        /// The module whose dependencies failed.
        module: String,
        /// The cycle or the failing dependency, with its own error.
        detail: String,
        /// The dependency's own error, when one failed to open.
        #[source]
        source: Option<Box<Error>>,
    },

    /// The module raised a fatal signal; it has been unloaded and the host kept running.
    #[error("{0}")]
    Crashed(Box<CrashReport>),

    /// The call ran past its deadline: the guard's interrupt signal ended it (an isolated
    /// module's process was killed), and the module was unloaded as after a crash. The report
    /// (its [`CrashReport::timeout`] is set) names the module, the function, how long it ran
    /// and where it was.
    #[error("{}", .0.summary())]
    TimedOut(Box<CrashReport>),

    /// The module crashed too often and is refused until cleared.
    #[error("module {module} is quarantined after {crashes} crashes within {window_secs} s; clear it to load it again")]
    Quarantined {
        /// The module's name.
        module: String,
        /// Crashes counted within the window.
        crashes: usize,
        /// The window, in seconds.
        window_secs: u64,
    },

    /// Loading the module would exceed a bound the loader keeps on what crashes cost (the
    /// crashed instances kept mapped, the crash guard's table of module code).
    #[error("{}: module {module} is refused: {detail}", path.display())]
    Limit {
        /// The module's name.
        module: String,
        /// The file.
        path: PathBuf,
        /// Which bound, its figures, and what to do.
        detail: String,
    },

    /// The module file, or a directory above it, may be changed by someone other than root and
    /// this process's user (see the `trust` rules in the README). Refused before any of its
    /// code runs; `detail` names the path, its owner and mode, and the remedy.
    #[error("{}: untrusted module path: {detail}", path.display())]
    UntrustedPath {
        /// The module file asked for.
        path: PathBuf,
        /// The offending path, its owner and mode, and what to do.
        detail: String,
    },

    /// The signature policy refused the module (no valid signature by a trusted key), or the
    /// revocation list cannot be read. Refused before any of its code runs.
    #[error("{}: {detail}", path.display())]
    Signature {
        /// The module file (or the revocation list).
        path: PathBuf,
        /// Why, and what to do.
        detail: String,
    },

    /// The file's SHA-256 digest is on the revocation list.
    #[error(
        "{}: refused: its SHA-256 digest {digest} is on the revocation list {}; install a fixed \
         build of the module",
        path.display(),
        list.display()
    )]
    Revoked {
        /// The module file.
        path: PathBuf,
        /// Its SHA-256, hex.
        digest: String,
        /// The revocation list that names it.
        list: PathBuf,
    },

    /// An invoke's output did not fit the caller's buffer: `needed` bytes are needed (the C
    /// API's `MODULE_ERR_BUFFER_TOO_SMALL`, with the size in `*out_len`).
    #[error("module {module}: the output of {symbol}() needs {needed} bytes, more than the {capacity}-byte buffer given; call again with a buffer of at least {needed} bytes")]
    BufferTooSmall {
        /// The module's name.
        module: String,
        /// The invoked function.
        symbol: String,
        /// The bytes the output needs.
        needed: usize,
        /// The buffer's size.
        capacity: usize,
    },

    /// An isolated module's process ended by exiting, not by a signal: the module called
    /// `exit`/`_exit` (contained by the child's guard), or a raw `exit_group` system call. The
    /// module is marked crashed; the next open starts a fresh process.
    #[error("module {module} ({}): its isolated process exited with status {status} ({how}); the module is unloaded, open it again to start a fresh process", path.display())]
    Exited {
        /// The module's name.
        module: String,
        /// The file.
        path: PathBuf,
        /// The exit status.
        status: i32,
        /// How: `"the module called exit(3)"`, `"a raw exit system call"`.
        how: String,
    },

    /// The probe (loading in a child process first) could not run.
    #[error("{}: probe failed: {detail}", path.display())]
    Probe {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        detail: String,
    },
}

fn tried_list(tried: &[PathBuf]) -> String {
    if tried.is_empty() {
        String::new()
    } else {
        let list: Vec<String> = tried.iter().map(|p| p.display().to_string()).collect();
        format!("; tried: {}", list.join(", "))
    }
}

impl Error {
    /// A short stable name for the error's kind, as used by the C API codes and the daemon's
    /// error names (`"NotFound"`, `"Crashed"`, ...).
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidArgument(_) => ErrorKind::InvalidArgument,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::Unreadable { .. }
            | Error::NotRegularFile { .. }
            | Error::TooLarge { .. }
            | Error::EmptyFile { .. }
            | Error::NotElf { .. }
            | Error::Truncated { .. }
            | Error::WrongArchitecture { .. }
            | Error::NotSharedObject { .. }
            | Error::MalformedElf { .. }
            | Error::LoadFailed { .. }
            | Error::NoInterface { .. }
            | Error::Probe { .. }
            | Error::Limit { .. } => ErrorKind::LoadFailed,
            Error::MissingExport { .. } | Error::SymbolNotFound { .. } => ErrorKind::SymbolNotFound,
            Error::VersionMismatch { .. } => ErrorKind::VersionMismatch,
            Error::InitFailed { .. } => ErrorKind::InitFailed,
            Error::NotLoaded { .. } => ErrorKind::NotLoaded,
            Error::AlreadyLoaded { .. } => ErrorKind::AlreadyLoaded,
            Error::Busy { .. } | Error::Reentrant { .. } => ErrorKind::Busy,
            Error::Dependency { .. } => ErrorKind::Dependency,
            Error::Crashed(_) => ErrorKind::Crashed,
            Error::TimedOut(_) => ErrorKind::TimedOut,
            Error::Quarantined { .. } => ErrorKind::Quarantined,
            Error::UntrustedPath { .. } => ErrorKind::Untrusted,
            Error::Signature { .. } | Error::Revoked { .. } => ErrorKind::Signature,
            Error::BufferTooSmall { .. } => ErrorKind::BufferTooSmall,
            Error::Exited { .. } => ErrorKind::Exited,
        }
    }

    /// The crash report, when this error is a crash.
    pub fn crash_report(&self) -> Option<&CrashReport> {
        match self {
            Error::Crashed(r) | Error::TimedOut(r) => Some(r),
            Error::Dependency { source: Some(inner), .. } => inner.crash_report(),
            _ => None,
        }
    }
}

/// The kind of an [`Error`], one per C error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// `MODULE_ERR_INVALID_ARGUMENT`
    InvalidArgument,
    /// `MODULE_ERR_NOT_FOUND`
    NotFound,
    /// `MODULE_ERR_LOAD_FAILED`
    LoadFailed,
    /// `MODULE_ERR_SYMBOL_NOT_FOUND`
    SymbolNotFound,
    /// `MODULE_ERR_VERSION_MISMATCH`
    VersionMismatch,
    /// `MODULE_ERR_INIT_FAILED`
    InitFailed,
    /// `MODULE_ERR_NOT_LOADED`
    NotLoaded,
    /// `MODULE_ERR_ALREADY_LOADED`
    AlreadyLoaded,
    /// `MODULE_ERR_BUSY`
    Busy,
    /// `MODULE_ERR_DEPENDENCY`
    Dependency,
    /// `MODULE_ERR_CRASHED`
    Crashed,
    /// `MODULE_ERR_QUARANTINED`
    Quarantined,
    /// `MODULE_ERR_UNTRUSTED`
    Untrusted,
    /// `MODULE_ERR_SIGNATURE`
    Signature,
    /// `MODULE_ERR_BUFFER_TOO_SMALL`
    BufferTooSmall,
    /// `MODULE_ERR_EXITED`
    Exited,
    /// `MODULE_ERR_TIMED_OUT`
    TimedOut,
}

impl ErrorKind {
    /// The name used on the wire and in logs: `"NotFound"`, `"Crashed"`, ...
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "InvalidArgument",
            ErrorKind::NotFound => "NotFound",
            ErrorKind::LoadFailed => "LoadFailed",
            ErrorKind::SymbolNotFound => "SymbolNotFound",
            ErrorKind::VersionMismatch => "VersionMismatch",
            ErrorKind::InitFailed => "InitFailed",
            ErrorKind::NotLoaded => "NotLoaded",
            ErrorKind::AlreadyLoaded => "AlreadyLoaded",
            ErrorKind::Busy => "Busy",
            ErrorKind::Dependency => "Dependency",
            ErrorKind::Crashed => "Crashed",
            ErrorKind::Quarantined => "Quarantined",
            ErrorKind::Untrusted => "Untrusted",
            ErrorKind::Signature => "Signature",
            ErrorKind::BufferTooSmall => "BufferTooSmall",
            ErrorKind::Exited => "Exited",
            ErrorKind::TimedOut => "TimedOut",
        }
    }
}
