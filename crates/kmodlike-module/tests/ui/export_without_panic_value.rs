// An export's return type must say what is returned after a panic.
#[repr(C)]
pub struct Pair {
    a: i32,
    b: i32,
}

kmodlike_module::export! {
    fn pair() -> Pair {
        Pair { a: 1, b: 2 }
    }
}

fn main() {}
