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

/// The shared object of the cdylib example `name` (a test module in `tests/modules/`), built
/// by `cargo test` before the tests run; built here if it is missing (a filtered build).
pub fn example_module(name: &str) -> PathBuf {
    let so = profile_dir().join("examples").join(format!("lib{name}.so"));
    if !so.exists() {
        let mut cargo = Command::new(env!("CARGO"));
        cargo.args(["build", "-p", "kmodlike-module", "--example", name]);
        if profile_dir().file_name().is_some_and(|p| p == "release") {
            cargo.arg("--release");
        }
        let status = cargo.status().expect("run cargo to build a test module");
        assert!(status.success(), "cargo build --example {name} failed");
    }
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
