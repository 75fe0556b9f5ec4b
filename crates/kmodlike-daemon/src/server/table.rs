//! The table of open connections: eviction of the idlest when full, the census `Status`
//! reports (a client that hung up during its call is abandoned, not open), and the shutdown's
//! close, which interrupts what still runs after a grace period.

use std::collections::HashMap;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};

use super::Service;

pub(super) struct Conn {
    /// A second handle on the socket, to shut it down from another thread.
    pub(super) stream: UnixStream,
    /// Since when the connection waits for its next request; `None` while it works.
    pub(super) idle_since: Arc<Mutex<Option<Instant>>>,
    pub(super) thread: Option<JoinHandle<()>>,
}

/// The open connections (shared by the server and whoever reports its state).
#[derive(Default)]
pub struct Connections {
    table: Mutex<HashMap<u64, Conn>>,
    pub(super) next_id: AtomicU64,
}

impl Connections {
    /// A new, empty table.
    pub fn new() -> Arc<Connections> {
        Arc::new(Connections::default())
    }

    /// Connections open now, whoever is at the other end (the bound on connections counts
    /// these: each holds a thread).
    pub fn count(&self) -> usize {
        self.lock().len()
    }

    /// Connections open now, split into those whose client is still there and those whose
    /// client hung up while its request still runs (a call into a module that has not returned:
    /// the connection closes when it does). One `poll` over every socket, no waiting.
    pub fn census(&self) -> Census {
        let table = self.lock();
        // POLLHUP: the client closed its socket. Not POLLRDHUP alone: a client that only shut
        // down its sending side (`socat` does, after its request) still reads the reply.
        let mut fds: Vec<PollFd<'_>> =
            table.values().map(|c| PollFd::new(&c.stream, PollFlags::HUP)).collect();
        let zero = rustix::event::Timespec { tv_sec: 0, tv_nsec: 0 };
        let abandoned = match rustix::event::poll(&mut fds, Some(&zero)) {
            Ok(0) | Err(_) => 0,
            Ok(_) => fds.iter().filter(|f| f.revents().contains(PollFlags::HUP)).count(),
        };
        Census { open: table.len() - abandoned, abandoned }
    }

    /// Forget connection `id` (its thread is ending).
    pub(super) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub(super) fn lock(&self) -> MutexGuard<'_, HashMap<u64, Conn>> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Close the connection idle the longest; false when none is idle.
    pub(super) fn evict_idlest(&self) -> bool {
        let mut table = self.lock();
        let idlest = table
            .iter()
            .filter_map(|(id, c)| lock(&c.idle_since).map(|since| (since, *id)))
            .min()
            .map(|(_, id)| id);
        match idlest.and_then(|id| table.remove(&id)) {
            Some(conn) => {
                let _ = conn.stream.shutdown(std::net::Shutdown::Both);
                tracing::debug!("closed the longest-idle connection to make room");
                true
            }
            None => false,
        }
    }

    /// Shut every connection down and wait up to `grace` for their threads; then have
    /// `service` interrupt what still runs (calls into modules) and wait up to `grace` again.
    /// Threads still busy after that are left behind (the process is about to exit).
    pub(super) fn close_all(&self, grace: Duration, service: &dyn Service) {
        let conns: Vec<Conn> = self.lock().drain().map(|(_, c)| c).collect();
        for c in &conns {
            let _ = c.stream.shutdown(std::net::Shutdown::Both);
        }
        let mut threads: Vec<JoinHandle<()>> =
            conns.into_iter().filter_map(|mut c| c.thread.take()).collect();
        join_finished_within(&mut threads, grace);
        if threads.is_empty() {
            return;
        }
        tracing::warn!(
            "{} connection(s) still busy {:.0} s after the stop: interrupting their calls",
            threads.len(),
            grace.as_secs_f64()
        );
        if service.interrupt_running() > 0 {
            join_finished_within(&mut threads, grace);
        }
        if !threads.is_empty() {
            tracing::warn!(
                "{} connection thread(s) still busy after the interrupt (a hung module?); \
                 exiting without them",
                threads.len()
            );
        }
    }
}

/// What [`Connections::census`] counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Census {
    /// Connections with a client at the other end.
    pub open: usize,
    /// Connections whose client closed while their request still runs.
    pub abandoned: usize,
}

/// Join the threads that finish within `limit`; those still running stay in `threads`.
fn join_finished_within(threads: &mut Vec<JoinHandle<()>>, limit: Duration) {
    let until = Instant::now() + limit;
    loop {
        let (done, busy): (Vec<_>, Vec<_>) = threads.drain(..).partition(|t| t.is_finished());
        *threads = busy;
        for t in done {
            let _ = t.join();
        }
        if threads.is_empty() || Instant::now() >= until {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

fn lock<T: Copy>(m: &Mutex<T>) -> T {
    *m.lock().unwrap_or_else(|e| e.into_inner())
}

pub(super) fn set(m: &Mutex<Option<Instant>>, v: Option<Instant>) {
    *m.lock().unwrap_or_else(|e| e.into_inner()) = v;
}
