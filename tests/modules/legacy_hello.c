/* A legacy module: it exports mod_hello() and none of the module interface. A default loader
 * loads it as a legacy module (no init, no fini); a strict loader refuses it. */
#include <stdio.h>

void mod_hello(void);

void mod_hello(void)
{
    puts("hello from a legacy module");
    fflush(stdout);
}
