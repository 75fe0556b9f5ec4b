//! Calls into modules: `Call` (under the guard, with its deadline), `mod_hello` at load, the
//! calls in flight that `Calls`, `List` and `Info` show, and interrupting them at shutdown.

use std::time::{Duration, SystemTime};

use super::errors::map_error;
use super::LoaderService;
use crate::varlink::types::{self, CallReply};
use crate::varlink::VarlinkError;

impl LoaderService {
    /// Call the module's `mod_hello()` when it exports one; false when it does not.
    pub(super) fn call_hello(&self, name: &str) -> Result<bool, VarlinkError> {
        let handle = self.handle_for(name)?;
        let Ok(ptr) = handle.symbol_ptr("mod_hello") else { return Ok(false) };
        // SAFETY: `mod_hello` is `void mod_hello(void)` by the module interface's definition;
        // a non-null code address from the module itself.
        let f: extern "C" fn() =
            unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(ptr) };
        // Bounded like a Call (`--call-timeout`).
        let mut opts = kmodlike::CallOptions::default();
        opts.timeout = self.facts.call_timeout;
        // SAFETY: `f` is the module's own code (`symbol_ptr` finds only symbols the module
        // defines), loaded under the operator's promise; no daemon frame lies between the
        // guard and it.
        unsafe { handle.call0_with(&opts, f) }.map_err(|e| map_error(&e, name))?;
        Ok(true)
    }

    /// The calls running now, oldest first.
    pub(super) fn calls_in_flight(&self) -> Vec<types::CallInFlight> {
        let mut calls: Vec<types::CallInFlight> =
            self.loader.calls_in_flight().iter().map(types::CallInFlight::from).collect();
        calls.sort_by(|a, b| a.since.total_cmp(&b.since));
        calls
    }

    /// `modules` with their calls in flight filled in.
    pub(super) fn with_calls(&self, mut modules: Vec<types::Module>) -> Vec<types::Module> {
        let calls = self.calls_in_flight();
        for m in &mut modules {
            m.calls_in_flight =
                Some(calls.iter().filter(|c| c.module == m.name).cloned().collect());
        }
        modules
    }

    /// At shutdown: interrupt every call still running, naming each in the log.
    pub(super) fn interrupt_all_calls(&self) -> usize {
        let calls = self.calls_in_flight();
        let now = SystemTime::now();
        for c in &calls {
            tracing::warn!(
                module = %c.module,
                "still running at shutdown: interrupting the call of {} in module {} on thread {} \
                 (running for {:.1} s)",
                c.function.as_deref().unwrap_or("an unnamed function"),
                c.module,
                c.thread,
                (types::epoch_secs(now) - c.since).max(0.0)
            );
        }
        let mut modules: Vec<&str> = calls.iter().map(|c| c.module.as_str()).collect();
        modules.sort_unstable();
        modules.dedup();
        modules.into_iter().map(|m| self.loader.interrupt_calls(m)).sum()
    }

    /// Call `symbol` of module `name` with `signature`.
    pub fn call(
        &self,
        name: &str,
        symbol: &str,
        signature: Signature,
        arg: Option<i32>,
        deadline: Option<Duration>,
    ) -> Result<CallReply, VarlinkError> {
        // The deadline, else none (the loader has no default of its own: `--call-timeout`
        // reaches calls through `deadline`).
        let opts = match deadline {
            Some(d) => kmodlike::CallOptions::default().with_timeout(d),
            None => kmodlike::CallOptions::default(),
        };
        let handle = self.handle_for(name)?;
        let ptr = handle.symbol_ptr(symbol).map_err(|e| map_error(&e, name))?;
        let timer = self.metrics.start_call(name);
        // `ptr` is the address of a function the module itself defines (`symbol_ptr` refuses
        // symbols of dependencies or libc); the caller declared its C type through `signature`,
        // which is the documented contract of Call (a wrong declaration is undefined behaviour
        // of that module's code, which the guard contains if it faults). The guarded calls
        // below run only that module code: no daemon frame lies between the guard and it.
        let result = match signature {
            Signature::Void => {
                // SAFETY: the module's `void f(void)`, as declared by the caller (above).
                let f = unsafe { std::mem::transmute::<*mut libc::c_void, extern "C" fn()>(ptr) };
                // SAFETY: module code, loaded under the operator's promise (above).
                unsafe { handle.call0_with(&opts, f) }.map(|()| None)
            }
            Signature::Int => {
                // SAFETY: the module's `int32_t f(void)`, as declared by the caller (above).
                let f = unsafe {
                    std::mem::transmute::<*mut libc::c_void, extern "C" fn() -> i32>(ptr)
                };
                // SAFETY: module code, loaded under the operator's promise (above).
                unsafe { handle.call0_with(&opts, f) }.map(|r| Some(i64::from(r)))
            }
            Signature::IntInt => {
                // SAFETY: the module's `int32_t f(int32_t)`, as declared by the caller (above).
                let f = unsafe {
                    std::mem::transmute::<*mut libc::c_void, extern "C" fn(i32) -> i32>(ptr)
                };
                // SAFETY: module code, loaded under the operator's promise (above).
                unsafe { handle.call_with(&opts, f, arg.unwrap_or(0)) }.map(|r| Some(i64::from(r)))
            }
        };
        drop(timer);
        drop(handle);
        match result {
            Ok(result) => Ok(CallReply { result }),
            Err(e) => {
                if e.crash_report().is_some() {
                    // Drop the daemon's dead reference now rather than on the next look.
                    drop(self.held());
                }
                Err(map_error(&e, name))
            }
        }
    }
}

/// The C types `Call` can call through.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signature {
    /// `void f(void)`.
    Void,
    /// `int f(void)`.
    Int,
    /// `int f(int)`.
    IntInt,
}

impl Signature {
    /// Parse `"void()"`, `"int()"`, `"int(int)"` (spaces and an explicit `void` parameter list
    /// allowed).
    pub fn parse(text: &str) -> Result<Signature, VarlinkError> {
        let compact: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        match compact.as_str() {
            "void()" | "void(void)" => Ok(Signature::Void),
            "int()" | "int(void)" => Ok(Signature::Int),
            "int(int)" => Ok(Signature::IntInt),
            _ => Err(VarlinkError::invalid_parameter_because(
                "signature",
                &format!(
                    "unsupported signature {text:?}: use \"void()\", \"int()\" or \"int(int)\""
                ),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures() {
        assert_eq!(Signature::parse("void()").unwrap(), Signature::Void);
        assert_eq!(Signature::parse("void (void)").unwrap(), Signature::Void);
        assert_eq!(Signature::parse("int()").unwrap(), Signature::Int);
        assert_eq!(Signature::parse("int(int)").unwrap(), Signature::IntInt);
        let e = Signature::parse("double(char*)").unwrap_err();
        assert_eq!(e.parameters["parameter"], "signature");
    }
}
