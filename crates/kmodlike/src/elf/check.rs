//! The checks `ld.so` does not make: every table of a parsed [`Image`] that glibc 2.36 walks
//! while relocating and looking up symbols (`elf/do-rel.h`, `elf/dl-lookup.c`,
//! `elf/dl-version.c`, `sysdeps/*/dl-machine.h`), bound by bound, so `dlopen` only sees files
//! whose structure it can trust. Each error is the detail of a refusal.

use object::elf::*;

use super::image::{tag, u16_at, u32_at, u64_at, Image, Phdr, DT_RELR, DT_RELRSZ, RELAENT};

/// Run every check on a parsed image.
pub(crate) fn validate(img: &Image<'_>) -> Result<(), String> {
    dynamic_tags(img)?;
    symbols(img)?;
    relocations(img)?;
    versions(img)?;
    Ok(())
}

/// An address table named by `addr_tag` whose byte size is given by `size_tag`.
fn sized_table(
    img: &Image<'_>,
    addr_tag: u32,
    addr: u64,
    size_tag: u32,
    size: Option<u64>,
    entsize: u64,
) -> Result<(), String> {
    let Some(size) = size else {
        return Err(format!(
            "dynamic section has {} ({addr:#x}) but no {}",
            tag(addr_tag),
            tag(size_tag)
        ));
    };
    if size % entsize != 0 {
        return Err(format!(
            "dynamic section entry {} ({size:#x}) is not a multiple of the entry size {entsize}",
            tag(size_tag)
        ));
    }
    if img.mapped(addr, size).is_none() {
        return Err(format!(
            "dynamic section entry {} ({size:#x}) runs past the end of the segment that holds {} \
             ({addr:#x})",
            tag(size_tag),
            tag(addr_tag)
        ));
    }
    Ok(())
}

fn dynamic_tags(img: &Image<'_>) -> Result<(), String> {
    let d = &img.dynamic;
    if d.textrel || d.flags & u64::from(DF_TEXTREL) != 0 {
        return Err("text relocations (DT_TEXTREL): ld.so would make the module's code writable \
                    to patch it; build every object of the module with -fPIC"
            .into());
    }
    if let Some(a) = d.preinit_array {
        return Err(format!(
            "DT_PREINIT_ARRAY ({a:#x}) in a shared object: only executables may have one (ld.so \
             never runs a shared object's)"
        ));
    }
    if let Some(a) = d.rel {
        return Err(format!(
            "DT_REL relocations ({a:#x}): this machine's ld.so applies only DT_RELA relocations"
        ));
    }
    if let Some(a) = d.rela {
        match d.relaent {
            Some(RELAENT) => {}
            Some(e) => return Err(format!("dynamic section entry DT_RELAENT is {e}, not 24")),
            None => return Err(format!("dynamic section has DT_RELA ({a:#x}) but no DT_RELAENT")),
        }
        sized_table(img, DT_RELA, a, DT_RELASZ, d.relasz, RELAENT)?;
        let n = d.relasz.unwrap_or(0) / RELAENT;
        if let Some(c) = d.relacount.filter(|&c| c > n) {
            return Err(format!(
                "dynamic section entry DT_RELACOUNT ({c}) is larger than the {n} relocations of \
                 DT_RELA"
            ));
        }
    } else if let Some(c) = d.relacount.filter(|&c| c > 0) {
        return Err(format!("dynamic section has DT_RELACOUNT ({c}) but no DT_RELA"));
    }
    if let Some(a) = d.jmprel {
        match d.pltrel {
            Some(v) if v == u64::from(DT_RELA) => {}
            Some(v) => {
                return Err(format!("dynamic section entry DT_PLTREL is {v}, not DT_RELA (7)"))
            }
            None => return Err(format!("dynamic section has DT_JMPREL ({a:#x}) but no DT_PLTREL")),
        }
        sized_table(img, DT_JMPREL, a, DT_PLTRELSZ, d.pltrelsz, RELAENT)?;
    } else if let Some(v) = d.pltrel.filter(|&v| v != u64::from(DT_RELA)) {
        return Err(format!("dynamic section entry DT_PLTREL is {v}, not DT_RELA (7)"));
    }
    if let Some(a) = d.pltgot {
        if !writable(img, a, 24) {
            return Err(format!(
                "dynamic section entry DT_PLTGOT ({a:#x}) is not inside a writable PT_LOAD segment"
            ));
        }
    }
    if let Some(a) = d.relr {
        match d.relrent {
            Some(8) => {}
            Some(e) => return Err(format!("dynamic section entry DT_RELRENT is {e}, not 8")),
            None => return Err(format!("dynamic section has DT_RELR ({a:#x}) but no DT_RELRENT")),
        }
        sized_table(img, DT_RELR, a, DT_RELRSZ, d.relrsz, 8)?;
    }
    for (t, a) in [(DT_INIT, d.init), (DT_FINI, d.fini)] {
        if let Some(a) = a {
            if !img.load_at(a).is_some_and(Phdr::executable) {
                return Err(format!(
                    "dynamic section entry {} ({a:#x}) is not inside an executable PT_LOAD segment",
                    tag(t)
                ));
            }
        }
    }
    for (t, a, st, s) in [
        (DT_INIT_ARRAY, d.init_array, DT_INIT_ARRAYSZ, d.init_arraysz),
        (DT_FINI_ARRAY, d.fini_array, DT_FINI_ARRAYSZ, d.fini_arraysz),
    ] {
        if let Some(a) = a {
            sized_table(img, t, a, st, s, 8)?;
        }
    }
    if let Some(a) = d.versym {
        let size = img.nsyms.saturating_mul(2);
        if img.mapped(a, size).is_none() {
            return Err(format!(
                "the symbol version table (DT_VERSYM {a:#x}) does not hold the {} symbols' \
                 entries within the segment that holds it",
                img.nsyms
            ));
        }
    }
    Ok(())
}

/// Whether `[vaddr, vaddr + len)` lies in one writable `PT_LOAD` segment's memory.
fn writable(img: &Image<'_>, vaddr: u64, len: u64) -> bool {
    img.load_at(vaddr)
        .is_some_and(|p| p.writable() && vaddr.checked_add(len).is_some_and(|e| e <= p.end()))
}

fn symbols(img: &Image<'_>) -> Result<(), String> {
    let strsz = img.strtab.len() as u64;
    let tls = img.phdrs.iter().find(|p| p.p_type == PT_TLS && p.memsz > 0);
    for i in 0..img.nsyms {
        let Some(s) = img.sym(i) else { break };
        if u64::from(s.name) >= strsz {
            return Err(format!(
                "dynamic symbol {i}: st_name {:#x} is not inside the string table (DT_STRSZ \
                 {strsz:#x})",
                s.name
            ));
        }
        if !s.defined() || s.shndx == SHN_ABS {
            continue;
        }
        let name = String::from_utf8_lossy(img.str_at(u64::from(s.name)));
        if s.kind() == STT_TLS {
            let inside =
                tls.is_some_and(|t| s.value.checked_add(s.size).is_some_and(|e| e <= t.memsz));
            if !inside {
                return Err(format!(
                    "dynamic symbol {i} ({name}): TLS symbol at offset {:#x} (size {:#x}) is not \
                     inside the PT_TLS segment",
                    s.value, s.size
                ));
            }
            continue;
        }
        // ld.so's lookups skip a defined symbol of value 0.
        let inside = s.value == 0 || img.loads().any(|p| p.vaddr <= s.value && s.value <= p.end());
        if !inside {
            return Err(format!(
                "dynamic symbol {i} ({name}): st_value {:#x} is not inside any PT_LOAD segment",
                s.value
            ));
        }
        if s.kind() == STT_GNU_IFUNC && !img.load_at(s.value).is_some_and(Phdr::executable) {
            return Err(format!(
                "dynamic symbol {i} ({name}): IFUNC resolver at {:#x} is not inside an executable \
                 PT_LOAD segment (ld.so would call it)",
                s.value
            ));
        }
    }
    Ok(())
}

/// What a relocation type does: `None` when refused, else the bytes it writes.
fn reloc_width(machine: u16, r_type: u32) -> Option<u64> {
    match machine {
        EM_X86_64 => match r_type {
            R_X86_64_NONE => Some(0),
            R_X86_64_PC32 | R_X86_64_SIZE32 => Some(4),
            R_X86_64_64 | R_X86_64_GLOB_DAT | R_X86_64_JUMP_SLOT | R_X86_64_RELATIVE
            | R_X86_64_DTPMOD64 | R_X86_64_DTPOFF64 | R_X86_64_TPOFF64 | R_X86_64_IRELATIVE
            | R_X86_64_SIZE64 => Some(8),
            R_X86_64_TLSDESC => Some(16),
            _ => None,
        },
        EM_AARCH64 => match r_type {
            R_AARCH64_NONE => Some(0),
            R_AARCH64_ABS64 | R_AARCH64_GLOB_DAT | R_AARCH64_JUMP_SLOT | R_AARCH64_RELATIVE
            | R_AARCH64_TLS_DTPMOD | R_AARCH64_TLS_DTPREL | R_AARCH64_TLS_TPREL
            | R_AARCH64_IRELATIVE => Some(8),
            R_AARCH64_TLSDESC => Some(16),
            _ => None,
        },
        _ => Some(8),
    }
}

fn relative_type(machine: u16) -> u32 {
    if machine == EM_AARCH64 {
        R_AARCH64_RELATIVE
    } else {
        R_X86_64_RELATIVE
    }
}

fn irelative_type(machine: u16) -> u32 {
    if machine == EM_AARCH64 {
        R_AARCH64_IRELATIVE
    } else {
        R_X86_64_IRELATIVE
    }
}

fn copy_type(machine: u16) -> u32 {
    if machine == EM_AARCH64 {
        R_AARCH64_COPY
    } else {
        R_X86_64_COPY
    }
}

/// What relocations must respect beyond their own bounds: the init/fini arrays, whose entries
/// ld.so calls once relocated (each must be relocated to code), and the dynamic section, which
/// no relocation may write.
struct Guarded {
    /// `(tag, start, entries)` of `DT_INIT_ARRAY` and `DT_FINI_ARRAY`.
    arrays: Vec<(u32, u64, u64)>,
    /// Whether each array entry has been relocated, arrays one after the other.
    covered: Vec<bool>,
    dynamic: (u64, u64),
}

impl Guarded {
    fn new(img: &Image<'_>) -> Guarded {
        let d = &img.dynamic;
        let mut arrays = Vec::new();
        for (t, a, s) in [
            (DT_INIT_ARRAY, d.init_array, d.init_arraysz),
            (DT_FINI_ARRAY, d.fini_array, d.fini_arraysz),
        ] {
            if let (Some(a), Some(s)) = (a, s) {
                arrays.push((t, a, s / 8));
            }
        }
        let total = arrays.iter().map(|a| a.2 as usize).sum();
        let dynamic = img
            .phdrs
            .iter()
            .find(|p| p.p_type == PT_DYNAMIC)
            .map_or((0, 0), |p| (p.vaddr, p.file_end()));
        Guarded { arrays, covered: vec![false; total], dynamic }
    }

    /// Check a write of `width` bytes at `off` that stores `target` (a code address, when
    /// known) and record which array entry it relocates.
    fn write(
        &mut self,
        img: &Image<'_>,
        off: u64,
        width: u64,
        target: Option<u64>,
        at: &dyn Fn() -> String,
    ) -> Result<(), String> {
        let end = off.saturating_add(width);
        if off < self.dynamic.1 && self.dynamic.0 < end {
            return Err(format!("{}: it writes into the dynamic section", at()));
        }
        let mut base = 0usize;
        for &(t, start, n) in &self.arrays {
            let arr_end = start.saturating_add(n * 8);
            if off < arr_end && start < end {
                if width != 8 || (off - start.min(off)) % 8 != 0 || off < start {
                    return Err(format!(
                        "{}: it writes across the entries of {}",
                        at(),
                        super::image::tag(t)
                    ));
                }
                match target {
                    Some(v) if img.load_at(v).is_some_and(Phdr::executable) => {
                        if let Some((fs, fe)) = inside_function(img, v) {
                            return Err(format!(
                                "{}: it points an entry of {} at {v:#x}, inside the function at \
                                 [{fs:#x}, {fe:#x}) (from .eh_frame_hdr) rather than at its start",
                                at(),
                                super::image::tag(t)
                            ));
                        }
                    }
                    Some(v) => {
                        return Err(format!(
                            "{}: it points an entry of {} at {v:#x}, which is not inside an \
                             executable PT_LOAD segment (ld.so would call it)",
                            at(),
                            super::image::tag(t)
                        ))
                    }
                    None => {
                        return Err(format!(
                            "{}: an entry of {} must be a relative relocation or one against a \
                             defined function",
                            at(),
                            super::image::tag(t)
                        ))
                    }
                }
                if let Some(c) = self.covered.get_mut(base + ((off - start) / 8) as usize) {
                    *c = true;
                }
            }
            base += n as usize;
        }
        Ok(())
    }

    /// Every init/fini array entry must have been relocated: ld.so calls each one.
    fn all_covered(&self) -> Result<(), String> {
        let mut base = 0usize;
        for &(t, start, n) in &self.arrays {
            for j in 0..n as usize {
                if !self.covered.get(base + j).copied().unwrap_or(true) {
                    return Err(format!(
                        "entry {j} of {} (at {:#x}) is not relocated: ld.so would call its \
                         link-time value",
                        super::image::tag(t),
                        start + 8 * j as u64
                    ));
                }
            }
            base += n as usize;
        }
        Ok(())
    }
}

/// The function, known from the unwind table (`PT_GNU_EH_FRAME`), that `addr` lies strictly
/// inside of: a code pointer there (an init/fini entry) is not a function's entry point. Only
/// the layout GNU ld and lld write is read (table `datarel|sdata4`, FDEs `pcrel|sdata4`, each
/// FDE's start matching its table entry); anything else, or code without unwind information,
/// gives `None`.
fn inside_function(img: &Image<'_>, addr: u64) -> Option<(u64, u64)> {
    let ph = img.phdrs.iter().find(|p| p.p_type == PT_GNU_EH_FRAME)?;
    let hdr = img.mapped(ph.vaddr, ph.filesz)?;
    if hdr.get(..4)? != [1, 0x1b, 0x03, 0x3b] {
        return None;
    }
    let count = u32_at(hdr, 8)?;
    let rel = |base: u64, at: u64| -> Option<u64> {
        let v = u32_at(hdr, at)? as i32;
        Some(base.wrapping_add(v as i64 as u64))
    };
    for i in 0..u64::from(count).min(1 << 16) {
        let start = rel(ph.vaddr, 12 + i * 8)?;
        if start >= addr {
            break; // the table is sorted
        }
        let fde = rel(ph.vaddr, 16 + i * 8)?;
        let Some(f) = img.mapped(fde, 16) else { continue };
        let pc_begin = fde.wrapping_add(8).wrapping_add(u32_at(f, 8)? as i32 as i64 as u64);
        let range = u64::from(u32_at(f, 12)?);
        if pc_begin == start && addr < start.saturating_add(range) {
            return Some((start, start + range));
        }
    }
    None
}

fn relocations(img: &Image<'_>) -> Result<(), String> {
    let d = &img.dynamic;
    let m = img.machine;
    let relacount = d.relacount.unwrap_or(0);
    let mut guarded = Guarded::new(img);
    for (what, addr, size) in [("DT_RELA", d.rela, d.relasz), ("DT_JMPREL", d.jmprel, d.pltrelsz)] {
        let Some(addr) = addr else { continue };
        let table = img.mapped(addr, size.unwrap_or(0)).unwrap_or(&[]);
        for k in 0..table.len() as u64 / RELAENT {
            let o = k * RELAENT;
            let (off, info, addend) = (
                u64_at(table, o).unwrap_or(0),
                u64_at(table, o + 8).unwrap_or(0),
                u64_at(table, o + 16).unwrap_or(0),
            );
            let (sym, r_type) = (info >> 32, info as u32);
            let at = || format!("relocation {k} of {what} (r_offset {off:#x}, type {r_type})");
            if what == "DT_RELA" && k < relacount && r_type != relative_type(m) {
                return Err(format!(
                    "{}: DT_RELACOUNT ({relacount}) says it is a relative relocation, but it is not \
                     (ld.so would apply it as one)",
                    at()
                ));
            }
            if r_type == copy_type(m) {
                return Err(format!("{}: a copy relocation, not allowed in a shared object", at()));
            }
            let Some(width) = reloc_width(m, r_type) else {
                return Err(format!("{}: relocation type not handled for a shared object", at()));
            };
            if sym >= img.nsyms {
                return Err(format!(
                    "{}: symbol index {sym} is not below the number of dynamic symbols ({})",
                    at(),
                    img.nsyms
                ));
            }
            let binds_symbol = matches!(
                (m, r_type),
                (EM_X86_64, R_X86_64_GLOB_DAT | R_X86_64_JUMP_SLOT)
                    | (EM_AARCH64, R_AARCH64_GLOB_DAT | R_AARCH64_JUMP_SLOT)
            );
            if binds_symbol && sym == 0 {
                return Err(format!(
                    "{}: binds symbol 0 (STN_UNDEF), which ld.so would resolve to the module's \
                     own load address",
                    at()
                ));
            }
            if width > 0 && !writable(img, off, width) {
                return Err(format!(
                    "{}: the {width} bytes it writes are not inside a writable PT_LOAD segment",
                    at()
                ));
            }
            if r_type == irelative_type(m) && !img.load_at(addend).is_some_and(Phdr::executable) {
                return Err(format!(
                    "{}: IRELATIVE resolver at {addend:#x} is not inside an executable PT_LOAD \
                     segment (ld.so would call it)",
                    at()
                ));
            }
            if width > 0 {
                let target = if r_type == relative_type(m) {
                    Some(addend)
                } else if matches!(r_type, R_X86_64_64 | R_AARCH64_ABS64) {
                    img.sym(sym)
                        .filter(|s| s.defined() && s.kind() == STT_FUNC)
                        .map(|s| s.value.wrapping_add(addend))
                } else {
                    None
                };
                guarded.write(img, off, width, target, &at)?;
            }
        }
    }
    if let Some(addr) = d.relr {
        let table = img.mapped(addr, d.relrsz.unwrap_or(0)).unwrap_or(&[]);
        let mut base = 0u64;
        for k in 0..table.len() as u64 / 8 {
            let e = u64_at(table, k * 8).unwrap_or(0);
            let mut relocate = |w: u64| -> Result<(), String> {
                let at = || format!("DT_RELR entry {k} (relocating {w:#x})");
                if !writable(img, w, 8) {
                    return Err(format!(
                        "{}: the 8 bytes it writes are not inside a writable PT_LOAD segment",
                        at()
                    ));
                }
                let target = img.mapped(w, 8).and_then(|b| u64_at(b, 0));
                guarded.write(img, w, 8, target, &at)
            };
            if e & 1 == 0 {
                relocate(e)?;
                base = e.wrapping_add(8);
            } else {
                for bit in 1..64u64 {
                    if (e >> bit) & 1 == 1 {
                        relocate(base.wrapping_add((bit - 1) * 8))?;
                    }
                }
                base = base.wrapping_add(63 * 8);
            }
        }
    }
    guarded.all_covered()
}

/// Whether `name` is a library `ld.so` will have in this object's search list for a
/// `DT_VERNEED` record (`find_needed` asserts that it finds one).
fn known_library(img: &Image<'_>, name: &[u8]) -> bool {
    img.needed().any(|n| n == name)
        || img.dyn_entries().any(|(t, v)| t == DT_SONAME && img.str_at(v) == name)
        || matches!(name, b"ld-linux-x86-64.so.2" | b"ld-linux-aarch64.so.1")
}

/// Most records a version chain may have when its count tag is missing.
const MAX_VERSIONS: u64 = 4096;

fn versions(img: &Image<'_>) -> Result<(), String> {
    let d = &img.dynamic;
    let strsz = img.strtab.len() as u64;
    let mut ndx_high = 0u16;
    let name_ok = |what: &str, off: u32| -> Result<(), String> {
        if u64::from(off) < strsz {
            Ok(())
        } else {
            Err(format!(
                "{what}: name offset {off:#x} is not inside the string table (DT_STRSZ {strsz:#x})"
            ))
        }
    };
    if let Some(start) = d.verneed {
        let count = d.verneednum.unwrap_or(MAX_VERSIONS);
        let (mut ent, mut n) = (start, 0u64);
        loop {
            n += 1;
            if n > count {
                return Err(format!(
                    "version needs (DT_VERNEED {start:#x}): the chain has more than \
                     DT_VERNEEDNUM ({count}) records"
                ));
            }
            let what = format!("version need record {n} at {ent:#x}");
            let rec = img.table(&format!("version need record {n}"), ent, 16)?;
            let (ver, cnt, file, aux_off, next) = (
                u16_at(rec, 0).unwrap_or(0),
                u16_at(rec, 2).unwrap_or(0),
                u32_at(rec, 4).unwrap_or(0),
                u32_at(rec, 8).unwrap_or(0),
                u32_at(rec, 12).unwrap_or(0),
            );
            if ver != 1 {
                return Err(format!("{what}: vn_version is {ver}, not 1"));
            }
            name_ok(&what, file)?;
            let lib = img.str_at(u64::from(file));
            if !known_library(img, lib) {
                return Err(format!(
                    "{what}: vn_file {:?} is not one of the DT_NEEDED libraries (ld.so asserts \
                     that it is)",
                    String::from_utf8_lossy(lib)
                ));
            }
            let mut aux = ent.checked_add(u64::from(aux_off)).ok_or("vn_aux overflows")?;
            let mut naux = 0u64;
            loop {
                naux += 1;
                if naux > u64::from(cnt) {
                    return Err(format!("{what}: more auxiliary records than vn_cnt ({cnt})"));
                }
                let awhat = format!("{what}, auxiliary record {naux}");
                let a = img.table(&awhat, aux, 16)?;
                name_ok(&awhat, u32_at(a, 8).unwrap_or(0))?;
                ndx_high = ndx_high.max(u16_at(a, 6).unwrap_or(0) & 0x7fff);
                let anext = u32_at(a, 12).unwrap_or(0);
                if anext == 0 {
                    break;
                }
                aux = aux.checked_add(u64::from(anext)).ok_or("vna_next overflows")?;
            }
            if naux != u64::from(cnt) {
                return Err(format!("{what}: vn_cnt is {cnt} but the chain has {naux} records"));
            }
            if next == 0 {
                break;
            }
            ent = ent.checked_add(u64::from(next)).ok_or("vn_next overflows")?;
        }
        if let Some(c) = d.verneednum.filter(|&c| c != n) {
            return Err(format!(
                "version needs (DT_VERNEED {start:#x}): DT_VERNEEDNUM is {c} but the chain has \
                 {n} records"
            ));
        }
    }
    if let Some(start) = d.verdef {
        let count = d.verdefnum.unwrap_or(MAX_VERSIONS);
        let (mut ent, mut n) = (start, 0u64);
        loop {
            n += 1;
            if n > count {
                return Err(format!(
                    "version definitions (DT_VERDEF {start:#x}): the chain has more than \
                     DT_VERDEFNUM ({count}) records"
                ));
            }
            let what = format!("version definition record {n} at {ent:#x}");
            let rec = img.table(&format!("version definition record {n}"), ent, 20)?;
            let (ver, ndx, cnt, aux_off, next) = (
                u16_at(rec, 0).unwrap_or(0),
                u16_at(rec, 4).unwrap_or(0),
                u16_at(rec, 6).unwrap_or(0),
                u32_at(rec, 12).unwrap_or(0),
                u32_at(rec, 16).unwrap_or(0),
            );
            if ver != 1 {
                return Err(format!("{what}: vd_version is {ver}, not 1"));
            }
            if cnt == 0 {
                return Err(format!("{what}: vd_cnt is 0 (ld.so reads its first name)"));
            }
            ndx_high = ndx_high.max(ndx & 0x7fff);
            let mut aux = ent.checked_add(u64::from(aux_off)).ok_or("vd_aux overflows")?;
            for k in 1..=u64::from(cnt) {
                let awhat = format!("{what}, name record {k}");
                let a = img.table(&awhat, aux, 8)?;
                name_ok(&awhat, u32_at(a, 0).unwrap_or(0))?;
                let anext = u32_at(a, 4).unwrap_or(0);
                if k < u64::from(cnt) {
                    if anext == 0 {
                        return Err(format!("{what}: vd_cnt is {cnt} but the chain has {k} names"));
                    }
                    aux = aux.checked_add(u64::from(anext)).ok_or("vda_next overflows")?;
                }
            }
            if next == 0 {
                break;
            }
            ent = ent.checked_add(u64::from(next)).ok_or("vd_next overflows")?;
        }
        if let Some(c) = d.verdefnum.filter(|&c| c != n) {
            return Err(format!(
                "version definitions (DT_VERDEF {start:#x}): DT_VERDEFNUM is {c} but the chain \
                 has {n} records"
            ));
        }
    }
    if d.versym.is_some() {
        for i in 0..img.nsyms {
            let v = img.versym(i).unwrap_or(0) & 0x7fff;
            if v > ndx_high {
                return Err(format!(
                    "dynamic symbol {i}: version index {v} (DT_VERSYM) is above the highest \
                     defined or needed version index {ndx_high} (ld.so indexes its version \
                     array with it unchecked)"
                ));
            }
        }
    }
    Ok(())
}
