import GuestMemory

/// Builds what a processor mode needs in guest memory (GDT, identity page tables) and
/// the register state to enter it, for any loader that starts a guest at `entry`.
public enum ModeSetup {
    /// Prepares `memory` for `mode` and returns the state to start at `entry`.
    /// `userAccessible` marks the identity map usable from ring 3 (the U/S bit), for
    /// guests that run code in user mode without page tables of their own; `structures`
    /// says where the GDT, stack and page tables go.
    public static func prepare(_ mode: CPUMode, entry: UInt64, memory: GuestMemory, userAccessible: Bool = false,
                               structures: BootStructures = .standard) throws(BootError) -> InitialCPUState {
        switch mode {
        case .real:
            guard entry < 0x10_0000 else { throw .unreachable(what: "entry point", address: entry, mode: .real) }
            // CS:IP with the largest segment that keeps IP small, like a BIOS far jump.
            let segment = UInt16((entry >> 4) & 0xF000)
            var s = InitialCPUState(mode: .real, rip: entry - UInt64(segment) * 16,
                                    code: .real(selector: segment, code: true),
                                    data: .real(selector: segment, code: false), cr0: ControlBits.cr0ET)
            s.rsp = entry - UInt64(segment) * 16 // stack just below the image, as for a boot sector
            return s
        case .protected:
            guard entry < 0x1_0000_0000 else { throw .unreachable(what: "entry point", address: entry, mode: .protected) }
            try writeGDT(memory, structures)
            var s = InitialCPUState(mode: .protected, rip: entry, code: code32, data: data, cr0: ControlBits.cr0PE | ControlBits.cr0ET)
            s.gdtBase = structures.gdt
            s.gdtLimit = UInt16(gdtEntries.count * 8 - 1)
            s.rsp = structures.stackTop
            return s
        case .long:
            try writeGDT(memory, structures)
            try writeIdentityPageTables(memory, userAccessible: userAccessible, structures)
            var s = InitialCPUState(mode: .long, rip: entry, code: code64, data: data,
                                    cr0: ControlBits.cr0PE | ControlBits.cr0ET | ControlBits.cr0PG)
            s.gdtBase = structures.gdt
            s.gdtLimit = UInt16(gdtEntries.count * 8 - 1)
            s.cr3 = structures.pml4
            s.cr4 = ControlBits.cr4PAE
            s.efer = ControlBits.eferLME | ControlBits.eferLMA
            s.rsp = structures.stackTop
            return s
        }
    }

    static let code64 = SegmentDescriptor(selector: BootLayout.codeSelector64, base: 0, limit: 0xFFFFF, type: 0xB,
                                          long: true, granularity4K: true)
    static let data = SegmentDescriptor(selector: BootLayout.dataSelector, base: 0, limit: 0xFFFFF, type: 0x3,
                                        defaultBig: true, granularity4K: true)
    static let code32 = SegmentDescriptor(selector: BootLayout.codeSelector32, base: 0, limit: 0xFFFFF, type: 0xB,
                                          defaultBig: true, granularity4K: true)
    static let userData = SegmentDescriptor(selector: BootLayout.userDataSelector, base: 0, limit: 0xFFFFF, type: 0x3,
                                            dpl: 3, defaultBig: true, granularity4K: true)
    static let userCode64 = SegmentDescriptor(selector: BootLayout.userCodeSelector64, base: 0, limit: 0xFFFFF, type: 0xB,
                                              dpl: 3, long: true, granularity4K: true)
    static let gdtEntries: [UInt64] = [0, code64.encoded, data.encoded, code32.encoded, userData.encoded, userCode64.encoded]

    static func writeGDT(_ memory: GuestMemory, _ structures: BootStructures) throws(BootError) {
        for (i, e) in gdtEntries.enumerated() {
            try wrap { () throws(GuestMemoryError) in try memory.write(e, at: GuestAddress(structures.gdt + UInt64(i * 8))) }
        }
    }

    /// Identity-maps the first 4 GiB with 2 MiB pages: the window every 64-bit boot
    /// protocol assumes (RAM below the PCI hole, the hole's MMIO, the APIC).
    static func writeIdentityPageTables(_ memory: GuestMemory, userAccessible: Bool, _ structures: BootStructures) throws(BootError) {
        let present: UInt64 = 1, large: UInt64 = 1 << 7
        let writable: UInt64 = userAccessible ? 2 | 4 : 2 // U/S rides along with R/W
        try wrap { () throws(GuestMemoryError) in
            try memory.fill(0, count: 0x1000, at: GuestAddress(structures.pml4))
            try memory.write(structures.pdpt | present | writable, at: GuestAddress(structures.pml4))
            for dir in 0..<4 {
                let pd = structures.pageDirectories + UInt64(dir) * 0x1000
                try memory.write(pd | present | writable, at: GuestAddress(structures.pdpt + UInt64(dir) * 8))
                for i in 0..<512 {
                    let address = (UInt64(dir) << 30) | (UInt64(i) << 21)
                    try memory.write(address | present | writable | large, at: GuestAddress(pd + UInt64(i) * 8))
                }
            }
            // The rest of the PDPT stays zero: above 4 GiB is unmapped.
            try memory.fill(0, count: 0x1000 - 32, at: GuestAddress(structures.pdpt + 32))
        }
    }

    static func wrap(_ body: () throws(GuestMemoryError) -> Void) throws(BootError) {
        do { try body() } catch { throw .memory(error) }
    }
}
