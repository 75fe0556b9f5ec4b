// A .modinfo value cannot hold a NUL: it would split the entry.
kmodlike_module::module! {
    description: "two\0entries",
}

fn main() {}
