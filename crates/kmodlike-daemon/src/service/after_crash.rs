//! A crashed module's name still leads somewhere: `call` and `unload` say it crashed (signal,
//! time, file) instead of a bare "not loaded", `info NAME` shows its file, and `reload NAME`
//! loads that file again. Everything comes from the crash log, newest first.

use std::path::PathBuf;

use kmodlike::{CrashReport, Loader};

use super::errors::not_loaded;
use crate::varlink::VarlinkError;

/// The newest crash of module `name`, if the log still has one.
pub(crate) fn last_crash(loader: &Loader, name: &str) -> Option<CrashReport> {
    if name.contains('/') {
        return None;
    }
    loader.crashes().into_iter().find(|c| c.module == name)
}

/// The file a crashed module was loaded from (what `reload NAME` loads again).
pub(crate) fn crashed_path(loader: &Loader, name: &str) -> Option<PathBuf> {
    last_crash(loader, name).map(|c| c.path)
}

/// `ModuleNotLoaded` for `name`, with the crash as its reason when it crashed.
pub(crate) fn not_loaded_explained(loader: &Loader, name: &str) -> VarlinkError {
    match last_crash(loader, name) {
        Some(c) => {
            let when = humantime::format_rfc3339_seconds(c.time);
            let what = match (&c.timeout, c.called.as_deref()) {
                (Some(_), Some(f)) => {
                    format!("its call to {f} ran past its deadline at {when}, and it was unloaded")
                }
                (Some(_), None) => {
                    format!("a call ran past its deadline at {when}, and it was unloaded")
                }
                (None, _) => format!(
                    "it crashed with {} ({}) in {} at {when} and was unloaded",
                    c.signal_name,
                    c.code_name,
                    c.phase.name()
                ),
            };
            let reason =
                format!("{what}; `kmodctl reload {name}` loads {} again", c.path.display());
            not_loaded(name, Some(&reason))
        }
        None => not_loaded(name, None),
    }
}

/// Replace a reason-less `ModuleNotLoaded` about `name` by the explained one.
pub(crate) fn explain_not_loaded(loader: &Loader, name: &str, e: VarlinkError) -> VarlinkError {
    let bare = e.short_name() == "ModuleNotLoaded"
        && e.parameters.get("reason").is_none_or(serde_json::Value::is_null);
    if bare {
        not_loaded_explained(loader, name)
    } else {
        e
    }
}
