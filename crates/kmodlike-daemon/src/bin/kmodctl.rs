//! `kmodctl`: control a running kmodlike daemon. See `kmodctl --help`.

use std::process::ExitCode;

use clap::Parser;
use kmodlike_daemon::cli::CtlArgs;
use kmodlike_daemon::ctl;

fn main() -> ExitCode {
    ctl::run(CtlArgs::parse())
}
