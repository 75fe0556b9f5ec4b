/* A module whose constructor crashes (SIGSEGV) while the dynamic linker loads it. No guard can
 * contain that safely in the host (ld.so's lock is held): only the probe, which loads the module
 * in a child process first, keeps the host alive. */
#include "module_interface.h"

MODULE_DESCRIPTION("crashes in its constructor");

__attribute__((constructor)) static void crash_while_loading(void)
{
    *(volatile int *)16 = 1;
}

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
