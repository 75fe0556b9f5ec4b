/* Linked against libm: dlsym on this module's handle finds cos() in libm, which must not be
 * returned as a symbol of the module. */
#include "module_interface.h"
#include <math.h>
#include <stdint.h>

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }
int module_init(const void *a) { (void)a; return 0; }
void module_fini(void) {}
double own_cos(double x) { return cos(x); }
