/*
 * drain_probe.c: the module of the drain stress test (tests/c/guard_stress.c, mode "drain").
 *
 * The host passes a `struct drain_shared` in its memory as `init_args->user_data` and as the
 * argument of every call. The host sets `unloaded` once `module_loader_unload()` has returned
 * success and clears it before it loads the module again; a call body that runs while it is set
 * ran after an unload returned: a violation. `module_fini()` running while a body is inside is
 * one too.
 */
#include "module_interface.h"

#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include "drain_shared.h"

MODULE_DESCRIPTION("drain stress: records calls that run after their module was unloaded");
MODULE_LICENSE("MIT");
MODULE_VERSION("1.0");

static struct drain_shared *shared;

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }

int module_init(const void *init_args) {
    const module_init_args_t *args = init_args;
    if (args == NULL || args->user_data == NULL)
        return 22; /* EINVAL: the host must pass its shared block */
    shared = args->user_data;
    return 0;
}

void module_fini(void) {
    if (atomic_load(&shared->inside) != 0)
        atomic_fetch_add(&shared->fini_violations, 1);
}

/* One call body: checks the flag on the way in and on the way out, with a little work between
 * so that a body overlapping an unload has time to see it. */
void drain_probe_enter(struct drain_shared *s) {
    atomic_fetch_add(&s->inside, 1);
    if (atomic_load(&s->unloaded))
        atomic_fetch_add(&s->body_violations, 1);
    for (volatile int i = 0; i < 50; i++) {
    }
    if (atomic_load(&s->unloaded))
        atomic_fetch_add(&s->body_violations, 1);
    atomic_fetch_add(&s->bodies, 1);
    atomic_fetch_sub(&s->inside, 1);
}
