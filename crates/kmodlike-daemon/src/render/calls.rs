//! What `kmodctl` prints about calls that run long: the calls in flight, the `TimedOut` error,
//! and the `call_slow`, `call_timed_out` and `hung` Monitor events.

use std::fmt::Write as _;

use super::{backtrace, duration, frame_line};
use crate::varlink::types::{CallInFlight, CallTimeout, CrashReport, Event};
use crate::varlink::VarlinkError;

/// One call in flight as `spin on thread 4242, running 3.2 s, deadline in 26.8 s`, `now` in
/// epoch seconds.
pub fn call_summary(c: &CallInFlight, now: f64) -> String {
    format!(
        "{} on thread {}, running {}, {}",
        c.function.as_deref().unwrap_or("(unnamed)"),
        c.thread,
        duration((now - c.since).max(0.0)),
        deadline_text(c.deadline, now)
    )
}

fn deadline_text(deadline: Option<f64>, now: f64) -> String {
    match deadline {
        None => "no deadline".to_owned(),
        Some(d) if d > now => format!("deadline in {}", duration(d - now)),
        Some(d) => format!("deadline passed {} ago", duration(now - d)),
    }
}

/// `kmodctl calls`: one line per call in flight, oldest first, columns aligned; `now` in epoch
/// seconds.
pub fn calls_table(calls: &[CallInFlight], now: f64) -> String {
    if calls.is_empty() {
        return "no calls running\n".to_owned();
    }
    let header = ["Module", "Function", "Thread", "Running", "Deadline"].map(str::to_owned);
    let rows: Vec<[String; 5]> = calls
        .iter()
        .map(|c| {
            [
                c.module.clone(),
                c.function.clone().unwrap_or_else(|| "(unnamed)".to_owned()),
                c.thread.to_string(),
                duration((now - c.since).max(0.0)),
                match c.deadline {
                    None => "none".to_owned(),
                    Some(d) if d > now => format!("in {}", duration(d - now)),
                    Some(d) => format!("passed {} ago", duration(now - d)),
                },
            ]
        })
        .collect();
    let mut width = [0usize; 5];
    for row in std::iter::once(&header).chain(&rows) {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    for row in std::iter::once(&header).chain(&rows) {
        let line = format!(
            "{:<w0$}  {:<w1$}  {:>w2$}  {:>w3$}  {}",
            row[0],
            row[1],
            row[2],
            row[3],
            row[4],
            w0 = width[0],
            w1 = width[1],
            w2 = width[2],
            w3 = width[3]
        );
        let _ = writeln!(out, "{}", line.trim_end());
    }
    out
}

/// What ended a timed-out call: `spin ran past its deadline of 1.0 s (after 1.3 s) and was
/// interrupted`, or `... was interrupted on request after 4.2 s`.
pub(super) fn timeout_summary(called: Option<&str>, t: &CallTimeout) -> String {
    let what = called.map_or("a call".to_owned(), |f| format!("a call to {f}"));
    match t.limit {
        Some(limit) => format!(
            "{what} ran past its deadline of {limit:.1} s (after {:.1} s) and was interrupted",
            t.ran
        ),
        None => format!("{what} was interrupted on request after {:.1} s", t.ran),
    }
}

/// A `call_slow`, `call_timed_out` or `hung` event (after its time stamp): what happened, then
/// where the thread was, innermost first, one frame a line.
pub(super) fn event_text(e: &Event, name: &str) -> String {
    let function = e.call.as_ref().and_then(|c| c.function.as_deref()).unwrap_or("a call");
    let thread = e.call.as_ref().map(|c| format!(" on thread {}", c.thread));
    let thread = thread.unwrap_or_default();
    let ran = e.ran_for.map(|r| format!(" {r:.1} s")).unwrap_or_default();
    let (mut line, frames) = match e.kind.as_str() {
        "call_slow" => (
            format!("call_slow {name}: {function}{thread} still running after{ran}"),
            e.sample.clone().unwrap_or_default(),
        ),
        "call_timed_out" => (
            format!(
                "call_timed_out {name}: {function}{thread} interrupted after{ran}; the \
                 module was unloaded"
            ),
            e.report.as_ref().and_then(|r| r.frames.clone()).unwrap_or_default(),
        ),
        _ => (
            format!(
                "hung     {name}: {}",
                e.detail.as_deref().unwrap_or("a call cannot be interrupted")
            ),
            Vec::new(),
        ),
    };
    // Where the thread was, innermost first, on its own lines (as for a crash).
    for (i, f) in frames.iter().enumerate() {
        let _ = write!(line, "\n    {}", frame_line(i, f));
    }
    line
}

/// The message of a `TimedOut` error: the module, the function and how long it ran, then the
/// report of where it was.
pub(super) fn timed_out_message(e: &VarlinkError) -> String {
    let p = |k: &str| e.param_str(k).unwrap_or("?").to_owned();
    let report: Option<CrashReport> =
        e.parameters.get("report").and_then(|r| serde_json::from_value(r.clone()).ok());
    let ran_for = e.parameters.get("ran_for").and_then(|v| v.as_f64()).unwrap_or(0.0);
    // module_init (a Load) runs under the daemon's deadline; a Call can ask for its own.
    let in_init = report.as_ref().is_some_and(|r| r.phase == "init");
    let function =
        e.param_str("function").unwrap_or(if in_init { "module_init" } else { "the call" });
    let longer = if in_init {
        "the daemon's --call-timeout, or timeout=SECS for the module in modules.d"
    } else {
        "kmodctl call --deadline SECONDS"
    };
    // Seconds with what precision the figure needs: 0.0003 s is no "0.0 s".
    let ran_for = if ran_for >= 1.0 {
        format!("{ran_for:.1} s")
    } else if ran_for >= 0.001 {
        format!("{:.0} ms", ran_for * 1000.0)
    } else {
        format!("{:.0} us", ran_for * 1e6)
    };
    let mut msg = format!(
        "module {}: {function} ran for {ran_for}, past its deadline, and was \
         interrupted; the module was unloaded and the daemon keeps running (a longer \
         deadline: {longer})",
        p("module")
    );
    if let Some(r) = report {
        let where_ = format!("{}\n{}", r.text.trim_end(), backtrace(&r));
        msg.push('\n');
        msg.push_str(where_.trim_end());
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::super::tests::report_with_frames;
    use super::super::{error_message, event_line};
    use super::*;
    use serde_json::json;

    fn in_flight(function: Option<&str>, since: f64, deadline: Option<f64>) -> CallInFlight {
        CallInFlight {
            module: "hang".into(),
            function: function.map(str::to_owned),
            thread: 4242,
            since,
            deadline,
        }
    }

    #[test]
    fn calls_table_shows_running_time_and_deadline() {
        assert_eq!(calls_table(&[], 100.0), "no calls running\n");
        let t = calls_table(
            &[
                in_flight(Some("spin"), 90.0, Some(120.0)),
                in_flight(None, 99.5, None),
                in_flight(Some("block"), 40.0, Some(70.0)),
            ],
            100.0,
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Module  Function   Thread  Running  Deadline");
        assert_eq!(lines[1], "hang    spin         4242   10.0 s  in 20.0 s");
        assert_eq!(lines[2], "hang    (unnamed)    4242    0.5 s  none");
        assert_eq!(lines[3], "hang    block        4242   1m 00s  passed 30.0 s ago");
        assert_eq!(
            call_summary(&in_flight(Some("spin"), 97.0, Some(127.0)), 100.0),
            "spin on thread 4242, running 3.0 s, deadline in 27.0 s"
        );
    }

    #[test]
    fn a_timed_out_call_names_module_function_and_time_then_where_it_was() {
        let mut r = report_with_frames();
        r.text = "module crash_mod timed out\n  pc: 0x7f0000001123".into();
        let e = VarlinkError::loader(
            "TimedOut",
            json!({"module": "crash_mod", "function": "crash_now", "ran_for": 2.004, "report": r}),
        );
        let msg = error_message(&e, "/s");
        assert!(
            msg.starts_with(
                "module crash_mod: crash_now ran for 2.0 s, past its deadline, and was interrupted"
            ),
            "{msg}"
        );
        assert!(msg.contains("kmodctl call --deadline SECONDS"), "{msg}");
        assert!(msg.contains("\n  pc: 0x7f0000001123\n"), "{msg}");
        assert!(msg.ends_with("[guessed]"), "the backtrace closes it: {msg}");
    }

    #[test]
    fn slow_and_timed_out_calls_are_monitor_lines() {
        let mut e = Event::started();
        e.time = 5.0;
        e.name = Some("hang".into());
        e.call = Some(in_flight(Some("spin"), 1.0, Some(3.0)));
        e.ran_for = Some(1.0);
        e.kind = "call_slow".into();
        assert_eq!(
            event_line(&e, "5.000").as_deref(),
            Some("5.000 call_slow hang: spin on thread 4242 still running after 1.0 s")
        );
        e.sample = report_with_frames().frames;
        let line = event_line(&e, "5.000").unwrap();
        assert!(line.contains("after 1.0 s\n    #0 0x7f0000001123 crash_now+0x12"), "{line}");
        e.sample = None;
        e.kind = "hung".into();
        e.detail = Some("call to spin ran past its deadline and cannot be interrupted".into());
        assert_eq!(
            event_line(&e, "5.000").as_deref(),
            Some(
                "5.000 hung     hang: call to spin ran past its deadline and cannot be interrupted"
            )
        );
        e.kind = "call_timed_out".into();
        e.ran_for = Some(2.0);
        e.report = Some(report_with_frames());
        let line = event_line(&e, "5.000").unwrap();
        assert!(
            line.starts_with("5.000 call_timed_out hang: spin on thread 4242 interrupted after 2.0 s; the module was unloaded\n"),
            "{line}"
        );
        assert!(line.ends_with("[guessed]"), "{line}");
    }
}
