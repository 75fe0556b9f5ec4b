//! The child's optional seccomp filter (`Isolation::seccomp`): an allow-list for computation
//! modules, built with `seccompiler` (no hand-written BPF) and installed on every thread of
//! the child after the module is loaded (the dynamic linker needs `openat` and file `mmap`s)
//! and before its first invoke.
//!
//! Anything else traps: the kernel sends `SIGSYS` (`si_code` `SYS_SECCOMP`). When the call was
//! made from the module's own code the child's guard catches it and reports a crash with the
//! backtrace; when it was made through the C library the guard cannot tell it from a host bug,
//! the child dies by `SIGSYS` and the parent names the filter as the likely cause.

use std::collections::BTreeMap;

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, TargetArch};

/// The system calls a confined child may make: its channel to the parent (the socket it
/// inherited), memory, time, threads' futexes, signals (the guard's own handling of a crash
/// needs them), and nothing that reaches outside the process: no `open`, `socket`, `connect`,
/// `execve`, `fork`/`clone`, `kill` of another process, `ptrace`.
pub const ALLOWED: &[(&str, libc::c_long)] = &[
    // Descriptors it already has: the channel to the parent, stdio, the module's own file.
    ("read", libc::SYS_read),
    ("write", libc::SYS_write),
    ("readv", libc::SYS_readv),
    ("writev", libc::SYS_writev),
    ("pread64", libc::SYS_pread64),
    ("recvmsg", libc::SYS_recvmsg),
    ("sendmsg", libc::SYS_sendmsg),
    ("recvfrom", libc::SYS_recvfrom),
    ("sendto", libc::SYS_sendto),
    ("ppoll", libc::SYS_ppoll),
    ("close", libc::SYS_close),
    ("fstat", libc::SYS_fstat),
    ("newfstatat", libc::SYS_newfstatat),
    ("statx", libc::SYS_statx),
    ("lseek", libc::SYS_lseek),
    ("fcntl", libc::SYS_fcntl),
    // Memory.
    ("mmap", libc::SYS_mmap),
    ("munmap", libc::SYS_munmap),
    ("mprotect", libc::SYS_mprotect),
    ("brk", libc::SYS_brk),
    ("madvise", libc::SYS_madvise),
    ("mremap", libc::SYS_mremap),
    // Threads already running, time.
    ("futex", libc::SYS_futex),
    ("sched_yield", libc::SYS_sched_yield),
    ("rt_sigsuspend", libc::SYS_rt_sigsuspend),
    ("clock_gettime", libc::SYS_clock_gettime),
    ("clock_getres", libc::SYS_clock_getres),
    ("gettimeofday", libc::SYS_gettimeofday),
    ("nanosleep", libc::SYS_nanosleep),
    ("clock_nanosleep", libc::SYS_clock_nanosleep),
    ("getrandom", libc::SYS_getrandom),
    // Signals: the guard's handler, `abort()`, its stack copy of a crashed thread.
    ("rt_sigreturn", libc::SYS_rt_sigreturn),
    ("rt_sigprocmask", libc::SYS_rt_sigprocmask),
    ("rt_sigaction", libc::SYS_rt_sigaction),
    ("sigaltstack", libc::SYS_sigaltstack),
    ("getpid", libc::SYS_getpid),
    ("gettid", libc::SYS_gettid),
    ("tgkill", libc::SYS_tgkill),
    ("process_vm_readv", libc::SYS_process_vm_readv),
    // The end.
    ("exit", libc::SYS_exit),
    ("exit_group", libc::SYS_exit_group),
    // x86_64's older forms, which its C library still uses.
    #[cfg(target_arch = "x86_64")]
    ("poll", libc::SYS_poll),
    #[cfg(target_arch = "x86_64")]
    ("pause", libc::SYS_pause),
    #[cfg(target_arch = "x86_64")]
    ("arch_prctl", libc::SYS_arch_prctl),
];

/// The target, for the filter's architecture check.
fn arch() -> Result<TargetArch, String> {
    if cfg!(target_arch = "x86_64") {
        Ok(TargetArch::x86_64)
    } else if cfg!(target_arch = "aarch64") {
        Ok(TargetArch::aarch64)
    } else {
        Err(format!(
            "the seccomp allow-list is built for x86_64 and aarch64, not {}",
            std::env::consts::ARCH
        ))
    }
}

/// The allow-list compiled to BPF: `ALLOWED` allowed, anything else `SIGSYS`.
pub fn program() -> Result<BpfProgram, String> {
    // `c_long` is `i64` on the targets the filter is built for, not on every target.
    #[allow(clippy::unnecessary_cast)]
    let rules: BTreeMap<i64, Vec<seccompiler::SeccompRule>> =
        ALLOWED.iter().map(|&(_, nr)| (nr as i64, Vec::new())).collect();
    let filter = SeccompFilter::new(rules, SeccompAction::Trap, SeccompAction::Allow, arch()?)
        .map_err(|e| format!("build the seccomp filter: {e}"))?;
    BpfProgram::try_from(filter).map_err(|e| format!("compile the seccomp filter: {e}"))
}

/// Install the allow-list on every thread of this process (`SECCOMP_FILTER_FLAG_TSYNC`).
/// `PR_SET_NO_NEW_PRIVS` must already be set (`harden::confine` does).
/// The crash reporter reads what it needs from files first (`backtrace::read_files_now`): a
/// crash after this point is still reported with a named backtrace.
pub fn install() -> Result<(), String> {
    let prog = program()?;
    crate::backtrace::read_files_now();
    seccompiler::apply_filter_all_threads(&prog)
        .map_err(|e| format!("install the seccomp filter: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_allow_list_compiles_for_this_target() {
        let prog = program().expect("compile");
        assert!(prog.len() > ALLOWED.len(), "one jump per system call at least");
    }

    #[test]
    fn the_allow_list_has_no_way_out_of_the_process() {
        for forbidden in [libc::SYS_openat, libc::SYS_socket, libc::SYS_execve, libc::SYS_clone] {
            assert!(ALLOWED.iter().all(|&(_, nr)| nr != forbidden), "{forbidden} is not allowed");
        }
    }
}
