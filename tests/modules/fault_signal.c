/*
 * fault_signal.c: the fault matrix's module. It raises a real fatal signal where it is told
 * to: in module_init (-DINIT_SIGNAL=n), in module_fini (-DFINI_SIGNAL=n), in a guarded call
 * (fault(n)) or on a thread it starts (start_fault_thread(n)).
 *
 * Each signal comes from what really causes it, never from kill():
 *   SIGSEGV  a write through NULL                                    (SEGV_MAPERR)
 *   SIGBUS   a read past the end of a mapped file truncated after mapping (BUS_ADRERR)
 *   SIGFPE   an integer division by zero, through volatile            (FPE_INTDIV)
 *   SIGILL   __builtin_trap()                                         (ILL_ILLOPN on x86_64)
 *   SIGABRT  abort()                                                  (SI_TKILL)
 *   SIGSYS   a system call trapped by a seccomp SECCOMP_RET_TRAP filter (SYS_SECCOMP)
 *
 * The compiler deletes code whose result is unused and may assume UB away: every faulting
 * access goes through a volatile object.
 */
#define _GNU_SOURCE
#include "module_interface.h"
#include "real_fault.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

MODULE_DESCRIPTION("fault matrix: raises a real fatal signal in init, fini, a call or its own thread");
MODULE_LICENSE("MIT");
MODULE_VERSION("1.0");

/* Static data: a fresh instance (a reload after a crash) must start from zero. */
static int calls;
/* Advanced by the ticker thread; read by the host through the symbol. */
volatile unsigned long fault_ticks;

/* Raise `signo` the real way. */
void fault(int signo) { real_fault(signo); }

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }

int module_init(const void *init_args) {
    (void)init_args;
#ifdef INIT_SIGNAL
    fault(INIT_SIGNAL);
#endif
    return 0;
}

void module_fini(void) {
#ifdef FINI_SIGNAL
    fault(FINI_SIGNAL);
#endif
}

/* ---- a thread of the module's own ---------------------------------------------------------- */

static void *fault_thread(void *arg) {
    fault((int)(intptr_t)arg);
    return NULL;
}

/* Start a detached thread that raises `signo`. 0 on success. */
int start_fault_thread(int signo) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, fault_thread, (void *)(intptr_t)signo);
    pthread_attr_destroy(&attr);
    return rc;
}

void double_free_large(void);

static void *double_free_thread(void *arg) {
    (void)arg;
    double_free_large();
    return NULL;
}

/* Start a detached thread that frees a large block twice (glibc aborts under the arena lock
 * on that thread, where no guard is active). 0 on success. */
int start_double_free_thread(void) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, double_free_thread, NULL);
    pthread_attr_destroy(&attr);
    return rc;
}

static void *ticker(void *arg) {
    (void)arg;
    for (;;) {
        fault_ticks++;
        usleep(1000);
    }
    return NULL;
}

/* Start a detached thread that advances fault_ticks forever. 0 on success. */
int start_ticker(void) {
    pthread_t t;
    pthread_attr_t attr;
    pthread_attr_init(&attr);
    pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
    int rc = pthread_create(&t, &attr, ticker, NULL);
    pthread_attr_destroy(&attr);
    return rc;
}

/* ---- the other recoverable faults ---------------------------------------------------------- */

/* Counts its calls in static data. */
int bump(void) { return ++calls; }

void raise_abrt(void) { raise(SIGABRT); }

/* strlen(NULL): SIGSEGV with the PC inside libc. */
size_t strlen_null(void) {
    const char *volatile p = NULL;
    return strlen(p);
}

/* free() of a pointer malloc never returned: glibc detects it and aborts from inside free. */
void bad_free(void) {
    static char not_from_malloc[64];
    char *volatile p = not_from_malloc + 16;
    free(p);
}

/* free() of a pointer into this function's own stack frame: glibc aborts from inside free
 * ("free(): invalid pointer" or "free(): invalid size"). */
void bad_free_stack(void) {
    char on_stack[64];
    char *volatile p = on_stack + 16;
    memset(on_stack, 0, sizeof on_stack);
    free(p);
}

/* A double free: glibc detects it and aborts from inside free. */
void double_free(void) {
    void *volatile p = malloc(64);
    free(p);
    free(p);
}

/* A double free of a block too large for the thread cache and the fast bins: glibc finds it in
 * _int_free with the arena's lock held ("double free or corruption (!prev)") and aborts. The
 * second block keeps the first from merging into the top chunk. */
void double_free_large(void) {
    void *volatile p = malloc(20000);
    void *volatile q = malloc(64);
    free(p);
    free(p);
    free(q);
}

/* A fault inside printf, while printf holds the stdout lock. */
int crash_in_printf(void) {
    const char *volatile bad = (const char *)16;
    return printf("crash in printf: %d %s\n", 1, bad);
}

/* Recurses until the stack runs out. */
static volatile int never = -1;
int recurse(int depth) {
    volatile char frame[1024];
    frame[0] = (char)depth;
    if (depth == never)
        return 0;
    return recurse(depth + 1) + frame[0];
}
