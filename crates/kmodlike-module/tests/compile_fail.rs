//! The macros reject, at compile time, modules whose functions have the wrong signature; each
//! case in tests/ui/ is compiled and its compiler output compared with the `.stderr` next to it
//! (`TRYBUILD=overwrite cargo test -p kmodlike-module --test compile_fail` refreshes them after
//! a deliberate change).

#[test]
fn wrong_signatures_are_compile_errors() {
    let t = trybuild::TestCases::new();
    t.compile_fail("tests/ui/*.rs");
}
