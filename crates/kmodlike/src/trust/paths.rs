//! Path trust: the module file and every directory above it must be owned by root or by this
//! process's effective uid and not writable by group or others, as OpenSSH's `StrictModes`
//! and sudo demand of the files they trust. A sticky directory writable by others (`/tmp`) is
//! passed through only to entries owned by root or by us: the sticky bit stops others from
//! renaming or removing those.
//!
//! # Why the walk holds descriptors
//!
//! Checking the path by name and then opening it by name leaves a window in which a directory
//! could be renamed and the file swapped. So the walk opens `/` and then every component with
//! `openat(dir, name, O_PATH | O_NOFOLLOW)` relative to the directory it has just checked, and
//! `fstat`s what it opened; the module file itself is opened last, from the checked directory
//! descriptor, and its own `fstat` is checked. What is checked is what is opened: a rename
//! after the check changes nothing of what the loader reads, maps and runs (the image code
//! then keeps those bytes stable). Symbolic links are followed by hand (at most 40): a link's
//! target is walked and checked like any other path, from `/` for an absolute target or from
//! the directory holding the link.

use std::ffi::OsStr;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

/// Symbolic links followed at most in one walk (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Group- and other-write bits.
const WRITABLE_BY_OTHERS: u32 = 0o022;
const STICKY: u32 = 0o1000;

/// Why a path is not trusted: the first offending path, its owner and mode, and what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Untrusted {
    /// The file or directory that fails the rule.
    pub path: PathBuf,
    /// Its owner.
    pub uid: u32,
    /// Its mode bits (permission, setuid/setgid/sticky).
    pub mode: u32,
    /// What is wrong with it, in words.
    pub why: &'static str,
}

impl std::fmt::Display for Untrusted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} (owner uid {}, mode {:04o}) {}",
            self.path.display(),
            self.uid,
            self.mode & 0o7777,
            self.why
        )
    }
}

/// What a failed walk says.
#[derive(Debug)]
pub(crate) enum WalkError {
    /// A component does not exist.
    NotFound,
    /// A component cannot be opened or examined (permissions, a loop of links, I/O).
    Io(PathBuf, std::io::Error),
}

/// An opened file and the verdict on the path to it.
#[derive(Debug)]
pub(crate) struct Walked {
    /// The file, opened with `flags` from its checked directory.
    pub fd: OwnedFd,
    /// Its `fstat`.
    pub stat: rustix::fs::Stat,
    /// The first rule the path breaks, if any.
    pub untrusted: Option<Untrusted>,
}

fn owner_trusted(uid: u32, euid: u32) -> bool {
    uid == 0 || uid == euid
}

/// The rule for one opened object: owned by root or `euid`, and not writable by group or others
/// unless it is a sticky directory (whose entries the walk then checks for their owner).
fn judge(path: &Path, st: &rustix::fs::Stat, euid: u32) -> Option<Untrusted> {
    let (uid, mode) = (st.st_uid, st.st_mode);
    let untrusted = |why| Some(Untrusted { path: path.to_owned(), uid, mode, why });
    if !owner_trusted(uid, euid) {
        return untrusted("is owned by another user, who could change it");
    }
    if mode & WRITABLE_BY_OTHERS != 0 {
        let dir = FileType::from_raw_mode(mode) == FileType::Directory;
        if dir && mode & STICKY != 0 {
            // Others may add entries but not rename or remove ours: the next component is
            // checked for its owner.
            return None;
        }
        return untrusted(if dir {
            "is writable by group or others, who could put another file in its place"
        } else {
            "is writable by group or others, who could change it"
        });
    }
    None
}

/// Walk `path` (absolute, or relative to the working directory) from `/`, checking every
/// directory and the file, and open the file with `flags` (`O_NOFOLLOW` is added: the last
/// component's links are followed by the walk). Every rule broken is reported in
/// [`Walked::untrusted`] (the first one); the walk itself fails only when a component cannot
/// be opened.
pub(crate) fn open_checked(path: &Path, flags: OFlags) -> Result<Walked, WalkError> {
    let euid = rustix::process::geteuid().as_raw();
    let abs = if path.is_absolute() {
        path.to_owned()
    } else {
        let cwd = std::env::current_dir().map_err(|e| WalkError::Io(path.to_owned(), e))?;
        cwd.join(path)
    };
    let io = |at: &Path, e: rustix::io::Errno| {
        if e == rustix::io::Errno::NOENT {
            WalkError::NotFound
        } else {
            WalkError::Io(at.to_owned(), e.into())
        }
    };
    let dir_flags = OFlags::PATH | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let root =
        rustix::fs::open("/", dir_flags, Mode::empty()).map_err(|e| io(Path::new("/"), e))?;
    let mut untrusted = None;
    let st = rustix::fs::fstat(&root).map_err(|e| io(Path::new("/"), e))?;
    note(&mut untrusted, judge(Path::new("/"), &st, euid));

    // (directory descriptor, its path, its stat); the stack lets `..` go back up.
    let mut dirs: Vec<(OwnedFd, PathBuf, rustix::fs::Stat)> = vec![(root, "/".into(), st)];
    // Components still to walk, last first.
    let mut todo: Vec<PathBuf> = Vec::new();
    push_components(&mut todo, &abs);
    let mut links = 0;
    while let Some(name) = todo.pop() {
        let (dir, dir_path, dir_st) = dirs.last().expect("never empty");
        if name.as_os_str() == ".." {
            if dirs.len() > 1 {
                dirs.pop();
            }
            continue;
        }
        let here = dir_path.join(&name);
        let open_sticky = dir_st.st_mode & STICKY != 0 && dir_st.st_mode & WRITABLE_BY_OTHERS != 0;
        let entry =
            rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW).map_err(|e| io(&here, e))?;
        if open_sticky && !owner_trusted(entry.st_uid, euid) {
            note(
                &mut untrusted,
                Some(Untrusted {
                    path: here.clone(),
                    uid: entry.st_uid,
                    mode: entry.st_mode,
                    why: "is owned by another user in a directory anyone may write to",
                }),
            );
        }
        if FileType::from_raw_mode(entry.st_mode) == FileType::Symlink {
            links += 1;
            if links > MAX_LINKS {
                return Err(WalkError::Io(here, std::io::Error::from_raw_os_error(libc::ELOOP)));
            }
            let target =
                rustix::fs::readlinkat(dir, &name, Vec::new()).map_err(|e| io(&here, e))?;
            let target = PathBuf::from(OsStr::from_bytes(target.as_bytes()));
            if target.is_absolute() {
                dirs.truncate(1);
            }
            push_components(&mut todo, &target);
            continue;
        }
        let last = todo.is_empty();
        let fd = if last {
            rustix::fs::openat(dir, &name, flags | OFlags::NOFOLLOW, Mode::empty())
        } else {
            rustix::fs::openat(dir, &name, dir_flags | OFlags::NOFOLLOW, Mode::empty())
        }
        .map_err(|e| io(&here, e))?;
        let st = rustix::fs::fstat(fd.as_fd()).map_err(|e| io(&here, e))?;
        note(&mut untrusted, judge(&here, &st, euid));
        if last {
            return Ok(Walked { fd, stat: st, untrusted });
        }
        dirs.push((fd, here, st));
    }
    // The path ends in `/`, `.` or `..`: a directory, which the caller refuses by its type.
    let (dir, _, st) = dirs.pop().expect("never empty");
    let fd = rustix::fs::openat(&dir, ".", flags, Mode::empty()).map_err(|e| io(path, e))?;
    Ok(Walked { fd, stat: st, untrusted })
}

/// Keep the first rule broken.
fn note(slot: &mut Option<Untrusted>, u: Option<Untrusted>) {
    if slot.is_none() {
        *slot = u;
    }
}

/// Push `path`'s normal and `..` components onto `todo` so the first is popped first.
fn push_components(todo: &mut Vec<PathBuf>, path: &Path) {
    let parts: Vec<PathBuf> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(PathBuf::from(n)),
            Component::ParentDir => Some(PathBuf::from("..")),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => None,
        })
        .collect();
    todo.extend(parts.into_iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn flags() -> OFlags {
        OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK
    }

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn a_private_file_in_a_private_directory_is_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.so");
        std::fs::write(&f, b"x").unwrap();
        chmod(&f, 0o644);
        let w = open_checked(&f, flags()).unwrap();
        assert_eq!(w.untrusted, None);
        assert_eq!(w.stat.st_size, 1);
    }

    #[test]
    fn a_world_writable_file_is_named_with_its_mode() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("m.so");
        std::fs::write(&f, b"x").unwrap();
        chmod(&f, 0o666);
        let u = open_checked(&f, flags()).unwrap().untrusted.expect("untrusted");
        assert_eq!(u.path, f);
        assert!(u.to_string().contains("mode 0666"), "{u}");
    }

    #[test]
    fn a_group_writable_directory_above_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("sub");
        std::fs::create_dir(&sub).unwrap();
        chmod(&sub, 0o775);
        let f = sub.join("m.so");
        std::fs::write(&f, b"x").unwrap();
        let u = open_checked(&f, flags()).unwrap().untrusted.expect("untrusted");
        assert_eq!(u.path, sub);
        assert!(u.why.contains("writable by group or others"), "{u}");
    }

    #[test]
    fn a_sticky_world_writable_directory_passes_our_own_entries() {
        let dir = tempfile::tempdir().unwrap();
        chmod(dir.path(), 0o1777);
        let f = dir.path().join("m.so");
        std::fs::write(&f, b"x").unwrap();
        assert_eq!(open_checked(&f, flags()).unwrap().untrusted, None);
    }

    #[test]
    fn links_are_followed_and_their_targets_checked() {
        let dir = tempfile::tempdir().unwrap();
        let open = dir.path().join("open");
        std::fs::create_dir(&open).unwrap();
        chmod(&open, 0o777);
        let f = open.join("m.so");
        std::fs::write(&f, b"x").unwrap();
        let link = dir.path().join("link.so");
        std::os::unix::fs::symlink("open/../open/m.so", &link).unwrap();
        let u = open_checked(&link, flags()).unwrap().untrusted.expect("untrusted");
        assert_eq!(u.path, open);
    }

    #[test]
    fn a_missing_component_is_not_found() {
        let dir = tempfile::tempdir().unwrap();
        let e = open_checked(&dir.path().join("no/m.so"), flags()).unwrap_err();
        assert!(matches!(e, WalkError::NotFound), "{e:?}");
    }
}
