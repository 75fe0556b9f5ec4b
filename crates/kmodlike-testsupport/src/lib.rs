//! Test support shared by the workspace's integration tests: build real C modules and hosts
//! with the system C compiler, against the project's real headers.
//!
//! Outputs go to `target/test-artifacts/`, keyed by source and flags, so each is built once per
//! test run even when many test binaries ask for it concurrently.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The workspace root.
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().expect("workspace root")
}

/// The directory holding `module_interface.h` and `module_loader.h`.
pub fn include_dir() -> PathBuf {
    workspace_root().join("crates/kmodlike-capi/include")
}

/// `tests/modules/` at the workspace root: C sources of test modules.
pub fn test_modules_dir() -> PathBuf {
    workspace_root().join("tests/modules")
}

/// Where built test artefacts go.
pub fn artifacts_dir() -> PathBuf {
    let dir = workspace_root().join("target/test-artifacts");
    std::fs::create_dir_all(&dir).expect("create target/test-artifacts");
    dir
}

/// The C compiler: `$CC` or `cc`.
pub fn cc() -> String {
    std::env::var("CC").unwrap_or_else(|_| "cc".to_owned())
}

/// Compile C `sources` into a shared object `out_name` (e.g. `"crash_segv.so"`) with extra
/// `flags` (e.g. `["-DSIG=11"]`), and return its path. Rebuilt when it is missing or older
/// than a source. Builds into a temporary name and renames, so concurrent tests never see a
/// half-written file.
pub fn build_module(out_name: &str, sources: &[&Path], flags: &[&str]) -> PathBuf {
    build_module_at(&artifacts_dir().join(out_name), sources, flags)
}

/// [`build_module`] into the file `out` (its directory must exist).
pub fn build_module_at(out: &Path, sources: &[&Path], flags: &[&str]) -> PathBuf {
    let mut args: Vec<String> = vec![
        "-shared".into(),
        "-fPIC".into(),
        "-O1".into(),
        "-g".into(),
        "-Wall".into(),
        "-Wl,-z,noexecstack".into(),
        format!("-I{}", include_dir().display()),
        format!("-I{}", test_modules_dir().display()),
        // The same bytes wherever the checkout lives (the debug information names the sources
        // relative to the workspace): tests that mutate a module's bytes see the same file in
        // every clone.
        format!("-ffile-prefix-map={}=.", workspace_root().display()),
    ];
    args.extend(flags.iter().map(|s| s.to_string()));
    compile(out, sources, &args)
}

/// Compile C `sources` into an executable `out_name` with extra `flags` (placed after the
/// sources, so libraries such as `-lmodule` link).
pub fn build_program(out_name: &str, sources: &[&Path], flags: &[&str]) -> PathBuf {
    let mut args: Vec<String> =
        vec!["-O1".into(), "-g".into(), "-Wall".into(), format!("-I{}", include_dir().display())];
    args.extend(flags.iter().map(|s| s.to_string()));
    compile(&artifacts_dir().join(out_name), sources, &args)
}

fn compile(out: &Path, sources: &[&Path], args: &[String]) -> PathBuf {
    let out = out.to_path_buf();
    let out_name = out.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
    let headers =
        [include_dir().join("module_interface.h"), test_modules_dir().join("real_fault.h")];
    let newest_input = sources
        .iter()
        .copied()
        .chain(headers.iter().map(PathBuf::as_path))
        .filter_map(|s| std::fs::metadata(s).and_then(|m| m.modified()).ok())
        .max();
    if let (Ok(meta), Some(newest)) = (std::fs::metadata(&out), newest_input) {
        if meta.modified().map(|m| m >= newest).unwrap_or(false) {
            return out;
        }
    }
    static SEQ: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = out.with_file_name(format!(".{out_name}.{}.{seq}.tmp", std::process::id()));
    let output = Command::new(cc())
        .args(sources)
        .args(args)
        .arg("-o")
        .arg(&tmp)
        .output()
        .unwrap_or_else(|e| panic!("cannot run the C compiler {}: {e}", cc()));
    assert!(
        output.status.success(),
        "compiling {out_name} from {sources:?} failed:\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    std::fs::rename(&tmp, &out).expect("rename built artefact");
    out
}

/// Build `tests/modules/<stem>.c` into `<out_stem>.so` with `flags`.
pub fn test_module(stem: &str, out_stem: &str, flags: &[&str]) -> PathBuf {
    let src = test_modules_dir().join(format!("{stem}.c"));
    build_module(&format!("{out_stem}.so"), &[&src], flags)
}

/// Number of open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map(|d| d.count()).unwrap_or(0)
}

/// Resident set size of this process, in bytes.
pub fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// Whether this process runs as root (tests that drop privileges skip otherwise).
pub fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .and_then(|l| l.split_whitespace().nth(2).map(|u| u == "0"))
        })
        .unwrap_or(false)
}

/// Run the calling test alone in a fresh process (this test binary re-executed with
/// `--exact <name>`), so process-wide figures (resident memory, descriptors) are its own even
/// when the harness runs tests on parallel threads. Returns `true` in the child, where the
/// test body should run; in the parent it waits (up to `timeout`), asserts that the child
/// passed, echoes its output, and returns `false`.
pub fn in_own_process(test_name: &str, timeout: std::time::Duration) -> bool {
    const CHILD: &str = "KMODLIKE_TEST_CHILD";
    if std::env::var_os(CHILD).is_some() {
        return true;
    }
    let mut child = Command::new(std::env::current_exe().expect("test binary"))
        .args([test_name, "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD, "1")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("re-run the test binary");
    // Read both pipes while the child runs: a child that writes more than a pipe holds would
    // otherwise block on its write and never finish.
    let drain = |mut r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            let _ = r.read_to_end(&mut buf);
            buf
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("child stdout")));
    let err = drain(Box::new(child.stderr.take().expect("child stderr")));
    let deadline = std::time::Instant::now() + timeout;
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the test child") {
            break s;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let tail = err.join().unwrap_or_default();
            let tail = &tail[tail.len().saturating_sub(4096)..];
            panic!(
                "{test_name} did not finish within {timeout:?}; the end of its stderr:\n{}",
                String::from_utf8_lossy(tail)
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    print!("{}", String::from_utf8_lossy(&out.join().unwrap_or_default()));
    eprint!("{}", String::from_utf8_lossy(&err.join().unwrap_or_default()));
    assert!(status.success(), "{test_name} failed in its own process: {status}");
    false
}

/// Run `f` on another thread and wait for it: a test of something that must not block fails
/// (naming `what`) instead of hanging when it does. The 60 s are a safety net, never a
/// measurement.
pub fn within<T: Send + 'static>(what: &str, f: impl FnOnce() -> T + Send + 'static) -> T {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(f());
    });
    rx.recv_timeout(std::time::Duration::from_secs(60)).unwrap_or_else(|_| panic!("{what} blocked"))
}

/// Make a FIFO (named pipe) at `path`: a file a loader must refuse without blocking, or a gate a
/// test module waits on.
pub fn mkfifo(path: &Path) {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).expect("a path without NUL");
    // SAFETY: a valid NUL-terminated path; mkfifo only creates the node.
    let rc = unsafe { libc::mkfifo(c.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}: {}", path.display(), std::io::Error::last_os_error());
}

mod signing;
pub use signing::SigningKey;

/// The signature file of `module`: `module.minisig`.
pub fn signature_file(module: &Path) -> PathBuf {
    let mut p = module.as_os_str().to_owned();
    p.push(".minisig");
    PathBuf::from(p)
}

/// A copy of the file `src` as `dir/<name>` with `mode`: a module a test can sign, tamper with
/// or expose without touching the shared build artefact.
pub fn copy_module(src: &Path, dir: &Path, name: &str, mode: u32) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let dst = dir.join(name);
    std::fs::copy(src, &dst).expect("copy the module");
    std::fs::set_permissions(&dst, std::fs::Permissions::from_mode(mode)).expect("chmod");
    dst
}
