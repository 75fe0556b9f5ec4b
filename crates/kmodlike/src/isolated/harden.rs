//! What the child does to itself before it loads the module: die with its parent, gain no
//! privileges, live within its resource limits, drop to another uid when asked (and root).
//! The seccomp filter comes later, once the module is loaded (`super::seccomp`).

use std::ffi::OsString;

use crate::options::Isolation;

/// The child's limits and confinement (from [`Isolation`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Limits {
    /// `RLIMIT_AS`, bytes.
    pub address_space: Option<u64>,
    /// `RLIMIT_CPU`, seconds.
    pub cpu_seconds: Option<u64>,
    /// `RLIMIT_NOFILE`.
    pub open_files: Option<u64>,
    /// The seccomp allow-list, installed after the module is loaded (`super::seccomp`).
    pub seccomp: bool,
    /// The uid (and gid) to drop to, when root.
    pub uid: Option<u32>,
}

impl From<&Isolation> for Limits {
    fn from(i: &Isolation) -> Self {
        Limits {
            address_space: i.address_space,
            cpu_seconds: i.cpu_seconds,
            open_files: i.open_files,
            seccomp: i.seccomp,
            uid: i.uid,
        }
    }
}

impl Limits {
    /// As `kmodlike-host` options.
    pub fn to_args(self) -> Vec<OsString> {
        let mut a: Vec<OsString> = Vec::new();
        let mut num = |opt: &str, v: Option<u64>| {
            if let Some(v) = v {
                a.push(opt.into());
                a.push(v.to_string().into());
            }
        };
        num("--rlimit-as", self.address_space);
        num("--rlimit-cpu", self.cpu_seconds);
        num("--rlimit-nofile", self.open_files);
        num("--uid", self.uid.map(u64::from));
        if self.seccomp {
            a.push("--seccomp".into());
        }
        a
    }
}

fn os(what: &str) -> String {
    format!("{what}: {}", std::io::Error::last_os_error())
}

fn rlimit(resource: libc::__rlimit_resource_t, value: u64, what: &str) -> Result<(), String> {
    let lim = libc::rlimit { rlim_cur: value, rlim_max: value };
    // SAFETY: setrlimit reads the struct we pass; lowering our own limits is always allowed.
    if unsafe { libc::setrlimit(resource, &lim) } != 0 {
        return Err(os(&format!("setrlimit({what}, {value})")));
    }
    Ok(())
}

/// Confine this process: `PR_SET_PDEATHSIG(SIGKILL)` and a check that `parent` is still our
/// parent (it may have died before the first), `PR_SET_NO_NEW_PRIVS`, the resource limits,
/// and the uid drop when running as root.
pub fn confine(parent: u32, limits: &Limits) -> Result<(), String> {
    // SAFETY: prctl with an integer argument; it only changes this process's attributes.
    if unsafe { libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong, 0, 0, 0) } != 0
    {
        return Err(os("prctl(PR_SET_PDEATHSIG)"));
    }
    // The parent may have died before the line above: then we were reparented and no signal
    // will come.
    // SAFETY: getppid has no preconditions.
    let ppid = unsafe { libc::getppid() };
    if ppid as u32 != parent {
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(1) };
    }
    // SAFETY: as above: an attribute of this process only.
    if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1 as libc::c_ulong, 0, 0, 0) } != 0 {
        return Err(os("prctl(PR_SET_NO_NEW_PRIVS)"));
    }
    if let Some(v) = limits.address_space {
        rlimit(libc::RLIMIT_AS, v, "RLIMIT_AS")?;
    }
    if let Some(v) = limits.cpu_seconds {
        rlimit(libc::RLIMIT_CPU, v, "RLIMIT_CPU")?;
    }
    if let Some(v) = limits.open_files {
        rlimit(libc::RLIMIT_NOFILE, v, "RLIMIT_NOFILE")?;
    }
    // SAFETY: geteuid has no preconditions.
    if let (Some(uid), 0) = (limits.uid, unsafe { libc::geteuid() }) {
        // SAFETY: these calls only change this process's credentials; the group list goes
        // first, then the gid, then the uid (after which the others are no longer allowed).
        unsafe {
            if libc::setgroups(0, std::ptr::null()) != 0 {
                return Err(os("setgroups([])"));
            }
            if libc::setgid(uid) != 0 {
                return Err(os(&format!("setgid({uid})")));
            }
            if libc::setuid(uid) != 0 {
                return Err(os(&format!("setuid({uid})")));
            }
        }
    }
    Ok(())
}
