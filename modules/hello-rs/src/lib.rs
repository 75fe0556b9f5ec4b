//! The kmodlike example module, written in Rust with `kmodlike-module`: the twin of
//! `modules/hello/hello.c`. It logs when it initialises and finalises, and its `mod_hello`
//! greets through the host's log.
//!
//! Built by `make mod` into `build/modules/misc/hello-rs.so`, beside `hello.so`:
//!
//! ```text
//! $ kmodctl load misc/hello-rs && kmodctl call hello-rs mod_hello
//! ```
//!
//! It is written without `unsafe`, and says so. What the SDK's macros generate in this crate
//! (the `#[no_mangle]` exports, `module_init`'s `unsafe extern "C" fn` and its `unsafe` block,
//! the `.modinfo` statics) is the SDK's responsibility, and rustc does not count code expanded
//! from another crate's macro against `forbid(unsafe_code)`: the workspace build checks that a
//! module using `module!` and `export!` can forbid `unsafe` outright.
#![forbid(unsafe_code)]

use kmodlike_module::{export, log_info, module, Context, InitError, Level};

module! {
    init: init,
    fini: fini,
    description: "The kmodlike example module in Rust: greets through the host's log",
    license: "MIT OR Apache-2.0",
    author: "The kmodlike developers",
}

fn init(ctx: &Context) -> Result<(), InitError> {
    ctx.log(Level::Info, "module initializing");
    Ok(())
}

fn fini() {
    log_info!("module finalizing");
}

export! {
    /// `void mod_hello(void)`: the legacy entry point the main program calls after a load.
    fn mod_hello() {
        log_info!("Hello from the kmodlike example module, written in Rust!");
    }
}
