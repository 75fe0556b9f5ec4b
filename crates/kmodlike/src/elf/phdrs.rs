//! The ELF header and the program headers: what `ld.so` reads first and maps by
//! (`_dl_map_object_from_fd`, `_dl_map_segments`). The header's sizes and counts, the program
//! header and section header tables' bounds, and every segment: inside the file, `PT_LOAD`s
//! page-congruent, ascending and not overlapping, one `PT_DYNAMIC`, `PT_TLS`, `PT_GNU_RELRO`
//! and `PT_PHDR` inside what is mapped, note segments well formed ([`notes`](super::notes)),
//! no executable stack.
//!
//! [`Segments`] then answers where `ld.so` will find a virtual address: every later table is
//! found the way it finds it, through the `PT_LOAD` segment that maps it to the bytes of the
//! file behind it.

use object::elf::*;

use super::bytes::{slice, u16_at, u32_at, u64_at};
use super::notes::check_notes;

/// Size of the ELF header and of one program header.
pub(crate) const EHDR: u64 = 64;
pub(crate) const PHENT: u64 = 56;
/// More program headers than any linker writes; `ld.so` keeps one record per header on its
/// stack, so an absurd count is refused rather than trusted.
const MAX_PHNUM: u16 = 256;
/// Largest address span of the `PT_LOAD` segments (and largest `PT_TLS`) accepted.
pub(crate) const MAX_SPAN: u64 = 1 << 30;

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

/// The program headers of a file and the bytes they map: where `ld.so` finds a virtual address.
#[derive(Debug, Default)]
pub(crate) struct Segments<'a> {
    pub data: &'a [u8],
    pub phdrs: Vec<Phdr>,
}

impl<'a> Segments<'a> {
    /// Check the ELF header, the program and section header tables' bounds and every program
    /// header of a 64-bit little-endian file (the caller checked class, data and machine).
    pub fn parse(data: &'a [u8]) -> Result<Segments<'a>, String> {
        let len = data.len() as u64;
        check_header(data)?;
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
        let segments = Segments { data, phdrs };
        segments.check_phdrs(phoff)?;
        Ok(segments)
    }

    /// The `PT_LOAD` segments, in header order.
    pub fn loads(&self) -> impl Iterator<Item = &Phdr> + '_ {
        self.phdrs.iter().filter(|p| p.p_type == PT_LOAD)
    }

    /// The `PT_LOAD` segment whose memory holds `vaddr`.
    pub fn load_at(&self, vaddr: u64) -> Option<&Phdr> {
        self.loads().find(|p| p.vaddr <= vaddr && vaddr < p.end())
    }

    /// The `PT_LOAD` segment whose memory holds all of `[vaddr, vaddr + len)`.
    pub fn load_holding(&self, vaddr: u64, len: u64) -> Option<&Phdr> {
        self.load_at(vaddr).filter(|p| vaddr.checked_add(len).is_some_and(|e| e <= p.end()))
    }

    /// Whether `[vaddr, vaddr + len)` lies in one writable `PT_LOAD` segment's memory.
    pub fn writable(&self, vaddr: u64, len: u64) -> bool {
        self.load_holding(vaddr, len).is_some_and(Phdr::writable)
    }

    /// The `PT_LOAD` segment whose file-backed part holds `vaddr`.
    fn file_backed_at(&self, vaddr: u64) -> Option<&Phdr> {
        self.loads().find(|p| p.vaddr <= vaddr && vaddr < p.file_end())
    }

    /// The `len` file bytes mapped at `vaddr`, if a single `PT_LOAD` maps all of them from the
    /// file (not from its zero-filled tail).
    pub fn mapped(&self, vaddr: u64, len: u64) -> Option<&'a [u8]> {
        let p = self.file_backed_at(vaddr)?;
        let end = vaddr.checked_add(len)?;
        if end > p.file_end() {
            return None;
        }
        slice(self.data, p.offset.checked_add(vaddr - p.vaddr)?, len)
    }

    /// The file bytes mapped from `vaddr` to the end of the file-backed part of its segment.
    pub fn mapped_rest(&self, vaddr: u64) -> Option<&'a [u8]> {
        let p = self.file_backed_at(vaddr)?;
        self.mapped(vaddr, p.file_end() - vaddr)
    }

    /// `mapped`, or an error naming `what` and where it lies.
    pub fn table(&self, what: &str, vaddr: u64, len: u64) -> Result<&'a [u8], String> {
        if let Some(b) = self.mapped(vaddr, len) {
            return match self.file_backed_at(vaddr) {
                Some(p) if p.flags & PF_R == 0 => Err(format!(
                    "{what} at {vaddr:#x} lies in program header {}, a segment mapped without \
                     read permission (ld.so reads it there)",
                    p.index
                )),
                _ => Ok(b),
            };
        }
        Err(match self.file_backed_at(vaddr) {
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
        let page = crate::page_size();
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
            if p.p_type == PT_LOAD && p.executable() && p.filesz != p.memsz {
                return Err(format!(
                    "program header {i}: executable segment with p_filesz {:#x} smaller than \
                     p_memsz {:#x} (ld.so would fill the rest of its code with zeros)",
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
        // ld.so reads the program headers where a segment maps them (l_phdr), not in the file.
        let holds_phdrs =
            self.loads().find(|p| p.offset <= phoff && phoff < p.offset.saturating_add(p.filesz));
        if let Some(p) = holds_phdrs.filter(|p| p.flags & PF_R == 0) {
            return Err(format!(
                "program header {}: the segment that maps the program header table has no read \
                 permission (ld.so reads the table there)",
                p.index
            ));
        }
        for p in &self.phdrs {
            let i = p.index;
            let inside_load = |what: &str| -> Result<(), String> {
                match self.load_holding(p.vaddr, p.memsz) {
                    Some(_) => Ok(()),
                    None => Err(format!(
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
                    if self.load_at(p.vaddr).is_some_and(|l| l.flags & PF_R == 0) {
                        return Err(format!(
                            "program header {i}: PT_DYNAMIC lies in a segment mapped without read \
                             permission (ld.so reads it there)"
                        ));
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
}
