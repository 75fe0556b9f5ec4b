/* A node of a dependency graph, built several times with different -D flags:
 *   -DNODE=a            its name: exports <NODE>_value() and logs "init <NODE>" / "fini <NODE>"
 *   -DDEPENDS='"misc/b"' its MODULE_DEPENDS entry (optional)
 *   -DUSES=b            calls <USES>_value() from its init, so the dependency's symbols must resolve
 *   -DMARK='"/path"'     its constructor appends its process id to that file (who loaded it)
 */
#include "module_interface.h"
#include <stdio.h>
#include <stdint.h>

#define CAT2(a, b) a##b
#define CAT(a, b) CAT2(a, b)
#define STR2(x) #x
#define STR(x) STR2(x)

#ifdef DEPENDS
MODULE_DEPENDS(DEPENDS);
#endif
MODULE_DESCRIPTION("dependency test node " STR(NODE));

static const module_init_args_t *host;

#ifdef MARK
#include <unistd.h>
__attribute__((constructor)) static void mark_loaded(void)
{
    FILE *f = fopen(MARK, "a");
    if (f) {
        fprintf(f, "%d\n", (int)getpid());
        fclose(f);
    }
}
#endif

int CAT(NODE, _value)(void) { return 100; }

#ifdef USES
int CAT(USES, _value)(void);
#endif

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }

int module_init(const void *init_args)
{
    host = init_args;
    char msg[64];
#ifdef USES
    snprintf(msg, sizeof msg, "init " STR(NODE) " sees %d", CAT(USES, _value)());
#else
    snprintf(msg, sizeof msg, "init " STR(NODE));
#endif
    if (host && host->log) host->log(0, msg);
    return 0;
}

void module_fini(void)
{
    if (host && host->log) host->log(0, "fini " STR(NODE));
}
