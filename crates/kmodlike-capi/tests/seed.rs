//! The seed README's code, copied unchanged into tests/c/seed/, works against the installed
//! headers and library: its "Integration" host snippets (wrapped into main() by
//! tests/c/seed_host.c) and its "Example Module".

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{run_with_timeout, support, Prefix, Run};

/// The seed README's code blocks, in order, and the files that must hold them verbatim.
const SNIPPETS: [&str; 6] = [
    "step1_include.c",
    "step2_create.c",
    "step3_load.c",
    "step4_symbol.c",
    "step5_cleanup.c",
    "example_module.c",
];

fn seed_dir() -> PathBuf {
    common::c_dir().join("seed")
}

/// The ```c blocks of a markdown text.
fn c_blocks(markdown: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut rest = markdown;
    while let Some(start) = rest.find("```c\n") {
        let body = &rest[start + 5..];
        let end = body.find("```").expect("an unterminated code block");
        blocks.push(body[..end].to_owned());
        rest = &body[end + 3..];
    }
    blocks
}

#[test]
fn seed_snippets_are_the_readme_text() {
    let readme = std::fs::read_to_string(seed_dir().join("kmodlike-README.txt")).unwrap();
    // The copy in the repository is the seed itself, when the seed is at hand.
    let original = support::workspace_root().join("../shared/seeds/kmodlike-README.txt");
    match std::fs::read_to_string(&original) {
        Ok(seed) => {
            assert_eq!(readme, seed, "tests/c/seed/kmodlike-README.txt differs from the seed")
        }
        Err(_) => println!("{} not found: checking against the copy only", original.display()),
    }
    let blocks = c_blocks(&readme);
    assert_eq!(blocks.len(), SNIPPETS.len(), "the seed README has {} C blocks", blocks.len());
    for (block, file) in blocks.iter().zip(SNIPPETS) {
        let text = std::fs::read_to_string(seed_dir().join(file)).unwrap();
        assert_eq!(&text, block, "tests/c/seed/{file} is not the README's text");
    }
}

/// Build the seed's example module into `<dir>/path/to/module.so` (the path the host snippet
/// loads), optionally linked with an extra source, against the prefix's headers.
fn install_example_module(prefix: &Prefix, dir: &Path, extra: Option<&Path>) {
    let mut sources = vec![seed_dir().join("example_module.c")];
    sources.extend(extra.map(Path::to_owned));
    let refs: Vec<&Path> = sources.iter().map(PathBuf::as_path).collect();
    let name = if extra.is_some() { "example_with_function.so" } else { "example.so" };
    let built = prefix.compile_module(name, &refs);
    std::fs::create_dir_all(dir.join("path/to")).unwrap();
    std::fs::copy(built, dir.join("path/to/module.so")).unwrap();
}

/// Run the seed host in `dir` and check what every snippet did.
fn run_seed_host(prefix: &Prefix, host: &Path, dir: &Path, with_function: bool) -> Run {
    let run = prefix.run(host, &[], Some(dir), Duration::from_secs(60));
    run.assert_ok();
    let out = &run.stdout;
    let expect = [
        "create: ok",
        "log(0): module initializing",
        "load: 0 (success)",
        if with_function { "get_symbol: 0 (success)" } else { "get_symbol: 4 (symbol not found" },
        "done",
    ];
    let mut at = 0;
    for line in expect {
        let found =
            out[at..].find(line).unwrap_or_else(|| panic!("missing {line:?} in order\n{run}"));
        at += found + line.len();
    }
    if with_function {
        assert!(out.contains("function_name(20) = 42"), "{run}");
    } else {
        // The failed look-up names the symbol and the module.
        assert!(
            out.contains("get_symbol error: module module: symbol \"function_name\" not found"),
            "{run}"
        );
    }
    run
}

#[test]
fn seed_readme_code_works_against_the_installed_library() {
    let prefix = Prefix::install();
    let host = prefix.compile_host("seed_host", &[&common::c_dir().join("seed_host.c")], &[]);
    let dir = tempfile::tempdir_in(prefix.path()).unwrap();

    // The example module exactly as the seed has it: loads, greets, has no function_name.
    install_example_module(&prefix, dir.path(), None);
    let run = run_seed_host(&prefix, &host, dir.path(), false);
    println!("{run}");

    // The same module source linked with a function_name(): the snippet's symbol works.
    install_example_module(&prefix, dir.path(), Some(&seed_dir().join("function_name.c")));
    let run = run_seed_host(&prefix, &host, dir.path(), true);
    println!("{run}");
}

/// The real `make install PREFIX=...` (release builds of everything it installs), then the
/// seed's code built with the flags pkg-config gives for the installed `module.pc`.
///
/// When `KMODLIKE_TEST_PREFIX` names a prefix that `make install` already filled (the Makefile
/// can do that before the test run, so no release build competes with the tests for the CPU),
/// that prefix is checked instead of running `make install` here.
#[test]
fn seed_readme_code_works_after_make_install() {
    let prefix = match std::env::var_os("KMODLIKE_TEST_PREFIX") {
        Some(installed) => {
            println!("checking the prefix installed by make: {}", installed.to_string_lossy());
            Prefix::existing(PathBuf::from(installed), None)
        }
        None => {
            let dir = tempfile::Builder::new()
                .prefix("capi-make-install-")
                .tempdir_in(support::artifacts_dir())
                .unwrap();
            let mut make = Command::new("make");
            make.current_dir(support::workspace_root())
                .arg("install")
                .arg(format!("PREFIX={}", dir.path().display()));
            let run = run_with_timeout(make, Duration::from_secs(1800));
            assert!(run.output.status.success(), "make install failed\n{run}");
            Prefix::existing(dir.path().to_owned(), Some(dir))
        }
    };
    let p = prefix.path();
    for f in [
        "lib/libmodule.so.1",
        "lib/libmodule.so",
        "include/kmodlike/module_loader.h",
        "include/kmodlike/module_interface.h",
        "lib/pkgconfig/module.pc",
    ] {
        assert!(p.join(f).exists(), "make install did not install {f}");
    }
    assert_eq!(
        std::fs::read_link(p.join("lib/libmodule.so")).unwrap(),
        Path::new("libmodule.so.1"),
        "lib/libmodule.so links to libmodule.so.1"
    );
    for h in ["module_loader.h", "module_interface.h"] {
        let installed = std::fs::read(p.join("include/kmodlike").join(h)).unwrap();
        let committed = std::fs::read(support::include_dir().join(h)).unwrap();
        assert!(installed == committed, "the installed {h} is not the committed one");
    }

    // pkg-config's flags for the installed module.pc, when pkg-config is there.
    let pc = Command::new("pkg-config")
        .args(["--cflags", "--libs", "module"])
        .env("PKG_CONFIG_PATH", p.join("lib/pkgconfig"))
        .output();
    let flags = match pc {
        Ok(o) if o.status.success() => {
            let flags = String::from_utf8_lossy(&o.stdout).trim().to_owned();
            assert!(flags.contains(&format!("-I{}/include/kmodlike", p.display())), "{flags}");
            flags
        }
        _ => {
            println!("pkg-config unavailable: using -I/-L directly");
            String::new()
        }
    };
    let host = p.join("seed_host");
    let out = Command::new(support::cc())
        .args(["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-Wall", "-Wextra"])
        .arg(common::c_dir().join("seed_host.c"))
        .arg("-o")
        .arg(&host)
        .args(flags.split_whitespace())
        .arg(format!("-I{}", prefix.include_dir().display()))
        .arg(format!("-L{}", prefix.lib_dir().display()))
        .arg("-lmodule")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let work = tempfile::tempdir_in(p).unwrap();
    install_example_module(&prefix, work.path(), None);
    run_seed_host(&prefix, &host, work.path(), false);
    install_example_module(&prefix, work.path(), Some(&seed_dir().join("function_name.c")));
    let run = run_seed_host(&prefix, &host, work.path(), true);
    println!("{run}");
}
