//! `Handle::invoker`: a message entry point resolved once (issue 14's in-process invoke cost),
//! against the real C module `tests/modules/invoke_echo.c`, in this process and isolated.

use std::mem::MaybeUninit;
use std::path::{Path, PathBuf};

use kmodlike::{Error, ErrorKind, Handle, Loader, OpenOptions};
use kmodlike_testsupport as ts;

fn loader() -> Loader {
    Loader::builder().host_helper(PathBuf::from(env!("CARGO_BIN_EXE_kmodlike-host"))).build()
}

/// A private copy of the module under `name` (tests run in parallel, one file each).
fn module_as(dir: &Path, name: &str) -> PathBuf {
    let dst = dir.join(format!("{name}.so"));
    std::fs::copy(ts::test_module("invoke_echo", "invoke_echo", &[]), &dst).expect("copy");
    dst
}

fn open(l: &Loader, path: &Path, opts: &OpenOptions) -> Handle {
    // SAFETY: a test module built for the interface, whose init does nothing harmful.
    unsafe { l.open_with(path.to_str().unwrap(), opts) }.expect("open")
}

fn into_vec(out: &[MaybeUninit<u8>], len: usize) -> Vec<u8> {
    // SAFETY: the invoke wrote the first `len` bytes.
    out[..len].iter().map(|b| unsafe { b.assume_init() }).collect()
}

/// The same outputs through the invoker as through the handle, in both tiers.
fn same_outputs(h: &Handle) {
    let echo = h.invoker("echo").expect("echo is declared");
    assert_eq!(echo.symbol(), "echo");
    let checksum = h.invoker("checksum").expect("checksum is declared");
    let mut out = [MaybeUninit::new(0u8); 64];
    for input in [&b""[..], b"x", b"hello, invoker"] {
        let (ret, len) = echo.invoke_into(input, &mut out).expect("echo");
        assert_eq!((ret, into_vec(&out, len)), (0, input.to_vec()));
        assert_eq!(echo.invoke(input).unwrap(), h.invoke("echo", input).unwrap());
        let (ret, len) = checksum.invoke_into(input, &mut out).expect("checksum");
        let want = h.invoke("checksum", input).unwrap();
        assert_eq!((ret, into_vec(&out, len)), want);
        assert_eq!(ret as usize, input.len(), "checksum returns the input's length");
    }
    // A large output through the growing form.
    let big: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    assert_eq!(echo.invoke(&big).unwrap(), (0, big.clone()));
    // A buffer too small: BufferTooSmall with the size needed, and the invoker still works.
    let mut small = [MaybeUninit::new(0u8); 8];
    match echo.invoke_into(&big, &mut small) {
        Err(Error::BufferTooSmall { needed, capacity, symbol, .. }) => {
            assert_eq!((needed, capacity, symbol.as_str()), (big.len(), 8, "echo"))
        }
        other => panic!("expected BufferTooSmall, got {other:?}"),
    }
    let (ret, len) = echo.invoke_into(b"again", &mut out).unwrap();
    assert_eq!((ret, into_vec(&out, len)), (0, b"again".to_vec()));
}

#[test]
fn an_invoker_gives_the_handles_outputs_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let l = loader();
    let h = open(&l, &module_as(dir.path(), "invoker_here"), &OpenOptions::default());
    same_outputs(&h);
}

#[test]
fn an_invoker_of_an_isolated_module_works_the_same() {
    let dir = tempfile::tempdir().unwrap();
    let l = loader();
    let h = open(&l, &module_as(dir.path(), "invoker_there"), &OpenOptions::isolated());
    assert!(h.info().child_pid.is_some(), "the module runs in a process of its own");
    same_outputs(&h);
    let e = h.invoker("undeclared").expect_err("undeclared, isolated");
    assert_eq!(e.kind(), ErrorKind::SymbolNotFound);
    assert!(e.to_string().contains("MODULE_INVOKE(undeclared)"), "{e}");
}

#[test]
fn an_undeclared_function_gets_no_invoker() {
    let dir = tempfile::tempdir().unwrap();
    let l = loader();
    let h = open(&l, &module_as(dir.path(), "invoker_undeclared"), &OpenOptions::default());
    // `undeclared` is exported with the right type but not declared with MODULE_INVOKE.
    assert!(h.symbol_ptr("undeclared").is_ok(), "the function exists");
    let e = h.invoker("undeclared").expect_err("undeclared");
    assert_eq!(e.kind(), ErrorKind::SymbolNotFound);
    let text = e.to_string();
    assert!(text.contains("MODULE_INVOKE(undeclared)") && text.contains("invoker_undeclared"));
    let e = h.invoker("no_such_function").expect_err("absent");
    assert_eq!(e.kind(), ErrorKind::SymbolNotFound, "{e}");
}

#[test]
fn a_crash_through_an_invoker_is_contained() {
    let dir = tempfile::tempdir().unwrap();
    let name = "invoker_crash";
    let l = loader();
    let h = open(&l, &module_as(dir.path(), name), &OpenOptions::default());
    let misbehave = h.invoker("misbehave").unwrap();
    let echo = h.invoker("echo").unwrap();
    let mut out = [MaybeUninit::new(0u8); 16];
    let e = misbehave.invoke_into(b"signal 11", &mut out).expect_err("a crash");
    // The host survived (this test runs on), the error names the signal and the module...
    assert_eq!(e.kind(), ErrorKind::Crashed, "{e}");
    let text = e.to_string();
    assert!(text.contains("SIGSEGV") && text.contains(name), "{text}");
    // ...and the module is gone: unlisted, its crash booked, every call refused.
    assert!(l.list().iter().all(|m| m.name != name), "still listed");
    assert_eq!(l.crashes().first().map(|r| r.module.as_str()), Some(name));
    assert!(!h.is_live());
    assert!(echo.invoke_into(b"x", &mut out).is_err(), "the other invoker refuses");
    assert!(misbehave.invoke(b"").is_err(), "this invoker refuses");
    assert!(h.invoke("echo", b"x").is_err(), "the handle refuses");
}
