/*
 * guard.c: the signal-level half of kmodlike's crash guard.
 *
 * This file is the only code in kmodlike that runs inside a signal handler. It holds:
 *
 *   - the jump point: kml_guard_call() runs a module function with a sigsetjmp() in its own
 *     frame; the handler siglongjmp()s back to it when the function raises a fatal signal;
 *   - the handler for SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT and SIGSYS, and the table of the
 *     handlers it replaced (it chains to them for every signal that is not ours);
 *   - the table of module text ranges, readable from the handler with atomics only, used to
 *     attribute faults on threads that have no guard (threads a module started);
 *   - the parking of such threads and the pipe that wakes the Rust service thread;
 *   - the host-callback trampolines (log, get_time) that suspend the guard while host code
 *     runs, so that a fault in host code stays fatal;
 *   - the sampling handler that reads another thread's PC and SP for threads.rs (unload-time
 *     check that no thread runs in a module's code), and the fork-child reset of the shim.
 *
 * Why C: sigsetjmp() "returns twice", which Rust cannot express. The frame that calls it must
 * stay live until the jump, and the jump skips every frame between this shim and the fault.
 * With the shim in C the skipped frames are the module's (plus whatever libc frames it was in);
 * the Rust caller's frame is below the jump point and is never skipped.
 *
 * Rules for everything reachable from kml_handler():
 *   - only async-signal-safe functions (signal-safety(7)) and raw system calls;
 *   - no malloc, no locks, no stdio, no dladdr/backtrace, no Rust code;
 *   - shared state is read through C11 atomics or is written once before the handler is
 *     installed; per-thread state lives in an initial-exec TLS pointer (a plain
 *     %fs-relative load: no __tls_get_addr call, which may allocate);
 *   - errno is saved and restored on every path that returns.
 * Each step below says why it is safe.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stddef.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

/* ------------------------------------------------------------------------------------------ */
/* Shared layout with mod.rs (struct CRawCrash there must match field for field).              */
/* ------------------------------------------------------------------------------------------ */

#define KML_STACK_WORDS 32

/* What the handler records about one fatal signal: raw numbers only. */
struct kml_raw_crash {
    int32_t signo;
    int32_t code;
    uint64_t addr;
    uint64_t pc;
    uint64_t sp;
    uint64_t module_id;
    int64_t time_sec;
    int64_t time_nsec;
    int32_t tid;
    int32_t on_module_thread;
    uint32_t n_stack_words;
    uint32_t reserved;
    uint64_t stack_words[KML_STACK_WORDS];
};

size_t kml_raw_crash_size(void) { return sizeof(struct kml_raw_crash); }

/* ------------------------------------------------------------------------------------------ */
/* Per-thread guard records.                                                                   */
/* ------------------------------------------------------------------------------------------ */

/*
 * One record per active guard (or per suspension, see the trampolines), on the stack of the
 * function that pushed it, linked innermost first from kml_current. Only the owning thread
 * ever reads or writes a record, so plain fields are enough; the signal fences below keep the
 * compiler from moving stores to kml_current across the calls they protect.
 */
struct kml_guard {
    sigjmp_buf env;
    struct kml_guard *prev;
    uint64_t module_id;
    int suspended; /* a host callback is running: faults are the host's, not the module's */
    struct kml_raw_crash crash;
};

/*
 * initial-exec: the handler reads this with one %fs-relative load. The default (global-dynamic)
 * model in a shared object goes through __tls_get_addr, which may call malloc on first use of a
 * module's TLS block: not async-signal-safe. When kmodlike is itself inside a dlopen()ed shared
 * object, glibc serves this one pointer from its static TLS surplus.
 */
static __thread struct kml_guard *kml_current __attribute__((tls_model("initial-exec")));

/*
 * Set once this thread has entered a guard: it is a host thread that calls into modules, not a
 * thread a module started. Its stack is full of stale return addresses into modules (left by
 * earlier guarded calls in slots that later frames reserved but never wrote), so a raised
 * signal on it outside a guard is never attributed to a module by scanning the stack.
 */
static __thread int kml_thread_entered_guard __attribute__((tls_model("initial-exec")));

/* ------------------------------------------------------------------------------------------ */
/* Process-wide state, written before the handler is installed or published through atomics.  */
/* ------------------------------------------------------------------------------------------ */

static const int kml_signals[6] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGSYS};
#define KML_NSIGNALS 6

/* The handlers we replaced. Written by kml_install() before our handler is installed for that
 * signal, never written again: the handler may read them without synchronisation. */
static struct sigaction kml_prev[KML_NSIGNALS];
/* The six signals, to unblock them before the jump. Written once in kml_install(). */
static sigset_t kml_fatal_set;
/* Write end of the pipe that wakes the service thread (non-blocking), or -1. */
static atomic_int kml_pipe_fd = -1;
/* Its read end (the service thread's), or -1: kept so a fork child can close its copy. */
static atomic_int kml_pipe_read_fd = -1;

/* --- module text ranges ------------------------------------------------------------------- */

/*
 * A fixed array so the handler never allocates: each slot is {key, start, end}, key = module
 * id + 1 (0 marks a free slot). Writers (register/unregister, normal context) serialise on
 * kml_table_lock; the handler reads without a lock, seqlock style: load the key (acquire),
 * load start/end, fence, reload the key; a changed key means the slot was rewritten under us
 * and is skipped. The high-water mark bounds the scan.
 */
#define KML_TEXT_SLOTS 8192
struct kml_text_slot {
    _Atomic uint64_t key;
    _Atomic uint64_t start;
    _Atomic uint64_t end;
};
static struct kml_text_slot kml_text[KML_TEXT_SLOTS];
static _Atomic uint32_t kml_text_hwm;
static pthread_mutex_t kml_table_lock = PTHREAD_MUTEX_INITIALIZER;

/* Async-signal-safe: atomic loads only. Returns id + 1 of the module whose text holds addr,
 * or 0. */
static uint64_t kml_text_key_at(uint64_t addr) {
    uint32_t n = atomic_load_explicit(&kml_text_hwm, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++) {
        struct kml_text_slot *s = &kml_text[i];
        uint64_t key = atomic_load_explicit(&s->key, memory_order_acquire);
        if (key == 0)
            continue;
        uint64_t start = atomic_load_explicit(&s->start, memory_order_relaxed);
        uint64_t end = atomic_load_explicit(&s->end, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->key, memory_order_relaxed) != key)
            continue;
        if (addr >= start && addr < end)
            return key;
    }
    return 0;
}

int kml_register_text(uint64_t module_id, uint64_t start, uint64_t end) {
    if (module_id == UINT64_MAX || start >= end)
        return -1;
    pthread_mutex_lock(&kml_table_lock);
    for (uint32_t i = 0; i < KML_TEXT_SLOTS; i++) {
        struct kml_text_slot *s = &kml_text[i];
        if (atomic_load_explicit(&s->key, memory_order_relaxed) != 0)
            continue;
        atomic_store_explicit(&s->start, start, memory_order_relaxed);
        atomic_store_explicit(&s->end, end, memory_order_relaxed);
        atomic_store_explicit(&s->key, module_id + 1, memory_order_release);
        if (atomic_load_explicit(&kml_text_hwm, memory_order_relaxed) < i + 1)
            atomic_store_explicit(&kml_text_hwm, i + 1, memory_order_release);
        pthread_mutex_unlock(&kml_table_lock);
        return 0;
    }
    pthread_mutex_unlock(&kml_table_lock);
    return -1;
}

void kml_unregister_module(uint64_t module_id) {
    pthread_mutex_lock(&kml_table_lock);
    uint32_t n = atomic_load_explicit(&kml_text_hwm, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++) {
        struct kml_text_slot *s = &kml_text[i];
        if (atomic_load_explicit(&s->key, memory_order_relaxed) != module_id + 1)
            continue;
        atomic_store_explicit(&s->key, 0, memory_order_relaxed);
        /* Order the key's clearing before the range's rewrite (a reader that saw the old key
         * and then a new range fails its key re-check). */
        atomic_thread_fence(memory_order_release);
        atomic_store_explicit(&s->start, 0, memory_order_relaxed);
        atomic_store_explicit(&s->end, 0, memory_order_relaxed);
    }
    pthread_mutex_unlock(&kml_table_lock);
}

/* Normal context only (not for the handler): the module whose text holds addr. */
int kml_module_at(uint64_t addr, uint64_t *module_id) {
    uint64_t key = kml_text_key_at(addr);
    if (key == 0)
        return 0;
    *module_id = key - 1;
    return 1;
}

/* --- executable segments of every loaded object --------------------------------------------- */

/*
 * Snapshot of the executable PT_LOAD segments of all loaded objects (libc, ld.so, the host,
 * ...), so the handler can tell which stack words look like return addresses. Refreshed in
 * normal context (dl_iterate_phdr is not async-signal-safe) at install and whenever a module
 * is registered; read by the handler under a sequence counter (odd while a refresh writes).
 */
#define KML_CODE_RANGES 1024
static _Atomic uint64_t kml_code_start[KML_CODE_RANGES];
static _Atomic uint64_t kml_code_end[KML_CODE_RANGES];
static _Atomic uint32_t kml_code_count;
static _Atomic uint32_t kml_code_seq;

static int kml_collect_code(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    uint32_t *n = data;
    for (int i = 0; i < info->dlpi_phnum && *n < KML_CODE_RANGES; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uint64_t start = (uint64_t)info->dlpi_addr + ph->p_vaddr;
        atomic_store_explicit(&kml_code_start[*n], start, memory_order_relaxed);
        atomic_store_explicit(&kml_code_end[*n], start + ph->p_memsz, memory_order_relaxed);
        (*n)++;
    }
    return 0;
}

/* dl_iterate_phdr's object counters: every entry carries the same dlpi_adds/dlpi_subs, so
 * reading the first entry and stopping is enough (O(1), whatever is loaded). */
static int kml_read_adds(struct dl_phdr_info *info, size_t size, void *data) {
    if (size >= offsetof(struct dl_phdr_info, dlpi_adds) + sizeof info->dlpi_adds)
        *(unsigned long long *)data = info->dlpi_adds;
    return 1;
}

/* dlpi_adds when the table was last brought up to date; under kml_table_lock. */
static unsigned long long kml_code_adds;

/* Rebuild the table from every loaded object. Caller holds kml_table_lock. */
static void kml_refresh_locked(void) {
    atomic_fetch_add_explicit(&kml_code_seq, 1, memory_order_relaxed); /* odd: writing */
    atomic_thread_fence(memory_order_release);
    uint32_t n = 0;
    dl_iterate_phdr(kml_collect_code, &n);
    atomic_store_explicit(&kml_code_count, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&kml_code_seq, 1, memory_order_release); /* even: stable */
    kml_code_adds = 0;
    dl_iterate_phdr(kml_read_adds, &kml_code_adds);
}

void kml_refresh_code_ranges(void) {
    pthread_mutex_lock(&kml_table_lock);
    kml_refresh_locked();
    pthread_mutex_unlock(&kml_table_lock);
}

/*
 * A module was loaded whose executable segments are `ranges` (n start/end pairs). When it is
 * the only object added since the table was last brought up to date (it needed no library that
 * was not already loaded), append its ranges: O(1). Otherwise, or when the table is full,
 * rebuild it from every loaded object: O(loaded objects). Ranges of objects unloaded since stay
 * until the next rebuild; the handler only uses the table to tell whether a stack word looks
 * like a return address, so a stale range costs at most a wasted dladdr after the jump.
 */
void kml_code_ranges_after_load(const uint64_t *ranges, uint32_t n) {
    pthread_mutex_lock(&kml_table_lock);
    unsigned long long adds = 0;
    dl_iterate_phdr(kml_read_adds, &adds);
    uint32_t count = atomic_load_explicit(&kml_code_count, memory_order_relaxed);
    if (kml_code_adds != 0 && adds == kml_code_adds + 1 && count + n <= KML_CODE_RANGES) {
        atomic_fetch_add_explicit(&kml_code_seq, 1, memory_order_relaxed); /* odd: writing */
        atomic_thread_fence(memory_order_release);
        for (uint32_t i = 0; i < n; i++) {
            atomic_store_explicit(&kml_code_start[count + i], ranges[2 * i], memory_order_relaxed);
            atomic_store_explicit(&kml_code_end[count + i], ranges[2 * i + 1],
                                  memory_order_relaxed);
        }
        atomic_store_explicit(&kml_code_count, count + n, memory_order_relaxed);
        atomic_fetch_add_explicit(&kml_code_seq, 1, memory_order_release); /* even: stable */
        kml_code_adds = adds;
    } else {
        kml_refresh_locked();
    }
    pthread_mutex_unlock(&kml_table_lock);
}

/* Async-signal-safe: atomic loads only. 1 if addr lies in a known executable segment, 0 if
 * not, -1 if a refresh kept racing with us (the caller treats that as "don't know"). */
static int kml_is_code(uint64_t addr) {
    for (int attempt = 0; attempt < 4; attempt++) {
        uint32_t seq = atomic_load_explicit(&kml_code_seq, memory_order_acquire);
        if (seq & 1)
            continue;
        uint32_t n = atomic_load_explicit(&kml_code_count, memory_order_relaxed);
        int found = 0;
        for (uint32_t i = 0; i < n && i < KML_CODE_RANGES; i++) {
            uint64_t s = atomic_load_explicit(&kml_code_start[i], memory_order_relaxed);
            uint64_t e = atomic_load_explicit(&kml_code_end[i], memory_order_relaxed);
            if (addr >= s && addr < e) {
                found = 1;
                break;
            }
        }
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&kml_code_seq, memory_order_relaxed) == seq)
            return found;
    }
    return -1;
}

/* --- crashes on threads without a guard ----------------------------------------------------- */

/*
 * Preallocated slots for crashes on module threads. The handler claims a slot with a CAS
 * (FREE -> WRITING), fills it, publishes it (READY, release) and writes the slot index to the
 * pipe; the service thread (Rust, normal context) copies it out and frees it.
 */
#define KML_THREAD_SLOTS 64
enum { KML_SLOT_FREE = 0, KML_SLOT_WRITING = 1, KML_SLOT_READY = 2 };
static struct {
    atomic_int state;
    struct kml_raw_crash crash;
} kml_thread_slots[KML_THREAD_SLOTS];
static atomic_uint kml_thread_crashes_dropped;
/* The byte written to the service pipe when a report found no free slot. */
#define KML_LOST_REPORT 0xFF
_Static_assert(KML_THREAD_SLOTS < KML_LOST_REPORT, "a slot index must never read as a lost report");

/*
 * Threads parked by kml_park(), by thread id (0: free entry), so the unload-time thread check
 * (threads.rs) can leave them out: a parked thread never runs again (every signal blocked, a
 * pause() loop), so unmapping the code its stack points into cannot hurt it. A parked thread
 * that finds no free entry is simply not recorded (and is then reported as in the code: the
 * safe side).
 */
static _Atomic int32_t kml_parked[KML_THREAD_SLOTS];

int kml_is_parked(int32_t tid) {
    if (tid == 0)
        return 0;
    for (int i = 0; i < KML_THREAD_SLOTS; i++)
        if (atomic_load_explicit(&kml_parked[i], memory_order_acquire) == tid)
            return 1;
    return 0;
}

/*
 * Publish a new service pipe (normal context). Crashes that were published while there was no
 * pipe (a fork child before its service thread was restarted) sit in READY slots with no byte
 * written for them: write one now. A byte is only a hint (kml_take_thread_crash checks the
 * slot's state), so a duplicate is harmless.
 */
void kml_set_crash_pipe(int read_fd, int write_fd) {
    atomic_store_explicit(&kml_pipe_read_fd, read_fd, memory_order_release);
    atomic_store_explicit(&kml_pipe_fd, write_fd, memory_order_release);
    for (int i = 0; i < KML_THREAD_SLOTS; i++) {
        if (atomic_load_explicit(&kml_thread_slots[i].state, memory_order_acquire) ==
            KML_SLOT_READY) {
            unsigned char byte = (unsigned char)i;
            ssize_t r = write(write_fd, &byte, 1);
            (void)r;
        }
    }
}

/* Service thread: copy slot `index` out and free it. 1 if it held a crash. */
int kml_take_thread_crash(uint32_t index, struct kml_raw_crash *out) {
    if (index >= KML_THREAD_SLOTS)
        return 0;
    if (atomic_load_explicit(&kml_thread_slots[index].state, memory_order_acquire) !=
        KML_SLOT_READY)
        return 0;
    memcpy(out, &kml_thread_slots[index].crash, sizeof *out);
    atomic_store_explicit(&kml_thread_slots[index].state, KML_SLOT_FREE, memory_order_release);
    return 1;
}

unsigned kml_thread_crashes_dropped_count(void) {
    return atomic_load_explicit(&kml_thread_crashes_dropped, memory_order_relaxed);
}

/* ------------------------------------------------------------------------------------------ */
/* The handler and its helpers. Everything from here to kml_handler() is async-signal-safe.   */
/* ------------------------------------------------------------------------------------------ */

static int kml_signal_index(int signo) {
    for (int i = 0; i < KML_NSIGNALS; i++)
        if (kml_signals[i] == signo)
            return i;
    return -1;
}

/*
 * Is this signal a consequence of what this thread was executing (as opposed to a signal sent
 * from elsewhere)? Hardware faults and seccomp traps carry a positive si_code (SEGV_MAPERR,
 * FPE_INTDIV, SYS_SECCOMP, ...); raise() and abort() send the signal to the calling thread with
 * tgkill(), which the kernel tags SI_TKILL with our own pid. A kill() from another process
 * (SI_USER) is never ours.
 */
static int kml_is_synchronous(int signo, const siginfo_t *si) {
    if (si->si_code > 0 && signo != SIGABRT)
        return 1;
    /* getpid(): async-signal-safe (a plain system call since glibc 2.25). */
    return si->si_code == SI_TKILL && si->si_pid == getpid();
}

static void kml_context_regs(const void *ucv, uint64_t *pc, uint64_t *sp) {
    const ucontext_t *uc = ucv;
#if defined(__x86_64__)
    *pc = (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
    *sp = (uint64_t)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
    *pc = (uint64_t)uc->uc_mcontext.pc;
    *sp = (uint64_t)uc->uc_mcontext.sp;
#else
#error "kmodlike's crash guard supports x86_64 and aarch64 Linux"
#endif
}

/*
 * Copy len bytes at addr into out with process_vm_readv() on our own pid: a system call that
 * copies what is mapped and stops (short count or EFAULT) at the first unmapped page instead of
 * faulting, so a wild address can never fault the handler. Returns the bytes copied.
 */
static ssize_t kml_read_memory(uint64_t addr, void *out, size_t len) {
    struct iovec local = {.iov_base = out, .iov_len = len};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)addr, .iov_len = len};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
}

/*
 * Does the instruction just before w look like a call, i.e. could w be a return address rather
 * than any other pointer into code (a function pointer in a local, a stale value)? Reads the
 * code bytes with kml_read_memory.
 */
static int kml_follows_call(uint64_t w) {
    unsigned char b[8];
    if (w < 8 || kml_read_memory(w - 8, b, sizeof b) != (ssize_t)sizeof b)
        return 0;
#if defined(__x86_64__)
    /* call rel32: E8 xx xx xx xx, ending at w. */
    if (b[3] == 0xE8)
        return 1;
    /* call r/m64: FF /2, 2 to 7 bytes long (register, [reg+disp8], [rip+disp32], SIB forms). */
    for (int k = 2; k <= 7; k++)
        if (b[8 - k] == 0xFF && ((b[8 - k + 1] >> 3) & 7) == 2)
            return 1;
    return 0;
#elif defined(__aarch64__)
    uint32_t insn = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 |
                    (uint32_t)b[7] << 24;
    return (insn & 0xFC000000u) == 0x94000000u    /* BL imm26 */
           || (insn & 0xFFFFFC1Fu) == 0xD63F0000u; /* BLR Xn */
#else
    return 1;
#endif
}

/*
 * Walk the stack from sp towards older frames (higher addresses), up to limit (when above sp)
 * and at most max_bytes, looking for return addresses: words that point into code just after a
 * call instruction. Stale values are everywhere on a stack (slots a frame reserved but never
 * wrote keep what earlier, deeper calls left there), so nothing here is proof; nearest first is
 * the best order of evidence.
 *
 *   - Return addresses outside every module (libc and friends) go to c->stack_words, nearest
 *     first, up to KML_STACK_WORDS: the loader looks for an abort raised from inside malloc.
 *   - The first return address into a module's text gives the returned module key (id + 1),
 *     or 0: it attributes an abort on a thread without a guard.
 *
 * The stack is read in chunks into a buffer on the handler's (alternate) stack.
 */
static uint64_t kml_scan_stack(uint64_t sp, uint64_t limit, size_t max_bytes,
                               struct kml_raw_crash *c) {
    uint64_t buf[128];
    uint64_t found = 0;
    sp &= ~(uint64_t)7;
    uint64_t end = sp + max_bytes;
    if (limit > sp && limit < end)
        end = limit;
    for (uint64_t at = sp; at < end;) {
        size_t want = sizeof buf;
        if (end - at < want)
            want = (size_t)(end - at);
        ssize_t got = kml_read_memory(at, buf, want);
        if (got <= 0)
            break;
        size_t words = (size_t)got / sizeof(uint64_t);
        for (size_t i = 0; i < words; i++) {
            uint64_t w = buf[i];
            uint64_t key = kml_text_key_at(w);
            if (key != 0) {
                if (found == 0 && kml_follows_call(w))
                    found = key;
                continue;
            }
            if (c->n_stack_words < KML_STACK_WORDS && kml_is_code(w) == 1 && kml_follows_call(w))
                c->stack_words[c->n_stack_words++] = w;
        }
        if (found != 0 && c->n_stack_words >= KML_STACK_WORDS)
            break;
        if ((size_t)got < want)
            break;
        at += (uint64_t)got;
    }
    return found;
}

/* Fill c with what the kernel told us. Async-signal-safe: plain stores into c, getpid(),
 * gettid (a raw system call), clock_gettime (listed in signal-safety(7)). */
static void kml_record(struct kml_raw_crash *c, int signo, const siginfo_t *si, const void *uc,
                       uint64_t module_id) {
    c->signo = signo;
    c->code = si->si_code;
    /* si_addr is meaningful only for kernel-generated faults; for SI_TKILL the same bytes hold
     * si_pid/si_uid. */
    c->addr = si->si_code > 0 ? (uint64_t)(uintptr_t)si->si_addr : 0;
    kml_context_regs(uc, &c->pc, &c->sp);
    c->module_id = module_id;
    c->tid = (int32_t)syscall(SYS_gettid);
    struct timespec ts = {0, 0};
    clock_gettime(CLOCK_REALTIME, &ts);
    c->time_sec = ts.tv_sec;
    c->time_nsec = ts.tv_nsec;
    c->on_module_thread = 0;
    c->n_stack_words = 0;
}

/*
 * A fault on a thread without a guard, attributed to a module: hand the crash to the service
 * thread and never return. The thread must not go back into module code (the fault would
 * repeat) and cannot be unwound (we do not know its frames), so it sleeps forever with every
 * signal blocked; its stack stays allocated. Async-signal-safe: atomics, write(2),
 * pthread_sigmask, sigfillset and pause are all listed in signal-safety(7).
 */
__attribute__((noreturn)) static void kml_park(const struct kml_raw_crash *c) {
    /* Record the thread as parked first (atomics only), for threads.rs. */
    for (int i = 0; i < KML_THREAD_SLOTS; i++) {
        int32_t expected = 0;
        if (atomic_compare_exchange_strong_explicit(&kml_parked[i], &expected, c->tid,
                                                    memory_order_release, memory_order_relaxed))
            break;
    }
    int slot = -1;
    for (int i = 0; i < KML_THREAD_SLOTS; i++) {
        int expected = KML_SLOT_FREE;
        if (atomic_compare_exchange_strong_explicit(&kml_thread_slots[i].state, &expected,
                                                    KML_SLOT_WRITING, memory_order_acquire,
                                                    memory_order_relaxed)) {
            slot = i;
            break;
        }
    }
    if (slot >= 0) {
        /* A struct copy: plain stores, or memcpy (async-signal-safe since POSIX.1-2016). */
        kml_thread_slots[slot].crash = *c;
        atomic_store_explicit(&kml_thread_slots[slot].state, KML_SLOT_READY, memory_order_release);
        int fd = atomic_load_explicit(&kml_pipe_fd, memory_order_acquire);
        unsigned char byte = (unsigned char)slot;
        if (fd >= 0) {
            /* Non-blocking pipe, 64 slots vs a 64 KiB pipe buffer: it cannot be full. */
            ssize_t r = write(fd, &byte, 1);
            (void)r;
        }
    } else {
        atomic_fetch_add_explicit(&kml_thread_crashes_dropped, 1, memory_order_relaxed);
        /* Tell the service thread a report was lost, so the loss is said rather than silent.
         * KML_LOST_REPORT is no slot index. write(2) is async-signal-safe; if the
         * non-blocking pipe is full the byte is dropped and the counter still holds the loss. */
        int fd = atomic_load_explicit(&kml_pipe_fd, memory_order_acquire);
        unsigned char byte = KML_LOST_REPORT;
        if (fd >= 0) {
            ssize_t r = write(fd, &byte, 1);
            (void)r;
        }
    }
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, NULL);
    for (;;)
        pause();
}

/*
 * Not ours: do what would have happened without us. Async-signal-safe: sigaction, raise and
 * the previous handler itself (which was already entitled to run in signal context).
 */
static void kml_chain(int index, int signo, siginfo_t *si, void *uc) {
    const struct sigaction *prev = &kml_prev[index];
    if (prev->sa_flags & SA_SIGINFO) {
        prev->sa_sigaction(signo, si, uc);
        return;
    }
    if (prev->sa_handler == SIG_IGN && si->si_code <= 0) {
        /* A sent signal the host chose to ignore: ignore it, as before. (An ignored hardware
         * fault is fatal anyway: the kernel resets it to the default action.) */
        return;
    }
    if (prev->sa_handler == SIG_DFL || prev->sa_handler == SIG_IGN) {
        /* The default action of all six signals is to terminate with a core dump. Reinstall
         * it: a hardware fault re-executes when we return and kills the process as it would
         * have; a sent signal (raise, kill) would not come back, so send it again. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(signo, &dfl, NULL);
        if (si->si_code <= 0)
            raise(signo);
        return;
    }
    prev->sa_handler(signo);
}

static void kml_handler(int signo, siginfo_t *si, void *uc) {
    int saved_errno = errno;
    int index = kml_signal_index(signo);
    if (index < 0) {
        errno = saved_errno;
        return; /* cannot happen: we are installed for the six signals only */
    }
    /* One load of our initial-exec TLS pointer: safe (see its declaration). */
    struct kml_guard *g = kml_current;
    int sync = kml_is_synchronous(signo, si);

    if (g != NULL && !g->suspended && sync) {
        /* Ours: a guarded call on this thread raised it. Record it in the guard's own record
         * (on this thread's stack, touched by nobody else). */
        kml_record(&g->crash, signo, si, uc, g->module_id);
        if (si->si_code <= 0) {
            /* raise()/abort(): the PC is in libc; keep the return addresses between the
             * signal and the guard so the loader can tell an abort from inside malloc. */
            kml_scan_stack(g->crash.sp, (uint64_t)(uintptr_t)g, 16384, &g->crash);
        }
        /* Unblock the six signals: the jump does not restore the mask (sigsetjmp(env, 0), to
         * keep guarded calls free of system calls) and a signal raised while blocked (for
         * example by a library that blocks signals around raise()) would otherwise stay
         * blocked, and the next one would kill the process. pthread_sigmask: AS-safe. */
        pthread_sigmask(SIG_UNBLOCK, &kml_fatal_set, NULL);
        /* glibc's siglongjmp (not __builtin_longjmp) runs libc's internal cleanup regions
         * (_longjmp_unwind), so a crash inside printf does not leave the stdio lock held. It
         * also leaves the alternate signal stack: the kernel judges "on the alternate stack"
         * by the stack pointer, which the jump restores. */
        siglongjmp(g->env, 1);
    }

    if (g == NULL && sync) {
        struct kml_raw_crash c;
        kml_record(&c, signo, si, uc, 0);
        /* The main thread is never parked: parking it would hang the host. */
        if (c.tid != getpid()) {
            uint64_t key = kml_text_key_at(c.pc);
            if (key == 0 && si->si_code <= 0 && !kml_thread_entered_guard) {
                /* abort()/raise() on a module thread: the PC is in libc, but a return
                 * address into the module is near the top of the stack. */
                key = kml_scan_stack(c.sp, 0, 16384, &c);
            }
            if (key != 0) {
                c.module_id = key - 1;
                c.on_module_thread = 1;
                kml_park(&c);
            }
        }
    }

    errno = saved_errno;
    kml_chain(index, signo, si, uc);
    errno = saved_errno;
}

/* ------------------------------------------------------------------------------------------ */
/* Normal-context entry points (called from mod.rs).                                           */
/* ------------------------------------------------------------------------------------------ */

/* Install the handler for the six signals, saving the previous ones. Called once (mod.rs
 * serialises it with a Once). Returns 0, or the errno of the sigaction that failed. */
int kml_install(void) {
    sigemptyset(&kml_fatal_set);
    for (int i = 0; i < KML_NSIGNALS; i++)
        sigaddset(&kml_fatal_set, kml_signals[i]);
    for (int i = 0; i < KML_NSIGNALS; i++) {
        /* Read the previous action first, then install: kml_prev[i] is complete before our
         * handler can run for this signal. */
        if (sigaction(kml_signals[i], NULL, &kml_prev[i]) != 0)
            return errno;
        struct sigaction sa;
        memset(&sa, 0, sizeof sa);
        sa.sa_sigaction = kml_handler;
        /* SA_SIGINFO: si_code, si_addr and the ucontext (PC, SP).
         * SA_ONSTACK: run on the alternate stack, so a stack overflow can be handled.
         * SA_NODEFER: do not block the signal while the handler runs. We leave the handler by
         * siglongjmp, and sigsetjmp(env, 0) does not restore the mask; without NODEFER the
         * signal would stay blocked and its next occurrence would kill the process.
         * Empty sa_mask for the same reason. */
        sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
        sigemptyset(&sa.sa_mask);
        if (sigaction(kml_signals[i], &sa, NULL) != 0)
            return errno;
    }
    return 0;
}

/*
 * The jump point. Kept out of line so that sigsetjmp's frame is exactly this one and the
 * values it uses after the jump (rec, its parameters) are never modified after sigsetjmp: C
 * leaves modified non-volatile locals indeterminate after a longjmp.
 */
__attribute__((noinline)) static int kml_guard_enter(struct kml_guard *rec, void (*fn)(void *),
                                                      void *ctx) {
    if (sigsetjmp(rec->env, 0) != 0)
        return 1; /* back from the handler */
    /* Publish the record only once env is valid. The signal fence keeps the compiler from
     * moving the store (a signal handler on this thread reads it). */
    kml_current = rec;
    atomic_signal_fence(memory_order_seq_cst);
    fn(ctx);
    atomic_signal_fence(memory_order_seq_cst);
    return 0;
}

/* Run fn(ctx) under a guard attributed to module_id. 0 when fn returned; 1 when it raised a
 * fatal signal, with *out filled. */
int kml_guard_call(void (*fn)(void *), void *ctx, uint64_t module_id,
                   struct kml_raw_crash *out) {
    struct kml_guard rec;
    kml_thread_entered_guard = 1;
    rec.prev = kml_current;
    rec.module_id = module_id;
    rec.suspended = 0;
    int crashed = kml_guard_enter(&rec, fn, ctx);
    kml_current = rec.prev;
    atomic_signal_fence(memory_order_seq_cst);
    if (crashed)
        memcpy(out, &rec.crash, sizeof *out);
    return crashed;
}

/* Is a guard active (and not suspended) on this thread? For tests and assertions. */
int kml_guard_active(void) {
    struct kml_guard *g = kml_current;
    return g != NULL && !g->suspended;
}

/* ------------------------------------------------------------------------------------------ */
/* Host callbacks handed to modules.                                                           */
/* ------------------------------------------------------------------------------------------ */

typedef void (*kml_log_sink_fn)(int has_module, uint64_t module_id, int level, const char *msg);
typedef uint64_t (*kml_time_sink_fn)(int has_module, uint64_t module_id);
static _Atomic(kml_log_sink_fn) kml_log_sink;
static _Atomic(kml_time_sink_fn) kml_time_sink;

void kml_set_host_sinks(kml_log_sink_fn log, kml_time_sink_fn get_time) {
    atomic_store_explicit(&kml_log_sink, log, memory_order_release);
    atomic_store_explicit(&kml_time_sink, get_time, memory_order_release);
}

/* Which module is calling: the active guard's, else the one whose text holds the return
 * address, else none (0). Returns id + 1. */
static uint64_t kml_caller_key(void *return_address) {
    struct kml_guard *g = kml_current;
    if (g != NULL && !g->suspended)
        return g->module_id + 1;
    return kml_text_key_at((uint64_t)(uintptr_t)return_address);
}

/* Push a suspension record: until it is popped, faults on this thread are the host's. */
static void kml_suspend(struct kml_guard *susp, uint64_t key) {
    susp->prev = kml_current;
    susp->module_id = key ? key - 1 : 0;
    susp->suspended = 1;
    kml_current = susp;
    atomic_signal_fence(memory_order_seq_cst);
}

static void kml_resume(struct kml_guard *susp) {
    atomic_signal_fence(memory_order_seq_cst);
    kml_current = susp->prev;
}

void kml_log_trampoline(int level, const char *msg) {
    uint64_t key = kml_caller_key(__builtin_return_address(0));
    struct kml_guard susp;
    kml_suspend(&susp, key);
    kml_log_sink_fn sink = atomic_load_explicit(&kml_log_sink, memory_order_acquire);
    if (sink != NULL)
        sink(key != 0, key ? key - 1 : 0, level, msg);
    kml_resume(&susp);
}

uint64_t kml_get_time_trampoline(void) {
    uint64_t key = kml_caller_key(__builtin_return_address(0));
    struct kml_guard susp;
    kml_suspend(&susp, key);
    uint64_t now;
    kml_time_sink_fn sink = atomic_load_explicit(&kml_time_sink, memory_order_acquire);
    if (sink != NULL) {
        now = sink(key != 0, key ? key - 1 : 0);
    } else {
        struct timespec ts = {0, 0};
        clock_gettime(CLOCK_MONOTONIC, &ts);
        now = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    }
    kml_resume(&susp);
    return now;
}

/* ------------------------------------------------------------------------------------------ */
/* Sampling another thread's PC and SP (threads.rs: is any thread running in a module?).       */
/* ------------------------------------------------------------------------------------------ */

/*
 * For a thread that /proc/self/task/<tid>/syscall reports as "running" (on a CPU or runnable:
 * the kernel cannot show the registers of a task that is not stopped in the kernel), the
 * requester queues the sampling signal to it with rt_tgsigqueueinfo(SI_QUEUE), carrying a
 * token in si_value. The handler, on the sampled thread, copies the interrupted PC and SP from
 * its ucontext into the slot the token names and wakes the requester through a futex; it does
 * nothing else, so the thread continues exactly where it was.
 *
 * Tokens: bits 48..62 hold KML_SAMPLE_MAGIC (so a foreign SI_QUEUE signal is told apart and
 * chained), bits 8..47 a batch generation, bits 0..7 the slot index. A slot's req holds the
 * open token, token | KML_SAMPLE_CLAIMED once a handler has claimed it (CAS), or 0 when closed.
 * A late handler (the thread had the signal blocked, and unblocked it after the requester gave
 * up) carries an old token: its CAS fails and it does nothing. A handler that claimed a slot
 * but did not finish (stopped mid-handler) leaves the slot poisoned: never reused.
 */
#define KML_SAMPLE_SLOTS 64
#define KML_SAMPLE_MAGIC 0x6B6Dull /* "km" */
#define KML_SAMPLE_CLAIMED (1ull << 63)
struct kml_sample_slot {
    _Atomic uint64_t req;
    _Atomic uint64_t pc;
    _Atomic uint64_t sp;
    _Atomic uint32_t done; /* 1 once pc and sp are written (release) */
};
static struct kml_sample_slot kml_samples[KML_SAMPLE_SLOTS];
/* Requester-only state (threads.rs serialises requesters). */
static unsigned char kml_sample_poisoned[KML_SAMPLE_SLOTS];
static uint64_t kml_sample_gen;
/* Futex word: bumped by every handler that answered. */
static _Atomic uint32_t kml_sample_acks;
/* The sampling signal and the action it replaced: written once, before our handler is
 * installed, never again (the handler reads them without synchronisation). */
static int kml_sample_signo;
static struct sigaction kml_sample_prev;

enum {
    KML_SAMPLE_OK = 1,        /* pcs/sps filled */
    KML_SAMPLE_NO_ANSWER = 0, /* the thread did not run the handler in time (signal blocked?) */
    KML_SAMPLE_GONE = -1,     /* the thread no longer exists */
    KML_SAMPLE_ERROR = -2,    /* could not send (or no free slot) */
};

/*
 * The sampling handler. Async-signal-safe throughout: errno saved and restored; getpid() (a
 * system call); reading the ucontext the kernel gave us; C11 atomics on static storage (lock
 * free for 32- and 64-bit words on x86_64 and aarch64); syscall(SYS_futex, FUTEX_WAKE), a raw
 * system call whose wrapper only sets errno; and, for a signal that is not ours, the previous
 * handler (which was already entitled to run in signal context), sigaction() and raise().
 */
static void kml_sample_handler(int signo, siginfo_t *si, void *uc) {
    int saved_errno = errno;
    uint64_t tok = (uint64_t)(uintptr_t)si->si_value.sival_ptr;
    if (si->si_code == SI_QUEUE && si->si_pid == getpid() && (tok >> 48) == KML_SAMPLE_MAGIC) {
        uint32_t idx = (uint32_t)(tok & 0xFF);
        if (idx < KML_SAMPLE_SLOTS) {
            struct kml_sample_slot *s = &kml_samples[idx];
            uint64_t expected = tok;
            if (atomic_compare_exchange_strong_explicit(&s->req, &expected,
                                                        tok | KML_SAMPLE_CLAIMED,
                                                        memory_order_acq_rel,
                                                        memory_order_relaxed)) {
                uint64_t pc = 0, sp = 0;
                kml_context_regs(uc, &pc, &sp);
                atomic_store_explicit(&s->pc, pc, memory_order_relaxed);
                atomic_store_explicit(&s->sp, sp, memory_order_relaxed);
                atomic_store_explicit(&s->done, 1, memory_order_release);
                atomic_fetch_add_explicit(&kml_sample_acks, 1, memory_order_release);
                syscall(SYS_futex, &kml_sample_acks, FUTEX_WAKE_PRIVATE, INT_MAX, NULL, NULL, 0);
            }
        }
        /* Ours, current or stale: nothing more to do. */
        errno = saved_errno;
        return;
    }
    /* Not ours: what would have happened without us. */
    const struct sigaction *prev = &kml_sample_prev;
    if (prev->sa_flags & SA_SIGINFO) {
        errno = saved_errno;
        prev->sa_sigaction(signo, si, uc);
    } else if (prev->sa_handler == SIG_IGN) {
        /* ignored, as before */
    } else if (prev->sa_handler == SIG_DFL) {
        /* The default action of a real-time signal terminates the process: do that. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(signo, &dfl, NULL);
        raise(signo);
    } else {
        errno = saved_errno;
        prev->sa_handler(signo);
    }
    errno = saved_errno;
}

/* Install the sampling handler for signo (normal context, once: threads.rs serialises it).
 * 0, or the errno of the sigaction that failed. A handler the host had installed for signo is
 * chained to for every signal that is not a sampling request. */
int kml_sample_install(int signo) {
    if (sigaction(signo, NULL, &kml_sample_prev) != 0)
        return errno;
    kml_sample_signo = signo;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = kml_sample_handler;
    /* SA_RESTART: a thread that entered a restartable system call just as the signal came
     * resumes it. SA_ONSTACK: a thread near the end of its stack still has room (when it has
     * an alternate stack). The handler blocks nothing: it runs a few instructions. */
    sa.sa_flags = SA_SIGINFO | SA_RESTART | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) != 0)
        return errno;
    return 0;
}

static int64_t kml_now_ns(void) {
    struct timespec ts = {0, 0};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/*
 * Sample the PC and SP of the n threads tids[] (n <= KML_SAMPLE_SLOTS) at once, waiting at
 * most timeout_ms for all of them. status[i] is one of KML_SAMPLE_*; pcs[i]/sps[i] are set
 * when it is KML_SAMPLE_OK. Normal context; the caller serialises calls (and installed the
 * handler). Returns 0, or -1 when the handler is not installed.
 */
int kml_sample_threads(const int32_t *tids, uint32_t n, int timeout_ms, uint64_t *pcs,
                       uint64_t *sps, int32_t *status) {
    if (kml_sample_signo == 0)
        return -1;
    int slot_of[KML_SAMPLE_SLOTS];
    uint64_t tok_of[KML_SAMPLE_SLOTS];
    if (n > KML_SAMPLE_SLOTS)
        n = KML_SAMPLE_SLOTS;
    kml_sample_gen = (kml_sample_gen + 1) & 0xFFFFFFFFFFull;
    if (kml_sample_gen == 0)
        kml_sample_gen = 1;
    pid_t pid = getpid();
    uid_t uid = getuid();
    int next = 0;
    uint32_t pending = 0;
    for (uint32_t i = 0; i < n; i++) {
        slot_of[i] = -1;
        status[i] = KML_SAMPLE_ERROR;
        while (next < KML_SAMPLE_SLOTS && kml_sample_poisoned[next])
            next++;
        if (next >= KML_SAMPLE_SLOTS)
            continue;
        int j = next++;
        uint64_t tok = KML_SAMPLE_MAGIC << 48 | kml_sample_gen << 8 | (uint64_t)j;
        struct kml_sample_slot *s = &kml_samples[j];
        atomic_store_explicit(&s->done, 0, memory_order_relaxed);
        atomic_store_explicit(&s->pc, 0, memory_order_relaxed);
        atomic_store_explicit(&s->sp, 0, memory_order_relaxed);
        atomic_store_explicit(&s->req, tok, memory_order_release);
        siginfo_t info;
        memset(&info, 0, sizeof info);
        info.si_signo = kml_sample_signo;
        info.si_code = SI_QUEUE;
        info.si_pid = pid;
        info.si_uid = uid;
        info.si_value.sival_ptr = (void *)(uintptr_t)tok;
        if (syscall(SYS_rt_tgsigqueueinfo, pid, tids[i], kml_sample_signo, &info) != 0) {
            status[i] = errno == ESRCH ? KML_SAMPLE_GONE : KML_SAMPLE_ERROR;
            atomic_store_explicit(&s->req, 0, memory_order_release);
            continue;
        }
        slot_of[i] = j;
        tok_of[i] = tok;
        pending++;
    }

    /* Wait until every sent request is answered, or the deadline. */
    int64_t deadline = kml_now_ns() + (int64_t)timeout_ms * 1000000;
    for (;;) {
        uint32_t acks = atomic_load_explicit(&kml_sample_acks, memory_order_acquire);
        uint32_t answered = 0;
        for (uint32_t i = 0; i < n; i++)
            if (slot_of[i] >= 0 &&
                atomic_load_explicit(&kml_samples[slot_of[i]].done, memory_order_acquire))
                answered++;
        if (answered == pending)
            break;
        int64_t left = deadline - kml_now_ns();
        if (left <= 0)
            break;
        struct timespec ts = {(time_t)(left / 1000000000), (long)(left % 1000000000)};
        syscall(SYS_futex, &kml_sample_acks, FUTEX_WAIT_PRIVATE, acks, &ts, NULL, 0);
    }

    /* Close every request. */
    for (uint32_t i = 0; i < n; i++) {
        if (slot_of[i] < 0)
            continue;
        struct kml_sample_slot *s = &kml_samples[slot_of[i]];
        uint64_t expected = tok_of[i];
        if (atomic_compare_exchange_strong_explicit(&s->req, &expected, 0, memory_order_acq_rel,
                                                    memory_order_acquire)) {
            status[i] = KML_SAMPLE_NO_ANSWER; /* no handler claimed it: closed for good */
            continue;
        }
        /* A handler claimed it: it is a few stores from done. Give it 50 ms. */
        int64_t until = kml_now_ns() + 50000000;
        while (!atomic_load_explicit(&s->done, memory_order_acquire) && kml_now_ns() < until)
            sched_yield();
        if (atomic_load_explicit(&s->done, memory_order_acquire)) {
            pcs[i] = atomic_load_explicit(&s->pc, memory_order_relaxed);
            sps[i] = atomic_load_explicit(&s->sp, memory_order_relaxed);
            status[i] = KML_SAMPLE_OK;
            atomic_store_explicit(&s->req, 0, memory_order_release);
        } else {
            /* Stopped inside the handler: it may still write here; never reuse the slot. */
            kml_sample_poisoned[slot_of[i]] = 1;
            status[i] = KML_SAMPLE_NO_ANSWER;
        }
    }
    return 0;
}

/* Does w look like a return address (the instruction before it is a call)? Normal context. */
int kml_looks_like_return(uint64_t w) { return kml_follows_call(w); }

/* ------------------------------------------------------------------------------------------ */
/* fork()                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* pthread_atfork prepare/parent: hold the text-table lock across fork(), so the child's copy
 * is never locked by a thread that does not exist there. */
void kml_atfork_prepare(void) { pthread_mutex_lock(&kml_table_lock); }
void kml_atfork_parent(void) { pthread_mutex_unlock(&kml_table_lock); }

/*
 * pthread_atfork child handler (the shim's part; mod.rs's handler calls it). In the child only
 * the forking thread exists and the service thread does not: forget the parent's pipe (so a
 * crash in the child never wakes the parent's service thread) and every piece of per-thread
 * state that belonged to the parent's other threads. The next guard entry point restarts the
 * pipe and the service thread (mod.rs). Async-signal-safe: close(2) and atomic stores.
 */
void kml_atfork_child(void) {
    pthread_mutex_unlock(&kml_table_lock); /* locked by this very thread in prepare */
    int w = atomic_exchange_explicit(&kml_pipe_fd, -1, memory_order_acq_rel);
    int r = atomic_exchange_explicit(&kml_pipe_read_fd, -1, memory_order_acq_rel);
    if (w >= 0)
        close(w);
    if (r >= 0)
        close(r);
    /* Reports in flight in the parent are the parent's; its parked threads are not here. */
    for (int i = 0; i < KML_THREAD_SLOTS; i++) {
        atomic_store_explicit(&kml_thread_slots[i].state, KML_SLOT_FREE, memory_order_relaxed);
        atomic_store_explicit(&kml_parked[i], 0, memory_order_relaxed);
    }
    atomic_store_explicit(&kml_thread_crashes_dropped, 0, memory_order_relaxed);
    /* Sampling requests of the parent's threads: none of their targets exist here. */
    for (int i = 0; i < KML_SAMPLE_SLOTS; i++) {
        atomic_store_explicit(&kml_samples[i].req, 0, memory_order_relaxed);
        atomic_store_explicit(&kml_samples[i].done, 0, memory_order_relaxed);
        kml_sample_poisoned[i] = 0;
    }
    atomic_thread_fence(memory_order_release);
}
