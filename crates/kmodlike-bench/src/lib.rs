//! # kmodlike-bench: what each layer of kmodlike costs, against what a user would otherwise use
//!
//! The benchmarks (`benches/kmodlike.rs`, run by `make bench` / `cargo bench -p kmodlike-bench`)
//! measure kmodlike and a baseline side by side in the same run and report ratios, so the
//! figures hold on a busy machine. This library holds what they share:
//!
//! - [`baselines`]: the C baselines (`c/baselines.c`: a naive `sigsetjmp(env, 1)` guard, a bare
//!   `raise(SIGUSR1)` round trip, a faulting function) and the one crate-private entry of
//!   kmodlike's guard used to time the signal path alone;
//! - [`fixtures`]: the modules the benches load, built from real C sources with the system
//!   compiler, including the 1,000 distinct modules of the scale benchmark;
//! - [`daemon`]: the daemon's server in this process (round trips) and the real program in a
//!   child process (resident memory);
//! - [`echo`]: the raw Unix-socket echo server and client, the daemon's baseline;
//! - [`paired`]: ours and the baseline run alternately, so load on the machine hits both alike;
//! - [`summary`]: reading criterion's estimates back and printing and writing the one summary
//!   table (`target/bench/summary.json`).
//!
//! See `docs/performance.md` for the figures from a run and how to reproduce them.
#![warn(missing_docs)]

pub mod baselines;
pub mod daemon;
pub mod deadline;
pub mod echo;
pub mod fixtures;
pub mod paired;
pub mod summary;
pub mod trust;

use std::path::PathBuf;

/// The workspace's `target/` directory (`$CARGO_TARGET_DIR` when set).
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => kmodlike_testsupport::workspace_root().join("target"),
    }
}

/// `target/bench/`: the summary and the generated scale modules.
pub fn bench_dir() -> PathBuf {
    target_dir().join("bench")
}

/// Resident set size of process `pid`, in bytes (`VmRSS` of `/proc/<pid>/status`).
pub fn rss_of(pid: u32) -> std::io::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|kib| kib.parse::<u64>().ok())
        .map(|kib| kib * 1024)
        .ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("no VmRSS line in /proc/{pid}/status"),
            )
        })
}
