/* A module whose constructor crashes: loading it in-process would kill the host, so only the
 * probe may load it. Its metadata must still be readable without running any code. */
#include "module_interface.h"
#include <stdint.h>

MODULE_VERSION("6.6.6");
MODULE_DESCRIPTION("crashes in its constructor");
MODULE_LICENSE("MIT");

__attribute__((constructor)) static void boom(void)
{
    /* Through a volatile pointer: a literal NULL store is UB that GCC deletes. */
    volatile int *volatile p = 0;
    *p = 1;
}

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *a) { (void)a; return 0; }
void module_fini(void) {}
