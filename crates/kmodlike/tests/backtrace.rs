//! Crash backtraces (issue 12): the handler copies the faulting stack, the loader unwinds it
//! with the objects' `.eh_frame` and names every frame, static functions included, from a real
//! C module (`tests/modules/backtrace_deep.c`) built with and without frame pointers. The taint
//! of a SIGABRT comes from that backtrace: an `abort()` after allocator work never taints, an
//! abort from inside `free` does, naming it.

use std::ffi::c_int;
use std::path::PathBuf;

use kmodlike::{CrashReport, Error, Frame, Loader};
use kmodlike_testsupport as ts;

fn module(out_stem: &str, flags: &[&str]) -> PathBuf {
    ts::test_module("backtrace_deep", out_stem, flags)
}

/// A private copy of the module, so no other test's loader shares its mapping.
fn open(loader: &Loader, dir: &tempfile::TempDir, built: &PathBuf, name: &str) -> kmodlike::Handle {
    let dest = dir.path().join(format!("{name}.so"));
    std::fs::copy(built, &dest).expect("copy the module");
    // SAFETY: a fixture module this test built from its C source for the interface.
    unsafe { loader.open(dest.to_str().unwrap()) }.unwrap_or_else(|e| panic!("open {name}: {e}"))
}

fn function<F: Copy>(h: &kmodlike::Handle, name: &str) -> F {
    let p = h.symbol_ptr(name).unwrap_or_else(|e| panic!("symbol {name}: {e}"));
    assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut std::ffi::c_void>());
    // SAFETY: the caller names the C signature of `name` in `F` (a function pointer type).
    unsafe { std::mem::transmute_copy::<*mut std::ffi::c_void, F>(&p) }
}

fn crash_of(e: Error) -> CrashReport {
    match e.crash_report() {
        Some(r) => r.clone(),
        None => panic!("expected a crash, got: {e}"),
    }
}

fn names(frames: &[Frame]) -> Vec<String> {
    frames.iter().map(|f| f.symbol.clone().unwrap_or_else(|| format!("{:#x}", f.pc))).collect()
}

fn position(frames: &[Frame], name: &str) -> usize {
    frames
        .iter()
        .position(|f| {
            f.symbol.as_deref().is_some_and(|s| s == name || s.ends_with(&format!("::{name}")))
        })
        .unwrap_or_else(|| panic!("no frame {name} in {:?}", names(frames)))
}

/// The crash three calls deep: each frame named, innermost first, none guessed, the module's
/// frames marked and located, and the test function that made the guarded call further down.
#[inline(never)]
fn crash_three_deep_and_check(flags: &[&str], stem: &str) {
    let built = module(stem, flags);
    let dir = tempfile::tempdir().unwrap();
    let loader = Loader::new();
    let h = open(&loader, &dir, &built, stem);
    // A first call on a thread takes the guard's slow path (the thread's record is allocated
    // there); warm up so the crash's guarded call is this function's own inlined entry.
    let version: extern "C" fn() -> u32 = function(&h, "module_get_interface_version");
    // SAFETY: the fixture's version function has no preconditions.
    unsafe { h.call0(version) }.expect("version");
    let f: extern "C" fn() = function(&h, "crash_deep");
    // SAFETY: `f` is the fixture module's C code; a fault skips only its frames.
    let r = crash_of(unsafe { h.call0(f) }.unwrap_err());
    let frames = &r.frames;
    let order: Vec<usize> = ["deep_three", "deep_two", "deep_one", "crash_deep"]
        .iter()
        .map(|n| position(frames, n))
        .collect();
    assert_eq!(order, vec![0, 1, 2, 3], "{:?}", names(frames));
    for f in &frames[..4] {
        assert!(f.in_module, "{f:?}");
        assert!(!f.guessed, "{f:?}");
        assert_eq!(f.object.as_deref(), Some(format!("{stem}.so").as_str()), "{f:?}");
        assert!(f.object_offset.is_some() && f.symbol_offset.is_some(), "{f:?}");
        assert!(f.build_id.as_deref().is_some_and(|b| !b.is_empty()), "{f:?}");
    }
    assert_eq!(frames[0].pc, r.pc);
    assert!(r.symbol.as_deref().is_some_and(|s| s.starts_with("deep_three+")), "{:?}", r.symbol);
    let caller = position(frames, "crash_three_deep_and_check");
    assert!(caller > 3, "{:?}", names(frames));
    assert!(frames[..=caller].iter().all(|f| !f.guessed), "{frames:#?}");
    assert!(!frames[caller].in_module);
    assert_eq!(r.called.as_deref(), Some("crash_deep"));
    assert_eq!(r.taint, None, "{r}");
}

#[test]
fn a_crash_three_calls_deep_with_frame_pointers_names_every_frame() {
    crash_three_deep_and_check(&["-O1", "-fno-omit-frame-pointer"], "bt_fp");
}

#[test]
fn a_crash_three_calls_deep_without_frame_pointers_names_every_frame() {
    crash_three_deep_and_check(&["-O1", "-fomit-frame-pointer"], "bt_nofp");
}

/// A module built without unwind tables (no `.eh_frame` for its code) but with frame
/// pointers: the unwinder falls back to the frame-pointer chain there, and says so: those
/// frames are marked guessed, still named.
#[test]
fn frames_without_unwind_information_are_found_by_frame_pointer_and_marked_guessed() {
    let flags = [
        "-O1",
        "-fno-omit-frame-pointer",
        "-fno-asynchronous-unwind-tables",
        "-fno-unwind-tables",
        "-Wl,--no-eh-frame-hdr",
    ];
    let built = module("bt_nocfi", &flags);
    let dir = tempfile::tempdir().unwrap();
    let loader = Loader::new();
    let h = open(&loader, &dir, &built, "bt_nocfi");
    let f: extern "C" fn() = function(&h, "crash_deep");
    // SAFETY: `f` is the fixture module's C code; a fault skips only its frames.
    let r = crash_of(unsafe { h.call0(f) }.unwrap_err());
    let frames = &r.frames;
    let three = position(frames, "deep_three");
    let one = position(frames, "deep_one");
    assert_eq!(three, 0, "{:?}", names(frames));
    assert!(one > three, "{:?}", names(frames));
    assert!(frames[1..=one].iter().all(|f| f.guessed), "{frames:#?}");
    assert!(r.to_string().contains("deep_three"), "{r}");
}

/// A C++ module: the frames' names come back demangled, templates and parameter types
/// included.
#[test]
fn a_crash_in_a_cpp_module_names_its_frames_demangled() {
    let src = ts::test_modules_dir().join("backtrace_cpp.cpp");
    let built = ts::build_module("bt_cpp.so", &[&src], &["-O1", "-fno-exceptions"]);
    let dir = tempfile::tempdir().unwrap();
    let loader = Loader::new();
    let h = open(&loader, &dir, &built, "bt_cpp");
    let f: extern "C" fn() = function(&h, "crash_cpp");
    // SAFETY: `f` is the fixture module's C++ code; a fault skips only its frames.
    let r = crash_of(unsafe { h.call0(f) }.unwrap_err());
    let names = names(&r.frames);
    assert_eq!(names[0], "vendor::Decoder<int>::parse(int*, int)", "{names:?}");
    assert_eq!(names[1], "crash_cpp", "{names:?}");
    assert_eq!(r.called.as_deref(), Some("crash_cpp"));
    assert!(r.to_string().contains("vendor::Decoder<int>::parse"), "{r}");
}

#[test]
fn two_hundred_aborts_after_malloc_work_never_taint() {
    let built = module("bt_abort", &["-O1"]);
    let dir = tempfile::tempdir().unwrap();
    let loader = Loader::new();
    for i in 0..200 {
        let name = format!("bt_abort_{}", i % 4);
        let h = open(&loader, &dir, &built, &name);
        // Varied allocator work on this thread too, before and inside the call.
        let keep: Vec<Vec<u8>> = (0..(i % 7) + 1).map(|k| vec![k as u8; 16 << (i % 12)]).collect();
        drop(keep);
        let f: extern "C" fn(c_int) = function(&h, "abort_after_malloc");
        // SAFETY: `f` is the fixture module's C code; a fault skips only its frames.
        let r = crash_of(unsafe { h.call(f, 8 << (i % 14)) }.unwrap_err());
        assert_eq!(r.signal_name, "SIGABRT");
        assert_eq!(r.taint, None, "abort {i} tainted: {r}\n{:?}", names(&r.frames));
        let abort = position(&r.frames, "abort");
        let three = position(&r.frames, "deep_three");
        assert!(abort < three && !r.frames[three].guessed, "{:?}", names(&r.frames));
        assert_eq!(r.called.as_deref(), Some("abort_after_malloc"));
    }
    assert!(kmodlike::taint().is_none(), "{:?}", kmodlike::taint());
}

/// A taint is process-wide and never clears: the tests that taint run in a process of their
/// own (nextest gives each test one; under `cargo test` they re-run themselves alone), so the
/// tests that assert no taint see none of theirs.
fn tainted_by(function_name: &str) -> CrashReport {
    let built = module("bt_free", &["-O1"]);
    let dir = tempfile::tempdir().unwrap();
    let loader = Loader::new();
    let h = open(&loader, &dir, &built, function_name);
    let f: extern "C" fn() = function(&h, function_name);
    // SAFETY: `f` is the fixture module's C code; a fault skips only its frames.
    crash_of(unsafe { h.call0(f) }.unwrap_err())
}

#[test]
fn a_double_free_taints_naming_free() {
    if !ts::in_own_process("a_double_free_taints_naming_free", std::time::Duration::from_secs(120))
    {
        return;
    }
    let r = tainted_by("double_free_block");
    assert_eq!(r.signal_name, "SIGABRT");
    let taint =
        r.taint.clone().unwrap_or_else(|| panic!("not tainted: {r}\n{:?}", names(&r.frames)));
    assert!(taint.contains("free()"), "{taint}\n{:?}", names(&r.frames));
    assert!(kmodlike::taint().is_some());
}

#[test]
fn a_bad_free_taints_naming_free() {
    if !ts::in_own_process("a_bad_free_taints_naming_free", std::time::Duration::from_secs(120)) {
        return;
    }
    let r = tainted_by("bad_free_here");
    assert_eq!(r.signal_name, "SIGABRT");
    let taint =
        r.taint.clone().unwrap_or_else(|| panic!("not tainted: {r}\n{:?}", names(&r.frames)));
    assert!(taint.contains("free()"), "{taint}\n{:?}", names(&r.frames));
}
