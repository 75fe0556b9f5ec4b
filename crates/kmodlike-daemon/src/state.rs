//! What the daemon keeps across restarts: the crash log, the crash-loop quarantines and the taint
//! history, in one JSON file (`state.json`) under the state directory.
//!
//! The directory is `--state-dir`, else `$STATE_DIRECTORY` (set by systemd for a unit with
//! `StateDirectory=`), else `/var/lib/kmodlike`. The file is rewritten whole after every change
//! (a crash, a quarantine, a clear, a taint acknowledgement): written to `state.json.tmp`,
//! flushed to disk, then renamed over `state.json` and the directory flushed, so a power cut
//! leaves the old state or the new one, never half of either. It is bounded: the newest
//! [`MAX_CRASHES`] crash reports and at most [`MAX_BYTES`] in all, oldest dropped first.
//!
//! A state file that cannot be parsed is moved aside (`state.json.corrupt-<epoch seconds>`) with
//! a warning naming both files, and the daemon starts with empty state: a damaged file never
//! keeps the daemon from starting, and the evidence is kept for whoever looks.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use crate::varlink::types::{CrashReport, Taint, TaintAck};

/// The state file's name in the state directory.
pub const STATE_FILE: &str = "state.json";

/// Crash reports kept (newest first; older ones are dropped).
pub const MAX_CRASHES: usize = 1000;

/// The most the state file may take, in bytes (crash reports are dropped, oldest first, to fit).
pub const MAX_BYTES: usize = 1 << 20;

/// The default state directory when neither `--state-dir` nor `$STATE_DIRECTORY` is given.
pub const DEFAULT_STATE_DIR: &str = "/var/lib/kmodlike";

/// The version written into the file; a file of another version is treated as corrupt.
const FORMAT_VERSION: u32 = 1;

/// The state directory: `--state-dir`, else the first directory of `$STATE_DIRECTORY`, else
/// [`DEFAULT_STATE_DIR`].
pub fn choose_state_dir(arg: Option<&Path>, env: Option<&std::ffi::OsStr>) -> PathBuf {
    if let Some(dir) = arg {
        return dir.to_owned();
    }
    // systemd passes a colon-separated list when the unit names several directories.
    if let Some(first) = env.and_then(|e| std::env::split_paths(e).next()) {
        if !first.as_os_str().is_empty() {
            return first;
        }
    }
    PathBuf::from(DEFAULT_STATE_DIR)
}

/// A module name refused by the crash-loop policy until cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuarantineRecord {
    /// The module name.
    pub module: String,
    /// The crashes that quarantined it.
    pub crashes: u64,
}

/// Everything persisted, as written to `state.json`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// Crash reports, newest first, this run's and earlier runs'.
    pub crashes: Vec<CrashReport>,
    /// Quarantined module names.
    pub quarantined: Vec<QuarantineRecord>,
    /// A taint not acknowledged when the file was written.
    pub taint: Option<Taint>,
    /// Every taint acknowledgement, oldest first.
    pub taint_acks: Vec<TaintAck>,
}

impl Snapshot {
    /// Drop the oldest crash reports until at most [`MAX_CRASHES`] remain and the encoded file
    /// fits [`MAX_BYTES`].
    pub fn bound(&mut self) {
        self.crashes.truncate(MAX_CRASHES);
        let encoded = |s: &Snapshot| serde_json::to_vec(s).map(|v| v.len()).unwrap_or(0);
        let mut size = encoded(self);
        while size > MAX_BYTES && !self.crashes.is_empty() {
            // Drop enough reports at once for the excess, then measure again.
            let excess = size - MAX_BYTES;
            let mut freed = 0;
            while freed < excess {
                let Some(old) = self.crashes.pop() else { break };
                freed += serde_json::to_vec(&old).map(|v| v.len() + 1).unwrap_or(1);
            }
            size = encoded(self);
        }
    }
}

/// Why the state could not be read.
#[derive(Debug)]
pub enum LoadError {
    /// The file could not be read (other than missing).
    Io(std::io::Error),
    /// The file is not a state file of this version.
    Corrupt(String),
}

/// The persisted state of one daemon, and where it goes.
pub struct StateStore {
    /// `None`: persistence is off (the directory could not be used).
    dir: Option<PathBuf>,
    /// What earlier runs left, crash reports marked `previous_run`.
    previous: Snapshot,
    /// Serialises writers (a crash and a clear at the same moment).
    writing: Mutex<()>,
}

impl StateStore {
    /// A store that keeps nothing (tests of other parts, or no usable directory).
    pub fn disabled() -> StateStore {
        StateStore { dir: None, previous: Snapshot::default(), writing: Mutex::new(()) }
    }

    /// Open the state directory `dir` (created when missing, mode 0700) and read what earlier
    /// runs left. Problems are logged and never fatal: an unusable directory turns persistence
    /// off, a corrupt file is moved aside and the daemon starts empty.
    pub fn open(dir: &Path) -> StateStore {
        if let Err(e) = create_private_dir(dir) {
            tracing::warn!(
                state_dir = %dir.display(),
                "cannot use the state directory {}: {e}; crashes, quarantines and taints will \
                 not be kept across restarts (pass --state-dir DIR)",
                dir.display()
            );
            return StateStore::disabled();
        }
        let file = dir.join(STATE_FILE);
        let previous = match read_snapshot(&file) {
            Ok(Some(s)) => s,
            Ok(None) => Snapshot::default(),
            Err(LoadError::Io(e)) => {
                tracing::warn!(
                    "cannot read the state file {}: {e}; starting with empty state",
                    file.display()
                );
                Snapshot::default()
            }
            Err(LoadError::Corrupt(why)) => {
                let aside = set_aside(&file);
                tracing::warn!(
                    "the state file {} is corrupt ({why}); kept as {} and starting with empty \
                     state",
                    file.display(),
                    aside.as_deref().map(Path::display).map(|d| d.to_string()).unwrap_or_else(
                        || "(could not be moved aside; it will be overwritten)".into()
                    )
                );
                Snapshot::default()
            }
        };
        let mut previous = previous;
        for c in &mut previous.crashes {
            c.previous_run = Some(true);
        }
        StateStore { dir: Some(dir.to_owned()), previous, writing: Mutex::new(()) }
    }

    /// The state directory, when persistence is on.
    pub fn dir(&self) -> Option<&Path> {
        self.dir.as_deref()
    }

    /// What earlier runs left.
    pub fn previous(&self) -> &Snapshot {
        &self.previous
    }

    /// Write `snapshot` (bounded first). Errors are logged: losing a state write must not fail
    /// the request that caused it.
    pub fn save(&self, mut snapshot: Snapshot) {
        let Some(dir) = &self.dir else { return };
        snapshot.version = FORMAT_VERSION;
        snapshot.bound();
        let _serial = self.writing.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = write_atomically(dir, STATE_FILE, &snapshot) {
            tracing::warn!(
                "cannot write the state file {}: {e}; the last change will not survive a \
                 restart",
                dir.join(STATE_FILE).display()
            );
        }
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    // A directory we cannot write is as good as none: find out now, not at the first crash.
    rustix::fs::access(dir, rustix::fs::Access::WRITE_OK | rustix::fs::Access::EXEC_OK)
        .map_err(std::io::Error::from)
}

/// Read a state file: `None` when there is none yet.
pub fn read_snapshot(file: &Path) -> Result<Option<Snapshot>, LoadError> {
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(LoadError::Io(e)),
    };
    let snapshot: Snapshot =
        serde_json::from_slice(&bytes).map_err(|e| LoadError::Corrupt(e.to_string()))?;
    if snapshot.version != FORMAT_VERSION {
        return Err(LoadError::Corrupt(format!(
            "format version {} where {FORMAT_VERSION} was expected",
            snapshot.version
        )));
    }
    Ok(Some(snapshot))
}

/// Move a corrupt file aside; the new name, or `None` when it could not be moved.
fn set_aside(file: &Path) -> Option<PathBuf> {
    let secs =
        SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let aside = file.with_file_name(format!("{STATE_FILE}.corrupt-{secs}"));
    std::fs::rename(file, &aside).ok().map(|()| aside)
}

/// Write `value` as JSON to `dir/name`: a temporary file, fsync, rename, fsync of the directory.
fn write_atomically<T: Serialize>(dir: &Path, name: &str, value: &T) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let tmp = dir.join(format!("{name}.tmp"));
    let bytes = serde_json::to_vec(value).map_err(std::io::Error::other)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&tmp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, dir.join(name))?;
    std::fs::File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn crash(module: &str, text_len: usize) -> CrashReport {
        CrashReport {
            module: module.into(),
            path: format!("/m/{module}.so"),
            signal: 11,
            signal_name: "SIGSEGV".into(),
            code: 1,
            code_name: "SEGV_MAPERR".into(),
            code_meaning: "address not mapped to object".into(),
            fault_addr: "0x0".into(),
            pc: "0x1".into(),
            pc_in_module: true,
            module_offset: None,
            pc_object: None,
            symbol: None,
            phase: "call".into(),
            thread_id: 1,
            time: 1.0,
            taint: None,
            text: "x".repeat(text_len),
            frames: None,
            called: None,
            probe_pid: None,
            abort_message: None,
            previous_run: None,
            timeout: None,
        }
    }

    #[test]
    fn state_dir_follows_the_argument_then_systemd_then_the_default() {
        let env = std::ffi::OsStr::new("/var/lib/kmodlike:/var/lib/other");
        assert_eq!(choose_state_dir(Some(Path::new("/s")), Some(env)), Path::new("/s"));
        assert_eq!(choose_state_dir(None, Some(env)), Path::new("/var/lib/kmodlike"));
        assert_eq!(
            choose_state_dir(None, Some(std::ffi::OsStr::new("/run/x"))),
            Path::new("/run/x")
        );
        assert_eq!(choose_state_dir(None, None), Path::new(DEFAULT_STATE_DIR));
        assert_eq!(
            choose_state_dir(None, Some(std::ffi::OsStr::new(""))),
            Path::new(DEFAULT_STATE_DIR)
        );
    }

    #[test]
    fn bound_keeps_the_newest_crashes_within_count_and_size() {
        let mut s = Snapshot {
            crashes: (0..MAX_CRASHES + 5).map(|i| crash(&format!("m{i}"), 10)).collect(),
            ..Snapshot::default()
        };
        s.bound();
        assert_eq!(s.crashes.len(), MAX_CRASHES);
        assert_eq!(s.crashes[0].module, "m0", "the newest (first) stay");

        let mut s = Snapshot {
            crashes: (0..100).map(|i| crash(&format!("m{i}"), 20_000)).collect(),
            ..Snapshot::default()
        };
        s.bound();
        let size = serde_json::to_vec(&s).unwrap().len();
        assert!(size <= MAX_BYTES, "{size} bytes");
        assert!(s.crashes.len() >= 40 && s.crashes.len() < 100, "{}", s.crashes.len());
        assert_eq!(s.crashes[0].module, "m0");
    }

    #[test]
    fn a_saved_state_is_read_back_marked_as_previous() {
        let dir = tempfile::tempdir().unwrap();
        let store = StateStore::open(dir.path());
        assert_eq!(store.previous(), &Snapshot::default());
        store.save(Snapshot {
            crashes: vec![crash("a", 1)],
            quarantined: vec![QuarantineRecord { module: "a".into(), crashes: 3 }],
            ..Snapshot::default()
        });
        assert!(!dir.path().join("state.json.tmp").exists());
        let again = StateStore::open(dir.path());
        assert_eq!(again.previous().crashes.len(), 1);
        assert_eq!(again.previous().crashes[0].previous_run, Some(true));
        assert_eq!(again.previous().quarantined[0].crashes, 3);
    }

    #[test]
    fn a_corrupt_file_is_kept_aside_and_the_state_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(STATE_FILE), b"{\"version\": 1, \"crashes\": [tru").unwrap();
        let store = StateStore::open(dir.path());
        assert_eq!(store.previous(), &Snapshot::default());
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert!(names.iter().any(|n| n.starts_with("state.json.corrupt-")), "{names:?}");
        assert!(!names.contains(&STATE_FILE.to_owned()), "{names:?}");
    }

    #[test]
    fn an_unusable_directory_turns_persistence_off() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain-file");
        std::fs::write(&file, b"").unwrap();
        let store = StateStore::open(&file.join("state"));
        assert!(store.dir().is_none());
        store.save(Snapshot::default()); // nothing to do, no panic
    }
}
