//! The daemon's baseline: a raw Unix-socket echo server with the same framing as Varlink (each
//! message a NUL-terminated byte string), one thread per connection like the daemon's server,
//! and the raw client both are driven with.

use std::io::{self, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// A NUL-framed echo server on a Unix socket, serving in this process until dropped.
pub struct EchoServer {
    path: PathBuf,
    /// A second handle on the listening socket, to shut it down (which wakes `accept`).
    listener: UnixListener,
    stop: Arc<AtomicBool>,
    accept: Option<JoinHandle<()>>,
}

impl EchoServer {
    /// Bind `path` (removing a stale socket there) and serve: every connection gets a thread
    /// that sends each NUL-terminated message back as it came.
    pub fn start(path: &Path) -> io::Result<EchoServer> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let handle = listener.try_clone()?;
        let stop = Arc::new(AtomicBool::new(false));
        let stop2 = stop.clone();
        let accept = std::thread::Builder::new().name("echo-accept".into()).spawn(move || {
            for stream in listener.incoming() {
                if stop2.load(Ordering::Acquire) {
                    break;
                }
                let Ok(stream) = stream else { break };
                let _ = std::thread::Builder::new()
                    .name("echo-conn".into())
                    .spawn(move || serve_echo(stream));
            }
        })?;
        Ok(EchoServer { path: path.to_owned(), listener: handle, stop, accept: Some(accept) })
    }

    /// The socket.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        // Raise the flag, then shut the listening socket down: on Linux that makes a blocked
        // accept(2) fail, and the loop ends. Connection threads end by themselves when their
        // clients hang up.
        self.stop.store(true, Ordering::Release);
        // SAFETY: shutdown(2) on a descriptor we own (kept open by `self.listener`).
        unsafe { libc::shutdown(self.listener.as_raw_fd(), libc::SHUT_RDWR) };
        if let Some(t) = self.accept.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

fn serve_echo(mut stream: UnixStream) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut have = 0usize;
    loop {
        // Send back every complete message in the buffer.
        while let Some(end) = buf[..have].iter().position(|&b| b == 0) {
            if stream.write_all(&buf[..=end]).is_err() {
                return;
            }
            buf.copy_within(end + 1..have, 0);
            have -= end + 1;
        }
        if have == buf.len() {
            return; // a message larger than the buffer: not a client of ours
        }
        match stream.read(&mut buf[have..]) {
            Ok(0) | Err(_) => return,
            Ok(n) => have += n,
        }
    }
}

/// A client that sends one NUL-terminated message and reads one NUL-terminated reply. The same
/// code drives the daemon and the echo server, so the two figures differ only by the server.
pub struct RawClient {
    stream: UnixStream,
    buf: Vec<u8>,
    have: usize,
    reply: Vec<u8>,
}

impl RawClient {
    /// Connect to `path`.
    pub fn connect(path: &Path) -> io::Result<RawClient> {
        let stream = UnixStream::connect(path)?;
        stream.set_read_timeout(Some(Duration::from_secs(30)))?;
        Ok(RawClient { stream, buf: vec![0u8; 64 * 1024], have: 0, reply: Vec::new() })
    }

    /// Send `message` (which must end with its NUL) and wait for one reply; returns it,
    /// without its NUL.
    pub fn round_trip(&mut self, message: &[u8]) -> io::Result<&[u8]> {
        if message.last() != Some(&0) {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "message without its NUL"));
        }
        self.stream.write_all(message)?;
        loop {
            if let Some(end) = self.buf[..self.have].iter().position(|&b| b == 0) {
                self.reply.clear();
                self.reply.extend_from_slice(&self.buf[..end]);
                self.buf.copy_within(end + 1..self.have, 0);
                self.have -= end + 1;
                return Ok(&self.reply);
            }
            if self.have == self.buf.len() {
                return Err(io::Error::new(io::ErrorKind::InvalidData, "reply too large"));
            }
            match self.stream.read(&mut self.buf[self.have..])? {
                0 => return Err(io::ErrorKind::UnexpectedEof.into()),
                n => self.have += n,
            }
        }
    }

    /// One round trip whose reply must be a Varlink reply that is not an error: returns it.
    pub fn call_ok(&mut self, message: &[u8]) -> io::Result<String> {
        let text = String::from_utf8_lossy(self.round_trip(message)?).into_owned();
        if text.contains("\"error\"") {
            return Err(io::Error::other(format!("error reply: {text}")));
        }
        Ok(text)
    }
}

/// `clients` threads, each with its own [`RawClient`] connected to `path`, that make round
/// trips together on demand: [`run`](Self::run) times `iters` round trips on every client at
/// once, so the figure is the time of one round of `clients` concurrent calls.
pub struct ConcurrentClients {
    work: Vec<mpsc::Sender<u64>>,
    done: mpsc::Receiver<io::Result<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl ConcurrentClients {
    /// Connect `clients` clients to `path`; each sends `message` on every round trip.
    pub fn connect(path: &Path, clients: usize, message: &[u8]) -> io::Result<ConcurrentClients> {
        let (done_tx, done) = mpsc::channel();
        let mut work = Vec::new();
        let mut threads = Vec::new();
        for i in 0..clients {
            let mut client = RawClient::connect(path)?;
            let (tx, rx) = mpsc::channel::<u64>();
            let done_tx = done_tx.clone();
            let message = message.to_vec();
            let t =
                std::thread::Builder::new().name(format!("bench-client-{i}")).spawn(move || {
                    for iters in rx {
                        let mut r = Ok(());
                        for _ in 0..iters {
                            if let Err(e) = client.round_trip(&message) {
                                r = Err(e);
                                break;
                            }
                        }
                        if done_tx.send(r).is_err() {
                            return;
                        }
                    }
                })?;
            work.push(tx);
            threads.push(t);
        }
        Ok(ConcurrentClients { work, done, threads })
    }

    /// Every client makes `iters` round trips, all at once; the time from the start until the
    /// last client is done.
    pub fn run(&self, iters: u64) -> io::Result<Duration> {
        let start = Instant::now();
        for w in &self.work {
            w.send(iters).map_err(|_| io::Error::other("a client thread is gone"))?;
        }
        for _ in &self.work {
            self.done.recv().map_err(|_| io::Error::other("a client thread is gone"))??;
        }
        Ok(start.elapsed())
    }
}

impl Drop for ConcurrentClients {
    fn drop(&mut self) {
        self.work.clear();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}
