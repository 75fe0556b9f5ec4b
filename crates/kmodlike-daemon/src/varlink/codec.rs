//! Varlink framing: each message is one JSON object followed by a NUL byte.
//!
//! [`FrameReader`] splits a byte stream into messages with a size limit and a deadline per
//! message, so that a client that sends a huge message, or half of one and then stalls, costs the
//! daemon one bounded buffer and one timeout, never a stuck thread. [`Request`] and [`Reply`] are
//! the two message shapes.

use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::VarlinkError;

/// The default largest message accepted: 1 MiB, NUL included.
pub const MAX_MESSAGE: usize = 1 << 20;

/// A byte stream whose reads can be given a timeout (a `UnixStream` in the daemon, a buffer in
/// tests).
pub trait FrameSource: Read {
    /// Make the next reads fail with `WouldBlock`/`TimedOut` after `timeout` (`None`: block).
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()>;
}

impl FrameSource for std::os::unix::net::UnixStream {
    fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
        std::os::unix::net::UnixStream::set_read_timeout(self, timeout)
    }
}

/// Why no message could be read.
#[derive(Debug)]
pub enum FrameError {
    /// More than the limit arrived without a NUL: the stream cannot be resynchronised.
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Part of a message arrived, then nothing more before the deadline.
    Stalled {
        /// Bytes of the partial message received.
        received: usize,
        /// The deadline that passed.
        timeout: Duration,
    },
    /// No message started within the idle timeout (see [`FrameReader::with_idle_timeout`]).
    Idle {
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The peer closed the connection in the middle of a message.
    Truncated {
        /// Bytes of the partial message received.
        received: usize,
    },
    /// The socket failed.
    Io(io::Error),
}

impl std::fmt::Display for FrameError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            FrameError::TooLarge { limit } => {
                write!(f, "message larger than {limit} bytes without a NUL terminator")
            }
            FrameError::Stalled { received, timeout } => write!(
                f,
                "only {received} bytes of a message arrived within {:.1} s",
                timeout.as_secs_f64()
            ),
            FrameError::Idle { timeout } => {
                write!(f, "no reply within {:.1} s", timeout.as_secs_f64())
            }
            FrameError::Truncated { received } => {
                write!(f, "connection closed after {received} bytes of an unfinished message")
            }
            FrameError::Io(e) => write!(f, "{e}"),
        }
    }
}

/// Splits a stream into NUL-terminated messages.
#[derive(Debug)]
pub struct FrameReader {
    buf: Vec<u8>,
    /// Bytes of `buf` already searched for a NUL.
    scanned: usize,
    limit: usize,
    timeout: Duration,
    idle: Option<Duration>,
    /// When the first byte of the message now in `buf` arrived.
    started: Option<Instant>,
    /// Where reads land before they are appended to `buf`: zeroed once per reader, not once
    /// per read (a per-read zero fill of 64 KiB cost more than everything else in a Ping).
    scratch: Vec<u8>,
    /// The read timeout last set on the source, so an unchanged one costs no system call.
    last_timeout: Option<Option<Duration>>,
}

impl FrameReader {
    /// A reader accepting messages up to `limit` bytes (NUL included), each of which must arrive
    /// whole within `timeout` of its first byte.
    pub fn new(limit: usize, timeout: Duration) -> FrameReader {
        FrameReader {
            buf: Vec::new(),
            scanned: 0,
            limit,
            timeout,
            idle: None,
            started: None,
            scratch: Vec::new(),
            last_timeout: None,
        }
    }

    /// Also give up when no message starts within `idle` (a client waiting for a reply).
    pub fn with_idle_timeout(mut self, idle: Option<Duration>) -> FrameReader {
        self.idle = idle;
        self
    }

    /// Whether part of a message is buffered (a connection with one is not idle).
    pub fn has_partial(&self) -> bool {
        !self.buf.is_empty()
    }

    /// The next message, without its NUL; `Ok(None)` at a clean end of stream. Between
    /// messages it blocks (an idle client is allowed to stay) unless an idle timeout is set;
    /// within one it allows `timeout` from the message's first byte.
    pub fn next_frame<S: FrameSource>(
        &mut self,
        src: &mut S,
    ) -> Result<Option<Vec<u8>>, FrameError> {
        loop {
            if let Some(frame) = self.take_buffered() {
                return Ok(Some(frame));
            }
            if self.buf.len() >= self.limit {
                return Err(FrameError::TooLarge { limit: self.limit });
            }
            let timeout = match self.started {
                None => self.idle,
                Some(start) => {
                    let left = self.timeout.saturating_sub(start.elapsed());
                    if left.is_zero() {
                        return Err(self.stalled());
                    }
                    Some(left)
                }
            };
            if self.last_timeout != Some(timeout) {
                src.set_read_timeout(timeout).map_err(FrameError::Io)?;
                self.last_timeout = Some(timeout);
            }
            const CHUNK: usize = 64 * 1024;
            if self.scratch.is_empty() {
                self.scratch = vec![0; CHUNK];
            }
            let want = (self.limit - self.buf.len()).min(CHUNK);
            let result = src.read(&mut self.scratch[..want]);
            let got = match result {
                Ok(n) => n,
                Err(e) => match e.kind() {
                    io::ErrorKind::Interrupted => continue,
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                        if self.started.is_some() =>
                    {
                        return Err(self.stalled())
                    }
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut if self.idle.is_some() => {
                        return Err(FrameError::Idle { timeout: self.idle.unwrap_or_default() })
                    }
                    _ => return Err(FrameError::Io(e)),
                },
            };
            self.buf.extend_from_slice(&self.scratch[..got]);
            if got == 0 {
                return if self.buf.is_empty() {
                    Ok(None)
                } else {
                    Err(FrameError::Truncated { received: self.buf.len() })
                };
            }
            if self.started.is_none() {
                self.started = Some(Instant::now());
            }
        }
    }

    /// Take one complete message out of the buffer, if there is one.
    fn take_buffered(&mut self) -> Option<Vec<u8>> {
        let nul = self.buf[self.scanned..].iter().position(|&b| b == 0)? + self.scanned;
        if nul >= self.limit {
            // The NUL arrived, but too late: the message is over the limit.
            self.scanned = self.buf.len();
            return None;
        }
        let mut frame: Vec<u8> = self.buf.drain(..=nul).collect();
        frame.pop();
        self.scanned = 0;
        // The next message (pipelined) starts its own clock now.
        self.started = if self.buf.is_empty() { None } else { Some(Instant::now()) };
        Some(frame)
    }

    fn stalled(&self) -> FrameError {
        FrameError::Stalled { received: self.buf.len(), timeout: self.timeout }
    }
}

/// Write `value` as one message: JSON, then NUL.
pub fn write_frame<W: Write, T: Serialize>(w: &mut W, value: &T) -> io::Result<()> {
    let mut bytes = serde_json::to_vec(value).map_err(io::Error::other)?;
    bytes.push(0);
    w.write_all(&bytes)?;
    w.flush()
}

/// A call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Request {
    /// `interface.Method`.
    pub method: String,
    /// The parameters (an object; `{}` when absent).
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub parameters: Map<String, Value>,
    /// The caller accepts several replies.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub more: bool,
    /// The caller wants no reply.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub oneway: bool,
}

impl Request {
    /// A plain call of `method` with `parameters`.
    pub fn new(method: &str, parameters: Value) -> Request {
        let parameters = match parameters {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Request { method: method.to_owned(), parameters, more: false, oneway: false }
    }

    /// Parse a received message. The error is the Varlink error to reply with.
    pub fn parse(frame: &[u8]) -> Result<Request, VarlinkError> {
        let value: Value = serde_json::from_slice(frame)
            .map_err(|e| VarlinkError::invalid_parameter_because("request", &e.to_string()))?;
        let Value::Object(mut obj) = value else {
            return Err(VarlinkError::invalid_parameter_because(
                "request",
                "a request must be a JSON object",
            ));
        };
        let method = match obj.remove("method") {
            Some(Value::String(m)) => m,
            _ => {
                return Err(VarlinkError::invalid_parameter_because(
                    "method",
                    "a request needs \"method\": \"interface.Method\"",
                ))
            }
        };
        let parameters = match obj.remove("parameters") {
            None | Some(Value::Null) => Map::new(),
            Some(Value::Object(p)) => p,
            Some(_) => return Err(VarlinkError::invalid_parameter("parameters")),
        };
        let flag = |obj: &mut Map<String, Value>, name: &str| match obj.remove(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(b),
            Some(_) => Err(VarlinkError::invalid_parameter(name)),
        };
        let more = flag(&mut obj, "more")?;
        let oneway = flag(&mut obj, "oneway")?;
        if flag(&mut obj, "upgrade")? {
            return Err(VarlinkError::invalid_parameter_because(
                "upgrade",
                "protocol upgrades are not supported",
            ));
        }
        Ok(Request { method, parameters, more, oneway })
    }
}

/// A reply: parameters, or an error name with parameters; `continues` when more follow.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Reply {
    /// The reply's parameters (the error's, for an error).
    #[serde(default)]
    pub parameters: Map<String, Value>,
    /// More replies follow (only for calls made with `more`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub continues: bool,
    /// The error's fully qualified name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Reply {
    /// A successful reply.
    pub fn ok(parameters: Value) -> Reply {
        let parameters = match parameters {
            Value::Object(m) => m,
            _ => Map::new(),
        };
        Reply { parameters, continues: false, error: None }
    }

    /// An error reply.
    pub fn error(e: &VarlinkError) -> Reply {
        Reply { parameters: e.parameters.clone(), continues: false, error: Some(e.name.clone()) }
    }

    /// Parse a received reply.
    pub fn parse(frame: &[u8]) -> Result<Reply, serde_json::Error> {
        serde_json::from_slice(frame)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;

    /// A source that returns scripted chunks, then a timeout or end of stream.
    struct Script {
        chunks: VecDeque<io::Result<Vec<u8>>>,
        timeouts: Vec<Option<Duration>>,
    }

    impl Script {
        fn new(chunks: Vec<io::Result<Vec<u8>>>) -> Script {
            Script { chunks: chunks.into(), timeouts: Vec::new() }
        }
    }

    impl Read for Script {
        fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
            match self.chunks.pop_front() {
                None => Ok(0),
                Some(Err(e)) => Err(e),
                Some(Ok(mut chunk)) => {
                    let n = chunk.len().min(out.len());
                    out[..n].copy_from_slice(&chunk[..n]);
                    if n < chunk.len() {
                        self.chunks.push_front(Ok(chunk.split_off(n)));
                    }
                    Ok(n)
                }
            }
        }
    }

    impl FrameSource for Script {
        fn set_read_timeout(&mut self, timeout: Option<Duration>) -> io::Result<()> {
            self.timeouts.push(timeout);
            Ok(())
        }
    }

    fn reader() -> FrameReader {
        FrameReader::new(MAX_MESSAGE, Duration::from_secs(10))
    }

    #[test]
    fn splits_pipelined_messages_and_split_reads() {
        let mut src = Script::new(vec![
            Ok(b"{\"a\":1}\0{\"b\"".to_vec()),
            Ok(b":2}\0".to_vec()),
            Ok(b"{}\0".to_vec()),
        ]);
        let mut r = reader();
        assert_eq!(r.next_frame(&mut src).unwrap().unwrap(), b"{\"a\":1}");
        assert!(r.has_partial(), "the start of the second message is buffered");
        assert_eq!(r.next_frame(&mut src).unwrap().unwrap(), b"{\"b\":2}");
        assert_eq!(r.next_frame(&mut src).unwrap().unwrap(), b"{}");
        assert!(r.next_frame(&mut src).unwrap().is_none());
    }

    #[test]
    fn idle_reads_block_and_partial_reads_have_a_deadline() {
        let mut src = Script::new(vec![Ok(b"{\"a\"".to_vec()), Ok(b":1}\0".to_vec())]);
        let mut r = reader();
        r.next_frame(&mut src).unwrap().unwrap();
        assert_eq!(src.timeouts[0], None, "no timeout while waiting for a new message");
        let second = src.timeouts[1].expect("a deadline once part of a message arrived");
        assert!(second <= Duration::from_secs(10) && second > Duration::from_secs(9));
    }

    #[test]
    fn stalled_half_message_is_an_error() {
        let mut src = Script::new(vec![
            Ok(b"{\"method\":".to_vec()),
            Err(io::Error::from(io::ErrorKind::WouldBlock)),
        ]);
        let mut r = reader();
        match r.next_frame(&mut src) {
            Err(FrameError::Stalled { received: 10, .. }) => {}
            other => panic!("expected Stalled, got {other:?}"),
        }
    }

    #[test]
    fn message_over_the_limit_is_refused_without_reading_it_all() {
        let mut src = Script::new(vec![Ok(vec![b'x'; 5000]), Ok(b"\0".to_vec())]);
        let mut r = FrameReader::new(1024, Duration::from_secs(10));
        match r.next_frame(&mut src) {
            Err(FrameError::TooLarge { limit: 1024 }) => {}
            other => panic!("expected TooLarge, got {other:?}"),
        }
    }

    #[test]
    fn message_exactly_at_the_limit_is_accepted() {
        let mut msg = vec![b' '; 1023];
        msg.push(0);
        let mut src = Script::new(vec![Ok(msg)]);
        let mut r = FrameReader::new(1024, Duration::from_secs(10));
        assert_eq!(r.next_frame(&mut src).unwrap().unwrap().len(), 1023);
    }

    #[test]
    fn close_in_the_middle_of_a_message_is_truncated() {
        let mut src = Script::new(vec![Ok(b"{\"meth".to_vec())]);
        match reader().next_frame(&mut src) {
            Err(FrameError::Truncated { received: 6 }) => {}
            other => panic!("expected Truncated, got {other:?}"),
        }
    }

    #[test]
    fn parses_requests_and_names_the_bad_part() {
        let r = Request::parse(
            br#"{"method":"io.kmodlike.Loader.Ping","more":true,"parameters":{"x":1}}"#,
        )
        .unwrap();
        assert_eq!(r.method, "io.kmodlike.Loader.Ping");
        assert!(r.more && !r.oneway);
        assert_eq!(r.parameters["x"], 1);

        let bad_json = Request::parse(b"{not json").unwrap_err();
        assert_eq!(bad_json.name, "org.varlink.service.InvalidParameter");
        assert_eq!(bad_json.parameters["parameter"], "request");

        let no_method = Request::parse(br#"{"parameters":{}}"#).unwrap_err();
        assert_eq!(no_method.parameters["parameter"], "method");

        let bad_params = Request::parse(br#"{"method":"a.B","parameters":[1]}"#).unwrap_err();
        assert_eq!(bad_params.parameters["parameter"], "parameters");

        let bad_more = Request::parse(br#"{"method":"a.B","more":"yes"}"#).unwrap_err();
        assert_eq!(bad_more.parameters["parameter"], "more");
    }

    #[test]
    fn replies_round_trip_and_omit_defaults() {
        let mut out = Vec::new();
        write_frame(&mut out, &Reply::ok(serde_json::json!({"n": 1}))).unwrap();
        assert_eq!(out, b"{\"parameters\":{\"n\":1}}\0");
        let back = Reply::parse(&out[..out.len() - 1]).unwrap();
        assert_eq!(back.parameters["n"], 1);
        assert!(back.error.is_none() && !back.continues);

        let e = VarlinkError::method_not_found("x.Y");
        let mut out = Vec::new();
        write_frame(&mut out, &Reply::error(&e)).unwrap();
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("\"error\":\"org.varlink.service.MethodNotFound\""), "{text}");
        assert!(text.contains("\"method\":\"x.Y\""), "{text}");
    }
}
