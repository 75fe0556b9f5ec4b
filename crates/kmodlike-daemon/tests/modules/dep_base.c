/* dep_base.c: a module others depend on (see dep_top.c). Logs its init and fini. */
#include "module_interface.h"
#include <stdint.h>

MODULE_DESCRIPTION("daemon test module: a dependency");
MODULE_LICENSE("MIT");

static const module_init_args_t *host;

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *a) {
    host = a;
    if (host && host->log) host->log(0, "init dep_base");
    return 0;
}
void module_fini(void) {
    if (host && host->log) host->log(0, "fini dep_base");
}
int base_value(void) { return 7; }
