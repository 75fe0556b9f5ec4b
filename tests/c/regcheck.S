/*
 * regcheck.S: the callee-saved register check of tests/c/guard_stress.c (after the fast-guard
 * prototype's regcheck.S). x86_64 only; on other machines the file is empty and the host skips
 * the check, saying so.
 *
 * unsigned kml_regcheck(int (*guard)(void *, void *, void *), void *a0, void *a1, void *a2)
 *     Load known patterns into rbx, rbp, r12-r15, call guard(a0, a1, a2), and return a bitmask
 *     of the registers whose value changed (bit 0 rbx, 1 rbp, 2 r12 .. 5 r15) or'ed with the
 *     guard's return value (low byte) << 8. A guard that returns, normally or after a
 *     recovered crash, must give the caller back every callee-saved register.
 *
 * void kml_clobber_then_call(struct { long (*fn)(long); long arg; long ret; } *req)
 *     Overwrite rbx, rbp, r12-r15 with junk, then req->ret = req->fn(req->arg). Run as the
 *     guarded function: when fn faults, the registers at the fault are all junk, and only the
 *     guard's own state can bring the caller's back. When fn returns, the registers are
 *     restored as the ABI requires.
 *
 * int kml_broken_guard(void *, void *, void *)
 *     The control: returns 0 with rbx and r15 zeroed, as a guard that forgot to restore them
 *     would. kml_regcheck must report mask 0x21 for it, or the check checks nothing.
 */
#if defined(__x86_64__)
    .text
    .globl kml_regcheck
    .type kml_regcheck,@function
kml_regcheck:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    sub $8, %rsp                 /* 16-byte alignment at the call below */
    mov %rdi, %rax
    mov %rsi, %rdi
    mov %rdx, %rsi
    mov %rcx, %rdx
    movabs $0xb0b0b0b0b0b0b0b0, %rbx
    movabs $0xb1b1b1b1b1b1b1b1, %rbp
    movabs $0xc2c2c2c2c2c2c2c2, %r12
    movabs $0xc3c3c3c3c3c3c3c3, %r13
    movabs $0xc4c4c4c4c4c4c4c4, %r14
    movabs $0xc5c5c5c5c5c5c5c5, %r15
    call *%rax
    movzbl %al, %eax
    shl $8, %eax
    movabs $0xb0b0b0b0b0b0b0b0, %rcx
    cmp %rcx, %rbx
    je 1f
    or $1, %eax
1:  movabs $0xb1b1b1b1b1b1b1b1, %rcx
    cmp %rcx, %rbp
    je 1f
    or $2, %eax
1:  movabs $0xc2c2c2c2c2c2c2c2, %rcx
    cmp %rcx, %r12
    je 1f
    or $4, %eax
1:  movabs $0xc3c3c3c3c3c3c3c3, %rcx
    cmp %rcx, %r13
    je 1f
    or $8, %eax
1:  movabs $0xc4c4c4c4c4c4c4c4, %rcx
    cmp %rcx, %r14
    je 1f
    or $16, %eax
1:  movabs $0xc5c5c5c5c5c5c5c5, %rcx
    cmp %rcx, %r15
    je 1f
    or $32, %eax
1:  add $8, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret
    .size kml_regcheck, .-kml_regcheck

    .globl kml_clobber_then_call
    .type kml_clobber_then_call,@function
kml_clobber_then_call:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    sub $8, %rsp
    mov %rdi, (%rsp)             /* keep req: every callee-saved register is about to be junk */
    mov (%rdi), %rax
    mov 8(%rdi), %rdi
    movabs $0x1111111111111111, %rbx
    movabs $0x2222222222222222, %rbp
    movabs $0x3333333333333333, %r12
    movabs $0x4444444444444444, %r13
    movabs $0x5555555555555555, %r14
    movabs $0x6666666666666666, %r15
    call *%rax
    mov (%rsp), %rcx
    mov %rax, 16(%rcx)
    add $8, %rsp
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret
    .size kml_clobber_then_call, .-kml_clobber_then_call

    .globl kml_broken_guard
    .type kml_broken_guard,@function
kml_broken_guard:
    xor %ebx, %ebx
    xor %r15d, %r15d
    xor %eax, %eax
    ret
    .size kml_broken_guard, .-kml_broken_guard
#endif
    .section .note.GNU-stack,"",@progbits
