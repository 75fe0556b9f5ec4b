//! A Rust module with a `.modinfo` dependency on a C module: the loader opens the C module
//! first (so the Rust module's reference to its `test` symbol resolves and its init sees it
//! initialised) and finalises it last.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{example_module, export, install, temp_dir, with_timeout, Logs};
use kmodlike::{Error, Loader};
use kmodlike_testsupport::{build_module, workspace_root};

const LIMIT: Duration = Duration::from_secs(60);

/// modules/dltest/dltest.c, the ddi_modopen(9F) example: `test(i)` is `i + 1` while it is
/// initialised, `-1` otherwise.
fn dltest_so() -> std::path::PathBuf {
    let src = workspace_root().join("modules/dltest/dltest.c");
    build_module("sdk_dltest.so", &[Path::new(&src)], &[])
}

#[test]
fn the_c_dependency_is_initialised_before_and_finalised_after_the_rust_module() {
    with_timeout(LIMIT, || {
        let dir = temp_dir();
        install(&dltest_so(), dir.path(), "misc/dltest.so");
        install(&example_module("rs_needs_dltest"), dir.path(), "misc/rs_needs_dltest.so");
        let logs = Logs::default();
        let loader =
            Loader::builder().module_path(vec![dir.path().to_owned()]).log(logs.sink()).build();

        let info = kmodlike::modinfo(&dir.path().join("misc/rs_needs_dltest.so")).expect("modinfo");
        assert_eq!(info.depends(), vec!["misc/dltest"], "the Rust macro wrote depends=");

        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let handle = unsafe { loader.open("misc/rs_needs_dltest") }.expect("open the Rust module");
        // Its init called dltest's test(41): 42 only if dltest's init had already run.
        let (module, _, msg) = logs.find("rs_needs_dltest init").expect("init logged");
        assert_eq!(module, "rs_needs_dltest");
        assert_eq!(msg, "rs_needs_dltest init: test(41) = 42");
        let names: Vec<String> = loader.list().into_iter().map(|m| m.name).collect();
        assert!(names.contains(&"dltest".to_owned()), "dltest was loaded: {names:?}");
        assert_eq!(handle.info().dependencies, vec!["dltest"]);

        // SAFETY: `int32_t via_dltest(int32_t)`.
        let via: extern "C" fn(i32) -> i32 = unsafe { export(&handle, "via_dltest") };
        // SAFETY: `via` is the test module's own export; a fault skips only its frames.
        assert_eq!(unsafe { handle.call(via, 5) }.unwrap(), 6);

        handle.close().map_err(|e| e.error).expect("close");
        // Its fini called test(1): 2 only if dltest was still initialised.
        let (_, _, msg) = logs.find("rs_needs_dltest fini").expect("fini logged");
        assert_eq!(msg, "rs_needs_dltest fini: test(1) = 2");
        assert!(loader.list().is_empty(), "closing the dependent released dltest too");
    });
}

#[test]
fn without_its_dependency_the_rust_module_is_refused_before_any_of_its_code_runs() {
    with_timeout(LIMIT, || {
        let dir = temp_dir();
        install(&example_module("rs_needs_dltest"), dir.path(), "misc/rs_needs_dltest.so");
        let logs = Logs::default();
        let loader =
            Loader::builder().module_path(vec![dir.path().to_owned()]).log(logs.sink()).build();
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        match unsafe { loader.open("misc/rs_needs_dltest") } {
            Err(err @ Error::Dependency { .. }) => {
                assert!(err.to_string().contains("dltest"), "the error names the dependency: {err}")
            }
            other => panic!("expected a dependency error, got {other:?}"),
        }
        assert!(logs.all().is_empty(), "the module's init never ran: {:?}", logs.all());
    });
}
