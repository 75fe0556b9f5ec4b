/* Logs from a thread it starts: the host's log sink must still know which module called. */
#include "module_interface.h"
#include <pthread.h>
#include <stdint.h>

static const module_init_args_t *host;
static pthread_t worker;

static void *work(void *arg)
{
    (void)arg;
    host->log(0, "from my own thread");
    return NULL;
}

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *a)
{
    host = a;
    return pthread_create(&worker, NULL, work, NULL);
}
void module_fini(void) { pthread_join(worker, NULL); }
