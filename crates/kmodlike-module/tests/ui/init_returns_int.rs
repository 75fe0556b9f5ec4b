// An init returns `Result<(), InitError>`, not a C-style status code.
kmodlike_module::module! {
    init: init,
}

fn init(_ctx: &kmodlike_module::Context) -> i32 {
    0
}

fn main() {}
