/* A module that faults in module_get_interface_version, the first entry the loader makes. */
#include "module_interface.h"
#include <stdint.h>

uint32_t module_get_interface_version(void)
{
    volatile int *volatile p = 0;
    return (uint32_t)*p;
}

int module_init(const void *init_args) { (void)init_args; return 0; }

void module_fini(void) {}
