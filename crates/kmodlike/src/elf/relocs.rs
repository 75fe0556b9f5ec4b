//! The relocation tables `ld.so` applies (`DT_RELA`, `DT_JMPREL`, `DT_RELR`; `elf_dynamic_do_Rela`
//! and `elf_machine_rela`): every relocation of a type this machine's `ld.so` handles for a
//! shared object (no copy relocations), against a symbol that exists, `DT_RELACOUNT` true to
//! its word, writing only inside a writable `PT_LOAD` segment, IRELATIVE resolvers in code, and
//! what each write may touch (see [`reloc_writes`](super::reloc_writes)).

use object::elf::*;

use super::bytes::u64_at;
use super::image::Image;
use super::phdrs::Phdr;
use super::reloc_writes::Guarded;

/// Size of one `Elf64_Rela`.
pub(crate) const RELAENT: u64 = 24;

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

/// A symbol with local binding, or a visibility other than default, is not looked up: ld.so
/// binds a reference to it to the module itself, at `load address + st_value` (`RESOLVE_MAP`
/// in glibc's `dl-machine.h`). Undefined, or of value 0, that is the module's ELF header: a call
/// through the slot runs the header as code.
fn local_binding(img: &Image<'_>, sym: u64, at: &dyn Fn() -> String) -> Result<(), String> {
    let Some(s) = img.sym(sym) else { return Ok(()) };
    let local = s.bind() == STB_LOCAL || s.other & 0x3 != STV_DEFAULT;
    if local && (!s.defined() || s.value == 0) {
        let name = String::from_utf8_lossy(img.str_at(u64::from(s.name)));
        let how = if s.bind() == STB_LOCAL { "local binding" } else { "non-default visibility" };
        return Err(format!(
            "{}: symbol {sym} ({name}) has {how} but {}: ld.so would bind the reference to the \
             module's own load address",
            at(),
            if s.defined() { "value 0" } else { "no definition" }
        ));
    }
    Ok(())
}

/// Two relocations writing overlapping bytes: each overwrites part of what the other wrote, so
/// neither slot holds what either relocation says (no linker writes such a table).
fn overlapping(writes: &mut [(u64, u64, u64, &str)]) -> Result<(), String> {
    writes.sort_unstable();
    for w in writes.windows(2) {
        let ((a_off, a_width, a_k, a_what), (b_off, _, b_k, b_what)) = (w[0], w[1]);
        if b_off < a_off.saturating_add(a_width) && b_off != a_off {
            return Err(format!(
                "relocation {a_k} of {a_what} (r_offset {a_off:#x}) and relocation {b_k} of \
                 {b_what} (r_offset {b_off:#x}) write overlapping bytes"
            ));
        }
    }
    Ok(())
}

pub(super) fn relocations(img: &Image<'_>) -> Result<(), String> {
    let d = &img.dynamic;
    let m = img.machine;
    let relacount = d.relacount.unwrap_or(0);
    let mut guarded = Guarded::new(img);
    let mut writes: Vec<(u64, u64, u64, &str)> = Vec::new();
    for (what, addr, size) in [("DT_RELA", d.rela, d.relasz), ("DT_JMPREL", d.jmprel, d.pltrelsz)] {
        let Some(addr) = addr else { continue };
        let table = img.segments.mapped(addr, size.unwrap_or(0)).unwrap_or(&[]);
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
            if binds_symbol && off % width.max(1) != 0 {
                return Err(format!(
                    "{}: a GOT slot at an unaligned address (linkers align every GOT entry; this \
                     one would overlap its neighbours)",
                    at()
                ));
            }
            if sym == 0
                && matches!((m, r_type), (EM_X86_64, R_X86_64_64) | (EM_AARCH64, R_AARCH64_ABS64))
            {
                return Err(format!(
                    "{}: an absolute relocation against symbol 0, which ld.so would resolve to the \
                     module's own load address (linkers write a relative relocation for that)",
                    at()
                ));
            }
            if binds_symbol && sym == 0 {
                return Err(format!(
                    "{}: binds symbol 0 (STN_UNDEF), which ld.so would resolve to the module's \
                     own load address",
                    at()
                ));
            }
            if sym != 0 && r_type != relative_type(m) && r_type != irelative_type(m) {
                local_binding(img, sym, &at)?;
            }
            if width > 0 && !img.segments.writable(off, width) {
                return Err(format!(
                    "{}: the {width} bytes it writes are not inside a writable PT_LOAD segment",
                    at()
                ));
            }
            if r_type == irelative_type(m)
                && !img.segments.load_at(addend).is_some_and(Phdr::executable)
            {
                return Err(format!(
                    "{}: IRELATIVE resolver at {addend:#x} is not inside an executable PT_LOAD \
                     segment (ld.so would call it)",
                    at()
                ));
            }
            if width > 0 {
                writes.push((off, width, k, what));
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
    overlapping(&mut writes)?;
    if let Some(addr) = d.relr {
        let table = img.segments.mapped(addr, d.relrsz.unwrap_or(0)).unwrap_or(&[]);
        let mut base = 0u64;
        for k in 0..table.len() as u64 / 8 {
            let e = u64_at(table, k * 8).unwrap_or(0);
            let mut relocate = |w: u64| -> Result<(), String> {
                let at = || format!("DT_RELR entry {k} (relocating {w:#x})");
                if !img.segments.writable(w, 8) {
                    return Err(format!(
                        "{}: the 8 bytes it writes are not inside a writable PT_LOAD segment",
                        at()
                    ));
                }
                let target = img.segments.mapped(w, 8).and_then(|b| u64_at(b, 0));
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
