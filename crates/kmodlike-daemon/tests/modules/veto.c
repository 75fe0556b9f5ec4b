/* veto.c: a module whose module_can_unload() refuses while keep_loaded(1) is in effect. */
#include "module_interface.h"
#include <errno.h>
#include <stdint.h>

MODULE_DESCRIPTION("daemon test module: vetoes its unload on request");
MODULE_LICENSE("MIT");

static const module_init_args_t *host;
static int keep;

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *a) {
    host = a;
    return 0;
}
void module_fini(void) {
    if (host && host->log) host->log(0, "fini veto");
}
int module_can_unload(void) { return keep ? EBUSY : 0; }
int keep_loaded(int k) {
    keep = k;
    return k;
}
