/*
 * interrupt.c: the guard's interrupt signal, which ends a guarded call past its deadline
 * (deadline.rs and asking.rs have the whole picture; guard.c's kml_guard_interrupt does the
 * work on the interrupted thread).
 *
 * The watchdog (or kml_interrupt_self, for an interrupt held while a host callback ran) sends
 * the signal with rt_tgsigqueueinfo(SI_QUEUE) carrying KML_INTERRUPT_MAGIC in si_value, from
 * this process: the handler tells its own requests from anything else sent with the same
 * signal, which goes to the handler that was installed before ours.
 *
 * Installed with SA_SIGINFO | SA_ONSTACK and without SA_RESTART: a module blocked in read(),
 * sleep() or poll() is woken (the system call fails with EINTR, or the handler runs right at
 * its return), so the handler can end the call. The kernel blocks the signal while its handler
 * runs; the handler leaves by siglongjmp with the interrupted code's mask, which does not
 * block it.
 */
#define _GNU_SOURCE
#include "shim.h"

#define KML_INTERRUPT_MAGIC 0x6B6D696E7472ull /* "kmintr"; + 1: insist */

/* The signal and the action it replaced: written once, before our handler is installed,
 * never again (the handler reads them without synchronisation). */
static int kml_int_signo;
static struct sigaction kml_int_prev;

/* CLOCK_MONOTONIC in nanoseconds: the clock of every deadline. clock_gettime is
 * async-signal-safe. */
uint64_t kml_monotonic_ns(void) {
    struct timespec ts = {0, 0};
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

int kml_interrupt_signo(void) { return kml_int_signo; }

/*
 * The handler. Async-signal-safe: errno saved and restored; getpid(); kml_guard_interrupt
 * (guard.c: as async-signal-safe as the crash handler); for a signal that is not ours, the
 * previous handler (already entitled to run in signal context), sigaction() and raise().
 */
static void kml_interrupt_handler(int signo, siginfo_t *si, void *uc) {
    int saved_errno = errno;
    uint64_t v = (uint64_t)(uintptr_t)si->si_value.sival_ptr;
    if (si->si_code == SI_QUEUE && si->si_pid == getpid() && (v & ~1ull) == KML_INTERRUPT_MAGIC) {
        /* May not return: it leaves the call as a crash does. */
        kml_guard_interrupt(signo, si, uc, (int)(v & 1));
        errno = saved_errno;
        return;
    }
    kml_chain_rt_signal(&kml_int_prev, signo, si, uc, saved_errno);
}

/* Install the interrupt handler for signo (normal context, once: interrupt_signal.rs
 * serialises it). 0, or the errno of the sigaction that failed. */
int kml_interrupt_install(int signo) {
    if (sigaction(signo, NULL, &kml_int_prev) != 0)
        return errno;
    kml_int_signo = signo;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = kml_interrupt_handler;
    /* No SA_RESTART: a blocking system call is interrupted. SA_ONSTACK: a thread deep in its
     * stack still has room. */
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK;
    sigemptyset(&sa.sa_mask);
    if (sigaction(signo, &sa, NULL) != 0)
        return errno;
    kml_sample_block_during(signo);
    return 0;
}

int kml_interrupt_send(int32_t tid, int insist) {
    if (kml_int_signo == 0) {
        errno = ENOTSUP;
        return -1;
    }
    siginfo_t info;
    memset(&info, 0, sizeof info);
    info.si_signo = kml_int_signo;
    info.si_code = SI_QUEUE;
    info.si_pid = getpid();
    info.si_uid = getuid();
    info.si_value.sival_ptr = (void *)(uintptr_t)(KML_INTERRUPT_MAGIC + (insist ? 1 : 0));
    return syscall(SYS_rt_tgsigqueueinfo, getpid(), tid, kml_int_signo, &info) == 0 ? 0 : -1;
}

/* Async-signal-safe: getpid, gettid, rt_tgsigqueueinfo. Insists: the thread is in the guard's
 * own code, returning from a host callback to the module, where no library lock is held. */
void kml_interrupt_self(void) {
    int saved_errno = errno;
    kml_interrupt_send((int32_t)syscall(SYS_gettid), 1);
    errno = saved_errno;
}
