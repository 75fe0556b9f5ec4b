//! The host callbacks a module receives (`log`, `get_time`) reach the right host sink, with the
//! module's name, from guarded calls and from threads the module started.

use std::sync::{Arc, Mutex};

use kmodlike::Loader;
use kmodlike_testsupport as ts;

#[test]
fn a_log_call_from_a_module_thread_is_attributed_to_the_module() {
    let m = ts::test_module("thread_log", "thread_log", &["-pthread"]);
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    let loader = Loader::builder()
        .log(move |module, level, msg| {
            sink.lock().unwrap().push((module.to_owned(), level, msg.to_owned()))
        })
        .build();
    // SAFETY: a fixture module this test built from its C source for the interface.
    let h = unsafe { loader.open(m.to_str().unwrap()) }.unwrap();
    h.close().unwrap(); // fini joins the thread
    let lines = lines.lock().unwrap().clone();
    assert_eq!(lines, vec![("thread_log".to_owned(), 0, "from my own thread".to_owned())]);
}
