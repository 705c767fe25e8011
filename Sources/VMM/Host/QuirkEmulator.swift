import KVM

/// The instructions Swiftvisor completes for the guest when the host's instruction
/// emulator rejects them (only with host quirks on: see `HostQuirks`).
enum QuirkEmulator {
    enum Action: Equatable {
        /// INT3: deliver #BP as the CPU would (a trap: the return address is after it).
        case injectBreakpoint
        /// An instruction that needs nothing done here (FWAIT with no pending x87
        /// exception): step over its `length` bytes.
        case skip(length: Int)
    }

    static func action(for bytes: [UInt8]) -> Action? {
        switch bytes.first {
        case 0xCC: .injectBreakpoint
        case 0x9B: .skip(length: 1)
        default: nil
        }
    }

    /// Carries out `action` on the vCPU stopped at the failing instruction.
    static func perform(_ action: Action, on vcpu: VCPU) throws(KVMError) {
        var regs = try vcpu.registers()
        switch action {
        case .injectBreakpoint:
            regs.rip &+= 1
            try vcpu.setRegisters(regs)
            var events = try vcpu.events()
            events.exception.injected = 1
            events.exception.nr = 3
            events.exception.has_error_code = 0
            events.exception.error_code = 0
            try vcpu.setEvents(events)
        case let .skip(length):
            regs.rip &+= UInt64(length)
            try vcpu.setRegisters(regs)
        }
    }
}
