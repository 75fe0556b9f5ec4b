/*
 * real_fault.h: raise a fatal signal the way real code does, never through kill(). Shared by
 * the test modules (the fault matrix's fault_signal.c, the daemon tests' crash.c); the test
 * support library puts this directory on every test module's include path.
 *
 *   SIGSEGV  a write through NULL                                    (SEGV_MAPERR)
 *   SIGBUS   a read past the end of a mapped file truncated after mapping (BUS_ADRERR)
 *   SIGFPE   an integer division by zero, through volatile            (FPE_INTDIV)
 *   SIGILL   __builtin_trap()                                         (ILL_ILLOPN on x86_64)
 *   SIGABRT  abort()                                                  (SI_TKILL)
 *   SIGSYS   a system call trapped by a seccomp SECCOMP_RET_TRAP filter (SYS_SECCOMP)
 *
 * The compiler deletes code whose result is unused and may assume UB away: every faulting
 * access goes through a volatile object. Include after defining _GNU_SOURCE.
 */
#ifndef KMODLIKE_TEST_REAL_FAULT_H
#define KMODLIKE_TEST_REAL_FAULT_H

#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stddef.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

/* A system call number no kernel implements, trapped by our seccomp filter. */
#define TRAPPED_SYSCALL 1023

/* The system call instruction itself, so the PC at the trap lies in this module. */
static long raw_syscall(long nr) {
#if defined(__x86_64__)
    long ret;
    __asm__ volatile("syscall" : "=a"(ret) : "a"(nr) : "rcx", "r11", "memory");
    return ret;
#elif defined(__aarch64__)
    register long x8 __asm__("x8") = nr;
    register long x0 __asm__("x0");
    __asm__ volatile("svc #0" : "=r"(x0) : "r"(x8) : "memory");
    return x0;
#else
    return syscall(nr);
#endif
}

static void sys_fault(void) {
    /* Filters are per thread; install one per thread (and per instance of this module). */
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
            /* No seccomp here: the test sees SI_TKILL instead of SYS_SECCOMP and says so. */
            raise(SIGSYS);
            return;
        }
        filtered = 1;
    }
    raw_syscall(TRAPPED_SYSCALL);
}

static void bus_fault(void) {
    long page = sysconf(_SC_PAGESIZE);
    int fd = memfd_create("kmodlike-fault-bus", MFD_CLOEXEC);
    if (fd < 0 || ftruncate(fd, page) != 0) {
        raise(SIGBUS); /* the test sees SI_TKILL instead of BUS_ADRERR and says so */
        return;
    }
    volatile char *p = mmap(NULL, (size_t)page, PROT_READ, MAP_SHARED, fd, 0);
    if (ftruncate(fd, 0) != 0 || p == MAP_FAILED) {
        raise(SIGBUS);
        return;
    }
    close(fd);
    (void)p[0]; /* the page now lies past the end of the file */
}

/* Raise `signo` the real way (see the table at the top). */
static void real_fault(int signo) {
    switch (signo) {
    case SIGSEGV: {
        volatile int *volatile p = 0;
        *p = 1;
        break;
    }
    case SIGBUS:
        bus_fault();
        break;
    case SIGFPE: {
        /* Both operands volatile: with a constant numerator GCC replaces 1 / x by a compare
         * (only x = 1 and x = -1 give a non-zero quotient) and no division happens. */
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
    default:
        break;
    }
}

#endif
