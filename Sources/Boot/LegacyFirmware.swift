import GuestMemory

/// Runs Swiftvisor's legacy firmware (Guests/firmware.s) before a Multiboot kernel: a
/// kernel loaded by GRUB finds the interrupt state a PC BIOS left (PICs at vectors 0x08
/// and 0x70, the PIT ticking, an interrupt vector table), and some rely on it (a guest
/// that enables interrupts in real mode, like kvm-unit-tests' realmode test). The
/// firmware sets that up and then enters the kernel exactly as `Multiboot.load` says.
public enum LegacyFirmware {
    /// Places the firmware and returns the state that runs it first; `kernel` is the
    /// protected-mode state a Multiboot loader would start the kernel with.
    public static func wrap(_ kernel: InitialCPUState, memory: GuestMemory) throws(BootError) -> InitialCPUState {
        guard kernel.mode == .protected, kernel.rax == UInt64(Multiboot.bootloaderMagic) else {
            throw .malformed("the legacy firmware starts Multiboot kernels only")
        }
        try ModeSetup.wrap { () throws(GuestMemoryError) in
            try memory.write(bytes: FirmwareImage.bytes, at: GuestAddress(FirmwareImage.loadAddress))
        }
        var state = try ModeSetup.prepare(.real, entry: FirmwareImage.loadAddress, memory: memory)
        state.rbx = kernel.rbx // the Multiboot information
        state.rsi = kernel.rip // where the firmware jumps in the end
        return state
    }
}
