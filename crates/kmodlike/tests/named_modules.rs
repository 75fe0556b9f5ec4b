//! Named, refcounted modules with dependencies and metadata (illumos ddi_modopen + Linux kmod):
//! real C modules built with the system compiler, laid out in a temporary module path.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use kmodlike::{BusyReason, Error, Loader, ModuleState, OpenOptions};
use kmodlike_testsupport as ts;

/// A module tree `<tmp>/misc/*.so` and a loader over it that records log lines.
struct Tree {
    dir: tempfile::TempDir,
    log: Arc<Mutex<Vec<String>>>,
}

impl Tree {
    fn new() -> Tree {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("misc")).unwrap();
        Tree { dir, log: Arc::default() }
    }

    fn add(&self, rel: &str, built: &Path) -> PathBuf {
        let dest = self.dir.path().join(rel);
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(built, &dest).unwrap();
        dest
    }

    fn loader(&self) -> Loader {
        let log = self.log.clone();
        Loader::builder()
            .module_path(vec![self.dir.path().to_owned()])
            .log(move |m, _lvl, msg| log.lock().unwrap().push(format!("{m}: {msg}")))
            .build()
    }

    fn lines(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }

    fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.ends_with(needle)).count()
    }
}

fn node(name: &str, depends: Option<&str>, uses: Option<&str>) -> PathBuf {
    let mut flags = vec![format!("-DNODE={name}")];
    if let Some(d) = depends {
        flags.push(format!("-DDEPENDS=\"{d}\""));
    }
    if let Some(u) = uses {
        flags.push(format!("-DUSES={u}"));
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let tag = format!(
        "node_{name}_{}_{}",
        depends.unwrap_or("").replace(['/', ' '], "_"),
        uses.unwrap_or("")
    );
    ts::test_module("dep_node", &tag, &flags)
}

fn dltest() -> PathBuf {
    let src = ts::workspace_root().join("modules/dltest/dltest.c");
    ts::build_module("dltest.so", &[&src], &[])
}

#[test]
fn man_page_example_opens_dltest_by_name() {
    let tree = Tree::new();
    tree.add("misc/dltest.so", &dltest());
    let loader = tree.loader();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open("dltest") }.expect("open dltest by name");
    let test: extern "C" fn(i32) -> i32 =
        // SAFETY: the fixture defines `test` as `int test(int)`.
        unsafe { std::mem::transmute(h.symbol_ptr("test").unwrap()) };
    // SAFETY: `test` is the fixture module's C code; a fault skips only its frames.
    assert_eq!(unsafe { h.call(test, 0) }.unwrap(), 1);
    assert_eq!(h.path(), tree.dir.path().join("misc/dltest.so"));
    h.close().unwrap();
    assert!(loader.list().is_empty());
}

#[test]
fn two_opens_share_one_instance_and_init_runs_once() {
    let tree = Tree::new();
    tree.add("misc/solo.so", &node("solo", None, None));
    let loader = tree.loader();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h1 = unsafe { loader.open("solo") }.unwrap();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h2 = unsafe { loader.open("misc/solo") }.unwrap();
    assert_eq!(h1.id(), h2.id());
    assert_eq!(loader.list()[0].refcount, 2);
    assert_eq!(tree.count("init solo"), 1);
    h1.close().unwrap();
    assert!(h2.is_live());
    assert!(h2.symbol_ptr("solo_value").is_ok());
    assert_eq!(tree.count("fini solo"), 0);
    h2.close().unwrap();
    assert_eq!(tree.count("fini solo"), 1);
    assert!(loader.list().is_empty());
}

#[test]
fn dependency_chain_opens_in_order_and_unloads_together() {
    let tree = Tree::new();
    tree.add("misc/c.so", &node("c", None, None));
    tree.add("misc/b.so", &node("b", Some("misc/c"), Some("c")));
    tree.add("misc/a.so", &node("a", Some("misc/b"), Some("b")));
    let loader = tree.loader();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let a = unsafe { loader.open("a") }.expect("open a with its dependencies");
    let inits: Vec<String> = tree.lines().into_iter().filter(|l| l.contains(": init")).collect();
    assert_eq!(inits, vec!["c: init c", "b: init b sees 100", "a: init a sees 100"]);
    let list = loader.list();
    let b = list.iter().find(|m| m.name == "b").unwrap();
    assert_eq!(b.dependencies, vec!["c"]);
    assert_eq!(b.holders, vec!["a"]);

    assert_eq!(b.refcount, 1, "held by a only");
    a.close().unwrap();
    let finis: Vec<String> = tree.lines().into_iter().filter(|l| l.contains(": fini")).collect();
    assert_eq!(finis, vec!["a: fini a", "b: fini b", "c: fini c"]);
    assert!(loader.list().is_empty());
}

#[test]
fn closing_a_dependency_while_its_dependent_is_open_is_busy_naming_it() {
    let tree = Tree::new();
    tree.add("misc/c.so", &node("c", None, None));
    tree.add("misc/b.so", &node("b", Some("misc/c"), Some("c")));
    tree.add("misc/a.so", &node("a", Some("misc/b"), Some("b")));
    let loader = tree.loader();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let a = unsafe { loader.open("a") }.unwrap();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let b = unsafe { loader.open("b") }.unwrap();
    let extra = b.try_clone().unwrap();
    extra.close().expect("closing a reference that is not the last succeeds");
    let err = b.close().unwrap_err();
    match &err.error {
        Error::Busy { module, reason: BusyReason::Holders(h) } => {
            assert_eq!(module, "b");
            assert_eq!(h, &vec!["a".to_owned()]);
        }
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains("in use by a"), "{err}");
    let b = err.handle.expect("the handle comes back");
    assert!(b.is_live());
    assert_eq!(tree.count("fini b"), 0);
    a.close().unwrap();
    // a is gone; b stays for our handle, c for b.
    let names: Vec<String> = loader.list().into_iter().map(|m| m.name).collect();
    assert_eq!(names, vec!["c", "b"]);
    b.close().unwrap();
    assert!(loader.list().is_empty());
    assert_eq!(tree.count("fini c"), 1);
}

#[test]
fn a_dependency_cycle_is_refused_naming_it() {
    let tree = Tree::new();
    tree.add("misc/x.so", &node("x", Some("misc/y"), None));
    tree.add("misc/y.so", &node("y", Some("misc/x"), None));
    let loader = tree.loader();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let e = unsafe { loader.open("x") }.unwrap_err();
    assert!(matches!(e, Error::Dependency { .. }), "{e}");
    assert!(e.to_string().contains("x -> y -> x"), "{e}");
    assert!(loader.list().is_empty(), "nothing stays loaded after a refused cycle");
    assert_eq!(tree.count("init x") + tree.count("init y"), 0);
}

#[test]
fn a_missing_dependency_is_named_with_who_needs_it() {
    let tree = Tree::new();
    tree.add("misc/needy.so", &node("needy", Some("misc/ghost"), None));
    let loader = tree.loader();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let e = unsafe { loader.open("needy") }.unwrap_err();
    let msg = e.to_string();
    assert!(matches!(e, Error::Dependency { .. }), "{msg}");
    assert!(msg.contains("misc/ghost") && msg.contains("needed by needy"), "{msg}");
    assert!(msg.contains("tried"), "{msg}");
}

#[test]
fn specs_with_namespace_and_dirspace_resolve_and_escapes_are_refused() {
    let tree = Tree::new();
    tree.add("drv/net/deep.so", &node("deep", None, None));
    tree.add("drv/flat.so", &node("flat", None, None));
    let loader = tree.loader();
    // SAFETY: a fixture module this test built from its C source for the interface.
    unsafe { loader.open("drv/net/deep") }.unwrap().close().unwrap();
    // SAFETY: a fixture module this test built from its C source for the interface.
    unsafe { loader.open("drv/flat") }.unwrap().close().unwrap();
    for bad in ["../misc/x", "misc/../x", "drv//flat", "a/b/c/d"] {
        // SAFETY: a fixture module this test built from its C source for the interface.
        let e = unsafe { loader.open(bad) }.unwrap_err();
        assert!(matches!(e, Error::InvalidArgument(_)), "{bad}: {e}");
    }
    // SAFETY: a fixture module this test built from its C source for the interface.
    match unsafe { loader.open("drv/none") }.unwrap_err() {
        Error::NotFound { tried, .. } => {
            assert!(tried.contains(&tree.dir.path().join("drv/none.so")), "{tried:?}")
        }
        e => panic!("unexpected {e}"),
    }
}

#[test]
fn symbols_of_dependencies_and_libc_are_not_the_modules() {
    let tree = Tree::new();
    tree.add("misc/c.so", &node("c", None, None));
    tree.add("misc/b.so", &node("b", Some("misc/c"), Some("c")));
    let libm =
        ts::build_module("uses_libm.so", &[&ts::test_modules_dir().join("uses_libm.c")], &["-lm"]);
    tree.add("misc/uses_libm.so", &libm);
    let loader = tree.loader();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let b = unsafe { loader.open("b") }.unwrap();
    assert!(b.symbol_ptr("b_value").is_ok());
    let e = b.symbol_ptr("c_value").unwrap_err();
    assert!(matches!(e, Error::SymbolNotFound { .. }), "{e}");
    // SAFETY: a fixture module this test built from its C source for the interface.
    let m = unsafe { loader.open("uses_libm") }.unwrap();
    assert!(m.symbol_ptr("own_cos").is_ok());
    for foreign in ["cos", "printf", "malloc"] {
        let e = m.symbol_ptr(foreign).unwrap_err();
        assert!(e.to_string().contains("not in the module itself"), "{foreign}: {e}");
    }
}

#[test]
fn eight_threads_open_and_close_the_same_module_concurrently() {
    let tree = Tree::new();
    tree.add("misc/dltest.so", &dltest());
    let loader = tree.loader();
    let count = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let fds_before = ts::open_fds();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let loader = loader.clone();
            let count = count.clone();
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    // SAFETY: a fixture module this test built from its C source for the interface.
                    let h = unsafe { loader.open("dltest") }.unwrap();
                    let test: extern "C" fn(i32) -> i32 =
                        // SAFETY: the fixture defines `test` as `int test(int)`.
                        unsafe { std::mem::transmute(h.symbol_ptr("test").unwrap()) };
                    // SAFETY: `test` is the fixture module's C code; a fault skips only its frames.
                    assert_eq!(unsafe { h.call(test, 1) }.unwrap(), 2);
                    h.close().unwrap();
                    count.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(count.load(std::sync::atomic::Ordering::Relaxed), 80_000);
    assert!(loader.list().is_empty(), "refcount ended at zero");
    // 80,000 opens: a leak would show as thousands of descriptors. Under nextest each test has
    // the process to itself and the count must be exact; under `cargo test` other tests run
    // on other threads and may hold a few.
    let slack = if std::env::var_os("NEXTEST").is_some() { 0 } else { 16 };
    let after = ts::open_fds();
    assert!(after <= fds_before + slack, "descriptors before {fds_before}, after {after}");
}

#[test]
fn init_and_fini_run_equally_often_under_concurrency() {
    let tree = Tree::new();
    tree.add("misc/solo.so", &node("solo", None, None));
    let loader = tree.loader();
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let loader = loader.clone();
            std::thread::spawn(move || {
                for _ in 0..2_000 {
                    // SAFETY: a fixture module this test built from its C source for the interface.
                    unsafe { loader.open("solo") }.unwrap().close().unwrap();
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(tree.count("init solo") >= 1);
    assert_eq!(tree.count("init solo"), tree.count("fini solo"));
    assert!(loader.list().is_empty());
}

#[test]
fn modinfo_reads_metadata_without_running_code() {
    let m = ts::test_module("ctor_crash", "ctor_crash", &[]);
    // Loading this module in-process would kill us: its constructor writes to NULL.
    let info = kmodlike::modinfo(&m).expect("read .modinfo");
    assert_eq!(info.get("version"), Some("6.6.6"));
    assert_eq!(info.get("description"), Some("crashes in its constructor"));
    assert_eq!(info.get("license"), Some("MIT"));
}

#[test]
fn modinfo_of_a_non_elf_file_is_a_precise_error() {
    let f = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(f.path(), b"just text").unwrap();
    assert!(matches!(kmodlike::modinfo(f.path()), Err(Error::NotElf { .. })));
}

#[test]
fn unload_veto_keeps_the_module_until_it_agrees() {
    let tree = Tree::new();
    tree.add("misc/veto.so", &ts::test_module("veto", "veto", &[]));
    let loader = tree.loader();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open("veto") }.unwrap();
    let set_busy: extern "C" fn(i32) =
        // SAFETY: the fixture defines `set_busy` as `void set_busy(int)`.
        unsafe { std::mem::transmute(h.symbol_ptr("set_busy").unwrap()) };
    // SAFETY: `set_busy` is the fixture module's C code; a fault skips only its frames.
    unsafe { h.call(set_busy, 1) }.unwrap();
    let err = h.close().unwrap_err();
    match &err.error {
        Error::Busy { module, reason: BusyReason::Veto(code) } => {
            assert_eq!(module, "veto");
            assert_eq!(*code, libc_ebusy());
        }
        e => panic!("unexpected {e}"),
    }
    assert!(err.to_string().contains("veto"));
    let h = err.handle.expect("the handle comes back for a retry");
    assert!(h.is_live());
    let still: extern "C" fn() -> i32 =
        // SAFETY: the fixture defines `still_here` as `int still_here(void)`.
        unsafe { std::mem::transmute(h.symbol_ptr("still_here").unwrap()) };
    // SAFETY: `still` is the fixture module's C code; a fault skips only its frames.
    assert_eq!(unsafe { h.call0(still) }.unwrap(), 42);
    assert_eq!(tree.count("fini veto"), 0);
    // SAFETY: `set_busy` is the fixture module's C code; a fault skips only its frames.
    unsafe { h.call(set_busy, 0) }.unwrap();
    h.close().unwrap();
    assert_eq!(tree.count("fini veto"), 1);
    assert!(loader.list().is_empty());
}

fn libc_ebusy() -> i32 {
    16
}

#[test]
fn firmware_blob_opens_in_data_mode_and_is_refused_as_a_module() {
    let dir = tempfile::tempdir().unwrap();
    let blob: Vec<u8> = (0..4096u32).map(|i| (i * 7 % 251) as u8).collect();
    let fw = dir.path().join("fw.bin");
    std::fs::write(&fw, &blob).unwrap();
    let run = |cmd: &mut std::process::Command| {
        let out = cmd.current_dir(dir.path()).output().unwrap();
        assert!(out.status.success(), "{cmd:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(std::process::Command::new("objcopy").args([
        "-I",
        "binary",
        "-O",
        "elf64-x86-64",
        "-B",
        "i386:x86-64",
        "fw.bin",
        "fw.o",
    ]));
    run(std::process::Command::new(ts::cc()).args([
        "-shared",
        "-Wl,-z,noexecstack",
        "-o",
        "fw.so",
        "fw.o",
    ]));
    let so = dir.path().join("fw.so");
    let loader = Loader::new();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let e = unsafe { loader.open(so.to_str().unwrap()) }.unwrap_err();
    assert!(matches!(e, Error::NoInterface { .. }), "{e}");
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open_with(so.to_str().unwrap(), &OpenOptions::data()) }.unwrap();
    let start = h.symbol_ptr("_binary_fw_bin_start").unwrap() as *const u8;
    let end = h.symbol_ptr("_binary_fw_bin_end").unwrap() as *const u8;
    let len = end as usize - start as usize;
    // SAFETY: `_binary_fw_bin_start`..`_end` delimit the blob the fixture linked into its data,
    // mapped for as long as `h` keeps the data object loaded.
    let bytes = unsafe { std::slice::from_raw_parts(start, len) };
    assert_eq!(bytes, &blob[..]);
    assert_eq!(h.state(), ModuleState::Live);
    h.close().unwrap();
}
