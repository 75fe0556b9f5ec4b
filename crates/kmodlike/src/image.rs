//! The open path, file to mapping: open the module file once, refuse anything but a regular
//! file, make its bytes stable, validate them, and give ld.so exactly those bytes.
//!
//! # How the bytes stay the ones that were validated
//!
//! The file is opened once (`O_RDONLY | O_CLOEXEC | O_NONBLOCK | O_NOCTTY`: a FIFO or a device
//! cannot block the open) and `fstat`ed; only a regular file goes on. Then one of two ways:
//!
//! - **A read lease** (`F_SETLEASE`, `F_RDLCK`) on that descriptor, held for as long as the
//!   module is loaded. While it is held the kernel makes every writer (`open` for writing,
//!   `truncate`) wait for us, for at most `/proc/sys/fs/lease-break-time` seconds (45 by
//!   default). No signal reaches the host: lease breaks are sent to nobody (`F_SETOWN 0`, and
//!   `F_SETSIG` is a signal whose default action is to ignore it for the instant before that).
//!   A lease costs three `fcntl` calls. The kernel grants it only to the file's owner or to a
//!   process with `CAP_LEASE`, and only when nobody has the file open for writing.
//! - **A sealed private image** otherwise (and always for a file whose earlier instance crashed
//!   and is still mapped, since ld.so would hand that instance back): the bytes are copied into
//!   a `memfd` sealed against every change (`F_SEAL_WRITE | F_SEAL_SHRINK | F_SEAL_GROW |
//!   F_SEAL_SEAL`), or, where executable memfds are forbidden, an unnamed `O_TMPFILE` file.
//!   The file is `fstat`ed again after the copy; a file that changed meanwhile is copied again
//!   (three tries). This costs a copy of the file and about 20 µs.
//!
//! Either way ld.so is given `/proc/self/fd/<n>` of the descriptor we hold, never the path: a
//! file renamed over the path during the load is not what gets mapped. The descriptor stays
//! open while the module is loaded, which also keeps the name unique among the objects ld.so
//! knows (ld.so matches objects by name first): every loaded module holds one descriptor.
//!
//! # The validation cache
//!
//! Reading and validating a leased file is skipped when the same file (device, inode, size,
//! modification and change times, to the nanosecond) was validated before. A file whose change
//! time is within [`RACY`] of now is never cached: file system timestamps are coarse, and a
//! rewrite within the same tick would keep its times.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use rustix::fs::{FileType, Mode, OFlags, SealFlags};

use crate::error::{Error, Result};
use crate::facts::FileFacts;
use crate::interface::symbols;
use crate::modinfo::ModInfo;

/// A device and inode: what makes two paths the same module file.
pub(crate) type FileKey = (u64, u64);

/// The largest module file accepted.
pub const MAX_MODULE_SIZE: u64 = 1 << 30;

/// A file changed this recently is not cached (see the module docs).
const RACY: Duration = Duration::from_secs(2);

/// Validated files remembered at most (the cache is emptied when it fills).
const CACHE_ENTRIES: usize = 1024;

/// Read the `.modinfo` metadata of the module file at `path` without loading it.
///
/// A file with no `.modinfo` section gives an empty [`ModInfo`]. A file that is not ELF gives
/// the same precise error a load would (`NotElf`, `EmptyFile`, `Truncated`, ...).
///
/// The file is opened without blocking and must be a regular file (a FIFO or a device is
/// refused at once, naming what it is), and it is validated as a load would validate it (a
/// malformed file is refused, naming the fault); nothing of it runs.
pub fn modinfo(path: &Path) -> Result<ModInfo> {
    let file = ModuleFile::open(path, &path.to_string_lossy())?;
    let (_image, checked) = file.into_image(false)?;
    Ok(checked.modinfo.clone())
}

/// A check of a file's stable bytes, run before they are mapped (see
/// [`ModuleFile::into_image_inspected`]).
pub(crate) type Inspect<'a> = &'a mut dyn FnMut(&[u8]) -> Result<()>;

/// A module file, opened once and known to be a regular file.
pub(crate) struct ModuleFile {
    path: PathBuf,
    fd: OwnedFd,
    stat: rustix::fs::Stat,
}

/// What kind of file a mode describes, for the refusal message.
fn kind_name(mode: u32) -> &'static str {
    match FileType::from_raw_mode(mode) {
        FileType::Fifo => "a FIFO (named pipe)",
        FileType::CharacterDevice => "a character device",
        FileType::BlockDevice => "a block device",
        FileType::Directory => "a directory",
        FileType::Socket => "a socket",
        FileType::Symlink => "a symbolic link",
        FileType::RegularFile => "a regular file",
        FileType::Unknown => "a file of unknown type",
    }
}

impl ModuleFile {
    /// Open `path` without blocking and refuse anything but a regular file of sane size.
    /// `spec` is what the caller asked for, for a not-found error.
    pub(crate) fn open(path: &Path, spec: &str) -> Result<ModuleFile> {
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let fd = rustix::fs::open(path, flags, Mode::empty()).map_err(|e| {
            if e == rustix::io::Errno::NOENT {
                Error::NotFound { spec: spec.to_owned(), tried: vec![path.to_owned()] }
            } else {
                Error::Unreadable { path: path.to_owned(), source: e.into() }
            }
        })?;
        let stat = rustix::fs::fstat(&fd)
            .map_err(|e| Error::Unreadable { path: path.to_owned(), source: e.into() })?;
        ModuleFile::from_opened(path, fd, stat)
    }

    /// [`open`](Self::open) through the path-trust walk: the file is opened from the checked
    /// directory above it, and the first rule the path breaks is returned with it (see
    /// `trust/paths.rs`).
    pub(crate) fn open_walked(
        path: &Path,
        spec: &str,
    ) -> Result<(ModuleFile, Option<crate::trust::paths::Untrusted>)> {
        use crate::trust::paths::{open_checked, WalkError};
        let flags = OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY;
        let walked = open_checked(path, flags).map_err(|e| match e {
            WalkError::NotFound => {
                Error::NotFound { spec: spec.to_owned(), tried: vec![path.to_owned()] }
            }
            WalkError::Io(at, e) => Error::Unreadable {
                path: path.to_owned(),
                source: std::io::Error::new(e.kind(), format!("{}: {e}", at.display())),
            },
        })?;
        let file = ModuleFile::from_opened(path, walked.fd, walked.stat)?;
        Ok((file, walked.untrusted))
    }

    /// Refuse anything but a regular file of sane size.
    fn from_opened(path: &Path, fd: OwnedFd, stat: rustix::fs::Stat) -> Result<ModuleFile> {
        if FileType::from_raw_mode(stat.st_mode) != FileType::RegularFile {
            return Err(Error::NotRegularFile {
                path: path.to_owned(),
                kind: kind_name(stat.st_mode),
            });
        }
        if stat.st_size as u64 > MAX_MODULE_SIZE {
            return Err(Error::TooLarge {
                path: path.to_owned(),
                size: stat.st_size as u64,
                limit: MAX_MODULE_SIZE,
            });
        }
        Ok(ModuleFile { path: path.to_owned(), fd, stat })
    }

    /// The file's device and inode.
    pub(crate) fn key(&self) -> FileKey {
        (self.stat.st_dev, self.stat.st_ino)
    }

    /// The file's path.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    /// Make the bytes stable (a lease, or a sealed private image when `fresh` or when no lease
    /// can be had), validate them, and return the image ld.so will map with their facts.
    ///
    /// Validation reads the stable bytes through a read-only mapping: only the pages the checks
    /// touch are read, and a large sparse file costs nothing.
    pub(crate) fn into_image(self, fresh: bool) -> Result<(Image, Arc<Checked>)> {
        self.into_image_inspected(fresh, None)
    }

    /// [`into_image`](Self::into_image), and `inspect` the stable bytes (the very bytes ld.so
    /// will map) once they are validated: the trust checks run here, before any code of the
    /// file can run.
    pub(crate) fn into_image_inspected(
        self,
        fresh: bool,
        mut inspect: Option<Inspect<'_>>,
    ) -> Result<(Image, Arc<Checked>)> {
        let unreadable =
            |e: std::io::Error| Error::Unreadable { path: self.path.clone(), source: e };
        if !fresh && take_lease(self.fd.as_fd()) {
            let known = cached(&self.stat);
            let facts = match (known, inspect.as_mut()) {
                (Some(facts), None) => facts,
                (known, inspect) => {
                    // Writers wait while the lease is held: the mapping cannot shrink under us.
                    let map = Mapping::of(self.fd.as_fd(), self.stat.st_size as u64)
                        .map_err(unreadable)?;
                    let facts = match known {
                        Some(facts) => facts,
                        None => {
                            let facts = validate(&self.path, &map)?;
                            remember(&self.stat, &facts);
                            facts
                        }
                    };
                    if let Some(inspect) = inspect {
                        inspect(&map)?;
                    }
                    facts
                }
            };
            let image = Image::new(self.fd, ImageKind::Leased).map_err(unreadable)?;
            return Ok((image, facts));
        }
        let mut seen = self.stat;
        for _ in 0..3 {
            let image = private_image(&self.path, self.fd.as_fd(), seen.st_size as u64)?;
            let now = rustix::fs::fstat(&self.fd).map_err(|e| unreadable(e.into()))?;
            if !same_version(&seen, &now) {
                // Written to while it was copied: copy it again.
                seen = now;
                continue;
            }
            let map = Mapping::of(image.fd(), seen.st_size as u64).map_err(unreadable)?;
            let facts = validate(&self.path, &map)?;
            if let Some(inspect) = inspect.as_mut() {
                inspect(&map)?;
            }
            drop(map);
            return Ok((image, facts));
        }
        Err(unreadable(std::io::Error::other(
            "the file kept changing while it was read (it is being written); try again once the \
             writer is done, and replace module files by rename (install, mv) rather than in place",
        )))
    }
}

/// A read-only private mapping of a file's first `len` bytes.
struct Mapping {
    ptr: *mut std::ffi::c_void,
    len: usize,
}

impl Mapping {
    /// Map `len` bytes of `fd`. The caller makes sure the file cannot shrink below `len` while
    /// the mapping is read (a lease, or seals): reading past the end of a file faults.
    fn of(fd: BorrowedFd<'_>, len: u64) -> std::io::Result<Mapping> {
        use rustix::mm::{MapFlags, ProtFlags};
        if len == 0 {
            return Ok(Mapping { ptr: std::ptr::null_mut(), len: 0 });
        }
        // SAFETY: a fresh mapping chosen by the kernel (no fixed address): nothing of ours is
        // replaced. It is only read, as a byte slice, while this value lives.
        let ptr = unsafe {
            rustix::mm::mmap(
                std::ptr::null_mut(),
                len as usize,
                ProtFlags::READ,
                MapFlags::PRIVATE,
                fd,
                0,
            )
        }?;
        Ok(Mapping { ptr, len: len as usize })
    }
}

impl std::ops::Deref for Mapping {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        if self.len == 0 {
            return &[];
        }
        // SAFETY: `len` readable bytes are mapped at `ptr` for as long as `self` lives, and the
        // file behind them cannot shrink meanwhile (see `of`).
        unsafe { std::slice::from_raw_parts(self.ptr as *const u8, self.len) }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        if self.len != 0 {
            // SAFETY: unmaps exactly the mapping made in `of`, which no slice outlives.
            let _ = unsafe { rustix::mm::munmap(self.ptr, self.len) };
        }
    }
}

/// Check the bytes: the structure ld.so will trust, then the facts the loader needs.
fn validate(path: &Path, data: &[u8]) -> Result<Arc<Checked>> {
    crate::elf::check_before_dlopen(path, data)?;
    match FileFacts::read(data) {
        Some(facts) => Ok(Arc::new(Checked::from(&facts))),
        None => Err(crate::elf::classify_bytes(path, data, "not a readable ELF file".into())),
    }
}

/// What the loader keeps of a validated file: its facts, with the exports it asks about
/// answered (so the bytes need not be kept, and a cached verdict needs no read).
#[derive(Debug)]
pub(crate) struct Checked {
    pub modinfo: ModInfo,
    /// `(p_vaddr, p_memsz, executable)` of every `PT_LOAD` segment.
    pub loads: Vec<(u64, u64, bool)>,
    /// `dlclose` will not unmap it.
    pub nodelete: bool,
    /// It may start threads (see [`FileFacts::may_start_threads`]).
    pub may_start_threads: bool,
    /// `(r_offset, import)` of the GOT slots of the module's own imports that the loader
    /// redirects to the guard's interposers (`import` indexes
    /// [`INTERPOSED_IMPORTS`](crate::facts::INTERPOSED_IMPORTS)). See `loader/interpose.rs`.
    pub interposed_slots: Vec<(u64, u8)>,
    /// `(p_vaddr, p_memsz)` of `PT_GNU_RELRO`, read-only once ld.so has relocated the module.
    pub relro: Option<(u64, u64)>,
    /// The interface names (required exports, `mod_hello`, `module_can_unload`) it exports,
    /// with their offset from the load address when the file alone says where they are.
    exported: Vec<(&'static str, Option<u64>)>,
}

impl Checked {
    /// Whether the file exports `name`, one of the interface's names.
    pub(crate) fn exports(&self, name: &str) -> bool {
        self.exported.iter().any(|(n, _)| *n == name)
    }

    /// Where the interface export `name` is, as an offset from the load address, when the file
    /// alone says (see [`FileFacts::export_offset`]).
    pub(crate) fn offset_of(&self, name: &str) -> Option<u64> {
        self.exported.iter().find(|(n, _)| *n == name)?.1
    }
}

impl From<&FileFacts<'_>> for Checked {
    fn from(f: &FileFacts<'_>) -> Checked {
        let names = symbols::REQUIRED.iter().chain([&symbols::HELLO, &symbols::CAN_UNLOAD]);
        Checked {
            modinfo: f.modinfo.clone(),
            loads: f.loads.clone(),
            nodelete: f.nodelete,
            may_start_threads: f.may_start_threads,
            interposed_slots: f.interposed_slots.clone(),
            relro: f.relro,
            exported: names
                .copied()
                .filter(|n| f.exports(n))
                .map(|n| (n, f.export_offset(n)))
                .collect(),
        }
    }
}

#[cfg(test)]
fn read_exact_size(fd: BorrowedFd<'_>, size: u64) -> std::io::Result<Vec<u8>> {
    let mut data = vec![0u8; size as usize];
    let mut done = 0;
    while done < data.len() {
        match rustix::io::pread(fd, &mut data[done..], done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    data.truncate(done);
    Ok(data)
}

fn same_version(a: &rustix::fs::Stat, b: &rustix::fs::Stat) -> bool {
    (a.st_size, a.st_mtime, a.st_mtime_nsec, a.st_ctime, a.st_ctime_nsec)
        == (b.st_size, b.st_mtime, b.st_mtime_nsec, b.st_ctime, b.st_ctime_nsec)
}

/// `fcntl`'s F_SETSIG (Linux `<fcntl.h>`; the libc crate does not name it).
const F_SETSIG: libc::c_int = 10;

/// Take a read lease on `fd`, with lease breaks signalled to nobody. False when the kernel
/// refuses it (not the owner and no `CAP_LEASE`, a writer has the file open, the file system
/// has no leases).
fn take_lease(fd: BorrowedFd<'_>) -> bool {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on a descriptor we own, with integer arguments. F_SETSIG first: if a
    // writer opens the file between the lease and F_SETOWN below, the kernel sends this
    // signal, whose default action is to ignore it, instead of SIGIO, which would end the
    // process.
    if unsafe { libc::fcntl(raw, F_SETSIG, libc::SIGURG) } != 0 {
        return false;
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(raw, libc::F_SETLEASE, libc::F_RDLCK) } != 0 {
        return false;
    }
    // SAFETY: as above. Taking the lease made this process the owner of the descriptor's
    // notifications; owner 0 means a lease break signals nobody.
    unsafe { libc::fcntl(raw, libc::F_SETOWN, 0) };
    true
}

type CacheKey = (u64, u64, i64, i64, u64, i64, u64);

// The nanosecond fields are u64 on some targets and i64 on others.
#[allow(clippy::unnecessary_cast)]
fn cache_key(st: &rustix::fs::Stat) -> CacheKey {
    (
        st.st_dev,
        st.st_ino,
        st.st_size,
        st.st_mtime,
        st.st_mtime_nsec as u64,
        st.st_ctime,
        st.st_ctime_nsec as u64,
    )
}

static CACHE: Mutex<BTreeMap<CacheKey, Arc<Checked>>> = Mutex::new(BTreeMap::new());

fn cached(st: &rustix::fs::Stat) -> Option<Arc<Checked>> {
    CACHE.lock().unwrap_or_else(|e| e.into_inner()).get(&cache_key(st)).cloned()
}

fn remember(st: &rustix::fs::Stat, facts: &Arc<Checked>) {
    let changed = SystemTime::UNIX_EPOCH
        + Duration::new(st.st_ctime.max(0) as u64, (st.st_ctime_nsec as u32).min(999_999_999));
    let settled = SystemTime::now().duration_since(changed).is_ok_and(|age| age > RACY);
    if !settled {
        return;
    }
    let mut cache = CACHE.lock().unwrap_or_else(|e| e.into_inner());
    if cache.len() >= CACHE_ENTRIES {
        cache.clear();
    }
    cache.insert(cache_key(st), facts.clone());
}

/// How an image's bytes are kept stable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ImageKind {
    /// The module file itself, under a read lease.
    Leased,
    /// A sealed memfd copy.
    Sealed,
    /// An unnamed temporary file (where executable memfds are forbidden).
    TempFile,
}

/// The bytes ld.so maps, held open for the module's life.
pub(crate) struct Image {
    fd: OwnedFd,
    /// `/proc/self/fd/<n>`: the name ld.so is given and knows the object by.
    name: CString,
    kind: ImageKind,
}

impl std::fmt::Debug for Image {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Image").field("name", &self.name).field("kind", &self.kind).finish()
    }
}

/// Descriptor numbers whose `/proc/self/fd/<n>` name ld.so still knows for an object we no
/// longer hold a descriptor for (crashed code kept mapped, a `NODELETE` object). ld.so matches
/// objects by name first, so no new image may be given such a name.
static RESERVED_NAMES: Mutex<Vec<i32>> = Mutex::new(Vec::new());

/// `fd`, moved to a number whose name ld.so does not know yet.
fn avoid_reserved(fd: OwnedFd) -> std::io::Result<OwnedFd> {
    let reserved = RESERVED_NAMES.lock().unwrap_or_else(|e| e.into_inner());
    let mut held = vec![fd];
    while reserved.contains(&held.last().expect("never empty").as_raw_fd()) {
        let last = held.last().expect("never empty");
        let next = rustix::io::fcntl_dupfd_cloexec(last, last.as_raw_fd() + 1)?;
        held.push(next);
    }
    Ok(held.pop().expect("never empty"))
}

impl Image {
    fn new(fd: OwnedFd, kind: ImageKind) -> std::io::Result<Image> {
        let fd = avoid_reserved(fd)?;
        let name = CString::new(format!("/proc/self/fd/{}", fd.as_raw_fd()))
            .expect("a number has no NUL byte");
        Ok(Image { fd, name, kind })
    }

    /// The name ld.so knows this image by.
    pub(crate) fn name(&self) -> &std::ffi::CStr {
        &self.name
    }

    /// Why `dlopen` refused these bytes, in the most precise words their header supports.
    pub(crate) fn classify_failure(&self, path: &Path, dlerror: String) -> Error {
        let mapped = rustix::fs::fstat(&self.fd)
            .map_err(std::io::Error::from)
            .and_then(|st| Mapping::of(self.fd.as_fd(), st.st_size as u64));
        match mapped {
            Ok(map) => crate::elf::classify_bytes(path, &map, dlerror),
            Err(_) => Error::LoadFailed { path: path.to_owned(), dlerror },
        }
    }

    /// The descriptor of the bytes (for the probe child).
    pub(crate) fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// How the bytes are kept stable.
    #[cfg(test)]
    pub(crate) fn kind(&self) -> ImageKind {
        self.kind
    }

    /// ld.so keeps the object for good (its code stays mapped after a crash): close the
    /// descriptor, which also lets writers at the file again (a crashed module must not block
    /// an operator replacing it), and reserve its name, which ld.so still knows the object by.
    pub(crate) fn retain_forever(self) {
        let mut reserved = RESERVED_NAMES.lock().unwrap_or_else(|e| e.into_inner());
        reserved.push(self.fd.as_raw_fd());
        drop(self.fd);
    }

    /// After `dlclose`: close the descriptor, unless ld.so still holds the object (a
    /// `NODELETE` object, or one another object depends on), whose name must stay reserved.
    /// `base` is an address inside the object's first segment. True when ld.so let go of it.
    pub(crate) fn release_after_dlclose(self, base: u64) -> bool {
        if base != 0 && still_loaded_as(base, &self.name) {
            self.retain_forever();
            return false;
        }
        true
    }
}

/// Whether the object holding `addr` is the one ld.so knows as `name`.
fn still_loaded_as(addr: u64, name: &std::ffi::CStr) -> bool {
    let mut info = std::mem::MaybeUninit::<libc::Dl_info>::zeroed();
    // SAFETY: dladdr only reads ld.so's tables and fills `info`.
    let found = unsafe { libc::dladdr(addr as *const libc::c_void, info.as_mut_ptr()) } != 0;
    if !found {
        return false;
    }
    // SAFETY: filled by dladdr, which returned non-zero.
    let info = unsafe { info.assume_init() };
    // SAFETY: when non-NULL, a NUL-terminated name owned by ld.so.
    !info.dli_fname.is_null() && unsafe { std::ffi::CStr::from_ptr(info.dli_fname) } == name
}

/// Copy the first `len` bytes of `src` into a sealed memfd, or, where executable memfds are
/// forbidden, an unnamed temporary file in `$KMODLIKE_COPY_DIR`, `/dev/shm` or the temporary
/// directory.
fn private_image(path: &Path, src: BorrowedFd<'_>, len: u64) -> Result<Image> {
    use rustix::fs::MemfdFlags;
    let label = path.file_name().map_or_else(|| "module".into(), |n| n.to_string_lossy());
    let label = format!("kmodlike:{label}");
    // MFD_EXEC (Linux 6.3) asks for an executable memfd where the default is no longer one;
    // older kernels do not know the flag and refuse it, and make executable memfds anyway.
    const MFD_EXEC: u32 = 0x10;
    let base = MemfdFlags::CLOEXEC | MemfdFlags::ALLOW_SEALING;
    let memfd = rustix::fs::memfd_create(&label, base | MemfdFlags::from_bits_retain(MFD_EXEC))
        .or_else(|_| rustix::fs::memfd_create(&label, base));
    let mut failures = Vec::new();
    match memfd {
        Ok(fd) => match copy_into(src, fd.as_fd(), len).and_then(|()| {
            let seals = SealFlags::WRITE | SealFlags::SHRINK | SealFlags::GROW | SealFlags::SEAL;
            rustix::fs::fcntl_add_seals(&fd, seals).map_err(Into::into)
        }) {
            Ok(()) => match Image::new(fd, ImageKind::Sealed) {
                Ok(image) => return Ok(image),
                Err(e) => failures.push(format!("memfd: {e}")),
            },
            Err(e) => failures.push(format!("memfd: {e}")),
        },
        Err(e) => failures.push(format!("memfd_create: {e}")),
    }
    for dir in temp_dirs() {
        let flags = OFlags::TMPFILE | OFlags::RDWR | OFlags::CLOEXEC;
        match rustix::fs::open(&dir, flags, Mode::from_raw_mode(0o700))
            .map_err(std::io::Error::from)
            .and_then(|fd| copy_into(src, fd.as_fd(), len).map(|()| fd))
            .and_then(|fd| Image::new(fd, ImageKind::TempFile))
        {
            Ok(image) => return Ok(image),
            Err(e) => failures.push(format!("{}: {e}", dir.display())),
        }
    }
    Err(Error::LoadFailed {
        path: path.to_owned(),
        dlerror: format!(
            "cannot make the private image of the module ({}); set KMODLIKE_COPY_DIR to a \
             writable directory on an executable file system",
            failures.join("; ")
        ),
    })
}

/// Copy the first `len` bytes of `src` (from its start) to `dst` (at its current offset), in
/// the kernel when it can. Fewer bytes when `src` is shorter (validation then says so).
fn copy_into(src: BorrowedFd<'_>, dst: BorrowedFd<'_>, len: u64) -> std::io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let mut at = done;
        match rustix::fs::copy_file_range(src, Some(&mut at), dst, None, (len - done) as usize) {
            Ok(0) => return Ok(()),
            Ok(n) => done += n as u64,
            Err(rustix::io::Errno::INTR) => continue,
            // Not between these file systems (or not at all): copy through a buffer.
            Err(_) => break,
        }
    }
    let mut buf = vec![0u8; 64 * 1024];
    while done < len {
        let want = buf.len().min((len - done) as usize);
        let n = match rustix::io::pread(src, &mut buf[..want], done) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        write_all(dst, &buf[..n])?;
        done += n as u64;
    }
    Ok(())
}

fn temp_dirs() -> Vec<PathBuf> {
    if let Some(dir) = std::env::var_os("KMODLIKE_COPY_DIR") {
        return vec![PathBuf::from(dir)];
    }
    vec![PathBuf::from("/dev/shm"), std::env::temp_dir()]
}

fn write_all(fd: BorrowedFd<'_>, mut data: &[u8]) -> std::io::Result<()> {
    while !data.is_empty() {
        match rustix::io::write(fd, data) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(n) => data = &data[n..],
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fifo_is_refused_at_once_naming_its_kind() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("mod.so");
        rustix::fs::mknodat(rustix::fs::CWD, &fifo, FileType::Fifo, Mode::from_raw_mode(0o600), 0)
            .unwrap();
        let e = ModuleFile::open(&fifo, "mod.so").err().expect("a FIFO is refused");
        assert!(matches!(e, Error::NotRegularFile { .. }), "{e}");
        assert!(e.to_string().contains("FIFO"), "{e}");
    }

    #[test]
    fn devices_and_directories_are_refused_naming_their_kind() {
        for (path, kind) in [("/dev/zero", "character device"), ("/tmp", "directory")] {
            let e = ModuleFile::open(Path::new(path), path).err().expect("refused");
            assert!(e.to_string().contains(kind), "{path}: {e}");
        }
    }

    #[test]
    fn a_private_image_is_sealed_and_holds_the_bytes() {
        let data = b"\x7fELF not really".to_vec();
        let mut src = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut src, &data).unwrap();
        let image = private_image(Path::new("x.so"), src.as_fd(), data.len() as u64).unwrap();
        assert_eq!(read_exact_size(image.fd(), data.len() as u64).unwrap(), data);
        if image.kind() == ImageKind::Sealed {
            assert!(rustix::io::write(image.fd(), b"x").is_err(), "sealed against writes");
        }
        assert!(image.name().to_str().unwrap().starts_with("/proc/self/fd/"));
    }
}
