//! Deadlines of guarded calls: the watchdog that interrupts a call past its deadline.
//!
//! # How a deadline works
//!
//! A caller with a deadline hands the entry a [`Deadline`] (hard and soft deadline, start, the
//! function), which the entry copies into the call's slot before it stores the module; a call
//! without one costs one store (the slot's deadline word set to 0). A call's start is read from
//! the precise clock for limits under 160 ms, and from the coarse one otherwise (a few
//! nanoseconds instead of tens; the deadline may then fire a few milliseconds late, see
//! `coarse_start_ns`). The first deadline starts the process's one watchdog thread and
//! installs the interrupt signal's handler (`interrupt.c`). Registering a deadline is a plain
//! store of it in the thread's record and a load of the watchdog's "earliest deadline" word
//! and, only when the new deadline is earlier, a store and a wake-up; the watchdog's scan
//! begins with a process-wide barrier (`membarrier`), so the caller needs no fence.
//!
//! The watchdog sleeps (a condition variable with a timeout: no polling) until the earliest
//! deadline it knows, then scans the registered threads' slots (`fast.c`, `kml_calls_scan`):
//!
//! - at a call's **soft deadline** it samples the thread's PC and stack without stopping it
//!   (the sampling signal of `threads.rs`) and reports a [`WatchEvent::Slow`];
//! - at its **hard deadline** it sends the thread the **interrupt signal** (default
//!   [`DEFAULT_INTERRUPT_SIGNAL`], `SIGRTMAX - 4`; [`set_interrupt_signal`], env
//!   `KMODLIKE_INTERRUPT_SIGNAL`), installed without `SA_RESTART` so a blocking system call
//!   is interrupted. Its handler (`guard.c`, `kml_guard_interrupt`) records the registers and
//!   the stack as for a crash (cause: timeout) and leaves the call as a crash does: the call
//!   returns [`Outcome::TimedOut`](super::Outcome::TimedOut).
//! - **Where it ends a call.** In the module's code, or in a system call the signal
//!   interrupted (`read`, `sleep`, a futex wait), anywhere. In other library code (the
//!   allocator, the unwinder, the dynamic linker, which may hold one of their locks at that
//!   instruction) the handler lets the thread run on and the watchdog asks again every
//!   millisecond ([`RETRY`]): a loop that calls `malloc` is ended in its
//!   own code. After [`ASK_FOR`](super::asking::ASK_FOR) and [`ASKS`](super::asking::ASKS)
//!   looks, a thread still in libc, ld.so or `libgcc_s` is reported [`WatchEvent::Hung`]
//!   (ended there, it could leave their locks held and deadlock the host); one in any other
//!   library is ended there (the request insists). `asking.rs` has the details.
//! - While a host callback (`log`, `get_time`) runs on that thread, the interrupt is held
//!   and delivered when the callback returns to module code.
//! - A thread that blocks the signal (`SigBlk` and `SigPnd` in
//!   `/proc/self/task/TID/status`, for 100 ms without a break), or that does not leave the
//!   call within [`GRACE`](super::asking::GRACE) of an insisting request, is reported
//!   [`WatchEvent::Hung`]: the loader marks the module hung, refuses new calls, and leaves the
//!   thread alone.

use std::ffi::c_int;
use std::sync::atomic::{AtomicI32, AtomicPtr, AtomicU64, AtomicU8, Ordering};
use std::sync::{mpsc, Condvar, Mutex, OnceLock};
use std::time::Duration;

use super::asking::{blocks_signal, in_runtime_library, Asking, Key, Step, BLOCKED_CHECK, RETRY};
use super::ffi;
pub(crate) use super::interrupt_signal::set_interrupt_signal;
pub use super::interrupt_signal::{
    default_interrupt_signal, interrupt_signal, DEFAULT_INTERRUPT_SIGNAL, INTERRUPT_SIGNAL_ENV,
};

/// A guarded call's deadline, as the entry copies it into the slot (`struct kml_deadline`).
/// Times are `CLOCK_MONOTONIC` nanoseconds.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Deadline {
    /// Interrupt the call from this time on.
    pub hard: u64,
    /// Sample its stack and warn at this time (0: no warning).
    pub soft: u64,
    /// When the call started.
    pub start: u64,
    /// The function the caller asked for (for reports), or 0.
    pub func: u64,
}

impl Deadline {
    /// A deadline `timeout` nanoseconds from now, with the warning at `soft` (default: half
    /// of `timeout`), for a call of `func`. Starts the watchdog (once) and wakes it when this
    /// deadline is the earliest it knows.
    #[inline]
    pub(crate) fn after(timeout: u64, soft: Option<u64>, func: u64) -> Deadline {
        let start = if timeout >= COARSE_ENOUGH { coarse_start_ns() } else { monotonic_ns() };
        let hard = start.saturating_add(timeout).max(3);
        let soft = soft.unwrap_or(timeout / 2);
        let soft = if soft >= timeout { 0 } else { start.saturating_add(soft).max(3) };
        let d = Deadline { hard, soft, start, func };
        let at = if soft != 0 { soft } else { hard };
        // Pending first, then the watchdog's word: a watchdog that read the word finds the
        // deadline in the scan (pending until the entry writes the slot).
        // SAFETY: normal context; writes this thread's record (made if needed).
        unsafe { ffi::kml_deadline_pending(at) };
        register(at);
        d
    }
}

/// Time limits from which a call's start is read from the coarse clock: its tick (4 ms at
/// `HZ=250`) is then at most a fortieth of the limit, and reading it costs a few nanoseconds
/// where the precise clock costs tens (the guarded call it adds to costs about five).
const COARSE_ENOUGH: u64 = 160_000_000;

/// The start of a call as `CLOCK_MONOTONIC` nanoseconds, from `CLOCK_MONOTONIC_COARSE` (the
/// same clock, as of the kernel's last timekeeping update) plus two ticks. The coarse clock
/// lags the precise one by up to about a tick and a half (2.3-6.4 ms at `HZ=250` on our
/// machines), so the start is a few milliseconds after the true one in practice: a deadline
/// counted from it fires that much late, never early unless the kernel's tick itself is
/// delayed by more than that.
fn coarse_start_ns() -> u64 {
    static TICK: AtomicU64 = AtomicU64::new(0);
    let mut tick = TICK.load(Ordering::Relaxed);
    if tick == 0 {
        let mut res = libc::timespec { tv_sec: 0, tv_nsec: 0 };
        // SAFETY: clock_getres writes the timespec we own.
        let rc = unsafe { libc::clock_getres(libc::CLOCK_MONOTONIC_COARSE, &mut res) };
        tick = if rc == 0 {
            (res.tv_sec as u64 * 1_000_000_000 + res.tv_nsec as u64).max(1)
        } else {
            u64::MAX // no coarse clock: the precise one below
        };
        TICK.store(tick, Ordering::Relaxed);
    }
    if tick > 100_000_000 {
        return monotonic_ns();
    }
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC_COARSE, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64 + 2 * tick
}

/// `d` in nanoseconds, saturating at a quarter of `u64::MAX` (146 years: deadlines add it to
/// the clock). Cheaper than `as_nanos`, which works in 128 bits.
#[inline]
pub(crate) fn duration_ns(d: Duration) -> u64 {
    const MAX: u64 = u64::MAX / 4;
    d.as_secs()
        .checked_mul(1_000_000_000)
        .and_then(|s| s.checked_add(u64::from(d.subsec_nanos())))
        .map_or(MAX, |n| n.min(MAX))
}

/// CLOCK_MONOTONIC in nanoseconds.
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Install the interrupt handler (once per process; a fork child inherits it) and start the
/// watchdog (again in a fork child, where the parent's does not exist). Err with the reason.
pub(crate) fn ensure_started() -> Result<c_int, String> {
    let signo = super::interrupt_signal::install()?;
    if STATE.load(Ordering::Acquire) != RUNNING
        && STATE.compare_exchange(STOPPED, STARTING, Ordering::AcqRel, Ordering::Acquire).is_ok()
    {
        // A fresh record (a fork child's copy of the parent's may hold a lock of a thread
        // that does not exist here). The old one is leaked: one per fork, a few words.
        let w: &'static Watchdog = Box::leak(Box::new(Watchdog {
            earliest: AtomicU64::new(u64::MAX),
            lock: Mutex::new(()),
            wake: Condvar::new(),
        }));
        WATCHDOG.store(w as *const Watchdog as *mut Watchdog, Ordering::Release);
        let started = std::thread::Builder::new()
            .name("kmodlike-watchdog".into())
            .spawn(move || watchdog_loop(w));
        STATE.store(if started.is_ok() { RUNNING } else { STOPPED }, Ordering::Release);
        started.map_err(|e| format!("cannot start the watchdog thread: {e}"))?;
    }
    Ok(signo)
}

/// The watchdog's states: none in this process, being started, running.
const STOPPED: u8 = 0;
const STARTING: u8 = 1;
const RUNNING: u8 = 2;
static STATE: AtomicU8 = AtomicU8::new(STOPPED);
static WATCHDOG: AtomicPtr<Watchdog> = AtomicPtr::new(std::ptr::null_mut());

/// The fork child handler's part: the watchdog thread does not exist in the child; the next
/// deadline starts one. Async-signal-safe: atomic stores.
pub(super) fn after_fork_child() {
    STATE.store(STOPPED, Ordering::Release);
    WATCHDOG_TID.store(0, Ordering::Relaxed);
    REPORTER_TID.store(0, Ordering::Relaxed);
}

/// What the watchdog reports to the loader.
#[derive(Debug)]
pub(crate) enum WatchEvent {
    /// A call passed its soft deadline: where it was.
    Slow { call: InFlight, sample: Option<super::threads::ThreadSample> },
    /// A call past its hard deadline cannot be interrupted: why.
    Hung { call: InFlight, why: String },
}

/// One guarded call in flight.
#[derive(Debug, Clone)]
pub(crate) struct InFlight {
    pub tid: i32,
    pub module_id: u64,
    /// Hard deadline (monotonic ns), 0 for none.
    pub deadline: u64,
    /// Start (monotonic ns), 0 when unknown (a call without a deadline).
    pub start: u64,
    /// The function, 0 when unknown.
    pub func: u64,
}

impl InFlight {
    fn of(c: &ffi::CInFlight) -> InFlight {
        InFlight {
            tid: c.tid,
            module_id: c.module_id,
            deadline: c.deadline,
            start: c.start,
            func: c.func,
        }
    }
}

static SINK: OnceLock<fn(WatchEvent)> = OnceLock::new();

/// Where the watchdog's reports go (the loader's, set once).
pub(crate) fn set_watch_sink(sink: fn(WatchEvent)) {
    let _ = SINK.set(sink);
}

/// Hand `ev` to the reporter thread. The watchdog never builds a report itself: naming a
/// sample's frames reads symbol tables (seconds for a large binary), and a hard deadline due
/// meanwhile would wait for it.
fn report(ev: WatchEvent) {
    // The reporter of this process (a fork child starts its own): (pid, its queue).
    static REPORTER: Mutex<Option<(u32, mpsc::Sender<WatchEvent>)>> = Mutex::new(None);
    let mut r = REPORTER.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id();
    if r.as_ref().is_none_or(|(p, _)| *p != pid) {
        let (tx, rx) = mpsc::channel::<WatchEvent>();
        let spawned =
            std::thread::Builder::new().name("kmodlike-watch-report".into()).spawn(move || {
                // SAFETY: gettid has no preconditions.
                REPORTER_TID.store(unsafe { libc::gettid() }, Ordering::Relaxed);
                rx.into_iter().for_each(deliver)
            });
        match spawned {
            Ok(_) => *r = Some((pid, tx)),
            Err(_) => return deliver(ev), // no thread: report here rather than not at all
        }
    }
    if let Some((_, tx)) = r.as_ref() {
        let _ = tx.send(ev);
    }
}

/// Give `ev` to the loader's sink (on the reporter thread).
fn deliver(ev: WatchEvent) {
    match SINK.get() {
        Some(sink) => sink(ev),
        None => eprintln!("kmodlike: watchdog: {ev:?}"),
    }
}

/// Every guarded call in flight in the process (those the scan sees: see `kml_calls_scan`).
fn scan_raw() -> Vec<ffi::CInFlight> {
    let mut buf = vec![ffi::CInFlight::default(); 64];
    // (index -2: a registered deadline whose call is not in its slot yet; see kml_calls_scan)
    loop {
        // SAFETY: `buf` holds `buf.len()` writable records.
        let n = unsafe { ffi::kml_calls_scan(buf.as_mut_ptr(), buf.len() as u32) } as usize;
        if n <= buf.len() {
            buf.truncate(n);
            return buf;
        }
        buf = vec![ffi::CInFlight::default(); n + 16];
    }
}

/// Every guarded call in flight in the process.
pub(crate) fn calls_in_flight() -> Vec<InFlight> {
    scan_raw().iter().filter(|c| c.index != -2).map(InFlight::of).collect()
}

/// Interrupt now, as a deadline would, every call in flight in module `module_id`. Returns how
/// many were interrupted (sent the signal, or held until a host callback returns).
pub(crate) fn interrupt_module(module_id: u64) -> usize {
    if ensure_started().is_err() {
        return 0;
    }
    let mut n = 0;
    for c in scan_raw().iter().filter(|c| c.module_id == module_id && c.index != -2) {
        // SAFETY: plain values; the shim checks the call is still there under its lock.
        let rc = unsafe { ffi::kml_interrupt_call(c.tid, c.index, c.deadline, ffi::INTERRUPT_NOW) };
        if rc > 0 {
            n += 1;
        }
    }
    if n > 0 {
        // The watchdog watches the grace of those interrupts.
        register(1);
    }
    n
}

struct Watchdog {
    /// The earliest deadline (soft or hard) the watchdog may not know about: a caller stores
    /// its own when it is earlier, and wakes the watchdog.
    earliest: AtomicU64,
    lock: Mutex<()>,
    wake: Condvar,
}

/// A new deadline at `at`: wake the watchdog if it is earlier than any it knows.
fn register(at: u64) {
    if STATE.load(Ordering::Acquire) != RUNNING {
        if let Err(why) = ensure_started() {
            eprintln!("kmodlike: deadlines are not enforced: {why}");
            return;
        }
    }
    let w = WATCHDOG.load(Ordering::Acquire);
    if w.is_null() {
        return; // being started: its first scan finds this call
    }
    // SAFETY: a leaked watchdog record, never freed.
    let w = unsafe { &*w };
    if at < w.earliest.load(Ordering::Relaxed) {
        let prev = w.earliest.fetch_min(at, Ordering::SeqCst);
        if at < prev {
            let _g = w.lock.lock().unwrap_or_else(|e| e.into_inner());
            w.wake.notify_one();
        }
    }
}

/// How long the watchdog waits for a running thread to answer the sampling signal (it
/// interrupts no call meanwhile).
const SAMPLE_WAIT: Duration = Duration::from_millis(20);

/// How soon the watchdog looks again at a due deadline whose call was not in its slot yet.
const PENDING_RETRY: u64 = 1_000_000;

/// The watchdog thread's id (0 before it starts): kmodlike's own, never in module code (the
/// module addresses it handles are data to it), so the unload's thread scan skips it.
static WATCHDOG_TID: AtomicI32 = AtomicI32::new(0);

/// The reporter thread's id (0 before it starts): kmodlike's own too. It names the frames of
/// stack samples, so module addresses sit on its stack as data while it works.
static REPORTER_TID: AtomicI32 = AtomicI32::new(0);

/// Is `tid` one of the watchdog's own threads (the watchdog, its reporter)? They never run
/// module code; the unload's thread scan skips them.
pub(crate) fn is_watchdog_thread(tid: i32) -> bool {
    tid != 0
        && (tid == WATCHDOG_TID.load(Ordering::Relaxed)
            || tid == REPORTER_TID.load(Ordering::Relaxed))
}

fn watchdog_loop(w: &'static Watchdog) {
    // SAFETY: gettid has no preconditions.
    WATCHDOG_TID.store(unsafe { libc::gettid() }, Ordering::Relaxed);
    let signo = interrupt_signal();
    // Interrupts sent and when; calls reported hung; interrupts held in a host callback.
    let mut sent: Vec<(Key, Asking)> = Vec::new();
    let mut hung: Vec<Key> = Vec::new();
    let mut held: Vec<Key> = Vec::new();
    loop {
        w.earliest.store(u64::MAX, Ordering::SeqCst);
        let now = monotonic_ns();
        let calls = scan_raw();
        let mut next = u64::MAX;
        let mut seen: Vec<Key> = Vec::new();
        for c in calls.iter().filter(|c| c.deadline != 0) {
            if c.index == -2 {
                // A call about to write its slot (or one that never reached the entry):
                // look again soon if it is due.
                let again = if c.deadline <= now { now + PENDING_RETRY } else { c.deadline };
                next = next.min(again);
                continue;
            }
            let key = (c.tid, c.index, c.deadline);
            seen.push(key);
            if hung.contains(&key) || held.contains(&key) {
                continue;
            }
            if c.deadline <= now {
                if let Some(i) = sent.iter().position(|(k, _)| *k == key) {
                    // Sent, and the call is still there.
                    let in_runtime = || in_runtime_library(c.waited_pc);
                    let blocked = blocks_signal(c.tid, signo);
                    match sent[i].1.next_step(now, blocked, c.waits, in_runtime) {
                        Step::Wait(at) => next = next.min(at),
                        Step::Ask { insist } => {
                            let how = if insist { ffi::INTERRUPT_INSIST } else { 0 };
                            // SAFETY: plain values; the shim checks the call is still there.
                            unsafe { ffi::kml_interrupt_call(c.tid, c.index, c.deadline, how) };
                            next = next.min(now + if insist { BLOCKED_CHECK } else { RETRY });
                        }
                        Step::Hung(why) => {
                            let why = format!("thread {}: {why}", c.tid);
                            hung.push(key);
                            report(WatchEvent::Hung { call: InFlight::of(c), why });
                        }
                    }
                    continue;
                }
                // SAFETY: plain values; the shim checks the call is still there.
                match unsafe { ffi::kml_interrupt_call(c.tid, c.index, c.deadline, 0) } {
                    1 => {
                        sent.push((key, Asking::new(now, c.waits)));
                        next = next.min(now + RETRY);
                    }
                    2 => held.push(key),
                    0 => {}
                    _ => {
                        hung.push(key);
                        let why = format!(
                            "the interrupt signal {signo} could not be sent to thread {}: {}",
                            c.tid,
                            std::io::Error::last_os_error()
                        );
                        report(WatchEvent::Hung { call: InFlight::of(c), why });
                    }
                }
                continue;
            }
            next = next.min(c.deadline);
            if c.soft != 0 {
                if c.soft <= now {
                    // SAFETY: plain values; the shim checks the call is still there.
                    if unsafe { ffi::kml_claim_soft(c.tid, c.index, c.soft) } == 1 {
                        let sample = super::threads::sample_thread(c.tid, SAMPLE_WAIT);
                        report(WatchEvent::Slow { call: InFlight::of(c), sample });
                    }
                } else {
                    next = next.min(c.soft);
                }
            }
        }
        sent.retain(|(k, _)| seen.contains(k));
        hung.retain(|k| seen.contains(k));
        held.retain(|k| seen.contains(k));
        w.earliest.fetch_min(next, Ordering::SeqCst);
        let g = w.lock.lock().unwrap_or_else(|e| e.into_inner());
        let at = w.earliest.load(Ordering::SeqCst);
        let now = monotonic_ns();
        if at > now {
            let wait = Duration::from_nanos((at - now).min(3_600_000_000_000));
            drop(w.wake.wait_timeout(g, wait).unwrap_or_else(|e| e.into_inner()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_coarse_start_is_close_to_the_precise_clock() {
        // Bounds far wider than the clock's lag: a preempted thread must not fail this.
        for _ in 0..10_000 {
            let before = monotonic_ns();
            let start = coarse_start_ns();
            let after = monotonic_ns();
            assert!(start + 1_000_000_000 >= before, "coarse {start} far before {before}");
            assert!(start <= after + 1_000_000_000, "coarse {start} far after {after}");
        }
    }

    #[test]
    fn durations_convert_to_nanoseconds_and_saturate() {
        assert_eq!(duration_ns(Duration::from_millis(1500)), 1_500_000_000);
        assert_eq!(duration_ns(Duration::from_nanos(7)), 7);
        assert_eq!(duration_ns(Duration::MAX), u64::MAX / 4);
        assert_eq!(duration_ns(Duration::from_secs(u64::MAX / 1_000_000_000)), u64::MAX / 4);
    }
}
