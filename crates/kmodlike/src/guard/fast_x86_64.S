/*
 * fast_x86_64.S: the start-up check of the crash path's sigjmp_buf (x86_64). The fast entry
 * itself is inline assembly in entry.rs (__guard_entry_asm!), expanded into each caller.
 */

    .text
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
