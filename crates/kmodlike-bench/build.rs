//! Builds the baselines the benchmarks compare kmodlike with (`c/baselines.c`): a naive
//! `sigsetjmp(env, 1)` guard, a bare `raise(SIGUSR1)` round trip, a faulting function.

fn main() {
    println!("cargo:rerun-if-changed=c/baselines.c");
    cc::Build::new()
        .file("c/baselines.c")
        .flag("-std=gnu11")
        .opt_level(2)
        .warnings(true)
        .extra_warnings(true)
        .compile("kmodlike_bench_baselines");
}
