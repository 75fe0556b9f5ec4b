//! The isolation tier (issue 14) and the invoke entry point: real C modules
//! (`tests/modules/invoke_echo.c`) invoked in this process and in a `kmodlike-host` process
//! of their own; the fault matrix through the isolated tier (the host survives every cell, the
//! module is gone, its process is reaped, the error names the cause); crash-restart cycles;
//! a parent killed with SIGKILL takes its children with it.

use std::io::BufRead;
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use kmodlike::{Error, ErrorKind, Handle, Isolation, Loader, OpenOptions};
use kmodlike_testsupport as ts;

fn host_helper() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_kmodlike-host"))
}

fn loader() -> Loader {
    Loader::builder().host_helper(host_helper()).build()
}

fn echo_module() -> PathBuf {
    ts::test_module("invoke_echo", "invoke_echo", &[])
}

/// A private copy of a module under `name` (each test its own file: a loader refuses two files
/// of one name, and tests run in parallel).
fn copy_as(src: &Path, dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(format!("{name}.so"));
    std::fs::copy(src, &dst).expect("copy module");
    dst
}

fn open_isolated(l: &Loader, path: &Path, iso: Isolation) -> Handle {
    let opts = OpenOptions { isolation: Some(iso), ..OpenOptions::default() };
    // SAFETY: a test module built for the interface; it runs in its own process anyway.
    unsafe { l.open_with(path.to_str().unwrap(), &opts) }.expect("open isolated")
}

fn open_here(l: &Loader, path: &Path) -> Handle {
    // SAFETY: a test module built for the interface, whose init does nothing harmful.
    unsafe { l.open(path.to_str().unwrap()) }.expect("open in process")
}

/// Whether process `pid` is gone (reaped: no zombie left behind either).
fn gone(pid: u32) -> bool {
    !Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn in_process_invoke_grows_its_buffer_and_returns_the_result_code() {
    let l = loader();
    let h = open_here(&l, &echo_module());
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let (ret, out) = h.invoke("echo", &big).expect("echo");
    assert_eq!((ret, out.len()), (0, big.len()));
    assert_eq!(out, big);
    // A first buffer smaller than the output: the loader asks again with the size needed.
    let (ret, out) = h.invoke_with_capacity("echo", &big, 16).expect("echo, small first buffer");
    assert_eq!((ret, &out), (0, &big));
    let (ret, out) = h.invoke("checksum", b"abc").expect("checksum");
    assert_eq!(ret, 3, "checksum returns the input's length");
    assert_eq!(out.len(), 16);
    // Into a caller's buffer that is too small: BufferTooSmall with the size needed.
    let mut small = [std::mem::MaybeUninit::new(0u8); 8];
    match h.invoke_into("echo", &big, &mut small) {
        Err(Error::BufferTooSmall { needed, capacity, .. }) => {
            assert_eq!((needed, capacity), (big.len(), 8))
        }
        other => panic!("expected BufferTooSmall, got {other:?}"),
    }
}

#[test]
fn undeclared_functions_are_not_invoked() {
    let l = loader();
    let h = open_here(&l, &echo_module());
    let e = h.invoke("undeclared", b"x").expect_err("undeclared");
    assert_eq!(e.kind(), ErrorKind::SymbolNotFound);
    assert!(e.to_string().contains("MODULE_INVOKE(undeclared)"), "{e}");
}

#[test]
fn isolated_and_in_process_give_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let here = copy_as(&echo_module(), dir.path(), "same_here");
    let there = copy_as(&echo_module(), dir.path(), "same_there");
    let l = loader();
    let a = open_here(&l, &here);
    let b = open_isolated(&l, &there, Isolation::default());
    let inputs: [Vec<u8>; 4] = [
        Vec::new(),
        b"hello".to_vec(),
        vec![7u8; 70_000],
        (0..=255u8).cycle().take(1 << 20).collect(),
    ];
    for input in &inputs {
        for sym in ["echo", "checksum"] {
            let x = a.invoke(sym, input).expect("in process");
            let y = b.invoke(sym, input).expect("isolated");
            assert_eq!(x, y, "{sym} of {} bytes", input.len());
        }
    }
    // It really runs elsewhere.
    let (_, pid) = b.invoke("pid", b"").unwrap();
    let pid: u32 = String::from_utf8(pid).unwrap().parse().unwrap();
    assert_ne!(pid, std::process::id());
    assert_eq!(b.info().child_pid, Some(pid));
    assert_eq!(b.info().tier(), "isolated");
    assert_eq!(a.info().tier(), "in-process");
    b.close().expect("close isolated");
    assert!(gone(pid), "the closed module's process {pid} was reaped");
}

#[test]
fn raw_symbol_access_is_refused_for_an_isolated_module() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_as(&echo_module(), dir.path(), "refuse_raw");
    let l = loader();
    let h = open_isolated(&l, &path, Isolation::default());
    let e = h.symbol_ptr("echo").expect_err("no addresses of another process");
    let text = e.to_string();
    assert!(text.contains("isolated") && text.contains("Handle::invoke"), "{text}");
    extern "C" fn nothing(_: *mut std::ffi::c_void) {}
    // SAFETY: `nothing` is safe to call and owns nothing; it must not run at all.
    let e = unsafe { h.call_raw(nothing, std::ptr::null_mut()) }.expect_err("no guarded calls");
    assert!(e.to_string().contains("Handle::invoke"), "{e}");
}

#[test]
fn the_modules_log_and_clock_reach_the_parents_callbacks() {
    let dir = tempfile::tempdir().unwrap();
    let path = copy_as(&echo_module(), dir.path(), "forwarded");
    let seen: Arc<Mutex<Vec<String>>> = Arc::default();
    let s = seen.clone();
    let l = Loader::builder()
        .host_helper(host_helper())
        .log(move |m, level, msg| s.lock().unwrap().push(format!("{m}:{level}:{msg}")))
        .build();
    let h = open_isolated(&l, &path, Isolation::default());
    let (_, out) = h.invoke("greet", b"").unwrap();
    assert!(seen.lock().unwrap().contains(&"forwarded:0:hello from greet".to_owned()));
    let t: u64 = String::from_utf8(out).unwrap().strip_prefix("time=").unwrap().parse().unwrap();
    assert!(t > 0, "the clock answered");
}

/// One cell of the matrix: what the module does, the options, and what the error must say.
struct Cell {
    cmd: &'static str,
    kind: ErrorKind,
    names: &'static [&'static str],
}

const MATRIX: &[Cell] = &[
    Cell { cmd: "signal 11", kind: ErrorKind::Crashed, names: &["SIGSEGV"] },
    Cell { cmd: "signal 7", kind: ErrorKind::Crashed, names: &["SIGBUS"] },
    Cell { cmd: "signal 8", kind: ErrorKind::Crashed, names: &["SIGFPE"] },
    Cell { cmd: "signal 4", kind: ErrorKind::Crashed, names: &["SIGILL"] },
    Cell { cmd: "signal 6", kind: ErrorKind::Crashed, names: &["SIGABRT"] },
    Cell { cmd: "signal 31", kind: ErrorKind::Crashed, names: &["SIGSYS"] },
    Cell { cmd: "abort", kind: ErrorKind::Crashed, names: &["SIGABRT"] },
    Cell { cmd: "exit 3", kind: ErrorKind::Exited, names: &["status 3", "exit(3)"] },
    Cell { cmd: "_exit 4", kind: ErrorKind::Exited, names: &["status 4", "_exit(4)"] },
    Cell { cmd: "exit_group 5", kind: ErrorKind::Exited, names: &["status 5", "raw exit"] },
    Cell { cmd: "hang", kind: ErrorKind::TimedOut, names: &["did not return within"] },
    Cell { cmd: "alloc", kind: ErrorKind::Crashed, names: &["SIGSEGV"] },
    Cell { cmd: "scribble", kind: ErrorKind::Crashed, names: &["SIG"] },
];

fn run_cell(cell: &Cell, seccomp: bool) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("cell_{}{}", cell.cmd.replace(' ', "_"), if seccomp { "_sc" } else { "" });
    let path = copy_as(&echo_module(), dir.path(), &name);
    let l = loader();
    let iso = Isolation {
        call_timeout: Some(Duration::from_secs(if cell.cmd == "hang" { 2 } else { 60 })),
        address_space: Some(256 << 20),
        seccomp,
        ..Isolation::default()
    };
    let h = open_isolated(&l, &path, iso);
    let pid = h.info().child_pid.expect("a child");
    let e = h.invoke("misbehave", cell.cmd.as_bytes()).expect_err(cell.cmd);
    let text = e.to_string();
    assert_eq!(e.kind(), cell.kind, "{}: {text}", cell.cmd);
    // Under the filter, the test module's own way to raise SIGBUS (memfd_create) and SIGSYS
    // (installing a filter of its own with prctl) are themselves forbidden system calls.
    let names = match (seccomp, cell.cmd) {
        (true, "signal 7" | "signal 31") => &["SIGSYS", "seccomp"][..],
        _ => cell.names,
    };
    for n in names {
        assert!(text.contains(n), "{}: the error names {n:?}: {text}", cell.cmd);
    }
    assert!(text.contains(&name), "{}: the error names the module: {text}", cell.cmd);
    // The module is gone, its process reaped, the crash booked.
    assert!(l.list().iter().all(|m| m.name != name), "{}: still listed", cell.cmd);
    assert!(gone(pid), "{}: process {pid} not reaped", cell.cmd);
    assert_eq!(l.crashes().first().map(|r| r.module.as_str()), Some(name.as_str()));
    assert!(h.invoke("echo", b"x").is_err(), "{}: the dead handle refuses calls", cell.cmd);
    drop(h);
    // The next open starts a fresh process.
    let again = open_isolated(&l, &path, Isolation::default());
    assert_eq!(again.invoke("echo", b"again").unwrap(), (0, b"again".to_vec()));
    assert_ne!(again.info().child_pid, Some(pid));
}

#[test]
fn fault_matrix_through_the_isolated_tier() {
    for cell in MATRIX {
        run_cell(cell, false);
    }
}

/// The same matrix with the seccomp allow-list on: everything the child needs to load, answer,
/// crash and report is allowed, and every cell ends the same way.
#[test]
fn fault_matrix_with_the_seccomp_filter_on() {
    for cell in MATRIX {
        run_cell(cell, true);
    }
}

#[test]
fn a_constructor_crash_or_a_malformed_file_fails_the_open_only() {
    let dir = tempfile::tempdir().unwrap();
    let built = ts::test_module("invoke_echo", "invoke_echo_ctor_crash", &["-DCTOR_CRASH"]);
    let ctor = copy_as(&built, dir.path(), "ctor_crash_iso");
    let l = loader();
    let opts = OpenOptions::isolated();
    // SAFETY: it runs in its own process.
    let e = unsafe { l.open_with(ctor.to_str().unwrap(), &opts) }.expect_err("ctor crash");
    assert_eq!(e.kind(), ErrorKind::Crashed, "{e}");
    assert!(e.to_string().contains("SIGSEGV"), "{e}");
    assert!(l.list().is_empty());
    let bad = dir.path().join("malformed_iso.so");
    let mut bytes = std::fs::read(echo_module()).unwrap();
    bytes.truncate(bytes.len() / 3);
    std::fs::write(&bad, bytes).unwrap();
    // SAFETY: as above.
    let e = unsafe { l.open_with(bad.to_str().unwrap(), &opts) }.expect_err("malformed");
    assert_eq!(e.kind(), ErrorKind::LoadFailed, "{e}");
    assert!(e.to_string().contains("malformed_iso.so"), "{e}");
    assert!(l.list().is_empty());
}

#[test]
fn a_thousand_crash_restart_cycles_leave_no_zombie_nor_leak() {
    if !ts::in_own_process(
        "a_thousand_crash_restart_cycles_leave_no_zombie_nor_leak",
        Duration::from_secs(600),
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = copy_as(&echo_module(), dir.path(), "cycles");
    let l = loader();
    let cycle = |i: usize| {
        let h = open_isolated(&l, &path, Isolation::default());
        let pid = h.info().child_pid.unwrap();
        let e = h.invoke("misbehave", b"signal 11").expect_err("crash");
        assert_eq!(e.kind(), ErrorKind::Crashed, "cycle {i}: {e}");
        assert!(gone(pid), "cycle {i}: process {pid} not reaped");
    };
    for i in 0..50 {
        cycle(i);
    }
    let (fds, rss) = (ts::open_fds(), ts::rss_bytes());
    for i in 50..1000 {
        cycle(i);
    }
    assert_eq!(ts::open_fds(), fds, "descriptors flat");
    let grown = ts::rss_bytes().saturating_sub(rss);
    assert!(grown < 4 << 20, "resident memory grew by {grown} bytes over 950 cycles");
}

/// The parent's part of `children_die_with_their_parent`: open an isolated module, say its
/// process's pid, and wait to be killed.
#[test]
fn parent_role_for_the_sigkill_test() {
    if std::env::var_os("KMODLIKE_ISO_PARENT").is_none() {
        return;
    }
    let l = loader();
    let h = open_isolated(&l, &echo_module(), Isolation::default());
    println!("child {}", h.info().child_pid.unwrap());
    let mut line = String::new();
    let _ = std::io::stdin().read_line(&mut line);
}

#[test]
fn children_die_with_their_parent() {
    let mut parent = Command::new(std::env::current_exe().unwrap())
        .args(["parent_role_for_the_sigkill_test", "--exact", "--nocapture", "--test-threads=1"])
        .env("KMODLIKE_ISO_PARENT", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let out = parent.stdout.take().unwrap();
    let pid: u32 = std::io::BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .find_map(|l| l.split("child ").nth(1).and_then(|p| p.trim().parse().ok()))
        .expect("the parent names its child");
    let pidfd = rustix::process::pidfd_open(
        rustix::process::Pid::from_raw(pid as i32).unwrap(),
        rustix::process::PidfdFlags::empty(),
    )
    .expect("pidfd of the child");
    parent.kill().unwrap();
    parent.wait().unwrap();
    // The child's exit is the pidfd becoming readable; 10 s is only a safety net.
    let mut fds = [rustix::event::PollFd::new(&pidfd, rustix::event::PollFlags::IN)];
    let ten = rustix::event::Timespec { tv_sec: 10, tv_nsec: 0 };
    let n = rustix::event::poll(&mut fds, Some(&ten)).unwrap();
    assert_eq!(n, 1, "the isolated module's process {pid} outlived its parent");
    let _ = pidfd.as_fd();
}

fn seccomp_on() -> Isolation {
    Isolation { seccomp: true, ..Isolation::default() }
}

#[test]
fn with_the_seccomp_filter_an_invoke_gives_the_same_output() {
    let dir = tempfile::tempdir().unwrap();
    let l = loader();
    let plain =
        open_isolated(&l, &copy_as(&echo_module(), dir.path(), "sc_plain"), Isolation::default());
    let filtered =
        open_isolated(&l, &copy_as(&echo_module(), dir.path(), "sc_filtered"), seccomp_on());
    let inputs: [Vec<u8>; 3] =
        [Vec::new(), b"hello".to_vec(), (0..=255u8).cycle().take(1 << 20).collect()];
    for input in &inputs {
        for sym in ["echo", "checksum", "greet"] {
            let x = plain.invoke(sym, input).expect("without the filter");
            let y = filtered.invoke(sym, input).expect("with the filter");
            if sym == "greet" {
                assert!(y.1.starts_with(b"time="), "{:?}", String::from_utf8_lossy(&y.1));
            } else {
                assert_eq!(x, y, "{sym} of {} bytes", input.len());
            }
        }
    }
    let pid = filtered.info().child_pid.unwrap();
    filtered.close().expect("close, filtered");
    assert!(gone(pid), "the closed module's process {pid} was reaped");
}

/// A forbidden system call during an invoke: the host survives, the module is gone, its
/// process reaped, the error names SIGSYS and the filter; the next open starts a fresh child.
fn forbidden(cmd: &str, names: &[&str]) {
    let dir = tempfile::tempdir().unwrap();
    let name = format!("sc_{}", cmd.replace(' ', "_"));
    let path = copy_as(&echo_module(), dir.path(), &name);
    let l = loader();
    let h = open_isolated(&l, &path, seccomp_on());
    let pid = h.info().child_pid.expect("a child");
    assert_eq!(h.invoke("echo", b"before").unwrap(), (0, b"before".to_vec()));
    let e = h.invoke("misbehave", cmd.as_bytes()).expect_err(cmd);
    let text = e.to_string();
    assert_eq!(e.kind(), ErrorKind::Crashed, "{cmd}: {text}");
    assert!(text.contains("SIGSYS"), "{cmd}: the error names SIGSYS: {text}");
    assert!(text.contains("seccomp"), "{cmd}: the error names seccomp: {text}");
    for n in names {
        assert!(text.contains(n), "{cmd}: the error names {n:?}: {text}");
    }
    assert!(text.contains(&name), "{cmd}: the error names the module: {text}");
    assert!(l.list().iter().all(|m| m.name != name), "{cmd}: still listed");
    assert!(gone(pid), "{cmd}: process {pid} not reaped");
    assert_eq!(l.crashes().first().map(|r| r.module.as_str()), Some(name.as_str()));
    drop(h);
    let again = open_isolated(&l, &path, seccomp_on());
    assert_eq!(again.invoke("echo", b"again").unwrap(), (0, b"again".to_vec()));
    assert_ne!(again.info().child_pid, Some(pid));
}

#[test]
fn seccomp_stops_a_socket_through_the_c_library() {
    forbidden("socket", &[]);
}

#[test]
fn seccomp_stops_an_open_of_etc_passwd() {
    forbidden("open", &[]);
}

#[test]
fn seccomp_stops_a_system_call_from_module_code_with_a_report() {
    forbidden("raw socket", &["SYS_SECCOMP", "misbehave"]);
}
