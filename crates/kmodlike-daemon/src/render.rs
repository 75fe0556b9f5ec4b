//! `kmodctl`'s text output: the lsmod-style table, key-value blocks, events, and one-line
//! error messages that name the module, path or signal. (`--json` output bypasses all this.)

use std::fmt::Write as _;

use crate::varlink::types::{
    epoch_secs, CrashFrame, CrashReport, Event, Module, ModuleFile, StatusReply,
};

mod calls;
use crate::varlink::VarlinkError;
pub use calls::{call_summary, calls_table};

/// Whether to use colour on a stream: only on a terminal, and never with `NO_COLOR` set.
pub fn use_colour(is_terminal: bool) -> bool {
    is_terminal && std::env::var_os("NO_COLOR").filter(|v| !v.is_empty()).is_none()
}

/// ANSI styling that is a no-op when colour is off.
#[derive(Debug, Clone, Copy)]
pub struct Style {
    on: bool,
}

impl Style {
    /// Styling on or off.
    pub fn new(on: bool) -> Style {
        Style { on }
    }

    fn paint(&self, code: &str, text: &str) -> String {
        if self.on {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    /// Bold.
    pub fn bold(&self, text: &str) -> String {
        self.paint("1", text)
    }

    /// A module state, coloured by health.
    pub fn state(&self, state: &str) -> String {
        match state {
            "live" => self.paint("32", state),
            "crashed" | "hung" => self.paint("1;31", state),
            _ => self.paint("33", state),
        }
    }

    /// Red (errors).
    pub fn red(&self, text: &str) -> String {
        self.paint("1;31", text)
    }
}

/// The lsmod-style table: `Module  Size  Used by  State`, columns aligned. "Used by" is the
/// reference count followed by the names of the modules that depend on it, as lsmod prints.
pub fn module_table(modules: &[Module], style: Style) -> String {
    let header = ["Module", "Size", "Used by", "State"];
    let rows: Vec<[String; 4]> = modules
        .iter()
        .map(|m| {
            let used_by = if m.holders.is_empty() {
                m.refcount.to_string()
            } else {
                format!("{} {}", m.refcount, m.holders.join(","))
            };
            [m.name.clone(), m.size.to_string(), used_by, m.state.clone()]
        })
        .collect();
    let marks: Vec<String> = modules.iter().map(trust_marks).collect();
    let mut width = header.map(str::len);
    for row in &rows {
        for (w, cell) in width.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let mut out = String::new();
    let line = |cells: [&str; 4], state: String| {
        format!(
            "{:<w0$}  {:>w1$}  {:<w2$}  {}",
            cells[0],
            cells[1],
            cells[2],
            state,
            w0 = width[0],
            w1 = width[1],
            w2 = width[2]
        )
    };
    let head = line([header[0], header[1], header[2], header[3]], header[3].to_owned());
    let _ = writeln!(out, "{}", style.bold(head.trim_end()));
    for (row, marks) in rows.iter().zip(&marks) {
        let state = format!("{}{marks}", style.state(&row[3]));
        let text = line([&row[0], &row[1], &row[2], &row[3]], state);
        let _ = writeln!(out, "{}", text.trim_end());
    }
    // Isolated modules: their process, after the table's own columns.
    let isolated: Vec<&Module> = modules.iter().filter(|m| m.child_pid.is_some()).collect();
    for m in isolated {
        let _ = writeln!(out, "  {} is isolated: {}", m.name, child_line(m));
    }
    out
}

/// What `list` adds after a module's state when its trust is short of full: ` (unsigned)`
/// when it was loaded under the warn policy without a valid signature, ` (untrusted path)`
/// when its path broke the path rules and it was loaded anyway.
fn trust_marks(m: &Module) -> String {
    let mut marks = Vec::new();
    if m.signature.as_deref() == Some("unsigned") {
        marks.push("unsigned");
    }
    if m.untrusted_path.is_some() {
        marks.push("untrusted path");
    }
    if marks.is_empty() {
        String::new()
    } else {
        format!(" ({})", marks.join(", "))
    }
}

fn field(out: &mut String, key: &str, value: impl std::fmt::Display) {
    let _ = writeln!(out, "{:<19} {value}", format!("{key}:"));
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "-".to_owned()
    } else {
        items.join(", ")
    }
}

/// An isolated module's process: `pid 1234, 3.1 MiB resident`.
fn child_line(m: &Module) -> String {
    let pid = m.child_pid.map_or("-".to_owned(), |p| p.to_string());
    match m.child_rss {
        Some(rss) => format!("pid {pid}, {:.1} MiB resident", rss as f64 / 1048576.0),
        None => format!("pid {pid}"),
    }
}

/// `kmodctl info` of a loaded module.
pub fn module_block(m: &Module, style: Style) -> String {
    let mut out = String::new();
    field(&mut out, "name", &m.name);
    field(&mut out, "filename", &m.path);
    field(&mut out, "state", style.state(&m.state));
    field(&mut out, "id", m.id);
    field(&mut out, "refcount", m.refcount);
    field(&mut out, "size", m.size);
    let version = match (&m.interface_version, m.legacy) {
        (Some(v), _) => v.clone(),
        (None, true) => "legacy (mod_hello only)".to_owned(),
        (None, false) => "none".to_owned(),
    };
    field(&mut out, "interface", version);
    field(&mut out, "mode", &m.mode);
    field(&mut out, "depends on", list(&m.dependencies));
    field(&mut out, "used by", list(&m.holders));
    field(&mut out, "calls", m.calls);
    let signature = match m.signature.as_deref() {
        Some("signed") => format!(
            "signed by key {} (trusted comment: {})",
            m.signer_key_id.as_deref().unwrap_or("?"),
            m.trusted_comment.as_deref().unwrap_or("")
        ),
        Some("unsigned") => {
            format!("UNSIGNED: {}", m.signature_reason.as_deref().unwrap_or("no valid signature"))
        }
        Some(_) => "not checked (signature policy off)".to_owned(),
        None => "unknown (the daemon does not report it)".to_owned(),
    };
    field(&mut out, "signature", signature);
    if let Some(why) = &m.untrusted_path {
        field(&mut out, "path trust", format!("UNTRUSTED, loaded anyway: {why}"));
    }
    if let Some(tier) = &m.tier {
        field(&mut out, "tier", tier);
    }
    if m.child_pid.is_some() {
        field(&mut out, "process", child_line(m));
    }
    let now = epoch_secs(std::time::SystemTime::now());
    for c in m.calls_in_flight.iter().flatten() {
        field(&mut out, "call in flight", call_summary(c, now));
    }
    for e in &m.modinfo {
        field(&mut out, &e.tag, &e.value);
    }
    out
}

/// `kmodctl info NAME` for a module that crashed: its name, state and last crash (the file's
/// metadata follows).
pub fn crashed_module_block(c: &CrashReport, when: &str, style: Style) -> String {
    let mut out = String::new();
    field(&mut out, "name", &c.module);
    field(&mut out, "state", format!("{} (not loaded)", style.state("crashed")));
    let what = match &c.timeout {
        // Not a fault: the call was interrupted at its deadline (or on request).
        Some(t) => calls::timeout_summary(c.called.as_deref(), t),
        None => format!("{} ({}) in {}", c.signal_name, c.code_name, c.phase),
    };
    field(&mut out, "last crash", format!("{what}, {when}"));
    field(&mut out, "reload", format!("kmodctl reload {}", c.module));
    out
}

/// `kmodctl info FILE`: modinfo style.
pub fn file_block(f: &ModuleFile) -> String {
    let mut out = String::new();
    field(&mut out, "filename", &f.path);
    field(&mut out, "size", f.size);
    for e in &f.modinfo {
        field(&mut out, &e.tag, &e.value);
    }
    if !f.modinfo.iter().any(|e| e.tag == "depends") {
        field(&mut out, "depends", "");
    }
    out
}

/// `kmodctl status`.
/// `when` formats a time (epoch seconds) for the reader: see [`crate::times`].
pub fn status_block(s: &StatusReply, socket: &str, when: &dyn Fn(f64) -> String) -> String {
    let mut out = String::new();
    field(&mut out, "daemon", format!("kmodlike {} (pid {})", s.version, s.pid));
    field(&mut out, "socket", if s.socket.is_empty() { socket } else { &s.socket });
    field(&mut out, "uptime", duration(s.uptime_secs));
    field(&mut out, "modules", s.modules);
    field(&mut out, "crashes", s.crashes);
    field(&mut out, "quarantined", list(&s.quarantined));
    if let Some(hung) = &s.hung {
        field(&mut out, "hung", list(hung));
    }
    if let Some(t) = s.call_timeout {
        let text = if t > 0.0 { format!("{t} s (kmodlike --call-timeout)") } else { "none".into() };
        field(&mut out, "call deadline", text);
    }
    let mut connections = format!("{} of at most {}", s.connections, s.max_connections);
    if let Some(n) = s.abandoned_connections.filter(|&n| n > 0) {
        let _ = write!(
            connections,
            " (and {n} abandoned: the client hung up while its call still runs)"
        );
    }
    field(&mut out, "connections", connections);
    field(&mut out, "probe", if s.probe { "on" } else { "off" });
    if let Some(policy) = &s.signature_policy {
        let keys = s.trusted_keys.as_deref().unwrap_or("?");
        field(&mut out, "signatures", format!("policy {policy}, trusted keys in {keys}"));
    }
    if let Some(allow) = s.allow_untrusted_paths {
        let paths = if allow { "untrusted ones load and taint" } else { "untrusted ones refused" };
        field(&mut out, "module paths", paths);
    }
    let policy = match s.crash_loop {
        Some(c) => {
            format!("{} crashes within {} s quarantine a module", c.max_crashes, c.window_secs)
        }
        None => "off".to_owned(),
    };
    field(&mut out, "crash-loop policy", policy);
    let taint = match &s.taint {
        Some(t) => format!("TAINTED by {}: {}", t.module, t.reason),
        None => "not tainted".to_owned(),
    };
    field(&mut out, "taint", taint);
    if let Some(t) = &s.previous_taint {
        field(
            &mut out,
            "earlier run",
            format!(
                "TAINTED by {}: {} (not acknowledged: kmodctl clear --taint)",
                t.module, t.reason
            ),
        );
    }
    for a in s.taint_acks.iter().flatten() {
        field(
            &mut out,
            "taint acknowledged",
            format!("{} by {} (was: {}: {})", when(a.time), a.by, a.taint.module, a.taint.reason),
        );
    }
    field(&mut out, "module path", s.module_path.join(":"));
    field(&mut out, "state", s.state_dir.as_deref().unwrap_or("not kept across restarts"));
    field(&mut out, "configuration", s.config_file.as_deref().unwrap_or("none"));
    for m in s.configured_modules.iter().flatten() {
        let mut what = format!("{} ({}", m.spec, if m.required { "required" } else { "optional" });
        if m.isolated {
            what.push_str(", isolated");
        }
        if m.seccomp == Some(true) {
            what.push_str(", seccomp");
        }
        if let Some(t) = m.call_timeout_secs {
            let _ = write!(what, ", timeout {t} s");
        }
        match m.crash_loop {
            Some(c) if c.max_crashes == 0 => what.push_str(", crash loop off"),
            Some(c) => {
                let _ = write!(what, ", crash loop {}/{} s", c.max_crashes, c.window_secs);
            }
            None => {}
        }
        let _ = write!(what, ") at {}", m.origin);
        field(&mut out, "listed", what);
    }
    out
}

/// Epoch seconds as `@1700000000.123`, what `date -d` takes.
fn duration(secs: f64) -> String {
    let s = secs as u64;
    match s {
        0..=59 => format!("{secs:.1} s"),
        60..=3599 => format!("{}m {:02}s", s / 60, s % 60),
        _ => format!("{}h {:02}m {:02}s", s / 3600, (s / 60) % 60, s % 60),
    }
}

/// One crash report, as the daemon logged it, with `when` (the crash's time, formatted by the
/// caller) after its first line, followed by its backtrace. A crash of an earlier run of the
/// daemon starts with `[previous run]`.
pub fn crash_block(c: &CrashReport, when: &str) -> String {
    let (headline, rest) = c.text.split_once('\n').unwrap_or((&c.text, ""));
    let previous = if c.previous_run == Some(true) { "[previous run] " } else { "" };
    let mut text = format!("{previous}{headline}\n  time:    {when}\n{rest}");
    if !text.ends_with('\n') {
        text.push('\n');
    }
    text.push_str(&backtrace(c));
    text
}

/// What a report adds to its text: the probe child's pid, the function the call ran, and the
/// backtrace innermost first, one frame a line like `gdb bt`
/// (`#0 0x7f12... crash_now+0x12 (in mod.so +0x1123)`), guessed frames marked. Empty when the
/// report has none of these.
pub fn backtrace(c: &CrashReport) -> String {
    let mut out = String::new();
    if let Some(pid) = c.probe_pid {
        let _ = writeln!(out, "  probe:   pid {pid}");
    }
    if let Some(called) = &c.called {
        let _ = writeln!(out, "  called:  {called}");
    }
    let Some(frames) = c.frames.as_deref().filter(|f| !f.is_empty()) else {
        return out;
    };
    let _ = writeln!(out, "  backtrace (innermost first):");
    for (i, f) in frames.iter().enumerate() {
        let _ = writeln!(out, "    {}", frame_line(i, f));
    }
    out
}

/// One frame: `#N PC SYMBOL+OFF (in OBJECT +OFFSET)`, `??` for an unknown symbol, ` [guessed]`
/// for a frame found without unwind information.
pub fn frame_line(index: usize, f: &CrashFrame) -> String {
    let mut line = format!("#{index} {}", f.pc);
    match (&f.symbol, &f.symbol_offset) {
        (Some(sym), Some(off)) => {
            let _ = write!(line, " {sym}+{off}");
        }
        (Some(sym), None) => {
            let _ = write!(line, " {sym}");
        }
        (None, _) => line.push_str(" ??"),
    }
    match (&f.object, &f.offset) {
        (Some(obj), Some(off)) => {
            let _ = write!(line, " (in {obj} +{off})");
        }
        (Some(obj), None) => {
            let _ = write!(line, " (in {obj})");
        }
        (None, _) => {}
    }
    if f.guessed {
        line.push_str(" [guessed]");
    }
    line
}

/// One Monitor event as a line starting with `when` (its time, formatted by the caller); `None`
/// for the stream's `started` marker.
pub fn event_line(e: &Event, when: &str) -> Option<String> {
    let name = e.name.as_deref().unwrap_or("?");
    let what = match e.kind.as_str() {
        "started" => return None,
        "loaded" => match &e.module {
            Some(m) => format!("loaded   {name} from {}", m.path),
            None => format!("loaded   {name}"),
        },
        "unloaded" => format!("unloaded {name}"),
        "crashed" => match &e.report {
            Some(r) => {
                let mut line =
                    format!("crashed  {name}: {} ({}) in {}", r.signal_name, r.code_name, r.phase);
                // The backtrace follows on its own lines (none when there is nothing to add).
                let more = backtrace(r);
                if !more.is_empty() {
                    line.push('\n');
                    line.push_str(more.trim_end());
                }
                line
            }
            None => format!("crashed  {name}"),
        },
        "call_slow" | "call_timed_out" | "hung" => calls::event_text(e, name),
        other => match &e.detail {
            Some(d) => format!("{other} {name}: {d}"),
            None => format!("{other} {name}"),
        },
    };
    Some(format!("{when} {what}"))
}

/// The message for an error reply, naming the module, path or signal. The caller prefixes
/// `kmodctl: `.
pub fn error_message(e: &VarlinkError, socket: &str) -> String {
    let p = |k: &str| e.param_str(k).unwrap_or("?").to_owned();
    match e.short_name() {
        "ModuleCrashed" => {
            let report: Option<CrashReport> =
                e.parameters.get("report").and_then(|r| serde_json::from_value(r.clone()).ok());
            match report {
                Some(r) => format!(
                    "module {} crashed: {} ({}: {}) at address {} in {}; {} and the daemon keeps \
                     running\n{}",
                    r.module,
                    r.signal_name,
                    r.code_name,
                    r.code_meaning,
                    r.fault_addr,
                    r.phase,
                    if r.phase == "probe" {
                        "it was refused (the probe loaded it in a child process first)"
                    } else {
                        "it was unloaded"
                    },
                    // The report's first line is the summary just written.
                    format!(
                        "{}\n{}",
                        r.text.trim_end().split_once('\n').map_or("", |(_, rest)| rest),
                        backtrace(&r)
                    )
                    .trim_end()
                ),
                None => format!("module {} crashed: {}", p("module"), p("signal")),
            }
        }
        "TimedOut" => calls::timed_out_message(e),
        "ModuleNotLoaded" => match e.param_str("reason") {
            Some(reason) => format!("module {} is not loaded: {reason}", p("module")),
            None => format!("module {} is not loaded (see `kmodctl list`)", p("module")),
        },
        "ModuleNotFound" => {
            let tried: Vec<String> = e
                .parameters
                .get("tried")
                .and_then(|t| serde_json::from_value(t.clone()).ok())
                .unwrap_or_default();
            if tried.is_empty() {
                format!("module {} not found", p("spec"))
            } else {
                format!("module {} not found; tried: {}", p("spec"), tried.join(", "))
            }
        }
        "LoadFailed" => format!("cannot load {}: {}", p("spec"), p("message")),
        "Quarantined" => format!(
            "module {} is quarantined after {} crashes within {} s; run `kmodctl clear {}` to \
             allow it again",
            p("module"),
            e.parameters.get("crashes").map(|v| v.to_string()).unwrap_or_default(),
            e.parameters.get("window_secs").map(|v| v.to_string()).unwrap_or_default(),
            p("module")
        ),
        "Busy" | "SymbolNotFound" | "NotPermitted" | "SignaturePolicyLocked" => p("message"),
        "NotQuarantined" => format!("module {} is not quarantined", p("module")),
        "NotTainted" => "the daemon is not tainted: there is nothing to acknowledge".to_owned(),
        "PermissionDenied" => format!(
            "the daemon at {socket} refused this connection: uid {} is neither root nor the \
             daemon's",
            e.parameters.get("uid").map(|v| v.to_string()).unwrap_or_default()
        ),
        "InvalidParameter" => match e.param_str("message") {
            Some(m) => format!("invalid parameter {}: {m}", p("parameter")),
            None => format!("invalid parameter {}", p("parameter")),
        },
        "MethodNotFound" => format!(
            "the daemon at {socket} does not know {} (is it an older version?)",
            p("method")
        ),
        "RequestTooLarge" => "the request is too large for the daemon".to_owned(),
        "TooManyConnections" => format!(
            "the daemon at {socket} serves its maximum of {} connections; retry later",
            e.parameters.get("limit").map(|v| v.to_string()).unwrap_or_default()
        ),
        "Failed" => p("message"),
        _ => e.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn module(name: &str, size: u64, refcount: u64, holders: &[&str], state: &str) -> Module {
        Module {
            id: 1,
            name: name.into(),
            path: format!("/m/{name}.so"),
            state: state.into(),
            refcount,
            size,
            interface_version: Some("1.0".into()),
            legacy: false,
            mode: "module".into(),
            dependencies: vec![],
            holders: holders.iter().map(|s| s.to_string()).collect(),
            modinfo: vec![],
            loaded_at: 0.0,
            calls: 0,
            crashes: 0,
            signature: Some("not-checked".into()),
            signer_key_id: None,
            trusted_comment: None,
            signature_reason: None,
            untrusted_path: None,
            tier: None,
            child_pid: None,
            child_rss: None,
            calls_in_flight: None,
        }
    }

    #[test]
    fn list_marks_unsigned_and_untrusted_modules_and_info_names_the_signer() {
        let mut unsigned = module("u", 1, 1, &[], "live");
        unsigned.signature = Some("unsigned".into());
        unsigned.signature_reason = Some("it has no signature".into());
        unsigned.untrusted_path = Some("/m (owner uid 7, mode 0777) is writable".into());
        let mut signed = module("s", 1, 1, &[], "live");
        signed.signature = Some("signed".into());
        signed.signer_key_id = Some("0123456789ABCDEF".into());
        signed.trusted_comment = Some("timestamp:1 file:s.so".into());
        let t = module_table(&[unsigned.clone(), signed.clone()], Style::new(false));
        let lines: Vec<&str> = t.lines().collect();
        assert!(lines[1].ends_with("live (unsigned, untrusted path)"), "{t}");
        assert!(lines[2].ends_with("live"), "{t}");
        let info = module_block(&signed, Style::new(false));
        assert!(
            info.contains(
                "signed by key 0123456789ABCDEF (trusted comment: timestamp:1 file:s.so)"
            ),
            "{info}"
        );
        let info = module_block(&unsigned, Style::new(false));
        assert!(info.contains("UNSIGNED: it has no signature"), "{info}");
        assert!(info.contains("UNTRUSTED, loaded anyway"), "{info}");
    }

    #[test]
    fn table_is_aligned_like_lsmod() {
        let t = module_table(
            &[
                module("hello", 16384, 1, &[], "live"),
                module("a_longer_name", 8, 2, &["b", "c"], "live"),
            ],
            Style::new(false),
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "Module          Size  Used by  State");
        assert_eq!(lines[1], "hello          16384  1        live");
        assert_eq!(lines[2], "a_longer_name      8  2 b,c    live");
    }

    #[test]
    fn no_colour_codes_when_off() {
        let t = module_table(&[module("x", 1, 1, &[], "crashed")], Style::new(false));
        assert!(!t.contains('\x1b'));
        let t = module_table(&[module("x", 1, 1, &[], "crashed")], Style::new(true));
        assert!(t.contains("\x1b[1;31mcrashed"));
    }

    #[test]
    fn events_are_one_line_each_and_started_is_silent() {
        let mut e = Event::started();
        assert_eq!(event_line(&e, "T"), None);
        e.kind = "unloaded".into();
        e.name = Some("hello".into());
        e.time = 12.5;
        assert_eq!(event_line(&e, "T").as_deref(), Some("T unloaded hello"));
        e.kind = "loaded".into();
        e.module = Some(module("hello", 1, 1, &[], "live"));
        assert_eq!(event_line(&e, "T").as_deref(), Some("T loaded   hello from /m/hello.so"));
    }

    /// A report the unwinder would fill: two frames, the second one guessed, the called
    /// function named.
    pub(super) fn report_with_frames() -> CrashReport {
        let core = kmodlike::CrashReport {
            module: "crash_mod".into(),
            path: "/m/crash_mod.so".into(),
            signal: 11,
            signal_name: "SIGSEGV".into(),
            code: 1,
            code_name: "SEGV_MAPERR".into(),
            code_meaning: "address not mapped to object".into(),
            fault_addr: 0,
            pc: 0x7f00_0000_1123,
            pc_in_module: true,
            module_offset: Some(0x1123),
            pc_object: Some("crash_mod.so".into()),
            symbol: Some("crash_now+0x12".into()),
            phase: kmodlike::Phase::Call,
            thread_id: 7,
            time: std::time::SystemTime::UNIX_EPOCH,
            taint: None,
            exit_status: None,
            frames: vec![
                kmodlike::Frame {
                    pc: 0x7f00_0000_1123,
                    object: Some("crash_mod.so".into()),
                    object_path: Some("/m/crash_mod.so".into()),
                    object_offset: Some(0x1123),
                    build_id: Some("abcd".into()),
                    symbol: Some("crash_now".into()),
                    symbol_offset: Some(0x12),
                    guessed: false,
                    in_module: true,
                },
                kmodlike::Frame {
                    pc: 0x5600_0000_2000,
                    object: Some("kmodlike".into()),
                    object_offset: Some(0x2000),
                    guessed: true,
                    ..Default::default()
                },
            ],
            called: Some("crash_now".into()),
            probe_pid: None,
            abort_message: None,
            timeout: None,
        };
        CrashReport::from(&core)
    }

    #[test]
    fn backtrace_follows_the_report_innermost_first_like_gdb() {
        let r = report_with_frames();
        let block = crash_block(&r, "T");
        let lines: Vec<&str> = block.lines().collect();
        let at = |needle: &str| {
            lines.iter().position(|l| l.contains(needle)).unwrap_or_else(|| panic!("{block}"))
        };
        assert!(at("crashed: SIGSEGV") < at("called:  crash_now"), "{block}");
        assert_eq!(at("time:    T"), 1, "the time follows the headline: {block}");
        assert!(at("called:") < at("backtrace (innermost first):"), "{block}");
        assert_eq!(
            lines[at("backtrace") + 1],
            "    #0 0x7f0000001123 crash_now+0x12 (in crash_mod.so +0x1123)"
        );
        assert_eq!(
            lines[at("backtrace") + 2],
            "    #1 0x560000002000 ?? (in kmodlike +0x2000) [guessed]"
        );
        assert_eq!(lines.len(), at("backtrace") + 3, "{block}");

        // The error message of a crashed call and the Monitor event carry it too.
        let e = VarlinkError::loader(
            "ModuleCrashed",
            json!({"module": "crash_mod", "signal": "SIGSEGV", "report": r}),
        );
        let msg = error_message(&e, "/s");
        assert!(msg.contains("called:  crash_now"), "{msg}");
        assert!(msg.ends_with("#1 0x560000002000 ?? (in kmodlike +0x2000) [guessed]"), "{msg}");
        let mut ev = Event::started();
        ev.kind = "crashed".into();
        ev.name = Some("crash_mod".into());
        ev.report = Some(r);
        let line = event_line(&ev, "T").unwrap();
        assert!(line.contains("crashed  crash_mod: SIGSEGV (SEGV_MAPERR) in call\n"), "{line}");
        assert!(
            line.ends_with("    #1 0x560000002000 ?? (in kmodlike +0x2000) [guessed]"),
            "{line}"
        );
    }

    #[test]
    fn no_backtrace_lines_without_frames() {
        let mut r = report_with_frames();
        r.frames = None;
        r.called = None;
        assert_eq!(backtrace(&r), "");
        let (head, rest) = r.text.split_once('\n').unwrap();
        assert_eq!(crash_block(&r, "T"), format!("{head}\n  time:    T\n{rest}\n"));
        r.probe_pid = Some(99);
        assert_eq!(backtrace(&r), "  probe:   pid 99\n");
    }

    #[test]
    fn error_messages_name_the_subject() {
        let e = VarlinkError::loader(
            "ModuleNotFound",
            json!({"spec": "misc/nope", "tried": ["/a/misc/nope.so"]}),
        );
        assert_eq!(error_message(&e, "/s"), "module misc/nope not found; tried: /a/misc/nope.so");
        let e = VarlinkError::loader("ModuleNotLoaded", json!({"module": "x", "reason": null}));
        assert!(error_message(&e, "/s").starts_with("module x is not loaded"));
        let e = VarlinkError::loader(
            "Quarantined",
            json!({"module": "x", "crashes": 5, "window_secs": 60}),
        );
        assert!(error_message(&e, "/s").contains("kmodctl clear x"));
    }
}
