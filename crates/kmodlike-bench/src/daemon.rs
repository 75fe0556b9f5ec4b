//! The daemon under measurement: its server in this process (for round trips, next to the echo
//! server), or the real program in a child process (for its resident memory).

use std::io;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kmodlike::Loader;
use kmodlike_daemon::server::{Connections, Limits, Server, ServiceInfo, StopHandle};
use kmodlike_daemon::service::{DaemonFacts, LoaderService};
use kmodlike_daemon::socket::AccessPolicy;

use crate::echo::RawClient;

/// `io.kmodlike.Loader.Ping`, framed.
pub const PING: &[u8] = b"{\"method\":\"io.kmodlike.Loader.Ping\"}\0";

/// A framed `Load` of `spec` (without `mod_hello`).
pub fn load_request(spec: &Path) -> Vec<u8> {
    let req = serde_json::json!({
        "method": "io.kmodlike.Loader.Load",
        "parameters": { "spec": spec, "hello": false },
    });
    let mut bytes = serde_json::to_vec(&req).expect("serialisable");
    bytes.push(0);
    bytes
}

/// A framed `Unload` of module `name`.
pub fn unload_request(name: &str) -> Vec<u8> {
    let req = serde_json::json!({
        "method": "io.kmodlike.Loader.Unload",
        "parameters": { "module": name },
    });
    let mut bytes = serde_json::to_vec(&req).expect("serialisable");
    bytes.push(0);
    bytes
}

/// The daemon's server (`io.kmodlike.Loader` on a [`Loader`]) running on a thread of this
/// process, wired as the `kmodlike` program wires it (default limits, this process's uid only).
pub struct InProcessDaemon {
    stop: StopHandle,
    thread: Option<JoinHandle<io::Result<()>>>,
    path: PathBuf,
}

impl InProcessDaemon {
    /// Serve `path` (a stale socket there is removed).
    pub fn start(path: &Path, loader: Loader) -> io::Result<InProcessDaemon> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path)?;
        let conns = Connections::new();
        let limits = Limits::default();
        let facts = DaemonFacts {
            socket: path.to_owned(),
            probe: false,
            crash_loop: None,
            max_connections: limits.max_connections,
            // Calls are what the bench times: no deadline on them.
            call_timeout: None,
        };
        let service = Arc::new(LoaderService::new(loader, facts, conns.clone()));
        let info = ServiceInfo {
            vendor: "kmodlike".into(),
            product: "kmodlike-bench".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            url: String::new(),
        };
        let server = Server::new(
            listener,
            service,
            info,
            AccessPolicy::for_this_process(None),
            limits,
            conns,
        )?;
        let stop = server.stop_handle();
        let thread =
            std::thread::Builder::new().name("daemon-accept".into()).spawn(|| server.run())?;
        Ok(InProcessDaemon { stop, thread: Some(thread), path: path.to_owned() })
    }
}

impl Drop for InProcessDaemon {
    fn drop(&mut self) {
        self.stop.stop();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// The real daemon program in a child process.
pub struct DaemonProcess {
    child: Child,
    socket: PathBuf,
}

impl DaemonProcess {
    /// Start `program` serving `socket` with `args`, and wait (up to `timeout`) until it answers
    /// `Ping`. Its log goes to `log` (or nowhere).
    pub fn start(
        program: &Path,
        socket: &Path,
        args: &[&std::ffi::OsStr],
        log: Option<&Path>,
        timeout: Duration,
    ) -> io::Result<DaemonProcess> {
        let stderr = match log {
            Some(p) => Stdio::from(std::fs::File::create(p)?),
            None => Stdio::null(),
        };
        let child = Command::new(program)
            .arg("--socket")
            .arg(socket)
            .args(args)
            // A state directory of its own (crash log, quarantines), next to its socket: not
            // the machine's /var/lib/kmodlike.
            .env("STATE_DIRECTORY", socket.parent().unwrap_or(Path::new(".")).join("state"))
            .env("RUST_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", program.display())))?;
        let mut d = DaemonProcess { child, socket: socket.to_owned() };
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = d.child.try_wait()? {
                return Err(io::Error::other(format!(
                    "{} exited before serving {}: {status}",
                    program.display(),
                    socket.display()
                )));
            }
            if let Ok(mut c) = RawClient::connect(socket) {
                if c.call_ok(PING).is_ok() {
                    return Ok(d);
                }
            }
            if Instant::now() >= deadline {
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "{} did not answer Ping on {} in {timeout:?}",
                        program.display(),
                        socket.display()
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Its pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Its socket.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Its resident set size, in bytes.
    pub fn rss(&self) -> io::Result<u64> {
        crate::rss_of(self.pid())
    }

    /// SIGTERM, then wait up to 10 s (then SIGKILL).
    pub fn stop(mut self) -> io::Result<std::process::ExitStatus> {
        self.terminate()
    }

    fn terminate(&mut self) -> io::Result<std::process::ExitStatus> {
        if let Some(status) = self.child.try_wait()? {
            return Ok(status);
        }
        // SAFETY: kill(2) of our own child, by its pid.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status);
            }
            if Instant::now() >= deadline {
                self.child.kill()?;
                return self.child.wait();
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for DaemonProcess {
    fn drop(&mut self) {
        let _ = self.terminate();
    }
}
