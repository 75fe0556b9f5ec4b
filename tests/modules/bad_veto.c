/* A module that refuses to be unloaded while `refuse` is set, as an illumos _fini() may return
 * EBUSY: module_can_unload() returns 16 (EBUSY) until set_refuse(0) is called. */
#include "module_interface.h"

static int refuse = 1;
static int alive;

uint32_t module_get_interface_version(void)
{
    return MODULE_INTERFACE_VERSION_CURRENT;
}

int module_init(const void *init_args)
{
    (void)init_args;
    alive = 1;
    return 0;
}

void module_fini(void)
{
    alive = 0;
}

int module_can_unload(void)
{
    return refuse ? 16 : 0;
}

void set_refuse(int on);
void set_refuse(int on)
{
    refuse = on;
}

int is_alive(void);
int is_alive(void)
{
    return alive;
}
