//! Unloading in phases: mark the entry (so opens of its file wait and calls are refused), run
//! `module_can_unload` and `module_fini` with no lock held, remove the entry, unmap the code
//! unless a thread still runs in it, and let go of the dependencies.

use std::ffi::c_void;
use std::mem::MaybeUninit;
use std::sync::Arc;

use crate::crash::Phase;
use crate::error::{BusyReason, Error, Result};
use crate::guard;
use crate::module::{trampoline0, Call0Ctx, Module, ModuleState};

use super::instances::{self, lock};
use super::interpose::After;
use super::registry::Event;
use super::LoaderShared;

impl LoaderShared {
    /// Drop one user reference. The last one, while other loaded modules depend on this one,
    /// is `Busy` naming them (as rmmod's "in use by"); otherwise the module is unloaded, asking
    /// `module_can_unload` first unless `force`. On `Busy` the reference is still held.
    pub(super) fn close_ref(&self, id: u64, force: bool) -> Result<()> {
        let me = std::thread::current().id();
        let module = {
            let mut reg = lock(&self.reg);
            let holders = reg.holders(id);
            let Some(e) = reg.entries.get_mut(&id) else { return Ok(()) };
            if e.refs > 1 {
                e.refs -= 1;
                return Ok(());
            }
            let name = e.module.name.clone();
            if e.unloading_by.is_some() {
                return Err(Error::Reentrant {
                    module: name,
                    detail: "it is being unloaded already".into(),
                });
            }
            if !holders.is_empty() {
                return Err(Error::Busy { module: name, reason: BusyReason::Holders(holders) });
            }
            if e.module.state() == ModuleState::Hung {
                let module = e.module.clone();
                drop(reg);
                self.remove_hung(&module);
                return Ok(());
            }
            // The state first, then the calls in flight: a caller counts itself in, then reads
            // the state (both SeqCst), so one of the two sees the other.
            e.module.set_state(ModuleState::Unloading);
            let inflight = e.module.calls_in_flight();
            if inflight > 0 {
                e.module.set_state(ModuleState::Live);
                return Err(Error::Busy { module: name, reason: BusyReason::InFlight(inflight) });
            }
            e.unloading_by = Some(me);
            e.module.clone()
        };
        self.unload_marked(&module, !force)
    }

    /// Remove a hung module (a call into it ran past its deadline and cannot be interrupted):
    /// no `module_fini`, and its code stays mapped for good, since the hung thread still runs
    /// in it and is left alone.
    fn remove_hung(&self, module: &Arc<Module>) {
        *lock(&module.death) = Some(
            "it was unloaded while hung: the thread stuck in it was left running, and its code \
             stays mapped"
                .into(),
        );
        module.set_state(ModuleState::Unloaded);
        super::recovery::retain_forever(module);
        let deps = self.with_reg(|reg| {
            let deps = reg.remove(module.id).map(|e| e.deps).unwrap_or_default();
            reg.events.push(Event::Unloaded { name: module.name.clone() });
            deps
        });
        self.release_deps(&deps, false);
    }

    /// A dependent let go of `id` (`unpin`: a load that would have depended on it failed):
    /// unload it when nothing else uses it. A veto keeps it loaded, owned by the loader until
    /// [`Loader::shutdown`](crate::Loader::shutdown).
    fn release_dep(&self, id: u64, unpin: bool) {
        let module = {
            let mut reg = lock(&self.reg);
            let Some(e) = reg.entries.get_mut(&id) else { return };
            if unpin {
                e.pins = e.pins.saturating_sub(1);
            }
            if !e.unused() {
                return;
            }
            e.module.set_state(ModuleState::Unloading);
            e.unloading_by = Some(std::thread::current().id());
            e.module.clone()
        };
        let _ = self.unload_marked(&module, true);
    }

    /// Dependencies let go of by a dependent, last opened first.
    pub(super) fn release_deps(&self, ids: &[u64], unpin: bool) {
        for &id in ids.iter().rev() {
            self.release_dep(id, unpin);
        }
    }

    /// The unlocked part of an unload of an entry marked `unloading_by` this thread: ask
    /// `module_can_unload` (when `veto` is allowed), run `module_fini`, then remove, unmap and
    /// release the dependencies.
    fn unload_marked(&self, module: &Arc<Module>, veto: bool) -> Result<()> {
        if let Some(child) = &module.isolated {
            return self.unload_isolated(module, child, veto);
        }
        let entry = module.entry();
        if let (true, Some(can_unload)) = (veto, entry.can_unload) {
            let mut ctx = Call0Ctx { f: can_unload, ret: MaybeUninit::uninit() };
            // SAFETY: `int module_can_unload(void)`; the trampoline owns nothing droppable.
            let r =
                unsafe { module.guarded(trampoline0::<i32>, &mut ctx as *mut _ as *mut c_void) };
            match r {
                Err(raw) => {
                    let report = self.record_crash(module, &raw, Phase::CanUnload);
                    return Err(Error::Crashed(Box::new(report)));
                }
                // SAFETY: written by the trampoline on the normal return path.
                Ok(()) => match unsafe { ctx.ret.assume_init() } {
                    0 => {}
                    code => return Err(self.vetoed(module, code)),
                },
            }
        }
        if let Some(fini) = entry.fini {
            let mut ctx = Call0Ctx { f: fini, ret: MaybeUninit::uninit() };
            // SAFETY: `void module_fini(void)`; the trampoline owns nothing droppable.
            let r = unsafe { module.guarded(trampoline0::<()>, &mut ctx as *mut _ as *mut c_void) };
            self.reclaim_fatal_handlers(module, After::Fini);
            if let Err(raw) = r {
                let report = self.record_crash(module, &raw, Phase::Fini);
                return Err(Error::Crashed(Box::new(report)));
            }
        }
        // Unmapped while the entry still marks its file as being unloaded: a new open of the
        // file waits, rather than finding the dying object in ld.so (which matches a file it
        // holds by inode) and sharing it.
        module.set_state(ModuleState::Unloaded);
        self.unmap(module);
        let deps = self.with_reg(|reg| {
            let deps = reg.remove(module.id).map(|e| e.deps).unwrap_or_default();
            reg.events.push(Event::Unloaded { name: module.name.clone() });
            deps
        });
        self.release_deps(&deps, false);
        Ok(())
    }

    /// `dlclose` a module that is no longer used and forget it; unless a thread (one the
    /// module started and did not stop) still runs in its code or will return into it: then
    /// the code stays mapped for good, and the loader says so, naming the threads.
    /// `module_can_unload` of `module` answered `code` (non-zero): it stays loaded and live,
    /// and the unload is `Busy` with the module's veto.
    pub(super) fn vetoed(&self, module: &Arc<Module>, code: i32) -> Error {
        self.with_reg(|reg| {
            if let Some(e) = reg.entries.get_mut(&module.id) {
                e.unloading_by = None;
            }
            module.set_state(ModuleState::Live);
        });
        Error::Busy { module: module.name.clone(), reason: BusyReason::Veto(code) }
    }

    pub(super) fn unmap(&self, module: &Arc<Module>) {
        if module.checked.may_start_threads {
            let threads = guard::threads_in_code(&module.text);
            if !threads.is_empty() {
                self.warn_kept_mapped(module, &threads, "after module_fini");
                super::recovery::retain_forever(module);
                return;
            }
        }
        self.unmap_now(module);
    }

    /// `dlclose` the module and let go of everything it held: its text in the guard's table,
    /// its instance link, its image (descriptor, lease or private copy) and, once ld.so has
    /// really dropped the object, the mark that made new loads of its file use a private image.
    pub(super) fn unmap_now(&self, module: &Arc<Module>) {
        guard::unregister_module(module.id);
        instances::remove(module.id);
        drop(lock(&module.global_ref).take());
        drop(lock(&module.lib).take());
        if let Some(image) = lock(&module.image).take() {
            let gone = if module.checked.nodelete {
                image.retain_forever();
                false
            } else {
                image.release_after_dlclose(module.base)
            };
            if gone {
                instances::unmark_kept_mapped(module.key, module.id);
            }
        }
    }

    pub(super) fn warn_kept_mapped(
        &self,
        module: &Module,
        threads: &[guard::ThreadInCode],
        when: &str,
    ) {
        let list: Vec<String> = threads.iter().map(ToString::to_string).collect();
        let msg = format!(
            "module {} ({}) is unloaded but its code stays mapped: {} thread(s) still in it \
             {when}: {}; its module_fini must stop the threads it started",
            module.name,
            module.path.display(),
            threads.len(),
            list.join("; ")
        );
        self.warn(module, &msg);
    }

    /// Unload every module, dependents before their dependencies, newest first.
    pub(super) fn shutdown(&self) {
        let me = std::thread::current().id();
        loop {
            let module = {
                let mut reg = lock(&self.reg);
                let next = reg
                    .entries
                    .iter()
                    .rev()
                    .find(|(&id, e)| e.unloading_by.is_none() && !reg.is_held(id))
                    .map(|(&id, _)| id);
                let Some(id) = next else { break };
                let e = reg.entries.get_mut(&id).expect("found above");
                if e.module.state() == ModuleState::Hung {
                    let module = e.module.clone();
                    drop(reg);
                    self.remove_hung(&module);
                    continue;
                }
                e.module.set_state(ModuleState::Unloading);
                e.unloading_by = Some(me);
                e.module.clone()
            };
            if self.unload_marked(&module, false).is_err() {
                // A crash in fini already removed it; anything else must not loop.
                let deps = self.with_reg(|reg| reg.remove(module.id).map(|e| e.deps));
                if let Some(deps) = deps {
                    self.release_deps(&deps, false);
                }
            }
        }
    }
}
