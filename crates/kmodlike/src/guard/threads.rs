//! Is any other thread executing in, or about to return into, a module's code?
//!
//! The unload path asks this before `dlclose`: unmapping code under a running thread kills the
//! host (issue 10, item 10). [`threads_in_code`] looks at every thread of the process except
//! the caller and reports those whose PC lies in the module's executable segments, or whose
//! stack holds a word that does, and those it could not tell about.
//!
//! # How a thread's PC and SP are found
//!
//! - **Blocked threads: `/proc/self/task/<tid>/syscall`.** For a thread stopped in the kernel
//!   (sleeping in `nanosleep`, `read`, `futex`, `pause`, ...) the kernel prints the system call
//!   number, its arguments, and the user stack pointer and PC: `nr a1..a6 sp pc` (or `-1 sp pc`
//!   when it is blocked outside a system call). Reading it does not disturb the thread at all:
//!   no signal, so no `EINTR` in a `nanosleep` or `read` that the module may not handle. The PC
//!   is then in libc (the system call wrapper); the module is found on the stack.
//! - **Running threads: a sampling signal.** For a thread on a CPU or runnable the file says
//!   `running` (the kernel only shows registers of a task it can hold still). Those threads are
//!   sent the sampling signal ([`sample_signal`], `SIGRTMAX - 3`) with `rt_tgsigqueueinfo`,
//!   all at once; the handler (`kml_sample_handler` in `guard.c`, async-signal-safe: atomics,
//!   `getpid` and a futex wake) copies the interrupted PC and SP from its `ucontext` into a
//!   per-request slot and wakes the requester, which waits on a futex with a bounded timeout
//!   ([`SAMPLE_TIMEOUT`]). A running thread interrupted there has no system call to disturb
//!   (it may have just entered one: the handler is `SA_RESTART`). A thread that blocks the
//!   signal never answers: after the timeout it is reported as [`Evidence::Unknown`], never
//!   waited on again (a late handler finds its request closed and does nothing).
//!
//! # Why this signal
//!
//! glibc keeps the first real-time signals (kernel 32 and 33, plus 34 on some versions) for
//! thread cancellation and `setxid`, and `SIGRTMIN`/`SIGRTMIN+1` are what applications and
//! POSIX timers reach for first; valgrind takes `SIGRTMAX` for itself. A real-time signal also
//! queues (one per request, never merged with an earlier one) and carries the request's token.
//! So kmodlike takes `SIGRTMAX - 3` (61 on Linux), installed the first time
//! [`threads_in_code`] samples a thread, never before. **The host must not use it.** A handler
//! the host had installed earlier is chained to for every signal that is not a sampling
//! request; a handler it installs later replaces ours, and running threads are then reported
//! as unknown (the safe answer), while the host's handler sees our requests.
//!
//! # How the stack is read
//!
//! From the thread's SP up to the end of the mapping that holds it (from `/proc/self/maps`),
//! at most [`STACK_SCAN_BYTES`], with one `process_vm_readv` on our own pid split into
//! page-sized pieces: it copies what is mapped and stops at the first page that is not, instead
//! of faulting (the other thread may unmap or grow its stack meanwhile). `/proc/self/mem` is
//! the fallback where `process_vm_readv` is refused (seccomp). Every 8-byte word that lies in
//! a range counts: one just after a call instruction as a return address
//! ([`Evidence::ReturnAddress`]), any other as a code pointer ([`Evidence::CodePointer`]:
//! possibly a stale slot or a function pointer in a local, but also the interrupted PC saved
//! in a signal frame, so it is not ignored). A stale word costs a mapping kept for nothing
//! and a warning that names the thread; a missed word costs the host.
//!
//! # What it cannot see
//!
//! The answer is a snapshot: a thread that is not in the code now may call into it later
//! through a pointer it holds. A thread on its alternate signal stack is scanned from there
//! only. Threads the guard parked after a crash on a module thread are left out: they never
//! run again. The calling thread is left out.
//!
//! # Cost
//!
//! One `/proc/self/task` listing, two small `/proc` reads per thread, one `/proc/self/maps`
//! read, one `process_vm_readv` per thread (up to 256 KiB), and for running threads one signal
//! each, sampled together. Measured by `threads_in_code_cost_with_ten_threads` (debug build,
//! shared 2-core machine): 12 threads in the process, 5 blocked in the module, 2 spinning in
//! it, 4 elsewhere: about 1 to 1.5 ms per call (2 ms with other tests running alongside). A
//! running thread that blocks the signal adds [`SAMPLE_TIMEOUT`] (200 ms) once per call, not
//! per thread (all running threads are sampled at once, up to 64 per batch).
//!
//! Words are compared with the ranges as they are: module text lies at mmap addresses, where
//! small integers never fall. (A range at a low address would make every stack holding, say,
//! 4096 "point into" it.)

use std::ffi::c_int;
use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use super::ffi;

/// How far above the stack pointer a stack is scanned.
pub(crate) const STACK_SCAN_BYTES: u64 = 256 * 1024;

/// How long running threads are given to answer the sampling signal.
pub(crate) const SAMPLE_TIMEOUT: Duration = Duration::from_millis(200);

/// The signal used to sample running threads: `SIGRTMAX - 3` (see the module doc).
pub(crate) fn sample_signal() -> c_int {
    libc::SIGRTMAX() - 3
}

/// Why a thread is reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Evidence {
    /// Its PC is in a range: it is executing the code.
    Pc,
    /// A word on its stack, at address `at`, is `addr`: in a range, just after a call
    /// instruction. The thread will return into the code.
    ReturnAddress { addr: u64, at: u64 },
    /// A word on its stack, at `at`, is `addr`: in a range but not after a call (a code
    /// pointer, a stale slot, or a PC saved in a signal frame). Kept for safety.
    CodePointer { addr: u64, at: u64 },
    /// Could not tell (the thread did not answer the sampling signal, or its registers or
    /// stack could not be read): the caller must assume it is in the code.
    Unknown(String),
}

/// Where a thread's PC and SP came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RegsFrom {
    /// `/proc/self/task/<tid>/syscall`: the thread was blocked in the kernel.
    Syscall,
    /// The sampling signal: the thread was running.
    Signal,
    /// Neither (only with [`Evidence::Unknown`]).
    Nowhere,
}

/// A thread that is, or may be, in the code.
#[derive(Debug, Clone)]
pub(crate) struct ThreadInCode {
    /// Its thread id.
    pub tid: i32,
    /// Its name (`/proc/self/task/<tid>/comm`), or empty.
    pub name: String,
    /// Its PC when looked at (0 when unknown).
    pub pc: u64,
    /// Its SP when looked at (0 when unknown).
    pub sp: u64,
    /// Why it is reported.
    pub evidence: Evidence,
    /// Where `pc` and `sp` came from.
    pub regs_from: RegsFrom,
}

impl ThreadInCode {
    #[cfg(test)]
    /// Whether it is known to be in the code (as opposed to: could not tell).
    pub(crate) fn is_certain(&self) -> bool {
        !matches!(self.evidence, Evidence::Unknown(_))
    }
}

impl fmt::Display for ThreadInCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "thread {} ({:?})", self.tid, self.name)?;
        match &self.evidence {
            Evidence::Pc => write!(f, " is executing the module's code")?,
            Evidence::ReturnAddress { addr, at } => write!(
                f,
                " will return into the module's code (return address {addr:#x} on its stack at \
                 {at:#x})"
            )?,
            Evidence::CodePointer { addr, at } => write!(
                f,
                " may be in the module's code (address {addr:#x} on its stack at {at:#x})"
            )?,
            Evidence::Unknown(why) => return write!(f, " could not be checked: {why}"),
        }
        let from = match self.regs_from {
            RegsFrom::Syscall => "blocked in the kernel",
            RegsFrom::Signal => "running, sampled",
            RegsFrom::Nowhere => "",
        };
        write!(f, " [pc {:#x}, sp {:#x}, {from}]", self.pc, self.sp)
    }
}

/// Every thread of the process other than the caller that is executing in, will return into,
/// or may be in the code `ranges` (`[start, end)` pairs: a module's executable segments); and
/// those that could not be checked ([`Evidence::Unknown`]). An empty result means: certainly
/// no other thread is in the code right now.
///
/// Cost: see the module doc. Takes at most about [`SAMPLE_TIMEOUT`] more than the reads when a
/// running thread blocks the sampling signal. Calls are serialised.
pub(crate) fn threads_in_code(ranges: &[(u64, u64)]) -> Vec<ThreadInCode> {
    let ranges: Vec<(u64, u64)> = ranges.iter().copied().filter(|&(s, e)| s < e).collect();
    let _busy = ScanLock::acquire();
    // SAFETY: gettid has no preconditions.
    let me = unsafe { libc::gettid() };
    let tids = match list_tasks() {
        Ok(t) => t,
        Err(e) => {
            return vec![unknown(0, String::new(), format!("cannot list /proc/self/task: {e}"))]
        }
    };
    let maps = Maps::read();
    let reader = StackReader::new();
    let mut out = Vec::new();
    let mut running: Vec<(i32, String)> = Vec::new();
    for tid in tids {
        if tid == me || super::deadline::is_watchdog_thread(tid) || is_parked(tid) {
            continue;
        }
        let name = comm(tid);
        match syscall_regs(tid) {
            Regs::Gone => {}
            Regs::Running => running.push((tid, name)),
            Regs::At { sp, pc } => {
                if let Some(t) =
                    check(&ranges, &maps, &reader, tid, name, pc, sp, RegsFrom::Syscall)
                {
                    out.push(t);
                }
            }
            // Sampling can still tell (and says "unknown" when it cannot).
            Regs::Unreadable => running.push((tid, name)),
        }
    }
    for chunk in running.chunks(ffi::SAMPLE_SLOTS) {
        sample_and_check(&ranges, &maps, &reader, chunk, &mut out);
    }
    out
}

fn unknown(tid: i32, name: String, why: String) -> ThreadInCode {
    ThreadInCode {
        tid,
        name,
        pc: 0,
        sp: 0,
        evidence: Evidence::Unknown(why),
        regs_from: RegsFrom::Nowhere,
    }
}

fn in_ranges(ranges: &[(u64, u64)], w: u64) -> bool {
    ranges.iter().any(|&(s, e)| w >= s && w < e)
}

/// Sample the running threads of `chunk` (at most `SAMPLE_SLOTS`) and check each.
fn sample_and_check(
    ranges: &[(u64, u64)],
    maps: &Maps,
    reader: &StackReader,
    chunk: &[(i32, String)],
    out: &mut Vec<ThreadInCode>,
) {
    let names: Vec<String> = chunk.iter().map(|(_, n)| n.clone()).collect();
    if let Err(why) = install_sampler() {
        for ((tid, _), name) in chunk.iter().zip(names) {
            out.push(unknown(*tid, name, format!("it is running and cannot be sampled: {why}")));
        }
        return;
    }
    let tids: Vec<i32> = chunk.iter().map(|(t, _)| *t).collect();
    let n = tids.len();
    let mut pcs = vec![0u64; n];
    let mut sps = vec![0u64; n];
    let mut status = vec![0i32; n];
    let timeout_ms = SAMPLE_TIMEOUT.as_millis() as c_int;
    // SAFETY: the four arrays hold `n` (<= SAMPLE_SLOTS) elements each; calls are serialised
    // by the scan lock the caller holds; the handler is installed.
    let rc = unsafe {
        ffi::kml_sample_threads(
            tids.as_ptr(),
            n as u32,
            timeout_ms,
            pcs.as_mut_ptr(),
            sps.as_mut_ptr(),
            status.as_mut_ptr(),
        )
    };
    for (i, name) in names.into_iter().enumerate() {
        let tid = tids[i];
        if rc != 0 {
            out.push(unknown(tid, name, "it is running and the sampler is not installed".into()));
            continue;
        }
        match status[i] {
            ffi::SAMPLE_OK => {
                if let Some(t) =
                    check(ranges, maps, reader, tid, name, pcs[i], sps[i], RegsFrom::Signal)
                {
                    out.push(t);
                }
            }
            ffi::SAMPLE_GONE => {}
            ffi::SAMPLE_NO_ANSWER => {
                // It may have blocked in the kernel meanwhile: one more look.
                if let Regs::At { sp, pc } = syscall_regs(tid) {
                    if let Some(t) =
                        check(ranges, maps, reader, tid, name, pc, sp, RegsFrom::Syscall)
                    {
                        out.push(t);
                    }
                    continue;
                }
                let why = format!(
                    "it is running and did not answer the sampling signal {} within {:?} \
                     (blocked?)",
                    sample_signal(),
                    SAMPLE_TIMEOUT
                );
                out.push(unknown(tid, name, why));
            }
            _ => out.push(unknown(tid, name, "it is running and could not be signalled".into())),
        }
    }
}

/// Check one thread whose PC and SP are known.
#[allow(clippy::too_many_arguments)]
fn check(
    ranges: &[(u64, u64)],
    maps: &Maps,
    reader: &StackReader,
    tid: i32,
    name: String,
    pc: u64,
    sp: u64,
    regs_from: RegsFrom,
) -> Option<ThreadInCode> {
    let found =
        |evidence| Some(ThreadInCode { tid, name: name.clone(), pc, sp, evidence, regs_from });
    if in_ranges(ranges, pc) {
        return found(Evidence::Pc);
    }
    let sp = sp & !7;
    let end = match maps.end_of(sp) {
        Some(e) => e.min(sp.saturating_add(STACK_SCAN_BYTES)),
        None => sp.saturating_add(STACK_SCAN_BYTES),
    };
    let words = match reader.read(sp, end) {
        Ok(w) => w,
        Err(e) => {
            return found(Evidence::Unknown(format!("cannot read its stack at {sp:#x}: {e}")))
        }
    };
    let mut pointer = None;
    for (i, &w) in words.iter().enumerate() {
        if !in_ranges(ranges, w) {
            continue;
        }
        let at = sp + 8 * i as u64;
        // SAFETY: reads code bytes with process_vm_readv; no preconditions.
        if unsafe { ffi::kml_looks_like_return(w) } != 0 {
            return found(Evidence::ReturnAddress { addr: w, at });
        }
        pointer.get_or_insert(Evidence::CodePointer { addr: w, at });
    }
    pointer.and_then(found)
}

// ----- /proc ----------------------------------------------------------------------------------

fn list_tasks() -> std::io::Result<Vec<i32>> {
    let mut tids = Vec::new();
    for e in std::fs::read_dir("/proc/self/task")? {
        if let Some(tid) = e?.file_name().to_str().and_then(|s| s.parse().ok()) {
            tids.push(tid);
        }
    }
    Ok(tids)
}

fn comm(tid: i32) -> String {
    std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
        .map(|s| s.trim_end_matches('\n').to_owned())
        .unwrap_or_default()
}

enum Regs {
    At {
        sp: u64,
        pc: u64,
    },
    Running,
    Gone,
    /// The file could not be read (not "no such thread").
    Unreadable,
}

fn syscall_regs(tid: i32) -> Regs {
    match std::fs::read_to_string(format!("/proc/self/task/{tid}/syscall")) {
        Ok(s) => parse_syscall(&s),
        Err(e)
            if e.raw_os_error() == Some(libc::ENOENT) || e.raw_os_error() == Some(libc::ESRCH) =>
        {
            Regs::Gone
        }
        Err(_) => Regs::Unreadable,
    }
}

/// `running`, `nr a1 a2 a3 a4 a5 a6 sp pc` or `-1 sp pc` (`proc_pid_syscall` in the kernel).
fn parse_syscall(s: &str) -> Regs {
    let fields: Vec<&str> = s.split_whitespace().collect();
    if fields.first() == Some(&"running") {
        return Regs::Running;
    }
    let hex = |f: &str| u64::from_str_radix(f.trim_start_matches("0x"), 16).ok();
    match fields.len() {
        3 | 9 => match (hex(fields[fields.len() - 2]), hex(fields[fields.len() - 1])) {
            (Some(sp), Some(pc)) => Regs::At { sp, pc },
            _ => Regs::Unreadable,
        },
        _ => Regs::Unreadable,
    }
}

fn is_parked(tid: i32) -> bool {
    // SAFETY: reads atomics.
    unsafe { ffi::kml_is_parked(tid) != 0 }
}

/// The mappings of the process, sorted by start.
struct Maps(Vec<(u64, u64)>);

impl Maps {
    fn read() -> Maps {
        let text = std::fs::read_to_string("/proc/self/maps").unwrap_or_default();
        let mut v: Vec<(u64, u64)> = text
            .lines()
            .filter_map(|l| {
                let range = l.split_whitespace().next()?;
                let (s, e) = range.split_once('-')?;
                Some((u64::from_str_radix(s, 16).ok()?, u64::from_str_radix(e, 16).ok()?))
            })
            .collect();
        v.sort_unstable();
        Maps(v)
    }

    /// The end of the mapping holding `addr`.
    fn end_of(&self, addr: u64) -> Option<u64> {
        let i = self.0.partition_point(|&(s, _)| s <= addr);
        let &(s, e) = self.0.get(i.checked_sub(1)?)?;
        (addr >= s && addr < e).then_some(e)
    }
}

/// Reads memory that another thread may unmap at any time, without faulting.
struct StackReader {
    /// `/proc/self/mem`, opened when `process_vm_readv` is refused.
    mem: std::sync::OnceLock<Option<std::fs::File>>,
    use_mem: AtomicBool,
}

impl StackReader {
    fn new() -> StackReader {
        StackReader { mem: std::sync::OnceLock::new(), use_mem: AtomicBool::new(false) }
    }

    /// The 8-byte words from `start` (8-aligned) up to `end`, or fewer when a page is not
    /// mapped. Err only when nothing could be read at all and the reason is not "unmapped".
    fn read(&self, start: u64, end: u64) -> std::io::Result<Vec<u64>> {
        if end <= start {
            return Ok(Vec::new());
        }
        let len = (end - start) as usize & !7;
        let mut buf = vec![0u64; len / 8];
        let got = if self.use_mem.load(Ordering::Relaxed) {
            self.read_mem(start, &mut buf)?
        } else {
            match read_vm(start, &mut buf) {
                Ok(n) => n,
                Err(e) if matches!(e.raw_os_error(), Some(libc::EPERM | libc::ENOSYS)) => {
                    self.use_mem.store(true, Ordering::Relaxed);
                    self.read_mem(start, &mut buf)?
                }
                Err(e) if e.raw_os_error() == Some(libc::EFAULT) => 0,
                Err(e) => return Err(e),
            }
        };
        buf.truncate(got / 8);
        Ok(buf)
    }

    fn read_mem(&self, start: u64, buf: &mut [u64]) -> std::io::Result<usize> {
        use std::os::unix::fs::FileExt;
        let file = self.mem.get_or_init(|| std::fs::File::open("/proc/self/mem").ok());
        let Some(file) = file else {
            return Err(std::io::Error::other("neither process_vm_readv nor /proc/self/mem"));
        };
        // SAFETY: reinterpreting a u64 buffer as bytes: any byte pattern is a valid u64.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(buf.as_mut_ptr().cast::<u8>(), buf.len() * 8) };
        let page = super::page_size();
        let mut done = 0;
        while done < bytes.len() {
            let at = start + done as u64;
            let want = (page - (at as usize % page)).min(bytes.len() - done);
            match file.read_at(&mut bytes[done..done + want], at) {
                Ok(n) if n > 0 => done += n,
                _ => break,
            }
        }
        Ok(done)
    }
}

/// `process_vm_readv` on our own pid into `buf`, one remote piece per page, so a page that is
/// not mapped ends the copy there (partial transfers happen at piece granularity).
fn read_vm(start: u64, buf: &mut [u64]) -> std::io::Result<usize> {
    let page = super::page_size() as u64;
    let total = buf.len() as u64 * 8;
    let mut remote = Vec::new();
    let mut at = start;
    while at < start + total {
        let next = ((at / page) + 1) * page;
        let len = next.min(start + total) - at;
        remote.push(libc::iovec { iov_base: at as *mut libc::c_void, iov_len: len as usize });
        at += len;
    }
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: total as usize };
    let mut copied = 0usize;
    // At most IOV_MAX (1024) remote pieces per call.
    for pieces in remote.chunks(1024) {
        let want: usize = pieces.iter().map(|p| p.iov_len).sum();
        let local_here = libc::iovec {
            // SAFETY: `copied` <= `total`: stays inside `buf`.
            iov_base: unsafe { local.iov_base.cast::<u8>().add(copied) }.cast(),
            iov_len: want,
        };
        // SAFETY: the local buffer is writable for `want` bytes; the remote pieces are read by
        // the kernel, which fails cleanly on unmapped addresses.
        let n = unsafe {
            libc::process_vm_readv(
                libc::getpid(),
                &local_here,
                1,
                pieces.as_ptr(),
                pieces.len() as libc::c_ulong,
                0,
            )
        };
        if n < 0 {
            if copied > 0 {
                return Ok(copied);
            }
            return Err(std::io::Error::last_os_error());
        }
        copied += n as usize;
        if (n as usize) < want {
            break;
        }
    }
    Ok(copied)
}

// ----- the sampler and the scan lock -----------------------------------------------------------

/// Install the sampling handler, once. Err with the reason when that failed.
fn install_sampler() -> Result<(), String> {
    static RESULT: std::sync::OnceLock<c_int> = std::sync::OnceLock::new();
    // SAFETY: installs a handler for our signal that only touches the shim's own state.
    let rc = *RESULT.get_or_init(|| unsafe { ffi::kml_sample_install(sample_signal()) });
    if rc == 0 {
        Ok(())
    } else {
        Err(format!(
            "cannot install the sampling handler for signal {}: {}",
            sample_signal(),
            std::io::Error::from_raw_os_error(rc)
        ))
    }
}

/// One scan at a time (the shim's sampling slots are shared). An atomic rather than a mutex so
/// a fork child can reset it: a scan running on another thread of the parent at fork time
/// does not exist in the child.
static SCAN_BUSY: AtomicBool = AtomicBool::new(false);

struct ScanLock;

impl ScanLock {
    fn acquire() -> ScanLock {
        while SCAN_BUSY
            .compare_exchange_weak(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_err()
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        ScanLock
    }
}

impl Drop for ScanLock {
    fn drop(&mut self) {
        SCAN_BUSY.store(false, Ordering::Release);
    }
}

/// The fork child handler's part: an atomic store (async-signal-safe).
pub(super) fn after_fork_child() {
    SCAN_BUSY.store(false, Ordering::Release);
}

#[cfg(test)]
pub(super) fn parse_syscall_for_test(s: &str) -> Option<(u64, u64)> {
    match parse_syscall(s) {
        Regs::At { sp, pc } => Some((sp, pc)),
        Regs::Running => Some((0, 0)),
        _ => None,
    }
}

/// One sample of a running thread: its PC and SP (taken by the sampling signal's handler, the
/// thread running on), and what its stack held from SP up right after (at most 64 KiB).
#[derive(Debug)]
pub(crate) struct ThreadSample {
    pub pc: u64,
    pub sp: u64,
    pub stack: Vec<u8>,
}

/// Sample thread `tid` of this process without stopping it (the soft deadline's stack sample).
/// `None` when it did not answer within the sampling timeout or is gone.
///
/// A thread blocked in the kernel is read from `/proc/self/task/TID/syscall` and never
/// signalled: a signal would end a `sleep()` or `nanosleep()` early (they are not restarted
/// even under `SA_RESTART`), changing what the module sees.
pub(crate) fn sample_thread(tid: i32, wait: Duration) -> Option<ThreadSample> {
    match syscall_regs(tid) {
        Regs::At { sp, pc } => return Some(ThreadSample { pc, sp, stack: read_stack(sp) }),
        Regs::Gone => return None,
        Regs::Running | Regs::Unreadable => {}
    }
    install_sampler().ok()?;
    let _one = ScanLock::acquire();
    let (mut pc, mut sp, mut status) = (0u64, 0u64, 0i32);
    // SAFETY: one element in each array; serialised by the scan lock; the handler is installed.
    let rc = unsafe {
        ffi::kml_sample_threads(&tid, 1, wait.as_millis() as c_int, &mut pc, &mut sp, &mut status)
    };
    if rc != 0 {
        return None;
    }
    if status != ffi::SAMPLE_OK {
        // Blocked in the kernel: its registers are in /proc.
        match syscall_regs(tid) {
            Regs::At { sp: s, pc: p } => {
                sp = s;
                pc = p;
            }
            _ => return None,
        }
    }
    Some(ThreadSample { pc, sp, stack: read_stack(sp) })
}

/// Up to 64 KiB of this process's memory from `sp` (a thread's stack, read as it runs).
fn read_stack(sp: u64) -> Vec<u8> {
    let mut words = vec![0u64; 8192];
    let bytes = read_vm(sp, &mut words).unwrap_or(0);
    let mut stack: Vec<u8> = words.iter().flat_map(|w| w.to_ne_bytes()).collect();
    stack.truncate(bytes);
    stack
}
