/*
 * guard.c: the signal-level half of kmodlike's crash guard.
 *
 * This file is the only code in kmodlike that runs inside a signal handler. It holds:
 *
 *   - the handler's choice of the innermost guarded call: a slot of the fast entry (entry.rs,
 *     fast.c: resumed through kml_fast_resume) or a record of this file;
 *   - the sigsetjmp entry: kml_guard_call() runs a function with a sigsetjmp() in its own frame
 *     (the lifecycle entry points, and every call where the fast entry is off); the handler
 *     siglongjmp()s back to it when the function raises a fatal signal;
 *   - the handler for SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT and SIGSYS, and the table of the
 *     handlers it replaced (it chains to them for every signal that is not ours);
 *   - the attribution of faults on threads that have no guard (threads a module started), by
 *     the module text table of text.c, and their parking (park.c);
 *   - the host-callback trampolines (log, get_time) that suspend the guard while host code
 *     runs, so that a fault in host code stays fatal;
 *   - the fork handlers of the whole shim.
 * The other files: fast.c (thread records, crash resume, drain), text.c (code tables), stack.c
 * (reading the fault), park.c (module-thread crashes), sample.c (another thread's PC and SP),
 * interpose.c (a module's own sigaction, masks and exit).
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
#include "shim.h"

size_t kml_raw_crash_size(void) { return sizeof(struct kml_raw_crash); }
size_t kml_stack_copy_size(void) { return KML_STACK_COPY; }

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
    uint32_t fast_mark; /* the fast entry's depth when this record was pushed (fast.c) */
    int mask_saved; /* the module changed the signal mask: put saved_mask back at the end */
    sigset_t saved_mask;
    uint8_t *stack_copy; /* KML_STACK_COPY bytes for the handler's copy of the stack, or NULL */
    /* A suspension record: the interrupt signal came while its host callback ran; deliver it
     * when the callback returns (kml_resume). Written by this thread's handler only. */
    volatile sig_atomic_t interrupt_pending;
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

const int kml_signals[KML_NSIGNALS] = {SIGSEGV, SIGBUS, SIGFPE, SIGILL, SIGABRT, SIGSYS};

/* The handlers we replaced. Written by kml_install() before our handler is installed for that
 * signal, never written again: the handler may read them without synchronisation. */
static struct sigaction kml_prev[KML_NSIGNALS];
/* The six signals, to unblock them before the jump. Written once in kml_install(). */
static sigset_t kml_fatal_set;

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
    /* Loads of our initial-exec TLS pointers: safe (see their declarations). */
    struct kml_guard *g = kml_current;
    int sync = kml_is_synchronous(signo, si);
    /* The innermost guarded call: a slot of the fast entry pushed after the innermost record,
     * or that record. */
    struct kml_slot *fast = kml_fast_innermost(g ? g->fast_mark : 0, g != NULL);

    if (fast != NULL && sync) {
        struct kml_gmod *m = atomic_load_explicit(&fast->module, memory_order_relaxed);
        uint64_t id = m != NULL ? m->id : 0; /* records are never freed: always readable */
        if (kml_module_handler(id, signo, si, uc)) {
            errno = saved_errno;
            return;
        }
        struct kml_raw_crash *c = &kml_self->crash;
        kml_record(c, signo, si, uc, id);
        /* The faulting stack up to the slot's frame (the module function's return address is
         * its last word), into the record's buffer: see kml_copy_stack. */
        kml_copy_stack(c, uc, fast->frame, kml_self->stack_copy);
        /* Resume with the mask of the fault minus the six signals (the landing pad puts back
         * the mask from before the call if the module changed it). sigdelset: AS-safe. */
        sigset_t mask = ((const ucontext_t *)uc)->uc_sigmask;
        for (int i = 0; i < KML_NSIGNALS; i++)
            sigdelset(&mask, kml_signals[i]);
        errno = saved_errno;
        kml_fast_resume(&mask);
    }

    if (fast == NULL && g != NULL && !g->suspended && sync) {
        /* The module's own handler for this signal (installed through its redirected
         * sigaction) sees its own faults first; if it returns, the instruction runs again. */
        if (kml_module_handler(g->module_id, signo, si, uc)) {
            errno = saved_errno;
            return;
        }
        /* Ours: a guarded call on this thread raised it. Record it in the guard's own record
         * (on this thread's stack, touched by nobody else). */
        kml_record(&g->crash, signo, si, uc, g->module_id);
        /* The faulting stack up to the record (a local of kml_guard_call, older than every
         * frame of the guarded function), into the buffer the caller gave: kml_copy_stack. */
        kml_copy_stack(&g->crash, uc, (uint64_t)(uintptr_t)g, g->stack_copy);
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

    if (fast == NULL && g == NULL && sync) {
        struct kml_raw_crash c;
        kml_record(&c, signo, si, uc, 0);
        /* The frame pointer (and link register) only: a parked thread's stack stays as it is,
         * and the service thread reads it there (mod.rs). */
        kml_copy_stack(&c, uc, 0, NULL);
        /* The main thread is never parked: parking it would hang the host. */
        if (c.tid != getpid()) {
            uint64_t key = kml_text_key_at(c.pc);
            if (key == 0 && si->si_code <= 0 && !kml_thread_entered_guard && kml_self == NULL) {
                /* abort()/raise() on a module thread: the PC is in libc, but a return
                 * address into the module is near the top of the stack. */
                key = kml_scan_stack(c.sp, 0, 16384, &c);
            }
            if (key != 0 && kml_module_handler(key - 1, signo, si, uc)) {
                errno = saved_errno;
                return;
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
 * fatal signal or overran its deadline, with *out filled (and its stack copy in stack_copy:
 * KML_STACK_COPY bytes owned by the caller, or NULL for no copy). dl: the call's deadline, or
 * NULL; published in this thread's record (registered for it if needed) for the watchdog. */
int kml_guard_call(void (*fn)(void *), void *ctx, uint64_t module_id,
                   struct kml_raw_crash *out, uint8_t *stack_copy,
                   const struct kml_deadline *dl) {
    struct kml_guard rec;
    rec.stack_copy = stack_copy;
    kml_thread_entered_guard = 1;
    rec.prev = kml_current;
    rec.fast_mark = kml_self != NULL ? kml_self->depth : 0;
    rec.module_id = module_id;
    rec.suspended = 0;
    rec.mask_saved = 0;
    rec.interrupt_pending = 0;
    /* The deadline, published for the watchdog (the previous publication, of an outer call
     * with a deadline, is put back after this one). */
    struct kml_thread *t = dl != NULL ? kml_thread_record() : NULL;
    uint64_t prev_dl = 0, prev_soft = 0, prev_start = 0, prev_func = 0, prev_id = 0;
    void *prev_owner = NULL;
    if (t != NULL) {
        prev_owner = atomic_load_explicit(&t->rec_owner, memory_order_relaxed);
        prev_dl = atomic_load_explicit(&t->rec_deadline, memory_order_relaxed);
        prev_soft = atomic_load_explicit(&t->rec_soft, memory_order_relaxed);
        prev_start = t->rec_start;
        prev_func = t->rec_func;
        prev_id = t->rec_module_id;
        atomic_store_explicit(&t->rec_owner, NULL, memory_order_release);
        t->rec_start = dl->start;
        t->rec_func = dl->func;
        t->rec_module_id = module_id;
        atomic_store_explicit(&t->rec_soft, dl->soft, memory_order_relaxed);
        atomic_store_explicit(&t->rec_deadline, dl->hard, memory_order_relaxed);
        atomic_store_explicit(&t->rec_owner, &rec, memory_order_release);
        atomic_store_explicit(&t->pending, 0, memory_order_seq_cst);
    }
    int crashed = kml_guard_enter(&rec, fn, ctx);
    if (t != NULL) {
        atomic_store_explicit(&t->rec_owner, NULL, memory_order_release);
        t->rec_start = prev_start;
        t->rec_func = prev_func;
        t->rec_module_id = prev_id;
        atomic_store_explicit(&t->rec_soft, prev_soft, memory_order_relaxed);
        atomic_store_explicit(&t->rec_deadline, prev_dl, memory_order_relaxed);
        atomic_store_explicit(&t->rec_owner, prev_owner, memory_order_release);
    }
    kml_current = rec.prev;
    atomic_signal_fence(memory_order_seq_cst);
    if (rec.mask_saved)
        pthread_sigmask(SIG_SETMASK, &rec.saved_mask, NULL);
    if (crashed)
        memcpy(out, &rec.crash, sizeof *out);
    return crashed;
}

int kml_guard_top(uint64_t *module_id) {
    struct kml_guard *g = kml_current;
    struct kml_slot *fast = kml_fast_innermost(g ? g->fast_mark : 0, g != NULL);
    if (fast != NULL) {
        struct kml_gmod *m = atomic_load_explicit(&fast->module, memory_order_relaxed);
        *module_id = m != NULL ? m->id : 0;
        return 1;
    }
    if (g == NULL || g->suspended)
        return 0;
    *module_id = g->module_id;
    return 1;
}

__attribute__((noreturn)) void kml_guard_abandon_exit(int status, int function, uint64_t caller) {
    struct kml_guard *g = kml_current;
    struct kml_slot *fast = kml_fast_innermost(g ? g->fast_mark : 0, g != NULL);
    struct kml_raw_crash *c = fast != NULL ? &kml_self->crash : &g->crash;
    memset(c, 0, sizeof *c);
    c->cause = KML_CAUSE_EXIT;
    c->code = status;
    c->addr = (uint64_t)function;
    c->pc = caller;
    if (fast != NULL) {
        struct kml_gmod *m = atomic_load_explicit(&fast->module, memory_order_relaxed);
        c->module_id = m != NULL ? m->id : 0;
    } else {
        c->module_id = g->module_id;
    }
    c->tid = (int32_t)syscall(SYS_gettid);
    struct timespec ts = {0, 0};
    clock_gettime(CLOCK_REALTIME, &ts);
    c->time_sec = ts.tv_sec;
    c->time_nsec = ts.tv_nsec;
    if (fast != NULL) {
        sigset_t mask;
        pthread_sigmask(SIG_SETMASK, NULL, &mask);
        for (int i = 0; i < KML_NSIGNALS; i++)
            sigdelset(&mask, kml_signals[i]);
        kml_fast_resume(&mask);
    }
    siglongjmp(g->env, 1);
}

void kml_guard_mask_changing(void) {
    struct kml_guard *g = kml_current;
    struct kml_slot *fast = kml_fast_innermost(g ? g->fast_mark : 0, g != NULL);
    if (fast != NULL) {
        kml_fast_save_mask(fast);
        return;
    }
    if (g == NULL || g->suspended || g->mask_saved)
        return;
    if (pthread_sigmask(SIG_SETMASK, NULL, &g->saved_mask) == 0)
        g->mask_saved = 1;
}

/* The timeout facts of a call ended by its deadline: its start, its deadline, now. */
static void kml_timeout_facts(struct kml_raw_crash *c, uint64_t start, uint64_t deadline,
                              uint64_t now) {
    c->cause = KML_CAUSE_TIMEOUT;
    c->call_start = start;
    c->call_deadline = deadline;
    c->call_stopped = now;
}

/*
 * Should an interrupt wait for the thread to come back to module code? Not when the request
 * insists, nor when a module's text holds the PC, nor when the signal interrupted a system call
 * (a module blocked in read() or sleep(): that is where it must be ended). Otherwise the thread
 * runs library code the module called (the allocator, the unwinder, the dynamic linker),
 * which may hold one of its locks at this very instruction and will soon return or block. The
 * watchdog asks again every millisecond; after a while it insists, or, when the thread is
 * still in libc, ld.so or the unwinder (waited_pc says where), reports the call hung rather
 * than leave their locks held (asking.rs). Async-signal-safe: reads of the signal context,
 * kml_text_key_at and an atomic store.
 */
static int kml_interrupt_waits(const void *uc, int insist) {
    if (insist)
        return 0;
    uint64_t pc, sp;
    kml_context_regs(uc, &pc, &sp);
    if (kml_text_key_at(pc) != 0 || kml_context_interrupted_syscall(uc))
        return 0;
    struct kml_thread *t = kml_self;
    if (t != NULL) {
        atomic_store_explicit(&t->waited_pc, pc, memory_order_relaxed);
        atomic_fetch_add_explicit(&t->waits, 1, memory_order_release);
    }
    return 1;
}

/*
 * The interrupt signal, sent by the watchdog (or kml_interrupt_self) to this thread: end the
 * innermost guarded call as a crash does if its deadline has passed; hold the interrupt while
 * a host callback runs (kml_resume delivers it); otherwise (a stale request: the call ended)
 * do nothing. Called from interrupt.c's handler for our own requests only. Async-signal-safe
 * as kml_handler is: plain reads of this thread's records, kml_record, kml_copy_stack,
 * sigdelset/pthread_sigmask and glibc's siglongjmp.
 *
 * Unless the request insists, a thread running library code outside the module is left to
 * run (kml_interrupt_waits): the watchdog asks again.
 */
void kml_guard_interrupt(int signo, siginfo_t *si, void *uc, int insist) {
    struct kml_guard *g = kml_current;
    struct kml_slot *fast = kml_fast_innermost(g ? g->fast_mark : 0, g != NULL);
    struct kml_thread *t = kml_self;
    uint64_t now = kml_monotonic_ns();
    if (fast != NULL) {
        uint64_t dl = atomic_load_explicit(&fast->deadline, memory_order_relaxed);
        if (dl == 0 || now < dl || kml_interrupt_waits(uc, insist))
            return;
        struct kml_gmod *m = atomic_load_explicit(&fast->module, memory_order_relaxed);
        struct kml_raw_crash *c = &t->crash;
        kml_record(c, signo, si, uc, m != NULL ? m->id : 0);
        /* deadline 1: interrupted on request, and the call had none (its start is stale). */
        kml_timeout_facts(c, dl == 1 ? 0 : fast->start, dl, now);
        kml_copy_stack(c, uc, fast->frame, t->stack_copy);
        /* The mask of the interrupted code: the interrupt signal itself is not in it (the
         * kernel blocked it for this handler only). */
        sigset_t mask = ((const ucontext_t *)uc)->uc_sigmask;
        for (int i = 0; i < KML_NSIGNALS; i++)
            sigdelset(&mask, kml_signals[i]);
        sigdelset(&mask, signo);
        /* Interrupted inside another handler of ours (the sampling one blocks the interrupt,
         * but a module's own handler may not): never leave the sampling signal blocked. */
        if (kml_sample_signal() != 0)
            sigdelset(&mask, kml_sample_signal());
        kml_fast_resume(&mask);
    }
    if (g == NULL)
        return;
    if (g->suspended) {
        g->interrupt_pending = 1;
        return;
    }
    if (t == NULL || atomic_load_explicit(&t->rec_owner, memory_order_acquire) != (void *)g)
        return;
    uint64_t dl = atomic_load_explicit(&t->rec_deadline, memory_order_relaxed);
    if (dl == 0 || now < dl || kml_interrupt_waits(uc, insist))
        return;
    kml_record(&g->crash, signo, si, uc, g->module_id);
    kml_timeout_facts(&g->crash, dl == 1 ? 0 : t->rec_start, dl, now);
    kml_copy_stack(&g->crash, uc, (uint64_t)(uintptr_t)g, g->stack_copy);
    /* sigsetjmp(env, 0) does not restore the mask: unblock the six signals and this one. */
    sigset_t unblock = kml_fatal_set;
    sigaddset(&unblock, signo);
    if (kml_sample_signal() != 0)
        sigaddset(&unblock, kml_sample_signal());
    pthread_sigmask(SIG_UNBLOCK, &unblock, NULL);
    siglongjmp(g->env, 1);
}

/* Is a guard active (and not suspended) on this thread? For tests and assertions. */
int kml_guard_active(void) {
    uint64_t id;
    return kml_guard_top(&id);
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
    uint64_t id;
    if (kml_guard_top(&id))
        return id + 1;
    return kml_text_key_at((uint64_t)(uintptr_t)return_address);
}

/* Push a suspension record: until it is popped, faults on this thread are the host's. */
static void kml_suspend(struct kml_guard *susp, uint64_t key) {
    susp->prev = kml_current;
    susp->fast_mark = kml_self != NULL ? kml_self->depth : 0;
    susp->module_id = key ? key - 1 : 0;
    susp->suspended = 1;
    susp->interrupt_pending = 0;
    kml_current = susp;
    atomic_signal_fence(memory_order_seq_cst);
    if (kml_self != NULL)
        atomic_fetch_add_explicit(&kml_self->suspended, 1, memory_order_seq_cst);
}

/* Pop the suspension: back to the module's code. An interrupt that came (or that the watchdog
 * held) while the host callback ran is delivered now, when the code we return to is the
 * module's (an outer callback still running holds it in turn). */
static void kml_resume(struct kml_guard *susp) {
    atomic_signal_fence(memory_order_seq_cst);
    kml_current = susp->prev;
    atomic_signal_fence(memory_order_seq_cst);
    int pending = susp->interrupt_pending;
    struct kml_thread *t = kml_self;
    if (t != NULL && atomic_fetch_sub_explicit(&t->suspended, 1, memory_order_seq_cst) == 1 &&
        atomic_exchange_explicit(&t->interrupt_pending, 0, memory_order_seq_cst))
        pending = 1;
    if (!pending)
        return;
    if (kml_current != NULL && kml_current->suspended)
        kml_current->interrupt_pending = 1;
    else
        kml_interrupt_self();
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
/* fork()                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* pthread_atfork prepare/parent: hold the text-table lock across fork(), so the child's copy
 * is never locked by a thread that does not exist there. */
void kml_atfork_prepare(void) {
    kml_text_atfork_prepare();
    kml_fast_atfork_prepare();
}
void kml_atfork_parent(void) {
    kml_fast_atfork_parent();
    kml_text_atfork_parent();
}

/*
 * pthread_atfork child handler (the shim's part; mod.rs's handler calls it). In the child only
 * the forking thread exists and the service thread does not: forget the parent's pipe (so a
 * crash in the child never wakes the parent's service thread) and every piece of per-thread
 * state that belonged to the parent's other threads. The next guard entry point restarts the
 * pipe and the service thread (mod.rs). Async-signal-safe: close(2) and atomic stores.
 */
void kml_atfork_child(void) {
    kml_fast_atfork_child();
    kml_text_atfork_child();
    kml_park_atfork_child();
    kml_sample_atfork_child();
    atomic_thread_fence(memory_order_release);
}
