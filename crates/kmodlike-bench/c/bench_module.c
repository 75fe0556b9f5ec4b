/*
 * bench_module.c: the module the benchmarks call into. Implements the module interface with an
 * empty init and fini, and exports
 *   void bench_empty(void)  - does nothing: the cost of a call is all overhead;
 *   int  bench_crash(void)  - reads through NULL: SIGSEGV;
 *   void bench_spin(void)   - never returns (until a deadline interrupts it).
 * Built once as bench_module.so, and 1,000 times with -DNAME=mNNNN for the scale benchmark
 * (NAME goes into .modinfo and into one exported symbol, so every copy is a distinct object).
 */
#include "module_interface.h"
#include <stddef.h>
#include <stdint.h>

#define KMLB_STR2(x) #x
#define KMLB_STR(x) KMLB_STR2(x)
#define KMLB_CAT2(a, b) a##b
#define KMLB_CAT(a, b) KMLB_CAT2(a, b)

#ifndef NAME
#define NAME bench_module
#endif

MODULE_VERSION("1.0.0");
MODULE_DESCRIPTION("kmodlike benchmark module " KMLB_STR(NAME));
MODULE_LICENSE("MIT OR Apache-2.0");

/* One symbol whose name differs per copy. */
const char KMLB_CAT(NAME, _name)[] = KMLB_STR(NAME);

static int *volatile kmlb_null = NULL;

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

void bench_empty(void)
{
}

int bench_crash(void)
{
    return *kmlb_null;
}

static volatile unsigned long kmlb_spins;

void bench_spin(void)
{
    for (;;)
        kmlb_spins++;
}
