//! Per-module crash-loop policies (`crash-loop=N/SECS` or `crash-loop=off` in `modules.d`). The
//! loader applies one policy to every module; for a module with its own, the daemon decides
//! after each of its crashes instead: it quarantines the name when its own count is reached, and
//! lifts a quarantine the loader's policy set that its own does not call for.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use kmodlike::Loader;

use crate::config::ModuleEntry;

/// A module's own policy: quarantine after `max` crashes within `window` (`max` 0: never).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Policy {
    max: u32,
    window: Duration,
}

/// The policies by module name, and the recent crash times of those modules.
#[derive(Default)]
pub(crate) struct CrashLoopOverrides {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    policies: HashMap<String, Policy>,
    crashes: HashMap<String, VecDeque<Instant>>,
}

/// The module name a listed spec or path loads as: its last segment without `.so`.
pub(crate) fn module_name(spec: &str) -> &str {
    let last = spec.rsplit('/').next().unwrap_or(spec);
    last.strip_suffix(".so").unwrap_or(last)
}

impl CrashLoopOverrides {
    /// Take the policies of the listed modules (replacing earlier ones).
    pub(crate) fn set(&self, modules: &[ModuleEntry]) {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.policies = modules
            .iter()
            .filter_map(|m| {
                let (max, secs) = m.crash_loop?;
                Some((
                    module_name(&m.spec).to_owned(),
                    Policy { max, window: Duration::from_secs(secs) },
                ))
            })
            .collect();
        let names: Vec<String> = inner.policies.keys().cloned().collect();
        inner.crashes.retain(|n, _| names.contains(n));
    }

    /// After a crash of `module`: apply its own policy, when it has one. Returns whether the
    /// module has one (then the loader's quarantine verdict has been replaced by it).
    pub(crate) fn on_crash(&self, loader: &Loader, module: &str) -> bool {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let Some(policy) = inner.policies.get(module).copied() else { return false };
        let now = Instant::now();
        let times = inner.crashes.entry(module.to_owned()).or_default();
        times.push_back(now);
        while times.front().is_some_and(|t| now.duration_since(*t) > policy.window) {
            times.pop_front();
        }
        while times.len() > policy.max.max(1) as usize {
            times.pop_front();
        }
        let quarantine = policy.max > 0 && times.len() >= policy.max as usize;
        let n = times.len();
        drop(inner);
        if quarantine {
            loader.restore_quarantine(module, n);
        } else {
            // The loader's own policy may have quarantined it; this module's does not.
            let _ = loader.clear_quarantine(module);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_spec_or_the_file() {
        assert_eq!(module_name("misc/hello"), "hello");
        assert_eq!(module_name("hello"), "hello");
        assert_eq!(module_name("/opt/x/parser.so"), "parser");
    }
}
