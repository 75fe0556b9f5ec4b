//! Classifies a file that `dlopen` refused, so the error says *why* in our words (empty, not
//! ELF, truncated, wrong architecture, not a shared object) while keeping the `dlerror` text.
//!
//! Before `dlopen`, [`check_before_dlopen`] also checks the structure `ld.so` trusts, so a
//! malformed file is refused with a precise error instead of crashing the process inside the
//! dynamic linker. Parsing builds an [`image::Image`] from the bottom up, each layer using only
//! those below it: [`bytes`] (bounds-checked reads), [`phdrs`] (ELF header, program headers and
//! the mapping they describe; [`notes`] for note segments), [`dynamic`] (the dynamic section and
//! string table), [`hash`] (the hash table, which sizes the symbol table), [`image`] (all of it,
//! and the dynamic symbols). The checks then run on the image: [`check`] (the dynamic tags'
//! tables), [`symbols`], [`relocs`] (with [`reloc_writes`]) and [`versions`].
//!
//! Nothing is mapped or executed.

use std::path::Path;

pub(crate) mod bytes;
mod check;
mod dynamic;
pub(crate) mod hash;
pub(crate) mod image;
mod notes;
mod phdrs;
mod reloc_writes;
pub(crate) mod relocs;
mod symbols;
mod versions;

use crate::error::Error;

const EI_CLASS: usize = 4;
const EI_DATA: usize = 5;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ET_DYN: u16 = 3;

/// This machine's `e_machine` and class.
#[cfg(target_arch = "x86_64")]
const HOST: (u16, u8) = (62, ELFCLASS64);
#[cfg(target_arch = "aarch64")]
const HOST: (u16, u8) = (183, ELFCLASS64);
#[cfg(target_arch = "x86")]
const HOST: (u16, u8) = (3, ELFCLASS32);
#[cfg(target_arch = "arm")]
const HOST: (u16, u8) = (40, ELFCLASS32);
#[cfg(target_arch = "riscv64")]
const HOST: (u16, u8) = (243, ELFCLASS64);

fn machine_name(machine: u16) -> String {
    match machine {
        3 => "x86 (EM_386)".into(),
        8 => "MIPS (EM_MIPS)".into(),
        20 => "PowerPC (EM_PPC)".into(),
        21 => "PowerPC64 (EM_PPC64)".into(),
        22 => "s390 (EM_S390)".into(),
        40 => "ARM (EM_ARM)".into(),
        62 => "x86-64 (EM_X86_64)".into(),
        183 => "AArch64 (EM_AARCH64)".into(),
        243 => "RISC-V (EM_RISCV)".into(),
        m => format!("machine {m}"),
    }
}

fn class_name(class: u8) -> &'static str {
    match class {
        ELFCLASS32 => "32-bit",
        ELFCLASS64 => "64-bit",
        _ => "unknown-class",
    }
}

/// Describe this machine, e.g. `"64-bit x86-64 (EM_X86_64)"`.
pub(crate) fn host_description() -> String {
    format!("{} {}", class_name(HOST.1), machine_name(HOST.0))
}

fn u16_at(b: &[u8], off: usize, le: bool) -> u16 {
    let v = [b[off], b[off + 1]];
    if le {
        u16::from_le_bytes(v)
    } else {
        u16::from_be_bytes(v)
    }
}

fn u32_at(b: &[u8], off: usize, le: bool) -> u32 {
    let v = [b[off], b[off + 1], b[off + 2], b[off + 3]];
    if le {
        u32::from_le_bytes(v)
    } else {
        u32::from_be_bytes(v)
    }
}

fn u64_at(b: &[u8], off: usize, le: bool) -> u64 {
    let mut v = [0u8; 8];
    v.copy_from_slice(&b[off..off + 8]);
    if le {
        u64::from_le_bytes(v)
    } else {
        u64::from_be_bytes(v)
    }
}

/// Where the file is shorter than its own headers say: the program header table, a segment, or
/// the section header table running past the end. `None` when everything lies within it.
fn truncation(data: &[u8], class: u8, le: bool) -> Option<String> {
    let (phoff, phentsize, phnum, shoff, shentsize, shnum) = if class == ELFCLASS64 {
        (
            u64_at(data, 32, le),
            u16_at(data, 54, le) as u64,
            u16_at(data, 56, le) as u64,
            u64_at(data, 40, le),
            u16_at(data, 58, le) as u64,
            u16_at(data, 60, le) as u64,
        )
    } else {
        (
            u32_at(data, 28, le) as u64,
            u16_at(data, 42, le) as u64,
            u16_at(data, 44, le) as u64,
            u32_at(data, 32, le) as u64,
            u16_at(data, 46, le) as u64,
            u16_at(data, 48, le) as u64,
        )
    };
    let len = data.len() as u64;
    let ph_end = phoff.saturating_add(phentsize.saturating_mul(phnum));
    if ph_end > len {
        return Some(format!("program headers end at byte {ph_end} but the file has {len} bytes"));
    }
    if class == ELFCLASS64 && phentsize >= 56 {
        for i in 0..phnum {
            let off = (phoff + i * phentsize) as usize;
            let p_type = u32_at(data, off, le);
            let p_offset = u64_at(data, off + 8, le);
            let p_filesz = u64_at(data, off + 32, le);
            let end = p_offset.saturating_add(p_filesz);
            if end > len {
                let what = match p_type {
                    1 => "loadable segment",
                    2 => "dynamic segment",
                    _ => "segment",
                };
                return Some(format!("{what} {i} ends at byte {end} but the file has {len} bytes"));
            }
        }
    }
    let sh_end = shoff.saturating_add(shentsize.saturating_mul(shnum));
    if shnum > 0 && sh_end > len {
        return Some(format!("section headers end at byte {sh_end} but the file has {len} bytes"));
    }
    None
}

/// Refuse, before `dlopen`, an ELF file for this machine that is shorter than its headers say
/// (`dlopen` would map it and fault, SIGBUS, reading past its end inside ld.so) or whose
/// structure ld.so would trust and crash on (see [`check`]). Other files (not ELF, another
/// machine, not a shared object) are left to `dlopen`, which refuses them cleanly, and to
/// [`classify_bytes`].
pub(crate) fn check_before_dlopen(path: &Path, data: &[u8]) -> crate::error::Result<()> {
    if data.len() < 64 || &data[..4] != b"\x7fELF" {
        return Ok(()); // dlopen refuses these cleanly; classify_bytes says why
    }
    let (class, le) = (data[EI_CLASS], data[EI_DATA] != 2);
    if (u16_at(data, 18, le), class) != HOST {
        return Ok(());
    }
    let is_dyn64 = class == ELFCLASS64 && le && u16_at(data, 16, le) == ET_DYN;
    let malformed = |detail| Error::MalformedElf { path: path.to_owned(), detail };
    if is_dyn64 {
        phdrs::check_header(data).map_err(malformed)?;
    }
    if let Some(detail) = truncation(data, class, le) {
        return Err(Error::Truncated {
            path: path.to_owned(),
            detail,
            dlerror: "not passed to dlopen, which would fault reading past the end of the file"
                .to_owned(),
        });
    }
    if !is_dyn64 {
        return Ok(());
    }
    image::Image::parse(data).and_then(|img| check::validate(&img)).map_err(malformed)
}

/// Turn a `dlopen` failure of these bytes into the most precise error their header supports.
pub(crate) fn classify_bytes(path: &Path, data: &[u8], dlerror: String) -> Error {
    let path_buf = path.to_path_buf();
    if data.is_empty() {
        return Error::EmptyFile { path: path_buf, dlerror };
    }
    if data.len() < 4 || &data[..4] != b"\x7fELF" {
        if data.len() < 4 && b"\x7fELF".starts_with(data) {
            let detail = format!("{} bytes, shorter than the ELF magic", data.len());
            return Error::Truncated { path: path_buf, detail, dlerror };
        }
        return Error::NotElf { path: path_buf, dlerror };
    }
    let class = data.get(EI_CLASS).copied().unwrap_or(0);
    let le = data.get(EI_DATA).copied().unwrap_or(1) != 2;
    let ehdr_size = if class == ELFCLASS64 { 64 } else { 52 };
    if data.len() < ehdr_size {
        let detail = format!("{} bytes, shorter than the {ehdr_size}-byte ELF header", data.len());
        return Error::Truncated { path: path_buf, detail, dlerror };
    }
    let machine = u16_at(data, 18, le);
    if (machine, class) != HOST {
        return Error::WrongArchitecture {
            path: path_buf,
            found: format!("{} {}", class_name(class), machine_name(machine)),
            expected: host_description(),
            dlerror,
        };
    }
    let e_type = u16_at(data, 16, le);
    if e_type != ET_DYN {
        let detail = match e_type {
            1 => "ET_REL (a relocatable object: link it with -shared)".to_owned(),
            2 => "ET_EXEC (an executable)".to_owned(),
            4 => "ET_CORE (a core dump)".to_owned(),
            t => format!("ELF type {t}"),
        };
        return Error::NotSharedObject { path: path_buf, detail, dlerror };
    }
    if let Some(detail) = truncation(data, class, le) {
        return Error::Truncated { path: path_buf, detail, dlerror };
    }
    Error::LoadFailed { path: path_buf, dlerror }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ErrorKind;

    fn classify(bytes: &[u8]) -> Error {
        classify_bytes(Path::new("test.so"), bytes, "dlerror text".into())
    }

    fn own_exe_header() -> Vec<u8> {
        std::fs::read("/proc/self/exe").unwrap()
    }

    #[test]
    fn empty_file_is_reported_as_empty() {
        assert!(matches!(classify(b""), Error::EmptyFile { .. }));
    }

    #[test]
    fn text_file_is_not_elf_and_keeps_dlerror() {
        let e = classify(b"hello, I am text\n");
        assert!(matches!(e, Error::NotElf { .. }));
        assert!(e.to_string().contains("dlerror text"));
        assert_eq!(e.kind(), ErrorKind::LoadFailed);
    }

    #[test]
    fn short_header_is_truncated() {
        let exe = own_exe_header();
        assert!(matches!(classify(&exe[..40]), Error::Truncated { .. }));
    }

    #[test]
    fn cut_file_is_truncated() {
        let exe = own_exe_header();
        let e = classify(&exe[..exe.len() / 2]);
        assert!(matches!(e, Error::Truncated { .. }), "{e}");
    }

    #[test]
    fn a_truncated_library_is_refused_before_dlopen() {
        let exe = own_exe_header();
        let cut = &exe[..exe.len() / 3];
        let e = check_before_dlopen(Path::new("cut.so"), cut).unwrap_err();
        assert!(matches!(e, Error::Truncated { .. }), "{e}");
        assert!(e.to_string().contains("but the file has"), "{e}");
        assert!(check_before_dlopen(Path::new("whole"), &exe).is_ok());
    }

    #[test]
    fn other_machine_is_wrong_architecture() {
        let mut exe = own_exe_header();
        let other: u16 = if HOST.0 == 40 { 62 } else { 40 }; // ARM, or x86-64 on ARM
        exe[18..20].copy_from_slice(&other.to_le_bytes());
        let e = classify(&exe);
        assert!(matches!(e, Error::WrongArchitecture { .. }), "{e}");
        assert!(e.to_string().contains(&host_description()));
    }
}

#[cfg(test)]
mod structure_tests;
