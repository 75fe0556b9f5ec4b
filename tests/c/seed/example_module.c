#include "module_interface.h"
#include <stdint.h>

uint32_t module_get_interface_version(void)
{
    return MODULE_INTERFACE_VERSION_CURRENT;
}

int module_init(const void *init_args)
{
    const module_init_args_t *args = (const module_init_args_t *)init_args;
    if (args != NULL && args->log != NULL) {
        args->log(0, "module initializing");
    }
    return 0;
}

void module_fini(void)
{
    // cleanup
}
