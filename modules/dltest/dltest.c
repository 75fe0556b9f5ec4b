/* The ddi_modopen(9F) man page's dltest example, translated to the kmodlike interface:
 * test(i) returns i + 1 while the module is loaded. */
#include "module_interface.h"
#include <stdint.h>
#include <stddef.h>

MODULE_VERSION("1.0.0");
MODULE_DESCRIPTION("The ddi_modopen(9F) dltest example: test(i) returns i + 1");
MODULE_LICENSE("MIT OR Apache-2.0");

static int loaded;

uint32_t module_get_interface_version(void)
{
    return MODULE_INTERFACE_VERSION_CURRENT;
}

int module_init(const void *init_args)
{
    (void)init_args;
    loaded = 1;
    return 0;
}

void module_fini(void)
{
    loaded = 0;
}

int test(int i)
{
    return loaded ? i + 1 : -1;
}
