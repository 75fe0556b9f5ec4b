//! Shared by the C API's integration tests: an installed copy of libmodule and its headers,
//! C hosts compiled against it, and running them with a timeout.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

pub use kmodlike_testsupport as support;

/// The freshly built `libmodule.so`. Cargo builds the cdylib into `target/<profile>/deps/`, next
/// to the test binaries; it copies it up to `target/<profile>/` only when the library itself is
/// a build target, so the copy up there may be stale during `cargo test`.
pub fn cdylib() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let deps = exe.parent().expect("target/<profile>/deps");
    let lib = deps.join("libmodule.so");
    assert!(lib.is_file(), "{} is missing: cargo should have built the cdylib", lib.display());
    lib
}

/// `tests/c/` at the workspace root: the C hosts.
pub fn c_dir() -> PathBuf {
    support::workspace_root().join("tests/c")
}

/// A `make install PREFIX=...` layout reproduced from the freshly built cdylib and the
/// committed headers: `lib/libmodule.so.1`, the `lib/libmodule.so` link, and
/// `include/kmodlike/{module_loader,module_interface}.h`. Removed when dropped.
pub struct Prefix {
    path: PathBuf,
    /// Set when the prefix is this test's own, removed on drop.
    _owned: Option<tempfile::TempDir>,
}

impl Prefix {
    /// Lay out a prefix like `make install` does (the library is hard-linked when possible:
    /// it is large in debug builds).
    pub fn install() -> Prefix {
        let dir = tempfile::Builder::new()
            .prefix("capi-prefix-")
            .tempdir_in(support::artifacts_dir())
            .expect("tempdir");
        let lib = dir.path().join("lib");
        let inc = dir.path().join("include/kmodlike");
        std::fs::create_dir_all(&lib).unwrap();
        std::fs::create_dir_all(&inc).unwrap();
        let so1 = lib.join("libmodule.so.1");
        if std::fs::hard_link(cdylib(), &so1).is_err() {
            std::fs::copy(cdylib(), &so1).expect("copy libmodule.so");
        }
        std::os::unix::fs::symlink("libmodule.so.1", lib.join("libmodule.so")).unwrap();
        for h in ["module_loader.h", "module_interface.h"] {
            std::fs::copy(support::include_dir().join(h), inc.join(h)).expect("copy header");
        }
        Prefix { path: dir.path().to_owned(), _owned: Some(dir) }
    }

    /// A prefix filled by a real `make install`, removed on drop when `owned` is given.
    pub fn existing(path: PathBuf, owned: Option<tempfile::TempDir>) -> Prefix {
        Prefix { path, _owned: owned }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn lib_dir(&self) -> PathBuf {
        self.path().join("lib")
    }

    pub fn include_dir(&self) -> PathBuf {
        self.path().join("include/kmodlike")
    }

    /// Compile a C host from `sources` against the installed headers, linked with `-lmodule`
    /// from the installed library. Compiler warnings fail the test.
    pub fn compile_host(&self, name: &str, sources: &[&Path], extra: &[&str]) -> PathBuf {
        let out = self.path().join(name);
        let output = Command::new(support::cc())
            .args(["-std=c11", "-D_POSIX_C_SOURCE=200809L", "-O1", "-g", "-Wall", "-Wextra"])
            .arg(format!("-I{}", self.include_dir().display()))
            .args(extra)
            .args(sources)
            .arg("-o")
            .arg(&out)
            .arg(format!("-L{}", self.lib_dir().display()))
            .arg("-lmodule")
            .output()
            .expect("run the C compiler");
        check_compiled(name, &output);
        out
    }

    /// Compile a module from `sources` against the installed `module_interface.h`.
    pub fn compile_module(&self, name: &str, sources: &[&Path]) -> PathBuf {
        let out = self.path().join(name);
        let output = Command::new(support::cc())
            .args(["-shared", "-fPIC", "-O1", "-g", "-Wall", "-Wextra", "-Wl,-z,noexecstack"])
            .arg(format!("-I{}", self.include_dir().display()))
            .args(sources)
            .arg("-o")
            .arg(&out)
            .output()
            .expect("run the C compiler");
        check_compiled(name, &output);
        out
    }

    /// Run a host with the installed library on `LD_LIBRARY_PATH`, killed after `timeout`.
    pub fn run(&self, exe: &Path, args: &[&str], cwd: Option<&Path>, timeout: Duration) -> Run {
        self.run_env(exe, args, cwd, &[], timeout)
    }

    /// [`Prefix::run`] with extra environment variables.
    pub fn run_env(
        &self,
        exe: &Path,
        args: &[&str],
        cwd: Option<&Path>,
        env: &[(&str, &Path)],
        timeout: Duration,
    ) -> Run {
        let mut cmd = Command::new(exe);
        cmd.args(args).env("LD_LIBRARY_PATH", self.lib_dir());
        for (k, v) in env {
            cmd.env(k, v);
        }
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        run_with_timeout(cmd, timeout)
    }
}

/// The probe helper binary (`kmodlike-probe`), built by cargo when this test binary's build did
/// not build it.
pub fn probe_helper() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let helper = exe.parent().and_then(Path::parent).unwrap().join("kmodlike-probe");
    if !helper.is_file() {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
        let status = Command::new(cargo)
            .args(["build", "-p", "kmodlike", "--bin", "kmodlike-probe"])
            .status()
            .expect("run cargo build for kmodlike-probe");
        assert!(status.success(), "building kmodlike-probe failed");
    }
    assert!(helper.is_file(), "{} is missing", helper.display());
    helper
}

/// What a host printed and how it ended.
#[derive(Debug)]
pub struct Run {
    pub stdout: String,
    pub stderr: String,
    pub output: Output,
}

impl Run {
    /// The value of the first `key=value` line on stdout.
    pub fn value(&self, key: &str) -> &str {
        let prefix = format!("{key}=");
        self.stdout
            .lines()
            .find_map(|l| l.strip_prefix(&prefix))
            .unwrap_or_else(|| panic!("no {key}= line in the output:\n{self}"))
    }

    /// The value of the first `key=value` line with its continuation lines (those that start
    /// with whitespace, as a multi-line crash report's do), joined with newlines.
    pub fn block(&self, key: &str) -> String {
        let prefix = format!("{key}=");
        let mut lines = self.stdout.lines().skip_while(|l| !l.starts_with(&prefix));
        let first = lines.next().unwrap_or_else(|| panic!("no {key}= line in the output:\n{self}"));
        let mut out = first[prefix.len()..].to_owned();
        for l in lines.take_while(|l| l.starts_with([' ', '\t'])) {
            out.push('\n');
            out.push_str(l);
        }
        out
    }

    /// Assert that the process exited with status 0.
    pub fn assert_ok(&self) -> &Self {
        assert!(self.output.status.success(), "the host failed: {:?}\n{self}", self.output.status);
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "--- stdout ---\n{}--- stderr ---\n{}", self.stdout, self.stderr)
    }
}

/// Run `cmd`, capturing its output; kill it and fail the test if it runs longer than `timeout`.
pub fn run_with_timeout(mut cmd: Command, timeout: Duration) -> Run {
    let desc = format!("{cmd:?}");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {desc}: {e}"));
    // Drain the pipes on threads so a chatty child cannot block on a full pipe.
    let mut out_pipe = child.stdout.take().unwrap();
    let mut err_pipe = child.stderr.take().unwrap();
    let out_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut out_pipe, &mut s).ok();
        s
    });
    let err_t = std::thread::spawn(move || {
        let mut s = Vec::new();
        std::io::Read::read_to_end(&mut err_pipe, &mut s).ok();
        s
    });
    let deadline = Instant::now() + timeout;
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the host") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let stdout = String::from_utf8_lossy(&out_t.join().unwrap()).into_owned();
            panic!("{desc} did not finish within {timeout:?}; it printed:\n{stdout}");
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let stdout = out_t.join().unwrap();
    let stderr = err_t.join().unwrap();
    Run {
        stdout: String::from_utf8_lossy(&stdout).into_owned(),
        stderr: String::from_utf8_lossy(&stderr).into_owned(),
        output: Output { status, stdout, stderr },
    }
}

/// A compile must succeed without a single warning: the headers are meant to be clean.
fn check_compiled(name: &str, output: &std::process::Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "compiling {name} failed:\n{stderr}");
    assert!(stderr.trim().is_empty(), "compiling {name} gave warnings:\n{stderr}");
}
