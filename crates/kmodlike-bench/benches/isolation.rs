//! The isolation tier's costs (issue 14), each against its floor, measured paired in one run
//! (`cargo bench -p kmodlike-bench --bench isolation`):
//!
//! - `isolation/isolated_empty_invoke` vs `isolation/socketpair_pingpong`: an empty `invoke` of
//!   an isolated module against a raw `SOCK_SEQPACKET` ping-pong between two processes (target:
//!   at most 1.5x);
//! - `isolation/in_process_empty_invoke` vs `isolation/guarded_call`: an empty `invoke` in this
//!   process against a guarded call of an empty function (target: at most 2x); with, all
//!   interleaved in one run, `isolation/guarded_call_5_args` (a guarded call of the module's
//!   5-argument `echo` through `call_raw`), `isolation/invoker_invoke_into` (a pre-resolved
//!   `Invoker`) and `isolation/handle_invoke_into` (the look-up each call, no allocation);
//! - `isolation/isolated_1mib_round_trip`: 1 MiB in and 1 MiB back, reported in bytes per
//!   second.
//!
//! The ratios are printed at the end and written to `target/bench/isolation.txt`.

use std::hint::black_box;
use std::os::fd::{AsFd, OwnedFd};
use std::path::PathBuf;
use std::time::SystemTime;

use criterion::{Criterion, Throughput};
use kmodlike::{Handle, Isolation, Loader, OpenOptions};
use kmodlike_bench::paired::{interleaved, paired, Side};
use kmodlike_bench::summary::Estimates;
use rustix::net::{AddressFamily, RecvFlags, SendFlags, SocketFlags, SocketType};

const CHUNK: u64 = 500;

fn module(dir: &std::path::Path, name: &str) -> PathBuf {
    let built = kmodlike_testsupport::test_module("invoke_echo", "invoke_echo", &[]);
    let dst = dir.join(format!("{name}.so"));
    std::fs::copy(built, &dst).expect("copy the module");
    dst
}

/// A process that answers every packet on its end of a socket pair with the same packet.
struct PingPong {
    sock: OwnedFd,
    pid: libc::pid_t,
}

impl PingPong {
    fn start() -> PingPong {
        let (a, b) = rustix::net::socketpair(
            AddressFamily::UNIX,
            SocketType::SEQPACKET,
            SocketFlags::CLOEXEC,
            None,
        )
        .expect("socketpair");
        // SAFETY: the child only makes recv/send system calls (async-signal-safe) on a socket
        // it owns, then _exit: nothing of this multi-threaded process's state is touched.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            let mut buf = [0u8; 256];
            loop {
                match rustix::net::recv(b.as_fd(), &mut buf[..], RecvFlags::empty()) {
                    Ok((n, _)) if n > 0 => {
                        let _ = rustix::net::send(b.as_fd(), &buf[..n], SendFlags::empty());
                    }
                    // SAFETY: _exit has no preconditions.
                    _ => unsafe { libc::_exit(0) },
                }
            }
        }
        drop(b);
        PingPong { sock: a, pid }
    }

    fn round_trip(&self) {
        let header = [0u8; 8];
        rustix::net::send(self.sock.as_fd(), &header, SendFlags::empty()).expect("send");
        let mut buf = [0u8; 64];
        rustix::net::recv(self.sock.as_fd(), &mut buf[..], RecvFlags::empty()).expect("recv");
    }
}

impl Drop for PingPong {
    fn drop(&mut self) {
        let _ = rustix::net::shutdown(&self.sock, rustix::net::Shutdown::Both);
        // SAFETY: reaping our own child.
        unsafe { libc::waitpid(self.pid, std::ptr::null_mut(), 0) };
    }
}

fn main() {
    let started = SystemTime::now();
    let mut c = Criterion::default().configure_from_args();
    let dir = tempfile_dir();
    let host = PathBuf::from(env!("CARGO_BIN_EXE_kmodlike-bench-host"));
    let loader = Loader::builder().host_helper(host).module_path(Vec::new()).build();
    let iso_path = module(&dir, "bench_isolated");
    let here_path = module(&dir, "bench_here");
    let opts = OpenOptions { isolation: Some(Isolation::default()), ..OpenOptions::default() };
    // SAFETY: the test module, built for the interface; isolated, it runs in its own process.
    let iso: Handle = unsafe { loader.open_with(iso_path.to_str().unwrap(), &opts) }.unwrap();
    // SAFETY: the same module in this process; its init does nothing.
    let here: Handle = unsafe { loader.open(here_path.to_str().unwrap()) }.unwrap();
    let ping = PingPong::start();

    let iso_invoke = |n: u64| {
        for _ in 0..n {
            black_box(iso.invoke("echo", b"").unwrap());
        }
    };
    let raw = |n: u64| (0..n).for_each(|_| ping.round_trip());
    let mut g = c.benchmark_group("isolation");
    g.bench_function("isolated_empty_invoke", |b| {
        b.iter_custom(|n| paired(n, CHUNK, Side::Ours, iso_invoke, raw))
    });
    g.bench_function("socketpair_pingpong", |b| {
        b.iter_custom(|n| paired(n, CHUNK, Side::Baseline, iso_invoke, raw))
    });

    let nothing = here.symbol_ptr("nothing").unwrap();
    // SAFETY: `nothing` is `void nothing(void)` of the module.
    let nothing: extern "C" fn() = unsafe { std::mem::transmute(nothing) };
    let echo = here.symbol_ptr("echo").unwrap();
    // SAFETY: `echo` is the module's `module_invoke_fn`.
    let echo: Echo = unsafe { std::mem::transmute(echo) };
    let invoker = here.invoker("echo").unwrap();
    let mut out = [std::mem::MaybeUninit::<u8>::uninit(); 64];
    // The in-process rows, all interleaved in every row's run (see `interleaved`).
    let mut work: [&mut dyn FnMut(u64); 5] = [
        // A guarded call of the same 5-argument C function the invokes run.
        &mut |n| {
            for _ in 0..n {
                let mut ctx = EchoCtx { f: echo, out_len: 0, ret: 0 };
                // SAFETY: the trampoline calls the module's own C function with valid buffers
                // and owns nothing droppable.
                unsafe { here.call_raw(echo_trampoline, black_box(&mut ctx as *mut _ as *mut _)) }
                    .unwrap();
                black_box((ctx.ret, ctx.out_len));
            }
        },
        &mut |n| {
            for _ in 0..n {
                black_box(invoker.invoke_into(black_box(b""), &mut out).unwrap());
            }
        },
        &mut |n| {
            for _ in 0..n {
                let mut out = [std::mem::MaybeUninit::<u8>::uninit(); 64];
                black_box(here.invoke_into(black_box("echo"), black_box(b""), &mut out).unwrap());
            }
        },
        &mut |n| {
            for _ in 0..n {
                black_box(here.invoke(black_box("echo"), black_box(b"")).unwrap());
            }
        },
        &mut |n| {
            for _ in 0..n {
                // SAFETY: the module's own empty C function.
                unsafe { here.call0(black_box(nothing)) }.unwrap();
            }
        },
    ];
    let rows = [
        "guarded_call_5_args",
        "invoker_invoke_into",
        "handle_invoke_into",
        "in_process_empty_invoke",
        "guarded_call",
    ];
    for (i, row) in rows.iter().enumerate() {
        g.bench_function(*row, |b| b.iter_custom(|n| interleaved(n, 20 * CHUNK, i, &mut work)));
    }
    drop(invoker);

    let mib: Vec<u8> = (0..1 << 20).map(|i: u32| i as u8).collect();
    g.throughput(Throughput::Bytes(2 << 20));
    g.bench_function("isolated_1mib_round_trip", |b| {
        b.iter(|| black_box(iso.invoke("echo", &mib).unwrap()))
    });
    g.finish();
    drop(ping);
    c.final_summary();

    let est = Estimates::new(&kmodlike_bench::target_dir().join("criterion"), started);
    let m = |id: &str| est.median_ns(id);
    let ratio = |a: Option<f64>, b: Option<f64>| a.zip(b).map(|(a, b)| a / b);
    let iso_ns = m("isolation/isolated_empty_invoke");
    let raw_ns = m("isolation/socketpair_pingpong");
    let inv_ns = m("isolation/in_process_empty_invoke");
    let call_ns = m("isolation/guarded_call");
    let call5_ns = m("isolation/guarded_call_5_args");
    let invoker_ns = m("isolation/invoker_invoke_into");
    let into_ns = m("isolation/handle_invoke_into");
    let vs =
        |a: Option<f64>, b: Option<f64>| ratio(a, b).map_or("-".into(), |r| format!("{r:.2}x"));
    let big_ns = m("isolation/isolated_1mib_round_trip");
    let fmt = |v: Option<f64>| v.map_or("not run".to_owned(), |v| format!("{v:.1} ns"));
    let text = format!(
        "isolation benchmark (criterion medians, paired in one run)\n\
         isolated empty invoke     {}  vs raw socketpair ping-pong {}: {} (target <= 1.5x)\n\
         in-process empty invoke   {}  vs guarded call {}: {} (target <= 2x)\n\
         guarded call, 5 arguments {}  (the same C function the invokes below run)\n\
         Invoker::invoke_into      {}  vs it: {}, vs guarded call: {}\n\
         Handle::invoke_into       {}  vs it: {}, vs guarded call: {}\n\
         Handle::invoke            {}  vs it: {}, vs guarded call: {}\n\
         isolated 1 MiB round trip {}: {}\n",
        fmt(iso_ns),
        fmt(raw_ns),
        ratio(iso_ns, raw_ns).map_or("-".into(), |r| format!("{r:.2}x")),
        fmt(inv_ns),
        fmt(call_ns),
        ratio(inv_ns, call_ns).map_or("-".into(), |r| format!("{r:.2}x")),
        fmt(call5_ns),
        fmt(invoker_ns),
        vs(invoker_ns, call5_ns),
        vs(invoker_ns, call_ns),
        fmt(into_ns),
        vs(into_ns, call5_ns),
        vs(into_ns, call_ns),
        fmt(inv_ns),
        vs(inv_ns, call5_ns),
        vs(inv_ns, call_ns),
        fmt(big_ns),
        big_ns.map_or("-".into(), |ns| format!("{:.2} GB/s (2 MiB moved)", 2.0 * 1048576.0 / ns)),
    );
    print!("{text}");
    let _ = std::fs::create_dir_all(kmodlike_bench::bench_dir());
    let _ = std::fs::write(kmodlike_bench::bench_dir().join("isolation.txt"), text);
    drop(iso);
    drop(here);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `module_invoke_fn`.
type Echo = unsafe extern "C" fn(*const u8, usize, *mut u8, usize, *mut usize) -> i32;

/// A guarded call of `echo` with an empty input, packed for `call_raw`.
#[repr(C)]
struct EchoCtx {
    f: Echo,
    out_len: usize,
    ret: i32,
}

/// Calls `ctx.f` with an empty input and no output room; owns nothing droppable.
unsafe extern "C" fn echo_trampoline(ctx: *mut std::ffi::c_void) {
    // SAFETY: `ctx` is the caller's live `EchoCtx`.
    let c = unsafe { &mut *(ctx as *mut EchoCtx) };
    // SAFETY: `f` is the module's echo: reads 0 bytes, writes 0 bytes and `*out_len`.
    c.ret = unsafe { (c.f)([].as_ptr(), 0, std::ptr::null_mut(), 0, &mut c.out_len) };
}

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("kmodlike-bench-iso-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
