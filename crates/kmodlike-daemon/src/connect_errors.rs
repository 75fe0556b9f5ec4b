//! Why a connect to the daemon's socket failed, said precisely: the path is not a socket, or the
//! socket's mode keeps the caller out (and which group would let them in).

use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

/// A connect failure explained from the socket file itself.
#[derive(Debug)]
pub enum ConnectProblem {
    /// The path exists and is not a socket.
    NotASocket {
        /// The path.
        path: PathBuf,
        /// What it is instead ("a regular file", "a directory", ...).
        what: &'static str,
    },
    /// The caller may not connect (EACCES): the socket's owner, group and mode.
    Forbidden {
        /// The socket.
        path: PathBuf,
        /// Its group's name (or number when it has no name).
        group: String,
        /// Its permission bits.
        mode: u32,
        /// Its owner's uid.
        owner: u32,
    },
}

impl std::fmt::Display for ConnectProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ConnectProblem::NotASocket { path, what } => write!(
                f,
                "cannot reach the daemon at {}: not a socket ({what}); pass the daemon's socket \
                 with --socket PATH or $KMODLIKE_SOCKET",
                path.display()
            ),
            ConnectProblem::Forbidden { path, group, mode, .. } if mode & 0o020 != 0 => write!(
                f,
                "cannot reach the daemon at {}: permission denied (socket mode {mode:04o}, group \
                 {group}): ask to be added to group {group}, or use --socket",
                path.display()
            ),
            ConnectProblem::Forbidden { path, mode, owner, .. } => write!(
                f,
                "cannot reach the daemon at {}: permission denied (socket mode {mode:04o}: only \
                 uid {owner} may connect): ask for the daemon to run with --socket-group, or use \
                 --socket",
                path.display()
            ),
        }
    }
}

/// Explain `error`, returned by connecting to `path`, when the file says more than the errno.
pub fn explain(path: &Path, error: &io::Error) -> Option<ConnectProblem> {
    let meta = std::fs::metadata(path).ok();
    if let Some(m) = &meta {
        let ft = m.file_type();
        if !ft.is_socket() {
            let what = if ft.is_file() {
                "a regular file"
            } else if ft.is_dir() {
                "a directory"
            } else if ft.is_fifo() {
                "a FIFO"
            } else {
                "not a socket file"
            };
            return Some(ConnectProblem::NotASocket { path: path.to_owned(), what });
        }
    }
    if error.kind() == io::ErrorKind::PermissionDenied {
        // The socket itself may be unreadable to us while its directory is not (or the other way
        // round): name the socket's group when we can see it, else its directory's.
        let m = meta.or_else(|| path.parent().and_then(|d| std::fs::metadata(d).ok()))?;
        return Some(ConnectProblem::Forbidden {
            path: path.to_owned(),
            group: group_name(m.gid()),
            mode: m.mode() & 0o7777,
            owner: m.uid(),
        });
    }
    None
}

/// The name of group `gid`, or its number when it has none.
pub fn group_name(gid: u32) -> String {
    let mut buf = vec![0 as libc::c_char; 16 * 1024];
    // SAFETY: `group` is plain old data that getgrgid_r fills; a zeroed value is a valid
    // initial state.
    let mut group: libc::group = unsafe { std::mem::zeroed() };
    let mut result: *mut libc::group = std::ptr::null_mut();
    // SAFETY: every pointer is valid for the call: a struct and a buffer of the length passed,
    // and an out-pointer; getgrgid_r is thread-safe.
    let rc = unsafe { libc::getgrgid_r(gid, &mut group, buf.as_mut_ptr(), buf.len(), &mut result) };
    if rc != 0 || result.is_null() || group.gr_name.is_null() {
        return gid.to_string();
    }
    // SAFETY: on success gr_name points at a NUL-terminated string inside `buf`, alive here.
    let name = unsafe { std::ffi::CStr::from_ptr(group.gr_name) };
    name.to_string_lossy().into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_regular_file_is_not_a_socket() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        std::fs::write(&file, "x").unwrap();
        let refused = io::Error::from(io::ErrorKind::ConnectionRefused);
        let p = explain(&file, &refused).expect("explained");
        assert!(p.to_string().contains("not a socket (a regular file)"), "{p}");
        assert!(explain(&dir.path().join("missing"), &refused).is_none());
    }

    #[test]
    fn group_names_resolve_and_numbers_fall_back() {
        assert_eq!(group_name(0), "root");
        assert_eq!(group_name(4_000_000_000), "4000000000");
    }
}
