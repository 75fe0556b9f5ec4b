//! Test module built with `panic = "abort"`: a panic cannot be caught, so the SDK logs the
//! message through the host's log and the process aborts inside the module (SIGABRT), which the
//! loader's crash guard contains.

kmodlike_module::module! {
    description: "SDK test module: built with panic=abort",
}

kmodlike_module::export! {
    /// Panics: logs, then aborts.
    fn give_up() {
        panic!("giving up under panic=abort");
    }
}
