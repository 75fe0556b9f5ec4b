/* A module that crashes on request, for the C API's guarded calls: each crash_* function has
 * the module_call_fn_t shape (void (*)(void *ctx)). counter_next() returns 1, 2, 3, ... from
 * static data, so a reload after a crash can show that it got a fresh instance. */
#include "module_interface.h"
#include <signal.h>
#include <stdlib.h>
#include <string.h>

static int counter;

uint32_t module_get_interface_version(void)
{
    return MODULE_INTERFACE_VERSION_CURRENT;
}

int module_init(const void *init_args)
{
    (void)init_args;
    return 0;
}

void module_fini(void)
{
}

int counter_next(void);
int counter_next(void)
{
    return ++counter;
}

void crash_segv(void *ctx);
void crash_segv(void *ctx)
{
    (void)ctx;
    *(volatile int *)16 = 1;
}

void crash_fpe(void *ctx);
void crash_fpe(void *ctx)
{
    /* Both operands volatile: GCC turns 1 / x into a compare, which does not trap. */
    volatile int numerator = 100;
    volatile int zero = 0;
    *(volatile int *)ctx = numerator / zero;
}

void crash_abort(void *ctx);
void crash_abort(void *ctx)
{
    (void)ctx;
    abort();
}

/* strlen(NULL): SIGSEGV with the program counter inside libc, a crash that taints the process. */
static volatile size_t libc_result;

void crash_in_libc(void *ctx);
void crash_in_libc(void *ctx)
{
    const char *volatile p = NULL;
    (void)ctx;
    /* Stored in a volatile: an unused strlen() result is optimised away. */
    libc_result = strlen(p);
}

void no_crash(void *ctx);
void no_crash(void *ctx)
{
    *(int *)ctx = counter_next();
}
