//! The socket server: accept, check the peer, one thread per connection, Varlink framing,
//! `org.varlink.service` introspection, and dispatch to a [`Service`].
//!
//! Limits that keep one bad client from costing the others anything:
//! - a message over the size limit gets `RequestTooLarge` and the connection is closed;
//! - a message must arrive whole within the read timeout of its first byte, else close;
//! - replies are written with a write timeout (a client that never reads is closed);
//! - at most `max_connections` connections; when full, the connection idle the longest (waiting
//!   for its next request) is closed to make room, and only when none is idle is the new one
//!   refused with `TooManyConnections`. So idle clients can never lock others out.
//!
//! Peers the [`AccessPolicy`] refuses get `PermissionDenied` and are closed on the accept
//! thread, before any thread or buffer is spent on them.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use serde_json::{json, Value};

use crate::socket::{peer_cred, peer_groups, Access, AccessPolicy, PeerCred};
use crate::varlink::params::Params;
use crate::varlink::VarlinkError;

/// What a call produced.
#[derive(Debug)]
pub enum Outcome {
    /// One reply with these parameters.
    Reply(Value),
    /// An error reply.
    Error(VarlinkError),
    /// A stream (`more`): each value received is sent as a reply with `continues`, until the
    /// sender is dropped (the connection is then closed) or the client hangs up.
    Stream(Receiver<Value>),
    /// A finite series of replies (`more`): all but the last sent with `continues`; the
    /// connection stays open. Never empty.
    Replies(Vec<Value>),
}

impl From<Result<Value, VarlinkError>> for Outcome {
    fn from(r: Result<Value, VarlinkError>) -> Outcome {
        match r {
            Ok(v) => Outcome::Reply(v),
            Err(e) => Outcome::Error(e),
        }
    }
}

/// Who is calling and how.
#[derive(Debug, Clone, Copy)]
pub struct CallContext {
    /// The peer's credentials.
    pub peer: PeerCred,
    /// What the peer may do (the socket group may be limited to reading and calling).
    pub access: Access,
    /// The call was made with `more`.
    pub more: bool,
    /// The call was made with `oneway` (its reply is dropped).
    pub oneway: bool,
}

/// A Varlink interface implementation.
pub trait Service: Send + Sync + 'static {
    /// The interface's name (`io.kmodlike.Loader`).
    fn interface(&self) -> &'static str;
    /// The interface's description (the `.varlink` text).
    fn description(&self) -> &'static str;
    /// Handle `method` (without the interface prefix).
    fn call(&self, method: &str, params: Params, ctx: &CallContext) -> Outcome;
    /// Further interfaces served on the same socket, as `(name, description)`.
    fn other_interfaces(&self) -> &'static [(&'static str, &'static str)] {
        &[]
    }
    /// Handle `method` of `interface`, one of [`Service::other_interfaces`].
    fn call_other(
        &self,
        interface: &str,
        method: &str,
        params: Params,
        ctx: &CallContext,
    ) -> Outcome {
        let _ = (method, params, ctx);
        Outcome::Error(VarlinkError::interface_not_found(interface))
    }
    /// At shutdown, when connection threads are still busy after the grace period: stop what
    /// they run (interrupt calls into modules), naming each in the log; returns how many were
    /// asked to stop. The default stops nothing.
    fn interrupt_running(&self) -> usize {
        0
    }
}

/// What `org.varlink.service.GetInfo` reports.
#[derive(Debug, Clone)]
pub struct ServiceInfo {
    /// Vendor.
    pub vendor: String,
    /// Product.
    pub product: String,
    /// Version.
    pub version: String,
    /// URL.
    pub url: String,
}

/// The server's limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Connections served at once.
    pub max_connections: usize,
    /// Largest message, NUL included.
    pub max_message: usize,
    /// A message must arrive whole within this of its first byte.
    pub read_timeout: Duration,
    /// A reply must be written within this.
    pub write_timeout: Duration,
    /// At shutdown, how long connection threads may take to finish before their calls are
    /// interrupted (and again after that).
    pub shutdown_grace: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_connections: 64,
            max_message: crate::varlink::codec::MAX_MESSAGE,
            read_timeout: Duration::from_secs(10),
            write_timeout: Duration::from_secs(10),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

/// Stops a running [`Server`] from another thread (a signal handler thread).
#[derive(Clone)]
pub struct StopHandle {
    wake: Arc<OwnedFd>,
}

impl StopHandle {
    /// Make [`Server::run`] return.
    pub fn stop(&self) {
        let _ = rustix::io::write(&*self.wake, b"x");
    }
}

/// The accept loop and its connections.
pub struct Server {
    listener: UnixListener,
    service: Arc<dyn Service>,
    info: ServiceInfo,
    policy: AccessPolicy,
    limits: Limits,
    conns: Arc<Connections>,
    wake_read: OwnedFd,
    wake_write: Arc<OwnedFd>,
}

impl Server {
    /// A server on `listener` (already bound and listening).
    pub fn new(
        listener: UnixListener,
        service: Arc<dyn Service>,
        info: ServiceInfo,
        policy: AccessPolicy,
        limits: Limits,
        conns: Arc<Connections>,
    ) -> io::Result<Server> {
        listener.set_nonblocking(true)?;
        let (wake_read, wake_write) = rustix::pipe::pipe_with(rustix::pipe::PipeFlags::CLOEXEC)?;
        Ok(Server {
            listener,
            service,
            info,
            policy,
            limits,
            conns,
            wake_read,
            wake_write: Arc::new(wake_write),
        })
    }

    /// A handle that stops [`Server::run`].
    pub fn stop_handle(&self) -> StopHandle {
        StopHandle { wake: self.wake_write.clone() }
    }

    /// Serve until stopped; then close every connection (waiting [`Limits::shutdown_grace`] for
    /// their threads, then interrupting what still runs and waiting as long again).
    pub fn run(self) -> io::Result<()> {
        let shared = Arc::new(Shared {
            service: self.service.clone(),
            info: self.info.clone(),
            limits: self.limits.clone(),
            conns: self.conns.clone(),
        });
        loop {
            let mut fds = [
                PollFd::new(&self.listener, PollFlags::IN),
                PollFd::new(&self.wake_read, PollFlags::IN),
            ];
            match rustix::event::poll(&mut fds, None) {
                Ok(_) => {}
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => return Err(e.into()),
            }
            if !fds[1].revents().is_empty() {
                break;
            }
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream, &shared),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    // EMFILE and friends: log, breathe, go on; existing clients are unaffected.
                    tracing::warn!("accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                }
            }
        }
        self.conns.close_all(self.limits.shutdown_grace, &*self.service);
        Ok(())
    }

    fn admit(&self, stream: UnixStream, shared: &Arc<Shared>) {
        let _ = stream.set_nonblocking(false);
        let _ = stream.set_write_timeout(Some(self.limits.write_timeout));
        let peer = match peer_cred(&stream) {
            Ok(p) => p,
            Err(e) => {
                tracing::warn!("SO_PEERCRED failed, closing the connection: {e}");
                return;
            }
        };
        let Some(access) = self.policy.access(&peer, || peer_groups(&stream).unwrap_or_default())
        else {
            tracing::warn!(
                uid = peer.uid,
                pid = peer.pid,
                "refused a connection: permission denied"
            );
            let err = VarlinkError::loader("PermissionDenied", json!({ "uid": peer.uid }));
            refuse(stream, &err);
            return;
        };
        if self.conns.count() >= self.limits.max_connections && !self.conns.evict_idlest() {
            tracing::warn!(
                limit = self.limits.max_connections,
                "refused a connection: every connection is busy"
            );
            let err = VarlinkError::loader(
                "TooManyConnections",
                json!({ "limit": self.limits.max_connections }),
            );
            refuse(stream, &err);
            return;
        }
        let id = self.conns.next_id.fetch_add(1, Ordering::Relaxed);
        let Ok(handle) = stream.try_clone() else {
            return;
        };
        let idle_since = Arc::new(Mutex::new(Some(Instant::now())));
        // Insert before spawning, so that a thread that ends at once finds its entry to remove.
        let mut table = self.conns.lock();
        table.insert(id, Conn { stream: handle, idle_since: idle_since.clone(), thread: None });
        let shared2 = shared.clone();
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{id}"))
            .spawn(move || serve_connection(id, stream, peer, access, idle_since, shared2));
        match spawned {
            Ok(t) => {
                if let Some(c) = table.get_mut(&id) {
                    c.thread = Some(t);
                }
            }
            Err(e) => {
                tracing::warn!("cannot start a connection thread: {e}");
                if let Some(c) = table.remove(&id) {
                    let _ = c.stream.shutdown(std::net::Shutdown::Both);
                }
            }
        }
        tracing::debug!(id, uid = peer.uid, pid = peer.pid, "connection accepted");
    }
}

/// Send one error and close; never blocks for long (the socket buffer of a new connection is
/// empty, and the write timeout is short).
mod connection;
mod table;
use connection::{refuse, serve_connection, Shared};
use table::{set, Conn};
pub use table::{Census, Connections};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::client::Connection;
    use crate::varlink::codec::{FrameReader, Reply};
    use std::io::{Read, Write};
    use std::sync::atomic::AtomicU64;
    use std::thread::JoinHandle;

    /// Read what the server sends until it closes the connection.
    fn drain_until_closed(stream: &mut UnixStream, limit: Duration) -> Vec<u8> {
        let _ = stream.set_read_timeout(Some(limit));
        let mut out = Vec::new();
        let _ = stream.read_to_end(&mut out);
        out
    }

    struct Echo;

    static GATE: Mutex<()> = Mutex::new(());
    static ENTERED: AtomicU64 = AtomicU64::new(0);

    impl Service for Echo {
        fn interface(&self) -> &'static str {
            "io.kmodlike.Test"
        }
        fn description(&self) -> &'static str {
            "interface io.kmodlike.Test\n"
        }
        fn call(&self, method: &str, mut params: Params, ctx: &CallContext) -> Outcome {
            match method {
                "Echo" => {
                    let r = params.string("text");
                    Outcome::from(r.map(|t| json!({ "text": t })))
                }
                "Count" if ctx.more => {
                    let (tx, rx) = std::sync::mpsc::channel();
                    for i in 0..3 {
                        tx.send(json!({ "i": i })).unwrap();
                    }
                    Outcome::Stream(rx)
                }
                "Count" => Outcome::Error(VarlinkError::expected_more()),
                // Blocks until the test lets go of GATE (a call that does not return).
                "Wait" => {
                    ENTERED.fetch_add(1, Ordering::SeqCst);
                    drop(GATE.lock());
                    Outcome::Reply(json!({}))
                }
                _ => Outcome::Error(VarlinkError::method_not_found(method)),
            }
        }
    }

    fn start(
        limits: Limits,
    ) -> (tempfile::TempDir, std::path::PathBuf, StopHandle, JoinHandle<()>) {
        let (d, p, s, t, _) = start_with_table(limits);
        (d, p, s, t)
    }

    fn start_with_table(
        limits: Limits,
    ) -> (tempfile::TempDir, std::path::PathBuf, StopHandle, JoinHandle<()>, Arc<Connections>) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.sock");
        let listener = UnixListener::bind(&path).unwrap();
        let conns = Connections::new();
        let info = ServiceInfo {
            vendor: "v".into(),
            product: "p".into(),
            version: "1".into(),
            url: "u".into(),
        };
        let server = Server::new(
            listener,
            Arc::new(Echo),
            info,
            AccessPolicy::for_this_process(None),
            limits,
            conns.clone(),
        )
        .unwrap();
        let stop = server.stop_handle();
        let t = std::thread::spawn(move || server.run().unwrap());
        (dir, path, stop, t, conns)
    }

    fn raw_exchange(stream: &mut UnixStream, bytes: &[u8]) -> Reply {
        stream.write_all(bytes).unwrap();
        let mut r = FrameReader::new(1 << 20, Duration::from_secs(5))
            .with_idle_timeout(Some(Duration::from_secs(5)));
        Reply::parse(&r.next_frame(stream).unwrap().unwrap()).unwrap()
    }

    #[test]
    fn calls_introspection_errors_and_streams() {
        let (_d, path, stop, t) = start(Limits::default());
        let mut c = Connection::connect(&path, Some(Duration::from_secs(5))).unwrap();
        let r = c.call("io.kmodlike.Test.Echo", json!({"text": "hi"})).unwrap().unwrap();
        assert_eq!(r["text"], "hi");
        let e = c.call("io.kmodlike.Test.Echo", json!({"text": 1})).unwrap().unwrap_err();
        assert_eq!(e.name, "org.varlink.service.InvalidParameter");
        assert_eq!(e.parameters["parameter"], "text");
        let e = c.call("io.kmodlike.Test.Nope", json!({})).unwrap().unwrap_err();
        assert_eq!(e.name, "org.varlink.service.MethodNotFound");
        let e = c.call("com.example.Other.X", json!({})).unwrap().unwrap_err();
        assert_eq!(e.name, "org.varlink.service.InterfaceNotFound");
        let info = c.call("org.varlink.service.GetInfo", json!({})).unwrap().unwrap();
        assert_eq!(info["interfaces"], json!(["org.varlink.service", "io.kmodlike.Test"]));
        let d = c
            .call(
                "org.varlink.service.GetInterfaceDescription",
                json!({"interface": "io.kmodlike.Test"}),
            )
            .unwrap()
            .unwrap();
        assert_eq!(d["description"], "interface io.kmodlike.Test\n");
        let e = c.call("io.kmodlike.Test.Count", json!({})).unwrap().unwrap_err();
        assert_eq!(e.name, "org.varlink.service.ExpectedMore");
        let mut seen = Vec::new();
        c.call_more("io.kmodlike.Test.Count", json!({}), |p| {
            seen.push(p["i"].as_i64().unwrap());
            seen.len() < 3
        })
        .unwrap()
        .unwrap();
        assert_eq!(seen, [0, 1, 2]);
        stop.stop();
        t.join().unwrap();
    }

    #[test]
    fn oneway_gets_no_reply_and_pipelined_requests_are_answered_in_order() {
        let (_d, path, stop, t) = start(Limits::default());
        let mut s = UnixStream::connect(&path).unwrap();
        s.write_all(b"{\"method\":\"io.kmodlike.Test.Echo\",\"parameters\":{\"text\":\"a\"},\"oneway\":true}\0")
            .unwrap();
        let r = raw_exchange(
            &mut s,
            b"{\"method\":\"io.kmodlike.Test.Echo\",\"parameters\":{\"text\":\"b\"}}\0{\"method\":\"io.kmodlike.Test.Echo\",\"parameters\":{\"text\":\"c\"}}\0",
        );
        assert_eq!(r.parameters["text"], "b", "the oneway call sent nothing");
        stop.stop();
        t.join().unwrap();
    }

    #[test]
    fn bad_input_gets_an_error_and_others_are_served() {
        let limits = Limits {
            max_message: 4096,
            read_timeout: Duration::from_millis(300),
            ..Limits::default()
        };
        let (_d, path, stop, t) = start(limits);
        // Invalid JSON: an error, and the connection stays usable.
        let mut s = UnixStream::connect(&path).unwrap();
        let r = raw_exchange(&mut s, b"{nonsense\0");
        assert_eq!(r.error.as_deref(), Some("org.varlink.service.InvalidParameter"));
        let r = raw_exchange(
            &mut s,
            b"{\"method\":\"io.kmodlike.Test.Echo\",\"parameters\":{\"text\":\"ok\"}}\0",
        );
        assert_eq!(r.parameters["text"], "ok");
        // Too large: RequestTooLarge, then closed.
        let mut big = UnixStream::connect(&path).unwrap();
        let r = raw_exchange(&mut big, &vec![b'x'; 8192]);
        assert_eq!(r.error.as_deref(), Some("io.kmodlike.Loader.RequestTooLarge"));
        assert_eq!(r.parameters["limit"], 4096);
        // Half a message, then silence: closed after the read timeout.
        let mut half = UnixStream::connect(&path).unwrap();
        half.write_all(b"{\"method\":").unwrap();
        let started = Instant::now();
        let rest = drain_until_closed(&mut half, Duration::from_secs(5));
        assert!(rest.is_empty());
        assert!(started.elapsed() < Duration::from_secs(3), "closed by the read timeout");
        let mut c = Connection::connect(&path, Some(Duration::from_secs(5))).unwrap();
        c.call("io.kmodlike.Test.Echo", json!({"text": "x"})).unwrap().unwrap();
        stop.stop();
        t.join().unwrap();
    }

    #[test]
    fn idle_connections_make_room_for_new_ones() {
        let limits = Limits { max_connections: 4, ..Limits::default() };
        let (_d, path, stop, t) = start(limits);
        let idle: Vec<UnixStream> = (0..10).map(|_| UnixStream::connect(&path).unwrap()).collect();
        let mut c = Connection::connect(&path, Some(Duration::from_secs(5))).unwrap();
        let r = c.call("io.kmodlike.Test.Echo", json!({"text": "served"})).unwrap().unwrap();
        assert_eq!(r["text"], "served");
        drop(idle);
        stop.stop();
        t.join().unwrap();
    }

    /// Wait (bounded) until `cond` holds: the server's threads get there on their own time.
    fn eventually(what: &str, cond: impl Fn() -> bool) {
        let until = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < until, "{what}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn a_client_that_hung_up_during_its_call_is_counted_abandoned_until_the_call_returns() {
        let (_d, path, stop, t, conns) = start_with_table(Limits::default());
        let gate = GATE.lock().unwrap();
        let wait = b"{\"method\":\"io.kmodlike.Test.Wait\",\"parameters\":{}}\0";
        let mut gone = UnixStream::connect(&path).unwrap();
        gone.write_all(wait).unwrap();
        eventually("the call is running", || ENTERED.load(Ordering::SeqCst) == 1);
        drop(gone);
        // A client that only shut down its sending side still reads its reply: not abandoned.
        let mut half = UnixStream::connect(&path).unwrap();
        half.write_all(wait).unwrap();
        half.shutdown(std::net::Shutdown::Write).unwrap();
        eventually("the second call is running", || ENTERED.load(Ordering::SeqCst) == 2);
        // A client that is still there (its request answered, so it is in the table).
        let mut c = Connection::connect(&path, Some(Duration::from_secs(5))).unwrap();
        c.call("io.kmodlike.Test.Echo", json!({"text": "x"})).unwrap().unwrap();
        assert_eq!(conns.census(), Census { open: 2, abandoned: 1 });
        assert_eq!(conns.count(), 3, "all hold a thread and count against the bound");
        drop(gate);
        let mut reply = Vec::new();
        half.read_to_end(&mut reply).unwrap();
        assert!(reply.starts_with(b"{"), "the half-closed client got its reply");
        eventually("the abandoned connection closes when its call returns", || {
            conns.census() == Census { open: 1, abandoned: 0 }
        });
        stop.stop();
        t.join().unwrap();
    }
}
