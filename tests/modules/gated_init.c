/* A module whose module_init can be held and can talk to the host, built with -D flags:
 *   -DGATE='"/path/fifo"'      module_init opens that FIFO and waits for one byte first
 *   -DLOG_FROM_INIT='"text"'   module_init logs that text through the host's log callback
 * It exports ready() -> 7 once initialised. */
#include "module_interface.h"
#include <fcntl.h>
#include <stdint.h>
#include <unistd.h>

static int initialised;

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }

int module_init(const void *init_args)
{
    const module_init_args_t *args = init_args;
    (void)args;
#ifdef GATE
    int fd = open(GATE, O_RDONLY);
    if (fd < 0) return 1;
    char c;
    ssize_t n = read(fd, &c, 1);
    close(fd);
    if (n != 1) return 2;
#endif
#ifdef LOG_FROM_INIT
    if (args && args->log) args->log(0, LOG_FROM_INIT);
#endif
    initialised = 1;
    return 0;
}

void module_fini(void) { initialised = 0; }

int ready(void) { return initialised ? 7 : 0; }
