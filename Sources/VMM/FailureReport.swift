import Boot
import GuestMemory
import KVM

/// Turns an exit the VMM cannot go on from into one line a person can act on: the
/// exit, the vCPU, where it was (RIP, the kernel symbol when known, mode), the
/// instruction bytes there and the registers.
public enum FailureReport {
    static func describe(vcpu: VCPU, index: Int, memory: GuestMemory, symbols: KernelSymbolSource? = nil, exit: String, instructionBytes: [UInt8]?) -> String {
        var text = "vCPU \(index): \(exit)"
        guard let regs = try? vcpu.registers(), let sregs = try? vcpu.specialRegisters() else { return text }
        let mode = sregs.cr0 & 1 == 0 ? "real mode" : (sregs.efer & (1 << 10) != 0 ? (sregs.cs.l != 0 ? "long mode" : "compatibility mode") : "protected mode")
        text += " at RIP 0x\(hex(regs.rip))"
        if let name = symbols?.symbols?.name(for: regs.rip) { text += " <\(name)>" }
        text += " (CS 0x\(hex(UInt64(sregs.cs.selector))), \(mode), CPL \(sregs.cs.dpl))"
        let bytes = instructionBytes.flatMap { $0.isEmpty ? nil : $0 } ?? bytesAtRIP(vcpu, memory)
        if !bytes.isEmpty {
            text += ", instruction bytes " + bytes.map { hex(UInt64($0), width: 2) }.joined(separator: " ")
        } else {
            text += ", instruction bytes unavailable (RIP not in guest RAM)"
        }
        let named: [(String, UInt64)] = [
            ("RAX", regs.rax), ("RBX", regs.rbx), ("RCX", regs.rcx), ("RDX", regs.rdx), ("RSI", regs.rsi), ("RDI", regs.rdi),
            ("RBP", regs.rbp), ("RSP", regs.rsp), ("R8", regs.r8), ("R9", regs.r9), ("R10", regs.r10), ("R11", regs.r11),
            ("R12", regs.r12), ("R13", regs.r13), ("R14", regs.r14), ("R15", regs.r15), ("RFLAGS", regs.rflags),
            ("CR0", sregs.cr0), ("CR2", sregs.cr2), ("CR3", sregs.cr3), ("CR4", sregs.cr4), ("EFER", sregs.efer),
        ]
        text += "; " + named.map { "\($0.0) 0x\(hex($0.1))" }.joined(separator: " ")
        return text
    }

    /// The kernel's symbols from `file` (`MachineConfig.effectiveSymbolFile`): read only
    /// when a report needs them, never while the guest runs.
    public static func symbols(in file: String?) -> KernelSymbols? {
        guard let file, let bytes = try? FileContents.read(file) else { return nil }
        return KernelSymbols.read(bytes)
    }

    /// Up to 15 bytes at the vCPU's RIP, through its paging; empty if unreadable.
    static func bytesAtRIP(_ vcpu: VCPU, _ memory: GuestMemory) -> [UInt8] {
        guard let regs = try? vcpu.registers(), let sregs = try? vcpu.specialRegisters() else { return [] }
        let linear = sregs.cs.base &+ regs.rip
        let physical: UInt64? = sregs.cr0 & (1 << 31) != 0 ? ((try? vcpu.translate(linear)) ?? nil) : linear
        guard let physical else { return [] }
        for n in stride(from: 15, through: 1, by: -1) {
            if let b = try? memory.read(bytes: n, at: GuestAddress(physical)) { return b }
        }
        return []
    }

    static func hex(_ v: UInt64, width: Int = 1) -> String {
        let s = String(v, radix: 16)
        return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
    }
}
