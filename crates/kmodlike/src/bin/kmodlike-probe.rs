//! `kmodlike-probe`: loads one module in a throw-away process and reports whether it survived.
//! Run by the loader when its probe option is on; not meant to be run by hand.

fn main() {
    kmodlike::probe::probe_child_main()
}
