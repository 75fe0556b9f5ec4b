/*
 * thread_park.c: threads that sit in this object's code, for the unload-time thread check
 * (guard::threads_in_code). Each start_* function starts a thread, waits until it has said its
 * thread id, and returns a handle for stop_thread(); the thread then:
 *
 *   start_sleeper    sleeps in sleep(1), called from here, until stopped      (nanosleep)
 *   start_reader     blocks in read() on a pipe, called from here             (read)
 *   start_waiter     blocks in pthread_cond_wait, called from here            (futex)
 *   start_spinner    spins in spin() here; with block_signals, blocks every signal first
 *   start_crasher    writes through a null pointer here (SIGSEGV): with the text registered
 *                    with the crash guard, the guard parks it for good (never stop_thread it)
 *
 * Not a kmodlike module: a plain shared object loaded with dlopen by the tests.
 */
#define _GNU_SOURCE
#include <pthread.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <unistd.h>

#define MAXT 64
enum { SLEEPER, READER, WAITER, SPINNER, CRASHER };

struct slot {
    pthread_t thread;
    int kind;
    int block_signals;
    volatile int tid;
    volatile int stop;
    int pipe_fd[2];
};
static struct slot slots[MAXT];
static int next_slot;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t cond = PTHREAD_COND_INITIALIZER;
volatile unsigned long spins;

__attribute__((noinline)) static void spin(struct slot *s) {
    while (!s->stop)
        spins++;
}

static void *run(void *arg) {
    struct slot *s = arg;
    if (s->block_signals) {
        sigset_t all;
        sigfillset(&all);
        pthread_sigmask(SIG_SETMASK, &all, NULL);
    }
    s->tid = gettid();
    switch (s->kind) {
    case SLEEPER:
        while (!s->stop)
            sleep(1);
        break;
    case READER: {
        char c;
        ssize_t n = read(s->pipe_fd[0], &c, 1);
        s->stop = (int)n + 2; /* something after the call: no tail call */
        break;
    }
    case WAITER:
        pthread_mutex_lock(&lock);
        while (!s->stop)
            pthread_cond_wait(&cond, &lock);
        pthread_mutex_unlock(&lock);
        break;
    case SPINNER:
        spin(s);
        break;
    case CRASHER: {
        /* Volatile both ways: the compiler can neither see the null nor drop the store. */
        volatile int *volatile p = NULL;
        *p = 1;
        break;
    }
    }
    return NULL;
}

static int start(int kind, int block_signals, int *tid) {
    pthread_mutex_lock(&lock);
    int i = next_slot < MAXT ? next_slot++ : -1;
    pthread_mutex_unlock(&lock);
    if (i < 0)
        return -1;
    struct slot *s = &slots[i];
    s->kind = kind;
    s->block_signals = block_signals;
    if (kind == READER && pipe(s->pipe_fd) != 0)
        return -1;
    if (pthread_create(&s->thread, NULL, run, s) != 0)
        return -1;
    while (s->tid == 0)
        usleep(100);
    *tid = s->tid;
    return i;
}

int start_sleeper(int *tid) { return start(SLEEPER, 0, tid); }
int start_reader(int *tid) { return start(READER, 0, tid); }
int start_waiter(int *tid) { return start(WAITER, 0, tid); }
int start_spinner(int block_signals, int *tid) { return start(SPINNER, block_signals, tid); }
int start_crasher(int *tid) { return start(CRASHER, 0, tid); }

/* Stop the thread `handle` and join it. */
void stop_thread(int handle) {
    if (handle < 0 || handle >= MAXT)
        return;
    struct slot *s = &slots[handle];
    pthread_mutex_lock(&lock);
    s->stop = 1;
    pthread_cond_broadcast(&cond);
    pthread_mutex_unlock(&lock);
    if (s->kind == READER) {
        char c = 0;
        ssize_t n = write(s->pipe_fd[1], &c, 1);
        (void)n;
    }
    pthread_join(s->thread, NULL);
    if (s->kind == READER) {
        close(s->pipe_fd[0]);
        close(s->pipe_fd[1]);
    }
}
