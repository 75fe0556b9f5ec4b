//! The audit trail: every request that changes state is logged with who asked (uid, pid and
//! command name, from `SO_PEERCRED` and `/proc/PID/comm`) and how it ended, success or error.
//! Read-only requests (List, Info, Status, Crashes, Call, ...) are not logged.

use serde_json::Value;

use crate::journal::message_id;
use crate::server::CallContext;
use crate::varlink::VarlinkError;

/// The methods that change the daemon's state, hence are audited.
pub(crate) const AUDITED: &[&str] = &[
    "Load",
    "Unload",
    "Reload",
    "Clear",
    "ClearTaint",
    "SetModulePath",
    "ReloadConfiguration",
    "SetSignaturePolicy",
];

/// The caller's command name (`/proc/PID/comm`), `?` when it is gone or hidden.
pub(crate) fn comm(pid: i32) -> String {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .map(|s| s.trim_end().to_owned())
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "?".to_owned())
}

/// Who made a call: `uid 1000 pid 4242 (kmodctl)`.
pub(crate) fn caller(ctx: &CallContext) -> String {
    format!("uid {} pid {} ({})", ctx.peer.uid, ctx.peer.pid, comm(ctx.peer.pid))
}

/// Log one audited request: `subject` is what it named (a module, a spec, a path list).
pub(crate) fn log_request(
    method: &str,
    subject: &str,
    ctx: &CallContext,
    outcome: &Result<Value, VarlinkError>,
) {
    let who = caller(ctx);
    let comm = comm(ctx.peer.pid);
    let what = if subject.is_empty() { method.to_owned() } else { format!("{method} {subject}") };
    match outcome {
        Ok(_) => tracing::info!(
            message_id = message_id::REQUEST,
            request = method,
            subject = subject,
            uid = ctx.peer.uid,
            pid = ctx.peer.pid,
            comm = %comm,
            outcome = "ok",
            "request {what} by {who}: done"
        ),
        Err(e) => {
            let full = crate::render::error_message(e, "");
            let first = full.lines().next().unwrap_or_default();
            tracing::warn!(
                message_id = message_id::REQUEST,
                request = method,
                subject = subject,
                uid = ctx.peer.uid,
                pid = ctx.peer.pid,
                comm = %comm,
                outcome = "error",
                error = %e.name,
                "request {what} by {who}: refused: {first}"
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn comm_names_a_live_process_and_survives_a_dead_one() {
        let me = comm(std::process::id() as i32);
        assert!(!me.is_empty() && me != "?", "{me}");
        assert_eq!(comm(-1), "?");
    }
}
