/* Drives one load through the C API and prints what happened, for the bad-module tests.
 *
 *   load_check MODE PATH
 *
 * MODE: load      module_loader_load(PATH) on a default loader
 *       strict    the same on a MODULE_LOADER_STRICT loader
 *       probe     the same on a MODULE_LOADER_PROBE loader
 *       null      module_loader_load(NULL)          (PATH ignored)
 *       twice     load PATH, then load it again on the same loader: reports the second
 *       unload    module_loader_unload() with nothing loaded (PATH ignored)
 *
 * Output: "code=N" (the module_error_t of the call under test), "strerror=...",
 * "error=..." (module_loader_last_error(), or "(null)"). After a successful load it also
 * calls mod_hello() under the guard when the module has one, then prints "unload=N". */
#include "module_loader.h"

#include <stdio.h>
#include <string.h>

static void host_log(int level, const char *msg)
{
    printf("log(%d): %s\n", level, msg);
    fflush(stdout);
}

static void call_hello(void *ctx)
{
    void (*hello)(void) = (void (*)(void))ctx;
    hello();
}

static void report(module_loader_t *loader, module_error_t err)
{
    const char *detail = module_loader_last_error(loader);
    printf("code=%d\nstrerror=%s\nerror=%s\n", (int)err, module_loader_strerror(err),
           err == MODULE_ERR_SUCCESS ? "" : detail != NULL ? detail : "(null)");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    if (argc != 3) {
        fprintf(stderr, "usage: load_check load|strict|probe|null|twice|unload PATH\n");
        return 2;
    }
    const char *mode = argv[1];
    const char *path = argv[2];
    module_loader_t *loader;
    if (strcmp(mode, "strict") == 0) {
        loader = module_loader_create_with_flags(MODULE_LOADER_STRICT);
    } else if (strcmp(mode, "probe") == 0) {
        loader = module_loader_create_with_flags(MODULE_LOADER_PROBE);
    } else {
        loader = module_loader_create();
    }
    if (loader == NULL) {
        printf("create failed: %s\n", module_loader_last_error(NULL));
        return 1;
    }
    module_init_args_t args = {MODULE_INIT_ARGS_VERSION_CURRENT, host_log, NULL, NULL};
    module_error_t err;
    if (strcmp(mode, "null") == 0) {
        err = module_loader_load(loader, NULL, &args);
    } else if (strcmp(mode, "unload") == 0) {
        err = module_loader_unload(loader);
    } else if (strcmp(mode, "twice") == 0) {
        err = module_loader_load(loader, path, &args);
        printf("first=%d\n", (int)err);
        err = module_loader_load(loader, path, &args);
    } else {
        err = module_loader_load(loader, path, &args);
    }
    report(loader, err);
    if (err == MODULE_ERR_SUCCESS && strcmp(mode, "unload") != 0) {
        void *hello = NULL;
        if (module_loader_get_symbol(loader, "mod_hello", &hello) == MODULE_ERR_SUCCESS) {
            printf("mod_hello=%d\n", (int)module_loader_call(loader, call_hello, hello));
        }
        printf("unload=%d\n", (int)module_loader_unload(loader));
    }
    module_loader_destroy(loader);
    printf("survived=1\n");
    return 0;
}
