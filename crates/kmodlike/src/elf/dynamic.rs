//! The dynamic section, as `ld.so` reads it into `l_info` (`elf_get_dynamic_info`): found through
//! the mapping of `PT_DYNAMIC`, ended by a `DT_NULL` inside the segment, with a string table
//! (`DT_STRTAB`, `DT_STRSZ`) that lies in the file and ends with a NUL, and every name a tag
//! gives (`DT_NEEDED`, `DT_SONAME`, paths, filters) inside it: `ld.so` reads those strings
//! unchecked.

use object::elf::*;

use super::bytes::u64_at;
use super::phdrs::Segments;

/// `DT_RELR` and its size tags (not in the `object` crate's list yet).
pub(crate) const DT_RELRSZ: u32 = 35;
pub(crate) const DT_RELR: u32 = 36;
pub(crate) const DT_RELRENT: u32 = 37;
/// Size of one dynamic entry.
pub(crate) const DYNENT: u64 = 16;

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

impl Dynamic {
    /// The entries before `DT_NULL`, read from the file `data`, as `(tag, value)` (tags above
    /// `u32::MAX` skipped).
    pub fn tags<'d>(&self, data: &'d [u8]) -> impl Iterator<Item = (u32, u64)> + 'd {
        let (off, n) = self.entries;
        (0..n).filter_map(move |i| {
            let o = off + i * DYNENT;
            let t = u64_at(data, o)?;
            Some((u32::try_from(t).ok()?, u64_at(data, o + 8)?))
        })
    }
}

/// The name of dynamic tag `t`, for messages.
pub(crate) fn tag(t: u32) -> String {
    let name = match t {
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
        _ => return format!("tag {t:#x}"),
    };
    name.to_owned()
}

/// Read the dynamic section (the last value of each tag wins, as in `ld.so`) and the string
/// table it names; every string offset a tag holds must be inside that table.
pub(crate) fn parse<'a>(seg: &Segments<'a>) -> Result<(Dynamic, &'a [u8]), String> {
    let ph = *seg.phdrs.iter().find(|p| p.p_type == PT_DYNAMIC).ok_or("no PT_DYNAMIC")?;
    let bytes = seg.mapped(ph.vaddr, ph.filesz).ok_or("PT_DYNAMIC not mapped")?;
    let base = bytes.as_ptr() as usize - seg.data.as_ptr() as usize;
    let mut d = Dynamic::default();
    let mut n = 0u64;
    loop {
        let (Some(t), Some(v)) = (u64_at(bytes, n * DYNENT), u64_at(bytes, n * DYNENT + 8)) else {
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
            // A filter stands in for another library (ld.so loads the filtee in its place and,
            // for an empty or odd name, trips its own assertions): never a module.
            DT_FILTER | DT_AUXILIARY => {
                return Err(format!(
                    "dynamic section entry {}: the file is a filter library (it stands in for \
                     another), not a module",
                    tag(t as u32)
                ))
            }
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
    // String table first: every name below is an offset into it.
    let (Some(strtab), Some(strsz)) = (d.strtab, d.strsz) else {
        return Err("the dynamic section has no DT_STRTAB or no DT_STRSZ".into());
    };
    let table = seg.table("the string table (DT_STRTAB)", strtab, strsz).map_err(|_| {
        format!(
            "dynamic section entry DT_STRSZ ({strsz:#x}) runs past the end of the segment \
                 that holds DT_STRTAB ({strtab:#x})"
        )
    })?;
    if table.last() != Some(&0) {
        return Err(format!(
            "the string table (DT_STRTAB {strtab:#x}, DT_STRSZ {strsz:#x}) does not end with \
                 a NUL byte"
        ));
    }
    for (t, v) in d.tags(seg.data) {
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
    Ok((d, table))
}
