import KVM

/// A vCPU's architectural state as a value: what a paused vCPU's `save` command
/// returns and `restore` writes back, on the vCPU's own thread (snapshots build on
/// this).
public struct VCPUState: Sendable {
    public var registers: Registers
    public var special: SpecialRegisters
    public var events: VCPUEvents
    /// `KVM_MP_STATE_*`: 0 runnable, 1 waiting for INIT/SIPI, 3 halted.
    public var mpState: UInt32
    public var xsave: XSaveArea
    /// What only a snapshot needs (nil for the S3 wake, which leaves the LAPIC, the
    /// MSRs and the TSC as they are).
    public var complete: CompleteVCPUState?

    /// `KVM_MP_STATE_UNINITIALIZED`: an application processor waiting for INIT/SIPI.
    public static let waitingForSIPI: UInt32 = 1

    /// What firmware leaves on the boot vCPU when it jumps to a real-mode vector (ACPI's
    /// waking vector): CS:IP = vector >> 4 : vector & 0xF, flat 64 KiB data segments at
    /// 0, paging and protection off, no pending events.
    mutating func resetToRealMode(at vector: UInt64) {
        let segment = UInt16(truncatingIfNeeded: vector >> 4)
        func real(_ selector: UInt16, code: Bool) -> Segment {
            Segment(base: UInt64(selector) << 4, limit: 0xFFFF, selector: selector, type: code ? 0xB : 0x3, present: 1, dpl: 0,
                    db: 0, s: 1, l: 0, g: 0, avl: 0, unusable: 0, padding: 0)
        }
        special.cs = real(segment, code: true)
        special.ds = real(0, code: false); special.es = special.ds; special.fs = special.ds
        special.gs = special.ds; special.ss = special.ds
        special.cr0 = 0x6000_0010 // CD, NW, ET: the reset value
        special.cr2 = 0; special.cr3 = 0; special.cr4 = 0; special.efer = 0
        special.idt.base = 0; special.idt.limit = 0x3FF
        special.gdt.base = 0; special.gdt.limit = 0xFFFF
        registers = Registers()
        registers.rip = vector & 0xF
        registers.rflags = 0x2
        events.exception = .init()
        events.interrupt = .init()
        mpState = 0
    }

    /// Reads it, in the order KVM's api.rst gives for saving; with `msrs` (KVM's save
    /// list), everything a snapshot needs (the LAPIC only where the in-kernel irqchip
    /// gives the vCPU one).
    init(reading vcpu: VCPU, msrs: [UInt32]? = nil, lapic: Bool = false) throws(KVMError) {
        mpState = try vcpu.mpState()
        registers = try vcpu.registers()
        special = try vcpu.specialRegisters()
        xsave = try vcpu.xsave()
        if let msrs {
            complete = CompleteVCPUState(cpuid: vcpu.assignedCPUIDEntries, tscKHz: try vcpu.tscKHz(),
                                         xcrs: try vcpu.extendedControlRegisters(), debug: try vcpu.debugRegisters(),
                                         lapic: lapic ? try vcpu.lapic() : nil, msrs: try vcpu.readableMSRs(msrs))
        }
        events = try vcpu.events()
    }

    /// Writes it back in the order KVM needs: special registers (the APIC base among
    /// them) before the LAPIC, the LAPIC before MSRs such as TSC_DEADLINE, events last.
    /// A complete state's CPUID and TSC frequency were set when the vCPU was made.
    func write(to vcpu: VCPU) throws(KVMError) {
        try vcpu.setMPState(mpState)
        try vcpu.setSpecialRegisters(special)
        try vcpu.setRegisters(registers)
        try vcpu.setXSave(xsave)
        if let complete {
            try vcpu.setExtendedControlRegisters(complete.xcrs)
            try vcpu.setDebugRegisters(complete.debug)
            if let lapic = complete.lapic { try vcpu.setLAPIC(lapic) }
            try vcpu.writeMSRs(complete.msrs)
        }
        try vcpu.setEvents(events)
    }
}
