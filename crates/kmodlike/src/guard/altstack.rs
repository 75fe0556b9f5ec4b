//! The alternate signal stack of every thread that enters a guard.
//!
//! A stack overflow in module code faults on the thread stack's guard page; the kernel can only
//! deliver that SIGSEGV if the handler has another stack to run on (`SA_ONSTACK` +
//! `sigaltstack`). Without one the thread, and with it the process, dies. Rust's std gives its
//! own threads a small alternate stack (a few KiB); ours is 64 KiB so the handler, and whatever
//! handler it chains to, has room.

use std::cell::Cell;
use std::ptr;

/// The smallest alternate stack we accept (and the size of the one we map).
const MIN_SIZE: usize = 64 * 1024;

/// This thread's alternate stack, when we mapped it. Dropped when the thread exits (as a
/// thread-local destructor), which disables and unmaps it.
struct AltStack {
    /// Start of our mapping (the guard page), or null when the thread already had a big enough
    /// alternate stack (which is not ours to free) or mapping failed.
    mapping: Cell<*mut libc::c_void>,
    /// Length of the mapping, guard page included.
    len: usize,
}

thread_local! {
    static ALT_STACK: AltStack = AltStack::ensure();
}

/// Make sure this thread has an alternate signal stack of at least 64 KiB. Cheap after the first
/// call on a thread (a thread-local access).
pub(super) fn ensure() {
    // `try_with` fails only while this thread's thread-locals are being destroyed; a guard
    // entered that late still works, it just cannot survive a stack overflow.
    let _ = ALT_STACK.try_with(|_| ());
}

/// The current alternate stack of this thread.
fn current() -> libc::stack_t {
    // SAFETY: an all-zero stack_t is a valid value of this plain C struct.
    let mut old: libc::stack_t = unsafe { std::mem::zeroed() };
    // SAFETY: a null new stack only queries; `old` is a valid out pointer.
    unsafe { libc::sigaltstack(ptr::null(), &mut old) };
    old
}

impl AltStack {
    fn none() -> AltStack {
        AltStack { mapping: Cell::new(ptr::null_mut()), len: 0 }
    }

    fn ensure() -> AltStack {
        let old = current();
        if old.ss_flags & libc::SS_ONSTACK != 0 {
            // We are running on it (a guard entered from a signal handler): it cannot be
            // changed now, and it is not ours.
            return AltStack::none();
        }
        if old.ss_flags & libc::SS_DISABLE == 0 && old.ss_size >= MIN_SIZE {
            return AltStack::none();
        }
        let page = super::page_size();
        let len = MIN_SIZE + page;
        // SAFETY: a fresh anonymous private mapping; no existing memory is affected.
        let map = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK,
                -1,
                0,
            )
        };
        if map == libc::MAP_FAILED {
            return AltStack::none();
        }
        // The lowest page is a guard: a handler that overflows the alternate stack faults
        // instead of silently writing over whatever lies below it.
        // SAFETY: the first page of the mapping we just created.
        unsafe { libc::mprotect(map, page, libc::PROT_NONE) };
        let new = libc::stack_t {
            // SAFETY: `page` bytes into a mapping of `len > page` bytes.
            ss_sp: unsafe { map.cast::<u8>().add(page) }.cast(),
            ss_flags: 0,
            ss_size: MIN_SIZE,
        };
        // SAFETY: `new` describes MIN_SIZE writable bytes that stay mapped until this
        // thread-local is dropped, which disables the stack first.
        if unsafe { libc::sigaltstack(&new, ptr::null_mut()) } != 0 {
            // SAFETY: our own mapping, not in use.
            unsafe { libc::munmap(map, len) };
            return AltStack::none();
        }
        AltStack { mapping: Cell::new(map), len }
    }
}

impl Drop for AltStack {
    fn drop(&mut self) {
        let map = self.mapping.replace(ptr::null_mut());
        if map.is_null() {
            return;
        }
        let page = super::page_size();
        // SAFETY: within our mapping (see `ensure`).
        let ours = unsafe { map.cast::<u8>().add(page) }.cast::<libc::c_void>();
        let cur = current();
        if cur.ss_sp == ours && cur.ss_flags & libc::SS_DISABLE == 0 {
            if cur.ss_flags & libc::SS_ONSTACK != 0 {
                // Exiting from a signal handler running on it: leak rather than pull the
                // stack from under ourselves.
                return;
            }
            let disable =
                libc::stack_t { ss_sp: ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 };
            // SAFETY: disabling the alternate stack of this thread has no preconditions.
            unsafe { libc::sigaltstack(&disable, ptr::null_mut()) };
        }
        // SAFETY: our mapping, no longer registered as this thread's alternate stack (std's
        // thread exit may already have disabled it; either way the kernel no longer uses it).
        unsafe { libc::munmap(map, self.len) };
    }
}

/// This thread's alternate stack as `(start, size)`, if one is enabled (for tests).
#[cfg(test)]
pub(super) fn current_for_test() -> Option<(usize, usize)> {
    let cur = current();
    (cur.ss_flags & libc::SS_DISABLE == 0).then_some((cur.ss_sp as usize, cur.ss_size))
}
