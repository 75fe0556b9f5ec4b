/*
 * interpose.c: the functions the loader puts in place of a module's own imports of sigaction,
 * signal, sigprocmask, pthread_sigmask, exit and _exit (not yet: see the issue tracker).
 */
#define _GNU_SOURCE
#include "shim.h"

int kml_module_handler(uint64_t module_id, int signo, siginfo_t *si, void *uc) {
    (void)module_id;
    (void)signo;
    (void)si;
    (void)uc;
    return 0;
}
