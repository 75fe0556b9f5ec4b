/* A module that loads and runs well, and whose destructor faults: dlclose() in the host would
 * die of it. Only a probe that unloads the module too can refuse it. */
#include "module_interface.h"
#include <stdint.h>

__attribute__((destructor)) static void fault_on_unload(void)
{
    volatile int *volatile p = 0;
    *p = 1;
}

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *init_args) { (void)init_args; return 0; }
void module_fini(void) {}
