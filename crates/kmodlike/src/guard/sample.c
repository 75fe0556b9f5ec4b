/*
 * sample.c: reading another thread's PC and SP with a signal (threads.rs: is any thread running
 * in a module's code at unload?).
 */
#define _GNU_SOURCE
#include "shim.h"

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
    kml_chain_rt_signal(&kml_sample_prev, signo, si, uc, saved_errno);
}

int kml_sample_signal(void) { return kml_sample_signo; }

/* The signal the sampling handler blocks while it runs (interrupt.c's), or 0. Written by
 * normal-context installers only. */
static int kml_sample_blocks;

void kml_sample_block_during(int signo) {
    kml_sample_blocks = signo;
    if (kml_sample_signo == 0)
        return;
    struct sigaction sa;
    if (sigaction(kml_sample_signo, NULL, &sa) != 0 || sa.sa_sigaction != kml_sample_handler)
        return;
    sigaddset(&sa.sa_mask, signo);
    sigaction(kml_sample_signo, &sa, NULL);
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
    if (kml_sample_blocks != 0)
        sigaddset(&sa.sa_mask, kml_sample_blocks);
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

/* fork() child: the parent's sampling requests target threads that do not exist here. */
void kml_sample_atfork_child(void) {
    for (int i = 0; i < KML_SAMPLE_SLOTS; i++) {
        atomic_store_explicit(&kml_samples[i].req, 0, memory_order_relaxed);
        atomic_store_explicit(&kml_samples[i].done, 0, memory_order_relaxed);
        kml_sample_poisoned[i] = 0;
    }
}
