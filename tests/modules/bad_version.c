/* A module built for another interface version: build it with -DMAJOR=2 -DMINOR=0 (another
 * major: refused) or -DMAJOR=1 -DMINOR=99 (a newer minor than the loader's: refused). */
#include "module_interface.h"

#ifndef MAJOR
#error "build with -DMAJOR=... -DMINOR=..."
#endif

uint32_t module_get_interface_version(void)
{
    return MODULE_INTERFACE_VERSION(MAJOR, MINOR);
}

int module_init(const void *init_args)
{
    (void)init_args;
    return 0;
}

void module_fini(void)
{
}
