//! Safe code cannot reach undefined behaviour through the loader: a `#![forbid(unsafe_code)]`
//! program can neither open a module (which runs the file's native code) nor make a guarded
//! call of a function of its own (whose frames a crash would skip without running their
//! destructors). Each case in tests/ui/ must fail to compile with the `.stderr` next to it
//! (`TRYBUILD=overwrite cargo test -p kmodlike --test soundness` refreshes them after a
//! deliberate change).

#[test]
fn compile_fail() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
