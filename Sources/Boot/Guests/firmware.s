# Swiftvisor's legacy firmware: what a PC BIOS leaves behind for a Multiboot loader,
# in a few dozen instructions, then the jump into the kernel.
#
# Linked at 0xF0000 and entered in real mode at F000:0000 with EBX = the Multiboot
# information address and ESI = the kernel's entry point (the VMM sets both). It
#   - fills the real-mode interrupt vector table: every vector points at an IRET,
#     IRQ 0-7 (vectors 0x08-0x0F) and IRQ 8-15 (0x70-0x77) at handlers that also send
#     the PICs their end-of-interrupt, as BIOS handlers do;
#   - programs both 8259 PICs as a BIOS does (vector bases 0x08 and 0x70, cascade on
#     IRQ 2) with only the timer (IRQ 0) and the cascade unmasked;
#   - starts PIT channel 0 at 18.2 Hz (divisor 65536, square wave);
#   - enters 32-bit protected mode through the VMM's boot GDT at 0x500 (flat data 0x10,
#     32-bit code 0x18) with interrupts disabled, EAX = 0x2BADB002, EBX unchanged, and
#     jumps to the kernel, as the Multiboot specification says.
# Built by scripts/build-guests into Sources/Boot/LegacyFirmware+Image.swift.

    .set BASE, 0xF0000
    .set STACK, 0x7000
    .set BOOT_GDT, 0x500
    .set BOOT_GDT_LIMIT, 6 * 8 - 1
    .set SEL_DATA, 0x10
    .set SEL_CODE32, 0x18
    .set PIC1_CMD, 0x20
    .set PIC1_DATA, 0x21
    .set PIC2_CMD, 0xA0
    .set PIC2_DATA, 0xA1
    .set PIT_CH0, 0x40
    .set PIT_MODE, 0x43

    .text
    .code16
    .globl firmware_entry
firmware_entry:
    cli
    cld
    xorw %ax, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %ss
    movw $STACK, %sp

    # Interrupt vector table at 0: 256 far pointers F000:offset.
    xorw %di, %di
    movw $256, %cx
1:  movw $(iret_handler - firmware_entry), %ax
    stosw
    movw $0xF000, %ax
    stosw
    loop 1b
    movw $(0x08 * 4), %di
    movw $8, %cx
    movw $(irq_master - firmware_entry), %ax
2:  movw %ax, (%di)
    addw $4, %di
    loop 2b
    movw $(0x70 * 4), %di
    movw $8, %cx
    movw $(irq_slave - firmware_entry), %ax
3:  movw %ax, (%di)
    addw $4, %di
    loop 3b

    # PICs: ICW1 (edge, cascade, ICW4 follows), ICW2 (vector base), ICW3 (cascade on
    # IRQ 2), ICW4 (8086 mode), then the masks.
    movb $0x11, %al
    outb %al, $PIC1_CMD
    outb %al, $PIC2_CMD
    movb $0x08, %al
    outb %al, $PIC1_DATA
    movb $0x70, %al
    outb %al, $PIC2_DATA
    movb $0x04, %al
    outb %al, $PIC1_DATA
    movb $0x02, %al
    outb %al, $PIC2_DATA
    movb $0x01, %al
    outb %al, $PIC1_DATA
    outb %al, $PIC2_DATA
    movb $0xFA, %al                  # unmask IRQ 0 (timer) and IRQ 2 (cascade)
    outb %al, $PIC1_DATA
    movb $0xFF, %al
    outb %al, $PIC2_DATA

    # PIT channel 0: lobyte/hibyte, mode 3, divisor 0 (65536): 18.2 Hz.
    movb $0x36, %al
    outb %al, $PIT_MODE
    xorb %al, %al
    outb %al, $PIT_CH0
    outb %al, $PIT_CH0

    # Protected mode through the VMM's boot GDT.
    lgdtl %cs:(gdt_descriptor - firmware_entry)
    movl %cr0, %eax
    orl $1, %eax
    movl %eax, %cr0
    ljmpl $SEL_CODE32, $protected_mode

    .code32
protected_mode:
    movw $SEL_DATA, %ax
    movw %ax, %ds
    movw %ax, %es
    movw %ax, %fs
    movw %ax, %gs
    movw %ax, %ss
    movl $0x2BADB002, %eax
    jmp *%esi

    .code16
iret_handler:
    iret
irq_master:
    pushw %ax
    movb $0x20, %al                  # non-specific EOI
    outb %al, $PIC1_CMD
    popw %ax
    iret
irq_slave:
    pushw %ax
    movb $0x20, %al
    outb %al, $PIC2_CMD
    outb %al, $PIC1_CMD
    popw %ax
    iret

    .balign 8
    .globl gdt_descriptor
gdt_descriptor:
    .word BOOT_GDT_LIMIT
    .long BOOT_GDT
