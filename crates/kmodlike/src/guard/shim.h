/*
 * shim.h: what the files of the guard's C shim share (guard.c, text.c, park.c, stack.c,
 * sample.c). Private to kmodlike: every symbol is hidden (-fvisibility=hidden).
 */
#ifndef KML_SHIM_H
#define KML_SHIM_H

#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <link.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <ucontext.h>
#include <unistd.h>

/* Shared layout with mod.rs (struct CRawCrash there must match field for field). */
#define KML_STACK_WORDS 32
/* The most bytes of the faulting stack the handler copies for the unwinder (from the SP up). */
#define KML_STACK_COPY 65536
/* Callee-saved registers kept at the fault (x86_64: rbx rbp r12-r15; aarch64: x19-x28). */
#define KML_SAVED_REGS 10
/* The most bytes of glibc's abort message (__abort_msg) a record keeps, with the NUL. */
#define KML_ABORT_MSG 160

/* What the handler records about one fatal signal: raw numbers only. */
struct kml_raw_crash {
    int32_t signo;
    int32_t code;
    uint64_t addr;
    uint64_t pc;
    uint64_t sp;
    uint64_t module_id;
    int64_t time_sec;
    int64_t time_nsec;
    int32_t tid;
    int32_t on_module_thread;
    uint32_t n_stack_words;
    uint32_t cause; /* KML_CAUSE_*: a fatal signal, or the module called exit (code = status) */
    uint64_t stack_words[KML_STACK_WORDS];
    /* What the unwinder needs (crash forensics), filled for a crash the guard recovers:
     * the frame pointer and link register at the fault (lr: aarch64 only, else 0), and the
     * copy of the faulting stack from sp: copy_len bytes at copy_buf (a per-thread buffer the
     * crash's guard owns; 0 bytes when there was no buffer or nothing could be read). */
    uint64_t fp;
    uint64_t lr;
    uint64_t copy_buf;
    uint32_t copy_len;
    uint32_t copy_pad;
    /* arena.c: the callee-saved registers at the fault; for a SIGABRT, glibc's message when it
     * was new (abort_msg_ptr: the buffer it came from, or 0); the arena whose lock the loader
     * released after the jump, or 0. */
    uint64_t saved_regs[KML_SAVED_REGS];
    uint64_t abort_msg_ptr;
    uint64_t arena_released;
    char abort_msg[KML_ABORT_MSG];
};

/* A module as the fast entry sees it: struct GuardModule in mod.rs, field for field. Records are
 * pooled by mod.rs and never freed, so a stale pointer to one is never a dangling one. */
struct kml_gmod {
    _Atomic uint32_t state; /* ModuleState; 1 (live) is the only callable state */
    uint32_t pad;
    uint64_t id;
    uint64_t calls; /* bumped by the entry with a plain add */
    uint64_t slow_entered, slow_left;
};

/* One guarded call of the fast entry in progress. The entry (fast_x86_64.S, or the inline
 * entry in entry.rs) writes module, frame, landing and, for the inline entry, the callee-saved
 * registers the landing pad must find again (the out-of-line entry pushes them instead). */
#define KML_DEPTH 32
struct kml_slot {
    struct kml_gmod *_Atomic module; /* 0: read by unloaders on other threads (relaxed) */
    uint64_t frame;                  /* 8: rsp the landing pad resumes with */
    uint64_t landing;                /* 16: the landing pad */
    uint32_t mask_saved;             /* 24: masks[i] holds the mask to put back at the end */
    uint32_t pad;
    uint64_t rbp, rbx, r12, r13, r14, r15; /* 32..80: restored at the landing pad */
    uint64_t deadline;               /* 80: room for a deadline (hung calls) */
    uint64_t reserved[5];
};

/* A thread that calls into modules (fast.c). */
struct kml_thread {
    uint32_t depth; /* slots in use */
    uint32_t limit; /* KML_DEPTH once registered */
    int32_t tid;
    uint32_t pad0;
    struct kml_thread *next, *prev; /* every record, under fast.c's lock */
    uint64_t pad1[4];
    struct kml_slot slot[KML_DEPTH];
    sigset_t masks[KML_DEPTH];
    struct kml_raw_crash crash; /* the last crash of a fast call on this thread */
    /* KML_STACK_COPY bytes (an anonymous mapping made at registration, or NULL): the
     * handler's copy of the crashed stack, read by the loader after the jump
     * (kml_fast_take_crash's copy_buf). */
    uint8_t *stack_copy;
};
extern __thread struct kml_thread *kml_self __attribute__((tls_model("initial-exec")));

/* fast.c */
uint8_t *kml_stack_copy_alloc(void);
void kml_stack_copy_free(uint8_t *p);
struct kml_slot *kml_fast_innermost(uint32_t records_depth_mark, int have_record);
void kml_fast_save_mask(struct kml_slot *s);
__attribute__((noreturn)) void kml_fast_resume(const sigset_t *mask);
void kml_fast_atfork_prepare(void);
void kml_fast_atfork_parent(void);
void kml_fast_atfork_child(void);

#define KML_CAUSE_SIGNAL 0
#define KML_CAUSE_EXIT 1

/* The six signals the guard handles (guard.c). */
#define KML_NSIGNALS 6
extern const int kml_signals[KML_NSIGNALS];

/* guard.c: hooks for interpose.c (the module's imports the loader redirects to the guard). */
/* 1, and *module_id, when a guarded call (not suspended by a host callback) is active on this
 * thread. Async-signal-safe. */
int kml_guard_top(uint64_t *module_id);
/* End the innermost guarded call on this thread as a contained failure: its module called exit
 * function `function` (interpose.c's KML_EXIT_*, kept in the record's addr) with `status`, from
 * `caller` (kept as the record's pc). Only when kml_guard_top() returned 1. */
__attribute__((noreturn)) void kml_guard_abandon_exit(int status, int function, uint64_t caller);
/* The module is about to change this thread's signal mask inside the innermost guarded call:
 * the guard saves the mask (once per call) and puts it back when that call ends. */
void kml_guard_mask_changing(void);

/* interpose.c: the handler the module itself installed for signo (through its redirected
 * sigaction/signal), run for a fault the guard attributes to that module. 1 when the module's
 * handler ran and returned (the faulting instruction runs again), 0 when it has none (the guard
 * recovers). Async-signal-safe. */
int kml_module_handler(uint64_t module_id, int signo, siginfo_t *si, void *uc);

/* text.c: module text ranges and every object's executable segments. Async-signal-safe. */
uint64_t kml_text_key_at(uint64_t addr); /* id + 1 of the module whose text holds addr, or 0 */
int kml_is_code(uint64_t addr);          /* 1, 0, or -1 (don't know) */
void kml_text_atfork_prepare(void);
void kml_text_atfork_parent(void);
void kml_text_atfork_child(void);

/* stack.c: reading the fault. Async-signal-safe. */
int kml_is_synchronous(int signo, const siginfo_t *si);
void kml_context_regs(const void *ucv, uint64_t *pc, uint64_t *sp);
ssize_t kml_read_memory(uint64_t addr, void *out, size_t len);
int kml_follows_call(uint64_t w);
void kml_copy_stack(struct kml_raw_crash *c, const void *uc, uint64_t limit, uint8_t *buf);
uint64_t kml_scan_stack(uint64_t sp, uint64_t limit, size_t max_bytes, struct kml_raw_crash *c);
void kml_record(struct kml_raw_crash *c, int signo, const siginfo_t *si, const void *uc,
                uint64_t module_id);

/* arena.c: glibc's allocator after an abort it raised itself. */
int kml_arena_discover(const char **why);          /* normal context, once */
void kml_note_abort(struct kml_raw_crash *c);       /* async-signal-safe */
uint64_t kml_crash_release_arena(struct kml_raw_crash *c); /* normal context, no allocation */

/* park.c: crashes on threads without a guard. */
__attribute__((noreturn)) void kml_park(const struct kml_raw_crash *c);
void kml_park_atfork_child(void);

/* sample.c */
void kml_sample_atfork_child(void);

#endif
