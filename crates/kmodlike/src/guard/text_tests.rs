//! Unit tests of the guard's table of module text (`text.c`): it grows past the 8,192 slots
//! the fixed table had, the signal handler finds ranges in grown chunks, freed slots are
//! reused, and a full table refuses a registration as a whole (and the loader the load).
//! Each test runs alone in its own process: the table is process-wide.

use super::*;
use std::sync::Condvar;
use std::time::{Duration, Instant};

use kmodlike_testsupport as ts;

/// Fake text ranges live above the 47-bit user address space: no real module is ever there.
const FAKE_BASE: u64 = 0x1000_0000_0000_0000;

fn fake_range(k: u64) -> (u64, u64) {
    (FAKE_BASE + k * 0x100, FAKE_BASE + k * 0x100 + 0x80)
}

static CRASHES: (Mutex<Vec<RawCrash>>, Condvar) = (Mutex::new(Vec::new()), Condvar::new());

fn record(c: RawCrash) {
    CRASHES.0.lock().unwrap().push(c);
    CRASHES.1.notify_all();
}

fn wait_crash() -> RawCrash {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = CRASHES.0.lock().unwrap();
    while got.is_empty() {
        let left = deadline.saturating_duration_since(Instant::now());
        assert!(!left.is_zero(), "no thread crash reported");
        got = CRASHES.1.wait_timeout(got, left).unwrap().0;
    }
    got[0].clone()
}

/// A module thread's body: an undefined instruction at its very start (SIGILL).
#[inline(never)]
extern "C" fn thread_body_ud2() {
    // SAFETY: none, deliberately: ud2 raises SIGILL and the guard parks this thread.
    unsafe { std::arch::asm!("ud2") };
}

#[test]
fn the_table_grows_past_8192_ranges_and_the_handler_reads_the_new_chunks() {
    if !ts::in_own_process(
        "guard::text_tests::the_table_grows_past_8192_ranges_and_the_handler_reads_the_new_chunks",
        Duration::from_secs(120),
    ) {
        return;
    }
    install();
    set_thread_crash_sink(record);
    const N: u64 = 20_000;
    for k in 0..N {
        register_module(1_000_000 + k, &[fake_range(k)]).unwrap();
    }
    let grown = text_table_stats();
    assert!(grown.used >= N as u32 && grown.high_water >= N as u32, "{grown:?}");
    assert!(grown.chunks > 8192 / 512, "chunks were mapped on demand: {grown:?}");
    for k in (0..N).step_by(97).chain([N - 1]) {
        let (start, end) = fake_range(k);
        assert_eq!(module_at(start), Some(1_000_000 + k));
        assert_eq!(module_at(end - 1), Some(1_000_000 + k));
        assert_eq!(module_at(end), None);
    }

    // A real fault on a thread without a guard, in text registered beyond slot 20,000: the
    // handler finds it there (atomics only), parks the thread and reports it.
    let body = thread_body_ud2 as *const () as usize as u64;
    register_module(77, &[(body, body + 16)]).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: gettid has no preconditions.
        tx.send(unsafe { libc::gettid() }).unwrap();
        thread_body_ud2();
    });
    let tid = rx.recv().unwrap();
    let c = wait_crash();
    assert_eq!((c.signo, c.module_id, c.tid, c.on_module_thread), (libc::SIGILL, 77, tid, true));
    let grown = text_table_stats();

    // Freed slots are reused: registering as many again does not grow the table.
    for k in 0..N {
        unregister_module(1_000_000 + k);
    }
    assert_eq!(module_at(fake_range(5).0), None);
    for k in 0..N {
        register_module(3_000_000 + k, &[fake_range(k)]).unwrap();
    }
    let again = text_table_stats();
    assert_eq!((again.high_water, again.chunks), (grown.high_water, grown.chunks), "{again:?}");
    assert_eq!(module_at(fake_range(N - 1).0), Some(3_000_000 + N - 1));
    println!("text table: {grown:?}, after reuse {again:?}");
}

#[test]
fn a_full_table_refuses_a_registration_as_a_whole_and_the_loader_refuses_the_load() {
    if !ts::in_own_process(
        "guard::text_tests::a_full_table_refuses_a_registration_as_a_whole_and_the_loader_refuses_the_load",
        Duration::from_secs(120),
    ) {
        return;
    }
    let module = ts::test_module("counter", "counter", &[]);
    let loader = crate::Loader::new();
    let before = text_table_stats();
    let free = u64::from(before.capacity - before.used);
    for k in 0..free - 1 {
        register_module(1_000_000 + k, &[fake_range(k)]).unwrap();
    }
    // One slot left: two ranges do not fit, and none of them is taken.
    let e = register_module(42, &[fake_range(free), fake_range(free + 1)]).unwrap_err();
    assert_eq!(text_table_stats().used, before.capacity - 1);
    assert_eq!(module_at(fake_range(free).0), None, "all or none");
    assert!(e.to_string().contains("table of module code is full"), "{e}");
    register_module(43, &[fake_range(free)]).unwrap();
    assert_eq!(text_table_stats().used, before.capacity);

    // A full table refuses the load, naming the module and the bound; the host lives on.
    // SAFETY: a fixture module this test built from its C source for the interface.
    let e = unsafe { loader.open(module.to_str().unwrap()) }.unwrap_err();
    assert!(matches!(e, crate::Error::Limit { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("counter") && msg.contains("table of module code is full"), "{msg}");
    assert!(loader.list().is_empty());
    assert_eq!(text_table_stats().used, before.capacity, "the refused load left nothing");

    // Room again: the same module loads, runs and unloads.
    unregister_module(43);
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open(module.to_str().unwrap()) }.unwrap();
    h.close().unwrap();
    println!("full table: {:?}", text_table_stats());
}
