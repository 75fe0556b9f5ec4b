//! SIGHUP: reload the configuration without stopping (systemd's `ExecReload=` and
//! `Type=notify-reload` send it).
//!
//! The configuration the daemon can change at run time today is the module search path: it is
//! read again from `--module-path` and `$KMODLIKE_MODULE_PATH` as at start. Loaded modules are
//! left as they are. This is the one place a reload does its work, so that a configuration file
//! read here later changes nothing else: the caller sends `RELOADING=1` before and `READY=1`
//! after, and logs the outcome.

use std::path::PathBuf;

use kmodlike::Loader;

/// What the daemon reads again on SIGHUP.
#[derive(Debug, Clone)]
pub struct ReloadSource {
    /// `--module-path` as given at start.
    pub module_path: Vec<PathBuf>,
}

/// Apply the configuration again; returns a summary for the log line.
pub fn reload_configuration(loader: &Loader, source: &ReloadSource) -> Result<String, String> {
    loader.set_module_path(source.module_path.clone());
    let shown: Vec<String> = loader.module_path().iter().map(|d| d.display().to_string()).collect();
    Ok(format!("module path {}", shown.join(":")))
}
