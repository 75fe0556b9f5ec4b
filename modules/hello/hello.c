/* The example module: the seed's example module, plus the legacy mod_hello() entry point,
 * which greets through the host's log callback. */
#include "module_interface.h"
#include <stdint.h>
#include <stddef.h>

MODULE_VERSION("1.0.0");
MODULE_DESCRIPTION("The kmodlike example module: greets through the host's log");
MODULE_LICENSE("MIT OR Apache-2.0");
MODULE_AUTHOR("The kmodlike developers");

static const module_init_args_t *host;

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
    host = args;
    return 0;
}

void module_fini(void)
{
    if (host != NULL && host->log != NULL) {
        host->log(0, "module finalizing");
    }
    host = NULL;
}

void mod_hello(void)
{
    if (host != NULL && host->log != NULL) {
        host->log(0, "Hello from the kmodlike example module!");
    }
}
