//! What the loader learns from a module file before `dlopen`: its metadata, whether it exports
//! a name (answered from its own dynamic symbol and hash tables, the way `ld.so` answers
//! `dlsym`), where its segments go, and a few properties the loader acts on.

use object::elf::{
    self as E, FileHeader64, DF_1_NODELETE, STB_GLOBAL, STB_GNU_UNIQUE, STB_WEAK, STT_FUNC,
    STT_GNU_IFUNC, STT_OBJECT, STV_DEFAULT, STV_PROTECTED,
};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::{Endian, Endianness};

use crate::elf::bytes::{u32_at, u64_at};
use crate::elf::hash::{gnu_layout, Hash};
use crate::elf::image::{Image, Sym};
use crate::elf::relocs::RELAENT;
use crate::modinfo::ModInfo;

/// Imports that let a module start threads or processes, or load more code, behind the
/// loader's back.
const THREAD_STARTERS: &[&[u8]] = &[
    b"pthread_create",
    b"thrd_create",
    b"clone",
    b"clone3",
    b"fork",
    b"vfork",
    b"posix_spawn",
    b"posix_spawnp",
    b"syscall",
    b"dlopen",
    b"dlmopen",
    b"dlsym",
    b"dlvsym",
];

/// The imports the loader redirects to the guard's interposers (`guard/interpose.c`), in the
/// order of that file's table: an index into this list names an interposer.
pub(crate) const INTERPOSED_IMPORTS: [&[u8]; 12] = [
    b"sigaction",
    b"signal",
    b"bsd_signal",
    b"sysv_signal",
    b"__sysv_signal",
    b"sigset",
    b"sigprocmask",
    b"pthread_sigmask",
    b"exit",
    b"_exit",
    b"_Exit",
    b"quick_exit",
];

/// Libraries a module may need without being suspected of starting threads.
const PLAIN_LIBRARIES: &[&[u8]] = &[
    b"libc.so.6",
    b"libm.so.6",
    b"libdl.so.2",
    b"libpthread.so.0",
    b"librt.so.1",
    b"ld-linux-x86-64.so.2",
    b"ld-linux-aarch64.so.1",
];

/// What the loader learns from a module file before `dlopen`. Only headers, the dynamic
/// section and the hash table are parsed (no per-symbol allocation, no table copies): the
/// lookups read the file's bytes in place, so this borrows them.
#[derive(Debug, Default)]
pub(crate) struct FileFacts<'a> {
    pub modinfo: ModInfo,
    /// `(p_vaddr, p_memsz, executable)` of every `PT_LOAD` segment.
    pub loads: Vec<(u64, u64, bool)>,
    /// `dlclose` will not unmap it: `DF_1_NODELETE` in `DT_FLAGS_1`, or a `STB_GNU_UNIQUE`
    /// dynamic symbol (ld.so pins objects that define unique symbols).
    pub nodelete: bool,
    /// It imports (undefined dynamic symbols) a function that starts threads or processes or
    /// loads code (`pthread_create`, `clone`, `fork`, `posix_spawn`, `syscall`, `dlopen`,
    /// `dlsym`...), or needs a library other than the C runtime's (libc, libm, libdl,
    /// libpthread, librt, ld.so), which might.
    pub may_start_threads: bool,
    /// `(file-relative vaddr, byte length)` of the GNU hash bucket array and/or the SysV hash
    /// bucket array. Zeroing them in a mapped instance makes every later lookup in it fail, so
    /// objects loaded afterwards stop binding to its symbols.
    pub hash_tables: Vec<(u64, u64)>,
    /// `(r_offset, index into INTERPOSED_IMPORTS)` of every GOT slot ld.so fills with the
    /// address of one of the redirected imports: the `JUMP_SLOT` and `GLOB_DAT` relocations
    /// (x86-64, AArch64) against an undefined dynamic symbol of one of those names.
    pub interposed_slots: Vec<(u64, u8)>,
    /// `(p_vaddr, p_memsz)` of `PT_GNU_RELRO`: ld.so makes it read-only after relocation.
    pub relro: Option<(u64, u64)>,
    /// The parsed dynamic structure, when the file is a well-formed 64-bit shared object for
    /// this machine (`None`: nothing is known to be exported).
    image: Option<Image<'a>>,
}

/// The GOT slots of the redirected imports (see [`FileFacts::interposed_slots`]), read from
/// `DT_RELA` and `DT_JMPREL`. The validator has checked both tables' bounds and that each
/// slot lies in a writable segment; unreadable entries are skipped.
fn interposed_slots(img: &Image<'_>) -> Vec<(u64, u8)> {
    let d = &img.dynamic;
    let binds = |r_type: u32| match img.machine {
        E::EM_X86_64 => matches!(r_type, E::R_X86_64_GLOB_DAT | E::R_X86_64_JUMP_SLOT),
        E::EM_AARCH64 => matches!(r_type, E::R_AARCH64_GLOB_DAT | E::R_AARCH64_JUMP_SLOT),
        _ => false,
    };
    let mut slots = Vec::new();
    for (addr, size) in [(d.rela, d.relasz), (d.jmprel, d.pltrelsz)] {
        let Some(addr) = addr else { continue };
        let table = img.segments.mapped(addr, size.unwrap_or(0)).unwrap_or(&[]);
        for o in (0..table.len() as u64 / RELAENT).map(|k| k * RELAENT) {
            let (Some(off), Some(info)) = (u64_at(table, o), u64_at(table, o + 8)) else {
                continue;
            };
            if !binds(info as u32) {
                continue;
            }
            let Some(sym) = img.sym(info >> 32).filter(|s| !s.defined()) else { continue };
            let name = img.str_at(u64::from(sym.name));
            if let Some(i) = INTERPOSED_IMPORTS.iter().position(|n| *n == name) {
                slots.push((off, i as u8));
            }
        }
    }
    slots
}

/// The GNU hash function (`dl_new_hash`).
fn gnu_hash(name: &[u8]) -> u32 {
    name.iter().fold(5381u32, |h, &c| h.wrapping_mul(33).wrapping_add(u32::from(c)))
}

/// The SysV ELF hash function (`_dl_elf_hash`).
fn sysv_hash(name: &[u8]) -> u32 {
    let mut h = 0u32;
    for &c in name {
        h = (h << 4).wrapping_add(u32::from(c));
        let g = h & 0xf000_0000;
        h ^= g >> 24;
        h &= !g;
    }
    h
}

impl<'a> FileFacts<'a> {
    /// Parse a 64-bit ELF file; `None` when it is not one (dlopen then says why).
    pub fn read(data: &'a [u8]) -> Option<FileFacts<'a>> {
        let header = E::FileHeader64::<Endianness>::parse(data).ok()?;
        let endian = header.endian().ok()?;
        let sections = header.sections(endian, data).ok();
        let modinfo = sections
            .as_ref()
            .and_then(|s| s.section_by_name(endian, b".modinfo"))
            .and_then(|(_, s)| s.data(endian, data).ok())
            .map(ModInfo::parse)
            .unwrap_or_default();
        let image = if endian.is_little_endian() && header.e_type(endian) == E::ET_DYN {
            Image::parse(data).ok()
        } else {
            None
        };
        let mut facts = FileFacts { modinfo, ..FileFacts::default() };
        match &image {
            Some(img) => {
                facts.loads =
                    img.segments.loads().map(|p| (p.vaddr, p.memsz, p.executable())).collect();
                facts.learn(img);
            }
            None => facts.loads = loads_of(header, endian, data)?,
        }
        facts.image = image;
        Some(facts)
    }

    fn learn(&mut self, img: &Image<'a>) {
        self.nodelete = img.dynamic.flags_1 & u64::from(DF_1_NODELETE) != 0;
        self.may_start_threads = img.needed().any(|n| !PLAIN_LIBRARIES.contains(&n));
        for i in 1..img.nsyms {
            let Some(s) = img.sym(i) else { break };
            if s.bind() == STB_GNU_UNIQUE {
                self.nodelete = true;
            }
            if !s.defined() && !self.may_start_threads {
                let name = img.str_at(u64::from(s.name));
                self.may_start_threads = THREAD_STARTERS.contains(&name);
            }
        }
        self.interposed_slots = interposed_slots(img);
        self.relro = img
            .segments
            .phdrs
            .iter()
            .find(|p| p.p_type == E::PT_GNU_RELRO)
            .map(|p| (p.vaddr, p.memsz));
        match img.hash {
            Some(Hash::Gnu { vaddr, nbuckets, bloom_size, .. }) => {
                let (buckets_at, _) = gnu_layout(bloom_size, nbuckets);
                self.hash_tables.push((vaddr + buckets_at, u64::from(nbuckets) * 4))
            }
            Some(Hash::Sysv { .. }) | None => {}
        }
        if let Some(vaddr) = img.dynamic.hash {
            let nbucket = img.segments.mapped(vaddr, 8).and_then(|h| u32_at(h, 0)).unwrap_or(0);
            let len = u64::from(nbucket) * 4;
            if nbucket > 0 && img.segments.mapped(vaddr + 8, len).is_some() {
                self.hash_tables.push((vaddr + 8, len));
            }
        }
    }

    /// Whether the file exports `name` the way `dlsym(handle, name)` would find it: a defined
    /// (`st_shndx != SHN_UNDEF`, non-zero value), `GLOBAL`, `WEAK` or `GNU_UNIQUE`, default or
    /// protected visibility `FUNC`, `OBJECT` or `IFUNC` dynamic symbol that is not a hidden
    /// (non-default) version. Looked up through the file's own GNU (or SysV) hash table, as
    /// ld.so does: hash, bucket, chain, compare; O(1), nothing allocated.
    pub fn exports(&self, name: &str) -> bool {
        self.export(name).is_some()
    }

    /// Where `name` is, when the file exports it (see [`exports`](Self::exports)): its value
    /// relative to the load address, for a function or object ld.so would hand out as that
    /// value plus the load address. `None` for an `IFUNC` (`dlsym` runs its resolver) and an
    /// absolute symbol, whose address only `dlsym` gives.
    pub fn export_offset(&self, name: &str) -> Option<u64> {
        let s = self.export(name)?;
        (s.kind() != STT_GNU_IFUNC && s.shndx != E::SHN_ABS).then_some(s.value)
    }

    fn export(&self, name: &str) -> Option<Sym> {
        let img = self.image.as_ref()?;
        let i = self.export_index(img, name)?;
        img.sym(i)
    }

    fn export_index(&self, img: &Image<'_>, name: &str) -> Option<u64> {
        let found = |i: u64| Some(i);
        let none = None;
        let name = name.as_bytes();
        let matches = |i: u64| -> bool {
            let Some(s) = img.sym(i) else { return false };
            let vis = s.other & 3;
            s.defined()
                && s.value != 0
                && matches!(s.bind(), STB_GLOBAL | STB_WEAK | STB_GNU_UNIQUE)
                && (vis == STV_DEFAULT || vis == STV_PROTECTED)
                && matches!(s.kind(), STT_FUNC | STT_OBJECT | STT_GNU_IFUNC)
                && !img.versym(i).is_some_and(|v| v & 0x8000 != 0 && v & 0x7fff >= 2)
                && img.str_at(u64::from(s.name)) == name
        };
        match img.hash {
            Some(Hash::Gnu { vaddr, nbuckets, symoffset, bloom_size, bloom_shift }) => {
                let table = img.segments.mapped_rest(vaddr)?;
                if nbuckets == 0 {
                    return none;
                }
                let h = gnu_hash(name);
                let word = (u64::from(h) / 64) & (u64::from(bloom_size) - 1);
                let bloom = u64_at(table, 16 + word * 8).unwrap_or(0);
                let mask = (1u64 << (h % 64)) | (1u64 << ((h >> bloom_shift) % 64));
                if bloom & mask != mask {
                    return none;
                }
                let (buckets_at, chains_at) = gnu_layout(bloom_size, nbuckets);
                let start = u32_at(table, buckets_at + u64::from(h % nbuckets) * 4).unwrap_or(0);
                if start == 0 || start < symoffset {
                    return none;
                }
                let mut i = u64::from(start);
                while let Some(ch) = u32_at(table, chains_at + (i - u64::from(symoffset)) * 4) {
                    if (ch | 1) == (h | 1) && matches(i) {
                        return found(i);
                    }
                    if ch & 1 == 1 {
                        break;
                    }
                    i += 1;
                }
                none
            }
            Some(Hash::Sysv { vaddr, nbucket, nchain }) => {
                let table = img.segments.mapped_rest(vaddr)?;
                if nbucket == 0 {
                    return none;
                }
                let entry = |k: u64| u64::from(u32_at(table, 8 + k * 4).unwrap_or(0));
                let mut s = entry(u64::from(sysv_hash(name) % nbucket));
                // The validator proved the chains end; the bound keeps a lookup finite anyway.
                for _ in 0..nchain {
                    if s == 0 || s >= u64::from(nchain) {
                        break;
                    }
                    if matches(s) {
                        return found(s);
                    }
                    s = entry(u64::from(nbucket) + s);
                }
                none
            }
            None => none,
        }
    }
}

/// The `PT_LOAD` segments of a file [`Image`] could not parse (another machine or class).
fn loads_of(
    header: &FileHeader64<Endianness>,
    endian: Endianness,
    data: &[u8],
) -> Option<Vec<(u64, u64, bool)>> {
    Some(
        header
            .program_headers(endian, data)
            .ok()?
            .iter()
            .filter(|ph| ph.p_type(endian) == E::PT_LOAD)
            .map(|ph| (ph.p_vaddr(endian), ph.p_memsz(endian), ph.p_flags(endian) & E::PF_X != 0))
            .collect(),
    )
}
