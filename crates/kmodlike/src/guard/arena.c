/*
 * arena.c: glibc's allocator after an abort it raised itself.
 *
 * When glibc's malloc finds the heap corrupt (a double free of a large block, say) it calls
 * malloc_printerr, which aborts. Some of those checks run with the arena's lock held
 * (_int_free after __libc_lock_lock, all of _int_malloc). The guard then jumps out of the call
 * with that lock still taken: the next malloc on the arena, on any thread, sleeps forever,
 * starting with the loader's own report. Nothing unlocks it, because nothing in glibc expects
 * the frames of an abort to be left alive.
 *
 * What this file does, in normal context after the jump and before anything allocates:
 *
 *   1. The evidence. glibc keeps the message it printed before aborting in __abort_msg (a
 *      GLIBC_PRIVATE variable, exported for debuggers and core files). The handler copies it
 *      when the message is new (kml_note_abort). Only messages glibc prints with the arena lock
 *      held count (kml_msg_under_lock: checked against glibc 2.26 to 2.40's malloc.c).
 *   2. The arena. glibc's arenas form a ring through `next`, starting at main_arena (static in
 *      libc, not exported). kml_arena_discover finds main_arena once, at guard installation, by
 *      scanning libc's writable segment for a struct malloc_state whose empty bins point at
 *      themselves and whose ring returns to it; it is accepted only when exactly one candidate
 *      exists and the ring's system_mem adds up to mallinfo2()'s arena figure. Otherwise the
 *      feature stays off (another allocator, another libc, another layout): the report then
 *      says the lock may be held, as before.
 *   3. The owner. A locked arena is released only when its address is in the crashed call's
 *      own live frames: a callee-saved register at the abort, or a word of the crashed stack
 *      between the abort and the first return address into the module (the module's call to
 *      free/malloc). A lock another thread holds at that moment is not in those frames.
 *
 * The heap stays corrupt: the crash is tainted and the report says the lock was released so
 * the process can be drained and restarted, rather than hang.
 */
#define _GNU_SOURCE
#include "shim.h"

#include <dlfcn.h>
#include <malloc.h>
#include <stdlib.h>
#include <sys/mman.h>

/* struct malloc_state, x86_64 and aarch64 glibc 2.26 and later (malloc/malloc.c):
 *   mutex (int) 0, flags 4, have_fastchunks 8, fastbinsY[10] 16, top 96, last_remainder 104,
 *   bins[254] 112, binmap[4] 2144, next 2160, next_free 2168, attached_threads 2176,
 *   system_mem 2184, max_system_mem 2192; sizeof 2200. */
#define ARENA_TOP 96
#define ARENA_BINS 112
#define ARENA_NEXT 2160
#define ARENA_SYSTEM_MEM 2184
#define ARENA_SIZE 2200
#define MAX_ARENAS 1024

static uintptr_t kml_main_arena;                 /* 0: not found, the release is off */
/* &__abort_msg (glibc's `struct abort_msg_s { unsigned size; char msg[]; } *`), or NULL. */
static void **kml_abort_msg_var;
static _Atomic uintptr_t kml_abort_msg_seen;     /* the last message accounted for */

/* Bin i's fd/bk pair is either empty (both point at the bin's own header, 16 bytes before fd)
 * or holds 16-byte aligned chunk addresses. Normal context. */
static int looks_like_arena(uintptr_t a) {
    int empty = 0;
    for (int i = 2; i < 127; i++) {
        const uintptr_t *fd = (const uintptr_t *)(a + ARENA_BINS + (uintptr_t)(i - 1) * 16);
        uintptr_t self = (uintptr_t)fd - 16;
        if (fd[0] == self && fd[1] == self)
            empty++;
        else if (fd[0] == self || fd[1] == self || fd[0] == 0 || fd[1] == 0 || (fd[0] & 15) ||
                 (fd[1] & 15))
            return 0;
    }
    return empty >= 32 && *(const uintptr_t *)(a + ARENA_TOP) != 0;
}

/* The ring from a returns to a through arenas that look like arenas; the sum of their
 * system_mem, or 0. Normal context, only for candidates inside libc's data (readable). */
static size_t ring_system_mem(uintptr_t a) {
    size_t sum = 0;
    uintptr_t n = a;
    for (int k = 0; k < MAX_ARENAS; k++) {
        sum += *(const size_t *)(n + ARENA_SYSTEM_MEM);
        n = *(const uintptr_t *)(n + ARENA_NEXT);
        if (n == a)
            return sum;
        if (n == 0 || (n & 7) || !looks_like_arena(n))
            return 0;
    }
    return 0;
}

struct scan {
    uintptr_t malloc_addr;
    uintptr_t found;
    int candidates;
};

static int scan_object(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    struct scan *s = data;
    int holds_malloc = 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        uintptr_t lo = info->dlpi_addr + p->p_vaddr;
        if (p->p_type == PT_LOAD && (p->p_flags & PF_X) && s->malloc_addr >= lo &&
            s->malloc_addr < lo + p->p_memsz)
            holds_malloc = 1;
    }
    if (!holds_malloc)
        return 0;
    for (int i = 0; i < info->dlpi_phnum; i++) {
        const ElfW(Phdr) *p = &info->dlpi_phdr[i];
        if (p->p_type != PT_LOAD || !(p->p_flags & PF_W))
            continue;
        uintptr_t lo = (info->dlpi_addr + p->p_vaddr + 15) & ~(uintptr_t)15;
        uintptr_t hi = info->dlpi_addr + p->p_vaddr + p->p_memsz;
        for (uintptr_t a = lo; a + ARENA_SIZE <= hi; a += 16) {
            if (*(const uint32_t *)a > 2 || !looks_like_arena(a) || ring_system_mem(a) == 0)
                continue;
            s->candidates++;
            s->found = a;
        }
    }
    return 1;
}

/* Find main_arena and __abort_msg. Normal context, once, at guard installation. Returns 1 when
 * the release after an allocator abort is available, 0 with *why set otherwise. */
int kml_arena_discover(const char **why) {
    kml_abort_msg_var = dlsym(RTLD_DEFAULT, "__abort_msg");
    if (kml_abort_msg_var != NULL)
        atomic_store(&kml_abort_msg_seen, (uintptr_t)*kml_abort_msg_var);
    struct mallinfo2 (*info2)(void) = (struct mallinfo2(*)(void))dlsym(RTLD_DEFAULT, "mallinfo2");
    if (kml_abort_msg_var == NULL || info2 == NULL) {
        *why = "not glibc 2.33 or later (no __abort_msg or mallinfo2)";
        return 0;
    }
    free(malloc(1)); /* main_arena's bins are set up by the first allocation */
    /* Another thread may add an arena between the scan and mallinfo2: try a few times. */
    for (int attempt = 0; attempt < 3; attempt++) {
        struct scan s = {(uintptr_t)&malloc, 0, 0};
        dl_iterate_phdr(scan_object, &s);
        if (s.candidates != 1) {
            *why = s.candidates == 0 ? "glibc's main arena was not found (another allocator?)"
                                     : "more than one candidate for glibc's main arena";
            return 0;
        }
        size_t ours = ring_system_mem(s.found);
        if (ours == info2().arena) {
            kml_main_arena = s.found;
            return 1;
        }
    }
    *why = "the arenas found do not add up to mallinfo2()";
    return 0;
}

/* In the handler, for a SIGABRT: copy glibc's abort message when it is new. Async-signal-safe:
 * an atomic load of a pointer and process_vm_readv (kml_read_memory) of at most the record's
 * buffer; nothing is written outside the record. */
void kml_note_abort(struct kml_raw_crash *c) {
    c->abort_msg[0] = 0;
    c->abort_msg_ptr = 0;
    if (kml_abort_msg_var == NULL)
        return;
    uintptr_t p = (uintptr_t)__atomic_load_n(kml_abort_msg_var, __ATOMIC_ACQUIRE);
    if (p == 0 || p == atomic_load(&kml_abort_msg_seen))
        return;
    ssize_t got = kml_read_memory(p + sizeof(unsigned), c->abort_msg, KML_ABORT_MSG - 1);
    if (got <= 0)
        return;
    c->abort_msg[got] = 0;
    c->abort_msg[KML_ABORT_MSG - 1] = 0;
    size_t n = strnlen(c->abort_msg, KML_ABORT_MSG - 1);
    while (n > 0 && c->abort_msg[n - 1] == '\n')
        c->abort_msg[--n] = 0;
    c->abort_msg_ptr = p;
}

/* Messages glibc's malloc prints with the arena lock held (glibc 2.26 to 2.40). Checks made
 * before the lock is taken ("free(): invalid pointer", the thread cache's "double free
 * detected in tcache 2", "double free or corruption (fasttop)", "free(): invalid next size
 * (fast)", "malloc(): unaligned tcache chunk detected", "munmap_chunk(): invalid pointer", ...)
 * are deliberately absent: another thread may hold the lock then. */
static int kml_msg_under_lock(const char *m) {
    static const char *const exact[] = {
        "double free or corruption (top)",
        "double free or corruption (out)",
        "double free or corruption (!prev)",
        "free(): invalid next size (normal)",
        "free(): corrupted unsorted chunks",
        "corrupted size vs. prev_size",
        "corrupted size vs. prev_size while consolidating",
        "corrupted double-linked list",
        "corrupted double-linked list (not small)",
        "realloc(): invalid old size",
        "realloc(): invalid next size",
        "invalid fastbin entry (free)",
    };
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strcmp(m, exact[i]) == 0)
            return 1;
    if (strcmp(m, "malloc(): unaligned tcache chunk detected") == 0)
        return 0;
    return strncmp(m, "malloc(): ", 10) == 0 || strncmp(m, "malloc_consolidate(): ", 22) == 0 ||
           strncmp(m, "_int_memalign(): ", 17) == 0 || strncmp(m, "sysmalloc", 9) == 0;
}

/* Does w equal a (a word of the crashed call's live frames)? */
static int in_regs(const struct kml_raw_crash *c, uintptr_t a) {
    for (int i = 0; i < KML_SAVED_REGS; i++)
        if (c->saved_regs[i] == a)
            return 1;
    return 0;
}

/* Is arena a named by a word of the crashed stack between its SP and the first return address
 * into a module (the module's call into the allocator)? The handler's copy when it made one
 * (a guarded call's frames are gone after the jump), else the stack itself (a parked thread's
 * frames stay where they were). */
static int in_live_frames(const struct kml_raw_crash *c, uintptr_t a) {
    uint64_t buf[128];
    size_t copied = c->cause == KML_CAUSE_SIGNAL && c->copy_buf != 0 ? c->copy_len : 0;
    for (size_t off = 0; off < KML_STACK_COPY;) {
        size_t want = sizeof buf, words;
        if (copied != 0) {
            if (off >= copied)
                return 0;
            if (copied - off < want)
                want = copied - off;
            memcpy(buf, (const uint8_t *)(uintptr_t)c->copy_buf + off, want);
            words = want / 8;
        } else {
            ssize_t got = kml_read_memory((c->sp & ~(uint64_t)7) + off, buf, want);
            if (got <= 0)
                return 0;
            words = (size_t)got / 8;
        }
        if (words == 0)
            return 0;
        for (size_t i = 0; i < words; i++) {
            if (buf[i] == a)
                return 1;
            if (kml_text_key_at(buf[i]) != 0 && kml_follows_call(buf[i]))
                return 0; /* the module's own frame: the allocator's frames end here */
        }
        off += words * 8;
    }
    return 0;
}

/* After the jump (or, for a parked thread, on the thread that takes its report), before
 * anything allocates: account for the abort message and release the arena lock the crashed
 * call held, if the evidence says it did. Returns the arena's address, or 0. Normal context;
 * allocates nothing. */
uint64_t kml_crash_release_arena(struct kml_raw_crash *c) {
    c->arena_released = 0;
    if (c->signo != SIGABRT || c->abort_msg_ptr == 0)
        return 0;
    atomic_store(&kml_abort_msg_seen, (uintptr_t)c->abort_msg_ptr);
    if (kml_main_arena == 0 || !kml_msg_under_lock(c->abort_msg))
        return 0;
    uintptr_t a = kml_main_arena;
    for (int k = 0; k < MAX_ARENAS; k++) {
        _Atomic int *lock = (_Atomic int *)a;
        if (atomic_load(lock) != 0 && (in_regs(c, a) || in_live_frames(c, a))) {
            /* glibc's lll_unlock: store 0; wake a waiter when the lock was contended (2). */
            if (atomic_exchange(lock, 0) > 1)
                syscall(SYS_futex, lock, FUTEX_WAKE_PRIVATE, 1, NULL, NULL, 0);
            c->arena_released = a;
            return a;
        }
        a = *(const uintptr_t *)(a + ARENA_NEXT);
        if (a == kml_main_arena || a == 0)
            break;
    }
    return 0;
}
