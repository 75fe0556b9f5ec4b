/* Crashes three calls deep through static functions, for the backtrace tests
 * (crates/kmodlike/tests/backtrace.rs). Built with and without frame pointers. noinline and
 * noipa keep each function a frame of its own; the asm barrier after each call keeps the call
 * from becoming a tail call. */
#include "module_interface.h"
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *a) { (void)a; return 0; }
void module_fini(void) {}

#define FRAME __attribute__((noinline, noipa))

static FRAME void deep_three(int how) {
    if (how == 0) {
        volatile int *volatile p = 0;
        *p = 1;
    } else {
        abort();
    }
    __asm__ volatile("" ::: "memory");
}

static FRAME void deep_two(int how) {
    deep_three(how);
    __asm__ volatile("" ::: "memory");
}

static FRAME void deep_one(int how) {
    deep_two(how);
    __asm__ volatile("" ::: "memory");
}

/* SIGSEGV in deep_three <- deep_two <- deep_one <- crash_deep. */
void crash_deep(void) {
    deep_one(0);
    __asm__ volatile("" ::: "memory");
}

/* abort() after some allocator work (blocks of `n` bytes), all of it freed correctly. */
void abort_after_malloc(int n) {
    void *keep[16];
    for (int i = 0; i < 16; i++) {
        keep[i] = malloc((size_t)(n * (i + 1)));
        if (keep[i] != NULL)
            memset(keep[i], i, (size_t)n);
    }
    for (int i = 0; i < 16; i += 2)
        free(keep[i]);
    void *r = realloc(keep[1], (size_t)n * 40);
    if (r != NULL)
        keep[1] = r;
    for (int i = 1; i < 16; i += 2)
        free(keep[i]);
    deep_one(1);
}

/* free() of the same block twice. A block of the thread cache's sizes (up to 1032 bytes):
 * glibc finds the double free there ("double free detected in tcache 2") and aborts with no
 * arena lock held. (A larger block is found in _int_free with the arena lock held: the thread
 * then deadlocks on its next malloc after the jump, report or not.) */
void double_free_block(void) {
    char *volatile p = malloc(1000);
    char *volatile q = malloc(64);
    free(p);
    free(p);
    free(q);
}

/* free() of a pointer malloc never returned: glibc aborts ("free(): invalid pointer"). */
void bad_free_here(void) {
    static char not_heap[64];
    free(not_heap + 8);
}
