/* A module whose module_can_unload() refuses while set_busy(1) is in effect (EBUSY). */
#include "module_interface.h"
#include <errno.h>
#include <stdint.h>

static const module_init_args_t *host;
static int busy;

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *a) { host = a; return 0; }
void module_fini(void) { if (host && host->log) host->log(0, "fini veto"); }
int module_can_unload(void) { return busy ? EBUSY : 0; }
void set_busy(int b) { busy = b; }
int still_here(void) { return 42; }
