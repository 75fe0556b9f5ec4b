//! The Rust face of `interpose.c`: the addresses the loader writes into a module's GOT slots
//! for its imports of `sigaction`, `signal`, `sigprocmask`, `exit`... (see
//! `loader/interpose.rs`), forgetting a module's recorded signal actions, taking the guard's
//! handlers back after module code changed them behind the interposers, and which exit
//! function ended a guarded call.

use std::ffi::{c_char, c_int, CStr};

extern "C" {
    fn kml_interposer(i: u32, name: *mut *const c_char) -> *mut std::ffi::c_void;
    fn kml_interpose_forget(module_id: u64);
    fn kml_interpose_capture_guard();
    fn kml_interpose_reclaim(restored: *mut c_int) -> c_int;
}

/// The interposer for [`INTERPOSED_IMPORTS`](crate::facts::INTERPOSED_IMPORTS)`[i]`, with the
/// name of the import it stands for (`None` past the end of the C table).
pub(crate) fn interposer(i: u8) -> Option<(u64, &'static str)> {
    let mut name: *const c_char = std::ptr::null();
    // SAFETY: reads a constant table; `name` is a valid out pointer.
    let f = unsafe { kml_interposer(u32::from(i), &mut name) };
    if f.is_null() {
        return None;
    }
    // SAFETY: a NUL-terminated string literal of the C table, valid for the whole process.
    let name = unsafe { CStr::from_ptr(name) }.to_str().unwrap_or("?");
    Some((f as u64, name))
}

/// Forget the signal actions a module recorded through its redirected `sigaction`/`signal`:
/// it is unloaded, or crashed, and its handler must never run again.
pub(crate) fn forget(module_id: u64) {
    // SAFETY: plain value; the C side publishes with atomics.
    unsafe { kml_interpose_forget(module_id) };
}

/// Remember the guard's own actions for the six signals, to put them back later. Called once,
/// right after the guard installed them.
pub(super) fn capture_guard_actions() {
    // SAFETY: normal context; six sigaction queries into a table written once.
    unsafe { kml_interpose_capture_guard() };
}

/// Put the guard's handler back for every fatal signal whose handler is no longer the guard's
/// (one `sigaction` query per signal); the signals put back.
pub(crate) fn reclaim_handlers() -> Vec<i32> {
    let mut restored = [0 as c_int; 8];
    // SAFETY: normal context; `restored` has room for the six signals.
    let n = unsafe { kml_interpose_reclaim(restored.as_mut_ptr()) };
    restored[..n.clamp(0, 6) as usize].to_vec()
}

/// The exit functions, by the number `interpose.c` records (`KML_EXIT_*`).
fn exit_function_name(n: c_int) -> Option<&'static str> {
    match n {
        1 => Some("exit"),
        2 => Some("_exit"),
        3 => Some("_Exit"),
        4 => Some("quick_exit"),
        _ => None,
    }
}

/// For an exit: the exit function, which the record carries in its `addr` field.
pub(super) fn exit_function_of_record(addr: u64) -> Option<&'static str> {
    exit_function_name(c_int::try_from(addr).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_c_table_matches_the_names_the_loader_looks_for() {
        for (i, name) in crate::facts::INTERPOSED_IMPORTS.iter().enumerate() {
            let (addr, c_name) = interposer(i as u8).expect("an interposer for every import");
            assert_ne!(addr, 0);
            assert_eq!(c_name.as_bytes(), *name, "import {i}");
        }
        assert!(interposer(crate::facts::INTERPOSED_IMPORTS.len() as u8).is_none());
    }
}
