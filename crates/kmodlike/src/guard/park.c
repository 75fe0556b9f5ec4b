/*
 * park.c: crashes on threads without a guard (threads a module started). The handler parks the
 * thread for good and hands the crash to the Rust service thread through a preallocated slot and
 * a pipe. Everything reachable from kml_park() is async-signal-safe.
 */
#define _GNU_SOURCE
#include "shim.h"

/* Write end of the pipe that wakes the service thread (non-blocking), or -1. */
static atomic_int kml_pipe_fd = -1;
/* Its read end (the service thread's), or -1: kept so a fork child can close its copy. */
static atomic_int kml_pipe_read_fd = -1;

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

/*
 * A fault on a thread without a guard, attributed to a module: hand the crash to the service
 * thread and never return. The thread must not go back into module code (the fault would
 * repeat) and cannot be unwound (we do not know its frames), so it sleeps forever with every
 * signal blocked; its stack stays allocated. Async-signal-safe: atomics, write(2),
 * pthread_sigmask, sigfillset and pause are all listed in signal-safety(7).
 */
__attribute__((noreturn)) void kml_park(const struct kml_raw_crash *c) {
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

/* fork() child: forget the parent's pipe (so a crash in the child never wakes the parent's
 * service thread), its reports in flight and its parked threads (they do not exist here).
 * Async-signal-safe: close(2) and atomic stores. */
void kml_park_atfork_child(void) {
    int w = atomic_exchange_explicit(&kml_pipe_fd, -1, memory_order_acq_rel);
    int r = atomic_exchange_explicit(&kml_pipe_read_fd, -1, memory_order_acq_rel);
    if (w >= 0)
        close(w);
    if (r >= 0)
        close(r);
    for (int i = 0; i < KML_THREAD_SLOTS; i++) {
        atomic_store_explicit(&kml_thread_slots[i].state, KML_SLOT_FREE, memory_order_relaxed);
        atomic_store_explicit(&kml_parked[i], 0, memory_order_relaxed);
    }
    atomic_store_explicit(&kml_thread_crashes_dropped, 0, memory_order_relaxed);
}
