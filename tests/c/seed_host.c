/* The seed README's "Integration" host code as a program.
 *
 * The five snippets are included verbatim from tests/c/seed/step*.c (the test
 * `seed_snippets_are_the_readme_text` checks they are exactly the README's code blocks); this
 * file only supplies what the snippets leave to the reader (your_log_function,
 * your_get_time_function, your_user_data), wraps them in main(), and prints what happened.
 * Run it in a directory holding path/to/module.so. */
#include "seed/step1_include.c"

#include <stdint.h>
#include <stdio.h>
#include <time.h>

static void your_log_function(int level, const char *msg)
{
    printf("log(%d): %s\n", level, msg);
    fflush(stdout);
}

static uint64_t your_get_time_function(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

static int host_state = 42;
static void *your_user_data = &host_state;

static void report(const char *what, module_loader_t *loader, module_error_t err)
{
    printf("%s: %d (%s)\n", what, (int)err, module_loader_strerror(err));
    if (err != MODULE_ERR_SUCCESS) {
        const char *detail = module_loader_last_error(loader);
        printf("%s error: %s\n", what, detail ? detail : "(none)");
    }
    fflush(stdout);
}

int main(void)
{
#include "seed/step2_create.c"
    printf("create: %s\n", loader != NULL ? "ok" : "NULL");

#include "seed/step3_load.c"
    report("load", loader, err);

#include "seed/step4_symbol.c"
    report("get_symbol", loader, err);
    if (err == MODULE_ERR_SUCCESS) {
        int (*function_name)(int) = (int (*)(int))symbol;
        printf("function_name(20) = %d\n", function_name(20));
    }

#include "seed/step5_cleanup.c"
    printf("done\n");
    return 0;
}
