//! The isolation tier's costs (issue 14), each against its floor, measured paired in one run
//! (`cargo bench -p kmodlike-bench --bench isolation`):
//!
//! - `isolation/isolated_empty_invoke` vs `isolation/socketpair_pingpong`: an empty `invoke` of
//!   an isolated module against a raw `SOCK_SEQPACKET` ping-pong between two processes (target:
//!   at most 1.5x);
//! - `isolation/in_process_empty_invoke` vs `isolation/guarded_call`: an empty `invoke` in this
//!   process against a guarded call of an empty function (target: at most 2x);
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
use kmodlike_bench::paired::{paired, Side};
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
    let here_invoke = |n: u64| {
        for _ in 0..n {
            black_box(here.invoke("echo", b"").unwrap());
        }
    };
    let guarded = |n: u64| {
        for _ in 0..n {
            // SAFETY: the module's own empty C function.
            unsafe { here.call0(black_box(nothing)) }.unwrap();
        }
    };
    g.bench_function("in_process_empty_invoke", |b| {
        b.iter_custom(|n| paired(n, 20 * CHUNK, Side::Ours, here_invoke, guarded))
    });
    g.bench_function("guarded_call", |b| {
        b.iter_custom(|n| paired(n, 20 * CHUNK, Side::Baseline, here_invoke, guarded))
    });

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
    let big_ns = m("isolation/isolated_1mib_round_trip");
    let fmt = |v: Option<f64>| v.map_or("not run".to_owned(), |v| format!("{v:.1} ns"));
    let text = format!(
        "isolation benchmark (criterion medians, paired in one run)\n\
         isolated empty invoke     {}  vs raw socketpair ping-pong {}: {} (target <= 1.5x)\n\
         in-process empty invoke   {}  vs guarded call {}: {} (target <= 2x)\n\
         isolated 1 MiB round trip {}: {}\n",
        fmt(iso_ns),
        fmt(raw_ns),
        ratio(iso_ns, raw_ns).map_or("-".into(), |r| format!("{r:.2}x")),
        fmt(inv_ns),
        fmt(call_ns),
        ratio(inv_ns, call_ns).map_or("-".into(), |r| format!("{r:.2}x")),
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

fn tempfile_dir() -> PathBuf {
    let d = std::env::temp_dir().join(format!("kmodlike-bench-iso-{}", std::process::id()));
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}
