//! The alternate signal stack of every thread that enters a guard.
//!
//! A stack overflow in module code faults on the thread stack's guard page; the kernel can only
//! deliver that SIGSEGV if the handler has another stack to run on (`SA_ONSTACK` +
//! `sigaltstack`). Without one the thread, and with it the process, dies. Rust's std gives its
//! own threads a small alternate stack (a few KiB); ours is 64 KiB so the handler, and whatever
//! handler it chains to, has room.
//!
//! # The rule for a host's own alternate stack
//!
//! The host owns its threads' alternate stacks; the guard borrows, and gives back:
//!
//! - **64 KiB or more**: the host's stack is used as it is, never replaced nor touched, for the
//!   thread's whole life.
//! - **Smaller, or none**: on the thread's first guarded call the guard installs its own stack
//!   (64 KiB above a guard page) for the rest of the thread's life, so that an overflow stays
//!   recoverable. Entering and leaving a guard never costs a `sigaltstack` call. When the thread
//!   exits (this thread-local is destroyed: after the thread's function returned, or in `exit()`
//!   for the main thread), the guard puts back exactly what was there before (the host's
//!   `ss_sp`, `ss_size` and flags, or no stack) and unmaps its own, so the thread-local and
//!   pthread-key destructors that run after it find the host's stack again. A previous stack
//!   whose memory is no longer mapped by then (Rust's std unmaps its threads' small stacks as
//!   their function returns) is not put back: the thread ends with none.
//! - **The host's later word wins**: if the host sets (or disables) the alternate stack after
//!   the guard installed its own, the guard leaves that alone at exit and only unmaps its own.
//!   An overflow is then recoverable only if the host's new stack has room for the handler.
//!
//! While the guard's stack is installed, `sigaltstack(NULL, &old)` reports it, not the host's.
//! A host that needs its own stack during the thread's life gives it at least 64 KiB.

use std::cell::Cell;
use std::ptr;

/// The smallest alternate stack we accept (and the size of the one we map).
const MIN_SIZE: usize = 64 * 1024;

/// This thread's alternate stack, when we mapped it. Dropped when the thread exits (as a
/// thread-local destructor), which puts the previous stack back and unmaps ours.
struct AltStack {
    /// Start of our mapping (the guard page), or null when the thread already had a big enough
    /// alternate stack (which is not ours to free) or mapping failed.
    mapping: Cell<*mut libc::c_void>,
    /// Length of the mapping, guard page included.
    len: usize,
    /// The alternate stack ours replaced (the host's small one, or a disabled one), put back
    /// at thread exit while ours is still the current one.
    previous: libc::stack_t,
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
        AltStack { mapping: Cell::new(ptr::null_mut()), len: 0, previous: disabled() }
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
        // thread-local is dropped, which takes the stack out of use first.
        if unsafe { libc::sigaltstack(&new, ptr::null_mut()) } != 0 {
            // SAFETY: our own mapping, not in use.
            unsafe { libc::munmap(map, len) };
            return AltStack::none();
        }
        let previous = if old.ss_flags & libc::SS_DISABLE != 0 { disabled() } else { old };
        AltStack { mapping: Cell::new(map), len, previous }
    }
}

/// Whether every page of the stack `ss` describes is mapped (a disabled one counts as mapped:
/// there is nothing to check).
fn is_mapped(ss: &libc::stack_t) -> bool {
    if ss.ss_flags & libc::SS_DISABLE != 0 {
        return true;
    }
    let page = super::page_size();
    let start = ss.ss_sp as usize & !(page - 1);
    let end = ss.ss_sp as usize + ss.ss_size;
    let mut residency = [0u8; 64];
    let pages = (end - start).div_ceil(page);
    if pages > residency.len() {
        // Not one we replaced (those are under 64 KiB); nothing to decide here.
        return true;
    }
    // SAFETY: mincore only reads the page tables of [start, end) and writes one byte per page
    // into `residency`, which has room for `pages` bytes; an unmapped page is ENOMEM.
    unsafe { libc::mincore(start as *mut libc::c_void, end - start, residency.as_mut_ptr()) == 0 }
}

/// A `stack_t` that disables the alternate stack.
fn disabled() -> libc::stack_t {
    libc::stack_t { ss_sp: ptr::null_mut(), ss_flags: libc::SS_DISABLE, ss_size: 0 }
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
            // Give the host its stack back (or none, if it had none). A previous stack that
            // is no longer mapped (Rust's std unmaps its threads' small stacks as they end,
            // before thread-local destructors run) is not put back, nor is one the kernel
            // refuses: none then, as ours is about to be unmapped and must not stay registered.
            let back = if is_mapped(&self.previous) { self.previous } else { disabled() };
            // SAFETY: `back` is what this thread had registered before us, still mapped,
            // memory the host keeps valid for the thread's life; or a disabled stack_t, which
            // has no preconditions.
            if unsafe { libc::sigaltstack(&back, ptr::null_mut()) } != 0 {
                // SAFETY: disabling the alternate stack of this thread has no preconditions.
                unsafe { libc::sigaltstack(&disabled(), ptr::null_mut()) };
            }
        }
        // SAFETY: our mapping, no longer registered as this thread's alternate stack (we put
        // the previous one back above, or someone else replaced ours already; either way the
        // kernel no longer uses it).
        unsafe { libc::munmap(map, self.len) };
    }
}

/// This thread's alternate stack as `(start, size)`, if one is enabled (for tests).
#[cfg(test)]
pub(super) fn current_for_test() -> Option<(usize, usize)> {
    let cur = current();
    (cur.ss_flags & libc::SS_DISABLE == 0).then_some((cur.ss_sp as usize, cur.ss_size))
}
