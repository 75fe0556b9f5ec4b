//! Crash reports and the process taint flag.
//!
//! A [`CrashReport`] is built *after* the guard has jumped out of the signal handler: the
//! handler only records raw numbers (signal, `si_code`, addresses, thread id, time); naming the
//! signal, unwinding the handler's copy of the stack (`backtrace.rs`), naming the frames and
//! deciding taint happen here, in normal context.

use std::fmt;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

/// Where in a module's life the fatal signal happened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
#[cfg_attr(feature = "serde", serde(rename_all = "snake_case"))]
pub enum Phase {
    /// In `module_init`.
    Init,
    /// In `module_get_interface_version`, while the module was being loaded.
    Version,
    /// In `module_fini`.
    Fini,
    /// In `module_can_unload`.
    CanUnload,
    /// In `mod_hello`.
    Hello,
    /// In a guarded call made through the API.
    Call,
    /// On a thread the module started (no guard was active).
    Thread,
    /// In a constructor or `module_init`, seen by the probe child process.
    Probe,
}

impl Phase {
    /// The module's function the loader itself calls in this phase (`"module_init"`), if any.
    pub fn entry_point(self) -> Option<&'static str> {
        match self {
            Phase::Init => Some("module_init"),
            Phase::Version => Some("module_get_interface_version"),
            Phase::Fini => Some("module_fini"),
            Phase::CanUnload => Some("module_can_unload"),
            Phase::Hello => Some("mod_hello"),
            Phase::Call | Phase::Thread | Phase::Probe => None,
        }
    }

    /// A lowercase name: `"init"`, `"call"`, `"thread"`, ...
    pub fn name(self) -> &'static str {
        match self {
            Phase::Init => "init",
            Phase::Version => "get_interface_version",
            Phase::Fini => "fini",
            Phase::CanUnload => "can_unload",
            Phase::Hello => "mod_hello",
            Phase::Call => "call",
            Phase::Thread => "thread",
            Phase::Probe => "probe",
        }
    }
}

/// Everything known about one fatal signal raised by module code.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CrashReport {
    /// The module's name.
    pub module: String,
    /// The module's file.
    pub path: PathBuf,
    /// Signal number.
    pub signal: i32,
    /// Signal name (`"SIGSEGV"`).
    pub signal_name: String,
    /// `si_code`.
    pub code: i32,
    /// `si_code`'s name (`"SEGV_MAPERR"`, `"FPE_INTDIV"`, `"SI_TKILL"`).
    pub code_name: String,
    /// What the code means (`"address not mapped to object"`).
    pub code_meaning: String,
    /// `si_addr`: the faulting address (for SEGV/BUS), the instruction (FPE/ILL), or 0.
    pub fault_addr: u64,
    /// Program counter at the signal.
    pub pc: u64,
    /// Whether the PC lay in the module's own code.
    pub pc_in_module: bool,
    /// PC offset from the module's load address, when the PC was in the module.
    pub module_offset: Option<u64>,
    /// The object the PC lay in (`"libc.so.6"`), when `dladdr` knows it.
    pub pc_object: Option<String>,
    /// Nearest symbol and offset (`"crash_segv+0x12"`), when known.
    pub symbol: Option<String>,
    /// Where in the module's life it happened.
    pub phase: Phase,
    /// Kernel thread id of the faulting thread.
    pub thread_id: i32,
    /// Wall-clock time of the signal.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_time"))]
    pub time: SystemTime,
    /// The taint verdict: why this crash may have left the process in a bad state, or `None`.
    pub taint: Option<String>,
    /// Not a signal: the module called `exit`/`_exit`/`_Exit`/`quick_exit` with this status,
    /// and the loader ended the call (or, on a thread the module started, that thread) instead
    /// of the process. `signal` is then 0 and `signal_name` says the call (`"exit(3)"`).
    pub exit_status: Option<i32>,
    /// The backtrace of the faulting thread, innermost first (frame 0 holds the PC). Empty when
    /// it could not be taken.
    pub frames: Vec<Frame>,
    /// The function the guarded call ran (`"crash_now"`, named from the module's symbols), when
    /// the crash happened in a call and the function has a name.
    pub called: Option<String>,
    /// For a crash in the probe's child process: its pid (`thread_id` is a thread of that
    /// process, not of this one).
    pub probe_pid: Option<u32>,
    /// For a SIGABRT raised by glibc after one of its checks failed: the message it printed
    /// (`"double free or corruption (!prev)"`, `"free(): invalid pointer"`).
    pub abort_message: Option<String>,
    /// Not a fault: the call ran past its deadline and the guard's interrupt signal ended it
    /// (`signal` is that signal, `signal_name` is `"timeout"`); `pc`, `symbol` and `frames`
    /// say where it was.
    pub timeout: Option<CallTimeout>,
}

/// How a call that ran past its deadline was ended (a [`CrashReport`] of a timeout).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct CallTimeout {
    /// The call's time limit (its deadline minus its start); `None` when it was interrupted on
    /// request ([`Loader::interrupt_calls`](crate::Loader::interrupt_calls)) rather than by
    /// its deadline.
    pub limit: Option<Duration>,
    /// How long it ran before the interrupt ended it (zero when its start is unknown: a call
    /// without a deadline, interrupted on request).
    pub ran: Duration,
}

/// One frame of a crash's backtrace.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Frame {
    /// The address: the PC for frame 0, a return address for the others.
    pub pc: u64,
    /// The file name of the object holding it (`"libc.so.6"`), when known.
    pub object: Option<String>,
    /// That object's path.
    pub object_path: Option<PathBuf>,
    /// `pc` minus the object's load address.
    pub object_offset: Option<u64>,
    /// That object's GNU build id, in hex.
    pub build_id: Option<String>,
    /// The nearest symbol before `pc` (demangled), from the dynamic symbol table or the file's
    /// own `.symtab`.
    pub symbol: Option<String>,
    /// `pc` minus that symbol's address.
    pub symbol_offset: Option<u64>,
    /// Found without unwind information (frame pointers or a stack scan): a guess.
    pub guessed: bool,
    /// In the crashed module's own code.
    pub in_module: bool,
}

#[cfg(feature = "serde")]
pub(crate) fn serialize_time<S: serde::Serializer>(
    t: &SystemTime,
    s: S,
) -> Result<S::Ok, S::Error> {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs_f64()).unwrap_or(0.0);
    s.serialize_f64(secs)
}

impl CrashReport {
    /// One line: `module hello crashed: SIGSEGV (SEGV_MAPERR: address not mapped to object) at 0x0 in call`.
    pub fn summary(&self) -> String {
        if let (Some(_), "DEADLINE") = (&self.timeout, self.code_name.as_str()) {
            return format!(
                "module {}: {}; its isolated process was killed and the module unloaded (raise \
                 the deadline with OpenOptions::call_timeout if it is just slow)",
                self.module, self.code_meaning
            );
        }
        if let Some(t) = &self.timeout {
            let what = match &self.called {
                Some(f) => format!("call to {f}"),
                None => match self.phase {
                    Phase::Init => "module_init".to_owned(),
                    other => other.name().to_owned(),
                },
            };
            let why = match t.limit {
                Some(limit) => format!("ran past its deadline of {}", secs(limit)),
                None => "was interrupted on request".to_owned(),
            };
            let at = self.symbol.as_deref().unwrap_or("an unknown function");
            let object = self.pc_object.as_deref().unwrap_or("?");
            return format!(
                "module {}: {what} {why} after {}; interrupted in {at} ({object}); the module \
                 was unloaded",
                self.module,
                secs(t.ran),
            );
        }
        if self.exit_status.is_some() {
            return format!(
                "module {} called {} in {}: the loader ended {} instead of the process",
                self.module,
                self.signal_name,
                self.phase.name(),
                if self.phase == Phase::Thread { "that thread" } else { "the call" }
            );
        }
        format!(
            "module {} crashed: {} ({}: {}) at address {:#x} in {}",
            self.module,
            self.signal_name,
            self.code_name,
            self.code_meaning,
            self.fault_addr,
            self.phase.name()
        )
    }
}

impl CrashReport {
    /// A report of module `name` (file `path`) for `signal` in `phase`, stamped now, with
    /// nothing else known (no `si_code`, PC, thread or frames): each kind of report starts
    /// from it and sets what it knows.
    pub(crate) fn base(name: &str, path: &std::path::Path, signal: i32, phase: Phase) -> Self {
        CrashReport {
            module: name.to_owned(),
            path: path.to_owned(),
            signal,
            signal_name: signal_name(signal),
            code: 0,
            code_name: "UNKNOWN".to_owned(),
            code_meaning: String::new(),
            fault_addr: 0,
            pc: 0,
            pc_in_module: false,
            module_offset: None,
            pc_object: None,
            symbol: None,
            phase,
            thread_id: 0,
            time: SystemTime::now(),
            taint: None,
            exit_status: None,
            frames: Vec::new(),
            called: None,
            probe_pid: None,
            abort_message: None,
            timeout: None,
        }
    }

    /// What ended the module: the signal's name (`"SIGSEGV"`), or the exit call (`"exit(3)"`).
    pub fn cause(&self) -> &str {
        &self.signal_name
    }
}

impl fmt::Display for CrashReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{}", self.summary())?;
        writeln!(f, "  file:    {}", self.path.display())?;
        match self.exit_status {
            Some(status) => writeln!(f, "  exit:    {} (status {status})", self.signal_name)?,
            None => writeln!(
                f,
                "  signal:  {} ({}), si_code {} ({})",
                self.signal_name, self.signal, self.code, self.code_name
            )?,
        }
        write!(f, "  pc:      {:#x}", self.pc)?;
        match (self.pc_in_module, self.module_offset, &self.pc_object) {
            (true, Some(off), _) => write!(f, " = {}+{:#x} (in the module)", self.module, off)?,
            (true, None, _) => write!(f, " (in the module)")?,
            (false, _, Some(obj)) => write!(f, " in {obj} (outside the module)")?,
            (false, _, None) => write!(f, " (outside the module)")?,
        }
        if let Some(sym) = &self.symbol {
            write!(f, ", {sym}")?;
        }
        writeln!(f)?;
        match self.probe_pid {
            Some(pid) => write!(f, "  thread:  {} of the probe child, pid {pid}", self.thread_id)?,
            None => write!(f, "  thread:  {}", self.thread_id)?,
        }
        if let Some(m) = &self.abort_message {
            write!(f, "\n  glibc:   {m}")?;
        }
        if let Some(t) = &self.taint {
            write!(f, "\n  TAINTED: {t}")?;
        }
        Ok(())
    }
}

/// `1.5 s`, `2 s`, `0.001 s`; under a millisecond in microseconds (`300 us`), never `0 s`.
fn secs(d: Duration) -> String {
    if d < Duration::from_millis(1) {
        return format!("{} us", d.as_micros());
    }
    let s = format!("{:.3}", d.as_secs_f64());
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} s")
}

/// Why the process is tainted: the first crash that may have left libc in a bad state.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct Taint {
    /// The module that crashed.
    pub module: String,
    /// Why it taints (`"SIGSEGV with the PC in libc.so.6: a libc lock may be held"`).
    pub reason: String,
    /// When.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_time"))]
    pub time: SystemTime,
}

static TAINT: Mutex<Option<Taint>> = Mutex::new(None);

/// The process's taint, if any crash has tainted it. Like the Linux kernel's taint after an
/// oops, it stays until the operator acknowledges it ([`acknowledge_taint`]) or restarts.
pub fn taint() -> Option<Taint> {
    TAINT.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// A taint the operator acknowledged: the verdict, who acknowledged it and when.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct TaintAck {
    /// The taint that was cleared.
    pub taint: Taint,
    /// Who acknowledged it (`"api"`, `"uid 1000 pid 4242"`).
    pub by: String,
    /// When.
    #[cfg_attr(feature = "serde", serde(serialize_with = "serialize_time"))]
    pub time: SystemTime,
}

static TAINT_ACKS: Mutex<Vec<TaintAck>> = Mutex::new(Vec::new());

/// Acknowledge the process's taint: clear the current verdict (a later tainting crash sets a new
/// one) and remember who acknowledged it and when. `None` when the process is not tainted.
pub fn acknowledge_taint(by: &str) -> Option<TaintAck> {
    let taint = TAINT.lock().unwrap_or_else(|e| e.into_inner()).take()?;
    let ack = TaintAck { taint, by: by.to_owned(), time: SystemTime::now() };
    TAINT_ACKS.lock().unwrap_or_else(|e| e.into_inner()).push(ack.clone());
    Some(ack)
}

/// Every acknowledged taint, oldest first.
pub fn taint_acknowledgements() -> Vec<TaintAck> {
    TAINT_ACKS.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

/// Record a taint (the first one is kept).
pub(crate) fn set_taint(module: &str, reason: &str) {
    let mut t = TAINT.lock().unwrap_or_else(|e| e.into_inner());
    if t.is_none() {
        *t = Some(Taint {
            module: module.to_owned(),
            reason: reason.to_owned(),
            time: SystemTime::now(),
        });
    }
}

/// The name of a signal number (`11` -> `"SIGSEGV"`).
pub fn signal_name(sig: i32) -> String {
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGFPE => "SIGFPE",
        libc::SIGILL => "SIGILL",
        libc::SIGABRT => "SIGABRT",
        libc::SIGSYS => "SIGSYS",
        libc::SIGTRAP => "SIGTRAP",
        libc::SIGKILL => "SIGKILL",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGUSR2 => "SIGUSR2",
        libc::SIGPIPE => "SIGPIPE",
        libc::SIGALRM => "SIGALRM",
        libc::SIGHUP => "SIGHUP",
        libc::SIGQUIT => "SIGQUIT",
        _ => return format!("signal {sig}"),
    };
    name.to_owned()
}

/// The name and meaning of an `si_code` for a signal.
pub fn si_code_name(sig: i32, code: i32) -> (&'static str, &'static str) {
    // Codes common to every signal (sent rather than raised by a fault).
    match code {
        libc::SI_USER => return ("SI_USER", "sent by kill()"),
        libc::SI_TKILL => return ("SI_TKILL", "sent by tkill()/raise()/abort()"),
        libc::SI_QUEUE => return ("SI_QUEUE", "sent by sigqueue()"),
        libc::SI_KERNEL => return ("SI_KERNEL", "sent by the kernel"),
        _ => {}
    }
    match (sig, code) {
        (libc::SIGSEGV, 1) => ("SEGV_MAPERR", "address not mapped to object"),
        (libc::SIGSEGV, 2) => ("SEGV_ACCERR", "invalid permissions for mapped object"),
        (libc::SIGSEGV, 3) => ("SEGV_BNDERR", "failed address bound checks"),
        (libc::SIGSEGV, 4) => ("SEGV_PKUERR", "access denied by memory protection keys"),
        (libc::SIGBUS, 1) => ("BUS_ADRALN", "invalid address alignment"),
        (libc::SIGBUS, 2) => {
            ("BUS_ADRERR", "nonexistent physical address (access beyond the end of a mapped file)")
        }
        (libc::SIGBUS, 3) => ("BUS_OBJERR", "object-specific hardware error"),
        (libc::SIGBUS, 4) => ("BUS_MCEERR_AR", "hardware memory error consumed"),
        (libc::SIGBUS, 5) => ("BUS_MCEERR_AO", "hardware memory error detected"),
        (libc::SIGFPE, 1) => ("FPE_INTDIV", "integer divide by zero"),
        (libc::SIGFPE, 2) => ("FPE_INTOVF", "integer overflow"),
        (libc::SIGFPE, 3) => ("FPE_FLTDIV", "floating-point divide by zero"),
        (libc::SIGFPE, 4) => ("FPE_FLTOVF", "floating-point overflow"),
        (libc::SIGFPE, 5) => ("FPE_FLTUND", "floating-point underflow"),
        (libc::SIGFPE, 6) => ("FPE_FLTRES", "floating-point inexact result"),
        (libc::SIGFPE, 7) => ("FPE_FLTINV", "invalid floating-point operation"),
        (libc::SIGFPE, 8) => ("FPE_FLTSUB", "subscript out of range"),
        (libc::SIGILL, 1) => ("ILL_ILLOPC", "illegal opcode"),
        (libc::SIGILL, 2) => ("ILL_ILLOPN", "illegal operand"),
        (libc::SIGILL, 3) => ("ILL_ILLADR", "illegal addressing mode"),
        (libc::SIGILL, 4) => ("ILL_ILLTRP", "illegal trap"),
        (libc::SIGILL, 5) => ("ILL_PRVOPC", "privileged opcode"),
        (libc::SIGILL, 6) => ("ILL_PRVREG", "privileged register"),
        (libc::SIGILL, 7) => ("ILL_COPROC", "coprocessor error"),
        (libc::SIGILL, 8) => ("ILL_BADSTK", "internal stack error"),
        (libc::SIGSYS, 1) => ("SYS_SECCOMP", "system call blocked by seccomp"),
        _ => ("UNKNOWN", "unknown si_code"),
    }
}

/// Functions of the allocator: a SIGABRT raised from inside one of them (a detected heap
/// corruption) may leave the arena lock held.
const MALLOC_FUNCTIONS: &[&str] = &[
    "malloc",
    "free",
    "calloc",
    "realloc",
    "reallocarray",
    "cfree",
    "memalign",
    "valloc",
    "pvalloc",
    "aligned_alloc",
    "posix_memalign",
    "malloc_trim",
    "__libc_malloc",
    "__libc_free",
    "__libc_calloc",
    "__libc_realloc",
    "__libc_memalign",
    "__libc_valloc",
    "__libc_pvalloc",
];

/// Functions of stdio that hold a `FILE` lock while they run.
const STDIO_FUNCTIONS: &[&str] = &[
    "printf",
    "fprintf",
    "vprintf",
    "vfprintf",
    "dprintf",
    "puts",
    "fputs",
    "fputc",
    "putc",
    "putchar",
    "fwrite",
    "fread",
    "fgets",
    "fgetc",
    "getc",
    "fflush",
    "fclose",
    "fopen",
    "fseek",
    "ftell",
    "scanf",
    "fscanf",
    "sscanf",
    "sprintf",
    "snprintf",
    "vsnprintf",
    "_IO_puts",
    "_IO_fwrite",
    "_IO_fflush",
    "_IO_fputs",
];

/// Functions of the dynamic linker's interface that hold its lock.
const DL_FUNCTIONS: &[&str] =
    &["dlopen", "dlclose", "dlsym", "dlvsym", "dladdr", "dladdr1", "dlinfo", "dl_iterate_phdr"];

/// Which lock a libc function holds while it runs, if it is one that does.
fn lock_held_by(name: &str) -> Option<&'static str> {
    let base = name.split('@').next().unwrap_or(name);
    if MALLOC_FUNCTIONS.contains(&base) {
        Some("the malloc arena lock")
    } else if STDIO_FUNCTIONS.contains(&base) {
        Some("a stdio FILE lock")
    } else if DL_FUNCTIONS.contains(&base) {
        Some("the dynamic linker's lock")
    } else {
        None
    }
}

/// The taint of a raised SIGABRT, from the backtrace: the frames from the signal up to the
/// first frame of the module (found with unwind information, none guessed). A libc function
/// that holds a lock among them (`free` under `abort`: heap corruption detected) taints, naming
/// it. Frames that did not reach the module, with the PC in libc: "unknown". Otherwise
/// (the module called `abort()` itself, or from a callback libc called) no taint.
fn abort_taint(frames: &[Frame], pc_in_libc: bool) -> Option<String> {
    let mut reached_module = false;
    for f in frames {
        if f.guessed {
            break;
        }
        if f.in_module {
            reached_module = true;
            break;
        }
        if !f.object.as_deref().is_some_and(is_libc_object) {
            continue;
        }
        if let Some(name) = f.symbol.as_deref() {
            if let Some(lock) = lock_held_by(name) {
                let obj = f.object.as_deref().unwrap_or("libc");
                let what = if MALLOC_FUNCTIONS.contains(&name) {
                    " (heap corruption detected)"
                } else {
                    ""
                };
                return Some(format!(
                    "SIGABRT raised from inside {name}() in {obj}{what}: {lock} may be held"
                ));
            }
        }
    }
    if !reached_module && pc_in_libc {
        let at = frames.first().and_then(|f| f.symbol.as_deref()).unwrap_or("?");
        return Some(format!(
            "unknown: SIGABRT in libc ({at}) and the stack could not be unwound to the module, \
             so a libc lock may be held"
        ));
    }
    None
}

/// The runtime libraries a deadline never interrupts outside a system call (their locks):
/// libc, ld.so, and the unwinder (`libgcc_s`, which a panic or a C++ exception runs).
pub(crate) fn is_runtime_object(name: &str) -> bool {
    is_libc_object(name) || name.starts_with("libgcc_s.so")
}

/// Objects whose internal locks a crash may leave held.
fn is_libc_object(name: &str) -> bool {
    ["libc.so", "ld-linux", "ld64.so", "libpthread.so", "libm.so", "libdl.so"]
        .iter()
        .any(|p| name.starts_with(p))
}

/// `dladdr1` flag asking for the symbol's ELF entry (glibc's `<dlfcn.h>`).
const RTLD_DL_SYMENT: libc::c_int = 1;

pub(crate) struct Located {
    /// The object's file name (`libc.so.6`).
    pub object: Option<String>,
    /// The name ld.so knows it by (a path, or a module image's `/proc/self/fd/<n>`).
    pub object_path: Option<String>,
    /// Where the object is mapped (`dli_fbase`).
    pub base: Option<u64>,
    pub symbol: Option<(String, u64, u64)>,
}

/// `dladdr1` an address: the object's file name, and the nearest symbol with its start and size.
pub(crate) fn locate(addr: u64) -> Located {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    let mut sym: *mut libc::Elf64_Sym = std::ptr::null_mut();
    // SAFETY: dladdr1 reads the loader's tables and fills `info` and `sym`; it is called after
    // the guard's jump, in normal context, never in the signal handler.
    let ok = unsafe {
        libc::dladdr1(
            addr as *const libc::c_void,
            info.as_mut_ptr(),
            &mut sym as *mut *mut libc::Elf64_Sym as *mut *mut libc::c_void,
            RTLD_DL_SYMENT,
        )
    } != 0;
    if !ok {
        return Located { object: None, object_path: None, base: None, symbol: None };
    }
    // SAFETY: filled by dladdr1, which returned non-zero.
    let info = unsafe { info.assume_init() };
    let object_path = (!info.dli_fname.is_null()).then(|| {
        // SAFETY: a NUL-terminated name owned by ld.so.
        unsafe { std::ffi::CStr::from_ptr(info.dli_fname) }.to_string_lossy().into_owned()
    });
    let object =
        object_path.as_deref().map(|full| full.rsplit('/').next().unwrap_or(full).to_owned());
    let symbol = (!info.dli_sname.is_null()).then(|| {
        // SAFETY: as above.
        let name = unsafe { std::ffi::CStr::from_ptr(info.dli_sname) }.to_string_lossy();
        // SAFETY: when non-NULL, `sym` points at the symbol's ELF entry.
        let size = if sym.is_null() { 0 } else { unsafe { (*sym).st_size } };
        (name.into_owned(), info.dli_saddr as u64, size)
    });
    let base = (!info.dli_fbase.is_null()).then_some(info.dli_fbase as u64);
    Located { object, object_path, base, symbol }
}

/// Where a crashed or interrupted call of a module was, from what the handler recorded.
struct Site {
    pc_in_module: bool,
    /// The PC is in libc or ld.so (outside the module).
    pc_in_libc: bool,
    here: Located,
    /// The unwound backtrace, innermost first.
    frames: Vec<Frame>,
    /// The innermost frame's `symbol+offset`.
    symbol: Option<String>,
    /// The object holding the PC, by its file's name.
    pc_object: Option<String>,
    /// The function the call ran, named from the module's symbols.
    called: Option<String>,
}

impl Site {
    /// `file_of` names an object ld.so knows by a name that is not its file's (a module's
    /// image, `/proc/self/fd/<n>`), when it can.
    fn of(
        module: &crate::module::Module,
        raw: &crate::guard::RawCrash,
        file_of: impl Fn(&str) -> Option<String>,
    ) -> Site {
        let pc_in_module = module.contains(raw.pc);
        let here = locate(raw.pc);
        let contains = |a: u64| module.contains(a);
        let view = crate::backtrace::ModuleView { path: &module.path, contains: &contains };
        let frames = crate::backtrace::backtrace(&raw.fault(), &view);
        let symbol = frames
            .first()
            .and_then(|f| Some(format!("{}+{:#x}", f.symbol.as_ref()?, f.symbol_offset?)));
        let pc_object = if pc_in_module {
            crate::resolve::module_name_for(&module.path).into()
        } else {
            here.object_path.as_deref().and_then(&file_of).or_else(|| here.object.clone())
        };
        let pc_in_libc = !pc_in_module && here.object.as_deref().is_some_and(is_libc_object);
        let called = raw.called.and_then(|f| crate::backtrace::symbol_name_at(f, &view));
        Site { pc_in_module, pc_in_libc, here, frames, symbol, pc_object, called }
    }

    /// `module`'s report of `raw` in `phase` with what this site knows (the PC, where it was,
    /// the frames, the function called), the thread and the time; signal and code as
    /// recorded, their names to be set by the caller.
    fn report(
        self,
        module: &crate::module::Module,
        raw: &crate::guard::RawCrash,
        phase: Phase,
    ) -> CrashReport {
        CrashReport {
            code: raw.code,
            pc: raw.pc,
            pc_in_module: self.pc_in_module,
            module_offset: self.pc_in_module.then(|| raw.pc - module.base),
            pc_object: self.pc_object,
            symbol: self.symbol,
            thread_id: raw.tid,
            time: raw.time,
            frames: self.frames,
            called: self.called,
            ..CrashReport::base(&module.name, &module.path, raw.signo, phase)
        }
    }
}

/// Build the report for a crash of `module` from what the handler recorded: name the signal,
/// symbolise the PC, and decide the taint (recorded process-wide when set). `file_of` names
/// an object ld.so knows by a name that is not its file's (a module's image,
/// `/proc/self/fd/<n>`), when it can.
pub(crate) fn build_report(
    module: &crate::module::Module,
    raw: &crate::guard::RawCrash,
    phase: Phase,
    file_of: impl Fn(&str) -> Option<String>,
) -> CrashReport {
    if let Some(status) = raw.exit_status {
        return exit_report(module, raw, phase, status);
    }
    if let Some(t) = &raw.timeout {
        return timeout_report(module, raw, phase, **t, file_of);
    }
    let (code_name, code_meaning) = si_code_name(raw.signo, raw.code);
    let mut site = Site::of(module, raw, file_of);
    let (pc_in_libc, here, frames, symbol) =
        (site.pc_in_libc, &site.here, &site.frames, &site.symbol);
    let signal_name = signal_name(raw.signo);

    // Taint: a fault with the PC inside libc or ld.so may have happened with one of their
    // locks held; so may an abort raised from inside the allocator, stdio or the dynamic
    // linker, as the backtrace shows it (never from stale words on the stack).
    let mut taint = None;
    if raw.code > 0 && pc_in_libc {
        taint = Some(format!(
            "{signal_name} with the PC in {} ({}): a libc lock may be held",
            here.object.as_deref().unwrap_or("libc"),
            symbol.as_deref().unwrap_or("?")
        ));
    }
    if taint.is_none() && raw.signo == libc::SIGABRT {
        taint = abort_taint(frames, pc_in_libc);
        if taint.is_none() {
            // glibc said why it aborted, and it is the allocator's check: the frames did not
            // show it (no unwind information), the message does.
            taint = raw
                .glibc_abort
                .as_deref()
                .map(|g| g.message.as_str())
                .filter(|m| is_allocator_message(m))
                .map(|m| format!("SIGABRT raised by glibc's allocator ({m}): the heap is corrupt"));
        }
        if let Some(t) = taint.as_mut() {
            if raw.glibc_abort.as_ref().is_some_and(|g| g.arena_released.is_some()) {
                *t = t.replace("the malloc arena lock may be held", "it held a malloc arena lock");
            }
            t.push_str(&allocator_lock_note(raw));
        }
    }
    if let Some(t) = &taint {
        set_taint(&module.name, t);
    }
    // The function the call ran: named from the module's symbols, or, for the loader's own
    // lifecycle calls, the entry point of the phase.
    site.called = site.called.take().or_else(|| phase.entry_point().map(str::to_owned));
    CrashReport {
        signal_name,
        code_name: code_name.to_owned(),
        code_meaning: code_meaning.to_owned(),
        fault_addr: raw.addr,
        taint,
        abort_message: raw.glibc_abort.as_ref().map(|g| g.message.clone()),
        ..site.report(module, raw, phase)
    }
}

/// Does glibc's abort message come from its allocator's checks?
fn is_allocator_message(m: &str) -> bool {
    ["malloc", "free(", "realloc(", "double free", "corrupted", "munmap_chunk", "invalid fastbin"]
        .iter()
        .any(|p| m.starts_with(p))
        || m.contains("tcache")
}

/// What the taint adds about the allocator's lock: released after the jump (arena.c), or
/// still held.
fn allocator_lock_note(raw: &crate::guard::RawCrash) -> String {
    let glibc = raw.glibc_abort.as_deref();
    match glibc.and_then(|g| g.arena_released) {
        Some(arena) => format!(
            " (arena lock at {arena:#x}, released after the jump so the process does not hang; \
             the heap is corrupt: drain the process and restart it)"
        ),
        None => {
            match (glibc.map(|g| g.message.as_str()), crate::guard::arena_release_unavailable()) {
                (Some(m), Some(why)) if is_allocator_message(m) => format!(
                "; if glibc held an arena lock it is still held (the loader cannot release it: \
                 {why}), and the next allocation in that arena blocks: restart now"
            ),
                _ => String::new(),
            }
        }
    }
}

/// The report for a module that called `exit` (or `_exit`, `_Exit`, `quick_exit`): no signal,
/// no taint (the call was ended at a function boundary, no lock of libc's is held), the PC is
/// the module's return address at its call.
fn exit_report(
    module: &crate::module::Module,
    raw: &crate::guard::RawCrash,
    phase: Phase,
    status: i32,
) -> CrashReport {
    let call = format!("{}({status})", raw.exit_function.unwrap_or("exit"));
    let pc_in_module = module.contains(raw.pc);
    // `pc` is a return address; the call is the byte before it (after a call to a noreturn
    // function, the return address may already be the next function's first byte).
    let site = raw.pc.saturating_sub(1);
    let here = locate(site);
    let contains = |a: u64| module.contains(a);
    let view = crate::backtrace::ModuleView { path: &module.path, contains: &contains };
    // The function the call ran: named from the module's symbols, or, for the loader's own
    // lifecycle calls, the entry point of the phase.
    let called = raw
        .called
        .and_then(|f| crate::backtrace::symbol_name_at(f, &view))
        .or_else(|| phase.entry_point().map(str::to_owned));
    CrashReport {
        signal_name: call.clone(),
        code: status,
        code_name: "EXIT".to_owned(),
        code_meaning: format!("the module called {call}"),
        pc: raw.pc,
        pc_in_module,
        module_offset: pc_in_module.then(|| raw.pc - module.base),
        pc_object: pc_in_module
            .then(|| crate::resolve::module_name_for(&module.path))
            .or(here.object),
        symbol: here.symbol.map(|(name, start, _)| format!("{name}+{:#x}", site - start)),
        thread_id: raw.tid,
        time: raw.time,
        exit_status: Some(status),
        called,
        ..CrashReport::base(&module.name, &module.path, 0, phase)
    }
}

/// The report for a call its deadline ended: where it was (PC, backtrace), how long it ran,
/// and the taint when it was stopped inside libc or ld.so holding what may be a lock (the
/// evidence an abort there would give: a lock-taking function on the unwound stack).
fn timeout_report(
    module: &crate::module::Module,
    raw: &crate::guard::RawCrash,
    phase: Phase,
    t: crate::guard::TimeoutFacts,
    file_of: impl Fn(&str) -> Option<String>,
) -> CrashReport {
    let site = Site::of(module, raw, file_of);
    let mut taint = None;
    if site.pc_in_libc {
        for f in site.frames.iter().take_while(|f| !f.guessed && !f.in_module) {
            let Some(name) = f.symbol.as_deref() else { continue };
            if !f.object.as_deref().is_some_and(is_libc_object) {
                continue;
            }
            if let Some(lock) = lock_held_by(name) {
                let obj = f.object.as_deref().unwrap_or("libc");
                taint = Some(format!(
                    "a call past its deadline was interrupted inside {name}() in {obj}: {lock} \
                     may be held"
                ));
                break;
            }
        }
    }
    if let Some(reason) = &taint {
        set_taint(&module.name, reason);
    }
    let limit = (t.deadline > 2 && t.start != 0)
        .then(|| Duration::from_nanos(t.deadline.saturating_sub(t.start)));
    CrashReport {
        signal_name: "timeout".to_owned(),
        code_name: "SI_QUEUE".to_owned(),
        code_meaning: format!(
            "interrupted by kmodlike's watchdog with signal {} at the call's deadline",
            raw.signo
        ),
        taint,
        timeout: Some(CallTimeout { limit, ran: t.ran().unwrap_or_default() }),
        ..site.report(module, raw, phase)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seconds_keep_the_precision_their_figure_needs() {
        assert_eq!(secs(Duration::from_millis(1500)), "1.5 s");
        assert_eq!(secs(Duration::from_secs(2)), "2 s");
        assert_eq!(secs(Duration::from_millis(1)), "0.001 s");
        assert_eq!(secs(Duration::from_micros(300)), "300 us");
    }

    #[test]
    fn names_signals_and_codes() {
        assert_eq!(signal_name(libc::SIGSEGV), "SIGSEGV");
        assert_eq!(signal_name(libc::SIGSYS), "SIGSYS");
        assert_eq!(signal_name(200), "signal 200");
        assert_eq!(si_code_name(libc::SIGSEGV, 1).0, "SEGV_MAPERR");
        assert_eq!(si_code_name(libc::SIGFPE, 1).0, "FPE_INTDIV");
        assert_eq!(si_code_name(libc::SIGABRT, libc::SI_TKILL).0, "SI_TKILL");
        assert_eq!(si_code_name(libc::SIGBUS, 2).0, "BUS_ADRERR");
    }
}
