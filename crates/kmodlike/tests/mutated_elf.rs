//! A thousand deterministically mutated copies of a good module (`tests/modules/counter.c`),
//! each loaded by a real [`Loader`] with the probe off and closed again: the host must survive
//! every one. The loads run in a child process (this test binary re-executed for this test
//! alone), which prints one line per copy (`ok N`, `refused N <error>`), so that if the child
//! dies the parent says which copy killed it, and with what signal, and keeps that copy.
//!
//! Mutations flip 1-8 bytes, overwrite 8 bytes with "interesting" values (0, 0xffffffff,
//! 0x7fffffff, large offsets), or truncate the file; at least half of the changed bytes land in
//! the structure ld.so trusts (ELF header, program headers, `.dynamic`, `.dynsym`, `.dynstr`,
//! `.gnu.hash`, `.rela.*`, version tables), found from the good file's section headers.
//!
//! Bytes inside executable `PT_LOAD` file ranges are never changed: that is code (crtstuff's
//! `frame_dummy`/`register_tm_clones`, run from `DT_INIT`/`.init_array` during `dlopen`), not
//! structure, and a module whose constructor code cannot be trusted is what the probe is for.
//! For the same reason the *code pointers* ld.so calls are not changed either: the `r_addend`
//! of the relocations that fill `.init_array`/`.fini_array`, and the values of `DT_INIT` and
//! `DT_FINI`. The validator refuses such a pointer outside executable code, or inside a
//! function the unwind table knows, but a pointer into the middle of code without unwind
//! information (crtstuff's functions have none) looks exactly like a function's entry.

use std::io::Write;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Stdio};

use kmodlike::{Error, Loader};
use object::read::elf::{FileHeader, ProgramHeader, SectionHeader};
use object::Endianness;

/// Copies per run, and the generator's seed: 1,000 from a fixed seed by default; set
/// `KMODLIKE_MUTATIONS` and `KMODLIKE_MUTATION_SEED` to fuzz further (the child inherits them).
fn copies() -> u64 {
    std::env::var("KMODLIKE_MUTATIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(1000)
}

fn seed() -> u64 {
    let parse = |v: String| match v.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => v.parse().ok(),
    };
    std::env::var("KMODLIKE_MUTATION_SEED").ok().and_then(parse).unwrap_or(0x9e37_79b9_7f4a_7c15)
}
const CHILD_ENV: &str = "KMODLIKE_MUTATED_ELF_CHILD";
const FROM_ENV: &str = "KMODLIKE_MUTATED_ELF_FROM";
const TEST_NAME: &str = "a_thousand_mutated_modules_never_kill_the_host";

/// xorshift64*: small, deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Where to mutate: the structural ranges, and the ranges that must not be touched (code).
struct Layout {
    structure: Vec<(usize, usize)>,
    code: Vec<(usize, usize)>,
}

fn layout(data: &[u8]) -> Layout {
    let h = object::elf::FileHeader64::<Endianness>::parse(data).unwrap();
    let e = h.endian().unwrap();
    let mut structure = vec![(0, 64)];
    let phnum = h.e_phnum(e) as usize;
    let phoff = h.e_phoff(e) as usize;
    structure.push((phoff, phoff + phnum * 56));
    let sections = h.sections(e, data).unwrap();
    for name in [
        ".dynamic",
        ".dynsym",
        ".dynstr",
        ".gnu.hash",
        ".hash",
        ".rela.dyn",
        ".rela.plt",
        ".relr.dyn",
        ".gnu.version",
        ".gnu.version_r",
        ".gnu.version_d",
        ".init_array",
        ".fini_array",
        ".note.gnu.property",
        ".note.gnu.build-id",
    ] {
        if let Some((_, s)) = sections.section_by_name(e, name.as_bytes()) {
            let off = s.sh_offset(e) as usize;
            structure.push((off, off + s.sh_size(e) as usize));
        }
    }
    let mut code: Vec<(usize, usize)> = Vec::new();
    let arrays: Vec<(u64, u64)> = [".init_array", ".fini_array"]
        .iter()
        .filter_map(|n| sections.section_by_name(e, n.as_bytes()))
        .map(|(_, s)| (s.sh_addr(e), s.sh_addr(e) + s.sh_size(e)))
        .collect();
    if let Some((_, rela)) = sections.section_by_name(e, b".rela.dyn") {
        let off = rela.sh_offset(e) as usize;
        for r in (off..off + rela.sh_size(e) as usize).step_by(24) {
            let r_offset = u64::from_le_bytes(data[r..r + 8].try_into().unwrap());
            if arrays.iter().any(|&(s, e)| s <= r_offset && r_offset < e) {
                code.push((r + 16, r + 24)); // r_addend: a constructor's address
            }
        }
    }
    if let Some((_, dynamic)) = sections.section_by_name(e, b".dynamic") {
        let off = dynamic.sh_offset(e) as usize;
        for d in (off..off + dynamic.sh_size(e) as usize).step_by(16) {
            let tag = u64::from_le_bytes(data[d..d + 8].try_into().unwrap());
            if tag == u64::from(object::elf::DT_INIT) || tag == u64::from(object::elf::DT_FINI) {
                code.push((d + 8, d + 16));
            }
        }
    }
    code.extend(
        h.program_headers(e, data)
            .unwrap()
            .iter()
            .filter(|p| {
                p.p_type(e) == object::elf::PT_LOAD && p.p_flags(e) & object::elf::PF_X != 0
            })
            .map(|p| (p.p_offset(e) as usize, (p.p_offset(e) + p.p_filesz(e)) as usize)),
    );
    Layout { structure, code }
}

impl Layout {
    fn is_code(&self, off: usize) -> bool {
        self.code.iter().any(|&(s, e)| s <= off && off < e)
    }

    /// A byte offset to change: in the structure at least half of the time, never in code.
    fn pick(&self, rng: &mut Rng, len: usize) -> Option<usize> {
        for _ in 0..64 {
            let off = if rng.below(4) < 3 {
                let (s, e) = self.structure[rng.below(self.structure.len() as u64) as usize];
                s + rng.below((e - s) as u64) as usize
            } else {
                rng.below(len as u64) as usize
            };
            if off < len && !self.is_code(off) {
                return Some(off);
            }
        }
        None
    }
}

const INTERESTING: [u64; 8] =
    [0, 0xffff_ffff, 0x7fff_ffff, 0xffff_ffff_ffff_ffff, 0x1_0000_0000, 0x10_0000, 0x8000, 1];

fn mutate(good: &[u8], lay: &Layout, rng: &mut Rng) -> Vec<u8> {
    let mut d = good.to_vec();
    match rng.below(10) {
        0 => {
            let cut = rng.below(good.len() as u64) as usize;
            d.truncate(cut);
        }
        1..=2 => {
            if let Some(off) = lay.pick(rng, d.len()) {
                let off = off & !3;
                let v = INTERESTING[rng.below(INTERESTING.len() as u64) as usize];
                let width = if rng.below(2) == 0 { 4 } else { 8 };
                for (k, b) in v.to_le_bytes()[..width].iter().enumerate() {
                    if off + k < d.len() && !lay.is_code(off + k) {
                        d[off + k] = *b;
                    }
                }
            }
        }
        _ => {
            for _ in 0..1 + rng.below(8) {
                if let Some(off) = lay.pick(rng, d.len()) {
                    d[off] ^= 1 << rng.below(8);
                    if rng.below(4) == 0 {
                        d[off] = rng.next() as u8;
                    }
                }
            }
        }
    }
    d
}

fn good_module() -> Vec<u8> {
    let path = kmodlike_testsupport::test_module("counter", "counter", &[]);
    std::fs::read(path).unwrap()
}

/// The child: load every copy, one line each.
fn child(dir: &Path, from: u64) {
    let good = good_module();
    let lay = layout(&good);
    let mut rng = Rng(seed());
    let loader = Loader::builder().probe(false).build();
    let out = std::io::stdout();
    println!(); // the harness's "test ... " has no newline of its own
    for n in 0..copies() {
        let data = mutate(&good, &lay, &mut rng);
        if n < from {
            continue;
        }
        let path = dir.join(format!("mutant_{n}.so"));
        std::fs::write(&path, &data).unwrap();
        // SAFETY: a mutated copy of a test module: what this test checks is that the loader
        // refuses, or loads without harm, whatever the mutation did to it.
        let line = match unsafe { loader.open(path.to_str().unwrap()) } {
            Ok(h) => {
                let _ = h.close();
                format!("ok {n}")
            }
            Err(e) => {
                let class = match &e {
                    Error::MalformedElf { .. } => "validator",
                    Error::Truncated { dlerror, .. }
                        if dlerror.contains("not passed to dlopen") =>
                    {
                        "validator"
                    }
                    Error::NoInterface { .. }
                    | Error::MissingExport { .. }
                    | Error::VersionMismatch { .. }
                    | Error::InitFailed { .. } => "interface",
                    _ => "dlopen",
                };
                format!("refused {n} {class} {}", e.to_string().replace('\n', " "))
            }
        };
        let _ = std::fs::remove_file(&path);
        let mut out = out.lock();
        writeln!(out, "{line}").unwrap();
        out.flush().unwrap();
    }
}

/// Run the child from copy `from`: its stdout, and the copy that killed it (with the signal).
fn run_child(dir: &Path, from: u64) -> (String, Option<(u64, Option<i32>)>) {
    let output = Command::new(std::env::current_exe().unwrap())
        .args([TEST_NAME, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, dir)
        .env(FROM_ENV, from.to_string())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    if output.status.success() {
        return (stdout, None);
    }
    let last = stdout
        .lines()
        .rev()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            matches!(w.next(), Some("ok" | "refused")).then(|| w.next()?.parse::<u64>().ok())?
        })
        .next();
    let killer = last.map_or(from, |n| n + 1);
    (stdout, Some((killer, output.status.signal())))
}

#[test]
fn a_thousand_mutated_modules_never_kill_the_host() {
    if let Some(dir) = std::env::var_os(CHILD_ENV) {
        let from = std::env::var(FROM_ENV).ok().and_then(|f| f.parse().ok()).unwrap_or(0);
        child(Path::new(&dir), from);
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (mut loaded, mut validator, mut dlopen, mut interface) = (0, 0, 0, 0);
    let mut deaths: Vec<(u64, Option<i32>)> = Vec::new();
    let mut from = 0;
    while from < copies() {
        let (stdout, death) = run_child(dir.path(), from);
        for line in stdout.lines() {
            let mut words = line.split_whitespace();
            match (words.next(), words.next(), words.next()) {
                (Some("ok"), Some(_), _) => loaded += 1,
                (Some("refused"), Some(_), Some("validator")) => validator += 1,
                (Some("refused"), Some(_), Some("interface")) => interface += 1,
                (Some("refused"), Some(_), _) => dlopen += 1,
                _ => {}
            }
        }
        match death {
            None => break,
            Some(d) => {
                // Keep the copy that killed the child, for a look with readelf; go on after it.
                let good = good_module();
                let lay = layout(&good);
                let mut rng = Rng(seed());
                let mut data = Vec::new();
                for _ in 0..=d.0 {
                    data = mutate(&good, &lay, &mut rng);
                }
                let keep = std::env::temp_dir().join(format!("kmodlike_mutant_{}.so", d.0));
                let _ = std::fs::write(&keep, &data);
                println!(
                    "copy {} killed the host (signal {:?}); kept at {}",
                    d.0,
                    d.1,
                    keep.display()
                );
                deaths.push(d);
                from = d.0 + 1;
            }
        }
    }
    println!(
        "{} mutated copies (seed {:#x}): {loaded} loaded, {validator} refused by the ELF validator, \
         {dlopen} refused by dlopen, {interface} refused by the interface check, {} killed the host",
        copies(),
        seed(),
        deaths.len()
    );
    assert!(deaths.is_empty(), "copies that killed the host (copy, signal): {deaths:?}");
    assert_eq!(loaded + validator + dlopen + interface, copies());
}
