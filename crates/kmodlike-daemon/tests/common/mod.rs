//! The daemon tests' harness: real modules built from C, the real `kmodlike` binary on a socket
//! in a temporary directory, the real `kmodctl`, every wait bounded.
#![allow(dead_code)] // each test binary uses a different part

use std::ffi::OsString;
use std::io::{BufRead, BufReader, Read};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long a daemon may take to become ready.
pub const START_DEADLINE: Duration = Duration::from_secs(30);
/// How long one kmodctl run may take.
pub const CTL_DEADLINE: Duration = Duration::from_secs(60);

pub fn daemon_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kmodlike"))
}

pub fn kmodctl_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kmodctl"))
}

/// The probe helper is built with the core crate's binaries (`cargo build --workspace`, which
/// `make test` runs). Without it the daemon tests run with `--no-probe`.
pub fn probe_available() -> bool {
    daemon_bin().with_file_name("kmodlike-probe").exists()
}

pub fn crate_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The six fatal signals and the file names of their crash modules.
pub const SIGNALS: [(i32, &str); 6] = [
    (libc::SIGSEGV, "SIGSEGV"),
    (libc::SIGBUS, "SIGBUS"),
    (libc::SIGFPE, "SIGFPE"),
    (libc::SIGILL, "SIGILL"),
    (libc::SIGABRT, "SIGABRT"),
    (libc::SIGSYS, "SIGSYS"),
];

/// Build `tests/modules/crash.c` as module `name` raising `sig` in crash() (0: no crash).
pub fn crash_module(name: &str, sig: i32, extra: &[&str]) -> PathBuf {
    let src = crate_dir().join("tests/modules/crash.c");
    let sig_flag = format!("-DSIG={sig}");
    let name_flag = format!("-DNAME=\"{name}\"");
    let mut flags = vec![name_flag.as_str()];
    if sig != 0 {
        flags.push(&sig_flag);
    }
    flags.extend_from_slice(extra);
    kmodlike_testsupport::build_module(&format!("daemon-{name}.so"), &[&src], &flags)
}

/// The seed's example module, built from `modules/hello/hello.c`.
pub fn hello_module() -> PathBuf {
    let src = kmodlike_testsupport::workspace_root().join("modules/hello/hello.c");
    kmodlike_testsupport::build_module("daemon-hello.so", &[&src], &[])
}

/// Build `tests/modules/<stem>.c`.
pub fn test_module(stem: &str) -> PathBuf {
    let src = crate_dir().join(format!("tests/modules/{stem}.c"));
    kmodlike_testsupport::build_module(&format!("daemon-{stem}.so"), &[&src], &[])
}

/// Run `cmd` to completion within `deadline` (killed and failing the test otherwise).
pub fn run_with_deadline(cmd: &mut Command, deadline: Duration) -> Output {
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = spawn_retrying_busy(cmd);
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = out.read_to_string(&mut s);
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = err.read_to_string(&mut s);
        s
    });
    let status = wait_deadline(&mut child, deadline)
        .unwrap_or_else(|| panic!("{cmd:?} did not finish within {deadline:?}"));
    Output { status, stdout: out_t.join().unwrap(), stderr: err_t.join().unwrap() }
}

/// Spawn `cmd`. A freshly copied program can be briefly "busy" (ETXTBSY): another test
/// thread's fork may hold a copy of the copy's write descriptor until its exec. Retry that case.
pub fn spawn_retrying_busy(cmd: &mut Command) -> Child {
    let mut attempts = 0;
    loop {
        match cmd.spawn() {
            Ok(c) => return c,
            Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && attempts < 100 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!("cannot start {cmd:?}: {e}"),
        }
    }
}

/// A copy of `program` in `<dir>/bin/` (both made world-readable and executable), for a test
/// that runs it as another uid: the build tree may sit in a directory only its owner can enter
/// (a clone in root's 0700 home, say), and the copy lives in the test's own temporary
/// directory, which the test opens to that uid.
pub fn copy_for_other_uid(dir: &Path, program: &Path, name: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let open = |p: &Path| {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
    };
    open(dir);
    open(&bin);
    let copy = bin.join(name);
    std::fs::copy(program, &copy)
        .unwrap_or_else(|e| panic!("cannot copy {} to {}: {e}", program.display(), copy.display()));
    open(&copy);
    copy
}

/// Wait for `child` up to `deadline`; on timeout kill it and return `None`.
pub fn wait_deadline(child: &mut Child, deadline: Duration) -> Option<ExitStatus> {
    let until = Instant::now() + deadline;
    loop {
        if let Some(st) = child.try_wait().expect("try_wait") {
            return Some(st);
        }
        if Instant::now() >= until {
            let _ = child.kill();
            let _ = child.wait();
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A finished command.
#[derive(Debug)]
pub struct Output {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr: String,
}

impl Output {
    pub fn code(&self) -> i32 {
        self.status.code().unwrap_or(-1)
    }

    /// Assert exit 0 and return stdout.
    pub fn ok(&self) -> &str {
        assert_eq!(self.code(), 0, "expected success, got {self:#?}");
        &self.stdout
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:#?}"))
    }
}

/// How to start a daemon.
pub struct DaemonConfig {
    pub args: Vec<OsString>,
    pub env: Vec<(OsString, OsString)>,
    /// Run as this uid (and gid); root only.
    pub uid: Option<u32>,
    /// Use this program instead of the built binary (a renamed copy).
    pub program: Option<PathBuf>,
    /// Pass `--socket <dir>/kmodlike.sock` (off for the path rule tests).
    pub with_socket: bool,
    /// Wait for the "ready" log line.
    pub wait_ready: bool,
}

impl Default for DaemonConfig {
    fn default() -> Self {
        DaemonConfig {
            args: Vec::new(),
            env: Vec::new(),
            uid: None,
            program: None,
            with_socket: true,
            wait_ready: true,
        }
    }
}

/// A running daemon, killed when dropped.
pub struct Daemon {
    child: Option<Child>,
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    /// The module path root: modules go into `<modules>/misc/`.
    pub modules: PathBuf,
    log: Arc<Mutex<String>>,
}

impl Daemon {
    /// A fresh temporary directory with `modules/misc/` holding `modules` (source path, file
    /// name).
    pub fn prepare(modules: &[(&Path, &str)]) -> tempfile::TempDir {
        let dir = tempfile::tempdir().expect("tempdir");
        let misc = dir.path().join("modules/misc");
        std::fs::create_dir_all(&misc).unwrap();
        for (src, name) in modules {
            std::fs::copy(src, misc.join(name)).unwrap();
        }
        dir
    }

    /// Start with default settings, the given extra arguments and modules in its module path.
    pub fn start(modules: &[(&Path, &str)], args: &[&str]) -> Daemon {
        let dir = Daemon::prepare(modules);
        let cfg =
            DaemonConfig { args: args.iter().map(OsString::from).collect(), ..Default::default() };
        Daemon::start_in(dir, cfg)
    }

    /// Start in `dir` with `cfg`.
    pub fn start_in(dir: tempfile::TempDir, cfg: DaemonConfig) -> Daemon {
        let socket = dir.path().join("kmodlike.sock");
        let modules = dir.path().join("modules");
        let program = cfg.program.clone().unwrap_or_else(daemon_bin);
        let mut cmd = Command::new(&program);
        if cfg.with_socket {
            cmd.arg("--socket").arg(&socket);
        }
        cmd.arg("--module-path").arg(&modules);
        if !probe_available() || cfg.program.is_some() {
            cmd.arg("--no-probe");
        }
        // Each daemon keeps its state in its own directory (never the machine's /var/lib).
        if !cfg.args.iter().any(|a| a == "--state-dir") {
            cmd.arg("--state-dir").arg(dir.path().join("state"));
        }
        // ...and reads no configuration but its own (never the machine's /etc/kmodlike).
        if !cfg.args.iter().any(|a| a == "--config") {
            let config = dir.path().join("kmodlike.toml");
            if !config.exists() {
                std::fs::write(&config, "").unwrap();
            }
            cmd.arg("--config").arg(config);
        }
        cmd.args(&cfg.args);
        for var in [
            "KMODLIKE_SOCKET",
            "KMODLIKE_MODULE_PATH",
            "LISTEN_PID",
            "LISTEN_FDS",
            "NOTIFY_SOCKET",
            "JOURNAL_STREAM",
            "STATE_DIRECTORY",
        ] {
            cmd.env_remove(var);
        }
        cmd.env("RUST_LOG", "info").env("NO_COLOR", "1");
        for (k, v) in &cfg.env {
            cmd.env(k, v);
        }
        if let Some(uid) = cfg.uid {
            cmd.uid(uid).gid(uid);
        }
        let mut d = Daemon::spawn(cmd, dir, socket, modules);
        if cfg.wait_ready {
            d.wait_log("ready", START_DEADLINE);
        }
        d
    }

    /// Spawn a prepared command (its stderr is collected as the log).
    pub fn spawn(
        mut cmd: Command,
        dir: tempfile::TempDir,
        socket: PathBuf,
        modules: PathBuf,
    ) -> Daemon {
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = spawn_retrying_busy(&mut cmd);
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(String::new()));
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let mut l = log2.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Daemon { child: Some(child), dir, socket, modules, log }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("running").id()
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    /// Wait until the log contains `needle`; fails the test (with the log) otherwise.
    pub fn wait_log(&mut self, needle: &str, deadline: Duration) {
        self.wait_log_count(needle, 1, deadline)
    }

    /// Wait until the log contains `needle` at least `n` times.
    pub fn wait_log_count(&mut self, needle: &str, n: usize, deadline: Duration) {
        let until = Instant::now() + deadline;
        loop {
            if self.log().matches(needle).count() >= n {
                return;
            }
            if let Some(st) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                // Let the reader thread catch up before reporting.
                std::thread::sleep(Duration::from_millis(100));
                if self.log().matches(needle).count() >= n {
                    return;
                }
                panic!("the daemon exited ({st}) before logging {needle:?} x{n}:\n{}", self.log());
            }
            assert!(
                Instant::now() < until,
                "not {n} x {needle:?} in the log within {deadline:?}:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Run kmodctl against this daemon.
    pub fn ctl(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(kmodctl_bin());
        cmd.arg("--socket").arg(&self.socket).args(args).env("NO_COLOR", "1");
        run_with_deadline(&mut cmd, CTL_DEADLINE)
    }

    /// Send `signal` to the daemon.
    pub fn signal(&self, signal: rustix::process::Signal) {
        let pid = rustix::process::Pid::from_raw(self.pid() as i32).unwrap();
        rustix::process::kill_process(pid, signal).expect("kill");
    }

    /// SIGTERM and wait for the exit (within 30 s).
    pub fn terminate(&mut self) -> ExitStatus {
        self.signal(rustix::process::Signal::TERM);
        self.wait_exit(Duration::from_secs(30))
    }

    /// Wait for the daemon to exit on its own.
    pub fn wait_exit(&mut self, deadline: Duration) -> ExitStatus {
        let mut child = self.child.take().expect("running");
        let st = wait_deadline(&mut child, deadline);
        // Let the log reader drain.
        std::thread::sleep(Duration::from_millis(100));
        st.unwrap_or_else(|| panic!("the daemon did not exit within {deadline:?}:\n{}", self.log()))
    }

    /// Whether the daemon still runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        if std::thread::panicking() {
            eprintln!("---- daemon log ----\n{}--------------------", self.log());
        }
    }
}

/// Whether a tool the test needs is installed. Missing: the test fails under CI (where
/// `make test-deps` installs it) and is skipped with a message elsewhere.
pub fn require_tool(path: &Path, how: &str) -> bool {
    if path.exists() {
        return true;
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing; install it with: {how}", path.display());
    }
    eprintln!("SKIPPED: {} is missing; install it with: {how}", path.display());
    false
}

/// `socat`, when installed.
pub fn socat() -> Option<PathBuf> {
    let found = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).map(|d| d.join("socat")).find(|p| p.exists()))
        .unwrap_or(None);
    match found {
        Some(p) => Some(p),
        None => {
            require_tool(Path::new("/usr/bin/socat"), "apt-get install socat (or make test-deps)")
                .then(|| PathBuf::from("/usr/bin/socat"))
        }
    }
}

/// The PyPI varlink client's Python, when its virtualenv exists.
pub fn varlink_python() -> Option<PathBuf> {
    let py = kmodlike_testsupport::workspace_root().join("target/venv/bin/python");
    let how = "make test-deps (python3 -m venv target/venv && target/venv/bin/pip install varlink)";
    require_tool(&py, how).then_some(py)
}

/// Whether this test runs as root (uid tests need it).
pub fn root_or_skip(what: &str) -> bool {
    if kmodlike_testsupport::is_root() {
        true
    } else {
        eprintln!("SKIPPED: {what} needs root (to switch to uid 65534)");
        false
    }
}
