/* Calls that never return, for the deadline tests: a loop, a loop in malloc, a spin inside
 * libc, a blocking read(), sleep(), a host callback that blocks, a wait with the interrupt
 * signal blocked, and a slow call. With -DHANG_INIT, module_init itself never returns. */
#include "module_interface.h"
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdlib.h>
#include <unistd.h>

static const module_init_args_t *args;
static volatile unsigned long spins;

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
void module_fini(void) {}

void spin(void) {
    for (;;)
        spins++;
}

#ifdef HANG_INIT
int module_init(const void *a) {
    args = a;
    spin();
    return 0;
}
#else
int module_init(const void *a) {
    args = a;
    return 0;
}
#endif

/* Blocks in read() on a pipe nobody writes. */
int block_read(void) {
    int fds[2];
    char c;
    if (pipe(fds) != 0)
        return -1;
    return (int)read(fds[0], &c, 1);
}

unsigned block_sleep(void) { return sleep(100000); }

/* A loop that spends most of its time in libc's allocator (which holds the arena lock while
 * it works): the interrupt must end it back in the module, never inside malloc or free. */
void spin_in_malloc(void) {
    for (;;) {
        void *volatile p = malloc(1000 + (spins & 1023));
        free(p);
        spins++;
    }
}

/* Spins inside libc, never coming back to the module nor making a system call, until
 * spin_release: pthread_spin_lock on a lock this call holds already. */
static pthread_spinlock_t spin_lock;
void spin_in_libc(void) {
    pthread_spin_init(&spin_lock, PTHREAD_PROCESS_PRIVATE);
    pthread_spin_lock(&spin_lock);
    pthread_spin_lock(&spin_lock);
    pthread_spin_unlock(&spin_lock);
}
void spin_release(void) { pthread_spin_unlock(&spin_lock); }

/* Tries to take signal signo for a handler of its own: 0, or the errno sigaction set. */
static void ignore_it(int signo) { (void)signo; }
int take_signal(int signo) {
    struct sigaction sa;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = 0;
    sa.sa_handler = ignore_it;
    return sigaction(signo, &sa, 0) == 0 ? 0 : errno;
}

/* The host's log callback (which the test makes block until it is released), then a loop:
 * the interrupt must come after the callback returns. */
void hang_in_log(void) {
    args->log(1, "hang_in_log: calling the host");
    spin();
}

/* Runs about ms milliseconds (by the host's clock), then returns ms. */
int busy_for(int ms) {
    uint64_t until = args->get_time() + (uint64_t)ms * 1000000u;
    while (args->get_time() < until)
        spins++;
    return ms;
}

/* Blocks the interrupt signal (given by the test), then waits for a byte on fd: it cannot be
 * interrupted; the test lets it go. Returns what read() returned. */
struct wait_args {
    int signo;
    int fd;
};
int wait_blocked(struct wait_args a) {
    sigset_t set;
    char c;
    sigemptyset(&set);
    sigaddset(&set, a.signo);
    sigprocmask(SIG_BLOCK, &set, 0);
    return (int)read(a.fd, &c, 1);
}
