//! The shared library's ABI surface: only `module_loader_*` names, every documented call, and
//! the SONAME `libmodule.so.1`.

mod common;

use std::process::Command;

/// The dynamic symbols `libmodule.so` defines (`nm -D --defined-only`).
fn defined_dynamic_symbols() -> Vec<String> {
    let lib = common::cdylib();
    let out = Command::new("nm").args(["-D", "--defined-only"]).arg(&lib).output().expect("nm");
    assert!(out.status.success(), "nm failed: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().nth(2).map(str::to_owned))
        .collect()
}

#[test]
fn the_library_exports_only_module_loader_names() {
    let symbols = defined_dynamic_symbols();
    let foreign: Vec<&String> =
        symbols.iter().filter(|s| !s.starts_with("module_loader_")).collect();
    assert!(
        foreign.is_empty(),
        "libmodule.so exports names outside the module_loader_ namespace: {foreign:?}"
    );
    println!("{} exported symbols, all module_loader_*", symbols.len());
}

#[test]
fn the_library_exports_every_call_of_the_header() {
    let symbols = defined_dynamic_symbols();
    let header = std::fs::read_to_string(common::support::include_dir().join("module_loader.h"))
        .expect("read module_loader.h");
    let declared: Vec<&str> = header
        .lines()
        .filter(|l| l.chars().next().is_some_and(|c| c.is_ascii_alphabetic()))
        .filter(|l| !l.starts_with("typedef") && l.contains('('))
        .map(|l| l[..l.find('(').unwrap()].rsplit([' ', '*']).next().unwrap())
        .collect();
    assert!(declared.len() >= 17, "declared calls: {declared:?}");
    for call in &declared {
        assert!(symbols.iter().any(|s| s == call), "{call} is declared but not exported");
    }
    for s in &symbols {
        assert!(declared.contains(&s.as_str()), "{s} is exported but not declared in the header");
    }
}

#[test]
fn the_soname_is_libmodule_so_1() {
    let out = Command::new("readelf").arg("-d").arg(common::cdylib()).output().expect("readelf");
    let text = String::from_utf8_lossy(&out.stdout);
    let soname = text.lines().find(|l| l.contains("(SONAME)")).expect("a SONAME entry");
    assert!(soname.contains("[libmodule.so.1]"), "{soname}");
}
