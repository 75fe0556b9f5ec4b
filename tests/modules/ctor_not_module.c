/* A shared object that is not a module, whose constructor must never run in a host that asks
 * for a module: it aborts, so a loader that ran it would take the host down with it. */
#include <stdlib.h>

__attribute__((constructor)) static void must_not_run(void) { abort(); }

int some_function(void) { return 1; }
