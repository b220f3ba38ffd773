/*
 * objc_msgSend for GCC's libobjc on x86-64 (System V ABI).
 *
 * Apple's runtime (and libobjc2) export objc_msgSend, a trampoline that finds the
 * method's implementation and jumps to it with every argument register untouched. GCC's
 * libobjc has only the two-step form, `IMP objc_msg_lookup(id self, SEL _cmd)`. This
 * trampoline joins the two: it saves every register that can carry an argument (rdi, rsi,
 * rdx, rcx, r8, r9, the vector count in al, xmm0-7), looks the implementation up, restores
 * them and tail-jumps, so the method sees exactly the call the caller made, whatever its
 * signature. Stack arguments are untouched because the jump leaves the caller's frame as
 * it was. A nil receiver gets libobjc's nil method, which returns 0.
 *
 * Stack: on entry rsp = 16n + 8 (the return address); 184 bytes of save area make it
 * 16-aligned for the call and for the aligned xmm stores.
 */
        .text
        .globl  objc_msgSend
        .type   objc_msgSend, @function
        .p2align 4
objc_msgSend:
        .cfi_startproc
        subq    $184, %rsp
        .cfi_adjust_cfa_offset 184
        movaps  %xmm0, 0(%rsp)
        movaps  %xmm1, 16(%rsp)
        movaps  %xmm2, 32(%rsp)
        movaps  %xmm3, 48(%rsp)
        movaps  %xmm4, 64(%rsp)
        movaps  %xmm5, 80(%rsp)
        movaps  %xmm6, 96(%rsp)
        movaps  %xmm7, 112(%rsp)
        movq    %rdi, 128(%rsp)
        movq    %rsi, 136(%rsp)
        movq    %rdx, 144(%rsp)
        movq    %rcx, 152(%rsp)
        movq    %r8, 160(%rsp)
        movq    %r9, 168(%rsp)
        movq    %rax, 176(%rsp)
        /* rdi = self and rsi = _cmd are already the lookup's arguments. */
        call    objc_msg_lookup@PLT
        movq    %rax, %r11
        movaps  0(%rsp), %xmm0
        movaps  16(%rsp), %xmm1
        movaps  32(%rsp), %xmm2
        movaps  48(%rsp), %xmm3
        movaps  64(%rsp), %xmm4
        movaps  80(%rsp), %xmm5
        movaps  96(%rsp), %xmm6
        movaps  112(%rsp), %xmm7
        movq    128(%rsp), %rdi
        movq    136(%rsp), %rsi
        movq    144(%rsp), %rdx
        movq    152(%rsp), %rcx
        movq    160(%rsp), %r8
        movq    168(%rsp), %r9
        movq    176(%rsp), %rax
        addq    $184, %rsp
        .cfi_adjust_cfa_offset -184
        /* r11 is scratch in the ABI and never carries an argument. */
        jmp     *%r11
        .cfi_endproc
        .size   objc_msgSend, .-objc_msgSend

        .section .note.GNU-stack,"",@progbits
