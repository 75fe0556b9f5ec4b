//! A Rust module's export that never returns is interrupted at its deadline, like a C one.

mod common;

use std::time::Duration;

use common::{example_module, export, install, temp_dir, with_timeout};
use kmodlike::{CallOptions, Error, Loader};

#[test]
fn a_rust_export_that_loops_forever_is_interrupted_at_its_deadline() {
    with_timeout(Duration::from_secs(60), || {
        let dir = temp_dir();
        let so = install(&example_module("rs_spin"), dir.path(), "rs_spin.so");
        let loader = Loader::new();
        // SAFETY: a test module of this workspace, built with kmodlike-module.
        let h = unsafe { loader.open(so.to_str().unwrap()) }.expect("open rs_spin");
        // SAFETY: `spin` is `void spin(void)`.
        let spin: extern "C" fn() = unsafe { export(&h, "spin") };
        let opts = CallOptions::default().with_timeout(Duration::from_millis(200));
        // SAFETY: the module's own export; an interrupt skips only its frames.
        let report = match unsafe { h.call0_with(&opts, spin) } {
            Err(Error::TimedOut(r)) => r,
            other => panic!("expected TimedOut, got {other:?}"),
        };
        let t = report.timeout.expect("a timeout report");
        assert!(t.ran >= Duration::from_millis(200), "{t:?}");
        assert_eq!(report.called.as_deref(), Some("spin"), "{report}");
        assert!(report.pc_in_module, "{report}");
        assert!(!h.is_live());
        assert!(loader.list().is_empty());
    });
}
