/*
 * text.c: the guard's tables of code, readable from the signal handler with atomics only:
 *   - the text ranges of every module (to attribute a fault on a thread without a guard, and to
 *     tell which module called a host callback);
 *   - the executable segments of every loaded object (to tell which stack words look like
 *     return addresses).
 * Writers run in normal context and serialise on kml_table_lock.
 */
#define _GNU_SOURCE
#include "shim.h"

#include <sys/mman.h>

/* --- module text ranges ------------------------------------------------------------------- */

/*
 * A two-level table the handler reads without a lock and without allocating (issue 11: a fixed
 * table of 8192 slots filled up after 8191 crashes whose code stayed mapped, and the next crash
 * on a module thread was fatal).
 *
 * Slots are {key, start, end}, key = module id + 1 (0 marks a free slot). They live in chunks of
 * KML_TEXT_CHUNK_SLOTS; the directory kml_text_chunks[] holds up to KML_TEXT_MAX_CHUNKS chunk
 * pointers. The first chunk is static, so a process with few modules never allocates; later
 * chunks are mapped on demand by a writer (normal context, mmap: a system call, no allocator
 * lock taken under kml_table_lock) and published with a release store of their pointer. A chunk
 * is never unmapped, so a pointer a reader loaded stays valid for the life of the process: the
 * table grows to the peak number of ranges registered at once and no further, because
 * unregistered slots are reused (lowest free slot first, so the scanned prefix stays short).
 *
 * Why the handler side is async-signal-safe: it only does atomic loads (the high-water mark, the
 * chunk pointers, the slots) and compares. It never takes kml_table_lock (a thread interrupted
 * while holding it would deadlock the handler) and never calls the allocator.
 *
 * Readers use the seqlock pattern per slot: load the key (acquire), load start/end, fence,
 * reload the key; a changed key means the slot was rewritten under us and is skipped. The
 * high-water mark (one past the highest slot ever used) bounds the scan; it is published after
 * the chunk pointer and the slot, so a reader that sees it sees both.
 *
 * When the table is really full (KML_TEXT_CAPACITY ranges registered at once), a registration
 * fails as a whole and the loader refuses the load with an error naming the module: a module
 * whose text is not in the table cannot have a fault on its own threads contained, so it must
 * not run at all.
 *
 * Both sizes can be lowered at build time (-DKML_TEXT_CHUNK_SLOTS=..., -DKML_TEXT_MAX_CHUNKS=...).
 */
#ifndef KML_TEXT_CHUNK_SLOTS
#define KML_TEXT_CHUNK_SLOTS 512
#endif
#ifndef KML_TEXT_MAX_CHUNKS
#define KML_TEXT_MAX_CHUNKS 512
#endif
#define KML_TEXT_CAPACITY ((uint32_t)KML_TEXT_CHUNK_SLOTS * (uint32_t)KML_TEXT_MAX_CHUNKS)

struct kml_text_slot {
    _Atomic uint64_t key;
    _Atomic uint64_t start;
    _Atomic uint64_t end;
};
static struct kml_text_slot kml_text_first_chunk[KML_TEXT_CHUNK_SLOTS];
static struct kml_text_slot *_Atomic kml_text_chunks[KML_TEXT_MAX_CHUNKS] = {kml_text_first_chunk};
static _Atomic uint32_t kml_text_hwm;
/* Writers only, under kml_table_lock: slots in use, chunks mapped, and a lower bound of the
 * lowest free slot. */
static uint32_t kml_text_used;
static uint32_t kml_text_nchunks = 1;
static uint32_t kml_text_free_hint;
static pthread_mutex_t kml_table_lock = PTHREAD_MUTEX_INITIALIZER;

/* Async-signal-safe (atomic loads only). The slot at index i, or NULL when its chunk is not
 * mapped (never the case below the high-water mark, but a reader does not rely on it). */
static struct kml_text_slot *kml_text_slot_at(uint32_t i) {
    struct kml_text_slot *chunk = atomic_load_explicit(&kml_text_chunks[i / KML_TEXT_CHUNK_SLOTS],
                                                       memory_order_acquire);
    return chunk == NULL ? NULL : &chunk[i % KML_TEXT_CHUNK_SLOTS];
}

/* Async-signal-safe: atomic loads only. Returns id + 1 of the module whose text holds addr,
 * or 0. */
uint64_t kml_text_key_at(uint64_t addr) {
    uint32_t n = atomic_load_explicit(&kml_text_hwm, memory_order_acquire);
    for (uint32_t i = 0; i < n; i++) {
        struct kml_text_slot *s = kml_text_slot_at(i);
        if (s == NULL) {
            i += KML_TEXT_CHUNK_SLOTS - 1 - i % KML_TEXT_CHUNK_SLOTS; /* skip the chunk */
            continue;
        }
        uint64_t key = atomic_load_explicit(&s->key, memory_order_acquire);
        if (key == 0)
            continue;
        uint64_t start = atomic_load_explicit(&s->start, memory_order_relaxed);
        uint64_t end = atomic_load_explicit(&s->end, memory_order_relaxed);
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&s->key, memory_order_relaxed) != key)
            continue;
        if (addr >= start && addr < end)
            return key;
    }
    return 0;
}

/* Writer, lock held: the lowest free slot at or above the hint, mapping its chunk when needed.
 * UINT32_MAX when none can be had (the caller checked the capacity, so only when mmap fails). */
static uint32_t kml_text_claim_locked(void) {
    for (uint32_t i = kml_text_free_hint; i < KML_TEXT_CAPACITY; i++) {
        uint32_t c = i / KML_TEXT_CHUNK_SLOTS;
        if (c >= kml_text_nchunks) {
            /* Normal context: mmap is a system call and takes no lock of the allocator's, so
             * fork()'s handlers (which take kml_table_lock) cannot deadlock against it. */
            void *p = mmap(NULL, sizeof(struct kml_text_slot) * KML_TEXT_CHUNK_SLOTS,
                           PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
            if (p == MAP_FAILED)
                return UINT32_MAX;
            /* Zeroed by the kernel: every slot free. Release: a reader that loads the pointer
             * sees the zeroed slots. */
            atomic_store_explicit(&kml_text_chunks[c], (struct kml_text_slot *)p,
                                  memory_order_release);
            kml_text_nchunks = c + 1;
        }
        struct kml_text_slot *s = kml_text_slot_at(i);
        if (atomic_load_explicit(&s->key, memory_order_relaxed) == 0) {
            kml_text_free_hint = i + 1;
            return i;
        }
    }
    return UINT32_MAX;
}

/* Writer, lock held: free slot i. */
static void kml_text_free_locked(uint32_t i) {
    struct kml_text_slot *s = kml_text_slot_at(i);
    atomic_store_explicit(&s->key, 0, memory_order_relaxed);
    /* Order the key's clearing before the range's rewrite (a reader that saw the old key and
     * then a new range fails its key re-check). */
    atomic_thread_fence(memory_order_release);
    atomic_store_explicit(&s->start, 0, memory_order_relaxed);
    atomic_store_explicit(&s->end, 0, memory_order_relaxed);
    kml_text_used--;
    if (i < kml_text_free_hint)
        kml_text_free_hint = i;
}

/*
 * Publish the n text ranges (start/end pairs) of module_id: all of them, or none. Returns 0, -1
 * for an invalid argument (id UINT64_MAX, an empty range), -2 when the table is full (or a chunk
 * cannot be mapped). Normal context only.
 */
int kml_register_module_text(uint64_t module_id, const uint64_t *ranges, uint32_t n) {
    if (module_id == UINT64_MAX)
        return -1;
    for (uint32_t k = 0; k < n; k++)
        if (ranges[2 * k] >= ranges[2 * k + 1])
            return -1;
    pthread_mutex_lock(&kml_table_lock);
    if (n > KML_TEXT_CAPACITY - kml_text_used) {
        pthread_mutex_unlock(&kml_table_lock);
        return -2;
    }
    uint32_t taken[64];
    uint32_t k = 0;
    int rc = 0;
    for (; k < n; k++) {
        uint32_t i = kml_text_claim_locked();
        if (i == UINT32_MAX) {
            rc = -2;
            break;
        }
        struct kml_text_slot *s = kml_text_slot_at(i);
        atomic_store_explicit(&s->start, ranges[2 * k], memory_order_relaxed);
        atomic_store_explicit(&s->end, ranges[2 * k + 1], memory_order_relaxed);
        atomic_store_explicit(&s->key, module_id + 1, memory_order_release);
        kml_text_used++;
        if (k < 64)
            taken[k] = i;
        if (atomic_load_explicit(&kml_text_hwm, memory_order_relaxed) < i + 1)
            atomic_store_explicit(&kml_text_hwm, i + 1, memory_order_release);
    }
    if (rc != 0) {
        /* All or none: give back what this call took (a module has far fewer than 64 text
         * segments; beyond that, the slower scan by key). */
        if (k <= 64) {
            for (uint32_t j = 0; j < k; j++)
                kml_text_free_locked(taken[j]);
        } else {
            uint32_t hwm = atomic_load_explicit(&kml_text_hwm, memory_order_relaxed);
            for (uint32_t i = 0; i < hwm; i++)
                if (atomic_load_explicit(&kml_text_slot_at(i)->key, memory_order_relaxed) ==
                    module_id + 1)
                    kml_text_free_locked(i);
        }
    }
    pthread_mutex_unlock(&kml_table_lock);
    return rc;
}

void kml_unregister_module(uint64_t module_id) {
    pthread_mutex_lock(&kml_table_lock);
    uint32_t n = atomic_load_explicit(&kml_text_hwm, memory_order_relaxed);
    for (uint32_t i = 0; i < n; i++) {
        struct kml_text_slot *s = kml_text_slot_at(i);
        if (atomic_load_explicit(&s->key, memory_order_relaxed) == module_id + 1)
            kml_text_free_locked(i);
    }
    pthread_mutex_unlock(&kml_table_lock);
}

/* Normal context: the table's figures, for tests and docs (ranges in use, high-water mark,
 * chunks mapped, capacity). */
void kml_text_stats(uint32_t *used, uint32_t *hwm, uint32_t *chunks, uint32_t *capacity) {
    pthread_mutex_lock(&kml_table_lock);
    *used = kml_text_used;
    *hwm = atomic_load_explicit(&kml_text_hwm, memory_order_relaxed);
    *chunks = kml_text_nchunks;
    *capacity = KML_TEXT_CAPACITY;
    pthread_mutex_unlock(&kml_table_lock);
}

/* Normal context only (not for the handler): the module whose text holds addr. */
int kml_module_at(uint64_t addr, uint64_t *module_id) {
    uint64_t key = kml_text_key_at(addr);
    if (key == 0)
        return 0;
    *module_id = key - 1;
    return 1;
}

/* --- executable segments of every loaded object --------------------------------------------- */

/*
 * Snapshot of the executable PT_LOAD segments of all loaded objects (libc, ld.so, the host,
 * ...), so the handler can tell which stack words look like return addresses. Refreshed in
 * normal context (dl_iterate_phdr is not async-signal-safe) at install and whenever a module
 * is registered; read by the handler under a sequence counter (odd while a refresh writes).
 */
#define KML_CODE_RANGES 1024
static _Atomic uint64_t kml_code_start[KML_CODE_RANGES];
static _Atomic uint64_t kml_code_end[KML_CODE_RANGES];
static _Atomic uint32_t kml_code_count;
static _Atomic uint32_t kml_code_seq;

static int kml_collect_code(struct dl_phdr_info *info, size_t size, void *data) {
    (void)size;
    uint32_t *n = data;
    for (int i = 0; i < info->dlpi_phnum && *n < KML_CODE_RANGES; i++) {
        const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
        if (ph->p_type != PT_LOAD || !(ph->p_flags & PF_X))
            continue;
        uint64_t start = (uint64_t)info->dlpi_addr + ph->p_vaddr;
        atomic_store_explicit(&kml_code_start[*n], start, memory_order_relaxed);
        atomic_store_explicit(&kml_code_end[*n], start + ph->p_memsz, memory_order_relaxed);
        (*n)++;
    }
    return 0;
}

/* dl_iterate_phdr's object counters: every entry carries the same dlpi_adds/dlpi_subs, so
 * reading the first entry and stopping is enough (O(1), whatever is loaded). */
static int kml_read_adds(struct dl_phdr_info *info, size_t size, void *data) {
    if (size >= offsetof(struct dl_phdr_info, dlpi_adds) + sizeof info->dlpi_adds)
        *(unsigned long long *)data = info->dlpi_adds;
    return 1;
}

/* dlpi_adds when the table was last brought up to date; under kml_table_lock. */
static unsigned long long kml_code_adds;

/* Rebuild the table from every loaded object. Caller holds kml_table_lock. */
static void kml_refresh_locked(void) {
    atomic_fetch_add_explicit(&kml_code_seq, 1, memory_order_relaxed); /* odd: writing */
    atomic_thread_fence(memory_order_release);
    uint32_t n = 0;
    dl_iterate_phdr(kml_collect_code, &n);
    atomic_store_explicit(&kml_code_count, n, memory_order_relaxed);
    atomic_fetch_add_explicit(&kml_code_seq, 1, memory_order_release); /* even: stable */
    kml_code_adds = 0;
    dl_iterate_phdr(kml_read_adds, &kml_code_adds);
}

void kml_refresh_code_ranges(void) {
    pthread_mutex_lock(&kml_table_lock);
    kml_refresh_locked();
    pthread_mutex_unlock(&kml_table_lock);
}

/*
 * A module was loaded whose executable segments are `ranges` (n start/end pairs). When it is
 * the only object added since the table was last brought up to date (it needed no library that
 * was not already loaded), append its ranges: O(1). Otherwise, or when the table is full,
 * rebuild it from every loaded object: O(loaded objects). Ranges of objects unloaded since stay
 * until the next rebuild; the handler only uses the table to tell whether a stack word looks
 * like a return address, so a stale range costs at most a wasted dladdr after the jump.
 */
void kml_code_ranges_after_load(const uint64_t *ranges, uint32_t n) {
    pthread_mutex_lock(&kml_table_lock);
    unsigned long long adds = 0;
    dl_iterate_phdr(kml_read_adds, &adds);
    uint32_t count = atomic_load_explicit(&kml_code_count, memory_order_relaxed);
    if (kml_code_adds != 0 && adds == kml_code_adds + 1 && count + n <= KML_CODE_RANGES) {
        atomic_fetch_add_explicit(&kml_code_seq, 1, memory_order_relaxed); /* odd: writing */
        atomic_thread_fence(memory_order_release);
        for (uint32_t i = 0; i < n; i++) {
            atomic_store_explicit(&kml_code_start[count + i], ranges[2 * i], memory_order_relaxed);
            atomic_store_explicit(&kml_code_end[count + i], ranges[2 * i + 1],
                                  memory_order_relaxed);
        }
        atomic_store_explicit(&kml_code_count, count + n, memory_order_relaxed);
        atomic_fetch_add_explicit(&kml_code_seq, 1, memory_order_release); /* even: stable */
        kml_code_adds = adds;
    } else {
        kml_refresh_locked();
    }
    pthread_mutex_unlock(&kml_table_lock);
}

/* Async-signal-safe: atomic loads only. 1 if addr lies in a known executable segment, 0 if
 * not, -1 if a refresh kept racing with us (the caller treats that as "don't know"). */
int kml_is_code(uint64_t addr) {
    for (int attempt = 0; attempt < 4; attempt++) {
        uint32_t seq = atomic_load_explicit(&kml_code_seq, memory_order_acquire);
        if (seq & 1)
            continue;
        uint32_t n = atomic_load_explicit(&kml_code_count, memory_order_relaxed);
        int found = 0;
        for (uint32_t i = 0; i < n && i < KML_CODE_RANGES; i++) {
            uint64_t s = atomic_load_explicit(&kml_code_start[i], memory_order_relaxed);
            uint64_t e = atomic_load_explicit(&kml_code_end[i], memory_order_relaxed);
            if (addr >= s && addr < e) {
                found = 1;
                break;
            }
        }
        atomic_thread_fence(memory_order_acquire);
        if (atomic_load_explicit(&kml_code_seq, memory_order_relaxed) == seq)
            return found;
    }
    return -1;
}

/* fork(): hold the table lock across fork(), so the child's copy is never locked by a thread that
 * does not exist there (prepare/parent in the parent, child in the child: unlocked by this very
 * thread, which locked it in prepare). */
void kml_text_atfork_prepare(void) { pthread_mutex_lock(&kml_table_lock); }
void kml_text_atfork_parent(void) { pthread_mutex_unlock(&kml_table_lock); }
void kml_text_atfork_child(void) { pthread_mutex_unlock(&kml_table_lock); }
