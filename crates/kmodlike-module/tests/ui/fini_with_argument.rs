// A fini takes nothing.
kmodlike_module::module! {
    fini: fini,
}

fn fini(_code: i32) {}

fn main() {}
