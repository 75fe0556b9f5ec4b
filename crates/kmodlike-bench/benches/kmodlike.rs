//! kmodlike against the baselines a user would otherwise use, measured side by side in one run.
//!
//! `make bench` (or `cargo bench -p kmodlike-bench`) runs every group below, then prints one
//! summary table (figure, ours, baseline, ratio, target, met?) and writes it to
//! `target/bench/summary.json`. Figures are criterion medians; every target is a ratio of two
//! figures measured in the same run, so they hold on a busy machine. A filter argument
//! (`cargo bench -p kmodlike-bench -- guarded_call`) runs only the matching benchmarks; the
//! table then shows the others as "not run".
//!
//! Groups (criterion ids):
//! - `load_cycle/{libloading,kmodlike,kmodlike_probe}`: open, validate, init, fini, unload of
//!   the example module, against `dlopen` + three `dlsym` + `dlclose` of the same file;
//! - `guarded_call/{direct,kmodlike_call0,naive_sigsetjmp}`: an empty module function;
//! - `deadline/{call0,call0_with_deadline}`: the same with a call time limit set, against
//!   without; and (not criterion) the watchdog's detection latency over 1,000 timed-out calls;
//! - `crash/{clean_cycle,crash_and_reload,crash_to_error,signal_path,raise_usr1}`;
//! - `symbol/{kmodlike_cached,dlsym}`;
//! - `scale/{kmodlike_load,libloading_load,list}/{1,100,1000}`: with N modules loaded;
//! - `daemon/{ping,raw_echo}/{1,8}`: round trips with 1 and 8 concurrent clients;
//! - `trust/{verify_1mib,load_cycle_enforce}`: a minisign signature checked over 1 MiB, and
//!   the load cycle of a signed module under the enforce policy;
//! - memory (not criterion): the daemon's resident size idle, and after 10,000 load/unload
//!   cycles.

use std::ffi::{c_void, OsStr};
use std::hint::black_box;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use criterion::{BenchmarkId, Criterion};
use kmodlike::{CallOptions, CrashPolicy, Error, Handle, Loader};
use kmodlike_bench::baselines::{self, GuardShim};
use kmodlike_bench::daemon::{self, DaemonProcess, InProcessDaemon, PING};
use kmodlike_bench::echo::{ConcurrentClients, EchoServer, RawClient};
use kmodlike_bench::fixtures;
use kmodlike_bench::paired::{paired, Side};
use kmodlike_bench::summary::{self, Estimates, Figure, Target, Unit};
use libloading::os::unix::{Library, RTLD_LOCAL, RTLD_NOW};

const MIB: f64 = 1024.0 * 1024.0;

/// The three interface exports the raw baseline looks up, as the loader's validation does.
const INTERFACE: [&[u8]; 3] =
    [b"module_get_interface_version\0", b"module_init\0", b"module_fini\0"];

/// How this run was invoked.
struct Run {
    /// A measuring run: `cargo bench` passes `--bench`. Without it (`cargo test --benches`), or
    /// with `--test`, criterion runs each benchmark once as a smoke test: this run then uses
    /// small sizes. Only a measuring run (not `--list`, not `--profile-time`) writes the summary.
    bench_mode: bool,
    /// The benchmark filter, when one was given.
    filter: Option<String>,
    /// Module counts of the scale group.
    scale: Vec<usize>,
    /// Load/unload cycles of the memory figure.
    memory_cycles: usize,
    /// A private directory for sockets.
    tmp: PathBuf,
    /// `--list`: criterion only lists the benchmarks.
    listing: bool,
}

impl Run {
    fn from_args() -> Run {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let has = |flag: &str| args.iter().any(|a| a == flag);
        // `--test` (run each once) and `--list` make criterion measure nothing; `--profile-time`
        // measures without analysis (no estimates, so no table).
        let measuring = !has("--test") && !has("--list") && !has("--profile-time");
        // Full sizes whenever cargo bench runs this (profiling included), small ones for a test.
        let full = has("--bench") && !has("--test");
        let bench_mode = full && measuring;
        let listing = has("--list");
        // Criterion's options that take a value, so their values are not taken for a filter.
        const WITH_VALUE: [&str; 19] = [
            "-c",
            "--color",
            "-s",
            "--save-baseline",
            "-b",
            "--baseline",
            "--baseline-lenient",
            "--load-baseline",
            "--format",
            "--profile-time",
            "--sample-size",
            "--warm-up-time",
            "--measurement-time",
            "--nresamples",
            "--noise-threshold",
            "--confidence-level",
            "--significance-level",
            "--plotting-backend",
            "--output-format",
        ];
        let mut filter = None;
        let mut i = 0;
        while i < args.len() {
            let a = &args[i];
            if WITH_VALUE.contains(&a.as_str()) && !a.contains('=') {
                i += 2;
                continue;
            }
            if !a.starts_with('-') && filter.is_none() {
                filter = Some(a.clone());
            }
            i += 1;
        }
        let tmp = std::env::temp_dir().join(format!("kmodlike-bench-{}", std::process::id()));
        std::fs::create_dir_all(&tmp).expect("create the benchmark's temporary directory");
        Run {
            bench_mode,
            filter,
            scale: if full { vec![1, 100, 1000] } else { vec![1, 3] },
            memory_cycles: if full { 10_000 } else { 100 },
            tmp,
            listing,
        }
    }

    /// Whether any of `ids` can match the filter (substring tests of its `|` alternatives;
    /// criterion's own regex decides what actually runs, this only skips set-up).
    fn wants(&self, ids: &[&str]) -> bool {
        match &self.filter {
            None => true,
            Some(f) => f.split('|').any(|alt| {
                let alt = alt.trim_matches(|c| c == '^' || c == '$' || c == '(' || c == ')');
                ids.iter().any(|id| id.contains(alt) || alt.contains(id))
            }),
        }
    }
}

impl Drop for Run {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.tmp);
    }
}

/// A loader that searches nowhere by name: every bench opens modules by path.
fn plain_loader() -> Loader {
    Loader::builder().module_path(Vec::new()).build()
}

/// `dlopen` with the loader's own flags, three `dlsym`, `dlclose`: what a host does without
/// kmodlike.
fn raw_load_cycle(path: &Path) {
    // SAFETY: a real module of ours; its constructors are the compiler's defaults.
    let lib = unsafe { Library::open(Some(path), RTLD_NOW | RTLD_LOCAL) }.expect("dlopen");
    for name in INTERFACE {
        // SAFETY: only the address is read.
        let sym = unsafe { lib.get::<*mut c_void>(name) }.expect("dlsym");
        black_box(sym.into_raw());
    }
    lib.close().expect("dlclose");
}

/// Open one of the bench's fixtures: modules this crate builds from its own C sources (the
/// hello module and the `bench_*` modules of build.rs), and nothing else.
fn open(loader: &Loader, path: &Path) -> Handle {
    // SAFETY: `path` is always a fixture module of this workspace, built for the interface;
    // its constructors and `module_init` are known and harmless.
    unsafe { loader.open(&path.to_string_lossy()) }
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn close(h: Handle) {
    h.close().unwrap_or_else(|e| panic!("close: {e}"));
}

fn void_fn(h: &Handle, name: &str) -> extern "C" fn() {
    let p = h.symbol_ptr(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    // SAFETY: the bench module defines `name` as `void name(void)`.
    unsafe { std::mem::transmute::<*mut c_void, extern "C" fn()>(p) }
}

fn int_fn(h: &Handle, name: &str) -> extern "C" fn() -> i32 {
    let p = h.symbol_ptr(name).unwrap_or_else(|e| panic!("{name}: {e}"));
    // SAFETY: the bench module defines `name` as `int name(void)`.
    unsafe { std::mem::transmute::<*mut c_void, extern "C" fn() -> i32>(p) }
}

// ---------------------------------------------------------------------------------------------
// 1. Load cycle
// ---------------------------------------------------------------------------------------------

fn load_cycle(c: &mut Criterion, run: &Run) {
    if !run.wants(&["load_cycle/libloading", "load_cycle/kmodlike", "load_cycle/kmodlike_probe"]) {
        return;
    }
    let hello = fixtures::hello_module();
    let loader = plain_loader();
    let mut g = c.benchmark_group("load_cycle");
    let ours = |n: u64| (0..n).for_each(|_| close(open(&loader, &hello)));
    let raw = |n: u64| (0..n).for_each(|_| raw_load_cycle(&hello));
    g.bench_function("libloading", |b| b.iter_custom(|n| paired(n, 1, Side::Baseline, ours, raw)));
    g.bench_function("kmodlike", |b| b.iter_custom(|n| paired(n, 1, Side::Ours, ours, raw)));
    match fixtures::probe_helper(option_env!("CARGO_BIN_EXE_kmodlike-bench-probe")) {
        Some(helper) => {
            let probing =
                Loader::builder().module_path(Vec::new()).probe(true).probe_helper(helper).build();
            g.sample_size(10).measurement_time(Duration::from_secs(3));
            g.bench_function("kmodlike_probe", |b| b.iter(|| close(open(&probing, &hello))));
        }
        None => eprintln!(
            "kmodlike-bench: no probe helper (build kmodlike-bench-probe, or set KMODLIKE_PROBE): \
             load_cycle/kmodlike_probe skipped"
        ),
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 2. Guarded call
// ---------------------------------------------------------------------------------------------

fn guarded_call(c: &mut Criterion, run: &Run) {
    if !run.wants(&[
        "guarded_call/direct",
        "guarded_call/kmodlike_call0",
        "guarded_call/c_direct",
        "guarded_call/module_loader_call",
        "guarded_call/naive_sigsetjmp",
        "guarded_call/sigsetjmp_fallback",
    ]) {
        return;
    }
    // Calls alternate with their baseline in chunks (paired): one burst of load on this shared
    // machine hits both sides of a ratio alike.
    const CHUNK: u64 = 2_000;
    let module = fixtures::bench_module("bench_call");
    let loader = plain_loader();
    let h = open(&loader, &module);
    let empty = void_fn(&h, "bench_empty");
    // SAFETY: `empty` is the bench module's own `bench_empty`, C code that owns nothing.
    unsafe { h.call0(empty) }.expect("call0"); // this thread now has its guard record
    let rust_direct = |n: u64| (0..n).for_each(|_| black_box(empty)());
    let call0 = |n: u64| {
        for _ in 0..n {
            // SAFETY: as above.
            unsafe { h.call0(black_box(empty)) }.expect("call0");
        }
    };
    let mut g = c.benchmark_group("guarded_call");
    g.bench_function("direct", |b| {
        b.iter_custom(|n| paired(n, CHUNK, Side::Baseline, call0, rust_direct))
    });
    g.bench_function("kmodlike_call0", |b| {
        b.iter_custom(|n| paired(n, CHUNK, Side::Ours, call0, rust_direct))
    });

    // A C host: module_loader_call() on the C API's loader, against a call through a pointer,
    // both from C loops.
    let c_loader = CLoader::new(&module);
    // SAFETY: `void bench_empty(void)` called as `void (*)(void *)`: the argument is ignored
    // under the C calling convention.
    let c_empty: unsafe extern "C" fn(*mut c_void) = unsafe { std::mem::transmute(empty) };
    // SAFETY: c_empty owns nothing; module_loader_call is the C API's entry, called on a live
    // loader holding the module.
    let c_direct = |n: u64| unsafe { baselines::c_direct_loop(c_empty, std::ptr::null_mut(), n) };
    let c_guarded = |n: u64| {
        // SAFETY: as above.
        let bad = unsafe {
            baselines::c_guarded_loop(
                c_loader.entry(),
                c_loader.raw(),
                c_empty,
                std::ptr::null_mut(),
                n,
            )
        };
        assert_eq!(bad, 0, "module_loader_call failed");
    };
    g.bench_function("c_direct", |b| {
        b.iter_custom(|n| paired(n, CHUNK, Side::Baseline, c_guarded, c_direct))
    });
    g.bench_function("module_loader_call", |b| {
        b.iter_custom(|n| paired(n, CHUNK, Side::Ours, c_guarded, c_direct))
    });

    let naive =
        |n: u64| (0..n).for_each(|_| assert!(baselines::naive_guard_call(black_box(empty))));
    g.bench_function("naive_sigsetjmp", |b| {
        b.iter_custom(|n| paired(n, 200, Side::Baseline, call0, naive))
    });
    // The per-call sigsetjmp entry the guard falls back to where its fast entry is off.
    let mut shim = GuardShim::new();
    g.bench_function("sigsetjmp_fallback", |b| b.iter(|| assert!(shim.call(black_box(empty)))));
    g.finish();
    drop(c_loader);
    close(h);
}

/// A guarded call with a deadline set (`Handle::call0_with`, a limit that never expires)
/// against the same call without one, paired.
fn deadline(c: &mut Criterion, run: &Run) {
    if !run.wants(&["deadline/call0", "deadline/call0_with_deadline"]) {
        return;
    }
    const CHUNK: u64 = 2_000;
    let module = fixtures::bench_module("bench_call");
    let loader = plain_loader();
    let h = open(&loader, &module);
    let empty = void_fn(&h, "bench_empty");
    let opts = CallOptions::default().with_timeout(Duration::from_secs(3600));
    // SAFETY: `empty` is the bench module's own `bench_empty`, C code that owns nothing.
    unsafe { h.call0_with(&opts, empty) }.expect("call0_with"); // the watchdog runs now
    let plain = |n: u64| {
        for _ in 0..n {
            // SAFETY: as above.
            unsafe { h.call0(black_box(empty)) }.expect("call0");
        }
    };
    let with_deadline = |n: u64| {
        for _ in 0..n {
            // SAFETY: as above.
            unsafe { h.call0_with(black_box(&opts), black_box(empty)) }.expect("call0_with");
        }
    };
    let mut g = c.benchmark_group("deadline");
    g.bench_function("call0", |b| {
        b.iter_custom(|n| paired(n, CHUNK, Side::Baseline, with_deadline, plain))
    });
    g.bench_function("call0_with_deadline", |b| {
        b.iter_custom(|n| paired(n, CHUNK, Side::Ours, with_deadline, plain))
    });
    g.finish();
    close(h);
}

/// The watchdog's detection latency (not criterion): 1,000 calls (10 outside a measuring
/// run) with a 1 ms limit, each interrupted.
fn deadline_latency(run: &Run) -> Option<kmodlike_bench::deadline::Latency> {
    if !run.wants(&["deadline/latency"]) || run.listing {
        return None;
    }
    let calls = if run.bench_mode { 1_000 } else { 10 };
    let module = fixtures::bench_module("bench_call");
    let l = kmodlike_bench::deadline::detection_latency(&module, calls, Duration::from_millis(1));
    println!(
        "deadline/latency: {} timed-out calls, interrupted past the deadline by median {:?}, \
         max {:?}",
        l.calls, l.median, l.max
    );
    Some(l)
}

/// The C API's loader with one module loaded, for `module_loader_call`.
struct CLoader(*mut kmodlike_capi::module_loader_t);

impl CLoader {
    fn new(module: &Path) -> CLoader {
        let path = std::ffi::CString::new(module.as_os_str().as_encoded_bytes()).unwrap();
        let l = kmodlike_capi::module_loader_create();
        assert!(!l.is_null());
        // SAFETY: a fresh loader; a NUL-terminated path of the bench module; no init args.
        let rc = unsafe { kmodlike_capi::module_loader_load(l, path.as_ptr(), std::ptr::null()) };
        assert_eq!(rc as i32, 0, "module_loader_load of {}", module.display());
        CLoader(l)
    }

    fn raw(&self) -> *mut c_void {
        self.0.cast()
    }

    fn entry(&self) -> baselines::CEntry {
        // SAFETY: the same function with its first parameter as `void *` (the C header's view).
        unsafe {
            std::mem::transmute::<
                unsafe extern "C" fn(
                    *mut kmodlike_capi::module_loader_t,
                    kmodlike_capi::module_call_fn_t,
                    *mut c_void,
                ) -> kmodlike_capi::module_error_t,
                baselines::CEntry,
            >(kmodlike_capi::module_loader_call)
        }
    }
}

impl Drop for CLoader {
    fn drop(&mut self) {
        // SAFETY: our loader, destroyed once (it unloads its module).
        unsafe { kmodlike_capi::module_loader_destroy(self.0) };
    }
}

// ---------------------------------------------------------------------------------------------
// 3. Crash and recover
// ---------------------------------------------------------------------------------------------

fn crash(c: &mut Criterion, run: &Run) {
    if !run.wants(&[
        "crash/clean_cycle",
        "crash/crash_and_reload",
        "crash/crash_to_error",
        "crash/signal_path",
        "crash/raise_usr1",
    ]) {
        return;
    }
    // Its own file: once it has crashed, every later load of it maps a fresh private image (a
    // sealed memfd).
    let module = fixtures::bench_module("bench_crash");
    let clean = fixtures::bench_module("bench_clean");
    // Reclaim: the module starts no threads, so its code is unmapped after each crash instead
    // of staying mapped for good (thousands of crashes would otherwise keep thousands of
    // private images mapped, and slow every later dlopen).
    let loader =
        Loader::builder().module_path(Vec::new()).crash_policy(CrashPolicy::Reclaim).build();
    let mut g = c.benchmark_group("crash");

    // One load cycle with a call that returns, on a file that never crashes: the reference for
    // the recovery. And the same cycle with a call that raises SIGSEGV: back to the error
    // return, module gone, loaded again by the next iteration (from a private image, a sealed
    // memfd: the crashed instance may never be handed out again). Paired.
    let clean_cycle = |n: u64| {
        for _ in 0..n {
            let h = open(&loader, &clean);
            // SAFETY: the bench module's own `bench_empty`, C code that owns nothing.
            unsafe { h.call0(void_fn(&h, "bench_empty")) }.expect("call0");
            close(h);
        }
    };
    let crash_cycle = |n: u64| {
        for _ in 0..n {
            let h = open(&loader, &module);
            // SAFETY: the bench module's own `bench_crash`, C code that owns nothing: its
            // SIGSEGV skips only its own frame.
            match unsafe { h.call0(int_fn(&h, "bench_crash")) } {
                Err(Error::Crashed(report)) => assert_eq!(report.signal, libc::SIGSEGV),
                other => panic!("bench_crash did not crash: {other:?}"),
            }
            drop(h);
        }
    };
    g.bench_function("clean_cycle", |b| {
        b.iter_custom(|n| paired(n, 1, Side::Baseline, crash_cycle, clean_cycle))
    });
    g.bench_function("crash_and_reload", |b| {
        b.iter_custom(|n| paired(n, 1, Side::Ours, crash_cycle, clean_cycle))
    });

    // Through the public API, only the crashing call timed: signal, handler, jump, crash
    // report, logical unload (and unmapping, under Reclaim).
    g.bench_function("crash_to_error", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let h = open(&loader, &module);
                let f = int_fn(&h, "bench_crash");
                let start = Instant::now();
                // SAFETY: the bench module's own `bench_crash`, C code that owns nothing.
                let r = unsafe { h.call0(f) };
                total += start.elapsed();
                assert!(matches!(r, Err(Error::Crashed(_))), "bench_crash did not crash");
                drop(h);
            }
            total
        })
    });

    // The signal path alone, in the guard's shim: fault, handler, siglongjmp, "crashed";
    // paired with a bare raise(SIGUSR1) round trip.
    {
        // A guarded call through a handle first: this thread gets its alternate signal stack.
        let warm = open(&loader, &clean);
        // SAFETY: the bench module's own `bench_empty`, C code that owns nothing.
        unsafe { warm.call0(void_fn(&warm, "bench_empty")) }.expect("call0");
        close(warm);
        baselines::install_usr1_handler().expect("install the SIGUSR1 handler");
        let mut shim = GuardShim::new();
        let mut fault = |n: u64| (0..n).for_each(|_| assert!(shim.fault()));
        let raise = |n: u64| {
            (0..n).for_each(|_| {
                black_box(baselines::raise_usr1());
            })
        };
        g.bench_function("signal_path", |b| {
            b.iter_custom(|n| paired(n, 16, Side::Ours, &mut fault, raise))
        });
        g.bench_function("raise_usr1", |b| {
            b.iter_custom(|n| paired(n, 16, Side::Baseline, &mut fault, raise))
        });
    }
    g.finish();
}

// ---------------------------------------------------------------------------------------------
// 4. Symbol look-up
// ---------------------------------------------------------------------------------------------

fn symbol(c: &mut Criterion, run: &Run) {
    if !run.wants(&["symbol/kmodlike_cached", "symbol/dlsym"]) {
        return;
    }
    let module = fixtures::bench_module("bench_symbol");
    let loader = plain_loader();
    let h = open(&loader, &module);
    h.symbol_ptr("bench_empty").expect("bench_empty"); // now cached
                                                       // SAFETY: the same file, already loaded: no constructor runs; the handle is only used for
                                                       // dlsym and closed below.
    let lib = unsafe { Library::open(Some(&module), RTLD_NOW | RTLD_LOCAL) }.expect("dlopen");
    let raw = lib.into_raw();
    let mut g = c.benchmark_group("symbol");
    g.bench_function("kmodlike_cached", |b| {
        b.iter(|| h.symbol_ptr(black_box("bench_empty")).expect("symbol"))
    });
    g.bench_function("dlsym", |b| {
        b.iter(|| {
            // SAFETY: a live handle and a NUL-terminated name.
            let p = unsafe { libc::dlsym(raw, black_box(c"bench_empty").as_ptr()) };
            assert!(!p.is_null());
            p
        })
    });
    g.finish();
    // SAFETY: from into_raw above; closed once.
    drop(unsafe { Library::from_raw(raw) });
    close(h);
}

// ---------------------------------------------------------------------------------------------
// 5. Scale
// ---------------------------------------------------------------------------------------------

fn scale(c: &mut Criterion, run: &Run) {
    if !run.wants(&["scale/kmodlike_load", "scale/libloading_load", "scale/list"]) {
        return;
    }
    let max = run.scale.iter().copied().max().unwrap_or(1);
    // max modules to hold loaded, plus one more to load and unload at each size.
    let mut modules = fixtures::scale_modules(max + 1, 2);
    let extra = modules.pop().expect("one more module");
    let loader = plain_loader();
    let mut held: Vec<Handle> = Vec::with_capacity(max);
    let mut g = c.benchmark_group("scale");
    g.sample_size(20).measurement_time(Duration::from_secs(2));
    for &n in &run.scale {
        while held.len() < n {
            held.push(open(&loader, &modules[held.len()]));
        }
        assert_eq!(loader.list().len(), n);
        let ours = |k: u64| (0..k).for_each(|_| close(open(&loader, &extra)));
        let raw = |k: u64| (0..k).for_each(|_| raw_load_cycle(&extra));
        g.bench_with_input(BenchmarkId::new("kmodlike_load", n), &n, |b, _| {
            b.iter_custom(|k| paired(k, 1, Side::Ours, ours, raw))
        });
        g.bench_with_input(BenchmarkId::new("libloading_load", n), &n, |b, _| {
            b.iter_custom(|k| paired(k, 1, Side::Baseline, ours, raw))
        });
        g.bench_with_input(BenchmarkId::new("list", n), &n, |b, _| {
            b.iter(|| assert_eq!(loader.list().len(), n))
        });
    }
    g.finish();
    drop(held);
    loader.shutdown();
}

// ---------------------------------------------------------------------------------------------
// 6. Daemon round trips
// ---------------------------------------------------------------------------------------------

fn daemon_round_trips(c: &mut Criterion, run: &Run) {
    if !run.wants(&["daemon/ping/1", "daemon/raw_echo/1", "daemon/ping/8", "daemon/raw_echo/8"]) {
        return;
    }
    let hello = fixtures::hello_module();
    let loader = plain_loader();
    let daemon_sock = run.tmp.join("daemon.sock");
    let echo_sock = run.tmp.join("echo.sock");
    let server = InProcessDaemon::start(&daemon_sock, loader.clone()).expect("start the daemon");
    let _hello = open(&loader, &hello);
    let echo = EchoServer::start(&echo_sock).expect("start the echo server");

    let mut g = c.benchmark_group("daemon");
    // Paired: every sample alternates daemon and echo round trips (see `paired`).
    let mut ping = RawClient::connect(&daemon_sock).expect("connect to the daemon");
    assert!(ping.call_ok(PING).is_ok(), "the daemon answers Ping");
    let mut echo1 = RawClient::connect(&echo_sock).expect("connect to the echo server");
    let mut ours =
        |n: u64| (0..n).for_each(|_| assert!(!ping.round_trip(PING).expect("Ping").is_empty()));
    let mut raw =
        |n: u64| (0..n).for_each(|_| assert!(!echo1.round_trip(PING).expect("echo").is_empty()));
    g.bench_with_input(BenchmarkId::new("ping", 1), &1, |b, _| {
        b.iter_custom(|n| paired(n, 1, Side::Ours, &mut ours, &mut raw))
    });
    g.bench_with_input(BenchmarkId::new("raw_echo", 1), &1, |b, _| {
        b.iter_custom(|n| paired(n, 1, Side::Baseline, &mut ours, &mut raw))
    });
    let daemon8 = ConcurrentClients::connect(&daemon_sock, 8, PING).expect("8 daemon clients");
    let echo8 = ConcurrentClients::connect(&echo_sock, 8, PING).expect("8 echo clients");
    let ours8 = |n: u64| {
        daemon8.run(n).expect("8 concurrent daemon clients");
    };
    let raw8 = |n: u64| {
        echo8.run(n).expect("8 concurrent echo clients");
    };
    g.bench_with_input(BenchmarkId::new("ping", 8), &8, |b, _| {
        b.iter_custom(|n| paired(n, 4, Side::Ours, ours8, raw8))
    });
    g.bench_with_input(BenchmarkId::new("raw_echo", 8), &8, |b, _| {
        b.iter_custom(|n| paired(n, 4, Side::Baseline, ours8, raw8))
    });
    g.finish();
    drop(echo);
    drop(server);
}

// ---------------------------------------------------------------------------------------------
// 7. Memory
// ---------------------------------------------------------------------------------------------

/// Resident sizes of the real daemon: idle with the example module loaded, after 1,000 and
/// after all load/unload cycles.
struct Memory {
    idle: u64,
    after_warmup: Option<(usize, u64)>,
    after_cycles: u64,
    cycles: usize,
}

fn memory(run: &Run) -> Option<Memory> {
    if run.listing || !run.wants(&["memory/daemon_rss"]) {
        return None;
    }
    let Some(program) = option_env!("CARGO_BIN_EXE_kmodlike-bench-daemon") else {
        eprintln!("kmodlike-bench: the daemon program was not built: memory figures skipped");
        return None;
    };
    let hello = fixtures::hello_module();
    let cycled = fixtures::bench_module("bench_cycle");
    let socket = run.tmp.join("memory.sock");
    let log = run.tmp.join("daemon.log");
    // --no-probe: the probe runs in a child process and leaves nothing in the daemon; skipping
    // it keeps 10,000 loads from spawning 10,000 processes.
    let args: [&OsStr; 2] = ["--no-probe".as_ref(), hello.as_os_str()];
    let d = match DaemonProcess::start(
        Path::new(program),
        &socket,
        &args,
        Some(&log),
        Duration::from_secs(30),
    ) {
        Ok(d) => d,
        Err(e) => {
            eprintln!(
                "kmodlike-bench: cannot start the daemon ({e}); log:\n{}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            return None;
        }
    };
    std::thread::sleep(Duration::from_millis(300));
    let idle = d.rss().expect("daemon RSS");
    let mut client = RawClient::connect(&socket).expect("connect to the daemon");
    let load = daemon::load_request(&cycled);
    let unload = daemon::unload_request("bench_cycle");
    let warmup = (run.memory_cycles / 10).max(1);
    let mut after_warmup = None;
    for i in 1..=run.memory_cycles {
        client.call_ok(&load).unwrap_or_else(|e| panic!("Load {}: {e}", cycled.display()));
        client.call_ok(&unload).unwrap_or_else(|e| panic!("Unload bench_cycle: {e}"));
        if i == warmup {
            after_warmup = Some((i, d.rss().expect("daemon RSS")));
        }
    }
    let after_cycles = d.rss().expect("daemon RSS");
    drop(client);
    let _ = d.stop();
    Some(Memory { idle, after_warmup, after_cycles, cycles: run.memory_cycles })
}

// ---------------------------------------------------------------------------------------------
// The table
// ---------------------------------------------------------------------------------------------

fn figures(
    est: &Estimates,
    run: &Run,
    mem: Option<&Memory>,
    latency: Option<&kmodlike_bench::deadline::Latency>,
) -> Vec<Figure> {
    let m = |id: &str| est.median_ns(id);
    let big = run.scale.iter().copied().max().unwrap_or(1);
    let small = run.scale.iter().copied().min().unwrap_or(1);
    let mid = run.scale.iter().copied().filter(|&n| n != big && n != small).max().unwrap_or(small);
    let at = |what: &str, n: usize| m(&format!("scale/{what}/{n}"));
    let linear = (big / mid.max(1)) as f64;
    let mut f = vec![
        Figure::cost(
            "load_cycle",
            "load cycle: open+validate+init+fini+unload (hello.so)",
            "libloading dlopen + 3 dlsym + dlclose",
            Target::RatioAtMost(1.10),
        )
        .values(m("load_cycle/kmodlike"), m("load_cycle/libloading")),
        Figure::cost(
            "load_cycle_probe",
            "load cycle with the probe (child process first)",
            "plain kmodlike load cycle",
            Target::None,
        )
        .values(m("load_cycle/kmodlike_probe"), m("load_cycle/kmodlike")),
        Figure::cost(
            "guarded_call_vs_direct",
            "guarded call of an empty module function (Handle::call0)",
            "direct call through a function pointer",
            Target::RatioAtMost(1.6),
        )
        .values(m("guarded_call/kmodlike_call0"), m("guarded_call/direct")),
        Figure::cost(
            "capi_call_vs_direct",
            "module_loader_call of an empty module function, from C",
            "a call through a function pointer, from C",
            Target::RatioAtMost(1.6),
        )
        .values(m("guarded_call/module_loader_call"), m("guarded_call/c_direct")),
        Figure::cost(
            "guarded_call_deadline",
            "guarded call with a deadline set (Handle::call0_with)",
            "the same call without a deadline (Handle::call0)",
            Target::RatioAtMost(1.05),
        )
        .values(m("deadline/call0_with_deadline"), m("deadline/call0")),
        Figure::cost(
            "guarded_call_vs_naive",
            "guarded call vs a naive guard",
            "sigsetjmp(env, 1) guard",
            Target::RatioAtLeast(20.0),
        )
        .values(m("guarded_call/kmodlike_call0"), m("guarded_call/naive_sigsetjmp"))
        .speedup(),
        Figure::cost(
            "sigsetjmp_fallback",
            "the guard's sigsetjmp entry, where the fast entry is off (other libcs, architectures)",
            "direct call through a function pointer",
            Target::None,
        )
        .values(m("guarded_call/sigsetjmp_fallback"), m("guarded_call/direct")),
        Figure::cost(
            "crash_and_reload",
            "crash and recover: SIGSEGV in a call, error return, module reloaded",
            "clean load cycle with a call",
            Target::None,
        )
        .values(m("crash/crash_and_reload"), m("crash/clean_cycle"))
        .note(
            "the reload maps a fresh private image, a sealed memfd (a crashed instance is never \
             reused)",
        ),
        Figure::cost(
            "crash_signal_path",
            "crash, signal part alone (fault, handler, siglongjmp)",
            "bare raise(SIGUSR1) round trip",
            Target::RatioAtMost(3.0),
        )
        .values(m("crash/signal_path"), m("crash/raise_usr1"))
        .note("timed in the guard's C shim (kmodlike::__bench_guard_call), below the public API"),
        Figure::cost(
            "crash_to_error",
            "crash to error return through Handle::call0",
            "bare raise(SIGUSR1) round trip",
            Target::None,
        )
        .values(m("crash/crash_to_error"), m("crash/raise_usr1"))
        .note("includes the crash report, the logical unload and (CrashPolicy::Reclaim) dlclose"),
        Figure::cost(
            "symbol_cached",
            "symbol look-up, cached (Handle::symbol_ptr)",
            "dlsym",
            Target::RatioAtMost(1.0),
        )
        .values(m("symbol/kmodlike_cached"), m("symbol/dlsym")),
        Figure::cost(
            "scale_load",
            &format!("load+unload of one more module with {big} loaded"),
            &format!("the same with {small} loaded"),
            Target::RatioAtMost(1.2),
        )
        .values(at("kmodlike_load", big), at("kmodlike_load", small)),
        Figure::cost(
            "scale_load_raw",
            &format!("raw dlopen cycle of one more with {big} loaded"),
            &format!("the same with {small} loaded"),
            Target::None,
        )
        .values(at("libloading_load", big), at("libloading_load", small))
        .note("what ld.so itself does with more objects loaded, for comparison"),
        Figure::cost(
            "scale_load_vs_raw",
            &format!("load+unload of one more with {big} loaded"),
            &format!("raw dlopen cycle with {big} loaded"),
            Target::None,
        )
        .values(at("kmodlike_load", big), at("libloading_load", big)),
        Figure::cost(
            "scale_list",
            &format!("list() with {big} modules loaded"),
            &format!("list() with {mid} loaded"),
            Target::RatioAtMost(linear),
        )
        .values(at("list", big), at("list", mid))
        .note(format!("linear growth is {linear}x")),
        Figure::cost(
            "daemon_ping_1",
            "daemon Ping round trip, 1 client",
            "raw NUL-framed echo, same process",
            Target::RatioAtMost(1.5),
        )
        .values(m("daemon/ping/1"), m("daemon/raw_echo/1")),
        Figure::cost(
            "daemon_ping_8",
            "daemon Ping, 8 concurrent clients (per round of 8)",
            "raw NUL-framed echo, 8 clients",
            Target::RatioAtMost(1.5),
        )
        .values(m("daemon/ping/8"), m("daemon/raw_echo/8")),
    ];
    f.push(
        Figure::cost(
            "signature_verify_1mib",
            "minisign signature check of a 1 MiB module (keys and .minisig read, BLAKE2b, Ed25519)",
            "",
            Target::ValueAtMost(5e6),
        )
        .values(m("trust/verify_1mib"), None),
    );
    f.push(
        Figure::cost(
            "load_cycle_enforce",
            "load cycle of a signed hello.so under the enforce policy",
            "plain kmodlike load cycle (policy off)",
            Target::None,
        )
        .values(m("trust/load_cycle_enforce"), m("load_cycle/kmodlike")),
    );
    let median = Figure::cost(
        "deadline_latency_median",
        "a call past its deadline is interrupted after (median of 1,000)",
        "",
        Target::ValueAtMost(10e6),
    );
    let max = Figure::cost(
        "deadline_latency_max",
        "a call past its deadline is interrupted after (max of 1,000)",
        "",
        Target::ValueAtMost(10e6),
    );
    match latency {
        Some(l) => {
            f.push(median.values(Some(l.median.as_nanos() as f64), None));
            f.push(max.values(Some(l.max.as_nanos() as f64), None));
        }
        None => {
            f.push(median);
            f.push(max);
        }
    }
    let rss = Figure::cost(
        "daemon_rss_idle",
        "daemon RSS, idle, example module loaded",
        "",
        Target::ValueAtMost(8.0 * MIB),
    )
    .unit(Unit::Bytes);
    let growth = Figure::cost(
        "daemon_rss_growth",
        &format!("daemon RSS growth after {} load/unload cycles", run.memory_cycles),
        "",
        Target::ValueAtMost(MIB),
    )
    .unit(Unit::Bytes);
    match mem {
        Some(mem) => {
            f.push(rss.values(Some(mem.idle as f64), None));
            let mut g = growth.values(Some(mem.after_cycles as f64 - mem.idle as f64), None);
            if let Some((n, at)) = mem.after_warmup {
                g = g.note(format!(
                    "{} after the first {n} cycles, {} over the last {}",
                    Unit::Bytes.format(at as f64 - mem.idle as f64),
                    Unit::Bytes.format(mem.after_cycles as f64 - at as f64),
                    mem.cycles - n
                ));
            }
            f.push(g);
        }
        None => {
            f.push(rss);
            f.push(growth);
        }
    }
    f
}

// ---------------------------------------------------------------------------------------------
// 7. Trust
// ---------------------------------------------------------------------------------------------

fn trust(c: &mut Criterion, run: &Run) {
    if !run.wants(&["trust/verify_1mib", "trust/load_cycle_enforce"]) {
        return;
    }
    let signed = kmodlike_bench::trust::SignedFixtures::new(&run.tmp);
    let mut g = c.benchmark_group("trust");
    g.bench_function("verify_1mib", |b| {
        b.iter(|| {
            kmodlike::trust::verify_signature(
                &signed.blob,
                black_box(&signed.blob_data),
                &signed.keys,
            )
            .expect("a valid signature")
        })
    });
    let enforcing = Loader::builder()
        .module_path(Vec::new())
        .trusted_keys(signed.keys.clone())
        .signature_policy(kmodlike::SignaturePolicy::Enforce)
        .build();
    g.bench_function("load_cycle_enforce", |b| b.iter(|| close(open(&enforcing, &signed.module))));
    g.finish();
}

fn main() {
    let started = SystemTime::now() - Duration::from_secs(1);
    let run = Run::from_args();
    let criterion_dir = kmodlike_bench::target_dir().join("criterion");
    let mut c = Criterion::default()
        .output_directory(&criterion_dir)
        .sample_size(30)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .configure_from_args();

    load_cycle(&mut c, &run);
    guarded_call(&mut c, &run);
    deadline(&mut c, &run);
    crash(&mut c, &run);
    symbol(&mut c, &run);
    scale(&mut c, &run);
    daemon_round_trips(&mut c, &run);
    trust(&mut c, &run);
    c.final_summary();
    let mem = memory(&run);
    let latency = deadline_latency(&run);

    let figures =
        figures(&Estimates::new(&criterion_dir, started), &run, mem.as_ref(), latency.as_ref());
    let table = format!(
        "kmodlike benchmark summary (criterion medians; ratios from this run)\n\n{}",
        summary::render(&figures)
    );
    println!("\n{table}");
    if run.bench_mode {
        // The table as text too, for `make bench` to print last (cargo runs other packages'
        // bench harnesses after this one).
        let text = kmodlike_bench::bench_dir().join("summary.txt");
        if let Err(e) = std::fs::create_dir_all(kmodlike_bench::bench_dir())
            .and_then(|()| std::fs::write(&text, &table))
        {
            eprintln!("kmodlike-bench: cannot write {}: {e}", text.display());
        }
        let out = kmodlike_bench::bench_dir().join("summary.json");
        let context = serde_json::json!({
            "command": std::env::args().collect::<Vec<_>>(),
            "filter": run.filter,
            "scale": run.scale,
            "memory_cycles": run.memory_cycles,
            "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        });
        match summary::write_json(&out, &figures, context) {
            Ok(()) => println!("\nwritten to {}", out.display()),
            Err(e) => eprintln!("kmodlike-bench: cannot write {}: {e}", out.display()),
        }
    }
}
