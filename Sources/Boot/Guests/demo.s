# The Swiftvisor demo guest: the built-in default of `swiftvisor run`.
#
# It starts like a PC boot sector (16-bit real mode at 0x7C00, CS=0), switches itself
# to 32-bit protected mode and then to 64-bit long mode, prints on COM1 (0x3F8) by
# polling the line status register, runs a checksum in ring 3 (where guest code runs
# at native speed on every host), comes back to ring 0 through a #GP, checks the
# result, executes CPUID and HLT, and ends by writing 0 to Swiftvisor's exit port
# 0x501. Kernel-mode work is kept tiny: on hosts whose KVM emulates guest kernel mode
# it runs at a few million instructions per second.
#
# Built by scripts/build-guests (GNU as + ld, flat binary linked at 0x7C00), which
# passes EXPECTED_CHECKSUM and writes Sources/Boot/DemoGuest.swift.
#
# Memory used: 0x1000-0x3FFF page tables, below 0x7000 the kernel stack, below
# 0x80000 the user stack, 0x200000-0x2FFFFF the ring-3 buffer (so at least 4 MiB RAM).

    .set COM1, 0x3f8
    .set COM1_LSR, 0x3fd
    .set EXIT_PORT, 0x501
    .set PML4, 0x1000
    .set PDPT, 0x2000
    .set PD, 0x3000
    .set KERNEL_STACK, 0x7000
    .set USER_STACK, 0x80000
    .set BUFFER, 0x200000
    .set BUFFER_SIZE, 0x100000
    .set PASSES, 4

    .set SEL_CODE32, 0x08
    .set SEL_DATA, 0x10
    .set SEL_CODE64, 0x18
    .set SEL_USER_DATA, 0x20 | 3
    .set SEL_USER_CODE64, 0x28 | 3
    .set SEL_TSS, 0x30

    .text
    .globl _start

# ---- 16-bit real mode ------------------------------------------------------------
    .code16
_start:
    cli
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $KERNEL_STACK, %sp
    lgdtl gdt_descriptor
    movl %cr0, %eax
    orl $1, %eax                    # CR0.PE
    movl %eax, %cr0
    ljmpl $SEL_CODE32, $protected_mode

# ---- 32-bit protected mode -------------------------------------------------------
    .code32
protected_mode:
    movw $SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movl $KERNEL_STACK, %esp

    # Page tables: identity-map the first 16 MiB with 2 MiB pages, user-accessible
    # (the ring-3 code and buffer live there too).
    cld
    xorl %eax, %eax
    movl $PML4, %edi
    movl $(3 * 1024), %ecx
    rep stosl
    movl $(PDPT | 7), PML4          # present, writable, user
    movl $(PD | 7), PDPT
    movl $PD, %edi
    movl $0x87, %eax                # present, writable, user, 2 MiB page
    movl $8, %ecx
1:  movl %eax, (%edi)
    addl $0x200000, %eax
    addl $8, %edi
    loop 1b

    movl $PML4, %eax
    movl %eax, %cr3
    movl %cr4, %eax
    orl $0x20, %eax                 # CR4.PAE
    movl %eax, %cr4
    movl $0xC0000080, %ecx          # IA32_EFER
    rdmsr
    orl $0x100, %eax                # EFER.LME
    wrmsr
    movl %cr0, %eax
    orl $0x80000000, %eax           # CR0.PG: long mode is now active
    movl %eax, %cr0
    ljmp $SEL_CODE64, $long_mode

# ---- 64-bit long mode, ring 0 ----------------------------------------------------
    .code64
long_mode:
    movw $SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movq $KERNEL_STACK, %rsp
    lidt idt_descriptor(%rip)
    movw $SEL_TSS, %ax
    ltr %ax

    leaq msg_banner(%rip), %rsi
    call puts

    xorl %eax, %eax                 # CPUID leaf 0: the vendor string
    cpuid
    movl %ebx, vendor(%rip)
    movl %edx, vendor+4(%rip)
    movl %ecx, vendor+8(%rip)
    leaq msg_cpuid(%rip), %rsi
    call puts
    leaq vendor(%rip), %rsi
    call puts
    leaq msg_newline(%rip), %rsi
    call puts

    leaq msg_ring3(%rip), %rsi
    call puts
    pushq $SEL_USER_DATA            # iretq frame: SS, RSP, RFLAGS, CS, RIP
    pushq $USER_STACK
    pushq $0x2                      # interrupts off, IOPL 0
    pushq $SEL_USER_CODE64
    leaq user_main(%rip), %rax
    pushq %rax
    iretq

# ---- 64-bit long mode, ring 3 ----------------------------------------------------
# Fills BUFFER with the top bytes of a 64-bit LCG (Knuth's MMIX constants), then
# hashes it PASSES times with FNV-1a 64, writing a dot to COM1 after each pass (the
# TSS's I/O bitmap lets ring 3 use that one port; each write is still a VM exit, which
# is also where a snapshot's pause can land in ring 3). Result in RAX.
user_main:
    movq $BUFFER, %rdi
    movq $BUFFER_SIZE, %rcx
    movq $1, %rax
    movabsq $6364136223846793005, %r8
    movabsq $1442695040888963407, %r9
1:  imulq %r8, %rax
    addq %r9, %rax
    movq %rax, %rdx
    shrq $56, %rdx
    movb %dl, (%rdi)
    incq %rdi
    decq %rcx
    jnz 1b

    movabsq $0xcbf29ce484222325, %rax
    movabsq $0x100000001b3, %r8
    movl $PASSES, %r10d
2:  movq $BUFFER, %rsi
    movq $BUFFER_SIZE, %rcx
3:  movzbq (%rsi), %rdx
    xorq %rdx, %rax
    imulq %r8, %rax
    incq %rsi
    decq %rcx
    jnz 3b
    movq %rax, %r11                 # a dot on COM1, straight from ring 3 (I/O bitmap)
    movb $'.', %al
    movw $0x3f8, %dx
    outb %al, %dx
    movq %r11, %rax
    decl %r10d
    jnz 2b
user_trap:
    hlt                             # privileged in ring 3: #GP takes us back to ring 0
    jmp user_trap

# ---- back in ring 0 --------------------------------------------------------------
# Every exception vector lands here with [RSP] = vector, [RSP+8] = error code,
# [RSP+16] = RIP, [RSP+24] = CS. The one expected: #GP from user_trap.
common_exception:
    cmpq $13, (%rsp)
    jne unexpected_exception
    testq $3, 24(%rsp)
    jz unexpected_exception
    leaq user_trap(%rip), %rbx
    cmpq %rbx, 16(%rsp)
    jne unexpected_exception

    movq %rax, %r12                 # the checksum ring 3 left in RAX
    leaq msg_checksum(%rip), %rsi
    call puts
    movq %r12, %rax
    call puthex
    movabsq $EXPECTED_CHECKSUM, %rbx
    cmpq %rbx, %r12
    jne checksum_mismatch
    leaq msg_ok(%rip), %rsi
    call puts

    leaq msg_hlt(%rip), %rsi
    call puts
    sti
    hlt                             # a HLT exit; with nothing to wait for, the VMM resumes us
    cli
    leaq msg_bye(%rip), %rsi
    call puts
    xorl %eax, %eax
    jmp exit

checksum_mismatch:
    leaq msg_mismatch(%rip), %rsi
    call puts
    movl $1, %eax
    jmp exit

unexpected_exception:
    leaq msg_exception(%rip), %rsi
    call puts
    movq (%rsp), %rax
    call puthex
    leaq msg_at(%rip), %rsi
    call puts
    movq 16(%rsp), %rax
    call puthex
    leaq msg_newline(%rip), %rsi
    call puts
    movl $2, %eax

exit:                               # AL = exit code
    movw $EXIT_PORT, %dx
    outb %al, %dx
1:  cli
    hlt
    jmp 1b

# puts: prints the NUL-terminated string at RSI.
puts:
    pushq %rax
1:  movb (%rsi), %al
    testb %al, %al
    jz 2f
    call putc
    incq %rsi
    jmp 1b
2:  popq %rax
    ret

# putc: prints AL once the UART's transmit holding register is empty.
putc:
    pushq %rdx
    pushq %rax
    movw $COM1_LSR, %dx
1:  inb %dx, %al
    testb $0x20, %al
    jz 1b
    popq %rax
    movw $COM1, %dx
    outb %al, %dx
    popq %rdx
    ret

# puthex: prints RAX as 0x followed by 16 hex digits.
puthex:
    pushq %rax
    pushq %rbx
    pushq %rcx
    pushq %rdx
    movq %rax, %rbx
    movb $'0', %al
    call putc
    movb $'x', %al
    call putc
    movl $16, %ecx
    leaq hex_digits(%rip), %rdx
1:  rolq $4, %rbx
    movl %ebx, %eax
    andl $0xf, %eax
    movb (%rdx,%rax), %al
    call putc
    decl %ecx
    jnz 1b
    popq %rdx
    popq %rcx
    popq %rbx
    popq %rax
    ret

# ---- exception stubs: push a dummy error code where the CPU pushes none ----------
    .macro stub n
stub_\n:
    .if (\n == 8) || (\n == 10) || (\n == 11) || (\n == 12) || (\n == 13) || (\n == 14) || (\n == 17) || (\n == 21) || (\n == 29) || (\n == 30)
    .else
    pushq $0
    .endif
    pushq $\n
    jmp common_exception
    .endm
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    stub \n
    .endr

# ---- tables ----------------------------------------------------------------------
    .balign 8
gdt:
    .quad 0                         # null
    .quad 0x00cf9a000000ffff        # 0x08 32-bit code, ring 0
    .quad 0x00cf92000000ffff        # 0x10 data, ring 0
    .quad 0x00af9a000000ffff        # 0x18 64-bit code, ring 0
    .quad 0x00cff2000000ffff        # 0x20 data, ring 3
    .quad 0x00affa000000ffff        # 0x28 64-bit code, ring 3
    .word tss_end - tss - 1         # 0x30 64-bit TSS (16 bytes); the image is below
    .word tss                       #      64 KiB, so the base fits in 16 bits
    .byte 0, 0x89, 0, 0
    .long 0, 0
gdt_end:

gdt_descriptor:
    .word gdt_end - gdt - 1
    .long gdt

    .macro gate n                   # 64-bit interrupt gate, ring 0, code 0x18
    .word stub_\n
    .word SEL_CODE64
    .word 0x8e00
    .word 0
    .long 0, 0
    .endm
    .balign 16
idt:
    .irp n, 0,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29,30,31
    gate \n
    .endr
idt_end:

idt_descriptor:
    .word idt_end - idt - 1
    .quad idt

    .balign 16
tss:
    .long 0
    .quad KERNEL_STACK              # RSP0: the stack exceptions from ring 3 arrive on
    .quad 0, 0, 0                   # RSP1, RSP2, reserved
    .quad 0, 0, 0, 0, 0, 0, 0       # IST1-7
    .quad 0
    .word 0
    .word tss_iomap - tss           # the I/O permission bitmap below
tss_iomap:                          # ports 0-0x3ff: only COM1's data port (0x3f8) open
    .fill 0x3f8 / 8, 1, 0xff
    .byte 0xfe
    .fill (0x400 - 0x3f8) / 8 - 1, 1, 0xff
    .byte 0xff                      # the terminator the SDM asks for
tss_end:

vendor:
    .fill 13, 1, 0
hex_digits:
    .ascii "0123456789abcdef"
msg_banner:
    .asciz "Swiftvisor demo guest\n  started in 16-bit real mode at 0x7c00, switched to protected mode, now in 64-bit long mode\n"
msg_cpuid:
    .asciz "  CPUID vendor: "
msg_ring3:
    .asciz "  ring 3: filling 1 MiB and hashing it 4 times with FNV-1a, a dot a pass: "
msg_checksum:
    .asciz "\n  back in ring 0 through #GP, checksum "
msg_ok:
    .asciz " ok\n"
msg_mismatch:
    .asciz " WRONG\n"
msg_hlt:
    .asciz "  HLT with interrupts enabled (a VM exit)\n"
msg_bye:
    .asciz "  writing exit code 0 to port 0x501\n"
msg_exception:
    .asciz "  unexpected exception, vector "
msg_at:
    .asciz " at RIP "
msg_newline:
    .asciz "\n"
