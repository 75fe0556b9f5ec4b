//! A Varlink client for the daemon's socket, as `kmodctl` uses it.
//!
//! Before sending anything it checks who serves the socket (SO_PEERCRED): root or the caller's
//! own uid, else it refuses, so a process squatting on `/tmp/kmodlike.sock` never sees a request.

use std::io;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{Map, Value};

use crate::connect_errors::{explain, ConnectProblem};
use crate::socket::{peer_cred, server_is_trusted};
use crate::varlink::codec::{write_frame, FrameError, FrameReader, Reply, Request, MAX_MESSAGE};
use crate::varlink::VarlinkError;

/// Why a call could not be made or completed (as opposed to an error reply).
#[derive(Debug)]
pub enum ClientError {
    /// The socket cannot be reached: missing, refused, not permitted.
    Unreachable {
        /// The socket.
        path: PathBuf,
        /// Why.
        source: io::Error,
    },
    /// The socket path is not a socket, or its mode keeps the caller out.
    Refused(ConnectProblem),
    /// The socket is served by another uid; nothing was sent.
    Untrusted {
        /// The socket.
        path: PathBuf,
        /// The server's uid.
        uid: u32,
        /// The server's pid.
        pid: i32,
    },
    /// No reply arrived within the connection's reply timeout; the connection is still open
    /// (the daemon may be alive and busy: [`crate::ctl`] pings it to tell).
    NoReply {
        /// The socket.
        path: PathBuf,
        /// The timeout that passed.
        timeout: Duration,
    },
    /// The connection failed or closed before a complete reply.
    Connection {
        /// The socket.
        path: PathBuf,
        /// What happened.
        detail: String,
    },
    /// The reply was not valid Varlink.
    Protocol {
        /// The socket.
        path: PathBuf,
        /// What was wrong.
        detail: String,
    },
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Unreachable { path, source } => {
                write!(f, "cannot reach the daemon at {}: {source}", path.display())?;
                if matches!(
                    source.kind(),
                    io::ErrorKind::NotFound | io::ErrorKind::ConnectionRefused
                ) {
                    write!(f, " (is kmodlike running? start it, or pass --socket PATH)")?;
                }
                Ok(())
            }
            ClientError::Refused(problem) => problem.fmt(f),
            ClientError::Untrusted { path, uid, pid } => write!(
                f,
                "refusing {}: it is served by uid {uid} (pid {pid}), neither root nor you; \
                 nothing was sent",
                path.display()
            ),
            ClientError::NoReply { path, timeout } => {
                write!(f, "no reply from {} within {:.1} s", path.display(), timeout.as_secs_f64())
            }
            ClientError::Connection { path, detail } => {
                write!(f, "connection to {} failed: {detail}", path.display())
            }
            ClientError::Protocol { path, detail } => {
                write!(f, "bad reply from {}: {detail}", path.display())
            }
        }
    }
}

impl std::error::Error for ClientError {}

/// One connection to the daemon: its socket, or a bridge (`ssh HOST kmodctl bridge`).
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    reader: FrameReader,
    path: PathBuf,
    /// The bridge process at the other end of `stream`, when there is one.
    bridge: Option<std::process::Child>,
}

/// Connect to the socket at `path` and check that the server runs as root or as this
/// process's uid; nothing is sent to an untrusted server.
pub fn connect_trusted(path: &Path) -> Result<UnixStream, ClientError> {
    let stream = UnixStream::connect(path).map_err(|source| match explain(path, &source) {
        Some(problem) => ClientError::Refused(problem),
        None => ClientError::Unreachable { path: path.to_owned(), source },
    })?;
    let server = peer_cred(&stream)
        .map_err(|source| ClientError::Unreachable { path: path.to_owned(), source })?;
    let me = rustix::process::geteuid().as_raw();
    if !server_is_trusted(&server, me) {
        return Err(ClientError::Untrusted {
            path: path.to_owned(),
            uid: server.uid,
            pid: server.pid,
        });
    }
    Ok(stream)
}

impl Connection {
    /// Connect to `path` and check that the server runs as root or as this process's uid.
    /// `timeout` bounds the wait for each reply (`None`: no bound).
    pub fn connect(path: &Path, timeout: Option<Duration>) -> Result<Connection, ClientError> {
        let stream = connect_trusted(path)?;
        Ok(Connection::over(stream, path.to_owned(), timeout, None))
    }

    /// Talk to a daemon through a bridge program: `program` runs with its stdin and stdout
    /// connected to this connection (one end of a socket pair), as `varlinkctl --bridge` does.
    /// `label` names the connection in errors (`ssh://host`). The program's stderr is ours, so
    /// its own complaints (ssh's "Could not resolve hostname") reach the user.
    pub fn over_bridge(
        program: &mut std::process::Command,
        label: PathBuf,
        timeout: Option<Duration>,
    ) -> Result<Connection, ClientError> {
        let (mine, theirs) = UnixStream::pair()
            .map_err(|source| ClientError::Unreachable { path: label.clone(), source })?;
        let theirs_out = theirs
            .try_clone()
            .map_err(|source| ClientError::Unreachable { path: label.clone(), source })?;
        let child = program
            .stdin(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .stdout(std::process::Stdio::from(std::os::fd::OwnedFd::from(theirs_out)))
            .spawn()
            .map_err(|source| ClientError::Unreachable { path: label.clone(), source })?;
        Ok(Connection::over(mine, label, timeout, Some(child)))
    }

    fn over(
        stream: UnixStream,
        path: PathBuf,
        timeout: Option<Duration>,
        bridge: Option<std::process::Child>,
    ) -> Connection {
        let _ = stream.set_write_timeout(timeout);
        let reader = FrameReader::new(MAX_MESSAGE * 16, timeout.unwrap_or(Duration::from_secs(60)))
            .with_idle_timeout(timeout);
        Connection { stream, reader, path, bridge }
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Call `method` and wait for its single reply: the reply's parameters, or the error reply.
    pub fn call(
        &mut self,
        method: &str,
        parameters: Value,
    ) -> Result<Result<Map<String, Value>, VarlinkError>, ClientError> {
        self.send_then_receive(&Request::new(method, parameters)).map(into_result)
    }

    /// Call `method` with `more`, passing each reply to `on_reply` until the daemon ends the
    /// stream or `on_reply` returns false.
    pub fn call_more(
        &mut self,
        method: &str,
        parameters: Value,
        mut on_reply: impl FnMut(Map<String, Value>) -> bool,
    ) -> Result<Result<(), VarlinkError>, ClientError> {
        let mut req = Request::new(method, parameters);
        req.more = true;
        let mut first = Some(self.send_then_receive(&req)?);
        loop {
            let reply = match first.take() {
                Some(r) => r,
                None => self.receive()?,
            };
            let continues = reply.continues;
            match into_result(reply) {
                Err(e) => return Ok(Err(e)),
                Ok(params) => {
                    if !on_reply(params) || !continues {
                        return Ok(Ok(()));
                    }
                }
            }
        }
    }

    /// Send `request` and read the first reply. A daemon that refuses a connection
    /// (PermissionDenied, TooManyConnections) replies and closes before reading anything, so
    /// a failed send still looks for that reply before reporting the send's error.
    fn send_then_receive(&mut self, request: &Request) -> Result<Reply, ClientError> {
        match self.send(request) {
            Ok(()) => self.receive(),
            Err(send_error) => self.receive().map_err(|_| send_error),
        }
    }

    /// Send one request.
    pub fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        write_frame(&mut self.stream, request).map_err(|e| self.connection_error(e.to_string()))
    }

    /// Wait for one reply (no reply timeout when the connection has none).
    pub fn receive(&mut self) -> Result<Reply, ClientError> {
        let frame = match self.reader.next_frame(&mut self.stream) {
            Ok(Some(f)) => f,
            Ok(None) => {
                return Err(self.connection_error("the daemon closed the connection".to_owned()))
            }
            Err(FrameError::Idle { timeout }) => {
                return Err(ClientError::NoReply { path: self.path.clone(), timeout })
            }
            Err(FrameError::Io(e)) => return Err(self.connection_error(e.to_string())),
            Err(e) => return Err(self.connection_error(e.to_string())),
        };
        Reply::parse(&frame).map_err(|e| ClientError::Protocol {
            path: self.path.clone(),
            detail: format!("{e}: {}", String::from_utf8_lossy(&frame)),
        })
    }

    /// Make the wait for replies unbounded (a monitor stream).
    pub fn without_timeout(mut self) -> Connection {
        let _ = self.stream.set_write_timeout(None);
        self.reader = FrameReader::new(MAX_MESSAGE * 16, Duration::from_secs(60));
        self
    }

    fn connection_error(&self, detail: String) -> ClientError {
        ClientError::Connection { path: self.path.clone(), detail }
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        let Some(mut child) = self.bridge.take() else { return };
        // Closing our end is the bridge's end of input: it exits on its own once it has
        // passed that on. One that does not (a hung ssh) is not waited for.
        let _ = self.stream.shutdown(std::net::Shutdown::Both);
        for _ in 0..100 {
            if !matches!(child.try_wait(), Ok(None)) {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = child.kill();
        let _ = child.wait();
    }
}

fn into_result(reply: Reply) -> Result<Map<String, Value>, VarlinkError> {
    match reply.error {
        Some(name) => Err(VarlinkError { name, parameters: reply.parameters }),
        None => Ok(reply.parameters),
    }
}
