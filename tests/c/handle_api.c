/* Drives the handle API (issue 4) and the crash guard (issue 3) through the C API, one
 * scenario per run, printing key=value lines for the test to check.
 *
 *   handle_api dltest   MODDIR          the ddi_modopen(9F) man page's example, by name
 *   handle_api specs    MODDIR          not found (lists places tried), "..", absolute parts
 *   handle_api refcount MODDIR          hello opened twice: init once, fini on the last close
 *   handle_api data     FW.so OUT       data mode: the blob's bytes written to OUT; then the
 *                                       same file in the default mode
 *   handle_api modinfo  MODDIR SPEC     the .modinfo entries of SPEC, as "info:tag=value"
 *   handle_api veto     VETO.so         module_can_unload() refuses, then agrees
 *   handle_api crash    CRASH.so        guarded calls that crash, through both APIs
 *   handle_api crash_ext CRASH.so       the extended crash info, the backtrace (as frames and
 *                                       as text), and acknowledging a taint
 */
#include "module_loader.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int inits, finis;

static void host_log(int level, const char *msg)
{
    if (strcmp(msg, "module initializing") == 0) {
        inits++;
    } else if (strcmp(msg, "module finalizing") == 0) {
        finis++;
    }
    printf("log(%d): %s\n", level, msg);
    fflush(stdout);
}

static const module_init_args_t host_args = {MODULE_INIT_ARGS_VERSION_CURRENT, host_log, NULL,
                                             NULL};

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (!(cond)) {                                                                 \
            printf("FAILED: %s (line %d)\n", #cond, __LINE__);                         \
            exit(1);                                                                   \
        }                                                                              \
    } while (0)

static void print_error(const char *key, module_loader_t *loader, module_error_t err)
{
    const char *text = module_loader_last_error(loader);
    printf("%s=%d\n%s_error=%s\n", key, (int)err, key, text != NULL ? text : "(null)");
    fflush(stdout);
}

/* The man page's Example 1, with ddi_modopen/ddi_modsym/ddi_modclose translated. */
static int dltest(const char *moddir)
{
    module_loader_t *loader = module_loader_create();
    CHECK(module_loader_set_path(loader, moddir) == MODULE_ERR_SUCCESS);

    module_handle_t *modh;
    int (*test)(int);
    int i = 0;
    module_error_t err;

    /* dynamically load "dltest" 'misc' module */
    modh = module_loader_open(loader, "dltest", NULL, MODULE_OPEN_DEFAULT, &err);
    if (modh == NULL) {
        print_error("open", loader, err);
        return 1; /* failed to open dltest module */
    }
    test = (int (*)(int))module_loader_sym(modh, "test", &err);
    if (test == NULL) {
        print_error("sym", loader, err);
        (void)module_loader_close(modh);
        return 1; /* failed to find "test" interface */
    }
    /* invoke test interface and verify result */
    i = (*test)(0);
    printf("test(0)=%d\n", i);
    CHECK(i == 1);
    printf("close=%d\n", (int)module_loader_close(modh));
    module_loader_destroy(loader);
    return 0;
}

static int specs(const char *moddir)
{
    module_loader_t *loader = module_loader_create();
    CHECK(module_loader_set_path(loader, moddir) == MODULE_ERR_SUCCESS);
    module_error_t err = MODULE_ERR_SUCCESS;
    CHECK(module_loader_open(loader, "nosuch", NULL, MODULE_OPEN_DEFAULT, &err) == NULL);
    print_error("nosuch", loader, err);
    CHECK(module_loader_open(loader, "misc/../../etc/passwd", NULL, 0, &err) == NULL);
    print_error("dotdot", loader, err);
    CHECK(module_loader_open(loader, "misc//dltest", NULL, 0, &err) == NULL);
    print_error("emptyseg", loader, err);
    /* namespace given explicitly: found */
    module_handle_t *h = module_loader_open(loader, "misc/dltest", NULL, 0, &err);
    CHECK(h != NULL && err == MODULE_ERR_SUCCESS);
    /* errp may be NULL; an unknown flag is refused */
    CHECK(module_loader_open(loader, "dltest", NULL, (module_open_flags_t)7, NULL) == NULL);
    print_error("badflags", loader, MODULE_ERR_INVALID_ARGUMENT);
    /* a symbol the module does not define */
    CHECK(module_loader_sym(h, "no_such_symbol", &err) == NULL);
    print_error("nosym", loader, err);
    /* a symbol of libc, which the module uses but does not define */
    CHECK(module_loader_sym(h, "printf", &err) == NULL);
    print_error("libcsym", loader, err);
    CHECK(module_loader_close(h) == MODULE_ERR_SUCCESS);
    CHECK(module_loader_close(NULL) == MODULE_ERR_INVALID_ARGUMENT);
    module_loader_destroy(loader);
    return 0;
}

static void call_hello(void *ctx)
{
    void (*hello)(void) = (void (*)(void))ctx;
    hello();
}

static int refcount(const char *moddir)
{
    module_loader_t *loader = module_loader_create();
    CHECK(module_loader_set_path(loader, moddir) == MODULE_ERR_SUCCESS);
    module_error_t err;
    module_handle_t *a = module_loader_open(loader, "hello", &host_args, MODULE_OPEN_DEFAULT, &err);
    CHECK(a != NULL);
    module_handle_t *b = module_loader_open(loader, "misc/hello", &host_args, 0, &err);
    CHECK(b != NULL);
    CHECK(a != b);
    printf("after_two_opens inits=%d finis=%d\n", inits, finis);
    printf("close_first=%d\n", (int)module_loader_close(a));
    printf("after_one_close inits=%d finis=%d\n", inits, finis);
    void *hello = module_loader_sym(b, "mod_hello", &err);
    CHECK(hello != NULL);
    printf("call_hello=%d\n", (int)module_loader_call_handle(b, call_hello, hello));
    printf("close_second=%d\n", (int)module_loader_close(b));
    printf("after_two_closes inits=%d finis=%d\n", inits, finis);
    module_loader_destroy(loader);
    return 0;
}

static int data(const char *fw, const char *out)
{
    module_loader_t *loader = module_loader_create();
    module_error_t err;
    module_handle_t *modp = module_loader_open(loader, fw, NULL, MODULE_OPEN_DATA, &err);
    if (modp == NULL) {
        print_error("open_data", loader, err);
        return 1;
    }
    const char *start = module_loader_sym(modp, "_binary_fw_bin_start", &err);
    CHECK(start != NULL);
    const char *end = module_loader_sym(modp, "_binary_fw_bin_end", &err);
    CHECK(end != NULL);
    size_t nbytes = (size_t)(end - start);
    printf("nbytes=%zu\n", nbytes);
    FILE *f = fopen(out, "wb");
    CHECK(f != NULL);
    CHECK(fwrite(start, 1, nbytes, f) == nbytes);
    fclose(f);
    printf("close_data=%d\n", (int)module_loader_close(modp));
    /* The same object opened as a module has no interface. */
    CHECK(module_loader_open(loader, fw, NULL, MODULE_OPEN_DEFAULT, &err) == NULL);
    print_error("open_default", loader, err);
    module_loader_destroy(loader);
    return 0;
}

static int print_info(const char *tag, const char *value, void *ctx)
{
    (*(int *)ctx)++;
    printf("info:%s=%s\n", tag, value);
    return 0;
}

static int stop_after_one(const char *tag, const char *value, void *ctx)
{
    (void)tag;
    (void)value;
    (*(int *)ctx)++;
    return 1;
}

static int modinfo(const char *moddir, const char *spec)
{
    module_loader_t *loader = module_loader_create();
    CHECK(module_loader_set_path(loader, moddir) == MODULE_ERR_SUCCESS);
    int n = 0;
    module_error_t err = module_loader_modinfo(loader, spec, print_info, &n);
    if (err != MODULE_ERR_SUCCESS) {
        print_error("modinfo", loader, err);
        return 1;
    }
    printf("entries=%d\n", n);
    int m = 0;
    CHECK(module_loader_modinfo(loader, spec, stop_after_one, &m) == MODULE_ERR_SUCCESS);
    printf("stopped_after=%d\n", m);
    module_loader_destroy(loader);
    return 0;
}

static int veto(const char *path)
{
    module_loader_t *loader = module_loader_create();
    module_error_t err;
    /* The handle API: the close is refused, the handle stays valid, then it succeeds. */
    module_handle_t *h = module_loader_open(loader, path, NULL, MODULE_OPEN_DEFAULT, &err);
    CHECK(h != NULL);
    print_error("close_refused", loader, module_loader_close(h));
    int (*is_alive)(void) = (int (*)(void))module_loader_sym(h, "is_alive", &err);
    CHECK(is_alive != NULL);
    printf("alive_after_refusal=%d\n", is_alive());
    void (*set_refuse)(int) = (void (*)(int))module_loader_sym(h, "set_refuse", &err);
    CHECK(set_refuse != NULL);
    set_refuse(0);
    printf("close_agreed=%d\n", (int)module_loader_close(h));

    /* The seed's calls: the unload is refused and the module stays loaded. */
    CHECK(module_loader_load(loader, path, NULL) == MODULE_ERR_SUCCESS);
    print_error("unload_refused", loader, module_loader_unload(loader));
    void *sym = NULL;
    printf("get_symbol_after_refusal=%d\n",
           (int)module_loader_get_symbol(loader, "set_refuse", &sym));
    CHECK(sym != NULL);
    ((void (*)(int))sym)(0);
    printf("unload_agreed=%d\n", (int)module_loader_unload(loader));
    module_loader_destroy(loader);
    return 0;
}

static void print_crash(const char *key, const module_loader_t *loader)
{
    module_crash_info_t info;
    memset(&info, 0xff, sizeof info);
    module_error_t err = module_loader_last_crash(loader, &info);
    printf("%s_last_crash=%d\n", key, (int)err);
    if (err != MODULE_ERR_SUCCESS) {
        return;
    }
    printf("%s_signal=%d\n%s_signal_name=%s\n%s_si_code=%d\n%s_si_code_name=%s\n", key,
           info.signal, key, info.signal_name, key, info.si_code, key, info.si_code_name);
    printf("%s_fault_addr=%#llx\n%s_pc_in_module=%d\n%s_module_offset=%#llx\n", key,
           (unsigned long long)info.fault_addr, key, (int)info.pc_in_module, key,
           (unsigned long long)info.module_offset);
    printf("%s_module=%s\n%s_symbol=%s\n%s_path=%s\n%s_phase=%d\n", key, info.module, key,
           info.symbol, key, info.path, key, (int)info.phase);
    printf("%s_thread_id=%d\n%s_time_sec=%lld\n%s_tainted=%d\n", key, (int)info.thread_id, key,
           (long long)info.time_sec, key, (int)info.tainted);
    fflush(stdout);
}

static int crash(const char *path)
{
    module_loader_t *loader = module_loader_create();
    module_error_t err;
    int value = 0;
    void *sym = NULL;

    print_crash("before", loader);

    /* The seed's calls: a guarded call works, then one crashes. */
    CHECK(module_loader_load(loader, path, NULL) == MODULE_ERR_SUCCESS);
    CHECK(module_loader_get_symbol(loader, "no_crash", &sym) == MODULE_ERR_SUCCESS);
    module_call_fn_t no_crash = (module_call_fn_t)sym;
    CHECK(module_loader_call(loader, no_crash, &value) == MODULE_ERR_SUCCESS);
    printf("first_value=%d\n", value);
    CHECK(module_loader_call(loader, no_crash, &value) == MODULE_ERR_SUCCESS);
    printf("second_value=%d\n", value);
    CHECK(module_loader_get_symbol(loader, "crash_segv", &sym) == MODULE_ERR_SUCCESS);
    print_error("segv", loader, module_loader_call(loader, (module_call_fn_t)sym, NULL));
    print_crash("segv", loader);
    /* The module is gone. */
    print_error("get_symbol_after_crash", loader,
                module_loader_get_symbol(loader, "no_crash", &sym));
    print_error("unload_after_crash", loader, module_loader_unload(loader));
    /* Loaded again: a fresh instance with fresh static data. */
    CHECK(module_loader_load(loader, path, NULL) == MODULE_ERR_SUCCESS);
    CHECK(module_loader_get_symbol(loader, "no_crash", &sym) == MODULE_ERR_SUCCESS);
    CHECK(module_loader_call(loader, (module_call_fn_t)sym, &value) == MODULE_ERR_SUCCESS);
    printf("value_after_reload=%d\n", value);
    CHECK(module_loader_get_symbol(loader, "crash_abort", &sym) == MODULE_ERR_SUCCESS);
    print_error("abort", loader, module_loader_call(loader, (module_call_fn_t)sym, NULL));
    print_crash("abort", loader);

    /* The handle API: two handles to one module; a crash through one ends the module. */
    module_handle_t *h = module_loader_open(loader, path, NULL, MODULE_OPEN_DEFAULT, &err);
    CHECK(h != NULL);
    module_handle_t *h2 = module_loader_open(loader, path, NULL, MODULE_OPEN_DEFAULT, &err);
    CHECK(h2 != NULL);
    sym = module_loader_sym(h, "crash_fpe", &err);
    CHECK(sym != NULL);
    print_error("fpe", loader, module_loader_call_handle(h, (module_call_fn_t)sym, &value));
    print_crash("fpe", loader);
    CHECK(module_loader_sym(h2, "no_crash", &err) == NULL);
    print_error("sym_after_crash", loader, err);
    print_error("call_after_crash", loader, module_loader_call_handle(h2, no_crash, &value));
    printf("close_crashed=%d\n", (int)module_loader_close(h));
    printf("close_crashed2=%d\n", (int)module_loader_close(h2));

    char reason[256];
    printf("tainted=%d\n", (int)module_loader_tainted(reason, sizeof reason));
    printf("taint_reason=%s\n", reason);
    module_loader_destroy(loader);
    printf("survived=1\n");
    return 0;
}

static int crash_ext(const char *path)
{
    module_loader_t *loader = module_loader_create();
    module_crash_info_ext_t ext;
    module_crash_info_t info;
    module_crash_frame_t frames[64];
    size_t count = 12345;
    char text[16384];
    char reason[256];
    void *sym = NULL;

    memset(&ext, 0, sizeof ext);
    ext.struct_size = sizeof ext;
    print_error("ext_before", loader, module_loader_last_crash_ext(loader, NULL, &ext));
    print_error("frames_before", loader,
                module_loader_last_crash_frames(loader, frames, 64, &count));
    printf("clear_taint_before=%d\n", (int)module_loader_clear_taint(reason, sizeof reason));

    CHECK(module_loader_load(loader, path, NULL) == MODULE_ERR_SUCCESS);
    CHECK(module_loader_get_symbol(loader, "crash_segv", &sym) == MODULE_ERR_SUCCESS);
    print_error("segv", loader, module_loader_call(loader, (module_call_fn_t)sym, NULL));

    /* A caller that did not set struct_size is refused, and nothing is written. */
    memset(&ext, 0, sizeof ext);
    print_error("ext_no_size", loader, module_loader_last_crash_ext(loader, NULL, &ext));
    printf("ext_no_size_untouched=%d\n", ext.frame_count == 0 && ext.called[0] == 0);

    memset(&ext, 0xff, sizeof ext);
    ext.struct_size = sizeof ext;
    memset(&info, 0, sizeof info);
    print_error("ext", loader, module_loader_last_crash_ext(loader, &info, &ext));
    printf("ext_struct_size_kept=%d\n", ext.struct_size == sizeof ext);
    printf("ext_info_signal_name=%s\n", info.signal_name);
    printf("ext_called=%s\next_probe_pid=%u\next_frame_count=%zu\n", ext.called,
           (unsigned)ext.probe_pid, ext.frame_count);

    /* Count alone, then the frames. */
    print_error("frames_count", loader, module_loader_last_crash_frames(loader, NULL, 0, &count));
    printf("frames_count_value=%zu\n", count);
    print_error("frames_null_cap", loader,
                module_loader_last_crash_frames(loader, NULL, 4, &count));
    print_error("frames", loader, module_loader_last_crash_frames(loader, frames, 64, &count));
    printf("frames_value=%zu\n", count);
    printf("frame0_is_pc=%d\n", count == 0 || frames[0].pc == info.pc);
    for (size_t i = 0; i < count && i < 64; i++) {
        printf("frame%zu=%#llx %s %s guessed=%d in_module=%d\n", i,
               (unsigned long long)frames[i].pc, frames[i].symbol[0] ? frames[i].symbol : "??",
               frames[i].object, (int)frames[i].guessed, (int)frames[i].in_module);
    }

    print_error("backtrace", loader, module_loader_last_crash_backtrace(loader, text, sizeof text));
    size_t lines = 0;
    for (const char *c = text; *c != 0; c++) {
        lines += *c == '\n';
    }
    printf("backtrace_lines=%zu\n", lines);
    printf("backtrace_starts_with_frame0=%d\n", text[0] == 0 || strncmp(text, "#0 0x", 5) == 0);
    print_error("backtrace_no_buf", loader, module_loader_last_crash_backtrace(loader, NULL, 8));

    /* A crash inside libc taints the process; acknowledging clears the verdict. */
    CHECK(module_loader_load(loader, path, NULL) == MODULE_ERR_SUCCESS);
    CHECK(module_loader_get_symbol(loader, "crash_in_libc", &sym) == MODULE_ERR_SUCCESS);
    print_error("libc", loader, module_loader_call(loader, (module_call_fn_t)sym, NULL));
    printf("tainted_before_clear=%d\n", (int)module_loader_tainted(NULL, 0));
    printf("clear_taint=%d\n", (int)module_loader_clear_taint(reason, sizeof reason));
    printf("clear_taint_reason=%s\n", reason);
    printf("tainted_after_clear=%d\n", (int)module_loader_tainted(NULL, 0));
    printf("clear_taint_again=%d\n", (int)module_loader_clear_taint(reason, sizeof reason));
    printf("clear_taint_again_reason=%s\n", reason);
    module_loader_destroy(loader);
    return 0;
}

int main(int argc, char **argv)
{
    setvbuf(stdout, NULL, _IOLBF, 0);
    if (argc >= 3 && strcmp(argv[1], "dltest") == 0) return dltest(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "specs") == 0) return specs(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "refcount") == 0) return refcount(argv[2]);
    if (argc >= 4 && strcmp(argv[1], "data") == 0) return data(argv[2], argv[3]);
    if (argc >= 4 && strcmp(argv[1], "modinfo") == 0) return modinfo(argv[2], argv[3]);
    if (argc >= 3 && strcmp(argv[1], "veto") == 0) return veto(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "crash") == 0) return crash(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "crash_ext") == 0) return crash_ext(argv[2]);
    fprintf(stderr, "usage: handle_api dltest|specs|refcount|data|modinfo|veto|crash|crash_ext ARGS\n");
    return 2;
}
