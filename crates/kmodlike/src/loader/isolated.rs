//! Isolated modules in the registry: opened by starting their process, invoked by a round
//! trip, unloaded by asking the process to close, and their crashes, exits and deadlines
//! booked as crashes (history, crash-loop policy, events) like any other. The process side is
//! [`crate::isolated`].

use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::crash::{signal_name, CrashReport, Phase};
use crate::error::{Error, Result};
use crate::image::{Checked, Image};
use crate::interface::Version;
use crate::isolated::wire::Kind;
use crate::isolated::{Callbacks, Child, Outcome, Spawn};
use crate::module::{FileKey, Interface, Module, ModuleState};
use crate::options::{InitArgs, Isolation, OpenOptions};
use crate::resolve::search_path;

use super::instances::lock;
use super::registry::Event;
use super::LoaderShared;

impl LoaderShared {
    /// Start the process of an isolated module and wait until it has loaded it. Its
    /// dependencies are loaded by its own loader, in its process.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn load_isolated(
        &self,
        image: Image,
        facts: Arc<Checked>,
        path: PathBuf,
        key: FileKey,
        name: &str,
        opts: &OpenOptions,
        isolation: Isolation,
    ) -> Result<Arc<Module>> {
        let callbacks = match opts.init_args {
            InitArgs::Loader => Callbacks::Loader(self.cfg.log.clone()),
            InitArgs::Null => Callbacks::Null,
            InitArgs::Raw(a) => Callbacks::Raw(a),
        };
        let (child, first) = Child::spawn(Spawn {
            helper: self.cfg.host_helper.clone(),
            name,
            path: &path,
            module_fd: image.fd(),
            dirs: search_path(&self.path.read().unwrap_or_else(|e| e.into_inner())),
            strict: self.cfg.strict,
            isolation,
            callbacks,
        })?;
        drop(image);
        let id = super::open::next_id();
        let module =
            Arc::new(Module::new_isolated(id, name.to_owned(), path, key, facts, Arc::new(child)));
        match first {
            Outcome::Ready(v) => {
                module.set_interface(Interface {
                    legacy: v < 0,
                    version: (v >= 0).then(|| Version::from_raw(v as u32)),
                    entry: Default::default(),
                });
                module.set_state(ModuleState::Live);
                Ok(module)
            }
            other => Err(self.isolated_failure(&module, other, Phase::Init, "module_init()")),
        }
    }

    /// One invoke of an isolated module.
    pub(super) fn invoke_isolated(
        &self,
        module: &Arc<Module>,
        child: &Child,
        symbol: &str,
        input: &[u8],
    ) -> Result<(i32, Vec<u8>)> {
        if module.state() != ModuleState::Live {
            return Err(module.not_live_error());
        }
        module.guard.calls.fetch_add(1, Ordering::Relaxed);
        match child.request(Kind::Invoke, 0, &[symbol.as_bytes(), &[0], input], Phase::Call) {
            Outcome::Reply(ret, out) => Ok((ret, out)),
            other => Err(self.isolated_failure(module, other, Phase::Call, &format!("{symbol}()"))),
        }
    }

    /// The unlocked part of an isolated module's unload (see `unload_marked`): ask its process
    /// to close the module (`module_can_unload` unless `!veto`, `module_fini`) and exit.
    pub(super) fn unload_isolated(
        &self,
        module: &Arc<Module>,
        child: &Child,
        veto: bool,
    ) -> Result<()> {
        let outcome = child.request(Kind::Close, i32::from(!veto), &[], Phase::Fini);
        match outcome {
            Outcome::Closed => {}
            Outcome::Failed { kind, code, .. } if kind == "Busy" && code != 0 => {
                return Err(self.vetoed(module, code));
            }
            other => {
                return Err(self.isolated_failure(module, other, Phase::Fini, "module_fini()"))
            }
        }
        child.kill();
        module.set_state(ModuleState::Unloaded);
        let deps = self.with_reg(|reg| {
            let deps = reg.remove(module.id).map(|e| e.deps).unwrap_or_default();
            reg.events.push(Event::Unloaded { name: module.name.clone() });
            deps
        });
        self.release_deps(&deps, false);
        Ok(())
    }

    /// What a request that did not simply succeed means for the caller and for the module: a
    /// crash, an exit or a deadline unloads it and is booked as a crash; another failure of
    /// its process too (the process is gone); a plain error leaves it loaded.
    fn isolated_failure(
        &self,
        module: &Arc<Module>,
        outcome: Outcome,
        phase: Phase,
        what: &str,
    ) -> Error {
        let child = module.isolated.as_ref().expect("an isolated module");
        let pid = child.pid();
        let (report, error) = match outcome {
            Outcome::Crashed(report) => ((*report).clone(), Error::Crashed(report)),
            Outcome::Exited { status, how } => {
                let mut r = exit_report(module, phase, pid, status, &how);
                r.code_meaning = how.clone();
                let e = Error::Exited {
                    module: module.name.clone(),
                    path: module.path.clone(),
                    status,
                    how,
                };
                (r, e)
            }
            Outcome::TimedOut(timeout) => {
                let mut r = exit_report(module, phase, pid, 0, "");
                r.signal = libc::SIGKILL;
                r.signal_name = signal_name(libc::SIGKILL);
                r.exit_status = None;
                r.code_name = "DEADLINE".into();
                r.code_meaning =
                    format!("{what} in process {pid} did not return within {timeout:?}");
                r.timeout = Some(crate::crash::CallTimeout { limit: Some(timeout), ran: timeout });
                let e = Error::TimedOut(Box::new(r.clone()));
                (r, e)
            }
            Outcome::Failed { kind, message, code } => {
                let e = remote_error(module, &kind, &message, code);
                if phase == Phase::Call && kind != "Internal" && kind != "NotLoaded" {
                    // A plain error of the call: the module is still loaded.
                    return e;
                }
                child.kill();
                module.set_state(ModuleState::Unloaded);
                if phase != Phase::Init {
                    *lock(&module.death) = Some(format!("its process failed: {e}"));
                    let deps = self.with_reg(|reg| reg.remove(module.id).map(|e| e.deps));
                    self.release_deps(&deps.unwrap_or_default(), false);
                }
                return e;
            }
            Outcome::Ready(_) | Outcome::Reply(..) | Outcome::Closed => {
                child.kill();
                return Error::InvalidArgument(format!(
                    "module {}: its process answered out of turn and was killed",
                    module.name
                ));
            }
        };
        child.kill();
        module.crashes.fetch_add(1, Ordering::Relaxed);
        *lock(&module.death) =
            Some(format!("unloaded after a crash: {} in {}", report.cause(), phase.name()));
        module.set_state(ModuleState::Crashed);
        let deps = self.with_reg(|reg| {
            let deps = reg.remove(module.id).map(|e| e.deps).unwrap_or_default();
            self.record_crash_history(reg, &report);
            deps
        });
        self.release_deps(&deps, false);
        error
    }
}

/// The crash record of an exit (or a deadline) of an isolated module.
fn exit_report(module: &Module, phase: Phase, pid: u32, status: i32, how: &str) -> CrashReport {
    CrashReport {
        signal_name: format!("exit({status})"),
        code_name: "EXIT".into(),
        code_meaning: how.to_owned(),
        thread_id: pid as i32,
        exit_status: Some(status),
        probe_pid: Some(pid),
        ..CrashReport::base(&module.name, &module.path, 0, phase)
    }
}

/// An error the child reported, as an [`Error`] of the parent.
fn remote_error(module: &Module, kind: &str, message: &str, code: i32) -> Error {
    let in_child = format!("in its isolated process: {message}");
    match kind {
        "InitFailed" => {
            Error::InitFailed { module: module.name.clone(), path: module.path.clone(), code }
        }
        "SymbolNotFound" => Error::SymbolNotFound {
            module: module.name.clone(),
            symbol: String::new(),
            detail: in_child,
        },
        "BufferTooSmall" | "InvalidArgument" => Error::InvalidArgument(in_child),
        "NotLoaded" => Error::NotLoaded { module: module.name.clone(), reason: message.to_owned() },
        _ => Error::LoadFailed { path: module.path.clone(), dlerror: in_child },
    }
}
