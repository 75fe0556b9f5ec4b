//! Deadlines of guarded calls, the loader's side: the call options, the time limits of the
//! loader and of handles, the calls in flight, interrupting them, and what the watchdog
//! reports (a slow call's stack sample, a hung call). The guard's side (the watchdog, the
//! interrupt signal) is `guard/deadline.rs`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::guard::deadline::{self, Deadline, InFlight, WatchEvent};
use crate::module::{Module, ModuleState};

use super::instances::{self, lock};
use super::registry::Event;
use super::{Loader, LoaderShared};

/// Options of one guarded call ([`Handle::call_with`](super::Handle::call_with)).
///
/// ```
/// # use std::time::Duration;
/// let mut opts = kmodlike::CallOptions::default();
/// opts.timeout = Some(Duration::from_secs(2));
/// assert_eq!(opts, kmodlike::CallOptions::default().with_timeout(Duration::from_secs(2)));
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOptions {
    /// The call's time limit (hard deadline): past it the call is interrupted and returns
    /// [`Error::TimedOut`](crate::Error::TimedOut), and the module is unloaded as after a
    /// crash. `None`: the handle's limit, else the loader's, else none.
    pub timeout: Option<Duration>,
    /// When to warn that the call is slow (a stack sample in [`Event::CallSlow`] and a
    /// warning in the log). `None`: half the time limit. Not after the time limit.
    pub soft_timeout: Option<Duration>,
}

impl CallOptions {
    /// These options with the time limit `timeout`.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
    /// These options with the slow-call warning at `soft`.
    pub fn with_soft_timeout(mut self, soft: Duration) -> Self {
        self.soft_timeout = Some(soft);
        self
    }
}

/// A guarded call running now ([`Loader::calls_in_flight`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallInFlight {
    /// The module called.
    pub module: String,
    /// The function, when known (calls with a deadline record it).
    pub function: Option<String>,
    /// The thread running it (kernel thread id).
    pub thread: i32,
    /// When it started; for a call without a deadline (which records no start), when it was
    /// seen.
    pub since: SystemTime,
    /// When it will be interrupted, if it has a deadline (in the past: being interrupted, or
    /// hung).
    pub deadline: Option<SystemTime>,
}

/// Nanoseconds of a time limit for the atomics (0 is "none": a zero limit is 1 ns).
#[inline]
pub(super) fn limit_ns(d: Option<Duration>) -> u64 {
    d.map_or(0, |d| crate::guard::deadline::duration_ns(d).max(1))
}

impl LoaderShared {
    /// The deadline of a call of `func` with these options, this handle limit (ns, 0: the
    /// loader's) and the loader's: `None` when none applies.
    #[inline(always)]
    pub(super) fn deadline_for(
        &self,
        opts: Option<&CallOptions>,
        handle_ns: u64,
        func: u64,
    ) -> Option<Deadline> {
        let ns = match opts.and_then(|o| o.timeout) {
            Some(d) => limit_ns(Some(d)),
            None if handle_ns != 0 => handle_ns,
            None => self.call_timeout.load(Ordering::Relaxed),
        };
        if ns == 0 {
            return None;
        }
        let soft = opts.and_then(|o| o.soft_timeout).map(crate::guard::deadline::duration_ns);
        Some(Deadline::after(ns, soft, func))
    }

    /// The deadline of `module_init`: the load's own limit, else the loader's call time limit,
    /// if any.
    pub(super) fn init_deadline(&self, own: Option<Duration>) -> Option<Deadline> {
        match own {
            Some(d) => self.deadline_for(Some(&CallOptions::default().with_timeout(d)), 0, 0),
            None => self.deadline_for(None, 0, 0),
        }
    }

    /// A call of this loader's to name: the function's name from the module's symbols.
    fn function_name(module: &Module, func: u64) -> Option<String> {
        if func == 0 {
            return None;
        }
        let contains = |a: u64| module.contains(a);
        let view = crate::backtrace::ModuleView { path: &module.path, contains: &contains };
        crate::backtrace::symbol_name_at(func, &view)
    }

    /// The watchdog found a call of `module` past its soft deadline: warn, with the sample.
    fn call_slow(&self, module: &Arc<Module>, call: &InFlight, sample: Option<&ThreadSampleRef>) {
        let function = Self::function_name(module, call.func);
        let running = Duration::from_nanos(deadline::monotonic_ns().saturating_sub(call.start));
        let frames = match sample {
            Some(s) => {
                let contains = |a: u64| module.contains(a);
                let view = crate::backtrace::ModuleView { path: &module.path, contains: &contains };
                let fault =
                    crate::backtrace::Fault { pc: s.pc, sp: s.sp, fp: 0, lr: 0, stack: &s.stack };
                crate::backtrace::backtrace(&fault, &view)
            }
            None => Vec::new(),
        };
        let at = frames.first().map_or_else(
            || "(the thread could not be sampled)".to_owned(),
            |f| match (&f.symbol, f.symbol_offset, &f.object) {
                (Some(s), Some(o), Some(obj)) => format!("in {s}+{o:#x} ({obj})"),
                (Some(s), _, _) => format!("in {s}"),
                _ => format!("at {:#x}", f.pc),
            },
        );
        let what = function.as_deref().map_or("a call".to_owned(), |f| format!("call to {f}"));
        self.warn(
            module,
            &format!(
                "module {}: {what} on thread {} has run for {:.3} s and is still running; \
                 it is {at}",
                module.name,
                call.tid,
                running.as_secs_f64()
            ),
        );
        let ev = Event::CallSlow {
            module: module.name.clone(),
            function,
            thread: call.tid,
            running,
            frames,
        };
        self.with_reg(|reg| reg.events.push(ev));
    }

    /// The watchdog cannot interrupt a call of `module`: mark it hung.
    fn call_hung(&self, module: &Arc<Module>, call: &InFlight, why: &str) {
        let function = Self::function_name(module, call.func);
        let what = function.as_deref().map_or("a call".to_owned(), |f| format!("call to {f}"));
        let detail = format!(
            "{what} ran past its deadline and cannot be interrupted safely: {why}; no new calls are \
             made; unload the module to remove it (thread {} is left alone)",
            call.tid
        );
        if !module.compare_set_state(ModuleState::Live, ModuleState::Hung)
            && !module.compare_set_state(ModuleState::Loading, ModuleState::Hung)
        {
            return;
        }
        *lock(&module.death) = Some(format!("it is hung: {detail}"));
        self.warn(module, &format!("module {} is hung: {detail}", module.name));
        let ev = Event::Hung { module: module.name.clone(), function, thread: call.tid, detail };
        self.with_reg(|reg| reg.events.push(ev));
    }
}

type ThreadSampleRef = crate::guard::ThreadSample;

/// The watchdog's reports, routed to the module's loader (set once, by the first loader).
pub(super) fn on_watch_event(ev: WatchEvent) {
    let call = match &ev {
        WatchEvent::Slow { call, .. } | WatchEvent::Hung { call, .. } => call,
    };
    let Some((module, Some(loader))) = instances::lookup(call.module_id) else {
        return;
    };
    match &ev {
        WatchEvent::Slow { sample, .. } => loader.call_slow(&module, call, sample.as_ref()),
        WatchEvent::Hung { why, .. } => loader.call_hung(&module, call, why),
    }
}

impl Loader {
    /// The default time limit of guarded calls made through this loader's handles (and of
    /// `module_init`), `None` for none. A handle's own limit
    /// ([`Handle::set_call_timeout`](super::Handle::set_call_timeout)) and a call's
    /// ([`CallOptions::timeout`]) come first.
    pub fn set_call_timeout(&self, timeout: Option<Duration>) {
        self.shared.call_timeout.store(limit_ns(timeout), Ordering::Relaxed);
    }

    /// The loader's default time limit of guarded calls.
    pub fn call_timeout(&self) -> Option<Duration> {
        match self.shared.call_timeout.load(Ordering::Relaxed) {
            0 => None,
            ns => Some(Duration::from_nanos(ns)),
        }
    }

    /// Guarded calls into this loader's modules running now, on every thread.
    pub fn calls_in_flight(&self) -> Vec<CallInFlight> {
        let calls = deadline::calls_in_flight();
        let now = SystemTime::now();
        let mono = deadline::monotonic_ns();
        let at = |t: u64| {
            if t >= mono {
                now + Duration::from_nanos(t - mono)
            } else {
                now - Duration::from_nanos(mono - t)
            }
        };
        let reg = lock(&self.shared.reg);
        calls
            .iter()
            .filter_map(|c| {
                let e = reg.entries.get(&c.module_id)?;
                Some(CallInFlight {
                    module: e.module.name.clone(),
                    function: LoaderShared::function_name(&e.module, c.func),
                    thread: c.tid,
                    since: if c.start != 0 { at(c.start) } else { now },
                    deadline: (c.deadline > 2).then(|| at(c.deadline)),
                })
            })
            .collect()
    }

    /// Interrupt now, as a deadline would, every guarded call running in the loaded module
    /// `module` (for a forced unload, or a shutdown): each returns
    /// [`Error::TimedOut`](crate::Error::TimedOut) (a call inside a host callback when the
    /// callback returns) and the module is unloaded as after a crash. Returns how many calls
    /// were interrupted. A thread that blocks the interrupt signal is reported hung instead.
    pub fn interrupt_calls(&self, module: &str) -> usize {
        let id = {
            let reg = lock(&self.shared.reg);
            match reg.by_name.get(module) {
                Some(&id) => id,
                None => return 0,
            }
        };
        deadline::interrupt_module(id)
    }
}
