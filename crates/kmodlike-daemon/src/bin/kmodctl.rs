//! `kmodctl`: control a running kmodlike daemon. See `kmodctl --help`.

use std::process::ExitCode;

use clap::Parser;
use kmodlike_daemon::cli::CtlArgs;
use kmodlike_daemon::ctl;

fn main() -> ExitCode {
    match CtlArgs::try_parse() {
        Ok(args) => ctl::run(args),
        Err(e) => ctl::usage_error(e),
    }
}
