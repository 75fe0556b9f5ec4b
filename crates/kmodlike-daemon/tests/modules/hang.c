/*
 * hang.c: the daemon tests' module whose calls do not return. Each function logs
 * "<function> entered <NAME>" through the host before it hangs, so a test waits for that log
 * line (the call is in the module) instead of sleeping:
 *   spin()          an infinite loop (interruptible by the deadline's signal)
 *   block()         read() on a pipe nobody writes until release() is called: the thread sleeps
 *                   in the kernel (no CPU) and the signal interrupts the system call
 *   block_masked()  the same with every signal blocked: the deadline cannot interrupt it and
 *                   the module is reported hung; release() lets it return
 *   release()       write to the pipe: one blocked call returns
 *   spin_in_libc()  spins inside libc (pthread_spin_lock on a lock it holds) without a system
 *                   call: the deadline will not end it there, and reports it hung
 * It also exports answer() (returns 42), to show that the daemon serves other calls meanwhile.
 */
#define _GNU_SOURCE
#include "module_interface.h"

#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <unistd.h>

#ifndef NAME
#define NAME "hang"
#endif

MODULE_DESCRIPTION("daemon test module: calls that hang");
MODULE_LICENSE("MIT");
MODULE_VERSION("1.0");

static const module_init_args_t *host;
static int gate[2] = {-1, -1};

static void entered(const char *function) {
    char line[128];
    snprintf(line, sizeof line, "%s entered %s", function, NAME);
    if (host != NULL && host->log != NULL)
        host->log(0, line);
}

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }

int module_init(const void *init_args) {
    host = init_args;
#ifdef HANG_INIT
    /* Built with -DHANG_INIT: module_init itself never returns. */
    entered("module_init");
    for (volatile unsigned long n = 0;; n++)
        ;
#endif
    return pipe(gate) == 0 ? 0 : 1;
}

void module_fini(void) {
    if (gate[0] >= 0) {
        close(gate[0]);
        close(gate[1]);
    }
}

int answer(void) { return 42; }

void spin(void) {
    entered("spin");
    for (volatile unsigned long i = 0;; i++) {
    }
}

int block(void) {
    entered("block");
    char byte;
    return (int)read(gate[0], &byte, 1);
}

int block_masked(void) {
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, &old);
    entered("block_masked");
    char byte;
    int n = (int)read(gate[0], &byte, 1);
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    return n;
}

int release(void) { return (int)write(gate[1], "x", 1); }

static pthread_spinlock_t spin_lock;
void spin_in_libc(void) {
    pthread_spin_init(&spin_lock, PTHREAD_PROCESS_PRIVATE);
    pthread_spin_lock(&spin_lock);
    entered("spin_in_libc");
    pthread_spin_lock(&spin_lock);
}
