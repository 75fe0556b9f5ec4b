/*
 * interposed.c: a module that reaches for the process's signal state and for exit(), through
 * the imports the loader redirects to the guard (tests/interposition.rs). Built under several
 * names to play several modules.
 */
#define _GNU_SOURCE
#include "module_interface.h"
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *a) { (void)a; return 0; }
void module_fini(void) {}

/* Through a volatile pointer: a literal NULL store is UB that GCC may delete. */
void crash_now(void) { volatile int *volatile p = 0; *p = 1; }
void do_abort(void) { abort(); }

static sigjmp_buf own_env;
static volatile sig_atomic_t own_hits;

void own_segv_handler(int sig, siginfo_t *si, void *uc) {
    (void)sig;
    (void)si;
    (void)uc;
    own_hits++;
    siglongjmp(own_env, 1);
}

/* Install our own SIGSEGV handler; 0 when sigaction said yes. */
int install_segv_handler(void) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = own_segv_handler;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    return sigaction(SIGSEGV, &sa, NULL);
}

/* The handler sigaction reports for SIGSEGV now. */
uintptr_t current_segv_handler(void) {
    struct sigaction old;
    if (sigaction(SIGSEGV, NULL, &old) != 0)
        return 0;
    return (uintptr_t)old.sa_sigaction;
}

/* Fault with our own handler in place: it jumps back here. Returns how often it ran. */
int fault_with_own_handler(void) {
    if (sigsetjmp(own_env, 0) == 0)
        crash_now();
    return own_hits;
}

/* 0 when signal() accepted SIG_IGN for SIGABRT. */
int ignore_abort(void) { return signal(SIGABRT, SIG_IGN) == SIG_ERR ? -1 : 0; }

/* Block SIGSEGV and SIGUSR1 on this thread and return (leaving them blocked, as far as the
 * module knows). 1 when the thread's mask then holds SIGUSR1 but not SIGSEGV. */
int block_signals(void) {
    sigset_t set, now;
    sigemptyset(&set);
    sigaddset(&set, SIGSEGV);
    sigaddset(&set, SIGUSR1);
    if (pthread_sigmask(SIG_BLOCK, &set, NULL) != 0)
        return -1;
    sigprocmask(SIG_BLOCK, &set, NULL);
    pthread_sigmask(SIG_SETMASK, NULL, &now);
    return sigismember(&now, SIGUSR1) && !sigismember(&now, SIGSEGV);
}

void call_exit(void) { exit(3); }
void call__exit(void) { _exit(4); }
/* Through a function pointer: the address comes from a GLOB_DAT slot in .got, which lies in
 * PT_GNU_RELRO (read-only after relocation), not from the PLT's JUMP_SLOT. */
void call_Exit_via_pointer(void) {
    void (*volatile f)(int) = _Exit;
    f(5);
}
