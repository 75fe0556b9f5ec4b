/* Misbehaves in ways the probe must survive, chosen at build time:
 *   -DNOISY      module_init writes 1 MiB to stdout and 1 MiB to stderr, but only in the probe
 *                child (kmodlike-probe, kmodlike-bench-probe), so the test log stays readable
 *                when the host then loads the module itself;
 *   -DHANG_CTOR  a constructor that never returns;
 *   -DEXIT_INIT  module_init writes a message to stderr and _exit(3)s;
 *   -DFORK_HOLDER  module_init (in the probe child only) forks a grandchild that keeps stdout
 *                and stderr open for 60 s (then SIGALRM ends it), and succeeds.
 * Without any, a plain module. */
#define _GNU_SOURCE
#include "module_interface.h"
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#ifdef HANG_CTOR
__attribute__((constructor)) static void hang(void)
{
    for (;;)
        pause();
}
#endif

#if defined(NOISY) || defined(FORK_HOLDER)
static int in_probe_child(void)
{
    char exe[4096];
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0)
        return 0;
    exe[n] = '\0';
    const char *base = strrchr(exe, '/');
    base = base ? base + 1 : exe;
    return strncmp(base, "kmodlike-", 9) == 0 && strstr(base, "probe") != NULL;
}
#endif

#ifdef NOISY

static void noise(FILE *f, const char *what)
{
    static char line[1024];
    memset(line, 'x', sizeof line - 1);
    line[sizeof line - 1] = '\n';
    for (int i = 0; i < 1024; i++)
        fwrite(line, 1, sizeof line, f);
    fprintf(f, "probe_misbehave: that was 1 MiB on %s\n", what);
    fflush(f);
}
#endif

uint32_t module_get_interface_version(void) { return MODULE_INTERFACE_VERSION_CURRENT; }

int module_init(const void *a)
{
    (void)a;
#ifdef NOISY
    if (in_probe_child()) {
        noise(stdout, "stdout");
        noise(stderr, "stderr");
    }
#endif
#ifdef FORK_HOLDER
    if (in_probe_child() && fork() == 0) {
        alarm(60);
        for (;;)
            pause();
    }
#endif
#ifdef EXIT_INIT
    static const char msg[] = "probe_misbehave: cannot find /etc/probe_misbehave.conf, giving up\n";
    (void)!write(2, msg, sizeof msg - 1);
    _exit(3);
#endif
    return 0;
}

void module_fini(void) {}
