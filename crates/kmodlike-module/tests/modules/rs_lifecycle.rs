//! Test module: the whole SDK surface in one module. Built as a cdylib example of
//! kmodlike-module and loaded by `tests/loader.rs`.

use std::sync::atomic::{AtomicBool, Ordering};

use kmodlike_module::{export, host, log_info, module, Context, InitError};

static BUSY: AtomicBool = AtomicBool::new(false);

module! {
    init: init,
    fini: || log_info!("rs_lifecycle fini"),
    can_unload: || !BUSY.load(Ordering::SeqCst),
    description: "SDK test module: lifecycle, host context, panics in exports",
    license: "MIT OR Apache-2.0",
    author: "The kmodlike developers",
}

fn init(ctx: &Context) -> Result<(), InitError> {
    ctx.info(&format!(
        "rs_lifecycle init: args version {:?}, user_data {:#x}",
        ctx.init_args_version(),
        ctx.user_data().addr()
    ));
    Ok(())
}

export! {
    /// Greets through the host's log.
    fn mod_hello() {
        log_info!("Hello from rs_lifecycle");
    }

    /// `a + b`; panics on overflow, so returns `i32::MIN`.
    fn add(a: i32, b: i32) -> i32 {
        a.checked_add(b).expect("add overflowed")
    }

    /// `2 * i`; panics on overflow, so returns `i32::MIN` (an `int f(int)`, which
    /// `kmodctl call --arg` can call).
    fn double(i: i32) -> i32 {
        i.checked_mul(2).expect("double overflowed")
    }

    /// The host's `user_data`, as kept since init.
    fn user_data_addr() -> usize {
        host().user_data().addr()
    }

    /// The host's clock, as kept since init.
    fn now_ns() -> u64 {
        host().now_ns()
    }

    /// Veto (or allow) the next unload.
    fn set_busy(busy: bool) {
        BUSY.store(busy, Ordering::SeqCst);
    }

    /// A panic with a non-string payload; returns `u32::MAX`.
    fn panic_any_payload() -> u32 {
        std::panic::panic_any(42u8)
    }

    /// Panics on a thread the module starts (not inside an export): the thread ends, the
    /// message still reaches the host's log. Returns whether the thread panicked.
    fn thread_panics() -> bool {
        std::thread::Builder::new()
            .name("rs-worker".into())
            .spawn(|| panic!("worker thread gave up"))
            .expect("spawn")
            .join()
            .is_err()
    }

    /// A panic while unwinding from a panic: Rust aborts the process (SIGABRT inside the
    /// module), which the loader's guard contains.
    fn double_panic() {
        struct PanicsOnDrop;
        impl Drop for PanicsOnDrop {
            fn drop(&mut self) {
                panic!("second panic, in a destructor during unwinding");
            }
        }
        let _armed = PanicsOnDrop;
        panic!("first panic");
    }

    /// `std::process::abort()`: SIGABRT raised by the module's own code, never a taint.
    fn abort_now() -> i32 {
        std::process::abort()
    }
}
