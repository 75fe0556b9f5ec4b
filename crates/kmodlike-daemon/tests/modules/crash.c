/*
 * crash.c: the daemon tests' module. Built once per signal with -DSIG=n (crash_segv.so, ...):
 * crash() raises that signal the real way, never through kill():
 *   SIGSEGV  a write through NULL                                     (SEGV_MAPERR)
 *   SIGBUS   a read past the end of a mapped file truncated after mapping  (BUS_ADRERR)
 *   SIGFPE   an integer division by zero through volatile operands     (FPE_INTDIV)
 *   SIGILL   __builtin_trap() (ud2 on x86_64)                          (ILL_ILLOPN)
 *   SIGABRT  abort()                                                   (SI_TKILL)
 *   SIGSYS   a system call trapped by a seccomp SECCOMP_RET_TRAP filter  (SYS_SECCOMP)
 * Built with -DCTOR_CRASH, its constructor writes through NULL (for the probe test).
 * crash_in_libc() faults inside libc (strlen(NULL)): a crash that taints the daemon.
 * raise_abort() raises SIGABRT with raise(): the module's own abort, like abort().
 * It also exports plain functions for Call (answer, add_one, sleep_ms) and logs its init and
 * fini through the host, naming itself (-DNAME="...").
 */
#define _GNU_SOURCE
#include "module_interface.h"
#include "real_fault.h"

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#ifndef NAME
#define NAME "crash"
#endif

MODULE_DESCRIPTION("daemon test module: crash() raises a real fatal signal");
MODULE_LICENSE("MIT");
MODULE_VERSION("2.5");

static const module_init_args_t *host;

static void say(const char *what) {
    char line[128];
    snprintf(line, sizeof line, "%s %s", what, NAME);
    if (host != NULL && host->log != NULL)
        host->log(0, line);
}

#ifdef CTOR_CRASH
__attribute__((constructor)) static void ctor_crash(void) {
    /* Through a volatile pointer: GCC deletes a function that is only a literal NULL store. */
    volatile int *volatile p = 0;
    *p = 1;
}
#endif

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }

int module_init(const void *init_args) {
    host = init_args;
    say("init");
    return 0;
}

void module_fini(void) { say("fini"); }

int crash(void) {
#ifdef SIG
    real_fault(SIG);
#endif
    return -1; /* not reached when SIG is set */
}

/* raise(SIGABRT): the module's own abort through raise, never a taint. */
int raise_abort(void) {
    raise(SIGABRT);
    return -1;
}

/* strlen(NULL): SIGSEGV with the PC in libc, so the daemon counts itself tainted. */
int crash_in_libc(void) {
    const char *volatile p = NULL;
    return (int)strlen(p);
}

int answer(void) { return 42; }

int add_one(int x) { return x + 1; }

/* Sleeps `ms` milliseconds inside the module (a call in flight). */
/* Logs when it starts and ends, so that a test waits on those lines, not on the clock. */
int sleep_ms(int ms) {
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    say("sleep_ms begins in");
    nanosleep(&t, NULL);
    say("sleep_ms ends in");
    return ms;
}
