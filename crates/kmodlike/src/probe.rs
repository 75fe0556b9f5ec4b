//! The probe: load and unload a module first in a short-lived child process (the
//! `kmodlike-probe` helper), so a crash in a constructor, `module_init`, `module_fini` or a
//! destructor never reaches the host.
//!
//! Why a child: a constructor runs inside `dlopen` with ld.so's load lock held; a jump out of
//! it leaves the lock held and the next `dlopen` in the host deadlocks. Only a process about to
//! exit can afford that, so the child loads the module with `dlopen` itself under the guard,
//! runs `module_init`, unloads it (`module_fini` under the guard, then `dlclose`, whose
//! destructors nothing can guard: a crash there kills the child before it answers, and the
//! parent refuses the module), sends one answer and exits at once (`_exit`: no module code
//! after the answer).
//!
//! # The two channels
//!
//! The child answers on a pipe of its own, inherited under the descriptor number given by
//! `--answer-fd N`; the module's stdout and stderr are ordinary pipes with nothing of the
//! protocol on them, so a module may print what it likes. The parent polls the answer pipe,
//! both output pipes and the child's pidfd until the child has exited or the deadline
//! ([`ProbeConfig::timeout`], `LoaderBuilder::probe_timeout`, 10 s by default) has passed,
//! draining the output as it comes and keeping only its last [`TAIL_BYTES`] bytes, which the
//! error shows when the probe fails. At the deadline the child is killed (`SIGKILL`), reaped,
//! and the module refused as hung. A grandchild that keeps the pipes open does not hold the
//! parent: it stops reading once the child has exited.
//!
//! # The bytes tested
//!
//! [`run`] may be given a descriptor of the module's bytes; the child then loads
//! `/proc/self/fd/N` (`--module-fd N`), so the probe tests exactly the bytes the parent will
//! load, whatever happens to the path meanwhile. The path is still passed (`-- FILE`), for
//! messages and when no descriptor is given.
//!
//! # The protocol, in one place
//!
//! [`ChildArgs`] is the command line (built by the parent, parsed by the helper) and
//! [`Answer`] is the answer (encoded by the helper, decoded by the parent); the helper's
//! `main` (`src/bin/kmodlike-probe.rs`) uses only these, the public [`Loader`](crate::Loader)
//! API and the hidden `guard_dlopen_in_probe_child` builder hook. An answer is one line:
//! `ok`, `error\t<kind>\t<message>`, or
//! `crash\t<signal>\t<code>\t<addr>\t<pc>\t<in_module>\t<offset>\t<object>\t<symbol>\t<tid>`
//! (`-` for an absent field).

use std::ffi::{c_void, CString, OsString};
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicI32, Ordering};
use std::time::{Duration, Instant};

use libloading::os::unix::Library;
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::crash::{locate, si_code_name, CrashReport, Phase};
use crate::error::{Error, Result};
use crate::guard;

/// What the parent needs to run the probe.
#[derive(Debug, Clone)]
pub struct ProbeConfig {
    /// The helper binary; `None`: `$KMODLIKE_PROBE`, else found next to the executable.
    pub helper: Option<PathBuf>,
    /// The module path, for the module's dependencies (`--module-path`).
    pub dirs: Vec<PathBuf>,
    /// Modules loaded in the parent, by name: dependencies they satisfy there resolve to the
    /// same files in the child (`--dependency NAME=PATH`).
    pub dependency_paths: Vec<(String, PathBuf)>,
    /// Refuse legacy modules (`--strict`).
    pub strict: bool,
    /// How long the child may take before it is killed and the module refused as hung.
    pub timeout: Duration,
}

/// The helper binary's name.
pub const PROBE_HELPER: &str = "kmodlike-probe";

/// How much of the child's stdout and of its stderr is kept (the last bytes) for the error.
pub const TAIL_BYTES: usize = 4096;

/// Longest answer accepted; a real one is a few hundred bytes.
const ANSWER_MAX: usize = 64 * 1024;

/// The helper's usage line.
pub const USAGE: &str = "usage: kmodlike-probe [--strict] [--module-path DIR]... \
                         [--dependency NAME=PATH]... \
                         --answer-fd N [--module-fd N] -- FILE";

/// The helper's command line: what the parent asks of the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildArgs {
    /// Refuse legacy modules.
    pub strict: bool,
    /// The module path, for dependencies.
    pub dirs: Vec<PathBuf>,
    /// Dependencies satisfied by files the parent has loaded: `(name, path)`.
    pub dependency_paths: Vec<(String, PathBuf)>,
    /// Where the answer goes: an inherited pipe's write end.
    pub answer_fd: RawFd,
    /// An inherited descriptor of the module's bytes, loaded as `/proc/self/fd/N`.
    pub module_fd: Option<RawFd>,
    /// The module's path (loaded when there is no descriptor; named in messages).
    pub path: PathBuf,
}

impl ChildArgs {
    /// The arguments after the program name.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        if self.strict {
            a.push("--strict".into());
        }
        for d in &self.dirs {
            a.push("--module-path".into());
            a.push(d.into());
        }
        for (name, path) in &self.dependency_paths {
            let mut arg = OsString::from(name);
            arg.push("=");
            arg.push(path);
            a.push("--dependency".into());
            a.push(arg);
        }
        a.push("--answer-fd".into());
        a.push(self.answer_fd.to_string().into());
        if let Some(fd) = self.module_fd {
            a.push("--module-fd".into());
            a.push(fd.to_string().into());
        }
        a.push("--".into());
        a.push(self.path.clone().into());
        a
    }

    /// Parse the arguments after the program name; `Err` holds what to print.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> std::result::Result<Self, String> {
        let mut args = args.into_iter();
        let (mut strict, mut dirs, mut answer_fd, mut module_fd, mut path) =
            (false, Vec::new(), None, None, None);
        let mut dependency_paths = Vec::new();
        let fd = |v: Option<OsString>, what: &str| -> std::result::Result<RawFd, String> {
            v.and_then(|v| v.to_str()?.parse::<RawFd>().ok())
                .filter(|&n| n >= 0)
                .ok_or_else(|| format!("{what} needs a descriptor number\n{USAGE}"))
        };
        while let Some(a) = args.next() {
            match a.to_str() {
                Some("--strict") => strict = true,
                Some("--module-path") => dirs.extend(args.next().map(PathBuf::from)),
                Some("--dependency") => {
                    let v = args.next().unwrap_or_default();
                    let (name, path) = v
                        .to_str()
                        .and_then(|v| v.split_once('='))
                        .ok_or_else(|| format!("--dependency needs NAME=PATH\n{USAGE}"))?;
                    dependency_paths.push((name.to_owned(), PathBuf::from(path)));
                }
                Some("--answer-fd") => answer_fd = Some(fd(args.next(), "--answer-fd")?),
                Some("--module-fd") => module_fd = Some(fd(args.next(), "--module-fd")?),
                Some("--") => path = args.next().map(PathBuf::from),
                Some(s) if s.starts_with("--") => {
                    return Err(format!("unknown option {s}\n{USAGE}"))
                }
                _ => path = Some(PathBuf::from(a)),
            }
        }
        match (answer_fd, path) {
            (Some(answer_fd), Some(path)) => {
                Ok(ChildArgs { strict, dirs, dependency_paths, answer_fd, module_fd, path })
            }
            _ => Err(USAGE.to_owned()),
        }
    }

    /// [`parse`](Self::parse) this process's arguments, and make `answer_fd` where
    /// [`Answer::send`] (and a crash in a guarded `dlopen`) writes.
    pub fn from_env() -> std::result::Result<Self, String> {
        let args = Self::parse(std::env::args_os().skip(1))?;
        ANSWER_FD.store(args.answer_fd, Ordering::Relaxed);
        // Not for whatever the module may exec.
        // SAFETY: the parent passed this descriptor for the answer; only a flag is changed.
        let answer = unsafe { BorrowedFd::borrow_raw(args.answer_fd) };
        let _ = rustix::io::fcntl_setfd(answer, rustix::io::FdFlags::CLOEXEC);
        Ok(args)
    }

    /// The file to load: `/proc/self/fd/N` for a descriptor, else the path.
    pub fn file_to_load(&self) -> PathBuf {
        match self.module_fd {
            Some(fd) => PathBuf::from(format!("/proc/self/fd/{fd}")),
            None => self.path.clone(),
        }
    }
}

/// The answer descriptor of this process, when it is a probe child (`-1` otherwise).
static ANSWER_FD: AtomicI32 = AtomicI32::new(-1);

/// The probe child's answer: the one place where it is encoded and decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// The module loaded and its `module_init` succeeded.
    Ok,
    /// The load failed without crashing (the parent's own load reports it precisely).
    Error {
        /// [`ErrorKind::name`](crate::ErrorKind::name).
        kind: String,
        /// The error's message.
        message: String,
    },
    /// A constructor or `module_init` raised a fatal signal, caught by the guard.
    Crash {
        /// The signal.
        signal: i32,
        /// Its `si_code`.
        code: i32,
        /// The faulting address.
        fault_addr: u64,
        /// The program counter.
        pc: u64,
        /// Whether the PC lies in the module.
        pc_in_module: bool,
        /// The PC's offset in the module.
        module_offset: Option<u64>,
        /// The file name of the object holding the PC.
        object: Option<String>,
        /// The nearest symbol, `name+0xoff`.
        symbol: Option<String>,
        /// The crashing thread.
        thread_id: i32,
    },
}

impl Answer {
    /// The answer for a failed load in the child.
    pub fn from_error(e: &Error) -> Answer {
        match e {
            Error::Crashed(r) => Answer::Crash {
                signal: r.signal,
                code: r.code,
                fault_addr: r.fault_addr,
                pc: r.pc,
                pc_in_module: r.pc_in_module,
                module_offset: r.module_offset,
                object: r.pc_object.clone(),
                symbol: r.symbol.clone(),
                thread_id: r.thread_id,
            },
            e => Answer::Error { kind: e.kind().name().to_owned(), message: e.to_string() },
        }
    }

    /// One line, newline included.
    pub fn encode(&self) -> String {
        let field = |s: &str| s.replace(['\t', '\n', '\r'], " ");
        let opt = |s: &Option<String>| s.as_deref().map_or("-".to_owned(), field);
        match self {
            Answer::Ok => "ok\n".to_owned(),
            Answer::Error { kind, message } => {
                format!("error\t{}\t{}\n", field(kind), field(message))
            }
            Answer::Crash {
                signal,
                code,
                fault_addr,
                pc,
                pc_in_module,
                module_offset,
                object,
                symbol,
                thread_id,
            } => format!(
                "crash\t{signal}\t{code}\t{fault_addr:#x}\t{pc:#x}\t{}\t{}\t{}\t{}\t{thread_id}\n",
                u8::from(*pc_in_module),
                module_offset.map_or("-".to_owned(), |o| format!("{o:#x}")),
                opt(object),
                opt(symbol),
            ),
        }
    }

    /// The answer in `text` (its first line), or `None` when it is not one.
    pub fn decode(text: &str) -> Option<Answer> {
        let line = text.lines().next()?;
        let f: Vec<&str> = line.split('\t').collect();
        let num = |s: &str| -> Option<u64> {
            match s.strip_prefix("0x") {
                Some(h) => u64::from_str_radix(h, 16).ok(),
                None => s.parse().ok(),
            }
        };
        let opt = |s: &str| (s != "-").then(|| s.to_owned());
        match f.as_slice() {
            ["ok"] => Some(Answer::Ok),
            ["error", kind, message] => {
                Some(Answer::Error { kind: (*kind).to_owned(), message: (*message).to_owned() })
            }
            ["crash", signal, code, addr, pc, in_module, offset, object, symbol, tid] => {
                Some(Answer::Crash {
                    signal: signal.parse().ok()?,
                    code: code.parse().ok()?,
                    fault_addr: num(addr)?,
                    pc: num(pc)?,
                    pc_in_module: *in_module == "1",
                    module_offset: match *offset {
                        "-" => None,
                        o => Some(num(o)?),
                    },
                    object: opt(object),
                    symbol: opt(symbol),
                    thread_id: tid.parse().ok()?,
                })
            }
            _ => None,
        }
    }

    /// In the probe child: write this answer to the answer descriptor ([`ChildArgs::from_env`])
    /// and end the process at once, running no module code (no destructors) after it.
    pub fn send(&self) -> ! {
        let fd = ANSWER_FD.load(Ordering::Relaxed);
        let code = if fd < 0 {
            eprintln!("kmodlike-probe: no answer descriptor\n{USAGE}");
            2
        } else {
            // SAFETY: the descriptor the parent passed for the answer, open for the life of
            // this process (nothing here closes it).
            let fd = unsafe { BorrowedFd::borrow_raw(fd) };
            let line = self.encode();
            let mut rest = line.as_bytes();
            let mut code = 0;
            while !rest.is_empty() {
                match rustix::io::write(fd, rest) {
                    Ok(n) => rest = &rest[n..],
                    Err(Errno::INTR) => {}
                    Err(e) => {
                        eprintln!("kmodlike-probe: cannot send the answer: {e}");
                        code = 2;
                        break;
                    }
                }
            }
            code
        };
        // SAFETY: _exit ends the process without running atexit handlers or destructors: the
        // module stays loaded and runs no more code, which is what the probe wants.
        unsafe { libc::_exit(code) }
    }

    /// The parent's view: `Ok(())` or the crash.
    fn into_result(
        self,
        name: &str,
        path: &Path,
        module_fd: Option<RawFd>,
        pid: u32,
    ) -> Result<()> {
        match self {
            Answer::Ok => Ok(()),
            // A plain failure: the real load reports it precisely (it runs no crashing code).
            Answer::Error { .. } => Ok(()),
            Answer::Crash {
                signal,
                code,
                fault_addr,
                pc,
                pc_in_module,
                module_offset,
                object,
                symbol,
                thread_id,
            } => {
                // The child maps the module from a descriptor, so ld.so knows it by a number:
                // name the file.
                let fd_name = module_fd.map(|fd| fd.to_string());
                let object = match object {
                    Some(o) if pc_in_module || Some(&o) == fd_name.as_ref() => {
                        path.file_name().map(|f| f.to_string_lossy().into_owned()).or(Some(o))
                    }
                    o => o,
                };
                let (code_name, code_meaning) = si_code_name(signal, code);
                Err(Error::Crashed(Box::new(CrashReport {
                    code,
                    code_name: code_name.into(),
                    code_meaning: code_meaning.into(),
                    fault_addr,
                    pc,
                    pc_in_module,
                    module_offset,
                    pc_object: object,
                    symbol,
                    thread_id,
                    probe_pid: Some(pid),
                    ..CrashReport::base(name, path, signal, Phase::Probe)
                })))
            }
        }
    }
}

fn find_helper(cfg: &ProbeConfig, path: &Path) -> Result<PathBuf> {
    if let Some(h) = &cfg.helper {
        return Ok(h.clone());
    }
    if let Some(h) = std::env::var_os("KMODLIKE_PROBE") {
        return Ok(PathBuf::from(h));
    }
    let exe = std::env::current_exe().ok();
    let exe_dir = exe.as_deref().and_then(Path::parent);
    let mut candidates = Vec::new();
    if let Some(d) = exe_dir {
        candidates.push(d.join(PROBE_HELPER));
        // Test binaries live in target/<profile>/deps; the helper one level up.
        candidates.push(d.join("..").join(PROBE_HELPER));
        candidates.push(d.join("../libexec/kmodlike").join(PROBE_HELPER));
    }
    candidates.iter().find(|c| c.is_file()).cloned().ok_or_else(|| Error::Probe {
        path: path.to_owned(),
        detail: format!(
            "the {PROBE_HELPER} helper was not found (tried {}); set KMODLIKE_PROBE or install it",
            candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// The last bytes of a stream, and how many there were in all.
struct Tail {
    bytes: Vec<u8>,
    total: u64,
    cap: usize,
}

impl Tail {
    fn new(cap: usize) -> Self {
        Tail { bytes: Vec::new(), total: 0, cap }
    }

    fn push(&mut self, data: &[u8]) {
        self.total += data.len() as u64;
        let data = &data[data.len().saturating_sub(self.cap)..];
        let excess = (self.bytes.len() + data.len()).saturating_sub(self.cap);
        self.bytes.drain(..excess);
        self.bytes.extend_from_slice(data);
    }

    /// `; its <what> ended with: ...`, or nothing when the stream was empty.
    fn describe(&self, what: &str) -> String {
        let text = String::from_utf8_lossy(&self.bytes);
        let text = text.trim();
        if text.is_empty() {
            return String::new();
        }
        if self.total > self.bytes.len() as u64 {
            format!(
                "; its {what} ended with (last {} of {} bytes): {text}",
                self.bytes.len(),
                self.total
            )
        } else {
            format!("; its {what}: {text}")
        }
    }
}

/// One of the child's pipes, read without blocking until end of file.
struct Stream {
    fd: Option<OwnedFd>,
    tail: Tail,
}

impl Stream {
    fn new(fd: OwnedFd, cap: usize) -> std::io::Result<Self> {
        rustix::io::ioctl_fionbio(&fd, true)?;
        Ok(Stream { fd: Some(fd), tail: Tail::new(cap) })
    }

    /// One read. `false` when nothing more is to be had now (would block, or end of file).
    fn read_once(&mut self, buf: &mut [u8]) -> bool {
        let Some(fd) = &self.fd else { return false };
        match rustix::io::read(fd, &mut *buf) {
            Ok(0) => {
                self.fd = None;
                false
            }
            Ok(n) => {
                self.tail.push(&buf[..n]);
                true
            }
            Err(Errno::INTR) => true,
            Err(Errno::AGAIN) => false,
            Err(_) => {
                self.fd = None;
                false
            }
        }
    }

    /// Read what is already in the pipe (bounded: a grandchild may keep writing).
    fn drain(&mut self, buf: &mut [u8]) {
        for _ in 0..64 {
            if !self.read_once(buf) {
                break;
            }
        }
    }
}

/// `fd` at a number above stdio (so the child's stdio set-up cannot replace it), close-on-exec
/// in this process.
fn above_stdio(fd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

/// Probe `path` in a child process. `Ok(())` when the child loaded and initialised it, or
/// failed without crashing (the real load then reports the failure precisely).
///
/// With `module_fd`, the child loads exactly those bytes (`/proc/self/fd/N` in the child);
/// `path` then only names the module. Without it, the child loads `path`.
pub fn run(
    cfg: &ProbeConfig,
    name: &str,
    path: &Path,
    module_fd: Option<BorrowedFd<'_>>,
) -> Result<()> {
    let probe_err = |detail: String| Error::Probe { path: path.to_owned(), detail };
    let io_err = |what: &str, e: std::io::Error| probe_err(format!("{what}: {e}"));
    let helper = find_helper(cfg, path)?;
    let (answer_r, answer_w) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)
        .map_err(|e| io_err("cannot make the answer pipe", e.into()))?;
    let answer_w = above_stdio(answer_w.as_fd()).map_err(|e| io_err("answer pipe", e))?;
    let module_fd = module_fd
        .map(above_stdio)
        .transpose()
        .map_err(|e| io_err("cannot pass the module's descriptor", e))?;
    let args = ChildArgs {
        strict: cfg.strict,
        dirs: cfg.dirs.clone(),
        dependency_paths: cfg.dependency_paths.clone(),
        answer_fd: answer_w.as_raw_fd(),
        module_fd: module_fd.as_ref().map(AsRawFd::as_raw_fd),
        path: path.to_owned(),
    };
    let inherit: Vec<RawFd> =
        [Some(args.answer_fd), args.module_fd].into_iter().flatten().collect();
    let mut cmd = Command::new(&helper);
    cmd.args(args.to_args()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: the closure runs in the forked child before exec. It only calls fcntl(2), which
    // is async-signal-safe, on descriptors that are open in the child (copies of ours, kept
    // open until after spawn returns); it neither allocates nor locks (`inherit` was built
    // before the fork and is only read). Clearing FD_CLOEXEC there affects the child's
    // descriptor table only, so these two descriptors reach this child and no other.
    unsafe {
        cmd.pre_exec(move || {
            for &fd in &inherit {
                if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            Ok(())
        });
    }
    let mut child =
        cmd.spawn().map_err(|e| probe_err(format!("cannot run {}: {e}", helper.display())))?;
    let deadline = Instant::now() + cfg.timeout;
    // Our copies go: the answer pipe's only writer is now the child.
    drop(answer_w);
    drop(module_fd);
    let mut streams = Vec::with_capacity(3);
    let setup = || -> std::io::Result<()> {
        streams.push(Stream::new(answer_r, ANSWER_MAX)?);
        if let Some(out) = child.stdout.take() {
            streams.push(Stream::new(out.into(), TAIL_BYTES)?);
        }
        if let Some(err) = child.stderr.take() {
            streams.push(Stream::new(err.into(), TAIL_BYTES)?);
        }
        Ok(())
    };
    if let Err(e) = setup() {
        let _ = child.kill();
        let _ = child.wait();
        return Err(io_err("probe pipes", e));
    }
    // Exit is seen on a pidfd (Linux 5.3); without one, once the answer or all ends of file
    // are in, the child is about to exit and a plain wait suffices.
    let pid = rustix::process::Pid::from_raw(child.id() as i32);
    let pidfd =
        pid.and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()).ok());
    let waited = watch(&mut streams, pidfd.as_ref(), deadline);
    let mut buf = vec![0u8; 64 * 1024];
    for s in &mut streams {
        s.drain(&mut buf);
    }
    let [answer, out, err] = match <[Stream; 3]>::try_from(streams) {
        Ok(s) => s,
        Err(_) => unreachable!("the three pipes were set up above"),
    };
    let answer_text = String::from_utf8_lossy(&answer.tail.bytes);
    // Complete (newline-terminated) or nothing: a child killed mid-write did not answer.
    let answer = answer_text.ends_with('\n').then(|| Answer::decode(&answer_text)).flatten();
    let tails = format!("{}{}", err.tail.describe("stderr"), out.tail.describe("stdout"));
    let status = match waited {
        Waited::Exited => child.wait().map_err(|e| io_err("waiting for the probe", e))?,
        Waited::Deadline => {
            let _ = child.kill();
            child.wait().map_err(|e| io_err("reaping the probe", e))?;
            // It answered in time and was on its way out.
            if let Some(a) = answer {
                return a.into_result(name, path, args.module_fd, child.id());
            }
            return Err(probe_err(format!(
                "the module hangs: its probe did not finish within {:?} (a constructor or \
                 module_init never returned) and was killed; raise the deadline with \
                 LoaderBuilder::probe_timeout if loading it is just slow{tails}",
                cfg.timeout
            )));
        }
    };
    match answer {
        Some(a) => a.into_result(name, path, args.module_fd, child.id()),
        None => no_answer(name, path, status, child.id(), &tails),
    }
}

enum Waited {
    Exited,
    Deadline,
}

/// Read the child's pipes until it has exited (or, without a pidfd, has answered or closed
/// them all), or the deadline passes.
fn watch(streams: &mut [Stream], pidfd: Option<&OwnedFd>, deadline: Instant) -> Waited {
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let answered = streams[0].tail.bytes.ends_with(b"\n");
        let open: Vec<usize> = (0..streams.len()).filter(|&i| streams[i].fd.is_some()).collect();
        if pidfd.is_none() && (answered || open.is_empty()) {
            return Waited::Exited;
        }
        let now = Instant::now();
        if now >= deadline {
            return Waited::Deadline;
        }
        let left =
            Timespec::try_from(deadline - now).unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 });
        let mut fds: Vec<PollFd<'_>> = open
            .iter()
            .filter_map(|&i| streams[i].fd.as_ref())
            .map(|fd| PollFd::new(fd, PollFlags::IN))
            .collect();
        if let Some(p) = pidfd {
            fds.push(PollFd::new(p, PollFlags::IN));
        }
        match rustix::event::poll(&mut fds, Some(&left)) {
            Ok(_) | Err(Errno::INTR) => {}
            // Cannot poll: wait for the exit instead (a blocking wait, no deadline).
            Err(_) => return Waited::Exited,
        }
        let ready: Vec<bool> = fds.iter().map(|f| !f.revents().is_empty()).collect();
        drop(fds);
        if pidfd.is_some() && ready.last() == Some(&true) {
            return Waited::Exited;
        }
        for (k, &i) in open.iter().enumerate() {
            if ready[k] {
                streams[i].read_once(&mut buf);
            }
        }
    }
}

/// The child exited without an answer: killed by a signal the guard did not catch, or it
/// exited (a module calling `exit`, a helper that could not start).
fn no_answer(name: &str, path: &Path, status: ExitStatus, pid: u32, tails: &str) -> Result<()> {
    match status.signal() {
        Some(sig) => Err(Error::Crashed(Box::new(CrashReport {
            code_meaning: "the probe child died before it could report".into(),
            thread_id: pid as i32,
            probe_pid: Some(pid),
            ..CrashReport::base(name, path, sig, Phase::Probe)
        }))),
        None => Err(Error::Probe {
            path: path.to_owned(),
            detail: format!("the probe exited with {status} without an answer{tails}"),
        }),
    }
}

struct DlopenCtx {
    path: *const libc::c_char,
    flags: i32,
    handle: *mut c_void,
}

/// Calls `dlopen`; owns nothing droppable, so the guard may jump out of it.
unsafe extern "C" fn dlopen_trampoline(ctx: *mut c_void) {
    // SAFETY: `ctx` is the caller's live `DlopenCtx`.
    let c = unsafe { &mut *(ctx as *mut DlopenCtx) };
    // SAFETY: a NUL-terminated path and valid flags. libloading cannot be used here: its
    // frames own values with destructors, which a jump out of a constructor would skip.
    c.handle = unsafe { libc::dlopen(c.path, c.flags) };
}

/// `dlopen` under the guard, for the probe child only. A crash in a constructor sends the
/// child's [`Answer::Crash`] and ends the child.
pub(crate) fn guarded_dlopen(path: &Path, flags: i32) -> std::result::Result<Library, String> {
    use std::os::unix::ffi::OsStrExt;
    let cpath = CString::new(path.as_os_str().as_bytes()).map_err(|e| e.to_string())?;
    let mut ctx = DlopenCtx { path: cpath.as_ptr(), flags, handle: std::ptr::null_mut() };
    // SAFETY: the trampoline calls dlopen with a valid path; it owns nothing droppable.
    let r = unsafe { guard::call(0, dlopen_trampoline, &mut ctx as *mut DlopenCtx as *mut c_void) };
    match r {
        Ok(()) if !ctx.handle.is_null() => {
            // SAFETY: a live handle from dlopen.
            Ok(unsafe { Library::from_raw(ctx.handle) })
        }
        Ok(()) => {
            // SAFETY: dlerror returns a thread-local message or NULL.
            let msg = unsafe { libc::dlerror() };
            Err(if msg.is_null() {
                "dlopen failed".to_owned()
            } else {
                // SAFETY: NUL-terminated message from dlerror.
                unsafe { std::ffi::CStr::from_ptr(msg) }.to_string_lossy().into_owned()
            })
        }
        Err(raw) => {
            let here = locate(raw.pc);
            let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
            let in_module = here.object.is_some() && here.object == file;
            let symbol = here.symbol.as_ref().map(|(n, s, _)| format!("{n}+{:#x}", raw.pc - s));
            let offset = here.base.filter(|_| in_module).map(|base| raw.pc - base);
            Answer::Crash {
                signal: raw.signo,
                code: raw.code,
                fault_addr: raw.addr,
                pc: raw.pc,
                pc_in_module: in_module,
                module_offset: offset,
                object: here.object,
                symbol,
                thread_id: raw.tid,
            }
            .send()
        }
    }
}
