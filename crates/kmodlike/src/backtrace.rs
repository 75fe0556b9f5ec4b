//! Backtraces of crashes the guard recovered: the handler's copy of the faulting stack
//! (`guard/stack.c`, `kml_copy_stack`) unwound with `framehop` over the `.eh_frame` of every
//! loaded object, and each frame named from the object's own symbol tables. Everything here
//! runs after the jump, in normal context.
//!
//! - **Objects** come from `dl_iterate_phdr`: their load bias, the extent of their `PT_LOAD`
//!   segments, their GNU build id (the `PT_NOTE` segments, read in memory) and their unwind
//!   tables (`PT_GNU_EH_FRAME` gives `.eh_frame_hdr`, whose `eh_frame_ptr` gives `.eh_frame`;
//!   its bytes run to the end of the segment that holds it). The bytes are copied while
//!   `dl_iterate_phdr` holds ld.so's lock, so an object unloaded meanwhile is never read.
//! - **Unwinding** uses the DWARF CFI. Where an object has none, framehop falls back to the
//!   frame pointer: the frame it finds is marked `guessed`.
//! - **Names** come from the file on disk (`.symtab`, which holds static functions, then
//!   `.dynsym`), checked against the loaded object's build id, else from `dladdr`. A name is
//!   given only when the address lies inside the symbol (its size): a stripped library's
//!   internal function is left unnamed rather than named after its exported neighbour.
//!   Rust names (`rustc-demangle`) and C++ names (`cpp_demangle`) are demangled.
//! - **Caches**, per object (path and build id): the unwind tables and the symbols, so a crash
//!   does not parse libc again.
//! - **Confined** (an isolated module's process under the seccomp allow-list, which forbids
//!   opening files): [`read_files_now`] reads every loaded object's symbols and resolves their
//!   paths before the filter goes on; from then on names come from those caches only.

use std::collections::HashMap;
use std::ffi::CStr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::crash::Frame;

/// The registers the unwinder starts from, and the stack copy.
pub(crate) struct Fault<'a> {
    pub pc: u64,
    pub sp: u64,
    pub fp: u64,
    #[cfg_attr(target_arch = "x86_64", allow(dead_code))]
    pub lr: u64,
    /// The bytes of the stack from `sp` up.
    pub stack: &'a [u8],
}

/// The crashed module, to mark its frames and name its file.
pub(crate) struct ModuleView<'a> {
    pub path: &'a Path,
    pub contains: &'a dyn Fn(u64) -> bool,
}

/// The most frames a backtrace holds.
const MAX_FRAMES: usize = 128;

/// A symbol: address (as in the file), size, name (demangled).
#[derive(Debug)]
struct Sym {
    addr: u64,
    size: u64,
    name: String,
}

/// What a file on disk says: its function symbols, sorted by address.
#[derive(Debug, Default)]
struct Symbols {
    syms: Vec<Sym>,
}

impl Symbols {
    /// The symbol holding `svma` (inside its size; a symbol without a size holds everything up
    /// to the next one).
    fn find(&self, svma: u64) -> Option<&Sym> {
        let i = self.syms.partition_point(|s| s.addr <= svma);
        let s = self.syms.get(i.checked_sub(1)?)?;
        if s.size == 0 || svma < s.addr + s.size {
            return Some(s);
        }
        None
    }
}

/// Unwind tables copied from a loaded object, addresses as in the file (SVMA).
#[derive(Clone)]
struct Unwind {
    hdr_svma: std::ops::Range<u64>,
    hdr: Arc<[u8]>,
    eh_svma: std::ops::Range<u64>,
    eh: Arc<[u8]>,
}

/// A loaded object.
struct Object {
    /// ld.so's name for it (empty for the main program).
    name: String,
    bias: u64,
    /// Extent of its `PT_LOAD` segments, in memory.
    start: u64,
    end: u64,
    build_id: Option<String>,
    unwind: Option<Unwind>,
}

type Key = (String, Option<String>);

/// Entries each cache holds at most (then it starts again: libc is parsed again once).
const CACHE_ENTRIES: usize = 64;

static UNWIND_CACHE: Mutex<Option<HashMap<Key, Option<Unwind>>>> = Mutex::new(None);
type SymbolCache = HashMap<(PathBuf, Option<String>), Arc<Symbols>>;
static SYMBOL_CACHE: Mutex<Option<SymbolCache>> = Mutex::new(None);

/// Set by [`read_files_now`]: no file is opened or link read any more.
static CONFINED: AtomicBool = AtomicBool::new(false);
/// The file behind each object name (`""` for the main program), read before confinement.
static LINKS: Mutex<Option<HashMap<String, Option<PathBuf>>>> = Mutex::new(None);

/// Read now what naming frames needs from files (each loaded object's path and symbols), and
/// from then on never open a file or read a link again: this process is about to be confined by
/// a seccomp filter that forbids both (`isolated::seccomp`). Objects loaded later (there are
/// none in a confined child: no `openat`) are named through `dladdr`.
pub(crate) fn read_files_now() {
    let mut links = HashMap::new();
    for o in objects() {
        let path = file_of(&o.name);
        if let Some(p) = &path {
            // The module's own image is loaded from `/proc/self/fd/N`: read through that name.
            let read_as = if o.name.starts_with("/proc/self/fd/") { Path::new(&o.name) } else { p };
            if let Some(syms) = symbols_of(read_as, &o.build_id) {
                let key = (p.clone(), o.build_id.clone());
                lock(&SYMBOL_CACHE).get_or_insert_with(HashMap::new).insert(key, syms);
            }
        }
        links.insert(o.name.clone(), path);
    }
    *lock(&LINKS) = Some(links);
    CONFINED.store(true, Ordering::Release);
}

/// The file an object name stands for (see `path_of`), from the cache once confined.
fn file_of(name: &str) -> Option<PathBuf> {
    if CONFINED.load(Ordering::Acquire) {
        return lock(&LINKS).as_ref()?.get(name).cloned().flatten();
    }
    if name.is_empty() {
        return std::fs::read_link("/proc/self/exe").ok();
    }
    if name.starts_with("/proc/self/fd/") {
        return std::fs::read_link(name).ok();
    }
    Some(PathBuf::from(name))
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Copy `len` bytes of this process's memory at `addr`, or `None` if any is unmapped.
fn read_memory(addr: u64, len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    let local = libc::iovec { iov_base: out.as_mut_ptr().cast(), iov_len: len };
    let remote = libc::iovec { iov_base: addr as *mut libc::c_void, iov_len: len };
    // SAFETY: process_vm_readv on our own pid copies into `out` (len bytes, writable) and
    // reports an error for unmapped memory instead of faulting.
    let got = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    (got == len as isize).then_some(out)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The GNU build id in a note segment's bytes.
fn build_id_in_notes(notes: &[u8]) -> Option<String> {
    let mut at = 0usize;
    let word = |i: usize| -> Option<u32> {
        Some(u32::from_ne_bytes(notes.get(i..i + 4)?.try_into().ok()?))
    };
    while at + 12 <= notes.len() {
        let (namesz, descsz, ty) = (word(at)? as usize, word(at + 4)? as usize, word(at + 8)?);
        let name_at = at + 12;
        let desc_at = name_at + namesz.next_multiple_of(4);
        let next = desc_at + descsz.next_multiple_of(4);
        if ty == 3 && notes.get(name_at..name_at + namesz) == Some(b"GNU\0") {
            return notes.get(desc_at..desc_at + descsz).map(hex);
        }
        at = next;
    }
    None
}

/// `.eh_frame`'s address from `.eh_frame_hdr` (its `eh_frame_ptr`), for the encodings linkers
/// write (pc-relative or absolute, 4 or 8 bytes).
fn eh_frame_address(hdr: &[u8], hdr_addr: u64) -> Option<u64> {
    let enc = *hdr.get(1)?;
    let field = hdr_addr + 4;
    let value = match enc & 0x0f {
        0x03 => u32::from_ne_bytes(hdr.get(4..8)?.try_into().ok()?) as u64,
        0x0b => i32::from_ne_bytes(hdr.get(4..8)?.try_into().ok()?) as i64 as u64,
        0x04 | 0x0c => u64::from_ne_bytes(hdr.get(4..12)?.try_into().ok()?),
        _ => return None,
    };
    match enc & 0x70 {
        0x00 => Some(value),
        0x10 => Some(field.wrapping_add(value)),
        _ => None,
    }
}

/// Every loaded object, with its unwind tables (copied now, or from the cache).
fn objects() -> Vec<Object> {
    let mut out: Vec<Object> = Vec::new();
    unsafe extern "C" fn each(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        data: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: dl_iterate_phdr passes a valid info for the duration of the callback, and
        // `data` is the `Vec<Object>` given below.
        let (info, out) = unsafe { (&*info, &mut *(data as *mut Vec<Object>)) };
        let name = if info.dlpi_name.is_null() {
            String::new()
        } else {
            // SAFETY: a NUL-terminated name owned by ld.so.
            unsafe { CStr::from_ptr(info.dlpi_name) }.to_string_lossy().into_owned()
        };
        // SAFETY: dlpi_phdr points at dlpi_phnum program headers.
        let phdrs = unsafe { std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize) };
        let bias = info.dlpi_addr;
        let (mut start, mut end) = (u64::MAX, 0u64);
        let mut build_id = None;
        let mut hdr = None;
        for p in phdrs {
            match p.p_type {
                libc::PT_LOAD => {
                    start = start.min(bias + p.p_vaddr);
                    end = end.max(bias + p.p_vaddr + p.p_memsz);
                }
                libc::PT_NOTE if build_id.is_none() => {
                    build_id = read_memory(bias + p.p_vaddr, p.p_memsz as usize)
                        .and_then(|n| build_id_in_notes(&n));
                }
                libc::PT_GNU_EH_FRAME => hdr = Some((p.p_vaddr, p.p_memsz)),
                _ => {}
            }
        }
        if start >= end {
            return 0;
        }
        let key: Key = (name.clone(), build_id.clone());
        let cached = build_id.is_some().then(|| lock(&UNWIND_CACHE).as_ref()?.get(&key).cloned());
        let unwind = match cached.flatten() {
            Some(u) => u,
            None => {
                let u = hdr.and_then(|(vaddr, memsz)| {
                    let hdr_bytes = read_memory(bias + vaddr, memsz as usize)?;
                    let eh_addr = eh_frame_address(&hdr_bytes, bias + vaddr)?;
                    // .eh_frame runs to the end of the PT_LOAD segment that holds it.
                    let seg_end = phdrs
                        .iter()
                        .filter(|p| p.p_type == libc::PT_LOAD)
                        .map(|p| (bias + p.p_vaddr, bias + p.p_vaddr + p.p_memsz))
                        .find(|&(s, e)| s <= eh_addr && eh_addr < e)?
                        .1;
                    let eh = read_memory(eh_addr, (seg_end - eh_addr) as usize)?;
                    Some(Unwind {
                        hdr_svma: vaddr..vaddr + memsz,
                        hdr: hdr_bytes.into(),
                        eh_svma: eh_addr - bias..seg_end - bias,
                        eh: eh.into(),
                    })
                });
                if build_id.is_some() {
                    let mut cache = lock(&UNWIND_CACHE);
                    let map = cache.get_or_insert_with(HashMap::new);
                    if map.len() >= CACHE_ENTRIES {
                        map.clear(); // modules come and go: keep the cache bounded
                    }
                    map.insert(key, u.clone());
                }
                u
            }
        };
        out.push(Object { name, bias, start, end, build_id, unwind });
        0
    }
    // SAFETY: the callback only reads what ld.so hands it (and this process's memory through
    // process_vm_readv) and pushes into `out`.
    unsafe { libc::dl_iterate_phdr(Some(each), (&mut out as *mut Vec<Object>).cast()) };
    out
}

/// The file behind an object: the crashed module's own path, the main program's, or the
/// object's name when it is a file path (a module image ld.so knows as `/proc/self/fd/<n>`:
/// the file that descriptor names, while it is open).
fn path_of(o: &Object, module: &ModuleView<'_>) -> Option<PathBuf> {
    if (module.contains)(o.start) || (module.contains)(o.end - 1) {
        return Some(module.path.to_path_buf());
    }
    file_of(&o.name)
}

/// Demangle a Rust name (without its hash) or a C++ name (Itanium ABI, `_Z...`); other names
/// as they are.
pub(crate) fn demangle(name: &str) -> String {
    if let Ok(d) = rustc_demangle::try_demangle(name) {
        return format!("{d:#}");
    }
    if name.starts_with("_Z") {
        if let Some(d) = cpp_demangle::Symbol::new(name).ok().and_then(|s| s.demangle().ok()) {
            return d;
        }
    }
    name.to_owned()
}

/// The function symbols of the file at `path`, when its build id is `build_id` (cached).
fn symbols_of(path: &Path, build_id: &Option<String>) -> Option<Arc<Symbols>> {
    let key = (path.to_path_buf(), build_id.clone());
    if let Some(s) = lock(&SYMBOL_CACHE).as_ref().and_then(|c| c.get(&key).cloned()) {
        return Some(s);
    }
    if CONFINED.load(Ordering::Acquire) {
        // No file may be opened: the same object (its build id) under another name, or none.
        let cache = lock(&SYMBOL_CACHE);
        return build_id.as_ref().and_then(|id| {
            cache
                .as_ref()?
                .iter()
                .find(|((_, b), _)| b.as_ref() == Some(id))
                .map(|(_, s)| s.clone())
        });
    }
    let syms = read_symbols(path, build_id).map(Arc::new)?;
    let mut cache = lock(&SYMBOL_CACHE);
    let map = cache.get_or_insert_with(HashMap::new);
    if map.len() >= CACHE_ENTRIES {
        map.clear(); // modules come and go: keep the cache bounded
    }
    map.insert(key, syms.clone());
    Some(syms)
}

fn read_symbols(path: &Path, build_id: &Option<String>) -> Option<Symbols> {
    use object::{Object as _, ObjectSymbol as _};
    let data = std::fs::read(path).ok()?;
    let file = object::File::parse(&*data).ok()?;
    let file_id = file.build_id().ok().flatten().map(hex);
    if build_id.is_some() && file_id != *build_id {
        return None; // not the file that was loaded (replaced since)
    }
    let mut syms: Vec<Sym> = file
        .symbols()
        .chain(file.dynamic_symbols())
        .filter(|s| s.kind() == object::SymbolKind::Text && s.is_definition() && s.address() != 0)
        .filter_map(|s| {
            Some(Sym { addr: s.address(), size: s.size(), name: demangle(s.name().ok()?) })
        })
        .collect();
    // Sorted by address; of several names at one address keep the one with a size, then the
    // first (.symtab's: the static or local name).
    syms.sort_by_key(|s| (s.addr, s.size == 0));
    syms.dedup_by_key(|s| s.addr);
    Some(Symbols { syms })
}

/// Name `pc` (a return address when `is_return`: looked up one byte earlier) into a frame.
fn name_frame(
    pc: u64,
    is_return: bool,
    objects: &[Object],
    module: &ModuleView<'_>,
    guessed: bool,
) -> Frame {
    let at = if is_return { pc.saturating_sub(1) } else { pc };
    let mut f = Frame { pc, guessed, in_module: (module.contains)(at), ..Frame::default() };
    let Some(o) = objects.iter().find(|o| o.start <= at && at < o.end) else {
        return f;
    };
    let path = path_of(o, module);
    f.object = path
        .as_deref()
        .and_then(|p| p.file_name())
        .map(|n| n.to_string_lossy().into_owned())
        .or_else(|| Some(o.name.clone()).filter(|n| !n.is_empty()));
    f.object_path = path.clone();
    f.object_offset = Some(pc - o.bias);
    f.build_id = o.build_id.clone();
    let from_file = path.as_deref().and_then(|p| symbols_of(p, &o.build_id));
    if let Some(s) = from_file.as_deref().and_then(|s| s.find(at - o.bias)) {
        f.symbol = Some(s.name.clone());
        f.symbol_offset = Some(pc - (o.bias + s.addr));
    } else if from_file.is_none() {
        let here = crate::crash::locate(at);
        if let Some((name, start, size)) = here.symbol {
            if size == 0 || at < start + size {
                f.symbol = Some(demangle(&name));
                f.symbol_offset = Some(pc - start);
            }
        }
    }
    f
}

/// The name of the function at `addr` (a function's address: the guarded call's), named the
/// way frames are (static functions too).
pub(crate) fn symbol_name_at(addr: u64, module: &ModuleView<'_>) -> Option<String> {
    name_frame(addr, false, &objects(), module, false).symbol
}

/// The backtrace of a fault, innermost first. Frame 0 is the PC; without a stack copy it is
/// the only frame.
pub(crate) fn backtrace(fault: &Fault<'_>, module: &ModuleView<'_>) -> Vec<Frame> {
    let objects = objects();
    let mut frames = vec![name_frame(fault.pc, false, &objects, module, false)];
    if fault.stack.is_empty() {
        return frames;
    }
    let has_cfi =
        |addr: u64| objects.iter().any(|o| o.start <= addr && addr < o.end && o.unwind.is_some());
    for (pc, guessed) in unwind(fault, &objects, &has_cfi) {
        frames.push(name_frame(pc, true, &objects, module, guessed));
        if frames.len() >= MAX_FRAMES {
            break;
        }
    }
    frames
}

/// The return addresses above the PC, each with whether it was found without CFI (the frame it
/// returns from is in an object with no `.eh_frame`).
fn unwind(
    fault: &Fault<'_>,
    objects: &[Object],
    has_cfi: &dyn Fn(u64) -> bool,
) -> Vec<(u64, bool)> {
    use framehop::{ExplicitModuleSectionInfo, FrameAddress, Module, Unwinder};
    let (base, stack) = (fault.sp, fault.stack);
    let mut read_stack = |addr: u64| -> Result<u64, ()> {
        let off = addr.checked_sub(base).ok_or(())? as usize;
        let b = stack.get(off..off.checked_add(8).ok_or(())?).ok_or(())?;
        Ok(u64::from_le_bytes(b.try_into().map_err(|_| ())?))
    };
    let modules = objects.iter().map(|o| {
        let u = o.unwind.clone();
        let info = ExplicitModuleSectionInfo::<Arc<[u8]>> {
            base_svma: 0,
            eh_frame_svma: u.as_ref().map(|u| u.eh_svma.clone()),
            eh_frame: u.as_ref().map(|u| u.eh.clone()),
            eh_frame_hdr_svma: u.as_ref().map(|u| u.hdr_svma.clone()),
            eh_frame_hdr: u.map(|u| u.hdr),
            ..Default::default()
        };
        Module::new(o.name.clone(), o.start..o.end, o.bias, info)
    });
    let mut out = Vec::new();
    let mut prev = fault.pc;
    // The same walk on every architecture, with that architecture's unwinder, cache and
    // registers.
    macro_rules! walk {
        ($unwinder:ident, $cache:ident, $regs:expr) => {{
            let mut unwinder = $unwinder::<Arc<[u8]>>::new();
            modules.for_each(|m| unwinder.add_module(m));
            let mut cache = $cache::<_>::new();
            let mut it = unwinder.iter_frames(fault.pc, $regs, &mut cache, &mut read_stack);
            while let Ok(Some(frame)) = it.next() {
                if let FrameAddress::ReturnAddress(ra) = frame {
                    out.push((ra.get(), !has_cfi(prev)));
                    prev = ra.get() - 1;
                }
                if out.len() >= MAX_FRAMES {
                    break;
                }
            }
        }};
    }
    #[cfg(target_arch = "x86_64")]
    {
        use framehop::x86_64::{CacheX86_64, UnwindRegsX86_64, UnwinderX86_64};
        walk!(UnwinderX86_64, CacheX86_64, UnwindRegsX86_64::new(fault.pc, fault.sp, fault.fp));
    }
    #[cfg(target_arch = "aarch64")]
    {
        use framehop::aarch64::{CacheAarch64, UnwindRegsAarch64, UnwinderAarch64};
        walk!(UnwinderAarch64, CacheAarch64, UnwindRegsAarch64::new(fault.lr, fault.sp, fault.fp));
    }
    out
}
