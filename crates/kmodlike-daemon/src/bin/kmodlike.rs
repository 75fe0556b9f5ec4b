//! `kmodlike`: the main program. Hosts modules, survives their crashes, serves the control
//! socket. See `kmodlike --help` and the crate documentation of `kmodlike_daemon`.

use std::process::ExitCode;

use kmodlike_daemon::cli::DaemonArgs;
use kmodlike_daemon::daemon;

fn main() -> ExitCode {
    let args = DaemonArgs::parse_with_sources();
    daemon::init_tracing();
    daemon::run(args)
}
