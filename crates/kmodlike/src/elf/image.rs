//! A parsed, bounds-checked view of a 64-bit little-endian ELF shared object as `ld.so` will
//! see it mapped: its segments ([`phdrs`](super::phdrs)), its dynamic section and string table
//! ([`dynamic`]), its hash table ([`mod@hash`]) and the dynamic symbol table whose size that
//! hash table gives (`DT_SYMTAB`, `DT_SYMENT`), each checked against the file's bounds as it is
//! read.
//!
//! `ld.so` reads these through the *mapping* (at `p_vaddr` addresses), not at file offsets, so
//! every table here is found the way it finds it: a virtual address from the dynamic section,
//! translated through the `PT_LOAD` segment that maps it to the bytes of the file behind it.
//! Nothing panics on any input: reads return `None` past the end and all arithmetic is checked.
//! Errors are the detail of a refusal ("dynamic section entry DT_STRSZ ... runs past ...").

use object::elf::*;

use super::bytes::{slice, u16_at, u32_at, u64_at};
use super::dynamic::{self, Dynamic};
use super::hash::{self, Hash};
use super::phdrs::Segments;

/// Size of one dynamic symbol.
pub(crate) const SYMENT: u64 = 24;

/// A parsed, bounds-checked view of the file as `ld.so` will see it mapped.
#[derive(Debug)]
pub(crate) struct Image<'a> {
    /// The program headers and the file bytes they map.
    pub segments: Segments<'a>,
    pub machine: u16,
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

impl<'a> Image<'a> {
    /// Parse and check the ELF header, the program headers, the dynamic section and the hash
    /// table of a 64-bit little-endian file (the caller checked class, data and machine).
    pub fn parse(data: &'a [u8]) -> Result<Image<'a>, String> {
        let segments = Segments::parse(data)?;
        let machine = u16_at(data, 18).unwrap_or(0);
        let (dynamic, strtab) = dynamic::parse(&segments)?;
        let d = &dynamic;
        let Some(symtab) = d.symtab else {
            return Err("the dynamic section has no symbol table (DT_SYMTAB)".into());
        };
        if let Some(e) = d.syment.filter(|&e| e != SYMENT) {
            return Err(format!("dynamic section entry DT_SYMENT is {e}, not {SYMENT}"));
        }
        let (hash, nsyms) = hash::parse(&segments, d)?;
        let size = nsyms.checked_mul(SYMENT).ok_or("symbol count overflows")?;
        let symtab = segments.table(
            &format!("the symbol table (DT_SYMTAB, {nsyms} symbols)"),
            symtab,
            size,
        )?;
        Ok(Image { segments, machine, dynamic, hash: Some(hash), nsyms, strtab, symtab })
    }

    /// The dynamic entries before `DT_NULL`, as `(tag, value)` (tags above `u32::MAX` skipped).
    pub fn dyn_entries(&self) -> impl Iterator<Item = (u32, u64)> + '_ {
        self.dynamic.tags(self.segments.data)
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
        u16_at(self.segments.mapped(v.checked_add(i.checked_mul(2)?)?, 2)?, 0)
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
