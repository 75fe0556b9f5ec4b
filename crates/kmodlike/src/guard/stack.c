/*
 * stack.c: what the handler reads about a fault: the registers in the ucontext, words of the
 * faulting stack (through process_vm_readv, which never faults), whether a word looks like a
 * return address. Everything here is async-signal-safe.
 */
#define _GNU_SOURCE
#include "shim.h"

/*
 * Is this signal a consequence of what this thread was executing (as opposed to a signal sent
 * from elsewhere)? Hardware faults and seccomp traps carry a positive si_code (SEGV_MAPERR,
 * FPE_INTDIV, SYS_SECCOMP, ...); raise() and abort() send the signal to the calling thread with
 * tgkill(), which the kernel tags SI_TKILL with our own pid. A kill() from another process
 * (SI_USER) is never ours.
 */
int kml_is_synchronous(int signo, const siginfo_t *si) {
    if (si->si_code > 0 && signo != SIGABRT)
        return 1;
    /* getpid(): async-signal-safe (a plain system call since glibc 2.25). */
    return si->si_code == SI_TKILL && si->si_pid == getpid();
}

/* Did the signal interrupt a system call, which fails with EINTR (a handler installed without
 * SA_RESTART)? The PC is right after the system call instruction and the result register holds
 * -EINTR. Async-signal-safe: reads the context and the instruction before the PC (in the
 * same page, so mapped: the PC's page is executable). */
int kml_context_interrupted_syscall(const void *ucv) {
    const ucontext_t *uc = ucv;
#if defined(__x86_64__)
    uint64_t pc = (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
    if ((int64_t)uc->uc_mcontext.gregs[REG_RAX] != -EINTR || (pc & 4095) < 2)
        return 0;
    const unsigned char *p = (const unsigned char *)(uintptr_t)(pc - 2);
    return p[0] == 0x0f && p[1] == 0x05; /* syscall */
#elif defined(__aarch64__)
    uint64_t pc = (uint64_t)uc->uc_mcontext.pc;
    if ((int64_t)uc->uc_mcontext.regs[0] != -EINTR || (pc & 4095) < 4)
        return 0;
    return *(const uint32_t *)(uintptr_t)(pc - 4) == 0xd4000001u; /* svc #0 */
#endif
}

void kml_context_regs(const void *ucv, uint64_t *pc, uint64_t *sp) {
    const ucontext_t *uc = ucv;
#if defined(__x86_64__)
    *pc = (uint64_t)uc->uc_mcontext.gregs[REG_RIP];
    *sp = (uint64_t)uc->uc_mcontext.gregs[REG_RSP];
#elif defined(__aarch64__)
    *pc = (uint64_t)uc->uc_mcontext.pc;
    *sp = (uint64_t)uc->uc_mcontext.sp;
#else
#error "kmodlike's crash guard supports x86_64 and aarch64 Linux"
#endif
}

/*
 * Copy len bytes at addr into out with process_vm_readv() on our own pid: a system call that
 * copies what is mapped and stops (short count or EFAULT) at the first unmapped page instead of
 * faulting, so a wild address can never fault the handler. Returns the bytes copied.
 */
ssize_t kml_read_memory(uint64_t addr, void *out, size_t len) {
    struct iovec local = {.iov_base = out, .iov_len = len};
    struct iovec remote = {.iov_base = (void *)(uintptr_t)addr, .iov_len = len};
    return process_vm_readv(getpid(), &local, 1, &remote, 1, 0);
}

/*
 * Does the instruction just before w look like a call, i.e. could w be a return address rather
 * than any other pointer into code (a function pointer in a local, a stale value)? Reads the
 * code bytes with kml_read_memory.
 */
int kml_follows_call(uint64_t w) {
    unsigned char b[8];
    if (w < 8 || kml_read_memory(w - 8, b, sizeof b) != (ssize_t)sizeof b)
        return 0;
#if defined(__x86_64__)
    /* call rel32: E8 xx xx xx xx, ending at w. */
    if (b[3] == 0xE8)
        return 1;
    /* call r/m64: FF /2, 2 to 7 bytes long (register, [reg+disp8], [rip+disp32], SIB forms). */
    for (int k = 2; k <= 7; k++)
        if (b[8 - k] == 0xFF && ((b[8 - k + 1] >> 3) & 7) == 2)
            return 1;
    return 0;
#elif defined(__aarch64__)
    uint32_t insn = (uint32_t)b[4] | (uint32_t)b[5] << 8 | (uint32_t)b[6] << 16 |
                    (uint32_t)b[7] << 24;
    return (insn & 0xFC000000u) == 0x94000000u    /* BL imm26 */
           || (insn & 0xFFFFFC1Fu) == 0xD63F0000u; /* BLR Xn */
#else
    return 1;
#endif
}

/*
 * Walk the stack from sp towards older frames (higher addresses), up to limit (when above sp)
 * and at most max_bytes, looking for return addresses: words that point into code just after a
 * call instruction. Stale values are everywhere on a stack (slots a frame reserved but never
 * wrote keep what earlier, deeper calls left there), so nothing here is proof; nearest first is
 * the best order of evidence.
 *
 *   - Return addresses outside every module (libc and friends) go to c->stack_words, nearest
 *     first, up to KML_STACK_WORDS (kept in the record for the curious; the loader's taint
 *     verdict no longer reads them: it unwinds the stack copy of kml_copy_stack instead).
 *   - The first return address into a module's text gives the returned module key (id + 1),
 *     or 0: it attributes an abort on a thread without a guard.
 *
 * The stack is read in chunks into a buffer on the handler's (alternate) stack.
 */
uint64_t kml_scan_stack(uint64_t sp, uint64_t limit, size_t max_bytes,
                               struct kml_raw_crash *c) {
    uint64_t buf[128];
    uint64_t found = 0;
    sp &= ~(uint64_t)7;
    uint64_t end = sp + max_bytes;
    if (limit > sp && limit < end)
        end = limit;
    for (uint64_t at = sp; at < end;) {
        size_t want = sizeof buf;
        if (end - at < want)
            want = (size_t)(end - at);
        ssize_t got = kml_read_memory(at, buf, want);
        if (got <= 0)
            break;
        size_t words = (size_t)got / sizeof(uint64_t);
        for (size_t i = 0; i < words; i++) {
            uint64_t w = buf[i];
            uint64_t key = kml_text_key_at(w);
            if (key != 0) {
                if (found == 0 && kml_follows_call(w))
                    found = key;
                continue;
            }
            if (c->n_stack_words < KML_STACK_WORDS && kml_is_code(w) == 1 && kml_follows_call(w))
                c->stack_words[c->n_stack_words++] = w;
        }
        if (found != 0 && c->n_stack_words >= KML_STACK_WORDS)
            break;
        if ((size_t)got < want)
            break;
        at += (uint64_t)got;
    }
    return found;
}

/*
 * For the unwinder (run by the loader after the jump, in normal context): the frame pointer and
 * link register of the fault, and a copy of the faulting stack from the SP up to limit (the
 * guard's own frame: the unwinder needs nothing older) and at most KML_STACK_COPY bytes, into
 * buf (KML_STACK_COPY bytes allocated in normal context before the call; NULL: no copy).
 * Async-signal-safe: plain loads from the ucontext, stores into c, and process_vm_readv
 * (kml_read_memory), a system call that stops at the first unmapped page instead of faulting,
 * into memory this thread owns. Nothing is allocated.
 */
void kml_copy_stack(struct kml_raw_crash *c, const void *ucv, uint64_t limit, uint8_t *buf) {
    const ucontext_t *uc = ucv;
#if defined(__x86_64__)
    c->fp = (uint64_t)uc->uc_mcontext.gregs[REG_RBP];
    c->lr = 0;
#elif defined(__aarch64__)
    c->fp = (uint64_t)uc->uc_mcontext.regs[29];
    c->lr = (uint64_t)uc->uc_mcontext.regs[30];
#endif
    c->copy_buf = (uint64_t)(uintptr_t)buf;
    c->copy_len = 0;
    if (buf == NULL)
        return;
    uint64_t end = c->sp + KML_STACK_COPY;
    if (limit > c->sp && limit < end)
        end = limit;
    if (end <= c->sp)
        return;
    ssize_t got = kml_read_memory(c->sp, buf, (size_t)(end - c->sp));
    if (got > 0)
        c->copy_len = (uint32_t)got;
}

/* Fill c with what the kernel told us. Async-signal-safe: plain stores into c, getpid(),
 * gettid (a raw system call), clock_gettime (listed in signal-safety(7)). */
void kml_record(struct kml_raw_crash *c, int signo, const siginfo_t *si, const void *uc,
                       uint64_t module_id) {
    c->signo = signo;
    c->code = si->si_code;
    /* si_addr is meaningful only for kernel-generated faults; for SI_TKILL the same bytes hold
     * si_pid/si_uid. */
    c->addr = si->si_code > 0 ? (uint64_t)(uintptr_t)si->si_addr : 0;
    kml_context_regs(uc, &c->pc, &c->sp);
    c->module_id = module_id;
    c->tid = (int32_t)syscall(SYS_gettid);
    struct timespec ts = {0, 0};
    clock_gettime(CLOCK_REALTIME, &ts);
    c->time_sec = ts.tv_sec;
    c->time_nsec = ts.tv_nsec;
    c->on_module_thread = 0;
    c->n_stack_words = 0;
    c->fp = 0;
    c->lr = 0;
    c->copy_buf = 0;
    c->copy_len = 0;
    c->cause = KML_CAUSE_SIGNAL;
    c->arena_released = 0;
    const ucontext_t *u = uc;
#if defined(__x86_64__)
    static const int saved[6] = {REG_RBX, REG_RBP, REG_R12, REG_R13, REG_R14, REG_R15};
    for (int i = 0; i < KML_SAVED_REGS; i++)
        c->saved_regs[i] = i < 6 ? (uint64_t)u->uc_mcontext.gregs[saved[i]] : 0;
#elif defined(__aarch64__)
    for (int i = 0; i < KML_SAVED_REGS; i++)
        c->saved_regs[i] = (uint64_t)u->uc_mcontext.regs[19 + i];
#else
    for (int i = 0; i < KML_SAVED_REGS; i++)
        c->saved_regs[i] = 0;
#endif
    if (signo == SIGABRT)
        kml_note_abort(c);
    else {
        c->abort_msg[0] = 0;
        c->abort_msg_ptr = 0;
    }
}

/* Does w look like a return address (the instruction before it is a call)? Normal context. */
int kml_looks_like_return(uint64_t w) { return kml_follows_call(w); }

/*
 * A real-time signal the guard's handler (sampling, interrupt) found not to be its own: do what
 * would have happened without us, from the action we replaced. Async-signal-safe: the previous
 * handler (already entitled to run in signal context), sigaction() and raise(); errno is
 * saved_errno for the previous handler and on return.
 */
void kml_chain_rt_signal(const struct sigaction *prev, int signo, siginfo_t *si, void *uc,
                         int saved_errno) {
    if (prev->sa_flags & SA_SIGINFO) {
        errno = saved_errno;
        prev->sa_sigaction(signo, si, uc);
    } else if (prev->sa_handler == SIG_IGN) {
        /* ignored, as before */
    } else if (prev->sa_handler == SIG_DFL) {
        /* The default action of a real-time signal terminates the process: do that. */
        struct sigaction dfl;
        memset(&dfl, 0, sizeof dfl);
        dfl.sa_handler = SIG_DFL;
        sigemptyset(&dfl.sa_mask);
        sigaction(signo, &dfl, NULL);
        raise(signo);
    } else {
        errno = saved_errno;
        prev->sa_handler(signo);
    }
    errno = saved_errno;
}
