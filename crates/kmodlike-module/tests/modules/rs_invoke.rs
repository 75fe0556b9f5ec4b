//! Test module: message entry points written with `invoke!`. Built as a cdylib example of
//! kmodlike-module and loaded by `tests/invoke.rs`.

use std::sync::atomic::{AtomicUsize, Ordering};

use kmodlike_module::{invoke, module};

/// How many times `big`'s body ran.
static BIG_RUNS: AtomicUsize = AtomicUsize::new(0);

module! {
    description: "SDK test module: invoke entry points",
    license: "MIT OR Apache-2.0",
}

invoke! {
    /// The input, reversed.
    fn reverse(input: &[u8]) -> Vec<u8> {
        input.iter().rev().copied().collect()
    }

    /// 100,000 bytes whatever the input, and how often the body ran before, as the result.
    fn big(input: &[u8]) -> (i32, Vec<u8>) {
        let _ = input;
        let runs = BIG_RUNS.fetch_add(1, Ordering::SeqCst);
        (runs as i32, vec![7u8; 100_000])
    }

    /// Fails with the input's length as the result code.
    fn refuse(input: &[u8]) -> Result<Vec<u8>, i32> {
        Err(input.len() as i32)
    }

    /// Panics: the call returns INVOKE_PANICKED.
    fn boom(input: &[u8]) -> Vec<u8> {
        panic!("boom with {} bytes", input.len())
    }
}
