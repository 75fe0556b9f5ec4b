//! Helpers shared by the SDK's integration tests: find the test modules (cdylib examples of
//! this crate), give each test its own copy, capture what modules log, bound every test in time.

#![allow(dead_code)] // each test binary uses its own subset

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

/// `target/<profile>`: the directory above this test binary's `deps/`.
pub fn profile_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    exe.parent().and_then(Path::parent).expect("test binary lives in target/<profile>/deps").into()
}

/// Build workspace package `package` in this test binary's profile (once per test process; a
/// no-op for cargo when it is fresh). `cargo test -p kmodlike-module` does not build the other
/// packages' shared objects (hello-rs, libmodule.so), so the tests that load them ask here.
pub fn cargo_build(package: &str) {
    cargo_build_args(&["-p", package]);
}

/// `cargo build --quiet ARGS` in this test binary's profile, once per process per `args`.
fn cargo_build_args(args: &[&str]) {
    static BUILT: Mutex<Vec<String>> = Mutex::new(Vec::new());
    let key = args.join(" ");
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    if built.contains(&key) {
        return;
    }
    let mut cargo = Command::new(env!("CARGO"));
    cargo.args(["build", "--quiet"]).args(args);
    if profile_dir().file_name().is_some_and(|p| p == "release") {
        cargo.arg("--release");
    }
    let status = cargo.status().expect("run cargo");
    assert!(status.success(), "cargo build {key} failed");
    built.push(key);
}

/// `hello-rs.so`: modules/hello-rs, the SDK's example module, as `make mod` builds it.
pub fn hello_rs_so() -> PathBuf {
    cargo_build("hello-rs");
    let so = profile_dir().join("libhello_rs.so");
    assert!(so.exists(), "{} missing after cargo build -p hello-rs", so.display());
    so
}

/// A directory holding `libmodule.so.1` (the C API, freshly built), as a host linked with
/// `-lmodule` finds it at run time by its SONAME.
pub fn libmodule_dir() -> PathBuf {
    static DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    DIR.get_or_init(install_libmodule).clone()
}

fn install_libmodule() -> PathBuf {
    cargo_build("kmodlike-capi");
    let built = profile_dir().join("libmodule.so");
    assert!(built.exists(), "{} missing after cargo build -p kmodlike-capi", built.display());
    let dir = profile_dir().join("sdk-tests/lib");
    std::fs::create_dir_all(&dir).expect("create sdk-tests/lib");
    // Copy under a temporary name and rename: a test process running a host at this moment
    // keeps the old file.
    let tmp = dir.join(format!(".libmodule.so.1.{}", std::process::id()));
    std::fs::copy(&built, &tmp).expect("copy libmodule.so");
    std::fs::rename(&tmp, dir.join("libmodule.so.1")).expect("install libmodule.so.1");
    let link = dir.join("libmodule.so");
    if !link.exists() {
        let _ = std::os::unix::fs::symlink("libmodule.so.1", &link);
    }
    dir
}

/// Run `cmd` to completion with its output captured, killing it after `limit`.
pub fn run(cmd: &mut Command, limit: Duration) -> std::process::Output {
    use std::io::Read;
    use std::process::Stdio;
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut pipes = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipes.1.read_to_end(&mut buf);
        buf
    });
    let out_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = pipes.0.read_to_end(&mut buf);
        buf
    });
    let deadline = std::time::Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("{cmd:?} did not finish within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stdout = out_reader.join().expect("stdout reader");
    let stderr = err_reader.join().expect("stderr reader");
    std::process::Output { status, stdout, stderr }
}

/// The shared object of the cdylib example `name` (a test module in `tests/modules/`). Built
/// here (a no-op for cargo when fresh): `cargo test --test X` does not rebuild examples.
pub fn example_module(name: &str) -> PathBuf {
    cargo_build_args(&["-p", "kmodlike-module", "--example", name]);
    let so = profile_dir().join("examples").join(format!("lib{name}.so"));
    assert!(so.exists(), "{} missing after the build", so.display());
    so
}

/// A fresh directory for one test, under target/ (removed when dropped).
pub fn temp_dir() -> tempfile::TempDir {
    let base = profile_dir().join("sdk-tests");
    std::fs::create_dir_all(&base).expect("create target/<profile>/sdk-tests");
    tempfile::tempdir_in(base).expect("tempdir")
}

/// Copy `src` to `dir/<rel>` (creating directories). Each test loads its own copy, so two tests
/// running at once in this process never share one instance of a module (and its statics).
pub fn install(src: &Path, dir: &Path, rel: &str) -> PathBuf {
    let dst = dir.join(rel);
    std::fs::create_dir_all(dst.parent().expect("parent")).expect("create module dir");
    std::fs::copy(src, &dst)
        .unwrap_or_else(|e| panic!("copy {} -> {}: {e}", src.display(), dst.display()));
    dst
}

/// Everything modules logged through the loader: `(module, level, message)`.
#[derive(Clone, Default)]
pub struct Logs(Arc<Mutex<Vec<(String, i32, String)>>>);

impl Logs {
    pub fn sink(&self) -> impl Fn(&str, i32, &str) + Send + Sync + 'static {
        let logs = self.0.clone();
        move |module, level, msg| logs.lock().unwrap().push((module.into(), level, msg.into()))
    }

    pub fn all(&self) -> Vec<(String, i32, String)> {
        self.0.lock().unwrap().clone()
    }

    /// Messages only, in order.
    pub fn messages(&self) -> Vec<String> {
        self.all().into_iter().map(|(_, _, m)| m).collect()
    }

    /// The first entry whose message contains `needle`.
    pub fn find(&self, needle: &str) -> Option<(String, i32, String)> {
        self.all().into_iter().find(|(_, _, m)| m.contains(needle))
    }

    /// Index of the first message containing `needle`; panics with the whole log if none.
    pub fn position(&self, needle: &str) -> usize {
        let all = self.messages();
        all.iter()
            .position(|m| m.contains(needle))
            .unwrap_or_else(|| panic!("no log message contains {needle:?}; the log: {all:#?}"))
    }
}

/// Run `f` on its own thread and fail the test if it takes longer than `limit` (a hang in a
/// module or the loader must not hang the suite).
pub fn with_timeout<T: Send + 'static>(
    limit: Duration,
    f: impl FnOnce() -> T + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    let worker = std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    match rx.recv_timeout(limit) {
        Ok(value) => {
            worker.join().expect("test thread");
            value
        }
        Err(mpsc::RecvTimeoutError::Disconnected) => {
            // The body panicked: re-raise its panic (and its message) here.
            match worker.join() {
                Err(panic) => std::panic::resume_unwind(panic),
                Ok(()) => unreachable!("the body sent nothing yet returned"),
            }
        }
        Err(mpsc::RecvTimeoutError::Timeout) => panic!("test did not finish within {limit:?}"),
    }
}

/// Call `f(a, b)` under `handle`'s crash guard (`Handle::call` takes one argument; two go
/// through `call_raw` and a trampoline that owns nothing droppable).
pub fn call2(
    handle: &kmodlike::Handle,
    f: extern "C" fn(i32, i32) -> i32,
    a: i32,
    b: i32,
) -> kmodlike::Result<i32> {
    #[repr(C)]
    struct Ctx {
        f: extern "C" fn(i32, i32) -> i32,
        a: i32,
        b: i32,
        ret: i32,
    }
    unsafe extern "C" fn trampoline(ctx: *mut std::ffi::c_void) {
        // SAFETY: `call2` passes a pointer to its live `Ctx`.
        let ctx = unsafe { &mut *ctx.cast::<Ctx>() };
        ctx.ret = (ctx.f)(ctx.a, ctx.b);
    }
    let mut ctx = Ctx { f, a, b, ret: 0 };
    // SAFETY: the trampoline only reads and writes `ctx`, which outlives the call, and owns
    // nothing with a destructor.
    unsafe { handle.call_raw(trampoline, (&mut ctx as *mut Ctx).cast())? };
    Ok(ctx.ret)
}

/// The export `name` of `handle` as a function pointer of type `F`.
///
/// # Safety
/// `F` is the export's real signature (a function pointer type).
pub unsafe fn export<F: Copy>(handle: &kmodlike::Handle, name: &str) -> F {
    // SAFETY: forwarded: `F` is the export's signature.
    let symbol = unsafe { handle.symbol::<F>(name) }
        .unwrap_or_else(|e| panic!("export {name} of {}: {e}", handle.name()));
    symbol.get()
}

/// tests/hosts/c_host.c compiled against the C API headers and linked to libmodule.so.
pub fn c_host() -> PathBuf {
    let lib = libmodule_dir();
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/hosts/c_host.c");
    kmodlike_testsupport::build_program(
        "sdk_c_host",
        &[&src],
        &[&format!("-L{}", lib.display()), "-lmodule", &format!("-Wl,-rpath,{}", lib.display())],
    )
}

/// Run the C host on `module` with `actions`; its stdout lines and whether it exited 0.
pub fn run_c_host(module: &Path, actions: &[&str]) -> (Vec<String>, bool) {
    let out = run(Command::new(c_host()).arg(module).args(actions), Duration::from_secs(60));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.code().is_some(), "the C host died: {}\n{stdout}\n{stderr}", out.status);
    let mut lines: Vec<String> = stdout.lines().map(str::to_owned).collect();
    // Keep stderr in view for failure messages, after a marker no expected line matches.
    if !stderr.is_empty() {
        lines.push("--- stderr:".to_owned());
        lines.extend(stderr.lines().map(str::to_owned));
    }
    (lines, out.status.success())
}

/// Index of the line equal to `line` (or starting with it, when it ends in `*`); panics with
/// all `lines` when there is none.
pub fn line_index(lines: &[String], line: &str) -> usize {
    let found = match line.strip_suffix('*') {
        Some(prefix) => lines.iter().position(|l| l.starts_with(prefix)),
        None => lines.iter().position(|l| l == line),
    };
    found.unwrap_or_else(|| panic!("no line {line:?} in the output:\n{}", lines.join("\n")))
}
