//! The structural checks, one refusal class at a time, on hand-made mutations of real modules
//! built from `tests/modules/*.c`; and the exact export lookup of `FileFacts`.

use std::path::Path;

use object::elf::*;
use object::read::elf::{FileHeader, SectionHeader};
use object::Endianness;

use super::check_before_dlopen;
use crate::error::Error;
use crate::facts::FileFacts;

fn module(stem: &str) -> Vec<u8> {
    let path = kmodlike_testsupport::test_module(stem, &format!("elfcheck_{stem}"), &[]);
    std::fs::read(path).unwrap()
}

/// `(file offset, address, size)` of a section, found through the section headers.
fn section(data: &[u8], name: &str) -> (usize, u64, usize) {
    let h = FileHeader64::<Endianness>::parse(data).unwrap();
    let e = h.endian().unwrap();
    let sections = h.sections(e, data).unwrap();
    let (_, s) = sections.section_by_name(e, name.as_bytes()).unwrap();
    (s.sh_offset(e) as usize, s.sh_addr(e), s.sh_size(e) as usize)
}

/// File offset of the value of the first dynamic entry with `tag`.
fn dyn_value(data: &[u8], tag: u32) -> usize {
    let (off, _, size) = section(data, ".dynamic");
    (off..off + size)
        .step_by(16)
        .find(|&o| u64::from_le_bytes(data[o..o + 8].try_into().unwrap()) == u64::from(tag))
        .map(|o| o + 8)
        .unwrap_or_else(|| panic!("no dynamic tag {tag:#x}"))
}

fn put(data: &mut [u8], off: usize, bytes: &[u8]) {
    data[off..off + bytes.len()].copy_from_slice(bytes);
}

fn get64(data: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(data[off..off + 8].try_into().unwrap())
}

/// File offset of the first program header of type `p_type`.
fn phdr(data: &[u8], p_type: u32) -> usize {
    (0..u16::from_le_bytes([data[56], data[57]]) as usize)
        .map(|i| 64 + i * 56)
        .find(|&o| u32::from_le_bytes(data[o..o + 4].try_into().unwrap()) == p_type)
        .unwrap()
}

/// The refusal of `data`: a `MalformedElf` error whose message names the file.
fn refusal(data: &[u8]) -> String {
    let e = check_before_dlopen(Path::new("/m/bad.so"), data).expect_err("should be refused");
    assert!(matches!(e, Error::MalformedElf { .. }), "{e}");
    assert_eq!(e.kind(), crate::ErrorKind::LoadFailed);
    let msg = e.to_string();
    assert!(msg.starts_with("/m/bad.so: malformed ELF file, not passed to dlopen: "), "{msg}");
    msg
}

fn assert_refused(data: &[u8], expected: &str) {
    let msg = refusal(data);
    assert!(msg.contains(expected), "expected {expected:?} in {msg:?}");
}

#[test]
fn good_modules_and_system_libraries_pass() {
    for stem in ["counter", "thread_log", "uses_libm"] {
        let data = module(stem);
        check_before_dlopen(Path::new(stem), &data).unwrap();
    }
    for lib in
        ["/proc/self/exe", "/lib/x86_64-linux-gnu/libc.so.6", "/lib/x86_64-linux-gnu/libm.so.6"]
    {
        if let Ok(data) = std::fs::read(lib) {
            check_before_dlopen(Path::new(lib), &data).unwrap();
        }
    }
}

#[test]
fn elf_header_fields() {
    let good = module("counter");
    let mut d = good.clone();
    put(&mut d, 54, &32u16.to_le_bytes());
    assert_refused(&d, "e_phentsize is 32, not 56");
    let mut d = good.clone();
    put(&mut d, 56, &0xffffu16.to_le_bytes());
    assert_refused(&d, "e_phnum is PN_XNUM");
    let mut d = good.clone();
    put(&mut d, 52, &52u16.to_le_bytes());
    assert_refused(&d, "e_ehsize is 52, not 64");
    let mut d = good;
    put(&mut d, 58, &40u16.to_le_bytes());
    assert_refused(&d, "e_shentsize is 40, not 64");
}

#[test]
fn program_headers() {
    let good = module("counter");
    // Swap the first two PT_LOAD headers.
    let first = phdr(&good, PT_LOAD);
    let mut d = good.clone();
    let (a, b) = (good[first..first + 56].to_vec(), good[first + 56..first + 112].to_vec());
    put(&mut d, first, &b);
    put(&mut d, first + 56, &a);
    assert_refused(&d, "program header 1: PT_LOAD segments are not in ascending p_vaddr order");

    let mut d = good.clone();
    put(&mut d, first + 48, &0x3000u64.to_le_bytes());
    assert_refused(&d, "program header 0: PT_LOAD p_align 0x3000 is not a power of two");

    let mut d = good.clone();
    put(&mut d, first + 56 + 16, &0x1010u64.to_le_bytes()); // p_vaddr of the code segment
    assert_refused(&d, "address/offset not page-aligned");

    let mut d = good.clone();
    put(&mut d, first + 56 + 8, &0u64.to_le_bytes()); // the code segment maps the headers
    assert_refused(
        &d,
        "program header 1: PT_LOAD file bytes [0x0, 0x135) overlap those of program header 0",
    );

    let mut d = good.clone();
    put(&mut d, first + 40, &0x2000u64.to_le_bytes()); // first segment now overlaps the second
    assert_refused(&d, "overlaps the one of program header 0");

    let mut d = good.clone();
    put(&mut d, first + 3 * 56 + 40, &(1u64 << 31).to_le_bytes());
    assert_refused(&d, "more than 1 GiB");

    let stack = phdr(&good, PT_GNU_STACK);
    let mut d = good.clone();
    put(&mut d, stack + 4, &(PF_R | PF_W | PF_X).to_le_bytes());
    assert_refused(&d, "PT_GNU_STACK asks for an executable stack");

    let dynamic = phdr(&good, PT_DYNAMIC);
    let mut d = good.clone();
    put(&mut d, dynamic, &PT_NULL.to_le_bytes());
    assert_refused(&d, "0 PT_DYNAMIC segments, not exactly one");
    let mut d = good.clone();
    put(&mut d, dynamic + 16, &0x1_0000u64.to_le_bytes());
    assert_refused(&d, "PT_DYNAMIC [0x10000, 0x10150) is not inside the file-backed part");

    let note = phdr(&good, PT_NOTE);
    let note_off = get64(&good, note + 8) as usize;
    let mut d = good.clone();
    put(&mut d, note_off + 4, &0x1000u32.to_le_bytes()); // n_descsz
    assert_refused(&d, "PT_NOTE: note at offset 0x0 (n_namesz 4, n_descsz 4096) runs past");

    let relro = phdr(&good, PT_GNU_RELRO);
    let mut d = good;
    put(&mut d, relro + 16, &0x1000u64.to_le_bytes());
    put(&mut d, relro + 40, &0x10u64.to_le_bytes());
    assert_refused(&d, "PT_GNU_RELRO is not inside a writable PT_LOAD segment");
}

#[test]
fn an_executable_segment_partly_zero_filled_is_refused() {
    let good = module("counter");
    let text = (0..u16::from_le_bytes([good[56], good[57]]) as usize)
        .map(|i| 64 + i * 56)
        .find(|&o| {
            u32::from_le_bytes(good[o..o + 4].try_into().unwrap()) == PT_LOAD
                && u32::from_le_bytes(good[o + 4..o + 8].try_into().unwrap()) & PF_X != 0
        })
        .unwrap();
    let mut d = good;
    put(&mut d, text + 32, &1u64.to_le_bytes());
    assert_refused(&d, "executable segment with p_filesz 0x1 smaller than p_memsz");
}

#[test]
fn dynamic_section() {
    let good = module("thread_log");
    let mut d = good.clone();
    put(&mut d, dyn_value(&good, DT_STRSZ), &0x10_0000u64.to_le_bytes());
    assert_refused(
        &d,
        "dynamic section entry DT_STRSZ (0x100000) runs past the end of the segment that holds \
         DT_STRTAB (0x380)",
    );

    let mut d = good.clone();
    let (off, _, size) = section(&good, ".dynamic");
    for o in (off..off + size).step_by(16) {
        if get64(&good, o) == 0 {
            put(&mut d, o, &u64::from(DT_DEBUG).to_le_bytes());
        }
    }
    assert_refused(&d, "has no DT_NULL entry");

    let mut d = good.clone();
    put(&mut d, dyn_value(&good, DT_RELAENT), &16u64.to_le_bytes());
    assert_refused(&d, "dynamic section entry DT_RELAENT is 16, not 24");

    let mut d = good.clone();
    put(&mut d, dyn_value(&good, DT_PLTREL), &u64::from(DT_REL).to_le_bytes());
    assert_refused(&d, "dynamic section entry DT_PLTREL is 17, not DT_RELA (7)");

    let mut d = good.clone();
    put(&mut d, dyn_value(&good, DT_PLTRELSZ), &0x18_0000u64.to_le_bytes());
    assert_refused(
        &d,
        "DT_PLTRELSZ (0x180000) runs past the end of the segment that holds DT_JMPREL",
    );

    let mut d = good.clone();
    put(&mut d, dyn_value(&good, DT_SYMENT) - 8, &u64::from(DT_TEXTREL).to_le_bytes());
    assert_refused(&d, "text relocations (DT_TEXTREL)");

    let mut d = good.clone();
    put(&mut d, dyn_value(&good, DT_INIT_ARRAY) - 8, &u64::from(DT_PREINIT_ARRAY).to_le_bytes());
    assert_refused(&d, "DT_PREINIT_ARRAY (0x3df8) in a shared object");

    let mut d = good.clone();
    put(&mut d, dyn_value(&good, DT_NEEDED), &0x5000u64.to_le_bytes());
    assert_refused(&d, "dynamic section entry DT_NEEDED (0x5000) is not inside the string table");

    let mut d = good.clone();
    put(&mut d, dyn_value(&good, DT_INIT), &0x3e00u64.to_le_bytes());
    assert_refused(&d, "DT_INIT (0x3e00) is not inside an executable PT_LOAD segment");

    let mut d = good.clone();
    put(&mut d, dyn_value(&good, DT_RELACOUNT), &5u64.to_le_bytes());
    assert_refused(&d, "relocation 3 of DT_RELA (r_offset 0x3fc8, type 6): DT_RELACOUNT (5)");

    let mut d = good.clone();
    put(&mut d, dyn_value(&good, DT_GNU_HASH) - 8, &u64::from(DT_DEBUG).to_le_bytes());
    assert_refused(&d, "no hash table (neither DT_GNU_HASH nor DT_HASH)");
}

#[test]
fn hash_table() {
    let good = module("counter");
    let (h, _, _) = section(&good, ".gnu.hash");
    let word = |i: usize| u32::from_le_bytes(good[h + 4 * i..h + 4 * i + 4].try_into().unwrap());
    let (nbuckets, symoffset, bloom) = (word(0) as usize, word(1), word(2) as usize);

    let mut d = good.clone();
    put(&mut d, h + 8, &3u32.to_le_bytes());
    assert_refused(&d, "GNU hash table: bloom filter size 3 is not a power of two");

    let mut d = good.clone();
    put(&mut d, h + 12, &64u32.to_le_bytes());
    assert_refused(&d, "GNU hash table: bloom shift 64 is not below 64");

    let buckets = h + 16 + bloom * 8;
    let mut d = good.clone();
    put(&mut d, buckets, &1u32.to_le_bytes());
    assert_refused(
        &d,
        &format!("bucket 0 starts at symbol 1, below the first hashed symbol {symoffset}"),
    );

    // A bucket whose chain starts far past the segment.
    let mut d = good.clone();
    put(&mut d, buckets + (nbuckets - 1) * 4, &0x10_0000u32.to_le_bytes());
    assert_refused(
        &d,
        "GNU hash table: the chain from symbol 1048576 does not end within the segment",
    );

    // Clear the end-of-chain bits: the last chain then runs on into the next tables.
    let mut d = good.clone();
    let (dynsym, _, _) = section(&good, ".dynsym");
    for o in (buckets + nbuckets * 4..dynsym).step_by(4) {
        d[o] &= !1;
    }
    assert_refused(&d, "the symbol table (DT_SYMTAB, 35 symbols) at 0x298 (0x348 bytes) runs past the end of the segment that holds it");
}

#[test]
fn symbols_and_relocations() {
    let good = module("counter");
    let (sym, _, _) = section(&good, ".dynsym");
    let mut d = good.clone();
    put(&mut d, sym + 5 * 24, &0x9999u32.to_le_bytes());
    assert_refused(
        &d,
        "dynamic symbol 5: st_name 0x9999 is not inside the string table (DT_STRSZ 0x99)",
    );

    let mut d = good.clone();
    put(&mut d, sym + 6 * 24 + 8, &0x7777_0000u64.to_le_bytes());
    assert_refused(&d, "dynamic symbol 6 (bump): st_value 0x77770000 is not inside any PT_LOAD");

    let mut d = good.clone();
    d[sym + 6 * 24 + 4] = (STB_GLOBAL << 4) | STT_TLS;
    assert_refused(
        &d,
        "dynamic symbol 6 (bump): TLS symbol at offset 0x1106 (size 0x10) is not inside the PT_TLS",
    );

    let (rela, _, _) = section(&good, ".rela.dyn");
    let mut d = good.clone();
    put(&mut d, rela, &0x1000u64.to_le_bytes());
    assert_refused(
        &d,
        "relocation 0 of DT_RELA (r_offset 0x1000, type 8): the 8 bytes it writes are not inside a \
         writable PT_LOAD segment",
    );

    let mut d = good.clone();
    put(&mut d, rela + 3 * 24 + 8, &((1u64 << 32) | u64::from(R_X86_64_COPY)).to_le_bytes());
    assert_refused(&d, "relocation 3 of DT_RELA (r_offset 0x3fc8, type 5): a copy relocation");

    let mut d = good.clone();
    put(&mut d, rela + 3 * 24 + 8, &((1u64 << 32) | 99).to_le_bytes());
    assert_refused(&d, "type 99): relocation type not handled for a shared object");

    let mut d = good.clone();
    put(&mut d, rela + 3 * 24 + 8, &((1000u64 << 32) | 6).to_le_bytes());
    assert_refused(&d, "symbol index 1000 is not below the number of dynamic symbols (10)");

    let mut d = good.clone();
    put(&mut d, rela + 3 * 24 + 8, &u64::from(R_X86_64_GLOB_DAT).to_le_bytes());
    assert_refused(&d, "type 6): binds symbol 0 (STN_UNDEF)");

    // The relative relocation that fills .init_array, pointed at data.
    let mut d = good.clone();
    put(&mut d, rela + 16, &0x4000u64.to_le_bytes());
    assert_refused(
        &d,
        "it points an entry of DT_INIT_ARRAY at 0x4000, which is not inside an executable",
    );

    // ... or moved away, leaving the entry unrelocated.
    let mut d = good.clone();
    put(&mut d, rela, &0x4000u64.to_le_bytes());
    assert_refused(&d, "entry 0 of DT_INIT_ARRAY (at 0x3e68) is not relocated");

    // A function the unwind table knows, entered in its middle.
    let mut d = good.clone();
    put(&mut d, rela + 16, &0x1108u64.to_le_bytes());
    assert_refused(&d, "at 0x1108, inside the function at [0x1106, 0x1116) (from .eh_frame_hdr)");

    // An undefined import made hidden (or local): ld.so binds it to the module's own header,
    // and __do_global_dtors_aux calls "__cxa_finalize" there at exit.
    let mut d = good.clone();
    d[sym + 24 + 5] = STV_HIDDEN;
    assert_refused(
        &d,
        "relocation 3 of DT_RELA (r_offset 0x3fc8, type 6): symbol 1 (__cxa_finalize) has \
         non-default visibility but no definition",
    );
    let mut d = good.clone();
    d[sym + 24 + 4] = (STB_LOCAL << 4) | STT_NOTYPE;
    assert_refused(&d, "symbol 1 (__cxa_finalize) has local binding but no definition");

    // The GOT slot of __gmon_start__ filled with the load address (an absolute relocation
    // against symbol 0): _init calls it.
    let mut d = good.clone();
    put(&mut d, rela + 6 * 24 + 8, &u64::from(R_X86_64_64).to_le_bytes());
    assert_refused(&d, "type 1): an absolute relocation against symbol 0");

    // A GOT slot moved by one byte: it overlaps the next slot, and a call goes through the
    // mixed bytes of both.
    let mut d = good.clone();
    put(&mut d, rela + 3 * 24, &0x3fc9u64.to_le_bytes());
    assert_refused(&d, "(r_offset 0x3fc9, type 6): a GOT slot at an unaligned address");
    let mut d = good.clone();
    put(&mut d, rela + 4 * 24, &0x3fccu64.to_le_bytes());
    put(&mut d, rela + 4 * 24 + 8, &u64::from(R_X86_64_64).to_le_bytes());
    put(&mut d, rela + 4 * 24 + 12, &2u32.to_le_bytes());
    assert_refused(
        &d,
        "relocation 3 of DT_RELA (r_offset 0x3fc8) and relocation 4 of DT_RELA (r_offset 0x3fcc) write overlapping",
    );

    let mut d = good;
    put(&mut d, rela + 3 * 24 + 8, &u64::from(R_X86_64_IRELATIVE).to_le_bytes());
    put(&mut d, rela + 3 * 24 + 16, &0x4000u64.to_le_bytes());
    assert_refused(&d, "IRELATIVE resolver at 0x4000 is not inside an executable PT_LOAD segment");
}

#[test]
fn version_tables() {
    let good = module("thread_log");
    let (versym, _, _) = section(&good, ".gnu.version");
    let mut d = good.clone();
    put(&mut d, versym + 2 * 3, &0x7ff0u16.to_le_bytes());
    assert_refused(&d, "dynamic symbol 3: version index 32752 (DT_VERSYM) is above the highest defined or needed version index 3");

    let (vn, _, _) = section(&good, ".gnu.version_r");
    let (strtab, _, _) = section(&good, ".dynstr");
    // Point vn_file at another string of the table (a symbol name).
    let other = good[strtab..].windows(14).position(|w| w == b"pthread_create").unwrap();
    let mut d = good.clone();
    put(&mut d, vn + 4, &(other as u32).to_le_bytes());
    assert_refused(&d, "vn_file \"pthread_create\" is not one of the DT_NEEDED libraries");

    let mut d = good.clone();
    put(&mut d, vn + 2, &5u16.to_le_bytes());
    assert_refused(&d, "version need record 1 at 0x460: vn_cnt is 5 but the chain has 2 records");

    let mut d = good.clone();
    put(&mut d, vn + 8, &0x7000_0000u32.to_le_bytes());
    assert_refused(&d, "version need record 1 at 0x460, auxiliary record 1 at 0x70000460 is not in the file-backed part");

    let mut d = good.clone();
    put(&mut d, dyn_value(&good, DT_VERNEEDNUM), &0u64.to_le_bytes());
    assert_refused(&d, "the chain has more than DT_VERNEEDNUM (0) records");

    let mut d = good;
    put(&mut d, vn + 16 + 8, &0xffffu32.to_le_bytes()); // vna_name
    assert_refused(&d, "name offset 0xffff is not inside the string table");
}

#[test]
fn truncated_files_stay_truncated_errors() {
    let good = module("counter");
    let e = check_before_dlopen(Path::new("cut.so"), &good[..good.len() / 2]).unwrap_err();
    assert!(matches!(e, Error::Truncated { .. }), "{e}");
}

#[test]
fn exports_are_exact_and_come_from_the_dynamic_table() {
    let good = module("counter");
    let check = |data: &[u8]| {
        let facts = FileFacts::read(data).unwrap();
        for name in
            ["module_init", "module_fini", "module_get_interface_version", "bump", "crash_now"]
        {
            assert!(facts.exports(name), "{name}");
        }
        // Not exported: a static, an import, prefixes and extensions of exports, tails of
        // strings in the string table.
        for name in ["calls", "__cxa_finalize", "bum", "bumpy", "module_in", "", "ump", "mod_hello"]
        {
            assert!(!facts.exports(name), "{name}");
        }
        assert!(!facts.nodelete);
        assert!(!facts.may_start_threads);
        assert_eq!(facts.hash_tables.len(), 1);
    };
    check(&good);
    // Without section headers the answer is the same (ld.so never reads them).
    let mut stripped = good.clone();
    put(&mut stripped, 40, &0u64.to_le_bytes());
    put(&mut stripped, 60, &0u16.to_le_bytes());
    put(&mut stripped, 62, &0u16.to_le_bytes());
    check(&stripped);

    // A hidden symbol is not an export.
    let (sym, _, _) = section(&good, ".dynsym");
    let mut d = good;
    d[sym + 6 * 24 + 5] = STV_HIDDEN;
    assert!(!FileFacts::read(&d).unwrap().exports("bump"));
}

#[test]
fn facts_of_a_module_that_starts_threads() {
    let data = module("thread_log");
    let facts = FileFacts::read(&data).unwrap();
    assert!(facts.may_start_threads);
    assert!(facts.exports("module_init"));
    assert!(!facts.exports("pthread_create"));
    let (h, addr, _) = section(&data, ".gnu.hash");
    let nbuckets = u32::from_le_bytes(data[h..h + 4].try_into().unwrap());
    let bloom = u32::from_le_bytes(data[h + 8..h + 12].try_into().unwrap());
    assert_eq!(
        facts.hash_tables,
        vec![(addr + 16 + u64::from(bloom) * 8, u64::from(nbuckets) * 4)]
    );
}
