//! The messages between the parent and an isolated module's `kmodlike-host` process, over a
//! `SOCK_SEQPACKET` socket pair (see `docs/isolation.md`).
//!
//! A message is one packet, or several when its data is longer than [`FRAGMENT`]: each packet
//! is an 8-byte header (`kind: u8`, `flags: u8` with [`MORE`] on every packet but the last,
//! two bytes of zero, `arg: i32` little-endian) followed by up to [`FRAGMENT`] bytes of data.
//! A packet boundary is kept by the socket, so a receiver needs no length prefix, and the
//! payload is copied once each way (into the socket, out of it).

use std::io::{IoSlice, IoSliceMut};
use std::os::fd::{AsFd, BorrowedFd};

use rustix::io::Errno;
use rustix::net::{RecvFlags, SendFlags};

/// The most data one packet carries (the socket's send buffer must hold a whole packet).
pub const FRAGMENT: usize = 64 * 1024;

/// Header size.
pub const HEADER: usize = 8;

/// Flag: more packets of this message follow.
pub const MORE: u8 = 1;

/// What a message is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Kind {
    /// Parent to child: call `symbol` (data: the symbol, a NUL byte, the input).
    Invoke = 1,
    /// Parent to child: unload the module (`arg` 1: without asking `module_can_unload`) and
    /// exit.
    Close = 2,
    /// Parent to child: the answer to [`GetTime`](Self::GetTime) (data: u64 little-endian).
    Time = 3,
    /// Child to parent: the module is loaded (`arg`: its interface version, or -1 for a
    /// legacy module).
    Ready = 16,
    /// Child to parent: an invoke returned (`arg`: its return value; data: its output).
    Reply = 17,
    /// Child to parent: a request failed without a crash (`arg`: `module_init`'s code for an
    /// init failure; data: the error kind, a tab, the message).
    Error = 18,
    /// Child to parent: the module logged (`arg`: the level; data: the message).
    Log = 19,
    /// Child to parent: the module asks the host's clock; the parent answers with `Time`.
    GetTime = 20,
    /// Child to parent: the module crashed and the guard caught it (data: the report, see
    /// [`super::report`]); the child exits next.
    Crash = 21,
    /// Child to parent: the module called `exit` (`arg`: the status; data: the call); the
    /// child exits with that status next.
    Exited = 22,
    /// Child to parent: the module is unloaded (after `Close`); the child exits next.
    Closed = 23,
}

impl Kind {
    fn from_u8(v: u8) -> Option<Kind> {
        Some(match v {
            1 => Kind::Invoke,
            2 => Kind::Close,
            3 => Kind::Time,
            16 => Kind::Ready,
            17 => Kind::Reply,
            18 => Kind::Error,
            19 => Kind::Log,
            20 => Kind::GetTime,
            21 => Kind::Crash,
            22 => Kind::Exited,
            23 => Kind::Closed,
            _ => return None,
        })
    }
}

/// A received message; `data` is reused across receives.
#[derive(Debug)]
pub struct Msg {
    /// What it is.
    pub kind: Kind,
    /// Its small argument.
    pub arg: i32,
}

/// Why a receive gave no message.
#[derive(Debug)]
pub enum RecvError {
    /// The other end is gone (end of file, or a reset).
    Closed,
    /// Something that is not a message of this protocol.
    Garbled(String),
    /// The system said no.
    Io(Errno),
}

/// Send one message: `parts` are its data, concatenated (so a header and a payload need no
/// copy into one buffer).
pub fn send(fd: BorrowedFd<'_>, kind: Kind, arg: i32, parts: &[&[u8]]) -> Result<(), Errno> {
    let total: usize = parts.iter().map(|p| p.len()).sum();
    let mut sent = 0usize;
    let (mut part, mut off) = (0usize, 0usize);
    loop {
        let chunk = (total - sent).min(FRAGMENT);
        let flags = if sent + chunk < total { MORE } else { 0 };
        let a = arg.to_le_bytes();
        let header = [kind as u8, flags, 0, 0, a[0], a[1], a[2], a[3]];
        let mut iov: Vec<IoSlice<'_>> = Vec::with_capacity(parts.len() + 1);
        iov.push(IoSlice::new(&header));
        let mut need = chunk;
        while need > 0 {
            let p = &parts[part][off..];
            let take = p.len().min(need);
            iov.push(IoSlice::new(&p[..take]));
            need -= take;
            off += take;
            if off == parts[part].len() {
                part += 1;
                off = 0;
            }
        }
        while part < parts.len() && parts[part].len() == off {
            part += 1;
            off = 0;
        }
        loop {
            match rustix::net::sendmsg(fd, &iov, &mut Default::default(), SendFlags::NOSIGNAL) {
                Ok(_) => break,
                Err(Errno::INTR) => {}
                Err(e) => return Err(e),
            }
        }
        sent += chunk;
        if sent >= total {
            return Ok(());
        }
    }
}

/// A receive buffer, reused across messages: it grows to the largest message seen and stays
/// initialised, so a packet lands in it with no further copy.
#[derive(Debug, Default)]
pub struct Inbox {
    buf: Vec<u8>,
    len: usize,
}

impl Inbox {
    /// The data of the last message received.
    pub fn data(&self) -> &[u8] {
        &self.buf[..self.len]
    }
}

/// Receive one message into `inbox`.
pub fn recv(fd: BorrowedFd<'_>, inbox: &mut Inbox) -> Result<Msg, RecvError> {
    inbox.len = 0;
    let mut first: Option<Msg> = None;
    loop {
        if inbox.buf.len() < inbox.len + FRAGMENT {
            inbox.buf.resize(inbox.len + FRAGMENT, 0);
        }
        let mut header = [0u8; HEADER];
        let n = {
            let mut iov = [
                IoSliceMut::new(&mut header),
                IoSliceMut::new(&mut inbox.buf[inbox.len..inbox.len + FRAGMENT]),
            ];
            loop {
                match rustix::net::recvmsg(
                    fd,
                    &mut iov,
                    &mut Default::default(),
                    RecvFlags::empty(),
                ) {
                    Ok(r) => break r.bytes,
                    Err(Errno::INTR) => {}
                    Err(Errno::CONNRESET) => return Err(RecvError::Closed),
                    Err(e) => return Err(RecvError::Io(e)),
                }
            }
        };
        if n == 0 {
            return Err(RecvError::Closed);
        }
        if n < HEADER {
            return Err(RecvError::Garbled(format!("a {n}-byte packet, shorter than a header")));
        }
        inbox.len += n - HEADER;
        let kind = Kind::from_u8(header[0])
            .ok_or_else(|| RecvError::Garbled(format!("unknown message kind {}", header[0])))?;
        let arg = i32::from_le_bytes([header[4], header[5], header[6], header[7]]);
        let msg = first.get_or_insert(Msg { kind, arg });
        if msg.kind != kind {
            return Err(RecvError::Garbled("a message's packets differ in kind".into()));
        }
        if header[1] & MORE == 0 {
            return Ok(first.expect("set above"));
        }
    }
}

/// A connected `SOCK_SEQPACKET` pair, close-on-exec, with send buffers that hold a whole
/// packet.
pub fn pair() -> Result<(std::os::fd::OwnedFd, std::os::fd::OwnedFd), Errno> {
    use rustix::net::{AddressFamily, SocketFlags, SocketType};
    let (a, b) = rustix::net::socketpair(
        AddressFamily::UNIX,
        SocketType::SEQPACKET,
        SocketFlags::CLOEXEC,
        None,
    )?;
    for s in [a.as_fd(), b.as_fd()] {
        // Best effort: the default (about 200 KiB) already holds a packet.
        let _ = rustix::net::sockopt::set_socket_send_buffer_size(s, 4 * (HEADER + FRAGMENT));
    }
    Ok((a, b))
}
