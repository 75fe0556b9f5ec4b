/* A module whose module_init() fails: it returns INIT_RESULT (-5 unless built with
 * -DINIT_RESULT=...). The load must fail with that code and leave nothing loaded. */
#include "module_interface.h"

#ifndef INIT_RESULT
#define INIT_RESULT (-5)
#endif

uint32_t module_get_interface_version(void)
{
    return MODULE_INTERFACE_VERSION_CURRENT;
}

int module_init(const void *init_args)
{
    const module_init_args_t *args = (const module_init_args_t *)init_args;
    if (args != NULL && args->log != NULL) {
        args->log(MODULE_LOG_ERROR, "bad_init: refusing to initialise");
    }
    return INIT_RESULT;
}

void module_fini(void)
{
}
