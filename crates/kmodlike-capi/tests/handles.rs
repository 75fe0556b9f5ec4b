//! The handle API (issue 4) and the crash guard (issue 3) through C: tests/c/handle_api.c,
//! compiled against the installed headers and library, run one scenario per test.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{support, Prefix, Run};
use module::module_error_t::*;

/// An installed prefix and the host compiled against it (each test has its own: statics are
/// never dropped, so a shared one would never be cleaned up).
fn host() -> (Prefix, PathBuf) {
    let prefix = Prefix::install();
    let exe = prefix.compile_host("handle_api", &[&common::c_dir().join("handle_api.c")], &[]);
    (prefix, exe)
}

fn handle_api(args: &[&str]) -> Run {
    let (prefix, exe) = host();
    let run = prefix.run(&exe, args, None, Duration::from_secs(60));
    run.assert_ok();
    run
}

/// A module directory: `<dir>/misc/dltest.so` and `<dir>/misc/hello.so`, from the example
/// modules' sources.
fn module_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("capi-mods-").tempdir_in(support::artifacts_dir());
    let dir = dir.unwrap();
    let misc = dir.path().join("misc");
    std::fs::create_dir_all(&misc).unwrap();
    let root = support::workspace_root();
    for name in ["dltest", "hello"] {
        let src = root.join(format!("modules/{name}/{name}.c"));
        let built = support::build_module(&format!("capi_{name}.so"), &[&src], &[]);
        std::fs::copy(built, misc.join(format!("{name}.so"))).unwrap();
    }
    dir
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn code(c: module::module_error_t) -> String {
    (c as i32).to_string()
}

#[test]
fn the_man_page_example_opens_dltest_by_name() {
    let dir = module_dir();
    let run = handle_api(&["dltest", s(dir.path())]);
    assert_eq!(run.value("test(0)"), "1", "{run}");
    assert_eq!(run.value("close"), code(MODULE_ERR_SUCCESS), "{run}");
}

#[test]
fn specs_are_resolved_along_the_path_and_may_not_escape_it() {
    let dir = module_dir();
    let run = handle_api(&["specs", s(dir.path())]);
    println!("{run}");
    assert_eq!(run.value("nosuch"), code(MODULE_ERR_NOT_FOUND), "{run}");
    let tried = dir.path().join("misc/nosuch.so");
    assert!(run.value("nosuch_error").contains(s(&tried)), "lists the places tried\n{run}");
    assert_eq!(run.value("dotdot"), code(MODULE_ERR_INVALID_ARGUMENT), "{run}");
    assert!(run.value("dotdot_error").contains(".."), "{run}");
    assert_eq!(run.value("emptyseg"), code(MODULE_ERR_INVALID_ARGUMENT), "{run}");
    assert!(run.value("emptyseg_error").contains("empty segment"), "{run}");
    assert!(run.value("badflags_error").contains("unknown flags 0x7"), "{run}");
    assert_eq!(run.value("nosym"), code(MODULE_ERR_SYMBOL_NOT_FOUND), "{run}");
    assert!(run.value("nosym_error").contains("no_such_symbol"), "{run}");
    assert_eq!(run.value("libcsym"), code(MODULE_ERR_SYMBOL_NOT_FOUND), "{run}");
    assert!(run.value("libcsym_error").contains("printf"), "{run}");
}

#[test]
fn two_opens_run_init_once_and_fini_on_the_last_close() {
    let dir = module_dir();
    let run = handle_api(&["refcount", s(dir.path())]);
    println!("{run}");
    let line = |key: &str| {
        run.stdout.lines().find(|l| l.starts_with(key)).unwrap_or_else(|| panic!("{key}\n{run}"))
    };
    assert_eq!(line("after_two_opens"), "after_two_opens inits=1 finis=0");
    assert_eq!(run.value("close_first"), code(MODULE_ERR_SUCCESS));
    assert_eq!(line("after_one_close"), "after_one_close inits=1 finis=0");
    assert_eq!(run.value("call_hello"), code(MODULE_ERR_SUCCESS));
    assert!(run.stdout.contains("log(0): Hello from the kmodlike example module!"), "{run}");
    assert_eq!(run.value("close_second"), code(MODULE_ERR_SUCCESS));
    assert_eq!(line("after_two_closes"), "after_two_closes inits=1 finis=1");
}

#[test]
fn a_firmware_blob_opens_in_data_mode_and_is_refused_as_a_module() {
    let dir = tempfile::Builder::new().prefix("capi-fw-").tempdir_in(support::artifacts_dir());
    let dir = dir.unwrap();
    let blob: Vec<u8> = (0..4099u32).map(|i| (i * 7 + i / 13) as u8).collect();
    std::fs::write(dir.path().join("fw.bin"), &blob).unwrap();
    // The recipe: objcopy wraps the blob into an object, cc makes it a shared object.
    let objcopy = Command::new("objcopy")
        .current_dir(dir.path())
        .args(["-I", "binary", "-O", "elf64-x86-64", "-B", "i386:x86-64", "fw.bin", "fw.o"])
        .output()
        .expect("objcopy");
    assert!(objcopy.status.success(), "{}", String::from_utf8_lossy(&objcopy.stderr));
    let link = Command::new(support::cc())
        .current_dir(dir.path())
        .args(["-shared", "-Wl,-z,noexecstack", "-o", "fw.so", "fw.o"])
        .output()
        .expect("cc");
    assert!(link.status.success(), "{}", String::from_utf8_lossy(&link.stderr));

    let fw = dir.path().join("fw.so");
    let out = dir.path().join("extracted.bin");
    let run = handle_api(&["data", s(&fw), s(&out)]);
    println!("{run}");
    assert_eq!(run.value("nbytes"), blob.len().to_string());
    assert_eq!(std::fs::read(&out).unwrap(), blob, "the bytes between _start and _end");
    assert_eq!(run.value("close_data"), code(MODULE_ERR_SUCCESS));
    assert_eq!(run.value("open_default"), code(MODULE_ERR_LOAD_FAILED), "{run}");
    let error = run.value("open_default_error");
    assert!(error.contains(s(&fw)) && error.contains("not a module"), "{run}");
}

#[test]
fn modinfo_lists_the_metadata_by_name_and_by_path() {
    let dir = module_dir();
    let run = handle_api(&["modinfo", s(dir.path()), "hello"]);
    // In file order, which is the compiler's choice: compare as a set.
    let mut info: Vec<&str> = run.stdout.lines().filter_map(|l| l.strip_prefix("info:")).collect();
    info.sort_unstable();
    assert_eq!(
        info,
        [
            "author=The kmodlike developers",
            "description=The kmodlike example module: greets through the host's log",
            "license=MIT OR Apache-2.0",
            "version=1.0.0",
        ],
        "{run}"
    );
    assert_eq!(run.value("entries"), "4");
    assert_eq!(run.value("stopped_after"), "1", "a non-zero return stops the walk");
    let by_path = dir.path().join("misc/dltest.so");
    let run = handle_api(&["modinfo", s(dir.path()), s(&by_path)]);
    assert!(run.stdout.contains("info:version=1.0.0"), "{run}");
    assert_eq!(run.value("entries"), "3", "{run}");
}

#[test]
fn modinfo_runs_no_module_code() {
    // A module whose constructor would kill the process: reading its metadata runs nothing.
    let src = support::test_modules_dir().join("bad_crash.c");
    let dir = tempfile::Builder::new().prefix("capi-ctor-").tempdir_in(support::artifacts_dir());
    let dir = dir.unwrap();
    let ctor = dir.path().join("ctor.c");
    std::fs::write(
        &ctor,
        "#include \"module_interface.h\"\n#include <stdlib.h>\n\
         MODULE_VERSION(\"6.6.6\");\nMODULE_DESCRIPTION(\"kills whoever loads it\");\n\
         __attribute__((constructor)) static void die(void) { abort(); }\n",
    )
    .unwrap();
    let so = support::build_module("capi_ctor_abort.so", &[&src, &ctor], &[]);
    let run = handle_api(&["modinfo", s(dir.path()), s(&so)]);
    assert!(run.stdout.contains("info:version=6.6.6"), "{run}");
    assert!(run.stdout.contains("info:description=kills whoever loads it"), "{run}");
}

#[test]
fn a_vetoed_close_keeps_the_handle_valid_for_a_retry() {
    let path = support::test_module("bad_veto", "capi_bad_veto", &[]);
    let run = handle_api(&["veto", s(&path)]);
    println!("{run}");
    assert_eq!(run.value("close_refused"), code(MODULE_ERR_BUSY), "{run}");
    let error = run.value("close_refused_error");
    assert!(error.contains("capi_bad_veto") && error.contains("refused with 16"), "{run}");
    assert_eq!(run.value("alive_after_refusal"), "1", "still loaded, fini not run");
    assert_eq!(run.value("close_agreed"), code(MODULE_ERR_SUCCESS), "{run}");
    assert_eq!(run.value("unload_refused"), code(MODULE_ERR_BUSY), "{run}");
    assert!(run.value("unload_refused_error").contains("refused with 16"), "{run}");
    assert_eq!(run.value("get_symbol_after_refusal"), code(MODULE_ERR_SUCCESS), "{run}");
    assert_eq!(run.value("unload_agreed"), code(MODULE_ERR_SUCCESS), "{run}");
}

#[test]
fn guarded_calls_survive_crashes_and_report_them() {
    let path = support::test_module("bad_crash", "capi_bad_crash", &[]);
    let run = handle_api(&["crash", s(&path)]);
    println!("{run}");
    assert_eq!(run.value("before_last_crash"), code(MODULE_ERR_NOT_FOUND), "no crash yet");
    assert_eq!(run.value("first_value"), "1");
    assert_eq!(run.value("second_value"), "2");

    // SIGSEGV through module_loader_call().
    assert_eq!(run.value("segv"), code(MODULE_ERR_CRASHED), "{run}");
    let error = run.value("segv_error");
    assert!(error.contains("capi_bad_crash") && error.contains("SIGSEGV"), "{run}");
    assert_eq!(run.value("segv_last_crash"), code(MODULE_ERR_SUCCESS));
    assert_eq!(run.value("segv_signal"), "11");
    assert_eq!(run.value("segv_signal_name"), "SIGSEGV");
    assert_eq!(run.value("segv_si_code_name"), "SEGV_MAPERR");
    assert_eq!(run.value("segv_fault_addr"), "0x10");
    assert_eq!(run.value("segv_pc_in_module"), "1");
    assert_ne!(run.value("segv_module_offset"), "0");
    assert_eq!(run.value("segv_module"), "capi_bad_crash");
    assert!(run.value("segv_symbol").starts_with("crash_segv"), "{run}");
    assert_eq!(run.value("segv_path"), s(&path));
    assert_eq!(run.value("segv_phase"), "4", "MODULE_CRASH_IN_CALL");
    assert_eq!(run.value("segv_tainted"), "0");
    assert!(run.value("segv_time_sec").parse::<i64>().unwrap() > 1_600_000_000);
    assert!(run.value("segv_thread_id").parse::<i32>().unwrap() > 0);

    // The module is gone; a new load is a fresh instance.
    assert_eq!(run.value("get_symbol_after_crash"), code(MODULE_ERR_NOT_LOADED), "{run}");
    assert!(run.value("get_symbol_after_crash_error").contains("crashed"), "{run}");
    assert_eq!(run.value("unload_after_crash"), code(MODULE_ERR_NOT_LOADED), "{run}");
    assert_eq!(run.value("value_after_reload"), "1", "fresh static data after the reload");

    // abort() from module code.
    assert_eq!(run.value("abort"), code(MODULE_ERR_CRASHED), "{run}");
    assert_eq!(run.value("abort_signal_name"), "SIGABRT");

    // SIGFPE through a handle; the module's other handle sees it gone.
    assert_eq!(run.value("fpe"), code(MODULE_ERR_CRASHED), "{run}");
    assert_eq!(run.value("fpe_signal_name"), "SIGFPE");
    assert_eq!(run.value("fpe_si_code_name"), "FPE_INTDIV");
    assert_eq!(run.value("sym_after_crash"), code(MODULE_ERR_NOT_LOADED), "{run}");
    assert_eq!(run.value("call_after_crash"), code(MODULE_ERR_NOT_LOADED), "{run}");
    assert_eq!(run.value("close_crashed"), code(MODULE_ERR_SUCCESS), "{run}");
    assert_eq!(run.value("close_crashed2"), code(MODULE_ERR_SUCCESS), "{run}");
    assert_eq!(run.value("tainted"), "0", "no crash in libc here: {run}");
    assert_eq!(run.value("survived"), "1");
}

#[test]
fn the_extended_crash_info_the_backtrace_and_clearing_the_taint() {
    let path = support::test_module("bad_crash", "capi_bad_crash", &[]);
    let run = handle_api(&["crash_ext", s(&path)]);
    println!("{run}");
    // Nothing crashed yet: nothing to report, nothing to acknowledge.
    assert_eq!(run.value("ext_before"), code(MODULE_ERR_NOT_FOUND), "{run}");
    assert_eq!(run.value("frames_before"), code(MODULE_ERR_NOT_FOUND), "{run}");
    assert_eq!(run.value("clear_taint_before"), code(MODULE_ERR_NOT_FOUND), "{run}");

    assert_eq!(run.value("segv"), code(MODULE_ERR_CRASHED), "{run}");
    // struct_size unset: refused, saying what to do, nothing written.
    assert_eq!(run.value("ext_no_size"), code(MODULE_ERR_INVALID_ARGUMENT), "{run}");
    assert!(run.value("ext_no_size_error").contains("struct_size"), "{run}");
    assert_eq!(run.value("ext_no_size_untouched"), "1");

    assert_eq!(run.value("ext"), code(MODULE_ERR_SUCCESS), "{run}");
    assert_eq!(run.value("ext_struct_size_kept"), "1");
    assert_eq!(run.value("ext_info_signal_name"), "SIGSEGV", "info is filled as well");
    let called = run.value("ext_called");
    assert!(called.is_empty() || called == "crash_segv", "the function the call ran: {run}");
    assert_eq!(run.value("ext_probe_pid"), "0", "not a probe crash");

    // The three views of the backtrace agree: the count, the frames, the text's lines.
    let n: usize = run.value("ext_frame_count").parse().unwrap();
    assert_eq!(run.value("frames_count"), code(MODULE_ERR_SUCCESS), "{run}");
    assert_eq!(run.value("frames_count_value"), n.to_string());
    assert_eq!(run.value("frames_null_cap"), code(MODULE_ERR_INVALID_ARGUMENT), "{run}");
    assert_eq!(run.value("frames"), code(MODULE_ERR_SUCCESS), "{run}");
    assert_eq!(run.value("frames_value"), n.to_string());
    assert_eq!(run.value("frame0_is_pc"), "1", "frame 0 holds the program counter: {run}");
    for i in 0..n.min(64) {
        assert!(run.value(&format!("frame{i}")).starts_with("0x"), "{run}");
    }
    assert_eq!(run.value("backtrace"), code(MODULE_ERR_SUCCESS), "{run}");
    assert_eq!(run.value("backtrace_lines"), n.to_string(), "one line per frame: {run}");
    assert_eq!(run.value("backtrace_starts_with_frame0"), "1", "{run}");
    assert_eq!(run.value("backtrace_no_buf"), code(MODULE_ERR_INVALID_ARGUMENT), "{run}");

    // The taint: set by the crash inside libc, acknowledged once.
    assert_eq!(run.value("libc"), code(MODULE_ERR_CRASHED), "{run}");
    assert_eq!(run.value("tainted_before_clear"), "1", "{run}");
    assert_eq!(run.value("clear_taint"), code(MODULE_ERR_SUCCESS), "{run}");
    assert!(run.value("clear_taint_reason").starts_with("module capi_bad_crash: "), "{run}");
    assert_eq!(run.value("tainted_after_clear"), "0", "{run}");
    assert_eq!(run.value("clear_taint_again"), code(MODULE_ERR_NOT_FOUND), "{run}");
    assert_eq!(run.value("clear_taint_again_reason"), "");
}
