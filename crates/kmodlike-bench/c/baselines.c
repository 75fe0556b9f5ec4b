/*
 * baselines.c: what a user would write without kmodlike, linked into the benchmark binary.
 *
 *   - kmlb_naive_guard_call: a crash guard built the naive way, with sigsetjmp(env, 1). Saving
 *     the signal mask costs one rt_sigprocmask system call on every call; kmodlike's guard uses
 *     sigsetjmp(env, 0) and restores the mask only on the (rare) crash path. Only the no-crash
 *     path is measured, so no handler is installed (installing one for SIGSEGV would replace
 *     kmodlike's in the same process).
 *   - kmlb_raise_usr1: a bare signal round trip, raise(SIGUSR1) to a handler that returns: the
 *     floor for any design that turns a signal into an error return.
 *   - kmlb_fault: a function that raises SIGSEGV (a write through NULL), for the guard's own
 *     signal path.
 *   - kmlb_direct_loop / kmlb_guarded_loop: what a C host compiles for n calls of a module
 *     function, directly through a pointer or through an entry such as module_loader_call().
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* ---- the naive guard -------------------------------------------------------------------- */

static __thread sigjmp_buf *kmlb_naive_env;

/* Calls the `void (*)(void)` function `f` (the module's function, as the ctx of a guard). */
void kmlb_call_void(void *f) {
    ((void (*)(void))f)();
}

/* Run fn(ctx) under a naive guard: 0 when fn returned, 1 after a jump back. */
int kmlb_naive_guard_call(void (*fn)(void *), void *ctx) {
    sigjmp_buf env;
    sigjmp_buf *prev = kmlb_naive_env;
    if (sigsetjmp(env, 1) != 0) {
        kmlb_naive_env = prev;
        return 1;
    }
    kmlb_naive_env = &env;
    fn(ctx);
    kmlb_naive_env = prev;
    return 0;
}

/* ---- the bare signal round trip ---------------------------------------------------------- */

static volatile sig_atomic_t kmlb_usr1_count;

static void kmlb_usr1_handler(int signo, siginfo_t *si, void *uc) {
    (void)signo;
    (void)si;
    (void)uc;
    kmlb_usr1_count++;
}

/* Install the SIGUSR1 handler with the flags kmodlike's guard uses (SA_SIGINFO, SA_ONSTACK,
 * SA_NODEFER). Returns 0 or -1. */
int kmlb_usr1_install(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = kmlb_usr1_handler;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGUSR1, &sa, NULL);
}

/* One round trip: raise SIGUSR1, the handler runs and returns. Returns the handler's count. */
int kmlb_raise_usr1(void) {
    raise(SIGUSR1);
    return kmlb_usr1_count;
}

/* ---- a fault ----------------------------------------------------------------------------- */

/* Writes through `ctx`: SIGSEGV (SEGV_MAPERR) when it is NULL. */
__attribute__((noinline)) void kmlb_fault(void *ctx) {
    *(volatile int *)ctx = 1;
}

/* ---- a C host's calls ------------------------------------------------------------------- */

/* n calls of fn(ctx) through a pointer (the pointer is reloaded each time, as from a table). */
void kmlb_direct_loop(void (*volatile *fn)(void *), void *ctx, uint64_t n) {
    for (uint64_t i = 0; i < n; i++)
        (*fn)(ctx);
}

/* n calls of call(loader, fn, ctx) (module_loader_call, reached like a PLT call: through a
 * pointer); the number of calls that did not return 0. */
uint64_t kmlb_guarded_loop(int (*call)(void *, void (*)(void *), void *), void *loader,
                           void (*fn)(void *), void *ctx, uint64_t n) {
    uint64_t bad = 0;
    for (uint64_t i = 0; i < n; i++)
        bad += call(loader, fn, ctx) != 0;
    return bad;
}
