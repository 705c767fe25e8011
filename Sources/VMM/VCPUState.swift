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

    /// Reads it, in the order KVM's api.rst gives for saving.
    init(reading vcpu: VCPU) throws(KVMError) {
        mpState = try vcpu.mpState()
        registers = try vcpu.registers()
        special = try vcpu.specialRegisters()
        xsave = try vcpu.xsave()
        events = try vcpu.events()
    }

    /// Writes it back: special registers before the general ones, events last.
    func write(to vcpu: VCPU) throws(KVMError) {
        try vcpu.setMPState(mpState)
        try vcpu.setSpecialRegisters(special)
        try vcpu.setRegisters(registers)
        try vcpu.setXSave(xsave)
        try vcpu.setEvents(events)
    }
}
