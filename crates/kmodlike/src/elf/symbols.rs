//! The dynamic symbols `ld.so` may bind to or call: every name inside the string table, every
//! defined value inside a `PT_LOAD` segment (a TLS symbol inside `PT_TLS`), and every IFUNC
//! resolver in code, since `ld.so` calls it while relocating (`elf_ifunc_invoke`).

use object::elf::*;

use super::image::Image;
use super::phdrs::Phdr;

pub(super) fn symbols(img: &Image<'_>) -> Result<(), String> {
    let strsz = img.strtab.len() as u64;
    let tls = img.segments.phdrs.iter().find(|p| p.p_type == PT_TLS && p.memsz > 0);
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
        let inside =
            s.value == 0 || img.segments.loads().any(|p| p.vaddr <= s.value && s.value <= p.end());
        if !inside {
            return Err(format!(
                "dynamic symbol {i} ({name}): st_value {:#x} is not inside any PT_LOAD segment",
                s.value
            ));
        }
        if s.kind() == STT_GNU_IFUNC && !img.segments.load_at(s.value).is_some_and(Phdr::executable)
        {
            return Err(format!(
                "dynamic symbol {i} ({name}): IFUNC resolver at {:#x} is not inside an executable \
                 PT_LOAD segment (ld.so would call it)",
                s.value
            ));
        }
    }
    Ok(())
}
