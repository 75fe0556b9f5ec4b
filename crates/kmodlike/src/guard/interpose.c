/*
 * interpose.c: the functions the loader puts in place of a module's own imports of sigaction,
 * signal (and bsd_signal, sysv_signal, __sysv_signal, sigset), sigprocmask, pthread_sigmask,
 * exit, _exit, _Exit and quick_exit. loader/interpose.rs writes their addresses into the
 * module's GOT slots for those imports after dlopen and before module_init.
 *
 * What they do:
 *   - a handler for one of the six fatal signals is never installed: it is recorded as that
 *     module's own action (a fixed table below, keyed by module id), and kml_module_handler()
 *     runs it, from the guard's handler, for faults the guard attributes to that module;
 *     kmodlike's own interrupt and sampling signals may not be taken (EINVAL: the module's
 *     handler would receive the watchdog's requests); every other signal goes to the real
 *     sigaction/signal;
 *   - a signal mask never blocks the six fatal signals, and inside a guarded call the guard is
 *     told first (kml_guard_mask_changing), so the thread's mask is put back when the call ends;
 *   - exit() and friends in a guarded call end that call as a contained failure
 *     (kml_guard_abandon_exit); on a thread the module started, they end that thread the way a
 *     crash does (it is parked and the module is marked crashed); elsewhere (the main thread, or
 *     a caller no module is known for) they exit as asked.
 *
 * Which module is calling: the one whose text holds the interposer's return address (the
 * call through the PLT/GOT is in its code), else the active guard's. A tail call through the
 * GOT (return address in the module's caller) falls back to the guard.
 *
 * Only kml_module_handler() runs in signal context. Everything it reaches is async-signal-safe:
 * atomic loads of a fixed table (no locks, no allocation), kml_context_regs, and the module's
 * own handler (which the module installed to run in signal context). The writers (normal
 * context, any thread) publish each action with a per-action sequence counter (a seqlock):
 * the handler retries a torn read a bounded number of times and never waits for a lock.
 */
#define _GNU_SOURCE
#include "shim.h"

#include <stdlib.h>

/* ------------------------------------------------------------------------------------------ */
/* The modules' own actions for the six fatal signals.                                         */
/* ------------------------------------------------------------------------------------------ */

/* Modules with at least one recorded action at a time; a full table refuses the next module's
 * sigaction with EAGAIN (its handler is then simply not run: the guard recovers as usual). */
#define KML_IX_SLOTS 256

struct kml_ix_action {
    _Atomic uint32_t seq;      /* odd while a writer is changing this action */
    _Atomic uintptr_t handler; /* sa_handler or sa_sigaction; 0 (SIG_DFL) when none recorded */
    _Atomic int flags;         /* sa_flags as given */
    sigset_t mask;             /* sa_mask as given: returned in oldact, not applied */
};

struct kml_ix_slot {
    _Atomic uint64_t key; /* module id + 1; 0: free */
    struct kml_ix_action act[KML_NSIGNALS];
};

static struct kml_ix_slot kml_ix[KML_IX_SLOTS];

static int kml_ix_index(int signo) {
    for (int i = 0; i < KML_NSIGNALS; i++)
        if (kml_signals[i] == signo)
            return i;
    return -1;
}

/* Async-signal-safe: atomic loads. */
static struct kml_ix_slot *kml_ix_find(uint64_t key) {
    for (int i = 0; i < KML_IX_SLOTS; i++)
        if (atomic_load_explicit(&kml_ix[i].key, memory_order_acquire) == key)
            return &kml_ix[i];
    return NULL;
}

/* The slot of module key (id + 1), claimed when it has none. Two threads of one module may
 * claim two slots at once: the lower one wins, the other is given back before use. */
static struct kml_ix_slot *kml_ix_claim(uint64_t key) {
    struct kml_ix_slot *s = kml_ix_find(key);
    if (s != NULL)
        return s;
    for (int i = 0; i < KML_IX_SLOTS; i++) {
        uint64_t expected = 0;
        if (!atomic_compare_exchange_strong(&kml_ix[i].key, &expected, key))
            continue;
        struct kml_ix_slot *first = kml_ix_find(key);
        if (first != &kml_ix[i]) {
            atomic_store(&kml_ix[i].key, 0);
            return first;
        }
        return &kml_ix[i];
    }
    return NULL;
}

/* Writer lock of one action: seq even -> odd. Spins only while another thread writes the same
 * action (a few stores); gives up rather than spin for ever on a writer this thread
 * interrupted (a module's own async handler calling signal() for a fatal signal). */
static int kml_ix_write_begin(struct kml_ix_action *a) {
    for (long n = 0; n < (1L << 24); n++) {
        uint32_t seq = atomic_load_explicit(&a->seq, memory_order_relaxed);
        if ((seq & 1) == 0 && atomic_compare_exchange_weak_explicit(
                                  &a->seq, &seq, seq + 1, memory_order_acquire,
                                  memory_order_relaxed))
            return 1;
    }
    return 0;
}

static void kml_ix_write_end(struct kml_ix_action *a) {
    atomic_fetch_add_explicit(&a->seq, 1, memory_order_release);
}

/* A consistent copy of action a (handler, flags, and the mask when mask != NULL). 0 when it
 * stayed torn (a writer stalled mid-write): the caller treats that as no action. */
static int kml_ix_read(struct kml_ix_action *a, uintptr_t *handler, int *flags, sigset_t *mask) {
    for (int tries = 0; tries < 1000; tries++) {
        uint32_t seq = atomic_load_explicit(&a->seq, memory_order_acquire);
        if (seq & 1)
            continue;
        *handler = atomic_load_explicit(&a->handler, memory_order_relaxed);
        *flags = atomic_load_explicit(&a->flags, memory_order_relaxed);
        if (mask != NULL)
            memcpy(mask, &a->mask, sizeof *mask);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&a->seq, memory_order_relaxed) == seq)
            return 1;
    }
    return 0;
}

/* Which module called the interposer whose return address is ra: id + 1, or 0. */
static uint64_t kml_ix_caller(void *ra) {
    uint64_t key = kml_text_key_at((uint64_t)(uintptr_t)ra);
    if (key != 0)
        return key;
    uint64_t id;
    return kml_guard_top(&id) ? id + 1 : 0;
}

/* Record act (when non-NULL) as module key's action for fatal signal index i, and give the
 * previous one in old (when non-NULL). Normal context. */
static int kml_ix_set(uint64_t key, int i, const struct sigaction *act, struct sigaction *old) {
    struct kml_ix_slot *s = NULL;
    if (key != 0)
        s = act != NULL ? kml_ix_claim(key) : kml_ix_find(key);
    if (old != NULL) {
        memset(old, 0, sizeof *old);
        old->sa_handler = SIG_DFL;
        sigemptyset(&old->sa_mask);
    }
    if (s == NULL) {
        if (act != NULL) {
            /* No module known, or the table is full: nothing is installed either way. */
            errno = key == 0 ? EINVAL : EAGAIN;
            return -1;
        }
        return 0;
    }
    struct kml_ix_action *a = &s->act[i];
    if (act == NULL) {
        uintptr_t h = 0;
        int flags = 0;
        if (old != NULL && kml_ix_read(a, &h, &flags, &old->sa_mask)) {
            old->sa_handler = (void (*)(int))h;
            old->sa_flags = flags;
        }
        return 0;
    }
    if (!kml_ix_write_begin(a)) {
        errno = EAGAIN;
        return -1;
    }
    if (old != NULL) {
        old->sa_handler = (void (*)(int))atomic_load_explicit(&a->handler, memory_order_relaxed);
        old->sa_flags = atomic_load_explicit(&a->flags, memory_order_relaxed);
        memcpy(&old->sa_mask, &a->mask, sizeof a->mask);
    }
    uintptr_t h = (act->sa_flags & SA_SIGINFO) ? (uintptr_t)act->sa_sigaction
                                                : (uintptr_t)act->sa_handler;
    atomic_store_explicit(&a->handler, h, memory_order_relaxed);
    atomic_store_explicit(&a->flags, act->sa_flags, memory_order_relaxed);
    memcpy(&a->mask, &act->sa_mask, sizeof a->mask);
    kml_ix_write_end(a);
    return 0;
}

/* Forget a module's actions (it is unloaded, or crashed): its slot is free for another. */
void kml_interpose_forget(uint64_t module_id) {
    struct kml_ix_slot *s = kml_ix_find(module_id + 1);
    if (s == NULL)
        return;
    for (int i = 0; i < KML_NSIGNALS; i++) {
        struct kml_ix_action *a = &s->act[i];
        int locked = kml_ix_write_begin(a);
        atomic_store_explicit(&a->handler, 0, memory_order_relaxed);
        atomic_store_explicit(&a->flags, 0, memory_order_relaxed);
        sigemptyset(&a->mask);
        if (locked)
            kml_ix_write_end(a);
    }
    atomic_store_explicit(&s->key, 0, memory_order_release);
}

/* ------------------------------------------------------------------------------------------ */
/* Running a module's own handler (signal context).                                            */
/* ------------------------------------------------------------------------------------------ */

/*
 * A handler that returns without curing the fault would run for ever: the instruction faults
 * again. After this many identical faults in a row (same signal, PC and address) on one thread,
 * the guard recovers instead. Per-thread, initial-exec TLS (one %fs-relative access, no
 * __tls_get_addr: async-signal-safe, as in guard.c).
 */
#define KML_IX_MAX_REPEATS 64
static __thread struct {
    int signo;
    uint64_t pc;
    uint64_t addr;
    int repeats;
} kml_ix_last __attribute__((tls_model("initial-exec")));

int kml_module_handler(uint64_t module_id, int signo, siginfo_t *si, void *uc) {
    int i = kml_ix_index(signo);
    if (i < 0)
        return 0;
    struct kml_ix_slot *s = kml_ix_find(module_id + 1);
    if (s == NULL)
        return 0;
    uintptr_t h = 0;
    int flags = 0;
    if (!kml_ix_read(&s->act[i], &h, &flags, NULL))
        return 0;
    /* The slot may have been forgotten and reused while we read: then it is not this
     * module's action. */
    if (atomic_load_explicit(&s->key, memory_order_acquire) != module_id + 1)
        return 0;
    if (h == (uintptr_t)SIG_DFL || h == (uintptr_t)SIG_IGN)
        return 0;

    uint64_t pc = 0, sp = 0;
    kml_context_regs(uc, &pc, &sp);
    uint64_t addr = (uint64_t)(uintptr_t)si->si_addr;
    if (kml_ix_last.signo == signo && kml_ix_last.pc == pc && kml_ix_last.addr == addr) {
        if (++kml_ix_last.repeats >= KML_IX_MAX_REPEATS) {
            kml_ix_last.repeats = 0;
            kml_ix_last.signo = 0;
            return 0;
        }
    } else {
        kml_ix_last.signo = signo;
        kml_ix_last.pc = pc;
        kml_ix_last.addr = addr;
        kml_ix_last.repeats = 0;
    }

    if (flags & SA_SIGINFO)
        ((void (*)(int, siginfo_t *, void *))h)(signo, si, uc);
    else
        ((void (*)(int))h)(signo);
    /* abort() does not survive a handler that returns: glibc then resets SIGABRT to SIG_DFL
     * process-wide and raises it again, which would kill the host. The guard recovers. */
    if (signo == SIGABRT)
        return 0;
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* The interposers (normal context, called from module code).                                  */
/* ------------------------------------------------------------------------------------------ */

/* kmodlike's own real-time signals, once installed: the deadline's interrupt signal and the
 * stack sampling signal. A module may not take them (its handler would receive the watchdog's
 * requests, and deadlines would stop working): changing their action fails with EINVAL. */
static int kml_ix_reserved(int signo) {
    return signo != 0 && (signo == kml_interrupt_signo() || signo == kml_sample_signal());
}

static int kml_ix_sigaction(int signo, const struct sigaction *act, struct sigaction *old) {
    int i = kml_ix_index(signo);
    if (i < 0 && act != NULL && kml_ix_reserved(signo)) {
        if (old != NULL)
            sigaction(signo, NULL, old);
        errno = EINVAL;
        return -1;
    }
    if (i < 0)
        return sigaction(signo, act, old);
    return kml_ix_set(kml_ix_caller(__builtin_return_address(0)), i, act, old);
}

/* signal() and its variants for a fatal signal: record handler with flags, return the
 * previous handler. */
static sighandler_t kml_ix_signal_as(void *ra, int i, sighandler_t handler, int flags) {
    struct sigaction act, old;
    memset(&act, 0, sizeof act);
    act.sa_handler = handler;
    act.sa_flags = flags;
    sigemptyset(&act.sa_mask);
    if (kml_ix_set(kml_ix_caller(ra), i, &act, &old) != 0)
        return SIG_ERR;
    return (old.sa_flags & SA_SIGINFO) ? (sighandler_t)(uintptr_t)old.sa_sigaction
                                       : old.sa_handler;
}

static sighandler_t kml_ix_signal(int signo, sighandler_t handler) {
    int i = kml_ix_index(signo);
    if (i < 0 && kml_ix_reserved(signo)) {
        errno = EINVAL;
        return SIG_ERR;
    }
    if (i < 0)
        return signal(signo, handler);
    return kml_ix_signal_as(__builtin_return_address(0), i, handler, SA_RESTART);
}

static sighandler_t kml_ix_sysv_signal(int signo, sighandler_t handler) {
    int i = kml_ix_index(signo);
    if (i < 0 && kml_ix_reserved(signo)) {
        errno = EINVAL;
        return SIG_ERR;
    }
    if (i < 0)
        return sysv_signal(signo, handler);
    return kml_ix_signal_as(__builtin_return_address(0), i, handler, SA_RESETHAND | SA_NODEFER);
}

static sighandler_t kml_ix_sigset(int signo, sighandler_t disp) {
    int i = kml_ix_index(signo);
    if (i < 0 && kml_ix_reserved(signo) && disp != SIG_HOLD) {
        errno = EINVAL;
        return SIG_ERR;
    }
    if (i < 0) {
        /* The module imports it: pass its call on, deprecated or not. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wdeprecated-declarations"
        return sigset(signo, disp);
#pragma GCC diagnostic pop
    }
    if (disp == SIG_HOLD) {
        /* Blocking a fatal signal is refused (as by the mask interposers): nothing changes. */
        struct sigaction old;
        kml_ix_set(kml_ix_caller(__builtin_return_address(0)), i, NULL, &old);
        return old.sa_handler;
    }
    return kml_ix_signal_as(__builtin_return_address(0), i, disp, 0);
}

/* The mask the module asked for, minus the six fatal signals. */
static const sigset_t *kml_ix_mask(int how, const sigset_t *set, sigset_t *copy) {
    if (set == NULL)
        return NULL;
    /* A guarded call's mask is put back when the call ends. */
    kml_guard_mask_changing();
    if (how != SIG_BLOCK && how != SIG_SETMASK)
        return set;
    memcpy(copy, set, sizeof *copy);
    for (int i = 0; i < KML_NSIGNALS; i++)
        sigdelset(copy, kml_signals[i]);
    return copy;
}

static int kml_ix_sigprocmask(int how, const sigset_t *set, sigset_t *old) {
    sigset_t copy;
    return sigprocmask(how, kml_ix_mask(how, set, &copy), old);
}

static int kml_ix_pthread_sigmask(int how, const sigset_t *set, sigset_t *old) {
    sigset_t copy;
    return pthread_sigmask(how, kml_ix_mask(how, set, &copy), old);
}

/* --- exit ------------------------------------------------------------------------------------ */

enum { KML_EXIT_EXIT = 1, KML_EXIT_UNDERSCORE = 2, KML_EXIT_UNDERSCORE_C = 3, KML_EXIT_QUICK = 4 };

/* Contain exit() called by module code: end the guarded call, or park the module thread. Returns
 * only when there is nothing to contain it in (then the caller really exits). */
static void kml_ix_contain_exit(void *ra, int function, int status) {
    uint64_t id;
    if (kml_guard_top(&id)) {
        kml_guard_abandon_exit(status, function, (uint64_t)(uintptr_t)ra);
    }
    /* No guard: a thread the module started ends like a crashed one (parked for good, the
     * module marked crashed by the service thread). The main thread, and a caller no module is
     * known for, exit as asked: as without kmodlike. */
    uint64_t key = kml_text_key_at((uint64_t)(uintptr_t)ra);
    pid_t tid = (pid_t)syscall(SYS_gettid);
    if (key == 0 || tid == getpid())
        return;
    struct kml_raw_crash c;
    memset(&c, 0, sizeof c);
    c.cause = KML_CAUSE_EXIT;
    c.code = status;
    c.addr = (uint64_t)function; /* for an exit, which function (KML_EXIT_*) */
    c.pc = (uint64_t)(uintptr_t)ra;
    c.module_id = key - 1;
    c.tid = tid;
    c.on_module_thread = 1;
    struct timespec ts = {0, 0};
    clock_gettime(CLOCK_REALTIME, &ts);
    c.time_sec = ts.tv_sec;
    c.time_nsec = ts.tv_nsec;
    kml_park(&c);
}

static void kml_ix_exit(int status) {
    kml_ix_contain_exit(__builtin_return_address(0), KML_EXIT_EXIT, status);
    exit(status);
}

static void kml_ix__exit(int status) {
    kml_ix_contain_exit(__builtin_return_address(0), KML_EXIT_UNDERSCORE, status);
    _exit(status);
}

static void kml_ix__Exit(int status) {
    kml_ix_contain_exit(__builtin_return_address(0), KML_EXIT_UNDERSCORE_C, status);
    _Exit(status);
}

static void kml_ix_quick_exit(int status) {
    kml_ix_contain_exit(__builtin_return_address(0), KML_EXIT_QUICK, status);
    quick_exit(status);
}

/* ------------------------------------------------------------------------------------------ */
/* The table the loader patches from (order of facts.rs INTERPOSED_IMPORTS).                   */
/* ------------------------------------------------------------------------------------------ */

static const struct {
    const char *name;
    void *fn;
} kml_ix_table[] = {
    {"sigaction", (void *)kml_ix_sigaction},
    {"signal", (void *)kml_ix_signal},
    {"bsd_signal", (void *)kml_ix_signal},
    {"sysv_signal", (void *)kml_ix_sysv_signal},
    {"__sysv_signal", (void *)kml_ix_sysv_signal},
    {"sigset", (void *)kml_ix_sigset},
    {"sigprocmask", (void *)kml_ix_sigprocmask},
    {"pthread_sigmask", (void *)kml_ix_pthread_sigmask},
    {"exit", (void *)kml_ix_exit},
    {"_exit", (void *)kml_ix__exit},
    {"_Exit", (void *)kml_ix__Exit},
    {"quick_exit", (void *)kml_ix_quick_exit},
};

#define KML_IX_COUNT (sizeof kml_ix_table / sizeof kml_ix_table[0])

/* The interposer for import i, or NULL past the end; *name gets its import's name. */
void *kml_interposer(uint32_t i, const char **name) {
    if (i >= KML_IX_COUNT)
        return NULL;
    *name = kml_ix_table[i].name;
    return kml_ix_table[i].fn;
}

/* ------------------------------------------------------------------------------------------ */
/* Taking the guard's handlers back (normal context).                                          */
/* ------------------------------------------------------------------------------------------ */

/* The guard's own actions, read right after kml_install(): what kml_interpose_reclaim() puts
 * back. Written once (Once in mod.rs) before any module is loaded. */
static struct sigaction kml_ix_guard_actions[KML_NSIGNALS];
static atomic_int kml_ix_captured;

void kml_interpose_capture_guard(void) {
    for (int i = 0; i < KML_NSIGNALS; i++)
        if (sigaction(kml_signals[i], NULL, &kml_ix_guard_actions[i]) != 0)
            return;
    atomic_store_explicit(&kml_ix_captured, 1, memory_order_release);
}

/* One sigaction query per fatal signal: where the guard's handler is no longer installed (a
 * raw rt_sigaction system call, or a library the module loaded itself), put it back. Writes
 * the signals put back into restored (room for KML_NSIGNALS) and returns how many. */
int kml_interpose_reclaim(int *restored) {
    if (!atomic_load_explicit(&kml_ix_captured, memory_order_acquire))
        return 0;
    int n = 0;
    for (int i = 0; i < KML_NSIGNALS; i++) {
        struct sigaction cur;
        if (sigaction(kml_signals[i], NULL, &cur) != 0)
            continue;
        const struct sigaction *ours = &kml_ix_guard_actions[i];
        if ((cur.sa_flags & SA_SIGINFO) && cur.sa_sigaction == ours->sa_sigaction)
            continue;
        if (sigaction(kml_signals[i], ours, NULL) == 0)
            restored[n++] = kml_signals[i];
    }
    return n;
}
