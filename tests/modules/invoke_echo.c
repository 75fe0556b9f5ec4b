/*
 * invoke_echo.c: a module with message entry points (module_invoke_fn), for the invoke API
 * and the isolation tier's tests (crates/kmodlike/tests/isolation.rs).
 *
 *   echo      the input, unchanged (needs as much room as the input)
 *   checksum  an FNV-1a hash of the input, as 16 hex digits, and the input's length as result
 *   greet     logs through the host's log, reads the host's clock, answers "time=<ns>"
 *   pid       this process's pid, in decimal
 *   misbehave does what its input says: "signal N" (a real fatal signal), "abort", "exit N",
 *             "_exit N", "exit_group N" (a raw system call), "hang", "alloc" (1 GiB, written
 *             without a NULL check), "scribble" (overwrite the heap around a block, then free),
 *             "socket" and "open" (socket(2) and open("/etc/passwd") through the C library),
 *             "raw socket" (the socket system call from this module's own code): what the
 *             seccomp allow-list forbids
 *
 * -DCTOR_CRASH: a constructor raises SIGSEGV.
 */
#define _GNU_SOURCE
#include "module_interface.h"
#include "real_fault.h"

#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <unistd.h>

MODULE_DESCRIPTION("invoke entry points: echo, checksum, greet, pid, misbehave");
MODULE_LICENSE("MIT");
MODULE_VERSION("1.0");

static const module_init_args_t *host;

#ifdef CTOR_CRASH
__attribute__((constructor)) static void crash_early(void) { real_fault(SIGSEGV); }
#endif

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *init_args) {
    host = init_args;
    return 0;
}
void module_fini(void) {}

/* Write `len` bytes of `data`, or say how many are needed. */
static int answer(const void *data, size_t len, void *out, size_t out_cap, size_t *out_len,
                  int ret) {
    *out_len = len;
    if (len <= out_cap && len > 0)
        memcpy(out, data, len);
    return ret;
}

int echo(const void *in, size_t in_len, void *out, size_t out_cap, size_t *out_len) {
    return answer(in, in_len, out, out_cap, out_len, 0);
}
MODULE_INVOKE(echo);

int checksum(const void *in, size_t in_len, void *out, size_t out_cap, size_t *out_len) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < in_len; i++)
        h = (h ^ ((const unsigned char *)in)[i]) * 1099511628211ULL;
    char text[17];
    snprintf(text, sizeof text, "%016" PRIx64, h);
    return answer(text, 16, out, out_cap, out_len, (int)in_len);
}
MODULE_INVOKE(checksum);

int greet(const void *in, size_t in_len, void *out, size_t out_cap, size_t *out_len) {
    (void)in;
    (void)in_len;
    if (host && host->log)
        host->log(MODULE_LOG_INFO, "hello from greet");
    uint64_t t = host && host->get_time ? host->get_time() : 0;
    char text[64];
    int n = snprintf(text, sizeof text, "time=%" PRIu64, t);
    return answer(text, (size_t)n, out, out_cap, out_len, 0);
}
MODULE_INVOKE(greet);

int pid(const void *in, size_t in_len, void *out, size_t out_cap, size_t *out_len) {
    (void)in;
    (void)in_len;
    char text[32];
    int n = snprintf(text, sizeof text, "%d", (int)getpid());
    return answer(text, (size_t)n, out, out_cap, out_len, 0);
}
MODULE_INVOKE(pid);

/* An empty function, for the guarded call the benchmark compares invoke with. */
void nothing(void) {}

/* Not declared: invoking it is refused. */
int undeclared(const void *in, size_t in_len, void *out, size_t out_cap, size_t *out_len) {
    return echo(in, in_len, out, out_cap, out_len);
}

int misbehave(const void *in, size_t in_len, void *out, size_t out_cap, size_t *out_len) {
    char cmd[64] = {0};
    memcpy(cmd, in, in_len < sizeof cmd - 1 ? in_len : sizeof cmd - 1);
    int n = 0;
    if (sscanf(cmd, "signal %d", &n) == 1) {
        real_fault(n);
    } else if (strcmp(cmd, "abort") == 0) {
        abort();
    } else if (sscanf(cmd, "exit %d", &n) == 1) {
        exit(n);
    } else if (sscanf(cmd, "_exit %d", &n) == 1) {
        _exit(n);
    } else if (sscanf(cmd, "exit_group %d", &n) == 1) {
        syscall(SYS_exit_group, n);
    } else if (strcmp(cmd, "hang") == 0) {
        for (;;)
            pause();
    } else if (strcmp(cmd, "alloc") == 0) {
        size_t size = (size_t)1 << 30;
        char *volatile p = malloc(size);
        memset(p, 1, size);
        n = p[size - 1];
    } else if (strcmp(cmd, "socket") == 0) {
        n = socket(AF_INET, SOCK_STREAM, 0);
    } else if (strcmp(cmd, "open") == 0) {
        n = open("/etc/passwd", O_RDONLY);
    } else if (strcmp(cmd, "raw socket") == 0) {
        n = (int)raw_syscall(SYS_socket);
    } else if (strcmp(cmd, "scribble") == 0) {
        /* Over the block's end and the heap's top chunk, then free it and allocate from the
         * top: glibc finds its bookkeeping corrupted and aborts. */
        char *volatile p = malloc(64);
        for (size_t i = 0; i < 4096; i++)
            p[i] = 0x41;
        free(p);
        char *volatile q = malloc(256 * 1024 - 64);
        n = q != NULL;
        q = malloc(100 * 1024);
        n += q != NULL;
    }
    *out_len = 0;
    (void)out;
    (void)out_cap;
    return n;
}
MODULE_INVOKE(misbehave);
