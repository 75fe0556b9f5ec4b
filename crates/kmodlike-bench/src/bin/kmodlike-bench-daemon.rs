//! The daemon, exactly as `kmodlike` (the same entry point), built by the same cargo invocation
//! as the benchmarks so the memory figures always measure a fresh build (`CARGO_BIN_EXE_*`).

use std::process::ExitCode;

use clap::Parser;
use kmodlike_daemon::cli::DaemonArgs;
use kmodlike_daemon::daemon;

fn main() -> ExitCode {
    let args = DaemonArgs::parse();
    daemon::init_tracing();
    daemon::run(args)
}
