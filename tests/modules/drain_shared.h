/*
 * drain_shared.h: what the drain stress test's host (tests/c/guard_stress.c, mode "drain") and
 * its module (tests/modules/drain_probe.c) share, in the host's memory: the host passes it as
 * init_args->user_data and as the argument of every call.
 */
#ifndef KMODLIKE_TEST_DRAIN_SHARED_H
#define KMODLIKE_TEST_DRAIN_SHARED_H

#include <stdatomic.h>

struct drain_shared {
    atomic_int unloaded;           /* set by the host once an unload returned */
    atomic_int inside;             /* call bodies running now */
    atomic_long body_violations;   /* bodies that ran while `unloaded` was set */
    atomic_long fini_violations;   /* module_fini with a body inside */
    atomic_long bodies;            /* bodies run */
};

#endif
