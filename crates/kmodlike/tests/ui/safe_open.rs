//! A `#![forbid(unsafe_code)]` program must not load a file: loading runs its constructors and
//! `module_init`, native code of the file's choosing.
#![forbid(unsafe_code)]

use kmodlike::{Loader, OpenOptions};

fn main() {
    let loader = Loader::new();
    let _ = loader.open("/tmp/anything.so");
    let _ = loader.open_with("/tmp/anything.so", &OpenOptions::default());
}
