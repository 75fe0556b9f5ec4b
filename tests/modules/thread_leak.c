/* A module whose module_init starts a thread that module_fini does not stop: the thread sleeps
 * in a loop in this module's code and counts its rounds, forever. Unloading the module must not
 * unmap the code under it. rounds() tells the host how far it got. */
#include "module_interface.h"
#include <pthread.h>
#include <stdint.h>
#include <unistd.h>

static volatile int round_count;

static void *loop(void *arg)
{
    (void)arg;
    for (;;) {
        round_count++;
        usleep(1000);
    }
    return NULL;
}

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }

int module_init(const void *init_args)
{
    (void)init_args;
    pthread_t t;
    if (pthread_create(&t, NULL, loop, NULL) != 0) return 1;
    pthread_detach(t);
    /* Return only once the thread runs in this module's code. */
    while (round_count == 0) usleep(100);
    return 0;
}

void module_fini(void) {}

int rounds(void) { return round_count; }
