//! A `#![forbid(unsafe_code)]` program must not reach a guarded call with a function of its
//! own: the guard would jump over its frame at the abort, so the `String` is never dropped and
//! the scoped thread keeps borrowing a dead stack frame.
#![forbid(unsafe_code)]

use kmodlike::Loader;

extern "C" fn holds_a_string_and_aborts() {
    let greeting = String::from("never dropped");
    eprintln!("{greeting}");
    std::process::abort();
}

extern "C" fn scoped_thread_then_abort(n: i32) -> i32 {
    let mut v = vec![n];
    std::thread::scope(|s| {
        s.spawn(|| v.push(1));
        std::process::abort();
    });
    v.len() as i32
}

fn main() {
    let loader = Loader::new();
    let handle = loader.get("any").expect("a module opened earlier");
    let _ = handle.call0(holds_a_string_and_aborts);
    let _ = handle.call(scoped_thread_then_abort, 1);
}
