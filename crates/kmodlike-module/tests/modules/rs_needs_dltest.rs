//! Test module: a Rust module that depends on the C module `misc/dltest` (modules/dltest) and
//! calls its `test` symbol directly. `test(i)` returns `i + 1` only while dltest is initialised,
//! so this module's init and fini see whether the loader ran dltest's init first and its fini
//! last.

use std::ffi::c_int;

use kmodlike_module::{export, log_info, module, Context, InitError};

extern "C" {
    /// From dltest.so, resolved by the dynamic linker because the loader opened dltest first
    /// (RTLD_GLOBAL).
    fn test(i: c_int) -> c_int;
}

fn dltest(i: i32) -> i32 {
    // SAFETY: `test` is dltest's `int test(int)`; it takes and returns plain integers.
    unsafe { test(i) }
}

module! {
    init: init,
    fini: || log_info!("rs_needs_dltest fini: test(1) = {}", dltest(1)),
    depends: "misc/dltest",
    description: "SDK test module: depends on the C module misc/dltest",
}

fn init(ctx: &Context) -> Result<(), InitError> {
    let got = dltest(41);
    ctx.info(&format!("rs_needs_dltest init: test(41) = {got}"));
    if got != 42 {
        return Err(InitError::msg(format!("dltest is not initialised: test(41) = {got}")));
    }
    Ok(())
}

export! {
    /// dltest's `test(i)`, through this module.
    fn via_dltest(i: i32) -> i32 = dltest;
}
