//! A crash costs a bounded amount, forever (issue 11): crash-reload cycles of a plain module
//! under the default crash policy leave resident memory and the number of mappings flat.
//!
//! `KMODLIKE_SOAK_CYCLES` overrides the number of cycles (default 100,000). The test prints
//! the figures (resident memory, mappings, the time of the first and last 1,000 cycles and
//! their ratio) and asserts only on memory and mappings: the time is printed, never asserted
//! (the machines it runs on are noisy).
//!
//! Run with the figures shown:
//! `cargo nextest run -p kmodlike --test crash_soak --no-capture`

use std::path::PathBuf;
use std::time::{Duration, Instant};

use kmodlike::{Error, Loader};
use kmodlike_testsupport as ts;

/// Cycles of the soak, unless `KMODLIKE_SOAK_CYCLES` says otherwise.
const DEFAULT_CYCLES: usize = 100_000;
/// The cycles timed at each end, and the point from which growth is measured.
const WINDOW: usize = 1_000;
/// Growth allowed between cycle `WINDOW` and the end.
const MAX_RSS_GROWTH: u64 = 1024 * 1024;
const MAX_MAPPINGS_GROWTH: usize = 64;

fn counter() -> PathBuf {
    ts::test_module("counter", "counter", &[])
}

fn cycles() -> usize {
    std::env::var("KMODLIKE_SOAK_CYCLES")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(DEFAULT_CYCLES, |n: usize| n.max(2 * WINDOW))
}

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map(|m| m.lines().count()).unwrap_or(0)
}

type Bump = extern "C" fn() -> i32;
type Crash = extern "C" fn();

/// Open the module, call it, crash it. The crash report must name the module and the signal,
/// the module must be gone, and its handle dead.
fn cycle(loader: &Loader, spec: &str, i: usize) {
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open(spec) }.unwrap_or_else(|e| panic!("cycle {i}: open: {e}"));
    // SAFETY: the fixture defines `int bump(void)` and `void crash_now(void)`.
    let (bump, crash) = unsafe {
        (
            std::mem::transmute::<*mut std::ffi::c_void, Bump>(h.symbol_ptr("bump").unwrap()),
            std::mem::transmute::<*mut std::ffi::c_void, Crash>(h.symbol_ptr("crash_now").unwrap()),
        )
    };
    // SAFETY: `bump` is the fixture module's C code; a fault skips only its frames.
    assert_eq!(unsafe { h.call0(bump) }.unwrap(), 1, "cycle {i}: a fresh instance");
    // SAFETY: `crash` is the fixture module's C code; a fault skips only its frames.
    match unsafe { h.call0(crash) } {
        Err(Error::Crashed(r)) => {
            assert_eq!((r.signal_name.as_str(), r.module.as_str()), ("SIGSEGV", "counter"))
        }
        other => panic!("cycle {i}: expected a crash, got {other:?}"),
    }
    assert!(!h.is_live(), "cycle {i}: the crashed module is gone");
}

#[test]
fn crash_reload_cycles_leave_memory_and_mappings_flat() {
    if !ts::in_own_process(
        "crash_reload_cycles_leave_memory_and_mappings_flat",
        Duration::from_secs(50 * 60),
    ) {
        return;
    }
    let n = cycles();
    let path = counter();
    let spec = path.to_str().unwrap();
    let loader = Loader::new();
    let (rss0, maps0) = (ts::rss_bytes(), mappings());
    let started = Instant::now();
    let mut first = Duration::ZERO;
    let (mut rss1, mut maps1) = (0, 0);
    let mut last_start = started;
    for i in 0..n {
        if i == n - WINDOW {
            last_start = Instant::now();
        }
        cycle(&loader, spec, i);
        if i + 1 == WINDOW {
            first = started.elapsed();
            (rss1, maps1) = (ts::rss_bytes(), mappings());
        }
    }
    let last = last_start.elapsed();
    let total = started.elapsed();
    let (rss2, maps2) = (ts::rss_bytes(), mappings());
    assert!(loader.list().is_empty(), "nothing is left loaded");
    assert_eq!(loader.crashes().len(), 256, "the crash history keeps the last 256 reports");
    // The host lives on and still loads, calls and unloads the module.
    // SAFETY: a fixture module this test built from its C source for the interface.
    unsafe { loader.open(spec) }.unwrap().close().unwrap();

    let kib = |b: u64| b as f64 / 1024.0;
    let ratio = last.as_secs_f64() / first.as_secs_f64();
    println!("crash soak: {n} crash-reload cycles of a plain module, default crash policy");
    println!(
        "  rss:      start {:.0} KiB, after {WINDOW} cycles {:.0} KiB, end {:.0} KiB \
         (growth since cycle {WINDOW}: {:+.0} KiB)",
        kib(rss0),
        kib(rss1),
        kib(rss2),
        kib(rss2) - kib(rss1)
    );
    println!(
        "  mappings: start {maps0}, after {WINDOW} cycles {maps1}, end {maps2} (growth since \
         cycle {WINDOW}: {:+})",
        maps2 as i64 - maps1 as i64
    );
    println!(
        "  time:     first {WINDOW} cycles {:.3} s ({:.3} ms each), last {WINDOW} {:.3} s \
         ({:.3} ms each), ratio {ratio:.2} (target <= 1.2, not asserted); total {:.1} s",
        first.as_secs_f64(),
        first.as_secs_f64() * 1000.0 / WINDOW as f64,
        last.as_secs_f64(),
        last.as_secs_f64() * 1000.0 / WINDOW as f64,
        total.as_secs_f64()
    );
    assert!(
        rss2.saturating_sub(rss1) <= MAX_RSS_GROWTH,
        "resident memory grew by {} KiB between cycle {WINDOW} and cycle {n}",
        rss2.saturating_sub(rss1) / 1024
    );
    assert!(
        maps2.saturating_sub(maps1) <= MAX_MAPPINGS_GROWTH,
        "mappings grew from {maps1} to {maps2} between cycle {WINDOW} and cycle {n}"
    );
}
