//! The parts of a 64-bit little-endian ELF shared object that `ld.so` reads once the file is
//! mapped: the program headers, the dynamic section and the symbol hash table, each checked
//! against the file's bounds as they are read.
//!
//! `ld.so` reads these through the *mapping* (at `p_vaddr` addresses), not at file offsets, so
//! every table here is found the way it finds it: a virtual address from the dynamic section,
//! translated through the `PT_LOAD` segment that maps it to the bytes of the file behind it.
//! Nothing panics on any input: reads return `None` past the end and all arithmetic is checked.
//! Errors are the detail of a refusal ("dynamic section entry DT_STRSZ ... runs past ...").

use object::elf::*;

/// `DT_RELR` and its size tags (not in the `object` crate's list yet).
pub(crate) const DT_RELRSZ: u32 = 35;
pub(crate) const DT_RELR: u32 = 36;
pub(crate) const DT_RELRENT: u32 = 37;

/// Size of the ELF header, one program header, one dynamic entry, one symbol, one `Elf64_Rela`.
pub(crate) const EHDR: u64 = 64;
pub(crate) const PHENT: u64 = 56;
pub(crate) const DYNENT: u64 = 16;
pub(crate) const SYMENT: u64 = 24;
pub(crate) const RELAENT: u64 = 24;
/// More program headers than any linker writes; `ld.so` keeps one record per header on its
/// stack, so an absurd count is refused rather than trusted.
const MAX_PHNUM: u16 = 256;
/// Largest address span of the `PT_LOAD` segments (and largest `PT_TLS`) accepted.
pub(crate) const MAX_SPAN: u64 = 1 << 30;

pub(crate) fn u16_at(b: &[u8], off: u64) -> Option<u16> {
    let off = usize::try_from(off).ok()?;
    Some(u16::from_le_bytes(b.get(off..off.checked_add(2)?)?.try_into().ok()?))
}

pub(crate) fn u32_at(b: &[u8], off: u64) -> Option<u32> {
    let off = usize::try_from(off).ok()?;
    Some(u32::from_le_bytes(b.get(off..off.checked_add(4)?)?.try_into().ok()?))
}

pub(crate) fn u64_at(b: &[u8], off: u64) -> Option<u64> {
    let off = usize::try_from(off).ok()?;
    Some(u64::from_le_bytes(b.get(off..off.checked_add(8)?)?.try_into().ok()?))
}

/// `len` bytes of `b` from `off`, if they are all there.
pub(crate) fn slice(b: &[u8], off: u64, len: u64) -> Option<&[u8]> {
    let off = usize::try_from(off).ok()?;
    let len = usize::try_from(len).ok()?;
    b.get(off..off.checked_add(len)?)
}

/// The system page size.
pub(crate) fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions; it only reads a system parameter.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if p > 0 {
        p as u64
    } else {
        4096
    }
}

/// The ELF header's sizes and counts (checked before the tables they describe are looked at).
pub(crate) fn check_header(data: &[u8]) -> Result<(), String> {
    let ehsize = u16_at(data, 52).ok_or("the file is shorter than the ELF header")?;
    if u64::from(ehsize) != EHDR {
        return Err(format!("e_ehsize is {ehsize}, not {EHDR}"));
    }
    let phentsize = u16_at(data, 54).unwrap_or(0);
    let phnum = u16_at(data, 56).unwrap_or(0);
    if u64::from(phentsize) != PHENT {
        return Err(format!("e_phentsize is {phentsize}, not {PHENT}"));
    }
    if phnum == PN_XNUM {
        return Err("e_phnum is PN_XNUM (0xffff, extended numbering): not supported".into());
    }
    if phnum == 0 || phnum > MAX_PHNUM {
        return Err(format!("e_phnum is {phnum}, not between 1 and {MAX_PHNUM}"));
    }
    Ok(())
}

/// One program header.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Phdr {
    pub index: usize,
    pub p_type: u32,
    pub flags: u32,
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
    pub memsz: u64,
    pub align: u64,
}

impl Phdr {
    pub fn end(&self) -> u64 {
        self.vaddr.saturating_add(self.memsz)
    }
    pub fn file_end(&self) -> u64 {
        self.vaddr.saturating_add(self.filesz)
    }
    pub fn writable(&self) -> bool {
        self.flags & PF_W != 0
    }
    pub fn executable(&self) -> bool {
        self.flags & PF_X != 0
    }
}

/// The last value of each dynamic tag `ld.so` uses (it keeps the last one too).
#[derive(Debug, Clone, Default)]
pub(crate) struct Dynamic {
    /// `(file offset, count)` of the entries before `DT_NULL`.
    pub entries: (u64, u64),
    pub strtab: Option<u64>,
    pub strsz: Option<u64>,
    pub symtab: Option<u64>,
    pub syment: Option<u64>,
    pub hash: Option<u64>,
    pub gnu_hash: Option<u64>,
    pub rela: Option<u64>,
    pub relasz: Option<u64>,
    pub relaent: Option<u64>,
    pub relacount: Option<u64>,
    pub rel: Option<u64>,
    pub jmprel: Option<u64>,
    pub pltrelsz: Option<u64>,
    pub pltrel: Option<u64>,
    pub pltgot: Option<u64>,
    pub relr: Option<u64>,
    pub relrsz: Option<u64>,
    pub relrent: Option<u64>,
    pub textrel: bool,
    pub flags: u64,
    pub flags_1: u64,
    pub init: Option<u64>,
    pub fini: Option<u64>,
    pub init_array: Option<u64>,
    pub init_arraysz: Option<u64>,
    pub fini_array: Option<u64>,
    pub fini_arraysz: Option<u64>,
    pub preinit_array: Option<u64>,
    pub versym: Option<u64>,
    pub verdef: Option<u64>,
    pub verdefnum: Option<u64>,
    pub verneed: Option<u64>,
    pub verneednum: Option<u64>,
}

/// The file's symbol lookup table, as `ld.so` sets it up in `_dl_setup_hash`.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Hash {
    /// `DT_GNU_HASH`.
    Gnu { vaddr: u64, nbuckets: u32, symoffset: u32, bloom_size: u32, bloom_shift: u32 },
    /// `DT_HASH` (used only when there is no `DT_GNU_HASH`).
    Sysv { vaddr: u64, nbucket: u32, nchain: u32 },
}

/// A parsed, bounds-checked view of the file as `ld.so` will see it mapped.
#[derive(Debug, Default)]
pub(crate) struct Image<'a> {
    pub data: &'a [u8],
    pub machine: u16,
    pub phdrs: Vec<Phdr>,
    pub dynamic: Dynamic,
    /// Set when there is a symbol table and a hash table.
    pub hash: Option<Hash>,
    /// Number of dynamic symbols, derived from the hash table.
    pub nsyms: u64,
    /// `.dynstr` as `ld.so` finds it (`DT_STRTAB`, `DT_STRSZ` bytes; ends with a NUL).
    pub strtab: &'a [u8],
    /// `.dynsym` (`DT_SYMTAB`, `nsyms` entries).
    pub symtab: &'a [u8],
}

fn tag_name(tag: u64) -> String {
    let name = match tag as u32 {
        DT_NEEDED => "DT_NEEDED",
        DT_PLTRELSZ => "DT_PLTRELSZ",
        DT_PLTGOT => "DT_PLTGOT",
        DT_HASH => "DT_HASH",
        DT_STRTAB => "DT_STRTAB",
        DT_SYMTAB => "DT_SYMTAB",
        DT_RELA => "DT_RELA",
        DT_RELASZ => "DT_RELASZ",
        DT_RELAENT => "DT_RELAENT",
        DT_STRSZ => "DT_STRSZ",
        DT_SYMENT => "DT_SYMENT",
        DT_INIT => "DT_INIT",
        DT_FINI => "DT_FINI",
        DT_SONAME => "DT_SONAME",
        DT_RPATH => "DT_RPATH",
        DT_REL => "DT_REL",
        DT_PLTREL => "DT_PLTREL",
        DT_JMPREL => "DT_JMPREL",
        DT_INIT_ARRAY => "DT_INIT_ARRAY",
        DT_FINI_ARRAY => "DT_FINI_ARRAY",
        DT_INIT_ARRAYSZ => "DT_INIT_ARRAYSZ",
        DT_FINI_ARRAYSZ => "DT_FINI_ARRAYSZ",
        DT_RUNPATH => "DT_RUNPATH",
        DT_PREINIT_ARRAY => "DT_PREINIT_ARRAY",
        DT_RELRSZ => "DT_RELRSZ",
        DT_RELR => "DT_RELR",
        DT_RELRENT => "DT_RELRENT",
        DT_GNU_HASH => "DT_GNU_HASH",
        DT_VERSYM => "DT_VERSYM",
        DT_RELACOUNT => "DT_RELACOUNT",
        DT_VERDEF => "DT_VERDEF",
        DT_VERDEFNUM => "DT_VERDEFNUM",
        DT_VERNEED => "DT_VERNEED",
        DT_VERNEEDNUM => "DT_VERNEEDNUM",
        DT_AUXILIARY => "DT_AUXILIARY",
        DT_FILTER => "DT_FILTER",
        _ => return format!("tag {tag:#x}"),
    };
    name.to_owned()
}

pub(crate) fn tag(t: u32) -> String {
    tag_name(t as u64)
}

impl<'a> Image<'a> {
    /// Parse and check the ELF header, the program headers, the dynamic section and the hash
    /// table of a 64-bit little-endian file (the caller checked class, data and machine).
    pub fn parse(data: &'a [u8]) -> Result<Image<'a>, String> {
        let len = data.len() as u64;
        check_header(data)?;
        let machine = u16_at(data, 18).unwrap_or(0);
        let phoff = u64_at(data, 32).unwrap_or(0);
        let shoff = u64_at(data, 40).unwrap_or(0);
        let phnum = u16_at(data, 56).unwrap_or(0);
        let shentsize = u16_at(data, 58).unwrap_or(0);
        let shnum = u16_at(data, 60).unwrap_or(0);
        let ph_end = phoff.checked_add(u64::from(phnum) * PHENT).filter(|&e| e <= len);
        if ph_end.is_none() {
            return Err(format!(
                "program header table (e_phoff {phoff:#x}, {phnum} entries) runs past the end of \
                 the file ({len} bytes)"
            ));
        }
        if shnum > 0 {
            if shentsize != 64 {
                return Err(format!("e_shentsize is {shentsize}, not 64"));
            }
            if shoff.checked_add(u64::from(shnum) * 64).filter(|&e| e <= len).is_none() {
                return Err(format!(
                    "section header table (e_shoff {shoff:#x}, {shnum} entries) runs past the \
                     end of the file ({len} bytes)"
                ));
            }
        }
        let mut phdrs = Vec::with_capacity(usize::from(phnum));
        for i in 0..u64::from(phnum) {
            let o = phoff + i * PHENT;
            let ph = Phdr {
                index: i as usize,
                p_type: u32_at(data, o).unwrap_or(0),
                flags: u32_at(data, o + 4).unwrap_or(0),
                offset: u64_at(data, o + 8).unwrap_or(0),
                vaddr: u64_at(data, o + 16).unwrap_or(0),
                filesz: u64_at(data, o + 32).unwrap_or(0),
                memsz: u64_at(data, o + 40).unwrap_or(0),
                align: u64_at(data, o + 48).unwrap_or(0),
            };
            phdrs.push(ph);
        }
        let mut img = Image { data, machine, phdrs, ..Image::default() };
        img.check_phdrs(phoff)?;
        img.parse_dynamic()?;
        img.parse_hash()?;
        Ok(img)
    }

    /// The `PT_LOAD` segments, in header order.
    pub fn loads(&self) -> impl Iterator<Item = &Phdr> + '_ {
        self.phdrs.iter().filter(|p| p.p_type == PT_LOAD)
    }

    /// The `PT_LOAD` segment whose memory holds `vaddr`.
    pub fn load_at(&self, vaddr: u64) -> Option<&Phdr> {
        self.loads().find(|p| p.vaddr <= vaddr && vaddr < p.end())
    }

    /// The `len` file bytes mapped at `vaddr`, if a single `PT_LOAD` maps all of them from the
    /// file (not from its zero-filled tail).
    pub fn mapped(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let p = self.loads().find(|p| p.vaddr <= vaddr && vaddr < p.file_end())?;
        let end = vaddr.checked_add(len)?;
        if end > p.file_end() {
            return None;
        }
        slice(self.data, p.offset.checked_add(vaddr - p.vaddr)?, len)
    }

    /// The file bytes mapped from `vaddr` to the end of the file-backed part of its segment.
    pub fn mapped_rest(&self, vaddr: u64) -> Option<&'a [u8]> {
        let p = self.loads().find(|p| p.vaddr <= vaddr && vaddr < p.file_end())?;
        self.mapped(vaddr, p.file_end() - vaddr)
    }

    /// `mapped`, or an error naming `what` and where it lies.
    pub fn table(&self, what: &str, vaddr: u64, len: u64) -> Result<&'a [u8], String> {
        if let Some(b) = self.mapped(vaddr, len) {
            return Ok(b);
        }
        Err(match self.loads().find(|p| p.vaddr <= vaddr && vaddr < p.file_end()) {
            None => format!(
                "{what} at {vaddr:#x} is not in the file-backed part of any PT_LOAD segment"
            ),
            Some(p) => format!(
                "{what} at {vaddr:#x} ({len:#x} bytes) runs past the end of the segment that \
                 holds it (program header {}, file-backed up to {:#x})",
                p.index,
                p.file_end()
            ),
        })
    }

    fn check_phdrs(&self, phoff: u64) -> Result<(), String> {
        let len = self.data.len() as u64;
        let page = page_size();
        let mut prev: Option<&Phdr> = None;
        let (mut ndyn, mut nload) = (0, 0);
        for p in &self.phdrs {
            let i = p.index;
            let in_file = p.offset.checked_add(p.filesz).filter(|&e| e <= len);
            if in_file.is_none() {
                return Err(format!(
                    "program header {i}: segment [p_offset {:#x}, + p_filesz {:#x}) runs past the \
                     end of the file ({len} bytes)",
                    p.offset, p.filesz
                ));
            }
            if p.filesz > p.memsz && matches!(p.p_type, PT_LOAD | PT_TLS | PT_DYNAMIC) {
                return Err(format!(
                    "program header {i}: p_filesz {:#x} is larger than p_memsz {:#x}",
                    p.filesz, p.memsz
                ));
            }
            if p.vaddr.checked_add(p.memsz).is_none() {
                return Err(format!("program header {i}: p_vaddr + p_memsz overflows"));
            }
            match p.p_type {
                PT_LOAD => {
                    nload += 1;
                    if (p.vaddr.wrapping_sub(p.offset)) % page != 0 {
                        return Err(format!(
                            "program header {i}: PT_LOAD p_vaddr {:#x} and p_offset {:#x} differ \
                             by a non-multiple of the page size (ld.so: ELF load command \
                             address/offset not page-aligned)",
                            p.vaddr, p.offset
                        ));
                    }
                    if p.align > 1 {
                        if !p.align.is_power_of_two() || p.align < page || p.align > MAX_SPAN {
                            return Err(format!(
                                "program header {i}: PT_LOAD p_align {:#x} is not a power of two \
                                 between the page size ({page:#x}) and 1 GiB",
                                p.align
                            ));
                        }
                        if p.vaddr % p.align != p.offset % p.align {
                            return Err(format!(
                                "program header {i}: PT_LOAD p_vaddr {:#x} and p_offset {:#x} are \
                                 not congruent modulo p_align {:#x}",
                                p.vaddr, p.offset, p.align
                            ));
                        }
                    }
                    if let Some(q) = prev {
                        if p.vaddr < q.vaddr {
                            return Err(format!(
                                "program header {i}: PT_LOAD segments are not in ascending \
                                 p_vaddr order ({:#x} after {:#x})",
                                p.vaddr, q.vaddr
                            ));
                        }
                        if p.offset < q.offset.saturating_add(q.filesz) && p.filesz > 0 {
                            return Err(format!(
                                "program header {i}: PT_LOAD file bytes [{:#x}, {:#x}) overlap \
                                 those of program header {} or come before them",
                                p.offset,
                                p.offset.saturating_add(p.filesz),
                                q.index
                            ));
                        }
                        if p.vaddr < q.end() {
                            return Err(format!(
                                "program header {i}: PT_LOAD segment at {:#x} overlaps the one of \
                                 program header {} ([{:#x}, {:#x}))",
                                p.vaddr,
                                q.index,
                                q.vaddr,
                                q.end()
                            ));
                        }
                    }
                    prev = Some(p);
                }
                PT_DYNAMIC => ndyn += 1,
                PT_GNU_STACK if p.executable() => {
                    return Err(format!(
                        "program header {i}: PT_GNU_STACK asks for an executable stack (ld.so \
                         would make every thread's stack executable); build the module with \
                         -z noexecstack"
                    ));
                }
                _ => {}
            }
        }
        if nload == 0 {
            return Err("no PT_LOAD segment".into());
        }
        let first = self.loads().next().map(|p| p.vaddr & !(page - 1)).unwrap_or(0);
        let last = self.loads().map(Phdr::end).max().unwrap_or(0);
        if last - first > MAX_SPAN {
            return Err(format!(
                "PT_LOAD segments span {:#x} bytes of address space, more than 1 GiB",
                last - first
            ));
        }
        if ndyn != 1 {
            return Err(format!("{ndyn} PT_DYNAMIC segments, not exactly one"));
        }
        for p in &self.phdrs {
            let i = p.index;
            let inside_load = |what: &str| -> Result<(), String> {
                match self.load_at(p.vaddr) {
                    Some(l) if p.end() <= l.end() => Ok(()),
                    _ => Err(format!(
                        "program header {i}: {what} [{:#x}, {:#x}) is not inside a PT_LOAD segment",
                        p.vaddr,
                        p.end()
                    )),
                }
            };
            match p.p_type {
                PT_DYNAMIC => {
                    if p.filesz == 0 {
                        return Err(format!("program header {i}: PT_DYNAMIC is empty"));
                    }
                    if self.mapped(p.vaddr, p.filesz).is_none() {
                        return Err(format!(
                            "program header {i}: PT_DYNAMIC [{:#x}, {:#x}) is not inside the \
                             file-backed part of a PT_LOAD segment",
                            p.vaddr,
                            p.file_end()
                        ));
                    }
                }
                PT_TLS if p.memsz > 0 => {
                    if p.memsz > MAX_SPAN / 16 {
                        return Err(format!(
                            "program header {i}: PT_TLS p_memsz {:#x} is absurd",
                            p.memsz
                        ));
                    }
                    if p.align > 1 && (!p.align.is_power_of_two() || p.align > 1 << 20) {
                        return Err(format!(
                            "program header {i}: PT_TLS p_align {:#x} is not a power of two up to \
                             1 MiB",
                            p.align
                        ));
                    }
                    if self.mapped(p.vaddr, p.filesz).is_none() {
                        return Err(format!(
                            "program header {i}: PT_TLS initialization image [{:#x}, {:#x}) is \
                             not inside the file-backed part of a PT_LOAD segment",
                            p.vaddr,
                            p.file_end()
                        ));
                    }
                }
                PT_GNU_RELRO => {
                    inside_load("PT_GNU_RELRO")?;
                    if !self.load_at(p.vaddr).is_some_and(Phdr::writable) {
                        return Err(format!(
                            "program header {i}: PT_GNU_RELRO is not inside a writable PT_LOAD \
                             segment"
                        ));
                    }
                }
                PT_PHDR => {
                    inside_load("PT_PHDR")?;
                    let same = self
                        .mapped(p.vaddr, self.phdrs.len() as u64 * PHENT)
                        .zip(slice(self.data, phoff, self.phdrs.len() as u64 * PHENT))
                        .is_some_and(|(a, b)| a.as_ptr() == b.as_ptr());
                    if !same || p.memsz < self.phdrs.len() as u64 * PHENT {
                        return Err(format!(
                            "program header {i}: PT_PHDR at {:#x} does not map the program \
                             header table (file offset {phoff:#x})",
                            p.vaddr
                        ));
                    }
                }
                PT_NOTE | PT_GNU_PROPERTY => {
                    let what = if p.p_type == PT_NOTE { "PT_NOTE" } else { "PT_GNU_PROPERTY" };
                    let notes = slice(self.data, p.offset, p.filesz).unwrap_or(&[]);
                    check_notes(notes, p.align)
                        .map_err(|e| format!("program header {i}: {what}: {e}"))?;
                    if p.p_type == PT_GNU_PROPERTY {
                        inside_load(what)?;
                        // ld.so reads this one through the mapping: same bytes as the file.
                        let mapped = self.mapped(p.vaddr, p.memsz);
                        if mapped != Some(notes) || p.memsz != p.filesz {
                            return Err(format!(
                                "program header {i}: PT_GNU_PROPERTY at {:#x} does not map its \
                                 own file bytes",
                                p.vaddr
                            ));
                        }
                    }
                }
                _ => {}
            }
        }
        Ok(())
    }

    fn parse_dynamic(&mut self) -> Result<(), String> {
        let ph = *self.phdrs.iter().find(|p| p.p_type == PT_DYNAMIC).ok_or("no PT_DYNAMIC")?;
        let bytes = self.mapped(ph.vaddr, ph.filesz).ok_or("PT_DYNAMIC not mapped")?;
        let base = bytes.as_ptr() as usize - self.data.as_ptr() as usize;
        let mut d = Dynamic::default();
        let mut n = 0u64;
        loop {
            let (Some(t), Some(v)) = (u64_at(bytes, n * DYNENT), u64_at(bytes, n * DYNENT + 8))
            else {
                return Err(format!(
                    "the dynamic section (program header {}, {:#x} bytes) has no DT_NULL entry",
                    ph.index, ph.filesz
                ));
            };
            if t == u64::from(DT_NULL) {
                break;
            }
            n += 1;
            if t > u64::from(u32::MAX) {
                continue; // no tag ld.so reads is this large
            }
            match t as u32 {
                DT_STRTAB => d.strtab = Some(v),
                DT_STRSZ => d.strsz = Some(v),
                DT_SYMTAB => d.symtab = Some(v),
                DT_SYMENT => d.syment = Some(v),
                DT_HASH => d.hash = Some(v),
                DT_GNU_HASH => d.gnu_hash = Some(v),
                DT_RELA => d.rela = Some(v),
                DT_RELASZ => d.relasz = Some(v),
                DT_RELAENT => d.relaent = Some(v),
                DT_RELACOUNT => d.relacount = Some(v),
                DT_REL => d.rel = Some(v),
                DT_JMPREL => d.jmprel = Some(v),
                DT_PLTRELSZ => d.pltrelsz = Some(v),
                DT_PLTREL => d.pltrel = Some(v),
                DT_PLTGOT => d.pltgot = Some(v),
                DT_RELR => d.relr = Some(v),
                DT_RELRSZ => d.relrsz = Some(v),
                DT_RELRENT => d.relrent = Some(v),
                DT_TEXTREL => d.textrel = true,
                DT_FLAGS => d.flags = v,
                DT_FLAGS_1 => d.flags_1 = v,
                DT_INIT => d.init = Some(v),
                DT_FINI => d.fini = Some(v),
                DT_INIT_ARRAY => d.init_array = Some(v),
                DT_INIT_ARRAYSZ => d.init_arraysz = Some(v),
                DT_FINI_ARRAY => d.fini_array = Some(v),
                DT_FINI_ARRAYSZ => d.fini_arraysz = Some(v),
                DT_PREINIT_ARRAY => d.preinit_array = Some(v),
                DT_VERSYM => d.versym = Some(v),
                DT_VERDEF => d.verdef = Some(v),
                DT_VERDEFNUM => d.verdefnum = Some(v),
                DT_VERNEED => d.verneed = Some(v),
                DT_VERNEEDNUM => d.verneednum = Some(v),
                _ => {}
            }
        }
        d.entries = (base as u64, n);
        self.dynamic = d;
        let d = &self.dynamic;
        // String table first: every name below is an offset into it.
        let (Some(strtab), Some(strsz)) = (d.strtab, d.strsz) else {
            return Err("the dynamic section has no DT_STRTAB or no DT_STRSZ".into());
        };
        self.strtab = self.table("the string table (DT_STRTAB)", strtab, strsz).map_err(|_| {
            format!(
                "dynamic section entry DT_STRSZ ({strsz:#x}) runs past the end of the segment \
                 that holds DT_STRTAB ({strtab:#x})"
            )
        })?;
        if self.strtab.last() != Some(&0) {
            return Err(format!(
                "the string table (DT_STRTAB {strtab:#x}, DT_STRSZ {strsz:#x}) does not end with \
                 a NUL byte"
            ));
        }
        for (t, v) in self.dyn_entries() {
            if matches!(t, DT_NEEDED | DT_SONAME | DT_RPATH | DT_RUNPATH | DT_AUXILIARY | DT_FILTER)
                && v >= strsz
            {
                return Err(format!(
                    "dynamic section entry {} ({v:#x}) is not inside the string table \
                     (DT_STRSZ {strsz:#x})",
                    tag(t)
                ));
            }
        }
        Ok(())
    }

    /// The dynamic entries before `DT_NULL`, as `(tag, value)` (tags above `u32::MAX` skipped).
    pub fn dyn_entries(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        let (off, n) = self.dynamic.entries;
        (0..n).filter_map(move |i| {
            let o = off + i * DYNENT;
            let t = u64_at(self.data, o)?;
            Some((u32::try_from(t).ok()?, u64_at(self.data, o + 8)?))
        })
    }

    /// The NUL-terminated string at `off` in the dynamic string table (empty when outside).
    pub fn str_at(&self, off: u64) -> &'a [u8] {
        let rest = usize::try_from(off).ok().and_then(|o| self.strtab.get(o..)).unwrap_or(&[]);
        let end = rest.iter().position(|&b| b == 0).unwrap_or(rest.len());
        &rest[..end]
    }

    /// The `DT_NEEDED` names.
    pub fn needed(&self) -> impl Iterator<Item = &'a [u8]> + '_ {
        self.dyn_entries().filter(|(t, _)| *t == DT_NEEDED).map(|(_, v)| self.str_at(v))
    }

    fn parse_hash(&mut self) -> Result<(), String> {
        let d = &self.dynamic;
        let Some(symtab) = d.symtab else {
            return Err("the dynamic section has no symbol table (DT_SYMTAB)".into());
        };
        if let Some(e) = d.syment.filter(|&e| e != SYMENT) {
            return Err(format!("dynamic section entry DT_SYMENT is {e}, not {SYMENT}"));
        }
        let (hash, nsyms) = if let Some(vaddr) = d.gnu_hash {
            let head = self.table("the GNU hash table (DT_GNU_HASH)", vaddr, 16)?;
            let word = |i: u64| u32_at(head, i * 4).unwrap_or(0);
            let (nbuckets, symoffset, bloom_size, bloom_shift) =
                (word(0), word(1), word(2), word(3));
            if !bloom_size.is_power_of_two() {
                return Err(format!(
                    "GNU hash table: bloom filter size {bloom_size} is not a power of two"
                ));
            }
            if bloom_shift >= 64 {
                return Err(format!("GNU hash table: bloom shift {bloom_shift} is not below 64"));
            }
            let buckets_at = 16 + u64::from(bloom_size) * 8;
            let chains_at = buckets_at + u64::from(nbuckets) * 4;
            let rest = self.mapped_rest(vaddr).unwrap_or(&[]);
            if (rest.len() as u64) < chains_at {
                return Err(format!(
                    "GNU hash table at {vaddr:#x}: {bloom_size} bloom words and {nbuckets} buckets \
                     run past the end of the segment that holds it"
                ));
            }
            let chains = &rest[chains_at as usize..];
            let nchains = chains.len() as u64 / 4;
            // Chains are consecutive runs ending at a word with the low bit set, so every
            // chain ends at or before the end of the one that starts last: walking that one
            // proves them all (and is how many symbols there are).
            let mut last_start = 0u64;
            for b in 0..u64::from(nbuckets) {
                let start = u64::from(u32_at(rest, buckets_at + b * 4).unwrap_or(0));
                if start != 0 && start < u64::from(symoffset) {
                    return Err(format!(
                        "GNU hash table: bucket {b} starts at symbol {start}, below the first \
                         hashed symbol {symoffset}"
                    ));
                }
                last_start = last_start.max(start);
            }
            let mut nsyms = u64::from(symoffset);
            if last_start != 0 {
                let mut i = last_start - u64::from(symoffset);
                loop {
                    let Some(h) = u32_at(chains, i * 4) else {
                        return Err(format!(
                            "GNU hash table: the chain from symbol {last_start} does not end \
                             within the segment ({nchains} chain words fit)"
                        ));
                    };
                    if h & 1 == 1 {
                        break;
                    }
                    i += 1;
                }
                nsyms = i + u64::from(symoffset) + 1;
            }
            (Hash::Gnu { vaddr, nbuckets, symoffset, bloom_size, bloom_shift }, nsyms)
        } else if let Some(vaddr) = d.hash {
            let head = self.table("the hash table (DT_HASH)", vaddr, 8)?;
            let nbucket = u32_at(head, 0).unwrap_or(0);
            let nchain = u32_at(head, 4).unwrap_or(0);
            let size = 8 + (u64::from(nbucket) + u64::from(nchain)) * 4;
            let table = self.table("the hash table (DT_HASH)", vaddr, size).map_err(|_| {
                format!(
                    "hash table (DT_HASH) at {vaddr:#x}: {nbucket} buckets and {nchain} chain \
                     entries run past the end of the segment that holds it"
                )
            })?;
            let entry = |i: u64| u64::from(u32_at(table, 8 + i * 4).unwrap_or(0));
            let mut steps = 0u64;
            for b in 0..u64::from(nbucket) {
                let mut s = entry(b);
                while s != 0 {
                    if s >= u64::from(nchain) {
                        return Err(format!(
                            "hash table (DT_HASH): bucket {b} leads to symbol {s}, not below \
                             nchain {nchain}"
                        ));
                    }
                    steps += 1;
                    if steps > u64::from(nchain) {
                        return Err(format!("hash table (DT_HASH): the chain of bucket {b} loops"));
                    }
                    s = entry(u64::from(nbucket) + s);
                }
            }
            (Hash::Sysv { vaddr, nbucket, nchain }, u64::from(nchain))
        } else {
            return Err("the dynamic section has a symbol table but no hash table (neither \
                        DT_GNU_HASH nor DT_HASH)"
                .into());
        };
        let size = nsyms.checked_mul(SYMENT).ok_or("symbol count overflows")?;
        self.symtab =
            self.table(&format!("the symbol table (DT_SYMTAB, {nsyms} symbols)"), symtab, size)?;
        self.hash = Some(hash);
        self.nsyms = nsyms;
        Ok(())
    }

    /// Symbol `i`: `(st_name, st_info, st_other, st_shndx, st_value, st_size)`.
    pub fn sym(&self, i: u64) -> Option<Sym> {
        let o = i.checked_mul(SYMENT)?;
        let b = slice(self.symtab, o, SYMENT)?;
        Some(Sym {
            name: u32_at(b, 0)?,
            info: b[4],
            other: b[5],
            shndx: u16_at(b, 6)?,
            value: u64_at(b, 8)?,
            size: u64_at(b, 16)?,
        })
    }

    /// The `DT_VERSYM` entry of symbol `i`, when there is one.
    pub fn versym(&self, i: u64) -> Option<u16> {
        let v = self.dynamic.versym?;
        u16_at(self.mapped(v.checked_add(i.checked_mul(2)?)?, 2)?, 0)
    }
}

/// One dynamic symbol.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sym {
    pub name: u32,
    pub info: u8,
    pub other: u8,
    pub shndx: u16,
    pub value: u64,
    pub size: u64,
}

impl Sym {
    pub fn bind(&self) -> u8 {
        self.info >> 4
    }
    pub fn kind(&self) -> u8 {
        self.info & 0xf
    }
    pub fn defined(&self) -> bool {
        self.shndx != SHN_UNDEF
    }
}

/// Walk the notes of a `PT_NOTE`/`PT_GNU_PROPERTY` segment: every note, and every property of
/// a GNU property note, must fit (ld.so walks the properties in memory, trusting `n_descsz`).
fn check_notes(notes: &[u8], align: u64) -> Result<(), String> {
    let align = if align == 8 { 8 } else { 4 };
    let up = |x: u64| x.checked_add(align - 1).map(|v| v & !(align - 1));
    let mut off = 0u64;
    let len = notes.len() as u64;
    while off < len {
        let (Some(namesz), Some(descsz), Some(ntype)) =
            (u32_at(notes, off), u32_at(notes, off + 4), u32_at(notes, off + 8))
        else {
            return Err(format!("note header at offset {off:#x} runs past the segment"));
        };
        let desc_at = up(off + 12 + u64::from(namesz)).ok_or("note name size overflows")?;
        let next = up(desc_at + u64::from(descsz)).ok_or("note size overflows")?;
        if desc_at + u64::from(descsz) > len {
            return Err(format!(
                "note at offset {off:#x} (n_namesz {namesz}, n_descsz {descsz}) runs past the \
                 segment ({len:#x} bytes)"
            ));
        }
        let name = slice(notes, off + 12, u64::from(namesz)).unwrap_or(&[]);
        if ntype == NT_GNU_PROPERTY_TYPE_0 && name == b"GNU\0" {
            let desc = slice(notes, desc_at, u64::from(descsz)).unwrap_or(&[]);
            let mut p = 0u64;
            while p < desc.len() as u64 {
                let Some(datasz) = u32_at(desc, p + 4) else {
                    return Err(format!("GNU property at offset {p:#x} runs past its note"));
                };
                let end = (p + 8 + u64::from(datasz) + 7) & !7;
                if p + 8 + u64::from(datasz) > desc.len() as u64 {
                    return Err(format!(
                        "GNU property at offset {p:#x} (pr_datasz {datasz}) runs past its note"
                    ));
                }
                p = end;
            }
        }
        off = next;
    }
    Ok(())
}
