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

/// `Busy` for a module marked hung: which call, and what can be done.
pub(crate) fn hung(m: &types::Module) -> VarlinkError {
    let calls: Vec<String> = m
        .calls_in_flight
        .iter()
        .flatten()
        .map(|c| format!("{} on thread {}", c.function.as_deref().unwrap_or("a call"), c.thread))
        .collect();
    let what = if calls.is_empty() { "a call".to_owned() } else { calls.join(", ") };
    busy(
        &m.name,
        "hung",
        &[],
        &format!(
            "module {} is hung: {what} ran past its deadline and cannot be interrupted safely \
             (the thread blocks the interrupt signal, or it is stuck inside libc, ld.so or the \
             unwinder: the daemon's log says which); it takes no new calls, the daemon has let \
             go of it, and it goes away if the call ever returns; restart the daemon to end \
             the thread",
            m.name
        ),
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
    if let Error::TimedOut(report) = e {
        return VarlinkError::loader(
            "TimedOut",
            json!({
                "module": report.module,
                "function": report.called,
                "ran_for": report.timeout.map(|t| t.ran.as_secs_f64()).unwrap_or_default(),
                "report": types::CrashReport::from(&**report),
            }),
        );
    }
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

    fn timeout_report() -> kmodlike::CrashReport {
        kmodlike::CrashReport {
            module: "hang".into(),
            path: "/m/hang.so".into(),
            signal: 34,
            signal_name: "timeout".into(),
            code: -1,
            code_name: "SI_QUEUE".into(),
            code_meaning: String::new(),
            fault_addr: 0,
            pc: 0x7f00_0000_1123,
            pc_in_module: true,
            module_offset: Some(0x1123),
            pc_object: Some("hang.so".into()),
            symbol: Some("spin+0x1e".into()),
            phase: kmodlike::Phase::Call,
            thread_id: 7,
            time: std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(100),
            taint: None,
            exit_status: None,
            frames: Vec::new(),
            called: Some("spin".into()),
            probe_pid: None,
            abort_message: None,
            timeout: Some(kmodlike::CallTimeout {
                limit: Some(std::time::Duration::from_secs(2)),
                ran: std::time::Duration::from_millis(2500),
            }),
        }
    }

    #[test]
    fn a_timed_out_call_is_its_own_error_and_event() {
        let r = timeout_report();
        let call = types::CallInFlight::timed_out(&r);
        assert_eq!((call.function.as_deref(), call.thread), (Some("spin"), 7));
        assert_eq!(call.since, 97.5, "the report's time minus how long it ran");
        assert_eq!(call.deadline, Some(99.5), "its start plus its limit");
        let ev =
            crate::service::monitor::monitor_event(&kmodlike::Event::CallTimedOut(Box::new(r)));
        assert_eq!(ev.kind, "call_timed_out");
        assert_eq!(ev.ran_for, Some(2.5));
        assert_eq!(ev.call, Some(call));
        assert!(ev.report.is_some());
    }

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

        let e = map_error(&Error::TimedOut(Box::new(timeout_report())), "hang");
        assert_eq!(e.name, "io.kmodlike.Loader.TimedOut", "not ModuleCrashed");
        assert_eq!(e.parameters["module"], "hang");
        assert_eq!(e.parameters["function"], "spin");
        assert_eq!(e.parameters["ran_for"], 2.5);
        assert_eq!(e.parameters["report"]["signal_name"], "timeout");
        assert_eq!(e.parameters["report"]["timeout"], json!({"limit": 2.0, "ran": 2.5}));

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
