//! The child's side: `kmodlike-host` confines itself, loads the module with the ordinary
//! in-process loader and guard, then serves the parent's requests until it is told to close,
//! the module crashes or exits, or the parent goes away.

use std::ffi::{c_char, c_int, CStr, OsString};
use std::os::fd::{BorrowedFd, RawFd};
use std::path::PathBuf;
use std::sync::atomic::{AtomicI32, Ordering};

use crate::error::Error;
use crate::interface::{ModuleInitArgs, MODULE_INIT_ARGS_VERSION_CURRENT};
use crate::options::{InitArgs, OpenOptions};
use crate::Loader;

use super::harden::{self, Limits};
use super::wire::{self, Inbox, Kind};
use super::HOST_USAGE;

/// What the module's `get_time` answers in the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Clock {
    /// The parent's `get_time` callback, asked over the socket.
    Forward,
    /// CLOCK_MONOTONIC, which the parent's loader clock also reads.
    Local,
}

/// The helper's command line: what the parent asks of the child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostArgs {
    /// The socket to the parent (inherited).
    pub sock_fd: RawFd,
    /// The module's validated bytes (inherited), loaded as `/proc/self/fd/N`.
    pub module_fd: Option<RawFd>,
    /// The parent's pid: the child refuses to run under any other.
    pub parent: u32,
    /// Refuse legacy modules.
    pub strict: bool,
    /// The module path, for the module's own dependencies.
    pub dirs: Vec<PathBuf>,
    /// `module_init` receives NULL.
    pub null_args: bool,
    /// The parent has a log callback: forward the module's log calls.
    pub log: bool,
    /// What `get_time` answers; `None`: NULL.
    pub clock: Option<Clock>,
    /// Resource limits and confinement.
    pub limits: Limits,
    /// The module's file (named in messages; loaded when there is no descriptor).
    pub path: PathBuf,
}

impl HostArgs {
    /// The arguments after the program name.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut a: Vec<OsString> = vec!["--sock-fd".into(), self.sock_fd.to_string().into()];
        if let Some(fd) = self.module_fd {
            a.extend(["--module-fd".into(), fd.to_string().into()]);
        }
        a.extend(["--parent".into(), self.parent.to_string().into()]);
        if self.strict {
            a.push("--strict".into());
        }
        for d in &self.dirs {
            a.extend(["--module-path".into(), d.into()]);
        }
        if self.null_args {
            a.push("--null-args".into());
        }
        if self.log {
            a.push("--log".into());
        }
        match self.clock {
            Some(Clock::Forward) => a.extend(["--clock".into(), "forward".into()]),
            Some(Clock::Local) => a.extend(["--clock".into(), "local".into()]),
            None => {}
        }
        a.extend(self.limits.to_args());
        a.push("--".into());
        a.push(self.path.clone().into());
        a
    }

    /// Parse the arguments after the program name; `Err` holds what to print.
    pub fn parse(args: impl IntoIterator<Item = OsString>) -> Result<Self, String> {
        let mut args = args.into_iter();
        let mut h = HostArgs {
            sock_fd: -1,
            module_fd: None,
            parent: 0,
            strict: false,
            dirs: Vec::new(),
            null_args: false,
            log: false,
            clock: None,
            limits: Limits::default(),
            path: PathBuf::new(),
        };
        let num = |v: Option<OsString>, what: &str| -> Result<u64, String> {
            v.and_then(|v| v.to_str()?.parse::<u64>().ok())
                .ok_or_else(|| format!("{what} needs a number\n{HOST_USAGE}"))
        };
        while let Some(a) = args.next() {
            match a.to_str() {
                Some("--sock-fd") => h.sock_fd = num(args.next(), "--sock-fd")? as RawFd,
                Some("--module-fd") => {
                    h.module_fd = Some(num(args.next(), "--module-fd")? as RawFd)
                }
                Some("--parent") => h.parent = num(args.next(), "--parent")? as u32,
                Some("--strict") => h.strict = true,
                Some("--module-path") => h.dirs.extend(args.next().map(PathBuf::from)),
                Some("--null-args") => h.null_args = true,
                Some("--log") => h.log = true,
                Some("--clock") => {
                    h.clock = match args.next().as_ref().and_then(|v| v.to_str()) {
                        Some("forward") => Some(Clock::Forward),
                        Some("local") => Some(Clock::Local),
                        _ => return Err(format!("--clock needs forward or local\n{HOST_USAGE}")),
                    }
                }
                Some("--rlimit-as") => {
                    h.limits.address_space = Some(num(args.next(), "--rlimit-as")?)
                }
                Some("--rlimit-cpu") => {
                    h.limits.cpu_seconds = Some(num(args.next(), "--rlimit-cpu")?)
                }
                Some("--rlimit-nofile") => {
                    h.limits.open_files = Some(num(args.next(), "--rlimit-nofile")?)
                }
                Some("--seccomp") => h.limits.seccomp = true,
                Some("--uid") => h.limits.uid = Some(num(args.next(), "--uid")? as u32),
                Some("--") => h.path = args.next().map(PathBuf::from).unwrap_or_default(),
                Some(s) if s.starts_with("--") => {
                    return Err(format!("unknown option {s}\n{HOST_USAGE}"))
                }
                _ => h.path = PathBuf::from(a),
            }
        }
        if h.sock_fd < 0 || h.parent == 0 || h.path.as_os_str().is_empty() {
            return Err(HOST_USAGE.to_owned());
        }
        Ok(h)
    }
}

/// The socket to the parent, for the module's callbacks.
static SOCK: AtomicI32 = AtomicI32::new(-1);

fn sock() -> BorrowedFd<'static> {
    // SAFETY: set once in `host_main` to the inherited socket, which stays open for the life
    // of the process (nothing closes it; the process ends with `_exit`).
    unsafe { BorrowedFd::borrow_raw(SOCK.load(Ordering::Relaxed)) }
}

/// End the process now: no atexit handlers or destructors, no module code after it.
fn quit(code: i32) -> ! {
    // SAFETY: _exit has no preconditions.
    unsafe { libc::_exit(code) }
}

/// Send, or end: a parent that cannot be told is gone.
fn tell(kind: Kind, arg: i32, parts: &[&[u8]]) {
    if wire::send(sock(), kind, arg, parts).is_err() {
        quit(0);
    }
}

/// The module's `log`, forwarded to the parent's callback.
unsafe extern "C" fn forward_log(level: c_int, msg: *const c_char) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the module passes a NUL-terminated string, as the interface requires.
    let text = unsafe { CStr::from_ptr(msg) }.to_bytes();
    tell(Kind::Log, level, &[text]);
}

/// The module's `get_time`, answered by the parent's callback.
unsafe extern "C" fn forward_time() -> u64 {
    tell(Kind::GetTime, 0, &[]);
    let mut inbox = Inbox::default();
    match wire::recv(sock(), &mut inbox) {
        Ok(m) if m.kind == Kind::Time && inbox.data().len() == 8 => {
            u64::from_le_bytes(inbox.data().try_into().expect("8 bytes"))
        }
        // The parent is gone or confused: nothing sensible can follow.
        _ => quit(0),
    }
}

/// The module's `get_time` when the parent's is the loader's monotonic clock.
unsafe extern "C" fn local_time() -> u64 {
    crate::loader::monotonic_ns()
}

/// Tell the parent how a request failed, and end the process when the module is gone.
fn report(e: &Error) {
    if let Some(r) = e.crash_report() {
        if let Some(status) = r.exit_status {
            tell(Kind::Exited, status, &[r.signal_name.as_bytes()]);
            quit(status);
        }
        tell(Kind::Crash, 0, &[super::report::encode(r).as_bytes()]);
        quit(0);
    }
    let code = match e {
        Error::InitFailed { code, .. } => *code,
        _ => 0,
    };
    let text = format!("{}\t{e}", e.kind().name());
    tell(Kind::Error, code, &[text.as_bytes()]);
}

/// `kmodlike-host`'s whole program.
pub fn host_main() -> ! {
    let args = HostArgs::parse(std::env::args_os().skip(1)).unwrap_or_else(|usage| {
        eprintln!("{usage}");
        quit(2);
    });
    SOCK.store(args.sock_fd, Ordering::Relaxed);
    // Not for whatever the module may exec.
    let _ = rustix::io::fcntl_setfd(sock(), rustix::io::FdFlags::CLOEXEC);
    if let Err(why) = harden::confine(args.parent, &args.limits) {
        tell(Kind::Error, 0, &[format!("LoadFailed\tkmodlike-host: {why}").as_bytes()]);
        quit(3);
    }
    let loader = Loader::builder().strict(args.strict).module_path(args.dirs.clone()).build();
    let init_args = if args.null_args {
        InitArgs::Null
    } else {
        InitArgs::Raw(ModuleInitArgs {
            version: MODULE_INIT_ARGS_VERSION_CURRENT,
            log: args.log.then_some(forward_log as unsafe extern "C" fn(c_int, *const c_char)),
            get_time: args.clock.map(|c| match c {
                Clock::Forward => forward_time as unsafe extern "C" fn() -> u64,
                Clock::Local => local_time,
            }),
            user_data: std::ptr::null_mut(),
        })
    };
    let file = match args.module_fd {
        Some(fd) => PathBuf::from(format!("/proc/self/fd/{fd}")),
        None => args.path.clone(),
    };
    let opts = OpenOptions { init_args, ..OpenOptions::default() };
    // SAFETY: running this module is this process's whole job: the parent's caller vouched for
    // the file under `Loader::open`'s promise and asked for it to run here, confined, where
    // whatever it does ends with this process.
    let opened = unsafe { loader.open_with(&file.to_string_lossy(), &opts) };
    let mut handle = match opened {
        Ok(h) => h,
        Err(e) => {
            report(&e);
            quit(0);
        }
    };
    // The dynamic linker is done with files: from here on the module computes.
    if args.limits.seccomp {
        if let Err(why) = super::seccomp::install() {
            tell(Kind::Error, 0, &[format!("LoadFailed\tkmodlike-host: {why}").as_bytes()]);
            quit(3);
        }
    }
    let info = handle.info();
    let version = match (info.legacy, info.interface_version) {
        (true, _) | (_, None) => -1,
        (false, Some(v)) => v.raw() as i32,
    };
    tell(Kind::Ready, version, &[]);
    let mut inbox = Inbox::default();
    loop {
        let msg = match wire::recv(sock(), &mut inbox) {
            Ok(m) => m,
            // The parent is gone: so is the module's reason to run.
            Err(_) => quit(0),
        };
        match msg.kind {
            Kind::Invoke => {
                let data = inbox.data();
                let Some(nul) = data.iter().position(|&b| b == 0) else {
                    tell(Kind::Error, 0, &[b"InvalidArgument\tan invoke without a symbol"]);
                    continue;
                };
                let symbol = String::from_utf8_lossy(&data[..nul]).into_owned();
                match handle.invoke(&symbol, &data[nul + 1..]) {
                    Ok((ret, out)) => tell(Kind::Reply, ret, &[&out]),
                    Err(e) => report(&e),
                }
            }
            Kind::Close => {
                let closed = if msg.arg != 0 { handle.close_forced() } else { handle.close() };
                match closed {
                    Ok(()) => {
                        tell(Kind::Closed, 0, &[]);
                        quit(0);
                    }
                    Err(ce) => {
                        report(&ce.error);
                        match ce.handle {
                            Some(h) => handle = h,
                            None => quit(0),
                        }
                    }
                }
            }
            _ => tell(Kind::Error, 0, &[b"InvalidArgument\tunexpected message"]),
        }
    }
}
