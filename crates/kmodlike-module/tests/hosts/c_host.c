/* A C host for modules written with the Rust SDK: loads one module through libmodule.so's C API
 * (module_loader.h), with its own log callback, clock and user_data, then runs the actions
 * named on the command line, each under the crash guard:
 *
 *   c_host MODULE.so [hello] [add:A:B] [now] [user_data] [unload]
 *
 * Everything the module logs is printed as "log <level> <message>"; each action prints one
 * result line; the last line is "host still running" (the host survived whatever the module
 * did). Exit status: 0, or 1 when a load, symbol look-up or unload failed (the error is
 * printed as "<step> failed: <code name>: <detailed text>"). */
#include "module_loader.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void host_log(int level, const char *msg)
{
    printf("log %d %s\n", level, msg);
    fflush(stdout);
}

static uint64_t host_time(void)
{
    return 987654321u;
}

static int host_cookie;

static int fail(module_loader_t *loader, const char *step, module_error_t err)
{
    printf("%s failed: %s: %s\n", step, module_loader_strerror(err),
           module_loader_last_error(loader));
    return 1;
}

struct call {
    void *fn;
    int32_t a, b, i32;
    uint64_t u64;
    size_t size;
};

static void call_void(void *ctx)
{
    struct call *c = ctx;
    ((void (*)(void))c->fn)();
}

static void call_add(void *ctx)
{
    struct call *c = ctx;
    c->i32 = ((int32_t(*)(int32_t, int32_t))c->fn)(c->a, c->b);
}

static void call_u64(void *ctx)
{
    struct call *c = ctx;
    c->u64 = ((uint64_t(*)(void))c->fn)();
}

static void call_size(void *ctx)
{
    struct call *c = ctx;
    c->size = ((size_t(*)(void))c->fn)();
}

/* Look up `name` and run `fn` on it under the guard; 0, or the failure printed and 1. */
static int guarded(module_loader_t *loader, const char *name, void (*fn)(void *), struct call *c)
{
    module_error_t err = module_loader_get_symbol(loader, name, &c->fn);
    if (err != MODULE_ERR_SUCCESS) {
        return fail(loader, name, err);
    }
    err = module_loader_call(loader, fn, c);
    if (err != MODULE_ERR_SUCCESS) {
        return fail(loader, name, err);
    }
    return 0;
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: %s MODULE.so [hello] [add:A:B] [now] [user_data] [unload]\n",
                argv[0]);
        return 2;
    }
    setvbuf(stdout, NULL, _IOLBF, 0);
    module_loader_t *loader = module_loader_create();
    if (loader == NULL) {
        printf("module_loader_create failed\n");
        return 1;
    }
    module_init_args_t init_args;
    init_args.version = MODULE_INIT_ARGS_VERSION_CURRENT;
    init_args.log = host_log;
    init_args.get_time = host_time;
    init_args.user_data = &host_cookie;

    int status = 0;
    module_error_t err = module_loader_load(loader, argv[1], &init_args);
    if (err != MODULE_ERR_SUCCESS) {
        status = fail(loader, "load", err);
    } else {
        printf("loaded\n");
    }
    for (int i = 2; status == 0 && i < argc; i++) {
        struct call c;
        memset(&c, 0, sizeof c);
        if (strcmp(argv[i], "hello") == 0) {
            status = guarded(loader, "mod_hello", call_void, &c);
            if (status == 0) {
                printf("mod_hello returned\n");
            }
        } else if (sscanf(argv[i], "add:%" SCNd32 ":%" SCNd32, &c.a, &c.b) == 2) {
            status = guarded(loader, "add", call_add, &c);
            if (status == 0) {
                printf("add(%" PRId32 ", %" PRId32 ") = %" PRId32 "\n", c.a, c.b, c.i32);
            }
        } else if (strcmp(argv[i], "now") == 0) {
            status = guarded(loader, "now_ns", call_u64, &c);
            if (status == 0) {
                printf("now_ns = %" PRIu64 "\n", c.u64);
            }
        } else if (strcmp(argv[i], "user_data") == 0) {
            status = guarded(loader, "user_data_addr", call_size, &c);
            if (status == 0) {
                printf("user_data is the host's: %s\n",
                       c.size == (size_t)(uintptr_t)&host_cookie ? "yes" : "no");
            }
        } else if (strcmp(argv[i], "unload") == 0) {
            err = module_loader_unload(loader);
            if (err != MODULE_ERR_SUCCESS) {
                status = fail(loader, "unload", err);
            } else {
                printf("unloaded\n");
            }
        } else {
            fprintf(stderr, "unknown action %s\n", argv[i]);
            status = 2;
        }
    }
    module_loader_destroy(loader);
    printf("host still running\n");
    return status;
}
