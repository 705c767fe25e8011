import GuestMemory
import KVM

/// The instructions Swiftvisor completes for the guest when the host's instruction
/// emulator rejects them (only with host quirks on: see `HostQuirks`). Each is done
/// the way the processor would, faults included, so that the guest cannot tell.
enum InstructionEmulator {
    enum Action: Equatable {
        /// INT3: deliver #BP as the CPU would (a trap: the return address is after it).
        case injectBreakpoint
        /// An instruction that needs nothing done here (FWAIT with no pending x87
        /// exception): step over its `length` bytes.
        case skip(length: Int)
        /// LDMXCSR m32 (0F AE /2): MXCSR from memory, through the vCPU's XSAVE state.
        case loadMXCSR(MemoryOperand, length: Int)
        /// STMXCSR m32 (0F AE /3): MXCSR to memory.
        case storeMXCSR(MemoryOperand, length: Int)
        /// VMCALL (0F 01 C1) or VMMCALL (0F 01 D9): a KVM hypercall, completed the way
        /// KVM's own `kvm_emulate_hypercall` does (see `Hypercall`).
        case hypercall
    }

    /// What to do for the instruction starting with `bytes`, or nil when it is not one
    /// of these (the failure is then reported). `longMode` is CS.L (64-bit code).
    static func action(for bytes: [UInt8], longMode: Bool) -> Action? {
        switch bytes.first {
        case 0xCC: return .injectBreakpoint
        case 0x9B: return .skip(length: 1)
        default: break
        }
        if bytes.count >= 3, bytes[0] == 0x0F, bytes[1] == 0x01, bytes[2] == 0xC1 || bytes[2] == 0xD9 { return .hypercall }
        guard let insn = MemoryOperand.decodeTwoByte(bytes, longMode: longMode), insn.opcode == 0xAE else { return nil }
        switch insn.reg {
        case 2: return .loadMXCSR(insn.operand, length: insn.length)
        case 3: return .storeMXCSR(insn.operand, length: insn.length)
        default: return nil
        }
    }

    enum Outcome: Equatable {
        case completed
        /// The memory operand is not in guest RAM (MMIO, or beyond memory): the
        /// instruction is left undone and the failure reported.
        case operandOutsideRAM(UInt64)
    }

    /// Carries out `action` on the vCPU stopped at the failing instruction; `sregs` are
    /// its special registers as the caller already read them.
    static func perform(_ action: Action, on vcpu: VCPU, special sregs: SpecialRegisters, memory: GuestMemory) throws(KVMError) -> Outcome {
        var regs = try vcpu.registers()
        switch action {
        case .injectBreakpoint:
            regs.rip &+= 1
            try vcpu.setRegisters(regs)
            try inject(vector: 3, errorCode: nil, into: vcpu)
        case let .skip(length):
            regs.rip &+= UInt64(length)
            try vcpu.setRegisters(regs)
        case let .loadMXCSR(operand, length), let .storeMXCSR(operand, length):
            let isLoad = if case .loadMXCSR = action { true } else { false }
            let linear = operand.linearAddress(registers: regs, special: sregs, length: length)
            guard let physical = try physicalAddresses(of: linear, count: 4, vcpu: vcpu, paging: sregs.cr0 & (1 << 31) != 0) else {
                // Not mapped: the page fault the processor would raise.
                var s = sregs
                s.cr2 = linear
                try vcpu.setSpecialRegisters(s)
                try inject(vector: 14, errorCode: (isLoad ? 0 : 2) | (sregs.cs.dpl == 3 ? 4 : 0), into: vcpu)
                return .completed
            }
            var state = try vcpu.xsave()
            if isLoad {
                var value: UInt32 = 0
                for (i, p) in physical.enumerated() {
                    guard let b = try? memory.read(UInt8.self, at: GuestAddress(p)) else { return .operandOutsideRAM(p) }
                    value |= UInt32(b) << (8 * i)
                }
                // Reserved bits set: #GP(0), and MXCSR stays as it was.
                guard value & ~state.mxcsrMask == 0 else {
                    try inject(vector: 13, errorCode: 0, into: vcpu)
                    return .completed
                }
                state.mxcsr = value
                try vcpu.setXSave(state)
            } else {
                for (i, p) in physical.enumerated() {
                    guard (try? memory.write(UInt8(truncatingIfNeeded: state.mxcsr >> (8 * i)), at: GuestAddress(p))) != nil else {
                        return .operandOutsideRAM(p)
                    }
                }
            }
            regs.rip &+= UInt64(length)
            try vcpu.setRegisters(regs)
        case .hypercall:
            let longMode = sregs.cs.l != 0
            let mask: UInt64 = longMode ? .max : 0xFFFF_FFFF
            let call = Hypercall(number: regs.rax & mask, arguments: [regs.rbx & mask, regs.rcx & mask, regs.rdx & mask, regs.rsi & mask],
                                 privileged: sregs.ss.dpl == 0)
            let result = try call.perform(on: vcpu.vmFileDescriptor)
            regs.rax = UInt64(bitPattern: result) & mask
            regs.rip &+= 3
            try vcpu.setRegisters(regs)
        }
        return .completed
    }

    /// The guest-physical address of each of `count` bytes from `linear` (an operand
    /// may straddle two pages), or nil if any is unmapped. KVM_TRANSLATE does not say
    /// whether a page is writable, so a store to a read-only page is not refused.
    private static func physicalAddresses(of linear: UInt64, count: Int, vcpu: VCPU, paging: Bool) throws(KVMError) -> [UInt64]? {
        guard paging else { return (0..<UInt64(count)).map { linear &+ $0 } }
        var result: [UInt64] = []
        var page: (linear: UInt64, physical: UInt64)? = nil
        for i in 0..<UInt64(count) {
            let a = linear &+ i
            if page?.linear != a & ~0xFFF {
                guard let p = try vcpu.translate(a & ~0xFFF) else { return nil }
                page = (a & ~0xFFF, p & ~0xFFF)
            }
            result.append(page!.physical | (a & 0xFFF))
        }
        return result
    }

    private static func inject(vector: UInt8, errorCode: UInt32?, into vcpu: VCPU) throws(KVMError) {
        var events = try vcpu.events()
        events.exception.injected = 1
        events.exception.nr = vector
        events.exception.has_error_code = errorCode == nil ? 0 : 1
        events.exception.error_code = errorCode ?? 0
        try vcpu.setEvents(events)
    }
}

extension InstructionEmulator {
    enum Completion: Equatable { case completed, notAnInstructionWeComplete, failed(String) }

    /// The optional stage after an exit: completes an instruction the host's emulator
    /// rejected (`rejected`), or with `rejected` nil, one a kicked vCPU stands on when it
    /// is a VMCALL/VMMCALL at CPL 0 (which such hosts never complete). Anything else is
    /// not ours: the caller reports it, or lets the vCPU run on.
    static func complete(_ rejected: InternalError?, vcpu: VCPU, memory: GuestMemory) -> Completion {
        let onlyKernelHypercall = rejected == nil
        let bytes = rejected?.instructionBytes.flatMap { $0.isEmpty ? nil : $0 } ?? FailureReport.bytesAtRIP(vcpu, memory)
        guard let sregs = try? vcpu.specialRegisters(),
              let action = action(for: bytes, longMode: sregs.cs.l != 0) else { return .notAnInstructionWeComplete }
        if onlyKernelHypercall, action != .hypercall || sregs.ss.dpl != 0 { return .notAnInstructionWeComplete }
        do {
            switch try perform(action, on: vcpu, special: sregs, memory: memory) {
            case .completed: return .completed
            case let .operandOutsideRAM(a): return .failed("its memory operand 0x\(String(a, radix: 16)) is not guest RAM")
            }
        } catch {
            return .failed("completing it failed: \(error.description)")
        }
    }
}
