//! Sets the shared library's SONAME to `libmodule.so.1`, so programs linked with `-lmodule`
//! record the major version and keep working across compatible updates of the library.

fn main() {
    // Only the cdylib is linked with this argument; the rlib is unaffected.
    println!("cargo:rustc-cdylib-link-arg=-Wl,-soname,libmodule.so.1");
    println!("cargo:rerun-if-changed=build.rs");
}
