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
    /* A call ended by its deadline (cause KML_CAUSE_TIMEOUT): CLOCK_MONOTONIC nanoseconds of
     * its start, of its deadline and of the interrupt. 0 otherwise. */
    uint64_t call_start;
    uint64_t call_deadline;
    uint64_t call_stopped;
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
    /* The call's deadline (deadline.rs): copied by the entry from a struct
     * kml_deadline when the caller gives one, before the module is stored; else deadline is 0
     * (the entry's one extra store) and the others are stale. CLOCK_MONOTONIC nanoseconds.
     * deadline: 80, the hard deadline (1 = interrupt now: kml_interrupt_slot); soft: 88, when
     * to sample the stack (0 once sampled, or none); start: 96; func: 104, the function the
     * caller asked for (for reports and the list of calls in flight). */
    _Atomic uint64_t deadline;
    _Atomic uint64_t soft;
    uint64_t start;
    uint64_t func;
    uint64_t reserved[2];
};

/* What a caller with a deadline hands the entry (struct Deadline in deadline.rs). */
struct kml_deadline {
    uint64_t hard, soft, start, func;
};

/* A thread that calls into modules (fast.c). */
struct kml_thread {
    uint32_t depth; /* slots in use */
    uint32_t limit; /* KML_DEPTH once registered */
    int32_t tid;
    uint32_t pad0;
    struct kml_thread *next, *prev; /* every record, under fast.c's lock */
    /* Host callbacks (guard.c's trampolines) running on this thread: the watchdog holds an
     * interrupt (sets interrupt_pending) instead of sending it while this is non-zero. */
    _Atomic uint32_t suspended;
    /* An interrupt to deliver when the innermost host callback returns to module code. */
    _Atomic uint32_t interrupt_pending;
    /* 40: a deadline registered with the watchdog (deadline.rs) whose call's slot may not be
     * written yet: set before the watchdog is told, cleared by the entry once the slot holds
     * the deadline (or by guard.c's sigsetjmp entry once its record is published). The
     * watchdog's scan sees the one or the other. */
    _Atomic uint64_t pending;
    uint64_t pad1[2];
    struct kml_slot slot[KML_DEPTH];
    sigset_t masks[KML_DEPTH];
    struct kml_raw_crash crash; /* the last crash of a fast call on this thread */
    /* KML_STACK_COPY bytes (an anonymous mapping made at registration, or NULL): the
     * handler's copy of the crashed stack, read by the loader after the jump
     * (kml_fast_take_crash's copy_buf). */
    uint8_t *stack_copy;
    /* The deadline of the innermost call of guard.c's sigsetjmp entry that has one (module_init
     * and the lifecycle calls, or every call where the fast entry is off), for the watchdog;
     * rec_owner is its struct kml_guard (NULL: none). The owner thread writes them; the
     * watchdog reads them under fast.c's lock. */
    _Atomic uint64_t rec_deadline;
    _Atomic uint64_t rec_soft;
    uint64_t rec_start, rec_func, rec_module_id;
    void *_Atomic rec_owner;
    /* Where the interrupt handler last let the thread run on in library code (guard.c,
     * kml_interrupt_waits), for the watchdog: 0 when it never did; and how many times it did
     * (the watchdog asks again only once its last request was taken). */
    _Atomic uint64_t waited_pc;
    _Atomic uint64_t waits;
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
#define KML_CAUSE_TIMEOUT 2

/* fast.c: a thread record for a thread that has none, registered for the watchdog's scan but
 * not armed for the fast entry (limit 0). NULL when out of memory. Normal context. */
struct kml_thread *kml_thread_record(void);
/* deadline.rs: this thread is about to make a call with a deadline at `at`. */
void kml_deadline_pending(uint64_t at);
/* interrupt.c */
uint64_t kml_monotonic_ns(void);
int kml_interrupt_signo(void);
/* Send this thread the interrupt signal (a held interrupt, when a host callback returns). */
void kml_interrupt_self(void);
/* Send thread tid of this process the interrupt signal: 0, or -1 (errno). With insist, the
 * handler ends the call wherever the thread is; without, it waits (returns) while the thread
 * runs library code outside the module (guard.c, kml_interrupt_waits). */
int kml_interrupt_send(int32_t tid, int insist);
/* kml_interrupt_call's how (ffi.rs has the same): interrupt now, whatever the deadline (unload
 * --force); and insist. */
#define KML_INTERRUPT_NOW 1
#define KML_INTERRUPT_INSIST 2
/* guard.c: the interrupt request's work, on the interrupted thread (from its handler). */
void kml_guard_interrupt(int signo, siginfo_t *si, void *uc, int insist);

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
int kml_context_interrupted_syscall(const void *ucv);
ssize_t kml_read_memory(uint64_t addr, void *out, size_t len);
int kml_follows_call(uint64_t w);
void kml_copy_stack(struct kml_raw_crash *c, const void *uc, uint64_t limit, uint8_t *buf);
uint64_t kml_scan_stack(uint64_t sp, uint64_t limit, size_t max_bytes, struct kml_raw_crash *c);
/* A real-time signal that is not the guard's: run the action it replaced (sample.c, interrupt.c). */
void kml_chain_rt_signal(const struct sigaction *prev, int signo, siginfo_t *si, void *uc,
                         int saved_errno);
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
/* The sampling signal, or 0 before it is installed. */
int kml_sample_signal(void);
/* Block signo while the sampling handler runs (the interrupt signal: an interrupt must not
 * leave the sampling handler half-way, with the sampling signal blocked). */
void kml_sample_block_during(int signo);

#endif
