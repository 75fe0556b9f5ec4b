//! Timed-out calls cost a bounded amount, forever: 10,000 calls in a row, each interrupted at
//! its deadline (and its module unloaded and loaded again), leave open descriptors, resident
//! memory and mappings flat. Also prints how long after its deadline each call was
//! interrupted (median and maximum; printed, never asserted: the machines are noisy).
//!
//! `KMODLIKE_TIMEOUT_SOAK_CALLS` overrides the number of calls (default 10,000).
//! Run with the figures shown:
//! `cargo test -p kmodlike --test timeout_soak -- --nocapture`

use std::time::Duration;

use kmodlike::{Error, Loader};
use kmodlike_testsupport as ts;

const DEFAULT_CALLS: usize = 10_000;
/// The calls after which growth is measured.
const WINDOW: usize = 1_000;
const MAX_RSS_GROWTH: u64 = 1024 * 1024;
const MAX_MAPPINGS_GROWTH: usize = 64;
const LIMIT: Duration = Duration::from_millis(1);

fn mappings() -> usize {
    std::fs::read_to_string("/proc/self/maps").map(|m| m.lines().count()).unwrap_or(0)
}

#[test]
fn timed_out_calls_leave_descriptors_memory_and_mappings_flat() {
    if !ts::in_own_process(
        "timed_out_calls_leave_descriptors_memory_and_mappings_flat",
        Duration::from_secs(20 * 60),
    ) {
        return;
    }
    let n = std::env::var("KMODLIKE_TIMEOUT_SOAK_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map_or(DEFAULT_CALLS, |n: usize| n.max(2 * WINDOW));
    let path = ts::test_module("hang", "hang", &[]);
    let spec = path.to_str().unwrap();
    let loader = Loader::builder().call_timeout(Some(LIMIT)).build();
    let mut late = Vec::with_capacity(n);
    let (mut rss1, mut maps1, mut fds1) = (0, 0, 0);
    for i in 0..n {
        // SAFETY: a fixture module this test built from its C source for the interface.
        let h = unsafe { loader.open(spec) }.unwrap_or_else(|e| panic!("call {i}: open: {e}"));
        // SAFETY: the fixture defines `void spin(void)`.
        let spin = unsafe { *h.symbol::<extern "C" fn()>("spin").unwrap() };
        // SAFETY: the fixture's C code; an interrupt skips only its frames.
        match unsafe { h.call0(spin) } {
            Err(Error::TimedOut(r)) => {
                let t = r.timeout.expect("a timeout report");
                late.push(t.ran.saturating_sub(LIMIT));
            }
            other => panic!("call {i}: expected TimedOut, got {other:?}"),
        }
        assert!(!h.is_live(), "call {i}: the module is gone");
        if i + 1 == WINDOW {
            (rss1, maps1, fds1) = (ts::rss_bytes(), mappings(), ts::open_fds());
        }
    }
    let (rss2, maps2, fds2) = (ts::rss_bytes(), mappings(), ts::open_fds());
    assert!(loader.list().is_empty(), "nothing is left loaded");
    late.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("timeout soak: {n} calls timed out after {LIMIT:?} each");
    println!(
        "  interrupted after the deadline: median {:.3} ms, max {:.3} ms (target <= 10 ms)",
        ms(late[late.len() / 2]),
        ms(late[late.len() - 1])
    );
    println!(
        "  growth since call {WINDOW}: rss {:+} KiB, mappings {:+}, descriptors {:+}",
        (rss2 as i64 - rss1 as i64) / 1024,
        maps2 as i64 - maps1 as i64,
        fds2 as i64 - fds1 as i64
    );
    assert!(rss2.saturating_sub(rss1) <= MAX_RSS_GROWTH, "rss grew {rss1} -> {rss2}");
    assert!(maps2.saturating_sub(maps1) <= MAX_MAPPINGS_GROWTH, "mappings {maps1} -> {maps2}");
    assert!(fds2 <= fds1, "descriptors {fds1} -> {fds2}");
}
