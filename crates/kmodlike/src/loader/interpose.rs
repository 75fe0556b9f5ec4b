//! Keeping a module's hands off the guard: its own imports of `sigaction`, `signal` (and
//! `bsd_signal`, `sysv_signal`, `__sysv_signal`, `sigset`), `sigprocmask`, `pthread_sigmask`,
//! `exit`, `_exit`, `_Exit` and `quick_exit` are redirected to the guard's interposers
//! (`guard/interpose.c`), the way PLT-hooking libraries do it (plthook, xHook, bhook): after
//! `dlopen` and before any interface function runs, the module's GOT slots for those imports
//! (its `JUMP_SLOT` and `GLOB_DAT` relocations, listed once from the file at validation:
//! [`Checked::interposed_slots`](crate::image::Checked)) are overwritten with the interposers'
//! addresses.
//!
//! Only the module object's own slots are rewritten, not those of libraries it brings with it
//! (`DT_NEEDED`) or loads itself: a call to `signal` made from inside such a library reaches
//! libc. Nor can the slots see raw system calls (`syscall(SYS_rt_sigaction, ...)`) or the
//! module's constructors, which ran inside `dlopen`, before the rewrite. For those,
//! [`LoaderShared::reclaim_fatal_handlers`] checks the six handlers after the module's
//! constructors and `module_init`, and after its `module_fini`, and puts the guard's back.

use crate::guard;
use crate::module::Module;

use super::LoaderShared;

/// Point the module's GOT slots for the redirected imports at the guard's interposers.
/// Slots in `PT_GNU_RELRO` (read-only since ld.so relocated the module) are made writable for
/// the write and read-only again, as ld.so left them. Returns what could not be redirected.
pub(super) fn redirect_imports(module: &Module) -> std::result::Result<(), String> {
    let page = crate::page_size();
    // The pages ld.so made read-only: `_dl_protect_relro` rounds both ends down to a page.
    let relro = module.checked.relro.map(|(vaddr, memsz)| {
        let start = module.bias.wrapping_add(vaddr) & !(page - 1);
        let end = module.bias.wrapping_add(vaddr).wrapping_add(memsz) & !(page - 1);
        (start, end)
    });
    let mut failed = Vec::new();
    for &(offset, import) in &module.checked.interposed_slots {
        let Some((target, name)) = guard::interposer(import) else { continue };
        let slot = module.bias.wrapping_add(offset);
        // The validator checked that every relocation writes 8 bytes inside a writable
        // PT_LOAD segment of the module: the slot is mapped, in this module, and aligned as
        // ld.so wrote it.
        if slot % 8 != 0 || !module.segments.iter().any(|&(s, e)| slot >= s && slot + 8 <= e) {
            failed.push(format!("{name} (slot {slot:#x} outside the module's segments)"));
            continue;
        }
        let protected = relro.filter(|&(s, e)| slot >= s && slot < e).map(|_| slot & !(page - 1));
        if let Some(p) = protected {
            // SAFETY: one page of the module's own RELRO data, mapped (checked above); only
            // its protection changes, and it is restored below.
            let rc = unsafe {
                libc::mprotect(
                    p as *mut libc::c_void,
                    page as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                )
            };
            if rc != 0 {
                let e = std::io::Error::last_os_error();
                failed.push(format!("{name} (mprotect of its RELRO page failed: {e})"));
                continue;
            }
        }
        // SAFETY: an 8-byte aligned GOT slot inside the module's writable mapping (checked
        // above; RELRO made writable just above). ld.so finished relocating at dlopen
        // (RTLD_NOW) and never writes it again; the module's code reads it with a plain load,
        // and an aligned 8-byte store is seen whole.
        unsafe { std::ptr::write_volatile(slot as *mut u64, target) };
        if let Some(p) = protected {
            // SAFETY: as above: back to what ld.so made it.
            unsafe { libc::mprotect(p as *mut libc::c_void, page as usize, libc::PROT_READ) };
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(failed.join(", "))
    }
}

/// When the loader checks the handlers: after which entry into module code.
#[derive(Debug, Clone, Copy)]
pub(super) enum After {
    /// The constructors (inside `dlopen`) and `module_init`.
    Load,
    /// `module_fini`.
    Fini,
}

impl LoaderShared {
    /// Put the guard's handler back for every fatal signal whose handler module code replaced
    /// behind the interposers (a raw system call, a library the module loaded itself), and
    /// say so through the log sink, naming the module and the signals. One `sigaction` query
    /// per signal.
    pub(super) fn reclaim_fatal_handlers(&self, module: &Module, after: After) {
        let restored = guard::reclaim_fatal_handlers();
        if restored.is_empty() {
            return;
        }
        let names: Vec<String> = restored.iter().map(|&s| crate::crash::signal_name(s)).collect();
        let when = match after {
            After::Load => "its constructors or module_init",
            After::Fini => "its module_fini",
        };
        self.warn(
            module,
            &format!(
                "module {} replaced the crash guard's handler for {} in {when} (behind \
                 sigaction: a raw system call or a library it loaded itself); the guard's \
                 handler is back",
                module.name,
                names.join(", ")
            ),
        );
    }

    /// A warning about `module` through the loader's log sink (stderr without one).
    pub(super) fn warn(&self, module: &Module, msg: &str) {
        match &self.cfg.log {
            Some(sink) => sink(&module.name, crate::interface::log_level::WARNING, msg),
            None => eprintln!("kmodlike: {msg}"),
        }
    }
}
