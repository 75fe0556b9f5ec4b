//! Every module instance in the process, for the guard's callbacks (host `log` and `get_time`
//! calls, crashes on module threads), which know only a module id; and the files whose crashed
//! code stays mapped.

use std::collections::{BTreeMap, BTreeSet};
use std::ffi::{c_char, CStr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};

use crate::crash::Phase;
use crate::guard::RawCrash;
use crate::interface::ModuleInitArgs;
use crate::module::{FileKey, HostCallbacks, Module};

use super::LoaderShared;

/// Weak links to a module instance and to its loader.
type ModuleLink = (Weak<Module>, Weak<LoaderShared>);

static MODULES: Mutex<BTreeMap<u64, ModuleLink>> = Mutex::new(BTreeMap::new());

/// Files with a crashed instance that ld.so may still hold, and the ids of those instances:
/// until it is reclaimed (its calls drain, then `dlclose`), or for good when its code is kept
/// mapped (after a crash, or under a thread that outlived its module). ld.so matches a file it
/// holds by inode, so loading one of these files again must map a private image. Bounded: an
/// id leaves when its instance is unmapped, and instances kept for good are bounded by
/// [`KEPT_INSTANCES`] and the loaders' `max_kept_mapped`.
static KEPT_MAPPED: Mutex<BTreeMap<FileKey, BTreeSet<u64>>> = Mutex::new(BTreeMap::new());

/// Instances whose code is kept mapped for good, in the whole process.
static KEPT_INSTANCES: AtomicUsize = AtomicUsize::new(0);

pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(crate) fn insert(module: &Arc<Module>, loader: Weak<LoaderShared>) {
    lock(&MODULES).insert(module.id, (Arc::downgrade(module), loader));
}

pub(crate) fn remove(id: u64) {
    lock(&MODULES).remove(&id);
}

pub(crate) fn lookup(id: u64) -> Option<(Arc<Module>, Option<Arc<LoaderShared>>)> {
    let table = lock(&MODULES);
    let (m, l) = table.get(&id)?;
    Some((m.upgrade()?, l.upgrade()))
}

/// The file name of the module ld.so knows as `object` (its `/proc/self/fd/<n>` image name),
/// for crash reports that name the object a PC lies in.
pub(crate) fn file_of_object(object: &str) -> Option<String> {
    let table = lock(&MODULES);
    table.values().filter_map(|(m, _)| m.upgrade()).find_map(|m| {
        let image = lock(&m.image);
        let name = image.as_ref()?.name().to_str().ok()?;
        (name == object).then(|| m.path.file_name().map(|f| f.to_string_lossy().into_owned()))?
    })
}

pub(crate) fn mark_kept_mapped(key: FileKey, id: u64) {
    lock(&KEPT_MAPPED).entry(key).or_default().insert(id);
}

/// Instance `id` of the file is unmapped and ld.so no longer holds it.
pub(crate) fn unmark_kept_mapped(key: FileKey, id: u64) {
    let mut kept = lock(&KEPT_MAPPED);
    if let Some(ids) = kept.get_mut(&key) {
        ids.remove(&id);
        if ids.is_empty() {
            kept.remove(&key);
        }
    }
}

pub(crate) fn is_kept_mapped(key: FileKey) -> bool {
    lock(&KEPT_MAPPED).contains_key(&key)
}

/// One more instance's code is kept mapped for good.
pub(crate) fn count_kept_instance() {
    KEPT_INSTANCES.fetch_add(1, Ordering::Relaxed);
}

/// Instances whose code is kept mapped for good in this process.
pub(crate) fn kept_instances() -> usize {
    KEPT_INSTANCES.load(Ordering::Relaxed)
}

pub(crate) fn host_log(id: Option<u64>, level: i32, msg: *const c_char) {
    if msg.is_null() {
        return;
    }
    // SAFETY: the module passed a NUL-terminated string, as the interface requires.
    let text = unsafe { CStr::from_ptr(msg) };
    match id.and_then(lookup) {
        Some((m, _)) => match &m.host {
            HostCallbacks::Loader(Some(sink)) => sink(&m.name, level, &text.to_string_lossy()),
            HostCallbacks::Raw(ModuleInitArgs { log: Some(log), .. }) => {
                // SAFETY: the host gave us this callback for exactly this use.
                unsafe { log(level, msg) }
            }
            _ => {}
        },
        None => eprintln!("kmodlike: log from an unidentified module: {}", text.to_string_lossy()),
    }
}

pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

pub(crate) fn host_get_time(id: Option<u64>) -> u64 {
    if let Some((m, _)) = id.and_then(lookup) {
        if let HostCallbacks::Raw(ModuleInitArgs { get_time: Some(get_time), .. }) = &m.host {
            // SAFETY: the host gave us this callback for exactly this use.
            return unsafe { get_time() };
        }
    }
    monotonic_ns()
}

/// The guard's service thread reports a crash on a thread the module started.
pub(crate) fn on_thread_crash(raw: RawCrash) {
    let Some((module, Some(loader))) = lookup(raw.module_id) else {
        eprintln!("kmodlike: a module thread crashed with signal {} (module unknown)", raw.signo);
        return;
    };
    loader.record_crash(&module, &raw, Phase::Thread);
}
