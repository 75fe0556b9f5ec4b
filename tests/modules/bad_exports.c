/* A module that lacks one of the three required exports: build it with -DOMIT_VERSION,
 * -DOMIT_INIT or -DOMIT_FINI. The loader must refuse it and name the missing export. */
#include "module_interface.h"

#ifndef OMIT_VERSION
uint32_t module_get_interface_version(void)
{
    return MODULE_INTERFACE_VERSION_CURRENT;
}
#endif

#ifndef OMIT_INIT
int module_init(const void *init_args)
{
    (void)init_args;
    return 0;
}
#endif

#ifndef OMIT_FINI
void module_fini(void)
{
}
#endif

int bad_exports_present(void)
{
    return 1;
}
