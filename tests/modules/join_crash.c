/* A module whose module_init starts a thread that faults in this module's code, then joins it.
 * The crash guard parks the faulting thread for good, so the join never returns: the load
 * hangs, but the rest of the loader must go on answering. */
#include "module_interface.h"
#include <pthread.h>
#include <stdint.h>

static void *fault(void *arg)
{
    (void)arg;
    volatile int *volatile p = 0;
    *p = 1;
    return NULL;
}

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }

int module_init(const void *init_args)
{
    (void)init_args;
    pthread_t t;
    if (pthread_create(&t, NULL, fault, NULL) != 0) return 1;
    pthread_join(t, NULL);
    return 0;
}

void module_fini(void) {}
