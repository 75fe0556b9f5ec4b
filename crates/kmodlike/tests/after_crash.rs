//! What happens after a module crashes: it is gone logically, its handles are dead, loading
//! it again gives a fresh instance, the crash-loop policy quarantines it, `Reclaim` unmaps it,
//! and the probe keeps constructor crashes out of the host.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kmodlike::{CrashLoop, CrashPolicy, Error, Event, Loader, Phase};
use kmodlike_testsupport as ts;

fn counter() -> PathBuf {
    ts::test_module("counter", "counter", &[])
}

type Bump = extern "C" fn() -> i32;
type Crash = extern "C" fn();

fn fns(h: &kmodlike::Handle) -> (Bump, Crash) {
    // SAFETY: the test module defines `int bump(void)` and `void crash_now(void)`.
    unsafe {
        (
            std::mem::transmute::<*mut std::ffi::c_void, Bump>(h.symbol_ptr("bump").unwrap()),
            std::mem::transmute::<*mut std::ffi::c_void, Crash>(h.symbol_ptr("crash_now").unwrap()),
        )
    }
}

fn crash_once(loader: &Loader, path: &str) -> kmodlike::CrashReport {
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open(path) }.unwrap();
    let (_, crash) = fns(&h);
    // SAFETY: `crash` is the fixture module's C code; a fault skips only its frames.
    match unsafe { h.call0(crash) } {
        Err(Error::Crashed(r)) => *r,
        other => panic!("expected a crash, got {other:?}"),
    }
}

#[test]
fn a_crashed_module_is_gone_and_its_handles_are_dead() {
    let path = counter();
    let loader = Loader::new();
    let events = Arc::new(Mutex::new(Vec::new()));
    let ev = events.clone();
    loader.subscribe(move |e| {
        let tag = match e {
            Event::Loaded(i) => format!("loaded {}", i.name),
            Event::Unloaded { name } => format!("unloaded {name}"),
            Event::Crashed(r) => format!("crashed {} {}", r.module, r.signal_name),
            other => format!("{other:?}"),
        };
        ev.lock().unwrap().push(tag);
    });
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open(path.to_str().unwrap()) }.unwrap();
    let (bump, crash) = fns(&h);
    // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
    assert!(unsafe { h.call0(bump) }.unwrap() >= 1, "calls work before the crash");
    // SAFETY: `crash` is the fixture module's C code; a fault skips only its frames.
    let report = match unsafe { h.call0(crash) } {
        Err(Error::Crashed(r)) => r,
        other => panic!("expected a crash, got {other:?}"),
    };
    assert_eq!(report.signal_name, "SIGSEGV");
    assert_eq!(report.code_name, "SEGV_MAPERR");
    assert_eq!(report.phase, Phase::Call);
    assert!(report.pc_in_module, "{report}");
    assert!(report.symbol.as_deref().unwrap_or("").starts_with("crash_now"), "{report}");
    assert!(loader.list().is_empty(), "the crashed module left the registry");
    assert!(!h.is_live());
    // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
    let e = unsafe { h.call0(bump) }.unwrap_err();
    assert!(e.to_string().contains("SIGSEGV"), "later calls say why: {e}");
    assert!(matches!(h.symbol_ptr("bump"), Err(Error::NotLoaded { .. })));
    assert_eq!(loader.crashes()[0].module, "counter");
    h.close().expect("closing a dead handle just releases it");
    let events = events.lock().unwrap().clone();
    assert_eq!(events, vec!["loaded counter", "crashed counter SIGSEGV"]);
}

#[test]
fn loading_again_after_a_crash_gives_fresh_static_data() {
    // Alone in its process: loaders share ld.so's instance of a file, so other tests' calls
    // would move this counter.
    if !ts::in_own_process(
        "loading_again_after_a_crash_gives_fresh_static_data",
        Duration::from_secs(60),
    ) {
        return;
    }
    let path = counter();
    let loader = Loader::new();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open(path.to_str().unwrap()) }.unwrap();
    let (bump, crash) = fns(&h);
    // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
    assert_eq!(unsafe { h.call0(bump) }.unwrap(), 1);
    // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
    assert_eq!(unsafe { h.call0(bump) }.unwrap(), 2);
    // SAFETY: `crash` is the fixture module's C code; a fault skips only its frames.
    assert!(matches!(unsafe { h.call0(crash) }, Err(Error::Crashed(_))));
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h2 = unsafe { loader.open(path.to_str().unwrap()) }.unwrap();
    assert_ne!(h2.id(), h.id());
    let (bump2, _) = fns(&h2);
    // SAFETY: `bump2` is the fixture module's C code; a fault skips only its frames.
    assert_eq!(unsafe { h2.call0(bump2) }.unwrap(), 1, "a fresh instance, not the crashed mapping");
    assert_eq!(h2.path(), path.as_path(), "reported under its real path");
    h2.close().unwrap();
}

#[test]
fn the_crash_loop_policy_quarantines_until_cleared() {
    let path = counter();
    let spec = path.to_str().unwrap();
    let loader = Loader::builder()
        .crash_loop(Some(CrashLoop { max_crashes: 3, window: Duration::from_secs(60) }))
        .build();
    for _ in 0..3 {
        crash_once(&loader, spec);
    }
    // SAFETY: a fixture module this test built from its C source for the interface.
    let e = unsafe { loader.open(spec) }.unwrap_err();
    assert!(matches!(e, Error::Quarantined { crashes: 3, .. }), "{e}");
    assert!(e.to_string().contains("counter") && e.to_string().contains("clear"), "{e}");
    assert_eq!(loader.quarantined(), vec![("counter".to_owned(), 3)]);
    loader.clear_quarantine("counter").unwrap();
    // SAFETY: a fixture module this test built from its C source for the interface.
    unsafe { loader.open(spec) }.expect("loads again once cleared").close().unwrap();
    assert!(loader.clear_quarantine("counter").is_err(), "nothing left to clear");
}

#[test]
fn the_library_has_no_crash_loop_policy_by_default() {
    let path = counter();
    let loader = Loader::new();
    for _ in 0..20 {
        crash_once(&loader, path.to_str().unwrap());
    }
    // SAFETY: a fixture module this test built from its C source for the interface.
    unsafe { loader.open(path.to_str().unwrap()) }.unwrap().close().unwrap();
}

fn soak(policy: CrashPolicy, cycles: usize) -> (usize, usize, u64, u64) {
    let path = counter();
    let spec = path.to_str().unwrap();
    let loader = Loader::builder().crash_policy(policy).max_kept_mapped(usize::MAX).build();
    // Warm up: the first crash maps the guard's stacks and the first private image.
    crash_once(&loader, spec);
    let (fds0, rss0) = (ts::open_fds(), ts::rss_bytes());
    for i in 0..cycles {
        // After the first crash every load is a fresh instance: its counter starts at 1.
        // SAFETY: a fixture module this test built from its C source for the interface.
        let h = unsafe { loader.open(spec) }.unwrap();
        let (bump, crash) = fns(&h);
        // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
        assert_eq!(unsafe { h.call0(bump) }.unwrap(), 1, "cycle {i}: fresh static data");
        // SAFETY: `crash` is the fixture module's C code; a fault skips only its frames.
        match unsafe { h.call0(crash) } {
            Err(Error::Crashed(r)) => assert_eq!(r.signal_name, "SIGSEGV"),
            other => panic!("cycle {i}: expected a crash, got {other:?}"),
        }
    }
    (fds0, ts::open_fds(), rss0, ts::rss_bytes())
}

#[test]
fn soak_10000_crash_recover_reload_cycles_under_reclaim() {
    if !ts::in_own_process(
        "soak_10000_crash_recover_reload_cycles_under_reclaim",
        Duration::from_secs(300),
    ) {
        return;
    }
    let (fds0, fds1, rss0, rss1) = soak(CrashPolicy::Reclaim, 10_000);
    let per_crash = rss1.saturating_sub(rss0) as f64 / 10_000.0;
    println!("reclaim: fds {fds0} -> {fds1}; rss {rss0} -> {rss1} bytes ({per_crash:.1} bytes per crash)");
    assert_eq!(fds1, fds0, "descriptors unchanged");
    // Under Reclaim every crashed instance is unmapped: what remains per crash is bookkeeping
    // (the last 256 reports are kept), well under 1 KiB.
    assert!(per_crash < 1024.0, "reclaim keeps memory bounded: {rss0} -> {rss1}");
}

#[test]
fn soak_1000_crash_recover_reload_cycles_retaining_code() {
    if !ts::in_own_process(
        "soak_1000_crash_recover_reload_cycles_retaining_code",
        Duration::from_secs(300),
    ) {
        return;
    }
    let (fds0, fds1, rss0, rss1) = soak(CrashPolicy::Retain, 1_000);
    let per_crash = rss1.saturating_sub(rss0) as f64 / 1_000.0;
    println!(
        "retain: fds {fds0} -> {fds1}; rss {rss0} -> {rss1} bytes ({per_crash:.1} bytes per crash)"
    );
    assert_eq!(fds1, fds0, "descriptors unchanged");
}

/// Lines of /proc/self/maps that name `file` (the leased file or its private memfd copy).
fn mapped(file: &str) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    maps.lines().filter(|l| l.contains(file)).count()
}

#[test]
fn a_crashed_module_that_starts_no_thread_is_unmapped_under_the_default_policy() {
    if !ts::in_own_process(
        "a_crashed_module_that_starts_no_thread_is_unmapped_under_the_default_policy",
        Duration::from_secs(60),
    ) {
        return;
    }
    let path = counter();
    let loader = Loader::new();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open(path.to_str().unwrap()) }.unwrap();
    assert!(mapped("counter.so") > 0, "mapped while loaded");
    let (_, crash) = fns(&h);
    // SAFETY: `crash` is the fixture module's C code; a fault skips only its frames.
    let e = unsafe { h.call0(crash) }.unwrap_err();
    assert!(e.to_string().contains("SIGSEGV") && e.to_string().contains("counter"), "{e}");
    assert!(loader.list().is_empty() && !h.is_live(), "the module is gone");
    assert_eq!(mapped("counter.so"), 0, "its code was unmapped once the crashed call drained");
    // The host lives on: the same file loads again, fresh.
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h2 = unsafe { loader.open(path.to_str().unwrap()) }.unwrap();
    let (bump, _) = fns(&h2);
    // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
    assert_eq!(unsafe { h2.call0(bump) }.unwrap(), 1);
    h2.close().unwrap();
}

#[test]
fn a_crashed_module_that_may_start_threads_stays_mapped_up_to_the_bound() {
    if !ts::in_own_process(
        "a_crashed_module_that_may_start_threads_stays_mapped_up_to_the_bound",
        Duration::from_secs(60),
    ) {
        return;
    }
    let threaded = ts::test_module("counter", "counter_threads", &["-DMAY_START_THREADS"]);
    let spec = threaded.to_str().unwrap();
    let loader = Loader::builder().max_kept_mapped(3).build();
    for i in 1..=3 {
        let r = crash_once(&loader, spec);
        assert_eq!((r.module.as_str(), r.signal_name.as_str()), ("counter_threads", "SIGSEGV"));
        assert!(mapped("counter_threads.so") >= i, "crash {i}: its code stays mapped");
    }
    // The bound: a fourth copy whose crash would be kept is refused, naming why.
    // SAFETY: a fixture module this test built from its C source for the interface.
    let e = unsafe { loader.open(spec) }.unwrap_err();
    assert!(matches!(e, Error::Limit { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("counter_threads") && msg.contains("max_kept_mapped"), "{msg}");
    // A module whose crash is reclaimed still loads, crashes and is unmapped.
    let r = crash_once(&loader, counter().to_str().unwrap());
    assert_eq!(r.module, "counter");
    assert_eq!(mapped("counter.so"), 0);
}

#[test]
fn the_probe_keeps_a_constructor_crash_out_of_the_host() {
    let m = ts::test_module("ctor_crash", "ctor_crash", &[]);
    let loader = Loader::builder()
        .probe(true)
        .probe_helper(PathBuf::from(env!("CARGO_BIN_EXE_kmodlike-probe")))
        .build();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let e = unsafe { loader.open(m.to_str().unwrap()) }.unwrap_err();
    let report = e.crash_report().unwrap_or_else(|| panic!("expected a crash report: {e}"));
    assert_eq!(report.signal_name, "SIGSEGV");
    assert_eq!(report.phase, Phase::Probe);
    assert!(report.pc_in_module, "{report}");
    assert!(report.module_offset.is_some(), "{report}");
    assert!(report.to_string().contains("(in the module)"), "{report}");
    assert!(loader.list().is_empty());
    assert_eq!(loader.crashes().len(), 1);
    // The host is alive and can still load modules.
    // SAFETY: a fixture module this test built from its C source for the interface.
    unsafe { loader.open(counter().to_str().unwrap()) }.unwrap().close().unwrap();
}

#[test]
fn the_probe_passes_a_good_module_through() {
    let loader = Loader::builder()
        .probe(true)
        .probe_helper(PathBuf::from(env!("CARGO_BIN_EXE_kmodlike-probe")))
        .build();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open(counter().to_str().unwrap()) }.unwrap();
    let (bump, _) = fns(&h);
    // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
    assert_eq!(unsafe { h.call0(bump) }.unwrap(), 1, "the probe's init ran in the child, not here");
    h.close().unwrap();
}
