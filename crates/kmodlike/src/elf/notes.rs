//! The notes of `PT_NOTE` and `PT_GNU_PROPERTY` segments. `ld.so` walks the GNU property
//! note in memory while mapping the object (`_dl_process_pt_gnu_property`), trusting each
//! note's `n_namesz`/`n_descsz` and each property's `pr_datasz`; a size running past the
//! segment would have it read beyond it.

use object::elf::NT_GNU_PROPERTY_TYPE_0;

use super::bytes::{slice, u32_at};

/// Walk the notes of a `PT_NOTE`/`PT_GNU_PROPERTY` segment: every note, and every property of
/// a GNU property note, must fit (ld.so walks the properties in memory, trusting `n_descsz`).
pub(super) fn check_notes(notes: &[u8], align: u64) -> Result<(), String> {
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
