# Probe guests for `swiftvisor doctor`: tiny long-mode programs that measure what this
# host's KVM does with a guest. Linked at 0x100000 and started by the VMM in long mode
# with a user-accessible identity map (FlatBinary userAccessible) at one of the entry
# points below. Each ends by writing a result byte to the exit port 0x501.
#
#   exit_loop      EXITS port writes to 0x80 from ring 0: the exit round-trip cost
#   kernel_loop    LOOPS iterations of dec/jnz in ring 0: kernel-mode speed
#   user_loop      the same LOOPS in ring 3: user-mode speed
#   syscall_probe  SYSCALL from ring 3; the handler reports the privilege it runs at:
#                  0x50 for ring 0 (correct), 0x53 when SYSCALL left it in ring 3
#
# Built by scripts/build-guests into Sources/Boot/ProbeGuest.swift.

    .set EXIT_PORT, 0x501
    .set EXITS, 1000
    .set LOOPS, 300000
    .set USER_STACK, 0x80000
    .set SEL_USER_DATA, 0x20 | 3
    .set SEL_USER_CODE64, 0x28 | 3
    .set RFLAGS_IOPL3, 0x3002        # IOPL 3: ring 3 may use ports; interrupts off

    .text
    .code64
    .globl exit_loop, kernel_loop, user_loop, syscall_probe

exit_loop:
    movl $EXITS, %ecx
1:  outb %al, $0x80
    decl %ecx
    jnz 1b
    jmp done

kernel_loop:
    movl $LOOPS, %ecx
1:  decl %ecx
    jnz 1b
    jmp done

user_loop:
    leaq 1f(%rip), %rax
    jmp to_ring3
1:  movl $LOOPS, %ecx
2:  decl %ecx
    jnz 2b
    jmp done

syscall_probe:
    movl $0xC0000080, %ecx           # IA32_EFER.SCE: enable SYSCALL
    rdmsr
    orl $1, %eax
    wrmsr
    movl $0xC0000081, %ecx           # IA32_STAR: kernel CS 0x08 (SS 0x10)
    xorl %eax, %eax
    movl $0x00100008, %edx
    wrmsr
    movl $0xC0000082, %ecx           # IA32_LSTAR: the handler
    leaq syscall_handler(%rip), %rax
    movq %rax, %rdx
    shrq $32, %rdx
    wrmsr
    movl $0xC0000084, %ecx           # IA32_FMASK 0: keep IOPL 3, so the handler can
    xorl %eax, %eax                  # report even if it is (wrongly) still in ring 3
    xorl %edx, %edx
    wrmsr
    leaq 1f(%rip), %rax
    jmp to_ring3
1:  syscall
    movb $0x5F, %al                  # SYSCALL returned without reaching the handler
    jmp exit

syscall_handler:
    movl %cs, %eax
    andl $3, %eax
    addl $0x50, %eax                 # 0x50 + CPL
    jmp exit

# to_ring3: continues at RAX in ring 3 with IOPL 3.
to_ring3:
    pushq $SEL_USER_DATA
    pushq $USER_STACK
    pushq $RFLAGS_IOPL3
    pushq $SEL_USER_CODE64
    pushq %rax
    iretq

done:
    xorl %eax, %eax
exit:                                # AL = result
    movw $EXIT_PORT, %dx
    outb %al, %dx
1:  hlt
    jmp 1b
