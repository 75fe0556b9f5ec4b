/* A dependency with state, and a module that uses it; built with -D flags:
 *   (none)                      the dependency: shared_bump() counts calls, shared_crash() faults
 *   -DUSER -DDEP='"misc/dep"'   a dependent: user_bump() calls the dependency's shared_bump()
 */
#include "module_interface.h"
#include <stdint.h>

#ifdef USER
MODULE_DEPENDS(DEP);
int shared_bump(void);
int user_bump(void) { return shared_bump(); }
#else
static int count;
int shared_bump(void) { return ++count; }
void shared_crash(void) { volatile int *volatile p = 0; *p = 1; }
#endif

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *init_args) { (void)init_args; return 0; }
void module_fini(void) {}
