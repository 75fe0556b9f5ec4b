/*
 * fast.c: the guarded call's per-thread record, its crash path and the drain of calls in flight
 * (the C half of the fast entry, whose instructions are in entry.rs; see mod.rs for the whole
 * picture).
 *
 * Each thread that calls into a module gets a record (heap, registered in a list, freed at thread
 * exit) reached through one initial-exec TLS pointer, kml_self. A record holds a stack of slots,
 * one per guarded call in progress on the thread: {module, frame, landing} written by the entry
 * with plain stores. Only the owning thread writes its slots; an unloader on another thread reads
 * slot.module after membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED), which makes every running
 * thread of the process execute a full barrier: a caller's slot store either is seen by the scan,
 * or comes after the barrier, and then the caller's next load (the module's state) sees the state
 * the unloader wrote before it. liburcu's "membarrier" flavour uses the same pairing.
 *
 * The crash path (kml_fast_resume) builds a glibc sigjmp_buf that resumes the entry's landing pad
 * with rsp = slot.frame, and calls glibc's own siglongjmp: glibc runs its cleanup regions
 * (_longjmp_unwind: the stdio lock of a crash inside printf is released) and restores the signal
 * mask. The buffer's layout and pointer mangling are glibc's private business: kml_fast_install()
 * checks them against what glibc's own __sigsetjmp stores, and where they differ (another libc,
 * another glibc, another architecture) the fast entry stays off and every call takes the per-call
 * sigsetjmp path of guard.c.
 */
#define _GNU_SOURCE
#include "shim.h"

#include <linux/membarrier.h>
#include <stdlib.h>
#include <sys/mman.h>

__thread struct kml_thread *kml_self __attribute__((tls_model("initial-exec")));

_Static_assert(offsetof(struct kml_thread, slot) == 64, "entry.rs: the entry's layout");
_Static_assert(sizeof(struct kml_slot) == 128, "entry.rs: the entry's layout");
_Static_assert(offsetof(struct kml_slot, rbp) == 32, "entry.rs: the inline entry's layout");
_Static_assert(offsetof(struct kml_slot, r15) == 72, "entry.rs: the inline entry's layout");
_Static_assert(offsetof(struct kml_slot, mask_saved) == 24, "entry.rs: the entry's layout");
_Static_assert(offsetof(struct kml_gmod, calls) == 16, "entry.rs: the entry's layout");
_Static_assert(offsetof(struct kml_slot, deadline) == 80, "entry.rs: the entry's layout");
_Static_assert(offsetof(struct kml_slot, soft) == 88, "entry.rs: the entry's layout");
_Static_assert(offsetof(struct kml_slot, start) == 96, "entry.rs: the entry's layout");
_Static_assert(offsetof(struct kml_slot, func) == 104, "entry.rs: the entry's layout");
_Static_assert(sizeof(struct kml_deadline) == 32, "deadline.rs: struct Deadline");
_Static_assert(offsetof(struct kml_thread, pending) == 40, "entry.rs: the entry's layout");

/* Every thread record, for the drain's scan; under kml_threads_lock. */
static pthread_mutex_t kml_threads_lock = PTHREAD_MUTEX_INITIALIZER;
static struct kml_thread *kml_threads;
static unsigned kml_nthreads;
static pthread_key_t kml_thread_key;
static pthread_once_t kml_thread_key_once = PTHREAD_ONCE_INIT;
static int kml_thread_key_ok;
/* Written once by kml_fast_install() (before any thread registers), read-only afterwards. */
static int kml_fast_on;

#if defined(__x86_64__) && defined(__GLIBC__)
/* glibc's x86_64 jmp_buf slots (sysdeps/x86_64/jmpbuf-offsets.h) and PTR_MANGLE: xor with
 * tcbhead_t.pointer_guard (%fs:0x30), then rotate left by 0x11. Checked at start-up. */
enum { JB_RBX = 0, JB_RBP = 1, JB_R12 = 2, JB_R13 = 3, JB_R14 = 4, JB_R15 = 5, JB_RSP = 6, JB_PC = 7 };

static inline uintptr_t kml_pointer_guard(void) {
    uintptr_t g;
    __asm__ volatile("mov %%fs:0x30, %0" : "=r"(g));
    return g;
}

static inline uintptr_t kml_mangle(uintptr_t v, uintptr_t g) {
    v ^= g;
    return (v << 0x11) | (v >> (64 - 0x11));
}

extern void kml_probe_sigsetjmp(sigjmp_buf env, uintptr_t out[3]);

/* 1 when glibc's __sigsetjmp stores, mangled as we would mangle them, the stack pointer, return
 * address and frame pointer we expect: the layout the crash path fabricates is glibc's. */
static int kml_jmpbuf_selftest(void) {
    sigjmp_buf env;
    uintptr_t out[3] = {0, 0, 0};
    memset(env, 0, sizeof env);
    kml_probe_sigsetjmp(env, out);
    uintptr_t g = kml_pointer_guard();
    return env[0].__jmpbuf[JB_RSP] == (long)kml_mangle(out[0], g) &&
           env[0].__jmpbuf[JB_PC] == (long)kml_mangle(out[1], g) &&
           env[0].__jmpbuf[JB_RBP] == (long)kml_mangle(out[2], g) && env[0].__mask_was_saved == 0;
}
#endif

static void kml_thread_exit(void *p);

static void kml_thread_key_make(void) {
    kml_thread_key_ok = pthread_key_create(&kml_thread_key, kml_thread_exit) == 0;
}

/* Normal context, once (mod.rs's install, before the handlers are installed). 1 when the fast
 * entry is on; 0 when every call must take guard.c's sigsetjmp path (and why in *why). */
int kml_fast_install(const char **why) {
#if defined(__x86_64__) && defined(__GLIBC__)
    if (getenv("KMODLIKE_GUARD_SIGSETJMP") != NULL) {
        *why = "KMODLIKE_GUARD_SIGSETJMP is set";
        return 0;
    }
    if (!kml_jmpbuf_selftest()) {
        *why = "this C library's sigjmp_buf is not the layout the fast entry fabricates";
        return 0;
    }
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) != 0) {
        *why = "membarrier(MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED) failed";
        return 0;
    }
    pthread_once(&kml_thread_key_once, kml_thread_key_make);
    if (!kml_thread_key_ok) {
        *why = "no pthread key left for the thread records";
        return 0;
    }
    kml_fast_on = 1;
    return 1;
#else
    *why = "the fast entry is written for x86_64 with glibc";
    return 0;
#endif
}

/* A buffer for the handler's copy of a crashed stack: an anonymous mapping, so its pages cost
 * nothing until a crash writes them (a thread that never crashes keeps 64 KiB of address space,
 * not of memory). NULL when it cannot be had. Normal context. */
uint8_t *kml_stack_copy_alloc(void) {
    void *p = mmap(NULL, KML_STACK_COPY, PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    return p == MAP_FAILED ? NULL : p;
}

void kml_stack_copy_free(uint8_t *p) {
    if (p != NULL)
        munmap(p, KML_STACK_COPY);
}

/* Normal context: give this thread its record (first guarded call on it), or re-arm it (the
 * first call after fork()). 0 when the entry should be tried again; -1 when the record was
 * armed already (guards nest deeper than its slots); or an errno. */
int kml_fast_register_thread(void) {
    if (!kml_fast_on)
        return ENOTSUP;
    if (kml_self != NULL) {
        if (kml_self->limit != 0)
            return -1;
        kml_self->limit = KML_DEPTH;
        return 0;
    }
    if (kml_thread_record() == NULL)
        return ENOMEM;
    kml_self->limit = KML_DEPTH;
    return 0;
}

/* This thread's record, made and registered (not armed for the fast entry: limit 0) when it
 * has none. NULL when it cannot be had. Normal context. */
struct kml_thread *kml_thread_record(void) {
    if (kml_self != NULL)
        return kml_self;
    pthread_once(&kml_thread_key_once, kml_thread_key_make);
    if (!kml_thread_key_ok)
        return NULL;
    struct kml_thread *t = calloc(1, sizeof *t);
    if (t == NULL)
        return NULL;
    t->tid = (int32_t)syscall(SYS_gettid);
    /* The handler's copy of a crashed stack goes here (it allocates nothing itself). Without
     * it a crash is still recovered, with no backtrace. */
    t->stack_copy = kml_stack_copy_alloc();
    pthread_mutex_lock(&kml_threads_lock);
    t->next = kml_threads;
    if (kml_threads != NULL)
        kml_threads->prev = t;
    kml_threads = t;
    kml_nthreads++;
    pthread_mutex_unlock(&kml_threads_lock);
    pthread_setspecific(kml_thread_key, t);
    kml_self = t;
    return t;
}

/* Thread exit (pthread key destructor): unlink and free the record. No guarded call runs on
 * this thread any more (a later one, from another destructor, registers again). */
static void kml_thread_exit(void *p) {
    struct kml_thread *t = p;
    if (kml_self == t)
        kml_self = NULL;
    pthread_mutex_lock(&kml_threads_lock);
    if (t->prev != NULL)
        t->prev->next = t->next;
    else
        kml_threads = t->next;
    if (t->next != NULL)
        t->next->prev = t->prev;
    kml_nthreads--;
    pthread_mutex_unlock(&kml_threads_lock);
    kml_stack_copy_free(t->stack_copy);
    free(t);
}

/* A page whose protection kml_barrier changes when membarrier is refused. */
static void *kml_barrier_page;

/*
 * A full memory barrier on every running thread of the process. membarrier's private expedited
 * command, registered at install; a fork child's address space is a new one, whose registration
 * is redone here if the kernel asks for it (EPERM). Where membarrier is refused altogether (a
 * seccomp filter after install), changing the protection of a page this process wrote makes the
 * kernel shoot down its TLB entry on every CPU that runs one of our threads, with an
 * interrupt: the barrier older userspace RCU implementations used. Caller holds
 * kml_threads_lock.
 */
static void kml_barrier(void) {
    if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        return;
    if (errno == EPERM &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0 &&
        syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) == 0)
        return;
    long page = sysconf(_SC_PAGESIZE);
    if (kml_barrier_page == NULL) {
        void *p = mmap(NULL, (size_t)page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
                       -1, 0);
        if (p == MAP_FAILED)
            return;
        kml_barrier_page = p;
    }
    *(volatile char *)kml_barrier_page = 1;
    mprotect(kml_barrier_page, (size_t)page, PROT_READ);
    mprotect(kml_barrier_page, (size_t)page, PROT_READ | PROT_WRITE);
}

/*
 * Guarded calls of the fast entry now running in m, on every thread. The caller has already
 * stored the module's new state (not live); see the top of this file for why the barrier makes
 * the count exact: a call not counted here will see that state and not run.
 */
uint32_t kml_fast_calls_in(const struct kml_gmod *m) {
    if (!kml_fast_on)
        return 0;
    pthread_mutex_lock(&kml_threads_lock);
    /* Alone (only this thread has a record, or none has): its own stores are visible to it. */
    int alone = kml_nthreads == 0 || (kml_nthreads == 1 && kml_self != NULL);
    if (!alone)
        kml_barrier();
    uint32_t n = 0;
    for (struct kml_thread *t = kml_threads; t != NULL; t = t->next)
        for (int i = 0; i < KML_DEPTH; i++)
            if (atomic_load_explicit(&t->slot[i].module, memory_order_relaxed) == m)
                n++;
    pthread_mutex_unlock(&kml_threads_lock);
    return n;
}

/* A plain store: the caller then reads the watchdog's "earliest" word, and the store-load
 * order that needs is the watchdog's to enforce (kml_calls_scan's barrier, after the watchdog
 * reset the word), so a call with a deadline pays no fence. */
void kml_deadline_pending(uint64_t at) {
    struct kml_thread *t = kml_thread_record();
    if (t != NULL)
        atomic_store_explicit(&t->pending, at, memory_order_relaxed);
}

/* One guarded call in flight, as kml_calls_scan reports it (struct CInFlight in deadline.rs). */
struct kml_inflight {
    int32_t tid;
    int32_t index; /* its slot, or -1: the thread's innermost sigsetjmp call with a deadline */
    uint32_t suspended; /* host callbacks running on the thread */
    uint32_t pad;
    uint64_t module_id;
    uint64_t deadline, soft, start, func;
    uint64_t waited_pc, waits; /* the thread's */
};

/* Every guarded call in flight that the scan can see: the fast entry's slots, and the
 * published sigsetjmp calls with a deadline. Up to cap into out; returns how many there are.
 * Normal context. */
uint32_t kml_calls_scan(struct kml_inflight *out, uint32_t cap) {
    uint32_t n = 0;
    pthread_mutex_lock(&kml_threads_lock);
    /* Every thread's stores before this are visible to the scan: with the watchdog's reset of
     * its "earliest" word before the call, a caller that stored its pending deadline and then
     * read an old "earliest" is seen here (the membarrier pairing kml_fast_calls_in uses), and
     * one that read the reset word wakes the watchdog itself. */
    kml_barrier();
    for (struct kml_thread *t = kml_threads; t != NULL; t = t->next) {
        uint32_t susp = atomic_load_explicit(&t->suspended, memory_order_relaxed);
        uint64_t waited = atomic_load_explicit(&t->waited_pc, memory_order_relaxed);
        uint64_t waits = atomic_load_explicit(&t->waits, memory_order_acquire);
        for (int i = 0; i < KML_DEPTH; i++) {
            struct kml_slot *s = &t->slot[i];
            struct kml_gmod *m = atomic_load_explicit(&s->module, memory_order_acquire);
            if (m == NULL)
                continue;
            if (n < cap) {
                struct kml_inflight *f = &out[n];
                uint64_t dl = atomic_load_explicit(&s->deadline, memory_order_relaxed);
                *f = (struct kml_inflight){t->tid, i, susp, 0, m->id, dl, 0, 0, 0, waited, waits};
                if (dl != 0) {
                    f->soft = atomic_load_explicit(&s->soft, memory_order_relaxed);
                    f->start = s->start;
                    f->func = s->func;
                }
            }
            n++;
        }
        if (atomic_load_explicit(&t->rec_owner, memory_order_acquire) != NULL) {
            if (n < cap)
                out[n] = (struct kml_inflight){
                    t->tid, -1, susp, 0, t->rec_module_id,
                    atomic_load_explicit(&t->rec_deadline, memory_order_relaxed),
                    atomic_load_explicit(&t->rec_soft, memory_order_relaxed), t->rec_start,
                    t->rec_func, waited, waits};
            n++;
        }
        /* A deadline registered whose call may not be in its slot yet (index -2). */
        uint64_t pending = atomic_load_explicit(&t->pending, memory_order_seq_cst);
        if (pending != 0) {
            if (n < cap)
                out[n] = (struct kml_inflight){t->tid, -2, susp, 0, 0, pending, 0, 0, 0, 0, 0};
            n++;
        }
    }
    pthread_mutex_unlock(&kml_threads_lock);
    return n;
}

static struct kml_thread *kml_thread_of(int32_t tid) {
    for (struct kml_thread *t = kml_threads; t != NULL; t = t->next)
        if (t->tid == tid)
            return t;
    return NULL;
}

/*
 * Interrupt the call kml_calls_scan reported as (tid, index) with deadline expect, if it is
 * still there: with KML_INTERRUPT_NOW in how, its deadline becomes 1 (passed) first; with
 * KML_INTERRUPT_INSIST, the handler ends the call even in library code. A thread in a host
 * callback gets the interrupt held (delivered when the callback returns, guard.c's
 * kml_resume); any other is sent the interrupt signal. Returns 1 sent, 2 held, 0 the call is
 * gone (its deadline changed), -1 the signal could not be sent (errno). Normal context.
 */
int kml_interrupt_call(int32_t tid, int32_t index, uint64_t expect, int how) {
    int force = how & KML_INTERRUPT_NOW, insist = (how & KML_INTERRUPT_INSIST) != 0;
    int rc = 0;
    pthread_mutex_lock(&kml_threads_lock);
    struct kml_thread *t = kml_thread_of(tid);
    if (t == NULL || index >= KML_DEPTH)
        goto out;
    _Atomic uint64_t *dl;
    if (index < 0) {
        if (atomic_load_explicit(&t->rec_owner, memory_order_acquire) == NULL)
            goto out;
        dl = &t->rec_deadline;
    } else {
        if (atomic_load_explicit(&t->slot[index].module, memory_order_acquire) == NULL)
            goto out;
        dl = &t->slot[index].deadline;
    }
    uint64_t e = expect;
    if (force) {
        /* 1: now, and the call had no deadline (its start is unknown); 2: now, it had one. */
        uint64_t now = expect == 0 ? 1 : 2;
        if (!atomic_compare_exchange_strong_explicit(dl, &e, now, memory_order_seq_cst,
                                                     memory_order_relaxed))
            goto out;
    } else if (atomic_load_explicit(dl, memory_order_relaxed) != expect) {
        goto out;
    }
    if (atomic_load_explicit(&t->suspended, memory_order_seq_cst) != 0) {
        atomic_store_explicit(&t->interrupt_pending, 1, memory_order_seq_cst);
        /* Still in the callback: its return delivers it. Else it returned meanwhile and may
         * have missed the flag: send the signal after all (the handler checks the deadline). */
        if (atomic_load_explicit(&t->suspended, memory_order_seq_cst) != 0) {
            rc = 2;
            goto out;
        }
    }
    rc = kml_interrupt_send(tid, insist) == 0 ? 1 : -1;
out:
    pthread_mutex_unlock(&kml_threads_lock);
    return rc;
}

/* Claim the soft deadline soft of the call (tid, index): 1 when this caller is the one to
 * sample it (it is set to 0), else 0. Normal context. */
int kml_claim_soft(int32_t tid, int32_t index, uint64_t soft) {
    int rc = 0;
    pthread_mutex_lock(&kml_threads_lock);
    struct kml_thread *t = kml_thread_of(tid);
    if (t != NULL && index < KML_DEPTH) {
        _Atomic uint64_t *w = index < 0 ? &t->rec_soft : &t->slot[index].soft;
        uint64_t e = soft;
        rc = atomic_compare_exchange_strong_explicit(w, &e, 0, memory_order_seq_cst,
                                                     memory_order_relaxed);
    }
    pthread_mutex_unlock(&kml_threads_lock);
    return rc;
}

/* The crash the entry returned 1 for, on this thread. */
void kml_fast_take_crash(struct kml_raw_crash *out) {
    struct kml_thread *t = kml_self;
    if (t != NULL)
        memcpy(out, &t->crash, sizeof *out);
}

/* Called by the entry when the module changed the signal mask during the call (interpose.c):
 * put the mask from before the call back, and hand the entry's code back. Normal context. */
int kml_fast_restore_mask(struct kml_slot *s, int code) {
    struct kml_thread *t = kml_self;
    size_t i = (size_t)(s - t->slot);
    s->mask_saved = 0;
    pthread_sigmask(SIG_SETMASK, &t->masks[i], NULL);
    return code;
}

/* The innermost guarded call of this thread is a fast slot (rather than one of guard.c's
 * records, which remember the depth they were pushed at)? Async-signal-safe: plain reads of
 * this thread's own state. */
struct kml_slot *kml_fast_innermost(uint32_t records_depth_mark, int have_record) {
    struct kml_thread *t = kml_self;
    if (t == NULL || t->depth == 0 || t->depth > KML_DEPTH)
        return NULL;
    if (have_record && records_depth_mark >= t->depth)
        return NULL;
    return &t->slot[t->depth - 1];
}

void kml_fast_save_mask(struct kml_slot *s) {
    struct kml_thread *t = kml_self;
    size_t i = (size_t)(s - t->slot);
    if (s->mask_saved)
        return;
    if (pthread_sigmask(SIG_SETMASK, NULL, &t->masks[i]) == 0)
        s->mask_saved = 1;
}

/*
 * Resume the innermost fast slot's landing pad, as if its call had returned 1, with the signal
 * mask *mask. From the signal handler (a fault) or normal context (the module called exit).
 * Async-signal-safe: memset and plain stores into a local buffer, then glibc's siglongjmp,
 * which is what every sigsetjmp-based guard does from its handler.
 */
__attribute__((noreturn)) void kml_fast_resume(const sigset_t *mask) {
#if defined(__x86_64__) && defined(__GLIBC__)
    struct kml_thread *t = kml_self;
    struct kml_slot *s = &t->slot[t->depth - 1];
    sigjmp_buf env;
    memset(env, 0, sizeof env);
    uintptr_t g = kml_pointer_guard();
    /* The callee-saved registers the inline entry saved in the slot (the out-of-line entry
     * pops its own at the landing pad, over these). */
    env[0].__jmpbuf[JB_RBX] = (long)s->rbx;
    env[0].__jmpbuf[JB_RBP] = (long)kml_mangle(s->rbp, g);
    env[0].__jmpbuf[JB_R12] = (long)s->r12;
    env[0].__jmpbuf[JB_R13] = (long)s->r13;
    env[0].__jmpbuf[JB_R14] = (long)s->r14;
    env[0].__jmpbuf[JB_R15] = (long)s->r15;
    env[0].__jmpbuf[JB_RSP] = (long)kml_mangle(s->frame, g);
    env[0].__jmpbuf[JB_PC] = (long)kml_mangle(s->landing, g);
    env[0].__mask_was_saved = 1;
    memcpy(&env[0].__saved_mask, mask, sizeof *mask);
    siglongjmp(env, 1);
#else
    (void)mask;
    abort(); /* unreachable: kml_fast_on is never set here */
#endif
}

/* fork(): the child keeps the forking thread's record only (the others' threads do not exist
 * there, and their slots would look like calls in flight for ever). */
void kml_fast_atfork_prepare(void) { pthread_mutex_lock(&kml_threads_lock); }
void kml_fast_atfork_parent(void) { pthread_mutex_unlock(&kml_threads_lock); }
void kml_fast_atfork_child(void) {
    struct kml_thread *self = kml_self;
    /* Disarm the forking thread's record: its next call takes the slow path, which restarts
     * the guard's service thread in the child (mod.rs) and re-arms it. */
    if (self != NULL)
        self->limit = 0;
    /* The child's address space is new: register it for membarrier (a system call). */
    if (kml_fast_on)
        syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0);
    kml_threads = self;
    kml_nthreads = self != NULL;
    if (self != NULL)
        self->next = self->prev = NULL;
    pthread_mutex_unlock(&kml_threads_lock);
}
