//! How soon a call past its deadline is interrupted: the detection latency of the guard's
//! watchdog (issue 13), measured over many timed-out calls of the bench module's `bench_spin`.

use std::path::Path;
use std::time::Duration;

use kmodlike::{CallOptions, Error, Loader};

/// How late the interrupts came, past each call's deadline.
#[derive(Debug, Clone, Copy)]
pub struct Latency {
    /// Calls measured.
    pub calls: usize,
    /// Median lateness.
    pub median: Duration,
    /// Worst lateness.
    pub max: Duration,
}

/// Run `calls` calls of `bench_spin` in `module`, each with the time limit `limit` (and no
/// slow-call warning), reloading the module after each; how long past its deadline each was
/// interrupted comes from its report (`ran - limit`).
pub fn detection_latency(module: &Path, calls: usize, limit: Duration) -> Latency {
    let loader = Loader::new();
    let opts = CallOptions::default().with_timeout(limit).with_soft_timeout(limit);
    let mut late = Vec::with_capacity(calls);
    for i in 0..calls {
        // SAFETY: the bench module, built from its C source for the interface.
        let h = unsafe { loader.open(module.to_str().expect("a UTF-8 path")) }
            .unwrap_or_else(|e| panic!("call {i}: open: {e}"));
        // SAFETY: the bench module defines `void bench_spin(void)`.
        let spin = unsafe { *h.symbol::<extern "C" fn()>("bench_spin").expect("bench_spin") };
        // SAFETY: the module's own C code; the interrupt skips only its frames.
        match unsafe { h.call0_with(&opts, spin) } {
            Err(Error::TimedOut(r)) => {
                let ran = r.timeout.expect("a timeout report").ran;
                late.push(ran.saturating_sub(limit));
            }
            other => panic!("call {i}: expected TimedOut, got {other:?}"),
        }
    }
    late.sort();
    Latency { calls, median: late[late.len() / 2], max: late[late.len() - 1] }
}
