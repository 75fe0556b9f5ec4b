// A misspelt key is an error, not silently ignored metadata.
kmodlike_module::module! {
    licence: "MIT",
}

fn main() {}
