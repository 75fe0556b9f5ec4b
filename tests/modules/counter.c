/* Counts its own calls: static data that must start fresh in every new instance. */
#include "module_interface.h"
#include <stdint.h>

static int calls;
uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *a) { (void)a; return 0; }
void module_fini(void) {}
int bump(void) { return ++calls; }
/* Through a volatile pointer: a literal NULL store is UB that GCC may delete. */
void crash_now(void) { volatile int *volatile p = 0; *p = 1; }
#ifdef MAY_START_THREADS
#include <pthread.h>
/* Imports pthread_create (never called): the loader must assume a thread of this module may
 * still run in its code after a crash. */
int may_start(void)
{
    int (*volatile start)(pthread_t *, const pthread_attr_t *, void *(*)(void *), void *) =
        pthread_create;
    return start != 0;
}
#endif
