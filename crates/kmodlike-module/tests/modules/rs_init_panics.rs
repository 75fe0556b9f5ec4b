//! Test module: `init` panics.

kmodlike_module::module! {
    init: |_| panic!("init exploded on purpose"),
    description: "SDK test module: init panics",
}
