//! What a crash does to the loader: the report, the logical unload, the crash history and the
//! crash-loop quarantine, and what becomes of the crashed code (kept mapped, or reclaimed).
//!
//! # What a crash costs
//!
//! A crash must cost a bounded amount, however many there are (issue 11). Under the default
//! [`CrashPolicy::ReclaimWhenSafe`] the crashed instance is unmapped (`dlclose`, image and lease
//! released, text unregistered from the guard) as soon as its guarded calls in flight have
//! drained, unless a thread may still run in its code: the module may start threads
//! ([`Checked::may_start_threads`](crate::image::Checked)), or a thread's PC or stack lies in
//! its code when the calls have drained ([`guard::threads_in_code`]). Only then does it stay
//! mapped for good, and such kept instances are bounded per process
//! ([`LoaderBuilder::max_kept_mapped`](super::LoaderBuilder::max_kept_mapped)): past the bound, a
//! load whose crash would be kept is refused ([`Error::Limit`](crate::Error::Limit)). The
//! loader's own records of crashes are bounded too: [`CRASH_HISTORY`] reports,
//! [`CRASH_LOOP_NAMES`] names in the crash-loop counters.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::crash::{self, CrashReport, Phase};
use crate::guard::{self, RawCrash};
use crate::module::{Module, ModuleState};
use crate::options::CrashPolicy;

use super::instances::{self, lock};
use super::registry::{Event, Registry, CRASH_HISTORY, CRASH_LOOP_NAMES};
use super::LoaderShared;

impl LoaderShared {
    /// Everything a crash does: report, taint, logical unload, history, crash-loop, event.
    /// Takes the registry lock briefly; never called with it held.
    pub(crate) fn record_crash(
        &self,
        module: &Arc<Module>,
        raw: &RawCrash,
        phase: Phase,
    ) -> CrashReport {
        let report = crash::build_report(module, raw, phase, instances::file_of_object);
        // Its own signal handlers (recorded by the interposers) must never run again.
        crate::guard::forget_module_actions(module.id);
        module.crashes.fetch_add(1, Ordering::Relaxed);
        *lock(&module.death) = Some(match &report.timeout {
            Some(_) => format!("unloaded after a call ran past its deadline, in {}", phase.name()),
            None => format!("unloaded after a crash: {} in {}", report.cause(), phase.name()),
        });
        module.set_state(ModuleState::Crashed);
        // Before the registry lets go of it: a new open of the file must not find the crashed
        // object in ld.so while it is still mapped (until it is reclaimed, or for good).
        instances::mark_kept_mapped(module.key, module.id);
        if self.keeps_crashed_code(module) {
            retain_forever(module);
        } else {
            self.reclaim_if_drained(module);
        }
        // The Crashed event goes out last but for the dependencies: a subscriber that acts on
        // it (forks, say) finds the crash's own work done and no lock of it held.
        let deps = self.with_reg(|reg| {
            let deps = reg.remove(module.id).map(|e| e.deps).unwrap_or_default();
            self.record_crash_history(reg, &report);
            deps
        });
        self.release_deps(&deps, false);
        report
    }

    pub(super) fn record_crash_history(&self, reg: &mut Registry, report: &CrashReport) {
        reg.crashes.push_front(report.clone());
        reg.crashes.truncate(CRASH_HISTORY);
        if let Some(policy) = self.cfg.crash_loop {
            let now = Instant::now();
            let recent = |t: &Instant| now.duration_since(*t) <= policy.window;
            if reg.crash_times.len() >= CRASH_LOOP_NAMES
                && !reg.crash_times.contains_key(&report.module)
            {
                // Bounded: forget the names with no crash left in the window, and if every
                // one still has some, the one whose last crash is oldest.
                reg.crash_times.retain(|_, times| times.back().is_some_and(recent));
                if reg.crash_times.len() >= CRASH_LOOP_NAMES {
                    let oldest = reg
                        .crash_times
                        .iter()
                        .min_by_key(|(_, times)| times.back().copied())
                        .map(|(name, _)| name.clone());
                    if let Some(name) = oldest {
                        reg.crash_times.remove(&name);
                    }
                }
            }
            let times = reg.crash_times.entry(report.module.clone()).or_default();
            times.push_back(now);
            while times.front().is_some_and(|t| !recent(t)) {
                times.pop_front();
            }
            // A quarantined name is refused before it loads, so it crashes no more: at most
            // `max_crashes` times are kept per name.
            while times.len() > policy.max_crashes.max(1) {
                times.pop_front();
            }
            if times.len() >= policy.max_crashes {
                let n = times.len();
                reg.quarantined.insert(report.module.clone(), n);
            }
        }
        reg.events.push(match report.timeout {
            Some(_) => Event::CallTimedOut(Box::new(report.clone())),
            None => Event::Crashed(Box::new(report.clone())),
        });
    }

    /// Whether a crash of `module` keeps its code mapped for good rather than unmapping it once
    /// its calls have drained: always under [`CrashPolicy::Retain`]; under the default
    /// [`CrashPolicy::ReclaimWhenSafe`], when the module may start threads (one may be running
    /// in its code now, or call into it later, and nothing can tell when it stops).
    pub(super) fn keeps_crashed_code(&self, module: &Module) -> bool {
        match self.cfg.crash_policy {
            CrashPolicy::Retain => true,
            CrashPolicy::ReclaimWhenSafe => module.checked.may_start_threads,
            CrashPolicy::Reclaim => false,
        }
    }

    /// Unmap a crashed module whose code is not kept, once no guarded call is in it. The ONE
    /// drain check of the crash path: called when the crash is recorded and by every guarded
    /// call that leaves (or is refused by) a crashed module.
    pub(super) fn reclaim_if_drained(&self, module: &Arc<Module>) {
        if module.state() == ModuleState::Crashed
            && !self.keeps_crashed_code(module)
            && module.calls_in_flight() == 0
        {
            self.unmap_crashed(module);
        }
    }

    /// Unmap a crashed, drained module, unless a thread is seen in its code: then it stays
    /// mapped for good. Under [`CrashPolicy::Reclaim`] only a module that may start threads is
    /// looked at, as on a normal unload.
    fn unmap_crashed(&self, module: &Arc<Module>) {
        if self.cfg.crash_policy == CrashPolicy::Reclaim {
            self.unmap(module);
            return;
        }
        // Once only, whoever drains it last: the calls leaving it race for this, and the loser
        // finds the library handle taken (by unmapping or by keeping it).
        static RECLAIMING: Mutex<()> = Mutex::new(());
        let _one_at_a_time = lock(&RECLAIMING);
        if lock(&module.lib).is_none() {
            return;
        }
        let threads = guard::threads_in_code(&module.text);
        if threads.is_empty() {
            self.unmap_now(module);
        } else {
            self.warn_kept_mapped(module, &threads, "after its crash");
            retain_forever(module);
        }
    }
}

/// Keep a crashed module's code mapped for good: threads it started may still run in it, and
/// `dlclose` under them kills the host. The instance itself (its init args, which those
/// threads may read) is never freed either, and its image name stays reserved.
pub(super) fn retain_forever(module: &Arc<Module>) {
    instances::mark_kept_mapped(module.key, module.id);
    if let Some(lib) = lock(&module.lib).take() {
        instances::count_kept_instance();
        let handle = lib.into_raw();
        let segments: Vec<(u64, u64, bool)> =
            module.segments.iter().map(|&(s, e)| (s, e, module.text.contains(&(s, e)))).collect();
        // SAFETY: a live handle (never closed: it is leaked right here) of a crashed module.
        if !unsafe { crate::linkmap::hide_symbols(handle, &segments) } {
            eprintln!(
                "kmodlike: cannot hide the symbols of crashed module {} ({}): a module loaded \
                 later that depends on it may bind to the crashed copy",
                module.name,
                module.path.display()
            );
        }
    }
    if let Some(lib) = lock(&module.global_ref).take() {
        std::mem::forget(lib);
    }
    if let Some(image) = lock(&module.image).take() {
        image.retain_forever();
    }
    std::mem::forget(module.clone());
}
