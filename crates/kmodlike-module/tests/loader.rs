//! Modules written with the SDK, loaded by the real loader through the Rust API: the host's
//! arguments reach `init` and later exports, logs go to the host's log, and panics in `init`,
//! exports, `can_unload` and module threads are contained as the crate documents.

mod common;

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::Mutex;
use std::time::Duration;

use common::{call2, example_module, export, install, temp_dir, with_timeout, Logs};
use kmodlike::{BusyReason, Error, InitArgs, Loader, ModuleInitArgs, OpenOptions};

const LIMIT: Duration = Duration::from_secs(60);

/// A loader whose log sink records into `logs`.
fn loader_with_logs(logs: &Logs) -> Loader {
    Loader::builder().log(logs.sink()).build()
}

#[test]
fn mod_hello_greets_through_the_hosts_log_and_fini_logs_on_close() {
    with_timeout(LIMIT, || {
        let dir = temp_dir();
        let so = install(&example_module("rs_lifecycle"), dir.path(), "rs_lifecycle.so");
        let logs = Logs::default();
        let loader = loader_with_logs(&logs);

        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle = unsafe { loader.open(so.to_str().unwrap()) }.expect("open rs_lifecycle");
        assert_eq!(handle.name(), "rs_lifecycle");
        let info = handle.info();
        assert_eq!(
            info.interface_version.map(|v| v.raw()),
            Some(kmodlike_module::INTERFACE_VERSION)
        );
        assert!(
            info.modinfo.contains(&("license".into(), "MIT OR Apache-2.0".into())),
            "{:?}",
            info.modinfo
        );
        assert!(
            info.modinfo.contains(&("version".into(), env!("CARGO_PKG_VERSION").into())),
            "the version defaults to the crate's: {:?}",
            info.modinfo
        );

        // SAFETY: mod_hello is `void mod_hello(void)`.
        let hello: extern "C" fn() = unsafe { export(&handle, "mod_hello") };
        // SAFETY: `hello` is the test module's own export; a fault skips only its frames.
        unsafe { handle.call0(hello) }.expect("mod_hello");
        let (module, level, _) =
            logs.find("Hello from rs_lifecycle").expect("mod_hello logged its greeting");
        assert_eq!((module.as_str(), level), ("rs_lifecycle", 0));
        assert!(logs.position("rs_lifecycle init") < logs.position("Hello from rs_lifecycle"));

        handle.close().map_err(|e| e.error).expect("close");
        assert!(logs.position("Hello from rs_lifecycle") < logs.position("rs_lifecycle fini"));
        assert!(loader.list().is_empty());
    });
}

// The host side of InitArgs::Raw: a C-style host's own callbacks.
static RAW_LOG: Mutex<Vec<(c_int, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn raw_log(level: c_int, msg: *const c_char) {
    // SAFETY: modules pass a NUL-terminated string, valid for the call.
    let msg = unsafe { CStr::from_ptr(msg) }.to_string_lossy().into_owned();
    RAW_LOG.lock().unwrap().push((level, msg));
}

unsafe extern "C" fn raw_time() -> u64 {
    123_456_789
}

#[test]
fn init_and_later_exports_see_the_hosts_own_log_clock_and_user_data() {
    with_timeout(LIMIT, || {
        let dir = temp_dir();
        let so = install(&example_module("rs_lifecycle"), dir.path(), "rs_lifecycle.so");
        let loader = Loader::new();
        let args = ModuleInitArgs {
            version: 1,
            log: Some(raw_log),
            get_time: Some(raw_time),
            user_data: 0xfeed as *mut c_void,
        };
        let opts = OpenOptions { init_args: InitArgs::Raw(args), ..OpenOptions::default() };
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle = unsafe { loader.open_with(so.to_str().unwrap(), &opts) }.expect("open");

        let seen = RAW_LOG.lock().unwrap().clone();
        assert!(
            seen.contains(&(0, "rs_lifecycle init: args version Some(1), user_data 0xfeed".into())),
            "init logged through the host's own callback what it received: {seen:?}"
        );
        // SAFETY: both are `T f(void)` with the declared return types.
        let (user_data, now): (extern "C" fn() -> usize, extern "C" fn() -> u64) =
            unsafe { (export(&handle, "user_data_addr"), export(&handle, "now_ns")) };
        assert_eq!(
            // SAFETY: `user_data` is the test module's own export; a fault skips only its frames.
            unsafe { handle.call0(user_data) }.unwrap(),
            0xfeed,
            "user_data is kept after init"
        );
        // SAFETY: `now` is the test module's own export; a fault skips only its frames.
        assert_eq!(unsafe { handle.call0(now) }.unwrap(), 123_456_789, "the host's clock is used");
        handle.close().map_err(|e| e.error).expect("close");
    });
}

#[test]
fn without_init_args_the_module_loads_logs_nothing_and_reads_the_monotonic_clock() {
    with_timeout(LIMIT, || {
        let dir = temp_dir();
        let so = install(&example_module("rs_lifecycle"), dir.path(), "rs_lifecycle.so");
        let logs = Logs::default();
        let loader = loader_with_logs(&logs);
        let opts = OpenOptions { init_args: InitArgs::Null, ..OpenOptions::default() };
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle =
            unsafe { loader.open_with(so.to_str().unwrap(), &opts) }.expect("open with NULL args");
        // SAFETY: signatures as declared in rs_lifecycle.
        let (hello, now): (extern "C" fn(), extern "C" fn() -> u64) =
            unsafe { (export(&handle, "mod_hello"), export(&handle, "now_ns")) };
        // SAFETY: `hello` is the test module's own export; a fault skips only its frames.
        unsafe { handle.call0(hello) }.unwrap();
        // SAFETY: `now` is the test module's own export; a fault skips only its frames.
        let (a, b) = (unsafe { handle.call0(now) }.unwrap(), unsafe { handle.call0(now) }.unwrap());
        assert!(a > 0 && b >= a, "CLOCK_MONOTONIC: {a} then {b}");
        handle.close().map_err(|e| e.error).unwrap();
        assert!(logs.all().is_empty(), "no log without a host log: {:?}", logs.all());
    });
}

#[test]
fn a_panic_in_an_export_returns_its_panic_value_logs_the_message_and_the_module_lives_on() {
    with_timeout(LIMIT, || {
        let dir = temp_dir();
        let so = install(&example_module("rs_lifecycle"), dir.path(), "rs_lifecycle.so");
        let logs = Logs::default();
        let loader = loader_with_logs(&logs);
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle = unsafe { loader.open(so.to_str().unwrap()) }.expect("open");
        // SAFETY: signatures as declared in rs_lifecycle.
        let (add, any): (extern "C" fn(i32, i32) -> i32, extern "C" fn() -> u32) =
            unsafe { (export(&handle, "add"), export(&handle, "panic_any_payload")) };

        assert_eq!(call2(&handle, add, 2, 3).unwrap(), 5);
        assert_eq!(call2(&handle, add, i32::MAX, 1).unwrap(), i32::MIN, "the panic value");
        let (module, level, msg) = logs.find("panic in `add`").expect("the panic was logged");
        assert_eq!((module.as_str(), level), ("rs_lifecycle", 2));
        assert!(msg.contains("add overflowed"), "the message: {msg}");
        assert!(msg.contains("rs_lifecycle.rs:"), "the location: {msg}");

        // SAFETY: `any` is the test module's own export; a fault skips only its frames.
        assert_eq!(unsafe { handle.call0(any) }.unwrap(), u32::MAX);
        let (_, _, msg) = logs.find("panic in `panic_any_payload`").expect("logged");
        assert!(msg.contains("non-string panic payload"), "{msg}");

        assert!(handle.is_live(), "a caught panic does not unload the module");
        assert_eq!(call2(&handle, add, 20, 22).unwrap(), 42, "and it still works");
        assert!(loader.crashes().is_empty(), "a caught panic is not a crash");
        handle.close().map_err(|e| e.error).expect("close");
    });
}

#[test]
fn a_panic_on_a_thread_the_module_started_ends_only_that_thread() {
    with_timeout(LIMIT, || {
        let dir = temp_dir();
        let so = install(&example_module("rs_lifecycle"), dir.path(), "rs_lifecycle.so");
        let loader = Loader::new();
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle = unsafe { loader.open(so.to_str().unwrap()) }.expect("open");
        // SAFETY: `bool thread_panics(void)`.
        let thread_panics: extern "C" fn() -> bool = unsafe { export(&handle, "thread_panics") };
        assert!(
            // SAFETY: `thread_panics` is the test module's own export; a fault skips only its frames.
            unsafe { handle.call0(thread_panics) }.unwrap(),
            "the worker thread panicked and was joined"
        );
        assert!(handle.is_live());
        handle.close().map_err(|e| e.error).expect("close");
    });
}

#[test]
fn a_panic_in_init_fails_the_load_with_init_failed_and_logs_the_message() {
    with_timeout(LIMIT, || {
        let dir = temp_dir();
        let so = install(&example_module("rs_init_panics"), dir.path(), "rs_init_panics.so");
        let logs = Logs::default();
        let loader = loader_with_logs(&logs);
        for attempt in 0..2 {
            // SAFETY: a test module of this workspace, built with kmodlike-module.
            match unsafe { loader.open(so.to_str().unwrap()) } {
                Err(Error::InitFailed { module, code, .. }) => {
                    assert_eq!(module, "rs_init_panics");
                    assert_eq!(code, kmodlike_module::INIT_PANICKED, "attempt {attempt}");
                }
                other => panic!("expected InitFailed, got {other:?}"),
            }
        }
        let (module, level, msg) = logs.find("init exploded on purpose").expect("logged");
        assert_eq!((module.as_str(), level), ("rs_init_panics", 2));
        assert!(msg.contains("panic in `module_init`"), "{msg}");
        assert!(loader.list().is_empty());
        assert!(loader.crashes().is_empty(), "a panic is not a crash");
    });
}

#[test]
fn an_init_error_fails_the_load_with_its_code_and_its_message_in_the_log() {
    with_timeout(LIMIT, || {
        let dir = temp_dir();
        let so = install(&example_module("rs_init_fails"), dir.path(), "rs_init_fails.so");
        let logs = Logs::default();
        let loader = loader_with_logs(&logs);
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        match unsafe { loader.open(so.to_str().unwrap()) } {
            Err(Error::InitFailed { code, .. }) => assert_eq!(code, -7),
            other => panic!("expected InitFailed, got {other:?}"),
        }
        let (_, level, msg) = logs.find("no widgets configured").expect("logged");
        assert_eq!(level, 2);
        assert_eq!(msg, "module_init failed: no widgets configured (code -7)");
    });
}

#[test]
fn can_unload_vetoes_the_close_until_the_module_allows_it() {
    with_timeout(LIMIT, || {
        let dir = temp_dir();
        let so = install(&example_module("rs_lifecycle"), dir.path(), "rs_lifecycle.so");
        let logs = Logs::default();
        let loader = loader_with_logs(&logs);
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle = unsafe { loader.open(so.to_str().unwrap()) }.expect("open");
        // SAFETY: `void set_busy(bool)`.
        let set_busy: extern "C" fn(bool) = unsafe { export(&handle, "set_busy") };

        // SAFETY: `set_busy` is the test module's own export; a fault skips only its frames.
        unsafe { handle.call(set_busy, true) }.unwrap();
        let refused = handle.close().expect_err("can_unload said no");
        assert!(
            matches!(refused.error, Error::Busy { reason: BusyReason::Veto(1), .. }),
            "{:?}",
            refused.error
        );
        assert!(logs.find("rs_lifecycle fini").is_none(), "fini did not run");
        let handle = refused.handle.expect("the handle comes back for a retry");
        assert!(handle.is_live());

        // SAFETY: `set_busy` is the test module's own export; a fault skips only its frames.
        unsafe { handle.call(set_busy, false) }.unwrap();
        handle.close().map_err(|e| e.error).expect("now the close goes through");
        assert!(logs.find("rs_lifecycle fini").is_some());
    });
}

#[test]
fn panic_messages_go_to_the_hosts_log_instead_of_stderr_and_to_stderr_without_one() {
    const CHILD: &str = "KMODLIKE_SDK_STDERR_CHILD";
    if std::env::var_os(CHILD).is_some() {
        // The child: panics with a host log, then without one.
        let dir = temp_dir();
        let logs = Logs::default();
        let logged = loader_with_logs(&logs);
        let so = install(&example_module("rs_init_panics"), dir.path(), "rs_init_panics.so");
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        assert!(unsafe { logged.open(so.to_str().unwrap()) }.is_err());
        let so = install(&example_module("rs_lifecycle"), dir.path(), "logged/rs_lifecycle.so");
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle = unsafe { logged.open(so.to_str().unwrap()) }.unwrap();
        // SAFETY: `int32_t add(int32_t, int32_t)`.
        let add: extern "C" fn(i32, i32) -> i32 = unsafe { export(&handle, "add") };
        assert_eq!(call2(&handle, add, i32::MAX, 1).unwrap(), i32::MIN);
        assert!(logs.find("init exploded on purpose").is_some());
        assert!(logs.find("add overflowed").is_some());

        let silent = Loader::new();
        let so = install(&example_module("rs_lifecycle"), dir.path(), "silent/rs_lifecycle.so");
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle = unsafe { silent.open(so.to_str().unwrap()) }.unwrap();
        // SAFETY: `uint32_t panic_any_payload(void)`.
        let any: extern "C" fn() -> u32 = unsafe { export(&handle, "panic_any_payload") };
        // SAFETY: `any` is the test module's own export; a fault skips only its frames.
        assert_eq!(unsafe { handle.call0(any) }.unwrap(), u32::MAX);
        return;
    }
    let name = "panic_messages_go_to_the_hosts_log_instead_of_stderr_and_to_stderr_without_one";
    let out = common::run(
        std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(CHILD, "1")
            .env("RUST_BACKTRACE", "0"),
        LIMIT,
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "child failed:\n{stderr}");
    assert!(
        !stderr.contains("init exploded on purpose"),
        "logged panics stay off stderr:\n{stderr}"
    );
    assert!(!stderr.contains("add overflowed"), "logged panics stay off stderr:\n{stderr}");
    assert!(
        stderr.contains("panicked at") && stderr.contains("rs_lifecycle.rs"),
        "without a host log, Rust's default hook reports the panic on stderr:\n{stderr}"
    );
}
