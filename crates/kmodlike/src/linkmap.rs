//! What ld.so's public `struct link_map` tells about a loaded object, and the one change we
//! make to an object ld.so holds: hiding a crashed module's symbols from later look-ups.

use std::ffi::c_void;

/// The public head of glibc's `struct link_map` (`<link.h>`).
#[repr(C)]
struct LinkMap {
    l_addr: usize,
    l_name: *const libc::c_char,
    l_ld: *const Dyn,
}

/// `Elf64_Dyn`.
#[repr(C)]
#[derive(Clone, Copy)]
struct Dyn {
    d_tag: i64,
    d_val: u64,
}

/// Where a loaded object is: every `PT_LOAD` segment `[start, end)`, the executable ones, the
/// page its first segment starts on (`dladdr`'s `dli_fbase`), and what ld.so added to the
/// file's addresses (`l_addr`).
pub(crate) struct Mapped {
    pub segments: Vec<(u64, u64)>,
    pub text: Vec<(u64, u64)>,
    pub base: u64,
    pub bias: u64,
}

/// Where the object behind `handle` is mapped, from its `PT_LOAD` headers `(p_vaddr, p_memsz,
/// executable)` (validated before `dlopen`) and ld.so's `l_addr`.
pub(crate) fn mapping_of(handle: *mut c_void, loads: &[(u64, u64, bool)]) -> Option<Mapped> {
    let mut lm: *mut LinkMap = std::ptr::null_mut();
    // SAFETY: RTLD_DI_LINKMAP writes a `struct link_map *` for a live handle.
    let rc = unsafe {
        libc::dlinfo(handle, libc::RTLD_DI_LINKMAP, &mut lm as *mut *mut LinkMap as *mut c_void)
    };
    if rc != 0 || lm.is_null() {
        return None;
    }
    // SAFETY: glibc's link_map starts with these public fields.
    let bias = unsafe { (*lm).l_addr } as u64;
    let range = |&(va, sz, _): &(u64, u64, bool)| (bias + va, bias + va + sz);
    let segments: Vec<(u64, u64)> = loads.iter().map(range).collect();
    let text = loads.iter().filter(|l| l.2).map(range).collect();
    let page = crate::page_size();
    let base = segments.iter().map(|r| r.0).min().map_or(bias, |b| b & !(page - 1));
    Some(Mapped { segments, text, base, bias })
}

const DT_NULL: i64 = 0;
const DT_HASH: i64 = 4;
const DT_GNU_HASH: i64 = 0x6fff_fef5;

/// Make the symbols of the object behind `handle` invisible to ld.so's look-ups, so modules
/// loaded later never bind to them: a crashed module kept mapped stays in the global scope
/// when it was a dependency (`RTLD_GLOBAL`), ahead of the fresh instance loaded after it.
///
/// The look-up tables are ld.so's own inputs, mapped from the module's image: for a GNU hash
/// table its Bloom filter is cleared (every look-up then skips the object, while `dladdr`,
/// which walks the buckets, still names addresses in it); for a SysV hash table the buckets
/// are. `segments` are the object's mapped `[start, end)` ranges with their executable flag:
/// the tables must lie inside one, and its protection is restored afterwards.
///
/// # Safety
/// `handle` is a live `dlopen` handle of an object whose code no longer runs on behalf of
/// the loader (it crashed); threads it started may still run in it, which is why an
/// executable page stays executable while it is written.
pub(crate) unsafe fn hide_symbols(handle: *mut c_void, segments: &[(u64, u64, bool)]) -> bool {
    let mut lm: *mut LinkMap = std::ptr::null_mut();
    // SAFETY: RTLD_DI_LINKMAP writes a `struct link_map *` for a live handle (the caller's).
    let rc = unsafe {
        libc::dlinfo(handle, libc::RTLD_DI_LINKMAP, &mut lm as *mut *mut LinkMap as *mut c_void)
    };
    if rc != 0 || lm.is_null() {
        return false;
    }
    // SAFETY: glibc's link_map starts with these three public fields.
    let (l_addr, mut dyn_entry) = unsafe { ((*lm).l_addr as u64, (*lm).l_ld) };
    let inside = |addr: u64, len: u64| {
        segments
            .iter()
            .find(|&&(s, e, _)| addr >= s && addr.checked_add(len).is_some_and(|end| end <= e))
    };
    // ld.so relocates these entries in place on most targets; take whichever reading lies in
    // the object.
    let locate =
        |v: u64| [v, l_addr.wrapping_add(v)].into_iter().find(|&a| inside(a, 16).is_some());
    let (mut gnu, mut sysv) = (None, None);
    for _ in 0..4096 {
        // SAFETY: l_ld points at the object's mapped dynamic section, DT_NULL-terminated
        // (validated before the object was loaded); the loop is bounded as well.
        let d = unsafe { *dyn_entry };
        match d.d_tag {
            DT_NULL => break,
            DT_GNU_HASH => gnu = locate(d.d_val),
            DT_HASH => sysv = locate(d.d_val),
            _ => {}
        }
        // SAFETY: still inside the dynamic section: the terminator has not been seen.
        dyn_entry = unsafe { dyn_entry.add(1) };
    }
    // The range to clear: a GNU table's Bloom filter, else a SysV table's buckets.
    let range = if let Some(t) = gnu {
        // SAFETY: `inside` checked that the 16-byte header is mapped.
        let (bloom_size, bloom_at) = unsafe { (*(t as *const u32).add(2) as u64, t + 16) };
        Some((bloom_at, bloom_size * 8))
    } else if let Some(t) = sysv {
        // SAFETY: as above.
        let nbucket = unsafe { *(t as *const u32) } as u64;
        Some((t + 8, nbucket * 4))
    } else {
        None
    };
    let Some((start, len)) = range else { return false };
    let Some(&(_, _, exec)) = inside(start, len) else { return false };
    let page = crate::page_size();
    let first = start & !(page - 1);
    let span = (start + len - first).div_ceil(page) * page;
    let keep = libc::PROT_READ | if exec { libc::PROT_EXEC } else { 0 };
    // SAFETY: the pages belong to the object (checked above) and are a private mapping of its
    // image: writing them changes this process's copy only. Protection is restored below.
    unsafe {
        if libc::mprotect(first as *mut c_void, span as usize, keep | libc::PROT_WRITE) != 0 {
            return false;
        }
        std::ptr::write_bytes(start as *mut u8, 0, len as usize);
        libc::mprotect(first as *mut c_void, span as usize, keep);
    }
    true
}
