//! What a relocation may write beyond its own bounds. `ld.so` calls every init/fini array entry
//! once relocated (`call_init`, `_dl_fini`), so each must be relocated, whole, to code, and to
//! a function's start rather than inside one (found from `.eh_frame_hdr`); and no relocation
//! may write the dynamic section, which `ld.so` has already read.

use object::elf::*;

use super::bytes::u32_at;
use super::dynamic::tag;
use super::image::Image;
use super::phdrs::Phdr;

/// What relocations must respect beyond their own bounds: the init/fini arrays, whose entries
/// ld.so calls once relocated (each must be relocated to code), and the dynamic section, which
/// no relocation may write.
pub(super) struct Guarded {
    /// `(tag, start, entries)` of `DT_INIT_ARRAY` and `DT_FINI_ARRAY`.
    arrays: Vec<(u32, u64, u64)>,
    /// Whether each array entry has been relocated, arrays one after the other.
    covered: Vec<bool>,
    dynamic: (u64, u64),
}

impl Guarded {
    pub(super) fn new(img: &Image<'_>) -> Guarded {
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
            .segments
            .phdrs
            .iter()
            .find(|p| p.p_type == PT_DYNAMIC)
            .map_or((0, 0), |p| (p.vaddr, p.file_end()));
        Guarded { arrays, covered: vec![false; total], dynamic }
    }

    /// Check a write of `width` bytes at `off` that stores `target` (a code address, when
    /// known) and record which array entry it relocates.
    pub(super) fn write(
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
                    return Err(format!("{}: it writes across the entries of {}", at(), tag(t)));
                }
                match target {
                    Some(v) if img.segments.load_at(v).is_some_and(Phdr::executable) => {
                        if let Some((fs, fe)) = inside_function(img, v) {
                            return Err(format!(
                                "{}: it points an entry of {} at {v:#x}, inside the function at \
                                 [{fs:#x}, {fe:#x}) (from .eh_frame_hdr) rather than at its start",
                                at(),
                                tag(t)
                            ));
                        }
                    }
                    Some(v) => {
                        return Err(format!(
                            "{}: it points an entry of {} at {v:#x}, which is not inside an \
                             executable PT_LOAD segment (ld.so would call it)",
                            at(),
                            tag(t)
                        ))
                    }
                    None => {
                        return Err(format!(
                            "{}: an entry of {} must be a relative relocation or one against a \
                             defined function",
                            at(),
                            tag(t)
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
    pub(super) fn all_covered(&self) -> Result<(), String> {
        let mut base = 0usize;
        for &(t, start, n) in &self.arrays {
            for j in 0..n as usize {
                if !self.covered.get(base + j).copied().unwrap_or(true) {
                    return Err(format!(
                        "entry {j} of {} (at {:#x}) is not relocated: ld.so would call its \
                         link-time value",
                        tag(t),
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
    let ph = img.segments.phdrs.iter().find(|p| p.p_type == PT_GNU_EH_FRAME)?;
    let hdr = img.segments.mapped(ph.vaddr, ph.filesz)?;
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
        let Some(f) = img.segments.mapped(fde, 16) else { continue };
        let pc_begin = fde.wrapping_add(8).wrapping_add(u32_at(f, 8)? as i32 as i64 as u64);
        let range = u64::from(u32_at(f, 12)?);
        if pc_begin == start && addr < start.saturating_add(range) {
            return Some((start, start + range));
        }
    }
    None
}
