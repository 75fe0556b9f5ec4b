//! `invoke!` exports loaded by the real loader and called with `Handle::invoke`: bytes in and
//! out, result codes, an output larger than the first buffer (the body runs once), a panic.

mod common;

use common::{example_module, install, temp_dir};
use kmodlike::Loader;

#[test]
fn invoke_exports_answer_through_handle_invoke() {
    let dir = temp_dir();
    let so = install(&example_module("rs_invoke"), dir.path(), "rs_invoke.so");
    let loader = Loader::new();
    // SAFETY: a test module of this workspace, built with kmodlike-module.
    let h = unsafe { loader.open(so.to_str().unwrap()) }.expect("open rs_invoke");
    assert!(h.info().modinfo.contains(&("invoke".into(), "reverse".into())));
    assert_eq!(h.invoke("reverse", b"abc").unwrap(), (0, b"cba".to_vec()));
    // Larger than the first buffer: asked again, answered from the stash (the body ran once).
    let (runs, out) = h.invoke_with_capacity("big", b"", 16).unwrap();
    assert_eq!((runs, out.len()), (0, 100_000));
    let (runs, _) = h.invoke("big", b"x").unwrap();
    assert_eq!(runs, 1, "the first call's body ran once");
    assert_eq!(h.invoke("refuse", b"12345").unwrap(), (5, Vec::new()));
    assert_eq!(h.invoke("boom", b"").unwrap(), (kmodlike_module::INVOKE_PANICKED, Vec::new()));
    assert!(h.is_live(), "a panic is not a crash");
}

#[test]
fn invoke_exports_answer_through_an_invoker() {
    let dir = temp_dir();
    let so = install(&example_module("rs_invoke"), dir.path(), "rs_invoke_invoker.so");
    let loader = Loader::new();
    // SAFETY: a test module of this workspace, built with kmodlike-module.
    let h = unsafe { loader.open(so.to_str().unwrap()) }.expect("open rs_invoke");
    let reverse = h.invoker("reverse").expect("reverse is declared");
    let mut out = [std::mem::MaybeUninit::new(0u8); 8];
    let (ret, len) = reverse.invoke_into(b"abc", &mut out).unwrap();
    // SAFETY: the invoke wrote the first `len` bytes.
    let got: Vec<u8> = out[..len].iter().map(|b| unsafe { b.assume_init() }).collect();
    assert_eq!((ret, got), (0, b"cba".to_vec()));
    assert_eq!(reverse.invoke(b"hello").unwrap(), h.invoke("reverse", b"hello").unwrap());
    // Too small a buffer: BufferTooSmall with the size needed.
    match reverse.invoke_into(b"0123456789", &mut out) {
        Err(kmodlike::Error::BufferTooSmall { needed, capacity, .. }) => {
            assert_eq!((needed, capacity), (10, 8))
        }
        other => panic!("expected BufferTooSmall, got {other:?}"),
    }
    let boom = h.invoker("boom").unwrap();
    assert_eq!(boom.invoke(b"").unwrap(), (kmodlike_module::INVOKE_PANICKED, Vec::new()));
    assert!(h.is_live(), "a panic is not a crash");
}
