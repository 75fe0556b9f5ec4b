//! A crash report on the wire: the child's guard caught a crash, and the parent gets the report
//! (backtrace included) as text lines. The first line is the probe's crash answer
//! ([`crate::probe::Answer`]); each further line is one frame:
//! `frame\t<pc>\t<object>\t<object offset>\t<symbol>\t<symbol offset>\t<guessed>\t<in module>`
//! (`-` for an absent field). A line `abort\t<message>` carries glibc's message for a SIGABRT it
//! raised.

use std::path::Path;

use crate::crash::{si_code_name, CrashReport, Frame, Phase};
use crate::probe::Answer;

fn field(s: &str) -> String {
    s.replace(['\t', '\n', '\r'], " ")
}

fn hex(v: Option<u64>) -> String {
    v.map_or("-".to_owned(), |v| format!("{v:#x}"))
}

fn num(s: &str) -> Option<u64> {
    match s.strip_prefix("0x") {
        Some(h) => u64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The report as text (in the child).
pub fn encode(r: &CrashReport) -> String {
    let mut out = Answer::from_error(&crate::Error::Crashed(Box::new(r.clone()))).encode();
    if let Some(m) = &r.abort_message {
        out.push_str(&format!("abort\t{}\n", field(m)));
    }
    for f in &r.frames {
        out.push_str(&format!(
            "frame\t{:#x}\t{}\t{}\t{}\t{}\t{}\t{}\n",
            f.pc,
            f.object.as_deref().map_or("-".to_owned(), field),
            hex(f.object_offset),
            f.symbol.as_deref().map_or("-".to_owned(), field),
            hex(f.symbol_offset),
            u8::from(f.guessed),
            u8::from(f.in_module),
        ));
    }
    out
}

/// The report from its text (in the parent): the module's name and file as the parent knows
/// them (the child loads `/proc/self/fd/N`), `phase` what the parent asked for, `pid` the
/// child's. `None` when the text is no report.
pub fn decode(text: &str, name: &str, path: &Path, phase: Phase, pid: u32) -> Option<CrashReport> {
    let Answer::Crash {
        signal,
        code,
        fault_addr,
        pc,
        pc_in_module,
        module_offset,
        object,
        symbol,
        thread_id,
    } = Answer::decode(text)?
    else {
        return None;
    };
    let file = path.file_name().map(|f| f.to_string_lossy().into_owned());
    // The child knows the module as /proc/self/fd/N: ld.so's name for it is the number.
    let rename =
        |o: Option<String>, in_module: bool| if in_module { file.clone().or(o) } else { o };
    let mut frames = Vec::new();
    let abort_message = text.lines().find_map(|l| l.strip_prefix("abort\t")).map(str::to_owned);
    for line in text.lines().skip(1) {
        let f: Vec<&str> = line.split('\t').collect();
        if let ["frame", pc, object, ooff, sym, soff, guessed, in_module] = f.as_slice() {
            let in_module = *in_module == "1";
            let opt = |s: &str| (s != "-").then(|| s.to_owned());
            frames.push(Frame {
                pc: num(pc).unwrap_or(0),
                object: rename(opt(object), in_module),
                object_path: in_module.then(|| path.to_owned()),
                object_offset: num(ooff),
                build_id: None,
                symbol: opt(sym),
                symbol_offset: num(soff),
                guessed: *guessed == "1",
                in_module,
            });
        }
    }
    let (code_name, code_meaning) = si_code_name(signal, code);
    Some(CrashReport {
        code,
        code_name: code_name.into(),
        code_meaning: code_meaning.into(),
        fault_addr,
        pc,
        pc_in_module,
        module_offset,
        pc_object: rename(object, pc_in_module),
        symbol,
        thread_id,
        frames,
        probe_pid: Some(pid),
        abort_message,
        ..CrashReport::base(name, path, signal, phase)
    })
}

/// The report for a child that died by `signal` without a word (a signal its guard could not
/// catch: `SIGKILL` from the OOM killer or a limit, a fault on a thread it did not guard).
pub fn died(
    name: &str,
    path: &Path,
    signal: i32,
    phase: Phase,
    pid: u32,
    why: &str,
) -> CrashReport {
    CrashReport {
        code_meaning: why.to_owned(),
        thread_id: pid as i32,
        probe_pid: Some(pid),
        ..CrashReport::base(name, path, signal, phase)
    }
}
