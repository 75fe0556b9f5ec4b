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
 * It also exports plain functions for Call (answer, add_one, sleep_ms) and logs its init and
 * fini through the host, naming itself (-DNAME="...").
 */
#define _GNU_SOURCE
#include "module_interface.h"

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
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

/* A system call number no kernel implements, trapped by a filter of this thread's own. */
#define TRAPPED_SYSCALL 1023

static void sys_fault(void) {
    static __thread int filtered;
    if (!filtered) {
        struct sock_filter filter[] = {
            BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
            BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, TRAPPED_SYSCALL, 0, 1),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_TRAP),
            BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        };
        struct sock_fprog prog = {.len = sizeof filter / sizeof filter[0], .filter = filter};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
            prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0) {
            raise(SIGSYS);
            return;
        }
        filtered = 1;
    }
    syscall(TRAPPED_SYSCALL);
}

static void bus_fault(void) {
    long page = sysconf(_SC_PAGESIZE);
    int fd = memfd_create("kmodlike-daemon-bus", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, page) != 0) {
        raise(SIGBUS);
        return;
    }
    volatile char *p = mmap(NULL, (size_t)page, PROT_READ, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED || ftruncate(fd, 0) != 0) {
        raise(SIGBUS);
        return;
    }
    close(fd);
    (void)p[0];
}

int crash(void) {
#ifdef SIG
    switch (SIG) {
    case SIGSEGV: {
        volatile int *volatile p = 0;
        *p = 1;
        break;
    }
    case SIGBUS:
        bus_fault();
        break;
    case SIGFPE: {
        volatile int num = 42, zero = 0;
        volatile int r = num / zero;
        (void)r;
        break;
    }
    case SIGILL:
        __builtin_trap();
    case SIGABRT:
        abort();
    case SIGSYS:
        sys_fault();
        break;
    }
#endif
    return -1; /* not reached when SIG is set */
}

int answer(void) { return 42; }

int add_one(int x) { return x + 1; }

/* Sleeps `ms` milliseconds inside the module (a call in flight). */
int sleep_ms(int ms) {
    struct timespec t = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    nanosleep(&t, NULL);
    return ms;
}
