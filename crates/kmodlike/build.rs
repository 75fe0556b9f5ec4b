//! Builds the crash guard's C shim (`src/guard/*.c`): the `sigsetjmp` jump point, the
//! signal handler and the host-callback trampolines. See `src/guard/mod.rs` for why it is C.

fn main() {
    const FILES: [&str; 6] = ["guard.c", "text.c", "stack.c", "park.c", "sample.c", "interpose.c"];
    println!("cargo:rerun-if-changed=src/guard/shim.h");
    let mut build = cc::Build::new();
    for f in FILES {
        println!("cargo:rerun-if-changed=src/guard/{f}");
        build.file(format!("src/guard/{f}"));
    }
    build
        .flag("-std=gnu11")
        // The shim's symbols are private to kmodlike: never exported from a shared object that
        // embeds it (libmodule.so exports only module_loader_* names).
        .flag("-fvisibility=hidden")
        .warnings(true)
        .extra_warnings(true)
        .compile("kmodlike_guard");
}
