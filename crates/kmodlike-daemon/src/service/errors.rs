//! Loader errors as `io.kmodlike.Loader` errors, each carrying its subject (module, spec, path,
//! signal) as parameters.

use std::path::Path;

use kmodlike::{BusyReason, Error};
use serde_json::json;

use crate::varlink::types;
use crate::varlink::VarlinkError;

pub(crate) fn not_loaded(name: &str, reason: Option<&str>) -> VarlinkError {
    VarlinkError::loader("ModuleNotLoaded", json!({ "module": name, "reason": reason }))
}

pub(crate) fn busy(name: &str, reason: &str, holders: &[String], message: &str) -> VarlinkError {
    VarlinkError::loader(
        "Busy",
        json!({ "module": name, "reason": reason, "holders": holders, "message": message }),
    )
}

/// The file an error is about, when it names one.
fn error_path(e: &Error) -> Option<&Path> {
    match e {
        Error::Unreadable { path, .. }
        | Error::NotRegularFile { path, .. }
        | Error::TooLarge { path, .. }
        | Error::MalformedElf { path, .. }
        | Error::EmptyFile { path, .. }
        | Error::NotElf { path, .. }
        | Error::Truncated { path, .. }
        | Error::WrongArchitecture { path, .. }
        | Error::NotSharedObject { path, .. }
        | Error::LoadFailed { path, .. }
        | Error::MissingExport { path, .. }
        | Error::NoInterface { path, .. }
        | Error::VersionMismatch { path, .. }
        | Error::InitFailed { path, .. }
        | Error::Probe { path, .. }
        | Error::UntrustedPath { path, .. }
        | Error::Signature { path, .. }
        | Error::Revoked { path, .. } => Some(path),
        Error::AlreadyLoaded { existing, .. } => Some(existing),
        _ => None,
    }
}

/// The Varlink error for a loader error; `subject` is the spec or module name asked for.
pub fn map_error(e: &Error, subject: &str) -> VarlinkError {
    if let Some(report) = e.crash_report() {
        return VarlinkError::loader(
            "ModuleCrashed",
            json!({
                "module": report.module,
                "signal": report.signal_name,
                "report": types::CrashReport::from(report),
            }),
        );
    }
    match e {
        Error::NotFound { spec, tried } => VarlinkError::loader(
            "ModuleNotFound",
            json!({
                "spec": spec,
                "tried": tried.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            }),
        ),
        Error::NotLoaded { module, reason } => {
            let module = if module.is_empty() { subject } else { module };
            not_loaded(module, Some(reason.as_str()).filter(|r| !r.is_empty()))
        }
        Error::Quarantined { module, crashes, window_secs } => VarlinkError::loader(
            "Quarantined",
            json!({ "module": module, "crashes": crashes, "window_secs": window_secs }),
        ),
        Error::Busy { module, reason } => {
            let (kind, holders) = match reason {
                BusyReason::Holders(h) => ("holders", h.clone()),
                BusyReason::Veto(_) => ("veto", Vec::new()),
                BusyReason::InFlight(_) => ("in_flight", Vec::new()),
            };
            busy(module, kind, &holders, &e.to_string())
        }
        Error::SymbolNotFound { module, symbol, .. } => VarlinkError::loader(
            "SymbolNotFound",
            json!({ "module": module, "symbol": symbol, "message": e.to_string() }),
        ),
        Error::Exited { .. } | Error::TimedOut(_) | Error::BufferTooSmall { .. } => {
            VarlinkError::loader("Failed", json!({ "message": e.to_string() }))
        }
        _ => VarlinkError::loader(
            "LoadFailed",
            json!({
                "spec": subject,
                "path": error_path(e).map(|p| p.display().to_string()),
                "kind": e.kind().name(),
                "message": e.to_string(),
            }),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn errors_keep_their_subject() {
        let e = map_error(
            &Error::NotFound { spec: "misc/x".into(), tried: vec!["/a/misc/x.so".into()] },
            "misc/x",
        );
        assert_eq!(e.name, "io.kmodlike.Loader.ModuleNotFound");
        assert_eq!(e.parameters["tried"], json!(["/a/misc/x.so"]));

        let e = map_error(
            &Error::Busy { module: "a".into(), reason: BusyReason::Holders(vec!["b".into()]) },
            "a",
        );
        assert_eq!(e.short_name(), "Busy");
        assert_eq!(e.parameters["reason"], "holders");
        assert_eq!(e.parameters["holders"], json!(["b"]));

        let e = map_error(
            &Error::InitFailed { module: "m".into(), path: "/m.so".into(), code: 3 },
            "/m.so",
        );
        assert_eq!(e.short_name(), "LoadFailed");
        assert_eq!(e.parameters["kind"], "InitFailed");
        assert_eq!(e.parameters["path"], "/m.so");
        assert!(e.param_str("message").unwrap().contains("code 3"));
    }
}
