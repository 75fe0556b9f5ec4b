//! Where the daemon's log goes, and in what form.
//!
//! - Under systemd with the journal on stderr (`JOURNAL_STREAM` names stderr's device and
//!   inode, as systemd sets it): one native journal record per event, sent as a datagram to
//!   `/run/systemd/journal/socket` ([`journal_socket_path`]), with `MESSAGE`, `PRIORITY`,
//!   `SYSLOG_IDENTIFIER`, a `MESSAGE_ID` per kind of event ([`message_id`]) and every field of
//!   the event upper-cased (`MODULE=`, `SIGNAL=`, `UID=`, ...). A crash is one record holding the
//!   whole report in `MESSAGE`.
//! - On a terminal: human-readable lines with timestamps (tracing's format).
//! - Anywhere else (a pipe, a file, a supervisor other than systemd): one line per event with
//!   an sd-daemon(3) priority prefix (`<3>`), fields after the message as `key=value`, every line
//!   of a multi-line message prefixed, no timestamp (the collector adds its own).
//!
//! `RUST_LOG` filters in every mode (default `info`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;

use tracing::field::{Field, Visit};
use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::{Context, Layer};

/// The journal's native socket.
pub const JOURNAL_SOCKET: &str = "/run/systemd/journal/socket";

/// For tests only: send journal records to this datagram socket instead of [`JOURNAL_SOCKET`].
pub const JOURNAL_SOCKET_ENV: &str = "KMODLIKE_JOURNAL_SOCKET";

/// The `MESSAGE_ID`s of the daemon's events (`journalctl MESSAGE_ID=...` finds every one of a
/// kind). Fixed for good: scripts and catalogs depend on them.
pub mod message_id {
    /// A module crashed (the record holds the whole crash report).
    pub const CRASHED: &str = "9b43da6acc80435ab336db98fac81d52";
    /// A module was loaded.
    pub const LOADED: &str = "c9f5117c8f3a4ba8a172dc34b0d396cf";
    /// A module was unloaded.
    pub const UNLOADED: &str = "86958116b08d4f1f96a72cf75ee5f4fd";
    /// A module was quarantined by the crash-loop policy.
    pub const QUARANTINED: &str = "4e65a78d16cc4b6d93b50c8c20494f7e";
    /// A quarantine was cleared.
    pub const QUARANTINE_CLEARED: &str = "bdd75cf707924fb5baa0fa1b3d7656d8";
    /// The process was tainted by a crash.
    pub const TAINTED: &str = "5d8e35b3093f46d68dd69d7da718d5a8";
    /// A taint was acknowledged.
    pub const TAINT_CLEARED: &str = "fe44fc1896284929b9e9bf65417fe048";
    /// A request that changes state (Load, Unload, Reload, Clear, ClearTaint, SetModulePath,
    /// ReloadConfiguration),
    /// with the caller and the outcome.
    pub const REQUEST: &str = "e870ff4f82604091954654dee371c9d4";
    /// The daemon is ready.
    pub const READY: &str = "1224d35913ce4f0d9aa9aad491d02253";
    /// The daemon stopped.
    pub const STOPPED: &str = "0819947d6aee41cf8e0b7b542fc4039b";
}

/// How log records are written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    /// Native journal records to this socket.
    Journal(PathBuf),
    /// `<N>`-prefixed lines on stderr.
    Prefixed,
    /// Human-readable lines on stderr (a terminal).
    Human,
}

/// The journal socket: [`JOURNAL_SOCKET_ENV`] when set (tests), else [`JOURNAL_SOCKET`].
pub fn journal_socket_path() -> PathBuf {
    std::env::var_os(JOURNAL_SOCKET_ENV)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(JOURNAL_SOCKET))
}

/// Whether `JOURNAL_STREAM` (`DEVICE:INODE`) names `stderr` (systemd sets it for a service whose
/// stderr is the journal; a child that redirected its stderr must not write to the journal).
pub fn journal_stream_is_stderr(value: &str) -> bool {
    let Some((dev, ino)) = value.split_once(':') else { return false };
    let (Ok(dev), Ok(ino)) = (dev.parse::<u64>(), ino.parse::<u64>()) else { return false };
    // The field types differ between architectures (u64 on most, narrower on some).
    #[allow(clippy::unnecessary_cast)]
    match rustix::fs::fstat(std::io::stderr()) {
        Ok(st) => st.st_dev as u64 == dev && st.st_ino as u64 == ino,
        Err(_) => false,
    }
}

/// Choose where logs go from the environment and stderr.
pub fn choose_target() -> LogTarget {
    use std::io::IsTerminal;
    if let Some(v) = std::env::var_os("JOURNAL_STREAM") {
        if journal_stream_is_stderr(&v.to_string_lossy()) {
            return LogTarget::Journal(journal_socket_path());
        }
    }
    if std::io::stderr().is_terminal() {
        LogTarget::Human
    } else {
        LogTarget::Prefixed
    }
}

/// The syslog priority of a tracing level.
pub fn priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        _ => 7,
    }
}

/// An event's message and fields.
#[derive(Default)]
struct Fields {
    message: String,
    fields: Vec<(String, String)>,
}

impl Visit for Fields {
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            self.message = value.to_owned();
        } else {
            self.fields.push((field.name().to_owned(), value.to_owned()));
        }
    }

    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.push((field.name().to_owned(), text));
        }
    }
}

/// The journal field name for a tracing field: upper case, `[A-Z0-9_]` only, no leading `_`
/// (those are trusted fields only journald sets).
pub fn journal_field_name(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' })
        .collect();
    while out.starts_with('_') || out.starts_with(|c: char| c.is_ascii_digit()) {
        out.remove(0);
    }
    if out.is_empty() {
        out.push_str("FIELD");
    }
    out
}

/// One record in the journal's native format: `NAME=value\n`, or for a value with a newline
/// `NAME\n`, its length as 64-bit little endian, the value, `\n`.
pub fn encode_record(fields: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in fields {
        out.extend_from_slice(name.as_bytes());
        if value.contains('\n') {
            out.push(b'\n');
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value.as_bytes());
        } else {
            out.push(b'=');
            out.extend_from_slice(value.as_bytes());
        }
        out.push(b'\n');
    }
    out
}

/// One `<N>`-prefixed text record: the message, then `key=value` fields; every line of a
/// multi-line message carries the prefix.
pub fn prefixed_lines(priority: u8, message: &str, fields: &[(String, String)]) -> String {
    let mut text = message.to_owned();
    for (k, v) in fields {
        if k == "message_id" {
            continue;
        }
        let _ = write!(text, " {k}={v}");
    }
    let mut out = String::new();
    for line in text.lines() {
        let _ = writeln!(out, "<{priority}>{line}");
    }
    out
}

/// A tracing layer writing native journal records, or `<N>` lines when the journal fails.
pub struct JournalLayer {
    socket: Option<UnixDatagram>,
    path: PathBuf,
    identifier: String,
}

impl JournalLayer {
    /// Send to the journal socket at `path` (`None` socket: prefixed stderr lines only).
    pub fn new(path: PathBuf) -> JournalLayer {
        let socket = UnixDatagram::unbound().ok();
        JournalLayer { socket, path, identifier: crate::socket::bin_name() }
    }

    fn send(&self, record: &[u8]) -> bool {
        match &self.socket {
            Some(s) => s.send_to(record, &self.path).is_ok(),
            None => false,
        }
    }
}

impl<S: Subscriber> Layer<S> for JournalLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let prio = priority(event.metadata().level());
        let prio_text = prio.to_string();
        let names: Vec<String> = f.fields.iter().map(|(k, _)| journal_field_name(k)).collect();
        let mut record: Vec<(&str, &str)> = vec![
            ("MESSAGE", &f.message),
            ("PRIORITY", &prio_text),
            ("SYSLOG_IDENTIFIER", &self.identifier),
        ];
        for (name, (_, value)) in names.iter().zip(&f.fields) {
            record.push((name, value));
        }
        // A datagram too large for the socket (a huge report) or a journal that went away:
        // the record goes to stderr, which systemd also collects.
        if !self.send(&encode_record(&record)) {
            let _ =
                std::io::stderr().write_all(prefixed_lines(prio, &f.message, &f.fields).as_bytes());
        }
    }
}

/// A tracing layer writing `<N>`-prefixed lines to stderr.
pub struct PrefixedLayer;

impl<S: Subscriber> Layer<S> for PrefixedLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut f = Fields::default();
        event.record(&mut f);
        let text = prefixed_lines(priority(event.metadata().level()), &f.message, &f.fields);
        // One write per record, so records of different threads do not interleave.
        let _ = std::io::stderr().lock().write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_records_use_the_length_form_for_multi_line_values() {
        let r = encode_record(&[("MESSAGE", "two\nlines"), ("PRIORITY", "3")]);
        let mut expected = b"MESSAGE\n".to_vec();
        expected.extend_from_slice(&9u64.to_le_bytes());
        expected.extend_from_slice(b"two\nlines\nPRIORITY=3\n");
        assert_eq!(r, expected);
    }

    #[test]
    fn field_names_are_journal_names() {
        assert_eq!(journal_field_name("module"), "MODULE");
        assert_eq!(journal_field_name("message_id"), "MESSAGE_ID");
        assert_eq!(journal_field_name("_hidden"), "HIDDEN");
        assert_eq!(journal_field_name("a.b"), "A_B");
    }

    #[test]
    fn prefixed_lines_carry_the_priority_on_every_line() {
        let fields = vec![("module".to_owned(), "m".to_owned())];
        assert_eq!(
            prefixed_lines(3, "crashed\n  pc: 0x1", &fields),
            "<3>crashed\n<3>  pc: 0x1 module=m\n"
        );
        assert_eq!(prefixed_lines(6, "ready", &[]), "<6>ready\n");
    }

    #[test]
    fn message_ids_are_distinct_128_bit_hex() {
        use message_id::*;
        let ids = [
            CRASHED,
            LOADED,
            UNLOADED,
            QUARANTINED,
            QUARANTINE_CLEARED,
            TAINTED,
            TAINT_CLEARED,
            REQUEST,
            READY,
            STOPPED,
        ];
        for id in ids {
            assert!(id.len() == 32 && id.chars().all(|c| c.is_ascii_hexdigit()), "{id}");
        }
        let mut sorted = ids.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), ids.len());
    }

    #[test]
    fn journal_stream_must_name_stderr() {
        assert!(!journal_stream_is_stderr("garbage"));
        assert!(!journal_stream_is_stderr("1:1"));
        let st = rustix::fs::fstat(std::io::stderr()).unwrap();
        assert!(journal_stream_is_stderr(&format!("{}:{}", st.st_dev, st.st_ino)));
    }
}
