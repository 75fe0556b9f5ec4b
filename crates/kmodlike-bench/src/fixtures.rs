//! The modules the benchmarks load, built from real C sources with the system compiler.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::SystemTime;

use kmodlike_testsupport::{build_module, build_module_at, include_dir, workspace_root};

/// `crates/kmodlike-bench/c/`.
pub fn c_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("c")
}

fn modified(path: &Path) -> Option<SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}

/// `out` exists and is at least as new as every input.
fn up_to_date(out: &Path, inputs: &[&Path]) -> bool {
    let Some(out_time) = modified(out) else { return false };
    inputs.iter().all(|i| modified(i).is_some_and(|t| t <= out_time))
}

/// The example module, `modules/hello/hello.c`: `build/modules/misc/hello.so` when `make mod`
/// built it from the current source, else built here (into `target/test-artifacts/`) with the
/// Makefile's flags.
pub fn hello_module() -> PathBuf {
    let root = workspace_root();
    let src = root.join("modules/hello/hello.c");
    let header = include_dir().join("module_interface.h");
    let made = root.join("build/modules/misc/hello.so");
    if up_to_date(&made, &[&src, &header]) {
        return made;
    }
    build_module("bench-hello.so", &[&src], &["-O2"])
}

/// `c/bench_module.c` built as `<name>.so`: a module with an empty `bench_empty` and a
/// faulting `bench_crash`. Separate names give separate objects (one per purpose, so a crash in
/// one does not change how another is loaded).
pub fn bench_module(name: &str) -> PathBuf {
    let src = c_dir().join("bench_module.c");
    build_module(&format!("{name}.so"), &[&src], &["-O2"])
}

/// Where the scale benchmark's modules go: `target/bench/modules/misc/`.
pub fn scale_dir() -> PathBuf {
    crate::bench_dir().join("modules/misc")
}

/// The name of scale module `i`: `m0000`, `m0001`, ...
pub fn scale_name(i: usize) -> String {
    format!("m{i:04}")
}

/// `count` distinct modules `m0000.so`... in [`scale_dir`], each `c/bench_module.c` compiled
/// with `-DNAME=mNNNN` (a distinct `.modinfo` description and one distinct symbol). Built once
/// and kept (rebuilt when the source or the interface header is newer), compiled `jobs` at a
/// time.
pub fn scale_modules(count: usize, jobs: usize) -> Vec<PathBuf> {
    let dir = scale_dir();
    std::fs::create_dir_all(&dir)
        .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
    let src = c_dir().join("bench_module.c");
    let header = include_dir().join("module_interface.h");
    let paths: Vec<PathBuf> =
        (0..count).map(|i| dir.join(format!("{}.so", scale_name(i)))).collect();
    let todo: Vec<usize> =
        (0..count).filter(|&i| !up_to_date(&paths[i], &[&src, &header])).collect();
    if !todo.is_empty() {
        eprintln!(
            "kmodlike-bench: compiling {} scale modules into {} ({jobs} at a time; kept for \
             later runs)",
            todo.len(),
            dir.display()
        );
    }
    let next = AtomicUsize::new(0);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1) {
            s.spawn(|| loop {
                let k = next.fetch_add(1, Ordering::Relaxed);
                let Some(&i) = todo.get(k) else { break };
                compile_scale_module(&src, &scale_name(i), &paths[i]);
            });
        }
    });
    paths
}

fn compile_scale_module(src: &Path, name: &str, out: &Path) {
    build_module_at(out, &[src], &[&format!("-DNAME={name}")]);
}

/// The probe helper for [`kmodlike::LoaderBuilder::probe_helper`]: `$KMODLIKE_PROBE` when set,
/// else this crate's `kmodlike-bench-probe` (`kmodlike-probe`'s own source file,
/// built by the same cargo invocation as the benches), else `target/release/kmodlike-probe`.
pub fn probe_helper(bench_bin: Option<&str>) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("KMODLIKE_PROBE") {
        return Some(PathBuf::from(p));
    }
    if let Some(p) = bench_bin.map(PathBuf::from).filter(|p| p.is_file()) {
        return Some(p);
    }
    let release = crate::target_dir().join("release/kmodlike-probe");
    release.is_file().then_some(release)
}

/// The workspace root, for messages.
pub fn root() -> PathBuf {
    workspace_root()
}
