//! The daemon's socket: which path, one instance per path, who may connect.
//!
//! - Path rule ([`choose_socket_path`]): `--socket`, else `KMODLIKE_SOCKET`, else
//!   `/var/run/<bin_name>.sock` when `/var/run` is writable, else `/tmp/<bin_name>.sock`.
//! - One instance per socket ([`InstanceLock`]): an exclusive `flock` on `<socket>.lock`, held
//!   for the daemon's life, with the holder's pid written in it. Only the holder removes a stale
//!   socket file ([`bind_listener`]).
//! - Who may call ([`AccessPolicy`]): SO_PEERCRED on every connection; root and the daemon's own
//!   uid (and, with `--socket-group`, members of that group).

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};

use rustix::fs::{Access as FileAccess, FlockOperation, Mode};
use rustix::net::{AddressFamily, SocketAddrUnix, SocketFlags, SocketType};

/// The environment variable naming the socket (after `--socket`).
pub const SOCKET_ENV: &str = "KMODLIKE_SOCKET";

/// Tests point the rule's `/var/run` at a directory they control with this variable. It is not
/// a user-facing setting (use `--socket` or `KMODLIKE_SOCKET`).
pub const RUNDIR_TEST_ENV: &str = "KMODLIKE_RUNDIR_FOR_TESTS";

/// The name the daemon's socket is derived from when the client is asked for no path.
pub const DAEMON_BIN_NAME: &str = "kmodlike";

/// The system's run directory (`/var/run`), unless a test overrides it.
pub fn var_run_dir() -> PathBuf {
    std::env::var_os(RUNDIR_TEST_ENV).map(PathBuf::from).unwrap_or_else(|| "/var/run".into())
}

/// The fallback directory.
pub fn tmp_dir() -> PathBuf {
    PathBuf::from("/tmp")
}

/// This program's own file name: argv\[0\]'s, else the executable's (a copy of `kmodlike` named
/// `foo` is `foo`).
pub fn bin_name() -> String {
    let from_argv0 = std::env::args_os()
        .next()
        .and_then(|a| Path::new(&a).file_name().map(|n| n.to_string_lossy().into_owned()));
    from_argv0
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::env::current_exe()
                .ok()
                .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
        })
        .unwrap_or_else(|| DAEMON_BIN_NAME.to_owned())
}

/// Whether this process may create files in `dir` (write and search permission).
pub fn is_writable_dir(dir: &Path) -> bool {
    dir.is_dir() && rustix::fs::access(dir, FileAccess::WRITE_OK | FileAccess::EXEC_OK).is_ok()
}

/// Why a socket path was chosen (for the log line).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathSource {
    /// `--socket`.
    Option,
    /// `KMODLIKE_SOCKET`.
    Environment,
    /// The run directory (`/var/run`) is writable.
    RunDir,
    /// The run directory is not writable: `/tmp`.
    TmpFallback,
}

impl std::fmt::Display for PathSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathSource::Option => "from --socket",
            PathSource::Environment => "from KMODLIKE_SOCKET",
            PathSource::RunDir => "default",
            PathSource::TmpFallback => "default fallback: the run directory is not writable",
        })
    }
}

/// The socket path rule. `option` is `--socket`, `env` is `KMODLIKE_SOCKET`'s value; `run_dir`
/// and `tmp` are `/var/run` and `/tmp` (parameters so that tests can point them elsewhere).
pub fn choose_socket_path(
    option: Option<&Path>,
    env: Option<&OsStr>,
    bin_name: &str,
    run_dir: &Path,
    tmp: &Path,
) -> (PathBuf, PathSource) {
    if let Some(p) = option {
        return (p.to_owned(), PathSource::Option);
    }
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        return (PathBuf::from(e), PathSource::Environment);
    }
    let file = format!("{bin_name}.sock");
    if is_writable_dir(run_dir) {
        (run_dir.join(file), PathSource::RunDir)
    } else {
        (tmp.join(file), PathSource::TmpFallback)
    }
}

/// Where a client looks for the daemon when given no path: `KMODLIKE_SOCKET`, else the first of
/// `/var/run/kmodlike.sock` and `/tmp/kmodlike.sock` that exists (the first, when neither does).
pub fn client_socket_path(env: Option<OsString>) -> PathBuf {
    if let Some(e) = env.filter(|e| !e.is_empty()) {
        return PathBuf::from(e);
    }
    let file = format!("{DAEMON_BIN_NAME}.sock");
    let candidates = [var_run_dir().join(&file), tmp_dir().join(&file)];
    candidates.iter().find(|p| p.exists()).unwrap_or(&candidates[0]).clone()
}

/// `<socket>.lock`.
pub fn lock_path(socket: &Path) -> PathBuf {
    let mut s = socket.as_os_str().to_owned();
    s.push(".lock");
    PathBuf::from(s)
}

/// Another daemon holds the socket's lock, or the lock file cannot be used.
#[derive(Debug)]
pub enum LockError {
    /// Another process holds the lock.
    Held {
        /// The lock file.
        lock: PathBuf,
        /// The holder's pid, as written in the lock file.
        pid: Option<u32>,
    },
    /// The lock file exists but was not made by this daemon's user, or has more than one name:
    /// another user could hold it to stop the daemon, or read and rewrite it. Refused.
    Foreign {
        /// The lock file.
        lock: PathBuf,
        /// Its owner.
        uid: u32,
        /// Its number of hard links.
        nlink: u64,
    },
    /// The lock file could not be created or locked.
    Io {
        /// The lock file.
        lock: PathBuf,
        /// Why.
        source: io::Error,
    },
}

impl std::fmt::Display for LockError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LockError::Held { lock, pid: Some(pid) } => write!(
                f,
                "another daemon (pid {pid}) already serves this socket: it holds {}",
                lock.display()
            ),
            LockError::Held { lock, pid: None } => {
                write!(f, "another daemon already serves this socket: {} is locked", lock.display())
            }
            LockError::Foreign { lock, uid, nlink } => {
                let me = rustix::process::geteuid().as_raw();
                let why = if *uid != me {
                    format!(
                        "is owned by {} (uid {uid}), not by this daemon's uid {me}",
                        user_name(*uid)
                    )
                } else {
                    format!("has {nlink} hard links (another name could be used to hold it)")
                };
                write!(
                    f,
                    "the lock file {} {why}: someone else made it, perhaps to keep this daemon \
                     from starting; refusing to use it. Remove it if it is stale (rm {}), or \
                     serve another socket with --socket PATH in a directory only this user may \
                     write (such as /var/run or $XDG_RUNTIME_DIR)",
                    lock.display(),
                    lock.display()
                )
            }
            LockError::Io { lock, source } => {
                write!(f, "cannot lock {}: {source}", lock.display())
            }
        }
    }
}

impl std::error::Error for LockError {}

/// The exclusive lock on `<socket>.lock`, held while this value lives. Dropping it removes the
/// lock file.
#[derive(Debug)]
pub struct InstanceLock {
    /// Holds the flock: closing it releases the lock.
    _file: File,
    path: PathBuf,
}

impl InstanceLock {
    /// Take the lock for `socket` without waiting, and write this process's pid into it.
    pub fn acquire(socket: &Path) -> Result<InstanceLock, LockError> {
        let path = lock_path(socket);
        let io_err = |source| LockError::Io { lock: path.clone(), source };
        // A previous holder unlinks the file on exit; if we locked a file that was unlinked (or
        // replaced) meanwhile, another daemon may lock the new one: retry on the new file.
        for _ in 0..10 {
            // An existing lock file must be ours: one another user made could be held by them
            // forever, or be a hard link to a file of theirs. Checked before it is opened (the
            // open could be refused in a sticky directory) and again on the descriptor.
            if let Ok(meta) = std::fs::symlink_metadata(&path) {
                check_lock_owner(&path, meta.uid(), meta.nlink())?;
            }
            let mut file = std::fs::OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .mode(0o600)
                .custom_flags(libc::O_NOFOLLOW)
                .open(&path)
                .map_err(io_err)?;
            let meta = file.metadata().map_err(io_err)?;
            check_lock_owner(&path, meta.uid(), meta.nlink())?;
            match rustix::fs::flock(&file, FlockOperation::NonBlockingLockExclusive) {
                Ok(()) => {}
                Err(rustix::io::Errno::WOULDBLOCK) => {
                    let mut text = String::new();
                    let _ = file.read_to_string(&mut text);
                    return Err(LockError::Held { lock: path, pid: text.trim().parse().ok() });
                }
                Err(e) => return Err(io_err(e.into())),
            }
            let ours = file.metadata().map_err(io_err)?;
            match std::fs::symlink_metadata(&path) {
                Ok(now) if now.ino() == ours.ino() && now.dev() == ours.dev() => {}
                _ => continue,
            }
            file.set_len(0).map_err(io_err)?;
            file.rewind().map_err(io_err)?;
            writeln!(file, "{}", std::process::id()).map_err(io_err)?;
            return Ok(InstanceLock { _file: file, path });
        }
        Err(io_err(io::Error::other("the lock file keeps being replaced")))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Refuse a lock file owned by another uid or with more than one link.
fn check_lock_owner(lock: &Path, uid: u32, nlink: u64) -> Result<(), LockError> {
    if uid != rustix::process::geteuid().as_raw() || nlink > 1 {
        return Err(LockError::Foreign { lock: lock.to_owned(), uid, nlink });
    }
    Ok(())
}

/// `"user NAME"` for a uid with a name in the user database, else `"a user with no name"`.
pub fn user_name(uid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `passwd` is plain old data that getpwuid_r fills; zeroed is a valid start.
    let mut pw: libc::passwd = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call (a struct, a buffer of the length passed,
    // an out-pointer); getpwuid_r is thread-safe.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || pw.pw_name.is_null() {
        return "a user with no name".to_owned();
    }
    // SAFETY: getpwuid_r succeeded: pw_name points to a NUL-terminated string in `buf`.
    let name = unsafe { std::ffi::CStr::from_ptr(pw.pw_name) };
    format!("user {}", name.to_string_lossy())
}

impl Drop for InstanceLock {
    fn drop(&mut self) {
        // Unlink while still holding the lock; a daemon that opened the old file before this
        // fails to lock it, and one that opens a new file afterwards finds no holder.
        let _ = std::fs::remove_file(&self.path);
    }
}

/// Create the listening socket at `path` with `mode` (and `group`, when given), replacing a
/// stale socket file. Only the holder of `path`'s [`InstanceLock`] may replace the file, so the
/// lock is asked for as proof.
///
/// The file gets its mode and group before `listen`, so no one can connect through a wider mode
/// in between.
pub fn bind_listener(
    lock: &InstanceLock,
    path: &Path,
    mode: u32,
    group: Option<u32>,
) -> io::Result<UnixListener> {
    if lock.path() != lock_path(path) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("{} is not the lock of {}", lock.path().display(), path.display()),
        ));
    }
    match std::fs::symlink_metadata(path) {
        Ok(meta) if meta.file_type().is_socket() => {
            tracing::info!(socket = %path.display(), "replacing a stale socket file");
            std::fs::remove_file(path)?;
        }
        Ok(_) => {
            return Err(io::Error::new(
                io::ErrorKind::AlreadyExists,
                format!("{} exists and is not a socket; not replacing it", path.display()),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let fd: OwnedFd = rustix::net::socket_with(
        AddressFamily::UNIX,
        SocketType::STREAM,
        SocketFlags::CLOEXEC,
        None,
    )?;
    let addr = SocketAddrUnix::new(path)?;
    rustix::net::bind(&fd, &addr)?;
    let configure = || -> io::Result<()> {
        rustix::fs::chmod(path, Mode::from_raw_mode(mode))?;
        if let Some(gid) = group {
            let gid = rustix::fs::Gid::from_raw(gid);
            rustix::fs::chown(path, None, Some(gid))?;
        }
        rustix::net::listen(&fd, 128)?;
        Ok(())
    };
    if let Err(e) = configure() {
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(UnixListener::from(fd))
}

/// Parse an octal file mode (`0600`, `660`).
pub fn parse_mode(text: &str) -> Result<u32, String> {
    let digits = text.strip_prefix("0o").unwrap_or(text);
    match u32::from_str_radix(digits, 8) {
        Ok(m) if m <= 0o777 => Ok(m),
        _ => Err(format!("{text:?} is not an octal file mode such as 0600 or 0660")),
    }
}

/// Resolve a group name or number to a gid.
pub fn group_id(name: &str) -> io::Result<u32> {
    if let Ok(n) = name.parse::<u32>() {
        return Ok(n);
    }
    let cname = std::ffi::CString::new(name)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "group name contains NUL"))?;
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `group` is plain old data that getgrnam_r fills; a zeroed value is a valid
    // initial state.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: a NUL-terminated name, a struct and a buffer
    // of the length passed, and an out-pointer; getgrnam_r is thread-safe.
    let rc = unsafe {
        libc::getgrnam_r(cname.as_ptr(), &mut group, buf.as_mut_ptr(), buf.len(), &mut result)
    };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    if result.is_null() {
        return Err(io::Error::new(io::ErrorKind::NotFound, format!("no group named {name:?}")));
    }
    Ok(group.gr_gid)
}

/// The credentials of the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCred {
    /// Its pid.
    pub pid: i32,
    /// Its effective uid.
    pub uid: u32,
    /// Its effective gid.
    pub gid: u32,
}

/// SO_PEERCRED of a connected Unix socket.
pub fn peer_cred<Fd: AsFd>(socket: Fd) -> io::Result<PeerCred> {
    let c = rustix::net::sockopt::socket_peercred(socket)?;
    Ok(PeerCred { pid: c.pid.as_raw_nonzero().get(), uid: c.uid.as_raw(), gid: c.gid.as_raw() })
}

/// SO_PEERGROUPS: the supplementary groups of the peer (Linux 4.13 and later).
pub fn peer_groups<Fd: AsFd>(socket: Fd) -> io::Result<Vec<u32>> {
    let mut groups: Vec<libc::gid_t> = vec![0; 256];
    let mut len = (groups.len() * std::mem::size_of::<libc::gid_t>()) as libc::socklen_t;
    // SAFETY: the buffer is valid for `len` bytes and `len` is passed by pointer as
    // getsockopt requires; the kernel writes at most `len` bytes and updates it.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_fd().as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_PEERGROUPS,
            groups.as_mut_ptr().cast(),
            &mut len,
        )
    };
    if rc != 0 {
        return Err(io::Error::last_os_error());
    }
    groups.truncate(len as usize / std::mem::size_of::<libc::gid_t>());
    Ok(groups)
}

/// Who may call the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AccessPolicy {
    /// The daemon's own uid.
    pub daemon_uid: u32,
    /// `--socket-group`: members of this group may call too.
    pub group: Option<u32>,
    /// Members of `group` may also load, unload and reload modules (`--socket-group-may-load`).
    pub group_may_load: bool,
}

/// What an admitted peer may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Everything: root, the daemon's uid, and the socket group with `--socket-group-may-load`.
    Full,
    /// Read (List, Info, Crashes, Status, Monitor, Ping) and Call, but not change which code is
    /// loaded (Load, Unload, Reload, Clear, ClearTaint, SetSignaturePolicy): the socket group
    /// by default. Loading a module runs its code as the daemon's user, so a group that may
    /// load is as strong as that user.
    Operate,
}

impl AccessPolicy {
    /// The policy for this process.
    pub fn for_this_process(group: Option<u32>) -> AccessPolicy {
        AccessPolicy {
            daemon_uid: rustix::process::geteuid().as_raw(),
            group,
            group_may_load: false,
        }
    }

    /// Let the socket group load, unload and reload modules too.
    pub fn with_group_may_load(mut self, may_load: bool) -> AccessPolicy {
        self.group_may_load = may_load;
        self
    }

    /// Whether a peer may call: root, the daemon's uid, or (with a group) a member of it.
    /// `supplementary` is asked only when the group decides.
    pub fn allows(&self, peer: &PeerCred, supplementary: impl FnOnce() -> Vec<u32>) -> bool {
        self.access(peer, supplementary).is_some()
    }

    /// What a peer may do, `None` when it may not connect at all.
    pub fn access(
        &self,
        peer: &PeerCred,
        supplementary: impl FnOnce() -> Vec<u32>,
    ) -> Option<Access> {
        if peer.uid == 0 || peer.uid == self.daemon_uid {
            return Some(Access::Full);
        }
        let member = match self.group {
            Some(g) => peer.gid == g || supplementary().contains(&g),
            None => false,
        };
        match (member, self.group_may_load) {
            (false, _) => None,
            (true, true) => Some(Access::Full),
            (true, false) => Some(Access::Operate),
        }
    }
}

/// The client's check of the server: the process serving the socket must run as root or as the
/// client's own uid, or the client sends nothing (a squatter on /tmp gets no request).
pub fn server_is_trusted(server: &PeerCred, client_uid: u32) -> bool {
    server.uid == 0 || server.uid == client_uid
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::net::UnixStream;

    #[test]
    fn option_then_environment_then_run_dir() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        let tmp = dir.path().join("tmp");
        let opt = Path::new("/x/opt.sock");
        let env = OsStr::new("/x/env.sock");
        assert_eq!(
            choose_socket_path(Some(opt), Some(env), "kmodlike", &run, &tmp),
            (opt.to_owned(), PathSource::Option)
        );
        assert_eq!(
            choose_socket_path(None, Some(env), "kmodlike", &run, &tmp),
            (PathBuf::from(env), PathSource::Environment)
        );
        assert_eq!(
            choose_socket_path(None, Some(OsStr::new("")), "foo", &run, &tmp),
            (run.join("foo.sock"), PathSource::RunDir),
            "an empty KMODLIKE_SOCKET counts as unset; the file is named after the program"
        );
    }

    #[test]
    fn falls_back_to_tmp_when_the_run_dir_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("no-such-dir");
        let tmp = dir.path().join("tmp");
        assert_eq!(
            choose_socket_path(None, None, "foo", &run, &tmp),
            (tmp.join("foo.sock"), PathSource::TmpFallback)
        );
    }

    #[test]
    fn falls_back_to_tmp_when_the_run_dir_is_read_only() {
        if rustix::process::geteuid().is_root() {
            // Root may write into a 0555 directory; the integration tests cover this case with
            // a daemon running as an unprivileged uid.
            eprintln!("skipped: access(W_OK) is always true for root");
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path().join("run");
        std::fs::create_dir(&run).unwrap();
        std::fs::set_permissions(&run, std::fs::Permissions::from_mode(0o555)).unwrap();
        let tmp = dir.path().join("tmp");
        assert_eq!(choose_socket_path(None, None, "foo", &run, &tmp).1, PathSource::TmpFallback);
    }

    #[test]
    fn second_lock_names_the_holder_pid_and_drop_releases_it() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        let first = InstanceLock::acquire(&sock).unwrap();
        assert_eq!(first.path(), dir.path().join("d.sock.lock"));
        let text = std::fs::read_to_string(first.path()).unwrap();
        assert_eq!(text.trim(), std::process::id().to_string());
        match InstanceLock::acquire(&sock) {
            Err(LockError::Held { pid: Some(pid), .. }) => assert_eq!(pid, std::process::id()),
            other => panic!("expected Held with our pid, got {other:?}"),
        }
        drop(first);
        assert!(!dir.path().join("d.sock.lock").exists(), "the lock file is removed on drop");
        InstanceLock::acquire(&sock).expect("lock is free again");
    }

    #[test]
    fn listener_has_the_mode_and_replaces_a_stale_socket_only() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        // A stale socket: bound, then its listener dropped without removing the file.
        drop(UnixListener::bind(&sock).unwrap());
        assert!(UnixStream::connect(&sock).is_err(), "stale: nobody listens");
        let lock = InstanceLock::acquire(&sock).unwrap();
        let listener = bind_listener(&lock, &sock, 0o600, None).unwrap();
        let meta = std::fs::metadata(&sock).unwrap();
        assert_eq!(meta.permissions().mode() & 0o777, 0o600);
        let client = UnixStream::connect(&sock).unwrap();
        let (server, _) = listener.accept().unwrap();
        let cred = peer_cred(&server).unwrap();
        assert_eq!(cred.uid, rustix::process::geteuid().as_raw());
        assert_eq!(cred.pid as u32, std::process::id());
        let server_seen = peer_cred(&client).unwrap();
        assert!(server_is_trusted(&server_seen, rustix::process::geteuid().as_raw()));
        drop(listener);

        let file = dir.path().join("plain");
        std::fs::write(&file, b"data").unwrap();
        let file_lock = InstanceLock::acquire(&file).unwrap();
        let err = bind_listener(&file_lock, &file, 0o600, None).unwrap_err();
        assert!(bind_listener(&lock, &file, 0o600, None).is_err(), "another path's lock");
        assert!(err.to_string().contains("is not a socket"), "{err}");
        assert_eq!(std::fs::read(&file).unwrap(), b"data", "a regular file is never removed");
    }

    #[test]
    fn policy_admits_root_self_and_group_members_only() {
        let p = AccessPolicy { daemon_uid: 1000, group: None, group_may_load: false };
        let cred = |uid, gid| PeerCred { pid: 1, uid, gid };
        assert!(p.allows(&cred(0, 0), Vec::new));
        assert!(p.allows(&cred(1000, 1000), Vec::new));
        assert!(!p.allows(&cred(65534, 65534), || vec![4242]));
        let g = AccessPolicy { daemon_uid: 1000, group: Some(4242), group_may_load: false };
        assert!(g.allows(&cred(2000, 4242), Vec::new));
        assert!(g.allows(&cred(2000, 100), || vec![7, 4242]));
        assert!(!g.allows(&cred(2000, 100), || vec![7]));
        assert!(!server_is_trusted(&cred(65534, 65534), 1000));
        assert!(server_is_trusted(&cred(0, 0), 1000));
    }

    #[test]
    fn the_group_operates_and_loads_only_when_allowed() {
        let cred = |uid, gid| PeerCred { pid: 1, uid, gid };
        let g = AccessPolicy { daemon_uid: 1000, group: Some(4242), group_may_load: false };
        assert_eq!(g.access(&cred(0, 0), Vec::new), Some(Access::Full));
        assert_eq!(g.access(&cred(1000, 1), Vec::new), Some(Access::Full));
        assert_eq!(g.access(&cred(2000, 4242), Vec::new), Some(Access::Operate));
        assert_eq!(g.access(&cred(2000, 1), Vec::new), None);
        let g = g.with_group_may_load(true);
        assert_eq!(g.access(&cred(2000, 4242), Vec::new), Some(Access::Full));
    }

    #[test]
    fn a_lock_file_with_two_links_is_refused_naming_the_remedy() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("d.sock");
        std::fs::write(dir.path().join("other"), b"").unwrap();
        std::fs::hard_link(dir.path().join("other"), lock_path(&sock)).unwrap();
        let e = InstanceLock::acquire(&sock).unwrap_err();
        assert!(matches!(e, LockError::Foreign { nlink: 2, .. }), "{e}");
        assert!(
            e.to_string().contains("2 hard links") && e.to_string().contains("--socket"),
            "{e}"
        );
    }

    #[test]
    fn parses_modes_and_groups() {
        assert_eq!(parse_mode("0600"), Ok(0o600));
        assert_eq!(parse_mode("660"), Ok(0o660));
        assert!(parse_mode("0800").is_err());
        assert!(parse_mode("7777").is_err());
        assert_eq!(group_id("0").unwrap(), 0);
        assert_eq!(group_id("root").unwrap(), 0);
        assert!(group_id("no-such-group-kmodlike").is_err());
    }
}
