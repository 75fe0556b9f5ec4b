//! The probe helper, exactly as `kmodlike-probe` (the same entry point), built by the same cargo
//! invocation as the benchmarks so they always find a fresh one (`CARGO_BIN_EXE_*`).

fn main() {
    kmodlike::probe::probe_child_main()
}
