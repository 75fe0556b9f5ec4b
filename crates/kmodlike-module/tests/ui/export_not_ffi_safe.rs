// Exported functions take and return C types only.
kmodlike_module::export! {
    fn greet(name: &str) -> i32 {
        name.len() as i32
    }
}

fn main() {}
