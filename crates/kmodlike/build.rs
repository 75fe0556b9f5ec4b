//! Builds the crash guard's C shim (`src/guard/guard.c`): the `sigsetjmp` jump point, the
//! signal handler and the host-callback trampolines. See `src/guard/mod.rs` for why it is C.

fn main() {
    println!("cargo:rerun-if-changed=src/guard/guard.c");
    cc::Build::new()
        .file("src/guard/guard.c")
        .flag("-std=gnu11")
        // The shim's symbols are private to kmodlike: never exported from a shared object that
        // embeds it (libmodule.so exports only module_loader_* names).
        .flag("-fvisibility=hidden")
        .warnings(true)
        .extra_warnings(true)
        .compile("kmodlike_guard");
}
