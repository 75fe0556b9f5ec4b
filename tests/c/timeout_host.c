/* Call time limits through the C API (issue 13): a module function that never returns is
 * interrupted at the loader's limit (module_loader_call) and at a handle's
 * (module_loader_call_handle), with MODULE_ERR_TIMED_OUT and a crash record that says so.
 * Prints key=value lines for the test to check.
 *
 *   timeout_host HANG.so     (the test module tests/modules/hang.c)
 */
#include "module_loader.h"

#include <stdio.h>
#include <string.h>

static const module_init_args_t host_args = {MODULE_INIT_ARGS_VERSION_CURRENT, NULL, NULL,
                                             NULL};

/* ctx is the module's function: void f(void) or unsigned f(void), called and forgotten. */
static void call_it(void *ctx)
{
    void (*f)(void) = (void (*)(void))ctx;
    f();
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: timeout_host HANG.so\n");
        return 2;
    }
    module_loader_t *loader = module_loader_create();
    printf("set_timeout=%d\n", module_loader_set_call_timeout(loader, 200));
    printf("load=%d\n", module_loader_load(loader, argv[1], &host_args));
    void *spin = NULL;
    printf("sym=%d\n", module_loader_get_symbol(loader, "spin", &spin));
    module_error_t rc = module_loader_call(loader, call_it, spin);
    printf("call=%d\n", rc);
    printf("strerror=%s\n", module_loader_strerror(rc));
    printf("error=%s\n", module_loader_last_error(loader));
    module_crash_info_t info;
    module_crash_info_ext_t ext;
    memset(&ext, 0, sizeof ext);
    ext.struct_size = sizeof ext;
    printf("last_crash=%d\n", module_loader_last_crash_ext(loader, &info, &ext));
    printf("signal_name=%s\n", info.signal_name);
    printf("symbol=%s\n", info.symbol);
    printf("called=%s\n", ext.called);
    printf("timed_out=%d\n", ext.timed_out ? 1 : 0);
    printf("ran_at_least_limit=%d\n", ext.ran_ms >= 200 ? 1 : 0);
    /* The module is gone, as after a crash. */
    printf("call_again=%d\n", module_loader_call(loader, call_it, spin));

    /* A handle's own limit, over a loader without one; a call blocked in sleep(). */
    printf("clear_timeout=%d\n", module_loader_set_call_timeout(loader, 0));
    module_error_t err = MODULE_ERR_SUCCESS;
    module_handle_t *h = module_loader_open(loader, argv[1], &host_args, MODULE_OPEN_DEFAULT, &err);
    printf("open=%d\n", err);
    printf("handle_timeout=%d\n", module_loader_handle_set_call_timeout(h, 100));
    void *block_sleep = module_loader_sym(h, "block_sleep", &err);
    printf("handle_call=%d\n", module_loader_call_handle(h, call_it, block_sleep));
    printf("close=%d\n", module_loader_close(h));
    module_loader_destroy(loader);
    fflush(stdout);
    return 0;
}
