//! The registry in phases: no lock is held while a module's code runs, so the loader answers
//! during a slow `module_init`, a host callback may use the loader from inside one, and every
//! entry into module code (the version check included) is guarded and booked.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use kmodlike::{CrashLoop, Error, Event, Loader, Phase};
use kmodlike_testsupport as ts;
use ts::within;

/// Open a module for a test.
fn open(loader: &Loader, spec: &str) -> kmodlike::Result<kmodlike::Handle> {
    // SAFETY: every file opened here is a test module built from tests/modules/*.c, or a file
    // the loader must refuse before running any of it.
    unsafe { loader.open(spec) }
}

fn call_i32(h: &kmodlike::Handle, name: &str) -> i32 {
    // SAFETY: every symbol asked for here is `int f(void)`.
    let f: extern "C" fn() -> i32 = unsafe { std::mem::transmute(h.symbol_ptr(name).unwrap()) };
    // SAFETY: `f` is the module's own function.
    unsafe { h.call0(f) }.unwrap()
}

fn gated_module(dir: &Path, gate: &Path) -> PathBuf {
    let src = ts::test_modules_dir().join("gated_init.c");
    let flag = format!("-DGATE=\"{}\"", gate.display());
    ts::build_module_at(&dir.join("gated.so"), &[&src], &[&flag])
}

#[test]
fn the_loader_answers_while_a_module_init_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    ts::mkfifo(&gate);
    let gated = gated_module(dir.path(), &gate);
    let counter = ts::test_module("counter", "counter", &[]);
    let loader = Loader::new();
    let l = loader.clone();
    let load = std::thread::spawn(move || {
        let h = open(&l, gated.to_str().unwrap()).unwrap();
        call_i32(&h, "ready")
    });
    // Opening the FIFO for writing returns once module_init has opened it: init is running.
    let g = gate.clone();
    let mut writer =
        within("module_init reaching its gate", move || std::fs::File::create(g).unwrap());
    // With module_init held, the loader answers and loads other modules.
    let l = loader.clone();
    let listed = within("list during a slow module_init", move || l.list());
    assert!(listed.iter().all(|m| m.name != "gated"), "not published before init returns");
    let l = loader.clone();
    let bumped = within("another load during a slow module_init", move || {
        let h = open(&l, counter.to_str().unwrap()).unwrap();
        call_i32(&h, "bump")
    });
    assert_eq!(bumped, 1);
    writer.write_all(b"go").unwrap();
    assert_eq!(load.join().unwrap(), 7, "module_init finished and the module is live");
}

#[test]
fn a_log_callback_may_open_another_module_from_inside_module_init() {
    let dir = tempfile::tempdir().unwrap();
    let src = ts::test_modules_dir().join("gated_init.c");
    let talker =
        ts::build_module_at(&dir.path().join("talker.so"), &[&src], &["-DLOG_FROM_INIT=\"open\""]);
    let counter = ts::test_module("counter", "counter", &[]);
    let me: Arc<OnceLock<Loader>> = Arc::default();
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let (me2, seen2, talker2) = (me.clone(), seen.clone(), talker.clone());
    let loader = Loader::builder()
        .log(move |_module, _level, msg| {
            if msg != "open" {
                return;
            }
            let loader = me2.get().expect("set before the open");
            let other = open(loader, counter.to_str().unwrap()).map(|h| call_i32(&h, "bump"));
            seen2.lock().unwrap().push(format!("other: {other:?}"));
            let itself = open(loader, talker2.to_str().unwrap()).map(|_| ()).unwrap_err();
            seen2.lock().unwrap().push(format!("itself: {itself}"));
        })
        .build();
    me.set(loader.clone()).ok().unwrap();
    let l = loader.clone();
    let ready = within("an open from inside module_init", move || {
        call_i32(&open(&l, talker.to_str().unwrap()).unwrap(), "ready")
    });
    assert_eq!(ready, 7);
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen[0], "other: Ok(1)", "the other module loaded from inside module_init");
    assert!(
        seen[1].contains("itself") && seen[1].contains("this thread is loading it"),
        "{seen:?}"
    );
}

#[test]
fn a_crash_in_module_get_interface_version_is_booked_and_its_code_unmapped() {
    let so = ts::test_module("version_crash", "version_crash", &[]);
    let loader = Loader::builder()
        .crash_loop(Some(CrashLoop { max_crashes: 1, window: Duration::from_secs(3600) }))
        .build();
    let events: Arc<Mutex<Vec<String>>> = Arc::default();
    let ev = events.clone();
    loader.subscribe(move |e| {
        if let Event::Crashed(r) = e {
            ev.lock().unwrap().push(r.summary());
        }
    });
    let e = open(&loader, so.to_str().unwrap()).unwrap_err();
    let r = e.crash_report().unwrap_or_else(|| panic!("a crash report: {e}")).clone();
    assert_eq!(r.phase, Phase::Version, "{r}");
    assert_eq!(r.signal_name, "SIGSEGV");
    assert!(r.pc_in_module, "{r}");
    assert!(r.to_string().contains("get_interface_version"), "{r}");
    assert_eq!(loader.crashes().len(), 1, "in the crash history");
    assert_eq!(events.lock().unwrap().len(), 1, "a Crashed event");
    assert_eq!(loader.quarantined(), vec![("version_crash".to_owned(), 1)], "counted");
    assert!(loader.list().is_empty());
    // The default policy unmaps crashed code that no thread may run in (this module starts
    // none): the faulting PC is in no mapping any more.
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let mapped = maps.lines().any(|l| {
        let range = l.split_whitespace().next().unwrap();
        let (a, b) = range.split_once('-').unwrap();
        let (a, b) = (u64::from_str_radix(a, 16).unwrap(), u64::from_str_radix(b, 16).unwrap());
        (a..b).contains(&r.pc)
    });
    assert!(!mapped, "the crashed code is unmapped");
    // And quarantined, as a crash-loop would be.
    let e = open(&loader, so.to_str().unwrap()).unwrap_err();
    assert!(matches!(e, Error::Quarantined { .. }), "{e}");
}

#[test]
fn a_dependent_loaded_after_its_dependencys_crash_binds_to_the_live_instance() {
    let dir = tempfile::tempdir().unwrap();
    let misc = dir.path().join("misc");
    std::fs::create_dir_all(&misc).unwrap();
    let src = ts::test_modules_dir().join("dep_counter.c");
    ts::build_module_at(&misc.join("dep.so"), &[&src], &[]);
    let dep_flag = "-DDEP=\"misc/dep\"";
    ts::build_module_at(&misc.join("user1.so"), &[&src], &["-DUSER", dep_flag]);
    ts::build_module_at(&misc.join("user2.so"), &[&src], &["-DUSER", dep_flag]);
    let loader = Loader::builder().module_path(vec![dir.path().to_owned()]).build();
    // The dependency is loaded for user1 (and so made global), counts to 2, then crashes.
    let user1 = open(&loader, "misc/user1").unwrap();
    assert_eq!(call_i32(&user1, "user_bump"), 1);
    assert_eq!(call_i32(&user1, "user_bump"), 2);
    let dep = loader.get("dep").unwrap();
    // SAFETY: `void shared_crash(void)`.
    let crash: extern "C" fn() =
        unsafe { std::mem::transmute(dep.symbol_ptr("shared_crash").unwrap()) };
    // SAFETY: the module's own function; it faults, and the guard contains it.
    assert!(matches!(unsafe { dep.call0(crash) }, Err(Error::Crashed(_))));
    drop(user1);
    // A new dependent loads a fresh dependency and must bind to it, not to the crashed copy.
    let user2 = open(&loader, "misc/user2").unwrap();
    assert_eq!(call_i32(&user2, "user_bump"), 1, "the live dependency's counter, from zero");
    let dep = loader.get("dep").unwrap();
    assert_eq!(call_i32(&dep, "shared_bump"), 2, "the dependent and the host share one instance");
}

#[test]
fn unloading_a_module_whose_thread_still_runs_keeps_its_code_mapped_and_says_so() {
    let so = ts::test_module("thread_leak", "thread_leak", &[]);
    let warnings: Arc<Mutex<Vec<String>>> = Arc::default();
    let w = warnings.clone();
    let loader = Loader::builder()
        .log(move |m, level, msg| {
            if level == kmodlike::interface::log_level::WARNING {
                w.lock().unwrap().push(format!("{m}: {msg}"));
            }
        })
        .build();
    let h = open(&loader, so.to_str().unwrap()).unwrap();
    let rounds = h.symbol_ptr("rounds").unwrap() as usize;
    assert!(call_i32(&h, "rounds") > 0, "the module's thread runs");
    h.close().unwrap();
    assert!(loader.list().is_empty(), "the module is unloaded");
    let warnings = warnings.lock().unwrap().clone();
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("thread_leak") && warnings[0].contains("stays mapped"),
        "{warnings:?}"
    );
    assert!(warnings[0].contains("thread "), "names the thread: {warnings:?}");
    // The thread still runs in the module's code, which is still mapped: its counter moves.
    // SAFETY: `int rounds(void)` of the module whose code was kept mapped.
    let rounds: extern "C" fn() -> i32 = unsafe { std::mem::transmute(rounds) };
    let before = rounds();
    let moved = within("the module's thread to keep running", move || loop {
        if rounds() > before {
            break true;
        }
        std::thread::yield_now();
    });
    assert!(moved);
    // The loader still works, and a new instance of the file loads fresh.
    let again = open(&loader, so.to_str().unwrap()).unwrap();
    again.close().unwrap();
}

#[test]
fn a_second_open_of_a_module_that_is_loading_shares_its_one_instance() {
    let dir = tempfile::tempdir().unwrap();
    let gate = dir.path().join("gate");
    ts::mkfifo(&gate);
    let gated = gated_module(dir.path(), &gate);
    let loader = Loader::new();
    let opener = |loader: Loader, so: PathBuf| {
        std::thread::spawn(move || {
            let h = open(&loader, so.to_str().unwrap()).unwrap();
            (h.id(), call_i32(&h, "ready"), h)
        })
    };
    let first = opener(loader.clone(), gated.clone());
    let g = gate.clone();
    let mut writer =
        within("module_init reaching its gate", move || std::fs::File::create(g).unwrap());
    // module_init is held: a second open of the same file waits for it, then shares it.
    let second = opener(loader.clone(), gated.clone());
    writer.write_all(b"x").unwrap();
    drop(writer);
    let (id1, ready1, h1) = first.join().unwrap();
    let (id2, ready2, h2) = second.join().unwrap();
    assert_eq!((ready1, ready2), (7, 7));
    assert_eq!(id1, id2, "one instance: module_init ran once");
    assert_eq!(loader.list()[0].refcount, 2);
    h1.close().unwrap();
    h2.close().unwrap();
    assert!(loader.list().is_empty());
}

#[test]
fn a_module_init_that_joins_a_crashed_thread_hangs_its_load_but_not_the_loader() {
    let so = ts::test_module("join_crash", "join_crash", &[]);
    let loader = Loader::new();
    let (tx, rx) = std::sync::mpsc::channel();
    loader.subscribe(move |e| {
        if let Event::Crashed(r) = e {
            let _ = tx.send(r.summary());
        }
    });
    let l = loader.clone();
    // This load never returns: module_init joins a thread the guard parked for good.
    std::thread::spawn(move || open(&l, so.to_str().unwrap()));
    let crash = rx.recv_timeout(Duration::from_secs(60)).expect("the thread's crash is reported");
    assert!(crash.contains("join_crash") && crash.contains("SIGSEGV"), "{crash}");
    let l = loader.clone();
    let listed = within("list while a load hangs", move || l.list());
    assert!(listed.is_empty(), "the hung module is not published: {listed:?}");
    let l = loader.clone();
    let crashes = within("crashes while a load hangs", move || l.crashes());
    assert_eq!(crashes.len(), 1);
    let l = loader.clone();
    let other = ts::test_module("counter", "counter", &[]);
    let bumped = within("another load while one hangs", move || {
        call_i32(&open(&l, other.to_str().unwrap()).unwrap(), "bump")
    });
    assert_eq!(bumped, 1);
}
