import GuestMemory
import KVM

/// Turns an exit the VMM cannot go on from into one line a person can act on: the
/// exit, the vCPU, where it was (RIP, mode) and the instruction bytes there.
enum FailureReport {
    static func describe(vcpu: VCPU, index: Int, memory: GuestMemory, exit: String, instructionBytes: [UInt8]?) -> String {
        var text = "vCPU \(index): \(exit)"
        guard let regs = try? vcpu.registers(), let sregs = try? vcpu.specialRegisters() else { return text }
        let mode = sregs.cr0 & 1 == 0 ? "real mode" : (sregs.efer & (1 << 10) != 0 ? (sregs.cs.l != 0 ? "long mode" : "compatibility mode") : "protected mode")
        text += " at RIP 0x\(hex(regs.rip)) (CS 0x\(hex(UInt64(sregs.cs.selector))), \(mode), CPL \(sregs.cs.dpl))"
        let bytes = instructionBytes.flatMap { $0.isEmpty ? nil : $0 } ?? bytesAtRIP(vcpu, memory)
        if !bytes.isEmpty {
            text += ", instruction bytes " + bytes.map { hex(UInt64($0), width: 2) }.joined(separator: " ")
        } else {
            text += ", instruction bytes unavailable (RIP not in guest RAM)"
        }
        text += "; RAX 0x\(hex(regs.rax)) RSP 0x\(hex(regs.rsp)) RFLAGS 0x\(hex(regs.rflags)) CR0 0x\(hex(sregs.cr0)) CR3 0x\(hex(sregs.cr3)) CR4 0x\(hex(sregs.cr4)) EFER 0x\(hex(sregs.efer))"
        return text
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
