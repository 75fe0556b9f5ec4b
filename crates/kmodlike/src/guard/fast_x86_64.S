/*
 * fast_x86_64.S: the guarded call's entry (x86_64). See fast.c for the per-thread record and
 * the crash path, and mod.rs for the whole picture.
 *
 * int kml_fast_call(struct kml_gmod *m, void (*fn)(void *), void *ctx)
 *   0  fn(ctx) returned
 *   1  fn(ctx) raised a fatal signal, or its module called exit: the thread's crash record
 *      (kml_fast_take_crash) says which
 *   2  not run: this thread has no record yet, or guards nest too deep (the slow path)
 *   3  not run: the module is not live
 *
 * The hot path stores {module, frame, landing} in this thread's next slot and bumps the depth
 * with plain stores (no locked instruction, no fence, no system call), checks the module is live
 * with a plain load and calls fn. An unload orders those stores before its scan of the slots
 * with membarrier(MEMBARRIER_CMD_PRIVATE_EXPEDITED) (fast.c).
 *
 * The six callee-saved registers are pushed here and popped on both ways out: after a crash the
 * handler resumes at .Llanding with rsp = slot.frame (glibc's siglongjmp, so glibc's cleanup
 * regions run), and the landing finds its slot again from the thread record.
 */
#define KML_LIVE 1
#define KML_SLOT_SHIFT 6      /* 64-byte slots */
#define KML_SLOTS 64          /* offset of slot[0] in struct kml_thread */
#define KML_GMOD_CALLS 16     /* offset of kml_gmod.calls */
#define KML_SLOT_MASK_SAVED 24

    .text
    .globl kml_fast_call
    .hidden kml_fast_call
    .type kml_fast_call,@function
    .p2align 4
kml_fast_call:
    .cfi_startproc
    push %rbp
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbp, 0
    mov %rsp, %rbp
    .cfi_def_cfa_register %rbp
    push %rbx
    .cfi_offset %rbx, -24
    push %r12
    .cfi_offset %r12, -32
    push %r13
    .cfi_offset %r13, -40
    push %r14
    .cfi_offset %r14, -48
    push %r15
    .cfi_offset %r15, -56
    sub $8, %rsp                        /* rsp is 16-byte aligned for the call */
    movq kml_self@gottpoff(%rip), %rax
    movq %fs:(%rax), %r12               /* r12 = this thread's record (initial-exec TLS) */
    testq %r12, %r12
    jz .Lslow
    movl 0(%r12), %r13d                 /* r13 = d = depth */
    cmpl 4(%r12), %r13d                 /* limit */
    jae .Lslow
    movl %r13d, %eax
    shlq $KML_SLOT_SHIFT, %rax
    leaq KML_SLOTS(%r12,%rax), %r14     /* r14 = &slot[d] */
    movq %rdi, 0(%r14)                  /* slot.module = m */
    movq %rsp, 8(%r14)                  /* slot.frame */
    leaq .Llanding(%rip), %rax
    movq %rax, 16(%r14)                 /* slot.landing */
    leal 1(%r13), %eax
    movl %eax, 0(%r12)                  /* depth = d + 1: the slot is published */
    cmpl $KML_LIVE, 0(%rdi)             /* m->state */
    jne .Lnotlive
    addq $1, KML_GMOD_CALLS(%rdi)       /* m->calls++ (plain add: approximate under races) */
    movq %rdx, %rdi
    call *%rsi
    xorl %eax, %eax
.Lout:
    cmpl $0, KML_SLOT_MASK_SAVED(%r14)  /* the module changed the signal mask? */
    jne .Lmask
.Lpop:
    movl %r13d, 0(%r12)                 /* depth = d */
    movq $0, 0(%r14)                    /* slot.module = NULL */
.Lleave:
    lea -40(%rbp), %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    .cfi_def_cfa %rsp, 8
    ret
    .cfi_def_cfa %rbp, 16
.Lmask:
    movl %eax, %ebx                     /* keep the result across the call */
    movq %r14, %rdi
    call kml_fast_restore_mask
    movl %ebx, %eax
    jmp .Lpop
.Lnotlive:
    movl $3, %eax
    jmp .Lpop
.Lslow:
    movl $2, %eax
    jmp .Lleave
/* Resumed here by kml_fast_resume with rsp = slot.frame (rbp is junk: recompute it). */
.Llanding:
    lea 48(%rsp), %rbp
    movq kml_self@gottpoff(%rip), %rax
    movq %fs:(%rax), %r12
    movl 0(%r12), %r13d
    subl $1, %r13d
    movl %r13d, %eax
    shlq $KML_SLOT_SHIFT, %rax
    leaq KML_SLOTS(%r12,%rax), %r14
    movl $1, %eax
    jmp .Lout
    .cfi_endproc
    .size kml_fast_call, .-kml_fast_call

/*
 * void kml_probe_sigsetjmp(sigjmp_buf env, uintptr_t out[3]): call glibc's __sigsetjmp(env, 0)
 * and record what it should have saved: the stack pointer after it returns (out[0]), its return
 * address (out[1]) and rbp (out[2]). fast.c compares them, mangled its way, with what glibc
 * stored: the start-up check of the sigjmp_buf layout the crash path fabricates.
 */
    .globl kml_probe_sigsetjmp
    .hidden kml_probe_sigsetjmp
    .type kml_probe_sigsetjmp,@function
kml_probe_sigsetjmp:
    .cfi_startproc
    push %rbx
    .cfi_adjust_cfa_offset 8
    .cfi_rel_offset %rbx, 0
    mov %rsi, %rbx
    lea 1f(%rip), %rax
    mov %rax, 8(%rbx)
    mov %rsp, 0(%rbx)
    mov %rbp, 16(%rbx)
    xor %esi, %esi
    call __sigsetjmp@PLT
1:  pop %rbx
    .cfi_adjust_cfa_offset -8
    .cfi_restore %rbx
    ret
    .cfi_endproc
    .size kml_probe_sigsetjmp, .-kml_probe_sigsetjmp
    .section .note.GNU-stack,"",@progbits
