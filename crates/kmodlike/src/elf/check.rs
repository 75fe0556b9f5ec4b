//! The checks `ld.so` does not make: every table of a parsed [`Image`] that glibc 2.36 walks
//! while relocating and looking up symbols (`elf/do-rel.h`, `elf/dl-lookup.c`,
//! `elf/dl-version.c`, `sysdeps/*/dl-machine.h`), bound by bound, so `dlopen` only sees files
//! whose structure it can trust. Each error is the detail of a refusal.
//!
//! Here, the dynamic section's tags against each other and against the segments: no text
//! relocations or `DT_PREINIT_ARRAY`, only `DT_RELA`-style relocation tables whose sizes and
//! entry sizes are consistent and which lie in the file, a writable `DT_PLTGOT`, `DT_INIT` and
//! `DT_FINI` in code, init/fini arrays and `DT_VERSYM` inside what is mapped. Then the symbols
//! ([`symbols`](super::symbols)), relocations ([`relocs`](super::relocs)) and version tables
//! ([`versions`](super::versions)).

use object::elf::*;

use super::dynamic::{tag, DT_RELR, DT_RELRSZ};
use super::image::Image;
use super::phdrs::Phdr;
use super::relocs::{relocations, RELAENT};
use super::symbols::symbols;
use super::versions::versions;

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
    if img.segments.mapped(addr, size).is_none() {
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
        if !img.segments.writable(a, 24) {
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
            if !img.segments.load_at(a).is_some_and(Phdr::executable) {
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
        if img.segments.mapped(a, size).is_none() {
            return Err(format!(
                "the symbol version table (DT_VERSYM {a:#x}) does not hold the {} symbols' \
                 entries within the segment that holds it",
                img.nsyms
            ));
        }
    }
    Ok(())
}
