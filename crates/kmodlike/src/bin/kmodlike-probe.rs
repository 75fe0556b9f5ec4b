//! `kmodlike-probe`: loads and unloads one module in a throw-away process and reports whether it
//! survived.
//! Run by the loader when its probe option is on; not meant to be run by hand.
//!
//! `kmodlike-probe [--strict] [--module-path DIR]... [--dependency NAME=PATH]... --answer-fd N
//! [--module-fd N] -- FILE`
//!
//! The command line and the answer are `kmodlike::probe::{ChildArgs, Answer}`, shared with the
//! parent's side; the rest is the public loader, with `dlopen` itself guarded. The benchmark
//! crate builds this same file as `kmodlike-bench-probe`.

use kmodlike::probe::{Answer, ChildArgs};
use kmodlike::Loader;

fn main() {
    let args = ChildArgs::from_env().unwrap_or_else(|usage| {
        eprintln!("{usage}");
        std::process::exit(2);
    });
    let loader = Loader::builder()
        .strict(args.strict)
        .module_path(args.dirs.clone())
        .dependency_paths(args.dependency_paths.clone())
        .guard_dlopen_in_probe_child(true)
        .build();
    let file = args.file_to_load();
    // SAFETY: running this file's constructors and `module_init` is the probe's whole job: the
    // parent loader, whose caller vouched for the file under `Loader::open`'s promise, spawned
    // this throw-away process to do it first (with `dlopen` guarded too), and whatever the code
    // does to this process dies with it and is reported in the answer.
    let opened = unsafe { loader.open(&file.to_string_lossy()) };
    // The whole life, unload included: module_fini under the guard, then the destructors in
    // `dlclose`, which nothing can guard. A module whose destructor crashes kills this process
    // before it answers, and the parent refuses it, instead of the host dying at its unload.
    let answer = match opened.and_then(|handle| handle.close_forced().map_err(|e| e.error)) {
        Ok(()) => Answer::Ok,
        // The module asked to end the process (the guard contained its exit): do what it asked
        // here, in the throw-away process, so the parent reports the exit status and what the
        // module said before it, as for any probe that exits without an answer.
        Err(e) => match e.crash_report().and_then(|r| r.exit_status) {
            Some(status) => std::process::exit(status),
            None => Answer::from_error(&e),
        },
    };
    answer.send()
}
