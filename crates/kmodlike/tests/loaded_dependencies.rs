//! A dependency (`MODULE_DEPENDS`) is satisfied by a module already loaded under that name, also
//! one loaded by a path outside the module path; with the probe on, the probe child resolves it
//! to the same file.

use std::path::{Path, PathBuf};

use kmodlike::Loader;
use kmodlike_testsupport as ts;

fn node(name: &str, depends: Option<&str>, uses: Option<&str>, mark: Option<&Path>) -> PathBuf {
    let mut flags = vec![format!("-DNODE={name}")];
    if let Some(m) = mark {
        flags.push(format!("-DMARK=\"{}\"", m.display()));
    }
    if let Some(d) = depends {
        flags.push(format!("-DDEPENDS=\"{d}\""));
    }
    if let Some(u) = uses {
        flags.push(format!("-DUSES={u}"));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let tag = format!(
        "loaded_dep_{name}_{}_{}{}",
        depends.unwrap_or("").replace(['/', ' '], "_"),
        uses.unwrap_or(""),
        // A marked build is this run's own.
        mark.map(|_| format!("_mark{}", std::process::id())).unwrap_or_default()
    );
    ts::test_module("dep_node", &tag, &flags)
}

/// `<tmp>/path/misc/top.so` (depends on misc/base; with `mark`, its constructor appends the
/// loading process's id to that file) and `<tmp>/elsewhere/base.so`.
fn layout(mark: Option<&Path>) -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("path");
    std::fs::create_dir_all(path.join("misc")).unwrap();
    let top = node("top", Some("misc/base"), Some("base"), mark);
    std::fs::copy(top, path.join("misc/top.so")).unwrap();
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    let base = elsewhere.join("base.so");
    std::fs::copy(node("base", None, None, None), &base).unwrap();
    (dir, path, base)
}

fn check(loader: &Loader, base: &Path) {
    // Not on the module path, and not loaded: the dependency cannot be found.
    // SAFETY: fixture modules this test built from their C source for the interface.
    let e = unsafe { loader.open("top") }.unwrap_err();
    assert!(e.to_string().contains("misc/base"), "{e}");

    // SAFETY: as above.
    let b = unsafe { loader.open(base.to_str().unwrap()) }.expect("base by its path");
    // SAFETY: as above.
    let t = unsafe { loader.open("top") }.expect("top, its dependency satisfied by base");
    let list = loader.list();
    let base_info = list.iter().find(|m| m.name == "base").unwrap();
    assert_eq!(base_info.path, base, "the file loaded by path, shared");
    assert_eq!(base_info.holders, ["top"]);
    assert_eq!(list.len(), 2, "base is not loaded twice: {list:?}");
    t.close().unwrap();
    b.close().unwrap();
    assert!(loader.list().is_empty());
}

#[test]
fn a_loaded_module_satisfies_a_dependency_by_name() {
    let (_dir, path, base) = layout(None);
    check(&Loader::builder().module_path(vec![path]).build(), &base);
}

#[test]
fn the_probe_child_resolves_the_dependency_to_the_same_file() {
    let marks = tempfile::tempdir().unwrap();
    let mark = marks.path().join("loaded-by");
    let (_dir, path, base) = layout(Some(&mark));
    let helper = PathBuf::from(env!("CARGO_BIN_EXE_kmodlike-probe"));
    check(
        &Loader::builder().module_path(vec![path]).probe(true).probe_helper(helper).build(),
        &base,
    );
    // top was loaded twice: by the probe child (which found base too), then by this process. A
    // child that could not resolve base would have given up before loading top, unprobed.
    let pids: Vec<u32> =
        std::fs::read_to_string(&mark).unwrap().lines().map(|l| l.parse().unwrap()).collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    assert_ne!(pids[0], std::process::id(), "the probe child first");
    assert_eq!(pids[1], std::process::id());
}
