//! Deadlines of guarded calls: a call past its time limit is interrupted wherever it is (a
//! loop, a blocking system call), returns `TimedOut` with a report of where it was, and its
//! module is unloaded as after a crash. Every test waits on the event itself; the 60 s of
//! `ts::within` are a safety net.

use std::path::PathBuf;
use std::time::Duration;

use kmodlike::{CallOptions, Error, ErrorKind, Event, Loader, ModuleState, Phase};
use kmodlike_testsupport as ts;

fn hang() -> PathBuf {
    ts::test_module("hang", "hang", &[])
}

fn sym<T: Copy>(h: &kmodlike::Handle, name: &str) -> T {
    // SAFETY: the test module defines `name` with the type the caller names.
    unsafe { *h.symbol::<T>(name).unwrap() }
}

fn timed_out(r: kmodlike::Result<impl std::fmt::Debug>) -> Box<kmodlike::CrashReport> {
    match r {
        Err(Error::TimedOut(report)) => report,
        other => panic!("expected TimedOut, got {other:?}"),
    }
}

#[test]
fn an_endless_loop_is_interrupted_at_its_deadline() {
    ts::within("an endless loop with a deadline", || {
        let loader = Loader::builder().call_timeout(Some(Duration::from_millis(200))).build();
        // SAFETY: a fixture module this test built from its C source for the interface.
        let h = unsafe { loader.open(hang().to_str().unwrap()) }.unwrap();
        let spin: extern "C" fn() = sym(&h, "spin");
        // SAFETY: the fixture's C code; an interrupt skips only its frames.
        let report = timed_out(unsafe { h.call0(spin) });
        let t = report.timeout.expect("a timeout report");
        assert_eq!(t.limit, Some(Duration::from_millis(200)));
        assert!(t.ran >= Duration::from_millis(200), "{t:?}");
        assert_eq!(report.phase, Phase::Call);
        assert_eq!(report.called.as_deref(), Some("spin"), "{report}");
        assert!(report.pc_in_module, "{report}");
        assert!(report.symbol.as_deref().unwrap_or("").starts_with("spin"), "{report}");
        let text = Error::TimedOut(report.clone()).to_string();
        assert!(text.contains("module hang") && text.contains("spin"), "{text}");
        assert!(text.contains("deadline of 0.2 s"), "{text}");
        assert_eq!(Error::TimedOut(report).kind(), ErrorKind::TimedOut);
        // Gone, as after a crash; the host runs on.
        assert!(loader.list().is_empty());
        assert!(!h.is_live());
        assert_eq!(loader.crashes().len(), 1);
    });
}

/// Open `hang` with a loader whose calls have `limit`.
fn open_with_limit(limit: Duration) -> (Loader, kmodlike::Handle) {
    let loader = Loader::builder().call_timeout(Some(limit)).build();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open(hang().to_str().unwrap()) }.unwrap();
    (loader, h)
}

#[test]
fn a_read_blocked_on_a_pipe_is_interrupted() {
    ts::within("a blocked read() with a deadline", || {
        let (loader, h) = open_with_limit(Duration::from_millis(150));
        let f: extern "C" fn() -> i32 = sym(&h, "block_read");
        // SAFETY: the fixture's C code; an interrupt skips only its frames.
        let report = timed_out(unsafe { h.call0(f) });
        assert_eq!(report.called.as_deref(), Some("block_read"), "{report}");
        // Stopped in libc's read(), which holds no lock of libc's: no taint.
        assert!(report.frames.iter().any(|f| f.in_module), "the module's frame: {report}");
        assert!(loader.list().is_empty());
    });
}

#[test]
fn sleep_is_interrupted() {
    ts::within("sleep() with a deadline", || {
        let (_loader, h) = open_with_limit(Duration::from_millis(150));
        let f: extern "C" fn() -> u32 = sym(&h, "block_sleep");
        // SAFETY: the fixture's C code; an interrupt skips only its frames.
        let report = timed_out(unsafe { h.call0(f) });
        assert_eq!(report.called.as_deref(), Some("block_sleep"), "{report}");
    });
}

#[test]
fn a_handle_limit_and_call_options_come_before_the_loaders() {
    ts::within("limits of handles and calls", || {
        let (loader, h) = open_with_limit(Duration::from_secs(3600));
        h.set_call_timeout(Some(Duration::from_millis(100)));
        assert_eq!(h.call_timeout(), Some(Duration::from_millis(100)));
        let busy: extern "C" fn(i32) -> i32 = sym(&h, "busy_for");
        // A call within its limit returns normally.
        let opts = CallOptions::default().with_timeout(Duration::from_secs(3600));
        // SAFETY: the fixture's C code; an interrupt skips only its frames.
        assert_eq!(unsafe { h.call_with(&opts, busy, 150) }.unwrap(), 150);
        // The handle's limit.
        // SAFETY: as above.
        let report = timed_out(unsafe { h.call(busy, 100_000) });
        assert_eq!(report.timeout.unwrap().limit, Some(Duration::from_millis(100)));
        assert_eq!(loader.call_timeout(), Some(Duration::from_secs(3600)));
    });
}

#[test]
fn a_hang_inside_a_host_callback_is_interrupted_only_after_it_returns() {
    use std::sync::mpsc;
    use std::sync::{Arc, Mutex};
    ts::within("a hang in a host callback", || {
        // The log sink blocks in read() on a pipe until the test writes to it: the interrupt
        // signal, if it were sent into the callback, would end that read() with EINTR.
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into `fds`.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        let (entered_tx, entered_rx) = mpsc::channel::<()>();
        let entered_tx = Mutex::new(entered_tx);
        let read_result = Arc::new(Mutex::new(None));
        let rr = read_result.clone();
        let read_fd = fds[0];
        let loader = Loader::builder()
            .call_timeout(Some(Duration::from_millis(100)))
            .log(move |_, _, msg| {
                if msg.starts_with("hang_in_log") {
                    entered_tx.lock().unwrap().send(()).unwrap();
                    let mut c = 0u8;
                    // SAFETY: reads one byte into `c` from the pipe this test made.
                    let n = unsafe { libc::read(read_fd, (&mut c as *mut u8).cast(), 1) };
                    let err = std::io::Error::last_os_error();
                    *rr.lock().unwrap() = Some((n, err.raw_os_error()));
                }
            })
            .build();
        // SAFETY: a fixture module this test built from its C source for the interface.
        let h = unsafe { loader.open(hang().to_str().unwrap()) }.unwrap();
        let f: extern "C" fn() = sym(&h, "hang_in_log");
        let caller = std::thread::spawn(move || {
            // SAFETY: the fixture's C code; an interrupt skips only its frames.
            let r = unsafe { h.call0(f) };
            (r.map_err(|e| e.to_string()), h)
        });
        entered_rx.recv().unwrap();
        // Another call with a later deadline, on another thread: when it times out, the
        // watchdog has handled the first call's deadline (it handles them in time order).
        let other = ts::test_module("hang", "hang_other", &[]);
        // SAFETY: a fixture module this test built from its C source for the interface.
        let h2 = unsafe { loader.open(other.to_str().unwrap()) }.unwrap();
        let spin: extern "C" fn() = sym(&h2, "spin");
        let opts = CallOptions::default().with_timeout(Duration::from_millis(300));
        // SAFETY: the fixture's C code; an interrupt skips only its frames.
        let second = unsafe { h2.call0_with(&opts, spin) };
        assert!(matches!(second, Err(Error::TimedOut(_))), "{second:?}");
        assert!(read_result.lock().unwrap().is_none(), "the callback is still running");
        // Release the callback: its read() returns the byte, and the call is interrupted as
        // soon as it is back in the module.
        // SAFETY: writes one byte from a local to the pipe this test made.
        assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
        let (r, _h) = caller.join().unwrap();
        let (n, errno) = read_result.lock().unwrap().expect("the callback ran to its end");
        assert_eq!(n, 1, "the callback's read() was not interrupted (errno {errno:?})");
        let text = r.expect_err("the call timed out");
        assert!(text.contains("hang_in_log"), "{text}");
    });
}

/// The loader's `Hung` events: (module, thread, detail).
fn hung_events(loader: &Loader) -> std::sync::mpsc::Receiver<(String, i32, String)> {
    let (tx, rx) = std::sync::mpsc::channel();
    let tx = std::sync::Mutex::new(tx);
    loader.subscribe(move |e| {
        if let Event::Hung { module, thread, detail, .. } = e {
            let _ = tx.lock().unwrap().send((module.clone(), *thread, detail.clone()));
        }
    });
    rx
}

#[test]
fn a_call_that_blocks_the_interrupt_signal_is_reported_hung_and_unload_removes_it() {
    ts::within("a hang with the interrupt signal blocked", || {
        let (loader, h) = open_with_limit(Duration::from_millis(100));
        let rx = hung_events(&loader);
        // The module blocks the signal, then waits for a byte on a pipe: the test can let the
        // thread go at the end (it was left alone, its code still mapped).
        let mut fds = [0; 2];
        // SAFETY: pipe writes two descriptors into `fds`.
        assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
        #[repr(C)]
        #[derive(Clone, Copy)]
        struct WaitArgs {
            signo: i32,
            fd: i32,
        }
        let f: extern "C" fn(WaitArgs) -> i32 = sym(&h, "wait_blocked");
        let spin: extern "C" fn() = sym(&h, "spin");
        let signo = kmodlike::interrupt_signal();
        // One reference, shared with the calling thread (as the daemon shares its handles).
        let h = std::sync::Arc::new(h);
        let h2 = h.clone();
        let read_fd = fds[0];
        let caller = std::thread::spawn(move || {
            // SAFETY: the fixture's C code; an interrupt skips only its frames.
            unsafe { h2.call(f, WaitArgs { signo, fd: read_fd }) }.map_err(|e| e.to_string())
        });
        let (module, thread, detail) = rx.recv().unwrap();
        assert_eq!(module, "hang");
        assert!(detail.contains(&format!("blocks the interrupt signal {signo}")), "{detail}");
        assert!(detail.contains("wait_blocked"), "{detail}");
        assert_eq!(h.state(), ModuleState::Hung);
        assert_eq!(loader.list()[0].state, ModuleState::Hung);
        let calls = loader.calls_in_flight();
        assert_eq!(calls.len(), 1, "{calls:?}");
        assert_eq!(calls[0].thread, thread);
        assert_eq!(calls[0].function.as_deref(), Some("wait_blocked"));
        // No new calls, no symbols.
        let e = h.symbol_ptr("spin").unwrap_err();
        assert!(e.to_string().contains("hung"), "{e}");
        // SAFETY: the fixture's C code (not run: the module is hung).
        let e = unsafe { h.call0(spin) }.unwrap_err();
        assert!(e.to_string().contains("hung"), "{e}");
        // Unloading removes it, and leaves the thread alone.
        h.close_shared(false).expect("a hung module can be unloaded");
        assert!(loader.list().is_empty());
        // SAFETY: writes one byte from a local to the pipe this test made.
        assert_eq!(unsafe { libc::write(fds[1], b"x".as_ptr().cast(), 1) }, 1);
        assert_eq!(caller.join().unwrap(), Ok(1), "the thread ran on in the module's code");
    });
}

#[test]
fn a_module_init_that_hangs_is_interrupted_and_the_load_refused() {
    ts::within("a hung module_init", || {
        let path = ts::test_module("hang", "hang_init", &["-DHANG_INIT"]);
        let loader = Loader::builder().call_timeout(Some(Duration::from_millis(150))).build();
        // SAFETY: a fixture module this test built from its C source for the interface.
        let e = unsafe { loader.open(path.to_str().unwrap()) }.unwrap_err();
        let report = match &e {
            Error::TimedOut(r) => r,
            other => panic!("expected TimedOut, got {other:?}"),
        };
        assert_eq!(report.phase, Phase::Init);
        assert!(e.to_string().contains("module_init"), "{e}");
        assert!(e.to_string().contains("hang_init"), "{e}");
        assert!(loader.list().is_empty());
    });
}

#[test]
fn the_soft_deadline_warns_with_a_stack_sample() {
    use std::sync::mpsc;
    use std::sync::Mutex;
    ts::within("a slow call's warning", || {
        let (log_tx, log_rx) = mpsc::channel();
        let log_tx = Mutex::new(log_tx);
        let loader = Loader::builder()
            .log(move |m, level, msg| {
                let _ = log_tx.lock().unwrap().send((m.to_owned(), level, msg.to_owned()));
            })
            .build();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        loader.subscribe(move |e| {
            if let Event::CallSlow { module, function, frames, running, .. } = e {
                let _ = tx.lock().unwrap().send((
                    module.clone(),
                    function.clone(),
                    frames.clone(),
                    *running,
                ));
            }
        });
        // SAFETY: a fixture module this test built from its C source for the interface.
        let h = unsafe { loader.open(hang().to_str().unwrap()) }.unwrap();
        let spin: extern "C" fn() = sym(&h, "spin");
        let opts = CallOptions::default()
            .with_timeout(Duration::from_secs(3600))
            .with_soft_timeout(Duration::from_millis(100));
        let caller = std::thread::spawn(move || {
            // SAFETY: the fixture's C code; an interrupt skips only its frames.
            let r = unsafe { h.call0_with(&opts, spin) };
            r.map_err(|e| e.to_string())
        });
        let (module, function, frames, running) = rx.recv().unwrap();
        assert_eq!(module, "hang");
        assert_eq!(function.as_deref(), Some("spin"));
        assert!(running >= Duration::from_millis(100), "{running:?}");
        assert!(frames[0].in_module, "{frames:?}");
        assert_eq!(frames[0].symbol.as_deref(), Some("spin"), "{frames:?}");
        let warning = loop {
            let (m, level, msg) = log_rx.recv().unwrap();
            if msg.contains("still running") {
                break (m, level, msg);
            }
        };
        assert_eq!(warning.0, "hang");
        assert_eq!(warning.1, kmodlike::interface::log_level::WARNING);
        assert!(warning.2.contains("spin"), "{}", warning.2);
        // The hard deadline is an hour away: end the call on request.
        assert_eq!(loader.interrupt_calls("hang"), 1);
        let text = caller.join().unwrap().unwrap_err();
        assert!(text.contains("interrupted on request"), "{text}");
    });
}

/// A call that spends most of its time inside libc's allocator is interrupted back in the
/// module, never in malloc or free with the arena lock held: the handler lets library code
/// run on and the watchdog asks again. Twenty calls: none taints.
#[test]
fn a_loop_in_malloc_is_interrupted_in_the_module_and_taints_nothing() {
    ts::within("a loop in malloc with a deadline", || {
        for i in 0..20 {
            let (loader, h) = open_with_limit(Duration::from_millis(30));
            let f: extern "C" fn() = sym(&h, "spin_in_malloc");
            // SAFETY: the fixture's C code; an interrupt skips only its frames.
            let report = timed_out(unsafe { h.call0(f) });
            assert!(report.pc_in_module, "call {i}: stopped outside the module: {report}");
            assert!(report.taint.is_none(), "call {i}: tainted: {report}");
            assert!(loader.list().is_empty());
        }
        assert!(kmodlike::taint().is_none(), "the process is not tainted");
    });
}

/// A call stuck inside libc (spinning in `pthread_spin_lock`, never in a system call) is
/// never ended there, where one of libc's locks could be held: the watchdog asks for a
/// second, then reports it hung naming the libc function; unloading removes the module and
/// leaves the thread alone, which finishes the call once the lock is released.
#[test]
fn a_spin_inside_libc_is_reported_hung_not_ended_there() {
    ts::within("a spin inside libc with a deadline", || {
        let (loader, h) = open_with_limit(Duration::from_millis(50));
        let rx = hung_events(&loader);
        let f: extern "C" fn() = sym(&h, "spin_in_libc");
        let release: extern "C" fn() = sym(&h, "spin_release");
        let h = std::sync::Arc::new(h);
        let h2 = h.clone();
        // SAFETY: the fixture's C code; an interrupt skips only its frames.
        let caller = std::thread::spawn(move || unsafe { h2.call0(f) }.map_err(|e| e.to_string()));
        let (_, _, detail) = rx.recv().unwrap();
        assert!(detail.contains("pthread_spin_lock in libc.so.6"), "{detail}");
        assert!(detail.contains("locks held"), "{detail}");
        assert_eq!(h.state(), ModuleState::Hung);
        h.close_shared(false).expect("a hung module can be unloaded");
        assert!(loader.list().is_empty());
        // The module's code stays mapped while its thread runs in it: let the thread go.
        release();
        assert_eq!(caller.join().unwrap(), Ok(()), "the thread ran on in the module's code");
    });
}

/// A module may not take the interrupt signal for a handler of its own (it would receive the
/// watchdog's requests and its hangs would never be ended): `sigaction` fails with `EINVAL`,
/// and the module's next hang is interrupted as ever.
#[test]
fn a_module_cannot_take_the_interrupt_signal() {
    ts::within("a module taking the interrupt signal", || {
        let (loader, h) = open_with_limit(Duration::from_millis(100));
        // Installed by the loader's first deadline: make sure it is.
        let spin: extern "C" fn() = sym(&h, "spin");
        // SAFETY: the fixture's C code; an interrupt skips only its frames.
        timed_out(unsafe { h.call0(spin) });
        // SAFETY: a fixture module this test built from its C source for the interface.
        let h = unsafe { loader.open(hang().to_str().unwrap()) }.unwrap();
        let take: extern "C" fn(i32) -> i32 = sym(&h, "take_signal");
        let spin: extern "C" fn() = sym(&h, "spin");
        let signo = kmodlike::interrupt_signal();
        // SAFETY: the fixture's C code.
        assert_eq!(unsafe { h.call(take, signo) }.unwrap(), libc::EINVAL);
        // SAFETY: as above.
        let report = timed_out(unsafe { h.call0(spin) });
        assert_eq!(report.called.as_deref(), Some("spin"), "{report}");
        assert!(loader.list().is_empty());
    });
}

/// Two threads hung in the same module: both calls are ended at their deadlines (the first
/// unloads the module; the second, already running, is interrupted all the same), and the
/// module is gone once.
#[test]
fn two_threads_hung_in_one_module_are_both_interrupted() {
    ts::within("two threads hung in one module", || {
        // Long enough for both threads to be in the module before the first deadline, on a
        // loaded machine too.
        let (loader, h) = open_with_limit(Duration::from_secs(3));
        let spin: extern "C" fn() = sym(&h, "spin");
        let h = std::sync::Arc::new(h);
        let threads: Vec<_> = (0..2)
            .map(|_| {
                let h = h.clone();
                // SAFETY: the fixture's C code; an interrupt skips only its frames.
                std::thread::spawn(move || unsafe { h.call0(spin) }.map_err(|e| e.kind()))
            })
            .collect();
        // Both in the module at once (the loader lists them), well before the deadlines.
        while loader.calls_in_flight().len() < 2 {
            std::thread::yield_now();
        }
        for t in threads {
            assert_eq!(t.join().unwrap(), Err(ErrorKind::TimedOut));
        }
        assert!(loader.list().is_empty());
        assert!(loader.calls_in_flight().is_empty());
        assert!(!h.is_live());
        assert_eq!(loader.crashes().len(), 2, "both calls are booked");
    });
}
