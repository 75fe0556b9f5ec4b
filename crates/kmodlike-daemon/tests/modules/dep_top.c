/* dep_top.c: depends on misc/dep_base (loaded first, unloaded last). */
#include "module_interface.h"
#include <stdint.h>

MODULE_DESCRIPTION("daemon test module: depends on dep_base");
MODULE_LICENSE("MIT");
MODULE_DEPENDS("misc/dep_base");

static const module_init_args_t *host;
extern int base_value(void);

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *a) {
    host = a;
    if (host && host->log) host->log(0, "init dep_top");
    return 0;
}
void module_fini(void) {
    if (host && host->log) host->log(0, "fini dep_top");
}
int top_value(void) { return base_value() * 6; }
