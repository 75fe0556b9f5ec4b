//! The open path against hostile and unlucky files: nothing but a regular file is read, a file
//! rewritten while it loads cannot reach the host, and a shared object that is not a module
//! never runs a line of its code.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kmodlike::{Error, ErrorKind, Loader};
use kmodlike_testsupport as ts;
use ts::{mkfifo, within};

/// Open a module for a test.
fn open(loader: &Loader, spec: &str) -> kmodlike::Result<kmodlike::Handle> {
    // SAFETY: every file opened here is a test module built from tests/modules/*.c, or a file
    // the loader must refuse before running any of it.
    unsafe { loader.open(spec) }
}

fn counter() -> PathBuf {
    ts::test_module("counter", "counter", &[])
}

#[test]
fn a_fifo_is_refused_at_once_by_open_and_modinfo_naming_what_it_is() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("evil.so");
    mkfifo(&fifo);
    let loader = Loader::new();
    let (l, f) = (loader.clone(), fifo.clone());
    let e = within("open of a FIFO", move || open(&l, f.to_str().unwrap()).unwrap_err());
    assert!(matches!(e, Error::NotRegularFile { .. }), "{e}");
    assert!(e.to_string().contains("FIFO") && e.to_string().contains("evil.so"), "{e}");
    let f = fifo.clone();
    let e = within("modinfo of a FIFO", move || kmodlike::modinfo(&f).unwrap_err());
    assert!(e.to_string().contains("FIFO"), "{e}");
    // The loader is not wedged: a real module loads afterwards.
    let h = open(&loader, counter().to_str().unwrap()).unwrap();
    h.close().unwrap();
}

#[test]
fn devices_and_directories_are_refused_without_being_read() {
    let loader = Loader::new();
    for (path, kind) in [
        ("/dev/zero", "character device"),
        ("/dev/urandom", "character device"),
        ("/dev/null", "character device"),
        ("/tmp", "directory"),
    ] {
        let l = loader.clone();
        let e = within(path, move || open(&l, path).unwrap_err());
        assert!(matches!(e, Error::NotRegularFile { .. }), "{path}: {e}");
        assert!(e.to_string().contains(kind), "{path}: {e}");
        let e = within(path, move || kmodlike::modinfo(Path::new(path)).unwrap_err());
        assert!(e.to_string().contains(kind), "modinfo {path}: {e}");
    }
}

#[test]
fn a_file_larger_than_any_module_is_refused_without_being_read() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.so");
    let f = std::fs::File::create(&big).unwrap();
    f.set_len(3 << 30).unwrap(); // sparse: costs nothing
    let e = open(&Loader::new(), big.to_str().unwrap()).unwrap_err();
    assert!(matches!(e, Error::TooLarge { .. }), "{e}");
    assert!(e.to_string().contains("limit"), "{e}");
}

#[test]
fn a_shared_object_that_is_not_a_module_never_runs_its_constructor() {
    // Its constructor aborts: had it run, this test process would be dead.
    let so = ts::test_module("ctor_not_module", "ctor_not_module", &[]);
    let e = open(&Loader::new(), so.to_str().unwrap()).unwrap_err();
    assert!(matches!(e, Error::NoInterface { .. }), "{e}");
    let probing = Loader::builder()
        .probe(true)
        .probe_helper(PathBuf::from(env!("CARGO_BIN_EXE_kmodlike-probe")))
        .build();
    let e = open(&probing, so.to_str().unwrap()).unwrap_err();
    assert!(matches!(e, Error::NoInterface { .. }), "refused before the probe runs it: {e}");
}

#[test]
fn a_module_rewritten_in_place_in_a_loop_while_it_loads_cannot_reach_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let a = counter();
    let b = ts::test_module("gated_init", "gated_init_plain", &[]);
    let path = dir.path().join("target.so");
    std::fs::copy(&a, &path).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (stop, path) = (stop.clone(), path.clone());
        let (a, b) = (std::fs::read(&a).unwrap(), std::fs::read(&b).unwrap());
        std::thread::spawn(move || {
            let mut rewrites = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for bytes in [&a, &b] {
                    // What `cp other.so target.so` does: truncate, then write.
                    let mut f = std::fs::File::create(&path).unwrap();
                    for chunk in bytes.chunks(4096) {
                        f.write_all(chunk).unwrap();
                    }
                    rewrites += 1;
                }
            }
            rewrites
        })
    };
    let loader = Loader::new();
    let (mut loaded, mut refused) = (0, 0);
    for _ in 0..100 {
        match open(&loader, path.to_str().unwrap()) {
            Ok(h) => {
                // Whichever module it is, its own code answers.
                let f = h.symbol_ptr("bump").or_else(|_| h.symbol_ptr("ready")).unwrap();
                // SAFETY: both are `int f(void)`.
                let f: extern "C" fn() -> i32 = unsafe { std::mem::transmute(f) };
                // SAFETY: `f` is the module's own function.
                assert!(unsafe { h.call0(f) }.unwrap() > 0);
                h.close().unwrap();
                loaded += 1;
            }
            Err(e) => {
                // A half-written file is refused, with the reason.
                assert!(
                    matches!(e.kind(), ErrorKind::LoadFailed | ErrorKind::SymbolNotFound),
                    "{e}"
                );
                refused += 1;
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let rewrites = writer.join().unwrap();
    println!("100 loads under {rewrites} rewrites: {loaded} loaded, {refused} refused");
    assert!(rewrites > 0, "the writer ran");
    // Once the writer is done, the file loads again.
    let h = open(&loader, path.to_str().unwrap()).unwrap();
    h.close().unwrap();
}

/// The inode of `path`, as /proc/locks names it (`major:minor:inode` ends with it).
fn inode(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().ino()
}

#[test]
fn a_writer_waits_for_a_loaded_module_and_no_signal_reaches_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("leased.so");
    std::fs::copy(counter(), &path).unwrap();
    let loader = Loader::new();
    let h = open(&loader, path.to_str().unwrap()).unwrap();
    let ino = inode(&path);
    let lease_line = move || {
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        locks
            .lines()
            .find(|l| l.contains("LEASE") && l.contains(&format!(":{ino} ")))
            .map(str::to_owned)
    };
    if lease_line().is_none() {
        println!("no lease on this file system or for this user: the module is a private image");
        h.close().unwrap();
        return;
    }
    // A writer (what `cp new.so leased.so` does first) blocks while the module is loaded...
    let p = path.clone();
    let writer = std::thread::spawn(move || {
        let f = std::fs::OpenOptions::new().write(true).truncate(true).open(&p).unwrap();
        drop(f);
    });
    // ...and the kernel breaks the lease: /proc/locks says BREAKING. The break is signalled to
    // nobody: had it sent SIGIO (default action: terminate), this process would be dead.
    let breaking = within("the lease break", move || loop {
        if lease_line().is_some_and(|l| l.contains("BREAK")) {
            break true;
        }
        std::thread::yield_now();
    });
    assert!(breaking);
    // SAFETY: `bump` is the module's own `int bump(void)`.
    let bump: extern "C" fn() -> i32 =
        unsafe { std::mem::transmute(h.symbol_ptr("bump").unwrap()) };
    // SAFETY: the module's own function.
    assert_eq!(unsafe { h.call0(bump) }.unwrap(), 1, "the module's bytes are intact");
    h.close().unwrap();
    writer.join().unwrap();
}
