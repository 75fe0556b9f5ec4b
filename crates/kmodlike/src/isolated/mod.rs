//! The isolation tier: a module in a `kmodlike-host` process of its own, behind the same API.
//!
//! This module is the process side: starting the child ([`Child::spawn`]), one request at a
//! time over a `SOCK_SEQPACKET` socket pair ([`wire`]), forwarding the module's `log` and
//! `get_time` to the parent's callbacks, deadlines, and reaping. What an isolated module is in
//! the loader's registry is `loader/isolated.rs`. The protocol is in `docs/isolation.md`.

mod harden;
#[doc(hidden)]
pub mod host;
mod report;
mod seccomp;
pub(crate) mod wire;

use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd, RawFd};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;

use crate::crash::{CrashReport, Phase};
use crate::error::{Error, Result};
use crate::interface::ModuleInitArgs;
use crate::options::{Isolation, LogSink};

pub use host::host_main;
use wire::{Inbox, Kind, RecvError};

/// The helper binary's name.
pub const HOST_HELPER: &str = "kmodlike-host";

/// The helper's usage line.
pub const HOST_USAGE: &str = "usage: kmodlike-host --sock-fd N [--module-fd N] --parent PID \
    [--strict] [--module-path DIR]... [--null-args] [--log] [--clock forward|local] \
    [--rlimit-as BYTES] [--rlimit-cpu SECONDS] [--rlimit-nofile N] [--uid UID] -- FILE";

/// Where the module's `log` and `get_time` calls go in the parent.
pub(crate) enum Callbacks {
    /// The loader's log sink (module name, level, message) and its monotonic clock.
    Loader(Option<LogSink>),
    /// A C host's own callbacks.
    Raw(ModuleInitArgs),
    /// `module_init(NULL)`.
    Null,
}

/// How a request ended.
pub(crate) enum Outcome {
    /// Loaded: the interface version (raw), or -1 for a legacy module.
    Ready(i32),
    /// An invoke returned.
    Reply(i32, Vec<u8>),
    /// Unloaded on request.
    Closed,
    /// Failed without a crash: the error kind's name, the message, a code.
    Failed { kind: String, message: String, code: i32 },
    /// The child's guard caught a crash; the child is reaped.
    Crashed(Box<CrashReport>),
    /// The module exited: its status, and how; the child is reaped.
    Exited { status: i32, how: String },
    /// Past the deadline: the child was killed and reaped.
    TimedOut(Duration),
}

/// What starting a child needs.
pub(crate) struct Spawn<'a> {
    pub helper: Option<PathBuf>,
    pub name: &'a str,
    pub path: &'a Path,
    pub module_fd: BorrowedFd<'a>,
    pub dirs: Vec<PathBuf>,
    pub strict: bool,
    pub isolation: Isolation,
    pub callbacks: Callbacks,
}

/// An isolated module's process, from the parent's side.
pub(crate) struct Child {
    pid: u32,
    name: String,
    path: PathBuf,
    sock: OwnedFd,
    timeout: Option<Duration>,
    /// Confined by the seccomp allow-list: a death by `SIGSYS` is most likely the filter.
    seccomp: bool,
    callbacks: Callbacks,
    /// Held for a whole request: one at a time. Holds the receive buffer.
    channel: Mutex<Inbox>,
    /// `None` once reaped.
    process: Mutex<Option<std::process::Child>>,
}

// SAFETY: the raw pointers inside (a C host's callbacks and user data) are only called or
// handed back as that host asked; everything mutable is behind mutexes.
unsafe impl Send for Child {}
// SAFETY: as above.
unsafe impl Sync for Child {}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The helper: `$KMODLIKE_HOST`, else next to the executable (or one up, for test binaries in
/// `deps/`), else `<exe dir>/../libexec/kmodlike/`.
fn find_helper(given: Option<PathBuf>, path: &Path) -> Result<PathBuf> {
    if let Some(h) = given.or_else(|| std::env::var_os("KMODLIKE_HOST").map(PathBuf::from)) {
        return Ok(h);
    }
    let exe = std::env::current_exe().ok();
    let mut candidates = Vec::new();
    if let Some(d) = exe.as_deref().and_then(Path::parent) {
        candidates.push(d.join(HOST_HELPER));
        candidates.push(d.join("..").join(HOST_HELPER));
        candidates.push(d.join("../libexec/kmodlike").join(HOST_HELPER));
    }
    candidates.iter().find(|c| c.is_file()).cloned().ok_or_else(|| Error::LoadFailed {
        path: path.to_owned(),
        dlerror: format!(
            "cannot run it isolated: the {HOST_HELPER} helper was not found (tried {}); set \
             KMODLIKE_HOST or install it",
            candidates.iter().map(|c| c.display().to_string()).collect::<Vec<_>>().join(", ")
        ),
    })
}

/// `fd` at a number above stdio, close-on-exec here.
fn above_stdio(fd: BorrowedFd<'_>) -> std::io::Result<OwnedFd> {
    Ok(rustix::io::fcntl_dupfd_cloexec(fd, 3)?)
}

type SpawnJob = (Command, mpsc::Sender<std::io::Result<std::process::Child>>);

/// Start `cmd` from one long-lived thread. `PR_SET_PDEATHSIG` fires when the *thread* that
/// forked the child ends, not the process: a child started from a short-lived thread (a
/// request handler) would be killed with it. The keeper thread lives as long as the process.
fn spawn_from_keeper(cmd: Command) -> std::io::Result<std::process::Child> {
    static KEEPER: OnceLock<Mutex<mpsc::Sender<SpawnJob>>> = OnceLock::new();
    let keeper = KEEPER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnJob>();
        std::thread::Builder::new()
            .name("kmodlike-spawn".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
            })
            .expect("starting the kmodlike-spawn thread");
        Mutex::new(tx)
    });
    let (tx, rx) = mpsc::channel();
    lock(keeper)
        .send((cmd, tx))
        .map_err(|_| std::io::Error::other("the kmodlike-spawn thread is gone"))?;
    rx.recv().map_err(|_| std::io::Error::other("the kmodlike-spawn thread is gone"))?
}

impl Child {
    /// Start the module's process and wait until it has loaded the module (`Ready`) or failed.
    pub fn spawn(s: Spawn<'_>) -> Result<(Child, Outcome)> {
        let fail = |what: &str, e: &dyn std::fmt::Display| Error::LoadFailed {
            path: s.path.to_owned(),
            dlerror: format!("cannot run it isolated: {what}: {e}"),
        };
        let helper = find_helper(s.helper.clone(), s.path)?;
        let (mine, low) = wire::pair().map_err(|e| fail("socketpair", &e))?;
        let theirs = above_stdio(low.as_fd()).map_err(|e| fail("socket", &e))?;
        // Only the child may hold its end: its end of file is how its death is seen.
        drop(low);
        let module_fd = above_stdio(s.module_fd).map_err(|e| fail("module descriptor", &e))?;
        let (log, clock) = match &s.callbacks {
            Callbacks::Loader(sink) => (sink.is_some(), Some(host::Clock::Local)),
            Callbacks::Raw(a) => (a.log.is_some(), a.get_time.map(|_| host::Clock::Forward)),
            Callbacks::Null => (false, None),
        };
        let args = host::HostArgs {
            sock_fd: theirs.as_raw_fd(),
            module_fd: Some(module_fd.as_raw_fd()),
            parent: std::process::id(),
            strict: s.strict,
            dirs: s.dirs.clone(),
            null_args: matches!(s.callbacks, Callbacks::Null),
            log,
            clock,
            limits: (&s.isolation).into(),
            path: s.path.to_owned(),
        };
        let inherit: [RawFd; 2] = [theirs.as_raw_fd(), module_fd.as_raw_fd()];
        let mut cmd = Command::new(&helper);
        cmd.args(args.to_args()).stdin(Stdio::null());
        // SAFETY: runs in the forked child before exec: only fcntl(2), async-signal-safe, on
        // two descriptors open in the child (copies of ours, kept open until spawn returns);
        // no allocation, no lock. It clears FD_CLOEXEC in this child's table only.
        unsafe {
            cmd.pre_exec(move || {
                for fd in inherit {
                    if libc::fcntl(fd, libc::F_SETFD, 0) == -1 {
                        return Err(std::io::Error::last_os_error());
                    }
                }
                Ok(())
            });
        }
        let process = spawn_from_keeper(cmd)
            .map_err(|e| fail(&format!("cannot run {}", helper.display()), &e))?;
        drop(theirs);
        drop(module_fd);
        let child = Child {
            pid: process.id(),
            name: s.name.to_owned(),
            path: s.path.to_owned(),
            sock: mine,
            timeout: s.isolation.call_timeout,
            seccomp: s.isolation.seccomp,
            callbacks: s.callbacks,
            channel: Mutex::new(Inbox::default()),
            process: Mutex::new(Some(process)),
        };
        let first = {
            let mut inbox = lock(&child.channel);
            child.answer(&mut inbox, Phase::Init)
        };
        Ok((child, first))
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The child's resident memory, bytes (`None` once it is gone).
    pub fn rss(&self) -> Option<u64> {
        let statm = std::fs::read_to_string(format!("/proc/{}/statm", self.pid)).ok()?;
        let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
        Some(pages * crate::page_size())
    }

    /// Send one request and wait for its answer, serving the module's callbacks meanwhile.
    pub fn request(&self, kind: Kind, arg: i32, parts: &[&[u8]], phase: Phase) -> Outcome {
        let mut inbox = lock(&self.channel);
        if lock(&self.process).is_none() {
            return Outcome::Failed {
                kind: "NotLoaded".into(),
                message: "its process has ended".into(),
                code: 0,
            };
        }
        if let Err(e) = wire::send(self.sock.as_fd(), kind, arg, parts) {
            if e != Errno::PIPE && e != Errno::CONNRESET {
                return self.broken(&format!("cannot send to its process: {e}"));
            }
            // It is gone: its status says how.
            return self.died(phase);
        }
        self.answer(&mut inbox, phase)
    }

    /// Wait for the answer to a request.
    fn answer(&self, inbox: &mut Inbox, phase: Phase) -> Outcome {
        let deadline = self.timeout.map(|t| Instant::now() + t);
        loop {
            if let Some(d) = deadline {
                match self.wait_readable(d) {
                    Ok(true) => {}
                    Ok(false) => return self.timed_out(),
                    Err(e) => return self.broken(&format!("cannot poll its socket: {e}")),
                }
            }
            let msg = match wire::recv(self.sock.as_fd(), inbox) {
                Ok(m) => m,
                Err(RecvError::Closed) => return self.died(phase),
                Err(RecvError::Garbled(why)) => return self.broken(&why),
                Err(RecvError::Io(e)) => return self.broken(&format!("receive: {e}")),
            };
            let text = || String::from_utf8_lossy(inbox.data()).into_owned();
            match msg.kind {
                Kind::Log => self.log(msg.arg, inbox.data()),
                Kind::GetTime => {
                    let t = self.get_time().to_le_bytes();
                    if wire::send(self.sock.as_fd(), Kind::Time, 0, &[&t]).is_err() {
                        return self.died(phase);
                    }
                }
                Kind::Ready => return Outcome::Ready(msg.arg),
                Kind::Reply => return Outcome::Reply(msg.arg, inbox.data().to_vec()),
                Kind::Closed => {
                    self.reap();
                    return Outcome::Closed;
                }
                Kind::Error => {
                    let t = text();
                    let (kind, message) = t.split_once('\t').unwrap_or(("LoadFailed", &t));
                    return Outcome::Failed {
                        kind: kind.to_owned(),
                        message: message.to_owned(),
                        code: msg.arg,
                    };
                }
                Kind::Crash => {
                    let t = text();
                    self.reap();
                    return match report::decode(&t, &self.name, &self.path, phase, self.pid) {
                        Some(r) => Outcome::Crashed(Box::new(r)),
                        None => self.broken("a crash report that does not parse"),
                    };
                }
                Kind::Exited => {
                    let how = format!("the module called {}", text());
                    self.reap();
                    return Outcome::Exited { status: msg.arg, how };
                }
                Kind::Invoke | Kind::Close | Kind::Time => {
                    return self.broken("a request from the child");
                }
            }
        }
    }

    /// Poll the socket until `deadline`: `Ok(false)` when it passed.
    fn wait_readable(&self, deadline: Instant) -> std::io::Result<bool> {
        loop {
            let now = Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let left = Timespec::try_from(deadline - now)
                .unwrap_or(Timespec { tv_sec: i64::MAX, tv_nsec: 0 });
            let mut fds = [PollFd::new(&self.sock, PollFlags::IN)];
            match rustix::event::poll(&mut fds, Some(&left)) {
                Ok(0) => {}
                Ok(_) => return Ok(true),
                Err(Errno::INTR) => {}
                Err(e) => return Err(e.into()),
            }
        }
    }

    fn log(&self, level: i32, msg: &[u8]) {
        match &self.callbacks {
            Callbacks::Loader(Some(sink)) => sink(&self.name, level, &String::from_utf8_lossy(msg)),
            Callbacks::Raw(ModuleInitArgs { log: Some(log), .. }) => {
                let c = CString::new(msg.iter().copied().filter(|&b| b != 0).collect::<Vec<u8>>())
                    .unwrap_or_default();
                // SAFETY: the host gave this callback for the module's log messages; the
                // string is NUL-terminated and lives across the call.
                unsafe { log(level, c.as_ptr()) }
            }
            _ => {}
        }
    }

    fn get_time(&self) -> u64 {
        if let Callbacks::Raw(ModuleInitArgs { get_time: Some(get_time), .. }) = &self.callbacks {
            // SAFETY: the host gave this callback for the module's clock.
            return unsafe { get_time() };
        }
        crate::loader::monotonic_ns()
    }

    /// Wait for the child to end (it is ending), once.
    fn reap(&self) -> Option<ExitStatus> {
        let mut p = lock(&self.process);
        let status = p.as_mut().and_then(|c| c.wait().ok());
        *p = None;
        status
    }

    /// Kill the child and reap it.
    pub fn kill(&self) {
        let mut p = lock(&self.process);
        if let Some(c) = p.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
        *p = None;
    }

    fn timed_out(&self) -> Outcome {
        self.kill();
        Outcome::TimedOut(self.timeout.unwrap_or_default())
    }

    /// The protocol broke: the child is killed.
    fn broken(&self, why: &str) -> Outcome {
        self.kill();
        Outcome::Failed {
            kind: "Internal".into(),
            message: format!(
                "its process (pid {}) broke the protocol and was killed: {why}",
                self.pid
            ),
            code: 0,
        }
    }

    /// The socket closed without a word: the child died; its status says how.
    fn died(&self, phase: Phase) -> Outcome {
        match self.reap() {
            Some(st) if st.signal().is_some() => {
                let sig = st.signal().unwrap_or(0);
                let why = if sig == libc::SIGKILL {
                    "its process was killed by SIGKILL (the out-of-memory killer, a resource \
                     limit, or someone else) before it could report"
                } else if sig == libc::SIGSYS && self.seccomp {
                    "its process died by SIGSYS: a system call outside the seccomp allow-list \
                     (Isolation::seccomp), made through the C library where the guard cannot \
                     report it; see docs/isolation.md, \"seccomp\", to find and allow it or \
                     open the module without the filter"
                } else {
                    "its process died by this signal before it could report"
                };
                Outcome::Crashed(Box::new(report::died(
                    &self.name, &self.path, sig, phase, self.pid, why,
                )))
            }
            Some(st) => Outcome::Exited {
                status: st.code().unwrap_or(0),
                how: "its process ended without a word: a raw exit system call, or an exit the \
                      guard could not see"
                    .into(),
            },
            None => Outcome::Failed {
                kind: "NotLoaded".into(),
                message: "its process has ended".into(),
                code: 0,
            },
        }
    }
}

impl Drop for Child {
    /// No zombie: a child still running is killed and reaped.
    fn drop(&mut self) {
        self.kill();
    }
}
