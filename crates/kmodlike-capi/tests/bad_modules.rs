//! One test per bad module, through the C API: a C host (tests/c/load_check.c) compiled
//! against the installed headers and library loads it, and each test asserts the
//! `module_error_t` *and* that `module_loader_last_error()` names the file and the cause.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{support, Prefix, Run};
use module::module_error_t::{self, *};

/// An installed prefix and the host compiled against it (each test has its own: statics are
/// never dropped, so a shared one would never be cleaned up).
fn host() -> (Prefix, PathBuf) {
    let prefix = Prefix::install();
    let exe = prefix.compile_host("load_check", &[&common::c_dir().join("load_check.c")], &[]);
    (prefix, exe)
}

/// Run the host: `load_check MODE PATH`.
fn load_check(mode: &str, path: &Path) -> Run {
    let (prefix, exe) = host();
    let run = prefix.run(&exe, &[mode, path.to_str().unwrap()], None, Duration::from_secs(60));
    run.assert_ok();
    run
}

/// Assert the call's code and that the error text contains every one of `needles`.
fn assert_failure(run: &Run, code: module_error_t, needles: &[&str]) {
    assert_eq!(run.value("code"), (code as i32).to_string(), "expected {code:?}\n{run}");
    let error = run.block("error");
    for n in needles {
        assert!(error.contains(n), "the error text lacks {n:?}: {error:?}\n{run}");
    }
    println!("{code:?}: {error}");
}

/// A directory for the test's own files, removed at the end.
fn scratch() -> tempfile::TempDir {
    tempfile::Builder::new().prefix("capi-bad-").tempdir_in(support::artifacts_dir()).unwrap()
}

/// A good module to damage.
fn good_module() -> PathBuf {
    support::test_module("bad_exports", "capi_good", &[])
}

#[test]
fn nonexistent_path_is_not_found() {
    let dir = scratch();
    let path = dir.path().join("no-such-module.so");
    let run = load_check("load", &path);
    assert_failure(&run, MODULE_ERR_NOT_FOUND, &[path.to_str().unwrap(), "not found"]);
}

#[test]
fn a_directory_is_refused() {
    let dir = scratch();
    let run = load_check("load", dir.path());
    assert_failure(&run, MODULE_ERR_LOAD_FAILED, &[dir.path().to_str().unwrap(), "directory"]);
}

#[test]
fn a_text_file_is_not_elf() {
    let dir = scratch();
    let path = dir.path().join("notes.so");
    std::fs::write(&path, "this is a text file, not a module\n").unwrap();
    let run = load_check("load", &path);
    assert_failure(&run, MODULE_ERR_LOAD_FAILED, &[path.to_str().unwrap(), "not an ELF file"]);
}

#[test]
fn an_empty_file_is_refused_as_empty() {
    let dir = scratch();
    let path = dir.path().join("empty.so");
    std::fs::write(&path, b"").unwrap();
    let run = load_check("load", &path);
    assert_failure(&run, MODULE_ERR_LOAD_FAILED, &[path.to_str().unwrap(), "empty file"]);
}

#[test]
fn a_truncated_elf_is_refused_as_truncated() {
    let dir = scratch();
    let path = dir.path().join("truncated.so");
    let bytes = std::fs::read(good_module()).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() / 3]).unwrap();
    let run = load_check("load", &path);
    assert_failure(&run, MODULE_ERR_LOAD_FAILED, &[path.to_str().unwrap(), "truncated"]);
}

#[test]
fn an_elf_for_another_architecture_is_refused_naming_it() {
    let dir = scratch();
    let path = dir.path().join("aarch64.so");
    let mut bytes = std::fs::read(good_module()).unwrap();
    // e_machine: 2 bytes at offset 18 of the ELF header; 183 is EM_AARCH64.
    bytes[18..20].copy_from_slice(&183u16.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let run = load_check("load", &path);
    assert_failure(
        &run,
        MODULE_ERR_LOAD_FAILED,
        &[path.to_str().unwrap(), "ELF file for", "AArch64", "x86-64"],
    );
}

fn missing_export(flag: &str, out: &str, export: &str) {
    let path = support::test_module("bad_exports", out, &[flag]);
    let run = load_check("load", &path);
    assert_failure(
        &run,
        MODULE_ERR_SYMBOL_NOT_FOUND,
        &[path.to_str().unwrap(), &format!("required export {export}() is missing")],
    );
}

#[test]
fn missing_module_get_interface_version_is_named() {
    missing_export("-DOMIT_VERSION", "capi_no_version", "module_get_interface_version");
}

#[test]
fn missing_module_init_is_named() {
    missing_export("-DOMIT_INIT", "capi_no_init", "module_init");
}

#[test]
fn missing_module_fini_is_named() {
    missing_export("-DOMIT_FINI", "capi_no_fini", "module_fini");
}

#[test]
fn another_interface_major_is_a_version_mismatch_showing_both() {
    let path = support::test_module("bad_version", "capi_v2_0", &["-DMAJOR=2", "-DMINOR=0"]);
    let run = load_check("load", &path);
    assert_failure(
        &run,
        MODULE_ERR_VERSION_MISMATCH,
        &[path.to_str().unwrap(), "interface version 2.0", "loader's 1.1"],
    );
}

#[test]
fn a_newer_interface_minor_is_a_version_mismatch_showing_both() {
    let path = support::test_module("bad_version", "capi_v1_99", &["-DMAJOR=1", "-DMINOR=99"]);
    let run = load_check("load", &path);
    assert_failure(
        &run,
        MODULE_ERR_VERSION_MISMATCH,
        &[path.to_str().unwrap(), "interface version 1.99", "loader's 1.1"],
    );
}

#[test]
fn an_older_interface_minor_loads() {
    let path = support::test_module("bad_version", "capi_v1_0", &["-DMAJOR=1", "-DMINOR=0"]);
    let run = load_check("load", &path);
    assert_eq!(run.value("code"), "0", "{run}");
    assert_eq!(run.value("unload"), "0", "{run}");
}

#[test]
fn module_init_returning_minus_5_is_init_failed_carrying_minus_5() {
    let path = support::test_module("bad_init", "capi_init_minus5", &[]);
    let run = load_check("load", &path);
    assert_failure(&run, MODULE_ERR_INIT_FAILED, &[path.to_str().unwrap(), "code -5"]);
    // The module logged through the host's callback before failing.
    assert!(run.stdout.contains("log(2): bad_init: refusing to initialise"), "{run}");
}

#[test]
fn a_null_path_is_an_invalid_argument() {
    let run = load_check("null", Path::new("-"));
    assert_failure(&run, MODULE_ERR_INVALID_ARGUMENT, &["module_loader_load", "path is NULL"]);
}

#[test]
fn an_empty_path_is_an_invalid_argument() {
    let run = load_check("load", Path::new(""));
    assert_failure(&run, MODULE_ERR_INVALID_ARGUMENT, &["module_loader_load", "path is empty"]);
}

#[test]
fn unload_with_nothing_loaded_is_not_loaded() {
    let run = load_check("unload", Path::new("-"));
    assert_failure(
        &run,
        MODULE_ERR_NOT_LOADED,
        &["module_loader_unload", "no module is loaded in this loader"],
    );
}

#[test]
fn a_second_load_on_a_single_module_loader_is_already_loaded() {
    let path = support::test_module("bad_init", "capi_init_ok", &["-DINIT_RESULT=0"]);
    let run = load_check("twice", &path);
    assert_eq!(run.value("first"), "0", "the first load succeeds\n{run}");
    assert_failure(
        &run,
        MODULE_ERR_ALREADY_LOADED,
        &[path.to_str().unwrap(), "capi_init_ok", "already loaded", "module_loader_unload()"],
    );
}

#[test]
fn a_legacy_module_loads_and_greets() {
    let path = support::test_module("legacy_hello", "capi_legacy_hello", &[]);
    let run = load_check("load", &path);
    assert_eq!(run.value("code"), "0", "{run}");
    assert_eq!(run.value("mod_hello"), "0", "{run}");
    assert!(run.stdout.contains("hello from a legacy module"), "{run}");
    assert_eq!(run.value("unload"), "0", "{run}");
}

#[test]
fn a_strict_loader_refuses_a_legacy_module() {
    let path = support::test_module("legacy_hello", "capi_legacy_hello", &[]);
    let run = load_check("strict", &path);
    assert_failure(
        &run,
        MODULE_ERR_LOAD_FAILED,
        &[path.to_str().unwrap(), "mod_hello()", "strict", "refuses legacy modules"],
    );
    assert!(!run.stdout.contains("hello from a legacy module"), "no module code ran\n{run}");
}

#[test]
fn a_constructor_crash_kills_a_host_without_the_probe() {
    use std::os::unix::process::ExitStatusExt;
    let path = support::test_module("bad_ctor", "capi_bad_ctor", &[]);
    let (prefix, exe) = host();
    let run = prefix.run(&exe, &["load", path.to_str().unwrap()], None, Duration::from_secs(60));
    assert_eq!(run.output.status.signal(), Some(11), "killed by SIGSEGV\n{run}");
}

#[test]
fn a_constructor_crash_under_the_probe_is_crashed_and_the_host_survives() {
    let path = support::test_module("bad_ctor", "capi_bad_ctor", &[]);
    let helper = common::probe_helper();
    let (prefix, exe) = host();
    let run = prefix.run_env(
        &exe,
        &["probe", path.to_str().unwrap()],
        None,
        &[("KMODLIKE_PROBE", &helper)],
        Duration::from_secs(60),
    );
    run.assert_ok();
    assert_failure(&run, MODULE_ERR_CRASHED, &[path.to_str().unwrap(), "SIGSEGV", "probe"]);
    assert_eq!(run.value("survived"), "1");
}
