//! One connection: read requests, answer them in order, stream `more` replies, close on a
//! framing error. Runs on its own thread (see [`super::Server`]).

use std::os::unix::net::UnixStream;
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use serde_json::{json, Value};

use super::{set, CallContext, Connections, Limits, Outcome, Service, ServiceInfo};
use crate::socket::{Access, PeerCred};
use crate::varlink::codec::{write_frame, FrameError, FrameReader, Reply, Request};
use crate::varlink::params::Params;
use crate::varlink::{VarlinkError, SERVICE_DESCRIPTION, SERVICE_INTERFACE};

pub(super) fn refuse(mut stream: UnixStream, err: &VarlinkError) {
    let _ = stream.set_write_timeout(Some(Duration::from_millis(200)));
    let _ = write_frame(&mut stream, &Reply::error(err));
    let _ = stream.shutdown(std::net::Shutdown::Both);
}

pub(super) struct Shared {
    pub(super) service: Arc<dyn Service>,
    pub(super) info: ServiceInfo,
    pub(super) limits: Limits,
    pub(super) conns: Arc<Connections>,
}

pub(super) fn serve_connection(
    id: u64,
    mut stream: UnixStream,
    peer: PeerCred,
    access: Access,
    idle_since: Arc<Mutex<Option<Instant>>>,
    shared: Arc<Shared>,
) {
    let mut reader = FrameReader::new(shared.limits.max_message, shared.limits.read_timeout);
    loop {
        if !reader.has_partial() {
            set(&idle_since, Some(Instant::now()));
        }
        let frame = match reader.next_frame(&mut stream) {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(FrameError::TooLarge { limit }) => {
                tracing::warn!(id, pid = peer.pid, "request over {limit} bytes: closing");
                let err = VarlinkError::loader("RequestTooLarge", json!({ "limit": limit }));
                let _ = write_frame(&mut stream, &Reply::error(&err));
                break;
            }
            Err(e) => {
                tracing::debug!(id, pid = peer.pid, "closing connection: {e}");
                break;
            }
        };
        set(&idle_since, None);
        let keep_going = match Request::parse(&frame) {
            Err(e) => write_frame(&mut stream, &Reply::error(&e)).is_ok(),
            Ok(req) => handle_request(&mut stream, req, (peer, access), &shared),
        };
        if !keep_going {
            break;
        }
    }
    let _ = stream.shutdown(std::net::Shutdown::Both);
    shared.conns.remove(id);
}

/// Handle one request; false when the connection must be closed.
fn handle_request(
    stream: &mut UnixStream,
    req: Request,
    (peer, access): (PeerCred, Access),
    shared: &Shared,
) -> bool {
    let ctx = CallContext { peer, access, more: req.more, oneway: req.oneway };
    let outcome = dispatch(&req, &ctx, shared);
    if req.oneway {
        return true;
    }
    match outcome {
        Outcome::Reply(v) => write_frame(stream, &Reply::ok(v)).is_ok(),
        Outcome::Error(e) => write_frame(stream, &Reply::error(&e)).is_ok(),
        Outcome::Stream(rx) => {
            stream_replies(stream, rx);
            false
        }
        Outcome::Replies(values) => {
            let last = values.len().saturating_sub(1);
            values.into_iter().enumerate().all(|(i, v)| {
                let mut reply = Reply::ok(v);
                reply.continues = i < last;
                write_frame(stream, &reply).is_ok()
            })
        }
    }
}

fn dispatch(req: &Request, ctx: &CallContext, shared: &Shared) -> Outcome {
    let Some((interface, method)) = req.method.rsplit_once('.') else {
        return Outcome::Error(VarlinkError::invalid_parameter_because(
            "method",
            "a method name is interface.Method",
        ));
    };
    let params = Params::new(req.parameters.clone());
    if interface == SERVICE_INTERFACE {
        return service_interface(method, params, &req.method, shared).into();
    }
    if interface == shared.service.interface() {
        return shared.service.call(method, params, ctx);
    }
    if shared.service.other_interfaces().iter().any(|(name, _)| *name == interface) {
        return shared.service.call_other(interface, method, params, ctx);
    }
    Outcome::Error(VarlinkError::interface_not_found(interface))
}

/// `org.varlink.service`: introspection.
fn service_interface(
    method: &str,
    mut params: Params,
    full: &str,
    shared: &Shared,
) -> Result<Value, VarlinkError> {
    match method {
        "GetInfo" => {
            params.finish()?;
            let info = &shared.info;
            let interfaces: Vec<&str> = [SERVICE_INTERFACE, shared.service.interface()]
                .into_iter()
                .chain(shared.service.other_interfaces().iter().map(|(name, _)| *name))
                .collect();
            Ok(json!({
                "vendor": info.vendor,
                "product": info.product,
                "version": info.version,
                "url": info.url,
                "interfaces": interfaces,
            }))
        }
        "GetInterfaceDescription" => {
            let interface = params.string("interface")?;
            params.finish()?;
            if interface == SERVICE_INTERFACE {
                Ok(json!({ "description": SERVICE_DESCRIPTION }))
            } else if interface == shared.service.interface() {
                Ok(json!({ "description": shared.service.description() }))
            } else if let Some((_, d)) =
                shared.service.other_interfaces().iter().find(|(name, _)| *name == interface)
            {
                Ok(json!({ "description": d }))
            } else {
                Err(VarlinkError::interface_not_found(&interface))
            }
        }
        _ => Err(VarlinkError::method_not_found(full)),
    }
}

/// Send each streamed value as a reply with `continues` until the stream ends or the client
/// hangs up (noticed within half a second even when no event comes).
fn stream_replies(stream: &mut UnixStream, rx: Receiver<Value>) {
    loop {
        match rx.recv_timeout(Duration::from_millis(500)) {
            Ok(v) => {
                let mut reply = Reply::ok(v);
                reply.continues = true;
                if write_frame(stream, &reply).is_err() {
                    return;
                }
            }
            Err(RecvTimeoutError::Timeout) => {
                if peer_hung_up(stream) {
                    return;
                }
            }
            Err(RecvTimeoutError::Disconnected) => return,
        }
    }
}

/// Whether the peer closed its end (or the socket was shut down). Data the client sends while
/// a stream runs stays unread; it is not a hang-up.
fn peer_hung_up(stream: &UnixStream) -> bool {
    let mut fds = [PollFd::new(stream, PollFlags::RDHUP | PollFlags::HUP)];
    let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
    match rustix::event::poll(&mut fds, Some(&zero)) {
        Ok(0) => false,
        Ok(_) => true,
        Err(_) => true,
    }
}
