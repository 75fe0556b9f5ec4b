/*
 * raw_sigaction.c: a module whose constructor installs its own SIGSEGV handler with a raw
 * rt_sigaction system call, which no interposer sees (tests/interposition.rs): the loader must
 * notice after the load and put the guard's handler back.
 */
#define _GNU_SOURCE
#include "module_interface.h"
#include <signal.h>
#include <stdint.h>
#include <sys/syscall.h>
#include <unistd.h>

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *a) { (void)a; return 0; }
void module_fini(void) {}
void crash_now(void) { volatile int *volatile p = 0; *p = 1; }

static void never_runs(int sig) { (void)sig; }

/* The kernel's struct sigaction on x86-64 and AArch64. */
struct kernel_sigaction {
    void (*handler)(int);
    unsigned long flags;
    void (*restorer)(void);
    uint64_t mask;
};

__attribute__((constructor)) static void grab_segv(void) {
    struct kernel_sigaction ksa = {never_runs, 0, 0, 0};
    syscall(SYS_rt_sigaction, SIGSEGV, &ksa, (void *)0, sizeof ksa.mask);
}

uintptr_t raw_handler(void) { return (uintptr_t)never_runs; }
