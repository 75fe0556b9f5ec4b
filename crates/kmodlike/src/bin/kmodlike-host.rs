//! `kmodlike-host`: runs one isolated module in a process of its own, for the loader that
//! started it (`OpenOptions::isolated`). Not meant to be run by hand.
//!
//! The command line, the hardening and the protocol are `kmodlike::isolated` (see
//! `docs/isolation.md`); this file is only the entry point, and the choice of allocator.

/// The host's own heap is not the module's: Rust allocations here come from dlmalloc (its own
/// mappings, its own lock), the module's `malloc` from the C library. A module that corrupts
/// its heap, or aborts inside `malloc` with the C library's arena lock held (glibc's
/// "malloc(): corrupted top size"), leaves the host's heap usable, so the guard's crash report
/// is still built and sent.
#[global_allocator]
static HOST_HEAP: dlmalloc::GlobalDlmalloc = dlmalloc::GlobalDlmalloc;

fn main() {
    kmodlike::isolated::host_main()
}
