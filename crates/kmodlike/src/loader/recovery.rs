//! What a crash does to the loader: the report, the logical unload, the crash history and the
//! crash-loop quarantine, and what becomes of the crashed code (kept mapped, or reclaimed).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Instant;

use crate::crash::{self, CrashReport, Phase};
use crate::guard::RawCrash;
use crate::module::{Module, ModuleState};
use crate::options::CrashPolicy;

use super::instances::{self, lock};
use super::registry::{Event, Registry, CRASH_HISTORY};
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
        *lock(&module.death) =
            Some(format!("unloaded after a crash: {} in {}", report.cause(), phase.name()));
        module.set_state(ModuleState::Crashed);
        // Before the registry lets go of it: a new open of the file must not find the crashed
        // object in ld.so.
        instances::mark_kept_mapped(module.key);
        match self.cfg.crash_policy {
            CrashPolicy::Reclaim => self.reclaim_if_drained(module),
            CrashPolicy::Retain => retain_forever(module),
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
            let times = reg.crash_times.entry(report.module.clone()).or_default();
            times.push_back(now);
            while times.front().is_some_and(|t| now.duration_since(*t) > policy.window) {
                times.pop_front();
            }
            if times.len() >= policy.max_crashes {
                let n = times.len();
                reg.quarantined.insert(report.module.clone(), n);
            }
        }
        reg.events.push(Event::Crashed(Box::new(report.clone())));
    }

    /// Under [`CrashPolicy::Reclaim`], unmap a crashed module once no call is in it.
    pub(super) fn reclaim_if_drained(&self, module: &Arc<Module>) {
        if self.cfg.crash_policy == CrashPolicy::Reclaim
            && module.state() == ModuleState::Crashed
            && module.inflight() == 0
        {
            self.unmap(module);
        }
    }
}

/// Keep a crashed module's code mapped for good: threads it started may still run in it, and
/// `dlclose` under them kills the host. The instance itself (its init args, which those
/// threads may read) is never freed either, and its image name stays reserved.
pub(super) fn retain_forever(module: &Arc<Module>) {
    instances::mark_kept_mapped(module.key);
    if let Some(lib) = lock(&module.lib).take() {
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
