//! Test module: an export that never returns, for the deadline tests (`tests/deadline.rs`).

use std::sync::atomic::{AtomicU64, Ordering};

static SPINS: AtomicU64 = AtomicU64::new(0);

kmodlike_module::module! {
    description: "SDK test module: an export that loops forever",
}

kmodlike_module::export! {
    /// Loops until the guard's deadline interrupts it (it owns nothing while it loops).
    fn spin() {
        loop {
            SPINS.fetch_add(1, Ordering::Relaxed);
        }
    }
}
