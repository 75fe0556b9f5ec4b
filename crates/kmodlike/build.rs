//! Builds the crash guard's C shim (`src/guard/*.c`, and the fast entry `fast_x86_64.S` on
//! x86_64): the signal handler, the guarded-call entries, the host-callback trampolines. See
//! `src/guard/mod.rs` for why it is C and assembly.

fn main() {
    const FILES: [&str; 9] = [
        "guard.c",
        "fast.c",
        "text.c",
        "stack.c",
        "park.c",
        "sample.c",
        "interpose.c",
        "arena.c",
        "interrupt.c",
    ];
    println!("cargo:rerun-if-changed=src/guard/shim.h");
    let mut build = cc::Build::new();
    for f in FILES {
        println!("cargo:rerun-if-changed=src/guard/{f}");
        build.file(format!("src/guard/{f}"));
    }
    if std::env::var("CARGO_CFG_TARGET_ARCH").as_deref() == Ok("x86_64") {
        println!("cargo:rerun-if-changed=src/guard/fast_x86_64.S");
        build.file("src/guard/fast_x86_64.S");
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
